//! Source (local Git) and plain rendering against real repositories built with the git CLI.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use driftguard::render::{Manifest, Origin, RenderError, Renderer, render_plain};
use driftguard::source::{GitReference, LocalRepository, Revision, SourceError, SourceFile};
use serde_json::json;
use support::git;
use tempfile::TempDir;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn deployment(replicas: u32) -> String {
    format!(
        "# the web tier\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: {replicas}\n"
    )
}

/// A repository with history:
/// c1 (tags v1.0.0 annotated, light lightweight) -> c2 (main, HEAD) -> c3 (dev).
/// The work tree then has uncommitted changes that must never be read.
struct Fixture {
    _tmp: TempDir,
    path: PathBuf,
    c1: String,
    c2: String,
    c3: String,
}

fn fixture() -> Fixture {
    let tmp = TempDir::new().unwrap();
    // A space in the path exercises file:// decoding.
    let path = tmp.path().join("my repo");
    fs::create_dir_all(&path).unwrap();
    git(&path, &["init", "-q", "-b", "main"]);

    write(&path, "README.md", "# not a manifest\n");
    write(&path, "apps/web/deploy.yaml", &deployment(1));
    write(
        &path,
        "apps/web/config/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  mode: fast\n",
    );
    write(
        &path,
        "apps/old.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old\n",
    );
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "first"]);
    let c1 = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["tag", "-a", "v1.0.0", "-m", "release 1"]);
    git(&path, &["tag", "light"]);

    git(&path, &["rm", "-q", "apps/old.yaml"]);
    write(&path, "apps/web/deploy.yaml", &deployment(3));
    std::os::unix::fs::symlink("web/deploy.yaml", path.join("apps/link.yaml")).unwrap();
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "second"]);
    let c2 = git(&path, &["rev-parse", "HEAD"]);

    git(&path, &["checkout", "-q", "-b", "dev"]);
    write(
        &path,
        "apps/dev-only.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dev\n",
    );
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "dev work"]);
    let c3 = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["checkout", "-q", "main"]);

    // Uncommitted edits: a changed tracked file and an untracked one.
    write(&path, "apps/web/deploy.yaml", &deployment(99));
    write(
        &path,
        "apps/untracked.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: untracked\n",
    );
    Fixture {
        _tmp: tmp,
        path,
        c1,
        c2,
        c3,
    }
}

impl Fixture {
    fn open(&self) -> LocalRepository {
        LocalRepository::open(self.path.to_str().unwrap()).unwrap()
    }
}

fn paths(files: &[SourceFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

fn file<'a>(files: &'a [SourceFile], path: &str) -> &'a str {
    let found = files.iter().find(|f| f.path == path).unwrap();
    std::str::from_utf8(&found.content).unwrap()
}

// ---------------------------------------------------------------------------------------
// source

#[test]
fn open_by_path_and_by_file_url() {
    let fx = fixture();
    let by_path = fx.open().resolve(&GitReference::Head).unwrap();
    let url = format!("file://{}", fx.path.display()).replace(' ', "%20");
    let by_url = LocalRepository::open(&url)
        .unwrap()
        .resolve(&GitReference::Head)
        .unwrap();
    assert_eq!(by_path, by_url);
    assert_eq!(by_path.commit, fx.c2);
    assert_eq!(by_path.reference, format!("main@sha1:{}", fx.c2));
    assert_eq!(by_path.to_string(), by_path.reference);
}

