//! One reconcile of a Guard: read its GitSource, load the desired state of the tracked
//! revision, sync it to the cluster and write the Guard's status. A function of (Guard,
//! context), so the leader's controller loop and tests call the same thing.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::apply::{Applier, Failure, Sync};
use super::events::{Events, reference};
use super::selfheal::SelfHeal;
use super::tenancy::{self, ImpersonateError, Impersonator, ReferenceError, TenancySettings};
use super::{InventoryEntry, SkipReason};
use crate::api::{ConditionType, Counts, GitSource, Guard, GuardStatus};
use crate::audit::{AuditEvent, AuditSink, EventKind, NullSink};
use crate::config::ConfigError;
use crate::desired::{DesiredCache, DesiredError, DesiredSet, GuardPolicy, LoadError};
use crate::source::{Fetcher, LinkTemplate};
use crate::telemetry::Metrics;

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
    /// The remote GitSource has no fetched revision yet.
    #[error(
        "GitSource {0} has not been fetched yet; it is read once the leader's first fetch succeeds (see its Ready condition)"
    )]
    NotFetched(String),
    /// The revision could not be fetched or opened for reading.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The GitSource does not allow this Guard's namespace (README "Multi-tenancy").
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// No client acting as the Guard's identity.
    #[error(transparent)]
    Impersonate(#[from] ImpersonateError),
    /// What the Guard's identity may write could not be asked (README "Multi-tenancy").
    #[error(transparent)]
    AccessReview(#[from] super::access::AccessReviewError),
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
            ReconcileError::NotFetched(_) => "not_fetched",
            ReconcileError::Source(_) => "source",
            ReconcileError::Reference(_) => "reference",
            ReconcileError::Impersonate(_) => "impersonate",
            ReconcileError::AccessReview(_) => "access_review",
        }
    }

    /// The Ready condition's reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "APIError",
            ReconcileError::MissingSource(_) => "SourceNotFound",
            ReconcileError::Spec(_) => "InvalidSpec",
            ReconcileError::Load(_) => "LoadFailed",
            ReconcileError::Task(_) => "InternalError",
            ReconcileError::NotFetched(_) => "SourceNotReady",
            ReconcileError::Source(_) => "FetchFailed",
            ReconcileError::Reference(error) => error.reason(),
            ReconcileError::Impersonate(_) => "ImpersonationFailed",
            ReconcileError::AccessReview(_) => "AccessReviewFailed",
        }
    }

    /// True when retrying alone will not help: the spec, the source or Git must change.
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            ReconcileError::MissingSource(_)
                | ReconcileError::Spec(_)
                | ReconcileError::Load(_)
                | ReconcileError::Reference(_)
        )
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
    /// Events on failing objects and on the Guard.
    pub events: Events,
    /// Self-heal, when this process runs it (None: full reconciles only).
    pub heal: Option<SelfHeal>,
    /// Where reconcile durations and prunes are counted.
    pub metrics: Arc<Metrics>,
    /// Mirrors of remote GitSources (shared with the GitSource controller).
    pub fetcher: Fetcher,
    /// `reconcile.applied` and `reconcile.pruned` records.
    pub audit: Arc<dyn AuditSink>,
    /// Lockdown settings: identities of Guards, cross-namespace references.
    pub tenancy: TenancySettings,
    /// Clients acting as Guards' identities.
    pub impersonator: Impersonator,
    /// What Guards' identities may write (shared with the admission index's loader).
    pub access: super::access::AccessReviewer,
}

impl Context {
    /// A context without self-heal, publishing Events as `driftguard`.
    pub fn new(client: Client, applier: Applier, cache: DesiredCache) -> Self {
        Context {
            events: Events::new(client.clone(), None),
            impersonator: Impersonator::new(None, client.clone()),
            access: super::access::AccessReviewer::new(client.clone()),
            tenancy: TenancySettings::default(),
            client,
            applier,
            cache,
            heal: None,
            metrics: Arc::new(Metrics::new()),
            fetcher: Fetcher::new(crate::config::default_git_cache_dir()),
            audit: Arc::new(NullSink),
        }
    }

