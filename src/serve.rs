//! `driftguard serve`: serve admission over HTTPS from the desired state of every Guard.
//!
//! Standalone (this module): Guards come from the config file and are reloaded from Git on
//! their sources' interval. Cluster mode ([`cluster`]): Guards come from the API, the Lease
//! holder enforces, and every replica serves what the leader applied.

mod cluster;
mod hpa;

pub use cluster::connect;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admission::{Admission, AdmissionSettings};
use crate::audit::{AuditSink, ChainSink};
use crate::certs;
use crate::config::{Settings, TlsSource};
use crate::desired::{DesiredCache, DesiredSet, DesiredStore, GuardId, SourceSettings, load_guard};
use crate::receiver::{self, FileSource, FileTargets, HookTargets, ReceiverLimits};
use crate::server::{self, CertificateSource, ServerOptions};
use crate::source::track::{TrackError, Verification, track};
use crate::source::verify::TrustedKeys;
use crate::source::{Credentials, FetchRequest, Fetcher, GitReference};
use crate::telemetry::{CountingSink, Metrics};

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Development certificates could not be prepared.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// The server failed to start or run.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The audit writer could not start.
    #[error("cannot start the audit writer: {0}")]
    Audit(std::io::Error),
    /// The audit signing key could not be read or generated.
    #[error("audit signing key: {0}")]
    AuditKey(#[from] crate::audit::signing::KeyError),
    /// The cluster could not be reached or configured.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The push receiver could not start.
    #[error(transparent)]
    Receiver(#[from] receiver::ReceiverError),
}

/// Trusted keys from a directory with one file per key (a mounted Secret).
fn trusted_keys_from(dir: &std::path::Path) -> Result<TrustedKeys, String> {
    let read = |error: std::io::Error| format!("cannot read trusted keys from {}: {error}", dir.display());
    let mut data = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        // A mounted Secret also holds `..data` links and timestamped dirs; keys are plain files.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        data.insert(name, std::fs::read(&path).map_err(read)?);
    }
    let keys = TrustedKeys::from_secret_data(&data).map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err(format!(
            "{} holds no public keys: nothing can be trusted",
            dir.display()
        ));
    }
    Ok(keys)
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The first SIGTERM/Ctrl-C turns the first receiver true (shutdown starts: the webhook
/// server drains, every loop stops), the second turns the second one true (the rest of the
/// drain delay is skipped). Abort the task once the server has ended.
fn on_signals() -> (JoinHandle<()>, watch::Receiver<bool>, watch::Receiver<bool>) {
    let (stop_tx, stop) = watch::channel(false);
    let (skip_tx, skip_drain) = watch::channel(false);
    // Listening starts now, so a second signal that comes quickly is not lost.
    let mut signals = server::Signals::listen();
    let task = tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!("received {first}, shutting down");
        let _ = stop_tx.send(true);
        let second = signals.next().await;
        tracing::info!("received {second} again, hurrying the shutdown");
        let _ = skip_tx.send(true);
        // Keep the senders: a receiver whose sender is gone counts as signalled.
        std::future::pending::<()>().await;
    });
    (task, stop, skip_drain)
}

