//! One simulated cluster per test, the real operator binary against it, and kubectl to drive it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// How long a scenario waits for the operator to get somewhere before failing.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Harness {
    pub sim: SimCluster,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    operator: Option<Child>,
    operator_runs: usize,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    azure: Option<AzureSim>,
}

impl Harness {
    /// A cluster with the CRD, a CoreDNS Deployment and `coredns-custom` holding an unrelated key,
    /// and no operator yet.
    pub async fn cluster() -> Harness {
        let sim = SimCluster::start(SimOptions::default())
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
            extra_args: Vec::new(),
            env: Vec::new(),
            azure: None,
        };
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
        let child = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,appservicelink=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("operator binary starts");
        self.operator = Some(child);
    }

    /// Kills the operator abruptly, as a node failure would.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("operator-{run}.log"))
    }

    /// Everything the operator logged, across restarts.
    pub fn operator_log(&self) -> String {
        (1..=self.operator_runs)
            .map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default())
            .collect()
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

    /// Waits until the operator has run a full reconcile after request number `since` (it reads the
    /// CoreDNS Deployment last), then lets any writes of that pass land.
    pub async fn settle_after(&self, since: usize) {
        self.eventually("a reconcile to run", |h| {
            h.operator_requests()
                .iter()
                .skip(since)
                .any(|r| r.method == "GET" && r.path.ends_with("/deployments/coredns"))
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill_operator();
        record_requests(&self.operator_requests());
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
