//! The end-to-end tier (DESIGN.md section 11, tier 2): the real kube-apiserver, etcd and
//! kube-controller-manager built from their Go modules (`scripts/cluster`), the real kubectl
//! (the one built from k8s.io/kubernetes and the machine's own) and the real helm, with
//! driftguard installed from its chart and called by the API server through the chart's own
//! webhook configurations. See tests/support/cluster.rs for how the Service reaches driftguard.
//!
//! Each test starts a control plane of its own (about ten seconds), so tests never see each
//! other's objects and can run side by side. Run this tier alone with
//! `scripts/test --test e2e`.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod controllers;
mod delegation;
mod enforcer;
mod install;
mod kubectl;
mod links;
mod tenants;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, Installed, metric, wait_for};

/// A person at kubectl: not exempt, allowed to do anything by RBAC (bound to cluster-admin), so
/// what stops them is driftguard alone.
pub const USER: &str = "alice@example.com";

/// Time a Guard or a replica gets to reach a state.
pub const WAIT: Duration = Duration::from_secs(60);

/// An application repository: `apps/web` holds a Deployment `web` (3 replicas, nginx:1.27.3),
/// a ConfigMap `web-config` and a Service `web`, committed on `main`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Default for Repo {
    fn default() -> Repo {
        Repo::new()
    }
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("apps/web");
        std::fs::create_dir_all(&app).unwrap();
        let examples = support::root().join("examples/app");
        for file in ["deployment.yaml", "service.yaml"] {
            std::fs::copy(examples.join(file), app.join(file)).unwrap();
        }
        std::fs::write(
            app.join("config.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  greeting: hello from git\n",
        )
        .unwrap();
        support::git(dir.path(), &["init", "-q", "-b", "main"]);
        support::git(dir.path(), &["add", "-A"]);
        support::git(dir.path(), &["commit", "-q", "-m", "web app"]);
        Repo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` at `file` (repo-relative) and commits it; the new commit id.
    pub fn commit(&self, file: &str, content: Option<&str>, message: &str) -> String {
        let path = self.dir.path().join(file);
        match content {
            Some(content) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, content).unwrap();
            }
            None => std::fs::remove_file(&path).unwrap(),
        }
        support::git(self.dir.path(), &["add", "-A"]);
        support::git(self.dir.path(), &["commit", "-q", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        support::git(self.dir.path(), &["rev-parse", "HEAD"])
    }
}

/// A control plane with driftguard installed by helm and `replicas` processes serving it,
/// `alice@example.com` bound to cluster-admin, and a GitSource `default/apps` on `repo` (polled
/// every 2 s, so a commit reaches the Guards at once) that Guards of every namespace may read.
pub struct Env {
    pub cluster: Cluster,
    pub installed: Installed,
    pub repo: Repo,
}

impl Env {
    pub fn start(values: &[&str], replicas: usize) -> Env {
        let cluster = Cluster::start();
        let installed = Installed::helm(&cluster, values, replicas);
        Env::adopt(cluster, installed)
    }

    /// The user binding and the GitSource on a cluster where driftguard is installed.
    pub fn adopt(cluster: Cluster, installed: Installed) -> Env {
        cluster.ok(&[
            "create",
            "clusterrolebinding",
            "alice-admin",
            "--clusterrole=cluster-admin",
            &format!("--user={USER}"),
        ]);
        let repo = Repo::new();
        apply(
            &cluster,
            &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
                    "metadata": {"name": "apps", "namespace": "default"},
                    "spec": {"url": repo.path().to_str().unwrap(), "ref": {"branch": "main"}, "interval": "2s",
                             "accessFrom": {"namespaces": ["*"]}}}),
        );
        let env = Env {
            cluster,
            installed,
            repo,
        };
        env.until_webhook_ready();
        env
    }

    /// Until the leader injected the caBundle into all four webhook entries and every replica
    /// is ready.
    pub fn until_webhook_ready(&self) {
        wait_for("the caBundle in all four webhook entries", WAIT, || {
            let bundles = self.cluster.ok(&[
                "get",
                "validatingwebhookconfiguration,mutatingwebhookconfiguration",
                "driftguard",
                "-o",
                "jsonpath={range .items[*].webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}",
            ]);
            let filled = bundles.lines().filter(|l| !l.trim().is_empty()).count();
            (filled == 4).then_some(())
        });
        for replica in &self.installed.replicas {
            wait_for(&format!("{} ready", replica.name), WAIT, || {
                ready(replica.https).then_some(())
            });
        }
    }

    /// Creates namespace `namespace` and a Guard `<namespace>/web` over `apps/web` in `mode`
    /// with `extra` merged into its spec; waits until it applied `HEAD` and every replica
    /// loaded it.
    pub fn guard(&self, namespace: &str, mode: &str, extra: Value) -> String {
        self.cluster.ok(&["create", "namespace", namespace]);
        let mut spec = json!({"sourceRef": {"name": "apps", "namespace": "default"}, "path": "apps/web",
                              "targetNamespace": namespace, "mode": mode, "interval": "1h"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        apply(
            &self.cluster,
            &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
                    "metadata": {"name": "web", "namespace": namespace}, "spec": spec}),
        );
        let head = self.repo.head();
        self.until_applied(namespace, &head);
        head
    }

    /// Until Guard `<namespace>/web` applied `revision` and every replica holds its objects.
    pub fn until_applied(&self, namespace: &str, revision: &str) {
        self.until_applied_guard(namespace, "web", revision);
    }

    /// Until Guard `<namespace>/<name>` applied `revision` and every replica holds its objects.
    pub fn until_applied_guard(&self, namespace: &str, name: &str, revision: &str) {
        wait_for(&format!("Guard {namespace}/{name} to apply {revision}"), WAIT, || {
            let applied = self.cluster.ok(&[
                "get",
                "guard",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.lastAppliedRevision}",
            ]);
            applied.contains(revision).then_some(())
        });
        let series = format!("driftguard_desired_objects{{guard=\"{namespace}/{name}\"}}");
        for replica in &self.installed.replicas {
            wait_for(&format!("{} to load {namespace}/{name}", replica.name), WAIT, || {
                metric(replica.metrics, &series).filter(|n| *n > 0.0).map(|_| ())
            });
        }
    }

    /// kubectl (the built one, or `/usr/bin/kubectl` when `machine`) as [`USER`].
    pub fn kubectl_as_user(&self, machine: bool, args: &[&str]) -> std::process::Output {
        let mut command = if machine {
            self.cluster.machine_kubectl()
        } else {
            self.cluster.kubectl()
        };
        command
            .args(["--as", USER, "--as-group", "system:authenticated"])
            .args(args)
            .output()
            .unwrap()
    }

    /// kubectl (the built one) as [`USER`] while the webhook Service has no endpoints: with
    /// failurePolicy Ignore the change lands, as drift the enforcer must repair. Endpoints are
    /// restored afterwards.
    pub fn past_the_webhook(&self, args: &[&str]) {
        self.installed.proxy.set_backends(Vec::new());
        let out = self.kubectl_as_user(false, args);
        self.installed.route();
        assert_ok(&out);
    }

    /// A field of an object as admin sees it (`jsonpath`).
    pub fn get(&self, namespace: &str, what: &str, jsonpath: &str) -> String {
        self.cluster
            .ok(&["get", what, "-n", namespace, "-o", &format!("jsonpath={jsonpath}")])
    }
}

/// `kubectl apply --server-side` of one object as admin.
pub fn apply(cluster: &Cluster, object: &Value) {
    let file = cluster.scratch().join(format!(
        "apply-{}.json",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, serde_json::to_string(object).unwrap()).unwrap();
    cluster.ok(&[
        "apply",
        "--server-side",
        "--field-manager=e2e",
        "-f",
        file.to_str().unwrap(),
    ]);
}

/// Writes `/scale` of Deployment `<namespace>/web` as the HPA's identity, as the HPA
/// controller does: its RBAC allows get and update of the scale subresource only, so it reads
/// the Scale and writes it back with new replicas (`kubectl scale` would need to read the
/// Deployment first, which that identity may not).
pub fn scale_as_hpa(env: &Env, namespace: &str, replicas: i64) -> std::process::Output {
    let hpa = ["--as", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"];
    let scale = support::cluster::ok(env.cluster.kubectl().args(hpa).args([
        "get",
        "deploy",
        "web",
        "-n",
        namespace,
        "--subresource=scale",
        "-o",
        "json",
    ]));
    let mut scale: Value = serde_json::from_str(&scale).unwrap();
    scale["spec"]["replicas"] = json!(replicas);
    // An unconditional update: self-heal may have written the Deployment since the read, and
    // the HPA controller would then just retry; this write is the one under test.
    if let Some(metadata) = scale["metadata"].as_object_mut() {
        metadata.remove("resourceVersion");
    }
    let file = env.cluster.scratch().join(format!("scale-{namespace}-{replicas}.json"));
    std::fs::write(&file, scale.to_string()).unwrap();
    let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/web/scale");
    env.cluster
        .kubectl()
        .args(hpa)
        .args(["replace", "--raw", &path, "-f"])
        .arg(&file)
        .output()
        .unwrap()
}

/// `/readyz` of a replica answers 200 (TLS not verified: only readiness is asked).
pub fn ready(https: std::net::SocketAddr) -> bool {
    std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"])
        .arg(format!("https://{https}/readyz"))
        .output()
        .map(|o| o.stdout == b"200")
        .unwrap_or(false)
}

/// kubectl was refused by `webhook` with every one of `needles` in what it printed.
pub fn assert_denied(out: &std::process::Output, webhook: &str, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a denial, got: {stderr}");
    assert!(
        stderr.contains(&format!("admission webhook \"{webhook}\" denied the request")),
        "{stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from:\n{stderr}");
    }
}

/// kubectl succeeded; its stderr (warnings).
pub fn assert_ok(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl failed: {stderr}");
    stderr
}
