//! Git faults under the real GitSource and Guard loops (issue 10): a server that sends a
//! corrupt or truncated packfile (real `git http-backend` behind a damaging smart HTTP
//! server), and a server that goes away and comes back (real `git daemon`). While the fault
//! lasts the GitSource says what failed, the fetch-error metric counts every failure, the
//! mirror keeps the last good revision intact and the Guard keeps enforcing it; once the
//! fault is gone the new commit is fetched and applied on its own. The API server is the real
//! one (tests/support/cluster.rs); the loops act as driftguard's service account with the
//! chart's RBAC, the test's own edits as admin.
//!
//! tests/sources.rs already shows, for a stopped `git daemon`, that the GitSource turns
//! Ready=False (FetchFailed, naming the URL), keeps `lastFetchedRevision`, and that a Guard
//! reconcile in a fresh process still reads that revision from the mirror. The outage test
//! here adds what it does not: a commit pushed during the outage, the metrics, enforcement
//! (drift repaired) during the outage, and recovery when the server is back.

mod support;

use std::path::Path;
use std::time::Duration;

use driftguard::api::{GitSource, Guard};
use driftguard::audit::EventKind;
use driftguard::source::GitReference;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::gitservers::{GitDaemon, HttpAuth, PackFault, SmartHttp};
use support::guards::{Driftguard, LeaderLoops, eventually};

const DEADLINE: Duration = Duration::from_secs(40);
const SOURCE: &str = "default/remote";

/// The leader's GitSource and Guard loops over a remote GitSource, with their audit trail,
/// metrics and mirror cache.
struct Enforcer {
    sources: Api<GitSource>,
    guards: Api<Guard>,
    deployments: Api<Deployment>,
    loops: LeaderLoops,
    url: String,
}

