//! Every write, in kube-apiserver's order: decode → compute the new object (replace, patch or
//! server-side apply; `managedFields` through [`crate::patch`]) → strategy hooks and
//! defaulting → namespace lifecycle → admission webhooks (read from the store at request time)
//! → defaulting again (what webhooks return is decoded like a request) → persist with
//! optimistic concurrency.
//!
//! Concurrency follows kube's `GuaranteedUpdate`: a write computed from an object that changed
//! before it could be stored is recomputed from the new object (patches and PUTs without a
//! resourceVersion retry transparently), while a resourceVersion the client sent is a
//! precondition (409 Conflict when stale). Writes that change nothing (ignoring managedFields
//! timestamps) are not stored: no new resourceVersion, no watch event — but admission still
//! sees them, as in kube.
//!
//! The `scale` subresource is addressed as an autoscaling/v1 `Scale` (no labels, so webhooks'
//! objectSelectors never match it, kubernetes/kubernetes#113594); `status` writes change only
//! `status`; main-resource writes keep the stored `status` for kinds with a status subresource.
//!
//! # Simplifications
//! - `fieldValidation` is accepted and ignored (unknown fields are kept, never pruned) and
//!   objects are not validated beyond names, namespaces, kinds and the rules below.
//! - The field manager of a non-apply write is the `fieldManager` parameter or, like kube, the
//!   User-Agent up to its first `/` (`kubectl-edit`, `kubectl-client-side-apply`, ...).
//! - Admission webhooks are called once per attempt; mutating and validating webhooks run in
//!   one dispatcher call before persisting, so validating webhooks also run before the uid and
//!   creationTimestamp of a new object would exist in kube — here they already do for both.
//! - Server-side apply to `scale` applies to the Scale object and records the change on the
//!   parent as an `Update` by the manager.
//! - Deletion ignores `gracePeriodSeconds` (no kubelet): objects without finalizers go at once.
//! - `Foreground` propagation deletes dependents asynchronously through the garbage collector
//!   like kube; `Orphan` removes the owner references; the owner goes when its finalizer is
//!   removed.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Shared, State};
use crate::admission::{Attributes, Gvk, Gvr, Operation, Outcome};
use crate::discovery::{ResourceInfo, SelectorPath};
use crate::patch::{self, PatchType};
use crate::store::{
    ObjectKey, Written as Stored, conflict, conflict_because, finalizers, is_being_deleted, not_found,
    resource_version, str_at,
};
use crate::{ApiError, UserInfo, defaults};

/// How often a write is recomputed after losing a race before answering 409.
const MAX_ATTEMPTS: usize = 16;
/// The finalizer the CRD registry adds on deletion; its controller removes all instances.
pub(crate) const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// Finalizers the garbage collector handles.
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";
/// See [`ORPHAN_FINALIZER`].
pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Namespaces that cannot be deleted.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The resource (and object, subresource) a request addresses.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) info: ResourceInfo,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    /// The store key of object `name`.
    pub(crate) fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(
            &self.info.group,
            &self.info.plural,
            self.namespace.as_deref().unwrap_or(""),
            name,
        )
    }

    fn gvr(&self) -> Gvr {
        Gvr {
            group: self.info.group.clone(),
            version: self.info.version.clone(),
            resource: self.info.plural.clone(),
        }
    }

    fn gvk(&self) -> Gvk {
        if self.subresource.as_deref() == Some("scale") {
            return Gvk {
                group: "autoscaling".into(),
                version: "v1".into(),
                kind: "Scale".into(),
            };
        }
        Gvk {
            group: self.info.group.clone(),
            version: self.info.version.clone(),
            kind: self.info.kind.clone(),
        }
    }
}

/// Query parameters of a write.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOptions {
    pub(crate) dry_run: bool,
    pub(crate) field_manager: Option<String>,
    pub(crate) force: bool,
    pub(crate) field_validation: Option<String>,
    pub(crate) user_agent: String,
}

