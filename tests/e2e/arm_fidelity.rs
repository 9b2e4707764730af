//! ARM as harsh as the real one where the operator must survive it: token-bucket throttling with
//! small buckets, and a second writer (Terraform, the portal, a pipeline) that changes a site
//! between the operator's read and its write. The app-settings PUT has no If-Match, so the last
//! writer wins; these tests assert what must hold and print the request sequence they saw.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azure_sim::{
    ArmRequest, AzureSim, Bucket, ReadOp, SecondWriter, SecondWriterEdit, SiteId, Throttling,
};
use serde_json::{json, Value};

use crate::harness::{http_get, http_port, Harness};

const SUB: &str = "6f1c2b3a-0000-4000-8000-0000000000a8";
const IP: &str = "10.240.0.53";

fn site(name: &str) -> SiteId {
    SiteId::new(SUB, "rg-web", name)
}

/// Settings the customer already has, different for each site so a mix-up shows.
fn foreign(name: &str) -> BTreeMap<String, String> {
    [
        (
            "ConnectionStrings__Db",
            format!("Server=tcp:{name}.contoso.internal,1433;Password=\"p@ss w0rd;ä\""),
        ),
        ("WEBSITE_RUN_FROM_PACKAGE", "1".to_string()),
        ("EMPTY_ONE", String::new()),
        ("MULTILINE", format!("{name}\r\n  indented\t")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn with_dns(mut settings: BTreeMap<String, String>) -> BTreeMap<String, String> {
    settings.insert("WEBSITE_DNS_SERVER".into(), IP.into());
    settings
}

fn link(sites: &[SiteId], mode: &str) -> String {
    let targets: String = sites
        .iter()
        .map(|s| {
            format!(
                "      - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: {}}}\n",
                s.name
            )
        })
        .collect();
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
      staticIP: {IP}
  appServices:
    dnsMode: {mode}
    targets:
{targets}"#
    )
}

/// A cluster with the shop Services, the sites, and the operator running with this resync.
async fn started(sites: &[SiteId], resync_seconds: &str, throttling: Throttling) -> Harness {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().set_throttling(throttling).unwrap();
    for s in sites {
        h.azure().add_site(s.clone(), foreign(&s.name));
    }
    h.operator_args(&["--resync-seconds", resync_seconds]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h
}

async fn app_services_ready(h: &Harness) {
    h.eventually("AppServicesReady=True", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
}

/// Like [`Harness::eventually`] with a longer deadline: throttled convergence is slow by design.
async fn within<T>(
    h: &Harness,
    limit: Duration,
    what: &str,
    mut check: impl FnMut(&Harness) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check(h) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n--- ARM requests ---\n{}\n--- operator log ---\n{}",
            timeline(h.azure()).join("\n"),
            h.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count(sim: &AzureSim, method: &str, suffix: &str, status: u16) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix) && r.status == status)
        .count()
}

/// ARM requests and second-writer edits in the order they happened, one line each.
fn timeline(sim: &AzureSim) -> Vec<String> {
    enum Event {
        Request(ArmRequest),
        Edit(SecondWriterEdit),
    }
    let at = |e: &Event| match e {
        Event::Request(r) => r.at,
        Event::Edit(e) => e.at,
    };
    let mut events: Vec<Event> = sim
        .requests()
        .into_iter()
        .map(Event::Request)
        .chain(sim.second_writer_edits().into_iter().map(Event::Edit))
        .collect();
    events.sort_by_key(|e| at(e));
    let Some(start) = events.first().map(at) else {
        return Vec::new();
    };
    let short = |path: &str| {
        path.split_once("/providers/Microsoft.Web/")
            .map_or(path, |(_, rest)| rest)
            .to_string()
    };
    events
        .iter()
        .map(|e| {
            let ms = at(e).duration_since(start).as_millis();
            match e {
                Event::Request(r) => {
                    let mut line = format!("+{ms:>6}ms {} {} -> {}", r.method, short(&r.path), r.status);
                    if let Some(s) = r.retry_after {
                        line.push_str(&format!(" (Retry-After: {s})"));
                    }
                    if let Some(props) = r.body.as_ref().and_then(|b| b["properties"].as_object()) {
                        let keys: Vec<&str> = props.keys().map(String::as_str).collect();
                        line.push_str(&format!(" body keys {keys:?}"));
                    }
                    line
                }
                Event::Edit(e) => format!(
                    "+{ms:>6}ms   second writer edits {} after {:?}: app settings {:?}, dnsConfiguration {}",
                    e.site.name,
                    e.after,
                    e.app_settings.keys().collect::<Vec<_>>(),
                    Value::Object(e.dns_configuration.clone())
                ),
            }
        })
        .collect()
}

/// Requests the operator sent while a Retry-After it had been given was still running.
fn early_retries(requests: &[ArmRequest]) -> Vec<String> {
    let mut sorted: Vec<&ArmRequest> = requests.iter().collect();
    sorted.sort_by_key(|r| r.at);
    let mut early = Vec::new();
    for (i, r) in sorted.iter().enumerate() {
        let Some(secs) = r.retry_after else { continue };
        let until = r.at + Duration::from_secs(secs);
        for next in sorted[i + 1..].iter().take_while(|n| n.at < until) {
            early.push(format!(
                "{} {} {:?} after a 429 with Retry-After: {secs} on {} {}",
                next.method,
                next.path,
                next.at.duration_since(r.at),
                r.method,
                r.path
            ));
        }
    }
    early
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_token_buckets_throttle_the_operator_and_every_app_service_still_converges() {
    // Three tokens each for reads and writes, one more every 2 s: linking five App Services needs
    // 10 writes (the app-settings list is a POST, so a write for ARM) and 5 reads.
    let sites: Vec<SiteId> = (1..=5).map(|i| site(&format!("contoso-web-{i}"))).collect();
    let h = started(
        &sites,
        "3600",
        Throttling {
            reads: Bucket::new(3, 0.5),
            writes: Bucket::new(3, 0.5),
            deletes: Bucket::new(3, 0.5),
            global_factor: 15,
        },
    )
    .await;
    h.apply(&link(&sites, "AppSettings"));
    within(
        &h,
        Duration::from_secs(120),
        "every App Service converged",
        |h| {
            sites
                .iter()
                .all(|s| h.azure().app_settings(s) == Some(with_dns(foreign(&s.name))))
                .then_some(())
        },
    )
    .await;
    within(&h, Duration::from_secs(60), "AppServicesReady=True", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "True")
    })
    .await;
    let sim = h.azure();
    eprintln!("--- ARM requests ---\n{}", timeline(sim).join("\n"));

    // ARM did throttle it, as it would with a busy subscription.
    let requests = sim.requests();
    let throttled: Vec<&ArmRequest> = requests.iter().filter(|r| r.status == 429).collect();
    assert!(!throttled.is_empty(), "the buckets never ran out");
    assert!(throttled
        .iter()
        .all(|r| r.retry_after.is_some_and(|s| s >= 1)));

    // Every other setting is intact byte for byte, and each site was written exactly once.
    for s in &sites {
        assert_eq!(sim.app_settings(s).unwrap(), with_dns(foreign(&s.name)));
        let suffix = format!("/sites/{}/config/appsettings", s.name);
        assert_eq!(count(sim, "PUT", &suffix, 200), 1, "{}", s.name);
    }
    // It never sent a request while a Retry-After was running.
    let early = early_retries(&requests);
    assert!(
        early.is_empty(),
        "Retry-After not honoured:\n{}",
        early.join("\n")
    );
    let status = h.link("web").unwrap()["status"]["appServices"].clone();
    assert_eq!(status.as_array().unwrap().len(), sites.len());
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["inSync"] == true),
        "{status}"
    );

    // No crash loop: one controller start, no panic, and it still answers its health probe.
    let log = h.operator_log();
    assert_eq!(log.matches("controller started").count(), 1);
    assert!(!log.contains("panicked"), "{log}");
    let port = http_port(&log).expect("the operator logged its HTTP port");
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    // Converged: nothing more is written.
    let writes = sim.writes().iter().filter(|r| r.status == 200).count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.writes().iter().filter(|r| r.status == 200).count(),
        writes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_between_the_operators_read_and_write() {
    let web = site("contoso-web");
    let h = started(std::slice::from_ref(&web), "2", Throttling::ARM).await;
    // A deploy pipeline adds a setting right after the operator's first read is answered.
    h.azure().add_second_writer(SecondWriter::set_app_setting(
        web.clone(),
        "DEPLOYED_BY",
        "pipeline-42",
    ));
    h.apply(&link(std::slice::from_ref(&web), "AppSettings"));
    app_services_ready(&h).await;
    let sim = h.azure();
    let edits = sim.second_writer_edits();
    assert_eq!(edits.len(), 1, "the pipeline's edit happened");

    // What must hold: the operator's key converged and the customer's settings are intact.
    let now = sim.app_settings(&web).unwrap();
    assert_eq!(now["WEBSITE_DNS_SERVER"], IP);
    for (k, v) in foreign(&web.name) {
        assert_eq!(now[&k], v, "{k} survived byte for byte");
    }
    let first_put = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("the operator wrote");
    let stale = !first_put.body.as_ref().unwrap()["properties"]
        .as_object()
        .unwrap()
        .contains_key("DEPLOYED_BY");
    eprintln!(
        "--- ARM requests ---\n{}\nthe operator's PUT was based on a stale read: {stale}; \
         lost update (DEPLOYED_BY gone): {}",
        timeline(sim).join("\n"),
        !now.contains_key("DEPLOYED_BY")
    );
    assert!(
        edits[0].at > sim.requests()[0].at && edits[0].at < first_put.at,
        "the edit landed between the read and the write"
    );
    // Never overwritten (issue #10): the operator read again after recording what it replaces, and
    // merged into that.
    assert!(!stale, "the PUT was built from the read before the edit");
    assert_eq!(
        now["DEPLOYED_BY"], "pipeline-42",
        "the other writer's setting was lost"
    );

    // A change the other writer makes after the operator's write survives later resyncs: another
    // pipeline run right after a resync read, and an edit in the portal.
    let puts = count(sim, "PUT", "/config/appsettings", 200);
    sim.add_second_writer(SecondWriter::set_app_setting(
        web.clone(),
        "DEPLOYED_BY",
        "pipeline-43",
    ));
    within(
        &h,
        Duration::from_secs(30),
        "the second pipeline run",
        |h| (h.azure().second_writer_edits().len() == 2).then_some(()),
    )
    .await;
    let mut edited = sim.app_settings(&web).unwrap();
    edited.insert("ADDED_IN_PORTAL".into(), "yes".into());
    sim.set_app_settings(&web, edited).unwrap();
    let lists = count(sim, "POST", "/config/appsettings/list", 200);
    within(&h, Duration::from_secs(30), "three more resyncs", |h| {
        (count(h.azure(), "POST", "/config/appsettings/list", 200) >= lists + 3).then_some(())
    })
    .await;
    let later = sim.app_settings(&web).unwrap();
    assert_eq!(later["DEPLOYED_BY"], "pipeline-43");
    assert_eq!(later["ADDED_IN_PORTAL"], "yes");
    assert_eq!(later["WEBSITE_DNS_SERVER"], IP);
    // It does not fight: no write since it converged.
    assert_eq!(count(sim, "PUT", "/config/appsettings", 200), puts);
    assert_eq!(puts, 1, "{}", timeline(sim).join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_reverting_the_operators_key_is_outlasted_without_a_fight() {
    let web = site("contoso-web");
    let h = started(std::slice::from_ref(&web), "2", Throttling::ARM).await;
    // Terraform without ignore_changes puts its own value back right after three of the
    // operator's reads, then stops applying.
    h.azure().add_second_writer(
        SecondWriter::set_app_setting(web.clone(), "WEBSITE_DNS_SERVER", "168.63.129.16").times(3),
    );
    h.apply(&link(std::slice::from_ref(&web), "AppSettings"));
    app_services_ready(&h).await;
    within(
        &h,
        Duration::from_secs(30),
        "Terraform's three applies",
        |h| (h.azure().second_writer_edits().len() == 3).then_some(()),
    )
    .await;
    let sim = h.azure();
    within(
        &h,
        Duration::from_secs(30),
        "the operator's value back",
        |h| (h.azure().app_settings(&web)?.get("WEBSITE_DNS_SERVER")? == IP).then_some(()),
    )
    .await;
    let puts = count(sim, "PUT", "/config/appsettings", 200);
    let lists = count(sim, "POST", "/config/appsettings/list", 200);
    within(&h, Duration::from_secs(30), "three more resyncs", |h| {
        (count(h.azure(), "POST", "/config/appsettings/list", 200) >= lists + 3).then_some(())
    })
    .await;
    eprintln!("--- ARM requests ---\n{}", timeline(sim).join("\n"));
    assert_eq!(
        sim.app_settings(&web).unwrap(),
        with_dns(foreign(&web.name))
    );
    assert_eq!(
        count(sim, "PUT", "/config/appsettings", 200),
        puts,
        "once the other writer stopped, the operator stopped writing"
    );
    assert!(
        puts <= 4,
        "one write per revert at most, plus the first: {puts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_dns_ip_writes_the_app_service_once_per_window_and_the_last_ip_wins() {
    let web = site("contoso-web");
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(web.clone(), foreign(&web.name));
    h.operator_args(&[
        "--resync-seconds",
        "3600",
        "--app-service-write-window-seconds",
        "4",
    ]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link(std::slice::from_ref(&web), "AppSettings"));
    app_services_ready(&h).await;
    // The DNS Service's IP moves twice in a row, each move seen by the operator.
    for ip in ["10.240.0.54", "10.240.0.55"] {
        h.apply(&link(std::slice::from_ref(&web), "AppSettings").replace(IP, ip));
        h.eventually(&format!("the link on {ip}"), |h| {
            (h.link("web")?["status"]["dnsServerIP"] == ip).then_some(())
        })
        .await;
    }
    within(
        &h,
        Duration::from_secs(30),
        "the App Service on the last IP",
        |h| {
            (h.azure().app_settings(&web)?.get("WEBSITE_DNS_SERVER")? == "10.240.0.55")
                .then_some(())
        },
    )
    .await;
    let sim = h.azure();
    assert_eq!(
        count(sim, "PUT", "/config/appsettings", 200),
        2,
        "the first write and one for the flapping IP:\n{}",
        timeline(sim).join("\n")
    );
    assert_eq!(sim.app_settings(&web).unwrap(), {
        let mut want = foreign(&web.name);
        want.insert("WEBSITE_DNS_SERVER".into(), "10.240.0.55".into());
        want
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_keeps_reverting_the_setting_is_not_fought_forever() {
    let web = site("contoso-web");
    let h = started(std::slice::from_ref(&web), "1", Throttling::ARM).await;
    h.apply(&link(std::slice::from_ref(&web), "AppSettings"));
    app_services_ready(&h).await;
    // Terraform without ignore_changes, applied again and again: after each of the operator's reads
    // it puts its own value back.
    h.azure().add_second_writer(
        SecondWriter::set_app_setting(web.clone(), "WEBSITE_DNS_SERVER", "168.63.129.16")
            .times(1000),
    );
    let (_, _, message) = within(&h, Duration::from_secs(60), "the fight reported", |h| {
        h.condition("web", "AppServicesReady")
            .filter(|c| c.0 == "False" && c.1 == "AppServiceReverted")
    })
    .await;
    assert!(message.contains("ignore_changes"), "{message}");
    let sim = h.azure();
    let puts = count(sim, "PUT", "/config/appsettings", 200);
    let lists = count(sim, "POST", "/config/appsettings/list", 200);
    within(&h, Duration::from_secs(30), "three more resyncs", |h| {
        (count(h.azure(), "POST", "/config/appsettings/list", 200) >= lists + 3).then_some(())
    })
    .await;
    assert_eq!(
        count(sim, "PUT", "/config/appsettings", 200),
        puts,
        "the operator kept restarting the app:\n{}",
        timeline(sim).join("\n")
    );
    assert!(
        puts <= 1 + 3,
        "the first write and three re-applies at most: {puts}"
    );
    let events = h.kubectl_ok(&["get", "events", "-A", "-o", "custom-columns=REASON:.reason"]);
    assert!(events.contains("AppServiceReverted"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_setting_dns_configuration_is_reported_or_kept() {
    // AppSettings mode: someone sets dnsConfiguration.dnsServers right after the operator's read;
    // the site now ignores WEBSITE_DNS_SERVER, and the operator must say so.
    let web = site("contoso-web");
    let h = started(std::slice::from_ref(&web), "3600", Throttling::ARM).await;
    h.azure().add_second_writer(SecondWriter::set_dns_field(
        web.clone(),
        "dnsServers",
        json!(["10.9.9.9"]),
    ));
    h.apply(&link(std::slice::from_ref(&web), "AppSettings"));
    let (_, _, message) = h
        .eventually("the override reported", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.0 == "False" && c.1 == "SiteDnsConfigurationOverrides")
        })
        .await;
    assert!(message.contains("dnsConfiguration"), "{message}");
    assert_eq!(
        h.azure().app_settings(&web).unwrap(),
        with_dns(foreign(&web.name))
    );
    eprintln!("--- ARM requests ---\n{}", timeline(h.azure()).join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writers_dns_configuration_field_survives_the_operators_patch() {
    // SiteDnsConfiguration mode: the PATCH merges, so a field someone sets between the operator's
    // GET and its PATCH is kept.
    let web = site("contoso-web");
    let h = started(std::slice::from_ref(&web), "3600", Throttling::ARM).await;
    h.azure().add_second_writer(
        SecondWriter::set_dns_field(web.clone(), "dnsRetryAttemptCount", json!(3))
            .after(ReadOp::GetSite),
    );
    h.apply(&link(std::slice::from_ref(&web), "SiteDnsConfiguration"));
    app_services_ready(&h).await;
    eprintln!("--- ARM requests ---\n{}", timeline(h.azure()).join("\n"));
    assert_eq!(h.azure().second_writer_edits().len(), 1);
    assert_eq!(
        h.azure().dns_configuration(&web).unwrap(),
        json!({"dnsServers": [IP], "dnsRetryAttemptCount": 3})
    );
    assert_eq!(h.azure().app_settings(&web).unwrap(), foreign(&web.name));
}

/// The operator's passes over its App Services: runs of requests with more than 2 s between runs.
fn passes(requests: &[ArmRequest]) -> Vec<Vec<&ArmRequest>> {
    let mut passes: Vec<Vec<&ArmRequest>> = Vec::new();
    for r in requests {
        match passes.last_mut() {
            Some(pass)
                if r.at.duration_since(pass.last().unwrap().at) <= Duration::from_secs(2) =>
            {
                pass.push(r)
            }
            _ => passes.push(vec![r]),
        }
    }
    passes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_the_operators_patience_requeues_without_hammering() {
    // Two write tokens, then one every 12 s: the Retry-After (12 s) is longer than the operator
    // waits inside one call (10 s), so it gives up the call and requeues the link.
    let sites: Vec<SiteId> = (1..=3).map(|i| site(&format!("contoso-web-{i}"))).collect();
    let h = started(
        &sites,
        "3600",
        Throttling {
            writes: Bucket::new(2, 1.0 / 12.0),
            ..Throttling::ARM
        },
    )
    .await;
    h.apply(&link(&sites, "AppSettings"));
    let (_, _, message) = h
        .eventually("AppServicesReady=False, Throttled", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.0 == "False" && c.1 == "Throttled")
        })
        .await;
    assert!(message.contains("throttled"), "{message}");
    // Three passes: bursts of requests with quiet gaps between them.
    within(&h, Duration::from_secs(75), "three passes", |h| {
        (passes(&h.azure().requests()).len() >= 3).then_some(())
    })
    .await;
    let sim = h.azure();
    let requests = sim.requests();
    eprintln!(
        "--- ARM requests ---
{}",
        timeline(sim).join("\n")
    );
    let converged: Vec<bool> = sites
        .iter()
        .map(|s| sim.app_settings(s) == Some(with_dns(foreign(&s.name))))
        .collect();
    let early = early_retries(&requests);
    eprintln!(
        "converged: {converged:?}; requests sent while a Retry-After was running: {}\n{}",
        early.len(),
        early.join("\n")
    );

    // What holds: the first site converged; the others are untouched, not half written.
    assert!(converged[0]);
    for s in &sites[1..] {
        let now = sim.app_settings(s).unwrap();
        assert!(
            now == foreign(&s.name) || now == with_dns(foreign(&s.name)),
            "{now:?}"
        );
    }
    // It requeues the link after the Retry-After, not sooner: a pass starts no earlier than the
    // shortest Retry-After of the previous pass allows, counted from that pass's last 429; and within
    // a pass nothing is sent once ARM said to wait.
    for pair in passes(&requests).windows(2) {
        let throttled: Vec<&&ArmRequest> = pair[0].iter().filter(|r| r.status == 429).collect();
        let last = throttled
            .last()
            .expect("each pass but the last is throttled");
        let shortest = throttled
            .iter()
            .filter_map(|r| r.retry_after)
            .min()
            .unwrap();
        let waited = pair[1][0].at.duration_since(last.at);
        assert!(
            waited >= Duration::from_secs(shortest),
            "requeued {waited:?} after a 429 with Retry-After: {shortest}"
        );
    }
    assert!(
        early.is_empty(),
        "sent while a Retry-After was running:\n{}",
        early.join("\n")
    );
    // And no crash loop.
    let log = h.operator_log();
    assert_eq!(log.matches("controller started").count(), 1);
    assert!(!log.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_operators_bucket_is_paced_and_arm_never_throttles() {
    use appservicelink::azure::limiter::RateLimits;
    use appservicelink::duties::app_service::ANNOTATION_RESTORE_RECORD;
    // ARM's own buckets (writes: 200, then 10/s). As many App Services as a link may name, linked
    // and then moved to a new DNS IP at once: a write token for each app-settings list (a POST)
    // and each PUT, 400 within seconds, far more than ARM's bucket and the operator's own.
    let sites: Vec<SiteId> = (1..=appservicelink::crd::MAX_TARGETS)
        .map(|i| site(&format!("contoso-web-{i:03}")))
        .collect();
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().set_throttling(Throttling::ARM).unwrap();
    for s in &sites {
        h.azure().add_site(s.clone(), foreign(&s.name));
    }
    // No write window: the move follows the first pass at once.
    h.operator_args(&[
        "--resync-seconds",
        "3600",
        "--app-service-write-window-seconds",
        "0",
    ]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    // The restore records are on the link already (as after a restore from a backup): the first
    // pass writes nothing to the apiserver per App Service, so it goes as fast as ARM lets it.
    let records: BTreeMap<String, BTreeMap<String, String>> = sites
        .iter()
        .map(|s| {
            let id = format!(
                "/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Web/sites/{}",
                s.name
            );
            (
                id,
                [("WEBSITE_DNS_SERVER".to_string(), String::new())].into(),
            )
        })
        .collect();
    let annotated = |ip: &str| {
        let record = serde_json::to_string(&serde_json::to_string(&records).unwrap()).unwrap();
        link(&sites, "AppSettings")
            .replacen(
                "  name: web\n",
                &format!(
                    "  name: web\n  annotations:\n    {ANNOTATION_RESTORE_RECORD}: {record}\n"
                ),
                1,
            )
            .replace(IP, ip)
    };
    for ip in [IP, "10.240.0.54"] {
        h.apply(&annotated(ip));
        within(
            &h,
            Duration::from_secs(120),
            &format!("every App Service on {ip}"),
            |h| {
                h.link("web")?["status"]["appServices"]
                    .as_array()?
                    .iter()
                    .filter(|e| e["inSync"] == true && e["dnsServer"] == ip)
                    .count()
                    .eq(&sites.len())
                    .then_some(())
            },
        )
        .await;
    }
    let sim = h.azure();
    let requests = sim.requests();
    let writes = requests.iter().filter(|r| r.method != "GET").count();
    assert!(
        writes > Throttling::ARM.writes.size as usize
            && writes > RateLimits::DEFAULT.writes.burst as usize,
        "the burst ({writes} write tokens) must exceed the buckets"
    );
    let throttled: Vec<String> = requests
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        throttled.is_empty(),
        "{} of {} requests throttled, e.g. {:?}",
        throttled.len(),
        requests.len(),
        &throttled[..throttled.len().min(5)]
    );
    for s in &sites {
        let mut want = foreign(&s.name);
        want.insert("WEBSITE_DNS_SERVER".into(), "10.240.0.54".into());
        assert_eq!(sim.app_settings(s).unwrap(), want, "{}", s.name);
        let suffix = format!("/sites/{}/config/appsettings", s.name);
        assert_eq!(count(sim, "PUT", &suffix, 200), 2, "{}", s.name);
    }
    let first = requests.first().unwrap().at;
    let last = requests.last().unwrap().at;
    eprintln!(
        "{} ARM requests ({writes} write tokens) in {:?}, none throttled",
        requests.len(),
        last.duration_since(first)
    );
}
