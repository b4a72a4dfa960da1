//! TEMP interface stand-in; replaced by wip/server at merge.
#![allow(missing_docs)]
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use crate::{admission::Admit, telemetry::Metrics};
pub struct ServerOptions { pub listen: SocketAddr, pub metrics_listen: Option<SocketAddr>, pub cert_file: PathBuf, pub key_file: PathBuf, pub reload_interval: Duration, pub max_body_bytes: usize, pub max_in_flight: usize, pub shutdown_grace: Duration }
#[derive(Debug, thiserror::Error)]
#[error("server")]
pub struct ServerError;
pub struct BoundServer;
impl BoundServer { pub fn https_addr(&self) -> SocketAddr { SocketAddr::from(([127,0,0,1],0)) } pub fn metrics_addr(&self) -> Option<SocketAddr> { None } pub async fn run(self, _s: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServerError> { Ok(()) } }
pub async fn bind(_o: ServerOptions, _a: Arc<dyn Admit>, _m: Arc<Metrics>) -> Result<BoundServer, ServerError> { Err(ServerError) }
pub async fn shutdown_signal() {}
