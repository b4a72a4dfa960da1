//! API-server defaulting of built-in kinds: what `kubectl get -o yaml` shows that nobody wrote.
//!
//! Three entry points, matching where kube-apiserver does the work:
//! - [`apply`]: the scheme's `SetDefaults_*` functions plus what serialization of the Go types
//!   adds (`resources: {}`, template `creationTimestamp: null`, a kind's empty status, canonical
//!   quantities, Secret `stringData` folded into `data`). Runs on every write, and again on
//!   what mutating webhooks return, like decoding does.
//! - [`prepare_for_create`] / [`prepare_for_update`]: the registry strategies' create/update
//!   hooks that need the old object or the uid (a Namespace's `kubernetes` finalizer, a Job's
//!   generated selector, a Service's allocated cluster IP kept across updates).
//! - [`assign_service_addresses`]: cluster IP (from 10.96.0.0/12) and node port allocation.
//!
//! # Simplifications
//! - Covers the kinds in the registry; among Pod fields, what admission plugins add
//!   (service account token volume, default tolerations, priority) is not added.
//! - Custom resources get no defaults from their schemas.
//! - Allocation is sequential (lowest free cluster IP above 10.96.0.1, lowest free node port
//!   from 30000), not random.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use base64::Engine as _;
use serde_json::{Map, Value, json};

type Defaulter = fn(&mut Value);

/// Defaulting per (group, kind).
const DEFAULTERS: &[(&str, &str, Defaulter)] = &[
    ("", "Namespace", namespace),
    ("", "Secret", secret),
    ("", "Service", service),
    ("", "Pod", pod),
    ("", "PersistentVolumeClaim", persistent_volume_claim),
    ("apps", "Deployment", deployment),
    ("apps", "StatefulSet", stateful_set),
    ("apps", "DaemonSet", daemon_set),
    ("apps", "ReplicaSet", replica_set),
    ("batch", "Job", job),
    ("batch", "CronJob", cron_job),
    ("autoscaling", "HorizontalPodAutoscaler", horizontal_pod_autoscaler),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        validating_webhooks,
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        mutating_webhooks,
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        custom_resource_definition,
    ),
    ("networking.k8s.io", "NetworkPolicy", network_policy),
];

