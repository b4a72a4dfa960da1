//! Server-side apply (structured-merge-diff's `Updater.Apply` behind kube-apiserver's field
//! manager) and the Update bookkeeping of every other write (`Updater.Update`). The module docs
//! of `patch` list the semantics and the simplifications.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::PatchError;
use super::fields::{self, FieldSet, Pe, field_set, item_pe, json_equal, path_string};
use super::managed::{self, Entry, Operation, without_managed_fields};
use super::schema::{self, DEDUCED, ListTy, Ty};

/// The manager kube records an object's existing fields under when it is first applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Fields never recorded in managedFields (kube's `stripMetaManager`).
fn strip_set() -> FieldSet {
    let mut set = FieldSet::default();
    for top in ["apiVersion", "kind", "metadata"] {
        set.insert(&[Pe::Field(top.to_owned())]);
    }
    for meta in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[Pe::Field("metadata".to_owned()), Pe::Field(meta.to_owned())]);
    }
    set
}

/// The fields a write to `subresource` may own (the strategy's reset fields removed).
fn reset_filter(subresource: &str) -> fn(&FieldSet) -> FieldSet {
    if subresource == "status" {
        |s| s.only_field("status")
    } else {
        |s| s.without_field("status")
    }
}

/// The part of an applied configuration a write to `subresource` applies.
fn applied_part(config: &Map<String, Value>, subresource: &str) -> Value {
    let mut out = config.clone();
    if subresource == "status" {
        out.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "status"));
    } else {
        out.remove("status");
    }
    Value::Object(out)
}

/// `object` with the maps and lists of the kind's zero value filled in where absent, as the
/// typed object kube compares always has them.
fn fill(skeleton: &Value, object: &Value) -> Value {
    match (skeleton, object) {
        (Value::Object(s), Value::Object(o)) => {
            let mut out = o.clone();
            for (key, sv) in s {
                let filled = match o.get(key) {
                    None => sv.clone(),
                    Some(ov) => fill(sv, ov),
                };
                out.insert(key.clone(), filled);
            }
            Value::Object(out)
        }
        _ => object.clone(),
    }
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `schema.GroupVersionKind.String()`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// Server-side apply of `config` by `manager` onto `live` (see `patch::server_side_apply`).
pub(crate) fn server_side_apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
) -> Result<Value, PatchError> {
    let config_map = config.as_object().ok_or_else(|| {
        PatchError::BadRequest("error decoding YAML: the applied configuration is not an object".to_owned())
    })?;
    let api_version = text(config, "/apiVersion");
    let kind = text(config, "/kind");
    let invalid_type = || PatchError::BadRequest(format!("invalid object type: {}", gvk_string(api_version, kind)));
    if api_version.is_empty() || kind.is_empty() {
        return Err(invalid_type());
    }
    if config.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(PatchError::BadRequest("metadata.managedFields must be nil".to_owned()));
    }
    match live {
        Some(live) => {
            let live_api_version = text(live, "/apiVersion");
            if text(live, "/kind") != kind || schema::group_of(live_api_version) != schema::group_of(api_version) {
                return Err(invalid_type());
            }
        }
        None if text(config, "/metadata/name").is_empty() => {
            return Err(PatchError::BadRequest(
                "metadata.name: Required value: name is required to create an object with server-side apply".to_owned(),
            ));
        }
        None => {}
    }

    let (root, skeleton) = schema::for_object(config);
    let subresource = subresource.unwrap_or("");
    let keep = reset_filter(subresource);
    let strip = strip_set();
    let internal = |e: String| PatchError::Internal(e);
    let typed_patch_error = |e: String| {
        PatchError::Internal(format!(
            "failed to create typed patch object ({}/{}; {}): {e}",
            text(config, "/metadata/namespace"),
            text(config, "/metadata/name"),
            gvk_string(api_version, kind)
        ))
    };

    // An unreadable managedFields counts as none, as kube's emptyManagedFieldsOnErr.
    let mut entries = live.map(managed::decode).and_then(Result::ok).unwrap_or_default();
    let live_object = live.map_or_else(|| json!({}), without_managed_fields);
    if live.is_some() && entries.is_empty() {
        let existing = fields::compare(root, &fill(&skeleton, &json!({})), &fill(&skeleton, &live_object))
            .map_err(internal)?
            .filter(keep)
            .changed()
            .difference(&strip);
        entries.push(Entry {
            manager: BEFORE_FIRST_APPLY.to_owned(),
            operation: Operation::Update,
            api_version: text(&live_object, "/apiVersion").to_owned(),
            time: Some(now.to_owned()),
            subresource: subresource.to_owned(),
            fields: existing,
        });
    }

    let applied = applied_part(config_map, subresource);
    let applied_set = keep(&field_set(root, &applied).map_err(typed_patch_error)?);
    let mut merged = merge_value(root, Some(&live_object), &applied).map_err(typed_patch_error)?;
    let last = entries
        .iter()
        .position(|e| e.is(manager, Operation::Apply, api_version, subresource))
        .map(|i| entries.remove(i));

    // Prune: what this manager applied last time and nobody (itself included) owns now.
    if let Some(last) = &last {
        let owned = entries
            .iter()
            .fold(applied_set.clone(), |acc, e| acc.union(&e.fields))
            .ensure_named_fields_are_members();
        let gone = last.fields.ensure_named_fields_are_members().difference(&owned);
        for path in gone.top_paths() {
            remove_path(root, &mut merged, &path);
        }
    }

    let comparison = fields::compare(root, &fill(&skeleton, &live_object), &fill(&skeleton, &merged))
        .map_err(internal)?
        .filter(keep);
    let changed = comparison.changed();
    let conflicts: Vec<(&Entry, FieldSet)> = entries
        .iter()
        .map(|e| (e, e.fields.intersection(&changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !force && !conflicts.is_empty() {
        return Err(conflict_error(conflicts));
    }
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&comparison.removed);
    }
    let object_changed = live.is_none() || !json_equal(&live_object, &merged);
    entries.push(Entry {
        manager: manager.to_owned(),
        operation: Operation::Apply,
        api_version: api_version.to_owned(),
        time: if object_changed {
            Some(now.to_owned())
        } else {
            last.and_then(|l| l.time)
        },
        subresource: subresource.to_owned(),
        fields: applied_set.difference(&strip),
    });
    managed::write(&mut merged, entries);
    Ok(merged)
}

