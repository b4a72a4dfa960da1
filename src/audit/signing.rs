//! Ed25519 keys of the audit digests (see [`super::digest`]).
//!
//! - A private key is a PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey
//!   -algorithm ed25519` writes it); standalone it lives in `audit.signingKeyFile` (generated
//!   with mode 0600 when missing), in cluster mode in a Secret (see [`super::cluster`]).
//! - A public key is a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`, `openssl pkey
//!   -pubout`). A file of public keys may hold any number of them: old keys stay verifiable.
//! - A key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key; every
//!   digest names the key that signed it.
//!
//! Private keys are never logged, printed or written anywhere but their file or Secret.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use zeroize::Zeroizing;

/// DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const PRIVATE_LABEL: &str = "PRIVATE KEY";
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// Why a key could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The text holds no usable key of the expected kind.
    #[error("{origin}: {reason}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What is wrong (never the key material).
        reason: String,
    },
    /// The system random generator failed.
    #[error("cannot generate a signing key: the system random generator failed")]
    Random,
}

/// An Ed25519 signing key with its id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; 32]>,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(seed.as_mut()).map_err(|_| KeyError::Random)?;
        Self::from_seed(seed, "generated key")
    }

    fn from_seed(seed: Zeroizing<[u8; 32]>, origin: &str) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| KeyError::Invalid {
            origin: origin.to_owned(),
            reason: "not an Ed25519 private key".to_owned(),
        })?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(SigningKey { pair, seed, key_id })
    }

    /// Parse a PKCS#8 PEM private key (`origin` names it in errors).
    pub fn from_pem(text: &[u8], origin: &str) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            origin: origin.to_owned(),
            reason: reason.to_owned(),
        };
        let der = pem_blocks(text, PRIVATE_LABEL)
            .into_iter()
            .next()
            .ok_or_else(|| invalid("no `-----BEGIN PRIVATE KEY-----` block"))?;
        let der = Zeroizing::new(der);
        if let Some(seed) = der.strip_prefix(&PKCS8_PREFIX[..]).filter(|s| s.len() == 32) {
            let mut bytes = Zeroizing::new([0u8; 32]);
            bytes.copy_from_slice(seed);
            return Self::from_seed(bytes, origin);
        }
        // PKCS#8 v2 (with the public key), as ring and some tools write it.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| invalid("not an Ed25519 PKCS#8 private key"))?;
        let seed = der
            .get(PKCS8_PREFIX.len()..PKCS8_PREFIX.len() + 32)
            .ok_or_else(|| invalid("not an Ed25519 PKCS#8 private key"))?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(seed);
        let key = Self::from_seed(bytes, origin)?;
        if key.pair.public_key().as_ref() != pair.public_key().as_ref() {
            return Err(invalid("not an Ed25519 PKCS#8 private key"));
        }
        Ok(key)
    }

    /// The private key as PKCS#8 v1 PEM (for its file or Secret only).
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(self.seed.as_ref());
        Zeroizing::new(pem(PRIVATE_LABEL, &der))
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey {
            raw,
            key_id: self.key_id.clone(),
        }
    }

    /// The key id (see the module documentation).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature of `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(message).as_ref())
    }

    /// Read the key in `path`, or generate one there (mode 0600, directory created) when the
    /// file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                return Ok((Self::from_pem(&text, &path.display().to_string())?, false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let key = Self::generate()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        file.write_all(key.to_pem().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok((key, true))
    }
}

/// The key a writer signs with, swapped in place (cluster mode follows a Secret; until it is
/// read there is none, and digests wait).
#[derive(Debug, Default)]
pub struct SignerSlot(std::sync::RwLock<Option<std::sync::Arc<SigningKey>>>);

impl SignerSlot {
    /// A slot holding `key`.
    pub fn with(key: SigningKey) -> Self {
        SignerSlot(std::sync::RwLock::new(Some(std::sync::Arc::new(key))))
    }