impl Enforcer {
    /// A GitSource `default/remote` on `url` (fetched every second) and a Guard
    /// `default/example-app` on it (fully reconciled every two seconds), created by admin, and
    /// the loops as driftguard.
    async fn start(driftguard: &Driftguard, url: &str) -> Enforcer {
        let (admin, client) = (&driftguard.admin, &driftguard.client);
        let source: GitSource = serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "remote", "namespace": "default"},
            "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1s", "timeout": "10s"}
        }))
        .unwrap();
        let sources: Api<GitSource> = Api::namespaced(admin.clone(), "default");
        sources.create(&PostParams::default(), &source).await.unwrap();
        let guard: Guard = serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
            "metadata": {"name": "example-app", "namespace": "default"},
            "spec": {"sourceRef": {"name": "remote"}, "path": "examples/app", "interval": "2s"}
        }))
        .unwrap();
        let guards: Api<Guard> = Api::namespaced(admin.clone(), "default");
        guards.create(&PostParams::default(), &guard).await.unwrap();

        let loops = LeaderLoops::start(client).await;
        Enforcer {
            sources,
            guards,
            deployments: Api::namespaced(admin.clone(), "default"),
            loops,
            url: url.to_owned(),
        }
    }

    /// The loops end cleanly (none panicked).
    async fn stop(self) {
        self.loops.stop().await;
    }

    /// The GitSource's Ready condition as (status, reason, message).
    async fn source_ready(&self) -> Option<(String, String, String)> {
        let status = self.sources.get("remote").await.ok()?.status?;
        let c = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        Some((c.status, c.reason, c.message))
    }

    async fn fetched_revision(&self) -> Option<String> {
        self.sources.get("remote").await.ok()?.status?.last_fetched_revision
    }

    async fn applied_revision(&self) -> Option<String> {
        self.guards.get("example-app").await.ok()?.status?.last_applied_revision
    }

    async fn web_replicas(&self) -> Option<i32> {
        self.deployments.get("web").await.ok()?.spec?.replicas
    }

    /// Waits until `commit` is fetched, applied (`web` at `replicas`) and the source Ready.
    async fn until_applied(&self, commit: &str, replicas: i32) {
        let applied = || async {
            self.applied_revision().await.as_deref() == Some(commit)
                && self.web_replicas().await == Some(replicas)
                && self
                    .source_ready()
                    .await
                    .is_some_and(|(status, reason, _)| status == "True" && reason == "Fetched")
        };
        eventually(&format!("{commit} applied"), DEADLINE, applied).await;
    }

    /// Waits until the GitSource is Ready=False/FetchFailed; returns the message.
    async fn until_fetch_failed(&self) -> String {
        let failed = || async {
            self.source_ready()
                .await
                .is_some_and(|(status, reason, _)| status == "False" && reason == "FetchFailed")
        };
        eventually("Ready=False FetchFailed", DEADLINE, failed).await;
        self.source_ready().await.unwrap().2
    }

    /// An out-of-band edit of `web` is repaired from the last applied revision: the Guard
    /// keeps enforcing it.
    async fn drift_is_repaired(&self, replicas: i32) {
        self.deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 9}})),
            )
            .await
            .unwrap();
        let repaired = || async { self.web_replicas().await == Some(replicas) };
        eventually("the drift repaired", DEADLINE, repaired).await;
    }

    /// `driftguard_source_fetch_errors_total` and the error and ok counts of the fetch
    /// duration histogram, for the source.
    fn fetch_counts(&self) -> (u64, u64, u64) {
        let text = self.loops.metrics.encode().unwrap();
        let value = |prefix: String| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .map_or(0, |v| v.trim().parse().unwrap())
        };
        (
            value(format!(
                "driftguard_source_fetch_errors_total{{source=\"{SOURCE}\",reason=\"FetchFailed\"}} "
            )),
            value(format!(
                "driftguard_source_fetch_duration_seconds_count{{source=\"{SOURCE}\",result=\"error\"}} "
            )),
            value(format!(
                "driftguard_source_fetch_duration_seconds_count{{source=\"{SOURCE}\",result=\"ok\"}} "
            )),
        )
    }

    /// The mirror holds `good` intact and nothing of `refused`: `git fsck` passes, and no
    /// temporary pack of the failed download is left behind.
    fn mirror_keeps(&self, good: &str, refused: &str) {
        let mirror = self
            .loops
            .fetcher
            .open_cached(SOURCE, &self.url)
            .unwrap()
            .expect("a mirror");
        mirror
            .resolve(&GitReference::Commit(good.to_owned()))
            .expect("the last good commit loads");
        assert!(
            mirror.resolve(&GitReference::Commit(refused.to_owned())).is_err(),
            "nothing of the damaged download was kept"
        );
        let files = mirror
            .read_files(
                &mirror.resolve(&GitReference::Commit(good.to_owned())).unwrap(),
                "examples/app",
            )
            .unwrap();
        let paths: Vec<String> = files.into_iter().map(|f| f.path).collect();
        let want: Vec<String> = support::example_files().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, want);
        let fsck = std::process::Command::new("git")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .arg("--git-dir")
            .arg(mirror.path())
            .args(["fsck", "--no-progress", "--no-dangling"])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "git fsck of the mirror: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        let packs = mirror.path().join("objects/pack");
        let leftovers: Vec<String> = std::fs::read_dir(&packs)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        !(name.starts_with("pack-")
                            && [".pack", ".idx", ".rev", ".keep"].iter().any(|ext| name.ends_with(ext)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "temporary files in the mirror: {leftovers:?}");
    }

    /// The `source.updated` records of `commit`.
    fn updates_to(&self, commit: &str) -> usize {
        self.loops
            .audit
            .events()
            .iter()
            .filter(|e| e.event == EventKind::SourceUpdated && e.revision == commit)
            .count()
    }
}

/// The example app in a work tree, served as `<dir>/served/apps.git`; returns the work tree
/// and the bare repository.
fn served_repo(dir: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let (work, _) = support::example_repo();
    let bare = support::gitservers::bare_clone(work.path(), &dir.join("served"), "apps.git");
    (work, bare)
}

