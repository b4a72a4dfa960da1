//! Audit events (`driftguard.io/audit/v1`), one JSON object per line.
//!
//! This module owns the schema and the sinks:
//!
//! - [`ChainSink`] (and [`StdoutSink`], the same sink without a file) writes every event once to
//!   stdout and, when configured, to an append-only rotating file, as a tamper-evident hash
//!   chain: see [`chain`] for the canonical form, the hash, rotation, resume and backpressure.
//! - [`digest`] names every record's chain and appends signed digests ([`signing`] keys), kept
//!   outside the log too (anchors).
//! - [`verify`] checks such files or streams (`driftguard audit verify FILE... | -`).
//! - [`MemorySink`] (tests, `driftguard check`) numbers events but does not hash them;
//!   [`NullSink`] discards them.

pub mod chain;
pub mod cluster;
pub mod digest;
pub mod signing;
pub mod verify;

use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

pub use chain::{
    AuditConfig, AuditFileMetrics, ChainSink, ChainSinkBuilder, FsyncPolicy, GENESIS_HASH, canonical_json,
};

/// Schema identifier written into every event.
pub const SCHEMA: &str = "driftguard.io/audit/v1";

/// The largest field value (serialized JSON bytes) a record carries as is. A bigger one (a
/// blob in a ConfigMap) is recorded by size and digest: an audit line must not grow by
/// megabytes, and the digest still tells which content it was.
pub const MAX_RECORDED_VALUE: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    /// The validating webhook denied a change.
    #[serde(rename = "admission.denied")]
    AdmissionDenied,
    /// The mutating webhook patched Git's values back in.
    #[serde(rename = "admission.reverted")]
    AdmissionReverted,
    /// Drift allowed and recorded (audit mode).
    #[serde(rename = "admission.audited")]
    AdmissionAudited,
    /// A change to a managed object that leaves every declared field as Git has it.
    #[serde(rename = "admission.allowed")]
    AdmissionAllowed,
    /// A managed object was changed by an exempt identity.
    #[serde(rename = "admission.exempted")]
    AdmissionExempted,
    /// A delegate changed fields a Guard's `delegate` rule gives it, within the bounds.
    #[serde(rename = "admission.delegated")]
    AdmissionDelegated,
    /// The enforcer re-applied Git over a change another field manager made.
    #[serde(rename = "drift.corrected")]
    DriftCorrected,
    /// The enforcer stopped correcting an object because one writer keeps changing it back.
    #[serde(rename = "drift.fighting")]
    DriftFighting,
    /// A break-glass member's edit, let through while the object is detached from Git.
    #[serde(rename = "admission.break_glass")]
    AdmissionBreakGlass,
    /// A break-glass ended: its time was up, and Git was restored.
    #[serde(rename = "break_glass.ended")]
    BreakGlassEnded,
    /// The serving certificate changed (on disk or in the self-managed Secret) and was swapped in.
    #[serde(rename = "certificate.rotated")]
    CertificateRotated,
    /// The leader issued a CA or serving certificate into the self-managed Secret.
    #[serde(rename = "certificate.issued")]
    CertificateIssued,
    /// The enforcer applied an object (created it, or brought its declared fields back to Git).
    #[serde(rename = "reconcile.applied")]
    ReconcileApplied,
    /// The enforcer deleted an object Git no longer declares.
    #[serde(rename = "reconcile.pruned")]
    ReconcilePruned,
    /// A GitSource moved to a new revision.
    #[serde(rename = "source.updated")]
    SourceUpdated,
    /// A fetched revision failed signature verification and was refused.
    #[serde(rename = "source.verification_failed")]
    SourceVerificationFailed,
    /// The audit queue was full and events were dropped (admission is never blocked by the
    /// audit log); the record's `dropped` member says how many since the previous such record.
    #[serde(rename = "audit.dropped")]
    AuditDropped,
}

impl EventKind {
    /// The event's name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AdmissionDenied => "admission.denied",
            EventKind::AdmissionReverted => "admission.reverted",
            EventKind::AdmissionAudited => "admission.audited",
            EventKind::AdmissionAllowed => "admission.allowed",
            EventKind::AdmissionExempted => "admission.exempted",
            EventKind::AdmissionDelegated => "admission.delegated",
            EventKind::DriftCorrected => "drift.corrected",
            EventKind::DriftFighting => "drift.fighting",
            EventKind::AdmissionBreakGlass => "admission.break_glass",
            EventKind::BreakGlassEnded => "break_glass.ended",
            EventKind::CertificateRotated => "certificate.rotated",
            EventKind::CertificateIssued => "certificate.issued",
            EventKind::ReconcileApplied => "reconcile.applied",
            EventKind::ReconcilePruned => "reconcile.pruned",
            EventKind::SourceUpdated => "source.updated",
            EventKind::SourceVerificationFailed => "source.verification_failed",
            EventKind::AuditDropped => "audit.dropped",
        }
    }
}

/// Who made the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Actor {
    /// Username.
    pub username: String,
    /// User uid, when the authenticator sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
}

/// Which object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ObjectRef {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace, for namespaced objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Subresource (`scale`), when the request targets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

