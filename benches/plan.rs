//! Plan budget (DESIGN.md section 10): a plan of 10,000 objects in <= 200 ms.
//!
//! 10,000 (and 1,000) desired Deployments, ConfigMaps and Services: a third live and equal to
//! Git (with server defaults, managedFields and status, as the API server returns them), a
//! third live with a drifted field, a third absent; plus 500 (50) inventory entries Git no
//! longer declares (prunes).
//!
//! `cargo bench --bench plan`

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use driftguard::api::{GuardSpec, PruneSpec};
use driftguard::desired::{DesiredSet, GuardId, GuardPolicy};
use driftguard::reconcile::{InventoryEntry, LiveObject, LiveSnapshot, ObjectKey, PlanFacts, plan};
use driftguard::render::{Manifest, Origin};
use driftguard::source::Revision;
use serde_json::{Value, json};

/// (desired objects, prunes, benchmark id) per size.
const SIZES: [(usize, usize, &str); 2] = [
    (1_000, 50, "1k_objects_50_prunes"),
    (10_000, 500, "10k_objects_500_prunes"),
];

fn manifest(i: usize) -> Value {
    let ns = format!("team-{}", i % 50);
    let name = format!("app-{i}");
    match i % 3 {
        0 => json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/name": name}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": name}},
                    "spec": {"containers": [{
                        "name": "app", "image": format!("registry.example.com/{name}:1.{i}.0"),
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "MODE", "value": "production"}],
                        "resources": {"requests": {"cpu": "0.5", "memory": "256Mi"}}
                    }]}
                }
            }
        }),
        1 => json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"config.yaml": format!("listen: 8080\nreplica: {i}\n"), "mode": "production"}
        }),
        _ => json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
    }
}

/// The desired object as the API server would return it: defaults, managedFields, status.
fn live_copy(desired: &Value, i: usize) -> Value {
    let mut live = desired.clone();
    live["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
    live["metadata"]["resourceVersion"] = json!(format!("{}", 1000 + i));
    live["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    live["metadata"]["managedFields"] = json!([{
        "manager": "driftguard", "operation": "Apply", "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {}, "f:annotations": {}}, "f:spec": {}}
    }]);
    match desired["kind"].as_str() {
        Some("Deployment") => {
            let spec = &mut live["spec"];
            spec["replicas"] = json!(3);
            spec["revisionHistoryLimit"] = json!(10);
            spec["progressDeadlineSeconds"] = json!(600);
            spec["strategy"] =
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
            let pod = &mut spec["template"]["spec"];
            pod["restartPolicy"] = json!("Always");
            pod["dnsPolicy"] = json!("ClusterFirst");
            pod["terminationGracePeriodSeconds"] = json!(30);
            pod["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
            pod["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
            pod["containers"][0]["ports"][0]["protocol"] = json!("TCP");
            pod["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
            live["status"] = json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3});
        }
        Some("Service") => {
            live["spec"]["type"] = json!("ClusterIP");
            live["spec"]["clusterIP"] = json!("10.96.0.10");
            live["spec"]["sessionAffinity"] = json!("None");
            live["spec"]["ports"][0]["protocol"] = json!("TCP");
        }
        _ => {}
    }
    live
}

fn drift(live: &mut Value) {
    match live["kind"].as_str() {
        Some("Deployment") => live["spec"]["replicas"] = json!(7),
        Some("ConfigMap") => live["data"]["mode"] = json!("debug"),
        _ => live["spec"]["ports"][0]["port"] = json!(81),
    }
}

/// The plan's inputs for `objects` desired objects and `prunes` stale inventory entries.
struct Inputs {
    id: GuardId,
    set: DesiredSet,
    inventory: Vec<InventoryEntry>,
    live: LiveSnapshot,
}

fn inputs(objects: usize, prunes: usize) -> Inputs {
    let id = GuardId {
        namespace: "driftguard".into(),
        name: "shop".into(),
    };
    let spec: GuardSpec = serde_json::from_value(json!({"sourceRef": {"name": "shop"}, "path": "apps"})).unwrap();
    let policy = Arc::new(GuardPolicy::new(id.clone(), &spec, "file:///repo").unwrap());
    let manifests = (0..objects)
        .map(|i| Manifest {
            object: manifest(i),
            origin: Origin {
                file: format!("apps/{}.yaml", i / 100),
                line: 1,
                document: None,
            },
            fields: Default::default(),
        })
        .collect();
    let revision = Revision {
        commit: "0".repeat(40),
        reference: format!("main@sha1:{}", "0".repeat(40)),
    };
    let set = DesiredSet::build(policy, revision, manifests).unwrap();

    let mut live = LiveSnapshot::new();
    let mut inventory = Vec::with_capacity(objects + prunes);
    for (i, object) in set.objects.iter().enumerate() {
        let key = ObjectKey::of(object);
        inventory.push(InventoryEntry {
            group: object.group.clone(),
            version: object.version.clone(),
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: None,
        });
        // Spread the three cases over all kinds: i / 3 picks the case, i % 3 picks the kind.
        match (i / 3) % 3 {
            0 => live.insert(LiveObject {
                key,
                object: live_copy(&object.value().unwrap(), i),
            }),
            1 => {
                let mut object = live_copy(&object.value().unwrap(), i);
                drift(&mut object);
                live.insert(LiveObject { key, object });
            }
            _ => {}
        }
    }
    for i in 0..prunes {
        let mut object = manifest(i);
        let name = format!("old-{i}");
        object["metadata"]["name"] = json!(name);
        object["metadata"]["annotations"] = json!({"driftguard.io/guard": id.to_string()});
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let group = if kind == "Deployment" { "apps" } else { "" };
        let namespace = format!("team-{}", i % 50);
        let key = ObjectKey::new(group, &kind, Some(&namespace), &name);
        inventory.push(InventoryEntry {
            group: group.into(),
            version: "v1".into(),
            kind: kind.clone(),
            namespace: Some(namespace),
            name,
            uid: None,
        });
        live.insert(LiveObject {
            key,
            object: live_copy(&object, objects + i),
        });
    }

    Inputs {
        id,
        set,
        inventory,
        live,
    }
}

fn bench_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(20);
    for (objects, prunes, name) in SIZES {
        bench_size(&mut group, name, (objects, prunes), &inputs(objects, prunes));
    }
    group.finish();
}

fn bench_size(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    (objects, prunes): (usize, usize),
    Inputs {
        id,
        set,
        inventory,
        live,
    }: &Inputs,
) {
    let established = HashSet::new();
    let prune = PruneSpec::default();
    let facts = PlanFacts {
        guard: id,
        established: &established,
        prune: &prune,
        held: &Default::default(),
        detached: &Default::default(),
        hpa: &Default::default(),
    };
    let check = plan(&set.objects, inventory, live, &facts);
    assert_eq!(check.prune.len(), prunes);
    assert!(
        check.apply.len() > objects / 2 && check.apply.len() < objects * 3 / 4,
        "{}",
        check.apply.len()
    );
    group.bench_function(name, |b| {
        b.iter(|| black_box(plan(black_box(&set.objects), inventory, live, &facts)))
    });
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