    /// Heal drift between reconciles too.
    pub fn with_self_heal(mut self, heal: SelfHeal) -> Self {
        self.heal = Some(heal);
        self
    }
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
/// A GitSource of another namespace is read only when it allows the Guard's namespace
/// ([`tenancy::check_reference`]).
pub async fn load_desired(
    guard: &Guard,
    client: &Client,
    cache: &DesiredCache,
    fetcher: &Fetcher,
    kinds: &Arc<super::kinds::ClusterKinds>,
    tenancy: &TenancySettings,
) -> Result<Arc<DesiredSet>, ReconcileError> {
    let id = super::replica::guard_id(guard);
    let namespace = id.namespace.clone();
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
    let access = source.spec.access_from.as_ref();
    // The Guard's Namespace labels matter only to a selector of another namespace's source.
    let labels = match access.and_then(|a| a.namespace_selector.as_ref()) {
        Some(_) if source_namespace != namespace => Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await?
            .and_then(|ns| ns.metadata.labels)
            .unwrap_or_default(),
        _ => Default::default(),
    };
    tenancy::check_reference(
        &namespace,
        &labels,
        &source_namespace,
        &guard.spec.source_ref.name,
        access,
        tenancy,
    )?;
    // The revision the GitSource fetched (and verified), read from where it was fetched to.
    let settings = super::source::checkout(&source, None, client, fetcher).await?;
    let links = LinkTemplate::for_source_or_none(&source_id, &source.spec.url, source.spec.web_url.as_deref());
    let mut policy = GuardPolicy::new(id, &guard.spec, &source.spec.url)?.with_links(links);
    // The plan reports an empty render in status (EmptyRender) and prunes nothing.
    policy.reject_empty = false;
    let policy = Arc::new(policy);
    kinds
        .load(policy, settings, cache.clone())
        .await
        .map_err(|error| match error {
            super::kinds::KindsLoadError::Load(error) => ReconcileError::from(error),
            super::kinds::KindsLoadError::Task(error) => ReconcileError::Task(error.to_string()),
        })
}

/// Reconcile `guard` once and record the result in its status. Returns the status written.
pub async fn reconcile_guard(guard: &Guard, ctx: &Context) -> Result<GuardStatus, ReconcileError> {
    match sync_guard(guard, ctx).await {
        Ok(status) => Ok(status),
        Err(error) => {
            record_failure(guard, ctx, &error).await;
            Err(error)
        }
    }
}

/// Say why the Guard could not be reconciled: Ready=False with the error's reason (and
/// Stalled when only a change can fix it). Everything else in status stays as it was: the
/// last applied revision keeps being enforced.
async fn record_failure(guard: &Guard, ctx: &Context, error: &ReconcileError) {
    let previous = guard.status.clone().unwrap_or_default();
    let generation = guard.metadata.generation;
    let message = error.to_string();
    let mut conditions = vec![condition(
        ConditionType::Ready,
        false,
        error.reason(),
        message.clone(),
        generation,
    )];
    if error.is_stalled() {
        conditions.push(condition(
            ConditionType::Stalled,
            true,
            error.reason(),
            message,
            generation,
        ));
    }
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ == ConditionType::Fighting.as_str())
            .cloned(),
    );
    for c in &mut conditions {
        c.last_transition_time = kept_transition(&previous, c);
    }
    if conditions == previous.conditions {
        return;
    }
    let patch = json!({"status": {"conditions": conditions, "observedGeneration": generation}});
    let name = guard.name_any();
    let namespace = guard.namespace().unwrap_or_else(|| "default".to_owned());
    if let Err(write) = Api::<Guard>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(guard = %name, %write, "cannot record the reconcile failure in status");
    }
    let regarding = guard.object_ref(&());
    ctx.events
        .warning(&regarding, error.reason(), "Reconcile", error.to_string())
        .await;
}

