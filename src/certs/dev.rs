//! Self-signed certificate files for running `driftguard serve` locally without any setup.
//!
//! The files are reused across runs so a client that trusts `ca.crt` keeps working; they are
//! replaced only when missing, unreadable as certificates, or close to expiry.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use super::CertError;
use super::authority::{CertificateAuthority, DEFAULT_CA_VALIDITY, DEFAULT_SERVING_VALIDITY};
use super::pem::{load_certified_key, verify_serving};

/// Existing dev certificates are reused only if they stay valid at least this much longer.
pub const DEV_MIN_REMAINING: Duration = Duration::from_secs(30 * 24 * 3600);
/// Hosts a local client reaches the dev server by.
pub const DEFAULT_DEV_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Common name of the dev CA.
const DEV_CA_NAME: &str = "driftguard development CA";

const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

/// Where [`ensure_dev_certs`] put the files, and what it had to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCertPaths {
    /// The CA certificate clients should trust.
    pub ca_cert: PathBuf,
    /// The CA private key (mode 0600).
    pub ca_key: PathBuf,
    /// The serving certificate chain (leaf, then CA).
    pub cert: PathBuf,
    /// The serving private key (mode 0600).
    pub key: PathBuf,
    /// Whether the files were reused or (partly) regenerated.
    pub outcome: DevCertOutcome,
}

/// What [`ensure_dev_certs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevCertOutcome {
    /// All four files were valid and kept.
    Reused,
    /// The CA was kept; the serving certificate and key were issued anew.
    ReissuedServing,
    /// A new CA and serving certificate were generated (clients must trust the new `ca.crt`).
    Regenerated,
}

/// Makes sure `dir` holds `ca.crt`, `ca.key`, `tls.crt` and `tls.key` for serving `hosts`,
/// valid for more than [`DEV_MIN_REMAINING`], reusing what is there when possible.
pub fn ensure_dev_certs(dir: &Path, hosts: &[String]) -> Result<DevCertPaths, CertError> {
    let paths = prepare(dir, hosts)?;
    let now = SystemTime::now();
    let deadline = now + DEV_MIN_REMAINING;

    let existing_ca = match load_ca(&paths, deadline)? {
        Ok(ca) => Some(ca),
        Err(reason) => {
            tracing::info!(dir = %dir.display(), %reason, "generating a new development CA");
            None
        }
    };
    let (ca, ca_is_new) = match existing_ca {
        Some(ca) => (ca, false),
        None => {
            let ca = CertificateAuthority::generate_with_validity(DEV_CA_NAME, DEFAULT_CA_VALIDITY)?;
            write_file(&paths.ca_key, ca.key_pem().as_bytes(), true)?;
            write_file(&paths.ca_cert, ca.cert_pem().as_bytes(), false)?;
            (ca, true)
        }
    };
    if !ca_is_new {
        match serving_is_usable(&paths, &ca, hosts, now, deadline)? {
            Ok(()) => return Ok(paths),
            Err(reason) => {
                tracing::info!(dir = %dir.display(), %reason, "issuing a new development serving certificate");
            }
        }
    }
    let issued = ca.issue_serving(hosts, DEFAULT_SERVING_VALIDITY)?;
    write_file(&paths.key, issued.key_pem.as_bytes(), true)?;
    write_file(&paths.cert, issued.cert_pem.as_bytes(), false)?;
    let outcome = if ca_is_new {
        DevCertOutcome::Regenerated
    } else {
        DevCertOutcome::ReissuedServing
    };
    Ok(DevCertPaths { outcome, ..paths })
}

/// Checks `hosts`, creates `dir`, and names the four files in it.
fn prepare(dir: &Path, hosts: &[String]) -> Result<DevCertPaths, CertError> {
    if hosts.is_empty() {
        return Err(CertError::NoHosts);
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(DevCertPaths {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
        outcome: DevCertOutcome::Reused,
    })
}

/// Writes a new CA and a serving certificate for `hosts` into `dir` as `ca.crt`, `ca.key`,
/// `tls.crt` and `tls.key` (keys mode 0600), for `driftguard certs generate`. Existing files
/// are kept, and the call fails naming them, unless `overwrite`.
pub fn generate_certs(
    dir: &Path,
    hosts: &[String],
    ca_validity: Duration,
    serving_validity: Duration,
    overwrite: bool,
) -> Result<DevCertPaths, CertError> {
    let paths = DevCertPaths {
        outcome: DevCertOutcome::Regenerated,
        ..prepare(dir, hosts)?
    };
    if !overwrite {
        for path in [&paths.ca_cert, &paths.ca_key, &paths.cert, &paths.key] {
            if path.exists() {
                return Err(CertError::Write {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the file exists (pass --force to replace it)",
                    ),
                });
            }
        }
    }
    let ca = CertificateAuthority::generate_with_validity("driftguard webhook CA", ca_validity)?;
    let issued = ca.issue_serving(hosts, serving_validity)?;
    write_file(&paths.ca_key, ca.key_pem().as_bytes(), true)?;
    write_file(&paths.ca_cert, ca.cert_pem().as_bytes(), false)?;
    write_file(&paths.key, issued.key_pem.as_bytes(), true)?;
    write_file(&paths.cert, issued.cert_pem.as_bytes(), false)?;
    Ok(paths)
}

