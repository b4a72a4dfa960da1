//! The audit signing key and the digest anchors in the cluster (cluster mode).
//!
//! - **Key**: the Lease holder creates the Secret [`DEFAULT_KEY_SECRET`] once (key
//!   [`KEY_SECRET_KEY`], a PKCS#8 PEM), like the self-managed CA Secret of
//!   [`crate::certs::managed`]: created when absent, a conflict means another replica created
//!   it first. Every replica follows the Secret and signs its digests with the key in it.
//! - **Public keys**: the leader publishes each key's public half in the ConfigMap
//!   [`DEFAULT_KEYS_CONFIG_MAP`] (`<key id>.pem`, and `current` naming the key in use) and never
//!   removes one, so digests signed before a rotation stay verifiable. Rotation: delete the
//!   Secret; the leader creates a new key, every replica swaps it in, the ConfigMap gains it.
//! - **Anchors**: every replica keeps the latest digest of each of its chains (the newest
//!   [`MAX_ANCHORED_CHAINS`]) in its own ConfigMap `driftguard-audit-anchors-<replica>`,
//!   labelled [`ANCHORS_LABEL`], one data key per chain holding the [`Anchor`] as JSON.
//!
//! The Secret's content is never logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use super::digest::{Anchor, OnDigest};
use super::signing::{KeyError, PublicKeys, SignerSlot, SigningKey};

/// Default name of the signing key Secret.
pub const DEFAULT_KEY_SECRET: &str = "driftguard-audit-signing-key";
/// Default name of the public key ConfigMap.
pub const DEFAULT_KEYS_CONFIG_MAP: &str = "driftguard-audit-keys";
/// Default name prefix of the per-replica anchor ConfigMaps.
pub const DEFAULT_ANCHORS_PREFIX: &str = "driftguard-audit-anchors";
/// Label of the anchor ConfigMaps (value: the replica).
pub const ANCHORS_LABEL: &str = "driftguard.io/audit-anchors";
/// Key of the private key in the Secret.
pub const KEY_SECRET_KEY: &str = "ed25519.key";
/// Chains whose latest digest a replica's anchor ConfigMap keeps.
pub const MAX_ANCHORED_CHAINS: usize = 16;

/// Why a call about the audit key or anchors failed; the next attempt retries.
#[derive(Debug, thiserror::Error)]
pub enum AuditClusterError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// An API call took longer than the API timeout.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// The call.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// The key could not be made or read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An anchor ConfigMap holds something that is not an anchor (it was rewritten).
    #[error("ConfigMap {config_map}: entry {chain} is not an audit anchor ({reason}): was it rewritten?")]
    Anchor {
        /// The ConfigMap.
        config_map: String,
        /// The data key.
        chain: String,
        /// The parse error.
        reason: String,
    },
}

/// Where the audit key, public keys and anchors live.
#[derive(Clone)]
pub struct AuditCluster {
    /// Client with driftguard's identity.
    pub client: Client,
    /// driftguard's namespace.
    pub namespace: String,
    /// The signing key Secret.
    pub secret_name: String,
    /// The public key ConfigMap.
    pub keys_config_map: String,
    /// Prefix of the anchor ConfigMaps.
    pub anchors_prefix: String,
    /// This replica.
    pub replica: String,
    /// Bound on each API call.
    pub api_timeout: Duration,
}

impl std::fmt::Debug for AuditCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditCluster")
            .field("namespace", &self.namespace)
            .field("secret_name", &self.secret_name)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "driftguard".to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "driftguard".to_owned()),
    ])
}

/// The signing key in a Secret, if it holds one.
fn key_of(secret: &Secret, origin: &str) -> Result<Option<SigningKey>, KeyError> {
    let Some(pem) = secret.data.as_ref().and_then(|d| d.get(KEY_SECRET_KEY)) else {
        return Ok(None);
    };
    SigningKey::from_pem(&Zeroizing::new(pem.0.clone()), origin).map(Some)
}

impl AuditCluster {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secret_origin(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }

    /// This replica's anchor ConfigMap.
    pub fn anchors_name(&self) -> String {
        let mut name = format!("{}-{}", self.anchors_prefix, self.replica.to_ascii_lowercase());
        name.truncate(253);
        name
    }

    async fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, AuditClusterError> {
        crate::certs::managed::within(self.api_timeout, call)
            .await
            .map_err(|error| match error {
                Some(source) => AuditClusterError::Api { what: what(), source },
                None => AuditClusterError::Timeout {
                    what: what(),
                    timeout: self.api_timeout,
                },
            })
    }

