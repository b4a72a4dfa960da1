//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! every replica serves admission, only the holder of the Lease fetches, applies, prunes and
//! writes status.
//!
//! The decision is pure ([`decide`]); [`LeaderElector`] does the reads and writes with
//! optimistic concurrency (a lost race is a 409, never two holders). A leader that cannot renew
//! within the renew deadline (shorter than the lease duration) stops leading *before* anyone
//! else may take over, so writes stop at once when the lease is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::telemetry::Metrics;

/// Why one election round failed (the loop retries).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or failed.
    #[error("lease {lease}: {error}")]
    Api {
        /// `namespace/name`.
        lease: String,
        /// Cause.
        error: kube::Error,
    },
}

/// What to do with the Lease this round.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No Lease yet: create it holding it.
    Create(LeaseSpec),
    /// We hold it: renew.
    Renew(LeaseSpec),
    /// Expired or released: take it over.
    TakeOver(LeaseSpec),
    /// Someone else holds a live lease.
    Follow {
        /// Current holder.
        holder: String,
    },
}

fn held_by(me: &str, now: Timestamp, duration: Duration, acquired: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Decide the round for identity `me` at `now` given the current Lease spec.
pub fn decide(current: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> Step {
    let Some(spec) = current else {
        return Step::Create(held_by(me, now, duration, now, 0));
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == me {
        let acquired = spec.acquire_time.as_ref().map_or(now, |t| t.0);
        return Step::Renew(held_by(me, now, duration, acquired, transitions));
    }
    // The holder's own duration governs expiry, as in client-go.
    let held_for = spec
        .lease_duration_seconds
        .map_or(duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let expired = match renewed {
        Some(renewed) => now > renewed + SignedDuration::try_from(held_for).unwrap_or(SignedDuration::MAX),
        None => true,
    };
    if holder.is_empty() || expired {
        return Step::TakeOver(held_by(me, now, duration, now, transitions + 1));
    }
    Step::Follow {
        holder: holder.to_owned(),
    }
}

/// Timing and identity of an elector.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading (< lease_duration).
    pub renew_deadline: Duration,
    /// Pause between rounds.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// client-go's proportions: renew deadline 2/3 of the lease, retry every 1/5.
    pub fn new(namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        ElectionConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 5,
        }
    }
}

/// Runs the election loop, publishing whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    config: ElectionConfig,
    metrics: Option<Arc<Metrics>>,
}

impl LeaderElector {
    /// An elector for `config` using `client`.
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            metrics: None,
        }
    }

    /// Also publish leadership as `driftguard_leader` and count its changes in
    /// `driftguard_leader_changes_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn lease_id(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// One round: true when this replica holds the lease afterwards.
    pub async fn round(&self) -> Result<bool, LeaderError> {
        let api_error = |error| LeaderError::Api {
            lease: self.lease_id(),
            error,
        };
        let current = self.api.get_opt(&self.config.name).await.map_err(api_error)?;
        let step = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            Timestamp::now(),
            self.config.lease_duration,
        );
        let (spec, create) = match step {
            Step::Follow { .. } => return Ok(false),
            Step::Create(spec) => (spec, true),
            Step::Renew(spec) | Step::TakeOver(spec) => (spec, false),
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                // Optimistic concurrency: a concurrent writer makes this a 409.
                resource_version: current.and_then(|l| l.metadata.resource_version),
                ..Default::default()
            },
            spec: Some(spec),
        };
        let written = if create {
            self.api.create(&PostParams::default(), &lease).await
        } else {
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(api_error(error)),
        }
    }

    /// Give the lease up (holder cleared) if we hold it, so a successor need not wait.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.config.identity);
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.lease_id(), %error, "could not release the lease; it expires on its own");
        }
    }

    /// Elect until `shutdown` resolves, publishing leadership on `leading`. On shutdown the
    /// lease is released and `leading` set to false.
    ///
    /// Leadership ends [`ElectionConfig::renew_deadline`] after the start of the last round
    /// that renewed the lease, whatever the rounds since are doing (failing fast, or hanging
    /// on a slow API server): that start precedes the `renewTime` written, so this replica
    /// stops writing at least `lease_duration - renew_deadline` before any other replica may
    /// take the lease over.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // While leading: when leadership ends unless a round renews it first.
        let mut lead_until: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let deadline = lead_until.unwrap_or(started + self.config.renew_deadline);
            match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(true)) => {
                    lead_until = Some(started + self.config.renew_deadline);
                    if !leading.send_replace(true) {
                        tracing::info!(lease = %self.lease_id(), identity = %self.config.identity, "became the leader");
                        self.count(Change::Acquired);
                    }
                }
                Ok(Ok(false)) => {
                    lead_until = None;
                    if leading.send_replace(false) {
                        tracing::warn!(lease = %self.lease_id(), identity = %self.config.identity, "lost the lease to another replica; stopped leading");
                        self.count(Change::Lost);
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, "leader election round failed"),
                Err(_) => tracing::warn!(lease = %self.lease_id(), "leader election round did not finish in time"),
            }
            self.expire(&leading, &mut lead_until);
            let pause = if lead_until.is_some() {
                self.config.retry_period.min(self.config.renew_deadline / 2)
            } else {
                self.config.retry_period
            };
            // A leader wakes at its deadline at the latest, to stop leading on time.
            let wake = lead_until.map_or(Instant::now() + pause, |until| (Instant::now() + pause).min(until));
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(wake) => {}
            }
            self.expire(&leading, &mut lead_until);
        }
        if leading.send_replace(false) {
            self.count(Change::Released);
        }
        self.release().await;
    }

    /// Stop leading once the renew deadline has passed without a renewal.
    fn expire(&self, leading: &watch::Sender<bool>, lead_until: &mut Option<Instant>) {
        if lead_until.is_some_and(|until| Instant::now() >= until) {
            *lead_until = None;
            if leading.send_replace(false) {
                tracing::warn!(
                    lease = %self.lease_id(),
                    identity = %self.config.identity,
                    renew_deadline = ?self.config.renew_deadline,
                    "could not renew the lease within the renew deadline; stopped leading"
                );
                self.count(Change::Expired);
            }
        }
    }

    fn count(&self, change: Change) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_leadership(change.as_str(), matches!(change, Change::Acquired));
        }
    }
}

