//! Objects and their history, like etcd behind kube-apiserver: objects keyed by
//! (group, resource, namespace, name), one global revision counter whose value is every
//! object's `metadata.resourceVersion` (a string of an integer), optimistic concurrency on
//! writes, and a bounded window of past events that watches replay from.
//!
//! This module is synchronous and knows nothing of HTTP: the server holds the store behind one
//! mutex and never across an `.await`.
//!
//! # Simplifications
//! - Lists always answer the current state: `resourceVersion`/`resourceVersionMatch` on a list
//!   are accepted and ignored, and `limit`/`continue` are ignored (everything comes in one page,
//!   without a `continue` token), which every client accepts.
//! - A watch from a resourceVersion newer than the store's starts at the current revision
//!   instead of waiting for it.
//! - The history window counts events, not time (default 1000, `ServerOptions::watch_history`);
//!   a watch from before the window gets an `ERROR` event with a 410 `Expired` Status, exactly
//!   like kube's watch cache.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::ApiError;
use crate::discovery::qualified_resource;
use crate::selectors::{FieldSelector, LabelSelector, labels_of};

/// Where an object lives. `namespace` is "" for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// API group ("" for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Namespace, "" for cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key.
    pub fn new(group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `deployments.apps`.
    pub fn qualified(&self) -> String {
        qualified_resource(&self.group, &self.resource)
    }

    fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces"
    }
}

/// Type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// ADDED.
    Added,
    /// MODIFIED.
    Modified,
    /// DELETED.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the history window and broadcast to watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The revision this change created.
    pub revision: u64,
    /// What happened.
    pub event_type: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for a deletion: its last state, with the deletion's
    /// resourceVersion).
    pub object: Value,
    /// The object before the change (None for ADDED).
    pub previous: Option<Value>,
}

/// The result of an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The object as stored.
    Stored(Value),
    /// The update removed the last finalizer of an object being deleted, so it is gone; this
    /// is its last state.
    Deleted(Value),
}

/// A watch's starting point: events to replay, then the live feed.
#[derive(Debug)]
pub struct Subscription {
    /// The revision the watch starts after.
    pub start: u64,
    /// Stored events after the requested revision.
    pub replay: Vec<Arc<Event>>,
    /// Everything after `start`.
    pub receiver: broadcast::Receiver<Arc<Event>>,
}

/// The objects.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    revision: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The newest revision no longer in `history` (0 while nothing was dropped).
    compacted: u64,
    sender: broadcast::Sender<Arc<Event>>,
}

/// How many events a slow watcher may lag before it is cut off (it then re-lists, as with kube).
const BROADCAST_CAPACITY: usize = 4096;

