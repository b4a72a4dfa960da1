//! The patch engines of the test API server against what kube-apiserver does: merge patch,
//! strategic merge patch with kubectl's directives, JSON patch errors, server-side apply and
//! managedFields. Pure: no server is started.
use driftguard_testapi::ApiError;
use driftguard_testapi::patch::{
    CUSTOM_RESOURCE_PATCH_TYPES_MESSAGE, PatchType, apply_patch, record_update, server_side_apply,
    supports_strategic_merge,
};
use serde_json::{Value, json};

const T0: &str = "2024-05-01T10:00:00Z";
const T1: &str = "2024-05-01T11:00:00Z";
const T2: &str = "2024-05-01T12:00:00Z";
const T3: &str = "2024-05-01T13:00:00Z";

/// A Deployment as kube-apiserver returns it after `kubectl apply -f` (defaulted).
fn live_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "4b5c3a52-8f0e-4d2b-9c7e-0f1d2e3a4b5c",
            "resourceVersion": "1042",
            "generation": 3,
            "creationTimestamp": T0,
            "labels": {"app": "web", "tier": "frontend"},
            "finalizers": ["example.com/protect", "kubernetes.io/keep"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}, {"name": "LOG_LEVEL", "value": "info"}],
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        },
                        {
                            "name": "sidecar",
                            "image": "busybox:1.36",
                            "args": ["sleep", "infinity"],
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        },
                    ],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 2},
    })
}

fn patch(kind: PatchType, original: &Value, body: Value) -> Result<Value, ApiError> {
    apply_patch(kind, original, body.to_string().as_bytes(), "apps", "Deployment")
}

fn smp(original: &Value, body: Value) -> Value {
    patch(PatchType::StrategicMerge, original, body).unwrap()
}

fn containers(object: &Value) -> &Vec<Value> {
    object["spec"]["template"]["spec"]["containers"].as_array().unwrap()
}

fn container<'a>(object: &'a Value, name: &str) -> &'a Value {
    containers(object).iter().find(|c| c["name"] == name).unwrap()
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().map(|c| c["name"].as_str().unwrap()).collect()
}

/// The live object with one JSON pointer set (for "everything else is unchanged" checks).
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    *object.pointer_mut(pointer).unwrap() = value;
    object
}

#[test]
fn merge_patch_deletes_with_null_and_replaces_lists() {
    let live = live_deployment();
    let out = patch(
        PatchType::Merge,
        &live,
        json!({
            "metadata": {"labels": {"tier": null, "team": "payments"}},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "solo", "image": "alpine:3"}]}}},
        }),
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "team": "payments"}));
    assert_eq!(out["spec"]["replicas"], 5);
    // RFC 7386: a list is replaced whole, never merged by key.
    assert_eq!(containers(&out), &vec![json!({"name": "solo", "image": "alpine:3"})]);
    assert_eq!(out["spec"]["strategy"], live["spec"]["strategy"]);

    let err = apply_patch(PatchType::Merge, &live, b"{not json", "apps", "Deployment").unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
}

#[test]
fn strategic_merge_changes_one_container_by_name() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1.37"}]}}}}),
    );
    assert_eq!(
        out,
        with(live, "/spec/template/spec/containers/1/image", json!("busybox:1.37"))
    );
}

#[test]
fn strategic_merge_set_element_order_as_kubectl_set_image_sends_it() {
    let live = live_deployment();
    // Exactly what `kubectl set image deployment/web web=nginx:1.27` sends.
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{"image": "nginx:1.27", "name": "web"}],
    }}}});
    let out = smp(&live, body);
    assert_eq!(
        out,
        with(
            live.clone(),
            "/spec/template/spec/containers/0/image",
            json!("nginx:1.27")
        )
    );

    // The directive alone reorders the live list.
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}),
    );
    assert_eq!(names(containers(&out)), ["sidecar", "web"]);

    // A patch list out of the directive's order is refused, as apimachinery does (a 500).
    let err = patch(
        PatchType::StrategicMerge,
        &live,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar", "image": "a"}, {"name": "web", "image": "b"}],
        }}}}),
    )
    .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(
        err.message.contains("doesn't match $setElementOrder list"),
        "{}",
        err.message
    );
}

