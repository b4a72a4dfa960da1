//! AdmissionReview v1 as kube-apiserver sends it (`CreateV1AdmissionReview`) and reads the
//! answer (`VerifyAdmissionResponse`).
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Attributes, Gvk, Gvr};

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

fn gvk(kind: &Gvk) -> Value {
    json!({ "group": kind.group, "version": kind.version, "kind": kind.kind })
}

fn gvr(resource: &Gvr) -> Value {
    json!({ "group": resource.group, "version": resource.version, "resource": resource.resource })
}

/// The `request` fields common to the wire review and the CEL `request` variable, with Go's
/// `omitempty` applied (empty subResource, name, namespace, uid and groups are left out).
fn request_fields(attributes: &Attributes) -> Map<String, Value> {
    let mut request = Map::new();
    // Kind and resource as the webhook registered for: the same as requested, since
    // matchPolicy Equivalent never substitutes another version here (see the module docs).
    request.insert("kind".into(), gvk(&attributes.kind));
    request.insert("resource".into(), gvr(&attributes.resource));
    request.insert("requestKind".into(), gvk(&attributes.kind));
    request.insert("requestResource".into(), gvr(&attributes.resource));
    let sub_resource = attributes.sub_resource.as_deref().unwrap_or_default();
    let optional = [
        ("subResource", sub_resource),
        ("requestSubResource", sub_resource),
        ("name", attributes.name.as_str()),
        ("namespace", attributes.namespace.as_deref().unwrap_or_default()),
    ];
    for (field, value) in optional {
        if !value.is_empty() {
            request.insert(field.into(), Value::String(value.to_owned()));
        }
    }
    request.insert(
        "operation".into(),
        Value::String(attributes.operation.as_str().to_owned()),
    );
    let mut user = Map::new();
    user.insert("username".into(), Value::String(attributes.user.username.clone()));
    if !attributes.user.uid.is_empty() {
        user.insert("uid".into(), Value::String(attributes.user.uid.clone()));
    }
    if !attributes.user.groups.is_empty() {
        user.insert("groups".into(), json!(attributes.user.groups));
    }
    request.insert("userInfo".into(), Value::Object(user));
    request.insert("dryRun".into(), Value::Bool(attributes.dry_run));
    request.insert("options".into(), attributes.options.clone().unwrap_or(Value::Null));
    request
}

/// The full AdmissionReview sent to a webhook. Absent objects and options are `null`, as Go
/// encodes an empty `RawExtension`.
pub(crate) fn review(attributes: &Attributes, uid: &str) -> Value {
    let mut request = request_fields(attributes);
    request.insert("uid".into(), Value::String(uid.to_owned()));
    request.insert("object".into(), attributes.object.clone().unwrap_or(Value::Null));
    request.insert("oldObject".into(), attributes.old_object.clone().unwrap_or(Value::Null));
    json!({ "kind": KIND, "apiVersion": API_VERSION, "request": request })
}

/// The `request` variable of matchConditions (`CreateAdmissionRequest`: no uid, object or
/// oldObject — those are the separate `object`/`oldObject` variables).
pub(crate) fn cel_request(attributes: &Attributes) -> Value {
    Value::Object(request_fields(attributes))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: Option<String>,
    kind: Option<String>,
    response: Option<ResponseIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseIn {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    allowed: bool,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    patch_type: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    audit_annotations: BTreeMap<String, String>,
}

/// A webhook's verified answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub allowed: bool,
    /// `response.status` (a metav1.Status) when set.
    pub status: Option<Value>,
    /// Decoded `response.patch` (mutating only; empty when absent).
    pub patch: Vec<u8>,
    pub patch_type: Option<String>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

/// Why an answer is unusable: kube words the two cases differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AnswerError {
    /// The body does not decode (`failed to call webhook: ...`).
    Undecodable(String),
    /// It decodes but breaks the contract (`received invalid webhook response: ...`).
    Invalid(String),
}

