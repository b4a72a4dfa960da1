//! Tenants against the real API server (issue 18, README "Multi-tenancy"): a Guard writes as
//! its service account, never as driftguard; a GitSource of another namespace is read only with
//! its consent; in lockdown a Guard without `serviceAccountName` acts as the default account.

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, apply};

/// The lockdown values: Guards without serviceAccountName act as `default` of their namespace,
/// and namespace admins manage Guards and GitSources through the aggregated roles.
const LOCKDOWN: [&str; 2] = [
    "tenancy.defaultServiceAccount=default",
    "rbac.aggregateToNamespaceRoles=true",
];

/// kubectl as `user`, a person with no cluster-wide rights.
fn kubectl_as(env: &Env, user: &str, args: &[&str]) -> std::process::Output {
    env.cluster
        .kubectl()
        .args(["--as", user, "--as-group", "system:authenticated"])
        .args(args)
        .output()
        .unwrap()
}

fn ok_as(env: &Env, user: &str, args: &[&str]) -> String {
    let out = kubectl_as(env, user, args);
    assert!(
        out.status.success(),
        "kubectl as {user} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies `object` as `user` (server-side, from a scratch file).
fn apply_as(env: &Env, user: &str, object: &Value) {
    let file = env.cluster.scratch().join(format!(
        "tenant-{}.json",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, serde_json::to_string(object).unwrap()).unwrap();
    ok_as(
        env,
        user,
        &[
            "apply",
            "--server-side",
            "--field-manager=tenant",
            "-f",
            file.to_str().unwrap(),
        ],
    );
}

/// A namespace whose admin (RoleBinding to the built-in `admin` ClusterRole) is `user`.
fn team(env: &Env, namespace: &str, user: &str) {
    env.cluster.ok(&["create", "namespace", namespace]);
    env.cluster.ok(&[
        "create",
        "rolebinding",
        "team-admin",
        "-n",
        namespace,
        "--clusterrole=admin",
        &format!("--user={user}"),
    ]);
    // The controller manager aggregates the chart's roles into `admin` asynchronously.
    wait_for(
        &format!("{user} may manage Guards and GitSources in {namespace}"),
        WAIT,
        || {
            ["guards.driftguard.io", "gitsources.driftguard.io"]
                .iter()
                .all(|resource| {
                    let out = kubectl_as(env, user, &["auth", "can-i", "patch", resource, "-n", namespace]);
                    out.stdout.starts_with(b"yes")
                })
                .then_some(())
        },
    );
}

/// The Ready condition of Guard `namespace/name` once it is `status` with `reason`: its message.
fn until_ready(env: &Env, namespace: &str, name: &str, status: &str, reason: &str) -> String {
    wait_for(
        &format!("Guard {namespace}/{name} Ready={status} {reason}"),
        WAIT,
        || {
            let condition = env.cluster.ok(&[
            "get",
            "guard",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].reason} {.status.conditions[?(@.type==\"Ready\")].message}",
        ]);
            condition
                .strip_prefix(&format!("{status} {reason} "))
                .map(str::to_owned)
        },
    )
}

fn exists(env: &Env, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--ignore-not-found", "-o", "name"]);
    !env.cluster.ok(&all).trim().is_empty()
}

/// A tenant with namespace-admin rights only points a Guard at a ClusterRoleBinding to
/// cluster-admin and a ConfigMap of another team: the access review at load says the Guard's
/// service account may write neither, so neither is written nor protected, both are reported
/// in status and Events; the Guard's own-namespace object is applied and protected (its
/// revision becomes the applied one); the other team still edits its ConfigMap even though it
/// carries the `driftguard.io/managed` label the webhooks select on.
#[test]
fn a_tenants_guard_writes_only_what_its_service_account_may() {
    let env = Env::start(&LOCKDOWN, 1);
    team(&env, "team-a", "ann@example.com");
    team(&env, "team-b", "ben@example.com");
    // team-b's ConfigMap carries the managed label (copied from a template, say): the webhooks
    // see every edit of it, so only the index decides whether team-a's Guard protects it.
    apply(
        &env.cluster,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "shared", "namespace": "team-b", "labels": {"driftguard.io/managed": "true"}},
                "data": {"owner": "team-b"}}),
    );
    env.repo.commit(
        "tenant/escalate.yaml",
        Some(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: ann-is-root\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: User\n    name: ann@example.com\n    apiGroup: rbac.authorization.k8s.io\n",
        ),
        "escalate",
    );
    env.repo.commit(
        "tenant/takeover.yaml",
        Some(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: team-b\ndata:\n  owner: team-a\n",
        ),
        "takeover",
    );
    env.repo.commit(
        "tenant/own.yaml",
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: own\n  namespace: team-a\ndata:\n  owner: team-a\n"),
        "own",
    );
    // The tenant's service account may write its own namespace, nothing else.
    env.cluster
        .ok(&["create", "serviceaccount", "deployer", "-n", "team-a"]);
    env.cluster.ok(&[
        "create",
        "rolebinding",
        "deployer-admin",
        "-n",
        "team-a",
        "--clusterrole=admin",
        "--serviceaccount=team-a:deployer",
    ]);
    // Everything below is done by the tenant, with the aggregated admin role.
    let ann = "ann@example.com";
    apply_as(
        &env,
        ann,
        &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
                "metadata": {"name": "repo", "namespace": "team-a"},
                "spec": {"url": env.repo.path().to_str().unwrap(), "ref": {"branch": "main"}, "interval": "2s"}}),
    );
    apply_as(
        &env,
        ann,
        &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
                "metadata": {"name": "tenant", "namespace": "team-a"},
                "spec": {"sourceRef": {"name": "repo"}, "path": "tenant", "serviceAccountName": "deployer",
                         "targetNamespace": "team-a", "interval": "1h"}}),
    );
    let message = until_ready(&env, "team-a", "tenant", "False", "NotPermitted");
    assert!(
        message.contains(
            "system:serviceaccount:team-a:deployer may not patch clusterrolebindings.rbac.authorization.k8s.io ann-is-root (cluster-wide)"
        ),
        "{message}"
    );
    assert!(
        message.contains("system:serviceaccount:team-a:deployer may not patch configmaps shared in namespace team-b"),
        "{message}"
    );
    assert!(message.contains("2 object(s)"), "{message}");
    // What it may write was applied: the revision is the applied one, every replica loads it.
    env.until_applied_guard("team-a", "tenant", &env.repo.head());
    // Neither was written; the own object was.
    assert!(!exists(&env, &["clusterrolebinding", "ann-is-root"]));
    assert_eq!(env.get("team-b", "configmap/shared", "{.data.owner}"), "team-b");
    assert_eq!(env.get("team-a", "configmap/own", "{.data.owner}"), "team-a");
    assert_eq!(
        env.get(
            "team-a",
            "configmap/own",
            "{.metadata.annotations.driftguard\\.io/guard}"
        ),
        "team-a/tenant"
    );
    // The NotPermitted Events name the refused objects.
    let events = env.cluster.ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=NotPermitted",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name} {end}",
    ]);
    assert!(events.contains("ClusterRoleBinding/ann-is-root"), "{events}");
    assert!(events.contains("ConfigMap/shared"), "{events}");
    // The other team still owns and edits its ConfigMap.
    ok_as(
        &env,
        "ben@example.com",
        &[
            "patch",
            "configmap",
            "shared",
            "-n",
            "team-b",
            "--type=merge",
            "-p",
            "{\"data\":{\"owner\":\"ben\"}}",
        ],
    );
    assert_eq!(env.get("team-b", "configmap/shared", "{.data.owner}"), "ben");
    // The tenant's own object is protected: its revision is enforced.
    let out = env
        .cluster
        .kubectl()
        .args([
            "patch",
            "configmap",
            "own",
            "-n",
            "team-a",
            "--type=merge",
            "-p",
            "{\"data\":{\"owner\":\"ben\"}}",
        ])
        .output()
        .unwrap();
    crate::assert_denied(&out, "validate.driftguard.io", &["data.owner"]);
    // The tenant cannot make itself cluster-admin by hand either (the control case).
    assert!(
        !kubectl_as(
            &env,
            ann,
            &[
                "create",
                "clusterrolebinding",
                "x",
                "--clusterrole=cluster-admin",
                "--user=ann@example.com"
            ]
        )
        .status
        .success()
    );
}

