//! `driftguard diff`: what a reconcile would change, for a person. Pure: a [`Plan`] and the
//! live snapshot it was made from -> report lines.

use super::delegation::{Call, Held};
use super::{ApplyReason, LiveSnapshot, ObjectKey, Plan, SkipReason};
use crate::drift::display::show_value;

/// The differences between Git and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Lines to print.
    pub lines: Vec<String>,
    /// Objects that would be written or deleted.
    pub differences: usize,
}

/// Describe `plan` (made from `live`): objects missing or drifted (each declared field with
/// the cluster's and Git's values; Secret data hidden), objects waiting, prunes
/// (`would prune v1/ConfigMap default/old-config (...)`), and objects a sync leaves alone on
/// purpose (kept by `driftguard.io/prune: disabled`, owned by another Guard, ...). Applies and
/// prunes are differences; waiting and left-alone objects are not.
pub fn report(plan: &Plan<'_>, live: &LiveSnapshot) -> Report {
    let mut lines = Vec::new();
    for step in &plan.apply {
        let object = step.object;
        let origin = &object.origin;
        match &step.reason {
            ApplyReason::Create => lines.push(format!("{}: missing from the cluster (Git: {origin})", step.key)),
            ApplyReason::Drift(paths) => {
                lines.push(format!(
                    "{}: {} declared field{} differ{} from Git ({origin})",
                    step.key,
                    paths.len(),
                    if paths.len() == 1 { "" } else { "s" },
                    if paths.len() == 1 { "s" } else { "" },
                ));
                let live_object = live.get(&step.key);
                let git_object = object.value().ok();
                for path in paths {
                    let sensitive = object.is_sensitive(path);
                    let cluster = live_object.and_then(|l| path.resolve(l));
                    let git = git_object.as_ref().and_then(|o| path.resolve(o));
                    if let Some(Held {
                        call: Call::Clamp { value, reason },
                        ..
                    }) = step.delegated.at(path)
                    {
                        lines.push(format!(
                            "  {path}: cluster {}, would be set to {value}: {reason}",
                            show_value(cluster, sensitive)
                        ));
                        continue;
                    }
                    lines.push(format!(
                        "  {path}: cluster {}, Git {}",
                        show_value(cluster, sensitive),
                        show_value(git, sensitive)
                    ));
                }
            }
            ApplyReason::Ownership => lines.push(format!(
                "{}: lacks driftguard's ownership label and annotation (Git: {origin})",
                step.key
            )),
            ApplyReason::LiveUnknown => lines.push(format!("{}: could not be read from the cluster", step.key)),
        }
    }
    for (key, delegated) in &plan.delegated {
        for held in delegated.kept() {
            lines.push(format!(
                "{key}: {} left to its delegate: cluster {}, Git {} (written by {}, delegate rule {})",
                held.path,
                show_value(Some(&held.live), held.sensitive),
                show_value(held.git.as_ref(), held.sensitive),
                held.manager,
                held.rule + 1,
            ));
        }
    }
    for (key, why) in &plan.waiting {
        lines.push(format!("{key}: waiting: {why}"));
    }
    for step in &plan.prune {
        lines.push(format!(
            "would prune {} ({})",
            qualified(&step.key, &step.version),
            step.reason
        ));
    }
    for (key, why) in &plan.skipped {
        if !matches!(why, SkipReason::Unchanged | SkipReason::AlreadyDeleted) {
            lines.push(format!("{key}: left alone: {why}"));
        }
    }
    Report {
        differences: plan.apply.len() + plan.prune.len(),
        lines,
    }
}

