//! What every replica runs, leader or not: its admission index follows each Guard's
//! `status.lastAppliedRevision` (DESIGN.md section 3: the revision enforced is the one the
//! leader applied), loaded from the Guard's GitSource. `/readyz` turns ready once the Guards
//! and GitSources are listed and every applied revision is loaded. A Guard the leader has not
//! applied yet has nothing to enforce and does not hold readiness back: a Guard whose Git is
//! broken must not keep every replica (and every other Guard's admission) out of service.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use super::kinds::ClusterKinds;
use super::source::checkout;
use crate::api::{GitSource, Guard};
use crate::desired::{ApiResources, DesiredCache, DesiredSet, DesiredStore, GuardId, GuardPolicy, load_guard};
use crate::source::{Fetcher, LinkTemplate};
use crate::telemetry::Metrics;

/// The Guard's identity.
pub fn guard_id(guard: &Guard) -> GuardId {
    GuardId {
        namespace: guard.namespace().unwrap_or_else(|| "default".to_owned()),
        name: guard.name_any(),
    }
}

/// One Guard to load: its policy, where its source is, and the commit its leader applied.
#[derive(Clone)]
struct Wanted {
    policy: Arc<GuardPolicy>,
    settings: crate::desired::SourceSettings,
}

/// What `guard` needs loaded (None: never applied, nothing to enforce yet), or why it cannot
/// be (logged; the last good set keeps serving). A remote source's commit is fetched into this
/// replica's mirror when it is not there yet.
async fn wanted(
    guard: &Guard,
    sources: &Store<GitSource>,
    client: &Client,
    fetcher: &Fetcher,
) -> Result<Option<Wanted>, String> {
    let Some(commit) = guard.status.as_ref().and_then(|s| s.last_applied_revision.clone()) else {
        return Ok(None);
    };
    let id = guard_id(guard);
    let namespace = guard
        .spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| id.namespace.clone());
    let key = ObjectRef::<GitSource>::new(&guard.spec.source_ref.name).within(&namespace);
    let source = sources
        .get(&key)
        .ok_or_else(|| format!("GitSource {namespace}/{} not found", guard.spec.source_ref.name))?;
    let settings = checkout(&source, Some(&commit), client, fetcher)
        .await
        .map_err(|e| e.to_string())?;
    let links = LinkTemplate::for_source(&source.spec.url, source.spec.web_url.as_deref())
        .map_err(|e| format!("GitSource {namespace}/{}: {e}", guard.spec.source_ref.name))?;
    let policy = GuardPolicy::new(id, &guard.spec, &source.spec.url)
        .map_err(|e| e.to_string())?
        .with_links(links);
    Ok(Some(Wanted {
        policy: Arc::new(policy),
        settings,
    }))
}

/// Keeps each Guard's last good set while a reload fails.
struct Loader {
    cache: DesiredCache,
    last_good: HashMap<GuardId, Arc<DesiredSet>>,
}

impl Loader {
    /// Load what the Guards want (blocking: libgit2) with the discovered `kinds`. Returns the
    /// sets, whether all loaded, and whether a load failed on a kind discovery did not know.
    fn load(&mut self, wanted: Vec<(GuardId, Result<Option<Wanted>, String>)>, kinds: &ApiResources) -> Loaded {
        let mut complete = true;
        let mut unknown_kind = false;
        let mut sets = Vec::with_capacity(wanted.len());
        let mut next = HashMap::new();
        for (id, wanted) in wanted {
            let loaded = wanted.and_then(|wanted| match wanted {
                Some(w) => load_guard(w.policy, &w.settings, &self.cache, kinds)
                    .map(Some)
                    .map_err(|e| {
                        unknown_kind |= e.is_unknown_kind();
                        e.to_string()
                    }),
                None => Ok(None),
            });
            match loaded {
                Ok(Some(set)) => {
                    next.insert(id, set.clone());
                    sets.push(set);
                }
                Ok(None) => {}
                Err(message) => {
                    complete = false;
                    tracing::error!(guard = %id, %message, "cannot load the applied revision; admission keeps the last good one");
                    if let Some(old) = self.last_good.get(&id) {
                        next.insert(id, old.clone());
                        sets.push(old.clone());
                    }
                }
            }
        }
        self.last_good = next;
        Loaded {
            sets,
            complete,
            unknown_kind,
        }
    }
}

