//! Self-managed certificates (`certs.mode: self`): what the leader keeps in the certificate
//! Secret and when it renews — pure functions of (Secret data, the time, the policy, a
//! requested renewal). The I/O around them is in `managed`.
//!
//! The Secret holds `ca.crt` (the CA bundle the webhook configurations trust: the current CA
//! first, then older CAs until they expire), `ca.key` (the current CA's key), `tls.crt` (the
//! serving chain: leaf, then its CA) and `tls.key`.
//!
//! Renewing the serving certificate never changes what clients trust. Renewing the CA happens
//! in two steps so no client ever sees a certificate it does not trust yet: first the new CA
//! joins the bundle (and is injected into the webhook configurations) while the old serving
//! certificate stays; then, once the bundle carrying it is injected, a serving certificate
//! from the new CA replaces the old one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::CertError;
use super::authority::{CertificateAuthority, IssuedCert};
use super::pem::{cert_info, load_certified_key, parse_cert_chain, verify_serving};

/// Secret key of the trusted CA bundle (current CA first).
pub const CA_BUNDLE_KEY: &str = "ca.crt";
/// Secret key of the current CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving chain.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving private key.
pub const TLS_KEY_KEY: &str = "tls.key";
/// Annotation on the Secret that asks the leader for a renewal now: `serving` or `ca`. The
/// leader removes it when the renewal is written.
pub const RENEW_ANNOTATION: &str = "driftguard.io/renew";
/// Annotation on the Secret recording when the current CA joined the bundle (RFC 3339); the
/// serving certificate moves to the new CA only `caOverlap` later.
pub const CA_ROTATED_AT_ANNOTATION: &str = "driftguard.io/ca-rotated-at";

/// How certificates are issued and when they are renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Names the serving certificate must be valid for (the Service's DNS names).
    pub hosts: Vec<String>,
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate.
    pub serving_validity: Duration,
    /// Renew a certificate when it expires within this long.
    pub renew_before: Duration,
    /// After a new CA joins the bundle, how long before a certificate from it is served: time
    /// for every API server to see the injected bundle.
    pub ca_overlap: Duration,
}

impl RotationPolicy {
    /// The DNS names of Service `service` in `namespace`, as kube-apiserver dials it
    /// (`<service>.<namespace>.svc`) and the shorter and longer forms.
    pub fn service_hosts(service: &str, namespace: &str) -> Vec<String> {
        vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ]
    }
}

/// A renewal someone asked for with [`RENEW_ANNOTATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A new serving certificate from the current CA.
    Serving,
    /// A new CA (then, in a later step, a serving certificate from it).
    Ca,
}

impl Requested {
    /// Reads the annotation's value; anything else is reported and ignored.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "serving" => Some(Requested::Serving),
            "ca" => Some(Requested::Ca),
            _ => None,
        }
    }
}

/// What the Secret needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the CA and the serving certificate are good for longer than `renewBefore`.
    Keep,
    /// A new CA and serving certificate: the Secret is missing or its CA is unusable.
    Create {
        /// Why.
        reason: String,
    },
    /// A new CA joins the bundle; the serving certificate stays until the next step.
    RotateCa {
        /// Why.
        reason: String,
    },
    /// A new serving certificate from the current CA.
    RenewServing {
        /// Why.
        reason: String,
    },
    /// Expired CAs leave the bundle.
    PruneBundle,
    /// A new CA is in its overlap window: look again at `until`.
    Wait {
        /// When the overlap ends.
        until: SystemTime,
    },
}

/// What the leader knows about the Secret.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// Its data (`None`: there is no Secret).
    pub data: Option<&'a BTreeMap<String, Vec<u8>>>,
    /// A renewal asked for with [`RENEW_ANNOTATION`].
    pub requested: Option<Requested>,
    /// When the current CA joined the bundle ([`CA_ROTATED_AT_ANNOTATION`]).
    pub ca_rotated_at: Option<SystemTime>,
}

/// The Secret's data as a parsed whole.
struct Material {
    ca: CertificateAuthority,
    bundle: Vec<CertificateDer<'static>>,
}

fn text<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> Result<&'a str, String> {
    let bytes = data.get(key).ok_or_else(|| format!("the Secret has no {key}"))?;
    std::str::from_utf8(bytes).map_err(|_| format!("{key} is not UTF-8 PEM"))
}

fn material(data: &BTreeMap<String, Vec<u8>>) -> Result<Material, String> {
    let bundle_pem = text(data, CA_BUNDLE_KEY)?;
    let bundle = parse_cert_chain(bundle_pem.as_bytes(), CA_BUNDLE_KEY).map_err(|e| e.to_string())?;
    let ca = CertificateAuthority::from_pem(bundle_pem, text(data, CA_KEY_KEY)?).map_err(|e| e.to_string())?;
    Ok(Material { ca, bundle })
}

