//! Signature verification of a [`Revision`]: the commit (`HEAD`), the annotated tag it came
//! from (`Tag`), or both (`TagAndHEAD`), against trusted keys from a Secret.
//!
//! Two signature formats are understood, as Git writes them:
//!
//! - **OpenPGP**: a detached, ASCII-armored signature over the commit or tag object without
//!   its signature. The issuing key, or a signing-capable subkey bound to it, must be one of
//!   the trusted OpenPGP keys; revoked keys and subkeys are not used.
//! - **SSH** (`gpg.format=ssh`): an `SSHSIG` over the same data in namespace `git`, whose key
//!   must be one of the trusted SSH public keys.
//!
//! Commit signatures live in the `gpgsig` header (libgit2 extracts signature and signed data);
//! a tag's signature is appended to its message, and the signed data is everything before it.
//! Anything not signed by a trusted key is refused: the caller keeps the last verified
//! revision. Messages name objects by id and keys by fingerprint; they never echo key or
//! signature material.

use std::collections::BTreeMap;
use std::fmt;

use git2::{ErrorCode, ObjectType, Oid, Repository};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{PublicKey as PgpPrimaryKey, PublicSubkey as PgpSubkey, Signature as PgpSignature, SignatureType};
use pgp::types::{Fingerprint as PgpFingerprint, KeyDetails};
use ssh_key::{HashAlg, PublicKey as SshPublicKey, SshSig};

pub use crate::api::VerifyMode;

use super::{LocalRepository, Revision};

/// The SSHSIG namespace Git signs in.
const SSH_NAMESPACE: &str = "git";

const PGP_KEY_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PGP_KEY_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
const PGP_SIGNATURE_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";
const PGP_MESSAGE_BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
const SSH_SIGNATURE_BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const X509_SIGNATURE_BEGIN: &str = "-----BEGIN SIGNED MESSAGE-----";

/// Everything that makes a revision fail verification. Messages say what was checked, which
/// key (by fingerprint or id) was involved, and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The commit or tag carries no signature (a lightweight tag never does).
    #[error(
        "{what} is not signed; sign it with a key from the verify Secret (git commit -S, \
         git tag -s), or change the GitSource verify.mode"
    )]
    Unsigned {
        /// The object, e.g. `commit 0123456789ab` or `lightweight tag "v1"`.
        what: String,
    },
    /// Signed, but by a key that is not trusted.
    #[error(
        "{what} is signed by key {key_id}, which is not among the trusted keys; add its public \
         key to the verify Secret if it is trusted"
    )]
    UnknownKey {
        /// The object.
        what: String,
        /// The issuer's fingerprint or key id.
        key_id: String,
    },
    /// The signature is unreadable or does not match the object (changed after signing).
    #[error("{what} has a signature that does not verify: {reason}")]
    BadSignature {
        /// The object.
        what: String,
        /// Why it does not verify.
        reason: String,
    },
    /// The mode needs a tag but the revision did not come from one.
    #[error(
        "verify.mode {mode} checks the signature of a tag, but {reference} did not come from a \
         tag; track ref.tag or ref.semver, or use verify.mode HEAD"
    )]
    NotATag {
        /// The mode asked for.
        mode: VerifyMode,
        /// The revision.
        reference: String,
    },
    /// The tag no longer points at the revision being verified.
    #[error(
        "tag {tag:?} points at commit {tag_commit}, not at the revision {revision} being \
         verified; the tag moved since it was resolved: resolve the reference again"
    )]
    TagMoved {
        /// The tag.
        tag: String,
        /// Where it points now.
        tag_commit: String,
        /// The revision being verified.
        revision: String,
    },
    /// A value of the Secret is not a public key.
    #[error(
        "key {name:?} of the verify Secret is not usable: {reason}; each value must be \
         ASCII-armored OpenPGP public key(s) or SSH public key lines"
    )]
    InvalidKey {
        /// The Secret's data key.
        name: String,
        /// What is wrong with it (never the value itself).
        reason: String,
    },
    /// Reading the repository failed.
    #[error("{action}: {source}")]
    Git {
        /// What was being done.
        action: String,
        /// What libgit2 reported.
        source: git2::Error,
    },
}

