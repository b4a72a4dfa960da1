//! TLS: the rustls configuration and a certificate resolver whose pair is swapped live when the
//! files on disk change.
//!
//! Files are re-read by path on every check, so every way of replacing them works: in-place
//! writes, renames, and the kubelet's Secret volume update (which atomically renames a new
//! `..data` symlink over the old one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use arc_swap::ArcSwapOption;
use rustls::server::WebPkiClientVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;

use super::shutdown::Shutdown;
use crate::certs::{CertError, cert_info, load_certified_key};
use crate::telemetry::Metrics;

/// ALPN protocols offered, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The serving certificate every new TLS handshake gets, swapped live.
///
/// Fed by the file reloader ([`CertReloader`]) or, in self-managed mode, by the replica that
/// follows the certificate Secret (`crate::certs::managed`). Connections already open keep the
/// certificate they were made with; only new handshakes see a swap.
pub struct ServingCert {
    current: ArcSwapOption<CertifiedKey>,
    metrics: Arc<Metrics>,
    /// Where a rotation is recorded (`certificate.rotated`), once serving records one.
    audit: OnceLock<Arc<dyn crate::audit::AuditSink>>,
    loaded: watch::Sender<bool>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// An empty slot: handshakes fail until the first [`ServingCert::install_pem`].
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwapOption::empty(),
            metrics,
            audit: OnceLock::new(),
            loaded: watch::Sender::new(false),
        })
    }

    /// Whether a certificate has been installed.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Resolves once a certificate is installed.
    pub async fn wait_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        let _ = loaded.wait_for(|l| *l).await;
    }

    /// Record every later rotation in `audit`.
    pub fn record_rotations(&self, audit: Arc<dyn crate::audit::AuditSink>) {
        let _ = self.audit.set(audit);
    }

    /// Parses a PEM chain (leaf first) and key and serves them to new handshakes. Returns
    /// false, changing nothing, when they are the pair already served. `origin` names where
    /// they came from in logs and audit records.
    pub fn install_pem(&self, cert: &[u8], key: &[u8], cert_origin: &str, key_origin: &str) -> Result<bool, CertError> {
        let certified = load_certified_key(cert, key, cert_origin, key_origin)?;
        // The key matches the leaf (checked above), so the same chain means the same pair.
        let unchanged = self
            .current
            .load()
            .as_ref()
            .is_some_and(|current| current.cert == certified.cert);
        if unchanged {
            return Ok(false);
        }
        self.install(certified, cert_origin);
        Ok(true)
    }

    fn install(&self, certified: CertifiedKey, origin: &str) {
        let leaf = certified.cert.first().map(cert_info);
        match &leaf {
            Some(Ok(info)) => {
                self.metrics.set_certificate_expiry(info.not_after.unix_timestamp());
                tracing::info!(from = %origin, serial = %info.serial, not_after = %info.not_after, "serving TLS certificate loaded");
            }
            // Already validated by `load_certified_key`; nothing more to report.
            _ => tracing::info!(from = %origin, "serving TLS certificate loaded"),
        }
        let first = self.current.swap(Some(Arc::new(certified))).is_none();
        if !first {
            self.metrics.observe_certificate_reload("reloaded");
            if let Some(audit) = self.audit.get() {
                let mut record = crate::audit::AuditEvent::new(crate::audit::EventKind::CertificateRotated);
                record.message = match leaf {
                    Some(Ok(info)) => format!(
                        "serving certificate rotated from {origin}: serial {}, valid until {}",
                        info.serial, info.not_after
                    ),
                    _ => format!("serving certificate rotated from {origin}"),
                };
                audit.record(record);
            }
        }
        self.loaded.send_replace(true);
    }

    #[cfg(test)]
    fn served_leaf(&self) -> Vec<u8> {
        self.current
            .load()
            .as_ref()
            .map(|c| c.cert[0].to_vec())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The rustls configuration: ring, TLS 1.3 and 1.2 only, h2 and http/1.1, certificates from
/// `resolver`.
///
/// With `client_roots`, a client certificate is asked for and, when one is presented, must
/// chain to those roots or the handshake fails; a client without one still connects (the
/// kubelet's probes present none), and the webhook routes refuse it (see [`super::routes`]).
pub(super) fn server_config(
    resolver: Arc<ServingCert>,
    client_roots: Option<RootCertStore>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|error| rustls::Error::General(format!("client CA: {error}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The trust roots for client certificates, from the PEM bundle at `path`.
pub(super) async fn client_roots(path: &Path) -> Result<RootCertStore, CertError> {
    let pem = tokio::fs::read(path).await.map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    let mut roots = RootCertStore::empty();
    for der in crate::certs::parse_cert_chain(&pem, &origin)? {
        roots.add(der).map_err(|error| CertError::Malformed {
            origin: origin.clone(),
            reason: format!("not a usable CA certificate: {error}"),
        })?;
    }
    Ok(roots)
}

/// What one look at the files found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReloadOutcome {
    /// Same bytes as the last look.
    Unchanged,
    /// New, valid pair: now served to new handshakes.
    Reloaded,
    /// New bytes that do not form a valid pair: the previous pair stays in service.
    Rejected,
}

/// Watches the certificate and key files and feeds a [`ServingCert`].
#[derive(Debug)]
pub(super) struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    serving: Arc<ServingCert>,
    metrics: Arc<Metrics>,
    /// Bytes of the last look, valid or not, so a broken pair is reported once, not per tick.
    last_seen: (Vec<u8>, Vec<u8>),
    /// True while the files cannot be read, so the outage is reported once.
    read_failing: bool,
}

impl CertReloader {
    /// Loads the initial pair into `serving`; failing here fails the start, with the files
    /// named.
    pub(super) async fn load(
        cert_file: &Path,
        key_file: &Path,
        serving: Arc<ServingCert>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CertError> {
        let (cert, key) = read_pair(cert_file, key_file).await?;
        serving.install_pem(
            &cert,
            &key,
            &cert_file.display().to_string(),
            &key_file.display().to_string(),
        )?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            serving,
            metrics,
            last_seen: (cert, key),
            read_failing: false,
        })
    }

    /// Re-reads the files and swaps in a changed, valid pair.
    pub(super) async fn check(&mut self) -> ReloadOutcome {
        let mut pair = match self.read().await {
            Some(pair) => pair,
            None => return ReloadOutcome::Rejected,
        };
        if pair == self.last_seen {
            return ReloadOutcome::Unchanged;
        }
        let mut installed = self.install(&pair);
        if installed.is_err() {
            // The read may have straddled an update (certificate before a symlink swap, key
            // after it); look once more before calling the update broken.
            if let Some(again) = self.read().await.filter(|again| *again != pair) {
                installed = self.install(&again);
                pair = again;
            }
        }
        let outcome = match installed {
            Ok(true) => ReloadOutcome::Reloaded,
            Ok(false) => ReloadOutcome::Unchanged,
            Err(error) => {
                tracing::warn!(%error, "ignoring the changed TLS certificate files; still serving the previous certificate");
                self.metrics.observe_certificate_reload("rejected");
                ReloadOutcome::Rejected
            }
        };
        self.last_seen = pair;
        outcome
    }

    fn install(&self, (cert, key): &(Vec<u8>, Vec<u8>)) -> Result<bool, CertError> {
        self.serving.install_pem(
            cert,
            key,
            &self.cert_file.display().to_string(),
            &self.key_file.display().to_string(),
        )
    }

    /// Both files, or `None` (reported once per outage, not per tick) if one cannot be read.
    async fn read(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        match read_pair(&self.cert_file, &self.key_file).await {
            Ok(pair) => {
                self.read_failing = false;
                Some(pair)
            }
            Err(error) => {
                if !self.read_failing {
                    tracing::warn!(%error, "cannot re-read the TLS certificate; still serving the previous one");
                    self.metrics.observe_certificate_reload("rejected");
                }
                self.read_failing = true;
                None
            }
        }
    }

    /// Checks every `interval` until shutdown starts.
    pub(super) async fn run(mut self, interval: Duration, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; the files were just loaded.
        ticker.tick().await;
        loop {
            tokio::select! {
                () = shutdown.closing() => return,
                _ = ticker.tick() => {
                    self.check().await;
                }
            }
        }
    }
}

async fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| CertError::Read { path, source })
        }
    };
    Ok((read(cert_file).await?, read(key_file).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;

    fn issue(ca: &CertificateAuthority) -> crate::certs::IssuedCert {
        ca.issue_serving(&["localhost".to_owned()], Duration::from_secs(3600))
            .unwrap()
    }

    fn served_leaf(reloader: &CertReloader) -> Vec<u8> {
        reloader.serving.served_leaf()
    }

    #[tokio::test]
    async fn swaps_valid_changes_and_keeps_the_old_pair_on_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = CertificateAuthority::generate("reload test").unwrap();
        let first = issue(&ca);
        std::fs::write(&cert_file, &first.cert_pem).unwrap();
        std::fs::write(&key_file, &first.key_pem).unwrap();
        let metrics = Arc::new(Metrics::new());
        let serving = ServingCert::new(metrics.clone());
        let mut reloader = CertReloader::load(&cert_file, &key_file, serving, metrics.clone())
            .await
            .unwrap();
        let first_leaf = served_leaf(&reloader);
        assert_eq!(reloader.check().await, ReloadOutcome::Unchanged);

        std::fs::write(&cert_file, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
        assert_eq!(reloader.check().await, ReloadOutcome::Rejected);
        assert_eq!(served_leaf(&reloader), first_leaf);
        // Reported once, not on every tick.
        assert_eq!(reloader.check().await, ReloadOutcome::Unchanged);

        // A new certificate with the old key is a mismatch, also rejected.
        let second = issue(&ca);
        std::fs::write(&cert_file, &second.cert_pem).unwrap();
        assert_eq!(reloader.check().await, ReloadOutcome::Rejected);
        assert_eq!(served_leaf(&reloader), first_leaf);

        std::fs::write(&key_file, &second.key_pem).unwrap();
        assert_eq!(reloader.check().await, ReloadOutcome::Reloaded);
        let second_leaf = served_leaf(&reloader);
        assert_ne!(second_leaf, first_leaf);

        // A file that disappears is reported once, and nothing changes while it is gone.
        std::fs::remove_file(&key_file).unwrap();
        assert_eq!(reloader.check().await, ReloadOutcome::Rejected);
        assert_eq!(reloader.check().await, ReloadOutcome::Rejected);
        std::fs::write(&key_file, &second.key_pem).unwrap();
        assert_eq!(reloader.check().await, ReloadOutcome::Unchanged);
        assert_eq!(served_leaf(&reloader), second_leaf);

        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"driftguard_certificate_reloads_total{result="rejected"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"driftguard_certificate_reloads_total{result="reloaded"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn missing_initial_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = CertReloader::load(
            &dir.path().join("nope.crt"),
            &dir.path().join("nope.key"),
            ServingCert::new(Arc::new(Metrics::new())),
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }
}
