//! The GitSource and Guard CRDs: `driftguard crds` is the source of truth and
//! manifests/crds/driftguard-crds.yaml must equal its output byte for byte (regenerate with
//! `cargo run -q -- crds > manifests/crds/driftguard-crds.yaml`). The schemas must be
//! structural, and the CRDs must register with the real kube-apiserver (its structural-schema
//! and CEL validation) and work with real kubectl (the built one and the machine's).

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::cluster::{Cluster, ok};

const MANIFEST: &str = "manifests/crds/driftguard-crds.yaml";

fn crds_output() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driftguard crds failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn manifest_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(support::root().join(MANIFEST)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap()
}

fn crd<'a>(docs: &'a [Value], plural: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["spec"]["names"]["plural"] == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "one version");
    &versions[0]
}

#[test]
fn manifests_equal_the_crds_command_output() {
    let printed = crds_output();
    let shipped = std::fs::read_to_string(support::root().join(MANIFEST)).unwrap_or_default();
    assert!(
        printed == shipped,
        "{MANIFEST} is stale: regenerate it with `cargo run -q -- crds > {MANIFEST}`"
    );
    assert_eq!(crds_output(), printed, "the output is deterministic");
}

#[test]
fn the_yaml_reads_back_as_the_crds_of_the_rust_types() {
    let expected: Vec<Value> = driftguard::api::crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(manifest_docs(), expected);
}

/// Kubernetes' structural-schema rules (apiextensions `ValidateStructural`) as far as a
/// generated schema can break them: every node has a type, no `$ref`/`definitions`, no
/// logical junctors, `additionalProperties` never next to `properties`, and nothing left to
/// `x-kubernetes-preserve-unknown-fields` (every field driftguard reads is declared) except
/// where the content is free-form by nature: Helm values.
fn assert_structural(schema: &Value, at: &str, problems: &mut Vec<String>) {
    const FREE_FORM: &[&str] = &["guards.driftguard.io.spec.render.helm.values"];
    let Some(node) = schema.as_object() else {
        problems.push(format!("{at}: not an object"));
        return;
    };
    if node.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        problems.push(format!("{at}: no type"));
    }
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "x-kubernetes-preserve-unknown-fields",
    ] {
        if forbidden == "x-kubernetes-preserve-unknown-fields" && FREE_FORM.contains(&at) {
            continue;
        }
        if node.contains_key(forbidden) {
            problems.push(format!("{at}: {forbidden}"));
        }
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        problems.push(format!("{at}: properties and additionalProperties"));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            assert_structural(child, &format!("{at}.{name}"), problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            assert_structural(child, &format!("{at}[{key}]"), problems);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for doc in manifest_docs() {
        let mut problems = Vec::new();
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        assert_structural(&version(&doc)["schema"]["openAPIV3Schema"], &name, &mut problems);
        assert!(problems.is_empty(), "not structural:\n{}", problems.join("\n"));
    }
}

#[test]
fn the_structural_check_catches_what_kubernetes_rejects() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": { "properties": { "b": { "type": "string" } } },
            "c": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
            "d": { "type": "array", "items": { "anyOf": [{ "type": "string" }] } },
        },
        "additionalProperties": false,
    });
    let mut problems = Vec::new();
    assert_structural(&bad, "x", &mut problems);
    assert_eq!(
        problems,
        [
            "x: properties and additionalProperties",
            "x.a: no type",
            "x.c: x-kubernetes-preserve-unknown-fields",
            "x.d[items]: no type",
            "x.d[items]: anyOf",
        ]
    );
}

