//! The names really resolve: the operator asks the DNS Service, at its load-balancer IP, over UDP and
//! TCP, and the simulated CoreDNS answers as CoreDNS would for the Corefile in `coredns-custom`.

use std::process::Command;

use serde_json::Value;

use crate::harness::Harness;

fn link(static_ip: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: web
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
    subnet: ilb-subnet
  dns:
    zone: mydomain.local
    service:
      name: appservicelink-dns
      staticIP: {static_ip}
"#
    )
}

/// `dig @server name [+tcp]`: (status, answers), as a person would run it.
pub fn dig(server: &str, name: &str, tcp: bool) -> (String, Vec<String>) {
    let mut args = vec![
        format!("@{server}"),
        name.to_string(),
        "A".into(),
        "+tries=1".into(),
        "+time=2".into(),
    ];
    if tcp {
        args.push("+tcp".into());
    }
    let out = Command::new("dig")
        .args(&args)
        .output()
        .expect("dig is installed (.ci/run installs dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let answers = text
        .split(";; ANSWER SECTION:")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().last().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (status, answers)
}

/// No CoreDNS pod: nothing behind the DNS Service.
fn scale_coredns_to_zero(h: &Harness) {
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "deployment",
        "coredns",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":0}}"#,
    ]);
}

fn entry(h: &Harness, name: &str) -> Value {
    h.link("web").unwrap()["status"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn converged(h: &mut Harness, args: &[&str]) -> String {
    h.operator_args(args);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    let dns_ip = h.sim.internal_range().host(53).to_string();
    h.apply(&link(&dns_ip));
    h.wait_ready("web").await;
    dns_ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_names_resolve_through_the_dns_service_and_ready_says_so() {
    let mut h = Harness::cluster_with_dns().await;
    let dns_ip = converged(&mut h, &[]).await;

    let (status, reason, message) = h.condition("web", "NamesResolve").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "NamesResolve"));
    assert!(
        message.contains(&format!("2 name(s) resolve to their internal IPs through the DNS Service {dns_ip} over UDP and TCP")),
        "{message}"
    );
    let link = h.link("web").unwrap();
    assert_eq!(link["status"]["dnsServerIP"], dns_ip.as_str());
    for name in ["api", "orders"] {
        let e = entry(&h, name);
        assert_eq!(e["nameResolves"], true, "{e}");
        assert!(e["nameError"].is_null(), "{e}");
        // What the operator saw, a person sees with dig on the DNS Service's IP, over both protocols.
        let ip = e["internalIP"].as_str().unwrap().to_string();
        assert!(h.sim.internal_range().contains(ip.parse().unwrap()), "{ip}");
        let fqdn = e["fqdn"].as_str().unwrap();
        assert_eq!(fqdn, format!("{name}.shop.mydomain.local"));
        for tcp in [false, true] {
            assert_eq!(
                dig(&dns_ip, fqdn, tcp),
                ("NOERROR".to_string(), vec![ip.clone()]),
                "{fqdn} tcp={tcp}"
            );
        }
    }
    // The zone's other names do not exist, as k8s_external answers them; nothing is forwarded.
    assert_eq!(dig(&dns_ip, "web.shop.mydomain.local", false).0, "NXDOMAIN");
    assert_eq!(
        dig(&dns_ip, "api.nowhere.mydomain.local", true).0,
        "NXDOMAIN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corefile_broken_by_another_key_fails_names_resolve_naming_each_name() {
    let mut h = Harness::cluster_with_dns().await;
    let dns_ip = converged(&mut h, &[]).await;

    // Someone adds a second `forward` to the .:53 block: CoreDNS would not start with it.
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"upstream.override":"forward . 1.1.1.1\n"}}"#,
    ]);
    let message = h
        .eventually("NamesResolve=False", |h| {
            h.condition("web", "NamesResolve")
                .filter(|c| c.0 == "False")
                .map(|c| (c.1, c.2))
        })
        .await;
    assert_eq!(message.0, "NamesDoNotResolve");
    for fqdn in ["api.shop.mydomain.local", "orders.shop.mydomain.local"] {
        assert!(
            message.1.contains(&format!(
                "{fqdn}: SERVFAIL from the DNS server (UDP and TCP)"
            )),
            "{}",
            message.1
        );
    }
    assert!(message.1.contains(&dns_ip), "{}", message.1);
    let (ready, _, summary) = h.condition("web", "Ready").unwrap();
    assert_eq!(ready, "False");
    assert!(summary.contains("NamesResolve:"), "{summary}");
    let e = entry(&h, "api");
    assert_eq!(e["nameResolves"], false);
    assert_eq!(e["nameError"], "SERVFAIL from the DNS server (UDP and TCP)");

    // Fixed: the names resolve again and the link is Ready.
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/upstream.override"}]"#,
    ]);
    h.wait_ready("web").await;
    assert_eq!(entry(&h, "api")["nameResolves"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_entry_shadowing_a_name_is_reported_with_the_ip_it_answers() {
    let mut h = Harness::cluster_with_dns().await;
    let dns_ip = converged(&mut h, &[]).await;
    let api_ip = entry(&h, "api")["internalIP"].as_str().unwrap().to_string();

    // Someone's hosts entry, which CoreDNS runs before k8s_external, answers another address.
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"legacy.override":"hosts {\n    10.9.9.9 api.shop.mydomain.local\n    fallthrough\n}\n"}}"#,
    ]);
    let message = h
        .eventually("NamesResolve=False", |h| {
            h.condition("web", "NamesResolve")
                .filter(|c| c.0 == "False")
                .map(|c| c.2)
        })
        .await;
    let wrong = format!("resolves to 10.9.9.9, expected {api_ip} (UDP and TCP)");
    assert!(
        message.starts_with(&format!(
            "1 of 2 name(s) do not resolve through the DNS Service {dns_ip}: api.shop.mydomain.local: {wrong}."
        )),
        "{message}"
    );
    assert_eq!(entry(&h, "api")["nameError"], wrong.as_str());
    assert_eq!(entry(&h, "orders")["nameResolves"], true);
    assert_eq!(
        dig(&dns_ip, "api.shop.mydomain.local", false).1,
        ["10.9.9.9"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_starts_failing_later_is_reported_at_the_resync() {
    let mut h = Harness::cluster_with_dns().await;
    converged(&mut h, &["--resync-seconds", "2"]).await;

    // CoreDNS scaled to zero: no event the operator watches, so only the resync can notice.
    scale_coredns_to_zero(&h);
    let message = h
        .eventually("NamesResolve=False after a resync", |h| {
            h.condition("web", "NamesResolve")
                .filter(|c| c.0 == "False")
                .map(|c| c.2)
        })
        .await;
    assert!(
        message.contains("api.shop.mydomain.local: ")
            && message.contains("orders.shop.mydomain.local: "),
        "{message}"
    );
    let error = entry(&h, "api")["nameError"].as_str().unwrap().to_string();
    assert!(
        error.contains("UDP") && error.contains("TCP"),
        "names the transports: {error}"
    );
    // Names that stopped resolving are a Warning Event on the link, once.
    let warnings = h.eventually("a NamesDoNotResolve Event", |h| {
        let notes: Vec<String> = h
            .sim
            .list("events.k8s.io/v1", "Event")
            .iter()
            .filter(|e| e["reason"] == "NamesDoNotResolve" && e["type"] == "Warning")
            .filter_map(|e| e["note"].as_str().map(str::to_string))
            .collect();
        (!notes.is_empty()).then_some(notes)
    });
    let warnings = warnings.await;
    assert!(
        warnings[0].contains("api.shop.mydomain.local"),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_check_off_ready_does_not_depend_on_names() {
    let mut h = Harness::cluster_with_dns().await;
    h.operator_env("APPSERVICELINK_CHECK_NAMES", "false");
    scale_coredns_to_zero(&h);
    converged(&mut h, &[]).await;
    assert_eq!(h.condition("web", "NamesResolve"), None);
    assert!(entry(&h, "api")["nameResolves"].is_null());
}
