//! The pure admission decision: a decoded request plus the admission index -> [`Decision`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::Mode;
use crate::audit::{Actor, AuditEvent, EventKind, FieldRecord, ObjectRef, SCHEMA, now_rfc3339};
use crate::desired::{AdmissionIndex, HpaBounds, Managed};
use crate::drift::{self, FieldDrift, IgnorePath};

use super::Webhook;
use super::delegate;
use super::exempt::{Exemption, exemption};
use super::message;
use super::review::{Operation, Request, ReviewError};

/// Where the scale subresource's replicas live in the parent object. Built-in scalable kinds
/// all use this; custom resources declare `specReplicasPath` (read once discovery lands).
const REPLICAS_POINTER: &str = "/spec/replicas";

/// What the webhook answers.
#[derive(Debug)]
pub enum Verdict {
    /// Let it through unchanged.
    Allow,
    /// Refuse with this message.
    Deny(String),
    /// Let it through with this patch applied.
    Patch(json_patch::Patch),
}

/// A decision with everything needed to answer and record it.
#[derive(Debug)]
pub struct Decision {
    /// Metric label: `allowed`, `denied`, `reverted`, `audited`, `exempted`, `unmanaged`, `skipped`.
    pub label: &'static str,
    /// The answer.
    pub verdict: Verdict,
    /// `Warning:` lines for kubectl.
    pub warnings: Vec<String>,
    /// Copied into the API server's audit log.
    pub annotations: BTreeMap<&'static str, String>,
    /// The audit record, for non-trivial decisions.
    pub audit: Option<AuditEvent>,
}

impl Decision {
    /// A decision worth an audit record: annotations and the event follow from its parts.
    fn recorded(
        label: &'static str,
        kind: EventKind,
        verdict: Verdict,
        warnings: Vec<String>,
        (request, managed): (&Request<'_>, &Managed<'_>),
        drifts: &[FieldDrift],
        message: String,
    ) -> Self {
        Decision {
            label,
            annotations: annotations(label, managed, &field_list(drifts)),
            audit: Some(event(kind, request, managed, drifts, message)),
            verdict,
            warnings,
        }
    }

    /// Denied with `message`, recorded.
    fn denied(message: String, context: (&Request<'_>, &Managed<'_>), drifts: &[FieldDrift]) -> Self {
        let verdict = Verdict::Deny(message.clone());
        Self::recorded(
            "denied",
            EventKind::AdmissionDenied,
            verdict,
            Vec::new(),
            context,
            drifts,
            message,
        )
    }

    /// Allowed with `warnings`, recorded (audit mode).
    fn audited(warnings: Vec<String>, context: (&Request<'_>, &Managed<'_>), drifts: &[FieldDrift]) -> Self {
        let message = warnings.join("; ");
        Self::recorded(
            "audited",
            EventKind::AdmissionAudited,
            Verdict::Allow,
            warnings,
            context,
            drifts,
            message,
        )
    }

    fn pass(label: &'static str) -> Self {
        Decision {
            label,
            verdict: Verdict::Allow,
            warnings: Vec::new(),
            annotations: BTreeMap::new(),
            audit: None,
        }
    }
}

/// Settings admission needs beyond the Guards.
#[derive(Debug, Clone)]
pub struct AdmissionSettings {
    /// driftguard's own username (`system:serviceaccount:<ns>:<name>`); its writes are exempt.
    pub own_username: String,
    /// HorizontalPodAutoscaler bounds for delegate rules with `bounds.fromHPA` (kept current
    /// by a watch in cluster mode; empty otherwise).
    pub hpa: HpaBounds,
}

/// The Guard the object being changed names in its `driftguard.io/guard` annotation (None for
/// CREATE, and for `/scale`, whose Scale carries no annotations).
fn live_owner(request: &Request<'_>) -> Option<String> {
    let old: Value = serde_json::from_str(request.old_object?.get()).ok()?;
    old.pointer("/metadata/annotations")?
        .get(crate::api::GUARD_ANNOTATION)?
        .as_str()
        .map(str::to_owned)
}

