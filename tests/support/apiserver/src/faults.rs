//! Injected failures for tests of clients' error handling: make chosen verbs on chosen
//! resources answer an error (500, 409, 429 with `Retry-After`, ...) for the next N requests or
//! until cleared, add latency, and cut open watches.
//!
//! ```no_run
//! # use driftguard_testapi::faults::{Failure, Verb};
//! # fn demo(server: &driftguard_testapi::TestApiServer) {
//! // The next two PATCHes of deployments answer 409 Conflict.
//! server.faults().fail(Verb::Patch, "deployments", Failure::conflict(), Some(2));
//! // Every GET of any resource answers 429 with Retry-After: 1 until cleared.
//! server.faults().fail(Verb::Get, "*", Failure::too_many_requests(1), None);
//! server.faults().delay(Verb::List, "configmaps", std::time::Duration::from_millis(200));
//! // Only one identity's Lease renewals fail (one replica cut off from the API server).
//! server.faults().fail_for("system:serviceaccount:driftguard:driftguard", Verb::Update, "leases",
//!     Failure::internal_error(), None);
//! server.faults().drop_watches();
//! server.faults().clear();
//! # }
//! ```
//!
//! Faults apply to resource requests after authentication (discovery and `/version` are never
//! affected). A resource is named by its plural (`deployments`), a subresource as
//! `deployments/scale`, or `*` for all.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::ApiError;

/// A request verb, as kube's authorization names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object (or subresource).
    Get,
    /// GET of a collection.
    List,
    /// A watch.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
    /// Any verb.
    Any,
}

impl Verb {
    /// kube's name of the verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Any => "*",
        }
    }

    fn covers(self, verb: Verb) -> bool {
        self == Verb::Any || self == verb
    }
}

/// What an injected failure answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The Status sent.
    pub error: ApiError,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u32>,
}

impl Failure {
    /// 500 InternalError, as an etcd hiccup looks.
    pub fn internal_error() -> Self {
        Failure {
            error: ApiError::new(500, "InternalError", "Internal error occurred: injected fault"),
            retry_after: None,
        }
    }

    /// 409 Conflict, as a concurrent writer causes.
    pub fn conflict() -> Self {
        Failure {
            error: ApiError::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            retry_after: None,
        }
    }

    /// 429 TooManyRequests with `Retry-After`, as API priority and fairness answers.
    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        Failure {
            error: ApiError::new(429, "TooManyRequests", "Too many requests, please try again later."),
            retry_after: Some(retry_after_seconds),
        }
    }

    /// Any other answer.
    pub fn status(error: ApiError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

#[derive(Debug)]
struct Rule {
    verb: Verb,
    resource: String,
    /// Only requests of this user; None: everyone's.
    user: Option<String>,
    failure: Failure,
    /// Requests left to fail; None until cleared.
    remaining: Option<u32>,
}

#[derive(Debug)]
struct Delay {
    verb: Verb,
    resource: String,
    /// Only requests of this user; None: everyone's.
    user: Option<String>,
    latency: Duration,
}

fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*" || pattern == resource
}

fn user_matches(wanted: Option<&str>, user: &str) -> bool {
    wanted.is_none_or(|wanted| wanted == user)
}

