//! Desired sets by (guard, commit, spec fingerprint), bounded by their approximate size in bytes.

use std::sync::Arc;

use super::{DesiredSet, GuardId, GuardPolicy};

/// A moka cache of [`DesiredSet`]s weighed in bytes, so a big repository cannot grow memory
/// without bound while old revisions are still referenced.
#[derive(Clone)]
pub struct DesiredCache {
    inner: moka::sync::Cache<(GuardId, String, u64), Arc<DesiredSet>>,
}

impl DesiredCache {
    /// A cache holding at most about `max_bytes` of desired state.
    pub fn new(max_bytes: u64) -> Self {
        DesiredCache {
            inner: moka::sync::Cache::builder()
                .weigher(|_key, set: &Arc<DesiredSet>| set.weight())
                .max_capacity(max_bytes)
                .build(),
        }
    }

    /// The set for (guard as `policy` declares it, commit), building it on a miss. Concurrent
    /// misses build once.
    pub fn get_or_try_build<E, F>(
        &self,
        policy: &GuardPolicy,
        commit: &str,
        build: F,
    ) -> Result<Arc<DesiredSet>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Result<Arc<DesiredSet>, E>,
    {
        let key = (policy.id.clone(), commit.to_owned(), policy.fingerprint());
        self.inner.try_get_with(key, build)
    }

    /// Number of cached sets (after pending maintenance).
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