/// Decide one request. Errors are malformed reviews (the caller answers 400).
pub fn decide(
    webhook: Webhook,
    request: &Request<'_>,
    index: &AdmissionIndex,
    settings: &AdmissionSettings,
) -> Result<Decision, ReviewError> {
    let subresource = request.sub_resource.as_deref().filter(|s| !s.is_empty());
    if subresource.is_some_and(|s| s != "scale") {
        return Ok(Decision::pass("skipped"));
    }
    let name = request.name.as_deref().unwrap_or("");
    if name.is_empty() || request.operation == Operation::Connect {
        return Ok(Decision::pass("unmanaged"));
    }
    // Of two Guards declaring the object, the one the live object names owns it, as the
    // enforcer decides (README "Multi-tenancy"); the old object is read only then.
    let Some(managed) = index.lookup_owned(
        &request.resource.group,
        &request.resource.resource,
        request.namespace.as_deref(),
        name,
        || live_owner(request),
    ) else {
        return Ok(Decision::pass("unmanaged"));
    };
    // `suspend` pauses the enforcer only; admission keeps the Guard's mode.
    if managed.guard.mode == Mode::Off {
        return Ok(Decision::pass("allowed"));
    }
    // The delegate rules naming the requester (None, without allocating, when there are none).
    let mine = delegate::for_requester(request, &managed);
    let exempt = exemption(request, &settings.own_username, &managed.guard.exemptions)
        // A delegate rule naming a built-in exempt controller (the HPA on /scale) is the
        // Guard's explicit word about it: its bounds apply.
        .filter(|why| !(*why == Exemption::System && mine.is_some()));
    if let Some(why) = exempt {
        let mut decision = Decision::pass("exempted");
        decision.annotations = annotations("exempted", &managed, "");
        // Our own writes are the enforcer's; only others' exempt edits are worth a record,
        // and only once per request (the validating pass).
        if why != Exemption::Own && webhook == Webhook::Validate {
            decision.audit = Some(event(
                EventKind::AdmissionExempted,
                request,
                &managed,
                &[],
                String::new(),
            ));
        }
        return Ok(decision);
    }
    if subresource.is_none()
        && let Some(decision) = decide_break_glass(webhook, request, &managed)
    {
        return Ok(decision);
    }
    if request.operation == Operation::Delete {
        return Ok(decide_delete(webhook, request, &managed));
    }
    let delegated: &[&IgnorePath] = mine.as_ref().map_or(&[], |m| &m.pointers);
    let mut compared = match subresource {
        Some(_) => scale_drift(request, &managed, delegated)?,
        None => object_drift(request, &managed, delegated)?,
    };
    if let Some(mine) = &mine
        && let Some(decision) = decide_delegated(webhook, request, &managed, mine, &mut compared, &settings.hpa)
    {
        return Ok(decision);
    }
    if compared.drifts.is_empty() {
        // Every decision on a managed object is on record, allows included (once, from the
        // validating pass); only unmanaged objects pass unrecorded.
        if webhook == Webhook::Validate {
            let (warnings, message) = match &compared.other_version {
                Some(version) => {
                    let warning = message::other_version_warning(&managed, version);
                    (vec![warning.clone()], warning)
                }
                None => (Vec::new(), "no field Git declares is changed".to_owned()),
            };
            return Ok(Decision::recorded(
                "allowed",
                EventKind::AdmissionAllowed,
                Verdict::Allow,
                warnings,
                (request, &managed),
                &[],
                message,
            ));
        }
        return Ok(Decision::pass("allowed"));
    }
    Ok(decide_drift(webhook, request, &managed, compared))
}

