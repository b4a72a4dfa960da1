//! Self-heal decisions (pure): when a watched managed object changes, should driftguard
//! re-apply Git, and is it fighting another writer?
//!
//! A change drifts when a declared field differs from Git. The writer blamed is the newest
//! `managedFields` entry that is not driftguard's own. One writer flipping the same object back
//! more than `max_flips` times within `window` is a fight: driftguard stops correcting that
//! object, and the Guard gets a `Fighting` condition naming the writer and the `delegate` rule
//! that would let it own the fields (an HPA on `spec.replicas` is the classic case). Corrections
//! of one object back off exponentially.
//!
//! Delegated fields a delegate holds ([`super::delegation::judge`]) are not drift within their
//! bounds; outside them the correction writes the nearest bound.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ObjectKey;
use super::apply::FIELD_MANAGER;
use super::delegation::{self, BOUNDS_MANAGER, Delegated};
use crate::desired::DesiredObject;
use crate::drift::{FieldDrift, FieldPath, PathSegment, detect};

/// Who is blamed for a managed object that disappeared (deletions leave no managedFields).
pub const DELETER: &str = "a deletion";

/// What to do about one observed state of a managed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heal {
    /// Declared fields equal Git.
    InSync,
    /// Re-apply Git after `delay` (backoff), blaming `manager` for `fields`.
    Correct {
        /// The writer that moved the fields (None when managedFields say nothing).
        manager: Option<String>,
        /// Drifting fields with Git's (or, for a delegated field outside its bounds, the
        /// bound's) and the live value (`attempted`).
        fields: Vec<FieldDrift>,
        /// Wait this long before writing (exponential per object).
        delay: Duration,
        /// Delegated fields delegates hold: left out of the apply, or written at their bound.
        delegated: Delegated,
    },
    /// Stop correcting: `manager` keeps moving `fields` back.
    Fighting {
        /// The other writer.
        manager: String,
        /// The contested fields.
        fields: Vec<FieldPath>,
        /// The Guard `delegate` rule that would let the writer own the fields, as YAML.
        suggestion: String,
    },
}

/// The newest `managedFields` writer that is not driftguard and owns one of the drifted
/// `fields` (an entry without `fieldsV1` may own anything). Ownership matters on a real
/// cluster: kube-controller-manager writes a Deployment's status after every change of its
/// replicas, so the newest entry is often a writer that never touched the drifted field.
pub fn last_writer(live: &Value, fields: &[FieldDrift]) -> Option<String> {
    last_writer_entry(live, fields).map(|(manager, _)| manager)
}

/// [`last_writer`], with the subresource it wrote (`scale` for the HPA controller).
pub fn last_writer_entry(live: &Value, fields: &[FieldDrift]) -> Option<(String, Option<String>)> {
    let entry = live
        .pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .filter(|entry| {
            let manager = entry.get("manager").and_then(Value::as_str);
            manager != Some(FIELD_MANAGER) && manager != Some(BOUNDS_MANAGER)
        })
        .filter(|entry| match entry.get("fieldsV1") {
            Some(owned) => fields.iter().any(|drift| owns(owned, &drift.path)),
            None => true,
        })
        .max_by(|a, b| {
            let time = |e: &Value| e.get("time").and_then(Value::as_str).unwrap_or("").to_owned();
            time(a).cmp(&time(b))
        })?;
    let manager = entry.get("manager").and_then(Value::as_str)?.to_owned();
    let subresource = entry
        .get("subresource")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Some((manager, subresource))
}

/// Whether the `fieldsV1` set `owned` holds `path` (or, where the path enters a keyed list
/// element, the list: element keys are not matched).
fn owns(owned: &Value, path: &FieldPath) -> bool {
    let mut node = owned;
    for segment in path.segments() {
        match segment {
            PathSegment::Field(name) => match node.get(format!("f:{name}")) {
                Some(next) => node = next,
                None => return false,
            },
            PathSegment::Element(_) => return true,
        }
    }
    true
}

/// The ignore pointer for `path` (keyed list elements by their first key value, as
/// [`crate::drift::IgnorePath`] accepts).
pub fn ignore_pointer(path: &FieldPath) -> String {
    let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
    let mut pointer = String::new();
    for segment in path.segments() {
        pointer.push('/');
        match segment {
            PathSegment::Field(name) => pointer.push_str(&escape(name)),
            PathSegment::Element(key) => match key.fields().next().map(|(_, v)| v) {
                Some(Value::String(value)) => pointer.push_str(&escape(value)),
                Some(other) => pointer.push_str(&escape(&other.to_string())),
                None => pointer.push_str(&key.desired_index().to_string()),
            },
        }
    }
    pointer
}

