//! Strategic merge patch: a port of the server-side half of apimachinery's
//! `pkg/util/strategicpatch` (`StrategicMergeMapPatch` with `MergeParallelList` and
//! `IgnoreUnmatchedNulls`), with the merge keys of `schema.rs` in place of Go struct tags.
//!
//! - Maps merge recursively; `null` deletes a key; a key absent from the original takes the
//!   patch value (nulls and `$patch` directives removed).
//! - Lists with `patchStrategy: merge` merge by their merge key (lists of maps) or as a set
//!   (lists of scalars); others are replaced by the patch's list.
//! - Directives: `$patch: replace|delete` on a map, `$patch: replace|delete` as a list element,
//!   `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//! - Order: `$setElementOrder` first, then the patch list's order, then the live order, as
//!   `normalizeElementOrder` / `mergeSortedSlice` do.
//!
//! Errors map like kube-apiserver's `interpretStrategicMergePatchError`: malformed directives
//! are 400s, lists of lists 422, anything else (a missing merge key, a type mismatch) a 500
//! with apimachinery's message.
use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{Smp, Ty};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ELEMENT_ORDER: &str = "invalid patch format of setElementOrder list";
const ERR_LIST_OF_LISTS: &str = "lists of lists are not supported";

/// Apply the strategic merge patch `body` to `original` of the kind rooted at `root`.
pub(crate) fn apply(original: &Value, body: &[u8], root: &'static Ty) -> Result<Value, PatchError> {
    let patch = match serde_json::from_slice::<Value>(body).map_err(|e| PatchError::BadRequest(e.to_string()))? {
        Value::Object(patch) => patch,
        // Go decodes `null` into an empty map.
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                super::go_json_kind(&other)
            )));
        }
    };
    let original = match original {
        Value::Object(original) => original.clone(),
        _ => return Err(PatchError::BadRequest("invalid JSON document".to_owned())),
    };
    let mut merged = Value::Object(merge_map(original, patch, root)?);
    // kube decodes the result into a typed object, which drops keys no Go type has.
    strip_directive_keys(&mut merged);
    Ok(merged)
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(&format!("{SET_ELEMENT_ORDER}/"))
        || key.starts_with(&format!("{DELETE_FROM_PRIMITIVE_LIST}/"))
}

fn strip_directive_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !is_directive_key(k));
            map.values_mut().for_each(strip_directive_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directive_keys),
        _ => {}
    }
}

/// Go's `%v` of a decoded JSON value, for apimachinery's error messages.
fn go_fmt(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_fmt).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", map.get(k).map(go_fmt).unwrap_or_default()))
                .collect();
            format!("map[{}]", fields.join(" "))
        }
        other => other.to_string(),
    }
}

/// Go's `reflect.TypeOf` name of a decoded JSON value.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn bad_arg_type(expected: &str, actual: &Value) -> PatchError {
    PatchError::Internal(format!("expected a {expected}, but received a {}", go_type(actual)))
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::Internal(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt(&Value::Object(map.clone()))
    ))
}

/// Same Go type (reflect.TypeOf equality) for the "replace when types differ" rule.
fn same_type(a: &Value, b: &Value) -> bool {
    go_type(a) == go_type(b)
}

/// `extractKey`: the list name after `<prefix>/`.
fn extract_key(rest: &str, err: &str) -> Result<String, PatchError> {
    rest.strip_prefix('/')
        .map(str::to_owned)
        .ok_or_else(|| PatchError::BadRequest(err.to_owned()))
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: &'static Ty,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE).cloned() {
        return directive_in_map(&directive, patch);
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_patch_into_original(&mut original, &mut patch, ty)?;
    for (key, patch_value) in patch {
        let (is_delete_list, key) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => (true, extract_key(rest, ERR_PRIMITIVE_LIST)?),
            None => (false, key),
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(slot) = original.get_mut(&key) else {
            if !is_delete_list {
                insert_patch_value(&mut original, key, patch_value);
            }
            continue;
        };
        if !same_type(slot, &patch_value) {
            if !is_delete_list {
                insert_patch_value(&mut original, key, patch_value);
            }
            continue;
        }
        let current = std::mem::take(slot);
        let merged = match (current, patch_value) {
            (Value::Object(current), Value::Object(patch_map)) => {
                Value::Object(merge_map(current, patch_map, ty.field(&key))?)
            }
            (Value::Array(current), Value::Array(patch_list)) => Value::Array(merge_slice_handler(
                current,
                patch_list,
                ty.field(&key),
                is_delete_list,
            )?),
            (_, scalar) => scalar,
        };
        if let Some(slot) = original.get_mut(&key) {
            *slot = merged;
        }
    }
    Ok(original)
}

