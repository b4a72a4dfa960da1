//! Audit evidence from three replicas on the real API server: each replica writes its own chain
//! to stdout with signed digests (the key Secret created once by the leader, the public keys and
//! the per-replica anchors in ConfigMaps); a SIEM-style interleaving of all three streams verifies
//! as three chains against the cluster's keys and anchors, and a chain cut short is caught.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::cluster::NAMESPACE;
use crate::{Env, assert_denied};

pub fn verify(env: &Env, stream: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(["audit", "verify", "--from-cluster", NAMESPACE, "--kubeconfig"])
        .arg(env.cluster.kubeconfig())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stream.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn three_replicas_interleaved_verify_as_three_chains() {
    let mut env = Env::start(&["config.auditDigestInterval=1s"], 3);
    env.guard("shop", "deny", json!({}));

    // Route kube-apiserver to one replica at a time, so each one decides (and records) denials.
    let names: Vec<String> = env.installed.replicas.iter().map(|r| r.name.clone()).collect();
    for (i, replica) in env.installed.replicas.iter().enumerate() {
        env.installed.proxy.set_backends(vec![replica.https]);
        for n in 0..2 {
            let replicas = format!("--replicas={}", 10 + 2 * i + n);
            let out = env.kubectl_as_user(false, &["scale", "deploy", "web", "-n", "shop", &replicas]);
            assert_denied(&out, "validate-scale.driftguard.io", &["spec.replicas"]);
        }
    }
    env.installed.route();

    // Stop all three (a final digest each, anchored in the cluster) and gather their stdout.
    let mut streams = Vec::new();
    for name in &names {
        let (status, lines) = env.installed.take(name).stop();
        assert!(status.success(), "{name} exited with {status}");
        assert!(
            lines.iter().any(|l| l.contains("\"audit.digest\"")),
            "{name} wrote no digest:\n{}",
            lines.join("\n")
        );
        streams.push(lines);
    }
    // A SIEM's copy: the three streams interleaved line by line.
    let mut merged = Vec::new();
    let longest = streams.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        for stream in &streams {
            if let Some(line) = stream.get(i) {
                merged.push(line.clone());
            }
        }
    }
    let stream = merged.join("\n") + "\n";
    let out = verify(&env, &stream);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in 3 chains"), "{stdout}");
    for name in &names {
        assert!(
            stdout.contains(&format!("(replica {name})")),
            "{name} missing:\n{stdout}"
        );
    }
    assert!(!stdout.contains("signatures NOT checked"), "{stdout}");

    // One replica's last records (its final digest included) removed: its anchor in the
    // cluster says the chain went further.
    let cut: Vec<&String> = {
        let victim = &streams[1];
        let keep = victim.len() - 2;
        merged.iter().filter(|l| !victim[keep..].contains(l)).collect()
    };
    let stream = cut.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n") + "\n";
    let out = verify(&env, &stream);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cut short"), "{stdout}");
}
