//! The controller loops: a kube-runtime `Controller` over every GitSource (fetch on the
//! source's interval) and one over every Guard (full reconcile on the Guard's interval, and at
//! once when the status of its GitSource changes, i.e. a new commit was fetched). Both
//! reconcile only while this replica holds the Lease ([`super::leader`]); followers requeue
//! and wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use super::controller::{Context, ReconcileError, reconcile_guard};
use super::source::{SourceContext, reconcile_source};
use crate::api::{GitSource, Guard};

/// How often a follower checks whether it leads now.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(2);
/// Retry after a failed reconcile.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// The shortest requeue, whatever the spec says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

struct Shared {
    ctx: Context,
    leading: watch::Receiver<bool>,
}

async fn reconcile(guard: Arc<Guard>, shared: Arc<Shared>) -> Result<Action, ReconcileError> {
    match while_leading(&shared.leading, reconcile_guard(&guard, &shared.ctx)).await? {
        Some(status) => {
            let until = status.break_glass_until.as_deref().and_then(|until| {
                time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).ok()
            });
            let now = time::OffsetDateTime::now_utc();
            Ok(Action::requeue(next_guard_pass(guard.spec.interval.0, until, now)))
        }
        None => Ok(Action::requeue(FOLLOWER_RECHECK)),
    }
}

/// When a Guard is reconciled next: after its interval, or just after the earliest break-glass
/// on its objects runs out (so Git is restored then, not up to an interval later).
fn next_guard_pass(
    interval: Duration,
    break_glass_until: Option<time::OffsetDateTime>,
    now: time::OffsetDateTime,
) -> Duration {
    let interval = interval.max(MIN_INTERVAL);
    let Some(until) = break_glass_until else {
        return interval;
    };
    // A second past the end, so the pass finds the session over.
    let left = Duration::try_from(until - now).unwrap_or_default() + Duration::from_secs(1);
    interval.min(left.max(MIN_INTERVAL))
}

/// Each Guard named on `ends`, a second after its break-glass runs out.
fn at_break_glass_ends(
    ends: tokio::sync::mpsc::UnboundedReceiver<(crate::desired::GuardId, time::OffsetDateTime)>,
) -> impl futures_util::Stream<Item = ObjectRef<Guard>> + Send + 'static {
    let (due, wakes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut ends = ends;
        while let Some((guard, until)) = ends.recv().await {
            let wait = next_guard_pass(Duration::MAX, Some(until), time::OffsetDateTime::now_utc());
            let due = due.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = due.send(ObjectRef::new(&guard.name).within(&guard.namespace));
            });
        }
    });
    futures_util::stream::unfold(wakes, |mut wakes| async move {
        wakes.recv().await.map(|guard| (guard, wakes))
    })
}

/// Run `work` only while this replica leads: losing the Lease drops it mid-flight (its
/// in-flight request is cancelled and nothing after it is written). A follower or a dropped
/// pass comes back after [`FOLLOWER_RECHECK`].
async fn while_leading<T>(
    leading: &watch::Receiver<bool>,
    work: impl Future<Output = Result<T, ReconcileError>>,
) -> Result<Option<T>, ReconcileError> {
    let mut lost = leading.clone();
    if !*lost.borrow_and_update() {
        return Ok(None);
    }
    let lost_lease = async move {
        // A sender that is gone can no longer revoke leadership: keep the last word.
        if lost.wait_for(|leads| !*leads).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = work => result.map(Some),
        () = lost_lease => {
            tracing::warn!("lost the Lease: stopped writing mid-reconcile");
            Ok(None)
        }
    }
}

fn error_policy(guard: Arc<Guard>, error: &ReconcileError, _shared: Arc<Shared>) -> Action {
    tracing::warn!(guard = %guard.name_any(), reason = error.label(), %error, "reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

/// True when `guard`'s sourceRef names `source` (an omitted namespace is the Guard's own).
pub fn uses_source(guard: &Guard, source: &GitSource) -> bool {
    let guard_namespace = guard.namespace();
    let wanted_namespace = guard.spec.source_ref.namespace.as_ref().or(guard_namespace.as_ref());
    guard.spec.source_ref.name == source.name_any() && wanted_namespace == source.namespace().as_ref()
}

/// The Guards among `guards` that read `source`.
pub fn guards_of_source(source: &GitSource, guards: &[Arc<Guard>]) -> Vec<ObjectRef<Guard>> {
    guards
        .iter()
        .filter(|guard| uses_source(guard, source))
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// A GitSource's fetched revision, as a predicate value (None: not fetched yet).
fn fetched_revision(source: &GitSource) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let revision = source.status.as_ref()?.last_fetched_revision.as_ref()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    revision.hash(&mut hasher);
    Some(hasher.finish())
}

/// Reconcile every Guard in the cluster until `shutdown`, writing only while `leading`. A
/// change to a GitSource (its status records each new commit) reconciles the Guards that
/// read it right away.
pub async fn run_guards(
    ctx: Context,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let guards: Api<Guard> = Api::all(ctx.client.clone());
    let sources: Api<GitSource> = Api::all(ctx.client.clone());
    // Only spec changes (a new generation) trigger a Guard: its own status writes (and
    // self-heal's counts) must not start another full sync.
    let (reader, writer) = reflector::store();
    let changed_guards = watcher(guards, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default());
    let controller = Controller::for_stream(changed_guards, reader);
    let store = controller.store();
    let (break_glass_ends, ended) = tokio::sync::mpsc::unbounded_channel();
    if let Some(heal) = &ctx.heal {
        // A deleted Guard's objects stay in the cluster, unmanaged: self-heal lets go of them.
        heal.follow_guards(store.clone());
        // A break-glass opened by an edit (no new generation, no reconcile) still ends on time.
        heal.report_break_glass_ends(break_glass_ends);
    }
    let shared = Arc::new(Shared { ctx, leading });
    controller
        // Only a new fetched revision concerns the Guards: not a push receiver's
        // `requested-at` annotation, nor the fetch time.
        .watches_stream(
            watcher(sources, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .predicate_filter(fetched_revision, Default::default()),
            move |source: GitSource| guards_of_source(&source, &store.state()),
        )
        .reconcile_on(at_break_glass_ends(ended))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "guard controller event");
            }
        })
        .await;
}

