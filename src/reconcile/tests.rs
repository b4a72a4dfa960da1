//! Table-driven tests of the plan, with live objects shaped like the API server returns them.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::api::{GuardSpec, PruneSpec};
use crate::desired::{DesiredObject, DesiredSet, GuardId, GuardPolicy};
use crate::render::{Manifest, Origin};
use crate::source::Revision;

const GUARD: &str = "driftguard/shop";

fn guard_id() -> GuardId {
    GuardId {
        namespace: "driftguard".into(),
        name: "shop".into(),
    }
}

fn desired_with(spec: Value, objects: Vec<Value>) -> Vec<DesiredObject> {
    let spec: GuardSpec = serde_json::from_value(spec).unwrap();
    let policy = Arc::new(GuardPolicy::new(guard_id(), &spec, "file:///repo").unwrap());
    let manifests = objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| Manifest {
            object,
            origin: Origin {
                file: "apps/all.yaml".into(),
                line: u32::try_from(i).unwrap() + 1,
                document: None,
            },
            fields: Default::default(),
        })
        .collect();
    let revision = Revision {
        commit: "a".repeat(40),
        reference: format!("main@sha1:{}", "a".repeat(40)),
    };
    // What discovery says of the custom kinds these tests use.
    let mut kinds = crate::desired::ApiResources::default();
    kinds.insert("example.com", "Widget", "widgets", true);
    DesiredSet::build_with(policy, revision, manifests, &kinds)
        .unwrap()
        .objects
}

fn desired(objects: Vec<Value>) -> Vec<DesiredObject> {
    desired_with(
        json!({"sourceRef": {"name": "shop"}, "path": "apps", "targetNamespace": "shop"}),
        objects,
    )
}

fn obj(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut o = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = namespace {
        o["metadata"]["namespace"] = json!(ns);
    }
    o
}

fn crd(group: &str, kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}}
                }]}
            }
        }
    })
}

/// The Deployment as the API server returns it after driftguard applied it: defaults filled
/// in, quantities canonicalized, managedFields, status, and the ownership stamps.
fn live_deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": "shop", "uid": "6f1c2a7e-0000-4000-8000-000000000001",
            "resourceVersion": "48213", "generation": 3, "creationTimestamp": "2026-11-20T09:12:44Z",
            "labels": {"app": name, "driftguard.io/managed": "true"},
            "annotations": {"driftguard.io/guard": GUARD, "deployment.kubernetes.io/revision": "3"},
            "managedFields": [
                {"manager": "driftguard", "operation": "Apply", "apiVersion": "apps/v1",
                 "time": "2026-11-20T09:12:44Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-11-20T09:13:01Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:replicas": {}}}}
            ]
        },
        "spec": {
            "replicas": 2, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}},
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                    }],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "securityContext": {}, "terminationGracePeriodSeconds": 30
                }
            }
        },
        "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    })
}

fn key(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey::new(group, kind, namespace, name)
}

fn entry(group: &str, version: &str, kind: &str, namespace: Option<&str>, name: &str) -> InventoryEntry {
    InventoryEntry {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
        uid: Some(format!("uid-{name}")),
    }
}

/// A live object owned by `owner` with extra annotations.
fn live_owned(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    owner: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut o = obj(api_version, kind, namespace, name);
    o["metadata"]["uid"] = json!(format!("live-uid-{name}"));
    o["metadata"]["labels"] = json!({"driftguard.io/managed": "true"});
    o["metadata"]["annotations"] = json!({"driftguard.io/guard": owner});
    for (k, v) in extra {
        o["metadata"]["annotations"][*k] = json!(v);
    }
    o
}

fn snapshot(objects: Vec<(ObjectKey, Value)>) -> LiveSnapshot {
    objects
        .into_iter()
        .map(|(key, object)| LiveObject { key, object })
        .collect()
}

fn run<'a>(
    desired: &'a [DesiredObject],
    inventory: &[InventoryEntry],
    live: &LiveSnapshot,
    established: &[GroupKind],
    prune: PruneSpec,
) -> Plan<'a> {
    run_holding(desired, inventory, live, established, prune, &HashSet::new())
}

