//! Tenants (README "Multi-tenancy"): a Guard acts with its tenant's rights, never with
//! driftguard's. Pure decisions: which identity a Guard's writes impersonate, and whether a
//! Guard may read a GitSource of another namespace. [`Impersonator`] turns an identity into a
//! client (no I/O: kube clients connect lazily).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::api::AccessFrom;

/// The lockdown settings (`cluster.tenancy` in the config file, `tenancy.*` chart values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenancySettings {
    /// Service account (in the Guard's namespace) of Guards without `serviceAccountName`.
    /// None: such Guards act as driftguard itself (no lockdown).
    pub default_service_account: Option<String>,
    /// Namespaces whose Guards without `serviceAccountName` act as driftguard itself even in
    /// lockdown (the platform team's own).
    pub privileged_namespaces: Vec<String>,
    /// Refuse every GitSource reference across namespaces, whatever its `accessFrom` says.
    pub no_cross_namespace_refs: bool,
}

/// Who a Guard's writes are made as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// driftguard's own service account (no impersonation).
    Driftguard,
    /// `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount {
        /// The Guard's namespace.
        namespace: String,
        /// The account's name.
        name: String,
    },
}

impl Identity {
    /// The username to impersonate (None: driftguard itself).
    pub fn username(&self) -> Option<String> {
        match self {
            Identity::Driftguard => None,
            Identity::ServiceAccount { namespace, name } => Some(format!("system:serviceaccount:{namespace}:{name}")),
        }
    }

    /// The groups the API server gives that service account (for access reviews).
    pub fn groups(&self) -> Vec<String> {
        match self {
            Identity::Driftguard => Vec::new(),
            Identity::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ],
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.username() {
            Some(user) => f.write_str(&user),
            None => f.write_str("driftguard"),
        }
    }
}

/// The identity of a Guard in `namespace` whose spec names `service_account` (rule: the
/// Guard's own `serviceAccountName` first; else driftguard itself in a privileged namespace;
/// else the default account in lockdown; else driftguard itself).
pub fn identity(namespace: &str, service_account: Option<&str>, settings: &TenancySettings) -> Identity {
    let account = |name: &str| Identity::ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    match (service_account, &settings.default_service_account) {
        (Some(name), _) => account(name),
        (None, _) if settings.privileged_namespaces.iter().any(|n| n == namespace) => Identity::Driftguard,
        (None, Some(default)) => account(default),
        (None, None) => Identity::Driftguard,
    }
}

/// Why a Guard may not read the GitSource it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The setting forbids cross-namespace references.
    #[error(
        "GitSource {source_namespace}/{name} is in another namespace and cluster.tenancy.noCrossNamespaceRefs forbids cross-namespace references: use a GitSource in {namespace}"
    )]
    CrossNamespaceRefsDisabled {
        /// The Guard's namespace.
        namespace: String,
        /// The source's namespace.
        source_namespace: String,
        /// The source's name.
        name: String,
    },
    /// The source does not list the Guard's namespace.
    #[error(
        "GitSource {source_namespace}/{name} does not allow Guards of namespace {namespace}: its spec.accessFrom must list {namespace} or select its labels"
    )]
    CrossNamespaceRefDenied {
        /// The Guard's namespace.
        namespace: String,
        /// The source's namespace.
        source_namespace: String,
        /// The source's name.
        name: String,
    },
}

impl ReferenceError {
    /// The Ready condition's reason: the rule that refused.
    pub fn reason(&self) -> &'static str {
        match self {
            ReferenceError::CrossNamespaceRefsDisabled { .. } => "CrossNamespaceRefsDisabled",
            ReferenceError::CrossNamespaceRefDenied { .. } => "CrossNamespaceRefDenied",
        }
    }
}

/// Whether a Guard in `namespace` (whose Namespace carries `labels`) may read the GitSource
/// `source_namespace/source` whose spec says `access_from`. The same namespace always may.
pub fn check_reference(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    source_namespace: &str,
    source: &str,
    access_from: Option<&AccessFrom>,
    settings: &TenancySettings,
) -> Result<(), ReferenceError> {
    if namespace == source_namespace {
        return Ok(());
    }
    let names = || (namespace.to_owned(), source_namespace.to_owned(), source.to_owned());
    if settings.no_cross_namespace_refs {
        let (namespace, source_namespace, source) = names();
        return Err(ReferenceError::CrossNamespaceRefsDisabled {
            namespace,
            source_namespace,
            name: source,
        });
    }
    let allowed = access_from.is_some_and(|access| {
        access.namespaces.iter().any(|n| n == namespace || n == "*")
            || access.namespace_selector.as_ref().is_some_and(|selector| {
                selector
                    .match_labels
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            })
    });
    if allowed {
        return Ok(());
    }
    let (namespace, source_namespace, source) = names();
    Err(ReferenceError::CrossNamespaceRefDenied {
        namespace,
        source_namespace,
        name: source,
    })
}

