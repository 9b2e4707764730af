//! The fault suite (issue #10): the operator killed between two writes, its status wiped, its writes
//! refused, ARM down or throttled. Each row is a fault and what must hold afterwards: it converges,
//! nothing the customer had is lost, and nothing is written twice. TESTING.md has the table and the
//! totals of the last run.

use std::collections::BTreeMap;

use azure_sim::{Fault, FaultKind, SiteId};

use crate::harness::Harness;

const SUB: &str = "6f1c2b3a-0000-4000-8000-00000000fa17";
const DNS_IP: &str = "10.240.0.53";

fn site() -> SiteId {
    SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    }
}

/// What the customer had before the operator: Azure DNS, and settings that are none of its business.
fn before() -> BTreeMap<String, String> {
    [
        ("WEBSITE_DNS_SERVER", "168.63.129.16"),
        ("WEBSITE_RUN_FROM_PACKAGE", "1"),
        (
            "ConnectionStrings__Db",
            "Server=tcp:db.contoso.internal,1433",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn link() -> String {
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
    service: {{staticIP: {DNS_IP}}}
  appServices:
    targets:
    - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}
"#
    )
}

async fn harness() -> Harness {
    let mut h = Harness::cluster().await;
    h.with_azure().await;
    h.azure().add_site(site(), before());
    h.apply(include_str!("fixtures/shop.yaml"));
    h
}

/// Successful ARM writes to the site's settings so far.
fn arm_writes(h: &Harness) -> usize {
    h.azure()
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 200)
        .count()
}

fn settings(h: &Harness) -> BTreeMap<String, String> {
    h.azure().app_settings(&site()).unwrap()
}

fn converged(h: &Harness) -> bool {
    let now = settings(h);
    now.get("WEBSITE_DNS_SERVER").map(String::as_str) == Some(DNS_IP)
        && before()
            .iter()
            .filter(|(k, _)| *k != "WEBSITE_DNS_SERVER")
            .all(|(k, v)| now.get(k) == Some(v))
}

/// Runs the operator until it aborts at `point`, then starts it again without the crash point.
async fn crash_at(h: &mut Harness, point: &str) {
    h.operator_env("APPSERVICELINK_CRASH_AT", point);
    h.start_operator();
    h.eventually(&format!("the operator aborted at {point}"), |h| {
        h.operator_log()
            .contains(&format!("crash point {point} reached"))
            .then_some(())
    })
    .await;
    h.kill_operator();
    h.operator_env("APPSERVICELINK_CRASH_AT", "");
    h.start_operator();
}

/// What a row found.
#[derive(Debug, Default)]
struct Outcome {
    /// Settings or Services not as they must be, by name.
    lost: Vec<String>,
    /// ARM writes beyond the one a change needs.
    duplicate_writes: usize,
}

impl Outcome {
    fn check(&mut self, what: &str, ok: bool) {
        if !ok {
            self.lost.push(what.to_string());
        }
    }
}

/// Deletes the link, and checks everything went back exactly as it was.
async fn delete_and_check_restored(h: &Harness, outcome: &mut Outcome) {
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=60s"]);
    outcome.check(
        "the App Service's settings restored exactly",
        settings(h) == before(),
    );
    let api = h.service("shop", "api").unwrap();
    outcome.check(
        "Service shop/api back to ClusterIP",
        api["spec"]["type"] == "ClusterIP",
    );
    outcome.check(
        "the DNS Service deleted",
        h.service("kube-system", "appservicelink-dns").is_none(),
    );
}

