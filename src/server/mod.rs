//! The admission HTTPS server: axum routes over rustls (ring; TLS 1.2/1.3; h2 and http/1.1),
//! served connection by connection with hyper-util so handshakes, limits and shutdown are ours.
//!
//! - certificates are re-read every `reload_interval` and swapped in live when they change
//!   and are valid; a broken update is logged and the previous pair kept;
//! - webhook requests are bounded in size and in concurrency (503 rather than a queue);
//! - shutdown drains before it closes, so a rolling restart fails no request (below);
//! - metrics are served in plain HTTP on a separate port.
//!
//! # Shutdown
//!
//! After SIGTERM the kubelet and the endpoints controller need a few seconds before no caller
//! routes to the pod any more (kube-apiserver's endpoint list, kube-proxy's rules), and
//! requests keep arriving meanwhile. So shutdown runs in two phases:
//!
//! 1. **drain** (`drain_delay`, default 5 s): `/readyz` answers 503 with a JSON reason at
//!    once, while every request, on new and on kept-alive connections, is still served.
//!    HTTP/1.1 answers now carry `Connection: close`: a caller whose kept-alive connection
//!    still reaches this pod (kube-proxy keeps established connections where they are)
//!    reconnects through the Service, to a replica that stays;
//! 2. **close** (at most `shutdown_grace`, default 20 s): the listener closes, idle
//!    connections close, busy ones finish their current request and close (HTTP/2 with
//!    GOAWAY, which tells the client which streams were served), the metrics port stops;
//!    whatever is still open when the grace ends is cut.
//!
//! Each phase is logged. A second SIGTERM or Ctrl-C during the drain skips the rest of the
//! delay and goes straight to the close (see [`BoundServer::run_until`]); the close itself is
//! never skipped, so in-flight requests still finish. The pod's
//! `terminationGracePeriodSeconds` must cover `drain_delay + shutdown_grace`.

pub(crate) mod body;
mod conn;
mod routes;
mod shutdown;
mod tls;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use routes::{metrics_router, router};
pub use shutdown::Signals;
pub use tls::ServingCert;

/// Marks a request that came over a connection whose client presented a certificate that
/// chains to [`ServerOptions::client_ca_file`] (rustls verified it during the handshake).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifiedClient;

use crate::admission::Admit;
use crate::certs::CertError;
use crate::telemetry::Metrics;

/// Default webhook port.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;
/// Default metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// Default request body limit: far above any AdmissionReview kube-apiserver sends (objects
/// are capped at ~1.5 MiB in etcd, and a review carries at most two of them).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Default drain delay: a few times what endpoints take to drop a terminating pod.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Longest drain delay accepted: past a few seconds it only keeps a terminating pod around.
pub const MAX_DRAIN_DELAY: Duration = Duration::from_secs(300);

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// PEM files, re-read every `reload_interval` and swapped in when they change.
    Files {
        /// PEM certificate chain, leaf first.
        cert_file: PathBuf,
        /// PEM private key of the leaf.
        key_file: PathBuf,
    },
    /// A slot someone else fills and updates (the self-managed certificate Secret); the
    /// server starts once it holds a certificate.
    Provided(Arc<ServingCert>),
}

/// How the server listens, where its certificate is, and its limits.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTPS (webhook) listen address.
    pub listen: SocketAddr,
    /// Plain-HTTP metrics listen address; `None` serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// The serving certificate.
    pub certificate: CertificateSource,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
    /// Largest request body accepted on the webhook routes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Reviews decided at the same time at most.
    pub max_in_flight: usize,
    /// How long a review waits for a free slot before it is answered 503.
    pub in_flight_wait: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long, once shutdown starts, the server reports not ready while it still serves
    /// everything, before it stops accepting (see the module docs).
    pub drain_delay: Duration,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace: Duration,
    /// PEM CA bundle that client certificates must chain to on `/validate` and `/mutate`
    /// (kube-apiserver's webhook client certificate); `None` authenticates no caller. Read
    /// once at bind: a new CA needs a restart.
    pub client_ca_file: Option<PathBuf>,
}