/// kube's `NewConflictError`: `Apply failed with N conflict(s): ...` with one
/// `FieldManagerConflict` cause per field.
fn conflict_error(mut conflicts: Vec<(&Entry, FieldSet)>) -> PatchError {
    conflicts.sort_by(|(a, _), (b, _)| {
        (&a.manager, a.operation, &a.api_version, &a.subresource).cmp(&(
            &b.manager,
            b.operation,
            &b.api_version,
            &b.subresource,
        ))
    });
    let mut causes = Vec::new();
    let mut lines = Vec::new();
    for (entry, set) in &conflicts {
        let who = entry.describe();
        lines.push(format!("conflicts with {who}:"));
        for path in set.paths() {
            let field = path_string(&path);
            lines.push(format!("- {field}"));
            causes.push(
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": field}),
            );
        }
    }
    let message = match (causes.as_slice(), conflicts.first()) {
        ([only], Some((entry, _))) => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entry.describe(),
            only.get("field").and_then(Value::as_str).unwrap_or("")
        ),
        _ => format!("Apply failed with {} conflicts: {}", causes.len(), lines.join("\n")),
    };
    PatchError::Conflict { message, causes }
}

/// Objects without nulls in maps (a null in an applied configuration unsets the field).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merge an applied configuration into a live value (`TypedValue.Merge`): maps merge, keyed
/// and set lists merge element by element, atomic values are replaced.
fn merge_value(ty: &'static Ty, live: Option<&Value>, config: &Value) -> Result<Value, String> {
    let Some(live) = live else {
        return Ok(without_nulls(config));
    };
    match (
        ty.list().filter(|l| !matches!(l.ssa, schema::Ssa::Atomic)),
        live,
        config,
    ) {
        (Some(list), Value::Array(l), Value::Array(c)) => merge_list(list, l, c),
        (None, Value::Object(l), Value::Object(c)) if !matches!(ty, Ty::Atomic) => {
            let mut out = l.clone();
            for (key, value) in c {
                if value.is_null() {
                    out.remove(key);
                } else {
                    out.insert(key.clone(), merge_value(ty.field(key), l.get(key), value)?);
                }
            }
            Ok(Value::Object(out))
        }
        _ => Ok(without_nulls(config)),
    }
}

