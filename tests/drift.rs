//! Drift engine against realistic live objects (as the API server returns them) and Git
//! manifests: table-driven cases, revert round trips, and a property over generated edits.

use std::path::Path;

use driftguard::drift::{FieldDrift, IgnorePath, PathSegment, detect, normalize_desired, revert_patch};
use json_patch::PatchOperation;
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/drift")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The Git manifest, normalized as the desired-state cache stores it.
fn desired(kind: &str) -> Value {
    let mut d = fixture(&format!("{kind}.git"));
    normalize_desired(&mut d);
    d
}

fn live(kind: &str) -> Value {
    fixture(&format!("{kind}.live"))
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Set (or insert) the value at a JSON pointer whose parent exists.
fn put(v: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    let last = unescape(last);
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
        }
        Some(Value::Array(a)) if last == "-" => a.push(value),
        Some(Value::Array(a)) => a[last.parse::<usize>().expect("index")] = value,
        other => panic!("no container at {parent}: {other:?}"),
    }
}

/// Remove the value at a JSON pointer.
fn del(v: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    let last = unescape(last);
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.remove(&last).unwrap_or_else(|| panic!("nothing at {pointer}"));
        }
        Some(Value::Array(a)) => {
            a.remove(last.parse::<usize>().expect("index"));
        }
        other => panic!("no container at {parent}: {other:?}"),
    }
}

fn paths(drifts: &[FieldDrift]) -> Vec<String> {
    drifts.iter().map(|d| d.path.to_string()).collect()
}

fn rules(pointers: &[&str]) -> Vec<IgnorePath> {
    pointers
        .iter()
        .map(|p| IgnorePath::parse(p).expect("valid ignore pointer"))
        .collect()
}

fn apply(new: &Value, patch: &json_patch::Patch) -> Value {
    let mut patched = new.clone();
    json_patch::patch(&mut patched, patch).expect("revert patch applies to the new object");
    patched
}

fn noop(_: &mut Value) {}

struct Case {
    name: &'static str,
    kind: &'static str,
    /// CREATE: no old object.
    create: bool,
    /// Applied to the live object before the request (pre-existing drift).
    before: fn(&mut Value),
    /// The request: applied to the (possibly drifted) live object to get the new object.
    edit: fn(&mut Value),
    ignore: &'static [&'static str],
    expect: &'static [&'static str],
}

const WEB: &str = "/spec/template/spec/containers/0";
const SHIPPER: &str = "/spec/template/spec/containers/1";

const fn case(name: &'static str, kind: &'static str, edit: fn(&mut Value)) -> Case {
    Case {
        name,
        kind,
        create: false,
        before: noop,
        edit,
        ignore: &[],
        expect: &[],
    }
}