/// Break-glass ([`super::break_glass`]) when the request touches its annotation or the object
/// is detached; None leaves the request to the normal rules. The raw JSON is searched first so
/// ordinary requests pay no extra parse.
fn decide_break_glass(webhook: Webhook, request: &Request<'_>, managed: &Managed<'_>) -> Option<Decision> {
    use super::break_glass::{BREAK_GLASS_ANNOTATION, BreakGlass, EXPIRES_ANNOTATION, authorize, classify, expiry};
    let mentions =
        |raw: Option<&serde_json::value::RawValue>| raw.is_some_and(|r| r.get().contains(BREAK_GLASS_ANNOTATION));
    if !mentions(request.object) && !mentions(request.old_object) {
        return None;
    }
    let now = time::OffsetDateTime::now_utc();
    let (old, new) = (parse(request.old_object), parse(request.object));
    let state = match request.operation {
        // Deleting a detached object is part of the incident response.
        Operation::Delete => classify(old.as_ref(), old.as_ref(), now),
        _ => classify(old.as_ref(), new.as_ref(), now),
    };
    let object = format!(
        "{} {}{}",
        managed.object.kind,
        managed
            .object
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        managed.object.name
    );
    let context = (request, managed);
    let allowed = |label: &'static str, message: String, verdict: Verdict, warnings: Vec<String>| {
        let mut decision = Decision::recorded(
            label,
            EventKind::AdmissionBreakGlass,
            verdict,
            warnings,
            context,
            &[],
            message,
        );
        if webhook != Webhook::Validate {
            decision.audit = None; // one record per request, from the validating pass
        }
        decision
    };
    match state {
        BreakGlass::None => None,
        BreakGlass::Active { reason, until } => Some(allowed(
            "break_glass",
            format!("{object} is detached from Git for break-glass ({reason}) until {until}"),
            Verdict::Allow,
            Vec::new(),
        )),
        // An expired break-glass on a deleted object: the normal rules (a managed delete).
        BreakGlass::Start { .. } if request.operation == Operation::Delete => None,
        BreakGlass::Start { reason } => {
            let guard = managed.guard.id.to_string();
            match authorize(managed.guard.break_glass.as_ref(), &request.user_info, &object, &guard) {
                Err(message) if webhook == Webhook::Validate => Some(Decision::denied(message, context, &[])),
                Err(_) => Some(Decision::pass("allowed")), // the validating pass denies
                Ok(()) => {
                    let until = expiry(managed.guard.break_glass.as_ref(), now);
                    let message = format!(
                        "break-glass by {}: {reason}; {object} is detached from Git until {until}",
                        request.user_info.username
                    );
                    let warning = message::clip(
                        &format!("driftguard: break-glass until {until}; Git is restored then"),
                        120,
                    );
                    let verdict = match webhook {
                        Webhook::Mutate => {
                            let path = format!(
                                "/metadata/annotations/{}",
                                EXPIRES_ANNOTATION.replace('~', "~0").replace('/', "~1")
                            );
                            match serde_json::from_value(json!([{"op": "add", "path": path, "value": until}])) {
                                Ok(patch) => Verdict::Patch(patch),
                                Err(_) => Verdict::Allow,
                            }
                        }
                        _ => Verdict::Allow,
                    };
                    Some(allowed("break_glass", message, verdict, vec![warning]))
                }
            }
        }
    }
}

fn parse(raw: Option<&serde_json::value::RawValue>) -> Option<Value> {
    // The review was already checked to be valid JSON, so an embedded object always parses.
    raw.and_then(super::review::object_for_drift)
}

fn require(value: Option<Value>, operation: Operation, field: &'static str) -> Result<Value, ReviewError> {
    value.ok_or(ReviewError::MissingObject {
        operation: operation.as_str(),
        field,
    })
}

/// The outcome of comparing a request with Git, kept so the revert patch reuses the parse.
struct Compared {
    drifts: Vec<FieldDrift>,
    /// The object the request would store (for a scale request, the Scale).
    new: Value,
    /// Git's object as `new` sees it: the object itself, or the Scale projection.
    desired: Value,
    /// The request's version, when it is not Git's (only version-independent fields were
    /// compared).
    other_version: Option<String>,
}

/// Git's object, parsed from its stored text.
fn desired_tree(managed: &Managed<'_>) -> Result<Value, ReviewError> {
    managed.object.value().map_err(|error| ReviewError::Desired {
        object: managed.object.display_name(),
        reason: error.to_string(),
    })
}

