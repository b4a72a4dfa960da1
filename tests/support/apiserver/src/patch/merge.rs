//! JSON merge patch (RFC 7386) as evanphx/json-patch's `MergePatch`, which kube-apiserver uses:
//! `null` deletes a key, objects merge recursively, anything else (lists included) replaces,
//! and nulls inside a newly added value are pruned.
use serde_json::{Map, Value};

use super::PatchError;

/// Apply the merge patch `body` to `original`.
pub(crate) fn apply(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    // evanphx answers ErrBadJSONPatch for a body that is not JSON; kube turns it into a 400.
    let patch: Value =
        serde_json::from_slice(body).map_err(|_| PatchError::BadRequest("Invalid JSON Patch".to_owned()))?;
    match (original, patch) {
        (Value::Object(doc), Value::Object(patch)) => {
            let mut doc = doc.clone();
            merge_docs(&mut doc, patch);
            Ok(Value::Object(doc))
        }
        // evanphx returns a non-object patch as the result; the typed decode then rejects it.
        (_, patch) => Ok(patch),
    }
}

fn merge_docs(doc: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            doc.remove(&key);
            continue;
        }
        match doc.get_mut(&key) {
            Some(current) if !current.is_null() => {
                let previous = std::mem::take(current);
                *current = merge_value(previous, value);
            }
            _ => {
                let mut value = value;
                prune_nulls(&mut value);
                doc.insert(key, value);
            }
        }
    }
}

fn merge_value(current: Value, patch: Value) -> Value {
    match (current, patch) {
        (Value::Object(mut doc), Value::Object(patch)) => {
            merge_docs(&mut doc, patch);
            Value::Object(doc)
        }
        (Value::Object(_), patch) => patch,
        (_, mut patch) => {
            prune_nulls(&mut patch);
            patch
        }
    }
}

fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc7386_semantics() {
        let doc = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        let out = apply(
            &doc,
            br#"{"a": {"b": null, "c": [3], "e": {"f": null, "g": 1}}, "d": null}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"c": [3], "e": {"g": 1}}}));
        assert_eq!(
            apply(&doc, b"{").unwrap_err(),
            PatchError::BadRequest("Invalid JSON Patch".into())
        );
        assert_eq!(apply(&doc, b"[1]").unwrap(), json!([1]));
    }
}
