//! The four patch types kube-apiserver accepts, and managedFields bookkeeping. Pure functions:
//! no I/O, no clock (the caller passes `now`), no store.
//!
//! - JSON patch (RFC 6902, [`json_patch`] crate; error messages are those of the
//!   evanphx/json-patch library kube-apiserver uses), in `jsonpatch.rs`.
//! - JSON merge patch (RFC 7386, as evanphx `MergePatch`), in `merge.rs`.
//! - Strategic merge patch, a port of the apply half of apimachinery's
//!   `pkg/util/strategicpatch` (`$patch`, `$retainKeys`, `$setElementOrder/<list>`,
//!   `$deleteFromPrimitiveList/<list>`, merge keys, element order), in `strategic.rs`; the merge
//!   keys of the built-in kinds are the table in `schema.rs`. Custom resources (kinds not in the
//!   table) get kube's 415.
//! - Server-side apply and the `managedFields` of every write, following structured-merge-diff
//!   and kube-apiserver's field manager, in `apply.rs`, with field sets (`fieldsV1`) in
//!   `fields.rs` and managedFields entries in `managed.rs`.
//!
//! # How the server uses this module
//! - PATCH with json/merge/strategic: `apply_patch`, then (after defaulting) `record_update`
//!   with the request's `fieldManager` (kube's default: the user agent's command name).
//! - PATCH with apply-patch: `server_side_apply` only (it writes managedFields itself; do not
//!   also call `record_update`).
//! - POST/PUT: `record_update(old, new, ...)` (`old = None` on create).
//!
//! # managedFields (`record_update` and `server_side_apply`)
//! - Entries: `{manager, operation: Apply|Update, apiVersion, time, fieldsType: FieldsV1,
//!   fieldsV1, subresource?}`, one Apply entry per (manager, subresource) and one Update entry
//!   per (manager, apiVersion, subresource), sorted like kube (Apply first, then by time,
//!   manager, apiVersion, subresource). Entries whose set became empty are dropped; an object
//!   with no entries has no `managedFields` key.
//! - Never recorded (kube's `stripMetaManager`): `apiVersion`, `kind`, `metadata` itself and
//!   `metadata.{name, namespace, uid, resourceVersion, generation, creationTimestamp,
//!   selfLink, clusterName, managedFields}`.
//! - Reset fields: a write to the main resource never records `status` (nor takes it from an
//!   applied configuration); a write to the `status` subresource records only `status` (and
//!   applies only the configuration's `status`).
//! - An update records the fields it added or changed (structured-merge-diff `Compare`
//!   against the old object, or against the kind's zero value on create, so a map that did not
//!   exist before is written with `"."`) into the writer's Update entry (time set to `now`
//!   only when it changed something) and removes them, and the fields it removed, from every
//!   other manager. As in kube, an existing object without managedFields is not tracked by
//!   updates; a request body carrying `managedFields: []` resets them; a body carrying other
//!   valid managedFields replaces them (subresource writes keep the old ones).
//! - Apply: the configuration's field set becomes the manager's Apply entry; fields it applied
//!   before but no longer does are removed from the object unless another manager (apply or
//!   update) still owns them; a change to a field another manager owns is a 409 naming the
//!   managers and fields unless `force`, which moves the fields to the applier; an equal value
//!   is shared. Applying to an object without managedFields first records its fields under the
//!   Update manager `before-first-apply`, as kube does. A no-op apply leaves `time` unchanged.
//!
//! # Simplifications (deliberate differences from kube-apiserver)
//! - No OpenAPI schemas: the table in `schema.rs` names the merge keys, list types and atomic
//!   structs of the built-in kinds; every other field is treated as structured-merge-diff
//!   treats untyped values (maps granular, lists atomic). Custom resources are untyped except
//!   their `metadata` (their CRD's `x-kubernetes-list-type` is not read), and strategic merge
//!   patch is accepted only for the kinds in that table.
//! - No typed decode after a patch: unknown fields are not pruned or rejected
//!   (`fieldValidation` is the caller's business), except that leftover strategic-merge
//!   directive keys in newly added subtrees are removed, and JSON `null` in an applied
//!   configuration removes the field rather than being stored.
//! - Apply: no conversion between API versions (an applier's or updater's apiVersion is only
//!   recorded); the configuration's kind and group must match the live object's. No
//!   `kubectl.kubernetes.io/last-applied-configuration` interplay (kube's lastApplied
//!   managers), no cap of 10 Update managers (`ancient-changes`), duplicate list elements are
//!   compared by their first occurrence, and all kinds are treated as having a status
//!   subresource.
//! - Error messages of JSON patch and strategic merge patch follow evanphx/json-patch v4 and
//!   apimachinery; Go's `%v` rendering inside them is approximated.
use serde_json::{Value, json};

