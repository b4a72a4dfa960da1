//! The Helm chart charts/driftguard, rendered by the real helm (v4.3.2, built from its Go module
//! by `scripts/cluster build`): every certs mode
//! renders well-formed objects; the webhook configurations are DESIGN.md section 5 field by
//! field; RBAC grants exactly the documented rules; the pods are hardened; values.schema.json
//! rejects bad values; manifests/install.yaml, the chart's CRD copy and the README's values
//! reference are up to date. Nothing here is skipped: without helm every test fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const CHART: &str = "charts/driftguard";
const RELEASE: &str = "driftguard";
const NAMESPACE: &str = "driftguard";
const INSTALL_YAML: &str = "manifests/install.yaml";
const REGENERATE_INSTALL: &str = "$(scripts/cluster bin)/helm template driftguard charts/driftguard \
                                  --namespace driftguard --no-hooks > manifests/install.yaml";
/// A base64 caBundle for files mode (its content does not matter to the chart).
const CA_BUNDLE: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg";

fn helm(args: &[&str]) -> Output {
    Command::new(support::helm_launcher())
        .current_dir(support::root())
        .args(args)
        .output()
        .unwrap()
}

/// `helm template RELEASE charts/driftguard --namespace NAMESPACE EXTRA...` as text.
fn template_text(release: &str, namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|err| panic!("the render is not YAML: {err}\n{text}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn template(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    parse_documents(&template_text(release, namespace, extra))
}

/// The release `driftguard` in namespace `driftguard`, with `extra` arguments.
fn render(extra: &[&str]) -> Vec<Value> {
    template(RELEASE, NAMESPACE, extra)
}

/// A values file in a scratch directory (kept alive by the returned guard).
fn values_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["namespace"].as_str().unwrap_or(""),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    try_find(docs, kind, name).unwrap_or_else(|| {
        panic!(
            "no {kind} {name} in the render: {:?}",
            docs.iter().map(describe).collect::<Vec<_>>()
        )
    })
}

fn try_find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn is_hook(doc: &Value) -> bool {
    !doc["metadata"]["annotations"]["helm.sh/hook"].is_null()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod_spec}"))
}

const CLUSTER_SCOPED: &[&str] = &[
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

/// Every document is an object with apiVersion, kind and metadata.name; namespaced objects
/// are in the release namespace; no (kind, namespace, name) twice.
fn assert_well_formed(docs: &[Value], namespace: &str, what: &str) {
    assert!(!docs.is_empty(), "{what}: nothing rendered");
    let mut seen = BTreeSet::new();
    for doc in docs {
        assert!(doc.is_object(), "{what}: a document is not an object: {doc}");
        for field in ["apiVersion", "kind"] {
            assert!(
                doc[field].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: {} has no {field}",
                describe(doc)
            );
        }
        assert!(
            doc["metadata"]["name"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: a {} has no metadata.name",
            doc["kind"]
        );
        let kind = doc["kind"].as_str().unwrap();
        let doc_namespace = doc["metadata"]["namespace"].as_str();
        if CLUSTER_SCOPED.contains(&kind) {
            assert_eq!(doc_namespace, None, "{what}: cluster-scoped {}", describe(doc));
        } else if kind != "GitSource" && kind != "Guard" {
            assert_eq!(
                doc_namespace,
                Some(namespace),
                "{what}: {} is not in the release namespace",
                describe(doc)
            );
        }
        assert!(seen.insert(describe(doc)), "{what}: {} twice", describe(doc));
    }
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_certs_mode_renders_well_formed_unique_objects() {
    let common: BTreeSet<String> = [
        "ServiceAccount driftguard",
        "ConfigMap driftguard",
        "CustomResourceDefinition gitsources.driftguard.io",
        "CustomResourceDefinition guards.driftguard.io",
        "ClusterRole driftguard",
        "ClusterRoleBinding driftguard",
        "Role driftguard",
        "RoleBinding driftguard",
        "Service driftguard",
        "Service driftguard-metrics",
        "Deployment driftguard",
        "PodDisruptionBudget driftguard",
        "ValidatingWebhookConfiguration driftguard",
        "MutatingWebhookConfiguration driftguard",
        "ServiceAccount driftguard-pre-delete",
        "ClusterRole driftguard-pre-delete",
        "ClusterRoleBinding driftguard-pre-delete",
        "Job driftguard-pre-delete",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let own_ca = [
        "Issuer driftguard-selfsigned",
        "Certificate driftguard-ca",
        "Issuer driftguard-ca",
        "Certificate driftguard-serving",
    ];
    let (_dir, issuer) = values_file(
        "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: { name: corp-ca, kind: ClusterIssuer }\n",
    );
    let files = format!("certs.mode=files,certs.files.secretName=my-tls,certs.files.caBundle={CA_BUNDLE}");
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        ("defaults", vec![], vec![]),
        ("self", vec!["--set", "certs.mode=self"], vec![]),
        (
            "cert-manager",
            vec!["--set", "certs.mode=cert-manager"],
            own_ca.to_vec(),
        ),
        (
            "cert-manager with issuerRef",
            vec!["-f", &issuer],
            vec!["Certificate driftguard-serving"],
        ),
        ("files", vec!["--set", &files], vec![]),
    ];
    for (what, args, extra) in cases {
        let docs = render(&args);
        assert_well_formed(&docs, NAMESPACE, what);
        let mut expected = common.clone();
        expected.extend(extra.iter().map(|s| s.to_string()));
        assert_eq!(kinds_and_names(&docs), expected, "{what}: the objects");
        for cert in all(&docs, "Certificate").into_iter().chain(all(&docs, "Issuer")) {
            assert_eq!(cert["apiVersion"], "cert-manager.io/v1", "{what}: {}", describe(cert));
        }
    }
}

#[test]
fn every_optional_object_renders_well_formed() {
    let (_dir, values) = values_file(
        r#"
metrics:
  serviceMonitor: { enabled: true, labels: { release: prometheus } }
networkPolicy:
  enabled: true
  webhookFrom: [{ ipBlock: { cidr: 10.0.0.0/8 } }]
sources:
  - name: platform
    spec: { url: "https://git.example.com/platform.git", ref: { branch: main }, interval: 1m }
guards:
  - name: web
    namespace: team-web
    spec: { sourceRef: { name: platform, namespace: driftguard }, path: clusters/prod/web, mode: deny }
"#,
    );
    let docs = render(&["-f", &values]);
    assert_well_formed(&docs, NAMESPACE, "optional objects");

    let monitor = find(&docs, "ServiceMonitor", "driftguard");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "30s");
    let metrics = find(&docs, "Service", "driftguard-metrics");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &metrics["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert!(
        find(&docs, "Service", "driftguard")["metadata"]["labels"]["app.kubernetes.io/component"] != "metrics",
        "the ServiceMonitor must not select the webhook Service"
    );

    let policy = find(&docs, "NetworkPolicy", "driftguard");
    assert_eq!(
        policy["spec"]["policyTypes"],
        json!(["Ingress"]),
        "egress stays unrestricted"
    );
    assert_eq!(
        policy["spec"]["ingress"],
        json!([
            { "ports": [{ "port": 10250, "protocol": "TCP" }], "from": [{ "ipBlock": { "cidr": "10.0.0.0/8" } }] },
            { "ports": [{ "port": 9090, "protocol": "TCP" }] },
        ])
    );
    let pod_labels = &find(&docs, "Deployment", "driftguard")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the NetworkPolicy selects the pods");
    }

    let source = find(&docs, "GitSource", "platform");
    assert_eq!(source["apiVersion"], "driftguard.io/v1alpha1");
    assert_eq!(
        source["metadata"]["namespace"], NAMESPACE,
        "default: the release namespace"
    );
    let spec: driftguard::api::GitSourceSpec = serde_json::from_value(source["spec"].clone()).unwrap();
    assert_eq!(spec.url, "https://git.example.com/platform.git");
    let guard = find(&docs, "Guard", "web");
    assert_eq!(guard["apiVersion"], "driftguard.io/v1alpha1");
    assert_eq!(guard["metadata"]["namespace"], "team-web");
    let spec: driftguard::api::GuardSpec = serde_json::from_value(guard["spec"].clone()).unwrap();
    assert_eq!(spec.path, "clusters/prod/web");

    // Switched off: none of them.
    let docs = render(&[]);
    for kind in ["ServiceMonitor", "NetworkPolicy", "GitSource", "Guard"] {
        assert!(all(&docs, kind).is_empty(), "{kind} rendered by default");
    }
    let docs = render(&[
        "--set",
        "metrics.service.enabled=false,podDisruptionBudget.enabled=false",
    ]);
    assert!(try_find(&docs, "Service", "driftguard-metrics").is_none());
    assert!(all(&docs, "PodDisruptionBudget").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Webhook configurations (DESIGN.md section 5)

fn webhook_configuration<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let config = find(docs, kind, name);
    assert_eq!(config["apiVersion"], "admissionregistration.k8s.io/v1");
    config
}

#[test]
fn default_webhooks_equal_manifests_webhooks_yaml() {
    let canonical = parse_documents(&std::fs::read_to_string(support::root().join("manifests/webhooks.yaml")).unwrap());
    assert_eq!(canonical.len(), 2);
    let docs = render(&[]);
    for expected in &canonical {
        let kind = expected["kind"].as_str().unwrap();
        let name = expected["metadata"]["name"].as_str().unwrap();
        let rendered = webhook_configuration(&docs, kind, name);
        assert_eq!(
            rendered["webhooks"], expected["webhooks"],
            "{kind} {name}: the chart's webhooks differ from manifests/webhooks.yaml"
        );
        for (key, value) in expected["metadata"]["labels"].as_object().unwrap() {
            assert_eq!(&rendered["metadata"]["labels"][key], value, "{kind}: label {key}");
        }
    }
}

/// What the webhook entries of one render must say.
struct Expect<'a> {
    namespace: &'a str,
    fullname: &'a str,
    service_account: &'a str,
    failure_policy: &'a str,
    timeout: i64,
    excluded: &'a [&'a str],
    extra_conditions: Value,
}

