//! Object identity -> enforced desired object, consulted by every admission request.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::{DesiredObject, DesiredSet, GuardPolicy};
use crate::source::{Links, Revision};

/// Two Guards declare the same object. The first owner keeps it (README "Multi-tenancy"): the
/// Guard that applied it first, which the live object's `driftguard.io/guard` annotation names;
/// where a request carries no such object (CREATE, `/scale`), the Guard created first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `Kind namespace/name`.
    pub object: String,
    /// Guard that keeps the object.
    pub kept_by: String,
    /// Guard whose declaration is ignored.
    pub ignored_in: String,
}

/// A managed object found in the index.
#[derive(Debug, Clone, Copy)]
pub struct Managed<'a> {
    /// Its Guard.
    pub guard: &'a GuardPolicy,
    /// The revision being enforced.
    pub revision: &'a Revision,
    /// The desired object.
    pub object: &'a DesiredObject,
    /// Links to Git at the revision, when the source has them.
    pub links: Option<&'a Links>,
}

impl Managed<'_> {
    /// The link to where Git declares the field at `path` (the object, for None), if any.
    pub fn link_of(&self, path: Option<&crate::drift::FieldPath>) -> Option<String> {
        self.object.link_of(self.links, path)
    }
}

/// Lookup table from (group, resource, namespace, name) to desired objects.
///
/// Keys are hashed from borrowed strings so a lookup allocates nothing; buckets hold
/// (set, object) positions and the full identity is compared on a hit.
#[derive(Debug, Default)]
pub struct AdmissionIndex {
    sets: Vec<Arc<DesiredSet>>,
    buckets: HashMap<u64, Vec<(u32, u32)>>,
    hasher: RandomState,
}

impl AdmissionIndex {
    /// Index the enforced sets, one per Guard. An object claimed by several Guards is indexed
    /// for each of them, the Guard created first (then by id) ahead: [`AdmissionIndex::lookup_owned`]
    /// picks the one the live object names. Each such claim is reported once.
    pub fn build(mut sets: Vec<Arc<DesiredSet>>) -> (Self, Vec<Conflict>) {
        sets.sort_by(|a, b| first_owner_order(&a.guard, &b.guard));
        let mut index = AdmissionIndex {
            sets: Vec::new(),
            buckets: HashMap::new(),
            hasher: RandomState::new(),
        };
        let mut conflicts = Vec::new();
        for (set_pos, set) in sets.iter().enumerate() {
            for (obj_pos, object) in set.objects.iter().enumerate() {
                if let Some(owner) = index.find(&sets, object) {
                    conflicts.push(Conflict {
                        object: object.display_name(),
                        kept_by: owner.guard.id.to_string(),
                        ignored_in: set.guard.id.to_string(),
                    });
                }
                let hash = index.hash(
                    &object.group,
                    &object.resource,
                    object.namespace.as_deref(),
                    &object.name,
                );
                index
                    .buckets
                    .entry(hash)
                    .or_default()
                    .push((pos_u32(set_pos), pos_u32(obj_pos)));
            }
        }
        index.sets = sets;
        (index, conflicts)
    }

    fn find<'a>(&self, sets: &'a [Arc<DesiredSet>], object: &DesiredObject) -> Option<&'a DesiredSet> {
        let hash = self.hash(
            &object.group,
            &object.resource,
            object.namespace.as_deref(),
            &object.name,
        );
        self.buckets.get(&hash)?.iter().find_map(|&(s, o)| {
            let set = sets.get(s as usize)?;
            let other = set.objects.get(o as usize)?;
            (other.group == object.group
                && other.resource == object.resource
                && other.namespace == object.namespace
                && other.name == object.name)
                .then_some(&**set)
        })
    }

    fn hash(&self, group: &str, resource: &str, namespace: Option<&str>, name: &str) -> u64 {
        self.hasher.hash_one((group, resource, namespace.unwrap_or(""), name))
    }

    /// The managed object with this identity, if any Guard declares it. `namespace` is None
    /// (or empty) for cluster-scoped objects. Of several claims, the Guard created first.
    pub fn lookup(&self, group: &str, resource: &str, namespace: Option<&str>, name: &str) -> Option<Managed<'_>> {
        self.lookup_owned(group, resource, namespace, name, || None)
    }

    /// [`AdmissionIndex::lookup`], where several Guards claim the object, picking the one
    /// `owner` names (the live object's `driftguard.io/guard` annotation, asked for only then);
    /// when it names none of them, the Guard created first.
    pub fn lookup_owned(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        owner: impl FnOnce() -> Option<String>,
    ) -> Option<Managed<'_>> {
        let namespace = namespace.filter(|ns| !ns.is_empty());
        let hash = self.hash(group, resource, namespace, name);
        let mut claims = self.buckets.get(&hash)?.iter().filter_map(|&(s, o)| {
            let set = self.sets.get(s as usize)?;
            let object = set.objects.get(o as usize)?;
            (object.group == group
                && object.resource == resource
                && object.namespace.as_deref() == namespace
                && object.name == name)
                .then_some(Managed {
                    guard: &set.guard,
                    revision: &set.revision,
                    object,
                    links: set.links.as_ref(),
                })
        });
        let first = claims.next()?;
        let mut others = claims.peekable();
        if others.peek().is_none() {
            return Some(first); // one claim: the hot path asks nothing more
        }
        let Some(owner) = owner() else {
            return Some(first);
        };
        Some(
            std::iter::once(first)
                .chain(others)
                .find(|m| m.guard.id.to_string() == owner)
                .unwrap_or(first),
        )
    }

    /// The indexed sets (one per Guard).
    pub fn sets(&self) -> &[Arc<DesiredSet>] {
        &self.sets
    }

    /// Number of indexed claims (an object two Guards declare counts twice).
    pub fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }

    /// True when no object is managed.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The fallback first owner: the Guard created first (RFC 3339 timestamps sort as text; a
/// Guard without one, as in standalone mode, after those with one), then by id.
fn first_owner_order(a: &GuardPolicy, b: &GuardPolicy) -> std::cmp::Ordering {
    let created = |g: &GuardPolicy| (g.created.is_none(), g.created.clone());
    created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id))
}

fn pos_u32(pos: usize) -> u32 {
    // A Guard with more than 4 billion objects cannot be rendered in memory anyway.
    u32::try_from(pos).unwrap_or(u32::MAX)
}
