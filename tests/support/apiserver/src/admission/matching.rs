//! Whether a webhook applies to a request: kube-apiserver's `ShouldCallHook` (namespace
//! selector, object selector, rules, then matchConditions), pure.
use std::collections::BTreeMap;

use serde_json::Value;

use super::cel::{self, Bindings};
use super::errors::{forbidden, internal_error, namespace_not_found, quote};
use super::webhook::{MatchCondition, Rule, Webhook};
use super::{Attributes, review};
use crate::ApiError;
use crate::selectors::{LabelSelector, labels_of};

/// Kinds whose admission is never sent to webhooks, so a broken webhook cannot lock out its
/// own repair (`rules.IsExemptAdmissionConfigurationResource`).
const EXEMPT_KINDS: &[&str] = &[
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
];

/// Whether no webhook may see this request at all.
pub(crate) fn is_exempt(attributes: &Attributes) -> bool {
    attributes.kind.group == "admissionregistration.k8s.io" && EXEMPT_KINDS.contains(&attributes.kind.kind.as_str())
}

/// Whether the request is for a Namespace object itself (cluster-scoped, but its own
/// namespace selector subject).
fn is_namespace_object(attributes: &Attributes) -> bool {
    attributes.resource.group.is_empty()
        && attributes.resource.version == "v1"
        && attributes.resource.resource == "namespaces"
}

fn exact_or_wildcard(items: &[String], requested: &str) -> bool {
    items.iter().any(|item| item == "*" || item == requested)
}

/// One rule against the request (`rules.Matcher.Matches`).
pub(crate) fn rule_matches(rule: &Rule, attributes: &Attributes) -> bool {
    let namespaced = attributes.namespace.as_deref().is_some_and(|n| !n.is_empty());
    let scope = match rule.scope.as_deref() {
        None | Some("*") => true,
        Some("Namespaced") => !is_namespace_object(attributes) && namespaced,
        Some("Cluster") => is_namespace_object(attributes) || !namespaced,
        Some(_) => false,
    };
    let operation = rule
        .operations
        .iter()
        .any(|op| op == "*" || op == attributes.operation.as_str());
    let sub_resource = attributes.sub_resource.as_deref().unwrap_or_default();
    // `*` is every resource but no subresource, `*/*` everything, `*/scale` any resource's scale.
    let resource = rule.resources.iter().any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry.as_str(), ""));
        (res == "*" || res == attributes.resource.resource) && (sub == "*" || sub == sub_resource)
    });
    scope
        && operation
        && exact_or_wildcard(&rule.api_groups, &attributes.resource.group)
        && exact_or_wildcard(&rule.api_versions, &attributes.resource.version)
        && resource
}

fn parse_selector(selector: Option<&Value>) -> Result<LabelSelector, ApiError> {
    LabelSelector::from_object(selector).map_err(|e| internal_error(e.message))
}

/// `namespaceSelector`: cluster-scoped objects always match; a Namespace is judged by its own
/// labels (from the object on CREATE/UPDATE, else `namespace_labels` or the old object).
fn namespace_matches(
    webhook: &Webhook,
    attributes: &Attributes,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, ApiError> {
    let namespace = attributes.namespace.as_deref().unwrap_or_default();
    let namespace_object = attributes.resource.resource == "namespaces";
    if namespace.is_empty() && !namespace_object {
        return Ok(true);
    }
    let selector = parse_selector(webhook.namespace_selector.as_ref())?;
    if selector.is_empty() {
        return Ok(true);
    }
    let writes_itself = namespace_object
        && attributes.sub_resource.as_deref().unwrap_or_default().is_empty()
        && matches!(
            attributes.operation,
            super::Operation::Create | super::Operation::Update
        );
    let labels = if writes_itself {
        attributes.object.as_ref().map(labels_of).unwrap_or_default()
    } else if let Some(labels) = namespace_labels {
        labels.clone()
    } else if namespace_object && let Some(old) = &attributes.old_object {
        labels_of(old)
    } else {
        return Err(namespace_not_found(namespace));
    };
    Ok(selector.matches(&labels))
}

/// `objectSelector` on the new or the old object (either suffices). A Scale has no labels, so
/// a selector that requires one never matches it.
fn object_matches(webhook: &Webhook, attributes: &Attributes) -> Result<bool, ApiError> {
    let selector = parse_selector(webhook.object_selector.as_ref())?;
    if selector.is_empty() {
        return Ok(true);
    }
    Ok([&attributes.object, &attributes.old_object]
        .into_iter()
        .flatten()
        .any(|object| selector.matches(&labels_of(object))))
}

/// What `matchConditions` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Conditions {
    Match,
    NoMatch,
    /// Evaluation failed under failurePolicy Fail: the aggregated error text.
    Failed(String),
}

