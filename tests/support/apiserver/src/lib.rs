//! A faithful in-process Kubernetes API server for driftguard's integration tests.
//!
//! kube-apiserver cannot run on our machines, so this server stands in for it: HTTPS on
//! 127.0.0.1 with its own CA, bearer-token identities, discovery (legacy and aggregated),
//! objects with resourceVersions, watches, the four patch types, subresources, defaulting and
//! admission webhooks called like kube-apiserver calls them. kube::Client and the real
//! `/usr/bin/kubectl` talk to it. Where it deliberately simplifies, the module docs say so
//! (see `SIMPLIFICATIONS`).
//!
//! Module ownership (one concern each):
//! - [`server`]: start/stop, TLS, kubeconfig, identities, HTTP routing and the write pipeline.
//! - [`discovery`]: the resource registry (built-in kinds + CRDs), `/version`, `/api`,
//!   `/apis`, aggregated discovery, `/openapi/v3`.
//! - [`store`]: objects, resourceVersions, list, watch, optimistic concurrency, deletion.
//! - [`defaults`]: API-server defaulting and normalisation of built-in kinds.
//! - [`patch`]: JSON patch, merge patch, strategic merge patch, server-side apply and
//!   managedFields (pure functions).
//! - [`admission`]: webhook matching (rules, selectors, matchConditions) and calls.
//! - [`selectors`]: label and field selectors.
//! - [`faults`]: injected failures and latency.

pub mod admission;
pub mod defaults;
pub mod discovery;
pub mod faults;
pub mod patch;
pub mod selectors;
pub mod server;
pub mod store;

pub use server::{Identity, RequestRecord, ResponseRecord, ServerOptions, TestApiServer};

/// What this server deliberately does differently from kube-apiserver (kept in one place so
/// a reader of a test failure can check it first).
pub const SIMPLIFICATIONS: &str = "see the \"Simplifications\" sections of the module docs of server (and its auth, pipeline, watch, controllers, table, protobuf submodules), store, discovery, defaults, patch and admission";

/// A Kubernetes API error, rendered as a `Status` object with its HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Forbidden`, `Gone`, `BadRequest`, ...
    pub reason: String,
    /// Human message (kubectl prints it).
    pub message: String,
    /// Optional `details` (name, group, kind, causes).
    pub details: Option<serde_json::Value>,
    /// Warnings sent as `Warning` headers with the error (admission warnings gathered before
    /// a webhook refused the request).
    pub warnings: Vec<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
            warnings: Vec::new(),
        }
    }

    /// The `Status` body kube-apiserver sends.
    pub fn status(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The requesting identity, as put in AdmissionReview `userInfo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct UserInfo {
    /// Username.
    pub username: String,
    /// Uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}
