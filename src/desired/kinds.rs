//! What driftguard knows about built-in kinds before discovery is available: the resource
//! (plural) a kind is served as, and whether it is namespaced.

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

/// How a kind is served: a built-in entry, or a guess for kinds discovery has not told us about.
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

/// Resolve a kind to its resource and scope. Unknown kinds (custom resources) are assumed
/// namespaced with kubectl's pluralisation until discovery is wired in.
pub fn resolve(group: &str, kind: &str) -> Resolved {
    match builtin(group, kind) {
        Some(info) => Resolved {
            resource: info.resource.to_owned(),
            namespaced: info.namespaced,
        },
        None => Resolved {
            resource: pluralize(kind),
            namespaced: true,
        },
    }
}

/// kubectl's fallback pluralisation of a kind (lowercased).
fn pluralize(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with('s')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
        || lower.ends_with('x')
        || lower.ends_with('z')
    {
        return format!("{lower}es");
    }
    format!("{lower}s")
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
    fn unknown_kinds_pluralize_like_kubectl() {
        assert_eq!(resolve("example.com", "Policy").resource, "policies");
        assert_eq!(resolve("example.com", "Gateway").resource, "gateways");
        assert_eq!(resolve("example.com", "Ingress").resource, "ingresses");
        assert_eq!(resolve("example.com", "Widget").resource, "widgets");
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
