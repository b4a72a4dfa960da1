//! Executes a [`Plan`] against the cluster: reads the live snapshot the plan needs, then
//! server-side applies (one stable field manager, `force`) and prunes (Background, with a uid
//! precondition). Kinds are resolved by discovery, cached and refreshed on a miss, at most once
//! per pass (so many custom resources of a kind the cluster does not serve cost one refresh).
//! Custom resources of a CRD applied in the same plan wait, bounded by the Applier's CRD wait,
//! for that CRD to be Established and served; past the bound they are reported as waiting.
//! Every write has a timeout; one object's failure never stops the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::wait::{Condition, conditions};
use kube::{Client, Discovery};
use tokio::sync::RwLock;
use tokio::time::Instant;

use super::{
    Applied, GroupKind, InventoryEntry, LiveObject, LiveSnapshot, ObjectKey, Plan, PlanFacts, SkipReason, WaitReason,
    next_inventory, plan,
};
use crate::admission::break_glass;
use crate::api::PruneSpec;
use crate::desired::{DesiredObject, GuardId};

/// driftguard's one field manager for everything it applies.
pub const FIELD_MANAGER: &str = "driftguard";

/// How long one sync waits, in total, for the CRDs it applied to become Established.
pub const DEFAULT_CRD_WAIT: Duration = Duration::from_secs(30);
/// How often a CRD (and then discovery) is re-read while waiting for it.
const CRD_POLL: Duration = Duration::from_millis(250);

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// Why the applier could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Discovery failed.
    #[error("API discovery failed: {0}")]
    Discovery(kube::Error),
}

/// One object that could not be written or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which object.
    pub key: ObjectKey,
    /// What went wrong, for status and Events.
    pub message: String,
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Applied objects with their uids.
    pub applied: Vec<Applied>,
    /// Objects whose apply failed.
    pub apply_failed: Vec<Failure>,
    /// Objects deleted (or already gone).
    pub pruned: Vec<ObjectKey>,
    /// Objects whose delete failed (they stay in the inventory).
    pub prune_failed: Vec<Failure>,
    /// Apply steps not attempted because the CRD they need was not Established (and served)
    /// within the CRD wait.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
}

/// The result of one full pass over a Guard.
#[derive(Debug)]
pub struct Sync {
    /// What apply and prune did.
    pub outcome: Outcome,
    /// The inventory to record in the Guard's status.
    pub inventory: Vec<InventoryEntry>,
    /// Objects left alone, and why.
    pub skipped: Vec<(ObjectKey, SkipReason)>,
    /// Objects that were not applied because their CRD is not Established yet (neither before
    /// this pass nor within its CRD wait), and why. The next reconcile retries them.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
    /// Objects detached by an unexpired break-glass (left alone).
    pub detached: Vec<ObjectKey>,
    /// Objects whose break-glass ran out this pass: Git applied, annotations removed.
    pub ended: Vec<ObjectKey>,
}

/// State of one pass (a sync, or one public read or execute call).
#[derive(Default)]
struct Pass {
    /// Discovery was refreshed on a miss already; further misses in this pass do not refresh.
    refreshed: AtomicBool,
}

/// Applies and prunes through one client. Clones share the discovery cache.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    discovery: Arc<RwLock<Arc<Discovery>>>,
    timeout: Duration,
    crd_wait: Duration,
}

/// What became of one CRD this pass waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrdState {
    /// Established (and its kind discovered, if it defines it).
    Established,
    /// Not within the wait (or its own apply failed).
    NotEstablished,
}

/// True when `crd` defines and serves `gvk`.
fn defines(crd: &CustomResourceDefinition, gvk: &GroupVersionKind) -> bool {
    crd.spec.group == gvk.group
        && crd.spec.names.kind == gvk.kind
        && crd.spec.versions.iter().any(|v| v.name == gvk.version && v.served)
}

