//! One Guard's desired objects at one revision, normalized like the API server stores them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::{GUARD_ANNOTATION, MANAGED_LABEL};
use crate::drift::IgnorePath;
use crate::drift::normalize::normalize_desired;
use crate::render::{FieldLines, Manifest, Origin};
use crate::source::{Links, Revision};

use super::kinds::{self, ApiResources};
use super::{DesiredError, GuardPolicy};

/// One object Git declares.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Resource (plural) it is served as.
    pub resource: String,
    /// Namespace (None for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The normalized object as Git declares it, kept as its compact JSON text: a parsed tree
    /// costs about 15 times the bytes (BTreeMap nodes sized for 11 entries, most maps holding
    /// 2), which at 10,000 objects broke the memory budget of DESIGN.md section 10. Parse it
    /// with [`DesiredObject::value`]; server-side apply sends the text as it is.
    pub object: Box<RawValue>,
    /// Where in Git it is declared.
    pub origin: Origin,
    /// Where its fields are written (plain YAML; empty when unknown).
    pub fields: FieldLines,
    /// Ignore pointers of the Guard that select this object.
    pub ignore: Arc<[IgnorePath]>,
    /// Delegated pointers of the Guard that select this object (None: nothing delegated).
    pub delegation: Option<Arc<super::ObjectDelegation>>,
}

/// Fields whose values are never echoed (messages, warnings, audit, diffs), per (group, kind):
/// top-level keys.
static SENSITIVE: &[(&str, &str, &[&str])] = &[("", "Secret", &["data", "stringData"])];

impl DesiredObject {
    /// The object as a JSON tree (parsed from its stored text on every call).
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.object.get())
    }

    /// True when the value at `path` must never be shown (Secret data).
    pub fn is_sensitive(&self, path: &crate::drift::FieldPath) -> bool {
        SENSITIVE
            .iter()
            .filter(|(group, kind, _)| *group == self.group && *kind == self.kind)
            .any(|(_, _, keys)| keys.iter().any(|k| path.starts_with_key(k)))
    }

    /// Where Git declares the field at `path`: its line when known (plain YAML), else the
    /// object's origin.
    pub fn origin_of(&self, path: &crate::drift::FieldPath) -> Origin {
        match (self.origin.document, self.fields.line_of(path)) {
            (None, Some(line)) if self.origin.line > 0 => Origin {
                line,
                ..self.origin.clone()
            },
            _ => self.origin.clone(),
        }
    }

    /// The link to where Git declares the field at `path` (or the object, for None), when
    /// `links` is given.
    pub fn link_of(&self, links: Option<&Links>, path: Option<&crate::drift::FieldPath>) -> Option<String> {
        let links = links?;
        let origin = match path {
            Some(path) => self.origin_of(path),
            None => self.origin.clone(),
        };
        Some(links.link(&origin.file, if origin.document.is_some() { 0 } else { origin.line }))
    }

    /// `Kind namespace/name` or `Kind name`, for messages.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {}/{}", self.kind, ns, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// Why a rendered object is not desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `metadata.generateName` without a name: the API server picks the name, so Git cannot
    /// guard it by name.
    GenerateName,
    /// A Helm or Argo CD hook (`helm.sh/hook` or `argocd.argoproj.io/hook`, the annotation's
    /// value): run by a tool at deploy time, not state to hold the cluster to.
    Hook(String),
}

/// A rendered object left out of the desired set, with where it is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where Git declares it.
    pub origin: Origin,
    /// `Kind name` (or `Kind generateName*`).
    pub object: String,
    /// Why it was left out.
    pub reason: SkipReason,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            SkipReason::GenerateName => write!(
                f,
                "{}: {} skipped: generateName objects cannot be guarded by name (give it metadata.name to guard it)",
                self.origin, self.object
            ),
            SkipReason::Hook(annotation) => write!(
                f,
                "{}: {} skipped: {annotation} hooks run at deploy time and are not desired state",
                self.origin, self.object
            ),
        }
    }
}

/// Annotations that make an object a deploy-time hook, in every renderer.
const HOOK_ANNOTATIONS: [&str; 2] = ["helm.sh/hook", "argocd.argoproj.io/hook"];

/// Why `object` is not desired state, if it is not.
fn skip_reason(object: &Value) -> Option<SkipReason> {
    let metadata = object.get("metadata")?;
    let annotations = metadata.get("annotations").and_then(Value::as_object);
    if let Some(hook) = HOOK_ANNOTATIONS
        .iter()
        .find(|a| annotations.is_some_and(|map| map.contains_key(**a)))
    {
        return Some(SkipReason::Hook((*hook).to_owned()));
    }
    let named = metadata
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let generated = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    (!named && generated).then_some(SkipReason::GenerateName)
}

fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let name = match text("/metadata/name") {
        "" => format!("{}*", text("/metadata/generateName")),
        name => name.to_owned(),
    };
    format!("{} {name}", text("/kind"))
}

/// Desired objects of one Guard at one revision.
#[derive(Debug)]
pub struct DesiredSet {
    /// The Guard these objects belong to.
    pub guard: Arc<GuardPolicy>,
    /// The revision they were rendered from.
    pub revision: Revision,
    /// Objects in render order.
    pub objects: Vec<DesiredObject>,
    /// Rendered objects that are not desired state (hooks, generateName), in render order.
    pub skipped: Vec<Skipped>,
    /// Links to Git at this revision (the Guard's template bound to the commit once here, so
    /// a denial only writes the file and line), when the source has a template.
    pub links: Option<Links>,
    weight: u32,
}

impl DesiredSet {
    /// Build from rendered manifests whose kinds are built-in or defined by CRDs among them.
    pub fn build(guard: Arc<GuardPolicy>, revision: Revision, manifests: Vec<Manifest>) -> Result<Self, DesiredError> {
        Self::build_with(guard, revision, manifests, &ApiResources::default())
    }

