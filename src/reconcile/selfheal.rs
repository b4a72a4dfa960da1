//! Self-heal: watch managed objects and re-apply Git when another field manager drifts a
//! declared field, within seconds instead of at the next full reconcile.
//!
//! One kube-runtime watcher per kind in a tracked Guard's desired set, filtered by the managed
//! label, feeds the pure [`Healer`]; corrections are single-object server-side applies through
//! the shared [`Applier`]. Each correction gets an Event on the object, a `drift.corrected`
//! audit record naming the field manager, and a count in the Guard's status. A writer that
//! keeps flipping an object back ends the correction loop: the object is held (the full
//! reconcile leaves it alone too), and the Guard gets a `Fighting` condition.
//!
//! Only the leader corrects; the Guard reconcile calls [`SelfHeal::track`] with each new desired
//! set *before* applying it, so the watchers never see the new revision as drift.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;

use super::ObjectKey;
use super::apply::Applier;
use super::delegation::{self, Delegated};
use super::events::{Events, reference};
use super::heal::{Heal, Healer};
use crate::api::{ConditionType, Guard, MANAGED_LABEL};
use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, FieldRecord, SCHEMA, now_rfc3339};
use crate::desired::{DesiredObject, DesiredSet, GuardId};
use crate::drift::FieldDrift;
use crate::telemetry::Metrics;

/// How long an applied correction waits for its own watch event before later events count again.
const OWN_WRITE_GRACE: Duration = Duration::from_secs(30);
/// Wait before retrying a kind that discovery cannot resolve (its CRD is not there yet).
const RESOLVE_RETRY: Duration = Duration::from_secs(10);

/// When a writer counts as fighting.
#[derive(Debug, Clone, Copy)]
pub struct HealSettings {
    /// More than `max_flips` corrections against one writer within `window` is a fight.
    pub max_flips: usize,
    /// The window flips are counted in.
    pub window: Duration,
}

