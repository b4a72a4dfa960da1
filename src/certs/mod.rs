//! Certificates: a small CA, serving certificates for the webhook, PEM loading and checks, and
//! the self-signed files `driftguard serve` creates for local use.
//!
//! Everything here but [`managed`] is synchronous and cheap enough to run at start or from a
//! reload task; the TLS server (`crate::server`) loads its serving pair through
//! [`load_certified_key`]. [`rotation`] plans the self-managed Secret purely; [`managed`] keeps
//! it in the cluster and injects its CA bundle into the webhook configurations.

mod authority;
mod dev;
pub mod managed;
mod pem;
pub mod rotation;

use std::path::PathBuf;
use std::time::Duration;

pub use authority::{CertificateAuthority, DEFAULT_CA_VALIDITY, DEFAULT_SERVING_VALIDITY, IssuedCert};
pub use dev::{DEFAULT_DEV_HOSTS, DEV_MIN_REMAINING, DevCertOutcome, DevCertPaths, ensure_dev_certs, generate_certs};
pub use pem::{CertInfo, cert_info, load_certified_key, parse_cert_chain, parse_private_key, verify_serving};

/// Everything that can go wrong creating, reading or checking certificates. Messages name the
/// file (or input) involved and say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}; check that the file exists and is readable by driftguard")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A certificate or key file (or its directory) could not be written.
    #[error(
        "cannot write {path}: {source}; check that the directory is writable, or remove it so driftguard can recreate it"
    )]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input is not well-formed PEM.
    #[error("{origin} is not valid PEM: {source}")]
    Pem {
        /// The file or input described.
        origin: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// The input holds no certificate.
    #[error("{origin} contains no certificate; expected a PEM block starting with '-----BEGIN CERTIFICATE-----'")]
    NoCertificate {
        /// The file or input described.
        origin: String,
    },
    /// The input holds no private key.
    #[error(
        "{origin} contains no private key; expected a PEM block such as '-----BEGIN PRIVATE KEY-----' (PKCS#8, SEC1 or PKCS#1)"
    )]
    NoPrivateKey {
        /// The file or input described.
        origin: String,
    },
    /// The private key is of a type the TLS stack cannot sign with.
    #[error("{origin}: unsupported private key ({reason}); use an ECDSA P-256/P-384, Ed25519 or RSA key")]
    UnsupportedKey {
        /// The file or input described.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A certificate does not parse as X.509.
    #[error("{origin} is not a valid X.509 certificate: {reason}")]
    Malformed {
        /// The file or input described.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The certificate's public key is not the private key's.
    #[error(
        "certificate {cert} and private key {key} do not belong together; replace both with files from the same issuance"
    )]
    KeyMismatch {
        /// The certificate file or input.
        cert: String,
        /// The key file or input.
        key: String,
    },
    /// A certificate given as a CA cannot sign certificates.
    #[error(
        "{origin} is not a CA certificate (basicConstraints CA:TRUE is missing); pass the issuing CA, not a serving certificate"
    )]
    NotCa {
        /// The file or input described.
        origin: String,
    },
    /// A serving certificate does not verify for a host under the CA at the time checked.
    #[error("{origin} is not valid for host {host:?} under the CA: {reason}")]
    NotTrusted {
        /// The file or input described.
        origin: String,
        /// The host checked.
        host: String,
        /// What the verifier said.
        reason: String,
    },
    /// A certificate expires sooner than required.
    #[error("{origin} expires at {not_after}, too soon to keep using it")]
    ExpiresSoon {
        /// The file or input described.
        origin: String,
        /// End of its validity.
        not_after: time::OffsetDateTime,
    },
    /// A host is neither a DNS name nor an IP address.
    #[error("invalid host {host:?} for a serving certificate; use a DNS name or an IP address")]
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// A serving certificate was requested for no host at all.
    #[error("a serving certificate needs at least one host (a DNS name or an IP address)")]
    NoHosts,
    /// A requested validity period cannot be represented.
    #[error("validity {validity:?} is out of range; use a positive period of at most 100 years")]
    Validity {
        /// The validity requested.
        validity: Duration,
    },
    /// Key generation or signing failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The rcgen error.
        source: rcgen::Error,
    },
}