impl VerifyError {
    /// A short stable label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Unsigned { .. } => "unsigned",
            VerifyError::UnknownKey { .. } => "unknown_key",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::NotATag { .. } => "not_a_tag",
            VerifyError::TagMoved { .. } => "tag_moved",
            VerifyError::InvalidKey { .. } => "invalid_key",
            VerifyError::Git { .. } => "git",
        }
    }
}

/// What was verified, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Each checked object and the key that signed it, e.g.
    /// `tag "v1" signed by OpenPGP key 010F…2E24; commit 2b74a54999e6 signed by SSH key
    /// SHA256:… (alice@example.com)`.
    pub signer: String,
}

/// The public keys a signature must come from.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    pgp: Vec<PgpSigningKey>,
    ssh: Vec<SshTrustedKey>,
}

/// One OpenPGP key (primary or subkey) that may sign.
#[derive(Clone)]
struct PgpSigningKey {
    /// The certificate's primary fingerprint (what users know the key by).
    primary: PgpFingerprint,
    key: PgpKeyPart,
}

#[derive(Clone)]
enum PgpKeyPart {
    Primary(PgpPrimaryKey),
    Subkey(PgpSubkey),
}

impl PgpSigningKey {
    fn fingerprint(&self) -> PgpFingerprint {
        match &self.key {
            PgpKeyPart::Primary(k) => k.fingerprint(),
            PgpKeyPart::Subkey(k) => k.fingerprint(),
        }
    }

    /// Whether `signature` names this key as its issuer (or names no issuer at all).
    fn is_issuer_of(&self, signature: &PgpSignature) -> bool {
        let ids = signature.issuer_key_id();
        let fingerprints = signature.issuer_fingerprint();
        if ids.is_empty() && fingerprints.is_empty() {
            return true;
        }
        let (id, fingerprint) = match &self.key {
            PgpKeyPart::Primary(k) => (k.legacy_key_id(), k.fingerprint()),
            PgpKeyPart::Subkey(k) => (k.legacy_key_id(), k.fingerprint()),
        };
        ids.iter().any(|i| **i == id) || fingerprints.iter().any(|f| **f == fingerprint)
    }

    fn verify(&self, signature: &PgpSignature, data: &[u8]) -> pgp::errors::Result<()> {
        match &self.key {
            PgpKeyPart::Primary(k) => signature.verify(k, data),
            PgpKeyPart::Subkey(k) => signature.verify(k, data),
        }
    }

    fn describe(&self) -> String {
        let primary = format!("{:X}", self.primary);
        match &self.key {
            PgpKeyPart::Primary(_) => format!("OpenPGP key {primary}"),
            PgpKeyPart::Subkey(k) => format!("OpenPGP key {primary} (subkey {:X})", k.fingerprint()),
        }
    }
}

#[derive(Clone)]
struct SshTrustedKey {
    key: SshPublicKey,
    /// The principals of an `allowed_signers` line, for messages.
    principals: Option<String>,
}

impl SshTrustedKey {
    fn describe(&self) -> String {
        let fingerprint = self.key.fingerprint(HashAlg::Sha256);
        match &self.principals {
            Some(p) => format!("SSH key {fingerprint} ({p})"),
            None => format!("SSH key {fingerprint}"),
        }
    }
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pgp: Vec<String> = self.pgp.iter().map(|k| format!("{:X}", k.fingerprint())).collect();
        let ssh: Vec<String> = self
            .ssh
            .iter()
            .map(|k| k.key.fingerprint(HashAlg::Sha256).to_string())
            .collect();
        f.debug_struct("TrustedKeys")
            .field("pgp", &pgp)
            .field("ssh", &ssh)
            .finish()
    }
}

