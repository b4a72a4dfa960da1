//! Conformance of the test API server's core over real HTTPS (a client trusting only the
//! server's CA), and a smoke test with the real `/usr/bin/kubectl`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use driftguard_testapi::faults::{Failure, Verb};
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Every wait polls its condition until this deadline.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// An HTTPS client trusting only the server's CA.

struct Client {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    token: Option<String>,
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

impl Client {
    fn new(server: &TestApiServer, identity: Option<Identity>) -> Self {
        let addr = server.url().trim_start_matches("https://").parse().unwrap();
        Client {
            addr,
            config: client_config(server.ca_pem(), &[b"http/1.1"]),
            token: identity.map(|i| server.token(i).to_owned()),
        }
    }

    fn with_token(server: &TestApiServer, token: &str) -> Self {
        Client {
            token: Some(token.to_owned()),
            ..Client::new(server, None)
        }
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        accept: &str,
        body: Vec<u8>,
    ) -> hyper::Response<Incoming> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("user-agent", "core-test/v0 (linux)");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if !accept.is_empty() {
            request = request.header("accept", accept);
        }
        sender
            .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap()
    }

    async fn send(&self, method: Method, path: &str, content_type: &str, accept: &str, body: Vec<u8>) -> Resp {
        let response = self.send_raw(method, path, content_type, accept, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, "", "application/json", Vec::new()).await
    }

