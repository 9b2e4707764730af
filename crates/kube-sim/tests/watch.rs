//! Watch semantics over HTTP: replay, selector transitions, bookmarks, expiry, timeouts and no-op writes.

mod common;

use common::*;
use kube_sim::SimOptions;
use serde_json::{json, Value};
use std::time::Duration;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, labels: Value, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data})
}

fn summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap().to_string(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn list_then_watch_from_the_list_resource_version() {
    let sim = start().await;
    post(&sim, CMS, &cm("before", json!({}), json!({}))).await;
    let list = get(&sim, &format!("{CMS}?limit=500")).await.body;
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = Watch::open(
        &sim,
        &format!(
            "{CMS}?watch=true&resourceVersion={list_rv}&allowWatchBookmarks=true&timeoutSeconds=60"
        ),
    )
    .await;
    assert_eq!(watch.status, 200);

    post(&sim, CMS, &cm("after", json!({}), json!({}))).await;
    merge_patch(&sim, &format!("{CMS}/after"), &json!({"data": {"k": "v"}})).await;
    delete(&sim, &format!("{CMS}/before")).await;
    let events = [
        watch.next_change().await.unwrap(),
        watch.next_change().await.unwrap(),
        watch.next_change().await.unwrap(),
    ];
    let got: Vec<(String, String)> = events.iter().map(summary).collect();
    assert_eq!(
        got,
        [
            ("ADDED".into(), "after".into()),
            ("MODIFIED".into(), "after".into()),
            ("DELETED".into(), "before".into())
        ]
    );
    assert!(
        rv(&events[2]["object"]) > rv(&events[1]["object"]),
        "deletions carry a new resourceVersion"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_replays_history_from_an_older_resource_version() {
    let sim = start().await;
    let first = post(&sim, CMS, &cm("a", json!({}), json!({}))).await.body;
    post(&sim, CMS, &cm("b", json!({}), json!({}))).await;
    merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"x": "1"}})).await;
    let mut watch = Watch::open(
        &sim,
        &format!("{CMS}?watch=1&resourceVersion={}", rv(&first)),
    )
    .await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "b".into())
    );
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("MODIFIED".into(), "a".into())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_the_current_state() {
    let sim = start().await;
    post(&sim, CMS, &cm("existing", json!({}), json!({}))).await;
    let mut watch = Watch::open(&sim, &format!("{CMS}?watch=true")).await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "existing".into())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn label_selector_transitions_become_added_and_deleted() {
    let sim = start().await;
    let created = post(&sim, CMS, &cm("svc", json!({"expose": "false"}), json!({})))
        .await
        .body;
    let mut watch = Watch::open(
        &sim,
        &format!(
            "{CMS}?watch=true&labelSelector=expose%3Dtrue&resourceVersion={}",
            rv(&created)
        ),
    )
    .await;
    merge_patch(
        &sim,
        &format!("{CMS}/svc"),
        &json!({"metadata": {"labels": {"expose": "true"}}}),
    )
    .await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "svc".into())
    );
    merge_patch(&sim, &format!("{CMS}/svc"), &json!({"data": {"a": "b"}})).await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("MODIFIED".into(), "svc".into())
    );
    merge_patch(
        &sim,
        &format!("{CMS}/svc"),
        &json!({"metadata": {"labels": {"expose": "false"}}}),
    )
    .await;
    let left = watch.next().await.unwrap();
    assert_eq!(summary(&left), ("DELETED".into(), "svc".into()));
    assert_eq!(
        left["object"]["metadata"]["labels"]["expose"], "true",
        "carries the last matching state"
    );
    // Changes while not matching are invisible; matching again is ADDED.
    merge_patch(&sim, &format!("{CMS}/svc"), &json!({"data": {"a": "c"}})).await;
    merge_patch(
        &sim,
        &format!("{CMS}/svc"),
        &json!({"metadata": {"labels": {"expose": "true"}}}),
    )
    .await;
    let back = watch.next().await.unwrap();
    assert_eq!(summary(&back), ("ADDED".into(), "svc".into()));
    assert_eq!(back["object"]["data"]["a"], "c");
    sim.shutdown().await;
}

#[tokio::test]
async fn no_op_writes_emit_no_events() {
    let sim = start().await;
    let obj = post(&sim, CMS, &cm("a", json!({}), json!({"k": "v"})))
        .await
        .body;
    let mut watch = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&obj)),
    )
    .await;
    put(&sim, &format!("{CMS}/a"), &obj).await;
    merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"k": "v"}})).await;
    apply(
        &sim,
        &format!("{CMS}/a"),
        "op",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
    )
    .await;
    apply(
        &sim,
        &format!("{CMS}/a"),
        "op",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
    )
    .await;
    // A real change afterwards is the very next event: the applier's new ownership, not the no-ops.
    merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"k": "w"}})).await;
    let first = watch.next().await.unwrap();
    assert_eq!(first["type"], "MODIFIED");
    assert_eq!(
        first["object"]["data"]["k"], "v",
        "the first apply added ownership (a real change)"
    );
    let second = watch.next().await.unwrap();
    assert_eq!(second["object"]["data"]["k"], "w");
    sim.shutdown().await;
}

#[tokio::test]
async fn bookmarks_and_initial_events_end() {
    let sim = start_with(SimOptions {
        bookmark_interval: Duration::from_millis(50),
        ..SimOptions::default()
    })
    .await;
    post(&sim, CMS, &cm("a", json!({}), json!({}))).await;
    let mut watch = Watch::open(&sim, &format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")).await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "a".into())
    );
    let end = watch.next().await.unwrap();
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(end["object"]["kind"], "ConfigMap");
    let periodic = watch.next().await.unwrap();
    assert_eq!(periodic["type"], "BOOKMARK");
    assert!(periodic["object"]["metadata"]["resourceVersion"]
        .as_str()
        .is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn compacted_resource_version_is_410_expired() {
    let sim = start_with(SimOptions {
        watch_history: 3,
        ..SimOptions::default()
    })
    .await;
    for i in 0..6 {
        post(&sim, CMS, &cm(&format!("c{i}"), json!({}), json!({}))).await;
    }
    let mut watch = Watch::open(&sim, &format!("{CMS}?watch=true&resourceVersion=2")).await;
    let event = watch.next().await.unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(event["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version: 2"));
    assert!(
        watch.next().await.is_none(),
        "the stream ends after the error"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds() {
    let sim = start().await;
    let mut watch = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion=1&timeoutSeconds=1"),
    )
    .await;
    assert!(watch.next().await.is_none(), "the server closes the stream");
    sim.shutdown().await;
}

#[tokio::test]
async fn single_object_watch_by_field_selector() {
    let sim = start().await;
    let a = post(&sim, CMS, &cm("a", json!({}), json!({}))).await.body;
    let mut watch = Watch::open(
        &sim,
        &format!(
            "{CMS}?watch=true&fieldSelector=metadata.name%3Db&resourceVersion={}",
            rv(&a)
        ),
    )
    .await;
    merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"x": "1"}})).await;
    post(&sim, CMS, &cm("b", json!({}), json!({}))).await;
    assert_eq!(
        summary(&watch.next().await.unwrap()),
        ("ADDED".into(), "b".into())
    );
    sim.shutdown().await;
}
