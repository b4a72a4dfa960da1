//! Fetching remote repositories into per-source bare mirrors, with libgit2 (blocking: call
//! from a blocking thread).
//!
//! One bare repository per GitSource lives under the cache directory, named after the source
//! and a hash of its URL, and survives restarts. A fetch first lists the remote's references
//! (one connection, reused for the download), picks what the GitSource tracks, and downloads
//! only that reference with depth 1. A reference that already points where the remote says
//! is not downloaded again, and a later fetch brings only the new objects.
//!
//! Trust: an SSH host key must be listed in the GitSource's own known_hosts, checked in
//! libgit2's certificate callback; the process user's `~/.ssh` and git configuration are never
//! read (see [`Fetcher::new`]). HTTPS certificates are verified by libgit2 against the
//! system's CA bundle. Credentials never appear in messages: errors name the URL without
//! userinfo, and any text from libgit2 or the server is scrubbed of secret values.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, c_int};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use git2::cert::Cert;
use git2::{
    AutotagOption, CertificateCheckStatus, ConfigLevel, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions,
    FetchPrune, Oid, ProxyOptions, Reference, Remote, RemoteCallbacks, Repository, RepositoryInitOptions,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::credentials::{Credentials, scrub};
use super::known_hosts::KnownHostsSet;
use super::url::{self, Location, RemoteUrl, Transport};
use super::{GitReference, LocalRepository, Revision, SourceError, semver};

/// How long a TCP connection attempt may take (libgit2, process-wide).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection may stay silent before libgit2 gives up (process-wide). The
/// per-operation timeout is enforced on top of it in the progress callbacks.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Depth of every download: only the tracked commit, never its history.
const DEPTH: i32 = 1;
/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: fetch the full history of a shallow repository.
const UNSHALLOW: i32 = i32::MAX;
/// A refspec that matches nothing: connects and lists references without downloading.
const LIST_ONLY: &str = "refs/driftguard/list-only:refs/driftguard/list-only";
/// The phase of a fetch that transfers the pack.
const PHASE_DOWNLOADING: &str = "downloading objects";
/// Where commits fetched by id are kept referenced in a mirror.
const COMMIT_REFS: &str = "refs/driftguard/commits";
/// Digits of the URL hash in a mirror's directory name.
const URL_HASH_DIGITS: usize = 12;
/// Longest source-id part of a mirror's directory name.
const MAX_NAME: usize = 96;

/// Fetches GitSources into bare mirrors under a cache directory. Fetches of one mirror are
/// serialized process-wide (also across `Fetcher`s); different sources run in parallel.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
}

/// What to fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    /// `namespace/name` of the GitSource (names the mirror directory).
    pub source_id: &'a str,
    /// The GitSource `url`.
    pub url: &'a str,
    /// The GitSource `ref`.
    pub reference: &'a GitReference,
    /// Credentials from the GitSource `secretRef`.
    pub credentials: &'a Credentials,
    /// The whole operation's time budget.
    pub timeout: Duration,
}

/// The result of a fetch: the revision and the repository that holds it.
#[derive(Debug)]
pub struct Fetched {
    /// What the reference names now.
    pub revision: Revision,
    /// The repository to read files from (the mirror, or the local repository itself).
    pub repository: LocalRepository,
    /// What the fetch transferred.
    pub stats: FetchStats,
}

/// What one fetch transferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Objects received from the server.
    pub received_objects: usize,
    /// Objects indexed into the mirror.
    pub indexed_objects: usize,
    /// Bytes received from the server.
    pub received_bytes: usize,
    /// Wall time of the whole fetch.
    pub elapsed: Duration,
    /// Nothing had to be downloaded (the mirror already had the revision, or the repository
    /// is local).
    pub up_to_date: bool,
}

