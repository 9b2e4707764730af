//! `appservicelink sandbox`: the whole product on one machine, with no cluster and no Azure.
//!
//! It starts the simulated Kubernetes API server and the simulated Azure side (load-balancer IPs,
//! ARM with App Services, the Entra ID token endpoint over HTTPS), seeds a small realistic world,
//! and runs the real controller on the same code path as `run`, talking to both over HTTP(S). It
//! prints every change the operator makes as it happens, and a kubeconfig so a person can drive it
//! with kubectl.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use azure_sim::{AzureSim, AzureSimOptions, SiteId};
use kube_sim::{InternalLbs, InternalRange, SimCluster, SimOptions};
use serde_json::{json, Value};

use appservicelink::azure::arm::ArmClient;
use appservicelink::azure::credentials::{AzureConfig, CredentialKind};
use appservicelink::context::Config;
use appservicelink::{controller, crd};

/// The example link the sandbox applies.
pub const EXAMPLE: &str = include_str!("../examples/full.yaml");
/// The world the sandbox starts from, besides the example link.
const WORLD: &str = include_str!("sandbox/world.yaml");
/// Subscription of the sandbox's App Services (the example's placeholder).
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// How long `--exit-when-ready` waits before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Where to write the kubeconfig for kubectl.
    pub kubeconfig: PathBuf,
    /// Exit 0 once every link is Ready, after printing the summary.
    pub exit_when_ready: bool,
    /// Port for the App Service settings endpoint (`0` picks a free one).
    pub http_port: u16,
}

/// The sandbox's App Services: one site and its staging slot, as the example names them.
fn sites() -> Vec<SiteId> {
    vec![
        SiteId {
            subscription_id: SUBSCRIPTION.into(),
            resource_group: "rg-web".into(),
            name: "contoso-web".into(),
            slot: None,
        },
        SiteId {
            subscription_id: SUBSCRIPTION.into(),
            resource_group: "rg-web".into(),
            name: "contoso-web".into(),
            slot: Some("staging".into()),
        },
    ]
}

fn site_label(site: &SiteId) -> String {
    match &site.slot {
        Some(slot) => format!("{}/slots/{slot}", site.name),
        None => site.name.clone(),
    }
}

/// Writes a line to stdout, failing (instead of panicking like `println!`) once stdout is closed,
/// e.g. by `appservicelink sandbox | head`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// Files the sandbox writes for this run only, removed however it ends (Ctrl-C, SIGTERM, a closed
/// stdout, an error): they point at simulations that no longer exist afterwards.
struct RunFiles(Vec<PathBuf>);

impl Drop for RunFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs the sandbox until Ctrl-C or SIGTERM, or until Ready with `exit_when_ready`. A closed stdout
/// ends it quietly.
pub async fn run(opts: SandboxOptions) -> anyhow::Result<()> {
    match serve(opts).await {
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result,
    }
}

