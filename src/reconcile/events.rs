//! Kubernetes Events (events.k8s.io/v1) for what the enforcer does to an object: apply and
//! prune failures, drift corrections, fights. kube-runtime's recorder aggregates repeats of the
//! same event into a series. Publishing is best effort: a failed Event is logged, never allowed
//! to fail a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::ObjectKey;

/// The controller name Events carry.
pub const REPORTER: &str = "driftguard";

/// Longest note the Events API accepts (1 kB); longer notes are cut at a char boundary.
pub(crate) const MAX_NOTE: usize = 1024;

/// Publishes Events on behalf of one driftguard replica.
#[derive(Clone)]
pub struct Events {
    recorder: std::sync::Arc<Recorder>,
}

impl Events {
    /// A recorder reporting as `driftguard` from `instance` (the pod name).
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance,
        };
        Events {
            recorder: std::sync::Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// A Normal event.
    pub async fn normal(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Normal, reason, action, note).await;
    }

    /// A Warning event.
    pub async fn warning(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Warning, reason, action, note).await;
    }

    async fn publish(&self, regarding: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(object = ?regarding.name, reason, %error, "cannot publish Event");
        }
    }
}

fn truncate(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// The reference of an object the enforcer manages.
pub fn reference(key: &ObjectKey, version: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(if key.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", key.group)
        }),
        kind: Some(key.kind.clone()),
        namespace: key.namespace.clone(),
        name: Some(key.name.clone()),
        uid,
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_char_boundary() {
        let note = "é".repeat(1000);
        let cut = truncate(note);
        assert!(cut.len() <= MAX_NOTE && cut.ends_with("..."), "{}", cut.len());
        assert_eq!(truncate("short".into()), "short");
    }

    #[test]
    fn references_carry_group_and_version() {
        let key = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("default".into()),
            name: "web".into(),
        };
        let r = reference(&key, "v1", Some("u1".into()));
        assert_eq!(r.api_version.as_deref(), Some("apps/v1"));
        let core = ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: None,
            name: "c".into(),
        };
        assert_eq!(reference(&core, "v1", None).api_version.as_deref(), Some("v1"));
    }
}
