//! Admission like kube-apiserver: matching ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration entries are called with an AdmissionReview v1.
//!
//! The behaviour follows k8s.io/apiserver's webhook admission plugins (Kubernetes 1.33):
//!
//! - **Order.** Configurations sort by `metadata.name`, entries keep their order. All mutating
//!   webhooks run first, one after another, each seeing the object as patched by the ones
//!   before it; then the validating webhooks run concurrently on the final object. Warnings
//!   and annotations are gathered in that order; of several validating failures the first in
//!   order is returned (kube returns whichever finished first).
//! - **Matching** (`ShouldCallHook`): namespaceSelector (cluster-scoped objects always match;
//!   a Namespace is judged by its own labels), objectSelector on the new *or* the old object
//!   (labels only — a Scale has none, so a selector requiring a label never matches it, while a
//!   purely negative selector such as `DoesNotExist` does, exactly as in kube), rules (`*` is
//!   every resource but no subresource, `*/*` everything, `*/scale` any resource's scale;
//!   operations with `*`; scope `Cluster|Namespaced|*`), then matchConditions. Selector errors
//!   only count when a rule matches. Requests for the webhook and admission-policy
//!   configuration kinds themselves are never sent to webhooks.
//! - **matchConditions**: all must be true to call the webhook. Any false skips it even next
//!   to errors; otherwise an evaluation error skips it under failurePolicy Ignore and rejects
//!   the request with 403 `<resource> "<name>" is forbidden: expression '<expr>' resulted in
//!   error: ...` under Fail (kube's `NewForbidden`). The expression language is the CEL subset
//!   documented in `cel.rs`; an expression outside it is such an evaluation error.
//! - **The call**: a fresh uuid per call; every field kube sends (`uid`, `kind`, `resource`,
//!   `subResource`, `requestKind`, `requestResource`, `requestSubResource`, `name`,
//!   `namespace`, `operation`, `userInfo`, `object`, `oldObject`, `dryRun`, `options`, with
//!   Go's `omitempty` for the optional strings and `null` for absent objects); HTTPS POST with
//!   `?timeout=<n>s`, HTTP/1.1, TLS verified against `caBundle` only; `timeoutSeconds`
//!   (default 10) bounds connect + TLS + answer. `clientConfig.url` is called as given;
//!   `clientConfig.service` as `https://<name>.<namespace>.svc:<port><path>` with TLS server
//!   name `<name>.<namespace>.svc` — the webhook's certificate must carry that SAN, as in a
//!   cluster — dialed at the base URL given to [`Dispatcher::map_service`].
//! - **Failures** (unreachable, TLS, timeout, non-2xx, undecodable answer, wrong uid/kind,
//!   patch without patchType...) follow `failurePolicy`: Ignore skips the webhook (and records
//!   kube's `failed-open.*` audit annotation), Fail (the default) answers 500 InternalError
//!   `Internal error occurred: failed calling webhook "<name>": <reason>`, the reason worded
//!   like kube's (`failed to call webhook: Post "<url>": ...`).
//! - **Dry run**: a webhook whose `sideEffects` is not `None`/`NoneOnDryRun` rejects a dry-run
//!   request with 400 `admission webhook "<name>" does not support dry run` (no failurePolicy).
//! - **Denial**: `allowed: false` becomes the webhook's status with the message
//!   `admission webhook "<name>" denied the request: <message>` (or `...: <reason>`, or
//!   `... denied the request without explanation`), code as set but at least 400 (400 when
//!   unset), and reason exactly as the webhook set it (empty when unset — kubectl then prints
//!   `Error from server: ...` instead of `Error from server (Forbidden): ...`).
//! - **Mutation**: a JSONPatch (base64) is applied to the object handed to the next webhook.
//!   A non-empty patch on DELETE (no object) is a 500. A patch that does not apply is a 500
//!   (not subject to failurePolicy, as in kube). On a subresource the patch edits the
//!   subresource's object (a Scale). `reinvocationPolicy: IfNeeded` webhooks that ran before a
//!   later webhook changed the object are called once more in a single reinvocation round,
//!   with kube's bookkeeping (a webhook skipped in the first round is never called in the
//!   second).
//! - **Warnings and audit annotations**: warnings in call order, empty ones dropped, duplicates
//!   kept once (kube's warning recorder); they are returned with denials too (see
//!   [`Dispatcher::verdict`]). Webhook `auditAnnotations` are keyed `<webhook name>/<key>`
//!   (first value wins); kube's own `mutation.webhook.admission.k8s.io/round_<r>_index_<i>`,
//!   `patch.webhook.admission.k8s.io/...` and `failed-open.*` annotations are added too.
//!
//! # Simplifications
//!
//! - `matchPolicy: Equivalent` makes kube also try equivalent group/versions of a resource;
//!   this server serves each resource in one group/version, so Equivalent and Exact coincide
//!   and `kind`/`resource` always equal `requestKind`/`requestResource`.
//! - matchConditions are parsed at call time (kube rejects bad CEL when the configuration is
//!   written) and only the CEL subset of `cel.rs` exists; an expression outside it behaves
//!   like an evaluation error. A condition yielding a non-bool is also treated as an error.
//! - Only AdmissionReview v1 is spoken: a webhook whose `admissionReviewVersions` lacks `v1`
//!   fails with `could not create admission objects: ...` (failurePolicy applies).
//! - Without `caBundle` nothing is trusted (kube would use the system roots).
//! - `clientConfig.service.port` appears in the URL and Host header but the connection goes to
//!   the mapped base URL's address; an unmapped service fails like a Service without
//!   endpoints (`service "<name>" not found`), i.e. as a call failure.
//! - Go's error texts are reproduced for the common cases (connection refused, unknown
//!   authority, name mismatch, expiry, deadline); other TLS and I/O errors carry rustls's or
//!   the OS's wording. Non-2xx answers use client-go's generic sentences; the REST client's
//!   retries on 429/5xx with `Retry-After` are not reproduced.
//! - The patched object is not re-decoded into its kind or re-defaulted here (kube does
//!   both after every patch): the caller defaults and validates the final object.
//! - Warning size limits of kube's recorder (truncation beyond 4 KiB in total) are not applied.
//! - Webhooks are not cached: every call builds its TLS configuration afresh.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use serde_json::{Value, json};

