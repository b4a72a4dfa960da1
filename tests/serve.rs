//! `driftguard serve` end to end: the real binary, real TLS with generated certificates, the
//! real admission stack over a real Git repository.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use support::https::{Answer, Body, DEADLINE, connect, empty, eventually, full, send};
use support::process::{between, lines, recv_until, spawn_serve};
use support::{example_repo, fixture, root};

/// A running `driftguard serve` with its output streamed into channels.
struct Served {
    child: Child,
    https: SocketAddr,
    metrics: SocketAddr,
    ca: CertificateDer<'static>,
    curl: String,
    audit: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the embedded default (no config) inside a repository that holds examples/app.
fn serve_embedded(repo: &Path) -> Served {
    let args = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"].map(std::ffi::OsStr::new);
    let (child, stderr, audit) = spawn_serve(repo, &args);
    let banner = recv_until(&stderr, "the serving banner", |l| {
        l.contains("driftguard serves examples/app on")
    });
    let curl = recv_until(&stderr, "the curl hint", |l| l.starts_with("Try: curl"));
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || while stderr.recv().is_ok() {});
    let https: SocketAddr = between(&banner, "https://", " ").parse().unwrap();
    let metrics: SocketAddr = between(&banner, "metrics on http://", "/metrics").parse().unwrap();
    let ca_path = PathBuf::from(between(&banner, "(CA: ", ")"));
    assert!(
        ca_path.starts_with(repo.join("certs")),
        "dev certs go to certs/: {}",
        ca_path.display()
    );
    let pem = std::fs::read(&ca_path).unwrap();
    let ca = driftguard::certs::parse_cert_chain(&pem, "ca").unwrap().remove(0);
    Served {
        child,
        https,
        metrics,
        ca,
        curl: curl.trim_start_matches("Try: ").to_owned(),
        audit,
    }
}

async fn post(served: &Served, path: &str, body: Body) -> Answer {
    let mut sender = connect(served.https, &served.ca).await;
    send(&mut sender, "POST", path, body).await.unwrap()
}

/// The push receiver's address from its `push receiver listening ... hooks=ADDR` log line.
fn hooks_addr(stderr: &mpsc::Receiver<String>) -> SocketAddr {
    let line = recv_until(stderr, "the push receiver's address", |l| {
        l.contains("push receiver listening")
    });
    between(&line, "hooks=", " ").parse().unwrap()
}