fn columns(crd: &Value) -> Vec<(String, String)> {
    version(crd)["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_uppercase(),
                c["jsonPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn both_crds_are_namespaced_v1alpha1_with_status_short_names_and_columns() {
    let docs = manifest_docs();
    assert_eq!(docs.len(), 2);
    for (plural, short, kind) in [("gitsources", "gs", "GitSource"), ("guards", "gd", "Guard")] {
        let crd = crd(&docs, plural);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.driftguard.io"));
        assert_eq!(crd["spec"]["group"], "driftguard.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!([short]));
        let version = version(crd);
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    }
    let ready = r#".status.conditions[?(@.type=="Ready")].status"#;
    let age = ".metadata.creationTimestamp";
    assert_eq!(
        columns(crd(&docs, "guards")),
        [
            ("READY", ready),
            ("REVISION", ".status.lastAppliedRevision"),
            ("OBJECTS", ".status.counts.objects"),
            ("AGE", age),
        ]
        .map(|(n, p)| (n.to_owned(), p.to_owned()))
    );
    assert_eq!(
        columns(crd(&docs, "gitsources")),
        [
            ("READY", ready),
            ("REVISION", ".status.lastFetchedRevision"),
            ("AGE", age)
        ]
        .map(|(n, p)| (n.to_owned(), p.to_owned()))
    );
}

#[test]
fn the_schema_validates_modes_renderers_and_durations() {
    let docs = manifest_docs();
    let spec = &version(crd(&docs, "guards"))["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(
        spec["mode"]["enum"],
        serde_json::json!(["deny", "revert", "audit", "off"])
    );
    assert_eq!(spec["mode"]["default"], "deny");
    assert_eq!(
        spec["render"]["properties"]["type"]["enum"],
        serde_json::json!(["auto", "plain", "kustomize", "helm", "jsonnet"])
    );
    assert_eq!(spec["interval"]["default"], "5m");
    assert_eq!(spec["interval"]["pattern"], driftguard::api::DURATION_PATTERN);
    let source = &version(crd(&docs, "gitsources"))["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(source["required"], serde_json::json!(["url"]));
    assert_eq!(source["properties"]["interval"]["default"], "1m");
    assert!(
        source["properties"]["ref"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("size() == 1")
    );
}

fn write(cluster: &Cluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.scratch().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Apply manifests/crds/ (kubectl, as the README says), wait until the API server serves both
/// CRDs, apply a GitSource and a Guard, and give the Guard a status through the status
/// subresource as the enforcer would.
fn install(cluster: &Cluster) {
    let out = cluster.install_crds();
    assert!(out.contains("gitsources.driftguard.io created"), "{out}");
    assert!(out.contains("guards.driftguard.io created"), "{out}");
    let objects = write(
        cluster,
        "objects.yaml",
        "apiVersion: driftguard.io/v1alpha1
kind: GitSource
metadata: {name: platform, namespace: default}
spec:
  url: https://git.example.com/platform.git
  ref: {branch: main}
---
apiVersion: driftguard.io/v1alpha1
kind: Guard
metadata: {name: web, namespace: default}
spec:
  sourceRef: {name: platform}
  path: apps/web
  mode: revert
",
    );
    cluster.ok(&["apply", "-f", objects.to_str().unwrap()]);
    let status = serde_json::json!({"status": {
        "observedGeneration": 1,
        "lastAppliedRevision": "main@sha1:4b825dc642cb",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Applied",
            "message": "3 objects applied", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
        "counts": {"objects": 3, "driftCorrected": 0, "editsDenied": 1},
    }});
    cluster.ok(&[
        "patch",
        "guard",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

/// One control plane for both kubectl clients: the CRDs applied with the built kubectl, then
/// read back, printed and written with it and with the machine's.
#[test]
fn kubectl_applies_the_crds_and_works_with_guards() {
    let cluster = Cluster::start();
    install(&cluster);
    // Short names resolve through discovery.
    let names = cluster.ok(&["get", "gd,gs", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["guard.driftguard.io/web", "gitsource.driftguard.io/platform"]
    );
    let guard: Value = serde_json::from_str(&cluster.ok(&["get", "guard", "web", "-o", "json"])).unwrap();
    assert_eq!(guard["spec"]["mode"], "revert");
    assert_eq!(guard["status"]["counts"]["objects"], 3);
    // The spec deserializes into the Rust type the enforcer reads.
    let typed: driftguard::api::Guard = serde_json::from_value(guard).unwrap();
    assert_eq!(typed.spec.path, "apps/web");
    assert_eq!(typed.spec.mode, driftguard::api::Mode::Revert);

    // Each printer column's JSONPath, evaluated by kubectl's JSONPath (the API server's),
    // yields the value `kubectl get guards` shows.
    let docs = manifest_docs();
    let got: Vec<String> = columns(crd(&docs, "guards"))
        .iter()
        .map(|(_, path)| cluster.ok(&["get", "guard", "web", "-o", &format!("jsonpath={{{path}}}")]))
        .collect();
    assert_eq!(got[..3], ["True", "main@sha1:4b825dc642cb", "3"]);
    assert!(got[3].ends_with('Z'), "creationTimestamp: {}", got[3]);

    // `kubectl get guards` prints the CRD's printer columns (the API server renders the
    // table), with either kubectl.
    for mut kubectl in [cluster.kubectl(), cluster.machine_kubectl()] {
        let table = ok(kubectl.args(["get", "guards"]));
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "REVISION", "OBJECTS", "AGE"], "{table}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["web", "True", "main@sha1:4b825dc642cb", "3"], "{table}");
    }
    let table = cluster.ok(&["get", "gitsources"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REVISION", "AGE"], "{table}");

    // A write to the main resource keeps the status (status subresource).
    cluster.ok(&[
        "patch",
        "guard",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"mode":"deny"},"status":{"lastAppliedRevision":"forged"}}"#,
    ]);
    let revision = cluster.ok(&["get", "guard", "web", "-o", "jsonpath={.status.lastAppliedRevision}"]);
    assert_eq!(revision, "main@sha1:4b825dc642cb");
    assert_eq!(
        cluster.ok(&["get", "guard", "web", "-o", "jsonpath={.spec.mode}"]),
        "deny"
    );

    // The schema is enforced by the API server: an unknown mode, a malformed interval and a ref
    // naming two things are refused with the field named.
    for (patch, needle) in [
        (
            r#"{"spec":{"mode":"sideways"}}"#,
            "spec.mode: Unsupported value: \"sideways\"",
        ),
        (r#"{"spec":{"interval":"soon"}}"#, "spec.interval"),
    ] {
        let out = cluster
            .kubectl()
            .args(["patch", "guard", "web", "--type=merge", "-p", patch])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(needle), "{patch}: {stderr}");
    }
    let out = cluster
        .kubectl()
        .args([
            "patch",
            "gitsource",
            "platform",
            "--type=merge",
            "-p",
            r#"{"spec":{"ref":{"branch":"main","tag":"v1"}}}"#,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ref must set exactly one of branch, tag, semver, commit"),
        "{stderr}"
    );
}

#[test]
fn manifests_crds_holds_only_the_generated_file() {
    // `kubectl apply -f manifests/crds/` installs exactly what the command prints.
    let dir = support::root().join("manifests/crds");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files, [support::root().join(MANIFEST)]);
}
