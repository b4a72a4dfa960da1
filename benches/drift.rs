//! Micro-benchmarks of the pure pieces of an admission decision (issue 9; DESIGN.md sections 3
//! and 10):
//!
//! - `drift/detect_*`: [`driftguard::drift::detect`] on parsed values (JSON parsing excluded;
//!   `drift/parse_20kb_object_and_old` shows what parsing the two embedded objects costs, for
//!   scale). Small object: the workload's Secret (`team-0/app-0-credentials`) against the
//!   captured `kubectl edit` of a Secret (tests/fixtures/edit-secret.json) re-addressed to it.
//!   Large object: the ~20 KB Deployment of tests/fixtures/edit-image-20kb.json (drifts: image)
//!   and tests/fixtures/rollout-restart-20kb.json (no drift: an undeclared annotation) against
//!   their desired object, examples/app's `web` Deployment.
//! - `drift/revert_patch_20kb`: [`driftguard::drift::revert_patch`] for the 20 KB drifting
//!   Deployment (drifts detected once, outside the loop).
//! - `index/*`: the admission lookup by (group, resource, namespace, name), the key
//!   `admission::decide` uses, through [`DesiredStore::with_index`] (the request hot path) on a
//!   store holding `workload::desired_set(2_500)`: 2,500 apps x 4 objects (Deployment,
//!   ConfigMap, Secret, Service) = 10,000 objects. A hit (managed Deployment) and two misses
//!   (unmanaged name in a managed namespace; unmanaged namespace).
//!
//! `cargo bench --bench drift`
//! (add `-- --quick` for a fast, rougher run)

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use driftguard::api::Mode;
use driftguard::desired::{DesiredObject, DesiredSet, DesiredStore};
use driftguard::drift::{detect, revert_patch};
use serde_json::Value;
use support::workload;

/// Apps in the index benchmark: 4 objects each, so 10,000 objects.
const INDEX_APPS: usize = 2_500;

/// `object` and `oldObject` of a captured review, parsed.
fn review_objects(fixture: &str) -> (Value, Value) {
    let review: Value = serde_json::from_slice(&support::fixture(fixture)).unwrap();
    let request = &review["request"];
    (request["object"].clone(), request["oldObject"].clone())
}

/// `object` and `oldObject` of a captured review, as the raw JSON text admission receives.
fn review_raw(fixture: &str) -> (String, String) {
    let (new, old) = review_objects(fixture);
    (
        serde_json::to_string(&new).unwrap(),
        serde_json::to_string(&old).unwrap(),
    )
}

fn find<'a>(set: &'a DesiredSet, kind: &str, name: &str) -> &'a DesiredObject {
    set.objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} not in the desired set"))
}

/// Point a live object at `desired`'s identity and owning Guard, as a live copy of it would be.
fn readdress(live: &mut Value, desired: &DesiredObject) {
    let metadata = &mut live["metadata"];
    metadata["name"] = desired.name.clone().into();
    metadata["namespace"] = desired.namespace.clone().into();
    metadata["annotations"] = desired.value().unwrap()["metadata"]["annotations"].clone();
}

