//! Fetching from real Git servers (git daemon, OpenSSH sshd, smart HTTP via git http-backend)
//! into per-source bare mirrors: shallow and incremental transfers, every kind of ref,
//! credentials and host-key pinning, and what happens when the server goes away.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftguard::source::{Credentials, FetchRequest, Fetched, Fetcher, GitReference, SourceError};
use support::git;
use support::gitservers::{GitDaemon, HttpAuth, SmartHttp, SshKey, Sshd, ssh_keygen};
use tempfile::TempDir;
use zeroize::Zeroizing;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Prints how long a test took (the figures go into the issue).
struct Timer(&'static str, Instant);

impl Timer {
    fn start(name: &'static str) -> Timer {
        Timer(name, Instant::now())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("timing: {} took {:?}", self.0, self.1.elapsed());
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A new work-tree repository `<tmp>/srv/<name>` on branch main.
fn new_repo(tmp: &Path, name: &str) -> PathBuf {
    let repo = tmp.join("srv").join(name);
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    repo
}

/// Writes `rel` and commits everything; returns the commit id.
fn commit(repo: &Path, rel: &str, content: &str) -> String {
    write(repo, rel, content);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("change {rel}")]);
    git(repo, &["rev-parse", "HEAD"])
}

fn deployment(replicas: u32) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n")
}

/// A repository with five commits on main, each changing apps/web/deploy.yaml, and a few
/// other files that never change.
fn history_repo(tmp: &Path) -> (PathBuf, Vec<String>) {
    let repo = new_repo(tmp, "repo");
    write(&repo, "apps/db/config.yaml", "kind: ConfigMap\n");
    write(&repo, "README.md", "# apps\n");
    let commits = (1..=5)
        .map(|i| commit(&repo, "apps/web/deploy.yaml", &deployment(i)))
        .collect();
    (repo, commits)
}

fn request<'a>(
    source_id: &'a str,
    url: &'a str,
    reference: &'a GitReference,
    credentials: &'a Credentials,
) -> FetchRequest<'a> {
    FetchRequest {
        source_id,
        url,
        reference,
        credentials,
        timeout: TIMEOUT,
    }
}

fn fetch(fetcher: &Fetcher, source: &str, url: &str, reference: &GitReference) -> Result<Fetched, SourceError> {
    fetcher.fetch(&request(source, url, reference, &Credentials::None))
}

fn branch(name: &str) -> GitReference {
    GitReference::Branch(name.to_owned())
}

/// `git rev-list --all --count` and whether the repository is shallow.
fn mirror_shape(mirror: &Path) -> (usize, bool) {
    let count = git(mirror, &["rev-list", "--all", "--count"]).parse().unwrap();
    let shallow = git(mirror, &["rev-parse", "--is-shallow-repository"]) == "true";
    (count, shallow)
}

fn file_content(fetched: &Fetched, path: &str) -> String {
    let dir = Path::new(path).parent().unwrap().to_str().unwrap();
    let files = fetched.repository.read_files(&fetched.revision, dir).unwrap();
    let file = files.iter().find(|f| f.path == path).unwrap();
    String::from_utf8(file.content.clone()).unwrap()
}

