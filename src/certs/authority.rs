//! A small certificate authority that issues the webhook's serving certificates.

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;

use super::CertError;
use super::pem::{cert_info_from, parse_cert_chain, server_name};

/// CA lifetime when none is given: ten years, so the caBundle rarely changes.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Serving certificate lifetime when none is given: one year.
pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this far in the past so a peer whose clock runs behind accepts them.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
/// Longest validity accepted, far beyond any sane use, to keep date arithmetic in range.
const MAX_VALIDITY: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// A CA certificate and its key, able to issue serving certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
}

/// A freshly issued serving certificate.
#[derive(Clone)]
pub struct IssuedCert {
    /// PEM chain: the leaf, then the issuing CA.
    pub cert_pem: String,
    /// PEM (PKCS#8) private key of the leaf. Secret.
    pub key_pem: String,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_after", &self.not_after)
            .field("key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("not_after", &self.not_after)
            .field("key", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a new self-signed CA named `common_name`, valid for [`DEFAULT_CA_VALIDITY`].
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        Self::generate_with_validity(common_name, DEFAULT_CA_VALIDITY)
    }

    /// Generates a new self-signed CA named `common_name`, valid for `validity` from now.
    pub fn generate_with_validity(common_name: &str, validity: Duration) -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(|source| CertError::Generate { what: "CA key", source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        // Path length 0: this CA signs serving certificates only, never other CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity_window(validity)?;
        let cert = params.self_signed(&key).map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;
        let not_after = params.not_after;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// Loads a CA from its PEM certificate and PEM private key, checking that the certificate is
    /// a CA and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        Self::from_pem_with_origin(cert_pem, key_pem, "CA certificate", "CA private key")
    }

    /// [`Self::from_pem`] with the files named in errors.
    pub(super) fn from_pem_with_origin(
        cert_pem: &str,
        key_pem: &str,
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<Self, CertError> {
        let chain = parse_cert_chain(cert_pem.as_bytes(), cert_origin)?;
        let cert_der = chain.into_iter().next().ok_or_else(|| CertError::NoCertificate {
            origin: cert_origin.to_owned(),
        })?;
        let info = cert_info_from(&cert_der, cert_origin)?;
        if !info.is_ca {
            return Err(CertError::NotCa {
                origin: cert_origin.to_owned(),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::UnsupportedKey {
            origin: key_origin.to_owned(),
            reason: e.to_string(),
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CertError::Malformed {
            origin: cert_origin.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::KeyMismatch {
                cert: cert_origin.to_owned(),
                key: key_origin.to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CertError::Malformed {
            origin: cert_origin.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            issuer,
            cert_pem: pem_of(&cert_der),
            cert_der,
            not_after: info.not_after,
        })
    }

    /// The CA certificate in PEM (what goes into a webhook's `caBundle`, base64-encoded).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key in PEM (PKCS#8). Secret: store it with restrictive permissions.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a serving certificate for `hosts` (DNS names and IP addresses, all of which go
    /// into the subjectAltName), valid for `validity` from now, with a fresh key.
    pub fn issue_serving(&self, hosts: &[String], validity: Duration) -> Result<IssuedCert, CertError> {
        let first = hosts.first().ok_or(CertError::NoHosts)?;
        let sans = hosts.iter().map(|host| san_of(host)).collect::<Result<Vec<_>, _>>()?;
        self.issue(
            first.trim(),
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
            ["serving key", "serving certificate"],
        )
    }

    /// Issues a client certificate for `common_name` (the identity a caller such as
    /// kube-apiserver presents to a webhook that authenticates its callers), valid for
    /// `validity` from now, with a fresh key.
    pub fn issue_client(&self, common_name: &str, validity: Duration) -> Result<IssuedCert, CertError> {
        self.issue(
            common_name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
            ["client key", "client certificate"],
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Duration,
        [key_what, cert_what]: [&'static str; 2],
    ) -> Result<IssuedCert, CertError> {
        let key = KeyPair::generate().map_err(|source| CertError::Generate { what: key_what, source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity_window(validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertError::Generate {
                what: cert_what,
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        })
    }
}

/// `[now - skew, now + validity]`, rejecting periods that are empty or absurdly long.
fn validity_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    let out_of_range = || CertError::Validity { validity };
    if validity.is_zero() || validity > MAX_VALIDITY {
        return Err(out_of_range());
    }
    let now = OffsetDateTime::now_utc();
    let span = time::Duration::try_from(validity).map_err(|_| out_of_range())?;
    let not_after = now.checked_add(span).ok_or_else(out_of_range)?;
    let not_before = now.checked_sub(CLOCK_SKEW).ok_or_else(out_of_range)?;
    Ok((not_before, not_after))
}

/// The subjectAltName entry for one host: an IP address or a DNS name.
fn san_of(host: &str) -> Result<SanType, CertError> {
    let invalid = || CertError::InvalidHost { host: host.to_owned() };
    match server_name(host)? {
        ServerName::IpAddress(ip) => Ok(SanType::IpAddress(std::net::IpAddr::from(ip))),
        ServerName::DnsName(dns) => dns.as_ref().try_into().map(SanType::DnsName).map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

pub(super) fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::certs::{cert_info, load_certified_key, parse_cert_chain, verify_serving};

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn issues_a_serving_cert_for_dns_names_and_ips() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let names = hosts(&["driftguard.driftguard.svc", "127.0.0.1", "::1"]);
        let issued = ca.issue_serving(&names, Duration::from_secs(3600)).unwrap();

        let certified = load_certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "c", "k").unwrap();
        assert_eq!(certified.cert.len(), 2, "leaf then CA");
        verify_serving(&certified.cert, ca.cert_der(), &names, SystemTime::now(), "c").unwrap();

        let leaf = cert_info(&certified.cert[0]).unwrap();
        assert!(!leaf.is_ca);
        assert_eq!(leaf.not_after.unix_timestamp(), issued.not_after.unix_timestamp());
        let remaining = leaf.not_after - OffsetDateTime::now_utc();
        assert!(remaining <= time::Duration::hours(1) && remaining > time::Duration::minutes(59));
        assert!(cert_info(ca.cert_der()).unwrap().is_ca);
    }

    #[test]
    fn serving_cert_is_not_valid_for_other_hosts_or_other_cas() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let issued = ca
            .issue_serving(&hosts(&["a.example.test"]), Duration::from_secs(3600))
            .unwrap();
        let chain = parse_cert_chain(issued.cert_pem.as_bytes(), "c").unwrap();
        let err = verify_serving(
            &chain,
            ca.cert_der(),
            &hosts(&["b.example.test"]),
            SystemTime::now(),
            "c",
        )
        .unwrap_err();
        assert!(matches!(err, CertError::NotTrusted { ref host, .. } if host == "b.example.test"));

        let other = CertificateAuthority::generate("other CA").unwrap();
        assert!(
            verify_serving(
                &chain[..1],
                other.cert_der(),
                &hosts(&["a.example.test"]),
                SystemTime::now(),
                "c"
            )
            .is_err()
        );
    }

    #[test]
    fn from_pem_round_trips_and_keeps_issuing_under_the_same_ca() {
        let ca = CertificateAuthority::generate("round trip").unwrap();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        assert_eq!(loaded.not_after().unix_timestamp(), ca.not_after().unix_timestamp());
        let names = hosts(&["localhost"]);
        let issued = loaded.issue_serving(&names, Duration::from_secs(600)).unwrap();
        let chain = parse_cert_chain(issued.cert_pem.as_bytes(), "c").unwrap();
        verify_serving(&chain, ca.cert_der(), &names, SystemTime::now(), "c").unwrap();
    }

    #[test]
    fn from_pem_rejects_a_leaf_and_a_foreign_key() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let leaf = ca
            .issue_serving(&hosts(&["localhost"]), Duration::from_secs(600))
            .unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(CertError::NotCa { .. })
        ));
        let other = CertificateAuthority::generate("other").unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(CertError::KeyMismatch { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem("garbage", &ca.key_pem()),
            Err(CertError::NoCertificate { .. })
        ));
    }

    #[test]
    fn rejects_bad_hosts_and_validities() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let hour = Duration::from_secs(3600);
        assert!(matches!(ca.issue_serving(&[], hour), Err(CertError::NoHosts)));
        assert!(matches!(
            ca.issue_serving(&hosts(&["not a host"]), hour),
            Err(CertError::InvalidHost { .. })
        ));
        assert!(matches!(
            ca.issue_serving(&hosts(&["localhost"]), Duration::ZERO),
            Err(CertError::Validity { .. })
        ));
        assert!(matches!(
            ca.issue_serving(&hosts(&["localhost"]), Duration::MAX),
            Err(CertError::Validity { .. })
        ));
    }

    #[test]
    fn debug_output_hides_keys() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let issued = ca
            .issue_serving(&hosts(&["localhost"]), Duration::from_secs(600))
            .unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn key_mismatch_between_serving_cert_and_key_is_reported_with_both_names() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let names = hosts(&["localhost"]);
        let a = ca.issue_serving(&names, Duration::from_secs(600)).unwrap();
        let b = ca.issue_serving(&names, Duration::from_secs(600)).unwrap();
        let err =
            load_certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), "/x/tls.crt", "/x/tls.key").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/x/tls.crt") && msg.contains("/x/tls.key"), "{msg}");
    }
}
