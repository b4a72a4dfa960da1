//! Executes a [`Plan`] against the cluster: reads the live snapshot the plan needs, then
//! server-side applies (one stable field manager, `force`) and prunes (Background, with a uid
//! precondition). Kinds are resolved by discovery, cached and refreshed on a miss, at most once
//! per pass (so many custom resources of a kind the cluster does not serve cost one refresh).
//! Custom resources of a CRD applied in the same plan wait, bounded by the Applier's CRD wait,
//! for that CRD to be Established and served; past the bound they are reported as waiting.
//! Every write has a timeout; one object's failure never stops the rest.
//!
//! Transient API errors are retried inside the pass, as production controllers do: a write
//! answered 409 Conflict, 429 TooManyRequests, 500/502/503/504, a timeout or a broken
//! connection is tried again, up to [`RetryPolicy::attempts`] times within the object's
//! [`RetryPolicy::budget`], after a capped exponential backoff with jitter, or after the wait the
//! server asked for (capped). A short storm is absorbed in the same pass; a long one leaves the
//! object in `apply_failed`/`prune_failed` and the next reconcile tries again. Every write's
//! outcome ([`WriteReport`]) is returned for metrics.
//!
//! `Retry-After`: kube's error ([`kube::Error::Api`]) carries the `Status` body, not the
//! response headers, so the header itself is out of reach here. kube-apiserver mirrors it in
//! `details.retryAfterSeconds` of the Status it sends with 429 (`NewTooManyRequests`) and with
//! 500/504 server timeouts, and that is honoured; without it, backoff alone decides. kube's
//! client has its own retry layer for 429/503/504 that honours the header
//! (`kube::Config::default_retry`, on by default, and kept on by `serve::connect` because it
//! also covers reads and watches): those retries happen inside one attempt here (bounded by the
//! write timeout) and are not counted in driftguard's metrics.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::wait::{Condition, conditions};
use kube::{Client, Discovery};

use super::kinds::ClusterKinds;
use tokio::time::Instant;

use super::delegation::{BOUNDS_MANAGER, Delegated, Held};
use super::{
    Applied, GroupKind, InventoryEntry, LiveObject, LiveSnapshot, ObjectKey, Plan, PlanFacts, SkipReason, WaitReason,
    next_inventory, plan,
};
use crate::admission::break_glass;
use crate::api::PruneSpec;
use crate::desired::{DesiredObject, GuardId, HpaBounds};

/// driftguard's one field manager for everything it applies.
pub const FIELD_MANAGER: &str = "driftguard";

/// How long one sync waits, in total, for the CRDs it applied to become Established.
pub const DEFAULT_CRD_WAIT: Duration = Duration::from_secs(30);
/// How often a CRD (and then discovery) is re-read while waiting for it.
const CRD_POLL: Duration = Duration::from_millis(250);

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_KIND: &str = "CustomResourceDefinition";

/// Why the applier could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Discovery failed.
    #[error("API discovery failed: {0}")]
    Discovery(kube::Error),
}

/// One object that could not be written or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which object.
    pub key: ObjectKey,
    /// What went wrong, for status and Events.
    pub message: String,
}

/// The kind of write, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteVerb {
    /// A server-side apply (or a merge patch of driftguard's annotations).
    Apply,
    /// A delete (prune).
    Delete,
}

impl WriteVerb {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteVerb::Apply => "apply",
            WriteVerb::Delete => "delete",
        }
    }
}

/// Why a write was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// 409 Conflict (a concurrent writer).
    Conflict,
    /// 429 TooManyRequests (API priority and fairness).
    TooManyRequests,
    /// 500, 502, 503 or 504.
    ServerError,
    /// No answer within the write timeout.
    Timeout,
    /// The connection failed.
    Unreachable,
}

impl RetryReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Conflict => "conflict",
            RetryReason::TooManyRequests => "too_many_requests",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Unreachable => "unreachable",
        }
    }
}

/// How one object's write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteResult {
    /// Done at the first attempt.
    Ok,
    /// Done after one or more retries.
    Retried,
    /// Not done: a permanent error, or transient ones past the attempts or the budget.
    Failed,
}

impl WriteResult {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteResult::Ok => "ok",
            WriteResult::Retried => "retried",
            WriteResult::Failed => "failed",
        }
    }
}

