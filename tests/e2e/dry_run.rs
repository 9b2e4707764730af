//! `run --dry-run`: everything is decided and reported, nothing is changed.

use std::collections::BTreeMap;

use azure_sim::SiteId;
use serde_json::Value;

use crate::harness::Harness;

const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000002";

fn link(zone: &str) -> String {
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
    zone: {zone}
    service:
      staticIP: 10.240.0.53
  appServices:
    targets:
      - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}
"#
    )
}

/// Notes of every Event the operator recorded.
fn event_notes(h: &Harness) -> Vec<String> {
    h.sim
        .list("events.k8s.io/v1", "Event")
        .iter()
        .filter_map(|e| e["note"].as_str().map(str::to_string))
        .collect()
}

fn resource_versions(h: &Harness) -> BTreeMap<String, Value> {
    let mut versions = BTreeMap::new();
    for (api_version, kind) in [
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        crate::harness::LINKS,
    ] {
        for obj in h.sim.list(api_version, kind) {
            let key = format!(
                "{kind} {}/{}",
                obj["metadata"]["namespace"].as_str().unwrap_or(""),
                obj["metadata"]["name"].as_str().unwrap()
            );
            versions.insert(key, obj["metadata"]["resourceVersion"].clone());
        }
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_reports_every_intended_change() {
    let web = SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    };
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(
        web.clone(),
        BTreeMap::from([("KEEP".to_string(), "me".to_string())]),
    );
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("mydomain.local"));
    h.wait_ready("web").await;
    h.kill_operator();

    // While no operator runs: a Service leaves, one joins, the portal drifts, the zone changes.
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "orders",
        "appservicelink.io/expose-",
    ]);
    h.kubectl_ok(&[
        "-n",
        "shop",
        "label",
        "service",
        "storefront",
        "appservicelink.io/expose=true",
        "--overwrite",
    ]);
    h.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: payments, namespace: shop, labels: {appservicelink.io/expose: \"true\"}}\nspec: {ports: [{port: 443}]}\n",
    );
    let mut drifted = h.azure().app_settings(&web).unwrap();
    drifted.insert("WEBSITE_DNS_SERVER".into(), "8.8.8.8".into());
    h.azure().set_app_settings(&web, drifted.clone()).unwrap();
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"zone":"contoso.internal"}}}"#,
    ]);
    h.apply(
        &link("second.local")
            .replace("name: web", "name: fresh")
            .replace("expose: \"true\"", "expose: \"none\""),
    );

    let before = resource_versions(&h);
    let arm_writes_before = h.azure().writes().len();
    let requests_before = h.mark();
    h.operator_args(&["--dry-run"]);
    h.start_operator();

    let wanted = [
        "Service shop/payments is now an internal load balancer",
        "Service shop/orders restored",
        "k8s_external contoso.internal second.local",
        "restarted to load the CoreDNS override",
        "WEBSITE_DNS_SERVER=10.240.0.53",
    ];
    let notes = h
        .eventually("every intended change reported", |h| {
            let notes = event_notes(h);
            wanted
                .iter()
                .all(|w| {
                    notes
                        .iter()
                        .any(|n| n.starts_with("dry run, not applied: ") && n.contains(w))
                })
                .then_some(notes)
        })
        .await;
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("dry run") && n.contains("storefront is now")),
        "the public LoadBalancer is not converted without opt-in, even in a dry run"
    );
    h.settle_after(&requests_before).await;

    assert_eq!(resource_versions(&h), before, "no object changed");
    assert_eq!(
        h.azure().app_settings(&web).unwrap(),
        drifted,
        "no App Service setting changed"
    );
    assert_eq!(
        h.azure().writes().len(),
        arm_writes_before,
        "no ARM write was sent"
    );
    assert!(
        h.link("fresh").unwrap()["metadata"]
            .get("finalizers")
            .is_none(),
        "no finalizer added"
    );
    let writes: Vec<_> = h
        .operator_requests()
        .into_iter()
        .skip(requests_before.requests)
        .filter(|r| r.is_write())
        .collect();
    for w in &writes {
        let is_event = w.path.contains("/apis/events.k8s.io/");
        assert!(
            is_event || w.query.contains("dryRun=All"),
            "a real write in dry-run mode: {} {}?{}",
            w.method,
            w.path,
            w.query
        );
    }
    assert!(
        writes.iter().any(|w| w.query.contains("dryRun=All")),
        "the writes went to the apiserver for admission"
    );
    assert!(
        h.operator_log().contains("dry_run=true"),
        "intended changes are logged:\n{}",
        h.operator_log()
    );
}