#[test]
fn strategic_merge_patch_delete_removes_a_container() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
    );
    assert_eq!(names(containers(&out)), ["web"]);
    assert_eq!(container(&out, "web"), container(&live, "web"));

    // What `kubectl edit` sends after deleting the sidecar.
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}],
        }}}}),
    );
    assert_eq!(names(containers(&out)), ["web"]);
}

#[test]
fn strategic_merge_patch_replace_on_a_list_and_a_map() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "solo", "image": "alpine:3"}, {"$patch": "replace"}]}}}}),
    );
    assert_eq!(containers(&out), &vec![json!({"name": "solo", "image": "alpine:3"})]);

    let out = smp(
        &live,
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
}

#[test]
fn strategic_merge_retain_keys_switches_the_strategy() {
    let live = live_deployment();
    // What `kubectl apply` sends when the manifest changes RollingUpdate to Recreate.
    let out = smp(
        &live,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // Without the directive the map merges and rollingUpdate stays.
    let out = smp(&live, json!({"spec": {"strategy": {"type": "Recreate"}}}));
    assert_eq!(
        out["spec"]["strategy"]["rollingUpdate"],
        live["spec"]["strategy"]["rollingUpdate"]
    );
    // A retained-keys list must name every key the patch sets (400).
    let err = patch(
        PatchType::StrategicMerge,
        &live,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
    )
    .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "invalid patch format of retainKeys")
    );
}

#[test]
fn strategic_merge_delete_from_primitive_list_finalizers() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/protect"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["kubernetes.io/keep"]));
    assert_eq!(
        out,
        with(live.clone(), "/metadata/finalizers", json!(["kubernetes.io/keep"]))
    );

    // What `kubectl edit` sends after appending a finalizer: the order list places it last.
    let out = smp(
        &live,
        json!({"metadata": {
            "$setElementOrder/finalizers": ["example.com/protect", "kubernetes.io/keep", "example.com/new"],
            "finalizers": ["example.com/new"],
        }}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/protect", "kubernetes.io/keep", "example.com/new"])
    );
}

#[test]
fn strategic_merge_env_merges_by_name() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web",
            "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "FEATURE", "value": "on"}],
        }]}}}}),
    );
    assert_eq!(
        container(&out, "web")["env"],
        json!([{"name": "MODE", "value": "prod"}, {"name": "LOG_LEVEL", "value": "debug"}, {"name": "FEATURE", "value": "on"}])
    );
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "MODE", "$patch": "delete"}]}]}}}}),
    );
    assert_eq!(
        container(&out, "web")["env"],
        json!([{"name": "LOG_LEVEL", "value": "info"}])
    );
}

#[test]
fn strategic_merge_ports_merge_by_container_port() {
    let live = live_deployment();
    let out = smp(
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web",
            "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 9090, "name": "metrics"}],
        }]}}}}),
    );
    assert_eq!(
        container(&out, "web")["ports"],
        json!([{"containerPort": 80, "name": "web", "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}])
    );
    // A list element without its merge key is apimachinery's 500.
    let err = patch(
        PatchType::StrategicMerge,
        &live,
        json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.27"}]}}}}),
    )
    .unwrap_err();
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "map: map[image:nginx:1.27] does not contain declared merge key: name"
    );
}

#[test]
fn strategic_merge_of_a_custom_resource_is_415() {
    let widget =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let err = apply_patch(
        PatchType::StrategicMerge,
        &widget,
        br#"{"spec":{"size":2}}"#,
        "example.com",
        "Widget",
    )
    .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"));
    assert_eq!(err.message, CUSTOM_RESOURCE_PATCH_TYPES_MESSAGE);
    assert_eq!(
        err.status(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 415,
               "reason": "UnsupportedMediaType",
               "message": "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"})
    );
    assert!(!supports_strategic_merge("example.com", "Widget"));
    assert!(supports_strategic_merge("", "ConfigMap"));
    // The other patch types work on custom resources.
    let out = apply_patch(
        PatchType::Merge,
        &widget,
        br#"{"spec":{"size":2}}"#,
        "example.com",
        "Widget",
    )
    .unwrap();
    assert_eq!(out["spec"]["size"], 2);
}