async fn serve(opts: SandboxOptions) -> anyhow::Result<()> {
    // Before any file is written, so that Ctrl-C or SIGTERM at any point still removes them.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut files = RunFiles(Vec::new());
    let started = Instant::now();
    let mut phases: Vec<(&str, Duration)> = Vec::new();
    let mut phase = Instant::now();
    let mut done = |name, phase: &mut Instant| {
        phases.push((name, phase.elapsed()));
        *phase = Instant::now();
    };

    // Internal load balancers on loopback addresses of the sandbox's own, so that the simulated
    // CoreDNS really answers on the DNS Service's IP (and `dig` works as printed). That needs port
    // 53; without it the sandbox runs on AKS's addresses, where nothing answers DNS.
    let (cluster, no_dns) = match SimCluster::start(SimOptions {
        internal_lbs: InternalLbs::Loopback,
        ..SimOptions::default()
    })
    .await
    {
        Ok(cluster) => (cluster, None),
        Err(err) => (
            SimCluster::start(SimOptions::default())
                .await
                .context("starting the simulated Kubernetes API server")?,
            Some(err),
        ),
    };
    done("simulated Kubernetes API server", &mut phase);
    let azure = AzureSim::start(AzureSimOptions::default())
        .await
        .context("starting the simulated Azure")?;
    done("simulated Azure (ARM, Entra ID, CA)", &mut phase);
    let moved = seed(&cluster, &azure)?;
    files.0.push(opts.kubeconfig.clone());
    cluster
        .write_kubeconfig(&opts.kubeconfig)
        .with_context(|| format!("writing {}", opts.kubeconfig.display()))?;
    done("seeding the world", &mut phase);

    // The real controller, on the same code path as `run`, over HTTP(S) to both simulations.
    let ca = std::env::temp_dir().join(format!(
        "appservicelink-sandbox-ca-{}.pem",
        std::process::id()
    ));
    files.0.push(ca.clone());
    azure.write_ca(&ca)?;
    let client = kube_client(&cluster).await?;
    let arm = sandbox_arm_client(&azure, &ca)?;
    let config = Config {
        resync: Duration::from_secs(30),
        // Nothing answers DNS on 10.240.0.0/16, and nothing may be sent there.
        check_names: cluster.serves_dns(),
        ..Default::default()
    };
    let metrics = std::sync::Arc::new(appservicelink::runtime::metrics::Metrics::new());
    let health = appservicelink::runtime::health::Health::default();
    let mut controller = tokio::spawn(controller::run(
        client,
        config,
        Ok(arm),
        metrics,
        health,
        std::future::pending(),
    ));
    let settings_addr = serve_app_settings(azure.clone(), opts.http_port).await?;
    done("starting the controller", &mut phase);

    say!("AppServiceLink sandbox: a simulated AKS cluster and Azure, and the real operator.");
    for (name, took) in &phases {
        say!("  {name:<40} {:>7.1} ms", took.as_secs_f64() * 1000.0);
    }
    if let Some(err) = &no_dns {
        say!("No simulated DNS: {err:#}.");
        say!("  The load balancers use AKS's 10.240.0.0/16 instead, where nothing answers, so the");
        say!("  operator's name check is off (--check-names=false) and no dig command is printed.");
    }
    say!("Applied examples/full.yaml as AppServiceLink web-to-backend.");
    if let Some((from, to)) = moved {
        say!(
            "  Its staticIP {from} became {to}: the sandbox's internal subnet is {},",
            cluster.internal_range()
        );
        say!("  on loopback, so the simulated CoreDNS really answers on the DNS Service's IP.");
    }
    say!("Watching the operator:\n");

    let mut last = snapshot(&cluster, &azure);
    let mut ready_at: Option<Duration> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = interrupt.recv() => {
                say!("\nStopping the sandbox.");
                break;
            }
            _ = terminate.recv() => break,
            result = &mut controller => match result {
                // The controller stops by itself on SIGINT and SIGTERM (kube-runtime's
                // shutdown_on_signal), possibly before this loop sees the signal.
                Ok(Ok(())) => break,
                other => anyhow::bail!("the controller stopped unexpectedly: {other:?}"),
            },
            _ = tick.tick() => {}
        }
        let now = snapshot(&cluster, &azure);
        for line in changes(&last, &now) {
            say!("  [{:>6.2}s] {line}", started.elapsed().as_secs_f64());
        }
        last = now;
        if ready_at.is_none() && all_ready(&cluster) {
            let took = started.elapsed();
            ready_at = Some(took);
            print_summary(&cluster, &azure, took)?;
            if opts.exit_when_ready {
                break;
            }
            print_instructions(&opts.kubeconfig, settings_addr, cluster.internal_range())?;
        }
        if ready_at.is_none() && opts.exit_when_ready && started.elapsed() > READY_TIMEOUT {
            anyhow::bail!("not Ready after {READY_TIMEOUT:?}; the changes printed above show how far the operator got");
        }
    }
    controller.abort();
    cluster.shutdown().await;
    azure.shutdown().await;
    Ok(())
}

/// The example with its static DNS IP moved into the sandbox's internal range (the same last
/// octet), and the move made, if any.
fn in_range(
    mut doc: Value,
    range: InternalRange,
) -> (Value, Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>) {
    let ip = &mut doc["spec"]["dns"]["service"]["staticIP"];
    let moved = ip
        .as_str()
        .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
        .filter(|from| !range.contains(*from))
        .map(|from| (from, range.host(u32::from(from.octets()[3]))));
    if let Some((_, to)) = moved {
        *ip = json!(to.to_string());
    }
    (doc, moved)
}

/// Applies the CRD, the world, the App Services and the example link; returns how the example's
/// static IP was moved into the sandbox's range.
fn seed(
    cluster: &SimCluster,
    azure: &AzureSim,
) -> anyhow::Result<Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>> {
    let seeder = "sandbox-seed";
    cluster.apply_as(seeder, serde_json::to_value(crd::crd())?)?;
    let mut moved = None;
    let example = yaml_documents(EXAMPLE)?.into_iter().map(|doc| {
        let (doc, m) = in_range(doc, cluster.internal_range());
        moved = moved.or(m);
        doc
    });
    let docs: Vec<Value> = yaml_documents(WORLD)?.into_iter().chain(example).collect();
    for doc in docs {
        let name = format!(
            "{} {}",
            doc["kind"].as_str().unwrap_or_default(),
            doc["metadata"]["name"].as_str().unwrap_or_default()
        );
        cluster
            .apply_as(seeder, doc)
            .with_context(|| format!("seeding {name}"))?;
    }
    let existing = BTreeMap::from([
        (
            "ConnectionStrings__Orders".to_string(),
            "Server=tcp:orders-db.contoso.internal,1433;Database=orders".to_string(),
        ),
        ("WEBSITE_RUN_FROM_PACKAGE".to_string(), "1".to_string()),
        ("FEATURE_FLAGS".to_string(), "checkout-v2".to_string()),
    ]);
    for site in sites() {
        azure.add_site(site, existing.clone());
    }
    Ok(moved)
}

fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(Value::deserialize)
        .filter(|doc| !matches!(doc, Ok(Value::Null)))
        .collect::<Result<_, _>>()
        .context("parsing an embedded manifest")
}

async fn kube_client(cluster: &SimCluster) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_yaml())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// An ARM client configured exactly as `run` would be for a sovereign cloud: custom endpoint,
/// authority host and CA bundle, with a client-secret credential.
fn sandbox_arm_client(azure: &AzureSim, ca: &Path) -> anyhow::Result<ArmClient> {
    let config = AzureConfig {
        arm_endpoint: azure.arm_endpoint(),
        authority_host: Some(azure.authority_host()),
        ca_bundle: Some(ca.to_path_buf()),
        credential: CredentialKind::ClientSecret,
        ..Default::default()
    };
    Ok(config.client_secret_arm_client(
        azure.tenant_id(),
        azure_sim::DEFAULT_CLIENT_ID,
        azure_sim::DEFAULT_CLIENT_SECRET.to_string(),
    )?)
}

/// Serves the simulated App Services' DNS-related settings as JSON, for `curl`.
async fn serve_app_settings(azure: AzureSim, port: u16) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/app-services",
        axum::routing::get(move || {
            let azure = azure.clone();
            async move { axum::Json(app_services_json(&azure)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn app_services_json(azure: &AzureSim) -> Value {
    let mut out = serde_json::Map::new();
    for site in sites() {
        out.insert(
            site.resource_id(),
            json!({
                "appSettings": azure.app_settings(&site),
                "dnsConfiguration": azure.dns_configuration(&site),
            }),
        );
    }
    Value::Object(out)
}

/// The facts a person follows, by name: Services, the override, the CoreDNS roll, the App
/// Services' DNS settings and each link's readiness.
fn snapshot(cluster: &SimCluster, azure: &AzureSim) -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    for svc in cluster.list("v1", "Service") {
        let ns = svc["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        if ns == "kube-system" && name == "kube-dns" {
            continue;
        }
        let mut fact = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        if svc["metadata"]["annotations"]
            [appservicelink::duties::load_balancer::ANNOTATION_INTERNAL]
            == "true"
        {
            fact.push_str(", internal");
        }
        if let Some(ip) = svc["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
            fact.push_str(&format!(", IP {ip}"));
        }
        facts.insert(format!("Service {ns}/{name}"), fact);
    }
    let override_text = cluster
        .get("v1", "ConfigMap", Some("kube-system"), "coredns-custom")
        .and_then(|cm| {
            cm["data"][appservicelink::duties::corefile::OVERRIDE_KEY]
                .as_str()
                .map(|s| s.trim().to_string())
        });
    facts.insert(
        format!(
            "CoreDNS override ({})",
            appservicelink::duties::corefile::OVERRIDE_KEY
        ),
        override_text.unwrap_or_else(|| "(none)".into()),
    );
    let rollout = cluster
        .get("apps/v1", "Deployment", Some("kube-system"), "coredns")
        .and_then(|d| {
            d["spec"]["template"]["metadata"]["annotations"]
                [appservicelink::duties::corefile::HASH_ANNOTATION]
                .as_str()
                .map(str::to_string)
        });
    facts.insert(
        "CoreDNS rolled for override".into(),
        rollout.unwrap_or_else(|| "(never)".into()),
    );
    for site in sites() {
        let settings = azure.app_settings(&site).unwrap_or_default();
        let dns: Vec<String> = [
            appservicelink::duties::app_service::DNS_SERVER_SETTING,
            appservicelink::duties::app_service::DNS_ALT_SERVER_SETTING,
        ]
        .iter()
        .filter_map(|k| settings.get(*k).map(|v| format!("{k}={v}")))
        .collect();
        let mut fact = if dns.is_empty() {
            "no DNS setting".to_string()
        } else {
            dns.join(" ")
        };
        if let Some(servers) = azure
            .dns_configuration(&site)
            .and_then(|c| c["dnsServers"].as_array().cloned())
            .filter(|s| !s.is_empty())
        {
            fact.push_str(&format!(
                ", dnsConfiguration.dnsServers={}",
                Value::Array(servers)
            ));
        }
        facts.insert(format!("App Service {}", site_label(&site)), fact);
    }
    for link in cluster.list("appservicelink.io/v1alpha1", "AppServiceLink") {
        let name = link["metadata"]["name"].as_str().unwrap_or_default();
        let ready = condition(&link, "Ready").unwrap_or_else(|| "Unknown".into());
        let ip = link["status"]["dnsServerIP"]
            .as_str()
            .unwrap_or("(waiting for load balancer IP)");
        facts.insert(
            format!("AppServiceLink {name}"),
            format!("Ready={ready}, DNS server {ip}"),
        );
    }
    facts
}

fn condition(link: &Value, type_: &str) -> Option<String> {
    link["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// One line per fact that appeared, changed or went away.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            None => lines.push(format!("{key}: {value}")),
            Some(old) if old != value => lines.push(format!("{key}: {old} → {value}")),
            _ => {}
        }
    }
    lines.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| format!("{k}: gone")),
    );
    lines
}

