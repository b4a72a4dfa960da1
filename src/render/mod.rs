//! Rendering: the files of a revision become Kubernetes manifests, each remembering the
//! `file:line` that declares it (admission messages point people there).
//!
//! Plain YAML/JSON is parsed here, purely. Kustomize ([`kustomize`]) and Helm ([`helm`]) run as
//! sandboxed child processes ([`sandbox`]) on a checkout of the revision, Jsonnet ([`jsonnet`])
//! in process; [`choose`] picks one for a Guard's path. Every renderer has the same contract:
//! manifests with origins out, sorted, every problem reported at once.

mod documents;
mod fields;
pub mod helm;
mod json;
pub mod jsonnet;
pub mod kustomize;
pub mod layout;
mod plain;
pub mod sandbox;

use std::fmt;

pub use fields::FieldLines;

use crate::source::SourceFile;

/// How many problems a [`RenderError::Many`] message lists before summarizing the rest.
const MAX_LISTED_ERRORS: usize = 50;

/// Where in Git an object is declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// Repository-relative path of the file, `/`-separated.
    pub file: String,
    /// 1-based line where the object starts: the first content line of its document (after
    /// any `---` and comments), or of its entry in a `List`'s `items`.
    pub line: u32,
    /// For generated manifests (Kustomize, Helm, Jsonnet): `file` is the entry (the
    /// kustomization, the chart and its values files, the Jsonnet file) and this the 1-based
    /// index of the object in the renderer's output; `line` is then 0.
    pub document: Option<u32>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(document) => write!(f, "{} (document {document})", self.file),
            None if self.line == 0 => f.write_str(&self.file),
            None => write!(f, "{}:{}", self.file, self.line),
        }
    }
}

/// One object declared in Git.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The object as written (a mapping with at least apiVersion, kind and metadata.name).
    pub object: serde_json::Value,
    /// Where it is declared.
    pub origin: Origin,
    /// Where its fields are written (plain YAML files; empty otherwise).
    pub fields: FieldLines,
}

impl Manifest {
    /// `object` declared at `origin`, field lines unknown.
    pub fn new(object: serde_json::Value, origin: Origin) -> Self {
        Manifest {
            object,
            origin,
            fields: FieldLines::default(),
        }
    }
}

/// The ways of turning a directory of source files into manifests (the Guard's
/// `render.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Renderer {
    /// YAML and JSON files as they are; see [`render_plain`].
    Plain,
}

impl Renderer {
    /// Renders `files` (as read from one directory at one revision).
    pub fn render(&self, files: &[SourceFile]) -> Result<Vec<Manifest>, RenderError> {
        match self {
            Renderer::Plain => render_plain(files),
        }
    }
}

/// Renders every `*.yaml`, `*.yml` and `*.json` file in path order, each possibly holding
/// several documents (`---` in YAML, concatenated values in JSON). Hidden files and
/// directories are skipped, as are other extensions; empty and comment-only documents are
/// skipped; `List` documents expand into their items.
///
/// YAML follows Kubernetes' reading: `0644` is octal (420). Every problem in every file is
/// reported in one error ([`RenderError::Many`] when there are several).
pub fn render_plain(files: &[SourceFile]) -> Result<Vec<Manifest>, RenderError> {
    plain::render(files)
}

/// [`render_plain`] over a selection of files (see [`layout::plain_layout`]).
pub fn render_plain_files<'a>(files: impl IntoIterator<Item = &'a SourceFile>) -> Result<Vec<Manifest>, RenderError> {
    plain::render(files)
}

