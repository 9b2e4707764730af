//! The operator's client stack (kube-rs 5) against the sim: kubeconfig, watcher (LIST then WATCH),
//! server-side apply, the finalizer helper (JSON patch with `test`) and the event recorder.

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::{controller::Action, watcher, WatchStreamExt};
use kube::{Client, Config, Resource, ResourceExt};
use kube_sim::SimCluster;
use serde_json::json;
use std::sync::Arc;

async fn client(sim: &SimCluster) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn configmap(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
    .unwrap()
}

#[tokio::test]
async fn watcher_lists_then_follows_changes() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    api.create(&PostParams::default(), &configmap("before", json!({})))
        .await
        .unwrap();

    let mut objects = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(WAIT, objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "before");

    api.create(
        &PostParams::default(),
        &configmap("after", json!({"k": "v"})),
    )
    .await
    .unwrap();
    let second = tokio::time::timeout(WAIT, objects.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.name_any(), "after");
    assert_eq!(second.data.unwrap()["k"], "v");

    // The watch resumes from the list's resourceVersion.
    let requests = sim.requests();
    let list = requests.iter().find(|r| r.verb == "list").expect("a list");
    let watch = requests
        .iter()
        .find(|r| r.verb == "watch")
        .expect("a watch");
    assert!(list.query.contains("limit="), "{}", list.query);
    assert!(watch.query.contains("resourceVersion="), "{}", watch.query);
    assert!(
        watch.query.contains("allowWatchBookmarks=true"),
        "{}",
        watch.query
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_with_typed_objects() {
    let sim = start().await;
    let api: Api<Service> = Api::namespaced(client(&sim).await, "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let params = PatchParams::apply("appservicelink");
    let applied = api
        .patch("web", &params, &Patch::Apply(&svc))
        .await
        .unwrap();
    assert_eq!(
        applied.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );

    let ip = eventually("the allocator's IP", || async {
        let svc = api.get("web").await.ok()?;
        svc.status?.load_balancer?.ingress?.first()?.ip.clone()
    })
    .await;
    assert_eq!(ip, "10.240.0.4");
    let current = api.get("web").await.unwrap();
    let again = api
        .patch("web", &params, &Patch::Apply(&svc))
        .await
        .unwrap();
    assert_eq!(
        again.resource_version(),
        current.resource_version(),
        "re-applying is a no-op"
    );
    sim.shutdown().await;
}

/// The reconcile closure in these tests cannot fail.
#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

#[tokio::test]
async fn finalizer_helper_adds_and_removes_its_finalizer() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    api.create(&PostParams::default(), &configmap("link", json!({})))
        .await
        .unwrap();
    let name = "appservicelink.io/cleanup";
    let run = |obj: ConfigMap| {
        let api = api.clone();
        async move {
            finalizer(&api, name, Arc::new(obj), |event| async move {
                match event {
                    finalizer::Event::Apply(_) | finalizer::Event::Cleanup(_) => {
                        Ok::<_, Never>(Action::await_change())
                    }
                }
            })
            .await
        }
    };
    run(api.get("link").await.unwrap()).await.unwrap();
    let with = api.get("link").await.unwrap();
    assert_eq!(with.finalizers(), [name.to_string()]);

    api.delete("link", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("link").await.unwrap();
    assert!(deleting.meta().deletion_timestamp.is_some());
    run(deleting).await.unwrap();
    assert!(
        api.get_opt("link").await.unwrap().is_none(),
        "removing the finalizer completes deletion"
    );
    let json_patches = sim.requests().iter().filter(|r| r.verb == "patch").count();
    assert_eq!(json_patches, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn recorder_publishes_events() {
    let sim = start().await;
    let client = client(&sim).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = api
        .create(&PostParams::default(), &configmap("subject", json!({})))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "appservicelink".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Converted".into(),
        note: Some("made internal".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    let events = sim.list("events.k8s.io/v1", "Event");
    assert_eq!(events.len(), 1, "the second publish patches the series");
    assert_eq!(events[0]["reason"], "Converted");
    assert_eq!(events[0]["series"]["count"], 2);
    // As in a real cluster, the same Event is visible through the core API (kubectl get events).
    let core = sim.list("v1", "Event");
    assert_eq!(core.len(), 1);
    assert_eq!(core[0]["message"], "made internal");
    assert_eq!(core[0]["count"], 2);
    assert_eq!(core[0]["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(core[0]["source"]["component"], "appservicelink");
    sim.shutdown().await;
}

#[tokio::test]
async fn kube_errors_decode_as_status() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let err = api.get("missing").await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let list = api.list(&Default::default()).await.unwrap();
    assert!(list.items.is_empty());
    sim.shutdown().await;
}