#[test]
fn resolves_branches_tags_and_commits() {
    let fx = fixture();
    let repo = fx.open();
    let resolve = |r: GitReference| repo.resolve(&r).unwrap();

    assert_eq!(resolve(GitReference::Branch("main".into())).commit, fx.c2);
    let dev = resolve(GitReference::Branch("dev".into()));
    assert_eq!(dev.commit, fx.c3);
    assert_eq!(dev.reference, format!("dev@sha1:{}", fx.c3));
    assert_eq!(resolve(GitReference::Branch("refs/heads/dev".into())).commit, fx.c3);

    // The annotated tag is its own object; resolution must peel it to the commit.
    let tag_object = git(&fx.path, &["rev-parse", "v1.0.0"]);
    assert_ne!(tag_object, fx.c1);
    let annotated = resolve(GitReference::Tag("v1.0.0".into()));
    assert_eq!(annotated.commit, fx.c1);
    assert_eq!(annotated.reference, format!("v1.0.0@sha1:{}", fx.c1));
    assert_eq!(resolve(GitReference::Tag("light".into())).commit, fx.c1);

    let full = resolve(GitReference::Commit(fx.c1.clone()));
    assert_eq!(full.commit, fx.c1);
    assert_eq!(full.reference, format!("sha1:{}", fx.c1));
    let short = resolve(GitReference::Commit(fx.c3[..7].to_owned()));
    assert_eq!(short.commit, fx.c3);
    let upper = resolve(GitReference::Commit(fx.c2[..10].to_ascii_uppercase()));
    assert_eq!(upper.commit, fx.c2);
}

#[test]
fn branch_falls_back_to_remote_tracking_and_bare_repositories_work() {
    let fx = fixture();
    let tmp = TempDir::new().unwrap();
    let source = fx.path.to_str().unwrap();
    git(tmp.path(), &["clone", "-q", source, "clone"]);
    git(tmp.path(), &["clone", "-q", "--bare", source, "bare.git"]);

    // The clone only has a local `main`; `dev` exists as refs/remotes/origin/dev.
    let clone = LocalRepository::open(tmp.path().join("clone").to_str().unwrap()).unwrap();
    let dev = clone.resolve(&GitReference::Branch("dev".into())).unwrap();
    assert_eq!(dev.commit, fx.c3);

    let bare = LocalRepository::open(tmp.path().join("bare.git").to_str().unwrap()).unwrap();
    let head = bare.resolve(&GitReference::Head).unwrap();
    assert_eq!(head.commit, fx.c2);
    let files = bare.read_files(&head, "apps/web").unwrap();
    assert_eq!(
        paths(&files),
        vec!["apps/web/config/settings.yaml", "apps/web/deploy.yaml"]
    );
}

#[test]
fn read_files_sees_the_revision_not_the_work_tree() {
    let fx = fixture();
    let repo = fx.open();
    let c1 = repo.resolve(&GitReference::Tag("v1.0.0".into())).unwrap();
    let c2 = repo.resolve(&GitReference::Head).unwrap();

    let old = repo.read_files(&c1, "apps").unwrap();
    assert_eq!(
        paths(&old),
        vec!["apps/old.yaml", "apps/web/config/settings.yaml", "apps/web/deploy.yaml"]
    );
    assert!(file(&old, "apps/web/deploy.yaml").contains("replicas: 1\n"));

    // c2 deleted old.yaml and added a symlink (skipped); the work tree's replicas: 99 and
    // untracked file are invisible.
    let new = repo.read_files(&c2, "apps").unwrap();
    assert_eq!(
        paths(&new),
        vec!["apps/web/config/settings.yaml", "apps/web/deploy.yaml"]
    );
    assert_eq!(file(&new, "apps/web/deploy.yaml"), deployment(3));
    let on_disk = fs::read_to_string(fx.path.join("apps/web/deploy.yaml")).unwrap();
    assert!(on_disk.contains("replicas: 99"));

    let dev = repo.resolve(&GitReference::Branch("dev".into())).unwrap();
    assert!(paths(&repo.read_files(&dev, "apps").unwrap()).contains(&"apps/dev-only.yaml"));
}

#[test]
fn read_files_normalizes_the_directory() {
    let fx = fixture();
    let repo = fx.open();
    let head = repo.resolve(&GitReference::Head).unwrap();
    let root = repo.read_files(&head, "").unwrap();
    assert_eq!(
        paths(&root),
        vec!["README.md", "apps/web/config/settings.yaml", "apps/web/deploy.yaml"]
    );
    for dir in [".", "./", "/"] {
        assert_eq!(repo.read_files(&head, dir).unwrap(), root, "dir {dir:?}");
    }
    let web = repo.read_files(&head, "apps/web").unwrap();
    for dir in ["./apps/web/", "apps//web", "/apps/web"] {
        assert_eq!(repo.read_files(&head, dir).unwrap(), web, "dir {dir:?}");
    }
    assert_eq!(
        paths(&repo.read_files(&head, "apps/web/config").unwrap()),
        vec!["apps/web/config/settings.yaml"]
    );
}