impl ServerOptions {
    /// Production defaults: HTTPS on 0.0.0.0:8443, metrics on 0.0.0.0:9090, reload every 10 s,
    /// 8 MiB bodies, 64 reviews in flight (100 ms wait; bodies of in-flight reviews are what
    /// bounds memory), 10 s handshakes, a 5 s drain and a 20 s grace (together inside the
    /// kubelet's default 30 s termination grace period).
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self::with_certificate(CertificateSource::Files { cert_file, key_file })
    }

    /// [`ServerOptions::new`] with the certificate from `certificate`.
    pub fn with_certificate(certificate: CertificateSource) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_HTTPS_PORT)),
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_METRICS_PORT))),
            certificate,
            reload_interval: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight: 64,
            in_flight_wait: Duration::from_millis(100),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_delay: DEFAULT_DRAIN_DELAY,
            shutdown_grace: Duration::from_secs(20),
            client_ca_file: None,
        }
    }

    /// Rejects settings the server cannot run with.
    fn validate(&self) -> Result<(), ServerError> {
        let invalid = |reason: &str| Err(ServerError::Options(reason.to_owned()));
        if self.reload_interval.is_zero() {
            return invalid("the certificate reload interval must be greater than zero");
        }
        if self.max_body_bytes == 0 {
            return invalid("the maximum body size must be greater than zero");
        }
        if self.max_in_flight == 0 || self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid("the maximum of in-flight requests must be at least 1 (and fit a semaphore)");
        }
        if self.tls_handshake_timeout.is_zero() {
            return invalid("the TLS handshake timeout must be greater than zero");
        }
        if self.drain_delay > MAX_DRAIN_DELAY {
            return invalid("the drain delay must be at most 5m");
        }
        Ok(())
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address is unavailable.
    #[error("cannot listen on {addr} for {what}: {source}; is another process using the port?")]
    Bind {
        /// `webhooks (HTTPS)` or `metrics`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The serving certificate or key cannot be loaded (the message names the file).
    #[error("cannot load the TLS serving certificate: {0}")]
    Certificate(#[from] CertError),
    /// The TLS configuration was refused by rustls.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The options are unusable.
    #[error("invalid server options: {0}")]
    Options(String),
    /// The metrics server failed.
    #[error("metrics server failed: {0}")]
    Metrics(std::io::Error),
}

/// A server whose listeners are bound and whose certificate is loaded; [`BoundServer::run`]
/// starts serving.
pub struct BoundServer {
    https: TcpListener,
    https_addr: SocketAddr,
    metrics: Option<(TcpListener, SocketAddr)>,
    acceptor: TlsAcceptor,
    router: Router,
    metrics_router: Router,
    reloader: Option<tls::CertReloader>,
    serving: Arc<ServingCert>,
    trigger: shutdown::Trigger,
    shutdown: shutdown::Shutdown,
    opts: ServerOptions,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("https_addr", &self.https_addr)
            .field("metrics_addr", &self.metrics_addr())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Binds both listeners and loads the initial certificate pair. Fails with the file named if
/// the certificate or key is missing or invalid, and with the address if a port is taken.
pub async fn bind(
    opts: ServerOptions,
    admit: Arc<dyn Admit>,
    metrics: Arc<Metrics>,
) -> Result<BoundServer, ServerError> {
    opts.validate()?;
    let (serving, reloader) = match &opts.certificate {
        CertificateSource::Files { cert_file, key_file } => {
            let serving = ServingCert::new(metrics.clone());
            let reloader = tls::CertReloader::load(cert_file, key_file, serving.clone(), metrics.clone()).await?;
            (serving, Some(reloader))
        }
        CertificateSource::Provided(serving) => {
            if !serving.is_loaded() {
                return Err(ServerError::Options(
                    "the provided serving certificate slot is empty; install a certificate before binding".to_owned(),
                ));
            }
            (serving.clone(), None)
        }
    };
    let client_roots = match &opts.client_ca_file {
        Some(path) => Some(tls::client_roots(path).await?),
        None => None,
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(serving.clone(), client_roots)?));
    let https = listen(opts.listen, "webhooks (HTTPS)").await?;
    let https_addr = local_addr(&https, opts.listen, "webhooks (HTTPS)")?;
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => {
            let listener = listen(addr, "metrics").await?;
            let bound = local_addr(&listener, addr, "metrics")?;
            Some((listener, bound))
        }
        None => None,
    };
    tracing::info!(https = %https_addr, metrics = ?metrics_listener.as_ref().map(|m| m.1), "listening");
    let (trigger, shutdown) = shutdown::Trigger::new();
    Ok(BoundServer {
        router: routes::router_with(admit, metrics.clone(), &opts, shutdown.clone()),
        metrics_router: metrics_router(metrics),
        https,
        https_addr,
        metrics: metrics_listener,
        acceptor,
        reloader,
        serving,
        trigger,
        shutdown,
        opts,
    })
}

async fn listen(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr, what: &'static str) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}

impl BoundServer {
    /// Record every certificate rotation (`certificate.rotated`) in `audit`.
    pub fn record_rotations(&mut self, audit: Arc<dyn crate::audit::AuditSink>) {
        self.serving.record_rotations(audit);
    }

    /// The bound webhook address (with the real port when the options said port 0).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The bound metrics address, if metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` resolves, then drains and shuts down gracefully (see the
    /// module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// [`BoundServer::run`], where `skip_drain` resolving during the drain (a second SIGTERM
    /// or Ctrl-C) ends the drain delay early; the graceful close still follows.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        skip_drain: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let BoundServer {
            https,
            metrics,
            acceptor,
            router,
            metrics_router,
            reloader,
            trigger,
            shutdown: signal,
            opts,
            ..
        } = self;
        let trigger = trigger.spawn(opts.drain_delay, shutdown, skip_drain);
        let reload = reloader.map(|reloader| tokio::spawn(reloader.run(opts.reload_interval, signal.clone())));
        let metrics_server = metrics.map(|(listener, _)| {
            tokio::spawn(serve_metrics(
                listener,
                metrics_router,
                signal.clone(),
                opts.shutdown_grace,
            ))
        });
        conn::Https {
            listener: https,
            acceptor,
            router,
            handshake_timeout: opts.tls_handshake_timeout,
            shutdown_grace: opts.shutdown_grace,
        }
        .serve(signal)
        .await;
        let metrics_result = match metrics_server {
            Some(task) => task
                .await
                .map_err(|e| ServerError::Metrics(std::io::Error::other(e)))
                .and_then(|r| r.map_err(ServerError::Metrics)),
            None => Ok(()),
        };
        if let Some(reload) = reload {
            reload.abort();
        }
        trigger.abort();
        tracing::info!("server stopped");
        metrics_result
    }
}

/// Plain-HTTP metrics until the close (scrapes during the drain still see the server), then at
/// most `grace` for open scrapes.
async fn serve_metrics(
    listener: TcpListener,
    router: Router,
    shutdown: shutdown::Shutdown,
    grace: Duration,
) -> std::io::Result<()> {
    let mut on_shutdown = shutdown.clone();
    let serve = axum::serve(listener, router).with_graceful_shutdown(async move { on_shutdown.closing().await });
    let mut deadline = shutdown;
    tokio::select! {
        result = serve => result,
        () = async move {
            deadline.closing().await;
            tokio::time::sleep(grace).await;
        } => Ok(()),
    }
}
