//! The operator as a production Deployment runs it: several replicas with leader election, the
//! kubelet's probes, Prometheus scrapes, and SIGTERM on a rollout.

use std::collections::BTreeMap;

use azure_sim::SiteId;
use serde_json::Value;

use crate::harness::{http_get, http_port, sample, Harness, Replica};

const LEASE: (&str, &str) = ("coordination.k8s.io/v1", "Lease");
const LEASE_NAME: &str = "appservicelink-leader";
/// Short, so that a failover happens within the harness's patience.
/// Where the chart installs the operator, and so where its Lease lives.
const LEASE_NAMESPACE: &str = crate::harness::OPERATOR_NAMESPACE;
const REPLICA_ARGS: &[&str] = &[
    "--leader-elect",
    "--leader-election-namespace",
    LEASE_NAMESPACE,
    "--leader-election-lease-seconds",
    "3",
    "--http-port",
    "0",
    "--resync-seconds",
    "3600",
];
const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000001";

fn lease(h: &Harness) -> Option<Value> {
    h.get(LEASE, Some(LEASE_NAMESPACE), LEASE_NAME)
}

fn lease_holder(h: &Harness) -> Option<String> {
    lease(h)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

fn link(name: &str, expose: &str, zone: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "{expose}"}}
  dns:
    zone: {zone}
    service:
      staticIP: 10.240.0.53
"#
    )
}

/// A namespace with one Service for the link named `billing`.
const BILLING: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: billing
---
apiVersion: v1
kind: Service
metadata:
  name: invoices
  namespace: billing
  labels: {appservicelink.io/expose: "billing"}
spec:
  selector: {app: invoices}
  ports: [{name: http, port: 80}]
"#;

/// `(status, body)` of a replica's endpoint, once it serves.
fn get(replica: &Replica, path: &str) -> Option<(u16, String)> {
    http_get(replica.http_port()?, path)
}

