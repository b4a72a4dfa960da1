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

    /// The root tree of `revision`'s commit.
    fn tree_of(&self, revision: &Revision) -> Result<git2::Tree<'_>, SourceError> {
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
        commit
            .tree()
            .map_err(|e| self.git_error(format!("reading the tree of {revision}"), e))
    }

    /// Reads every file under `dir` as committed in `revision`, sorted by path.
    ///
    /// Reads the object database only, never the work tree: uncommitted edits are invisible.
    /// `dir` is relative to the repository root (`""`, `"."`, `"./apps/"` are accepted).
    /// Symlinks and submodules are skipped: their targets are not part of this tree, so
    /// following them would render content that the revision does not pin.
    pub fn read_files(&self, revision: &Revision, dir: &str) -> Result<Vec<SourceFile>, SourceError> {
        let dir = normalize_dir(dir)?;
        let root = self.tree_of(revision)?;

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
    /// Writes the whole tree of `revision` into `dest` (created if missing; it should be
    /// empty): regular files with their committed bytes (mode 0755 when Git says executable,
    /// else 0644), directories, and symlinks whose target resolves inside `dest`. A symlink
    /// leading out of the repository (absolute, or `..` past the root, directly or through
    /// other links) gives [`SourceError::SymlinkEscapes`]; submodules and `.git` entries are
    /// skipped. Reads the object database only. On error `dest` is left partly written: the
    /// caller removes it.
    pub fn checkout(&self, revision: &Revision, dest: &Path) -> Result<(), SourceError> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{OpenOptionsExt, symlink};

        let io_error = |action: String, source: std::io::Error| SourceError::Checkout {
            revision: revision.reference.clone(),
            dest: dest.to_owned(),
            action,
            source,
        };
        let root = self.tree_of(revision)?;
        std::fs::create_dir_all(dest).map_err(|e| io_error("creating the directory".to_owned(), e))?;

        let link_mode = i32::from(FileMode::Link);
        let executable_mode = i32::from(FileMode::BlobExecutable);
        // (repository-relative path, target bytes), checked once everything is written.
        let mut links: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut pending = vec![(PathBuf::new(), root)];
        while let Some((prefix, tree)) = pending.pop() {
            for entry in tree.iter() {
                let name = entry.name_bytes();
                if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                    return Err(self.git_error(
                        format!("checking out {revision}"),
                        git2::Error::from_str(&format!(
                            "invalid tree entry name {:?} in {:?}",
                            String::from_utf8_lossy(name),
                            prefix.display().to_string()
                        )),
                    ));
                }
                if name.eq_ignore_ascii_case(b".git") {
                    tracing::debug!(dir = %prefix.display(), "skipping a .git entry");
                    continue;
                }
                let relative = prefix.join(OsStr::from_bytes(name));
                let shown = || relative.display().to_string();
                let target = dest.join(&relative);
                match entry.kind() {
                    Some(ObjectType::Tree) => {
                        let subtree = self
                            .repo
                            .find_tree(entry.id())
                            .map_err(|e| self.git_error(format!("reading {:?}", shown()), e))?;
                        std::fs::create_dir(&target).map_err(|e| io_error(format!("creating {:?}", shown()), e))?;
                        pending.push((relative, subtree));
                    }
                    Some(ObjectType::Blob) => {
                        let blob = self
                            .repo
                            .find_blob(entry.id())
                            .map_err(|e| self.git_error(format!("reading {:?}", shown()), e))?;
                        if entry.filemode() == link_mode {
                            links.push((relative, blob.content().to_vec()));
                            continue;
                        }
                        let mode = if entry.filemode() == executable_mode {
                            0o755
                        } else {
                            0o644
                        };
                        let write = || -> std::io::Result<()> {
                            use std::io::Write;
                            let mut file = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(mode)
                                .open(&target)?;
                            file.write_all(blob.content())?;
                            // The umask may have narrowed the mode; Git's modes are exact.
                            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                        };
                        write().map_err(|e| io_error(format!("writing {:?}", shown()), e))?;
                    }
                    Some(ObjectType::Commit) => {
                        tracing::debug!(path = %shown(), "skipping submodule");
                    }
                    other => {
                        tracing::debug!(path = %shown(), kind = ?other, "skipping unexpected tree entry");
                    }
                }
            }
        }

        links.sort();
        for (relative, target) in &links {
            symlink(OsStr::from_bytes(target), dest.join(relative))
                .map_err(|e| io_error(format!("creating the symlink {:?}", relative.display().to_string()), e))?;
        }
        for (relative, target) in &links {
            if !link_stays_inside(dest, relative) {
                // Never leave a link out of the checkout behind, even if the caller forgets.
                let _ = std::fs::remove_file(dest.join(relative));
                return Err(SourceError::SymlinkEscapes {
                    path: relative.display().to_string(),
                    target: String::from_utf8_lossy(target).into_owned(),
                });
            }
        }
        Ok(())
    }
}

/// How many symlinks one resolution may follow (Linux's limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Whether the symlink at `link` (relative to `root`) resolves inside `root`, following links
/// the way the kernel does (`..` after a link applies to the link's target) but without
/// leaving `root` to look. Missing components are taken as plain names.
fn link_stays_inside(root: &Path, link: &Path) -> bool {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;

    let mut resolved: Vec<OsString> = Vec::new();
    let mut remaining: VecDeque<OsString> = link
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            _ => None,
        })
        .collect();
    let mut hops = 0usize;
    while let Some(name) = remaining.pop_front() {
        match name.to_str() {
            Some(".") => continue,
            Some("..") => {
                if resolved.pop().is_none() {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        resolved.push(name);
        let here: PathBuf = resolved.iter().collect();
        let Ok(meta) = std::fs::symlink_metadata(root.join(&here)) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return false;
        }
        let Ok(target) = std::fs::read_link(root.join(&here)) else {
            return false;
        };
        if target.has_root() {
            return false;
        }
        resolved.pop();
        let mut parts: Vec<OsString> = Vec::new();
        for component in target.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_owned()),
                Component::ParentDir => parts.push("..".into()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        for part in parts.into_iter().rev() {
            remaining.push_front(part);
        }
    }
    true
}
