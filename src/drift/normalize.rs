//! Bring a desired object from Git into the form the API server stores, so comparing it with
//! live objects compares meaning, not spelling.
//!
//! - Secret `stringData` is folded into base64 `data` (winning over `data` on the same key, as
//!   the API server does) and removed; Secret `data` and ConfigMap `binaryData` are re-encoded
//!   as canonical padded base64.
//! - Resource quantities on quantity-typed fields (see the schema table) become their canonical
//!   string: `cpu: 0.5` -> `"500m"`, `memory: 1.5Gi` -> `"1536Mi"`. Values that are not
//!   quantities are left alone (the API server will reject them; that is not drift's concern).

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::quantity;
use super::schema::{Seg, is_quantity_field};

/// Normalize a desired object in place (see the module documentation).
pub fn normalize_desired(obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        let rule = KIND_RULES.iter().find(|r| {
            map.get("apiVersion").and_then(Value::as_str) == Some(r.api_version)
                && map.get("kind").and_then(Value::as_str) == Some(r.kind)
        });
        if let Some(rule) = rule {
            (rule.apply)(map);
        }
    }
    canonicalize_quantities(obj, &mut Vec::new());
}

/// A normalization that applies to one kind only.
struct KindRule {
    api_version: &'static str,
    kind: &'static str,
    apply: fn(&mut Map<String, Value>),
}

static KIND_RULES: &[KindRule] = &[
    KindRule {
        api_version: "v1",
        kind: "Secret",
        apply: normalize_secret,
    },
    KindRule {
        api_version: "v1",
        kind: "ConfigMap",
        apply: normalize_config_map,
    },
];

/// Go's `encoding/json` decodes `[]byte` with `base64.StdEncoding`, which tolerates non-zero
/// trailing bits; accept what it accepts.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn canonical_base64(encoded: &str) -> Option<String> {
    // StdEncoding skips line breaks, so wrapped base64 in Git is the same bytes.
    let compact: String = encoded.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let bytes = LENIENT.decode(compact).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn canonicalize_base64_values(map: &mut Map<String, Value>, field: &str) {
    let Some(Value::Object(entries)) = map.get_mut(field) else {
        return;
    };
    for v in entries.values_mut() {
        if let Some(canonical) = v.as_str().and_then(canonical_base64) {
            *v = Value::String(canonical);
        }
    }
}

fn normalize_secret(map: &mut Map<String, Value>) {
    canonicalize_base64_values(map, "data");
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let mut kept = Map::new();
    let mut folded = Map::new();
    for (k, v) in string_data {
        match v {
            Value::String(s) => {
                folded.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(s)));
            }
            // Not a string: the API server rejects it; keep it visible rather than guess.
            other => {
                kept.insert(k, other);
            }
        }
    }
    if !folded.is_empty() {
        match map.get_mut("data") {
            Some(Value::Object(data)) => data.extend(folded),
            _ => {
                map.insert("data".to_owned(), Value::Object(folded));
            }
        }
    }
    if !kept.is_empty() {
        map.insert("stringData".to_owned(), Value::Object(kept));
    }
}

fn normalize_config_map(map: &mut Map<String, Value>) {
    canonicalize_base64_values(map, "binaryData");
}

fn canonicalize_quantities<'a>(v: &'a mut Value, stack: &mut Vec<Seg<'a>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                stack.push(Seg::Field(k));
                canonicalize_quantities(child, stack);
                stack.pop();
            }
        }
        Value::Array(list) => {
            for (i, child) in list.iter_mut().enumerate() {
                stack.push(Seg::Item(i));
                canonicalize_quantities(child, stack);
                stack.pop();
            }
        }
        Value::String(_) | Value::Number(_) => {
            if is_quantity_field(stack)
                && let Some(q) = quantity::from_json(v)
            {
                *v = Value::String(q.to_string());
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db"},
            "data": {"user": "YWRt\naW4=", "password": "b2xk"},
            "stringData": {"password": "s3cret", "port": 5432}
        });
        normalize_desired(&mut s);
        assert_eq!(
            s,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db"},
                "data": {"user": "YWRtaW4=", "password": "czNjcmV0"},
                "stringData": {"port": 5432}
            })
        );
    }

    #[test]
    fn quantities_become_canonical_strings_on_quantity_fields_only() {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"labels": {"cpu": "0.5"}},
            "spec": {"template": {"spec": {
                "containers": [{"name": "a", "resources": {
                    "limits": {"cpu": 0.5, "memory": "1.5Gi"},
                    "requests": {"cpu": 1, "memory": "not-a-quantity"}
                }}],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1024Mi"}}]
            }}}
        });
        normalize_desired(&mut d);
        let c = &d["spec"]["template"]["spec"]["containers"][0]["resources"];
        assert_eq!(c["limits"], json!({"cpu": "500m", "memory": "1536Mi"}));
        assert_eq!(c["requests"], json!({"cpu": "1", "memory": "not-a-quantity"}));
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"],
            json!("1Gi")
        );
        assert_eq!(d["metadata"]["labels"]["cpu"], json!("0.5"));
    }

    #[test]
    fn limit_range_and_quota_quantities() {
        let mut d = json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "spec": {"limits": [{"type": "Container", "max": {"cpu": 2}, "default": {"memory": "512Mi"}}]}
        });
        normalize_desired(&mut d);
        assert_eq!(d["spec"]["limits"][0]["max"]["cpu"], json!("2"));
        let mut q = json!({"apiVersion": "v1", "kind": "ResourceQuota", "spec": {"hard": {"pods": 10, "requests.cpu": "4000m"}}});
        normalize_desired(&mut q);
        assert_eq!(q["spec"]["hard"], json!({"pods": "10", "requests.cpu": "4"}));
    }
}
