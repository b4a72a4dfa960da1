//! Enforcement (DESIGN.md section 6): make the cluster equal to Git.
//!
//! [`plan()`] is pure: desired objects + the Guard's inventory + a live snapshot + cluster
//! facts -> the ordered apply list, the prune list, and what was skipped or has to wait. The
//! effectful apply/prune/self-heal loops execute a [`Plan`] and feed their results back through
//! [`next_inventory`]. Only the holder of the Lease ([`leader`]) writes.

pub mod access;
pub mod admission_events;
pub mod apply;
pub mod controller;
pub mod delegation;
pub mod diff;
pub mod events;
pub mod heal;
mod inventory;
pub mod kinds;
pub mod leader;
mod order;
mod plan;
pub mod replica;
pub mod run;
pub mod selfheal;
pub mod source;
pub mod tenancy;

#[cfg(test)]
mod tests;

pub use inventory::{GroupKind, InventoryEntry, LiveObject, LiveSnapshot, ObjectKey};
pub use order::Tier;
pub use plan::{
    Applied, ApplyReason, ApplyStep, PRUNE_ANNOTATION, PRUNE_DISABLED, Plan, PlanFacts, PruneReason, PruneStep,
    SkipReason, WaitReason, next_inventory, plan,
};
