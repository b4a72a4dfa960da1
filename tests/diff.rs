//! `driftguard diff --repo/--path` against the test API server: exit 0 when the cluster matches
//! Git, 1 with each drifted declared field (cluster vs Git, Secret data hidden) and each missing
//! object, 2 on errors.

mod support;

use std::process::Command;
use std::time::Duration;

use driftguard::api::{Mode, PruneSpec};
use driftguard::reconcile::apply::Applier;
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

fn diff(repo: &std::path::Path, kubeconfig: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args([
            "diff",
            "--path",
            "examples/app",
            "--guard",
            "default/example-app",
            "--repo",
        ])
        .arg(repo)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .expect("driftguard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_drifted_fields_and_missing_objects() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = support::example_repo();
    let admin = support::kube_client(&api, Identity::Admin, dir.path()).await;
    let kubeconfig = dir.path().join("Admin.kubeconfig");

    // The enforcer's first sync.
    let set = support::example_set(&support::example_guard(Mode::Deny));
    let applier = Applier::new(admin.clone(), Duration::from_secs(10)).await.unwrap();
    let sync = applier
        .sync(&set.objects, &[], &set.guard.id, &PruneSpec::default())
        .await;
    assert!(sync.outcome.apply_failed.is_empty(), "{:?}", sync.outcome.apply_failed);

    let (repo_path, kubeconfig_path) = (repo.path().to_owned(), kubeconfig.clone());
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || diff(&repo_path, &kubeconfig_path))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("no differences: the cluster matches Git for all 5 objects"),
        "{stdout}"
    );

    // Drift past the webhook: replicas, a Secret value; and a deleted ConfigMap.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    secrets
        .patch(
            "web-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"api-token": "leaked-by-hand"}})),
        )
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    config_maps
        .delete("web-config", &DeleteParams::default())
        .await
        .unwrap();

    let (repo_path, kubeconfig_path) = (repo.path().to_owned(), kubeconfig.clone());
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || diff(&repo_path, &kubeconfig_path))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "Deployment.apps default/web: 1 declared field differs from Git (examples/app/deployment.yaml:2)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  spec.replicas: cluster 5, Git 3"), "{stdout}");
    assert!(
        stdout.contains("ConfigMap default/web-config: missing from the cluster"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data.api-token: cluster (hidden), Git (hidden)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("leaked") && !stdout.contains("bGVha2Vk") && !stdout.contains("example-placeholder"),
        "{stdout}"
    );

    let (code, _, stderr) = tokio::task::spawn_blocking({
        let repo_path = repo.path().to_owned();
        move || diff(&repo_path, std::path::Path::new("/nonexistent/kubeconfig"))
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    api.stop().await;
}
