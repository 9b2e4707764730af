//! The README's first command, `appservicelink sandbox`, driven with kubectl as a person would; and
//! every example in examples/ applied and brought to Ready, so none can rot.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_sim::SiteId;
use serde_json::Value;

use crate::harness::Harness;

/// Runs kubectl against a kubeconfig; returns (success, stdout + stderr).
fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A plain HTTP GET on loopback, as curl would do it.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

async fn wait_for(what: &str, output: &Mutex<String>, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- sandbox output ---\n{}",
            output.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_runs_the_product_and_kubectl_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .args(["sandbox", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
    wait_for("the sandbox to be Ready", &output, || {
        output.lock().unwrap().contains("Press Ctrl-C to stop.")
    })
    .await;
    let printed = output.lock().unwrap().clone();
    let dns_ip = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("DNS server for App Services: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the DNS server is printed: {printed}"))
        .to_string();
    assert!(dns_ip.starts_with("127."), "on loopback: {dns_ip}");
    assert!(printed.contains("api.shop.contoso.internal"), "{printed}");
    // Every printed dig command works as printed, and answers the IP printed for its name.
    let digs: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("dig "))
        .collect();
    assert_eq!(digs.len(), 3, "one per linked name: {printed}");
    for command in digs {
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[1], format!("@{dns_ip}"), "{command}");
        let fqdn = words[2];
        let expected = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(fqdn).map(str::trim))
            .filter(|ip| ip.starts_with("127."))
            .unwrap_or_else(|| panic!("{fqdn}'s IP is printed: {printed}"));
        let out = Command::new(words[0]).args(&words[1..]).output().unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "{command}"
        );
    }
    assert!(printed.contains("export KUBECONFIG="), "{printed}");
    let curl = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("curl "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let (ok, table) = kubectl(&kubeconfig, &["get", "asl"]);
    assert!(
        ok && table.contains("web-to-backend") && table.contains("True") && table.contains(&dns_ip),
        "{table}"
    );
    let (ok, services) = kubectl(&kubeconfig, &["get", "svc", "-A"]);
    assert!(ok && services.contains("appservicelink-dns"), "{services}");
    let (ok, described) = kubectl(&kubeconfig, &["describe", "asl", "web-to-backend"]);
    assert!(ok && described.contains("Dns Server IP"), "{described}");
    assert!(
        described.contains("ServiceConverted") && described.contains("AppServiceUpdated"),
        "Events show: {described}"
    );
    let settings: Value = serde_json::from_str(&http_get(&curl).await).unwrap();
    let site = settings
        .as_object()
        .unwrap()
        .iter()
        .find(|(id, _)| id.ends_with("/sites/contoso-web"))
        .unwrap()
        .1
        .clone();
    assert_eq!(site["appSettings"]["WEBSITE_DNS_SERVER"], dns_ip.as_str());
    assert_eq!(
        site["appSettings"]["FEATURE_FLAGS"], "checkout-v2",
        "other settings intact"
    );

    // A person experiments: exposes another Service, moves the DNS IP, then deletes the link.
    let (ok, out) = kubectl(
        &kubeconfig,
        &[
            "-n",
            "shop",
            "label",
            "svc",
            "payments",
            "appservicelink.io/expose=true",
        ],
    );
    assert!(ok, "{out}");
    wait_for("payments to become internal", &output, || {
        kubectl(
            &kubeconfig,
            &[
                "-n",
                "shop",
                "get",
                "svc",
                "payments",
                "-o",
                "jsonpath={.spec.type}",
            ],
        )
        .1 == "LoadBalancer"
    })
    .await;
    // The patch exactly as the instructions print it.
    let patch = printed
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("kubectl patch asl web-to-backend --type merge -p ")
        })
        .unwrap()
        .trim_matches('\'')
        .to_string();
    let new_ip: String = serde_json::from_str::<Value>(&patch).unwrap()["spec"]["dns"]["service"]
        ["staticIP"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = kubectl(
        &kubeconfig,
        &[
            "patch",
            "asl",
            "web-to-backend",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
    );
    assert!(ok, "{out}");
    let mut moved = false;
    for _ in 0..150 {
        let settings: Value = serde_json::from_str(&http_get(&curl).await).unwrap();
        if settings
            .to_string()
            .contains(&format!("\"WEBSITE_DNS_SERVER\":\"{new_ip}\""))
        {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        moved,
        "the App Service follows the new DNS IP\n{}",
        output.lock().unwrap()
    );
    let (ok, out) = kubectl(
        &kubeconfig,
        &["delete", "asl", "web-to-backend", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    let (_, api_type) = kubectl(
        &kubeconfig,
        &[
            "-n",
            "shop",
            "get",
            "svc",
            "api",
            "-o",
            "jsonpath={.spec.type}",
        ],
    );
    assert_eq!(api_type, "ClusterIP", "restored");
    let settings = http_get(&curl).await;
    assert!(
        !settings.contains("WEBSITE_DNS_SERVER"),
        "App Service settings restored: {settings}"
    );
    let api_ip = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("api.shop.contoso.internal"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        output.lock().unwrap().contains(&format!(
            "Service shop/api: LoadBalancer, internal, IP {api_ip} → ClusterIP"
        )),
        "progress shows the restore"
    );

    // Then two teams, two zones, exactly as the instructions print it; their names resolve too.
    let two_zones = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sed ") && l.contains("examples/two-zones.yaml"))
        .unwrap();
    let applied = Command::new("sh")
        .args(["-c", two_zones])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{two_zones}: {applied:?}");
    wait_for("both teams' links to be Ready", &output, || {
        ["shop", "partners"].iter().all(|link| {
            kubectl(
                &kubeconfig,
                &[
                    "get",
                    "asl",
                    link,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"NamesResolve\")].status}",
                ],
            )
            .1 == "True"
        })
    })
    .await;

    // Ctrl-C stops it cleanly.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the sandbox exits 0 on Ctrl-C: {status:?}"
    );
}

#[test]
fn exit_when_ready_prints_the_summary_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .args(["sandbox", "--exit-when-ready", "--kubeconfig"])
        .arg(dir.path().join("kc"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Ready in") && stdout.contains("WEBSITE_DNS_SERVER=127."),
        "{stdout}"
    );
}

/// The files a sandbox run writes: its kubeconfig and the simulated Azure's CA.
fn run_files(kubeconfig: &std::path::Path, pid: u32) -> [std::path::PathBuf; 2] {
    [
        kubeconfig.to_path_buf(),
        std::env::temp_dir().join(format!("appservicelink-sandbox-ca-{pid}.pem")),
    ]
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sandbox_and_removes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    let child = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .args(["sandbox", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let files = run_files(&kubeconfig, child.id());
    wait_until("the sandbox's files", || files.iter().all(|f| f.exists())).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for file in &files {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_sandbox_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc");
    // As `appservicelink sandbox | head -1` does: read one line, then close the pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .args(["sandbox", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let files = run_files(&kubeconfig, child.id());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("AppServiceLink sandbox"), "{first}");
    // The reader is gone: the sandbox's next line meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    for file in &files {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_accepted_and_becomes_ready() {
    let mut examples: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 4, "{examples:?}");
    for example in examples {
        let mut h = Harness::cluster().await;
        h.with_azure().await;
        for (rg, name, slot) in [
            ("rg-web", "contoso-web", None),
            ("rg-web", "contoso-web", Some("staging")),
            ("rg-api", "contoso-api", None),
        ] {
            let site = SiteId {
                subscription_id: "00000000-0000-0000-0000-000000000000".into(),
                resource_group: rg.into(),
                name: name.into(),
                slot: slot.map(str::to_string),
            };
            h.azure().add_site(site, Default::default());
        }
        h.start_operator();
        h.apply(include_str!("../../src/sandbox/world.yaml"));
        let yaml = std::fs::read_to_string(&example).unwrap();
        h.apply(&yaml);
        let names: Vec<String> = yaml
            .split("\n---")
            .filter_map(|doc| {
                let doc: Value = serde_norway::from_str(doc).ok()?;
                doc["metadata"]["name"].as_str().map(str::to_string)
            })
            .collect();
        for name in &names {
            h.wait_ready(name).await;
        }
        let linked: i64 = names
            .iter()
            .map(|n| {
                h.link(n).unwrap()["status"]["linkedServiceCount"]
                    .as_i64()
                    .unwrap()
            })
            .sum();
        assert!(linked > 0, "{}: no Service linked", example.display());
    }
}
