//! Field paths: where in an object a drift is, independent of list order.

use std::fmt::{self, Write as _};

use serde_json::Value;

use super::schema::{ListKeys, Seg};

/// Where a declared field lives, with elements of keyed lists named by their merge key so the
/// path survives reordering.
///
/// Displayed as a dotted path:
/// - an object field whose name is only ASCII letters, digits, `_` and `-` is `.name`
///   (`spec.replicas`);
/// - any other field name is bracketed verbatim: `metadata.labels[app.kubernetes.io/name]`,
///   `data[config.yaml]`;
/// - an element of a keyed list is bracketed as `key=value` pairs, joined by `,` when the key
///   has several fields: `containers[name=web]`, `ports[containerPort=8080,protocol=TCP]`
///   (server-defaulted key fields such as `protocol` are shown with their default);
/// - an atomic list is a single leaf and its path ends at the list (`spec.template.spec.tolerations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<PathSegment>,
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// An object field (map key).
    Field(String),
    /// An element of a list Kubernetes merges by key.
    Element(ElementKey),
}

/// The merge key identifying an element of a keyed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementKey {
    list: &'static ListKeys,
    /// One value per key field of `list`, defaults filled in.
    values: Vec<Value>,
    desired_index: usize,
}

impl ElementKey {
    /// The key fields and their values, e.g. `[("containerPort", 8080), ("protocol", "TCP")]`.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &Value)> + '_ {
        self.list.keys.iter().map(|f| f.name).zip(&self.values)
    }

    /// Position of the element in the desired object's list (for ignore rules by index).
    pub fn desired_index(&self) -> usize {
        self.desired_index
    }

    /// True when `element` (from any object) has this key.
    pub fn matches(&self, element: &Value) -> bool {
        element.is_object()
            && self
                .list
                .keys
                .iter()
                .zip(&self.values)
                .all(|(f, v)| ListKeys::key_value(f, element).is_some_and(|kv| kv.eq_value(v)))
    }

    /// Position of the element with this key in `list`. Like the drift walk: the element at
    /// the desired index if it has the key, else the first that does (lists with duplicate
    /// keys, which the API server allows for `env`, resolve the same way everywhere).
    pub(crate) fn position_in(&self, list: &[Value]) -> Option<usize> {
        match list.get(self.desired_index) {
            Some(e) if self.matches(e) => Some(self.desired_index),
            _ => list.iter().position(|e| self.matches(e)),
        }
    }
}

impl FieldPath {
    /// A path of object fields only (tests).
    #[cfg(test)]
    pub(crate) fn from_fields(fields: impl IntoIterator<Item = String>) -> Self {
        FieldPath {
            segments: fields.into_iter().map(PathSegment::Field).collect(),
        }
    }

    /// Owned path for the walk position `stack` (called only when drift is found).
    pub(crate) fn from_stack(stack: &[Seg<'_>]) -> Self {
        let segments = stack
            .iter()
            .filter_map(|seg| match *seg {
                Seg::Field(name) => Some(PathSegment::Field(name.to_owned())),
                Seg::Elem { list, elem, index } => Some(PathSegment::Element(ElementKey {
                    list,
                    values: list
                        .keys
                        .iter()
                        .map(|f| ListKeys::key_value(f, elem).map_or(Value::Null, |k| k.to_value()))
                        .collect(),
                    desired_index: index,
                })),
                // Positions inside atomic values never end up in a drift path.
                Seg::Item(_) => None,
            })
            .collect();
        FieldPath { segments }
    }

    /// The steps of the path, from the object's root.
    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }

    /// True when the path starts at top-level field `first` (e.g. a Secret's `data` or
    /// `stringData`, whose values must never be echoed).
    pub fn starts_with_key(&self, first: &str) -> bool {
        matches!(self.segments.first(), Some(PathSegment::Field(f)) if f == first)
    }

    /// The value at this path in `obj`, if present.
    pub fn resolve<'v>(&self, obj: &'v Value) -> Option<&'v Value> {
        self.segments.iter().try_fold(obj, |cur, seg| match seg {
            PathSegment::Field(name) => cur.get(name.as_str()),
            PathSegment::Element(key) => cur
                .as_array()
                .and_then(|list| key.position_in(list).and_then(|i| list.get(i))),
        })
    }

    /// The RFC 6901 JSON pointer of this path inside `obj` (keyed elements become the index
    /// they have in `obj`). The final fields need not exist; `None` when a keyed element on
    /// the way is not in `obj`.
    pub fn pointer_in(&self, obj: &Value) -> Option<String> {
        let mut pointer = String::new();
        let mut cur = Some(obj);
        for seg in &self.segments {
            pointer.push('/');
            match seg {
                PathSegment::Field(name) => {
                    push_escaped(&mut pointer, name);
                    cur = cur.and_then(|v| v.get(name.as_str()));
                }
                PathSegment::Element(key) => {
                    let list = cur.and_then(Value::as_array)?;
                    let index = key.position_in(list)?;
                    let _ = write!(pointer, "{index}");
                    cur = list.get(index);
                }
            }
        }
        Some(pointer)
    }
}

fn push_escaped(pointer: &mut String, token: &str) {
    for c in token.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            _ => pointer.push(c),
        }
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn write_key_value(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::String(s) => f.write_str(s),
        other => write!(f, "{other}"),
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                PathSegment::Field(name) if is_plain_name(name) => {
                    if i > 0 {
                        f.write_char('.')?;
                    }
                    f.write_str(name)?;
                }
                PathSegment::Field(name) => write!(f, "[{name}]")?,
                PathSegment::Element(key) => {
                    f.write_char('[')?;
                    for (j, (field, value)) in key.fields().enumerate() {
                        if j > 0 {
                            f.write_char(',')?;
                        }
                        write!(f, "{field}=")?;
                        write_key_value(f, value)?;
                    }
                    f.write_char(']')?;
                }
            }
        }
        Ok(())
    }
}

impl serde::Serialize for FieldPath {
    /// Serialized as its display form (audit records, API responses).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
