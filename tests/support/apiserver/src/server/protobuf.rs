//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for
//! the kinds kubectl's typed `create` subcommands send that way: `kubectl create configmap`,
//! `create secret`, `create namespace` and `create serviceaccount` post protobuf, and client-go
//! has no fallback to JSON for it. Responses are always JSON (clients accept it).
//!
//! The envelope is `k8s\0` followed by a `runtime.Unknown` message (typeMeta = 1, raw = 2);
//! `raw` is the object's message, decoded here from a table of field numbers taken from
//! k8s.io/api's `generated.proto`.
//!
//! # Simplifications
//! Only ConfigMap, Secret, Namespace and ServiceAccount bodies, and only the fields a client
//! sets (server-set metadata such as timestamps and managedFields is skipped); other protobuf
//! bodies answer 415.
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::ApiError;

/// The protobuf media type.
pub(super) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    /// `bytes`, shown in JSON as base64.
    Base64,
    Bool,
    Message(&'static [Field]),
    StrList,
    MessageList(&'static [Field]),
    StrMap,
    BytesMap,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
}

const fn field(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind }
}

const OWNER_REFERENCE: &[Field] = &[
    field(1, "kind", Kind::Str),
    field(3, "name", Kind::Str),
    field(4, "uid", Kind::Str),
    field(5, "apiVersion", Kind::Str),
    field(6, "controller", Kind::Bool),
    field(7, "blockOwnerDeletion", Kind::Bool),
];
const OBJECT_META: &[Field] = &[
    field(1, "name", Kind::Str),
    field(2, "generateName", Kind::Str),
    field(3, "namespace", Kind::Str),
    field(6, "resourceVersion", Kind::Str),
    field(11, "labels", Kind::StrMap),
    field(12, "annotations", Kind::StrMap),
    field(13, "ownerReferences", Kind::MessageList(OWNER_REFERENCE)),
    field(14, "finalizers", Kind::StrList),
];
const CONFIG_MAP: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "data", Kind::StrMap),
    field(3, "binaryData", Kind::BytesMap),
    field(4, "immutable", Kind::Bool),
];
const SECRET: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "data", Kind::BytesMap),
    field(3, "type", Kind::Str),
    field(4, "stringData", Kind::StrMap),
    field(5, "immutable", Kind::Bool),
];
const NAMESPACE_SPEC: &[Field] = &[field(1, "finalizers", Kind::StrList)];
const NAMESPACE: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(NAMESPACE_SPEC)),
];
const OBJECT_REFERENCE: &[Field] = &[
    field(1, "kind", Kind::Str),
    field(2, "namespace", Kind::Str),
    field(3, "name", Kind::Str),
    field(4, "uid", Kind::Str),
    field(5, "apiVersion", Kind::Str),
    field(6, "resourceVersion", Kind::Str),
    field(7, "fieldPath", Kind::Str),
];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[field(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "secrets", Kind::MessageList(OBJECT_REFERENCE)),
    field(3, "imagePullSecrets", Kind::MessageList(LOCAL_OBJECT_REFERENCE)),
    field(4, "automountServiceAccountToken", Kind::Bool),
];
const TYPE_META: &[Field] = &[field(1, "apiVersion", Kind::Str), field(2, "kind", Kind::Str)];
const UNKNOWN: &[Field] = &[
    field(1, "typeMeta", Kind::Message(TYPE_META)),
    field(2, "raw", Kind::Base64),
];

/// The decodable kinds by (apiVersion, kind).
const KINDS: &[(&str, &str, &[Field])] = &[
    ("v1", "ConfigMap", CONFIG_MAP),
    ("v1", "Secret", SECRET),
    ("v1", "Namespace", NAMESPACE),
    ("v1", "ServiceAccount", SERVICE_ACCOUNT),
];

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(taken)
    }

    /// The next (field number, value), None at the end; Err on malformed input.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, ()> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint().ok_or(())?),
            1 => {
                self.take(8).ok_or(())?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                Wire::Bytes(self.take(len).ok_or(())?)
            }
            5 => {
                self.take(4).ok_or(())?;
                Wire::Fixed
            }
            _ => return Err(()),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A map entry message (key = 1, value = 2).