/// A patch value for a key that is new (or of another type): nulls and directives removed.
fn insert_patch_value(original: &mut Map<String, Value>, key: String, mut value: Value) {
    discard_nulls(&mut value);
    match remove_directives(value) {
        Some(value) => {
            original.insert(key, value);
        }
        None => {
            original.remove(&key);
        }
    }
}

fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// `removeDirectives`: drop every map carrying `$patch` (and the key or element holding it).
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                map.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(remove_directives).collect())),
        other => Some(other),
    }
}

fn directive_in_map(directive: &Value, mut patch: Map<String, Value>) -> Result<Map<String, Value>, PatchError> {
    if directive == "replace" {
        patch.remove(DIRECTIVE);
        return Ok(patch);
    }
    if directive == "delete" {
        return Ok(Map::new());
    }
    Err(PatchError::Internal(format!(
        "unknown patch type: {} in map: {}",
        go_fmt(directive),
        go_fmt(&Value::Object(patch))
    )))
}

fn apply_retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadRequest(ERR_RETAIN_KEYS.to_owned()));
    };
    let retained = |key: &str| retain.iter().any(|r| r == key);
    for (key, value) in patch.iter() {
        if value.is_null() || key.starts_with(DELETE_FROM_PRIMITIVE_LIST) || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if !retained(key) {
            return Err(PatchError::BadRequest(ERR_RETAIN_KEYS.to_owned()));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

fn as_list(value: Option<&Value>) -> Result<Option<Vec<Value>>, PatchError> {
    match value {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.clone())),
        Some(other) => Err(bad_arg_type("[]interface {}", other)),
    }
}

/// `mergePatchIntoOriginal`: merge each list named by a `$setElementOrder/<list>` directive
/// and put it in the directive's order.
fn merge_patch_into_original(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: &'static Ty,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.remove(&key) else { continue };
        let Value::Array(order) = order else {
            return Err(bad_arg_type("[]interface {}", &order));
        };
        let field = extract_key(key.strip_prefix(SET_ELEMENT_ORDER).unwrap_or(""), ERR_SET_ELEMENT_ORDER)?;
        let original_list = as_list(original.get(&field))?;
        let patch_list = as_list(patch.get(&field))?;
        let field_ty = ty.field(&field);
        let (_, merge_key, _) = field_ty.smp_list();
        validate_patch_with_set_order(patch_list.as_deref().unwrap_or_default(), &order, merge_key)?;
        let merged = match (&original_list, &patch_list) {
            (Some(current), None) => current.clone(),
            (None, Some(added)) => match remove_directives(Value::Array(added.clone())) {
                Some(Value::Array(items)) => items,
                _ => continue,
            },
            (Some(current), Some(added)) => merge_slice_handler(current.clone(), added.clone(), field_ty, false)?,
            (None, None) => continue,
        };
        let (patch_items, server_only) = partition(merged, &order, merge_key)?;
        let kind = element_kind(
            original_list.as_deref().unwrap_or_default(),
            patch_list.as_deref().unwrap_or_default(),
        )?;
        let ordered = normalize_element_order(
            patch_items,
            server_only,
            &order,
            original_list.as_deref().unwrap_or_default(),
            merge_key,
            kind,
        )?;
        original.insert(field.clone(), Value::Array(ordered));
        patch.remove(&field);
    }
    Ok(())
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    field_ty: &'static Ty,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    let (strategy, merge_key, elem) = field_ty.smp_list();
    if strategy != Smp::Replace || is_delete_list {
        merge_slice(original, patch, elem, merge_key, is_delete_list)
    } else {
        Ok(patch)
    }
}

/// The element kind of one or two lists (`sliceElementType`): maps or scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Map,
    Scalar,
}

