//! One simulated cluster per test, the real operator binary against it, and kubectl to drive it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use azure_sim::{AzureSim, AzureSimOptions};
use kube_sim::{RecordedRequest, SimCluster, SimOptions};
use serde_json::Value;

pub const LINKS: (&str, &str) = ("appservicelink.io/v1alpha1", "AppServiceLink");
pub const CRD: &str = include_str!("../../crds/appservicelink.io_appservicelinks.yaml");

/// The service principal the operator authenticates as against the simulated token endpoint.
const AZURE_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Its secret; a test asserts it never reaches the operator's log.
pub const AZURE_CLIENT_SECRET: &str = "sim-client-secret";

/// The namespace the Helm chart installs the operator in (tests/support/chart.rs renders it there).
pub const OPERATOR_NAMESPACE: &str = "appservicelink-system";

/// How long a scenario waits for the operator to get somewhere before failing.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Harness {
    pub sim: SimCluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    operator: Option<Child>,
    operator_runs: usize,
    /// Logs of the replicas started with [`Harness::spawn_replica`].
    replica_logs: Vec<PathBuf>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    azure: Option<AzureSim>,
    /// Why this test's requests are left out of the RBAC check, if they are.
    outside_chart_defaults: Option<&'static str>,
}

impl Harness {
    /// A cluster with the CRD, a CoreDNS Deployment and `coredns-custom` holding an unrelated key,
    /// and no operator yet.
    pub async fn cluster() -> Harness {
        Self::cluster_with(SimOptions::default()).await
    }

