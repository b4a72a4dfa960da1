//! Delegated fields in the enforcer (pure): a Guard's `delegate` rules let named writers own
//! named fields, so sync and self-heal leave such a field alone while its live value was last
//! written by a delegate and is within the rule's bounds, and correct it to the nearest bound
//! when it is not.
//!
//! Who wrote a field is read from `managedFields`: the managers whose `fieldsV1` hold it. A
//! manager is a name the writing client chose, not an identity, so the rule's writers map to
//! managers like this (README "Delegation"):
//! - `fieldManagers`: the manager of that name;
//! - `serviceAccounts: [kube-system/horizontal-pod-autoscaler]`: the HPA controller, whose
//!   `/scale` writes kube-controller-manager records as manager `kube-controller-manager` with
//!   `subresource: scale`;
//! - other users, groups and service accounts cannot be told apart in `managedFields`; their
//!   values are restored to Git unless their field manager is named in `fieldManagers` too.
//!
//! A value driftguard itself corrected to a bound is written under its own manager
//! [`BOUNDS_MANAGER`], and counts as the delegate's (it is within the bounds by making).
//!
//! The Git value of a delegated field is what an object is created with. A delegate's field is
//! left out of driftguard's server-side apply, so driftguard never takes it back: with the
//! delegate owning it, the API server keeps the value (a field only loses its value when its
//! last owner stops applying it).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::api::DelegateRule;
use crate::desired::{DesiredObject, HpaBounds};
use crate::drift::{self, FieldPath, IgnorePath, PathSegment};

/// The field manager driftguard writes a delegated value corrected to its bound with.
pub const BOUNDS_MANAGER: &str = "driftguard-bounds";

/// The manager kube-controller-manager's controllers (the HPA among them) write with.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// The HPA controller's service account.
pub const HPA_SERVICE_ACCOUNT: &str = "kube-system/horizontal-pod-autoscaler";

/// What the enforcer does with one delegated field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A delegate wrote it, within the bounds: left as it is, and out of driftguard's apply.
    Keep,
    /// A delegate wrote it outside the bounds: set to `value`, the nearest bound.
    Clamp {
        /// The bound.
        value: i64,
        /// Why, naming the bound and the rule.
        reason: String,
    },
}

/// One delegated field a delegate holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Where it is.
    pub path: FieldPath,
    /// The delegate rule (from 0).
    pub rule: usize,
    /// The managedFields manager that wrote it.
    pub manager: String,
    /// Its live value.
    pub live: Value,
    /// Git's value.
    pub git: Option<Value>,
    /// Its values must never be shown (Secret data).
    pub sensitive: bool,
    /// What the enforcer does.
    pub call: Call,
}

/// The delegated fields of one live object that delegates hold (empty: none, Git decides
/// everywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegated {
    /// In the desired object's field order.
    pub fields: Vec<Held>,
}

impl Delegated {
    /// True when no delegate holds anything.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The held field at `path`.
    pub fn at(&self, path: &FieldPath) -> Option<&Held> {
        self.fields.iter().find(|h| h.path == *path)
    }

    /// Fields left alone.
    pub fn kept(&self) -> impl Iterator<Item = &Held> {
        self.fields.iter().filter(|h| h.call == Call::Keep)
    }

    /// Fields corrected to a bound.
    pub fn clamped(&self) -> impl Iterator<Item = &Held> {
        self.fields.iter().filter(|h| matches!(h.call, Call::Clamp { .. }))
    }

    /// Drop the drifts at fields a delegate keeps; a clamped field's drift says the bound as
    /// the value written (`git`).
    pub fn filter_drifts(&self, drifts: Vec<drift::FieldDrift>) -> Vec<drift::FieldDrift> {
        drifts
            .into_iter()
            .filter_map(|mut d| match self.at(&d.path).map(|h| &h.call) {
                Some(Call::Keep) => None,
                Some(Call::Clamp { value, .. }) => {
                    d.git = Some(Value::from(*value));
                    Some(d)
                }
                None => Some(d),
            })
            .collect()
    }

    /// The object driftguard applies: Git's, without the fields delegates hold (a clamped
    /// field is written by [`Delegated::bounds_body`] under [`BOUNDS_MANAGER`]).
    pub fn apply_body(&self, desired: &Value) -> Value {
        let mut body = desired.clone();
        for held in &self.fields {
            remove_at(&mut body, &held.path);
        }
        body
    }

