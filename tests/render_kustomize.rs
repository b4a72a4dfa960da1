//! Kustomize rendering over a Git checkout, and the sandbox it runs in.

mod support;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftguard::render::kustomize::render_kustomize;
use driftguard::render::sandbox::{self, Invocation, Limits, SandboxError};
use driftguard::render::{Manifest, RenderError};
use driftguard::source::{GitReference, LocalRepository, SourceError};
use serde_json::Value;
use support::git;

const OVERLAY: &str = "examples/kustomize/overlays/prod";

/// Commits everything in `work` on `main`.
fn commit_all(work: &Path) {
    git(work, &["init", "-q", "-b", "main"]);
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "content"]);
}

/// Checks out HEAD of the repository at `work` into a fresh temp dir.
fn checkout(work: &Path) -> Result<tempfile::TempDir, SourceError> {
    let repo = LocalRepository::open(work.to_str().unwrap()).unwrap();
    let revision = repo.resolve(&GitReference::Head).unwrap();
    let dest = tempfile::tempdir().unwrap();
    repo.checkout(&revision, dest.path()).map(|()| dest)
}

/// A repository holding examples/kustomize, checked out.
fn example_checkout() -> (tempfile::TempDir, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    support::copy_dir(
        &support::root().join("examples/kustomize"),
        &work.path().join("examples/kustomize"),
    );
    commit_all(work.path());
    let dest = checkout(work.path()).unwrap();
    (work, dest)
}

fn find<'a>(manifests: &'a [Manifest], kind: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|m| m.object["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {manifests:#?}"))
}

fn serialize(manifests: &[Manifest]) -> Vec<u8> {
    let listed: Vec<(String, &Value)> = manifests.iter().map(|m| (m.origin.to_string(), &m.object)).collect();
    serde_json::to_vec_pretty(&listed).unwrap()
}

#[test]
fn overlay_applies_prefix_namespace_patches_image_and_generated_config_map() {
    let (_work, dest) = example_checkout();
    let started = Instant::now();
    let manifests = render_kustomize(dest.path(), OVERLAY, &Limits::default()).unwrap();
    eprintln!("rendered {OVERLAY} in {:?}", started.elapsed());

    assert_eq!(manifests.len(), 3, "{manifests:#?}");
    for manifest in &manifests {
        assert_eq!(manifest.object["metadata"]["namespace"], "prod", "{manifest:#?}");
        let name = manifest.object["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("prod-web"), "{name}");
    }

    let config = find(&manifests, "ConfigMap");
    let config_name = config.object["metadata"]["name"].as_str().unwrap();
    let suffix = config_name.strip_prefix("prod-web-config-").expect("generated name");
    assert_eq!(suffix.len(), 10, "hash suffix in {config_name}");
    assert_eq!(config.object["data"]["LOG_LEVEL"], "warn");
    assert_eq!(config.object["data"]["ENVIRONMENT"], "prod");

    let deployment = find(&manifests, "Deployment");
    assert_eq!(deployment.object["metadata"]["name"], "prod-web");
    // Strategic merge patch.
    assert_eq!(deployment.object["spec"]["replicas"], 3);
    let container = &deployment.object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "500m");
    // JSON 6902 patch.
    assert_eq!(container["env"][0]["name"], "REGION");
    assert_eq!(container["env"][0]["value"], "eu-west-1");
    // Image override.
    assert_eq!(container["image"], "registry.example.com/nginx:1.27.0");
    // The generated ConfigMap is referenced by its hashed name.
    assert_eq!(container["envFrom"][0]["configMapRef"]["name"], config_name);

    let service = find(&manifests, "Service");
    assert_eq!(service.object["metadata"]["name"], "prod-web");
}

