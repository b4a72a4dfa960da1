//! Kustomize rendering: `kustomize build` (or `kubectl kustomize`) over a checkout, in the
//! [`sandbox`](super::sandbox).
//!
//! Before anything runs, every kustomization reachable from the entry is read and any remote
//! reference (a URL, `git@host:`, `github.com/...`, `?ref=`) or any base leaving the checkout
//! is refused: the tool would otherwise fetch it over the network or read the machine's files.
//! Files are confined by `--load-restrictor LoadRestrictionsRootOnly`; Helm charts and exec
//! plugins stay disabled (the tool's defaults). The output is parsed like plain YAML and sorted,
//! so one revision always renders the same manifests in the same order.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::helm::Scratch;
use super::sandbox::{self, Invocation, Limits};
use super::{Manifest, Origin, RenderError};
use crate::source::{SourceFile, normalize_dir};

/// The file names kustomize recognizes, in its order of preference.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields whose entries name resources, bases or components: files or directories.
const PATH_LISTS: [&str; 7] = [
    "resources",
    "bases",
    "components",
    "crds",
    "generators",
    "transformers",
    "validators",
];

/// Renders the kustomization in `dir` (relative to the checkout `root`).
///
/// Uses `kustomize build` when `kustomize` is installed, else `kubectl kustomize`. Manifests
/// are sorted by apiVersion, kind, namespace and name; each origin names the file the object
/// came from (a resource file, or for generated objects the kustomization declaring the
/// generator), recorded by kustomize's origin annotations, which are then removed.
pub fn render_kustomize(root: &Path, dir: &str, limits: &Limits) -> Result<Vec<Manifest>, RenderError> {
    let tool_error = |entry: &str, message: String| RenderError::Tool {
        entry: entry.to_owned(),
        message,
    };
    let dir = normalize_dir(dir).map_err(|e| tool_error(dir, e.to_string()))?;
    let root = root
        .canonicalize()
        .map_err(|e| tool_error(&dir, format!("checkout {} is not readable: {e}", root.display())))?;
    let entry_dir = root.join(&dir);
    let entry = match kustomization_file(&entry_dir) {
        Some(file) => join_repo_path(&dir, file),
        None => {
            return Err(tool_error(
                if dir.is_empty() { "." } else { &dir },
                format!(
                    "no kustomization here: expected one of {}; use another render type or add one",
                    KUSTOMIZATION_FILES.join(", ")
                ),
            ));
        }
    };

    check_references(&root, &entry_dir)?;

    let (program, mut args): (PathBuf, Vec<OsString>) = if let Some(kustomize) = sandbox::find_program("kustomize") {
        (kustomize, vec!["build".into()])
    } else if let Some(kubectl) = sandbox::find_program("kubectl") {
        (kubectl, vec!["kustomize".into()])
    } else {
        return Err(tool_error(
            &entry,
            "neither kustomize nor kubectl is installed; install one to render kustomizations".to_owned(),
        ));
    };
    // Build a wrapper kustomization beside the checkout's files that adds origin annotations
    // (kustomize's `buildMetadata: [originAnnotations]`): each object then names the file it
    // came from. The wrapper only lists the entry, so the output is otherwise the same.
    let wrapper = Scratch::in_dir(&root, ".driftguard-origins")
        .map_err(|e| tool_error(&entry, format!("cannot create the origins kustomization: {e}")))?;
    let wrapper_dir = wrapper
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = if dir.is_empty() {
        "..".to_owned()
    } else {
        format!("../{dir}")
    };
    let text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\nbuildMetadata: [originAnnotations]\n",
        serde_json::Value::String(target)
    );
    std::fs::write(wrapper.path.join("kustomization.yaml"), text)
        .map_err(|e| tool_error(&entry, format!("cannot write the origins kustomization: {e}")))?;
    args.extend([
        "--load-restrictor".into(),
        "LoadRestrictionsRootOnly".into(),
        wrapper_dir.clone().into(),
    ]);
    let output = sandbox::run(&Invocation {
        program: &program,
        args,
        cwd: &root,
        root: &root,
        env: Vec::new(),
        limits: *limits,
    })
    .map_err(|e| tool_error(&entry, e.to_string()))?;
    drop(wrapper);

    parse_output(&entry, &wrapper_dir, output)
}

/// The annotation `buildMetadata: [originAnnotations]` adds.
const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// Parses the tool's YAML stream into sorted manifests. Each origin is the file the object
/// came from (its `config.kubernetes.io/origin`, a path relative to `build_dir`, the
/// repository-relative directory that was built; the annotation is removed), else the entry
/// and the object's 1-based position in the sorted output. Pure.
fn parse_output(entry: &str, build_dir: &str, output: Vec<u8>) -> Result<Vec<Manifest>, RenderError> {
    let mut manifests = super::plain::render(&[SourceFile {
        path: entry.to_owned(),
        content: output,
    }])?;
    manifests.sort_by(|a, b| sort_key(&a.object).cmp(&sort_key(&b.object)));
    for (index, manifest) in manifests.iter_mut().enumerate() {
        manifest.fields = Default::default();
        manifest.origin = match take_origin(&mut manifest.object).and_then(|origin| origin_file(build_dir, &origin)) {
            Some(file) => Origin {
                file,
                line: 0,
                document: None,
            },
            None => Origin {
                file: entry.to_owned(),
                line: 0,
                document: Some(u32::try_from(index + 1).unwrap_or(u32::MAX)),
            },
        };
    }
    Ok(manifests)
}

