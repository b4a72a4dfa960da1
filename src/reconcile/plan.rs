//! The pure plan: what to apply, in which order, what to prune, and why not the rest.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::Value;

use crate::api::{GUARD_ANNOTATION, MANAGED_LABEL, PruneSpec};
use crate::desired::kinds;
use crate::desired::{DesiredObject, GuardId, HpaBounds};
use crate::drift::{self, FieldPath};

use super::delegation::{self, Delegated};

use super::inventory::{GroupKind, InventoryEntry, LiveSnapshot, ObjectKey};
use super::order::Tier;

/// Annotation a user sets on a live object to keep it when Git stops declaring it.
pub const PRUNE_ANNOTATION: &str = "driftguard.io/prune";
/// The value of [`PRUNE_ANNOTATION`] that keeps an object.
pub const PRUNE_DISABLED: &str = "disabled";

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// What the plan needs to know besides objects.
#[derive(Debug, Clone, Copy)]
pub struct PlanFacts<'a> {
    /// The Guard planned for (its ownership annotation value is `namespace/name`).
    pub guard: &'a GuardId,
    /// Custom resource kinds the cluster serves (their CRD is Established).
    pub established: &'a HashSet<GroupKind>,
    /// The Guard's prune settings.
    pub prune: &'a PruneSpec,
    /// Objects self-heal gave up on because another writer keeps changing them back (the
    /// Guard's `Fighting` condition): left as they are until Git changes them.
    pub held: &'a HashSet<ObjectKey>,
    /// Objects an on-call engineer detached with break-glass (not expired): left alone.
    pub detached: &'a HashSet<ObjectKey>,
    /// HorizontalPodAutoscaler bounds, for delegate rules with `bounds: {fromHPA: true}`.
    pub hpa: &'a HpaBounds,
}

/// Why an object is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyReason {
    /// The cluster does not have it.
    Create,
    /// Declared fields differ from Git (ignored fields excluded), in declaration order.
    Drift(Vec<FieldPath>),
    /// Declared fields match but the managed label or Guard annotation is missing.
    Ownership,
    /// The kind could not be read, so equality is unknown.
    LiveUnknown,
}

/// One object to server-side apply.
#[derive(Debug, Clone)]
pub struct ApplyStep<'a> {
    /// The object as Git declares it (stamped and normalized).
    pub object: &'a DesiredObject,
    /// Its identity.
    pub key: ObjectKey,
    /// Where in the order it is.
    pub tier: Tier,
    /// Why it is applied.
    pub reason: ApplyReason,
    /// Name of a CRD applied earlier in this plan that must be Established before this step
    /// (custom resources of a CRD that is new or not yet Established). The applier waits for
    /// it, bounded; if it times out the step fails and the next reconcile retries.
    pub requires_crd: Option<String>,
    /// Delegated fields delegates hold: left out of the apply, or written at their bound.
    pub delegated: Delegated,
}

/// Why an object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneReason {
    /// The Guard applied it and Git no longer declares it.
    RemovedFromGit,
    /// Git renders nothing and the Guard allows an empty render to prune (`allowEmpty`).
    EmptyRenderAllowed,
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PruneReason::RemovedFromGit => "no longer declared in Git",
            PruneReason::EmptyRenderAllowed => "Git renders nothing and allowEmpty is set",
        })
    }
}

/// One object to delete (propagation Background, in the order of [`Plan::prune`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStep {
    /// Its identity.
    pub key: ObjectKey,
    /// The version the inventory recorded (what the delete addresses).
    pub version: String,
    /// UID of the live copy: a delete precondition, so an object recreated meanwhile survives.
    pub uid: Option<String>,
    /// Where in the (reversed) order it is.
    pub tier: Tier,
    /// Why it is deleted.
    pub reason: PruneReason,
}

