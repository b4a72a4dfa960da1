//! The HTTPS accept loop: TLS handshakes with a deadline, HTTP/1.1 or HTTP/2 per ALPN, and a
//! graceful close of every connection once shutdown's drain is over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::AlertDescription;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::VerifiedClient;
use super::shutdown::Shutdown;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the accept loop needs.
pub(super) struct Https {
    pub(super) listener: TcpListener,
    pub(super) acceptor: TlsAcceptor,
    pub(super) router: Router,
    pub(super) handshake_timeout: Duration,
    pub(super) shutdown_grace: Duration,
}

impl Https {
    /// Accepts until the close starts (after the drain: see the module docs of [`super`]), then
    /// waits up to the grace period for open connections to finish their current request, and
    /// closes whatever is left.
    pub(super) async fn serve(self, mut shutdown: Shutdown) {
        let Https {
            listener,
            acceptor,
            router,
            handshake_timeout,
            shutdown_grace,
        } = self;
        let http = Arc::new(http_builder());
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.closing() => break,
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = done {
                        tracing::warn!(%error, "connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        // Replies are small; don't let Nagle hold them back.
                        let _ = tcp.set_nodelay(true);
                        connections.spawn(serve_connection(
                            tcp,
                            peer,
                            acceptor.clone(),
                            router.clone(),
                            Arc::clone(&http),
                            // Taken now, so a handshake that finishes after shutdown started is
                            // still told to close after at most one request.
                            graceful.watcher(),
                            handshake_timeout,
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!(
            connections = graceful.count(),
            grace = ?shutdown_grace,
            "stopped accepting; letting open connections finish"
        );
        if tokio::time::timeout(shutdown_grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "grace period over; closing the remaining connections"
            );
        }
        connections.shutdown().await;
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer enables hyper's header read timeout, which bounds slow or idle HTTP/1 peers.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handshake_timeout: Duration,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            log_handshake_failure(peer, &error);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?handshake_timeout, "TLS handshake timed out");
            return;
        }
    };
    // rustls has already checked a presented certificate against the client CA (a bad one
    // fails the handshake), so a certificate here is a verified caller.
    let verified = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|certs| !certs.is_empty());
    let service = TowerToHyperService::new(router.map_request(move |mut req: Request<Incoming>| {
        if verified {
            req.extensions_mut().insert(VerifiedClient);
        }
        req
    }));
    let connection = http.serve_connection(TokioIo::new(tls), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Handshake failures are mostly scanners and health checkers (debug), except when the client
/// rejects our certificate: that is a misconfigured caBundle somebody needs to see.
fn log_handshake_failure(peer: SocketAddr, error: &std::io::Error) {
    let rejected_our_cert = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::AlertReceived(
                    AlertDescription::BadCertificate
                        | AlertDescription::UnknownCA
                        | AlertDescription::CertificateUnknown
                        | AlertDescription::CertificateExpired
                )
            )
        });
    if rejected_our_cert {
        tracing::warn!(
            %peer,
            %error,
            "client rejected the serving certificate; check that the webhook's caBundle matches the CA that issued it"
        );
    } else {
        tracing::debug!(%peer, %error, "TLS handshake failed");
    }
}
