//! One reconcile of a Guard: read its GitSource, load the desired state of the tracked
//! revision, sync it to the cluster and write the Guard's status. A function of (Guard,
//! context), so the leader's controller loop and tests call the same thing.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::apply::{Applier, Sync};
use crate::api::{ConditionType, Counts, GitSource, Guard, GuardStatus};
use crate::config::{ConfigError, git_reference};
use crate::desired::{
    DesiredCache, DesiredError, DesiredSet, GuardId, GuardPolicy, LoadError, SourceSettings, load_guard,
};

/// Why a Guard could not be reconciled (each variant is a metric label).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The GitSource named by sourceRef is missing.
    #[error("GitSource {0} not found")]
    MissingSource(String),
    /// The GitSource or Guard spec is invalid.
    #[error("{0}")]
    Spec(String),
    /// Git could not be read or rendered.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loader task failed.
    #[error("desired-state loader failed: {0}")]
    Task(String),
}

impl ReconcileError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "kube",
            ReconcileError::MissingSource(_) => "missing_source",
            ReconcileError::Spec(_) => "spec",
            ReconcileError::Load(_) => "load",
            ReconcileError::Task(_) => "task",
        }
    }
}

impl From<ConfigError> for ReconcileError {
    fn from(error: ConfigError) -> Self {
        ReconcileError::Spec(error.to_string())
    }
}

impl From<DesiredError> for ReconcileError {
    fn from(error: DesiredError) -> Self {
        ReconcileError::Spec(error.to_string())
    }
}

/// What a reconcile needs.
pub struct Context {
    /// Client for reading sources and writing status.
    pub client: Client,
    /// Applies and prunes.
    pub applier: Applier,
    /// Desired sets by (guard, commit).
    pub cache: DesiredCache,
}

fn condition(kind: ConditionType, ok: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: kind.as_str().to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// The desired state a reconcile of `guard` applies: its GitSource (`spec.sourceRef`, in the
/// Guard's namespace unless it names one) read from the cluster, and the tracked revision
/// loaded and rendered under the Guard's policy (render settings, ignore rules,
/// targetNamespace). `driftguard diff --guard` uses it to show exactly what a sync would do.
pub async fn load_desired(
    guard: &Guard,
    client: &Client,
    cache: &DesiredCache,
) -> Result<Arc<DesiredSet>, ReconcileError> {
    let namespace = guard.namespace().unwrap_or_else(|| "default".to_owned());
    let id = GuardId {
        namespace: namespace.clone(),
        name: guard.name_any(),
    };
    let source_namespace = guard
        .spec
        .source_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let source_id = format!("{source_namespace}/{}", guard.spec.source_ref.name);
    let source = Api::<GitSource>::namespaced(client.clone(), &source_namespace)
        .get_opt(&guard.spec.source_ref.name)
        .await?
        .ok_or_else(|| ReconcileError::MissingSource(source_id.clone()))?;
    let settings = SourceSettings {
        id: source_id.clone(),
        url: source.spec.url.clone(),
        reference: git_reference(&source_id, source.spec.reference.as_ref())?,
    };
    let policy = Arc::new(GuardPolicy::new(id, &guard.spec, &source.spec.url)?);
    let cache = cache.clone();
    Ok(
        tokio::task::spawn_blocking(move || load_guard(policy, &settings, &cache))
            .await
            .map_err(|e| ReconcileError::Task(e.to_string()))??,
    )
}

/// Reconcile `guard` once and record the result in its status. Returns the status written.
pub async fn reconcile_guard(guard: &Guard, ctx: &Context) -> Result<GuardStatus, ReconcileError> {
    let set = load_desired(guard, &ctx.client, &ctx.cache).await?;
    let id = set.guard.id.clone();
    let namespace = id.namespace.clone();

    let previous = guard.status.clone().unwrap_or_default();
    let generation = guard.metadata.generation;
    let mut status = GuardStatus {
        observed_generation: generation,
        last_fetched_revision: Some(set.revision.reference.clone()),
        ..previous.clone()
    };
    if guard.spec.suspend {
        status.conditions = vec![condition(
            ConditionType::Ready,
            false,
            "Suspended",
            "suspend is true: nothing is applied, pruned or healed".to_owned(),
            generation,
        )];
    } else {
        let Sync { outcome, inventory, .. } = ctx
            .applier
            .sync(&set.objects, &previous.inventory, &id, &guard.spec.prune)
            .await;
        status.inventory = inventory;
        status.counts = Counts {
            objects: i64::try_from(set.objects.len()).unwrap_or(i64::MAX),
            ..previous.counts
        };
        let failures: Vec<String> = outcome
            .apply_failed
            .iter()
            .chain(&outcome.prune_failed)
            .map(|f| format!("{}: {}", f.key, f.message))
            .collect();
        status.conditions = if failures.is_empty() {
            status.last_applied_revision = Some(set.revision.commit.clone());
            vec![condition(
                ConditionType::Ready,
                true,
                "Applied",
                format!("applied {} ({} objects)", set.revision.reference, set.objects.len()),
                generation,
            )]
        } else {
            vec![condition(
                ConditionType::Ready,
                false,
                "ApplyFailed",
                format!("{} object(s) failed: {}", failures.len(), failures.join("; ")),
                generation,
            )]
        };
    }
    Api::<Guard>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &id.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(status)
}