#[test]
fn daemon_fetch_is_shallow_incremental_and_follows_the_branch() {
    let _timer = Timer::start("daemon_fetch_is_shallow_incremental_and_follows_the_branch");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (repo, commits) = history_repo(tmp.path());
    let daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");

    let first = fetch(&fetcher, "team/apps", &url, &branch("main")).unwrap();
    let tip = commits.last().unwrap();
    assert_eq!(first.revision.commit, *tip);
    assert_eq!(first.revision.reference, format!("main@sha1:{tip}"));
    assert!(!first.stats.up_to_date);
    // The commit, 4 trees (root, apps, apps/web, apps/db) and 3 blobs; never the 4 older commits.
    assert!(
        (6..=9).contains(&first.stats.received_objects),
        "first fetch: {:?}",
        first.stats
    );
    let mirror = first.repository.path().to_owned();
    assert!(mirror.starts_with(tmp.path().join("cache")), "{}", mirror.display());
    assert!(
        mirror.file_name().unwrap().to_str().unwrap().starts_with("team_apps-"),
        "{}",
        mirror.display()
    );
    assert_eq!(mirror_shape(&mirror), (1, true), "depth 1: only the tip commit");
    assert_eq!(file_content(&first, "apps/web/deploy.yaml"), deployment(5));

    // Nothing new: nothing is downloaded.
    let again = fetch(&fetcher, "team/apps", &url, &branch("main")).unwrap();
    assert_eq!(again.revision, first.revision);
    assert!(again.stats.up_to_date, "{:?}", again.stats);
    assert_eq!(again.stats.received_objects, 0);

    // One new commit changing one file: only the new objects travel, and the branch is followed.
    let next_commit = commit(&repo, "apps/web/deploy.yaml", &deployment(6));
    let next = fetch(&fetcher, "team/apps", &url, &branch("main")).unwrap();
    assert_eq!(next.revision.commit, next_commit);
    assert!(!next.stats.up_to_date);
    assert!(
        (1..=5).contains(&next.stats.received_objects),
        "an incremental fetch brings only the new objects: the commit, the root, apps and apps/web \
         trees and the blob; got {:?} (first fetch: {:?})",
        next.stats,
        first.stats
    );
    assert!(next.stats.received_objects < first.stats.received_objects);
    assert_eq!(file_content(&next, "apps/web/deploy.yaml"), deployment(6));
    assert_eq!(file_content(&next, "apps/db/config.yaml"), "kind: ConfigMap\n");
    eprintln!(
        "figures: small repo over git://: first {:?} {} objects / {} bytes; incremental {:?} {} objects / {} bytes",
        first.stats.elapsed,
        first.stats.received_objects,
        first.stats.received_bytes,
        next.stats.elapsed,
        next.stats.received_objects,
        next.stats.received_bytes
    );

    // HEAD is the remote's default branch, and is named so.
    let head = fetch(&fetcher, "team/head", &url, &GitReference::Head).unwrap();
    assert_eq!(head.revision.reference, format!("main@sha1:{next_commit}"));
    // A missing branch names what exists.
    let missing = fetch(&fetcher, "team/apps", &url, &branch("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("branch \"nope\" not found") && missing.contains(&url) && missing.contains("main"),
        "{missing}"
    );
}

#[test]
fn a_fixed_commit_stays_when_the_branch_moves() {
    let _timer = Timer::start("a_fixed_commit_stays_when_the_branch_moves");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (repo, commits) = history_repo(tmp.path());
    let mut daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");

    // The mirror starts shallow (the source tracked main before it was pinned).
    let tracked = fetch(&fetcher, "team/pinned", &url, &branch("main")).unwrap();
    assert_eq!(mirror_shape(tracked.repository.path()), (1, true));
    // An old commit: git daemon does not serve commits by id by default, so the default
    // branch's whole history is fetched (unshallowing the mirror) and searched.
    let pinned = GitReference::Commit(commits[1].clone());
    let first = fetch(&fetcher, "team/pinned", &url, &pinned).unwrap();
    assert_eq!(mirror_shape(first.repository.path()), (5, false));
    assert_eq!(first.revision.reference, format!("sha1:{}", commits[1]));
    assert_eq!(file_content(&first, "apps/web/deploy.yaml"), deployment(2));

    commit(&repo, "apps/web/deploy.yaml", &deployment(9));
    let again = fetch(&fetcher, "team/pinned", &url, &pinned).unwrap();
    assert_eq!(again.revision, first.revision);
    assert!(again.stats.up_to_date, "{:?}", again.stats);

    // A commit that exists nowhere: refused, saying where it looked.
    let unknown = GitReference::Commit("0123456789abcdef0123456789abcdef01234567".to_owned());
    let error = fetch(&fetcher, "team/pinned", &url, &unknown).unwrap_err();
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::ReferenceNotFound { .. }), "{text}");
    assert!(
        text.contains("not in the history of the default branch main") && text.contains(&url),
        "{text}"
    );

    // Pinned and already here: no network needed at all.
    daemon.stop();
    let offline = fetch(&fetcher, "team/pinned", &url, &pinned).unwrap();
    assert_eq!(offline.revision, first.revision);
    let short = GitReference::Commit(commits[2][..10].to_owned());
    let offline_short = fetch(&fetcher, "team/pinned", &url, &short).unwrap();
    assert_eq!(offline_short.revision.commit, commits[2]);
}

