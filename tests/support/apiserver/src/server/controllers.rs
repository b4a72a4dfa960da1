//! The controllers whose effects clients see on deletion, acting through the same write
//! pipeline (and so through admission webhooks) under their own service-account identities,
//! as kube-controller-manager does:
//! - namespace controller: when a Namespace is Terminating, delete everything in it (as
//!   `namespace-controller`), then remove the `kubernetes` finalizer via `finalize`, after
//!   which the Namespace disappears;
//! - garbage collector (as `generic-garbage-collector`): objects whose owners (by uid) are all
//!   gone are deleted; owners in `foregroundDeletion` get their dependents deleted and lose the
//!   finalizer once none remain; owners with the `orphan` finalizer get their dependents'
//!   ownerReferences removed, then lose the finalizer;
//! - CRD finalizer: a deleted CRD's custom resources are removed from storage (no webhooks,
//!   like kube's), then its `customresourcecleanup` finalizer.
//!
//! They react to every stored change; a step that fails (a webhook denial, a conflict) is
//! retried shortly after.
//!
//! # Simplifications
//! Dependents of a foreground deletion are deleted in the background (kube deletes them in the
//! foreground too, recursively); an object with some but not all owners gone keeps its
//! dangling references.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use super::pipeline::{self, Caller, Change, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Target, WriteOptions};
use super::{Identity, Shared, State};
use crate::ApiError;
use crate::store::{ObjectKey, Written, finalizers, is_being_deleted, resource_version, str_at};

/// How soon a failed step is retried.
const RETRY: Duration = Duration::from_millis(200);

/// What kube-controller-manager's clients send as User-Agent (and so their field manager).
const USER_AGENT: &str = "kube-controller-manager/v1.32.4 (linux/amd64) kubernetes/testapi";

/// One step a controller takes.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// DELETE with Background propagation.
    Delete { key: ObjectKey, identity: Identity },
    /// PUT of the whole object (or its subresource).
    Replace {
        key: ObjectKey,
        object: Value,
        subresource: Option<&'static str>,
        identity: Identity,
    },
}

/// Run until the server stops.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut feed = shared.lock().store.feed();
    let mut shutdown = shared.shutdown.subscribe();
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            received = feed.recv() => if let Err(RecvError::Closed) = received { return },
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            _ = shutdown.changed() => return,
        }
        // Reconcile once for everything that is queued.
        while !matches!(feed.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        let failed = reconcile(&shared).await;
        retry_at = failed.then(|| Instant::now() + RETRY);
    }
}

/// One pass over the state; true if some step failed.
async fn reconcile(shared: &Shared) -> bool {
    let actions = {
        let mut state = shared.lock();
        clean_up_custom_resources(&mut state);
        plan(&state)
    };
    let mut failed = false;
    for action in actions {
        if let Err(err) = execute(shared, action).await
            && err.code != 404
        {
            failed = true;
        }
    }
    failed
}

fn identity_caller(shared: &Shared, identity: Identity) -> Caller {
    Caller {
        user: shared.user(identity),
        options: WriteOptions {
            user_agent: format!("{USER_AGENT}/{}", identity.username()),
            ..Default::default()
        },
    }
}

fn target_of(state: &State, key: &ObjectKey, subresource: Option<&'static str>) -> Option<Target> {
    let info = state.registry.any_version(&key.group, &key.resource)?.clone();
    Some(Target {
        info,
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        name: Some(key.name.clone()),
        subresource: subresource.map(str::to_owned),
    })
}

async fn execute(shared: &Shared, action: Action) -> Result<(), ApiError> {
    let (key, subresource) = match &action {
        Action::Delete { key, .. } => (key.clone(), None),
        Action::Replace { key, subresource, .. } => (key.clone(), *subresource),
    };
    let Some(target) = target_of(&shared.lock(), &key, subresource) else {
        return Ok(());
    };
    match action {
        Action::Delete { identity, .. } => {
            let caller = identity_caller(shared, identity);
            let options = json!({"propagationPolicy": "Background"});
            pipeline::delete(shared, &target, &caller, options).await.map(|_| ())
        }
        Action::Replace { object, identity, .. } => {
            let caller = identity_caller(shared, identity);
            pipeline::update(shared, &target, &caller, Change::Replace(object))
                .await
                .map(|_| ())
        }
    }
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The object without `finalizer`.
fn without_finalizer(object: &Value, finalizer: &str) -> Value {
    let mut object = object.clone();
    let rest: Vec<String> = finalizers(&object).into_iter().filter(|f| f != finalizer).collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        // Empty lists are omitted, as kube serializes them.
        if rest.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(rest));
        }
    }
    object
}