#[test]
fn json_patch_failed_test_operation_is_422() {
    let live = live_deployment();
    let body = json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
    ]);
    let err = patch(PatchType::Json, &live, body).unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(
        err.details,
        Some(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "testing value /spec/replicas failed: test failed"}]})
        )
    );

    let ok = patch(
        PatchType::Json,
        &live,
        json!([{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 5}]),
    )
    .unwrap();
    assert_eq!(ok, with(live.clone(), "/spec/replicas", json!(5)));

    let err = apply_patch(PatchType::Json, &live, br#"{"op":"add"}"#, "apps", "Deployment").unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    );
}

/// What `kubectl apply --server-side` sends for the `web` Deployment (image and replicas vary).
fn applied(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": image,
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "MODE", "value": "prod"}],
                }]},
            },
        },
    })
}

fn managed_fields(object: &Value) -> &Vec<Value> {
    object["metadata"]["managedFields"].as_array().unwrap()
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    managed_fields(object)
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owns(object: &Value, manager: &str, operation: &str, pointer: &str) -> bool {
    entry(object, manager, operation).is_some_and(|e| e["fieldsV1"].pointer(pointer).is_some())
}

#[test]
fn apply_creates_with_managed_fields_in_kube_form() {
    let created = server_side_apply(None, &applied(2, "nginx:1.25"), "kubectl", false, None, T0).unwrap();
    let mut expected_object = applied(2, "nginx:1.25");
    // Shaped like kube's answer to `kubectl apply --server-side` (before defaulting): the port's
    // key carries the defaulted protocol, list elements own ".", the selector is atomic.
    expected_object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {},
                        "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                    }}},
                },
            },
        },
    }]);
    assert_eq!(created, expected_object);

    let mut no_name = applied(2, "nginx:1.25");
    no_name["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(
        server_side_apply(None, &no_name, "kubectl", false, None, T0)
            .unwrap_err()
            .code,
        400
    );
    let err = server_side_apply(None, &json!({"metadata": {"name": "x"}}), "kubectl", false, None, T0).unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (400, "invalid object type: /, Kind="));
    let mut with_managed = applied(2, "nginx:1.25");
    with_managed["metadata"]["managedFields"] = json!([]);
    let err = server_side_apply(None, &with_managed, "kubectl", false, None, T0).unwrap_err();
    assert_eq!(err.message, "metadata.managedFields must be nil");
}

/// The applied Deployment after `kubectl edit` (SMP from the manager `kubectl-edit`) set
/// `changes` (a strategic merge patch).
fn edited(live: &Value, changes: Value, now: &str) -> Value {
    let mut new = apply_patch(
        PatchType::StrategicMerge,
        live,
        changes.to_string().as_bytes(),
        "apps",
        "Deployment",
    )
    .unwrap();
    record_update(Some(live), &mut new, "kubectl-edit", None, now);
    new
}

#[test]
fn apply_conflict_names_the_manager_and_field() {
    let created = server_side_apply(None, &applied(2, "nginx:1.25"), "kubectl", false, None, T0).unwrap();
    let after_edit = edited(&created, json!({"spec": {"replicas": 5}}), T1);
    assert!(owns(&after_edit, "kubectl-edit", "Update", "/f:spec/f:replicas"));
    assert!(!owns(&after_edit, "kubectl", "Apply", "/f:spec/f:replicas"));

    let err = server_side_apply(Some(&after_edit), &applied(2, "nginx:1.25"), "kubectl", false, None, T2).unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
    );
    assert_eq!(
        err.details,
        Some(
            json!({"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.replicas"}]})
        )
    );

    // Two fields changed by the other manager: kube's multi-line form.
    let after_two = edited(
        &after_edit,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}}),
        T2,
    );
    let err = server_side_apply(Some(&after_two), &applied(2, "nginx:1.25"), "kubectl", false, None, T3).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
    );
    let fields: Vec<&str> = err.details.as_ref().unwrap()["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [".spec.replicas", ".spec.template.spec.containers[name=\"web\"].image"]
    );
}

