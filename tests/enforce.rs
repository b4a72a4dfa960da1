//! The enforcer's plan executed against the test API server with a real kube::Client: the first
//! sync creates everything in dependency order and fills the inventory, an unchanged cluster
//! is left alone, what Git removed is pruned (a failed delete stays in the inventory and is
//! retried), and `driftguard.io/prune: disabled` survives.

mod support;

use std::time::Duration;

use driftguard::api::{Mode, PruneSpec};
use driftguard::desired::{DesiredObject, GuardId};
use driftguard::reconcile::apply::Applier;
use driftguard::reconcile::{InventoryEntry, SkipReason};
use driftguard_testapi::faults::{Failure, Verb};
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

struct Round {
    applied: usize,
    pruned: usize,
    prune_failed: usize,
    skipped: Vec<SkipReason>,
}

async fn reconcile(
    applier: &Applier,
    desired: &[DesiredObject],
    inventory: &mut Vec<InventoryEntry>,
    guard: &GuardId,
) -> Round {
    let sync = applier.sync(desired, inventory, guard, &PruneSpec::default()).await;
    assert!(sync.outcome.apply_failed.is_empty(), "{:?}", sync.outcome.apply_failed);
    *inventory = sync.inventory;
    Round {
        applied: sync.outcome.applied.len(),
        pruned: sync.outcome.pruned.len(),
        prune_failed: sync.outcome.prune_failed.len(),
        skipped: sync.skipped.into_iter().map(|(_, why)| why).collect(),
    }
}

fn names(inventory: &[InventoryEntry]) -> Vec<String> {
    inventory.iter().map(|e| format!("{}/{}", e.kind, e.name)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_orders_applies_skips_unchanged_and_prunes_with_retry() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let applier = Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap();
    let set = support::example_set(&support::example_guard(Mode::Deny));
    let guard = set.guard.id.clone();
    let mut inventory = Vec::new();

    // First sync: everything created, the Namespace before namespaced objects.
    let first = reconcile(&applier, &set.objects, &mut inventory, &guard).await;
    assert_eq!(first.applied, 5);
    assert_eq!(inventory.len(), 5);
    assert!(inventory.iter().all(|e| e.uid.is_some()), "{inventory:?}");
    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    assert!(
        patches[0].ends_with("/namespaces/web-team"),
        "Namespace first: {patches:?}"
    );

    // Nothing changed: nothing written.
    let writes_before = api.requests().iter().filter(|r| r.method != "GET").count();
    let second = reconcile(&applier, &set.objects, &mut inventory, &guard).await;
    assert_eq!(second.applied, 0, "unchanged objects are not rewritten");
    assert_eq!(
        second.skipped.iter().filter(|s| **s == SkipReason::Unchanged).count(),
        5
    );
    assert_eq!(
        api.requests().iter().filter(|r| r.method != "GET").count(),
        writes_before
    );

    // Git removes the ConfigMap and the Service; the Service opts out of pruning.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"driftguard.io/prune": "disabled"}}})),
        )
        .await
        .unwrap();
    let remaining: Vec<DesiredObject> = set
        .objects
        .iter()
        .filter(|o| !(o.kind == "ConfigMap" || o.kind == "Service"))
        .cloned()
        .collect();
    // The first delete fails: the ConfigMap stays in the inventory.
    api.faults()
        .fail(Verb::Delete, "configmaps", Failure::internal_error(), Some(1));
    let third = reconcile(&applier, &remaining, &mut inventory, &guard).await;
    assert_eq!((third.pruned, third.prune_failed), (0, 1));
    assert!(
        third.skipped.contains(&SkipReason::PruneDisabledByAnnotation),
        "{:?}",
        third.skipped
    );
    assert!(
        names(&inventory).contains(&"ConfigMap/web-config".to_owned()),
        "{inventory:?}"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(config_maps.get_opt("web-config").await.unwrap().is_some());

    // The retry succeeds; the Service is left alone and leaves the inventory.
    let fourth = reconcile(&applier, &remaining, &mut inventory, &guard).await;
    assert_eq!((fourth.pruned, fourth.prune_failed), (1, 0));
    assert!(config_maps.get_opt("web-config").await.unwrap().is_none());
    assert!(services.get_opt("web").await.unwrap().is_some());
    let left = names(&inventory);
    assert!(
        !left.contains(&"ConfigMap/web-config".to_owned()) && !left.contains(&"Service/web".to_owned()),
        "{left:?}"
    );
    assert_eq!(inventory.len(), 3);
    api.stop().await;
}