#[test]
fn origins_name_the_file_each_object_came_from() {
    let (_work, dest) = example_checkout();
    let manifests = render_kustomize(dest.path(), OVERLAY, &Limits::default()).unwrap();
    // Sorted by apiVersion, kind, namespace, name.
    let kinds: Vec<&str> = manifests.iter().map(|m| m.object["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Deployment", "ConfigMap", "Service"]);
    let origins: Vec<String> = manifests.iter().map(|m| m.origin.to_string()).collect();
    assert_eq!(
        origins,
        [
            // Resources: their own files in the base the overlay builds on.
            "examples/kustomize/base/deployment.yaml",
            // Generated: the kustomization declaring the generator (the overlay merges into it).
            "examples/kustomize/base/kustomization.yaml",
            "examples/kustomize/base/service.yaml",
        ]
    );
    for manifest in &manifests {
        assert_eq!((manifest.origin.line, manifest.origin.document), (0, None));
        // The annotation that recorded it is not desired state.
        let annotations = &manifest.object["metadata"]["annotations"];
        assert!(
            annotations.get("config.kubernetes.io/origin").is_none(),
            "{manifest:#?}"
        );
    }
    // Nothing of the wrapper kustomization is left in the checkout.
    let leftovers: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".driftguard"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn two_renders_are_byte_identical() {
    let (_work, first) = example_checkout();
    let (_work2, second) = example_checkout();
    let a = render_kustomize(first.path(), OVERLAY, &Limits::default()).unwrap();
    let b = render_kustomize(second.path(), OVERLAY, &Limits::default()).unwrap();
    let c = render_kustomize(first.path(), OVERLAY, &Limits::default()).unwrap();
    assert_eq!(serialize(&a), serialize(&b));
    assert_eq!(serialize(&a), serialize(&c));
}

#[test]
fn base_renders_too() {
    let (_work, dest) = example_checkout();
    let manifests = render_kustomize(dest.path(), "./examples/kustomize/base/", &Limits::default()).unwrap();
    let deployment = find(&manifests, "Deployment");
    assert_eq!(deployment.object["metadata"]["name"], "web");
    assert_eq!(
        deployment.object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    assert_eq!(deployment.origin.file, "examples/kustomize/base/deployment.yaml");
}

/// A repository with `app/kustomization.yaml` listing `resources`, checked out.
fn kustomization_with_resources(resources: &[&str]) -> (tempfile::TempDir, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let list: String = resources.iter().map(|r| format!("  - {r}\n")).collect();
    std::fs::write(app.join("kustomization.yaml"), format!("resources:\n{list}")).unwrap();
    std::fs::write(
        app.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\n",
    )
    .unwrap();
    commit_all(work.path());
    let dest = checkout(work.path()).unwrap();
    (work, dest)
}

#[test]
fn remote_bases_are_refused_before_running() {
    for remote in [
        "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1",
        "github.com/org/repo/deploy?ref=main",
        "git@github.com:org/repo.git",
        "ssh://git@example.com/org/repo.git",
    ] {
        let (_work, dest) = kustomization_with_resources(&["cm.yaml", remote]);
        let started = Instant::now();
        let error = render_kustomize(dest.path(), "app", &Limits::default()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, RenderError::Tool { .. }), "{error:?}");
        assert!(message.starts_with("app/kustomization.yaml: "), "{message}");
        assert!(message.contains(remote), "{message}");
        assert!(message.contains("remote"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(2), "refused without fetching");
    }
}

#[test]
fn remote_base_in_a_nested_base_is_refused() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("base")).unwrap();
    std::fs::create_dir_all(work.path().join("overlay")).unwrap();
    std::fs::write(
        work.path().join("base/kustomization.yaml"),
        "resources:\n  - https://example.com/manifests.yaml\n",
    )
    .unwrap();
    std::fs::write(
        work.path().join("overlay/kustomization.yaml"),
        "resources:\n  - ../base\n",
    )
    .unwrap();
    commit_all(work.path());
    let dest = checkout(work.path()).unwrap();
    let message = render_kustomize(dest.path(), "overlay", &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("base/kustomization.yaml: "), "{message}");
    assert!(message.contains("https://example.com/manifests.yaml"), "{message}");
}

