//! Trust boundaries: what the operator reads back (annotations on Services, its own status) never
//! makes it do what no link asked for; selectors that match everything and Services in `kube-system`
//! are refused; and an App Service is written only when the write takes effect, by one link, however
//! its id is spelled.

use std::collections::BTreeMap;

use azure_sim::SiteId;
use serde_json::{json, Value};

use crate::harness::{describe, Harness};

const INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
const LINK: &str = "appservicelink.io/link";
const PREVIOUS: &str = "appservicelink.io/previous-state";
const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000001";

/// A previous-state record claiming the Service was a public load balancer.
const PUBLIC_RECORD: &str = r#"{"type":"LoadBalancer","annotations":{"service.beta.kubernetes.io/azure-load-balancer-internal":null,"service.beta.kubernetes.io/azure-load-balancer-internal-subnet":null}}"#;

/// A link named `name` selecting `selector` (YAML flow), with the given extra spec lines.
fn link(name: &str, selector: &str, zone: &str, dns_service: &str, app_services: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector: {selector}
  dns:
    zone: {zone}
    service: {dns_service}
{app_services}"#
    )
}

fn web_link() -> String {
    link(
        "web",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "mydomain.local",
        "{staticIP: 10.240.0.53}",
        "",
    )
}

/// `spec.appServices` in AppSettings mode with these (resourceGroup, name) targets.
fn targets(sites: &[(&str, &str)]) -> String {
    let mut yaml = String::from("  appServices:\n    dnsMode: AppSettings\n    targets:\n");
    for (rg, name) in sites {
        yaml.push_str(&format!(
            "      - {{subscriptionId: {SUB}, resourceGroup: {rg}, name: {name}}}\n"
        ));
    }
    yaml
}

fn service_yaml(name: &str, labels: &str, annotations: &Value, spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
  labels: {labels}
  annotations: {annotations}
spec: {spec}
"#
    )
}

fn svc_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

/// A LoadBalancer without the internal annotation: reachable from the internet on Azure.
fn is_public(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && svc["metadata"]["annotations"][INTERNAL] != "true"
}

fn writes_to(h: &Harness, path_suffix: &str) -> Vec<String> {
    let writes: Vec<_> = h
        .operator_writes()
        .into_iter()
        .filter(|r| r.path.ends_with(path_suffix))
        .collect();
    describe(&writes)
}

/// The link's `status.services` entry for namespace/name.
fn service_entry(h: &Harness, link: &str, namespace: &str, name: &str) -> Option<Value> {
    h.link(link)?["status"]["services"]
        .as_array()?
        .iter()
        .find(|e| e["namespace"] == namespace && e["name"] == name)
        .cloned()
}

