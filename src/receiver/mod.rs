//! The push receiver: Git hosts call `POST /hooks/<namespace>/<source>` after a push, and a
//! delivery signed with the GitSource's shared secret makes driftguard fetch at once instead
//! of at the source's next interval.
//!
//! - Opt-in per GitSource: `spec.receiver.secretRef.name` names a Secret in the source's
//!   namespace whose key `token` holds the shared secret (one trailing newline is ignored, so
//!   `--from-file` works). Standalone mode reads `<server.hooksSecretsDir>/<name>/token`, the
//!   layout of a mounted Secret.
//! - Verification ([`verify`]): GitHub `X-Hub-Signature-256`, GitLab `X-Gitlab-Token`, or the
//!   generic `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; constant-time.
//! - Answers carry one generic word and nothing else: `202 accepted` (fetch requested),
//!   `200 ok` (a GitHub `ping`), `401 unauthorized` (missing, malformed or wrong signature, or
//!   a receiver whose Secret is unusable), `404 not found` (no such source, no receiver, any
//!   other path), `405`, `413`, `429` (with `Retry-After`), `503` (busy or the API is down).
//!   Why a request was refused is logged (without secrets), never told to the caller.
//! - Limits ([`ReceiverLimits`]): body size and read time, requests in flight, connections,
//!   header read time, and a token bucket per source charged by each *verified* delivery
//!   (unsigned junk cannot use up a source's budget; it only costs one HMAC).
//! - Its own plain-HTTP listener ([`bind`], `server.hooksListen`), separate from the admission
//!   port: the webhook port must only ever be reachable by kube-apiserver, the receiver by the
//!   Git host (put an Ingress with TLS in front of it).
//!
//! Where secrets come from and what a trigger does is behind [`HookTargets`]: [`KubeTargets`]
//! in cluster mode (the GitSource's Secret; a trigger stamps the annotation
//! [`REQUESTED_AT_ANNOTATION`], which the leader's GitSource controller sees as a change and
//! reconciles, i.e. fetches, at once, so any replica may receive hooks), [`FileTargets`]
//! standalone (files; a trigger wakes the refresher).

mod cluster;
mod files;
mod limit;
mod listen;
mod routes;
pub mod verify;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

pub use cluster::KubeTargets;
pub use files::{FileSource, FileTargets};
pub use listen::{BoundReceiver, bind};
pub use routes::router;
pub use verify::{HookKind, Rejected, sign, verify};

/// Annotation a trigger sets on the GitSource: the RFC 3339 time of the request.
pub const REQUESTED_AT_ANNOTATION: &str = "driftguard.io/requested-at";
/// Key of the receiver Secret holding the shared secret.
pub const SECRET_KEY: &str = "token";
/// Default receiver body limit: GitHub caps payloads at 25 MB but push payloads are a few KB
/// to a few hundred KB; the body is only hashed, never parsed.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// What a [`HookTargets`] call returns.
pub type TargetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TargetError>> + Send + 'a>>;

/// Where the router finds a source's shared secret and how it asks for a fetch; one
/// implementation per mode, and test doubles.
pub trait HookTargets: Send + Sync {
    /// The shared secret of GitSource `namespace/name`; `None` when there is no such source or
    /// it configures no receiver (both answered 404).
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, Option<Vec<u8>>>;

    /// Ask for an immediate fetch of GitSource `namespace/name` (already verified).
    fn trigger<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, ()>;
}

/// Why a [`HookTargets`] call failed. The message is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The receiver is configured but unusable (its Secret or key is missing or empty):
    /// nothing can be verified, so callers get 401 and operators a warning.
    #[error("{0}")]
    Misconfigured(String),
    /// The API or a file could not be read right now: 503, the sender may retry.
    #[error("{0}")]
    Unavailable(String),
}

/// The receiver's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// Largest body accepted (413 above).
    pub max_body_bytes: usize,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
    /// Verified deliveries per source at once before 429.
    pub burst: u32,
    /// One more verified delivery per source per this period (zero: no rate limit).
    pub refill_every: Duration,
    /// Requests handled at once across all sources; more are answered 503 at once.
    pub max_in_flight: usize,
    /// Open connections at most; more are closed on accept.
    pub max_connections: usize,
    /// How long a client may take to send the request head.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ReceiverLimits {
    /// 1 MiB bodies within 10 s; a burst of 5 deliveries per source, then one per 10 s;
    /// 16 requests in flight; 256 connections; 10 s request heads; 10 s grace.
    fn default() -> Self {
        ReceiverLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: Duration::from_secs(10),
            burst: 5,
            refill_every: Duration::from_secs(10),
            max_in_flight: 16,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The listen address is unavailable.
    #[error("cannot listen on {addr} for push hooks: {source}; is another process using the port?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The shared secret as stored: trailing line breaks (from `echo` or `--from-file`) are not
/// part of it.
pub(crate) fn shared_secret(mut stored: Vec<u8>) -> Vec<u8> {
    while stored.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        stored.pop();
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_line_breaks_are_not_part_of_the_secret() {
        assert_eq!(shared_secret(b"s3cret\n".to_vec()), b"s3cret");
        assert_eq!(shared_secret(b"s3cret\r\n".to_vec()), b"s3cret");
        assert_eq!(shared_secret(b" s3cret ".to_vec()), b" s3cret ");
        assert_eq!(shared_secret(b"\n".to_vec()), b"");
    }
}
