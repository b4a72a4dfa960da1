//! Who may change managed objects without being judged.

use crate::api::Exemptions;

use super::review::{Operation, Request};

/// Which requests a built-in exemption covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Covers {
    /// DELETE of any managed object.
    Delete,
    /// UPDATE of the scale subresource.
    Scale,
}

/// Kubernetes controllers whose work must never be blocked (DESIGN.md section 4): the garbage
/// collector and namespace controller delete what their owners or namespaces lost; the HPA
/// scales. `system:kube-controller-manager` is their identity when the controller manager
/// runs without per-controller service accounts.
static SYSTEM: &[(&str, Covers)] = &[
    (
        "system:serviceaccount:kube-system:generic-garbage-collector",
        Covers::Delete,
    ),
    ("system:serviceaccount:kube-system:namespace-controller", Covers::Delete),
    (
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        Covers::Scale,
    ),
    ("system:kube-controller-manager", Covers::Delete),
    ("system:kube-controller-manager", Covers::Scale),
];

/// Why a request is exempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exemption {
    /// driftguard's own service account.
    Own,
    /// A Kubernetes controller doing its job.
    System,
    /// Listed in the Guard's exemptions.
    Configured,
}

/// The service account username of a `namespace/name` reference.
pub fn service_account_username(reference: &str) -> String {
    let (namespace, name) = reference.split_once('/').unwrap_or(("default", reference));
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Decide whether `request` is exempt for a Guard with `configured` exemptions.
pub fn exemption(request: &Request<'_>, own_username: &str, configured: &Exemptions) -> Option<Exemption> {
    let user = &request.user_info;
    let username = user.username.as_ref();
    if username == own_username {
        return Some(Exemption::Own);
    }
    let is_scale = request.sub_resource.as_deref() == Some("scale");
    let covers = |c: Covers| match c {
        Covers::Delete => request.operation == Operation::Delete,
        Covers::Scale => is_scale && request.operation == Operation::Update,
    };
    if SYSTEM.iter().any(|&(u, c)| u == username && covers(c)) {
        return Some(Exemption::System);
    }
    let configured_match = configured.users.iter().any(|u| u == username)
        || user.groups.iter().any(|g| configured.groups.iter().any(|c| c == g))
        || configured
            .service_accounts
            .iter()
            .any(|sa| service_account_username(sa) == username);
    configured_match.then_some(Exemption::Configured)
}
