//! Admission webhooks called like kube-apiserver calls them: real HTTPS webhook servers on
//! 127.0.0.1 (axum + rustls, a CA generated per test) record the reviews they receive and
//! answer scripted responses, while `Dispatcher::admit` is driven with `Attributes`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use driftguard_testapi::UserInfo;
use driftguard_testapi::admission::{Attributes, Dispatcher, Gvk, Gvr, Operation, WebhookConfigs, selected_webhooks};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

// ---------------------------------------------------------------------------------------------
// Test PKI

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// `caBundle`: base64 of the PEM.
    fn bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.pem)
    }

    fn server_config(&self, names: &[&str]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
                .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted webhook servers

/// What a webhook answers to one review.
enum Reply {
    /// HTTP status and JSON body.
    Json(u16, Value),
    /// Never answer (until the test ends).
    Hang,
}

/// Answers a review sent to a path (without query).
type Script = Arc<dyn Fn(&str, &Value) -> Reply + Send + Sync>;

/// One request a webhook received.
#[derive(Debug, Clone)]
struct Received {
    /// Path and query.
    target: String,
    host: String,
    content_type: String,
    review: Value,
}

#[derive(Clone)]
struct HookState {
    received: Arc<Mutex<Vec<Received>>>,
    script: Script,
}

struct Hook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Paths (without query) of the calls received, in order.
    fn paths(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|r| r.target.split('?').next().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn answer(State(state): State<HookState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.received.lock().unwrap().push(Received {
        target: uri.path_and_query().map(ToString::to_string).unwrap_or_default(),
        host: header("host"),
        content_type: header("content-type"),
        review: review.clone(),
    });
    match (state.script)(uri.path(), &review) {
        Reply::Json(status, body) => (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// An HTTPS webhook server on 127.0.0.1 presenting a certificate for `names` issued by `ca`.
async fn serve(ca: &Ca, names: &[&str], script: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let state = HookState {
        received: received.clone(),
        script: Arc::new(script),
    };
    let app = Router::new().fallback(answer).with_state(state);
    let acceptor = TlsAcceptor::from(Arc::new(ca.server_config(names)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Hook { addr, received }
}

/// The AdmissionReview answer echoing the request uid, with `fields` merged into `response`.
fn respond(review: &Value, fields: Value) -> Reply {
    let mut response = json!({ "uid": review["request"]["uid"], "allowed": true });
    if let (Some(response), Some(fields)) = (response.as_object_mut(), fields.as_object()) {
        response.extend(fields.clone());
    }
    Reply::Json(
        200,
        json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response }),
    )
}

fn allow(_path: &str, review: &Value) -> Reply {
    respond(review, json!({}))
}

fn patch_of(ops: Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Configurations and requests

/// A webhook entry calling `url` trusted through `ca`, with `extra` fields merged over sane
/// defaults (every resource and subresource, every operation, sideEffects None, failurePolicy
/// Fail).
fn entry(name: &str, url: &str, ca: &Ca, extra: Value) -> Value {
    let mut hook = json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": { "url": url, "caBundle": ca.bundle() },
        "rules": [{ "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "operations": ["*"] }],
        "sideEffects": "None",
        "failurePolicy": "Fail",
    });
    if let (Some(hook), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        hook.extend(extra.clone());
    }
    hook
}

fn configuration(kind: &str, name: &str, webhooks: Vec<Value>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": { "name": name },
        "webhooks": webhooks,
    })
}

fn validating(webhooks: Vec<Value>) -> WebhookConfigs {
    WebhookConfigs {
        mutating: Vec::new(),
        validating: vec![configuration("ValidatingWebhookConfiguration", "tests", webhooks)],
    }
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: name.to_owned(),
        uid: format!("uid-of-{name}"),
        groups: vec!["system:authenticated".to_owned()],
    }
}

fn deployment(labels: Value, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "shop", "labels": labels },
        "spec": { "replicas": replicas },
    })
}

fn managed() -> Value {
    json!({ "app": "web", "driftguard.io/managed": "true" })
}

fn deployment_update(old_labels: Value, new_labels: Value) -> Attributes {
    Attributes {
        kind: Gvk {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
        },
        resource: Gvr {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
        },
        sub_resource: None,
        name: "web".into(),
        namespace: Some("shop".into()),
        operation: Operation::Update,
        user: user("alice"),
        object: Some(deployment(new_labels, 5)),
        old_object: Some(deployment(old_labels, 3)),
        dry_run: false,
        options: Some(
            json!({ "kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-edit" }),
        ),
    }
}

fn scale(replicas: u64) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": { "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7" },
        "spec": { "replicas": replicas },
        "status": { "replicas": 3, "selector": "app=web" },
    })
}

fn scale_update() -> Attributes {
    Attributes {
        kind: Gvk {
            group: "autoscaling".into(),
            version: "v1".into(),
            kind: "Scale".into(),
        },
        sub_resource: Some("scale".into()),
        object: Some(scale(5)),
        old_object: Some(scale(3)),
        options: Some(
            json!({ "kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-scale" }),
        ),
        ..deployment_update(managed(), managed())
    }
}

