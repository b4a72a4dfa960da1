//! A remote GitSource end to end against the real API server (tests/support/cluster.rs), the
//! loops acting as driftguard's service account with the chart's RBAC: served by a real `git daemon`,
//! fetched into a mirror, every commit's SSH signature checked. An unsigned commit is refused
//! (status, audit, metrics) and the cluster stays on the last verified revision; with the Git
//! server gone, the last good revision keeps serving and the status says why.

mod support;

use std::sync::Arc;
use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use driftguard::audit::EventKind;
use driftguard::reconcile::controller::{Context, reconcile_guard};
use driftguard::source::Fetcher;
use driftguard::telemetry::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::gitservers::GitDaemon;
use support::guards::{Driftguard, LeaderLoops, eventually};

/// Commit in `repo` (everything staged) signed with the SSH key `key`.
fn signed_commit(repo: &std::path::Path, key: &std::path::Path, message: &str) {
    let signing_key = format!("user.signingkey={}", key.display());
    support::git(
        repo,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-qS",
            "-am",
            message,
        ],
    );
}

fn set_replicas(repo: &std::path::Path, from: u32, to: u32) {
    let deployment = repo.join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(
        &deployment,
        text.replace(&format!("replicas: {from}"), &format!("replicas: {to}")),
    )
    .unwrap();
}