/// Why an object is neither applied nor pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Declared fields and ownership stamps already match: applying would only churn.
    Unchanged,
    /// The live object belongs to another Guard (its annotation names it).
    OwnedByOtherGuard(String),
    /// The live object carries `driftguard.io/prune: disabled`; it is left in place and
    /// dropped from the inventory.
    PruneDisabledByAnnotation,
    /// It is already gone from the cluster; it drops from the inventory.
    AlreadyDeleted,
    /// The Guard's prune is disabled: Git-removed objects are left in place and forgotten.
    PruningDisabled,
    /// Git renders nothing and `allowEmpty` is not set: nothing is pruned and the inventory is
    /// kept, so a broken render cannot wipe the Guard's objects.
    EmptyRender,
    /// Its kind could not be read; kept in the inventory until it can be.
    LiveUnknown,
    /// A Namespace or CRD whose deletion would take this still-kept object with it; kept in the
    /// inventory and pruned once nothing needs it.
    StillInUse(ObjectKey),
    /// Self-heal is fighting another writer over it; re-applying would only restart the fight.
    Fighting,
    /// Detached from Git by break-glass until its annotation expires or is removed.
    BreakGlass,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Unchanged => f.write_str("already equal to Git"),
            SkipReason::OwnedByOtherGuard(guard) => write!(f, "owned by Guard {guard}"),
            SkipReason::PruneDisabledByAnnotation => write!(f, "{PRUNE_ANNOTATION}: {PRUNE_DISABLED}"),
            SkipReason::AlreadyDeleted => f.write_str("already deleted"),
            SkipReason::PruningDisabled => f.write_str("prune is disabled for this Guard"),
            SkipReason::EmptyRender => f.write_str("Git renders nothing and allowEmpty is not set"),
            SkipReason::LiveUnknown => f.write_str("its kind could not be read from the cluster"),
            SkipReason::StillInUse(by) => write!(f, "still needed by {by}"),
            SkipReason::Fighting => f.write_str("another writer keeps changing it (see the Fighting condition)"),
            SkipReason::BreakGlass => f.write_str("detached from Git by break-glass until it expires"),
        }
    }
}

/// Why an object cannot be applied yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Its kind's CRD is not Established and this plan does not apply it.
    CrdNotEstablished {
        /// The CRD's name (`plural.group`).
        crd: String,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::CrdNotEstablished { crd } => write!(f, "CRD {crd} not Established yet"),
        }
    }
}

/// The outcome of [`plan()`].
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Objects to apply, in apply order.
    pub apply: Vec<ApplyStep<'a>>,
    /// Objects to delete, in reverse apply order (namespaced first, Namespaces and CRDs last).
    pub prune: Vec<PruneStep>,
    /// Objects neither applied nor pruned, and why.
    pub skipped: Vec<(ObjectKey, SkipReason)>,
    /// Desired objects that cannot be applied yet, and why.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
    /// Objects with delegated fields that delegates hold (applied or not), in desired order.
    pub delegated: Vec<(ObjectKey, Delegated)>,
    /// The next inventory before apply and prune results: every desired object plus the
    /// inventory entries kept without being pruned.
    base_inventory: Vec<InventoryEntry>,
}

/// An object applied successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its identity.
    pub key: ObjectKey,
    /// The UID the apply response carried.
    pub uid: Option<String>,
}

enum Decision {
    Apply(ApplyReason, Delegated),
    Skip(SkipReason, Delegated),
}

/// A desired object with its place in the order, before the decision says apply or skip.
struct Placed<'a> {
    object: &'a DesiredObject,
    key: ObjectKey,
    tier: Tier,
    requires_crd: Option<String>,
}

impl<'a> Placed<'a> {
    fn place(self, decision: Decision, out: &mut Placing<'a>) {
        let (Decision::Apply(_, delegated) | Decision::Skip(_, delegated)) = &decision;
        if !delegated.is_empty() {
            out.delegated.push((self.key.clone(), delegated.clone()));
        }
        match decision {
            Decision::Apply(reason, delegated) => out.apply.push(ApplyStep {
                object: self.object,
                key: self.key,
                tier: self.tier,
                reason,
                requires_crd: self.requires_crd,
                delegated,
            }),
            Decision::Skip(reason, _) => out.skipped.push((self.key, reason)),
        }
    }
}

