//! Effectful edge of desired state: fetch a Guard's revision, render it, build its set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::RenderType;
use crate::render::helm::{HelmOptions, render_helm};
use crate::render::jsonnet::{JsonnetLimits, JsonnetOptions, render_jsonnet};
use crate::render::kustomize::render_kustomize;
use crate::render::layout::{describe_files, detect_jsonnet_entry, plain_layout};
use crate::render::sandbox::{Limits, find_program};
use crate::render::{Choice, Manifest, RenderError, choose, render_plain_files};
use crate::source::{GitReference, LocalRepository, Revision, SourceError};

use super::{ApiResources, DesiredCache, DesiredError, DesiredSet, GuardPolicy};

/// Where a Guard's source lives, resolved from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSettings {
    /// `namespace/name` of the GitSource.
    pub id: String,
    /// Repository location (local path or file:// URL for now).
    pub url: String,
    /// What to track.
    pub reference: GitReference,
}

/// Why a Guard's desired state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Git could not be read.
    #[error("guard {guard}: source {source_id}: {error}")]
    Source {
        /// Guard id.
        guard: String,
        /// GitSource id.
        source_id: String,
        /// Cause.
        error: Box<SourceError>,
    },
    /// The manifests could not be rendered.
    #[error("guard {guard}: {error}")]
    Render {
        /// Guard id.
        guard: String,
        /// Cause.
        error: Box<RenderError>,
    },
    /// The manifests do not form a valid desired state.
    #[error("guard {guard}: {error}")]
    Desired {
        /// Guard id.
        guard: String,
        /// Cause.
        error: Box<DesiredError>,
    },
    /// The same failure, shared by concurrent loads of one revision.
    #[error("{0}")]
    Shared(Arc<LoadError>),
}

impl LoadError {
    /// True when the load failed only because a kind's scope and plural are unknown: in
    /// cluster mode, discovery is run again (a CRD may have been created since) and the load
    /// retried.
    pub fn is_unknown_kind(&self) -> bool {
        match self {
            LoadError::Desired { error, .. } => matches!(**error, DesiredError::UnknownKind { .. }),
            LoadError::Shared(inner) => inner.is_unknown_kind(),
            _ => false,
        }
    }
}

/// Why rendering a revision failed.
enum Rendering {
    Source(SourceError),
    Render(RenderError),
}

impl From<SourceError> for Rendering {
    fn from(error: SourceError) -> Self {
        Rendering::Source(error)
    }
}

impl From<RenderError> for Rendering {
    fn from(error: RenderError) -> Self {
        Rendering::Render(error)
    }
}

/// A checkout of a revision in a private temp directory, removed when dropped.
struct TempCheckout(PathBuf);

impl TempCheckout {
    fn of(repo: &LocalRepository, revision: &Revision) -> Result<Self, SourceError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "driftguard-render-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let checkout = TempCheckout(dir);
        repo.checkout(revision, &checkout.0)?;
        Ok(checkout)
    }
}

impl Drop for TempCheckout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Render the Guard's path at `revision` with the renderer its spec (or the files) call for.
/// Generated renderers work on a checkout of the whole revision, so bases, chart
/// dependencies and imports elsewhere in the repository resolve; nothing outside it does.
fn render_revision(
    repo: &LocalRepository,
    revision: &Revision,
    guard: &GuardPolicy,
) -> Result<Vec<Manifest>, Rendering> {
    let files = repo.read_files(revision, &guard.path)?;
    let render = &guard.render;
    let configured = render
        .jsonnet
        .as_ref()
        .map(|j| j.entry.clone())
        .filter(|e| !e.is_empty());
    let entry = configured.or_else(|| match render.kind {
        RenderType::Auto | RenderType::Jsonnet => detect_jsonnet_entry(&files, &guard.path),
        _ => None,
    });
    let choice = choose(render.kind, entry.is_some(), &files, &guard.path)?;
    let manifests = render_choice(repo, revision, guard, &files, choice, entry)?;
    if manifests.is_empty() && !guard.allow_empty && guard.reject_empty {
        let mut found = describe_files(&files, &guard.path);
        if choice != Choice::Jsonnet && found.contains(".jsonnet file") {
            found.push_str(", no entry; set render.jsonnet.entry");
        }
        return Err(RenderError::Empty {
            dir: guard.path.clone(),
            found,
        }
        .into());
    }
    Ok(manifests)
}