fn expires_within(not_after: OffsetDateTime, now: SystemTime, window: Duration) -> bool {
    OffsetDateTime::from(now + window) >= not_after
}

/// Why the serving pair must be renewed, if it must.
fn serving_problem(
    data: &BTreeMap<String, Vec<u8>>,
    ca: &CertificateAuthority,
    policy: &RotationPolicy,
    now: SystemTime,
) -> Option<String> {
    let (cert, key) = match (text(data, TLS_CERT_KEY), text(data, TLS_KEY_KEY)) {
        (Ok(cert), Ok(key)) => (cert, key),
        (Err(missing), _) | (_, Err(missing)) => return Some(missing),
    };
    let certified = match load_certified_key(cert.as_bytes(), key.as_bytes(), TLS_CERT_KEY, TLS_KEY_KEY) {
        Ok(certified) => certified,
        Err(error) => return Some(error.to_string()),
    };
    // Issued by the current CA, for every host, valid now: a CA rotation or a changed Service
    // name shows up here.
    if let Err(error) = verify_serving(&certified.cert, ca.cert_der(), &policy.hosts, now, TLS_CERT_KEY) {
        return Some(format!(
            "the serving certificate is not valid under the current CA for every Service name (after a CA rotation it is still from the previous CA): {error}"
        ));
    }
    match certified.cert.first().map(cert_info) {
        Some(Ok(info)) if expires_within(info.not_after, now, policy.renew_before) => Some(format!(
            "the serving certificate expires at {} (renewing {}h before)",
            info.not_after,
            policy.renew_before.as_secs() / 3600
        )),
        Some(Ok(_)) => None,
        Some(Err(error)) => Some(error.to_string()),
        None => Some("tls.crt holds no certificate".to_owned()),
    }
}

/// Decides the next step for the Secret `data` (`None`: there is no Secret). A CA rotation
/// comes before a serving renewal; a serving certificate not issued by the current CA is
/// renewed, which is the second half of a CA rotation — so call this again only after the
/// bundle of the previous step is injected into the webhook configurations.
pub fn plan(observed: Observed<'_>, policy: &RotationPolicy, now: SystemTime) -> Step {
    let Observed {
        data,
        requested,
        ca_rotated_at,
    } = observed;
    let Some(data) = data else {
        return Step::Create {
            reason: "there is no certificate Secret yet".to_owned(),
        };
    };
    let material = match material(data) {
        Ok(material) => material,
        Err(reason) => {
            return Step::Create {
                reason: format!("the CA in the Secret is unusable: {reason}"),
            };
        }
    };
    if requested == Some(Requested::Ca) {
        return Step::RotateCa {
            reason: format!("a CA renewal was requested with {RENEW_ANNOTATION}"),
        };
    }
    if expires_within(material.ca.not_after(), now, policy.renew_before) {
        return Step::RotateCa {
            reason: format!("the CA expires at {}", material.ca.not_after()),
        };
    }
    // Within a new CA's overlap nothing is issued from it yet.
    if let Some(until) = ca_rotated_at
        .map(|at| at + policy.ca_overlap)
        .filter(|until| *until > now)
    {
        return Step::Wait { until };
    }
    if requested == Some(Requested::Serving) {
        return Step::RenewServing {
            reason: format!("a serving renewal was requested with {RENEW_ANNOTATION}"),
        };
    }
    if let Some(reason) = serving_problem(data, &material.ca, policy, now) {
        return Step::RenewServing { reason };
    }
    let expired = material
        .bundle
        .iter()
        .any(|cert| cert_info(cert).is_ok_and(|info| OffsetDateTime::from(now) >= info.not_after));
    if expired { Step::PruneBundle } else { Step::Keep }
}

/// The Secret data after `step` (`data` as it is now, if any). Secret material stays in the
/// returned map only; nothing here logs it.
pub fn execute(
    step: &Step,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    policy: &RotationPolicy,
    now: SystemTime,
) -> Result<BTreeMap<String, Vec<u8>>, CertError> {
    let mut out = data.cloned().unwrap_or_default();
    let current = data.and_then(|d| material(d).ok());
    match step {
        Step::Keep | Step::Wait { .. } => {}
        Step::Create { .. } => {
            let ca = new_ca(policy, now)?;
            let issued = ca.issue_serving(&policy.hosts, policy.serving_validity)?;
            out.insert(CA_BUNDLE_KEY.to_owned(), ca.cert_pem().as_bytes().to_vec());
            out.insert(CA_KEY_KEY.to_owned(), ca.key_pem().into_bytes());
            put_serving(&mut out, issued);
        }
        Step::RotateCa { .. } => {
            let ca = new_ca(policy, now)?;
            let mut bundle = ca.cert_pem().to_owned();
            if let Some(current) = &current {
                bundle.push_str(&still_valid(&current.bundle, now));
            }
            out.insert(CA_BUNDLE_KEY.to_owned(), bundle.into_bytes());
            out.insert(CA_KEY_KEY.to_owned(), ca.key_pem().into_bytes());
        }
        Step::RenewServing { .. } => {
            let Some(current) = &current else {
                return execute(
                    &Step::Create {
                        reason: "no usable CA".to_owned(),
                    },
                    data,
                    policy,
                    now,
                );
            };
            put_serving(
                &mut out,
                current.ca.issue_serving(&policy.hosts, policy.serving_validity)?,
            );
            out.insert(CA_BUNDLE_KEY.to_owned(), still_valid(&current.bundle, now).into_bytes());
        }
        Step::PruneBundle => {
            if let Some(current) = &current {
                out.insert(CA_BUNDLE_KEY.to_owned(), still_valid(&current.bundle, now).into_bytes());
            }
        }
    }
    Ok(out)
}