impl Fetcher {
    /// A fetcher keeping mirrors under `cache_dir` (created on first use).
    ///
    /// The first fetcher of a process also makes libgit2 hermetic, process-wide: the home
    /// directory and the global, XDG and system git configuration point nowhere (so neither
    /// `~/.ssh/known_hosts` nor a `~/.gitconfig` `insteadOf` can change what is trusted or
    /// where credentials go), connections time out after 15 s and go silent for at most 30 s.
    /// Create it before other threads use libgit2 (at startup).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        if let Err(error) = configure_libgit2() {
            tracing::warn!(%error, "could not configure libgit2 for fetching");
        }
        Fetcher {
            cache_dir: cache_dir.into(),
        }
    }

    /// The directory holding the mirrors.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Fetches and resolves the request's reference. Blocking.
    ///
    /// Local paths and `file://` URLs are opened in place and resolved (no mirror, no
    /// credentials). Remote URLs are fetched into `<cache_dir>/<source id>-<url hash>/`, a bare
    /// repository created on first use and fetched incrementally afterwards.
    pub fn fetch(&self, request: &FetchRequest<'_>) -> Result<Fetched, SourceError> {
        let started = Instant::now();
        match url::classify(request.url)? {
            Location::Local(_) => {
                let repository = LocalRepository::open(request.url)?;
                let revision = repository.resolve(request.reference)?;
                Ok(Fetched {
                    revision,
                    repository,
                    stats: FetchStats {
                        elapsed: started.elapsed(),
                        up_to_date: true,
                        ..FetchStats::default()
                    },
                })
            }
            Location::Remote(remote) => self.fetch_remote(request, &remote, started),
        }
    }

    /// The mirror of a remote source as last fetched, without touching the network: `None`
    /// for a local URL, or when nothing was fetched yet. Readers use it to read a commit that
    /// an earlier fetch brought (also after a restart, or while the server is down).
    pub fn open_cached(&self, source_id: &str, url: &str) -> Result<Option<LocalRepository>, SourceError> {
        let Location::Remote(remote) = url::classify(url)? else {
            return Ok(None);
        };
        let dir = self.mirror_dir(source_id, &remote);
        if !dir.join("HEAD").exists() {
            return Ok(None);
        }
        let repository = LocalRepository::open_mirror(&dir, &remote.display)?;
        let fetched_anything = repository
            .raw()
            .references()
            .map(|mut refs| refs.next().is_some())
            .unwrap_or(false);
        Ok(fetched_anything.then_some(repository))
    }

    /// `<cache_dir>/<sanitized source id>-<first 12 hex digits of sha256(url)>`.
    fn mirror_dir(&self, source_id: &str, remote: &RemoteUrl) -> PathBuf {
        let mut name: String = source_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_NAME)
            .collect();
        let name_is_dots = name.chars().all(|c| c == '.');
        if name.is_empty() || name_is_dots {
            name = "source".to_owned();
        }
        let digest = Sha256::digest(remote.url.as_bytes());
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.cache_dir
            .join(format!("{name}-{}", hash.get(..URL_HASH_DIGITS).unwrap_or(&hash)))
    }

    /// The lock serializing work on one mirror directory in this process.
    fn lock_for(dir: &Path) -> Arc<Mutex<()>> {
        static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
        let key = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let mut locks = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(key).or_default().clone()
    }

    fn fetch_remote(
        &self,
        request: &FetchRequest<'_>,
        remote: &RemoteUrl,
        started: Instant,
    ) -> Result<Fetched, SourceError> {
        check_reference(request.reference)?;
        let known_hosts = check_credentials(remote, request.credentials)?;
        let dir = self.mirror_dir(request.source_id, remote);
        let lock = Self::lock_for(&dir);
        let _serialized = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let repo = open_or_init(&self.cache_dir, &dir)?;
        let session = Session {
            remote,
            mirror: &dir,
            credentials: request.credentials,
            known_hosts,
            timeout: request.timeout,
            deadline: started + request.timeout,
            phase: Cell::new("connecting"),
            failure: RefCell::new(None),
            auth_attempts: Cell::new(0),
            objects: Cell::new((0, 0)),
        };
        let mirror = || LocalRepository::open_mirror(&dir, &remote.display);
        let done = |revision: Revision, stats: FetchStats| -> Result<Fetched, SourceError> {
            Ok(Fetched {
                revision,
                repository: mirror()?,
                stats: FetchStats {
                    elapsed: started.elapsed(),
                    ..stats
                },
            })
        };

        // A pinned commit that is already here never changes: no network at all.
        if let GitReference::Commit(_) = request.reference
            && let Ok(revision) = mirror()?.resolve(request.reference)
        {
            return done(
                revision,
                FetchStats {
                    up_to_date: true,
                    ..FetchStats::default()
                },
            );
        }

        let mut git_remote = repo
            .remote_anonymous(&remote.url)
            .map_err(|e| session.error(e, "preparing to fetch from"))?;
        let listed = session.list(&mut git_remote)?;
        prune_stale_refs(&repo, &listed);
        session.check_deadline()?;

        let (plan, resolve_as) = match request.reference {
            GitReference::Commit(id) => {
                return self.fetch_commit(&session, &repo, &mut git_remote, &listed, id, request.reference, &done);
            }
            other => plan(other, &listed, remote)?,
        };
        let mut stats = FetchStats::default();
        if plan.is_current(&repo) {
            let _ = git_remote.disconnect();
            stats.up_to_date = true;
        } else {
            stats = session.fetch(&mut git_remote, &plan.refspec, DEPTH)?;
        }
        if let Some(head) = &plan.set_head {
            repo.set_head(head).map_err(|e| SourceError::Git {
                action: format!("pointing HEAD at {head}"),
                repository: dir.display().to_string(),
                source: e,
            })?;
        }
        let revision = mirror()?.resolve(&resolve_as)?;
        done(revision, stats)
    }

    /// A commit by id: the tip of a listed reference if one points at it, else by id when the
    /// server allows it, else the default branch's full history.
    #[allow(clippy::too_many_arguments)]
    fn fetch_commit(
        &self,
        session: &Session<'_>,
        repo: &Repository,
        git_remote: &mut Remote<'_>,
        listed: &[Listed],
        id: &str,
        reference: &GitReference,
        done: &dyn Fn(Revision, FetchStats) -> Result<Fetched, SourceError>,
    ) -> Result<Fetched, SourceError> {
        let id = id.trim().to_ascii_lowercase();
        let resolve = |stats: FetchStats| -> Result<Fetched, SourceError> {
            let mirror = LocalRepository::open_mirror(session.mirror, &session.remote.display)?;
            done(mirror.resolve(reference)?, stats)
        };
        // The tip of a branch or tag: fetch that reference.
        if let Some(tip) = listed
            .iter()
            .find(|l| l.name != "HEAD" && l.oid.to_string().starts_with(&id))
        {
            let name = tip.name.trim_end_matches("^{}");
            let stats = session.fetch(git_remote, &format!("+{name}:{name}"), DEPTH)?;
            return resolve(stats);
        }
        let mut refusal = String::new();
        if id.len() == 40 {
            match session.fetch(git_remote, &format!("+{id}:{COMMIT_REFS}/{id}"), DEPTH) {
                Ok(stats) => {
                    if let Ok(fetched) = resolve(stats) {
                        return Ok(fetched);
                    }
                }
                Err(
                    error @ (SourceError::Timeout { .. }
                    | SourceError::Authentication { .. }
                    | SourceError::HostKey { .. }),
                ) => return Err(error),
                Err(SourceError::Transport { message, .. }) => refusal = message,
                Err(other) => return Err(other),
            }
        }
        // Fall back to the default branch's whole history.
        let Some(branch) = default_branch(listed) else {
            return Err(SourceError::ReferenceNotFound {
                reference: reference.to_string(),
                repository: session.remote.display.clone(),
                tried: vec![id],
                hint: "the remote repository has no default branch to search; check the URL".to_owned(),
            });
        };
        tracing::info!(
            url = %session.remote.display,
            %branch,
            "fetching the default branch's full history to find a pinned commit"
        );
        let depth = if repo.is_shallow() { UNSHALLOW } else { 0 };
        let stats = session.fetch(git_remote, &format!("+{branch}:{branch}"), depth)?;
        resolve(stats).map_err(|error| match error {
            SourceError::ReferenceNotFound {
                reference,
                repository,
                tried,
                ..
            } => SourceError::ReferenceNotFound {
                reference,
                repository,
                tried,
                hint: format!(
                    "the commit is not in the history of the default branch {} and {}; push it to a \
                     branch or tag (and track that), or check the id",
                    branch.trim_start_matches("refs/heads/"),
                    if refusal.is_empty() {
                        "an abbreviated id cannot be fetched directly (use all 40 digits)".to_owned()
                    } else {
                        format!("the server does not serve it by id ({refusal})")
                    }
                ),
            },
            other => other,
        })
    }
}

