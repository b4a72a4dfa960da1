//! Executes a [`Plan`] against the cluster: reads the live snapshot the plan needs, then
//! server-side applies (one stable field manager, `force`) and prunes (Background, with a uid
//! precondition). Kinds are resolved by discovery, cached and refreshed once on a miss. Every
//! write has a timeout; one object's failure never stops the rest.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Discovery};
use tokio::sync::RwLock;

use super::{
    Applied, GroupKind, InventoryEntry, LiveObject, LiveSnapshot, ObjectKey, Plan, PlanFacts, SkipReason, WaitReason,
    next_inventory, plan,
};
use crate::api::PruneSpec;
use crate::desired::{DesiredObject, GuardId};

/// driftguard's one field manager for everything it applies.
pub const FIELD_MANAGER: &str = "driftguard";

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
    /// Objects that cannot be applied yet, and why.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
}

/// Applies and prunes through one client. Clones share the discovery cache.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    discovery: Arc<RwLock<Arc<Discovery>>>,
    timeout: Duration,
}

impl Applier {
    /// Run discovery once; `timeout` bounds every single read or write.
    pub async fn new(client: Client, timeout: Duration) -> Result<Self, ApplyError> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(Applier {
            client,
            discovery: Arc::new(RwLock::new(Arc::new(discovery))),
            timeout,
        })
    }

    /// The API for a kind, refreshing discovery once when the kind is unknown (a CRD that was
    /// just established).
    async fn api(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, String> {
        let (resource, scope) = self.resource(group, version, kind).await?;
        Ok(match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The resource serving a kind, and its scope, from discovery (refreshed once on a miss).
    pub async fn resource(&self, group: &str, version: &str, kind: &str) -> Result<(ApiResource, Scope), String> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resolve = |discovery: &Discovery| discovery.resolve_gvk(&gvk);
        let cached = self.discovery.read().await.clone();
        let mut found: Option<(ApiResource, Scope)> = resolve(&cached).map(|(r, c)| (r, c.scope));
        if found.is_none() {
            match Discovery::new(self.client.clone()).run().await {
                Ok(fresh) => {
                    found = resolve(&fresh).map(|(r, c)| (r, c.scope));
                    *self.discovery.write().await = Arc::new(fresh);
                }
                Err(error) => return Err(format!("API discovery failed: {error}")),
            }
        }
        found.ok_or_else(|| format!("the cluster does not serve {kind} in {group}/{version}"))
    }

    /// The custom (non-built-in) kinds among `desired` that the cluster serves, i.e. whose CRD
    /// is Established.
    pub async fn served_custom_kinds(&self, desired: &[DesiredObject]) -> HashSet<GroupKind> {
        let mut served = HashSet::new();
        for object in desired {
            if crate::desired::kinds::builtin(&object.group, &object.kind).is_some() {
                continue;
            }
            if self
                .api(&object.group, &object.version, &object.kind, None)
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
                    .api(&key.group, &version, &key.kind, key.namespace.as_deref())
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
        let live = self.snapshot(desired, inventory).await;
        let established = self.served_custom_kinds(desired).await;
        let facts = PlanFacts {
            guard,
            established: &established,
            prune,
            held,
        };
        let plan = plan(desired, inventory, &live, &facts);
        let outcome = self.execute(&plan).await;
        Sync {
            inventory: next_inventory(&plan, &outcome.applied, &outcome.pruned),
            skipped: plan.skipped.clone(),
            waiting: plan.waiting.clone(),
            outcome,
        }
    }

    /// Server-side apply one desired object (manager `driftguard`, force); returns the stored
    /// object's metadata.
    pub async fn apply_one(&self, object: &DesiredObject) -> Result<ObjectMeta, String> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self
            .api(
                &object.group,
                &object.version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await?;
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

    /// Apply then prune, in the plan's order.
    pub async fn execute(&self, plan: &Plan<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        for step in &plan.apply {
            match self.apply_one(step.object).await {
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
                    .api(&key.group, &step.version, &key.kind, key.namespace.as_deref())
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
