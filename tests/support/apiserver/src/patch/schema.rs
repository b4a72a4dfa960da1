//! The merge-key table: for the built-in kinds, which list fields strategic merge patch merges
//! by a `patchMergeKey` and how server-side apply treats the same lists
//! (`x-kubernetes-list-type` / `x-kubernetes-list-map-keys`), which structs are atomic, and the
//! zero-value skeleton a typed object always carries in kube-apiserver.
//!
//! Everything not named here is "deduced" the way structured-merge-diff deduces untyped
//! values: maps are granular (one field per key), lists are atomic, everything else is a leaf.
//! That is also exactly how lists without a patch strategy behave for the built-in kinds, so
//! the table only has to name the lists that merge and the structs that are atomic.
use serde_json::Value;

/// How strategic merge patch treats a list field (`patchStrategy` / `patchMergeKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Smp {
    /// No patch strategy: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` with a `patchMergeKey` (lists of maps).
    MergeKey(&'static str),
    /// `patchStrategy:"merge"` without a key (lists of scalars, e.g. `finalizers`).
    MergePrimitives,
}

/// A key field of an associative list, with the default structured-merge-diff fills in when an
/// element omits it (container and service ports default `protocol` to `TCP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyField {
    /// Field name.
    pub name: &'static str,
    /// Default value (a string) used in the element's key when the field is absent.
    pub default: Option<&'static str>,
}

/// How server-side apply treats a list field (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ssa {
    /// One leaf: the whole list is owned and replaced together.
    Atomic,
    /// A set of scalars (`listType=set`): each value is owned separately.
    Set,
    /// An associative list (`listType=map`): elements are identified by their key fields.
    Map(&'static [KeyField]),
}

/// A list field: its strategic-merge and server-side-apply treatment and its element type.
#[derive(Debug)]
pub(crate) struct ListTy {
    /// Strategic merge patch treatment.
    pub smp: Smp,
    /// Server-side apply treatment.
    pub ssa: Ssa,
    /// Type of the elements.
    pub elem: &'static Ty,
}

/// A named field of a struct with a type that differs from "deduced".
#[derive(Debug)]
pub(crate) struct Field {
    /// JSON field name.
    pub name: &'static str,
    /// Its type.
    pub ty: &'static Ty,
}

/// The type of a value, as far as merging cares.
#[derive(Debug)]
pub(crate) enum Ty {
    /// Untyped: maps granular, lists atomic, scalars leaves.
    Deduced,
    /// `structType=atomic` / `mapType=atomic`: one leaf for server-side apply (strategic merge
    /// patch still merges it key by key, as apimachinery does).
    Atomic,
    /// A struct whose listed fields have special types (others are deduced).
    Struct(&'static [Field]),
    /// A list.
    List(ListTy),
}

/// The deduced type, also used for every field the table does not name.
pub(crate) static DEDUCED: Ty = Ty::Deduced;
static ATOMIC: Ty = Ty::Atomic;

impl Ty {
    /// The type of field `name` of this struct or map.
    pub(crate) fn field(&self, name: &str) -> &'static Ty {
        match self {
            Ty::Struct(fields) => fields.iter().find(|f| f.name == name).map_or(&DEDUCED, |f| f.ty),
            _ => &DEDUCED,
        }
    }

    /// The list description, when this is a list type.
    pub(crate) fn list(&self) -> Option<&ListTy> {
        match self {
            Ty::List(list) => Some(list),
            _ => None,
        }
    }

    /// Strategic merge patch metadata of this field: the strategy, the merge key ("" when none)
    /// and the element type.
    pub(crate) fn smp_list(&self) -> (Smp, &'static str, &'static Ty) {
        match self {
            Ty::List(list) => {
                let key = match list.smp {
                    Smp::MergeKey(key) => key,
                    Smp::Replace | Smp::MergePrimitives => "",
                };
                (list.smp, key, list.elem)
            }
            _ => (Smp::Replace, "", &DEDUCED),
        }
    }
}

const fn key(name: &'static str) -> KeyField {
    KeyField { name, default: None }
}

const fn field(name: &'static str, ty: &'static Ty) -> Field {
    Field { name, ty }
}