    /// The leader's pass: create the key Secret when it is missing (or holds no key), then make
    /// sure the ConfigMap publishes its public key (old keys stay). Returns the key id.
    pub async fn ensure_key(&self) -> Result<String, AuditClusterError> {
        let origin = self.secret_origin();
        let read = || format!("reading {origin}");
        let current = self.bounded(read, self.secrets().get_opt(&self.secret_name)).await?;
        let key = match current.as_ref().map(|s| key_of(s, &origin)).transpose()?.flatten() {
            Some(key) => key,
            None => {
                let key = SigningKey::generate()?;
                let mut secret = current.clone().unwrap_or_else(|| Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.secret_name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(labels("audit-signing-key")),
                        ..Default::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    ..Default::default()
                });
                secret.data = Some(BTreeMap::from([(
                    KEY_SECRET_KEY.to_owned(),
                    ByteString(key.to_pem().as_bytes().to_vec()),
                )]));
                let write = || format!("writing {origin}");
                let written = match current {
                    Some(_) => {
                        self.bounded(
                            write,
                            self.secrets()
                                .replace(&self.secret_name, &PostParams::default(), &secret),
                        )
                        .await
                    }
                    None => {
                        self.bounded(write, self.secrets().create(&PostParams::default(), &secret))
                            .await
                    }
                };
                match written {
                    Ok(_) => {
                        tracing::info!(secret = %origin, key_id = %key.key_id(), "created the audit signing key");
                        key
                    }
                    // Another replica wrote first: use its key.
                    Err(AuditClusterError::Api {
                        source: kube::Error::Api(status),
                        ..
                    }) if status.code == 409 => {
                        let secret = self.bounded(read, self.secrets().get(&self.secret_name)).await?;
                        key_of(&secret, &origin)?.ok_or_else(|| KeyError::Invalid {
                            origin: origin.clone(),
                            reason: format!("no {KEY_SECRET_KEY}"),
                        })?
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        self.publish_public_key(&key).await?;
        Ok(key.key_id().to_owned())
    }

    async fn publish_public_key(&self, key: &SigningKey) -> Result<(), AuditClusterError> {
        let name = &self.keys_config_map;
        let what = || format!("writing ConfigMap {}/{name}", self.namespace);
        let current = self
            .bounded(
                || format!("reading ConfigMap {}/{name}", self.namespace),
                self.config_maps().get_opt(name),
            )
            .await?;
        let public = key.public();
        let entry = format!("{}.pem", public.key_id());
        let data = current.as_ref().and_then(|c| c.data.clone()).unwrap_or_default();
        if data.get(&entry) == Some(&public.to_pem()) && data.get("current").map(String::as_str) == Some(key.key_id()) {
            return Ok(());
        }
        let mut config_map = current.clone().unwrap_or_else(|| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels("audit-public-keys")),
                ..Default::default()
            },
            ..Default::default()
        });
        let data = config_map.data.get_or_insert_with(BTreeMap::new);
        data.insert(entry, public.to_pem());
        data.insert("current".to_owned(), key.key_id().to_owned());
        match current {
            Some(_) => {
                self.bounded(
                    what,
                    self.config_maps().replace(name, &PostParams::default(), &config_map),
                )
                .await?;
            }
            None => {
                self.bounded(what, self.config_maps().create(&PostParams::default(), &config_map))
                    .await?;
            }
        }
        tracing::info!(config_map = %name, key_id = %key.key_id(), "published the audit public key");
        Ok(())
    }