fn assert_webhooks(docs: &[Value], expect: &Expect) {
    let entries = [
        (
            "ValidatingWebhookConfiguration",
            "validate.driftguard.io",
            "/validate",
            false,
        ),
        (
            "ValidatingWebhookConfiguration",
            "validate-scale.driftguard.io",
            "/validate",
            true,
        ),
        ("MutatingWebhookConfiguration", "revert.driftguard.io", "/mutate", false),
        (
            "MutatingWebhookConfiguration",
            "revert-scale.driftguard.io",
            "/mutate",
            true,
        ),
    ];
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let config = webhook_configuration(docs, kind, expect.fullname);
        let names: Vec<&str> = config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = entries.iter().filter(|e| e.0 == kind).map(|e| e.1).collect();
        assert_eq!(names, expected, "{kind}: the entries");
    }
    let mut conditions = vec![json!({
        "name": "not-driftguard-itself",
        "expression": format!(
            "request.userInfo.username != 'system:serviceaccount:{}:{}'",
            expect.namespace, expect.service_account
        ),
    })];
    conditions.extend(expect.extra_conditions.as_array().unwrap().iter().cloned());
    for (kind, name, path, scale) in entries {
        let config = webhook_configuration(docs, kind, expect.fullname);
        let webhook = config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap();
        let what = format!("{kind} {name}");
        assert_eq!(
            webhook["clientConfig"]["service"],
            json!({ "namespace": expect.namespace, "name": expect.fullname, "path": path, "port": 443 }),
            "{what}: clientConfig.service"
        );
        assert!(webhook["clientConfig"]["url"].is_null(), "{what}: no url");
        let (resources, operations) = if scale {
            ("*/scale", json!(["UPDATE"]))
        } else {
            ("*", json!(["CREATE", "UPDATE", "DELETE"]))
        };
        assert_eq!(
            webhook["rules"],
            json!([{ "apiGroups": ["*"], "apiVersions": ["*"], "resources": [resources], "operations": operations, "scope": "*" }]),
            "{what}: rules"
        );
        if scale {
            // Scale objects carry no labels (kubernetes/kubernetes#113594).
            assert!(webhook.get("objectSelector").is_none(), "{what}: no objectSelector");
        } else {
            assert_eq!(
                webhook["objectSelector"],
                json!({ "matchLabels": { "driftguard.io/managed": "true" } }),
                "{what}: objectSelector"
            );
        }
        assert_eq!(
            webhook["namespaceSelector"],
            json!({ "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": expect.excluded,
            }] }),
            "{what}: namespaceSelector"
        );
        for must in ["kube-system", "kube-node-lease", expect.namespace] {
            assert!(
                expect.excluded.contains(&must),
                "the test's own expectation excludes {must}"
            );
        }
        assert_eq!(webhook["matchConditions"], json!(conditions), "{what}: matchConditions");
        assert_eq!(webhook["sideEffects"], "None", "{what}: sideEffects");
        assert_eq!(webhook["timeoutSeconds"], expect.timeout, "{what}: timeoutSeconds");
        assert_eq!(webhook["matchPolicy"], "Equivalent", "{what}: matchPolicy");
        assert_eq!(
            webhook["admissionReviewVersions"],
            json!(["v1"]),
            "{what}: admissionReviewVersions"
        );
        assert_eq!(webhook["failurePolicy"], expect.failure_policy, "{what}: failurePolicy");
        if kind == "MutatingWebhookConfiguration" {
            assert_eq!(webhook["reinvocationPolicy"], "IfNeeded", "{what}: reinvocationPolicy");
        } else {
            assert!(
                webhook.get("reinvocationPolicy").is_none(),
                "{what}: reinvocationPolicy"
            );
        }
    }
    // The Service the entries name exists, on port 443, and reaches the webhook container.
    let service = find(docs, "Service", expect.fullname);
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    let target = service["spec"]["ports"][0]["targetPort"].clone();
    let deployment = find(docs, "Deployment", expect.fullname);
    let pod = &deployment["spec"]["template"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][key], value, "the Service selects the pods");
    }
    let ports = &container(&pod["spec"], "driftguard")["ports"];
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["name"] == target),
        "the Service's targetPort {target} is a container port: {ports}"
    );
}