/// One reference as the remote advertises it.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    oid: Oid,
    symref: Option<String>,
}

/// What to download for a reference.
#[derive(Debug)]
struct Plan {
    /// `+<remote ref>:<local ref>`.
    refspec: String,
    /// The local reference the refspec writes.
    local: String,
    /// Where the remote reference points now.
    remote_oid: Oid,
    /// Point the mirror's HEAD here (tracking the remote's default branch).
    set_head: Option<String>,
}

impl Plan {
    /// The mirror already has the reference where the remote has it.
    fn is_current(&self, repo: &Repository) -> bool {
        repo.refname_to_id(&self.local)
            .is_ok_and(|oid| oid == self.remote_oid && repo.find_object(oid, None).is_ok())
    }
}

/// The refspec for a branch, tag, semver range or HEAD, and what to resolve afterwards.
fn plan(reference: &GitReference, listed: &[Listed], remote: &RemoteUrl) -> Result<(Plan, GitReference), SourceError> {
    let find = |name: &str| listed.iter().find(|l| l.name == name);
    let not_found = |tried: Vec<String>, hint: String| SourceError::ReferenceNotFound {
        reference: reference.to_string(),
        repository: remote.display.clone(),
        tried,
        hint,
    };
    let simple = |full: String, set_head: Option<String>| -> Option<Plan> {
        find(&full).map(|l| Plan {
            refspec: format!("+{full}:{full}"),
            local: full.clone(),
            remote_oid: l.oid,
            set_head,
        })
    };
    match reference {
        GitReference::Head => {
            let branch = default_branch(listed).ok_or_else(|| {
                not_found(
                    vec!["HEAD".to_owned()],
                    "the remote repository has no default branch (is it empty?); push a commit or track a \
                     branch"
                        .to_owned(),
                )
            })?;
            let plan = simple(branch.clone(), Some(branch.clone()))
                .ok_or_else(|| not_found(vec![branch.clone()], "the default branch is not advertised".to_owned()))?;
            Ok((plan, GitReference::Head))
        }
        GitReference::Branch(name) | GitReference::Tag(name) => {
            let (prefix, kind) = match reference {
                GitReference::Branch(_) => ("refs/heads/", "branches"),
                _ => ("refs/tags/", "tags"),
            };
            let full = if name.starts_with("refs/") {
                name.clone()
            } else {
                format!("{prefix}{name}")
            };
            let plan =
                simple(full.clone(), None).ok_or_else(|| not_found(vec![full], suggestions(listed, prefix, kind)))?;
            Ok((plan, reference.clone()))
        }
        GitReference::Semver(range) => {
            let tags: Vec<String> = listed
                .iter()
                .filter_map(|l| l.name.strip_prefix("refs/tags/"))
                .filter(|n| !n.ends_with("^{}"))
                .map(str::to_owned)
                .collect();
            let picked = semver::highest_match(range, tags.iter().map(String::as_str)).map_err(|e| {
                SourceError::InvalidReference {
                    reference: reference.to_string(),
                    reason: e.reason,
                }
            })?;
            let Some(tag) = picked else {
                return Err(not_found(vec!["refs/tags/*".to_owned()], super::semver_hint(&tags)));
            };
            let full = format!("refs/tags/{tag}");
            let plan = simple(full.clone(), None)
                .ok_or_else(|| not_found(vec![full], "the tag vanished while listing".to_owned()))?;
            Ok((plan, GitReference::Tag(tag)))
        }
        GitReference::Commit(_) => Err(SourceError::InvalidReference {
            reference: reference.to_string(),
            reason: "commits are fetched by fetch_commit".to_owned(),
        }),
    }
}

