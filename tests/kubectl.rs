//! The kubectl experience end to end: the real `/usr/bin/kubectl` against the test API server
//! (tests/support/apiserver), with driftguard's webhooks registered from manifests/webhooks.yaml
//! and driftguard serving admission over HTTPS. What a person at kubectl sees is asserted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use driftguard::api::Mode;
use driftguard::certs::CertificateAuthority;
use driftguard::server::{ServerOptions, bind};
use driftguard::telemetry::Metrics;
use driftguard_testapi::{Identity, ServerOptions as ApiOptions, TestApiServer};
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";

/// A kubectl runner with its own HOME, cache dir and kubeconfig per identity.
struct Kubectl {
    home: tempfile::TempDir,
    kubeconfigs: Vec<(Identity, PathBuf)>,
}

impl Kubectl {
    fn new(api: &TestApiServer) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "kubectl is part of this machine's image and the tests need it"
        );
        let home = tempfile::tempdir().unwrap();
        let kubeconfigs = [Identity::Admin, Identity::Driftguard, Identity::User]
            .into_iter()
            .map(|identity| {
                let path = home.path().join(format!("{identity:?}.kubeconfig"));
                api.write_kubeconfig(identity, &path).unwrap();
                (identity, path)
            })
            .collect();
        Kubectl { home, kubeconfigs }
    }

    fn run_as(&self, identity: Identity, args: &[&str], env: &[(&str, &str)]) -> Output {
        let kubeconfig = &self.kubeconfigs.iter().find(|(i, _)| *i == identity).unwrap().1;
        let mut command = Command::new(KUBECTL);
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .args(["--request-timeout", "20s"])
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", "/usr/bin:/bin");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("kubectl runs")
    }

    fn ok(&self, identity: Identity, args: &[&str]) -> String {
        let out = self.run_as(identity, args, &[]);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

/// driftguard serving the example app in `mode` on 127.0.0.1, with a certificate valid for
/// the webhook Service name; returns its address and CA.
async fn start_driftguard(mode: Mode) -> (std::net::SocketAddr, CertificateAuthority, tempfile::TempDir) {
    start_driftguard_with(support::example_guard(mode)).await
}

async fn start_driftguard_with(
    spec: driftguard::api::GuardSpec,
) -> (std::net::SocketAddr, CertificateAuthority, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("driftguard webhook CA").unwrap();
    let hosts = ["driftguard.driftguard.svc", "localhost", "127.0.0.1"].map(String::from);
    let issued = ca.issue_serving(&hosts, Duration::from_secs(3600)).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &issued.key_pem).unwrap();
    let stack = support::stack(&spec);
    let mut options = ServerOptions::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    options.listen = "127.0.0.1:0".parse().unwrap();
    options.metrics_listen = None;
    let server = bind(options, Arc::new(stack.admission), Arc::new(Metrics::new()))
        .await
        .unwrap();
    let addr = server.https_addr();
    tokio::spawn(server.run(std::future::pending()));
    (addr, ca, dir)
}

/// Register manifests/webhooks.yaml with the CA injected, and route the Service to driftguard.
fn register_webhooks(
    api: &TestApiServer,
    kubectl: &Kubectl,
    driftguard: std::net::SocketAddr,
    ca: &CertificateAuthority,
) {
    let text = std::fs::read_to_string(support::root().join("manifests/webhooks.yaml")).unwrap();
    let ca_bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert_pem());
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start() == "clientConfig:" {
            let indent = line.len() - line.trim_start().len() + 2;
            out.push_str(&format!("{}caBundle: {ca_bundle}\n", " ".repeat(indent)));
        }
    }
    let path = kubectl.path("webhooks.yaml");
    std::fs::write(&path, out).unwrap();
    kubectl.ok(Identity::Admin, &["apply", "-f", path.to_str().unwrap()]);
    api.dispatcher()
        .map_service("driftguard", "driftguard", &format!("https://{driftguard}"));
}

/// Create the example app as driftguard's enforcer would (its own service account is exempt).
fn seed_example_app(kubectl: &Kubectl) {
    let set = support::example_set(&support::example_guard(Mode::Deny));
    let mut docs = String::new();
    for object in &set.objects {
        docs.push_str(&serde_json::to_string(&object.object).unwrap());
        docs.push('\n');
    }
    let path = kubectl.path("app.json");
    std::fs::write(&path, docs).unwrap();
    kubectl.ok(Identity::Driftguard, &["create", "-f", path.to_str().unwrap()]);
}

fn replicas(kubectl: &Kubectl) -> String {
    kubectl.ok(
        Identity::Admin,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    )
}

