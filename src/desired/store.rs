//! The live admission index, swapped atomically when desired state changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use super::{AdmissionIndex, Conflict, DesiredSet};

/// Holds the index every admission request reads, and readiness.
#[derive(Debug, Default)]
pub struct DesiredStore {
    index: ArcSwap<AdmissionIndex>,
    ready: AtomicBool,
}

impl DesiredStore {
    /// An empty, not yet ready store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current index (cheap: an atomic load).
    pub fn index(&self) -> Arc<AdmissionIndex> {
        self.index.load_full()
    }

    /// Borrow the current index without touching reference counts (the request hot path).
    pub fn with_index<R>(&self, f: impl FnOnce(&AdmissionIndex) -> R) -> R {
        let guard = self.index.load();
        f(&guard)
    }

    /// Replace the enforced sets. `complete` marks every Guard loaded, which makes the store
    /// ready; a store once ready stays ready (serving the last good state beats refusing).
    pub fn publish(&self, sets: Vec<Arc<DesiredSet>>, complete: bool) -> Vec<Conflict> {
        let (index, conflicts) = AdmissionIndex::build(sets);
        self.index.store(Arc::new(index));
        if complete {
            self.ready.store(true, Ordering::Release);
        }
        conflicts
    }

    /// True once every Guard's desired state has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