fn namespace_labels(name: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        name.to_owned(),
    )]))
}

fn shop() -> Option<BTreeMap<String, String>> {
    namespace_labels("shop")
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// The review

#[tokio::test]
async fn the_review_carries_every_field_kube_sends() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let configs = validating(vec![entry("check.example.com", &hook.url("/check"), &ca, json!({}))]);
    let dispatcher = Dispatcher::new();

    let outcome = dispatcher.admit(&configs, scale_update(), shop()).await.unwrap();
    assert_eq!(outcome.object, Some(scale(5)));

    let received = hook.received();
    assert_eq!(received.len(), 1);
    let call = &received[0];
    assert_eq!(
        call.target, "/check?timeout=10s",
        "kube sends the deadline as ?timeout="
    );
    assert_eq!(call.host, format!("127.0.0.1:{}", hook.addr.port()));
    assert_eq!(call.content_type, "application/json");
    let review = &call.review;
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let request = &review["request"];
    let uid = request["uid"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(uid).is_ok(), "uid {uid} is a uuid");
    assert_eq!(
        request,
        &json!({
            "uid": uid,
            "kind": { "group": "autoscaling", "version": "v1", "kind": "Scale" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "subResource": "scale",
            "requestKind": { "group": "autoscaling", "version": "v1", "kind": "Scale" },
            "requestResource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "requestSubResource": "scale",
            "name": "web",
            "namespace": "shop",
            "operation": "UPDATE",
            "userInfo": { "username": "alice", "uid": "uid-of-alice", "groups": ["system:authenticated"] },
            "object": scale(5),
            "oldObject": scale(3),
            "dryRun": false,
            "options": { "kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-scale" },
        })
    );

    // A CREATE of a cluster-scoped object: no namespace, no subresource, oldObject null.
    let mut create = deployment_update(json!({}), json!({}));
    create.operation = Operation::Create;
    create.old_object = None;
    create.namespace = None;
    create.options = None;
    dispatcher.admit(&configs, create, None).await.unwrap();
    let request = &hook.received()[1].review["request"];
    assert_eq!(request["oldObject"], Value::Null);
    assert_eq!(request["options"], Value::Null);
    assert_eq!(request["operation"], "CREATE");
    for omitted in ["namespace", "subResource", "requestSubResource"] {
        assert!(
            request.get(omitted).is_none(),
            "{omitted} is omitted when empty, as Go's omitempty does"
        );
    }
    assert_ne!(request["uid"], uid, "every call has its own uid");
}

// ---------------------------------------------------------------------------------------------
// Matching

#[tokio::test]
async fn star_matches_resources_but_not_subresources_and_star_scale_only_scale() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let rules = |resources: Value| json!({ "rules": [{ "apiGroups": ["*"], "apiVersions": ["*"], "resources": resources, "operations": ["UPDATE"] }] });
    let configs = validating(vec![
        entry("star.example.com", &hook.url("/star"), &ca, rules(json!(["*"]))),
        entry(
            "star-scale.example.com",
            &hook.url("/star-scale"),
            &ca,
            rules(json!(["*/scale"])),
        ),
        entry(
            "deployments-scale.example.com",
            &hook.url("/deployments-scale"),
            &ca,
            rules(json!(["deployments/scale"])),
        ),
        entry(
            "star-star.example.com",
            &hook.url("/star-star"),
            &ca,
            rules(json!(["*/*"])),
        ),
        entry(
            "statefulsets-scale.example.com",
            &hook.url("/statefulsets-scale"),
            &ca,
            rules(json!(["statefulsets/scale"])),
        ),
    ]);
    let dispatcher = Dispatcher::new();

    dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    let mut paths = hook.paths();
    paths.sort();
    assert_eq!(paths, ["/star", "/star-star"]);

    hook.received.lock().unwrap().clear();
    dispatcher.admit(&configs, scale_update(), shop()).await.unwrap();
    let mut paths = hook.paths();
    paths.sort();
    assert_eq!(paths, ["/deployments-scale", "/star-scale", "/star-star"]);
}

#[tokio::test]
async fn object_selector_never_matches_a_scale_and_takes_old_or_new_labels() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let selected = json!({ "objectSelector": { "matchLabels": { "driftguard.io/managed": "true" } } });
    let configs = validating(vec![entry("managed.example.com", &hook.url("/managed"), &ca, selected)]);
    let dispatcher = Dispatcher::new();
    let calls_for = |attributes: Attributes| {
        let (dispatcher, configs, hook) = (&dispatcher, &configs, &hook);
        async move {
            let before = hook.received().len();
            dispatcher.admit(configs, attributes, shop()).await.unwrap();
            hook.received().len() - before
        }
    };

    assert_eq!(calls_for(scale_update()).await, 0, "a Scale has no labels");
    assert_eq!(calls_for(deployment_update(managed(), managed())).await, 1);
    assert_eq!(
        calls_for(deployment_update(managed(), json!({"app": "web"}))).await,
        1,
        "old labels match"
    );
    assert_eq!(
        calls_for(deployment_update(json!({"app": "web"}), managed())).await,
        1,
        "new labels match"
    );
    assert_eq!(calls_for(deployment_update(json!({}), json!({"app": "web"}))).await, 0);
    let mut delete = deployment_update(managed(), managed());
    delete.operation = Operation::Delete;
    delete.object = None;
    assert_eq!(calls_for(delete).await, 1, "DELETE is judged by the old object");
}