use crate::ApiError;

mod apply;
mod fields;
mod jsonpatch;
mod managed;
mod merge;
mod schema;
mod strategic;

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

/// The message kube-apiserver answers (415) to a strategic merge patch of a custom resource:
/// the custom-resource handler only lists these patch types.
pub const CUSTOM_RESOURCE_PATCH_TYPES_MESSAGE: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Whether strategic merge patch is accepted for `group`/`kind` (the built-in kinds of the
/// merge-key table; custom resources are refused with a 415 like kube-apiserver does).
pub fn supports_strategic_merge(group: &str, kind: &str) -> bool {
    schema::builtin(group, kind).is_some()
}

/// A patch failure, mapped to the status kube-apiserver answers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PatchError {
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 422 from kube's `NewGenericServerResponse`: a fixed message, the cause in `details`.
    #[error("the server rejected our request due to an error in our request: {0}")]
    Rejected(String),
    /// 422 Invalid: the patched document is not an object.
    #[error("patch: Invalid value: {value}: {detail}")]
    Invalid {
        /// The patched document.
        value: String,
        /// Why it does not decode.
        detail: String,
    },
    /// 413 RequestEntityTooLarge.
    #[error("Request entity too large: {0}")]
    TooLarge(String),
    /// 415 UnsupportedMediaType.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 409 apply conflict.
    #[error("{message}")]
    Conflict {
        /// `Apply failed with N conflict(s): ...`.
        message: String,
        /// `details.causes` (`FieldManagerConflict`).
        causes: Vec<Value>,
    },
    /// 500 with no reason: kube's status for an error that is not an API status
    /// (e.g. a strategic merge patch element missing its merge key).
    #[error("{0}")]
    Internal(String),
}

impl From<PatchError> for ApiError {
    fn from(err: PatchError) -> ApiError {
        let message = err.to_string();
        match err {
            PatchError::BadRequest(_) => ApiError::new(400, "BadRequest", message),
            PatchError::Rejected(cause) => ApiError {
                details: Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})),
                ..ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                )
            },
            PatchError::Invalid { value, detail } => ApiError {
                details: Some(json!({"causes": [{
                    "reason": "FieldValueInvalid",
                    "message": format!("Invalid value: {}: {detail}", Value::from(value.as_str())),
                    "field": "patch",
                }]})),
                ..ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        " \"\" is invalid: patch: Invalid value: {}: {detail}",
                        Value::from(value.as_str())
                    ),
                )
            },
            PatchError::TooLarge(_) => ApiError::new(413, "RequestEntityTooLarge", message),
            PatchError::UnsupportedMediaType(_) => ApiError::new(415, "UnsupportedMediaType", message),
            PatchError::Conflict { causes, .. } => ApiError {
                details: Some(json!({ "causes": causes })),
                ..ApiError::new(409, "Conflict", message)
            },
            PatchError::Internal(_) => ApiError::new(500, "", message),
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
    let patched = match kind {
        PatchType::Json => jsonpatch::apply(original, patch)?,
        PatchType::Merge => merge::apply(original, patch)?,
        PatchType::StrategicMerge => match schema::builtin(group, object_kind) {
            Some(builtin) => strategic::apply(original, patch, builtin.root)?,
            None => {
                return Err(PatchError::UnsupportedMediaType(CUSTOM_RESOURCE_PATCH_TYPES_MESSAGE.to_owned()).into());
            }
        },
        PatchType::Apply => {
            return Err(PatchError::Internal("apply patches are handled by server_side_apply".to_owned()).into());
        }
    };
    if !patched.is_object() {
        let detail = format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_json_kind(&patched)
        );
        return Err(PatchError::Invalid {
            value: patched.to_string(),
            detail,
        }
        .into());
    }
    Ok(patched)
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
    Ok(apply::server_side_apply(
        live,
        config,
        manager,
        force,
        subresource,
        now,
    )?)
}

/// Record a non-apply write (`Update` operation) by `manager` in `new`'s managedFields: the
/// fields it changed relative to `old` become its own and are removed from other managers.
/// When the objects cannot be compared (a keyed list element without its key), managedFields
/// are removed, as kube's `UpdateNoErrors` does.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, subresource: Option<&str>, now: &str) {
    if apply::record_update(old, new, manager, subresource, now).is_err()
        && let Some(metadata) = new.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.remove("managedFields");
    }
}

/// How Go's encoding/json names a JSON value's kind in "cannot unmarshal X" errors.
fn go_json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
