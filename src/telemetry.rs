//! TEMP interface stand-in; replaced by wip/server at merge.
#![allow(missing_docs)]
pub struct Metrics;
impl Default for Metrics { fn default() -> Self { Metrics } }
impl Metrics {
    pub fn new() -> Self { Metrics }
    pub fn set_desired_objects(&self, _g: &str, _n: u64) {}
}
pub fn init_tracing() {}