/// One field that moved away from Git. Values of sensitive fields are replaced by a marker
/// before they reach this struct.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldRecord {
    /// Human path, e.g. `spec.template.spec.containers[name=web].image`.
    pub path: String,
    /// Git's value (null when Git declares the field absent).
    pub git: Value,
    /// The attempted value (null when the request removes the field).
    pub attempted: Value,
    /// The value before the request (null on create or when absent).
    pub previous: Value,
    /// The web page of the line in Git that declares the field, at the enforced commit, when
    /// the GitSource has links (`webUrl`, or derived from its URL). Optional: records without
    /// it keep their form and hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl FieldRecord {
    /// The record of one drifting field of `object`; values of sensitive fields (Secret data)
    /// become a marker.
    pub fn of(object: &crate::desired::DesiredObject, drift: &crate::drift::FieldDrift) -> Self {
        let sensitive = object.is_sensitive(&drift.path);
        let value = |v: &Option<Value>| match v {
            Some(_) if sensitive => Value::String(crate::drift::display::HIDDEN.to_owned()),
            Some(v) => bounded(v),
            None => Value::Null,
        };
        FieldRecord {
            path: drift.path.to_string(),
            git: value(&drift.git),
            attempted: value(&drift.attempted),
            previous: value(&drift.previous),
            link: None,
        }
    }

    /// The same record with `link`.
    pub fn with_link(mut self, link: Option<String>) -> Self {
        self.link = link;
        self
    }
}

/// `value`, or its size and SHA-256 when its JSON is longer than [`MAX_RECORDED_VALUE`].
fn bounded(value: &Value) -> Value {
    let text = value.to_string();
    if text.len() <= MAX_RECORDED_VALUE {
        return value.clone();
    }
    Value::String(format!(
        "<{} bytes, sha256:{}>",
        text.len(),
        chain::sha256_hex(text.as_bytes())
    ))
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Position in this process's stream, assigned by the sink.
    pub seq: u64,
    /// RFC 3339 time, assigned when created.
    pub time: String,
    /// What happened.
    pub event: EventKind,
    /// Who asked.
    pub actor: Actor,
    /// Which object.
    pub object: ObjectRef,
    /// CREATE, UPDATE, DELETE.
    pub operation: String,
    /// `namespace/name` of the Guard.
    pub guard: String,
    /// Git revision enforced.
    pub revision: String,
    /// Drifting fields.
    pub fields: Vec<FieldRecord>,
    /// The text shown to the requester.
    pub message: String,
    /// The AdmissionReview uid.
    pub request_uid: String,
    /// Whether the request was a dry run (nothing persisted).
    pub dry_run: bool,
    /// For enforcer events: the `managedFields` manager whose write drifted the object (the
    /// API server records no user for past writes, only the manager).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// Hash of the previous record in the chain (64 zeros for the first), assigned by a
    /// chained sink; empty (and not written) otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prev_hash: String,
    /// SHA-256 (hex) of this record's canonical form without `hash`, assigned by a chained
    /// sink; empty (and not written) otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditEvent {
    /// An event of `kind` with every other field empty, stamped with the current time.
    pub fn new(kind: EventKind) -> Self {
        AuditEvent {
            schema: SCHEMA,
            seq: 0,
            time: now_rfc3339(),
            event: kind,
            actor: Actor::default(),
            object: ObjectRef::default(),
            operation: String::new(),
            guard: String::new(),
            revision: String::new(),
            fields: Vec::new(),
            message: String::new(),
            request_uid: String::new(),
            dry_run: false,
            field_manager: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

/// Current time in RFC 3339 (UTC, with fractional seconds).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Where audit events go. Implementations must not block the request path for long.
pub trait AuditSink: Send + Sync {
    /// Record one event; the sink assigns `seq`.
    fn record(&self, event: AuditEvent);
}

/// The chained sink writing to stdout only (no file): `seq`, `prev_hash` and `hash` are assigned
/// by a dedicated writer thread; the chain starts afresh (at seq 1) in each process. A full queue
/// drops events and says so in an `audit.dropped` record (see [`ChainSink`]).
pub struct StdoutSink(ChainSink);

impl StdoutSink {
    /// Start the writer thread.
    pub fn start() -> std::io::Result<Self> {
        ChainSink::builder(AuditConfig::default()).start().map(StdoutSink)
    }
}

impl AuditSink for StdoutSink {
    fn record(&self, event: AuditEvent) {
        self.0.record(event);
    }
}

/// Discards events: for contexts that record nowhere (a one-off CLI run, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl AuditSink for NullSink {
    fn record(&self, _event: AuditEvent) {}
}

/// Keeps events in memory (tests, `driftguard check`).
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        match self.events.lock() {
            Ok(events) => events.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl AuditSink for MemorySink {
    fn record(&self, mut event: AuditEvent) {
        let mut events = match self.events.lock() {
            Ok(events) => events,
            Err(poisoned) => poisoned.into_inner(),
        };
        event.seq = events.len() as u64 + 1;
        events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn huge_values_are_recorded_by_size_and_digest() {
        let huge = json!("x".repeat(MAX_RECORDED_VALUE));
        let recorded = bounded(&huge);
        let text = recorded.as_str().unwrap();
        assert!(
            text.starts_with(&format!("<{} bytes, sha256:", MAX_RECORDED_VALUE + 2)),
            "{text}"
        );
        assert_eq!(
            text.len(),
            format!("<{} bytes, sha256:>", MAX_RECORDED_VALUE + 2).len() + 64
        );
        let small = json!({"image": "web:1.2"});
        assert_eq!(bounded(&small), small, "small values stay");
    }
}
