//! driftguard keeps a Kubernetes cluster equal to what Git declares.
//!
//! Data flows one way: `source -> render -> desired -> {admission, reconcile} -> audit`.
#![forbid(unsafe_code)]

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