#[test]
fn a_commit_is_fetched_by_id_when_the_server_allows_it() {
    let _timer = Timer::start("a_commit_is_fetched_by_id_when_the_server_allows_it");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (repo, commits) = history_repo(tmp.path());
    git(&repo, &["config", "uploadpack.allowReachableSHA1InWant", "true"]);
    let daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");

    let fetched = fetch(&fetcher, "team/by-id", &url, &GitReference::Commit(commits[0].clone())).unwrap();
    assert_eq!(fetched.revision.commit, commits[0]);
    assert_eq!(mirror_shape(fetched.repository.path()), (1, true), "by id, depth 1");
    assert_eq!(file_content(&fetched, "apps/web/deploy.yaml"), deployment(1));
}

#[test]
fn semver_picks_the_highest_matching_tag() {
    let _timer = Timer::start("semver_picks_the_highest_matching_tag");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let repo = new_repo(tmp.path(), "repo");
    let mut tagged = std::collections::HashMap::new();
    let versions = [
        "v1.0.0",
        "v1.1.0",
        "v1.2.0",
        "v1.3.0",
        "v1.4.0",
        "v1.4.1",
        "v1.5.0",
        "v1.6.0",
        "v1.7.0",
        "v1.8.0",
        "v1.9.0",
        "v2.0.0",
        "v2.1.0-rc.1",
    ];
    for (i, tag) in versions.iter().enumerate() {
        let id = commit(&repo, "VERSION", tag);
        if i % 2 == 0 {
            git(&repo, &["tag", "-a", "-m", tag, tag]);
        } else {
            git(&repo, &["tag", tag]);
        }
        tagged.insert(*tag, id);
    }
    git(&repo, &["tag", "latest"]);
    commit(&repo, "VERSION", "unreleased");
    let daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");
    let local = repo.display().to_string();

    for (range, want) in [
        ("^1", "v1.9.0"),
        (">=1.2.0 <1.5.0", "v1.4.1"),
        ("~1.4", "v1.4.1"),
        ("1.2.x", "v1.2.0"),
        ("~2.0", "v2.0.0"),
        ("^2", "v2.0.0"),
        (">=2.1.0-0", "v2.1.0-rc.1"),
        ("*", "v2.0.0"),
    ] {
        let reference = GitReference::Semver(range.to_owned());
        let commit = &tagged[want];
        let expected = format!("{want}@sha1:{commit}");
        let remote = fetch(&fetcher, "team/semver", &url, &reference).unwrap();
        assert_eq!(remote.revision.reference, expected, "remote, range {range:?}");
        assert_eq!(file_content(&remote, "VERSION"), want);
        let (_, shallow) = mirror_shape(remote.repository.path());
        assert!(shallow, "range {range:?}");
        let in_place = fetch(&fetcher, "team/semver-local", &local, &reference).unwrap();
        assert_eq!(in_place.revision.reference, expected, "local, range {range:?}");
    }

    // The mirror answers a semver range on its own too (readers resolve there).
    let cached = fetcher.open_cached("team/semver", &url).unwrap().unwrap();
    let resolved = cached.resolve(&GitReference::Semver("^1".to_owned())).unwrap();
    assert_eq!(resolved.reference, format!("v1.9.0@sha1:{}", tagged["v1.9.0"]));

    let none = fetch(&fetcher, "team/semver", &url, &GitReference::Semver("^3".to_owned()))
        .unwrap_err()
        .to_string();
    assert!(
        none.contains("semver \"^3\" not found") && none.contains("v2.1.0-rc.1, v2.0.0, v1.9.0"),
        "{none}"
    );
    let invalid = fetch(
        &fetcher,
        "team/semver",
        &url,
        &GitReference::Semver(">=1.2.3.4".to_owned()),
    )
    .unwrap_err();
    assert!(matches!(invalid, SourceError::InvalidReference { .. }), "{invalid}");
}

fn ssh_credentials(key: &SshKey, passphrase: Option<&str>, known_hosts: &str) -> Credentials {
    Credentials::Ssh {
        username: "git".to_owned(),
        private_key: Zeroizing::new(key.private.clone()),
        passphrase: passphrase.map(|p| Zeroizing::new(p.to_owned())),
        known_hosts: known_hosts.to_owned(),
    }
}