/// A problem with the manifests; each names the `file:line` to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The file is not UTF-8 text.
    #[error("{origin}: not valid UTF-8; manifests must be UTF-8 text")]
    NotUtf8 {
        /// The file and the line of the first invalid byte.
        origin: Origin,
    },
    /// A YAML syntax error.
    #[error("{origin}: invalid YAML: {message}")]
    InvalidYaml {
        /// The file and line of the error.
        origin: Origin,
        /// What the parser found, with the column.
        message: String,
    },
    /// A JSON syntax error.
    #[error("{origin}: invalid JSON: {message}")]
    InvalidJson {
        /// The file and line of the error.
        origin: Origin,
        /// What the parser found, with the column.
        message: String,
    },
    /// A document that is a list, string, number... instead of a mapping.
    #[error(
        "{origin}: document is {found}, not a Kubernetes object; each document must be a \
         mapping with apiVersion, kind and metadata.name"
    )]
    NotAnObject {
        /// Where the document starts.
        origin: Origin,
        /// What it is instead.
        found: &'static str,
    },
    /// A mapping without the identity every object needs.
    #[error(
        "{origin}: not a valid Kubernetes object: {}; every object needs apiVersion, kind and \
         metadata.name",
        problems.join(", ")
    )]
    InvalidObject {
        /// Where the object starts.
        origin: Origin,
        /// Each missing or mistyped field.
        problems: Vec<String>,
    },
    /// The same object (API group, kind, namespace, name) declared twice.
    #[error("{origin}: {object} is declared twice, here and at {first}; keep only one declaration")]
    Duplicate {
        /// The object, e.g. `Deployment.apps prod/web`.
        object: String,
        /// The later declaration.
        origin: Origin,
        /// The earlier declaration.
        first: Origin,
    },
    /// The path renders no objects and the Guard does not say empty is intended.
    #[error(
        "{dir}: renders no objects (found {found}); fix the path or renderer, or set prune.allowEmpty: true if empty is intended"
    )]
    Empty {
        /// The Guard's path.
        dir: String,
        /// What the directory holds, and what is missing.
        found: String,
    },
    /// Several of the above, in file order (duplicates last).
    #[error("{}", list_errors(errors))]
    Many {
        /// Each problem; none is itself `Many`.
        errors: Vec<RenderError>,
    },
    /// A rendering tool (kustomize) refused the entry or failed on it.
    #[error("{entry}: {message}")]
    Tool {
        /// The entry rendered, e.g. `apps/prod/kustomization.yaml`.
        entry: String,
        /// What is wrong: the refused reference, or the tool's own message.
        message: String,
    },
    /// Helm refused the chart or failed to render it (see [`helm::render_helm`]).
    #[error("{chart}: helm template failed: {message}")]
    Helm {
        /// The chart directory, repository-relative.
        chart: String,
        /// What went wrong: Helm's own message (its standard error) when it ran.
        message: String,
    },
    /// Jsonnet evaluation failed: jrsonnet's message with the location and stack, an import
    /// refused, a limit hit, or a result that is not manifests.
    #[error("{entry}: Jsonnet: {message}")]
    Jsonnet {
        /// The repository-relative entry file.
        entry: String,
        /// What went wrong, with file:line:column locations when Jsonnet gives them.
        message: String,
    },
}

impl RenderError {
    /// The individual problems: the list of a [`RenderError::Many`], else just this error.
    pub fn errors(&self) -> &[RenderError] {
        match self {
            RenderError::Many { errors } => errors,
            single => std::slice::from_ref(single),
        }
    }

    /// Where the problem is, unless this is a [`RenderError::Many`] or a
    /// [`RenderError::Helm`] (which names its chart).
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            RenderError::NotUtf8 { origin }
            | RenderError::InvalidYaml { origin, .. }
            | RenderError::InvalidJson { origin, .. }
            | RenderError::NotAnObject { origin, .. }
            | RenderError::InvalidObject { origin, .. }
            | RenderError::Duplicate { origin, .. } => Some(origin),
            RenderError::Many { .. }
            | RenderError::Tool { .. }
            | RenderError::Helm { .. }
            | RenderError::Jsonnet { .. }
            | RenderError::Empty { .. } => None,
        }
    }
}

fn list_errors(errors: &[RenderError]) -> String {
    let mut text = format!("{} problems in the manifests:", errors.len());
    for error in errors.iter().take(MAX_LISTED_ERRORS) {
        text.push_str("\n  ");
        text.push_str(&error.to_string());
    }
    if errors.len() > MAX_LISTED_ERRORS {
        text.push_str(&format!("\n  ... and {} more", errors.len() - MAX_LISTED_ERRORS));
    }
    text
}

