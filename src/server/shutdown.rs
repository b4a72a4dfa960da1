//! Shutdown: the process signals that start it, and the broadcast every server task watches.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves when the process receives SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C; only SIGTERM will stop the server");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// A cloneable view of "has shutdown started?".
#[derive(Debug, Clone)]
pub(super) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown has started (at once if it already has).
    pub(super) async fn started(&mut self) {
        // An error means the trigger is gone, which only happens when the server is ending.
        let _ = self.0.wait_for(|started| *started).await;
    }
}

/// Starts shutdown when `signal` resolves. Abort the returned task once the server has ended.
pub(super) fn trigger_on(signal: impl Future<Output = ()> + Send + 'static) -> (Shutdown, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
        // Keep the sender so watchers see `true` rather than a closed channel.
        tx.closed().await;
    });
    (Shutdown(rx), task)
}
