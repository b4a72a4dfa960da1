//! A repository on the local file system, read through libgit2.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, FileMode, ObjectType, Oid, Reference, Repository, RepositoryOpenFlags};

use super::{GitReference, Revision, SourceError, SourceFile, normalize_dir, url};

/// How many existing branch or tag names a "not found" message suggests.
const SUGGESTIONS: usize = 10;

/// A local Git repository, bare or with a work tree.
///
/// Holds a `git2::Repository`, which is `Send` but not `Sync`: open one per task rather than
/// sharing it.
pub struct LocalRepository {
    repo: Repository,
    path: PathBuf,
    /// How messages name the repository: the path, or the remote URL of a mirror.
    name: String,
}

impl fmt::Debug for LocalRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRepository")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalRepository {
    /// Opens the repository that `url` names: a local path or a `file://` URL, pointing at a
    /// work tree (with `.git`) or a bare repository. Parent directories are not searched, so a
    /// subdirectory of a repository is refused rather than silently widened.
    ///
    /// Remote URLs (`https://`, `ssh://`, `git@host:path`) give [`SourceError::Unsupported`]:
    /// [`crate::source::Fetcher`] brings them into a local mirror first.
    pub fn open(url: &str) -> Result<Self, SourceError> {
        let path = url::local_path(url)?;
        if !path.exists() {
            return Err(SourceError::NotFound { path });
        }
        let repo = Repository::open_ext(&path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr]).map_err(|source| {
            SourceError::NotARepository {
                path: path.clone(),
                source,
            }
        })?;
        Ok(LocalRepository {
            name: path.display().to_string(),
            repo,
            path,
        })
    }

    /// Opens the bare mirror of a remote repository at `path`; messages name it `name` (the
    /// remote URL without userinfo) and the mirror's path.
    pub(crate) fn open_mirror(path: &Path, name: &str) -> Result<Self, SourceError> {
        let repo = Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr]).map_err(|source| {
            SourceError::NotARepository {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(LocalRepository {
            repo,
            path: path.to_owned(),
            name: format!("{name} (mirror {})", path.display()),
        })
    }

    /// The local path the repository was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves a reference to the commit it names now.
    ///
    /// Branches are looked up as `refs/heads/<name>`, then `refs/remotes/origin/<name>` (so a
    /// plain clone works without creating local branches); a name starting with `refs/` is
    /// used as is. Tags are peeled through annotated tag objects to the commit. Commits may be
    /// abbreviated to 4 or more hex digits but must exist.
    pub fn resolve(&self, reference: &GitReference) -> Result<Revision, SourceError> {
        match reference {
            GitReference::Head => self.resolve_head(),
            GitReference::Branch(name) => {
                let candidates = if name.starts_with("refs/") {
                    vec![name.clone()]
                } else {
                    vec![format!("refs/heads/{name}"), format!("refs/remotes/origin/{name}")]
                };
                self.resolve_named(reference, name, &candidates, &["refs/heads/*", "refs/remotes/origin/*"])
            }
            GitReference::Tag(name) => {
                let candidates = if name.starts_with("refs/") {
                    vec![name.clone()]
                } else {
                    vec![format!("refs/tags/{name}")]
                };
                self.resolve_named(reference, name, &candidates, &["refs/tags/*"])
            }
            GitReference::Commit(id) => self.resolve_commit(reference, id),
            GitReference::Semver(range) => self.resolve_semver(reference, range),
        }
    }

    /// The names of every tag (`v1.2.3`, without `refs/tags/`).
    pub fn tag_names(&self) -> Result<Vec<String>, SourceError> {
        let refs = self
            .repo
            .references_glob("refs/tags/*")
            .map_err(|e| self.git_error("listing tags".to_owned(), e))?;
        let mut names = Vec::new();
        for reference in refs {
            let reference = reference.map_err(|e| self.git_error("listing tags".to_owned(), e))?;
            if let Some(name) = reference.name().ok().and_then(|n| n.strip_prefix("refs/tags/")) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The highest tag matching the range, resolved like a tag (`v1.4.2@sha1:<commit>`).
    fn resolve_semver(&self, reference: &GitReference, range: &str) -> Result<Revision, SourceError> {
        let tags = self.tag_names()?;
        let picked = super::semver::highest_match(range, tags.iter().map(String::as_str)).map_err(|e| {
            SourceError::InvalidReference {
                reference: reference.to_string(),
                reason: e.reason,
            }
        })?;
        let Some(tag) = picked else {
            return Err(SourceError::ReferenceNotFound {
                reference: reference.to_string(),
                repository: self.display(),
                tried: vec!["refs/tags/*".to_owned()],
                hint: super::semver_hint(&tags),
            });
        };
        self.resolve_named(reference, &tag, &[format!("refs/tags/{tag}")], &["refs/tags/*"])
    }

    /// The underlying libgit2 repository (the fetcher looks into its mirrors).
    pub(crate) fn raw(&self) -> &Repository {
        &self.repo
    }

    /// Reads every file under `dir` as committed in `revision`, sorted by path.
    ///
    /// Reads the object database only, never the work tree: uncommitted edits are invisible.
    /// `dir` is relative to the repository root (`""`, `"."`, `"./apps/"` are accepted).
    /// Symlinks and submodules are skipped: their targets are not part of this tree, so
    /// following them would render content that the revision does not pin.
    pub fn read_files(&self, revision: &Revision, dir: &str) -> Result<Vec<SourceFile>, SourceError> {
        let dir = normalize_dir(dir)?;
        let not_found = || SourceError::RevisionNotFound {
            revision: revision.reference.clone(),
            repository: self.display(),
        };
        let oid = Oid::from_str(&revision.commit).map_err(|_| not_found())?;
        let commit = self.repo.find_commit(oid).map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                not_found()
            } else {
                self.git_error(format!("reading commit {}", revision.commit), e)
            }
        })?;
        let root = commit
            .tree()
            .map_err(|e| self.git_error(format!("reading the tree of {revision}"), e))?;

        let start = if dir.is_empty() {
            root
        } else {
            let entry = root.get_path(Path::new(&dir)).map_err(|e| {
                if e.code() == ErrorCode::NotFound {
                    SourceError::DirNotFound {
                        dir: dir.clone(),
                        revision: revision.reference.clone(),
                        repository: self.display(),
                    }
                } else {
                    self.git_error(format!("looking up {dir:?} at {revision}"), e)
                }
            })?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(SourceError::NotADirectory {
                    dir,
                    revision: revision.reference.clone(),
                    repository: self.display(),
                });
            }
            self.repo
                .find_tree(entry.id())
                .map_err(|e| self.git_error(format!("reading {dir:?} at {revision}"), e))?
        };

        let link_mode = i32::from(FileMode::Link);
        let mut files = Vec::new();
        let mut pending = vec![(dir, start)];
        while let Some((prefix, tree)) = pending.pop() {
            for entry in tree.iter() {
                let Ok(name) = entry.name() else {
                    tracing::warn!(
                        dir = %prefix,
                        "skipping a tree entry whose name is not UTF-8"
                    );
                    continue;
                };
                let path = if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}/{name}")
                };
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let subtree = self
                            .repo
                            .find_tree(entry.id())
                            .map_err(|e| self.git_error(format!("reading {path:?}"), e))?;
                        pending.push((path, subtree));
                    }
                    Some(ObjectType::Blob) if entry.filemode() == link_mode => {
                        tracing::debug!(%path, "skipping symlink");
                    }
                    Some(ObjectType::Blob) => {
                        let blob = self
                            .repo
                            .find_blob(entry.id())
                            .map_err(|e| self.git_error(format!("reading {path:?}"), e))?;
                        files.push(SourceFile {
                            path,
                            content: blob.content().to_vec(),
                        });
                    }
                    Some(ObjectType::Commit) => {
                        tracing::debug!(%path, "skipping submodule");
                    }
                    other => {
                        tracing::debug!(%path, kind = ?other, "skipping unexpected tree entry");
                    }
                }
            }
        }
        files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    fn resolve_head(&self) -> Result<Revision, SourceError> {
        let head = self.repo.head().map_err(|e| match e.code() {
            ErrorCode::UnbornBranch | ErrorCode::NotFound => SourceError::ReferenceNotFound {
                reference: GitReference::Head.to_string(),
                repository: self.display(),
                tried: vec!["HEAD".to_owned()],
                hint: "HEAD points at a branch with no commits yet; commit something or choose \
                       a branch that exists"
                    .to_owned(),
            },
            _ => self.git_error("reading HEAD".to_owned(), e),
        })?;
        let label = if head.is_branch() {
            head.shorthand().unwrap_or("HEAD").to_owned()
        } else {
            "HEAD".to_owned()
        };
        let commit = self.peel(&GitReference::Head, &head)?;
        Ok(Revision {
            reference: format!("{label}@sha1:{commit}"),
            commit,
        })
    }

    fn resolve_named(
        &self,
        reference: &GitReference,
        name: &str,
        candidates: &[String],
        suggest_from: &[&str],
    ) -> Result<Revision, SourceError> {
        if name.is_empty() {
            return Err(SourceError::InvalidReference {
                reference: reference.to_string(),
                reason: "the name is empty".to_owned(),
            });
        }
        for candidate in candidates {
            if !Reference::is_valid_name(candidate) {
                return Err(SourceError::InvalidReference {
                    reference: reference.to_string(),
                    reason: format!("{candidate:?} is not a valid Git reference name"),
                });
            }
        }
        for candidate in candidates {
            match self.repo.find_reference(candidate) {
                Ok(found) => {
                    let commit = self.peel(reference, &found)?;
                    return Ok(Revision {
                        reference: format!("{name}@sha1:{commit}"),
                        commit,
                    });
                }
                Err(e) if e.code() == ErrorCode::NotFound => {}
                Err(e) => return Err(self.git_error(format!("looking up {candidate}"), e)),
            }
        }
        Err(SourceError::ReferenceNotFound {
            reference: reference.to_string(),
            repository: self.display(),
            tried: candidates.to_vec(),
            hint: self.suggestions(suggest_from),
        })
    }

    fn resolve_commit(&self, reference: &GitReference, id: &str) -> Result<Revision, SourceError> {
        let id = id.trim().to_ascii_lowercase();
        if !(4..=40).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SourceError::InvalidReference {
                reference: reference.to_string(),
                reason: "a commit is 4 to 40 hexadecimal digits".to_owned(),
            });
        }
        let commit = self.repo.find_commit_by_prefix(&id).map_err(|e| match e.code() {
            ErrorCode::NotFound | ErrorCode::InvalidSpec => SourceError::ReferenceNotFound {
                reference: reference.to_string(),
                repository: self.display(),
                tried: vec![id.clone()],
                hint: "no commit has this id; check that it was pushed to this repository".to_owned(),
            },
            ErrorCode::Ambiguous => SourceError::AmbiguousCommit {
                prefix: id.clone(),
                repository: self.display(),
            },
            _ => self.git_error(format!("looking up commit {id}"), e),
        })?;
        let full = commit.id().to_string();
        Ok(Revision {
            reference: format!("sha1:{full}"),
            commit: full,
        })
    }

    fn peel(&self, reference: &GitReference, found: &Reference<'_>) -> Result<String, SourceError> {
        found
            .peel_to_commit()
            .map(|c| c.id().to_string())
            .map_err(|source| SourceError::NotACommit {
                reference: reference.to_string(),
                repository: self.display(),
                source,
            })
    }

    /// Lists a few existing names so a typo is easy to spot.
    fn suggestions(&self, globs: &[&str]) -> String {
        let mut names = Vec::new();
        for glob in globs {
            if let Ok(refs) = self.repo.references_glob(glob) {
                // Remote-tracking names are offered as the branch name to write in `ref`.
                names.extend(
                    refs.filter_map(Result::ok)
                        .filter_map(|r| r.shorthand().ok().map(str::to_owned))
                        .map(|n| n.strip_prefix("origin/").map(str::to_owned).unwrap_or(n))
                        .filter(|n| n != "HEAD"),
                );
            }
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return "the repository has none; check the GitSource ref".to_owned();
        }
        let total = names.len();
        names.truncate(SUGGESTIONS);
        let more = if total > SUGGESTIONS {
            format!(" and {} more", total - SUGGESTIONS)
        } else {
            String::new()
        };
        format!("existing: {}{more}; check the GitSource ref", names.join(", "))
    }

    fn display(&self) -> String {
        self.name.clone()
    }

    fn git_error(&self, action: String, source: git2::Error) -> SourceError {
        SourceError::Git {
            action,
            repository: self.display(),
            source,
        }
    }

    /// The libgit2 repository, for checks that read objects directly (signature verification).
    pub(crate) fn git(&self) -> &Repository {
        &self.repo
    }
}