#[test]
fn webhook_entries_follow_design_section_5() {
    assert_webhooks(
        &render(&[]),
        &Expect {
            namespace: NAMESPACE,
            fullname: "driftguard",
            service_account: "driftguard",
            failure_policy: "Ignore",
            timeout: 3,
            excluded: &["kube-system", "kube-node-lease", "driftguard"],
            extra_conditions: json!([]),
        },
    );
}

#[test]
fn webhook_values_and_the_release_namespace_propagate() {
    assert_webhooks(
        &render(&["--set", "webhook.failurePolicy=Fail"]),
        &Expect {
            namespace: NAMESPACE,
            fullname: "driftguard",
            service_account: "driftguard",
            failure_policy: "Fail",
            timeout: 3,
            excluded: &["kube-system", "kube-node-lease", "driftguard"],
            extra_conditions: json!([]),
        },
    );
    // Another release name and namespace: the names, the exclusion and the service account follow.
    let (_dir, values) = values_file(
        r#"
webhook:
  timeoutSeconds: 10
  excludedNamespaces: [kube-system, kube-node-lease, cert-manager]
  matchConditions:
    - name: not-flux
      expression: "!request.userInfo.username.startsWith('system:serviceaccount:flux-system:')"
"#,
    );
    let docs = template("dg", "platform", &["-f", &values]);
    assert_well_formed(&docs, "platform", "release dg in platform");
    assert_webhooks(
        &docs,
        &Expect {
            namespace: "platform",
            fullname: "dg-driftguard",
            service_account: "dg-driftguard",
            failure_policy: "Ignore",
            timeout: 10,
            excluded: &["kube-system", "kube-node-lease", "cert-manager", "platform"],
            extra_conditions: json!([{
                "name": "not-flux",
                "expression": "!request.userInfo.username.startsWith('system:serviceaccount:flux-system:')",
            }]),
        },
    );
    // The release namespace already listed: not twice.
    let docs = template("driftguard", "kube-system", &[]);
    let config = webhook_configuration(&docs, "ValidatingWebhookConfiguration", "driftguard");
    assert_eq!(
        config["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "kube-node-lease"])
    );
    // An own service account name is the one exempted.
    let docs = render(&["--set", "serviceAccount.name=gitops"]);
    let config = webhook_configuration(&docs, "MutatingWebhookConfiguration", "driftguard");
    assert_eq!(
        config["webhooks"][1]["matchConditions"][0]["expression"],
        "request.userInfo.username != 'system:serviceaccount:driftguard:gitops'"
    );
}

fn tls_volume(docs: &[Value]) -> Option<(Value, Value)> {
    let pod = &find(docs, "Deployment", "driftguard")["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls")?;
    let mount = container(pod, "driftguard")["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .cloned()
        .expect("a tls volume without a mount");
    Some((volume.clone(), mount))
}

#[test]
fn ca_bundle_and_serving_certificate_follow_the_certs_mode() {
    let configs = |docs: &[Value]| -> Vec<Value> {
        ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]
            .iter()
            .map(|kind| webhook_configuration(docs, kind, "driftguard").clone())
            .collect()
    };
    let bundles = |config: &Value| -> Vec<Value> {
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["clientConfig"]["caBundle"].clone())
            .collect()
    };

    // self: no caBundle (the leader patches it in), no cainjector, no mounted Secret.
    let docs = render(&["--set", "certs.mode=self"]);
    for config in configs(&docs) {
        assert_eq!(bundles(&config), vec![Value::Null; 2], "self: no caBundle");
        assert!(config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null());
    }
    assert_eq!(tls_volume(&docs), None, "self mode mounts no TLS Secret");

    // cert-manager: cainjector annotation naming the serving Certificate; the chart's own CA.
    let docs = render(&[
        "--set",
        "certs.mode=cert-manager,certs.certManager.duration=2160h,certs.certManager.renewBefore=360h",
    ]);
    for config in configs(&docs) {
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "driftguard/driftguard-serving"
        );
        assert_eq!(
            bundles(&config),
            vec![Value::Null; 2],
            "cert-manager: cainjector fills caBundle"
        );
    }
    let serving = find(&docs, "Certificate", "driftguard-serving");
    assert_eq!(serving["metadata"]["namespace"], NAMESPACE);
    assert_eq!(serving["spec"]["secretName"], "driftguard-tls");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "driftguard",
            "driftguard.driftguard",
            "driftguard.driftguard.svc",
            "driftguard.driftguard.svc.cluster.local"
        ])
    );
    assert_eq!(serving["spec"]["duration"], "2160h");
    assert_eq!(serving["spec"]["renewBefore"], "360h");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({ "name": "driftguard-ca", "kind": "Issuer", "group": "cert-manager.io" })
    );
    assert_eq!(
        find(&docs, "Issuer", "driftguard-selfsigned")["spec"],
        json!({ "selfSigned": {} })
    );
    let ca = find(&docs, "Certificate", "driftguard-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["duration"], "87600h", "a 10-year CA");
    assert_eq!(ca["spec"]["secretName"], "driftguard-ca");
    assert_eq!(ca["spec"]["issuerRef"]["name"], "driftguard-selfsigned");
    assert_eq!(
        find(&docs, "Issuer", "driftguard-ca")["spec"],
        json!({ "ca": { "secretName": "driftguard-ca" } })
    );
    let (volume, mount) = tls_volume(&docs).expect("cert-manager mode mounts the Secret");
    assert_eq!(volume["secret"]["secretName"], "driftguard-tls");
    assert_eq!(mount["mountPath"], "/etc/driftguard/tls");

    // cert-manager with an issuerRef: that issuer, no chart-made CA.
    let (_dir, values) = values_file(
        "certs:\n  mode: cert-manager\n  certManager:\n    issuerRef: { name: corp-ca, kind: ClusterIssuer }\n",
    );
    let docs = render(&["-f", &values]);
    assert_eq!(
        find(&docs, "Certificate", "driftguard-serving")["spec"]["issuerRef"],
        json!({ "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" })
    );
    assert!(all(&docs, "Issuer").is_empty(), "no Issuer of the chart's own");
    assert!(try_find(&docs, "Certificate", "driftguard-ca").is_none());

    // files: caBundle from the values in all four entries, the given Secret mounted.
    let docs = render(&[
        "--set",
        &format!("certs.mode=files,certs.files.secretName=my-tls,certs.files.caBundle={CA_BUNDLE}"),
    ]);
    for config in configs(&docs) {
        assert_eq!(bundles(&config), vec![json!(CA_BUNDLE); 2], "files: caBundle");
        assert!(config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null());
    }
    assert!(all(&docs, "Certificate").is_empty());
    let (volume, mount) = tls_volume(&docs).expect("files mode mounts the Secret");
    assert_eq!(volume["secret"]["secretName"], "my-tls");
    assert_eq!(mount["mountPath"], "/etc/driftguard/tls");
    assert_eq!(mount["readOnly"], true);
}

