//! Nothing goes before the App Services move (issue #10): on a link's deletion, a DNS Service rename
//! or `deletionPolicy: Retain`, an App Service is never left pointing at a DNS Service the operator
//! deleted, and no link deletes a DNS Service that an App Service of another link still uses.

use std::collections::BTreeMap;

use azure_sim::{Fault, FaultKind, SiteId};

use crate::harness::Harness;

const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000002";
const ZONE: &str = "mydomain.local";

fn site() -> SiteId {
    SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    }
}

/// The customer's settings before the operator: Azure DNS as the DNS server, and something else.
fn before() -> BTreeMap<String, String> {
    [
        ("WEBSITE_DNS_SERVER", "168.63.129.16"),
        ("WEBSITE_RUN_FROM_PACKAGE", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A link named `name` whose DNS Service is `dns` on `ip`; `targets` is true to name the App Service.
fn link(name: &str, dns: &str, ip: &str, policy: &str, targets: bool) -> String {
    let targets = if targets {
        format!("\n    - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}")
    } else {
        " []".into()
    };
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
  dns:
    zone: {name}.{ZONE}
    service: {{name: {dns}, staticIP: {ip}}}
  appServices:
    deletionPolicy: {policy}
    targets:{targets}
"#
    )
}

async fn started() -> Harness {
    let mut h = Harness::cluster().await;
    h.outside_chart_defaults("DNS Services named per link: the chart value rbac.dnsServiceNames");
    h.with_azure().await;
    h.azure().add_site(site(), before());
    h.operator_args(&["--resync-seconds", "3600"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h
}

fn dns_server(h: &Harness) -> String {
    h.azure().app_settings(&site()).unwrap()["WEBSITE_DNS_SERVER"].clone()
}

/// Every ARM request fails with a 500 until [`recover`]: an outage.
fn outage(h: &Harness) {
    h.azure()
        .inject(Fault::new("", FaultKind::ServerError).times(100_000));
}

fn recover(h: &Harness) {
    h.azure().clear_faults();
}

fn dns_service_exists(h: &Harness, name: &str) -> bool {
    h.service("kube-system", name).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_link_during_an_arm_outage_removes_nothing_until_the_app_service_is_restored() {
    let h = started().await;
    h.apply(&link("web", "web-dns", "10.240.0.53", "Restore", true));
    h.wait_ready("web").await;
    assert_eq!(dns_server(&h), "10.240.0.53");

    outage(&h);
    h.kubectl_ok(&["delete", "asl", "web", "--wait=false"]);
    let (_, reason, message) = h
        .eventually("the failed cleanup in AppServicesReady", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.2.starts_with("deleting the link:"))
        })
        .await;
    assert_eq!(reason, "RestoreFailed", "{message}");
    // The App Service still uses the DNS Service, so everything it resolves through stays.
    assert_eq!(dns_server(&h), "10.240.0.53");
    assert!(
        dns_service_exists(&h, "web-dns"),
        "the DNS Service was deleted before the App Service moved"
    );
    assert_eq!(
        h.service("shop", "api").unwrap()["spec"]["type"],
        "LoadBalancer"
    );
    assert!(h.coredns_custom()["data"]["appservicelink.override"]
        .as_str()
        .is_some_and(|o| o.contains("web.mydomain.local")));

    recover(&h);
    h.eventually("the link is gone", |h| {
        h.link("web").is_none().then_some(())
    })
    .await;
    assert_eq!(
        h.azure().app_settings(&site()).unwrap(),
        before(),
        "restored exactly"
    );
    assert!(!dns_service_exists(&h, "web-dns"));
    assert_eq!(
        h.service("shop", "api").unwrap()["spec"]["type"],
        "ClusterIP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_the_dns_service_its_app_service_still_uses() {
    let h = started().await;
    h.apply(&link("web", "web-dns", "10.240.0.53", "Retain", true));
    h.wait_ready("web").await;
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    // Retained: the App Service keeps the operator's DNS server, so its DNS Service stays too.
    assert_eq!(dns_server(&h), "10.240.0.53");
    let dns = h
        .service("kube-system", "web-dns")
        .expect("the DNS Service the App Service uses was deleted");
    assert_eq!(
        dns["metadata"]["annotations"]["appservicelink.io/retained-for"],
        "web"
    );
    let events = h.kubectl_ok(&["get", "events", "-A", "-o", "custom-columns=REASON:.reason"]);
    assert!(events.contains("DnsServiceRetained"), "{events}");

    // A link that names it again manages it again, and deletes it once nothing uses it.
    h.apply(&link("again", "web-dns", "10.240.0.53", "Restore", false));
    h.wait_ready("again").await;
    h.eventually("the retained mark removed", |h| {
        let svc = h.service("kube-system", "web-dns")?;
        svc["metadata"]["annotations"]["appservicelink.io/retained-for"]
            .is_null()
            .then_some(())
    })
    .await;
    h.kubectl_ok(&["delete", "asl", "again", "--timeout=30s"]);
    assert!(!dns_service_exists(&h, "web-dns"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_dns_service_goes_only_once_the_app_service_moved_to_the_new_one() {
    let h = started().await;
    h.apply(&link("web", "web-dns", "10.240.0.53", "Restore", true));
    h.wait_ready("web").await;

    outage(&h);
    h.apply(&link("web", "web-dns-2", "10.240.0.54", "Restore", true));
    // The new DNS Service is up and the link knows its IP, but the App Service cannot move yet.
    h.eventually("the link reports the new DNS IP", |h| {
        (h.link("web")?["status"]["dnsServerIP"] == "10.240.0.54").then_some(())
    })
    .await;
    h.eventually("AppServicesReady=False during the outage", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(dns_server(&h), "10.240.0.53");
    assert!(
        dns_service_exists(&h, "web-dns"),
        "the old DNS Service went while the App Service still pointed at it"
    );

    recover(&h);
    // The App Service duty retries an ARM server error after 30 s (there is no Retry-After).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(75);
    while dns_server(&h) != "10.240.0.54" {
        assert!(
            std::time::Instant::now() < deadline,
            "the App Service never moved to the new DNS Service:\n{}",
            h.operator_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    h.eventually("the old DNS Service deleted", |h| {
        (!dns_service_exists(h, "web-dns")).then_some(())
    })
    .await;
    assert!(dns_service_exists(&h, "web-dns-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_links_reconcile_leaves_a_terminating_links_dns_service() {
    let h = started().await;
    h.apply(&link("web", "web-dns", "10.240.0.53", "Restore", true));
    h.apply(&link("other", "other-dns", "10.240.0.60", "Restore", false));
    h.wait_ready("web").await;
    h.wait_ready("other").await;

    outage(&h);
    h.kubectl_ok(&["delete", "asl", "web", "--wait=false"]);
    h.eventually("web's cleanup stuck on the outage", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.2.starts_with("deleting the link:"))
    })
    .await;
    // Another link's reconcile (its spec changed) must not take web's DNS Service away.
    h.apply(
        &link("other", "other-dns", "10.240.0.60", "Restore", false)
            .replace("zone: other.mydomain.local", "zone: other2.mydomain.local"),
    );
    h.eventually("other reconciled its new generation", |h| {
        let other = h.link("other")?;
        (other["status"]["observedGeneration"] == other["metadata"]["generation"]
            && h.condition("other", "Ready")?.0 == "True")
            .then_some(())
    })
    .await;
    assert!(
        dns_service_exists(&h, "web-dns"),
        "another link deleted the DNS Service web's App Service still uses"
    );
    assert_eq!(dns_server(&h), "10.240.0.53");

    recover(&h);
    h.eventually("web is gone", |h| h.link("web").is_none().then_some(()))
        .await;
    assert_eq!(h.azure().app_settings(&site()).unwrap(), before());
    h.eventually("web's DNS Service deleted", |h| {
        (!dns_service_exists(h, "web-dns")).then_some(())
    })
    .await;
}