impl TrustedKeys {
    /// Reads every value of a Secret's `data` as ASCII-armored OpenPGP public key(s) and/or
    /// SSH public key lines (`authorized_keys` style `ssh-ed25519 AAAA… [comment]` or
    /// `allowed_signers` style `principals [options] ssh-ed25519 AAAA… [comment]`; blank lines
    /// and `#` comments are skipped). A value that is neither is an error naming its key.
    ///
    /// Revoked OpenPGP keys and subkeys, subkeys without a valid signing binding, and SSH keys
    /// restricted to other `namespaces=` are left out rather than refused: they are valid
    /// keys, just not for signing Git objects.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, VerifyError> {
        let mut keys = TrustedKeys::default();
        for (name, value) in data {
            keys.add_value(name, value)?;
        }
        Ok(keys)
    }

    /// Whether there is no key at all (every signature would be refused).
    pub fn is_empty(&self) -> bool {
        self.pgp.is_empty() && self.ssh.is_empty()
    }

    /// How many OpenPGP signing keys (primary keys and signing subkeys) are trusted.
    pub fn pgp_len(&self) -> usize {
        self.pgp.len()
    }

    /// How many SSH keys are trusted.
    pub fn ssh_len(&self) -> usize {
        self.ssh.len()
    }

    fn add_value(&mut self, name: &str, value: &[u8]) -> Result<(), VerifyError> {
        let invalid = |reason: String| VerifyError::InvalidKey {
            name: name.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(value).map_err(|_| {
            invalid("it is not text (binary OpenPGP keys are not supported: export with --armor)".to_owned())
        })?;
        if text.contains("PRIVATE KEY-----") {
            return Err(invalid(
                "it holds a private key; put only public keys in the Secret".to_owned(),
            ));
        }
        let mut found = 0usize;
        let mut rest = text;
        let mut outside = String::new();
        while let Some(start) = rest.find(PGP_KEY_BEGIN) {
            outside.push_str(&rest[..start]);
            let block = &rest[start..];
            let end = block
                .find(PGP_KEY_END)
                .map(|i| i + PGP_KEY_END.len())
                .ok_or_else(|| invalid(format!("an OpenPGP key block has no {PGP_KEY_END} line")))?;
            found += self.add_pgp_block(&block[..end]).map_err(invalid)?;
            rest = &block[end..];
        }
        outside.push_str(rest);
        for (number, line) in outside.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Line numbers are of the text outside OpenPGP blocks; with SSH lines only (the
            // usual case) they are the value's line numbers.
            let key = parse_ssh_line(line).map_err(|reason| invalid(format!("line {}: {reason}", number + 1)))?;
            found += 1;
            if let Some(key) = key {
                self.ssh.push(key);
            }
        }
        if found == 0 {
            return Err(invalid("it holds no key".to_owned()));
        }
        Ok(())
    }

    /// Adds the signing keys of every certificate in one armored block; returns how many
    /// certificates it held.
    fn add_pgp_block(&mut self, block: &str) -> Result<usize, String> {
        let (certificates, _headers) =
            SignedPublicKey::from_string_many(block).map_err(|e| format!("unreadable OpenPGP key block ({e})"))?;
        let mut count = 0;
        for certificate in certificates {
            let certificate = certificate.map_err(|e| format!("unreadable OpenPGP public key ({e})"))?;
            count += 1;
            self.add_pgp_certificate(certificate);
        }
        if count == 0 {
            return Err("the OpenPGP key block holds no public key".to_owned());
        }
        Ok(count)
    }

    fn add_pgp_certificate(&mut self, certificate: SignedPublicKey) {
        let primary = certificate.primary_key.clone();
        let fingerprint = primary.fingerprint();
        let revoked = certificate
            .details
            .revocation_signatures
            .iter()
            .any(|sig| sig.verify_key(&primary).is_ok());
        if revoked {
            tracing::warn!(key = %format!("{fingerprint:X}"), "ignoring a revoked OpenPGP key");
            return;
        }
        self.pgp.push(PgpSigningKey {
            primary: fingerprint.clone(),
            key: PgpKeyPart::Primary(primary.clone()),
        });
        for subkey in &certificate.public_subkeys {
            let valid = |sig: &&PgpSignature| sig.verify_subkey_binding(&primary, &subkey.key).is_ok();
            let revoked = subkey
                .signatures
                .iter()
                .filter(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation))
                .any(|sig| valid(&sig));
            let signs = subkey
                .signatures
                .iter()
                .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
                .filter(valid)
                .any(|sig| sig.key_flags().sign());
            if signs && !revoked {
                self.pgp.push(PgpSigningKey {
                    primary: fingerprint.clone(),
                    key: PgpKeyPart::Subkey(subkey.key.clone()),
                });
            } else if revoked {
                tracing::debug!(key = %format!("{:X}", subkey.key.fingerprint()), "ignoring a revoked OpenPGP subkey");
            }
        }
    }
}

