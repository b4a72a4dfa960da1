//! What driftguard reports back on GitSources and Guards (`.status`, written only by the
//! leader through the status subresource).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The standard `metav1.Condition`, so `kubectl wait --for=condition=Ready` and generic
/// tooling (kstatus, Argo CD health checks) understand driftguard's resources.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The condition types driftguard sets (kstatus vocabulary plus `Fighting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The last reconcile (or fetch) succeeded and the cluster matches Git.
    Ready,
    /// Work is in progress: a new revision is being fetched or applied.
    Reconciling,
    /// Progress is blocked by an error that retrying alone will not fix.
    Stalled,
    /// Another field manager keeps moving declared fields away from Git; self-heal stopped for
    /// those fields and the message names the manager and the ignore rule that would settle it.
    Fighting,
    /// Objects this Guard declares belong to another Guard, which applied them first (README
    /// "Multi-tenancy"); they are left to it.
    Conflicting,
}

impl ConditionType {
    /// Every condition type, in the order status lists them.
    pub const ALL: [ConditionType; 5] = [
        ConditionType::Ready,
        ConditionType::Reconciling,
        ConditionType::Stalled,
        ConditionType::Fighting,
        ConditionType::Conflicting,
    ];

    /// The `type` string of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::Fighting => "Fighting",
            ConditionType::Conflicting => "Conflicting",
        }
    }
}

/// Observed state of a GitSource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSourceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last revision fetched, as `<ref>@sha1:<commit>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    /// When the last successful fetch finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<Time>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Observed state of a Guard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last revision of the source seen by this Guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_revision: Option<String>,
    /// The revision applied to the cluster; admission enforces exactly this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Every object applied and not yet pruned (a failed delete stays until it succeeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Ready, Reconciling, Stalled, Fighting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Running totals.
    #[serde(default)]
    pub counts: Counts,
    /// When the earliest break-glass on this Guard's objects runs out (RFC 3339): the Guard is
    /// reconciled again then, so Git is restored at once rather than at the next interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_until: Option<String>,
}

/// One applied object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID at apply time, so a recreated object of the same name is told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A Guard's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Objects in the desired set of the applied revision.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub objects: i64,
    /// Rendered objects of the applied revision left out of the desired state: hooks
    /// (`helm.sh/hook`, `argocd.argoproj.io/hook`) and `generateName` objects (each logged
    /// with its file and line).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped: i64,
    /// Drift the enforcer repaired since the Guard was created.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub drift_corrected: i64,
    /// Edits admission denied since the Guard was created.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub edits_denied: i64,
}