/// What a kind's status serializes to before any controller wrote it (Go's zero value with
/// its non-`omitempty` fields).
const EMPTY_STATUS: &[(&str, &str, &str)] = &[
    ("", "Namespace", r#"{"phase":"Active"}"#),
    ("", "Service", r#"{"loadBalancer":{}}"#),
    ("", "PersistentVolumeClaim", r#"{"phase":"Pending"}"#),
    ("apps", "Deployment", "{}"),
    ("apps", "ReplicaSet", r#"{"replicas":0}"#),
    ("apps", "StatefulSet", r#"{"availableReplicas":0,"replicas":0}"#),
    (
        "apps",
        "DaemonSet",
        r#"{"currentNumberScheduled":0,"desiredNumberScheduled":0,"numberMisscheduled":0,"numberReady":0}"#,
    ),
    ("batch", "Job", "{}"),
    ("batch", "CronJob", "{}"),
    ("autoscaling", "HorizontalPodAutoscaler", r#"{"desiredReplicas":0}"#),
    ("networking.k8s.io", "Ingress", r#"{"loadBalancer":{}}"#),
    (
        "policy",
        "PodDisruptionBudget",
        r#"{"currentHealthy":0,"desiredHealthy":0,"disruptionsAllowed":0,"expectedPods":0}"#,
    ),
];

/// Apply kube-apiserver's defaulting for `group`/`kind` to `object`.
pub fn apply(group: &str, kind: &str, object: &mut Value) {
    if let Some((_, _, defaulter)) = DEFAULTERS.iter().find(|(g, k, _)| *g == group && *k == kind) {
        defaulter(object);
    }
    if let Some((_, _, status)) = EMPTY_STATUS.iter().find(|(g, k, _)| *g == group && *k == kind)
        && let Some(map) = object.as_object_mut()
        && map.get("status").is_none_or(Value::is_null)
        && let Ok(status) = serde_json::from_str::<Value>(status)
    {
        map.insert("status".into(), status);
    }
}

/// The registry strategies' create hooks that need the new object's uid.
pub fn prepare_for_create(group: &str, kind: &str, object: &mut Value, uid: &str) {
    match (group, kind) {
        ("", "Namespace") => {
            // Required on create; only the namespace controller removes it later.
            let Some(spec) = child(object, "spec") else { return };
            let finalizers = spec.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == "kubernetes")
            {
                list.push(json!("kubernetes"));
            }
        }
        ("batch", "Job") if object.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) => {
            generate_job_selector(object, uid);
        }
        _ => {}
    }
}

/// The registry strategies' update hooks: fields only the server changes are carried over
/// from `old`.
pub fn prepare_for_update(group: &str, kind: &str, new: &mut Value, old: &Value) {
    match (group, kind) {
        ("", "Namespace") => {
            // spec.finalizers changes only through the `finalize` subresource.
            if let Some(finalizers) = old.pointer("/spec/finalizers").cloned()
                && let Some(spec) = child(new, "spec")
            {
                spec.insert("finalizers".into(), finalizers);
            }
        }
        ("", "Service") => {
            // A client that leaves out the allocated addresses keeps them (kubectl apply of a
            // manifest without clusterIP must not fail).
            let same_type = new.pointer("/spec/type") == old.pointer("/spec/type");
            if !same_type {
                return;
            }
            for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if new.pointer(&format!("/spec/{key}")).is_none()
                    && let Some(value) = old.pointer(&format!("/spec/{key}")).cloned()
                    && let Some(spec) = child(new, "spec")
                {
                    spec.insert(key.into(), value);
                }
            }
            let old_ports = old
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for port in ports.iter_mut() {
                    if port.get("nodePort").is_some() {
                        continue;
                    }
                    let matching = old_ports
                        .iter()
                        .find(|p| p.get("port") == port.get("port") && p.get("protocol") == port.get("protocol"));
                    if let Some(node_port) = matching.and_then(|p| p.get("nodePort")).cloned()
                        && let Some(port) = port.as_object_mut()
                    {
                        port.insert("nodePort".into(), node_port);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Allocate a new Service's cluster IP (unless headless or ExternalName) and node ports
/// (NodePort/LoadBalancer), avoiding `used_ips` and `used_ports`.
pub fn assign_service_addresses(service: &mut Value, used_ips: &BTreeSet<Ipv4Addr>, used_ports: &BTreeSet<u16>) {
    let kind = service
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if kind == "ExternalName" {
        return;
    }
    let Some(spec) = child(service, "spec") else { return };
    let ip = match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => Some(ip.to_owned()),
        _ => next_cluster_ip(used_ips).map(|ip| ip.to_string()),
    };
    if let Some(ip) = ip {
        spec.insert("clusterIP".into(), json!(ip));
        spec.entry("clusterIPs").or_insert_with(|| json!([ip]));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        let mut taken = used_ports.clone();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                if port.get("nodePort").and_then(Value::as_u64).is_some() {
                    continue;
                }
                if let Some(free) = (30000..=32767u16).find(|p| !taken.contains(p)) {
                    taken.insert(free);
                    port.insert("nodePort".into(), json!(free));
                }
            }
        }
    }
}

/// The lowest free address of 10.96.0.0/12 above 10.96.0.1 (the `kubernetes` Service's).
pub fn next_cluster_ip(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(Ipv4Addr::new(10, 96, 0, 2));
    let last = u32::from(Ipv4Addr::new(10, 111, 255, 254));
    (first..=last).map(Ipv4Addr::from).find(|ip| !used.contains(ip))
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

/// The object at `key` of `value`, created empty when absent (None if `value` is no object or
/// `key` holds something else).
fn child<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = value.as_object_mut()?;
    let entry = map.entry(key).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

/// Set `key` when absent or null.
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn each_object(value: Option<&mut Value>, mut f: impl FnMut(&mut Map<String, Value>)) {
    if let Some(items) = value.and_then(Value::as_array_mut) {
        items.iter_mut().filter_map(Value::as_object_mut).for_each(&mut f);
    }
}

// ---------------------------------------------------------------------------------------------
// Pods and templates

/// A pod template (`spec.template` of workloads): `metadata.creationTimestamp: null` as the Go
/// type serializes it, and pod spec defaults.
fn pod_template(template: &mut Value) {
    if let Some(meta) = child(template, "metadata") {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each_object(spec.get_mut(key), container);
    }
    each_object(spec.get_mut("volumes"), volume);
    if let Some(overhead) = spec.get_mut("overhead") {
        canonicalize_quantities(overhead);
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag(image).as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) {
        for key in ["requests", "limits"] {
            if let Some(list) = resources.get_mut(key) {
                canonicalize_quantities(list);
            }
        }
    }
    each_object(c.get_mut("ports"), |p| default(p, "protocol", json!("TCP")));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            handler(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get_mut(hook).and_then(Value::as_object_mut) {
                handler(h);
            }
        }
    }
    each_object(c.get_mut("env"), |env| {
        if let Some(field_ref) = env
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default(field_ref, "apiVersion", json!("v1"));
        }
    });
}

/// Probe and lifecycle handlers: `httpGet` path and scheme, `grpc.service`.
fn handler(h: &mut Map<String, Value>) {
    if let Some(get) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(get, "path", json!("/"));
        default(get, "scheme", json!("HTTP"));
    }
    if let Some(grpc) = h.get_mut("grpc").and_then(Value::as_object_mut) {
        default(grpc, "service", json!(""));
    }
}

/// The tag kube's image parser sees: none and no digest means `latest`.
fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag.to_owned()),
        None if digest.is_none() => Some("latest".to_owned()),
        None => None,
    }
}

fn volume(v: &mut Map<String, Value>) {
    if v.len() == 1 && v.contains_key("name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
            default(s, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        default(host_path, "type", json!(""));
    }
    if let Some(limit) = v.get_mut("emptyDir").and_then(|e| e.get_mut("sizeLimit")) {
        canonicalize_quantity_value(limit);
    }
}

/// The QoS class kube computes for a pod (requests and limits of cpu and memory).
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let amounts = |c: &Value, kind: &str| -> Map<String, Value> {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k == "cpu" || *k == "memory")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let any = containers
        .iter()
        .any(|c| !amounts(c, "requests").is_empty() || !amounts(c, "limits").is_empty());
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = amounts(c, "limits");
        limits.len() == 2 && amounts(c, "requests") == limits
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

fn pod(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        for key in ["containers", "initContainers"] {
            // Requests default to limits on Pods only (not templates).
            each_object(spec.get_mut(key), |c| {
                let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                    return;
                };
                let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
                    return;
                };
                let requests = resources.entry("requests").or_insert_with(|| json!({}));
                if let Some(requests) = requests.as_object_mut() {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            });
        }
        pod_spec(spec);
        default(spec, "enableServiceLinks", json!(true));
        if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
            for key in ["containers", "initContainers"] {
                each_object(spec.get_mut(key), |c| {
                    each_object(c.get_mut("ports"), |p| {
                        if let Some(port) = p.get("containerPort").cloned() {
                            default(p, "hostPort", port);
                        }
                    });
                });
            }
        }
    }
    let qos = object.get("spec").map(qos_class).unwrap_or("BestEffort");
    if let Some(map) = object.as_object_mut()
        && map.get("status").is_none_or(Value::is_null)
    {
        map.insert("status".into(), json!({"phase": "Pending", "qosClass": qos}));
    }
}