/// No line of the private key's body and no passphrase may appear in `text`.
fn assert_no_key_material(text: &str, key: &SshKey, passphrase: Option<&str>) {
    for line in key.private.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "key material in: {text}");
    }
    if let Some(passphrase) = passphrase {
        assert!(!text.contains(passphrase), "passphrase in: {text}");
    }
}

#[test]
fn ssh_fetches_with_a_key_and_a_pinned_host_key() {
    let _timer = Timer::start("ssh_fetches_with_a_key_and_a_pinned_host_key");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (repo, commits) = history_repo(tmp.path());
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let plain = ssh_keygen(&keys, "plain", None);
    let encrypted = ssh_keygen(&keys, "encrypted", Some("correct horse"));
    let sshd = Sshd::start(&[&plain.public, &encrypted.public]);
    let url = sshd.url(&repo);

    let credentials = ssh_credentials(&plain, None, &sshd.known_hosts());
    let fetched = fetcher
        .fetch(&request("team/ssh", &url, &branch("main"), &credentials))
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    assert_eq!(fetched.revision.commit, *commits.last().unwrap());
    assert_eq!(mirror_shape(fetched.repository.path()), (1, true));

    // An encrypted key with its passphrase, and known_hosts with other hosts around it.
    let known_hosts = format!(
        "# the test server\ngithub.com {}\n{}",
        plain.public.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
        sshd.known_hosts()
    );
    let credentials = ssh_credentials(&encrypted, Some("correct horse"), &known_hosts);
    let fetched = fetcher
        .fetch(&request("team/ssh-encrypted", &url, &GitReference::Head, &credentials))
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    assert_eq!(fetched.revision.commit, *commits.last().unwrap());
}

#[test]
fn ssh_refuses_unknown_keys_and_untrusted_hosts() {
    let _timer = Timer::start("ssh_refuses_unknown_keys_and_untrusted_hosts");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (repo, _) = history_repo(tmp.path());
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let authorized = ssh_keygen(&keys, "authorized", Some("open sesame"));
    let stranger = ssh_keygen(&keys, "stranger", None);
    let other_host = ssh_keygen(&keys, "other_host", None);
    let sshd = Sshd::start(&[&authorized.public]);
    let url = sshd.url(&repo);
    let display_url = url.replace(&format!("{}@", sshd.user), "");
    let other_host_key = other_host
        .public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");

    let attempt = |credentials: &Credentials| {
        fetcher
            .fetch(&request("team/ssh", &url, &branch("main"), credentials))
            .map(|f| f.revision)
            .unwrap_err()
    };

    // A key the server does not know.
    let error = attempt(&ssh_credentials(&stranger, None, &sshd.known_hosts()));
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::Authentication { .. }), "{text}");
    assert!(
        text.contains("refused the key") && text.contains(&display_url),
        "{text}"
    );
    assert_no_key_material(&text, &stranger, None);

    // The right key with the wrong passphrase.
    let error = attempt(&ssh_credentials(&authorized, Some("wrong guess"), &sshd.known_hosts()));
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::Authentication { .. }), "{text}");
    assert_no_key_material(&text, &authorized, Some("wrong guess"));
    assert_no_key_material(&text, &authorized, Some("open sesame"));

    // known_hosts pins another key for this host: refused before authenticating.
    let wrong_hosts = format!("[127.0.0.1]:{} {other_host_key}\n", sshd.port);
    let error = attempt(&ssh_credentials(&authorized, Some("open sesame"), &wrong_hosts));
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::HostKey { .. }), "{text}");
    assert!(
        text.contains("matches none of the 1 known_hosts keys") && text.contains(&display_url),
        "{text}"
    );
    assert_no_key_material(&text, &authorized, Some("open sesame"));

    // known_hosts knows the key, but for another host (port 22): not this one.
    let other_port = format!("127.0.0.1 {}\n", sshd.host_key);
    let text = attempt(&ssh_credentials(&authorized, Some("open sesame"), &other_port)).to_string();
    eprintln!("message: {text}");
    assert!(
        text.contains(&format!("no key for [127.0.0.1]:{}", sshd.port)) && text.contains("ssh-keyscan -p"),
        "{text}"
    );

    // Empty known_hosts: never trust on first use.
    let error = attempt(&ssh_credentials(&authorized, Some("open sesame"), ""));
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::HostKey { .. }), "{text}");
    assert!(
        text.contains("known_hosts is empty") && text.contains("first use"),
        "{text}"
    );
    assert_no_key_material(&text, &authorized, Some("open sesame"));

    // No credentials at all for an SSH URL.
    let text = attempt(&Credentials::None).to_string();
    eprintln!("message: {text}");
    assert!(text.contains("identity") && text.contains("known_hosts"), "{text}");
    // And the Debug form of the credentials shows no secret either.
    let debug = format!(
        "{:?}",
        ssh_credentials(&authorized, Some("open sesame"), &sshd.known_hosts())
    );
    assert_no_key_material(&debug, &authorized, Some("open sesame"));
}