impl Default for HealSettings {
    /// An HPA resyncs every 15 s: five flips in ten minutes is a fight, not a stray edit.
    fn default() -> Self {
        HealSettings {
            max_flips: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// A fight self-heal gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fight {
    /// The contested object.
    pub key: ObjectKey,
    /// The other writer (a field manager).
    pub manager: String,
    /// Contested fields.
    pub fields: Vec<String>,
    /// The `delegate` rule that would let the writer own the fields, as YAML.
    pub suggestion: String,
}

impl Fight {
    fn message(&self) -> String {
        if self.fields.is_empty() {
            return format!(
                "{} keeps being deleted outside Git; driftguard stopped recreating it: {}",
                self.key, self.suggestion
            );
        }
        format!(
            "{} keeps changing {} of {}; driftguard stopped correcting it. To let that writer own the field{} (anyone else is still denied), add to the Guard's spec:\n{}\nor drop the field from Git.",
            self.manager,
            self.fields.join(", "),
            self.key,
            if self.fields.len() == 1 { "" } else { "s" },
            self.suggestion
        )
    }
}

/// A correction in flight for one object.
enum Pending {
    /// Waiting out the backoff or the write. The watch keeps going meanwhile: what it delivered
    /// decides, once the write returns, whether the write's own event was already seen.
    Scheduled {
        seen: HashSet<String>,
        latest: Option<(String, serde_json::Value)>,
    },
    /// Written at `resource_version`, whose event has not arrived yet: earlier events are stale.
    Applied { resource_version: String, at: Instant },
}

struct Tracked {
    set: Arc<DesiredSet>,
    enabled: bool,
    index: HashMap<ObjectKey, usize>,
}

#[derive(Default)]
struct State {
    guards: HashMap<GuardId, Tracked>,
    owners: HashMap<ObjectKey, GuardId>,
    watched: HashMap<(String, String, String), tokio::task::AbortHandle>,
    pending: HashMap<ObjectKey, Pending>,
    fights: HashMap<ObjectKey, (GuardId, Fight)>,
    /// driftCorrected per Guard: the status value when first tracked plus this process's count.
    corrected: HashMap<GuardId, i64>,
    /// Appliers writing as a Guard's identity (README "Multi-tenancy"); absent: the shared one.
    writers: HashMap<GuardId, Applier>,
}

struct Inner {
    client: kube::Client,
    applier: Applier,
    events: Events,
    audit: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
    healer: Mutex<Healer>,
    state: Mutex<State>,
    /// The Guards that exist, once the controller shares its cache.
    alive: Mutex<Option<Store<Guard>>>,
    /// Where to say when a break-glass seen on a Guard's object runs out, so the Guard is
    /// reconciled then (Git restored at the expiry, not at the next interval).
    break_glass_ends: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(GuardId, time::OffsetDateTime)>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(state) = self.state.get_mut() {
            for handle in state.watched.values() {
                handle.abort();
            }
        }
    }
}

/// Watches managed objects and corrects drift; cheap to clone.
#[derive(Clone)]
pub struct SelfHeal {
    inner: Arc<Inner>,
}

/// Everything self-heal writes through.
pub struct HealDeps {
    /// Client for watches and status.
    pub client: kube::Client,
    /// The applier the reconcile uses (shares its discovery cache).
    pub applier: Applier,
    /// Event recorder.
    pub events: Events,
    /// Audit sink.
    pub audit: Arc<dyn AuditSink>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// True while this replica holds the Lease.
    pub leading: watch::Receiver<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SelfHeal {
    /// Self-heal with no Guard tracked yet; watchers start as Guards are tracked.
    pub fn new(deps: HealDeps, settings: HealSettings) -> Self {
        SelfHeal {
            inner: Arc::new(Inner {
                client: deps.client,
                applier: deps.applier,
                events: deps.events,
                audit: deps.audit,
                metrics: deps.metrics,
                leading: deps.leading,
                healer: Mutex::new(Healer::new(settings.window, settings.max_flips)),
                state: Mutex::new(State::default()),
                alive: Mutex::new(None),
                break_glass_ends: Mutex::new(None),
            }),
        }
    }

    /// Correct `guard`'s objects through `applier` (one acting as the Guard's identity).
    pub fn act_as(&self, guard: &GuardId, applier: Applier) {
        lock(&self.inner.state).writers.insert(guard.clone(), applier);
    }

    /// Heal `guard`'s objects against `set` from now on (`enabled` false: selfHeal off or
    /// suspended). `drift_corrected` is the Guard's status count, continued from.
    ///
    /// An object whose desired state or ignore rules changed starts over: a fight over it ends.
    pub fn track(&self, guard: &GuardId, set: Arc<DesiredSet>, enabled: bool, drift_corrected: i64) {
        let mut state = lock(&self.inner.state);
        let index: HashMap<ObjectKey, usize> = set
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (ObjectKey::of(o), i))
            .collect();
        let mut reset = Vec::new();
        if let Some(old) = state.guards.get(guard) {
            for (key, &i) in &index {
                let new = &set.objects[i];
                let changed = old
                    .index
                    .get(key)
                    .map(|&j| &old.set.objects[j])
                    .is_none_or(|old| old.object.get() != new.object.get() || old.ignore != new.ignore);
                if changed {
                    reset.push(key.clone());
                }
            }
        }
        state.owners.retain(|_, owner| owner != guard);
        for key in index.keys() {
            state.owners.insert(key.clone(), guard.clone());
        }
        state.corrected.entry(guard.clone()).or_insert(drift_corrected);
        let kinds: HashSet<(String, String, String)> = set
            .objects
            .iter()
            .map(|o| (o.group.clone(), o.version.clone(), o.kind.clone()))
            .collect();
        state.guards.insert(guard.clone(), Tracked { set, enabled, index });
        for key in &reset {
            state.fights.remove(key);
        }
        for kind in kinds {
            if let std::collections::hash_map::Entry::Vacant(slot) = state.watched.entry(kind) {
                let task = tokio::spawn(watch_kind(Arc::downgrade(&self.inner), slot.key().clone()));
                slot.insert(task.abort_handle());
            }
        }
        drop(state);
        let mut healer = lock(&self.inner.healer);
        for key in &reset {
            healer.reset(key);
        }
    }

