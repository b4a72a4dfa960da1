//! The resource (plural) a kind is served as, and whether it is namespaced: built-in kinds
//! from a fixed table, every other kind only from what the API said ([`ApiResources`]:
//! discovery, CustomResourceDefinitions in the same render, or `kubectl api-resources`
//! output). Pure: callers bring the API's answers.

/// One built-in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural) the API serves it as.
    pub resource: &'static str,
    /// False for cluster-scoped kinds.
    pub namespaced: bool,
}

const fn k(group: &'static str, kind: &'static str, resource: &'static str, namespaced: bool) -> KindInfo {
    KindInfo {
        group,
        kind,
        resource,
        namespaced,
    }
}

/// Built-in kinds of Kubernetes 1.33 (the ones a GitOps repository declares).
static BUILTIN: &[KindInfo] = &[
    k("", "ConfigMap", "configmaps", true),
    k("", "Endpoints", "endpoints", true),
    k("", "LimitRange", "limitranges", true),
    k("", "Namespace", "namespaces", false),
    k("", "Node", "nodes", false),
    k("", "PersistentVolume", "persistentvolumes", false),
    k("", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    k("", "Pod", "pods", true),
    k("", "PodTemplate", "podtemplates", true),
    k("", "ReplicationController", "replicationcontrollers", true),
    k("", "ResourceQuota", "resourcequotas", true),
    k("", "Secret", "secrets", true),
    k("", "Service", "services", true),
    k("", "ServiceAccount", "serviceaccounts", true),
    k(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    k(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        false,
    ),
    k(
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
    ),
    k(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    k(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    k("apiregistration.k8s.io", "APIService", "apiservices", false),
    k("apps", "ControllerRevision", "controllerrevisions", true),
    k("apps", "DaemonSet", "daemonsets", true),
    k("apps", "Deployment", "deployments", true),
    k("apps", "ReplicaSet", "replicasets", true),
    k("apps", "StatefulSet", "statefulsets", true),
    k(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    k("batch", "CronJob", "cronjobs", true),
    k("batch", "Job", "jobs", true),
    k(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
    ),
    k("coordination.k8s.io", "Lease", "leases", true),
    k("discovery.k8s.io", "EndpointSlice", "endpointslices", true),
    k("events.k8s.io", "Event", "events", true),
    k("flowcontrol.apiserver.k8s.io", "FlowSchema", "flowschemas", false),
    k(
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        false,
    ),
    k("networking.k8s.io", "Ingress", "ingresses", true),
    k("networking.k8s.io", "IngressClass", "ingressclasses", false),
    k("networking.k8s.io", "NetworkPolicy", "networkpolicies", true),
    k("node.k8s.io", "RuntimeClass", "runtimeclasses", false),
    k("policy", "PodDisruptionBudget", "poddisruptionbudgets", true),
    k("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", false),
    k(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    k("rbac.authorization.k8s.io", "Role", "roles", true),
    k("rbac.authorization.k8s.io", "RoleBinding", "rolebindings", true),
    k("scheduling.k8s.io", "PriorityClass", "priorityclasses", false),
    k("storage.k8s.io", "CSIDriver", "csidrivers", false),
    k("storage.k8s.io", "CSINode", "csinodes", false),
    k("storage.k8s.io", "StorageClass", "storageclasses", false),
    k("storage.k8s.io", "VolumeAttachment", "volumeattachments", false),
];

/// How a kind is served: its resource (plural) and scope, as the API says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Resource (plural).
    pub resource: String,
    /// False for cluster-scoped kinds.
    pub namespaced: bool,
}

/// Look a built-in kind up.
pub fn builtin(group: &str, kind: &str) -> Option<&'static KindInfo> {
    BUILTIN.iter().find(|info| info.group == group && info.kind == kind)
}

/// Why a kind's scope and plural are not known, or a resource list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// Nothing the API told driftguard covers the kind; it is never guessed (a wrong scope
    /// would key the object where admission never looks, leaving it unprotected).
    #[error(
        "the scope and plural of {kind} ({api}) are unknown: declare its CustomResourceDefinition in the same path, \
         pass --api-resources FILE (the output of `kubectl api-resources -o wide`), or run against a cluster that serves it"
    )]
    Unknown {
        /// `group/kind` as written, for the message.
        api: String,
        /// Kind.
        kind: String,
    },
    /// A line of a `kubectl api-resources` table could not be read.
    #[error("api-resources line {line}: {reason}")]
    Table {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Custom (and any other non-built-in) kinds the API has described: from discovery in cluster
/// mode, from CustomResourceDefinitions in a render, or from a `kubectl api-resources` table.
/// This is the one resolver every part of driftguard uses: built-in kinds from the fixed
/// table, everything else only from here — never guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiResources {
    kinds: std::collections::HashMap<(String, String), Resolved>,
}

impl ApiResources {
    /// Record how `group`/`kind` is served.
    pub fn insert(&mut self, group: &str, kind: &str, resource: &str, namespaced: bool) {
        self.kinds.insert(
            (group.to_owned(), kind.to_owned()),
            Resolved {
                resource: resource.to_owned(),
                namespaced,
            },
        );
    }

    /// Number of kinds recorded (built-ins not counted).
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Add what `other` knows where this knows nothing.
    pub fn extend_missing(&mut self, other: &ApiResources) {
        for (key, resolved) in &other.kinds {
            self.kinds.entry(key.clone()).or_insert_with(|| resolved.clone());
        }
    }

    /// The kinds the CustomResourceDefinitions among `objects` define (`spec.group`,
    /// `spec.names.kind`, `spec.names.plural`, `spec.scope`).
    pub fn from_crds<'a>(objects: impl IntoIterator<Item = &'a serde_json::Value>) -> Self {
        let mut table = ApiResources::default();
        for object in objects {
            let text = |pointer: &str| object.pointer(pointer).and_then(serde_json::Value::as_str);
            let is_crd = text("/kind") == Some("CustomResourceDefinition")
                && text("/apiVersion").is_some_and(|v| v.starts_with("apiextensions.k8s.io/"));
            if !is_crd {
                continue;
            }
            if let (Some(group), Some(kind), Some(plural), Some(scope)) = (
                text("/spec/group"),
                text("/spec/names/kind"),
                text("/spec/names/plural"),
                text("/spec/scope"),
            ) {
                table.insert(group, kind, plural, scope != "Cluster");
            }
        }
        table
    }

    /// Read the table `kubectl api-resources` prints (plain or `-o wide`): columns NAME,
    /// SHORTNAMES, APIVERSION, NAMESPACED, KIND (and VERBS, CATEGORIES), aligned under the
    /// header. Empty cells (no short names) are why columns are cut at the header's offsets.
    pub fn parse_table(text: &str) -> Result<Self, KindError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Ok(ApiResources::default());
        };
        let column = |name: &str| {
            header
                .split_whitespace()
                .position(|h| h == name)
                .and_then(|_| header.find(name))
        };
        let header_error = |reason: &str| KindError::Table {
            line: 1,
            reason: reason.to_owned(),
        };
        let (Some(name_at), Some(version_at), Some(namespaced_at), Some(kind_at)) = (
            column("NAME"),
            column("APIVERSION"),
            column("NAMESPACED"),
            column("KIND"),
        ) else {
            return Err(header_error(
                "expected the header of `kubectl api-resources` (NAME ... APIVERSION NAMESPACED KIND)",
            ));
        };
        let mut starts = [name_at, version_at, namespaced_at, kind_at];
        starts.sort_unstable();
        let cell = |line: &str, at: usize| -> String {
            let end = starts.iter().copied().find(|s| *s > at).unwrap_or(line.len());
            line.get(at..end.min(line.len()))
                .or_else(|| line.get(at..))
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        };
        let mut table = ApiResources::default();
        for (index, line) in lines {
            let error = |reason: String| KindError::Table {
                line: index + 1,
                reason,
            };
            let (name, api_version, namespaced, kind) = (
                cell(line, name_at),
                cell(line, version_at),
                cell(line, namespaced_at),
                cell(line, kind_at),
            );
            if name.is_empty() || api_version.is_empty() || kind.is_empty() {
                return Err(error(format!("expected NAME, APIVERSION and KIND in {line:?}")));
            }
            let namespaced = match namespaced.as_str() {
                "true" => true,
                "false" => false,
                other => return Err(error(format!("NAMESPACED is {other:?}, expected true or false"))),
            };
            let (group, _) = split_api_version(&api_version);
            table.insert(group, &kind, &name, namespaced);
        }
        Ok(table)
    }

    /// How `group`/`kind` is served: the built-in table (fixed by Kubernetes), else what the
    /// API described. Never a guess.
    pub fn resolve(&self, group: &str, kind: &str) -> Result<Resolved, KindError> {
        if let Some(info) = builtin(group, kind) {
            return Ok(Resolved {
                resource: info.resource.to_owned(),
                namespaced: info.namespaced,
            });
        }
        self.kinds
            .get(&(group.to_owned(), kind.to_owned()))
            .cloned()
            .ok_or_else(|| KindError::Unknown {
                api: if group.is_empty() {
                    "core".to_owned()
                } else {
                    group.to_owned()
                },
                kind: kind.to_owned(),
            })
    }
}