/// Parses one non-empty, non-comment line: `[principals] [options] <type> <base64> [comment]`.
/// `Ok(None)`: a valid key restricted to namespaces other than `git`.
fn parse_ssh_line(line: &str) -> Result<Option<SshTrustedKey>, String> {
    if line.starts_with("-----BEGIN") {
        return Err("an armored block that is not an OpenPGP public key block".to_owned());
    }
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let Some(position) = tokens.iter().position(|t| is_ssh_key_type(t)) else {
        return Err(
            "neither an SSH public key (no key type such as ssh-ed25519) nor part of an \
             armored OpenPGP key block"
                .to_owned(),
        );
    };
    let key_type = tokens[position];
    if key_type.contains("-cert-v01@openssh.com") {
        return Err("SSH certificates are not supported; list the signing public keys".to_owned());
    }
    let mut principals = None;
    for (index, token) in tokens[..position].iter().enumerate() {
        let option = token.to_ascii_lowercase();
        if option == "cert-authority" {
            return Err("cert-authority (SSH certificates) is not supported; list the signing public keys".to_owned());
        }
        if option.starts_with("valid-after=") || option.starts_with("valid-before=") {
            return Err(format!(
                "option {} is not supported; remove it, or remove the key once it must no longer be trusted",
                option.split('=').next().unwrap_or_default()
            ));
        }
        if let Some(list) = option.strip_prefix("namespaces=") {
            let list = list.trim_matches('"');
            if !list.split(',').any(|n| n.trim() == SSH_NAMESPACE || n.trim() == "*") {
                return Ok(None);
            }
        } else if index == 0 && !token.contains('=') {
            principals = Some((*token).to_owned());
        }
    }
    let key = SshPublicKey::from_openssh(&tokens[position..].join(" "))
        .map_err(|e| format!("unreadable {key_type} public key ({e})"))?;
    Ok(Some(SshTrustedKey { key, principals }))
}

fn is_ssh_key_type(token: &str) -> bool {
    token.starts_with("ssh-")
        || token.starts_with("ecdsa-sha2-")
        || token.starts_with("sk-ssh-")
        || token.starts_with("sk-ecdsa-sha2-")
}

/// Verifies what `mode` asks for at `revision`: the commit's signature (`HEAD`), the
/// signature of the annotated tag `tag` (`Tag`; the tag must still point at the revision's
/// commit and be published under the name it was signed with), or both (`TagAndHEAD`).
///
/// `tag` is the tag name (`v1` or `refs/tags/v1`) when the revision came from a tag or semver
/// reference, `None` otherwise.
pub fn verify_revision(
    repository: &LocalRepository,
    revision: &Revision,
    tag: Option<&str>,
    mode: VerifyMode,
    keys: &TrustedKeys,
) -> Result<Verified, VerifyError> {
    let repo = repository.git();
    let commit = Oid::from_str(&revision.commit).map_err(|source| VerifyError::Git {
        action: format!("reading revision {revision}"),
        source,
    })?;
    let mut signers = Vec::with_capacity(2);
    if mode.checks_tag() {
        let Some(tag) = tag else {
            return Err(VerifyError::NotATag {
                mode,
                reference: revision.reference.clone(),
            });
        };
        signers.push(verify_tag(repo, commit, revision, tag, keys)?);
    }
    if mode.checks_commit() {
        signers.push(verify_commit(repo, commit, keys)?);
    }
    Ok(Verified {
        signer: signers.join("; "),
    })
}

