//! `POST /hooks/{namespace}/{source}`: bound, verify, rate-limit, trigger. Answers are one
//! generic word; the reason for a refusal goes to the log only.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::limit::RateLimiter;
use super::verify::{GITHUB_DELIVERY, GITHUB_EVENT, GITLAB_EVENT, HookKind, verify};
use super::{HookTargets, ReceiverLimits, TargetError};
use crate::server::body::{BodyError, read_limited};
use crate::telemetry::Metrics;

/// How long a request waits for a free slot before it is answered 503.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);
/// Longest event name logged.
const MAX_LOGGED_HEADER: usize = 64;

#[derive(Clone)]
struct HookState {
    targets: Arc<dyn HookTargets>,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    permits: Arc<Semaphore>,
    max_body_bytes: usize,
    body_timeout: Duration,
}

/// Every answer the receiver gives: its status, its one word, and its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Ping,
    Unauthorized,
    NotFound,
    TooLarge,
    BadRequest,
    RateLimited(u64),
    Busy,
    Unavailable,
}

impl Outcome {
    fn status(self) -> StatusCode {
        match self {
            Outcome::Accepted => StatusCode::ACCEPTED,
            Outcome::Ping => StatusCode::OK,
            Outcome::Unauthorized => StatusCode::UNAUTHORIZED,
            Outcome::NotFound => StatusCode::NOT_FOUND,
            Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadRequest => StatusCode::BAD_REQUEST,
            Outcome::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Outcome::Busy | Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The metric label of `driftguard_receiver_requests_total{result}`.
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ping => "ping",
            Outcome::Unauthorized => "unauthorized",
            Outcome::NotFound => "not_found",
            Outcome::TooLarge => "too_large",
            Outcome::BadRequest => "bad_request",
            Outcome::RateLimited(_) => "rate_limited",
            Outcome::Busy => "busy",
            Outcome::Unavailable => "unavailable",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted\n",
            Outcome::Ping => "ok\n",
            Outcome::Unauthorized => "unauthorized\n",
            Outcome::NotFound => "not found\n",
            Outcome::TooLarge => "payload too large\n",
            Outcome::BadRequest => "bad request\n",
            Outcome::RateLimited(_) => "too many requests\n",
            Outcome::Busy | Outcome::Unavailable => "unavailable\n",
        }
    }

    fn respond(self, metrics: &Metrics) -> Response {
        metrics.observe_receiver_request(self.label());
        let mut response = plain(self.status(), self.word());
        if let Outcome::RateLimited(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn plain(status: StatusCode, word: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        word,
    )
        .into_response()
}

/// The receiver's routes: `POST /hooks/{namespace}/{source}`; any other path is 404 and any
/// other method 405, each with a one-word body. Serve it with [`super::bind`]; tests drive it
/// in-process.
pub fn router(targets: Arc<dyn HookTargets>, limits: &ReceiverLimits, metrics: Arc<Metrics>) -> Router {
    let state = HookState {
        targets,
        metrics,
        limiter: Arc::new(RateLimiter::new(limits.burst, limits.refill_every)),
        permits: Arc::new(Semaphore::new(limits.max_in_flight.clamp(1, Semaphore::MAX_PERMITS))),
        max_body_bytes: limits.max_body_bytes,
        body_timeout: limits.body_timeout,
    };
    Router::new()
        .route("/hooks/{namespace}/{source}", post(hook))
        .fallback(|State(state): State<HookState>| async move { Outcome::NotFound.respond(&state.metrics) })
        .method_not_allowed_fallback(|| async { plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n") })
        .with_state(state)
}

async fn hook(
    State(state): State<HookState>,
    path: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let outcome = handle(&state, path, req).await;
    outcome.respond(&state.metrics)
}

async fn handle(state: &HookState, path: Result<Path<(String, String)>, PathRejection>, req: Request) -> Outcome {
    let permit = match state.permits.try_acquire() {
        Ok(permit) => Some(permit),
        Err(_) => tokio::time::timeout(IN_FLIGHT_WAIT, state.permits.acquire())
            .await
            .ok()
            .and_then(Result::ok),
    };
    let Some(_permit) = permit else {
        tracing::warn!("push receiver busy: too many requests in flight; answered 503");
        return Outcome::Busy;
    };
    let Ok(Path((namespace, name))) = path else {
        return Outcome::NotFound;
    };
    if !is_object_name(&namespace) || !is_object_name(&name) {
        tracing::debug!("push hook for a name that cannot exist; answered 404");
        return Outcome::NotFound;
    }
    let source = format!("{namespace}/{name}");
    let (parts, body) = req.into_parts();
    let declared_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_limited(body, declared_len, state.max_body_bytes, state.body_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(limit)) => {
            tracing::info!(%source, limit, "push hook body too large; answered 413");
            return Outcome::TooLarge;
        }
        Err(error @ (BodyError::Timeout(_) | BodyError::Read(_))) => {
            tracing::debug!(%source, ?error, "cannot read a push hook body; answered 400");
            return Outcome::BadRequest;
        }
    };
    let secret = match state.targets.secret(&namespace, &name).await {
        Ok(Some(secret)) => Zeroizing::new(secret),
        Ok(None) => {
            tracing::debug!(%source, "push hook for an unknown source or one without a receiver; answered 404");
            return Outcome::NotFound;
        }
        Err(TargetError::Misconfigured(reason)) => {
            tracing::warn!(%source, %reason, "push receiver is configured but unusable; answered 401");
            return Outcome::Unauthorized;
        }
        Err(TargetError::Unavailable(reason)) => {
            tracing::warn!(%source, %reason, "cannot read the push receiver's secret; answered 503");
            return Outcome::Unavailable;
        }
    };
    let kind = HookKind::detect(&parts.headers);
    if let Err(rejected) = verify(kind, &parts.headers, &body, &secret) {
        tracing::info!(%source, kind = kind.as_str(), reason = %rejected, "push hook rejected; answered 401");
        return Outcome::Unauthorized;
    }
    drop(secret);
    let event = match kind {
        HookKind::GitHub => logged_header(&parts.headers, GITHUB_EVENT),
        HookKind::GitLab => logged_header(&parts.headers, GITLAB_EVENT),
        HookKind::Generic => String::new(),
    };
    let delivery = logged_header(&parts.headers, GITHUB_DELIVERY);
    if kind == HookKind::GitHub && event == "ping" {
        tracing::info!(%source, %delivery, "GitHub ping verified");
        return Outcome::Ping;
    }
    if let Err(wait) = state.limiter.take(&source) {
        tracing::info!(%source, kind = kind.as_str(), %event, retry_after = ?wait, "push hook over the rate limit; answered 429");
        return Outcome::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64);
    }
    match state.targets.trigger(&namespace, &name).await {
        Ok(()) => {
            tracing::info!(%source, kind = kind.as_str(), %event, %delivery, "push hook verified; fetch requested");
            Outcome::Accepted
        }
        Err(error) => {
            tracing::warn!(%source, %error, "cannot request a fetch; answered 503");
            Outcome::Unavailable
        }
    }
}

/// A header value safe to log: visible ASCII (what `to_str` accepts), bounded in length.
fn logged_header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(MAX_LOGGED_HEADER).collect())
        .unwrap_or_default()
}

/// A Kubernetes namespace or object name (DNS-1123 subdomain): anything else cannot name a
/// GitSource and is not looked up.
fn is_object_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_are_looked_up() {
        for ok in ["apps", "team-a", "a", "web.v2", "0x"] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in ["", "Apps", "-a", "a-", "a_b", "a/b", "..", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
