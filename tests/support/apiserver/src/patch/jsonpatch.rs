//! JSON patch (RFC 6902) with the [`json_patch`] crate, answering like kube-apiserver: a body
//! that is not a list of operations is a 400; a failing operation is a 422 "the server rejected
//! our request due to an error in our request" whose cause is evanphx/json-patch's message
//! (e.g. `testing value /spec/replicas failed: test failed`).
use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use super::{PatchError, go_json_kind};

/// kube-apiserver's `maxJSONPatchOperations`.
const MAX_OPERATIONS: usize = 10_000;

/// Apply the JSON patch `body` to `original`.
pub(crate) fn apply(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops = match serde_json::from_slice::<Value>(body).map_err(|e| PatchError::BadRequest(e.to_string()))? {
        Value::Array(ops) => ops,
        // Go decodes `null` into an empty patch.
        Value::Null => Vec::new(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                go_json_kind(&other)
            )));
        }
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut doc = original.clone();
    // One operation at a time, so a failure can be described from the document it met.
    for raw in ops {
        let kind = raw.get("op").and_then(Value::as_str).unwrap_or("unknown").to_owned();
        let op: PatchOperation = serde_json::from_value(raw.clone()).map_err(|e| {
            PatchError::Rejected(match kind.as_str() {
                "add" | "remove" | "replace" | "move" | "copy" | "test" => {
                    format!("{kind} operation failed to decode: {e}")
                }
                _ => format!("Unexpected kind: {kind}"),
            })
        })?;
        if let Err(err) = json_patch::patch(&mut doc, std::slice::from_ref(&op)) {
            if test_of_missing_key_with_null(&doc, &raw, &err.kind) {
                continue;
            }
            return Err(PatchError::Rejected(describe(&doc, &raw, &kind, &err)));
        }
    }
    Ok(doc)
}

/// evanphx treats a missing key as null in a `test`, so `{"op":"test","value":null}` passes.
fn test_of_missing_key_with_null(doc: &Value, raw: &Value, kind: &PatchErrorKind) -> bool {
    let path = raw.get("path").and_then(Value::as_str).unwrap_or("");
    raw.get("op").and_then(Value::as_str) == Some("test")
        && matches!(kind, PatchErrorKind::InvalidPointer)
        && raw.get("value").is_some_and(Value::is_null)
        && parent(doc, path).is_some_and(Value::is_object)
}

/// The container a JSON pointer's last token indexes into, if it exists.
fn parent<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let (parent, _) = path.rsplit_once('/')?;
    doc.pointer(parent)
}

/// The last token of a JSON pointer, unescaped.
fn last_token(path: &str) -> String {
    path.rsplit_once('/')
        .map_or("", |(_, token)| token)
        .replace("~1", "/")
        .replace("~0", "~")
}

/// evanphx/json-patch v4's message for a failed operation.
fn describe(doc: &Value, raw: &Value, kind: &str, err: &json_patch::PatchError) -> String {
    let path = raw.get("path").and_then(Value::as_str).unwrap_or("");
    let from = raw.get("from").and_then(Value::as_str).unwrap_or("");
    let container = parent(doc, path);
    let invalid_index = || {
        format!(
            "Unable to access invalid index: {}: invalid index referenced",
            last_token(path)
        )
    };
    match (kind, &err.kind) {
        ("test", PatchErrorKind::TestFailed) => format!("testing value {path} failed: test failed"),
        ("test", _) => match container {
            None => format!("test operation does not apply: is missing path: {path}: missing value"),
            Some(Value::Array(_)) => format!("error in test for path: '{path}': {}", invalid_index()),
            Some(_) => format!("testing value {path} failed: test failed"),
        },
        ("add", _) => match container {
            Some(Value::Array(_)) => format!("error in add for path: '{path}': {}", invalid_index()),
            _ => format!("add operation does not apply: doc is missing path: \"{path}\": missing value"),
        },
        ("remove", _) => match container {
            None => format!("remove operation does not apply: doc is missing path: \"{path}\": missing value"),
            Some(Value::Array(_)) => format!("error in remove for path: '{path}': {}", invalid_index()),
            Some(_) => format!(
                "error in remove for path: '{path}': Unable to remove nonexistent key: {}: missing value",
                last_token(path)
            ),
        },
        ("replace", _) => match container {
            None => format!("replace operation does not apply: doc is missing path: {path}: missing value"),
            Some(_) => format!("replace operation does not apply: doc is missing key: {path}: missing value"),
        },
        ("move" | "copy", PatchErrorKind::InvalidFromPointer) => {
            format!("{kind} operation does not apply: doc is missing from path: {from}: missing value")
        }
        ("move" | "copy", PatchErrorKind::InvalidPointer) => {
            format!("{kind} operation does not apply: doc is missing destination path: {path}: missing value")
        }
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rejected(doc: &Value, patch: &str) -> String {
        match apply(doc, patch.as_bytes()) {
            Err(PatchError::Rejected(cause)) => cause,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn evanphx_messages() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1]}});
        assert_eq!(
            rejected(&doc, r#"[{"op":"test","path":"/metadata/labels/a","value":"2"}]"#),
            "testing value /metadata/labels/a failed: test failed"
        );
        assert_eq!(
            rejected(&doc, r#"[{"op":"remove","path":"/metadata/labels/b"}]"#),
            "error in remove for path: '/metadata/labels/b': Unable to remove nonexistent key: b: missing value"
        );
        assert_eq!(
            rejected(&doc, r#"[{"op":"replace","path":"/status/x","value":1}]"#),
            "replace operation does not apply: doc is missing path: /status/x: missing value"
        );
        assert_eq!(
            rejected(&doc, r#"[{"op":"add","path":"/status/x","value":1}]"#),
            "add operation does not apply: doc is missing path: \"/status/x\": missing value"
        );
        assert_eq!(
            rejected(&doc, r#"[{"op":"frob","path":"/a"}]"#),
            "Unexpected kind: frob"
        );
        assert!(apply(&doc, br#"[{"op":"test","path":"/metadata/labels/b","value":null}]"#).is_ok());
        assert!(
            matches!(apply(&doc, br#"{"op":"add"}"#), Err(PatchError::BadRequest(m)) if m.contains("cannot unmarshal object"))
        );
    }

    #[test]
    fn operations_apply_in_order() {
        let doc = json!({"spec": {"replicas": 1}});
        let out = apply(
            &doc,
            br#"[{"op":"test","path":"/spec/replicas","value":1},{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/spec/paused","value":true}]"#,
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 3, "paused": true}}));
    }
}