/// Removes the origin annotation from `object` (and `annotations` if that leaves it empty),
/// returning its text.
fn take_origin(object: &mut Value) -> Option<String> {
    let metadata = object.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let origin = annotations.remove(ORIGIN_ANNOTATION)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    origin.as_str().map(str::to_owned)
}

/// The repository path an origin annotation names: `path` (a resource file) or
/// `configuredIn` (the kustomization of a generator), relative to `build_dir`. `None` for
/// remote origins (`repo`) and paths leaving the repository.
fn origin_file(build_dir: &str, annotation: &str) -> Option<String> {
    let origin: Value = serde_saphyr::from_str(annotation).ok()?;
    if origin.get("repo").is_some() {
        return None;
    }
    let relative = origin
        .get("path")
        .or_else(|| origin.get("configuredIn"))
        .and_then(Value::as_str)?;
    let mut parts: Vec<&str> = build_dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn sort_key(object: &Value) -> [&str; 4] {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    [
        text("/apiVersion"),
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name"),
    ]
}

fn kustomization_file(dir: &Path) -> Option<&'static str> {
    KUSTOMIZATION_FILES.into_iter().find(|name| dir.join(name).is_file())
}

fn join_repo_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Walks every kustomization reachable from `start` and refuses remote references and bases
/// outside the checkout `root` (canonical).
fn check_references(root: &Path, start: &Path) -> Result<(), RenderError> {
    let mut pending = VecDeque::from([start.to_owned()]);
    let mut seen = BTreeSet::new();
    while let Some(dir) = pending.pop_front() {
        let Ok(dir) = dir.canonicalize() else { continue };
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Some(file) = kustomization_file(&dir) else { continue };
        let path = dir.join(file);
        let shown = path
            .strip_prefix(root)
            .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
        let refuse = |message: String| RenderError::Tool {
            entry: shown.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| refuse(format!("cannot read it: {e}")))?;
        let value: Value = serde_saphyr::from_str(&text).map_err(|e| refuse(format!("invalid YAML: {e}")))?;
        for reference in references(&value) {
            let entry = reference.value;
            if looks_remote(entry) {
                return Err(refuse(format!(
                    "{} entry {entry:?} is a remote reference; remote bases are not allowed (renders \
                     have no network): vendor it into this repository",
                    reference.field
                )));
            }
            if !reference.local_path {
                continue;
            }
            let target = dir.join(entry);
            if !lexically_inside(&dir, entry, root) {
                return Err(refuse(format!(
                    "{} entry {entry:?} leaves the repository; only paths inside the checkout are allowed",
                    reference.field
                )));
            }
            match target.canonicalize() {
                Ok(resolved) if !resolved.starts_with(root) => {
                    return Err(refuse(format!(
                        "{} entry {entry:?} leaves the repository; only paths inside the checkout are \
                         allowed",
                        reference.field
                    )));
                }
                Ok(resolved) if reference.may_be_kustomization && resolved.is_dir() => pending.push_back(resolved),
                Ok(_) => {}
                // Missing: the tool reports it with its own message, without going remote
                // (remote-looking names were refused above).
                Err(_) => {}
            }
        }
    }
    Ok(())
}

/// One string of a kustomization that names something to load.
struct Reference<'a> {
    field: &'static str,
    value: &'a str,
    /// A path relative to the kustomization (else only checked for URLs, e.g. a chart repo).
    local_path: bool,
    /// May name a directory holding another kustomization.
    may_be_kustomization: bool,
}

fn references(kustomization: &Value) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    let strings = |field: &str| -> Vec<&Value> {
        kustomization
            .get(field)
            .and_then(Value::as_array)
            .map(|list| list.iter().collect())
            .unwrap_or_default()
    };
    for field in PATH_LISTS {
        for item in strings(field) {
            // generators/transformers may hold inline objects: only strings are paths.
            if let Some(value) = item.as_str() {
                out.push(Reference {
                    field,
                    value,
                    local_path: true,
                    may_be_kustomization: true,
                });
            }
        }
    }
    for (field, key) in [("patches", "path"), ("patchesJson6902", "path")] {
        for item in strings(field) {
            if let Some(value) = item.get(key).and_then(Value::as_str) {
                out.push(Reference {
                    field,
                    value,
                    local_path: true,
                    may_be_kustomization: false,
                });
            }
        }
    }
    for item in strings("patchesStrategicMerge") {
        // Either a file path or an inline patch (multi-line YAML).
        if let Some(value) = item.as_str().filter(|v| !v.contains('\n')) {
            out.push(Reference {
                field: "patchesStrategicMerge",
                value,
                local_path: true,
                may_be_kustomization: false,
            });
        }
    }
    for item in strings("helmCharts") {
        for key in ["repo", "name", "chartHome"] {
            if let Some(value) = item.get(key).and_then(Value::as_str) {
                out.push(Reference {
                    field: "helmCharts",
                    value,
                    local_path: false,
                    may_be_kustomization: false,
                });
            }
        }
    }
    out
}