#[test]
fn bases_outside_the_checkout_are_refused() {
    let (_work, dest) = kustomization_with_resources(&["../../../../../../etc"]);
    let message = render_kustomize(dest.path(), "app", &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("leaves the repository"), "{message}");
}

#[test]
fn tool_failures_carry_its_message() {
    let (_work, dest) = kustomization_with_resources(&["missing.yaml"]);
    let message = render_kustomize(dest.path(), "app", &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("app/kustomization.yaml: "), "{message}");
    assert!(message.contains("missing.yaml"), "{message}");
}

#[test]
fn a_directory_without_kustomization_is_reported() {
    let (_work, dest) = example_checkout();
    let message = render_kustomize(dest.path(), "examples", &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("no kustomization"), "{message}");
}

#[test]
fn checkout_writes_files_modes_and_inner_symlinks() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("a/b")).unwrap();
    std::fs::write(work.path().join("a/b/file.yaml"), "x: 1\n").unwrap();
    std::fs::write(work.path().join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(work.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a/b/file.yaml", work.path().join("link.yaml")).unwrap();
    std::os::unix::fs::symlink("../file.yaml", work.path().join("a/b/up.yaml")).unwrap();
    commit_all(work.path());
    let dest = checkout(work.path()).unwrap();
    let d = dest.path();
    assert_eq!(std::fs::read_to_string(d.join("a/b/file.yaml")).unwrap(), "x: 1\n");
    let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("a/b/file.yaml"), 0o644);
    assert_eq!(
        std::fs::read_link(d.join("link.yaml")).unwrap(),
        PathBuf::from("a/b/file.yaml")
    );
    assert_eq!(std::fs::read_to_string(d.join("link.yaml")).unwrap(), "x: 1\n");
    // Dangling but inside: kept.
    assert!(
        std::fs::symlink_metadata(d.join("a/b/up.yaml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!d.join(".git").exists());
}

#[test]
fn symlink_out_of_the_repository_is_refused_at_checkout() {
    for (target, name) in [
        ("/etc/passwd", "leak.yaml"),
        ("../../../../../../../etc/passwd", "up.yaml"),
    ] {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("ok.yaml"), "x: 1\n").unwrap();
        std::os::unix::fs::symlink(target, work.path().join(name)).unwrap();
        commit_all(work.path());
        let error = checkout(work.path()).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, SourceError::SymlinkEscapes { .. }), "{error:?}");
        assert!(message.contains(name) && message.contains(target), "{message}");
    }
}

#[test]
fn symlink_escaping_through_another_link_is_refused() {
    // `s -> .` looks harmless and `x -> s/s/../..` stays inside lexically, but the kernel
    // resolves it to the checkout's parent.
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(".", work.path().join("s")).unwrap();
    std::os::unix::fs::symlink("s/s/../..", work.path().join("x")).unwrap();
    commit_all(work.path());
    let message = checkout(work.path()).unwrap_err().to_string();
    assert!(message.contains("\"x\""), "{message}");
}

fn invocation<'a>(program: &'a Path, args: &[&str], root: &'a Path, limits: Limits) -> Invocation<'a> {
    Invocation {
        program,
        args: args.iter().map(OsString::from).collect(),
        cwd: root,
        root,
        env: Vec::new(),
        limits,
    }
}

