//! The Lease lost in the middle of a reconcile (issue 10): two replicas with their own
//! identities, the leader's applies slowed down and then its Lease renewals failing. The old
//! leader stops writing before the Lease can expire for the other replica, the successor
//! finishes the reconcile, and the old leader does not come back while the successor holds
//! the Lease. Everything is asserted from the test API server's request and response logs,
//! the stored objects, the Guard's status and both replicas' metrics.

mod support;

use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use driftguard::telemetry::Metrics;
use driftguard_testapi::faults::{Failure, Verb};
use driftguard_testapi::{Identity, RequestRecord, ServerOptions, TestApiServer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::guards::{ElectedReplica, eventually};

/// Lease duration of both replicas: renew deadline 2 s, retry every 0.6 s.
const LEASE: Duration = Duration::from_secs(3);
/// ConfigMaps the Guard declares.
const OBJECTS: usize = 10;
/// Latency of each apply of the first leader: its pass takes at least 4 s, twice the renew
/// deadline, so losing the Lease after the first apply cuts it short.
const APPLY_DELAY: Duration = Duration::from_millis(400);
const DEADLINE: Duration = Duration::from_secs(30);
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/driftguard/leases/driftguard-leader";

fn is_write(request: &RequestRecord) -> bool {
    matches!(request.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

fn is_lease(request: &RequestRecord) -> bool {
    request.path == LEASE_PATH || request.path.ends_with("/namespaces/driftguard/leases")
}

/// A repository declaring ConfigMaps `cm-0`..`cm-9` in `default` under `apps/`.
fn config_maps_repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    let manifests: Vec<String> = (0..OBJECTS)
        .map(|i| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: default\ndata:\n  n: \"{i}\"\n")
        })
        .collect();
    std::fs::write(dir.path().join("apps/config.yaml"), manifests.join("---\n")).unwrap();
    support::git(dir.path(), &["init", "-q", "-b", "main"]);
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-q", "-m", "ten config maps"]);
    let commit = support::git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, commit)
}

/// Namespace, CRDs and a GitSource over `repo`, created by the cluster admin (so that the
/// request log holds no setup write of either replica).
async fn setup(admin: &kube::Client, repo: &std::path::Path) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "driftguard"}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in driftguard::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "apps", "namespace": "default"},
        "spec": {"url": repo.to_str().unwrap(), "ref": {"branch": "main"}}
    }))
    .unwrap();
    Api::<GitSource>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &source)
        .await
        .unwrap();
}

/// Index in the response log of the first answer that satisfies `matches` (by request).
fn first_answer(api: &TestApiServer, matches: impl Fn(&RequestRecord, u16) -> bool) -> Option<(usize, usize)> {
    let requests = api.requests();
    api.responses()
        .iter()
        .enumerate()
        .find(|(_, r)| matches(&requests[r.request], r.status))
        .map(|(position, r)| (position, r.request))
}

