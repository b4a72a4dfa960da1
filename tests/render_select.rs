//! `driftguard render` picks the renderer a Guard would: a kustomization renders with
//! Kustomize, a chart with Helm (the test-only shim on the real engine), a configured entry
//! with Jsonnet, anything else as plain YAML — from the committed revision, byte-identically
//! on every run, with origins naming the entry and document.

mod support;

use std::path::Path;
use std::process::Command;

/// A repository holding a copy of `examples/` (kustomize, helm, jsonnet, app), committed.
fn examples_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::git(dir.path(), &["init", "-q", "-b", "main"]);
    let copy = Command::new("cp")
        .arg("-r")
        .arg(support::root().join("examples"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copy.success());
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-qm", "examples"]);
    dir
}

fn render(repo: &Path, args: &[&str]) -> (bool, String, String) {
    let helm_dir = support::helm_launcher().parent().unwrap().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .arg("render")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", helm_dir.display()))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_example_renders_with_its_renderer_and_identically_twice() {
    let repo = examples_repo();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--path", "examples/kustomize/overlays/prod"],
            &[
                "# Source: examples/kustomize/base/deployment.yaml\n",
                "name: prod-web",
                "namespace: prod",
            ],
        ),
        (
            &["--path", "examples/helm/web", "--target-namespace", "web"],
            &[
                "# Source: examples/helm/web/templates/",
                "(document 1)",
                "namespace: web",
            ],
        ),
        (
            &[
                "--path",
                "examples/jsonnet",
                "--render",
                "jsonnet",
                "--jsonnet-entry",
                "main.jsonnet",
            ],
            &[],
        ),
        (
            &["--path", "examples/app"],
            &["# Source: examples/app/deployment.yaml:2"],
        ),
    ];
    for (args, needles) in cases {
        let (ok, first, stderr) = render(repo.path(), args);
        if args.contains(&"jsonnet") {
            // The example needs its ext var, which the CLI does not pass: a clear Jsonnet error.
            assert!(!ok);
            assert!(
                stderr.contains("main.jsonnet") && stderr.contains("external variable"),
                "{stderr}"
            );
            continue;
        }
        assert!(ok, "{args:?}: {stderr}");
        for needle in needles {
            assert!(first.contains(needle), "{args:?}: {needle:?} in\n{first}");
        }
        let (_, second, _) = render(repo.path(), args);
        assert_eq!(first, second, "{args:?}: byte-identical");
    }
}

#[test]
fn an_explicit_type_overrides_auto() {
    let repo = examples_repo();
    // Rendered as plain YAML, a kustomization directory is a kustomization file and patches,
    // which are not all Kubernetes objects: plain rendering refuses it with file:line.
    let (ok, _, stderr) = render(
        repo.path(),
        &["--path", "examples/kustomize/overlays/prod", "--render", "plain"],
    );
    assert!(!ok);
    assert!(stderr.contains("examples/kustomize/overlays/prod/"), "{stderr}");
}

#[test]
fn a_configured_jsonnet_entry_renders_through_the_guard_path() {
    let repo = examples_repo();
    let dir = repo.path().join("jsonnet-app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.jsonnet"),
        "local cm(n) = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: n } };\n{ b: cm('second'), a: cm('first') }\n",
    )
    .unwrap();
    support::git(repo.path(), &["add", "-A"]);
    support::git(repo.path(), &["commit", "-qm", "jsonnet"]);
    let (ok, out, stderr) = render(
        repo.path(),
        &["--path", "jsonnet-app", "--jsonnet-entry", "main.jsonnet"],
    );
    assert!(ok, "{stderr}");
    let first = out.find("name: first").unwrap();
    let second = out.find("name: second").unwrap();
    assert!(first < second, "fields in Jsonnet's order (sorted): {out}");
    assert!(out.contains("# Source: jsonnet-app/main.jsonnet (document 1)"), "{out}");
}