async fn sync_guard(guard: &Guard, ctx: &Context) -> Result<GuardStatus, ReconcileError> {
    let started = std::time::Instant::now();
    let set = load_desired(
        guard,
        &ctx.client,
        &ctx.cache,
        &ctx.fetcher,
        ctx.applier.kinds(),
        &ctx.tenancy,
    )
    .await?;
    // Writes act as the Guard's identity; reads stay driftguard's.
    let identity = tenancy::identity(
        &set.guard.id.namespace,
        guard.spec.service_account_name.as_deref(),
        &ctx.tenancy,
    );
    let applier = ctx.applier.acting_as(ctx.impersonator.client(&identity)?);
    // What that identity may not write is neither applied nor protected, only reported.
    let loaded = set;
    let permitted = ctx.access.review(&loaded, &identity).await?;
    let set = permitted.set.clone();
    let id = set.guard.id.clone();
    let namespace = id.namespace.clone();

    let previous = guard.status.clone().unwrap_or_default();
    let generation = guard.metadata.generation;
    let mut status = GuardStatus {
        observed_generation: generation,
        last_fetched_revision: Some(set.revision.reference.clone()),
        ..previous.clone()
    };
    // Self-heal learns the new desired state before it is applied, so the watchers do not
    // take the new revision for drift.
    let heal_enabled = guard.spec.self_heal && !guard.spec.suspend;
    if let Some(heal) = &ctx.heal {
        heal.act_as(&id, applier.clone());
        heal.track(&id, set.clone(), heal_enabled, previous.counts.drift_corrected);
    }
    let mut conflicts: Vec<String> = Vec::new();
    let ready = if guard.spec.suspend {
        condition(
            ConditionType::Ready,
            false,
            "Suspended",
            "suspend is true: nothing is applied, pruned or healed".to_owned(),
            generation,
        )
    } else {
        let held = ctx.heal.as_ref().map(|h| h.held(&id)).unwrap_or_default();
        // An object applied before its identity lost the right stays in the inventory, unpruned.
        let (kept_aside, reviewable): (Vec<InventoryEntry>, Vec<InventoryEntry>) = previous
            .inventory
            .iter()
            .cloned()
            .partition(|entry| permitted.denied.iter().any(|d| d.key == entry.key()));
        let Sync {
            outcome,
            inventory,
            waiting,
            skipped,
            detached,
            detached_until,
            ended,
        } = applier
            .sync_holding(&set.objects, &reviewable, &id, &guard.spec.prune, &held)
            .await;
        status.counts = Counts {
            objects: i64::try_from(set.objects.len()).unwrap_or(i64::MAX),
            skipped: i64::try_from(set.skipped.len()).unwrap_or(i64::MAX),
            ..previous.counts
        };
        for write in &outcome.writes {
            write.observe(&ctx.metrics);
        }
        report_failures(ctx, guard, &inventory, &outcome.apply_failed, &outcome.prune_failed).await;
        audit_writes(ctx, &id, &set, &previous.inventory, &outcome);
        report_clamps(ctx, &id, &set, &outcome).await;
        ctx.metrics
            .set_break_glass_active(&id.to_string(), detached.len() as u64);
        status.break_glass_until =
            detached_until.and_then(|until| until.format(&time::format_description::well_known::Rfc3339).ok());
        for key in &ended {
            let version = set
                .objects
                .iter()
                .find(|o| super::ObjectKey::of(o) == *key)
                .map_or("", |o| o.version.as_str());
            let mut record = AuditEvent::new(EventKind::BreakGlassEnded);
            record.object = key.audit_ref(version);
            record.operation = "APPLY".to_owned();
            record.guard = id.to_string();
            record.revision = set.revision.commit.clone();
            record.message = format!(
                "break-glass on {key} ran out: Git restored ({})",
                set.revision.reference
            );
            ctx.events
                .normal(
                    &reference(key, version, None),
                    "BreakGlassEnded",
                    "Restore",
                    record.message.clone(),
                )
                .await;
            ctx.audit.record(record);
        }
        ctx.metrics
            .observe_reconcile(&id.to_string(), started.elapsed(), outcome.pruned.len() as u64);
        status.inventory = inventory;
        status.inventory.extend(kept_aside);
        let mut failures: Vec<String> = outcome
            .apply_failed
            .iter()
            .chain(&outcome.prune_failed)
            .map(|f| format!("{}: {}", f.key, f.message))
            .collect();
        failures.extend(waiting.iter().map(|(key, reason)| format!("{key}: {reason}")));
        let empty_render = skipped.iter().any(|(_, reason)| *reason == SkipReason::EmptyRender);
        conflicts = skipped
            .iter()
            .filter_map(|(key, reason)| match reason {
                SkipReason::OwnedByOtherGuard(owner) => Some(format!("{key} is owned by Guard {owner}")),
                _ => None,
            })
            .collect();
        if empty_render {
            // Admission keeps enforcing the last applied revision: its objects are still there.
            condition(
                ConditionType::Ready,
                false,
                "EmptyRender",
                format!(
                    "{} renders no objects and prune.allowEmpty is false: nothing was pruned; fix the path or set allowEmpty to delete everything",
                    set.revision.reference
                ),
                generation,
            )
        } else if failures.is_empty() && !permitted.denied.is_empty() {
            // Applied and protected what the identity may write: admission follows this revision.
            status.last_applied_revision = Some(set.revision.commit.clone());
            let denied: Vec<String> = permitted.denied.iter().map(ToString::to_string).collect();
            condition(
                ConditionType::Ready,
                false,
                "NotPermitted",
                format!(
                    "applied {} ({} objects); {} object(s) the Guard's identity may not write are neither applied nor protected: {}; grant {identity} the right or remove them from Git",
                    set.revision.reference,
                    set.objects.len(),
                    denied.len(),
                    denied.join("; ")
                ),
                generation,
            )
        } else if failures.is_empty() {
            status.last_applied_revision = Some(set.revision.commit.clone());
            condition(
                ConditionType::Ready,
                true,
                "Applied",
                format!("applied {} ({} objects)", set.revision.reference, set.objects.len()),
                generation,
            )
        } else {
            let reason = match (outcome.apply_failed.is_empty(), outcome.prune_failed.is_empty()) {
                (true, true) => "Waiting",
                (true, false) => "PruneFailed",
                (false, _) => "ApplyFailed",
            };
            condition(
                ConditionType::Ready,
                false,
                reason,
                format!("{} object(s) not in sync: {}", failures.len(), failures.join("; ")),
                generation,
            )
        }
    };
    if previous.last_applied_revision != status.last_applied_revision
        && let Some(revision) = &status.last_applied_revision
    {
        let regarding = guard.object_ref(&());
        ctx.events
            .normal(
                &regarding,
                "Applied",
                "Apply",
                format!("applied {revision} ({} objects)", set.objects.len()),
            )
            .await;
    }
    // Refusals and conflicts are told once, when they change, not at every reconcile.
    let told = |kind: ConditionType, condition: &Condition| {
        previous
            .conditions
            .iter()
            .any(|c| c.type_ == kind.as_str() && c.reason == condition.reason && c.message == condition.message)
    };
    if ready.reason == "NotPermitted" && !told(ConditionType::Ready, &ready) {
        for refusal in &permitted.denied {
            ctx.events
                .warning(
                    &reference(&refusal.key, &refusal.version, None),
                    "NotPermitted",
                    "Apply",
                    format!("not applied and not protected by Guard {id}: {}", refusal.reason),
                )
                .await;
        }
    }
    // Objects waiting for their CRD: progress is expected without a change.
    let reconciling = (ready.reason == "Waiting").then(|| {
        condition(
            ConditionType::Reconciling,
            true,
            "WaitingForCRD",
            ready.message.clone(),
            generation,
        )
    });
    let fighting = ctx.heal.as_ref().and_then(|h| h.fighting_condition(&id, generation));
    // Two Guards declaring one object: the first to apply it owns it (its driftguard.io/guard
    // annotation), admission decides by the same annotation, and the other Guard says so.
    let conflicting = (!conflicts.is_empty()).then(|| {
        condition(
            ConditionType::Conflicting,
            true,
            "OwnedByOtherGuard",
            format!(
                "{} declared object(s) belong to another Guard, which applied them first, and are left to it: {}; remove them from one Guard's Git",
                conflicts.len(),
                conflicts.join("; ")
            ),
            generation,
        )
    });
    if let Some(conflict) = &conflicting
        && !told(ConditionType::Conflicting, conflict)
    {
        ctx.events
            .warning(&guard.object_ref(&()), "Conflicting", "Apply", conflict.message.clone())
            .await;
    }
    status.conditions = std::iter::once(ready)
        .chain(reconciling)
        .chain(fighting)
        .chain(conflicting)
        .collect();
    for c in &mut status.conditions {
        c.last_transition_time = kept_transition(&previous, c);
    }
    if status == previous {
        return Ok(status);
    }
    // driftCorrected belongs to self-heal, which writes it as corrections happen.
    let mut patch = json!({ "status": status });
    if let Some(counts) = patch.pointer_mut("/status/counts").and_then(|c| c.as_object_mut()) {
        counts.remove("driftCorrected");
    }
    Api::<Guard>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(status)
}

