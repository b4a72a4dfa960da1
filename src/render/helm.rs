//! Helm rendering: `helm template` over a chart in the checkout, offline and bounded.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::documents;
use super::plain::{self, Generated};
use super::sandbox::{self, Invocation, Limits, SandboxError};
use super::{Manifest, Origin, RenderError};

/// How one chart is rendered (from the Guard).
#[derive(Debug, Clone, PartialEq)]
pub struct HelmOptions {
    /// The release name (`.Release.Name`).
    pub release: String,
    /// The release namespace (`--namespace`, `.Release.Namespace`).
    pub namespace: String,
    /// Values files, relative to the chart directory (`values-prod.yaml`,
    /// `../shared/prod.yaml`), `/`-separated; each must stay inside the checkout. Passed as
    /// `--values` in order, later ones winning, after the chart's own `values.yaml`.
    pub values_files: Vec<String>,
    /// Inline values from the Guard, a mapping (or null for none); they win over every
    /// values file.
    pub values: Value,
    /// `--kube-version` (`.Capabilities.KubeVersion`), e.g. `v1.31.0`.
    pub kube_version: Option<String>,
    /// `--api-versions` (`.Capabilities.APIVersions`), e.g. `monitoring.coreos.com/v1`.
    pub api_versions: Vec<String>,
}