/// A Guard naming a GitSource of another namespace is not Ready (CrossNamespaceRefDenied) until
/// the source's accessFrom lists its namespace; in lockdown, without serviceAccountName, it then
/// writes as the namespace's `default` account, whose refusals are reported, and applies once
/// that account is given the rights.
#[test]
fn cross_namespace_sources_need_consent_and_lockdown_acts_as_the_default_account() {
    let env = Env::start(&LOCKDOWN, 1);
    team(&env, "team-a", "ann@example.com");
    // The shared source of the Env allows every namespace: here it allows none.
    env.cluster.ok(&[
        "patch",
        "gitsource",
        "apps",
        "-n",
        "default",
        "--type=json",
        "-p",
        "[{\"op\":\"remove\",\"path\":\"/spec/accessFrom\"}]",
    ]);
    apply_as(
        &env,
        "ann@example.com",
        &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
                "metadata": {"name": "web", "namespace": "team-a"},
                "spec": {"sourceRef": {"name": "apps", "namespace": "default"}, "path": "apps/web",
                         "targetNamespace": "team-a", "interval": "2s"}}),
    );
    let message = until_ready(&env, "team-a", "web", "False", "CrossNamespaceRefDenied");
    assert!(
        message.contains("default/apps") && message.contains("accessFrom"),
        "{message}"
    );
    assert!(!exists(&env, &["deploy", "web", "-n", "team-a"]));

    // The source's owner consents: the Guard reads it, and writes as team-a's default account.
    env.cluster.ok(&[
        "patch",
        "gitsource",
        "apps",
        "-n",
        "default",
        "--type=merge",
        "-p",
        "{\"spec\":{\"accessFrom\":{\"namespaces\":[\"team-a\"]}}}",
    ]);
    let message = until_ready(&env, "team-a", "web", "False", "NotPermitted");
    assert!(
        message.contains("system:serviceaccount:team-a:default may not patch deployments.apps web in namespace team-a"),
        "{message}"
    );
    assert!(!exists(&env, &["deploy", "web", "-n", "team-a"]));

    // Given the rights in its namespace, the default account applies the Guard's objects.
    env.cluster.ok(&[
        "create",
        "rolebinding",
        "default-admin",
        "-n",
        "team-a",
        "--clusterrole=admin",
        "--serviceaccount=team-a:default",
    ]);
    env.until_applied("team-a", &env.repo.head());
    assert_eq!(env.get("team-a", "deploy/web", "{.spec.replicas}"), "3");
}

