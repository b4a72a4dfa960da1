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

/// A Guard manifest for `--guard-file` over `examples/app`: the HPA's identity owns replicas
/// within the bounds of the HPA Git declares (rule 1), `kubectl patch` (field manager
/// `kubectl-patch`) between 1 and `max` (rule 2).
fn delegating_guard(dir: &std::path::Path, max: i64) -> std::path::PathBuf {
    let file = dir.join(format!("guard-{max}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: driftguard.io/v1alpha1
kind: Guard
metadata: {{name: web, namespace: default}}
spec:
  sourceRef: {{name: apps}}
  path: examples/app
  delegate:
    - kind: Deployment
      jsonPointers: [/spec/replicas]
      to: {{serviceAccounts: [kube-system/horizontal-pod-autoscaler]}}
      bounds: {{fromHPA: true}}
    - kind: Deployment
      jsonPointers: [/spec/replicas]
      to: {{fieldManagers: [kubectl-patch]}}
      bounds: {{min: 1, max: {max}}}
"
        ),
    )
    .unwrap();
    file
}

fn check_with_guard_file(repo: &str, guard: &std::path::Path, fixture: &str) -> (i32, Value, String) {
    let review = root().join("tests/fixtures").join(fixture);
    let out = driftguard(&[
        "check",
        "--repo",
        repo,
        "--ref",
        "main",
        "--guard-file",
        guard.to_str().unwrap(),
        "--review",
        review.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), body, stderr)
}

/// `check --guard-file` decides with the file's delegate rules: a delegate within the bounds
/// is allowed and recorded as `admission.delegated`, beyond them denied naming the bound and
/// the rule; `fromHPA` takes its bounds from the HPA Git declares.
#[test]
fn check_decides_with_the_guard_files_delegate_rules() {
    let (dir, _) = example_repo();
    let repo = dir.path().to_str().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let strict = delegating_guard(scratch.path(), 6);
    let loose = delegating_guard(scratch.path(), 12);

    // kubectl patch setting 10 replicas (Git has 3): beyond rule 2's maximum, then within it.
    let (code, body, stderr) = check_with_guard_file(repo, &strict, "patch-merge-replicas.json");
    assert_eq!(code, 1, "{stderr}");
    let message = body["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("above the maximum 6 (bounds)") && message.contains("delegate rule 2"),
        "{body}"
    );
    let (code, body, stderr) = check_with_guard_file(repo, &loose, "patch-merge-replicas.json");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(body["response"]["allowed"], true);
    assert!(stderr.contains("admission.delegated"), "{stderr}");

    // The HPA's identity scaling to 6: no HPA in Git, so fromHPA admits nothing ...
    let (code, body, stderr) = check_with_guard_file(repo, &strict, "scale-by-hpa.json");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no HorizontalPodAutoscaler targets Deployment default/web")),
        "{body}"
    );
    // ... and with an HPA from 2 to 8 in Git, 6 is within its bounds.
    std::fs::write(
        dir.path().join("examples/app/hpa.yaml"),
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 8
",
    )
    .unwrap();
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-q", "-m", "hpa"]);
    let (code, body, stderr) = check_with_guard_file(repo, &strict, "scale-by-hpa.json");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(body["response"]["allowed"], true);
    assert!(stderr.contains("admission.delegated"), "{stderr}");
}