#[tokio::test]
async fn namespace_selector_uses_the_namespaces_labels_and_a_namespaces_own() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let selector = json!({ "namespaceSelector": { "matchExpressions": [
        { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"] }
    ] } });
    let configs = validating(vec![entry("ns.example.com", &hook.url("/ns"), &ca, selector)]);
    let dispatcher = Dispatcher::new();

    let mut in_kube_system = deployment_update(managed(), managed());
    in_kube_system.namespace = Some("kube-system".into());
    dispatcher
        .admit(&configs, in_kube_system, namespace_labels("kube-system"))
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 0);

    dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 1);

    let mut cluster_role = deployment_update(json!({}), json!({}));
    cluster_role.kind = Gvk {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        kind: "ClusterRole".into(),
    };
    cluster_role.resource = Gvr {
        group: "rbac.authorization.k8s.io".into(),
        version: "v1".into(),
        resource: "clusterroles".into(),
    };
    cluster_role.namespace = None;
    dispatcher.admit(&configs, cluster_role, None).await.unwrap();
    assert_eq!(hook.received().len(), 2, "cluster-scoped objects always match");

    let namespace = |name: &str| json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } } });
    let mut namespace_update = deployment_update(json!({}), json!({}));
    namespace_update.kind = Gvk {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
    };
    namespace_update.resource = Gvr {
        group: String::new(),
        version: "v1".into(),
        resource: "namespaces".into(),
    };
    namespace_update.name = "kube-system".into();
    namespace_update.namespace = Some("kube-system".into());
    namespace_update.object = Some(namespace("kube-system"));
    namespace_update.old_object = Some(namespace("kube-system"));
    dispatcher
        .admit(&configs, namespace_update.clone(), None)
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 2, "a Namespace is judged by its own labels");
    namespace_update.name = "shop".into();
    namespace_update.namespace = Some("shop".into());
    namespace_update.object = Some(namespace("shop"));
    dispatcher.admit(&configs, namespace_update, None).await.unwrap();
    assert_eq!(hook.received().len(), 3);

    let error = dispatcher
        .admit(&configs, deployment_update(managed(), managed()), None)
        .await
        .unwrap_err();
    assert_eq!(
        (error.code, error.message.as_str()),
        (404, "namespaces \"shop\" not found")
    );
}