/// Two Guards declare one ConfigMap. The one that applied it first owns it: the other's
/// enforcer leaves it alone and says so (Conflicting), and admission judges edits by the
/// owner's declaration, mode and exemptions — even though the other Guard was created first,
/// its `namespace/name` sorts first and its exemptions name the editor.
#[test]
fn the_guard_that_applied_an_object_first_owns_it_in_admission_too() {
    let env = Env::start(&[], 1);
    let configmap = |name: &str, color: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: alpha\ndata:\n  color: {color}\n"
        )
    };
    env.repo
        .commit("owner/shared.yaml", Some(&configmap("shared", "blue")), "owner");
    env.repo
        .commit("intruder/shared.yaml", Some(&configmap("shared", "red")), "intruder");
    env.repo
        .commit("intruder/own.yaml", Some(&configmap("own", "red")), "intruder's own");
    let head = env.repo.head();
    env.cluster.ok(&["create", "namespace", "alpha"]);
    env.cluster.ok(&[
        "create",
        "rolebinding",
        "ann-admin",
        "-n",
        "alpha",
        "--clusterrole=admin",
        "--user=ann@example.com",
    ]);
    let guard = |name: &str, path: &str, extra: Value| {
        let mut spec = json!({"sourceRef": {"name": "apps", "namespace": "default"}, "path": path,
                              "targetNamespace": "alpha", "interval": "1h"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        apply(
            &env.cluster,
            &json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
                    "metadata": {"name": name, "namespace": "alpha"}, "spec": spec}),
        );
    };
    // The intruder is created first (so it is first by creation time and by name) but stays
    // suspended until the owner has applied the ConfigMap: only the live annotation names the owner.
    guard(
        "aa-intruder",
        "intruder",
        json!({"exemptions": {"users": ["ann@example.com"]}, "suspend": true}),
    );
    guard("zz-owner", "owner", json!({}));
    env.until_applied_guard("alpha", "zz-owner", &head);
    env.cluster.ok(&[
        "patch",
        "guard",
        "aa-intruder",
        "-n",
        "alpha",
        "--type=merge",
        "-p",
        "{\"spec\":{\"suspend\":false}}",
    ]);
    env.until_applied_guard("alpha", "aa-intruder", &head);

    // The intruder's enforcer left the owner's object alone and says so.
    let conflict = wait_for("aa-intruder Conflicting", WAIT, || {
        let out = env.get(
            "alpha",
            "guard/aa-intruder",
            "{.status.conditions[?(@.type==\"Conflicting\")].status} {.status.conditions[?(@.type==\"Conflicting\")].message}",
        );
        out.strip_prefix("True ").map(str::to_owned)
    });
    assert!(
        conflict.contains("ConfigMap alpha/shared is owned by Guard alpha/zz-owner"),
        "{conflict}"
    );
    assert_eq!(env.get("alpha", "configmap/shared", "{.data.color}"), "blue");
    assert_eq!(
        env.get(
            "alpha",
            "configmap/shared",
            "{.metadata.annotations.driftguard\\.io/guard}"
        ),
        "alpha/zz-owner"
    );
    // The intruder's revision is in the admission index: its own object is protected.
    let patch = |user: &str, name: &str, color: &str| {
        kubectl_as(
            &env,
            user,
            &[
                "patch",
                "configmap",
                name,
                "-n",
                "alpha",
                "--type=merge",
                "-p",
                &format!("{{\"data\":{{\"color\":\"{color}\"}}}}"),
            ],
        )
    };
    crate::assert_denied(
        &patch(crate::USER, "own", "green"),
        "validate.driftguard.io",
        &["data.color"],
    );
    // Ann, exempt only in the intruder's Guard, sets the intruder's value on the owner's object:
    // the owner's declaration and exemptions decide, so she is denied.
    crate::assert_denied(
        &patch("ann@example.com", "shared", "red"),
        "validate.driftguard.io",
        &["data.color"],
    );
    assert_eq!(env.get("alpha", "configmap/shared", "{.data.color}"), "blue");
    // Her exemption still holds on what the intruder's Guard owns.
    crate::assert_ok(&patch("ann@example.com", "own", "green"));
}