/// What the desired objects are sorted into.
#[derive(Default)]
struct Placing<'a> {
    apply: Vec<ApplyStep<'a>>,
    skipped: Vec<(ObjectKey, SkipReason)>,
    delegated: Vec<(ObjectKey, Delegated)>,
}

fn str_at<'v>(object: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(object, |v, k| v.get(*k))?.as_str()
}

fn annotation<'v>(object: &'v Value, name: &str) -> Option<&'v str> {
    str_at(object, &["metadata", "annotations", name])
}

fn uid(object: &Value) -> Option<String> {
    str_at(object, &["metadata", "uid"]).map(str::to_owned)
}

/// The kind a CustomResourceDefinition defines.
fn crd_defines(object: &Value) -> Option<GroupKind> {
    Some(GroupKind::new(
        str_at(object, &["spec", "group"])?,
        str_at(object, &["spec", "names", "kind"])?,
    ))
}

fn is_crd(key: &ObjectKey) -> bool {
    key.group == CRD_GROUP && key.kind == CRD_KIND
}

/// Apply, or skip because nothing would change (or the object is another Guard's).
fn decide(
    object: &DesiredObject,
    key: &ObjectKey,
    live: &LiveSnapshot,
    guard: &str,
    facts: &PlanFacts<'_>,
) -> Decision {
    let none = Delegated::default;
    if live.is_unknown(key) {
        return Decision::Apply(ApplyReason::LiveUnknown, none());
    }
    let Some(current) = live.get(key) else {
        // Created with Git's values, delegated fields included.
        return Decision::Apply(ApplyReason::Create, none());
    };
    if facts.detached.contains(key) {
        return Decision::Skip(SkipReason::BreakGlass, none());
    }
    if facts.held.contains(key) {
        return Decision::Skip(SkipReason::Fighting, none());
    }
    if let Some(owner) = annotation(current, GUARD_ANNOTATION)
        && owner != guard
    {
        // Two Guards declaring one object would overwrite each other forever; the first owner
        // keeps it until its Guard lets go (the admission index reports the conflict).
        return Decision::Skip(SkipReason::OwnedByOtherGuard(owner.to_owned()), none());
    }
    // With no old object, detect reports exactly the declared fields where live != Git.
    // Unreadable cannot happen (checked when the set was built); applying Git's text is safe.
    let Ok(desired) = object.value() else {
        return Decision::Apply(ApplyReason::Drift(Vec::new()), none());
    };
    // Delegated fields a delegate holds within the bounds are not drift; outside them, the
    // bound is what is written.
    let delegated = delegation::judge(object, current, facts.hpa);
    let drifts = delegated.filter_drifts(drift::detect(&desired, None, current, &object.ignore));
    if !drifts.is_empty() {
        return Decision::Apply(
            ApplyReason::Drift(drifts.into_iter().map(|d| d.path).collect()),
            delegated,
        );
    }
    let stamped = str_at(current, &["metadata", "labels", MANAGED_LABEL]) == Some("true")
        && annotation(current, GUARD_ANNOTATION) == Some(guard);
    if stamped {
        Decision::Skip(SkipReason::Unchanged, delegated)
    } else {
        Decision::Apply(ApplyReason::Ownership, delegated)
    }
}

