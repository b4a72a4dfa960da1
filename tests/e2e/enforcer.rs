//! The enforcer against the real API server: server-side apply with real managedFields,
//! self-heal of an edit made while the webhook was unreachable (failurePolicy Ignore), pruning,
//! a fight with a real writer (the HPA controller), and leader failover between two replicas.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cluster::{metric, wait_for};
use crate::{Env, WAIT, apply};

fn replicas(env: &Env, namespace: &str) -> String {
    env.get(namespace, "deploy/web", "{.spec.replicas}")
}

#[test]
fn server_side_apply_self_heal_and_prune_on_the_real_api_server() {
    let env = Env::start(&[], 2);
    env.guard("shop", "deny", json!({}));

    // Server-side apply: driftguard owns the declared fields in the real managedFields.
    let live: Value = serde_json::from_str(&env.cluster.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    let entries = live["metadata"]["managedFields"].as_array().unwrap();
    let ours = entries
        .iter()
        .find(|e| e["manager"] == "driftguard")
        .unwrap_or_else(|| panic!("no driftguard entry in {entries:?}"));
    assert_eq!(ours["operation"], "Apply");
    assert!(ours["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{ours}");
    assert_eq!(live["metadata"]["labels"]["driftguard.io/managed"], "true");
    assert_eq!(live["metadata"]["annotations"]["driftguard.io/guard"], "shop/web");

    // The webhook unreachable (no endpoints) with failurePolicy Ignore: an edit lands, and
    // self-heal puts Git back within seconds, naming the field manager.
    env.past_the_webhook(&["scale", "deploy", "web", "-n", "shop", "--replicas=7"]);
    wait_for("self-heal to restore 3 replicas", WAIT, || {
        (replicas(&env, "shop") == "3").then_some(())
    });
    let events = wait_for("a DriftCorrected Event", WAIT, || {
        let events = env.cluster.ok(&[
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=DriftCorrected",
            "-o",
            "json",
        ]);
        let events: Value = serde_json::from_str(&events).unwrap();
        let items = events["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    });
    assert!(
        events[0]["message"].as_str().unwrap().contains("spec.replicas"),
        "{events:?}"
    );
    let corrected = env
        .installed
        .replicas
        .iter()
        .flat_map(|r| r.audit.try_iter().collect::<Vec<_>>())
        .find(|l| l.contains("\"drift.corrected\""))
        .expect("a drift.corrected audit record");
    assert!(
        corrected.contains("kubectl-scale") || corrected.contains("spec.replicas"),
        "{corrected}"
    );

    // Prune: the Service leaves Git, and the next sync deletes it.
    let head = env.repo.commit("apps/web/service.yaml", None, "drop the Service");
    env.until_applied("shop", &head);
    wait_for("the Service to be pruned", WAIT, || {
        let out = env
            .cluster
            .kubectl()
            .args(["get", "service", "web", "-n", "shop"])
            .output()
            .unwrap();
        (!out.status.success()).then_some(())
    });
    let guard: Value =
        serde_json::from_str(&env.cluster.ok(&["get", "guard", "web", "-n", "shop", "-o", "json"])).unwrap();
    let inventory = guard["status"]["inventory"].to_string();
    assert!(!inventory.contains("\"Service\""), "{inventory}");
}

#[test]
fn a_fight_with_the_hpa_and_leader_failover() {
    // A short Lease so the failover happens within the test.
    let env = Env::start(&["config.leaseDuration=4s"], 2);
    env.guard("shop", "deny", json!({}));

    // The real HPA controller holds the Deployment at its minReplicas (5) through /scale; Git
    // says 3. Self-heal corrects it a few times, then calls it a fight.
    apply(
        &env.cluster,
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "minReplicas": 5, "maxReplicas": 8,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                      "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    );
    let fighting = wait_for("the Fighting condition", Duration::from_secs(180), || {
        let message = env.get(
            "shop",
            "guard/web",
            "{.status.conditions[?(@.type==\"Fighting\")].message}",
        );
        (!message.is_empty()).then_some(message)
    });
    // The HPA controller's /scale writes are recorded under kube-controller-manager's field
    // manager: that is the writer the condition names.
    assert!(fighting.contains("kube-controller-manager"), "{fighting}");
    assert!(
        fighting.contains("spec/replicas") || fighting.contains("spec.replicas"),
        "{fighting}"
    );
    // It proposes the delegate rule that lets the HPA own replicas within its bounds.
    assert!(
        fighting.contains("to: { serviceAccounts: [kube-system/horizontal-pod-autoscaler] }")
            && fighting.contains("bounds: { fromHPA: true }")
            && fighting.contains("jsonPointers: [/spec/replicas]"),
        "{fighting}"
    );
    env.cluster.ok(&["delete", "hpa", "web", "-n", "shop"]);

    // Leader failover: the leader is lost without releasing its Lease; the other replica takes
    // over and repairs drift.
    let mut env = env;
    let leader = wait_for("one leader", WAIT, || {
        let leaders = env.installed.leaders();
        (leaders.len() == 1).then(|| leaders[0].clone())
    });
    env.installed.take(&leader).kill();
    let survivor = env.installed.replicas[0].metrics;
    wait_for("the other replica to lead", WAIT, || {
        (metric(survivor, "driftguard_leader") == Some(1.0)).then_some(())
    });
    // An exempt-free path for drift: the webhook unreachable, so the edit lands.
    env.past_the_webhook(&[
        "patch",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hi"}}"#,
    ]);
    wait_for("the new leader to restore web-config", WAIT, || {
        (env.get("shop", "configmap/web-config", "{.data.greeting}") == "hello from git").then_some(())
    });
}

const CRDS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: clusterwidgets.example.com
spec:
  group: example.com
  scope: Cluster
  names: {plural: clusterwidgets, singular: clusterwidget, kind: ClusterWidget, listKind: ClusterWidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"#;

const OBJECTS: &str = r#"apiVersion: example.com/v1
kind: ClusterWidget
metadata:
  name: big
spec:
  size: 3
---
apiVersion: example.com/v1
kind: Gadget
metadata:
  name: small
spec:
  size: 1
"#;

const JOBS: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  generateName: migrate-
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox:1.37}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: presync
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: presync, image: busybox:1.37}]
"#;

/// A Git path with a CRD of cluster scope and one of namespace scope, and an object of each:
/// the scope and plural come from the API, so both objects are applied where they belong and
/// both are protected by admission and by self-heal.
#[test]
fn custom_resources_of_both_scopes_are_protected() {
    let env = Env::start(&[], 1);
    env.repo.commit("apps/web/crds.yaml", Some(CRDS), "CRDs");
    env.repo
        .commit("apps/web/widgets.yaml", Some(OBJECTS), "a widget and a gadget");
    // Not desired state: a Job named by generateName and an Argo CD hook (counted as skipped).
    env.repo
        .commit("apps/web/jobs.yaml", Some(JOBS), "a generated Job and a hook");
    env.guard("shop", "deny", json!({}));
    assert_eq!(env.get("shop", "guard/web", "{.status.counts.skipped}"), "2");
    assert_eq!(env.cluster.ok(&["get", "jobs", "-n", "shop", "-o", "name"]), "");

    let widget: Value = serde_json::from_str(&env.cluster.ok(&["get", "clusterwidget", "big", "-o", "json"])).unwrap();
    assert!(widget["metadata"]["namespace"].is_null(), "{widget}");
    assert_eq!(widget["metadata"]["labels"]["driftguard.io/managed"], "true");
    assert_eq!(env.get("shop", "gadget/small", "{.spec.size}"), "1");

    for machine in [false, true] {
        let out = env.kubectl_as_user(
            machine,
            &[
                "patch",
                "clusterwidget",
                "big",
                "--type=merge",
                "-p",
                r#"{"spec":{"size":9}}"#,
            ],
        );
        crate::assert_denied(
            &out,
            "validate.driftguard.io",
            &["spec.size", "Git has 3, request has 9"],
        );
        let out = env.kubectl_as_user(machine, &["delete", "clusterwidget", "big", "--wait=false"]);
        crate::assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);
        let out = env.kubectl_as_user(
            machine,
            &[
                "patch",
                "gadget",
                "small",
                "-n",
                "shop",
                "--type=merge",
                "-p",
                r#"{"spec":{"size":5}}"#,
            ],
        );
        crate::assert_denied(
            &out,
            "validate.driftguard.io",
            &["spec.size", "Git has 1, request has 5"],
        );
    }

    // Self-heal covers the cluster-scoped object too.
    env.past_the_webhook(&[
        "patch",
        "clusterwidget",
        "big",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":9}}"#,
    ]);
    wait_for("self-heal to restore the ClusterWidget", WAIT, || {
        (env.cluster
            .ok(&["get", "clusterwidget", "big", "-o", "jsonpath={.spec.size}"])
            == "3")
            .then_some(())
    });
}