fn persistent_volume_claim(object: &mut Value) {
    pvc_spec(object);
}

fn pvc_spec(object: &mut Value) {
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "volumeMode", json!("Filesystem"));
    if let Some(resources) = spec.get_mut("resources").and_then(Value::as_object_mut) {
        for key in ["requests", "limits"] {
            if let Some(list) = resources.get_mut(key) {
                canonicalize_quantities(list);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn template_at(object: &mut Value, pointer: &str) {
    if let Some(template) = object.pointer_mut(pointer) {
        pod_template(template);
    }
}

fn deployment(object: &mut Value) {
    template_at(object, "/spec/template");
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
    if let Some(strategy) = strategy.as_object_mut() {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(rolling) = rolling.as_object_mut() {
                default(rolling, "maxUnavailable", json!("25%"));
                default(rolling, "maxSurge", json!("25%"));
            }
        }
    }
}

fn stateful_set(object: &mut Value) {
    template_at(object, "/spec/template");
    if let Some(templates) = object
        .pointer_mut("/spec/volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for template in templates.iter_mut() {
            if let Some(meta) = child(template, "metadata") {
                meta.insert("creationTimestamp".into(), Value::Null);
            }
            pvc_spec(template);
            if let Some(map) = template.as_object_mut() {
                default(map, "status", json!({"phase": "Pending"}));
            }
        }
    }
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    default(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    if let Some(policy) = spec
        .get_mut("persistentVolumeClaimRetentionPolicy")
        .and_then(Value::as_object_mut)
    {
        default(policy, "whenDeleted", json!("Retain"));
        default(policy, "whenScaled", json!("Retain"));
    }
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(strategy) = strategy.as_object_mut() {
        if strategy.get("type").is_none_or(Value::is_null) {
            strategy.insert("type".into(), json!("RollingUpdate"));
            default(strategy, "rollingUpdate", json!({}));
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = strategy.get_mut("rollingUpdate").and_then(Value::as_object_mut)
        {
            default(rolling, "partition", json!(0));
        }
    }
}

fn daemon_set(object: &mut Value) {
    template_at(object, "/spec/template");
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "revisionHistoryLimit", json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(strategy) = strategy.as_object_mut() {
        default(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(rolling) = rolling.as_object_mut() {
                default(rolling, "maxUnavailable", json!(1));
                default(rolling, "maxSurge", json!(0));
            }
        }
    }
}

fn replica_set(object: &mut Value) {
    template_at(object, "/spec/template");
    if let Some(spec) = child(object, "spec") {
        default(spec, "replicas", json!(1));
    }
}

fn job(object: &mut Value) {
    template_at(object, "/spec/template");
    let template_labels = object.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        && let Some(meta) = child(object, "metadata")
        && meta.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty)
    {
        meta.insert("labels".into(), labels);
    }
    let Some(spec) = child(object, "spec") else { return };
    if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    let backoff = if spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null()) {
        i64::from(i32::MAX)
    } else {
        6
    };
    default(spec, "backoffLimit", json!(backoff));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
}

/// A Job's selector generated from its uid, and the matching template labels.
fn generate_job_selector(object: &mut Value, uid: &str) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if let Some(labels) = object
        .pointer_mut("/spec/template")
        .and_then(|t| child(t, "metadata"))
        .and_then(|m| {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if labels.is_null() {
                *labels = json!({});
            }
            labels.as_object_mut()
        })
    {
        for key in ["job-name", "batch.kubernetes.io/job-name"] {
            labels.entry(key).or_insert_with(|| json!(name));
        }
        for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
            labels.entry(key).or_insert_with(|| json!(uid));
        }
    }
    if let Some(selector) = child(object, "spec").and_then(|spec| {
        let selector = spec.entry("selector").or_insert_with(|| json!({}));
        if selector.is_null() {
            *selector = json!({});
        }
        selector.as_object_mut()
    }) {
        let labels = selector.entry("matchLabels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels
                .entry("batch.kubernetes.io/controller-uid")
                .or_insert_with(|| json!(uid));
        }
    }
}

