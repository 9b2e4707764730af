//! The scale scenarios of issue #12, measuring the OPERATOR: the release binary runs as its own
//! process (`appservicelink run`), against the simulated apiserver and ARM started in this process.
//! Memory is that process's VmRSS/VmHWM (`/proc/<pid>/status`); requests are the simulations' request
//! logs without the benchmark's own (it seeds through `SimCluster::apply_as`, which bypasses HTTP, and
//! deletes with its own user agent).
//!
//! ```sh
//! cargo bench --bench scale -- <scenario> [flags]
//! cargo bench --bench scale -- services --services 1000 --selected 100 --rss-points 0,500,1000
//! cargo bench --bench scale -- all       # every scenario at the sizes of issue #12
//! ```
//!
//! Scenarios and their flags (defaults are the issue's sizes):
//! - `services`: `--services 10000 --selected 1000`: start → Ready and RSS after Ready for one link;
//!   then `--rss-points 0,2500,10000` unselected Services beside `--rss-selected 100` selected ones:
//!   RSS after Ready at each point (the operator restarted at each).
//! - `links`: `--links 100 --per-link 20`: start → all Ready; Service patches, Event writes, status
//!   writes.
//! - `zone-edit`: `--links 50 --per-link 20`: one link's zone edited once all are Ready; what the
//!   operator does after the edit until it is quiet.
//! - `churn`: `--churn 5000 --rate 85 --per-link 20`: creates and deletes that many unselected
//!   Services at `--rate` operations a second, at most `--window` (default: all) alive at a time;
//!   RSS before, peak and after.
//! - `ip-change`: `--changes 50 --per-link 20 --rate 85`: the DNS Service's load-balancer IP changes
//!   (through the link's staticIP), from the new IP in the DNS Service's status to the App Service's
//!   ARM write, without and then with Service churn at `--rate`. `--explain N` prints the N slowest
//!   rounds of each: what the operator sent to the apiserver and ARM, and when.
//! - `start`: `--services 10000 --links 10 --per-link 100`: the operator restarted on converged
//!   state: start → every link reconciled, and the writes it made (none expected).
//!
//! - `cache-probe` (not in `all`): `--services 3000`: a bare kube-rs reflector of every Service in
//!   a process of its own, keeping whole objects, without managedFields, or pruned by the operator's
//!   `cache::service`; and the operator's own cache of compact records (`records`).
//!
//! Every scenario takes `--timeout <seconds>` (default 300), how long to wait for the operator.
//!
//! `APPSERVICELINK_BENCH_BINARY=<path>` measures that binary instead of the one cargo builds for
//! the benchmark (which has the sandbox linked in): BENCHMARKS.md measures the production build.
//! `APPSERVICELINK_BENCH_LOGS=<dir>` keeps the operator's logs there (`operator-<run>.log`), and
//! `APPSERVICELINK_BENCH_RUST_LOG=<filter>` sets their filter (default `info`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_sim::{ArmRequest, AzureSim, AzureSimOptions, SiteId};
use kube_sim::{RecordedRequest, SimCluster, SimOptions};
use serde_json::{json, Value};

#[path = "../tests/support/services.rs"]
mod services_fixture;
use services_fixture::realistic_service;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const RG: &str = "rg-web";
const LINK_API: &str = "appservicelink.io/v1alpha1";
const LINK_KIND: &str = "AppServiceLink";
/// The user agent of the benchmark's own HTTP requests, left out of the operator's.
const BENCH_UA: &str = "appservicelink-scale-bench";
/// The DNS Service every link shares (the default name).
const DNS_SERVICE: (&str, &str) = ("kube-system", "appservicelink-dns");
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_SECRET: &str = "bench-client-secret";

/// The namespaces the Services are spread over.
const NAMESPACES: usize = 20;
/// No request from the operator for this long: it has finished what it was doing.
const QUIET: Duration = Duration::from_secs(3);

/// The operator binary measured: `APPSERVICELINK_BENCH_BINARY` (the production build, as the image
/// ships it: `--no-default-features`), or else the one cargo built for this benchmark (with the
/// sandbox's simulations linked in, whose code pages count in its RSS).
fn operator_binary() -> PathBuf {
    std::env::var_os("APPSERVICELINK_BENCH_BINARY").map_or_else(
        || env!("CARGO_BIN_EXE_appservicelink").into(),
        PathBuf::from,
    )
}

// ---------------------------------------------------------------------------------------------
// Flags

struct Args {
    scenario: Option<String>,
    flags: BTreeMap<String, String>,
}

impl Args {
    fn parse() -> Args {
        let mut scenario = None;
        let mut flags = BTreeMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            // cargo bench passes --bench to every bench binary.
            if arg == "--bench" {
                continue;
            }
            if let Some(name) = arg.strip_prefix("--") {
                let value = args.next().unwrap_or_default();
                flags.insert(name.to_string(), value);
            } else if scenario.is_none() {
                scenario = Some(arg);
            }
        }
        Args { scenario, flags }
    }

    fn num(&self, name: &str, default: usize) -> usize {
        self.flags.get(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--{name} wants a number, got {v:?}"))
        })
    }

    fn list(&self, name: &str, default: &[usize]) -> Vec<usize> {
        self.flags.get(name).map_or(default.to_vec(), |v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("--{name} wants numbers, got {v:?}"))
                })
                .collect()
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.num("timeout", 300) as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

fn namespace_of(i: usize) -> String {
    format!("team-{:02}", i % NAMESPACES)
}

