//! The CustomResourceDefinitions of GitSource and Guard, as `driftguard crds` prints them and
//! manifests/crds/ ships them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{GitSource, Guard};

/// Why the CRDs could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// YAML serialization failed.
    #[error("cannot print the CRDs as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// Both CRDs, GitSource first (a Guard refers to a GitSource).
pub fn crds() -> [CustomResourceDefinition; 2] {
    [GitSource::crd(), Guard::crd()]
}

/// Both CRDs as one multi-document YAML stream, each document starting with `---`.
/// Deterministic: the schemas come from the Rust types, in declaration order.
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