/// One audit record per object written or deleted.
fn audit_writes(
    ctx: &Context,
    guard: &crate::desired::GuardId,
    set: &DesiredSet,
    inventory: &[InventoryEntry],
    outcome: &super::apply::Outcome,
) {
    let record = |event: EventKind, key: &super::ObjectKey, version: &str, message: String| {
        let mut record = AuditEvent::new(event);
        record.object = key.audit_ref(version);
        record.operation = "APPLY".to_owned();
        record.guard = guard.to_string();
        record.revision = set.revision.commit.clone();
        record.message = message;
        ctx.audit.record(record);
    };
    for applied in &outcome.applied {
        let version = set
            .objects
            .iter()
            .find(|o| super::ObjectKey::of(o) == applied.key)
            .map_or("", |o| o.version.as_str());
        record(
            EventKind::ReconcileApplied,
            &applied.key,
            version,
            format!("applied {} from {}", applied.key, set.revision.reference),
        );
    }
    for pruned in &outcome.pruned {
        let version = inventory
            .iter()
            .find(|e| e.key() == *pruned)
            .map_or("", |e| e.version.as_str());
        record(
            EventKind::ReconcilePruned,
            pruned,
            version,
            format!("pruned {pruned}: {} no longer declares it", set.revision.reference),
        );
    }
}

