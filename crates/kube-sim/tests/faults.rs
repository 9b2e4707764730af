//! Injected faults: error answers with the apiserver's bodies and headers, timeouts that still apply
//! writes, requests that hang, watch streams cut mid-stream, and history compacted under the watchers;
//! and kube-rs's watcher getting through each of them.

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config, ResourceExt};
use kube_sim::{Fault, FaultKind, SimCluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}})
}

#[tokio::test]
async fn error_faults_answer_as_the_apiserver_does() {
    let sim = start().await;
    sim.inject(Fault::new(CMS, FaultKind::InternalError).verbs(&["list"]));
    let reply = get(&sim, CMS).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body["reason"], "InternalError");
    assert_eq!(
        reply.body["message"],
        "Internal error occurred: etcdserver: request timed out"
    );
    assert_eq!(
        reply.body["details"]["causes"][0]["message"],
        "etcdserver: request timed out"
    );
    assert_eq!(get(&sim, CMS).await.status, 200, "it fired once");

    sim.inject(
        Fault::new(
            CMS,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(3),
            },
        )
        .writes(),
    );
    let reply = post(&sim, CMS, &cm("a")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body["reason"], "ServiceUnavailable");
    assert_eq!(reply.body["details"]["retryAfterSeconds"], 3);
    assert_eq!(reply.headers["retry-after"], "3");
    assert_eq!(
        get(&sim, &format!("{CMS}/a")).await.status,
        404,
        "a refused write changes nothing"
    );

    sim.inject(Fault::new(
        "",
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    ));
    let reply = get(&sim, CMS).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(
        reply.body,
        Value::String("Too many requests, please try again later.\n".into()),
        "the max-in-flight filter answers in plain text"
    );

    sim.inject(Fault::new(CMS, FaultKind::Expired).verbs(&["watch"]));
    let reply = get(&sim, &format!("{CMS}?watch=true&resourceVersion=2")).await;
    assert_eq!(reply.status, 410);
    assert_eq!(reply.body["reason"], "Expired");
    assert!(reply.body["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version: 2 ("));

    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [500, 200, 503, 404, 429, 410],
        "faults are recorded"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_write_over_etcds_limit_is_answered_as_etcd_refuses_it() {
    let sim = start().await;
    sim.inject(Fault::new(CMS, FaultKind::EtcdTooLarge).writes());
    let reply = post(&sim, CMS, &cm("big")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body["message"], "etcdserver: request is too large");
    // Passed on from storage as it is: no reason, as the real apiserver answers.
    assert!(
        reply.body["reason"].as_str().unwrap_or_default().is_empty(),
        "{}",
        reply.body
    );
    assert_eq!(
        get(&sim, &format!("{CMS}/big")).await.status,
        404,
        "nothing is written"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_spare_other_user_agents_and_stop_when_cleared() {
    let sim = start().await;
    sim.inject(
        Fault::new("/configmaps", FaultKind::InternalError)
            .except_user_agent("kube-sim-tests")
            .until_cleared(),
    );
    assert_eq!(
        get(&sim, CMS).await.status,
        200,
        "the test's own agent is spared"
    );
    let kubectl = Kubectl::new(&sim);
    let out = kubectl.run(&["get", "configmaps"]).await;
    assert!(!out.success, "kubectl is not spared: {}", out.stdout);
    assert!(
        out.stderr.contains("etcdserver: request timed out"),
        "{}",
        out.stderr
    );
    sim.clear_faults();
    kubectl.ok(&["get", "configmaps"]).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_timed_out_write_is_applied_and_answered_504() {
    let sim = start().await;
    sim.inject(
        Fault::new(
            CMS,
            FaultKind::Timeout {
                after: Duration::from_millis(300),
            },
        )
        .writes(),
    );
    let started = Instant::now();
    let reply = post(&sim, CMS, &cm("late")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body["reason"], "Timeout");
    assert_eq!(
        reply.body["message"],
        "Timeout: request did not complete within the allotted timeout"
    );
    assert_eq!(
        get(&sim, &format!("{CMS}/late")).await.status,
        200,
        "the handler ran behind the timeout"
    );

    sim.inject(Fault::new(
        CMS,
        FaultKind::Timeout {
            after: Duration::from_millis(100),
        },
    ));
    assert_eq!(get(&sim, &format!("{CMS}/late")).await.status, 504);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hanging_request_is_never_answered() {
    let sim = start().await;
    sim.inject(Fault::new("/configmaps/stuck", FaultKind::Hang));
    let url = sim.url();
    let hung = tokio::spawn(async move { get_url(&url, &format!("{CMS}/stuck")).await });
    eventually("the hanging request is recorded", || async {
        sim.requests()
            .iter()
            .any(|r| r.path.ends_with("/stuck") && r.status == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&sim, CMS).await.status,
        200,
        "other requests are served"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!hung.is_finished(), "no answer");
    hung.abort();
    sim.shutdown().await;
}

async fn get_url(url: &str, path: &str) -> u16 {
    call(url, "GET", path, "application/json", None)
        .await
        .status
}

#[tokio::test]
async fn dropped_watches_break_off_mid_stream_and_resume_from_their_version() {
    let sim = start().await;
    let created = post(&sim, CMS, &cm("a")).await.body;
    let mut watch = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&created)),
    )
    .await;
    post(&sim, CMS, &cm("b")).await;
    let seen = watch.next().await.unwrap();
    assert_eq!(seen["object"]["metadata"]["name"], "b");
    eventually("one open watch", || async {
        (sim.open_watches() == 1).then_some(())
    })
    .await;

    assert_eq!(sim.drop_watches(), 1);
    let end = watch.next_or_end().await;
    assert!(
        end.is_err(),
        "no final chunk, the connection broke off: {end:?}"
    );
    eventually("no open watch", || async {
        (sim.open_watches() == 0).then_some(())
    })
    .await;

    // What changed meanwhile is replayed to a client resuming from the last version it saw.
    post(&sim, CMS, &cm("c")).await;
    let mut resumed = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&seen["object"])),
    )
    .await;
    let replayed = resumed.next().await.unwrap();
    assert_eq!(
        (
            replayed["type"].as_str(),
            replayed["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("c"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn after_compaction_older_versions_get_410_and_the_current_one_does_not() {
    let sim = start().await;
    let a = post(&sim, CMS, &cm("a")).await.body;
    let b = post(&sim, CMS, &cm("b")).await.body;
    assert_eq!(sim.compact(), rv(&b));

    let mut old = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&a)),
    )
    .await;
    assert_eq!(
        old.status, 200,
        "the watch cache answers 200 and an ERROR event"
    );
    let event = old.next().await.unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert_eq!(
        event["object"]["message"],
        format!("too old resource version: {} ({})", rv(&a), rv(&b) + 1)
    );
    assert_eq!(old.next_or_end().await, Ok(None), "then it ends the stream");
    assert_eq!(sim.expired_watches(), 1);

    let mut current = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&b)),
    )
    .await;
    post(&sim, CMS, &cm("c")).await;
    assert_eq!(
        current.next().await.unwrap()["object"]["metadata"]["name"],
        "c"
    );
    assert_eq!(sim.expired_watches(), 1);
    sim.shutdown().await;
}