#[test]
fn sandbox_timeout_kills_the_process_group() {
    let root = tempfile::tempdir().unwrap();
    let sh = sandbox::find_program("sh").unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    // A grandchild in the same group, holding stdout open.
    let run = invocation(&sh, &["-c", "sleep 5 & echo $! > pid; wait"], root.path(), limits);
    let started = Instant::now();
    let error = sandbox::run(&run).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, SandboxError::Timeout { .. }), "{error:?}");
    assert!(
        error.to_string().contains("killed after 200ms (render timeout)"),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let pid = std::fs::read_to_string(root.path().join("pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    // Gone, or a zombie waiting for its reaper: not sleeping any more.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(text) if text.contains(") Z ") => break,
            Ok(text) if Instant::now() > deadline => panic!("sleep survived: {text}"),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn sandbox_output_cap() {
    let root = tempfile::tempdir().unwrap();
    let yes = sandbox::find_program("yes").unwrap();
    let limits = Limits {
        max_output_bytes: 1024,
        ..Limits::default()
    };
    let started = Instant::now();
    let error = sandbox::run(&invocation(&yes, &[], root.path(), limits)).unwrap_err();
    assert!(
        matches!(error, SandboxError::OutputTooLarge { limit: 1024, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("1024 bytes"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Exactly at the cap is fine.
    let printf = sandbox::find_program("head").unwrap();
    let out = sandbox::run(&invocation(&printf, &["-c", "1024", "/dev/zero"], root.path(), limits)).unwrap();
    assert_eq!(out.len(), 1024);
}

#[test]
fn sandbox_environment_is_clean() {
    // Under `cargo test` this process carries CARGO_*, HOME, USER...: none may reach the child.
    let parent_home = std::env::var_os("HOME");
    let root = tempfile::tempdir().unwrap();
    let env = sandbox::find_program("env").unwrap();
    let mut run = invocation(&env, &[], root.path(), Limits::default());
    run.env = vec![("HELM_NAMESPACE".to_owned(), "x".to_owned())];
    let out = String::from_utf8(sandbox::run(&run).unwrap()).unwrap();
    let mut keys = Vec::new();
    let mut home = None;
    for line in out.lines() {
        let (key, value) = line.split_once('=').unwrap();
        assert!(
            ["PATH", "HOME", "TMPDIR", "HELM_NAMESPACE"].contains(&key) || key.starts_with("XDG_"),
            "leaked {line}"
        );
        if key == "HOME" {
            home = Some(PathBuf::from(value));
        }
        keys.push(key.to_owned());
    }
    assert!(out.contains("PATH=/usr/bin:/bin\n"), "{out}");
    assert!(out.contains("HELM_NAMESPACE=x\n"), "{out}");
    let home = home.expect("HOME set");
    assert_ne!(Some(home.clone().into_os_string()), parent_home);
    assert!(!home.exists(), "the temporary HOME is removed afterwards");
    assert!(!home.parent().unwrap().exists());
}

#[test]
fn sandbox_refuses_a_cwd_outside_the_checkout() {
    let root = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let sh = sandbox::find_program("sh").unwrap();
    let mut run = invocation(&sh, &["-c", "true"], root.path(), Limits::default());
    run.cwd = other.path();
    let error = sandbox::run(&run).unwrap_err();
    assert!(matches!(error, SandboxError::OutsideCheckout { .. }), "{error:?}");
    let dotdot = root.path().join("..");
    run.cwd = &dotdot;
    assert!(matches!(
        sandbox::run(&run).unwrap_err(),
        SandboxError::OutsideCheckout { .. }
    ));
    // Inside is fine.
    std::fs::create_dir(root.path().join("sub")).unwrap();
    let sub = root.path().join("sub");
    run.cwd = &sub;
    let pwd = sandbox::run(&invocation(&sh, &["-c", "pwd"], root.path(), Limits::default())).unwrap();
    assert!(!pwd.is_empty());
    assert!(sandbox::run(&run).is_ok());
}

#[test]
fn sandbox_failure_shows_stderr_and_status() {
    let root = tempfile::tempdir().unwrap();
    let sh = sandbox::find_program("sh").unwrap();
    let run = invocation(
        &sh,
        &["-c", "echo '  boom: bad input  ' >&2; exit 3"],
        root.path(),
        Limits::default(),
    );
    let error = sandbox::run(&run).unwrap_err();
    let SandboxError::Failed { status, stderr, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(stderr, "boom: bad input");
    assert!(status.contains('3'), "{status}");
    assert!(error.to_string().contains("boom: bad input"), "{error}");
}
