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

use super::access::AccessReviewer;
use super::kinds::ClusterKinds;
use super::source::checkout;
use super::tenancy::{self, Identity, TenancySettings};
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
    /// Who the Guard writes as: admission protects only what that identity may write.
    identity: Identity,
}

/// What `guard` needs loaded (None: never applied, nothing to enforce yet), or why it cannot
/// be (logged; the last good set keeps serving). A remote source's commit is fetched into this
/// replica's mirror when it is not there yet.
async fn wanted(
    guard: &Guard,
    sources: &Store<GitSource>,
    client: &Client,
    fetcher: &Fetcher,
    tenancy: &TenancySettings,
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
    let identity = tenancy::identity(&id.namespace, guard.spec.service_account_name.as_deref(), tenancy);
    let links = LinkTemplate::for_source_or_none(
        &format!("{namespace}/{}", guard.spec.source_ref.name),
        &source.spec.url,
        source.spec.web_url.as_deref(),
    );
    let mut policy = GuardPolicy::new(id, &guard.spec, &source.spec.url)
        .map_err(|e| e.to_string())?
        .with_links(links);
    policy.created = guard.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string());
    Ok(Some(Wanted {
        policy: Arc::new(policy),
        settings,
        identity,
    }))
}

/// Keeps each Guard's last good set while a reload fails.
struct Loader {
    cache: DesiredCache,
    last_good: HashMap<GuardId, (Arc<DesiredSet>, Identity)>,
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
                    .map(|set| Some((set, w.identity)))
                    .map_err(|e| {
                        unknown_kind |= e.is_unknown_kind();
                        e.to_string()
                    }),
                None => Ok(None),
            });
            match loaded {
                Ok(Some((set, identity))) => {
                    next.insert(id, (set.clone(), identity.clone()));
                    sets.push((set, identity));
                }
                Ok(None) => {}
                Err(message) => {
                    complete = false;
                    tracing::error!(guard = %id, %message, "cannot load the applied revision; admission keeps the last good one");
                    if let Some((old, identity)) = self.last_good.get(&id) {
                        next.insert(id, (old.clone(), identity.clone()));
                        sets.push((old.clone(), identity.clone()));
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
    /// Each Guard's set with the identity it writes as.
    sets: Vec<(Arc<DesiredSet>, Identity)>,
    complete: bool,
    unknown_kind: bool,
}

/// Each loaded set cut down to what its Guard's identity may write (README "Multi-tenancy").
/// When the API cannot answer, the Guard's last reviewed set keeps serving; a Guard never
/// reviewed is left out and the store is not complete (not ready) until it is.
async fn permitted(
    access: &AccessReviewer,
    loaded: Loaded,
    reviewed: &mut HashMap<GuardId, Arc<DesiredSet>>,
) -> (Vec<Arc<DesiredSet>>, bool) {
    let mut complete = loaded.complete;
    let mut sets = Vec::with_capacity(loaded.sets.len());
    let mut next = HashMap::new();
    for (set, identity) in loaded.sets {
        let id = set.guard.id.clone();
        match access.review(&set, &identity).await {
            Ok(permitted) => {
                next.insert(id, permitted.set.clone());
                sets.push(permitted.set.clone());
            }
            Err(error) => {
                complete = false;
                tracing::error!(guard = %id, %error, "cannot review what the Guard may write; admission keeps its last reviewed set");
                if let Some(old) = reviewed.get(&id) {
                    next.insert(id, old.clone());
                    sets.push(old.clone());
                }
            }
        }
    }
    *reviewed = next;
    (sets, complete)
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
    /// Lockdown settings: who each Guard writes as.
    pub tenancy: TenancySettings,
    /// What Guards' identities may write (shared with the leader's reconciles).
    pub access: AccessReviewer,
}

/// Follow every Guard's applied revision into `store` until `shutdown`.
pub async fn follow_applied(follow: Follow, shutdown: impl Future<Output = ()> + Send + 'static) {
    let Follow {
        client,
        store,
        cache,
        fetcher,
        metrics,
        tenancy,
        access,
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
        let mut reviewed = HashMap::new();
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
                wants.push((
                    guard_id(&guard),
                    wanted(&guard, &sources, &client, &fetcher, &tenancy).await,
                ));
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
                    let (sets, complete) = permitted(&access, loaded, &mut reviewed).await;
                    store.publish_reporting(sets, complete, &metrics);
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
