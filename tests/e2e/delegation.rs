//! Delegation through the real API server: a Guard's `delegate` rules let the HPA's identity
//! scale within the bounds of the real HorizontalPodAutoscaler targeting the Deployment (read
//! by driftguard's watch), and a CI deployer (`--field-manager=deployer`) change replicas
//! within fixed bounds; beyond the bounds both are denied, and a person is denied as before.
//! The enforcer leaves a delegate's value alone within the bounds (the real HPA controller
//! holding replicas: no fight) and sets it to the nearest bound outside them.

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, apply, assert_denied, assert_ok, scale_as_hpa};

/// `kubectl patch deploy web -n shop --field-manager=deployer` setting `replicas`, as alice.
fn patch_as_deployer(env: &Env, replicas: i64) -> std::process::Output {
    env.kubectl_as_user(false, &strs(&deployer_patch("shop", replicas)))
}

/// The arguments of `kubectl patch deploy web -n <namespace> --field-manager=deployer`
/// setting `replicas`.
fn deployer_patch(namespace: &str, replicas: i64) -> Vec<String> {
    let patch = format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#);
    [
        "patch",
        "deploy",
        "web",
        "-n",
        namespace,
        "--field-manager=deployer",
        "-p",
        &patch,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
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

/// `spec.replicas` of Deployment `<namespace>/web`.
fn replicas(env: &Env, namespace: &str) -> String {
    env.get(namespace, "deploy/web", "{.spec.replicas}")
}

/// The managedFields entries owning `spec.replicas` of Deployment `<namespace>/web`, as
/// `manager` or `manager/subresource`.
fn replicas_owners(env: &Env, namespace: &str) -> Vec<String> {
    let out = env.cluster.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        namespace,
        "--show-managed-fields",
        "-o",
        "json",
    ]);
    let deployment: Value = serde_json::from_str(&out).unwrap();
    deployment["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry.pointer("/fieldsV1/f:spec/f:replicas").is_some())
        .map(|entry| {
            let manager = entry["manager"].as_str().unwrap().to_owned();
            match entry["subresource"].as_str() {
                Some(sub) if !sub.is_empty() => format!("{manager}/{sub}"),
                _ => manager,
            }
        })
        .collect()
}

/// The messages of the Events with `reason` in `namespace`.
fn events(env: &Env, namespace: &str, reason: &str) -> String {
    env.cluster.ok(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ])
}

#[test]
fn the_enforcer_leaves_delegates_values_alone_and_corrects_them_to_the_bounds() {
    let env = Env::start(&[], 1);
    // shop: the HPA owns replicas within its bounds.
    env.guard(
        "shop",
        "deny",
        json!({"delegate": [
            {"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
             "to": {"serviceAccounts": ["kube-system/horizontal-pod-autoscaler"]},
             "bounds": {"fromHPA": true}}
        ]}),
    );
    // ci: a deployer, by field manager, owns replicas from 1 to 6 and the images.
    env.guard(
        "ci",
        "deny",
        json!({"delegate": [
            {"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
             "to": {"fieldManagers": ["deployer"]}, "bounds": {"min": 1, "max": 6}},
            {"kind": "Deployment", "jsonPointers": ["/spec/template/spec/containers/*/image"],
             "to": {"fieldManagers": ["deployer"]}}
        ]}),
    );

    // The real HPA controller raises the Deployment to its minReplicas (5; Git says 3) through
    // /scale, once driftguard's watch has seen the HPA (before, admission denies the write and
    // the controller retries).
    apply(
        &env.cluster,
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "minReplicas": 5, "maxReplicas": 8,
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                      "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    );
    wait_for("the HPA controller to scale web to 5", WAIT, || {
        (replicas(&env, "shop") == "5").then_some(())
    });
    assert_eq!(replicas_owners(&env, "shop"), ["kube-controller-manager/scale"]);

    // The deployer, through the webhook: replicas within its bounds, and an image.
    assert_ok(&env.kubectl_as_user(false, &strs(&deployer_patch("ci", 4))));
    assert_ok(&env.kubectl_as_user(
        false,
        &[
            "set",
            "image",
            "deploy/web",
            "-n",
            "ci",
            "--field-manager=deployer",
            "web=nginx:1.28.0",
        ],
    ));

    // Git changes the Deployment: both Guards apply it, without the fields delegates hold, and
    // the API server keeps the delegates' values (they still own them).
    let deployment = std::fs::read_to_string(env.repo.path().join("apps/web/deployment.yaml")).unwrap();
    let changed = deployment.replacen("    tier: frontend\n", "    tier: web\n", 1);
    assert_ne!(changed, deployment);
    let head = env
        .repo
        .commit("apps/web/deployment.yaml", Some(&changed), "relabel web");
    for namespace in ["shop", "ci"] {
        env.until_applied(namespace, &head);
        wait_for(&format!("the new label in {namespace}"), WAIT, || {
            (env.get(namespace, "deploy/web", "{.metadata.labels.tier}") == "web").then_some(())
        });
    }
    assert_eq!(replicas(&env, "shop"), "5");
    assert_eq!(replicas_owners(&env, "shop"), ["kube-controller-manager/scale"]);
    assert_eq!(
        env.get(
            "shop",
            "guard/web",
            "{.status.conditions[?(@.type==\"Fighting\")].message}"
        ),
        "",
        "no fight with a delegate"
    );
    assert!(
        matches!(
            env.get("shop", "guard/web", "{.status.counts.driftCorrected}").as_str(),
            "" | "0"
        ),
        "nothing corrected in shop"
    );
    assert_eq!(replicas(&env, "ci"), "4");
    assert_eq!(replicas_owners(&env, "ci"), ["deployer"]);
    assert_eq!(
        env.get(
            "ci",
            "deploy/web",
            "{.spec.template.spec.containers[?(@.name==\"web\")].image}"
        ),
        "nginx:1.28.0"
    );

    // `driftguard diff` agrees: no differences, replicas left to the HPA.
    let out = crate::support::driftguard(&[
        "diff",
        "--guard",
        "shop/web",
        "--kubeconfig",
        env.cluster.kubeconfig().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "spec.replicas left to its delegate: cluster 5, Git 3 (written by kube-controller-manager, delegate rule 1)"
        ),
        "{stdout}"
    );

    // Outside the bounds (the deployer past the webhook): self-heal sets the maximum, as
    // driftguard-bounds, with an Event naming the bound and the rule.
    env.past_the_webhook(&strs(&deployer_patch("ci", 9)));
    wait_for("web in ci set to its maximum 6", WAIT, || {
        (replicas(&env, "ci") == "6").then_some(())
    });
    assert_eq!(replicas_owners(&env, "ci"), ["driftguard-bounds"]);
    wait_for("the correction's Event", WAIT, || {
        events(&env, "ci", "DriftCorrected")
            .contains(
                "set spec.replicas to 6: 9 written by deployer is above the maximum 6 (bounds) of delegate rule 1",
            )
            .then_some(())
    });
    // Anyone else's value (a person past the webhook) is Git's again.
    env.past_the_webhook(&["patch", "deploy", "web", "-n", "ci", "-p", r#"{"spec":{"replicas":2}}"#]);
    wait_for("web in ci back to Git's 3", WAIT, || {
        (replicas(&env, "ci") == "3").then_some(())
    });
    // The deployer's image stayed through all of it.
    assert_eq!(
        env.get(
            "ci",
            "deploy/web",
            "{.spec.template.spec.containers[?(@.name==\"web\")].image}"
        ),
        "nginx:1.28.0"
    );
}
