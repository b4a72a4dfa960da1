//! Delegation through the real API server: a Guard's `delegate` rules let the HPA's identity
//! scale within the bounds of the real HorizontalPodAutoscaler targeting the Deployment (read
//! by driftguard's watch), and a CI deployer (`--field-manager=deployer`) change replicas
//! within fixed bounds; beyond the bounds both are denied, and a person is denied as before.

use serde_json::json;

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, apply, assert_denied, assert_ok, scale_as_hpa};

/// `kubectl patch deploy web -n shop --field-manager=deployer` setting `replicas`, as alice.
fn patch_as_deployer(env: &Env, replicas: i64) -> std::process::Output {
    let patch = format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
    let args = [
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--field-manager=deployer",
        "-p",
        &patch,
    ];
    env.kubectl_as_user(false, &args)
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
        let out = scale_as_hpa(&env, "shop", 4);
        out.status.success().then_some(())
    });
    // Beyond them: denied, naming the bound and the rule.
    let out = scale_as_hpa(&env, "shop", 9);
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
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
    );
    assert_denied(&out, "validate.driftguard.io", &["spec.replicas", "Git has 3"]);

    // The CI deployer by field manager: within its bounds, then beyond them.
    let out = patch_as_deployer(&env, 4);
    assert_ok(&out);
    let out = patch_as_deployer(&env, 8);
    assert_denied(
        &out,
        "validate.driftguard.io",
        &[
            "above the maximum 6 (bounds)",
            "delegate rule 2",
            "fieldManagers deployer",
        ],
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
