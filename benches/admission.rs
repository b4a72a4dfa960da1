//! Admission decision cost, in process: a ~23 KB compact UPDATE review (tests/fixtures/*-20kb.json) of a managed Deployment (deny
//! and revert), a scale, and an unmanaged object (DESIGN.md section 10 budgets).
//!
//! `cargo bench --bench admission`

use std::sync::Arc;

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftguard::admission::{Admission, AdmissionSettings, Admit, Webhook, service_account_username};
use driftguard::api::Mode;
use driftguard::audit::{AuditEvent, AuditSink};
use driftguard::desired::DesiredStore;
use serde_json::Value;

/// Drops events: the bench measures deciding, not writing.
struct Discard;
impl AuditSink for Discard {
    fn record(&self, _event: AuditEvent) {}
}

fn admission(mode: Mode) -> Admission {
    let spec = support::example_guard(mode);
    let store = Arc::new(DesiredStore::new());
    store.publish(vec![support::example_set(&spec)], true);
    Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: Default::default(),
        },
        Arc::new(Discard),
    )
}

fn bench(c: &mut Criterion) {
    let deny = admission(Mode::Deny);
    let revert = admission(Mode::Revert);
    let update = support::fixture("edit-image-20kb.json");
    let unmanaged_review = {
        let mut review: Value = serde_json::from_slice(&update).unwrap();
        review["request"]["name"] = "not-in-git".into();
        serde_json::to_vec(&review).unwrap()
    };
    let scale = support::fixture("scale-deployment.json");
    let restart = support::fixture("rollout-restart-20kb.json");

    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Bytes(update.len() as u64));
    group.bench_function("validate_20kb_update_denied", |b| {
        b.iter(|| assert_eq!(deny.admit(Webhook::Validate, &update).decision, "denied"))
    });
    group.bench_function("validate_20kb_update_allowed", |b| {
        b.iter(|| assert_eq!(deny.admit(Webhook::Validate, &restart).decision, "allowed"))
    });
    group.bench_function("mutate_20kb_update_reverted", |b| {
        b.iter(|| assert_eq!(revert.admit(Webhook::Mutate, &update).decision, "reverted"))
    });
    group.bench_function("validate_20kb_unmanaged", |b| {
        b.iter(|| assert_eq!(deny.admit(Webhook::Validate, &unmanaged_review).decision, "unmanaged"))
    });
    group.bench_function("validate_scale_denied", |b| {
        b.iter(|| assert_eq!(deny.admit(Webhook::Validate, &scale).decision, "denied"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
