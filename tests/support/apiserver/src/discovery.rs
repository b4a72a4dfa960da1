//! The resource registry (built-in kinds plus custom resources registered by CRDs) and the
//! documents clients discover it through: `/version`, legacy discovery (`/api`, `/apis`,
//! `/api/v1`, `/apis/<group>/<version>`), aggregated discovery (`apidiscovery.k8s.io` v2 and
//! v2beta1, chosen by the `Accept` header) and a minimal `/openapi/v3`.
//!
//! kubectl resolves `cm`, `deploy`, ... through `shortNames`, picks its built-in client from
//! the minor version of `/version` (so it reports 1.32) and asks `/openapi/v3` whether a kind's
//! PATCH accepts `fieldValidation` (edit and server-side apply).
//!
//! # Simplifications
//! - One version per built-in group (the one kubectl 1.32 prefers); no deprecated versions.
//! - `/openapi/v3` documents carry only each kind's PATCH operation with its
//!   `x-kubernetes-group-version-kind` and query parameters, no schemas: kubectl then falls back
//!   to its compiled-in types (strategic merge) for built-ins and to merge patch for custom
//!   resources, exactly as it does against a real server without schemas. `/openapi/v2` is 404.
//! - A CRD is established synchronously: the created object already carries `Established` and
//!   `NamesAccepted`. Name conflicts between CRDs are not detected; schemas are neither
//!   validated, pruned nor used for defaulting; all served versions share one stored object
//!   (conversion strategy `None`: only `apiVersion` changes).
use serde_json::{Map, Value, json};

use crate::ApiError;

/// The version kubectl's dispatcher reads (minor 32 runs its built-in 1.32 client).
pub const GIT_VERSION: &str = "v1.32.4";

/// Verbs of an ordinary resource.
const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const NAMESPACE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
/// Verbs of the `status` and `scale` subresources.
const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

/// Where a scalable kind keeps what the `scale` subresource shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON pointer of the desired replicas (`/spec/replicas`).
    pub spec_replicas: String,
    /// JSON pointer of the observed replicas (`/status/replicas`).
    pub status_replicas: String,
    /// Where the label selector lives, if anywhere.
    pub selector: Option<SelectorPath>,
}

/// The selector of a scalable kind: built-ins keep a `LabelSelector` object, custom resources
/// a serialized selector string (`labelSelectorPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorPath {
    /// JSON pointer to a `LabelSelector` object.
    Object(String),
    /// JSON pointer to a selector string.
    Text(String),
}

/// One served resource (a group/version/plural).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name (the URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Short names (`cm`, `deploy`, ...).
    pub short_names: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs.
    pub verbs: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
    /// Whether the `status` subresource exists (main-resource writes then keep the old status).
    pub status: bool,
    /// The `scale` subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Whether `metadata.generation` is maintained (not every built-in kind has it).
    pub generation: bool,
    /// Whether a CRD defined it.
    pub custom: bool,
    /// A CRD version's `additionalPrinterColumns` (empty: NAME and AGE).
    pub printer_columns: Vec<PrinterColumn>,
}

/// One of a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub kind: String,
    /// JSONPath into the object (the subset `server::table` evaluates).
    pub json_path: String,
    /// Description.
    pub description: String,
}

impl ResourceInfo {
    /// `apiVersion` of objects of this resource.
    pub fn api_version(&self) -> String {
        group_version(&self.group, &self.version)
    }

    /// `deployments.apps`, `configmaps`: how kube names the resource in error messages.
    pub fn qualified(&self) -> String {
        qualified_resource(&self.group, &self.plural)
    }

    /// Subresources this resource serves.
    pub fn subresources(&self) -> Vec<&'static str> {
        let mut subs = Vec::new();
        if self.scale.is_some() {
            subs.push("scale");
        }
        if self.status {
            subs.push("status");
        }
        if self.group.is_empty() && self.plural == "namespaces" {
            subs.push("finalize");
        }
        subs
    }
}