    /// The object [`BOUNDS_MANAGER`] applies: identity plus each clamped field at its bound;
    /// None when nothing is clamped.
    pub fn bounds_body(&self, desired: &Value) -> Option<Value> {
        let mut clamps = self.clamped().peekable();
        clamps.peek()?;
        let mut body = Map::new();
        for key in ["apiVersion", "kind"] {
            if let Some(v) = desired.get(key) {
                body.insert(key.to_owned(), v.clone());
            }
        }
        let mut metadata = Map::new();
        for key in ["name", "namespace"] {
            if let Some(v) = desired.pointer(&format!("/metadata/{key}")) {
                metadata.insert(key.to_owned(), v.clone());
            }
        }
        body.insert("metadata".to_owned(), Value::Object(metadata));
        let mut body = Value::Object(body);
        for held in clamps {
            if let Call::Clamp { value, .. } = held.call {
                set_at(&mut body, &held.path, Value::from(value));
            }
        }
        Some(body)
    }
}

/// What setting `clamped` fields to their bounds did, for Events and the audit log:
/// `set spec.replicas to 6: 9 written by deployer is above the maximum 6 (bounds) of delegate
/// rule 2 (...)`, one clause per field.
pub fn clamp_message(clamped: &[Held]) -> String {
    clamped
        .iter()
        .filter_map(|h| match &h.call {
            Call::Clamp { value, reason } => Some(format!("set {} to {value}: {reason}", h.path)),
            Call::Keep => None,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The audit record of one field set to its bound: `git` is the bound written, `attempted`
/// and `previous` the delegate's value.
pub fn clamp_record(held: &Held) -> crate::audit::FieldRecord {
    let bound = match &held.call {
        Call::Clamp { value, .. } => Value::from(*value),
        Call::Keep => held.live.clone(),
    };
    crate::audit::FieldRecord {
        path: held.path.to_string(),
        git: bound,
        attempted: held.live.clone(),
        previous: held.live.clone(),
        link: None,
    }
}

/// Which delegated fields of `object` delegates hold in `live`, and what to do with each.
///
/// A field counts when its live value is present and a manager of it (managedFields) is one
/// of its rule's writers ([`names_manager`]) or [`BOUNDS_MANAGER`]. With bounds, a number
/// within them is kept and one outside is clamped to the nearest bound; a value that is not a
/// number, or `fromHPA` with no HPA targeting the object, is not held (Git's value is restored).
pub fn judge(object: &DesiredObject, live: &Value, hpa: &HpaBounds) -> Delegated {
    let Some(delegation) = object.delegation.as_deref() else {
        return Delegated::default();
    };
    let Ok(desired) = object.value() else {
        return Delegated::default();
    };
    // Against an empty object every declared field differs: the declared delegated leaves,
    // rule by rule (several rules may cover one field: the first whose writer holds it wins).
    let empty = Value::Object(Map::new());
    let mut rule_order: Vec<usize> = Vec::new();
    for &rule in &delegation.rules {
        if !rule_order.contains(&rule) {
            rule_order.push(rule);
        }
    }
    let mut fields: Vec<Held> = Vec::new();
    for rule_no in rule_order {
        let Some(rule) = delegation.rule(rule_no) else {
            continue;
        };
        let pointers: Vec<&IgnorePath> = delegation
            .pointers
            .iter()
            .zip(&delegation.rules)
            .filter(|(_, r)| **r == rule_no)
            .map(|(p, _)| p)
            .collect();
        for d in drift::detect_delegated(&desired, None, &empty, &object.ignore, &pointers) {
            if d.delegated.is_none() || fields.iter().any(|h| h.path == d.path) {
                continue;
            }
            if let Some(held) = hold(object, rule, rule_no, d.path, live, hpa) {
                let held = Held {
                    git: held.path.resolve(&desired).cloned(),
                    ..held
                };
                fields.push(held);
            }
        }
    }
    Delegated { fields }
}

/// The delegated field at `path` under `rule`, if one of the rule's writers holds it.
fn hold(
    object: &DesiredObject,
    rule: &DelegateRule,
    rule_no: usize,
    path: FieldPath,
    live: &Value,
    hpa: &HpaBounds,
) -> Option<Held> {
    let value = path.resolve(live)?;
    let manager = managers_of(live, &path)
        .into_iter()
        .find(|(m, sub)| m == BOUNDS_MANAGER || names_manager(rule, m, sub.as_deref()))
        .map(|(m, _)| m)?;
    let call = match &rule.bounds {
        None => Call::Keep,
        Some(bounds) => {
            let resolved = hpa
                .resolve(
                    bounds,
                    &object.group,
                    &object.kind,
                    object.namespace.as_deref(),
                    &object.name,
                )
                .ok()?;
            let number = value.as_f64()?;
            match resolved.outside(number) {
                None => Call::Keep,
                Some((bound, which)) => Call::Clamp {
                    value: bound,
                    reason: format!(
                        "{value} written by {manager} is {} the {which} {bound} ({}) of {}",
                        if which == "minimum" { "below" } else { "above" },
                        resolved.source,
                        crate::admission::describe_rule(rule, rule_no)
                    ),
                },
            }
        }
    };
    Some(Held {
        sensitive: object.is_sensitive(&path),
        path,
        rule: rule_no,
        manager,
        live: value.clone(),
        git: None,
        call,
    })
}

/// Is the managedFields manager `manager` (writing `subresource`) one of the rule's writers?
/// See the module documentation for how writers map to managers.
pub fn names_manager(rule: &DelegateRule, manager: &str, subresource: Option<&str>) -> bool {
    rule.to.field_managers.iter().any(|f| f == manager)
        || (manager == CONTROLLER_MANAGER
            && subresource == Some("scale")
            && rule.to.service_accounts.iter().any(|sa| sa == HPA_SERVICE_ACCOUNT))
}

/// The managers (with their subresource) whose `fieldsV1` hold `path`, in managedFields order.
pub fn managers_of(live: &Value, path: &FieldPath) -> Vec<(String, Option<String>)> {
    let tokens: Vec<String> = path.segments().iter().map(fields_v1_token).collect();
    let Some(entries) = live.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|entry| {
            let mut node = entry.get("fieldsV1");
            for token in &tokens {
                node = node.and_then(|n| n.get(token.as_str()));
            }
            node.is_some()
        })
        .filter_map(|entry| {
            let manager = entry.get("manager")?.as_str()?.to_owned();
            let subresource = entry
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            Some((manager, subresource))
        })
        .collect()
}

/// The `fieldsV1` key of one path step: `f:name`, or `k:{...}` (key fields sorted by name,
/// compact JSON) for an element of a keyed list.
fn fields_v1_token(segment: &PathSegment) -> String {
    match segment {
        PathSegment::Field(name) => format!("f:{name}"),
        PathSegment::Element(key) => {
            let mut fields: Vec<(&str, &Value)> = key.fields().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            let mut token = String::from("k:{");
            for (i, (name, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    token.push(',');
                }
                let _ = write!(token, "{}:{}", Value::from(name), value);
            }
            token.push('}');
            token
        }
    }
}

/// Remove the field at `path` from `body` (nothing when it is not there).
fn remove_at(body: &mut Value, path: &FieldPath) {
    let Some(pointer) = path.pointer_in(body) else {
        return;
    };
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match body.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(list)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < list.len()
            {
                list.remove(i);
            }
        }
        _ => {}
    }
}

