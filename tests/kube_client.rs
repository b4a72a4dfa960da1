//! kube::Client, the client driftguard's enforcer uses, against the real kube-apiserver
//! (tests/support/cluster.rs): discovery, typed and dynamic reads, server-side apply (with
//! conflicts), identities (a second user through impersonation, allowed by real RBAC) and
//! watches.

mod support;

use std::time::Duration;

use driftguard::api::Mode;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Discovery;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::watcher;
use serde_json::json;
use support::cluster::{Cluster, KUBERNETES_VERSION};

const USER: &str = "alice@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_client_discovers_applies_conflicts_and_watches() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let driftguard = cluster.client().await;
    // A person at kubectl: the admin credentials impersonating alice, whom real RBAC allows to
    // edit in `default`.
    cluster.ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        &format!("--user={USER}"),
        "-n",
        "default",
    ]);
    let alice = {
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.auth_info.impersonate = Some(USER.to_owned());
        config.auth_info.impersonate_groups = Some(vec!["system:authenticated".to_owned()]);
        kube::Client::try_from(config).unwrap()
    };

    let version = driftguard.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, KUBERNETES_VERSION);
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "37"));

    let discovery = Discovery::new(driftguard.clone()).run().await.unwrap();
    let (deployments, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment is discoverable");
    assert_eq!(deployments.plural, "deployments");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(
        caps.subresources.iter().any(|(sub, _)| sub.plural == "scale"),
        "{caps:?}"
    );

    // Apply the example app the way the enforcer will: SSA, manager driftguard, force.
    let set = support::example_set(&support::example_guard(Mode::Deny));
    let apply = PatchParams::apply("driftguard").force();
    for object in &set.objects {
        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{gvk:?} discoverable"));
        let api: Api<DynamicObject> = match (&object.namespace, caps.scope) {
            (Some(ns), kube::discovery::Scope::Namespaced) => Api::namespaced_with(driftguard.clone(), ns, &resource),
            _ => Api::all_with(driftguard.clone(), &resource),
        };
        api.patch(&object.name, &apply, &Patch::Apply(&object.object))
            .await
            .unwrap();
    }

    let typed: Api<Deployment> = Api::namespaced(driftguard.clone(), "default");
    let web = typed.get("web").await.unwrap();
    let spec = web.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.revision_history_limit,
        Some(10),
        "server defaults are visible to typed clients"
    );
    let managers: Vec<_> = web
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("driftguard".into(), "Apply".into())),
        "{managers:?}"
    );

    // Another manager applying a field driftguard owns, without force, is a 409 naming it.
    let as_alice: Api<Deployment> = Api::namespaced(alice.clone(), "default");
    let conflict = as_alice
        .patch(
            "web",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}})),
        )
        .await
        .unwrap_err();
    match conflict {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert!(status.message.contains("driftguard"), "{}", status.message);
        }
        other => panic!("expected a 409, got {other:?}"),
    }

    // A watch on managed objects sees another manager's edit.
    let watched: Api<Deployment> = Api::namespaced(driftguard.clone(), "default");
    let mut events = watcher(watched, watcher::Config::default().labels("driftguard.io/managed=true")).boxed();
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    as_alice
        .patch("web", &edit, &Patch::Merge(json!({"spec": {"replicas": 7}})))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            let deployment = match event.unwrap() {
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => d,
                _ => continue,
            };
            if deployment.spec.as_ref().and_then(|s| s.replicas) == Some(7) {
                return deployment;
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("the watch delivers the edit");
    let editors: Vec<_> = seen
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(editors.contains(&"kubectl-edit".to_owned()), "{editors:?}");
    // alice's write reached the API server as alice, not as the admin credentials.
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review: SelfSubjectReview = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let whoami = Api::<SelfSubjectReview>::all(alice.clone())
        .create(&Default::default(), &review)
        .await
        .unwrap();
    let user = whoami.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(user.as_deref(), Some(USER));
    drop(cluster);
}