impl WriteOptions {
    /// The manager recorded in managedFields: the parameter, or the User-Agent's program name.
    fn manager(&self) -> String {
        match &self.field_manager {
            Some(manager) if !manager.is_empty() => manager.clone(),
            _ => self.user_agent.split('/').next().unwrap_or("").to_owned(),
        }
    }

    /// CreateOptions/UpdateOptions as kube-apiserver puts them in an AdmissionReview.
    fn options_object(&self, kind: &str) -> Value {
        let mut options = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(manager) = &self.field_manager {
            options["fieldManager"] = json!(manager);
        }
        if let Some(validation) = &self.field_validation {
            options["fieldValidation"] = json!(validation);
        }
        options
    }
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user: UserInfo,
    pub(crate) options: WriteOptions,
}

/// A successful write's answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) body: Value,
    pub(crate) warnings: Vec<String>,
}

/// What a PUT or PATCH asks for.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Replace(Value),
    Patch(PatchType, Vec<u8>),
}

/// Now, as kube writes timestamps (RFC 3339, seconds).
pub(crate) fn now() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

/// 422 Invalid with kube's message shape and causes.
pub(crate) fn invalid(info: &ResourceInfo, name: &str, field: &str, detail: &str) -> ApiError {
    let qualified_kind = if info.group.is_empty() {
        info.kind.clone()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("{qualified_kind} \"{name}\" is invalid: {field}: {detail}"),
    );
    let mut details = json!({
        "name": name,
        "kind": info.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
    });
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    err.details = Some(details);
    err
}

/// The object as a response body: `apiVersion` of the addressed version, `kind`.
pub(crate) fn response_object(info: &ResourceInfo, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(info.api_version()));
        map.insert("kind".into(), json!(info.kind));
    }
    object
}

fn meta_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

/// Reject a body of another kind or version than the URL names.
fn check_type(expected_api_version: &str, expected_kind: &str, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(bad_request("the body of the request must be a JSON object"));
    }
    let kind = str_at(object, "/kind");
    let api_version = str_at(object, "/apiVersion");
    if kind.is_empty() {
        return Err(bad_request(format!("Object 'Kind' is missing in '{object}'")));
    }
    if kind != expected_kind || (!api_version.is_empty() && api_version != expected_api_version) {
        return Err(bad_request(format!(
            "{kind} in version \"{api_version}\" cannot be handled as a {expected_kind}: the body names another kind or version than the URL ({expected_api_version})"
        )));
    }
    Ok(())
}

/// Kinds whose names are DNS labels (no dots), and kinds whose names are any path segment.
const LABEL_NAMED: &[(&str, &str)] = &[("", "namespaces"), ("", "services")];
const PATH_SEGMENT_NAMED: &[&str] = &["rbac.authorization.k8s.io"];

fn validate_name(info: &ResourceInfo, name: &str) -> Result<(), ApiError> {
    if PATH_SEGMENT_NAMED.contains(&info.group.as_str()) {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
            return Err(invalid(
                info,
                name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": may not contain '/' or '%' and may not be '.' or '..'"),
            ));
        }
        return Ok(());
    }
    let label = LABEL_NAMED.iter().any(|(g, r)| *g == info.group && *r == info.plural);
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let part_ok = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| alnum(c) || c == '-')
            && part.starts_with(alnum)
            && part.ends_with(alnum)
    };
    let (ok, max, what) = if label {
        (
            part_ok(name),
            63,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            name.split('.').all(part_ok),
            253,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    if !ok {
        return Err(invalid(
            info,
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": {what}"),
        ));
    }
    if name.len() > max {
        return Err(invalid(
            info,
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be no more than {max} characters"),
        ));
    }
    Ok(())
}

/// A random 5-character suffix from kube's alphabet (no vowels, no confusable digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET.get(usize::from(*b) % ALPHABET.len()).copied().unwrap_or(b'x')))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Create

