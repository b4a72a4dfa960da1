//! One reconcile of a GitSource: resolve its ref to a commit and record it in the source's
//! status. Guards watch that status ([`super::run`]), so a new commit reaches the cluster at
//! the source's interval (default 1m) rather than at the Guard's full-reconcile interval.
//!
//! The status is written only when it changed, so a source whose branch did not move causes no
//! write, no watch event and no Guard reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::controller::ReconcileError;
use crate::api::{Condition, ConditionType, GitSource, GitSourceStatus};
use crate::audit::{Actor, AuditEvent, AuditSink, EventKind, NullSink, ObjectRef, SCHEMA, now_rfc3339};
use crate::config::{ConfigError, git_reference};
use crate::desired::SourceSettings;
use crate::source::track::{TrackError, Verification, commit_of, track};
use crate::source::verify::TrustedKeys;
use crate::source::{Credentials, FetchRequest, Fetcher, GitReference, Revision, SourceError, is_local};
use crate::telemetry::Metrics;

/// Ready reason: the ref was resolved.
pub const REASON_FETCHED: &str = "Fetched";
/// Ready reason: the repository or the ref could not be read.
pub use crate::source::track::{REASON_FETCH_FAILED, REASON_VERIFICATION_FAILED};
/// Ready reason: a Secret the GitSource names does not exist.
pub const REASON_SECRET_NOT_FOUND: &str = "SecretNotFound";
/// Ready reason: the spec cannot work as written (e.g. two refs, or an invalid semver range).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// How long one fetch may take when the GitSource sets no `timeout`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Slack over `spec.timeout` before a hung fetch task is given up on.
const FETCH_GRACE: Duration = Duration::from_secs(10);

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

/// What a GitSource reconcile needs. Cheap to clone.
#[derive(Clone)]
pub struct SourceContext {
    /// Client for Secrets and status.
    pub client: Client,
    /// Mirrors of remote repositories.
    pub fetcher: Fetcher,
    /// Fetch durations, errors and revisions.
    pub metrics: Arc<Metrics>,
    /// `source.updated` and `source.verification_failed` records.
    pub audit: Arc<dyn AuditSink>,
}

impl SourceContext {
    /// A context with its own metrics registry and no audit trail.
    pub fn new(client: Client, fetcher: Fetcher) -> Self {
        SourceContext {
            client,
            fetcher,
            metrics: Arc::new(Metrics::new()),
            audit: Arc::new(NullSink),
        }
    }
}

/// The data of Secret `namespace/name` (None when it does not exist).
async fn secret_data(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?;
    Ok(secret.map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect()
    }))
}

/// A Secret a GitSource names, or why it cannot be used (`Err(Fetch::Failed)`).
async fn named_secret(
    client: &Client,
    source: &GitSource,
    field: &str,
    name: &str,
) -> Result<Result<BTreeMap<String, Vec<u8>>, Fetch>, ReconcileError> {
    let namespace = source.namespace().unwrap_or_else(|| "default".to_owned());
    Ok(match secret_data(client, &namespace, name).await? {
        Some(data) => Ok(data),
        None => Err(Fetch::Failed {
            reason: REASON_SECRET_NOT_FOUND,
            message: format!(
                "Secret {namespace}/{name} named by {field} of GitSource {} does not exist; create it or fix {field}",
                source_id(source)
            ),
        }),
    })
}

/// The credentials of `source` (its `secretRef`), or why they are unusable.
pub async fn credentials(client: &Client, source: &GitSource) -> Result<Result<Credentials, Fetch>, ReconcileError> {
    let Some(secret) = &source.spec.secret_ref else {
        return Ok(Ok(Credentials::None));
    };
    Ok(
        match named_secret(client, source, "spec.secretRef", &secret.name).await? {
            Ok(data) => Credentials::from_secret_data(&data).map_err(|error| Fetch::Failed {
                reason: "InvalidCredentials",
                message: format!("Secret {} (spec.secretRef): {error}", secret.name),
            }),
            Err(failed) => Err(failed),
        },
    )
}

