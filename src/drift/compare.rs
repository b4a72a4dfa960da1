//! Semantic equality of leaf values, where Kubernetes is semantic: numbers by value, resource
//! quantities by value on quantity fields, `null` the same as absent, `[]` the same as absent
//! (the API server omits empty lists).

use serde_json::{Map, Number, Value};

use super::quantity;
use super::schema::{EmptyMap, Seg, empty_map_meaning, is_quantity_field};

/// Numbers by value: `1 == 1.0`.
pub(crate) fn number_eq(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

/// Equality of two merge-key values (`name`, `containerPort`, ...).
pub(crate) fn key_value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        _ => a == b,
    }
}

/// Equality of two scalars at `stack`.
fn scalar_eq(stack: &[Seg<'_>], a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    if let (Value::Number(x), Value::Number(y)) = (a, b)
        && number_eq(x, y)
    {
        return true;
    }
    // Only now look at the schema: the common case (equal strings) never gets here.
    is_quantity_field(stack)
        && matches!(
            (quantity::from_json(a), quantity::from_json(b)),
            (Some(x), Some(y)) if x == y
        )
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn is_absent_or_empty_list(v: Option<&Value>) -> bool {
    match present(v) {
        None => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// Does the value `n` the request would store satisfy the declared leaf `d`?
///
/// `o` is the old value at the same place; inside atomic lists it decides which fields the
/// server is allowed to have added: those already there before the request (defaults), or all
/// of them when there was nothing before (a CREATE, or a list being restored).
pub(crate) fn matches_desired<'a>(
    stack: &mut Vec<Seg<'a>>,
    d: &'a Value,
    n: Option<&'a Value>,
    o: Option<&'a Value>,
) -> bool {
    match d {
        Value::Object(dm) if dm.is_empty() => match empty_map_meaning(stack) {
            EmptyMap::Nothing => true,
            EmptyMap::Present => matches!(present(n), Some(Value::Object(_))),
            EmptyMap::SelectsAll => present(n).is_some_and(|v| v.is_object() && is_vacuous(v)),
        },
        _ => subset_eq(stack, d, n, o),
    }
}

/// Null, an empty list, or a map of nothing but those: says nothing.
fn is_vacuous(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_vacuous),
        _ => false,
    }
}

fn subset_eq<'a>(stack: &mut Vec<Seg<'a>>, d: &'a Value, n: Option<&'a Value>, o: Option<&'a Value>) -> bool {
    let n = present(n);
    match (d, n) {
        (Value::Null, _) => true,
        (Value::Array(da), _) if da.is_empty() => is_absent_or_empty_list(n),
        (Value::Array(da), Some(Value::Array(na))) => {
            let oa = present(o).and_then(Value::as_array);
            da.len() == na.len()
                && da.iter().zip(na).enumerate().all(|(i, (de, ne))| {
                    stack.push(Seg::Item(i));
                    let ok = subset_eq(stack, de, Some(ne), oa.and_then(|l| l.get(i)));
                    stack.pop();
                    ok
                })
        }
        (Value::Object(dm), Some(Value::Object(nm))) => {
            let om = present(o).and_then(Value::as_object);
            object_subset_eq(stack, dm, nm, om)
        }
        (Value::Object(dm), None) if dm.is_empty() && empty_map_meaning(stack) == EmptyMap::Nothing => true,
        (Value::Array(_) | Value::Object(_), _) => false,
        (_, Some(nv)) => scalar_eq(stack, d, nv),
        (_, None) => false,
    }
}

fn object_subset_eq<'a>(
    stack: &mut Vec<Seg<'a>>,
    dm: &'a Map<String, Value>,
    nm: &'a Map<String, Value>,
    om: Option<&'a Map<String, Value>>,
) -> bool {
    let declared_match = dm.iter().all(|(k, dv)| {
        stack.push(Seg::Field(k));
        let ok = subset_eq(stack, dv, nm.get(k), om.and_then(|m| m.get(k)));
        stack.pop();
        ok
    });
    if !declared_match {
        return false;
    }
    // Fields Git does not declare inside an atomic value: server defaults are fine, but only
    // when the old object shows them (otherwise someone is adding them with this request).
    let Some(om) = om else {
        return true;
    };
    nm.iter()
        .filter(|(k, v)| !v.is_null() && !dm.contains_key(k.as_str()))
        .all(|(k, nv)| {
            stack.push(Seg::Field(k));
            let ok = same(stack, Some(nv), om.get(k));
            stack.pop();
            ok
        })
}

