//! driftguard's API (group `driftguard.io`, version `v1alpha1`): GitSource and Guard specs.
//!
//! The same types describe the CRDs and the standalone config file (DESIGN.md section 1).

mod crd;
mod duration;
mod status;

use std::collections::BTreeMap;

pub use crd::{CrdError, crds, crds_yaml};
pub use duration::{DURATION_PATTERN, DurationError, GoDuration};
pub use status::{Condition, ConditionType, Counts, GitSourceStatus, GuardStatus, InventoryEntry};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of driftguard's resources.
pub const GROUP: &str = "driftguard.io";
/// API version of driftguard's resources.
pub const VERSION: &str = "v1alpha1";
/// Label the enforcer stamps on managed objects; the webhook's objectSelector.
pub const MANAGED_LABEL: &str = "driftguard.io/managed";
/// Annotation naming the owning Guard as `<namespace>/<name>`.
pub const GUARD_ANNOTATION: &str = "driftguard.io/guard";

/// Where desired state comes from: a Git repository, a reference to track and how often.
// Several `printcolumn(...)` entries repeat `type_ = "string"`, which clippy mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "driftguard.io",
    version = "v1alpha1",
    kind = "GitSource",
    namespaced,
    status = "GitSourceStatus",
    shortname = "gs",
    category = "driftguard",
    doc = "A Git repository driftguard fetches desired state from.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the last fetch succeeded"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastFetchedRevision",
        description = "The last fetched revision"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// `https://`, `ssh://`, `git@host:path`, `file://` or a local path.
    pub url: String,
    /// Which revision to track; the repository's HEAD when omitted.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRefSpec>,
    /// How often to fetch.
    #[serde(default = "GoDuration::one_minute")]
    pub interval: GoDuration,
    /// Credentials (a Secret in the source's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Commit/tag signature policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// Timeout of one fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Push receiver: a Git host's webhook to `POST /hooks/<namespace>/<name>` on the
    /// receiver listener (`server.hooksListen`), signed with this shared secret, fetches at
    /// once instead of at the next interval. Omitted: no receiver (such hooks get 404).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<ReceiverSpec>,
    /// Which other namespaces' Guards may read this source (its Git content and credentials).
    /// Omitted: only Guards in the source's own namespace (README "Multi-tenancy").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_from: Option<AccessFrom>,
    /// Links to Git in denials, warnings, Events and audit records: the web page of a file's
    /// line at a commit, with placeholders `{repo}` (the repository path of `url`),
    /// `{revision}` (the full commit id), `{path}` (the file) and `{line}`, for example
    /// `https://git.example.com/{repo}/blob/{revision}/{path}#L{line}`. Omitted: derived from
    /// `url` for GitHub, GitLab, Bitbucket Cloud, Gitea/Forgejo and Codeberg hosts (README
    /// "Links to Git"); `""`: no links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == '' || self.matches('^[hH][tT][tT][pP][sS]?://[^/?#@{}]+([/?#][^ ]*)?$')",
            "message": "webUrl must start with https:// or http:// and a host, without user information (credentials)",
        },
        {
            "rule": "self == '' || (self.contains('{revision}') && self.contains('{path}'))",
            "message": "webUrl needs {revision} and {path}: a link points at a file at the exact commit",
        },
        {
            "rule": "!self.replace('{repo}', '').replace('{revision}', '').replace('{path}', '').replace('{line}', '').matches('[{}]')",
            "message": "webUrl may only use the placeholders {repo}, {revision}, {path} and {line}",
        },
    ]))]
    #[schemars(length(max = 2048))]
    pub web_url: Option<String>,
}

/// `GitSource.spec.accessFrom`: the namespaces whose Guards may reference a GitSource. A Guard
/// is allowed when its namespace is listed or matches the selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessFrom {
    /// Namespace names (`*`: every namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Labels a namespace must carry (all of them) for its Guards to be allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
}

/// A namespace label selector (`matchLabels` only: every label must match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Labels and their values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Push receiver of a GitSource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverSpec {
    /// Secret in the source's namespace whose key `token` holds the shared secret: GitHub's
    /// webhook secret (`X-Hub-Signature-256`), GitLab's secret token (`X-Gitlab-Token`) or the
    /// HMAC key of a generic sender (`X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`).
    pub secret_ref: LocalObjectReference,
}

/// Exactly one of `branch`, `tag`, `semver`, `commit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.branch), has(self.tag), has(self.semver), has(self.commit)].filter(x, x).size() == 1",
    "message": "ref must set exactly one of branch, tag, semver, commit",
}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRefSpec {
    /// Track the tip of a branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Pin a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Track the highest tag matching a semver range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Pin a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A reference to an object in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectReference {
    /// Object name.
    pub name: String,
}

