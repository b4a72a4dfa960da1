//! Apply order: which tier a kind belongs to. Prune walks the same order backwards.

/// Apply tiers, in the order they are applied (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// CustomResourceDefinitions: everything of their kinds needs them first.
    Crds,
    /// Namespaces: every namespaced object needs its namespace.
    Namespaces,
    /// ClusterRoles, ClusterRoleBindings and ServiceAccounts: workloads and bindings refer to
    /// them, and a pod whose service account is missing is rejected.
    ClusterRbac,
    /// Other cluster-scoped objects (StorageClasses, PriorityClasses, webhooks, ...).
    ClusterScoped,
    /// Everything namespaced, including custom resources whose CRD is already Established.
    Namespaced,
    /// Custom resources whose CRD is applied by the same plan: last, so that waiting for the
    /// CRD to become Established delays nothing else.
    AwaitingCrd,
}

/// Kinds with a fixed tier; every other kind is placed by its scope.
static FIXED: &[(&str, &str, Tier)] = &[
    ("apiextensions.k8s.io", "CustomResourceDefinition", Tier::Crds),
    ("", "Namespace", Tier::Namespaces),
    ("rbac.authorization.k8s.io", "ClusterRole", Tier::ClusterRbac),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding", Tier::ClusterRbac),
    ("", "ServiceAccount", Tier::ClusterRbac),
];

impl Tier {
    /// The tier of a kind; `namespaced` is false for cluster-scoped objects.
    pub fn of(group: &str, kind: &str, namespaced: bool) -> Tier {
        FIXED
            .iter()
            .find(|(g, k, _)| *g == group && *k == kind)
            .map(|(_, _, tier)| *tier)
            .unwrap_or(if namespaced {
                Tier::Namespaced
            } else {
                Tier::ClusterScoped
            })
    }
}