use crate::{ApiError, UserInfo};

mod cel;
mod client;
mod errors;
mod matching;
mod review;
mod webhook;

use errors::{dry_run_unsupported, internal_error, quote};
use review::{Answer, AnswerError};
use webhook::Webhook;

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

impl Operation {
    /// As written in rules and reviews (`CREATE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
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
    /// Object name (empty on a CREATE with generateName).
    pub name: String,
    /// Namespace (None for cluster-scoped). kube sets it to the Namespace's own name for
    /// UPDATE/DELETE of a Namespace object (`/api/v1/namespaces/<name>`), not for its CREATE.
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

/// The full result of admission: the object or the error, plus what was gathered on the way.
/// kube-apiserver sends the warnings of webhooks that ran before a denial with the error
/// response, so a caller that renders `Warning:` headers should use this rather than
/// [`Dispatcher::admit`].
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The object after mutation (None for DELETE), or the error to answer with.
    pub result: Result<Option<Value>, ApiError>,
    /// Warnings in call order, deduplicated.
    pub warnings: Vec<String>,
    /// Audit annotations (webhooks' own, keyed `<webhook name>/<key>`, plus kube's).
    pub audit_annotations: BTreeMap<String, String>,
}

/// Calls webhooks. Holds the HTTPS client and the test's service -> URL mapping.
#[derive(Debug, Default)]
pub struct Dispatcher {
    services: RwLock<BTreeMap<(String, String), String>>,
}

/// How a webhook invocation failed.
#[derive(Debug)]
enum HookError {
    /// kube's `ErrCallingWebhook` (the reason after `failed calling webhook "<name>": `):
    /// failurePolicy decides.
    Calling(String),
    /// A denial or an admission error: returned as is, whatever the failurePolicy.
    Status(ApiError),
}