fn all_ready(cluster: &SimCluster) -> bool {
    let links = cluster.list("appservicelink.io/v1alpha1", "AppServiceLink");
    !links.is_empty()
        && links
            .iter()
            .all(|l| condition(l, "Ready").as_deref() == Some("True"))
}

fn print_summary(cluster: &SimCluster, azure: &AzureSim, took: Duration) -> std::io::Result<()> {
    say!(
        "\nReady in {:.1} s: every AppServiceLink reports Ready.\n",
        took.as_secs_f64()
    );
    say!("  {:<44} Resolves to (internal load balancer)", "Name");
    for link in cluster.list("appservicelink.io/v1alpha1", "AppServiceLink") {
        for svc in link["status"]["services"].as_array().into_iter().flatten() {
            let target = match (svc["state"].as_str(), svc["internalIP"].as_str()) {
                (_, Some(ip)) => ip.to_string(),
                (state, None) => format!(
                    "({}: {})",
                    state.unwrap_or("?"),
                    svc["message"].as_str().unwrap_or_default()
                ),
            };
            say!(
                "  {:<44} {target}",
                svc["fqdn"].as_str().unwrap_or_default()
            );
        }
        if let Some(ip) = link["status"]["dnsServerIP"].as_str() {
            say!(
                "\n  DNS server for App Services: {ip} (AppServiceLink {})",
                link["metadata"]["name"].as_str().unwrap_or_default()
            );
            if cluster.serves_dns() {
                say!(
                    "  Ask it yourself, as an App Service would (the simulated CoreDNS answers there):"
                );
                for command in dig_commands(&link) {
                    say!("    {command}");
                }
                say!("");
            }
        }
    }
    for site in sites() {
        let settings = azure.app_settings(&site).unwrap_or_default();
        let dns: Vec<String> = settings
            .iter()
            .filter(|(k, _)| k.starts_with("WEBSITE_DNS"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        say!("  App Service {:<32} {}", site_label(&site), dns.join(" "));
    }
    Ok(())
}

/// `dig @<DNS server> <name> +short` for every linked name of a link; each prints the name's IP.
fn dig_commands(link: &Value) -> Vec<String> {
    let Some(server) = link["status"]["dnsServerIP"].as_str() else {
        return Vec::new();
    };
    link["status"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "Linked" && s["internalIP"].is_string())
        .filter_map(|s| s["fqdn"].as_str())
        .map(|fqdn| format!("dig @{server} {fqdn} +short"))
        .collect()
}

fn print_instructions(
    kubeconfig: &Path,
    settings: SocketAddr,
    range: InternalRange,
) -> std::io::Result<()> {
    let kubeconfig = std::fs::canonicalize(kubeconfig).unwrap_or_else(|_| kubeconfig.to_path_buf());
    let (dns_ip, new_ip) = (range.host(53), range.host(99));
    say!(
        r#"
Try it (the operator reacts to every change, and this window shows what it does):
  export KUBECONFIG={kubeconfig}
  kubectl get asl
  kubectl get svc -A
  kubectl describe asl web-to-backend
  kubectl patch asl web-to-backend --type merge -p '{{"spec":{{"dns":{{"service":{{"staticIP":"{new_ip}"}}}}}}}}'
  kubectl -n shop label svc payments appservicelink.io/expose=true
  curl http://{settings}/app-services      # the simulated App Services' settings
  kubectl delete asl web-to-backend        # everything is put back
  # then two teams, two zones, one DNS Service (its static IP in the sandbox's range, {range}):
  sed 's/10.240.0.53/{dns_ip}/' examples/two-zones.yaml | kubectl apply -f -

Press Ctrl-C to stop."#,
        kubeconfig = kubeconfig.display()
    );
    Ok(())
}
