//! Field sets in the `fieldsV1` form kube-apiserver stores in `metadata.managedFields`, and the
//! two structured-merge-diff walks that produce them: the fields a value sets (`ToFieldSet`,
//! used for an applied configuration) and the fields that differ between two values
//! (`Compare`, used for updates and for apply conflicts).
//!
//! A set is a tree of path elements: `f:<field>` for a map field, `k:<json>` for an element of
//! an associative list (its key fields, JSON with sorted keys), `v:<json>` for a value of a set
//! list and `i:<n>` for an index. A node is a *member* when the path itself is owned; a member
//! that also has owned children is written with a `"."` entry, as kube does.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::{ListTy, Ssa, Ty};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pe {
    /// A map field.
    Field(String),
    /// An associative-list element, by the canonical JSON object of its key fields.
    Key(String),
    /// A set-list element, by its canonical JSON value.
    Value(String),
    /// A list element by position.
    Index(usize),
}

impl Pe {
    /// The `fieldsV1` key of this element (`f:name`, `k:{...}`, `v:...`, `i:0`).
    pub(crate) fn encode(&self) -> String {
        match self {
            Pe::Field(name) => format!("f:{name}"),
            Pe::Key(key) => format!("k:{key}"),
            Pe::Value(value) => format!("v:{value}"),
            Pe::Index(index) => format!("i:{index}"),
        }
    }

    /// Parse a `fieldsV1` key.
    pub(crate) fn decode(text: &str) -> Option<Pe> {
        if let Some(name) = text.strip_prefix("f:") {
            return Some(Pe::Field(name.to_owned()));
        }
        if let Some(json) = text.strip_prefix("k:") {
            let key: Value = serde_json::from_str(json).ok()?;
            return key.is_object().then(|| Pe::Key(canonical(&key)));
        }
        if let Some(json) = text.strip_prefix("v:") {
            let value: Value = serde_json::from_str(json).ok()?;
            return Some(Pe::Value(canonical(&value)));
        }
        text.strip_prefix("i:").and_then(|i| i.parse().ok()).map(Pe::Index)
    }

    /// How structured-merge-diff prints this element in a path (`.spec`, `[name="web"]`,
    /// `[="a"]`, `[0]`).
    fn display(&self) -> String {
        match self {
            Pe::Field(name) => format!(".{name}"),
            Pe::Key(key) => {
                let fields: Vec<String> = match serde_json::from_str::<Value>(key) {
                    Ok(Value::Object(map)) => map.iter().map(|(k, v)| format!("{k}={}", smd_string(v))).collect(),
                    _ => vec![key.clone()],
                };
                format!("[{}]", fields.join(","))
            }
            Pe::Value(value) => {
                let shown = serde_json::from_str::<Value>(value).map_or_else(|_| value.clone(), |v| smd_string(&v));
                format!("[={shown}]")
            }
            Pe::Index(index) => format!("[{index}]"),
        }
    }
}

/// A path as kube prints it in conflict messages, e.g. `.spec.template.spec.containers[name="web"].image`.
pub(crate) fn path_string(path: &[Pe]) -> String {
    path.iter().map(Pe::display).collect()
}

/// structured-merge-diff's `value.ToString`: strings quoted, other scalars bare.
fn smd_string(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(smd_string).collect::<Vec<_>>().join(",")),
        Value::Object(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{k}={}", smd_string(v))).collect();
            format!("{{{}}}", fields.join(","))
        }
        other => canonical(other),
    }
}

/// JSON with object keys sorted and integral floats written as integers, so that equal keys
/// and values always compare and print the same (kube writes `k:` keys this way).
pub(crate) fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_f64() {
            // Go decodes every JSON number as a float64; 80 and 80.0 are the same key there.
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => out.push_str(&format!("{}", f as i64)),
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

/// Semantic JSON equality: numbers by value (structured-merge-diff compares an int and a float
/// numerically), containers element by element.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The path element identifying `item` in a keyed or set list (key defaults filled in).
pub(crate) fn item_pe(list: &ListTy, item: &Value) -> Result<Pe, String> {
    match list.ssa {
        Ssa::Set | Ssa::Atomic => Ok(Pe::Value(canonical(item))),
        Ssa::Map(keys) => {
            let fields = match item {
                Value::Object(fields) => fields,
                Value::Null => return Err("associative list with keys may not have a null element".to_owned()),
                _ => return Err("associative list with keys may not have non-map elements".to_owned()),
            };
            let mut key = Map::new();
            for field in keys {
                let value = match (fields.get(field.name), field.default) {
                    (Some(value), _) => value.clone(),
                    (None, Some(default)) => Value::from(default),
                    (None, None) => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                            field.name
                        ));
                    }
                };
                key.insert(field.name.to_owned(), value);
            }
            Ok(Pe::Key(canonical(&Value::Object(key))))
        }
    }
}

