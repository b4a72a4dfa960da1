//! Admission decisions over AdmissionReviews shaped like kube-apiserver's, for each kubectl
//! command a person runs against a Git-managed Deployment (tests/fixtures/generate.py).

mod support;

use base64::Engine;
use driftguard::admission::{Admit, Webhook};
use driftguard::api::{Exemptions, IgnoreRule, Mode};
use driftguard::audit::EventKind;
use serde_json::{Value, json};
use support::{fixture, stack_with};

fn ask(stack: &support::Stack, webhook: Webhook, name: &str) -> (Value, &'static str) {
    let body = fixture(&format!("{name}.json"));
    let reply = stack.admission.admit(webhook, &body);
    assert_eq!(reply.status, 200, "{name}: {}", String::from_utf8_lossy(&reply.body));
    let review: Value = serde_json::from_slice(&reply.body).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"], request["request"]["uid"],
        "{name}: uid echoed"
    );
    (review["response"].clone(), reply.decision)
}

struct Case {
    fixture: &'static str,
    allowed: bool,
    decision: &'static str,
    /// Every one must appear in the denial message.
    message: &'static [&'static str],
    event: Option<EventKind>,
}

const fn case(
    fixture: &'static str,
    allowed: bool,
    decision: &'static str,
    message: &'static [&'static str],
    event: Option<EventKind>,
) -> Case {
    Case {
        fixture,
        allowed,
        decision,
        message,
        event,
    }
}

const DENIED: Option<EventKind> = Some(EventKind::AdmissionDenied);

#[test]
fn deny_mode_decides_each_kubectl_command() {
    // An allowed change to a managed object is on record too.
    const ALLOWED: Option<EventKind> = Some(EventKind::AdmissionAllowed);
    // Denials point at the drifted field's line (the object starts at line 2).
    const REPLICAS_LINE: &str = "Git declares it at examples/app/deployment.yaml:10 in ";
    const IMAGE_LINE: &str = "Git declares it at examples/app/deployment.yaml:22 in ";
    const WHERE: &str = "Remove it from Git at examples/app/deployment.yaml:2 in ";
    let cases = [
        case(
            "scale-deployment",
            false,
            "denied",
            &["spec.replicas", "Git has 3", "request has 5", REPLICAS_LINE],
            DENIED,
        ),
        case(
            "scale-dry-run",
            false,
            "denied",
            &["spec.replicas", "request has 7"],
            DENIED,
        ),
        case(
            "scale-by-hpa",
            true,
            "exempted",
            &[],
            Some(EventKind::AdmissionExempted),
        ),
        case(
            "edit-image",
            false,
            "denied",
            &["image", "\"nginx:1.27.3\"", "\"nginx:latest\"", IMAGE_LINE],
            DENIED,
        ),
        case(
            "set-image",
            false,
            "denied",
            &["metrics-sidecar", "prom/statsd-exporter:v0.28.0"],
            DENIED,
        ),
        case(
            "patch-merge-replicas",
            false,
            "denied",
            &["spec.replicas", "request has 10"],
            DENIED,
        ),
        case(
            "patch-strategic-env",
            false,
            "denied",
            &["LOG_LEVEL", "\"info\"", "\"debug\""],
            DENIED,
        ),
        case(
            "patch-json-remove-env",
            false,
            "denied",
            &["GREETING", "(absent)"],
            DENIED,
        ),
        case(
            "label-declared",
            false,
            "denied",
            &["tier", "\"frontend\"", "\"backend\""],
            DENIED,
        ),
        case("edit-image-20kb", false, "denied", &["\"nginx:latest\""], DENIED),
        case("rollout-restart-20kb", true, "allowed", &[], ALLOWED),
        case("label-undeclared", true, "allowed", &[], ALLOWED),
        case("rollout-restart", true, "allowed", &[], ALLOWED),
        case("edit-undeclared-field", true, "allowed", &[], ALLOWED),
        case(
            "delete-by-user",
            false,
            "denied",
            &["Deployment default/web", "cannot be deleted", WHERE],
            DENIED,
        ),
        case(
            "delete-by-garbage-collector",
            true,
            "exempted",
            &[],
            Some(EventKind::AdmissionExempted),
        ),
        case("create-differs", false, "denied", &["\"nginx:1.25\""], DENIED),
        case("edit-unmanaged", true, "unmanaged", &[], None),
        case("status-update", true, "skipped", &[], None),
        case(
            "edit-secret",
            false,
            "denied",
            &["Secret default/web-credentials", "(hidden)"],
            DENIED,
        ),
    ];
    for case in cases {
        let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
        let (response, decision) = ask(&stack, Webhook::Validate, case.fixture);
        let name = case.fixture;
        assert_eq!(response["allowed"], case.allowed, "{name}: {response}");
        assert_eq!(decision, case.decision, "{name}");
        if case.allowed {
            assert!(response.get("status").is_none(), "{name}: no status when allowed");
        } else {
            assert_eq!(response["status"]["code"], 403, "{name}");
            assert_eq!(response["status"]["reason"], "Forbidden", "{name}");
            let message = response["status"]["message"].as_str().unwrap();
            for needle in case.message {
                assert!(message.contains(needle), "{name}: {needle:?} missing from:\n{message}");
            }
            assert_eq!(response["auditAnnotations"]["decision"], "denied", "{name}");
            assert_eq!(response["auditAnnotations"]["guard"], "default/example-app", "{name}");
        }
        assert!(response.get("patch").is_none(), "{name}: validate never patches");
        let events = stack.audit.events();
        match case.event {
            Some(kind) => {
                assert_eq!(events.len(), 1, "{name}: one audit event");
                assert_eq!(events[0].event, kind, "{name}");
                assert!(!events[0].actor.username.is_empty(), "{name}");
                assert_eq!(events[0].request_uid, response["uid"].as_str().unwrap(), "{name}");
            }
            None => assert!(events.is_empty(), "{name}: no audit event for {events:?}"),
        }
        // Deny mode leaves mutation alone.
        let (mutated, _) = ask(&stack, Webhook::Mutate, case.fixture);
        assert_eq!(mutated["allowed"], true, "{name}");
        assert!(mutated.get("patch").is_none(), "{name}: deny mode never patches");
    }
}