async fn client(sim: &SimCluster) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// kube-rs's watcher through a cut stream (it resumes), a compaction (it lists again) and 5xx on the
/// re-list and re-watch (its backoff), never missing an object.
#[tokio::test]
async fn kube_watcher_gets_through_drops_compaction_and_server_errors() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&sim).await, "default");
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut next = async || {
        tokio::time::timeout(WAIT, events.try_next())
            .await
            .expect("a watcher event")
    };
    let create = |name: &'static str| {
        let api = api.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(cm(name)).unwrap();
            api.create(&PostParams::default(), &cm).await.unwrap();
        }
    };
    // Init, InitDone: an empty namespace.
    assert!(matches!(next().await, Ok(Some(watcher::Event::Init))));
    assert!(matches!(next().await, Ok(Some(watcher::Event::InitDone))));
    create("one").await;
    assert!(matches!(next().await, Ok(Some(watcher::Event::Apply(cm))) if cm.name_any() == "one"));

    // A cut stream: the watcher reports it, then resumes and sees what was created meanwhile.
    sim.drop_watches();
    create("two").await;
    let mut applied = Vec::new();
    while applied.is_empty() {
        match next().await {
            Ok(Some(watcher::Event::Apply(cm))) => applied.push(cm.name_any()),
            Ok(Some(other)) => panic!("a resumed watch replays, it does not re-list: {other:?}"),
            Ok(None) => panic!("the watcher ended"),
            Err(_) => {} // the broken stream
        }
    }
    assert_eq!(applied, ["two"]);

    // Compaction while the watch is cut and its re-watches refused: the watcher gets 410 and lists
    // again, and the re-list shows what it could not watch.
    sim.inject(
        Fault::new(
            CMS,
            FaultKind::ServiceUnavailable {
                retry_after_secs: Some(1),
            },
        )
        .verbs(&["watch"])
        .times(2),
    );
    sim.inject(Fault::new(CMS, FaultKind::InternalError).verbs(&["list"]));
    sim.drop_watches();
    create("three").await;
    sim.compact();
    let mut relisted = Vec::new();
    loop {
        match next().await {
            Ok(Some(watcher::Event::InitApply(cm))) => relisted.push(cm.name_any()),
            Ok(Some(watcher::Event::InitDone)) => break,
            Ok(Some(watcher::Event::Init)) | Err(_) => {}
            Ok(Some(other)) => panic!("expected a re-list, got {other:?}"),
            Ok(None) => panic!("the watcher ended"),
        }
    }
    relisted.sort();
    assert_eq!(relisted, ["one", "three", "two"]);
    assert!(sim.expired_watches() >= 1, "the re-watch was told 410");
    let statuses: Vec<(String, u16)> = sim
        .requests()
        .into_iter()
        .filter(|r| matches!(r.status, 410 | 500 | 503))
        .map(|r| (r.verb, r.status))
        .collect();
    assert!(
        statuses.contains(&("watch".into(), 503)) && statuses.contains(&("list".into(), 500)),
        "{statuses:?}"
    );
    sim.shutdown().await;
}