/// Delegated fields this sync set to their bound: a `drift.corrected` record, a Normal Event
/// `DelegateBounded` on the object, and a count.
async fn report_clamps(
    ctx: &Context,
    guard: &crate::desired::GuardId,
    set: &DesiredSet,
    outcome: &super::apply::Outcome,
) {
    for (key, clamped) in &outcome.clamped {
        let version = set
            .objects
            .iter()
            .find(|o| super::ObjectKey::of(o) == *key)
            .map_or("", |o| o.version.as_str());
        let message = super::delegation::clamp_message(clamped);
        let mut record = AuditEvent::new(EventKind::DriftCorrected);
        record.object = key.audit_ref(version);
        record.operation = "APPLY".to_owned();
        record.guard = guard.to_string();
        record.revision = set.revision.commit.clone();
        record.fields = clamped.iter().map(super::delegation::clamp_record).collect();
        record.field_manager = clamped.first().map(|h| h.manager.clone());
        record.message = message.clone();
        ctx.audit.record(record);
        for _ in clamped {
            ctx.metrics
                .count_delegate_bound_correction(&guard.to_string(), &key.kind);
        }
        let regarding = reference(key, version, None);
        ctx.events.normal(&regarding, "DelegateBounded", "Apply", message).await;
    }
}

/// An unchanged condition keeps the time it last changed.
fn kept_transition(previous: &GuardStatus, now: &Condition) -> Time {
    previous
        .conditions
        .iter()
        .find(|c| c.type_ == now.type_ && c.status == now.status && c.reason == now.reason && c.message == now.message)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.last_transition_time.clone())
}

/// A Warning Event on each object that failed, and one on the Guard summing them up.
async fn report_failures(
    ctx: &Context,
    guard: &Guard,
    inventory: &[InventoryEntry],
    apply_failed: &[Failure],
    prune_failed: &[Failure],
) {
    let version_of = |failure: &Failure| {
        inventory
            .iter()
            .find(|e| e.key() == failure.key)
            .map(|e| (e.version.clone(), e.uid.clone()))
    };
    for (failures, reason, action) in [
        (apply_failed, "ApplyFailed", "Apply"),
        (prune_failed, "PruneFailed", "Prune"),
    ] {
        for failure in failures {
            // An object that was never created has no uid; the Event still names it.
            let (version, uid) = version_of(failure).unwrap_or_default();
            let regarding = reference(&failure.key, &version, uid);
            ctx.events
                .warning(&regarding, reason, action, failure.message.clone())
                .await;
        }
    }
    let total = apply_failed.len() + prune_failed.len();
    if total > 0 {
        let names: Vec<String> = apply_failed
            .iter()
            .chain(prune_failed)
            .map(|f| f.key.to_string())
            .collect();
        ctx.events
            .warning(
                &guard.object_ref(&()),
                "SyncFailed",
                "Sync",
                format!("{total} object(s) failed: {}", names.join(", ")),
            )
            .await;
    }
}
