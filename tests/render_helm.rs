//! The Helm renderer against the real helm (v4.3.2, built from its Go module by
//! `scripts/cluster build`). Nothing here is skipped: without it every test fails, saying so.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use driftguard::render::helm::{HelmOptions, render_helm};
use driftguard::render::sandbox::Limits;
use driftguard::render::{Manifest, RenderError};
use serde_json::{Value, json};

const CHART: &str = "examples/helm/web";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shim, once its Python SDK is known to import.
fn helm() -> PathBuf {
    support::helm_launcher()
}

fn options() -> HelmOptions {
    HelmOptions {
        release: "demo".to_owned(),
        namespace: "prod".to_owned(),
        values_files: Vec::new(),
        values: Value::Null,
        kube_version: None,
        api_versions: Vec::new(),
    }
}

fn render(options: &HelmOptions) -> Vec<Manifest> {
    render_helm(&helm(), &root(), CHART, options, &Limits::default()).unwrap_or_else(|err| panic!("{err}"))
}

fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|m| m.object["kind"] == kind && m.object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", names(manifests)))
}

fn names(manifests: &[Manifest]) -> Vec<String> {
    manifests
        .iter()
        .map(|m| format!("{} {} ({})", m.object["kind"], m.object["metadata"]["name"], m.origin))
        .collect()
}

/// A copy of the example chart in a scratch checkout, to break.
fn scratch_chart() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&root().join(CHART), &dir.path().join("charts/web"));
    dir
}

#[test]
fn defaults_render_every_template_with_helpers() {
    let manifests = render(&options());
    assert_eq!(
        names(&manifests),
        vec![
            "\"ConfigMap\" \"demo-cache\" (examples/helm/web/charts/cache/templates/configmap.yaml (document 1))",
            "\"ConfigMap\" \"demo-web\" (examples/helm/web/templates/configmap.yaml (document 1))",
            "\"Deployment\" \"demo-web\" (examples/helm/web/templates/deployment.yaml (document 1))",
            "\"Service\" \"demo-web\" (examples/helm/web/templates/service.yaml (document 1))",
            "\"Pod\" \"demo-web-test\" (examples/helm/web/templates/test-connection.yaml (document 1))",
        ]
    );
    // `include "web.fullname"` and `include "web.labels"` from _helpers.tpl.
    let deployment = find(&manifests, "Deployment", "demo-web");
    assert_eq!(deployment.object["spec"]["replicas"], 1);
    assert_eq!(
        deployment.object["metadata"]["labels"]["app.kubernetes.io/instance"],
        "demo"
    );
    assert_eq!(
        deployment.object["metadata"]["labels"]["app.kubernetes.io/version"],
        "1.27.0"
    );
    assert_eq!(
        deployment.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.0"
    );
    assert_eq!(deployment.origin.line, 0);
}

#[test]
fn values_files_then_inline_values_win() {
    let manifests = render(&HelmOptions {
        values_files: vec!["values-prod.yaml".to_owned()],
        values: json!({"image": {"tag": "1.27.1"}, "config": {"logLevel": "debug"}, "cache": {"size": "1Gi"}}),
        ..options()
    });
    let deployment = find(&manifests, "Deployment", "demo-web");
    assert_eq!(deployment.object["spec"]["replicas"], 3, "from values-prod.yaml");
    assert_eq!(
        deployment.object["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27.1",
        "inline"
    );
    let config = find(&manifests, "ConfigMap", "demo-web");
    assert_eq!(
        config.object["data"]["logLevel"], "debug",
        "inline over values-prod.yaml"
    );
    assert_eq!(config.object["data"]["greeting"], "hello", "chart default");
    // Inline values reach the vendored dependency too.
    assert_eq!(
        find(&manifests, "ConfigMap", "demo-cache").object["data"]["size"],
        "1Gi"
    );

    let file_only = render(&HelmOptions {
        values_files: vec!["values-prod.yaml".to_owned()],
        ..options()
    });
    assert_eq!(
        find(&file_only, "ConfigMap", "demo-web").object["data"]["logLevel"],
        "warn"
    );
}

#[test]
fn inline_values_need_no_escaping() {
    // What `--set` would mangle: commas, dots, equals signs, brackets.
    let greeting = "hi, a.b=c [x] {y} \\ 'q' \"d\"";
    let manifests = render(&HelmOptions {
        values: json!({"config": {"greeting": greeting}}),
        ..options()
    });
    assert_eq!(
        find(&manifests, "ConfigMap", "demo-web").object["data"]["greeting"],
        greeting
    );
}

#[test]
fn vendored_dependency_is_rendered_with_parent_values() {
    let manifests = render(&options());
    let cache = find(&manifests, "ConfigMap", "demo-cache");
    assert_eq!(
        cache.object["data"]["size"], "64Mi",
        "the parent's cache.size over the subchart's 16Mi"
    );
    assert_eq!(
        cache.origin.file,
        "examples/helm/web/charts/cache/templates/configmap.yaml"
    );
}

#[test]
fn hooks_are_not_desired_state() {
    // Helm prints the test hook...
    let out = Command::new(helm())
        .args(["template", "demo", CHART])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# Source: web/templates/test-connection.yaml\n"),
        "{text}"
    );
    assert!(text.contains("helm.sh/hook: test"), "{text}");
    // ...the renderer keeps it, and desired state leaves it out with a notice, as it does
    // every renderer's hooks.
    let manifests = render(&options());
    let policy = driftguard::desired::GuardPolicy::new(
        driftguard::desired::GuardId {
            namespace: "default".into(),
            name: "demo".into(),
        },
        &serde_json::from_value(json!({"sourceRef": {"name": "s"}, "path": CHART})).unwrap(),
        "file:///repo",
    )
    .unwrap();
    let revision = driftguard::source::Revision {
        commit: "a".repeat(40),
        reference: "main".into(),
    };
    let set = driftguard::desired::DesiredSet::build(std::sync::Arc::new(policy), revision, manifests).unwrap();
    assert!(set.objects.iter().all(|o| o.kind != "Pod"), "{:#?}", set.objects);
    assert_eq!(set.skipped.len(), 1);
    assert!(
        set.skipped[0].to_string().starts_with(
            "examples/helm/web/templates/test-connection.yaml (document 1): Pod demo-web-test skipped: helm.sh/hook"
        ),
        "{}",
        set.skipped[0]
    );
}

