//! Scope and plural come from the API: a cluster-scoped custom resource (a cert-manager
//! ClusterIssuer) whose CRD the cluster serves, but which Git declares without its CRD, is
//! keyed cluster-scoped through discovery, and `kubectl edit` / `kubectl delete` of it are
//! denied. Before, unknown kinds were guessed namespaced and such edits were allowed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use driftguard::admission::{Admission, AdmissionSettings, Admit, Webhook, service_account_username};
use driftguard::audit::MemorySink;
use driftguard::desired::{DesiredCache, DesiredStore, GuardId, GuardPolicy, SourceSettings};
use driftguard::reconcile::kinds::ClusterKinds;
use driftguard::source::GitReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::guards::{Driftguard, eventually};

/// A repository holding only the ClusterIssuer (its CRD is installed separately, as
/// cert-manager's chart does).
fn issuer_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layout = support::root().join("tests/fixtures/layouts/cluster-scoped-cr/issuers");
    std::fs::create_dir_all(dir.path().join("issuers")).unwrap();
    std::fs::copy(
        layout.join("letsencrypt.yaml"),
        dir.path().join("issuers/letsencrypt.yaml"),
    )
    .unwrap();
    support::git(dir.path(), &["init", "-q", "-b", "main"]);
    support::git(dir.path(), &["add", "-A"]);
    support::git(dir.path(), &["commit", "-q", "-m", "issuer"]);
    dir
}

fn review(operation: &str, object: Option<Value>, old: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0c6f4b9e-1111-4000-8000-000000000017",
            "kind": {"group": "cert-manager.io", "version": "v1", "kind": "ClusterIssuer"},
            "resource": {"group": "cert-manager.io", "version": "v1", "resource": "clusterissuers"},
            "name": "letsencrypt",
            "operation": operation,
            "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_custom_resource_is_keyed_by_discovery_and_its_edits_are_denied() {
    // The real API server; driftguard's service account (the chart's RBAC) discovers.
    let Driftguard {
        cluster: _cluster,
        admin,
        client,
    } = Driftguard::start().await;
    let crd_text =
        std::fs::read_to_string(support::root().join("tests/fixtures/layouts/cluster-scoped-cr/crd.yaml")).unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&crd_text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(admin);
    crds.create(&PostParams::default(), &crd).await.unwrap();
    // Discovery serves the kind once the CRD is in.
    eventually("discovery serves ClusterIssuer", Duration::from_secs(10), || async {
        kube::Discovery::new(client.clone())
            .run()
            .await
            .is_ok_and(|d| d.groups().any(|g| g.name() == "cert-manager.io"))
    })
    .await;

    let repo = issuer_repo();
    let spec = serde_json::from_value(json!({"sourceRef": {"name": "certs"}, "path": "issuers"})).unwrap();
    let id = GuardId {
        namespace: "default".into(),
        name: "certs".into(),
    };
    let policy = Arc::new(GuardPolicy::new(id, &spec, repo.path().to_str().unwrap()).unwrap());
    let settings = SourceSettings {
        id: "default/certs".into(),
        url: repo.path().to_str().unwrap().to_owned(),
        reference: GitReference::Branch("main".into()),
    };
    // Offline (no discovery, no CRD in the render): an error naming the kind, not a guess.
    let offline = driftguard::desired::load_guard(
        policy.clone(),
        &settings,
        &DesiredCache::new(1 << 20),
        &Default::default(),
    )
    .unwrap_err();
    assert!(offline.is_unknown_kind(), "{offline}");
    assert!(offline.to_string().contains("ClusterIssuer"), "{offline}");

    // Cluster mode: nothing discovered yet, so the unknown kind runs discovery and retries.
    let kinds = ClusterKinds::new(client.clone());
    let set = kinds.load(policy, settings, DesiredCache::new(1 << 20)).await.unwrap();
    let issuer = &set.objects[0];
    assert_eq!(issuer.kind, "ClusterIssuer");
    assert_eq!(issuer.namespace, None, "keyed cluster-scoped");
    assert_eq!(issuer.resource, "clusterissuers");
    assert!(
        issuer.value().unwrap().pointer("/metadata/namespace").is_none(),
        "no namespace is stamped on a cluster-scoped object"
    );

    let store = Arc::new(DesiredStore::new());
    store.publish(vec![set.clone()], true);
    let admission = Admission::new(
        store,
        AdmissionSettings {
            own_username: service_account_username("driftguard/driftguard"),
            hpa: Default::default(),
        },
        Arc::new(MemorySink::new()),
    );
    let live = issuer.value().unwrap();
    let mut edited = live.clone();
    edited["spec"]["acme"]["email"] = json!("mallory@example.com");

    let reply = admission.admit(Webhook::Validate, &review("DELETE", None, live.clone()));
    assert_eq!(reply.decision, "denied", "{}", String::from_utf8_lossy(&reply.body));
    let reply = admission.admit(Webhook::Validate, &review("UPDATE", Some(edited), live.clone()));
    assert_eq!(reply.decision, "denied", "{}", String::from_utf8_lossy(&reply.body));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let message = body["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.acme.email"), "{message}");
    // The same request keyed as namespaced (what the old guess did) finds nothing managed.
    let mut namespaced: Value = serde_json::from_slice(&review("DELETE", None, live)).unwrap();
    namespaced["request"]["namespace"] = json!("default");
    let reply = admission.admit(Webhook::Validate, &serde_json::to_vec(&namespaced).unwrap());
    assert_ne!(reply.decision, "denied");
}
