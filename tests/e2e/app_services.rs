//! The App Service duty end to end: the real operator, the simulated apiserver, and the simulated
//! ARM + token endpoint over HTTPS with a test CA the operator is told to trust.

use std::collections::BTreeMap;
use std::time::Duration;

use azure_sim::{Fault, FaultKind, SiteId};
use serde_json::{json, Value};

use crate::harness::Harness;

const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000001";

fn site(name: &str, slot: Option<&str>) -> SiteId {
    SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: name.into(),
        slot: slot.map(str::to_string),
    }
}

fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// App settings a customer already has, including awkward values.
fn foreign_settings() -> BTreeMap<String, String> {
    settings(&[
        (
            "ConnectionStrings__Db",
            "Server=tcp:db.contoso.internal,1433;Password=\"p@ss w0rd;ä\"",
        ),
        ("WEBSITE_RUN_FROM_PACKAGE", "1"),
        ("EMPTY_ONE", ""),
    ])
}

fn link(targets: &str, mode: &str, static_ip: &str) -> String {
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
    service:
      staticIP: {static_ip}
  appServices:
    dnsMode: {mode}
    targets:
{targets}"#
    )
}

fn target(name: &str, slot: Option<&str>) -> String {
    let slot = slot.map(|s| format!(", slot: {s}")).unwrap_or_default();
    format!("      - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: {name}{slot}}}\n")
}

/// ARM writes so far: PUT app settings and PATCH site.
fn arm_writes(h: &Harness) -> Vec<(String, String)> {
    h.azure()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" || r.method == "PATCH")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect()
}