/// A set of field paths (a tree; see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    /// Add `path` as a member.
    pub(crate) fn insert(&mut self, path: &[Pe]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    #[cfg(test)]
    pub(crate) fn has(&self, path: &[Pe]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// No member anywhere.
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    fn combine(
        &self,
        other: &FieldSet,
        member: fn(bool, bool) -> bool,
        keep_own_only: bool,
        keep_other_only: bool,
    ) -> FieldSet {
        let mut children = BTreeMap::new();
        for (pe, mine) in &self.children {
            let node = match other.children.get(pe) {
                Some(theirs) => mine.combine(theirs, member, keep_own_only, keep_other_only),
                None if keep_own_only => mine.clone(),
                None => continue,
            };
            if !node.is_empty() {
                children.insert(pe.clone(), node);
            }
        }
        if keep_other_only {
            for (pe, theirs) in &other.children {
                if !self.children.contains_key(pe) && !theirs.is_empty() {
                    children.insert(pe.clone(), theirs.clone());
                }
            }
        }
        FieldSet {
            member: member(self.member, other.member),
            children,
        }
    }

    /// Members of either set.
    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        self.combine(other, |a, b| a || b, true, true)
    }

    /// Members of `self` that are not members of `other`.
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        self.combine(other, |a, b| a && !b, true, false)
    }

    /// Members of both sets.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        self.combine(other, |a, b| a && b, false, false)
    }

    /// This set without the top-level field `name` and everything under it
    /// (`RecursiveDifference` with one path).
    pub(crate) fn without_field(&self, name: &str) -> FieldSet {
        let mut out = self.clone();
        out.children.remove(&Pe::Field(name.to_owned()));
        out
    }

    /// Only the top-level field `name` and everything under it.
    pub(crate) fn only_field(&self, name: &str) -> FieldSet {
        let key = Pe::Field(name.to_owned());
        let mut out = FieldSet::default();
        if let Some(node) = self.children.get(&key) {
            out.children.insert(key, node.clone());
        }
        out
    }

    /// `EnsureNamedFieldsAreMembers`: a struct field that has owned children is itself a
    /// member (so pruning removes it as a whole when nobody owns anything under it any more).
    pub(crate) fn ensure_named_fields_are_members(&self) -> FieldSet {
        let children = self
            .children
            .iter()
            .map(|(pe, node)| {
                let mut node = node.ensure_named_fields_are_members();
                if matches!(pe, Pe::Field(_)) && !node.children.is_empty() {
                    node.member = true;
                }
                (pe.clone(), node)
            })
            .collect();
        FieldSet {
            member: self.member,
            children,
        }
    }

    /// Every member path, in structured-merge-diff's iteration order (a node's members first,
    /// then its children's).
    pub(crate) fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        for (pe, node) in &self.children {
            if node.member {
                let mut path = prefix.clone();
                path.push(pe.clone());
                out.push(path);
            }
        }
        for (pe, node) in &self.children {
            if !node.children.is_empty() {
                prefix.push(pe.clone());
                node.collect(prefix, out);
                prefix.pop();
            }
        }
    }

    /// Members with no member ancestor: removing these removes every member.
    pub(crate) fn top_paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect_top(&mut Vec::new(), &mut out);
        out
    }

    fn collect_top(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        for (pe, node) in &self.children {
            prefix.push(pe.clone());
            if node.member {
                out.push(prefix.clone());
            } else {
                node.collect_top(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && self.children.values().any(|c| !c.is_empty()) {
            map.insert(".".to_owned(), Value::Object(Map::new()));
        }
        for (pe, node) in &self.children {
            if !node.is_empty() {
                map.insert(pe.encode(), node.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Parse a `fieldsV1` JSON value.
    pub(crate) fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let map = value
            .as_object()
            .ok_or_else(|| format!("fieldsV1 must be an object, got {value}"))?;
        let mut set = FieldSet::default();
        for (key, child) in map {
            if key == "." {
                set.member = true;
                continue;
            }
            let pe = Pe::decode(key).ok_or_else(|| format!("invalid fieldsV1 path element {key:?}"))?;
            let mut node = FieldSet::from_fields_v1(child)?;
            if node.children.is_empty() {
                node.member = true;
            }
            set.children.insert(pe, node);
        }
        Ok(set)
    }
}

/// What structured-merge-diff does with a value of type `ty` (given both sides of a walk).
enum Shape<'a> {
    Leaf,
    Map,
    List(&'a ListTy),
}

fn shape(ty: &'static Ty, a: Option<&Value>, b: Option<&Value>) -> Shape<'static> {
    match ty {
        Ty::Atomic => Shape::Leaf,
        Ty::Struct(_) => Shape::Map,
        Ty::List(list) => match list.ssa {
            Ssa::Atomic => Shape::Leaf,
            Ssa::Set | Ssa::Map(_) => Shape::List(list),
        },
        Ty::Deduced => {
            let map_like = |v: Option<&Value>| matches!(v, None | Some(Value::Null | Value::Object(_)));
            let any_map = a.is_some_and(Value::is_object) || b.is_some_and(Value::is_object);
            if any_map && map_like(a) && map_like(b) {
                Shape::Map
            } else {
                Shape::Leaf
            }
        }
    }
}

/// The fields a value sets: scalars, atomic values, list elements (with `"."`), null values
/// and empty maps (`ToFieldSet`).
pub(crate) fn field_set(ty: &'static Ty, value: &Value) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    collect_fields(ty, &mut Vec::new(), value, &mut set)?;
    Ok(set)
}

fn collect_fields(ty: &'static Ty, path: &mut Vec<Pe>, value: &Value, set: &mut FieldSet) -> Result<(), String> {
    match shape(ty, Some(value), Some(value)) {
        Shape::Leaf => set.insert(path),
        Shape::Map => {
            for (key, child) in value.as_object().into_iter().flatten() {
                path.push(Pe::Field(key.clone()));
                collect_fields(ty.field(key), path, child, set)?;
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Shape::List(list) => {
            for item in value.as_array().into_iter().flatten() {
                path.push(item_pe(list, item).map_err(|e| format!("{}: {e}", path_string(path)))?);
                collect_fields(list.elem, path, item, set)?;
                set.insert(path);
                path.pop();
            }
        }
    }
    Ok(())
}

/// The difference between two values, as field sets (`Compare`).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    /// Present only in the new value.
    pub added: FieldSet,
    /// Leaves present in both with different values.
    pub modified: FieldSet,
    /// Present only in the old value.
    pub removed: FieldSet,
}

impl Comparison {
    /// Added or modified fields: what the writer now owns.
    pub(crate) fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }

    /// Drop fields outside what a request may change (see `server_side_apply` and
    /// `record_update`): the reset fields of the (sub)resource.
    pub(crate) fn filter(self, keep: impl Fn(&FieldSet) -> FieldSet) -> Comparison {
        Comparison {
            added: keep(&self.added),
            modified: keep(&self.modified),
            removed: keep(&self.removed),
        }
    }
}

/// Compare `old` and `new` (both whole objects).
pub(crate) fn compare(ty: &'static Ty, old: &Value, new: &Value) -> Result<Comparison, String> {
    let mut out = Comparison::default();
    compare_walk(ty, &mut Vec::new(), Some(old), Some(new), &mut out)?;
    Ok(out)
}

fn compare_leaf(path: &[Pe], lhs: Option<&Value>, rhs: Option<&Value>, out: &mut Comparison) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(a), Some(b)) if !json_equal(a, b) => out.modified.insert(path),
        _ => {}
    }
}

fn compare_walk(
    ty: &'static Ty,
    path: &mut Vec<Pe>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    out: &mut Comparison,
) -> Result<(), String> {
    match shape(ty, lhs, rhs) {
        Shape::Leaf => {
            compare_leaf(path, lhs, rhs, out);
            return Ok(());
        }
        Shape::Map => {
            let l = lhs.and_then(Value::as_object);
            let r = rhs.and_then(Value::as_object);
            // Both empty or null: a leaf, which keeps the empty/null distinction.
            if l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty) {
                compare_leaf(path, lhs, rhs, out);
                return Ok(());
            }
            let mut keys: Vec<&String> = l.into_iter().flat_map(Map::keys).collect();
            keys.extend(
                r.into_iter()
                    .flat_map(Map::keys)
                    .filter(|k| !l.is_some_and(|l| l.contains_key(*k))),
            );
            for key in keys {
                path.push(Pe::Field(key.clone()));
                compare_walk(
                    ty.field(key),
                    path,
                    l.and_then(|m| m.get(key)),
                    r.and_then(|m| m.get(key)),
                    out,
                )?;
                path.pop();
            }
        }
        Shape::List(list) => {
            let l = lhs.and_then(Value::as_array);
            let r = rhs.and_then(Value::as_array);
            if l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty) {
                compare_leaf(path, lhs, rhs, out);
                return Ok(());
            }
            let (l_order, l_items) = index_items(list, path, l)?;
            let (r_order, r_items) = index_items(list, path, r)?;
            let all = l_order
                .into_iter()
                .chain(r_order.into_iter().filter(|pe| !l_items.contains_key(pe)));
            for pe in all.collect::<Vec<_>>() {
                let (a, b) = (l_items.get(&pe).copied(), r_items.get(&pe).copied());
                path.push(pe);
                compare_walk(list.elem, path, a, b, out)?;
                path.pop();
            }
        }
    }
    if !path.is_empty() {
        match (lhs, rhs) {
            (None, _) => out.added.insert(path),
            (_, None) => out.removed.insert(path),
            _ => {}
        }
    }
    Ok(())
}

/// The elements of a keyed or set list by path element (first occurrence), in list order.
#[allow(clippy::type_complexity)]
fn index_items<'v>(
    list: &ListTy,
    path: &[Pe],
    items: Option<&'v Vec<Value>>,
) -> Result<(Vec<Pe>, BTreeMap<Pe, &'v Value>), String> {
    let mut order = Vec::new();
    let mut by_pe = BTreeMap::new();
    for item in items.into_iter().flatten() {
        let pe = item_pe(list, item).map_err(|e| format!("{}: {e}", path_string(path)))?;
        if let std::collections::btree_map::Entry::Vacant(slot) = by_pe.entry(pe.clone()) {
            order.push(pe);
            slot.insert(item);
        }
    }
    Ok((order, by_pe))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_v1_round_trip_and_dot() {
        let v = json!({"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{}}}}});
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.has(&[Pe::Field("metadata".into()), Pe::Field("labels".into())]));
        assert!(!set.has(&[Pe::Field("metadata".into())]));
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.containers[name=\"web\"]",
                ".spec.containers[name=\"web\"].image"
            ]
        );
    }

    #[test]
    fn canonical_keys_sort_and_normalise_numbers() {
        assert_eq!(
            canonical(&json!({"protocol":"TCP","containerPort":80.0})),
            r#"{"containerPort":80,"protocol":"TCP"}"#
        );
        assert_eq!(
            Pe::decode(r#"k:{"protocol":"TCP","containerPort":80}"#)
                .unwrap()
                .encode(),
            r#"k:{"containerPort":80,"protocol":"TCP"}"#
        );
        assert_eq!(path_string(&[Pe::Value("\"a\"".into()), Pe::Index(2)]), "[=\"a\"][2]");
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[Pe::Field("x".into())]);
        a.insert(&[Pe::Field("y".into()), Pe::Field("z".into())]);
        let mut b = FieldSet::default();
        b.insert(&[Pe::Field("y".into()), Pe::Field("z".into())]);
        assert_eq!(a.difference(&b).paths(), vec![vec![Pe::Field("x".into())]]);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(b.union(&a), a.union(&b));
        assert!(a.difference(&a).is_empty());
        let ensured = b.ensure_named_fields_are_members();
        assert!(ensured.has(&[Pe::Field("y".into())]));
    }
}
