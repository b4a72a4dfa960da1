//! Label selectors (the string form of `?labelSelector=` and the `LabelSelector` object form of
//! webhooks' objectSelector/namespaceSelector) and field selectors, with kube's semantics:
//! `!=`, `notin` and `!key` also match objects that lack the label; `gt`/`lt` compare integers.
//!
//! Simplifications: field selectors support only `metadata.name` and `metadata.namespace`
//! (what every kind supports); kind-specific fields (`spec.nodeName`, `status.phase`, ...)
//! answer 400 like an unsupported field does in kube.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::ApiError;

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
            Requirement::GreaterThan(key, n) => labels
                .get(key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::LessThan(key, n) => labels
                .get(key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

fn bad(message: String) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

/// Split on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(text: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| {
            bad(format!(
                "unable to parse requirement: {whole:?}: expected a (value, ...) set"
            ))
        })?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, ApiError> {
    let whole = part.trim();
    let key_of = |key: &str| -> Result<String, ApiError> {
        let key = key.trim();
        if valid_key(key) {
            Ok(key.to_owned())
        } else {
            Err(bad(format!("unable to parse requirement: invalid label key {key:?}")))
        }
    };
    if let Some(key) = whole.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_of(key)?));
    }
    for (op, build) in [("!=", 0u8), ("==", 1), ("=", 1)] {
        if let Some((key, value)) = whole.split_once(op) {
            let key = key_of(key)?;
            let value = value.trim().to_owned();
            return Ok(if build == 0 {
                Requirement::NotIn(key, vec![value])
            } else {
                Requirement::In(key, vec![value])
            });
        }
    }
    for (op, greater) in [(">", true), ("<", false)] {
        if let Some((key, value)) = whole.split_once(op) {
            let key = key_of(key)?;
            let n = value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad(format!("unable to parse requirement: {whole:?}: {op} needs an integer")))?;
            return Ok(if greater {
                Requirement::GreaterThan(key, n)
            } else {
                Requirement::LessThan(key, n)
            });
        }
    }
    let mut words = whole.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key_of(key)?));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key_of(key)?, parse_set(set, whole)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key_of(key)?, parse_set(set, whole)?));
    }
    Err(bad(format!("unable to parse requirement: {whole:?}")))
}

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3` (kube's string form). Empty matches all.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_top_level(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// From a `LabelSelector` object (`matchLabels`, `matchExpressions`). Null/absent matches
    /// everything, as does `{}`.
    pub fn from_object(selector: Option<&Value>) -> Result<Self, ApiError> {
        let Some(selector) = selector.filter(|s| !s.is_null()) else {
            return Ok(Self::default());
        };
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value
                    .as_str()
                    .ok_or_else(|| bad(format!("matchLabels[{key}] must be a string")))?;
                requirements.push(Requirement::In(key.clone(), vec![value.to_owned()]));
            }
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("matchExpressions entry without a key".to_owned()))?
                .to_owned();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            let operator = expression.get("operator").and_then(Value::as_str).unwrap_or("");
            requirements.push(match operator {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(bad(format!("{other:?} is not a valid label selector operator"))),
            });
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Labels of an object (`metadata.labels`) as a map.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A field selector on `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`), comma-joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// (JSON pointer, equals?, value)
    terms: Vec<(&'static str, bool, String)>,
}

/// Fields every kind supports.
const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
];

impl FieldSelector {
    /// Parse `metadata.name=x,metadata.namespace!=y`; other fields are a 400 like kube-apiserver.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(bad(format!(
                    "invalid selector: {part:?}; expected field=value or field!=value"
                )));
            };
            let field = field.trim();
            let pointer = FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, pointer)| *pointer)
                .ok_or_else(|| bad(format!("field label not supported: {field}")))?;
            terms.push((pointer, equals, value.trim().to_owned()));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether `object` satisfies every term (a missing field reads as "").
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(pointer, equals, value)| {
            let actual = object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equals
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn string_selectors_follow_kube_semantics() {
        let l = labels(&[("app", "web"), ("tier", "frontend"), ("rank", "5")]);
        for (text, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("app in (api)", false),
            ("tier notin (backend)", true),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier in (frontend,edge),!missing", true),
            ("app=web,tier=backend", false),
            ("rank>3", true),
            ("rank<3", false),
        ] {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn bad_string_selectors_are_400s() {
        for text in ["app in web", "a b c", "=x", "rank>high"] {
            let err = LabelSelector::parse(text).unwrap_err();
            assert_eq!(err.code, 400, "{text}");
        }
    }

    #[test]
    fn object_selectors_match_labels_and_expressions() {
        let l = labels(&[
            ("driftguard.io/managed", "true"),
            ("kubernetes.io/metadata.name", "apps"),
        ]);
        let managed = json!({"matchLabels": {"driftguard.io/managed": "true"}});
        assert!(LabelSelector::from_object(Some(&managed)).unwrap().matches(&l));
        assert!(
            !LabelSelector::from_object(Some(&managed))
                .unwrap()
                .matches(&BTreeMap::new())
        );
        let excluded = json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "driftguard"]}]});
        assert!(LabelSelector::from_object(Some(&excluded)).unwrap().matches(&l));
        let system = labels(&[("kubernetes.io/metadata.name", "kube-system")]);
        assert!(!LabelSelector::from_object(Some(&excluded)).unwrap().matches(&system));
        assert!(LabelSelector::from_object(None).unwrap().matches(&BTreeMap::new()));
        assert!(LabelSelector::from_object(Some(&json!({}))).unwrap().is_empty());
        let bad_op = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(LabelSelector::from_object(Some(&bad_op)).unwrap_err().code, 400);
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let object = json!({"metadata": {"name": "web", "namespace": "apps"}});
        assert!(FieldSelector::parse("metadata.name=web").unwrap().matches(&object));
        assert!(
            FieldSelector::parse("metadata.name==web,metadata.namespace=apps")
                .unwrap()
                .matches(&object)
        );
        assert!(
            !FieldSelector::parse("metadata.namespace!=apps")
                .unwrap()
                .matches(&object)
        );
        assert!(FieldSelector::parse("").unwrap().matches(&object));
        let err = FieldSelector::parse("spec.nodeName=n1").unwrap_err();
        assert!(err.message.contains("field label not supported"), "{}", err.message);
    }
}