/// Plan one reconcile of a Guard.
///
/// - Apply order: [`Tier`] (CRDs, Namespaces, cluster RBAC and ServiceAccounts, other
///   cluster-scoped, namespaced), then kind, group, namespace, name.
/// - Custom resources (kinds not built in) of a CRD that is not Established wait, unless this
///   plan applies the CRD: then they are applied last ([`Tier::AwaitingCrd`]) with
///   [`ApplyStep::requires_crd`] set.
/// - Objects whose declared fields (minus ignore rules) equal the live copy and that carry the
///   ownership stamps are skipped; objects another Guard owns are skipped.
/// - Prune: inventory minus desired, minus objects marked `driftguard.io/prune: disabled`,
///   owned by another Guard or already gone; a Namespace or CRD is kept while a desired or
///   kept object needs it. Nothing is pruned when prune is disabled, nor on an empty render
///   without `allowEmpty`.
pub fn plan<'a>(
    desired: &'a [DesiredObject],
    inventory: &[InventoryEntry],
    live: &LiveSnapshot,
    facts: &PlanFacts<'_>,
) -> Plan<'a> {
    let guard = facts.guard.to_string();
    let mut placing = Placing {
        apply: Vec::with_capacity(desired.len()),
        ..Placing::default()
    };
    let mut waiting = Vec::new();
    let old_uids: HashMap<KeyRef<'_>, &str> = inventory
        .iter()
        .filter_map(|e| Some((entry_ref(e), e.uid.as_deref()?)))
        .collect();
    let mut base_inventory = Vec::with_capacity(desired.len());
    let mut desired_keys = HashSet::with_capacity(desired.len());
    let mut custom = Vec::new();

    // Built-in kinds first, so that the CRDs this plan applies are known for custom resources.
    for object in desired {
        let key = ObjectKey::of(object);
        let current = live.get(&key);
        base_inventory.push(InventoryEntry {
            group: object.group.clone(),
            version: object.version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: current
                .and_then(uid)
                .or_else(|| old_uids.get(&desired_ref(object)).map(|u| (*u).to_owned())),
        });
        desired_keys.insert(desired_ref(object));
        if kinds::builtin(&object.group, &object.kind).is_none() {
            custom.push((object, key));
            continue;
        }
        let tier = Tier::of(&object.group, &object.kind, object.namespace.is_some());
        let step = Placed {
            object,
            key,
            tier,
            requires_crd: None,
        };
        let decision = decide(object, &step.key, live, &guard, facts);
        step.place(decision, &mut placing);
    }

    // CRDs this plan applies, by the kind they define.
    let applied_crds: HashMap<GroupKind, &str> = placing
        .apply
        .iter()
        .filter(|step| is_crd(&step.key))
        .filter_map(|step| Some((crd_defines(&step.object.value().ok()?)?, step.object.name.as_str())))
        .collect();
    // CRDs declared in Git (applied or not), for the name in waiting messages.
    let declared_crds: HashMap<GroupKind, &str> = desired
        .iter()
        .filter(|o| o.group == CRD_GROUP && o.kind == CRD_KIND)
        .filter_map(|o| Some((crd_defines(&o.value().ok()?)?, o.name.as_str())))
        .collect();

    for (object, key) in custom {
        let gk = key.group_kind();
        let mut tier = Tier::of(&object.group, &object.kind, object.namespace.is_some());
        let mut requires_crd = None;
        if !facts.established.contains(&gk) {
            match applied_crds.get(&gk) {
                Some(crd) => {
                    tier = Tier::AwaitingCrd;
                    requires_crd = Some((*crd).to_owned());
                }
                None => {
                    let crd = declared_crds
                        .get(&gk)
                        .map(|n| (*n).to_owned())
                        .unwrap_or_else(|| format!("{}.{}", object.resource, object.group));
                    waiting.push((key, WaitReason::CrdNotEstablished { crd }));
                    continue;
                }
            }
        }
        let step = Placed {
            object,
            key,
            tier,
            requires_crd,
        };
        let decision = decide(object, &step.key, live, &guard, facts);
        step.place(decision, &mut placing);
    }

    let Placing {
        mut apply,
        mut skipped,
        delegated,
    } = placing;
    // Keys are unique, so an unstable sort is still deterministic.
    apply.sort_unstable_by(|a, b| order_key(a.tier, &a.key).cmp(&order_key(b.tier, &b.key)));

    let pruning = plan_prune(desired, inventory, &desired_keys, live, facts, &guard);
    skipped.extend(pruning.skipped);
    base_inventory.extend(pruning.retained);

    Plan {
        apply,
        prune: pruning.steps,
        skipped,
        waiting,
        delegated,
        base_inventory,
    }
}

