//! Self-heal and restarts against the real API server (tests/support/cluster.rs) with no
//! webhook registered (as when the webhook is down and failurePolicy is Ignore), driftguard
//! acting as its service account with the chart's RBAC and people as alice@example.com: a `kubectl edit` of a declared field is
//! corrected within seconds and audited with the editor's field manager; an HPA-like writer
//! ends in the Fighting condition instead of an endless loop; a restarted enforcer resumes from
//! the Guard's status without recreating anything.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftguard::api::Guard;
use driftguard::audit::{EventKind, MemorySink};
use driftguard::desired::DesiredCache;
use driftguard::reconcile::apply::Applier;
use driftguard::reconcile::controller::Context;
use driftguard::reconcile::events::Events;
use driftguard::reconcile::selfheal::{HealDeps, HealSettings, SelfHeal};
use driftguard::telemetry::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::guards::{Driftguard, Installed, eventually, installed};

/// A reconcile context with self-heal, leading, auditing into memory.
async fn enforcer(client: &kube::Client, settings: HealSettings) -> (Context, Arc<MemorySink>) {
    let applier = Applier::new(client.clone(), Duration::from_secs(10)).await.unwrap();
    let audit = Arc::new(MemorySink::new());
    let (_, leading) = tokio::sync::watch::channel(true);
    let heal = SelfHeal::new(
        HealDeps {
            client: client.clone(),
            applier: applier.clone(),
            events: Events::new(client.clone(), Some("test-replica".into())),
            audit: audit.clone(),
            metrics: Arc::new(Metrics::new()),
            leading,
        },
        settings,
    );
    let ctx = Context::new(client.clone(), applier, DesiredCache::new(64 * 1024 * 1024)).with_self_heal(heal);
    (ctx, audit)
}