#[test]
fn audit_event_records_fields_actor_and_dry_run() {
    let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
    ask(&stack, Webhook::Validate, "scale-dry-run");
    let event = stack.audit.events().remove(0);
    assert!(event.dry_run);
    assert_eq!(event.actor.username, "alice@example.com");
    assert!(event.actor.groups.contains(&"developers".to_owned()));
    assert_eq!(event.object.kind, "Deployment");
    assert_eq!(event.object.subresource.as_deref(), Some("scale"));
    assert_eq!(event.operation, "UPDATE");
    assert_eq!(event.guard, "default/example-app");
    assert_eq!(event.fields.len(), 1);
    assert_eq!(event.fields[0].path, "spec.replicas");
    assert_eq!(event.fields[0].git, 3);
    assert_eq!(event.fields[0].attempted, 7);
    assert_eq!(event.fields[0].previous, 3);
    let line = serde_json::to_value(&event).unwrap();
    assert_eq!(line["schema"], "driftguard.io/audit/v1");
    assert_eq!(line["event"], "admission.denied");
    assert_eq!(line["dry_run"], true);
}

#[test]
fn secret_values_are_never_echoed() {
    let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
    let reply = stack.admission.admit(Webhook::Validate, &fixture("edit-secret.json"));
    let engine = base64::engine::general_purpose::STANDARD;
    let attempted = engine.encode("attacker-chosen-token");
    let git = engine.encode("example-placeholder-token");
    let body = String::from_utf8(reply.body).unwrap();
    let audit = serde_json::to_string(&stack.audit.events()).unwrap();
    for text in [&body, &audit] {
        for secret in [&attempted, &git, "attacker-chosen-token", "example-placeholder-token"] {
            assert!(!text.contains(secret), "secret value leaked: {text}");
        }
    }
    assert!(audit.contains("(hidden)"), "{audit}");

    let revert = stack_with(Mode::Revert, vec![], Exemptions::default());
    let reply = revert.admission.admit(Webhook::Mutate, &fixture("edit-secret.json"));
    let review: Value = serde_json::from_slice(&reply.body).unwrap();
    let warnings = review["response"]["warnings"].to_string();
    assert!(!warnings.contains(&attempted) && !warnings.contains(&git), "{warnings}");
    assert!(review["response"]["patch"].is_string(), "a Secret is still reverted");
}