/// Outer error: the files exist but cannot be read (the user must act). Inner error: the CA
/// is missing, broken or expiring, so a new one is generated.
fn load_ca(paths: &DevCertPaths, deadline: SystemTime) -> Result<Result<CertificateAuthority, CertError>, CertError> {
    let (cert, key) = match read_pair(&paths.ca_cert, &paths.ca_key)? {
        Ok(pair) => pair,
        Err(missing) => return Ok(Err(missing)),
    };
    let ca = match CertificateAuthority::from_pem_with_origin(
        &String::from_utf8_lossy(&cert),
        &String::from_utf8_lossy(&key),
        &paths.ca_cert.display().to_string(),
        &paths.ca_key.display().to_string(),
    ) {
        Ok(ca) => ca,
        Err(e) => return Ok(Err(e)),
    };
    if ca.not_after() <= OffsetDateTime::from(deadline) {
        return Ok(Err(CertError::ExpiresSoon {
            origin: paths.ca_cert.display().to_string(),
            not_after: ca.not_after(),
        }));
    }
    Ok(Ok(ca))
}

/// Same shape as [`load_ca`]: the inner error says why the serving pair must be reissued.
fn serving_is_usable(
    paths: &DevCertPaths,
    ca: &CertificateAuthority,
    hosts: &[String],
    now: SystemTime,
    deadline: SystemTime,
) -> Result<Result<(), CertError>, CertError> {
    let (cert, key) = match read_pair(&paths.cert, &paths.key)? {
        Ok(pair) => pair,
        Err(missing) => return Ok(Err(missing)),
    };
    let origin = paths.cert.display().to_string();
    let certified = match load_certified_key(&cert, &key, &origin, &paths.key.display().to_string()) {
        Ok(certified) => certified,
        Err(e) => return Ok(Err(e)),
    };
    // Valid now and still at the deadline: together that is "valid for long enough".
    let check = verify_serving(&certified.cert, ca.cert_der(), hosts, now, &origin)
        .and_then(|()| verify_serving(&certified.cert, ca.cert_der(), hosts, deadline, &origin));
    Ok(check)
}

/// Both files' bytes. Inner error: one does not exist (so it gets generated); outer error:
/// it exists but cannot be read, which the user has to fix.
#[allow(clippy::type_complexity)]
fn read_pair(cert: &Path, key: &Path) -> Result<Result<(Vec<u8>, Vec<u8>), CertError>, CertError> {
    let read = |path: &Path| match fs::read(path) {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(Err(CertError::Read {
            path: path.to_path_buf(),
            source,
        })),
        Err(source) => Err(CertError::Read {
            path: path.to_path_buf(),
            source,
        }),
    };
    let cert = read(cert)?;
    let key = read(key)?;
    Ok(cert.and_then(|cert| key.map(|key| (cert, key))))
}

