//! Shutdown: the process signals that start it, and the phases every server task watches.
//!
//! The sequence (see the module docs of [`super`]): the first signal starts the *drain*
//! ([`Phase::Draining`]: `/readyz` answers 503, everything else is still served) and after the
//! drain delay (or at a second signal, whichever comes first) the *close*
//! ([`Phase::Closing`]: the listener closes and open connections finish their current request).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The signals that stop the process: SIGTERM (what the kubelet sends) and Ctrl-C (SIGINT).
/// Listening starts at [`Signals::listen`], so a signal that arrives between two
/// [`Signals::next`] calls is not lost.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening for SIGTERM and Ctrl-C (must be called inside a Tokio runtime).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(stream) => Some(stream),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}; only the other signal will stop the server");
                    None
                }
            };
            Self {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "Ctrl-C"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves at the next SIGTERM or Ctrl-C, with the signal's name.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(stream: Option<&mut tokio::signal::unix::Signal>) {
                match stream {
                    // `None` means the stream ended, which Tokio only does at runtime shutdown.
                    Some(stream) => {
                        if stream.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(self.terminate.as_mut()) => "SIGTERM",
                () = recv(self.interrupt.as_mut()) => "Ctrl-C",
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

/// Where shutdown is; the order is the order of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Serving and (if the admission is) ready.
    Serving,
    /// Shutdown has started: not ready, still serving everything, still accepting.
    Draining,
    /// The listener is closed; open connections finish their current request.
    Closing,
}

/// A cloneable view of the shutdown [`Phase`].
#[derive(Debug, Clone)]
pub(super) struct Shutdown(watch::Receiver<Phase>);

impl Shutdown {
    /// A view that stays in [`Phase::Serving`] (for a router built outside a server).
    pub(super) fn never() -> Self {
        Self(watch::channel(Phase::Serving).1)
    }

    /// True once shutdown has started (draining or closing): the server is no longer ready.
    pub(super) fn is_draining(&self) -> bool {
        *self.0.borrow() >= Phase::Draining
    }

    /// Resolves once the close has started (at once if it already has).
    pub(super) async fn closing(&mut self) {
        // An error means the trigger is gone, which only happens when the server is ending.
        let _ = self.0.wait_for(|phase| *phase >= Phase::Closing).await;
    }
}

/// The sender side, created before the router so it can report the drain on `/readyz`.
#[derive(Debug)]
pub(super) struct Trigger(watch::Sender<Phase>);

impl Trigger {
    /// A trigger in [`Phase::Serving`] and the view it drives.
    pub(super) fn new() -> (Self, Shutdown) {
        let (tx, rx) = watch::channel(Phase::Serving);
        (Self(tx), Shutdown(rx))
    }

    /// Drives the phases: [`Phase::Draining`] when `shutdown` resolves, [`Phase::Closing`]
    /// after `drain_delay` or as soon as `skip_drain` resolves. Abort the returned task once
    /// the server has ended.
    pub(super) fn spawn(
        self,
        drain_delay: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
        skip_drain: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let Trigger(tx) = self;
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(Phase::Draining);
            if !drain_delay.is_zero() {
                tracing::info!(
                    drain_delay = ?drain_delay,
                    "draining: /readyz answers 503 so endpoints stop routing here; still serving every request until the drain delay is over"
                );
                tokio::select! {
                    () = tokio::time::sleep(drain_delay) => tracing::info!("drain delay over"),
                    () = skip_drain => tracing::info!("second signal: skipping the rest of the drain delay"),
                }
            }
            let _ = tx.send(Phase::Closing);
            // Keep the sender so watchers see `Closing` rather than a closed channel.
            tx.closed().await;
        })
    }
}
