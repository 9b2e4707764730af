//! The operator against what a real AKS cluster refuses: a ValidatingAdmissionPolicy that denies one
//! Service, a `coredns-custom` too big for the override, a static DNS IP another Service holds, a subnet
//! that does not exist, and a cloud controller that provisions one load balancer at a time.
//!
//! What must hold: nothing is half-changed, nobody else's data is touched, the operator keeps running
//! and retrying, the link is not reported Ready, and one refused write stops no other duty: the
//! refusal is in the status, where the user looks.

use std::time::Duration;

use kube_sim::{RecordedRequest, SimOptions};
use serde_json::Value;

use crate::harness::{http_get, http_port, sample, Harness};

const INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
const SUBNET: &str = "service.beta.kubernetes.io/azure-load-balancer-internal-subnet";
const OVERRIDE_KEY: &str = "appservicelink.override";

fn link(subnet: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: web
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
    subnet: {subnet}
  dns:
    zone: mydomain.local
    service:
      name: appservicelink-dns
      staticIP: 10.240.0.53
"#
    )
}

fn svc_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or_default()
}

fn ingress_ip(svc: &Value) -> Option<&str> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str()
}

/// The operator's writes to one object (any subresource) that the apiserver answered with `code`.
fn refused(h: &Harness, path_suffix: &str, code: u16) -> Vec<RecordedRequest> {
    h.operator_writes()
        .into_iter()
        .filter(|r| r.path.ends_with(path_suffix) && r.status == code)
        .collect()
}

/// Waits until the operator has tried (and been refused) twice: it retried instead of giving up.
async fn refused_twice(h: &Harness, what: &str, path_suffix: &str, code: u16) {
    h.eventually(&format!("{what} refused twice"), |h| {
        (refused(h, path_suffix, code).len() >= 2).then_some(())
    })
    .await;
}

/// The operator process is up and answers its health check (it did not exit or crash-loop).
async fn assert_running(h: &Harness) {
    let port = h
        .eventually("the operator's HTTP port in its log", |h| {
            http_port(&h.operator_log())
        })
        .await;
    let (code, _) = http_get(port, "/healthz").expect("the operator answers /healthz");
    assert_eq!(code, 200);
}

