//! TEMP interface stand-in; replaced by wip/source at merge.
#![allow(missing_docs, dead_code)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference { Head, Branch(String), Tag(String), Commit(String) }
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision { pub commit: String, pub reference: String }
#[derive(Debug, Clone)]
pub struct SourceFile { pub path: String, pub content: Vec<u8> }
#[derive(Debug, thiserror::Error)]
#[error("source")]
pub struct SourceError;
pub struct LocalRepository;
impl LocalRepository {
    pub fn open(_url: &str) -> Result<Self, SourceError> { Err(SourceError) }
    pub fn resolve(&self, _r: &GitReference) -> Result<Revision, SourceError> { Err(SourceError) }
    pub fn read_files(&self, _r: &Revision, _d: &str) -> Result<Vec<SourceFile>, SourceError> { Err(SourceError) }
}
