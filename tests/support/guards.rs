//! A Guard installed on the test API server over a real Git repository, and waiting for
//! conditions.

use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The CRDs installed, a GitSource on a fresh example repository (branch main) and a Guard
/// `default/example-app` over `examples/app` with `guard_spec` merged into its spec.
pub async fn install(client: &kube::Client, guard_spec: serde_json::Value) -> (tempfile::TempDir, String, Api<Guard>) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in driftguard::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let (repo, commit) = super::example_repo();
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "apps", "namespace": "default"},
        "spec": {"url": repo.path().to_str().unwrap(), "ref": {"branch": "main"}}
    }))
    .unwrap();
    Api::<GitSource>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &source)
        .await
        .unwrap();
    let mut spec = json!({"sourceRef": {"name": "apps"}, "path": "examples/app"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), guard_spec.as_object()) {
        spec.extend(extra.clone());
    }
    let guard: Guard = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
        "metadata": {"name": "example-app", "namespace": "default"},
        "spec": spec
    }))
    .unwrap();
    let guards: Api<Guard> = Api::namespaced(client.clone(), "default");
    guards.create(&PostParams::default(), &guard).await.unwrap();
    (repo, commit, guards)
}

/// Poll `check` until it is true, failing after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