fn element_kind(a: &[Value], b: &[Value]) -> Result<ElemKind, PatchError> {
    let mut previous: Option<&'static str> = None;
    for item in a.iter().chain(b) {
        let current = go_type(item);
        match previous {
            None if item.is_array() => return Err(PatchError::Rejected(ERR_LIST_OF_LISTS.to_owned())),
            None => previous = Some(current),
            Some(p) if p != current => {
                return Err(PatchError::Internal(format!(
                    "list element types are not identical: [{} {}]",
                    go_fmt(&Value::Array(a.to_vec())),
                    go_fmt(&Value::Array(b.to_vec()))
                )));
            }
            Some(_) => {}
        }
    }
    match previous {
        None => Err(PatchError::Internal(
            "no elements in any of the given slices".to_owned(),
        )),
        Some("map[string]interface {}") => Ok(ElemKind::Map),
        Some(_) => Ok(ElemKind::Scalar),
    }
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem: &'static Ty,
    merge_key: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_kind(&original, &patch)?;
    let (original, patch, merged) = match kind {
        ElemKind::Scalar => {
            if is_delete_list {
                return Ok(original.into_iter().filter(|v| !patch.contains(v)).collect());
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(&patch) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            (original, patch, merged)
        }
        ElemKind::Map => {
            if merge_key.is_empty() {
                return Err(PatchError::Internal("cannot merge lists without merge key".to_owned()));
            }
            let (original, patch) = merge_slice_with_special_elements(original, patch, merge_key)?;
            let merged = merge_slice_without_special_elements(original.clone(), &patch, merge_key, elem)?;
            (original, patch, merged)
        }
    };
    let (patch_items, server_only) = partition(merged, &patch, merge_key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)
}

fn as_map(value: &Value) -> Result<&Map<String, Value>, PatchError> {
    value
        .as_object()
        .ok_or_else(|| bad_arg_type("map[string]interface {}", value))
}

/// Handle `$patch: delete` and `$patch: replace` elements; returns the updated original and
/// the patch without them.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let map = as_map(&item)?;
        match map.get(DIRECTIVE) {
            None => plain.push(item),
            Some(d) if d == "delete" => {
                let value = map.get(merge_key).ok_or_else(|| no_merge_key(map, merge_key))?.clone();
                original = delete_matching_entries(original, merge_key, &value)?;
            }
            Some(d) if d == "replace" => replace = true,
            Some(d) if d == "merge" => {
                return Err(PatchError::Internal(
                    "merging lists cannot yet be specified in the patch".to_owned(),
                ));
            }
            Some(d) => {
                return Err(PatchError::Internal(format!(
                    "unknown patch type: {} in map: {}",
                    go_fmt(d),
                    go_fmt(&item)
                )));
            }
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// `findMapInSliceBasedOnKeyValue`: the index of the map whose `key` equals `value`.
fn find_by_key(items: &[Value], key: &str, value: &Value) -> Result<Option<usize>, PatchError> {
    for (i, item) in items.iter().enumerate() {
        let map = item
            .as_object()
            .ok_or_else(|| PatchError::Internal(format!("value for key {i} is not a map")))?;
        if map.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn delete_matching_entries(mut original: Vec<Value>, key: &str, value: &Value) -> Result<Vec<Value>, PatchError> {
    while let Some(i) = find_by_key(&original, key, value)? {
        original.remove(i);
    }
    Ok(original)
}

fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    elem: &'static Ty,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let map = as_map(item)?;
        let value = map.get(merge_key).ok_or_else(|| no_merge_key(map, merge_key))?;
        match find_by_key(&original, merge_key, value)? {
            Some(i) => {
                if let Some(slot) = original.get_mut(i)
                    && let Value::Object(current) = std::mem::take(slot)
                {
                    *slot = Value::Object(merge_map(current, map.clone(), elem)?);
                }
            }
            None => original.push(item.clone()),
        }
    }
    Ok(original)
}

/// Split `merged` into the items present in `by` (by merge key, or by value for scalars) and
/// the server-only ones.
fn partition(merged: Vec<Value>, by: &[Value], merge_key: &str) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut in_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let found = if merge_key.is_empty() {
            by.contains(&item)
        } else {
            let map = as_map(&item)?;
            let value = map.get(merge_key).ok_or_else(|| no_merge_key(map, merge_key))?;
            find_by_key(by, merge_key, value)?.is_some()
        };
        if found {
            in_patch.push(item)
        } else {
            server_only.push(item)
        }
    }
    Ok((in_patch, server_only))
}

/// `index`: the position of `item` in `list` (by merge key for maps).
fn position(list: &[Value], item: &Value, merge_key: &str, kind: ElemKind) -> Option<usize> {
    match kind {
        ElemKind::Map => {
            let wanted = item.get(merge_key);
            list.iter().position(|v| v.get(merge_key) == wanted)
        }
        ElemKind::Scalar => list.iter().position(|v| v == item),
    }
}