#[test]
fn missing_references_say_what_was_tried() {
    let fx = fixture();
    let repo = fx.open();

    let err = repo.resolve(&GitReference::Branch("nope".into())).unwrap_err();
    assert!(matches!(err, SourceError::ReferenceNotFound { .. }), "{err}");
    let msg = err.to_string();
    for needle in [
        "branch \"nope\"",
        "refs/heads/nope",
        "refs/remotes/origin/nope",
        "existing: dev, main",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }

    let msg = repo.resolve(&GitReference::Tag("v9".into())).unwrap_err().to_string();
    assert!(msg.contains("refs/tags/v9"), "{msg}");
    assert!(msg.contains("existing: light, v1.0.0"), "{msg}");

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let err = repo.resolve(&GitReference::Commit(absent.into())).unwrap_err();
    assert!(matches!(err, SourceError::ReferenceNotFound { .. }), "{err}");
    assert!(err.to_string().contains(absent), "{err}");

    for bad in ["xyz", "abc", ""] {
        let err = repo.resolve(&GitReference::Commit(bad.into())).unwrap_err();
        assert!(matches!(err, SourceError::InvalidReference { .. }), "{err}");
    }
    let err = repo.resolve(&GitReference::Branch("a..b".into())).unwrap_err();
    assert!(matches!(err, SourceError::InvalidReference { .. }), "{err}");
}

#[test]
fn missing_directories_name_dir_and_revision() {
    let fx = fixture();
    let repo = fx.open();
    let head = repo.resolve(&GitReference::Head).unwrap();

    let err = repo.read_files(&head, "./apps/nothing/").unwrap_err();
    assert!(matches!(err, SourceError::DirNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"apps/nothing\""), "{msg}");
    assert!(msg.contains(&head.reference), "{msg}");

    // Deleted in c2: present at c1 only.
    let c1 = repo.resolve(&GitReference::Commit(fx.c1.clone())).unwrap();
    assert!(repo.read_files(&c1, "apps/old.yaml").is_err());
    let err = repo.read_files(&head, "apps/web/deploy.yaml").unwrap_err();
    assert!(matches!(err, SourceError::NotADirectory { .. }), "{err}");

    let err = repo.read_files(&head, "../etc").unwrap_err();
    assert!(matches!(err, SourceError::InvalidPath { .. }), "{err}");

    let foreign = Revision {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        reference: "main@sha1:0123456789abcdef0123456789abcdef01234567".into(),
    };
    let err = repo.read_files(&foreign, "").unwrap_err();
    assert!(matches!(err, SourceError::RevisionNotFound { .. }), "{err}");
}