/// The delegated part of a request by a delegate: denied when outside the bounds (deny and
/// revert modes; revert mode does not clamp, since the writer meant another value), warned
/// in audit mode; within the bounds the fields are taken out of `compared` and, when nothing
/// else drifts, the request is allowed and recorded as `admission.delegated`. None leaves the
/// remaining drifts to the usual judgement.
fn decide_delegated(
    webhook: Webhook,
    request: &Request<'_>,
    managed: &Managed<'_>,
    mine: &delegate::Mine<'_>,
    compared: &mut Compared,
    hpa: &HpaBounds,
) -> Option<Decision> {
    let split = delegate::split(&mut compared.drifts, mine, managed, hpa);
    let context = (request, managed);
    if !split.outside.is_empty() && webhook == Webhook::Validate {
        let outside: Vec<FieldDrift> = split.outside.iter().map(|o| o.drift.clone()).collect();
        match managed.guard.mode {
            Mode::Deny | Mode::Revert => {
                let mut message = delegate::outside_denied(managed, &split.outside);
                if !compared.drifts.is_empty() {
                    let is_sensitive = |d: &FieldDrift| managed.object.is_sensitive(&d.path);
                    message.push('\n');
                    message.push_str(&message::drift_denied(managed, &compared.drifts, is_sensitive));
                }
                let mut all = outside;
                all.extend(compared.drifts.iter().cloned());
                return Some(Decision::denied(message, context, &all));
            }
            Mode::Audit if compared.drifts.is_empty() => {
                return Some(Decision::audited(
                    delegate::outside_warnings(&split.outside),
                    context,
                    &outside,
                ));
            }
            _ => {}
        }
    }
    if !compared.drifts.is_empty() || split.granted.is_empty() {
        return None;
    }
    if webhook != Webhook::Validate || !split.outside.is_empty() {
        return Some(Decision::pass("delegated"));
    }
    let message = delegate::granted_message(managed, &split, &request.user_info.username);
    Some(Decision::recorded(
        "delegated",
        EventKind::AdmissionDelegated,
        Verdict::Allow,
        Vec::new(),
        context,
        &split.granted,
        message,
    ))
}

fn object_drift(
    request: &Request<'_>,
    managed: &Managed<'_>,
    delegated: &[&IgnorePath],
) -> Result<Compared, ReviewError> {
    let new = require(parse(request.object), request.operation, "object")?;
    let old = match request.operation {
        Operation::Update => Some(require(parse(request.old_object), request.operation, "oldObject")?),
        _ => parse(request.old_object),
    };
    let mut desired = desired_tree(managed)?;
    let version = &request.kind.version;
    let other_version = (!version.is_empty() && *version != managed.object.version).then(|| version.to_string());
    if other_version.is_some() {
        desired = version_independent(desired);
    }
    let drifts = drift::detect_delegated(&desired, old.as_ref(), &new, &managed.object.ignore, delegated);
    Ok(Compared {
        drifts,
        new,
        desired,
        other_version,
    })
}

/// What of Git's object can be compared with a request made in another version of its API
/// (a CRD's v1beta1 while Git declares v1, `autoscaling/v1` for a `v2` HPA): only identity and
/// the declared labels and annotations. Other fields may be named or shaped differently per
/// version, so comparing them could deny a harmless edit or revert to a wrong path; they are
/// left to the enforcer, which reads and applies in Git's version.
fn version_independent(desired: Value) -> Value {
    let Value::Object(mut object) = desired else {
        return desired;
    };
    object.retain(|key, _| key == "metadata");
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.retain(|key, _| matches!(key.as_str(), "name" | "namespace" | "labels" | "annotations"));
    }
    Value::Object(object)
}

/// Git's `spec.replicas` ([`REPLICAS_POINTER`]), read from the stored text without building
/// the whole object.
fn desired_replicas(managed: &Managed<'_>) -> Result<Option<Value>, ReviewError> {
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        replicas: Option<Value>,
    }
    serde_json::from_str::<Object>(managed.object.object.get())
        .map(|object| object.spec.and_then(|spec| spec.replicas))
        .map_err(|error| ReviewError::Desired {
            object: managed.object.display_name(),
            reason: error.to_string(),
        })
}

/// The scale subresource carries only replicas: compare them with Git's replicas.
fn scale_drift(
    request: &Request<'_>,
    managed: &Managed<'_>,
    delegated: &[&IgnorePath],
) -> Result<Compared, ReviewError> {
    let new = require(parse(request.object), request.operation, "object")?;
    let Some(git) = desired_replicas(managed)? else {
        return Ok(Compared {
            drifts: Vec::new(),
            new,
            desired: json!({ "spec": {} }),
            other_version: None,
        });
    };
    let project = |scale: &Value| match scale.pointer(REPLICAS_POINTER) {
        Some(replicas) => json!({ "spec": { "replicas": replicas } }),
        None => json!({ "spec": {} }),
    };
    let old = parse(request.old_object);
    let desired = json!({ "spec": { "replicas": git } });
    let drifts = drift::detect_delegated(
        &desired,
        old.as_ref().map(project).as_ref(),
        &project(&new),
        &managed.object.ignore,
        delegated,
    );
    Ok(Compared {
        drifts,
        new,
        desired,
        other_version: None,
    })
}

