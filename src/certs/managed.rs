//! Self-managed certificates against the cluster (`certs.mode: self`).
//!
//! - The Lease holder keeps the certificate Secret as [`super::rotation`] plans it, and injects
//!   the Secret's CA bundle into every entry of the Validating- and MutatingWebhookConfiguration
//!   (again whenever something resets it, such as a `helm upgrade` that renders no `caBundle`).
//! - Every replica follows the Secret and serves its certificate, swapped in without a restart.
//!
//! Writes use the Secret's resourceVersion, so two replicas that both believe they lead can
//! never both rotate: the second write is a conflict and is planned again from what the first
//! wrote.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::rotation::{
    self, CA_ROTATED_AT_ANNOTATION, Observed, RENEW_ANNOTATION, Requested, RotationPolicy, Step, TLS_CERT_KEY,
    TLS_KEY_KEY,
};
use crate::audit::{AuditEvent, AuditSink, EventKind};
use crate::server::ServingCert;

/// Where the certificates live and how they are kept.
#[derive(Clone)]
pub struct ManagedCerts {
    /// Client with driftguard's identity.
    pub client: Client,
    /// Namespace of the Secret (driftguard's own).
    pub namespace: String,
    /// Name of the Secret.
    pub secret_name: String,
    /// Name of both the Validating- and the MutatingWebhookConfiguration.
    pub webhook_configuration: String,
    /// Issuing and renewal rules.
    pub policy: RotationPolicy,
    /// How often the leader looks even when nothing changed.
    pub check_interval: Duration,
    /// Bound on each API call.
    pub api_timeout: Duration,
    /// Where issued certificates are recorded (`certificate.issued`).
    pub audit: Arc<dyn AuditSink>,
    /// Where passes are counted (`driftguard_certificate_passes_total`).
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl std::fmt::Debug for ManagedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCerts")
            .field("namespace", &self.namespace)
            .field("secret_name", &self.secret_name)
            .field("webhook_configuration", &self.webhook_configuration)
            .finish_non_exhaustive()
    }
}

/// Why a pass over the certificates failed; the next pass retries.
#[derive(Debug, thiserror::Error)]
pub enum ManagedCertError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// An API call took longer than the API timeout.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// The call.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// Issuing failed.
    #[error(transparent)]
    Cert(#[from] super::CertError),
}

impl ManagedCertError {
    /// Metric label of the failure.
    pub fn label(&self) -> &'static str {
        match self {
            ManagedCertError::Api { .. } => "api",
            ManagedCertError::Timeout { .. } => "timeout",
            ManagedCertError::Cert(_) => "issue",
        }
    }
}

/// `call`, bounded by `timeout`: `Err(None)` when it took longer.
pub(crate) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Option<kube::Error>> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(Some),
        Err(_) => Err(None),
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassOutcome {
    /// The step written to the Secret (`None`: nothing written).
    pub wrote: Option<&'static str>,
    /// Webhook entries whose caBundle was (re)injected.
    pub injected: usize,
    /// Webhook configurations that do not exist (nothing to inject into).
    pub missing: Vec<&'static str>,
    /// Look again this soon (a CA overlap ends), rather than at the next interval.
    pub wake_at: Option<SystemTime>,
}

impl ManagedCerts {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ManagedCertError> {
        within(self.api_timeout, call).await.map_err(|error| match error {
            Some(source) => ManagedCertError::Api { what: what(), source },
            None => ManagedCertError::Timeout {
                what: what(),
                timeout: self.api_timeout,
            },
        })
    }

