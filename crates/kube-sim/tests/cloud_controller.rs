//! The simulated Azure cloud-controller-manager: serial provisioning, Events, static IPs held by other
//! Services, subnets that do not exist.

mod common;

use common::*;
use kube_sim::{SimCluster, SimOptions};
use serde_json::{json, Value};
use std::time::Duration;

const SVCS: &str = "/api/v1/namespaces/default/services";
const INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
const IPV4: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
const SUBNET: &str = "service.beta.kubernetes.io/azure-load-balancer-internal-subnet";

fn internal(name: &str, annotations: Value, ports: Value) -> Value {
    let mut all = json!({INTERNAL: "true"});
    all.as_object_mut()
        .unwrap()
        .extend(annotations.as_object().unwrap().clone());
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": all},
        "spec": {"type": "LoadBalancer", "ports": ports}})
}

fn dns_ports() -> Value {
    json!([{"name": "dns-udp", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
}

fn ingress(sim: &SimCluster, name: &str) -> Option<String> {
    sim.get("v1", "Service", Some("default"), name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(String::from)
}

/// Core v1 Events about one Service, oldest first, as (type, reason, message, count).
fn events(sim: &SimCluster, name: &str) -> Vec<(String, String, String, i64)> {
    let mut events: Vec<Value> = sim
        .list("v1", "Event")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["involvedObject"]["kind"] == "Service")
        .collect();
    events.sort_by_key(rv);
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("type"),
                s("reason"),
                s("message"),
                e["count"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

async fn warning(sim: &SimCluster, name: &str) -> String {
    eventually(&format!("a Warning Event on {name}"), || async {
        events(sim, name)
            .into_iter()
            .find(|e| e.0 == "Warning")
            .map(|e| {
                assert_eq!(e.1, "SyncLoadBalancerFailed");
                e.2
            })
    })
    .await
}

#[tokio::test]
async fn services_are_provisioned_one_at_a_time_with_events() {
    let sim = start_with(SimOptions {
        lb_provisioning_delay: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await;
    for name in ["first", "second", "third"] {
        let reply = post(
            &sim,
            SVCS,
            &internal(name, json!({}), json!([{"port": 80}])),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    for name in ["first", "second", "third"] {
        eventually(&format!("{name} provisioned"), || async {
            ingress(&sim, name)
        })
        .await;
    }
    // One at a time: each Service's sync ends before the next one starts, in the order they changed.
    let mut all: Vec<Value> = sim
        .list("v1", "Event")
        .into_iter()
        .filter(|e| e["source"]["component"] == "service-controller")
        .collect();
    all.sort_by_key(rv);
    let timeline: Vec<String> = all
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["involvedObject"]["name"].as_str().unwrap(),
                e["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        timeline,
        [
            "first EnsuringLoadBalancer",
            "first EnsuredLoadBalancer",
            "second EnsuringLoadBalancer",
            "second EnsuredLoadBalancer",
            "third EnsuringLoadBalancer",
            "third EnsuredLoadBalancer",
        ]
    );
    assert_eq!(ingress(&sim, "first").unwrap(), "10.240.0.4");
    assert_eq!(ingress(&sim, "third").unwrap(), "10.240.0.6");
    // kubectl describe shows them, as on AKS.
    let kubectl = Kubectl::new(&sim);
    let described = kubectl.ok(&["describe", "svc", "first"]).await;
    assert!(
        described.contains("EnsuredLoadBalancer") && described.contains("service-controller"),
        "{described}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_static_ip_whose_frontend_another_service_uses_on_the_same_port_stays_pending() {
    let sim = start().await;
    let pinned = json!({IPV4: "10.240.0.53"});
    post(
        &sim,
        SVCS,
        &internal("resolver", pinned.clone(), dns_ports()),
    )
    .await;
    eventually("resolver provisioned", || async {
        ingress(&sim, "resolver")
    })
    .await;

    // Same IP, different port: Azure shares the frontend.
    post(
        &sim,
        SVCS,
        &internal("web", pinned.clone(), json!([{"name": "http", "port": 80}])),
    )
    .await;
    let shared = eventually("web shares the IP", || async { ingress(&sim, "web") }).await;
    assert_eq!(shared, "10.240.0.53");

    // Same IP and port: refused, the Service stays pending, with cloud-provider-azure's message.
    post(&sim, SVCS, &internal("dns", pinned.clone(), dns_ports())).await;
    let message = warning(&sim, "dns").await;
    let resolver = sim
        .get("v1", "Service", Some("default"), "resolver")
        .unwrap();
    let prefix: String = format!("a{}", resolver["metadata"]["uid"].as_str().unwrap())
        .replace('-', "")
        .chars()
        .take(32)
        .collect();
    assert_eq!(
        message,
        format!("Error syncing load balancer: failed to ensure load balancer: checkLoadBalancerResourcesConflicts: service port dns-udp is trying to consume the port 53 which is being referenced by an existing loadBalancing rule {prefix}-UDP-53 with the same protocol Udp and frontend IP config with ID /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mc_kube-sim_kube-sim_eastus/providers/Microsoft.Network/loadBalancers/kubernetes-internal/frontendIPConfigurations/{prefix}")
    );
    assert_eq!(ingress(&sim, "dns"), None);

    // Unrelated writes do not repeat the failure.
    merge_patch(
        &sim,
        &format!("{SVCS}/dns"),
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    // Services are synced in the order they changed: once a later one is done, dns was looked at.
    post(
        &sim,
        SVCS,
        &internal("later", json!({}), json!([{"port": 80}])),
    )
    .await;
    eventually("later provisioned", || async { ingress(&sim, "later") }).await;
    let warnings: Vec<_> = events(&sim, "dns")
        .into_iter()
        .filter(|e| e.0 == "Warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].3, 1);

    // Once the holder is gone, the next sync succeeds.
    delete(&sim, &format!("{SVCS}/resolver")).await;
    let ip = eventually("dns provisioned", || async { ingress(&sim, "dns") }).await;
    assert_eq!(ip, "10.240.0.53");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_subnet_that_does_not_exist_leaves_the_service_pending() {
    let sim = start().await;
    post(
        &sim,
        SVCS,
        &internal("ok", json!({SUBNET: "ilb-subnet"}), json!([{"port": 80}])),
    )
    .await;
    eventually("a known subnet works", || async { ingress(&sim, "ok") }).await;

    post(
        &sim,
        SVCS,
        &internal(
            "lost",
            json!({SUBNET: "no-such-subnet"}),
            json!([{"port": 80}]),
        ),
    )
    .await;
    let message = warning(&sim, "lost").await;
    assert_eq!(
        message,
        "Error syncing load balancer: failed to ensure load balancer: ensure(default/lost): lb(kubernetes-internal) - failed to get subnet: aks-vnet-12345678/no-such-subnet"
    );
    assert_eq!(ingress(&sim, "lost"), None);
    let kubectl = Kubectl::new(&sim);
    let described = kubectl.ok(&["describe", "svc", "lost"]).await;
    assert!(
        described.contains("SyncLoadBalancerFailed") && described.contains("failed to get subnet"),
        "{described}"
    );

    merge_patch(
        &sim,
        &format!("{SVCS}/lost"),
        &json!({"metadata": {"annotations": {SUBNET: "ilb-subnet"}}}),
    )
    .await;
    eventually("fixed subnet provisions", || async {
        ingress(&sim, "lost")
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn subnets_are_configurable() {
    let sim = start_with(SimOptions {
        subnets: vec!["apps".into()],
        ..SimOptions::default()
    })
    .await;
    post(
        &sim,
        SVCS,
        &internal("apps", json!({SUBNET: "apps"}), json!([{"port": 80}])),
    )
    .await;
    post(
        &sim,
        SVCS,
        &internal("ilb", json!({SUBNET: "ilb-subnet"}), json!([{"port": 80}])),
    )
    .await;
    eventually("apps provisioned", || async { ingress(&sim, "apps") }).await;
    warning(&sim, "ilb").await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_controller_catches_up_when_the_watch_history_no_longer_reaches_back() {
    let sim = start_with(SimOptions {
        watch_history: 2,
        ..SimOptions::default()
    })
    .await;
    for name in ["a", "b"] {
        sim.apply_as("test", internal(name, json!({}), json!([{"port": 80}])))
            .unwrap();
    }
    eventually("a and b provisioned", || async {
        ingress(&sim, "a").zip(ingress(&sim, "b"))
    })
    .await;
    assert_eq!(ingress(&sim, "b").unwrap(), "10.240.0.5");

    // Without yielding to the controller: b stops being a LoadBalancer and more writes push its
    // change out of the history, so the controller has to look at every Service again.
    let mut b = internal("b", json!({}), json!([{"port": 80}]));
    b["spec"]["type"] = json!("ClusterIP");
    sim.apply_as("test", b).unwrap();
    for i in 0..5 {
        sim.apply_as(
            "test",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "namespace": "default"}}),
        )
        .unwrap();
    }
    sim.apply_as("test", internal("c", json!({}), json!([{"port": 80}])))
        .unwrap();
    let ip = eventually("c provisioned", || async { ingress(&sim, "c") }).await;
    assert_eq!(ip, "10.240.0.5", "b's address is free again");
    assert_eq!(ingress(&sim, "a").unwrap(), "10.240.0.4");
    sim.shutdown().await;
}
