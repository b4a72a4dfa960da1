//! PEM parsing and certificate checks shared by the CA, the dev files and the TLS server.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::CertError;

/// What driftguard needs to know about a certificate: when it is valid, and whether it is a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Serial number, colon-separated hex (as `openssl x509 -serial` shows it, but lower case).
    pub serial: String,
    /// True when basicConstraints says `CA:TRUE`.
    pub is_ca: bool,
}

/// Parses every `CERTIFICATE` block of `pem` (leaf first), checking each is well-formed X.509.
/// `origin` names the file or input in errors.
pub fn parse_cert_chain(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut reader = pem;
    let chain = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            origin: origin.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    // A half-written or corrupted file can still be valid base64; insist on real X.509.
    for der in &chain {
        cert_info_from(der, origin)?;
    }
    Ok(chain)
}

/// Parses the first private key (PKCS#8, SEC1 or PKCS#1) of `pem`. `origin` names the file or
/// input in errors.
pub fn parse_private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut reader = pem;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|source| CertError::Pem {
            origin: origin.to_owned(),
            source,
        })?
        .ok_or_else(|| CertError::NoPrivateKey {
            origin: origin.to_owned(),
        })
}

/// Loads a serving certificate chain and its private key into what rustls serves, checking
/// that the key belongs to the leaf certificate. The origins name the files in errors.
pub fn load_certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_origin: &str,
    key_origin: &str,
) -> Result<CertifiedKey, CertError> {
    let chain = parse_cert_chain(cert_pem, cert_origin)?;
    let key = parse_private_key(key_pem, key_origin)?;
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::UnsupportedKey {
            origin: key_origin.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Some key types cannot report their public half; rustls itself accepts those.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::KeyMismatch {
            cert: cert_origin.to_owned(),
            key: key_origin.to_owned(),
        }),
        Err(e) => Err(CertError::Malformed {
            origin: cert_origin.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Reads validity, serial and CA flag from a DER certificate.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    cert_info_from(der, "certificate")
}

pub(super) fn cert_info_from(der: &[u8], origin: &str) -> Result<CertInfo, CertError> {
    let malformed = |reason: String| CertError::Malformed {
        origin: origin.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| malformed(e.to_string()))?;
    let validity = cert.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| malformed(e.to_string()))
    };
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| malformed(e.to_string()))?
        .is_some_and(|bc| bc.value.ca);
    Ok(CertInfo {
        not_before: at(&validity.not_before)?,
        not_after: at(&validity.not_after)?,
        serial: cert.raw_serial_as_string(),
        is_ca,
    })
}

/// Checks that `chain` (leaf first) verifies as a TLS server certificate for every one of
/// `hosts` under the trust anchor `ca`, at time `at` (pass a future time to ask "still valid
/// then?"). `origin` names the chain in errors.
pub fn verify_serving(
    chain: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
    hosts: &[String],
    at: SystemTime,
    origin: &str,
) -> Result<(), CertError> {
    let not_trusted = |host: &str, reason: String| CertError::NotTrusted {
        origin: origin.to_owned(),
        host: host.to_owned(),
        reason,
    };
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| CertError::NoCertificate {
        origin: origin.to_owned(),
    })?;
    let bad_ca = |reason: String| CertError::Malformed {
        origin: "CA certificate".to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| bad_ca(e.to_string()))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
        .build()
        .map_err(|e| bad_ca(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    if hosts.is_empty() {
        return Err(CertError::NoHosts);
    }
    for host in hosts {
        let name = server_name(host)?;
        verifier
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .map_err(|e| not_trusted(host, e.to_string()))?;
    }
    Ok(())
}

/// Parses a host as a TLS server name (DNS name or IP address).
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, CertError> {
    ServerName::try_from(host.trim().to_owned()).map_err(|_| CertError::InvalidHost { host: host.to_owned() })
}