/// structured-merge-diff's associative-list merge: live-only elements keep their places,
/// shared and new elements follow the configuration's order.
fn merge_list(list: &ListTy, live: &[Value], config: &[Value]) -> Result<Value, String> {
    let pes = |items: &[Value]| {
        items
            .iter()
            .map(|i| item_pe(list, i))
            .collect::<Result<Vec<Pe>, String>>()
    };
    let (live_pes, config_pes) = (pes(live)?, pes(config)?);
    let mut live_at: BTreeMap<&Pe, usize> = BTreeMap::new();
    for (i, pe) in live_pes.iter().enumerate() {
        live_at.entry(pe).or_insert(i);
    }
    let mut config_at: BTreeMap<&Pe, usize> = BTreeMap::new();
    for (i, pe) in config_pes.iter().enumerate() {
        if config_at.insert(pe, i).is_some() {
            return Err(format!(
                "duplicate entries for key {}",
                path_string(std::slice::from_ref(pe))
            ));
        }
    }
    let mut shared = config_pes.iter().filter(|pe| live_at.contains_key(pe));
    let mut next_shared = shared.next();
    let mut merged_config: BTreeSet<&Pe> = BTreeSet::new();
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let merge_item = |pe: &Pe, c: &Value| merge_value(list.elem, live_at.get(pe).and_then(|&i| live.get(i)), c);
    let (mut li, mut ci) = (0, 0);
    loop {
        let (l_pe, c_pe) = (live_pes.get(li), config_pes.get(ci));
        if l_pe.is_none() && c_pe.is_none() {
            break;
        }
        if let (Some(lp), Some(cp), Some(c)) = (l_pe, c_pe, config.get(ci)) {
            if lp == cp {
                merged_config.insert(cp);
                out.push(merge_item(cp, c)?);
                li += 1;
                ci += 1;
                next_shared = shared.next();
                continue;
            }
            if config_at.contains_key(lp) && next_shared.is_some_and(|n| n != lp) {
                li += 1;
                continue;
            }
        }
        if let (Some(lp), Some(l)) = (l_pe, live.get(li)) {
            if !config_at.contains_key(lp) {
                out.push(l.clone());
                li += 1;
                continue;
            }
            if merged_config.contains(lp) {
                li += 1;
                continue;
            }
        }
        match (c_pe, config.get(ci)) {
            (Some(cp), Some(c)) => {
                merged_config.insert(cp);
                out.push(merge_item(cp, c)?);
                ci += 1;
                if next_shared == Some(cp) {
                    next_shared = shared.next();
                }
            }
            // Unreachable for well-formed input; never loop forever.
            _ => li += 1,
        }
    }
    Ok(Value::Array(out))
}

/// Remove the value at `path` from `value` (the element itself for a list path).
fn remove_path(ty: &'static Ty, value: &mut Value, path: &[Pe]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match first {
        Pe::Field(name) => {
            let Some(map) = value.as_object_mut() else { return };
            if rest.is_empty() {
                map.remove(name);
            } else if let Some(child) = map.get_mut(name) {
                remove_path(ty.field(name), child, rest);
            }
        }
        Pe::Key(_) | Pe::Value(_) | Pe::Index(_) => {
            let elem = ty.list().map_or(&DEDUCED, |l| l.elem);
            let Some(items) = value.as_array_mut() else { return };
            let index = match (first, ty.list()) {
                (Pe::Index(i), _) => Some(*i),
                (_, Some(list)) => items.iter().position(|item| item_pe(list, item).as_ref() == Ok(first)),
                (_, None) => None,
            };
            let Some(index) = index.filter(|&i| i < items.len()) else {
                return;
            };
            if rest.is_empty() {
                items.remove(index);
            } else if let Some(item) = items.get_mut(index) {
                remove_path(elem, item, rest);
            }
        }
    }
}

