//! What a person at kubectl sees when the real kube-apiserver calls driftguard's webhooks, in
//! deny and revert modes, with the kubectl built from k8s.io/kubernetes (`false` below) and the
//! machine's own `/usr/bin/kubectl` (`true`).

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, assert_denied, assert_ok};

fn editor(env: &Env, sed: &str) -> String {
    let path = env.cluster.scratch().join(format!("editor-{}.sh", sed.len()));
    std::fs::write(&path, format!("#!/bin/sh\nsed -i '{sed}' \"$1\"\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

fn deployment(env: &Env, namespace: &str) -> Value {
    serde_json::from_str(&env.cluster.ok(&["get", "deploy", "web", "-n", namespace, "-o", "json"])).unwrap()
}

/// The Deployment as Git declares it, with `replicas` and `image` changed, in a file.
fn edited_manifest(env: &Env, namespace: &str, replicas: u32, image: &str) -> String {
    let text = std::fs::read_to_string(env.repo.path().join("apps/web/deployment.yaml")).unwrap();
    let text = text
        .replace("replicas: 3", &format!("replicas: {replicas}"))
        .replace("nginx:1.27.3", image)
        .replace("  name: web\n", &format!("  name: web\n  namespace: {namespace}\n"));
    let path = env.cluster.scratch().join(format!("web-{namespace}-{replicas}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn deny_mode_through_the_real_api_server() {
    let env = Env::start(&[], 2);
    env.guard("deny", "deny", json!({}));
    let ns = ["-n", "deny"];
    let args = |rest: &[&str]| -> Vec<String> { rest.iter().chain(ns.iter()).map(|s| s.to_string()).collect() };
    let run = |machine: bool, rest: &[&str]| {
        let a = args(rest);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        env.kubectl_as_user(machine, &a)
    };

    for machine in [false, true] {
        // scale: the /scale subresource, answered by the scale webhook entry.
        let out = run(machine, &["scale", "deploy", "web", "--replicas=5"]);
        assert_denied(
            &out,
            "validate-scale.driftguard.io",
            &["spec.replicas", "Git has 3, request has 5", "apps/web/deployment.yaml"],
        );
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error from server (Forbidden)"));

        // edit: a strategic merge patch with fieldValidation=Strict.
        let mut edit = if machine {
            env.cluster.machine_kubectl()
        } else {
            env.cluster.kubectl()
        };
        let out = edit
            .env("EDITOR", editor(&env, "s/nginx:1.27.3/nginx:latest/"))
            .args(["--as", crate::USER, "edit", "deploy", "web", "-n", "deny"])
            .output()
            .unwrap();
        assert_denied(
            &out,
            "validate.driftguard.io",
            &["nginx:latest", "could not be patched"],
        );

        for (kind, patch) in [
            ("merge", r#"{"spec":{"replicas":2}}"#),
            (
                "strategic",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
            ),
            ("json", r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#),
        ] {
            let out = run(machine, &["patch", "deploy", "web", "--type", kind, "-p", patch]);
            assert_denied(&out, "validate.driftguard.io", &["is managed by Git"]);
        }
        let out = run(machine, &["set", "image", "deploy/web", "web=nginx:1.28"]);
        assert_denied(&out, "validate.driftguard.io", &["nginx:1.28"]);
        let out = run(machine, &["label", "deploy", "web", "tier=backend", "--overwrite"]);
        assert_denied(&out, "validate.driftguard.io", &["tier"]);
        let out = run(machine, &["delete", "deploy", "web", "--wait=false"]);
        assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);
        let out = run(machine, &["delete", "configmap", "web-config", "--wait=false"]);
        assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);

        // Client-side apply of a changed manifest: kubectl's three-way patch is denied.
        let file = edited_manifest(&env, "deny", 7, "nginx:1.27.3");
        let out = run(machine, &["apply", "-f", &file]);
        assert_denied(&out, "validate.driftguard.io", &["spec.replicas", "request has 7"]);

        // Server-side apply: the API server itself reports the conflict with driftguard's
        // field manager; forcing it through reaches the webhook, which denies.
        let out = run(machine, &["apply", "--server-side", "-f", &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("Apply failed with"), "{stderr}");
        assert!(stderr.contains("with \"driftguard\""), "{stderr}");
        assert!(stderr.contains(".spec.replicas"), "{stderr}");
        let out = run(machine, &["apply", "--server-side", "--force-conflicts", "-f", &file]);
        assert_denied(&out, "validate.driftguard.io", &["request has 7"]);

        // A server-side dry run is decided the same way.
        let out = run(
            machine,
            &[
                "patch",
                "deploy",
                "web",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"replicas":9}}"#,
                "--dry-run=server",
            ],
        );
        assert_denied(&out, "validate.driftguard.io", &["request has 9"]);

        // kubectl diff asks for a server-side dry run of the change: driftguard's answer shows.
        let out = run(machine, &["diff", "-f", &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().unwrap_or(0) > 1,
            "diff reports the refusal as an error: {stderr}"
        );
        assert!(stderr.contains("denied the request"), "{stderr}");
    }
    let live = deployment(&env, "deny");
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.3"
    );

    // What is not drift goes through.
    assert_ok(&run(false, &["rollout", "restart", "deploy", "web"]));
    assert_ok(&run(true, &["label", "deploy", "web", "owner=team-web"]));
    assert_ok(&run(
        false,
        &["annotate", "deploy", "web", "team.example.com/pager=web-oncall"],
    ));
    assert_ok(&run(
        true,
        &[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"minReadySeconds":5}}"#,
        ],
    ));
    let file = edited_manifest(&env, "deny", 3, "nginx:1.27.3");
    let out = run(false, &["diff", "-f", &file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no difference: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = deployment(&env, "deny");
    assert_eq!(live["metadata"]["labels"]["owner"], "team-web");
    assert_eq!(live["spec"]["minReadySeconds"], 5);
    assert!(live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());

    // Guards as users see them: the printer columns and the schema's documentation.
    for machine in [false, true] {
        let mut get = if machine {
            env.cluster.machine_kubectl()
        } else {
            env.cluster.kubectl()
        };
        let table = crate::support::cluster::ok(get.args(["get", "guards", "-n", "deny"]));
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "REVISION", "OBJECTS", "AGE"], "{table}");
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(&row[..2], ["web", "True"], "{table}");
        assert!(env.repo.head().starts_with(row[2]), "{table}");
        assert_eq!(row[3], "3", "{table}");
        let mut explain = if machine {
            env.cluster.machine_kubectl()
        } else {
            env.cluster.kubectl()
        };
        let doc = crate::support::cluster::ok(explain.args(["explain", "guard.spec"]));
        for field in ["sourceRef", "mode", "ignore", "exemptions", "breakGlass", "prune"] {
            assert!(
                doc.contains(field),
                "{field} missing from kubectl explain guard.spec:\n{doc}"
            );
        }
    }
    let ready = env.get("deny", "guard/web", "{.status.conditions[?(@.type==\"Ready\")].reason}");
    assert_eq!(ready, "Applied");

    // Every denial is in the audit stream of the replica that made it.
    let denied: usize = env
        .installed
        .replicas
        .iter()
        .map(|r| {
            r.audit
                .try_iter()
                .filter(|l| l.contains("\"admission.denied\""))
                .count()
        })
        .sum();
    assert!(denied >= 2 * 13, "{denied} admission.denied records");
}

#[test]
fn revert_mode_through_the_real_api_server() {
    let env = Env::start(&[], 2);
    env.guard("revert", "revert", json!({}));
    for machine in [false, true] {
        let out = env.kubectl_as_user(machine, &["scale", "deploy", "web", "-n", "revert", "--replicas=5"]);
        let stderr = assert_ok(&out);
        assert!(
            stderr.contains("Warning: driftguard reverted spec.replicas to Git's 3 (requested 5)"),
            "{stderr}"
        );
        let out = env.kubectl_as_user(
            machine,
            &["set", "image", "deploy/web", "web=nginx:1.28", "-n", "revert"],
        );
        let stderr = assert_ok(&out);
        assert!(stderr.contains("Warning: driftguard reverted"), "{stderr}");
        assert!(stderr.contains("nginx:1.27.3"), "{stderr}");

        let mut edit = if machine {
            env.cluster.machine_kubectl()
        } else {
            env.cluster.kubectl()
        };
        let out = edit
            .env("EDITOR", editor(&env, "s/greeting: hello from git/greeting: hi/"))
            .args(["--as", crate::USER, "edit", "configmap", "web-config", "-n", "revert"])
            .output()
            .unwrap();
        let stderr = assert_ok(&out);
        assert!(
            stderr.contains("Warning: driftguard reverted data.greeting"),
            "{stderr}"
        );

        // Deletes are still denied in revert mode.
        let out = env.kubectl_as_user(machine, &["delete", "deploy", "web", "-n", "revert", "--wait=false"]);
        assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);
    }
    let live = deployment(&env, "revert");
    assert_eq!(live["spec"]["replicas"], 3);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.3"
    );
    let greeting = env.get("revert", "configmap/web-config", "{.data.greeting}");
    assert_eq!(greeting, "hello from git");
    // The Deployment's generation never moved: every revert left the object as Git has it.
    wait_for("the Deployment controller to observe the Deployment", WAIT, || {
        let live = deployment(&env, "revert");
        (live["status"]["observedGeneration"] == live["metadata"]["generation"]).then_some(())
    });
    assert_eq!(deployment(&env, "revert")["metadata"]["generation"], 1);
}

