//! `driftguard diff` against the real API server (tests/support/cluster.rs), run as admin: exit 0 when the cluster matches Git, 1 with
//! each drifted declared field (cluster vs Git, Secret data hidden), each missing object and
//! each object a sync would prune, 2 on errors. `--repo/--path` renders a local repository;
//! `--guard NS/NAME` alone reads the Guard, its GitSource and its inventory from the cluster.

mod support;

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use driftguard::api::{GitSource, Guard, Mode, PruneSpec};
use driftguard::reconcile::apply::Applier;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::cluster::Cluster;
use support::guards::Driftguard;

/// Run `driftguard` with `args`; returns (exit code, stdout, stderr).
fn driftguard<I, S>(args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("driftguard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `driftguard diff --repo REPO --path examples/app --guard default/example-app`.
fn diff(repo: &Path, kubeconfig: &Path) -> (i32, String, String) {
    driftguard([
        OsStr::new("diff"),
        OsStr::new("--path"),
        OsStr::new("examples/app"),
        OsStr::new("--guard"),
        OsStr::new("default/example-app"),
        OsStr::new("--repo"),
        repo.as_os_str(),
        OsStr::new("--kubeconfig"),
        kubeconfig.as_os_str(),
    ])
}

/// `driftguard diff --guard GUARD --kubeconfig KUBECONFIG`, off the async runtime.
async fn diff_guard(guard: &str, kubeconfig: &Path) -> (i32, String, String) {
    let args = vec![
        OsString::from("diff"),
        OsString::from("--guard"),
        OsString::from(guard),
        OsString::from("--kubeconfig"),
        kubeconfig.as_os_str().to_owned(),
    ];
    tokio::task::spawn_blocking(move || driftguard(args)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_drifted_fields_and_missing_objects() {
    let Driftguard { cluster, admin, client } = Driftguard::start().await;
    let (repo, _) = support::example_repo();
    let kubeconfig = cluster.kubeconfig().to_owned();

    // The enforcer's first sync.
    let set = support::example_set(&support::example_guard(Mode::Deny));
    let applier = Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap();
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
        move || diff(&repo_path, Path::new("/nonexistent/kubeconfig"))
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}

/// Create `object` through `api`.
async fn create<K>(api: &Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// A Guard `default/NAME` over `examples/app` of GitSource `default/SOURCE`.
fn guard_object(name: &str, source: &str) -> serde_json::Value {
    json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"sourceRef": {"name": source}, "path": "examples/app"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_guard_reads_the_guard_and_reports_drift_and_prunes() {
    let Driftguard {
        cluster,
        admin,
        client: driftguard_client,
    } = Driftguard::start().await;
    let kubeconfig = cluster.kubeconfig().to_owned();

    // A GitSource on a real repository (branch main) and a Guard over examples/app.
    let (repo, _) = support::example_repo();
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
    create(
        &sources,
        json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "apps", "namespace": "default"},
            "spec": {"url": repo.path().to_str().unwrap(), "ref": {"branch": "main"}}
        }),
    )
    .await;
    let guards: Api<Guard> = Api::namespaced(admin.clone(), "default");
    create(&guards, guard_object("example-app", "apps")).await;

    // Before the first sync, everything is missing and nothing is in the inventory.
    let (code, stdout, stderr) = diff_guard("default/example-app", &kubeconfig).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("Deployment.apps default/web: missing from the cluster"),
        "{stdout}"
    );
    assert!(!stdout.contains("would prune"), "{stdout}");

    // After a sync the cluster matches the Guard's Git revision.
    let ctx = support::guards::context(&driftguard_client).await;
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.inventory.len(), 5);
    let (code, stdout, stderr) = diff_guard("default/example-app", &kubeconfig).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Guard default/example-app: Git main@"), "{stdout}");
    assert!(
        stdout.contains("no differences: the cluster matches Git for all 5 objects"),
        "{stdout}"
    );

    // Drift by hand, and a commit that removes config.yaml (a ConfigMap and a Secret); the
    // Secret carries driftguard.io/prune: disabled, so a sync would keep it.
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
            &Patch::Merge(json!({"metadata": {"annotations": {"driftguard.io/prune": "disabled"}}})),
        )
        .await
        .unwrap();
    support::git(repo.path(), &["rm", "-q", "examples/app/config.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "drop config"]);

    let (code, stdout, stderr) = diff_guard("default/example-app", &kubeconfig).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "Deployment.apps default/web: 1 declared field differs from Git (examples/app/deployment.yaml:2)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  spec.replicas: cluster 5, Git 3"), "{stdout}");
    assert!(
        stdout.contains("would prune v1/ConfigMap default/web-config (no longer declared in Git)"),
        "{stdout}"
    );
    assert!(!stdout.contains("would prune v1/Secret"), "{stdout}");
    assert!(
        stdout.contains("Secret default/web-credentials: left alone: driftguard.io/prune: disabled"),
        "{stdout}"
    );
    assert!(!stdout.contains("no differences"), "{stdout}");

    // diff only reads: the drift and the removed object are still there.
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(5));
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    assert!(config_maps.get_opt("web-config").await.unwrap().is_some());

    // --repo with a Guard that exists: the local render, and the Guard's inventory for prunes.
    let (repo_path, kubeconfig_path) = (repo.path().to_owned(), kubeconfig.clone());
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || diff(&repo_path, &kubeconfig_path))
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("  spec.replicas: cluster 5, Git 3"), "{stdout}");
    assert!(
        stdout.contains("would prune v1/ConfigMap default/web-config"),
        "{stdout}"
    );
    assert!(!stderr.contains("not in the cluster"), "{stderr}");

    // A sync does exactly what diff said: it prunes the ConfigMap, keeps the Secret and
    // restores replicas; then diff is clean again.
    support::guards::reconcile(&guards, &ctx).await;
    assert!(config_maps.get_opt("web-config").await.unwrap().is_none());
    assert!(secrets.get_opt("web-credentials").await.unwrap().is_some());
    let (code, stdout, stderr) = diff_guard("default/example-app", &kubeconfig).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("no differences: the cluster matches Git for all 3 objects"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_guard_errors_name_what_is_missing() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let admin = cluster.client().await;
    let kubeconfig = cluster.kubeconfig().to_owned();
    let dir = tempfile::tempdir().unwrap();

    // No CRDs installed yet: the Guard cannot exist.
    let (code, stdout, stderr) = diff_guard("default/example-app", &kubeconfig).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("Guard default/example-app not found"), "{stderr}");

    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in driftguard::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    support::guards::until_crds_served(&admin).await;
    let guards: Api<Guard> = Api::namespaced(admin.clone(), "default");
    let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");

    // A Guard that does not exist.
    let (code, stdout, stderr) = diff_guard("default/nope", &kubeconfig).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("Guard default/nope not found"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A Guard whose GitSource does not exist.
    create(&guards, guard_object("orphan", "missing")).await;
    let (code, stdout, stderr) = diff_guard("default/orphan", &kubeconfig).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("Guard default/orphan: its spec.sourceRef names GitSource default/missing"),
        "{stderr}"
    );

    // A GitSource whose repository cannot be read.
    let gone = dir.path().join("no-such-repository");
    create(
        &sources,
        json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "gone", "namespace": "default"},
            "spec": {"url": gone.to_str().unwrap()}
        }),
    )
    .await;
    create(&guards, guard_object("unreadable", "gone")).await;
    let (code, stdout, stderr) = diff_guard("default/unreadable", &kubeconfig).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot load the desired state of Guard default/unreadable"),
        "{stderr}"
    );
    assert!(stderr.contains("no-such-repository"), "{stderr}");

    // A malformed name, an unreachable API server, and neither --guard nor --repo.
    let (code, _, stderr) = diff_guard("nope", &kubeconfig).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("NAMESPACE/NAME"), "{stderr}");
    // The control plane stops (its state, certificates included, goes with it): a kubeconfig
    // with everything embedded still points at it.
    let flat = dir.path().join("flat.kubeconfig");
    std::fs::write(&flat, cluster.ok(&["config", "view", "--raw", "--flatten"])).unwrap();
    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
    let (code, _, stderr) = diff_guard("default/example-app", &flat).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot reach the Kubernetes API"), "{stderr}");
    let (code, _, stderr) = tokio::task::spawn_blocking(|| driftguard(["diff"])).await.unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("--repo"), "{stderr}");
}