fn cases() -> Vec<Case> {
    vec![
        // --- Deployment: what is not drift
        case("server defaults are not drift", "deployment", noop),
        Case {
            create: true,
            ..case("CREATE of the defaulted object is not drift", "deployment", noop)
        },
        case("undeclared labels and annotations", "deployment", |n| {
            put(n, "/metadata/labels/debug", json!("true"));
            put(n, "/metadata/annotations/note", json!("investigating INC-42"));
        }),
        case("rollout restart annotation", "deployment", |n| {
            put(
                n,
                "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
                json!("2025-04-01T09:30:00Z"),
            );
        }),
        case("reordered containers", "deployment", |n| {
            let containers = n.pointer_mut("/spec/template/spec/containers").unwrap();
            containers.as_array_mut().unwrap().reverse();
        }),
        case("reordered env, ports, mounts and volumes", "deployment", |n| {
            for list in ["env", "ports", "volumeMounts"] {
                let l = n.pointer_mut(&format!("{WEB}/{list}")).unwrap();
                l.as_array_mut().unwrap().reverse();
            }
            let v = n.pointer_mut("/spec/template/spec/volumes").unwrap();
            v.as_array_mut().unwrap().reverse();
        }),
        case("0.5 is 500m", "deployment", |n| {
            put(n, &format!("{WEB}/resources/limits/cpu"), json!("0.5"));
        }),
        case("a number quantity is its value", "deployment", |n| {
            put(n, &format!("{WEB}/resources/limits/cpu"), json!(0.5));
            put(n, &format!("{WEB}/resources/requests/memory"), json!(268435456));
        }),
        case("1Gi sizeLimit spelled 1024Mi", "deployment", |n| {
            put(n, "/spec/template/spec/volumes/1/emptyDir/sizeLimit", json!("1024Mi"));
        }),
        case("replicas as a float", "deployment", |n| {
            put(n, "/spec/replicas", json!(3.0));
        }),
        case("status and bookkeeping", "deployment", |n| {
            put(n, "/status/replicas", json!(4));
            put(n, "/metadata/resourceVersion", json!("4815999"));
            put(n, "/metadata/generation", json!(13));
            put(n, "/metadata/managedFields", json!([]));
            put(n, "/metadata/creationTimestamp", json!("2030-01-01T00:00:00Z"));
            put(n, "/metadata/uid", json!("00000000-0000-0000-0000-000000000000"));
        }),
        case("a declared empty nodeSelector", "deployment", |n| {
            put(n, "/spec/template/spec/nodeSelector", json!({"disk": "ssd"}));
        }),
        case("undeclared spec fields", "deployment", |n| {
            put(n, "/spec/minReadySeconds", json!(10));
            put(n, "/spec/revisionHistoryLimit", json!(2));
            put(n, &format!("{WEB}/imagePullPolicy"), json!("Always"));
            put(n, &format!("{WEB}/resources/limits/ephemeral-storage"), json!("1Gi"));
            put(n, "/spec/template/spec/nodeSelector", json!({"disk": "ssd"}));
            put(n, "/spec/template/spec/securityContext/runAsUser", json!(1000));
        }),
        case("added container and env entry", "deployment", |n| {
            put(n, &format!("{WEB}/env/-"), json!({"name": "FEATURE_X", "value": "on"}));
            put(
                n,
                "/spec/template/spec/containers/-",
                json!({"name": "debug", "image": "busybox:1.36"}),
            );
        }),
        // --- Deployment: what is drift
        Case {
            expect: &["spec.template.spec.containers[name=web].image"],
            ..case("image", "deployment", |n| {
                put(n, &format!("{WEB}/image"), json!("registry.example.com/shop/web:1.5.0"));
            })
        },
        Case {
            expect: &["spec.replicas"],
            ..case("scale", "deployment", |n| put(n, "/spec/replicas", json!(5)))
        },
        Case {
            expect: &["spec.template.spec.containers[name=web].env[name=LOG_LEVEL].value"],
            ..case("env value", "deployment", |n| {
                put(n, &format!("{WEB}/env/0/value"), json!("debug"));
            })
        },
        Case {
            expect: &["metadata.labels[app.kubernetes.io/part-of]", "metadata.labels.team"],
            ..case("declared labels", "deployment", |n| {
                put(n, "/metadata/labels/team", json!("checkout"));
                put(n, "/metadata/labels/app.kubernetes.io~1part-of", json!("legacy"));
            })
        },
        Case {
            expect: &["metadata.annotations[example.com/owner]"],
            ..case("declared annotation removed", "deployment", |n| {
                del(n, "/metadata/annotations/example.com~1owner");
            })
        },
        Case {
            expect: &["spec.template.spec.containers[name=web].resources.limits.cpu"],
            ..case("cpu limit", "deployment", |n| {
                put(n, &format!("{WEB}/resources/limits/cpu"), json!("1"));
            })
        },
        Case {
            expect: &["spec.template.spec.containers[name=web].resources.limits.memory"],
            ..case("declared field removed", "deployment", |n| {
                del(n, &format!("{WEB}/resources/limits/memory"));
            })
        },
        Case {
            expect: &[
                "spec.template.spec.containers[name=web].env[name=DB_HOST].name",
                "spec.template.spec.containers[name=web].env[name=DB_HOST].value",
            ],
            ..case("env entry removed", "deployment", |n| {
                del(n, &format!("{WEB}/env/1"));
            })
        },
        Case {
            expect: &[
                "spec.template.spec.containers[name=log-shipper].image",
                "spec.template.spec.containers[name=log-shipper].name",
                "spec.template.spec.containers[name=log-shipper].resources.limits.cpu",
                "spec.template.spec.containers[name=log-shipper].resources.limits.memory",
                "spec.template.spec.containers[name=log-shipper].volumeMounts[mountPath=/var/cache/web].mountPath",
                "spec.template.spec.containers[name=log-shipper].volumeMounts[mountPath=/var/cache/web].name",
                "spec.template.spec.containers[name=log-shipper].volumeMounts[mountPath=/var/cache/web].readOnly",
            ],
            ..case("container removed", "deployment", |n| del(n, SHIPPER))
        },
        Case {
            expect: &[
                "spec.template.spec.containers[name=web].ports[containerPort=8080,protocol=TCP].containerPort",
                "spec.template.spec.containers[name=web].ports[containerPort=8080,protocol=TCP].name",
            ],
            ..case("port protocol changed", "deployment", |n| {
                put(n, &format!("{WEB}/ports/0/protocol"), json!("UDP"));
            })
        },
        Case {
            expect: &["spec.template.spec.tolerations"],
            ..case("atomic list element changed", "deployment", |n| {
                put(n, "/spec/template/spec/tolerations/0/value", json!("batch"));
            })
        },
        Case {
            expect: &["spec.template.spec.tolerations"],
            ..case("field added inside an atomic list", "deployment", |n| {
                put(n, "/spec/template/spec/tolerations/0/tolerationSeconds", json!(30));
            })
        },
        Case {
            expect: &["spec.template.spec.containers[name=web].args"],
            ..case("args reordered", "deployment", |n| {
                let args = n.pointer_mut(&format!("{WEB}/args")).unwrap();
                args.as_array_mut().unwrap().reverse();
            })
        },
        Case {
            expect: &["spec.template.spec.securityContext"],
            ..case("declared empty map removed", "deployment", |n| {
                del(n, "/spec/template/spec/securityContext");
            })
        },
        Case {
            expect: &["spec.template.spec.volumes[name=cache].emptyDir.sizeLimit"],
            ..case("volume source swapped", "deployment", |n| {
                del(n, "/spec/template/spec/volumes/1/emptyDir");
                put(
                    n,
                    "/spec/template/spec/volumes/1/hostPath",
                    json!({"path": "/tmp", "type": ""}),
                );
            })
        },
        Case {
            expect: &[
                "spec.template.spec.containers[name=web].resources.limits.cpu",
                "spec.template.spec.containers[name=web].resources.limits.memory",
                "spec.template.spec.containers[name=web].resources.requests.cpu",
                "spec.template.spec.containers[name=web].resources.requests.memory",
            ],
            ..case("a map replaced by null", "deployment", |n| {
                put(n, &format!("{WEB}/resources"), Value::Null);
            })
        },
        // --- Deployment: ignore rules
        Case {
            ignore: &["/spec/replicas"],
            ..case("ignored replicas", "deployment", |n| {
                put(n, "/spec/replicas", json!(7));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/*/image"],
            ..case("ignored images by wildcard", "deployment", |n| {
                put(n, &format!("{WEB}/image"), json!("web:canary"));
                put(n, &format!("{SHIPPER}/image"), json!("shipper:canary"));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/web/image"],
            ..case("ignored image by merge key", "deployment", |n| {
                put(n, &format!("{WEB}/image"), json!("web:canary"));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/0/image"],
            ..case("ignored image by index in Git", "deployment", |n| {
                let containers = n.pointer_mut("/spec/template/spec/containers").unwrap();
                containers.as_array_mut().unwrap().reverse();
                // `web` is now at index 1 in the new object, still 0 in Git.
                put(n, "/spec/template/spec/containers/1/image", json!("web:canary"));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/log-shipper/image"],
            expect: &["spec.template.spec.containers[name=web].image"],
            ..case("ignoring one container does not hide another", "deployment", |n| {
                put(n, &format!("{WEB}/image"), json!("web:canary"));
            })
        },
        Case {
            ignore: &["/metadata/labels/app.kubernetes.io~1part-of"],
            expect: &["metadata.labels.team"],
            ..case("ignored label with an escaped key", "deployment", |n| {
                put(n, "/metadata/labels/app.kubernetes.io~1part-of", json!("legacy"));
                put(n, "/metadata/labels/team", json!("checkout"));
            })
        },
        Case {
            ignore: &["/metadata/labels/*"],
            ..case("ignored labels by wildcard", "deployment", |n| {
                put(n, "/metadata/labels/team", json!("checkout"));
                del(n, "/metadata/labels/app.kubernetes.io~1part-of");
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/web/resources"],
            ..case("ignored subtree", "deployment", |n| {
                put(n, &format!("{WEB}/resources/limits/cpu"), json!("2"));
                del(n, &format!("{WEB}/resources/requests"));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/web/ports/containerPort=8080,protocol=TCP"],
            ..case("ignored port by full key", "deployment", |n| {
                put(n, &format!("{WEB}/ports/0/name"), json!("web"));
            })
        },
        Case {
            ignore: &["/spec/template/spec/containers/web/env/LOG_LEVEL/value"],
            expect: &["spec.template.spec.containers[name=web].env[name=DB_HOST].value"],
            ..case("ignored env value by key", "deployment", |n| {
                put(n, &format!("{WEB}/env/0/value"), json!("debug"));
                put(n, &format!("{WEB}/env/1/value"), json!("db2.shop.svc"));
            })
        },
        // --- Deployment: pre-existing drift is not the requester's
        Case {
            before: |o| put(o, &format!("{WEB}/image"), json!("web:hotfix")),
            expect: &["spec.replicas"],
            ..case("pre-existing image drift, unrelated scale", "deployment", |n| {
                put(n, "/spec/replicas", json!(4));
            })
        },
        Case {
            before: |o| {
                del(o, "/metadata/labels/team");
                del(o, &format!("{SHIPPER}/resources"));
                put(o, "/spec/template/spec/tolerations/0/tolerationSeconds", json!(60));
            },
            ..case("pre-existing removals, unrelated edit", "deployment", |n| {
                put(n, "/metadata/annotations/note", json!("hello"));
            })
        },
        Case {
            before: |o| put(o, &format!("{WEB}/image"), json!("web:hotfix")),
            expect: &["spec.template.spec.containers[name=web].image"],
            ..case("pre-existing drift moved further", "deployment", |n| {
                put(n, &format!("{WEB}/image"), json!("web:hotfix2"));
            })
        },
        Case {
            create: true,
            expect: &["spec.replicas"],
            ..case("CREATE with a changed field", "deployment", |n| {
                put(n, "/spec/replicas", json!(1));
            })
        },
        // --- Secret: stringData in Git vs data in the cluster
        case("stringData in Git is data in the cluster", "secret", noop),
        Case {
            create: true,
            ..case("Secret CREATE", "secret", noop)
        },
        Case {
            expect: &["data.password"],
            ..case("Secret value changed", "secret", |n| {
                put(n, "/data/password", json!("aHVudGVyMg=="));
            })
        },
        Case {
            expect: &["data[pool.yaml]"],
            ..case("Secret data key with a dot changed", "secret", |n| {
                put(n, "/data/pool.yaml", json!("cG9vbF9zaXplOiA1MAo="));
            })
        },
        Case {
            expect: &["data.username"],
            ..case("Secret key removed", "secret", |n| del(n, "/data/username"))
        },
        case("Secret undeclared key added", "secret", |n| {
            put(n, "/data/extra", json!("eA=="));
        }),
        // --- StatefulSet: defaults inside an atomic list
        case("volumeClaimTemplates defaults on UPDATE", "statefulset", noop),
        Case {
            create: true,
            ..case("volumeClaimTemplates defaults on CREATE", "statefulset", noop)
        },
        Case {
            expect: &["spec.volumeClaimTemplates"],
            ..case("volumeClaimTemplates storage changed", "statefulset", |n| {
                put(
                    n,
                    "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
                    json!("50Gi"),
                );
            })
        },
        Case {
            expect: &["spec.volumeClaimTemplates"],
            ..case("volumeClaimTemplates field added", "statefulset", |n| {
                put(
                    n,
                    "/spec/volumeClaimTemplates/0/spec/selector",
                    json!({"matchLabels": {"tier": "db"}}),
                );
            })
        },
        case("volumeClaimTemplates storage spelled differently", "statefulset", |n| {
            put(
                n,
                "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
                json!("20480Mi"),
            );
        }),
        // --- NetworkPolicy: `{}` selects everything; defaults inside atomic rules
        case("NetworkPolicy defaults inside atomic rules", "networkpolicy", noop),
        Case {
            create: true,
            ..case("NetworkPolicy CREATE", "networkpolicy", noop)
        },
        Case {
            expect: &["spec.podSelector"],
            ..case("empty podSelector narrowed", "networkpolicy", |n| {
                put(n, "/spec/podSelector/matchLabels", json!({"app": "web"}));
            })
        },
        Case {
            expect: &["spec.ingress"],
            ..case("ingress opened to every namespace", "networkpolicy", |n| {
                put(n, "/spec/ingress/0/from/0/namespaceSelector", json!({}));
            })
        },
        Case {
            expect: &["spec.ingress"],
            ..case("ingress port protocol changed", "networkpolicy", |n| {
                put(n, "/spec/ingress/0/ports/0/protocol", json!("UDP"));
            })
        },
        // --- Service: ports by port+protocol
        case("Service defaults", "service", noop),
        Case {
            create: true,
            ..case("Service CREATE", "service", noop)
        },
        case("Service ports reordered", "service", |n| {
            let ports = n.pointer_mut("/spec/ports").unwrap();
            ports.as_array_mut().unwrap().reverse();
        }),
        Case {
            expect: &["spec.ports[port=53,protocol=UDP].targetPort"],
            ..case("Service targetPort changed", "service", |n| {
                put(n, "/spec/ports/0/targetPort", json!(53));
            })
        },
        Case {
            expect: &["spec.ports[port=80,protocol=TCP].targetPort"],
            ..case("Service targetPort int vs string", "service", |n| {
                put(n, "/spec/ports/1/targetPort", json!(8080));
            })
        },
    ]
}

#[test]
fn table() {
    let mut failures = Vec::new();
    for c in cases() {
        let d = desired(c.kind);
        let mut o = live(c.kind);
        (c.before)(&mut o);
        let mut n = o.clone();
        (c.edit)(&mut n);
        let old = (!c.create).then_some(&o);
        let ignore = rules(c.ignore);
        let drifts = detect(&d, old, &n, &ignore);
        let mut got = paths(&drifts);
        got.sort();
        let mut want: Vec<String> = c.expect.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        if got != want {
            failures.push(format!("{}: got {got:#?}, want {want:#?}", c.name));
            continue;
        }
        // Every case doubles as a revert round trip.
        let patch = revert_patch(&n, &d, &drifts);
        assert_eq!(patch.0.is_empty(), drifts.is_empty(), "{}: {patch:?}", c.name);
        let reverted = apply(&n, &patch);
        let left = detect(&d, old, &reverted, &ignore);
        if !left.is_empty() {
            failures.push(format!("{}: drift left after revert: {:?}", c.name, paths(&left)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn drift_values_are_git_attempted_previous() {
    let d = desired("deployment");
    let o = live("deployment");
    let mut n = o.clone();
    put(&mut n, &format!("{WEB}/image"), json!("web:canary"));
    del(&mut n, "/metadata/labels/team");
    let drifts = detect(&d, Some(&o), &n, &[]);
    let image = drifts
        .iter()
        .find(|f| f.path.to_string().ends_with("image"))
        .expect("image drift");
    assert_eq!(image.git, Some(json!("registry.example.com/shop/web:1.4.2")));
    assert_eq!(image.attempted, Some(json!("web:canary")));
    assert_eq!(image.previous, Some(json!("registry.example.com/shop/web:1.4.2")));
    let label = drifts
        .iter()
        .find(|f| f.path.to_string() == "metadata.labels.team")
        .expect("label drift");
    assert_eq!(label.attempted, None);
    assert_eq!(label.previous, Some(json!("storefront")));
    assert!(label.path.starts_with_key("metadata"));
    assert!(!label.path.starts_with_key("data"));
}

#[test]
fn secret_paths_are_recognizable_for_masking() {
    let d = desired("secret");
    let o = live("secret");
    let mut n = o.clone();
    put(&mut n, "/data/password", json!("aHVudGVyMg=="));
    let drifts = detect(&d, Some(&o), &n, &[]);
    assert_eq!(drifts.len(), 1);
    assert!(drifts[0].path.starts_with_key("data"));
    // Git's value is the base64 of the stringData the manifest declared.
    assert_eq!(drifts[0].git, Some(json!("Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==")));
}

#[test]
fn revert_patch_operations() {
    let d = desired("deployment");
    let o = live("deployment");

    // A changed image: one replace at the container's index in the new object.
    let mut n = o.clone();
    n.pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .unwrap()
        .reverse();
    put(&mut n, "/spec/template/spec/containers/1/image", json!("web:canary"));
    let patch = revert_patch(&n, &d, &detect(&d, Some(&o), &n, &[]));
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image",
                "value": "registry.example.com/shop/web:1.4.2"}])
    );

    // A removed container: one add of Git's element at the end of the list.
    let mut n = o.clone();
    del(&mut n, SHIPPER);
    let patch = revert_patch(&n, &d, &detect(&d, Some(&o), &n, &[]));
    let want = d.pointer(SHIPPER).cloned().unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "add", "path": "/spec/template/spec/containers/-", "value": want}])
    );

    // A removed map: one add creating the parent from Git.
    let mut n = o.clone();
    del(&mut n, &format!("{WEB}/resources"));
    let patch = revert_patch(&n, &d, &detect(&d, Some(&o), &n, &[]));
    assert_eq!(patch.0.len(), 1, "{patch:?}");
    assert!(matches!(&patch.0[0], PatchOperation::Add(op)
        if op.path.as_str() == "/spec/template/spec/containers/0/resources"
        && op.value == d.pointer(&format!("{WEB}/resources")).cloned().unwrap()));

    // An atomic list: replaced whole.
    let mut n = o.clone();
    put(&mut n, "/spec/template/spec/tolerations/0/value", json!("batch"));
    let patch = revert_patch(&n, &d, &detect(&d, Some(&o), &n, &[]));
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "replace", "path": "/spec/template/spec/tolerations",
                "value": d.pointer("/spec/template/spec/tolerations").cloned().unwrap()}])
    );

    // A removed label on a keyed label map with an escaped key.
    let mut n = o.clone();
    del(&mut n, "/metadata/labels/app.kubernetes.io~1part-of");
    let patch = revert_patch(&n, &d, &detect(&d, Some(&o), &n, &[]));
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/labels/app.kubernetes.io~1part-of", "value": "shop"}])
    );
}

#[test]
fn pointer_in_follows_keys_not_positions() {
    let d = desired("deployment");
    let o = live("deployment");
    let mut n = o.clone();
    n.pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .unwrap()
        .reverse();
    put(&mut n, "/spec/template/spec/containers/1/env/0/value", json!("debug"));
    let drifts = detect(&d, Some(&o), &n, &[]);
    assert_eq!(drifts.len(), 1);
    let path = &drifts[0].path;
    assert_eq!(
        path.pointer_in(&n).as_deref(),
        Some("/spec/template/spec/containers/1/env/0/value")
    );
    assert_eq!(
        path.pointer_in(&d).as_deref(),
        Some("/spec/template/spec/containers/0/env/0/value")
    );
    assert_eq!(path.resolve(&d), Some(&json!("info")));
    assert!(matches!(
        path.segments().get(4),
        Some(PathSegment::Element(key)) if key.desired_index() == 0
            && key.fields().collect::<Vec<_>>() == vec![("name", &json!("web"))]
    ));
    // A keyed element that is not there has no pointer.
    let mut gone = n.clone();
    del(&mut gone, "/spec/template/spec/containers/1");
    assert_eq!(path.pointer_in(&gone), None);
    assert_eq!(path.resolve(&gone), None);
}

#[test]
fn field_path_serializes_as_display() {
    let d = desired("deployment");
    let o = live("deployment");
    let mut n = o.clone();
    put(&mut n, &format!("{WEB}/ports/1/name"), json!("prom"));
    let drifts = detect(&d, Some(&o), &n, &[]);
    let path = &drifts[0].path;
    assert_eq!(
        serde_json::to_value(path).unwrap(),
        json!("spec.template.spec.containers[name=web].ports[containerPort=9090,protocol=TCP].name")
    );
}

#[test]
fn ignoring_the_root_ignores_everything() {
    let d = desired("deployment");
    let o = live("deployment");
    let mut n = o.clone();
    put(&mut n, "/spec/replicas", json!(9));
    assert!(detect(&d, Some(&o), &n, &rules(&[""])).is_empty());
    assert_eq!(detect(&d, Some(&o), &n, &[]).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Property: applying the revert patch always leaves no drift.

#[derive(Debug, Clone)]
enum Edit {
    Image(usize, &'static str),
    Replicas(u8),
    EnvValue(usize, usize, &'static str),
    RemoveEnv(usize, usize),
    AddEnv(usize, &'static str),
    /// A duplicate env name inserted first (the API server accepts duplicate env names).
    DuplicateEnvFront(usize, &'static str),
    RemoveContainer(usize),
    AddContainer(&'static str),
    RotateContainers(usize),
    ReverseEnv(usize),
    SetLabel(&'static str, &'static str),
    RemoveLabel(&'static str),
    RemoveLabels,
    RestartedAt(&'static str),
    Quantity(usize, &'static str, &'static str, Value),
    /// Like `Quantity`, on the container named `web` wherever it is.
    WebQuantity(&'static str, &'static str, Value),
    RemoveResources(usize),
    NullResources(usize),
    Toleration(&'static str),
    RemoveTolerations,
    SecurityContext(Option<i64>),
    PortProtocol(usize, &'static str),
    RemoveVolume(usize),
    Undeclared(&'static str, Value),
    RemoveTemplateLabels,
    Args(Vec<&'static str>),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let tag = prop::sample::select(vec![
        "registry.example.com/shop/web:1.4.2",
        "registry.example.com/tools/shipper:2.0.1",
        "web:canary",
        "busybox:1.36",
    ]);
    let quantity = prop::sample::select(vec![
        json!("500m"),
        json!("0.5"),
        json!(0.5),
        json!("1"),
        json!(1),
        json!("250m"),
        json!("100m"),
        json!("512Mi"),
        json!("536870912"),
        json!("0.25Gi"),
        json!("128Mi"),
        json!("2Gi"),
    ]);
    let label_key = prop::sample::select(vec![
        "app.kubernetes.io/name",
        "app.kubernetes.io/part-of",
        "team",
        "debug",
    ]);
    let label_value = prop::sample::select(vec!["web", "shop", "storefront", "checkout", "x"]);
    let word = prop::sample::select(vec!["info", "debug", "db.shop.svc", "other"]);
    prop_oneof![
        (any::<usize>(), tag).prop_map(|(i, t)| Edit::Image(i, t)),
        (0u8..6).prop_map(Edit::Replicas),
        (any::<usize>(), any::<usize>(), word.clone()).prop_map(|(c, e, v)| Edit::EnvValue(c, e, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(c, e)| Edit::RemoveEnv(c, e)),
        (any::<usize>(), prop::sample::select(vec!["LOG_LEVEL", "NEW_VAR"])).prop_map(|(c, n)| Edit::AddEnv(c, n)),
        (any::<usize>(), prop::sample::select(vec!["LOG_LEVEL", "DB_HOST"]))
            .prop_map(|(c, n)| Edit::DuplicateEnvFront(c, n)),
        any::<usize>().prop_map(Edit::RemoveContainer),
        prop::sample::select(vec!["web", "log-shipper", "debug"]).prop_map(Edit::AddContainer),
        any::<usize>().prop_map(Edit::RotateContainers),
        any::<usize>().prop_map(Edit::ReverseEnv),
        (label_key.clone(), label_value).prop_map(|(k, v)| Edit::SetLabel(k, v)),
        label_key.prop_map(Edit::RemoveLabel),
        Just(Edit::RemoveLabels),
        prop::sample::select(vec!["2025-04-01T00:00:00Z", "2025-04-02T00:00:00Z"]).prop_map(Edit::RestartedAt),
        (
            any::<usize>(),
            prop::sample::select(vec!["limits", "requests"]),
            prop::sample::select(vec!["cpu", "memory"]),
            quantity
        )
            .prop_map(|(c, kind, res, q)| Edit::Quantity(c, kind, res, q)),
        any::<usize>().prop_map(Edit::RemoveResources),
        any::<usize>().prop_map(Edit::NullResources),
        prop::sample::select(vec!["web", "batch"]).prop_map(Edit::Toleration),
        Just(Edit::RemoveTolerations),
        prop::option::of(0i64..2000).prop_map(Edit::SecurityContext),
        (any::<usize>(), prop::sample::select(vec!["TCP", "UDP"])).prop_map(|(p, proto)| Edit::PortProtocol(p, proto)),
        any::<usize>().prop_map(Edit::RemoveVolume),
        prop::sample::select(vec![
            ("/spec/minReadySeconds", json!(5)),
            ("/spec/paused", json!(true)),
            ("/spec/template/spec/dnsPolicy", json!("Default")),
            ("/spec/template/spec/priorityClassName", json!("high")),
            ("/metadata/annotations/note", json!("hi")),
        ])
        .prop_map(|(p, v)| Edit::Undeclared(p, v)),
        Just(Edit::RemoveTemplateLabels),
        prop::collection::vec(
            prop::sample::select(vec!["--listen=:8080", "--log-format=json", "--debug"]),
            0..3
        )
        .prop_map(Edit::Args),
    ]
}

fn containers(v: &mut Value) -> &mut Vec<Value> {
    v.pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .expect("containers")
}

fn nth<T>(list: &mut [T], i: usize) -> Option<&mut T> {
    let len = list.len();
    (len > 0).then(move || &mut list[i % len])
}

/// Remove element `i` modulo the length, if any.
fn remove_nth(list: &mut Vec<Value>, i: usize) {
    if !list.is_empty() {
        let i = i % list.len();
        list.remove(i);
    }
}

fn object(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("object")
}

fn apply_edit(v: &mut Value, edit: &Edit) {
    match edit {
        Edit::Image(c, tag) => {
            if let Some(c) = nth(containers(v), *c) {
                c["image"] = json!(tag);
            }
        }
        Edit::Replicas(r) => v["spec"]["replicas"] = json!(r),
        Edit::EnvValue(c, e, val) => {
            if let Some(e) = nth(containers(v), *c)
                .and_then(|c| c.get_mut("env"))
                .and_then(Value::as_array_mut)
                .and_then(|l| nth(l, *e))
            {
                e["value"] = json!(val);
            }
        }
        Edit::RemoveEnv(c, e) => {
            if let Some(env) = nth(containers(v), *c)
                .and_then(|c| c.get_mut("env"))
                .and_then(Value::as_array_mut)
            {
                remove_nth(env, *e);
            }
        }
        Edit::AddEnv(c, name) => {
            if let Some(c) = nth(containers(v), *c) {
                let env = object(c).entry("env").or_insert_with(|| json!([]));
                if let Some(env) = env.as_array_mut() {
                    env.push(json!({"name": name, "value": "added"}));
                }
            }
        }
        Edit::DuplicateEnvFront(c, name) => {
            if let Some(env) = nth(containers(v), *c)
                .and_then(|c| c.get_mut("env"))
                .and_then(Value::as_array_mut)
            {
                env.insert(0, json!({"name": name, "value": "shadow"}));
            }
        }
        Edit::RemoveContainer(c) => remove_nth(containers(v), *c),
        Edit::AddContainer(name) => {
            let list = containers(v);
            if !list.iter().any(|c| c["name"] == json!(name)) {
                list.push(json!({"name": name, "image": "busybox:1.36"}));
            }
        }
        Edit::RotateContainers(k) => {
            let list = containers(v);
            if !list.is_empty() {
                let k = k % list.len();
                list.rotate_left(k);
            }
        }
        Edit::ReverseEnv(c) => {
            if let Some(env) = nth(containers(v), *c)
                .and_then(|c| c.get_mut("env"))
                .and_then(Value::as_array_mut)
            {
                env.reverse();
            }
        }
        Edit::SetLabel(k, val) => {
            object(&mut v["metadata"]["labels"]).insert((*k).to_owned(), json!(val));
        }
        Edit::RemoveLabel(k) => {
            if let Some(m) = v["metadata"]["labels"].as_object_mut() {
                m.remove(*k);
            }
        }
        Edit::RemoveLabels => {
            object(&mut v["metadata"]).remove("labels");
        }
        Edit::RestartedAt(t) => {
            object(&mut v["spec"]["template"]["metadata"]["annotations"])
                .insert("kubectl.kubernetes.io/restartedAt".to_owned(), json!(t));
        }
        Edit::Quantity(c, kind, res, q) => {
            if let Some(c) = nth(containers(v), *c) {
                let resources = object(c).entry("resources").or_insert_with(|| json!({}));
                let kind = object(resources).entry(*kind).or_insert_with(|| json!({}));
                object(kind).insert((*res).to_owned(), q.clone());
            }
        }
        Edit::WebQuantity(kind, res, q) => {
            if let Some(c) = containers(v).iter_mut().find(|c| c["name"] == json!("web")) {
                c["resources"][*kind][*res] = q.clone();
            }
        }
        Edit::RemoveResources(c) => {
            if let Some(c) = nth(containers(v), *c) {
                object(c).remove("resources");
            }
        }
        Edit::NullResources(c) => {
            if let Some(c) = nth(containers(v), *c) {
                c["resources"] = Value::Null;
            }
        }
        Edit::Toleration(val) => {
            v["spec"]["template"]["spec"]["tolerations"] =
                json!([{"key": "dedicated", "operator": "Equal", "value": val, "effect": "NoSchedule"}]);
        }
        Edit::RemoveTolerations => {
            object(&mut v["spec"]["template"]["spec"]).remove("tolerations");
        }
        Edit::SecurityContext(user) => {
            let spec = object(&mut v["spec"]["template"]["spec"]);
            match user {
                Some(u) => {
                    spec.insert("securityContext".to_owned(), json!({"runAsUser": u}));
                }
                None => {
                    spec.remove("securityContext");
                }
            }
        }
        Edit::PortProtocol(p, proto) => {
            if let Some(port) = nth(containers(v), 0)
                .and_then(|c| c.get_mut("ports"))
                .and_then(Value::as_array_mut)
                .and_then(|l| nth(l, *p))
            {
                port["protocol"] = json!(proto);
            }
        }
        Edit::RemoveVolume(i) => {
            if let Some(list) = v
                .pointer_mut("/spec/template/spec/volumes")
                .and_then(Value::as_array_mut)
            {
                remove_nth(list, *i);
            }
        }
        Edit::Undeclared(pointer, val) => put(v, pointer, val.clone()),
        Edit::RemoveTemplateLabels => {
            object(&mut v["spec"]["template"]["metadata"]).remove("labels");
        }
        Edit::Args(args) => {
            if let Some(c) = nth(containers(v), 0) {
                c["args"] = json!(args);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// UPDATE: whatever was drifted before and whatever the request does, the revert patch
    /// applies cleanly and leaves no drift; every reported drift really differs.
    #[test]
    fn revert_leaves_no_drift_on_update(
        before in prop::collection::vec(edit_strategy(), 0..3),
        edits in prop::collection::vec(edit_strategy(), 0..6),
    ) {
        let d = desired("deployment");
        let mut o = live("deployment");
        for e in &before {
            apply_edit(&mut o, e);
        }
        let mut n = o.clone();
        for e in &edits {
            apply_edit(&mut n, e);
        }
        let drifts = detect(&d, Some(&o), &n, &[]);
        for f in &drifts {
            prop_assert_ne!(&f.git, &f.attempted, "{}", f.path);
        }
        let patch = revert_patch(&n, &d, &drifts);
        let mut reverted = n.clone();
        prop_assert!(json_patch::patch(&mut reverted, &patch).is_ok(), "{:?}", patch);
        let left = detect(&d, Some(&o), &reverted, &[]);
        prop_assert!(left.is_empty(), "left: {:?}\npatch: {:?}", paths(&left), patch);
    }

    /// CREATE: the same with no old object.
    #[test]
    fn revert_leaves_no_drift_on_create(edits in prop::collection::vec(edit_strategy(), 0..6)) {
        let d = desired("deployment");
        let mut n = live("deployment");
        for e in &edits {
            apply_edit(&mut n, e);
        }
        let drifts = detect(&d, None, &n, &[]);
        let patch = revert_patch(&n, &d, &drifts);
        let mut reverted = n.clone();
        prop_assert!(json_patch::patch(&mut reverted, &patch).is_ok(), "{:?}", patch);
        let left = detect(&d, None, &reverted, &[]);
        prop_assert!(left.is_empty(), "left: {:?}\npatch: {:?}", paths(&left), patch);
    }

    /// Edits that only reorder keyed lists, respell quantities or touch undeclared fields
    /// are never drift.
    #[test]
    fn benign_edits_are_not_drift(edits in prop::collection::vec(prop_oneof![
        any::<usize>().prop_map(Edit::RotateContainers),
        any::<usize>().prop_map(Edit::ReverseEnv),
        prop::sample::select(vec!["2025-04-01T00:00:00Z"]).prop_map(Edit::RestartedAt),
        Just(Edit::SetLabel("debug", "x")),
        Just(Edit::WebQuantity("limits", "cpu", json!(0.5))),
        Just(Edit::WebQuantity("limits", "cpu", json!("0.5"))),
        Just(Edit::WebQuantity("requests", "memory", json!("0.25Gi"))),
        Just(Edit::WebQuantity("requests", "memory", json!("268435456"))),
        Just(Edit::AddContainer("debug")),
        Just(Edit::AddEnv(0, "NEW_VAR")),
        Just(Edit::SecurityContext(Some(1000))),
        prop::sample::select(vec![
            ("/spec/minReadySeconds", json!(5)),
            ("/spec/template/spec/dnsPolicy", json!("Default")),
            ("/metadata/annotations/note", json!("hi")),
        ]).prop_map(|(p, v)| Edit::Undeclared(p, v)),
    ], 0..8)) {
        let d = desired("deployment");
        let o = live("deployment");
        let mut n = o.clone();
        for e in &edits {
            apply_edit(&mut n, e);
        }
        let update = detect(&d, Some(&o), &n, &[]);
        prop_assert!(update.is_empty(), "{:?}", paths(&update));
        let create = detect(&d, None, &n, &[]);
        prop_assert!(create.is_empty(), "{:?}", paths(&create));
    }
}