    /// Every replica: sign with the key in the Secret, swapped in whenever it changes, and wake
    /// the leader's loop on any change of the Secret.
    pub async fn follow_key(
        self: Arc<Self>,
        slot: Arc<SignerSlot>,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()>,
    ) {
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", self.secret_name));
        let secrets = watcher(self.secrets(), by_name).default_backoff();
        let origin = self.secret_origin();
        let follow = async {
            let mut secrets = std::pin::pin!(secrets);
            while let Some(event) = secrets.next().await {
                match event {
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                        match key_of(&secret, &origin) {
                            Ok(Some(key)) => {
                                if slot.get().map(|k| k.key_id().to_owned()).as_deref() != Some(key.key_id()) {
                                    tracing::info!(secret = %origin, key_id = %key.key_id(), "signing audit digests with this key");
                                    slot.set(key);
                                }
                            }
                            Ok(None) => {}
                            Err(error) => tracing::warn!(%error, "ignoring the audit signing key Secret"),
                        }
                        wake.notify_one();
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        tracing::warn!(secret = %origin, "the audit signing key Secret was deleted; signing with the last key until the leader creates a new one");
                        wake.notify_one();
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(error) => {
                        tracing::warn!(secret = %origin, %error, "watching the audit signing key Secret; retrying")
                    }
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = follow => {}
        }
    }

    /// The leader's loop: [`Self::ensure_key`] when this replica leads, on every change of the
    /// Secret (`wake`) and every `interval`.
    pub async fn maintain_key(
        self: Arc<Self>,
        mut leading: watch::Receiver<bool>,
        wake: Arc<Notify>,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let mut next = interval;
            if *leading.borrow_and_update()
                && let Err(error) = self.ensure_key().await
            {
                tracing::warn!(%error, "audit signing key pass failed; retrying");
                next = interval.min(Duration::from_secs(5));
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(next) => {}
                () = wake.notified() => {}
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Keep `anchor` in this replica's anchor ConfigMap (beside the latest anchors of its other
    /// chains, the newest [`MAX_ANCHORED_CHAINS`]).
    pub async fn publish_anchor(&self, anchor: &Anchor) -> Result<(), AuditClusterError> {
        let name = self.anchors_name();
        let current = self
            .bounded(
                || format!("reading ConfigMap {}/{name}", self.namespace),
                self.config_maps().get_opt(&name),
            )
            .await?;
        let mut config_map = current.clone().unwrap_or_else(|| {
            let mut labels = labels("audit-anchors");
            labels.insert(ANCHORS_LABEL.to_owned(), "true".to_owned());
            ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        "driftguard.io/replica".to_owned(),
                        self.replica.clone(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            }
        });
        let data = config_map.data.get_or_insert_with(BTreeMap::new);
        let text = serde_json::to_string(anchor).unwrap_or_default();
        data.insert(anchor.digest.chain.clone(), text);
        while data.len() > MAX_ANCHORED_CHAINS {
            let oldest = data
                .iter()
                .filter(|(chain, _)| **chain != anchor.digest.chain)
                .min_by_key(|(_, v)| {
                    serde_json::from_str::<Anchor>(v)
                        .map(|a| a.digest.time)
                        .unwrap_or_default()
                })
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => data.remove(&oldest),
                None => break,
            };
        }
        let what = || format!("writing ConfigMap {}/{name}", self.namespace);
        match current {
            Some(_) => {
                self.bounded(
                    what,
                    self.config_maps().replace(&name, &PostParams::default(), &config_map),
                )
                .await?;
            }
            None => {
                self.bounded(what, self.config_maps().create(&PostParams::default(), &config_map))
                    .await?;
            }
        }
        Ok(())
    }

    /// Publish every anchor that comes through `anchors` until shutdown; a failed write is
    /// retried (the latest anchor covers the earlier ones). After shutdown the caller publishes
    /// the final digest's anchor itself.
    pub async fn publish_anchors(
        &self,
        mut anchors: watch::Receiver<Option<Anchor>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut pending: Option<Anchor> = None;
        loop {
            if let Some(anchor) = pending.take()
                && let Err(error) = self.publish_anchor(&anchor).await
            {
                tracing::warn!(%error, "cannot keep the audit digest anchor in the cluster; retrying");
                pending = Some(anchor);
            }
            let retry = if pending.is_some() {
                Duration::from_secs(2)
            } else {
                Duration::MAX
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(retry) => {}
                changed = anchors.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = anchors.borrow_and_update().clone().or(pending);
                }
            }
        }
    }
}

/// A digest callback for [`super::ChainSinkBuilder::on_digest`] that hands each anchor to a
/// watch channel (never blocks the writer), and its receiving end.
pub fn anchor_channel() -> (OnDigest, watch::Receiver<Option<Anchor>>) {
    let (tx, rx) = watch::channel(None);
    (
        Box::new(move |anchor| {
            tx.send_replace(Some(anchor));
        }),
        rx,
    )
}

/// What `audit verify --from-cluster` reads: the public keys in ConfigMap `keys_config_map`
/// and every anchor ConfigMap in `namespace`.
pub async fn read_evidence(
    client: &Client,
    namespace: &str,
    keys_config_map: &str,
) -> Result<(PublicKeys, Vec<Anchor>), AuditClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let keys = api
        .get(keys_config_map)
        .await
        .map_err(|source| AuditClusterError::Api {
            what: format!("reading ConfigMap {namespace}/{keys_config_map}"),
            source,
        })?;
    let text = serde_json::to_vec(&keys).unwrap_or_default();
    let keys = PublicKeys::parse(&text, &format!("ConfigMap {namespace}/{keys_config_map}"))?;
    let listed = api
        .list(&ListParams::default().labels(ANCHORS_LABEL))
        .await
        .map_err(|source| AuditClusterError::Api {
            what: format!("listing the anchor ConfigMaps in {namespace}"),
            source,
        })?;
    let mut anchors = Vec::new();
    for config_map in listed.items {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        for (chain, text) in config_map.data.unwrap_or_default() {
            let anchor = serde_json::from_str::<Anchor>(&text).map_err(|e| AuditClusterError::Anchor {
                config_map: format!("{namespace}/{name}"),
                chain: chain.clone(),
                reason: e.to_string(),
            })?;
            anchors.push(anchor);
        }
    }
    Ok((keys, anchors))
}