/// One object's write: how it ended, the retries it took and the time it waited between
/// attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Which object.
    pub key: ObjectKey,
    /// Apply or delete.
    pub verb: WriteVerb,
    /// How it ended.
    pub result: WriteResult,
    /// Why each retry was made, in order.
    pub retries: Vec<RetryReason>,
    /// Total wait between attempts (backoff or the server's `retryAfterSeconds`).
    pub waited: Duration,
}

impl WriteReport {
    /// Count this write in `driftguard_api_writes_total` and its retries and waits.
    pub fn observe(&self, metrics: &crate::telemetry::Metrics) {
        metrics.observe_api_write(
            self.verb.as_str(),
            self.result.as_str(),
            self.retries.iter().map(|r| r.as_str()),
            self.waited,
        );
    }
}

/// How writes are retried on transient API errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per write, the first included (1: never retry).
    pub attempts: u32,
    /// The first backoff; it doubles with each retry.
    pub backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// The longest wait honoured when the server asks for one (`retryAfterSeconds`).
    pub max_retry_after: Duration,
    /// The time one object's write may take over all its attempts and waits. The first attempt
    /// always gets the full write timeout; retries share what is left, and a wait that would end
    /// past the budget is not started.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, backoff 200 ms doubling to 3 s, `retryAfterSeconds` honoured up to 10 s,
    /// 20 s per object: a storm of a few seconds is absorbed, an outage costs each object at
    /// most the budget (or the write timeout, if longer).
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
            max_retry_after: Duration::from_secs(10),
            budget: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first): the server's `retry_after`
    /// (capped at [`RetryPolicy::max_retry_after`]) when it sent one, else the exponential
    /// backoff capped at [`RetryPolicy::max_backoff`] with equal jitter (between half and all of
    /// it, drawn from `random`) so that writers retrying together spread out.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let doubled = self
            .backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max_backoff);
        let half = u64::try_from(doubled.as_nanos() / 2).unwrap_or(u64::MAX);
        let jitter = random.checked_rem(half.saturating_add(1)).unwrap_or(0);
        doubled.saturating_sub(Duration::from_nanos(half)) + Duration::from_nanos(jitter)
    }
}

/// A failure worth another attempt, and the wait the server asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transient {
    reason: RetryReason,
    retry_after: Option<Duration>,
}

/// One failed attempt of a write.
#[derive(Debug)]
enum AttemptError {
    /// The API answered with an error, or the request failed.
    Kube(kube::Error),
    /// No answer within this timeout.
    TimedOut(Duration),
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Kube(error) => error.fmt(f),
            AttemptError::TimedOut(timeout) => write!(f, "no answer within {timeout:?}"),
        }
    }
}

/// Whether `error` of a `verb` is transient. A delete's 409 whose uid precondition failed is
/// not: the object was recreated meanwhile and must not be deleted.
fn transient(error: &AttemptError, verb: WriteVerb) -> Option<Transient> {
    let status = match error {
        AttemptError::TimedOut(_) => {
            return Some(Transient {
                reason: RetryReason::Timeout,
                retry_after: None,
            });
        }
        AttemptError::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            return Some(Transient {
                reason: RetryReason::Unreachable,
                retry_after: None,
            });
        }
        AttemptError::Kube(kube::Error::Api(status)) => status,
        AttemptError::Kube(_) => return None,
    };
    let reason = match status.code {
        409 if verb == WriteVerb::Delete && status.message.contains("Precondition failed") => return None,
        409 => RetryReason::Conflict,
        429 => RetryReason::TooManyRequests,
        500 | 502 | 503 | 504 => RetryReason::ServerError,
        _ => return None,
    };
    let retry_after = status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|seconds| *seconds > 0)
        .map(|seconds| Duration::from_secs(u64::from(seconds)));
    Some(Transient { reason, retry_after })
}

/// A fresh random number for jitter (std's hasher keys are random per `RandomState`).
fn jitter_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Applied objects with their uids.
    pub applied: Vec<Applied>,
    /// Objects whose apply failed.
    pub apply_failed: Vec<Failure>,
    /// Objects deleted (or already gone).
    pub pruned: Vec<ObjectKey>,
    /// Objects whose delete failed (they stay in the inventory).
    pub prune_failed: Vec<Failure>,
    /// Apply steps not attempted because the CRD they need was not Established (and served)
    /// within the CRD wait.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
    /// Every write attempted (applies, deletes, break-glass cleanups), for metrics.
    pub writes: Vec<WriteReport>,
    /// Delegated fields written at their bound (a delegate had set them outside it), by
    /// object, for the audit log and Events.
    pub clamped: Vec<(ObjectKey, Vec<Held>)>,
}