/// POST: create an object.
pub(crate) async fn create(shared: &Shared, target: &Target, caller: &Caller, body: Value) -> Result<Reply, ApiError> {
    let info = &target.info;
    check_type(&info.api_version(), &info.kind, &body)?;
    let now = now();
    let mut object = body;
    let generated = prepare_create_metadata(target, &mut object, &now)?;
    patch::record_update(None, &mut object, &caller.options.manager(), None, &now);
    finish_create(
        shared,
        target,
        caller,
        object,
        generated,
        caller.options.options_object("CreateOptions"),
        &now,
    )
    .await
}

/// System metadata of a new object; returns whether the name was generated.
fn prepare_create_metadata(target: &Target, object: &mut Value, now: &str) -> Result<bool, ApiError> {
    let info = &target.info;
    let url_namespace = target.namespace.clone();
    let body_namespace = str_at(object, "/metadata/namespace").to_owned();
    let body_rv = str_at(object, "/metadata/resourceVersion").to_owned();
    let Some(meta) = meta_mut(object) else {
        return Err(bad_request("the body of the request must be a JSON object"));
    };
    match &url_namespace {
        Some(ns) => {
            if !body_namespace.is_empty() && body_namespace != *ns {
                return Err(bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
        }
        None => {
            meta.remove("namespace");
        }
    }
    if !body_rv.is_empty() {
        return Err(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        ));
    }
    let mut name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let generated = name.is_empty() && !generate.is_empty();
    if generated {
        name = format!("{generate}{}", random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if name.is_empty() {
        return Err(invalid(
            info,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now));
    for key in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(key);
    }
    if info.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if info.status
        && let Some(map) = object.as_object_mut()
    {
        // Strategies reset status on create; defaulting then writes the kind's initial status.
        map.remove("status");
    }
    validate_name(info, &name)?;
    Ok(generated)
}

/// Server-set metadata that webhooks must not change.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
];

/// Put back the system metadata of `from` onto `object` (after webhooks mutated it).
fn restore_system_metadata(from: &Value, object: &mut Value) {
    let saved: Vec<(&str, Option<Value>)> = SYSTEM_METADATA
        .iter()
        .map(|k| (*k, from.pointer(&format!("/metadata/{k}")).cloned()))
        .collect();
    if let Some(meta) = meta_mut(object) {
        for (key, value) in saved {
            match value {
                Some(value) => meta.insert(key.to_owned(), value),
                None => meta.remove(key),
            };
        }
    }
}

async fn finish_create(
    shared: &Shared,
    target: &Target,
    caller: &Caller,
    mut object: Value,
    generated: bool,
    options: Value,
    now: &str,
) -> Result<Reply, ApiError> {
    let info = &target.info;
    let name = str_at(&object, "/metadata/name").to_owned();
    let uid = str_at(&object, "/metadata/uid").to_owned();
    defaults::apply(&info.group, &info.kind, &mut object);
    defaults::prepare_for_create(&info.group, &info.kind, &mut object, &uid);
    let (namespace_labels, configs) = {
        let state = shared.lock();
        let labels = match &target.namespace {
            Some(ns) => Some(namespace_lifecycle(&state, info, ns, &name)?),
            None => None,
        };
        if info.group.is_empty() && info.plural == "services" {
            assign_service_addresses(&state, &mut object);
        }
        (labels, state.webhook_configs())
    };
    let attributes = Attributes {
        kind: target.gvk(),
        resource: target.gvr(),
        sub_resource: None,
        name: if generated { String::new() } else { name.clone() },
        namespace: target.namespace.clone(),
        operation: Operation::Create,
        user: caller.user.clone(),
        object: Some(object.clone()),
        old_object: None,
        dry_run: caller.options.dry_run,
        options: Some(options),
    };
    let Outcome {
        object: mutated,
        warnings,
        ..
    } = shared.dispatcher.admit(&configs, attributes, namespace_labels).await?;
    if let Some(mut mutated) = mutated {
        restore_system_metadata(&object, &mut mutated);
        defaults::apply(&info.group, &info.kind, &mut mutated);
        object = mutated;
    }
    server_managed(info, &mut object, None, now)?;
    if caller.options.dry_run {
        return Ok(Reply {
            code: 201,
            body: response_object(info, object),
            warnings,
        });
    }
    let stored = {
        let mut state = shared.lock();
        if let Some(ns) = &target.namespace {
            namespace_lifecycle(&state, info, ns, &name)?;
        }
        let stored = state.store.create(target.key(&name), object)?;
        after_write(&mut state, info);
        stored
    };
    Ok(Reply {
        code: 201,
        body: response_object(info, stored),
        warnings,
    })
}

/// kube's NamespaceLifecycle admission: the namespace must exist and not be terminating.
/// Returns its labels (for webhooks' namespaceSelector).
fn namespace_lifecycle(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let key = ObjectKey::new("", "namespaces", "", namespace);
    let Some(ns) = state.store.get(&key) else {
        return Err(not_found("", "namespaces", namespace));
    };
    if is_being_deleted(ns) {
        let message = format!("unable to create new content in namespace {namespace} because it is being terminated");
        let mut err = ApiError::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {message}", info.qualified()),
        );
        let mut details = json!({
            "name": name,
            "kind": info.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": message, "field": "metadata.namespace"}],
        });
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
        err.details = Some(details);
        return Err(err);
    }
    Ok(crate::selectors::labels_of(ns))
}

fn assign_service_addresses(state: &State, service: &mut Value) {
    let services = state.store.list("", "services", None);
    let ips: BTreeSet<Ipv4Addr> = services
        .iter()
        .filter_map(|s| str_at(s, "/spec/clusterIP").parse().ok())
        .collect();
    let ports: BTreeSet<u16> = services
        .iter()
        .filter_map(|s| s.pointer("/spec/ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    defaults::assign_service_addresses(service, &ips, &ports);
}

/// The labels webhooks' namespaceSelector sees: those of the request's namespace, or for a
/// Namespace itself its own (kube judges a Namespace by its labels).
fn selector_namespace_labels(
    state: &State,
    target: &Target,
    current: &Value,
) -> Option<std::collections::BTreeMap<String, String>> {
    if target.info.group.is_empty() && target.info.plural == "namespaces" {
        return Some(crate::selectors::labels_of(current));
    }
    target.namespace.as_deref().and_then(|ns| state.namespace_labels(ns))
}

/// What the server itself maintains on some kinds: a CRD's status (the CRD controllers'
/// outcome) after validating what it defines.
fn server_managed(
    info: &ResourceInfo,
    object: &mut Value,
    previous: Option<&Value>,
    now: &str,
) -> Result<(), ApiError> {
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        crate::discovery::crd_resources(object)?;
        let status = crate::discovery::crd_status(object, previous, now);
        if let Some(map) = object.as_object_mut() {
            map.insert("status".into(), status);
        }
    }
    Ok(())
}

/// Bookkeeping after a stored write: CRDs change what is served.
fn after_write(state: &mut State, info: &ResourceInfo) {
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        state.refresh_custom_resources();
    }
}

// ---------------------------------------------------------------------------------------------
// Update (PUT, PATCH; main resource and subresources)

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
        let explicit_rv = resource_version(&new_addressed);
        if explicit_rv.is_some_and(|rv| rv != current_rv) {
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
            if explicit_rv.is_some() {
                return Err(conflict(&info.group, &info.plural, &name));
            }
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

// ---------------------------------------------------------------------------------------------
// Scale

fn scale_replicas(scale: &Value) -> i64 {
    scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)
}

/// The autoscaling/v1 Scale of a scalable object (metadata without labels, like kube's).
pub(crate) fn scale_of(info: &ResourceInfo, object: &Value) -> Value {
    let Some(paths) = &info.scale else { return Value::Null };
    let spec = object
        .pointer(&paths.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = object
        .pointer(&paths.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = match &paths.selector {
        Some(SelectorPath::Object(pointer)) => object.pointer(pointer).map(selector_string).unwrap_or_default(),
        Some(SelectorPath::Text(pointer)) => str_at(object, pointer).to_owned(),
        None => String::new(),
    };
    let mut metadata = Map::new();
    for key in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = object.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.to_owned(), v.clone());
        }
    }
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {},
        "status": {"replicas": status},
    });
    if spec != 0 {
        scale["spec"]["replicas"] = json!(spec);
    }
    if !selector.is_empty() {
        scale["status"]["selector"] = json!(selector);
    }
    scale
}

