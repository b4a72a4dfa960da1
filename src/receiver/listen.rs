//! The receiver's own plain-HTTP/1.1 listener: bounded connections, a deadline for request
//! heads, and a graceful drain on shutdown. TLS belongs to the Ingress in front of it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ReceiverError, ReceiverLimits};

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A bound receiver listener; [`BoundReceiver::run`] serves it.
pub struct BoundReceiver {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    limits: ReceiverLimits,
}

impl std::fmt::Debug for BoundReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundReceiver")
            .field("addr", &self.addr)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Binds `addr` for `router` (from [`super::router`]) with `limits`' connection bounds.
pub async fn bind(addr: SocketAddr, router: Router, limits: &ReceiverLimits) -> Result<BoundReceiver, ReceiverError> {
    let bind_error = |source| ReceiverError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    tracing::info!(hooks = %bound, "push receiver listening (POST /hooks/<namespace>/<source>)");
    Ok(BoundReceiver {
        listener,
        addr: bound,
        router,
        limits: limits.clone(),
    })
}

impl BoundReceiver {
    /// The bound address (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets requests in flight finish
    /// within the grace period, and closes the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let BoundReceiver {
            listener,
            router,
            limits,
            ..
        } = self;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let connections = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        let graceful = GracefulShutdown::new();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(error) = done {
                        tracing::warn!(%error, "push receiver connection task failed");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, max = limits.max_connections, "push receiver at its connection limit; closing a new connection");
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let connection = graceful.watch(
                            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone())),
                        );
                        tasks.spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%peer, %error, "push receiver connection ended with an error");
                            }
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "push receiver cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tasks.len(),
                "push receiver grace period over; closing the remaining connections"
            );
        }
        tasks.shutdown().await;
        tracing::info!("push receiver stopped");
    }
}