/// A list merged by `smp_key` in strategic merge patch and keyed by `ssa_keys` in apply.
const fn keyed(smp_key: &'static str, ssa_keys: &'static [KeyField], elem: &'static Ty) -> Ty {
    Ty::List(ListTy {
        smp: Smp::MergeKey(smp_key),
        ssa: Ssa::Map(ssa_keys),
        elem,
    })
}

/// A list merged by `smp_key` in strategic merge patch but atomic for apply (`listType=atomic`).
const fn keyed_smp_only(smp_key: &'static str, elem: &'static Ty) -> Ty {
    Ty::List(ListTy {
        smp: Smp::MergeKey(smp_key),
        ssa: Ssa::Atomic,
        elem,
    })
}

const BY_NAME: &[KeyField] = &[key("name")];
const BY_TYPE: &[KeyField] = &[key("type")];
const TCP: Option<&str> = Some("TCP");

static FINALIZERS: Ty = Ty::List(ListTy {
    smp: Smp::MergePrimitives,
    ssa: Ssa::Set,
    elem: &DEDUCED,
});
static OWNER_REFERENCES: Ty = keyed("uid", &[key("uid")], &DEDUCED);
static OBJECT_META: Ty = Ty::Struct(&[
    field("finalizers", &FINALIZERS),
    field("ownerReferences", &OWNER_REFERENCES),
]);

static CONDITIONS: Ty = keyed("type", BY_TYPE, &DEDUCED);
/// Job conditions merge by type in strategic merge patch but are `listType=atomic`.
static JOB_CONDITIONS: Ty = keyed_smp_only("type", &DEDUCED);
static STATUS_WITH_CONDITIONS: Ty = Ty::Struct(&[field("conditions", &CONDITIONS)]);

static CONTAINER_PORTS: Ty = keyed(
    "containerPort",
    &[
        KeyField {
            name: "containerPort",
            default: None,
        },
        KeyField {
            name: "protocol",
            default: TCP,
        },
    ],
    &DEDUCED,
);
static ENV: Ty = keyed("name", BY_NAME, &DEDUCED);
static VOLUME_MOUNTS: Ty = keyed("mountPath", &[key("mountPath")], &DEDUCED);
static VOLUME_DEVICES: Ty = keyed("devicePath", &[key("devicePath")], &DEDUCED);
static RESOURCE_CLAIMS: Ty = keyed("name", BY_NAME, &DEDUCED);
static RESOURCES: Ty = Ty::Struct(&[field("claims", &RESOURCE_CLAIMS)]);
static CONTAINER: Ty = Ty::Struct(&[
    field("ports", &CONTAINER_PORTS),
    field("env", &ENV),
    field("volumeMounts", &VOLUME_MOUNTS),
    field("volumeDevices", &VOLUME_DEVICES),
    field("resources", &RESOURCES),
]);
static CONTAINERS: Ty = keyed("name", BY_NAME, &CONTAINER);
static VOLUMES: Ty = keyed("name", BY_NAME, &DEDUCED);
static IMAGE_PULL_SECRETS: Ty = keyed("name", BY_NAME, &DEDUCED);
static HOST_ALIASES: Ty = keyed("ip", &[key("ip")], &DEDUCED);
static TOPOLOGY_SPREAD: Ty = keyed("topologyKey", &[key("topologyKey"), key("whenUnsatisfiable")], &DEDUCED);
static SCHEDULING_GATES: Ty = keyed("name", BY_NAME, &DEDUCED);
static POD_SPEC: Ty = Ty::Struct(&[
    field("containers", &CONTAINERS),
    field("initContainers", &CONTAINERS),
    field("ephemeralContainers", &CONTAINERS),
    field("volumes", &VOLUMES),
    field("imagePullSecrets", &IMAGE_PULL_SECRETS),
    field("hostAliases", &HOST_ALIASES),
    field("topologySpreadConstraints", &TOPOLOGY_SPREAD),
    field("schedulingGates", &SCHEDULING_GATES),
    field("resourceClaims", &RESOURCE_CLAIMS),
    field("nodeSelector", &ATOMIC),
]);
static POD_TEMPLATE: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("spec", &POD_SPEC)]);
static POD: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("spec", &POD_SPEC),
    field("status", &STATUS_WITH_CONDITIONS),
]);