/// POSTs a GitHub push signed with `secret` to the push receiver at `addr` over plain HTTP.
async fn push_hook(addr: SocketAddr, path: &str, secret: &str) -> StatusCode {
    let body = fixture("hooks/github-push.json");
    let signature = format!("sha256={}", driftguard::receiver::sign(secret.as_bytes(), &body));
    let mut sender = support::https::http1_over(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "hooks.example.com")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", signature)
        .body(full(body))
        .unwrap();
    sender.send_request(request).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_serves_decisions_over_https() {
    let (dir, commit) = example_repo();
    // The README's curl hint posts examples/reviews/: give the repository a copy.
    let reviews = dir.path().join("examples/reviews");
    std::fs::create_dir_all(&reviews).unwrap();
    for entry in std::fs::read_dir(root().join("examples/reviews")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, reviews.join(path.file_name().unwrap())).unwrap();
    }
    let served = serve_embedded(dir.path());

    // Ready once the example app's desired state is loaded.
    eventually("readyz", || async {
        let mut sender = connect(served.https, &served.ca).await;
        let answer = send(&mut sender, "GET", "/readyz", empty()).await.ok()?;
        (answer.status == StatusCode::OK).then_some(())
    })
    .await;

    // One kept-alive connection decides several reviews.
    let mut sender = connect(served.https, &served.ca).await;
    let denied = send(&mut sender, "POST", "/validate", full(fixture("scale-deployment.json")))
        .await
        .unwrap();
    assert_eq!(denied.status, StatusCode::OK);
    let review: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.replicas") && message.contains("examples/app/deployment.yaml:10"),
        "{message}"
    );
    assert!(message.contains(&commit[..12]), "names the revision: {message}");
    let allowed = send(&mut sender, "POST", "/validate", full(fixture("rollout-restart.json")))
        .await
        .unwrap();
    assert!(allowed.body.contains(r#""allowed":true"#), "{}", allowed.body);
    let mutate = send(&mut sender, "POST", "/mutate", full(fixture("scale-deployment.json")))
        .await
        .unwrap();
    assert!(
        mutate.body.contains(r#""allowed":true"#) && !mutate.body.contains("patch"),
        "deny mode: {}",
        mutate.body
    );

    // The denial is one audit line on stdout.
    let line = recv_until(&served.audit, "the audit event", |l| l.contains("admission.denied"));
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["request_uid"], "a3c1e2f0-0001-4000-8000-000000000001");
    assert_eq!(event["actor"]["username"], "alice@example.com");
    assert_eq!(event["revision"], commit.as_str());

    // Bad input gets a clear 4xx and the server keeps serving.
    let mut wrong_version: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_uid: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let bad: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            b"<html>not json</html>".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            serde_json::to_vec(&wrong_version).unwrap(),
            StatusCode::BAD_REQUEST,
            "admission.k8s.io/v1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "no request",
        ),
        (serde_json::to_vec(&no_uid).unwrap(), StatusCode::BAD_REQUEST, "no uid"),
        (vec![b' '; 10 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "8388608"),
    ];
    for (body, status, needle) in bad {
        let answer = post(&served, "/validate", full(body)).await;
        assert_eq!(answer.status, status, "{needle}: {}", answer.body);
        assert!(answer.error_message().contains(needle), "{needle:?} in {}", answer.body);
    }
    let again = post(&served, "/validate", full(fixture("delete-by-user.json"))).await;
    assert!(
        again.body.contains(r#""allowed":false"#),
        "still serving: {}",
        again.body
    );

    // The README's curl hint works as printed.
    let out = tokio::task::spawn_blocking({
        let (curl, cwd) = (served.curl.clone(), dir.path().to_owned());
        move || {
            Command::new("sh")
                .arg("-c")
                .arg(format!("{curl} --silent --show-error"))
                .current_dir(cwd)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("curl runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}",
        served.curl,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains(r#""allowed":false"#), "{printed}");

    // Metrics on the plain-HTTP port.
    let scraped = support::https::scrape(served.metrics).await;
    assert!(
        scraped.contains(r#"driftguard_desired_objects{guard="default/example-app"} 5"#),
        "{scraped}"
    );
    assert!(
        scraped.contains(
            r#"driftguard_admission_requests_total{webhook="validate",operation="UPDATE",decision="denied"}"#
        ),
        "{scraped}"
    );
    assert!(
        scraped.contains("driftguard_admission_duration_seconds_bucket{le=\"0.00005\"}"),
        "{scraped}"
    );

    // SIGTERM: a clean exit.
    let mut served = served;
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = served.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_in_revert_mode_patches_and_warns() {
    let (dir, _) = example_repo();
    let tls = tempfile::tempdir().unwrap();
    let ca = driftguard::certs::CertificateAuthority::generate("test CA").unwrap();
    let issued = ca
        .issue_serving(
            &["localhost".to_owned(), "127.0.0.1".to_owned()],
            Duration::from_secs(3600),
        )
        .unwrap();
    std::fs::write(tls.path().join("tls.crt"), &issued.cert_pem).unwrap();
    std::fs::write(tls.path().join("tls.key"), &issued.key_pem).unwrap();
    let config = tls.path().join("driftguard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  listen: 127.0.0.1:0
  metricsListen: null
  tls: {{ certFile: tls.crt, keyFile: tls.key }}
sources:
  - name: apps
    url: {repo:?}
    ref: {{ branch: main }}
guards:
  - name: example-app
    sourceRef: {{ name: apps }}
    path: examples/app
    mode: revert
"#,
            repo = dir.path().display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let line = recv_until(&stderr, "the listening address", |l| {
        l.contains("driftguard is serving admission")
    });
    std::thread::spawn(move || while stderr.recv().is_ok() {});
    let addr: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr=").and_then(|a| a.parse().ok()))
        .unwrap_or_else(|| panic!("no addr= in {line}"));
    let mut sender = connect(addr, ca.cert_der()).await;
    let answer = send(&mut sender, "POST", "/mutate", full(fixture("scale-deployment.json")))
        .await
        .unwrap();
    let review: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(review["response"]["allowed"], true, "{}", answer.body);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    assert!(
        review["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("reverted spec.replicas")
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `server.hooksListen` starts the push receiver next to the webhook; standalone, secrets come
/// from `server.hooksSecretsDir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_with_hooks_listen_serves_the_push_receiver() {
    let (repo, _) = example_repo();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hooks/apps-hook")).unwrap();
    std::fs::write(dir.path().join("hooks/apps-hook/token"), "s3cret\n").unwrap();
    let config = dir.path().join("driftguard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  listen: 127.0.0.1:0
  metricsListen: null
  hooksListen: 127.0.0.1:0
  hooksSecretsDir: hooks
  tls: {{ devCertsDir: certs }}
sources:
  - name: apps
    url: {repo:?}
    receiver: {{ secretRef: {{ name: apps-hook }} }}
  - name: plain
    url: {repo:?}
guards:
  - name: example-app
    sourceRef: {{ name: apps }}
    path: examples/app
"#,
            repo = repo.path().display().to_string()
        ),
    )
    .unwrap();
    let (mut child, stderr, _audit) = spawn_serve(dir.path(), &["--config".as_ref(), config.as_os_str()]);
    // The first load happens before the listeners start.
    let hooks = hooks_addr(&stderr);

    // A new commit is picked up at once on a push, not at the source's 1m interval.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second = support::git(repo.path(), &["rev-parse", "HEAD"]);
    assert_eq!(
        push_hook(hooks, "/hooks/default/apps", "s3cret").await,
        StatusCode::ACCEPTED
    );
    recv_until(&stderr, "the pushed commit loaded", |l| {
        l.contains("desired state loaded") && l.contains(&second)
    });
    std::thread::spawn(move || while stderr.recv().is_ok() {});
    assert_eq!(
        push_hook(hooks, "/hooks/default/apps", "guess").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push_hook(hooks, "/hooks/default/plain", "s3cret").await,
        StatusCode::NOT_FOUND
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `driftguard serve --kubeconfig` against the real kube-apiserver (tests/support/cluster.rs;
/// no webhook configuration registered, so nothing stops an edit): the replica wins the Lease,
/// applies the Guard, serves the applied revision (ready only then), heals a `kubectl edit`,
/// and releases the Lease on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_enforces_the_guard_and_serves_what_it_applied() {
    use driftguard::api::Guard;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, PostParams};

    let cluster = tokio::task::spawn_blocking(support::cluster::Cluster::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (repo, commit) = example_repo();
    // The CRDs (served once Established), the driftguard namespace, a GitSource on the
    // repository and a Guard over examples/app, as an admin applies them.
    cluster.install_crds();
    cluster.ok(&["create", "namespace", "driftguard"]);
    cluster.apply_example_guard(repo.path());
    let client = cluster.client().await;
    let guards: Api<Guard> = Api::namespaced(client.clone(), "default");

    let kubeconfig = cluster.kubeconfig().to_owned();
    let config = dir.path().join("driftguard.yaml");
    std::fs::write(
        &config,
        "server:\n  listen: 127.0.0.1:0\n  metricsListen: 127.0.0.1:0\n  drainDelay: 0s\n  tls: {devCertsDir: certs}\ncluster:\n  identity: replica-a\n  leaseDuration: 2s\n",
    )
    .unwrap();
    let (mut child, stderr, audit) = spawn_serve(
        dir.path(),
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--hooks-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    );
    let serving = recv_until(&stderr, "the serving line", |l| {
        l.contains("driftguard is serving admission")
    });
    let hooks = hooks_addr(&stderr);
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        while let Ok(line) = stderr.recv() {
            kept.lock().unwrap().push(line);
        }
    });
    let https: SocketAddr = between(&serving, "addr=", " ").parse().unwrap();
    let pem = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
    let ca = driftguard::certs::parse_cert_chain(&pem, "ca").unwrap().remove(0);

    // The leader applies the Guard; the replica is ready once Guards and GitSources are listed
    // and every applied revision is loaded.
    eventually("the Guard applied", || async {
        let status = guards.get("example-app").await.ok()?.status?;
        (status.last_applied_revision.as_deref() == Some(commit.as_str())).then_some(())
    })
    .await;
    eventually("readyz", || async {
        let mut sender = connect(https, &ca).await;
        let answer = send(&mut sender, "GET", "/readyz", empty()).await.ok()?;
        (answer.status == StatusCode::OK).then_some(())
    })
    .await;
    let lease = Api::<Lease>::namespaced(client.clone(), "driftguard")
        .get("driftguard-leader")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));

    // Admission answers from the applied revision (the index follows the Guard's status).
    let review: Value = eventually("a denial from the applied revision", || async {
        let mut sender = connect(https, &ca).await;
        let answer = send(&mut sender, "POST", "/validate", full(fixture("scale-deployment.json")))
            .await
            .ok()?;
        let review: Value = serde_json::from_str(&answer.body).ok()?;
        (review["response"]["allowed"] == false).then_some(review)
    })
    .await;
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains(&commit[..12]), "names the applied revision: {message}");

    // With no webhook registered, a kubectl edit lands; self-heal restores Git.
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 3/replicas: 5/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tokio::task::spawn_blocking({
        let mut edit = cluster.machine_kubectl();
        edit.args(["edit", "deploy", "web", "-n", "default"])
            .env("EDITOR", &editor);
        move || edit.output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    eventually("replicas back to Git's 3", || async {
        let replicas = deployments.get("web").await.ok()?.spec?.replicas;
        (replicas == Some(3)).then_some(())
    })
    .await;
    let line = recv_until(&audit, "the drift.corrected audit line", |l| {
        l.contains("drift.corrected")
    });
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["field_manager"], "kubectl-edit");
    assert_eq!(event["fields"][0]["path"], "spec.replicas");
    assert_eq!(event["revision"], commit.as_str());

    // The enforcer's metrics.
    let metrics: SocketAddr = between(&serving, "metrics=Some(", ")").parse().unwrap();
    let scraped = support::https::scrape(metrics).await;
    for needle in [
        r#"driftguard_drift_corrections_total{guard="default/example-app",kind="Deployment"} 1"#,
        r#"driftguard_reconcile_duration_seconds_count{guard="default/example-app"}"#,
        r#"driftguard_desired_objects{guard="default/example-app"} 5"#,
        r#"driftguard_audit_events_total{event="drift.corrected"} 1"#,
        r#"driftguard_audit_events_total{event="reconcile.applied"} 5"#,
    ] {
        assert!(scraped.contains(needle), "{needle} in\n{scraped}");
    }

    // A signed push to the receiver asks the GitSource controller for a fetch.
    use driftguard::api::GitSource;
    use kube::api::{Patch, PatchParams};
    let secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "apps-hook"}, "stringData": {"token": "s3cret"}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let sources: Api<GitSource> = Api::namespaced(client.clone(), "default");
    let receiver = serde_json::json!({"spec": {"receiver": {"secretRef": {"name": "apps-hook"}}}});
    sources
        .patch("apps", &PatchParams::default(), &Patch::Merge(&receiver))
        .await
        .unwrap();
    // The receiver's watch sees the new spec shortly.
    eventually("a push accepted", || async {
        (push_hook(hooks, "/hooks/default/apps", "s3cret").await == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    let annotations = sources
        .get("apps")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        annotations.contains_key(driftguard::receiver::REQUESTED_AT_ANNOTATION),
        "{annotations:?}"
    );

    // SIGTERM: a clean exit that hands the Lease back.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}; logs:\n{}", logs.lock().unwrap().join("\n"));
    let lease = Api::<Lease>::namespaced(client.clone(), "driftguard")
        .get("driftguard-leader")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "released on shutdown");
    drop(repo);
    drop(cluster);
}

/// Standalone `serve` with a remote source behind HTTP basic auth, credentials read from
/// `secretsDir`: the first revision is fetched and loaded, and a wrong password never reaches
/// the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_fetches_a_remote_source_with_credentials_from_files() {
    use support::gitservers::{HttpAuth, SmartHttp};

    let (work, commit) = example_repo();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    support::gitservers::bare_clone(work.path(), &served, "apps.git");
    let http = SmartHttp::start(
        &served,
        HttpAuth::Basic {
            user: "deploy".to_owned(),
            password: "correct-horse-battery".to_owned(),
        },
    );
    for (name, password) in [("good", "correct-horse-battery"), ("bad", "Tr0ub4dor&3")] {
        let secret = dir.path().join("secrets").join(name);
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("username"), "deploy\n").unwrap();
        std::fs::write(secret.join("password"), format!("{password}\n")).unwrap();
    }
    let config = dir.path().join("driftguard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server: {{ listen: 127.0.0.1:0, metricsListen: null, tls: {{ devCertsDir: certs }} }}
gitCacheDir: mirrors
secretsDir: secrets
sources:
  - {{ name: apps, url: {url:?}, ref: {{ branch: main }}, secretRef: {{ name: good }} }}
  - {{ name: locked-out, url: {url:?}, ref: {{ branch: main }}, secretRef: {{ name: bad }} }}
guards:
  - {{ name: example-app, sourceRef: {{ name: apps }}, path: examples/app }}
  - {{ name: other, namespace: other, sourceRef: {{ name: locked-out, namespace: default }}, path: examples/app, targetNamespace: other }}
"#,
            url = http.url("apps.git")
        ),
    )
    .unwrap();
    let (mut child, stderr, _audit) = spawn_serve(dir.path(), &["--config".as_ref(), config.as_os_str()]);
    let mut seen = Vec::new();
    let loaded = recv_until(&stderr, "the remote revision loaded", |l| {
        seen.push(l.to_owned());
        l.contains("desired state loaded") && l.contains("default/example-app") && l.contains(&commit)
    });
    assert!(loaded.contains("objects=5"), "{loaded}");
    let refused = seen
        .iter()
        .find(|l| l.contains("other/other"))
        .cloned()
        .unwrap_or_else(|| recv_until(&stderr, "the refused source", |l| l.contains("other/other")));
    assert!(
        refused.contains("authentication") || refused.contains("401"),
        "{refused}"
    );
    assert!(!refused.contains("Tr0ub4dor"), "no password in logs: {refused}");
    assert!(
        dir.path().join("mirrors").read_dir().unwrap().next().is_some(),
        "a mirror in gitCacheDir"
    );
    let _ = child.kill();
    let _ = child.wait();
}
