//! The Guard controller loop: a kube-runtime `Controller` over every Guard, reconciling only
//! while this replica holds the Lease ([`super::leader`]); followers requeue and wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio::sync::watch;

use super::controller::{Context, ReconcileError, reconcile_guard};
use crate::api::Guard;

/// How often a follower checks whether it leads now.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(2);
/// Retry after a failed reconcile.
const ERROR_RETRY: Duration = Duration::from_secs(5);

struct Shared {
    ctx: Context,
    leading: watch::Receiver<bool>,
}

async fn reconcile(guard: Arc<Guard>, shared: Arc<Shared>) -> Result<Action, ReconcileError> {
    if !*shared.leading.borrow() {
        return Ok(Action::requeue(FOLLOWER_RECHECK));
    }
    reconcile_guard(&guard, &shared.ctx).await?;
    Ok(Action::requeue(guard.spec.interval.0.max(Duration::from_secs(1))))
}

fn error_policy(guard: Arc<Guard>, error: &ReconcileError, _shared: Arc<Shared>) -> Action {
    tracing::warn!(guard = %kube::ResourceExt::name_any(guard.as_ref()), reason = error.label(), %error, "reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

/// Reconcile every Guard in the cluster until `shutdown`, writing only while `leading`.
pub async fn run_guards(
    ctx: Context,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let guards: Api<Guard> = Api::all(ctx.client.clone());
    let shared = Arc::new(Shared { ctx, leading });
    Controller::new(guards, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}
