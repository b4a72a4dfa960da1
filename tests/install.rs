//! The Helm chart installed into the test API server, and driftguard run the way its
//! Deployment runs it (the rendered container args, env and config file, two replicas, the
//! chart's service account): in `certs.mode: self` the leader creates the CA Secret and injects
//! the CA bundle into all four webhook entries; forced renewals of the serving certificate and
//! of the CA swap what every replica serves while kube-apiserver keeps calling the webhooks,
//! with `failurePolicy: Fail` and no failed request; and every API request driftguard made is
//! allowed by the chart's RBAC.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::cluster::Replica;
use support::guards::eventually;
use support::process::recv_until;

const RELEASE: &str = "driftguard";
const NAMESPACE: &str = "driftguard";
const SERVICE_HOST: &str = "driftguard.driftguard.svc";
const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it yields a value, failing the test after [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `helm template` of the chart with `args`, as parsed documents (hooks included).
fn render(args: &[&str]) -> Vec<Value> {
    let chart = support::root().join("charts/driftguard");
    let out = Command::new(support::helm_launcher())
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|doc| doc.is_object())
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn is_hook(doc: &Value) -> bool {
    doc["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_of(d) == kind && !is_hook(d))
        .unwrap_or_else(|| panic!("no {kind} in the render"))
}

/// Server-side apply of every non-hook object, as `helm install` creates them.
async fn install(client: &kube::Client, docs: &[Value]) {
    for doc in docs.iter().filter(|d| !is_hook(d)) {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => (group.to_owned(), version.to_owned()),
            None => (String::new(), doc["apiVersion"].as_str().unwrap().to_owned()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, kind_of(doc));
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let name = doc["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE);
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(name, &PatchParams::apply("helm").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", kind_of(doc)));
    }
}

/// A replica started as the chart's Deployment runs it, with a short CA overlap and a short
/// Lease, so renewals (and their RBAC) happen within the test.
fn start_replica(dir: &Path, docs: &[Value], pod: &str, kubeconfig: &Path) -> Replica {
    support::cluster::start_replica(dir, docs, pod, kubeconfig, |config| {
        config["server"]["tls"]["managed"]["caOverlap"] = json!("1s");
        config["cluster"]["leaseDuration"] = json!("2s");
    })
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn certs_in(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    driftguard::certs::parse_cert_chain(pem, "pem").unwrap()
}

/// The leaf `addr` presents to a client that trusts `bundle` and dials the Service name, as
/// kube-apiserver does.
async fn presented(addr: std::net::SocketAddr, bundle: &[CertificateDer<'static>]) -> Option<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in bundle {
        roots.add(cert.clone()).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVICE_HOST).ok()?, tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

/// Replaces (PUT) both webhook configurations with their rendered form, which has no caBundle
/// in self mode, as `kubectl replace` does.
async fn reset_ca_bundles(client: &kube::Client, docs: &[Value]) {
    for kind in ["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let live = api.get(RELEASE).await.unwrap();
        let rendered = find(docs, kind).clone();
        let entries = rendered["webhooks"].as_array().unwrap();
        assert!(
            entries.iter().all(|w| w["clientConfig"].get("caBundle").is_none()),
            "self mode renders no caBundle"
        );
        let mut rendered: DynamicObject = serde_json::from_value(rendered).unwrap();
        rendered.metadata.resource_version = live.metadata.resource_version;
        api.replace(RELEASE, &PostParams::default(), &rendered).await.unwrap();
    }
}

/// Reads the two webhook configurations' `caBundle`s, entry by entry.
async fn injected_bundles(client: &kube::Client) -> Vec<Option<Vec<u8>>> {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(RELEASE)
        .await
        .unwrap();
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(RELEASE)
        .await
        .unwrap();
    let mut out: Vec<Option<Vec<u8>>> = validating
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0))
        .collect();
    out.extend(
        mutating
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.client_config.ca_bundle.map(|b| b.0)),
    );
    out
}

/// Writes through kube-apiserver to a labelled (so webhook-matched) but unmanaged ConfigMap,
/// until told to stop; counts answers.
#[derive(Default)]
struct Probe {
    ok: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Probe {
    async fn run(self: Arc<Self>, client: kube::Client) {
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let patch = json!({"data": {"n": n.to_string()}});
            match maps
                .patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    self.errors.lock().unwrap().push(error.to_string());
                    self.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    /// Waits until `more` further requests succeeded.
    async fn succeeds(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more probe writes"), WAIT, || async {
            self.ok.load(Ordering::Relaxed) >= target
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_mode_install_injects_the_ca_and_renews_without_a_failed_request() {
    let docs = render(&["--set", "webhook.failurePolicy=Fail"]);
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = support::kube_client(&api, Identity::Admin, dir.path()).await;
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    // Written before the fail-closed webhooks exist (until the CA is injected, every call to
    // them fails, which with failurePolicy Fail refuses the write).
    let probe_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": "default", "labels": {"driftguard.io/managed": "true"}},
        "data": {"n": "0"}});
    install(&admin, &[probe_map]).await;
    install(&admin, &docs).await;

    // A Guard, so the leader's enforcer also runs under the chart's service account.
    let (repo, commit) = support::example_repo();
    let objects = [
        json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
               "metadata": {"name": "apps", "namespace": "default"},
               "spec": {"url": repo.path().to_str().unwrap(), "ref": {"branch": "main"}}}),
        json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
               "metadata": {"name": "example-app", "namespace": "default"},
               "spec": {"sourceRef": {"name": "apps"}, "path": "examples/app", "interval": "1h"}}),
    ];
    install(&admin, &objects).await;

    let kubeconfig = dir.path().join("driftguard.kubeconfig");
    api.write_kubeconfig(Identity::Driftguard, &kubeconfig).unwrap();
    let (dir_a, dir_b, docs_a, docs_b) = (
        dir.path().to_path_buf(),
        dir.path().to_path_buf(),
        docs.clone(),
        docs.clone(),
    );
    let (kube_a, kube_b) = (kubeconfig.clone(), kubeconfig.clone());
    // Both start at once; neither serves before the leader has written the Secret.
    let a = std::thread::spawn(move || start_replica(&dir_a, &docs_a, "driftguard-a", &kube_a));
    let b = std::thread::spawn(move || start_replica(&dir_b, &docs_b, "driftguard-b", &kube_b));
    let (a, b) = (a.join().expect("replica a serves"), b.join().expect("replica b serves"));
    api.dispatcher()
        .map_service(NAMESPACE, RELEASE, &format!("https://{}", a.https));

    // The leader created the Secret and injected its CA into all four entries.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let secret = secrets.get("driftguard-tls").await.unwrap();
    let data = secret_data(&secret);
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(data.contains_key(key), "{key} in the Secret");
    }
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let bundle = data["ca.crt"].clone();
    eventually("the CA bundle in all four webhook entries", WAIT, || async {
        let injected = injected_bundles(&admin).await;
        injected.len() == 4 && injected.iter().all(|b| b.as_deref() == Some(bundle.as_slice()))
    })
    .await;
    let ca = certs_in(&bundle);
    assert_eq!(ca.len(), 1);
    let first_leaf = certs_in(&data["tls.crt"]).remove(0);
    for replica in [&a, &b] {
        assert_eq!(presented(replica.https, &ca).await, Some(first_leaf.clone()));
    }
    eventually("the Guard applied by the leader", WAIT, || async {
        let guards: Api<driftguard::api::Guard> = Api::namespaced(admin.clone(), "default");
        guards
            .get("example-app")
            .await
            .ok()
            .and_then(|g| g.status)
            .and_then(|s| s.last_applied_revision)
            == Some(commit.clone())
    })
    .await;

    // kube-apiserver calls the webhooks (failurePolicy Fail) for every probe write.
    let probe = Arc::new(Probe::default());
    let running = tokio::spawn(probe.clone().run(admin.clone()));
    probe.succeeds(10).await;
    let scraped = support::https::scrape(a.metrics).await;
    assert!(
        scraped.contains(r#"driftguard_admission_requests_total{webhook="validate""#),
        "the webhook was called:\n{scraped}"
    );

    // A forced serving renewal: same CA, a new leaf on both replicas, the request removed.
    let renew = |what: &str| json!({"metadata": {"annotations": {"driftguard.io/renew": what}}});
    let asked = std::time::Instant::now();
    secrets
        .patch(
            "driftguard-tls",
            &PatchParams::default(),
            &Patch::Merge(&renew("serving")),
        )
        .await
        .unwrap();
    let second_leaf = until("a new serving certificate in the Secret", || async {
        let secret = secrets.get("driftguard-tls").await.ok()?;
        let pending = secret
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("driftguard.io/renew"));
        let data = secret_data(&secret);
        let current = certs_in(&data["tls.crt"]).remove(0);
        if pending || current == first_leaf {
            return None;
        }
        assert_eq!(data["ca.crt"], bundle, "a serving renewal keeps the CA");
        Some(current)
    })
    .await;
    for replica in [&a, &b] {
        eventually("the replica serves the renewed certificate", WAIT, || async {
            presented(replica.https, &ca).await == Some(second_leaf.clone())
        })
        .await;
    }
    eprintln!(
        "serving renewal: both replicas serve the new certificate {:?} after the request",
        asked.elapsed()
    );
    probe.succeeds(10).await;

    // A forced CA rotation: both CAs trusted and injected first, then (after the overlap) a
    // serving certificate from the new CA.
    let asked = std::time::Instant::now();
    secrets
        .patch("driftguard-tls", &PatchParams::default(), &Patch::Merge(&renew("ca")))
        .await
        .unwrap();
    let rotated = until("two CAs in the bundle, injected", || async {
        let data = secret_data(&secrets.get("driftguard-tls").await.ok()?);
        let bundle = data["ca.crt"].clone();
        let injected = injected_bundles(&admin).await;
        let done = certs_in(&bundle).len() == 2 && injected.iter().all(|b| b.as_deref() == Some(bundle.as_slice()));
        done.then(|| certs_in(&bundle))
    })
    .await;
    assert_eq!(rotated[1], ca[0], "the old CA stays trusted, after the new one");
    let new_ca = rotated[0].clone();
    for replica in [&a, &b] {
        eventually("the replica serves a certificate from the new CA", WAIT, || async {
            let Some(leaf) = presented(replica.https, &rotated).await else {
                return false;
            };
            let chain = [leaf];
            driftguard::certs::verify_serving(
                &chain,
                &new_ca,
                &[SERVICE_HOST.to_owned()],
                std::time::SystemTime::now(),
                "leaf",
            )
            .is_ok()
        })
        .await;
    }
    eprintln!(
        "CA rotation: both replicas serve from the new CA {:?} after the request (overlap 1s)",
        asked.elapsed()
    );
    probe.succeeds(10).await;
    probe.stop.store(true, Ordering::Relaxed);
    running.await.unwrap();
    let failed = probe.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "failed writes across the renewals: {:?}",
        probe.errors.lock().unwrap()
    );
    assert!(probe.ok.load(Ordering::Relaxed) >= 30);
    eprintln!(
        "probe writes through both webhooks (failurePolicy Fail): {} succeeded, {failed} failed",
        probe.ok.load(Ordering::Relaxed)
    );

    // On record: the leader's issues, every replica's swaps.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), NAMESPACE)
        .get("driftguard-leader")
        .await
        .unwrap();
    let leader = lease.spec.unwrap().holder_identity.unwrap();
    let (leading, other) = if leader == "driftguard-a" { (&a, &b) } else { (&b, &a) };
    for needle in [
        "a new CA and serving certificate",
        "a new serving certificate",
        "a new CA (",
    ] {
        recv_until(&leading.audit, needle, |l| {
            l.contains("certificate.issued") && l.contains(needle)
        });
    }
    for replica in [leading, other] {
        recv_until(&replica.audit, "certificate.rotated", |l| {
            l.contains("certificate.rotated")
        });
    }

    // A deleted Secret: the leader starts over with a new CA, injects it, and every replica
    // serves from it (no overlap on this path; the probe has stopped).
    let old_bundle = secret_data(&secrets.get("driftguard-tls").await.unwrap())["ca.crt"].clone();
    secrets.delete("driftguard-tls", &Default::default()).await.unwrap();
    let fresh = until("a new Secret with a new CA, injected", || async {
        let data = secret_data(&secrets.get("driftguard-tls").await.ok()?);
        let bundle = data["ca.crt"].clone();
        let injected = injected_bundles(&admin).await;
        (bundle != old_bundle && injected.iter().all(|b| b.as_deref() == Some(bundle.as_slice())))
            .then(|| certs_in(&bundle))
    })
    .await;
    assert_eq!(fresh.len(), 1, "a new CA alone");
    for replica in [&a, &b] {
        until("the replica serves from the new CA", || async {
            presented(replica.https, &fresh).await
        })
        .await;
    }

    // `kubectl replace -f manifests/install.yaml` (or an upgrade that rewrites the
    // configurations) puts back the rendered entries, which carry no caBundle: the leader,
    // watching both configurations, injects the current CA again.
    let current = secret_data(&secrets.get("driftguard-tls").await.unwrap())["ca.crt"].clone();
    let injections = || {
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("webhookconfigurations/"))
            .count()
    };
    let before = injections();
    reset_ca_bundles(&admin, &docs).await;
    until("the CA injected again after the reset", || async {
        let bundles = injected_bundles(&admin).await;
        (injections() >= before + 2 && bundles.iter().all(|b| b.as_deref() == Some(current.as_slice()))).then_some(())
    })
    .await;

    assert_rbac_allows_every_request(&api, &docs);
}

