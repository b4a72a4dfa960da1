//! Admission like kube-apiserver: matching ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration entries are called with an AdmissionReview v1.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::{ApiError, UserInfo};

/// Group/version/kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Gvk {
    /// Group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// Group/version/resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Gvr {
    /// Group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Resource (plural).
    pub resource: String,
}

/// Admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
}

/// Everything kube-apiserver knows about a request when it calls webhooks.
#[derive(Debug, Clone)]
pub struct Attributes {
    /// Kind of the object (for a subresource: the subresource's kind, e.g. autoscaling/v1 Scale).
    pub kind: Gvk,
    /// Resource addressed.
    pub resource: Gvr,
    /// `scale`, `status` or None.
    pub sub_resource: Option<String>,
    /// Object name.
    pub name: String,
    /// Namespace (None for cluster-scoped).
    pub namespace: Option<String>,
    /// Operation.
    pub operation: Operation,
    /// Requesting user.
    pub user: UserInfo,
    /// New object (CREATE/UPDATE).
    pub object: Option<Value>,
    /// Old object (UPDATE/DELETE).
    pub old_object: Option<Value>,
    /// Dry run.
    pub dry_run: bool,
    /// CreateOptions/UpdateOptions/PatchOptions/DeleteOptions as kube-apiserver sends them.
    pub options: Option<Value>,
}

/// The webhook configuration objects currently stored.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfigs {
    /// MutatingWebhookConfiguration objects.
    pub mutating: Vec<Value>,
    /// ValidatingWebhookConfiguration objects.
    pub validating: Vec<Value>,
}

/// What admission let through.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The object after mutation (None for DELETE).
    pub object: Option<Value>,
    /// Warnings for `Warning: 299 - "..."` headers.
    pub warnings: Vec<String>,
    /// auditAnnotations collected, keyed `<webhook name>/<key>`.
    pub audit_annotations: BTreeMap<String, String>,
}

/// Calls webhooks. Holds the HTTPS client and the test's service -> URL mapping.
#[derive(Debug, Default)]
pub struct Dispatcher {}

impl Dispatcher {
    /// A dispatcher with no service mappings.
    pub fn new() -> Self {
        Dispatcher {}
    }

    /// Route `clientConfig.service` `namespace/name` (port, path appended) to `base_url`
    /// (e.g. `https://127.0.0.1:34567`): the test stand-in for Service networking.
    pub fn map_service(&self, namespace: &str, name: &str, base_url: &str) {
        let _ = (namespace, name, base_url);
    }

    /// Run mutating webhooks (with reinvocation), then validating ones. `namespace_labels`
    /// are the labels of the request's namespace (None for cluster-scoped objects).
    pub async fn admit(
        &self,
        configs: &WebhookConfigs,
        attributes: Attributes,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Result<Outcome, ApiError> {
        let _ = (configs, namespace_labels);
        Ok(Outcome {
            object: attributes.object,
            ..Default::default()
        })
    }
}