/// The GitSource's Ready condition as (status, reason, message).
async fn ready(sources: &Api<GitSource>) -> Option<(String, String, String)> {
    let status = sources.get("remote").await.ok()?.status?;
    let c = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

/// Waits until the GitSource's Ready condition is False with `reason`.
async fn not_ready_because(sources: &Api<GitSource>, reason: &str) {
    let not_ready = || {
        let sources = sources.clone();
        async move {
            ready(&sources)
                .await
                .is_some_and(|(status, why, _)| status == "False" && why == reason)
        }
    };
    eventually(reason, Duration::from_secs(30), not_ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_source_is_fetched_verified_and_survives_its_server_going_away() {
    let Driftguard {
        cluster: _cluster,
        admin,
        client,
    } = Driftguard::start().await;
    let dir = tempfile::tempdir().unwrap();

    // A working repository whose every commit is SSH-signed, pushed to a bare one the daemon serves.
    let (work, _) = support::example_repo();
    let key = dir.path().join("signer");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "release-bot", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    let signing_key = format!("user.signingkey={}", key.display());
    support::git(
        work.path(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-qS",
            "--amend",
            "--no-edit",
        ],
    );
    let served = dir.path().join("served");
    let bare = support::gitservers::bare_clone(work.path(), &served, "apps.git");
    let push = || support::git(work.path(), &["push", "-q", bare.to_str().unwrap(), "main"]);
    let mut daemon = GitDaemon::start(&served, dir.path());
    let first = support::git(work.path(), &["rev-parse", "HEAD"]);

    // The trusted key, a remote GitSource that verifies HEAD, and a Guard on it (by admin).
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let trusted: Secret = serde_json::from_value(json!({
        "metadata": {"name": "release-keys", "namespace": "default"},
        "stringData": {"release-bot": public}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &trusted)
        .await
        .unwrap();
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "remote", "namespace": "default"},
        "spec": {"url": daemon.url("apps.git"), "ref": {"branch": "main"}, "interval": "1s", "timeout": "10s",
                 "verify": {"mode": "HEAD", "secretRef": {"name": "release-keys"}}}
    }))
    .unwrap();
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
    sources.create(&PostParams::default(), &source).await.unwrap();
    let guard: Guard = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
        "metadata": {"name": "example-app", "namespace": "default"},
        "spec": {"sourceRef": {"name": "remote"}, "path": "examples/app", "interval": "1h"}
    }))
    .unwrap();
    let guards: Api<Guard> = Api::namespaced(admin.clone(), "default");
    guards.create(&PostParams::default(), &guard).await.unwrap();

    // The leader's loops, sharing one mirror cache.
    let leader = LeaderLoops::start(&client).await;
    let (audit, metrics) = (leader.audit.clone(), leader.metrics.clone());
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let replicas = |want: i32| support::guards::web_replicas(&deployments, want);

    // The signed first commit is fetched, verified and applied.
    eventually(
        "the verified first commit applied",
        Duration::from_secs(30),
        replicas(3),
    )
    .await;
    let status = sources.get("remote").await.unwrap().status.unwrap();
    assert_eq!(status.last_fetched_revision, Some(format!("main@sha1:{first}")));
    assert!(
        audit
            .events()
            .iter()
            .any(|e| e.event == EventKind::SourceUpdated && e.revision == first)
    );

    // An unsigned commit is refused: status, audit and metrics say so; the cluster stays.
    set_replicas(work.path(), 3, 4);
    support::git(work.path(), &["commit", "-qam", "unsigned"]);
    push();
    let unsigned = support::git(work.path(), &["rev-parse", "HEAD"]);
    not_ready_because(&sources, "VerificationFailed").await;
    let (_, _, message) = ready(&sources).await.unwrap();
    assert!(
        message.contains(&unsigned[..12]) || message.contains("unsigned"),
        "{message}"
    );
    let status = sources.get("remote").await.unwrap().status.unwrap();
    assert_eq!(
        status.last_fetched_revision,
        Some(format!("main@sha1:{first}")),
        "kept the verified revision"
    );
    assert!(
        audit
            .events()
            .iter()
            .any(|e| e.event == EventKind::SourceVerificationFailed && e.revision == unsigned),
        "{:?}",
        audit.events()
    );
    assert!(metrics.encode().unwrap().contains(r#"reason="VerificationFailed""#));
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(3));

    // A signed commit on top is accepted and applied.
    set_replicas(work.path(), 4, 5);
    signed_commit(work.path(), &key, "signed again");
    push();
    let signed = support::git(work.path(), &["rev-parse", "HEAD"]);
    eventually("the next signed commit applied", Duration::from_secs(30), replicas(5)).await;

    // A replica with its own, empty mirror cache loads the applied revision into its
    // admission index: it fetches that commit itself.
    let store = Arc::new(driftguard::desired::DesiredStore::new());
    let replica_cache = tempfile::tempdir().unwrap();
    let (replica_stop, mut replica_stopped) = tokio::sync::watch::channel(false);
    let replica = tokio::spawn(driftguard::reconcile::replica::follow_applied(
        driftguard::reconcile::replica::Follow {
            client: client.clone(),
            store: store.clone(),
            cache: driftguard::desired::DesiredCache::new(64 * 1024 * 1024),
            fetcher: Fetcher::new(replica_cache.path()),
            metrics: Arc::new(Metrics::new()),
            tenancy: Default::default(),
            access: driftguard::reconcile::access::AccessReviewer::new(client.clone()),
        },
        async move {
            let _ = replica_stopped.wait_for(|s| *s).await;
        },
    ));
    let indexed = || {
        let store = store.clone();
        let signed = signed.clone();
        async move {
            store
                .index()
                .lookup("apps", "deployments", Some("default"), "web")
                .is_some_and(|m| m.revision.commit == signed)
        }
    };
    eventually(
        "the replica's index at the applied revision",
        Duration::from_secs(30),
        indexed,
    )
    .await;
    replica_stop.send(true).unwrap();
    replica.await.unwrap();

    // The Git server goes away: the status explains, the last good revision keeps serving.
    daemon.stop();
    not_ready_because(&sources, "FetchFailed").await;
    let (_, _, message) = ready(&sources).await.unwrap();
    assert!(message.contains("git://127.0.0.1"), "names the URL: {message}");
    let status = sources.get("remote").await.unwrap().status.unwrap();
    assert_eq!(status.last_fetched_revision, Some(format!("main@sha1:{signed}")));
    // A Guard reconcile (a fresh process: new cache, same mirror) still reads the revision.
    let mut offline = Context::new(
        client.clone(),
        driftguard::reconcile::apply::Applier::new(client.clone(), Duration::from_secs(10))
            .await
            .unwrap(),
        driftguard::desired::DesiredCache::new(64 * 1024 * 1024),
    );
    offline.fetcher = Fetcher::new(leader.cache_dir());
    let status = reconcile_guard(&guards.get("example-app").await.unwrap(), &offline)
        .await
        .unwrap();
    assert_eq!(status.last_applied_revision.as_deref(), Some(signed.as_str()));

    leader.stop().await;
}
