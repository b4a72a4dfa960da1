//! PUT and PATCH of objects and of their `status`, `scale` and `finalize` subresources.
use serde_json::{Value, json};

use super::super::Shared;
use super::scale::{scale_of, scale_replicas};
use super::{
    Caller, Change, MAX_ATTEMPTS, Reply, Target, after_write, bad_request, check_type, finish_create, invalid,
    meta_mut, now, prepare_create_metadata, response_object, restore_system_metadata, selector_namespace_labels,
    server_managed, validate_sizes,
};
use crate::admission::{Attributes, Operation, Outcome};
use crate::discovery::ResourceInfo;
use crate::patch::{self, PatchType};
use crate::store::{
    Written as Stored, conflict, conflict_because, finalizers, is_being_deleted, not_found, resource_version, str_at,
};
use crate::{ApiError, defaults};

/// PUT or PATCH of an object or its `status`, `scale` or `finalize` subresource.
pub(crate) async fn update(
    shared: &Shared,
    target: &Target,
    caller: &Caller,
    change: Change,
) -> Result<Reply, ApiError> {
    let info = &target.info;
    let name = target.name.clone().unwrap_or_default();
    let key = target.key(&name);
    let sub = target.subresource.as_deref();
    let manager = caller.options.manager();
    let apply = matches!(change, Change::Patch(PatchType::Apply, _));
    if apply && caller.options.field_manager.as_deref().is_none_or(str::is_empty) {
        let mut err = ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
        err.details = Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions",
            "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]}));
        return Err(err);
    }
    for _ in 0..MAX_ATTEMPTS {
        let current = shared.lock().store.get(&key).cloned();
        let Some(current) = current else {
            if let (Change::Patch(PatchType::Apply, body), None) = (&change, sub) {
                return apply_create(shared, target, caller, body).await;
            }
            return Err(not_found(&info.group, &info.plural, &name));
        };
        let current_rv = resource_version(&current).unwrap_or(0);
        let now = now();
        let old_addressed = match sub {
            Some("scale") => scale_of(info, &current),
            _ => current.clone(),
        };
        let new_addressed = compute(&change, &old_addressed, target, &manager, caller.options.force, &now)?;
        if resource_version(&new_addressed).is_some_and(|rv| rv != current_rv) {
            return Err(conflict(&info.group, &info.plural, &name));
        }
        let mut new = merge_into(info, sub, &current, &new_addressed)?;
        finish_update_object(info, sub, &name, &current, &mut new)?;
        if !apply || sub == Some("scale") {
            patch::record_update(Some(&current), &mut new, &manager, sub, &now);
        }

        let (namespace_labels, configs) = {
            let state = shared.lock();
            let labels = selector_namespace_labels(&state, target, &current);
            (labels, state.webhook_configs())
        };
        let (admitted_old, admitted_new) = match sub {
            Some("scale") => (old_addressed.clone(), scale_of(info, &new)),
            _ => (current.clone(), new.clone()),
        };
        let attributes = Attributes {
            kind: target.gvk(),
            resource: target.gvr(),
            sub_resource: target.subresource.clone(),
            name: name.clone(),
            namespace: target.namespace.clone(),
            operation: Operation::Update,
            user: caller.user.clone(),
            object: Some(admitted_new),
            old_object: Some(admitted_old),
            dry_run: caller.options.dry_run,
            options: Some(caller.options.options_object("UpdateOptions")),
        };
        let Outcome {
            object: mutated,
            warnings,
            ..
        } = shared.dispatcher.admit(&configs, attributes, namespace_labels).await?;
        if let Some(mutated) = mutated {
            match sub {
                Some("scale") => {
                    if let Some(paths) = &info.scale {
                        set_pointer(&mut new, &paths.spec_replicas, json!(scale_replicas(&mutated)));
                    }
                }
                _ => {
                    let mut mutated = mutated;
                    restore_system_metadata(&new, &mut mutated);
                    defaults::apply(&info.group, &info.kind, &mut mutated);
                    new = mutated;
                }
            }
        }
        server_managed(info, &mut new, Some(&current), &now)?;
        let respond = |object: Value| match sub {
            Some("scale") => scale_of(info, &object),
            _ => response_object(info, object),
        };
        if caller.options.dry_run {
            return Ok(Reply {
                code: 200,
                body: respond(new),
                warnings,
            });
        }
        let mut state = shared.lock();
        let Some(latest) = state.store.get(&key) else {
            return Err(not_found(&info.group, &info.plural, &name));
        };
        if resource_version(latest) != Some(current_rv) {
            // Lost a race: recompute from the new object. A resourceVersion the client sent
            // then no longer matches and answers 409 above; without one the write goes on.
            continue;
        }
        if unchanged(&current, &new) {
            return Ok(Reply {
                code: 200,
                body: respond(current),
                warnings,
            });
        }
        let stored = match state.store.update(&key, new, current_rv)? {
            Stored::Stored(object) | Stored::Deleted(object) => object,
        };
        after_write(&mut state, info);
        return Ok(Reply {
            code: 200,
            body: respond(stored),
            warnings,
        });
    }
    Err(conflict(&info.group, &info.plural, &name))
}