/// Deployment, StatefulSet, DaemonSet, ReplicaSet (a `LabelSelector`, `structType=atomic`) and
/// ReplicationController (a `mapType=atomic` selector), each with a pod template.
static WORKLOAD_SPEC: Ty = Ty::Struct(&[field("selector", &ATOMIC), field("template", &POD_TEMPLATE)]);
static WORKLOAD: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("spec", &WORKLOAD_SPEC),
    field("status", &STATUS_WITH_CONDITIONS),
]);
static JOB_SPEC: Ty = Ty::Struct(&[field("selector", &ATOMIC), field("template", &POD_TEMPLATE)]);
static JOB: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("spec", &JOB_SPEC),
    field("status", &JOB_STATUS),
]);
static JOB_STATUS: Ty = Ty::Struct(&[field("conditions", &JOB_CONDITIONS)]);
static JOB_TEMPLATE: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("spec", &JOB_SPEC)]);
static CRONJOB: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("spec", &CRONJOB_SPEC)]);
static CRONJOB_SPEC: Ty = Ty::Struct(&[field("jobTemplate", &JOB_TEMPLATE)]);
static POD_TEMPLATE_KIND: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("template", &POD_TEMPLATE)]);

static SERVICE_PORTS: Ty = keyed(
    "port",
    &[
        KeyField {
            name: "port",
            default: None,
        },
        KeyField {
            name: "protocol",
            default: TCP,
        },
    ],
    &DEDUCED,
);
static SERVICE_SPEC: Ty = Ty::Struct(&[field("ports", &SERVICE_PORTS), field("selector", &ATOMIC)]);
static SERVICE: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("spec", &SERVICE_SPEC),
    field("status", &STATUS_WITH_CONDITIONS),
]);
static SA_SECRETS: Ty = keyed("name", BY_NAME, &DEDUCED);
static SERVICE_ACCOUNT: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("secrets", &SA_SECRETS)]);
static WITH_STATUS_CONDITIONS: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("status", &STATUS_WITH_CONDITIONS),
]);
static WEBHOOKS: Ty = keyed("name", BY_NAME, &DEDUCED);
static WEBHOOK_CONFIGURATION: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("webhooks", &WEBHOOKS)]);
static ROLE_BINDING: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("roleRef", &ATOMIC)]);
static NETWORK_POLICY_SPEC: Ty = Ty::Struct(&[field("podSelector", &ATOMIC)]);
static NETWORK_POLICY: Ty = Ty::Struct(&[field("metadata", &OBJECT_META), field("spec", &NETWORK_POLICY_SPEC)]);
static PDB_SPEC: Ty = Ty::Struct(&[field("selector", &ATOMIC)]);
static PDB: Ty = Ty::Struct(&[
    field("metadata", &OBJECT_META),
    field("spec", &PDB_SPEC),
    field("status", &STATUS_WITH_CONDITIONS),
]);
/// Anything with only typed metadata (ConfigMap, Secret, Lease, RBAC roles, ...).
static PLAIN: Ty = Ty::Struct(&[field("metadata", &OBJECT_META)]);

/// A custom resource: only its metadata is typed (apply only; strategic merge is refused).
pub(crate) static CUSTOM_RESOURCE: Ty = Ty::Struct(&[field("metadata", &OBJECT_META)]);

/// A built-in kind: its schema root and the JSON of its Go zero value (only the maps and
/// lists the typed object always carries matter: they decide which newly set maps count as
/// "added" in managedFields).
#[derive(Debug)]
pub(crate) struct Kind {
    /// API group ("" for the core group).
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Schema root.
    pub root: &'static Ty,
    /// The zero-value object, as JSON.
    pub skeleton: &'static str,
}

const META_ONLY: &str = r#"{"metadata":{}}"#;
const POD_TEMPLATE_SKELETON_SPEC: &str =
    r#"{"metadata":{},"spec":{"selector":null,"template":{"metadata":{},"spec":{"containers":null}}},"status":{}}"#;

