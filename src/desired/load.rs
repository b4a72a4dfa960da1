//! Effectful edge of desired state: fetch a Guard's revision, render it, build its set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::render::helm::{HelmOptions, render_helm};
use crate::render::jsonnet::{JsonnetLimits, JsonnetOptions, render_jsonnet};
use crate::render::kustomize::render_kustomize;
use crate::render::sandbox::{Limits, find_program};
use crate::render::{Choice, Manifest, RenderError, choose, render_plain};
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
    let choice = choose(render.kind, render.jsonnet.is_some(), &files, &guard.path)?;
    if choice == Choice::Plain {
        return Ok(render_plain(&files)?);
    }
    let checkout = TempCheckout::of(repo, revision)?;
    let root = checkout.0.as_path();
    let limits = Limits::default();
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
            let entry = if dir.is_empty() {
                spec.entry
            } else {
                format!("{dir}/{}", spec.entry)
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
