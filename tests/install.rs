//! The Helm chart installed by the real helm into the real kube-apiserver
//! (tests/support/cluster.rs), and driftguard run the way its Deployment runs it (the rendered
//! container args, env and config file, two replicas, the chart's service account's token):
//! in `certs.mode: self` the leader creates the CA Secret and injects the CA bundle into all
//! four webhook entries; forced renewals of the serving certificate and of the CA swap what
//! every replica serves while kube-apiserver keeps calling the webhooks through the chart's
//! Service, with `failurePolicy: Fail` and no failed request; and the real RBAC authorizer
//! allowed every API request driftguard made (the API server's audit log says so).
//!
//! `helm install`/`upgrade`/`uninstall` themselves (and the pre-delete hook) are
//! tests/e2e/install.rs's part.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::cluster::{Cluster, Installed, NAMESPACE, RELEASE, Replica, find};
use support::guards::eventually;
use support::process::recv_until;

const SERVICE_HOST: &str = "driftguard.driftguard.svc";
const WAIT: Duration = Duration::from_secs(60);

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
async fn presented(addr: SocketAddr, bundle: &[CertificateDer<'static>]) -> Option<CertificateDer<'static>> {
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
/// in self mode, as `kubectl replace` does; what the API server stored, entry by entry.
async fn reset_ca_bundles(client: &kube::Client, docs: &[Value]) -> Vec<Option<Value>> {
    let mut stored = Vec::new();
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
        let replaced = api.replace(RELEASE, &PostParams::default(), &rendered).await.unwrap();
        for webhook in replaced.data["webhooks"].as_array().unwrap() {
            stored.push(webhook["clientConfig"].get("caBundle").cloned());
        }
    }
    stored
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

/// How many validating admission reviews a replica answered (all series of
/// `driftguard_admission_requests_total{webhook="validate",...}` summed).
async fn validate_calls(metrics: SocketAddr) -> f64 {
    support::https::scrape(metrics)
        .await
        .lines()
        .filter(|l| l.starts_with(r#"driftguard_admission_requests_total{webhook="validate""#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Writes through kube-apiserver to a labelled (so webhook-matched) but unmanaged ConfigMap,
/// until told to stop; counts answers. Holding `gate` pauses it between two writes.
#[derive(Default)]
struct Probe {
    ok: AtomicUsize,
    failed: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
    stop: AtomicBool,
    gate: tokio::sync::Mutex<()>,
    /// Failed dry-run writes right after a connection cut (see [`Probe::through_each`]).
    cut: std::sync::Mutex<Vec<String>>,
    /// What the test is doing now, named in each failure.
    phase: std::sync::Mutex<String>,
}

impl Probe {
    async fn run(self: Arc<Self>, client: kube::Client) {
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let patch = json!({"data": {"n": n.to_string()}});
            let _open = self.gate.lock().await;
            match maps
                .patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    let phase = self.phase.lock().unwrap().clone();
                    self.errors.lock().unwrap().push(format!("[{phase}] {error}"));
                    self.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    fn phase(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_owned();
    }

    /// Waits until `more` further requests succeeded.
    async fn succeeds(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually(&format!("{more} more probe writes"), WAIT, || async {
            self.ok.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Sends kube-apiserver to each replica alone in turn and waits for probe writes answered
    /// by it. The Service's endpoints are narrowed to that replica after every open connection
    /// was closed, so kube-apiserver dials and verifies the replica's current certificate anew.
    ///
    /// The probe is paused meanwhile, and a dry-run write is retried until the webhooks answer
    /// it before the probe resumes: a connection the test cuts can still be handed a webhook call
    /// before kube-apiserver has read its end (Go's HTTP client does not retry a POST then, and
    /// the call fails with `EOF`). That is the cut's doing, not a renewal's, so it is counted
    /// apart (`cut`); every probe write must still succeed.
    async fn through_each(&self, installed: &Installed, client: &kube::Client) {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let dry_run = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        for replica in &installed.replicas {
            let before = validate_calls(replica.metrics).await;
            {
                let _paused = self.gate.lock().await;
                self.phase(&format!("through {}", replica.name));
                installed.proxy.set_backends(Vec::new());
                installed.proxy.set_backends(vec![replica.https]);
                let warm = json!({"data": {"warm": "up"}});
                let mut failed = Vec::new();
                while let Err(error) = maps.patch("probe", &dry_run, &Patch::Merge(&warm)).await {
                    failed.push(error.to_string());
                    assert!(
                        failed.len() < 20,
                        "the webhooks never answered after the cut: {failed:?}"
                    );
                }
                self.cut.lock().unwrap().extend(failed);
            }
            self.succeeds(5).await;
            let after = validate_calls(replica.metrics).await;
            assert!(
                after >= before + 5.0,
                "kube-apiserver called {} {} times for 5 probe writes",
                replica.name,
                after - before
            );
        }
        let _paused = self.gate.lock().await;
        self.phase("routed to both replicas");
        installed.route();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_mode_install_injects_the_ca_and_renews_without_a_failed_request() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let admin = cluster.client().await;
    // Written before the fail-closed webhooks exist (until the CA is injected, every call to
    // them fails, which with failurePolicy Fail refuses the write).
    let probe_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "probe", "namespace": "default", "labels": {"driftguard.io/managed": "true"}},
        "data": {"n": "0"}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &probe_map)
        .await
        .unwrap();

    // `helm install` (fail-closed webhooks), the Service routed, no replica yet.
    let (cluster, mut installed) = tokio::task::spawn_blocking(move || {
        let installed = Installed::helm(&cluster, &["webhook.failurePolicy=Fail"], 0);
        (cluster, installed)
    })
    .await
    .unwrap();
    let docs = installed.manifests.clone();

    // A Guard, so the leader's enforcer also runs under the chart's service account.
    let (repo, commit) = support::example_repo();
    cluster.apply_example_guard(repo.path());

    // Both start at once; neither serves before the leader has written the Secret.
    let dir = tempfile::tempdir().unwrap();
    let started: Vec<_> = ["driftguard-a", "driftguard-b"]
        .into_iter()
        .map(|pod| {
            let (dir, docs, kubeconfig) = (dir.path().to_owned(), docs.clone(), installed.sa_kubeconfig.clone());
            std::thread::spawn(move || start_replica(&dir, &docs, pod, &kubeconfig))
        })
        .collect();
    for replica in started {
        installed.replicas.push(replica.join().expect("the replica serves"));
    }
    installed.route();

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
    for replica in &installed.replicas {
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

    // kube-apiserver calls the webhooks (failurePolicy Fail) for every probe write, through the
    // chart's Service, on each replica.
    let probe = Arc::new(Probe::default());
    let running = tokio::spawn(probe.clone().run(admin.clone()));
    probe.phase("installed");
    probe.succeeds(10).await;
    probe.through_each(&installed, &admin).await;

    // A forced serving renewal: same CA, a new leaf on both replicas, the request removed.
    let renew = |what: &str| json!({"metadata": {"annotations": {"driftguard.io/renew": what}}});
    probe.phase("serving renewal");
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
    for replica in &installed.replicas {
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
    // kube-apiserver verifies each replica's new certificate on a fresh connection.
    probe.through_each(&installed, &admin).await;

    // A forced CA rotation: both CAs trusted and injected first, then (after the overlap) a
    // serving certificate from the new CA.
    probe.phase("CA rotation");
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
    for replica in &installed.replicas {
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
    probe.through_each(&installed, &admin).await;
    probe.stop.store(true, Ordering::Relaxed);
    running.await.unwrap();
    let failed = probe.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "failed writes across the renewals: {:?}",
        probe.errors.lock().unwrap()
    );
    assert!(probe.ok.load(Ordering::Relaxed) >= 60);
    let cut = probe.cut.lock().unwrap().clone();
    eprintln!(
        "probe writes through both webhooks (failurePolicy Fail): {} succeeded, {failed} failed; \
         {} dry-run writes failed right after the test cut connections{}",
        probe.ok.load(Ordering::Relaxed),
        cut.len(),
        cut.first().map(|e| format!(", e.g. {e}")).unwrap_or_default()
    );

    // On record: the leader's issues, every replica's swaps.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), NAMESPACE)
        .get("driftguard-leader")
        .await
        .unwrap();
    let leader = lease.spec.unwrap().holder_identity.unwrap();
    let leading = installed
        .replicas
        .iter()
        .find(|r| r.name == leader)
        .unwrap_or_else(|| panic!("the Lease names {leader}"));
    for needle in [
        "a new CA and serving certificate",
        "a new serving certificate",
        "a new CA (",
    ] {
        recv_until(&leading.audit, needle, |l| {
            l.contains("certificate.issued") && l.contains(needle)
        });
    }
    for replica in &installed.replicas {
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
    for replica in &installed.replicas {
        until("the replica serves from the new CA", || async {
            presented(replica.https, &fresh).await
        })
        .await;
    }

    // `kubectl replace -f manifests/install.yaml` (or an upgrade that rewrites the
    // configurations) puts back the rendered entries, which carry no caBundle: the API server
    // stores them so, and the leader, watching both configurations, injects the current CA
    // again.
    let current = secret_data(&secrets.get("driftguard-tls").await.unwrap())["ca.crt"].clone();
    let stored = reset_ca_bundles(&admin, &docs).await;
    assert_eq!(stored, vec![None; 4], "the replace took the caBundles out");
    until("the CA injected again after the reset", || async {
        let bundles = injected_bundles(&admin).await;
        (bundles.len() == 4 && bundles.iter().all(|b| b.as_deref() == Some(current.as_slice()))).then_some(())
    })
    .await;

    assert_rbac_allowed_every_request(&cluster, &installed.sa_kubeconfig);
    drop(repo);
}

/// What the real RBAC authorizer decided for every request driftguard's replicas made (as the
/// chart's service account, with its token), from the API server's audit log. A request the
/// chart does not grant, made as that account by the test, shows that the log records a
/// refusal.
fn assert_rbac_allowed_every_request(cluster: &Cluster, kubeconfig: &Path) {
    const CONTROL: &str = "driftguard-rbac-control";
    // An update (PUT) of a ConfigMap: the chart grants apply (patch, create), never update,
    // outside driftguard's own namespace.
    let body = cluster.scratch().join("control.json");
    let control = json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": CONTROL, "namespace": "kube-system"}});
    std::fs::write(&body, control.to_string()).unwrap();
    let out = cluster
        .kubectl_with(&cluster.bin("kubectl"), kubeconfig)
        .args([
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/kube-system/configmaps/{CONTROL}"),
            "-f",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let refused =
        |e: &Value| e["annotations"]["authorization.k8s.io/decision"] != "allow" || e["responseStatus"]["code"] == 403;
    // The control request is the last one: once it is on record, so is everything before it.
    let events = support::cluster::wait_for("the control request in the audit log", WAIT, || {
        let events: Vec<Value> = cluster
            .audit_events()
            .into_iter()
            .filter(|e| e["user"]["username"] == user.as_str())
            .collect();
        let control = events
            .iter()
            .any(|e| e["requestURI"].as_str().is_some_and(|u| u.contains(CONTROL)) && refused(e));
        control.then_some(events)
    });
    let events: Vec<&Value> = events
        .iter()
        .filter(|e| !e["requestURI"].as_str().is_some_and(|u| u.contains(CONTROL)))
        .collect();
    let mut forbidden: Vec<String> = events
        .iter()
        .filter(|e| refused(e))
        .map(|e| {
            format!(
                "{} {} -> {} {}",
                e["verb"].as_str().unwrap_or_default(),
                e["requestURI"].as_str().unwrap_or_default(),
                e["responseStatus"]["code"],
                e["annotations"]["authorization.k8s.io/reason"]
            )
        })
        .collect();
    forbidden.dedup();
    let verbs: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["verb"].as_str()).collect();
    eprintln!(
        "audit log: {} requests by {user}, verbs {verbs:?}, {} refused",
        events.len(),
        forbidden.len()
    );
    assert!(events.len() > 50, "driftguard made {} API requests", events.len());
    for verb in ["get", "list", "watch", "create", "update", "patch"] {
        assert!(verbs.contains(verb), "no {verb} request on record: {verbs:?}");
    }
    assert!(
        forbidden.is_empty(),
        "requests the chart's RBAC forbade:\n{}",
        forbidden.join("\n")
    );
}
