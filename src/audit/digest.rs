//! Signed digests and their anchors.
//!
//! Every chained record names its chain: `replica` (the pod name, or the host standalone) and
//! `chain` (a random id kept in the file, so it survives restarts with the same file; without
//! a file each process starts a new chain). Interleaved copies (three replicas on stdout,
//! merged in a SIEM) are split by `chain` and verified one by one.
//!
//! Every `audit.digestInterval`, and at shutdown, a writer with a signing key appends an
//! `audit.digest` record to its chain (when records came since the last digest). Its `digest`
//! member is what is signed:
//!
//! ```text
//! {"chain":…,"first_seq":a,"head":…,"key_id":…,"last_seq":b,"prev_signature":…,"replica":…,"time":…}
//! ```
//!
//! - `first_seq..=last_seq`: the records since the previous digest (`first_seq` is the previous
//!   digest's own seq + 1, or 1); `head`: the `hash` of record `last_seq`, which by the chain
//!   covers every record before it too;
//! - `prev_signature`: the previous digest's signature (empty for a chain's first), so digests
//!   form a signed chain of their own and none can be removed unnoticed;
//! - `key_id`: the key that signed (see [`super::signing`]).
//!
//! `signature` (a member of the record, beside `digest`) is the base64 Ed25519 signature of
//! [`SIGNED_PREFIX`] followed by the canonical JSON of `digest`. The digest record itself takes
//! the next `seq` of the chain (its `prev_hash` is `head`) and is hashed like any record.
//!
//! An [`Anchor`] is a digest as it is also kept outside the log (in cluster mode a ConfigMap
//! per replica, see [`super::cluster`]): the digest record's `seq` and `hash`, and the signed
//! `digest` with its `signature`. A log cut after the last anchored digest, or rewritten
//! around it, no longer contains it; an anchor rewritten in the cluster no longer verifies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::signing::{PublicKeys, SigningKey};

/// `event` of a digest record.
pub const DIGEST_EVENT: &str = "audit.digest";

/// What a digest's signature covers, before the canonical JSON of the digest: keeps a
/// signature from being valid for anything else.
pub const SIGNED_PREFIX: &str = "driftguard.io/audit/digest/v1\n";

/// Which chain a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainIdentity {
    /// The replica (pod name, or host standalone).
    pub replica: String,
    /// The chain id.
    pub chain: String,
}

impl ChainIdentity {
    /// Add `replica` and `chain` to a record before it is sealed.
    pub fn stamp(&self, object: &mut Map<String, Value>) {
        object.insert("replica".to_owned(), Value::from(self.replica.as_str()));
        object.insert("chain".to_owned(), Value::from(self.chain.as_str()));
    }
}

/// A new random chain id (32 hex digits).
pub fn new_chain_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Unique enough without randomness: the time and the process.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return super::chain::sha256_hex(format!("{now:?}-{}", std::process::id()).as_bytes())[..32].to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signed part of a digest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    /// The replica.
    pub replica: String,
    /// The chain.
    pub chain: String,
    /// First record covered.
    pub first_seq: u64,
    /// Last record covered.
    pub last_seq: u64,
    /// `hash` of record `last_seq`.
    pub head: String,
    /// The previous digest's signature; empty for the first.
    pub prev_signature: String,
    /// RFC 3339 time of signing.
    pub time: String,
    /// The signing key's id.
    pub key_id: String,
}

impl Digest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut out = SIGNED_PREFIX.as_bytes().to_vec();
        out.extend_from_slice(super::canonical_json(&value).as_bytes());
        out
    }

    /// How `signature` stands with `keys`.
    pub fn check(&self, signature: &str, keys: &PublicKeys) -> SignatureCheck {
        match keys.get(&self.key_id) {
            None => SignatureCheck::UnknownKey,
            Some(key) if key.verifies(&self.signed_bytes(), signature) => SignatureCheck::Valid,
            Some(_) => SignatureCheck::Invalid,
        }
    }

    /// The digest record (without `seq`, `prev_hash` and `hash`, which sealing adds), signed
    /// by `key`, and its signature.
    pub fn record(&self, key: &SigningKey) -> (Map<String, Value>, String) {
        let signature = key.sign(&self.signed_bytes());
        let mut object = Map::new();
        object.insert("schema".to_owned(), Value::from(super::SCHEMA));
        object.insert("time".to_owned(), Value::from(self.time.as_str()));
        object.insert("event".to_owned(), Value::from(DIGEST_EVENT));
        object.insert(
            "message".to_owned(),
            Value::from(format!(
                "signed digest of seq {}..{} (key {})",
                self.first_seq, self.last_seq, self.key_id
            )),
        );
        object.insert("digest".to_owned(), serde_json::to_value(self).unwrap_or(Value::Null));
        object.insert("signature".to_owned(), Value::from(signature.as_str()));
        (object, signature)
    }

    /// The digest and signature a record carries, when it is a digest record; Err when it is
    /// one but malformed.
    pub fn of_record(record: &Value) -> Result<Option<(Digest, String)>, String> {
        if record.get("event").and_then(Value::as_str) != Some(DIGEST_EVENT) {
            return Ok(None);
        }
        let digest = record.get("digest").cloned().ok_or("digest record without `digest`")?;
        let digest: Digest = serde_json::from_value(digest).map_err(|e| format!("malformed digest: {e}"))?;
        let signature = record
            .get("signature")
            .and_then(Value::as_str)
            .ok_or("digest record without `signature`")?;
        Ok(Some((digest, signature.to_owned())))
    }
}

/// Called on the writer thread with each digest written (see
/// [`super::ChainSinkBuilder::on_digest`]).
pub type OnDigest = Box<dyn FnMut(Anchor) + Send>;

/// How a digest's signature stands with the public keys given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Signed by a known key.
    Valid,
    /// Its key id is not among the keys.
    UnknownKey,
    /// The known key did not sign it.
    Invalid,
}

/// A digest as kept outside the log (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The digest record's `seq`.
    pub seq: u64,
    /// The digest record's `hash`.
    pub hash: String,
    /// The signed digest.
    pub digest: Digest,
    /// Its signature.
    pub signature: String,
}

impl Anchor {
    /// Anchors in `text`: JSON lines of anchors, or a ConfigMap (or List of them, as `kubectl
    /// get -o json|yaml` exports) whose data values are anchors. Lines that are not anchors are
    /// errors (`origin` names the text).
    pub fn parse_all(text: &[u8], origin: &str) -> Result<Vec<Anchor>, String> {
        let values = super::signing::exported_data_values(text);
        let values = if values.is_empty() {
            String::from_utf8_lossy(text)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            values
        };
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_str(v).map_err(|e| format!("{origin}: anchor {} is not an audit anchor: {e}", i + 1))
            })
            .collect()
    }
}