    /// Build from rendered manifests: leave out hooks and generateName objects, resolve each
    /// kind (built-in, `known` from the API, or a CRD in the same render; an unknown kind is
    /// an error), default namespaces, normalize, reject duplicates.
    pub fn build_with(
        guard: Arc<GuardPolicy>,
        revision: Revision,
        manifests: Vec<Manifest>,
        known: &ApiResources,
    ) -> Result<Self, DesiredError> {
        let mut kinds = known.clone();
        kinds.extend_missing(&ApiResources::from_crds(manifests.iter().map(|m| &m.object)));
        let mut objects = Vec::with_capacity(manifests.len());
        let mut skipped = Vec::new();
        let mut seen: HashMap<(String, String, Option<String>, String), usize> = HashMap::new();
        let mut weight = 0usize;
        for manifest in manifests {
            if let Some(reason) = skip_reason(&manifest.object) {
                skipped.push(Skipped {
                    object: describe(&manifest.object),
                    origin: manifest.origin,
                    reason,
                });
                continue;
            }
            let object = desired_object(&guard, manifest, &kinds)?;
            let key = (
                object.group.clone(),
                object.kind.clone(),
                object.namespace.clone(),
                object.name.clone(),
            );
            if let Some(&first) = seen.get(&key) {
                let first = objects
                    .get(first)
                    .map(|o: &DesiredObject| o.origin.to_string())
                    .unwrap_or_default();
                return Err(DesiredError::Duplicate {
                    object: object.display_name(),
                    first,
                    second: object.origin.to_string(),
                });
            }
            seen.insert(key, objects.len());
            weight += object.object.get().len() + object.fields.heap_bytes() + OBJECT_OVERHEAD;
            objects.push(object);
        }
        let links = guard.links().map(|template| template.at(&revision.commit));
        Ok(DesiredSet {
            links,
            guard,
            revision,
            objects,
            skipped,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        })
    }

    /// A copy holding only the objects `keep` accepts, in the same order (README
    /// "Multi-tenancy": what a Guard's identity may not write is neither applied nor protected).
    pub fn retain(&self, mut keep: impl FnMut(&DesiredObject) -> bool) -> DesiredSet {
        let objects: Vec<DesiredObject> = self.objects.iter().filter(|o| keep(o)).cloned().collect();
        let weight: usize = objects
            .iter()
            .map(|o| o.object.get().len() + o.fields.heap_bytes() + OBJECT_OVERHEAD)
            .sum();
        DesiredSet {
            guard: self.guard.clone(),
            revision: self.revision.clone(),
            objects,
            skipped: self.skipped.clone(),
            links: self.links.clone(),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }

    /// Approximate heap bytes held, for the cache's weigher.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

fn desired_object(
    guard: &GuardPolicy,
    manifest: Manifest,
    kinds: &ApiResources,
) -> Result<DesiredObject, DesiredError> {
    let Manifest {
        mut object,
        origin,
        fields,
    } = manifest;
    let invalid = |reason: &str| DesiredError::InvalidManifest {
        origin: origin.to_string(),
        reason: reason.to_owned(),
    };
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing apiVersion"))?;
    let (group, version) = kinds::split_api_version(api_version);
    let (group, version) = (group.to_owned(), version.to_owned());
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing kind"))?
        .to_owned();
    let resolved = kinds
        .resolve(&group, &kind)
        .map_err(|error| DesiredError::UnknownKind {
            origin: origin.to_string(),
            error,
        })?;
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("missing metadata"))?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("missing metadata.name (generateName cannot be managed from Git)"))?
        .to_owned();
    let namespace = if resolved.namespaced {
        let ns = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| guard.target_namespace.clone());
        metadata.insert("namespace".into(), Value::String(ns.clone()));
        Some(ns)
    } else {
        // The API server ignores a namespace on cluster-scoped objects; so do we.
        metadata.remove("namespace");
        None
    };
    stamp_ownership(&mut object, guard);
    normalize_desired(&mut object);
    let object = serde_json::value::to_raw_value(&object).map_err(|e| invalid(&format!("cannot encode: {e}")))?;
    // Read back once here, so reading it later cannot fail (serde_json limits nesting to 128).
    serde_json::from_str::<serde::de::IgnoredAny>(object.get())
        .map_err(|e| invalid(&format!("cannot be read back as JSON: {e}")))?;
    let ignore = guard.ignore_for(&group, &kind, namespace.as_deref(), &name);
    let delegation = guard.delegation_for(&group, &kind, namespace.as_deref(), &name);
    Ok(DesiredObject {
        delegation,
        group,
        version,
        kind,
        resource: resolved.resource,
        namespace,
        name,
        object,
        origin,
        fields,
        ignore,
    })
}

/// Add what the enforcer stamps on every object it applies: the label the webhook's
/// objectSelector matches and the owning Guard. Declaring them makes removing them drift, so
/// nobody can detach an object from admission by editing its labels.
fn stamp_ownership(object: &mut Value, guard: &GuardPolicy) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let mut insert = |field: &str, key: &str, value: String| {
        let entry = metadata
            .entry(field)
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(serde_json::Map::new());
        }
        if let Some(map) = entry.as_object_mut() {
            map.insert(key.to_owned(), Value::String(value));
        }
    };
    insert("labels", MANAGED_LABEL, "true".to_owned());
    insert("annotations", GUARD_ANNOTATION, guard.id.to_string());
}

/// Heap bytes of a desired object beside its JSON text: identity strings, origin, ignore list
/// and the allocator's per-block overhead (measured with benches/memory.rs).
const OBJECT_OVERHEAD: usize = 512;