/// Decode and verify a 2xx body against the request `uid`.
pub(crate) fn verify(body: &[u8], uid: &str, mutating: bool) -> Result<Answer, AnswerError> {
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| AnswerError::Undecodable(e.to_string()))?;
    let (Some(api_version), Some(kind)) = (review.api_version.as_deref(), review.kind.as_deref()) else {
        let shown = String::from_utf8_lossy(body);
        return Err(AnswerError::Undecodable(format!(
            "Object 'Kind' is missing in '{shown}'"
        )));
    };
    let response = review
        .response
        .ok_or_else(|| AnswerError::Invalid("webhook response was absent".to_owned()))?;
    if response.uid != uid {
        return Err(AnswerError::Invalid(format!(
            "expected response.uid={uid:?}, got {:?}",
            response.uid
        )));
    }
    if api_version != API_VERSION || kind != KIND {
        return Err(AnswerError::Invalid(format!(
            "expected webhook response of {API_VERSION}, Kind={KIND}, got {api_version}, Kind={kind}"
        )));
    }
    let patch = match &response.patch {
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| AnswerError::Undecodable(format!("illegal base64 data in response.patch: {e}")))?,
        None => Vec::new(),
    };
    if mutating {
        if !patch.is_empty() && response.patch_type.is_none() {
            return Err(AnswerError::Invalid(
                "webhook returned response.patch but not response.patchType".to_owned(),
            ));
        }
        if patch.is_empty() && response.patch_type.is_some() {
            return Err(AnswerError::Invalid(
                "webhook returned response.patchType but not response.patch".to_owned(),
            ));
        }
        if response.patch_type.as_deref() == Some("") {
            return Err(AnswerError::Invalid(
                "webhook returned invalid response.patchType of \"\"".to_owned(),
            ));
        }
    } else {
        if !patch.is_empty() {
            return Err(AnswerError::Invalid(
                "validating webhook may not return response.patch".to_owned(),
            ));
        }
        if response.patch_type.is_some() {
            return Err(AnswerError::Invalid(
                "validating webhook may not return response.patchType".to_owned(),
            ));
        }
    }
    Ok(Answer {
        allowed: response.allowed,
        status: response.status.filter(|s| !s.is_null()),
        patch,
        patch_type: response.patch_type,
        warnings: response.warnings,
        audit_annotations: response.audit_annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn verification_follows_verify_admission_response() {
        let ok = json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "u", "allowed": true}});
        assert!(verify(&body(ok), "u", false).unwrap().allowed);
        let other_uid = json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "x", "allowed": true}});
        assert_eq!(
            verify(&body(other_uid), "u", false).unwrap_err(),
            AnswerError::Invalid("expected response.uid=\"u\", got \"x\"".into())
        );
        let absent = json!({"apiVersion": API_VERSION, "kind": KIND});
        assert_eq!(
            verify(&body(absent), "u", true).unwrap_err(),
            AnswerError::Invalid("webhook response was absent".into())
        );
        assert!(matches!(
            verify(b"not json", "u", true),
            Err(AnswerError::Undecodable(_))
        ));
        assert!(matches!(verify(b"{}", "u", true), Err(AnswerError::Undecodable(_))));
        let patched = json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "u", "allowed": true, "patch": "W10=", "patchType": "JSONPatch"}});
        assert_eq!(verify(&body(patched.clone()), "u", true).unwrap().patch, b"[]");
        assert_eq!(
            verify(&body(patched), "u", false).unwrap_err(),
            AnswerError::Invalid("validating webhook may not return response.patch".into())
        );
        let untyped = json!({"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": "u", "allowed": true, "patch": "W10="}});
        assert!(matches!(
            verify(&body(untyped), "u", true),
            Err(AnswerError::Invalid(_))
        ));
        let v1beta1 =
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": KIND, "response": {"uid": "u", "allowed": true}});
        assert!(matches!(
            verify(&body(v1beta1), "u", false),
            Err(AnswerError::Invalid(_))
        ));
    }
}
