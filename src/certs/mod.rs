//! TEMP interface stand-in; replaced by wip/server at merge.
#![allow(missing_docs)]
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("certs")]
pub struct CertError;
pub struct DevCertPaths { pub ca_cert: PathBuf, pub cert: PathBuf, pub key: PathBuf }
pub fn ensure_dev_certs(_d: &Path, _h: &[String]) -> Result<DevCertPaths, CertError> { Err(CertError) }