/// The built-in kinds this server serves (strategic merge patch is accepted exactly for these).
static KINDS: &[Kind] = &[
    Kind {
        group: "",
        kind: "Pod",
        root: &POD,
        skeleton: r#"{"metadata":{},"spec":{"containers":null},"status":{}}"#,
    },
    Kind {
        group: "",
        kind: "PodTemplate",
        root: &POD_TEMPLATE_KIND,
        skeleton: r#"{"metadata":{},"template":{"metadata":{},"spec":{"containers":null}}}"#,
    },
    Kind {
        group: "",
        kind: "ReplicationController",
        root: &WORKLOAD,
        skeleton: r#"{"metadata":{},"spec":{},"status":{"replicas":0}}"#,
    },
    Kind {
        group: "",
        kind: "ConfigMap",
        root: &PLAIN,
        skeleton: META_ONLY,
    },
    Kind {
        group: "",
        kind: "Secret",
        root: &PLAIN,
        skeleton: META_ONLY,
    },
    Kind {
        group: "",
        kind: "Service",
        root: &SERVICE,
        skeleton: r#"{"metadata":{},"spec":{},"status":{"loadBalancer":{}}}"#,
    },
    Kind {
        group: "",
        kind: "ServiceAccount",
        root: &SERVICE_ACCOUNT,
        skeleton: META_ONLY,
    },
    Kind {
        group: "",
        kind: "Namespace",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{},"status":{}}"#,
    },
    Kind {
        group: "",
        kind: "Endpoints",
        root: &PLAIN,
        skeleton: META_ONLY,
    },
    Kind {
        group: "",
        kind: "Event",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"involvedObject":{},"source":{},"firstTimestamp":null,"lastTimestamp":null,"eventTime":null,"reportingComponent":"","reportingInstance":""}"#,
    },
    Kind {
        group: "",
        kind: "PersistentVolumeClaim",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{"resources":{}},"status":{}}"#,
    },
    Kind {
        group: "",
        kind: "PersistentVolume",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{},"status":{}}"#,
    },
    Kind {
        group: "",
        kind: "LimitRange",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{"limits":null}}"#,
    },
    Kind {
        group: "",
        kind: "ResourceQuota",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{},"status":{}}"#,
    },
    Kind {
        group: "",
        kind: "Node",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{},"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":0}},"nodeInfo":{}}}"#,
    },
    Kind {
        group: "apps",
        kind: "Deployment",
        root: &WORKLOAD,
        skeleton: r#"{"metadata":{},"spec":{"selector":null,"template":{"metadata":{},"spec":{"containers":null}},"strategy":{}},"status":{}}"#,
    },
    Kind {
        group: "apps",
        kind: "StatefulSet",
        root: &WORKLOAD,
        skeleton: r#"{"metadata":{},"spec":{"selector":null,"template":{"metadata":{},"spec":{"containers":null}},"updateStrategy":{}},"status":{"replicas":0,"availableReplicas":0}}"#,
    },
    Kind {
        group: "apps",
        kind: "DaemonSet",
        root: &WORKLOAD,
        skeleton: r#"{"metadata":{},"spec":{"selector":null,"template":{"metadata":{},"spec":{"containers":null}},"updateStrategy":{}},"status":{}}"#,
    },
    Kind {
        group: "apps",
        kind: "ReplicaSet",
        root: &WORKLOAD,
        skeleton: POD_TEMPLATE_SKELETON_SPEC,
    },
    Kind {
        group: "apps",
        kind: "ControllerRevision",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"data":null,"revision":0}"#,
    },
    Kind {
        group: "batch",
        kind: "Job",
        root: &JOB,
        skeleton: r#"{"metadata":{},"spec":{"template":{"metadata":{},"spec":{"containers":null}}},"status":{}}"#,
    },
    Kind {
        group: "batch",
        kind: "CronJob",
        root: &CRONJOB,
        skeleton: r#"{"metadata":{},"spec":{"jobTemplate":{"metadata":{},"spec":{"template":{"metadata":{},"spec":{"containers":null}}}}},"status":{}}"#,
    },
    Kind {
        group: "autoscaling",
        kind: "HorizontalPodAutoscaler",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{"scaleTargetRef":{}},"status":{}}"#,
    },
    Kind {
        group: "autoscaling",
        kind: "Scale",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{},"status":{}}"#,
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        kind: "Role",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"rules":null}"#,
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRole",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"rules":null}"#,
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        kind: "RoleBinding",
        root: &ROLE_BINDING,
        skeleton: r#"{"metadata":{},"roleRef":{}}"#,
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        kind: "ClusterRoleBinding",
        root: &ROLE_BINDING,
        skeleton: r#"{"metadata":{},"roleRef":{}}"#,
    },
    Kind {
        group: "apiextensions.k8s.io",
        kind: "CustomResourceDefinition",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{"names":{},"versions":null},"status":{"acceptedNames":{},"storedVersions":null}}"#,
    },
    Kind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingWebhookConfiguration",
        root: &WEBHOOK_CONFIGURATION,
        skeleton: META_ONLY,
    },
    Kind {
        group: "admissionregistration.k8s.io",
        kind: "MutatingWebhookConfiguration",
        root: &WEBHOOK_CONFIGURATION,
        skeleton: META_ONLY,
    },
    Kind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicy",
        root: &WITH_STATUS_CONDITIONS,
        skeleton: r#"{"metadata":{},"spec":{},"status":{}}"#,
    },
    Kind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicyBinding",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{}}"#,
    },
    Kind {
        group: "coordination.k8s.io",
        kind: "Lease",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{}}"#,
    },
    Kind {
        group: "events.k8s.io",
        kind: "Event",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"eventTime":null}"#,
    },
    Kind {
        group: "networking.k8s.io",
        kind: "Ingress",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{},"status":{"loadBalancer":{}}}"#,
    },
    Kind {
        group: "networking.k8s.io",
        kind: "IngressClass",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"spec":{}}"#,
    },
    Kind {
        group: "networking.k8s.io",
        kind: "NetworkPolicy",
        root: &NETWORK_POLICY,
        skeleton: r#"{"metadata":{},"spec":{"podSelector":{}}}"#,
    },
    Kind {
        group: "policy",
        kind: "PodDisruptionBudget",
        root: &PDB,
        skeleton: r#"{"metadata":{},"spec":{},"status":{"disruptionsAllowed":0,"currentHealthy":0,"desiredHealthy":0,"expectedPods":0}}"#,
    },
    Kind {
        group: "storage.k8s.io",
        kind: "StorageClass",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"provisioner":""}"#,
    },
    Kind {
        group: "scheduling.k8s.io",
        kind: "PriorityClass",
        root: &PLAIN,
        skeleton: r#"{"metadata":{},"value":0}"#,
    },
];