/// The branch the remote's HEAD names: its symref target, else the branch at the same commit
/// (preferring `main`, then `master`).
fn default_branch(listed: &[Listed]) -> Option<String> {
    let head = listed.iter().find(|l| l.name == "HEAD")?;
    if let Some(target) = head.symref.as_ref().filter(|t| t.starts_with("refs/heads/")) {
        return Some(target.clone());
    }
    let mut candidates: Vec<&str> = listed
        .iter()
        .filter(|l| l.oid == head.oid && l.name.starts_with("refs/heads/"))
        .map(|l| l.name.as_str())
        .collect();
    candidates.sort_by_key(|name| match *name {
        "refs/heads/main" => (0, *name),
        "refs/heads/master" => (1, *name),
        other => (2, other),
    });
    candidates.first().map(|name| (*name).to_owned())
}

fn suggestions(listed: &[Listed], prefix: &str, kind: &str) -> String {
    let mut names: Vec<&str> = listed
        .iter()
        .filter_map(|l| l.name.strip_prefix(prefix))
        .filter(|n| !n.ends_with("^{}"))
        .collect();
    names.sort_unstable();
    if names.is_empty() {
        return format!("the remote has no {kind}; check the GitSource ref");
    }
    let total = names.len();
    names.truncate(10);
    let more = if total > names.len() {
        format!(" and {} more", total - names.len())
    } else {
        String::new()
    };
    format!("the remote has {}{more}; check the GitSource ref", names.join(", "))
}

/// Deletes mirror branches and tags that the remote no longer has, so that the mirror never
/// answers with a reference the remote deleted (a semver range must not pick a withdrawn tag).
fn prune_stale_refs(repo: &Repository, listed: &[Listed]) {
    let remote: BTreeSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    for glob in ["refs/heads/*", "refs/tags/*"] {
        let Ok(refs) = repo.references_glob(glob) else {
            continue;
        };
        let stale: Vec<String> = refs
            .filter_map(Result::ok)
            .filter_map(|r| r.name().ok().map(str::to_owned))
            .filter(|name| !remote.contains(name.as_str()))
            .collect();
        for name in stale {
            if let Ok(mut reference) = repo.find_reference(&name)
                && let Err(error) = reference.delete()
            {
                tracing::warn!(reference = %name, %error, "could not prune a stale mirror reference");
            }
        }
    }
}

/// Refuses references that cannot be fetched before any network traffic.
fn check_reference(reference: &GitReference) -> Result<(), SourceError> {
    let invalid = |reason: String| SourceError::InvalidReference {
        reference: reference.to_string(),
        reason,
    };
    match reference {
        GitReference::Head => Ok(()),
        GitReference::Branch(name) | GitReference::Tag(name) => {
            if name.is_empty() {
                return Err(invalid("the name is empty".to_owned()));
            }
            let prefix = if matches!(reference, GitReference::Branch(_)) {
                "refs/heads/"
            } else {
                "refs/tags/"
            };
            let full = if name.starts_with("refs/") {
                name.clone()
            } else {
                format!("{prefix}{name}")
            };
            if Reference::is_valid_name(&full) {
                Ok(())
            } else {
                Err(invalid(format!("{full:?} is not a valid Git reference name")))
            }
        }
        GitReference::Commit(id) => {
            let id = id.trim();
            if (4..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(invalid("a commit is 4 to 40 hexadecimal digits".to_owned()))
            }
        }
        GitReference::Semver(range) => semver::validate(range).map_err(|e| invalid(e.reason)),
    }
}

