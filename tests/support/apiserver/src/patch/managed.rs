//! `metadata.managedFields` entries: decoding, kube's manager identity, sorting and encoding.
use serde_json::{Map, Value};

use super::fields::FieldSet;

/// `operation` of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Field manager name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// apiVersion the fields were written with.
    pub api_version: String,
    /// Last time the manager changed the object (RFC 3339), if ever recorded.
    pub time: Option<String>,
    /// Subresource ("" for the main resource).
    pub subresource: String,
    /// The owned fields.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this entry is the manager identity (kube's `BuildManagerIdentifier`: appliers
    /// are one per manager and subresource, updaters also per apiVersion).
    pub(crate) fn is(&self, manager: &str, operation: Operation, api_version: &str, subresource: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// How kube names the manager in a conflict (`printManager`): `"kubectl-edit" using
    /// apps/v1` for an updater, `"helm"` for an applier.
    pub(crate) fn describe(&self) -> String {
        let mut out = Value::from(self.manager.as_str()).to_string();
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {}", Value::from(self.subresource.as_str())));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// Sort key of kube's `sortEncodedManagedFields`.
    fn sort_key(&self) -> (Operation, &str, &str, &str, &str) {
        (
            self.operation,
            self.time.as_deref().unwrap_or(""),
            &self.manager,
            &self.api_version,
            &self.subresource,
        )
    }
}

/// Decode `metadata.managedFields` of `object` (`DecodeManagedFields`).
pub(crate) fn decode(object: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = object.pointer("/metadata/managedFields").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("managedFields must be a list")?;
    let mut entries: Vec<Entry> = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let text = |key: &str| raw.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let operation = match text("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err("operation must be `Apply` or `Update`".to_owned()),
        };
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".to_owned());
        }
        match text("fieldsType").as_str() {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => return Err(format!("invalid fieldsType {other:?} in managed fields entry {i}")),
        }
        let fields = match raw.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(v) => FieldSet::from_fields_v1(v)?,
        };
        let entry = Entry {
            manager: text("manager"),
            operation,
            time: raw.get("time").and_then(Value::as_str).map(str::to_owned),
            subresource: text("subresource"),
            api_version,
            fields,
        };
        // A later entry with the same identity replaces an earlier one, as in kube's map.
        entries.retain(|e| !e.is(&entry.manager, entry.operation, &entry.api_version, &entry.subresource));
        entries.push(entry);
    }
    Ok(entries)
}

/// Whether a request body's managedFields ask for a reset (`[]` or `[{}]`).
pub(crate) fn is_reset(object: &Value) -> bool {
    match object.pointer("/metadata/managedFields") {
        Some(Value::Array(list)) => match list.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        _ => false,
    }
}

/// Write `entries` (sorted, empty ones dropped) as `metadata.managedFields` of `object`, or
/// remove the key when none is left.
pub(crate) fn write(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let Some(metadata) = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Map::new())))
    else {
        return;
    };
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
        return;
    }
    let encoded = entries
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".to_owned(), Value::from(e.manager.as_str()));
            m.insert("operation".to_owned(), Value::from(e.operation.as_str()));
            m.insert("apiVersion".to_owned(), Value::from(e.api_version.as_str()));
            if let Some(time) = &e.time {
                m.insert("time".to_owned(), Value::from(time.as_str()));
            }
            m.insert("fieldsType".to_owned(), Value::from("FieldsV1"));
            m.insert("fieldsV1".to_owned(), e.fields.to_fields_v1());
            if !e.subresource.is_empty() {
                m.insert("subresource".to_owned(), Value::from(e.subresource.as_str()));
            }
            Value::Object(m)
        })
        .collect();
    metadata.insert("managedFields".to_owned(), Value::Array(encoded));
}

/// A copy of `object` without `metadata.managedFields`.
pub(crate) fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decode_write_round_trip_sorted() {
        let mut obj = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1", "time": "2024-01-02T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "time": "2024-01-03T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}}},
            {"manager": "x", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {}},
        ]}});
        let entries = decode(&obj).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].describe(), "\"kubectl-edit\" using apps/v1");
        assert_eq!(entries[1].describe(), "\"kubectl\"");
        write(&mut obj, entries);
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["kubectl", "kubectl-edit"]);
        assert!(decode(&json!({"metadata": {"managedFields": [{"operation": "Patch"}]}})).is_err());
        assert!(is_reset(&json!({"metadata": {"managedFields": [{}]}})));
        assert!(!is_reset(&json!({"metadata": {}})));
    }
}
