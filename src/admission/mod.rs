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