/// The signature policy of `source` (its `verify`), or why it is unusable.
async fn verification(
    client: &Client,
    source: &GitSource,
) -> Result<Result<Option<Verification>, Fetch>, ReconcileError> {
    let Some(verify) = &source.spec.verify else {
        return Ok(Ok(None));
    };
    let name = &verify.secret_ref.name;
    Ok(
        match named_secret(client, source, "spec.verify.secretRef", name).await? {
            Ok(data) => match TrustedKeys::from_secret_data(&data) {
                Ok(keys) if keys.is_empty() => Err(Fetch::Failed {
                    reason: REASON_VERIFICATION_FAILED,
                    message: format!(
                        "Secret {name} (spec.verify.secretRef) holds no public keys: nothing can be trusted"
                    ),
                }),
                Ok(keys) => Ok(Some(Verification {
                    mode: verify.mode,
                    keys,
                })),
                Err(error) => Err(Fetch::Failed {
                    reason: REASON_VERIFICATION_FAILED,
                    message: format!("Secret {name} (spec.verify.secretRef): {error}"),
                }),
            },
            Err(failed) => Err(failed),
        },
    )
}

/// Fetch `source`'s ref now and verify it (libgit2 on a blocking thread, bounded by
/// `spec.timeout`). Only a failed blocking task or an API error is an error; every Git, Secret
/// or spec problem is a [`Fetch::Failed`], and a refused signature is audited.
pub async fn fetch(source: &GitSource, ctx: &SourceContext) -> Result<Fetch, ReconcileError> {
    let settings = match source_settings(source) {
        Ok(settings) => settings,
        Err(error) => {
            return Ok(Fetch::Failed {
                reason: REASON_INVALID_SPEC,
                message: error.to_string(),
            });
        }
    };
    let credentials = match credentials(&ctx.client, source).await? {
        Ok(credentials) => credentials,
        Err(failed) => return Ok(failed),
    };
    let verification = match verification(&ctx.client, source).await? {
        Ok(verification) => verification,
        Err(failed) => return Ok(failed),
    };
    let timeout = source.spec.timeout.as_ref().map_or(DEFAULT_FETCH_TIMEOUT, |t| t.0);
    let reference = settings.reference.to_string();
    let started = std::time::Instant::now();
    let task = {
        let (fetcher, settings) = (ctx.fetcher.clone(), settings.clone());
        tokio::task::spawn_blocking(move || {
            let request = fetch_request(&settings, &credentials, timeout);
            track(&fetcher, &request, verification.as_ref()).map(|tracked| tracked.revision)
        })
    };
    // The fetcher enforces `timeout` itself; this bound only catches a libgit2 call that hangs.
    let outcome = tokio::time::timeout(timeout + FETCH_GRACE, task).await;
    let failed = |reason: &'static str, detail: String| Fetch::Failed {
        reason,
        message: format!(
            "fetching {reference} of {} from {}: {detail}",
            settings.id, settings.url
        ),
    };
    let fetched = match outcome {
        Err(_) => failed(
            REASON_FETCH_FAILED,
            format!("no answer within {timeout:?}; raise spec.timeout or check the repository's host"),
        ),
        Ok(Err(join)) => return Err(ReconcileError::Task(join.to_string())),
        Ok(Ok(Err(error))) => {
            if let TrackError::Verify { revision, .. } = &error {
                ctx.audit.record(source_event(
                    source,
                    EventKind::SourceVerificationFailed,
                    &revision.commit,
                    error.to_string(),
                ));
            }
            failed(error.reason(), error.to_string())
        }
        Ok(Ok(Ok(revision))) => Fetch::Fetched {
            reference: reference.clone(),
            revision,
        },
    };
    let failure = match &fetched {
        Fetch::Failed { reason, .. } => Some(*reason),
        Fetch::Fetched { .. } => None,
    };
    ctx.metrics.observe_fetch(&settings.id, started.elapsed(), failure);
    Ok(fetched)
}

/// What to fetch for `settings`.
fn fetch_request<'a>(
    settings: &'a SourceSettings,
    credentials: &'a Credentials,
    timeout: Duration,
) -> FetchRequest<'a> {
    FetchRequest {
        source_id: &settings.id,
        url: &settings.url,
        reference: &settings.reference,
        credentials,
        timeout,
    }
}

