//! Cluster targets: GitSources from a watch (no API call per request, so probing random names
//! costs the API server nothing), their Secrets read on demand and cached briefly, and a
//! trigger that stamps [`REQUESTED_AT_ANNOTATION`] on the GitSource. That metadata change is a
//! watch event for the leader's GitSource controller, which reconciles, i.e. fetches, at once:
//! any replica may receive the hook, only the leader fetches.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::task::JoinHandle;

use super::{HookTargets, REQUESTED_AT_ANNOTATION, SECRET_KEY, TargetError, TargetFuture, shared_secret};
use crate::api::GitSource;

/// How long a Secret read is reused: a rotated secret applies within this time.
const SECRET_TTL: Duration = Duration::from_secs(10);
/// Secrets cached at most.
const SECRET_CACHE_ENTRIES: u64 = 1024;
/// Field manager of the trigger patch.
const FIELD_MANAGER: &str = "driftguard";

/// [`HookTargets`] over the Kubernetes API. Dropping it stops its watch.
pub struct KubeTargets {
    client: Client,
    sources: Store<GitSource>,
    secrets: moka::sync::Cache<(String, String), Arc<Vec<u8>>>,
    api_timeout: Duration,
    watch: JoinHandle<()>,
}

impl std::fmt::Debug for KubeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTargets")
            .field("sources", &self.sources.len())
            .field("api_timeout", &self.api_timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for KubeTargets {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl KubeTargets {
    /// Starts watching every GitSource (call inside a Tokio runtime). `api_timeout` bounds each
    /// Secret read and trigger patch, and how long a request waits for the first list.
    pub fn start(client: Client, api_timeout: Duration) -> Self {
        let (sources, writer) = reflector::store();
        let stream = watcher(Api::<GitSource>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let watch = tokio::spawn(async move {
            stream
                .for_each(|event| async move {
                    if let Err(error) = event {
                        tracing::debug!(%error, "push receiver: GitSource watch event");
                    }
                })
                .await;
        });
        KubeTargets {
            client,
            sources,
            secrets: moka::sync::Cache::builder()
                .max_capacity(SECRET_CACHE_ENTRIES)
                .time_to_live(SECRET_TTL)
                .build(),
            api_timeout,
            watch,
        }
    }

    /// The Secret name of `namespace/name`'s receiver, if the source exists and has one.
    async fn receiver_secret_name(&self, namespace: &str, name: &str) -> Result<Option<String>, TargetError> {
        match tokio::time::timeout(self.api_timeout, self.sources.wait_until_ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                return Err(TargetError::Unavailable(
                    "the GitSource watch has not listed the sources yet".to_owned(),
                ));
            }
        }
        let source = self.sources.get(&ObjectRef::new(name).within(namespace));
        Ok(source.and_then(|s| s.spec.receiver.as_ref().map(|r| r.secret_ref.name.clone())))
    }

    async fn read_secret(&self, namespace: &str, secret_name: &str) -> Result<Vec<u8>, TargetError> {
        let key = (namespace.to_owned(), secret_name.to_owned());
        if let Some(cached) = self.secrets.get(&key) {
            return Ok(cached.as_ref().clone());
        }
        let what = format!("Secret {namespace}/{secret_name}");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = match tokio::time::timeout(self.api_timeout, api.get_opt(secret_name)).await {
            Err(_) => {
                return Err(TargetError::Unavailable(format!(
                    "reading {what}: no answer within {:?}",
                    self.api_timeout
                )));
            }
            Ok(Err(error)) => return Err(TargetError::Unavailable(format!("reading {what}: {error}"))),
            Ok(Ok(None)) => {
                return Err(TargetError::Misconfigured(format!(
                    "{what} named by spec.receiver.secretRef does not exist"
                )));
            }
            Ok(Ok(Some(secret))) => secret,
        };
        let stored = secret
            .data
            .and_then(|mut data| data.remove(SECRET_KEY))
            .map(|bytes| shared_secret(bytes.0))
            .unwrap_or_default();
        if stored.is_empty() {
            return Err(TargetError::Misconfigured(format!(
                "{what} has no non-empty key {SECRET_KEY:?}"
            )));
        }
        self.secrets.insert(key, Arc::new(stored.clone()));
        Ok(stored)
    }
}

impl HookTargets for KubeTargets {
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            match self.receiver_secret_name(namespace, name).await? {
                None => Ok(None),
                Some(secret_name) => self.read_secret(namespace, &secret_name).await.map(Some),
            }
        })
    }

    fn trigger<'a>(&'a self, namespace: &'a str, name: &'a str) -> TargetFuture<'a, ()> {
        Box::pin(async move {
            let api: Api<GitSource> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({
                "metadata": {"annotations": {REQUESTED_AT_ANNOTATION: Timestamp::now().to_string()}}
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match tokio::time::timeout(self.api_timeout, api.patch(name, &params, &Patch::Merge(&patch))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(TargetError::Unavailable(format!(
                    "annotating GitSource {namespace}/{name}: {error}"
                ))),
                Err(_) => Err(TargetError::Unavailable(format!(
                    "annotating GitSource {namespace}/{name}: no answer within {:?}",
                    self.api_timeout
                ))),
            }
        })
    }
}