struct SourceShared {
    ctx: SourceContext,
    leading: watch::Receiver<bool>,
}

async fn reconcile_one_source(source: Arc<GitSource>, shared: Arc<SourceShared>) -> Result<Action, ReconcileError> {
    match while_leading(&shared.leading, reconcile_source(&source, &shared.ctx)).await? {
        Some(_) => Ok(Action::requeue(source.spec.interval.0.max(MIN_INTERVAL))),
        None => Ok(Action::requeue(FOLLOWER_RECHECK)),
    }
}

fn source_error_policy(source: Arc<GitSource>, error: &ReconcileError, _shared: Arc<SourceShared>) -> Action {
    tracing::warn!(source = %source.name_any(), reason = error.label(), %error, "source reconcile failed; retrying");
    Action::requeue(ERROR_RETRY)
}

/// Fetch every GitSource in the cluster on its interval until `shutdown`, writing status
/// only while `leading`. A fetch that fails is recorded in the status (Ready=False) and
/// retried at the interval.
pub async fn run_sources(
    ctx: SourceContext,
    leading: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let sources: Api<GitSource> = Api::all(ctx.client.clone());
    let shared = Arc::new(SourceShared { ctx, leading });
    Controller::new(sources, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_one_source, source_error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "source controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_next_pass_comes_when_a_break_glass_runs_out() {
        let at =
            |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        let now = at("2026-12-07T12:00:00Z");
        let hour = Duration::from_secs(3600);
        let cases = [
            (hour, None, hour),
            (hour, Some(at("2026-12-07T12:00:20Z")), Duration::from_secs(21)),
            (
                Duration::from_secs(10),
                Some(at("2026-12-07T12:00:20Z")),
                Duration::from_secs(10),
            ),
            (hour, Some(at("2026-12-07T11:59:00Z")), Duration::from_secs(1)),
            (Duration::MAX, Some(at("2026-12-07T12:00:05Z")), Duration::from_secs(6)),
            (Duration::ZERO, None, MIN_INTERVAL),
        ];
        for (interval, until, expected) in cases {
            assert_eq!(
                next_guard_pass(interval, until, now),
                expected,
                "{interval:?} {until:?}"
            );
        }
    }

    #[tokio::test]
    async fn losing_the_lease_drops_the_work_in_flight() {
        let (tx, leading) = watch::channel(false);
        let never = std::future::pending::<Result<(), ReconcileError>>();
        assert!(
            matches!(while_leading(&leading, never).await, Ok(None)),
            "a follower does nothing"
        );
        tx.send(true).unwrap();
        let done = while_leading(&leading, async { Ok(7) }).await;
        assert!(matches!(done, Ok(Some(7))));
        let stuck = tokio::spawn({
            let leading = leading.clone();
            async move { while_leading(&leading, std::future::pending::<Result<(), ReconcileError>>()).await }
        });
        tokio::task::yield_now().await;
        tx.send(false).unwrap();
        assert!(matches!(stuck.await.unwrap(), Ok(None)));
    }

    fn guard(namespace: &str, source_ref: serde_json::Value) -> Arc<Guard> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
                "metadata": {"name": format!("g-{namespace}-{}", source_ref["name"].as_str().unwrap_or("")), "namespace": namespace},
                "spec": {"sourceRef": source_ref, "path": "."}
            }))
            .unwrap(),
        )
    }

    fn source(namespace: &str, name: &str) -> GitSource {
        serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": "/srv/git"}
        }))
        .unwrap()
    }

    #[test]
    fn a_source_maps_to_the_guards_that_read_it() {
        let guards = [
            guard("team", json!({"name": "apps"})),
            guard("other", json!({"name": "apps", "namespace": "team"})),
            guard("other", json!({"name": "apps"})),
            guard("team", json!({"name": "infra"})),
        ];
        let names: Vec<String> = guards_of_source(&source("team", "apps"), &guards)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        assert_eq!(names, ["team/g-team-apps", "other/g-other-apps"]);
        assert!(guards_of_source(&source("nowhere", "apps"), &guards).is_empty());
    }
}