/// Tracks corrections per object and writer to bound retries and detect fights.
#[derive(Debug)]
pub struct Healer {
    window: Duration,
    max_flips: usize,
    base_delay: Duration,
    max_delay: Duration,
    flips: HashMap<(ObjectKey, String), VecDeque<Instant>>,
    /// Corrections of an object so far and when the last one was, for the backoff.
    attempts: HashMap<ObjectKey, (u32, Instant)>,
    fighting: HashMap<ObjectKey, String>,
}

impl Healer {
    /// More than `max_flips` corrections against one writer within `window` is a fight.
    pub fn new(window: Duration, max_flips: usize) -> Self {
        Healer {
            window,
            max_flips,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
            flips: HashMap::new(),
            attempts: HashMap::new(),
            fighting: HashMap::new(),
        }
    }

    /// Decide for `live`, the object's current state, observed at `now`; `delegated` is what
    /// [`delegation::judge`] says of it.
    pub fn observe(&mut self, desired: &DesiredObject, live: &Value, delegated: Delegated, now: Instant) -> Heal {
        let key = ObjectKey::of(desired);
        // Unreadable cannot happen (checked when the set was built): nothing to compare.
        let Ok(git) = desired.value() else {
            return Heal::InSync;
        };
        let fields = delegated.filter_drifts(detect(&git, None, live, &desired.ignore));
        if fields.is_empty() {
            return Heal::InSync;
        }
        // A delegate's out-of-bounds value is that delegate's doing; otherwise the manager
        // owning a drifting field is (the newest writer may have written something else, such
        // as kube-controller-manager's status after the HPA's /scale), else the newest writer.
        let writer = fields
            .iter()
            .find_map(|d| delegated.at(&d.path))
            .map(|h| (h.manager.clone(), None))
            .or_else(|| {
                fields.iter().find_map(|d| {
                    delegation::managers_of(live, &d.path)
                        .into_iter()
                        .find(|(m, _)| m != FIELD_MANAGER && m != BOUNDS_MANAGER)
                })
            })
            .or_else(|| last_writer_entry(live, &fields));
        self.decide(desired, key, writer, fields, delegated, now)
    }

    /// Decide for an object that is gone from the cluster although Git declares it: recreate
    /// it, with the same backoff and the same bound on a writer that keeps deleting it.
    pub fn observe_deleted(&mut self, desired: &DesiredObject, now: Instant) -> Heal {
        self.decide(
            desired,
            ObjectKey::of(desired),
            None,
            Vec::new(),
            Delegated::default(),
            now,
        )
    }

    fn decide(
        &mut self,
        desired: &DesiredObject,
        key: ObjectKey,
        writer: Option<(String, Option<String>)>,
        fields: Vec<FieldDrift>,
        delegated: Delegated,
        now: Instant,
    ) -> Heal {
        let (manager, subresource) = match writer {
            Some((manager, subresource)) => (Some(manager), subresource),
            None => (None, None),
        };
        let blamed = manager.clone().unwrap_or_else(|| {
            if fields.is_empty() {
                DELETER.to_owned()
            } else {
                "unknown".to_owned()
            }
        });
        if let Some(fighter) = self.fighting.get(&key) {
            return self.fighting_with(desired, fighter.clone(), subresource.as_deref(), fields);
        }
        let window = self.window;
        let flips = self.flips.entry((key.clone(), blamed.clone())).or_default();
        flips.push_back(now);
        while flips.front().is_some_and(|t| now.duration_since(*t) > window) {
            flips.pop_front();
        }
        if flips.len() > self.max_flips {
            self.fighting.insert(key, blamed.clone());
            return self.fighting_with(desired, blamed, subresource.as_deref(), fields);
        }
        // The first correction is immediate; repeats back off 200ms, 400ms, ... up to a minute,
        // even when the object was briefly back in sync in between (that is what a flip is).
        // A window without corrections starts over.
        let (attempt, last) = self.attempts.entry(key).or_insert((0, now));
        if now.duration_since(*last) > window {
            *attempt = 0;
        }
        let delay = match *attempt {
            0 => Duration::ZERO,
            n => self
                .base_delay
                .saturating_mul(2u32.saturating_pow(n - 1))
                .min(self.max_delay),
        };
        *attempt = attempt.saturating_add(1);
        *last = now;
        Heal::Correct {
            manager,
            fields,
            delay,
            delegated,
        }
    }