/// Why an impersonating client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build a client impersonating {identity}: {source}")]
pub struct ImpersonateError {
    identity: Identity,
    #[source]
    source: kube::Error,
}

/// Clients acting as Guards' identities, built from driftguard's own config and kept per
/// identity. Without a config (tests, `Context::new`), every identity gets driftguard's client.
#[derive(Clone)]
pub struct Impersonator {
    base: Option<kube::Config>,
    own: kube::Client,
    clients: Arc<Mutex<HashMap<Identity, kube::Client>>>,
}

impl Impersonator {
    /// Impersonate through copies of `base`; `own` is driftguard's client.
    pub fn new(base: Option<kube::Config>, own: kube::Client) -> Self {
        Impersonator {
            base,
            own,
            clients: Arc::default(),
        }
    }

    /// Whether this impersonator really impersonates (a base config was given).
    pub fn enabled(&self) -> bool {
        self.base.is_some()
    }

    /// The client writing as `identity`.
    pub fn client(&self, identity: &Identity) -> Result<kube::Client, ImpersonateError> {
        let (Some(base), Some(user)) = (&self.base, identity.username()) else {
            return Ok(self.own.clone());
        };
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(identity) {
            return Ok(client.clone());
        }
        let mut config = base.clone();
        // A service account impersonated alone gets its own groups from the API server
        // (system:serviceaccounts, system:serviceaccounts:<ns>, system:authenticated): RBAC
        // rule 12 needs no `impersonate` on groups.
        config.auth_info.impersonate = Some(user);
        config.auth_info.impersonate_groups = None;
        let client = kube::Client::try_from(config).map_err(|source| ImpersonateError {
            identity: identity.clone(),
            source,
        })?;
        clients.insert(identity.clone(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamespaceSelector;

    fn settings(default: Option<&str>, privileged: &[&str], no_cross: bool) -> TenancySettings {
        TenancySettings {
            default_service_account: default.map(str::to_owned),
            privileged_namespaces: privileged.iter().map(|s| (*s).to_owned()).collect(),
            no_cross_namespace_refs: no_cross,
        }
    }

    fn sa(namespace: &str, name: &str) -> Identity {
        Identity::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_guard_acts_as_its_account_else_the_default_else_driftguard() {
        let open = settings(None, &[], false);
        let locked = settings(Some("default"), &["platform"], false);
        let cases = [
            ("team-a", Some("deployer"), &open, sa("team-a", "deployer")),
            ("team-a", None, &open, Identity::Driftguard),
            ("team-a", Some("deployer"), &locked, sa("team-a", "deployer")),
            ("team-a", None, &locked, sa("team-a", "default")),
            ("platform", None, &locked, Identity::Driftguard),
            ("platform", Some("deployer"), &locked, sa("platform", "deployer")),
        ];
        for (namespace, account, settings, want) in cases {
            assert_eq!(identity(namespace, account, settings), want, "{namespace} {account:?}");
        }
        let who = sa("team-a", "deployer");
        assert_eq!(who.username().as_deref(), Some("system:serviceaccount:team-a:deployer"));
        assert_eq!(
            who.groups(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ]
        );
        assert_eq!(Identity::Driftguard.username(), None);
    }

    #[test]
    fn cross_namespace_references_need_the_sources_consent() {
        let open = settings(None, &[], false);
        let closed = settings(None, &[], true);
        let labels: BTreeMap<String, String> = [("team".to_owned(), "b".to_owned())].into();
        let listed = AccessFrom {
            namespaces: vec!["team-b".into()],
            namespace_selector: None,
        };
        let everyone = AccessFrom {
            namespaces: vec!["*".into()],
            namespace_selector: None,
        };
        let selected = AccessFrom {
            namespaces: Vec::new(),
            namespace_selector: Some(NamespaceSelector {
                match_labels: labels.clone(),
            }),
        };
        let other = AccessFrom {
            namespaces: vec!["team-c".into()],
            namespace_selector: Some(NamespaceSelector {
                match_labels: [("team".to_owned(), "c".to_owned())].into(),
            }),
        };
        let check = |ns: &str, access: Option<&AccessFrom>, settings: &TenancySettings| {
            check_reference(ns, &labels, "team-a", "repo", access, settings).map_err(|e| e.reason())
        };
        assert_eq!(check("team-a", None, &closed), Ok(()), "same namespace");
        assert_eq!(check("team-b", None, &open), Err("CrossNamespaceRefDenied"));
        assert_eq!(check("team-b", Some(&listed), &open), Ok(()));
        assert_eq!(check("team-b", Some(&everyone), &open), Ok(()));
        assert_eq!(check("team-b", Some(&selected), &open), Ok(()));
        assert_eq!(check("team-b", Some(&other), &open), Err("CrossNamespaceRefDenied"));
        assert_eq!(
            check("team-b", Some(&listed), &closed),
            Err("CrossNamespaceRefsDisabled")
        );
        let message = check_reference("team-b", &labels, "team-a", "repo", None, &open)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("team-a/repo") && message.contains("accessFrom"),
            "{message}"
        );
    }
}
