//! The fault suite (issue #10): the operator killed between two writes, its status wiped, its writes
//! refused, ARM down or throttled, its watches cut or expired, the apiserver failing or timing out, the
//! token endpoint down and its token expiring. Each row is a fault and what must hold afterwards: it
//! converges, nothing the customer had is lost, and nothing is written twice. TESTING.md has the table
//! and the totals of the last run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use azure_sim::{Fault, FaultKind, SiteId, TokenFault, TokenFaultKind};
use kube_sim::{Fault as ApiFault, FaultKind as ApiFaultKind};

use crate::harness::{Harness, AZURE_CLIENT_SECRET};

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

/// A Service created after the link converged, for the rows that check the operator still sees changes.
const CART: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
  labels: {appservicelink.io/expose: "true"}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// A fault for the operator's requests only (the test's own kubectl is spared).
fn operator(fault: ApiFault) -> ApiFault {
    fault.except_user_agent("kubectl")
}

/// The operator's four watches: links, Services, Namespaces and the CoreDNS ConfigMap.
const OPERATOR_WATCHES: usize = 4;

async fn watches_open(h: &Harness) {
    h.eventually("the operator's watches open", |h| {
        (h.sim.open_watches() >= OPERATOR_WATCHES).then_some(())
    })
    .await;
}

/// Whether `shop/<name>` is an internal load balancer held by the link.
fn linked(h: &Harness, name: &str) -> bool {
    h.service("shop", name).is_some_and(|svc| {
        svc["spec"]["type"] == "LoadBalancer"
            && svc["metadata"]["annotations"]["appservicelink.io/link"] == "web"
    })
}

/// Waits for `shop/<name>` to be converted and the link Ready again.
async fn wait_linked(h: &Harness, name: &str) {
    h.eventually(&format!("Service shop/{name} converted"), |h| {
        linked(h, name).then_some(())
    })
    .await;
    h.wait_ready("web").await;
}

/// Operator requests to the apiserver answered with `status`.
fn answered(h: &Harness, status: u16) -> usize {
    h.operator_requests()
        .iter()
        .filter(|r| r.status == status)
        .count()
}

/// Token requests answered with `status`.
fn token_requests(h: &Harness, status: u16) -> usize {
    h.azure()
        .token_requests()
        .iter()
        .filter(|r| r.status == status)
        .count()
}