fn new_ca(policy: &RotationPolicy, now: SystemTime) -> Result<CertificateAuthority, CertError> {
    // Distinct names tell a rotated CA from its predecessor in `openssl x509 -subject`.
    let issued = OffsetDateTime::from(now);
    let name = format!(
        "driftguard webhook CA {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        issued.year(),
        u8::from(issued.month()),
        issued.day(),
        issued.hour(),
        issued.minute(),
        issued.second()
    );
    CertificateAuthority::generate_with_validity(&name, policy.ca_validity)
}

fn put_serving(out: &mut BTreeMap<String, Vec<u8>>, issued: IssuedCert) {
    out.insert(TLS_CERT_KEY.to_owned(), issued.cert_pem.into_bytes());
    out.insert(TLS_KEY_KEY.to_owned(), issued.key_pem.into_bytes());
}

/// The certificates of `bundle` not yet expired at `now`, as PEM, in order.
fn still_valid(bundle: &[CertificateDer<'static>], now: SystemTime) -> String {
    bundle
        .iter()
        .filter(|cert| cert_info(cert).is_ok_and(|info| OffsetDateTime::from(now) < info.not_after))
        .map(|cert| super::authority::pem_of(cert))
        .collect()
}

/// The PEM bundle a Secret's `ca.crt` holds (what goes, base64-encoded, into `caBundle`).
pub fn ca_bundle(data: &BTreeMap<String, Vec<u8>>) -> Option<&[u8]> {
    data.get(CA_BUNDLE_KEY).map(Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn policy() -> RotationPolicy {
        RotationPolicy {
            hosts: RotationPolicy::service_hosts("driftguard", "driftguard"),
            ca_validity: 3650 * DAY,
            serving_validity: 365 * DAY,
            renew_before: 30 * DAY,
            ca_overlap: Duration::from_secs(120),
        }
    }

    fn seen(data: &BTreeMap<String, Vec<u8>>) -> Observed<'_> {
        Observed {
            data: Some(data),
            ..Observed::default()
        }
    }

    fn asked(data: &BTreeMap<String, Vec<u8>>, requested: Requested) -> Observed<'_> {
        Observed {
            data: Some(data),
            requested: Some(requested),
            ca_rotated_at: None,
        }
    }

    fn created(now: SystemTime) -> BTreeMap<String, Vec<u8>> {
        let step = plan(Observed::default(), &policy(), now);
        assert!(matches!(step, Step::Create { .. }), "{step:?}");
        execute(&step, None, &policy(), now).unwrap()
    }

    fn bundle_len(data: &BTreeMap<String, Vec<u8>>) -> usize {
        parse_cert_chain(ca_bundle(data).unwrap(), "ca").unwrap().len()
    }

    #[test]
    fn a_fresh_secret_is_kept_until_renew_before_its_serving_expiry() {
        let now = SystemTime::now();
        let data = created(now);
        assert_eq!(bundle_len(&data), 1);
        assert_eq!(plan(seen(&data), &policy(), now), Step::Keep);
        // 334 days on: still more than 30 days left of 365.
        assert_eq!(plan(seen(&data), &policy(), now + 334 * DAY), Step::Keep);
        let later = now + 336 * DAY;
        let step = plan(seen(&data), &policy(), later);
        assert!(
            matches!(&step, Step::RenewServing { reason } if reason.contains("expires")),
            "{step:?}"
        );
    }

    #[test]
    fn a_serving_renewal_keeps_the_ca_and_the_bundle() {
        let now = SystemTime::now();
        let data = created(now);
        let step = plan(asked(&data, Requested::Serving), &policy(), now);
        assert!(matches!(step, Step::RenewServing { .. }), "{step:?}");
        let renewed = execute(&step, Some(&data), &policy(), now).unwrap();
        assert_eq!(renewed[CA_BUNDLE_KEY], data[CA_BUNDLE_KEY]);
        assert_eq!(renewed[CA_KEY_KEY], data[CA_KEY_KEY]);
        assert_ne!(renewed[TLS_CERT_KEY], data[TLS_CERT_KEY]);
        assert_ne!(renewed[TLS_KEY_KEY], data[TLS_KEY_KEY]);
        assert_eq!(plan(seen(&renewed), &policy(), now), Step::Keep);
    }

    #[test]
    fn a_ca_rotation_overlaps_then_reissues_the_serving_certificate() {
        let now = SystemTime::now();
        let data = created(now);
        let step = plan(asked(&data, Requested::Ca), &policy(), now);
        assert!(matches!(step, Step::RotateCa { .. }), "{step:?}");
        let rotated = execute(&step, Some(&data), &policy(), now).unwrap();
        // Both CAs are trusted; the old serving certificate is still served.
        assert_eq!(bundle_len(&rotated), 2);
        assert_eq!(rotated[TLS_CERT_KEY], data[TLS_CERT_KEY]);
        let old_ca = parse_cert_chain(&data[CA_BUNDLE_KEY], "old").unwrap().remove(0);
        let bundle = parse_cert_chain(&rotated[CA_BUNDLE_KEY], "new").unwrap();
        assert_eq!(bundle[1], old_ca, "the old CA stays, after the new one");
        // Within the overlap, nothing more happens; after it, the serving certificate (not from
        // the current CA) is reissued.
        let rotated_at = Observed {
            ca_rotated_at: Some(now),
            ..seen(&rotated)
        };
        let until = now + policy().ca_overlap;
        assert_eq!(
            plan(rotated_at, &policy(), now + Duration::from_secs(1)),
            Step::Wait { until }
        );
        let step = plan(rotated_at, &policy(), until);
        assert!(matches!(step, Step::RenewServing { .. }), "{step:?}");
        let reissued = execute(&step, Some(&rotated), &policy(), now).unwrap();
        let chain = parse_cert_chain(&reissued[TLS_CERT_KEY], "tls").unwrap();
        verify_serving(&chain, &bundle[0], &policy().hosts, now, "tls").unwrap();
        assert_eq!(bundle_len(&reissued), 2, "the old CA stays until it expires");
        assert_eq!(plan(seen(&reissued), &policy(), now), Step::Keep);
    }

    #[test]
    fn an_expiring_ca_rotates_and_an_expired_one_leaves_the_bundle() {
        let now = SystemTime::now();
        let short = RotationPolicy {
            ca_validity: 60 * DAY,
            serving_validity: 20 * DAY,
            ..policy()
        };
        let step = plan(Observed::default(), &short, now);
        let data = execute(&step, None, &short, now).unwrap();
        let step = plan(seen(&data), &short, now + 31 * DAY);
        assert!(
            matches!(&step, Step::RotateCa { reason } if reason.contains("CA expires")),
            "{step:?}"
        );
        let rotated = execute(&step, Some(&data), &policy(), now + 31 * DAY).unwrap();
        assert_eq!(bundle_len(&rotated), 2);
        let reissued = execute(
            &plan(seen(&rotated), &policy(), now + 31 * DAY),
            Some(&rotated),
            &policy(),
            now + 31 * DAY,
        )
        .unwrap();
        // Past the old CA's end, it is pruned.
        let after = now + 61 * DAY;
        assert_eq!(plan(seen(&reissued), &policy(), after), Step::PruneBundle);
        let pruned = execute(&Step::PruneBundle, Some(&reissued), &policy(), after).unwrap();
        assert_eq!(bundle_len(&pruned), 1);
        assert_eq!(plan(seen(&pruned), &policy(), after), Step::Keep);
    }

    #[test]
    fn broken_or_foreign_material_is_replaced_or_reissued() {
        let now = SystemTime::now();
        let data = created(now);
        let mut broken = data.clone();
        broken.insert(CA_KEY_KEY.to_owned(), b"not a key".to_vec());
        assert!(matches!(plan(seen(&broken), &policy(), now), Step::Create { .. }));
        let mut no_serving = data.clone();
        no_serving.remove(TLS_KEY_KEY);
        let step = plan(seen(&no_serving), &policy(), now);
        assert!(
            matches!(&step, Step::RenewServing { reason } if reason.contains("tls.key")),
            "{step:?}"
        );
        // A Service renamed: the certificate no longer covers the hosts.
        let renamed = RotationPolicy {
            hosts: RotationPolicy::service_hosts("guard", "platform"),
            ..policy()
        };
        let step = plan(seen(&data), &renamed, now);
        assert!(matches!(step, Step::RenewServing { .. }), "{step:?}");
        assert_eq!(Requested::parse(" ca "), Some(Requested::Ca));
        assert_eq!(Requested::parse("everything"), None);
    }
}
