//! Kubernetes Events for admission decisions: a denied, reverted or break-glass edit shows on the object
//! (`kubectl describe`, `kubectl get events`), next to the enforcer's own Events.
//!
//! Admission must never wait on the API server, so [`EventingSink`] wraps the audit sink: it
//! passes every record through and hands denials and reverts to a background publisher over a
//! bounded channel (a full channel drops the Event, never the request). The publisher allows
//! one Event per object and reason per [`RATE_WINDOW`]; what it held back is counted into the
//! next one, and kube-runtime's recorder aggregates repeats into a series.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::mpsc;

use super::events::{Events, MAX_NOTE};
use crate::audit::{AuditEvent, AuditSink, EventKind};

/// At most one Event per object and reason in this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Decisions waiting to become Events; more are dropped (admission never waits).
const QUEUE: usize = 1024;

/// An [`AuditSink`] that also turns admission denials and reverts into Events.
pub struct EventingSink {
    inner: Arc<dyn AuditSink>,
    queue: mpsc::Sender<AuditEvent>,
}

impl EventingSink {
    /// Wrap `inner`; Events are published through `events` by a task spawned here (call from
    /// within a tokio runtime).
    pub fn start(inner: Arc<dyn AuditSink>, events: Events) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(publish(pending, events));
        EventingSink { inner, queue }
    }
}

impl AuditSink for EventingSink {
    fn record(&self, event: AuditEvent) {
        if event_reason(event.event).is_some() && !event.dry_run {
            // Full or closed: the Event is lost, the audit record below is not.
            let _ = self.queue.try_send(event.clone());
        }
        self.inner.record(event);
    }
}

/// The Event reason for an admission decision worth one.
fn event_reason(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::AdmissionDenied => Some("EditDenied"),
        EventKind::AdmissionReverted => Some("EditReverted"),
        EventKind::AdmissionBreakGlass => Some("BreakGlass"),
        _ => None,
    }
}

/// Decides which decisions become Events: one per (object, reason) per window, the rest
/// counted into the next.
#[derive(Default)]
struct Limiter {
    last: HashMap<(String, &'static str), (Instant, u32)>,
}

impl Limiter {
    /// `Some(held back since the last Event)` when an Event may go out now.
    fn admit(&mut self, key: (String, &'static str), now: Instant) -> Option<u32> {
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < RATE_WINDOW => {
                *held = held.saturating_add(1);
                None
            }
            Some((at, held)) => {
                let before = *held;
                (*at, *held) = (now, 0);
                Some(before)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

async fn publish(mut pending: mpsc::Receiver<AuditEvent>, events: Events) {
    let mut limiter = Limiter::default();
    while let Some(event) = pending.recv().await {
        let Some(reason) = event_reason(event.event) else {
            continue;
        };
        let object = &event.object;
        let key = format!(
            "{}/{}/{}/{}",
            object.group,
            object.kind,
            object.namespace.as_deref().unwrap_or(""),
            object.name
        );
        let Some(held) = limiter.admit((key, reason), Instant::now()) else {
            continue;
        };
        let regarding = ObjectReference {
            api_version: Some(if object.group.is_empty() {
                object.version.clone()
            } else {
                format!("{}/{}", object.group, object.version)
            }),
            kind: Some(object.kind.clone()),
            namespace: object.namespace.clone(),
            name: Some(object.name.clone()),
            ..ObjectReference::default()
        };
        let mut note = format!("{} by {}: {}", event.operation, event.actor.username, event.message);
        if held > 0 {
            note.push_str(&format!(" ({held} more since the last Event)"));
        }
        let link = event.fields.iter().find_map(|f| f.link.as_deref());
        events.warning(&regarding, reason, "Admit", with_link(note, link)).await;
    }
}

/// `note` ending with `link` (the first field's line in Git), unless it shows it already: a
/// revert's warnings leave out a link too long for a warning, and a note longer than the
/// Events API takes is cut short before the link, never through it.
fn with_link(note: String, link: Option<&str>) -> String {
    let Some(link) = link else {
        return note;
    };
    let suffix = format!("\nOpen it in Git: {link}");
    if note.len() + suffix.len() <= MAX_NOTE && note.contains(link) {
        return note;
    }
    if suffix.len() > MAX_NOTE {
        return note;
    }
    let note = note.replace(&suffix, "");
    let mut keep = (MAX_NOTE - suffix.len()).min(note.len());
    let mut out = if keep < note.len() {
        keep = keep.saturating_sub(3);
        while !note.is_char_boundary(keep) {
            keep -= 1;
        }
        format!("{}...", note.get(..keep).unwrap_or_default())
    } else {
        note
    };
    out.push_str(&suffix);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_object_and_reason_per_window_counting_the_rest() {
        let mut limiter = Limiter::default();
        let now = Instant::now();
        let web = || ("apps/Deployment/default/web".to_owned(), "EditDenied");
        assert_eq!(limiter.admit(web(), now), Some(0));
        assert_eq!(limiter.admit(web(), now + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit(web(), now + Duration::from_secs(2)), None);
        assert_eq!(
            limiter.admit(("apps/Deployment/default/web".to_owned(), "EditReverted"), now),
            Some(0),
            "another reason is another stream"
        );
        assert_eq!(
            limiter.admit(web(), now + RATE_WINDOW + Duration::from_secs(1)),
            Some(2)
        );
    }

    #[test]
    fn only_denials_and_reverts_become_events() {
        assert_eq!(event_reason(EventKind::AdmissionDenied), Some("EditDenied"));
        assert_eq!(event_reason(EventKind::AdmissionReverted), Some("EditReverted"));
        assert_eq!(event_reason(EventKind::AdmissionBreakGlass), Some("BreakGlass"));
        assert_eq!(event_reason(EventKind::AdmissionAudited), None);
        assert_eq!(event_reason(EventKind::DriftCorrected), None);
    }

    #[test]
    fn the_link_survives_into_the_note() {
        let link = "https://git.example.com/apps/blob/0123/web.yaml#L3";
        assert_eq!(with_link("denied".into(), None), "denied");
        // A denial's message already ends with it.
        let denied = format!("UPDATE by alice: denied\nOpen it in Git: {link}");
        assert_eq!(with_link(denied.clone(), Some(link)), denied);
        // A revert's warnings may not carry it: appended.
        assert_eq!(
            with_link("UPDATE by alice: reverted".into(), Some(link)),
            format!("UPDATE by alice: reverted\nOpen it in Git: {link}")
        );
        // Too long for the Events API: the text is cut, the link stays whole.
        let long = format!("UPDATE by alice: {}\nOpen it in Git: {link}", "é".repeat(700));
        let note = with_link(long, Some(link));
        assert!(note.len() <= MAX_NOTE, "{}", note.len());
        assert!(note.ends_with(&format!("...\nOpen it in Git: {link}")), "{note}");
        assert_eq!(note.matches(link).count(), 1);
    }
}