impl Store {
    /// An empty store keeping the last `history_limit` events for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Store {
            objects: BTreeMap::new(),
            revision: 1,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            sender,
        }
    }

    /// The current revision (the resourceVersion of lists).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of a resource, in one namespace or (None) all, ordered by namespace and name.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == group && k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v)
            .collect()
    }

    /// Every object with its key.
    pub fn all(&self) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.objects.iter()
    }

    /// Whether any object lives in `namespace`.
    pub fn namespace_has_objects(&self, namespace: &str) -> bool {
        self.objects.keys().any(|k| k.namespace == namespace)
    }

    /// A live feed of every change (the controllers' view; watches use [`Store::subscribe`]).
    pub fn feed(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Store a new object, assigning its resourceVersion. 409 AlreadyExists if taken.
    pub fn create(&mut self, key: ObjectKey, mut object: Value) -> Result<Value, ApiError> {
        if self.objects.contains_key(&key) {
            return Err(already_exists(&key.group, &key.resource, &key.name));
        }
        let revision = self.next_revision();
        set_resource_version(&mut object, revision);
        self.objects.insert(key.clone(), object.clone());
        self.record(revision, EventType::Added, key, object.clone(), None);
        Ok(object)
    }

    /// Replace an object if it still is at `expected` (its resourceVersion when read): 409
    /// Conflict otherwise. An update that leaves an object being deleted without finalizers
    /// deletes it (kube's "delete during update").
    pub fn update(&mut self, key: &ObjectKey, mut object: Value, expected: u64) -> Result<Written, ApiError> {
        let Some(current) = self.objects.get(key) else {
            return Err(not_found(&key.group, &key.resource, &key.name));
        };
        if resource_version(current) != Some(expected) {
            return Err(conflict(&key.group, &key.resource, &key.name));
        }
        let previous = current.clone();
        let revision = self.next_revision();
        set_resource_version(&mut object, revision);
        self.objects.insert(key.clone(), object.clone());
        self.record(
            revision,
            EventType::Modified,
            key.clone(),
            object.clone(),
            Some(previous),
        );
        if should_delete(key, &object) {
            return self.delete(key, None).map(Written::Deleted);
        }
        Ok(Written::Stored(object))
    }

    /// Remove an object now (if it is still at `expected`, when given). Returns its last state
    /// carrying the deletion's resourceVersion.
    pub fn delete(&mut self, key: &ObjectKey, expected: Option<u64>) -> Result<Value, ApiError> {
        let Some(current) = self.objects.get(key) else {
            return Err(not_found(&key.group, &key.resource, &key.name));
        };
        if expected.is_some_and(|rv| resource_version(current) != Some(rv)) {
            return Err(conflict(&key.group, &key.resource, &key.name));
        }
        let Some(previous) = self.objects.remove(key) else {
            return Err(not_found(&key.group, &key.resource, &key.name));
        };
        let revision = self.next_revision();
        let mut last = previous.clone();
        set_resource_version(&mut last, revision);
        self.record(revision, EventType::Deleted, key.clone(), last.clone(), Some(previous));
        Ok(last)
    }

    /// Start a watch after `from` (None: after the current revision). 410 Expired when `from`
    /// is older than the history window.
    pub fn subscribe(&self, from: Option<u64>) -> Result<Subscription, ApiError> {
        let receiver = self.sender.subscribe();
        let Some(from) = from else {
            return Ok(Subscription {
                start: self.revision,
                replay: Vec::new(),
                receiver,
            });
        };
        if from < self.compacted {
            return Err(expired(from, self.compacted));
        }
        let replay = self.history.iter().filter(|e| e.revision > from).cloned().collect();
        Ok(Subscription {
            start: from.min(self.revision).max(self.compacted),
            replay,
            receiver,
        })
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(&mut self, revision: u64, event_type: EventType, key: ObjectKey, object: Value, previous: Option<Value>) {
        let event = Arc::new(Event {
            revision,
            event_type,
            key,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.revision;
            }
        }
        // Nobody listening is fine: the history keeps it for later watches.
        let _ = self.sender.send(event);
    }
}

/// Whether an update must become a deletion: being deleted and no finalizer left (for a
/// Namespace also no `spec.finalizers`, which the namespace controller clears).
pub fn should_delete(key: &ObjectKey, object: &Value) -> bool {
    if !is_being_deleted(object) || !finalizers(object).is_empty() {
        return false;
    }
    !key.is_namespace() || string_list(object, "/spec/finalizers").is_empty()
}

/// What a watch asked to see.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// Group.
    pub group: String,
    /// Resource.
    pub resource: String,
    /// Namespace (None: all).
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// Whether `object` is in view.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&labels_of(object)) && self.fields.matches(object)
    }

    /// What this watch sees of `event`, like kube's watch cache: an object entering the
    /// selection is ADDED, one leaving it is DELETED (its previous state at the event's
    /// resourceVersion).
    pub fn translate(&self, event: &Event) -> Option<(EventType, Value)> {
        if event.key.group != self.group
            || event.key.resource != self.resource
            || self.namespace.as_ref().is_some_and(|ns| *ns != event.key.namespace)
        {
            return None;
        }
        match event.event_type {
            EventType::Added => self
                .matches(&event.object)
                .then(|| (EventType::Added, event.object.clone())),
            EventType::Deleted => {
                let seen = event.previous.as_ref().unwrap_or(&event.object);
                self.matches(seen).then(|| (EventType::Deleted, event.object.clone()))
            }
            EventType::Modified => {
                let now = self.matches(&event.object);
                let before = event.previous.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, event.object.clone())),
                    (false, true) => Some((EventType::Added, event.object.clone())),
                    (true, false) => {
                        let mut old = event.previous.clone().unwrap_or(Value::Null);
                        set_resource_version(&mut old, event.revision);
                        Some((EventType::Deleted, old))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// `metadata.resourceVersion` as a number.
pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
}

/// Set `metadata.resourceVersion`.
pub fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    string_list(object, "/metadata/finalizers")
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_being_deleted(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// A string at a JSON pointer ("" when absent).
pub fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A list of strings at a JSON pointer.
pub fn string_list(object: &Value, pointer: &str) -> Vec<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}

fn with_details(mut err: ApiError, group: &str, resource: &str, name: &str) -> ApiError {
    err.details = Some(details(group, resource, name));
    err
}

/// 404 `configmaps "x" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
    let message = format!("{} \"{name}\" not found", qualified_resource(group, resource));
    with_details(ApiError::new(404, "NotFound", message), group, resource, name)
}

/// 409 `configmaps "x" already exists`.
pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
    let message = format!("{} \"{name}\" already exists", qualified_resource(group, resource));
    with_details(ApiError::new(409, "AlreadyExists", message), group, resource, name)
}