    /// One pass of the leader: make the Secret exist, inject its bundle, then (only once the
    /// bundle is injected) renew what the plan says.
    pub async fn pass(&self) -> Result<PassOutcome, ManagedCertError> {
        let mut outcome = PassOutcome::default();
        let secret = self
            .bounded(
                || format!("reading Secret {}/{}", self.namespace, self.secret_name),
                self.secrets().get_opt(&self.secret_name),
            )
            .await?;
        let mut data = secret.as_ref().map(secret_data);
        let annotations = secret.as_ref().map(|s| s.annotations().clone()).unwrap_or_default();
        let requested_text = annotations.get(RENEW_ANNOTATION).cloned();
        let requested = requested_text.as_deref().and_then(Requested::parse);
        if let (Some(text), None) = (&requested_text, requested) {
            tracing::warn!(secret = %self.secret_name, value = %text, "ignoring {RENEW_ANNOTATION}: use `serving` or `ca`");
        }
        let ca_rotated_at = annotations
            .get(CA_ROTATED_AT_ANNOTATION)
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .map(SystemTime::from);
        let observed = Observed {
            data: data.as_ref(),
            requested,
            ca_rotated_at,
        };
        let now = SystemTime::now();
        let step = rotation::plan(observed, &self.policy, now);
        let mut secret = secret;
        if let Step::Create { reason } = &step {
            let written = self.write(secret.as_ref(), &step, data.as_ref(), now).await?;
            self.record(&step, reason);
            outcome.wrote = Some("create");
            data = Some(secret_data(&written));
            secret = Some(written);
        }
        let bundle = data
            .as_ref()
            .and_then(|d| rotation::ca_bundle(d))
            .unwrap_or_default()
            .to_vec();
        let (injected, missing) = self.inject(&bundle).await?;
        outcome.injected += injected;
        outcome.missing = missing;
        match &step {
            Step::Keep if requested_text.is_some() => {
                // An unusable request value: drop it so it is not reported forever.
                self.write(secret.as_ref(), &Step::Keep, data.as_ref(), now).await?;
            }
            Step::Keep | Step::Create { .. } => {}
            Step::Wait { until } => outcome.wake_at = Some(*until),
            Step::RotateCa { reason } | Step::RenewServing { reason } => {
                let written = self.write(secret.as_ref(), &step, data.as_ref(), now).await?;
                self.record(&step, reason);
                outcome.wrote = Some(if matches!(step, Step::RotateCa { .. }) {
                    "rotate-ca"
                } else {
                    "renew-serving"
                });
                if matches!(step, Step::RotateCa { .. }) {
                    let bundle = rotation::ca_bundle(&secret_data(&written)).unwrap_or_default().to_vec();
                    outcome.injected += self.inject(&bundle).await?.0;
                    outcome.wake_at = Some(now + self.policy.ca_overlap);
                }
            }
            Step::PruneBundle => {
                let written = self.write(secret.as_ref(), &step, data.as_ref(), now).await?;
                outcome.wrote = Some("prune-bundle");
                let bundle = rotation::ca_bundle(&secret_data(&written)).unwrap_or_default().to_vec();
                outcome.injected += self.inject(&bundle).await?.0;
            }
        }
        Ok(outcome)
    }