#[tokio::test]
async fn match_conditions_skip_driftguards_own_service_account() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let conditions = json!({ "matchConditions": [
        { "name": "not-driftguard", "expression": "request.userInfo.username != 'system:serviceaccount:driftguard:driftguard'" },
        { "name": "deployments-only", "expression": "request.kind.kind == 'Deployment' || has(request.subResource)" },
    ] });
    let configs = validating(vec![entry("cond.example.com", &hook.url("/cond"), &ca, conditions)]);
    let dispatcher = Dispatcher::new();

    let mut by_driftguard = deployment_update(managed(), managed());
    by_driftguard.user = user("system:serviceaccount:driftguard:driftguard");
    dispatcher.admit(&configs, by_driftguard, shop()).await.unwrap();
    assert_eq!(hook.received().len(), 0, "driftguard's own writes are skipped");

    dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    dispatcher.admit(&configs, scale_update(), shop()).await.unwrap();
    assert_eq!(hook.received().len(), 2);

    // An expression that fails to evaluate: Fail rejects with kube's Forbidden, Ignore skips.
    let broken = |policy: &str| {
        json!({ "failurePolicy": policy, "matchConditions": [
            { "name": "annotated", "expression": "object.metadata.annotations['x'] == 'y'" }
        ] })
    };
    let failing = validating(vec![entry(
        "broken.example.com",
        &hook.url("/broken"),
        &ca,
        broken("Fail"),
    )]);
    let error = dispatcher
        .admit(&failing, deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        error.message,
        "deployments.apps \"web\" is forbidden: expression 'object.metadata.annotations['x'] == 'y'' resulted in error: no such key: annotations"
    );
    let ignoring = validating(vec![entry(
        "broken.example.com",
        &hook.url("/broken"),
        &ca,
        broken("Ignore"),
    )]);
    dispatcher
        .admit(&ignoring, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 2, "neither policy calls the webhook");
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn failure_policy_decides_on_a_dead_webhook() {
    let ca = Ca::new("webhook-ca");
    let port = closed_port().await;
    let url = format!("https://127.0.0.1:{port}/dead");
    let dispatcher = Dispatcher::new();

    let failing = validating(vec![entry("dead.example.com", &url, &ca, json!({}))]);
    let error = dispatcher
        .admit(&failing, deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (500, "InternalError"));
    assert_eq!(
        error.message,
        format!(
            "Internal error occurred: failed calling webhook \"dead.example.com\": failed to call webhook: \
             Post \"https://127.0.0.1:{port}/dead?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );

    let ignoring = validating(vec![entry(
        "dead.example.com",
        &url,
        &ca,
        json!({ "failurePolicy": "Ignore" }),
    )]);
    let outcome = dispatcher
        .admit(&ignoring, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(outcome.object, Some(deployment(managed(), 5)));
    assert_eq!(
        outcome
            .audit_annotations
            .get("failed-open.validating.webhook.admission.k8s.io/round_0_index_0"),
        Some(&"dead.example.com".to_owned())
    );
}

#[tokio::test]
async fn failure_policy_decides_on_a_webhook_slower_than_its_timeout() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], |_, _| Reply::Hang).await;
    let dispatcher = Dispatcher::new();
    let slow = |policy: &str| {
        validating(vec![entry(
            "slow.example.com",
            &hook.url("/slow"),
            &ca,
            json!({ "timeoutSeconds": 1, "failurePolicy": policy }),
        )])
    };

    let started = Instant::now();
    let error = dispatcher
        .admit(&slow("Fail"), deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the 1s timeout cut the 600s hang short"
    );
    assert_eq!(error.code, 500);
    assert_eq!(
        error.message,
        format!(
            "Internal error occurred: failed calling webhook \"slow.example.com\": failed to call webhook: \
             Post \"https://127.0.0.1:{}/slow?timeout=1s\": context deadline exceeded",
            hook.addr.port()
        )
    );
    assert_eq!(hook.received()[0].target, "/slow?timeout=1s");

    let outcome = dispatcher
        .admit(&slow("Ignore"), deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(outcome.object, Some(deployment(managed(), 5)));
    assert_eq!(hook.received().len(), 2);
}

#[tokio::test]
async fn only_the_ca_bundle_is_trusted() {
    let webhook_ca = Ca::new("webhook-ca");
    let other_ca = Ca::new("someone-else");
    let hook = serve(&webhook_ca, &["127.0.0.1"], allow).await;
    let dispatcher = Dispatcher::new();

    let wrong = validating(vec![entry("tls.example.com", &hook.url("/tls"), &other_ca, json!({}))]);
    let error = dispatcher
        .admit(&wrong, deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert_eq!(error.code, 500);
    assert!(
        error
            .message
            .ends_with("tls: failed to verify certificate: x509: certificate signed by unknown authority"),
        "{}",
        error.message
    );

    let mut without_bundle = entry("tls.example.com", &hook.url("/tls"), &webhook_ca, json!({}));
    without_bundle["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    let error = dispatcher
        .admit(
            &validating(vec![without_bundle]),
            deployment_update(managed(), managed()),
            shop(),
        )
        .await
        .unwrap_err();
    assert!(
        error.message.contains("certificate signed by unknown authority"),
        "{}",
        error.message
    );
    assert!(hook.received().is_empty(), "no request passed an unverified handshake");

    let right = validating(vec![entry(
        "tls.example.com",
        &hook.url("/tls"),
        &webhook_ca,
        json!({}),
    )]);
    dispatcher
        .admit(&right, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 1);
}

#[tokio::test]
async fn broken_answers_are_call_failures() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], |path, review| match review["request"]["name"].as_str() {
        Some("status-500") => Reply::Json(500, json!({ "oops": true })),
        Some("wrong-uid") => Reply::Json(
            200,
            json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": { "uid": "nope", "allowed": true } }),
        ),
        Some("not-a-review") => Reply::Json(200, json!({ "hello": "world" })),
        _ => allow(path, review),
    })
    .await;
    let configs = validating(vec![entry("broken.example.com", &hook.url("/b"), &ca, json!({}))]);
    let dispatcher = Dispatcher::new();
    let named = |name: &str| {
        let mut attributes = deployment_update(managed(), managed());
        attributes.name = name.to_owned();
        attributes
    };
    let prefix = "Internal error occurred: failed calling webhook \"broken.example.com\": ";

    let error = dispatcher
        .admit(&configs, named("status-500"), shop())
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        format!(
            "{prefix}failed to call webhook: an error on the server (\"unknown\") has prevented the request from succeeding"
        )
    );
    let error = dispatcher
        .admit(&configs, named("wrong-uid"), shop())
        .await
        .unwrap_err();
    assert!(
        error.message.starts_with(&format!(
            "{prefix}received invalid webhook response: expected response.uid="
        )),
        "{}",
        error.message
    );
    let error = dispatcher
        .admit(&configs, named("not-a-review"), shop())
        .await
        .unwrap_err();
    assert!(
        error.message.starts_with(&format!("{prefix}failed to call webhook: ")),
        "{}",
        error.message
    );
    dispatcher.admit(&configs, named("fine"), shop()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Mutation, reinvocation, denial, warnings

#[tokio::test]
async fn mutating_patches_apply_in_order_and_reach_later_webhooks() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], |path, review| {
        let stamped = review["request"]["object"]["metadata"]["labels"]
            .get("stamped")
            .is_some();
        match (path, stamped) {
            // The second webhook relies on the first one's label, so it must see it.
            ("/second", true) => respond(
                review,
                json!({
                    "patchType": "JSONPatch",
                    "patch": patch_of(json!([{ "op": "replace", "path": "/spec/replicas", "value": 2 }])),
                    "warnings": ["second: replicas pinned to 2"],
                    "auditAnnotations": { "pinned": "2" },
                }),
            ),
            ("/validate", true) => respond(review, json!({ "warnings": ["validator: looks fine"] })),
            ("/first", false) => respond(
                review,
                json!({
                    "patchType": "JSONPatch",
                    "patch": patch_of(json!([{ "op": "add", "path": "/metadata/labels/stamped", "value": "yes" }])),
                    "warnings": ["first: stamped"],
                    "auditAnnotations": { "stamp": "yes" },
                }),
            ),
            _ => respond(
                review,
                json!({ "allowed": false, "status": { "message": format!("{path} saw the wrong object") } }),
            ),
        }
    })
    .await;
    let configs = WebhookConfigs {
        // Listed out of order: configurations run sorted by name.
        mutating: vec![
            configuration(
                "MutatingWebhookConfiguration",
                "b-second",
                vec![entry("second.example.com", &hook.url("/second"), &ca, json!({}))],
            ),
            configuration(
                "MutatingWebhookConfiguration",
                "a-first",
                vec![entry("first.example.com", &hook.url("/first"), &ca, json!({}))],
            ),
        ],
        validating: vec![configuration(
            "ValidatingWebhookConfiguration",
            "v",
            vec![entry("validator.example.com", &hook.url("/validate"), &ca, json!({}))],
        )],
    };
    let outcome = Dispatcher::new()
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();

    assert_eq!(hook.paths(), ["/first", "/second", "/validate"]);
    let mut expected = deployment(managed(), 2);
    expected["metadata"]["labels"]["stamped"] = json!("yes");
    assert_eq!(outcome.object, Some(expected.clone()));
    assert_eq!(
        hook.received()[2].review["request"]["object"],
        expected,
        "validation sees the final object"
    );
    assert_eq!(
        outcome.warnings,
        [
            "first: stamped",
            "second: replicas pinned to 2",
            "validator: looks fine"
        ]
    );
    assert_eq!(
        outcome.audit_annotations.get("first.example.com/stamp"),
        Some(&"yes".to_owned())
    );
    assert_eq!(
        outcome.audit_annotations.get("second.example.com/pinned"),
        Some(&"2".to_owned())
    );
    let mutation: Value =
        serde_json::from_str(&outcome.audit_annotations["mutation.webhook.admission.k8s.io/round_0_index_0"]).unwrap();
    assert_eq!(
        mutation,
        json!({ "configuration": "a-first", "webhook": "first.example.com", "mutated": true })
    );
    let patch: Value =
        serde_json::from_str(&outcome.audit_annotations["patch.webhook.admission.k8s.io/round_0_index_1"]).unwrap();
    assert_eq!(
        patch,
        json!({ "configuration": "b-second", "webhook": "second.example.com", "patchType": "JSONPatch",
                "patch": [{ "op": "replace", "path": "/spec/replicas", "value": 2 }] })
    );
}