    /// Check Guards against `guards` (the controller's cache): objects of a deleted Guard are
    /// no longer corrected.
    pub fn follow_guards(&self, guards: Store<Guard>) {
        *lock(&self.inner.alive) = Some(guards);
    }

    /// Tell `ends` the Guard and end time of every break-glass seen on a managed object.
    pub fn report_break_glass_ends(&self, ends: tokio::sync::mpsc::UnboundedSender<(GuardId, time::OffsetDateTime)>) {
        *lock(&self.inner.break_glass_ends) = Some(ends);
    }

    /// Stop healing a Guard (deleted).
    pub fn forget(&self, guard: &GuardId) {
        forget(&mut lock(&self.inner.state), guard);
    }

    /// Objects of `guard` held because of a fight.
    pub fn held(&self, guard: &GuardId) -> HashSet<ObjectKey> {
        lock(&self.inner.state)
            .fights
            .iter()
            .filter(|(_, (owner, _))| owner == guard)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The fights of `guard`, in object order.
    pub fn fights(&self, guard: &GuardId) -> Vec<Fight> {
        fights_of(&lock(&self.inner.state), guard)
    }

    /// The Guard's `Fighting` condition, when it fights someone.
    pub fn fighting_condition(&self, guard: &GuardId, generation: Option<i64>) -> Option<Condition> {
        fighting_condition(&self.fights(guard), generation)
    }

    /// `status.counts.driftCorrected` of `guard` as self-heal knows it.
    pub fn drift_corrected(&self, guard: &GuardId) -> Option<i64> {
        lock(&self.inner.state).corrected.get(guard).copied()
    }
}

fn forget(state: &mut State, guard: &GuardId) {
    state.guards.remove(guard);
    state.writers.remove(guard);
    state.owners.retain(|_, owner| owner != guard);
    state.fights.retain(|_, (owner, _)| owner != guard);
    state.corrected.remove(guard);
}

/// False once the controller's cache no longer has the Guard (true while there is no cache).
fn exists(inner: &Inner, guard: &GuardId) -> bool {
    lock(&inner.alive).as_ref().is_none_or(|store| {
        store
            .get(&reflector::ObjectRef::new(&guard.name).within(&guard.namespace))
            .is_some()
    })
}

fn fights_of(state: &State, guard: &GuardId) -> Vec<Fight> {
    let mut fights: Vec<Fight> = state
        .fights
        .values()
        .filter(|(owner, _)| owner == guard)
        .map(|(_, fight)| fight.clone())
        .collect();
    fights.sort_by(|a, b| a.key.cmp(&b.key));
    fights
}

fn fighting_condition(fights: &[Fight], generation: Option<i64>) -> Option<Condition> {
    if fights.is_empty() {
        return None;
    }
    let message = fights.iter().map(Fight::message).collect::<Vec<_>>().join("\n");
    Some(Condition {
        type_: ConditionType::Fighting.as_str().to_owned(),
        status: "True".to_owned(),
        reason: "FieldManagerConflict".to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    })
}

/// Watch one kind's managed objects for as long as self-heal lives (the task holds no strong
/// reference, so dropping the last [`SelfHeal`] ends it).
async fn watch_kind(inner: std::sync::Weak<Inner>, (group, version, kind): (String, String, String)) {
    let (client, applier) = match inner.upgrade() {
        Some(inner) => (inner.client.clone(), inner.applier.clone()),
        None => return,
    };
    let resource = loop {
        match applier.resource(&group, &version, &kind).await {
            Ok((resource, _)) => break resource,
            Err(message) => {
                tracing::warn!(%group, %version, %kind, %message, "cannot watch kind for self-heal; retrying");
                tokio::time::sleep(RESOLVE_RETRY).await;
            }
        }
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(item) = stream.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match item {
            Ok(watcher::Event::Apply(object)) => observe(&inner, &resource, object, Listed::No),
            // A (re)list after a dropped watch shows the current state: it may come after a
            // correction whose own event the cut watch never delivered.
            Ok(watcher::Event::InitApply(object)) => observe(&inner, &resource, object, Listed::Yes),
            Ok(watcher::Event::Delete(object)) => gone(&inner, &resource, &object),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => tracing::warn!(%kind, %error, "self-heal watch error; the watcher retries"),
        }
    }
}

/// What an observation asks for, decided under the locks and carried out after.
enum Act {
    Correct {
        guard: GuardId,
        manager: Option<String>,
        records: Vec<FieldRecord>,
        delay: Duration,
        delegated: Delegated,
    },
    ReportFight {
        guard: GuardId,
        fight: Fight,
    },
}

fn key_of(resource: &ApiResource, object: &DynamicObject) -> Option<ObjectKey> {
    let name = object.metadata.name.as_deref()?;
    Some(ObjectKey::new(
        &resource.group,
        &resource.kind,
        object.metadata.namespace.as_deref(),
        name,
    ))
}

/// Whether an observation comes from a (re)list rather than a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    Yes,
    No,
}

fn observe(inner: &Arc<Inner>, resource: &ApiResource, object: DynamicObject, listed: Listed) {
    if object.metadata.deletion_timestamp.is_some() {
        return;
    }
    let Some(key) = key_of(resource, &object) else {
        return;
    };
    let version = object.metadata.resource_version.clone().unwrap_or_default();
    match serde_json::to_value(&object) {
        Ok(live) => observe_live(
            inner,
            key,
            Seen::Live {
                version,
                object: live,
                listed,
            },
        ),
        Err(error) => tracing::warn!(%key, %error, "cannot read watched object"),
    }
}

/// The watch lost an object: deleted, or its managed label was removed. Look it up and decide
/// on what is there.
fn gone(inner: &Arc<Inner>, resource: &ApiResource, object: &DynamicObject) {
    let Some(key) = key_of(resource, object) else {
        return;
    };
    {
        let state = lock(&inner.state);
        let watched = state.owners.contains_key(&key) && !state.fights.contains_key(&key);
        if !*inner.leading.borrow() || !watched {
            return;
        }
    }
    let api: Api<DynamicObject> = match &key.namespace {
        Some(ns) => Api::namespaced_with(inner.client.clone(), ns, resource),
        None => Api::all_with(inner.client.clone(), resource),
    };
    let inner = inner.clone();
    let resource = resource.clone();
    tokio::spawn(async move {
        match api.get_opt(&key.name).await {
            Ok(Some(object)) => observe(&inner, &resource, object, Listed::Yes),
            Ok(None) => observe_live(&inner, key, Seen::Gone),
            Err(error) => {
                tracing::warn!(%key, %error, "cannot look up an object that left the watch; the next reconcile checks it")
            }
        }
    });
}

/// What the watch says about an object.
enum Seen {
    /// Its current state, from a watch event or a (re)list.
    Live {
        version: String,
        object: serde_json::Value,
        listed: Listed,
    },
    /// It is gone from the cluster.
    Gone,
}

/// Decide about one observed state of a managed object and start what it calls for.
fn observe_live(inner: &Arc<Inner>, key: ObjectKey, seen: Seen) {
    if !*inner.leading.borrow() {
        return;
    }
    let act = {
        let mut state = lock(&inner.state);
        match (state.pending.get_mut(&key), &seen) {
            (Some(Pending::Scheduled { seen: versions, latest }), Seen::Live { version, object, .. }) => {
                versions.insert(version.clone());
                *latest = Some((version.clone(), object.clone()));
                return;
            }
            (Some(Pending::Scheduled { .. }), Seen::Gone) => return, // the write in flight recreates it
            (Some(Pending::Applied { resource_version, at }), Seen::Live { version, listed, .. }) => {
                // A watch event at another version is from before our write; a list is not
                // (the watch was cut and relisted: our write's own event is never coming, and
                // waiting for it would ignore real drift for the whole grace period).
                if *listed == Listed::No && resource_version != version && at.elapsed() < OWN_WRITE_GRACE {
                    return;
                }
                state.pending.remove(&key);
            }
            (Some(Pending::Applied { .. }), Seen::Gone) => {
                state.pending.remove(&key);
            }
            (None, _) => {}
        }
        if state.fights.contains_key(&key) {
            return;
        }
        let Some(guard) = state.owners.get(&key).cloned() else {
            return; // a copied label: not ours
        };
        if !exists(inner, &guard) {
            forget(&mut state, &guard);
            return;
        }
        let Some(desired) = desired_of(&state, &guard, &key) else {
            return;
        };
        if let Seen::Live { object, .. } = &seen
            && let Some(until) = crate::admission::break_glass::active_until(object, time::OffsetDateTime::now_utc())
        {
            // Detached by break-glass: the Guard's reconcile restores Git when it runs out.
            if let Some(ends) = lock(&inner.break_glass_ends).as_ref() {
                let _ = ends.send((guard.clone(), until));
            }
            return;
        }
        let decision = match &seen {
            Seen::Live { object, .. } => {
                let delegated = delegation::judge(desired, object, inner.applier.hpa());
                lock(&inner.healer).observe(desired, object, delegated, Instant::now())
            }
            Seen::Gone => lock(&inner.healer).observe_deleted(desired, Instant::now()),
        };
        match decision {
            Heal::InSync => return,
            Heal::Correct {
                manager,
                fields,
                delay,
                delegated,
            } => {
                let records = fields
                    .iter()
                    .map(|d: &FieldDrift| FieldRecord::of(desired, d))
                    .collect();
                state.pending.insert(
                    key.clone(),
                    Pending::Scheduled {
                        seen: HashSet::new(),
                        latest: None,
                    },
                );
                Act::Correct {
                    guard,
                    manager,
                    records,
                    delay,
                    delegated,
                }
            }
            Heal::Fighting {
                manager,
                fields,
                suggestion,
            } => {
                let fight = Fight {
                    key: key.clone(),
                    manager,
                    fields: fields.iter().map(ToString::to_string).collect(),
                    suggestion,
                };
                state.fights.insert(key.clone(), (guard.clone(), fight.clone()));
                Act::ReportFight { guard, fight }
            }
        }
    };
    let inner = inner.clone();
    match act {
        Act::Correct {
            guard,
            manager,
            records,
            delay,
            delegated,
        } => {
            let correction = Correction {
                guard,
                key,
                manager,
                records,
                delegated,
            };
            tokio::spawn(async move { correct(&inner, correction, delay).await });
        }
        Act::ReportFight { guard, fight } => {
            tokio::spawn(async move { report_fight(&inner, guard, fight).await });
        }
    }
}

/// The write for `key` returned at `version`: wait for its event, or, when the watch already
/// delivered it, look at whatever came after it.
fn settle(inner: &Arc<Inner>, key: &ObjectKey, version: Option<String>) {
    let next = {
        let mut state = lock(&inner.state);
        match (state.pending.remove(key), version) {
            (Some(Pending::Scheduled { seen, .. }), Some(version)) if !seen.contains(&version) => {
                state.pending.insert(
                    key.clone(),
                    Pending::Applied {
                        resource_version: version,
                        at: Instant::now(),
                    },
                );
                None
            }
            (Some(Pending::Scheduled { latest, .. }), version) => {
                latest.filter(|(seen, _)| Some(seen) != version.as_ref())
            }
            _ => None,
        }
    };
    if let Some((version, object)) = next {
        // Nothing is pending any more, so where it came from does not matter.
        let listed = Listed::No;
        observe_live(
            inner,
            key.clone(),
            Seen::Live {
                version,
                object,
                listed,
            },
        );
    }
}

/// The desired object for `key` if healing is on for its Guard.
fn desired_of<'s>(state: &'s State, guard: &GuardId, key: &ObjectKey) -> Option<&'s DesiredObject> {
    let tracked = state.guards.get(guard).filter(|t| t.enabled)?;
    tracked.index.get(key).map(|&i| &tracked.set.objects[i])
}

