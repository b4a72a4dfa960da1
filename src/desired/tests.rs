use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::api::GuardSpec;
use crate::render::{Manifest, Origin};
use crate::source::Revision;

fn policy(name: &str, target_namespace: Option<&str>) -> Arc<GuardPolicy> {
    let mut spec: GuardSpec = serde_json::from_value(json!({"sourceRef": {"name": "s"}, "path": "apps"})).unwrap();
    spec.target_namespace = target_namespace.map(str::to_owned);
    let id = GuardId {
        namespace: "default".into(),
        name: name.into(),
    };
    Arc::new(GuardPolicy::new(id, &spec, "file:///repo").unwrap())
}

fn manifest(line: u32, object: serde_json::Value) -> Manifest {
    Manifest {
        object,
        origin: Origin {
            file: "apps/all.yaml".into(),
            line,
            document: None,
        },
        fields: Default::default(),
    }
}

fn revision(commit: &str) -> Revision {
    Revision {
        commit: commit.into(),
        reference: format!("main@sha1:{commit}"),
    }
}

fn cm(name: &str, namespace: Option<&str>) -> serde_json::Value {
    let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
    if let Some(ns) = namespace {
        object["metadata"]["namespace"] = ns.into();
    }
    object
}

#[test]
fn namespaces_are_defaulted_and_cluster_scope_comes_from_the_table() {
    let set = DesiredSet::build(
        policy("g", Some("team-a")),
        revision("a"),
        vec![
            manifest(1, cm("plain", None)),
            manifest(5, cm("explicit", Some("other"))),
            manifest(
                9,
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "reader", "namespace": "ignored"}, "rules": []}),
            ),
        ],
    )
    .unwrap();
    let namespaces: Vec<_> = set.objects.iter().map(|o| o.namespace.as_deref()).collect();
    assert_eq!(namespaces, [Some("team-a"), Some("other"), None]);
    assert_eq!(set.objects[0].value().unwrap()["metadata"]["namespace"], "team-a");
    assert!(set.objects[2].value().unwrap()["metadata"].get("namespace").is_none());
    assert_eq!(set.objects[2].resource, "clusterroles");
    // Ownership is stamped so that removing it is drift.
    assert_eq!(
        set.objects[0].value().unwrap()["metadata"]["labels"]["driftguard.io/managed"],
        "true"
    );
    assert_eq!(
        set.objects[0].value().unwrap()["metadata"]["annotations"]["driftguard.io/guard"],
        "default/g"
    );
    assert!(set.weight() > 0);
}

#[test]
fn duplicates_after_namespace_defaulting_name_both_places() {
    let err = DesiredSet::build(
        policy("g", None),
        revision("a"),
        vec![manifest(1, cm("web", None)), manifest(7, cm("web", Some("default")))],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("apps/all.yaml:1") && err.contains("apps/all.yaml:7"),
        "{err}"
    );
    assert!(err.contains("ConfigMap default/web"), "{err}");
}

#[test]
fn generate_name_objects_and_hooks_are_skipped_with_their_origin() {
    let set = DesiredSet::build(
        policy("g", None),
        revision("a"),
        vec![
            manifest(
                3,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}),
            ),
            manifest(
                9,
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate",
                    "annotations": {"helm.sh/hook": "pre-upgrade"}}}),
            ),
            manifest(20, cm("kept", None)),
        ],
    )
    .unwrap();
    assert_eq!(set.objects.len(), 1);
    assert_eq!(set.objects[0].name, "kept");
    let skipped: Vec<String> = set.skipped.iter().map(ToString::to_string).collect();
    assert!(
        skipped[0].starts_with("apps/all.yaml:3: ConfigMap x-* skipped: generateName"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].starts_with("apps/all.yaml:9: Job migrate skipped: helm.sh/hook"),
        "{skipped:?}"
    );
}

