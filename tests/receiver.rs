//! The push receiver: GitHub, GitLab and generic HMAC deliveries with real payload shapes
//! trigger exactly one fetch of their source; tampered bodies, wrong secrets, replays with a
//! bad signature, unknown sources and sources without a receiver are refused without detail;
//! bursts are rate limited. In cluster mode a verified push annotates the GitSource and the
//! GitSource controller fetches at once instead of at its interval.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use driftguard::api::GitSource;
use driftguard::receiver::{
    self, FileSource, FileTargets, HookTargets, KubeTargets, REQUESTED_AT_ANNOTATION, ReceiverLimits, TargetError,
    TargetFuture, sign,
};
use driftguard::telemetry::Metrics;
use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::guards::{Installed, eventually, installed};
use tower::ServiceExt as _;

/// The secret of `default/apps` (GitHub's documentation example).
const SECRET: &str = "It's a Secret to Everybody";

/// Records triggers; secrets per `namespace/name`, unknown ones are `Ok(None)`.
#[derive(Default)]
struct Recorder {
    secrets: HashMap<String, Result<Option<Vec<u8>>, TargetError>>,
    triggers: Mutex<Vec<String>>,
}

impl Recorder {
    fn standard() -> Arc<Recorder> {
        let mut secrets = HashMap::new();
        secrets.insert("default/apps".to_owned(), Ok(Some(SECRET.as_bytes().to_vec())));
        secrets.insert("default/infra".to_owned(), Ok(Some(b"another secret".to_vec())));
        secrets.insert("default/plain".to_owned(), Ok(None));
        secrets.insert(
            "default/broken".to_owned(),
            Err(TargetError::Misconfigured(
                "Secret default/missing does not exist".into(),
            )),
        );
        secrets.insert(
            "default/down".to_owned(),
            Err(TargetError::Unavailable("connection refused".into())),
        );
        Arc::new(Recorder {
            secrets,
            triggers: Mutex::default(),
        })
    }

    fn triggers(&self) -> Vec<String> {
        self.triggers.lock().unwrap().clone()
    }
}

impl HookTargets for Recorder {
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, Option<Vec<u8>>> {
        let found = self
            .secrets
            .get(&format!("{namespace}/{name}"))
            .cloned()
            .unwrap_or(Ok(None));
        Box::pin(async move { found })
    }

    fn trigger<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, ()> {
        self.triggers.lock().unwrap().push(format!("{namespace}/{name}"));
        Box::pin(async { Ok(()) })
    }
}

fn fixture(name: &str) -> Vec<u8> {
    support::fixture(&format!("hooks/{name}"))
}

/// Headers GitHub sends with a delivery of `event`, signed over `body` with `secret`.
fn github(event: &str, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("user-agent", "GitHub-Hookshot/a1b2c3d".into()),
        ("content-type", "application/json".into()),
        ("x-github-event", event.into()),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        ("x-github-hook-id", "441255283".into()),
        ("x-github-hook-installation-target-type", "repository".into()),
        // The legacy SHA-1 header is ignored.
        (
            "x-hub-signature",
            "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6".into(),
        ),
        (
            "x-hub-signature-256",
            format!("sha256={}", sign(secret.as_bytes(), body)),
        ),
    ]
}

/// Headers GitLab sends with a push and the secret token `token`.
fn gitlab(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("user-agent", "GitLab/16.6.0".into()),
        ("content-type", "application/json".into()),
        ("x-gitlab-event", "Push Hook".into()),
        ("x-gitlab-instance", "https://gitlab.example.com".into()),
        ("x-gitlab-webhook-uuid", "4b0e3b8e-b8a0-4d3a-a2f0-d2c6d2d7c1a4".into()),
        ("x-gitlab-event-uuid", "13792a34-cac6-4fda-95a8-c58e00a3954e".into()),
        ("x-gitlab-token", token.into()),
    ]
}

/// Headers of a generic sender signing `body` with `secret`.
fn generic(body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("x-signature-256", format!("sha256={}", sign(secret.as_bytes(), body))),
    ]
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(router: &Router, method: &str, path: &str, headers: &[(&'static str, String)], body: &[u8]) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_vec())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn post(router: &Router, path: &str, headers: &[(&'static str, String)], body: &[u8]) -> Answer {
    send(router, "POST", path, headers, body).await
}

fn router_with(targets: Arc<dyn HookTargets>, metrics: Arc<Metrics>) -> Router {
    receiver::router(targets, &ReceiverLimits::default(), metrics)
}