/// The injected faults of one server.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    delays: Mutex<Vec<Delay>>,
    injected: AtomicU64,
    watch_epoch: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Faults {
            rules: Mutex::new(Vec::new()),
            delays: Mutex::new(Vec::new()),
            injected: AtomicU64::new(0),
            watch_epoch: watch::channel(0).0,
        }
    }

    /// Make `verb` on `resource` (`deployments`, `deployments/scale`, `*`) answer `failure`
    /// for the next `times` requests, or until [`Faults::clear`] when None. Rules are checked
    /// in the order they were added.
    pub fn fail(&self, verb: Verb, resource: &str, failure: Failure, times: Option<u32>) {
        self.add_rule(None, verb, resource, failure, times);
    }

    /// [`Faults::fail`] for the requests of one authenticated `user` only (e.g. one replica
    /// of several, each with its own identity).
    pub fn fail_for(&self, user: &str, verb: Verb, resource: &str, failure: Failure, times: Option<u32>) {
        self.add_rule(Some(user), verb, resource, failure, times);
    }

    fn add_rule(&self, user: Option<&str>, verb: Verb, resource: &str, failure: Failure, times: Option<u32>) {
        let mut rules = self.rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rules.push(Rule {
            verb,
            resource: resource.to_owned(),
            user: user.map(str::to_owned),
            failure,
            remaining: times,
        });
    }

    /// Delay every `verb` on `resource` by `latency` (before it is processed) until cleared.
    /// A client that hangs up meanwhile cancels the request: it is never processed.
    pub fn delay(&self, verb: Verb, resource: &str, latency: Duration) {
        self.add_delay(None, verb, resource, latency);
    }

    /// [`Faults::delay`] for the requests of one authenticated `user` only.
    pub fn delay_for(&self, user: &str, verb: Verb, resource: &str, latency: Duration) {
        self.add_delay(Some(user), verb, resource, latency);
    }

    fn add_delay(&self, user: Option<&str>, verb: Verb, resource: &str, latency: Duration) {
        let mut delays = self.delays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        delays.push(Delay {
            verb,
            resource: resource.to_owned(),
            user: user.map(str::to_owned),
            latency,
        });
    }

    /// Cut every open watch now (its stream ends abruptly, like a dropped connection). Later
    /// watches are unaffected.
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Remove all failures and delays.
    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.delays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// How many requests were answered by an injected failure so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The failure for this request of `user`, if one is due (consumes one of its `times`).
    pub fn check(&self, verb: Verb, resource: &str, user: &str) -> Option<Failure> {
        let mut rules = self.rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = rules.iter().position(|r| {
            r.verb.covers(verb)
                && resource_matches(&r.resource, resource)
                && user_matches(r.user.as_deref(), user)
                && r.remaining != Some(0)
        })?;
        let rule = rules.get_mut(index)?;
        let failure = rule.failure.clone();
        if let Some(left) = rule.remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                rules.remove(index);
            }
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(failure)
    }

    /// The added latency for this request of `user`.
    pub fn latency(&self, verb: Verb, resource: &str, user: &str) -> Duration {
        let delays = self.delays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        delays
            .iter()
            .filter(|d| {
                d.verb.covers(verb) && resource_matches(&d.resource, resource) && user_matches(d.user.as_deref(), user)
            })
            .map(|d| d.latency)
            .sum()
    }

    /// A receiver that changes when [`Faults::drop_watches`] is called.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_down_and_match_verb_and_resource() {
        let faults = Faults::new();
        faults.fail(Verb::Patch, "deployments", Failure::conflict(), Some(2));
        assert!(faults.check(Verb::Get, "deployments", "u").is_none());
        assert!(faults.check(Verb::Patch, "configmaps", "u").is_none());
        assert_eq!(faults.check(Verb::Patch, "deployments", "u").unwrap().error.code, 409);
        assert!(faults.check(Verb::Patch, "deployments", "u").is_some());
        assert!(faults.check(Verb::Patch, "deployments", "u").is_none());
        assert_eq!(faults.injected(), 2);

        faults.fail(Verb::Any, "*", Failure::too_many_requests(3), None);
        for _ in 0..5 {
            assert_eq!(faults.check(Verb::List, "pods", "u").unwrap().retry_after, Some(3));
        }
        faults.clear();
        assert!(faults.check(Verb::List, "pods", "u").is_none());
    }

    #[test]
    fn latency_adds_up_and_drops_are_signalled() {
        let faults = Faults::new();
        faults.delay(Verb::Get, "*", Duration::from_millis(5));
        faults.delay(Verb::Any, "configmaps", Duration::from_millis(7));
        assert_eq!(faults.latency(Verb::Get, "configmaps", "u"), Duration::from_millis(12));
        assert_eq!(faults.latency(Verb::List, "secrets", "u"), Duration::ZERO);
        let drops = faults.watch_drops();
        assert!(!drops.has_changed().unwrap());
        faults.drop_watches();
        assert!(drops.has_changed().unwrap());
    }

    #[test]
    fn user_scoped_faults_touch_only_that_user() {
        let faults = Faults::new();
        faults.fail_for("a", Verb::Update, "leases", Failure::internal_error(), None);
        faults.delay_for("a", Verb::Patch, "*", Duration::from_millis(9));
        assert!(faults.check(Verb::Update, "leases", "b").is_none());
        assert_eq!(faults.check(Verb::Update, "leases", "a").unwrap().error.code, 500);
        assert_eq!(faults.latency(Verb::Patch, "configmaps", "a"), Duration::from_millis(9));
        assert_eq!(faults.latency(Verb::Patch, "configmaps", "b"), Duration::ZERO);
        faults.clear();
        assert!(faults.check(Verb::Update, "leases", "a").is_none());
    }
}