#[test]
fn apply_force_transfers_ownership() {
    let created = server_side_apply(None, &applied(2, "nginx:1.25"), "kubectl", false, None, T0).unwrap();
    let after_edit = edited(&created, json!({"spec": {"replicas": 5}}), T1);
    let forced = server_side_apply(Some(&after_edit), &applied(2, "nginx:1.25"), "kubectl", true, None, T2).unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert!(owns(&forced, "kubectl", "Apply", "/f:spec/f:replicas"));
    // kubectl-edit owned nothing else: its entry is gone.
    assert!(entry(&forced, "kubectl-edit", "Update").is_none());
    assert_eq!(entry(&forced, "kubectl", "Apply").unwrap()["time"], T2);
    assert_eq!(managed_fields(&forced).len(), 1);
}

#[test]
fn apply_of_an_equal_value_shares_ownership() {
    let created = server_side_apply(None, &applied(2, "nginx:1.25"), "kubectl", false, None, T0).unwrap();
    let replicas_only = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}});
    let shared = server_side_apply(Some(&created), &replicas_only, "driftguard", false, None, T1).unwrap();
    assert!(owns(&shared, "kubectl", "Apply", "/f:spec/f:replicas"));
    assert!(owns(&shared, "driftguard", "Apply", "/f:spec/f:replicas"));
    // The object did not change: kube leaves the new entry without a time.
    assert_eq!(entry(&shared, "driftguard", "Apply").unwrap().get("time"), None);
    let mut unchanged = shared.clone();
    unchanged["metadata"]["managedFields"] = created["metadata"]["managedFields"].clone();
    assert_eq!(unchanged, created);

    // A different value from a third manager now conflicts with both appliers.
    let err = server_side_apply(
        Some(&shared),
        &with(replicas_only, "/spec/replicas", json!(7)),
        "hpa-tool",
        false,
        None,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"driftguard\":\n- .spec.replicas\nconflicts with \"kubectl\":\n- .spec.replicas"
    );
}

#[test]
fn apply_without_a_field_removes_it_unless_another_manager_owns_it() {
    let mut first = applied(2, "nginx:1.25");
    first["metadata"]["labels"]["tier"] = json!("frontend");
    first["metadata"]["annotations"] = json!({"team": "payments"});
    let created = server_side_apply(None, &first, "kubectl", false, None, T0).unwrap();
    // Another applier shares `tier`; a label added by `kubectl label` is not kubectl's.
    let shared_tier = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"tier": "frontend"}}});
    let shared = server_side_apply(Some(&created), &shared_tier, "driftguard", false, None, T1).unwrap();
    let mut labelled = patch(
        PatchType::Merge,
        &shared,
        json!({"metadata": {"labels": {"owner": "ops"}}}),
    )
    .unwrap();
    record_update(Some(&shared), &mut labelled, "kubectl-label", None, T1);

    // The next apply drops the tier label, the annotations and the env list.
    let mut second = applied(2, "nginx:1.25");
    second["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("env");
    let out = server_side_apply(Some(&labelled), &second, "kubectl", false, None, T2).unwrap();
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "frontend", "owner": "ops"})
    );
    assert_eq!(out["metadata"].get("annotations"), None);
    assert_eq!(container(&out, "web").get("env"), None);
    assert_eq!(container(&out, "web")["ports"], json!([{"containerPort": 80}]));
    assert!(!owns(&out, "kubectl", "Apply", "/f:metadata/f:labels/f:tier"));
    assert!(owns(&out, "driftguard", "Apply", "/f:metadata/f:labels/f:tier"));
    assert!(owns(&out, "kubectl-label", "Update", "/f:metadata/f:labels/f:owner"));
}

#[test]
fn apply_to_an_object_without_managed_fields_records_before_first_apply() {
    let mut live = live_deployment();
    let err = server_side_apply(Some(&live), &applied(4, "nginx:1.25"), "driftguard", false, None, T1).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
    );
    live["spec"]["replicas"] = json!(4);
    let out = server_side_apply(Some(&live), &applied(4, "nginx:1.25"), "driftguard", false, None, T1).unwrap();
    let before = entry(&out, "before-first-apply", "Update").unwrap();
    assert_eq!(before["time"], T1);
    assert!(before["fieldsV1"].pointer("/f:spec/f:replicas").is_some());
    assert!(before["fieldsV1"].pointer("/f:status").is_none());
    // The live port's protocol is not in the applied configuration, and stays.
    assert_eq!(
        container(&out, "web")["ports"],
        json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
    );
}