/// `group/version`, or `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// `plural.group`, or `plural` for the core group.
pub fn qualified_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// Subresources of a built-in kind.
#[derive(Clone, Copy)]
enum Subs {
    None,
    Status,
    StatusScale,
}

/// One built-in resource: (group, version, kind, plural, shortNames, namespaced, categories,
/// subresources, whether its strategy maintains `metadata.generation`).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    &'static [&'static str],
    Subs,
    bool,
);

const ALL: &[&str] = &["all"];
const EXT: &[&str] = &["api-extensions"];
const NONE: &[&str] = &[];
const NS: bool = true;
const CLUSTER: bool = false;

/// The built-in kinds, as kube-apiserver 1.32 serves them.
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    ("", "v1", "Namespace", "namespaces", &["ns"], CLUSTER, NONE, Subs::Status, false),
    ("", "v1", "ConfigMap", "configmaps", &["cm"], NS, NONE, Subs::None, false),
    ("", "v1", "Secret", "secrets", NONE, NS, NONE, Subs::None, false),
    ("", "v1", "Service", "services", &["svc"], NS, ALL, Subs::Status, false),
    ("", "v1", "ServiceAccount", "serviceaccounts", &["sa"], NS, NONE, Subs::None, false),
    ("", "v1", "Pod", "pods", &["po"], NS, ALL, Subs::Status, false),
    ("", "v1", "Event", "events", &["ev"], NS, NONE, Subs::None, false),
    ("", "v1", "Endpoints", "endpoints", &["ep"], NS, NONE, Subs::None, false),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", &["pvc"], NS, NONE, Subs::Status, false),
    ("", "v1", "Node", "nodes", &["no"], CLUSTER, NONE, Subs::Status, false),
    ("apps", "v1", "Deployment", "deployments", &["deploy"], NS, ALL, Subs::StatusScale, true),
    ("apps", "v1", "StatefulSet", "statefulsets", &["sts"], NS, ALL, Subs::StatusScale, true),
    ("apps", "v1", "DaemonSet", "daemonsets", &["ds"], NS, ALL, Subs::Status, true),
    ("apps", "v1", "ReplicaSet", "replicasets", &["rs"], NS, ALL, Subs::StatusScale, true),
    ("batch", "v1", "Job", "jobs", NONE, NS, ALL, Subs::Status, true),
    ("batch", "v1", "CronJob", "cronjobs", &["cj"], NS, ALL, Subs::Status, true),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", &["hpa"], NS, ALL, Subs::Status, false),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", NONE, NS, NONE, Subs::None, false),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NONE, NS, NONE, Subs::None, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", NONE, CLUSTER, NONE, Subs::None, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", NONE, CLUSTER, NONE, Subs::None, false),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", &["crd", "crds"], CLUSTER, EXT, Subs::Status, true),
    ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", NONE, CLUSTER, EXT, Subs::None, true),
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", NONE, CLUSTER, EXT, Subs::None, true),
    ("coordination.k8s.io", "v1", "Lease", "leases", NONE, NS, NONE, Subs::None, false),
    ("events.k8s.io", "v1", "Event", "events", &["ev"], NS, NONE, Subs::None, false),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", &["ing"], NS, NONE, Subs::Status, true),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", &["netpol"], NS, NONE, Subs::None, true),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", &["pdb"], NS, NONE, Subs::Status, true),
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn builtin_info(builtin: &Builtin) -> ResourceInfo {
    let &(group, version, kind, plural, short, namespaced, categories, subs, generation) = builtin;
    let scale = match subs {
        Subs::StatusScale => Some(ScalePaths {
            spec_replicas: "/spec/replicas".to_owned(),
            status_replicas: "/status/replicas".to_owned(),
            selector: Some(SelectorPath::Object("/spec/selector".to_owned())),
        }),
        Subs::None | Subs::Status => None,
    };
    let verbs = if plural == "namespaces" {
        NAMESPACE_VERBS
    } else {
        ALL_VERBS
    };
    ResourceInfo {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        singular: kind.to_lowercase(),
        short_names: strings(short),
        namespaced,
        verbs: strings(verbs),
        categories: strings(categories),
        status: !matches!(subs, Subs::None),
        scale,
        generation,
        custom: false,
        printer_columns: Vec::new(),
    }
}