fn assert_denied(out: &Output, webhook: &str, needles: &[&str]) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_mode_blocks_kubectl_drift_and_lets_the_rest_through() {
    let api = TestApiServer::start(ApiOptions::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let (addr, ca, _certs) = start_driftguard(Mode::Deny).await;
    register_webhooks(&api, &kubectl, addr, &ca);
    let kubectl = tokio::task::spawn_blocking(move || {
        seed_example_app(&kubectl);
        let user = Identity::User;
        let git = "examples/app/deployment.yaml:10";

        let out = kubectl.run_as(user, &["scale", "deploy", "web", "--replicas=5"], &[]);
        assert_denied(
            &out,
            "validate-scale.driftguard.io",
            &["spec.replicas", "Git has 3, request has 5", git],
        );
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error from server (Forbidden)"));

        let editor = kubectl.path("editor.sh");
        std::fs::write(&editor, "#!/bin/sh\nsed -i 's/nginx:1.27.3/nginx:latest/' \"$1\"\n").unwrap();
        std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = kubectl.run_as(
            user,
            &["edit", "deploy", "web"],
            &[("EDITOR", editor.to_str().unwrap())],
        );
        assert_denied(
            &out,
            "validate.driftguard.io",
            &["nginx:latest", "could not be patched"],
        );

        for (kind, patch) in [
            ("merge", r#"{"spec":{"replicas":2}}"#),
            (
                "strategic",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
            ),
            ("json", r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#),
        ] {
            let out = kubectl.run_as(user, &["patch", "deploy", "web", "--type", kind, "-p", patch], &[]);
            assert_denied(&out, "validate.driftguard.io", &["is managed by Git"]);
        }
        let out = kubectl.run_as(user, &["set", "image", "deploy/web", "web=nginx:1.28"], &[]);
        assert_denied(&out, "validate.driftguard.io", &["nginx:1.28"]);
        let out = kubectl.run_as(user, &["label", "deploy", "web", "tier=backend", "--overwrite"], &[]);
        assert_denied(&out, "validate.driftguard.io", &["tier"]);
        let out = kubectl.run_as(user, &["delete", "deploy", "web", "--wait=false"], &[]);
        assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);
        assert_eq!(replicas(&kubectl), "3");

        // What is not drift goes through.
        kubectl.ok(user, &["rollout", "restart", "deploy", "web"]);
        kubectl.ok(user, &["label", "deploy", "web", "owner=team-web"]);
        kubectl.ok(
            user,
            &[
                "patch",
                "deploy",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"minReadySeconds":5}}"#,
            ],
        );
        let deployment: Value =
            serde_json::from_str(&kubectl.ok(Identity::Admin, &["get", "deploy", "web", "-o", "json"])).unwrap();
        assert_eq!(deployment["metadata"]["labels"]["owner"], "team-web");
        assert_eq!(deployment["spec"]["minReadySeconds"], 5);
        assert!(
            deployment["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
        );
        kubectl
    })
    .await
    .unwrap();
    drop(kubectl);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_mode_scale_succeeds_with_a_warning_and_git_replicas_stay() {
    let api = TestApiServer::start(ApiOptions::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let (addr, ca, _certs) = start_driftguard(Mode::Revert).await;
    register_webhooks(&api, &kubectl, addr, &ca);
    let kubectl = tokio::task::spawn_blocking(move || {
        seed_example_app(&kubectl);
        let out = kubectl.run_as(Identity::User, &["scale", "deploy", "web", "--replicas=5"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("Warning: driftguard reverted spec.replicas to Git's 3 (requested 5)"),
            "{stderr}"
        );
        assert_eq!(replicas(&kubectl), "3");
        kubectl
    })
    .await
    .unwrap();
    drop(kubectl);
    api.stop().await;
}

/// Break-glass through real kubectl and the registered webhooks: a non-member's annotation is
/// denied with who may; a member's annotated edit lands with its expiry stamped by the
/// mutating webhook; while detached, further edits pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_by_a_member_lands_and_anyone_else_is_told_who_may() {
    let api = TestApiServer::start(ApiOptions::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let mut spec = support::example_guard(Mode::Deny);
    spec.break_glass =
        Some(serde_json::from_value(serde_json::json!({"groups": ["system:masters"], "maxDuration": "30m"})).unwrap());
    let (addr, ca, _certs) = start_driftguard_with(spec).await;
    register_webhooks(&api, &kubectl, addr, &ca);
    let kubectl = tokio::task::spawn_blocking(move || {
        seed_example_app(&kubectl);
        let annotate = ["annotate", "deploy", "web", "driftguard.io/break-glass=INC-4711 checkout down"];
        let out = kubectl.run_as(Identity::User, &annotate, &[]);
        assert_denied(
            &out,
            "validate.driftguard.io",
            &["only members of system:masters may set driftguard.io/break-glass", "alice@example.com"],
        );

        let patch = r#"{"metadata":{"annotations":{"driftguard.io/break-glass":"INC-4711 checkout down"}},"spec":{"replicas":5}}"#;
        let out = kubectl.run_as(Identity::Admin, &["patch", "deploy", "web", "--type", "merge", "-p", patch], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("break-glass until"), "a warning names the end: {stderr}");
        assert_eq!(replicas(&kubectl), "5");
        let web: serde_json::Value =
            serde_json::from_str(&kubectl.ok(Identity::Admin, &["get", "deploy", "web", "-o", "json"])).unwrap();
        assert!(
            web["metadata"]["annotations"]["driftguard.io/break-glass-expires"].is_string(),
            "{}",
            web["metadata"]["annotations"]
        );

        // Detached: alice's edit of a declared field passes until it runs out.
        let out = kubectl.run_as(
            Identity::User,
            &["patch", "deploy", "web", "--type", "merge", "-p", r#"{"spec":{"replicas":6}}"#],
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(replicas(&kubectl), "6");
        kubectl
    })
    .await
    .unwrap();
    drop(kubectl);
    api.stop().await;
}