/// One RBAC rule as rendered, with the namespace it applies in (`None`: cluster-wide).
struct Grant {
    namespace: Option<String>,
    rule: Value,
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The rules bound to driftguard's service account by the rendered (non-hook) bindings.
fn grants(docs: &[Value], account: (&str, &str)) -> Vec<Grant> {
    let mut out = Vec::new();
    for binding in docs.iter().filter(|d| !is_hook(d)) {
        let kind = kind_of(binding);
        if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
            continue;
        }
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account.1 && s["namespace"] == account.0);
        if !bound {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let binding_ns = (kind == "RoleBinding").then(|| {
            binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or(NAMESPACE)
                .to_owned()
        });
        let role = docs
            .iter()
            .find(|d| kind_of(d) == role_kind && d["metadata"]["name"] == role_name && !is_hook(d))
            .unwrap_or_else(|| panic!("{kind} references a missing {role_kind} {role_name}"));
        for rule in role["rules"].as_array().into_iter().flatten() {
            out.push(Grant {
                namespace: binding_ns.clone(),
                rule: rule.clone(),
            });
        }
    }
    out
}

/// What RBAC checks for one request: verb, group, resource, subresource, namespace, name.
#[derive(Debug)]
struct Attributes {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    namespace: Option<String>,
    name: String,
}