#[test]
fn manifests_without_identity_are_rejected_with_their_origin() {
    let err = DesiredSet::build(
        policy("g", None),
        revision("a"),
        vec![manifest(
            3,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("apps/all.yaml:3") && err.contains("metadata.name"),
        "{err}"
    );
}

#[test]
fn index_finds_managed_objects_and_reports_cross_guard_conflicts() {
    let a =
        Arc::new(DesiredSet::build(policy("a", None), revision("1"), vec![manifest(1, cm("shared", None))]).unwrap());
    let b = Arc::new(
        DesiredSet::build(
            policy("b", None),
            revision("2"),
            vec![manifest(1, cm("shared", None)), manifest(4, cm("own", None))],
        )
        .unwrap(),
    );
    let store = DesiredStore::new();
    assert!(!store.is_ready());
    let conflicts = store.publish(vec![b.clone(), a.clone()], true);
    assert!(store.is_ready());
    assert_eq!(
        conflicts,
        [Conflict {
            object: "ConfigMap default/shared".into(),
            kept_by: "default/a".into(),
            ignored_in: "default/b".into(),
        }]
    );
    let index = store.index();
    assert_eq!(index.len(), 3, "both claims of `shared` are indexed");
    let shared = index.lookup("", "configmaps", Some("default"), "shared").unwrap();
    assert_eq!(shared.guard.id.name, "a");
    assert_eq!(shared.revision.commit, "1");
    // The live object names its owner: that Guard's declaration decides.
    let owned = |owner: Option<&str>| {
        index
            .lookup_owned("", "configmaps", Some("default"), "shared", || owner.map(str::to_owned))
            .unwrap()
            .guard
            .id
            .name
            .clone()
    };
    assert_eq!(owned(Some("default/b")), "b");
    assert_eq!(owned(Some("default/a")), "a");
    assert_eq!(
        owned(Some("elsewhere/c")),
        "a",
        "an owner that does not claim it: the fallback"
    );
    assert_eq!(owned(None), "a");
    // One claim: the owner is not even asked.
    let own = index
        .lookup_owned("", "configmaps", Some("default"), "own", || {
            panic!("asked for a single claim")
        })
        .unwrap();
    assert_eq!(own.guard.id.name, "b");
    // The very same sets again: the index is kept, not rebuilt (and the conflict not re-reported).
    assert!(store.publish(vec![b.clone(), a.clone()], true).is_empty());
    assert!(Arc::ptr_eq(&index, &store.index()));
    store.publish(vec![a], true);
    assert!(!Arc::ptr_eq(&index, &store.index()), "different sets rebuild it");
    assert_eq!(
        index
            .lookup("", "configmaps", Some("default"), "own")
            .unwrap()
            .guard
            .id
            .name,
        "b"
    );
    assert!(index.lookup("", "configmaps", Some("other"), "own").is_none());
    assert!(index.lookup("", "secrets", Some("default"), "own").is_none());
    assert!(index.lookup("apps", "configmaps", Some("default"), "own").is_none());
}

/// Without a live owner to ask (CREATE, `/scale`), the Guard created first decides, whatever
/// the names; Guards without a creation time (standalone) come after, by id.
#[test]
fn the_guard_created_first_is_the_fallback_owner() {
    let created = |name: &str, at: Option<&str>| {
        let mut policy = (*policy(name, None)).clone();
        policy.created = at.map(str::to_owned);
        Arc::new(DesiredSet::build(Arc::new(policy), revision("1"), vec![manifest(1, cm("shared", None))]).unwrap())
    };
    type Guards<'a> = &'a [(&'a str, Option<&'a str>)];
    let cases: [(Guards, &str); 4] = [
        (
            &[("a", Some("2026-12-08T10:00:05Z")), ("z", Some("2026-12-08T10:00:01Z"))],
            "z",
        ),
        (
            &[("z", Some("2026-12-08T10:00:01Z")), ("a", Some("2026-12-08T10:00:05Z"))],
            "z",
        ),
        (&[("a", None), ("z", Some("2026-12-08T10:00:05Z"))], "z"),
        (&[("m", None), ("b", None)], "b"),
    ];
    for (guards, owner) in cases {
        let sets = guards.iter().map(|(name, at)| created(name, *at)).collect();
        let (index, conflicts) = AdmissionIndex::build(sets);
        let found = index.lookup("", "configmaps", Some("default"), "shared").unwrap();
        assert_eq!(found.guard.id.name, owner, "{guards:?}");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].kept_by, format!("default/{owner}"));
    }
}

#[test]
fn cluster_scoped_lookup_accepts_empty_namespace() {
    let set = DesiredSet::build(
        policy("g", None),
        revision("1"),
        vec![manifest(
            1,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
        )],
    )
    .unwrap();
    let (index, _) = AdmissionIndex::build(vec![Arc::new(set)]);
    assert!(index.lookup("", "namespaces", None, "team-a").is_some());
    assert!(index.lookup("", "namespaces", Some(""), "team-a").is_some());
}

#[test]
fn cache_builds_a_revision_once_and_keeps_build_errors_readable() {
    let cache = DesiredCache::new(64 * 1024 * 1024);
    let guard = policy("g", None);
    let mut builds = 0;
    for _ in 0..3 {
        let set = cache
            .get_or_try_build::<DesiredError, _>(&guard, "abc", || {
                builds += 1;
                Ok(Arc::new(DesiredSet::build(
                    guard.clone(),
                    revision("abc"),
                    vec![manifest(1, cm("x", None))],
                )?))
            })
            .unwrap();
        assert_eq!(set.objects.len(), 1);
    }
    assert_eq!(builds, 1);
    assert_eq!(cache.len(), 1);
    let err = cache
        .get_or_try_build(&guard, "bad", || {
            DesiredSet::build(
                guard.clone(),
                revision("bad"),
                vec![manifest(2, json!({"kind": "ConfigMap"}))],
            )
            .map(Arc::new)
        })
        .unwrap_err();
    assert!(err.to_string().contains("apiVersion"), "{err}");
}

#[test]
fn an_edited_guard_spec_builds_a_new_set_for_the_same_commit() {
    let cache = DesiredCache::new(64 * 1024 * 1024);
    let build = |guard: &Arc<GuardPolicy>| {
        cache
            .get_or_try_build::<DesiredError, _>(guard, "abc", || {
                Ok(Arc::new(DesiredSet::build(
                    guard.clone(),
                    revision("abc"),
                    vec![manifest(1, cm("x", None))],
                )?))
            })
            .unwrap()
    };
    let first = build(&policy("g", None));
    assert!(Arc::ptr_eq(&first, &build(&policy("g", None))), "same spec: cached");
    let moved = build(&policy("g", Some("team-b")));
    assert!(!Arc::ptr_eq(&first, &moved));
    assert_eq!(moved.objects[0].namespace.as_deref(), Some("team-b"));
}

#[test]
fn cache_evicts_by_weight() {
    let cache = DesiredCache::new(4 * 1024);
    let guard = policy("g", None);
    for commit in ["1", "2", "3", "4", "5", "6", "7", "8"] {
        let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(1500)}});
        cache
            .get_or_try_build::<DesiredError, _>(&guard, commit, || {
                Ok(Arc::new(DesiredSet::build(
                    guard.clone(),
                    revision(commit),
                    vec![manifest(1, big)],
                )?))
            })
            .unwrap();
    }
    assert!(cache.len() < 8, "bounded by bytes, holds {}", cache.len());
}