/// Set `value` at `path` in `body`, creating the objects and keyed elements on the way.
fn set_at(body: &mut Value, path: &FieldPath, value: Value) {
    let mut cur = body;
    for segment in path.segments() {
        cur = match segment {
            PathSegment::Field(name) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                let Value::Object(map) = cur else { return };
                map.entry(name.clone()).or_insert(Value::Null)
            }
            PathSegment::Element(key) => {
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                let Value::Array(list) = cur else { return };
                let index = match list.iter().position(|e| key.matches(e)) {
                    Some(i) => i,
                    None => {
                        let element: Map<String, Value> =
                            key.fields().map(|(k, v)| (k.to_owned(), v.clone())).collect();
                        list.push(Value::Object(element));
                        list.len() - 1
                    }
                };
                &mut list[index]
            }
        };
    }
    *cur = value;
}

/// The `delegate` rule that would let `manager` own `pointers` of `object`, as YAML for the
/// Guard's spec: the HPA's service account with its bounds when the writer is the HPA
/// controller (`kube-controller-manager` on `/scale`), else the field manager.
pub fn suggest_rule(object: &DesiredObject, manager: &str, subresource: Option<&str>, pointers: &[String]) -> String {
    let to = if manager == CONTROLLER_MANAGER && subresource == Some("scale") {
        format!("{{ serviceAccounts: [{HPA_SERVICE_ACCOUNT}] }}\n    bounds: {{ fromHPA: true }}")
    } else {
        format!("{{ fieldManagers: [{}] }}", yaml_scalar(manager))
    };
    let mut yaml = format!(
        "delegate:\n  - group: {}\n    kind: {}\n",
        yaml_scalar(&object.group),
        object.kind
    );
    if let Some(namespace) = &object.namespace {
        let _ = writeln!(yaml, "    namespace: {namespace}");
    }
    let _ = write!(
        yaml,
        "    name: {}\n    jsonPointers: [{}]\n    to: {to}",
        object.name,
        pointers.join(", ")
    );
    yaml
}