fn apply_patch(review_fixture: &str, response: &Value) -> Value {
    let request: Value = serde_json::from_slice(&fixture(&format!("{review_fixture}.json"))).unwrap();
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

#[test]
fn revert_mode_patches_git_values_back_and_warns() {
    for (name, pointer, git) in [
        ("scale-deployment", "/spec/replicas", serde_json::json!(3)),
        (
            "edit-image",
            "/spec/template/spec/containers/0/image",
            serde_json::json!("nginx:1.27.3"),
        ),
        (
            "patch-strategic-env",
            "/spec/template/spec/containers/0/env/0/value",
            serde_json::json!("info"),
        ),
        ("label-declared", "/metadata/labels/tier", serde_json::json!("frontend")),
    ] {
        let stack = stack_with(Mode::Revert, vec![], Exemptions::default());
        let (response, decision) = ask(&stack, Webhook::Mutate, name);
        assert_eq!(response["allowed"], true, "{name}");
        assert_eq!(decision, "reverted", "{name}");
        let patched = apply_patch(name, &response);
        assert_eq!(patched.pointer(pointer), Some(&git), "{name}: {patched}");
        let warnings = response["warnings"].as_array().unwrap();
        assert!(!warnings.is_empty(), "{name}");
        for w in warnings {
            let w = w.as_str().unwrap();
            assert!(w.chars().count() <= 120, "{name}: warning too long: {w}");
        }
        assert!(
            warnings[0].as_str().unwrap().contains("reverted"),
            "{name}: {warnings:?}"
        );
        assert_eq!(stack.audit.events()[0].event, EventKind::AdmissionReverted);

        // The validating pass then sees the patched object and finds nothing.
        let mut review: Value = serde_json::from_slice(&fixture(&format!("{name}.json"))).unwrap();
        review["request"]["object"] = patched;
        let reply = stack
            .admission
            .admit(Webhook::Validate, &serde_json::to_vec(&review).unwrap());
        let after: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(after["response"]["allowed"], true, "{name}: {after}");
        assert_eq!(reply.decision, "allowed", "{name}");
    }
}

#[test]
fn warnings_with_long_values_keep_field_git_and_attempted_value() {
    let long = format!("registry.example.com/{}/web:9.9.9-rc1", "team".repeat(20));
    let mut review: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = json!(long);
    let body = serde_json::to_vec(&review).unwrap();
    for (mode, webhook, verb) in [
        (Mode::Revert, Webhook::Mutate, "driftguard reverted "),
        (Mode::Audit, Webhook::Validate, "driftguard: "),
    ] {
        let stack = stack_with(mode, vec![], Exemptions::default());
        let reply = stack.admission.admit(webhook, &body);
        let response: Value = serde_json::from_slice(&reply.body).unwrap();
        let warnings: Vec<&str> = response["response"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let field = warnings[0];
        assert!(field.chars().count() <= 120, "{mode:?}: {field}");
        assert!(field.starts_with(verb), "{mode:?}: {field}");
        assert!(
            field.contains("spec.template.spec.containers[name=web].image"),
            "{field}"
        );
        // Git's value whole; the attempted one shortened in the middle, both ends kept, and
        // the sentence not cut.
        assert!(field.contains("\"nginx:1.27.3\""), "{field}");
        assert!(field.contains("requested \"regist") && field.contains("…"), "{field}");
        assert!(field.ends_with("-rc1\")"), "{field}");
        assert!(!field.contains(&long), "{field}");
        // Where to change it: the image's line, not the object's.
        assert_eq!(
            warnings.last().copied(),
            Some("driftguard: change it in Git: examples/app/deployment.yaml:22"),
            "{mode:?}: {warnings:?}"
        );
    }
}

#[test]
fn revert_mode_still_denies_what_mutation_cannot_fix() {
    let stack = stack_with(Mode::Revert, vec![], Exemptions::default());
    // A delete cannot be patched back.
    let (mutated, _) = ask(&stack, Webhook::Mutate, "delete-by-user");
    assert_eq!(mutated["allowed"], true);
    let (validated, _) = ask(&stack, Webhook::Validate, "delete-by-user");
    assert_eq!(validated["allowed"], false);
    // If the mutating webhook was skipped, the validating webhook is the safety net.
    let (validated, _) = ask(&stack, Webhook::Validate, "scale-deployment");
    assert_eq!(validated["allowed"], false);
}

#[test]
fn audit_mode_allows_warns_and_records() {
    let stack = stack_with(Mode::Audit, vec![], Exemptions::default());
    let (response, decision) = ask(&stack, Webhook::Validate, "scale-deployment");
    assert_eq!(response["allowed"], true);
    assert_eq!(decision, "audited");
    assert!(response["warnings"][0].as_str().unwrap().contains("spec.replicas"));
    assert_eq!(response["auditAnnotations"]["decision"], "audited");
    assert_eq!(stack.audit.events()[0].event, EventKind::AdmissionAudited);
    let (response, _) = ask(&stack, Webhook::Validate, "delete-by-user");
    assert_eq!(response["allowed"], true);
}

#[test]
fn off_mode_and_ignore_rules_and_exemptions_allow() {
    let off = stack_with(Mode::Off, vec![], Exemptions::default());
    assert_eq!(ask(&off, Webhook::Validate, "scale-deployment").0["allowed"], true);

    // suspend stops the enforcer, not admission: the Guard keeps its mode.
    let mut suspended = support::example_guard(Mode::Deny);
    suspended.suspend = true;
    assert_eq!(
        ask(&support::stack(&suspended), Webhook::Validate, "scale-deployment").0["allowed"],
        false
    );

    let ignore_replicas = IgnoreRule {
        kind: Some("Deployment".into()),
        json_pointers: vec!["/spec/replicas".into()],
        ..Default::default()
    };
    let ignoring = stack_with(Mode::Deny, vec![ignore_replicas], Exemptions::default());
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("scale-deployment.json"))
            .decision,
        "allowed"
    );
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("patch-merge-replicas.json"))
            .decision,
        "allowed"
    );
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("edit-image.json"))
            .decision,
        "denied"
    );

    let wildcard = IgnoreRule {
        json_pointers: vec!["/spec/template/spec/containers/*/image".into()],
        ..Default::default()
    };
    let ignoring = stack_with(Mode::Deny, vec![wildcard], Exemptions::default());
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("edit-image.json"))
            .decision,
        "allowed"
    );
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("set-image.json"))
            .decision,
        "allowed"
    );
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("patch-strategic-env.json"))
            .decision,
        "denied"
    );

    let other_kind = IgnoreRule {
        kind: Some("StatefulSet".into()),
        json_pointers: vec!["/spec/replicas".into()],
        ..Default::default()
    };
    let ignoring = stack_with(Mode::Deny, vec![other_kind], Exemptions::default());
    assert_eq!(
        ignoring
            .admission
            .admit(Webhook::Validate, &fixture("scale-deployment.json"))
            .decision,
        "denied"
    );

    let sre = Exemptions {
        groups: vec!["developers".into()],
        ..Default::default()
    };
    let exempt = stack_with(Mode::Deny, vec![], sre);
    let (response, decision) = ask(&exempt, Webhook::Validate, "edit-image");
    assert_eq!(response["allowed"], true);
    assert_eq!(decision, "exempted");
    assert_eq!(exempt.audit.events()[0].event, EventKind::AdmissionExempted);

    let own = Exemptions::default();
    let stack = stack_with(Mode::Deny, vec![], own);
    let mut review: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    review["request"]["userInfo"]["username"] = "system:serviceaccount:driftguard:driftguard".into();
    let reply = stack
        .admission
        .admit(Webhook::Validate, &serde_json::to_vec(&review).unwrap());
    assert_eq!(reply.decision, "exempted");
    assert!(
        stack.audit.events().is_empty(),
        "driftguard's own writes are not audited as exemptions"
    );
}