fn router(targets: Arc<Recorder>) -> Router {
    router_with(targets, Arc::new(Metrics::new()))
}

#[tokio::test]
async fn a_valid_github_push_triggers_exactly_one_fetch_of_its_source() {
    let targets = Recorder::standard();
    let metrics = Arc::new(Metrics::new());
    let router = router_with(targets.clone(), metrics.clone());
    let body = fixture("github-push.json");
    let answer = post(&router, "/hooks/default/apps", &github("push", &body, SECRET), &body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body, "accepted\n");
    assert_eq!(targets.triggers(), ["default/apps"]);
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(r#"driftguard_receiver_requests_total{result="accepted"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_github_ping_is_answered_without_a_fetch_but_must_be_signed() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = fixture("github-ping.json");
    let answer = post(&router, "/hooks/default/apps", &github("ping", &body, SECRET), &body).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "ok\n");
    let answer = post(&router, "/hooks/default/apps", &github("ping", &body, "guess"), &body).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn a_gitlab_push_with_the_right_token_triggers_a_fetch() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = fixture("gitlab-push.json");
    let answer = post(&router, "/hooks/default/apps", &gitlab(SECRET), &body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(targets.triggers(), ["default/apps"]);
}

#[tokio::test]
async fn a_generic_hmac_push_triggers_a_fetch() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = br#"{"ref":"refs/heads/main","after":"59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5"}"#;
    let answer = post(&router, "/hooks/default/infra", &generic(body, "another secret"), body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(targets.triggers(), ["default/infra"]);
}

#[tokio::test]
async fn a_tampered_body_is_401_without_a_fetch() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = fixture("github-push.json");
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("refs/heads/main", "refs/heads/evil")
        .into_bytes();
    // Signed over the original body, sent with another.
    let headers = github("push", &body, SECRET);
    let answer = post(&router, "/hooks/default/apps", &headers, &tampered).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, "unauthorized\n");
    let headers = generic(&body, SECRET);
    let answer = post(&router, "/hooks/default/apps", &headers, &tampered).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // One appended byte is enough.
    let mut longer = body.clone();
    longer.push(b' ');
    let answer = post(&router, "/hooks/default/apps", &github("push", &body, SECRET), &longer).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_401_for_every_kind() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let github_body = fixture("github-push.json");
    let gitlab_body = fixture("gitlab-push.json");
    for wrong in [
        "another secret",
        "It's a Secret to Everybody!",
        "it's a secret to everybody",
        "",
    ] {
        let answer = post(
            &router,
            "/hooks/default/apps",
            &github("push", &github_body, wrong),
            &github_body,
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "github {wrong:?}");
        let answer = post(&router, "/hooks/default/apps", &gitlab(wrong), &gitlab_body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "gitlab {wrong:?}");
        let answer = post(
            &router,
            "/hooks/default/apps",
            &generic(&github_body, wrong),
            &github_body,
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "generic {wrong:?}");
        assert_eq!(answer.body, "unauthorized\n");
    }
    // A valid delivery for one source is no key to another.
    let answer = post(
        &router,
        "/hooks/default/infra",
        &github("push", &github_body, SECRET),
        &github_body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn a_replayed_body_with_a_modified_or_missing_signature_is_401() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = fixture("github-push.json");
    let captured = github("push", &body, SECRET);
    let signature = captured
        .iter()
        .find(|(name, _)| *name == "x-hub-signature-256")
        .map(|(_, value)| value.clone())
        .unwrap();
    let with_signature = |value: Option<String>| -> Vec<(&'static str, String)> {
        let mut headers: Vec<_> = captured
            .iter()
            .filter(|(name, _)| *name != "x-hub-signature-256")
            .cloned()
            .collect();
        if let Some(value) = value {
            headers.push(("x-hub-signature-256", value));
        }
        headers
    };
    let last = signature.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &signature[..signature.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let modified = [
        Some(flipped),
        Some(signature.replace("sha256=", "sha1=")),
        Some(signature[..signature.len() - 2].to_owned()),
        Some(format!("sha256={}", "0".repeat(64))),
        Some(String::new()),
        None,
    ];
    for value in modified {
        let answer = post(&router, "/hooks/default/apps", &with_signature(value.clone()), &body).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{value:?}");
        assert_eq!(answer.body, "unauthorized\n");
    }
    // The same signature twice: which one was checked would be ambiguous.
    let mut twice = captured.clone();
    twice.push(("x-hub-signature-256", signature.clone()));
    assert_eq!(
        post(&router, "/hooks/default/apps", &twice, &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A GitHub signature does not pass as GitLab's token.
    let mut as_gitlab = gitlab(&signature);
    as_gitlab.push(("x-hub-signature-256", signature.clone()));
    assert_eq!(
        post(&router, "/hooks/default/apps", &as_gitlab, &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(targets.triggers().is_empty());
    // The captured delivery itself is still valid.
    assert_eq!(
        post(&router, "/hooks/default/apps", &captured, &body).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(targets.triggers(), ["default/apps"]);
}

#[tokio::test]
async fn unknown_sources_and_sources_without_a_receiver_are_404() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    let body = fixture("github-push.json");
    let headers = github("push", &body, SECRET);
    for path in [
        "/hooks/default/missing",
        "/hooks/elsewhere/apps",
        "/hooks/default/plain",
        "/hooks/Default/apps",
        "/hooks/default/..",
        "/hooks/default/a%2Fb",
        "/hooks/default/%ff",
        "/hooks/default",
        "/hooks/default/apps/extra",
        "/hooks",
        "/",
    ] {
        let answer = post(&router, path, &headers, &body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.body, "not found\n", "{path}");
    }
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn other_methods_are_405_and_unusable_receivers_say_nothing_more() {
    let targets = Recorder::standard();
    let router = router(targets.clone());
    for method in ["GET", "PUT", "DELETE"] {
        let answer = send(&router, method, "/hooks/default/apps", &[], b"").await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.body, "method not allowed\n");
    }
    assert_eq!(
        send(&router, "GET", "/metrics", &[], b"").await.status,
        StatusCode::NOT_FOUND
    );
    let body = fixture("github-push.json");
    let headers = github("push", &body, SECRET);
    // A receiver whose Secret is missing cannot verify anything.
    let answer = post(&router, "/hooks/default/broken", &headers, &body).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, "unauthorized\n");
    // The API being down is the sender's to retry, without the reason.
    let answer = post(&router, "/hooks/default/down", &headers, &body).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "unavailable\n");
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let targets = Recorder::standard();
    let limits = ReceiverLimits {
        max_body_bytes: 1024,
        ..ReceiverLimits::default()
    };
    let router = receiver::router(targets.clone(), &limits, Arc::new(Metrics::new()));
    let body = vec![b' '; 1025];
    let answer = post(&router, "/hooks/default/apps", &github("push", &body, SECRET), &body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(targets.triggers().is_empty());
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_is_429_per_source() {
    let targets = Recorder::standard();
    let metrics = Arc::new(Metrics::new());
    let router = router_with(targets.clone(), metrics.clone());
    let burst = ReceiverLimits::default().burst as usize;
    let body = fixture("github-push.json");
    let headers = github("push", &body, SECRET);
    for _ in 0..burst {
        assert_eq!(
            post(&router, "/hooks/default/apps", &headers, &body).await.status,
            StatusCode::ACCEPTED
        );
    }
    let answer = post(&router, "/hooks/default/apps", &headers, &body).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.body, "too many requests\n");
    let retry: u64 = answer.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(targets.triggers().len(), burst, "no fetch over the limit");
    // Bad signatures neither use up the budget of another source nor get through.
    let infra = fixture("gitlab-push.json");
    for _ in 0..3 * burst {
        assert_eq!(
            post(&router, "/hooks/default/infra", &gitlab("guess"), &infra)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post(&router, "/hooks/default/infra", &gitlab("another secret"), &infra)
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(r#"driftguard_receiver_requests_total{result="rate_limited"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn file_targets_serve_standalone_sources_over_a_real_listener() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("apps-hook/token");
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let targets = Arc::new(FileTargets::new([
        FileSource {
            id: "default/apps".into(),
            secret_file: Some(secret_file),
        },
        FileSource {
            id: "default/plain".into(),
            secret_file: None,
        },
    ]));
    let limits = ReceiverLimits::default();
    let router = receiver::router(targets.clone(), &limits, Arc::new(Metrics::new()));
    let bound = receiver::bind("127.0.0.1:0".parse().unwrap(), router, &limits)
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(async move {
        let _ = stopped.await;
    }));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let body = fixture("github-push.json");
    let mut deliver = |path: &str, headers: Vec<(&'static str, String)>| {
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        sender.send_request(request.body(http_body_util::Full::new(bytes_of(&body))).unwrap())
    };
    let notify = targets.notify();
    let answer = deliver("/hooks/default/apps", github("push", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(Duration::from_secs(5), notify.notified())
        .await
        .expect("the refresher is woken");
    assert_eq!(targets.take_requested(), ["default/apps"]);
    // Same kept-alive connection.
    let answer = deliver("/hooks/default/plain", github("push", &body, SECRET))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let answer = deliver("/hooks/default/apps", github("push", &body, "guess"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(targets.take_requested().is_empty());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the receiver stops")
        .unwrap();
}

fn bytes_of(body: &[u8]) -> axum::body::Bytes {
    axum::body::Bytes::copy_from_slice(body)
}

/// The `driftguard.io/requested-at` annotation of GitSource `default/apps`, if any.
async fn requested_at(sources: &Api<GitSource>) -> Option<String> {
    sources
        .get("apps")
        .await
        .unwrap()
        .metadata
        .annotations
        .and_then(|mut a| a.remove(REQUESTED_AT_ANNOTATION))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_a_valid_push_annotates_the_source_and_the_controller_fetches_at_once() {
    // The real API server: the test's objects by admin, the receiver and the GitSource
    // controller as driftguard's service account with the chart's RBAC.
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo,
        commit: first_commit,
        guards: _guards,
    } = installed(json!({})).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "apps-hook", "namespace": "default"},
        "stringData": {"token": format!("{SECRET}\n")}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
    // An hour between fetches: only the push can explain a fetch during the test.
    sources
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "1h", "receiver": {"secretRef": {"name": "apps-hook"}}}})),
        )
        .await
        .unwrap();
    for (name, receiver) in [
        ("plain", json!(null)),
        ("broken", json!({"secretRef": {"name": "no-such-secret"}})),
    ] {
        let source: GitSource = serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"url": repo.path().to_str().unwrap(), "receiver": receiver}
        }))
        .unwrap();
        sources.create(&PostParams::default(), &source).await.unwrap();
    }

    // The leader's GitSource controller.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (_leading_tx, leading) = tokio::sync::watch::channel(true);
    let controller = tokio::spawn(driftguard::reconcile::run::run_sources(
        support::guards::source_context(&client),
        leading,
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let fetched = |commit: String| {
        let sources = sources.clone();
        move || {
            let sources = sources.clone();
            let want = format!("main@sha1:{commit}");
            async move {
                sources
                    .get("apps")
                    .await
                    .ok()
                    .and_then(|s| s.status?.last_fetched_revision)
                    == Some(want.clone())
            }
        }
    };
    eventually(
        "the first fetch",
        Duration::from_secs(20),
        fetched(first_commit.clone()),
    )
    .await;
    // Let the controller settle (its own status write comes back as one more reconcile).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A new commit; the source would not look again for an hour.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second_commit = support::git(repo.path(), &["rev-parse", "HEAD"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        fetched(first_commit)().await,
        "nothing fetches the new commit by itself"
    );

    let targets = Arc::new(KubeTargets::start(client.clone(), Duration::from_secs(10)));
    let router = receiver::router(targets, &ReceiverLimits::default(), Arc::new(Metrics::new()));
    let body = fixture("github-push.json");

    // Refused deliveries leave the source alone.
    let answer = post(&router, "/hooks/default/apps", &github("push", &body, "guess"), &body).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    for path in ["/hooks/default/plain", "/hooks/default/missing"] {
        let answer = post(&router, path, &github("push", &body, SECRET), &body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let answer = post(&router, "/hooks/default/broken", &github("push", &body, SECRET), &body).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(requested_at(&sources).await, None);

    // A valid push (GitLab's token; the Secret's trailing newline is not part of it).
    let before = k8s_openapi::jiff::Timestamp::now();
    let answer = post(
        &router,
        "/hooks/default/apps",
        &gitlab(SECRET),
        &fixture("gitlab-push.json"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let stamped = requested_at(&sources).await.expect("the annotation is set");
    let stamped: k8s_openapi::jiff::Timestamp = stamped.parse().expect("RFC 3339");
    assert!(stamped >= before, "{stamped} >= {before}");
    eventually(
        "the fetch the push asked for",
        Duration::from_secs(20),
        fetched(second_commit),
    )
    .await;
    assert!(
        sources
            .get("plain")
            .await
            .unwrap()
            .metadata
            .annotations
            .is_none_or(|a| !a.contains_key(REQUESTED_AT_ANNOTATION)),
        "only the pushed source is annotated"
    );

    stop.send(true).unwrap();
    controller.await.unwrap();
}
