//! The live admission index, swapped atomically when desired state changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::{AdmissionIndex, Conflict, DesiredSet};

/// Holds the index every admission request reads, and readiness.
#[derive(Debug, Default)]
pub struct DesiredStore {
    index: ArcSwap<AdmissionIndex>,
    ready: AtomicBool,
    /// The sets behind `index`, to skip rebuilding it for the very same sets.
    published: Mutex<Vec<Arc<DesiredSet>>>,
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
        {
            let mut published = self.published.lock().unwrap_or_else(PoisonError::into_inner);
            let same = published.len() == sets.len() && published.iter().zip(&sets).all(|(a, b)| Arc::ptr_eq(a, b));
            if same && (!complete || self.is_ready()) {
                return Vec::new(); // nothing new: the index (and its conflicts, logged once) stand
            }
            published.clone_from(&sets);
        }
        let (index, conflicts) = AdmissionIndex::build(sets);
        self.index.store(Arc::new(index));
        if complete {
            self.ready.store(true, Ordering::Release);
        }
        conflicts
    }

    /// [`DesiredStore::publish`], then report: the per-Guard object gauge, and an error log
    /// line for each object two Guards declare.
    pub fn publish_reporting(&self, sets: Vec<Arc<DesiredSet>>, complete: bool, metrics: &crate::telemetry::Metrics) {
        for set in &sets {
            metrics.set_desired_objects(&set.guard.id.to_string(), set.objects.len() as u64);
        }
        for conflict in self.publish(sets, complete) {
            tracing::error!(object = %conflict.object, kept_by = %conflict.kept_by, ignored_in = %conflict.ignored_in, "two guards declare the same object");
        }
    }

    /// True once every Guard's desired state has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