/// The built-in kind `group`/`kind` ("core" is accepted for the core group), if served.
pub(crate) fn builtin(group: &str, kind: &str) -> Option<&'static Kind> {
    let group = if group == "core" { "" } else { group };
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// The group of an `apiVersion` (`apps/v1` -> `apps`, `v1` -> "").
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The schema root and zero-value skeleton for an object, from its own apiVersion and kind.
pub(crate) fn for_object(object: &Value) -> (&'static Ty, Value) {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    match builtin(group_of(api_version), kind) {
        // The skeletons are constants checked by a unit test; a parse failure would only lose
        // the "always present" maps, never fail a request.
        Some(k) => (
            k.root,
            serde_json::from_str(k.skeleton).unwrap_or_else(|_| serde_json::json!({})),
        ),
        None => (&CUSTOM_RESOURCE, serde_json::json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_skeleton_is_a_json_object_and_kinds_are_unique() {
        for (i, k) in KINDS.iter().enumerate() {
            let parsed: Value = serde_json::from_str(k.skeleton).unwrap();
            assert!(parsed.is_object(), "{}", k.kind);
            assert!(
                KINDS.iter().skip(i + 1).all(|o| (o.group, o.kind) != (k.group, k.kind)),
                "duplicate {}/{}",
                k.group,
                k.kind
            );
        }
    }

    #[test]
    fn lookups() {
        assert!(builtin("apps", "Deployment").is_some());
        assert!(builtin("core", "ConfigMap").is_some());
        assert!(builtin("example.com", "Widget").is_none());
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
        let containers = WORKLOAD
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        assert_eq!(containers.smp_list().1, "name");
        assert_eq!(containers.list().map(|l| l.ssa), Some(Ssa::Map(BY_NAME)));
        assert!(matches!(WORKLOAD.field("spec").field("replicas"), Ty::Deduced));
    }
}
