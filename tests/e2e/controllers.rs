//! The real controllers of kube-controller-manager (each acting as its own service account)
//! are never blocked by driftguard: the deployment controller's status and annotation writes
//! and the ReplicaSets it creates, the garbage collector deleting a managed dependent, the
//! namespace controller emptying a namespace of managed objects, and `/scale` from the HPA's
//! identity.

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, assert_ok};

#[test]
fn real_controllers_are_never_blocked() {
    let env = Env::start(&["webhook.failurePolicy=Fail"], 2);
    env.guard("shop", "deny", json!({}));

    // The deployment controller stamps its revision annotation on the managed Deployment,
    // creates a ReplicaSet (whose controller creates three pods) and writes status.
    wait_for("the deployment controller's writes", WAIT, || {
        let live: Value =
            serde_json::from_str(&env.cluster.ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"])).unwrap();
        let revision = &live["metadata"]["annotations"]["deployment.kubernetes.io/revision"];
        (revision == "1"
            && live["status"]["observedGeneration"] == live["metadata"]["generation"]
            && live["status"]["replicas"] == 3)
            .then_some(())
    });
    let sets = env.cluster.ok(&["get", "replicasets", "-n", "shop", "-o", "name"]);
    assert_eq!(sets.lines().count(), 1, "{sets}");
    let pods = env.cluster.ok(&["get", "pods", "-n", "shop", "-o", "name"]);
    assert_eq!(pods.lines().count(), 3, "{pods}");

    // The HPA's identity may scale through /scale (never break autoscaling). Its RBAC allows
    // get and update of the scale subresource only: it reads the Scale and writes it back with
    // new replicas, as the HPA controller does (`kubectl scale` would need to read the
    // Deployment first, which that identity may not).
    let hpa = ["--as", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"];
    let scale = crate::support::cluster::ok(env.cluster.kubectl().args(hpa).args([
        "get",
        "deploy",
        "web",
        "-n",
        "shop",
        "--subresource=scale",
        "-o",
        "json",
    ]));
    let mut scale: Value = serde_json::from_str(&scale).unwrap();
    scale["spec"]["replicas"] = json!(4);
    let file = env.cluster.scratch().join("scale.json");
    std::fs::write(&file, scale.to_string()).unwrap();
    let out = env
        .cluster
        .kubectl()
        .args(hpa)
        .args([
            "replace",
            "--raw",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_ok(&out);
    // The Scale the API server answered with: the write landed (self-heal may take Git's 3
    // back at once, so the live object is not asserted).
    let written: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(written["spec"]["replicas"], 4, "{written}");

    // The garbage collector deletes a managed object whose owner went away.
    env.cluster.ok(&["create", "configmap", "owner", "-n", "shop"]);
    let owner_uid = env.get("shop", "configmap/owner", "{.metadata.uid}");
    let managed_uid = env.get("shop", "configmap/web-config", "{.metadata.uid}");
    let owner_ref = json!({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
    ]}});
    env.cluster.ok(&[
        "patch",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        &owner_ref.to_string(),
    ]);
    env.cluster.ok(&["delete", "configmap", "owner", "-n", "shop"]);
    wait_for("the garbage collector to delete web-config", WAIT, || {
        let uid = env
            .cluster
            .kubectl()
            .args([
                "get",
                "configmap",
                "web-config",
                "-n",
                "shop",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .output()
            .unwrap();
        // Gone, or gone and already put back by the enforcer as a new object.
        (String::from_utf8_lossy(&uid.stdout) != managed_uid).then_some(())
    });
    let gc_events = env.cluster.ok(&["get", "events", "-n", "shop", "-o", "json"]);
    assert!(!gc_events.contains("denied the request"), "{gc_events}");

    // The namespace controller empties a namespace of managed objects (the Guard included).
    env.cluster.ok(&["delete", "namespace", "shop", "--wait=false"]);
    wait_for("namespace shop to be gone", WAIT, || {
        let out = env
            .cluster
            .kubectl()
            .args(["get", "namespace", "shop"])
            .output()
            .unwrap();
        (!out.status.success()).then_some(())
    });
}