fn attributes(method: &str, path: &str, query: &str) -> Option<Attributes> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return None, // discovery and other non-resource URLs
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(namespace.to_string()), rest),
        _ => (None, rest),
    };
    let resource = rest[0].to_owned();
    let mut name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    let params: BTreeMap<&str, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.replace("%3D", "=").replace("%2C", ",")))
        .collect();
    let verb = match (method, name.is_empty()) {
        ("GET", false) => "get",
        ("GET", true) if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) => "watch",
        ("GET", true) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        _ => return None,
    };
    if name.is_empty()
        && let Some(selected) = params
            .get("fieldSelector")
            .and_then(|s| s.strip_prefix("metadata.name="))
    {
        name = selected.to_owned();
    }
    Some(Attributes {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource,
        subresource,
        namespace,
        name,
    })
}

fn allows(grant: &Grant, request: &Attributes) -> bool {
    if let Some(namespace) = &grant.namespace
        && request.namespace.as_deref() != Some(namespace.as_str())
    {
        return false;
    }
    let rule = &grant.rule;
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || (request.subresource.is_empty() && *r == request.resource)
            || (!request.subresource.is_empty()
                && (*r == format!("{}/{}", request.resource, request.subresource)
                    || *r == format!("*/{}", request.subresource)))
    });
    (verbs.contains(&"*") || verbs.contains(&request.verb.as_str()))
        && (groups.contains(&"*") || groups.contains(&request.group.as_str()))
        && resource_ok
        && (names.is_empty() || names.contains(&request.name.as_str()))
}