/// `extractToDeleteItems`: the elements without and with `$patch: delete`.
fn extract_to_delete(items: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for item in items {
        if as_map(&item)?.get(DIRECTIVE).is_some_and(|d| d == "delete") {
            delete.push(item);
        } else {
            keep.push(item);
        }
    }
    Ok((keep, delete))
}

fn validate_merge_keys(merge_key: &str, lists: [&[Value]; 2]) -> Result<(), PatchError> {
    for item in lists.into_iter().flatten() {
        let map = as_map(item)?;
        if !map.contains_key(merge_key) {
            return Err(no_merge_key(map, merge_key));
        }
    }
    Ok(())
}

/// `normalizeSliceOrder`: sort by position in `order` (stable), deletions last.
fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Result<Vec<Value>, PatchError> {
    let (mut sorted, deletions) = match kind {
        ElemKind::Map => {
            validate_merge_keys(merge_key, [&to_sort, order])?;
            extract_to_delete(to_sort)?
        }
        ElemKind::Scalar => (to_sort, Vec::new()),
    };
    sorted.sort_by_key(|item| position(order, item, merge_key, kind).unwrap_or(usize::MAX));
    sorted.extend(deletions);
    Ok(sorted)
}

fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Result<Vec<Value>, PatchError> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted_slice(server_only, patch, server_order, merge_key, kind))
}

/// `mergeSortedSlice`: interleave server-only items (`left`) into the patch items (`right`),
/// keeping both relative orders and the live order where both items are live.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, merge_key, kind), position(server_order, r, merge_key, kind)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

fn contains_directive(item: &Value) -> bool {
    item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool, PatchError> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let (l, r) = (as_map(left)?, as_map(right)?);
    let lv = l.get(merge_key).ok_or_else(|| no_merge_key(l, merge_key))?;
    let rv = r.get(merge_key).ok_or_else(|| no_merge_key(r, merge_key))?;
    Ok(lv == rv)
}

/// `validatePatchWithSetOrderList`: the patch list's items appear in the `$setElementOrder`
/// list, in the same relative order.
fn validate_patch_with_set_order(patch: &[Value], order: &[Value], merge_key: &str) -> Result<(), PatchError> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let non_delete = if merge_key.is_empty() {
        patch.to_vec()
    } else {
        extract_to_delete(patch.to_vec())?.0
    };
    let (mut pi, mut si) = (0, 0);
    while let (Some(p), Some(o)) = (non_delete.get(pi), order.get(si)) {
        if contains_directive(p) {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(p, o, merge_key)? {
            pi += 1;
        }
        si += 1;
    }
    if pi < non_delete.len() && si >= order.len() {
        return Err(PatchError::Internal(format!(
            "the order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}",
            go_fmt(&Value::Array(patch.to_vec())),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::schema::builtin;
    use super::*;

    fn smp(original: Value, patch: Value) -> Result<Value, PatchError> {
        let root = builtin("apps", "Deployment").unwrap().root;
        apply(&original, patch.to_string().as_bytes(), root)
    }

    #[test]
    fn primitive_list_merge_and_delete() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(original.clone(), json!({"metadata": {"finalizers": ["c"]}})).unwrap();
        // Like apimachinery, a new element not placed by `$setElementOrder` goes first.
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            original,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn directive_errors() {
        let original = json!({"metadata": {"name": "x"}, "spec": {"strategy": {"type": "RollingUpdate"}}});
        let err = smp(
            original.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        );
        assert_eq!(err.unwrap_err(), PatchError::BadRequest(ERR_RETAIN_KEYS.into()));
        let err = smp(
            original.clone(),
            json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
        );
        assert_eq!(err.unwrap_err(), PatchError::BadRequest(ERR_PRIMITIVE_LIST.into()));
        let err = smp(original, json!({"spec": {"strategy": {"$patch": "frob"}}}));
        assert!(matches!(err, Err(PatchError::Internal(m)) if m.starts_with("unknown patch type: frob")));
    }

    #[test]
    fn missing_merge_key_is_apimachinerys_500() {
        let original = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "a"}]}}}});
        let err = smp(
            original,
            json!({"spec": {"template": {"spec": {"containers": [{"image": "b"}]}}}}),
        );
        assert_eq!(
            err.unwrap_err(),
            PatchError::Internal("map: map[image:b] does not contain declared merge key: name".into())
        );
    }

    #[test]
    fn new_subtrees_lose_nulls_and_directives() {
        let out = smp(
            json!({}),
            json!({"spec": {"a": null, "b": {"c": null, "d": 1, "e": {"$patch": "delete"}}}}),
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"b": {"d": 1}}}));
    }
}