#[test]
fn opening_errors_are_clear() {
    let tmp = TempDir::new().unwrap();
    let plain_dir = tmp.path().join("plain");
    fs::create_dir_all(&plain_dir).unwrap();
    let err = LocalRepository::open(plain_dir.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, SourceError::NotARepository { .. }), "{err}");
    assert!(err.to_string().contains("is not a Git repository"), "{err}");
    assert!(err.to_string().contains(plain_dir.to_str().unwrap()), "{err}");

    let missing = tmp.path().join("missing");
    let err = LocalRepository::open(missing.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    for url in [
        "https://github.com/org/repo.git",
        "ssh://git@github.com/org/repo.git",
        "git@github.com:org/repo.git",
    ] {
        let err = LocalRepository::open(url).unwrap_err();
        assert!(matches!(err, SourceError::Unsupported { .. }), "{url}: {err}");
        assert!(err.to_string().contains("clone it and pass its path"), "{err}");
    }

    // An empty repository has no HEAD commit yet.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    git(&empty, &["init", "-q", "-b", "main"]);
    let err = LocalRepository::open(empty.to_str().unwrap())
        .unwrap()
        .resolve(&GitReference::Head)
        .unwrap_err();
    assert!(matches!(err, SourceError::ReferenceNotFound { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------
// render

fn src(path: &str, content: &str) -> SourceFile {
    SourceFile {
        path: path.to_owned(),
        content: content.as_bytes().to_vec(),
    }
}

fn origin(file: &str, line: u32) -> Origin {
    Origin {
        file: file.to_owned(),
        line,
        document: None,
    }
}

fn summary(manifests: &[Manifest]) -> Vec<(String, String)> {
    manifests
        .iter()
        .map(|m| {
            (
                m.object["metadata"]["name"].as_str().unwrap().to_owned(),
                m.origin.to_string(),
            )
        })
        .collect()
}

const MULTI: &str = "\
# Shop configuration
# (two objects and some noise)

apiVersion: v1
kind: ConfigMap
metadata:
  name: one
data:
  a: \"1\"
---
---
# only a comment here
---

# leading comment of the third document
apiVersion: v1
kind: ConfigMap
metadata:
  name: two
--- # a comment on the marker line
apiVersion: v1
kind: Secret
metadata:
  name: three
...
";

#[test]
fn multi_document_yaml_with_comments_and_empty_documents() {
    let manifests = render_plain(&[src("shop/config.yaml", MULTI)]).unwrap();
    assert_eq!(
        summary(&manifests),
        vec![
            ("one".into(), "shop/config.yaml:4".into()),
            ("two".into(), "shop/config.yaml:16".into()),
            ("three".into(), "shop/config.yaml:21".into()),
        ]
    );
    assert_eq!(manifests[0].object["data"], json!({"a": "1"}));
    assert_eq!(manifests[1].origin, origin("shop/config.yaml", 16));
}

#[test]
fn files_in_path_order_and_others_ignored() {
    let cm = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
    let files = [
        src("z/last.yml", &cm("last")),
        src("a/README.md", "not: yaml: at: all: ["),
        src("a/first.yaml", &cm("first")),
        src(
            "m/middle.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"middle"}}"#,
        ),
        src("a/notes.txt", "whatever"),
        src(".github/workflows/ci.yaml", "on: push\n"),
    ];
    let manifests = Renderer::Plain.render(&files).unwrap();
    assert_eq!(
        summary(&manifests),
        vec![
            ("first".into(), "a/first.yaml:1".into()),
            ("middle".into(), "m/middle.json:1".into()),
            ("last".into(), "z/last.yml:1".into()),
        ]
    );
}

#[test]
fn json_files_and_lists_expand_with_item_lines() {
    let json_list = r#"{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {
      "apiVersion": "v1",
      "kind": "ConfigMap",
      "metadata": {"name": "j1"}
    },
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j2"}}
  ]
}

{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j3"}}
"#;
    let yaml_list = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: y1
# between items
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: y2
    namespace: shop
";
    let manifests = render_plain(&[src("b/list.yaml", yaml_list), src("a/list.json", json_list)]).unwrap();
    assert_eq!(
        summary(&manifests),
        vec![
            ("j1".into(), "a/list.json:5".into()),
            ("j2".into(), "a/list.json:10".into()),
            ("j3".into(), "a/list.json:14".into()),
            ("y1".into(), "b/list.yaml:4".into()),
            ("y2".into(), "b/list.yaml:9".into()),
        ]
    );
    assert_eq!(manifests[4].object["kind"], "Deployment");
    assert!(manifests.iter().all(|m| m.object["kind"] != "List"));
}

#[test]
fn legacy_octal_numbers_parse_like_kubernetes() {
    let pod = "\
apiVersion: v1
kind: Pod
metadata:
  name: octal
spec:
  volumes:
  - name: config
    configMap:
      name: settings
      defaultMode: 0644
      items:
      - key: a
        path: a
        mode: 0755
  quoted: \"0644\"
  decimal: 644
";
    let manifests = render_plain(&[src("pod.yaml", pod)]).unwrap();
    let spec = &manifests[0].object["spec"];
    assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], json!(420));
    assert_eq!(spec["volumes"][0]["configMap"]["items"][0]["mode"], json!(493));
    assert_eq!(spec["quoted"], json!("0644"));
    assert_eq!(spec["decimal"], json!(644));
}