/// A Deployment as stored after `kubectl create deployment web --image=nginx:1.25` (defaulted).
fn created_by_kubectl_create() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u-1",
                     "resourceVersion": "1", "generation": 1, "creationTimestamp": T0},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "nginx", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent", "resources": {},
                                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "securityContext": {}, "terminationGracePeriodSeconds": 30,
                },
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {},
    })
}

#[test]
fn update_on_create_records_kubectl_create_like_kube() {
    let mut created = created_by_kubectl_create();
    record_update(None, &mut created, "kubectl-create", None, T0);
    // kube's managedFields for `kubectl create deployment`: maps that the zero-value Deployment
    // lacks (labels, rollingUpdate) own "."; spec, strategy and template do not.
    assert_eq!(
        created["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:progressDeadlineSeconds": {},
                    "f:replicas": {},
                    "f:revisionHistoryLimit": {},
                    "f:selector": {},
                    "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            "f:containers": {"k:{\"name\":\"nginx\"}": {
                                ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
                                "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {},
                            }},
                            "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {},
                        },
                    },
                },
            },
        }])
    );
}

#[test]
fn update_by_kubectl_edit_takes_the_changed_fields() {
    let mut created = created_by_kubectl_create();
    record_update(None, &mut created, "kubectl-create", None, T0);
    let edited_once = edited(
        &created,
        json!({"metadata": {"annotations": {"note": "scaled for sale"}}, "spec": {"replicas": 3}}),
        T1,
    );
    let edit = entry(&edited_once, "kubectl-edit", "Update").unwrap();
    assert_eq!(
        edit["fieldsV1"],
        json!({"f:metadata": {"f:annotations": {".": {}, "f:note": {}}}, "f:spec": {"f:replicas": {}}})
    );
    assert_eq!(edit["time"], T1);
    assert!(!owns(&edited_once, "kubectl-create", "Update", "/f:spec/f:replicas"));
    assert!(owns(
        &edited_once,
        "kubectl-create",
        "Update",
        "/f:spec/f:revisionHistoryLimit"
    ));
    assert_eq!(entry(&edited_once, "kubectl-create", "Update").unwrap()["time"], T0);

    // A second edit by the same manager joins its entry; an edit that changes nothing keeps the time.
    let edited_twice = edited(&edited_once, json!({"spec": {"paused": true}}), T2);
    let edit = entry(&edited_twice, "kubectl-edit", "Update").unwrap();
    assert!(
        edit["fieldsV1"].pointer("/f:spec/f:replicas").is_some()
            && edit["fieldsV1"].pointer("/f:spec/f:paused").is_some()
    );
    assert_eq!(edit["time"], T2);
    let unchanged = edited(&edited_twice, json!({"spec": {"paused": true}}), T3);
    assert_eq!(
        unchanged["metadata"]["managedFields"],
        edited_twice["metadata"]["managedFields"]
    );

    // Removing a field removes it from its owner; status changes are not recorded on the main resource.
    let mut removed = apply_patch(
        PatchType::Merge,
        &edited_twice,
        br#"{"metadata":{"annotations":null},"status":{"replicas":3}}"#,
        "apps",
        "Deployment",
    )
    .unwrap();
    record_update(Some(&edited_twice), &mut removed, "kubectl-patch", None, T3);
    assert!(entry(&removed, "kubectl-patch", "Update").is_none());
    assert!(!owns(&removed, "kubectl-edit", "Update", "/f:metadata/f:annotations"));
}

#[test]
fn update_of_the_status_subresource_records_only_status() {
    let mut created = created_by_kubectl_create();
    record_update(None, &mut created, "kubectl-create", None, T0);
    let mut new = created.clone();
    new["status"] = json!({
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "lastUpdateTime": T1, "lastTransitionTime": T1,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": T1, "lastTransitionTime": T0,
             "reason": "NewReplicaSetAvailable", "message": "ReplicaSet \"web-7d9c\" has successfully progressed."},
        ],
    });
    // A status write cannot change spec (kube resets it); a stray change is not recorded either.
    new["spec"]["replicas"] = json!(9);
    record_update(Some(&created), &mut new, "kube-controller-manager", Some("status"), T1);
    let condition = |t: &str| {
        (
            format!("k:{{\"type\":\"{t}\"}}"),
            json!({".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {}, "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}),
        )
    };
    let (available, available_fields) = condition("Available");
    let (progressing, progressing_fields) = condition("Progressing");
    let status_entry = entry(&new, "kube-controller-manager", "Update").unwrap();
    assert_eq!(
        status_entry,
        &json!({
            "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "time": T1,
            "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {
                "f:availableReplicas": {},
                "f:conditions": {".": {}, available: available_fields, progressing: progressing_fields},
                "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {},
            }},
        })
    );
    assert!(owns(&new, "kubectl-create", "Update", "/f:spec/f:replicas"));
}

