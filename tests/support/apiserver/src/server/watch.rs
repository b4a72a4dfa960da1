//! Watches: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`)
//! on a streaming 200 response, as kube-apiserver's watch cache serves them.
//!
//! - Without `resourceVersion` (or with `0`) the watch starts with synthetic `ADDED` events for
//!   every matching object; with `resourceVersion=N` it replays the stored events after N, or
//!   answers a single `ERROR` event carrying a 410 `Expired` Status when N is older than the
//!   history window.
//! - `allowWatchBookmarks=true`: a `BOOKMARK` right after the initial/replayed events and then
//!   every `ServerOptions::bookmark_interval`, carrying the resourceVersion of the last event
//!   this watch has processed (so resuming from it never skips an event).
//! - `sendInitialEvents=true` (watch-list) sends the initial `ADDED` events followed by a
//!   bookmark annotated `k8s.io/initial-events-end: "true"`.
//! - `timeoutSeconds` ends the stream cleanly; [`crate::faults::Faults::drop_watches`] ends it
//!   abruptly (a body error: HTTP/2 stream reset or HTTP/1.1 connection close).
//! - Objects entering or leaving a selector show up as `ADDED`/`DELETED`.
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Response;
use hyper::body::{Bytes, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::pipeline::{Target, response_object};
use super::respond::{Body, BoxError};
use super::routes::Query;
use super::{Shared, respond};
use crate::discovery::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::WatchFilter;

/// A response body fed by a channel: each message is a frame, an error ends it abruptly.
struct ChannelBody {
    receiver: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.receiver.poll_recv(cx).map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// Why a watch was cut.
#[derive(Debug, thiserror::Error)]
#[error("watch dropped by an injected fault")]
struct Dropped;

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(info: &ResourceInfo, revision: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": metadata})
}

/// Start a watch; the events flow from a task that ends with the stream.
pub(super) fn serve(
    shared: Arc<Shared>,
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &Query,
) -> Response<Body> {
    let info = target.info.clone();
    let from = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(text) => match text.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return respond::error(&crate::ApiError::new(
                    400,
                    "BadRequest",
                    format!("invalid resource version: {text}"),
                ));
            }
        },
    };
    let send_initial = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(shared.options.watch_timeout);
    let filter = WatchFilter {
        group: info.group.clone(),
        resource: info.plural.clone(),
        namespace: target.namespace.clone(),
        labels,
        fields,
    };
    let (sender, receiver) = mpsc::channel(64);
    let mut initial: Vec<Bytes> = Vec::new();
    let subscription = {
        let state = shared.lock();
        let subscription = state.store.subscribe(from);
        if let Ok(sub) = &subscription {
            if from.is_none() || send_initial {
                for object in state
                    .store
                    .list(&info.group, &info.plural, target.namespace.as_deref())
                    .into_iter()
                    .filter(|o| filter.matches(o))
                {
                    initial.push(event_line("ADDED", &response_object(&info, object.clone())));
                }
            }
            for event in &sub.replay {
                if let Some((kind, object)) = filter.translate(event) {
                    initial.push(event_line(kind.as_str(), &response_object(&info, object)));
                }
            }
        }
        subscription
    };
    let mut response = Response::new(http_body_util::BodyExt::boxed(ChannelBody { receiver }));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let subscription = match subscription {
        Ok(sub) => sub,
        Err(expired) => {
            // kube's watch cache answers 200 and one ERROR event.
            let _ = sender.try_send(Ok(event_line("ERROR", &expired.status())));
            return response;
        }
    };
    let last = subscription
        .replay
        .last()
        .map(|e| e.revision)
        .unwrap_or(subscription.start);
    let stream = Stream {
        shared,
        info,
        filter,
        sender,
        last,
        bookmarks,
        initial_events_end: send_initial && bookmarks,
        deadline: Instant::now() + timeout,
    };
    tokio::spawn(stream.run(initial, subscription.receiver));
    response
}

struct Stream {
    shared: Arc<Shared>,
    info: ResourceInfo,
    filter: WatchFilter,
    sender: mpsc::Sender<Result<Bytes, BoxError>>,
    /// The revision of the last event processed (what a bookmark may promise).
    last: u64,
    bookmarks: bool,
    initial_events_end: bool,
    deadline: Instant,
}

impl Stream {
    async fn send(&self, line: Bytes) -> bool {
        self.sender.send(Ok(line)).await.is_ok()
    }

    async fn bookmark(&self, initial_events_end: bool) -> bool {
        self.send(event_line(
            "BOOKMARK",
            &bookmark(&self.info, self.last, initial_events_end),
        ))
        .await
    }

    async fn run(mut self, initial: Vec<Bytes>, mut events: broadcast::Receiver<Arc<crate::store::Event>>) {
        for line in initial {
            if !self.send(line).await {
                return;
            }
        }
        if self.bookmarks && !self.bookmark(self.initial_events_end).await {
            return;
        }
        let mut drops = self.shared.faults.watch_drops();
        let mut shutdown = self.shared.shutdown.subscribe();
        let interval = self.shared.options.bookmark_interval.max(Duration::from_millis(10));
        let mut next_bookmark = Instant::now() + interval;
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(event) => {
                        self.last = self.last.max(event.revision);
                        if let Some((kind, object)) = self.filter.translate(&event) {
                            let line = event_line(kind.as_str(), &response_object(&self.info, object));
                            if !self.send(line).await {
                                return;
                            }
                        }
                    }
                    // Too slow or the store is gone: end the stream, the client re-lists.
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(next_bookmark), if self.bookmarks => {
                    if !self.bookmark(false).await {
                        return;
                    }
                    next_bookmark = Instant::now() + interval;
                }
                _ = tokio::time::sleep_until(self.deadline) => return,
                _ = drops.changed() => {
                    let _ = self.sender.send(Err(Box::new(Dropped))).await;
                    return;
                }
                _ = shutdown.changed() => return,
                _ = self.sender.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventType;

    #[test]
    fn events_are_json_lines() {
        let line = event_line(EventType::Added.as_str(), &json!({"a": 1}));
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, json!({"type": "ADDED", "object": {"a": 1}}));
        let mark = bookmark(
            &crate::discovery::Registry::new()
                .lookup("", "v1", "configmaps")
                .unwrap()
                .clone(),
            7,
            true,
        );
        assert_eq!(
            mark,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"resourceVersion": "7", "annotations": {"k8s.io/initial-events-end": "true"}}})
        );
    }
}
