//! What the drift engine knows about Kubernetes' schema, as tables: which lists are merged
//! by key (and by which key), and which fields hold resource quantities.
//!
//! Both tables match a *suffix* of the path being walked (or the whole path when anchored),
//! so one entry covers a pod template wherever it is nested (Deployment, StatefulSet, Job,
//! CronJob `jobTemplate`, a bare Pod, ...).

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::compare::key_value_eq;

/// One step of the path currently being walked. Borrowed from the desired object so that the
/// walk allocates nothing unless it finds drift.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    /// An object field.
    Field(&'a str),
    /// An element of a keyed list, identified by the desired element it was matched against.
    Elem {
        list: &'static ListKeys,
        elem: &'a Value,
        index: usize,
    },
    /// A positional element inside an atomic list (only used while comparing leaf values).
    Item(usize),
}

/// One token of a [`Pattern`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pat {
    /// An object field with exactly this name.
    Name(&'static str),
    /// Any object field.
    AnyName,
    /// Any list element (keyed or positional).
    Elem,
}

/// A path shape: matches the tail of a path, or the whole path when `anchored`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    anchored: bool,
    pats: &'static [Pat],
}

impl Pattern {
    const fn tail(pats: &'static [Pat]) -> Self {
        Pattern { anchored: false, pats }
    }

    const fn root(pats: &'static [Pat]) -> Self {
        Pattern { anchored: true, pats }
    }

    /// True when `stack` ends with (or, anchored, is exactly) this pattern.
    pub(crate) fn matches(&self, stack: &[Seg<'_>]) -> bool {
        if self.anchored && stack.len() != self.pats.len() {
            return false;
        }
        let Some(start) = stack.len().checked_sub(self.pats.len()) else {
            return false;
        };
        let Some(tail) = stack.get(start..) else {
            return false;
        };
        self.pats.iter().zip(tail).all(|(pat, seg)| match (pat, seg) {
            (Pat::Name(name), Seg::Field(field)) => name == field,
            (Pat::AnyName, Seg::Field(_)) => true,
            (Pat::Elem, Seg::Elem { .. } | Seg::Item(_)) => true,
            _ => false,
        })
    }
}

/// A field of a list's merge key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyField {
    /// Field name inside the element.
    pub(crate) name: &'static str,
    /// Value the API server fills in when the field is absent (so Git may omit it).
    pub(crate) default: Option<&'static str>,
}

const fn key(name: &'static str) -> KeyField {
    KeyField { name, default: None }
}

const fn key_or(name: &'static str, default: &'static str) -> KeyField {
    KeyField {
        name,
        default: Some(default),
    }
}

/// A list Kubernetes merges element-by-key (`patchMergeKey` / `listType=map`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListKeys {
    at: Pattern,
    pub(crate) keys: &'static [KeyField],
}

/// A key value of an element: either present in the element or the server default.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyValue<'a> {
    Present(&'a Value),
    Default(&'static str),
}

impl KeyValue<'_> {
    pub(crate) fn to_value(self) -> Value {
        match self {
            KeyValue::Present(v) => v.clone(),
            KeyValue::Default(s) => Value::String(s.to_owned()),
        }
    }

    pub(crate) fn eq(self, other: KeyValue<'_>) -> bool {
        match (self, other) {
            (KeyValue::Present(a), KeyValue::Present(b)) => key_value_eq(a, b),
            (KeyValue::Present(v), KeyValue::Default(s)) | (KeyValue::Default(s), KeyValue::Present(v)) => {
                v.as_str() == Some(s)
            }
            (KeyValue::Default(a), KeyValue::Default(b)) => a == b,
        }
    }

    /// True when this key value equals `v` (a materialized key value, see [`Self::to_value`]).
    pub(crate) fn eq_value(self, v: &Value) -> bool {
        self.eq(KeyValue::Present(v))
    }
}

