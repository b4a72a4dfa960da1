//! Scope and plural of every kind in cluster mode: API discovery, shared by the applier, the
//! leader's loads and every replica's loads, run again when a kind is unknown.
//!
//! Why "again on a miss" rather than a watch on CustomResourceDefinitions: a kind only matters
//! once a render declares it, and a CRD's scope and plural cannot change while it exists
//! (`spec.scope` and `spec.names.plural` are immutable), so what discovery once said stays true.
//! A load that meets a kind discovery has not described runs discovery once more and retries;
//! the leader applies CRDs before their custom resources, so by the time a replica loads an
//! applied revision, discovery serves its kinds. No extra watch, no extra RBAC.

use std::sync::{Arc, RwLock};

use kube::discovery::Scope;
use kube::{Client, Discovery};

use crate::desired::{ApiResources, DesiredCache, DesiredSet, GuardPolicy, LoadError, SourceSettings, load_guard};

/// Discovery of one cluster and the [`ApiResources`] table built from it.
pub struct ClusterKinds {
    client: Client,
    discovery: RwLock<Arc<Discovery>>,
    table: RwLock<Arc<ApiResources>>,
}

impl std::fmt::Debug for ClusterKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKinds")
            .field("kinds", &self.table().len())
            .finish_non_exhaustive()
    }
}

/// Every kind discovery lists (the preferred version of each group; scope and plural do not
/// differ between versions of one kind).
pub fn table_of(discovery: &Discovery) -> ApiResources {
    let mut table = ApiResources::default();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            table.insert(
                &resource.group,
                &resource.kind,
                &resource.plural,
                capabilities.scope == Scope::Namespaced,
            );
        }
    }
    table
}

impl ClusterKinds {
    /// Nothing discovered yet: the first unknown kind (or [`ClusterKinds::refresh`]) runs
    /// discovery.
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(ClusterKinds {
            discovery: RwLock::new(Arc::new(Discovery::new(client.clone()))),
            client,
            table: RwLock::new(Arc::new(ApiResources::default())),
        })
    }

    /// Run discovery now.
    pub async fn discover(client: Client) -> Result<Arc<Self>, kube::Error> {
        let kinds = Self::new(client);
        kinds.refresh().await?;
        Ok(kinds)
    }

    /// Run discovery again and keep its answer.
    pub async fn refresh(&self) -> Result<Arc<Discovery>, kube::Error> {
        let fresh = Arc::new(Discovery::new(self.client.clone()).run().await?);
        let table = Arc::new(table_of(&fresh));
        *self
            .discovery
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
        *self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        Ok(fresh)
    }

    /// The last discovery.
    pub fn discovery(&self) -> Arc<Discovery> {
        self.discovery
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The kinds the last discovery described.
    pub fn table(&self) -> Arc<ApiResources> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Load `policy`'s desired set (see [`load_guard`]) with the discovered kinds; when a
    /// kind is unknown, run discovery once more and retry. This is the cluster-mode entry
    /// point of the resolver.
    pub async fn load(
        self: &Arc<Self>,
        policy: Arc<GuardPolicy>,
        settings: SourceSettings,
        cache: DesiredCache,
    ) -> Result<Arc<DesiredSet>, KindsLoadError> {
        let attempt = |table: Arc<ApiResources>| {
            let (policy, settings, cache) = (policy.clone(), settings.clone(), cache.clone());
            tokio::task::spawn_blocking(move || load_guard(policy, &settings, &cache, &table))
        };
        match attempt(self.table()).await? {
            Err(error) if error.is_unknown_kind() => {
                if let Err(discovery) = self.refresh().await {
                    tracing::warn!(error = %discovery, "API discovery failed; kinds stay as last discovered");
                    return Err(error.into());
                }
                Ok(attempt(self.table()).await??)
            }
            loaded => Ok(loaded?),
        }
    }
}

/// Why [`ClusterKinds::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KindsLoadError {
    /// The load itself.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The blocking task did not finish.
    #[error("desired-state load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