    fn fighting_with(
        &self,
        desired: &DesiredObject,
        manager: String,
        subresource: Option<&str>,
        fields: Vec<FieldDrift>,
    ) -> Heal {
        let fields: Vec<FieldPath> = fields.into_iter().map(|d| d.path).collect();
        if fields.is_empty() {
            // Deleted over and over: no ignore rule settles that, only Git can.
            return Heal::Fighting {
                manager,
                fields,
                suggestion: format!(
                    "remove {} {} from Git, or stop whatever deletes it",
                    desired.kind, desired.name
                ),
            };
        }
        let pointers: Vec<String> = fields.iter().map(ignore_pointer).collect();
        let suggestion = delegation::suggest_rule(desired, &manager, subresource, &pointers);
        Heal::Fighting {
            manager,
            fields,
            suggestion,
        }
    }

    /// Forget an object's history (Git changed it, or an ignore rule was added).
    pub fn reset(&mut self, key: &ObjectKey) {
        self.attempts.remove(key);
        self.fighting.remove(key);
        self.flips.retain(|(k, _), _| k != key);
    }

    /// Objects currently given up on, with the writer they fight.
    pub fn fights(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.fighting.iter().map(|(k, m)| (k, m.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::api::GuardSpec;
    use crate::desired::{DesiredSet, GuardId, GuardPolicy};
    use crate::drift::IgnorePath;
    use crate::render::{Manifest, Origin};
    use crate::source::Revision;

    fn web() -> DesiredObject {
        web_with(json!([]))
    }

    fn web_with(delegate: Value) -> DesiredObject {
        let spec: GuardSpec =
            serde_json::from_value(json!({"sourceRef": {"name": "s"}, "delegate": delegate})).unwrap();
        let id = GuardId {
            namespace: "default".into(),
            name: "g".into(),
        };
        let policy = Arc::new(GuardPolicy::new(id, &spec, "repo").unwrap());
        let manifest = Manifest {
            object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
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

    /// The live object after `manager` set replicas (managedFields newest last).
    fn live(desired: &DesiredObject, replicas: i64, manager: &str, time: &str) -> Value {
        let mut live = desired.value().unwrap();
        live["spec"]["replicas"] = json!(replicas);
        live["metadata"]["managedFields"] = json!([
            {"manager": "driftguard", "operation": "Apply", "time": "2026-11-26T10:00:00Z"},
            {"manager": manager, "operation": "Update", "time": time},
        ]);
        live
    }

    #[test]
    fn in_sync_objects_need_nothing() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 3);
        assert_eq!(
            healer.observe(
                &desired,
                &live(&desired, 3, "x", "t"),
                Delegated::default(),
                Instant::now()
            ),
            Heal::InSync
        );
    }

    #[test]
    fn corrections_blame_the_last_writer_and_back_off() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let edited = live(&desired, 5, "kubectl-edit", "2026-11-26T12:00:00Z");
        let delays: Vec<Duration> = (0..4)
            .map(
                |i| match healer.observe(&desired, &edited, Delegated::default(), now + Duration::from_secs(i)) {
                    Heal::Correct {
                        manager, fields, delay, ..
                    } => {
                        assert_eq!(manager.as_deref(), Some("kubectl-edit"));
                        assert_eq!(
                            fields.iter().map(|d| d.path.to_string()).collect::<Vec<_>>(),
                            ["spec.replicas"]
                        );
                        delay
                    }
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(delays, [0, 200, 400, 800].map(Duration::from_millis));
        // Back in sync in between does not reset the backoff: that is what a flip looks like.
        assert_eq!(
            healer.observe(&desired, &live(&desired, 3, "x", "t"), Delegated::default(), now),
            Heal::InSync
        );
        let later = now + Duration::from_secs(4);
        assert!(
            matches!(healer.observe(&desired, &edited, Delegated::default(), later), Heal::Correct { delay, .. } if delay == Duration::from_millis(1600))
        );
        // A quiet window does.
        let quiet = later + Duration::from_secs(61);
        assert!(
            matches!(healer.observe(&desired, &edited, Delegated::default(), quiet), Heal::Correct { delay, .. } if delay.is_zero())
        );
    }

    #[test]
    fn a_writer_flipping_back_within_the_window_is_a_fight() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        let hpa = live(&desired, 6, "horizontal-pod-autoscaler", "2026-11-26T12:00:00Z");
        for i in 0..3 {
            assert!(matches!(
                healer.observe(&desired, &hpa, Delegated::default(), now + Duration::from_secs(i)),
                Heal::Correct { .. }
            ));
        }
        let Heal::Fighting {
            manager, suggestion, ..
        } = healer.observe(&desired, &hpa, Delegated::default(), now + Duration::from_secs(3))
        else {
            panic!("a fight expected")
        };
        assert_eq!(manager, "horizontal-pod-autoscaler");
        assert!(
            suggestion.contains("kind: Deployment") && suggestion.contains("jsonPointers: [/spec/replicas]"),
            "{suggestion}"
        );
        // It stays given up on (no endless loop) until reset.
        assert!(matches!(
            healer.observe(&desired, &hpa, Delegated::default(), now + Duration::from_secs(4)),
            Heal::Fighting { .. }
        ));
        assert_eq!(healer.fights().count(), 1);
        healer.reset(&ObjectKey::of(&desired));
        assert!(matches!(
            healer.observe(&desired, &hpa, Delegated::default(), now + Duration::from_secs(5)),
            Heal::Correct { .. }
        ));
    }

    #[test]
    fn flips_outside_the_window_do_not_add_up() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 1);
        let now = Instant::now();
        let edited = live(&desired, 5, "kubectl-edit", "t");
        for i in 0..5 {
            let at = now + Duration::from_secs(61 * i);
            assert!(
                matches!(
                    healer.observe(&desired, &edited, Delegated::default(), at),
                    Heal::Correct { .. }
                ),
                "flip {i}"
            );
        }
    }

    #[test]
    fn deleted_objects_are_recreated_until_deleting_becomes_a_fight() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        for (i, want) in [0u64, 200].into_iter().enumerate() {
            match healer.observe_deleted(&desired, now + Duration::from_secs(i as u64)) {
                Heal::Correct {
                    manager, fields, delay, ..
                } => {
                    assert_eq!((manager, fields.len()), (None, 0));
                    assert_eq!(delay, Duration::from_millis(want));
                }
                other => panic!("{other:?}"),
            }
        }
        let Heal::Fighting {
            manager, suggestion, ..
        } = healer.observe_deleted(&desired, now + Duration::from_secs(3))
        else {
            panic!("a fight expected")
        };
        assert_eq!(manager, DELETER);
        assert!(suggestion.contains("remove Deployment web from Git"), "{suggestion}");
    }