fn verify_commit(repo: &Repository, commit: Oid, keys: &TrustedKeys) -> Result<String, VerifyError> {
    let what = format!("commit {}", short(commit));
    repo.find_commit(commit).map_err(|source| VerifyError::Git {
        action: format!("reading {what}"),
        source,
    })?;
    let (signature, signed) = match repo.extract_signature(&commit, None) {
        Ok(found) => found,
        Err(e) if e.code() == ErrorCode::NotFound => return Err(VerifyError::Unsigned { what }),
        Err(source) => {
            return Err(VerifyError::Git {
                action: format!("reading the signature of {what}"),
                source,
            });
        }
    };
    let by = verify_signature(&what, &signature, &signed, keys)?;
    Ok(format!("{what} signed by {by}"))
}

fn verify_tag(
    repo: &Repository,
    commit: Oid,
    revision: &Revision,
    tag: &str,
    keys: &TrustedKeys,
) -> Result<String, VerifyError> {
    let short_name = tag.strip_prefix("refs/tags/").unwrap_or(tag);
    let full_name = format!("refs/tags/{short_name}");
    let reference = repo
        .find_reference(&full_name)
        .and_then(|r| r.resolve())
        .map_err(|source| VerifyError::Git {
            action: format!("looking up tag {short_name:?}"),
            source,
        })?;
    let Some(target) = reference.target() else {
        return Err(VerifyError::Unsigned {
            what: format!("tag {short_name:?}"),
        });
    };
    let object = repo.find_object(target, None).map_err(|source| VerifyError::Git {
        action: format!("reading tag {short_name:?}"),
        source,
    })?;
    let tag_commit = object.peel(ObjectType::Commit).map_err(|source| VerifyError::Git {
        action: format!("peeling tag {short_name:?} to a commit"),
        source,
    })?;
    if tag_commit.id() != commit {
        return Err(VerifyError::TagMoved {
            tag: short_name.to_owned(),
            tag_commit: tag_commit.id().to_string(),
            revision: revision.reference.clone(),
        });
    }
    if object.kind() != Some(ObjectType::Tag) {
        return Err(VerifyError::Unsigned {
            what: format!("lightweight tag {short_name:?}"),
        });
    }
    let what = format!("tag {short_name:?}");
    let signed_name = object
        .as_tag()
        .map(|t| String::from_utf8_lossy(t.name_bytes()).into_owned())
        .unwrap_or_default();
    let odb = repo.odb().map_err(|source| VerifyError::Git {
        action: "opening the object database".to_owned(),
        source,
    })?;
    let raw = odb.read(target).map_err(|source| VerifyError::Git {
        action: format!("reading {what}"),
        source,
    })?;
    let data = raw.data();
    let Some(split) = signature_start(data) else {
        return Err(VerifyError::Unsigned { what });
    };
    let (signed, signature) = data.split_at(split);
    let by = verify_signature(&what, signature, signed, keys)?;
    // Checked after the signature so that a renamed tag by an untrusted signer reports the
    // signer first; a trusted tag republished under another name (a signed v1.0.0 served as
    // v2.0.0) must not pass.
    if signed_name != short_name {
        return Err(VerifyError::BadSignature {
            what,
            reason: format!(
                "the signed tag object is named {signed_name:?}; a signed tag must be published \
                 under the name it was signed with"
            ),
        });
    }
    Ok(format!("{what} signed by {by}"))
}

/// Where the signature appended to a tag message starts: the last line that opens a
/// signature block, as Git finds it.
fn signature_start(data: &[u8]) -> Option<usize> {
    let mut found = None;
    let mut offset = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if [
            PGP_SIGNATURE_BEGIN,
            PGP_MESSAGE_BEGIN,
            SSH_SIGNATURE_BEGIN,
            X509_SIGNATURE_BEGIN,
        ]
        .iter()
        .any(|begin| line.starts_with(begin.as_bytes()))
        {
            found = Some(offset);
        }
        offset += line.len();
    }
    found
}