/// The result of one full pass over a Guard.
#[derive(Debug)]
pub struct Sync {
    /// What apply and prune did.
    pub outcome: Outcome,
    /// The inventory to record in the Guard's status.
    pub inventory: Vec<InventoryEntry>,
    /// Objects left alone, and why.
    pub skipped: Vec<(ObjectKey, SkipReason)>,
    /// Objects that were not applied because their CRD is not Established yet (neither before
    /// this pass nor within its CRD wait), and why. The next reconcile retries them.
    pub waiting: Vec<(ObjectKey, WaitReason)>,
    /// Objects detached by an unexpired break-glass (left alone).
    pub detached: Vec<ObjectKey>,
    /// When the earliest of those break-glass sessions runs out.
    pub detached_until: Option<time::OffsetDateTime>,
    /// Objects whose break-glass ran out this pass: Git applied, annotations removed.
    pub ended: Vec<ObjectKey>,
}

/// State of one pass (a sync, or one public read or execute call).
#[derive(Default)]
struct Pass {
    /// Discovery was refreshed on a miss already; further misses in this pass do not refresh.
    refreshed: AtomicBool,
}

/// Applies and prunes through one client. Clones share the discovery cache.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    /// Writes (applies, prunes, break-glass cleanups) go through this client: driftguard's own
    /// or one impersonating a Guard's identity ([`Applier::acting_as`]). Reads use `client`.
    writer: Client,
    kinds: Arc<ClusterKinds>,
    timeout: Duration,
    crd_wait: Duration,
    retry: RetryPolicy,
    /// HorizontalPodAutoscaler bounds for delegate rules with `fromHPA` (empty unless
    /// [`Applier::with_hpa`]).
    hpa: HpaBounds,
}

/// What became of one CRD this pass waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrdState {
    /// Established (and its kind discovered, if it defines it).
    Established,
    /// Not within the wait (or its own apply failed).
    NotEstablished,
}

/// True when `crd` defines and serves `gvk`.
fn defines(crd: &CustomResourceDefinition, gvk: &GroupVersionKind) -> bool {
    crd.spec.group == gvk.group
        && crd.spec.names.kind == gvk.kind
        && crd.spec.versions.iter().any(|v| v.name == gvk.version && v.served)
}

impl Applier {
    /// Run discovery once; `timeout` bounds every single read or write. Custom resources wait
    /// up to [`DEFAULT_CRD_WAIT`] for a CRD applied in the same pass ([`Applier::with_crd_wait`]).
    pub async fn new(client: Client, timeout: Duration) -> Result<Self, ApplyError> {
        let kinds = ClusterKinds::discover(client.clone())
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(Applier {
            writer: client.clone(),
            client,
            kinds,
            timeout,
            crd_wait: DEFAULT_CRD_WAIT,
            retry: RetryPolicy::default(),
            hpa: HpaBounds::default(),
        })
    }

    /// Judge delegate rules with `bounds: {fromHPA: true}` by `hpa` (a table a watch keeps).
    #[must_use]
    pub fn with_hpa(mut self, hpa: HpaBounds) -> Self {
        self.hpa = hpa;
        self
    }

    /// The HorizontalPodAutoscaler bounds this applier judges delegated fields by.
    pub fn hpa(&self) -> &HpaBounds {
        &self.hpa
    }

    /// This applier writing through `writer` (a client impersonating a Guard's identity);
    /// reads for the live snapshot, CRDs and discovery keep driftguard's own client.
    #[must_use]
    pub fn acting_as(&self, writer: Client) -> Self {
        Applier { writer, ..self.clone() }
    }