/// The served resources: built-ins plus whatever the stored CRDs define.
#[derive(Debug, Clone)]
pub struct Registry {
    builtins: Vec<ResourceInfo>,
    custom: Vec<ResourceInfo>,
    /// Bumped whenever the set of resources changes (feeds the OpenAPI hashes).
    revision: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in kinds only.
    pub fn new() -> Self {
        Registry {
            builtins: BUILTINS.iter().map(builtin_info).collect(),
            custom: Vec::new(),
            revision: 1,
        }
    }

    /// Every served resource, built-ins first.
    pub fn resources(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.builtins.iter().chain(self.custom.iter())
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Some served version of `group`'s `plural` (the store keys objects without versions).
    pub fn any_version(&self, group: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources().find(|r| r.group == group && r.plural == plural)
    }

    /// The resource of a kind (`group`, `kind`), any version.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources().find(|r| r.group == group && r.kind == kind)
    }

    /// Replace the custom resources by those `crds` (stored CRD objects) define.
    pub fn set_custom_resources(&mut self, crds: &[Value]) {
        let custom: Vec<ResourceInfo> = crds
            .iter()
            .filter_map(|crd| crd_resources(crd).ok())
            .flatten()
            .collect();
        if custom != self.custom {
            self.custom = custom;
            self.revision += 1;
        }
    }