#[test]
fn many_drifting_fields_are_capped_at_five() {
    let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
    let mut review: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    let object = &mut review["request"]["object"];
    object["spec"]["replicas"] = 9.into();
    object["metadata"]["labels"]["tier"] = "x".into();
    object["metadata"]["labels"]["app.kubernetes.io/name"] = "y".into();
    object["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "z".into();
    object["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = "w".into();
    object["spec"]["template"]["spec"]["containers"][1]["image"] = "v".into();
    let reply = stack
        .admission
        .admit(Webhook::Validate, &serde_json::to_vec(&review).unwrap());
    let review: Value = serde_json::from_slice(&reply.body).unwrap();
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("changes 7 declared fields"), "{message}");
    assert_eq!(message.matches("\n  - ").count(), 5, "{message}");
    assert!(message.contains("and 2 more"), "{message}");
}

#[test]
fn malformed_reviews_get_clear_400s() {
    let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
    let mut wrong_version: Value = serde_json::from_slice(&fixture("edit-image.json")).unwrap();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_uid = serde_json::from_slice::<Value>(&fixture("edit-image.json")).unwrap();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_object = serde_json::from_slice::<Value>(&fixture("edit-image.json")).unwrap();
    no_object["request"]["object"] = Value::Null;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json at all".to_vec(), "not an AdmissionReview"),
        (b"".to_vec(), "not an AdmissionReview"),
        (serde_json::to_vec(&wrong_version).unwrap(), "admission.k8s.io/v1"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "no request"),
        (serde_json::to_vec(&no_uid).unwrap(), "no uid"),
        (serde_json::to_vec(&no_object).unwrap(), "request.object"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"PATCH"}}"#.to_vec(), "not an AdmissionReview"),
    ];
    for (body, needle) in cases {
        let reply = stack.admission.admit(Webhook::Validate, &body);
        assert_eq!(reply.status, 400, "{needle}");
        let error: Value = serde_json::from_slice(&reply.body).unwrap();
        let text = error["error"].as_str().unwrap();
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    }
    // And it keeps deciding afterwards.
    assert_eq!(
        stack
            .admission
            .admit(Webhook::Validate, &fixture("scale-deployment.json"))
            .status,
        200
    );
}