fn bench_drift(c: &mut Criterion) {
    // Small: the workload's Secret and a captured edit of its data.
    let workload_set = workload::desired_set(1, Mode::Deny);
    let secret = find(&workload_set, "Secret", "app-0-credentials");
    let (mut secret_new, mut secret_old) = review_objects("edit-secret.json");
    readdress(&mut secret_new, secret);
    readdress(&mut secret_old, secret);
    let mut secret_same = secret_old.clone();
    secret_same["metadata"]["labels"]["team"] = "payments".into();

    // Large: the ~20 KB Deployment reviews against examples/app's `web`.
    let example_set = support::example_set(&support::example_guard(Mode::Deny));
    let web = find(&example_set, "Deployment", "web");
    let (image_new, image_old) = review_objects("edit-image-20kb.json");
    let (restart_new, restart_old) = review_objects("rollout-restart-20kb.json");
    let (raw_new, raw_old) = review_raw("edit-image-20kb.json");
    // Desired objects are stored as JSON text; admission parses the one it needs per request.
    let (secret_tree, web_tree) = (secret.value().unwrap(), web.value().unwrap());

    // The cases are what their names say, or the figures mean nothing.
    let secret_drifts = detect(&secret_tree, Some(&secret_old), &secret_new, &secret.ignore);
    assert_eq!(secret_drifts.len(), 1, "{secret_drifts:?}");
    assert!(detect(&secret_tree, Some(&secret_old), &secret_same, &secret.ignore).is_empty());
    let image_drifts = detect(&web_tree, Some(&image_old), &image_new, &web.ignore);
    assert_eq!(image_drifts.len(), 1, "{image_drifts:?}");
    assert!(detect(&web_tree, Some(&restart_old), &restart_new, &web.ignore).is_empty());
    let patch = revert_patch(&image_new, &web_tree, &image_drifts);
    assert_eq!(patch.0.len(), 1);

    let mut group = c.benchmark_group("drift");
    group.bench_function("detect_small_secret_drift", |b| {
        b.iter(|| {
            detect(
                black_box(&secret_tree),
                Some(black_box(&secret_old)),
                black_box(&secret_new),
                &secret.ignore,
            )
        })
    });
    group.bench_function("detect_small_secret_no_drift", |b| {
        b.iter(|| {
            detect(
                black_box(&secret_tree),
                Some(black_box(&secret_old)),
                black_box(&secret_same),
                &secret.ignore,
            )
        })
    });
    group.bench_function("detect_20kb_deployment_drift", |b| {
        b.iter(|| {
            detect(
                black_box(&web_tree),
                Some(black_box(&image_old)),
                black_box(&image_new),
                &web.ignore,
            )
        })
    });
    group.bench_function("detect_20kb_deployment_no_drift", |b| {
        b.iter(|| {
            detect(
                black_box(&web_tree),
                Some(black_box(&restart_old)),
                black_box(&restart_new),
                &web.ignore,
            )
        })
    });
    group.bench_function("revert_patch_20kb", |b| {
        b.iter(|| revert_patch(black_box(&image_new), black_box(&web_tree), black_box(&image_drifts)))
    });
    group.bench_function("parse_desired_deployment", |b| {
        b.iter(|| black_box(web).value().unwrap())
    });
    // For scale only: what admission pays to get the two values `detect` compares.
    group.bench_function("parse_20kb_object_and_old", |b| {
        b.iter(|| {
            let new: Value = serde_json::from_str(black_box(&raw_new)).unwrap();
            let old: Value = serde_json::from_str(black_box(&raw_old)).unwrap();
            (new, old)
        })
    });
    group.finish();
}

fn bench_index(c: &mut Criterion) {
    let set = workload::desired_set(INDEX_APPS, Mode::Deny);
    assert_eq!(set.objects.len(), INDEX_APPS * 4);
    let store = DesiredStore::new();
    store.publish(vec![set], true);
    assert_eq!(store.index().len(), INDEX_APPS * 4);

    let (namespace, name) = workload::app(1_234);
    let lookup = |group: &str, resource: &str, namespace: &str, name: &str| {
        store.with_index(|index| {
            index
                .lookup(
                    black_box(group),
                    black_box(resource),
                    black_box(Some(namespace)),
                    black_box(name),
                )
                .is_some()
        })
    };
    assert!(lookup("apps", "deployments", &namespace, &name));
    assert!(!lookup("apps", "deployments", &namespace, "unmanaged-1234"));
    assert!(!lookup("apps", "deployments", "kube-system", &name));

    let mut group = c.benchmark_group("index");
    group.bench_function("lookup_10k_hit", |b| {
        b.iter(|| assert!(lookup("apps", "deployments", &namespace, &name)))
    });
    group.bench_function("lookup_10k_miss_name", |b| {
        b.iter(|| assert!(!lookup("apps", "deployments", &namespace, "unmanaged-1234")))
    });
    group.bench_function("lookup_10k_miss_namespace", |b| {
        b.iter(|| assert!(!lookup("apps", "deployments", "kube-system", &name)))
    });
    group.finish();
}

criterion_group!(benches, bench_drift, bench_index);
criterion_main!(benches);