fn link(
    name: &str,
    selector: (&str, &str),
    zone: &str,
    site: &str,
    static_ip: Option<&str>,
) -> Value {
    let mut link = json!({
        "apiVersion": LINK_API,
        "kind": LINK_KIND,
        "metadata": {"name": name},
        "spec": {
            "services": {"selector": {"matchLabels": {selector.0: selector.1}}},
            "dns": {"zone": zone},
            "appServices": {"targets": [{"subscriptionId": SUB, "resourceGroup": RG, "name": site}]},
        },
    });
    if let Some(ip) = static_ip {
        link["spec"]["dns"]["service"] = json!({"staticIP": ip});
    }
    link
}

fn site(name: &str) -> SiteId {
    SiteId::new(SUB, RG, name)
}

// ---------------------------------------------------------------------------------------------
// The world: both simulations, and the operator process

struct Operator {
    child: Child,
    log: PathBuf,
    started: Instant,
    port: Option<u16>,
}

impl Operator {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

struct World {
    sim: Arc<SimCluster>,
    azure: AzureSim,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    operator: Option<Operator>,
    runs: usize,
    /// Services seeded so far, by index.
    seeded: usize,
    /// Time spent seeding (the simulation's cost, not the operator's).
    seeding: Duration,
    /// How far [`World::activity`] has read the apiserver's log, and the operator's requests
    /// (without watches) in that part.
    kube_read: Mutex<(usize, usize)>,
}

impl World {
    async fn new() -> World {
        let sim = SimCluster::start(SimOptions::default())
            .await
            .expect("kube-sim starts");
        let azure = AzureSim::start(AzureSimOptions {
            clients: vec![(CLIENT_ID.to_string(), CLIENT_SECRET.to_string())],
            ..Default::default()
        })
        .await
        .expect("azure-sim starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let ca = dir.path().join("azure-ca.pem");
        azure.write_ca(&ca).unwrap();
        let env = [
            ("APPSERVICELINK_ARM_ENDPOINT", azure.arm_endpoint()),
            ("AZURE_AUTHORITY_HOST", azure.authority_host()),
            ("APPSERVICELINK_AZURE_CA_BUNDLE", ca.display().to_string()),
            ("APPSERVICELINK_AZURE_CREDENTIAL", "client-secret".into()),
            ("AZURE_TENANT_ID", azure.tenant_id().to_string()),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ("AZURE_CLIENT_SECRET", CLIENT_SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        sim.apply_as(
            "bench",
            serde_json::to_value(appservicelink::crd::crd()).unwrap(),
        )
        .expect("the CRD applies");
        for doc in include_str!("../tests/e2e/fixtures/kube-system.yaml").split("\n---\n") {
            let obj: Value = serde_norway::from_str(doc).expect("fixture parses");
            sim.apply_as("bench", obj)
                .expect("kube-system fixture applies");
        }
        for i in 0..NAMESPACES {
            sim.apply_as(
                "bench",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_of(i)}}),
            )
            .expect("namespace applies");
        }
        World {
            sim: Arc::new(sim),
            azure,
            dir,
            kubeconfig,
            env,
            http: reqwest::Client::builder()
                .user_agent(BENCH_UA)
                .build()
                .unwrap(),
            operator: None,
            runs: 0,
            seeded: 0,
            seeding: Duration::ZERO,
            kube_read: Mutex::new((0, 0)),
        }
    }

    /// Applies one realistic Service with index `i` (named `svc-<i>`).
    fn add_service(&self, i: usize, label: Option<(&str, &str)>) {
        let (svc, gitops) = realistic_service(&namespace_of(i), &format!("svc-{i}"), label);
        self.sim
            .apply_as("kubectl-client-side-apply", svc)
            .expect("Service applies");
        self.sim
            .apply_as("argocd-controller", gitops)
            .expect("Service labels apply");
    }