impl ListKeys {
    /// The value of key field `field` in `elem`, falling back to its server default.
    pub(crate) fn key_value<'a>(field: &KeyField, elem: &'a Value) -> Option<KeyValue<'a>> {
        match elem.get(field.name) {
            Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Some(KeyValue::Present(v)),
            _ => field.default.map(KeyValue::Default),
        }
    }

    /// True when `elem` is an object carrying every key field (or its default).
    fn has_keys(&self, elem: &Value) -> bool {
        elem.is_object() && self.keys.iter().all(|f| Self::key_value(f, elem).is_some())
    }

    /// True when two elements have the same merge key.
    pub(crate) fn same_key(&self, a: &Value, b: &Value) -> bool {
        self.keys
            .iter()
            .all(|f| match (Self::key_value(f, a), Self::key_value(f, b)) {
                (Some(x), Some(y)) => x.eq(y),
                _ => false,
            })
    }

    /// A hash of `elem`'s key consistent with [`Self::same_key`] (numbers by value, a
    /// defaulted key field like its default written out).
    fn key_hash(&self, elem: &Value) -> u64 {
        let mut h = DefaultHasher::new();
        for f in self.keys {
            match Self::key_value(f, elem) {
                Some(KeyValue::Present(Value::String(s))) => (0u8, s.as_str()).hash(&mut h),
                Some(KeyValue::Default(s)) => (0u8, s).hash(&mut h),
                Some(KeyValue::Present(Value::Number(n))) => {
                    (1u8, n.as_f64().map(f64::to_bits)).hash(&mut h);
                }
                Some(KeyValue::Present(Value::Bool(b))) => (2u8, *b).hash(&mut h),
                Some(KeyValue::Present(_)) | None => 3u8.hash(&mut h),
            }
        }
        h.finish()
    }

    /// True when two elements of `list` share a key. Sorts key hashes (on the stack for
    /// lists up to 64 elements) and compares exactly only on a hash collision.
    fn has_duplicate_keys(&self, list: &[Value]) -> bool {
        const INLINE: usize = 64;
        if list.len() < 2 {
            return false;
        }
        let mut inline = [0u64; INLINE];
        let mut spilled = Vec::new();
        let hashes: &mut [u64] = match inline.get_mut(..list.len()) {
            Some(slot) => slot,
            None => {
                spilled.resize(list.len(), 0);
                &mut spilled
            }
        };
        for (slot, elem) in hashes.iter_mut().zip(list) {
            *slot = self.key_hash(elem);
        }
        hashes.sort_unstable();
        let collision = hashes.windows(2).any(|w| w.first() == w.get(1));
        collision
            && list.iter().enumerate().any(|(i, a)| {
                list.get(i + 1..)
                    .is_some_and(|rest| rest.iter().any(|b| self.same_key(a, b)))
            })
    }
}

/// Finds elements of one live list by the key of desired elements.
///
/// Live lists nearly always keep Git's order, so the desired element's own position is tried
/// first (O(1)). When that misses, short lists are scanned; long ones get a sorted index of
/// key hashes, built once per list, so a reordered 100-entry `env` stays linear-ish.
pub(crate) struct KeyedLookup<'v> {
    list: &'static ListKeys,
    elems: &'v [Value],
    index: Option<Vec<(u64, usize)>>,
}

/// Lists up to this length are scanned rather than indexed when the position hint misses.
const SCAN_LIMIT: usize = 16;

impl<'v> KeyedLookup<'v> {
    pub(crate) fn new(list: &'static ListKeys, elems: &'v [Value]) -> Self {
        KeyedLookup {
            list,
            elems,
            index: None,
        }
    }

    /// The element with the same key as `desired_elem`, which sits at `hint` in Git's list.
    pub(crate) fn find(&mut self, desired_elem: &Value, hint: usize) -> Option<&'v Value> {
        let list = self.list;
        let elems = self.elems;
        if let Some(e) = elems.get(hint).filter(|e| list.same_key(desired_elem, e)) {
            return Some(e);
        }
        if elems.len() <= SCAN_LIMIT {
            return elems.iter().find(|e| list.same_key(desired_elem, e));
        }
        let index = self.index.get_or_insert_with(|| {
            let mut idx: Vec<(u64, usize)> = elems.iter().enumerate().map(|(i, e)| (list.key_hash(e), i)).collect();
            idx.sort_unstable();
            idx
        });
        let h = list.key_hash(desired_elem);
        let start = index.partition_point(|(eh, _)| *eh < h);
        index
            .get(start..)?
            .iter()
            .take_while(|(eh, _)| *eh == h)
            .filter_map(|(_, i)| elems.get(*i))
            .find(|e| list.same_key(desired_elem, e))
    }
}

