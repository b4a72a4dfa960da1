//! AdmissionReview v1 on the wire.
//!
//! Requests are decoded with borrowed strings and the embedded objects kept as raw JSON, so
//! an unmanaged object is answered after one syntax pass without building a tree.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// `apiVersion` of the only review version driftguard speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of a review.
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a usable AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another apiVersion or kind.
    #[error(
        "expected apiVersion {API_VERSION} and kind {KIND}, got {api_version:?} {kind:?}; register the webhook with admissionReviewVersions: [v1]"
    )]
    WrongVersion {
        /// apiVersion received.
        api_version: String,
        /// kind received.
        kind: String,
    },
    /// No `request` field.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// Empty `request.uid`.
    #[error("the AdmissionReview request has no uid")]
    MissingUid,
    /// driftguard's stored desired object could not be read (checked when it was built, so a
    /// bug): answered 500, and the webhook's failurePolicy decides.
    #[error("cannot read the desired state of {object}: {reason}")]
    Desired {
        /// The object.
        object: String,
        /// Why.
        reason: String,
    },
    /// The operation needs an object the review lacks.
    #[error("a {operation} review must carry request.{field}")]
    MissingObject {
        /// Operation.
        operation: &'static str,
        /// `object` or `oldObject`.
        field: &'static str,
    },
}

/// Group, version and kind.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gvk<'a> {
    /// API group.
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    /// Kind.
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
}

/// Group, version and resource.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gvr<'a> {
    /// API group.
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    /// Resource (plural).
    #[serde(borrow, default)]
    pub resource: Cow<'a, str>,
}

/// The requesting identity.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo<'a> {
    /// Username.
    #[serde(borrow, default)]
    pub username: Cow<'a, str>,
    /// Uid.
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    /// Groups.
    #[serde(borrow, default)]
    pub groups: Vec<Cow<'a, str>>,
}

/// Admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
}

impl Operation {
    /// As written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// `request` of an AdmissionReview.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// Echoed in the response.
    #[serde(borrow, default)]
    pub uid: Cow<'a, str>,
    /// Kind of the object as the webhook was registered for.
    #[serde(borrow, default)]
    pub kind: Gvk<'a>,
    /// Resource as the webhook was registered for.
    #[serde(borrow, default)]
    pub resource: Gvr<'a>,
    /// `scale`, `status`, ...
    #[serde(borrow, default)]
    pub sub_resource: Option<Cow<'a, str>>,
    /// Kind the client actually sent (differs under matchPolicy Equivalent).
    #[serde(borrow, default)]
    pub request_kind: Option<Gvk<'a>>,
    /// Object name (empty on CREATE with generateName).
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// Namespace (absent for cluster-scoped).
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    /// Operation.
    pub operation: Operation,
    /// Who.
    #[serde(borrow, default)]
    pub user_info: UserInfo<'a>,
    /// New object (CREATE/UPDATE).
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    /// Old object (UPDATE/DELETE).
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    /// Nothing is persisted.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// The operation's options (CreateOptions, UpdateOptions, PatchOptions, ...).
    #[serde(borrow, default)]
    pub options: Option<RequestOptions<'a>>,
}

/// What admission reads of a request's options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestOptions<'a> {
    /// `fieldManager` (`kubectl --field-manager`); empty when the client set none.
    #[serde(borrow, default)]
    pub field_manager: Option<Cow<'a, str>>,
}

impl Request<'_> {
    /// The request's `options.fieldManager`, when set.
    pub fn field_manager(&self) -> Option<&str> {
        self.options
            .as_ref()
            .and_then(|o| o.field_manager.as_deref())
            .filter(|m| !m.is_empty())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
}

/// Decode and validate a review body.
pub fn decode(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let review: ReviewIn<'_> = serde_json::from_slice(body)?;
    let api_version = review.api_version.as_deref().unwrap_or("");
    let kind = review.kind.as_deref().unwrap_or("");
    if api_version != API_VERSION || kind != KIND {
        return Err(ReviewError::WrongVersion {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let request = review.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    Ok(request)
}

/// `status` of a denial.
#[derive(Debug, Serialize)]
pub struct Status {
    /// HTTP-like code kube-apiserver returns to the client (403).
    pub code: u16,
    /// `Forbidden`.
    pub reason: &'static str,
    /// Shown to the person at kubectl.
    pub message: String,
}

/// `response` of an AdmissionReview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response<'a> {
    /// The request's uid.
    pub uid: &'a str,
    /// Allowed or not.
    pub allowed: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when `patch` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of an RFC 6902 patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown by kubectl as `Warning: ...`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Copied into the API server's audit log.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

/// Serialize a response inside an AdmissionReview envelope.
pub fn encode(response: Response<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    })
}

/// Parses an object of the review leaving out what the drift rule never reads: top-level
/// `status` and `metadata.managedFields`. Together they are about half of a typical 20 KB
/// Deployment, and building them as a JSON tree was most of a managed decision's cost. `None`
/// for `null` or what does not parse (the review was already checked to be JSON).
pub fn object_for_drift(raw: &RawValue) -> Option<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    let value = serde::de::DeserializeSeed::deserialize(Without::TOP, &mut deserializer).ok()?;
    (!value.is_null()).then_some(value)
}

/// A JSON value without the keys `skip` names at its top level, and without `nested.1` inside
/// the object under key `nested.0`.
#[derive(Clone, Copy)]
struct Without {
    skip: &'static str,
    nested: Option<(&'static str, &'static str)>,
}

impl Without {
    const TOP: Without = Without {
        skip: "status",
        nested: Some(("metadata", "managedFields")),
    };
}

impl<'de> serde::de::DeserializeSeed<'de> for Without {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Without {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.skip {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let value = match self.nested {
                Some((parent, child)) if key == parent => map.next_value_seed(Without {
                    skip: child,
                    nested: None,
                })?,
                _ => map.next_value::<Value>()?,
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    // Anything but an object is kept whole (`null` included; the caller checks it).
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        serde::de::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
}

#[cfg(test)]
mod drift_parse_tests {
    use super::*;

    #[test]
    fn status_and_managed_fields_are_left_out_and_the_rest_is_kept() {
        let text = r#"{"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web","labels":{"a":"b"},"managedFields":[{"manager":"kubectl"}],"annotations":{"status":"x"}},
            "spec":{"replicas":3,"status":"kept","template":{"metadata":{"managedFields":"kept"}},"ratio":0.5,"big":18446744073709551615,"neg":-4},
            "status":{"replicas":3}}"#;
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let parsed = object_for_drift(&raw).unwrap();
        let mut full: Value = serde_json::from_str(text).unwrap();
        full.as_object_mut().unwrap().remove("status");
        full["metadata"].as_object_mut().unwrap().remove("managedFields");
        assert_eq!(parsed, full);
        let null = RawValue::from_string("null".to_owned()).unwrap();
        assert!(object_for_drift(&null).is_none());
    }
}