/// Checks that the credentials fit the transport; returns the parsed known_hosts for SSH.
fn check_credentials(remote: &RemoteUrl, credentials: &Credentials) -> Result<Option<KnownHostsSet>, SourceError> {
    let invalid = |reason: String| SourceError::InvalidCredentials { reason };
    match (remote.transport, credentials) {
        (Transport::Ssh, Credentials::Ssh { known_hosts, .. }) => {
            KnownHostsSet::parse(known_hosts)
                .map(Some)
                .map_err(|reason| SourceError::HostKey {
                    url: remote.display.clone(),
                    reason,
                })
        }
        (Transport::Ssh, other) => Err(invalid(format!(
            "{} needs an SSH key: set the GitSource secretRef to a Secret with identity (the private key) and \
             known_hosts (the host's public keys){}",
            remote.display,
            if matches!(other, Credentials::None) {
                String::new()
            } else {
                format!(
                    "; the Secret holds {} credentials, which are for https:// URLs",
                    other.kind()
                )
            }
        ))),
        (Transport::Git, Credentials::None) => Ok(None),
        (Transport::Git, _) => Err(invalid(format!(
            "{} uses git://, which has no authentication; remove the secretRef or use an https:// or ssh:// URL",
            remote.display
        ))),
        (Transport::Http | Transport::Https, Credentials::Ssh { .. }) => Err(invalid(format!(
            "identity and known_hosts are for ssh:// URLs, but {} is {}; use the repository's SSH URL or \
             username/password or bearerToken",
            remote.display,
            if remote.transport == Transport::Http {
                "http://"
            } else {
                "https://"
            }
        ))),
        (Transport::Http, Credentials::Basic { .. } | Credentials::Bearer(_)) if !is_loopback(&remote.host) => {
            Err(invalid(format!(
                "credentials would travel unencrypted over http:// to {}; use the https:// URL",
                remote.host
            )))
        }
        (_, Credentials::Bearer(token)) if token.is_empty() || token.bytes().any(|b| b.is_ascii_control()) => Err(
            invalid("the bearer token is empty or contains control characters".to_owned()),
        ),
        _ => Ok(None),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Opens the mirror at `dir`, creating it (atomically, by renaming a fresh bare repository
/// into place) when missing and recreating it when it is not a usable repository.
fn open_or_init(cache_dir: &Path, dir: &Path) -> Result<Repository, SourceError> {
    let cache_error = |path: &Path, action: &str, reason: String| SourceError::Cache {
        path: path.to_owned(),
        action: action.to_owned(),
        reason,
    };
    if dir.exists() {
        match Repository::open_bare(dir) {
            Ok(repo) => return Ok(repo),
            Err(error) => {
                tracing::warn!(
                    mirror = %dir.display(),
                    error = %error.message(),
                    "the cached mirror is not a usable repository; creating it again"
                );
                std::fs::remove_dir_all(dir)
                    .map_err(|e| cache_error(dir, "removing a broken mirror", e.to_string()))?;
            }
        }
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| cache_error(cache_dir, "creating the directory", e.to_string()))?;
    let file_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static STAGING: AtomicU64 = AtomicU64::new(0);
    let staging = cache_dir.join(format!(
        ".{file_name}.new-{}-{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| cache_error(&staging, "removing a leftover staging directory", e.to_string()))?;
    }
    let mut options = RepositoryInitOptions::new();
    options.bare(true).external_template(false).mkpath(true);
    Repository::init_opts(&staging, &options)
        .map_err(|e| cache_error(&staging, "creating a bare repository", e.message().to_owned()))?;
    if let Err(error) = std::fs::rename(&staging, dir) {
        let _ = std::fs::remove_dir_all(&staging);
        if !dir.exists() {
            return Err(cache_error(dir, "moving the new mirror into place", error.to_string()));
        }
    }
    Repository::open_bare(dir).map_err(|e| cache_error(dir, "opening the new mirror", e.message().to_owned()))
}

/// Why a callback aborted the operation (libgit2 only sees a generic error).
#[derive(Debug)]
enum Failure {
    Timeout,
    Authentication(String),
    HostKey(String),
}

/// One fetch's connection state, shared by the libgit2 callbacks.
struct Session<'a> {
    remote: &'a RemoteUrl,
    mirror: &'a Path,
    credentials: &'a Credentials,
    known_hosts: Option<KnownHostsSet>,
    timeout: Duration,
    deadline: Instant,
    phase: Cell<&'static str>,
    failure: RefCell<Option<Failure>>,
    auth_attempts: Cell<u32>,
    /// Objects of the pack being downloaded: (received, total announced by its header).
    objects: Cell<(usize, usize)>,
}

impl Session<'_> {
    /// Connects and lists the remote's references; the connection stays open for the
    /// download. (A download whose refspec matches nothing: unlike `connect_auth`, it sends
    /// the bearer token header.)
    fn list(&self, remote: &mut Remote<'_>) -> Result<Vec<Listed>, SourceError> {
        self.phase.set("connecting and listing references");
        let mut options = self.options(0);
        remote
            .download(&[LIST_ONLY], Some(&mut options))
            .map_err(|e| self.error(e, "listing the references of"))?;
        let heads = remote.list().map_err(|e| self.error(e, "listing the references of"))?;
        Ok(heads
            .iter()
            .map(|head| Listed {
                name: head.name().to_owned(),
                oid: head.oid(),
                symref: head.symref_target().map(str::to_owned),
            })
            .collect())
    }

    /// Downloads one refspec and updates the local reference.
    fn fetch(&self, remote: &mut Remote<'_>, refspec: &str, depth: i32) -> Result<FetchStats, SourceError> {
        self.check_deadline()?;
        self.phase.set(PHASE_DOWNLOADING);
        self.objects.set((0, 0));
        let mut options = self.options(depth);
        remote
            .fetch(&[refspec], Some(&mut options), Some("driftguard fetch"))
            .map_err(|e| self.error(e, "fetching from"))?;
        let progress = remote.stats();
        Ok(FetchStats {
            received_objects: progress.received_objects(),
            indexed_objects: progress.indexed_objects(),
            received_bytes: progress.received_bytes(),
            elapsed: Duration::ZERO,
            up_to_date: false,
        })
    }

    fn options(&self, depth: i32) -> FetchOptions<'_> {
        let mut options = FetchOptions::new();
        let mut proxy = ProxyOptions::new();
        proxy.auto();
        options
            .remote_callbacks(self.callbacks())
            .proxy_options(proxy)
            .download_tags(AutotagOption::None)
            .prune(FetchPrune::Off)
            .update_fetchhead(false)
            .depth(depth);
        if let Credentials::Bearer(token) = self.credentials {
            // Validated in check_credentials: no control characters, so no CString panic.
            let header = Zeroizing::new(format!("Authorization: Bearer {}", token.as_str()));
            options.custom_headers(&[header.as_str()]);
        }
        options
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, user_from_url, allowed| self.credential(user_from_url, allowed));
        callbacks.certificate_check(move |cert, _host| self.certificate(cert));
        callbacks.transfer_progress(move |progress| {
            self.objects
                .set((progress.received_objects(), progress.total_objects()));
            self.alive()
        });
        callbacks.sideband_progress(move |_| self.alive());
        callbacks
    }

    fn alive(&self) -> bool {
        if Instant::now() < self.deadline {
            return true;
        }
        self.fail(Failure::Timeout);
        false
    }

    fn fail(&self, failure: Failure) {
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(failure);
        }
    }

    fn abort(&self, failure: Failure) -> git2::Error {
        self.fail(failure);
        git2::Error::from_str("aborted by driftguard")
    }

    fn check_deadline(&self) -> Result<(), SourceError> {
        if Instant::now() < self.deadline {
            return Ok(());
        }
        Err(SourceError::Timeout {
            url: self.remote.display.clone(),
            timeout: self.timeout,
            phase: self.phase.get().to_owned(),
        })
    }

    fn credential(&self, user_from_url: Option<&str>, allowed: CredentialType) -> Result<Cred, git2::Error> {
        if !self.alive() {
            return Err(git2::Error::from_str("timed out"));
        }
        self.phase.set("authenticating");
        let attempt = || {
            let n = self.auth_attempts.get() + 1;
            self.auth_attempts.set(n);
            n
        };
        match self.credentials {
            Credentials::Ssh {
                username,
                private_key,
                passphrase,
                ..
            } => {
                let user = self.remote.username.as_deref().or(user_from_url).unwrap_or(username);
                if allowed.contains(CredentialType::USERNAME) {
                    return Cred::username(user);
                }
                if !allowed.contains(CredentialType::SSH_MEMORY) {
                    return Err(self.abort(Failure::Authentication(
                        "the SSH server does not offer public-key authentication".to_owned(),
                    )));
                }
                if attempt() > 1 {
                    return Err(self.abort(Failure::Authentication(format!(
                        "the SSH server refused the key in identity for user {user:?}; check that its public key \
                         is authorized for this repository (e.g. as a deploy key) and that the URL names the \
                         right user"
                    ))));
                }
                Cred::ssh_key_from_memory(user, None, private_key, passphrase.as_ref().map(|p| p.as_str()))
            }
            Credentials::Basic { username, password } if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                if attempt() > 1 {
                    return Err(self.abort(Failure::Authentication(format!(
                        "the server refused username {username:?} with the given password (HTTP 401); check \
                         username and password in the GitSource secretRef (for a token, its scopes and expiry)"
                    ))));
                }
                Cred::userpass_plaintext(username, password)
            }
            Credentials::Bearer(_) => Err(self.abort(Failure::Authentication(
                "the server refused the bearer token (HTTP 401); check bearerToken in the GitSource secretRef: \
                 is it valid, unexpired, and allowed to read this repository?"
                    .to_owned(),
            ))),
            Credentials::None => Err(self.abort(Failure::Authentication(
                "the server requires authentication; set the GitSource secretRef to a Secret with \
                 username/password or bearerToken"
                    .to_owned(),
            ))),
            other => Err(self.abort(Failure::Authentication(format!(
                "the server asks for credentials that {} credentials cannot provide",
                other.kind()
            )))),
        }
    }

    fn certificate(&self, cert: &Cert<'_>) -> Result<CertificateCheckStatus, git2::Error> {
        if !self.alive() {
            return Err(git2::Error::from_str("timed out"));
        }
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has verified the chain and host name against the system's CAs;
            // keep its verdict.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(known_hosts) = &self.known_hosts else {
            return Err(self.abort(Failure::HostKey(
                "no known_hosts were given; SSH needs identity and known_hosts in the GitSource secretRef".to_owned(),
            )));
        };
        let Some(raw) = hostkey.hostkey() else {
            return Err(self.abort(Failure::HostKey(
                "the SSH library did not report the server's raw host key".to_owned(),
            )));
        };
        match known_hosts.check(&self.remote.known_hosts_name(), raw) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(refused) => Err(self.abort(Failure::HostKey(refused.0))),
        }
    }

    /// Turns a libgit2 error into a `SourceError` that names the URL and what to do, and
    /// holds no secret.
    fn error(&self, error: git2::Error, action: &str) -> SourceError {
        let url = self.remote.display.clone();
        match self.failure.borrow_mut().take() {
            Some(Failure::Timeout) => {
                return SourceError::Timeout {
                    url,
                    timeout: self.timeout,
                    phase: self.phase.get().to_owned(),
                };
            }
            Some(Failure::Authentication(reason)) => return SourceError::Authentication { url, reason },
            Some(Failure::HostKey(reason)) => return SourceError::HostKey { url, reason },
            None => {}
        }
        let message = scrub(error.message(), self.credentials);
        let lower = message.to_ascii_lowercase();
        if lower.contains("timed out") || lower.contains("timeout") {
            return SourceError::Timeout {
                url,
                timeout: self.timeout.min(IO_TIMEOUT.max(CONNECT_TIMEOUT)),
                phase: self.phase.get().to_owned(),
            };
        }
        let authentication = |reason: String| SourceError::Authentication {
            url: url.clone(),
            reason,
        };
        if error.code() == ErrorCode::Auth || lower.contains("status code: 401") {
            return authentication(format!("{message}; check the credentials in the GitSource secretRef"));
        }
        if lower.contains("status code: 403") {
            return authentication(format!(
                "{message}; the credentials are valid but may not read this repository"
            ));
        }
        if error.class() == ErrorClass::Ssh
            && (lower.contains("private key") || lower.contains("passphrase") || lower.contains("public key"))
        {
            return authentication(format!(
                "the SSH key in identity could not be used ({message}); check the key and, if it is encrypted, \
                 its passphrase in password"
            ));
        }
        if error.class() == ErrorClass::Ssh && lower.contains("authenticat") {
            return authentication(format!("{message}; check identity and the SSH user"));
        }
        let downloading = self.phase.get() == PHASE_DOWNLOADING;
        if let Some(damage) = damaged_download(&error, &lower, downloading, self.objects.get()) {
            return SourceError::Transport {
                url,
                action: action.to_owned(),
                message,
                hint: format!(
                    "{damage}: nothing of it was kept, the last good revision stays in use and the fetch is \
                     retried at the next interval; if this persists, check the repository on the server \
                     (git fsck) and any proxy in between"
                ),
            };
        }
        let hint = if error.code() == ErrorCode::Certificate || error.class() == ErrorClass::Ssl {
            "the server's TLS certificate is not trusted by this machine's CA certificates, or does not name \
             the host"
        } else if lower.contains("404") || lower.contains("not found") || lower.contains("does not appear") {
            "check the repository path in the URL"
        } else if matches!(error.class(), ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh) {
            "check the URL and that the Git server is up and reachable from driftguard (DNS, firewall, proxy)"
        } else {
            "check the URL and the Git server"
        };
        SourceError::Transport {
            url,
            action: action.to_owned(),
            message,
            hint: hint.to_owned(),
        }
    }
}