// ---------------------------------------------------------------------------------------------
// RBAC

/// (role, apiGroups, resources, verbs, resourceNames), lists sorted.
type Rule = (String, Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rule(role: String, groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
    let sorted = |items: &[&str]| {
        let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        items.sort();
        items
    };
    (role, sorted(groups), sorted(resources), sorted(verbs), sorted(names))
}

/// The documented RBAC of a release (charts/driftguard/README.md, "RBAC, rule by rule"; the
/// issue 8 contract). Any grant the chart renders beyond this list fails the test.
fn documented_rules(fullname: &str, namespace: &str) -> BTreeSet<Rule> {
    let cluster = format!("ClusterRole {fullname}");
    let role = format!("Role {namespace}/{fullname}");
    let hook = format!("ClusterRole {fullname}-pre-delete");
    let webhooks = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"];
    [
        // 1. The GitSource and Guard controllers; every replica follows the applied revisions.
        rule(
            cluster.clone(),
            &["driftguard.io"],
            &["gitsources", "guards"],
            &["get", "list", "watch"],
            &[],
        ),
        // 2. Status writes by the leader.
        rule(
            cluster.clone(),
            &["driftguard.io"],
            &["gitsources/status", "guards/status"],
            &["get", "patch", "update"],
            &[],
        ),
        // 3. The push receiver's requestedAt annotation on a GitSource.
        rule(cluster.clone(), &["driftguard.io"], &["gitsources"], &["patch"], &[]),
        // 4. Apply (server-side apply is authorized as patch, and as create for a new object) and
        //    prune any kind Git declares; watch for self-heal; get for secretRef Secrets.
        rule(
            cluster.clone(),
            &["*"],
            &["*"],
            &["get", "list", "watch", "create", "patch", "delete"],
            &[],
        ),
        // 5. Apply the RBAC objects that Git declares.
        rule(
            cluster.clone(),
            &["rbac.authorization.k8s.io"],
            &["clusterroles", "roles"],
            &["escalate", "bind"],
            &[],
        ),
        // 6. Events on managed objects and Guards, in both Event APIs.
        rule(
            cluster.clone(),
            &["events.k8s.io"],
            &["events"],
            &["create", "patch"],
            &[],
        ),
        rule(cluster.clone(), &[""], &["events"], &["create", "patch"], &[]),
        // 7. Self mode: caBundle injection, and re-injection after `helm upgrade`; by name.
        rule(
            cluster.clone(),
            &["admissionregistration.k8s.io"],
            &webhooks,
            &["get", "list", "watch", "patch"],
            &[fullname],
        ),
        // 8. Leader election, in the release namespace only.
        rule(
            role.clone(),
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update"],
            &[],
        ),
        // 9. Self mode: the CA and serving certificate Secret (the leader writes, all watch);
        //    also the audit signing key Secret.
        rule(
            role.clone(),
            &[""],
            &["secrets"],
            &["get", "list", "watch", "create", "update", "patch"],
            &[],
        ),
        // 11. Signed audit digests: the public key ConfigMap and each replica's anchor ConfigMap.
        rule(
            role,
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "update"],
            &[],
        ),
        // 12. Write each Guard's objects as its service account (multi-tenancy).
        rule(cluster.clone(), &[""], &["serviceaccounts"], &["impersonate"], &[]),
        // 15. Ask what each Guard's service account may write (admission protects only that).
        rule(
            cluster.clone(),
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
            &[],
        ),
        // 10. The pre-delete hook deletes this release's webhook configurations.
        rule(
            hook,
            &["admissionregistration.k8s.io"],
            &webhooks,
            &["delete", "get"],
            &[fullname],
        ),
    ]
    .into_iter()
    .collect()
}

fn rendered_rules(docs: &[Value]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for doc in docs {
        let role = match doc["kind"].as_str() {
            Some("ClusterRole") => format!("ClusterRole {}", doc["metadata"]["name"].as_str().unwrap()),
            Some("Role") => format!(
                "Role {}/{}",
                doc["metadata"]["namespace"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            ),
            _ => continue,
        };
        assert!(doc.get("aggregationRule").is_none(), "{role}: aggregates other roles");
        for entry in doc["rules"].as_array().unwrap() {
            let keys: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
            assert!(
                keys.is_subset(&BTreeSet::from(["apiGroups", "resources", "verbs", "resourceNames"])),
                "{role}: a rule with {keys:?} (nonResourceURLs?)"
            );
            let list = |key: &str| -> Vec<&str> {
                if entry[key].is_null() {
                    Vec::new()
                } else {
                    strings(&entry[key])
                }
            };
            let added = rules.insert(rule(
                role.clone(),
                &list("apiGroups"),
                &list("resources"),
                &list("verbs"),
                &list("resourceNames"),
            ));
            assert!(added, "{role}: a rule twice: {entry}");
        }
    }
    rules
}

fn assert_rbac(docs: &[Value], fullname: &str, namespace: &str) {
    let rendered = rendered_rules(docs);
    let documented = documented_rules(fullname, namespace);
    let extra: Vec<_> = rendered.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&rendered).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "RBAC differs from the documented list.\nnot documented: {extra:#?}\nmissing: {missing:#?}"
    );
    // The bindings: exactly these three, each to the right service account.
    let bindings: BTreeMap<String, (Value, Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .map(|d| {
            (
                format!(
                    "{} {}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                (d["roleRef"].clone(), d["subjects"].clone()),
            )
        })
        .collect();
    let subject = |name: &str| json!([{ "kind": "ServiceAccount", "name": name, "namespace": namespace }]);
    let role_ref =
        |kind: &str, name: &str| json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name });
    let hook = format!("{fullname}-pre-delete");
    let expected: BTreeMap<String, (Value, Value)> = [
        (
            format!("ClusterRoleBinding {fullname}"),
            (role_ref("ClusterRole", fullname), subject(fullname)),
        ),
        (
            format!("RoleBinding {fullname}"),
            (role_ref("Role", fullname), subject(fullname)),
        ),
        (
            format!("ClusterRoleBinding {hook}"),
            (role_ref("ClusterRole", &hook), subject(&hook)),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(bindings, expected, "the role bindings");
    let role_binding = find(docs, "RoleBinding", fullname);
    assert_eq!(role_binding["metadata"]["namespace"], namespace);
    // The pods run as the bound service accounts.
    let deployment = find(docs, "Deployment", fullname);
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], fullname);
    let job = find(docs, "Job", &hook);
    assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], hook);
    for account in [fullname, hook.as_str()] {
        assert_eq!(
            find(docs, "ServiceAccount", account)["metadata"]["namespace"],
            namespace
        );
    }
}

