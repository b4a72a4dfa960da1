//! Delegation through the real API server: a Guard's `delegate` rules let the HPA's identity
//! scale within the bounds of the real HorizontalPodAutoscaler targeting the Deployment (read
//! by driftguard's watch), and a CI deployer (`--field-manager=deployer`) change replicas
//! within fixed bounds; beyond the bounds both are denied, and a person is denied as before.

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, apply, assert_denied, assert_ok};

const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// Writes `/scale` of Deployment `shop/web` as the HPA's identity, as the HPA controller does
/// (read the Scale, write it back with new replicas).
fn scale_as_hpa(env: &Env, replicas: i64) -> std::process::Output {
    let hpa = ["--as", HPA_USER];
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
    scale["spec"]["replicas"] = json!(replicas);
    let file = env.cluster.scratch().join(format!("scale-{replicas}.json"));
    std::fs::write(&file, scale.to_string()).unwrap();
    env.cluster
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
        .unwrap()
}

#[test]
fn delegates_write_within_bounds_and_everyone_else_is_denied() {
    let env = Env::start(&["webhook.failurePolicy=Fail"], 1);
    env.guard(
        "shop",
        "deny",
        json!({"delegate": [
            {"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
             "to": {"serviceAccounts": ["kube-system/horizontal-pod-autoscaler"]},
             "bounds": {"fromHPA": true}},
            {"group": "apps", "kind": "Deployment", "name": "web", "jsonPointers": ["/spec/replicas"],
             "to": {"fieldManagers": ["deployer"]}, "bounds": {"min": 1, "max": 6}}
        ]}),
    );
    // Git declares 3 replicas: an HPA from 2 to 5 has nothing to correct without metrics.
    apply(
        &env.cluster,
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "minReplicas": 2, "maxReplicas": 5,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                      "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    );

    // Within the HPA's bounds, once driftguard's watch has seen the HPA.
    wait_for("the HPA's identity allowed to scale to 4", WAIT, || {
        let out = scale_as_hpa(&env, 4);
        out.status.success().then_some(())
    });
    // Beyond them: denied, naming the bound and the rule.
    let out = scale_as_hpa(&env, 9);
    assert_denied(
        &out,
        "validate-scale.driftguard.io",
        &[
            "spec.replicas",
            "above the maximum 5 (HorizontalPodAutoscaler web)",
            "delegate rule 1",
        ],
    );

    // A person scaling the same path is denied as before.
    let out = env.kubectl_as_user(false, &["scale", "deploy", "web", "-n", "shop", "--replicas=4"]);
    assert_denied(&out, "validate-scale.driftguard.io", &["spec.replicas", "Git has 3"]);
    let out = env.kubectl_as_user(
        false,
        &["patch", "deploy", "web", "-n", "shop", "-p", r#"{"spec":{"replicas":4}}"#],
    );
    assert_denied(&out, "validate.driftguard.io", &["spec.replicas", "Git has 3"]);

    // The CI deployer by field manager: within its bounds, then beyond them.
    let out = env.kubectl_as_user(
        false,
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "--field-manager=deployer",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
    );
    assert_ok(&out);
    let out = env.kubectl_as_user(
        false,
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "--field-manager=deployer",
            "-p",
            r#"{"spec":{"replicas":8}}"#,
        ],
    );
    assert_denied(
        &out,
        "validate.driftguard.io",
        &["above the maximum 6 (bounds)", "delegate rule 2", "fieldManagers deployer"],
    );
    // The deployer may not change what it was not given.
    let out = env.kubectl_as_user(
        false,
        &[
            "set",
            "image",
            "deploy/web",
            "-n",
            "shop",
            "--field-manager=deployer",
            "web=nginx:1.28.0",
        ],
    );
    assert_denied(&out, "validate.driftguard.io", &["image"]);
}