/// An [`ObjectKey`] borrowed from a desired object or inventory entry: the plan's lookups
/// allocate nothing.
type KeyRef<'a> = (&'a str, &'a str, Option<&'a str>, &'a str);

fn desired_ref(o: &DesiredObject) -> KeyRef<'_> {
    (&o.group, &o.kind, o.namespace.as_deref(), &o.name)
}

fn entry_ref(e: &InventoryEntry) -> KeyRef<'_> {
    (&e.group, &e.kind, e.namespace.as_deref(), &e.name)
}

fn key_ref(k: &ObjectKey) -> KeyRef<'_> {
    (&k.group, &k.kind, k.namespace.as_deref(), &k.name)
}

fn order_key(tier: Tier, key: &ObjectKey) -> (Tier, &str, &str, Option<&str>, &str) {
    (tier, &key.kind, &key.group, key.namespace.as_deref(), &key.name)
}

/// The prune half of a plan.
#[derive(Default)]
struct PrunePlan {
    steps: Vec<PruneStep>,
    skipped: Vec<(ObjectKey, SkipReason)>,
    /// Inventory entries kept without being pruned.
    retained: Vec<InventoryEntry>,
}

fn plan_prune(
    desired: &[DesiredObject],
    inventory: &[InventoryEntry],
    desired_keys: &HashSet<KeyRef<'_>>,
    live: &LiveSnapshot,
    facts: &PlanFacts<'_>,
    guard: &str,
) -> PrunePlan {
    let mut out = PrunePlan::default();
    let mut seen = HashSet::new();
    let stale = inventory.iter().filter_map(|entry| {
        let key = entry_ref(entry);
        (!desired_keys.contains(&key) && seen.insert(key)).then(|| (entry, entry.key()))
    });
    let stale: Vec<(&InventoryEntry, ObjectKey)> = stale.collect();

    let blanket = if !facts.prune.enabled {
        Some((SkipReason::PruningDisabled, false))
    } else if desired.is_empty() && !facts.prune.allow_empty {
        Some((SkipReason::EmptyRender, true))
    } else {
        None
    };
    if let Some((reason, keep)) = blanket {
        for (entry, key) in stale {
            if keep {
                out.retained.push(entry.clone());
            }
            out.skipped.push((key, reason.clone()));
        }
        return out;
    }

    let reason = if desired.is_empty() {
        PruneReason::EmptyRenderAllowed
    } else {
        PruneReason::RemovedFromGit
    };
    let mut candidates = Vec::new();
    // Objects that stay in the cluster: a Namespace or CRD holding one must stay too.
    let mut kept: Vec<ObjectKey> = Vec::new();
    for (entry, key) in stale {
        if live.is_unknown(&key) {
            out.retained.push(entry.clone());
            kept.push(key.clone());
            out.skipped.push((key, SkipReason::LiveUnknown));
            continue;
        }
        let Some(current) = live.get(&key) else {
            out.skipped.push((key, SkipReason::AlreadyDeleted));
            continue;
        };
        if annotation(current, PRUNE_ANNOTATION) == Some(PRUNE_DISABLED) {
            kept.push(key.clone());
            out.skipped.push((key, SkipReason::PruneDisabledByAnnotation));
            continue;
        }
        if let Some(owner) = annotation(current, GUARD_ANNOTATION)
            && owner != guard
        {
            kept.push(key.clone());
            out.skipped.push((key, SkipReason::OwnedByOtherGuard(owner.to_owned())));
            continue;
        }
        candidates.push((entry, key, current));
    }

    for (entry, key, current) in candidates {
        if let Some(user) = needed_by(&key, current, desired, &kept) {
            out.retained.push(InventoryEntry {
                uid: uid(current).or_else(|| entry.uid.clone()),
                ..entry.clone()
            });
            out.skipped.push((key, SkipReason::StillInUse(user)));
            continue;
        }
        out.steps.push(PruneStep {
            tier: Tier::of(&key.group, &key.kind, key.namespace.is_some()),
            version: entry.version.clone(),
            uid: uid(current),
            key,
            reason,
        });
    }
    out.steps
        .sort_unstable_by(|a, b| order_key(b.tier, &b.key).cmp(&order_key(a.tier, &a.key)));
    out
}

