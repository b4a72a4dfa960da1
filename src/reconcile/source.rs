//! One reconcile of a GitSource: resolve its ref to a commit and record it in the source's
//! status. Guards watch that status ([`super::run`]), so a new commit reaches the cluster at
//! the source's interval (default 1m) rather than at the Guard's full-reconcile interval.
//!
//! The status is written only when it changed, so a source whose branch did not move causes no
//! write, no watch event and no Guard reconcile.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::controller::ReconcileError;
use crate::api::{Condition, ConditionType, GitSource, GitSourceStatus};
use crate::config::{ConfigError, git_reference};
use crate::desired::SourceSettings;
use crate::source::{LocalRepository, Revision, SourceError};

/// Ready reason: the ref was resolved.
pub const REASON_FETCHED: &str = "Fetched";
/// Ready reason: the repository or the ref could not be read.
pub const REASON_FETCH_FAILED: &str = "FetchFailed";
/// Ready reason: the spec cannot work as written (e.g. two refs, or an invalid semver range).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// How long one fetch may take when the GitSource sets no `timeout`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Digits of the commit shown in messages.
const SHORT_COMMIT: usize = 12;

/// `namespace/name` of a GitSource (the id Guards and messages use).
pub fn source_id(source: &GitSource) -> String {
    format!(
        "{}/{}",
        source.namespace().unwrap_or_else(|| "default".to_owned()),
        source.name_any()
    )
}

/// Where `source` lives and what it tracks, as the desired-state loader takes it.
pub fn source_settings(source: &GitSource) -> Result<SourceSettings, ConfigError> {
    let id = source_id(source);
    Ok(SourceSettings {
        reference: git_reference(&id, source.spec.reference.as_ref())?,
        url: source.spec.url.clone(),
        id,
    })
}

/// What one fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The ref resolved to this revision.
    Fetched {
        /// The ref as asked for (`branch "main"`).
        reference: String,
        /// What it names now.
        revision: Revision,
    },
    /// The fetch failed; `reason` is the Ready reason and `message` says what to change.
    Failed {
        /// [`REASON_FETCH_FAILED`] or [`REASON_INVALID_SPEC`].
        reason: &'static str,
        /// Actionable, names the source and the ref.
        message: String,
    },
}

/// Resolve `source`'s ref now (libgit2 on a blocking thread, bounded by `spec.timeout`).
/// Only a failed blocking task is an error; every Git or spec problem is a [`Fetch::Failed`].
pub async fn fetch(source: &GitSource) -> Result<Fetch, ReconcileError> {
    let settings = match source_settings(source) {
        Ok(settings) => settings,
        Err(error) => {
            return Ok(Fetch::Failed {
                reason: REASON_INVALID_SPEC,
                message: error.to_string(),
            });
        }
    };
    let timeout = source.spec.timeout.as_ref().map_or(DEFAULT_FETCH_TIMEOUT, |t| t.0);
    let reference = settings.reference.to_string();
    let failed = |detail: String| Fetch::Failed {
        reason: REASON_FETCH_FAILED,
        message: format!(
            "fetching {reference} of {} from {}: {detail}",
            settings.id, settings.url
        ),
    };
    let task = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || -> Result<Revision, SourceError> {
            LocalRepository::open(&settings.url)?.resolve(&settings.reference)
        })
    };
    Ok(match tokio::time::timeout(timeout, task).await {
        Err(_) => failed(format!(
            "no answer within {timeout:?}; raise spec.timeout or check the repository's host"
        )),
        Ok(Err(join)) => return Err(ReconcileError::Task(join.to_string())),
        Ok(Ok(Err(error))) => failed(error.to_string()),
        Ok(Ok(Ok(revision))) => Fetch::Fetched {
            reference: reference.clone(),
            revision,
        },
    })
}

/// The status after `fetch`, from the `previous` one. Pure: `now` stamps what changed.
///
/// - Success records `lastFetchedRevision` (`<ref>@sha1:<commit>`, as Guards record it) and
///   Ready=True `Fetched`; `lastFetchTime` moves only when the revision does, so an unmoved
///   branch leaves the status byte-for-byte equal (no write, no Guard woken).
/// - Failure keeps the last good revision and sets Ready=False with the reason and message.
/// - A condition keeps its `lastTransitionTime` unless its status flips.
pub fn next_status(
    previous: &GitSourceStatus,
    generation: Option<i64>,
    fetch: &Fetch,
    now: Timestamp,
) -> GitSourceStatus {
    let mut status = GitSourceStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    let (ok, reason, message) = match fetch {
        Fetch::Fetched { reference, revision } => {
            if status.last_fetched_revision.as_deref() != Some(revision.reference.as_str()) {
                status.last_fetched_revision = Some(revision.reference.clone());
                status.last_fetch_time = Some(Time(now));
            }
            let short = revision.commit.get(..SHORT_COMMIT).unwrap_or(&revision.commit);
            (true, REASON_FETCHED, format!("fetched {reference} at {short}"))
        }
        Fetch::Failed { reason, message } => (false, *reason, message.clone()),
    };
    let ready = ConditionType::Ready.as_str();
    let before = previous.conditions.iter().find(|c| c.type_ == ready);
    let state = if ok { "True" } else { "False" };
    let since = before
        .filter(|c| c.status == state)
        .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: ready.to_owned(),
        status: state.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    };
    status.conditions.retain(|c| c.type_ != ready);
    status.conditions.insert(0, condition);
    status
}