/// Split `apiVersion` into (group, version): `apps/v1` -> (`apps`, `v1`), `v1` -> (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(group: &str, kind: &str) -> Resolved {
        ApiResources::default().resolve(group, kind).unwrap()
    }

    #[test]
    fn builtins_resolve_with_scope() {
        assert_eq!(
            resolve("apps", "Deployment"),
            Resolved {
                resource: "deployments".into(),
                namespaced: true
            }
        );
        assert!(!resolve("rbac.authorization.k8s.io", "ClusterRole").namespaced);
        assert!(!resolve("", "Namespace").namespaced);
    }

    #[test]
    fn unknown_kinds_are_an_error_naming_the_kind_and_the_remedy() {
        let error = ApiResources::default()
            .resolve("cert-manager.io", "ClusterIssuer")
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("ClusterIssuer (cert-manager.io)"), "{message}");
        assert!(message.contains("--api-resources FILE"), "{message}");
    }

    #[test]
    fn crds_give_scope_and_plural() {
        let crd = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gatewayclasses.gateway.networking.k8s.io"},
            "spec": {"group": "gateway.networking.k8s.io", "scope": "Cluster",
                     "names": {"kind": "GatewayClass", "plural": "gatewayclasses"}}
        });
        let namespaced = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "octopi.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": "Octopus", "plural": "octopi"}}
        });
        let table = ApiResources::from_crds([&crd, &namespaced]);
        assert_eq!(
            table.resolve("gateway.networking.k8s.io", "GatewayClass"),
            Ok(Resolved {
                resource: "gatewayclasses".into(),
                namespaced: false
            })
        );
        // The CRD's plural, not a pluralisation of the kind.
        assert_eq!(table.resolve("example.com", "Octopus").unwrap().resource, "octopi");
        assert!(table.resolve("example.com", "Octopus").unwrap().namespaced);
    }

    const WIDE: &str = "\
NAME                              SHORTNAMES   APIVERSION                        NAMESPACED   KIND                             VERBS                                                        CATEGORIES
configmaps                        cm           v1                                true         ConfigMap                        create,delete,deletecollection,get,list,patch,update,watch
clusterissuers                                 cert-manager.io/v1                false        ClusterIssuer                    delete,deletecollection,get,list,patch,create,update,watch   cert-manager
issuers                                        cert-manager.io/v1                true         Issuer                           delete,deletecollection,get,list,patch,create,update,watch   cert-manager
gatewayclasses                    gc           gateway.networking.k8s.io/v1      false        GatewayClass                     delete,deletecollection,get,list,patch,create,update,watch
";

    const PLAIN: &str = "\
NAME              SHORTNAMES   APIVERSION           NAMESPACED   KIND
clusterissuers                 cert-manager.io/v1   false        ClusterIssuer
issuers                        cert-manager.io/v1   true         Issuer
";

    #[test]
    fn kubectl_api_resources_tables_parse_wide_and_plain() {
        for text in [WIDE, PLAIN] {
            let table = ApiResources::parse_table(text).unwrap();
            let issuer = table.resolve("cert-manager.io", "ClusterIssuer").unwrap();
            assert_eq!(issuer.resource, "clusterissuers");
            assert!(!issuer.namespaced);
            assert!(table.resolve("cert-manager.io", "Issuer").unwrap().namespaced);
        }
        let wide = ApiResources::parse_table(WIDE).unwrap();
        assert!(
            !wide
                .resolve("gateway.networking.k8s.io", "GatewayClass")
                .unwrap()
                .namespaced
        );
        assert_eq!(wide.len(), 4);
    }

    #[test]
    fn malformed_tables_say_which_line() {
        let bad = "NAME APIVERSION NAMESPACED KIND\nwidgets example.com/v1 maybe Widget\n";
        assert!(matches!(
            ApiResources::parse_table(bad),
            Err(KindError::Table { line: 2, .. })
        ));
        assert!(matches!(
            ApiResources::parse_table("no header here\n"),
            Err(KindError::Table { line: 1, .. })
        ));
    }

    #[test]
    fn table_has_no_duplicates() {
        for (i, a) in BUILTIN.iter().enumerate() {
            for b in &BUILTIN[i + 1..] {
                assert!(!(a.group == b.group && a.kind == b.kind), "{a:?} twice");
            }
        }
    }
}