/// Waits until `replica` reports itself a ready standby that does not run the controller.
async fn standing_by(h: &Harness, replica: &Replica) {
    h.eventually(&format!("{} a ready standby", replica.name), |_| {
        let (code, body) = get(replica, "/readyz")?;
        let (_, metrics) = get(replica, "/metrics")?;
        (code == 200
            && body.contains("standby")
            && sample(&metrics, "appservicelink_leader") == Some(0.0))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies() {
    let mut h = Harness::cluster().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    let a = h.spawn_replica("operator-a", REPLICA_ARGS);
    let b = h.spawn_replica("operator-b", REPLICA_ARGS);
    let holder = h
        .eventually("one replica holds the Lease", lease_holder)
        .await;
    let (mut leader, standby) = match holder.as_str() {
        "operator-a" => (a, b),
        "operator-b" => (b, a),
        other => panic!("the Lease is held by {other}"),
    };

    // Only the holder runs the controller; the other waits, ready, and reconciles nothing.
    standing_by(&h, &standby).await;
    h.apply(&link("web", "true", "mydomain.local"));
    h.wait_ready("web").await;
    assert!(
        leader.log().contains("controller started"),
        "{}",
        leader.log()
    );
    assert!(
        !standby.log().contains("controller started"),
        "the standby runs the controller:\n{}",
        standby.log()
    );

    // The leader dies without a word; the standby takes the Lease once it expires.
    leader.kill();
    h.apply(BILLING);
    h.apply(&link("billing", "billing", "billing.local"));
    h.eventually("the standby holds the Lease", |h| {
        (lease_holder(h)? == standby.name).then_some(())
    })
    .await;
    h.wait_ready("billing").await;
    let invoices = h.service("billing", "invoices").unwrap();
    assert_eq!(invoices["spec"]["type"], "LoadBalancer");
    h.eventually("the new leader reports it", |_| {
        let (_, metrics) = get(&standby, "/metrics")?;
        (sample(&metrics, "appservicelink_leader") == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_cleanly_and_hands_the_lease_over() {
    let mut h = Harness::cluster().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    let mut leader = h.spawn_replica("operator-a", REPLICA_ARGS);
    h.eventually("operator-a holds the Lease", |h| {
        (lease_holder(h)? == "operator-a").then_some(())
    })
    .await;
    let standby = h.spawn_replica("operator-b", REPLICA_ARGS);
    standing_by(&h, &standby).await;
    h.apply(&link("web", "true", "mydomain.local"));
    h.wait_ready("web").await;

    leader.terminate();
    let status = h
        .eventually("operator-a to exit", |_| leader.exited())
        .await;
    assert!(status.success(), "exit status {status}:\n{}", leader.log());
    // Released before exiting, not left to expire: the Lease no longer names it the moment it is
    // gone, and its last Lease write cleared the holder.
    assert_ne!(
        lease_holder(&h).as_deref(),
        Some("operator-a"),
        "{:?}",
        lease(&h)
    );
    let lease_writes: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.is_write()
                && r.path.ends_with(&format!("/leases/{LEASE_NAME}"))
                && r.field_manager.as_deref() == Some("appservicelink-leader-operator-a")
        })
        .collect();
    let last = lease_writes.last().expect("operator-a wrote the Lease");
    assert_eq!(last.status, 200);
    let body = last.body.as_ref().expect("a patch body");
    assert!(
        body["spec"].get("holderIdentity") == Some(&Value::Null),
        "the last write did not release: {body}"
    );

    h.eventually("operator-b holds the Lease", |h| {
        (lease_holder(h)? == "operator-b").then_some(())
    })
    .await;
    // The new leader carries on: a change made now is reconciled.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"zone":"example.local"}}}"#,
    ]);
    h.eventually("the new zone in the override", |h| {
        let data = h.coredns_custom()["data"].clone();
        (data["appservicelink.override"] == "k8s_external example.local {\n    fallthrough\n}\n")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_are_served() {
    let web = SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    };
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(web.clone(), BTreeMap::new());
    h.operator_args(&[
        "--leader-elect",
        "--leader-election-namespace",
        LEASE_NAMESPACE,
        "--http-port",
        "0",
    ]);
    h.start_operator();
    let port = h
        .eventually("the endpoints' port in the log", |h| {
            http_port(&h.operator_log())
        })
        .await;
    h.eventually("/healthz answers 200", |_| {
        (http_get(port, "/healthz")?.0 == 200).then_some(())
    })
    .await;

    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&format!(
        "{}  appServices:\n    targets:\n      - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}\n",
        link("web", "true", "mydomain.local")
    ));
    h.wait_ready("web").await;
    let (code, body) = http_get(port, "/readyz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok: running the controller\n"));

    let metrics = h
        .eventually("a successful reconcile counted", |_| {
            let (code, metrics) = http_get(port, "/metrics")?;
            let reconciles = sample(
                &metrics,
                r#"appservicelink_reconciles_total{result="success"}"#,
            )?;
            (code == 200 && reconciles > 0.0).then_some(metrics)
        })
        .await;
    assert_eq!(
        sample(&metrics, "appservicelink_leader"),
        Some(1.0),
        "{metrics}"
    );
    let listed = sample(
        &metrics,
        r#"appservicelink_arm_requests_total{operation="list_app_settings",code="200"}"#,
    );
    assert!(listed.is_some_and(|n| n > 0.0), "{metrics}");
    let id = format!(
        "/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Web/sites/contoso-web"
    );
    let since_in_sync = sample(
        &metrics,
        &format!(r#"appservicelink_app_service_seconds_since_in_sync{{resource_id="{id}"}}"#),
    );
    assert!(since_in_sync.is_some_and(|s| s >= 0.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_stops_at_once() {
    let mut h = Harness::cluster().await;
    let mut leader = h.spawn_replica("operator-a", REPLICA_ARGS);
    h.eventually("operator-a holds the Lease", |h| {
        (lease_holder(h)? == "operator-a").then_some(())
    })
    .await;
    // Someone else takes the Lease over (as a replica on the far side of a partition would).
    h.kubectl_ok(&[
        "-n",
        LEASE_NAMESPACE,
        "patch",
        "lease",
        LEASE_NAME,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"holderIdentity":"operator-z"}}"#,
    ]);
    let status = h
        .eventually("operator-a to exit", |_| leader.exited())
        .await;
    assert!(!status.success(), "{status}");
    assert!(
        leader
            .log()
            .contains("lost the leader Lease appservicelink-system/appservicelink-leader"),
        "{}",
        leader.log()
    );
}