/// Renders the chart at `chart_dir` (repository-relative, inside `root`, the checkout) with
/// `helm template <release> <chart> --namespace <ns>`, run as `helm` through
/// [`sandbox::run`] within `limits`.
///
/// - Values: the files of [`HelmOptions::values_files`] as `--values`, then the inline
///   [`HelmOptions::values`] written to a temporary file passed as the last `--values` (no
///   `--set` escaping to get wrong). `--kube-version` and `--api-versions` are passed when
///   set. Helm's config, cache and data directories point to an empty scratch directory, so
///   no user repositories or registry credentials are read.
/// - Dependencies must be vendored: a dependency that `Chart.yaml` declares but that is not
///   under the chart's `charts/` (as a chart directory or a `.tgz`) is refused before Helm
///   runs; nothing is ever downloaded.
/// - Hooks (`helm.sh/hook`: tests, pre-install jobs, ...) are kept here and left out of the
///   desired state with a notice, as every renderer's hooks are (see `DesiredSet`).
/// - Each manifest's origin is the template that produced it, from Helm's `# Source:`
///   comment, mapped to a repository path (`<chart_dir>/templates/x.yaml`,
///   `<chart_dir>/charts/dep/templates/y.yaml`), with the 1-based index of its document
///   within that template's output; without a `# Source:`, the chart directory. Manifests are sorted by
///   origin, so equal inputs give equal output.
///
/// Helm's failures (template errors, invalid values) are [`RenderError::Helm`] with Helm's
/// message; the documents are then checked as plain ones are (see
/// [`super::render_plain`]).
pub fn render_helm(
    helm: &Path,
    root: &Path,
    chart_dir: &str,
    options: &HelmOptions,
    limits: &Limits,
) -> Result<Vec<Manifest>, RenderError> {
    let chart = chart_dir.trim_end_matches('/').to_owned();
    let fail = |message: String| RenderError::Helm {
        chart: chart.clone(),
        message,
    };
    let chart_rel = relative_path(Path::new(""), &chart).map_err(&fail)?;
    let chart_path = root.join(&chart_rel);
    check_inside(root, &chart_path).map_err(&fail)?;
    let chart_yaml = std::fs::read_to_string(chart_path.join("Chart.yaml"))
        .map_err(|err| fail(format!("cannot read {chart}/Chart.yaml: {err}")))?;
    check_vendored(&chart_path, &chart_yaml).map_err(&fail)?;

    let mut args: Vec<OsString> = vec![
        "template".into(),
        options.release.clone().into(),
        chart_path.clone().into(),
        "--namespace".into(),
        options.namespace.clone().into(),
    ];
    for file in &options.values_files {
        let rel = relative_path(&chart_rel, file).map_err(&fail)?;
        let path = root.join(rel);
        check_inside(root, &path).map_err(&fail)?;
        if !path.is_file() {
            return Err(fail(format!("values file {file} not found in the chart directory")));
        }
        args.push("--values".into());
        args.push(path.into());
    }
    let scratch = Scratch::new().map_err(|err| fail(format!("cannot create a scratch directory: {err}")))?;
    match &options.values {
        Value::Null => {}
        Value::Object(map) if map.is_empty() => {}
        Value::Object(_) => {
            let file = scratch.path.join("inline-values.json");
            let text = serde_json::to_vec(&options.values).map_err(|err| fail(err.to_string()))?;
            std::fs::write(&file, text).map_err(|err| fail(format!("cannot write the inline values: {err}")))?;
            args.push("--values".into());
            args.push(file.into());
        }
        other => {
            return Err(fail(format!(
                "inline values must be a mapping, found {}",
                match other {
                    Value::Array(_) => "a list",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                }
            )));
        }
    }
    if let Some(version) = &options.kube_version {
        args.push("--kube-version".into());
        args.push(version.into());
    }
    for api in &options.api_versions {
        args.push("--api-versions".into());
        args.push(api.into());
    }

    let home = |name: &str| scratch.path.join(name).to_string_lossy().into_owned();
    let invocation = Invocation {
        program: helm,
        args,
        cwd: &chart_path,
        root,
        env: vec![
            ("HELM_CACHE_HOME".to_owned(), home("cache")),
            ("HELM_CONFIG_HOME".to_owned(), home("config")),
            ("HELM_DATA_HOME".to_owned(), home("data")),
        ],
        limits: *limits,
    };
    let output = sandbox::run(&invocation).map_err(|err| fail(sandbox_message(err)))?;
    drop(scratch);
    let text = String::from_utf8(output).map_err(|_| fail("helm printed output that is not UTF-8".to_owned()))?;

    // Documents are numbered within their template, as a reader of that file counts them.
    let mut per_file: HashMap<String, u32> = HashMap::new();
    let generated: Vec<Generated<'_>> = documents::split(&text)
        .into_iter()
        .filter(|document| document.content_line.is_some())
        .map(|document| {
            let file = source_of(document.text)
                .and_then(|source| repo_path(&chart, source))
                .unwrap_or_else(|| chart.clone());
            let count = per_file.entry(file.clone()).or_insert(0);
            *count = count.saturating_add(1);
            let index = *count;
            Generated {
                text: document.text,
                origin: Origin {
                    file,
                    line: 0,
                    document: Some(index),
                },
            }
        })
        .collect();
    let mut manifests = plain::parse_generated(generated)?;
    manifests.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(manifests)
}

fn sandbox_message(err: SandboxError) -> String {
    match err {
        SandboxError::Failed { stderr, status, .. } => {
            let stderr = stderr.trim();
            if stderr.is_empty() {
                format!("helm exited with {status}")
            } else {
                stderr.strip_prefix("Error: ").unwrap_or(stderr).to_owned()
            }
        }
        other => other.to_string(),
    }
}

/// `base` joined with the `/`-separated relative `path`, `..` resolved lexically; refused
/// when absolute or when it climbs above the checkout root.
fn relative_path(base: &Path, path: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!("{path} is outside the checkout"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path} must be relative to the checkout, not absolute"));
            }
        }
    }
    Ok(out)
}