/// Writes `bytes` to `path` atomically (temporary file + rename), so a crash never leaves a
/// half-written key; `secret` files are created with mode 0600.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertError> {
    let write_err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    // A stale temporary file from a crash may have other permissions; start fresh.
    let _ = fs::remove_file(&tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(write_err)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{cert_info, parse_cert_chain};

    fn hosts() -> Vec<String> {
        DEFAULT_DEV_HOSTS.iter().map(|h| h.to_string()).collect()
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn generate_writes_a_service_certificate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = crate::certs::rotation::RotationPolicy::service_hosts("driftguard", "platform");
        let day = Duration::from_secs(24 * 3600);
        let paths = generate_certs(dir.path(), &hosts, 3650 * day, 365 * day, false).unwrap();
        let ca = CertificateAuthority::from_pem(
            &String::from_utf8(read(&paths.ca_cert)).unwrap(),
            &String::from_utf8(read(&paths.ca_key)).unwrap(),
        )
        .unwrap();
        let chain = parse_cert_chain(&read(&paths.cert), "tls.crt").unwrap();
        verify_serving(&chain, ca.cert_der(), &hosts, SystemTime::now(), "tls.crt").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(fs::metadata(&paths.ca_key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let before = read(&paths.key);
        let err = generate_certs(dir.path(), &hosts, 3650 * day, 365 * day, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(read(&paths.key), before, "nothing replaced");
        generate_certs(dir.path(), &hosts, 3650 * day, 365 * day, true).unwrap();
        assert_ne!(read(&paths.key), before);
    }

    #[test]
    fn creates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let first = ensure_dev_certs(&certs, &hosts()).unwrap();
        assert_eq!(first.outcome, DevCertOutcome::Regenerated);
        let before: Vec<_> = [&first.ca_cert, &first.ca_key, &first.cert, &first.key]
            .iter()
            .map(|p| read(p))
            .collect();

        let second = ensure_dev_certs(&certs, &hosts()).unwrap();
        assert_eq!(second.outcome, DevCertOutcome::Reused);
        let after: Vec<_> = [&second.ca_cert, &second.ca_key, &second.cert, &second.key]
            .iter()
            .map(|p| read(p))
            .collect();
        assert_eq!(before, after);

        // The files verify together for every host.
        let ca = parse_cert_chain(&read(&second.ca_cert), "ca").unwrap();
        let certified = load_certified_key(&read(&second.cert), &read(&second.key), "cert", "key").unwrap();
        verify_serving(&certified.cert, &ca[0], &hosts(), SystemTime::now(), "cert").unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        for key in [&paths.ca_key, &paths.key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let mode = fs::metadata(&paths.cert).unwrap().permissions().mode() & 0o077;
        assert_eq!(mode & 0o022, 0, "certificate must not be group/world writable");
    }

    #[test]
    fn broken_serving_cert_is_reissued_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        let ca_before = read(&first.ca_cert);
        fs::write(&first.cert, b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let second = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        assert_eq!(second.outcome, DevCertOutcome::ReissuedServing);
        assert_eq!(read(&second.ca_cert), ca_before);
        let ca = parse_cert_chain(&ca_before, "ca").unwrap();
        let certified = load_certified_key(&read(&second.cert), &read(&second.key), "cert", "key").unwrap();
        verify_serving(&certified.cert, &ca[0], &hosts(), SystemTime::now(), "cert").unwrap();
    }

    #[test]
    fn serving_cert_expiring_within_30_days_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        let ca = CertificateAuthority::from_pem(
            &String::from_utf8(read(&first.ca_cert)).unwrap(),
            &String::from_utf8(read(&first.ca_key)).unwrap(),
        )
        .unwrap();
        let short = ca.issue_serving(&hosts(), Duration::from_secs(10 * 24 * 3600)).unwrap();
        fs::write(&first.cert, &short.cert_pem).unwrap();
        fs::write(&first.key, &short.key_pem).unwrap();

        let second = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        assert_eq!(second.outcome, DevCertOutcome::ReissuedServing);
        let chain = parse_cert_chain(&read(&second.cert), "cert").unwrap();
        let remaining = cert_info(&chain[0]).unwrap().not_after - OffsetDateTime::now_utc();
        assert!(remaining > time::Duration::days(300), "{remaining}");
    }

    #[test]
    fn a_new_host_gets_a_new_serving_cert() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_certs(dir.path(), &hosts()).unwrap();
        let mut more = hosts();
        more.push("driftguard.example.test".into());
        let paths = ensure_dev_certs(dir.path(), &more).unwrap();
        assert_eq!(paths.outcome, DevCertOutcome::ReissuedServing);
    }

    #[test]
    fn expiring_ca_regenerates_everything() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate_with_validity("old", Duration::from_secs(5 * 24 * 3600)).unwrap();
        let issued = ca.issue_serving(&hosts(), Duration::from_secs(3600)).unwrap();
        fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        fs::write(dir.path().join("ca.key"), ca.key_pem()).unwrap();
        fs::write(dir.path().join("tls.crt"), &issued.cert_pem).unwrap();
        fs::write(dir.path().join("tls.key"), &issued.key_pem).unwrap();

        let paths = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        assert_eq!(paths.outcome, DevCertOutcome::Regenerated);
        assert_ne!(read(&paths.ca_cert), ca.cert_pem().as_bytes());
    }

    #[test]
    fn mismatched_ca_key_regenerates_everything() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        let other = CertificateAuthority::generate("other").unwrap();
        fs::write(&first.ca_key, other.key_pem()).unwrap();
        let second = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        assert_eq!(second.outcome, DevCertOutcome::Regenerated);
    }

    #[cfg(unix)]
    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ensure_dev_certs(dir.path(), &hosts()).unwrap();
        // A directory where a file should be cannot be read as one, even by root.
        fs::remove_file(&paths.ca_key).unwrap();
        fs::create_dir(&paths.ca_key).unwrap();
        let err = ensure_dev_certs(dir.path(), &hosts()).unwrap_err();
        assert!(matches!(err, CertError::Read { ref path, .. } if path == &paths.ca_key));
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn no_hosts_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(ensure_dev_certs(dir.path(), &[]), Err(CertError::NoHosts)));
    }
}