/// What was wrong with a download that failed on its data rather than on reaching the
/// server: a pack that does not inflate, index or match its checksum, or an answer that ended
/// before its pack was complete. None for any other failure. libgit2 writes a download to a
/// temporary pack and moves it into the mirror (and the reference) only once it is indexed and
/// verified, so such a failure leaves the mirror as it was.
fn damaged_download(
    error: &git2::Error,
    lower_message: &str,
    downloading: bool,
    (received, total): (usize, usize),
) -> Option<&'static str> {
    const CORRUPT: &str = "the server sent a corrupt pack";
    const INCOMPLETE: &str = "the server's answer ended before its pack was complete (an incomplete pack)";
    if matches!(error.class(), ErrorClass::Zlib | ErrorClass::Indexer)
        || ["packfile", "pack trailer", "checksum mismatch", "corrupt"]
            .iter()
            .any(|needle| lower_message.contains(needle))
    {
        return Some(CORRUPT);
    }
    let ended_early = ["early eof", "unexpected eof", "could not read from remote"]
        .iter()
        .any(|needle| lower_message.contains(needle));
    (downloading && (ended_early || (total > 0 && received < total))).then_some(INCOMPLETE)
}

/// Process-wide libgit2 settings for fetching (see [`Fetcher::new`]); applied once.
fn configure_libgit2() -> Result<(), String> {
    static CONFIGURED: OnceLock<Result<(), String>> = OnceLock::new();
    CONFIGURED.get_or_init(apply_libgit2_settings).clone()
}