/// Render with the chosen renderer. A plain directory is read as Flux reads one (see
/// [`plain_layout`]): subdirectories with a kustomization are built with kustomize.
fn render_choice(
    repo: &LocalRepository,
    revision: &Revision,
    guard: &GuardPolicy,
    files: &[crate::source::SourceFile],
    choice: Choice,
    entry: Option<String>,
) -> Result<Vec<Manifest>, Rendering> {
    let render = &guard.render;
    let limits = Limits::default();
    if choice == Choice::Plain {
        let layout = plain_layout(files, &guard.path);
        for chart in &layout.chart_dirs {
            tracing::info!(guard = %guard.id, %chart, "a Helm chart inside a plain directory is not read as manifests; give it its own Guard");
        }
        let mut manifests = render_plain_files(layout.files)?;
        if !layout.kustomize_dirs.is_empty() {
            let checkout = TempCheckout::of(repo, revision)?;
            for dir in &layout.kustomize_dirs {
                manifests.extend(render_kustomize(&checkout.0, dir, &limits)?);
            }
        }
        return Ok(manifests);
    }
    let checkout = TempCheckout::of(repo, revision)?;
    let root = checkout.0.as_path();
    let dir = guard.path.trim_matches('/');
    Ok(match choice {
        // Plain returned above, without a checkout.
        Choice::Plain | Choice::Kustomize => render_kustomize(root, dir, &limits)?,
        Choice::Helm => {
            let helm = find_program("helm").ok_or_else(|| RenderError::Helm {
                chart: dir.to_owned(),
                message: "no `helm` on PATH: install Helm 3 or 4 next to driftguard".to_owned(),
            })?;
            let spec = render.helm.clone().unwrap_or_default();
            let options = HelmOptions {
                release: spec.release.unwrap_or_else(|| guard.id.name.clone()),
                namespace: guard.target_namespace.clone(),
                values_files: spec.values_files,
                values: spec.values.unwrap_or(serde_json::Value::Null),
                kube_version: spec.kube_version,
                api_versions: spec.api_versions,
            };
            render_helm(&helm, root, dir, &options, &limits)?
        }
        Choice::Jsonnet => {
            let spec = render.jsonnet.clone().unwrap_or_default();
            let entry = entry.unwrap_or(spec.entry);
            let entry = if dir.is_empty() {
                entry
            } else {
                format!("{dir}/{entry}")
            };
            let options = JsonnetOptions {
                entry,
                ext_vars: spec.ext_vars,
                ext_code: spec.ext_code,
                tla_vars: spec.tla_vars,
                tla_code: spec.tla_code,
                jpath: spec.jpath,
            };
            render_jsonnet(root, &options, &JsonnetLimits::default())?
        }
    })
}

/// Load one Guard: resolve its reference, then build (or reuse from `cache`) the desired set
/// of that revision. `kinds` is what the API says about non-built-in kinds (discovery, or an
/// `--api-resources` file); CRDs in the render add to it. Objects left out (hooks,
/// generateName) are logged as warnings when the set is built. Blocking (libgit2): call from
/// a blocking context.
pub fn load_guard(
    guard: Arc<GuardPolicy>,
    source: &SourceSettings,
    cache: &DesiredCache,
    kinds: &ApiResources,
) -> Result<Arc<DesiredSet>, LoadError> {
    let source_error = |error| LoadError::Source {
        guard: guard.id.to_string(),
        source_id: source.id.clone(),
        error: Box::new(error),
    };
    let repo = LocalRepository::open(&source.url).map_err(source_error)?;
    let revision = repo.resolve(&source.reference).map_err(source_error)?;
    let commit = revision.commit.clone();
    cache
        .get_or_try_build(&guard.clone(), &commit, || {
            let manifests = render_revision(&repo, &revision, &guard).map_err(|error| match error {
                Rendering::Source(error) => source_error(error),
                Rendering::Render(error) => LoadError::Render {
                    guard: guard.id.to_string(),
                    error: Box::new(error),
                },
            })?;
            let set = DesiredSet::build_with(guard.clone(), revision, manifests, kinds).map_err(|error| {
                LoadError::Desired {
                    guard: guard.id.to_string(),
                    error: Box::new(error),
                }
            })?;
            for skipped in &set.skipped {
                tracing::warn!(guard = %guard.id, "{skipped}");
            }
            Ok(Arc::new(set))
        })
        .map_err(LoadError::Shared)
}