/// What one [`Loader::load`] produced.
struct Loaded {
    sets: Vec<Arc<DesiredSet>>,
    complete: bool,
    unknown_kind: bool,
}

/// What [`follow_applied`] works with.
pub struct Follow {
    /// Client for Guards, GitSources and Secrets.
    pub client: Client,
    /// The admission index to publish to.
    pub store: Arc<DesiredStore>,
    /// Desired sets by (Guard, commit, spec).
    pub cache: DesiredCache,
    /// This replica's mirrors of remote sources.
    pub fetcher: Fetcher,
    /// Per-Guard object gauges.
    pub metrics: Arc<Metrics>,
}

/// Follow every Guard's applied revision into `store` until `shutdown`.
pub async fn follow_applied(follow: Follow, shutdown: impl Future<Output = ()> + Send + 'static) {
    let Follow {
        client,
        store,
        cache,
        fetcher,
        metrics,
    } = follow;
    let (guards, guard_writer) = reflector::store::<Guard>();
    let (sources, source_writer) = reflector::store::<GitSource>();
    let changed = Arc::new(Notify::new());
    let guard_events = reflector::reflector(
        guard_writer,
        watcher(Api::<Guard>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .map(|event| event.err().map(|e| e.to_string()));
    let source_events = reflector::reflector(
        source_writer,
        watcher(Api::<GitSource>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .map(|event| event.err().map(|e| e.to_string()));
    let notify = changed.clone();
    let drain = tokio::spawn(async move {
        let mut events = std::pin::pin!(futures_util::stream::select(guard_events, source_events));
        while let Some(error) = events.next().await {
            match error {
                Some(error) => tracing::warn!(%error, "watching Guards/GitSources; retrying"),
                None => notify.notify_one(),
            }
        }
    });
    let follow = async {
        if guards.wait_until_ready().await.is_err() || sources.wait_until_ready().await.is_err() {
            return;
        }
        let mut loader = Some(Loader {
            cache,
            last_good: HashMap::new(),
        });
        // Every replica discovers the cluster's kinds itself; once now, again on a miss.
        let kinds = ClusterKinds::new(client.clone());
        if let Err(error) = kinds.refresh().await {
            tracing::warn!(%error, "API discovery failed; retried when a kind is unknown");
        }
        loop {
            let Some(mut current) = loader.take() else {
                return;
            };
            let mut wants = Vec::new();
            for guard in guards.state() {
                wants.push((guard_id(&guard), wanted(&guard, &sources, &client, &fetcher).await));
            }
            let mut retried = false;
            let joined = loop {
                let table = kinds.table();
                let attempt = wants.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let loaded = current.load(attempt, &table);
                    (current, loaded)
                })
                .await;
                match joined {
                    // A kind discovery did not describe: a CRD created since; discover again.
                    Ok((back, loaded)) if loaded.unknown_kind && !retried => {
                        retried = true;
                        current = back;
                        if let Err(error) = kinds.refresh().await {
                            tracing::warn!(%error, "API discovery failed");
                            break Ok((current, loaded));
                        }
                    }
                    other => break other,
                }
            };
            match joined {
                Ok((back, loaded)) => {
                    loader = Some(back);
                    store.publish_reporting(loaded.sets, loaded.complete, &metrics);
                }
                Err(error) => {
                    tracing::error!(%error, "desired-state loader failed; admission keeps the last index");
                    return;
                }
            }
            changed.notified().await;
        }
    };
    tokio::select! {
        () = follow => {}
        () = shutdown => {}
    }
    drain.abort();
}
