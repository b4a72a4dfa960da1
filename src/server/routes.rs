//! HTTP routes: the two webhook endpoints, probes, and the metrics endpoint.
//!
//! The handlers only move bytes: the decision is [`Admit`]'s. Every error the server itself
//! produces is JSON (`{"error": "..."}`) so kube-apiserver logs show a readable reason.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::body::{BodyError, read_limited};
use super::shutdown::Shutdown;
use super::{ServerOptions, VerifiedClient};
use crate::admission::{Admit, Webhook};
use crate::telemetry::{METRICS_CONTENT_TYPE, Metrics};

/// kube-apiserver gives a webhook at most 30 s; a body still arriving after that is useless.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of the API server's `?timeout=` a request may use: the rest is left for the answer
/// to travel back, so a late answer is never cut off mid-way and the failurePolicy applies
/// to a clear error instead.
const DEADLINE_SHARE: f64 = 0.8;

/// How long this request may take: [`DEADLINE_SHARE`] of the `timeout` kube-apiserver sends
/// with every webhook call (`?timeout=3s`, the configuration's timeoutSeconds), else
/// [`BODY_READ_TIMEOUT`].
fn request_deadline(query: Option<&str>) -> Duration {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("timeout="))
        .find_map(|value| crate::api::GoDuration::parse(value).ok())
        .filter(|timeout| !timeout.0.is_zero())
        .map_or(BODY_READ_TIMEOUT, |timeout| {
            timeout.0.mul_f64(DEADLINE_SHARE).min(BODY_READ_TIMEOUT)
        })
}
/// What the server answers on, for error messages.
const ENDPOINTS: &str = "POST /validate, POST /mutate, GET /healthz, GET /readyz";

#[derive(Clone)]
struct AppState {
    admit: Arc<dyn Admit>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    in_flight_wait: Duration,
    max_body_bytes: usize,
    /// Drives `/readyz` to 503 once shutdown starts.
    shutdown: Shutdown,
    /// Only callers with a verified client certificate may send reviews.
    require_client_cert: bool,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A JSON `{"error": message}` response.
fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

/// The webhook port's routes: `POST /validate`, `POST /mutate`, `GET /healthz`, `GET /readyz`.
/// Served over TLS by [`super::BoundServer`]; tests can drive it in-process.
pub fn router(admit: Arc<dyn Admit>, metrics: Arc<Metrics>, opts: &ServerOptions) -> Router {
    router_with(admit, metrics, opts, Shutdown::never())
}

/// [`router`] whose `/readyz` also answers 503 once `shutdown` starts draining.
pub(super) fn router_with(
    admit: Arc<dyn Admit>,
    metrics: Arc<Metrics>,
    opts: &ServerOptions,
    shutdown: Shutdown,
) -> Router {
    // `bind` rejects out-of-range values; clamping keeps `router` alone from panicking.
    let max_in_flight = opts.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let state = AppState {
        admit,
        metrics,
        permits: Arc::new(Semaphore::new(max_in_flight)),
        max_in_flight,
        in_flight_wait: opts.in_flight_wait,
        max_body_bytes: opts.max_body_bytes,
        shutdown,
        require_client_cert: opts.client_ca_file.is_some(),
    };
    Router::new()
        .route(
            "/validate",
            post(|State(s): State<AppState>, req: Request| review(s, Webhook::Validate, req)),
        )
        .route(
            "/mutate",
            post(|State(s): State<AppState>, req: Request| review(s, Webhook::Mutate, req)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.shutdown.clone(),
            close_when_draining,
        ))
        .with_state(state)
}

/// From the start of the drain, HTTP/1 answers carry `Connection: close`: a client then opens
/// its next connection through the Service (to a replica that stays) instead of reusing one
/// that the close would cut under a request in flight. HTTP/2 needs nothing here: the close
/// sends GOAWAY, which tells the client which streams were served.
async fn close_when_draining(State(shutdown): State<Shutdown>, req: Request, next: Next) -> Response {
    let http1 = req.version() < Version::HTTP_2;
    let mut response = next.run(req).await;
    if http1 && shutdown.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The metrics port's routes: `GET /metrics` in the Prometheus (OpenMetrics) text format.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(metrics)
}

async fn review(state: AppState, webhook: Webhook, req: Request) -> Response {
    let started = Instant::now();
    let reject = |decision: &'static str, status: StatusCode, message: String| {
        state
            .metrics
            .observe_admission(webhook, "unknown", decision, started.elapsed());
        json_error(status, message)
    };
    if state.require_client_cert && req.extensions().get::<VerifiedClient>().is_none() {
        return reject(
            "unauthenticated",
            StatusCode::UNAUTHORIZED,
            "driftguard answers admission reviews only from callers with a client certificate issued by its client CA (server.tls.clientCAFile); configure kube-apiserver's AdmissionConfiguration to present one".to_owned(),
        );
    }
    let Some(_permit) = acquire(&state).await else {
        return reject(
            "overloaded",
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "driftguard is already answering {} admission requests; try again",
                state.max_in_flight
            ),
        );
    };
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The permit wait counts against the deadline too.
    let deadline = request_deadline(req.uri().query()).saturating_sub(started.elapsed());
    let body = match read_limited(req.into_body(), declared_len, state.max_body_bytes, deadline).await {
        Ok(body) => body,
        Err(error) => {
            let decision = match error {
                BodyError::TooLarge(_) => "too_large",
                BodyError::Timeout(_) | BodyError::Read(_) => "invalid",
            };
            return reject(decision, error.status(), error.message());
        }
    };
    // Synchronous on purpose: deciding is CPU-only and sub-millisecond; a blocking-pool hop
    // would cost more than the work.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.admit.admit(webhook, &body)));
    let reply = match decided {
        Ok(reply) => reply,
        // A bug must not drop the connection: a 500 lets the failurePolicy decide.
        Err(_) => {
            tracing::error!(webhook = webhook.as_str(), "admission panicked; answered 500");
            crate::admission::error_reply(
                500,
                "unknown",
                "error",
                "driftguard failed to answer (internal error); see its logs",
            )
        }
    };
    state
        .metrics
        .observe_admission(webhook, reply.operation, reply.decision, started.elapsed());
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        reply.body,
    )
        .into_response()
}

