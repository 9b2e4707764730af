//! Watch streams: newline-delimited JSON events, replayed from the store's history and then followed live,
//! with selector transitions (objects entering/leaving a selector become ADDED/DELETED, as in the watch
//! cache), bookmarks, `sendInitialEvents`, 410 for compacted resourceVersions and `timeoutSeconds`; and
//! streams cut mid-stream, as a dropped connection leaves them.

use crate::apiserver::{present, ApiServer, Filter};
use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::store::{EventType, StoredEvent};
use axum::body::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Renders each event's object for the client (plain JSON, or a one-row Table for `kubectl get -w`).
pub type Render = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// The open watch streams: how many there are, and a signal that cuts them all.
pub struct Watches {
    open: AtomicUsize,
    expired: AtomicUsize,
    cut: watch::Sender<u64>,
}

impl Default for Watches {
    fn default() -> Self {
        Watches {
            open: AtomicUsize::new(0),
            expired: AtomicUsize::new(0),
            cut: watch::channel(0).0,
        }
    }
}

impl Watches {
    /// Watch streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Watches answered with a 410 `Expired` ERROR event so far.
    pub fn expired(&self) -> usize {
        self.expired.load(Ordering::SeqCst)
    }

    /// Ends every open watch stream abruptly: the connection closes mid-response, without the final
    /// chunk, as when a load balancer or an apiserver replica goes away. Returns how many were open.
    pub fn cut_all(&self) -> usize {
        let open = self.open();
        self.cut.send_modify(|generation| *generation += 1);
        open
    }
}

/// Counts a stream as open while it lives.
struct OpenGuard(Arc<Watches>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a stream carries: encoded events, or the error that aborts the connection.
pub type Chunk = Result<Bytes, std::io::Error>;

pub struct WatchRequest {
    pub resource: Arc<ResourceType>,
    pub filter: Filter,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
    pub render: Render,
}

fn line(event_type: &str, object: Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).expect("serializable");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata})
}

/// What one stored event means for a watcher with `filter`.
fn translate(event: &StoredEvent, filter: &Filter) -> Option<(&'static str, Value)> {
    let now = event.kind != EventType::Deleted && filter.matches(&event.object);
    let before = match event.kind {
        EventType::Added => false,
        EventType::Deleted => filter.matches(&event.object),
        EventType::Modified => event.previous.as_ref().is_some_and(|p| filter.matches(p)),
    };
    match (before, now) {
        (false, true) => Some(("ADDED", event.object.clone())),
        (true, true) => Some(("MODIFIED", event.object.clone())),
        (true, false) if event.kind == EventType::Deleted => {
            Some(("DELETED", event.object.clone()))
        }
        (true, false) => {
            // Left the selector: a deletion carrying the previous content at the event's resourceVersion.
            let mut previous = event
                .previous
                .clone()
                .unwrap_or_else(|| event.object.clone());
            previous["metadata"]["resourceVersion"] = json!(event.rv.to_string());
            Some(("DELETED", previous))
        }
        (false, false) => None,
    }
}

/// Starts the watch; the returned receiver yields the encoded events and ends when the watch does (with
/// an error item when the stream is cut).
pub fn start(
    api: Arc<ApiServer>,
    req: WatchRequest,
    watches: Arc<Watches>,
    shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(256);
    watches.open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(watches.clone());
    let cut = watches.cut.subscribe();
    tokio::spawn(async move {
        // Ending early only means the client went away or the server stops.
        let _ = run(api, req, tx, &watches, cut, shutdown).await;
        drop(guard);
    });
    rx
}

async fn run(
    api: Arc<ApiServer>,
    req: WatchRequest,
    tx: mpsc::Sender<Chunk>,
    watches: &Watches,
    mut cut: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), mpsc::error::SendError<Chunk>> {
    let rt = req.resource.clone();
    let deadline = Instant::now() + req.timeout;
    // Subscribe before taking the snapshot so that nothing committed in between is missed.
    let mut changes = api.subscribe();
    let send = |t: &'static str, o: Value| tx.send(Ok(line(t, o)));

    let explicit_rv = match req.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let err = ApiError::BadRequest(format!("invalid resource version: {rv}"));
                return send("ERROR", err.to_status()).await;
            }
        },
    };
    let mut cursor = match explicit_rv {
        Some(rv) if !req.send_initial_events => rv,
        _ => {
            // "Get state and start at most recent": synthetic ADDED events for the current objects.
            let (items, rv) = api.list(&rt, &req.filter);
            for item in items {
                send("ADDED", (req.render)(item)).await?;
            }
            if req.send_initial_events {
                send("BOOKMARK", bookmark(&rt, rv, true)).await?;
            }
            rv
        }
    };

    let mut bookmarks = tokio::time::interval_at(
        Instant::now() + req.bookmark_interval,
        req.bookmark_interval,
    );
    loop {
        let current = api.current_rv();
        match api.events_since(&rt, cursor) {
            Err(too_old) => {
                let err = ApiError::Expired(format!(
                    "too old resource version: {} ({})",
                    too_old.requested, too_old.oldest
                ));
                watches.expired.fetch_add(1, Ordering::SeqCst);
                return send("ERROR", err.to_status()).await;
            }
            Ok(events) => {
                for event in events.iter().filter(|e| e.rv <= current) {
                    if let Some((event_type, object)) = translate(event, &req.filter) {
                        send(event_type, (req.render)(present(&rt, object))).await?;
                    }
                }
                cursor = cursor.max(current);
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                // Tell the client where to resume before the server ends the watch.
                if req.allow_bookmarks {
                    send("BOOKMARK", bookmark(&rt, cursor, false)).await?;
                }
                return Ok(());
            }
            _ = bookmarks.tick(), if req.allow_bookmarks => {
                send("BOOKMARK", bookmark(&rt, cursor, false)).await?;
            }
            _ = tx.closed() => return Ok(()),
            _ = shutdown.changed() => return Ok(()),
            _ = cut.changed() => {
                let cut = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "watch stream cut (injected fault)",
                );
                return tx.send(Err(cut)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn event(kind: EventType, object: Value, previous: Option<Value>) -> StoredEvent {
        StoredEvent {
            rv: 7,
            storage_key: "configmaps".into(),
            kind,
            object,
            previous,
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let filter = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let web =
            json!({"metadata": {"name": "a", "labels": {"app": "web"}, "resourceVersion": "6"}});
        let other =
            json!({"metadata": {"name": "a", "labels": {"app": "db"}, "resourceVersion": "7"}});
        let (t, o) = translate(
            &event(EventType::Modified, other.clone(), Some(web.clone())),
            &filter,
        )
        .unwrap();
        assert_eq!(
            (t, o["metadata"]["labels"]["app"].as_str()),
            ("DELETED", Some("web"))
        );
        assert_eq!(o["metadata"]["resourceVersion"], "7");
        let (t, _) = translate(
            &event(EventType::Modified, web.clone(), Some(other.clone())),
            &filter,
        )
        .unwrap();
        assert_eq!(t, "ADDED");
        assert!(translate(
            &event(EventType::Modified, other.clone(), Some(other)),
            &filter
        )
        .is_none());
        assert_eq!(
            translate(&event(EventType::Deleted, web.clone(), Some(web)), &filter)
                .unwrap()
                .0,
            "DELETED"
        );
    }
}