/// Whether a kustomization entry names something remote (kustomize would fetch it).
fn looks_remote(entry: &str) -> bool {
    let entry = entry.trim();
    let lower = entry.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git@")
        || lower.contains("?ref=")
        || lower.contains("?version=")
        || lower.contains("?timeout=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/"]
            .iter()
            .any(|host| lower.starts_with(host))
        // go-getter style `host/org/repo//path`
        || (!lower.starts_with('.') && !lower.starts_with('/') && lower.contains("//"))
        // scp-like `user@host:path`
        || lower.split_once(':').is_some_and(|(before, _)| before.contains('@'))
}

/// Whether `entry`, relative to `dir`, stays inside `root` by its `..` components alone
/// (symlinks are checked by canonicalizing).
fn lexically_inside(dir: &Path, entry: &str, root: &Path) -> bool {
    if Path::new(entry).is_absolute() {
        return false;
    }
    let joined = dir.join(entry);
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.len() <= 1 {
                    return false;
                }
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_entries() {
        for remote in [
            "https://github.com/org/repo//deploy?ref=v1",
            "http://example.com/x.yaml",
            "git@github.com:org/repo.git",
            "ssh://git@host/repo",
            "github.com/org/repo/deploy?ref=main",
            "example.com/org/repo//deploy",
            "../base?ref=v1",
        ] {
            assert!(looks_remote(remote), "{remote}");
        }
        for local in ["../../base", "deployment.yaml", "./components/x", "base"] {
            assert!(!looks_remote(local), "{local}");
        }
    }

    #[test]
    fn references_found() {
        let k = json!({
            "resources": ["a.yaml", "../base"],
            "components": ["c"],
            "patches": [{"path": "p.yaml"}, {"patch": "inline"}],
            "patchesStrategicMerge": ["s.yaml", "apiVersion: v1\nkind: X\n"],
            "helmCharts": [{"name": "x", "repo": "https://charts.example.com"}],
            "generators": [{"apiVersion": "inline"}],
        });
        let found: Vec<&str> = references(&k).iter().map(|r| r.value).collect();
        assert_eq!(
            found,
            [
                "a.yaml",
                "../base",
                "c",
                "p.yaml",
                "s.yaml",
                "https://charts.example.com",
                "x"
            ]
        );
    }

    #[test]
    fn lexical_escape() {
        let root = Path::new("/r");
        assert!(lexically_inside(Path::new("/r/a/b"), "../../c", root));
        assert!(!lexically_inside(Path::new("/r/a/b"), "../../../c", root));
        assert!(!lexically_inside(Path::new("/r/a"), "/etc", root));
    }

    #[test]
    fn origin_annotations_name_repository_files_and_are_removed() {
        assert_eq!(
            origin_file(".w", "path: ../apps/base/deployment.yaml\n").as_deref(),
            Some("apps/base/deployment.yaml")
        );
        let generated = "configuredIn: ../apps/kustomization.yaml\nconfiguredBy:\n  kind: ConfigMapGenerator\n";
        assert_eq!(origin_file(".w", generated).as_deref(), Some("apps/kustomization.yaml"));
        assert_eq!(origin_file(".w", "repo: https://example.com/x\npath: a.yaml\n"), None);
        assert_eq!(origin_file(".w", "path: ../../outside.yaml\n"), None);

        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  annotations:\n    config.kubernetes.io/origin: |\n      path: ../apps/svc.yaml\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n    keep: me\n    config.kubernetes.io/origin: |\n      path: ../apps/cm.yaml\n";
        let manifests = parse_output("apps/kustomization.yaml", ".w", yaml.as_bytes().to_vec()).unwrap();
        let origins: Vec<String> = manifests.iter().map(|m| m.origin.to_string()).collect();
        assert_eq!(origins, ["apps/cm.yaml", "apps/svc.yaml"]);
        assert_eq!(
            manifests[0].object["metadata"]["annotations"],
            serde_json::json!({"keep": "me"})
        );
        assert!(manifests[1].object["metadata"].get("annotations").is_none());
    }

    #[test]
    fn output_sorted_with_origins() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let manifests = parse_output("k/kustomization.yaml", "k", yaml.as_bytes().to_vec()).unwrap();
        let kinds: Vec<&str> = manifests.iter().map(|m| m.object["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Deployment", "ConfigMap", "Service"]);
        assert_eq!(manifests[2].origin.to_string(), "k/kustomization.yaml (document 3)");
    }
}