/// The value of a reconcile-error counter on the operator's /metrics.
fn reconcile_errors(h: &Harness, reason: &str) -> Option<f64> {
    let (_, metrics) = http_get(http_port(&h.operator_log())?, "/metrics")?;
    sample(
        &metrics,
        &format!(r#"appservicelink_reconcile_errors_total{{reason="{reason}"}}"#),
    )
}

fn not_ready(h: &Harness) -> bool {
    h.condition("web", "Ready").is_none_or(|c| c.0 != "True")
}

/// Events of one object, as `kubectl get events` lists them.
fn events_of(h: &Harness, namespace: &str, name: &str) -> String {
    h.kubectl_ok(&[
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,FROM:.source.component,MESSAGE:.message",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_refusing_one_service_leaves_it_exactly_as_it_was() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    // A compliance policy, as Azure Policy or a platform team installs it: Services marked
    // cluster-only must never become load balancers.
    h.apply(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: cluster-only-services
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["services"]
  validations:
  - expression: "object.spec.type != 'LoadBalancer'"
    message: "Services marked cluster-only may not be load balancers"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: cluster-only-services
spec:
  policyName: cluster-only-services
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels: {contoso.com/exposure: cluster-only}
"#,
    );
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "orders",
        "contoso.com/exposure=cluster-only",
    ]);
    let before = h.service("shop", "orders").unwrap();
    h.apply(&link("ilb-subnet"));

    refused_twice(&h, "the conversion of orders", "/services/orders", 403).await;
    // orders is exactly as it was: not half-converted, not even touched.
    assert_eq!(h.service("shop", "orders").unwrap(), before);
    // The other selected Service is converted.
    let api = h
        .eventually("api converted", |h| {
            h.service("shop", "api")
                .filter(|s| svc_type(s) == "LoadBalancer")
        })
        .await;
    assert_eq!(api["metadata"]["annotations"][INTERNAL], "true");
    // The operator keeps running, counts the refusal and logs the apiserver's reason.
    assert_running(&h).await;
    h.eventually("a KubeForbidden reconcile error on /metrics", |h| {
        (reconcile_errors(h, "KubeForbidden")? >= 1.0).then_some(())
    })
    .await;
    let log = h.operator_log();
    assert!(
        log.contains("ValidatingAdmissionPolicy 'cluster-only-services' with binding 'cluster-only-services' denied request: Services marked cluster-only may not be load balancers"),
        "{log}"
    );
    assert!(not_ready(&h), "{:?}", h.link("web"));

    // One refused Service stops nothing else (issue #10): the DNS Service, the override and the
    // status are all there, and the refusal is the Service's entry and the condition's message.
    let entry = h
        .eventually("orders reported as refused in status.services", |h| {
            h.link("web")?["status"]["services"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == "orders" && e["state"] == "Failed")
                .cloned()
        })
        .await;
    let message = entry["message"].as_str().unwrap();
    assert!(
        message.contains("denied request: Services marked cluster-only may not be load balancers")
            && message.contains("admission policy"),
        "{message}"
    );
    let (status, reason, services_message) = h.condition("web", "ServicesReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ServiceConversionFailed")
    );
    assert!(
        services_message.contains("shop/orders"),
        "{services_message}"
    );
    assert_eq!(h.condition("web", "Stalled").unwrap().0, "True");
    let dns = h
        .eventually("the DNS Service has its IP", |h| {
            h.service("kube-system", "appservicelink-dns")
                .filter(|s| ingress_ip(s).is_some())
        })
        .await;
    assert_eq!(ingress_ip(&dns), Some("10.240.0.53"));
    h.eventually("the override is written", |h| {
        h.coredns_custom()["data"][OVERRIDE_KEY]
            .as_str()
            .filter(|o| o.contains("mydomain.local"))
            .map(|_| ())
    })
    .await;
    // The status that reports them is written after the override, by the same reconcile.
    for duty in ["DnsServiceReady", "CoreDNSOverrideReady"] {
        h.eventually(&format!("{duty} True"), |h| {
            h.condition("web", duty).filter(|c| c.0 == "True")
        })
        .await;
    }
    let linked = h.link("web").unwrap()["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "api")
        .cloned()
        .unwrap();
    assert_eq!(linked["state"], "Linked", "{linked}");
    let events = h.kubectl_ok(&["get", "events", "-A", "-o", "custom-columns=REASON:.reason"]);
    assert!(events.contains("ServiceConversionFailed"), "{events}");
}

/// `coredns-custom` as a team that keeps big blocklists in it has it: the fixture's keys plus `extra`.
fn fill_coredns_custom(h: &Harness, extra: serde_json::Map<String, Value>) {
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("patch.json");
    std::fs::write(&patch, serde_json::json!({"data": extra}).to_string()).unwrap();
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "--patch-file",
        patch.to_str().unwrap(),
    ]);
}

/// A CoreDNS hosts block of about `len` bytes (exactly `len` with the padding comment).
fn blocklist(len: usize) -> String {
    let mut text = String::from("blocked.contoso:53 {\n    hosts {\n");
    let mut i = 0;
    while text.len() + 40 < len {
        text.push_str(&format!("        0.0.0.0 ad{i:06}.tracker.example\n"));
        i += 1;
    }
    let tail = "    }\n}\n";
    let pad = len.saturating_sub(text.len() + tail.len() + 2);
    text.push_str(&format!("#{}\n", "-".repeat(pad)));
    text.push_str(tail);
    text
}