/// A YAML scalar for a string that may be empty or hold characters YAML reads otherwise.
fn yaml_scalar(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::api::GuardSpec;
    use crate::desired::{DesiredSet, GuardId, GuardPolicy, HpaEntry};
    use crate::render::{Manifest, Origin};
    use crate::source::Revision;

    fn web(delegate: Value) -> DesiredObject {
        let spec: GuardSpec =
            serde_json::from_value(json!({"sourceRef": {"name": "s"}, "delegate": delegate})).unwrap();
        let id = GuardId {
            namespace: "shop".into(),
            name: "g".into(),
        };
        let policy = Arc::new(GuardPolicy::new(id, &spec, "repo").unwrap());
        let manifest = Manifest {
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]}}}}),
            origin: Origin {
                file: "web.yaml".into(),
                line: 1,
                document: None,
            },
            fields: Default::default(),
        };
        let revision = Revision {
            commit: "c".into(),
            reference: "main".into(),
        };
        DesiredSet::build(policy, revision, vec![manifest])
            .unwrap()
            .objects
            .remove(0)
    }

    fn rules() -> Value {
        json!([
            {"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
             "to": {"serviceAccounts": ["kube-system/horizontal-pod-autoscaler"]}, "bounds": {"fromHPA": true}},
            {"kind": "Deployment", "jsonPointers": ["/spec/template/spec/containers/*/image"],
             "to": {"fieldManagers": ["deployer"]}},
            {"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
             "to": {"fieldManagers": ["deployer"], "users": ["alice"]}, "bounds": {"min": 2, "max": 6}},
        ])
    }

    const REPLICAS: &str = r#"{"f:spec":{"f:replicas":{}}}"#;
    const IMAGE: &str =
        r#"{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{"f:image":{}}}}}}}"#;

    /// The live Deployment with `replicas` and `image`, whose managedFields say
    /// `(manager, subresource, fieldsV1)` besides driftguard's own entry.
    fn live(replicas: i64, image: &str, writers: &[(&str, &str, &str)]) -> Value {
        let mut managed = vec![json!({"manager": "driftguard", "operation": "Apply",
            "fieldsV1": {"f:metadata": {"f:labels": {}}}})];
        for (manager, subresource, fields) in writers {
            let mut entry = json!({"manager": manager, "operation": "Update",
                "fieldsV1": serde_json::from_str::<Value>(fields).unwrap()});
            if !subresource.is_empty() {
                entry["subresource"] = json!(subresource);
            }
            managed.push(entry);
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "managedFields": managed},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn hpa(min: i64, max: i64) -> HpaBounds {
        let table = HpaBounds::default();
        table.upsert(
            "shop",
            HpaEntry {
                hpa: "web".into(),
                group: "apps".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                min,
                max,
            },
        );
        table
    }

    /// `(path, rule, manager, call)` per held field, with a clamp as `clamp N`.
    fn calls(d: &Delegated) -> Vec<(String, usize, String, String)> {
        d.fields
            .iter()
            .map(|h| {
                let call = match &h.call {
                    Call::Keep => "keep".to_owned(),
                    Call::Clamp { value, .. } => format!("clamp {value}"),
                };
                (h.path.to_string(), h.rule, h.manager.clone(), call)
            })
            .collect()
    }

    #[test]
    fn delegates_keep_their_values_within_bounds_and_are_clamped_outside() {
        let hpa_scale = ("kube-controller-manager", "scale", REPLICAS);
        struct Case {
            name: &'static str,
            live: Value,
            hpa: HpaBounds,
            want: Vec<(&'static str, usize, &'static str, &'static str)>,
        }
        let cases = [
            Case {
                name: "the HPA on /scale within its bounds",
                live: live(6, "nginx:1.27.3", &[hpa_scale]),
                hpa: hpa(2, 8),
                want: vec![("spec.replicas", 0, "kube-controller-manager", "keep")],
            },
            Case {
                name: "the HPA above its bounds: the maximum",
                live: live(9, "nginx:1.27.3", &[hpa_scale]),
                hpa: hpa(2, 8),
                want: vec![("spec.replicas", 0, "kube-controller-manager", "clamp 8")],
            },
            Case {
                name: "the HPA below its bounds: the minimum",
                live: live(1, "nginx:1.27.3", &[hpa_scale]),
                hpa: hpa(2, 8),
                want: vec![("spec.replicas", 0, "kube-controller-manager", "clamp 2")],
            },
            Case {
                name: "no HPA targets it: Git decides",
                live: live(6, "nginx:1.27.3", &[hpa_scale]),
                hpa: HpaBounds::default(),
                want: vec![],
            },
            Case {
                name: "kube-controller-manager writing the main resource is not the HPA",
                live: live(6, "nginx:1.27.3", &[("kube-controller-manager", "", REPLICAS)]),
                hpa: hpa(2, 8),
                want: vec![],
            },
            Case {
                name: "a person (kubectl) is nobody's delegate",
                live: live(
                    6,
                    "nginx:1.28.0",
                    &[("kubectl-edit", "", REPLICAS), ("kubectl-edit", "", IMAGE)],
                ),
                hpa: hpa(2, 8),
                want: vec![],
            },
            Case {
                name: "a field manager delegate: image unbounded, replicas by its own rule",
                live: live(
                    7,
                    "nginx:1.28.0",
                    &[("deployer", "", REPLICAS), ("deployer", "", IMAGE)],
                ),
                hpa: HpaBounds::default(),
                want: vec![
                    ("spec.template.spec.containers[name=web].image", 1, "deployer", "keep"),
                    ("spec.replicas", 2, "deployer", "clamp 6"),
                ],
            },
            Case {
                name: "a value driftguard clamped stays while within the bounds",
                live: live(6, "nginx:1.27.3", &[("driftguard-bounds", "", REPLICAS)]),
                hpa: HpaBounds::default(),
                want: vec![("spec.replicas", 2, "driftguard-bounds", "keep")],
            },
            Case {
                name: "a field no delegate holds: Git decides",
                live: live(6, "nginx:1.27.3", &[("deployer", "", IMAGE)]),
                hpa: hpa(2, 8),
                want: vec![("spec.template.spec.containers[name=web].image", 1, "deployer", "keep")],
            },
        ];
        let desired = web(rules());
        for case in cases {
            let got = calls(&judge(&desired, &case.live, &case.hpa));
            let want: Vec<(String, usize, String, String)> = case
                .want
                .iter()
                .map(|(p, r, m, c)| (p.to_string(), *r, m.to_string(), c.to_string()))
                .collect();
            assert_eq!(got, want, "{}", case.name);
        }
        // Without delegate rules nothing is held, whoever wrote it.
        let plain = web(json!([]));
        assert!(judge(&plain, &live(6, "x", &[("deployer", "", REPLICAS)]), &hpa(2, 8)).is_empty());
    }

    #[test]
    fn the_clamp_names_the_bound_and_the_rule() {
        let desired = web(rules());
        let judged = judge(
            &desired,
            &live(9, "nginx:1.27.3", &[("deployer", "", REPLICAS)]),
            &HpaBounds::default(),
        );
        let Some(Held {
            call: Call::Clamp { reason, .. },
            ..
        }) = judged.fields.first()
        else {
            panic!("{judged:?}")
        };
        assert!(
            reason.contains("9 written by deployer is above the maximum 6 (bounds) of delegate rule 3"),
            "{reason}"
        );
    }

    #[test]
    fn driftguard_applies_git_without_held_fields_and_writes_clamps_apart() {
        let desired = web(rules());
        let git = desired.value().unwrap();
        let judged = judge(
            &desired,
            &live(
                9,
                "nginx:1.28.0",
                &[("deployer", "", REPLICAS), ("deployer", "", IMAGE)],
            ),
            &HpaBounds::default(),
        );
        let body = judged.apply_body(&git);
        assert_eq!(body.pointer("/spec/replicas"), None);
        assert_eq!(
            body.pointer("/spec/template/spec/containers/0"),
            Some(&json!({"name": "web"}))
        );
        assert_eq!(body["metadata"], git["metadata"]);
        assert_eq!(
            judged.bounds_body(&git),
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 6}}))
        );
        // Nothing held: Git as it is, no bounds write.
        let none = Delegated::default();
        assert_eq!(none.apply_body(&git), git);
        assert_eq!(none.bounds_body(&git), None);
    }

    #[test]
    fn kept_drifts_vanish_and_clamped_ones_carry_the_bound() {
        let desired = web(rules());
        let git = desired.value().unwrap();
        let current = live(
            9,
            "nginx:1.28.0",
            &[("deployer", "", REPLICAS), ("deployer", "", IMAGE)],
        );
        let judged = judge(&desired, &current, &HpaBounds::default());
        let drifts: Vec<_> = judged
            .filter_drifts(drift::detect(&git, None, &current, &[]))
            .into_iter()
            .filter(|d| d.path.starts_with_key("spec"))
            .collect();
        assert_eq!(drifts.len(), 1, "{drifts:?}");
        assert_eq!(drifts[0].path.to_string(), "spec.replicas");
        assert_eq!(drifts[0].git, Some(json!(6)));
    }

    #[test]
    fn keyed_elements_are_found_by_their_sorted_key() {
        let desired = web(
            json!([{"kind": "Deployment", "jsonPointers": ["/spec/template/spec/containers/*/ports/*/containerPort"],
            "to": {"fieldManagers": ["m"]}}]),
        );
        let git = desired.value().unwrap();
        let mut object = git.clone();
        object["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "TCP"}]);
        let detected = drift::detect(&object, None, &json!({}), &[]);
        let port = detected.iter().find(|d| d.path.to_string().contains("ports")).unwrap();
        assert_eq!(
            port.path.segments().iter().map(fields_v1_token).collect::<Vec<_>>(),
            [
                "f:spec",
                "f:template",
                "f:spec",
                "f:containers",
                r#"k:{"name":"web"}"#,
                "f:ports",
                r#"k:{"containerPort":80,"protocol":"TCP"}"#,
                "f:containerPort"
            ]
        );
    }

    #[test]
    fn fights_propose_the_delegate_rule_for_the_writer() {
        let desired = web(json!([]));
        let pointers = ["/spec/replicas".to_owned()];
        let hpa = suggest_rule(&desired, "kube-controller-manager", Some("scale"), &pointers);
        assert_eq!(
            hpa,
            "delegate:\n  - group: apps\n    kind: Deployment\n    namespace: shop\n    name: web\n    jsonPointers: [/spec/replicas]\n    to: { serviceAccounts: [kube-system/horizontal-pod-autoscaler] }\n    bounds: { fromHPA: true }"
        );
        let other = suggest_rule(&desired, "argo rollouts", None, &pointers);
        assert!(other.ends_with("to: { fieldManagers: [\"argo rollouts\"] }"), "{other}");
        // The proposal parses as the Guard's spec and selects the object.
        let spec: Value = serde_saphyr::from_str(&hpa).unwrap();
        let spec: GuardSpec =
            serde_json::from_value(json!({"sourceRef": {"name": "s"}, "delegate": spec["delegate"]})).unwrap();
        assert_eq!(spec.delegate[0].to.service_accounts, [HPA_SERVICE_ACCOUNT]);
        assert!(spec.delegate[0].bounds.as_ref().unwrap().from_hpa);
    }
}