fn decide_delete(webhook: Webhook, request: &Request<'_>, managed: &Managed<'_>) -> Decision {
    let context = (request, managed);
    match (managed.guard.mode, webhook) {
        // A delete cannot be reverted by a patch: revert mode denies it like deny mode.
        (Mode::Deny | Mode::Revert, Webhook::Validate) => {
            Decision::denied(message::delete_denied(managed), context, &[])
        }
        (Mode::Audit, Webhook::Validate) => Decision::audited(message::delete_audited_warning(managed), context, &[]),
        _ => Decision::pass("allowed"),
    }
}

fn decide_drift(webhook: Webhook, request: &Request<'_>, managed: &Managed<'_>, compared: Compared) -> Decision {
    let Compared {
        drifts, new, desired, ..
    } = compared;
    let is_sensitive = |d: &FieldDrift| managed.object.is_sensitive(&d.path);
    let context = (request, managed);
    match (managed.guard.mode, webhook) {
        // In revert mode the validating pass only sees drift the mutating pass did not remove
        // (its patch was not applied): deny rather than let it through.
        (Mode::Deny | Mode::Revert, Webhook::Validate) => {
            Decision::denied(message::drift_denied(managed, &drifts, is_sensitive), context, &drifts)
        }
        (Mode::Revert, Webhook::Mutate) => {
            let patch = drift::revert_patch(&new, &desired, &drifts);
            let warnings = message::reverted_warnings(managed, &drifts, is_sensitive);
            let message = warnings.join("; ");
            let verdict = Verdict::Patch(patch);
            Decision::recorded(
                "reverted",
                EventKind::AdmissionReverted,
                verdict,
                warnings,
                context,
                &drifts,
                message,
            )
        }
        (Mode::Audit, Webhook::Validate) => Decision::audited(
            message::audited_warnings(managed, &drifts, is_sensitive),
            context,
            &drifts,
        ),
        _ => Decision::pass("allowed"),
    }
}

fn field_list(drifts: &[FieldDrift]) -> String {
    let mut fields: Vec<String> = drifts
        .iter()
        .take(message::MAX_FIELDS)
        .map(|d| d.path.to_string())
        .collect();
    if drifts.len() > message::MAX_FIELDS {
        fields.push(format!("and {} more", drifts.len() - message::MAX_FIELDS));
    }
    fields.join(", ")
}

fn annotations(decision: &str, managed: &Managed<'_>, fields: &str) -> BTreeMap<&'static str, String> {
    let mut map = BTreeMap::new();
    map.insert("decision", decision.to_owned());
    map.insert("guard", managed.guard.id.to_string());
    map.insert("revision", managed.revision.commit.clone());
    if !fields.is_empty() {
        map.insert("fields", fields.to_owned());
    }
    map
}

fn event(
    kind: EventKind,
    request: &Request<'_>,
    managed: &Managed<'_>,
    drifts: &[FieldDrift],
    message: String,
) -> AuditEvent {
    let user = &request.user_info;
    AuditEvent {
        schema: SCHEMA,
        seq: 0,
        time: now_rfc3339(),
        event: kind,
        actor: Actor {
            username: user.username.to_string(),
            uid: user.uid.as_deref().map(str::to_owned),
            groups: user.groups.iter().map(|g| g.to_string()).collect(),
        },
        object: ObjectRef {
            group: managed.object.group.clone(),
            version: managed.object.version.clone(),
            kind: managed.object.kind.clone(),
            namespace: managed.object.namespace.clone(),
            name: managed.object.name.clone(),
            subresource: request.sub_resource.as_deref().map(str::to_owned),
        },
        operation: request.operation.as_str().to_owned(),
        guard: managed.guard.id.to_string(),
        revision: managed.revision.commit.clone(),
        fields: drifts
            .iter()
            .map(|d| FieldRecord::of(managed.object, d).with_link(managed.link_of(Some(&d.path))))
            .collect(),
        message,
        request_uid: request.uid.to_string(),
        dry_run: request.dry_run.unwrap_or(false),
        field_manager: None,
        prev_hash: String::new(),
        hash: String::new(),
    }
}
