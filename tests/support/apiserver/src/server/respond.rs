//! HTTP response helpers: JSON bodies, `Status` errors, and `Warning` headers formatted the way
//! kube-apiserver formats them.
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::ApiError;
use crate::faults::Failure;

/// Errors a streaming body may end with (a dropped watch).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// A body of bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A JSON response.
pub(crate) fn json(code: u16, value: &Value) -> Response<Body> {
    json_as(code, value, "application/json")
}

/// A JSON response with a given Content-Type.
pub(crate) fn json_as(code: u16, value: &Value, content_type: &str) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

/// The `Status` response of an error.
pub(crate) fn error(err: &ApiError) -> Response<Body> {
    let mut response = json(err.code, &err.status());
    add_warnings(&mut response, &err.warnings);
    response
}

/// The response of an injected failure (with `Retry-After` when set).
pub(crate) fn failure(failure: &Failure) -> Response<Body> {
    let mut response = error(&failure.error);
    if let Some(seconds) = failure.retry_after {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `299 - "<text>"` with `"` and `\` escaped, as kube's `NewWarningHeader` writes it. Control
/// characters (which no header may carry) become spaces.
pub(crate) fn warning_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 9);
    out.push_str("299 - \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Add one `Warning` header per distinct warning, in order.
pub(crate) fn add_warnings(response: &mut Response<Body>, warnings: &[String]) {
    let mut seen: Vec<&str> = Vec::new();
    for warning in warnings {
        if seen.contains(&warning.as_str()) {
            continue;
        }
        seen.push(warning);
        if let Ok(value) = HeaderValue::from_bytes(warning_header(warning).as_bytes()) {
            response.headers_mut().append("Warning", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_quoted_like_kube() {
        assert_eq!(warning_header("plain"), r#"299 - "plain""#);
        assert_eq!(warning_header(r#"say "hi" \ bye"#), r#"299 - "say \"hi\" \\ bye""#);
        assert_eq!(warning_header("a\nb"), r#"299 - "a b""#);
    }

    #[test]
    fn a_refusal_carries_the_warnings_gathered_before_it() {
        let mut err = ApiError::new(403, "Forbidden", "admission webhook \"x\" denied the request: no");
        err.warnings = vec!["first".into(), "second".into()];
        let response = error(&err);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let headers: Vec<_> = response
            .headers()
            .get_all("Warning")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(headers, [r#"299 - "first""#, r#"299 - "second""#]);
    }
}
