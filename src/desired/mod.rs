//! Desired state: what Git declares, per (guard, revision), and the index admission consults.
//!
//! A [`DesiredSet`] is built once per (guard, revision) from rendered manifests, normalized the
//! way the API server stores objects, and kept in a byte-bounded [`DesiredCache`]. The
//! [`AdmissionIndex`] maps object identity to the enforced desired object; it is swapped
//! atomically in the [`DesiredStore`] so requests never wait on a refresh.

mod cache;
mod hpa;
mod index;
pub mod kinds;
mod load;
mod policy;
mod set;
mod store;

pub use cache::DesiredCache;
pub use hpa::{HpaBounds, HpaEntry, ResolvedBounds};
pub use index::{AdmissionIndex, Conflict, Managed};
pub use kinds::{ApiResources, KindError};
pub use load::{LoadError, SourceSettings, load_guard};
pub use policy::{BreakGlassPolicy, DEFAULT_BREAK_GLASS, GuardId, GuardPolicy, ObjectDelegation};
pub use set::{DesiredObject, DesiredSet, SkipReason, Skipped};
pub use store::DesiredStore;

/// Why desired state could not be built from manifests.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// A manifest lacks identity fields.
    #[error("{origin}: {reason}")]
    InvalidManifest {
        /// `file:line` of the document.
        origin: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two manifests declare the same object once namespaces are defaulted.
    #[error(
        "{object} is declared twice: at {first} and at {second} (after defaulting the namespace to the Guard's targetNamespace); keep one"
    )]
    Duplicate {
        /// `Kind namespace/name`.
        object: String,
        /// First declaration.
        first: String,
        /// Second declaration.
        second: String,
    },
    /// A kind whose scope and plural nothing from the API describes.
    #[error("{origin}: {error}")]
    UnknownKind {
        /// `file:line` of the document.
        origin: String,
        /// Which kind and how to tell driftguard.
        error: kinds::KindError,
    },
    /// An ignore rule has a malformed JSON pointer.
    #[error("guard {guard}: ignore rule pointer {pointer:?}: {reason}")]
    InvalidIgnore {
        /// Guard id.
        guard: String,
        /// The pointer as written.
        pointer: String,
        /// Parser's reason.
        reason: String,
    },
    /// A delegate rule is malformed.
    #[error("guard {guard}: delegate rule {rule}: {reason}")]
    InvalidDelegate {
        /// Guard id.
        guard: String,
        /// Position of the rule in `delegate` (from 1).
        rule: usize,
        /// What is wrong.
        reason: String,
    },
    /// A delegate rule's `bounds: {fromHPA: true}` on an object no HorizontalPodAutoscaler
    /// targets.
    #[error("no HorizontalPodAutoscaler targets {object}, so bounds fromHPA admit no value")]
    NoHpa {
        /// `Kind namespace/name`.
        object: String,
    },
}

#[cfg(test)]
mod tests;