/// Killed between recording what the App Service had and writing to it.
async fn killed_after_the_record(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.apply(&link());
    crash_at(&mut h, "app-service-after-record").await;
    h.wait_ready("web").await;
    outcome.check("converged after the restart", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// Killed after the ARM write, before the status said so.
async fn killed_after_the_write(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.apply(&link());
    crash_at(&mut h, "app-service-after-write").await;
    h.wait_ready("web").await;
    outcome.check("converged after the restart", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// Killed right after converting a Service, before the status said so.
async fn killed_after_converting_a_service(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.apply(&link());
    crash_at(&mut h, "service-after-apply").await;
    h.wait_ready("web").await;
    outcome.check("converged after the restart", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// Killed during a deletion, after the App Services were restored.
async fn killed_during_cleanup(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.operator_env("APPSERVICELINK_CRASH_AT", "cleanup-after-app-services");
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    let writes = arm_writes(&h);
    h.kubectl_ok(&["delete", "asl", "web", "--wait=false"]);
    h.eventually("the operator aborted in the cleanup", |h| {
        h.operator_log()
            .contains("crash point cleanup-after-app-services reached")
            .then_some(())
    })
    .await;
    h.kill_operator();
    h.operator_env("APPSERVICELINK_CRASH_AT", "");
    h.start_operator();
    h.eventually("the link is gone", |h| {
        h.link("web").is_none().then_some(())
    })
    .await;
    outcome.check(
        "the App Service's settings restored exactly",
        settings(&h) == before(),
    );
    outcome.check(
        "Service shop/api back to ClusterIP",
        h.service("shop", "api").unwrap()["spec"]["type"] == "ClusterIP",
    );
    // One write to converge, one to restore: a second restore write would restart the app again.
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(writes + 1);
    outcome
}

/// The link's status lost entirely, as a backup restore (Velero restores no status) leaves it.
async fn status_wiped(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    h.kill_operator();
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"appServices":null,"services":null,"conditions":null,"dnsServerIP":null}}"#,
    ]);
    h.start_operator();
    h.wait_ready("web").await;
    outcome.check("converged after the wipe", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The record cannot be written (an admission policy refuses every update of links): nothing is
/// changed on the App Service.
async fn record_refused(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    // ARM is down while the link is created, so the operator gets as far as its finalizer only.
    h.azure()
        .inject(Fault::new("", FaultKind::ServerError).times(100_000));
    h.operator_args(&["--resync-seconds", "2"]);
    h.start_operator();
    h.apply(&link());
    h.eventually("the finalizer, and the App Service not reached", |h| {
        let link = h.link("web")?;
        (link["metadata"]["finalizers"][0] == "appservicelink.io/cleanup"
            && h.condition("web", "AppServicesReady")?.0 == "False")
            .then_some(())
    })
    .await;
    h.apply(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: frozen-links}
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [appservicelink.io]
      apiVersions: [v1alpha1]
      operations: [UPDATE]
      resources: [appservicelinks]
  validations:
  - expression: "false"
    message: "links are frozen"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: frozen-links}
spec:
  policyName: frozen-links
  validationActions: [Deny]
"#,
    );
    h.azure().clear_faults();
    let (_, _, message) = h
        .eventually("AppServicesReady says the record failed", |h| {
            h.condition("web", "AppServicesReady")
                .filter(|c| c.1 == "RecordFailed")
        })
        .await;
    outcome.check(
        "the condition says nothing was changed",
        message.contains("nothing was changed"),
    );
    outcome.check("the App Service was not touched", settings(&h) == before());
    outcome.duplicate_writes = arm_writes(&h);
    h.kubectl_ok(&["delete", "validatingadmissionpolicybinding", "frozen-links"]);
    outcome
}

/// An ARM outage of many failed requests, then recovery, while the link is created.
async fn arm_outage(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.azure()
        .inject(Fault::new("", FaultKind::ServerError).times(12));
    h.operator_args(&["--resync-seconds", "2"]);
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check("converged after the outage", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_suite() {
    type Row = fn(Harness) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>;
    // FAULT_ROW=<part of a name> runs only the matching rows.
    let only = std::env::var("FAULT_ROW").ok();
    let rows: [(&str, Row); 7] = [
        (
            "killed after the restore record, before the ARM write",
            |h| Box::pin(killed_after_the_record(h)),
        ),
        ("killed after the ARM write, before the status write", |h| {
            Box::pin(killed_after_the_write(h))
        }),
        ("killed after converting a Service", |h| {
            Box::pin(killed_after_converting_a_service(h))
        }),
        (
            "killed in the cleanup, after restoring the App Service",
            |h| Box::pin(killed_during_cleanup(h)),
        ),
        ("status wiped (backup restore)", |h| {
            Box::pin(status_wiped(h))
        }),
        ("restore record refused by admission", |h| {
            Box::pin(record_refused(h))
        }),
        ("ARM outage (12 server errors), then recovery", |h| {
            Box::pin(arm_outage(h))
        }),
    ];
    let mut total = 0;
    let mut report = vec![
        "| fault | survived | lost | duplicate writes |".to_string(),
        "| --- | --- | --- | --- |".to_string(),
    ];
    let (mut survived, mut lost, mut duplicates) = (0, 0, 0);
    for (name, row) in rows {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        total += 1;
        let outcome = row(harness().await).await;
        let ok = outcome.lost.is_empty() && outcome.duplicate_writes == 0;
        survived += usize::from(ok);
        lost += outcome.lost.len();
        duplicates += outcome.duplicate_writes;
        report.push(format!(
            "| {name} | {} | {} | {} |",
            if ok { "yes" } else { "no" },
            if outcome.lost.is_empty() {
                "0".to_string()
            } else {
                outcome.lost.join("; ")
            },
            outcome.duplicate_writes
        ));
    }
    report.push(format!(
        "\n{total} faults injected, {survived} survived, {lost} settings or Services lost, {duplicates} duplicate writes"
    ));
    let report = report.join("\n");
    eprintln!("{report}");
    assert_eq!((survived, lost, duplicates), (total, 0, 0), "\n{report}");
}