#[test]
fn smart_http_with_basic_and_bearer_credentials() {
    let _timer = Timer::start("smart_http_with_basic_and_bearer_credentials");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let (_repo, commits) = history_repo(tmp.path());
    let srv = tmp.path().join("srv");
    let basic = SmartHttp::start(
        &srv,
        HttpAuth::Basic {
            user: "bot".to_owned(),
            password: "pa55-w0rd-XYZZY".to_owned(),
        },
    );
    let bearer = SmartHttp::start(&srv, HttpAuth::Bearer("tok-0123456789-XYZZY".to_owned()));
    let tip = commits.last().unwrap();
    let basic_url = basic.url("repo");
    let bearer_url = bearer.url("repo");
    let main = branch("main");
    let basic_credentials = |password: &str| Credentials::Basic {
        username: "bot".to_owned(),
        password: Zeroizing::new(password.to_owned()),
    };
    let bearer_credentials = |token: &str| Credentials::Bearer(Zeroizing::new(token.to_owned()));

    let fetched = fetcher
        .fetch(&request(
            "team/basic",
            &basic_url,
            &main,
            &basic_credentials("pa55-w0rd-XYZZY"),
        ))
        .unwrap();
    assert_eq!(fetched.revision.commit, *tip);
    assert_eq!(mirror_shape(fetched.repository.path()), (1, true));
    let fetched = fetcher
        .fetch(&request(
            "team/bearer",
            &bearer_url,
            &main,
            &bearer_credentials("tok-0123456789-XYZZY"),
        ))
        .unwrap();
    assert_eq!(fetched.revision.commit, *tip);

    for (url, credentials, needle) in [
        (
            &basic_url,
            basic_credentials("wrong-pa55-XYZZY"),
            "refused username \"bot\"",
        ),
        (&basic_url, Credentials::None, "requires authentication"),
        (
            &bearer_url,
            bearer_credentials("tok-wrong-XYZZY"),
            "refused the bearer token",
        ),
        (&bearer_url, basic_credentials("pa55-w0rd-XYZZY"), "refused username"),
    ] {
        let error = fetcher
            .fetch(&request("team/denied", url, &main, &credentials))
            .map(|f| f.revision)
            .unwrap_err();
        let text = error.to_string();
        eprintln!("message: {text}");
        assert!(matches!(error, SourceError::Authentication { .. }), "{text}");
        assert!(text.contains(needle) && text.contains(url.as_str()), "{text}");
        assert!(!text.contains("XYZZY"), "a secret leaked: {text}");
    }
}

#[test]
fn a_stopped_server_fails_clearly_and_the_mirror_still_serves() {
    let _timer = Timer::start("a_stopped_server_fails_clearly_and_the_mirror_still_serves");
    let tmp = TempDir::new().unwrap();
    let cache = tmp.path().join("cache");
    let fetcher = Fetcher::new(&cache);
    let (_repo, _) = history_repo(tmp.path());
    let mut daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");
    assert!(
        fetcher.open_cached("team/apps", &url).unwrap().is_none(),
        "nothing fetched yet"
    );

    let fetched = fetch(&fetcher, "team/apps", &url, &branch("main")).unwrap();
    daemon.stop();

    let error = fetch(&fetcher, "team/apps", &url, &branch("main")).unwrap_err();
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::Transport { .. }), "{text}");
    assert!(text.contains(&url) && text.contains("reachable"), "{text}");

    for reader in [&fetcher, &Fetcher::new(&cache)] {
        let cached = reader
            .open_cached("team/apps", &url)
            .unwrap()
            .expect("the mirror survives");
        assert_eq!(cached.resolve(&branch("main")).unwrap(), fetched.revision);
        let files = cached.read_files(&fetched.revision, "apps/web").unwrap();
        assert_eq!(files[0].content, deployment(5).into_bytes());
    }
    assert!(fetcher.open_cached("team/other", &url).unwrap().is_none());
    assert!(fetcher.open_cached("team/local", "/srv/git/repo").unwrap().is_none());
}