fn entry(bytes: &[u8], base64_value: bool) -> Result<(String, Value), ()> {
    let mut reader = Reader { bytes };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while let Some((number, wire)) = reader.field()? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Wire::Bytes(b)) if base64_value => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (2, Wire::Bytes(b)) => value = text(b),
            _ => {}
        }
    }
    Ok((key, value))
}

fn message(bytes: &[u8], fields: &[Field]) -> Result<Map<String, Value>, ()> {
    let mut out = Map::new();
    let mut reader = Reader { bytes };
    while let Some((number, wire)) = reader.field()? {
        let Some(field) = fields.iter().find(|f| f.number == number) else {
            continue;
        };
        let name = field.name.to_owned();
        match (field.kind, wire) {
            (Kind::Str, Wire::Bytes(b)) => {
                out.insert(name, text(b));
            }
            (Kind::Base64, Wire::Bytes(b)) => {
                out.insert(name, json!(base64::engine::general_purpose::STANDARD.encode(b)));
            }
            (Kind::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Message(inner), Wire::Bytes(b)) => {
                out.insert(name, Value::Object(message(b, inner)?));
            }
            (Kind::StrList, Wire::Bytes(b)) => push(&mut out, name, text(b)),
            (Kind::MessageList(inner), Wire::Bytes(b)) => push(&mut out, name, Value::Object(message(b, inner)?)),
            (kind @ (Kind::StrMap | Kind::BytesMap), Wire::Bytes(b)) => {
                let (key, value) = entry(b, matches!(kind, Kind::BytesMap))?;
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let Some(map) = map.as_object_mut() {
                    map.insert(key, value);
                }
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, name: String, value: Value) {
    let list = out.entry(name).or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(value);
    }
}

fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError::new(415, "UnsupportedMediaType", message)
}

/// The JSON object a protobuf request body encodes.
pub(super) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let malformed = || ApiError::new(400, "BadRequest", "the protobuf request body is malformed");
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::new(400, "BadRequest", "protobuf body without the k8s envelope"))?;
    let unknown = message(envelope, UNKNOWN).map_err(|()| malformed())?;
    let api_version = unknown
        .get("typeMeta")
        .and_then(|t| t.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = unknown
        .get("typeMeta")
        .and_then(|t| t.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let fields = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, fields)| *fields)
        .ok_or_else(|| {
            unsupported(format!(
                "this test server decodes protobuf bodies only for ConfigMap, Secret, Namespace and ServiceAccount, not {api_version} {kind}; send JSON"
            ))
        })?;
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut object = message(&raw, fields).map_err(|()| malformed())?;
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, key.as_bytes(), &mut e);
        bytes_field(2, value, &mut e);
        e
    }

    #[test]
    fn decodes_a_configmap_like_kubectl_sends_it() {
        let mut meta = Vec::new();
        bytes_field(1, b"cfg", &mut meta);
        bytes_field(11, &entry("app", b"web"), &mut meta);
        // creationTimestamp (Time, field 8) is skipped.
        bytes_field(8, &[8, 1], &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry("a", b"1"), &mut cm);
        bytes_field(3, &entry("bin", &[0, 1]), &mut cm);
        varint(4 << 3, &mut cm);
        varint(1, &mut cm);
        let mut type_meta = Vec::new();
        bytes_field(1, b"v1", &mut type_meta);
        bytes_field(2, b"ConfigMap", &mut type_meta);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut body);
        bytes_field(2, &cm, &mut body);
        bytes_field(4, b"", &mut body);
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"app": "web"}},
                   "data": {"a": "1"}, "binaryData": {"bin": "AAE="}, "immutable": true})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused() {
        let mut type_meta = Vec::new();
        bytes_field(1, b"apps/v1", &mut type_meta);
        bytes_field(2, b"Deployment", &mut type_meta);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut body);
        assert_eq!(decode(&body).unwrap_err().code, 415);
        assert_eq!(decode(b"k8s\0\xff").unwrap_err().code, 400);
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
    }
}