/// What deleting a Namespace or a CRD takes with it.
enum Contents {
    /// Everything in the namespace of this name.
    Namespace(String),
    /// Every resource of the kind the CRD defines.
    Kind(GroupKind),
}

impl Contents {
    fn of(key: &ObjectKey, current: &Value) -> Option<Contents> {
        if key.group.is_empty() && key.kind == "Namespace" {
            Some(Contents::Namespace(key.name.clone()))
        } else if is_crd(key) {
            crd_defines(current).map(Contents::Kind)
        } else {
            None
        }
    }

    fn holds(&self, group: &str, kind: &str, namespace: Option<&str>) -> bool {
        match self {
            Contents::Namespace(name) => namespace == Some(name.as_str()),
            Contents::Kind(gk) => gk.group == group && gk.kind == kind,
        }
    }
}

/// For a Namespace or CRD about to be pruned: a desired or kept object its deletion would take
/// with it (deleting a Namespace deletes its contents; deleting a CRD deletes its resources).
fn needed_by(key: &ObjectKey, current: &Value, desired: &[DesiredObject], kept: &[ObjectKey]) -> Option<ObjectKey> {
    let contents = Contents::of(key, current)?;
    desired
        .iter()
        .find(|o| contents.holds(&o.group, &o.kind, o.namespace.as_deref()))
        .map(ObjectKey::of)
        .or_else(|| {
            kept.iter()
                .find(|k| contents.holds(&k.group, &k.kind, k.namespace.as_deref()))
                .cloned()
        })
}

/// The Guard's next inventory: every desired object (UIDs from `applied_ok`, else from the
/// live snapshot or the previous inventory), the entries the plan kept without pruning, and
/// every prune step not in `pruned_ok` — a delete that failed, or was never attempted (lost
/// leadership, shutdown), stays and is retried. Sorted by identity, without duplicates.
pub fn next_inventory(plan: &Plan<'_>, applied_ok: &[Applied], pruned_ok: &[ObjectKey]) -> Vec<InventoryEntry> {
    let applied: HashMap<KeyRef<'_>, &str> = applied_ok
        .iter()
        .filter_map(|a| Some((key_ref(&a.key), a.uid.as_deref()?)))
        .collect();
    let pruned: HashSet<&ObjectKey> = pruned_ok.iter().collect();
    let mut next: Vec<InventoryEntry> = plan.base_inventory.clone();
    for entry in &mut next {
        if let Some(uid) = applied.get(&entry_ref(entry)) {
            entry.uid = Some((*uid).to_owned());
        }
    }
    next.extend(
        plan.prune
            .iter()
            .filter(|step| !pruned.contains(&step.key))
            .map(|step| InventoryEntry {
                group: step.key.group.clone(),
                version: step.version.clone(),
                kind: step.key.kind.clone(),
                namespace: step.key.namespace.clone(),
                name: step.key.name.clone(),
                uid: step.uid.clone(),
            }),
    );
    next.sort_by(|a, b| entry_ref(a).cmp(&entry_ref(b)));
    // Stable sort: of duplicates the first (a desired object) wins over a failed prune.
    next.dedup_by(|later, first| entry_ref(later) == entry_ref(first));
    next
}
