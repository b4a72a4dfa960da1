//! Object identities, the Guard's inventory, and the live snapshot the plan reads.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desired::DesiredObject;

/// A group and kind (a custom resource's kind is served once its CRD is Established).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKind {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl GroupKind {
    /// Build from borrowed parts.
    pub fn new(group: &str, kind: &str) -> Self {
        GroupKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// Identity of one object across desired state, inventory and the cluster. The version is not
/// part of it: the API server serves one object under every version of its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (None for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Build from borrowed parts.
    pub fn new(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The key of a desired object.
    pub fn of(object: &DesiredObject) -> Self {
        ObjectKey::new(&object.group, &object.kind, object.namespace.as_deref(), &object.name)
    }

    /// Its group and kind.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::new(&self.group, &self.kind)
    }

    /// The object as audit records name it, served at `version`.
    pub fn audit_ref(&self, version: &str) -> crate::audit::ObjectRef {
        crate::audit::ObjectRef {
            group: self.group.clone(),
            version: version.to_owned(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            subresource: None,
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `Kind.group namespace/name`, like kubectl's `kind.group/name` but with the namespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " {ns}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

/// The Guard's `status.inventory` entry is the API type; the plan adds identity helpers.
pub use crate::api::InventoryEntry;

impl InventoryEntry {
    /// Its identity.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.group, &self.kind, self.namespace.as_deref(), &self.name)
    }
}

/// One object as the cluster has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    /// Its identity.
    pub key: ObjectKey,
    /// The object as the API server returned it (defaults, managedFields, status and all).
    pub object: Value,
}

/// What the cluster has for the objects a plan looks at: every desired and inventory key the
/// caller could read. A key that is absent means "not in the cluster", so kinds that could not
/// be read must be marked with [`LiveSnapshot::mark_unknown`], or the plan would forget their
/// objects.
#[derive(Debug, Clone, Default)]
pub struct LiveSnapshot {
    objects: HashMap<ObjectKey, Value>,
    unknown: Vec<GroupKind>,
}

impl LiveSnapshot {
    /// An empty snapshot (nothing exists).
    pub fn new() -> Self {
        LiveSnapshot::default()
    }

    /// Record one live object (a later insert of the same key wins).
    pub fn insert(&mut self, live: LiveObject) {
        self.objects.insert(live.key, live.object);
    }

    /// Record that objects of this kind could not be read: the plan applies desired ones
    /// anyway (server-side apply is idempotent) and never prunes or forgets such objects.
    pub fn mark_unknown(&mut self, group_kind: GroupKind) {
        if !self.unknown.contains(&group_kind) {
            self.unknown.push(group_kind);
        }
    }

    /// The live copy of an object, if the cluster has it.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Whether the kind of `key` could not be read.
    pub fn is_unknown(&self, key: &ObjectKey) -> bool {
        self.unknown
            .iter()
            .any(|gk| gk.group == key.group && gk.kind == key.kind)
    }

    /// Number of live objects recorded.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when no live object is recorded.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

impl FromIterator<LiveObject> for LiveSnapshot {
    fn from_iter<I: IntoIterator<Item = LiveObject>>(iter: I) -> Self {
        let mut snapshot = LiveSnapshot::new();
        for live in iter {
            snapshot.insert(live);
        }
        snapshot
    }
}
