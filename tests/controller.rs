//! A Guard reconciled against the test API server from a real Git repository: the first sync
//! applies everything and records status, a commit that changes a field is applied, removing a
//! file prunes its objects, and `suspend` stops writes.

mod support;

use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use driftguard::desired::DesiredCache;
use driftguard::reconcile::apply::Applier;
use driftguard::reconcile::controller::{Context, reconcile_guard};
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_applies_commits_prunes_removed_files_and_suspends() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in driftguard::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let (repo, first_commit) = support::example_repo();
    let sources: Api<GitSource> = Api::namespaced(client.clone(), "default");
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "apps", "namespace": "default"},
        "spec": {"url": repo.path().to_str().unwrap(), "ref": {"branch": "main"}}
    }))
    .unwrap();
    sources.create(&PostParams::default(), &source).await.unwrap();
    let guards: Api<Guard> = Api::namespaced(client.clone(), "default");
    let guard: Guard = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
        "metadata": {"name": "example-app", "namespace": "default"},
        "spec": {"sourceRef": {"name": "apps"}, "path": "examples/app"}
    }))
    .unwrap();
    guards.create(&PostParams::default(), &guard).await.unwrap();
    let ctx = Context {
        applier: Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap(),
        client: client.clone(),
        cache: DesiredCache::new(64 * 1024 * 1024),
    };

    // First sync: everything applied, status recorded through the status subresource.
    let status = reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap();
    assert_eq!(status.last_applied_revision.as_deref(), Some(first_commit.as_str()));
    assert_eq!(status.inventory.len(), 5);
    let stored = guards.get("example-app").await.unwrap().status.unwrap();
    assert_eq!(stored.inventory.len(), 5);
    assert_eq!(stored.counts.objects, 5);
    assert_eq!(stored.conditions[0].type_, "Ready");
    assert_eq!(stored.conditions[0].status, "True");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(3));

    // A commit that changes a declared field is applied.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second_commit = support::git(repo.path(), &["rev-parse", "HEAD"]);
    let status = reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap();
    assert_eq!(status.last_applied_revision.as_deref(), Some(second_commit.as_str()));
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));

    // Removing a file prunes what it declared.
    support::git(repo.path(), &["rm", "-q", "examples/app/config.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "drop config"]);
    let status = reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap();
    assert_eq!(status.inventory.len(), 3, "{:?}", status.inventory);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert!(config_maps.get_opt("web-config").await.unwrap().is_none());
    assert!(secrets.get_opt("web-credentials").await.unwrap().is_none());

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
    let status = reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap();
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
    reconcile_guard(&guards.get("example-app").await.unwrap(), &ctx)
        .await
        .unwrap();
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));
    api.stop().await;
}