    /// Writes the Secret after `step`: created when absent, else replaced at the resourceVersion
    /// read (a conflict means someone else wrote first; the next pass plans again).
    async fn write(
        &self,
        current: Option<&Secret>,
        step: &Step,
        data: Option<&BTreeMap<String, Vec<u8>>>,
        now: SystemTime,
    ) -> Result<Secret, ManagedCertError> {
        let new_data = rotation::execute(step, data, &self.policy, now)?;
        let mut secret = current.cloned().unwrap_or_else(|| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_owned(), "driftguard".to_owned()),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        "webhook-certificate".to_owned(),
                    ),
                    ("app.kubernetes.io/managed-by".to_owned(), "driftguard".to_owned()),
                ])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            ..Default::default()
        });
        secret.data = Some(new_data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
        secret.string_data = None;
        let annotations = secret.meta_mut().annotations.get_or_insert_with(BTreeMap::new);
        annotations.remove(RENEW_ANNOTATION);
        if matches!(step, Step::Create { .. } | Step::RotateCa { .. }) {
            let at = time::OffsetDateTime::from(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            annotations.insert(CA_ROTATED_AT_ANNOTATION.to_owned(), at);
        }
        let what = || format!("writing Secret {}/{}", self.namespace, self.secret_name);
        if current.is_some() {
            self.bounded(
                what,
                self.secrets()
                    .replace(&self.secret_name, &PostParams::default(), &secret),
            )
            .await
        } else {
            self.bounded(what, self.secrets().create(&PostParams::default(), &secret))
                .await
        }
    }

    /// Injects `bundle` (PEM) as `caBundle` into every entry of both webhook configurations
    /// that does not carry it. Returns the entries patched and the configurations missing.
    async fn inject(&self, bundle: &[u8]) -> Result<(usize, Vec<&'static str>), ManagedCertError> {
        if bundle.is_empty() {
            return Ok((0, Vec::new()));
        }
        let validating = self.inject_into::<ValidatingWebhookConfiguration>(bundle).await?;
        let mutating = self.inject_into::<MutatingWebhookConfiguration>(bundle).await?;
        let mut patched = 0;
        let mut missing = Vec::new();
        for (kind, injected) in [
            (
                <ValidatingWebhookConfiguration as k8s_openapi::Resource>::KIND,
                validating,
            ),
            (<MutatingWebhookConfiguration as k8s_openapi::Resource>::KIND, mutating),
        ] {
            match injected {
                Some(count) => patched += count,
                None => missing.push(kind),
            }
        }
        let name = &self.webhook_configuration;
        if patched > 0 {
            tracing::info!(configuration = %name, entries = patched, "injected the CA bundle into the webhook configurations");
        }
        Ok((patched, missing))
    }

    /// Reads the configuration of kind `K` and patches `bundle` into its entries (`None`: there
    /// is no such configuration).
    async fn inject_into<K>(&self, bundle: &[u8]) -> Result<Option<usize>, ManagedCertError>
    where
        K: CaBundles + Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>,
        K: k8s_openapi::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let api = Api::<K>::all(self.client.clone());
        let name = &self.webhook_configuration;
        let kind = <K as k8s_openapi::Resource>::KIND;
        let Some(config) = self
            .bounded(|| format!("reading {kind} {name}"), api.get_opt(name))
            .await?
        else {
            return Ok(None);
        };
        self.patch_entries(&api, kind, &config.ca_bundles(), bundle)
            .await
            .map(Some)
    }

    /// One JSON patch per configuration: for each entry with another bundle, a `test` of its
    /// name (so a concurrent reordering fails the patch instead of hitting the wrong entry)
    /// and an `add` of the bundle.
    async fn patch_entries<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        entries: &[(String, Option<Vec<u8>>)],
        bundle: &[u8],
    ) -> Result<usize, ManagedCertError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
        let mut ops = Vec::new();
        for (index, (name, current)) in entries.iter().enumerate() {
            if current.as_deref() == Some(bundle) {
                continue;
            }
            ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
            ops.push(
                json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}),
            );
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let count = ops.len() / 2;
        // Typed by inference as the JSON Patch of kube's own json-patch version.
        let patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(|e| ManagedCertError::Api {
            what: format!("building the caBundle patch of {kind}"),
            source: kube::Error::SerdeError(e),
        })?;
        self.bounded(
            || format!("injecting the CA bundle into {kind} {}", self.webhook_configuration),
            api.patch(
                &self.webhook_configuration,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            ),
        )
        .await?;
        Ok(count)
    }

    fn record(&self, step: &Step, reason: &str) {
        let what = match step {
            Step::Create { .. } => "a new CA and serving certificate",
            Step::RotateCa { .. } => {
                "a new CA (added to the trusted bundle; the serving certificate moves to it after the overlap)"
            }
            Step::RenewServing { .. } => "a new serving certificate",
            _ => return,
        };
        tracing::info!(secret = %format!("{}/{}", self.namespace, self.secret_name), %reason, "issued {what}");
        let mut event = AuditEvent::new(EventKind::CertificateIssued);
        event.message = format!(
            "issued {what} into Secret {}/{}: {reason}",
            self.namespace, self.secret_name
        );
        self.audit.record(event);
    }

    /// The leader's loop: a pass whenever this replica leads and the interval passes, the
    /// Secret or a webhook configuration changes (`wake`), or leadership is gained.
    pub async fn maintain(
        self: Arc<Self>,
        mut leading: watch::Receiver<bool>,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let retry = self.check_interval.min(Duration::from_secs(5));
        loop {
            let mut next = self.check_interval;
            if *leading.borrow_and_update() {
                let passed = self.pass().await;
                self.metrics.observe_certificate_pass(match &passed {
                    Ok(outcome) if outcome.wrote.is_some() || outcome.injected > 0 => "changed",
                    Ok(_) => "unchanged",
                    Err(error) => error.label(),
                });
                match passed {
                    Ok(outcome) => {
                        if let Some(at) = outcome.wake_at {
                            let until = at.duration_since(SystemTime::now()).unwrap_or_default();
                            next = next.min(until + Duration::from_millis(10));
                        }
                        if !outcome.missing.is_empty() {
                            tracing::warn!(configuration = %self.webhook_configuration, missing = ?outcome.missing, "webhook configurations not found: nothing to inject the CA bundle into (is the chart installed?)");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, kind = error.label(), "certificate pass failed; retrying");
                        next = retry;
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(next) => {}
                () = wake.notified() => {}
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Every replica: serve the Secret's certificate, swapping it in whenever the Secret
    /// changes, and wake the leader's loop on any change of the Secret or the webhook
    /// configurations.
    pub async fn follow(
        self: Arc<Self>,
        serving: Arc<ServingCert>,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()>,
    ) {
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", self.secret_name));
        let secrets = watcher(self.secrets(), by_name).default_backoff();
        let configs = watcher::Config::default().fields(&format!("metadata.name={}", self.webhook_configuration));
        let validating = watcher(
            Api::<ValidatingWebhookConfiguration>::all(self.client.clone()),
            configs.clone(),
        )
        .default_backoff()
        .map(|event| event.map(|_| ()));
        let mutating = watcher(Api::<MutatingWebhookConfiguration>::all(self.client.clone()), configs)
            .default_backoff()
            .map(|event| event.map(|_| ()));
        let origin = format!("Secret {}/{}", self.namespace, self.secret_name);
        let follow_secret = async {
            let mut secrets = std::pin::pin!(secrets);
            while let Some(event) = secrets.next().await {
                match event {
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                        self.serve(&secret, &serving, &origin);
                        wake.notify_one();
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        tracing::warn!(secret = %origin, "the certificate Secret was deleted; still serving the last certificate until the leader writes a new one");
                        wake.notify_one();
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(error) => tracing::warn!(secret = %origin, %error, "watching the certificate Secret; retrying"),
                }
            }
        };
        let follow_configs = async {
            let mut configs = std::pin::pin!(futures_util::stream::select(validating, mutating));
            while let Some(event) = configs.next().await {
                match event {
                    Ok(()) => wake.notify_one(),
                    Err(error) => tracing::warn!(%error, "watching the webhook configurations; retrying"),
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = follow_secret => {}
            () = follow_configs => {}
        }
    }

    fn serve(&self, secret: &Secret, serving: &ServingCert, origin: &str) {
        let data = secret_data(secret);
        let (Some(cert), Some(key)) = (data.get(TLS_CERT_KEY), data.get(TLS_KEY_KEY)) else {
            tracing::warn!(secret = %origin, "the certificate Secret has no tls.crt/tls.key yet");
            return;
        };
        if let Err(error) = serving.install_pem(
            cert,
            key,
            &format!("{origin} {TLS_CERT_KEY}"),
            &format!("{origin} {TLS_KEY_KEY}"),
        ) {
            tracing::warn!(%error, "ignoring the certificate in the Secret; still serving the previous one");
        }
    }
}

/// A webhook configuration's entries as (name, caBundle), in order.
trait CaBundles {
    fn ca_bundles(self) -> Vec<(String, Option<Vec<u8>>)>;
}

impl CaBundles for ValidatingWebhookConfiguration {
    fn ca_bundles(self) -> Vec<(String, Option<Vec<u8>>)> {
        let hooks = self.webhooks.unwrap_or_default().into_iter();
        hooks
            .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
            .collect()
    }
}

impl CaBundles for MutatingWebhookConfiguration {
    fn ca_bundles(self) -> Vec<(String, Option<Vec<u8>>)> {
        let hooks = self.webhooks.unwrap_or_default().into_iter();
        hooks
            .map(|w| (w.name, w.client_config.ca_bundle.map(|b| b.0)))
            .collect()
    }
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .as_ref()
        .map(|data| data.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}