/// `matchconditions.Matcher.Match`: any false skips the webhook (even next to errors); errors
/// with only trues otherwise follow the failurePolicy (Ignore skips, Fail rejects).
fn evaluate_conditions(conditions: &[MatchCondition], bindings: Bindings<'_>, ignore_failures: bool) -> Conditions {
    let mut errors: Vec<String> = Vec::new();
    for condition in conditions {
        match cel::evaluate(&condition.expression, bindings) {
            Ok(Value::Bool(false)) => return Conditions::NoMatch,
            Ok(Value::Bool(true)) => {}
            Ok(other) => errors.push(format!(
                "expression '{}' resulted in error: expected a bool result, got {other}",
                condition.expression
            )),
            Err(e) => errors.push(format!("expression '{}' resulted in error: {e}", condition.expression)),
        }
    }
    if errors.is_empty() {
        return Conditions::Match;
    }
    if ignore_failures {
        return Conditions::NoMatch;
    }
    errors.dedup();
    Conditions::Failed(if errors.len() == 1 {
        errors.concat()
    } else {
        format!("[{}]", errors.join(", "))
    })
}

/// Whether `webhook` is called for `attributes` (`Webhook.ShouldCallHook`). Selector errors
/// surface only when a rule matches; a matchCondition error under failurePolicy Fail is a 403.
pub(crate) fn should_call(
    webhook: &Webhook,
    attributes: &Attributes,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, ApiError> {
    let namespace = namespace_matches(webhook, attributes, namespace_labels);
    if namespace == Ok(false) {
        return Ok(false);
    }
    let object = object_matches(webhook, attributes);
    if object == Ok(false) {
        return Ok(false);
    }
    // matchPolicy Equivalent would also try equivalent group/versions of the resource; this
    // server serves each resource in exactly one, so Exact and Equivalent coincide.
    if !webhook.rules.iter().any(|rule| rule_matches(rule, attributes)) {
        return Ok(false);
    }
    namespace?;
    object?;
    if webhook.match_conditions.is_empty() {
        return Ok(true);
    }
    let request = review::cel_request(attributes);
    let object = attributes.object.clone().unwrap_or(Value::Null);
    let old_object = attributes.old_object.clone().unwrap_or(Value::Null);
    let bindings = Bindings {
        request: &request,
        object: &object,
        old_object: &old_object,
    };
    match evaluate_conditions(&webhook.match_conditions, bindings, webhook.ignore_failures) {
        Conditions::Match => Ok(true),
        Conditions::NoMatch => Ok(false),
        Conditions::Failed(cause) => {
            tracing::warn!(webhook = %quote(&webhook.name), %cause, "failed evaluating match conditions, failing closed");
            Err(forbidden(&attributes.resource, &attributes.name, cause))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::UserInfo;
    use crate::admission::{Gvk, Gvr, Operation};

    fn deployment_update(labels: Value) -> Attributes {
        let object = json!({"metadata": {"name": "web", "namespace": "shop", "labels": labels}});
        Attributes {
            kind: Gvk {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
            },
            resource: Gvr {
                group: "apps".into(),
                version: "v1".into(),
                resource: "deployments".into(),
            },
            sub_resource: None,
            name: "web".into(),
            namespace: Some("shop".into()),
            operation: Operation::Update,
            user: UserInfo {
                username: "alice".into(),
                ..Default::default()
            },
            object: Some(object.clone()),
            old_object: Some(object),
            dry_run: false,
            options: None,
        }
    }

    fn scale_update() -> Attributes {
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 5}});
        Attributes {
            kind: Gvk {
                group: "autoscaling".into(),
                version: "v1".into(),
                kind: "Scale".into(),
            },
            sub_resource: Some("scale".into()),
            object: Some(scale.clone()),
            old_object: Some(scale),
            ..deployment_update(json!({}))
        }
    }

    fn rule(resources: &[&str], operations: &[&str], scope: Option<&str>) -> Rule {
        Rule {
            api_groups: vec!["*".into()],
            api_versions: vec!["*".into()],
            resources: resources.iter().map(|r| r.to_string()).collect(),
            operations: operations.iter().map(|o| o.to_string()).collect(),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn resources_and_subresources_match_like_kube() {
        let deployment = deployment_update(json!({}));
        let scale = scale_update();
        let cases = [
            (&["*"][..], true, false),
            (&["*/*"][..], true, true),
            (&["*/scale"][..], false, true),
            (&["deployments/scale"][..], false, true),
            (&["deployments"][..], true, false),
            (&["deployments/status"][..], false, false),
            (&["statefulsets/scale"][..], false, false),
            (&["deployments", "deployments/scale"][..], true, true),
        ];
        for (resources, on_deployment, on_scale) in cases {
            let r = rule(resources, &["*"], None);
            assert_eq!(
                rule_matches(&r, &deployment),
                on_deployment,
                "{resources:?} on a Deployment"
            );
            assert_eq!(rule_matches(&r, &scale), on_scale, "{resources:?} on its Scale");
        }
    }

    #[test]
    fn operations_groups_versions_and_scope() {
        let attributes = deployment_update(json!({}));
        assert!(rule_matches(&rule(&["*"], &["UPDATE"], None), &attributes));
        assert!(!rule_matches(&rule(&["*"], &["CREATE", "DELETE"], None), &attributes));
        assert!(rule_matches(&rule(&["*"], &["*"], Some("Namespaced")), &attributes));
        assert!(!rule_matches(&rule(&["*"], &["*"], Some("Cluster")), &attributes));
        let mut r = rule(&["*"], &["*"], None);
        r.api_groups = vec![String::new()];
        assert!(!rule_matches(&r, &attributes), "the core group is not apps");
        r.api_groups = vec!["apps".into()];
        r.api_versions = vec!["v1beta1".into()];
        assert!(!rule_matches(&r, &attributes));

        let mut namespace = deployment_update(json!({}));
        namespace.resource = Gvr {
            group: String::new(),
            version: "v1".into(),
            resource: "namespaces".into(),
        };
        // kube sets the namespace attribute of a Namespace request to its own name.
        namespace.namespace = Some("shop".into());
        assert!(rule_matches(&rule(&["*"], &["*"], Some("Cluster")), &namespace));
        assert!(!rule_matches(&rule(&["*"], &["*"], Some("Namespaced")), &namespace));
    }

    #[test]
    fn match_conditions_false_beats_error_and_errors_follow_the_policy() {
        let request = json!({"userInfo": {"username": "alice"}});
        let null = Value::Null;
        let bindings = Bindings {
            request: &request,
            object: &null,
            old_object: &null,
        };
        let condition = |expression: &str| MatchCondition {
            name: "c".into(),
            expression: expression.into(),
        };
        let broken = condition("object.metadata.name == 'x'");
        let truthy = condition("request.userInfo.username == 'alice'");
        let falsy = condition("request.userInfo.username == 'bob'");
        assert_eq!(
            evaluate_conditions(std::slice::from_ref(&truthy), bindings, false),
            Conditions::Match
        );
        assert_eq!(
            evaluate_conditions(&[broken.clone(), falsy], bindings, false),
            Conditions::NoMatch
        );
        assert_eq!(
            evaluate_conditions(&[broken.clone(), truthy.clone()], bindings, true),
            Conditions::NoMatch
        );
        let Conditions::Failed(cause) = evaluate_conditions(&[broken, truthy], bindings, false) else {
            panic!("an error with failurePolicy Fail must fail");
        };
        assert!(
            cause.starts_with("expression 'object.metadata.name == 'x'' resulted in error: "),
            "{cause}"
        );
    }
}