fn assert_rbac_allows_every_request(api: &TestApiServer, docs: &[Value]) {
    let grants = grants(docs, (NAMESPACE, RELEASE));
    assert!(!grants.is_empty(), "the chart binds roles to its service account");
    let user = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let mut checked = 0;
    let mut denied = Vec::new();
    for request in api.requests().into_iter().filter(|r| r.user == user) {
        let Some(attributes) = attributes(&request.method, &request.path, &request.query) else {
            continue;
        };
        checked += 1;
        if !grants.iter().any(|g| allows(g, &attributes)) {
            denied.push(format!(
                "{} {}?{} -> {attributes:?}",
                request.method, request.path, request.query
            ));
        }
    }
    denied.dedup();
    assert!(checked > 50, "driftguard made {checked} resource requests");
    assert!(
        denied.is_empty(),
        "requests the chart's RBAC would forbid:\n{}",
        denied.join("\n")
    );
}

/// The chart's pre-delete hook, run as its Job runs it: both webhook configurations go, so an
/// uninstall never leaves a fail-closed webhook behind; running it again is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_delete_hook_removes_both_webhook_configurations() {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    let docs = render(&["--set", "webhook.failurePolicy=Fail"]);
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = support::kube_client(&api, Identity::Admin, dir.path()).await;
    let webhooks: Vec<Value> = docs
        .iter()
        .filter(|d| kind_of(d).ends_with("WebhookConfiguration"))
        .cloned()
        .collect();
    assert_eq!(webhooks.len(), 2);
    install(&admin, &webhooks).await;

    let job = docs
        .iter()
        .find(|d| kind_of(d) == "Job" && d["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete")
        .expect("a pre-delete Job");
    let args: Vec<String> = job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    api.write_kubeconfig(Identity::Admin, &kubeconfig).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("deleted ValidatingWebhookConfiguration driftguard")
            && stdout.contains("deleted MutatingWebhookConfiguration driftguard"),
        "{stdout}"
    );
    let validating = Api::<ValidatingWebhookConfiguration>::all(admin.clone());
    let mutating = Api::<MutatingWebhookConfiguration>::all(admin.clone());
    assert!(validating.get_opt(RELEASE).await.unwrap().is_none());
    assert!(mutating.get_opt(RELEASE).await.unwrap().is_none());
    let again = run();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already gone"));
}