#[test]
fn kube_version_and_api_versions_reach_capabilities() {
    let manifests = render(&HelmOptions {
        kube_version: Some("v1.29.4".to_owned()),
        api_versions: vec!["monitoring.coreos.com/v1".to_owned()],
        ..options()
    });
    for manifest in manifests.iter().filter(|m| m.object["metadata"]["name"] == "demo-web") {
        assert_eq!(
            manifest.object["metadata"]["labels"]["example.driftguard.dev/kube-version"], "v1.29.4",
            "{}",
            manifest.origin
        );
    }
    let monitor = find(&manifests, "ServiceMonitor", "demo-web");
    assert_eq!(monitor.origin.file, "examples/helm/web/templates/servicemonitor.yaml");
    // Without the API version the template renders nothing.
    assert!(render(&options()).iter().all(|m| m.object["kind"] != "ServiceMonitor"));
}

#[test]
fn rerendering_is_byte_identical() {
    let options = HelmOptions {
        values_files: vec!["values-prod.yaml".to_owned()],
        values: json!({"replicaCount": 5, "config": {"b": 1, "a": 2}}),
        kube_version: Some("v1.31.0".to_owned()),
        ..options()
    };
    let first = render(&options);
    let second = render(&options);
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    let bytes = |manifests: &[Manifest]| {
        manifests
            .iter()
            .map(|m| serde_json::to_vec(&m.object).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(bytes(&first), bytes(&second));
}

/// Documents are counted within the template that renders them, not across Helm's output.
#[test]
fn origins_count_documents_within_their_template() {
    let checkout = scratch_chart();
    std::fs::write(
        checkout.path().join("charts/web/templates/pair.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pair-a\n---\n# the second\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pair-b\n",
    )
    .unwrap();
    let manifests = render_helm(&helm(), checkout.path(), "charts/web", &options(), &Limits::default())
        .unwrap_or_else(|err| panic!("{err}"));
    let origin = |name: &str| find(&manifests, "ConfigMap", name).origin.to_string();
    assert_eq!(origin("pair-a"), "charts/web/templates/pair.yaml (document 1)");
    assert_eq!(origin("pair-b"), "charts/web/templates/pair.yaml (document 2)");
    assert_eq!(
        find(&manifests, "Deployment", "demo-web").origin.to_string(),
        "charts/web/templates/deployment.yaml (document 1)"
    );
}

#[test]
fn template_errors_carry_helms_message() {
    let checkout = scratch_chart();
    std::fs::write(
        checkout.path().join("charts/web/templates/broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  x: {{ required \"config.mustBeSet is required\" .Values.config.mustBeSet }}\n",
    )
    .unwrap();
    let err = render_helm(&helm(), checkout.path(), "charts/web", &options(), &Limits::default()).unwrap_err();
    let RenderError::Helm { chart, message } = &err else {
        panic!("expected a Helm error, got {err:?}");
    };
    assert_eq!(chart, "charts/web");
    assert!(message.contains("config.mustBeSet is required"), "{message}");
    assert!(message.contains("web/templates/broken.yaml"), "{message}");
    assert!(
        err.to_string().starts_with("charts/web: helm template failed: "),
        "{err}"
    );

    // A syntax error too.
    std::fs::write(
        checkout.path().join("charts/web/templates/broken.yaml"),
        "{{ if .Values.x }}\nunclosed: true\n",
    )
    .unwrap();
    let err = render_helm(&helm(), checkout.path(), "charts/web", &options(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("broken.yaml"), "{err}");
}

#[test]
fn undeclared_download_is_refused_without_running_helm() {
    let checkout = scratch_chart();
    let chart_yaml = checkout.path().join("charts/web/Chart.yaml");
    let mut text = std::fs::read_to_string(&chart_yaml).unwrap();
    text.push_str("  - name: redis\n    version: 19.0.0\n    repository: https://charts.example.invalid\n");
    std::fs::write(&chart_yaml, text).unwrap();
    // A program that does not exist: the refusal must come before any run.
    let never_run = checkout.path().join("no-such-helm");
    let err = render_helm(
        &never_run,
        checkout.path(),
        "charts/web",
        &options(),
        &Limits::default(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, RenderError::Helm { .. }), "{err:?}");
    assert!(message.contains("redis"), "{message}");
    assert!(message.contains("not vendored under charts/"), "{message}");
    assert!(!message.contains("cache"), "the vendored dependency is fine: {message}");
}

#[test]
fn values_files_must_stay_in_the_checkout() {
    let err = render_helm(
        &helm(),
        &root(),
        CHART,
        &HelmOptions {
            values_files: vec!["../../../../etc/passwd".to_owned()],
            ..options()
        },
        &Limits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside the checkout"), "{err}");
}