#[tokio::test]
async fn a_patch_on_a_scale_edits_the_scale_and_delete_cannot_be_patched() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], |_, review| {
        respond(
            review,
            json!({
                "patchType": "JSONPatch",
                "patch": patch_of(json!([{ "op": "replace", "path": "/spec/replicas", "value": 3 }])),
                "warnings": ["replicas are managed in Git"],
            }),
        )
    })
    .await;
    let configs = WebhookConfigs {
        mutating: vec![configuration(
            "MutatingWebhookConfiguration",
            "revert",
            vec![entry("revert.example.com", &hook.url("/mutate"), &ca, json!({}))],
        )],
        validating: Vec::new(),
    };
    let dispatcher = Dispatcher::new();
    let outcome = dispatcher.admit(&configs, scale_update(), shop()).await.unwrap();
    assert_eq!(outcome.object, Some(scale(3)));
    assert_eq!(outcome.warnings, ["replicas are managed in Git"]);

    let mut delete = deployment_update(managed(), managed());
    delete.operation = Operation::Delete;
    delete.object = None;
    let verdict = dispatcher.verdict(&configs, delete, shop()).await;
    let error = verdict.result.unwrap_err();
    assert_eq!(
        (error.code, error.message.as_str()),
        (
            500,
            "Internal error occurred: admission webhook \"revert.example.com\" attempted to modify the object, which is not supported for this operation"
        )
    );
    assert_eq!(
        verdict.warnings,
        ["replicas are managed in Git"],
        "warnings travel with the error"
    );
}