    /// Groups with their versions, core first, in serving order.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.resources() {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (group, versions) in &mut groups {
            let custom = self.custom.iter().any(|r| r.group == *group);
            if custom {
                sort_versions(versions);
            }
        }
        groups
    }

    fn in_group_version<'a>(&'a self, group: &'a str, version: &'a str) -> impl Iterator<Item = &'a ResourceInfo> {
        self.resources()
            .filter(move |r| r.group == group && r.version == version)
    }

    /// `GET /api`.
    pub fn legacy_core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    /// `GET /apis`.
    pub fn legacy_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, versions)| legacy_group(&g, &versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/<group>`.
    pub fn legacy_group(&self, group: &str) -> Option<Value> {
        let (g, versions) = self.groups().into_iter().find(|(g, _)| g == group && !g.is_empty())?;
        let mut doc = legacy_group(&g, &versions);
        if let Some(map) = doc.as_object_mut() {
            map.insert("kind".into(), json!("APIGroup"));
            map.insert("apiVersion".into(), json!("v1"));
        }
        Some(doc)
    }

    /// `GET /api/v1` or `GET /apis/<group>/<version>`.
    pub fn legacy_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for r in self.in_group_version(group, version) {
            let mut entry = json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            resources.push(entry);
            for sub in r.subresources() {
                let mut entry = json!({
                    "name": format!("{}/{}", r.plural, sub),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": if sub == "finalize" { json!(["update"]) } else { json!(SUBRESOURCE_VERBS) },
                });
                if sub == "scale" {
                    entry["group"] = json!("autoscaling");
                    entry["version"] = json!("v1");
                    entry["kind"] = json!("Scale");
                }
                resources.push(entry);
            }
        }
        if resources.is_empty() {
            return None;
        }
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version(group, version),
            "resources": resources,
        }))
    }

    /// Aggregated discovery for `/api` (`core == true`) or `/apis`.
    pub fn aggregated(&self, core: bool, version: AggregatedVersion) -> Value {
        let mut items = Vec::new();
        for (group, versions) in self.groups() {
            if group.is_empty() != core {
                continue;
            }
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = self.in_group_version(&group, v).map(aggregated_resource).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if core {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            items.push(json!({"metadata": metadata, "versions": versions}));
        }
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{}", version.as_str()),
            "metadata": {},
            "items": items,
        })
    }

    /// `GET /openapi/v3`: one entry per group/version.
    pub fn openapi_root(&self) -> Value {
        let mut paths = Map::new();
        for (group, versions) in self.groups() {
            for v in versions {
                let path = openapi_path(&group, &v);
                let url = format!("/openapi/v3/{path}?hash={:016X}", self.openapi_hash(&group, &v));
                paths.insert(path, json!({"serverRelativeURL": url}));
            }
        }
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: each kind's PATCH
    /// operation with its `x-kubernetes-group-version-kind` and query parameters.
    pub fn openapi_document(&self, path: &str) -> Option<Value> {
        let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), (*v).to_owned()),
            ["apis", g, v] => ((*g).to_owned(), (*v).to_owned()),
            _ => return None,
        };
        let mut paths = Map::new();
        for r in self.in_group_version(&group, &version) {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let item_path = if r.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("{prefix}/{}/{{name}}", r.plural)
            };
            let query =
                |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
            let patch = json!({
                "operationId": format!("patch{}", r.kind),
                "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            });
            paths.insert(item_path, json!({"patch": patch}));
        }
        if paths.is_empty() {
            return None;
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": GIT_VERSION},
            "paths": paths,
        }))
    }

    fn openapi_hash(&self, group: &str, version: &str) -> u64 {
        // FNV-1a over the group/version and the registry revision: stable while nothing changes,
        // different after a CRD changes, which is all clients use the hash for (cache busting).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in group.bytes().chain(version.bytes()).chain(self.revision.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }
}

fn legacy_group(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    let subresources: Vec<Value> = r
        .subresources()
        .into_iter()
        .map(|sub| {
            let kind = if sub == "scale" {
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            } else {
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            };
            let verbs = if sub == "finalize" {
                json!(["update"])
            } else {
                json!(SUBRESOURCE_VERBS)
            };
            json!({"subresource": sub, "responseKind": kind, "verbs": verbs})
        })
        .collect();
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

/// `GET /version`.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T00:00:00Z",
        "goVersion": "go1.23.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The aggregated discovery versions this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatedVersion {
    /// `apidiscovery.k8s.io/v2`.
    V2,
    /// `apidiscovery.k8s.io/v2beta1`.
    V2Beta1,
}

impl AggregatedVersion {
    /// `v2` or `v2beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => "v2",
            AggregatedVersion::V2Beta1 => "v2beta1",
        }
    }

    /// The response Content-Type: it must name exactly the version chosen, or kubectl ignores
    /// the document.
    pub fn content_type(self) -> String {
        format!(
            "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList",
            self.as_str()
        )
    }
}

/// What an `Accept` header asks of `/api` or `/apis`: the first acceptable media type in the
/// client's order wins; None means the legacy document.
pub fn negotiate_discovery(accept: &str) -> Option<AggregatedVersion> {
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        let (mut g, mut v, mut kind) = ("", "", "");
        for param in parts {
            match param.split_once('=') {
                Some(("g", value)) => g = value,
                Some(("v", value)) => v = value,
                Some(("as", value)) => kind = value,
                _ => {}
            }
        }
        if base == "application/json" && g == "apidiscovery.k8s.io" && kind == "APIGroupDiscoveryList" {
            match v {
                "v2" => return Some(AggregatedVersion::V2),
                "v2beta1" => return Some(AggregatedVersion::V2Beta1),
                _ => continue,
            }
        }
        if matches!(base, "application/json" | "*/*" | "application/*") && g.is_empty() && kind.is_empty() {
            return None;
        }
    }
    None
}