/// Verifies an armored signature over `signed`; returns who signed it.
fn verify_signature(what: &str, signature: &[u8], signed: &[u8], keys: &TrustedKeys) -> Result<String, VerifyError> {
    let bad = |reason: String| VerifyError::BadSignature {
        what: what.to_owned(),
        reason,
    };
    let Ok(text) = std::str::from_utf8(signature) else {
        return Err(bad("the signature is not text".to_owned()));
    };
    let text = text.trim_start();
    if text.starts_with(SSH_SIGNATURE_BEGIN) {
        verify_ssh(what, text, signed, keys)
    } else if text.starts_with(PGP_SIGNATURE_BEGIN) || text.starts_with(PGP_MESSAGE_BEGIN) {
        verify_pgp(what, text, signed, keys)
    } else if text.starts_with(X509_SIGNATURE_BEGIN) {
        Err(bad(
            "X.509 (gpgsm) signatures are not supported; sign with an OpenPGP or SSH key".to_owned(),
        ))
    } else {
        Err(bad("the signature is in an unknown format".to_owned()))
    }
}

const TAMPERED: &str = "the signed content was changed after signing, or the signature is corrupt";

fn verify_ssh(what: &str, text: &str, signed: &[u8], keys: &TrustedKeys) -> Result<String, VerifyError> {
    let bad = |reason: String| VerifyError::BadSignature {
        what: what.to_owned(),
        reason,
    };
    let signature = SshSig::from_pem(text).map_err(|e| bad(format!("unreadable SSH signature ({e})")))?;
    let Some(trusted) = keys.ssh.iter().find(|k| k.key.key_data() == signature.public_key()) else {
        return Err(VerifyError::UnknownKey {
            what: what.to_owned(),
            key_id: format!("SSH {}", signature.public_key().fingerprint(HashAlg::Sha256)),
        });
    };
    if signature.namespace() != SSH_NAMESPACE {
        return Err(bad(format!(
            "the SSH signature is for namespace {:?}, not {SSH_NAMESPACE:?}",
            signature.namespace()
        )));
    }
    trusted
        .key
        .verify(SSH_NAMESPACE, signed, &signature)
        .map_err(|_| bad(TAMPERED.to_owned()))?;
    Ok(trusted.describe())
}

fn verify_pgp(what: &str, text: &str, signed: &[u8], keys: &TrustedKeys) -> Result<String, VerifyError> {
    let bad = |reason: String| VerifyError::BadSignature {
        what: what.to_owned(),
        reason,
    };
    let (signatures, _headers) =
        DetachedSignature::from_string_many(text).map_err(|e| bad(format!("unreadable OpenPGP signature ({e})")))?;
    let mut first_error = None;
    let mut seen = false;
    for signature in signatures {
        let signature = signature.map_err(|e| bad(format!("unreadable OpenPGP signature ({e})")))?;
        seen = true;
        let signature = signature.signature;
        let error = match verify_one_pgp(what, &signature, signed, keys) {
            Ok(by) => return Ok(by),
            Err(e) => e,
        };
        // A signature by a trusted key that fails says more than one by an unknown key.
        match (&first_error, &error) {
            (None, _) | (Some(VerifyError::UnknownKey { .. }), VerifyError::BadSignature { .. }) => {
                first_error = Some(error);
            }
            _ => {}
        }
    }
    if !seen {
        return Err(bad("the OpenPGP signature block holds no signature".to_owned()));
    }
    Err(first_error.unwrap_or_else(|| bad(TAMPERED.to_owned())))
}

fn verify_one_pgp(
    what: &str,
    signature: &PgpSignature,
    signed: &[u8],
    keys: &TrustedKeys,
) -> Result<String, VerifyError> {
    if !matches!(signature.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(VerifyError::BadSignature {
            what: what.to_owned(),
            reason: format!(
                "the OpenPGP signature is not a document signature (type {:?})",
                signature.typ()
            ),
        });
    }
    let candidates: Vec<&PgpSigningKey> = keys.pgp.iter().filter(|k| k.is_issuer_of(signature)).collect();
    if candidates.is_empty() {
        return Err(VerifyError::UnknownKey {
            what: what.to_owned(),
            key_id: pgp_issuer(signature),
        });
    }
    for candidate in &candidates {
        if candidate.verify(signature, signed).is_ok() {
            return Ok(candidate.describe());
        }
    }
    Err(VerifyError::BadSignature {
        what: what.to_owned(),
        reason: TAMPERED.to_owned(),
    })
}