/// Keyed lists, from the `patchMergeKey`/`listMapKeys` markers of the Kubernetes API types.
/// A list not listed here is atomic: one leaf, compared whole.
static LIST_KEYS: &[ListKeys] = &[
    // PodSpec
    ListKeys {
        at: Pattern::tail(&[Pat::Name("containers")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("initContainers")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("ephemeralContainers")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("volumes")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("imagePullSecrets")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("hostAliases")]),
        keys: &[key("ip")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("topologySpreadConstraints")]),
        keys: &[key("topologyKey"), key("whenUnsatisfiable")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("resourceClaims")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("schedulingGates")]),
        keys: &[key("name")],
    },
    // Container
    ListKeys {
        at: Pattern::tail(&[Pat::Name("env")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("volumeMounts")]),
        keys: &[key("mountPath")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("volumeDevices")]),
        keys: &[key("devicePath")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("resources"), Pat::Name("claims")]),
        keys: &[key("name")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("containers"), Pat::Elem, Pat::Name("ports")]),
        keys: &[key("containerPort"), key_or("protocol", "TCP")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("initContainers"), Pat::Elem, Pat::Name("ports")]),
        keys: &[key("containerPort"), key_or("protocol", "TCP")],
    },
    ListKeys {
        at: Pattern::tail(&[Pat::Name("ephemeralContainers"), Pat::Elem, Pat::Name("ports")]),
        keys: &[key("containerPort"), key_or("protocol", "TCP")],
    },
    // Service
    ListKeys {
        at: Pattern::root(&[Pat::Name("spec"), Pat::Name("ports")]),
        keys: &[key("port"), key_or("protocol", "TCP")],
    },
    // Mutating/ValidatingWebhookConfiguration
    ListKeys {
        at: Pattern::root(&[Pat::Name("webhooks")]),
        keys: &[key("name")],
    },
];