#[tokio::test]
async fn if_needed_webhooks_are_reinvoked_once_after_a_later_change() {
    let ca = Ca::new("webhook-ca");
    // /early answers without a patch; /late adds a label unless it is there already.
    let hook = serve(&ca, &["127.0.0.1"], |path, review| {
        let labelled = review["request"]["object"]["metadata"]["labels"].get("late").is_some();
        if path == "/late" && !labelled {
            return respond(
                review,
                json!({ "patchType": "JSONPatch", "patch": patch_of(json!([{ "op": "add", "path": "/metadata/labels/late", "value": "1" }])) }),
            );
        }
        allow(path, review)
    })
    .await;
    let configs = |late_patches: bool| WebhookConfigs {
        mutating: vec![
            configuration(
                "MutatingWebhookConfiguration",
                "a",
                vec![
                    entry(
                        "early-if-needed.example.com",
                        &hook.url("/early-if-needed"),
                        &ca,
                        json!({ "reinvocationPolicy": "IfNeeded" }),
                    ),
                    entry(
                        "early-never.example.com",
                        &hook.url("/early-never"),
                        &ca,
                        json!({ "reinvocationPolicy": "Never" }),
                    ),
                ],
            ),
            configuration(
                "MutatingWebhookConfiguration",
                "b",
                vec![entry(
                    "late.example.com",
                    &hook.url("/late"),
                    &ca,
                    json!({ "reinvocationPolicy": "IfNeeded", "rules": [{
                        "apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"],
                        "resources": [if late_patches { "deployments" } else { "nothing" }],
                    }] }),
                )],
            ),
        ],
        validating: Vec::new(),
    };
    let attributes = deployment_update(managed(), managed());
    let dispatcher = Dispatcher::new();

    let outcome = dispatcher
        .admit(&configs(true), attributes.clone(), shop())
        .await
        .unwrap();
    assert_eq!(
        hook.paths(),
        ["/early-if-needed", "/early-never", "/late", "/early-if-needed"],
        "only the IfNeeded webhook before the change runs again, once; the changer itself does not"
    );
    assert_eq!(outcome.object.unwrap()["metadata"]["labels"]["late"], "1");
    let reinvoked: Value =
        serde_json::from_str(&outcome.audit_annotations["mutation.webhook.admission.k8s.io/round_1_index_0"]).unwrap();
    assert_eq!(reinvoked["webhook"], "early-if-needed.example.com");

    hook.received.lock().unwrap().clear();
    dispatcher.admit(&configs(false), attributes, shop()).await.unwrap();
    assert_eq!(
        hook.paths(),
        ["/early-if-needed", "/early-never"],
        "no change, no reinvocation"
    );
}

#[tokio::test]
async fn denials_read_like_kube() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], |_, review| {
        match review["request"]["name"].as_str() {
            Some("forbidden") => respond(
                review,
                json!({ "allowed": false, "warnings": ["spec.replicas: Git says 3"],
                    "status": { "code": 403, "reason": "Forbidden", "message": "spec.replicas is managed by Git" } }),
            ),
            Some("invalid") => respond(
                review,
                json!({ "allowed": false, "status": { "code": 422, "reason": "Invalid" } }),
            ),
            _ => respond(review, json!({ "allowed": false })),
        }
    })
    .await;
    let configs = validating(vec![entry("deny.example.com", &hook.url("/deny"), &ca, json!({}))]);
    let dispatcher = Dispatcher::new();
    let named = |name: &str| {
        let mut attributes = deployment_update(managed(), managed());
        attributes.name = name.to_owned();
        attributes
    };

    let verdict = dispatcher.verdict(&configs, named("forbidden"), shop()).await;
    let error = verdict.result.unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        error.message,
        "admission webhook \"deny.example.com\" denied the request: spec.replicas is managed by Git"
    );
    assert_eq!(verdict.warnings, ["spec.replicas: Git says 3"]);
    assert_eq!(error.status()["code"], 403);
    // `admit` hands the same warnings out with the error, for the Warning headers.
    let error = dispatcher
        .admit(&configs, named("forbidden"), shop())
        .await
        .unwrap_err();
    assert_eq!(error.warnings, ["spec.replicas: Git says 3"]);

    let error = dispatcher.admit(&configs, named("invalid"), shop()).await.unwrap_err();
    assert_eq!(
        (error.code, error.reason.as_str(), error.message.as_str()),
        (
            422,
            "Invalid",
            "admission webhook \"deny.example.com\" denied the request: Invalid"
        )
    );

    let error = dispatcher.admit(&configs, named("silent"), shop()).await.unwrap_err();
    assert_eq!(
        (error.code, error.reason.as_str(), error.message.as_str()),
        (
            400,
            "",
            "admission webhook \"deny.example.com\" denied the request without explanation"
        )
    );
}