/// 409 Conflict with kube's message: `Operation cannot be fulfilled on deployments.apps "web":
/// <why>`.
pub fn conflict_because(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {why}",
        qualified_resource(group, resource)
    );
    with_details(ApiError::new(409, "Conflict", message), group, resource, name)
}

/// 409 Conflict on a stale resourceVersion.
pub fn conflict(group: &str, resource: &str, name: &str) -> ApiError {
    conflict_because(
        group,
        resource,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// 410 Expired: the watch asked for history the window no longer has.
pub fn expired(requested: u64, oldest: u64) -> ApiError {
    ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default", "labels": labels}})
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("", "configmaps", "default", name)
    }

    #[test]
    fn writes_assign_increasing_resource_versions_and_detect_conflicts() {
        let mut store = Store::new(10);
        let a = store.create(key("a"), cm("a", json!({}))).unwrap();
        let rv = resource_version(&a).unwrap();
        assert_eq!(rv, store.revision());
        assert_eq!(store.create(key("a"), cm("a", json!({}))).unwrap_err().code, 409);
        let Written::Stored(b) = store.update(&key("a"), a.clone(), rv).unwrap() else {
            panic!("stored")
        };
        assert!(resource_version(&b).unwrap() > rv);
        let err = store.update(&key("a"), a, rv).unwrap_err();
        assert_eq!(err.reason, "Conflict");
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let gone = store.delete(&key("a"), None).unwrap();
        assert_eq!(resource_version(&gone), Some(store.revision()));
        let err = store.delete(&key("a"), None).unwrap_err();
        assert_eq!(err.code, 404);
        assert_eq!(err.details, Some(json!({"name": "a", "kind": "configmaps"})));
    }

    #[test]
    fn removing_the_last_finalizer_of_a_deleting_object_deletes_it() {
        let mut store = Store::new(10);
        let mut obj = cm("f", json!({}));
        obj["metadata"]["finalizers"] = json!(["x"]);
        obj["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let stored = store.create(key("f"), obj).unwrap();
        let mut cleared = stored.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        let rv = resource_version(&stored).unwrap();
        assert!(matches!(
            store.update(&key("f"), cleared, rv).unwrap(),
            Written::Deleted(_)
        ));
        assert!(store.get(&key("f")).is_none());
    }

    #[test]
    fn namespaces_also_wait_for_spec_finalizers() {
        let k = ObjectKey::new("", "namespaces", "", "team");
        let ns =
            json!({"metadata": {"name": "team", "deletionTimestamp": "x"}, "spec": {"finalizers": ["kubernetes"]}});
        assert!(!should_delete(&k, &ns));
        let ns = json!({"metadata": {"name": "team", "deletionTimestamp": "x"}, "spec": {"finalizers": []}});
        assert!(should_delete(&k, &ns));
    }

    #[test]
    fn subscriptions_replay_history_or_expire() {
        let mut store = Store::new(2);
        for name in ["a", "b", "c"] {
            store.create(key(name), cm(name, json!({}))).unwrap();
        }
        // Revisions 2, 3, 4; the window keeps 3 and 4.
        let sub = store.subscribe(Some(2)).unwrap();
        assert_eq!(sub.replay.iter().map(|e| e.revision).collect::<Vec<_>>(), [3, 4]);
        let err = store.subscribe(Some(1)).unwrap_err();
        assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
        assert_eq!(err.message, "too old resource version: 1 (2)");
        assert!(store.subscribe(Some(4)).unwrap().replay.is_empty());
    }

    #[test]
    fn filters_turn_selection_changes_into_added_and_deleted() {
        let filter = WatchFilter {
            group: String::new(),
            resource: "configmaps".into(),
            namespace: Some("default".into()),
            labels: LabelSelector::parse("app=web").unwrap(),
            fields: FieldSelector::default(),
        };
        let mut store = Store::new(10);
        let mut feed = store.feed();
        let a = store.create(key("a"), cm("a", json!({"app": "web"}))).unwrap();
        let rv = resource_version(&a).unwrap();
        let mut b = a.clone();
        b["metadata"]["labels"]["app"] = json!("api");
        store.update(&key("a"), b, rv).unwrap();
        let added = feed.try_recv().unwrap();
        assert_eq!(filter.translate(&added).unwrap().0, EventType::Added);
        let left = feed.try_recv().unwrap();
        let (kind, object) = filter.translate(&left).unwrap();
        assert_eq!(kind, EventType::Deleted);
        assert_eq!(object["metadata"]["labels"]["app"], "web");
        assert_eq!(resource_version(&object), Some(left.revision));
        let other = WatchFilter {
            namespace: Some("other".into()),
            ..filter
        };
        assert!(other.translate(&left).is_none());
    }
}
