//! Repository layouts as real GitOps repositories have them (tests/fixtures/layouts), through
//! the offline commands: a cluster-scoped CRD + CR, a jsonnet-only directory, a Flux
//! multi-environment layout with kustomize subdirectories, an Argo CD app-of-apps with hook
//! and generateName Jobs, and a Guard manifest given with --guard-file.

mod support;

use serde_json::Value;

/// A Git repository holding tests/fixtures/layouts at its root.
fn layouts_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&support::root().join("tests/fixtures/layouts"), dir.path());
    support::git(dir.path(), &["init", "-q", "-b", "main"]);
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-q", "-m", "layouts"]);
    dir
}

fn layout(name: &str) -> String {
    support::root()
        .join("tests/fixtures/layouts")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `render` of `path`: (exit code, objects, stderr).
fn render(repo: &tempfile::TempDir, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args = vec!["render", "--repo", repo.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = support::driftguard(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let objects = stdout
        .split("\n---\n")
        .map(|doc| doc.trim_start_matches("---\n"))
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        objects,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(objects: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or("-"),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    names.sort();
    names
}

#[test]
fn cluster_scoped_custom_resources_take_scope_from_their_crd_or_an_api_resources_file() {
    let repo = layouts_repo();
    // The CRD in the same render says Cluster: no namespace.
    let (code, objects, stderr) = render(&repo, &["--path", "cluster-scoped-cr"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        names(&objects),
        [
            "ClusterIssuer -/letsencrypt",
            "CustomResourceDefinition -/clusterissuers.cert-manager.io"
        ]
    );
    // Without the CRD: a clear error, never a guess.
    let (code, _, stderr) = render(&repo, &["--path", "cluster-scoped-cr/issuers"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("ClusterIssuer (cert-manager.io)"), "{stderr}");
    assert!(stderr.contains("--api-resources"), "{stderr}");
    // With `kubectl api-resources` output.
    let table = layout("cluster-scoped-cr.api-resources.txt");
    let (code, objects, stderr) = render(
        &repo,
        &["--path", "cluster-scoped-cr/issuers", "--api-resources", &table],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names(&objects), ["ClusterIssuer -/letsencrypt"]);
}

#[test]
fn jsonnet_only_directories_find_their_entry_or_say_why_nothing_renders() {
    let repo = layouts_repo();
    let (code, objects, stderr) = render(&repo, &["--path", "jsonnet-only"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names(&objects), ["ConfigMap default/settings"]);
    assert!(
        objects[0]["metadata"]["annotations"]["driftguard.io/guard"] == "default/cli",
        "{objects:?}"
    );

    let (code, objects, stderr) = render(&repo, &["--path", "jsonnet-many"]);
    assert_eq!(code, 2, "{objects:?}");
    assert!(
        stderr.contains("3 .jsonnet files, no entry; set render.jsonnet.entry"),
        "{stderr}"
    );
    assert!(stderr.contains("prune.allowEmpty"), "{stderr}");
    let (code, objects, stderr) = render(&repo, &["--path", "jsonnet-many", "--jsonnet-entry", "b.jsonnet"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names(&objects), ["ConfigMap default/b"]);
}

#[test]
fn flux_layouts_build_kustomize_subdirectories_and_skip_tool_files() {
    let repo = layouts_repo();
    let (code, objects, stderr) = render(&repo, &["--path", "flux/clusters/prod"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        names(&objects),
        [
            "ConfigMap shop/infra-settings",
            "Deployment shop/shop",
            "Namespace -/shop"
        ],
        "values-prod.yaml and kustomization.yaml are not manifests; apps/ is built by kustomize"
    );
}

#[test]
fn argocd_hooks_and_generate_name_jobs_are_left_out_with_a_notice() {
    let repo = layouts_repo();
    let table = layout("argocd.api-resources.txt");
    let (code, objects, stderr) = render(&repo, &["--path", "argocd", "--api-resources", &table]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names(&objects), ["Application argocd/workloads", "Service shop/shop"]);
    assert!(
        stderr.contains("argocd/workloads/migrate.yaml:1: Job migrate skipped: argocd.argoproj.io/hook hooks"),
        "{stderr}"
    );
    assert!(
        stderr.contains("argocd/workloads/migrate.yaml:17: Job smoke-test-* skipped: generateName"),
        "{stderr}"
    );
}

#[test]
fn guard_file_gives_offline_commands_the_guards_settings() {
    let repo = layouts_repo();
    let guard = layout("argocd.guard.yaml");
    let table = layout("argocd.api-resources.txt");
    // Path, target namespace and owner come from the Guard manifest.
    let (code, objects, stderr) = render(&repo, &["--guard-file", &guard, "--api-resources", &table]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(names(&objects), ["Application argocd/workloads", "Service shop/shop"]);
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["annotations"]["driftguard.io/guard"] == "platform/shop"),
        "{objects:?}"
    );
    // Its exemptions apply to check: ci-bot may delete, alice may not.
    let review = |user: &str| {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "5d0e8a51-0000-4000-8000-000000000017",
                "kind": {"group": "", "version": "v1", "kind": "Service"},
                "resource": {"group": "", "version": "v1", "resource": "services"},
                "name": "shop", "namespace": "shop", "operation": "DELETE",
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": null,
                "oldObject": objects.iter().find(|o| o["kind"] == "Service").unwrap(),
            }
        });
        let path = repo.path().join(format!("{user}.json"));
        std::fs::write(&path, serde_json::to_vec(&review).unwrap()).unwrap();
        let out = support::driftguard(&[
            "check",
            "--repo",
            repo.path().to_str().unwrap(),
            "--guard-file",
            &guard,
            "--api-resources",
            &table,
            "--review",
            path.to_str().unwrap(),
        ]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, body) = review("alice@example.com");
    assert_eq!(code, Some(1), "{body}");
    let (code, body) = review("ci-bot@example.com");
    assert_eq!(code, Some(0), "{body}");
}