    /// Retry transient write errors under `policy` instead of [`RetryPolicy::default`].
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Run one write: `call` is attempted, each attempt under the write timeout, and tried again
    /// on a transient error as [`RetryPolicy`] allows. Returns the result (the last error, with
    /// the attempts it took) and the write's report.
    async fn write<T, F, Fut>(&self, verb: WriteVerb, key: &ObjectKey, mut call: F) -> (Result<T, String>, WriteReport)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let started = Instant::now();
        let deadline = started + self.retry.budget;
        let mut report = WriteReport {
            key: key.clone(),
            verb,
            result: WriteResult::Ok,
            retries: Vec::new(),
            waited: Duration::ZERO,
        };
        let mut attempt: u32 = 1;
        loop {
            let timeout = if attempt == 1 {
                self.timeout
            } else {
                self.timeout.min(deadline.saturating_duration_since(Instant::now()))
            };
            let error = match tokio::time::timeout(timeout, call()).await {
                Ok(Ok(value)) => {
                    if attempt > 1 {
                        report.result = WriteResult::Retried;
                        tracing::info!(%key, verb = verb.as_str(), attempts = attempt, waited = ?report.waited, "write succeeded after transient API errors");
                    }
                    return (Ok(value), report);
                }
                Ok(Err(error)) => AttemptError::Kube(error),
                Err(_) => AttemptError::TimedOut(timeout),
            };
            report.result = WriteResult::Failed;
            let Some(cause) = transient(&error, verb) else {
                let message = match attempt {
                    1 => error.to_string(),
                    n => format!("{error} (attempt {n})"),
                };
                return (Err(message), report);
            };
            if attempt >= self.retry.attempts {
                return (
                    Err(format!(
                        "{error} (gave up after {attempt} attempts in {:?})",
                        started.elapsed().min(self.retry.budget)
                    )),
                    report,
                );
            }
            let delay = self.retry.delay(attempt, cause.retry_after, jitter_seed());
            if delay >= deadline.saturating_duration_since(Instant::now()) {
                return (
                    Err(format!(
                        "{error} (gave up after {attempt} attempts: the next, in {delay:?}, would pass the {:?} retry budget)",
                        self.retry.budget
                    )),
                    report,
                );
            }
            tracing::info!(%key, verb = verb.as_str(), reason = cause.reason.as_str(), attempt, ?delay, %error, "transient API error; retrying");
            report.retries.push(cause.reason);
            report.waited += delay;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// [`Applier::write`] through `api`; when the kind could not be resolved (`Err`), nothing is
    /// sent and there is no report.
    async fn write_through<T, F, Fut>(
        &self,
        verb: WriteVerb,
        key: &ObjectKey,
        api: Result<Api<DynamicObject>, String>,
        mut call: F,
    ) -> (Result<T, String>, Option<WriteReport>)
    where
        F: FnMut(Api<DynamicObject>) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        match api {
            Ok(api) => {
                let (result, report) = self.write(verb, key, || call(api.clone())).await;
                (result, Some(report))
            }
            Err(message) => (Err(message), None),
        }
    }

    /// Bound the total time one sync waits for the CRDs it applied to become Established
    /// before applying their custom resources (zero: check once, never wait).
    #[must_use]
    pub fn with_crd_wait(mut self, wait: Duration) -> Self {
        self.crd_wait = wait;
        self
    }

    /// The cluster's kinds as this applier discovers them (shared with the loads of desired
    /// state, so one discovery serves both).
    pub fn kinds(&self) -> &Arc<ClusterKinds> {
        &self.kinds
    }

    /// Run discovery again and cache it.
    async fn refresh_discovery(&self) -> Result<Arc<Discovery>, String> {
        self.kinds
            .refresh()
            .await
            .map_err(|error| format!("API discovery failed: {error}"))
    }

    /// How the cluster serves a kind: from the cached discovery, refreshed on the pass's first
    /// miss (a CRD established since).
    async fn resolve(&self, pass: &Pass, gvk: &GroupVersionKind) -> Result<Option<(ApiResource, Scope)>, String> {
        let lookup = |discovery: &Discovery| discovery.resolve_gvk(gvk).map(|(r, c)| (r, c.scope));
        let cached = self.kinds.discovery();
        if let Some(found) = lookup(&cached) {
            return Ok(Some(found));
        }
        if pass.refreshed.swap(true, Ordering::Relaxed) {
            return Ok(None);
        }
        let fresh = self.refresh_discovery().await?;
        Ok(lookup(&fresh))
    }

    /// The API for a kind (see [`Applier::resolve`] for when discovery is refreshed).
    /// The resource serving a kind, and its scope, from discovery (refreshed once on a miss).
    pub async fn resource(&self, group: &str, version: &str, kind: &str) -> Result<(ApiResource, Scope), String> {
        self.resolve(&Pass::default(), &GroupVersionKind::gvk(group, version, kind))
            .await?
            .ok_or_else(|| format!("the cluster does not serve {kind} in {group}/{version}"))
    }