fn metric_line(metrics: &Metrics, line: &str) -> bool {
    metrics.encode().unwrap().lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_mid_reconcile_stops_and_its_successor_finishes() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = support::kube_client(&api, Identity::Admin, dir.path()).await;
    let client_a = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let client_b = support::kube_client(&api, Identity::DriftguardPeer, dir.path()).await;
    let user_a = Identity::Driftguard.username();
    let user_b = Identity::DriftguardPeer.username();
    let (repo, commit) = config_maps_repo();
    setup(&admin, repo.path()).await;

    // A leads; B follows.
    let mut a = ElectedReplica::start(&client_a, "replica-a", LEASE).await;
    tokio::time::timeout(DEADLINE, a.leading.wait_for(|l| *l))
        .await
        .expect("A leads")
        .unwrap();
    let b = ElectedReplica::start(&client_b, "replica-b", LEASE).await;
    let followed = || async {
        api.requests()
            .iter()
            .any(|r| r.user == user_b && r.method == "GET" && r.path == LEASE_PATH)
    };
    eventually("B reads the Lease", DEADLINE, followed).await;
    assert!(!*b.leading.borrow());
    // When each replica's leadership changes: A must stop before B starts.
    let a_stopped = tokio::spawn({
        let mut leading = a.leading.clone();
        async move {
            leading.wait_for(|l| !*l).await.unwrap();
            tokio::time::Instant::now()
        }
    });
    let b_started = tokio::spawn({
        let mut leading = b.leading.clone();
        async move {
            leading.wait_for(|l| *l).await.unwrap();
            tokio::time::Instant::now()
        }
    });

    // A's applies are slow; the Guard appears and A starts its pass.
    api.faults().delay_for(user_a, Verb::Patch, "configmaps", APPLY_DELAY);
    let guard: Guard = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
        "metadata": {"name": "config", "namespace": "default"},
        "spec": {"sourceRef": {"name": "apps"}, "path": "apps", "interval": "1h"}
    }))
    .unwrap();
    let guards: Api<Guard> = Api::namespaced(admin.clone(), "default");
    guards.create(&PostParams::default(), &guard).await.unwrap();
    let first_apply = || async {
        first_answer(&api, |r, status| {
            r.user == user_a && r.method == "PATCH" && r.path.contains("/configmaps/") && (200..300).contains(&status)
        })
        .is_some()
    };
    eventually("A's first apply", DEADLINE, first_apply).await;

    // Mid-pass, A's Lease renewals start failing: twice at once (500), then its reads of the
    // Lease hang, as with an overloaded API server. A must stop leading by its renew deadline
    // all the same; B takes over once the Lease expires, and finishes the pass.
    let injected_at = api.requests().len();
    api.faults()
        .fail_for(user_a, Verb::Update, "leases", Failure::internal_error(), Some(2));
    let failed_twice = || async {
        let requests = api.requests();
        api.responses()
            .iter()
            .filter(|r| r.request >= injected_at && r.status == 500)
            .filter(|r| requests[r.request].user == user_a && requests[r.request].path == LEASE_PATH)
            .count()
            == 2
    };
    eventually("A's two failed renewals", DEADLINE, failed_twice).await;
    api.faults()
        .delay_for(user_a, Verb::Get, "leases", Duration::from_secs(20));
    let a_stopped = tokio::time::timeout(DEADLINE, a_stopped)
        .await
        .expect("A stops leading")
        .unwrap();
    let b_started = tokio::time::timeout(DEADLINE, b_started)
        .await
        .expect("B takes over")
        .unwrap();
    assert!(a_stopped < b_started, "A stopped leading before B started");
    let finished = || {
        let guards = guards.clone();
        let commit = commit.clone();
        async move {
            let status = guards.get("config").await.ok().and_then(|g| g.status);
            status.is_some_and(|s| {
                s.last_applied_revision.as_deref() == Some(commit.as_str())
                    && s.inventory.len() == OBJECTS
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }
    };
    eventually("B finishes the reconcile", DEADLINE, finished).await;

    // A's renewals work again: it reads the Lease, sees B, and writes nothing.
    api.faults().clear();
    let cleared_at = api.requests().len();
    let a_reads_again = || async {
        api.requests()[cleared_at..]
            .iter()
            .filter(|r| r.user == user_a && r.method == "GET" && r.path == LEASE_PATH)
            .count()
            >= 3
    };
    eventually("A's next election rounds", DEADLINE, a_reads_again).await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "driftguard");
    let spec = leases.get("driftguard-leader").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(!*a.leading.borrow() && *b.leading.borrow());

    // Metrics: A acquired once and expired once; B acquired once and leads.
    assert!(metric_line(
        &a.metrics,
        r#"driftguard_leader_changes_total{change="acquired"} 1"#
    ));
    assert!(
        metric_line(&a.metrics, r#"driftguard_leader_changes_total{change="expired"} 1"#),
        "{}",
        a.metrics.encode().unwrap()
    );
    assert!(!a.metrics.encode().unwrap().contains(r#"change="lost""#));
    assert!(metric_line(&a.metrics, "driftguard_leader 0"));
    assert!(metric_line(
        &b.metrics,
        r#"driftguard_leader_changes_total{change="acquired"} 1"#
    ));
    assert!(metric_line(&b.metrics, "driftguard_leader 1"));

    a.stop().await;
    b.stop().await;
    let requests = api.requests();
    let responses = api.responses();

    // B's acquisition: its first successful write of the Lease.
    let (acquired_at, acquisition) = first_answer(&api, |r, status| {
        r.user == user_b && is_write(r) && is_lease(r) && (200..300).contains(&status)
    })
    .expect("B acquired the Lease");
    // Every write of A that took effect did so before B acquired the Lease...
    let a_effective: Vec<(usize, &RequestRecord)> = responses
        .iter()
        .enumerate()
        .filter(|(_, r)| (200..300).contains(&r.status))
        .map(|(position, r)| (position, &requests[r.request]))
        .filter(|(_, r)| r.user == user_a && is_write(r))
        .collect();
    assert!(
        a_effective.iter().all(|(position, _)| *position < acquired_at),
        "A wrote after B acquired the Lease: {a_effective:?}"
    );
    // ... and A sent no write at all after that (no interleaving).
    let a_later: Vec<&RequestRecord> = requests[acquisition..]
        .iter()
        .filter(|r| r.user == user_a && is_write(r))
        .collect();
    assert!(a_later.is_empty(), "A's writes after B acquired: {a_later:?}");
    assert!(
        !requests[cleared_at..].iter().any(|r| r.user == user_a && is_write(r)),
        "A resumed writing while B holds the Lease"
    );
    // A was cut off mid-pass: it applied some ConfigMaps, B applied the rest (an object
    // already equal to Git is not written again), none twice.
    let applied = |user: &str| -> Vec<String> {
        effective_writes_of(&requests, &responses, user)
            .filter(|r| r.method == "PATCH" && r.path.contains("/configmaps/"))
            .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
            .collect()
    };
    let (by_a, by_b) = (applied(user_a), applied(user_b));
    assert!(
        (1..OBJECTS).contains(&by_a.len()),
        "A applied {by_a:?} before losing the Lease"
    );
    let mut all: Vec<String> = by_a.iter().chain(&by_b).cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..OBJECTS).map(|i| format!("cm-{i}")).collect();
    want.sort();
    assert_eq!(all, want, "A applied {by_a:?}, B applied {by_b:?}");
    assert!(
        !requests
            .iter()
            .any(|r| r.user == user_a && r.path.ends_with("/guards/config/status") && is_write(r)),
        "A never recorded its cut-short pass"
    );

    // The cluster equals Git and the inventory is complete.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    for i in 0..OBJECTS {
        let cm = config_maps.get(&format!("cm-{i}")).await.unwrap();
        assert_eq!(
            cm.data.unwrap().get("n").map(String::as_str),
            Some(i.to_string().as_str())
        );
        assert_eq!(
            cm.metadata
                .annotations
                .unwrap()
                .get("driftguard.io/guard")
                .map(String::as_str),
            Some("default/config")
        );
    }
    let status = guards.get("config").await.unwrap().status.unwrap();
    let mut names: Vec<String> = status.inventory.iter().map(|e| e.name.clone()).collect();
    names.sort();
    assert_eq!(names, want);
    api.stop().await;
}

/// The requests of `user` answered 2xx (the writes that took effect).
fn effective_writes_of<'a>(
    requests: &'a [RequestRecord],
    responses: &'a [driftguard_testapi::ResponseRecord],
    user: &'a str,
) -> impl Iterator<Item = &'a RequestRecord> + 'a {
    responses
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .map(|r| &requests[r.request])
        .filter(move |r| r.user == user)
}