/// The addressed object (whole object or Scale) after the change.
fn compute(
    change: &Change,
    old: &Value,
    target: &Target,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    let info = &target.info;
    let scale = target.subresource.as_deref() == Some("scale");
    let (group, kind, api_version) = if scale {
        (
            "autoscaling".to_owned(),
            "Scale".to_owned(),
            "autoscaling/v1".to_owned(),
        )
    } else {
        (info.group.clone(), info.kind.clone(), info.api_version())
    };
    match change {
        Change::Replace(body) => {
            check_type(&api_version, &kind, body)?;
            Ok(body.clone())
        }
        Change::Patch(PatchType::Apply, body) => {
            let config = parse_json(body)?;
            check_type(&api_version, &kind, &config)?;
            patch::server_side_apply(Some(old), &config, manager, force, target.subresource.as_deref(), now)
        }
        Change::Patch(patch_type, body) => patch::apply_patch(*patch_type, old, body, &group, &kind),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(format!(
            "error decoding the request body as JSON (YAML bodies are not supported by this test server): {e}"
        ))
    })
}

/// The whole new object from the addressed one.
fn merge_into(info: &ResourceInfo, sub: Option<&str>, current: &Value, addressed: &Value) -> Result<Value, ApiError> {
    let mut new = match sub {
        None => {
            let mut new = addressed.clone();
            if info.status
                && let Some(map) = new.as_object_mut()
            {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            new
        }
        Some("status") => {
            let mut new = current.clone();
            if let Some(map) = new.as_object_mut() {
                match addressed.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            new
        }
        Some("scale") => {
            let mut new = current.clone();
            if let Some(paths) = &info.scale {
                set_pointer(&mut new, &paths.spec_replicas, json!(scale_replicas(addressed)));
            }
            new
        }
        Some("finalize") => {
            let mut new = current.clone();
            let finalizers = addressed
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            set_pointer(&mut new, "/spec/finalizers", finalizers);
            new
        }
        Some(other) => return Err(ApiError::new(404, "NotFound", format!("no subresource {other}"))),
    };
    if sub.is_some() {
        carry_managed_fields(addressed, &mut new);
    }
    Ok(new)
}

/// Server-side apply on a subresource returns managedFields on the addressed object.
fn carry_managed_fields(from: &Value, to: &mut Value) {
    if let Some(managed) = from.pointer("/metadata/managedFields").cloned()
        && let Some(meta) = meta_mut(to)
    {
        meta.insert("managedFields".into(), managed);
    }
}

/// Metadata rules of an update, the strategies' update hooks, defaulting and generation.
fn finish_update_object(
    info: &ResourceInfo,
    sub: Option<&str>,
    name: &str,
    current: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let new_name = str_at(new, "/metadata/name").to_owned();
    if !new_name.is_empty() && new_name != name {
        return Err(bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let current_ns = str_at(current, "/metadata/namespace").to_owned();
    let new_ns = str_at(new, "/metadata/namespace").to_owned();
    if !new_ns.is_empty() && new_ns != current_ns {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let current_uid = str_at(current, "/metadata/uid").to_owned();
    let new_uid = str_at(new, "/metadata/uid").to_owned();
    if !new_uid.is_empty() && new_uid != current_uid {
        return Err(conflict_because(
            &info.group,
            &info.plural,
            name,
            &format!("Precondition failed: UID in precondition: {new_uid}, UID in object meta: {current_uid}"),
        ));
    }
    if is_being_deleted(current) {
        let before = finalizers(current);
        let added: Vec<String> = finalizers(new).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            return Err(invalid(
                info,
                name,
                "metadata.finalizers",
                &format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            ));
        }
    }
    let keep_managed = new.pointer("/metadata/managedFields").is_none();
    restore_system_metadata(current, new);
    validate_sizes(info, name, new)?;
    if keep_managed
        && let Some(managed) = current.pointer("/metadata/managedFields").cloned()
        && let Some(meta) = meta_mut(new)
    {
        meta.insert("managedFields".into(), managed);
    }
    if let Some(map) = new.as_object_mut() {
        map.insert("apiVersion".into(), json!(info.api_version()));
        map.insert("kind".into(), json!(info.kind));
    }
    if sub.is_none() {
        defaults::prepare_for_update(&info.group, &info.kind, new, current);
    }
    defaults::apply(&info.group, &info.kind, new);
    if info.generation && sub != Some("status") && spec_changed(info, current, new) {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_pointer(new, "/metadata/generation", json!(generation + 1));
    }
    Ok(())
}

/// Whether anything outside metadata (and status, for kinds with a status subresource) changed.
fn spec_changed(info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            for key in ["metadata", "apiVersion", "kind"] {
                map.remove(key);
            }
            if info.status {
                map.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Equal but for managedFields timestamps (kube then skips the write).
fn unchanged(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(entries) = v.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.remove("time");
            }
        }
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        v
    };
    strip(old) == strip(new)
}

/// Set the value at a JSON pointer, creating objects on the way.
pub(crate) fn set_pointer(object: &mut Value, pointer: &str, value: Value) {
    let mut node = object;
    let segments: Vec<&str> = pointer.split('/').skip(1).collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    for segment in parents {
        let Some(map) = node.as_object_mut() else { return };
        let next = map.entry(segment.to_string()).or_insert_with(|| json!({}));
        if !next.is_object() {
            *next = json!({});
        }
        node = next;
    }
    if let Some(map) = node.as_object_mut() {
        map.insert((*last).to_owned(), value);
    }
}

/// Server-side apply of an object that does not exist yet creates it.
async fn apply_create(shared: &Shared, target: &Target, caller: &Caller, body: &[u8]) -> Result<Reply, ApiError> {
    let info = &target.info;
    let config = parse_json(body)?;
    check_type(&info.api_version(), &info.kind, &config)?;
    let now = now();
    let manager = caller.options.manager();
    let mut object = patch::server_side_apply(None, &config, &manager, caller.options.force, None, &now)?;
    if let Some(name) = &target.name
        && let Some(meta) = meta_mut(&mut object)
    {
        let body_name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if !body_name.is_empty() && body_name != name {
            return Err(bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        meta.insert("name".into(), json!(name));
    }
    let generated = prepare_create_metadata(target, &mut object, &now)?;
    let mut reply = finish_create(
        shared,
        target,
        caller,
        object,
        generated,
        caller.options.options_object("CreateOptions"),
        &now,
    )
    .await?;
    reply.code = 201;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_field_times_do_not_make_a_write() {
        let a = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "1"}]}, "data": {"a": "1"}});
        let b = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "2"}]}, "data": {"a": "1"}});
        assert!(unchanged(&a, &b));
        let c = json!({"metadata": {"managedFields": [{"manager": "m", "time": "2"}]}, "data": {"a": "2"}});
        assert!(!unchanged(&a, &c));
    }
}