    /// The API writing a desired object's kind, in its namespace (through the writer).
    async fn write_api_of(&self, pass: &Pass, object: &DesiredObject) -> Result<Api<DynamicObject>, String> {
        self.api_through(
            &self.writer,
            pass,
            &object.group,
            &object.version,
            &object.kind,
            object.namespace.as_deref(),
        )
        .await
    }

    async fn api(
        &self,
        pass: &Pass,
        group: &str,
        version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, String> {
        self.api_through(&self.client, pass, group, version, kind, namespace)
            .await
    }

    async fn api_through(
        &self,
        client: &Client,
        pass: &Pass,
        group: &str,
        version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, String> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, scope) = self
            .resolve(pass, &gvk)
            .await?
            .ok_or_else(|| format!("the cluster does not serve {kind} in {group}/{version}"))?;
        Ok(match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        })
    }

    /// The custom (non-built-in) kinds among `desired` that the cluster serves, i.e. whose CRD
    /// is Established.
    pub async fn served_custom_kinds(&self, desired: &[DesiredObject]) -> HashSet<GroupKind> {
        self.served_custom_kinds_in(&Pass::default(), desired).await
    }

    async fn served_custom_kinds_in(&self, pass: &Pass, desired: &[DesiredObject]) -> HashSet<GroupKind> {
        let mut served = HashSet::new();
        for object in desired {
            if crate::desired::kinds::builtin(&object.group, &object.kind).is_some() {
                continue;
            }
            if self
                .api(pass, &object.group, &object.version, &object.kind, None)
                .await
                .is_ok()
            {
                served.insert(GroupKind::new(&object.group, &object.kind));
            }
        }
        served
    }

    /// Read what the plan compares against: every desired object and every inventory entry.
    /// A kind that cannot be read is marked unknown, so the plan neither skips nor forgets it.
    pub async fn snapshot(&self, desired: &[DesiredObject], inventory: &[InventoryEntry]) -> LiveSnapshot {
        self.snapshot_in(&Pass::default(), desired, inventory).await
    }

    async fn snapshot_in(&self, pass: &Pass, desired: &[DesiredObject], inventory: &[InventoryEntry]) -> LiveSnapshot {
        let mut live = LiveSnapshot::new();
        let wanted = desired
            .iter()
            .map(|o| (ObjectKey::of(o), o.version.clone()))
            .chain(inventory.iter().map(|e| (e.key(), e.version.clone())));
        for (key, version) in wanted {
            if live.get(&key).is_some() {
                continue;
            }
            let read = async {
                let api = self
                    .api(pass, &key.group, &version, &key.kind, key.namespace.as_deref())
                    .await?;
                match tokio::time::timeout(self.timeout, api.get_opt(&key.name)).await {
                    Ok(Ok(object)) => Ok(object),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            };
            match read.await {
                Ok(Some(object)) => match serde_json::to_value(object) {
                    Ok(object) => live.insert(LiveObject { key, object }),
                    Err(error) => {
                        tracing::warn!(%key, %error, "unreadable live object");
                        live.mark_unknown(key.group_kind());
                    }
                },
                Ok(None) => {}
                Err(message) => {
                    tracing::warn!(%key, %message, "cannot read live object");
                    live.mark_unknown(GroupKind::new(&key.group, &key.kind));
                }
            }
        }
        live
    }

    /// One full pass for a Guard: read the live state, plan, apply and prune, and compute the
    /// next inventory.
    pub async fn sync(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
        guard: &GuardId,
        prune: &PruneSpec,
    ) -> Sync {
        self.sync_holding(desired, inventory, guard, prune, &HashSet::new())
            .await
    }

    /// [`Applier::sync`], leaving `held` objects (fights self-heal gave up on) as they are.
    pub async fn sync_holding(
        &self,
        desired: &[DesiredObject],
        inventory: &[InventoryEntry],
        guard: &GuardId,
        prune: &PruneSpec,
        held: &HashSet<ObjectKey>,
    ) -> Sync {
        let pass = Pass::default();
        let live = self.snapshot_in(&pass, desired, inventory).await;
        let established = self.served_custom_kinds_in(&pass, desired).await;
        // Break-glass: detached objects are left alone; expired ones get Git back (below).
        let now = time::OffsetDateTime::now_utc();
        let mut detached = HashSet::new();
        let mut detached_until: Option<time::OffsetDateTime> = None;
        let mut expired = Vec::new();
        for object in desired {
            let key = ObjectKey::of(object);
            if let Some(current) = live.get(&key) {
                if let Some(until) = break_glass::active_until(current, now) {
                    detached.insert(key);
                    detached_until = Some(detached_until.map_or(until, |earliest| earliest.min(until)));
                } else if break_glass::expired(current, now) {
                    expired.push(object);
                }
            }
        }
        let facts = PlanFacts {
            guard,
            established: &established,
            prune,
            held,
            detached: &detached,
            hpa: &self.hpa,
        };
        let plan = plan(desired, inventory, &live, &facts);
        let mut outcome = self.execute_in(&pass, &plan).await;
        let mut ended = Vec::new();
        for object in expired {
            let key = ObjectKey::of(object);
            if outcome.apply_failed.iter().any(|f| f.key == key) {
                continue; // Git is not back yet: keep the annotations, retry next pass
            }
            let (result, report) = self.end_break_glass(&pass, object).await;
            outcome.writes.extend(report);
            match result {
                Ok(()) => ended.push(key),
                Err(message) => tracing::warn!(%key, %message, "cannot remove expired break-glass annotations"),
            }
        }
        let mut waiting = plan.waiting.clone();
        waiting.extend(outcome.waiting.iter().cloned());
        Sync {
            inventory: next_inventory(&plan, &outcome.applied, &outcome.pruned),
            skipped: plan.skipped.clone(),
            waiting,
            detached: detached.into_iter().collect(),
            detached_until,
            ended,
            outcome,
        }
    }

    /// Remove the break-glass annotations of `object` (its time is up and Git is applied).
    async fn end_break_glass(&self, pass: &Pass, object: &DesiredObject) -> (Result<(), String>, Option<WriteReport>) {
        let api = self.write_api_of(pass, object).await;
        let patch = &serde_json::json!({"metadata": {"annotations": {
            break_glass::BREAK_GLASS_ANNOTATION: null,
            break_glass::EXPIRES_ANNOTATION: null,
        }}});
        let params = &PatchParams::apply(FIELD_MANAGER);
        let name = object.name.as_str();
        self.write_through(WriteVerb::Apply, &ObjectKey::of(object), api, move |api| async move {
            api.patch(name, params, &Patch::Merge(patch)).await.map(drop)
        })
        .await
    }

    /// Wait for the CRD `name` (applied earlier in this pass, unless its apply failed) to be
    /// Established and for discovery to serve `gvk`, until `deadline`. A CRD that is
    /// Established but does not define `gvk` at all ends the wait at once: the apply then fails
    /// with "the cluster does not serve", which is the error to fix.
    async fn await_crd(&self, name: &str, gvk: &GroupVersionKind, applied: bool, deadline: Instant) -> CrdState {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let is_established = conditions::is_crd_established();
        let mut established: Option<CustomResourceDefinition> = None;
        loop {
            if established.is_none() {
                match tokio::time::timeout(self.timeout, crds.get_opt(name)).await {
                    Ok(Ok(crd)) => established = crd.filter(|crd| is_established.matches_object(Some(crd))),
                    Ok(Err(error)) => tracing::debug!(crd = name, %error, "reading CRD"),
                    Err(_) => tracing::debug!(crd = name, "reading CRD timed out"),
                }
            }
            if let Some(crd) = &established {
                match self.refresh_discovery().await {
                    Ok(discovery) if discovery.resolve_gvk(gvk).is_some() => return CrdState::Established,
                    Ok(_) if !defines(crd, gvk) => return CrdState::Established,
                    Ok(_) => tracing::debug!(crd = name, "Established but not discovered yet"),
                    Err(message) => tracing::debug!(crd = name, %message, "refreshing discovery"),
                }
            }
            // A CRD whose own apply failed is checked once: it may exist from before.
            let now = Instant::now();
            if !applied || now >= deadline {
                return CrdState::NotEstablished;
            }
            tokio::time::sleep(CRD_POLL.min(deadline - now)).await;
        }
    }

    /// Apply then prune, in the plan's order. An apply step that requires a CRD waits for it
    /// (all such waits share one [`Applier::with_crd_wait`] budget); steps whose CRD is not
    /// ready in time go to [`Outcome::waiting`].
    pub async fn execute(&self, plan: &Plan<'_>) -> Outcome {
        self.execute_in(&Pass::default(), plan).await
    }

    /// Server-side apply one desired object (manager `driftguard`, force) without the
    /// delegated fields delegates hold, then write those outside their bounds at the bound
    /// (manager [`BOUNDS_MANAGER`], force), retrying transient errors; returns the stored
    /// object's metadata and the writes' reports (none when the kind could not be resolved,
    /// so nothing was sent).
    pub async fn apply_one(
        &self,
        object: &DesiredObject,
        delegated: &Delegated,
    ) -> (Result<ObjectMeta, String>, Vec<WriteReport>) {
        self.apply_in(&Pass::default(), object, delegated).await
    }

    async fn apply_in(
        &self,
        pass: &Pass,
        object: &DesiredObject,
        delegated: &Delegated,
    ) -> (Result<ObjectMeta, String>, Vec<WriteReport>) {
        let mut reports = Vec::new();
        let api = self.write_api_of(pass, object).await;
        let key = ObjectKey::of(object);
        let name = object.name.as_str();
        let (body, bounds) = if delegated.is_empty() {
            (None, None)
        } else {
            match object.value() {
                Ok(git) => (Some(delegated.apply_body(&git)), delegated.bounds_body(&git)),
                Err(error) => return (Err(format!("unreadable desired object: {error}")), reports),
            }
        };
        let params = &PatchParams::apply(FIELD_MANAGER).force();
        let (result, report) = match &body {
            None => {
                let body = &object.object;
                self.write_through(WriteVerb::Apply, &key, api, move |api| async move {
                    api.patch(name, params, &Patch::Apply(body)).await.map(|o| o.metadata)
                })
                .await
            }
            Some(body) => {
                self.write_through(WriteVerb::Apply, &key, api, move |api| async move {
                    api.patch(name, params, &Patch::Apply(body)).await.map(|o| o.metadata)
                })
                .await
            }
        };
        reports.extend(report);
        let (Ok(_), Some(bounds)) = (&result, &bounds) else {
            return (result, reports);
        };
        // Written as driftguard itself, also for a Guard acting as its own identity: a value
        // other than Git's from that identity would be denied at admission, and this write
        // only sets fields of the Guard's own objects to bounds its rules declare.
        let own = self
            .api(
                pass,
                &object.group,
                &object.version,
                &object.kind,
                object.namespace.as_deref(),
            )
            .await;
        let params = &PatchParams::apply(BOUNDS_MANAGER).force();
        let (clamped, report) = self
            .write_through(WriteVerb::Apply, &key, own, move |api| async move {
                api.patch(name, params, &Patch::Apply(bounds)).await.map(|o| o.metadata)
            })
            .await;
        reports.extend(report);
        let clamped = clamped.map_err(|message| format!("cannot set delegated fields to their bounds: {message}"));
        (clamped, reports)
    }

    async fn execute_in(&self, pass: &Pass, plan: &Plan<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut deadline: Option<Instant> = None;
        let mut crds: HashMap<&str, CrdState> = HashMap::new();
        for step in &plan.apply {
            let object = step.object;
            if let Some(crd) = step.requires_crd.as_deref() {
                let state = match crds.get(crd) {
                    Some(state) => *state,
                    None => {
                        let applied = !outcome
                            .apply_failed
                            .iter()
                            .any(|f| f.key.group == CRD_GROUP && f.key.kind == CRD_KIND && f.key.name == crd);
                        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.crd_wait);
                        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
                        let state = self.await_crd(crd, &gvk, applied, deadline).await;
                        if state == CrdState::NotEstablished {
                            tracing::info!(crd, wait = ?self.crd_wait, "CRD not Established in time; its custom resources wait for the next reconcile");
                        }
                        crds.insert(crd, state);
                        state
                    }
                };
                if state == CrdState::NotEstablished {
                    outcome
                        .waiting
                        .push((step.key.clone(), WaitReason::CrdNotEstablished { crd: crd.to_owned() }));
                    continue;
                }
            }
            let (result, report) = self.apply_in(pass, object, &step.delegated).await;
            outcome.writes.extend(report);
            match result {
                Ok(meta) => {
                    let clamped: Vec<Held> = step.delegated.clamped().cloned().collect();
                    if !clamped.is_empty() {
                        outcome.clamped.push((step.key.clone(), clamped));
                    }
                    outcome.applied.push(Applied {
                        key: step.key.clone(),
                        uid: meta.uid,
                    })
                }
                Err(message) => {
                    tracing::warn!(key = %step.key, %message, "apply failed");
                    outcome.apply_failed.push(Failure {
                        key: step.key.clone(),
                        message,
                    });
                }
            }
        }
        for step in &plan.prune {
            let params = DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                preconditions: step.uid.clone().map(|uid| Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let key = &step.key;
            let api = self
                .api_through(
                    &self.writer,
                    pass,
                    &key.group,
                    &step.version,
                    &key.kind,
                    key.namespace.as_deref(),
                )
                .await;
            let (params, name) = (&params, key.name.as_str());
            let (result, report) = self
                .write_through(WriteVerb::Delete, key, api, move |api| async move {
                    match api.delete(name, params).await {
                        Ok(_) => Ok(()),
                        // Gone already: what the prune wanted.
                        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                        Err(error) => Err(error),
                    }
                })
                .await;
            outcome.writes.extend(report);
            match result {
                Ok(()) => outcome.pruned.push(key.clone()),
                Err(message) => {
                    tracing::warn!(%key, %message, "prune failed; kept in the inventory for the next reconcile");
                    outcome.prune_failed.push(Failure {
                        key: key.clone(),
                        message,
                    });
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;

    fn api_error(code: u16, reason: &str, message: &str, retry_after: u32) -> AttemptError {
        let mut status = Status::failure(message, reason).with_code(code);
        if retry_after > 0 {
            status = status.with_details(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: retry_after,
            });
        }
        AttemptError::Kube(kube::Error::Api(status.boxed()))
    }

    fn reason(error: &AttemptError, verb: WriteVerb) -> Option<RetryReason> {
        transient(error, verb).map(|t| t.reason)
    }

    #[test]
    fn transient_errors_are_conflicts_throttling_server_errors_and_timeouts() {
        let apply = WriteVerb::Apply;
        assert_eq!(
            reason(&api_error(409, "Conflict", "the object has been modified", 0), apply),
            Some(RetryReason::Conflict)
        );
        assert_eq!(
            reason(&api_error(429, "TooManyRequests", "slow down", 0), apply),
            Some(RetryReason::TooManyRequests)
        );
        for code in [500, 502, 503, 504] {
            assert_eq!(
                reason(&api_error(code, "InternalError", "etcd", 0), apply),
                Some(RetryReason::ServerError),
                "{code}"
            );
        }
        assert_eq!(
            reason(&AttemptError::TimedOut(Duration::from_secs(1)), apply),
            Some(RetryReason::Timeout)
        );
        for permanent in [
            api_error(422, "Invalid", "spec.replicas: Invalid value", 0),
            api_error(403, "Forbidden", "denied by the webhook", 0),
            api_error(404, "NotFound", "namespace not found", 0),
            api_error(400, "BadRequest", "bad patch", 0),
        ] {
            assert_eq!(reason(&permanent, apply), None, "{permanent}");
        }
        // A delete whose uid precondition failed: the object was recreated, never retry.
        let precondition = api_error(
            409,
            "Conflict",
            "Precondition failed: UID in precondition: a, UID in object meta: b",
            0,
        );
        assert_eq!(reason(&precondition, WriteVerb::Delete), None);
        assert_eq!(
            reason(&api_error(409, "Conflict", "etcd conflict", 0), WriteVerb::Delete),
            Some(RetryReason::Conflict)
        );
    }

    #[test]
    fn the_servers_retry_after_seconds_are_honoured() {
        let throttled = transient(&api_error(429, "TooManyRequests", "slow down", 2), WriteVerb::Apply).unwrap();
        assert_eq!(throttled.retry_after, Some(Duration::from_secs(2)));
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, throttled.retry_after, 12345), Duration::from_secs(2));
        // Capped.
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600)), 0),
            policy.max_retry_after
        );
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let policy = RetryPolicy::default();
        for retry in 1..=8u32 {
            let full = (policy.backoff * 2u32.pow(retry - 1)).min(policy.max_backoff);
            let low = policy.delay(retry, None, 0);
            let high = policy.delay(retry, None, u64::MAX - 1);
            assert_eq!(low, full / 2, "retry {retry}");
            assert!(high >= low && high <= full, "retry {retry}: {high:?} of {full:?}");
            for seed in [1, 7, 1 << 40, u64::MAX] {
                let delay = policy.delay(retry, None, seed);
                assert!(delay >= full / 2 && delay <= full, "retry {retry}: {delay:?}");
            }
        }
        assert_eq!(policy.delay(1, None, 0), Duration::from_millis(100));
        assert_eq!(policy.delay(20, None, 0), policy.max_backoff / 2);
    }
}