impl Applier {
    /// Run discovery once; `timeout` bounds every single read or write. Custom resources wait
    /// up to [`DEFAULT_CRD_WAIT`] for a CRD applied in the same pass ([`Applier::with_crd_wait`]).
    pub async fn new(client: Client, timeout: Duration) -> Result<Self, ApplyError> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(Applier {
            client,
            discovery: Arc::new(RwLock::new(Arc::new(discovery))),
            timeout,
            crd_wait: DEFAULT_CRD_WAIT,
        })
    }

    /// Bound the total time one sync waits for the CRDs it applied to become Established
    /// before applying their custom resources (zero: check once, never wait).
    #[must_use]
    pub fn with_crd_wait(mut self, wait: Duration) -> Self {
        self.crd_wait = wait;
        self
    }

    /// Run discovery again and cache it.
    async fn refresh_discovery(&self) -> Result<Arc<Discovery>, String> {
        let fresh = Arc::new(
            Discovery::new(self.client.clone())
                .run()
                .await
                .map_err(|error| format!("API discovery failed: {error}"))?,
        );
        *self.discovery.write().await = fresh.clone();
        Ok(fresh)
    }

    /// How the cluster serves a kind: from the cached discovery, refreshed on the pass's first
    /// miss (a CRD established since).
    async fn resolve(&self, pass: &Pass, gvk: &GroupVersionKind) -> Result<Option<(ApiResource, Scope)>, String> {
        let lookup = |discovery: &Discovery| discovery.resolve_gvk(gvk).map(|(r, c)| (r, c.scope));
        let cached = self.discovery.read().await.clone();
        if let Some(found) = lookup(&cached) {
            return Ok(Some(found));
        }
        if pass.refreshed.swap(true, Ordering::Relaxed) {
            return Ok(None);
        }
        let fresh = self.refresh_discovery().await?;
        Ok(lookup(&fresh))
    }

    /// The API for a kind (see [`Applier::resolve`] for when discovery is refreshed).
    /// The resource serving a kind, and its scope, from discovery (refreshed once on a miss).
    pub async fn resource(&self, group: &str, version: &str, kind: &str) -> Result<(ApiResource, Scope), String> {
        self.resolve(&Pass::default(), &GroupVersionKind::gvk(group, version, kind))
            .await?
            .ok_or_else(|| format!("the cluster does not serve {kind} in {group}/{version}"))
    }

    /// The API of a desired object's kind, in its namespace.
    async fn api_of(&self, pass: &Pass, object: &DesiredObject) -> Result<Api<DynamicObject>, String> {
        self.api(
            pass,
            &object.group,
            &object.version,
            &object.kind,
            object.namespace.as_deref(),
        )
        .await
    }

    async fn api(
        &self,
        pass: &Pass,
        group: &str,
        version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, String> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, scope) = self
            .resolve(pass, &gvk)
            .await?
            .ok_or_else(|| format!("the cluster does not serve {kind} in {group}/{version}"))?;
        Ok(match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The custom (non-built-in) kinds among `desired` that the cluster serves, i.e. whose CRD
    /// is Established.
    pub async fn served_custom_kinds(&self, desired: &[DesiredObject]) -> HashSet<GroupKind> {
        self.served_custom_kinds_in(&Pass::default(), desired).await
    }

    async fn served_custom_kinds_in(&self, pass: &Pass, desired: &[DesiredObject]) -> HashSet<GroupKind> {
        let mut served = HashSet::new();
        for object in desired {
            if crate::desired::kinds::builtin(&object.group, &object.kind).is_some() {
                continue;
            }
            if self
                .api(pass, &object.group, &object.version, &object.kind, None)
                .await
                .is_ok()
            {
                served.insert(GroupKind::new(&object.group, &object.kind));
            }
        }
        served
    }

    /// Read what the plan compares against: every desired object and every inventory entry.
    /// A kind that cannot be read is marked unknown, so the plan neither skips nor forgets it.
    pub async fn snapshot(&self, desired: &[DesiredObject], inventory: &[InventoryEntry]) -> LiveSnapshot {
        self.snapshot_in(&Pass::default(), desired, inventory).await
    }

    async fn snapshot_in(&self, pass: &Pass, desired: &[DesiredObject], inventory: &[InventoryEntry]) -> LiveSnapshot {
        let mut live = LiveSnapshot::new();
        let wanted = desired
            .iter()
            .map(|o| (ObjectKey::of(o), o.version.clone()))
            .chain(inventory.iter().map(|e| (e.key(), e.version.clone())));
        for (key, version) in wanted {
            if live.get(&key).is_some() {
                continue;
            }
            let read = async {
                let api = self
                    .api(pass, &key.group, &version, &key.kind, key.namespace.as_deref())
                    .await?;
                match tokio::time::timeout(self.timeout, api.get_opt(&key.name)).await {
                    Ok(Ok(object)) => Ok(object),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            };
            match read.await {
                Ok(Some(object)) => match serde_json::to_value(object) {
                    Ok(object) => live.insert(LiveObject { key, object }),
                    Err(error) => {
                        tracing::warn!(%key, %error, "unreadable live object");
                        live.mark_unknown(key.group_kind());
                    }
                },
                Ok(None) => {}
                Err(message) => {
                    tracing::warn!(%key, %message, "cannot read live object");
                    live.mark_unknown(GroupKind::new(&key.group, &key.kind));
                }
            }
        }
        live
    }

    /// One full pass for a Guard: read the live state, plan, apply and prune, and compute the
    /// next inventory.
    pub async fn sync(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
        guard: &GuardId,
        prune: &PruneSpec,
    ) -> Sync {
        self.sync_holding(desired, inventory, guard, prune, &HashSet::new())
            .await
    }

    /// [`Applier::sync`], leaving `held` objects (fights self-heal gave up on) as they are.
    pub async fn sync_holding(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
        guard: &GuardId,
        prune: &PruneSpec,
        held: &HashSet<ObjectKey>,
    ) -> Sync {
        let pass = Pass::default();
        let live = self.snapshot_in(&pass, desired, inventory).await;
        let established = self.served_custom_kinds_in(&pass, desired).await;
        // Break-glass: detached objects are left alone; expired ones get Git back (below).
        let now = time::OffsetDateTime::now_utc();
        let mut detached = HashSet::new();
        let mut expired = Vec::new();
        for object in desired {
            let key = ObjectKey::of(object);
            if let Some(current) = live.get(&key) {
                if break_glass::active_until(current, now).is_some() {
                    detached.insert(key);
                } else if break_glass::expired(current, now) {
                    expired.push(object);
                }
            }
        }
        let facts = PlanFacts {
            guard,
            established: &established,
            prune,
            held,
            detached: &detached,
        };
        let plan = plan(desired, inventory, &live, &facts);
        let outcome = self.execute_in(&pass, &plan).await;
        let mut ended = Vec::new();
        for object in expired {
            let key = ObjectKey::of(object);
            if outcome.apply_failed.iter().any(|f| f.key == key) {
                continue; // Git is not back yet: keep the annotations, retry next pass
            }
            match self.end_break_glass(&pass, object).await {
                Ok(()) => ended.push(key),
                Err(message) => tracing::warn!(%key, %message, "cannot remove expired break-glass annotations"),
            }
        }
        let mut waiting = plan.waiting.clone();
        waiting.extend(outcome.waiting.iter().cloned());
        Sync {
            inventory: next_inventory(&plan, &outcome.applied, &outcome.pruned),
            skipped: plan.skipped.clone(),
            waiting,
            detached: detached.into_iter().collect(),
            ended,
            outcome,
        }
    }

    /// Remove the break-glass annotations of `object` (its time is up and Git is applied).
    async fn end_break_glass(&self, pass: &Pass, object: &DesiredObject) -> Result<(), String> {
        let api = self.api_of(pass, object).await?;
        let patch = serde_json::json!({"metadata": {"annotations": {
            break_glass::BREAK_GLASS_ANNOTATION: null,
            break_glass::EXPIRES_ANNOTATION: null,
        }}});
        match tokio::time::timeout(
            self.timeout,
            api.patch(&object.name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Wait for the CRD `name` (applied earlier in this pass, unless its apply failed) to be
    /// Established and for discovery to serve `gvk`, until `deadline`. A CRD that is
    /// Established but does not define `gvk` at all ends the wait at once: the apply then fails
    /// with "the cluster does not serve", which is the error to fix.
    async fn await_crd(&self, name: &str, gvk: &GroupVersionKind, applied: bool, deadline: Instant) -> CrdState {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let is_established = conditions::is_crd_established();
        let mut established: Option<CustomResourceDefinition> = None;
        loop {
            if established.is_none() {
                match tokio::time::timeout(self.timeout, crds.get_opt(name)).await {
                    Ok(Ok(crd)) => established = crd.filter(|crd| is_established.matches_object(Some(crd))),
                    Ok(Err(error)) => tracing::debug!(crd = name, %error, "reading CRD"),
                    Err(_) => tracing::debug!(crd = name, "reading CRD timed out"),
                }
            }
            if let Some(crd) = &established {
                match self.refresh_discovery().await {
                    Ok(discovery) if discovery.resolve_gvk(gvk).is_some() => return CrdState::Established,
                    Ok(_) if !defines(crd, gvk) => return CrdState::Established,
                    Ok(_) => tracing::debug!(crd = name, "Established but not discovered yet"),
                    Err(message) => tracing::debug!(crd = name, %message, "refreshing discovery"),
                }
            }
            // A CRD whose own apply failed is checked once: it may exist from before.
            let now = Instant::now();
            if !applied || now >= deadline {
                return CrdState::NotEstablished;
            }
            tokio::time::sleep(CRD_POLL.min(deadline - now)).await;
        }
    }

    /// Apply then prune, in the plan's order. An apply step that requires a CRD waits for it
    /// (all such waits share one [`Applier::with_crd_wait`] budget); steps whose CRD is not
    /// ready in time go to [`Outcome::waiting`].
    pub async fn execute(&self, plan: &Plan<'_>) -> Outcome {
        self.execute_in(&Pass::default(), plan).await
    }

    /// Server-side apply one desired object (manager `driftguard`, force); returns the stored
    /// object's metadata.
    pub async fn apply_one(&self, object: &DesiredObject) -> Result<ObjectMeta, String> {
        self.apply_in(&Pass::default(), object).await
    }

    async fn apply_in(&self, pass: &Pass, object: &DesiredObject) -> Result<ObjectMeta, String> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.api_of(pass, object).await?;
        match tokio::time::timeout(
            self.timeout,
            api.patch(&object.name, &params, &Patch::Apply(&object.object)),
        )
        .await
        {
            Ok(Ok(applied)) => Ok(applied.metadata),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn execute_in(&self, pass: &Pass, plan: &Plan<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut deadline: Option<Instant> = None;
        let mut crds: HashMap<&str, CrdState> = HashMap::new();
        for step in &plan.apply {
            let object = step.object;
            if let Some(crd) = step.requires_crd.as_deref() {
                let state = match crds.get(crd) {
                    Some(state) => *state,
                    None => {
                        let applied = !outcome
                            .apply_failed
                            .iter()
                            .any(|f| f.key.group == CRD_GROUP && f.key.kind == CRD_KIND && f.key.name == crd);
                        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.crd_wait);
                        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
                        let state = self.await_crd(crd, &gvk, applied, deadline).await;
                        if state == CrdState::NotEstablished {
                            tracing::info!(crd, wait = ?self.crd_wait, "CRD not Established in time; its custom resources wait for the next reconcile");
                        }
                        crds.insert(crd, state);
                        state
                    }
                };
                if state == CrdState::NotEstablished {
                    outcome
                        .waiting
                        .push((step.key.clone(), WaitReason::CrdNotEstablished { crd: crd.to_owned() }));
                    continue;
                }
            }
            let result = self.apply_in(pass, object).await;
            match result {
                Ok(meta) => outcome.applied.push(Applied {
                    key: step.key.clone(),
                    uid: meta.uid,
                }),
                Err(message) => {
                    tracing::warn!(key = %step.key, %message, "apply failed");
                    outcome.apply_failed.push(Failure {
                        key: step.key.clone(),
                        message,
                    });
                }
            }
        }
        for step in &plan.prune {
            let params = DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                preconditions: step.uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let key = &step.key;
            let result = async {
                let api = self
                    .api(pass, &key.group, &step.version, &key.kind, key.namespace.as_deref())
                    .await?;
                match tokio::time::timeout(self.timeout, api.delete(&key.name, &params)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            };
            match result.await {
                Ok(()) => outcome.pruned.push(key.clone()),
                Err(message) => {
                    tracing::warn!(%key, %message, "prune failed; kept in the inventory for the next reconcile");
                    outcome.prune_failed.push(Failure {
                        key: key.clone(),
                        message,
                    });
                }
            }
        }
        outcome
    }
}