/// Record an Update by `manager` in `new`'s managedFields (see `patch::record_update`); an
/// error means the objects could not be compared.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) -> Result<(), String> {
    if !new.is_object() {
        return Ok(());
    }
    let subresource = subresource.unwrap_or("");
    let old_entries = || old.map(managed::decode).and_then(Result::ok).unwrap_or_default();
    // kube's decodeLiveOrNew: subresources keep the live managedFields; a main-resource write
    // may reset them (`[]`) or replace them with valid ones of its own.
    let mut entries = if !subresource.is_empty() {
        old_entries()
    } else if managed::is_reset(new) {
        Vec::new()
    } else {
        match managed::decode(new) {
            Ok(entries) if !entries.is_empty() => entries,
            _ => old_entries(),
        }
    };
    let new_object = without_managed_fields(new);
    // An existing object without managedFields is not tracked by updates (skipNonApplied).
    if entries.is_empty() && old.is_some() {
        managed::write(new, entries);
        return Ok(());
    }
    let (root, skeleton) = schema::for_object(&new_object);
    let old_object = old.map_or_else(|| json!({}), without_managed_fields);
    let comparison = fields::compare(root, &fill(&skeleton, &old_object), &fill(&skeleton, &new_object))?
        .filter(reset_filter(subresource));
    let changed = comparison.changed();
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&comparison.removed);
    }
    let own = changed.difference(&strip_set());
    if !own.is_empty() {
        let api_version = text(&new_object, "/apiVersion");
        match entries
            .iter_mut()
            .find(|e| e.is(manager, Operation::Update, api_version, subresource))
        {
            Some(entry) => {
                entry.fields = entry.fields.union(&own);
                entry.time = Some(now.to_owned());
            }
            None => entries.push(Entry {
                manager: manager.to_owned(),
                operation: Operation::Update,
                api_version: api_version.to_owned(),
                time: Some(now.to_owned()),
                subresource: subresource.to_owned(),
                fields: own,
            }),
        }
    }
    managed::write(new, entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports_list() -> &'static ListTy {
        schema::builtin("", "Service")
            .unwrap()
            .root
            .field("spec")
            .field("ports")
            .list()
            .unwrap()
    }

    #[test]
    fn list_merge_keeps_live_only_items_in_place_and_follows_config_order() {
        let live = [json!({"port": 1}), json!({"port": 2}), json!({"port": 3})];
        let config = [json!({"port": 3, "name": "c"}), json!({"port": 1}), json!({"port": 4})];
        let merged = merge_list(ports_list(), &live, &config).unwrap();
        let ports: Vec<i64> = merged
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [2, 3, 1, 4]);
        assert_eq!(merged[1]["name"], "c");
        assert!(merge_list(ports_list(), &live, &[json!({"port": 1}), json!({"port": 1})]).is_err());
    }

    #[test]
    fn remove_path_by_key_with_default() {
        let root = schema::builtin("", "Service").unwrap().root;
        let mut svc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let pe = item_pe(ports_list(), &json!({"port": 80})).unwrap();
        remove_path(
            root,
            &mut svc,
            &[Pe::Field("spec".into()), Pe::Field("ports".into()), pe],
        );
        assert_eq!(svc, json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}]}}));
    }

    #[test]
    fn fill_adds_only_missing_maps() {
        let filled = fill(
            &json!({"spec": {"strategy": {}, "template": {"spec": {"containers": null}}}}),
            &json!({"spec": {"replicas": 1, "template": {"spec": {"containers": []}}}}),
        );
        assert_eq!(
            filled,
            json!({"spec": {"replicas": 1, "strategy": {}, "template": {"spec": {"containers": []}}}})
        );
    }
}
