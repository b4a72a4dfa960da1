//! The enforcer's plan executed against the test API server with a real kube::Client: the first
//! sync creates everything in dependency order and fills the inventory, an unchanged cluster
//! is left alone, what Git removed is pruned (a failed delete stays in the inventory and is
//! retried), and `driftguard.io/prune: disabled` survives. A CRD and its custom resources in
//! one desired set are created by one sync; a CRD that is not Established within the
//! Applier's bound leaves its resources waiting for the next sync.

mod support;

use std::time::Duration;

use std::sync::Arc;

use driftguard::api::{Mode, PruneSpec};
use driftguard::desired::{DesiredObject, DesiredSet, GuardId, GuardPolicy};
use driftguard::reconcile::apply::{Applier, RetryPolicy};
use driftguard::reconcile::{InventoryEntry, SkipReason, WaitReason};
use driftguard::render::render_plain;
use driftguard::source::{Revision, SourceFile};
use driftguard_testapi::faults::{Failure, Verb};
use driftguard_testapi::{Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
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
    let quick = RetryPolicy {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        ..RetryPolicy::default()
    };
    let applier = Applier::new(client.clone(), Duration::from_secs(10))
        .await
        .unwrap()
        .with_retry(quick);
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
    // The delete keeps failing, past the in-pass retries: the ConfigMap stays in the inventory.
    api.faults()
        .fail(Verb::Delete, "configmaps", Failure::internal_error(), None);
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

    // The next sync's delete succeeds; the Service is left alone and leaves the inventory.
    api.faults().clear();
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

/// A CRD (`widgets.example.com`, namespaced kind `Widget`, serving `v1`) and two Widgets (the
/// second of `apiVersion: example.com/<right_version>`), as one Guard's desired set.
fn widgets_set(right_version: &str) -> Arc<DesiredSet> {
    let yaml = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    listKind: WidgetList
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: left
  namespace: default
spec:
  size: 3
---
apiVersion: example.com/RIGHT_VERSION
kind: Widget
metadata:
  name: right
  namespace: default
spec:
  size: 5
"#
    .replace("RIGHT_VERSION", right_version);
    let files = [SourceFile {
        path: "widgets/all.yaml".to_owned(),
        content: yaml.into_bytes(),
    }];
    let id = GuardId {
        namespace: "default".into(),
        name: "widgets".into(),
    };
    let spec = support::example_guard(Mode::Deny);
    let policy = Arc::new(GuardPolicy::new(id, &spec, "https://git.example.com/platform.git").unwrap());
    let revision = Revision {
        commit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        reference: "main@sha1:4b825dc642cb".into(),
    };
    Arc::new(DesiredSet::build(policy, revision, render_plain(&files).unwrap()).unwrap())
}

fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    Api::namespaced_with(client.clone(), "default", &resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_creates_a_crd_and_its_custom_resources() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let applier = Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap();
    let set = widgets_set("v1");

    // The test API server establishes a CRD at once; the first reads of it fail here instead
    // (the snapshot's and two polls), so the sync has to keep polling, then apply the Widgets.
    api.faults().fail(
        Verb::Get,
        "customresourcedefinitions",
        Failure::internal_error(),
        Some(3),
    );
    let sync = applier
        .sync(&set.objects, &[], &set.guard.id, &PruneSpec::default())
        .await;
    assert_eq!(api.faults().injected(), 3);
    assert!(sync.outcome.apply_failed.is_empty(), "{:?}", sync.outcome.apply_failed);
    assert!(sync.waiting.is_empty(), "{:?}", sync.waiting);
    let applied: Vec<String> = sync.outcome.applied.iter().map(|a| a.key.to_string()).collect();
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(
        applied[0].contains("CustomResourceDefinition"),
        "the CRD first: {applied:?}"
    );
    assert_eq!(sync.inventory.len(), 3);
    assert!(sync.inventory.iter().all(|e| e.uid.is_some()), "{:?}", sync.inventory);
    let left = widgets(&client).get("left").await.unwrap();
    assert_eq!(left.data["spec"]["size"], 3);
    assert_eq!(left.metadata.labels.unwrap()["driftguard.io/managed"], "true");

    // The next sync finds everything in place.
    let again = applier
        .sync(&set.objects, &sync.inventory, &set.guard.id, &PruneSpec::default())
        .await;
    assert!(again.outcome.applied.is_empty(), "{:?}", again.outcome.applied);
    assert_eq!(
        again
            .skipped
            .iter()
            .filter(|(_, why)| *why == SkipReason::Unchanged)
            .count(),
        3
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_wait_when_their_crd_is_not_established_in_time() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let applier = Applier::new(client.clone(), Duration::from_secs(10))
        .await
        .unwrap()
        .with_crd_wait(Duration::from_millis(600));
    let set = widgets_set("v1");

    // Reading CRDs fails, so the applier never sees the new one Established.
    api.faults()
        .fail(Verb::Get, "customresourcedefinitions", Failure::internal_error(), None);
    let sync = applier
        .sync(&set.objects, &[], &set.guard.id, &PruneSpec::default())
        .await;
    assert!(sync.outcome.apply_failed.is_empty(), "{:?}", sync.outcome.apply_failed);
    assert_eq!(
        sync.outcome.applied.len(),
        1,
        "only the CRD: {:?}",
        sync.outcome.applied
    );
    let waiting: Vec<(String, WaitReason)> = sync.waiting.iter().map(|(k, w)| (k.name.clone(), w.clone())).collect();
    let reason = WaitReason::CrdNotEstablished {
        crd: "widgets.example.com".to_owned(),
    };
    assert_eq!(
        waiting,
        [("left".to_owned(), reason.clone()), ("right".to_owned(), reason)]
    );
    assert_eq!(sync.inventory.len(), 3, "waiting objects stay in the inventory");
    assert!(widgets(&client).get_opt("left").await.unwrap().is_none());

    // Once the CRD reads Established, the next sync applies what waited.
    api.faults().clear();
    let next = applier
        .sync(&set.objects, &sync.inventory, &set.guard.id, &PruneSpec::default())
        .await;
    assert!(next.waiting.is_empty(), "{:?}", next.waiting);
    assert_eq!(next.outcome.applied.len(), 2, "{:?}", next.outcome.applied);
    assert!(widgets(&client).get_opt("right").await.unwrap().is_some());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_new_crd_does_not_serve_fails_without_waiting() {
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    // A wait far longer than the test may take: the sync must not spend it.
    let applier = Applier::new(client.clone(), Duration::from_secs(10))
        .await
        .unwrap()
        .with_crd_wait(Duration::from_secs(600));
    let set = widgets_set("v2");

    let sync = tokio::time::timeout(
        Duration::from_secs(60),
        applier.sync(&set.objects, &[], &set.guard.id, &PruneSpec::default()),
    )
    .await
    .expect("the sync does not wait for a version the CRD does not define");
    assert!(sync.waiting.is_empty(), "{:?}", sync.waiting);
    assert_eq!(
        sync.outcome.applied.len(),
        2,
        "the CRD and left: {:?}",
        sync.outcome.applied
    );
    let failed: Vec<(&str, &str)> = sync
        .outcome
        .apply_failed
        .iter()
        .map(|f| (f.key.name.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "right");
    assert!(
        failed[0].1.contains("does not serve Widget in example.com/v2"),
        "{failed:?}"
    );
    api.stop().await;
}