/// Warnings and audit annotations as kube records them.
#[derive(Debug, Default)]
struct Record {
    warnings: Vec<String>,
    audit_annotations: BTreeMap<String, String>,
}

impl Record {
    fn annotate(&mut self, key: String, value: String) {
        // `AddAnnotation` refuses to overwrite: the first value stays.
        self.audit_annotations.entry(key).or_insert(value);
    }

    fn answer(&mut self, webhook: &str, answer: &Answer) {
        for (key, value) in &answer.audit_annotations {
            self.annotate(format!("{webhook}/{key}"), value.clone());
        }
        for warning in &answer.warnings {
            if !warning.is_empty() && !self.warnings.contains(warning) {
                self.warnings.push(warning.clone());
            }
        }
    }
}

/// kube's reinvocation bookkeeping (`webhookReinvokeContext`).
#[derive(Debug, Default)]
struct Reinvocation {
    previously_invoked: BTreeSet<(usize, usize)>,
    reinvoke: BTreeSet<(usize, usize)>,
    should_reinvoke: bool,
}

/// `failurePolicy` applied to a failed invocation; failing open records kube's annotation
/// under `failed_open_key`.
fn settle(webhook: &Webhook, error: HookError, record: &mut Record, failed_open_key: String) -> Result<(), ApiError> {
    match error {
        HookError::Calling(reason) if webhook.ignore_failures => {
            tracing::warn!(webhook = %webhook.name, %reason, "failed calling webhook, failing open");
            record.annotate(failed_open_key, webhook.name.clone());
            Ok(())
        }
        HookError::Calling(reason) => {
            tracing::warn!(webhook = %webhook.name, %reason, "failed calling webhook, failing closed");
            Err(internal_error(format!(
                "failed calling webhook {}: {reason}",
                quote(&webhook.name)
            )))
        }
        HookError::Status(error) => Err(error),
    }
}