/// The keyed-list description that applies to `list` at `stack`, if any.
///
/// A list whose elements do not all carry the key, or whose desired elements repeat a key,
/// cannot be matched element-by-element and falls back to atomic.
pub(crate) fn keyed_list(stack: &[Seg<'_>], list: &[Value]) -> Option<&'static ListKeys> {
    LIST_KEYS
        .iter()
        .find(|spec| spec.at.matches(stack) && list.iter().all(|e| spec.has_keys(e)) && !spec.has_duplicate_keys(list))
}

/// Fields holding a `resource.Quantity`, compared by value and stored canonical.
static QUANTITY_FIELDS: &[Pattern] = &[
    // Container/pod resources, PVC and volumeClaimTemplate storage requests.
    Pattern::tail(&[Pat::Name("resources"), Pat::Name("limits"), Pat::AnyName]),
    Pattern::tail(&[Pat::Name("resources"), Pat::Name("requests"), Pat::AnyName]),
    // ResourceQuota
    Pattern::root(&[Pat::Name("spec"), Pat::Name("hard"), Pat::AnyName]),
    // LimitRange
    Pattern::tail(&[Pat::Name("limits"), Pat::Elem, Pat::Name("max"), Pat::AnyName]),
    Pattern::tail(&[Pat::Name("limits"), Pat::Elem, Pat::Name("min"), Pat::AnyName]),
    Pattern::tail(&[Pat::Name("limits"), Pat::Elem, Pat::Name("default"), Pat::AnyName]),
    Pattern::tail(&[
        Pat::Name("limits"),
        Pat::Elem,
        Pat::Name("defaultRequest"),
        Pat::AnyName,
    ]),
    Pattern::tail(&[
        Pat::Name("limits"),
        Pat::Elem,
        Pat::Name("maxLimitRequestRatio"),
        Pat::AnyName,
    ]),
    // Volumes
    Pattern::tail(&[Pat::Name("emptyDir"), Pat::Name("sizeLimit")]),
    // PodSpec.overhead, RuntimeClass.overhead.podFixed
    Pattern::tail(&[Pat::Name("overhead"), Pat::AnyName]),
    Pattern::tail(&[Pat::Name("overhead"), Pat::Name("podFixed"), Pat::AnyName]),
    // PersistentVolume
    Pattern::root(&[Pat::Name("spec"), Pat::Name("capacity"), Pat::AnyName]),
    // HorizontalPodAutoscaler v2 metric targets
    Pattern::tail(&[Pat::Name("target"), Pat::Name("value")]),
    Pattern::tail(&[Pat::Name("target"), Pat::Name("averageValue")]),
    // CSIStorageCapacity
    Pattern::root(&[Pat::Name("capacity")]),
    Pattern::root(&[Pat::Name("maximumVolumeSize")]),
];

/// True when the field at `stack` holds a resource quantity.
pub(crate) fn is_quantity_field(stack: &[Seg<'_>]) -> bool {
    QUANTITY_FIELDS.iter().any(|p| p.matches(stack))
}

/// What a declared empty map `{}` means at a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmptyMap {
    /// A map-typed field the API server omits when empty: `{}` declares nothing.
    Nothing,
    /// A struct (`emptyDir: {}`, `securityContext: {}`): the field must exist; what others
    /// put inside is not Git's.
    Present,
    /// A label selector where `{}` selects everything: narrowing it is drift.
    SelectsAll,
}

/// Map-typed (`map[string]...`) fields, omitted by the API server when empty.
const OMITTED_WHEN_EMPTY: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "matchLabels",
    "data",
    "binaryData",
    "stringData",
    "parameters",
    "hard",
    "limits",
    "requests",
    "capacity",
    "overhead",
    "podFixed",
    "volumeAttributes",
];

/// Label selectors where an empty selector matches everything (NetworkPolicy).
const EMPTY_SELECTS_ALL: &[&str] = &["podSelector", "namespaceSelector"];

/// The meaning of a declared `{}` at `stack`.
pub(crate) fn empty_map_meaning(stack: &[Seg<'_>]) -> EmptyMap {
    match stack.last() {
        Some(Seg::Field(name)) if OMITTED_WHEN_EMPTY.contains(name) => EmptyMap::Nothing,
        Some(Seg::Field(name)) if EMPTY_SELECTS_ALL.contains(name) => EmptyMap::SelectsAll,
        _ => EmptyMap::Present,
    }
}

/// Top-level fields that are never part of the declared state.
pub(crate) const ROOT_EXCLUDED: &[&str] = &["apiVersion", "kind", "status"];

/// The only `metadata` fields whose declared entries count (identity is how the object was
/// found, everything else is server-owned).
pub(crate) const METADATA_DECLARED: &[&str] = &["labels", "annotations"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pattern_matches_tail_and_anchored() {
        let stack = [Seg::Field("spec"), Seg::Field("ports")];
        assert_eq!(
            keyed_list(&stack, &[json!({"port": 80})]).map(|l| l.keys.len()),
            Some(2)
        );
        let nested = [Seg::Field("x"), Seg::Field("spec"), Seg::Field("ports")];
        assert!(keyed_list(&nested, &[json!({"port": 80})]).is_none());
    }

    #[test]
    fn duplicate_or_missing_keys_fall_back_to_atomic() {
        let stack = [Seg::Field("env")];
        assert!(keyed_list(&stack, &[json!({"name": "A"}), json!({"name": "B"})]).is_some());
        assert!(keyed_list(&stack, &[json!({"name": "A"}), json!({"name": "A"})]).is_none());
        let long: Vec<Value> = (0..100).map(|i| json!({"name": format!("V{i}")})).collect();
        assert!(keyed_list(&stack, &long).is_some());
        let mut dup = long.clone();
        dup.push(json!({"name": "V42"}));
        assert!(keyed_list(&stack, &dup).is_none());
        let ports = [Seg::Field("spec"), Seg::Field("ports")];
        let same = [json!({"port": 80}), json!({"port": 80.0, "protocol": "TCP"})];
        assert!(keyed_list(&ports, &same).is_none(), "defaults and numbers by value");
        assert!(keyed_list(&stack, &[json!({"value": "A"})]).is_none());
        assert!(keyed_list(&stack, &[json!("A")]).is_none());
    }

    #[test]
    fn default_protocol_is_part_of_the_port_key() {
        let stack = [Seg::Field("containers"), Seg::Item(0), Seg::Field("ports")];
        let Some(spec) = keyed_list(&stack, &[json!({"containerPort": 80})]) else {
            panic!("container ports are keyed");
        };
        assert!(spec.same_key(
            &json!({"containerPort": 80}),
            &json!({"containerPort": 80, "protocol": "TCP"})
        ));
        assert!(!spec.same_key(
            &json!({"containerPort": 80}),
            &json!({"containerPort": 80, "protocol": "UDP"})
        ));
    }

    #[test]
    fn quantity_fields_are_recognized_by_path() {
        let limits = [Seg::Field("resources"), Seg::Field("limits"), Seg::Field("cpu")];
        assert!(is_quantity_field(&limits));
        let limit_range = [
            Seg::Field("spec"),
            Seg::Field("limits"),
            Seg::Item(0),
            Seg::Field("max"),
            Seg::Field("memory"),
        ];
        assert!(is_quantity_field(&limit_range));
        assert!(!is_quantity_field(&[Seg::Field("spec"), Seg::Field("replicas")]));
    }
}