    async fn get_accept(&self, path: &str, accept: &str) -> Resp {
        self.send(Method::GET, path, "", accept, Vec::new()).await
    }

    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(
            Method::POST,
            path,
            "application/json",
            "",
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, "application/json", "", body.to_string().into_bytes())
            .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, content_type, "", body.to_string().into_bytes())
            .await
    }

    async fn delete(&self, path: &str, body: &Value) -> Resp {
        self.send(
            Method::DELETE,
            path,
            "application/json",
            "",
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn watch(&self, path: &str) -> Watch {
        let response = self
            .send_raw(Method::GET, path, "", "application/json", Vec::new())
            .await;
        assert_eq!(response.status().as_u16(), 200);
        Watch {
            body: response.into_body(),
            buffer: Vec::new(),
        }
    }
}

/// A watch response read event by event.
struct Watch {
    body: Incoming,
    buffer: Vec<u8>,
}

/// What reading a watch gave.
#[derive(Debug)]
enum Next {
    Event(Value),
    End,
    Error,
}

impl Watch {
    async fn next(&mut self) -> Next {
        let read = async {
            loop {
                if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                    return Next::Event(serde_json::from_slice(&line).unwrap());
                }
                match self.body.frame().await {
                    None => return Next::End,
                    Some(Err(_)) => return Next::Error,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.buffer.extend_from_slice(&data);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("watch event within the deadline")
    }

    async fn event(&mut self) -> (String, Value) {
        match self.next().await {
            Next::Event(event) => (event["type"].as_str().unwrap().to_owned(), event["object"].clone()),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event that is not a BOOKMARK.
    async fn change(&mut self) -> (String, Value) {
        loop {
            let (kind, object) = self.event().await;
            if kind != "BOOKMARK" {
                return (kind, object);
            }
        }
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start() -> TestApiServer {
    TestApiServer::start(ServerOptions::default()).await.unwrap()
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn deployment(name: &str, replicas: Option<i64>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]},
            },
        },
    });
    if let Some(replicas) = replicas {
        d["spec"]["replicas"] = json!(replicas);
    }
    d
}

const CM: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";

// ---------------------------------------------------------------------------------------------
// Version, discovery, authentication

#[tokio::test]
async fn version_and_legacy_discovery() {
    let server = start().await;
    let anonymous = Client::new(&server, None);
    let version = anonymous.get("/version").await;
    assert_eq!(version.status, 200);
    assert_eq!(
        (version.body["major"].as_str(), version.body["minor"].as_str()),
        (Some("1"), Some("32"))
    );
    assert_eq!(version.body["gitVersion"], "v1.32.4");

    let c = Client::new(&server, Some(Identity::Admin));
    let api = c.get("/api").await;
    assert_eq!(api.body["kind"], "APIVersions");
    assert_eq!(api.body["versions"], json!(["v1"]));
    let groups = c.get("/apis").await;
    assert_eq!(groups.body["kind"], "APIGroupList");
    let names: Vec<&str> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for group in [
        "apps",
        "batch",
        "autoscaling",
        "apiextensions.k8s.io",
        "admissionregistration.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "rbac.authorization.k8s.io",
    ] {
        assert!(names.contains(&group), "{group} in {names:?}");
    }
    let apps = c.get("/apis/apps").await;
    assert_eq!(apps.body["preferredVersion"]["groupVersion"], "apps/v1");

    let core = c.get("/api/v1").await;
    assert_eq!(core.body["groupVersion"], "v1");
    let find = |list: &Value, name: &str| -> Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find(&core.body, "configmaps")["shortNames"], json!(["cm"]));
    assert_eq!(find(&core.body, "namespaces")["namespaced"], false);
    assert_eq!(find(&core.body, "pods")["categories"], json!(["all"]));
    let apps_v1 = c.get("/apis/apps/v1").await;
    assert_eq!(find(&apps_v1.body, "deployments")["shortNames"], json!(["deploy"]));
    assert_eq!(find(&apps_v1.body, "deployments/scale")["kind"], "Scale");
    assert_eq!(find(&apps_v1.body, "deployments/scale")["group"], "autoscaling");
    assert_eq!(find(&apps_v1.body, "statefulsets")["shortNames"], json!(["sts"]));
    let hpa = c.get("/apis/autoscaling/v2").await;
    assert_eq!(
        find(&hpa.body, "horizontalpodautoscalers")["shortNames"],
        json!(["hpa"])
    );
    assert_eq!(c.get("/apis/apps/v9").await.status, 404);
    assert_eq!(c.get("/openapi/v2").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn aggregated_discovery_echoes_the_version_asked_for() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    for version in ["v2", "v2beta1"] {
        let media = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
        let accept = format!("{media},application/json");
        let apis = c.get_accept("/apis", &accept).await;
        assert_eq!(apis.headers["content-type"], media.as_str());
        assert_eq!(apis.body["kind"], "APIGroupDiscoveryList");
        assert_eq!(apis.body["apiVersion"], format!("apidiscovery.k8s.io/{version}"));
        let apps = apis.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(
            deploy["responseKind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        let subs: Vec<&str> = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert_eq!(subs, ["scale", "status"]);

        let api = c.get_accept("/api", &accept).await;
        assert_eq!(api.headers["content-type"], media.as_str());
        let core = &api.body["items"][0];
        assert!(core["metadata"].get("name").is_none());
        let cm = core["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "configmaps")
            .unwrap();
        assert_eq!(cm["shortNames"], json!(["cm"]));
    }
    let plain = c.get_accept("/apis", "application/json").await;
    assert_eq!(plain.body["kind"], "APIGroupList");
    assert_eq!(plain.headers["content-type"], "application/json");
    server.stop().await;
}

#[tokio::test]
async fn requests_without_a_known_token_are_401() {
    let server = start().await;
    for client in [Client::new(&server, None), Client::with_token(&server, "not-a-token")] {
        let resp = client.get(CM).await;
        assert_eq!(resp.status, 401);
        assert_eq!(
            resp.body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
    for identity in Identity::ALL {
        assert_eq!(
            Client::new(&server, Some(identity)).get(CM).await.status,
            200,
            "{identity:?}"
        );
    }
    assert_eq!(
        server.user(Identity::Hpa).username,
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    let records = server.requests();
    assert!(records.iter().any(|r| r.path == CM && r.user == "kubernetes-admin"));
    server.stop().await;
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let server = start().await;
    let addr: SocketAddr = server.url().trim_start_matches("https://").parse().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let config = client_config(server.ca_pem(), &[b"h2"]);
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(format!("{}/api/v1/namespaces", server.url()))
        .header("authorization", format!("Bearer {}", server.token(Identity::Admin)))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CRUD

#[tokio::test]
async fn create_get_list_with_selectors() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    for (name, labels) in [
        ("web", json!({"app": "web", "tier": "front"})),
        ("api", json!({"app": "api", "tier": "back"})),
        ("db", json!({"app": "db"})),
    ] {
        let created = c.post(CM, &configmap(name, labels)).await;
        assert_eq!(created.status, 201, "{}", created.text);
        assert_eq!(created.body["kind"], "ConfigMap");
        assert_eq!(created.body["apiVersion"], "v1");
        assert_eq!(created.body["metadata"]["namespace"], "default");
        let uid = created.body["metadata"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 36);
        let ts = created.body["metadata"]["creationTimestamp"].as_str().unwrap();
        assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
        assert!(
            created.body["metadata"].get("generation").is_none(),
            "ConfigMaps have no generation"
        );
    }
    let again = c.post(CM, &configmap("web", json!({}))).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["message"], "configmaps \"web\" already exists");

    let missing = c.get(&format!("{DEPLOY}/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["message"], "deployments.apps \"nope\" not found");
    assert_eq!(
        missing.body["details"],
        json!({"name": "nope", "group": "apps", "kind": "deployments"})
    );

    let got = c.get(&format!("{CM}/web")).await;
    assert_eq!(got.body["data"], json!({"k": "v"}));

    let list = |query: &'static str| {
        let c = &c;
        async move {
            let resp = c.get(&format!("{CM}?{query}")).await;
            assert_eq!(resp.status, 200, "{query}: {}", resp.text);
            assert_eq!(resp.body["kind"], "ConfigMapList");
            assert!(rv(&resp.body) > 0);
            let mut names: Vec<String> = resp.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(list("labelSelector=app%20in%20(web%2Capi)").await, ["api", "web"]);
    assert_eq!(list("labelSelector=tier%20notin%20(front)").await, ["api", "db"]);
    assert_eq!(list("labelSelector=!tier").await, ["db"]);
    assert_eq!(list("labelSelector=tier,app!=api").await, ["web"]);
    assert_eq!(list("fieldSelector=metadata.name%3Ddb").await, ["db"]);
    assert_eq!(
        list("fieldSelector=metadata.name!%3Ddb&labelSelector=tier").await,
        ["api", "web"]
    );
    assert_eq!(list("limit=500").await, ["api", "db", "web"]);
    let items = c.get(CM).await.body["items"].clone();
    assert!(items[0].get("kind").is_none(), "typed list items carry no kind");
    assert_eq!(c.get(&format!("{CM}?fieldSelector=spec.x%3Dy")).await.status, 400);

    let all = c.get("/api/v1/configmaps").await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 3);

    let generated = c
        .post(
            CM,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
        )
        .await;
    assert_eq!(generated.status, 201);
    let name = generated.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let bad = c.post(CM, &configmap("Bad_Name", json!({}))).await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name")
    );
    let wrong_ns = c
        .post(
            CM,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}),
        )
        .await;
    assert_eq!(wrong_ns.status, 400);
    let no_ns = c
        .post("/api/v1/namespaces/missing/configmaps", &configmap("x", json!({})))
        .await;
    assert_eq!(no_ns.status, 404);
    assert_eq!(no_ns.body["message"], "namespaces \"missing\" not found");
    server.stop().await;
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let created = c.post(DEPLOY, &deployment("web", Some(2))).await.body;
    let mut first = created.clone();
    first["spec"]["replicas"] = json!(3);
    let updated = c.put(&format!("{DEPLOY}/web"), &first).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert!(rv(&updated.body) > rv(&created));

    let mut stale = created.clone();
    stale["spec"]["replicas"] = json!(4);
    let conflict = c.put(&format!("{DEPLOY}/web"), &stale).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(
        conflict.body["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        conflict.body["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );

    // Without a resourceVersion the update is unconditional.
    let mut unconditional = created.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["spec"]["replicas"] = json!(5);
    let forced = c.put(&format!("{DEPLOY}/web"), &unconditional).await;
    assert_eq!(forced.status, 200);
    assert_eq!(forced.body["spec"]["replicas"], 5);

    // Writing the same object again stores nothing.
    let same = c.put(&format!("{DEPLOY}/web"), &forced.body).await;
    assert_eq!(rv(&same.body), rv(&forced.body));
    let missing = c.put(&format!("{DEPLOY}/other"), &deployment("other", None)).await;
    assert_eq!(missing.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn generation_counts_spec_changes_only() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let path = format!("{DEPLOY}/web");
    let created = c.post(DEPLOY, &deployment("web", None)).await.body;
    assert_eq!(created["metadata"]["generation"], 1);

    let mut labelled = created.clone();
    labelled["metadata"]["labels"]["team"] = json!("a");
    labelled["status"] = json!({"replicas": 9});
    let labelled = c.put(&path, &labelled).await.body;
    assert_eq!(
        labelled["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    assert_eq!(labelled["status"], json!({}), "main-resource writes ignore status");

    let mut respec = labelled.clone();
    respec["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let respec = c.put(&path, &respec).await.body;
    assert_eq!(respec["metadata"]["generation"], 2);

    let mut status = respec.clone();
    status["status"] = json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 2});
    status["spec"]["replicas"] = json!(7);
    let status = c.put(&format!("{path}/status"), &status).await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.body["status"]["readyReplicas"], 1);
    assert_eq!(status.body["spec"]["replicas"], 1, "status writes change only status");
    assert_eq!(
        status.body["metadata"]["generation"], 2,
        "status writes never bump generation"
    );
    assert_eq!(
        c.get(&format!("{path}/status")).await.body["status"]["observedGeneration"],
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let path = format!("{DEPLOY}/web");
    c.post(DEPLOY, &deployment("web", Some(3))).await;
    let scale = c.get(&format!("{path}/scale")).await;
    assert_eq!(scale.status, 200);
    let deploy = c.get(&path).await.body;
    assert_eq!(
        scale.body,
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": "web", "namespace": "default",
                "uid": deploy["metadata"]["uid"], "resourceVersion": deploy["metadata"]["resourceVersion"],
                "creationTimestamp": deploy["metadata"]["creationTimestamp"],
            },
            "spec": {"replicas": 3},
            "status": {"replicas": 0, "selector": "app=web"},
        })
    );
    let mut scale_to_6 = scale.body.clone();
    scale_to_6["spec"]["replicas"] = json!(6);
    let written = c.put(&format!("{path}/scale"), &scale_to_6).await;
    assert_eq!(written.status, 200, "{}", written.text);
    assert_eq!(written.body["kind"], "Scale");
    assert_eq!(written.body["spec"]["replicas"], 6);
    let deploy = c.get(&path).await.body;
    assert_eq!(deploy["spec"]["replicas"], 6);
    assert_eq!(deploy["metadata"]["generation"], 2, "scaling changes the spec");
    // The Scale's resourceVersion is a precondition.
    let stale = c.put(&format!("{path}/scale"), &scale_to_6).await;
    assert_eq!(stale.status, 409);
    assert_eq!(c.get(&format!("{CM}/x/scale")).await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn scale_subresource_accepts_every_patch_type() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let path = format!("{DEPLOY}/web/scale");
    c.post(DEPLOY, &deployment("web", Some(1))).await;
    for (n, (content_type, patch)) in [
        ("application/merge-patch+json", json!({"spec": {"replicas": 2}})),
        (
            "application/strategic-merge-patch+json",
            json!({"spec": {"replicas": 3}}),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = c.patch(&path, content_type, &patch).await;
        assert_eq!(resp.status, 200, "{content_type}: {}", resp.text);
        assert_eq!(resp.body["kind"], "Scale");
        assert_eq!(c.get(&format!("{DEPLOY}/web")).await.body["spec"]["replicas"], n + 2);
    }
    server.stop().await;
}

#[tokio::test]
async fn deployment_defaults_match_a_real_api_server() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let created = c.post(DEPLOY, &deployment("web", None)).await.body;
    let fetched = c.get(&format!("{DEPLOY}/web")).await.body;
    for object in [&created, &fetched] {
        let mut object = object.clone();
        let meta = object["metadata"].as_object_mut().unwrap();
        for volatile in ["uid", "creationTimestamp", "resourceVersion", "managedFields"] {
            meta.remove(volatile);
        }
        assert_eq!(
            object,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "generation": 1},
                "spec": {
                    "progressDeadlineSeconds": 600,
                    "replicas": 1,
                    "revisionHistoryLimit": 10,
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
                    "template": {
                        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                        "spec": {
                            "containers": [{
                                "image": "nginx:1.25",
                                "imagePullPolicy": "IfNotPresent",
                                "name": "nginx",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "resources": {},
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File",
                            }],
                            "dnsPolicy": "ClusterFirst",
                            "restartPolicy": "Always",
                            "schedulerName": "default-scheduler",
                            "securityContext": {},
                            "terminationGracePeriodSeconds": 30,
                        },
                    },
                },
                "status": {},
            })
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn secrets_fold_string_data_and_services_get_addresses() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let secret = c
        .post(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}),
        )
        .await
        .body;
    assert_eq!(secret["data"], json!({"password": "aHVudGVyMg=="}));
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());

    let svc = c
        .post(
            "/api/v1/namespaces/default/services",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await
        .body;
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.96.") && ip != "10.96.0.1", "{ip}");
    assert_eq!(svc["spec"]["clusterIPs"], json!([ip]));

    let ns = c
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .await
        .body;
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Deletion

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let mut cm = configmap("held", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.post(CM, &cm).await;
    let deleting = c
        .delete(&format!("{CM}/held"), &json!({"propagationPolicy": "Background"}))
        .await;
    assert_eq!(deleting.status, 200);
    assert_eq!(deleting.body["kind"], "ConfigMap");
    assert!(deleting.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(deleting.body["metadata"]["deletionGracePeriodSeconds"], 0);
    let still = c.get(&format!("{CM}/held")).await;
    assert_eq!(still.status, 200);

    let mut more = still.body.clone();
    more["metadata"]["finalizers"] = json!(["example.com/hold", "example.com/more"]);
    assert_eq!(
        c.put(&format!("{CM}/held"), &more).await.status,
        422,
        "no new finalizers while deleting"
    );

    let mut released = still.body.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert_eq!(c.put(&format!("{CM}/held"), &released).await.status, 200);
    assert_eq!(c.get(&format!("{CM}/held")).await.status, 404);

    c.post(CM, &configmap("plain", json!({}))).await;
    let gone = c.delete(&format!("{CM}/plain"), &json!({})).await;
    assert_eq!(gone.status, 200);
    assert_eq!(gone.body["kind"], "Status");
    assert_eq!(gone.body["status"], "Success");
    assert_eq!(gone.body["details"]["name"], "plain");
    assert_eq!(c.get(&format!("{CM}/plain")).await.status, 404);
    assert_eq!(c.delete(&format!("{CM}/plain"), &json!({})).await.status, 404);

    let created = c.post(CM, &configmap("pre", json!({}))).await.body;
    let wrong_uid = c
        .delete(&format!("{CM}/pre"), &json!({"preconditions": {"uid": "nope"}}))
        .await;
    assert_eq!(wrong_uid.status, 409);
    assert!(
        wrong_uid.body["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: nope")
    );
    let right = c
        .delete(&format!("{CM}/pre"), &json!({"preconditions": {"uid": created["metadata"]["uid"], "resourceVersion": created["metadata"]["resourceVersion"]}}))
        .await;
    assert_eq!(right.status, 200);
    let immortal = c.delete("/api/v1/namespaces/default", &json!({})).await;
    assert_eq!(immortal.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_content_first() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    let team_cm = "/api/v1/namespaces/team/configmaps";
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(c.post(team_cm, &held).await.status, 201);
    assert_eq!(c.post(team_cm, &configmap("free", json!({}))).await.status, 201);
    assert_eq!(
        c.post("/apis/apps/v1/namespaces/team/deployments", &deployment("web", None))
            .await
            .status,
        201
    );

    let deleting = c.delete("/api/v1/namespaces/team", &json!({})).await;
    assert_eq!(deleting.status, 200);
    assert_eq!(deleting.body["status"]["phase"], "Terminating");
    eventually("the namespace controller to delete the unfinalized content", || async {
        c.get(&format!("{team_cm}/free")).await.status == 404
            && c.get("/apis/apps/v1/namespaces/team/deployments/web").await.status == 404
    })
    .await;
    let refused = c.post(team_cm, &configmap("late", json!({}))).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    let ns = c.get("/api/v1/namespaces/team").await;
    assert_eq!(ns.status, 200, "held content keeps the namespace");
    let still = c.get(&format!("{team_cm}/held")).await.body;
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    let mut released = still.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert_eq!(c.put(&format!("{team_cm}/held"), &released).await.status, 200);
    eventually("the namespace to go", || async {
        c.get("/api/v1/namespaces/team").await.status == 404
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn garbage_collection_follows_propagation_policy() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let owner_of = |owner: &Value| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]);
    let owner = c.post(CM, &configmap("owner", json!({}))).await.body;
    let mut child = configmap("child", json!({}));
    child["metadata"]["ownerReferences"] = owner_of(&owner);
    c.post(CM, &child).await;
    c.delete(&format!("{CM}/owner"), &json!({"propagationPolicy": "Background"}))
        .await;
    eventually("the dependent to be collected", || async {
        c.get(&format!("{CM}/child")).await.status == 404
    })
    .await;

    let owner = c.post(CM, &configmap("owner2", json!({}))).await.body;
    let mut kept = configmap("kept", json!({}));
    kept["metadata"]["ownerReferences"] = owner_of(&owner);
    c.post(CM, &kept).await;
    let orphaning = c
        .delete(&format!("{CM}/owner2"), &json!({"propagationPolicy": "Orphan"}))
        .await;
    assert_eq!(orphaning.body["metadata"]["finalizers"], json!(["orphan"]));
    eventually("the owner to go after orphaning", || async {
        c.get(&format!("{CM}/owner2")).await.status == 404
    })
    .await;
    let kept = c.get(&format!("{CM}/kept")).await;
    assert_eq!(kept.status, 200);
    assert!(kept.body["metadata"].get("ownerReferences").is_none());

    let owner = c.post(CM, &configmap("owner3", json!({}))).await.body;
    let mut fg = configmap("fg", json!({}));
    fg["metadata"]["ownerReferences"] = owner_of(&owner);
    c.post(CM, &fg).await;
    let foreground = c
        .delete(&format!("{CM}/owner3"), &json!({"propagationPolicy": "Foreground"}))
        .await;
    assert_eq!(foreground.body["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    eventually("foreground deletion to finish", || async {
        c.get(&format!("{CM}/owner3")).await.status == 404 && c.get(&format!("{CM}/fg")).await.status == 404
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn delete_collection_honours_selectors() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        c.post(CM, &configmap(name, json!({"app": app}))).await;
    }
    let deleted = c.delete(&format!("{CM}?labelSelector=app%3Dx"), &json!({})).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.body["kind"], "ConfigMapList");
    assert_eq!(deleted.body["items"].as_array().unwrap().len(), 2);
    let left: Vec<Value> = c.get(CM).await.body["items"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "c");
    assert_eq!(
        c.delete("/api/v1/namespaces", &json!({})).await.status,
        405,
        "namespaces have no deletecollection"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unconditional_writes_all_land() {
    let server = start().await;
    let c = Arc::new(Client::new(&server, Some(Identity::Admin)));
    let created = c.post(CM, &configmap("shared", json!({}))).await.body;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        let mut body = created.clone();
        body["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        body["data"] = json!({"writer": i.to_string()});
        tasks.push(tokio::spawn(async move { c.put(&format!("{CM}/shared"), &body).await }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        let resp = task.await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text);
        versions.push(rv(&resp.body));
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 8, "every write got its own resourceVersion");
    let last = c.get(&format!("{CM}/shared")).await.body;
    assert_eq!(rv(&last), *versions.last().unwrap());
    server.stop().await;
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let dry = c.post(&format!("{CM}?dryRun=All"), &configmap("dry", json!({}))).await;
    assert_eq!(dry.status, 201);
    assert_eq!(dry.body["metadata"]["name"], "dry");
    assert_eq!(c.get(&format!("{CM}/dry")).await.status, 404);

    let real = c.post(CM, &configmap("real", json!({}))).await.body;
    let mut changed = real.clone();
    changed["data"]["k"] = json!("changed");
    let dry = c.put(&format!("{CM}/real?dryRun=All"), &changed).await;
    assert_eq!(dry.status, 200);
    assert_eq!(dry.body["data"]["k"], "changed");
    assert_eq!(rv(&dry.body), rv(&real));
    let stored = c.get(&format!("{CM}/real")).await.body;
    assert_eq!(stored, real);
    assert_eq!(c.delete(&format!("{CM}/real?dryRun=All"), &json!({})).await.status, 200);
    assert_eq!(c.get(&format!("{CM}/real")).await.status, 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Custom resources

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size", "labelSelectorPath": ".status.selector"}},
            }],
        },
    })
}

#[tokio::test]
async fn crds_register_their_kind_and_become_established() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    assert_eq!(c.get(widgets).await.status, 404);
    let crd = c
        .post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &widget_crd())
        .await;
    assert_eq!(crd.status, 201, "{}", crd.text);
    let conditions = crd.body["status"]["conditions"].as_array().unwrap();
    for kind in ["Established", "NamesAccepted"] {
        assert!(
            conditions.iter().any(|c| c["type"] == kind && c["status"] == "True"),
            "{kind}"
        );
    }
    assert_eq!(crd.body["status"]["acceptedNames"]["shortNames"], json!(["wd"]));
    assert_eq!(crd.body["spec"]["names"]["listKind"], "WidgetList");

    let list = c.get("/apis/example.com/v1").await.body;
    assert_eq!(list["resources"][0]["name"], "widgets");
    assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
    let aggregated = c
        .get_accept(
            "/apis",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .await
        .body;
    assert!(
        aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "example.com")
    );
    let openapi = c.get("/openapi/v3").await.body;
    assert!(openapi["paths"].get("apis/example.com/v1").is_some());

    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}, "status": {"size": 9}});
    let created = c.post(widgets, &widget).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["metadata"]["generation"], 1);
    assert!(
        created.body.get("status").is_none(),
        "status is dropped on create with a status subresource"
    );
    let listed = c.get(widgets).await.body;
    assert_eq!(listed["kind"], "WidgetList");
    assert_eq!(
        listed["items"][0]["kind"], "Widget",
        "custom resource list items keep their kind"
    );
    let scale = c.get(&format!("{widgets}/w/scale")).await.body;
    assert_eq!(scale["spec"]["replicas"], 2);
    let mut scale = scale.clone();
    scale["spec"]["replicas"] = json!(5);
    c.put(&format!("{widgets}/w/scale"), &scale).await;
    let w = c.get(&format!("{widgets}/w")).await.body;
    assert_eq!(w["spec"]["size"], 5);
    assert_eq!(w["metadata"]["generation"], 2);

    let deleting = c
        .delete(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
            &json!({}),
        )
        .await;
    assert_eq!(deleting.status, 200);
    eventually("the CRD and its instances to go", || async {
        c.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
            .await
            .status
            == 404
    })
    .await;
    assert_eq!(c.get(widgets).await.status, 404);
    assert!(server.object("example.com", "widgets", "default", "w").is_none());

    let mut bad = widget_crd();
    bad["metadata"]["name"] = json!("gadgets.example.com");
    assert_eq!(
        c.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &bad)
            .await
            .status,
        422
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Watch

