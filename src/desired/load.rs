//! Effectful edge of desired state: fetch a Guard's revision, render it, build its set.

use std::sync::Arc;

use crate::render::{RenderError, render_plain};
use crate::source::{GitReference, LocalRepository, SourceError};

use super::{DesiredCache, DesiredError, DesiredSet, GuardPolicy};

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

/// Load one Guard: resolve its reference, then build (or reuse from `cache`) the desired set
/// of that revision. Blocking (libgit2): call from a blocking context.
pub fn load_guard(
    guard: Arc<GuardPolicy>,
    source: &SourceSettings,
    cache: &DesiredCache,
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
            let files = repo.read_files(&revision, &guard.path).map_err(source_error)?;
            let manifests = render_plain(&files).map_err(|error| LoadError::Render {
                guard: guard.id.to_string(),
                error: Box::new(error),
            })?;
            let set = DesiredSet::build(guard.clone(), revision, manifests).map_err(|error| LoadError::Desired {
                guard: guard.id.to_string(),
                error: Box::new(error),
            })?;
            Ok(Arc::new(set))
        })
        .map_err(LoadError::Shared)
}
