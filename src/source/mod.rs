//! Git sources: open a repository, resolve a reference to a commit, and read the files of a
//! directory at that commit straight from the object database (never from a work tree, so what
//! is rendered is exactly what was committed).
//!
//! Local repositories (a path or a `file://` URL) are read in place. Remote repositories
//! (`https://`, `http://`, `ssh://`, `git@host:path`, `git://`) are fetched by [`Fetcher`] into a
//! bare mirror per GitSource, which [`LocalRepository`] then reads like any other repository.
//! Semver ranges ([`GitReference::Semver`]) resolve against the tag list; signature
//! verification is a check on the [`Revision`] that [`LocalRepository::resolve`] returns.

mod credentials;
mod fetch;
mod known_hosts;
mod local;
pub mod semver;
pub mod track;
mod url;
pub mod verify;
pub mod web;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use credentials::Credentials;
pub use fetch::{FetchRequest, FetchStats, Fetched, Fetcher};
pub use local::LocalRepository;
pub use web::{LinkTemplate, Links, WebUrlError};

/// True when `url` names a repository on this machine (read in place, never fetched).
pub fn is_local(url: &str) -> bool {
    matches!(url::classify(url), Ok(url::Location::Local(_)))
}

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
    /// The highest tag whose name is a version in this semver range (`^1.2`, `>=1.0.0 <2`),
    /// see [`semver`].
    Semver(String),
}

impl fmt::Display for GitReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitReference::Head => f.write_str("HEAD"),
            GitReference::Branch(name) => write!(f, "branch {name:?}"),
            GitReference::Tag(name) => write!(f, "tag {name:?}"),
            GitReference::Commit(id) => write!(f, "commit {id:?}"),
            GitReference::Semver(range) => write!(f, "semver {range:?}"),
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
    /// A remote URL where a local repository is needed (the CLI's `--repo`).
    #[error(
        "{url:?} is a remote Git URL, and this reads a local repository: clone it and pass its \
         path (driftguard serve fetches remote GitSources itself)"
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
    /// The GitSource's credentials are incomplete or malformed. Names keys, never values.
    #[error("invalid Git credentials: {reason}")]
    InvalidCredentials {
        /// What is wrong and what to set.
        reason: String,
    },
    /// The server refused the credentials, or wants credentials that were not given.
    #[error("authentication to {url} failed: {reason}")]
    Authentication {
        /// The URL without userinfo.
        url: String,
        /// What happened and what to check; holds no secret.
        reason: String,
    },
    /// The SSH server's host key is not one of the given known_hosts keys.
    #[error("the SSH host key of {url} is not trusted: {reason}")]
    HostKey {
        /// The URL without userinfo.
        url: String,
        /// Which key was presented, what known_hosts holds for the host, what to do.
        reason: String,
    },
    /// A fetch did not finish within its timeout.
    #[error(
        "fetching from {url} did not finish within {timeout:?} (while {phase}); check that the host is \
         reachable and answers, or raise the GitSource timeout"
    )]
    Timeout {
        /// The URL without userinfo.
        url: String,
        /// The timeout of the operation.
        timeout: Duration,
        /// What was going on: connecting, listing references, downloading objects.
        phase: String,
    },
    /// Talking to the Git server failed (network, TLS, protocol, server errors).
    #[error("{action} {url}: {message}; {hint}")]
    Transport {
        /// The URL without userinfo.
        url: String,
        /// What was being done, e.g. `fetching branch "main" from`.
        action: String,
        /// What libgit2 or the server reported, with any secret removed.
        message: String,
        /// What to check.
        hint: String,
    },
    /// The cache of fetched repositories cannot be used.
    #[error("Git cache {}: {action}: {reason}; check that the cache directory is writable", path.display())]
    Cache {
        /// The directory involved.
        path: PathBuf,
        /// What was being done.
        action: String,
        /// What went wrong.
        reason: String,
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
    /// A committed symlink whose target resolves outside the repository (checkouts for
    /// rendering never follow links out of the checkout).
    #[error(
        "symlink {path:?} points to {target:?}, outside the repository; replace the link with \
         the file itself (renders never read outside the checkout)"
    )]
    SymlinkEscapes {
        /// The link, relative to the repository root.
        path: String,
        /// Its target as committed.
        target: String,
    },
    /// Writing a checkout failed.
    #[error("checking out {revision} into {}: {action}: {source}", dest.display())]
    Checkout {
        /// The revision being written.
        revision: String,
        /// The destination directory.
        dest: PathBuf,
        /// What was being done, e.g. `writing "apps/web.yaml"`.
        action: String,
        /// What the file system reported.
        source: std::io::Error,
    },
}

/// What a semver "not found" message suggests: the highest few version tags that exist.
pub(crate) fn semver_hint(tags: &[String]) -> String {
    let mut versions: Vec<(::semver::Version, &str)> = tags
        .iter()
        .filter_map(|t| semver::parse_tag(t).map(|v| (v, t.as_str())))
        .collect();
    if versions.is_empty() {
        return "no tag is a semantic version (v1.2.3 or 1.2.3); tag a release or check the GitSource ref".to_owned();
    }
    versions.sort_by(|a, b| b.0.cmp_precedence(&a.0).then_with(|| a.1.cmp(b.1)));
    let total = versions.len();
    let shown: Vec<&str> = versions.iter().take(5).map(|(_, t)| *t).collect();
    let more = if total > shown.len() {
        format!(" and {} more", total - shown.len())
    } else {
        String::new()
    };
    format!(
        "no tag matches the range (pre-releases only match a range that names one); highest version \
         tags: {}{more}",
        shown.join(", ")
    )
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
        assert_eq!(GitReference::Semver("^1".into()).to_string(), "semver \"^1\"");
    }
}