/// Break-glass through the real API server: a non-member's annotation is denied with who may; a
/// member's annotated edit lands with its expiry stamped by the mutating webhook; while
/// detached, further edits pass; when the time is up, Git is restored and the annotations go.
#[test]
fn break_glass_through_the_real_api_server() {
    let env = Env::start(&[], 2);
    env.cluster.ok(&[
        "create",
        "clusterrolebinding",
        "oncall-admin",
        "--clusterrole=cluster-admin",
        "--group=sre-oncall",
    ]);
    env.guard(
        "shop",
        "deny",
        json!({"breakGlass": {"groups": ["sre-oncall"], "maxDuration": "20s"}}),
    );
    let annotate = [
        "annotate",
        "deploy",
        "web",
        "-n",
        "shop",
        "driftguard.io/break-glass=INC-4711 checkout down",
    ];
    let out = env.kubectl_as_user(true, &annotate);
    assert_denied(
        &out,
        "validate.driftguard.io",
        &[
            "only members of sre-oncall may set driftguard.io/break-glass",
            crate::USER,
        ],
    );

    let patch =
        r#"{"metadata":{"annotations":{"driftguard.io/break-glass":"INC-4711 checkout down"}},"spec":{"replicas":8}}"#;
    let out = env
        .cluster
        .kubectl()
        .args([
            "--as",
            "bob@example.com",
            "--as-group",
            "sre-oncall",
            "--as-group",
            "system:authenticated",
        ])
        .args(["patch", "deploy", "web", "-n", "shop", "--type", "merge", "-p", patch])
        .output()
        .unwrap();
    let stderr = assert_ok(&out);
    assert!(
        stderr.contains("break-glass until"),
        "a warning names the end: {stderr}"
    );
    assert_eq!(env.get("shop", "deploy/web", "{.spec.replicas}"), "8");
    let expires = env.get(
        "shop",
        "deploy/web",
        "{.metadata.annotations.driftguard\\.io/break-glass-expires}",
    );
    assert!(!expires.is_empty(), "the mutating webhook stamps the expiry");

    // Detached: alice's edit of a declared field passes until it runs out.
    let out = env.kubectl_as_user(
        false,
        &[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":6}}"#,
        ],
    );
    assert_ok(&out);
    assert_eq!(env.get("shop", "deploy/web", "{.spec.replicas}"), "6");

    // When maxDuration has passed, the enforcer restores Git and removes both annotations.
    wait_for("Git restored after the break-glass", WAIT, || {
        let replicas = env.get("shop", "deploy/web", "{.spec.replicas}");
        let annotations = env.get("shop", "deploy/web", "{.metadata.annotations}");
        (replicas == "3" && !annotations.contains("driftguard.io/break-glass")).then_some(())
    });
    let ended = env.cluster.ok(&[
        "get",
        "events",
        "-n",
        "shop",
        "--field-selector",
        "reason=BreakGlassEnded",
    ]);
    assert!(ended.contains("BreakGlassEnded"), "{ended}");
}
