//! Watch streams: newline-delimited `{"type":...,"object":...}` events, one per HTTP/1.1 chunk
//! or HTTP/2 DATA frame, as the real apiserver sends them.
//!
//! From resourceVersion "" or "0" the stream starts with the current objects as ADDED; from
//! an RV it replays every later event from the store's history. An RV older than the history
//! (or a compaction while the watch is open) yields one ERROR event carrying a 410 Expired
//! `Status` in an HTTP 200 response, then the stream ends, which is what makes clients relist.
//! An object that stops matching the watch's selectors is DELETED for that watch (its previous
//! state with the new RV), one that starts matching is ADDED, as the real watch cache does.

use std::io;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::resources::ResourceKind;
use super::selector::Selector;
use super::store::{Event, EventType, Store, WatchPoll};

/// How often a watch that asked for bookmarks gets one when nothing else happens.
/// The real server sends them about once a minute; sooner makes tests quick.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait between checks that the server is still running.
const POLL_SLICE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct WatchRequest {
    pub kind: &'static ResourceKind,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// None for "" and "0": start with the current state.
    pub resource_version: Option<u64>,
    pub timeout: Duration,
    pub bookmarks: bool,
    /// Core Events shown in the events.k8s.io/v1 shape (see events.rs).
    pub events_v1: bool,
}

/// Streams the watch, one event line per `send`, until its timeout, an expiry, a failed send
/// (client gone) or `keep_going` turning false (server stopping). The response head has been
/// sent by the caller, which also ends the response.
pub fn stream(
    store: &Store,
    req: &WatchRequest,
    send: &mut dyn FnMut(Vec<u8>) -> io::Result<()>,
    keep_going: &dyn Fn() -> bool,
) -> io::Result<()> {
    let deadline = Instant::now() + req.timeout;
    let namespace = req.namespace.as_deref();
    let (initial, cursor) = match req.resource_version {
        None => {
            let (items, cursor) = store.snapshot_for_watch(req.kind, namespace, &req.selector);
            (items, Ok(cursor))
        }
        Some(rv) => (Vec::new(), store.watch_from(Some(rv))),
    };
    let mut cursor = match cursor {
        Ok(cursor) => cursor,
        Err(expired) => return send(event_line("ERROR", &expired.body)),
    };
    let shown = |object: &Value| if req.events_v1 { super::events::from_core(object) } else { object.clone() };
    for object in &initial {
        send(event_line("ADDED", &shown(object)))?;
    }
    let mut next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
    while keep_going() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if req.bookmarks && now >= next_bookmark {
            send(event_line("BOOKMARK", &bookmark(req.kind, cursor.last_rv)))?;
            next_bookmark = now + BOOKMARK_INTERVAL;
        }
        let mut wait = POLL_SLICE.min(deadline - now);
        if req.bookmarks {
            wait = wait.min(next_bookmark.saturating_duration_since(now));
        }
        match store.poll_events(&mut cursor, wait) {
            WatchPoll::Events(events) => {
                for event in events {
                    if let Some((event_type, object)) = view(req, &event) {
                        send(event_line(event_type, &shown(&object)))?;
                    }
                }
            }
            WatchPoll::Expired(expired) => {
                send(event_line("ERROR", &expired.body))?;
                break;
            }
        }
    }
    Ok(())
}

/// How one store event looks to this watch, if it sees it at all.
fn view(req: &WatchRequest, event: &Event) -> Option<(&'static str, Value)> {
    if event.resource != req.kind.resource || req.namespace.as_deref().is_some_and(|ns| ns != event.namespace) {
        return None;
    }
    let now = req.selector.matches(&event.object);
    let before = event.previous.as_ref().is_some_and(|p| req.selector.matches(p));
    match (event.kind, before, now) {
        (EventType::Added, _, true) => Some(("ADDED", event.object.clone())),
        (EventType::Deleted, true, _) => Some(("DELETED", event.object.clone())),
        (EventType::Modified, true, true) => Some(("MODIFIED", event.object.clone())),
        (EventType::Modified, false, true) => Some(("ADDED", event.object.clone())),
        (EventType::Modified, true, false) => {
            let mut last_seen = event.previous.clone()?;
            last_seen["metadata"]["resourceVersion"] = json!(event.rv.to_string());
            Some(("DELETED", last_seen))
        }
        _ => None,
    }
}

fn bookmark(kind: &ResourceKind, rv: u64) -> Value {
    json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": rv.to_string()}})
}

fn event_line(event_type: &str, object: &Value) -> Vec<u8> {
    let mut line = json!({"type": event_type, "object": object}).to_string().into_bytes();
    line.push(b'\n');
    line
}
