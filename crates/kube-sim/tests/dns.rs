//! Loopback load balancers and the simulated CoreDNS on the DNS Service's IP, over real sockets.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::{eventually, start_with};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kube_sim::{InternalLbs, SimCluster, SimOptions};
use serde_json::json;

async fn loopback() -> SimCluster {
    start_with(SimOptions {
        internal_lbs: InternalLbs::Loopback,
        ..SimOptions::default()
    })
    .await
}

fn internal_service(namespace: &str, name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace,
            "annotations": {kube_sim::INTERNAL_ANNOTATION: "true"}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]},
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        svc["spec"][k] = v.clone();
    }
    svc
}

fn ingress(sim: &SimCluster, namespace: &str, name: &str) -> Option<Ipv4Addr> {
    sim.get("v1", "Service", Some(namespace), name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()?
        .parse()
        .ok()
}

/// A cluster with CoreDNS, a DNS Service on `.53`, the override, and Service shop/api.
async fn world(sim: &SimCluster, override_text: &str) -> (Ipv4Addr, Ipv4Addr) {
    let seed = |obj| sim.apply_as("test", obj).unwrap();
    seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    seed(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {"containers": [{"name": "coredns", "image": "coredns"}]}}}}));
    seed(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
        "data": {"appservicelink.override": override_text}}));
    let dns_ip = sim.internal_range().host(53);
    let mut dns = internal_service(
        "kube-system",
        "dns",
        json!({
            "selector": {"k8s-app": "kube-dns"},
            "ports": [{"name": "dns-udp", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        }),
    );
    dns["metadata"]["annotations"][kube_sim::IPV4_ANNOTATION] = json!(dns_ip.to_string());
    seed(dns);
    seed(internal_service("shop", "api", json!({})));
    let api = eventually("shop/api gets an IP", || async {
        ingress(sim, "shop", "api")
    })
    .await;
    eventually("the DNS Service gets its IP", || async {
        (ingress(sim, "kube-system", "dns") == Some(dns_ip)).then_some(())
    })
    .await;
    (dns_ip, api)
}

/// One A query over UDP; `None` when nothing answers within a second.
async fn ask_udp(server: Ipv4Addr, name: &str) -> Option<Message> {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), SocketAddr::from((server, 53)))
        .await
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(1), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn parallel_loopback_clusters_get_ranges_of_their_own() {
    let (a, b) = tokio::join!(loopback(), loopback());
    let (ra, rb) = (a.internal_range(), b.internal_range());
    assert_ne!(ra, rb);
    assert!(ra.network.is_loopback() && rb.network.is_loopback());
    assert!(a.serves_dns() && b.serves_dns());
    assert!(!start_with(SimOptions::default()).await.serves_dns());
}

#[tokio::test]
async fn the_dns_service_ip_answers_the_override_zone_as_coredns_would() {
    let sim = loopback().await;
    let (dns_ip, api) = world(&sim, "k8s_external mydomain.local\n").await;
    assert!(sim.internal_range().contains(api), "{api}");
    let answer = eventually("CoreDNS answers", || async {
        ask_udp(dns_ip, "api.shop.mydomain.local.").await
    })
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), [api]);
    let missing = ask_udp(dns_ip, "web.shop.mydomain.local.").await.unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);

    // Another key that stops CoreDNS from starting: nothing is answered any more.
    sim.apply_as(
        "someone",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
            "data": {"broken.override": "rewrite name {\n"}}),
    )
    .unwrap();
    let refused = ask_udp(dns_ip, "api.shop.mydomain.local.").await.unwrap();
    assert_eq!(refused.metadata.response_code, ResponseCode::ServFail);
    assert!(addresses(&refused).is_empty());
}

#[tokio::test]
async fn without_coredns_pods_nothing_listens_and_with_them_again_it_does() {
    let sim = loopback().await;
    let (dns_ip, _) = world(&sim, "k8s_external mydomain.local\n").await;
    eventually("CoreDNS answers", || async {
        ask_udp(dns_ip, "api.shop.mydomain.local.").await
    })
    .await;
    sim.apply_as(
        "scaler",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"replicas": 0}}),
    )
    .unwrap();
    eventually("the DNS Service stops answering", || async {
        ask_udp(dns_ip, "api.shop.mydomain.local.")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // Pods again: the same Service answers again, though the Service itself did not change.
    sim.apply_as(
        "scaler",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"replicas": 1}}),
    )
    .unwrap();
    eventually("CoreDNS answers again", || async {
        ask_udp(dns_ip, "api.shop.mydomain.local.").await
    })
    .await;
}

#[tokio::test]
async fn a_static_ip_outside_the_loopback_subnet_is_refused_as_azure_refuses_it() {
    let sim = loopback().await;
    let mut svc = internal_service("default", "pinned", json!({}));
    svc["metadata"]["annotations"][kube_sim::IPV4_ANNOTATION] = json!("10.240.0.53");
    sim.apply_as("test", svc).unwrap();
    let message = eventually("a SyncLoadBalancerFailed Event", || async {
        sim.list("v1", "Event")
            .into_iter()
            .find(|e| e["reason"] == "SyncLoadBalancerFailed")
            .and_then(|e| e["message"].as_str().map(str::to_string))
    })
    .await;
    assert!(
        message.contains("PrivateIPAddressNotInSubnet")
            && message.contains("10.240.0.53")
            && message.contains(&sim.internal_range().to_string()),
        "{message}"
    );
    assert_eq!(ingress(&sim, "default", "pinned"), None);
}
