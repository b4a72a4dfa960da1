//! A Guard over a real Git repository installed on the real control plane
//! ([`super::cluster::Cluster`]), driftguard's identity there (the chart's service account and
//! RBAC), a person at kubectl, and waiting for conditions. [`imitation`] keeps the same on the
//! imitation API server (crate driftguard-testapi) for the tests that inject faults a real
//! server cannot produce.

use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use driftguard::desired::DesiredCache;
use driftguard::reconcile::apply::Applier;
use driftguard::reconcile::controller::Context;
use driftguard_testapi::{Identity, TestApiServer};
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
    until_crds_served(client).await;
    install_example(client, guard_spec).await
}

/// [`install`] where the CRDs are in already.
pub async fn install_example(
    client: &kube::Client,
    guard_spec: serde_json::Value,
) -> (tempfile::TempDir, String, Api<Guard>) {
    let (repo, commit) = super::example_repo();
    create_source(client, "apps", repo.path()).await;
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

/// A GitSource `default/<name>` on the local repository `repo`, branch main.
pub async fn create_source(client: &kube::Client, name: &str, repo: &std::path::Path) {
    let source: GitSource = serde_json::from_value(json!({
        "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"url": repo.to_str().unwrap(), "ref": {"branch": "main"}}
    }))
    .unwrap();
    Api::<GitSource>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &source)
        .await
        .unwrap();
}

/// Waits until the Guard `default/example-app` counts `corrections` drift corrections in its
/// status.
pub async fn until_drift_corrected(guards: &Api<Guard>, corrections: i64) {
    let counted = || async move {
        guards
            .get("example-app")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| s.counts.drift_corrected == corrections)
    };
    eventually(
        &format!("counts.driftCorrected = {corrections}"),
        Duration::from_secs(10),
        counted,
    )
    .await;
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

/// Until the API server serves Guards and GitSources (a CRD is served shortly after it is
/// created, once it is Established).
pub async fn until_crds_served(client: &kube::Client) {
    let served = || async {
        Api::<Guard>::all(client.clone())
            .list(&Default::default())
            .await
            .is_ok()
            && Api::<GitSource>::all(client.clone())
                .list(&Default::default())
                .await
                .is_ok()
    };
    eventually("Guards and GitSources served", Duration::from_secs(30), served).await;
}

/// A person at kubectl: not exempt, allowed anything by RBAC (bound to cluster-admin by
/// [`Driftguard::start`]), so that what stops them is driftguard alone.
pub const USER: &str = "alice@example.com";

/// A real control plane prepared for driftguard: its namespace, the chart's ServiceAccount
/// and RBAC (rendered by `helm template`), driftguard's CRDs, and [`USER`] bound to
/// cluster-admin.
pub struct Driftguard {
    pub cluster: super::cluster::Cluster,
    /// system:masters.
    pub admin: kube::Client,
    /// driftguard's service account with the chart's RBAC (a TokenRequest token).
    pub client: kube::Client,
}