/// A permit to run one review, waiting at most `in_flight_wait`: past that, answering 503
/// fast lets kube-apiserver apply the failurePolicy instead of queueing without bound.
async fn acquire(state: &AppState) -> Option<SemaphorePermit<'_>> {
    if let Ok(permit) = state.permits.try_acquire() {
        return Some(permit);
    }
    tokio::time::timeout(state.in_flight_wait, state.permits.acquire())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Ready while not shutting down and once the desired state is loaded. Draining comes first:
/// a replica that is going away must leave the endpoints even when it could still decide.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_draining() {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down (still answering reviews until the drain delay is over)".to_owned(),
        )
    } else if state.admit.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: desired state not loaded yet".to_owned(),
        )
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE))],
            text,
        )
            .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {method} {}; this server answers {ENDPOINTS}, /metrics on the metrics port",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}; this server answers {ENDPOINTS}",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Reply;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt as _;

    struct Fixed(AtomicBool);

    impl Admit for Fixed {
        fn admit(&self, webhook: Webhook, body: &[u8]) -> Reply {
            Reply {
                status: 200,
                body: format!(r#"{{"webhook":"{}","len":{}}}"#, webhook.as_str(), body.len()).into_bytes(),
                operation: "UPDATE",
                decision: "allowed",
            }
        }
        fn is_ready(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn opts() -> ServerOptions {
        let mut opts = ServerOptions::new("unused.crt".into(), "unused.key".into());
        opts.max_body_bytes = 1024;
        opts
    }

    async fn call(router: Router, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_reviews_to_the_right_webhook() {
        let r = router(
            Arc::new(Fixed(AtomicBool::new(true))),
            Arc::new(Metrics::new()),
            &opts(),
        );
        let (status, ctype, body) = call(r.clone(), "POST", "/mutate", b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "application/json");
        assert_eq!(body, r#"{"webhook":"mutate","len":2}"#);
        let (_, _, body) = call(r, "POST", "/validate", b"{}".to_vec()).await;
        assert_eq!(body, r#"{"webhook":"validate","len":2}"#);
    }

    struct Panics;

    impl Admit for Panics {
        fn admit(&self, _webhook: Webhook, _body: &[u8]) -> Reply {
            panic!("a bug in a decision");
        }
        fn is_ready(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_panicking_decision_is_a_json_500_and_the_router_keeps_serving() {
        let metrics = Arc::new(Metrics::new());
        let r = router(Arc::new(Panics), metrics.clone(), &opts());
        for _ in 0..2 {
            let (status, ctype, body) = call(r.clone(), "POST", "/validate", b"{}".to_vec()).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(ctype, "application/json");
            assert!(body.contains("internal error"), "{body}");
        }
        assert!(metrics.encode().unwrap().contains(r#"decision="error"} 2"#));
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_answer_json() {
        let r = router(
            Arc::new(Fixed(AtomicBool::new(true))),
            Arc::new(Metrics::new()),
            &opts(),
        );
        let (status, ctype, body) = call(r.clone(), "GET", "/nope", vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ctype, "application/json");
        assert!(body.contains("/nope"), "{body}");
        let (status, ctype, body) = call(r, "GET", "/validate", vec![]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(ctype, "application/json");
        assert!(body.contains("GET"), "{body}");
    }

    #[tokio::test]
    async fn too_large_body_is_413_json() {
        let metrics = Arc::new(Metrics::new());
        let r = router(Arc::new(Fixed(AtomicBool::new(true))), metrics.clone(), &opts());
        let (status, ctype, body) = call(r, "POST", "/validate", vec![b' '; 1025]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ctype, "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("1024 bytes"), "{body}");
        assert!(metrics.encode().unwrap().contains(r#"decision="too_large"} 1"#));
    }

    #[test]
    fn the_deadline_follows_the_api_servers_timeout() {
        assert_eq!(request_deadline(Some("timeout=3s")), Duration::from_millis(2400));
        assert_eq!(request_deadline(Some("x=1&timeout=10s")), Duration::from_secs(8));
        assert_eq!(request_deadline(Some("timeout=5m")), BODY_READ_TIMEOUT);
        assert_eq!(request_deadline(Some("timeout=soon")), BODY_READ_TIMEOUT);
        assert_eq!(request_deadline(Some("timeout=0s")), BODY_READ_TIMEOUT);
        assert_eq!(request_deadline(None), BODY_READ_TIMEOUT);
    }

    #[tokio::test]
    async fn no_permit_within_the_wait_is_503_json() {
        let state = AppState {
            admit: Arc::new(Fixed(AtomicBool::new(true))),
            metrics: Arc::new(Metrics::new()),
            permits: Arc::new(Semaphore::new(1)),
            max_in_flight: 1,
            in_flight_wait: Duration::from_millis(10),
            max_body_bytes: 1024,
            shutdown: Shutdown::never(),
            require_client_cert: false,
        };
        let held = state.permits.clone().try_acquire_owned().unwrap();
        let req = Request::builder()
            .method("POST")
            .uri("/validate")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let resp = review(state.clone(), Webhook::Validate, req).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"error\""));
        drop(held);
        let req = Request::builder()
            .method("POST")
            .uri("/validate")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        assert_eq!(review(state, Webhook::Validate, req).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_follows_admit() {
        let admit = Arc::new(Fixed(AtomicBool::new(false)));
        let r = router(admit.clone(), Arc::new(Metrics::new()), &opts());
        let (status, ctype, body) = call(r.clone(), "GET", "/readyz", vec![]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ctype, "application/json");
        assert!(body.contains("desired state not loaded yet"), "{body}");
        admit.0.store(true, Ordering::SeqCst);
        assert_eq!(call(r.clone(), "GET", "/readyz", vec![]).await.0, StatusCode::OK);
        assert_eq!(call(r, "GET", "/healthz", vec![]).await.2, "ok");
    }
}