fn event_reasons(h: &Harness) -> Vec<(String, String)> {
    h.sim
        .list("events.k8s.io/v1", "Event")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("note"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_previous_state_never_makes_a_public_load_balancer() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    // Forged before the conversion: a ClusterIP Service claiming it was a public load balancer.
    h.apply(&service_yaml(
        "forged",
        r#"{appservicelink.io/expose: "true"}"#,
        &json!({PREVIOUS: PUBLIC_RECORD}),
        "{selector: {app: forged}, ports: [{port: 80}]}",
    ));
    h.apply(&web_link());
    h.wait_ready("web").await;
    assert!(!is_public(&h.service("shop", "forged").unwrap()));

    // Forged after the conversion, in the same write that lets the Service go.
    let tamper = json!({"metadata": {
        "labels": {"appservicelink.io/expose": null},
        "annotations": {PREVIOUS: PUBLIC_RECORD},
    }});
    h.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "service",
        "api",
        "--type",
        "merge",
        "-p",
        &tamper.to_string(),
    ]);
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "forged",
        "appservicelink.io/expose-",
    ]);
    let forged = h
        .eventually("forged let go", |h| {
            h.service("shop", "forged")
                .filter(|s| s["metadata"]["annotations"].get(LINK).is_none())
        })
        .await;
    h.eventually("status lists only orders", |h| {
        let names: Vec<Value> = h.link("web")?["status"]["services"]
            .as_array()?
            .iter()
            .map(|s| s["name"].clone())
            .collect();
        (names == vec![json!("orders")]).then_some(())
    })
    .await;
    let before = h.mark();
    h.kubectl_ok(&["-n", "shop", "annotate", "service", "orders", "touched=1"]);
    h.settle_after(&before).await;

    // It really was a ClusterIP Service: that is what comes back, not the forged record.
    assert_eq!(svc_type(&forged), "ClusterIP", "{forged}");
    let api = h.service("shop", "api").unwrap();
    assert!(
        !is_public(&api),
        "a forged record made api a public load balancer: {api}"
    );
    assert!(
        event_reasons(&h)
            .iter()
            .any(|(reason, note)| reason == "RestoreRefused" && note.contains("shop/api")),
        "a Warning Event says why api was left as it is: {:?}",
        event_reasons(&h)
    );
    // The link let go of it, so later reconciles neither retry nor repeat the Event.
    assert!(api["metadata"]["annotations"].get(LINK).is_none(), "{api}");
    let before = h.mark();
    h.kubectl_ok(&[
        "-n",
        "shop",
        "annotate",
        "service",
        "orders",
        "touched-again=1",
    ]);
    h.settle_after(&before).await;
    let refused: Vec<Value> = h
        .sim
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["reason"] == "RestoreRefused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].get("series").is_none_or(Value::is_null),
        "the Event was repeated: {}",
        refused[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_link_annotation_neither_skips_the_opt_in_nor_makes_the_operator_restore() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    // A public load balancer that claims the link already holds it.
    h.apply(&service_yaml(
        "edge",
        r#"{appservicelink.io/expose: "true"}"#,
        &json!({LINK: "web"}),
        "{type: LoadBalancer, selector: {app: edge}, ports: [{port: 443}]}",
    ));
    // A Service the link does not select, claiming the link converted it from a public one.
    h.apply(&service_yaml(
        "quiet",
        "{team: shop}",
        &json!({LINK: "web", PREVIOUS: PUBLIC_RECORD}),
        "{selector: {app: quiet}, ports: [{port: 80}]}",
    ));
    h.apply(&web_link());
    h.wait_ready("web").await;
    let before = h.mark();
    h.kubectl_ok(&["-n", "shop", "annotate", "service", "edge", "touched=1"]);
    h.settle_after(&before).await;

    let entry = service_entry(&h, "web", "shop", "edge").expect("edge is listed");
    assert_eq!(entry["state"], "Skipped", "{entry}");
    assert!(
        entry["message"]
            .as_str()
            .unwrap_or_default()
            .contains("allowPublicLoadBalancerConversion"),
        "{entry}"
    );
    let edge = h.service("shop", "edge").unwrap();
    assert!(is_public(&edge), "still as its owner made it: {edge}");
    assert_eq!(writes_to(&h, "/services/edge"), Vec::<String>::new());

    let quiet = h.service("shop", "quiet").unwrap();
    assert_eq!(svc_type(&quiet), "ClusterIP", "{quiet}");
    assert_eq!(writes_to(&h, "/services/quiet"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_that_match_every_service_are_refused() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    for selector in [
        "{matchExpressions: [{key: appservicelink.io/skip, operator: DoesNotExist}]}",
        "{matchExpressions: [{key: tier, operator: NotIn, values: [db]}, {key: x, operator: DoesNotExist}]}",
    ] {
        let out = h.kubectl(
            &["apply", "-f", "-"],
            Some(&link("all", selector, "all.local", "{}", "")),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{selector} was admitted");
        assert!(
            stderr.contains("spec.services.selector") && stderr.contains("every Service"),
            "{stderr}"
        );
    }
    assert!(h.link("all").is_none());

    // An old CRD without the rule lets it in; the controller refuses it all the same.
    let mut crd: Value = serde_norway::from_str(crate::harness::CRD).unwrap();
    crate::harness::strip_validations(&mut crd);
    h.apply(&serde_norway::to_string(&crd).unwrap());
    h.apply(&link(
        "all",
        "{matchExpressions: [{key: appservicelink.io/skip, operator: DoesNotExist}]}",
        "all.local",
        "{}",
        "",
    ));
    let (_, _, message) = h
        .eventually("InvalidSpec", |h| {
            h.condition("all", "Ready").filter(|c| c.1 == "InvalidSpec")
        })
        .await;
    assert!(
        message.contains("spec.services.selector") && message.contains("every Service"),
        "{message}"
    );
    let service_writes: Vec<_> = h
        .operator_writes()
        .into_iter()
        .filter(|r| r.path.contains("/services"))
        .collect();
    assert!(
        service_writes.is_empty(),
        "no Service touched: {:?}",
        describe(&service_writes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_in_kube_system_is_never_converted() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, appservicelink.io/expose: "true"}
spec:
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
"#,
    );
    h.apply(&web_link());
    h.wait_ready("web").await;
    let entry = service_entry(&h, "web", "kube-system", "kube-dns").expect("kube-dns is listed");
    assert_eq!(entry["state"], "Skipped", "{entry}");
    assert!(
        entry["message"]
            .as_str()
            .unwrap_or_default()
            .contains("kube-system"),
        "{entry}"
    );
    let kube_dns = h.service("kube-system", "kube-dns").unwrap();
    assert_eq!(svc_type(&kube_dns), "ClusterIP", "{kube_dns}");
    assert_eq!(
        writes_to(&h, "/namespaces/kube-system/services/kube-dns"),
        Vec::<String>::new()
    );
    let api = service_entry(&h, "web", "shop", "api").unwrap();
    assert_eq!(api["state"], "Linked", "the others are linked: {api}");
}

// ---------------------------------------------------------------------------------------------
// App Services
// ---------------------------------------------------------------------------------------------

fn site() -> SiteId {
    SiteId::new(SUB, "rg-web", "contoso-web")
}

fn customer_settings() -> BTreeMap<String, String> {
    [("WEBSITE_RUN_FROM_PACKAGE", "1"), ("Db", "Server=db")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn with_site(resync_seconds: &str) -> Harness {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(site(), customer_settings());
    h.operator_args(&["--resync-seconds", resync_seconds]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h
}

fn app_settings_puts(h: &Harness) -> usize {
    h.azure()
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/config/appsettings"))
        .count()
}

/// Waits until the operator has read the site at least `n` more times (a resync each).
async fn resyncs(h: &Harness, n: usize) {
    let start = h.azure().requests().len();
    h.eventually(&format!("{n} more resyncs"), |h| {
        (h.azure().requests().len() >= start + 2 * n).then_some(())
    })
    .await;
}

fn dns_server(h: &Harness) -> Option<String> {
    h.azure()
        .app_settings(&site())?
        .get("WEBSITE_DNS_SERVER")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_site_spelled_two_ways_is_written_once_by_one_link() {
    let mut h = with_site("2").await;
    h.outside_chart_defaults("DNS Service second-dns: the chart value rbac.dnsServiceNames");
    // One link naming the site twice, in two casings: one target.
    h.apply(&link(
        "web",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "mydomain.local",
        "{staticIP: 10.240.0.53}",
        &targets(&[("RG-Web", "Contoso-Web"), ("rg-web", "contoso-web")]),
    ));
    h.eventually("AppServicesReady=True", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
    let entries = h.link("web").unwrap()["status"]["appServices"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");

    // A second link naming it in a third casing keeps off it.
    h.apply(&link(
        "second",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "second.local",
        "{name: second-dns, staticIP: 10.240.0.77}",
        &targets(&[("rg-web", "CONTOSO-WEB")]),
    ));
    let (_, _, message) = h
        .eventually("the second link reports the conflict", |h| {
            h.condition("second", "AppServicesReady")
                .filter(|c| c.1 == "AppServiceConflict")
        })
        .await;
    assert!(message.contains("AppServiceLink web"), "{message}");

    // The first link respelling its target is the same site: nothing restored, nothing rewritten.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        &json!({"spec": {"appServices": {"targets": [
            {"subscriptionId": SUB, "resourceGroup": "rg-web", "name": "contoso-web"}
        ]}}})
        .to_string(),
    ]);
    resyncs(&h, 4).await;
    assert_eq!(dns_server(&h).as_deref(), Some("10.240.0.53"));
    assert_eq!(
        app_settings_puts(&h),
        1,
        "the site was written once: {:?}",
        h.azure()
            .writes()
            .iter()
            .map(|r| format!("{} {} {:?}", r.method, r.path, r.body))
            .collect::<Vec<_>>()
    );
    let entry = h.link("web").unwrap()["status"]["appServices"][0].clone();
    assert_eq!(
        entry["previous"],
        json!({"WEBSITE_DNS_SERVER": ""}),
        "the restore record survived the respelling: {entry}"
    );
    h.kubectl_ok(&["delete", "asl", "second", "--timeout=30s"]);
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert_eq!(
        h.azure().app_settings(&site()).unwrap(),
        customer_settings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_link_never_keeps_an_app_service_from_a_valid_one() {
    let h = with_site("3600").await;
    let mut crd: Value = serde_norway::from_str(crate::harness::CRD).unwrap();
    crate::harness::strip_validations(&mut crd);
    h.apply(&serde_norway::to_string(&crd).unwrap());
    // Older, and first by name: it would keep the site if invalid links counted.
    h.apply(&link(
        "a-invalid",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "\"Not A Zone\"",
        "{}",
        &targets(&[("rg-web", "contoso-web")]),
    ));
    h.eventually("InvalidSpec", |h| {
        h.condition("a-invalid", "Ready")
            .filter(|c| c.1 == "InvalidSpec")
    })
    .await;
    h.apply(&link(
        "web",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "mydomain.local",
        "{staticIP: 10.240.0.53}",
        &targets(&[("rg-web", "contoso-web")]),
    ));
    let (_, reason, message) = h
        .eventually("web's App Services settled", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.1 == "InSync" || c.1 == "AppServiceConflict")
        })
        .await;
    assert_eq!(reason, "InSync", "{message}");
    assert_eq!(dns_server(&h).as_deref(), Some("10.240.0.53"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_dns_configuration_overrides_the_app_setting_is_not_restarted_for_nothing() {
    let h = with_site("2").await;
    h.azure()
        .set_dns_configuration(&site(), json!({"dnsServers": ["10.9.9.9"]}))
        .unwrap();
    h.apply(&link(
        "web",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "mydomain.local",
        "{staticIP: 10.240.0.53}",
        &targets(&[("rg-web", "contoso-web")]),
    ));
    let (_, _, message) = h
        .eventually("the override reported", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.1 == "SiteDnsConfigurationOverrides")
        })
        .await;
    assert!(message.contains("dnsConfiguration"), "{message}");
    resyncs(&h, 2).await;
    assert_eq!(
        app_settings_puts(&h),
        0,
        "an app-settings write the site ignores only restarts the app"
    );
    assert_eq!(
        h.azure().app_settings(&site()).unwrap(),
        customer_settings()
    );

    // Once the site property is cleared, the setting is written, once.
    h.azure().set_dns_configuration(&site(), json!({})).unwrap();
    h.eventually("in sync", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(dns_server(&h).as_deref(), Some("10.240.0.53"));
    assert_eq!(app_settings_puts(&h), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operators_own_dns_settings_are_restored_from_status() {
    let h = with_site("3600").await;
    h.apply(&link(
        "web",
        r#"{matchLabels: {appservicelink.io/expose: "true"}}"#,
        "mydomain.local",
        "{staticIP: 10.240.0.53}",
        &targets(&[("rg-web", "contoso-web")]),
    ));
    h.eventually("AppServicesReady=True", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
    // Someone with access to the link's status adds a setting to the restore record.
    let mut entries = h.link("web").unwrap()["status"]["appServices"].clone();
    entries[0]["previous"]["WEBSITE_RUN_FROM_PACKAGE"] = json!("https://evil.example/app.zip");
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        &json!({"status": {"appServices": entries}}).to_string(),
    ]);
    assert_eq!(
        h.link("web").unwrap()["status"]["appServices"][0]["previous"]["WEBSITE_RUN_FROM_PACKAGE"],
        "https://evil.example/app.zip"
    );
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert_eq!(
        h.azure().app_settings(&site()).unwrap(),
        customer_settings(),
        "WEBSITE_DNS_SERVER removed as it was absent; nothing else written"
    );
}