/// Watch Deployment `web` (returns once the watch has listed it): when it first shows `drifted`
/// replicas (the edit is stored), then how long until it is back at `git` (the correction is
/// stored). Fails when the correction takes longer than `deadline`.
async fn time_correction(
    deployments: &Api<Deployment>,
    drifted: i32,
    git: i32,
    deadline: Duration,
) -> tokio::task::JoinHandle<Duration> {
    let config = watcher::Config::default().fields("metadata.name=web");
    let stream = watcher(deployments.clone(), config).applied_objects();
    let (listed, ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);
        let mut listed = Some(listed);
        let edited = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(deployment)) = stream.next().await {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
                if replicas(deployment) == Some(drifted) {
                    return Instant::now();
                }
            }
            panic!("the watch ended")
        })
        .await
        .expect("the edit was seen");
        let corrected = tokio::time::timeout(deadline, async {
            while let Some(Ok(deployment)) = stream.next().await {
                if replicas(deployment) == Some(git) {
                    return;
                }
            }
        })
        .await;
        assert!(corrected.is_ok(), "web not back at {git} replicas within {deadline:?}");
        edited.elapsed()
    });
    ready.await.expect("the watch listed web");
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_edit_is_corrected_within_seconds_and_audited_with_the_field_manager() {
    let Installed {
        cluster,
        admin,
        client,
        repo: _repo,
        commit,
        guards,
    } = installed(json!({"interval": "1h"})).await;
    let (ctx, audit) = enforcer(&client, HealSettings::default()).await;
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.last_applied_revision.as_deref(), Some(commit.as_str()));

    // A person edits replicas with kubectl; no webhook stops it. Self-heal has 5 seconds.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let timing = time_correction(&deployments, 5, 3, Duration::from_secs(5)).await;
    let out = support::guards::kubectl_edit_web(&cluster, cluster.scratch(), "s/replicas: 3/replicas: 5/");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("edited"));
    let took = timing.await.unwrap();
    eprintln!("self-heal: kubectl edit of spec.replicas corrected {took:?} after the edit was stored");

    // Audit: who drifted what, from and to (recorded right after the write returns).
    let recorded = || {
        let audit = audit.clone();
        async move { audit.events().iter().any(|e| e.event == EventKind::DriftCorrected) }
    };
    eventually("the drift.corrected record", Duration::from_secs(10), recorded).await;
    let corrected: Vec<_> = audit
        .events()
        .into_iter()
        .filter(|e| e.event == EventKind::DriftCorrected)
        .collect();
    assert_eq!(corrected.len(), 1, "{corrected:?}");
    let record = &corrected[0];
    assert_eq!(record.field_manager.as_deref(), Some("kubectl-edit"));
    assert_eq!(record.object.name, "web");
    assert_eq!(record.guard, "default/example-app");
    assert_eq!(record.revision, commit);
    assert_eq!(record.fields.len(), 1);
    assert_eq!(record.fields[0].path, "spec.replicas");
    assert_eq!(
        (record.fields[0].git.clone(), record.fields[0].attempted.clone()),
        (json!(3), json!(5))
    );
    let line = serde_json::to_value(record).unwrap();
    assert_eq!(line["event"], "drift.corrected");
    assert_eq!(line["field_manager"], "kubectl-edit");

    // A Kubernetes Event on the Deployment, and the count in the Guard's status.
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let found = events.list(&Default::default()).await.unwrap();
    let event = found
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("DriftCorrected"))
        .expect("a DriftCorrected Event");
    assert_eq!(event.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("web"));
    assert_eq!(event.reporting_controller.as_deref(), Some("driftguard"));
    assert!(
        event.note.as_deref().unwrap_or("").contains("kubectl-edit"),
        "{:?}",
        event.note
    );
    support::guards::until_drift_corrected(&guards, 1).await;
    // The next full reconcile keeps the count and finds nothing to apply.
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(status.counts.drift_corrected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_flipping_replicas_back_ends_in_fighting_not_an_endless_loop() {
    driftguard::telemetry::init_tracing();
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo: _repo,
        commit: _,
        guards,
    } = installed(json!({"interval": "1h"})).await;
    let settings = HealSettings {
        max_flips: 3,
        window: Duration::from_secs(120),
    };
    let (ctx, audit) = enforcer(&client, settings).await;
    support::guards::reconcile(&guards, &ctx).await;

    // Like an HPA: whenever replicas is back at 3, set 6 again.
    let deployments: Api<Deployment> = Api::namespaced(admin, "default");
    let hpa = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let params = PatchParams {
                field_manager: Some("horizontal-pod-autoscaler".into()),
                ..PatchParams::default()
            };
            let config = watcher::Config::default().fields("metadata.name=web");
            let mut stream = std::pin::pin!(watcher(deployments.clone(), config).applied_objects());
            while let Some(Ok(deployment)) = stream.next().await {
                if deployment.spec.and_then(|s| s.replicas) == Some(3) {
                    let patch = Patch::Merge(json!({"spec": {"replicas": 6}}));
                    deployments.patch("web", &params, &patch).await.unwrap();
                }
            }
        })
    };

    let fighting = || {
        let guards = guards.clone();
        async move {
            let status = guards.get("example-app").await.ok().and_then(|g| g.status);
            status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Fighting" && c.status == "True"))
        }
    };
    eventually("the Fighting condition", Duration::from_secs(30), fighting).await;
    hpa.abort();
    let guard: Guard = guards.get("example-app").await.unwrap();
    let condition = guard
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Fighting")
        .unwrap();
    assert_eq!(condition.reason, "FieldManagerConflict");
    for needle in [
        "horizontal-pod-autoscaler keeps changing spec.replicas of Deployment.apps default/web",
        "jsonPointers: [/spec/replicas]",
    ] {
        assert!(
            condition.message.contains(needle),
            "{needle:?} in {}",
            condition.message
        );
    }
    // Exactly max_flips corrections, then driftguard let go: the writer's 6 stands.
    let corrections = audit
        .events()
        .iter()
        .filter(|e| e.event == EventKind::DriftCorrected)
        .count();
    assert_eq!(corrections, 3);
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(6));

    // A full reconcile leaves the contested object alone, keeps Fighting, serves the rest.
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(6));
    assert!(status.conditions.iter().any(|c| c.type_ == "Fighting"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(audit.events().iter().any(
        |e| e.event == EventKind::DriftFighting && e.field_manager.as_deref() == Some("horizontal-pod-autoscaler")
    ));

    // The suggested ignore rule settles it: the fight ends and the condition goes.
    guards
        .patch(
            "example-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ignore": [{"kind": "Deployment", "name": "web", "jsonPointers": ["/spec/replicas"]}]}})),
        )
        .await
        .unwrap();
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert!(
        !status.conditions.iter().any(|c| c.type_ == "Fighting"),
        "{:?}",
        status.conditions
    );
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_enforcer_resumes_from_status_without_recreating_objects() {
    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo: _repo,
        commit: _,
        guards,
    } = installed(json!({})).await;
    let before = {
        let (ctx, _) = enforcer(&client, HealSettings::default()).await;
        support::guards::reconcile(&guards, &ctx).await
    };
    assert_eq!(before.inventory.len(), 5);
    let versions = |client: kube::Client, status: driftguard::api::GuardStatus| async move {
        let mut out = Vec::new();
        for entry in &status.inventory {
            let (resource, _) = kube::discovery::pinned_kind(
                &client,
                &kube::core::GroupVersionKind::gvk(&entry.group, &entry.version, &entry.kind),
            )
            .await
            .unwrap();
            let api: Api<kube::api::DynamicObject> = match &entry.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let object = api.get(&entry.name).await.unwrap();
            // The deployment controller writes the Deployment's status (and a revision
            // annotation) on its own, so its resourceVersion moves without driftguard: there,
            // what driftguard owns (its managedFields entry) and the spec's generation tell.
            let written = match entry.kind.as_str() {
                "Deployment" => format!(
                    "generation {:?}, driftguard's fields {}",
                    object.metadata.generation,
                    serde_json::to_string(
                        &object
                            .metadata
                            .managed_fields
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|m| m.manager.as_deref() == Some("driftguard"))
                            .collect::<Vec<_>>()
                    )
                    .unwrap()
                ),
                _ => object.metadata.resource_version.unwrap(),
            };
            out.push((entry.name.clone(), object.metadata.uid.unwrap(), written));
        }
        out
    };
    let live_before = versions(admin.clone(), before.clone()).await;

    // A new process: nothing cached, only the Guard's status to go on.
    let (ctx, audit) = enforcer(&client, HealSettings::default()).await;
    let after = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(after.inventory, before.inventory, "same objects, same uids");
    assert_eq!(
        versions(admin.clone(), after).await,
        live_before,
        "no object was recreated or even written"
    );
    assert!(audit.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_unlabelled_objects_come_back() {
    let Installed {
        cluster,
        admin,
        client,
        repo: _repo,
        commit: _,
        guards,
    } = installed(json!({"interval": "1h"})).await;
    let (ctx, audit) = enforcer(&client, HealSettings::default()).await;
    support::guards::reconcile(&guards, &ctx).await;
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), "default");
    let before = config_maps.get("web-config").await.unwrap().metadata.uid;

    // Deleted with kubectl while the webhook is away: recreated from Git.
    let out = support::guards::kubectl_as_user(
        &cluster,
        cluster.scratch(),
        &["delete", "configmap", "web-config", "-n", "default"],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recreated = || {
        let config_maps = config_maps.clone();
        let before = before.clone();
        async move {
            config_maps
                .get_opt("web-config")
                .await
                .ok()
                .flatten()
                .is_some_and(|c| c.metadata.uid != before)
        }
    };
    eventually("web-config recreated", Duration::from_secs(10), recreated).await;

    // The managed label stripped (which also takes it out of the label-selected watch).
    let out = support::guards::kubectl_as_user(
        &cluster,
        cluster.scratch(),
        &["label", "deploy", "web", "-n", "default", "driftguard.io/managed-"],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let relabelled = || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get("web")
                .await
                .ok()
                .and_then(|d| d.metadata.labels)
                .is_some_and(|l| l.get("driftguard.io/managed").map(String::as_str) == Some("true"))
        }
    };
    eventually("the managed label restored", Duration::from_secs(10), relabelled).await;

    let both = || {
        let audit = audit.clone();
        async move {
            let records = audit.events();
            let recreated = records.iter().any(|e| {
                e.event == EventKind::DriftCorrected
                    && e.object.name == "web-config"
                    && e.message.starts_with("recreated")
            });
            // A removal leaves the remover owning nothing, so managedFields cannot name it.
            let relabelled = records.iter().any(|e| {
                e.event == EventKind::DriftCorrected
                    && e.object.name == "web"
                    && e.field_manager.is_none()
                    && e.fields
                        .iter()
                        .any(|f| f.path == "metadata.labels[driftguard.io/managed]")
            });
            recreated && relabelled
        }
    };
    eventually("both corrections audited", Duration::from_secs(10), both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_edits_show_as_rate_limited_events_on_the_object() {
    use driftguard::audit::{Actor, AuditEvent, AuditSink, ObjectRef, SCHEMA};
    use driftguard::reconcile::admission_events::EventingSink;

    let Driftguard {
        cluster: _cluster,
        admin,
        client,
    } = Driftguard::start().await;
    let audit = Arc::new(MemorySink::new());
    let sink = EventingSink::start(audit.clone(), Events::new(client.clone(), Some("replica-a".into())));
    let denial = |dry_run: bool| AuditEvent {
        schema: SCHEMA,
        seq: 0,
        time: driftguard::audit::now_rfc3339(),
        event: EventKind::AdmissionDenied,
        actor: Actor {
            username: "alice@example.com".into(),
            uid: None,
            groups: vec![],
        },
        object: ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            subresource: Some("scale".into()),
        },
        operation: "UPDATE".into(),
        guard: "default/example-app".into(),
        revision: "c0ffee".into(),
        fields: vec![],
        message: "spec.replicas is managed by Git".into(),
        request_uid: "u".into(),
        dry_run,
        field_manager: None,
        prev_hash: String::new(),
        hash: String::new(),
    };
    for _ in 0..5 {
        sink.record(denial(false));
    }
    sink.record(denial(true));
    assert_eq!(audit.events().len(), 6, "every decision is audited");

    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let denied = || {
        let events = events.clone();
        async move {
            events.list(&Default::default()).await.is_ok_and(|list| {
                list.items.iter().any(|e| {
                    e.reason.as_deref() == Some("EditDenied")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                        && e.note.as_deref().is_some_and(|n| n.contains("alice@example.com"))
                })
            })
        }
    };
    eventually("an EditDenied Event on web", Duration::from_secs(10), denied).await;
    // One Event for the burst: the rest wait for the next window.
    let list = events.list(&Default::default()).await.unwrap();
    let count = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("EditDenied"))
        .count();
    assert_eq!(count, 1, "{:?}", list.items.iter().map(|e| &e.note).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_detaches_until_it_runs_out_then_git_is_restored() {
    use driftguard::admission::break_glass::{BREAK_GLASS_ANNOTATION, EXPIRES_ANNOTATION};

    let Installed {
        cluster: _cluster,
        admin,
        client,
        repo: _repo,
        commit: _,
        guards,
    } = installed(json!({"interval": "1h", "breakGlass": {"groups": ["sre"], "maxDuration": "30m"}})).await;
    let (mut ctx, _) = enforcer(&client, HealSettings::default()).await;
    let audit = Arc::new(MemorySink::new());
    ctx.audit = audit.clone();
    support::guards::reconcile(&guards, &ctx).await;

    // An on-call engineer's break-glass edit (what admission let through, expiry stamped).
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let edit = |expires: &str, replicas: i32| {
        json!({"metadata": {"annotations": {BREAK_GLASS_ANNOTATION: "INC-4711", EXPIRES_ANNOTATION: expires}},
               "spec": {"replicas": replicas}})
    };
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(edit("2999-01-01T00:00:00Z", 7)),
        )
        .await
        .unwrap();
    let status = support::guards::reconcile(&guards, &ctx).await;
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(7),
        "left alone"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // Its time is up: Git comes back, the annotations go, the end is recorded.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(edit("2020-01-01T00:00:00Z", 7)),
        )
        .await
        .unwrap();
    support::guards::reconcile(&guards, &ctx).await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(3));
    let annotations = web.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(BREAK_GLASS_ANNOTATION) && !annotations.contains_key(EXPIRES_ANNOTATION),
        "{annotations:?}"
    );
    assert!(
        audit
            .events()
            .iter()
            .any(|e| e.event == EventKind::BreakGlassEnded && e.object.name == "web"),
        "{:?}",
        audit.events()
    );
}
