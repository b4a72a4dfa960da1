//! The enforcer under Kubernetes API faults (issue 10), with the test API server's fault
//! injection and a client without kube's own retry layer: 409 and 429 storms during apply are
//! absorbed within the pass, a long storm is reported and recovers, 500s during prune keep the
//! object managed until it is deleted, self-heal survives dropped watches, a 1.5 MiB object is
//! applied and healed without being echoed, and 100 Guards created at once are each applied
//! exactly once.

mod support;

use std::time::Duration;

use driftguard::api::{Guard, GuardStatus};
use driftguard::audit::EventKind;
use driftguard_testapi::faults::{Failure, Verb};
use driftguard_testapi::{ApiError, Identity, ServerOptions, TestApiServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;
use support::guards::imitation::{Installed, enforcer_client, installed, patches_of};
use support::guards::{Enforcer, condition, eventually, metric};

const WEB: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const WEB_CONFIG: &str = "/api/v1/namespaces/default/configmaps/web-config";

/// The example app's objects, as the inventory names them.
const EXAMPLE_INVENTORY: [&str; 5] = [
    "ConfigMap/web-config",
    "Deployment/web",
    "Namespace/web-team",
    "Secret/web-credentials",
    "Service/web",
];

fn inventory(status: &GuardStatus) -> Vec<String> {
    let mut names: Vec<String> = status
        .inventory
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    names.sort();
    names
}

/// Warning Events in `default` with `reason` about the object `name`, their notes.
async fn warnings(client: &kube::Client, reason: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// The example Guard installed, and an enforcer (`self_heal` or not) on a client without
/// kube's retry layer.
async fn setup(self_heal: bool) -> (Installed, Enforcer) {
    let installed = installed(json!({"interval": "1h"})).await;
    let client = enforcer_client(&installed.api, installed.dir.path()).await;
    let enforcer = Enforcer::new(&client, self_heal).await;
    (installed, enforcer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_storm_during_apply_is_absorbed_within_the_pass() {
    let (
        Installed {
            api,
            dir: _dir,
            client,
            repo: _repo,
            commit,
            guards,
        },
        enforcer,
    ) = setup(false).await;
    api.faults()
        .fail(Verb::Patch, "deployments", Failure::conflict(), Some(3));

    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    let (ready, reason, _) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Applied"));
    assert_eq!(status.last_applied_revision.as_deref(), Some(commit.as_str()));
    assert_eq!(inventory(&status), EXAMPLE_INVENTORY);
    assert!(
        status.inventory.iter().all(|e| e.uid.is_some()),
        "{:?}",
        status.inventory
    );
    assert_eq!(api.faults().injected(), 3);
    assert_eq!(patches_of(&api, WEB), 4, "three conflicts, then the write");

    // The Deployment equals Git.
    let web = Api::<Deployment>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let spec = web.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let containers = spec.template.spec.unwrap().containers;
    assert_eq!(containers[0].image.as_deref(), Some("nginx:1.27.3"));
    assert_eq!(web.metadata.labels.unwrap()["driftguard.io/managed"], "true");

    // Metrics: one write retried three times, the other four at once; nothing failed.
    let m = |series: &str| enforcer.metric(series);
    assert_eq!(
        m(r#"driftguard_api_writes_total{verb="apply",result="retried"}"#),
        Some(1.0)
    );
    assert_eq!(m(r#"driftguard_api_writes_total{verb="apply",result="ok"}"#), Some(4.0));
    assert_eq!(m(r#"driftguard_api_writes_total{verb="apply",result="failed"}"#), None);
    assert_eq!(
        m(r#"driftguard_api_write_retries_total{verb="apply",reason="conflict"}"#),
        Some(3.0)
    );
    let applied = enforcer.records(EventKind::ReconcileApplied);
    assert_eq!(applied.len(), 5, "{applied:?}");
    assert!(warnings(&client, "ApplyFailed", "web").await.is_empty());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_during_apply_waits_as_the_server_asks() {
    let (
        Installed {
            api,
            dir: _dir,
            repo: _repo,
            guards,
            ..
        },
        enforcer,
    ) = setup(false).await;
    // kube-apiserver's 429: the Retry-After header, mirrored in the Status details.
    let mut throttled = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
    throttled.details = Some(json!({"retryAfterSeconds": 1}));
    let failure = Failure {
        error: throttled,
        retry_after: Some(1),
    };
    api.faults().fail(Verb::Patch, "configmaps", failure, Some(2));

    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    assert_eq!(condition(&status, "Ready").unwrap().0, "True");
    assert_eq!(inventory(&status), EXAMPLE_INVENTORY);
    assert_eq!(api.faults().injected(), 2);

    // The retries happened in place, before the next object was written: the ConfigMap's
    // three PATCHes are consecutive in the request log.
    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    let first = patches.iter().position(|p| p == WEB_CONFIG).unwrap();
    assert_eq!(
        patches[first..first + 3],
        [WEB_CONFIG, WEB_CONFIG, WEB_CONFIG],
        "{patches:#?}"
    );
    assert_eq!(patches_of(&api, WEB_CONFIG), 3);
    // Each retry waited the second the server asked for (not the ~100 ms backoff).
    assert_eq!(
        enforcer.metric(r#"driftguard_api_write_retry_wait_seconds_total{verb="apply"}"#),
        Some(2.0)
    );
    assert_eq!(
        enforcer.metric(r#"driftguard_api_write_retries_total{verb="apply",reason="too_many_requests"}"#),
        Some(2.0)
    );
    assert_eq!(
        enforcer.metric(r#"driftguard_api_writes_total{verb="apply",result="retried"}"#),
        Some(1.0)
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_storm_is_reported_keeps_the_inventory_and_recovers() {
    let (
        Installed {
            api,
            dir: _dir,
            client,
            repo,
            commit: first_commit,
            guards,
        },
        enforcer,
    ) = setup(false).await;
    let first = support::guards::reconcile(&guards, &enforcer.ctx).await;
    assert_eq!(inventory(&first), EXAMPLE_INVENTORY);

    // Git moves to four replicas while every PATCH of a Deployment conflicts.
    let deployment = repo.path().join("examples/app/deployment.yaml");
    let text = std::fs::read_to_string(&deployment).unwrap();
    std::fs::write(&deployment, text.replace("replicas: 3", "replicas: 4")).unwrap();
    support::git(repo.path(), &["commit", "-qam", "four replicas"]);
    let second_commit = support::git(repo.path(), &["rev-parse", "HEAD"]);
    api.faults().fail(Verb::Patch, "deployments", Failure::conflict(), None);

    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    let (ready, reason, message) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "ApplyFailed"));
    assert!(
        message.contains("Deployment.apps default/web") && message.contains("gave up after 6 attempts"),
        "{message}"
    );
    assert_eq!(status.inventory, first.inventory, "nothing managed is forgotten");
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(first_commit.as_str()),
        "the previously applied revision stays"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(3));
    assert_eq!(api.faults().injected(), 6, "the default policy's six attempts");
    let m = |series: &str| enforcer.metric(series);
    assert_eq!(
        m(r#"driftguard_api_writes_total{verb="apply",result="failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"driftguard_api_write_retries_total{verb="apply",reason="conflict"}"#),
        Some(5.0)
    );
    let notes = warnings(&client, "ApplyFailed", "web").await;
    assert!(
        notes.len() == 1 && notes[0].contains("Conflict"),
        "a Warning Event on the Deployment: {notes:?}"
    );
    assert_eq!(warnings(&client, "SyncFailed", "example-app").await.len(), 1);
    // Nothing was applied this pass: the Deployment's apply is not audited as done.
    assert_eq!(enforcer.records(EventKind::ReconcileApplied).len(), 5);

    // The storm ends: the next reconcile applies the commit.
    api.faults().clear();
    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    let (ready, reason, _) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Applied"));
    assert_eq!(status.last_applied_revision.as_deref(), Some(second_commit.as_str()));
    assert_eq!(inventory(&status), EXAMPLE_INVENTORY);
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(4));
    assert_eq!(m(r#"driftguard_api_writes_total{verb="apply",result="ok"}"#), Some(6.0));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_during_prune_keep_the_object_managed_until_it_is_deleted() {
    let (
        Installed {
            api,
            dir: _dir,
            client,
            repo,
            guards,
            ..
        },
        enforcer,
    ) = setup(false).await;
    support::guards::reconcile(&guards, &enforcer.ctx).await;

    // Git drops config.yaml (the ConfigMap and the Secret); deleting ConfigMaps fails.
    support::git(repo.path(), &["rm", "-q", "examples/app/config.yaml"]);
    support::git(repo.path(), &["commit", "-qm", "drop config"]);
    api.faults()
        .fail(Verb::Delete, "configmaps", Failure::internal_error(), None);
    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    let (ready, reason, message) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "PruneFailed"));
    assert!(
        message.contains("ConfigMap default/web-config") && message.contains("InternalError"),
        "{message}"
    );
    assert_eq!(
        inventory(&status),
        [
            "ConfigMap/web-config",
            "Deployment/web",
            "Namespace/web-team",
            "Service/web"
        ],
        "the Secret is gone, the ConfigMap still managed"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(config_maps.get_opt("web-config").await.unwrap().is_some());
    assert!(api.object("", "secrets", "default", "web-credentials").is_none());
    let pruned = |enforcer: &Enforcer| -> Vec<String> {
        enforcer
            .records(EventKind::ReconcilePruned)
            .into_iter()
            .map(|e| e.object.name)
            .collect()
    };
    assert_eq!(pruned(&enforcer), ["web-credentials"]);
    let m = |series: &str| enforcer.metric(series);
    assert_eq!(
        m(r#"driftguard_api_writes_total{verb="delete",result="failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"driftguard_api_writes_total{verb="delete",result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"driftguard_api_write_retries_total{verb="delete",reason="server_error"}"#),
        Some(5.0)
    );
    assert_eq!(m(r#"driftguard_prune_total{guard="default/example-app"}"#), Some(1.0));
    let notes = warnings(&client, "PruneFailed", "web-config").await;
    assert!(notes.len() == 1 && notes[0].contains("InternalError"), "{notes:?}");

    // The API recovers: the next reconcile prunes it, forgets it and audits it.
    api.faults().clear();
    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    assert_eq!(condition(&status, "Ready").unwrap().0, "True");
    assert_eq!(
        inventory(&status),
        ["Deployment/web", "Namespace/web-team", "Service/web"]
    );
    assert!(config_maps.get_opt("web-config").await.unwrap().is_none());
    assert_eq!(pruned(&enforcer), ["web-credentials", "web-config"]);
    assert_eq!(m(r#"driftguard_prune_total{guard="default/example-app"}"#), Some(2.0));
    api.stop().await;
}

/// Change Deployment `web`'s replicas as `manager` (a plain user, no webhook registered).
async fn scale_out_of_band(users: &Api<Deployment>, manager: &str, replicas: i32) {
    let params = PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    };
    users
        .patch("web", &params, &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_heal_survives_dropped_watches() {
    let (
        Installed {
            api,
            dir,
            client,
            repo: _repo,
            guards,
            ..
        },
        enforcer,
    ) = setup(true).await;
    support::guards::reconcile(&guards, &enforcer.ctx).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let user = support::kube_client(&api, Identity::User, dir.path()).await;
    let users: Api<Deployment> = Api::namespaced(user, "default");
    let corrections = |want: usize| {
        let audit = enforcer.audit.clone();
        move || {
            let audit = audit.clone();
            async move {
                audit
                    .events()
                    .iter()
                    .filter(|e| e.event == EventKind::DriftCorrected)
                    .count()
                    == want
            }
        }
    };

    // Self-heal's watches are cut twice while it runs; an edit after that is still corrected.
    api.faults().drop_watches();
    api.faults().drop_watches();
    scale_out_of_band(&users, "ops-script", 7).await;
    eventually(
        "the first correction",
        Duration::from_secs(30),
        support::guards::web_replicas(&deployments, 3),
    )
    .await;
    eventually("its audit record", Duration::from_secs(10), corrections(1)).await;

    // Cut again right after the next edit, while the correction is under way.
    scale_out_of_band(&users, "ops-script", 8).await;
    api.faults().drop_watches();
    eventually(
        "the second correction",
        Duration::from_secs(30),
        support::guards::web_replicas(&deployments, 3),
    )
    .await;
    eventually("its audit record", Duration::from_secs(10), corrections(2)).await;

    // And once more between an edit and the next.
    api.faults().drop_watches();
    scale_out_of_band(&users, "ops-script", 9).await;
    eventually(
        "the third correction",
        Duration::from_secs(30),
        support::guards::web_replicas(&deployments, 3),
    )
    .await;
    eventually("its audit record", Duration::from_secs(10), corrections(3)).await;

    let records = enforcer.records(EventKind::DriftCorrected);
    let seen: Vec<(String, String, serde_json::Value)> = records
        .iter()
        .map(|r| {
            assert_eq!(r.object.name, "web");
            assert_eq!(r.fields.len(), 1, "{r:?}");
            (
                r.field_manager.clone().unwrap_or_default(),
                r.fields[0].path.clone(),
                r.fields[0].attempted.clone(),
            )
        })
        .collect();
    let edit = |replicas: i32| ("ops-script".to_owned(), "spec.replicas".to_owned(), json!(replicas));
    assert_eq!(seen, [edit(7), edit(8), edit(9)]);
    assert_eq!(
        enforcer.metric(r#"driftguard_drift_corrections_total{guard="default/example-app",kind="Deployment"}"#),
        Some(3.0)
    );
    support::guards::until_drift_corrected(&guards, 3).await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_a_lost_watch_event_is_not_mistaken_for_an_old_event() {
    // A short watch history, so that a watch cut long enough must relist (410 Expired).
    let options = ServerOptions {
        watch_history: 40,
        ..ServerOptions::default()
    };
    let installed = support::guards::imitation::installed_on(options, json!({"interval": "1h"})).await;
    let Installed {
        api,
        dir,
        client,
        guards,
        ..
    } = &installed;
    let enforcer = Enforcer::new(&enforcer_client(api, dir.path()).await, true).await;
    support::guards::reconcile(guards, &enforcer.ctx).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let user = support::kube_client(api, Identity::User, dir.path()).await;
    let users: Api<Deployment> = Api::namespaced(user, "default");
    let driftguard = api.user(Identity::Driftguard).username;
    let own_patches = || {
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == WEB && r.user == driftguard)
            .count()
    };
    let watching = || async {
        api.requests()
            .iter()
            .any(|r| r.path == "/apis/apps/v1/deployments" && r.query.contains("watch=true"))
    };
    eventually("self-heal watching Deployments", Duration::from_secs(10), watching).await;

    // An edit; self-heal's correction is held in the server for a second, and the watch is cut
    // (and kept from reconnecting) before the correction's own event can arrive.
    api.faults().delay(Verb::Patch, "deployments", Duration::from_secs(1));
    let corrections_sent = own_patches() + 1;
    scale_out_of_band(&users, "ops-script", 7).await;
    eventually("the correction sent", Duration::from_secs(10), || async {
        own_patches() == corrections_sent
    })
    .await;
    api.faults().fail(Verb::Watch, "*", Failure::internal_error(), None);
    api.faults().drop_watches();
    eventually(
        "the correction stored",
        Duration::from_secs(10),
        support::guards::web_replicas(&deployments, 3),
    )
    .await;

    // Another edit while the watch is down, then enough writes that the history is gone.
    scale_out_of_band(&users, "ops-script", 8).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..50 {
        let filler = serde_json::from_value(json!({"metadata": {"name": format!("filler-{i}")}})).unwrap();
        config_maps.create(&PostParams::default(), &filler).await.unwrap();
    }
    // The watch reconnects, gets 410 Expired and relists: the relisted edit is drift to correct
    // now, not an event from before the correction to wait out.
    api.faults().clear();
    eventually(
        "the edit seen in the relist corrected",
        Duration::from_secs(20),
        support::guards::web_replicas(&deployments, 3),
    )
    .await;
    let recorded = || {
        let audit = enforcer.audit.clone();
        async move {
            let corrected: Vec<serde_json::Value> = audit
                .events()
                .iter()
                .filter(|e| e.event == EventKind::DriftCorrected)
                .map(|e| e.fields[0].attempted.clone())
                .collect();
            corrected == [json!(7), json!(8)]
        }
    };
    eventually("both corrections audited", Duration::from_secs(10), recorded).await;
    installed.api.stop().await;
}

/// `len` characters, different per `variant`, that compress badly (so nothing shortcuts them).
fn blob(variant: u8, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|i| ALPHABET[(i * 7 + i / 61 + usize::from(variant)) % ALPHABET.len()] as char)
        .collect()
}

/// Just under etcd's 1.5 MiB request limit once stored with its metadata.
const NEAR_LIMIT: usize = 1500 * 1024;

/// A Blob custom resource of 1.46 MiB, the largest kind of object a cluster stores (ConfigMaps
/// and Secrets stop at 1 MiB; etcd refuses requests over 1.5 MiB), is applied, listed and healed
/// byte for byte, and neither the audit records nor the Events carry it. A ConfigMap over
/// kube-apiserver's 1 MiB limit in the same commit fails visibly (422, not retried) without
/// holding up the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_and_a_half_mib_object_is_applied_and_healed_without_echoing_it() {
    let (
        Installed {
            api,
            dir,
            client,
            repo,
            guards,
            ..
        },
        enforcer,
    ) = setup(true).await;
    let huge = blob(0, NEAR_LIMIT);
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: blobs.example.com\n\
               spec:\n  group: example.com\n  scope: Namespaced\n  names:\n    plural: blobs\n    singular: blob\n    kind: Blob\n\
               \x20   listKind: BlobList\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n\
               \x20       openAPIV3Schema:\n          type: object\n          x-kubernetes-preserve-unknown-fields: true\n";
    std::fs::write(repo.path().join("examples/app/blob-crd.yaml"), crd).unwrap();
    std::fs::write(
        repo.path().join("examples/app/blob.yaml"),
        format!("apiVersion: example.com/v1\nkind: Blob\nmetadata:\n  name: blob\nspec:\n  payload: \"{huge}\"\n"),
    )
    .unwrap();
    let too_big = blob(2, 1024 * 1024 + 1);
    std::fs::write(
        repo.path().join("examples/app/too-big.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: too-big\ndata:\n  blob: \"{too_big}\"\n"),
    )
    .unwrap();
    support::git(repo.path(), &["add", "examples/app"]);
    support::git(
        repo.path(),
        &["commit", "-qm", "a big Blob and a ConfigMap over the limit"],
    );

    let status = support::guards::reconcile(&guards, &enforcer.ctx).await;
    let (ready, reason, message) = condition(&status, "Ready").unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "ApplyFailed"), "{message}");
    assert!(
        message.contains("too-big") && message.contains("Too long: must have at most 1048576 bytes"),
        "{message}"
    );
    assert!(!message.contains(&too_big[..64]), "the status echoes the payload");
    assert_eq!(
        enforcer.metric(r#"driftguard_api_writes_total{verb="apply",result="failed"}"#),
        Some(1.0),
        "a 422 is not retried"
    );
    assert!(api.object("", "configmaps", "default", "too-big").is_none());
    let listed = inventory(&status);
    for name in [
        "Blob/blob",
        "CustomResourceDefinition/blobs.example.com",
        "ConfigMap/too-big",
    ] {
        assert!(listed.contains(&name.to_owned()), "{name} in {listed:?}");
    }
    let stored = api.object("example.com", "blobs", "default", "blob").unwrap();
    assert!(
        stored["spec"]["payload"].as_str() == Some(huge.as_str()),
        "byte for byte"
    );
    assert!(serde_json::to_vec(&stored).unwrap().len() > 1500 * 1024);

    // Someone replaces the payload: self-heal puts Git's back.
    let user = support::kube_client(&api, Identity::User, dir.path()).await;
    let params = PatchParams {
        field_manager: Some("ops-script".to_owned()),
        ..PatchParams::default()
    };
    let edited = blob(1, NEAR_LIMIT);
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Blob");
    let (resource, _) = kube::discovery::pinned_kind(&user, &gvk).await.unwrap();
    Api::<DynamicObject>::namespaced_with(user, "default", &resource)
        .patch("blob", &params, &Patch::Merge(json!({"spec": {"payload": edited}})))
        .await
        .unwrap();
    let restored = || {
        let huge = huge.clone();
        let api = &api;
        async move {
            api.object("example.com", "blobs", "default", "blob")
                .is_some_and(|o| o["spec"]["payload"].as_str() == Some(huge.as_str()))
        }
    };
    eventually("the payload restored", Duration::from_secs(30), restored).await;
    let recorded = || {
        let audit = enforcer.audit.clone();
        async move { audit.events().iter().any(|e| e.event == EventKind::DriftCorrected) }
    };
    eventually("the drift.corrected record", Duration::from_secs(10), recorded).await;
    let corrected = enforcer.records(EventKind::DriftCorrected);
    assert_eq!(corrected.len(), 1, "one correction");
    assert_eq!(corrected[0].fields[0].path, "spec.payload");
    let git_value = corrected[0].fields[0].git.as_str().unwrap().to_owned();
    assert!(
        git_value.starts_with(&format!("<{} bytes, sha256:", NEAR_LIMIT + 2)),
        "{git_value}"
    );

    // Neither the audit records nor the Events carry any of the payloads.
    let audited = serde_json::to_string(&enforcer.audit.events()).unwrap();
    assert!(
        audited.len() < 64 * 1024,
        "audit records are small: {} bytes",
        audited.len()
    );
    for text in [&huge, &edited, &too_big] {
        assert!(!audited.contains(&text[..1024]), "a payload reached the audit records");
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    for event in events.list(&Default::default()).await.unwrap().items {
        let note = event.note.unwrap_or_default();
        assert!(
            note.len() < 4096 && !note.contains(&huge[..64]) && !note.contains(&too_big[..64]),
            "{note}"
        );
    }
    api.stop().await;
}

/// A repository with one path, `tenant/`, declaring a ConfigMap and a ServiceAccount without
/// a namespace (each Guard's targetNamespace places them).
fn tenant_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("tenant")).unwrap();
    std::fs::write(
        repo.path().join("tenant/app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: strict\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: worker\n",
    )
    .unwrap();
    support::git(repo.path(), &["init", "-q", "-b", "main"]);
    support::git(repo.path(), &["add", "-A"]);
    support::git(repo.path(), &["commit", "-qm", "tenant"]);
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_guards_created_at_once_are_each_applied_exactly_once() {
    const GUARDS: usize = 100;
    let api = TestApiServer::start(ServerOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = support::kube_client(&api, Identity::Driftguard, dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in driftguard::api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let repo = tenant_repo();
    support::guards::create_source(&client, "tenants", repo.path()).await;
    let tenant = |i: usize| format!("tenant-{i:03}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..GUARDS {
        let namespace = serde_json::from_value(json!({"metadata": {"name": tenant(i)}})).unwrap();
        namespaces.create(&PostParams::default(), &namespace).await.unwrap();
    }

    // The Guard loop runs first; then all Guards appear at once.
    let Enforcer { ctx, metrics, .. } = Enforcer::new(&enforcer_client(&api, dir.path()).await, false).await;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (_, leading) = tokio::sync::watch::channel(true);
    let loop_task = tokio::spawn(driftguard::reconcile::run::run_guards(ctx, leading, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let guards: Api<Guard> = Api::namespaced(client.clone(), "default");
    let creates = (0..GUARDS).map(|i| {
        let guards = guards.clone();
        let guard: Guard = serde_json::from_value(json!({
            "apiVersion": "driftguard.io/v1alpha1", "kind": "Guard",
            "metadata": {"name": tenant(i), "namespace": "default"},
            "spec": {"sourceRef": {"name": "tenants"}, "path": "tenant", "targetNamespace": tenant(i), "interval": "1h"}
        }))
        .unwrap();
        async move { guards.create(&PostParams::default(), &guard).await.unwrap() }
    });
    futures_util::future::join_all(creates).await;

    let all_ready = || {
        let guards = guards.clone();
        async move {
            let list = guards.list(&Default::default()).await.unwrap().items;
            list.len() == GUARDS
                && list.iter().all(|g| {
                    g.status.as_ref().is_some_and(|s| {
                        condition(s, "Ready").is_some_and(|c| c.0 == "True")
                            && s.inventory.len() == 2
                            && s.inventory.iter().all(|e| e.uid.is_some())
                    })
                })
        }
    };
    eventually("every Guard Ready", Duration::from_secs(50), all_ready).await;
    stop.send(true).unwrap();
    loop_task.await.unwrap();

    for guard in guards.list(&Default::default()).await.unwrap().items {
        let namespace = guard.spec.target_namespace.clone().unwrap();
        let status = guard.status.unwrap();
        assert_eq!(
            inventory(&status),
            ["ConfigMap/settings", "ServiceAccount/worker"],
            "{namespace}"
        );
        assert!(
            status
                .inventory
                .iter()
                .all(|e| e.namespace.as_deref() == Some(namespace.as_str()))
        );
        let settings = api.object("", "configmaps", &namespace, "settings").unwrap();
        assert_eq!(settings["data"]["mode"], "strict");
        assert_eq!(
            settings["metadata"]["annotations"]["driftguard.io/guard"],
            format!("default/{namespace}")
        );
        assert!(api.object("", "serviceaccounts", &namespace, "worker").is_some());
    }
    // No duplicate writes: each of the 200 objects was patched exactly once.
    for i in 0..GUARDS {
        let namespace = tenant(i);
        for path in [
            format!("/api/v1/namespaces/{namespace}/configmaps/settings"),
            format!("/api/v1/namespaces/{namespace}/serviceaccounts/worker"),
        ] {
            assert_eq!(patches_of(&api, &path), 1, "{path}");
        }
    }
    assert_eq!(
        metric(&metrics, r#"driftguard_api_writes_total{verb="apply",result="ok"}"#),
        Some(200.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"driftguard_api_writes_total{verb="apply",result="retried"}"#
        ),
        None
    );
    api.stop().await;
}