#[tokio::test]
async fn watch_streams_changes_and_resumes() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let before = c.get(CM).await.body;
    let start_rv = rv(&before);
    let mut watch = c.watch(&format!("{CM}?watch=true&resourceVersion={start_rv}")).await;

    let created = c.post(CM, &configmap("w", json!({"app": "w"}))).await.body;
    let (kind, object) = watch.change().await;
    assert_eq!(
        (kind.as_str(), object["metadata"]["name"].as_str()),
        ("ADDED", Some("w"))
    );
    assert_eq!(object["kind"], "ConfigMap");
    let mut updated = created.clone();
    updated["data"]["k"] = json!("2");
    let updated = c.put(&format!("{CM}/w"), &updated).await.body;
    let (kind, object) = watch.change().await;
    assert_eq!(kind, "MODIFIED");
    assert_eq!(rv(&object), rv(&updated));
    c.delete(&format!("{CM}/w"), &json!({})).await;
    let (kind, object) = watch.change().await;
    assert_eq!(kind, "DELETED");
    assert!(rv(&object) > rv(&updated));
    let last = rv(&object);

    // Resume from the first event: the rest is replayed.
    let mut resumed = c.watch(&format!("{CM}?watch=1&resourceVersion={}", rv(&created))).await;
    assert_eq!(resumed.change().await.0, "MODIFIED");
    assert_eq!(resumed.change().await.0, "DELETED");

    // No resourceVersion: synthetic ADDED for what exists, then live events.
    c.post(CM, &configmap("x", json!({}))).await;
    let mut fresh = c.watch(&format!("{CM}?watch=true")).await;
    let (kind, object) = fresh.change().await;
    assert_eq!(
        (kind.as_str(), object["metadata"]["name"].as_str()),
        ("ADDED", Some("x"))
    );
    assert!(rv(&object) > last);

    // Legacy /watch/ path on one object.
    let mut one = c.watch("/api/v1/watch/namespaces/default/configmaps/x").await;
    assert_eq!(one.change().await.0, "ADDED");
    c.post(CM, &configmap("y", json!({}))).await;
    c.delete(&format!("{CM}/x"), &json!({})).await;
    let (kind, object) = one.change().await;
    assert_eq!(
        (kind.as_str(), object["metadata"]["name"].as_str()),
        ("DELETED", Some("x"))
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_selectors_turn_label_changes_into_added_and_deleted() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let mut watch = c.watch(&format!("{CM}?watch=true&labelSelector=app%3Dweb")).await;
    let created = c.post(CM, &configmap("a", json!({"app": "api"}))).await.body;
    let mut relabelled = created.clone();
    relabelled["metadata"]["labels"]["app"] = json!("web");
    let relabelled = c.put(&format!("{CM}/a"), &relabelled).await.body;
    let (kind, object) = watch.change().await;
    assert_eq!((kind.as_str(), rv(&object)), ("ADDED", rv(&relabelled)));
    let mut away = relabelled.clone();
    away["metadata"]["labels"]["app"] = json!("db");
    let away = c.put(&format!("{CM}/a"), &away).await.body;
    let (kind, object) = watch.change().await;
    assert_eq!(kind, "DELETED");
    assert_eq!(
        object["metadata"]["labels"]["app"], "web",
        "the last state the watcher could see"
    );
    assert_eq!(rv(&object), rv(&away));
    server.stop().await;
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version() {
    let server = TestApiServer::start(ServerOptions {
        bookmark_interval: Duration::from_millis(50),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(&server, Some(Identity::Admin));
    let mut watch = c.watch(&format!("{CM}?watch=true&allowWatchBookmarks=true")).await;
    let (kind, object) = watch.event().await;
    assert_eq!(kind, "BOOKMARK");
    assert_eq!(object["kind"], "ConfigMap");
    let created = c.post(CM, &configmap("b", json!({}))).await.body;
    assert_eq!(watch.event().await.0, "ADDED");
    c.post(
        "/api/v1/namespaces/kube-system/secrets",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}}),
    )
    .await;
    let latest = rv(&c.get("/api/v1/namespaces/kube-system/secrets/unrelated").await.body);
    assert!(latest > rv(&created));
    loop {
        let (kind, object) = watch.event().await;
        assert_eq!(kind, "BOOKMARK");
        if rv(&object) == latest {
            break;
        }
        assert!(rv(&object) < latest);
    }

    let mut listing = c
        .watch(&format!(
            "{CM}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(listing.event().await.0, "ADDED");
    let (kind, object) = listing.event().await;
    assert_eq!(kind, "BOOKMARK");
    assert_eq!(object["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    server.stop().await;
}

#[tokio::test]
async fn watching_from_before_the_history_is_410_gone() {
    let server = TestApiServer::start(ServerOptions {
        watch_history: 3,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(&server, Some(Identity::Admin));
    let first = c.post(CM, &configmap("h0", json!({}))).await.body;
    for i in 1..6 {
        c.post(CM, &configmap(&format!("h{i}"), json!({}))).await;
    }
    let mut watch = c
        .watch(&format!("{CM}?watch=true&resourceVersion={}", rv(&first)))
        .await;
    let (kind, status) = watch.event().await;
    assert_eq!(kind, "ERROR");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {}", rv(&first)))
    );
    assert!(matches!(watch.next().await, Next::End));
    server.stop().await;
}

#[tokio::test]
async fn watch_timeout_ends_the_stream_cleanly() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let mut watch = c.watch(&format!("{CM}?watch=true&timeoutSeconds=1")).await;
    assert!(matches!(watch.next().await, Next::End));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn injected_failures_answer_the_chosen_status() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    server
        .faults()
        .fail(Verb::Get, "configmaps", Failure::internal_error(), Some(1));
    c.post(CM, &configmap("f", json!({}))).await;
    let failed = c.get(&format!("{CM}/f")).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body["reason"], "InternalError");
    assert_eq!(
        c.get(&format!("{CM}/f")).await.status,
        200,
        "only the next request fails"
    );

    server
        .faults()
        .fail(Verb::Update, "deployments/scale", Failure::conflict(), Some(1));
    c.post(DEPLOY, &deployment("web", None)).await;
    let scale = c.get(&format!("{DEPLOY}/web/scale")).await.body;
    assert_eq!(c.put(&format!("{DEPLOY}/web/scale"), &scale).await.status, 409);

    server
        .faults()
        .fail(Verb::List, "*", Failure::too_many_requests(7), None);
    for _ in 0..2 {
        let throttled = c.get(CM).await;
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.headers["retry-after"], "7");
    }
    server.faults().clear();
    assert_eq!(c.get(CM).await.status, 200);
    assert_eq!(server.faults().injected(), 4);

    server
        .faults()
        .delay(Verb::Get, "configmaps", Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(c.get(&format!("{CM}/f")).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.faults().clear();
    server.stop().await;
}

#[tokio::test]
async fn dropped_watches_end_abruptly() {
    let server = start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let mut watch = c.watch(&format!("{CM}?watch=true")).await;
    server.faults().drop_watches();
    assert!(matches!(watch.next().await, Next::Error | Next::End));
    // New watches work.
    let mut again = c.watch(&format!("{CM}?watch=true")).await;
    c.post(CM, &configmap("after", json!({}))).await;
    assert_eq!(again.change().await.0, "ADDED");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real kubectl

struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(server: &TestApiServer) -> Self {
        let home = tempfile::tempdir().unwrap();
        let kubeconfig = home.path().join("kubeconfig");
        server.write_kubeconfig(Identity::Admin, &kubeconfig).unwrap();
        Kubectl { home, kubeconfig }
    }

    async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut command = tokio::process::Command::new("/usr/bin/kubectl");
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .arg("--request-timeout=20s")
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt as _;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes")
            .unwrap();
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], None).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(
            out.code, 0,
            "kubectl {args:?}\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_creates_and_deletes() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    let c = Client::new(&server, Some(Identity::Admin));
    c.post(DEPLOY, &deployment("web", Some(2))).await;

    let table = kubectl.ok(&["get", "deploy"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("web "), "{table}");
    let ns_table = kubectl.ok(&["get", "ns"]).await;
    assert!(
        ns_table.contains("kube-system") && ns_table.contains("Active"),
        "{ns_table}"
    );

    kubectl.ok(&["create", "configmap", "cfg", "--from-literal=a=1"]).await;
    let yaml = kubectl.ok(&["get", "cm", "cfg", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("a: \"1\"") && yaml.contains("name: cfg"),
        "{yaml}"
    );
    let json_out: Value = serde_json::from_str(&kubectl.ok(&["get", "cm", "-o", "json"]).await).unwrap();
    assert_eq!(json_out["items"][0]["metadata"]["name"], "cfg");
    let created = server.object("", "configmaps", "default", "cfg").unwrap();
    assert_eq!(created["data"], json!({"a": "1"}));

    let manifest = kubectl.path("app.yaml");
    write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels:\n    app: demo\ndata:\n  x: \"1\"\n",
    );
    let applied = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(applied.contains("configmap/applied created"), "{applied}");
    let stored = server.object("", "configmaps", "default", "applied").unwrap();
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string(),
        "{stored}"
    );

    let started = Instant::now();
    let deleted = kubectl.ok(&["delete", "cm", "cfg"]).await;
    assert!(deleted.contains("configmap \"cfg\" deleted"), "{deleted}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "delete must not wait for a timeout"
    );
    assert_eq!(c.get(&format!("{CM}/cfg")).await.status, 404);

    let missing = kubectl.run(&["get", "cm", "nope"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("configmaps \"nope\" not found"),
        "{}",
        missing.stderr
    );

    kubectl.ok(&["create", "namespace", "team"]).await;
    kubectl.ok(&["create", "configmap", "inside", "-n", "team"]).await;
    kubectl.ok(&["delete", "namespace", "team"]).await;
    assert_eq!(c.get("/api/v1/namespaces/team").await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patches_scales_labels_edits_and_applies() {
    let server = start().await;
    let kubectl = Kubectl::new(&server);
    let c = Client::new(&server, Some(Identity::Admin));
    c.post(DEPLOY, &deployment("web", Some(2))).await;
    c.post(CM, &configmap("cfg", json!({}))).await;

    let scaled = kubectl.ok(&["scale", "deploy", "web", "--replicas=5"]).await;
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    assert_eq!(
        server.object("apps", "deployments", "default", "web").unwrap()["spec"]["replicas"],
        5
    );

    kubectl.ok(&["label", "cm", "cfg", "team=a"]).await;
    assert_eq!(
        server.object("", "configmaps", "default", "cfg").unwrap()["metadata"]["labels"]["team"],
        "a"
    );

    let edited = kubectl
        .run_with(
            &["edit", "cm", "cfg"],
            &[("KUBE_EDITOR", "sed -i s/k:\\ v/k:\\ edited/")],
            None,
        )
        .await;
    assert_eq!(edited.code, 0, "{}\n{}", edited.stdout, edited.stderr);
    assert_eq!(
        server.object("", "configmaps", "default", "cfg").unwrap()["data"]["k"],
        "edited"
    );

    let manifest = kubectl.path("app.yaml");
    write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"1\"\n",
    );
    kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"2\"\n",
    );
    let configured = kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(configured.contains("configured"), "{configured}");
    assert_eq!(
        server.object("", "configmaps", "default", "applied").unwrap()["data"]["x"],
        "2"
    );

    let ssa = kubectl.path("ssa.yaml");
    write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: server-side\ndata:\n  y: \"1\"\n",
    );
    let out = kubectl
        .ok(&["apply", "--server-side", "-f", ssa.to_str().unwrap()])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let stored = server.object("", "configmaps", "default", "server-side").unwrap();
    assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(stored["metadata"]["managedFields"][0]["operation"], "Apply");

    kubectl
        .ok(&[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ])
        .await;
    kubectl
        .ok(&[
            "patch",
            "deploy",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
        ])
        .await;
    kubectl.ok(&["set", "image", "deploy/web", "nginx=nginx:1.27"]).await;
    let web = server.object("apps", "deployments", "default", "web").unwrap();
    assert_eq!(web["spec"]["replicas"], 4);
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Admission through the write pipeline

/// An HTTPS webhook on 127.0.0.1 that records every AdmissionReview it gets, denies objects
/// named `deny` and warns about objects named `warn`.
struct RecordingWebhook {
    url: String,
    ca_bundle: String,
    reviews: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl RecordingWebhook {
    async fn start() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "webhook-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reviews = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = reviews.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap();
                            recorded.lock().unwrap().push(review.clone());
                            let req = &review["request"];
                            let name = req["name"].as_str().unwrap_or("");
                            let mut response = json!({"uid": req["uid"], "allowed": name != "deny"});
                            if name == "deny" {
                                response["status"] = json!({"code": 403, "reason": "Forbidden", "message": "no"});
                            }
                            if name == "warn" {
                                response["warnings"] = json!(["careful \"now\""]);
                            }
                            let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                answer.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        RecordingWebhook {
            url: format!("https://{addr}/validate"),
            ca_bundle: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca_cert.pem()),
            reviews,
        }
    }

    fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().unwrap().clone()
    }

    fn find(&self, operation: &str, resource: &str, name: &str) -> Option<Value> {
        self.reviews()
            .into_iter()
            .map(|r| r["request"].clone())
            .find(|r| r["operation"] == operation && r["resource"]["resource"] == resource && r["name"] == name)
    }
}

#[tokio::test]
async fn writes_go_through_webhooks_with_kube_attributes() {
    let server = start().await;
    let hook = RecordingWebhook::start().await;
    let c = Client::new(&server, Some(Identity::Admin));
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "recorder"},
        "webhooks": [{
            "name": "recorder.example.com",
            "rules": [{"operations": ["*"], "apiGroups": ["", "apps"], "apiVersions": ["*"],
                       "resources": ["configmaps", "deployments", "deployments/scale"]}],
            "clientConfig": {"url": hook.url, "caBundle": hook.ca_bundle},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    });
    let stored = c
        .post(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            &config,
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    assert_eq!(stored.body["webhooks"][0]["failurePolicy"], "Fail");

    let warned = c.post(CM, &configmap("warn", json!({}))).await;
    assert_eq!(warned.status, 201);
    assert_eq!(warned.headers["warning"], r#"299 - "careful \"now\"""#);
    let create = hook.find("CREATE", "configmaps", "warn").unwrap();
    assert_eq!(
        create["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(create["options"]["kind"], "CreateOptions");
    assert_eq!(create["userInfo"]["username"], "kubernetes-admin");
    assert_eq!(create["dryRun"], false);
    assert!(create["object"]["metadata"]["uid"].is_string());

    let denied = c.post(CM, &configmap("deny", json!({}))).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.body["message"],
        "admission webhook \"recorder.example.com\" denied the request: no"
    );
    assert_eq!(c.get(&format!("{CM}/deny")).await.status, 404);

    c.post(&format!("{CM}?dryRun=All"), &configmap("dry", json!({}))).await;
    assert_eq!(hook.find("CREATE", "configmaps", "dry").unwrap()["dryRun"], true);

    c.post(DEPLOY, &deployment("web", Some(1))).await;
    let scale = c.get(&format!("{DEPLOY}/web/scale")).await.body;
    let mut scaled = scale.clone();
    scaled["spec"]["replicas"] = json!(3);
    assert_eq!(c.put(&format!("{DEPLOY}/web/scale"), &scaled).await.status, 200);
    let review = hook.find("UPDATE", "deployments", "web").unwrap();
    assert_eq!(review["subResource"], "scale");
    assert_eq!(
        review["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(
        review["resource"],
        json!({"group": "apps", "version": "v1", "resource": "deployments"})
    );
    assert_eq!(review["object"]["spec"]["replicas"], 3);
    assert_eq!(review["oldObject"]["spec"]["replicas"], 1);
    assert!(
        review["object"]["metadata"].get("labels").is_none(),
        "a Scale carries no labels"
    );
    assert_eq!(review["options"]["kind"], "UpdateOptions");

    c.delete(&format!("{CM}/warn"), &json!({"propagationPolicy": "Background"}))
        .await;
    let delete = hook.find("DELETE", "configmaps", "warn").unwrap();
    assert!(delete["object"].is_null());
    assert_eq!(delete["oldObject"]["metadata"]["name"], "warn");
    assert_eq!(
        delete["options"],
        json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"})
    );

    c.post(
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    c.post("/api/v1/namespaces/team/configmaps", &configmap("inside", json!({})))
        .await;
    c.delete("/api/v1/namespaces/team", &json!({})).await;
    eventually("the namespace to go", || async {
        c.get("/api/v1/namespaces/team").await.status == 404
    })
    .await;
    let cascade = hook.find("DELETE", "configmaps", "inside").unwrap();
    assert_eq!(
        cascade["userInfo"]["username"],
        "system:serviceaccount:kube-system:namespace-controller"
    );
    assert_eq!(cascade["namespace"], "team");
    server.stop().await;
}