/// The renderer for one Guard path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// YAML/JSON files as they are.
    Plain,
    /// `kustomize build` of the path.
    Kustomize,
    /// `helm template` of the chart at the path.
    Helm,
    /// The configured Jsonnet entry.
    Jsonnet,
}

/// Kustomization file names `kustomize build` looks for.
pub(crate) const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Pick the renderer for `dir`: the explicit `kind`, or with `auto` from the files directly in
/// `dir` (a kustomization file: Kustomize; `Chart.yaml`: Helm), or Jsonnet when an entry is
/// configured (`jsonnet_entry`), else plain. Pure: `files` is the directory as read from Git.
pub fn choose(
    kind: crate::api::RenderType,
    jsonnet_entry: bool,
    files: &[SourceFile],
    dir: &str,
) -> Result<Choice, RenderError> {
    use crate::api::RenderType;
    let dir = dir.trim_matches('/');
    let has = |name: &str| {
        let path = if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        };
        files.iter().any(|f| f.path == path)
    };
    let choice = match kind {
        RenderType::Plain => Choice::Plain,
        RenderType::Kustomize => Choice::Kustomize,
        RenderType::Helm => Choice::Helm,
        RenderType::Jsonnet => Choice::Jsonnet,
        RenderType::Auto if KUSTOMIZATION_FILES.iter().any(|f| has(f)) => Choice::Kustomize,
        RenderType::Auto if has("Chart.yaml") => Choice::Helm,
        RenderType::Auto if jsonnet_entry => Choice::Jsonnet,
        RenderType::Auto => Choice::Plain,
    };
    if choice == Choice::Jsonnet && !jsonnet_entry {
        return Err(RenderError::Jsonnet {
            entry: dir.to_owned(),
            message: "render.type is jsonnet but render.jsonnet.entry is not set: name the .jsonnet file".to_owned(),
        });
    }
    Ok(choice)
}

#[cfg(test)]
mod choose_tests {
    use super::*;
    use crate::api::RenderType;

    /// Files with these paths and no content.
    pub(super) fn files(paths: &[&str]) -> Vec<SourceFile> {
        paths
            .iter()
            .map(|p| SourceFile {
                path: (*p).to_owned(),
                content: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn auto_looks_at_the_directory_explicit_types_win() {
        let cases = [
            (
                RenderType::Auto,
                false,
                vec!["apps/kustomization.yaml", "apps/a.yaml"],
                Choice::Kustomize,
            ),
            (RenderType::Auto, false, vec!["apps/Kustomization"], Choice::Kustomize),
            (
                RenderType::Auto,
                false,
                vec!["apps/Chart.yaml", "apps/templates/x.yaml"],
                Choice::Helm,
            ),
            (
                RenderType::Auto,
                false,
                vec!["apps/sub/Chart.yaml", "apps/a.yaml"],
                Choice::Plain,
            ),
            (RenderType::Auto, true, vec!["apps/main.jsonnet"], Choice::Jsonnet),
            (RenderType::Auto, false, vec!["apps/a.yaml"], Choice::Plain),
            (RenderType::Plain, false, vec!["apps/kustomization.yaml"], Choice::Plain),
            (RenderType::Helm, false, vec!["apps/a.yaml"], Choice::Helm),
        ];
        for (kind, jsonnet, paths, want) in cases {
            assert_eq!(
                choose(kind, jsonnet, &files(&paths), "apps").unwrap(),
                want,
                "{kind:?} {paths:?}"
            );
        }
        assert_eq!(
            choose(RenderType::Auto, false, &files(&["Chart.yaml"]), "").unwrap(),
            Choice::Helm
        );
        let err = choose(RenderType::Jsonnet, false, &files(&[]), "apps").unwrap_err();
        assert!(err.to_string().contains("render.jsonnet.entry"), "{err}");
    }
}