/// Waits for the override to be refused, then checks what must hold: the other keys are byte for
/// byte what they were, no override was written, the operator runs on and reports the refusal.
async fn assert_override_refused(h: &Harness, code: u16, message: &str) {
    let before = h.coredns_custom()["data"].clone();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("ilb-subnet"));
    refused_twice(h, "the override", "/configmaps/coredns-custom", code).await;
    let data = h.coredns_custom()["data"].clone();
    assert!(data.get(OVERRIDE_KEY).is_none());
    assert_eq!(data, before, "the other keys survived byte for byte");
    assert_running(h).await;
    let log = h.operator_log();
    assert!(log.contains(message), "{message:?} not in the log:\n{log}");
    assert!(not_ready(h), "{:?}", h.link("web"));
    // CoreDNS was not rolled for an override it does not have.
    let coredns = h
        .sim
        .get("apps/v1", "Deployment", Some("kube-system"), "coredns")
        .unwrap();
    assert!(coredns["spec"]["template"]["metadata"]["annotations"]
        ["appservicelink.io/coredns-override-hash"]
        .is_null());
    // The refusal is the override's condition, and the other duties went on (issue #10).
    let (status, _, condition) = h
        .eventually("CoreDNSOverrideReady says why", |h| {
            h.condition("web", "CoreDNSOverrideReady")
                .filter(|c| c.1 == "OverrideWriteFailed")
        })
        .await;
    assert_eq!(status, "False");
    assert!(condition.contains(message), "{condition}");
    h.eventually("the Services are linked anyway", |h| {
        (h.link("web")?["status"]["linkedServiceCount"] == 2).then_some(())
    })
    .await;
    assert_eq!(h.condition("web", "DnsServiceReady").unwrap().0, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_that_would_take_coredns_custom_past_1_mib_is_refused() {
    let h = Harness::start().await;
    // ConfigMap validation caps data at 1 MiB: leave less room than the override needs.
    let used: usize = h.coredns_custom()["data"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().len())
        .sum();
    let room = 10;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "blocklist.server".into(),
        Value::String(blocklist(1024 * 1024 - used - room)),
    );
    fill_coredns_custom(&h, extra);
    assert_override_refused(
        &h,
        422,
        "ConfigMap \"coredns-custom\" is invalid: []: Too long: may not be more than 1048576 bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_that_would_take_coredns_custom_past_etcds_limit_is_refused() {
    let h = Harness::start().await;
    let limit = kube_sim::ETCD_MAX_REQUEST_BYTES;
    let size = |h: &Harness| {
        h.sim
            .stored_size("v1", "ConfigMap", Some("kube-system"), "coredns-custom")
            .unwrap()
    };
    // Values stay under the 1 MiB of ConfigMap validation; key names count only towards etcd's
    // 1.5 MiB (twice: in data and in managedFields). 1500 per-site blocklists with long names.
    let sites: serde_json::Map<String, Value> = (0..1500)
        .map(|i| {
            let name = format!("blocklist-{i:04}-{}.server", "tenant-site-zone".repeat(14));
            (name, Value::String(blocklist(460)))
        })
        .collect();
    fill_coredns_custom(&h, sites);
    // Top up to just under the limit with a one-line comment: no write that adds a key fits any more.
    let mut pad = limit - size(&h) - 100;
    for _ in 0..2 {
        let mut extra = serde_json::Map::new();
        let comment = format!("#{}\n", "-".repeat(pad));
        extra.insert("padding.server".into(), Value::String(comment));
        fill_coredns_custom(&h, extra);
        pad = (pad + limit - 20).saturating_sub(size(&h));
    }
    let stored = size(&h);
    assert!(stored <= limit && stored > limit - 40, "{stored}");
    assert_override_refused(&h, 500, "etcdserver: request is too large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_dns_ip_another_service_holds_leaves_the_dns_service_pending() {
    let h = Harness::start().await;
    // A DNS forwarder someone already runs on the IP the link asks for.
    h.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Service
metadata:
  name: dns-forwarder
  namespace: infra
  annotations:
    service.beta.kubernetes.io/azure-load-balancer-internal: "true"
    service.beta.kubernetes.io/azure-load-balancer-internal-subnet: ilb-subnet
    service.beta.kubernetes.io/azure-load-balancer-ipv4: 10.240.0.53
spec:
  type: LoadBalancer
  selector: {app: dns-forwarder}
  ports:
  - {name: dns, port: 53, protocol: UDP}
"#,
    );
    h.eventually("the forwarder on 10.240.0.53", |h| {
        let svc = h.service("infra", "dns-forwarder")?;
        (ingress_ip(&svc)? == "10.240.0.53").then_some(())
    })
    .await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("ilb-subnet"));

    // The DNS Service is created, and stays pending with the cloud controller's Warning.
    let events = h
        .eventually("a Warning Event on the DNS Service", |h| {
            let events = events_of(h, "kube-system", "appservicelink-dns");
            events.contains("SyncLoadBalancerFailed").then_some(events)
        })
        .await;
    assert!(
        events.contains("service-controller")
            && events.contains("checkLoadBalancerResourcesConflicts: service port dns-udp is trying to consume the port 53"),
        "{events}"
    );
    let described = h.kubectl_ok(&[
        "-n",
        "kube-system",
        "describe",
        "service",
        "appservicelink-dns",
    ]);
    assert!(described.contains("SyncLoadBalancerFailed"), "{described}");
    // The cloud controller's reason reaches the condition (its Event wakes nothing: the operator
    // looks again while it waits).
    let (status, _, message) = h
        .eventually("DnsServiceReady says why", |h| {
            h.condition("web", "DnsServiceReady")
                .filter(|c| c.1 == "LoadBalancerProvisioningFailed")
        })
        .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("service port dns-udp is trying to consume the port 53"),
        "{message}"
    );
    assert_eq!(h.condition("web", "Stalled").unwrap().0, "True");
    let dns = h.service("kube-system", "appservicelink-dns").unwrap();
    assert_eq!(ingress_ip(&dns), None);
    assert!(not_ready(&h));
    assert!(h.link("web").unwrap()["status"]["dnsServerIP"].is_null());
    assert_eq!(
        ingress_ip(&h.service("infra", "dns-forwarder").unwrap()),
        Some("10.240.0.53"),
        "the forwarder keeps its IP"
    );

    // Once the forwarder is gone, the DNS Service gets the IP and the link becomes Ready.
    h.kubectl_ok(&["-n", "infra", "delete", "service", "dns-forwarder"]);
    h.wait_ready("web").await;
    assert_eq!(
        h.link("web").unwrap()["status"]["dnsServerIP"],
        "10.240.0.53"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_that_does_not_exist_leaves_everything_pending_until_it_is_fixed() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("ilb-subnet-typo"));

    let events = h
        .eventually("a Warning Event on api", |h| {
            let events = events_of(h, "shop", "api");
            events.contains("SyncLoadBalancerFailed").then_some(events)
        })
        .await;
    assert!(
        events.contains("failed to get subnet: aks-vnet-12345678/ilb-subnet-typo"),
        "{events}"
    );
    let (status, _, message) = h
        .eventually("ServicesReady says why", |h| {
            h.condition("web", "ServicesReady")
                .filter(|c| c.1 == "LoadBalancerProvisioningFailed")
        })
        .await;
    assert_eq!(status, "False");
    assert!(message.contains("2 pending"), "{message}");
    assert!(
        message.contains("failed to get subnet: aks-vnet-12345678/ilb-subnet-typo"),
        "{message}"
    );
    // The cloud controller reports each Service's failure in its own Event, one Service at a time:
    // an entry is Pending without a message until its Event exists, then says why.
    h.eventually("every pending Service says why", |h| {
        let entries = h.link("web")?["status"]["services"].clone();
        entries
            .as_array()?
            .iter()
            .filter(|e| e["state"] == "Pending")
            .all(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("the cloud controller cannot provision"))
            })
            .then_some(())
    })
    .await;
    for name in ["api", "orders"] {
        let svc = h.service("shop", name).unwrap();
        assert_eq!(svc["metadata"]["annotations"][SUBNET], "ilb-subnet-typo");
        assert_eq!(ingress_ip(&svc), None, "{name}");
    }
    let dns = h.service("kube-system", "appservicelink-dns").unwrap();
    assert_eq!(ingress_ip(&dns), None);
    assert!(not_ready(&h));

    // Fixing the link's subnet converges.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"services":{"subnet":"ilb-subnet"}}}"#,
    ]);
    h.wait_ready("web").await;
    let api = h.service("shop", "api").unwrap();
    assert_eq!(api["metadata"]["annotations"][SUBNET], "ilb-subnet");
    assert!(ingress_ip(&api).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_controller_that_provisions_one_service_at_a_time_still_converges() {
    let mut h = Harness::cluster_with(SimOptions {
        lb_provisioning_delay: Duration::from_millis(400),
        ..SimOptions::default()
    })
    .await;
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("ilb-subnet"));
    h.wait_ready("web").await;
    let status = h.link("web").unwrap()["status"].clone();
    assert_eq!(status["dnsServerIP"], "10.240.0.53");
    assert_eq!(status["linkedServiceCount"], 2);
    // While the load balancers were pending the operator did not re-apply anything.
    for path in [
        "/services/api",
        "/services/orders",
        "/services/appservicelink-dns",
        "/configmaps/coredns-custom",
    ] {
        let writes: Vec<_> = h
            .operator_writes()
            .into_iter()
            .filter(|r| r.path.ends_with(path))
            .collect();
        // coredns-custom: the override, then the record that CoreDNS was rolled for it.
        let expected = if path.contains("configmaps") { 2 } else { 1 };
        assert_eq!(writes.len(), expected, "{path}: {writes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_the_coredns_deployment_stops_only_the_roll() {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    let site = azure_sim::SiteId {
        subscription_id: "6f1c2b3a-0000-4000-8000-000000000005".into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    };
    h.azure().add_site(site.clone(), Default::default());
    h.start_operator();
    // The platform's policy: nobody but AKS changes the cluster's CoreDNS.
    h.apply(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: coredns-is-managed
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["UPDATE"]
      resources: ["deployments"]
  validations:
  - expression: "object.metadata.name != 'coredns'"
    message: "kube-system/coredns is managed by AKS"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: coredns-is-managed
spec:
  policyName: coredns-is-managed
  validationActions: [Deny]
"#,
    );
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&format!(
        "{}  appServices:\n    targets:\n    - {{subscriptionId: {}, resourceGroup: rg-web, name: contoso-web}}\n",
        link("ilb-subnet"),
        site.subscription_id
    ));
    let (status, _, message) = h
        .eventually("CoreDNSOverrideReady says the roll was refused", |h| {
            h.condition("web", "CoreDNSOverrideReady")
                .filter(|c| c.1 == "CoreDNSRestartFailed")
        })
        .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("kube-system/coredns is managed by AKS"),
        "{message}"
    );
    assert_eq!(h.condition("web", "Stalled").unwrap().0, "True");
    // Everything that does not depend on the roll is done.
    for duty in ["ServicesReady", "DnsServiceReady", "AppServicesReady"] {
        let (status, reason, message) = h
            .eventually(duty, |h| h.condition("web", duty).filter(|c| c.0 == "True"))
            .await;
        assert_eq!(status, "True", "{duty}: {reason}: {message}");
    }
    assert_eq!(
        h.azure().app_settings(&site).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
    assert!(h.coredns_custom()["data"]["appservicelink.override"]
        .as_str()
        .is_some_and(|o| o.contains("mydomain.local")));
    assert!(not_ready(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_port_range_fails_only_the_service_it_cannot_fit() {
    // Five node ports: the public storefront holds one, the DNS Service takes two (53/UDP and
    // 53/TCP), api and orders one each.
    let mut h = Harness::cluster_with(SimOptions {
        node_ports: 30000..=30004,
        ..SimOptions::default()
    })
    .await;
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80}, {name: https, port: 443}]
"#,
    );
    h.apply(&link("ilb-subnet"));
    h.wait_ready("web").await;
    let before = h.service("shop", "cart").unwrap();
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "cart",
        "appservicelink.io/expose=true",
    ]);
    let entry = h
        .eventually("cart refused in status.services", |h| {
            h.link("web")?["status"]["services"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == "cart" && e["state"] == "Failed")
                .cloned()
        })
        .await;
    assert!(
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed to allocate a nodePort: range is full")),
        "{entry}"
    );
    let (status, reason, message) = h.condition("web", "ServicesReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ServiceConversionFailed")
    );
    assert!(message.contains("shop/cart"), "{message}");
    h.eventually("a Warning Event naming cart", |h| {
        h.sim
            .list("events.k8s.io/v1", "Event")
            .iter()
            .any(|e| {
                e["type"] == "Warning"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("shop/cart") && n.contains("range is full"))
            })
            .then_some(())
    })
    .await;
    // cart is as it was; the others stay linked.
    let cart = h.service("shop", "cart").unwrap();
    assert_eq!(cart["spec"], before["spec"]);
    for name in ["api", "orders"] {
        assert!(
            ingress_ip(&h.service("shop", name).unwrap()).is_some(),
            "{name}"
        );
    }
}
