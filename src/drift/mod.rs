//! Field-level drift: which declared fields a request moves away from Git, and the RFC 6902
//! patch that puts them back (DESIGN.md section 3). Pure: no I/O, no clients.
//!
//! Inputs are JSON objects: desired `D` (from Git, passed through [`normalize_desired`]), old
//! `O` (the live object before the request; `None` on CREATE) and new `N` (what the request
//! would store).
//!
//! - **Declared paths** `P(D)` are the leaves of `D`. Lists Kubernetes merges by key
//!   (containers, env, volumes, ports, volumeMounts, ...; a table in `schema.rs`) are walked
//!   element by element, matched by key, so reordering them is not drift; every other list
//!   is one atomic leaf. Of the top-level `metadata` only declared `labels` and `annotations`
//!   entries count; `apiVersion`, `kind` and `status` never do. Fields absent from `D`
//!   (server defaults, undeclared labels, `managedFields`, ...) are not in `P(D)`. A declared
//!   `null` declares nothing; a declared `[]` equals an absent list; a declared `{}` declares
//!   nothing on map-typed fields the API server omits when empty (`nodeSelector`,
//!   `annotations`, ...), "selects everything" on NetworkPolicy selectors, and otherwise only
//!   that the struct exists (`emptyDir: {}`, `securityContext: {}`).
//! - A request **drifts** at `p` when `N[p] != D[p]` and, on UPDATE, `N[p] != O[p]`; a field
//!   absent from `N` counts as different. Equality is semantic: numbers by value, resource
//!   quantities by value on quantity fields (`0.5` == `500m`). Inside an atomic list, fields
//!   `N` has but `D` does not declare are accepted when `O` already had them (server defaults);
//!   on CREATE they are all accepted.
//! - Ignore rules ([`IgnorePath`]) remove whole subtrees from the comparison.

mod compare;
mod detect;
pub mod display;
mod ignore;
pub mod normalize;
mod path;
pub mod quantity;
mod revert;
mod schema;

use serde_json::Value;

pub use ignore::IgnorePath;
pub use normalize::normalize_desired;
pub use path::{ElementKey, FieldPath, PathSegment};

/// Errors of the drift module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriftError {
    /// An ignore pointer is neither empty nor starts with `/`.
    #[error("ignore pointer {pointer:?} must be empty or start with '/' (RFC 6901 JSON pointer)")]
    PointerStart {
        /// The pointer as written.
        pointer: String,
    },
    /// An ignore pointer has a `~` not followed by `0` or `1`.
    #[error("ignore pointer {pointer:?} has an invalid escape: '~' must be followed by '0' or '1'")]
    PointerEscape {
        /// The pointer as written.
        pointer: String,
    },
}

/// One declared field the request moves away from Git.
///
/// Values are the raw JSON at the path (`None` = absent). For Secrets they are the base64
/// `data` values: callers must mask paths for which [`FieldPath::starts_with_key`] is true for
/// `data` or `stringData` before showing them anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDrift {
    /// Where the field is.
    pub path: FieldPath,
    /// The value Git declares (`D[p]`).
    pub git: Option<Value>,
    /// The value the request would store (`N[p]`).
    pub attempted: Option<Value>,
    /// The value before the request (`O[p]`; `None` on CREATE or when absent).
    pub previous: Option<Value>,
    /// The position in [`detect_delegated`]'s `delegated` of the pointer the field is under
    /// (always `None` from [`detect`]).
    pub delegated: Option<usize>,
}

/// The declared fields that the request (`old` -> `new`) moves away from `desired`, in the
/// order they appear in `desired`, minus those under an `ignore` rule.
///
/// `desired` must be normalized ([`normalize_desired`]); `old` is `None` on CREATE.
pub fn detect(desired: &Value, old: Option<&Value>, new: &Value, ignore: &[IgnorePath]) -> Vec<FieldDrift> {
    detect::detect::<IgnorePath>(desired, old, new, ignore, &[])
}

/// [`detect`], tagging each drift under one of the `delegated` pointers (matched like ignore
/// rules, the first on the way down wins) with that pointer's position in
/// [`FieldDrift::delegated`]. With no delegated pointers it costs what [`detect`] does.
pub fn detect_delegated<P: std::borrow::Borrow<IgnorePath>>(
    desired: &Value,
    old: Option<&Value>,
    new: &Value,
    ignore: &[IgnorePath],
    delegated: &[P],
) -> Vec<FieldDrift> {
    detect::detect(desired, old, new, ignore, delegated)
}

/// RFC 6902 operations on `new` that restore `desired`'s value at every drifting path:
/// `replace` where `new` has the field, `add` where it does not (creating the missing parent
/// objects from `desired`; a removed keyed-list element is re-added at the end of the list;
/// an atomic list is replaced whole). After applying it, [`detect`] finds no drift.
pub fn revert_patch(new: &Value, desired: &Value, drifts: &[FieldDrift]) -> json_patch::Patch {
    revert::revert_patch(new, desired, drifts)
}