/// One correction to write.
struct Correction {
    guard: GuardId,
    key: ObjectKey,
    /// The writer blamed.
    manager: Option<String>,
    records: Vec<FieldRecord>,
    /// Delegated fields delegates hold: left out of the apply, or written at their bound.
    delegated: Delegated,
}

async fn correct(inner: &Arc<Inner>, correction: Correction, delay: Duration) {
    let Correction {
        guard,
        key,
        manager,
        records,
        delegated,
    } = correction;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Git or leadership may have changed while waiting: apply what is desired now, if anything.
    let target = {
        let state = lock(&inner.state);
        let owner_is_guard = state.owners.get(&key) == Some(&guard);
        let applier = state.writers.get(&guard).unwrap_or(&inner.applier).clone();
        desired_of(&state, &guard, &key)
            .filter(|_| owner_is_guard && *inner.leading.borrow())
            .map(|d| {
                (
                    d.clone(),
                    state.guards.get(&guard).map(|t| t.set.revision.commit.clone()),
                    applier,
                )
            })
    };
    let Some((desired, revision, applier)) = target else {
        settle(inner, &key, None);
        return;
    };
    let (result, reports) = applier.apply_one(&desired, &delegated).await;
    for report in &reports {
        report.observe(&inner.metrics);
    }
    let meta = match result {
        Ok(meta) => meta,
        Err(message) => {
            settle(inner, &key, None);
            tracing::warn!(%key, %message, "drift correction failed; the next change or reconcile retries");
            let regarding = reference(&key, &desired.version, None);
            inner
                .events
                .warning(
                    &regarding,
                    "CorrectionFailed",
                    "Correct",
                    format!("cannot restore Git: {message}"),
                )
                .await;
            return;
        }
    };
    settle(inner, &key, meta.resource_version.clone());
    let total = {
        let mut state = lock(&inner.state);
        let total = state.corrected.entry(guard.clone()).or_insert(0);
        *total += 1;
        *total
    };
    let blamed = manager.clone().unwrap_or_else(|| "an unknown writer".to_owned());
    let clamped: Vec<_> = delegated.clamped().cloned().collect();
    let paths: Vec<&str> = records
        .iter()
        .map(|r| r.path.as_str())
        .filter(|p| !clamped.iter().any(|h| h.path.to_string() == *p))
        .collect();
    let mut message = if paths.is_empty() && clamped.is_empty() {
        "recreated from Git (it was deleted outside Git)".to_owned()
    } else if paths.is_empty() {
        String::new()
    } else {
        format!("restored {} to Git (changed by {blamed})", paths.join(", "))
    };
    if !clamped.is_empty() {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&delegation::clamp_message(&clamped));
        for _ in &clamped {
            inner
                .metrics
                .count_delegate_bound_correction(&guard.to_string(), &key.kind);
        }
    }
    tracing::info!(%key, guard = %guard, manager = %blamed, fields = ?paths, "drift corrected");
    inner.metrics.count_drift_correction(&guard.to_string(), &key.kind);
    inner.audit.record(AuditEvent {
        schema: SCHEMA,
        seq: 0,
        time: now_rfc3339(),
        event: EventKind::DriftCorrected,
        actor: Actor::default(),
        object: key.audit_ref(&desired.version),
        operation: "APPLY".to_owned(),
        guard: guard.to_string(),
        revision: revision.unwrap_or_default(),
        fields: records,
        message: message.clone(),
        request_uid: String::new(),
        dry_run: false,
        field_manager: manager,
        prev_hash: String::new(),
        hash: String::new(),
    });
    let regarding = reference(&key, &desired.version, meta.uid);
    inner
        .events
        .normal(&regarding, "DriftCorrected", "Correct", message)
        .await;
    let counts = json!({"status": {"counts": {"driftCorrected": total}}});
    if let Err(error) = guards(inner, &guard)
        .patch_status(&guard.name, &PatchParams::default(), &Patch::Merge(&counts))
        .await
    {
        tracing::warn!(guard = %guard, %error, "cannot record the correction count");
    }
}