/// What the namespace controller and the garbage collector would do now (pure).
fn plan(state: &State) -> Vec<Action> {
    let mut actions = Vec::new();
    let objects: Vec<(&ObjectKey, &Value)> = state.store.all().collect();

    // Namespace controller.
    for (key, ns) in objects
        .iter()
        .filter(|(k, o)| k.group.is_empty() && k.resource == "namespaces" && is_being_deleted(o))
    {
        let mut contents = objects.iter().filter(|(k, _)| k.namespace == key.name).peekable();
        if contents.peek().is_none() {
            let spec_finalizers: Vec<Value> = ns
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if spec_finalizers.iter().any(|f| f == "kubernetes") {
                let mut finalized = (*ns).clone();
                let rest: Vec<Value> = spec_finalizers.into_iter().filter(|f| f != "kubernetes").collect();
                pipeline::set_pointer(&mut finalized, "/spec/finalizers", json!(rest));
                actions.push(Action::Replace {
                    key: (*key).clone(),
                    object: finalized,
                    subresource: Some("finalize"),
                    identity: Identity::NamespaceController,
                });
            }
            continue;
        }
        for (child, object) in contents {
            if !is_being_deleted(object) {
                actions.push(Action::Delete {
                    key: (*child).clone(),
                    identity: Identity::NamespaceController,
                });
            }
        }
    }

    // Garbage collector.
    let by_uid: HashMap<&str, &Value> = objects.iter().map(|(_, o)| (str_at(o, "/metadata/uid"), *o)).collect();
    let mut dependents: HashMap<String, usize> = HashMap::new();
    for (_, object) in &objects {
        for uid in owner_uids(object) {
            *dependents.entry(uid).or_default() += 1;
        }
    }
    let deleting_with =
        |owner: &Value, finalizer: &str| is_being_deleted(owner) && finalizers(owner).iter().any(|f| f == finalizer);
    for (key, object) in &objects {
        let owners = owner_uids(object);
        if owners.is_empty() || is_being_deleted(object) {
            continue;
        }
        let owner_objects: Vec<&Value> = owners.iter().filter_map(|u| by_uid.get(u.as_str()).copied()).collect();
        let foreground = owner_objects.iter().any(|o| deleting_with(o, FOREGROUND_FINALIZER));
        if owner_objects.is_empty() || foreground {
            actions.push(Action::Delete {
                key: (*key).clone(),
                identity: Identity::GarbageCollector,
            });
            continue;
        }
        let orphaning: Vec<&str> = owner_objects
            .iter()
            .filter(|o| deleting_with(o, ORPHAN_FINALIZER))
            .map(|o| str_at(o, "/metadata/uid"))
            .collect();
        if !orphaning.is_empty() {
            let mut orphan = (*object).clone();
            if let Some(meta) = orphan.get_mut("metadata").and_then(Value::as_object_mut) {
                let refs: Vec<Value> = meta
                    .get("ownerReferences")
                    .and_then(Value::as_array)
                    .map(|refs| {
                        refs.iter()
                            .filter(|r| !orphaning.contains(&r.get("uid").and_then(Value::as_str).unwrap_or("")))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if refs.is_empty() {
                    meta.remove("ownerReferences");
                } else {
                    meta.insert("ownerReferences".into(), json!(refs));
                }
            }
            actions.push(Action::Replace {
                key: (*key).clone(),
                object: orphan,
                subresource: None,
                identity: Identity::GarbageCollector,
            });
        }
    }
    for (key, owner) in &objects {
        let has_dependents = dependents.get(str_at(owner, "/metadata/uid")).is_some_and(|n| *n > 0);
        if has_dependents {
            continue;
        }
        if let Some(finalizer) = [FOREGROUND_FINALIZER, ORPHAN_FINALIZER]
            .into_iter()
            .find(|f| deleting_with(owner, f))
        {
            actions.push(Action::Replace {
                key: (*key).clone(),
                object: without_finalizer(owner, finalizer),
                subresource: None,
                identity: Identity::GarbageCollector,
            });
        }
    }
    actions
}

/// kube's CRD finalizer: remove the instances of deleted CRDs from storage, then the finalizer.
fn clean_up_custom_resources(state: &mut State) {
    let crd_key = |name: &str| ObjectKey::new("apiextensions.k8s.io", "customresourcedefinitions", "", name);
    let deleting: Vec<Value> = state
        .store
        .list("apiextensions.k8s.io", "customresourcedefinitions", None)
        .into_iter()
        .filter(|crd| is_being_deleted(crd) && finalizers(crd).iter().any(|f| f == pipeline::CRD_CLEANUP_FINALIZER))
        .cloned()
        .collect();
    for crd in deleting {
        let group = str_at(&crd, "/spec/group").to_owned();
        let plural = str_at(&crd, "/spec/names/plural").to_owned();
        let instances: Vec<(ObjectKey, Value)> = state
            .store
            .all()
            .filter(|(k, _)| k.group == group && k.resource == plural)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut remaining = false;
        for (key, instance) in instances {
            if finalizers(&instance).is_empty() {
                let _ = state.store.delete(&key, None);
                continue;
            }
            remaining = true;
            if !is_being_deleted(&instance)
                && let Some(rv) = resource_version(&instance)
            {
                let mut marked = instance.clone();
                pipeline::set_pointer(&mut marked, "/metadata/deletionTimestamp", json!(pipeline::now()));
                pipeline::set_pointer(&mut marked, "/metadata/deletionGracePeriodSeconds", json!(0));
                let _ = state.store.update(&key, marked, rv);
            }
        }
        if remaining {
            continue;
        }
        let name = str_at(&crd, "/metadata/name").to_owned();
        let Some(rv) = resource_version(&crd) else { continue };
        let finalized = without_finalizer(&crd, pipeline::CRD_CLEANUP_FINALIZER);
        if let Ok(Written::Deleted(_) | Written::Stored(_)) = state.store.update(&crd_key(&name), finalized, rv) {
            state.refresh_custom_resources();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Registry;
    use crate::store::Store;

    fn state_with(objects: &[(ObjectKey, Value)]) -> State {
        let mut store = Store::new(100);
        for (key, object) in objects {
            store.create(key.clone(), object.clone()).unwrap();
        }
        State {
            store,
            registry: Registry::new(),
        }
    }

    fn cm(ns: &str, name: &str, extra: Value) -> (ObjectKey, Value) {
        let mut object = json!({"metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}});
        if let (Some(meta), Some(extra)) = (object["metadata"].as_object_mut(), extra.as_object()) {
            meta.extend(extra.clone());
        }
        (ObjectKey::new("", "configmaps", ns, name), object)
    }

    #[test]
    fn terminating_namespaces_are_emptied_then_finalized() {
        let ns = (
            ObjectKey::new("", "namespaces", "", "team"),
            json!({"metadata": {"name": "team", "uid": "ns", "deletionTimestamp": "t"}, "spec": {"finalizers": ["kubernetes"]}}),
        );
        let state = state_with(&[ns.clone(), cm("team", "a", json!({})), cm("other", "b", json!({}))]);
        assert_eq!(
            plan(&state),
            [Action::Delete {
                key: ObjectKey::new("", "configmaps", "team", "a"),
                identity: Identity::NamespaceController
            }]
        );
        let state = state_with(&[ns]);
        let actions = plan(&state);
        let [
            Action::Replace {
                object, subresource, ..
            },
        ] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(*subresource, Some("finalize"));
        assert_eq!(object["spec"]["finalizers"], json!([]));
    }

    #[test]
    fn dependents_of_missing_owners_are_collected() {
        let owner = cm("a", "owner", json!({}));
        let child = cm(
            "a",
            "child",
            json!({"ownerReferences": [{"uid": "uid-owner", "name": "owner"}]}),
        );
        let orphan = cm(
            "a",
            "orphan",
            json!({"ownerReferences": [{"uid": "gone", "name": "x"}]}),
        );
        let state = state_with(&[owner, child, orphan]);
        assert_eq!(
            plan(&state),
            [Action::Delete {
                key: ObjectKey::new("", "configmaps", "a", "orphan"),
                identity: Identity::GarbageCollector
            }]
        );
    }

    #[test]
    fn orphaning_removes_owner_references_then_the_finalizer() {
        let owner = cm(
            "a",
            "owner",
            json!({"deletionTimestamp": "t", "finalizers": ["orphan"]}),
        );
        let child = cm(
            "a",
            "child",
            json!({"ownerReferences": [{"uid": "uid-owner", "name": "owner"}]}),
        );
        let state = state_with(&[owner.clone(), child]);
        let actions = plan(&state);
        let [Action::Replace { key, object, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(key.name, "child");
        assert!(object["metadata"].get("ownerReferences").is_none());
        let state = state_with(&[owner]);
        let actions = plan(&state);
        let [Action::Replace { object, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert!(object["metadata"].get("finalizers").is_none());
    }
}