impl Driftguard {
    /// Starts a control plane (about seven seconds) and prepares it.
    pub async fn start() -> Driftguard {
        let cluster = tokio::task::spawn_blocking(super::cluster::Cluster::start)
            .await
            .unwrap();
        let admin = cluster.client().await;
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        for crd in driftguard::api::crds() {
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let (cluster, kubeconfig) = tokio::task::spawn_blocking(move || {
            let kubeconfig = super::cluster::driftguard_identity(&cluster);
            cluster.ok(&[
                "create",
                "clusterrolebinding",
                "alice-admin",
                "--clusterrole=cluster-admin",
                &format!("--user={USER}"),
            ]);
            (cluster, kubeconfig)
        })
        .await
        .unwrap();
        let client = super::cluster::client_for(&kubeconfig).await;
        until_crds_served(&client).await;
        Driftguard { cluster, admin, client }
    }

    /// `kubectl ARGS` (the machine's) as [`USER`], with `env` added; its output.
    pub fn kubectl_as_user(&self, args: &[&str], env: &[(&str, &std::path::Path)]) -> std::process::Output {
        kubectl_as_user(&self.cluster, self.cluster.scratch(), args, env)
    }
}

/// A real control plane ([`Driftguard::start`]) with the example Guard [`install`]ed by admin.
pub struct Installed {
    pub cluster: super::cluster::Cluster,
    /// system:masters: creates and edits Guards, GitSources and, as a person would, drift.
    pub admin: kube::Client,
    /// driftguard's service account: the enforcer's client.
    pub client: kube::Client,
    pub repo: tempfile::TempDir,
    pub commit: String,
    /// The Guards of `default`, as admin.
    pub guards: Api<Guard>,
}

/// Start a control plane and [`install`] the example Guard with `guard_spec`.
pub async fn installed(guard_spec: serde_json::Value) -> Installed {
    let Driftguard { cluster, admin, client } = Driftguard::start().await;
    let (repo, commit, guards) = install_example(&admin, guard_spec).await;
    Installed {
        cluster,
        admin,
        client,
        repo,
        commit,
        guards,
    }
}

/// A GitSource reconcile context for `client` (mirrors in the default cache directory).
pub fn source_context(client: &kube::Client) -> driftguard::reconcile::source::SourceContext {
    let fetcher = driftguard::source::Fetcher::new(driftguard::config::default_git_cache_dir());
    driftguard::reconcile::source::SourceContext::new(client.clone(), fetcher)
}

/// A reconcile context (no self-heal) for `client`.
pub async fn context(client: &kube::Client) -> Context {
    Context::new(
        client.clone(),
        Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap(),
        DesiredCache::new(64 * 1024 * 1024),
    )
}

/// Where a person runs kubectl: the real control plane or the imitation.
pub trait UserKubectl {
    /// The machine's kubectl (`/usr/bin/kubectl`) as a plain user (no driftguard exemption),
    /// with its home and any kubeconfig under `dir`.
    fn user_kubectl(&self, dir: &std::path::Path) -> std::process::Command;
}

impl UserKubectl for super::cluster::Cluster {
    /// As [`USER`] (impersonated by admin; bound to cluster-admin by [`Driftguard::start`]).
    fn user_kubectl(&self, _dir: &std::path::Path) -> std::process::Command {
        let mut command = self.machine_kubectl();
        command.args(["--as", USER, "--as-group", "system:authenticated"]);
        command
    }
}

impl UserKubectl for TestApiServer {
    fn user_kubectl(&self, dir: &std::path::Path) -> std::process::Command {
        let kubeconfig = dir.join("user.kubeconfig");
        self.write_kubeconfig(Identity::User, &kubeconfig).unwrap();
        super::kubectl(dir, &kubeconfig)
    }
}

/// `kubectl ARGS` as a plain user (no driftguard exemption); returns its output.
pub fn kubectl_as_user(
    api: &impl UserKubectl,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> std::process::Output {
    let mut command = api.user_kubectl(dir);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// `kubectl edit deploy/web -n default` as a plain user, the editor applying `sed`; returns
/// kubectl's output (the caller checks it).
pub fn kubectl_edit_web(api: &impl UserKubectl, dir: &std::path::Path, sed: &str) -> std::process::Output {
    let editor = dir.join("editor.sh");
    std::fs::write(&editor, format!("#!/bin/sh\nsed -i '{sed}' \"$1\"\n")).unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    kubectl_as_user(
        api,
        dir,
        &["edit", "deploy", "web", "-n", "default"],
        &[("EDITOR", &editor)],
    )
}

/// Reconcile the Guard `default/example-app` once, as stored now; panics on an error.
pub async fn reconcile(guards: &Api<Guard>, ctx: &Context) -> driftguard::api::GuardStatus {
    driftguard::reconcile::controller::reconcile_guard(&guards.get("example-app").await.unwrap(), ctx)
        .await
        .unwrap()
}

/// A check for [`eventually`]: Deployment `web` has `want` replicas.
pub fn web_replicas(
    deployments: &Api<k8s_openapi::api::apps::v1::Deployment>,
    want: i32,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    let deployments = deployments.clone();
    move || {
        let deployments = deployments.clone();
        Box::pin(async move {
            deployments
                .get_opt("web")
                .await
                .ok()
                .flatten()
                .and_then(|d| d.spec?.replicas)
                == Some(want)
        })
    }
}

/// A reconcile context whose metrics and audit records a test reads, with self-heal (leading)
/// when `self_heal`.
pub struct Enforcer {
    pub ctx: Context,
    pub audit: std::sync::Arc<driftguard::audit::MemorySink>,
    pub metrics: std::sync::Arc<driftguard::telemetry::Metrics>,
}

impl Enforcer {
    /// A context over `client` (self-heal settings are the defaults).
    pub async fn new(client: &kube::Client, self_heal: bool) -> Enforcer {
        use driftguard::reconcile::selfheal::{HealDeps, HealSettings, SelfHeal};
        let applier = Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap();
        let audit = std::sync::Arc::new(driftguard::audit::MemorySink::new());
        let metrics = std::sync::Arc::new(driftguard::telemetry::Metrics::new());
        let mut ctx = Context::new(client.clone(), applier.clone(), DesiredCache::new(64 * 1024 * 1024));
        if self_heal {
            let (_, leading) = tokio::sync::watch::channel(true);
            let heal = SelfHeal::new(
                HealDeps {
                    client: client.clone(),
                    applier,
                    events: driftguard::reconcile::events::Events::new(client.clone(), Some("test-replica".into())),
                    audit: audit.clone(),
                    metrics: metrics.clone(),
                    leading,
                },
                HealSettings::default(),
            );
            ctx = ctx.with_self_heal(heal);
        }
        ctx.audit = audit.clone();
        ctx.metrics = metrics.clone();
        Enforcer { ctx, audit, metrics }
    }

    /// The value of the metric sample `series` (`name{labels}`), or None when it is absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics, series)
    }

    /// The audit records of `event`.
    pub fn records(&self, event: driftguard::audit::EventKind) -> Vec<driftguard::audit::AuditEvent> {
        self.audit.events().into_iter().filter(|e| e.event == event).collect()
    }
}

/// The value of the sample `series` (`name{labels}`) in `metrics`, or None when it is absent.
pub fn metric(metrics: &driftguard::telemetry::Metrics, series: &str) -> Option<f64> {
    let text = metrics.encode().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A condition of a Guard's status as (status, reason, message).
pub fn condition(status: &driftguard::api::GuardStatus, kind: &str) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The leader's GitSource and Guard loops (always leading), as `driftguard serve --cluster`
/// runs them: one mirror cache, one audit sink and one metrics registry shared by both.
pub struct LeaderLoops {
    /// Every record both loops wrote.
    pub audit: std::sync::Arc<driftguard::audit::MemorySink>,
    /// Both loops' metrics.
    pub metrics: std::sync::Arc<driftguard::telemetry::Metrics>,
    /// The mirrors.
    pub fetcher: driftguard::source::Fetcher,
    cache: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl LeaderLoops {
    /// Starts both loops over `client`.
    pub async fn start(client: &kube::Client) -> LeaderLoops {
        let cache = tempfile::tempdir().unwrap();
        let fetcher = driftguard::source::Fetcher::new(cache.path());
        let audit = std::sync::Arc::new(driftguard::audit::MemorySink::new());
        let metrics = std::sync::Arc::new(driftguard::telemetry::Metrics::new());
        let source_ctx = driftguard::reconcile::source::SourceContext {
            client: client.clone(),
            fetcher: fetcher.clone(),
            metrics: metrics.clone(),
            audit: audit.clone(),
        };
        let mut ctx = context(client).await;
        ctx.fetcher = fetcher.clone();
        ctx.audit = audit.clone();
        ctx.metrics = metrics.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (_, leading) = tokio::sync::watch::channel(true);
        let loops = vec![
            tokio::spawn(driftguard::reconcile::run::run_sources(
                source_ctx,
                leading.clone(),
                until_stopped(stopped.clone()),
            )),
            tokio::spawn(driftguard::reconcile::run::run_guards(
                ctx,
                leading,
                until_stopped(stopped),
            )),
        ];
        LeaderLoops {
            audit,
            metrics,
            fetcher,
            cache,
            stop,
            loops,
        }
    }

    /// Where the mirrors are (a later process reads the same cache).
    pub fn cache_dir(&self) -> &std::path::Path {
        self.cache.path()
    }

    /// Ends both loops; fails the test if one panicked.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.loops {
            task.await.unwrap();
        }
    }
}

/// One replica as `driftguard serve --cluster` runs it without a webhook: a Lease elector
/// (`driftguard/driftguard-leader`) as `identity`, and the Guard loop writing only while it
/// leads.
pub struct ElectedReplica {
    /// Whether it leads now.
    pub leading: tokio::sync::watch::Receiver<bool>,
    /// The elector's metrics.
    pub metrics: std::sync::Arc<driftguard::telemetry::Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ElectedReplica {
    /// Starts the elector (Lease of `lease`) and the Guard loop over `client`.
    pub async fn start(client: &kube::Client, identity: &str, lease: Duration) -> ElectedReplica {
        use driftguard::reconcile::leader::{ElectionConfig, LeaderElector};
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let metrics = std::sync::Arc::new(driftguard::telemetry::Metrics::new());
        let elector = LeaderElector::new(
            client.clone(),
            ElectionConfig::new("driftguard", "driftguard-leader", identity, lease),
        )
        .with_metrics(metrics.clone());
        let tasks = vec![
            tokio::spawn(elector.run(leading_tx, until_stopped(stopped.clone()))),
            tokio::spawn(driftguard::reconcile::run::run_guards(
                context(client).await,
                leading.clone(),
                until_stopped(stopped),
            )),
        ];
        ElectedReplica {
            leading,
            metrics,
            stop,
            tasks,
        }
    }

    /// Stops both (the elector releases the Lease); fails the test if one panicked.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// The imitation API server (crate driftguard-testapi), only for the tests of faults a real
/// API server cannot be made to produce on cue (tests/faults.rs, tests/leader_faults.rs,
/// tests/enforce.rs): injected failures, a short watch history, the requests it received.
pub mod imitation {
    use driftguard::api::Guard;
    use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
    use kube::api::Api;

    /// A test API server with [`install`](super::install)ed CRDs, GitSource and Guard, and a client acting as
    /// driftguard. Keep it alive: the temp dirs go with it.
    pub struct Installed {
        pub api: TestApiServer,
        pub dir: tempfile::TempDir,
        pub client: kube::Client,
        pub repo: tempfile::TempDir,
        pub commit: String,
        pub guards: Api<Guard>,
    }

    /// Start a test API server and [`install`](super::install) the example Guard with `guard_spec`.
    pub async fn installed(guard_spec: serde_json::Value) -> Installed {
        installed_on(ServerOptions::default(), guard_spec).await
    }

    /// [`installed`] on a test API server started with `options`.
    pub async fn installed_on(options: ServerOptions, guard_spec: serde_json::Value) -> Installed {
        let api = TestApiServer::start(options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client = super::super::kube_client(&api, Identity::Driftguard, dir.path()).await;
        let (repo, commit, guards) = super::install(&client, guard_spec).await;
        Installed {
            api,
            dir,
            client,
            repo,
            commit,
            guards,
        }
    }

    /// A kube::Client acting as driftguard on `api` with kube's own retry layer off
    /// (`Config::default_retry`), so that every retry of a write is the Applier's, counted in its
    /// metrics (kube's layer would absorb 429/503/504 unseen).
    pub async fn enforcer_client(api: &TestApiServer, dir: &std::path::Path) -> kube::Client {
        let path = dir.join("enforcer.kubeconfig");
        api.write_kubeconfig(Identity::Driftguard, &path).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    }

    /// How many PATCH requests `api` received for the object at `path` (as sent, no query).
    pub fn patches_of(api: &TestApiServer, path: &str) -> usize {
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == path)
            .count()
    }
}