/// Orders versions like kube does for a group: GA before beta before alpha, higher first.
fn sort_versions(versions: &mut [String]) {
    fn rank(v: &str) -> (u8, u64, u64) {
        let rest = v.strip_prefix('v').unwrap_or(v);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().unwrap_or(0);
        let tail = rest.get(digits.len()..).unwrap_or("");
        let (stability, minor) = if tail.is_empty() {
            (3, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (2, n.parse().unwrap_or(0))
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n.parse().unwrap_or(0))
        } else {
            (0, 0)
        };
        (stability, major, minor)
    }
    versions.sort_by(|a, b| rank(b).cmp(&rank(a)).then_with(|| a.cmp(b)));
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn invalid_crd(name: &str, field: &str, message: &str) -> ApiError {
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {field}: {message}"),
    );
    err.details = Some(json!({
        "name": name,
        "group": "apiextensions.k8s.io",
        "kind": "CustomResourceDefinition",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }));
    err
}

/// The resources a CRD object defines, one per served version (validated like kube-apiserver
/// validates the parts this server relies on).
pub fn crd_resources(crd: &Value) -> Result<Vec<ResourceInfo>, ApiError> {
    let name = str_at(crd, "/metadata/name").unwrap_or("");
    let group = str_at(crd, "/spec/group").unwrap_or("");
    let plural = str_at(crd, "/spec/names/plural").unwrap_or("");
    let kind = str_at(crd, "/spec/names/kind").unwrap_or("");
    if group.is_empty() {
        return Err(invalid_crd(name, "spec.group", "Required value"));
    }
    if plural.is_empty() {
        return Err(invalid_crd(name, "spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(invalid_crd(name, "spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid_crd(
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match str_at(crd, "/spec/scope") {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(invalid_crd(
                name,
                "spec.scope",
                "Unsupported value: must be \"Cluster\" or \"Namespaced\"",
            ));
        }
    };
    let singular = str_at(crd, "/spec/names/singular")
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let list = |pointer: &str| -> Vec<String> {
        crd.pointer(pointer)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let short_names = list("/spec/names/shortNames");
    let categories = list("/spec/names/categories");
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid_crd(name, "spec.versions", "Required value"))?;
    let mut out = Vec::new();
    for v in versions {
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            return Err(invalid_crd(name, "spec.versions[].name", "Required value"));
        };
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let status = v.pointer("/subresources/status").is_some();
        let scale = v.pointer("/subresources/scale").map(|s| {
            let path = |key: &str| s.get(key).and_then(Value::as_str).map(json_path_to_pointer);
            ScalePaths {
                spec_replicas: path("specReplicasPath").unwrap_or_else(|| "/spec/replicas".to_owned()),
                status_replicas: path("statusReplicasPath").unwrap_or_else(|| "/status/replicas".to_owned()),
                selector: path("labelSelectorPath").map(SelectorPath::Text),
            }
        });
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|columns| {
                columns
                    .iter()
                    .map(|c| {
                        let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
                        PrinterColumn {
                            name: text("name"),
                            kind: text("type"),
                            json_path: text("jsonPath"),
                            description: text("description"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: singular.clone(),
            short_names: short_names.clone(),
            namespaced,
            verbs: strings(ALL_VERBS),
            categories: categories.clone(),
            status,
            scale,
            generation: true,
            custom: true,
            printer_columns,
        });
    }
    Ok(out)
}

/// `.spec.replicas` (a CRD's scale paths) as a JSON pointer.
fn json_path_to_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(String::new(), |mut acc, segment| {
            acc.push('/');
            acc.push_str(segment);
            acc
        })
}

/// The status the CRD controllers would converge to: names accepted, established, stored
/// versions. `previous` keeps condition transition times stable across updates.
pub fn crd_status(crd: &Value, previous: Option<&Value>, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let mut accepted = Map::new();
    for key in ["plural", "singular", "shortNames", "kind", "listKind", "categories"] {
        if let Some(v) = names.get(key) {
            accepted.insert(key.to_owned(), v.clone());
        }
    }
    let since = |kind: &str| -> String {
        previous
            .and_then(|p| p.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .and_then(|conds| {
                conds
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            })
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .unwrap_or(now)
            .to_owned()
    };
    let mut stored: Vec<String> = previous
        .and_then(|p| p.pointer("/status/storedVersions"))
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        && !stored.iter().any(|s| s == storage)
    {
        stored.push(storage.to_owned());
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": since("NamesAccepted"),
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": since("Established"),
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_picks_the_first_acceptable_version() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate_discovery(kubectl), Some(AggregatedVersion::V2));
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate_discovery(beta), Some(AggregatedVersion::V2Beta1));
        assert_eq!(negotiate_discovery("application/json"), None);
        assert_eq!(negotiate_discovery(""), None);
        assert_eq!(
            negotiate_discovery(
                "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            ),
            None
        );
        assert_eq!(
            AggregatedVersion::V2Beta1.content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn builtins_carry_short_names_scope_and_subresources() {
        let registry = Registry::new();
        let deploy = registry.lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.short_names, ["deploy"]);
        assert!(deploy.namespaced && deploy.status && deploy.scale.is_some() && deploy.generation);
        assert_eq!(deploy.categories, ["all"]);
        let cm = registry.lookup("", "v1", "configmaps").unwrap();
        assert!(!cm.generation && !cm.status && cm.scale.is_none());
        let ns = registry.lookup("", "v1", "namespaces").unwrap();
        assert!(!ns.namespaced);
        assert!(!ns.verbs.contains(&"deletecollection".to_owned()));
        assert_eq!(ns.subresources(), ["status", "finalize"]);
        assert_eq!(deploy.qualified(), "deployments.apps");
        assert_eq!(cm.qualified(), "configmaps");
    }

    #[test]
    fn crd_defines_one_resource_per_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size", "labelSelectorPath": ".status.selector"}}},
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1alpha1", "served": false, "storage": false},
                ],
            },
        });
        let resources = crd_resources(&crd).unwrap();
        assert_eq!(resources.len(), 2);
        let v1 = &resources[0];
        assert_eq!(v1.singular, "widget");
        assert_eq!(v1.short_names, ["wd"]);
        assert!(v1.status);
        let scale = v1.scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas, "/spec/size");
        assert_eq!(scale.selector, Some(SelectorPath::Text("/status/selector".into())));
        assert!(!resources[1].status);

        let mut registry = Registry::new();
        let before = registry.openapi_root();
        registry.set_custom_resources(std::slice::from_ref(&crd));
        assert!(registry.lookup("example.com", "v1beta1", "widgets").is_some());
        assert_ne!(registry.openapi_root(), before);
        let list = registry.legacy_resource_list("example.com", "v1").unwrap();
        assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
        let status = crd_status(&crd, None, "2024-01-01T00:00:00Z");
        assert_eq!(status["conditions"][1]["type"], "Established");
        assert_eq!(status["storedVersions"], json!(["v1"]));
        registry.set_custom_resources(&[]);
        assert!(registry.lookup("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let crd = json!({
            "metadata": {"name": "gadgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
        });
        let err = crd_resources(&crd).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("metadata.name"), "{}", err.message);
    }

    #[test]
    fn versions_sort_like_kube() {
        let mut v = vec![
            "v1alpha1".to_owned(),
            "v1".to_owned(),
            "v2beta1".to_owned(),
            "v2".to_owned(),
        ];
        sort_versions(&mut v);
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1alpha1"]);
    }

    #[test]
    fn openapi_documents_name_the_kind_of_each_patch() {
        let registry = Registry::new();
        let root = registry.openapi_root();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let doc = registry.openapi_document("apis/apps/v1").unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(registry.openapi_document("apis/nope/v1").is_none());
    }
}