/// `rbac.applyRules` replaces the all-kinds rule 4 with the listed groups and resources, and
/// nothing else changes.
#[test]
fn rbac_apply_rules_narrow_what_the_enforcer_may_write() {
    let (_dir, values) = values_file(
        "rbac:\n  applyRules:\n    - apiGroups: [\"\"]\n      resources: [configmaps, secrets]\n    - apiGroups: [apps]\n      resources: [deployments]\n",
    );
    let rendered = rendered_rules(&render(&["-f", &values]));
    let verbs = ["get", "list", "watch", "create", "patch", "delete"];
    let role = "ClusterRole driftguard".to_owned();
    let mut expected = documented_rules("driftguard", NAMESPACE);
    assert!(expected.remove(&rule(role.clone(), &["*"], &["*"], &verbs, &[])));
    expected.insert(rule(role.clone(), &[""], &["configmaps", "secrets"], &verbs, &[]));
    expected.insert(rule(role, &["apps"], &["deployments"], &verbs, &[]));
    assert_eq!(rendered, expected);
}

/// `rbac.aggregateToNamespaceRoles` adds the two aggregated ClusterRoles (rules 13 and 14,
/// labelled for the built-in admin, edit and view roles) and nothing else; it refuses to
/// render without the lockdown (`tenancy.defaultServiceAccount`).
#[test]
fn aggregated_roles_let_namespace_admins_manage_guards_only_under_lockdown() {
    let failed = helm(&[
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--set",
        "rbac.aggregateToNamespaceRoles=true",
    ]);
    assert!(!failed.status.success(), "rendered without lockdown");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("tenancy.defaultServiceAccount"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let docs = render(&[
        "--set",
        "rbac.aggregateToNamespaceRoles=true",
        "--set",
        "tenancy.defaultServiceAccount=deployer",
    ]);
    let mut expected = documented_rules("driftguard", NAMESPACE);
    expected.insert(rule(
        "ClusterRole driftguard-edit".to_owned(),
        &["driftguard.io"],
        &["gitsources", "guards"],
        &[
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ],
        &[],
    ));
    expected.insert(rule(
        "ClusterRole driftguard-view".to_owned(),
        &["driftguard.io"],
        &["gitsources", "guards", "gitsources/status", "guards/status"],
        &["get", "list", "watch"],
        &[],
    ));
    assert_eq!(rendered_rules(&docs), expected);
    let labels = |name: &str| find(&docs, "ClusterRole", name)["metadata"]["labels"].clone();
    assert_eq!(
        labels("driftguard-edit")["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        labels("driftguard-edit")["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels("driftguard-view")["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let config = find(&docs, "ConfigMap", "driftguard")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(config.contains("defaultServiceAccount: deployer"), "{config}");
    assert!(config.contains("privilegedNamespaces: [\"driftguard\"]"), "{config}");
}

#[test]
fn rbac_grants_exactly_the_documented_rules() {
    assert_rbac(&render(&[]), "driftguard", NAMESPACE);
    assert_rbac(&render(&["--set", "certs.mode=cert-manager"]), "driftguard", NAMESPACE);
    assert_rbac(&template("dg", "platform", &[]), "dg-driftguard", "platform");

    // The hook's RBAC objects are pre-delete hooks too, created before the Job.
    let docs = render(&[]);
    let weight = |kind: &str| -> i64 {
        let doc = find(&docs, kind, "driftguard-pre-delete");
        let annotations = &doc["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "pre-delete", "{kind}");
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded",
            "{kind}"
        );
        annotations["helm.sh/hook-weight"].as_str().unwrap().parse().unwrap()
    };
    let job = weight("Job");
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        assert!(weight(kind) < job, "{kind} must be created before the Job");
    }
    assert!(weight("ServiceAccount") < weight("ClusterRoleBinding"));
    assert!(weight("ClusterRole") < weight("ClusterRoleBinding"));
    let hooks: Vec<String> = docs.iter().filter(|d| is_hook(d)).map(describe).collect();
    assert_eq!(hooks.len(), 4, "only the pre-delete objects are hooks: {hooks:?}");

    // rbac.create=false: no roles or bindings at all; the Job runs as the chart's account.
    let docs = render(&["--set", "rbac.create=false"]);
    assert!(rendered_rules(&docs).is_empty());
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        assert!(all(&docs, kind).is_empty(), "{kind} with rbac.create=false");
    }
    assert_eq!(
        find(&docs, "Job", "driftguard-pre-delete")["spec"]["template"]["spec"]["serviceAccountName"],
        "driftguard"
    );
}

#[test]
fn pre_delete_hook_deletes_the_webhook_configurations() {
    let docs = render(&[]);
    let job = find(&docs, "Job", "driftguard-pre-delete");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let spec = &job["spec"];
    assert!(spec["backoffLimit"].as_i64().is_some_and(|n| n >= 1));
    assert!(spec["activeDeadlineSeconds"].as_i64().is_some_and(|n| n > 0));
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    let pod = &spec["template"]["spec"];
    let hook = &pod["containers"][0];
    assert_eq!(hook["args"], json!(["webhooks", "delete", "driftguard"]));
    assert_eq!(
        hook["image"],
        find(&docs, "Deployment", "driftguard")["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_hardened(pod, "the pre-delete Job");
    // A different release deletes its own configurations.
    let docs = template("dg", "platform", &[]);
    let job = find(&docs, "Job", "dg-driftguard-pre-delete");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["webhooks", "delete", "dg-driftguard"])
    );
}

// ---------------------------------------------------------------------------------------------
// Pods

fn assert_hardened(pod: &Value, what: &str) {
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert!(
        security["runAsUser"].as_i64().is_some_and(|uid| uid > 0),
        "{what}: runAsUser"
    );
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{what}: seccomp");
    assert!(
        pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none(),
        "{what}: host namespaces"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert!(!containers.is_empty());
    for container in containers
        .iter()
        .chain(pod["initContainers"].as_array().into_iter().flatten())
    {
        let name = container["name"].as_str().unwrap();
        let security = &container["securityContext"];
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "{what} {name}: readOnlyRootFilesystem"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{what} {name}: allowPrivilegeEscalation"
        );
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{what} {name}: drop ALL"
        );
        assert!(
            security["capabilities"]["add"].is_null(),
            "{what} {name}: adds capabilities"
        );
        assert_ne!(security["privileged"], true, "{what} {name}: privileged");
        assert!(
            container["resources"]["limits"]["cpu"].is_null(),
            "{what} {name}: a CPU limit"
        );
    }
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", "driftguard")
}

fn pod_spec(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let docs = render(&[]);
    let deploy = deployment(&docs);
    assert_eq!(deploy["spec"]["replicas"], 3);
    let pod = pod_spec(&docs);
    assert_hardened(pod, "the Deployment");
    let main = container(pod, "driftguard");
    assert_eq!(
        main["resources"]["limits"],
        json!({ "memory": "1Gi" }),
        "no CPU limit by default"
    );
    assert_eq!(
        main["resources"]["requests"],
        json!({ "cpu": "100m", "memory": "256Mi" })
    );
    assert_eq!(main["image"], "ghcr.io/driftguard/driftguard:0.1.0", "tag: appVersion");
    assert!(pod.get("priorityClassName").is_none());
    // The kubelet waits long enough for the binary's drain and in-flight grace before SIGKILL.
    let text = find(&docs, "ConfigMap", "driftguard")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let server = driftguard::config::ConfigFile::parse(text, "config.yaml")
        .unwrap()
        .server;
    let needed = server.drain_delay.0 + server.shutdown_grace.0;
    let granted = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(granted > needed.as_secs(), "{granted}s granted, {needed:?} needed");

    // Soft anti-affinity by node, on the pods' own labels.
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the selector matches the pods");
    }
    let soft = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(soft[0]["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(&soft[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], selector);
    assert!(pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_null());

    let docs = render(&["--set", "podAntiAffinity=hard"]);
    let hard = &pod_spec(&docs)["affinity"]["podAntiAffinity"];
    assert_eq!(
        hard["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(hard["preferredDuringSchedulingIgnoredDuringExecution"].is_null());
    let docs = render(&["--set", "podAntiAffinity=none"]);
    assert!(pod_spec(&docs).get("affinity").is_none());
    let (_dir, values) = values_file(
        r#"
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{ matchExpressions: [{ key: pool, operator: In, values: [system] }] }]
topologySpreadConstraints:
  - { maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway }
"#,
    );
    let docs = render(&["-f", &values, "--set", "podAntiAffinity=hard"]);
    let pod = pod_spec(&docs);
    assert!(
        pod["affinity"]["podAntiAffinity"].is_null(),
        "affinity replaces the generated one"
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
            [0]["key"],
        "pool"
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        &spread["labelSelector"]["matchLabels"],
        &deployment(&docs)["spec"]["selector"]["matchLabels"]
    );

    // The PodDisruptionBudget keeps one webhook pod through drains.
    let docs = render(&[]);
    let pdb = find(&docs, "PodDisruptionBudget", "driftguard");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        &pdb["spec"]["selector"]["matchLabels"],
        &deployment(&docs)["spec"]["selector"]["matchLabels"]
    );

    let docs = render(&["--set", "priorityClassName=system-cluster-critical,replicaCount=5"]);
    assert_eq!(pod_spec(&docs)["priorityClassName"], "system-cluster-critical");
    assert_eq!(deployment(&docs)["spec"]["replicas"], 5);
    assert_eq!(
        find(&docs, "Job", "driftguard-pre-delete")["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );

    let docs = render(&[
        "--set",
        "image.tag=1.2.3,image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(
        container(pod_spec(&docs), "driftguard")["image"],
        "ghcr.io/driftguard/driftguard:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn container_runs_the_contract_command_ports_probes_and_volumes() {
    let docs = render(&[]);
    let pod = pod_spec(&docs);
    let main = container(pod, "driftguard");
    assert_eq!(
        main["args"],
        json!(["serve", "--cluster", "--config", "/etc/driftguard/config.yaml"])
    );
    assert_eq!(
        main["ports"],
        json!([
            { "name": "https", "containerPort": 10250, "protocol": "TCP" },
            { "name": "metrics", "containerPort": 9090, "protocol": "TCP" },
        ])
    );
    let env: BTreeMap<&str, &Value> = main["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env["RUST_LOG"]["value"], "info");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(
            main[probe]["httpGet"],
            json!({ "path": path, "port": "https", "scheme": "HTTPS" }),
            "{probe}"
        );
    }
    // A fresh self-mode replica waits for the leader's Secret: a minute before liveness counts.
    let startup = &main["startupProbe"];
    assert!(startup["periodSeconds"].as_i64().unwrap() * startup["failureThreshold"].as_i64().unwrap() >= 60);

    let mounts: BTreeMap<&str, &str> = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["name"].as_str().unwrap()))
        .collect();
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(mounts.len(), volumes.len(), "every volume is mounted once: {mounts:?}");
    assert_eq!(
        volumes[mounts["/etc/driftguard/config.yaml"]]["configMap"]["name"],
        "driftguard"
    );
    for writable in ["/var/cache/driftguard", "/tmp"] {
        assert_eq!(
            volumes[mounts[writable]]["emptyDir"],
            json!({}),
            "{writable} is an emptyDir"
        );
    }

    // The config checksum rolls the pods when config.yaml changes, and only then.
    let checksum = |docs: &[Value]| {
        deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let default_checksum = checksum(&docs);
    assert_eq!(default_checksum.len(), 64);
    assert_eq!(checksum(&render(&["--set", "replicaCount=4"])), default_checksum);
    assert_ne!(
        checksum(&render(&["--set", "config.leaseDuration=30s"])),
        default_checksum
    );

    // The container port is a value (default 10250, which private GKE control planes reach).
    let docs = render(&["--set", "service.containerPort=8443,networkPolicy.enabled=true"]);
    let main = container(pod_spec(&docs), "driftguard");
    assert_eq!(
        main["ports"][0],
        json!({ "name": "https", "containerPort": 8443, "protocol": "TCP" })
    );
    assert_eq!(find(&docs, "Service", "driftguard")["spec"]["ports"][0]["port"], 443);
    assert_eq!(config_yaml(&docs)["server"]["listen"], "0.0.0.0:8443");
    assert_eq!(
        find(&docs, "NetworkPolicy", "driftguard")["spec"]["ingress"][0]["ports"][0]["port"],
        8443
    );
}

// ---------------------------------------------------------------------------------------------
// config.yaml

fn config_yaml(docs: &[Value]) -> Value {
    let map = find(docs, "ConfigMap", "driftguard");
    let text = map["data"]["config.yaml"].as_str().expect("data.config.yaml");
    serde_saphyr::from_str(text).unwrap_or_else(|err| panic!("config.yaml is not YAML: {err}\n{text}"))
}

fn expected_config(tls: Value) -> Value {
    json!({
        "server": { "listen": "0.0.0.0:10250", "metricsListen": "0.0.0.0:9090", "tls": tls },
        "cluster": {
            "leaseName": "driftguard-leader", "leaseDuration": "15s", "apiTimeout": "10s",
            "tenancy": { "noCrossNamespaceRefs": false, "privilegedNamespaces": ["driftguard"] },
        },
        "serviceAccount": "driftguard/driftguard",
        "desiredCacheBytes": 268435456,
        "gitCacheDir": "/var/cache/driftguard",
        "audit": {
            "digestInterval": "5m",
            "signingKeySecret": "driftguard-audit-signing-key",
            "publicKeysConfigMap": "driftguard-audit-keys",
            "anchorsConfigMapPrefix": "driftguard-audit-anchors",
        },
    })
}

#[test]
fn config_yaml_is_the_contract_for_each_certs_mode() {
    let docs = render(&[]);
    assert_eq!(
        config_yaml(&docs),
        expected_config(json!({ "managed": {
            "secretName": "driftguard-tls",
            "serviceName": "driftguard",
            "webhookConfiguration": "driftguard",
            "caValidity": "87600h",
            "servingValidity": "8760h",
            "renewBefore": "720h",
        } })),
        "self mode"
    );
    // The binary reads and validates it as self-managed certificates in cluster mode.
    let text = find(&docs, "ConfigMap", "driftguard")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let settings = driftguard::config::ConfigFile::parse(text, "config.yaml")
        .and_then(|file| file.validate(Path::new("/"), &Default::default()))
        .unwrap_or_else(|err| panic!("self mode: {err}"));
    assert!(settings.cluster.is_some());
    match settings.server.tls {
        driftguard::config::TlsSource::Managed(managed) => {
            assert_eq!(managed.secret_name, "driftguard-tls");
            assert_eq!(managed.webhook_configuration, "driftguard");
            assert_eq!(managed.renew_before, std::time::Duration::from_secs(720 * 3600));
        }
        other => panic!("self mode is read as {other:?}"),
    }
    let docs = render(&[
        "--set",
        "certs.self.caValidity=43800h,certs.self.servingValidity=2160h,certs.self.renewBefore=240h",
    ]);
    assert_eq!(
        config_yaml(&docs)["server"]["tls"]["managed"],
        json!({
            "secretName": "driftguard-tls",
            "serviceName": "driftguard",
            "webhookConfiguration": "driftguard",
            "caValidity": "43800h",
            "servingValidity": "2160h",
            "renewBefore": "240h",
        })
    );

    let files = format!("certs.mode=files,certs.files.secretName=my-tls,certs.files.caBundle={CA_BUNDLE}");
    for args in [vec!["--set", "certs.mode=cert-manager"], vec!["--set", files.as_str()]] {
        let docs = render(&args);
        let config = config_yaml(&docs);
        assert_eq!(
            config,
            expected_config(
                json!({ "certFile": "/etc/driftguard/tls/tls.crt", "keyFile": "/etc/driftguard/tls/tls.key" })
            ),
            "{args:?}"
        );
        // The binary reads it.
        let text = find(&docs, "ConfigMap", "driftguard")["data"]["config.yaml"]
            .as_str()
            .unwrap();
        let parsed =
            driftguard::config::ConfigFile::parse(text, "config.yaml").unwrap_or_else(|err| panic!("{args:?}: {err}"));
        assert_eq!(parsed.desired_cache_bytes, 268435456);
        assert_eq!(
            parsed.git_cache_dir.as_deref(),
            Some(Path::new("/var/cache/driftguard"))
        );
    }

    // Another release: every name follows the full name and the namespace.
    let docs = template(
        "dg",
        "platform",
        &[
            "--set",
            "config.leaseDuration=30s,config.apiTimeout=5s,config.desiredCacheBytes=1073741824,metrics.port=9100",
        ],
    );
    let config = find(&docs, "ConfigMap", "dg-driftguard")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let config: Value = serde_saphyr::from_str(config).unwrap();
    assert_eq!(
        config["cluster"],
        json!({ "leaseName": "dg-driftguard-leader", "leaseDuration": "30s", "apiTimeout": "5s",
                "tenancy": { "noCrossNamespaceRefs": false, "privilegedNamespaces": ["platform"] } })
    );
    assert_eq!(config["serviceAccount"], "platform/dg-driftguard");
    assert_eq!(config["desiredCacheBytes"], 1073741824_i64);
    assert_eq!(config["server"]["metricsListen"], "0.0.0.0:9100");
    assert_eq!(config["server"]["tls"]["managed"]["secretName"], "dg-driftguard-tls");
    assert_eq!(
        config["server"]["tls"]["managed"]["webhookConfiguration"],
        "dg-driftguard"
    );
}

// ---------------------------------------------------------------------------------------------
// values.schema.json

#[test]
fn values_schema_rejects_bad_values() {
    let (_dir, unknown) = values_file("replicas: 3\n");
    let (_empty_dir, no_apply_rules) = values_file("rbac:\n  applyRules: []\n");
    let cases: &[(&[&str], &str)] = &[
        (&["-f", &no_apply_rules], "/rbac/applyRules"),
        (&["--set", "webhook.failurePolicy=Sometimes"], "/webhook/failurePolicy"),
        (&["--set", "webhook.timeoutSeconds=60"], "/webhook/timeoutSeconds"),
        (&["--set", "webhook.timeoutSeconds=0"], "/webhook/timeoutSeconds"),
        (&["--set", "certs.mode=acme"], "/certs/mode"),
        (&["--set", "replicaCount=0"], "/replicaCount"),
        (&["--set", "podAntiAffinity=always"], "/podAntiAffinity"),
        (&["-f", &unknown], "additional properties 'replicas' not allowed"),
        (
            &["--set", "certs.mode=files,certs.files.secretName=my-tls"],
            "/certs/files/caBundle",
        ),
        (
            &["--set", &format!("certs.mode=files,certs.files.caBundle={CA_BUNDLE}")],
            "/certs/files/secretName",
        ),
        (&["--set", "config.leaseDuration=soon"], "/config/leaseDuration"),
        (&["--set", "webhook.clientCA=not-a-certificate"], "/webhook/clientCA"),
        (
            &["--set", "webhook.excludedNamespaces[0]=Kube_System"],
            "/webhook/excludedNamespaces/0",
        ),
    ];
    for (args, field) in cases {
        let mut full = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
        full.extend_from_slice(args);
        let out = helm(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema") && stderr.contains(field),
            "{args:?}: the error should name {field}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: rendered anyway");
    }
    // The shim's --skip-schema-validation renders what the schema refuses, as Helm's does.
    let docs = render(&["--set", "replicaCount=0", "--skip-schema-validation"]);
    assert_eq!(deployment(&docs)["spec"]["replicas"], 0);
}

/// `webhook.clientCA`: the PEM lands next to config.yaml, the config names it (and the binary
/// reads that config), and the Deployment mounts it; without it, nothing of the kind renders.
#[test]
fn a_client_ca_makes_the_webhook_authenticate_its_callers() {
    let ca = driftguard::certs::CertificateAuthority::generate("kube-apiserver webhook clients").unwrap();
    let (_dir, values) = values_file(&format!(
        "webhook:\n  clientCA: |\n{}",
        ca.cert_pem().lines().map(|l| format!("    {l}\n")).collect::<String>()
    ));
    let docs = render(&["-f", &values]);
    let config_map = find(&docs, "ConfigMap", "driftguard");
    assert_eq!(
        config_map["data"]["client-ca.crt"].as_str().unwrap().trim(),
        ca.cert_pem().trim()
    );
    let text = config_map["data"]["config.yaml"].as_str().unwrap();
    let server = driftguard::config::ConfigFile::parse(text, "config.yaml")
        .unwrap()
        .server;
    assert_eq!(
        server.tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/driftguard/client-ca.crt"))
    );
    let mounts = &container(pod_spec(&docs), "driftguard")["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/driftguard/client-ca.crt"
                && m["subPath"] == "client-ca.crt"
                && m["name"] == "config"
                && m["readOnly"] == true),
        "{mounts}"
    );

    let docs = render(&[]);
    assert!(
        find(&docs, "ConfigMap", "driftguard")["data"]
            .get("client-ca.crt")
            .is_none()
    );
    assert!(!config_yaml(&docs).to_string().contains("clientCAFile"));
}

/// Every leaf of the schema (a node with a default) and its path.
fn schema_leaves<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    if node.get("default").is_some() {
        out.push((path, node));
        return;
    }
    let properties = node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("values.schema.json: {path} has neither a default nor properties"));
    assert_eq!(
        node["additionalProperties"], false,
        "values.schema.json: {path} is open"
    );
    for (name, child) in properties {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        schema_leaves(child, child_path, out);
    }
}

fn value_paths(value: &Value, path: String, leaves: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    if leaves.contains(&path) {
        out.insert(path);
        return;
    }
    let map = value
        .as_object()
        .unwrap_or_else(|| panic!("values.yaml: {path} is not in values.schema.json"));
    for (name, child) in map {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        value_paths(child, child_path, leaves, out);
    }
}

#[test]
fn schema_describes_every_value_with_the_values_yaml_default() {
    let root = support::root().join(CHART);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("values.schema.json")).unwrap()).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(root.join("values.yaml")).unwrap()).unwrap();
    let mut leaves = Vec::new();
    schema_leaves(&schema, String::new(), &mut leaves);
    for (path, node) in &leaves {
        assert!(
            node["description"].as_str().is_some_and(|d| !d.is_empty()),
            "values.schema.json: {path} has no description"
        );
        let mut in_values = &values;
        for key in path.split('.') {
            in_values = &in_values[key];
        }
        assert_eq!(
            &node["default"], in_values,
            "values.schema.json default of {path} differs from values.yaml"
        );
        if node["pattern"]
            .as_str()
            .is_some_and(|p| p.ends_with("(ns|us|µs|ms|s|m|h))+$"))
        {
            let default = node["default"].as_str().unwrap();
            driftguard::api::GoDuration::parse(default).unwrap_or_else(|err| panic!("{path}: {err}"));
        }
    }
    let leaf_paths: BTreeSet<String> = leaves.iter().map(|(p, _)| p.clone()).collect();
    let mut covered = BTreeSet::new();
    value_paths(&values, String::new(), &leaf_paths, &mut covered);
    assert_eq!(
        covered, leaf_paths,
        "values.yaml and values.schema.json have the same values"
    );
}