async fn started(sites: &[SiteId], resync_seconds: &str) -> Harness {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    for s in sites {
        h.azure().add_site(s.clone(), foreign_settings());
    }
    h.operator_args(&["--resync-seconds", resync_seconds]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h
}

async fn app_services_ready(h: &Harness) -> Value {
    h.eventually("AppServicesReady=True", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
    h.link("web").unwrap()["status"]["appServices"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_ip_reaches_the_app_service_once_with_every_other_setting_intact() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "2").await;
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    let status = app_services_ready(&h).await;
    let now = h.azure().app_settings(&web).unwrap();
    assert_eq!(now["WEBSITE_DNS_SERVER"], "10.240.0.53");
    for (key, value) in foreign_settings() {
        assert_eq!(now[&key], value, "{key} survived byte for byte");
    }
    assert_eq!(
        arm_writes(&h).len(),
        1,
        "exactly one write: {:?}",
        arm_writes(&h)
    );
    assert_eq!(status[0]["inSync"], true);
    assert_eq!(status[0]["dnsServer"], "10.240.0.53");
    assert!(status[0]["resourceId"]
        .as_str()
        .unwrap()
        .ends_with("/sites/contoso-web"));
    assert_eq!(status[0]["previous"]["WEBSITE_DNS_SERVER"], "");

    // Resyncs of a converged link read, and write nothing.
    let reads = h.azure().requests().len();
    h.eventually("two more resyncs", |h| {
        (h.azure().requests().len() >= reads + 4).then_some(())
    })
    .await;
    assert_eq!(
        arm_writes(&h).len(),
        1,
        "converged resyncs wrote: {:?}",
        arm_writes(&h)
    );

    // A new DNS IP reaches the App Service with one more write.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"service":{"staticIP":"10.240.0.54"}}}}"#,
    ]);
    h.eventually("the new IP in the app settings", |h| {
        (h.azure().app_settings(&web)?.get("WEBSITE_DNS_SERVER")? == "10.240.0.54").then_some(())
    })
    .await;
    h.eventually("status in sync on the new IP", |h| {
        let s = h.link("web")?["status"]["appServices"][0].clone();
        (s["dnsServer"] == "10.240.0.54" && s["inSync"] == true).then_some(())
    })
    .await;
    assert_eq!(arm_writes(&h).len(), 2);

    // Drift made in the portal is repaired at the next resync; the customer's settings stay.
    let mut drifted = h.azure().app_settings(&web).unwrap();
    drifted.insert("WEBSITE_DNS_SERVER".into(), "8.8.8.8".into());
    drifted.insert("ADDED_IN_PORTAL".into(), "yes".into());
    h.azure().set_app_settings(&web, drifted).unwrap();
    h.eventually("drift repaired", |h| {
        (h.azure().app_settings(&web)?.get("WEBSITE_DNS_SERVER")? == "10.240.0.54").then_some(())
    })
    .await;
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["ADDED_IN_PORTAL"],
        "yes"
    );

    // Deleting the link restores the previous state: the setting was absent, so it is removed.
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    let restored = h.azure().app_settings(&web).unwrap();
    assert!(!restored.contains_key("WEBSITE_DNS_SERVER"), "{restored:?}");
    assert_eq!(restored["ADDED_IN_PORTAL"], "yes");
    for (key, value) in foreign_settings() {
        assert_eq!(restored[&key], value);
    }

    // No token ever reached the logs, the status or the Events.
    let tokens = h.azure().issued_tokens();
    assert!(!tokens.is_empty());
    let events = h.kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "json"]);
    for token in tokens {
        assert!(
            !h.operator_log().contains(&token),
            "a token is in the operator's log"
        );
        assert!(!events.contains(&token), "a token is in an Event");
    }
    assert!(
        !h.operator_log().contains("sim-client-secret"),
        "the client secret is in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_value_and_an_alternate_server_are_restored_on_deletion() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "3600").await;
    let mut before = foreign_settings();
    before.insert("WEBSITE_DNS_SERVER".into(), "168.63.129.16".into());
    h.azure().set_app_settings(&web, before.clone()).unwrap();
    let yaml = link(&target("contoso-web", None), "AppSettings", "10.240.0.53").replace(
        "    dnsMode: AppSettings\n",
        "    dnsMode: AppSettings\n    alternateDnsServer: 168.63.129.16\n",
    );
    h.apply(&yaml);
    app_services_ready(&h).await;
    let now = h.azure().app_settings(&web).unwrap();
    assert_eq!(now["WEBSITE_DNS_SERVER"], "10.240.0.53");
    assert_eq!(now["WEBSITE_DNS_ALT_SERVER"], "168.63.129.16");
    assert!(!now.contains_key("WEBSITE_ALT_DNS_SERVER"));
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert_eq!(
        h.azure().app_settings(&web).unwrap(),
        before,
        "restored exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_dns_configuration_that_overrides_the_app_setting_is_reported() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "3600").await;
    h.azure()
        .set_dns_configuration(&web, json!({"dnsServers": ["10.9.9.9"]}))
        .unwrap();
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    let (status, _, message) = h
        .eventually("the override reported", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.0 == "False" && c.1 == "SiteDnsConfigurationOverrides")
        })
        .await;
    assert_eq!(status, "False");
    assert!(message.contains("dnsConfiguration"), "{message}");
    let entry = h.link("web").unwrap()["status"]["appServices"][0].clone();
    assert_eq!(entry["inSync"], false);
    assert!(
        entry["message"]
            .as_str()
            .unwrap()
            .contains("SiteDnsConfiguration"),
        "the fix is named: {entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_dns_configuration_mode_patches_the_site_and_a_slot() {
    let web = site("contoso-web", None);
    let staging = site("contoso-web", Some("staging"));
    let h = started(&[web.clone(), staging.clone()], "3600").await;
    let targets = format!(
        "{}{}",
        target("contoso-web", None),
        target("contoso-web", Some("staging"))
    );
    h.apply(&link(&targets, "SiteDnsConfiguration", "10.240.0.53"));
    let status = app_services_ready(&h).await;
    assert_eq!(status.as_array().unwrap().len(), 2);
    for s in [&web, &staging] {
        assert_eq!(
            h.azure().dns_configuration(s).unwrap()["dnsServers"],
            json!(["10.240.0.53"])
        );
        assert_eq!(
            h.azure().app_settings(s).unwrap(),
            foreign_settings(),
            "no app setting written"
        );
    }
    let writes = arm_writes(&h);
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|(m, _)| m == "PATCH"));
    assert!(writes
        .iter()
        .any(|(_, p)| p.ends_with("/sites/contoso-web/slots/staging")));
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    for s in [&web, &staging] {
        let cfg = h.azure().dns_configuration(s).unwrap_or(Value::Null);
        assert!(
            cfg["dnsServers"].as_array().is_none_or(|a| a.is_empty()),
            "restored: {cfg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_ridden_out_honouring_retry_after() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "3600").await;
    h.azure().inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/config/appsettings".into(),
        kind: FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        times: 3,
    });
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    app_services_ready(&h).await;
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
    let puts: Vec<_> = h
        .azure()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(
        puts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 429, 200]
    );
    for pair in puts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_secs(1),
            "Retry-After: 1 was not honoured: {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_is_a_clear_condition() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "3600").await;
    h.azure().inject(Fault {
        method: Some("POST".into()),
        path_contains: "/config/appsettings/list".into(),
        kind: FaultKind::Forbidden,
        times: 1000,
    });
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    let (_, reason, message) = h
        .eventually("Forbidden reported", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.1 == "Forbidden")
        })
        .await;
    assert!(
        message.contains("Microsoft.Web/sites/config/list/Action"),
        "the missing permission is named: {message}"
    );
    assert_eq!(reason, "Forbidden");
    assert!(!h
        .azure()
        .app_settings(&web)
        .unwrap()
        .contains_key("WEBSITE_DNS_SERVER"));
    assert!(arm_writes(&h).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_target_is_restored_and_retain_keeps_the_settings() {
    let web = site("contoso-web", None);
    let staging = site("contoso-web", Some("staging"));
    let h = started(&[web.clone(), staging.clone()], "3600").await;
    let both = format!(
        "{}{}",
        target("contoso-web", None),
        target("contoso-web", Some("staging"))
    );
    h.apply(&link(&both, "AppSettings", "10.240.0.53"));
    app_services_ready(&h).await;
    // The slot leaves the link: its previous state (no WEBSITE_DNS_SERVER) comes back, the site stays.
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    h.eventually("the slot restored", |h| {
        (!h.azure()
            .app_settings(&staging)?
            .contains_key("WEBSITE_DNS_SERVER"))
        .then_some(())
    })
    .await;
    h.eventually("the slot's entry dropped", |h| {
        (h.link("web")?["status"]["appServices"].as_array()?.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
    // With Retain, deleting the link leaves the App Service pointed at the cluster DNS.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"appServices":{"deletionPolicy":"Retain"}}}"#,
    ]);
    h.eventually("Retain observed", |h| {
        (h.link("web")?["status"]["observedGeneration"] == h.link("web")?["metadata"]["generation"])
            .then_some(())
    })
    .await;
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_timeouts_and_202_are_ridden_out() {
    let web = site("contoso-web", None);
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(web.clone(), foreign_settings());
    h.operator_args(&["--arm-timeout-seconds", "1"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.azure().inject(Fault {
        method: Some("POST".into()),
        path_contains: "/config/appsettings/list".into(),
        kind: FaultKind::ServerError,
        times: 2,
    });
    h.azure().inject(Fault {
        method: Some("GET".into()),
        path_contains: "/sites/contoso-web".into(),
        kind: FaultKind::Delay(Duration::from_secs(3)),
        times: 1,
    });
    h.azure().inject(Fault {
        method: Some("PUT".into()),
        path_contains: "/config/appsettings".into(),
        kind: FaultKind::Accepted,
        times: 1,
    });
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    app_services_ready(&h).await;
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
    let statuses: Vec<u16> = h.azure().requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&500) && statuses.contains(&202),
        "{statuses:?}"
    );
    assert_eq!(
        arm_writes(&h).len(),
        1,
        "the 202 write counted; no second write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_is_detected_from_the_environment() {
    let web = site("contoso-web", None);
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.use_workload_identity();
    h.azure().add_site(web.clone(), foreign_settings());
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    app_services_ready(&h).await;
    let kinds: Vec<String> = h
        .azure()
        .token_requests()
        .iter()
        .map(|t| format!("{:?}", t.credential))
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "Assertion"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_turns_invalid_keeps_what_it_must_restore() {
    let web = site("contoso-web", None);
    let h = started(std::slice::from_ref(&web), "3600").await;
    let mut crd: Value = serde_norway::from_str(crate::harness::CRD).unwrap();
    crate::harness::strip_validations(&mut crd);
    h.apply(&serde_norway::to_string(&crd).unwrap());
    let mut before = foreign_settings();
    before.insert("WEBSITE_DNS_SERVER".into(), "168.63.129.16".into());
    h.azure().set_app_settings(&web, before.clone()).unwrap();
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    app_services_ready(&h).await;
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"zone":"Not A Zone"}}}"#,
    ]);
    h.eventually("InvalidSpec", |h| {
        h.condition("web", "Ready").filter(|c| c.1 == "InvalidSpec")
    })
    .await;
    let entry = h.link("web").unwrap()["status"]["appServices"][0].clone();
    assert_eq!(
        entry["previous"]["WEBSITE_DNS_SERVER"], "168.63.129.16",
        "{entry}"
    );
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    assert_eq!(
        h.azure().app_settings(&web).unwrap(),
        before,
        "restored from the kept record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_naming_one_app_service_do_not_fight_over_it() {
    let web = site("contoso-web", None);
    let mut h = started(std::slice::from_ref(&web), "2").await;
    h.outside_chart_defaults("DNS Service second-dns: the chart value rbac.dnsServiceNames");
    h.apply(&link(
        &target("contoso-web", None),
        "AppSettings",
        "10.240.0.53",
    ));
    app_services_ready(&h).await;
    let second = link(&target("contoso-web", None), "AppSettings", "10.240.0.77")
        .replace("name: web\n", "name: second\n")
        .replace("    service:\n", "    service:\n      name: second-dns\n");
    h.apply(&second);
    let (_, _, message) = h
        .eventually("the second link reports the conflict", |h| {
            h.condition("second", "AppServicesReady")
                .filter(|c| c.1 == "AppServiceConflict")
        })
        .await;
    assert!(message.contains("AppServiceLink web"), "{message}");
    // Several resyncs later, the App Service still has the first link's IP and was written once.
    let reads = h.azure().requests().len();
    h.eventually("more resyncs", |h| {
        (h.azure().requests().len() >= reads + 6).then_some(())
    })
    .await;
    assert_eq!(
        h.azure().app_settings(&web).unwrap()["WEBSITE_DNS_SERVER"],
        "10.240.0.53"
    );
    assert_eq!(arm_writes(&h).len(), 1, "{:?}", arm_writes(&h));
}

/// The ARM requests from number `from` on, by site or slot (`sites/{name}[/slots/{slot}]`), each as
/// "status METHOD [/config/...]", in order.
fn calls_since(h: &Harness, from: usize) -> BTreeMap<String, Vec<String>> {
    let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in h.azure().requests().into_iter().skip(from) {
        let path = r
            .path
            .split_once("/providers/Microsoft.Web/")
            .map_or(r.path.as_str(), |(_, rest)| rest);
        let (site, config) = path
            .find("/config/")
            .map_or((path, ""), |i| path.split_at(i));
        let call = format!("{} {} {config}", r.status, r.method);
        calls
            .entry(site.to_string())
            .or_default()
            .push(call.trim_end().to_string());
    }
    calls
}

/// Moves the DNS IP three times and checks that each move cost every target exactly `expected`:
/// one request that reads the current value and one that writes the new one, nothing more.
async fn each_ip_change_costs_one_read_and_one_write(
    mode: &str,
    targets: &[(&str, Option<&str>)],
    expected: [&str; 2],
    value: impl Fn(&Harness, &SiteId) -> Option<String>,
) {
    let sites: Vec<SiteId> = targets.iter().map(|(n, s)| site(n, *s)).collect();
    let yaml: String = targets.iter().map(|(n, s)| target(n, *s)).collect();
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    for s in &sites {
        h.azure().add_site(s.clone(), foreign_settings());
    }
    // A short write window (the guard against a flapping IP), so the test does not wait long.
    h.operator_args(&[
        "--resync-seconds",
        "3600",
        "--app-service-write-window-seconds",
        "2",
    ]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link(&yaml, mode, "10.240.0.53"));
    app_services_ready(&h).await;
    let mut from = h.azure().requests().len();
    for ip in ["10.240.0.54", "10.240.0.55", "10.240.0.56"] {
        h.apply(&link(&yaml, mode, ip));
        h.eventually(&format!("every App Service on {ip} in status"), |h| {
            let entries = h.link("web")?["status"]["appServices"].as_array()?.clone();
            (entries.len() == sites.len()
                && entries
                    .iter()
                    .all(|e| e["inSync"] == true && e["dnsServer"] == ip))
            .then_some(())
        })
        .await;
        // Whatever else the move wakes (the DNS Service's new address, the operator's own status
        // write) has time to show up in the log.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for s in &sites {
            assert_eq!(value(&h, s).as_deref(), Some(ip), "{s:?}");
        }
        let calls = calls_since(&h, from);
        assert_eq!(calls.len(), sites.len(), "{ip}: {calls:#?}");
        for (site, seq) in &calls {
            assert_eq!(seq, &expected, "{ip}, {site}: {calls:#?}");
        }
        from = h.azure().requests().len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ip_change_costs_each_app_service_one_list_and_one_put() {
    each_ip_change_costs_one_read_and_one_write(
        "AppSettings",
        &[
            ("contoso-web", None),
            ("contoso-web", Some("staging")),
            ("contoso-api", None),
        ],
        [
            "200 POST /config/appsettings/list",
            "200 PUT /config/appsettings",
        ],
        |h, s| {
            h.azure()
                .app_settings(s)?
                .get("WEBSITE_DNS_SERVER")
                .cloned()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ip_change_costs_each_site_one_get_and_one_patch() {
    each_ip_change_costs_one_read_and_one_write(
        "SiteDnsConfiguration",
        &[("contoso-web", None), ("contoso-api", None)],
        ["200 GET", "200 PATCH"],
        |h, s| {
            let servers = h.azure().dns_configuration(s)?["dnsServers"].clone();
            Some(servers.as_array()?.first()?.as_str()?.to_string())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_woken_for_its_services_makes_no_arm_call_and_drift_is_still_repaired() {
    let web = site("contoso-web", None);
    let staging = site("contoso-web", Some("staging"));
    let mut h = started(&[web.clone(), staging.clone()], "3600").await;
    let targets = format!(
        "{}{}",
        target("contoso-web", None),
        target("contoso-web", Some("staging"))
    );
    h.apply(&link(&targets, "AppSettings", "10.240.0.53"));
    app_services_ready(&h).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = h.azure().requests().len();

    // A new Service for the link: it is converted and linked, passes that have nothing to do with
    // the App Services, whose DNS IP did not change.
    h.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: payments
  namespace: shop
  labels: {appservicelink.io/expose: "true"}
spec:
  selector: {app: payments}
  ports: [{name: http, port: 80}]
"#,
    );
    h.eventually("the new Service linked", |h| {
        h.link("web")?["status"]["services"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "payments" && s["state"] == "Linked")
            .then_some(())
    })
    .await;
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "orders",
        "contoso.com/touched=yes",
    ]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        calls_since(&h, before),
        BTreeMap::new(),
        "ARM calls for App Services whose DNS IP did not change"
    );

    // Drift is still repaired at the check after a resync. Restarted, the operator knows nothing:
    // its first pass checks both App Services and writes nothing.
    h.kill_operator();
    h.operator_args(&["--resync-seconds", "3"]);
    h.start_operator();
    let lists = |h: &Harness| {
        h.azure()
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/config/appsettings/list"))
            .count()
    };
    let listed = lists(&h);
    h.eventually("the first pass after the restart", |h| {
        (lists(h) >= listed + 2).then_some(())
    })
    .await;
    assert_eq!(arm_writes(&h).len(), 2, "{:?}", arm_writes(&h));
    let mut drifted = h.azure().app_settings(&web).unwrap();
    drifted.insert("WEBSITE_DNS_SERVER".into(), "8.8.8.8".into());
    h.azure().set_app_settings(&web, drifted).unwrap();
    h.eventually("drift repaired at the next check", |h| {
        (h.azure().app_settings(&web)?.get("WEBSITE_DNS_SERVER")? == "10.240.0.53").then_some(())
    })
    .await;
    let writes = arm_writes(&h);
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(
        writes[2]
            .1
            .ends_with("/sites/contoso-web/config/appsettings"),
        "{writes:?}"
    );
}
