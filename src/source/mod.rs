//! Git sources: open a repository, resolve a reference to a commit, and read the files of a
//! directory at that commit straight from the object database (never from a work tree, so what
//! is rendered is exactly what was committed).
//!
//! Only local repositories (a path or a `file://` URL) are supported so far. Remote transports
//! and credentials slot in as a fetch step that produces a local (bare) mirror which
//! [`LocalRepository`] then opens; semver tags become another [`GitReference`] variant resolved
//! against the tag list; signature verification is a check on the [`Revision`] that
//! [`LocalRepository::resolve`] returns.

mod local;
mod url;
pub mod verify;

use std::fmt;
use std::path::PathBuf;

pub use local::LocalRepository;

/// Which commit of a repository to use (the GitSource `ref`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitReference {
    /// Whatever the repository's `HEAD` points at (its default branch for a clone).
    Head,
    /// A branch: the local branch `refs/heads/<name>`, else the remote-tracking branch
    /// `refs/remotes/origin/<name>`.
    Branch(String),
    /// A tag, annotated or lightweight, peeled to the commit it names.
    Tag(String),
    /// A commit id, full (40 hex digits) or abbreviated (at least 4).
    Commit(String),
}

impl fmt::Display for GitReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitReference::Head => f.write_str("HEAD"),
            GitReference::Branch(name) => write!(f, "branch {name:?}"),
            GitReference::Tag(name) => write!(f, "tag {name:?}"),
            GitReference::Commit(id) => write!(f, "commit {id:?}"),
        }
    }
}

/// A resolved reference: the commit that everything downstream is derived from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// Full 40-hex-digit commit id.
    pub commit: String,
    /// Human form for status, messages and audit: `<branch or tag>@sha1:<commit>`, or
    /// `sha1:<commit>` when a commit was asked for directly.
    pub reference: String,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reference)
    }
}

/// One file of a directory at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the repository root, `/`-separated (it is what users see in origins).
    pub path: String,
    /// The committed bytes.
    pub content: Vec<u8>,
}

/// Everything that can go wrong getting files out of Git. Messages name the repository, the
/// reference or path involved, and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A transport that this release cannot fetch from.
    #[error(
        "unsupported Git URL {url:?}: remote URLs (https://, ssh://, git@host:path) arrive in a \
         later release; for now clone the repository locally and use its path or a file:// URL"
    )]
    Unsupported {
        /// The URL as given.
        url: String,
    },
    /// The URL could not be understood at all.
    #[error("invalid Git URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The local path does not exist.
    #[error("Git repository {path} does not exist; check the GitSource url")]
    NotFound {
        /// The local path the URL names.
        path: PathBuf,
    },
    /// The path exists but holds no repository.
    #[error(
        "{path} is not a Git repository (neither a work tree with .git nor a bare repository); \
         point the GitSource url at the repository itself: {source}"
    )]
    NotARepository {
        /// The local path the URL names.
        path: PathBuf,
        /// What libgit2 reported.
        source: git2::Error,
    },
    /// A branch, tag or commit name that cannot be a valid reference.
    #[error("invalid {reference}: {reason}")]
    InvalidReference {
        /// The reference as asked for, e.g. `branch "a..b"`.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No candidate for the reference exists.
    #[error(
        "{reference} not found in {repository}: tried {}; {hint}",
        tried.join(", ")
    )]
    ReferenceNotFound {
        /// The reference as asked for, e.g. `branch "main"`.
        reference: String,
        /// The repository looked in.
        repository: String,
        /// Every full reference name (or commit prefix) that was looked up, in order.
        tried: Vec<String>,
        /// What exists instead, or what to do.
        hint: String,
    },
    /// An abbreviated commit id that names more than one object.
    #[error(
        "commit {prefix:?} is ambiguous in {repository}: more than one object id starts with it; \
         use more digits or the full 40-digit id"
    )]
    AmbiguousCommit {
        /// The abbreviated id.
        prefix: String,
        /// The repository looked in.
        repository: String,
    },
    /// A reference that does not lead to a commit (e.g. a tag of a tree).
    #[error("{reference} in {repository} does not point to a commit: {source}")]
    NotACommit {
        /// The reference as asked for.
        reference: String,
        /// The repository looked in.
        repository: String,
        /// What libgit2 reported.
        source: git2::Error,
    },
    /// A revision whose commit is not in this repository (resolved elsewhere, or garbage
    /// collected since).
    #[error(
        "revision {revision} is not in {repository}; resolve the reference again against this \
         repository"
    )]
    RevisionNotFound {
        /// The revision asked for.
        revision: String,
        /// The repository looked in.
        repository: String,
    },
    /// A directory path that is not acceptable (it leaves the repository).
    #[error("invalid path {dir:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        dir: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The directory is not in the tree of the revision.
    #[error(
        "directory {dir:?} does not exist at revision {revision} of {repository}; check the \
         Guard path (it is relative to the repository root) and that the directory is committed"
    )]
    DirNotFound {
        /// The normalized directory.
        dir: String,
        /// The revision looked in.
        revision: String,
        /// The repository looked in.
        repository: String,
    },
    /// The path names a file, not a directory.
    #[error(
        "{dir:?} is a file, not a directory, at revision {revision} of {repository}; point the \
         Guard path at the directory that contains it"
    )]
    NotADirectory {
        /// The normalized path.
        dir: String,
        /// The revision looked in.
        revision: String,
        /// The repository looked in.
        repository: String,
    },
    /// Any other libgit2 failure (corrupt objects, I/O errors).
    #[error("{action} in {repository}: {source}")]
    Git {
        /// What was being done.
        action: String,
        /// The repository involved.
        repository: String,
        /// What libgit2 reported.
        source: git2::Error,
    },
}

/// Normalizes a directory inside a repository to `a/b` form: `""`, `"."` and `"/"` are the
/// root, `./` prefixes, doubled and trailing slashes are dropped. `..` is refused because a
/// Guard must not read outside the tree it was given.
pub(crate) fn normalize_dir(dir: &str) -> Result<String, SourceError> {
    let mut parts = Vec::new();
    for part in dir.trim().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(SourceError::InvalidPath {
                    dir: dir.to_owned(),
                    reason: "'..' is not allowed; paths are relative to the repository root".to_owned(),
                });
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_dir_forms() {
        for (input, want) in [
            ("", ""),
            (".", ""),
            ("./", ""),
            ("/", ""),
            ("apps", "apps"),
            ("./apps/", "apps"),
            ("apps//web/", "apps/web"),
            ("./apps/./web", "apps/web"),
            ("/apps", "apps"),
        ] {
            assert_eq!(normalize_dir(input).unwrap(), want, "input {input:?}");
        }
    }

    #[test]
    fn normalize_dir_refuses_parent() {
        let err = normalize_dir("apps/../../etc").unwrap_err();
        assert!(err.to_string().contains("'..' is not allowed"), "{err}");
    }

    #[test]
    fn reference_display_names_the_kind() {
        assert_eq!(GitReference::Head.to_string(), "HEAD");
        assert_eq!(GitReference::Branch("main".into()).to_string(), "branch \"main\"");
        assert_eq!(GitReference::Tag("v1".into()).to_string(), "tag \"v1\"");
        assert_eq!(GitReference::Commit("abcd".into()).to_string(), "commit \"abcd\"");
    }
}
