//! Admission: turns an AdmissionReview body into a decision and an HTTP reply.
//!
//! The HTTP layer (`crate::server`) only moves bytes; everything about reviews lives here.

/// Which of driftguard's webhook endpoints a review arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Webhook {
    /// `/validate`: deny drift (deny mode), warn (audit mode).
    Validate,
    /// `/mutate`: patch Git's values back in (revert mode).
    Mutate,
}

impl Webhook {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Validate => "validate",
            Webhook::Mutate => "mutate",
        }
    }
}

/// What the HTTP layer sends back, plus the labels it records in metrics.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status: 200 for every decodable review, 400 for a bad body, 500 for internal failure.
    pub status: u16,
    /// JSON body (an AdmissionReview, or `{"error": ...}` for 4xx/5xx).
    pub body: Vec<u8>,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `unknown` when undecodable.
    pub operation: &'static str,
    /// `allowed`, `denied`, `reverted`, `audited`, `exempted`, `unmanaged`, `invalid`, `error`.
    pub decision: &'static str,
}

/// Decides admission reviews. Synchronous and I/O-free: it must answer from memory.
pub trait Admit: Send + Sync + 'static {
    /// Decide one review body received on `webhook`.
    fn admit(&self, webhook: Webhook, body: &[u8]) -> Reply;
    /// True once every Guard's desired state is loaded (drives `/readyz`).
    fn is_ready(&self) -> bool;
}

pub mod break_glass;
mod decide;
mod delegate;
pub(crate) use delegate::describe_rule;
mod exempt;
mod message;
pub mod review;

use std::sync::Arc;

use base64::Engine;

pub use decide::{AdmissionSettings, Decision, Verdict, decide};
pub use exempt::{Exemption, service_account_username};

use crate::audit::AuditSink;
use crate::desired::DesiredStore;
use review::{Response, ReviewError, Status};

/// The webhook's decision-maker: the current desired state, settings, and where audit
/// events go.
pub struct Admission {
    store: Arc<DesiredStore>,
    settings: AdmissionSettings,
    audit: Arc<dyn AuditSink>,
}

impl Admission {
    /// Decide with `store`'s index, recording to `audit`.
    pub fn new(store: Arc<DesiredStore>, settings: AdmissionSettings, audit: Arc<dyn AuditSink>) -> Self {
        Admission { store, settings, audit }
    }

    fn respond(&self, webhook: Webhook, body: &[u8]) -> Result<Reply, ReviewError> {
        let request = review::decode(body)?;
        let operation = request.operation.as_str();
        let decision = self
            .store
            .with_index(|index| decide(webhook, &request, index, &self.settings))?;
        let Decision {
            label,
            verdict,
            warnings,
            annotations,
            audit,
        } = decision;
        let (allowed, status, patch) = match verdict {
            Verdict::Allow => (true, None, None),
            Verdict::Deny(message) => (
                false,
                Some(Status {
                    code: 403,
                    reason: "Forbidden",
                    message,
                }),
                None,
            ),
            Verdict::Patch(patch) => match serde_json::to_vec(&patch) {
                Ok(bytes) => (
                    true,
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ),
                Err(error) => return Ok(internal_error(operation, &error)),
            },
        };
        let response = Response {
            uid: &request.uid,
            allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
            audit_annotations: annotations,
        };
        let body = match review::encode(response) {
            Ok(body) => body,
            Err(error) => return Ok(internal_error(operation, &error)),
        };
        // Record only what was actually answered.
        if let Some(event) = audit {
            self.audit.record(event);
        }
        Ok(Reply {
            status: 200,
            body,
            operation,
            decision: label,
        })
    }
}

impl Admit for Admission {
    fn admit(&self, webhook: Webhook, body: &[u8]) -> Reply {
        match self.respond(webhook, body) {
            Ok(reply) => reply,
            Err(error @ ReviewError::Desired { .. }) => internal_error("unknown", &error),
            Err(error) => {
                tracing::warn!(webhook = webhook.as_str(), %error, "rejected a malformed admission review");
                error_reply(400, "unknown", "invalid", &error.to_string())
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.store.is_ready()
    }
}

fn internal_error(operation: &'static str, error: &dyn std::error::Error) -> Reply {
    tracing::error!(%error, "admission failed internally");
    error_reply(
        500,
        operation,
        "error",
        &format!("driftguard failed to answer: {error}"),
    )
}

/// A JSON error body for non-review answers (4xx/5xx).
pub fn error_reply(status: u16, operation: &'static str, decision: &'static str, message: &str) -> Reply {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message, "code": status }))
        .unwrap_or_else(|_| br#"{"error":"unencodable error"}"#.to_vec());
    Reply {
        status,
        body,
        operation,
        decision,
    }
}