/// Binds the push receiver on `addr` and serves it until `shutdown` (both modes).
async fn start_receiver(
    addr: SocketAddr,
    targets: Arc<dyn HookTargets>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, ServeError> {
    let limits = ReceiverLimits::default();
    let bound = receiver::bind(addr, receiver::router(targets, &limits, metrics), &limits).await?;
    Ok(tokio::spawn(bound.run(shutdown)))
}

/// Waits for the receiver (if any) to finish its own graceful shutdown.
async fn join_receiver(task: Option<JoinHandle<()>>) {
    let Some(task) = task else {
        return;
    };
    if let Err(error) = task.await {
        tracing::warn!(%error, "push receiver task failed");
    }
}

/// Loads all Guards, keeping each Guard's last good set when a refresh fails.
struct Loader {
    settings: Arc<Settings>,
    cache: DesiredCache,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
    last_good: HashMap<GuardId, Arc<DesiredSet>>,
}

impl Loader {
    /// Fetch (and verify) one source; the settings to load its commit with. Credentials and
    /// trusted keys are re-read from their files each time, so rotating them needs no restart.
    fn track(&self, source: &crate::config::Source) -> Result<SourceSettings, String> {
        let credentials = match &source.credentials_dir {
            Some(dir) => Credentials::from_files(dir).map_err(|e| e.to_string())?,
            None => Credentials::None,
        };
        let verification = match &source.verify {
            Some((mode, dir)) => Some(Verification {
                mode: *mode,
                keys: trusted_keys_from(dir)?,
            }),
            None => None,
        };
        let request = FetchRequest {
            source_id: &source.settings.id,
            url: &source.settings.url,
            reference: &source.settings.reference,
            credentials: &credentials,
            timeout: source.timeout,
        };
        let started = std::time::Instant::now();
        let tracked = track(&self.fetcher, &request, verification.as_ref());
        let failure = tracked.as_ref().err().map(TrackError::reason);
        self.metrics
            .observe_fetch(&source.settings.id, started.elapsed(), failure);
        let tracked = tracked.map_err(|e| e.to_string())?;
        self.metrics
            .set_source_revision(&source.settings.id, &tracked.revision.reference);
        Ok(SourceSettings {
            id: source.settings.id.clone(),
            url: tracked.repository.path().display().to_string(),
            reference: GitReference::Commit(tracked.revision.commit),
        })
    }

    /// Load every Guard once; returns the sets to publish and whether all Guards loaded.
    fn load_all(&mut self) -> (Vec<Arc<DesiredSet>>, bool) {
        let mut complete = true;
        let mut tracked: HashMap<usize, Result<SourceSettings, String>> = HashMap::new();
        for guard in &self.settings.guards {
            let Some(source) = self.settings.sources.get(guard.source) else {
                continue;
            };
            let settings = tracked
                .entry(guard.source)
                .or_insert_with(|| self.track(source))
                .clone();
            let loaded = settings.and_then(|settings| {
                // Standalone: no discovery; custom kinds need their CRD in the same render.
                load_guard(guard.policy.clone(), &settings, &self.cache, &Default::default()).map_err(|e| e.to_string())
            });
            match loaded {
                Ok(set) => {
                    let changed = self
                        .last_good
                        .get(&guard.policy.id)
                        .is_none_or(|old| !Arc::ptr_eq(old, &set));
                    if changed {
                        tracing::info!(guard = %guard.policy.id, revision = %set.revision.reference, objects = set.objects.len(), "desired state loaded");
                    }
                    self.last_good.insert(guard.policy.id.clone(), set);
                }
                Err(error) => {
                    complete = false;
                    tracing::error!(guard = %guard.policy.id, %error, "cannot fetch or load desired state; keeping the last good revision");
                }
            }
        }
        (self.last_good.values().cloned().collect(), complete)
    }
}

/// A bound webhook server and what it serves from.
struct Started {
    bound: server::BoundServer,
    /// The development CA, when certificates were generated.
    ca_file: Option<std::path::PathBuf>,
}

/// Prepare certificates and bind the webhook and metrics listeners. `managed` is the slot the
/// self-managed Secret fills (cluster mode with `server.tls.managed`); it must hold a
/// certificate already.
async fn start(
    settings: &Settings,
    store: Arc<DesiredStore>,
    metrics: Arc<Metrics>,
    audit: Arc<dyn AuditSink>,
    managed: Option<Arc<server::ServingCert>>,
    hpa: crate::desired::HpaBounds,
) -> Result<Started, ServeError> {
    let (certificate, ca_file) = match (&settings.server.tls, managed) {
        (TlsSource::Files { cert, key }, _) => (
            CertificateSource::Files {
                cert_file: cert.clone(),
                key_file: key.clone(),
            },
            None,
        ),
        (TlsSource::Dev(dir), _) => {
            let hosts: Vec<String> = certs::DEFAULT_DEV_HOSTS.iter().map(|h| h.to_string()).collect();
            let paths = certs::ensure_dev_certs(dir, &hosts)?;
            (
                CertificateSource::Files {
                    cert_file: paths.cert,
                    key_file: paths.key,
                },
                Some(paths.ca_cert),
            )
        }
        (TlsSource::Managed(_), Some(serving)) => (CertificateSource::Provided(serving), None),
        (TlsSource::Managed(_), None) => {
            return Err(ServeError::Cluster(
                "server.tls.managed needs cluster mode: the certificates live in a Secret".to_owned(),
            ));
        }
    };
    let audit_for_rotations = audit.clone();
    let admission = Arc::new(Admission::new(
        store,
        AdmissionSettings {
            own_username: settings.own_username.clone(),
            hpa,
        },
        audit,
    ));
    let mut options = ServerOptions::with_certificate(certificate);
    options.listen = settings.server.listen;
    options.metrics_listen = settings.server.metrics_listen;
    options.reload_interval = settings.server.reload_interval;
    options.max_body_bytes = settings.server.max_body_bytes;
    options.max_in_flight = settings.server.max_in_flight;
    options.shutdown_grace = settings.server.shutdown_grace;
    options.drain_delay = settings.server.drain_delay;
    options.client_ca_file = settings.server.client_ca_file.clone();
    let mut bound = server::bind(options, admission, metrics).await?;
    bound.record_rotations(audit_for_rotations);
    tracing::info!(addr = %bound.https_addr(), metrics = ?bound.metrics_addr(), "driftguard is serving admission");
    Ok(Started { bound, ca_file })
}

/// Run until SIGTERM/Ctrl-C. `embedded` prints how to try the embedded default.
pub async fn run(settings: Settings, embedded: bool) -> Result<(), ServeError> {
    if let Some(cluster_settings) = settings.cluster.clone() {
        return cluster::run(settings, cluster_settings).await;
    }
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(DesiredStore::new());
    // Before anything else touches libgit2: the fetcher makes it hermetic process-wide.
    let fetcher = Fetcher::new(&settings.git_cache_dir);
    let mut loader = Loader {
        settings: settings.clone(),
        cache: DesiredCache::new(settings.desired_cache_bytes),
        fetcher,
        metrics: metrics.clone(),
        last_good: HashMap::new(),
    };
    // libgit2 blocks: load on the blocking pool, then hand the loader back.
    let (loader_back, (sets, complete)) = tokio::task::spawn_blocking(move || {
        let loaded = loader.load_all();
        (loader, loaded)
    })
    .await
    .map_err(|e| ServeError::Audit(std::io::Error::other(e)))?;
    let mut loader = loader_back;
    store.publish_reporting(sets, complete, &metrics);

    let key_file = &settings.audit_signing.key_file;
    let (key, generated) = crate::audit::signing::SigningKey::load_or_generate(key_file)?;
    if generated {
        tracing::info!(file = %key_file.display(), key_id = %key.key_id(), "generated the audit signing key (mode 0600); `driftguard audit public-key --signing-key-file` prints its public key");
    }
    let audit = Arc::new(
        ChainSink::builder(settings.audit.clone())
            .dropped_counter(metrics.audit_dropped_counter())
            .file_metrics(metrics.audit_file_metrics())
            .signer(Arc::new(crate::audit::signing::SignerSlot::with(key)))
            .start()
            .map_err(ServeError::Audit)?,
    );
    let counted: Arc<dyn AuditSink> = Arc::new(CountingSink::new(audit.clone(), metrics.clone()));
    let Started { bound, ca_file } = start(
        &settings,
        store.clone(),
        metrics.clone(),
        counted,
        None,
        crate::desired::HpaBounds::default(),
    )
    .await?;
    let addr = bound.https_addr();
    if let (true, Some(ca)) = (embedded, ca_file) {
        let metrics_url = bound
            .metrics_addr()
            .map(|m| format!("; metrics on http://{m}/metrics"))
            .unwrap_or_default();
        eprintln!(
            "driftguard serves examples/app on https://{addr} (CA: {ca}){metrics_url}\nTry: curl --cacert {ca} -H 'Content-Type: application/json' --data @examples/reviews/scale-deployment.json https://{addr}/validate",
            ca = ca.display()
        );
    }
    // Push receiver: a verified hook wakes the refresher at once.
    let (signal, stop, skip_drain) = on_signals();
    let hook_targets = Arc::new(FileTargets::new(settings.sources.iter().map(|s| FileSource {
        id: s.settings.id.clone(),
        secret_file: s.receiver_secret.clone(),
    })));
    let pushed = hook_targets.notify();
    let hooks = match settings.server.hooks_listen {
        Some(addr) => Some(start_receiver(addr, hook_targets, metrics.clone(), stopped(stop.clone())).await?),
        None => None,
    };
    let period = settings
        .sources
        .iter()
        .map(|s| s.interval)
        .min()
        .unwrap_or(Duration::from_secs(60));
    let refresh_store = store.clone();
    let refresh_metrics = metrics.clone();
    let refresher = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = pushed.notified() => tracing::info!("push received; refreshing now"),
            }
            let joined = tokio::task::spawn_blocking(move || {
                let loaded = loader.load_all();
                (loader, loaded)
            })
            .await;
            match joined {
                Ok((back, (sets, complete))) => {
                    loader = back;
                    refresh_store.publish_reporting(sets, complete, &refresh_metrics);
                }
                Err(error) => {
                    tracing::error!(%error, "desired-state refresh task failed; refresh stops");
                    return;
                }
            }
        }
    });
    let result = bound.run_until(stopped(stop), stopped(skip_drain)).await;
    signal.abort();
    refresher.abort();
    join_receiver(hooks).await;
    // Every decision made before shutdown is on disk (and fsynced), and signed, before the
    // process exits.
    tokio::task::block_in_place(|| audit.digest_now());
    Ok(result?)
}
