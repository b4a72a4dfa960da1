//! Webhook entries of stored Mutating/ValidatingWebhookConfiguration objects, with the
//! admissionregistration.k8s.io/v1 defaults applied and in kube's call order.
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::errors::internal_error;
use crate::ApiError;

/// `timeoutSeconds` when unset (the v1 default).
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// One rule of `rules`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
    /// `Cluster`, `Namespaced` or `*` (the default).
    pub scope: Option<String>,
}

/// `clientConfig.service`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ServiceReference {
    pub namespace: String,
    pub name: String,
    pub path: Option<String>,
    pub port: Option<u16>,
}

/// `clientConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ClientConfig {
    pub url: Option<String>,
    pub service: Option<ServiceReference>,
    /// Base64 of PEM certificates.
    pub ca_bundle: Option<String>,
}

/// One of `matchConditions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MatchCondition {
    pub name: String,
    pub expression: String,
}

/// A webhook entry as stored (camelCase, all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Entry {
    name: String,
    client_config: ClientConfig,
    rules: Vec<Rule>,
    failure_policy: Option<String>,
    namespace_selector: Option<Value>,
    object_selector: Option<Value>,
    side_effects: Option<String>,
    timeout_seconds: Option<u64>,
    admission_review_versions: Vec<String>,
    reinvocation_policy: Option<String>,
    match_conditions: Vec<MatchCondition>,
}

/// A webhook ready to be matched and called.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    /// Identity for reinvocation bookkeeping: (configuration position in call order, entry index).
    pub uid: (usize, usize),
    /// `metadata.name` of the configuration.
    pub configuration: String,
    pub name: String,
    pub mutating: bool,
    pub client: ClientConfig,
    pub rules: Vec<Rule>,
    /// `failurePolicy: Ignore` (the default is Fail).
    pub ignore_failures: bool,
    pub namespace_selector: Option<Value>,
    pub object_selector: Option<Value>,
    /// None when unset (only matters for dry-run requests).
    pub side_effects: Option<String>,
    pub timeout: Duration,
    pub review_versions: Vec<String>,
    /// `reinvocationPolicy: IfNeeded` (mutating only; default Never).
    pub reinvoke_if_needed: bool,
    pub match_conditions: Vec<MatchCondition>,
}

/// All entries of `configurations`, sorted like kube-apiserver: by configuration name (stable),
/// then in entry order.
pub(crate) fn entries(configurations: &[Value], mutating: bool) -> Result<Vec<Webhook>, ApiError> {
    let mut sorted: Vec<&Value> = configurations.iter().collect();
    sorted.sort_by_key(|c| name_of(c));
    let mut webhooks = Vec::new();
    for (position, configuration) in sorted.into_iter().enumerate() {
        let configuration_name = name_of(configuration);
        let items = configuration
            .get("webhooks")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (index, item) in items.iter().enumerate() {
            let entry: Entry = serde_json::from_value(item.clone()).map_err(|e| {
                internal_error(format!(
                    "invalid webhook {index} of configuration {configuration_name:?}: {e}"
                ))
            })?;
            webhooks.push(Webhook {
                uid: (position, index),
                configuration: configuration_name.to_owned(),
                name: entry.name,
                mutating,
                client: entry.client_config,
                rules: entry.rules,
                ignore_failures: entry.failure_policy.as_deref() == Some("Ignore"),
                namespace_selector: entry.namespace_selector,
                object_selector: entry.object_selector,
                side_effects: entry.side_effects,
                timeout: Duration::from_secs(entry.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)),
                review_versions: entry.admission_review_versions,
                reinvoke_if_needed: mutating && entry.reinvocation_policy.as_deref() == Some("IfNeeded"),
                match_conditions: entry.match_conditions,
            });
        }
    }
    Ok(webhooks)
}

fn name_of(configuration: &Value) -> &str {
    configuration
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sorted_by_configuration_name_then_entry_order_with_v1_defaults() {
        let configs = vec![
            json!({"metadata": {"name": "zeta"}, "webhooks": [{"name": "z1"}]}),
            json!({"metadata": {"name": "alpha"}, "webhooks": [{"name": "a1", "reinvocationPolicy": "IfNeeded"}, {"name": "a2", "failurePolicy": "Ignore", "timeoutSeconds": 3}]}),
        ];
        let hooks = entries(&configs, true).unwrap();
        let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a1", "a2", "z1"]);
        assert_eq!(hooks[0].uid, (0, 0));
        assert_eq!(hooks[2].uid, (1, 0));
        assert!(hooks[0].reinvoke_if_needed && !hooks[1].reinvoke_if_needed);
        assert!(!hooks[0].ignore_failures && hooks[1].ignore_failures);
        assert_eq!(hooks[0].timeout, Duration::from_secs(10));
        assert_eq!(hooks[1].timeout, Duration::from_secs(3));
        // Validating webhooks never reinvoke.
        assert!(!entries(&configs, false).unwrap()[0].reinvoke_if_needed);
    }

    #[test]
    fn a_malformed_entry_is_an_internal_error() {
        let configs = vec![json!({"metadata": {"name": "x"}, "webhooks": [{"name": "w", "rules": "nope"}]})];
        let error = entries(&configs, false).unwrap_err();
        assert_eq!(error.code, 500);
    }
}