/// Full semantic equality, used for "did this request change the field" (`N[p] == O[p]`).
pub(crate) fn same<'a>(stack: &mut Vec<Seg<'a>>, a: Option<&'a Value>, b: Option<&'a Value>) -> bool {
    match (present(a), present(b)) {
        (None, None) => true,
        (Some(Value::Array(x)), None) | (None, Some(Value::Array(x))) => x.is_empty(),
        (None, Some(_)) | (Some(_), None) => false,
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len()
                && x.iter().zip(y).enumerate().all(|(i, (xe, ye))| {
                    stack.push(Seg::Item(i));
                    let ok = same(stack, Some(xe), Some(ye));
                    stack.pop();
                    ok
                })
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.iter().all(|(k, xv)| {
                stack.push(Seg::Field(k));
                let ok = same(stack, Some(xv), y.get(k));
                stack.pop();
                ok
            }) && y
                .iter()
                .all(|(k, yv)| x.contains_key(k.as_str()) || yv.is_null() || is_empty_list(yv))
        }
        (Some(Value::Array(_) | Value::Object(_)), Some(_)) | (Some(_), Some(Value::Array(_) | Value::Object(_))) => {
            false
        }
        (Some(x), Some(y)) => scalar_eq(stack, x, y),
    }
}

fn is_empty_list(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired_ok(d: &Value, n: Option<&Value>, o: Option<&Value>) -> bool {
        matches_desired(&mut Vec::new(), d, n, o)
    }

    #[test]
    fn numbers_by_value() {
        assert!(desired_ok(&json!(1), Some(&json!(1.0)), None));
        assert!(!desired_ok(&json!(1), Some(&json!("1")), None));
        assert!(same(&mut Vec::new(), Some(&json!(3)), Some(&json!(3.0))));
    }

    fn ok_at(path: &[&str], d: &Value, n: &Value) -> bool {
        let mut stack: Vec<Seg<'_>> = path.iter().map(|s| Seg::Field(s)).collect();
        matches_desired(&mut stack, d, Some(n), None)
    }

    #[test]
    fn quantities_by_value_only_on_quantity_fields() {
        let cpu = ["resources", "limits", "cpu"];
        assert!(ok_at(&cpu, &json!("500m"), &json!("0.5")));
        assert!(ok_at(&cpu, &json!("500m"), &json!(0.5)));
        assert!(!ok_at(&cpu, &json!("500m"), &json!("1")));
        assert!(!ok_at(&["spec", "cpu"], &json!("500m"), &json!("0.5")));
    }

    #[test]
    fn empty_list_and_null_equal_absent() {
        assert!(desired_ok(&json!([]), None, None));
        assert!(desired_ok(&json!([]), Some(&Value::Null), None));
        assert!(!desired_ok(&json!(["a"]), None, None));
        assert!(same(&mut Vec::new(), Some(&json!({"a": null})), Some(&json!({}))));
    }

    #[test]
    fn declared_empty_map_means_what_the_field_type_says() {
        let ctx = ["securityContext"];
        assert!(ok_at(&ctx, &json!({}), &json!({"runAsUser": 1})));
        assert!(!desired_ok(&json!({}), None, None));
        let mut stack = vec![Seg::Field("emptyDir")];
        assert!(!matches_desired(&mut stack, &json!({}), None, None));
        // Map-typed fields vanish when empty.
        let mut stack = vec![Seg::Field("nodeSelector")];
        assert!(matches_desired(&mut stack, &json!({}), None, None));
        let mut stack = vec![Seg::Field("spec"), Seg::Field("podSelector")];
        assert!(matches_desired(
            &mut stack,
            &json!({}),
            Some(&json!({"matchLabels": {}})),
            None
        ));
        assert!(!ok_at(
            &["spec", "podSelector"],
            &json!({}),
            &json!({"matchLabels": {"app": "a"}})
        ));
        // Inside atomic lists too.
        let d = json!([{"name": "x", "nodeSelector": {}}]);
        assert!(desired_ok(&d, Some(&json!([{"name": "x"}])), None));
    }

    #[test]
    fn atomic_elements_tolerate_defaults_seen_before() {
        let d = json!([{"name": "data", "spec": {"accessModes": ["ReadWriteOnce"]}}]);
        let live = json!([{"name": "data", "kind": "PersistentVolumeClaim",
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}}]);
        // CREATE: nothing before, the extra fields are the server's defaults.
        assert!(desired_ok(&d, Some(&live), None));
        // UPDATE with the defaults already there.
        assert!(desired_ok(&d, Some(&live), Some(&live)));
        // UPDATE adding a field Git does not declare inside the atomic list.
        let mut added = live.clone();
        added[0]["spec"]["storageClassName"] = json!("fast");
        assert!(!desired_ok(&d, Some(&added), Some(&live)));
        // Order matters in atomic lists.
        assert!(!desired_ok(&json!(["a", "b"]), Some(&json!(["b", "a"])), None));
    }
}
