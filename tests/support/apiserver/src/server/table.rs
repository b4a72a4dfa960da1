//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` `Table`
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`) and prints its columns.
//!
//! # Simplifications
//! Columns for a few kinds (Deployment, ConfigMap, Secret, Namespace, Service) as kube prints
//! them; custom resources get NAME plus their CRD's `additionalPrinterColumns`, evaluated with a
//! JSONPath subset (`.a.b`, `[n]`, `[?(@.k=="v")]`); every other kind gets NAME and AGE. No
//! `-o wide` columns (priority > 0 is printed like priority 0).
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::discovery::{PrinterColumn, ResourceInfo};
use crate::store::str_at;

/// Whether an `Accept` header asks for a Table.
pub(super) fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .any(|media| media.split(';').any(|p| p.trim() == "as=Table"))
}

type Cell = fn(&Value) -> Value;

struct Column {
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    cell: Cell,
}

const fn column(name: &'static str, kind: &'static str, description: &'static str, cell: Cell) -> Column {
    Column {
        name,
        kind,
        description,
        cell,
    }
}

fn count(object: &Value, keys: &[&str]) -> usize {
    keys.iter()
        .filter_map(|k| object.get(*k).and_then(Value::as_object))
        .map(serde_json::Map::len)
        .sum()
}

fn int_at(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: &str) -> Value {
    json!(if text.is_empty() { "<none>" } else { text })
}

const DEPLOYMENT: &[Column] = &[
    column("Ready", "string", "Number of the pod with ready state", |o| {
        json!(format!(
            "{}/{}",
            int_at(o, "/status/readyReplicas"),
            int_at(o, "/spec/replicas")
        ))
    }),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        |o| json!(int_at(o, "/status/updatedReplicas")),
    ),
    column(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        |o| json!(int_at(o, "/status/availableReplicas")),
    ),
];
const CONFIG_MAP: &[Column] = &[column("Data", "integer", "Number of data in the configmap", |o| {
    json!(count(o, &["data", "binaryData"]))
})];
const SECRET: &[Column] = &[
    column("Type", "string", "The type of the secret", |o| {
        json!(str_at(o, "/type"))
    }),
    column("Data", "integer", "Number of data in the secret", |o| {
        json!(count(o, &["data"]))
    }),
];
const NAMESPACE: &[Column] = &[column("Status", "string", "The status of the namespace", |o| {
    json!(str_at(o, "/status/phase"))
})];
const SERVICE: &[Column] = &[
    column("Type", "string", "The type of the service", |o| {
        json!(str_at(o, "/spec/type"))
    }),
    column("Cluster-IP", "string", "The cluster IP of the service", |o| {
        or_none(str_at(o, "/spec/clusterIP"))
    }),
    column("External-IP", "string", "The external IP of the service", |o| {
        let ips: Vec<&str> = o
            .pointer("/spec/externalIPs")
            .and_then(Value::as_array)
            .map(|ips| ips.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        or_none(&ips.join(","))
    }),
    column("Port(s)", "string", "The port(s) of the service", |o| {
        let ports: Vec<String> = o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        match p.get("nodePort").and_then(Value::as_i64) {
                            Some(node) => format!("{port}:{node}/{protocol}"),
                            None => format!("{port}/{protocol}"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        or_none(&ports.join(","))
    }),
];

/// Extra columns per (group, kind), between NAME and AGE.
const COLUMNS: &[(&str, &str, &[Column])] = &[
    ("apps", "Deployment", DEPLOYMENT),
    ("", "ConfigMap", CONFIG_MAP),
    ("", "Secret", SECRET),
    ("", "Namespace", NAMESPACE),
    ("", "Service", SERVICE),
];

/// Evaluate the JSONPath subset CRD printer columns use: `.a.b`, `[n]`, and
/// `[?(@.key=="value")]` filters (first match). Anything else reads as absent.
fn json_path<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = object;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            current = current.get(&after[..end])?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[?(@.") {
            let end = after.find(")]")?;
            let (key, want) = after[..end].split_once("==")?;
            let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
            current = current
                .as_array()?
                .iter()
                .find(|item| item.get(key.trim()).and_then(Value::as_str) == Some(want))?;
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            current = current.get(after[..end].trim().parse::<usize>().ok()?)?;
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(current)
}

/// A CRD printer column's cell, typed like kube-apiserver renders it.
fn printer_cell(column: &PrinterColumn, object: &Value, now: i64) -> Value {
    match json_path(object, &column.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(text)) if column.kind == "date" => parse_timestamp(text)
            .map(|t| json!(human_duration(now - t)))
            .unwrap_or_else(|| json!(text)),
        Some(value) => value.clone(),
    }
}

/// A Table of `objects`; rows carry the object as `includeObject` asks (default: metadata).
pub(super) fn render(info: &ResourceInfo, objects: &[Value], revision: Option<u64>, include: Option<&str>) -> Value {
    if !info.printer_columns.is_empty() {
        return render_custom(info, objects, revision, include);
    }
    let extra: &[Column] = COLUMNS
        .iter()
        .find(|(g, k, _)| *g == info.group && *k == info.kind)
        .map(|(_, _, c)| *c)
        .unwrap_or(&[]);
    let mut definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    definitions.extend(
        extra.iter().map(
            |c| json!({"name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": 0}),
        ),
    );
    definitions.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![json!(str_at(object, "/metadata/name"))];
            cells.extend(extra.iter().map(|c| (c.cell)(object)));
            let age = parse_timestamp(str_at(object, "/metadata/creationTimestamp"))
                .map(|created| human_duration(now - created))
                .unwrap_or_else(|| "<unknown>".to_owned());
            cells.push(json!(age));
            json!({"cells": cells, "object": row_object(object, include)})
        })
        .collect();
    table(definitions, rows, revision)
}

/// A CRD with `additionalPrinterColumns`: NAME, then exactly the declared columns.
fn render_custom(info: &ResourceInfo, objects: &[Value], revision: Option<u64>, include: Option<&str>) -> Value {
    let mut definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    definitions.extend(
        info.printer_columns.iter().map(
            |c| json!({"name": c.name, "type": c.kind, "format": "", "description": c.description, "priority": 0}),
        ),
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let rows = objects
        .iter()
        .map(|object| {
            let mut cells = vec![json!(str_at(object, "/metadata/name"))];
            cells.extend(info.printer_columns.iter().map(|c| printer_cell(c, object, now)));
            json!({"cells": cells, "object": row_object(object, include)})
        })
        .collect();
    table(definitions, rows, revision)
}

fn row_object(object: &Value, include: Option<&str>) -> Value {
    match include {
        Some("None") => Value::Null,
        Some("Object") => object.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

fn table(definitions: Vec<Value>, rows: Vec<Value>, revision: Option<u64>) -> Value {
    let mut metadata = json!({});
    if let Some(revision) = revision {
        metadata["resourceVersion"] = json!(revision.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_timestamp(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let clock = rest.strip_suffix('Z')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut c = clock.split(':').map(str::parse::<u8>);
    let (hour, minute, second) = (c.next()?.ok()?, c.next()?.ok()?, c.next()?.ok()?);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let clock = time::Time::from_hms(hour, minute, second).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp())
}

/// kube's `duration.HumanDuration`.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_column_paths_follow_the_jsonpath_subset() {
        let guard = json!({"status": {"conditions": [
            {"type": "Reconciling", "status": "False"}, {"type": "Ready", "status": "True"}],
            "counts": {"objects": 5}, "list": ["a", "b"]}});
        assert_eq!(
            json_path(&guard, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&guard, ".status.counts.objects"), Some(&json!(5)));
        assert_eq!(json_path(&guard, ".status.list[1]"), Some(&json!("b")));
        assert_eq!(
            json_path(&guard, r#".status.conditions[?(@.type=="Stalled")].status"#),
            None
        );
        assert_eq!(json_path(&guard, ".status.missing"), None);
    }

    #[test]
    fn durations_read_like_kubectl() {
        for (seconds, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400, "3d"),
            (400 * 86400, "400d"),
        ] {
            assert_eq!(human_duration(seconds), want);
        }
        assert_eq!(parse_timestamp("1970-01-02T00:00:10Z"), Some(86410));
        assert_eq!(parse_timestamp("nope"), None);
    }

    #[test]
    fn tables_have_kind_specific_columns() {
        assert!(wanted("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wanted("application/json"));
        let registry = crate::discovery::Registry::new();
        let cm = registry.lookup("", "v1", "configmaps").unwrap();
        let object = json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z"}, "data": {"x": "1", "y": "2"}});
        let table = render(cm, &[object], Some(3), None);
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(table["rows"][0]["cells"][0], "a");
        assert_eq!(table["rows"][0]["cells"][1], 2);
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["metadata"]["resourceVersion"], "3");
    }
}
