//! Reading request bodies with a size limit and a deadline.
//!
//! A body over the limit is answered at once, but the rest of it is still read and discarded
//! in the background for a bounded time ("lingering close", as nginx does): closing a socket
//! with unread data makes the kernel send a reset that can destroy the 413 before the client
//! reads it. The drain is bounded in bytes and time so it cannot be abused.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

/// How long a rejected body is drained at most.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a rejected body is drained at most, as a multiple of the limit.
const LINGER_LIMIT_FACTOR: usize = 4;
/// Buffer reserved up front from Content-Length at most: a peer that declares a large body
/// and sends nothing must not make us hold that much memory.
const PREALLOCATE_MAX: usize = 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Larger than the limit (bytes).
    TooLarge(usize),
    /// Not complete before the deadline.
    Timeout(Duration),
    /// The connection failed mid-body.
    Read(axum::Error),
}

impl BodyError {
    /// HTTP status to answer with.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Message for the JSON error body.
    pub(super) fn message(&self) -> String {
        match self {
            BodyError::TooLarge(limit) => format!(
                "request body is larger than the limit of {limit} bytes; an AdmissionReview this large is not expected (raise the server's max body size if it is legitimate)"
            ),
            BodyError::Timeout(after) => {
                format!("request body was not received within {after:?}")
            }
            BodyError::Read(e) => format!("cannot read the request body: {e}"),
        }
    }
}

/// Reads `body` completely if it is at most `limit` bytes and arrives within `timeout`.
/// `declared_len` is the Content-Length, if any: it sizes the buffer and rejects early.
pub(crate) async fn read_limited(
    mut body: Body,
    declared_len: Option<u64>,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    let declared = declared_len.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > limit) {
        drain_in_background(body, limit);
        return Err(BodyError::TooLarge(limit));
    }
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(PREALLOCATE_MAX));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout(timeout)),
            Ok(None) => return Ok(buf),
            Ok(Some(frame)) => frame.map_err(BodyError::Read)?,
        };
        // Trailers carry nothing an AdmissionReview needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len().saturating_add(data.len()) > limit {
            drain_in_background(body, limit);
            return Err(BodyError::TooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
}

/// Reads and discards the rest of `body`, bounded in bytes and time; then drops it (which
/// closes the connection if the body was not finished).
fn drain_in_background(mut body: Body, limit: usize) {
    let mut budget = limit.saturating_mul(LINGER_LIMIT_FACTOR);
    tokio::spawn(async move {
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                let len = frame.data_ref().map_or(0, |d| d.len());
                match budget.checked_sub(len) {
                    Some(left) => budget = left,
                    None => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_body_within_the_limit() {
        let body = Body::from(vec![7u8; 100]);
        let got = read_limited(body, Some(100), 100, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, vec![7u8; 100]);
    }

    #[tokio::test]
    async fn rejects_a_body_over_the_limit_with_or_without_a_length() {
        for declared in [Some(101), None] {
            let body = Body::from(vec![7u8; 101]);
            let err = read_limited(body, declared, 100, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(err, BodyError::TooLarge(100)), "{err:?}");
            assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert!(err.message().contains("100 bytes"));
        }
    }
}
