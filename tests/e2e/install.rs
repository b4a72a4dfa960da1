//! Installing driftguard on the real API server: `helm install` of the chart (CRDs through the
//! real structural-schema validation, every object through server-side validation, the pods
//! the ReplicaSet controller creates admitted by the namespace's Pod Security level), the leader
//! creating the certificate Secret and injecting the caBundle, the webhook called by
//! kube-apiserver, `helm upgrade`, and `helm uninstall` with its pre-delete hook; and
//! `kubectl apply --server-side -f manifests/install.yaml`.

use std::time::Duration;

use serde_json::Value;

use crate::support::cluster::{Cluster, Installed, KUBERNETES_VERSION, NAMESPACE, RELEASE, documents, ok, wait_for};
use crate::{Env, USER, WAIT, assert_denied, assert_ok};

/// Pods of the chart's Deployment, as the ReplicaSet controller created them.
fn driftguard_pods(cluster: &Cluster) -> Vec<Value> {
    let pods: Value = serde_json::from_str(&cluster.ok(&[
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=driftguard,app.kubernetes.io/component!=pre-delete",
        "-o",
        "json",
    ]))
    .unwrap();
    pods["items"].as_array().unwrap().clone()
}

#[test]
fn helm_install_upgrade_and_uninstall_on_the_real_api_server() {
    let cluster = Cluster::start();
    let version: Value = serde_json::from_str(&cluster.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], KUBERNETES_VERSION);
    assert_eq!(version["clientVersion"]["gitVersion"], KUBERNETES_VERSION);

    // The namespace enforces the restricted Pod Security level: the chart's pods must pass it.
    cluster.ok(&["create", "namespace", NAMESPACE]);
    cluster.ok(&[
        "label",
        "namespace",
        NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let installed = Installed::helm(&cluster, &["webhook.failurePolicy=Fail"], 2);

    // The CRDs passed the real structural-schema validation and are served.
    for crd in ["guards.driftguard.io", "gitsources.driftguard.io"] {
        let established = cluster.ok(&[
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ]);
        assert_eq!(established, "True", "{crd}");
    }
    // The ReplicaSet controller created the Deployment's three pods under `restricted`.
    let pods = wait_for("the Deployment's 3 pods", WAIT, || {
        let pods = driftguard_pods(&cluster);
        (pods.len() == 3).then_some(pods)
    });
    for pod in &pods {
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet",
            "{}",
            pod["metadata"]
        );
    }
    let events = cluster.ok(&[
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        "reason=FailedCreate",
    ]);
    assert!(!events.contains("violates PodSecurity"), "{events}");

    // The leader created the certificate Secret and injected its CA into all four entries.
    let env = Env::adopt(cluster, installed);
    env.until_webhook_ready();
    let secret = env.cluster.ok(&[
        "get",
        "secret",
        "driftguard-tls",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(!secret.is_empty(), "the leader stores the CA in driftguard-tls");

    // kube-apiserver calls the chart's webhooks for a managed object.
    env.guard("shop", "deny", serde_json::json!({}));
    let out = env.kubectl_as_user(false, &["scale", "deploy", "web", "-n", "shop", "--replicas=5"]);
    assert_denied(
        &out,
        "validate-scale.driftguard.io",
        &["spec.replicas", "Git has 3, request has 5"],
    );

    // helm upgrade: the webhook configurations are rendered again without a caBundle; the
    // leader puts it back and the webhooks keep answering.
    ok(env.cluster.helm().args([
        "upgrade",
        RELEASE,
        crate::support::root().join("charts/driftguard").to_str().unwrap(),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "webhook.timeoutSeconds=5",
        "--wait=false",
    ]));
    let timeout = env.cluster.ok(&[
        "get",
        "validatingwebhookconfiguration",
        "driftguard",
        "-o",
        "jsonpath={.webhooks[0].timeoutSeconds}",
    ]);
    assert_eq!(timeout, "5");
    env.until_webhook_ready();
    let out = env.kubectl_as_user(true, &["scale", "deploy", "web", "-n", "shop", "--replicas=6"]);
    assert_denied(&out, "validate-scale.driftguard.io", &["Git has 3, request has 6"]);

    // helm uninstall runs the pre-delete hook Job; with no kubelet here, the test runs that
    // pod's container (the driftguard binary with the Job's args, as the Job's service account)
    // and reports it Succeeded, which is what a kubelet does.
    let helm = env.cluster.helm();
    let uninstall = std::thread::spawn(move || {
        let mut helm = helm;
        helm.args(["uninstall", RELEASE, "-n", NAMESPACE, "--timeout", "90s"])
            .output()
            .unwrap()
    });
    run_hook_pod(&env.cluster);
    let out = uninstall.join().unwrap();
    assert_ok(&out);
    for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
        let left = env
            .cluster
            .kubectl()
            .args(["get", kind, "driftguard"])
            .output()
            .unwrap();
        assert!(!left.status.success(), "{kind} driftguard is left after the uninstall");
    }
    // No webhook left: a scale goes straight through.
    let out = env.kubectl_as_user(false, &["scale", "deploy", "web", "-n", "shop", "--replicas=2"]);
    assert_ok(&out);
    let _ = USER;
}

/// The kubelet's part for the pre-delete hook's pod: run its container's command locally as
/// its service account, then report the pod Succeeded through the status subresource.
fn run_hook_pod(cluster: &Cluster) {
    let pod = wait_for("the pre-delete hook's pod", Duration::from_secs(60), || {
        let pods: Value = serde_json::from_str(&cluster.ok(&[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/component=pre-delete",
            "-o",
            "json",
        ]))
        .unwrap();
        pods["items"].as_array().and_then(|p| p.first().cloned())
    });
    let name = pod["metadata"]["name"].as_str().unwrap();
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap();
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let kubeconfig = cluster.service_account_kubeconfig(NAMESPACE, sa);
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftguard"))
            .args(&args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the hook's command {args:?} failed as {sa}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Both webhook configurations go, so an uninstall never leaves a fail-closed webhook
    // behind; a second run (a retried Job) finds them gone and is not an error.
    let stdout = run();
    assert!(
        stdout.contains("deleted ValidatingWebhookConfiguration driftguard")
            && stdout.contains("deleted MutatingWebhookConfiguration driftguard"),
        "{stdout}"
    );
    let again = run();
    assert!(again.contains("already gone"), "{again}");
    let now = time_now();
    let status = serde_json::json!({"status": {
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
        }]
    }});
    cluster.ok(&[
        "patch",
        "pod",
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn time_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `kubectl apply --server-side -f manifests/install.yaml`: every object passes server-side
/// validation, the CRDs are established, and driftguard run from its rendered config enforces.
#[test]
fn plain_manifests_apply_server_side_and_serve() {
    let cluster = Cluster::start();
    // As the README says: `kubectl create namespace driftguard && kubectl apply --server-side ...`
    cluster.ok(&["create", "namespace", NAMESPACE]);
    let manifest = crate::support::root().join("manifests/install.yaml");
    let out = cluster
        .kubectl()
        .args(["apply", "--server-side", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    // The Namespace and CRDs come first in the file; custom resources in it (none today) would
    // need a second pass once the CRDs are established.
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&std::fs::read_to_string(&manifest).unwrap());
    let installed = Installed::start(&cluster, docs, 1);
    let env = Env::adopt(cluster, installed);
    env.until_webhook_ready();
    env.guard("shop", "deny", serde_json::json!({}));
    let out = env.kubectl_as_user(
        true,
        &["delete", "configmap", "web-config", "-n", "shop", "--wait=false"],
    );
    assert_denied(&out, "validate.driftguard.io", &["cannot be deleted"]);
}