/// The issuer a signature names: its fingerprint, else its key id.
fn pgp_issuer(signature: &PgpSignature) -> String {
    if let Some(fingerprint) = signature.issuer_fingerprint().first() {
        return format!("OpenPGP {fingerprint:X}");
    }
    if let Some(id) = signature.issuer_key_id().first() {
        return format!("OpenPGP {}", id.to_string().to_ascii_uppercase());
    }
    "(the OpenPGP signature names no issuer)".to_owned()
}

/// The first 12 hex digits of an object id.
fn short(oid: Oid) -> String {
    let mut id = oid.to_string();
    id.truncate(12);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSH_ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJQ3A/KiubCNyMb3WvVc4QE3pGq+fia7T7sZKo5bUcrJ alice@laptop";

    /// `gpg --quick-gen-key 'Test <t@example.com>' ed25519 sign never`, exported with --armor.
    const PGP_ED25519: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEawhRNBYJKwYBBAHaRw8BAQdAmlwi5qD34egrTRB75atm5qlnOTWGVLCQGb2l
XVS/EAa0FFRlc3QgPHRAZXhhbXBsZS5jb20+iJAEExYIADgWIQQBD2VknN52wcul
D7Vb/CJpbpkuJAUCawhRNAIbAwULCQgHAgYVCgkICwIEFgIDAQIeAQIXgAAKCRBb
/CJpbpkuJDjVAQCUL/Lw0wA7R0FjMV0ONPmgAnW0X7aCELINtvSXLvtfiwEA7l5g
+bZlFcM278Ab8RNTlURZgV9lb+h7kDEAesTLIwA=
=VqEL
-----END PGP PUBLIC KEY BLOCK-----
";
    const PGP_FINGERPRINT: &str = "010F65649CDE76C1CBA50FB55BFC22696E992E24";

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn modes_parse_from_spec_names() {
        for (text, mode) in [
            ("HEAD", VerifyMode::Head),
            ("Tag", VerifyMode::Tag),
            ("TagAndHEAD", VerifyMode::TagAndHead),
        ] {
            assert_eq!(text.parse::<VerifyMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), text);
            assert_eq!(
                serde_json::from_value::<VerifyMode>(serde_json::json!(text)).unwrap(),
                mode
            );
            assert_eq!(serde_json::to_value(mode).unwrap(), serde_json::json!(text));
        }
        let err = "tagandhead".parse::<VerifyMode>().unwrap_err();
        assert!(err.contains("HEAD, Tag or TagAndHEAD"), "{err}");
        assert!(serde_json::from_value::<VerifyMode>(serde_json::json!("commit")).is_err());
    }

    #[test]
    fn ssh_lines_in_both_styles() {
        let value = format!(
            "# the release team\n\n{SSH_ED25519}\nbob@example.com,carol@example.com {SSH_ED25519}\n\
             dave@example.com namespaces=\"git,file\" {SSH_ED25519}\n"
        );
        let keys = TrustedKeys::from_secret_data(&data(&[("team", &value)])).unwrap();
        assert_eq!(keys.ssh_len(), 3);
        assert_eq!(keys.pgp_len(), 0);
        assert!(!keys.is_empty());
        assert_eq!(
            keys.ssh[1].principals.as_deref(),
            Some("bob@example.com,carol@example.com")
        );
        assert_eq!(keys.ssh[0].principals, None);
    }

    #[test]
    fn mixed_pgp_and_ssh_keys_in_one_secret() {
        let both = format!("{PGP_ED25519}\n{SSH_ED25519}\n");
        let keys = TrustedKeys::from_secret_data(&data(&[
            ("alice.asc", PGP_ED25519),
            ("bob.pub", SSH_ED25519),
            ("carol", &both),
        ]))
        .unwrap();
        assert_eq!(keys.pgp_len(), 2);
        assert_eq!(keys.ssh_len(), 2);
        assert_eq!(keys.pgp[0].describe(), format!("OpenPGP key {PGP_FINGERPRINT}"));
        let debug = format!("{keys:?}");
        assert!(debug.contains(PGP_FINGERPRINT), "{debug}");
        assert!(debug.contains("SHA256:"), "{debug}");
        assert!(!debug.contains("AAAAC3"), "{debug}");
    }

    #[test]
    fn two_armored_blocks_in_one_value() {
        let twice = format!("{PGP_ED25519}{PGP_ED25519}");
        let keys = TrustedKeys::from_secret_data(&data(&[("k", &twice)])).unwrap();
        assert_eq!(keys.pgp_len(), 2);
    }

    #[test]
    fn ssh_keys_for_other_namespaces_are_left_out() {
        let value = format!("erin@example.com namespaces=\"file\" {SSH_ED25519}\n");
        let keys = TrustedKeys::from_secret_data(&data(&[("erin", &value)])).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn garbage_names_the_data_key_not_the_value() {
        let err = TrustedKeys::from_secret_data(&data(&[
            ("good", SSH_ED25519),
            ("release.pub", "hunter2 not a key at all"),
        ]))
        .unwrap_err();
        assert!(
            matches!(&err, VerifyError::InvalidKey { name, .. } if name == "release.pub"),
            "{err:?}"
        );
        assert_eq!(err.reason(), "invalid_key");
        let message = err.to_string();
        assert!(message.contains("\"release.pub\""), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn broken_ssh_key_and_private_keys_are_invalid() {
        let broken = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJQ3A/Kiub alice";
        let err = TrustedKeys::from_secret_data(&data(&[("k", broken)])).unwrap_err();
        assert!(err.to_string().contains("unreadable ssh-ed25519 public key"), "{err}");
        assert!(!err.to_string().contains("AAAAC3"), "{err}");

        let private =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = TrustedKeys::from_secret_data(&data(&[("id_ed25519", private)])).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert!(!err.to_string().contains("b3BlbnNz"), "{err}");
    }

    #[test]
    fn empty_and_binary_values_are_invalid() {
        let err = TrustedKeys::from_secret_data(&data(&[("empty", "  \n# only a comment\n")])).unwrap_err();
        assert!(err.to_string().contains("holds no key"), "{err}");
        let mut binary = BTreeMap::new();
        binary.insert("key.gpg".to_owned(), vec![0x99, 0x01, 0xff, 0xfe]);
        let err = TrustedKeys::from_secret_data(&binary).unwrap_err();
        assert!(err.to_string().contains("--armor"), "{err}");
    }

    #[test]
    fn unsupported_ssh_forms_are_invalid() {
        for (line, want) in [
            (format!("cert-authority {SSH_ED25519}"), "cert-authority"),
            (format!("a@b valid-before=20300101 {SSH_ED25519}"), "valid-before"),
            (
                "ssh-ed25519-cert-v01@openssh.com AAAA comment".to_owned(),
                "certificates are not supported",
            ),
        ] {
            let err = TrustedKeys::from_secret_data(&data(&[("k", &line)])).unwrap_err();
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn an_unterminated_pgp_block_is_invalid() {
        let err = TrustedKeys::from_secret_data(&data(&[("k", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n")]))
            .unwrap_err();
        assert!(matches!(err, VerifyError::InvalidKey { .. }), "{err:?}");
        let err = TrustedKeys::from_secret_data(&data(&[(
            "k",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 !!\n-----END PGP PUBLIC KEY BLOCK-----\n",
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("OpenPGP"), "{err}");
    }

    #[test]
    fn trusted_keys_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + Clone>() {}
        shareable::<TrustedKeys>();
        shareable::<Verified>();
    }

    #[test]
    fn an_empty_secret_trusts_nothing() {
        let keys = TrustedKeys::from_secret_data(&BTreeMap::new()).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn signature_start_is_the_last_signature_line() {
        let tag = b"object 0\ntype commit\ntag v1\n\nmsg\n-----BEGIN PGP SIGNATURE-----\nquoted\n-----END PGP SIGNATURE-----\n-----BEGIN SSH SIGNATURE-----\nx\n-----END SSH SIGNATURE-----\n";
        let at = signature_start(tag).unwrap();
        assert!(tag[at..].starts_with(b"-----BEGIN SSH SIGNATURE-----"));
        assert_eq!(signature_start(b"object 0\ntag v1\n\nno signature\n"), None);
    }
}