/// How this replica's leadership changed (the `change` label of
/// `driftguard_leader_changes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// It took or created the lease.
    Acquired,
    /// Another replica holds the lease now.
    Lost,
    /// It could not renew within the renew deadline.
    Expired,
    /// It shut down and gave the lease up.
    Released,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Acquired => "acquired",
            Change::Lost => "lost",
            Change::Expired => "expired",
            Change::Released => "released",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn no_lease_is_created_holding_it() {
        let Step::Create(spec) = decide(None, "a", at(0), LEASE) else {
            panic!("create expected")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn the_holder_renews_keeping_its_acquire_time() {
        let held = held_by("a", at(0), LEASE, at(0), 2);
        let Step::Renew(spec) = decide(Some(&held), "a", at(5), LEASE) else {
            panic!("renew expected")
        };
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(5))));
        assert_eq!(spec.lease_transitions, Some(2));
    }

    #[test]
    fn others_follow_a_live_lease_and_take_over_an_expired_or_released_one() {
        let held = held_by("a", at(0), LEASE, at(0), 0);
        assert_eq!(
            decide(Some(&held), "b", at(10), LEASE),
            Step::Follow { holder: "a".into() }
        );
        assert_eq!(
            decide(Some(&held), "b", at(15), LEASE),
            Step::Follow { holder: "a".into() }
        );
        let Step::TakeOver(spec) = decide(Some(&held), "b", at(16), LEASE) else {
            panic!("take over expected")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));

        let mut released = held.clone();
        released.holder_identity = None;
        assert!(matches!(decide(Some(&released), "b", at(1), LEASE), Step::TakeOver(_)));
    }

    #[test]
    fn the_holders_duration_governs_expiry() {
        let mut held = held_by("a", at(0), Duration::from_secs(60), at(0), 0);
        held.lease_duration_seconds = Some(60);
        assert!(matches!(decide(Some(&held), "b", at(30), LEASE), Step::Follow { .. }));
    }
}