fn run_holding<'a>(
    desired: &'a [DesiredObject],
    inventory: &[InventoryEntry],
    live: &LiveSnapshot,
    established: &[GroupKind],
    prune: PruneSpec,
    held: &HashSet<ObjectKey>,
) -> Plan<'a> {
    let id = guard_id();
    let established: HashSet<GroupKind> = established.iter().cloned().collect();
    plan(
        desired,
        inventory,
        live,
        &PlanFacts {
            guard: &id,
            established: &established,
            prune: &prune,
            held,
            detached: &HashSet::new(),
            hpa: &Default::default(),
        },
    )
}

fn applied_names(plan: &Plan<'_>) -> Vec<String> {
    plan.apply.iter().map(|s| s.key.to_string()).collect()
}

fn skip_of<'p>(plan: &'p Plan<'_>, k: &ObjectKey) -> Option<&'p SkipReason> {
    plan.skipped.iter().find(|(sk, _)| sk == k).map(|(_, r)| r)
}

#[test]
fn apply_order_follows_the_tiers_then_kind_namespace_name() {
    let objects = desired(vec![
        deployment("web"),
        obj("v1", "ConfigMap", Some("b"), "z"),
        obj("v1", "ConfigMap", Some("a"), "y"),
        obj("v1", "ConfigMap", Some("a"), "x"),
        obj("rbac.authorization.k8s.io/v1", "RoleBinding", Some("shop"), "rb"),
        obj("storage.k8s.io/v1", "StorageClass", None, "fast"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "crb"),
        obj("v1", "ServiceAccount", Some("shop"), "web"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", None, "cr"),
        obj("v1", "Namespace", None, "shop"),
        crd("example.com", "Widget", "widgets"),
    ]);
    let plan = run(&objects, &[], &LiveSnapshot::new(), &[], PruneSpec::default());
    assert_eq!(
        applied_names(&plan),
        [
            "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com",
            "Namespace shop",
            "ClusterRole.rbac.authorization.k8s.io cr",
            "ClusterRoleBinding.rbac.authorization.k8s.io crb",
            "ServiceAccount shop/web",
            "StorageClass.storage.k8s.io fast",
            "ConfigMap a/x",
            "ConfigMap a/y",
            "ConfigMap b/z",
            "Deployment.apps shop/web",
            "RoleBinding.rbac.authorization.k8s.io shop/rb",
        ]
    );
    let tiers: Vec<Tier> = plan.apply.iter().map(|s| s.tier).collect();
    assert!(tiers.is_sorted(), "{tiers:?}");
    assert!(plan.apply.iter().all(|s| s.reason == ApplyReason::Create));
}

#[test]
fn custom_resources_wait_for_their_crd_unless_this_plan_applies_it() {
    let widget = || obj("example.com/v1", "Widget", Some("shop"), "w1");
    let crd_key = key(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    );
    let widget_key = key("example.com", "Widget", Some("shop"), "w1");
    let gk = GroupKind::new("example.com", "Widget");
    // Live CRD equal to Git, stamped: the plan skips it, so it does not apply it.
    let mut live_crd = desired(vec![crd("example.com", "Widget", "widgets")])
        .remove(0)
        .value()
        .unwrap();
    live_crd["metadata"]["uid"] = json!("crd-uid");
    live_crd["status"] = json!({"conditions": [{"type": "NamesAccepted", "status": "True"}]});

    struct Case {
        name: &'static str,
        crd_in_git: bool,
        crd_live: bool,
        established: bool,
        // (tier, requires_crd) when applied, else the waiting message.
        want: Result<(Tier, Option<&'static str>), &'static str>,
    }
    let cases = [
        Case {
            name: "established: applied like any namespaced object",
            crd_in_git: false,
            crd_live: false,
            established: true,
            want: Ok((Tier::Namespaced, None)),
        },
        Case {
            name: "CRD applied by this plan: last, marked",
            crd_in_git: true,
            crd_live: false,
            established: false,
            want: Ok((Tier::AwaitingCrd, Some("widgets.example.com"))),
        },
        Case {
            name: "CRD elsewhere, not established",
            crd_in_git: false,
            crd_live: false,
            established: false,
            want: Err("CRD widgets.example.com not Established yet"),
        },
        Case {
            name: "CRD in Git and unchanged but not established yet",
            crd_in_git: true,
            crd_live: true,
            established: false,
            want: Err("CRD widgets.example.com not Established yet"),
        },
    ];
    for case in cases {
        let mut manifests = vec![widget(), deployment("web")];
        if case.crd_in_git {
            manifests.push(crd("example.com", "Widget", "widgets"));
        }
        let objects = desired(manifests);
        let live = if case.crd_live {
            snapshot(vec![(crd_key.clone(), live_crd.clone())])
        } else {
            LiveSnapshot::new()
        };
        let established = if case.established { vec![gk.clone()] } else { vec![] };
        let plan = run(&objects, &[], &live, &established, PruneSpec::default());
        let step = plan.apply.iter().find(|s| s.key == widget_key);
        match case.want {
            Ok((tier, requires)) => {
                let step = step.unwrap_or_else(|| panic!("{}: widget not applied", case.name));
                assert_eq!(step.tier, tier, "{}", case.name);
                assert_eq!(step.requires_crd.as_deref(), requires, "{}", case.name);
                assert!(plan.waiting.is_empty(), "{}", case.name);
                if requires.is_some() {
                    assert_eq!(plan.apply.last().map(|s| &s.key), Some(&widget_key), "{}", case.name);
                    assert_eq!(plan.apply.first().map(|s| &s.key), Some(&crd_key), "{}", case.name);
                }
            }
            Err(message) => {
                assert!(step.is_none(), "{}", case.name);
                assert_eq!(plan.waiting.len(), 1, "{}", case.name);
                assert_eq!(plan.waiting[0].0, widget_key, "{}", case.name);
                assert_eq!(plan.waiting[0].1.to_string(), message, "{}", case.name);
            }
        }
        // The Deployment never waits for anything.
        assert!(plan.apply.iter().any(|s| s.key.kind == "Deployment"), "{}", case.name);
    }
}

#[test]
fn skips_objects_equal_to_git_and_applies_the_rest_with_a_reason() {
    let dkey = key("apps", "Deployment", Some("shop"), "web");
    type Edit = fn(&mut Value);
    let cases: [(&str, Option<Edit>, Result<ApplyReason, SkipReason>); 6] = [
        (
            "server defaults, managedFields, 500m == 0.5",
            Some(|_| {}),
            Err(SkipReason::Unchanged),
        ),
        (
            "replicas scaled by someone",
            Some(|l| l["spec"]["replicas"] = json!(5)),
            Ok(ApplyReason::Drift(vec![])),
        ),
        (
            "managed label removed",
            Some(|l| {
                l["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("driftguard.io/managed");
            }),
            Ok(ApplyReason::Drift(vec![])),
        ),
        (
            "undeclared label added: not drift",
            Some(|l| l["metadata"]["labels"]["team"] = json!("payments")),
            Err(SkipReason::Unchanged),
        ),
        (
            "owned by another Guard",
            Some(|l| l["metadata"]["annotations"]["driftguard.io/guard"] = json!("other/guard")),
            Err(SkipReason::OwnedByOtherGuard("other/guard".into())),
        ),
        ("absent", None, Ok(ApplyReason::Create)),
    ];
    let objects = desired(vec![deployment("web")]);
    for (name, edit, want) in cases {
        let live = match edit {
            Some(edit) => {
                let mut l = live_deployment("web");
                edit(&mut l);
                snapshot(vec![(dkey.clone(), l)])
            }
            None => LiveSnapshot::new(),
        };
        let plan = run(&objects, &[], &live, &[], PruneSpec::default());
        match want {
            Ok(ApplyReason::Drift(_)) => {
                assert_eq!(plan.apply.len(), 1, "{name}");
                let ApplyReason::Drift(paths) = &plan.apply[0].reason else {
                    panic!("{name}: {:?}", plan.apply[0].reason);
                };
                assert_eq!(paths.len(), 1, "{name}: {paths:?}");
            }
            Ok(reason) => {
                assert_eq!(plan.apply.len(), 1, "{name}");
                assert_eq!(plan.apply[0].reason, reason, "{name}");
            }
            Err(reason) => {
                assert!(plan.apply.is_empty(), "{name}: {:?}", plan.apply);
                assert_eq!(skip_of(&plan, &dkey), Some(&reason), "{name}");
            }
        }
    }
}

#[test]
fn objects_held_by_a_fight_are_neither_applied_nor_pruned_but_missing_ones_are_created() {
    let dkey = key("apps", "Deployment", Some("shop"), "web");
    let mut scaled = live_deployment("web");
    scaled["spec"]["replicas"] = json!(6);
    let objects = desired(vec![deployment("web")]);
    let inventory = [entry("apps", "v1", "Deployment", Some("shop"), "web")];
    let held: HashSet<ObjectKey> = [dkey.clone()].into();
    let live = snapshot(vec![(dkey.clone(), scaled)]);
    let plan = run_holding(&objects, &inventory, &live, &[], PruneSpec::default(), &held);
    assert!(plan.apply.is_empty(), "{:?}", plan.apply);
    assert!(plan.prune.is_empty());
    assert_eq!(skip_of(&plan, &dkey), Some(&SkipReason::Fighting));
    assert_eq!(
        next_inventory(&plan, &[], &[]).len(),
        1,
        "a held object stays in the inventory"
    );
    // Deleted meanwhile: there is nothing to fight over, so it is created again.
    let plan = run_holding(
        &objects,
        &inventory,
        &LiveSnapshot::new(),
        &[],
        PruneSpec::default(),
        &held,
    );
    assert_eq!(plan.apply[0].reason, ApplyReason::Create);
}

#[test]
fn drift_paths_name_the_field_and_ignored_fields_do_not_count() {
    let dkey = key("apps", "Deployment", Some("shop"), "web");
    let mut scaled = live_deployment("web");
    scaled["spec"]["replicas"] = json!(5);
    let live = snapshot(vec![(dkey.clone(), scaled)]);

    let objects = desired(vec![deployment("web")]);
    let plan = run(&objects, &[], &live, &[], PruneSpec::default());
    let ApplyReason::Drift(paths) = &plan.apply[0].reason else {
        panic!("{:?}", plan.apply[0].reason);
    };
    assert_eq!(paths[0].to_string(), "spec.replicas");

    let ignoring = desired_with(
        json!({"sourceRef": {"name": "shop"}, "path": "apps", "targetNamespace": "shop",
               "ignore": [{"kind": "Deployment", "jsonPointers": ["/spec/replicas"]}]}),
        vec![deployment("web")],
    );
    let plan = run(&ignoring, &[], &live, &[], PruneSpec::default());
    assert!(plan.apply.is_empty());
    assert_eq!(skip_of(&plan, &dkey), Some(&SkipReason::Unchanged));
}

#[test]
fn stamps_missing_on_an_otherwise_equal_object_are_applied() {
    // A desired object built without the stamps (as a caller could) still gets them applied.
    let dkey = key("apps", "Deployment", Some("shop"), "web");
    let mut objects = desired(vec![deployment("web")]);
    let mut unstamped = objects[0].value().unwrap();
    unstamped["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("driftguard.io/managed");
    objects[0].object = serde_json::value::to_raw_value(&unstamped).unwrap();
    let mut l = live_deployment("web");
    l["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("driftguard.io/managed");
    let plan = run(&objects, &[], &snapshot(vec![(dkey, l)]), &[], PruneSpec::default());
    assert_eq!(plan.apply.len(), 1);
    assert_eq!(plan.apply[0].reason, ApplyReason::Ownership);
}

#[test]
fn prune_list_is_inventory_minus_desired_minus_protected_with_reasons() {
    let objects = desired(vec![deployment("web")]);
    let inventory = vec![
        entry("apps", "v1", "Deployment", Some("shop"), "web"),
        entry("", "v1", "ConfigMap", Some("shop"), "removed"),
        entry("", "v1", "ConfigMap", Some("shop"), "keep-me"),
        entry("", "v1", "ConfigMap", Some("shop"), "adopted"),
        entry("", "v1", "ConfigMap", Some("shop"), "gone"),
        entry("example.com", "v1", "Widget", Some("shop"), "unreadable"),
    ];
    let cm = |name: &str, owner: &str, extra: &[(&str, &str)]| {
        (
            key("", "ConfigMap", Some("shop"), name),
            live_owned("v1", "ConfigMap", Some("shop"), name, owner, extra),
        )
    };
    let mut live = snapshot(vec![
        (key("apps", "Deployment", Some("shop"), "web"), live_deployment("web")),
        cm("removed", GUARD, &[]),
        cm("keep-me", GUARD, &[("driftguard.io/prune", "disabled")]),
        cm("adopted", "team-b/apps", &[]),
    ]);
    live.mark_unknown(GroupKind::new("example.com", "Widget"));
    let plan = run(&objects, &inventory, &live, &[], PruneSpec::default());

    assert_eq!(plan.prune.len(), 1);
    let step = &plan.prune[0];
    assert_eq!(step.key, key("", "ConfigMap", Some("shop"), "removed"));
    assert_eq!(step.reason, PruneReason::RemovedFromGit);
    assert_eq!(step.version, "v1");
    assert_eq!(step.uid.as_deref(), Some("live-uid-removed"));

    let table = [
        ("keep-me", "ConfigMap", SkipReason::PruneDisabledByAnnotation, false),
        (
            "adopted",
            "ConfigMap",
            SkipReason::OwnedByOtherGuard("team-b/apps".into()),
            false,
        ),
        ("gone", "ConfigMap", SkipReason::AlreadyDeleted, false),
        ("unreadable", "Widget", SkipReason::LiveUnknown, true),
    ];
    let next = next_inventory(&plan, &[], std::slice::from_ref(&step.key));
    for (name, kind, reason, stays) in table {
        let group = if kind == "Widget" { "example.com" } else { "" };
        let k = key(group, kind, Some("shop"), name);
        assert_eq!(skip_of(&plan, &k), Some(&reason), "{name}");
        assert_eq!(next.iter().any(|e| e.key() == k), stays, "{name} in next inventory");
    }
    assert!(next.iter().any(|e| e.name == "web"));
    assert!(!next.iter().any(|e| e.name == "removed"));
}

#[test]
fn prune_runs_in_reverse_apply_order() {
    let objects = desired(vec![obj("v1", "ConfigMap", Some("other"), "still-here")]);
    let stale = [
        (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            None,
            "gadgets.example.com",
        ),
        ("", "v1", "Namespace", None, "old"),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", None, "old-role"),
        ("", "v1", "ServiceAccount", Some("old"), "sa"),
        ("storage.k8s.io", "v1", "StorageClass", None, "slow"),
        ("apps", "v1", "Deployment", Some("old"), "api"),
        ("", "v1", "ConfigMap", Some("old"), "a"),
        ("", "v1", "ConfigMap", Some("old"), "b"),
    ];
    let inventory: Vec<InventoryEntry> = stale.iter().map(|(g, v, k, ns, n)| entry(g, v, k, *ns, n)).collect();
    let live = snapshot(
        stale
            .iter()
            .map(|(g, v, k, ns, n)| {
                let api_version = if g.is_empty() {
                    (*v).to_owned()
                } else {
                    format!("{g}/{v}")
                };
                (key(g, k, *ns, n), live_owned(&api_version, k, *ns, n, GUARD, &[]))
            })
            .collect(),
    );
    let plan = run(&objects, &inventory, &live, &[], PruneSpec::default());
    let order: Vec<String> = plan.prune.iter().map(|s| s.key.to_string()).collect();
    assert_eq!(
        order,
        [
            "Deployment.apps old/api",
            "ConfigMap old/b",
            "ConfigMap old/a",
            "StorageClass.storage.k8s.io slow",
            "ServiceAccount old/sa",
            "ClusterRole.rbac.authorization.k8s.io old-role",
            "Namespace old",
            "CustomResourceDefinition.apiextensions.k8s.io gadgets.example.com",
        ]
    );
    assert!(plan.prune.iter().all(|s| s.reason == PruneReason::RemovedFromGit));
}

#[test]
fn a_namespace_or_crd_still_needed_is_not_pruned() {
    let objects = desired(vec![
        obj("v1", "ConfigMap", Some("legacy"), "settings"),
        obj("example.com/v1", "Widget", Some("shop"), "w1"),
    ]);
    let inventory = vec![
        entry("", "v1", "Namespace", None, "legacy"),
        entry("", "v1", "Namespace", None, "kept"),
        entry("", "v1", "ConfigMap", Some("kept"), "precious"),
        entry(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        ),
    ];
    let mut live_crd = crd("example.com", "Widget", "widgets");
    live_crd["metadata"]["annotations"] = json!({"driftguard.io/guard": GUARD});
    let live = snapshot(vec![
        (
            key("", "Namespace", None, "legacy"),
            live_owned("v1", "Namespace", None, "legacy", GUARD, &[]),
        ),
        (
            key("", "Namespace", None, "kept"),
            live_owned("v1", "Namespace", None, "kept", GUARD, &[]),
        ),
        (
            key("", "ConfigMap", Some("kept"), "precious"),
            live_owned(
                "v1",
                "ConfigMap",
                Some("kept"),
                "precious",
                GUARD,
                &[("driftguard.io/prune", "disabled")],
            ),
        ),
        (
            key(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            ),
            live_crd,
        ),
    ]);
    let established = [GroupKind::new("example.com", "Widget")];
    let plan = run(&objects, &inventory, &live, &established, PruneSpec::default());
    assert!(plan.prune.is_empty(), "{:?}", plan.prune);
    let cases = [
        (
            key("", "Namespace", None, "legacy"),
            key("", "ConfigMap", Some("legacy"), "settings"),
        ),
        (
            key("", "Namespace", None, "kept"),
            key("", "ConfigMap", Some("kept"), "precious"),
        ),
        (
            key(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            ),
            key("example.com", "Widget", Some("shop"), "w1"),
        ),
    ];
    let next = next_inventory(&plan, &[], &[]);
    for (held, by) in cases {
        assert_eq!(skip_of(&plan, &held), Some(&SkipReason::StillInUse(by)), "{held}");
        assert!(next.iter().any(|e| e.key() == held), "{held} stays in the inventory");
    }
}

#[test]
fn empty_render_and_disabled_prune_never_delete() {
    /// (name, desired, prune settings, the prune reason, or the skip reason and whether the
    /// entry stays in the inventory)
    type Case<'a> = (
        &'static str,
        &'a [DesiredObject],
        PruneSpec,
        Result<PruneReason, (SkipReason, bool)>,
    );
    let cm_key = key("", "ConfigMap", Some("shop"), "a");
    let inventory = vec![entry("", "v1", "ConfigMap", Some("shop"), "a")];
    let live = snapshot(vec![(
        cm_key.clone(),
        live_owned("v1", "ConfigMap", Some("shop"), "a", GUARD, &[]),
    )]);
    let some = desired(vec![deployment("web")]);
    let none: Vec<DesiredObject> = Vec::new();
    let spec = |enabled, allow_empty| PruneSpec { enabled, allow_empty };
    let cases: [Case<'_>; 5] = [
        (
            "empty render is protected",
            &none,
            spec(true, false),
            Err((SkipReason::EmptyRender, true)),
        ),
        (
            "empty render allowed",
            &none,
            spec(true, true),
            Ok(PruneReason::EmptyRenderAllowed),
        ),
        (
            "removed from Git",
            &some,
            spec(true, false),
            Ok(PruneReason::RemovedFromGit),
        ),
        (
            "prune disabled",
            &some,
            spec(false, false),
            Err((SkipReason::PruningDisabled, false)),
        ),
        (
            "prune disabled, empty allowed",
            &none,
            spec(false, true),
            Err((SkipReason::PruningDisabled, false)),
        ),
    ];
    for (name, objects, prune, want) in cases {
        let plan = run(objects, &inventory, &live, &[], prune);
        match want {
            Ok(reason) => {
                assert_eq!(plan.prune.len(), 1, "{name}");
                assert_eq!(plan.prune[0].reason, reason, "{name}");
            }
            Err((reason, stays)) => {
                assert!(plan.prune.is_empty(), "{name}");
                assert_eq!(skip_of(&plan, &cm_key), Some(&reason), "{name}");
                let next = next_inventory(&plan, &[], &[]);
                assert_eq!(next.iter().any(|e| e.key() == cm_key), stays, "{name}");
            }
        }
    }
}

#[test]
fn failed_or_unattempted_prunes_stay_in_the_inventory_and_uids_are_learnt() {
    let objects = desired(vec![
        deployment("web"),
        obj("v1", "ConfigMap", Some("shop"), "settings"),
    ]);
    let inventory = vec![
        entry("", "v1", "ConfigMap", Some("shop"), "settings"),
        entry("", "v1", "ConfigMap", Some("shop"), "deleted-ok"),
        entry("", "v1", "ConfigMap", Some("shop"), "delete-fails"),
        entry("", "v1", "Secret", Some("shop"), "not-attempted"),
    ];
    let live = snapshot(
        [
            ("ConfigMap", "deleted-ok"),
            ("ConfigMap", "delete-fails"),
            ("Secret", "not-attempted"),
        ]
        .into_iter()
        .map(|(kind, name)| {
            (
                key("", kind, Some("shop"), name),
                live_owned("v1", kind, Some("shop"), name, GUARD, &[]),
            )
        })
        .collect(),
    );
    let plan = run(&objects, &inventory, &live, &[], PruneSpec::default());
    assert_eq!(plan.prune.len(), 3);
    let applied = [Applied {
        key: key("apps", "Deployment", Some("shop"), "web"),
        uid: Some("new-uid".into()),
    }];
    let next = next_inventory(&plan, &applied, &[key("", "ConfigMap", Some("shop"), "deleted-ok")]);
    let names: Vec<(&str, Option<&str>)> = next.iter().map(|e| (e.name.as_str(), e.uid.as_deref())).collect();
    assert_eq!(
        names,
        [
            ("delete-fails", Some("live-uid-delete-fails")),
            // Not applied this time: the previous inventory's uid is kept.
            ("settings", Some("uid-settings")),
            ("not-attempted", Some("live-uid-not-attempted")),
            ("web", Some("new-uid")),
        ]
    );
    assert_eq!(
        next.iter().find(|e| e.name == "web").map(|e| e.version.as_str()),
        Some("v1")
    );
    assert_eq!(
        next.iter().find(|e| e.name == "web").map(|e| e.group.as_str()),
        Some("apps")
    );
}

#[test]
fn inventory_entries_serialize_camel_case_without_empty_fields() {
    let cluster = InventoryEntry {
        uid: None,
        ..entry("", "v1", "Namespace", None, "shop")
    };
    assert_eq!(
        serde_json::to_value(&cluster).unwrap(),
        json!({"group": "", "version": "v1", "kind": "Namespace", "name": "shop"})
    );
    let back: InventoryEntry = serde_json::from_value(
        json!({"version": "v1", "kind": "ConfigMap", "namespace": "a", "name": "b", "uid": "u"}),
    )
    .unwrap();
    assert_eq!(back.key(), key("", "ConfigMap", Some("a"), "b"));
    assert_eq!(back.uid.as_deref(), Some("u"));
}

#[test]
fn objects_of_unreadable_kinds_are_applied_without_comparing() {
    let objects = desired(vec![
        deployment("web"),
        obj("v1", "ConfigMap", Some("shop"), "settings"),
    ]);
    let mut live = snapshot(vec![(
        key("apps", "Deployment", Some("shop"), "web"),
        live_deployment("web"),
    )]);
    live.mark_unknown(GroupKind::new("apps", "Deployment"));
    let plan = run(&objects, &[], &live, &[], PruneSpec::default());
    let reasons: Vec<(&str, &ApplyReason)> = plan.apply.iter().map(|s| (s.key.name.as_str(), &s.reason)).collect();
    assert_eq!(
        reasons,
        [("settings", &ApplyReason::Create), ("web", &ApplyReason::LiveUnknown)]
    );
}