#[test]
fn readiness_follows_the_store() {
    let stack = stack_with(Mode::Deny, vec![], Exemptions::default());
    assert!(stack.admission.is_ready());
    let fresh = driftguard::desired::DesiredStore::new();
    assert!(!fresh.is_ready());
    let _ = &stack.store;
}

/// Every fixture through both webhooks in every mode: no Secret value, plain or base64, in a
/// response (other than the revert patch that restores it), an audit record, a warning or a
/// log line (captured at TRACE).
#[test]
fn no_secret_value_reaches_any_output_across_the_fixtures() {
    let logs = support::Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();

    let engine = base64::engine::general_purpose::STANDARD;
    let secrets = ["attacker-chosen-token", "example-placeholder-token"];
    let forbidden: Vec<String> = secrets.iter().flat_map(|s| [s.to_string(), engine.encode(s)]).collect();
    let mut fixtures: Vec<String> = std::fs::read_dir(support::root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    assert!(fixtures.contains(&"edit-secret".to_owned()));
    tracing::subscriber::with_default(subscriber, || {
        for mode in [Mode::Deny, Mode::Revert, Mode::Audit] {
            let stack = stack_with(mode, vec![], Exemptions::default());
            for name in &fixtures {
                for webhook in [Webhook::Validate, Webhook::Mutate] {
                    let reply = stack.admission.admit(webhook, &fixture(&format!("{name}.json")));
                    let mut review: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                    if let Some(response) = review.get_mut("response").and_then(Value::as_object_mut) {
                        response.remove("patch"); // the revert itself, not an echo
                    }
                    let text = review.to_string();
                    for secret in &forbidden {
                        assert!(!text.contains(secret.as_str()), "{mode:?} {name} {webhook:?}: {text}");
                    }
                }
            }
            let audit = serde_json::to_string(&stack.audit.events()).unwrap();
            for secret in &forbidden {
                assert!(!audit.contains(secret.as_str()), "{mode:?}: audit leaked: {audit}");
            }
        }
    });
    let logs = logs.text();
    for secret in &forbidden {
        assert!(!logs.contains(secret.as_str()), "log leaked: {logs}");
    }
}

/// Break-glass: a member's annotated edit is let through and recorded (the mutating webhook
/// stamps the expiry), a non-member is told who may, a detached object takes further edits,
/// and an expired one is enforced again.
#[test]
fn break_glass_lets_members_through_and_tells_others_who_may() {
    use driftguard::admission::break_glass::{BREAK_GLASS_ANNOTATION, EXPIRES_ANNOTATION};

    let mut spec = support::example_guard(Mode::Deny);
    spec.break_glass = Some(serde_json::from_value(json!({"groups": ["sre"], "maxDuration": "30m"})).unwrap());
    let stack = support::stack(&spec);
    // `kubectl patch deploy web --type merge -p '{"spec":{"replicas":…}}'` plus the annotation.
    let review = |groups: &[&str], old_annotations: Value, new_annotations: Value| {
        let mut review: Value = serde_json::from_slice(&fixture("patch-merge-replicas.json")).unwrap();
        review["request"]["userInfo"]["groups"] = json!(groups);
        for (side, extra) in [("oldObject", old_annotations), ("object", new_annotations)] {
            let annotations = review["request"][side]["metadata"]["annotations"]
                .as_object_mut()
                .unwrap();
            annotations.extend(extra.as_object().unwrap().clone());
        }
        serde_json::to_vec(&review).unwrap()
    };
    let ask = |webhook: Webhook, body: &[u8]| -> Value {
        let reply = stack.admission.admit(webhook, body);
        serde_json::from_slice::<Value>(&reply.body).unwrap()["response"].clone()
    };
    let starting = json!({BREAK_GLASS_ANNOTATION: "INC-4711: checkout down"});

    // A member: allowed, warned, recorded with the reason; mutate stamps the expiry.
    let body = review(&["sre"], json!({}), starting.clone());
    let response = ask(Webhook::Validate, &body);
    assert_eq!(response["allowed"], true, "{response}");
    let record = stack.audit.events().pop().unwrap();
    assert_eq!(record.event, EventKind::AdmissionBreakGlass);
    assert!(
        record.message.contains("INC-4711") && record.message.contains("alice@example.com"),
        "{}",
        record.message
    );
    let mutated = ask(Webhook::Mutate, &body);
    let patch = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(mutated["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(patch.contains("driftguard.io~1break-glass-expires"), "{patch}");

    // Someone else: denied, told who may.
    let response = ask(Webhook::Validate, &review(&["developers"], json!({}), starting.clone()));
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("only members of sre may set driftguard.io/break-glass"),
        "{message}"
    );

    // Detached: a further edit by anyone goes through while it lasts.
    let active = json!({BREAK_GLASS_ANNOTATION: "INC-4711", EXPIRES_ANNOTATION: "2999-01-01T00:00:00Z"});
    let response = ask(Webhook::Validate, &review(&["developers"], active.clone(), active));
    assert_eq!(response["allowed"], true, "{response}");

    // Run out: enforced again (and starting over needs a member).
    let over = json!({BREAK_GLASS_ANNOTATION: "INC-4711", EXPIRES_ANNOTATION: "2020-01-01T00:00:00Z"});
    let response = ask(Webhook::Validate, &review(&["developers"], over.clone(), over));
    assert_eq!(response["allowed"], false, "{response}");
}

/// The largest object etcd stores (~1.5 MiB) in both object and oldObject (a 3 MiB review,
/// inside the server's 8 MiB body limit): a change of a declared field is still denied, a
/// change of only the huge undeclared annotation is allowed, and the huge value is echoed
/// nowhere.
#[test]
fn a_one_and_a_half_mib_object_is_decided_without_echoing_it() {
    let stack = stack_with(Mode::Deny, Vec::new(), Exemptions::default());
    let huge = "x".repeat(1536 * 1024);
    let with_annotation = |body: &[u8], value: &str| -> Vec<u8> {
        let mut review: Value = serde_json::from_slice(body).unwrap();
        for side in ["object", "oldObject"] {
            review["request"][side]["metadata"]["annotations"]["example.com/blob"] = json!(value);
        }
        serde_json::to_vec(&review).unwrap()
    };
    // `kubectl set image` on an object carrying 1.5 MiB of annotation: still denied.
    let drift = with_annotation(&fixture("edit-image-20kb.json"), &huge);
    assert!(drift.len() > 3 * 1024 * 1024, "{} bytes", drift.len());
    let reply = stack.admission.admit(Webhook::Validate, &drift);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.decision, "denied");
    assert!(!String::from_utf8_lossy(&reply.body).contains(&huge[..1024]));
    // An edit of only the huge undeclared annotation: allowed.
    let mut review: Value = serde_json::from_slice(&with_annotation(&fixture("edit-image-20kb.json"), &huge)).unwrap();
    let old_image = review["request"]["oldObject"]["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = old_image;
    review["request"]["object"]["metadata"]["annotations"]["example.com/blob"] = json!(format!("{huge}y"));
    let reply = stack
        .admission
        .admit(Webhook::Validate, &serde_json::to_vec(&review).unwrap());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.decision, "allowed");
    // Neither the answers nor the audit records carry the blob.
    let recorded = serde_json::to_string(&stack.audit.events()).unwrap();
    assert!(!recorded.contains(&huge[..1024]), "the blob reached the audit log");
}

/// A request made in another version of the object's API than Git's (`apps/v1beta2` while Git
/// declares `apps/v1`): fields may be shaped differently per version, so only the declared
/// labels and annotations are compared (and denied); the rest is allowed with a warning saying
/// so, on record, and left to the enforcer, which applies in Git's version.
#[test]
fn a_request_in_another_api_version_is_compared_on_labels_and_annotations_only() {
    let stack = stack_with(Mode::Deny, Vec::new(), Exemptions::default());
    let in_version = |body: &[u8], version: &str| -> Value {
        let mut review: Value = serde_json::from_slice(body).unwrap();
        let request = &mut review["request"];
        for gvk in ["kind", "requestKind"] {
            if request.get(gvk).is_some() {
                request[gvk]["version"] = json!(version);
            }
        }
        for gvr in ["resource", "requestResource"] {
            if request.get(gvr).is_some() {
                request[gvr]["version"] = json!(version);
            }
        }
        for side in ["object", "oldObject"] {
            request[side]["apiVersion"] = json!(format!("apps/{version}"));
        }
        review
    };
    let admit = |review: &Value| {
        let reply = stack
            .admission
            .admit(Webhook::Validate, &serde_json::to_vec(review).unwrap());
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        (answer["response"].clone(), reply.decision)
    };

    // The image drift of `kubectl set image`, sent as apps/v1: denied (the control case).
    let body = fixture("edit-image-20kb.json");
    let (response, decision) = admit(&in_version(&body, "v1"));
    assert_eq!((decision, response["allowed"].as_bool()), ("denied", Some(false)));

    // The same edit as apps/v1beta2: spec is not compared; allowed, with a warning and a record.
    let mut review = in_version(&body, "v1beta2");
    let (response, decision) = admit(&review);
    assert_eq!((decision, response["allowed"].as_bool()), ("allowed", Some(true)));
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("apps/v1beta2")
            && warnings[0].contains("Git declares apps/v1")
            && warnings[0].len() <= 120,
        "{warnings:?}"
    );
    let last = stack.audit.events().pop().unwrap();
    assert_eq!(last.event, EventKind::AdmissionAllowed);
    assert_eq!(last.message, warnings[0]);

    // A declared label changed through apps/v1beta2: still denied, naming the label.
    review["request"]["object"]["metadata"]["labels"]["tier"] = json!("backend");
    let (response, decision) = admit(&review);
    assert_eq!((decision, response["allowed"].as_bool()), ("denied", Some(false)));
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("tier"), "{message}");
    assert!(
        !message.contains("image"),
        "spec is not compared across versions: {message}"
    );
}