    /// Seeds `count` more Services, labelled by `label(index)`.
    fn seed<'a>(&mut self, count: usize, label: impl Fn(usize) -> Option<(&'a str, String)>) {
        let started = Instant::now();
        let mut last_report = Instant::now();
        for i in self.seeded..self.seeded + count {
            let label = label(i);
            self.add_service(i, label.as_ref().map(|(k, v)| (*k, v.as_str())));
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  seeding: {} of {count} Services in {:.0} s",
                    i + 1 - self.seeded,
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
        self.seeded += count;
        self.seeding += started.elapsed();
    }

    async fn delete_service(&self, i: usize) {
        let url = format!(
            "{}/api/v1/namespaces/{}/services/svc-{i}",
            self.sim.url(),
            namespace_of(i)
        );
        let response = self.http.delete(url).send().await.expect("DELETE sent");
        assert!(
            response.status().is_success(),
            "DELETE svc-{i}: {}",
            response.status()
        );
    }

    fn add_site(&self, name: &str) {
        self.azure.add_site(
            site(name),
            BTreeMap::from([("KEEP".to_string(), "1".to_string())]),
        );
    }

    fn apply_link(&self, link: Value) {
        self.sim.apply_as("kubectl", link).expect("link applies");
    }

    fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "operator already running");
        self.runs += 1;
        let logs = std::env::var_os("APPSERVICELINK_BENCH_LOGS")
            .map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from);
        let log = logs.join(format!("operator-{}.log", self.runs));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(operator_binary())
            .args([
                "run",
                "--resync-seconds",
                "3600",
                // Its load balancers are on 10.240.0.0/16, where nothing answers DNS (and this
                // machine must send nothing there).
                "--check-names=false",
                // Every IP change is written at once: the benchmark measures one change's path.
                "--app-service-write-window-seconds",
                "0",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("APPSERVICELINK_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("APPSERVICELINK_HTTP_PORT", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("operator binary starts");
        self.operator = Some(Operator {
            child,
            log,
            started: Instant::now(),
            port: None,
        });
    }

    fn operator(&mut self) -> &mut Operator {
        self.operator.as_mut().expect("operator running")
    }

    /// Asks the operator to stop (SIGTERM, as the kubelet does) and waits for it.
    async fn stop_operator(&mut self) {
        let Some(mut op) = self.operator.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &op.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while op.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = op.child.kill();
        let _ = op.child.wait();
    }

    fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                std::fs::read_to_string(self.dir.path().join(format!("operator-{run}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn fail(&self, what: &str) -> ! {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}\n--- last lines of the operator's log ---\n{}",
            tail.join("\n")
        );
    }

    /// The port of the operator's /metrics, once it has logged it.
    async fn metrics_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let op = self.operator();
            if let Some(port) = op.port {
                return port;
            }
            let log = std::fs::read_to_string(&op.log).unwrap_or_default();
            let port = log
                .lines()
                .find(|l| l.contains("serving /healthz"))
                .and_then(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("address="))
                })
                .and_then(|a| a.rsplit(':').next()?.parse().ok());
            if let Some(port) = port {
                op.port = Some(port);
                return port;
            }
            if Instant::now() > deadline {
                self.fail("the operator never logged its HTTP port");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn metrics(&mut self) -> String {
        let port = self.metrics_port().await;
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The operator's memory (VmRSS, VmHWM).
    fn memory(&mut self) -> Memory {
        let pid = self.operator().pid();
        Memory::of(pid)
    }

    fn ready(&self, link: &str) -> bool {
        self.sim
            .get(LINK_API, LINK_KIND, None, link)
            .is_some_and(|l| {
                l["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
    }

    fn ready_count(&self, links: &[String]) -> usize {
        links.iter().filter(|l| self.ready(l)).count()
    }

    /// Waits until every link is Ready; how long that took from the operator's start, or `None`
    /// after `timeout`.
    /// Starts the operator and waits until every link in `links` is Ready, failing the run if one
    /// is not within `timeout`.
    async fn start_until_ready(&mut self, links: &[String], timeout: Duration) {
        self.start_operator();
        if self.wait_ready(links, timeout).await.is_none() {
            self.fail(&not_ready(self, links, timeout));
        }
    }

    async fn wait_ready(&mut self, links: &[String], timeout: Duration) -> Option<Duration> {
        let started = self.operator().started;
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready_count(links) == links.len() {
                return Some(started.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Every request the operator made to the apiserver.
    fn kube_requests(&self) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(by_operator)
            .collect()
    }

    /// How many requests the operator has made so far (apiserver, ARM), without watches (a watch
    /// is reopened when the server ends it, whatever the operator is doing).
    fn activity(&self) -> (usize, usize) {
        // Only what came since the last call is read: cloning the whole log at every poll would take
        // the CPU the operator is being measured on.
        let mut read = self.kube_read.lock().unwrap();
        let new = self.sim.requests_since(read.0);
        read.0 += new.len();
        read.1 += new
            .iter()
            .filter(|r| r.verb != "watch" && by_operator(r))
            .count();
        (read.1, self.azure.request_count())
    }

    /// Waits until the operator has made no request for [`QUIET`]; returns when its last request
    /// came, or `None` after `timeout`.
    async fn wait_quiet(&self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = self.activity();
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.activity();
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() >= QUIET {
                return Some(last_change);
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }
}

/// Whether the operator sent `r` (not the benchmark, nor its `kubectl` applies).
fn by_operator(r: &RecordedRequest) -> bool {
    r.user_agent != BENCH_UA && !r.user_agent.starts_with("kubectl")
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut op) = self.operator.take() {
            let _ = op.child.kill();
            let _ = op.child.wait();
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
        }
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The sum of every series of a Prometheus family whose labels contain `labels`.
fn metric_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{'))
                .then_some(())
                .filter(|_| rest.contains(labels))?;
            value.parse::<f64>().ok()
        })
        .sum()
}

fn reconciles(metrics: &str) -> f64 {
    metric_sum(metrics, "appservicelink_reconciles_total", "")
}

fn table(title: &str, rows: &[(String, String)]) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(7);
    let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
    println!("\n### {title}\n");
    println!("| {:width$} | {:value_width$} |", "Measure", "Result");
    println!("| {} | {} |", "-".repeat(width), "-".repeat(value_width));
    for (k, v) in rows {
        println!("| {k:width$} | {v:value_width$} |");
    }
    println!();
}

fn row(k: impl Into<String>, v: impl Into<String>) -> (String, String) {
    (k.into(), v.into())
}

/// What the operator's requests to the apiserver did.
#[derive(Default)]
struct KubeCounts {
    total: usize,
    service_writes: usize,
    dns_service_writes: usize,
    event_writes: usize,
    status_writes: usize,
    /// Finalizers and annotations on the links.
    link_writes: usize,
    configmap_writes: usize,
    deployment_writes: usize,
    other_writes: usize,
    /// GETs of ConfigMaps, by name.
    configmap_gets: BTreeMap<String, usize>,
    deployment_gets: usize,
}

impl KubeCounts {
    fn of(requests: &[RecordedRequest]) -> KubeCounts {
        let dns_path = format!(
            "/api/v1/namespaces/{}/services/{}",
            DNS_SERVICE.0, DNS_SERVICE.1
        );
        let mut c = KubeCounts::default();
        for r in requests {
            if r.verb == "watch" {
                continue;
            }
            c.total += 1;
            let path = r.path.as_str();
            let links = path.contains("/appservicelinks/");
            if r.is_write() {
                let count = if path.starts_with(&dns_path) {
                    &mut c.dns_service_writes
                } else if path.starts_with("/api/v1/") && path.contains("/services/") {
                    &mut c.service_writes
                } else if path.contains("/events") {
                    &mut c.event_writes
                } else if links && path.ends_with("/status") {
                    &mut c.status_writes
                } else if links {
                    &mut c.link_writes
                } else if path.contains("/configmaps/") {
                    &mut c.configmap_writes
                } else if path.contains("/deployments/") {
                    &mut c.deployment_writes
                } else {
                    &mut c.other_writes
                };
                *count += 1;
            } else if r.verb == "get" && path.contains("/configmaps/") {
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                *c.configmap_gets.entry(name).or_default() += 1;
            } else if r.verb == "get" && path.contains("/deployments/") {
                c.deployment_gets += 1;
            }
        }
        c
    }

    fn writes(&self) -> usize {
        self.service_writes
            + self.dns_service_writes
            + self.event_writes
            + self.status_writes
            + self.link_writes
            + self.configmap_writes
            + self.deployment_writes
            + self.other_writes
    }

    fn rows(&self) -> Vec<(String, String)> {
        let configmaps: Vec<String> = self
            .configmap_gets
            .iter()
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        let configmap_gets = self.configmap_gets.values().sum::<usize>();
        let mut rows: Vec<(String, String)> = [
            ("apiserver requests (without watches)", self.total),
            ("Service writes (selected Services)", self.service_writes),
            ("DNS Service writes", self.dns_service_writes),
            ("Event writes", self.event_writes),
            ("link status writes", self.status_writes),
            ("link writes (finalizer, annotations)", self.link_writes),
            ("ConfigMap writes", self.configmap_writes),
            ("Deployment writes", self.deployment_writes),
            ("other writes", self.other_writes),
        ]
        .into_iter()
        .map(|(k, v)| row(k, v.to_string()))
        .collect();
        rows.push(row(
            "GET ConfigMap",
            if configmaps.is_empty() {
                "0".to_string()
            } else {
                format!("{configmap_gets} ({})", configmaps.join(", "))
            },
        ));
        rows.push(row("GET Deployment", self.deployment_gets.to_string()));
        rows
    }
}

/// ARM requests by method and what they address under the site, e.g. `POST config/appsettings/list`.
fn arm_counts(requests: &[ArmRequest]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests {
        let lower = r.path.to_ascii_lowercase();
        let under_site = lower
            .split_once("/providers/microsoft.web/sites/")
            .map(|(_, rest)| {
                let mut parts = rest.splitn(2, '/');
                parts.next();
                parts.next().unwrap_or("site").to_string()
            })
            .unwrap_or_else(|| r.path.clone());
        *counts
            .entry(format!("{} {under_site}", r.method))
            .or_default() += 1;
    }
    if counts.is_empty() {
        return "0".into();
    }
    let total: usize = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{total} ({})", parts.join(", "))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// `links` links `l000`, `l001`, ... of `per_link` Services each (label `scale.bench/link`), each
/// naming its own App Service, all sharing the DNS Service (no static IP).
fn seed_links(world: &mut World, links: usize, per_link: usize) -> Vec<String> {
    let names: Vec<String> = (0..links).map(|i| format!("l{i:03}")).collect();
    let first = world.seeded;
    world.seed(links * per_link, |i| {
        Some((
            "scale.bench/link",
            format!("l{:03}", (i - first) / per_link),
        ))
    });
    for name in &names {
        world.add_site(&format!("web-{name}"));
        world.apply_link(link(
            name,
            ("scale.bench/link", name),
            &format!("{name}.internal"),
            &format!("web-{name}"),
            None,
        ));
    }
    names
}

fn not_ready(world: &World, links: &[String], timeout: Duration) -> String {
    format!(
        "not all Ready after {} ({} of {} Ready)",
        secs(timeout),
        world.ready_count(links),
        links.len()
    )
}

async fn services(args: &Args) {
    let total = args.num("services", 10_000);
    let selected = args.num("selected", 1_000).min(total);
    let timeout = args.timeout();
    let mut rows = Vec::new();
    {
        let mut world = World::new().await;
        world.add_site("web-services");
        world.seed(selected, |_| {
            Some(("appservicelink.io/expose", "true".into()))
        });
        world.seed(total - selected, |_| None);
        world.apply_link(link(
            "services",
            ("appservicelink.io/expose", "true"),
            "services.internal",
            "web-services",
            None,
        ));
        let seeding = world.seeding;
        world.start_operator();
        let names = vec!["services".to_string()];
        let took = world.wait_ready(&names, timeout).await;
        let after = world.memory();
        rows.push(row(
            format!("start → Ready, {selected} selected of {total} Services"),
            took.map_or_else(|| not_ready(&world, &names, timeout), secs),
        ));
        world.wait_quiet(timeout).await;
        let quiet = world.memory();
        rows.push(row("RSS at Ready", mb(after.rss_kb)));
        rows.push(row("RSS once quiet", mb(quiet.rss_kb)));
        rows.push(row("peak RSS (VmHWM)", mb(quiet.hwm_kb)));
        rows.extend(KubeCounts::of(&world.kube_requests()).rows());
        rows.push(row("ARM requests", arm_counts(&world.azure.requests())));
        rows.push(row("(seeding the simulation, not measured)", secs(seeding)));
    }
    table(
        &format!("services: {selected} of {total} Services selected by one link"),
        &rows,
    );

    let points = args.list("rss-points", &[0, 2_500, 10_000]);
    if points.is_empty() {
        return;
    }
    let selected = args.num("rss-selected", 100);
    let mut world = World::new().await;
    world.add_site("web-services");
    world.seed(selected, |_| {
        Some(("appservicelink.io/expose", "true".into()))
    });
    world.apply_link(link(
        "services",
        ("appservicelink.io/expose", "true"),
        "services.internal",
        "web-services",
        None,
    ));
    let names = vec!["services".to_string()];
    let mut rows = Vec::new();
    let mut sorted = points.clone();
    sorted.sort();
    for point in sorted {
        let more = (point + selected).saturating_sub(world.seeded);
        world.seed(more, |_| None);
        world.start_operator();
        let took = world.wait_ready(&names, timeout).await;
        if took.is_none() {
            world.fail(&not_ready(&world, &names, timeout));
        }
        // Ready may still be the previous run's: wait until this one has reconciled and is quiet.
        let deadline = Instant::now() + timeout;
        while reconciles(&world.metrics().await) < 1.0 {
            if Instant::now() > deadline {
                world.fail("the restarted operator never reconciled");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        world.wait_quiet(timeout).await;
        let m = world.memory();
        rows.push(row(
            format!("{point} unselected + {selected} selected Services"),
            format!("RSS {}, peak {}", mb(m.rss_kb), mb(m.hwm_kb)),
        ));
        world.stop_operator().await;
    }
    table(
        &format!("services: RSS once Ready and quiet, {selected} selected"),
        &rows,
    );
}

async fn links(args: &Args) {
    let links = args.num("links", 100);
    let per_link = args.num("per-link", 20);
    let timeout = args.timeout();
    let mut world = World::new().await;
    let names = seed_links(&mut world, links, per_link);
    world.start_operator();
    let took = world.wait_ready(&names, timeout).await;
    let mut rows = vec![row(
        format!("start → all {links} links Ready"),
        took.map_or_else(|| not_ready(&world, &names, timeout), secs),
    )];
    let started = world.operator().started;
    let quiet = world.wait_quiet(timeout).await;
    rows.push(row(
        "start → quiet (last request)",
        quiet.map_or_else(
            || "never quiet".to_string(),
            |at| secs(at.duration_since(started)),
        ),
    ));
    let c = KubeCounts::of(&world.kube_requests());
    rows.push(row(
        format!("Service patches ({} Services)", links * per_link),
        c.service_writes.to_string(),
    ));
    rows.push(row("Event writes", c.event_writes.to_string()));
    rows.push(row("link status writes", c.status_writes.to_string()));
    rows.extend(c.rows().into_iter().filter(|(k, _)| {
        !k.starts_with("Service writes") && k != "Event writes" && k != "link status writes"
    }));
    rows.push(row("ARM requests", arm_counts(&world.azure.requests())));
    let m = world.memory();
    rows.push(row("RSS once quiet", mb(m.rss_kb)));
    table(
        &format!("links: {links} links of {per_link} Services"),
        &rows,
    );
}

async fn zone_edit(args: &Args) {
    let links = args.num("links", 50);
    let per_link = args.num("per-link", 20);
    let timeout = args.timeout();
    let mut world = World::new().await;
    let names = seed_links(&mut world, links, per_link);
    world.start_until_ready(&names, timeout).await;
    if world.wait_quiet(timeout).await.is_none() {
        world.fail("the operator never went quiet after converging");
    }
    let kube_before = world.kube_requests().len();
    let arm_before = world.azure.requests().len();
    let reconciles_before = reconciles(&world.metrics().await);
    let edited = &names[0];
    let zone = format!("{edited}-edited.internal");
    let edited_at = Instant::now();
    world.apply_link(link(
        edited,
        ("scale.bench/link", edited),
        &zone,
        &format!("web-{edited}"),
        None,
    ));
    let in_override = |world: &World| {
        world
            .sim
            .get("v1", "ConfigMap", Some("kube-system"), "coredns-custom")
            .and_then(|cm| {
                cm["data"].as_object().map(|d| {
                    d.values()
                        .any(|v| v.as_str().is_some_and(|v| v.contains(&zone)))
                })
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + timeout;
    while !in_override(&world) {
        if Instant::now() > deadline {
            world.fail("the edited zone never reached coredns-custom");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to_override = edited_at.elapsed();
    let quiet = world.wait_quiet(timeout).await;
    let after = world.kube_requests().split_off(kube_before);
    let arm_after = world.azure.requests().split_off(arm_before);
    let reconciled = reconciles(&world.metrics().await) - reconciles_before;
    let c = KubeCounts::of(&after);
    let mut rows = vec![
        row("edit → new zone in coredns-custom", ms(to_override)),
        row(
            "edit → quiet (last request)",
            quiet.map_or_else(
                || "never quiet".to_string(),
                |at| ms(at.duration_since(edited_at)),
            ),
        ),
        row("reconciles (operator's metrics)", format!("{reconciled}")),
    ];
    rows.extend(c.rows());
    rows.push(row("ARM requests", arm_counts(&arm_after)));
    rows.push(row(
        "all links still Ready",
        (world.ready_count(&names) == links).to_string(),
    ));
    table(
        &format!("zone-edit: one link's zone edited among {links} links of {per_link} Services"),
        &rows,
    );
}

/// Creates and deletes `count` unselected Services from index `first` at `rate` operations a
/// second, `window` alive at a time, until done or `stop` is set. Returns the operations made.
async fn churn(
    world: &World,
    first: usize,
    count: usize,
    rate: usize,
    window: usize,
    stop: &AtomicBool,
) -> usize {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut created = 0;
    let mut deleted = 0;
    while deleted < count && !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if created < count && created - deleted < window {
            world.add_service(first + created, None);
            created += 1;
        } else {
            world.delete_service(first + deleted).await;
            deleted += 1;
        }
    }
    // Leave no churned Service behind.
    while deleted < created {
        world.delete_service(first + deleted).await;
        deleted += 1;
    }
    created + deleted
}

async fn churn_scenario(args: &Args) {
    let count = args.num("churn", 5_000);
    let rate = args.num("rate", 85);
    // All of them alive at once by default, as a deployment wave and its teardown would be.
    let window = args.num("window", count).max(1);
    let per_link = args.num("per-link", 20);
    let timeout = args.timeout();
    let mut world = World::new().await;
    let names = seed_links(&mut world, 1, per_link);
    world.start_until_ready(&names, timeout).await;
    world.wait_quiet(timeout).await;
    let before = world.memory();
    let reconciles_before = reconciles(&world.metrics().await);
    let kube_before = world.kube_requests().len();
    let arm_before = world.azure.requests().len();
    let pid = world.operator().pid();
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(Memory::of(pid).rss_kb);
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let first = world.seeded;
    let started = Instant::now();
    let ops = churn(&world, first, count, rate, window, &AtomicBool::new(false)).await;
    let took = started.elapsed();
    world.wait_quiet(timeout).await;
    // Give the allocator time to hand memory back, as it would between bursts in a cluster.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sampling.store(false, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    let after = world.memory();
    let reconciled = reconciles(&world.metrics().await) - reconciles_before;
    let kube = KubeCounts::of(&world.kube_requests().split_off(kube_before));
    let arm = world.azure.requests().split_off(arm_before);
    table(
        &format!(
            "churn: {count} unselected Services created and deleted, {window} alive at a time, beside one link of {per_link}"
        ),
        &[
            row(
                "operations",
                format!(
                    "{ops} in {} ({:.0} ops/s)",
                    secs(took),
                    ops as f64 / took.as_secs_f64()
                ),
            ),
            row("RSS before", mb(before.rss_kb)),
            row("RSS peak (sampled every 50 ms)", mb(peak)),
            row("RSS after, settled", mb(after.rss_kb)),
            row("VmHWM", mb(after.hwm_kb)),
            row("reconciles during churn", format!("{reconciled}")),
            row("apiserver requests during churn (without watches)", kube.total.to_string()),
            row("ARM requests during churn", arm_counts(&arm)),
        ],
    );
}

/// Records every IP the DNS Service's status shows, with when it was first seen: a thread of its
/// own reads the Service each time a write commits in the simulation (polling would take the CPU
/// the operator is being timed on).
struct IpWatch {
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IpWatch {
    fn start(sim: Arc<SimCluster>) -> IpWatch {
        let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let mut changes = sim.changes();
                let mut last = String::new();
                while !stop.load(Ordering::Relaxed) {
                    let ip = sim
                        .get("v1", "Service", Some(DNS_SERVICE.0), DNS_SERVICE.1)
                        .and_then(|s| {
                            s["status"]["loadBalancer"]["ingress"][0]["ip"]
                                .as_str()
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    if ip != last {
                        seen.lock().unwrap().push((ip.clone(), Instant::now()));
                        last = ip;
                    }
                    // The next commit, or a look at `stop` every 100 ms.
                    let next = runtime.block_on(async {
                        tokio::select! {
                            changed = changes.changed() => changed.is_ok(),
                            () = tokio::time::sleep(Duration::from_millis(100)) => true,
                        }
                    });
                    if !next {
                        return;
                    }
                }
            })
        };
        IpWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn first_seen(&self, ip: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|(seen, _)| seen == ip)
            .map(|(_, at)| *at)
    }
}

impl Drop for IpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct IpRounds {
    latencies: Vec<Duration>,
    arm_per_change: Vec<usize>,
    arm: Vec<ArmRequest>,
    /// Per round: its latency, and what the operator sent from the link's edit to the ARM write.
    timelines: Vec<(Duration, Vec<String>)>,
}

/// What the operator sent during one round, in order, each at its offset from the new IP's first
/// appearance in the DNS Service's status (negative: before it).
fn timeline(
    seen: Instant,
    kube: &[RecordedRequest],
    arm: &[ArmRequest],
    until: Instant,
) -> Vec<String> {
    let offset = |at: Instant| {
        if at >= seen {
            at.duration_since(seen).as_secs_f64() * 1000.0
        } else {
            -(seen.duration_since(at).as_secs_f64() * 1000.0)
        }
    };
    let mut lines: Vec<(f64, String)> = kube
        .iter()
        .filter(|r| r.verb != "watch" && r.at <= until)
        .map(|r| {
            (
                offset(r.at),
                format!("apiserver {} {} {}", r.verb, r.path, r.status),
            )
        })
        .chain(arm.iter().filter(|r| r.at <= until).map(|r| {
            (
                offset(r.at),
                format!("ARM {} {} {}", r.method, r.path, r.status),
            )
        }))
        .collect();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(seen.elapsed());
    lines.push((
        0.0,
        format!(
            "(the new IP in the DNS Service's status; Unix time {:.6})",
            wall.as_secs_f64()
        ),
    ));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines
        .into_iter()
        .map(|(at, what)| format!("{at:>8.1} ms  {what}"))
        .collect()
}

/// Changes the DNS IP `changes` times, starting at IP number `first`: each time, from the new IP in
/// the DNS Service's status to the ARM write carrying it, and the ARM requests until quiet.
async fn ip_rounds(
    world: &World,
    watch: &IpWatch,
    first: usize,
    changes: usize,
    timeout: Duration,
) -> IpRounds {
    let mut rounds = IpRounds {
        latencies: Vec::new(),
        arm_per_change: Vec::new(),
        arm: Vec::new(),
        timelines: Vec::new(),
    };
    for round in first..first + changes {
        let ip = format!("10.240.{}.{}", 4 + round / 250, 1 + round % 250);
        // The logs are only counted and read from here on: cloning them whole at every poll would
        // take the CPU the operator is being timed on.
        let arm_before = world.azure.request_count();
        let kube_before = world.sim.request_count();
        world.apply_link(link(
            "ip",
            ("scale.bench/link", "l000"),
            "ip.internal",
            "web-l000",
            Some(&ip),
        ));
        let deadline = Instant::now() + timeout;
        let written = loop {
            let write = world
                .azure
                .requests_since(arm_before)
                .into_iter()
                .find(|r| {
                    r.is_write()
                        && r.body
                            .as_ref()
                            .is_some_and(|b| b.to_string().contains(&format!("\"{ip}\"")))
                });
            if let Some(write) = write {
                break write.at;
            }
            if Instant::now() > deadline {
                world.fail(&format!("no ARM write with {ip}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let seen = watch
            .first_seen(&ip)
            .unwrap_or_else(|| world.fail(&format!("{ip} never seen in the DNS Service's status")));
        let latency = written.saturating_duration_since(seen);
        rounds.latencies.push(latency);
        let kube: Vec<RecordedRequest> = world
            .sim
            .requests_since(kube_before)
            .into_iter()
            .filter(by_operator)
            .collect();
        rounds.timelines.push((
            latency,
            timeline(
                seen,
                &kube,
                &world.azure.requests_since(arm_before),
                written,
            ),
        ));
        // Until the operator is done with this change.
        let deadline = Instant::now() + timeout;
        while !world.ready("ip") {
            if Instant::now() > deadline {
                world.fail("the link did not get Ready again");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut last = world.azure.request_count();
        let mut last_change = Instant::now();
        while last_change.elapsed() < Duration::from_millis(500) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = world.azure.request_count();
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
        let arm = world.azure.requests_since(arm_before);
        rounds.arm_per_change.push(arm.len());
        rounds.arm.extend(arm);
    }
    rounds.latencies.sort();
    rounds
        .timelines
        .sort_by_key(|(latency, _)| std::cmp::Reverse(*latency));
    rounds
}

/// The `--explain` slowest rounds' timelines.
fn explain(label: &str, rounds: &IpRounds, slowest: usize) {
    for (latency, lines) in rounds.timelines.iter().take(slowest) {
        println!("{label}: a round of {}:", ms(*latency));
        for line in lines {
            println!("  {line}");
        }
    }
}

fn ip_rows(label: &str, rounds: &IpRounds) -> Vec<(String, String)> {
    let l = &rounds.latencies;
    let n = rounds.arm_per_change.len().max(1);
    let total: usize = rounds.arm_per_change.iter().sum();
    vec![
        row(
            format!("{label}: IP in status → ARM write, p50 / p90 / p99 / max"),
            format!(
                "{} / {} / {} / {}",
                ms(percentile(l, 0.5)),
                ms(percentile(l, 0.9)),
                ms(percentile(l, 0.99)),
                ms(l.last().copied().unwrap_or_default())
            ),
        ),
        row(
            format!("{label}: ARM requests per change, mean (min-max)"),
            format!(
                "{:.1} ({}-{})",
                total as f64 / n as f64,
                rounds.arm_per_change.iter().min().unwrap_or(&0),
                rounds.arm_per_change.iter().max().unwrap_or(&0)
            ),
        ),
        row(
            format!("{label}: ARM requests, all changes"),
            arm_counts(&rounds.arm),
        ),
    ]
}

async fn ip_change(args: &Args) {
    let changes = args.num("changes", 50);
    let per_link = args.num("per-link", 20);
    let rate = args.num("rate", 85);
    let timeout = args.timeout();
    let mut world = World::new().await;
    world.seed(per_link, |_| Some(("scale.bench/link", "l000".into())));
    world.add_site("web-l000");
    world.apply_link(link(
        "ip",
        ("scale.bench/link", "l000"),
        "ip.internal",
        "web-l000",
        Some("10.240.3.1"),
    ));
    world.start_operator();
    if world
        .wait_ready(&["ip".to_string()], timeout)
        .await
        .is_none()
    {
        world.fail("the link never got Ready");
    }
    world.wait_quiet(timeout).await;
    let watch = IpWatch::start(world.sim.clone());
    let quiet = ip_rounds(&world, &watch, 0, changes, timeout).await;
    let stop = AtomicBool::new(false);
    let first = world.seeded;
    let (churned, ops) = tokio::join!(
        async {
            let rounds = ip_rounds(&world, &watch, changes, changes, timeout).await;
            stop.store(true, Ordering::Relaxed);
            rounds
        },
        // More than enough to last the rounds; stopped when they end.
        churn(&world, first, usize::MAX / 4, rate, 50, &stop)
    );
    let slowest = args.num("explain", 0);
    explain("without churn", &quiet, slowest);
    explain("under churn", &churned, slowest);
    let mut rows = ip_rows("without churn", &quiet);
    rows.extend(ip_rows(&format!("under churn ({rate} ops/s)"), &churned));
    rows.push(row("churn operations meanwhile", ops.to_string()));
    table(
        &format!("ip-change: {changes} DNS IP changes each, one link of {per_link} Services, one App Service"),
        &rows,
    );
}

async fn start(args: &Args) {
    let total = args.num("services", 10_000);
    let links = args.num("links", 10);
    let per_link = args.num("per-link", 100);
    let timeout = args.timeout();
    let mut world = World::new().await;
    let names = seed_links(&mut world, links, per_link);
    world.seed(total.saturating_sub(links * per_link), |_| None);
    world.start_until_ready(&names, timeout).await;
    world.wait_quiet(timeout).await;
    world.stop_operator().await;
    let kube_before = world.kube_requests().len();
    let arm_before = world.azure.requests().len();
    world.start_operator();
    let started = world.operator().started;
    let deadline = Instant::now() + timeout;
    let mut reconciled = None;
    let mut in_sync = None;
    while reconciled.is_none() || in_sync.is_none() {
        let metrics = world.metrics().await;
        let now = started.elapsed();
        if reconciled.is_none()
            && metric_sum(&metrics, "appservicelink_reconciles_total", "success") >= links as f64
        {
            reconciled = Some(now);
        }
        let confirmed = metrics
            .lines()
            .filter(|l| l.starts_with("appservicelink_app_service_seconds_since_in_sync{"))
            .count();
        if in_sync.is_none() && confirmed >= links {
            in_sync = Some(now);
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    world.wait_quiet(timeout).await;
    let m = world.memory();
    let kube = KubeCounts::of(&world.kube_requests().split_off(kube_before));
    let arm = world.azure.requests().split_off(arm_before);
    let writes = kube.writes();
    table(
        &format!(
            "start: the operator restarted on converged state, {links} links of {per_link} among {total} Services"
        ),
        &[
            row(
                format!("start → {links} successful reconciles"),
                reconciled.map_or_else(|| "never".into(), secs),
            ),
            row(
                format!("start → {links} App Services confirmed in sync"),
                in_sync.map_or_else(|| "never".into(), secs),
            ),
            row("apiserver requests until quiet (without watches)", kube.total.to_string()),
            row("apiserver writes", writes.to_string()),
            row("ARM requests", arm_counts(&arm)),
            row("RSS once quiet", mb(m.rss_kb)),
            row("all links still Ready", (world.ready_count(&names) == links).to_string()),
        ],
    );
}

/// What a bare kube-rs reflector of every Service costs, keeping whole objects or pruned ones: the
/// floor the operator's Service cache can reach. Each runs as a child process (this binary, mode
/// `cache-probe-child`) against `--services` Services; memory once its store is ready.
async fn cache_probe(args: &Args) {
    let total = args.num("services", 3_000);
    let mut world = World::new().await;
    world.seed(total, |_| None);
    let mut rows = Vec::new();
    let mut empty = Memory::default();
    for mode in ["empty", "whole", "pruned", "operator", "records"] {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["cache-probe-child", "--mode", mode])
            .env("KUBECONFIG", &world.kubeconfig)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("probe starts");
        let pid = child.id().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        let ready = tokio::time::timeout(args.timeout(), lines.next_line())
            .await
            .expect("probe ready in time")
            .unwrap()
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = Memory::of(pid);
        if mode == "empty" {
            empty = m;
        }
        let per_service = |kb: u64| {
            if mode == "empty" || total == 0 {
                String::new()
            } else {
                format!(
                    ", {:.1} KB per Service",
                    kb.saturating_sub(empty.rss_kb) as f64 / total as f64
                )
            }
        };
        rows.push(row(
            format!("{mode} ({ready})"),
            format!(
                "RSS {}, peak {}{}",
                mb(m.rss_kb),
                mb(m.hwm_kb),
                per_service(m.rss_kb)
            ),
        ));
        let _ = child.kill().await;
    }
    table(
        &format!(
            "cache-probe: a bare reflector of {total} Services (empty: one namespace without any)"
        ),
        &rows,
    );
}

/// The child of [`cache_probe`]: reflects Services (in an empty namespace for `empty`, dropping
/// managedFields and the last-applied annotation for `pruned`, pruned as the operator prunes them
/// for `operator`), says when its store is ready, and waits to be killed.
async fn cache_probe_child(args: &Args) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let mode = args.flags.get("mode").cloned().unwrap_or_default();
    let client = kube::Client::try_default().await.expect("kubeconfig");
    let api: kube::Api<Service> = if mode == "empty" {
        kube::Api::namespaced(client, "default")
    } else {
        kube::Api::all(client)
    };
    let prune = mode == "pruned";
    let operator = mode == "operator";
    if mode == "records" {
        // The operator's own cache (its pruning, then one compact record per Service) and its
        // allocator settings (runtime::memory).
        appservicelink::runtime::memory::tune();
        let cache = appservicelink::context::services::ServiceCache::new();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(appservicelink::cache::service));
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            cache.apply(&event, appservicelink::cache::service_record);
            if matches!(event, watcher::Event::InitDone) {
                appservicelink::runtime::memory::give_back();
                println!("{} Services cached, {}", cache.len(), heap_in_use());
            }
        }
        return;
    }
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |svc: &mut Service| {
            if operator {
                appservicelink::cache::service(svc);
            } else if prune {
                svc.metadata.managed_fields = None;
                if let Some(a) = svc.metadata.annotations.as_mut() {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            }
        })
        .reflect(writer)
        .touched_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.expect("store ready");
    println!(
        "{} Services cached, {}",
        reader.state().len(),
        heap_in_use()
    );
    std::future::pending::<()>().await;
}

/// The bytes malloc has handed out and not had back (glibc's `mallinfo2`), as a table cell.
fn heap_in_use() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and only reads malloc's statistics.
        let info = unsafe { libc::mallinfo2() };
        format!("heap in use {:.1} MB", info.uordblks as f64 / 1e6)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    String::from("heap in use not known")
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let scenario = args.scenario.clone().unwrap_or_else(|| "all".into());
    if scenario == "cache-probe-child" {
        return cache_probe_child(&args).await;
    }
    if scenario == "cache-probe" {
        return cache_probe(&args).await;
    }
    let names: Vec<&str> = match scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        one if SCENARIOS.contains(&one) => vec![one],
        other => {
            eprintln!(
                "unknown scenario {other:?}: {}, all or cache-probe",
                SCENARIOS.join(", ")
            );
            std::process::exit(2);
        }
    };
    for name in names {
        match name {
            "services" => services(&args).await,
            "links" => links(&args).await,
            "zone-edit" => zone_edit(&args).await,
            "churn" => churn_scenario(&args).await,
            "ip-change" => ip_change(&args).await,
            "start" => start(&args).await,
            _ => unreachable!("every name comes from SCENARIOS"),
        }
    }
}

/// The scenarios `all` runs, in order.
const SCENARIOS: [&str; 6] = [
    "services",
    "links",
    "zone-edit",
    "churn",
    "ip-change",
    "start",
];