#[tokio::test]
async fn dry_run_needs_side_effects_none() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["127.0.0.1"], allow).await;
    let with = |side_effects: &str| {
        validating(vec![entry(
            "effects.example.com",
            &hook.url("/effects"),
            &ca,
            json!({ "sideEffects": side_effects, "failurePolicy": "Ignore" }),
        )])
    };
    let mut dry_run = deployment_update(managed(), managed());
    dry_run.dry_run = true;
    let dispatcher = Dispatcher::new();

    let error = dispatcher
        .admit(&with("Unknown"), dry_run.clone(), shop())
        .await
        .unwrap_err();
    assert_eq!(
        (error.code, error.reason.as_str(), error.message.as_str()),
        (
            400,
            "BadRequest",
            "admission webhook \"effects.example.com\" does not support dry run"
        ),
        "rejected whatever the failurePolicy"
    );
    assert!(hook.received().is_empty());

    dispatcher.admit(&with("NoneOnDryRun"), dry_run, shop()).await.unwrap();
    assert_eq!(hook.received()[0].review["request"]["dryRun"], true);
    dispatcher
        .admit(&with("Unknown"), deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    assert_eq!(hook.received().len(), 2, "without dry run sideEffects does not matter");
}

#[tokio::test]
async fn services_are_called_by_their_cluster_dns_name_at_the_mapped_address() {
    let ca = Ca::new("webhook-ca");
    let hook = serve(&ca, &["hook.webhooks.svc"], allow).await;
    let service_entry = json!({
        "name": "svc.example.com",
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": { "namespace": "webhooks", "name": "hook", "path": "/admit", "port": 8443 },
            "caBundle": ca.bundle(),
        },
        "rules": [{ "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"] }],
        "sideEffects": "None",
        "timeoutSeconds": 5,
    });
    let configs = validating(vec![service_entry]);
    let dispatcher = Dispatcher::new();

    let error = dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert_eq!(
        error.message,
        "Internal error occurred: failed calling webhook \"svc.example.com\": failed to call webhook: \
         Post \"https://hook.webhooks.svc:8443/admit?timeout=5s\": service \"hook\" not found"
    );

    dispatcher.map_service("webhooks", "hook", &hook.base());
    dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap();
    let received = hook.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].target, "/admit?timeout=5s");
    assert_eq!(received[0].host, "hook.webhooks.svc:8443");

    // The certificate must name the service, as in a cluster.
    let localhost_only = serve(&ca, &["127.0.0.1"], allow).await;
    dispatcher.map_service("webhooks", "hook", &localhost_only.base());
    let error = dispatcher
        .admit(&configs, deployment_update(managed(), managed()), shop())
        .await
        .unwrap_err();
    assert!(
        error.message.ends_with(
            "tls: failed to verify certificate: x509: certificate is valid for 127.0.0.1, not hook.webhooks.svc"
        ),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn webhook_configurations_themselves_are_never_sent_to_webhooks() {
    let ca = Ca::new("webhook-ca");
    let port = closed_port().await;
    let configs = validating(vec![entry(
        "dead.example.com",
        &format!("https://127.0.0.1:{port}/"),
        &ca,
        json!({}),
    )]);
    let mut attributes = deployment_update(json!({}), json!({}));
    attributes.kind = Gvk {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        kind: "ValidatingWebhookConfiguration".into(),
    };
    attributes.resource = Gvr {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        resource: "validatingwebhookconfigurations".into(),
    };
    attributes.namespace = None;
    Dispatcher::new().admit(&configs, attributes, None).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// driftguard's manifests/webhooks.yaml

fn driftguard_manifests() -> WebhookConfigs {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../manifests/webhooks.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut configs = WebhookConfigs::default();
    for document in documents {
        match document["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => configs.mutating.push(document),
            Some("ValidatingWebhookConfiguration") => configs.validating.push(document),
            other => panic!("unexpected document kind {other:?}"),
        }
    }
    configs
}

#[test]
fn the_manifest_registers_the_four_entries_of_design_section_5() {
    let configs = driftguard_manifests();
    assert_eq!((configs.mutating.len(), configs.validating.len()), (1, 1));
    let all: Vec<(&str, &Value)> = configs
        .mutating
        .iter()
        .chain(&configs.validating)
        .flat_map(|c| {
            assert_eq!(c["apiVersion"], "admissionregistration.k8s.io/v1");
            assert_eq!(c["metadata"]["name"], "driftguard");
            let kind = c["kind"].as_str().unwrap();
            c["webhooks"].as_array().unwrap().iter().map(move |w| (kind, w))
        })
        .collect();
    let names: Vec<&str> = all.iter().map(|(_, w)| w["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "revert.driftguard.io",
            "revert-scale.driftguard.io",
            "validate.driftguard.io",
            "validate-scale.driftguard.io"
        ]
    );
    for (kind, webhook) in &all {
        let name = webhook["name"].as_str().unwrap();
        let scale = name.contains("-scale.");
        let path = if *kind == "MutatingWebhookConfiguration" {
            "/mutate"
        } else {
            "/validate"
        };
        assert_eq!(
            webhook["clientConfig"],
            json!({ "service": { "namespace": "driftguard", "name": "driftguard", "path": path, "port": 443 } }),
            "{name}: service only, caBundle injected at install"
        );
        assert_eq!(webhook["sideEffects"], "None", "{name}");
        assert_eq!(webhook["timeoutSeconds"], 3, "{name}");
        assert_eq!(webhook["matchPolicy"], "Equivalent", "{name}");
        assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]), "{name}");
        assert_eq!(webhook["failurePolicy"], "Ignore", "{name}");
        let rules = &webhook["rules"];
        if scale {
            assert_eq!(rules[0]["resources"], json!(["*/scale"]), "{name}");
            assert_eq!(rules[0]["operations"], json!(["UPDATE"]), "{name}");
            assert!(webhook.get("objectSelector").is_none(), "{name}: a Scale has no labels");
        } else {
            assert_eq!(rules[0]["resources"], json!(["*"]), "{name}");
            assert_eq!(rules[0]["operations"], json!(["CREATE", "UPDATE", "DELETE"]), "{name}");
            assert_eq!(
                webhook["objectSelector"],
                json!({ "matchLabels": { "driftguard.io/managed": "true" } }),
                "{name}"
            );
        }
        if *kind == "MutatingWebhookConfiguration" {
            assert!(
                matches!(webhook["reinvocationPolicy"].as_str(), Some("Never" | "IfNeeded")),
                "{name}"
            );
        }
    }
}