#[allow(unsafe_code)]
fn apply_libgit2_settings() -> Result<(), String> {
    let millis = |d: Duration| c_int::try_from(d.as_millis()).unwrap_or(c_int::MAX);
    // Nothing can exist below /dev/null: no home files, no global or system configuration.
    let nowhere = "/dev/null";
    let home = CString::new(nowhere).map_err(|e| e.to_string())?;
    // SAFETY: these calls write libgit2's process-wide option globals without locking. They
    // run once (OnceLock), from the first Fetcher::new, which the binary calls at startup
    // before other threads use libgit2; libgit2 reads the values only when it opens a
    // connection or looks up a home or configuration file. `home` outlives the call, and
    // libgit2 copies the string.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
        git2::opts::set_server_timeout_in_milliseconds(millis(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        for level in [ConfigLevel::System, ConfigLevel::XDG, ConfigLevel::Global] {
            git2::opts::set_search_path(level, nowhere).map_err(|e| e.to_string())?;
        }
        let option = c_int::try_from(libgit2_sys::GIT_OPT_SET_HOMEDIR).map_err(|e| e.to_string())?;
        if libgit2_sys::git_libgit2_opts(option, home.as_ptr()) < 0 {
            return Err("libgit2 refused GIT_OPT_SET_HOMEDIR".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(pairs: &[(&str, &str)]) -> Vec<Listed> {
        pairs
            .iter()
            .map(|(name, oid)| Listed {
                name: (*name).to_owned(),
                oid: Oid::from_str(oid).unwrap(),
                symref: None,
            })
            .collect()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn remote() -> RemoteUrl {
        match url::classify("https://git.example.com/org/repo.git").unwrap() {
            Location::Remote(remote) => remote,
            Location::Local(_) => unreachable!(),
        }
    }

    #[test]
    fn damaged_downloads_are_told_apart_from_unreachable_servers() {
        let error = |class, message: &str| git2::Error::new(ErrorCode::GenericError, class, message);
        let zlib = error(ErrorClass::Zlib, "error reading from the zlib stream");
        assert!(
            damaged_download(&zlib, "error reading from the zlib stream", true, (0, 0))
                .is_some_and(|d| d.contains("corrupt"))
        );
        let trailer = error(ErrorClass::Indexer, "packfile trailer mismatch");
        assert!(
            damaged_download(&trailer, "packfile trailer mismatch", true, (3, 3))
                .is_some_and(|d| d.contains("corrupt"))
        );
        let eof = error(ErrorClass::Net, "could not read from remote repository");
        let lower = "could not read from remote repository";
        assert!(damaged_download(&eof, lower, true, (0, 0)).is_some_and(|d| d.contains("incomplete pack")));
        assert_eq!(
            damaged_download(&eof, lower, false, (0, 0)),
            None,
            "listing: the server is unreachable"
        );
        let reset = error(ErrorClass::Net, "connection reset by peer");
        assert!(
            damaged_download(&reset, "connection reset by peer", true, (2, 5))
                .is_some_and(|d| d.contains("incomplete"))
        );
        assert_eq!(damaged_download(&reset, "connection reset by peer", true, (5, 5)), None);
        let refused = error(ErrorClass::Os, "failed to connect to 127.0.0.1: Connection refused");
        assert_eq!(
            damaged_download(
                &refused,
                "failed to connect to 127.0.0.1: connection refused",
                false,
                (0, 0)
            ),
            None
        );
    }

    #[test]
    fn default_branch_prefers_the_symref_then_main() {
        let mut refs = listed(&[
            ("HEAD", A),
            ("refs/heads/dev", A),
            ("refs/heads/main", A),
            ("refs/heads/x", B),
        ]);
        assert_eq!(default_branch(&refs).as_deref(), Some("refs/heads/main"));
        refs[0].symref = Some("refs/heads/dev".to_owned());
        assert_eq!(default_branch(&refs).as_deref(), Some("refs/heads/dev"));
        assert_eq!(default_branch(&listed(&[("refs/heads/main", A)])), None);
    }

    #[test]
    fn plans_name_exactly_one_ref() {
        let refs = listed(&[
            ("HEAD", A),
            ("refs/heads/main", A),
            ("refs/tags/v1.0.0", B),
            ("refs/tags/v1.0.0^{}", A),
            ("refs/tags/v1.2.0", A),
            ("refs/tags/v2.0.0-rc.1", A),
        ]);
        let (plan_, resolve) = plan(&GitReference::Branch("main".into()), &refs, &remote()).unwrap();
        assert_eq!(plan_.refspec, "+refs/heads/main:refs/heads/main");
        assert_eq!(resolve, GitReference::Branch("main".into()));
        let (plan_, _) = plan(&GitReference::Head, &refs, &remote()).unwrap();
        assert_eq!(plan_.set_head.as_deref(), Some("refs/heads/main"));
        let (plan_, resolve) = plan(&GitReference::Semver("^1".into()), &refs, &remote()).unwrap();
        assert_eq!(plan_.refspec, "+refs/tags/v1.2.0:refs/tags/v1.2.0");
        assert_eq!(resolve, GitReference::Tag("v1.2.0".into()));
        let (plan_, _) = plan(&GitReference::Tag("v1.0.0".into()), &refs, &remote()).unwrap();
        assert_eq!(plan_.remote_oid.to_string(), B, "the tag object, not the peeled commit");

        let missing = plan(&GitReference::Branch("nope".into()), &refs, &remote())
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("https://git.example.com/org/repo.git") && missing.contains("the remote has main"),
            "{missing}"
        );
        let none = plan(&GitReference::Semver("^3".into()), &refs, &remote())
            .unwrap_err()
            .to_string();
        assert!(none.contains("v2.0.0-rc.1, v1.2.0, v1.0.0"), "{none}");
    }

    #[test]
    fn references_and_credentials_are_checked_before_the_network() {
        for bad in [
            GitReference::Branch(String::new()),
            GitReference::Branch("a..b".into()),
            GitReference::Tag("x y".into()),
            GitReference::Commit("xyz".into()),
            GitReference::Semver(">=".into()),
        ] {
            assert!(
                matches!(check_reference(&bad), Err(SourceError::InvalidReference { .. })),
                "{bad}"
            );
        }
        let ssh = match url::classify("git@github.com:org/repo.git").unwrap() {
            Location::Remote(remote) => remote,
            Location::Local(_) => unreachable!(),
        };
        let err = check_credentials(&ssh, &Credentials::None).unwrap_err().to_string();
        assert!(err.contains("identity") && err.contains("known_hosts"), "{err}");
        let empty_hosts = Credentials::Ssh {
            username: "git".into(),
            private_key: Zeroizing::new("-----BEGIN OPENSSH PRIVATE KEY-----\nsecretkeymaterial\n".into()),
            passphrase: None,
            known_hosts: String::new(),
        };
        let err = check_credentials(&ssh, &empty_hosts).unwrap_err().to_string();
        assert!(err.contains("known_hosts is empty"), "{err}");
        assert!(!err.contains("secretkeymaterial"), "{err}");
        let http = match url::classify("http://git.example.com/repo").unwrap() {
            Location::Remote(remote) => remote,
            Location::Local(_) => unreachable!(),
        };
        let basic = Credentials::Basic {
            username: "bot".into(),
            password: Zeroizing::new("hunter2".into()),
        };
        let err = check_credentials(&http, &basic).unwrap_err().to_string();
        assert!(err.contains("unencrypted") && !err.contains("hunter2"), "{err}");
        let bad_token = Credentials::Bearer(Zeroizing::new("a\0b".into()));
        assert!(check_credentials(&remote(), &bad_token).is_err());
    }

    #[test]
    fn mirror_dirs_are_stable_sanitized_and_url_specific() {
        let fetcher = Fetcher {
            cache_dir: PathBuf::from("/cache"),
        };
        let remote = remote();
        let dir = fetcher.mirror_dir("team/apps", &remote);
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with("team_apps-") && name.len() == "team_apps-".len() + 12,
            "{name}"
        );
        assert_eq!(dir, fetcher.mirror_dir("team/apps", &remote));
        let other = match url::classify("https://git.example.com/org/other.git").unwrap() {
            Location::Remote(remote) => remote,
            Location::Local(_) => unreachable!(),
        };
        assert_ne!(dir, fetcher.mirror_dir("team/apps", &other));
        let dots = fetcher.mirror_dir("..", &remote);
        assert!(dots.file_name().unwrap().to_str().unwrap().starts_with("source-"));
    }
}
