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
//! Layout: this module holds the types, create, the shared helpers and seeding; `update`
//! (PUT/PATCH, all subresources), `scale` (the Scale view) and `delete`.
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

mod delete;
mod scale;
mod update;

use crate::admission::{Attributes, Gvk, Gvr, Operation, Outcome};
use crate::discovery::ResourceInfo;
use crate::patch::{self, PatchType};
use crate::store::{ObjectKey, is_being_deleted, not_found, str_at};
use crate::{ApiError, UserInfo, defaults};
pub(crate) use delete::delete;
pub(crate) use scale::scale_of;
pub(crate) use update::{set_pointer, update};

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

/// kube-apiserver's size limits on what it stores: ConfigMap and Secret payloads (1 MiB), all
/// annotations of an object (256 KiB), and etcd's request limit (1.5 MiB) on the whole object.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
const MAX_STORED_BYTES: usize = 1536 * 1024;

/// Size validation, as kube-apiserver's (422) and etcd's (500 `request is too large`).
pub(crate) fn validate_sizes(info: &ResourceInfo, name: &str, object: &Value) -> Result<(), ApiError> {
    let text_len = |map: Option<&Value>| -> usize {
        map.and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum())
            .unwrap_or(0)
    };
    let too_long =
        |field: &str, max: usize| invalid(info, name, field, &format!("Too long: must have at most {max} bytes"));
    if info.group.is_empty() {
        match info.plural.as_str() {
            "configmaps" if text_len(object.get("data")) + text_len(object.get("binaryData")) > MAX_PAYLOAD_BYTES => {
                return Err(too_long("[]", MAX_PAYLOAD_BYTES));
            }
            "secrets" if text_len(object.get("data")) > MAX_PAYLOAD_BYTES => {
                return Err(too_long("data", MAX_PAYLOAD_BYTES));
            }
            _ => {}
        }
    }
    if text_len(object.pointer("/metadata/annotations")) > MAX_ANNOTATIONS_BYTES {
        return Err(too_long("metadata.annotations", MAX_ANNOTATIONS_BYTES));
    }
    if serde_json::to_vec(object).map_or(0, |b| b.len()) > MAX_STORED_BYTES {
        return Err(ApiError::new(500, "InternalError", "etcdserver: request is too large"));
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
    validate_sizes(info, &name, &object)?;
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
}