async fn report_fight(inner: &Inner, guard: GuardId, fight: Fight) {
    tracing::warn!(key = %fight.key, manager = %fight.manager, fields = ?fight.fields, "a writer keeps reverting Git; self-heal stopped correcting this object");
    let version = {
        let state = lock(&inner.state);
        desired_of(&state, &guard, &fight.key).map(|d| d.version.clone())
    };
    let Some(version) = version else {
        return;
    };
    inner.audit.record(AuditEvent {
        schema: SCHEMA,
        seq: 0,
        time: now_rfc3339(),
        event: EventKind::DriftFighting,
        actor: Actor::default(),
        object: fight.key.audit_ref(&version),
        operation: "APPLY".to_owned(),
        guard: guard.to_string(),
        revision: String::new(),
        fields: Vec::new(),
        message: fight.message(),
        request_uid: String::new(),
        dry_run: false,
        field_manager: Some(fight.manager.clone()),
        prev_hash: String::new(),
        hash: String::new(),
    });
    let regarding = reference(&fight.key, &version, None);
    inner
        .events
        .warning(&regarding, "Fighting", "Correct", fight.message())
        .await;
    // Conditions are one list: read, replace Fighting, write back.
    let api = guards(inner, &guard);
    let current = match api.get_opt(&guard.name).await {
        Ok(Some(current)) => current,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(guard = %guard, %error, "cannot read the Guard to set Fighting");
            return;
        }
    };
    let fights = fights_of(&lock(&inner.state), &guard);
    let mut conditions: Vec<Condition> = current.status.map(|s| s.conditions).unwrap_or_default();
    conditions.retain(|c| c.type_ != ConditionType::Fighting.as_str());
    conditions.extend(fighting_condition(&fights, current.metadata.generation));
    let patch = json!({"status": {"conditions": conditions}});
    if let Err(error) = api
        .patch_status(&guard.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(guard = %guard, %error, "cannot set the Fighting condition");
    }
}

fn guards(inner: &Inner, guard: &GuardId) -> Api<Guard> {
    Api::namespaced(inner.client.clone(), &guard.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fighting_condition_names_the_writer_and_the_rule() {
        let fight = Fight {
            key: ObjectKey::new("apps", "Deployment", Some("default"), "web"),
            manager: "horizontal-pod-autoscaler".into(),
            fields: vec!["spec.replicas".into()],
            suggestion: "delegate:\n  - kind: Deployment".into(),
        };
        assert!(fighting_condition(&[], None).is_none());
        let condition = fighting_condition(&[fight], Some(3)).unwrap();
        assert_eq!(condition.type_, "Fighting");
        assert_eq!(condition.status, "True");
        assert_eq!(condition.observed_generation, Some(3));
        assert!(
            condition
                .message
                .starts_with("horizontal-pod-autoscaler keeps changing spec.replicas of Deployment.apps default/web")
                && condition.message.contains("To let that writer own the field (anyone else is still denied), add to the Guard's spec:\ndelegate:\n  - kind: Deployment"),
            "{}",
            condition.message
        );
    }
}
