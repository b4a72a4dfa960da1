//! The bounds of HorizontalPodAutoscalers, for delegate rules with `bounds: {fromHPA: true}`.
//!
//! A watch (in cluster mode) keeps the table current; admission and the enforcer only read it,
//! so the hot path stays free of I/O.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::DesiredError;
use crate::api::Bounds;

/// One HorizontalPodAutoscaler's target and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaEntry {
    /// The HPA's name.
    pub hpa: String,
    /// `scaleTargetRef` API group (`""` for core).
    pub group: String,
    /// `scaleTargetRef.kind`.
    pub kind: String,
    /// `scaleTargetRef.name`.
    pub name: String,
    /// `minReplicas` (default 1).
    pub min: i64,
    /// `maxReplicas`.
    pub max: i64,
}

/// A delegate rule's bounds on one object, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBounds {
    /// Smallest value allowed.
    pub min: Option<i64>,
    /// Largest value allowed.
    pub max: Option<i64>,
    /// Where they come from: `bounds`, or `HorizontalPodAutoscaler <name>`.
    pub source: String,
}

impl ResolvedBounds {
    /// The value of the bound nearest to `value` when it is outside, with which bound it is
    /// (`"minimum"` or `"maximum"`); None within.
    pub fn outside(&self, value: f64) -> Option<(i64, &'static str)> {
        if let Some(min) = self.min
            && value < min as f64
        {
            return Some((min, "minimum"));
        }
        if let Some(max) = self.max
            && value > max as f64
        {
            return Some((max, "maximum"));
        }
        None
    }
}

/// The HPAs of the cluster by namespace; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct HpaBounds {
    table: Arc<RwLock<HashMap<String, Vec<HpaEntry>>>>,
}

impl HpaBounds {
    /// Record (or replace) the HPA `entry.hpa` of `namespace`.
    pub fn upsert(&self, namespace: &str, entry: HpaEntry) {
        let mut table = self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = table.entry(namespace.to_owned()).or_default();
        list.retain(|e| e.hpa != entry.hpa);
        list.push(entry);
    }

    /// Forget the HPA `hpa` of `namespace`.
    pub fn remove(&self, namespace: &str, hpa: &str) {
        let mut table = self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = table.get_mut(namespace) {
            list.retain(|e| e.hpa != hpa);
            if list.is_empty() {
                table.remove(namespace);
            }
        }
    }

    /// Replace everything (a watch's initial list or re-list).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = (String, HpaEntry)>) {
        let mut fresh: HashMap<String, Vec<HpaEntry>> = HashMap::new();
        for (namespace, entry) in entries {
            fresh.entry(namespace).or_default().push(entry);
        }
        *self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// The HPA targeting `group`/`kind` `namespace/name`: `(hpa name, min, max)`. When several
    /// do (a misconfiguration the HPA controller itself refuses), the first by name.
    pub fn lookup(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<(String, i64, i64)> {
        let table = self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        table
            .get(namespace)?
            .iter()
            .filter(|e| e.group == group && e.kind == kind && e.name == name)
            .min_by(|a, b| a.hpa.cmp(&b.hpa))
            .map(|e| (e.hpa.clone(), e.min, e.max))
    }

    /// The bounds a delegate rule's `bounds` set on the object `group`/`kind`
    /// `namespace/name`: fixed, or those of the HPA targeting it (none: [`DesiredError::NoHpa`]).
    pub fn resolve(
        &self,
        bounds: &Bounds,
        group: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ResolvedBounds, DesiredError> {
        if !bounds.from_hpa {
            return Ok(ResolvedBounds {
                min: bounds.min,
                max: bounds.max,
                source: "bounds".to_owned(),
            });
        }
        match self.lookup(group, kind, namespace.unwrap_or(""), name) {
            Some((hpa, min, max)) => Ok(ResolvedBounds {
                min: Some(min),
                max: Some(max),
                source: format!("HorizontalPodAutoscaler {hpa}"),
            }),
            None => Err(DesiredError::NoHpa {
                object: format!(
                    "{kind} {}{name}",
                    namespace.map(|n| format!("{n}/")).unwrap_or_default()
                ),
            }),
        }
    }

    /// Parse an `autoscaling/v2` (or v1) HorizontalPodAutoscaler; None when it has no target.
    pub fn entry_of(hpa: &serde_json::Value) -> Option<(String, HpaEntry)> {
        let metadata = hpa.get("metadata")?;
        let namespace = metadata.get("namespace")?.as_str()?.to_owned();
        let name = metadata.get("name")?.as_str()?.to_owned();
        let spec = hpa.get("spec")?;
        let target = spec.get("scaleTargetRef")?;
        let api_version = target.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let (group, _) = super::kinds::split_api_version(api_version);
        Some((
            namespace,
            HpaEntry {
                hpa: name,
                group: group.to_owned(),
                kind: target.get("kind")?.as_str()?.to_owned(),
                name: target.get("name")?.as_str()?.to_owned(),
                min: spec.get("minReplicas").and_then(|v| v.as_i64()).unwrap_or(1),
                max: spec.get("maxReplicas")?.as_i64()?,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_hpas_by_target() {
        let bounds = HpaBounds::default();
        let hpa = serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"namespace": "shop", "name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "maxReplicas": 10}
        });
        let (ns, entry) = HpaBounds::entry_of(&hpa).unwrap();
        bounds.upsert(&ns, entry.clone());
        assert_eq!(
            bounds.lookup("apps", "Deployment", "shop", "web"),
            Some(("web".into(), 1, 10))
        );
        assert_eq!(bounds.lookup("apps", "Deployment", "other", "web"), None);
        assert_eq!(bounds.lookup("apps", "StatefulSet", "shop", "web"), None);
        bounds.upsert(&ns, HpaEntry { min: 3, ..entry });
        assert_eq!(
            bounds.lookup("apps", "Deployment", "shop", "web"),
            Some(("web".into(), 3, 10))
        );
        bounds.remove("shop", "web");
        assert_eq!(bounds.lookup("apps", "Deployment", "shop", "web"), None);
    }
}