/// A `LabelSelector` object in kube's string form (requirements sorted by key).
pub(crate) fn selector_string(selector: &Value) -> String {
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in expressions {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_owned();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let text = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            requirements.push((key, text));
        }
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------------------------
// Delete

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

// ---------------------------------------------------------------------------------------------
// Seeding

/// The objects every cluster has from the start: the standard namespaces and the `kubernetes`
/// Service.
pub(crate) fn seed(state: &mut State) {
    let now = now();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        seed_one(
            state,
            "",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            &now,
        );
    }
    seed_one(
        state,
        "",
        "services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        }),
        &now,
    );
}

fn seed_one(state: &mut State, group: &str, plural: &str, mut object: Value, now: &str) {
    let Some(info) = state.registry.any_version(group, plural).cloned() else {
        return;
    };
    let namespace = str_at(&object, "/metadata/namespace").to_owned();
    let target = Target {
        info: info.clone(),
        namespace: (!namespace.is_empty()).then_some(namespace),
        name: None,
        subresource: None,
    };
    if prepare_create_metadata(&target, &mut object, now).is_err() {
        return;
    }
    let name = str_at(&object, "/metadata/name").to_owned();
    let uid = str_at(&object, "/metadata/uid").to_owned();
    defaults::apply(&info.group, &info.kind, &mut object);
    defaults::prepare_for_create(&info.group, &info.kind, &mut object, &uid);
    if info.plural == "services" {
        assign_service_addresses(state, &mut object);
    }
    patch::record_update(None, &mut object, "kube-apiserver", None, now);
    let _ = state.store.create(target.key(&name), object);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_like_kube() {
        let selector = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        });
        assert_eq!(
            selector_string(&selector),
            "app=shop,!canary,env in (dev,prod),tier=web"
        );
    }

    #[test]
    fn scale_has_no_labels_and_a_string_selector() {
        let info = crate::discovery::Registry::new()
            .lookup("apps", "v1", "deployments")
            .cloned()
            .unwrap();
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "t", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        assert_eq!(
            scale_of(&info, &d),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7", "creationTimestamp": "t"},
                   "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}})
        );
    }

    #[test]
    fn names_are_validated_per_kind() {
        let registry = crate::discovery::Registry::new();
        let cm = registry.lookup("", "v1", "configmaps").unwrap();
        let ns = registry.lookup("", "v1", "namespaces").unwrap();
        let role = registry
            .lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
            .unwrap();
        assert!(validate_name(cm, "a.b-c").is_ok());
        let err = validate_name(cm, "Bad_Name").unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
            "{}",
            err.message
        );
        assert!(validate_name(ns, "a.b").is_err());
        assert!(validate_name(role, "system:controller:x").is_ok());
        let deploy = registry.lookup("apps", "v1", "deployments").unwrap();
        let err = validate_name(deploy, "-x").unwrap_err();
        assert!(
            err.message.starts_with("Deployment.apps \"-x\" is invalid"),
            "{}",
            err.message
        );
    }

    #[test]
    fn managed_field_times_do_not_make_a_write() {
        let a = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "1"}]}, "data": {"a": "1"}});
        let b = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "2"}]}, "data": {"a": "1"}});
        assert!(unchanged(&a, &b));
        let c = json!({"metadata": {"managedFields": [{"manager": "m", "time": "2"}]}, "data": {"a": "2"}});
        assert!(!unchanged(&a, &c));
    }

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