    #[test]
    fn last_writer_is_the_newest_entry_that_is_not_driftguard() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-edit", "time": "2026-11-26T09:00:00Z"},
            {"manager": "driftguard", "time": "2026-11-26T12:00:00Z"},
            {"manager": "kube-controller-manager", "time": "2026-11-26T11:00:00Z"},
        ]}});
        assert_eq!(last_writer(&object, &[]).as_deref(), Some("kube-controller-manager"));
        assert_eq!(last_writer(&json!({"metadata": {}}), &[]), None);
    }

    #[test]
    fn last_writer_owns_the_drifted_field() {
        // As kube-apiserver records it: an HPA-like writer took spec.replicas, then the
        // deployment controller wrote status and an annotation (newer, other fields).
        let desired = web();
        let mut live = desired.value().unwrap();
        live["spec"]["replicas"] = json!(6);
        live["metadata"]["managedFields"] = json!([
            {"manager": "driftguard", "operation": "Apply", "time": "2026-11-26T10:00:00Z",
             "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "horizontal-pod-autoscaler", "operation": "Update", "time": "2026-11-26T10:00:01Z",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "time": "2026-11-26T10:00:02Z",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
             "time": "2026-11-26T10:00:03Z", "fieldsV1": {"f:status": {"f:replicas": {}}}},
        ]);
        let fields = detect(&desired.value().unwrap(), None, &live, &desired.ignore);
        assert_eq!(
            last_writer(&live, &fields).as_deref(),
            Some("horizontal-pod-autoscaler")
        );
        // A drifted field nobody owns (as after a removal): nobody to blame.
        live["metadata"]["managedFields"][1]["fieldsV1"] = json!({"f:spec": {"f:paused": {}}});
        let fields = detect(&desired.value().unwrap(), None, &live, &desired.ignore);
        assert!(!fields.is_empty());
        assert_eq!(last_writer(&live, &fields), None, "{fields:?}");
    }

    #[test]
    fn suggested_ignore_pointers_silence_the_drift() {
        let desired = web();
        let mut edited = desired.value().unwrap();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
        let drifts = detect(&desired.value().unwrap(), None, &edited, &[]);
        let pointer = ignore_pointer(&drifts[0].path);
        assert_eq!(pointer, "/spec/template/spec/containers/web/image");
        let ignore = [IgnorePath::parse(&pointer).unwrap()];
        assert!(detect(&desired.value().unwrap(), None, &edited, &ignore).is_empty());
    }

    /// The live object after the HPA controller set replicas through `/scale`.
    fn scaled_by_hpa(desired: &DesiredObject, replicas: i64) -> Value {
        let mut live = desired.value().unwrap();
        live["spec"]["replicas"] = json!(replicas);
        live["metadata"]["managedFields"] = json!([
            {"manager": "driftguard", "operation": "Apply", "time": "2026-11-26T10:00:00Z",
             "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "scale",
             "time": "2026-11-26T12:00:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        ]);
        live
    }

    fn hpa_bounds(min: i64, max: i64) -> crate::desired::HpaBounds {
        let table = crate::desired::HpaBounds::default();
        table.upsert(
            "default",
            crate::desired::HpaEntry {
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

    #[test]
    fn a_delegate_within_bounds_is_never_fought_and_outside_them_gets_the_bound() {
        let rule = json!([{"kind": "Deployment", "jsonPointers": ["/spec/replicas"],
            "to": {"serviceAccounts": ["kube-system/horizontal-pod-autoscaler"]}, "bounds": {"fromHPA": true}}]);
        let desired = web_with(rule);
        let hpa = hpa_bounds(2, 8);
        let mut healer = Healer::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        let within = scaled_by_hpa(&desired, 6);
        for i in 0..5 {
            let judged = delegation::judge(&desired, &within, &hpa);
            assert_eq!(
                healer.observe(&desired, &within, judged, now + Duration::from_secs(i)),
                Heal::InSync
            );
        }
        let beyond = scaled_by_hpa(&desired, 9);
        match healer.observe(&desired, &beyond, delegation::judge(&desired, &beyond, &hpa), now) {
            Heal::Correct {
                manager,
                fields,
                delegated,
                ..
            } => {
                assert_eq!(manager.as_deref(), Some("kube-controller-manager"));
                assert_eq!(fields.len(), 1);
                assert_eq!(fields[0].git, Some(json!(8)));
                assert_eq!(fields[0].attempted, Some(json!(9)));
                assert_eq!(delegated.clamped().count(), 1);
            }
            other => panic!("{other:?}"),
        }
        // No HPA targets it any more: Git's value is restored.
        let gone = crate::desired::HpaBounds::default();
        assert!(matches!(
            healer.observe(&desired, &within, delegation::judge(&desired, &within, &gone), now),
            Heal::Correct { delegated, .. } if delegated.is_empty()
        ));
    }

    #[test]
    fn a_fight_with_the_hpa_proposes_delegating_replicas_to_it() {
        let desired = web();
        let mut healer = Healer::new(Duration::from_secs(60), 1);
        let now = Instant::now();
        let mut live = scaled_by_hpa(&desired, 6);
        // The deployment controller's newer status write is not what moved replicas.
        live["metadata"]["managedFields"].as_array_mut().unwrap().push(
            json!({"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                         "time": "2026-11-26T12:00:05Z", "fieldsV1": {"f:status": {"f:replicas": {}}}}),
        );
        assert!(matches!(
            healer.observe(&desired, &live, Delegated::default(), now),
            Heal::Correct { .. }
        ));
        let Heal::Fighting {
            manager, suggestion, ..
        } = healer.observe(&desired, &live, Delegated::default(), now)
        else {
            panic!("a fight expected")
        };
        assert_eq!(manager, "kube-controller-manager");
        assert!(
            suggestion.contains("to: { serviceAccounts: [kube-system/horizontal-pod-autoscaler] }")
                && suggestion.contains("bounds: { fromHPA: true }")
                && suggestion.contains("jsonPointers: [/spec/replicas]"),
            "{suggestion}"
        );
    }
}