    /// A cluster as [`Harness::cluster`], simulated with these options (e.g. a load-balancer
    /// provisioning delay, or other subnets).
    pub async fn cluster_with(opts: SimOptions) -> Harness {
        let sim = SimCluster::start(opts)
            .await
            .expect("simulated apiserver starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let h = Harness {
            sim,
            dir,
            kubeconfig,
            operator: None,
            operator_runs: 0,
            replica_logs: Vec::new(),
            extra_args: Vec::new(),
            env: Vec::new(),
            azure: None,
            outside_chart_defaults: None,
        };
        h.kubectl_ok(&["create", "namespace", OPERATOR_NAMESPACE]);
        h.apply(CRD);
        h.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "crd/appservicelinks.appservicelink.io",
            "--timeout=20s",
        ]);
        h.apply(include_str!("fixtures/kube-system.yaml"));
        h
    }

    /// A cluster as [`Harness::cluster`] whose load balancers take loopback IPs of their own, where the
    /// simulated CoreDNS answers on the DNS Service's IP: the operator's name check runs for real.
    pub async fn cluster_with_dns() -> Harness {
        Self::cluster_with(SimOptions {
            internal_lbs: kube_sim::InternalLbs::Loopback,
            ..SimOptions::default()
        })
        .await
    }

    /// A cluster as [`Harness::cluster`] with the operator running.
    pub async fn start() -> Harness {
        let mut h = Self::cluster().await;
        h.start_operator();
        h
    }

    /// Starts the simulated ARM and token endpoint, and configures the operator to use them with a
    /// client-secret credential, trusting the simulation's CA.
    pub async fn with_azure(&mut self) {
        let sim = AzureSim::start(AzureSimOptions {
            clients: vec![(AZURE_CLIENT_ID.to_string(), AZURE_CLIENT_SECRET.to_string())],
            ..Default::default()
        })
        .await
        .expect("simulated Azure starts");
        let ca = self.dir.path().join("azure-ca.pem");
        sim.write_ca(&ca).unwrap();
        let env = [
            ("APPSERVICELINK_ARM_ENDPOINT", sim.arm_endpoint()),
            ("AZURE_AUTHORITY_HOST", sim.authority_host()),
            ("APPSERVICELINK_AZURE_CA_BUNDLE", ca.display().to_string()),
            (
                "APPSERVICELINK_AZURE_CREDENTIAL",
                "client-secret".to_string(),
            ),
            ("AZURE_TENANT_ID", sim.tenant_id().to_string()),
            ("AZURE_CLIENT_ID", AZURE_CLIENT_ID.to_string()),
            ("AZURE_CLIENT_SECRET", AZURE_CLIENT_SECRET.to_string()),
        ];
        self.env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        self.azure = Some(sim);
    }

    /// Switches the operator from the client secret to AKS workload identity, detected from the
    /// environment the webhook injects (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, ...).
    pub fn use_workload_identity(&mut self) {
        let token_file = self.dir.path().join("azure-identity-token");
        // A projected service-account token: a JWT, without a trailing newline.
        std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwc2VydmljZWxpbmsifQ.c2lnbmF0dXJl").unwrap();
        self.env
            .retain(|(k, _)| k != "AZURE_CLIENT_SECRET" && k != "APPSERVICELINK_AZURE_CREDENTIAL");
        self.env.push((
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            token_file.display().to_string(),
        ));
    }

    /// This test runs the operator with names the default chart values do not grant (they are
    /// values: `rbac.dnsServiceNames`, `controller.corednsDeployment`), so its requests stay out of
    /// the RBAC check against the default chart.
    pub fn outside_chart_defaults(&mut self, why: &'static str) {
        self.outside_chart_defaults = Some(why);
    }

    /// The simulated Azure side.
    pub fn azure(&self) -> &AzureSim {
        self.azure.as_ref().expect("with_azure() was called")
    }

    /// An extra environment variable for the operator (takes effect at the next start).
    #[allow(dead_code)] // used by tests/rbac.rs
    pub fn operator_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Extra flags for the operator's `run` command (takes effect at the next start).
    pub fn operator_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
    }

    pub fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "operator already running");
        self.operator_runs += 1;
        let log = std::fs::File::create(self.log_path(self.operator_runs)).unwrap();
        let mut args = vec!["run".to_string()];
        if !self.extra_args.iter().any(|a| a == "--resync-seconds") {
            args.extend(["--resync-seconds".to_string(), "3600".to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        let child = self
            .operator_command(&args, log)
            .spawn()
            .expect("operator binary starts");
        self.operator = Some(child);
    }

    fn operator_command(&self, args: &[String], log: std::fs::File) -> Command {
        let mut args = args.to_vec();
        if !self.sim.serves_dns() {
            // Even when a test passes the chart's `--check-names=true`: no DNS query may go to
            // 10.240.0.0/16 from this machine.
            for arg in args.iter_mut() {
                if arg == "--check-names=true" {
                    *arg = "--check-names=false".into();
                }
            }
            if let Some(i) = args.iter().position(|a| a == "--check-names") {
                if let Some(value) = args.get_mut(i + 1) {
                    *value = "false".into();
                }
            }
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_appservicelink"));
        command
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,appservicelink=debug")
            // Operators of tests running in parallel must not race for the default port.
            .env("APPSERVICELINK_HTTP_PORT", "0")
            // Without loopback load balancers nothing answers DNS on the DNS Service's IP (in
            // 10.240.0.0/16, where this machine must send nothing): no name check there.
            .env(
                "APPSERVICELINK_CHECK_NAMES",
                if self.sim.serves_dns() {
                    "true"
                } else {
                    "false"
                },
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// Starts one more operator process, `run` with `args`, named `name` through `POD_NAME` as the
    /// Downward API would; for leader election, beside or instead of [`Harness::start_operator`].
    pub fn spawn_replica(&mut self, name: &str, args: &[&str]) -> Replica {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut run = vec!["run".to_string()];
        run.extend(args.iter().map(|a| a.to_string()));
        let child = self
            .operator_command(&run, log)
            .env("POD_NAME", name)
            .spawn()
            .expect("operator binary starts");
        self.replica_logs.push(log_path.clone());
        Replica {
            name: name.to_string(),
            child,
            log: log_path,
        }
    }

    /// Kills the operator abruptly, as a node failure would.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running operator's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn operator_rss_kib(&self) -> u64 {
        let pid = self.operator.as_ref().expect("operator running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("operator-{run}.log"))
    }

    /// Everything the operator logged, across restarts, then what each replica logged.
    pub fn operator_log(&self) -> String {
        let mut log: String = (1..=self.operator_runs)
            .map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
            .collect();
        for path in &self.replica_logs {
            log.push_str(&format!("--- {} ---\n", path.display()));
            log.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        log
    }

    /// Runs kubectl against the simulated cluster.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl is installed");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and fails the test if it fails; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` with this YAML; fails the test if kubectl fails.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn get(
        &self,
        (api_version, kind): (&str, &str),
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.sim.get(api_version, kind, namespace, name)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<Value> {
        self.sim.get("v1", "Service", Some(namespace), name)
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        self.get(LINKS, None, name)
    }

    pub fn coredns_custom(&self) -> Value {
        self.sim
            .get("v1", "ConfigMap", Some("kube-system"), "coredns-custom")
            .expect("coredns-custom exists")
    }

    /// A condition of a link, as (status, reason, message).
    pub fn condition(&self, link: &str, type_: &str) -> Option<(String, String, String)> {
        let link = self.link(link)?;
        let c = link["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        Some((s("status"), s("reason"), s("message")))
    }

    /// Waits for `check` to return something, failing with `what` and the operator's log.
    pub async fn eventually<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&Harness) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for: {what}\n--- operator log ---\n{}",
                    self.operator_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, link: &str) {
        self.eventually(&format!("link {link} Ready"), |h| {
            h.condition(link, "Ready")
                .filter(|c| c.0 == "True")
                .map(|_| ())
        })
        .await;
    }

    /// Every request the operator made (anything that is not kubectl).
    pub fn operator_requests(&self) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| !r.user_agent.starts_with("kubectl"))
            .collect()
    }

    pub fn operator_writes(&self) -> Vec<RecordedRequest> {
        self.operator_requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    /// Where the operator stands now: how many requests it has made, and how many reconciles its
    /// current process has finished.
    pub fn mark(&self) -> Mark {
        Mark {
            requests: self.operator_requests().len(),
            run: self.operator_runs,
            reconciles: self.reconciles_finished().unwrap_or(0.0),
        }
    }

    /// Reconciles the running operator has finished, successful or not (its /metrics).
    fn reconciles_finished(&self) -> Option<f64> {
        let log = std::fs::read_to_string(self.log_path(self.operator_runs)).ok()?;
        let (_, metrics) = http_get(http_port(&log)?, "/metrics")?;
        let count = |result: &str| {
            sample(
                &metrics,
                &format!("appservicelink_reconciles_total{{result=\"{result}\"}}"),
            )
            .unwrap_or(0.0)
        };
        Some(count("success") + count("error"))
    }

    /// Waits until the operator has finished a reconcile after `mark` (counted on its /metrics),
    /// then lets any writes that reconcile set off land.
    pub async fn settle_after(&self, mark: &Mark) {
        self.eventually("a reconcile to run", |h| {
            let before = if h.operator_runs == mark.run {
                mark.reconciles
            } else {
                0.0
            };
            h.reconciles_finished()
                .filter(|&done| done > before)
                .map(drop)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// See [`Harness::mark`].
pub struct Mark {
    /// Requests the operator had made: `operator_requests().into_iter().skip(mark.requests)` are
    /// the later ones.
    pub requests: usize,
    run: usize,
    reconciles: f64,
}

/// An operator process started with [`Harness::spawn_replica`]; killed when dropped.
pub struct Replica {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Replica {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port of its /healthz, /readyz and /metrics, once it has logged it.
    pub fn http_port(&self) -> Option<u16> {
        http_port(&self.log())
    }

    /// Kills it abruptly (SIGKILL), as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM), as the kubelet does when deleting a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM to {}", self.name);
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port an operator logged for its HTTP endpoints.
pub fn http_port(log: &str) -> Option<u16> {
    let log = strip_ansi(log);
    let line = log.lines().find(|l| l.contains("serving /healthz"))?;
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))?;
    address.rsplit(':').next()?.parse().ok()
}

/// Removes terminal colour codes (the operator's text log has them).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter, e.g. ESC [ 3 m.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// `GET http://127.0.0.1:{port}{path}` as (status, body); `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of one Prometheus sample, `series` being its name and labels exactly as exposed.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill_operator();
        if self.outside_chart_defaults.is_none() {
            record_requests(&self.operator_requests());
        }
    }
}

/// With `APPSERVICELINK_RECORD_REQUESTS=<file>`, appends every request the operator made as one
/// JSON line each, for the RBAC check in tests/rbac.rs.
fn record_requests(requests: &[RecordedRequest]) {
    let Some(path) = std::env::var_os("APPSERVICELINK_RECORD_REQUESTS") else {
        return;
    };
    let lines: String = requests
        .iter()
        .map(|r| {
            let line = serde_json::json!({"method": r.method, "path": r.path, "query": r.query,
                "verb": r.verb, "status": r.status});
            format!("{line}\n")
        })
        .collect();
    use std::io::Write;
    // One append per harness, so concurrent tests never interleave lines. No panic: this runs in Drop.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "could not record requests to {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// Writes described as "METHOD path?query" for failure messages.
pub fn describe(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}?{} ({})", r.method, r.path, r.query, r.status))
        .collect()
}

/// Removes every CEL rule from a CRD: an old CRD that lets bad input in.
pub fn strip_validations(node: &mut Value) {
    match node {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_validations);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_validations),
        _ => {}
    }
}