/// An audit record about a GitSource.
fn source_event(source: &GitSource, event: EventKind, revision: &str, message: String) -> AuditEvent {
    AuditEvent {
        schema: SCHEMA,
        seq: 0,
        time: now_rfc3339(),
        event,
        actor: Actor::default(),
        object: ObjectRef {
            group: "driftguard.io".to_owned(),
            version: "v1alpha1".to_owned(),
            kind: "GitSource".to_owned(),
            namespace: source.namespace(),
            name: source.name_any(),
            subresource: None,
        },
        operation: "FETCH".to_owned(),
        guard: String::new(),
        revision: revision.to_owned(),
        fields: Vec::new(),
        message,
        request_uid: String::new(),
        dry_run: false,
        field_manager: None,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Where readers (a Guard's reconcile, a replica's admission index, `diff`) find `commit` of
/// `source`: the settings to load with. `commit` defaults to the source's
/// `status.lastFetchedRevision`. A local repository is read in place; a remote one from the
/// mirror, fetching the commit first when this process has not got it (a replica, `diff`).
/// A remote source nobody fetched yet is [`ReconcileError::NotFetched`].
pub async fn checkout(
    source: &GitSource,
    commit: Option<&str>,
    client: &Client,
    fetcher: &Fetcher,
) -> Result<SourceSettings, ReconcileError> {
    let mut settings = source_settings(source)?;
    let fetched = source
        .status
        .as_ref()
        .and_then(|s| s.last_fetched_revision.as_deref())
        .and_then(commit_of);
    let Some(commit) = commit.or(fetched).map(str::to_owned) else {
        if is_local(&settings.url) {
            return Ok(settings); // the tracked ref, resolved when loading
        }
        return Err(ReconcileError::NotFetched(settings.id));
    };
    settings.reference = GitReference::Commit(commit);
    if is_local(&settings.url) {
        return Ok(settings);
    }
    let credentials = match credentials(client, source).await? {
        Ok(credentials) => credentials,
        Err(Fetch::Failed { message, .. }) => return Err(ReconcileError::Spec(message)),
        Err(Fetch::Fetched { .. }) => Credentials::None,
    };
    let timeout = source.spec.timeout.as_ref().map_or(DEFAULT_FETCH_TIMEOUT, |t| t.0);
    let fetcher = fetcher.clone();
    let settings = tokio::task::spawn_blocking(move || -> Result<SourceSettings, SourceError> {
        let cached = fetcher
            .open_cached(&settings.id, &settings.url)?
            .filter(|repository| repository.resolve(&settings.reference).is_ok());
        let repository = match cached {
            Some(repository) => repository,
            None => {
                fetcher
                    .fetch(&fetch_request(&settings, &credentials, timeout))?
                    .repository
            }
        };
        Ok(SourceSettings {
            url: repository.path().display().to_string(),
            ..settings
        })
    })
    .await
    .map_err(|e| ReconcileError::Task(e.to_string()))??;
    Ok(settings)
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
pub async fn reconcile_source(source: &GitSource, ctx: &SourceContext) -> Result<GitSourceStatus, ReconcileError> {
    let fetched = fetch(source, ctx).await?;
    let previous = source.status.clone().unwrap_or_default();
    let status = next_status(&previous, source.metadata.generation, &fetched, Timestamp::now());
    if let Some(revision) = &status.last_fetched_revision {
        ctx.metrics.set_source_revision(&source_id(source), revision);
    }
    if status == previous {
        return Ok(status);
    }
    match &fetched {
        Fetch::Fetched { revision, .. } if previous.last_fetched_revision.as_ref() != Some(&revision.reference) => {
            tracing::info!(source = %source_id(source), revision = %revision, "new revision");
            ctx.audit.record(source_event(
                source,
                EventKind::SourceUpdated,
                &revision.commit,
                format!(
                    "{} moved from {} to {revision}",
                    source_id(source),
                    previous.last_fetched_revision.as_deref().unwrap_or("nothing")
                ),
            ));
        }
        Fetch::Failed { reason, message } => {
            tracing::warn!(source = %source_id(source), reason, %message, "fetch failed");
        }
        Fetch::Fetched { .. } => {}
    }
    let namespace = source.namespace().unwrap_or_else(|| "default".to_owned());
    Api::<GitSource>::namespaced(ctx.client.clone(), &namespace)
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
