//! driftguard keeps a Kubernetes cluster equal to what Git declares.
//!
//! Data flows one way: `source -> render -> desired -> {admission, reconcile} -> audit`.
// `deny`, not `forbid`: source::fetch sets libgit2's process-wide options once (one audited
// `#[allow(unsafe_code)]` function); nothing else may use unsafe code.
#![deny(unsafe_code)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod certs;
pub mod config;
pub mod desired;
pub mod drift;
pub mod receiver;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod server;
pub mod source;
pub mod telemetry;