/// Refuses a path whose symbolic links lead outside the checkout.
fn check_inside(root: &Path, path: &Path) -> Result<(), String> {
    let root = root
        .canonicalize()
        .map_err(|err| format!("cannot read the checkout {}: {err}", root.display()))?;
    match path.canonicalize() {
        Ok(real) if real.starts_with(&root) => Ok(()),
        Ok(_) => Err(format!("{} leads outside the checkout", path.display())),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

/// Refuses a chart whose `Chart.yaml` declares a dependency that is not vendored under
/// `charts/`: Helm would need a repository download.
fn check_vendored(chart_path: &Path, chart_yaml: &str) -> Result<(), String> {
    let metadata: Value = serde_saphyr::from_str(chart_yaml).map_err(|err| format!("invalid Chart.yaml: {err}"))?;
    let declared: Vec<&str> = metadata
        .get("dependencies")
        .and_then(Value::as_array)
        .map(|deps| {
            deps.iter()
                .filter_map(|dep| dep.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if declared.is_empty() {
        return Ok(());
    }
    let vendored = vendored_charts(&chart_path.join("charts"));
    let missing: Vec<&str> = declared.into_iter().filter(|name| !vendored.contains(*name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "dependenc{} {} declared in Chart.yaml but not vendored under charts/; driftguard never \
         downloads chart dependencies: run `helm dependency build` and commit charts/",
        if missing.len() == 1 { "y" } else { "ies" },
        missing.join(", ")
    ))
}

/// Names of the charts under `charts/`: directories by their `Chart.yaml` name (or their own
/// name), archives by their file name less `-<version>.tgz`.
fn vendored_charts(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if path.join("Chart.yaml").is_file() {
            let name = std::fs::read_to_string(path.join("Chart.yaml"))
                .ok()
                .and_then(|text| serde_saphyr::from_str::<Value>(&text).ok())
                .and_then(|meta| meta.get("name").and_then(Value::as_str).map(str::to_owned));
            names.insert(name.unwrap_or_else(|| file_name.clone()));
            names.insert(file_name);
        } else if let Some(stem) = file_name.strip_suffix(".tgz") {
            names.insert(stem.rsplit_once('-').map_or(stem, |(name, _version)| name).to_owned());
        }
    }
    names
}

/// The path of Helm's `# Source: <chart name>/templates/x.yaml` comment, if any.
fn source_of(document: &str) -> Option<&str> {
    document
        .lines()
        .map(str::trim)
        .take_while(|line| line.is_empty() || line.starts_with('#') || *line == "---")
        .find_map(|line| line.strip_prefix("# Source: "))
        .map(str::trim)
}

/// Maps a chart-relative source (`web/templates/x.yaml`, whose first part is the chart's
/// name) to a repository path under `chart_dir`.
fn repo_path(chart_dir: &str, source: &str) -> Option<String> {
    let (_chart_name, rest) = source.split_once('/')?;
    if rest.split('/').any(|part| part == ".." || part.is_empty()) {
        return None;
    }
    Some(if chart_dir.is_empty() || chart_dir == "." {
        rest.to_owned()
    } else {
        format!("{chart_dir}/{rest}")
    })
}

/// A private temporary directory, removed when dropped.
pub(super) struct Scratch {
    pub(super) path: PathBuf,
}

impl Scratch {
    fn new() -> std::io::Result<Self> {
        Self::in_dir(&std::env::temp_dir(), "driftguard-helm")
    }

    /// A fresh directory named `<prefix>-...` in `parent`.
    pub(super) fn in_dir(parent: &Path, prefix: &str) -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_map_to_repository_paths() {
        let doc = "---\n# Source: web/templates/a.yaml\napiVersion: v1\n";
        assert_eq!(source_of(doc), Some("web/templates/a.yaml"));
        assert_eq!(source_of("apiVersion: v1\n# Source: x/y\n"), None);
        assert_eq!(
            repo_path("apps/web", "web/charts/cache/templates/c.yaml").as_deref(),
            Some("apps/web/charts/cache/templates/c.yaml")
        );
        assert_eq!(repo_path("apps/web", "web/../../etc"), None);
    }

    #[test]
    fn relative_paths_stay_in_the_checkout() {
        let chart = Path::new("apps/web");
        assert_eq!(
            relative_path(chart, "../shared/prod.yaml").unwrap(),
            PathBuf::from("apps/shared/prod.yaml")
        );
        assert!(relative_path(chart, "../../../x").is_err());
        assert!(relative_path(chart, "/etc/passwd").is_err());
    }
}