/// Reconcile `source` once: resolve its ref and write its status through the status
/// subresource when it changed. Returns the status (written or already current).
pub async fn reconcile_source(source: &GitSource, client: &Client) -> Result<GitSourceStatus, ReconcileError> {
    let fetched = fetch(source).await?;
    let previous = source.status.clone().unwrap_or_default();
    let status = next_status(&previous, source.metadata.generation, &fetched, Timestamp::now());
    if status == previous {
        return Ok(status);
    }
    match &fetched {
        Fetch::Fetched { revision, .. } if previous.last_fetched_revision.as_ref() != Some(&revision.reference) => {
            tracing::info!(source = %source_id(source), revision = %revision, "new revision");
        }
        Fetch::Failed { reason, message } => {
            tracing::warn!(source = %source_id(source), reason, %message, "fetch failed");
        }
        Fetch::Fetched { .. } => {}
    }
    let namespace = source.namespace().unwrap_or_else(|| "default".to_owned());
    Api::<GitSource>::namespaced(client.clone(), &namespace)
        .patch_status(
            &source.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(commit: &str) -> Revision {
        Revision {
            commit: commit.to_owned(),
            reference: format!("main@sha1:{commit}"),
        }
    }

    fn fetched(commit: &str) -> Fetch {
        Fetch::Fetched {
            reference: "branch \"main\"".to_owned(),
            revision: revision(commit),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn first_fetch_records_revision_and_ready() {
        let status = next_status(&GitSourceStatus::default(), Some(1), &fetched(A), at(0));
        assert_eq!(
            status.last_fetched_revision.as_deref(),
            Some(format!("main@sha1:{A}").as_str())
        );
        assert_eq!(status.last_fetch_time, Some(Time(at(0))));
        assert_eq!(status.observed_generation, Some(1));
        let ready = &status.conditions[0];
        assert_eq!((ready.type_.as_str(), ready.status.as_str()), ("Ready", "True"));
        assert_eq!(ready.reason, REASON_FETCHED);
        assert_eq!(ready.message, "fetched branch \"main\" at aaaaaaaaaaaa");
    }

    #[test]
    fn unchanged_revision_gives_an_equal_status() {
        let first = next_status(&GitSourceStatus::default(), Some(1), &fetched(A), at(0));
        let again = next_status(&first, Some(1), &fetched(A), at(60));
        assert_eq!(again, first, "nothing to write, nothing to wake");
    }

    #[test]
    fn new_commit_moves_revision_and_time_but_not_the_transition() {
        let first = next_status(&GitSourceStatus::default(), Some(1), &fetched(A), at(0));
        let next = next_status(&first, Some(1), &fetched(B), at(60));
        assert_eq!(
            next.last_fetched_revision.as_deref(),
            Some(format!("main@sha1:{B}").as_str())
        );
        assert_eq!(next.last_fetch_time, Some(Time(at(60))));
        assert_eq!(next.conditions[0].last_transition_time, Time(at(0)));
        assert!(next.conditions[0].message.ends_with("bbbbbbbbbbbb"));
    }

    #[test]
    fn failure_keeps_the_last_good_revision_and_flips_ready() {
        let first = next_status(&GitSourceStatus::default(), Some(1), &fetched(A), at(0));
        let failed = Fetch::Failed {
            reason: REASON_FETCH_FAILED,
            message: "repository gone".to_owned(),
        };
        let broken = next_status(&first, Some(2), &failed, at(60));
        assert_eq!(broken.last_fetched_revision, first.last_fetched_revision);
        assert_eq!(broken.last_fetch_time, first.last_fetch_time);
        assert_eq!(broken.observed_generation, Some(2));
        assert_eq!(broken.conditions.len(), 1);
        let ready = &broken.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_FETCH_FAILED)
        );
        assert_eq!(ready.last_transition_time, Time(at(60)));
        assert_eq!(ready.observed_generation, Some(2));
        // Failing again is no change; recovering flips back with a new transition time.
        assert_eq!(next_status(&broken, Some(2), &failed, at(120)), broken);
        let recovered = next_status(&broken, Some(2), &fetched(A), at(180));
        assert_eq!(recovered.conditions[0].status, "True");
        assert_eq!(recovered.conditions[0].last_transition_time, Time(at(180)));
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut previous = GitSourceStatus::default();
        previous.conditions.push(Condition {
            type_: "Stalled".to_owned(),
            status: "False".to_owned(),
            reason: "Fine".to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(0)),
        });
        let status = next_status(&previous, None, &fetched(A), at(1));
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
    }

    #[test]
    fn settings_name_the_source_and_refuse_two_refs() {
        let source: GitSource = serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "apps", "namespace": "team"},
            "spec": {"url": "/srv/git/apps", "ref": {"branch": "main"}}
        }))
        .unwrap();
        let settings = source_settings(&source).unwrap();
        assert_eq!(settings.id, "team/apps");
        assert_eq!(
            settings.reference,
            crate::source::GitReference::Branch("main".to_owned())
        );
        let mut both = source.clone();
        both.spec.reference = Some(crate::api::GitRefSpec {
            branch: Some("main".to_owned()),
            tag: Some("v1".to_owned()),
            ..Default::default()
        });
        let error = source_settings(&both).unwrap_err().to_string();
        assert!(error.contains("team/apps") && error.contains("exactly one"), "{error}");
    }
}
