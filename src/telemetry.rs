//! Telemetry: structured logs (tracing) and the Prometheus registry served on the metrics port.
//!
//! Label values on the admission hot path are `&'static str` so recording a request never
//! allocates; only the per-Guard gauge carries owned strings, and it changes once per reload.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::admission::Webhook;

/// Content type of [`Metrics::encode`]'s output (the OpenMetrics text format, which Prometheus
/// negotiates and scrapes natively).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Smallest admission latency bucket: the budget for an unmanaged object is 50 µs.
const DURATION_FIRST_BUCKET_SECONDS: f64 = 50e-6;
/// 50 µs * 2^15 ≈ 1.6 s, past which kube-apiserver's 3 s webhook timeout is near anyway.
const DURATION_BUCKET_COUNT: u16 = 16;

/// Labels of `driftguard_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    webhook: &'static str,
    operation: &'static str,
    decision: &'static str,
}

/// Labels of `driftguard_desired_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    guard: String,
}

/// Labels of `driftguard_drift_corrections_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CorrectionLabels {
    guard: String,
    kind: String,
}

/// Labels of `driftguard_source_fetch_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    source: String,
    result: &'static str,
}

/// Labels of `driftguard_source_fetch_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchErrorLabels {
    source: String,
    reason: &'static str,
}

/// Labels of `driftguard_source_revision_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    source: String,
    revision: String,
}

/// Labels of `driftguard_audit_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    event: &'static str,
}

/// Labels of `driftguard_certificate_reloads_total` and `driftguard_certificate_passes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Labels of `driftguard_receiver_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    result: &'static str,
}

/// Labels of `driftguard_api_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: &'static str,
    result: &'static str,
}

/// Labels of `driftguard_api_write_retries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    verb: &'static str,
    reason: &'static str,
}

/// Labels of `driftguard_api_write_retry_wait_seconds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// The enforcer's writes to the Kubernetes API: outcomes, retries and the time spent waiting
/// between attempts.
#[derive(Debug, Default)]
struct ApiWriteMetrics {
    writes: Family<WriteLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    waited: Family<VerbLabels, Counter<f64, AtomicU64>>,
}

impl ApiWriteMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = ApiWriteMetrics::default();
        registry.register(
            "api_writes",
            "Enforcer writes (apply, delete) to the Kubernetes API, by result: ok at the first attempt, retried (ok after transient errors) or failed",
            metrics.writes.clone(),
        );
        registry.register(
            "api_write_retries",
            "Retries of enforcer writes after a transient API error, by reason (conflict, too_many_requests, server_error, timeout, unreachable)",
            metrics.retries.clone(),
        );
        registry.register(
            "api_write_retry_wait_seconds",
            "Time enforcer writes waited before retrying (backoff or the server's retryAfterSeconds)",
            metrics.waited.clone(),
        );
        metrics
    }
}

/// The process-wide Prometheus registry and the metric handles driftguard records into.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admission_requests: Family<AdmissionLabels, Counter>,
    admission_duration: Histogram,
    desired_objects: Family<GuardLabels, Gauge<u64, AtomicU64>>,
    certificate_expiry: Gauge,
    certificate_reloads: Family<ReloadLabels, Counter>,
    certificate_passes: Family<ReloadLabels, Counter>,
    receiver_requests: Family<ReceiverLabels, Counter>,
    drift_corrections: Family<CorrectionLabels, Counter>,
    delegate_bound_corrections: Family<CorrectionLabels, Counter>,
    reconcile_duration: Family<GuardLabels, Histogram>,
    prunes: Family<GuardLabels, Counter>,
    fetch_duration: Family<FetchLabels, Histogram>,
    fetch_errors: Family<FetchErrorLabels, Counter>,
    revision_info: Family<RevisionLabels, Gauge<u64, AtomicU64>>,
    served_revisions: std::sync::Mutex<std::collections::HashMap<String, String>>,
    audit_dropped: Counter,
    audit_file: crate::audit::AuditFileMetrics,
    audit_events: Family<AuditLabels, Counter>,
    break_glass_active: Family<GuardLabels, Gauge<u64, AtomicU64>>,
    api_writes: ApiWriteMetrics,
    leader: LeaderMetrics,
}

impl Metrics {
    /// `driftguard_audit_dropped_total`, for the audit sink to count its drops.
    pub fn audit_dropped_counter(&self) -> Counter {
        self.audit_dropped.clone()
    }

    /// The audit file's write failures, backlog and drops, for the audit sink to report into.
    pub fn audit_file_metrics(&self) -> crate::audit::AuditFileMetrics {
        self.audit_file.clone()
    }