/// Signature verification policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifySpec {
    /// Which signature to check: `HEAD` (the commit), `Tag` (the tag of ref.tag/semver) or `TagAndHEAD`.
    pub mode: VerifyMode,
    /// Secret of trusted public keys: ASCII-armored OpenPGP keys or SSH public key lines.
    pub secret_ref: LocalObjectReference,
}

/// What signature verification checks at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum VerifyMode {
    /// The commit (HEAD of the fetched reference) must be signed by a trusted key.
    #[serde(rename = "HEAD", alias = "head")]
    Head,
    /// The annotated tag the revision came from must be signed by a trusted key.
    #[serde(rename = "Tag", alias = "tag")]
    Tag,
    /// Both the tag and the commit it points at must be signed by trusted keys.
    #[serde(rename = "TagAndHEAD")]
    TagAndHead,
}

impl VerifyMode {
    /// The mode's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Head => "HEAD",
            VerifyMode::Tag => "Tag",
            VerifyMode::TagAndHead => "TagAndHEAD",
        }
    }

    /// Whether the tag's signature is checked.
    pub fn checks_tag(self) -> bool {
        matches!(self, VerifyMode::Tag | VerifyMode::TagAndHead)
    }

    /// Whether the commit's signature is checked.
    pub fn checks_commit(self) -> bool {
        matches!(self, VerifyMode::Head | VerifyMode::TagAndHead)
    }
}

impl std::fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = String;

    /// Parses `HEAD`, `Tag` or `TagAndHEAD` (exactly as in specs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "HEAD" => Ok(VerifyMode::Head),
            "Tag" => Ok(VerifyMode::Tag),
            "TagAndHEAD" => Ok(VerifyMode::TagAndHead),
            other => Err(format!("unknown verify mode {other:?}: use HEAD, Tag or TagAndHEAD")),
        }
    }
}

/// Binds a path of a GitSource to the cluster.
// Several `printcolumn(...)` entries repeat `type_ = "string"`, which clippy mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[kube(
    group = "driftguard.io",
    version = "v1alpha1",
    kind = "Guard",
    namespaced,
    status = "GuardStatus",
    shortname = "gd",
    category = "driftguard",
    doc = "Binds a path of a GitSource to the cluster: driftguard applies it and guards it against drift.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the last reconcile applied Git"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision",
        description = "The revision enforced"
    ),
    printcolumn(
        name = "Objects",
        type_ = "integer",
        json_path = ".status.counts.objects",
        description = "Objects in the desired set"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardSpec {
    /// The GitSource to read.
    pub source_ref: SourceReference,
    /// Directory inside the repository.
    #[serde(default)]
    pub path: String,
    /// How to turn the directory into manifests.
    #[serde(default)]
    pub render: RenderSpec,
    /// Namespace for namespaced objects that declare none (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// What admission does with drift.
    #[serde(default)]
    pub mode: Mode,
    /// Whether the enforcer repairs drift that got past admission.
    #[serde(default = "default_true")]
    pub self_heal: bool,
    /// Deletion of objects Git no longer declares.
    #[serde(default)]
    pub prune: PruneSpec,
    /// Full reconcile period.
    #[serde(default = "GoDuration::five_minutes")]
    pub interval: GoDuration,
    /// Fields Git declares but driftguard must not enforce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<IgnoreRule>,
    /// Identities whose edits are always allowed.
    #[serde(default)]
    pub exemptions: Exemptions,
    /// Fields named writers may change (within bounds); everyone else is still denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate: Vec<DelegateRule>,
    /// Emergency edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// Pause the enforcer: no apply, prune or self-heal. Admission keeps `mode` (set `off` to stop it).
    #[serde(default)]
    pub suspend: bool,
    /// Service account (in the Guard's namespace) the enforcer impersonates to apply, prune and
    /// self-heal this Guard's objects, and whose rights bound what admission protects. Omitted:
    /// the configured default account (lockdown), or driftguard itself for the namespaces
    /// configured as privileged (README "Multi-tenancy").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Reference to a GitSource, by default in the Guard's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceReference {
    /// GitSource name.
    pub name: String,
    /// GitSource namespace (defaults to the Guard's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Rendering options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenderSpec {
    /// Renderer.
    #[serde(default, rename = "type")]
    pub kind: RenderType,
    /// Helm options (type helm, or auto with a Chart.yaml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmRender>,
    /// Jsonnet options; `entry` is required for type jsonnet (auto picks jsonnet only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonnet: Option<JsonnetRender>,
}

/// `render.helm`: how the chart at the Guard's path is templated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmRender {
    /// Release name (default: the Guard's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Values files, relative to the chart directory, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, applied last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::free_form")]
    pub values: Option<serde_json::Value>,
    /// `--kube-version` (default: Helm's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// `--api-versions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
}