// ---------------------------------------------------------------------------------------------
// Generated files

#[test]
fn install_yaml_equals_the_default_render() {
    let rendered = template_text(RELEASE, NAMESPACE, &["--no-hooks"]);
    let shipped = std::fs::read_to_string(support::root().join(INSTALL_YAML)).unwrap_or_default();
    assert!(
        rendered == shipped,
        "{INSTALL_YAML} is stale; regenerate it with `{REGENERATE_INSTALL}`"
    );
    // Plain manifests carry no Helm hook: applied with kubectl, the pre-delete Job would run at
    // once and delete the webhook configurations.
    let docs = parse_documents(&shipped);
    assert!(docs.iter().all(|d| !is_hook(d)), "{INSTALL_YAML} contains hooks");
    assert!(try_find(&docs, "Deployment", "driftguard").is_some());
}

#[test]
fn chart_crds_are_the_crds_command_output() {
    let root = support::root();
    let chart_copy = std::fs::read_to_string(root.join(CHART).join("files/crds.yaml")).unwrap();
    let manifest = std::fs::read_to_string(root.join("manifests/crds/driftguard-crds.yaml")).unwrap();
    assert!(
        chart_copy == manifest,
        "charts/driftguard/files/crds.yaml differs from manifests/crds/driftguard-crds.yaml; \
         regenerate it with `cargo run -q -- crds > charts/driftguard/files/crds.yaml`"
    );
    // Rendered: the same CRDs, with the chart's labels and (crds.keep) the keep policy.
    let expected = parse_documents(&manifest);
    let strip = |crd: &Value| {
        let mut crd = crd.clone();
        let metadata = crd["metadata"].as_object_mut().unwrap();
        metadata.remove("labels");
        metadata.remove("annotations");
        crd
    };
    let docs = render(&[]);
    let crds = all(&docs, "CustomResourceDefinition");
    assert_eq!(crds.len(), expected.len());
    for (rendered, expected) in crds.iter().zip(&expected) {
        assert_eq!(strip(rendered), strip(expected), "{}", describe(expected));
        assert_eq!(rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        assert_eq!(rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
    }
    let docs = render(&["--set", "crds.keep=false"]);
    for crd in all(&docs, "CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }
    let docs = render(&["--set", "crds.install=false"]);
    assert!(all(&docs, "CustomResourceDefinition").is_empty());
}

#[test]
fn readme_values_reference_is_generated_from_the_schema() {
    let out = Command::new(support::root().join("scripts/values-reference"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/values-reference: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("| Value | Type | Default | Description |\n|---|---|---|---|\n"));
    for row in [
        "| `webhook.failurePolicy` | `Ignore` \\| `Fail` | `Ignore` |",
        "| `replicaCount` | integer >= 1 | `3` |",
    ] {
        assert!(table.contains(row), "no row {row} in\n{table}");
    }
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    let block = format!("<!-- values-reference:start -->\n{table}<!-- values-reference:end -->");
    assert!(
        readme.contains(&block),
        "README.md's values reference is stale: replace what is between <!-- values-reference:start --> \
         and <!-- values-reference:end --> with the output of scripts/values-reference"
    );
}

/// certs/cert-manager/ (for users of manifests/install.yaml) holds the Issuers and
/// Certificates the chart renders in cert-manager mode, spec for spec.
#[test]
fn standalone_cert_manager_manifests_match_the_chart() {
    let docs = render(&["--set", "certs.mode=cert-manager"]);
    let rendered: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("cert-manager.io/"))
        })
        .collect();
    let mut standalone = Vec::new();
    for file in ["issuer.yaml", "certificate.yaml"] {
        let text = std::fs::read_to_string(support::root().join("certs/cert-manager").join(file)).unwrap();
        standalone.extend(
            serde_saphyr::from_multiple::<Value>(&text)
                .unwrap()
                .into_iter()
                .filter(Value::is_object),
        );
    }
    let key = |d: &Value| {
        (
            d["kind"].as_str().unwrap_or_default().to_owned(),
            d["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let mut names: Vec<_> = rendered.iter().map(|d| key(d)).collect();
    let mut theirs: Vec<_> = standalone.iter().map(key).collect();
    names.sort();
    theirs.sort();
    assert_eq!(names, theirs, "the same cert-manager objects");
    for doc in &standalone {
        let chart = rendered.iter().find(|d| key(d) == key(doc)).unwrap();
        assert_eq!(doc["apiVersion"], chart["apiVersion"], "{:?}", key(doc));
        assert_eq!(
            doc["metadata"]["namespace"],
            chart["metadata"]["namespace"],
            "{:?}",
            key(doc)
        );
        assert_eq!(
            doc["spec"],
            chart["spec"],
            "{:?}: certs/cert-manager differs from the chart",
            key(doc)
        );
    }
}
