use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{describe, Harness};

const INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
const SUBNET: &str = "service.beta.kubernetes.io/azure-load-balancer-internal-subnet";
const IPV4: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
const OVERRIDE_KEY: &str = "appservicelink.override";

fn link_yaml(
    name: &str,
    expose: &str,
    zone: &str,
    extra_dns: &str,
    extra_services: &str,
) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "{expose}"}}
{extra_services}  dns:
    zone: {zone}
    service:
{extra_dns}      name: appservicelink-dns
"#
    )
}

fn web_link() -> String {
    link_yaml(
        "web",
        "true",
        "mydomain.local",
        "      staticIP: 10.240.0.53\n",
        "    subnet: ilb-subnet\n",
    )
}

fn annotations(svc: &Value) -> Value {
    svc["metadata"]["annotations"].clone()
}

fn svc_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or_default()
}

/// Writes the operator made to one object's path (any subresource).
fn writes_to(h: &Harness, path_suffix: &str) -> usize {
    h.operator_writes()
        .iter()
        .filter(|r| r.path.ends_with(path_suffix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_converges_to_ready_and_then_writes_nothing() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    let api_before = h.service("shop", "api").unwrap();
    h.apply(&web_link());
    h.wait_ready("web").await;

    // The selected Services are internal load balancers in the subnet; nothing else of theirs changed.
    for name in ["api", "orders"] {
        let svc = h.service("shop", name).unwrap();
        assert_eq!(svc_type(&svc), "LoadBalancer", "{name}");
        assert_eq!(annotations(&svc)[INTERNAL], "true");
        assert_eq!(annotations(&svc)[SUBNET], "ilb-subnet");
    }
    let api = h.service("shop", "api").unwrap();
    assert_eq!(annotations(&api)["contoso.com/owner"], "team-shop");
    assert_eq!(api["spec"]["selector"], api_before["spec"]["selector"]);
    assert_eq!(api["spec"]["clusterIP"], api_before["spec"]["clusterIP"]);

    // The DNS Service fronts CoreDNS on the static IP, both protocols.
    let dns = h.service("kube-system", "appservicelink-dns").unwrap();
    assert_eq!(dns["spec"]["selector"], json!({"k8s-app": "kube-dns"}));
    let mut ports: Vec<String> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap()))
        .collect();
    ports.sort();
    assert_eq!(ports, ["53/TCP", "53/UDP"]);
    assert_eq!(annotations(&dns)[IPV4], "10.240.0.53");
    assert_eq!(annotations(&dns)[INTERNAL], "true");

    // The override holds one directive; the other keys survived byte for byte.
    let data = h.coredns_custom()["data"].clone();
    // CoreDNS v1.11.3 knows k8s_external's fallthrough.
    assert_eq!(
        data[OVERRIDE_KEY],
        "k8s_external mydomain.local {\n    fallthrough\n}\n"
    );
    assert_eq!(data["log.override"], "log\n");
    assert_eq!(
        data["internal.server"],
        "internal.contoso:53 {\n    forward . 10.1.0.4\n}\n"
    );
    // CoreDNS was rolled once for it.
    let coredns = h
        .sim
        .get("apps/v1", "Deployment", Some("kube-system"), "coredns")
        .unwrap();
    assert!(coredns["spec"]["template"]["metadata"]["annotations"]
        ["appservicelink.io/coredns-override-hash"]
        .is_string());
    assert_eq!(writes_to(&h, "/deployments/coredns"), 1);

    // Status: the DNS server, the linked Services with IP and FQDN, the skipped ones.
    let status = h.link("web").unwrap()["status"].clone();
    assert_eq!(status["dnsServerIP"], "10.240.0.53");
    assert_eq!(status["linkedServiceCount"], 2);
    let api_entry = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap()
        .clone();
    assert_eq!(api_entry["fqdn"], "api.shop.mydomain.local");
    assert_eq!(api_entry["state"], "Linked");
    assert!(api_entry["internalIP"]
        .as_str()
        .unwrap()
        .starts_with("10.240."));
    assert_eq!(
        status["observedGeneration"],
        h.link("web").unwrap()["metadata"]["generation"]
    );

    // kubectl shows the printer columns.
    let table = h.kubectl_ok(&["get", "asl"]);
    assert!(
        table.contains("DNS SERVER") && table.contains("10.240.0.53") && table.contains("True"),
        "{table}"
    );

    // A reconcile of a converged link (woken by a change to an unrelated key) writes nothing at all.
    let before = h.mark();
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        // (Not a second plugin such as `errors`: the AKS Corefile has one, and CoreDNS allows one.)
        r#"{"data":{"log.override":"log {\n    class denial error\n}\n"}}"#,
    ]);
    h.settle_after(&before).await;
    let writes: Vec<_> = h
        .operator_requests()
        .into_iter()
        .skip(before.requests)
        .filter(|r| r.is_write())
        .collect();
    assert!(
        writes.is_empty(),
        "a converged reconcile wrote: {:?}",
        describe(&writes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dns_ip_reaches_status_and_the_old_service_settings_go() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"service":{"staticIP":"10.240.0.99"}}}}"#,
    ]);
    h.eventually("the new DNS IP in status", |h| {
        (h.link("web")?["status"]["dnsServerIP"] == "10.240.0.99").then_some(())
    })
    .await;
    let dns = h.service("kube-system", "appservicelink-dns").unwrap();
    assert_eq!(annotations(&dns)[IPV4], "10.240.0.99");
    h.wait_ready("web").await;
    // Dropping the static IP keeps the address, now pinned (recorded on the link)...
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/dns/service/staticIP"}]"#,
    ]);
    h.eventually("the address pinned on the link", |h| {
        let link = h.link("web")?;
        (link["metadata"]["annotations"]["appservicelink.io/pinned-dns-ip"]
            == "kube-system/appservicelink-dns=10.240.0.99")
            .then_some(())
    })
    .await;
    let dns = h.service("kube-system", "appservicelink-dns").unwrap();
    assert_eq!(annotations(&dns)[IPV4], "10.240.0.99");
    // ...and opting out of the pin lets Azure choose, and removes the annotation.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"service":{"pinAddress":false}}}}"#,
    ]);
    h.eventually("the static IP annotation removed", |h| {
        let dns = h.service("kube-system", "appservicelink-dns")?;
        annotations(&dns).get(IPV4).is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_label_restores_the_service_exactly() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    let before = h.service("shop", "api").unwrap();
    h.apply(&web_link());
    h.wait_ready("web").await;
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "api",
        "appservicelink.io/expose-",
    ]);
    let after = h
        .eventually("api restored to ClusterIP", |h| {
            h.service("shop", "api")
                .filter(|s| svc_type(s) == "ClusterIP")
        })
        .await;
    assert_eq!(
        annotations(&after),
        annotations(&before),
        "annotations restored exactly"
    );
    assert_eq!(after["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    assert!(
        after["spec"]["ports"][0].get("nodePort").is_none(),
        "nodePorts cleared: {}",
        after["spec"]
    );
    assert!(after["status"]["loadBalancer"].get("ingress").is_none());
    h.eventually("status lists only orders", |h| {
        let names: Vec<Value> = h.link("web")?["status"]["services"]
            .as_array()?
            .iter()
            .map(|s| s["name"].clone())
            .collect();
        (names == vec![json!("orders")]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_link_undoes_everything() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    let before = h.service("shop", "api").unwrap();
    h.apply(&web_link());
    h.wait_ready("web").await;
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert!(h.link("web").is_none(), "the finalizer was released");
    for name in ["api", "orders"] {
        let svc = h.service("shop", name).unwrap();
        assert_eq!(svc_type(&svc), "ClusterIP", "{name} restored");
    }
    assert_eq!(
        annotations(&h.service("shop", "api").unwrap()),
        annotations(&before)
    );
    assert!(
        h.service("kube-system", "appservicelink-dns").is_none(),
        "DNS Service deleted"
    );
    let data = h.coredns_custom()["data"].clone();
    assert!(data.get(OVERRIDE_KEY).is_none(), "override removed: {data}");
    assert_eq!(data["log.override"], "log\n");
    assert_eq!(
        data["internal.server"],
        "internal.contoso:53 {\n    forward . 10.1.0.4\n}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_share_one_k8s_external_line_and_one_dns_service() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.apply(&link_yaml(
        "partners",
        "public",
        "partners.local",
        "      staticIP: 10.240.0.53\n",
        "    subnet: ilb-subnet\n    allowPublicLoadBalancerConversion: true\n",
    ));
    h.wait_ready("web").await;
    h.wait_ready("partners").await;
    let data = h.coredns_custom()["data"].clone();
    assert_eq!(
        data[OVERRIDE_KEY],
        "k8s_external mydomain.local partners.local {\n    fallthrough\n}\n"
    );
    assert_eq!(
        h.link("partners").unwrap()["status"]["dnsServerIP"],
        "10.240.0.53"
    );
    // The public LoadBalancer was converted because that link opted in.
    let storefront = h.service("shop", "storefront").unwrap();
    assert_eq!(annotations(&storefront)[INTERNAL], "true");
    // Its status entry warns that unlinking cannot bring its public IP back.
    let entries = h.link("partners").unwrap()["status"]["services"].clone();
    let entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "storefront")
        .unwrap()
        .clone();
    assert_eq!(entry["state"], "Linked", "{entry}");
    assert!(
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("new public IP")),
        "{entry}"
    );
    // Deleting one link keeps the shared DNS Service and the other zone.
    h.kubectl_ok(&["delete", "asl", "partners", "--timeout=30s"]);
    assert_eq!(
        h.coredns_custom()["data"][OVERRIDE_KEY],
        "k8s_external mydomain.local {\n    fallthrough\n}\n"
    );
    assert!(h.service("kube-system", "appservicelink-dns").is_some());
    let storefront = h.service("shop", "storefront").unwrap();
    assert_eq!(svc_type(&storefront), "LoadBalancer");
    assert!(
        annotations(&storefront).get(INTERNAL).is_none(),
        "back to public: {storefront}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_k8s_external_is_a_conflict_and_nothing_is_written() {
    let h = Harness::start().await;
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"legacy.override":"k8s_external old.local\n"}}"#,
    ]);
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    let (status, _, message) = h
        .eventually("CoreDNSOverrideReady=False", |h| {
            h.condition("web", "CoreDNSOverrideReady")
                .filter(|c| c.1 == "ForeignK8sExternal")
        })
        .await;
    assert_eq!(status, "False");
    assert!(message.contains("legacy.override"), "{message}");
    assert_eq!(writes_to(&h, "/configmaps/coredns-custom"), 0);
    assert_eq!(writes_to(&h, "/deployments/coredns"), 0);
    assert_eq!(h.condition("web", "Stalled").unwrap().0, "True");
    let events = h.kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "json"]);
    assert!(
        events.contains("ForeignK8sExternal"),
        "a Warning event names the conflict: {events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_headless_services_are_skipped_with_a_reason() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link_yaml("public", "public", "a.local", "", ""));
    h.apply(&link_yaml("headless", "headless", "b.local", "", ""));
    let entry = |h: &Harness, link: &str| -> Option<Value> {
        h.link(link)?["status"]["services"]
            .as_array()?
            .first()
            .cloned()
    };
    let public = h
        .eventually("storefront skipped", |h| {
            entry(h, "public").filter(|e| e["state"] == "Skipped")
        })
        .await;
    assert!(
        public["message"]
            .as_str()
            .unwrap()
            .contains("allowPublicLoadBalancerConversion"),
        "{public}"
    );
    let headless = h
        .eventually("db skipped", |h| {
            entry(h, "headless").filter(|e| e["state"] == "Skipped")
        })
        .await;
    assert!(
        headless["message"].as_str().unwrap().contains("headless"),
        "{headless}"
    );
    assert_eq!(writes_to(&h, "/services/storefront"), 0);
    assert_eq!(writes_to(&h, "/services/db"), 0);
    let storefront = h.service("shop", "storefront").unwrap();
    assert!(annotations(&storefront).get(INTERNAL).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_wanting_different_subnets_do_not_flap() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    h.apply(&link_yaml(
        "rival",
        "true",
        "rival.local",
        "      staticIP: 10.240.0.53\n",
        "    subnet: other-subnet\n",
    ));
    let (_, reason, _) = h
        .eventually("rival reports the conflict", |h| {
            h.condition("rival", "ServicesReady")
                .filter(|c| c.0 == "False")
        })
        .await;
    assert_eq!(reason, "ServiceConflict");
    let before = h.mark();
    h.kubectl_ok(&["-n", "shop", "annotate", "service", "api", "touched=1"]);
    h.settle_after(&before).await;
    let api = h.service("shop", "api").unwrap();
    assert_eq!(
        annotations(&api)[SUBNET],
        "ilb-subnet",
        "the first link keeps it"
    );
    assert_eq!(annotations(&api)["appservicelink.io/link"], "web");
    let writes: Vec<_> = h
        .operator_requests()
        .into_iter()
        .skip(before.requests)
        .filter(|r| r.is_write() && r.path.contains("/services/"))
        .collect();
    assert!(
        writes.is_empty(),
        "no Service writes: {:?}",
        describe(&writes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_zone_is_refused_at_admission_with_a_clear_message() {
    let h = Harness::start().await;
    let out = h.kubectl(
        &["apply", "-f", "-"],
        Some(&link_yaml("bad", "true", "\"Bad Zone\"", "", "")),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.dns.zone") && stderr.contains("lower-case DNS name"),
        "{stderr}"
    );
    assert!(h.link("bad").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_zone_that_slipped_past_admission_never_reaches_the_corefile() {
    let h = Harness::start().await;
    // An old CRD without the CEL rules lets the bad zone in.
    let mut crd: Value = serde_norway::from_str(crate::harness::CRD).unwrap();
    crate::harness::strip_validations(&mut crd);
    h.apply(&serde_norway::to_string(&crd).unwrap());
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link_yaml(
        "bad",
        "true",
        "\"evil.local\\n}\\nforward . 8.8.8.8\"",
        "",
        "",
    ));
    let (status, _reason, message) = h
        .eventually("InvalidSpec", |h| {
            h.condition("bad", "Ready").filter(|c| c.1 == "InvalidSpec")
        })
        .await;
    assert_eq!(status, "False");
    assert!(message.contains("spec.dns.zone"), "{message}");
    assert_eq!(writes_to(&h, "/configmaps/coredns-custom"), 0);
    assert!(h.coredns_custom()["data"].get(OVERRIDE_KEY).is_none());
    assert_eq!(
        writes_to(&h, "/services/api"),
        0,
        "nothing else was touched either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_mid_way_converges_without_duplicate_writes() {
    let mut h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.eventually("the first Service conversion", |h| {
        (writes_to(h, "/services/api") + writes_to(h, "/services/orders") > 0).then_some(())
    })
    .await;
    h.kill_operator();
    h.start_operator();
    h.wait_ready("web").await;
    let before = h.mark();
    h.kubectl_ok(&["-n", "shop", "annotate", "service", "orders", "touched=1"]);
    h.settle_after(&before).await;
    for path in [
        "/services/api",
        "/services/orders",
        "/services/appservicelink-dns",
        "/deployments/coredns",
    ] {
        assert_eq!(
            writes_to(&h, path),
            1,
            "{path} written once: {:?}",
            describe(&h.operator_writes())
        );
    }
    // The override, then the record that CoreDNS was rolled for it.
    assert_eq!(writes_to(&h, "/configmaps/coredns-custom"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverts_far_apart_like_helm_upgrades_never_end_the_link() {
    let mut h = Harness::cluster().await;
    h.operator_args(&["--revert-window-seconds", "1"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    // `helm upgrade` re-applies the chart's `spec.type: ClusterIP` on every release.
    for release in 1..=5 {
        h.kubectl_ok(&[
            "-n",
            "shop",
            "patch",
            "service",
            "api",
            "--type",
            "merge",
            "--field-manager",
            "helm",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ]);
        h.eventually(&format!("release {release} re-applied"), |h| {
            let svc = h.service("shop", "api")?;
            (svc_type(&svc) == "LoadBalancer").then_some(())
        })
        .await;
        // The next release comes later than the revert window.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_ne!(
        h.condition("web", "ServicesReady").unwrap().1,
        "ServiceConflict",
        "five upgrades far apart ended the link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitops_tool_reverting_the_conversion_is_named_and_not_fought_forever() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    let revert = || {
        h.kubectl_ok(&[
            "-n",
            "shop",
            "patch",
            "service",
            "api",
            "--type",
            "merge",
            "--field-manager",
            "argocd-controller",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ]);
    };
    for attempt in 1..=3 {
        revert();
        h.eventually(&format!("re-apply {attempt}"), |h| {
            let svc = h.service("shop", "api")?;
            (svc_type(&svc) == "LoadBalancer").then_some(())
        })
        .await;
    }
    revert();
    let (status, _reason, message) = h
        .eventually("the fight reported", |h| {
            h.condition("web", "ServicesReady")
                .filter(|c| c.1 == "ServiceConflict")
        })
        .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("argocd-controller"),
        "the condition names the manager: {message}"
    );
    let entry = h.link("web").unwrap()["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .unwrap()
        .clone();
    assert!(
        entry["message"]
            .as_str()
            .unwrap()
            .contains("argocd-controller"),
        "{entry} / {message}"
    );
    let before = h.mark();
    h.kubectl_ok(&["-n", "shop", "annotate", "service", "api", "touched=1"]);
    h.settle_after(&before).await;
    assert_eq!(
        svc_type(&h.service("shop", "api").unwrap()),
        "ClusterIP",
        "the operator stopped fighting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_coredns_custom_is_created_and_restarts_can_be_switched_off() {
    let mut h = Harness::cluster().await;
    h.kubectl_ok(&["-n", "kube-system", "delete", "configmap", "coredns-custom"]);
    h.operator_args(&["--restart-coredns=false"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    assert_eq!(
        h.coredns_custom()["data"],
        json!({OVERRIDE_KEY: "k8s_external mydomain.local {\n    fallthrough\n}\n"})
    );
    assert_eq!(writes_to(&h, "/deployments/coredns"), 0, "restarts are off");
    let (_, _, message) = h.condition("web", "CoreDNSOverrideReady").unwrap();
    assert!(message.contains("reload plugin"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coredns_custom_deleted_while_running_is_written_again() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    // Someone deletes it (a GitOps prune, say): the operator's own last write of it must not make
    // it believe the ConfigMap is still there.
    h.kubectl_ok(&["-n", "kube-system", "delete", "configmap", "coredns-custom"]);
    h.eventually("coredns-custom written again", |h| {
        h.sim
            .get("v1", "ConfigMap", Some("kube-system"), "coredns-custom")
            .filter(|cm| {
                cm["data"][OVERRIDE_KEY] == "k8s_external mydomain.local {\n    fallthrough\n}\n"
            })
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coredns_deployment_name_is_configurable() {
    let mut h = Harness::cluster().await;
    h.outside_chart_defaults(
        "CoreDNS Deployment coredns-k3s: the chart value controller.corednsDeployment",
    );
    h.apply(
        &include_str!("fixtures/kube-system.yaml")
            .replace("name: coredns\n", "name: coredns-k3s\n"),
    );
    h.operator_args(&["--coredns-deployment", "coredns-k3s"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    assert_eq!(writes_to(&h, "/deployments/coredns-k3s"), 1);
    assert_eq!(writes_to(&h, "/deployments/coredns"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deleted_mid_way_is_not_an_error() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    h.kubectl_ok(&["-n", "shop", "delete", "service", "orders"]);
    h.eventually("status drops the deleted Service", |h| {
        (h.link("web")?["status"]["linkedServiceCount"] == 1).then_some(())
    })
    .await;
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert!(h.service("shop", "orders").is_none(), "never re-created");
    assert_eq!(svc_type(&h.service("shop", "api").unwrap()), "ClusterIP");
    assert!(
        !h.operator_log().contains("reconcile failed"),
        "{}",
        h.operator_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_announces_every_service_a_reconcile_converted() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&web_link());
    h.wait_ready("web").await;
    let converted: Vec<Value> = h
        .sim
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["reason"] == "ServiceConverted")
        .collect();
    assert_eq!(converted.len(), 1, "{converted:?}");
    assert_eq!(
        converted[0]["note"],
        "2 Services are now internal load balancers: shop/api, shop/orders"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_load_balancer_goes_over_only_to_a_link_that_opted_in() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    // "partners" may convert public load balancers; "cautious" selects the same one but may not.
    h.apply(&link_yaml(
        "partners",
        "public",
        "partners.local",
        "      staticIP: 10.240.0.53\n",
        "    subnet: ilb-subnet\n    allowPublicLoadBalancerConversion: true\n",
    ));
    h.wait_ready("partners").await;
    h.apply(&link_yaml(
        "cautious",
        "public",
        "cautious.local",
        "      staticIP: 10.240.0.53\n",
        "    subnet: ilb-subnet\n",
    ));
    assert_eq!(
        annotations(&h.service("shop", "storefront").unwrap())[INTERNAL],
        "true"
    );
    // When the link that opted in goes, the Service goes back to public rather than staying
    // internal for a link that never agreed to convert it.
    h.kubectl_ok(&["delete", "asl", "partners", "--timeout=30s"]);
    let storefront = h
        .eventually("storefront public again", |h| {
            h.service("shop", "storefront")
                .filter(|s| annotations(s).get(INTERNAL).is_none())
        })
        .await;
    assert_eq!(svc_type(&storefront), "LoadBalancer");
    let entry = h
        .eventually("cautious reports it skipped", |h| {
            h.link("cautious")?["status"]["services"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == "storefront" && e["state"] == "Skipped")
                .cloned()
        })
        .await;
    assert!(
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowPublicLoadBalancerConversion")),
        "{entry}"
    );
}
