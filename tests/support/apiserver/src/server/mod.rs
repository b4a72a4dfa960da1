//! The test API server: HTTPS on 127.0.0.1 with its own CA, bearer-token identities, routing,
//! the write pipeline, watches, and the namespace and garbage-collector controllers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
//! let server = TestApiServer::start(ServerOptions::default()).await?;
//! let dir = tempfile::tempdir()?;
//! server.write_kubeconfig(Identity::Admin, &dir.path().join("kubeconfig"))?;
//! // ... run kubectl or kube::Client against it ...
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! Layout: [`tls`] (CA and rustls), [`auth`] (identities), [`kubeconfig`], `routes` (HTTP
//! routing, reads, discovery), `pipeline` (every write, in kube-apiserver's order), `watch`,
//! `table` (server-side printing for `kubectl get`), `controllers` (namespace deletion and
//! garbage collection), `respond` (HTTP helpers).
//!
//! # Simplifications
//! See also the module docs of `auth`, `pipeline`, `watch`, `controllers`, [`crate::store`],
//! [`crate::discovery`] and [`crate::defaults`].
//! - No authorization (every authenticated identity may do everything).
//! - JSON only: no protobuf, no YAML request bodies (kubectl and kube::Client send JSON).
//! - No `kube-root-ca.crt` ConfigMaps or `default` ServiceAccounts are created in namespaces
//!   (their controllers are not modelled); the four standard namespaces and the `kubernetes`
//!   Service exist from the start.
//! - Nothing runs workloads: Deployments and the like keep the status they are given.
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::UserInfo;
use crate::admission::{Dispatcher, WebhookConfigs};
use crate::discovery::Registry;
use crate::faults::Faults;
use crate::store::{ObjectKey, Store};

mod auth;
mod controllers;
mod kubeconfig;
mod pipeline;
mod protobuf;
mod respond;
mod routes;
mod table;
mod tls;
mod watch;

pub use auth::Identity;

/// How a server behaves where tests may want to tune it.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Events kept for watch resumption; a watch from an older resourceVersion gets 410.
    pub watch_history: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (it also gets one
    /// right after its initial events). kube sends them about once a minute.
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` stays open (kube: 30 to 60 minutes).
    pub watch_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(60),
            watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Generating the CA or the serving certificate failed.
    #[error("generating the {what}: {source}")]
    Certificate {
        /// Which part.
        what: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The listener could not be bound.
    #[error("binding 127.0.0.1:0: {0}")]
    Bind(#[source] io::Error),
}

/// One request as the server received it (tests assert what a client sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Authenticated username ("" when unauthenticated).
    pub user: String,
    /// `User-Agent`.
    pub user_agent: String,
    /// `Content-Type`.
    pub content_type: String,
}

/// One answer the server sent, in the order answered: a write answered 2xx took effect at
/// that point of the order (nothing is awaited between a write and its answer). A request
/// whose client hung up before it was processed has no answer, and never took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRecord {
    /// The request answered: its index in [`TestApiServer::requests`].
    pub request: usize,
    /// The HTTP status code.
    pub status: u16,
}

/// Store and registry, behind one mutex (never held across an `.await`).
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
}

impl State {
    /// Re-derive the custom resources from the stored CRDs.
    pub(crate) fn refresh_custom_resources(&mut self) {
        let crds: Vec<Value> = self
            .store
            .list("apiextensions.k8s.io", "customresourcedefinitions", None)
            .into_iter()
            .cloned()
            .collect();
        self.registry.set_custom_resources(&crds);
    }

    /// Labels of a namespace (None if it does not exist).
    pub(crate) fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.store
            .get(&ObjectKey::new("", "namespaces", "", namespace))
            .map(crate::selectors::labels_of)
    }

    /// The webhook configurations stored now.
    pub(crate) fn webhook_configs(&self) -> WebhookConfigs {
        let list = |resource: &str| -> Vec<Value> {
            self.store
                .list("admissionregistration.k8s.io", resource, None)
                .into_iter()
                .cloned()
                .collect()
        };
        WebhookConfigs {
            mutating: list("mutatingwebhookconfigurations"),
            validating: list("validatingwebhookconfigurations"),
        }
    }
}

/// Everything request handlers share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) faults: Faults,
    pub(crate) dispatcher: Dispatcher,
    identities: auth::Identities,
    pub(crate) options: ServerOptions,
    pub(crate) address: SocketAddr,
    requests: Mutex<Vec<RequestRecord>>,
    responses: Mutex<Vec<ResponseRecord>>,
    /// Becomes true when the server stops (ends watches).
    pub(crate) shutdown: signal::Sender<bool>,
}

impl Shared {
    /// The state. A panic while holding the lock cannot leave it half-written in a way later
    /// requests could not handle, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Log a request; returns its index in the log.
    fn record(&self, record: RequestRecord) -> usize {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push(record);
        requests.len() - 1
    }

    /// Log the answer to request `request`.
    fn answered(&self, request: usize, status: u16) {
        self.responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ResponseRecord { request, status });
    }

    /// The user of an identity (controllers act as their service accounts).
    pub(crate) fn user(&self, identity: Identity) -> UserInfo {
        self.identities.user(identity)
    }
}

/// A running test API server. Dropping it stops it too; [`TestApiServer::stop`] also waits.
pub struct TestApiServer {
    shared: Arc<Shared>,
    url: String,
    ca_pem: String,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Generate a CA, bind 127.0.0.1 on an ephemeral port and serve.
    pub async fn start(options: ServerOptions) -> Result<TestApiServer, ServerError> {
        let tls = tls::generate_tls()?;
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(ServerError::Bind)?;
        let address = listener.local_addr().map_err(ServerError::Bind)?;
        let mut state = State {
            store: Store::new(options.watch_history),
            registry: Registry::new(),
        };
        pipeline::seed(&mut state);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: Faults::new(),
            dispatcher: Dispatcher::new(),
            identities: auth::Identities::generate(),
            options,
            address,
            requests: Mutex::new(Vec::new()),
            responses: Mutex::new(Vec::new()),
            shutdown: signal::channel(false).0,
        });
        let acceptor = TlsAcceptor::from(tls.config);
        let tasks = vec![
            tokio::spawn(accept_loop(listener, acceptor, shared.clone())),
            tokio::spawn(controllers::run(shared.clone())),
        ];
        Ok(TestApiServer {
            shared,
            url: format!("https://{address}"),
            ca_pem: tls.ca_pem,
            tasks,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The CA certificate (PEM) to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token of `identity`.
    pub fn token(&self, identity: Identity) -> &str {
        self.shared.identities.token(identity)
    }

    /// The user `identity` authenticates as (as it appears in AdmissionReview `userInfo`).
    pub fn user(&self, identity: Identity) -> UserInfo {
        self.shared.identities.user(identity)
    }

    /// A kubeconfig for `identity` (CA inline, bearer token, namespace `default`).
    pub fn kubeconfig(&self, identity: Identity) -> String {
        let user = format!("{identity:?}").to_lowercase();
        kubeconfig::render(&self.url, &self.ca_pem, &user, self.token(identity))
    }

    /// Write [`TestApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, identity: Identity, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(identity))
    }

    /// Injected failures, latency and watch drops.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The admission webhook dispatcher (map webhook services to test URLs here).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.shared.dispatcher
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every answer sent so far, in the order answered (see [`ResponseRecord`]).
    pub fn responses(&self) -> Vec<ResponseRecord> {
        self.shared
            .responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The stored object, read directly (no HTTP, no admission): for assertions. `namespace`
    /// is "" for cluster-scoped objects.
    pub fn object(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .store
            .get(&ObjectKey::new(group, resource, namespace, name))
            .cloned()
    }

    /// Stop serving: open watches end, connections close, controllers stop.
    pub async fn stop(mut self) {
        self.shared.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accept TLS connections and serve HTTP/1.1 or HTTP/2 on each; aborting this task drops the
/// connection set, which aborts every connection.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                let http = http.clone();
                connections.spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(routes::handle(shared, request).await) }
                    });
                    // A client hanging up mid-request is not the server's problem.
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
