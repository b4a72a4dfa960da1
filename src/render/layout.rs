//! How a plain directory is read, the way Flux reads one (pure: it looks at paths only).
//!
//! A directory without a kustomization file is every manifest in it and below; a subdirectory
//! that has its own kustomization file is built with kustomize (and its files are not read as
//! manifests); a subdirectory that is a Helm chart (`Chart.yaml`) is not manifests either.
//! Tool files (`kustomization.yaml`, `Chart.yaml`, `values*.yaml`, ...) are never manifests.

use std::collections::BTreeMap;

use crate::source::SourceFile;

use super::KUSTOMIZATION_FILES;

/// YAML and JSON files that configure tools, never objects for the cluster.
fn is_tool_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    KUSTOMIZATION_FILES.contains(&name)
        || matches!(
            lower.as_str(),
            "chart.yaml" | "chart.lock" | "values.schema.json" | "kustomizeconfig.yaml" | ".sops.yaml"
        )
        || (lower.starts_with("values") && (lower.ends_with(".yaml") || lower.ends_with(".yml")))
}

/// What a plain directory holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlainLayout<'a> {
    /// Manifest files read as they are.
    pub files: Vec<&'a SourceFile>,
    /// Subdirectories (repository-relative) built with kustomize, outermost only.
    pub kustomize_dirs: Vec<String>,
    /// Subdirectories holding a Helm chart, left out.
    pub chart_dirs: Vec<String>,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// True when `path` is `dir` or below it.
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// Split the files of the plain directory `dir` (repository-relative) into manifests,
/// kustomize subdirectories and chart subdirectories.
pub fn plain_layout<'a>(files: &'a [SourceFile], dir: &str) -> PlainLayout<'a> {
    let dir = dir.trim_matches('/');
    let marked = |names: &[&str]| -> Vec<String> {
        let mut dirs: Vec<String> = files
            .iter()
            .filter(|f| names.contains(&file_name(&f.path)))
            .map(|f| parent(&f.path).to_owned())
            .filter(|d| d != dir && under(d, dir))
            .collect();
        dirs.sort();
        dirs.dedup();
        // Outermost only: a kustomization below another is the outer one's business.
        let outer: Vec<String> = dirs
            .iter()
            .filter(|d| !dirs.iter().any(|o| o != *d && under(d, o)))
            .cloned()
            .collect();
        outer
    };
    let kustomize_dirs = marked(&KUSTOMIZATION_FILES);
    let chart_dirs = marked(&["Chart.yaml"]);
    let files = files
        .iter()
        .filter(|f| !is_tool_file(file_name(&f.path)))
        .filter(|f| !kustomize_dirs.iter().chain(&chart_dirs).any(|d| under(&f.path, d)))
        .collect();
    PlainLayout {
        files,
        kustomize_dirs,
        chart_dirs,
    }
}

/// The Jsonnet entry users expect in `dir` when none is configured: `main.jsonnet`, else the
/// only top-level `.jsonnet` file. Only for directories with no YAML or JSON manifests at
/// their top level (those are plain directories).
pub fn detect_jsonnet_entry(files: &[SourceFile], dir: &str) -> Option<String> {
    let dir = dir.trim_matches('/');
    let top: Vec<&str> = files
        .iter()
        .filter(|f| parent(&f.path) == dir)
        .map(|f| file_name(&f.path))
        .collect();
    let manifests = top
        .iter()
        .any(|n| [".yaml", ".yml", ".json"].iter().any(|e| n.ends_with(e)) && !is_tool_file(n));
    if manifests {
        return None;
    }
    if top.contains(&"main.jsonnet") {
        return Some("main.jsonnet".to_owned());
    }
    let mut jsonnet = top.iter().filter(|n| n.ends_with(".jsonnet"));
    match (jsonnet.next(), jsonnet.next()) {
        (Some(only), None) => Some((*only).to_owned()),
        _ => None,
    }
}

/// What `dir` holds, for the error of an empty render: "3 .jsonnet files, 1 .md file".
pub fn describe_files(files: &[SourceFile], dir: &str) -> String {
    let dir = dir.trim_matches('/');
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for file in files.iter().filter(|f| under(&f.path, dir)) {
        let name = file_name(&file.path);
        let kind = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => format!(".{ext}"),
            _ => name.to_owned(),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    if by_kind.is_empty() {
        return "no files".to_owned();
    }
    by_kind
        .iter()
        .map(|(kind, n)| format!("{n} {kind} file{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::choose_tests::files;
    use super::*;

    #[test]
    fn flux_layout_kustomize_subdirs_and_tool_files() {
        let all = files(&[
            "clusters/prod/namespace.yaml",
            "clusters/prod/apps/kustomization.yaml",
            "clusters/prod/apps/deployment.yaml",
            "clusters/prod/apps/base/kustomization.yaml",
            "clusters/prod/infra/values-prod.yaml",
            "clusters/prod/infra/configmap.yaml",
            "clusters/prod/chart/Chart.yaml",
            "clusters/prod/chart/templates/job.yaml",
            "clusters/prod/Chart.lock",
        ]);
        let layout = plain_layout(&all, "clusters/prod");
        let paths: Vec<&str> = layout.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["clusters/prod/namespace.yaml", "clusters/prod/infra/configmap.yaml"]
        );
        assert_eq!(layout.kustomize_dirs, ["clusters/prod/apps"]);
        assert_eq!(layout.chart_dirs, ["clusters/prod/chart"]);
    }

    #[test]
    fn jsonnet_entries_are_detected_as_users_expect() {
        assert_eq!(
            detect_jsonnet_entry(&files(&["j/main.jsonnet", "j/lib.jsonnet"]), "j").as_deref(),
            Some("main.jsonnet")
        );
        assert_eq!(
            detect_jsonnet_entry(&files(&["j/app.jsonnet", "j/lib/x.libsonnet"]), "j").as_deref(),
            Some("app.jsonnet")
        );
        assert_eq!(detect_jsonnet_entry(&files(&["j/a.jsonnet", "j/b.jsonnet"]), "j"), None);
        assert_eq!(
            detect_jsonnet_entry(&files(&["j/main.jsonnet", "j/cm.yaml"]), "j"),
            None
        );
        assert_eq!(
            describe_files(&files(&["j/a.jsonnet", "j/b.jsonnet", "j/README.md"]), "j"),
            "2 .jsonnet files, 1 .md file"
        );
    }
}