    /// The current key.
    pub fn get(&self) -> Option<std::sync::Arc<SigningKey>> {
        match self.0.read() {
            Ok(key) => key.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sign with `key` from now on.
    pub fn set(&self, key: SigningKey) {
        let key = Some(std::sync::Arc::new(key));
        match self.0.write() {
            Ok(mut slot) => *slot = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

/// An Ed25519 public key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    key_id: String,
}

impl PublicKey {
    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        pem(PUBLIC_LABEL, &der)
    }

    /// Whether `signature` (base64) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, &signature)
            .is_ok()
    }
}

/// Public keys by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicKeys(BTreeMap<String, PublicKey>);

impl PublicKeys {
    /// Every `-----BEGIN PUBLIC KEY-----` block in `text` (PEM, or the JSON or YAML of an
    /// exported ConfigMap whose values are such PEMs); `origin` names it in errors.
    pub fn parse(text: &[u8], origin: &str) -> Result<Self, KeyError> {
        let mut keys = PublicKeys::default();
        let mut blocks = pem_blocks(text, PUBLIC_LABEL);
        if blocks.is_empty() {
            // An exported ConfigMap: JSON escapes the PEM's newlines, YAML indents them.
            for value in exported_data_values(text) {
                blocks.extend(pem_blocks(value.as_bytes(), PUBLIC_LABEL));
            }
        }
        for der in blocks {
            let raw: [u8; 32] = der
                .strip_prefix(&SPKI_PREFIX[..])
                .and_then(|raw| raw.try_into().ok())
                .ok_or_else(|| KeyError::Invalid {
                    origin: origin.to_owned(),
                    reason: "a PUBLIC KEY block that is not an Ed25519 key".to_owned(),
                })?;
            keys.insert(PublicKey {
                raw,
                key_id: key_id(&raw),
            });
        }
        if keys.0.is_empty() {
            return Err(KeyError::Invalid {
                origin: origin.to_owned(),
                reason: "no `-----BEGIN PUBLIC KEY-----` block".to_owned(),
            });
        }
        Ok(keys)
    }

    /// Add a key.
    pub fn insert(&mut self, key: PublicKey) {
        self.0.insert(key.key_id.clone(), key);
    }

    /// Add every key of `other`.
    pub fn extend(&mut self, other: PublicKeys) {
        self.0.extend(other.0);
    }

    /// The key with this id.
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.0.get(key_id)
    }

    /// The key ids.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The string values under `data` of a ConfigMap (or of each item of a List) exported as JSON
/// or YAML; nothing when the text is neither.
pub fn exported_data_values(text: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => match serde_saphyr::from_str(text) {
            Ok(value) => value,
            Err(_) => return Vec::new(),
        },
    };
    let objects = match value.get("items").and_then(serde_json::Value::as_array) {
        Some(items) => items.clone(),
        None => vec![value],
    };
    objects
        .iter()
        .filter_map(|o| o.get("data").and_then(serde_json::Value::as_object))
        .flat_map(|data| data.values().filter_map(|v| v.as_str().map(str::to_owned)))
        .collect()
}

/// The id of a raw public key.
pub fn key_id(raw: &[u8]) -> String {
    super::chain::sha256_hex(raw)[..16].to_owned()
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of every `label` block in `text` (blocks that do not decode are skipped).
fn pem_blocks(text: &[u8], label: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let b64: String = body[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_keys_round_trip_through_pem() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(key.to_pem().as_bytes(), "test").unwrap();
        assert_eq!(again.key_id(), key.key_id());
        let public = PublicKeys::parse(key.public().to_pem().as_bytes(), "test").unwrap();
        let found = public.get(key.key_id()).unwrap();
        let signature = key.sign(b"message");
        assert!(found.verifies(b"message", &signature));
        assert!(!found.verifies(b"massage", &signature));
        assert!(!found.verifies(b"message", "not base64!"));
    }

    #[test]
    fn public_keys_come_from_an_exported_config_map() {
        let old = SigningKey::generate().unwrap().public();
        let new = SigningKey::generate().unwrap().public();
        let exported = serde_json::json!({"kind": "ConfigMap", "data": {
            format!("{}.pem", old.key_id()): old.to_pem(),
            format!("{}.pem", new.key_id()): new.to_pem(),
        }});
        let keys = PublicKeys::parse(exported.to_string().as_bytes(), "cm.json").unwrap();
        assert_eq!(keys.ids().count(), 2);
        assert!(keys.get(old.key_id()).is_some() && keys.get(new.key_id()).is_some());
        let error = PublicKeys::parse(b"nothing here", "x").unwrap_err();
        assert!(
            error.to_string().contains("no `-----BEGIN PUBLIC KEY-----` block"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_key_file_is_generated_with_mode_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit-signing.key");
        let (key, generated) = SigningKey::load_or_generate(&path).unwrap();
        assert!(generated);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, generated) = SigningKey::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(again.key_id(), key.key_id());
        assert!(format!("{key:?}").contains(key.key_id()) && !format!("{key:?}").contains("seed"));
    }
}