#[test]
fn updates_of_untracked_objects_stay_untracked_and_empty_list_resets() {
    let live = live_deployment();
    let mut new = with(live.clone(), "/spec/replicas", json!(3));
    record_update(Some(&live), &mut new, "kubectl-edit", None, T1);
    assert_eq!(new["metadata"].get("managedFields"), None);

    let mut tracked = created_by_kubectl_create();
    record_update(None, &mut tracked, "kubectl-create", None, T0);
    let mut reset = with(tracked.clone(), "/metadata/managedFields", json!([]));
    record_update(Some(&tracked), &mut reset, "kubectl-replace", None, T1);
    assert_eq!(reset["metadata"].get("managedFields"), None);
}

#[test]
fn strategic_merge_rollout_restart_annotation() {
    let live = live_deployment();
    // What `kubectl rollout restart` sends.
    let body = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": T1}}}}});
    let out = smp(&live, body);
    let expected = with(
        live,
        "/spec/template/metadata",
        json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": T1}}),
    );
    assert_eq!(out, expected);
}

#[test]
fn apply_without_a_container_removes_only_that_container() {
    let mut two = applied(2, "nginx:1.25");
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox:1.36"}));
    let created = server_side_apply(None, &two, "kubectl", false, None, T0).unwrap();
    assert_eq!(names(containers(&created)), ["web", "sidecar"]);
    let out = server_side_apply(Some(&created), &applied(2, "nginx:1.25"), "kubectl", false, None, T1).unwrap();
    assert_eq!(names(containers(&out)), ["web"]);
    assert!(!owns(
        &out,
        "kubectl",
        "Apply",
        "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"sidecar\"}"
    ));
    assert_eq!(entry(&out, "kubectl", "Apply").unwrap()["time"], T1);
}

#[test]
fn apply_to_the_status_subresource_owns_only_status() {
    let created = server_side_apply(None, &applied(2, "nginx:1.25"), "kubectl", false, None, T0).unwrap();
    let mut status = applied(9, "ignored:0");
    status["status"] = json!({"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]});
    let out = server_side_apply(Some(&created), &status, "status-writer", false, Some("status"), T1).unwrap();
    assert_eq!(out["spec"], created["spec"]);
    assert_eq!(out["status"], status["status"]);
    assert_eq!(
        entry(&out, "status-writer", "Apply").unwrap(),
        &json!({
            "manager": "status-writer", "operation": "Apply", "apiVersion": "apps/v1", "time": T1,
            "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {
                "f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}},
                "f:replicas": {},
            }},
        })
    );
    // The main-resource applier's spec is untouched and still its own.
    assert!(owns(&out, "kubectl", "Apply", "/f:spec/f:replicas"));
}

#[test]
fn custom_resources_are_untyped_below_metadata() {
    let mut widget = json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "shop", "finalizers": ["example.com/cleanup"]},
        "spec": {"size": 1, "zones": ["a", "b"], "tuning": {"cpu": "1"}},
    });
    record_update(None, &mut widget, "kubectl-create", None, T0);
    // kube's zero value of a custom resource is empty, so spec itself is new (".").
    assert_eq!(
        entry(&widget, "kubectl-create", "Update").unwrap()["fieldsV1"],
        json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"example.com/cleanup\"": {}}},
            "f:spec": {".": {}, "f:size": {}, "f:tuning": {".": {}, "f:cpu": {}}, "f:zones": {}},
        })
    );
    // Lists of a custom resource are atomic for apply: the applier owns the whole list.
    let config =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"zones": ["c"]}});
    let err = server_side_apply(Some(&widget), &config, "driftguard", false, None, T1).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using example.com/v1: .spec.zones"
    );
}
