//! Full reconcile of 1,000 objects against the test API server (tests/support/apiserver) with a
//! real kube::Client over HTTPS: first sync (all created), a no-op sync (all unchanged), and a
//! sync after 10% of the objects drifted. Prints wall-clock times.
//!
//! `cargo bench --bench reconcile`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftguard::api::{GuardSpec, Mode, PruneSpec};
use driftguard::desired::{DesiredSet, GuardId, GuardPolicy};
use driftguard::reconcile::InventoryEntry;
use driftguard::reconcile::apply::Applier;
use driftguard::render::{Manifest, Origin};
use driftguard::source::Revision;
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

const OBJECTS: usize = 1_000;

fn desired() -> DesiredSet {
    let spec: GuardSpec = support::example_guard(Mode::Deny);
    let id = GuardId {
        namespace: "default".into(),
        name: "bench".into(),
    };
    let policy = Arc::new(GuardPolicy::new(id, &spec, "bench").unwrap());
    let manifests = (0..OBJECTS)
        .map(|i| {
            let object = if i % 2 == 0 {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")},
                       "data": {"key": format!("value-{i}"), "other": "x".repeat(200)}})
            } else {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("app-{i}"), "labels": {"app": format!("app-{i}")}},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                                "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                                             "spec": {"containers": [{"name": "main", "image": "nginx:1.27.3",
                                                                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
            };
            Manifest {
                object,
                origin: Origin {
                    file: format!("apps/{i}.yaml"),
                    line: 1,
                    document: None,
                },
                fields: Default::default(),
            }
        })
        .collect();
    let revision = Revision {
        commit: "0".repeat(40),
        reference: "main".into(),
    };
    DesiredSet::build(policy, revision, manifests).unwrap()
}

async fn sync(applier: &Applier, set: &DesiredSet, inventory: &mut Vec<InventoryEntry>) -> (Duration, usize) {
    let started = Instant::now();
    let sync = applier
        .sync(&set.objects, inventory, &set.guard.id, &PruneSpec::default())
        .await;
    assert!(
        sync.outcome.apply_failed.is_empty(),
        "{:?}",
        sync.outcome.apply_failed.first()
    );
    *inventory = sync.inventory;
    (started.elapsed(), sync.outcome.applied.len())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
        let applier = Applier::new(client.clone(), Duration::from_secs(30)).await.unwrap();
        let set = desired();
        let mut inventory = Vec::new();

        let (first, applied) = sync(&applier, &set, &mut inventory).await;
        assert_eq!(applied, OBJECTS);
        println!("first sync of {OBJECTS} objects (all created): {first:?}");

        let (noop, applied) = sync(&applier, &set, &mut inventory).await;
        assert_eq!(applied, 0);
        println!("no-op sync of {OBJECTS} objects (all unchanged): {noop:?}");

        let admin = support::kube_client(&api, Identity::Admin, dir.path()).await;
        let config_maps: Api<DynamicObject> = Api::namespaced_with(
            admin,
            "default",
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        for i in (0..OBJECTS).step_by(20) {
            let patch = json!({"data": {"key": "drifted"}});
            config_maps
                .patch(&format!("cm-{}", i), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        let (drifted, applied) = sync(&applier, &set, &mut inventory).await;
        assert_eq!(applied, OBJECTS / 20);
        println!("sync after {} of {OBJECTS} objects drifted: {drifted:?}", OBJECTS / 20);
        api.stop().await;
    });
}
