//! TLS: the rustls configuration and a certificate resolver whose pair is swapped live when the
//! files on disk change.
//!
//! Files are re-read by path on every check, so every way of replacing them works: in-place
//! writes, renames, and the kubelet's Secret volume update (which atomically renames a new
//! `..data` symlink over the old one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::shutdown::Shutdown;
use crate::certs::{CertError, cert_info, load_certified_key};
use crate::telemetry::Metrics;

/// ALPN protocols offered, in preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Serves whatever certificate pair was loaded last.
#[derive(Debug)]
pub(super) struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration: ring, TLS 1.3 and 1.2 only, h2 and http/1.1, certificates from
/// `resolver`.
pub(super) fn server_config(resolver: Arc<ReloadingResolver>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
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

/// Watches the certificate and key files and feeds [`ReloadingResolver`].
#[derive(Debug)]
pub(super) struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
    /// Bytes of the last look, valid or not, so a broken pair is reported once, not per tick.
    last_seen: (Vec<u8>, Vec<u8>),
    /// True while the files cannot be read, so the outage is reported once.
    read_failing: bool,
    /// Where a rotation is recorded (`certificate.rotated`), when serving records one.
    pub(super) audit: Option<AuditHook>,
}

/// The audit sink a rotation is recorded in.
#[derive(Clone)]
pub(super) struct AuditHook(pub(super) Arc<dyn crate::audit::AuditSink>);

impl std::fmt::Debug for AuditHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditHook")
    }
}

impl CertReloader {
    /// Loads the initial pair; failing here fails the start, with the files named.
    pub(super) async fn load(cert_file: &Path, key_file: &Path, metrics: Arc<Metrics>) -> Result<Self, CertError> {
        let (cert, key) = read_pair(cert_file, key_file).await?;
        let certified = parse_pair(&cert, &key, cert_file, key_file)?;
        record_loaded(&certified, cert_file, &metrics);
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            resolver: Arc::new(ReloadingResolver {
                current: ArcSwap::from_pointee(certified),
            }),
            metrics,
            last_seen: (cert, key),
            read_failing: false,
            audit: None,
        })
    }

    /// The resolver to install in the TLS configuration.
    pub(super) fn resolver(&self) -> Arc<ReloadingResolver> {
        Arc::clone(&self.resolver)
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
        let mut parsed = parse_pair(&pair.0, &pair.1, &self.cert_file, &self.key_file);
        if parsed.is_err() {
            // The read may have straddled an update (certificate before a symlink swap, key
            // after it); look once more before calling the update broken.
            if let Some(again) = self.read().await.filter(|again| *again != pair) {
                parsed = parse_pair(&again.0, &again.1, &self.cert_file, &self.key_file);
                pair = again;
            }
        }
        let outcome = match parsed {
            Ok(certified) => {
                record_loaded(&certified, &self.cert_file, &self.metrics);
                if let Some(AuditHook(audit)) = &self.audit {
                    let mut record = crate::audit::AuditEvent::new(crate::audit::EventKind::CertificateRotated);
                    let leaf = certified.cert.first().map(cert_info);
                    record.message = match leaf {
                        Some(Ok(info)) => format!(
                            "serving certificate rotated from {}: serial {}, valid until {}",
                            self.cert_file.display(),
                            info.serial,
                            info.not_after
                        ),
                        _ => format!("serving certificate rotated from {}", self.cert_file.display()),
                    };
                    audit.record(record);
                }
                self.resolver.current.store(Arc::new(certified));
                self.metrics.observe_certificate_reload("reloaded");
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring the changed TLS certificate files; still serving the previous certificate");
                self.metrics.observe_certificate_reload("rejected");
                ReloadOutcome::Rejected
            }
        };
        self.last_seen = pair;
        outcome
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
                () = shutdown.started() => return,
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

fn parse_pair(cert: &[u8], key: &[u8], cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, CertError> {
    load_certified_key(
        cert,
        key,
        &cert_file.display().to_string(),
        &key_file.display().to_string(),
    )
}

fn record_loaded(certified: &CertifiedKey, cert_file: &Path, metrics: &Metrics) {
    let leaf = certified.cert.first().map(cert_info);
    match leaf {
        Some(Ok(info)) => {
            metrics.set_certificate_expiry(info.not_after.unix_timestamp());
            tracing::info!(
                file = %cert_file.display(),
                serial = %info.serial,
                not_after = %info.not_after,
                "serving TLS certificate loaded"
            );
        }
        // Already validated by `load_certified_key`; nothing more to report.
        _ => tracing::info!(file = %cert_file.display(), "serving TLS certificate loaded"),
    }
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
        reloader.resolver.current.load().cert[0].to_vec()
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
        let mut reloader = CertReloader::load(&cert_file, &key_file, metrics.clone())
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
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }
}