fn cron_job(object: &mut Value) {
    if let Some(meta) = object
        .pointer_mut("/spec/jobTemplate")
        .and_then(|t| child(t, "metadata"))
    {
        meta.insert("creationTimestamp".into(), Value::Null);
    }
    template_at(object, "/spec/jobTemplate/spec/template");
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
}

fn horizontal_pod_autoscaler(object: &mut Value) {
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "minReplicas", json!(1));
    if spec.get("metrics").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    if let Some(metrics) = spec.get_mut("metrics").and_then(Value::as_array_mut) {
        for metric in metrics.iter_mut() {
            for source in ["resource", "pods", "object", "external", "containerResource"] {
                if let Some(target) = metric.get_mut(source).and_then(|s| s.get_mut("target")) {
                    for key in ["value", "averageValue"] {
                        if let Some(q) = target.get_mut(key) {
                            canonicalize_quantity_value(q);
                        }
                    }
                }
            }
        }
    }
    // Behavior is filled in only when given (kube's SetDefaults_HorizontalPodAutoscalerBehavior).
    if let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ]});
        let down = json!({"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]});
        for (key, defaults) in [("scaleUp", up), ("scaleDown", down)] {
            let rules = behavior.entry(key).or_insert_with(|| json!({}));
            if rules.is_null() {
                *rules = json!({});
            }
            if let (Some(rules), Some(defaults)) = (rules.as_object_mut(), defaults.as_object()) {
                for (k, v) in defaults {
                    default(rules, k, v.clone());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Core kinds

fn namespace(object: &mut Value) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        return;
    }
    let labels = child(object, "metadata").map(|meta| {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if labels.is_null() {
            *labels = json!({});
        }
        labels
    });
    if let Some(labels) = labels.and_then(Value::as_object_mut) {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

fn secret(object: &mut Value) {
    let Some(map) = object.as_object_mut() else { return };
    default(map, "type", json!("Opaque"));
    let Some(string_data) = map.remove("stringData") else {
        return;
    };
    let Some(string_data) = string_data.as_object().filter(|m| !m.is_empty()) else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or("");
            data.insert(
                key.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn service(object: &mut Value) {
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let config = spec
                .entry("sessionAffinityConfig")
                .or_insert_with(|| json!({"clientIP": {"timeoutSeconds": 10800}}));
            if let Some(client_ip) = config.get_mut("clientIP").and_then(Value::as_object_mut) {
                default(client_ip, "timeoutSeconds", json!(10800));
            }
        }
        _ => {}
    }
    each_object(spec.get_mut("ports"), |p| {
        default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_u64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    });
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
    let external = kind == "NodePort"
        || kind == "LoadBalancer"
        || spec
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|ips| !ips.is_empty());
    if external {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn network_policy(object: &mut Value) {
    let Some(spec) = child(object, "spec") else { return };
    for direction in ["ingress", "egress"] {
        each_object(spec.get_mut(direction), |rule| {
            each_object(rule.get_mut("ports"), |p| default(p, "protocol", json!("TCP")));
        });
    }
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), json!(types));
    }
}

// ---------------------------------------------------------------------------------------------
// API extensions and admission registration

fn webhooks(object: &mut Value, mutating: bool) {
    each_object(object.get_mut("webhooks"), |w| {
        default(w, "failurePolicy", json!("Fail"));
        default(w, "matchPolicy", json!("Equivalent"));
        default(w, "namespaceSelector", json!({}));
        default(w, "objectSelector", json!({}));
        default(w, "timeoutSeconds", json!(10));
        if mutating {
            default(w, "reinvocationPolicy", json!("Never"));
        }
        each_object(w.get_mut("rules"), |r| default(r, "scope", json!("*")));
        if let Some(service) = w
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            default(service, "port", json!(443));
        }
    });
}

fn validating_webhooks(object: &mut Value) {
    webhooks(object, false);
}

fn mutating_webhooks(object: &mut Value) {
    webhooks(object, true);
}

fn custom_resource_definition(object: &mut Value) {
    let Some(spec) = child(object, "spec") else { return };
    default(spec, "conversion", json!({"strategy": "None"}));
    if let Some(service) = spec
        .get_mut("conversion")
        .and_then(|c| c.get_mut("webhook"))
        .and_then(|w| w.get_mut("clientConfig"))
        .and_then(|c| c.get_mut("service"))
        .and_then(Value::as_object_mut)
    {
        default(service, "port", json!(443));
    }
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
        if !kind.is_empty() {
            default(names, "singular", json!(kind.to_lowercase()));
            default(names, "listKind", json!(format!("{kind}List")));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities

/// Canonicalize every quantity in a resource list (`{"cpu": "0.5"}` → `{"cpu": "500m"}`).
fn canonicalize_quantities(list: &mut Value) {
    if let Some(map) = list.as_object_mut() {
        map.values_mut().for_each(canonicalize_quantity_value);
    }
}

/// Canonicalize one quantity (a string, or a JSON number as YAML writers produce).
fn canonicalize_quantity_value(value: &mut Value) {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Some(canonical) = canonical_quantity(&text) {
        *value = Value::String(canonical);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

const DECIMAL_SUFFIXES: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
const BINARY_SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// The canonical form kube serializes a quantity in (`0.5` → `500m`, `1024Mi` → `1Gi`,
/// `1.5Ki` → `1536`, `1e3` → `1e3`), or None if `text` is no quantity (or too large for this
/// implementation, which then leaves it as written).
pub fn canonical_quantity(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return None;
    }
    let mut mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let mut exponent = -i32::try_from(fraction.len()).ok()?;
    let format = if let Some((_, e)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        exponent += e;
        Format::DecimalSi
    } else if let Some(power) = BINARY_SUFFIXES.iter().position(|s| !s.is_empty() && *s == suffix) {
        mantissa = mantissa.checked_mul(1024u128.checked_pow(u32::try_from(power).ok()?)?)?;
        Format::BinarySi
    } else if let Some(e) = suffix.strip_prefix(['e', 'E']) {
        exponent += e.parse::<i32>().ok()?;
        Format::DecimalExponent
    } else {
        return None;
    };
    if mantissa == 0 {
        return Some("0".to_owned());
    }
    let sign = if negative { "-" } else { "" };
    if format == Format::BinarySi
        && let Some(integer) = as_integer(mantissa, exponent)
        && integer >= 1024
    {
        let (mut amount, mut power) = (integer, 0usize);
        while amount.is_multiple_of(1024) && power + 1 < BINARY_SUFFIXES.len() {
            amount /= 1024;
            power += 1;
        }
        return Some(format!("{sign}{amount}{}", BINARY_SUFFIXES.get(power)?));
    }
    // Decimal: strip trailing zeros, round up to nano, then make the exponent a multiple of 3.
    while mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    if exponent < -9 {
        let divisor = 10u128.checked_pow(u32::try_from(-9 - exponent).ok()?)?;
        mantissa = mantissa.div_ceil(divisor);
        exponent = -9;
        while mantissa.is_multiple_of(10) {
            mantissa /= 10;
            exponent += 1;
        }
    }
    let shift = exponent.rem_euclid(3);
    mantissa = mantissa.checked_mul(10u128.checked_pow(u32::try_from(shift).ok()?)?)?;
    exponent -= shift;
    let suffix = match format {
        Format::DecimalExponent if exponent == 0 => String::new(),
        Format::DecimalExponent => format!("e{exponent}"),
        Format::DecimalSi | Format::BinarySi => DECIMAL_SUFFIXES
            .iter()
            .find(|(_, e)| *e == exponent)
            .map(|(s, _)| (*s).to_owned())
            .unwrap_or_else(|| format!("e{exponent}")),
    };
    Some(format!("{sign}{mantissa}{suffix}"))
}

/// `mantissa × 10^exponent` if it is an integer.
fn as_integer(mantissa: u128, exponent: i32) -> Option<u128> {
    if exponent >= 0 {
        mantissa.checked_mul(10u128.checked_pow(u32::try_from(exponent).ok()?)?)
    } else {
        let divisor = 10u128.checked_pow(u32::try_from(-exponent).ok()?)?;
        mantissa.is_multiple_of(divisor).then(|| mantissa / divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical_like_kube() {
        for (input, want) in [
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("100m", "100m"),
            ("2", "2"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("1.5Ki", "1536"),
            ("512", "512"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("1000", "1k"),
            ("1G", "1G"),
            ("0", "0"),
            ("0Mi", "0"),
            ("0.1n", "1n"),
            ("-0.5", "-500m"),
            ("1E", "1E"),
            ("12345678", "12345678"),
            ("1000000", "1M"),
        ] {
            assert_eq!(canonical_quantity(input).as_deref(), Some(want), "{input}");
        }
        for bad in ["", "abc", "1.2.3", "1Qi", ".", "1 "] {
            assert_eq!(canonical_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deployment_defaults_match_a_real_api_server() {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx", "image": "nginx:1.25",
                        "ports": [{"containerPort": 80}],
                        "resources": {"requests": {"cpu": 0.5, "memory": "1024Mi"}},
                        "readinessProbe": {"httpGet": {"port": 80}},
                    }, {"name": "side", "image": "busybox"}]},
                },
            },
        });
        apply("apps", "Deployment", &mut d);
        assert_eq!(
            d["spec"],
            json!({
                "replicas": 1,
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                            "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                        }, {
                            "name": "side", "image": "busybox", "imagePullPolicy": "Always", "resources": {},
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        }],
                        "dnsPolicy": "ClusterFirst",
                        "restartPolicy": "Always",
                        "schedulerName": "default-scheduler",
                        "securityContext": {},
                        "terminationGracePeriodSeconds": 30,
                    },
                },
            })
        );
        assert_eq!(d["status"], json!({}));
        let again = d.clone();
        apply("apps", "Deployment", &mut d);
        assert_eq!(d, again, "defaulting is idempotent");
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, tag) in [
            ("nginx", Some("latest")),
            ("nginx:latest", Some("latest")),
            ("nginx:1.25", Some("1.25")),
            ("localhost:5000/app", Some("latest")),
            ("localhost:5000/app:v2", Some("v2")),
            ("nginx@sha256:abc", None),
        ] {
            assert_eq!(image_tag(image).as_deref(), tag, "{image}");
        }
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({"data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "y"}});
        apply("", "Secret", &mut s);
        assert_eq!(s, json!({"type": "Opaque", "data": {"a": "eQ==", "b": "aGVsbG8="}}));
    }

    #[test]
    fn namespaces_get_their_name_label_and_finalizer() {
        let mut ns = json!({"metadata": {"name": "team"}});
        apply("", "Namespace", &mut ns);
        prepare_for_create("", "Namespace", &mut ns, "u");
        assert_eq!(ns["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "team"}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"], json!({"phase": "Active"}));
    }

    #[test]
    fn services_get_ports_and_addresses() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply("", "Service", &mut svc);
        let used: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 96, 0, 2)].into();
        assign_service_addresses(&mut svc, &used, &[30000u16].into());
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.3");
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.3"]));
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30001})
        );
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30002);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(svc["status"], json!({"loadBalancer": {}}));

        let mut applied = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        prepare_for_update("", "Service", &mut applied, &svc);
        assert_eq!(applied["spec"]["clusterIP"], "10.96.0.3");
        assert_eq!(applied["spec"]["ports"][0]["nodePort"], 30001);

        let mut headless = json!({"spec": {"clusterIP": "None"}});
        apply("", "Service", &mut headless);
        assign_service_addresses(&mut headless, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn jobs_get_a_generated_selector() {
        let mut job = json!({"metadata": {"name": "once"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}});
        apply("batch", "Job", &mut job);
        prepare_for_create("batch", "Job", &mut job, "abc");
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}})
        );
        assert_eq!(job["spec"]["template"]["metadata"]["labels"]["job-name"], "once");
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn webhook_configurations_get_their_defaults() {
        let mut cfg = json!({"webhooks": [{"name": "a", "rules": [{"operations": ["*"]}], "clientConfig": {"service": {"name": "s", "namespace": "n"}}}]});
        apply("admissionregistration.k8s.io", "MutatingWebhookConfiguration", &mut cfg);
        let w = &cfg["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(w["namespaceSelector"], json!({}));
        assert_eq!(w["rules"][0]["scope"], "*");
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
    }

    #[test]
    fn statefulsets_and_daemonsets_get_their_strategies() {
        let mut sts = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("apps", "StatefulSet", &mut sts);
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(sts["status"], json!({"availableReplicas": 0, "replicas": 0}));
        let mut ds = json!({"spec": {}});
        apply("apps", "DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
    }

    #[test]
    fn pods_default_requests_from_limits_and_get_a_qos_class() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply("", "Pod", &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}));
        assert_eq!(pod["spec"]["enableServiceLinks"], true);
    }
}
