//! The four patch types kube-apiserver accepts, and managedFields bookkeeping. Pure functions.
use serde_json::Value;

use crate::ApiError;

/// Which patch a `Content-Type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply; kubectl sends JSON in it).
    Apply,
}

impl PatchType {
    /// From a Content-Type header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Apply a non-apply patch to `original` (`group`/`kind` select SMP merge keys).
pub fn apply_patch(
    kind: PatchType,
    original: &Value,
    patch: &[u8],
    group: &str,
    object_kind: &str,
) -> Result<Value, ApiError> {
    let _ = (kind, original, patch, group, object_kind);
    Err(ApiError::new(415, "UnsupportedMediaType", "patch: not implemented yet"))
}

/// Server-side apply of `config` by `manager` onto `live` (None = create). Returns the new
/// object with managedFields updated; a conflict without `force` is a 409 naming the managers.
pub fn server_side_apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
) -> Result<Value, ApiError> {
    let _ = (live, config, manager, force, subresource, now);
    Err(ApiError::new(415, "UnsupportedMediaType", "apply: not implemented yet"))
}

/// Record a non-apply write (`Update` operation) by `manager` in `new`'s managedFields: the
/// fields it changed relative to `old` become its own and are removed from other managers.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, subresource: Option<&str>, now: &str) {
    let _ = (old, new, manager, subresource, now);
}
