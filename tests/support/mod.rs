//! Shared helpers for integration tests: the example app as desired state, fixtures, and
//! an in-process admission stack.
#![allow(dead_code)]

pub mod cluster;
pub mod gitservers;
pub mod guards;
pub mod https;
pub mod process;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use driftguard::admission::{Admission, AdmissionSettings, service_account_username};
use driftguard::api::{Exemptions, GuardSpec, IgnoreRule, Mode};
use driftguard::audit::MemorySink;
use driftguard::desired::{DesiredSet, DesiredStore, GuardId, GuardPolicy};
use driftguard::render::render_plain;
use driftguard::source::{Revision, SourceFile};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Read a file under tests/fixtures/.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = root().join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Files of examples/app with repo-relative paths, as the Git source would return them.
pub fn example_files() -> Vec<SourceFile> {
    let dir = root().join("examples/app");
    let mut files: Vec<SourceFile> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| SourceFile {
            path: Path::new("examples/app")
                .join(p.file_name().unwrap())
                .to_string_lossy()
                .into_owned(),
            content: std::fs::read(&p).unwrap(),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// A Guard spec for the example app.
pub fn example_guard(mode: Mode) -> GuardSpec {
    serde_json::from_value(serde_json::json!({
        "sourceRef": { "name": "driftguard-examples" },
        "path": "examples/app",
        "mode": mode,
    }))
    .unwrap()
}

/// The example app's desired set under a Guard `default/example-app`.
pub fn example_set(spec: &GuardSpec) -> Arc<DesiredSet> {
    example_set_linked(spec, None)
}

/// [`example_set`] from a GitSource `https://git.example.com/platform.git` (a host without
/// derived links) with `webUrl` set to `web_url`.
pub fn example_set_linked(spec: &GuardSpec, web_url: Option<&str>) -> Arc<DesiredSet> {
    let id = GuardId {
        namespace: "default".into(),
        name: "example-app".into(),
    };
    let url = "https://git.example.com/platform.git";
    let links = driftguard::source::LinkTemplate::for_source(url, web_url).unwrap();
    let policy = Arc::new(GuardPolicy::new(id, spec, url).unwrap().with_links(links));
    let revision = Revision {
        commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        reference: "main@sha1:4b825dc642cb".into(),
    };
    let manifests = render_plain(&example_files()).unwrap();
    Arc::new(DesiredSet::build(policy, revision, manifests).unwrap())
}

/// An admission stack over the example app.
pub struct Stack {
    pub admission: Admission,
    pub audit: Arc<MemorySink>,
    pub store: Arc<DesiredStore>,
}

/// Build a stack from a Guard spec.
pub fn stack(spec: &GuardSpec) -> Stack {
    stack_over(example_set(spec))
}

/// Build a stack over one desired set.
pub fn stack_over(set: Arc<DesiredSet>) -> Stack {
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![set], true);
    let audit = Arc::new(MemorySink::new());
    let admission = Admission::new(
        store.clone(),
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: Default::default(),
        },
        audit.clone(),
    );
    Stack {
        admission,
        audit,
        store,
    }
}

/// A stack in `mode` with optional ignore rules and exemptions.
pub fn stack_with(mode: Mode, ignore: Vec<IgnoreRule>, exemptions: Exemptions) -> Stack {
    let mut spec = example_guard(mode);
    spec.ignore = ignore;
    spec.exemptions = exemptions;
    stack(&spec)
}

/// A throwaway Git repository holding a copy of examples/app, committed on `main` and
/// tagged `v1`. Returns the temp dir (keep it alive) and the commit id.
pub fn example_repo() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("examples/app");
    std::fs::create_dir_all(&app).unwrap();
    for file in example_files() {
        std::fs::write(dir.path().join(&file.path), &file.content).unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "example app"]);
    git(dir.path(), &["tag", "v1"]);
    let commit = git(dir.path(), &["rev-parse", "HEAD"]);
    (dir, commit)
}

/// Run git in `dir`, isolated from the machine's git configuration and with a fixed
/// identity; panics with git's stderr on failure and returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with_env(dir, &[], args)
}

/// [`git`] with extra environment variables (e.g. `GNUPGHOME` for signing); configuration
/// goes in `args` as `-c key=value`. Panics with git's stderr on failure and returns trimmed
/// stdout.
pub fn git_with_env(dir: &Path, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .envs(env.iter().copied())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `/usr/bin/kubectl` against `kubeconfig`, isolated from the machine: HOME and the discovery
/// cache live under `home`, and the environment holds nothing else but PATH.
pub fn kubectl(home: &Path, kubeconfig: &Path) -> std::process::Command {
    const KUBECTL: &str = "/usr/bin/kubectl";
    assert!(
        Path::new(KUBECTL).exists(),
        "kubectl is part of this machine's image and the tests need it"
    );
    let mut command = std::process::Command::new(KUBECTL);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(["--request-timeout", "20s"])
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin");
    command
}

/// A kube::Client for `identity` on the test API server (kubeconfig written into `dir`).
pub async fn kube_client(
    api: &driftguard_testapi::TestApiServer,
    identity: driftguard_testapi::Identity,
    dir: &Path,
) -> kube::Client {
    let path = dir.join(format!("{identity:?}.kubeconfig"));
    api.write_kubeconfig(identity, &path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The real `helm` (helm.sh/helm/v4, built from its Go module by `scripts/cluster build` and
/// cached by version, like the control plane). Its directory holds nothing else that a test
/// putting it first on PATH would pick up by accident but the control-plane binaries.
pub fn helm_launcher() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        let out = std::process::Command::new(root().join("scripts/cluster"))
            .arg("build")
            .output()
            .expect("scripts/cluster runs");
        assert!(
            out.status.success(),
            "scripts/cluster build (the real helm and control plane) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let helm = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
        assert!(helm.exists(), "{} is missing", helm.display());
        helm
    })
    .clone()
}

/// An `admission.denied` record for Deployment `default/web-<i>` with `message`: the shape of
/// the audit log's most common line, for tests of the chain and its file.
pub fn denied_event(i: usize, message: &str) -> driftguard::audit::AuditEvent {
    use driftguard::audit::{AuditEvent, EventKind, ObjectRef};
    let mut event = AuditEvent::new(EventKind::AdmissionDenied);
    event.object = ObjectRef {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
        namespace: Some("default".into()),
        name: format!("web-{i}"),
        subresource: None,
    };
    event.operation = "UPDATE".into();
    event.guard = "default/app".into();
    event.message = format!("{message} (event {i})");
    event
}

/// Collects the bytes written to it (a console copy of audit records, or logs); clones share them.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Everything written so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Run the driftguard binary with `args` (RUST_LOG=warn).
pub fn driftguard(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("driftguard runs")
}

/// Run `driftguard ARGS` with `input` on its stdin; its exit code and stdout+stderr.
pub fn driftguard_with_stdin<I, S>(args: I, input: &[u8]) -> (i32, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_driftguard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}
