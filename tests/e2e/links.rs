//! Links to Git through the real API server: a GitSource with `webUrl` makes kubectl's denial,
//! the Event on the object and the audit record link to the declaring line at the enforced
//! commit; the CRD's validation rules refuse a template with credentials or without the commit.

use serde_json::{Value, json};

use crate::support::cluster::wait_for;
use crate::{Env, WAIT, apply, assert_denied};

const TEMPLATE: &str = "https://git.example.com/team/apps/blob/{revision}/{path}#L{line}";

fn source(env: &Env, web_url: &str) -> Value {
    json!({"apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
           "metadata": {"name": "apps", "namespace": "default"},
           "spec": {"url": env.repo.path().to_str().unwrap(), "ref": {"branch": "main"}, "interval": "2s",
                    "accessFrom": {"namespaces": ["*"]}, "webUrl": web_url}})
}

/// The 1-based line of `needle` in `file` of the repository.
fn line_of(env: &Env, file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(env.repo.path().join(file)).unwrap();
    text.lines().position(|l| l.trim_start().starts_with(needle)).unwrap() + 1
}

#[test]
fn denials_events_and_audit_link_to_the_line_at_the_commit() {
    let mut env = Env::start(&[], 1);

    // The real API server applies the CRD's rules to webUrl.
    for (bad, says) in [
        (
            "https://bot:S3CRET@git.example.com/{repo}/blob/{revision}/{path}",
            "without user information",
        ),
        (
            "https://git.example.com/team/apps/blob/main/{path}",
            "needs {revision} and {path}",
        ),
        (
            "https://git.example.com/{repo}/blob/{commit}/{path}#L{line}",
            "may only use the placeholders",
        ),
    ] {
        let file = env.cluster.scratch().join("bad-source.json");
        std::fs::write(&file, source(&env, bad).to_string()).unwrap();
        let out = env
            .cluster
            .kubectl()
            .args(["apply", "--server-side", "--field-manager=e2e", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was admitted");
        assert!(
            stderr.contains("spec.webUrl") && stderr.contains(says),
            "{bad}: {stderr}"
        );
    }

    apply(&env.cluster, &source(&env, TEMPLATE));
    let head = env.guard("links", "deny", json!({}));
    let link = format!(
        "https://git.example.com/team/apps/blob/{head}/apps/web/deployment.yaml#L{}",
        line_of(&env, "apps/web/deployment.yaml", "replicas:")
    );

    // The person at kubectl (both kubectls) gets the link to the replicas line at HEAD.
    for machine in [false, true] {
        let out = env.kubectl_as_user(machine, &["scale", "deploy", "web", "-n", "links", "--replicas=5"]);
        assert_denied(
            &out,
            "validate-scale.driftguard.io",
            &["Git has 3, request has 5", &format!("Open it in Git: {link}")],
        );
    }
    // A delete links to where the object starts.
    let out = env.kubectl_as_user(
        false,
        &["delete", "configmap", "web-config", "-n", "links", "--wait=false"],
    );
    let config_link = format!("https://git.example.com/team/apps/blob/{head}/apps/web/config.yaml#L1");
    assert_denied(&out, "validate.driftguard.io", &["cannot be deleted", &config_link]);

    // The EditDenied Event on the Deployment carries it.
    wait_for("an EditDenied Event with the link", WAIT, || {
        let events = env.cluster.ok(&[
            "get",
            "events",
            "-n",
            "links",
            "--field-selector",
            "reason=EditDenied,involvedObject.kind=Deployment",
            "-o",
            "json",
        ]);
        let events: Value = serde_json::from_str(&events).unwrap();
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains(&link)))
            .then_some(())
    });

    // The audit record links each field, and the chain with the new member verifies.
    let name = env.installed.replicas[0].name.clone();
    let (status, lines) = env.installed.take(&name).stop();
    assert!(status.success(), "{name} exited with {status}");
    let denial = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["event"] == "admission.denied" && r["object"]["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("no denial recorded:\n{}", lines.join("\n")));
    assert_eq!(denial["fields"][0]["path"], "spec.replicas", "{denial}");
    assert_eq!(denial["fields"][0]["link"], link.as_str(), "{denial}");
    let out = crate::audit::verify(&env, &(lines.join("\n") + "\n"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