/// Commits `web` at `to` replicas (from `from`) and pushes it; returns the commit.
fn push_replicas(work: &Path, bare: &Path, from: u32, to: u32) -> String {
    let deployment = work.join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(
        &deployment,
        text.replace(&format!("replicas: {from}"), &format!("replicas: {to}")),
    )
    .unwrap();
    support::git(work, &["commit", "-qam", &format!("{to} replicas")]);
    support::git(work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    support::git(work, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_pack_is_refused_and_the_next_good_fetch_applies() {
    let driftguard = Driftguard::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (work, bare) = served_repo(dir.path());
    let first = support::git(work.path(), &["rev-parse", "HEAD"]);
    let http = SmartHttp::start(&dir.path().join("served"), HttpAuth::None);
    let enforcer = Enforcer::start(&driftguard, &http.url("apps.git")).await;
    enforcer.until_applied(&first, 3).await;
    assert_eq!(enforcer.fetch_counts().0, 0);

    // The server's packs are corrupt when the next commit is pushed.
    http.set_pack_fault(PackFault::Corrupt);
    let second = push_replicas(work.path(), &bare, 3, 4);
    let message = enforcer.until_fetch_failed().await;
    assert!(message.contains(&http.url("apps.git")), "names the URL: {message}");
    assert!(
        message.contains("corrupt") && message.contains("last good revision"),
        "says what failed and what is kept: {message}"
    );
    enforcer.drift_is_repaired(3).await;
    assert_eq!(enforcer.fetched_revision().await, Some(format!("main@sha1:{first}")));
    assert_eq!(enforcer.applied_revision().await.as_deref(), Some(first.as_str()));
    enforcer.mirror_keeps(&first, &second);

    // Truncated packs fail the same way, and the status says so.
    assert!(http.damaged_packs() >= 1);
    http.set_pack_fault(PackFault::Truncate);
    let incomplete = || async {
        enforcer.source_ready().await.is_some_and(|(status, reason, message)| {
            status == "False" && reason == "FetchFailed" && message.contains("incomplete pack")
        })
    };
    eventually("Ready=False for an incomplete pack", DEADLINE, incomplete).await;
    let (_, _, message) = enforcer.source_ready().await.unwrap();
    assert!(
        message.contains(&http.url("apps.git")) && message.contains("last good revision"),
        "{message}"
    );
    assert_eq!(enforcer.web_replicas().await, Some(3));
    assert_eq!(enforcer.updates_to(&second), 0);

    // The server is healthy again: the next fetch brings the commit, which is applied.
    http.set_pack_fault(PackFault::None);
    enforcer.until_applied(&second, 4).await;
    assert_eq!(enforcer.fetched_revision().await, Some(format!("main@sha1:{second}")));
    assert_eq!(enforcer.updates_to(&second), 1, "{:?}", enforcer.loops.audit.events());
    // Every damaged pack was one failed fetch, counted; none failed otherwise.
    let (errors, error_fetches, _) = enforcer.fetch_counts();
    assert_eq!(errors, http.damaged_packs() as u64);
    assert_eq!(error_fetches, errors);
    enforcer.mirror_keeps(&second, "0000000000000000000000000000000000000000");
    enforcer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_server_outage_keeps_the_last_revision_enforced_and_recovers_on_its_own() {
    let driftguard = Driftguard::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (work, bare) = served_repo(dir.path());
    let first = support::git(work.path(), &["rev-parse", "HEAD"]);
    let mut daemon = GitDaemon::start(&dir.path().join("served"), dir.path());
    let enforcer = Enforcer::start(&driftguard, &daemon.url("apps.git")).await;
    enforcer.until_applied(&first, 3).await;

    // The server goes away; a commit is pushed meanwhile.
    daemon.stop();
    let second = push_replicas(work.path(), &bare, 3, 4);
    let message = enforcer.until_fetch_failed().await;
    assert!(message.contains(&daemon.url("apps.git")), "names the URL: {message}");
    // Failures are counted, fetch after fetch, and the last revision stays enforced.
    let (errors, _, _) = enforcer.fetch_counts();
    assert!(errors >= 1);
    let more_failures = || async { enforcer.fetch_counts().0 >= errors + 2 };
    eventually("further failed fetches counted", DEADLINE, more_failures).await;
    enforcer.drift_is_repaired(3).await;
    assert_eq!(enforcer.applied_revision().await.as_deref(), Some(first.as_str()));
    assert_eq!(enforcer.fetched_revision().await, Some(format!("main@sha1:{first}")));
    assert_eq!(enforcer.updates_to(&second), 0);

    // The server is back on the same address: the commit arrives without anyone's help.
    daemon.restart();
    enforcer.until_applied(&second, 4).await;
    assert_eq!(enforcer.updates_to(&second), 1);
    let (errors, error_fetches, ok) = enforcer.fetch_counts();
    assert_eq!(error_fetches, errors);
    // No failure after the recovery: two more good fetches, the error count unchanged.
    let two_more = || async { enforcer.fetch_counts().2 >= ok + 2 };
    eventually("two more good fetches", DEADLINE, two_more).await;
    assert_eq!(enforcer.fetch_counts().0, errors);
    enforcer.stop().await;
}
