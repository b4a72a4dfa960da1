//! Delegation decisions (a Guard's `delegate` rules) over AdmissionReviews shaped like
//! kube-apiserver's: the HPA's identity on /scale within and beyond the bounds, a CI
//! deployer by field manager, everyone else denied as usual, in each mode.

mod support;

use std::sync::Arc;

use driftguard::admission::{Admission, AdmissionSettings, Admit, Webhook, service_account_username};
use driftguard::api::{DelegateRule, Mode};
use driftguard::audit::{EventKind, MemorySink};
use driftguard::desired::{DesiredStore, GuardId, GuardPolicy, HpaBounds, HpaEntry};
use serde_json::{Value, json};
use support::{example_guard, example_set, fixture};

const HPA_SA: &str = "kube-system/horizontal-pod-autoscaler";

fn rule(value: Value) -> DelegateRule {
    serde_json::from_value(value).unwrap()
}

fn hpa_rule() -> DelegateRule {
    rule(json!({
        "kind": "Deployment",
        "jsonPointers": ["/spec/replicas"],
        "to": {"serviceAccounts": [HPA_SA]},
        "bounds": {"fromHPA": true}
    }))
}

fn deployer_rule(max: Option<i64>) -> DelegateRule {
    let mut r = json!({
        "group": "apps", "kind": "Deployment", "name": "web",
        "jsonPointers": ["/spec/replicas"],
        "to": {"fieldManagers": ["deployer"]}
    });
    if let Some(max) = max {
        r["bounds"] = json!({"min": 1, "max": max});
    }
    rule(r)
}

struct Stack {
    admission: Admission,
    audit: Arc<MemorySink>,
}

fn stack(mode: Mode, delegate: Vec<DelegateRule>, hpa: Option<(i64, i64)>) -> Stack {
    let mut spec = example_guard(mode);
    spec.delegate = delegate;
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![example_set(&spec)], true);
    let bounds = HpaBounds::default();
    if let Some((min, max)) = hpa {
        bounds.upsert(
            "default",
            HpaEntry {
                hpa: "web".into(),
                group: "apps".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                min,
                max,
            },
        );
    }
    let audit = Arc::new(MemorySink::new());
    let admission = Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: bounds,
        },
        audit.clone(),
    );
    Stack { admission, audit }
}

/// A fixture's review with its replicas, user and field manager replaced.
fn review(name: &str, replicas: Option<i64>, user: Option<&str>, field_manager: Option<&str>) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture(&format!("{name}.json"))).unwrap();
    let request = &mut review["request"];
    if let Some(replicas) = replicas {
        request["object"]["spec"]["replicas"] = json!(replicas);
    }
    if let Some(user) = user {
        request["userInfo"] = json!({"username": user, "groups": ["system:authenticated"]});
    }
    if let Some(manager) = field_manager {
        request["options"]["fieldManager"] = json!(manager);
    }
    serde_json::to_vec(&review).unwrap()
}

struct Case {
    name: &'static str,
    mode: Mode,
    delegate: Vec<DelegateRule>,
    hpa: Option<(i64, i64)>,
    webhook: Webhook,
    body: Vec<u8>,
    allowed: bool,
    decision: &'static str,
    /// Every one must appear in the message (denials) or the warnings / audit message.
    text: &'static [&'static str],
    event: Option<EventKind>,
    patched: bool,
}

fn run(case: Case) {
    let stack = stack(case.mode, case.delegate, case.hpa);
    let reply = stack.admission.admit(case.webhook, &case.body);
    let name = case.name;
    assert_eq!(reply.status, 200, "{name}: {}", String::from_utf8_lossy(&reply.body));
    let response: Value = serde_json::from_slice::<Value>(&reply.body).unwrap()["response"].clone();
    assert_eq!(response["allowed"], case.allowed, "{name}: {response}");
    assert_eq!(reply.decision, case.decision, "{name}: {response}");
    assert_eq!(response.get("patch").is_some(), case.patched, "{name}: {response}");
    let events = stack.audit.events();
    assert_eq!(events.first().map(|e| e.event), case.event, "{name}: {events:?}");
    let said = format!(
        "{} {} {}",
        response["status"]["message"].as_str().unwrap_or(""),
        response["warnings"],
        events.first().map(|e| e.message.as_str()).unwrap_or("")
    );
    for text in case.text {
        assert!(said.contains(text), "{name}: {text:?} not in {said}");
    }
}

fn hpa_scale(replicas: i64) -> Vec<u8> {
    review("scale-by-hpa", Some(replicas), None, None)
}

fn deploy_patch(replicas: i64, manager: &str) -> Vec<u8> {
    review("patch-merge-replicas", Some(replicas), None, Some(manager))
}

