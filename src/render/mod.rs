//! TEMP interface stand-in; replaced by wip/source at merge.
#![allow(missing_docs, dead_code)]
use crate::source::SourceFile;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin { pub file: String, pub line: u32 }
impl std::fmt::Display for Origin { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}:{}", self.file, self.line) } }
#[derive(Debug, Clone)]
pub struct Manifest { pub object: serde_json::Value, pub origin: Origin }
#[derive(Debug, thiserror::Error)]
#[error("render")]
pub struct RenderError;
pub fn render_plain(_files: &[SourceFile]) -> Result<Vec<Manifest>, RenderError> { Err(RenderError) }
