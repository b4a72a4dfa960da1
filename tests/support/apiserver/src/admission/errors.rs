//! The API errors admission produces, in the shapes k8s.io/apimachinery builds them
//! (`NewInternalError`, `NewForbidden`, `NewNotFound`, `NewBadRequest`) and the webhook
//! rejection of k8s.io/apiserver's `webhookerrors.ToStatusErr` (as of Kubernetes 1.33).
use serde_json::{Value, json};

use super::Gvr;
use crate::ApiError;

/// Go's `%q` for the names we quote (webhook, object and service names).
pub(crate) fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

/// `apierrors.NewInternalError(err)`: 500 `Internal error occurred: <err>`.
pub(crate) fn internal_error(cause: impl std::fmt::Display) -> ApiError {
    let cause = cause.to_string();
    let mut error = ApiError::new(500, "InternalError", format!("Internal error occurred: {cause}"));
    error.details = Some(json!({ "causes": [{ "message": cause }] }));
    error
}

/// `apierrors.NewBadRequest(reason)`.
pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

/// `GroupResource.String()`: `deployments.apps`, or `configmaps` for the core group.
fn group_resource(resource: &Gvr) -> String {
    if resource.group.is_empty() {
        resource.resource.clone()
    } else {
        format!("{}.{}", resource.resource, resource.group)
    }
}

/// `apierrors.NewForbidden(resource, name, err)`.
pub(crate) fn forbidden(resource: &Gvr, name: &str, cause: impl std::fmt::Display) -> ApiError {
    let qualified = group_resource(resource);
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {cause}"),
        (false, true) => format!("{qualified} is forbidden: {cause}"),
        (false, false) => format!("{qualified} {} is forbidden: {cause}", quote(name)),
    };
    let mut error = ApiError::new(403, "Forbidden", message);
    error.details = Some(json!({ "name": name, "group": resource.group, "kind": resource.resource }));
    error
}

/// `apierrors.NewNotFound(namespaces, name)`: the namespace of a request does not exist.
pub(crate) fn namespace_not_found(name: &str) -> ApiError {
    let mut error = ApiError::new(404, "NotFound", format!("namespaces {} not found", quote(name)));
    error.details = Some(json!({ "name": name, "kind": "namespaces" }));
    error
}

/// A webhook's `allowed: false` answer (`webhookerrors.ToStatusErr`): the webhook's status with
/// the message prefixed, a code below 400 raised to 400, and the reason left as the webhook
/// set it (possibly empty, as kube leaves it).
pub(crate) fn denied(webhook: &str, status: Option<&Value>) -> ApiError {
    let field = |name: &str| {
        status
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let denied_by = format!("admission webhook {} denied the request", quote(webhook));
    let (message, reason) = (field("message"), field("reason"));
    let message = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    let mut error = ApiError::new(code, &reason, message);
    error.details = status.and_then(|s| s.get("details")).filter(|d| !d.is_null()).cloned();
    error
}

/// `webhookerrors.NewDryRunUnsupportedErr`.
pub(crate) fn dry_run_unsupported(webhook: &str) -> ApiError {
    bad_request(format!("admission webhook {} does not support dry run", quote(webhook)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments() -> Gvr {
        Gvr {
            group: "apps".into(),
            version: "v1".into(),
            resource: "deployments".into(),
        }
    }

    #[test]
    fn denial_shapes_follow_to_status_err() {
        let e = denied(
            "v.example.com",
            Some(&json!({"code": 403, "reason": "Forbidden", "message": "no"})),
        );
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(e.message, "admission webhook \"v.example.com\" denied the request: no");
        let e = denied("w", Some(&json!({"code": 422, "reason": "Invalid"})));
        assert_eq!(
            (e.code, e.message.as_str()),
            (422, "admission webhook \"w\" denied the request: Invalid")
        );
        let e = denied("w", None);
        assert_eq!((e.code, e.reason.as_str()), (400, ""));
        assert_eq!(
            e.message,
            "admission webhook \"w\" denied the request without explanation"
        );
        assert_eq!(denied("w", Some(&json!({"code": 200}))).code, 400);
    }

    #[test]
    fn forbidden_and_internal_shapes() {
        let e = forbidden(&deployments(), "web", "boom");
        assert_eq!(e.message, "deployments.apps \"web\" is forbidden: boom");
        let core = Gvr {
            group: String::new(),
            version: "v1".into(),
            resource: "configmaps".into(),
        };
        assert_eq!(forbidden(&core, "", "x").message, "configmaps is forbidden: x");
        let e = internal_error("failed calling webhook \"w\": nope");
        assert_eq!(
            (e.code, e.reason.as_str(), e.message.as_str()),
            (
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"w\": nope"
            )
        );
        assert_eq!(namespace_not_found("x").message, "namespaces \"x\" not found");
    }
}