#[test]
fn delegates_within_bounds_are_allowed_and_everyone_else_is_judged_as_usual() {
    use Webhook::{Mutate, Validate};
    let base = |name, mode, delegate: Vec<DelegateRule>, hpa, webhook, body| Case {
        name,
        mode,
        delegate,
        hpa,
        webhook,
        body,
        allowed: true,
        decision: "delegated",
        text: &[],
        event: None,
        patched: false,
    };
    let cases = vec![
        Case {
            text: &["spec.replicas to 6", "delegate rule 1", HPA_SA],
            event: Some(EventKind::AdmissionDelegated),
            ..base(
                "hpa within",
                Mode::Deny,
                vec![hpa_rule()],
                Some((2, 10)),
                Validate,
                hpa_scale(6),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &[
                "above the maximum 10 (HorizontalPodAutoscaler web)",
                "delegate rule 1",
                "spec.replicas",
            ],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "hpa above",
                Mode::Deny,
                vec![hpa_rule()],
                Some((2, 10)),
                Validate,
                hpa_scale(12),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["below the minimum 4 (HorizontalPodAutoscaler web)"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "hpa below",
                Mode::Deny,
                vec![hpa_rule()],
                Some((4, 10)),
                Validate,
                hpa_scale(2),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["no HorizontalPodAutoscaler targets Deployment default/web"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "hpa without an HPA",
                Mode::Deny,
                vec![hpa_rule()],
                None,
                Validate,
                hpa_scale(6),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["spec.replicas", "Git has 3", "request has 5"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "a human on /scale",
                Mode::Deny,
                vec![hpa_rule()],
                Some((2, 10)),
                Validate,
                review("scale-deployment", None, None, None),
            )
        },
        Case {
            decision: "exempted",
            event: Some(EventKind::AdmissionExempted),
            ..base(
                "no rule for the object: the HPA stays exempt",
                Mode::Deny,
                vec![rule(
                    json!({"kind": "StatefulSet", "jsonPointers": ["/spec/replicas"], "to": {"serviceAccounts": [HPA_SA]}, "bounds": {"fromHPA": true}}),
                )],
                None,
                Validate,
                hpa_scale(60),
            )
        },
        Case {
            text: &["spec.replicas to 7"],
            event: Some(EventKind::AdmissionDelegated),
            ..base(
                "deployer by field manager",
                Mode::Deny,
                vec![deployer_rule(None)],
                None,
                Validate,
                deploy_patch(7, "deployer"),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["above the maximum 8 (bounds)", "fieldManagers deployer"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "deployer above max",
                Mode::Deny,
                vec![deployer_rule(Some(8))],
                None,
                Validate,
                deploy_patch(9, "deployer"),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["Git has 3", "request has 7"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "another field manager",
                Mode::Deny,
                vec![deployer_rule(None)],
                None,
                Validate,
                deploy_patch(7, "kubectl-patch"),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["image", "statsd-exporter"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "the deployer outside its fields",
                Mode::Deny,
                vec![deployer_rule(None)],
                None,
                Validate,
                review("set-image", None, None, Some("deployer")),
            )
        },
        // Revert mode: the mutating pass leaves a delegate's value, reverts others' ...
        base(
            "revert: delegate kept",
            Mode::Revert,
            vec![deployer_rule(None)],
            None,
            Mutate,
            deploy_patch(7, "deployer"),
        ),
        Case {
            decision: "reverted",
            patched: true,
            event: Some(EventKind::AdmissionReverted),
            ..base(
                "revert: others reverted",
                Mode::Revert,
                vec![deployer_rule(None)],
                None,
                Mutate,
                deploy_patch(7, "kubectl-patch"),
            )
        },
        // ... and out of bounds it is not clamped: the validating pass denies.
        Case {
            decision: "allowed",
            ..base(
                "revert: out of bounds passes the mutating pass",
                Mode::Revert,
                vec![deployer_rule(Some(5))],
                None,
                Mutate,
                deploy_patch(7, "deployer"),
            )
        },
        Case {
            allowed: false,
            decision: "denied",
            text: &["above the maximum 5"],
            event: Some(EventKind::AdmissionDenied),
            ..base(
                "revert: out of bounds denied",
                Mode::Revert,
                vec![deployer_rule(Some(5))],
                None,
                Validate,
                deploy_patch(7, "deployer"),
            )
        },
        Case {
            decision: "audited",
            text: &["above the maximum 5"],
            event: Some(EventKind::AdmissionAudited),
            ..base(
                "audit: out of bounds warned",
                Mode::Audit,
                vec![deployer_rule(Some(5))],
                None,
                Validate,
                deploy_patch(7, "deployer"),
            )
        },
        Case {
            event: Some(EventKind::AdmissionDelegated),
            ..base(
                "audit: within bounds",
                Mode::Audit,
                vec![deployer_rule(Some(8))],
                None,
                Validate,
                deploy_patch(7, "deployer"),
            )
        },
        base(
            "off",
            Mode::Off,
            vec![deployer_rule(Some(5))],
            None,
            Validate,
            deploy_patch(7, "deployer"),
        ),
    ];
    for mut case in cases {
        if case.mode == Mode::Off {
            case.decision = "allowed";
        }
        run(case);
    }
}

#[test]
fn malformed_delegate_rules_fail_the_guard() {
    let id = GuardId {
        namespace: "default".into(),
        name: "example-app".into(),
    };
    let bad = [
        (json!({"jsonPointers": ["/spec/replicas"], "to": {}}), "`to` must name"),
        (json!({"jsonPointers": [], "to": {"users": ["a"]}}), "jsonPointers"),
        (
            json!({"jsonPointers": ["spec"], "to": {"users": ["a"]}}),
            "must be empty or start with '/'",
        ),
        (
            json!({"jsonPointers": ["/spec/replicas"], "to": {"users": ["a"]}, "bounds": {"min": 5, "max": 2}}),
            "min 5 exceeds max 2",
        ),
        (
            json!({"jsonPointers": ["/spec/replicas"], "to": {"users": ["a"]}, "bounds": {"fromHPA": true, "max": 2}}),
            "fromHPA excludes",
        ),
    ];
    for (value, want) in bad {
        let mut spec = example_guard(Mode::Deny);
        spec.delegate = vec![rule(value.clone())];
        let err = GuardPolicy::new(id.clone(), &spec, "https://git.example.com/x.git")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(want) && err.contains("delegate rule 1"), "{value}: {err}");
    }
}
