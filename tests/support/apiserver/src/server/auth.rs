//! Bearer-token authentication: each [`Identity`] gets a random token at start and maps to the
//! user a real cluster would report for it.
//!
//! # Simplifications
//! Authorization is not modelled: every authenticated identity may do everything (as if all
//! were bound to cluster-admin). Health and `/version` endpoints answer without a token; every
//! other request without a known bearer token is 401 `Unauthorized`.
use crate::UserInfo;

/// The identities the server knows, as kube-apiserver would authenticate them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// `kubernetes-admin` (system:masters), what kubeadm's admin.conf is.
    Admin,
    /// driftguard's service account `driftguard/driftguard`.
    Driftguard,
    /// A second driftguard replica under its own service account `driftguard/driftguard-peer`:
    /// real replicas share one service account (their Lease identities differ), but a test of
    /// two replicas needs the request log to tell their writes apart.
    DriftguardPeer,
    /// The HPA controller's service account.
    Hpa,
    /// The garbage collector's service account.
    GarbageCollector,
    /// The namespace controller's service account.
    NamespaceController,
    /// A plain user, `alice@example.com` in group `developers`.
    User,
}

impl Identity {
    /// Every identity.
    pub const ALL: [Identity; 7] = [
        Identity::Admin,
        Identity::Driftguard,
        Identity::DriftguardPeer,
        Identity::Hpa,
        Identity::GarbageCollector,
        Identity::NamespaceController,
        Identity::User,
    ];

    /// The authenticated username.
    pub fn username(self) -> &'static str {
        match self {
            Identity::Admin => "kubernetes-admin",
            Identity::Driftguard => "system:serviceaccount:driftguard:driftguard",
            Identity::DriftguardPeer => "system:serviceaccount:driftguard:driftguard-peer",
            Identity::Hpa => "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            Identity::GarbageCollector => "system:serviceaccount:kube-system:generic-garbage-collector",
            Identity::NamespaceController => "system:serviceaccount:kube-system:namespace-controller",
            Identity::User => "alice@example.com",
        }
    }

    /// The service account namespace, for service-account identities.
    fn service_account_namespace(self) -> Option<&'static str> {
        match self {
            Identity::Driftguard | Identity::DriftguardPeer => Some("driftguard"),
            Identity::Hpa | Identity::GarbageCollector | Identity::NamespaceController => Some("kube-system"),
            Identity::Admin | Identity::User => None,
        }
    }

    /// The groups kube-apiserver reports.
    pub fn groups(self) -> Vec<String> {
        let mut groups: Vec<String> = match (self, self.service_account_namespace()) {
            (_, Some(ns)) => vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
            ],
            (Identity::Admin, None) => vec!["system:masters".to_owned()],
            _ => vec!["developers".to_owned()],
        };
        groups.push("system:authenticated".to_owned());
        groups
    }
}

/// Tokens and users of one server.
#[derive(Debug)]
pub(super) struct Identities {
    entries: Vec<(Identity, String, UserInfo)>,
}

impl Identities {
    /// Fresh random tokens; service accounts get a uid like their ServiceAccount object's.
    pub(super) fn generate() -> Self {
        let entries = Identity::ALL
            .iter()
            .map(|&identity| {
                let token = format!("{}.{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                let uid = if identity.service_account_namespace().is_some() {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    String::new()
                };
                let user = UserInfo {
                    username: identity.username().to_owned(),
                    uid,
                    groups: identity.groups(),
                };
                (identity, token, user)
            })
            .collect();
        Identities { entries }
    }

    /// The token of `identity`.
    pub(super) fn token(&self, identity: Identity) -> &str {
        self.entries
            .iter()
            .find(|(i, _, _)| *i == identity)
            .map(|(_, token, _)| token.as_str())
            .unwrap_or("")
    }

    /// The user of `identity`.
    pub(super) fn user(&self, identity: Identity) -> UserInfo {
        self.entries
            .iter()
            .find(|(i, _, _)| *i == identity)
            .map(|(_, _, user)| user.clone())
            .unwrap_or_default()
    }

    /// Who presents `authorization` (an `Authorization` header value).
    pub(super) fn authenticate(&self, authorization: &str) -> Option<UserInfo> {
        let token = authorization.strip_prefix("Bearer ").map(str::trim)?;
        self.entries
            .iter()
            .find(|(_, t, _)| !token.is_empty() && t == token)
            .map(|(_, _, user)| user.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_users_like_a_real_cluster() {
        let ids = Identities::generate();
        let sa = ids
            .authenticate(&format!("Bearer {}", ids.token(Identity::Driftguard)))
            .unwrap();
        assert_eq!(sa.username, "system:serviceaccount:driftguard:driftguard");
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:driftguard",
                "system:authenticated"
            ]
        );
        assert!(!sa.uid.is_empty());
        let admin = ids.user(Identity::Admin);
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        assert!(admin.uid.is_empty());
        assert_eq!(ids.user(Identity::User).groups, ["developers", "system:authenticated"]);
        assert!(ids.authenticate("Bearer nope").is_none());
        assert!(ids.authenticate("Bearer ").is_none());
        assert!(
            ids.authenticate(ids.token(Identity::Admin)).is_none(),
            "scheme required"
        );
    }
}
