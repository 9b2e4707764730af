//! Service semantics and the simulated Azure load-balancer allocator.

mod common;

use common::*;
use kube_sim::{SimCluster, SimOptions};
use serde_json::{json, Value};

const SVCS: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn no_allocator() -> SimCluster {
    start_with(SimOptions {
        lb_allocator: false,
        ..SimOptions::default()
    })
    .await
}

#[tokio::test]
async fn cluster_ip_to_load_balancer_fills_in_defaults() {
    let sim = no_allocator().await;
    let created = post(
        &sim,
        SVCS,
        &service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let spec = &created.body["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert!(spec["clusterIP"].as_str().unwrap().starts_with("10.0."));
    assert_eq!(spec["clusterIPs"], json!([spec["clusterIP"]]));
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert!(
        created.body["metadata"].get("generation").is_none(),
        "Services carry no generation"
    );

    let lb = merge_patch(
        &sim,
        &format!("{SVCS}/web"),
        &json!({"spec": {"type": "LoadBalancer"}}),
    )
    .await
    .body;
    let spec = &lb["spec"];
    assert_eq!(spec["type"], "LoadBalancer");
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    let node_port = spec["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    assert_eq!(spec["clusterIP"], created.body["spec"]["clusterIP"]);

    let immutable = merge_patch(
        &sim,
        &format!("{SVCS}/web"),
        &json!({"spec": {"clusterIP": "10.0.9.9", "clusterIPs": ["10.0.9.9"]}}),
    )
    .await;
    assert_eq!(immutable.status, 422);
    assert!(immutable.body["message"]
        .as_str()
        .unwrap()
        .contains("may not change once set"));
    sim.shutdown().await;
}

#[tokio::test]
async fn load_balancer_to_cluster_ip_by_merge_patch_put_and_apply() {
    let sim = no_allocator().await;
    let lb = json!({"type": "LoadBalancer", "selector": {"app": "a"}, "ports": [{"port": 80}]});
    for (name, how) in [("merge", 0), ("put", 1), ("apply", 2)] {
        let created = post(&sim, SVCS, &service(name, lb.clone())).await.body;
        let path = format!("{SVCS}/{name}");
        let reply = match how {
            0 => merge_patch(&sim, &path, &json!({"spec": {"type": "ClusterIP"}})).await,
            1 => {
                let mut obj = created.clone();
                obj["spec"]["type"] = json!("ClusterIP");
                put(&sim, &path, &obj).await
            }
            _ => {
                let manifest = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: ClusterIP\n  selector: {{app: a}}\n  ports:\n  - port: 80\n");
                apply(&sim, &path, "op", true, &manifest).await
            }
        };
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        let spec = &reply.body["spec"];
        assert_eq!(spec["type"], "ClusterIP", "{name}");
        assert!(spec["ports"][0].get("nodePort").is_none(), "{name}: {spec}");
        assert!(
            spec.get("externalTrafficPolicy").is_none(),
            "{name}: {spec}"
        );
        assert!(
            spec.get("allocateLoadBalancerNodePorts").is_none(),
            "{name}: {spec}"
        );
        assert_eq!(spec["clusterIP"], created["spec"]["clusterIP"], "{name}");
        assert_eq!(reply.body["status"], json!({"loadBalancer": {}}), "{name}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn leftovers_on_a_cluster_ip_service_are_rejected() {
    let sim = no_allocator().await;
    let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80}], "loadBalancerSourceRanges": ["10.0.0.0/8"]});
    post(&sim, SVCS, &service("web", lb)).await;
    let path = format!("{SVCS}/web");
    let ranges = merge_patch(&sim, &path, &json!({"spec": {"type": "ClusterIP"}})).await;
    assert_eq!(ranges.status, 422);
    assert_eq!(
        ranges.body["message"],
        "Service \"web\" is invalid: spec.loadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"
    );
    let etp = merge_patch(&sim, &path, &json!({"spec": {"type": "ClusterIP", "loadBalancerSourceRanges": null, "externalTrafficPolicy": "Local"}})).await;
    assert_eq!(etp.status, 422);
    assert!(etp.body["message"]
        .as_str()
        .unwrap()
        .contains("spec.externalTrafficPolicy: Invalid value: \"Local\""));
    let node_port = merge_patch(&sim, &path, &json!({"spec": {"type": "ClusterIP", "loadBalancerSourceRanges": null, "ports": [{"port": 80, "nodePort": 31999}]}})).await;
    assert_eq!(node_port.status, 422);
    assert!(node_port.body["message"]
        .as_str()
        .unwrap()
        .contains("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"));
    let ok = merge_patch(
        &sim,
        &path,
        &json!({"spec": {"type": "ClusterIP", "loadBalancerSourceRanges": null}}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn headless_services() {
    let sim = no_allocator().await;
    let headless = post(
        &sim,
        SVCS,
        &service(
            "db",
            json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}),
        ),
    )
    .await
    .body;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let lb = post(
        &sim,
        SVCS,
        &service(
            "bad",
            json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(lb.status, 422);
    assert!(lb.body["message"]
        .as_str()
        .unwrap()
        .contains("may not be set to 'None' for LoadBalancer services"));
    sim.shutdown().await;
}

#[tokio::test]
async fn dns_service_with_both_protocols_gets_two_node_ports() {
    let sim = no_allocator().await;
    let spec = json!({"type": "LoadBalancer", "selector": {"k8s-app": "kube-dns"},
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]});
    let reply = post(
        &sim,
        "/api/v1/namespaces/kube-system/services",
        &service("dns", spec),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let ports = reply.body["spec"]["ports"].as_array().unwrap();
    assert_ne!(ports[0]["nodePort"], ports[1]["nodePort"]);
    let unnamed = post(
        &sim,
        SVCS,
        &service(
            "x",
            json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}),
        ),
    )
    .await;
    assert_eq!(unnamed.status, 422, "several ports need names");
    sim.shutdown().await;
}

fn ingress_ip(svc: &Value) -> Option<String> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(String::from)
}

async fn wait_for_ip(sim: &SimCluster, name: &str, want: impl Fn(&str) -> bool) -> Value {
    eventually(&format!("load-balancer IP on {name}"), || async {
        let svc = sim.get("v1", "Service", Some("default"), name)?;
        ingress_ip(&svc).filter(|ip| want(ip)).map(|_| svc)
    })
    .await
}

#[tokio::test]
async fn allocator_assigns_internal_static_and_public_ips() {
    let sim = start().await;
    let internal = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "internal",
        "annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    post(&sim, SVCS, &internal).await;
    let svc = wait_for_ip(&sim, "internal", |ip| ip == "10.240.0.4").await;
    assert!(status_written_by(&svc, "cloud-controller-manager"));

    let public = service(
        "public",
        json!({"type": "LoadBalancer", "ports": [{"port": 443}]}),
    );
    post(&sim, SVCS, &public).await;
    wait_for_ip(&sim, "public", |ip| ip.starts_with("20.50.")).await;

    // A static IP is honoured, and changing the annotation moves the frontend.
    let mut pinned = internal.clone();
    pinned["metadata"]["name"] = json!("dns");
    pinned["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-ipv4"] =
        json!("10.240.0.53");
    post(&sim, SVCS, &pinned).await;
    wait_for_ip(&sim, "dns", |ip| ip == "10.240.0.53").await;
    merge_patch(&sim, &format!("{SVCS}/dns"), &json!({"metadata": {"annotations": {"service.beta.kubernetes.io/azure-load-balancer-ipv4": "10.240.0.54"}}})).await;
    wait_for_ip(&sim, "dns", |ip| ip == "10.240.0.54").await;

    // Unrelated changes keep the IP; leaving LoadBalancer clears the status.
    let before = sim
        .get("v1", "Service", Some("default"), "internal")
        .unwrap();
    merge_patch(
        &sim,
        &format!("{SVCS}/internal"),
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(
        ingress_ip(
            &sim.get("v1", "Service", Some("default"), "internal")
                .unwrap()
        ),
        ingress_ip(&before)
    );
    let cleared = merge_patch(
        &sim,
        &format!("{SVCS}/internal"),
        &json!({"spec": {"type": "ClusterIP"}}),
    )
    .await
    .body;
    assert_eq!(cleared["status"], json!({"loadBalancer": {}}));
    sim.shutdown().await;
}

fn status_written_by(svc: &Value, manager: &str) -> bool {
    svc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| {
            e["manager"] == manager && e["subresource"] == "status" && e["operation"] == "Update"
        })
}

#[tokio::test]
async fn allocator_does_not_write_when_nothing_changes() {
    let sim = start().await;
    let internal = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
        "annotations": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
    post(&sim, SVCS, &internal).await;
    let svc = wait_for_ip(&sim, "web", |_| true).await;
    // Unrelated writes wake the allocator; the Service must not change because of it.
    for i in 0..5 {
        post(
            &sim,
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": format!("c{i}")}}),
        )
        .await;
    }
    let marker = post(
        &sim,
        "/api/v1/namespaces/default/configmaps",
        &json!({"metadata": {"name": "marker"}}),
    )
    .await
    .body;
    let mut watch = Watch::open(
        &sim,
        &format!("{SVCS}?watch=true&resourceVersion={}", rv(&svc)),
    )
    .await;
    merge_patch(
        &sim,
        &format!("{SVCS}/web"),
        &json!({"metadata": {"labels": {"after": format!("{}", rv(&marker))}}}),
    )
    .await;
    let next = watch.next().await.unwrap();
    assert_eq!(
        next["object"]["metadata"]["labels"]["after"],
        rv(&marker).to_string(),
        "no allocator write came first"
    );
    sim.shutdown().await;
}

fn node_ports(svc: &Value) -> Vec<u64> {
    svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nodePort"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn allocations_are_released_reused_and_never_handed_out_twice() {
    let sim = start_with(SimOptions {
        lb_allocator: false,
        node_ports: 30000..=30003,
        ..SimOptions::default()
    })
    .await;
    let lb =
        |name: &str, ports: Value| service(name, json!({"type": "LoadBalancer", "ports": ports}));
    let two_ports = json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]);

    // A port the Service names itself is not free for its other ports.
    let a = post(
        &sim,
        SVCS,
        &lb(
            "a",
            json!([{"name": "http", "port": 80, "nodePort": 30000}, {"name": "https", "port": 443}]),
        ),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(node_ports(&a.body), [30000, 30001]);
    assert_eq!(a.body["spec"]["clusterIP"], "10.0.0.10");
    let b = post(&sim, SVCS, &lb("b", json!([{"port": 80}]))).await;
    assert_eq!(
        (node_ports(&b.body), b.body["spec"]["clusterIP"].as_str()),
        (vec![30002], Some("10.0.0.11"))
    );

    // Another Service's port is refused by name; a full range is the apiserver's 500, and the
    // failed create holds nothing.
    let taken = post(
        &sim,
        SVCS,
        &service(
            "taken",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30002}]}),
        ),
    )
    .await;
    assert_eq!(taken.status, 422, "{}", taken.body);
    assert!(
        taken.body["message"].as_str().unwrap().contains(
            "spec.ports[0].nodePort: Invalid value: 30002: provided port is already allocated"
        ),
        "{}",
        taken.body
    );
    let full = post(&sim, SVCS, &lb("c", two_ports.clone())).await;
    assert_eq!(full.status, 500, "{}", full.body);
    assert_eq!(
        full.body["message"],
        "Internal error occurred: failed to allocate a nodePort: range is full"
    );
    assert!(sim.get("v1", "Service", Some("default"), "c").is_none());

    // Deleting a Service frees what it held, lowest first.
    assert_eq!(delete(&sim, &format!("{SVCS}/a")).await.status, 200);
    let c = post(&sim, SVCS, &lb("c", two_ports)).await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(
        (node_ports(&c.body), c.body["spec"]["clusterIP"].as_str()),
        (vec![30000, 30001], Some("10.0.0.10"))
    );
    let d = post(&sim, SVCS, &service("d", json!({"ports": [{"port": 80}]}))).await;
    assert_eq!(d.body["spec"]["clusterIP"], "10.0.0.12");

    // An update keeps what it gave up until it is stored: a renamed port gets a new node port, and
    // the old one is free afterwards (pkg/registry/core/service/storage/alloc.go, ReleaseDeferred).
    let mut renamed = c.body.clone();
    renamed["spec"]["ports"][1] = json!({"name": "web", "port": 443});
    let renamed = put(&sim, &format!("{SVCS}/c"), &renamed).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(node_ports(&renamed.body), [30000, 30003]);
    let e = post(
        &sim,
        SVCS,
        &service("e", json!({"type": "NodePort", "ports": [{"port": 80}]})),
    )
    .await;
    assert_eq!(e.status, 201, "{}", e.body);
    assert_eq!(node_ports(&e.body), [30001]);
    sim.shutdown().await;
}