    /// Creates the registry with every driftguard metric family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("driftguard");
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook, operation and decision",
            admission_requests.clone(),
        );
        let admission_duration = Histogram::new(exponential_buckets(
            DURATION_FIRST_BUCKET_SECONDS,
            2.0,
            DURATION_BUCKET_COUNT,
        ));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, from request start to reply",
            admission_duration.clone(),
        );
        let desired_objects = Family::<GuardLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "desired_objects",
            "Objects in the desired state of each Guard",
            desired_objects.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry (Unix time) of the TLS serving certificate in use",
            certificate_expiry.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Changes of the TLS certificate files seen, by result (reloaded or rejected)",
            certificate_reloads.clone(),
        );
        let certificate_passes = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_passes",
            "Self-managed certificate passes of the leader, by result (unchanged; changed: the Secret written or a caBundle injected; or the failure: api, timeout, issue)",
            certificate_passes.clone(),
        );
        let receiver_requests = Family::<ReceiverLabels, Counter>::default();
        registry.register(
            "receiver_requests",
            "Push hooks answered by the receiver, by result (accepted, unauthorized, not_found, rate_limited, ...)",
            receiver_requests.clone(),
        );
        let drift_corrections = Family::<CorrectionLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Managed objects self-heal re-applied after another writer drifted them, by Guard and kind",
            drift_corrections.clone(),
        );
        let delegate_bound_corrections = Family::<CorrectionLabels, Counter>::default();
        registry.register(
            "delegate_bound_corrections",
            "Delegated fields the enforcer set to the nearest bound of their delegate rule (a delegate had written a value outside it), by Guard and kind",
            delegate_bound_corrections.clone(),
        );
        let reconcile_duration = Family::<GuardLabels, Histogram>::new_with_constructor(|| {
            // 10 ms .. ~5 min
            Histogram::new(exponential_buckets(0.01, 2.0, 15))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time of one full reconcile of a Guard (load, read, plan, apply, prune, status)",
            reconcile_duration.clone(),
        );
        let prunes = Family::<GuardLabels, Counter>::default();
        registry.register(
            "prune",
            "Objects deleted because Git no longer declares them",
            prunes.clone(),
        );
        let fetch_duration = Family::<FetchLabels, Histogram>::new_with_constructor(|| {
            // 10 ms .. ~5 min
            Histogram::new(exponential_buckets(0.01, 2.0, 15))
        });
        registry.register(
            "source_fetch_duration_seconds",
            "Time of one fetch of a GitSource, by result (ok or error)",
            fetch_duration.clone(),
        );
        let fetch_errors = Family::<FetchErrorLabels, Counter>::default();
        registry.register(
            "source_fetch_errors",
            "Failed fetches of a GitSource, by reason (the Ready condition's reason)",
            fetch_errors.clone(),
        );
        let revision_info = Family::<RevisionLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "source_revision_info",
            "The revision each GitSource serves (value 1)",
            revision_info.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit events dropped because the audit queue was full (each gap is also an audit.dropped record)",
            audit_dropped.clone(),
        );
        let audit_file = crate::audit::AuditFileMetrics::default();
        registry.register(
            "audit_file_write_failures",
            "Failed attempts to write, reopen, rotate or fsync the audit file (disk full, I/O error); its records wait in a backlog",
            audit_file.write_failures.clone(),
        );
        registry.register(
            "audit_file_backlog_records",
            "Audit records waiting in memory for the audit file after a failed write (stdout has them)",
            audit_file.backlog_records.clone(),
        );
        registry.register(
            "audit_file_dropped",
            "Audit records dropped from the audit file (not from stdout) because its backlog was full; the file marks the gap",
            audit_file.dropped.clone(),
        );
        let audit_events = Family::<AuditLabels, Counter>::default();
        registry.register("audit_events", "Audit records written, by event", audit_events.clone());
        let break_glass_active = Family::<GuardLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "break_glass_active",
            "Objects of each Guard detached from Git by an unexpired break-glass",
            break_glass_active.clone(),
        );
        let api_writes = ApiWriteMetrics::register(&mut registry);
        let leader = LeaderMetrics::register(&mut registry);
        Self {
            api_writes,
            leader,
            audit_dropped,
            audit_file,
            audit_events,
            break_glass_active,
            registry,
            admission_requests,
            admission_duration,
            desired_objects,
            certificate_expiry,
            certificate_reloads,
            certificate_passes,
            receiver_requests,
            drift_corrections,
            delegate_bound_corrections,
            reconcile_duration,
            prunes,
            fetch_duration,
            fetch_errors,
            revision_info,
            served_revisions: Default::default(),
        }
    }

    /// Records one answered admission request.
    pub fn observe_admission(
        &self,
        webhook: Webhook,
        operation: &'static str,
        decision: &'static str,
        elapsed: Duration,
    ) {
        self.admission_requests
            .get_or_create(&AdmissionLabels {
                webhook: webhook.as_str(),
                operation,
                decision,
            })
            .inc();
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    /// Sets the number of desired objects of `guard` (`namespace/name`).
    pub fn set_desired_objects(&self, guard: &str, count: u64) {
        self.desired_objects
            .get_or_create(&GuardLabels {
                guard: guard.to_owned(),
            })
            .set(count);
    }

    /// Records the expiry (Unix seconds) of the serving certificate now in use.
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// Counts one look at changed certificate files: `reloaded` or `rejected`.
    pub fn observe_certificate_reload(&self, result: &'static str) {
        self.certificate_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts one pass of the self-managed certificate leader: `unchanged`, `changed`, or the
    /// failure's label.
    pub fn observe_certificate_pass(&self, result: &'static str) {
        self.certificate_passes.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Counts one push hook answered with `result`.
    pub fn observe_receiver_request(&self, result: &'static str) {
        self.receiver_requests.get_or_create(&ReceiverLabels { result }).inc();
    }

    /// Counts one drift correction of a `kind` object of `guard`.
    pub fn count_drift_correction(&self, guard: &str, kind: &str) {
        self.drift_corrections
            .get_or_create(&CorrectionLabels {
                guard: guard.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one delegated field of a `kind` object of `guard` set to its bound.
    pub fn count_delegate_bound_correction(&self, guard: &str, kind: &str) {
        self.delegate_bound_corrections
            .get_or_create(&CorrectionLabels {
                guard: guard.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records one full reconcile of `guard` and the objects it pruned.
    pub fn observe_reconcile(&self, guard: &str, elapsed: Duration, pruned: u64) {
        let labels = GuardLabels {
            guard: guard.to_owned(),
        };
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if pruned > 0 {
            self.prunes.get_or_create(&labels).inc_by(pruned);
        }
    }

    /// Records one fetch of `source`: its duration, and the failure reason when it failed.
    pub fn observe_fetch(&self, source: &str, elapsed: Duration, failure: Option<&'static str>) {
        let result = if failure.is_some() { "error" } else { "ok" };
        self.fetch_duration
            .get_or_create(&FetchLabels {
                source: source.to_owned(),
                result,
            })
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = failure {
            self.fetch_errors
                .get_or_create(&FetchErrorLabels {
                    source: source.to_owned(),
                    reason,
                })
                .inc();
        }
    }

    /// Marks `revision` as the one `source` serves; the series of the revision it served
    /// before goes away.
    pub fn set_source_revision(&self, source: &str, revision: &str) {
        let labels = RevisionLabels {
            source: source.to_owned(),
            revision: revision.to_owned(),
        };
        self.revision_info.get_or_create(&labels).set(1);
        let mut served = self
            .served_revisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = served.insert(source.to_owned(), revision.to_owned())
            && old != revision
        {
            self.revision_info.remove(&RevisionLabels {
                source: source.to_owned(),
                revision: old,
            });
        }
    }

    /// Sets how many objects of `guard` are detached by break-glass.
    pub fn set_break_glass_active(&self, guard: &str, count: u64) {
        self.break_glass_active
            .get_or_create(&GuardLabels {
                guard: guard.to_owned(),
            })
            .set(count);
    }

    /// Records one enforcer write of `verb` (`apply`, `delete`) that ended with `result` (`ok`,
    /// `retried`, `failed`) after `retries` (their reasons) and `waited` between attempts.
    pub fn observe_api_write(
        &self,
        verb: &'static str,
        result: &'static str,
        retries: impl IntoIterator<Item = &'static str>,
        waited: Duration,
    ) {
        self.api_writes
            .writes
            .get_or_create(&WriteLabels { verb, result })
            .inc();
        for reason in retries {
            self.api_writes
                .retries
                .get_or_create(&RetryLabels { verb, reason })
                .inc();
        }
        if !waited.is_zero() {
            self.api_writes
                .waited
                .get_or_create(&VerbLabels { verb })
                .inc_by(waited.as_secs_f64());
        }
    }

    /// Counts one audit record of `event`.
    pub fn count_audit_event(&self, event: &'static str) {
        self.audit_events.get_or_create(&AuditLabels { event }).inc();
    }

    /// Renders every metric in the OpenMetrics text format ([`METRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Labels of `driftguard_leader_changes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderChangeLabels {
    change: &'static str,
}

/// Leadership of this replica: `driftguard_leader` (1 while it holds the Lease) and
/// `driftguard_leader_changes_total{change}` (`acquired`; `lost` to another replica; `expired`:
/// not renewed within the renew deadline; `released` on shutdown).
#[derive(Debug, Default)]
struct LeaderMetrics {
    leading: Gauge,
    changes: Family<LeaderChangeLabels, Counter>,
}

impl LeaderMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = LeaderMetrics::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (fetches, applies, prunes, writes status)",
            metrics.leading.clone(),
        );
        registry.register(
            "leader_changes",
            "Changes of this replica's leadership: acquired, lost (another replica holds the Lease), expired (not renewed within the renew deadline), released (shutdown)",
            metrics.changes.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Records a change of this replica's leadership (`change` as in
    /// `driftguard_leader_changes_total`) and whether it leads now.
    pub fn observe_leadership(&self, change: &'static str, leading: bool) {
        self.leader.changes.get_or_create(&LeaderChangeLabels { change }).inc();
        self.leader.leading.set(i64::from(leading));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the global tracing subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once; later calls do nothing.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, embedding) finds a subscriber installed already; that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in collected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// An audit sink that counts records by event (`driftguard_audit_events_total`) and passes
/// them on.
pub struct CountingSink {
    inner: std::sync::Arc<dyn crate::audit::AuditSink>,
    metrics: std::sync::Arc<Metrics>,
}

impl CountingSink {
    /// Count what goes to `inner` in `metrics`.
    pub fn new(inner: std::sync::Arc<dyn crate::audit::AuditSink>, metrics: std::sync::Arc<Metrics>) -> Self {
        CountingSink { inner, metrics }
    }
}

impl crate::audit::AuditSink for CountingSink {
    fn record(&self, event: crate::audit::AuditEvent) {
        self.metrics.count_audit_event(event.event.as_str());
        self.inner.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_metrics_count_failures_and_show_one_revision_per_source() {
        let metrics = Metrics::new();
        metrics.observe_fetch("default/apps", Duration::from_millis(30), None);
        metrics.observe_fetch("default/apps", Duration::from_millis(5), Some("FetchFailed"));
        metrics.set_source_revision("default/apps", "main@sha1:aaa");
        metrics.set_source_revision("default/apps", "main@sha1:bbb");
        let text = metrics.encode().unwrap();
        for needle in [
            r#"driftguard_source_fetch_duration_seconds_count{source="default/apps",result="ok"} 1"#,
            r#"driftguard_source_fetch_duration_seconds_count{source="default/apps",result="error"} 1"#,
            r#"driftguard_source_fetch_errors_total{source="default/apps",reason="FetchFailed"} 1"#,
            r#"driftguard_source_revision_info{source="default/apps",revision="main@sha1:bbb"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        assert!(!text.contains("sha1:aaa"), "the old revision's series is gone");
    }

    #[test]
    fn encodes_the_three_families_with_labels() {
        let metrics = Metrics::new();
        metrics.observe_admission(Webhook::Validate, "UPDATE", "denied", Duration::from_micros(70));
        metrics.observe_admission(Webhook::Validate, "UPDATE", "denied", Duration::from_micros(70));
        metrics.set_desired_objects("team-a/web", 42);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"driftguard_admission_requests_total{webhook="validate",operation="UPDATE",decision="denied"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"driftguard_desired_objects{guard="team-a/web"} 42"#),
            "{text}"
        );
        assert!(text.contains("driftguard_admission_duration_seconds_count 2"), "{text}");
    }

    #[test]
    fn duration_buckets_start_at_50_microseconds() {
        let metrics = Metrics::new();
        metrics.observe_admission(Webhook::Mutate, "CREATE", "allowed", Duration::from_micros(40));
        let text = metrics.encode().unwrap();
        let first = text
            .lines()
            .find(|l| l.starts_with("driftguard_admission_duration_seconds_bucket"))
            .unwrap();
        assert_eq!(first, r#"driftguard_admission_duration_seconds_bucket{le="0.00005"} 1"#);
        // The largest finite bucket covers ~1.6 s.
        assert!(text.contains(r#"le="1.6384""#), "{text}");
    }

    #[test]
    fn api_writes_count_results_retries_and_waits() {
        let metrics = Metrics::new();
        metrics.observe_api_write("apply", "ok", [], Duration::ZERO);
        metrics.observe_api_write(
            "apply",
            "retried",
            ["conflict", "conflict"],
            Duration::from_millis(1500),
        );
        metrics.observe_api_write("delete", "failed", ["server_error"], Duration::from_secs(2));
        let text = metrics.encode().unwrap();
        for needle in [
            r#"driftguard_api_writes_total{verb="apply",result="ok"} 1"#,
            r#"driftguard_api_writes_total{verb="apply",result="retried"} 1"#,
            r#"driftguard_api_writes_total{verb="delete",result="failed"} 1"#,
            r#"driftguard_api_write_retries_total{verb="apply",reason="conflict"} 2"#,
            r#"driftguard_api_write_retries_total{verb="delete",reason="server_error"} 1"#,
            r#"driftguard_api_write_retry_wait_seconds_total{verb="apply"} 1.5"#,
            r#"driftguard_api_write_retry_wait_seconds_total{verb="delete"} 2.0"#,
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
    }

    #[test]
    fn init_tracing_twice_does_not_panic() {
        init_tracing();
        init_tracing();
    }
}
