//! TEMP interface stand-in; replaced by wip/drift at merge.
#![allow(missing_docs, dead_code)]
use serde_json::Value;
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath;
impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x")
    }
}
impl FieldPath {
    pub fn starts_with_key(&self, _k: &str) -> bool {
        false
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDrift {
    pub path: FieldPath,
    pub git: Option<Value>,
    pub attempted: Option<Value>,
    pub previous: Option<Value>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct IgnorePath;
#[derive(Debug, thiserror::Error)]
#[error("drift")]
pub struct DriftError;
impl IgnorePath {
    pub fn parse(_s: &str) -> Result<Self, DriftError> {
        Ok(IgnorePath)
    }
}
pub fn detect(_d: &Value, _o: Option<&Value>, _n: &Value, _i: &[IgnorePath]) -> Vec<FieldDrift> {
    vec![]
}
pub fn revert_patch(_n: &Value, _d: &Value, _x: &[FieldDrift]) -> json_patch::Patch {
    json_patch::Patch(vec![])
}
pub mod normalize {
    pub fn normalize_desired(_o: &mut serde_json::Value) {}
}