#[test]
fn denials_warnings_and_audit_link_to_the_line_at_the_commit() {
    const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
    let linked = |mode: Mode, web_url: &str| {
        support::stack_over(support::example_set_linked(
            &support::example_guard(mode),
            Some(web_url),
        ))
    };
    let long = "https://git.example.com/{repo}/blob/{revision}/{path}#L{line}";
    let replicas = format!("https://git.example.com/platform/blob/{COMMIT}/examples/app/deployment.yaml#L10");

    // Deny: the message ends with the link to the replicas line; the audit field carries it.
    let stack = linked(Mode::Deny, long);
    let (response, decision) = ask(&stack, Webhook::Validate, "scale-deployment");
    assert_eq!(decision, "denied");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.ends_with(&format!("\nOpen it in Git: {replicas}")), "{message}");
    let event = stack.audit.events().pop().unwrap();
    assert_eq!(event.fields[0].link.as_deref(), Some(replicas.as_str()));
    let record = serde_json::to_value(&event).unwrap();
    assert_eq!(record["fields"][0]["link"], replicas.as_str(), "{record}");
    // A delete links to where the object starts.
    let (response, _) = ask(&stack, Webhook::Validate, "delete-by-user");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(&format!(
            "Open it in Git: https://git.example.com/platform/blob/{COMMIT}/examples/app/deployment.yaml#L2"
        )),
        "{message}"
    );

    // No links (the host is not one links are derived for): no link member in the record.
    let stack = support::stack_over(support::example_set(&support::example_guard(Mode::Deny)));
    let (response, _) = ask(&stack, Webhook::Validate, "scale-deployment");
    assert!(
        !response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Open it in Git")
    );
    let record = serde_json::to_value(stack.audit.events().pop().unwrap()).unwrap();
    assert!(record["fields"][0].get("link").is_none(), "{record}");

    // Warnings carry the link only when it fits in 120 characters.
    for (web_url, fits) in [(long, false), ("https://g.example/{revision}/{path}#L{line}", true)] {
        for (mode, webhook) in [(Mode::Revert, Webhook::Mutate), (Mode::Audit, Webhook::Validate)] {
            let stack = linked(mode, web_url);
            let (response, _) = ask(&stack, webhook, "scale-deployment");
            let warnings: Vec<&str> = response["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            assert!(warnings.iter().all(|w| w.chars().count() <= 120), "{warnings:?}");
            let short = format!("driftguard: https://g.example/{COMMIT}/examples/app/deployment.yaml#L10");
            assert_eq!(warnings.contains(&short.as_str()), fits, "{web_url}: {warnings:?}");
            assert!(
                warnings.iter().all(|w| !w.contains("https://git.example.com")),
                "a link is never clipped: {warnings:?}"
            );
            let event = stack.audit.events().pop().unwrap();
            assert!(
                event.fields[0].link.as_deref().is_some_and(|l| l.ends_with("#L10")),
                "{event:?}"
            );
        }
    }
}
