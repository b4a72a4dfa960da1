//! A Guard reconciled against the real API server (tests/support/cluster.rs) from a real Git
//! repository, by driftguard's service account with the chart's RBAC: the first sync
//! applies everything and records status, a commit that changes a field is applied, removing a
//! file prunes its objects, and `suspend` stops writes.

mod support;

use support::guards::{Driftguard, ElectedReplica, Installed, LeaderLoops, eventually, install_example, installed};

use driftguard::api::GitSource;

use std::time::Duration;

use driftguard::reconcile::controller::reconcile_guard;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_applies_commits_prunes_removed_files_and_suspends() {
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo,
        commit: first_commit,
        guards,
    } = installed(json!({})).await;
    let mut ctx = support::guards::context(&client).await;
    let audit = std::sync::Arc::new(driftguard::audit::MemorySink::new());
    ctx.audit = audit.clone();

    // First sync: everything applied, status recorded through the status subresource.
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(first_commit.as_str()));
    assert_eq!(status.inventory.len(), 5);
    let stored = guards.get("example-app").await.unwrap().status.unwrap();
    assert_eq!(stored.inventory.len(), 5);
    assert_eq!(stored.counts.objects, 5);
    assert_eq!(stored.conditions[0].type_, "Ready");
    assert_eq!(stored.conditions[0].status, "True");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(3));

    // A commit that changes a declared field is applied.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second_commit = support::git(repo.path(), &["rev-parse", "HEAD"]);
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(second_commit.as_str()));
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));

    // Removing a file prunes what it declared.
    support::git(repo.path(), &["rm", "-q", "examples/app/config.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "drop config"]);
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.inventory.len(), 3, "{:?}", status.inventory);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    assert!(config_maps.get_opt("web-config").await.unwrap().is_none());
    assert!(secrets.get_opt("web-credentials").await.unwrap().is_none());
    // Every write is audited: 5 creations, the replicas change, then the two prunes.
    let events = audit.events();
    let of = |kind: driftguard::audit::EventKind| events.iter().filter(|e| e.event == kind).collect::<Vec<_>>();
    assert_eq!(
        of(driftguard::audit::EventKind::ReconcileApplied).len(),
        6,
        "{events:?}"
    );
    let pruned: Vec<&str> = of(driftguard::audit::EventKind::ReconcilePruned)
        .iter()
        .map(|e| e.object.name.as_str())
        .collect();
    assert_eq!(pruned, ["web-credentials", "web-config"]);
    assert!(
        events
            .iter()
            .all(|e| e.guard == "default/example-app" && !e.object.version.is_empty())
    );

    // Suspended: a drifted object is left alone and Ready says why.
    guards
        .patch(
            "example-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.conditions[0].reason, "Suspended");
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(9));
    assert_eq!(status.inventory.len(), 3, "suspend keeps the inventory");

    // Resumed: Git is restored.
    guards
        .patch(
            "example-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_successor_takes_over() {
    // driftguard's namespace holds the Lease; both replicas are its service account.
    let Driftguard {
        cluster: _cluster,
        admin,
        client,
    } = Driftguard::start().await;
    let (repo, _, guards) = install_example(&admin, json!({"interval": "1s"})).await;

    let a = ElectedReplica::start(&client, "replica-a", Duration::from_secs(2)).await;
    let b = ElectedReplica::start(&client, "replica-b", Duration::from_secs(2)).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let replicas = |want: i32| support::guards::web_replicas(&deployments, want);
    eventually("the leader's first sync", Duration::from_secs(20), replicas(3)).await;
    let recorded = || {
        let guards = guards.clone();
        async move {
            let status = guards.get("example-app").await.ok().and_then(|g| g.status);
            status.is_some_and(|s| s.inventory.len() == 5)
        }
    };
    eventually("the inventory in status", Duration::from_secs(20), recorded).await;
    assert!(*a.leading.borrow() ^ *b.leading.borrow(), "exactly one leader");

    // The leader stops; the other replica takes over and applies the next commit.
    let (leader, follower) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    leader.stop().await;
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    eventually("the successor applies the commit", Duration::from_secs(20), replicas(4)).await;
    assert!(*follower.leading.borrow());
    follower.stop().await;
}

/// The Ready condition of a GitSource as (status, reason, message), if any.
fn source_ready(source: &GitSource) -> Option<(String, String, String)> {
    let ready = source.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status.clone(), ready.reason.clone(), ready.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_applied_at_the_sources_interval_not_the_guards() {
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo,
        commit: first_commit,
        guards,
    } = installed(json!({"interval": "1h"})).await;
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
    sources
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"interval": "1s"}})),
        )
        .await
        .unwrap();
    let loops = LeaderLoops::start(&client).await;

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
    let applied = |commit: String| {
        let guards = guards.clone();
        move || {
            let guards = guards.clone();
            let commit = commit.clone();
            async move {
                guards
                    .get("example-app")
                    .await
                    .ok()
                    .and_then(|g| g.status?.last_applied_revision)
                    == Some(commit)
            }
        }
    };
    eventually(
        "the source's first fetch",
        Duration::from_secs(20),
        fetched(first_commit.clone()),
    )
    .await;
    eventually("the Guard's first sync", Duration::from_secs(20), applied(first_commit)).await;

    // The Guard would not run again for an hour: the source's fetch wakes it.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second_commit = support::git(repo.path(), &["rev-parse", "HEAD"]);
    eventually(
        "the source fetches the commit",
        Duration::from_secs(20),
        fetched(second_commit.clone()),
    )
    .await;
    eventually(
        "the Guard applies the commit",
        Duration::from_secs(20),
        applied(second_commit.clone()),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));
    let source = sources.get("apps").await.unwrap();
    let (status, reason, message) = source_ready(&source).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Fetched"));
    assert!(
        message.contains("branch \"main\"") && message.contains(&second_commit[..12]),
        "{message}"
    );
    let status = source.status.unwrap();
    assert_eq!(status.observed_generation, source.metadata.generation);
    assert!(status.last_fetch_time.is_some());

    // The repository disappears: Ready turns False and the last good revision stays.
    let dir = tempfile::tempdir().unwrap();
    let moved = dir.path().join("moved-repo");
    std::fs::rename(repo.path(), &moved).unwrap();
    let failed = || {
        let sources = sources.clone();
        async move {
            sources
                .get("apps")
                .await
                .ok()
                .and_then(|s| source_ready(&s))
                .is_some_and(|(status, reason, _)| status == "False" && reason == "FetchFailed")
        }
    };
    eventually("the source reports the failed fetch", Duration::from_secs(20), failed).await;
    let source = sources.get("apps").await.unwrap();
    let (_, _, message) = source_ready(&source).unwrap();
    assert!(
        message.contains("does not exist") && message.contains("GitSource url"),
        "{message}"
    );
    assert_eq!(
        source.status.unwrap().last_fetched_revision,
        Some(format!("main@sha1:{second_commit}"))
    );
    std::fs::rename(&moved, repo.path()).unwrap();
    loops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_at_a_missing_path_is_not_ready() {
    let Driftguard {
        cluster: _cluster,
        admin,
        client,
    } = Driftguard::start().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-repo");
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"url": missing.to_str().unwrap(), "ref": {"branch": "main"}, "interval": "1s"}
    }))
    .unwrap();
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
    sources.create(&PostParams::default(), &source).await.unwrap();
    let loops = LeaderLoops::start(&client).await;

    let reported = || {
        let sources = sources.clone();
        async move {
            sources
                .get("broken")
                .await
                .ok()
                .and_then(|s| source_ready(&s))
                .is_some()
        }
    };
    eventually("the source's status", Duration::from_secs(20), reported).await;
    let source = sources.get("broken").await.unwrap();
    let (status, reason, message) = source_ready(&source).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "FetchFailed"));
    assert!(
        message.contains("default/broken") && message.contains(missing.to_str().unwrap()),
        "{message}"
    );
    assert!(message.contains("check the GitSource url"), "{message}");
    assert_eq!(source.status.unwrap().last_fetched_revision, None);
    loops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_render_prunes_nothing_unless_allow_empty() {
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo,
        commit: first_commit,
        guards,
    } = installed(json!({})).await;
    let ctx = support::guards::context(&client).await;
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.inventory.len(), 5);

    // A commit that leaves the path without manifests (a broken refactor, say).
    std::fs::write(repo.path().join("examples/app/README.md"), "moved elsewhere\n").unwrap();
    support::git(repo.path(), &["add", "examples/app/README.md"]);
    support::git(repo.path(), &["rm", "-q", "examples/app/*.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "everything moved"]);
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.inventory.len(), 5, "nothing forgotten");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    assert!(deployments.get_opt("web").await.unwrap().is_some(), "nothing pruned");
    let ready = &status.conditions[0];
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "EmptyRender"));
    assert!(ready.message.contains("allowEmpty"), "{}", ready.message);
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(first_commit.as_str()),
        "admission keeps enforcing what is still there"
    );

    // Saying so explicitly deletes everything.
    guards
        .patch(
            "example-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"prune": {"enabled": true, "allowEmpty": true}}})),
        )
        .await
        .unwrap();
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert!(status.inventory.is_empty(), "{:?}", status.inventory);
    assert!(deployments.get_opt("web").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_show_in_status_and_the_applied_revision_stays() {
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo,
        commit: first_commit,
        guards,
    } = installed(json!({})).await;
    let ctx = support::guards::context(&client).await;
    support::guards::reconcile(&guards, &ctx).await;
    let condition = |status: &driftguard::api::GuardStatus, kind: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };

    // Broken YAML in Git: Ready=False and Stalled name the file; nothing else changes.
    std::fs::write(repo.path().join("examples/app/broken.yaml"), "kind: [\n").unwrap();
    support::git(repo.path(), &["add", "examples/app/broken.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "broken"]);
    let error = reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "LoadFailed");
    let status = guards.get("example-app").await.unwrap().status.unwrap();
    let (ready, reason, message) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "LoadFailed"));
    assert!(message.contains("broken.yaml:1"), "{message}");
    assert_eq!(condition(&status, "Stalled").map(|c| c.0), Some("True".to_owned()));
    assert_eq!(status.last_applied_revision.as_deref(), Some(first_commit.as_str()));
    assert_eq!(status.inventory.len(), 5);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), "default");
    let warned = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("LoadFailed")
                && e.regarding.and_then(|r| r.name).as_deref() == Some("example-app")
        });
    assert!(warned, "a Warning Event on the Guard");

    // Fixed in Git: Ready again, Stalled gone.
    support::git(repo.path(), &["rm", "-q", "examples/app/broken.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "fixed"]);
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(condition(&status, "Ready").map(|c| c.0), Some("True".to_owned()));
    assert_eq!(condition(&status, "Stalled"), None);

    // A sourceRef that names nothing.
    guards
        .patch(
            "example-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"sourceRef": {"name": "nope"}}})),
        )
        .await
        .unwrap();
    reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap_err();
    let status = guards.get("example-app").await.unwrap().status.unwrap();
    let (ready, reason, message) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "SourceNotFound"));
    assert!(message.contains("default/nope"), "{message}");
}