/// `apiVersion/Kind namespace/name` (`v1/ConfigMap default/web-config`,
/// `rbac.authorization.k8s.io/v1/ClusterRole reader`).
fn qualified(key: &ObjectKey, version: &str) -> String {
    let group = if key.group.is_empty() {
        String::new()
    } else {
        format!("{}/", key.group)
    };
    let place = match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    };
    format!("{group}{version}/{} {place}", key.kind)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::api::{GUARD_ANNOTATION, GuardSpec, InventoryEntry, MANAGED_LABEL, PruneSpec};
    use crate::desired::{DesiredObject, DesiredSet, GuardId, GuardPolicy};
    use crate::reconcile::{LiveObject, PlanFacts, plan};
    use crate::render::{Manifest, Origin};
    use crate::source::Revision;

    fn guard() -> GuardId {
        GuardId {
            namespace: "default".into(),
            name: "app".into(),
        }
    }

    fn desired(objects: Vec<Value>) -> Vec<DesiredObject> {
        let spec: GuardSpec = serde_json::from_value(json!({"sourceRef": {"name": "apps"}, "path": "app"})).unwrap();
        let policy = Arc::new(GuardPolicy::new(guard(), &spec, "file:///repo").unwrap());
        let manifests = objects
            .into_iter()
            .map(|object| Manifest {
                object,
                origin: Origin {
                    file: "app/all.yaml".into(),
                    line: 1,
                    document: None,
                },
                fields: Default::default(),
            })
            .collect();
        let revision = Revision {
            commit: "a".repeat(40),
            reference: "main".into(),
        };
        DesiredSet::build(policy, revision, manifests).unwrap().objects
    }

    fn config_map(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data})
    }

    /// `config_map` as the cluster has it after driftguard applied it.
    fn live(name: &str, data: Value, annotations: Value) -> LiveObject {
        let mut object = config_map(name, data);
        object["metadata"]["uid"] = json!(format!("uid-{name}"));
        object["metadata"]["labels"] = json!({ MANAGED_LABEL: "true" });
        object["metadata"]["annotations"] = annotations;
        object["metadata"]["annotations"][GUARD_ANNOTATION] = json!("default/app");
        LiveObject {
            key: ObjectKey::new("", "ConfigMap", Some("default"), name),
            object,
        }
    }

    fn entry(name: &str) -> InventoryEntry {
        InventoryEntry {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
        }
    }

    fn report_for(prune: PruneSpec, desired: &[DesiredObject], live: &LiveSnapshot) -> Report {
        let inventory = ["web", "old", "kept", "gone"].map(entry);
        let established = HashSet::new();
        let id = guard();
        let facts = PlanFacts {
            guard: &id,
            established: &established,
            prune: &prune,
            held: &HashSet::new(),
            detached: &HashSet::new(),
            hpa: &Default::default(),
        };
        report(&plan(desired, &inventory, live, &facts), live)
    }

    #[test]
    fn drift_and_prunes_are_differences_kept_objects_are_not() {
        let desired = desired(vec![config_map("web", json!({"mode": "blue"}))]);
        let live: LiveSnapshot = [
            live("web", json!({"mode": "green"}), json!({})),
            live("old", json!({}), json!({})),
            live("kept", json!({}), json!({"driftguard.io/prune": "disabled"})),
        ]
        .into_iter()
        .collect();
        let report = report_for(PruneSpec::default(), &desired, &live);
        assert_eq!(
            report.lines,
            [
                "ConfigMap default/web: 1 declared field differs from Git (app/all.yaml:1)",
                "  data.mode: cluster \"green\", Git \"blue\"",
                "would prune v1/ConfigMap default/old (no longer declared in Git)",
                "ConfigMap default/kept: left alone: driftguard.io/prune: disabled",
            ],
            "{:#?}",
            report.lines
        );
        assert_eq!(report.differences, 2);
    }

    #[test]
    fn nothing_is_pruned_when_the_guard_disables_prune() {
        let desired = desired(vec![config_map("web", json!({"mode": "blue"}))]);
        let live: LiveSnapshot = [
            live("web", json!({"mode": "blue"}), json!({})),
            live("old", json!({}), json!({})),
        ]
        .into_iter()
        .collect();
        let prune = PruneSpec {
            enabled: false,
            allow_empty: false,
        };
        let report = report_for(prune, &desired, &live);
        assert_eq!(report.differences, 0, "{:#?}", report.lines);
        assert!(
            report.lines.iter().all(|l| !l.starts_with("would prune")),
            "{:#?}",
            report.lines
        );
    }

    #[test]
    fn qualified_names_carry_group_version_and_namespace() {
        assert_eq!(
            qualified(&ObjectKey::new("", "ConfigMap", Some("default"), "old-config"), "v1"),
            "v1/ConfigMap default/old-config"
        );
        assert_eq!(
            qualified(
                &ObjectKey::new("rbac.authorization.k8s.io", "ClusterRole", None, "reader"),
                "v1"
            ),
            "rbac.authorization.k8s.io/v1/ClusterRole reader"
        );
    }

    /// Deployment `web` (Git: 3 replicas) of a Guard delegating replicas to the field manager
    /// `deployer` between 1 and 6.
    fn delegated_web() -> Vec<DesiredObject> {
        let spec: GuardSpec = serde_json::from_value(json!({"sourceRef": {"name": "apps"}, "path": "app",
            "delegate": [{"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
                          "to": {"fieldManagers": ["deployer"]}, "bounds": {"min": 1, "max": 6}}]}))
        .unwrap();
        let policy = Arc::new(GuardPolicy::new(guard(), &spec, "file:///repo").unwrap());
        let manifest = Manifest {
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 3}}),
            origin: Origin {
                file: "app/web.yaml".into(),
                line: 1,
                document: None,
            },
            fields: Default::default(),
        };
        let revision = Revision {
            commit: "a".repeat(40),
            reference: "main".into(),
        };
        DesiredSet::build(policy, revision, vec![manifest]).unwrap().objects
    }

    /// Deployment `web` applied by driftguard, then `replicas` written by `manager`.
    fn live_web(replicas: i64, manager: &str) -> LiveObject {
        LiveObject {
            key: ObjectKey::new("apps", "Deployment", Some("default"), "web"),
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "uid": "u",
                    "labels": { MANAGED_LABEL: "true" }, "annotations": { GUARD_ANNOTATION: "default/app" },
                    "managedFields": [
                        {"manager": "driftguard", "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
                        {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
                "spec": {"replicas": replicas}}),
        }
    }

    #[test]
    fn delegated_fields_are_left_to_their_delegates_or_set_to_the_bound() {
        struct Case {
            name: &'static str,
            live: Option<LiveObject>,
            /// Applied (with the reason's paths), or skipped.
            applied: Option<Vec<&'static str>>,
            /// The bound written, if any.
            clamp: Option<i64>,
            line: &'static str,
        }
        let cases = [
            Case {
                name: "missing: created with Git's value",
                live: None,
                applied: Some(vec![]),
                clamp: None,
                line: "missing from the cluster",
            },
            Case {
                name: "the deployer's value within the bounds",
                live: Some(live_web(4, "deployer")),
                applied: None,
                clamp: None,
                line: "spec.replicas left to its delegate: cluster 4, Git 3 (written by deployer, delegate rule 1)",
            },
            Case {
                name: "the deployer's value beyond the bounds",
                live: Some(live_web(9, "deployer")),
                applied: Some(vec!["spec.replicas"]),
                clamp: Some(6),
                line: "spec.replicas: cluster 9, would be set to 6: 9 written by deployer is above the maximum 6 (bounds) of delegate rule 1",
            },
            Case {
                name: "a person's value",
                live: Some(live_web(4, "kubectl-edit")),
                applied: Some(vec!["spec.replicas"]),
                clamp: None,
                line: "spec.replicas: cluster 4, Git 3",
            },
        ];
        let desired = delegated_web();
        let established = HashSet::new();
        let id = guard();
        let prune = PruneSpec::default();
        let facts = PlanFacts {
            guard: &id,
            established: &established,
            prune: &prune,
            held: &HashSet::new(),
            detached: &HashSet::new(),
            hpa: &Default::default(),
        };
        for case in cases {
            let live: LiveSnapshot = case.live.into_iter().collect();
            let plan = plan(&desired, &[], &live, &facts);
            match &case.applied {
                Some(paths) => {
                    assert_eq!(plan.apply.len(), 1, "{}", case.name);
                    let step = &plan.apply[0];
                    if let ApplyReason::Drift(got) = &step.reason {
                        assert_eq!(
                            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            *paths,
                            "{}",
                            case.name
                        );
                    }
                    let clamp = step.delegated.clamped().find_map(|h| match h.call {
                        Call::Clamp { value, .. } => Some(value),
                        Call::Keep => None,
                    });
                    assert_eq!(clamp, case.clamp, "{}", case.name);
                }
                None => {
                    assert!(plan.apply.is_empty(), "{}", case.name);
                    assert!(
                        matches!(plan.skipped.as_slice(), [(_, SkipReason::Unchanged)]),
                        "{}",
                        case.name
                    );
                }
            }
            let report = report(&plan, &live);
            assert_eq!(report.differences, usize::from(case.applied.is_some()), "{}", case.name);
            assert!(
                report.lines.iter().any(|l| l.contains(case.line)),
                "{}: {:?}",
                case.name,
                report.lines
            );
        }
    }
}
