//! DELETE: preconditions, admission, finalizers and propagation policy.
use serde_json::{Value, json};

use super::super::Shared;
use super::{
    CRD_CLEANUP_FINALIZER, Caller, FOREGROUND_FINALIZER, IMMORTAL_NAMESPACES, MAX_ATTEMPTS, ORPHAN_FINALIZER, Reply,
    Target, after_write, invalid, meta_mut, now, response_object, selector_namespace_labels, set_pointer,
};
use crate::ApiError;
use crate::admission::{Attributes, Operation, Outcome};
use crate::discovery::ResourceInfo;
use crate::store::{
    Written as Stored, conflict, conflict_because, finalizers, is_being_deleted, not_found, resource_version, str_at,
};

/// The parts of DeleteOptions this server acts on.
#[derive(Debug, Clone, Default)]
struct DeleteOptions {
    policy: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn parse_delete_options(info: &ResourceInfo, name: &str, body: &Value) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run: body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All")),
        ..Default::default()
    };
    let orphan = body.get("orphanDependents").and_then(Value::as_bool);
    let policy = body.get("propagationPolicy").and_then(Value::as_str);
    if orphan.is_some() && policy.is_some() {
        return Err(invalid(
            info,
            name,
            "propagationPolicy",
            "Invalid value: \"\": orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    options.policy = match (policy, orphan) {
        (Some(p @ ("Orphan" | "Background" | "Foreground")), _) => Some(p.to_owned()),
        (Some(other), _) => {
            return Err(invalid(
                info,
                name,
                "propagationPolicy",
                &format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
            ));
        }
        (None, Some(true)) => Some("Orphan".to_owned()),
        (None, Some(false)) => Some("Background".to_owned()),
        (None, None) => None,
    };
    Ok(options)
}

/// The finalizer the registry of a kind adds when deletion starts.
fn registry_finalizer(info: &ResourceInfo) -> Option<&'static str> {
    (info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions")
        .then_some(CRD_CLEANUP_FINALIZER)
}

/// DELETE of one object.
pub(crate) async fn delete(shared: &Shared, target: &Target, caller: &Caller, body: Value) -> Result<Reply, ApiError> {
    let info = &target.info;
    let name = target.name.clone().unwrap_or_default();
    let key = target.key(&name);
    let options = parse_delete_options(info, &name, &body)?;
    let dry_run = caller.options.dry_run || options.dry_run;
    let is_namespace = info.group.is_empty() && info.plural == "namespaces";
    if is_namespace && IMMORTAL_NAMESPACES.contains(&name.as_str()) {
        let mut err = ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        );
        err.details = Some(json!({"name": name, "kind": "namespaces"}));
        return Err(err);
    }
    let mut options_object = body.clone();
    if !options_object.is_object() {
        options_object = json!({});
    }
    options_object["kind"] = json!("DeleteOptions");
    options_object["apiVersion"] = json!("meta.k8s.io/v1");
    if dry_run {
        options_object["dryRun"] = json!(["All"]);
    }
    for _ in 0..MAX_ATTEMPTS {
        let current = shared.lock().store.get(&key).cloned();
        let Some(current) = current else {
            return Err(not_found(&info.group, &info.plural, &name));
        };
        let current_rv = resource_version(&current).unwrap_or(0);
        let uid = str_at(&current, "/metadata/uid").to_owned();
        if let Some(want) = &options.uid
            && *want != uid
        {
            return Err(conflict_because(
                &info.group,
                &info.plural,
                &name,
                &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
            ));
        }
        if let Some(want) = &options.resource_version
            && *want != current_rv.to_string()
        {
            return Err(conflict_because(
                &info.group,
                &info.plural,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {current_rv}"
                ),
            ));
        }
        let (namespace_labels, configs) = {
            let state = shared.lock();
            let labels = selector_namespace_labels(&state, target, &current);
            (labels, state.webhook_configs())
        };
        let attributes = Attributes {
            kind: target.gvk(),
            resource: target.gvr(),
            sub_resource: None,
            name: name.clone(),
            namespace: target.namespace.clone(),
            operation: Operation::Delete,
            user: caller.user.clone(),
            object: None,
            old_object: Some(current.clone()),
            dry_run,
            options: Some(options_object.clone()),
        };
        let Outcome { warnings, .. } = shared.dispatcher.admit(&configs, attributes, namespace_labels).await?;

        let now = now();
        let marked = mark_deleting(info, &current, options.policy.as_deref(), &now);
        if dry_run {
            let body = match marked {
                Some(marked) => response_object(info, marked),
                None => response_object(info, current),
            };
            return Ok(Reply {
                code: 200,
                body,
                warnings,
            });
        }
        let mut state = shared.lock();
        let Some(latest) = state.store.get(&key) else {
            return Err(not_found(&info.group, &info.plural, &name));
        };
        if resource_version(latest) != Some(current_rv) {
            continue;
        }
        let reply = match marked {
            Some(marked) if marked == current => response_object(info, current),
            Some(marked) => match state.store.update(&key, marked, current_rv)? {
                Stored::Stored(object) => response_object(info, object),
                Stored::Deleted(_) => deleted_status(info, &name, &uid),
            },
            None => {
                state.store.delete(&key, Some(current_rv))?;
                deleted_status(info, &name, &uid)
            }
        };
        after_write(&mut state, info);
        return Ok(Reply {
            code: 200,
            body: reply,
            warnings,
        });
    }
    Err(conflict(&info.group, &info.plural, &name))
}