/// `render.jsonnet`: the entry file and its inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonnetRender {
    /// The `.jsonnet` file, relative to the Guard's path.
    pub entry: String,
    /// `--ext-str` variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ext_vars: BTreeMap<String, String>,
    /// `--ext-code` variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ext_code: BTreeMap<String, String>,
    /// `--tla-str` top-level arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tla_vars: BTreeMap<String, String>,
    /// `--tla-code` top-level arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tla_code: BTreeMap<String, String>,
    /// Library directories (`-J`), relative to the repository root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jpath: Vec<String>,
}

/// A free-form object in the schema (`x-kubernetes-preserve-unknown-fields`).
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Which renderer turns a directory into manifests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RenderType {
    /// Pick from the directory's content.
    #[default]
    Auto,
    /// YAML/JSON files as they are.
    Plain,
    /// `kustomization.yaml`.
    Kustomize,
    /// A Helm chart.
    Helm,
    /// Jsonnet.
    Jsonnet,
}

/// Admission behaviour on drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The validating webhook denies the change.
    #[default]
    Deny,
    /// The mutating webhook patches Git's values back in and warns.
    Revert,
    /// Allow, warn and record.
    Audit,
    /// Do nothing.
    Off,
}

impl Mode {
    /// The mode's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Revert => "revert",
            Mode::Audit => "audit",
            Mode::Off => "off",
        }
    }
}

/// Prune settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneSpec {
    /// Delete objects Git removed.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Allow an empty render to prune everything.
    #[serde(default)]
    pub allow_empty: bool,
}

impl Default for PruneSpec {
    fn default() -> Self {
        PruneSpec {
            enabled: true,
            allow_empty: false,
        }
    }
}

/// Declared fields that driftguard must not enforce on matching objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IgnoreRule {
    /// API group (`""` for core); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object name; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// JSON pointers; `*` matches any list element or map key.
    pub json_pointers: Vec<String>,
}

/// Declared fields that named writers may change on matching objects: the selectors and
/// pointers of an [`IgnoreRule`], who (`to`), and optional numeric `bounds`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelegateRule {
    /// API group (`""` for core); any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object name; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; any when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// JSON pointers; `*` matches any list element or map key.
    pub json_pointers: Vec<String>,
    /// Who may change these fields.
    pub to: Delegates,
    /// Numeric bounds on the values a delegate may write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Bounds>,
}

impl DelegateRule {
    /// What the rule covers, as the ignore rule with the same selectors and pointers.
    pub fn selector(&self) -> IgnoreRule {
        IgnoreRule {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            json_pointers: self.json_pointers.clone(),
        }
    }
}

/// The writers of a [`DelegateRule`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.users) || has(self.groups) || has(self.serviceAccounts) || has(self.fieldManagers)",
    "message": "to must name at least one of users, groups, serviceAccounts, fieldManagers",
}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegates {
    /// Usernames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Service accounts as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Field managers: the request's `options.fieldManager` (`kubectl --field-manager`), and
    /// the managedFields manager the enforcer looks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_managers: Vec<String>,
}

impl Delegates {
    /// True when the writer (`username`, its `groups`, the request's `field_manager`) is one
    /// of these delegates. Allocates nothing.
    pub fn names<'g>(
        &self,
        username: &str,
        mut groups: impl Iterator<Item = &'g str>,
        field_manager: Option<&str>,
    ) -> bool {
        self.users.iter().any(|u| u == username)
            || self.service_accounts.iter().any(|sa| is_service_account(username, sa))
            || field_manager.is_some_and(|m| self.field_managers.iter().any(|f| f == m))
            || groups.any(|g| self.groups.iter().any(|c| c == g))
    }

    /// True when no writer is named.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.service_accounts.is_empty()
            && self.field_managers.is_empty()
    }
}

/// Is `username` the service account `reference` (`namespace/name`)?
fn is_service_account(username: &str, reference: &str) -> bool {
    let Some((namespace, name)) = reference.split_once('/') else {
        return false;
    };
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest == name)
}

/// Bounds on a delegated numeric field: fixed `min`/`max`, or those of the
/// HorizontalPodAutoscaler that targets the object (`fromHPA`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.fromHPA) && self.fromHPA) || (!has(self.min) && !has(self.max))",
        "message": "bounds: fromHPA excludes min and max",
    },
    {
        "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
        "message": "bounds: min must not exceed max",
    },
]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bounds {
    /// Smallest value allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest value allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Use `minReplicas` (default 1) and `maxReplicas` of the HorizontalPodAutoscaler whose
    /// `scaleTargetRef` is the object.
    #[serde(default, rename = "fromHPA", skip_serializing_if = "std::ops::Not::not")]
    pub from_hpa: bool,
}

/// Identities whose edits are always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemptions {
    /// Usernames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Service accounts as `namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

/// Emergency-edit policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakGlass {
    /// Groups allowed to break glass.
    pub groups: Vec<String>,
    /// How long an object stays detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<GoDuration>,
}