#[test]
fn an_exhausted_timeout_is_reported_as_such() {
    let _timer = Timer::start("an_exhausted_timeout_is_reported_as_such");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    history_repo(tmp.path());
    let daemon = GitDaemon::start(&tmp.path().join("srv"), tmp.path());
    let url = daemon.url("repo");
    let reference = branch("main");
    let error = fetcher
        .fetch(&FetchRequest {
            timeout: Duration::from_millis(1),
            ..request("team/slow", &url, &reference, &Credentials::None)
        })
        .unwrap_err();
    let text = error.to_string();
    eprintln!("message: {text}");
    assert!(matches!(error, SourceError::Timeout { .. }), "{text}");
    assert!(
        text.contains("did not finish within 1ms") && text.contains(&url),
        "{text}"
    );
}

/// ~3,000 files: first clone and one-file incremental fetch over each transport. The figures
/// are printed for the closing note.
#[test]
fn fetch_times_for_a_repository_with_3000_files() {
    let _timer = Timer::start("fetch_times_for_a_repository_with_3000_files");
    let tmp = TempDir::new().unwrap();
    let fetcher = Fetcher::new(tmp.path().join("cache"));
    let repo = new_repo(tmp.path(), "big");
    for dir in 0..60 {
        for file in 0..50 {
            write(
                &repo,
                &format!("apps/team-{dir:02}/config-{file:02}.yaml"),
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{dir:02}-{file:02}\n  \
                     namespace: team-{dir:02}\ndata:\n  key: value-{dir}-{file}\n  size: \"{}\"\n",
                    dir * 50 + file
                ),
            );
        }
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "3000 files"]);
    let srv = tmp.path().join("srv");
    let daemon = GitDaemon::start(&srv, tmp.path());
    let http = SmartHttp::start(&srv, HttpAuth::None);
    let keys = tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let key = ssh_keygen(&keys, "client", None);
    let sshd = Sshd::start(&[&key.public]);
    let ssh_credentials = ssh_credentials(&key, None, &sshd.known_hosts());
    let targets = [
        ("git://", daemon.url("big"), Credentials::None),
        ("http://", http.url("big"), Credentials::None),
        ("ssh://", sshd.url(&repo), ssh_credentials),
    ];
    let main = branch("main");

    let mut firsts = Vec::new();
    for (name, url, credentials) in &targets {
        let first = fetcher
            .fetch(&request(name, url, &main, credentials))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(first.stats.received_objects > 3000, "{name}: {:?}", first.stats);
        firsts.push(first.stats);
    }
    let mut polls = Vec::new();
    for (name, url, credentials) in &targets {
        let unchanged = fetcher.fetch(&request(name, url, &main, credentials)).unwrap();
        assert!(unchanged.stats.up_to_date, "{name}: {:?}", unchanged.stats);
        polls.push(unchanged.stats.elapsed);
    }
    write(
        &repo,
        "apps/team-07/config-07.yaml",
        "apiVersion: v1\nkind: ConfigMap\n",
    );
    git(&repo, &["commit", "-q", "-am", "one change"]);
    for (((name, url, credentials), first), poll) in targets.iter().zip(firsts).zip(polls) {
        let next = fetcher.fetch(&request(name, url, &main, credentials)).unwrap();
        assert!(
            (1..=5).contains(&next.stats.received_objects),
            "{name}: {:?}",
            next.stats
        );
        eprintln!(
            "figures: 3000 files over {name:7} first clone {:>8.1?} ({} objects, {} KiB); poll with nothing \
             new {:>7.1?}; incremental after a one-file commit {:>7.1?} ({} objects, {} bytes)",
            first.elapsed,
            first.received_objects,
            first.received_bytes / 1024,
            poll,
            next.stats.elapsed,
            next.stats.received_objects,
            next.stats.received_bytes
        );
    }
}