#[test]
fn invalid_yaml_is_reported_at_the_file_line() {
    let text = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: fine
---
# comment
apiVersion: v1
kind: ConfigMap
metadata:
  name: broken
   labels: {}
";
    let err = render_plain(&[src("apps/bad.yaml", text)]).unwrap_err();
    assert!(matches!(err, RenderError::InvalidYaml { .. }), "{err}");
    assert_eq!(err.origin(), Some(&origin("apps/bad.yaml", 11)));
    let msg = err.to_string();
    assert!(msg.starts_with("apps/bad.yaml:11: invalid YAML: "), "{msg}");
    assert!(msg.contains("column"), "{msg}");
}

#[test]
fn invalid_json_is_reported_at_the_file_line() {
    let text = "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"ConfigMap\"\n  \"metadata\": {}\n}\n";
    let err = render_plain(&[src("x/cm.json", text)]).unwrap_err();
    assert!(matches!(err, RenderError::InvalidJson { .. }), "{err}");
    assert_eq!(err.origin(), Some(&origin("x/cm.json", 4)));
    assert!(err.to_string().starts_with("x/cm.json:4: invalid JSON: "), "{err}");
}

#[test]
fn all_problems_are_reported_in_one_pass() {
    let first = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
---
- just
- a list
---
kind: ConfigMap
metadata:
  labels: {}
";
    let second = "\
# same object, other version of the group
apiVersion: apps/v1beta2
kind: Deployment
metadata:
  name: web
  namespace: shop
---
plain string
---
apiVersion: v1
kind: Service
metadata: {name: [oops
";
    let third = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: other
";
    let err = render_plain(&[src("b.yaml", second), src("a.yaml", first), src("c.yaml", third)]).unwrap_err();
    let problems: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 5, "{err}");
    assert!(matches!(err, RenderError::Many { .. }));

    assert!(
        problems[0].starts_with("a.yaml:7: document is a list, not a Kubernetes object"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1]
            .starts_with("a.yaml:10: not a valid Kubernetes object: apiVersion is missing, metadata.name is missing"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("b.yaml:8: document is a string"),
        "{}",
        problems[2]
    );
    assert!(
        problems[3].starts_with("b.yaml:12: invalid YAML: unclosed bracket"),
        "{}",
        problems[3]
    );
    // Same group/kind/namespace/name in a.yaml and b.yaml; c.yaml's namespace differs.
    assert_eq!(
        problems[4],
        "b.yaml:2: Deployment.apps shop/web is declared twice, here and at a.yaml:1; keep only one declaration"
    );
    let RenderError::Duplicate {
        origin: here, first, ..
    } = &err.errors()[4]
    else {
        panic!("expected a duplicate: {err}");
    };
    assert_eq!((here, first), (&origin("b.yaml", 2), &origin("a.yaml", 1)));

    let shown = err.to_string();
    assert!(shown.starts_with("5 problems in the manifests:"), "{shown}");
    for problem in &problems {
        assert!(shown.contains(problem.as_str()), "{shown}");
    }
}

#[test]
fn non_utf8_files_are_reported() {
    let mut content = b"apiVersion: v1\nkind: ConfigMap\n".to_vec();
    content.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let err = render_plain(&[SourceFile {
        path: "bin.yaml".into(),
        content,
    }])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bin.yaml:3: not valid UTF-8; manifests must be UTF-8 text"
    );
}

#[test]
fn empty_inputs_render_nothing() {
    assert!(render_plain(&[]).unwrap().is_empty());
    let files = [
        src("empty.yaml", ""),
        src("comments.yaml", "# nothing\n---\n# here\n"),
        src("null.json", "null"),
    ];
    assert!(render_plain(&files).unwrap().is_empty());
}

#[test]
fn git_to_manifests_end_to_end() {
    let fx = fixture();
    let repo = fx.open();
    let head = repo.resolve(&GitReference::Head).unwrap();
    let manifests = render_plain(&repo.read_files(&head, "./apps").unwrap()).unwrap();
    assert_eq!(
        summary(&manifests),
        vec![
            ("settings".into(), "apps/web/config/settings.yaml:1".into()),
            ("web".into(), "apps/web/deploy.yaml:2".into()),
        ]
    );
    assert_eq!(manifests[1].object["spec"]["replicas"], json!(3));
}
