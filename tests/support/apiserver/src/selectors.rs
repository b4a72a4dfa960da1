//! Label selectors (string form for `?labelSelector=` and the `LabelSelector` object form for
//! webhooks' objectSelector/namespaceSelector) and field selectors.
use std::collections::BTreeMap;

use crate::ApiError;

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` (kube's string form). Empty matches all.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let _ = text;
        Err(ApiError::new(400, "BadRequest", "selectors: not implemented yet"))
    }

    /// From a `LabelSelector` object (`matchLabels`, `matchExpressions`). Null/absent matches all;
    /// `{}` matches all.
    pub fn from_object(selector: Option<&serde_json::Value>) -> Result<Self, ApiError> {
        let _ = selector;
        Err(ApiError::new(400, "BadRequest", "selectors: not implemented yet"))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let _ = labels;
        self.requirements.is_empty()
    }
}

/// Labels of an object (`metadata.labels`) as a map.
pub fn labels_of(object: &serde_json::Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object)
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
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parse `metadata.name=x,metadata.namespace!=y`; other fields are a 400 like kube-apiserver.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let _ = text;
        Err(ApiError::new(400, "BadRequest", "selectors: not implemented yet"))
    }

    /// Whether `object` satisfies every term.
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        let _ = object;
        self.terms.is_empty()
    }
}