#[test]
fn the_rbac_evaluator_denies_what_no_rule_grants() {
    let grant = Grant {
        namespace: Some(NAMESPACE.to_owned()),
        rule: json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch"], "resourceNames": ["driftguard-tls"]}),
    };
    let get = attributes("GET", "/api/v1/namespaces/driftguard/secrets/driftguard-tls", "").unwrap();
    assert!(allows(&grant, &get));
    let other = attributes("GET", "/api/v1/namespaces/driftguard/secrets/other", "").unwrap();
    assert!(!allows(&grant, &other));
    let elsewhere = attributes("GET", "/api/v1/namespaces/default/secrets/driftguard-tls", "").unwrap();
    assert!(!allows(&grant, &elsewhere));
    let watch = attributes(
        "GET",
        "/api/v1/namespaces/driftguard/secrets",
        "fieldSelector=metadata.name%3Ddriftguard-tls&watch=true",
    )
    .unwrap();
    assert_eq!(watch.verb, "watch");
    assert!(allows(&grant, &watch));
    let list = attributes("GET", "/api/v1/namespaces/driftguard/secrets", "").unwrap();
    assert!(!allows(&grant, &list), "list is not granted");
    let scale = attributes("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale", "").unwrap();
    let wildcard = Grant {
        namespace: None,
        rule: json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["patch"]}),
    };
    assert!(allows(&wildcard, &scale));
    assert!(
        attributes("GET", "/apis/apps/v1", "").is_none(),
        "discovery is not a resource request"
    );
}