/// Names of the webhooks `configs` would call for `attributes` on the first pass, mutating
/// ones first, each list in call order, without calling anything: the matcher alone
/// (selectors, rules, matchConditions). Errors are those admission would answer with
/// (a matchCondition error under failurePolicy Fail, a missing namespace, a bad selector).
pub fn selected_webhooks(
    configs: &WebhookConfigs,
    attributes: &Attributes,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<Vec<String>, ApiError> {
    if matching::is_exempt(attributes) {
        return Ok(Vec::new());
    }
    let mut hooks = webhook::entries(&configs.mutating, true)?;
    hooks.extend(webhook::entries(&configs.validating, false)?);
    let mut names = Vec::new();
    for hook in hooks {
        if matching::should_call(&hook, attributes, namespace_labels)? {
            names.push(hook.name);
        }
    }
    Ok(names)
}

impl Dispatcher {
    /// A dispatcher with no service mappings.
    pub fn new() -> Self {
        Dispatcher::default()
    }

    /// Route `clientConfig.service` `namespace/name` (port, path appended) to `base_url`
    /// (e.g. `https://127.0.0.1:34567`): the test stand-in for Service networking. The
    /// webhook's certificate must be valid for `<name>.<namespace>.svc`, as in a cluster.
    pub fn map_service(&self, namespace: &str, name: &str, base_url: &str) {
        let mut services = self.services.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        services.insert((namespace.to_owned(), name.to_owned()), base_url.to_owned());
    }

    fn service(&self, namespace: &str, name: &str) -> Option<String> {
        let services = self.services.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        services.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Run mutating webhooks (with reinvocation), then validating ones. `namespace_labels`
    /// are the labels of the request's namespace (None for cluster-scoped objects; for a
    /// namespaced request None means the namespace does not exist, which a webhook with a
    /// namespaceSelector answers with 404 like kube). For DELETE of a Namespace pass its own
    /// labels.
    pub async fn admit(
        &self,
        configs: &WebhookConfigs,
        attributes: Attributes,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Result<Outcome, ApiError> {
        let Verdict {
            result,
            warnings,
            audit_annotations,
        } = self.verdict(configs, attributes, namespace_labels).await;
        match result {
            Ok(object) => Ok(Outcome {
                object,
                warnings,
                audit_annotations,
            }),
            // kube sends the warnings of webhooks that ran before a refusal along with it.
            Err(mut error) => {
                error.warnings = warnings;
                Err(error)
            }
        }
    }

    /// [`Dispatcher::admit`], keeping the warnings and audit annotations when the request is
    /// refused (kube sends those warnings along with the error).
    pub async fn verdict(
        &self,
        configs: &WebhookConfigs,
        attributes: Attributes,
        namespace_labels: Option<BTreeMap<String, String>>,
    ) -> Verdict {
        let mut record = Record::default();
        let result = self
            .run(configs, attributes, namespace_labels.as_ref(), &mut record)
            .await;
        Verdict {
            result,
            warnings: record.warnings,
            audit_annotations: record.audit_annotations,
        }
    }

    async fn run(
        &self,
        configs: &WebhookConfigs,
        mut attributes: Attributes,
        namespace_labels: Option<&BTreeMap<String, String>>,
        record: &mut Record,
    ) -> Result<Option<Value>, ApiError> {
        if matching::is_exempt(&attributes) {
            return Ok(attributes.object);
        }
        let mutating = webhook::entries(&configs.mutating, true)?;
        let validating = webhook::entries(&configs.validating, false)?;
        let mut reinvocation = Reinvocation::default();
        // Round 0 calls every mutating webhook; kube allows at most one reinvocation round.
        for round in 0..2 {
            if round > 0 && !reinvocation.should_reinvoke {
                break;
            }
            self.mutating_round(
                &mutating,
                &mut attributes,
                namespace_labels,
                &mut reinvocation,
                round,
                record,
            )
            .await?;
        }
        self.validate(&validating, &attributes, namespace_labels, record)
            .await?;
        Ok(attributes.object)
    }

    async fn mutating_round(
        &self,
        hooks: &[Webhook],
        attributes: &mut Attributes,
        namespace_labels: Option<&BTreeMap<String, String>>,
        state: &mut Reinvocation,
        round: usize,
        record: &mut Record,
    ) -> Result<(), ApiError> {
        for (index, hook) in hooks.iter().enumerate() {
            if !matching::should_call(hook, attributes, namespace_labels)? {
                continue;
            }
            // During reinvocation only webhooks marked for it run; none runs for the first time.
            if round > 0 && !state.reinvoke.contains(&hook.uid) {
                continue;
            }
            let result = self.mutate(hook, attributes, record, round, index).await;
            let changed = matches!(result, Ok(true));
            record.annotate(
                format!("mutation.webhook.admission.k8s.io/round_{round}_index_{index}"),
                json!({ "configuration": hook.configuration, "webhook": hook.name, "mutated": changed }).to_string(),
            );
            if changed {
                state.reinvoke.append(&mut state.previously_invoked);
                state.should_reinvoke = true;
            }
            if hook.reinvoke_if_needed {
                state.previously_invoked.insert(hook.uid);
            }
            if let Err(error) = result {
                let key = format!("failed-open.mutation.webhook.admission.k8s.io/round_{round}_index_{index}");
                settle(hook, error, record, key)?;
            }
        }
        Ok(())
    }

    /// Call one mutating webhook and apply its patch; true when the object changed.
    async fn mutate(
        &self,
        hook: &Webhook,
        attributes: &mut Attributes,
        record: &mut Record,
        round: usize,
        index: usize,
    ) -> Result<bool, HookError> {
        let answer = self.call(hook, attributes).await?;
        record.answer(&hook.name, &answer);
        if !answer.allowed {
            return Err(HookError::Status(errors::denied(&hook.name, answer.status.as_ref())));
        }
        if answer.patch.is_empty() {
            return Ok(false);
        }
        let patch: json_patch::Patch = serde_json::from_slice(&answer.patch)
            .map_err(|e| HookError::Calling(format!("received undecodable patch in webhook response: {e}")))?;
        if patch.0.is_empty() {
            return Ok(false);
        }
        let Some(object) = attributes.object.as_mut() else {
            return Err(HookError::Status(internal_error(format!(
                "admission webhook {} attempted to modify the object, which is not supported for this operation",
                quote(&hook.name)
            ))));
        };
        if answer.patch_type.as_deref() != Some("JSONPatch") {
            let patch_type = answer.patch_type.unwrap_or_default();
            return Err(HookError::Calling(format!(
                "unsupported patch type {}",
                quote(&patch_type)
            )));
        }
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).map_err(|e| HookError::Status(internal_error(e)))?;
        let changed = patched != *object;
        *object = patched;
        record.annotate(
            format!("patch.webhook.admission.k8s.io/round_{round}_index_{index}"),
            json!({ "configuration": hook.configuration, "webhook": hook.name, "patch": patch, "patchType": "JSONPatch" })
                .to_string(),
        );
        Ok(changed)
    }

    /// All matching validating webhooks, called concurrently on the final object.
    async fn validate(
        &self,
        hooks: &[Webhook],
        attributes: &Attributes,
        namespace_labels: Option<&BTreeMap<String, String>>,
        record: &mut Record,
    ) -> Result<(), ApiError> {
        let mut relevant = Vec::new();
        for hook in hooks {
            if matching::should_call(hook, attributes, namespace_labels)? {
                relevant.push(hook);
            }
        }
        let calls = relevant.iter().map(|hook| self.call(hook, attributes));
        let results = futures_util::future::join_all(calls).await;
        let mut first_error = None;
        for (index, (hook, result)) in relevant.into_iter().zip(results).enumerate() {
            let outcome = match result {
                Ok(answer) => {
                    record.answer(&hook.name, &answer);
                    if answer.allowed {
                        continue;
                    }
                    Err(errors::denied(&hook.name, answer.status.as_ref()))
                }
                Err(error) => {
                    let key = format!("failed-open.validating.webhook.admission.k8s.io/round_0_index_{index}");
                    settle(hook, error, record, key)
                }
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One HTTPS round trip with a verified answer (warnings not yet recorded).
    async fn call(&self, hook: &Webhook, attributes: &Attributes) -> Result<Answer, HookError> {
        if attributes.dry_run {
            match hook.side_effects.as_deref() {
                None => return Err(HookError::Calling("Webhook SideEffects is nil".to_owned())),
                Some("None" | "NoneOnDryRun") => {}
                Some(_) => return Err(HookError::Status(dry_run_unsupported(&hook.name))),
            }
        }
        if !hook.review_versions.iter().any(|v| v == "v1") {
            return Err(HookError::Calling(
                "could not create admission objects: webhook does not accept v1 AdmissionReview".to_owned(),
            ));
        }
        let rest_client = |e: client::TargetError| HookError::Calling(format!("could not get REST client: {}", e.0));
        let lookup = |namespace: &str, name: &str| self.service(namespace, name);
        let target = client::target(&hook.client, hook.timeout, &lookup).map_err(rest_client)?;
        let roots = client::roots(hook.client.ca_bundle.as_deref()).map_err(rest_client)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&review::review(attributes, &uid))
            .map_err(|e| HookError::Calling(format!("could not create admission objects: {e}")))?;
        let reply = client::post(&target, roots, body, hook.timeout)
            .await
            .map_err(|e| HookError::Calling(format!("failed to call webhook: {}", e.0)))?;
        // client-go's REST client treats 200..=206 as success.
        if !(200..=206).contains(&reply.status) {
            return Err(HookError::Calling(format!(
                "failed to call webhook: {}",
                client::unexpected_status(&reply)
            )));
        }
        review::verify(&reply.body, &uid, hook.mutating).map_err(|e| match e {
            AnswerError::Undecodable(reason) => HookError::Calling(format!("failed to call webhook: {reason}")),
            AnswerError::Invalid(reason) => HookError::Calling(format!("received invalid webhook response: {reason}")),
        })
    }
}