/// No access token (and not the client secret) in anything the operator logged.
fn no_token_in_log(h: &Harness, outcome: &mut Outcome) {
    let log = h.operator_log();
    let leaked = h
        .azure()
        .issued_tokens()
        .iter()
        .any(|t| log.contains(t.as_str()))
        || log.contains(AZURE_CLIENT_SECRET)
        || log.contains(azure_sim::TOKEN_PREFIX);
    outcome.check("no token or secret in the operator's log", !leaked);
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

/// Deletes the link, and checks everything went back exactly as it was, with one restore write.
async fn delete_and_check_restored(h: &Harness, outcome: &mut Outcome) {
    let writes = arm_writes(h);
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=60s"]);
    outcome.check(
        "the App Service's settings restored exactly",
        settings(h) == before(),
    );
    for name in ["api", "orders", "cart"] {
        if let Some(svc) = h.service("shop", name) {
            outcome.check(
                &format!("Service shop/{name} back to ClusterIP"),
                svc["spec"]["type"] == "ClusterIP",
            );
        }
    }
    outcome.check(
        "the DNS Service deleted",
        h.service("kube-system", "appservicelink-dns").is_none(),
    );
    outcome.duplicate_writes += arm_writes(h).saturating_sub(writes + 1);
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

/// Every watch stream cut mid-stream after the link converged, and a Service created right after,
/// while the operator reconnects: it resumes from the versions it saw and misses nothing.
async fn watches_dropped(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    watches_open(&h).await;
    let cut = h.sim.drop_watches();
    outcome.check(
        "the operator's watches were open and cut",
        cut >= OPERATOR_WATCHES,
    );
    h.apply(CART);
    wait_linked(&h, "cart").await;
    watches_open(&h).await;
    outcome.check("converged after the drop", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The watches cut and refused (503) while a Service is created and the history compacted: the
/// re-watches from the old versions get 410 Expired, and the operator lists again and converts it.
async fn watch_history_expired(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    watches_open(&h).await;
    h.sim.inject(operator(
        ApiFault::new(
            "",
            ApiFaultKind::ServiceUnavailable {
                retry_after_secs: Some(1),
            },
        )
        .verbs(&["watch"])
        .until_cleared(),
    ));
    h.sim.drop_watches();
    h.apply(CART);
    h.eventually("the operator's re-watches refused", |h| {
        (answered(h, 503) >= OPERATOR_WATCHES).then_some(())
    })
    .await;
    h.sim.compact();
    let lists_before = service_lists(&h);
    h.sim.clear_faults();
    let back = Instant::now();
    h.eventually("Service shop/cart converted", |h| {
        linked(h, "cart").then_some(())
    })
    .await;
    // Each watch backs off on its own: the four 410s must not stall one another.
    outcome.check(
        "the operator converted it within 10 s of the apiserver's recovery",
        back.elapsed() < Duration::from_secs(10),
    );
    h.wait_ready("web").await;
    outcome.check(
        "the re-watches were told 410 Expired",
        h.sim.expired_watches() >= 1,
    );
    outcome.check(
        "the operator listed the Services again",
        service_lists(&h) > lists_before,
    );
    watches_open(&h).await;
    outcome.check("converged after the re-list", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The operator's lists of all Services (not watches).
fn service_lists(h: &Harness) -> usize {
    h.operator_requests()
        .iter()
        .filter(|r| r.verb == "list" && r.path == "/api/v1/services" && r.status == 200)
        .count()
}

/// The apiserver failing the operator's lists and watches as it starts, while the link is created:
/// its first list of links answered 500 twice, the Services watch's list and watch 500 twice, the
/// Namespaces' 503 with Retry-After twice.
async fn apiserver_read_errors(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    let reads =
        |path: &str, kind| operator(ApiFault::new(path, kind).verbs(&["list", "watch"]).times(2));
    h.sim.inject(reads(
        "/apis/appservicelink.io/v1alpha1/appservicelinks",
        ApiFaultKind::InternalError,
    ));
    h.sim
        .inject(reads("/api/v1/services", ApiFaultKind::InternalError));
    h.sim.inject(reads(
        "/api/v1/namespaces",
        ApiFaultKind::ServiceUnavailable {
            retry_after_secs: Some(1),
        },
    ));
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check(
        "the apiserver answered four 500s and two 503s",
        answered(&h, 500) == 4 && answered(&h, 503) == 2,
    );
    outcome.check("converged after the errors", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The apiserver failing the operator's next three writes (500, as when etcd times out) while the
/// link is created.
async fn apiserver_write_errors(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    watches_open(&h).await;
    h.sim.inject(operator(
        ApiFault::new("", ApiFaultKind::InternalError)
            .writes()
            .times(3),
    ));
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check("the apiserver refused three writes", answered(&h, 500) == 3);
    outcome.check("converged after the errors", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The apiserver timing out: the operator's first lists and watches, and then its first writes, each
/// answered 504 after 2 s; the writes applied all the same, as behind a real apiserver's timeout.
async fn apiserver_timeouts(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    let timeout = ApiFaultKind::Timeout {
        after: Duration::from_secs(2),
    };
    h.sim.inject(operator(
        ApiFault::new("", timeout.clone())
            .verbs(&["list", "watch"])
            .times(3),
    ));
    h.sim
        .inject(operator(ApiFault::new("", timeout).writes().times(3)));
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check("six requests timed out", answered(&h, 504) == 6);
    outcome.check("converged after the timeouts", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The apiserver never answering the operator's first two writes (a hung connection, an apiserver
/// stuck behind a dead etcd): each fails after --kube-read-timeout-seconds, 5 s here, and the
/// reconcile is retried. Without a read timeout the reconcile would wait forever.
async fn apiserver_hangs(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.operator_args(&["--kube-read-timeout-seconds", "5"]);
    h.start_operator();
    watches_open(&h).await;
    h.sim.inject(operator(
        ApiFault::new("", ApiFaultKind::Hang).writes().times(2),
    ));
    h.apply(&link());
    h.wait_ready("web").await;
    let hung = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 0 && r.is_write())
        .count();
    outcome.check("two writes were never answered", hung == 2);
    outcome.check("converged after the hung writes", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    // A read timeout this short also cuts every quiet watch (each re-opened with a growing
    // backoff); the deletion runs under the default, as in a cluster.
    h.kill_operator();
    h.operator_args(&[]);
    h.start_operator();
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The link's status refused for its size, as etcd refuses an object over 1.5 MiB (`etcdserver:
/// request is too large`), while the link is created: everything else is done, once, a Warning
/// Event says the status is stale, and the status follows once it can be written.
async fn status_too_large(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    watches_open(&h).await;
    h.sim.inject(operator(
        ApiFault::new("/appservicelinks/web/status", ApiFaultKind::EtcdTooLarge)
            .writes()
            .until_cleared(),
    ));
    h.apply(&link());
    h.eventually("the App Service pointed at the DNS Service", |h| {
        (settings(h).get("WEBSITE_DNS_SERVER").map(String::as_str) == Some(DNS_IP)).then_some(())
    })
    .await;
    h.eventually("a StatusWriteFailed Warning naming etcd's answer", |h| {
        h.sim
            .list("events.k8s.io/v1", "Event")
            .iter()
            .any(|e| {
                e["reason"] == "StatusWriteFailed"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("request is too large"))
            })
            .then_some(())
    })
    .await;
    outcome.check(
        "the status writes were refused",
        h.sim
            .requests()
            .iter()
            .any(|r| r.status == 500 && r.path.ends_with("/status")),
    );
    outcome.check(
        "the status said nothing meanwhile",
        h.link("web")
            .is_some_and(|l| l["status"]["conditions"].is_null()),
    );
    h.sim.clear_faults();
    h.wait_ready("web").await;
    outcome.check("converged once the status could be written", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome
}

/// The token endpoint down (503s) while the link is created, for five refused requests (about 6 s of
/// the credential's own retries), then back.
async fn token_endpoint_down(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.azure().inject_token_fault(
        TokenFault::new(TokenFaultKind::Unavailable {
            retry_after_secs: None,
        })
        .until_cleared(),
    );
    h.start_operator();
    h.apply(&link());
    h.eventually("five token requests refused", |h| {
        (token_requests(h, 503) >= 5).then_some(())
    })
    .await;
    outcome.check(
        "nothing sent to ARM without a token",
        h.azure().requests().is_empty(),
    );
    h.azure().clear_token_faults();
    h.wait_ready("web").await;
    outcome.check("converged after the outage", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    delete_and_check_restored(&h, &mut outcome).await;
    outcome.check(
        "ARM never saw a request without a valid token",
        h.azure().requests().iter().all(|r| r.status != 401),
    );
    no_token_in_log(&h, &mut outcome);
    outcome
}

/// Tokens that live 5 min 2 s: azure_identity renews a token 5 minutes before it expires, so each is
/// used for about 2 s. The operator must get new ones as they go stale, and never send a stale one.
async fn short_lived_tokens(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.azure().set_token_lifetime(Duration::from_secs(302));
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check("converged", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    let issued = token_requests(&h, 200);
    // The token it has goes stale; the deletion needs ARM again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    delete_and_check_restored(&h, &mut outcome).await;
    outcome.check(
        "the operator got a new token for the deletion",
        token_requests(&h, 200) > issued,
    );
    outcome.check(
        "ARM saw no expired token",
        h.azure().requests().iter().all(|r| r.status != 401),
    );
    no_token_in_log(&h, &mut outcome);
    outcome
}

/// The operator's cached token refused by ARM as expired (401 ExpiredAuthenticationToken) although
/// the token endpoint said it lives an hour: it must get a new one, not wait out its cache.
async fn token_expired_mid_run(mut h: Harness) -> Outcome {
    let mut outcome = Outcome::default();
    h.start_operator();
    h.apply(&link());
    h.wait_ready("web").await;
    outcome.check("converged", converged(&h));
    outcome.duplicate_writes = arm_writes(&h).saturating_sub(1);
    let issued = token_requests(&h, 200);
    h.azure().expire_tokens();
    delete_and_check_restored(&h, &mut outcome).await;
    let refused = h
        .azure()
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    outcome.check(
        "ARM refused the expired token once, then the operator used a new one",
        refused == 1 && token_requests(&h, 200) > issued,
    );
    no_token_in_log(&h, &mut outcome);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_suite() {
    type Row = fn(Harness) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>;
    // FAULT_ROW=<part of a name> runs only the matching rows.
    let only = std::env::var("FAULT_ROW").ok();
    let rows: [(&str, Row); 17] = [
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
        ("watch streams dropped mid-stream", |h| {
            Box::pin(watches_dropped(h))
        }),
        (
            "re-watches get 410 Expired (history compacted while the watches were down)",
            |h| Box::pin(watch_history_expired(h)),
        ),
        ("apiserver 500s and 503s on lists and watches", |h| {
            Box::pin(apiserver_read_errors(h))
        }),
        ("apiserver 500s on writes", |h| {
            Box::pin(apiserver_write_errors(h))
        }),
        (
            "apiserver timeouts (504 after 2 s) on lists, watches and writes",
            |h| Box::pin(apiserver_timeouts(h)),
        ),
        (
            "apiserver never answers two writes (cut by the read timeout)",
            |h| Box::pin(apiserver_hangs(h)),
        ),
        (
            "status write refused for its size (etcd: request is too large)",
            |h| Box::pin(status_too_large(h)),
        ),
        ("token endpoint down (503s), then back", |h| {
            Box::pin(token_endpoint_down(h))
        }),
        ("short-lived tokens, renewed mid-run", |h| {
            Box::pin(short_lived_tokens(h))
        }),
        (
            "token expired mid-run (ARM refuses the cached token)",
            |h| Box::pin(token_expired_mid_run(h)),
        ),
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