#[test]
fn the_manifest_entries_match_what_design_section_5_says() {
    let configs = driftguard_manifests();
    let select = |attributes: &Attributes, namespace: &str| {
        let labels = if attributes.namespace.is_some() {
            namespace_labels(namespace)
        } else {
            None
        };
        selected_webhooks(&configs, attributes, labels.as_ref()).unwrap()
    };

    let update = deployment_update(managed(), managed());
    assert_eq!(
        select(&update, "shop"),
        ["revert.driftguard.io", "validate.driftguard.io"]
    );
    let mut create = update.clone();
    create.operation = Operation::Create;
    create.old_object = None;
    assert_eq!(
        select(&create, "shop"),
        ["revert.driftguard.io", "validate.driftguard.io"]
    );
    let mut delete = update.clone();
    delete.operation = Operation::Delete;
    delete.object = None;
    assert_eq!(
        select(&delete, "shop"),
        ["revert.driftguard.io", "validate.driftguard.io"]
    );

    assert_eq!(
        select(&scale_update(), "shop"),
        ["revert-scale.driftguard.io", "validate-scale.driftguard.io"],
        "a Scale matches only the *-scale entries"
    );
    let mut status = update.clone();
    status.sub_resource = Some("status".into());
    assert!(
        select(&status, "shop").is_empty(),
        "status updates are nobody's business"
    );

    let unmanaged = deployment_update(json!({ "app": "web" }), json!({ "app": "web" }));
    assert!(select(&unmanaged, "shop").is_empty());

    for excluded in ["kube-system", "kube-node-lease", "driftguard"] {
        let mut there = update.clone();
        there.namespace = Some(excluded.into());
        assert!(select(&there, excluded).is_empty(), "{excluded} is excluded");
        let mut scale_there = scale_update();
        scale_there.namespace = Some(excluded.into());
        assert!(
            select(&scale_there, excluded).is_empty(),
            "{excluded} is excluded for scale too"
        );
    }

    let mut by_driftguard = update.clone();
    by_driftguard.user = user("system:serviceaccount:driftguard:driftguard");
    assert!(
        select(&by_driftguard, "shop").is_empty(),
        "driftguard's own service account is skipped"
    );
    let mut scale_by_driftguard = scale_update();
    scale_by_driftguard.user = by_driftguard.user.clone();
    assert!(select(&scale_by_driftguard, "shop").is_empty());

    let mut by_hpa = scale_update();
    by_hpa.user = user("system:serviceaccount:kube-system:horizontal-pod-autoscaler");
    assert_eq!(
        select(&by_hpa, "shop"),
        ["revert-scale.driftguard.io", "validate-scale.driftguard.io"],
        "the HPA exemption is driftguard's decision, not the registration's"
    );
}

#[tokio::test]
async fn the_manifest_calls_driftguards_service_paths() {
    let ca = Ca::new("driftguard-ca");
    let hook = serve(&ca, &["driftguard.driftguard.svc"], allow).await;
    let mut configs = driftguard_manifests();
    for configuration in configs.mutating.iter_mut().chain(configs.validating.iter_mut()) {
        for webhook in configuration["webhooks"].as_array_mut().unwrap() {
            webhook["clientConfig"]["caBundle"] = json!(ca.bundle());
        }
    }
    let dispatcher = Dispatcher::new();
    dispatcher.map_service("driftguard", "driftguard", &hook.base());

    dispatcher.admit(&configs, scale_update(), shop()).await.unwrap();
    let received = hook.received();
    let targets: Vec<&str> = received.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/mutate?timeout=3s", "/validate?timeout=3s"]);
    assert!(received.iter().all(|r| r.host == "driftguard.driftguard.svc:443"));
    assert_eq!(received[0].review["request"]["subResource"], "scale");
}
