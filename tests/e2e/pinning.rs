//! The DNS Service keeps the address Azure assigned it (issue #10): the operator records it on the
//! link and pins it on the Service, so a re-created DNS Service gets it back and the App Services are
//! not re-pointed (each write restarts the customer's app).

use std::collections::BTreeMap;

use azure_sim::SiteId;

use crate::harness::Harness;

const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000003";
const DNS: &str = "appservicelink-dns";
const IPV4: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
const PINNED: &str = "appservicelink.io/pinned-dns-ip";

fn site() -> SiteId {
    SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    }
}

/// A link with no static IP for its DNS Service; `extra` goes under `spec.dns.service`.
fn link(extra: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: web
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
  dns:
    zone: mydomain.local
    service: {{{extra}}}
  appServices:
    targets:
    - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}
"#
    )
}

async fn started(link_yaml: &str) -> Harness {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(
        site(),
        BTreeMap::from([(
            "WEBSITE_DNS_SERVER".to_string(),
            "168.63.129.16".to_string(),
        )]),
    );
    h.operator_args(&["--resync-seconds", "3600"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(link_yaml);
    h.wait_ready("web").await;
    h
}

fn dns_ip(h: &Harness) -> String {
    h.link("web").unwrap()["status"]["dnsServerIP"]
        .as_str()
        .unwrap()
        .to_string()
}

fn annotation(object: &serde_json::Value, key: &str) -> Option<String> {
    object["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// An internal load balancer that takes the lowest free address, as the released one would be.
const SQUATTER: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: squatter
  namespace: default
  annotations: {service.beta.kubernetes.io/azure-load-balancer-internal: "true"}
spec:
  type: LoadBalancer
  selector: {app: squatter}
  ports: [{port: 8443}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_dns_service_gets_its_address_back_and_the_app_service_is_not_written_again() {
    let mut h = started(&link("")).await;
    let ip = dns_ip(&h);
    // Recorded on the link first, then pinned on the Service.
    let pin = h
        .eventually("the address pinned on the DNS Service", |h| {
            h.service("kube-system", DNS)
                .and_then(|svc| annotation(&svc, IPV4))
        })
        .await;
    assert_eq!(pin, ip);
    assert_eq!(
        annotation(&h.link("web").unwrap(), PINNED).as_deref(),
        Some(format!("kube-system/{DNS}={ip}").as_str())
    );
    let (_, reason, message) = h.condition("web", "DnsServiceReady").unwrap();
    assert_eq!(reason, "LoadBalancerReady");
    assert!(message.contains("pinned"), "{message}");
    assert_eq!(
        h.azure().writes().len(),
        1,
        "one write to point the App Service"
    );

    // The DNS Service is deleted while the operator is down, and its address is handed to the next
    // internal load balancer, as Azure would hand out a released dynamic address.
    h.kill_operator();
    h.kubectl_ok(&["-n", "kube-system", "delete", "service", DNS]);
    h.apply(SQUATTER);
    h.eventually("the squatter takes the released address", |h| {
        h.service("default", "squatter")
            .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"] == ip.as_str())
    })
    .await;
    h.start_operator();
    let svc = h
        .eventually("the DNS Service re-created with an address", |h| {
            h.service("kube-system", DNS)
                .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        })
        .await;
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        ip.as_str()
    );
    assert_eq!(annotation(&svc, IPV4).as_deref(), Some(ip.as_str()));
    h.wait_ready("web").await;
    assert_eq!(dns_ip(&h), ip);
    assert_eq!(
        h.azure().app_settings(&site()).unwrap()["WEBSITE_DNS_SERVER"],
        ip
    );
    assert_eq!(
        h.azure().writes().len(),
        1,
        "the App Service was not re-pointed (a write restarts the app)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_address_false_leaves_the_address_to_azure() {
    let h = started(&link("pinAddress: false")).await;
    let svc = h.service("kube-system", DNS).unwrap();
    assert_eq!(annotation(&svc, IPV4), None, "{svc}");
    assert_eq!(annotation(&h.link("web").unwrap(), PINNED), None);

    // Opting in later pins the current address; opting out again lets it go.
    h.apply(&link("pinAddress: true"));
    let ip = dns_ip(&h);
    h.eventually("the address pinned", |h| {
        h.service("kube-system", DNS)
            .and_then(|svc| annotation(&svc, IPV4))
            .filter(|pin| *pin == ip)
    })
    .await;
    h.apply(&link("pinAddress: false"));
    h.eventually("the pin removed from the Service and the link", |h| {
        let svc = h.service("kube-system", DNS)?;
        (annotation(&svc, IPV4).is_none() && annotation(&h.link("web")?, PINNED).is_none())
            .then_some(())
    })
    .await;
    assert_eq!(
        dns_ip(&h),
        ip,
        "the address itself stays while the Service exists"
    );
    assert_eq!(h.azure().writes().len(), 1);
}