/// The object marked for deletion if something must finish first (finalizers, a namespace's
/// content, dependents in foreground deletion); None to delete it now.
fn mark_deleting(info: &ResourceInfo, current: &Value, policy: Option<&str>, now: &str) -> Option<Value> {
    let mut list = finalizers(current);
    if let Some(policy) = policy {
        list.retain(|f| f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER);
        match policy {
            "Orphan" => list.push(ORPHAN_FINALIZER.to_owned()),
            "Foreground" => list.push(FOREGROUND_FINALIZER.to_owned()),
            _ => {}
        }
    }
    if let Some(finalizer) = registry_finalizer(info)
        && !is_being_deleted(current)
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(finalizer.to_owned());
    }
    let is_namespace = info.group.is_empty() && info.plural == "namespaces";
    let spec_finalizers = is_namespace
        && current
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    if list.is_empty() && !spec_finalizers {
        return None;
    }
    let mut marked = current.clone();
    let first = !is_being_deleted(current);
    if let Some(meta) = meta_mut(&mut marked) {
        if list.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(list));
        }
        if first {
            meta.insert("deletionTimestamp".into(), json!(now));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(generation) = meta.get("generation").and_then(Value::as_i64).filter(|g| *g > 0) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
    }
    if is_namespace {
        set_pointer(&mut marked, "/status/phase", json!("Terminating"));
    }
    Some(marked)
}

fn deleted_status(info: &ResourceInfo, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": info.plural, "uid": uid});
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_marks_objects_with_finalizers() {
        let registry = crate::discovery::Registry::new();
        let deploy = registry.lookup("apps", "v1", "deployments").unwrap();
        let plain = json!({"metadata": {"name": "a", "generation": 2}});
        assert!(mark_deleting(deploy, &plain, Some("Background"), "now").is_none());
        let marked = mark_deleting(deploy, &plain, Some("Foreground"), "now").unwrap();
        assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        assert_eq!(marked["metadata"]["deletionTimestamp"], "now");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(marked["metadata"]["generation"], 3);
        let ns_info = registry.lookup("", "v1", "namespaces").unwrap();
        let ns = json!({"metadata": {"name": "team"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let marked = mark_deleting(ns_info, &ns, None, "now").unwrap();
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert!(marked["metadata"].get("finalizers").is_none());
    }
}
