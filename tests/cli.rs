//! The `check` and `render` commands against a real Git repository.

mod support;

use serde_json::Value;
use support::{driftguard, example_repo, root};

fn check(repo: &str, reference: &str, mode: &str, fixture: &str) -> (i32, Value, String) {
    let review = root().join("tests/fixtures").join(fixture);
    let out = driftguard(&[
        "check",
        "--repo",
        repo,
        "--ref",
        reference,
        "--path",
        "examples/app",
        "--mode",
        mode,
        "--review",
        review.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), body, stderr)
}

#[test]
fn check_exits_by_decision() {
    let (dir, commit) = example_repo();
    let repo = dir.path().to_str().unwrap();
    for reference in ["HEAD", "main", "v1", commit.as_str(), &commit[..10]] {
        let (code, body, stderr) = check(repo, reference, "deny", "scale-deployment.json");
        assert_eq!(code, 1, "{reference}: {stderr}");
        assert_eq!(body["response"]["allowed"], false, "{reference}");
        assert!(
            stderr.contains("admission.denied"),
            "the audit event goes to stderr: {stderr}"
        );
    }
    let (code, body, _) = check(repo, "main", "deny", "rollout-restart.json");
    assert_eq!(code, 0);
    assert_eq!(body["response"]["allowed"], true);

    let (code, body, _) = check(repo, "main", "revert", "scale-deployment.json");
    assert_eq!(code, 0, "revert mode allows with a patch");
    assert_eq!(body["response"]["patchType"], "JSONPatch");

    let url = format!("file://{repo}");
    let (code, _, stderr) = check(&url, "main", "deny", "delete-by-user.json");
    assert_eq!(code, 1, "{stderr}");
}

/// `check` names the line of the drifted field in the Git file, in the denial, the revert
/// warnings and the audit record.
#[test]
fn check_points_at_the_drifted_fields_line() {
    let (dir, _) = example_repo();
    let repo = dir.path().to_str().unwrap();
    let (code, body, stderr) = check(repo, "main", "deny", "edit-image.json");
    assert_eq!(code, 1, "{stderr}");
    let message = body["response"]["status"]["message"].as_str().unwrap();
    // The image is on line 22; the Deployment starts on line 2.
    assert!(
        message.contains("Git declares it at examples/app/deployment.yaml:22 in "),
        "{message}"
    );
    assert!(stderr.contains("examples/app/deployment.yaml:22"), "audit: {stderr}");
    let (code, body, stderr) = check(repo, "main", "revert", "scale-deployment.json");
    assert_eq!(code, 0, "{stderr}");
    let warnings = body["response"]["warnings"].as_array().unwrap();
    assert_eq!(
        warnings.last().and_then(Value::as_str),
        Some("driftguard: change it in Git: examples/app/deployment.yaml:10"),
        "{warnings:?}"
    );
}

#[test]
fn check_errors_exit_2_with_a_reason() {
    let (dir, _) = example_repo();
    let repo = dir.path().to_str().unwrap();
    let (code, _, stderr) = check(repo, "no-such-branch", "deny", "scale-deployment.json");
    assert_eq!(code, 2);
    assert!(stderr.contains("no-such-branch"), "{stderr}");

    let (code, _, stderr) = check("/nonexistent/repo", "HEAD", "deny", "scale-deployment.json");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/repo"), "{stderr}");

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let out = driftguard(&[
        "check",
        "--repo",
        repo,
        "--path",
        "examples/app",
        "--review",
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an AdmissionReview"));
}

#[test]
fn render_prints_normalized_objects_with_origins() {
    let (dir, _) = example_repo();
    let out = driftguard(&[
        "render",
        "--repo",
        dir.path().to_str().unwrap(),
        "--path",
        "examples/app",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("# Source: examples/app/deployment.yaml:2"), "{yaml}");
    assert!(yaml.contains("# Source: examples/app/config.yaml:"), "{yaml}");
    assert!(yaml.contains("cpu: 500m"), "quantities canonical: {yaml}");
    assert!(yaml.contains("defaultMode: 420"), "0644 parsed as octal: {yaml}");
    assert!(yaml.contains("namespace: default"), "namespace defaulted: {yaml}");
    assert!(!yaml.contains("stringData"), "stringData folded into data: {yaml}");
    assert!(yaml.contains("driftguard.io/managed"), "ownership stamped: {yaml}");
    assert_eq!(yaml.matches("---\n").count(), 5, "five objects: {yaml}");
}

/// `driftguard certs generate`: the four files for the Service's names, keys private, and the
/// caBundle on stdout is the CA, base64-encoded; existing files are not replaced.
#[test]
fn certs_generate_writes_a_service_certificate_and_prints_the_ca_bundle() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tls");
    let args = [
        "certs",
        "generate",
        "--service",
        "guard",
        "--namespace",
        "platform",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = driftguard(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca = std::fs::read(out_dir.join("ca.crt")).unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .unwrap();
    assert_eq!(bundle, ca, "stdout is the caBundle");
    let ca = driftguard::certs::parse_cert_chain(&ca, "ca.crt").unwrap().remove(0);
    let chain =
        driftguard::certs::parse_cert_chain(&std::fs::read(out_dir.join("tls.crt")).unwrap(), "tls.crt").unwrap();
    let hosts: Vec<String> = ["guard.platform.svc", "guard.platform.svc.cluster.local"]
        .map(String::from)
        .to_vec();
    driftguard::certs::verify_serving(&chain, &ca, &hosts, std::time::SystemTime::now(), "tls.crt").unwrap();
    let again = driftguard(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn check_without_webhook_answers_as_the_api_server_would() {
    // Revert mode: the mutating webhook lets a DELETE through (nothing to patch back), the
    // validating one denies it; the API server calls both, so check does too.
    let (dir, _) = example_repo();
    let repo = dir.path().to_str().unwrap();
    let (code, body, stderr) = check(repo, "main", "revert", "delete-by-user.json");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    // An edit in revert mode is patched back, and the patched object then validates.
    let (code, body, stderr) = check(repo, "main", "revert", "scale-deployment.json");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(body["response"]["patchType"], "JSONPatch");
}
