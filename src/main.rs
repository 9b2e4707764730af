use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use appservicelink::azure::arm::ArmClient;
use appservicelink::azure::credentials as azure_auth;
use appservicelink::context::{Config, DedicatedDns};
use appservicelink::runtime::health::Health;
use appservicelink::runtime::metrics::Metrics;
use appservicelink::runtime::{endpoints, leader, memory, telemetry};
use appservicelink::{controller, crd};

#[cfg(feature = "sandbox")]
mod sandbox;

/// AppServiceLink: links Azure App Services to AKS Services over internal load balancers and CoreDNS.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster in KUBECONFIG, ~/.kube/config, or the in-cluster config.
    // Boxed: its many flags make it far larger than the other variants (clippy::large_enum_variant).
    Run(Box<RunArgs>),
    /// Print the AppServiceLink CustomResourceDefinition as YAML.
    Crd {
        /// Print a Markdown reference of every field instead (docs/crd-reference.md).
        #[arg(long)]
        reference: bool,
    },
    /// Run the whole product on this machine: a simulated AKS cluster and Azure, seeded with a small
    /// world and examples/full.yaml, and the real controller. Prints a kubeconfig for kubectl.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
}

#[cfg(feature = "sandbox")]
#[derive(clap::Args)]
struct SandboxArgs {
    /// Where to write the kubeconfig of the simulated cluster.
    #[arg(long, default_value = "appservicelink-sandbox.kubeconfig")]
    kubeconfig: std::path::PathBuf,
    /// Exit 0 once every link is Ready, after printing the summary (for scripts and CI).
    #[arg(long)]
    exit_when_ready: bool,
    /// Port on 127.0.0.1 serving the simulated App Services' settings at /app-services (0: any free port).
    #[arg(long, default_value_t = 0)]
    http_port: u16,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Name of the CoreDNS Deployment in kube-system, rolled when the override changes.
    #[arg(
        long,
        env = "APPSERVICELINK_COREDNS_DEPLOYMENT",
        default_value = "coredns"
    )]
    coredns_deployment: String,
    /// Roll the CoreDNS Deployment when the override changes (otherwise CoreDNS's reload plugin picks
    /// the change up within about a minute).
    #[arg(long, env = "APPSERVICELINK_RESTART_COREDNS", default_value_t = true, action = clap::ArgAction::Set)]
    restart_coredns: bool,
    /// Which CoreDNS serves the zones: `cluster` adds a key to kube-system/coredns-custom and uses
    /// the cluster's CoreDNS; `dedicated` runs the operator's own CoreDNS in
    /// --dedicated-dns-namespace and writes nothing in kube-system (AKS Automatic, or a team that may
    /// not touch cluster DNS).
    #[arg(
        long,
        env = "APPSERVICELINK_DNS_MODE",
        value_enum,
        default_value = "cluster"
    )]
    dns_mode: DnsModeArg,
    /// Namespace of the dedicated CoreDNS and its DNS Service (in a cluster: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    dedicated_dns_namespace: String,
    /// Image of the dedicated CoreDNS (AKS's mirror: the image of kube-system/coredns, e.g.
    /// mcr.microsoft.com/oss/kubernetes/coredns:<tag>).
    #[arg(long, env = "APPSERVICELINK_COREDNS_IMAGE", default_value = appservicelink::duties::dedicated_dns::DEFAULT_IMAGE)]
    coredns_image: String,
    /// The cluster's DNS domain (the kubelet's clusterDomain). No link's zone may be it, or above
    /// or below it: CoreDNS would answer NXDOMAIN for the cluster's own names. `cluster.local` is
    /// refused whatever this says.
    #[arg(long, env = "APPSERVICELINK_CLUSTER_DOMAIN", default_value = appservicelink::validation::DEFAULT_CLUSTER_DOMAIN, value_parser = parse_cluster_domain)]
    cluster_domain: String,
    /// Ask the DNS Service, at its load-balancer IP over UDP and TCP, for every linked Service's
    /// name, and report it in the NamesResolve condition (part of Ready). Off: the condition is
    /// absent and Ready does not depend on it.
    #[arg(long, env = "APPSERVICELINK_CHECK_NAMES", default_value_t = true, action = clap::ArgAction::Set)]
    check_names: bool,
    /// Seconds between full reconciles of every link, which repair drift.
    #[arg(long, env = "APPSERVICELINK_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    resync_seconds: u64,
    /// Seconds a Kubernetes request may go without a byte of answer before it fails (and its
    /// reconcile is retried). Keep it above 290: kube-runtime's watches last that long, and a quiet
    /// watch cut by it is only re-opened.
    #[arg(long, env = "APPSERVICELINK_KUBE_READ_TIMEOUT_SECONDS", default_value_t = 295, value_parser = clap::value_parser!(u64).range(1..))]
    kube_read_timeout_seconds: u64,
    /// Reverts of a conversion by another field manager count towards the limit of 3 re-applies only
    /// within this many seconds of the previous revert: a GitOps tool fighting the operator is
    /// stopped at once, `helm upgrade`s days apart are not.
    #[arg(long, env = "APPSERVICELINK_REVERT_WINDOW_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    revert_window_seconds: u64,
    /// When the DNS server IP keeps changing, an App Service is written at most once per this many
    /// seconds (every write restarts the app); the last IP wins. The first write is never delayed.
    #[arg(
        long,
        env = "APPSERVICELINK_APP_SERVICE_WRITE_WINDOW_SECONDS",
        default_value_t = 10
    )]
    app_service_write_window_seconds: u64,
    /// Azure Resource Manager endpoint (China: https://management.chinacloudapi.cn, US Gov:
    /// https://management.usgovcloudapi.net). The token scope is derived from it.
    #[arg(long, env = "APPSERVICELINK_ARM_ENDPOINT", default_value = azure_auth::PUBLIC_ARM_ENDPOINT)]
    arm_endpoint: String,
    /// Entra ID authority host (default: the public cloud; AKS workload identity sets AZURE_AUTHORITY_HOST).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    azure_authority_host: Option<String>,
    /// Extra PEM CA bundle to trust for ARM and the authority host, besides the system roots.
    #[arg(long, env = "APPSERVICELINK_AZURE_CA_BUNDLE")]
    azure_ca_bundle: Option<std::path::PathBuf>,
    /// Azure credential; `auto` picks workload identity, client secret, Azure CLI (outside a cluster)
    /// or managed identity from the environment.
    #[arg(
        long,
        env = "APPSERVICELINK_AZURE_CREDENTIAL",
        value_enum,
        default_value = "auto"
    )]
    azure_credential: azure_auth::CredentialKind,
    /// Seconds before an ARM or token request times out.
    #[arg(long, env = "APPSERVICELINK_ARM_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    arm_timeout_seconds: u64,
    /// Change nothing: Kubernetes writes are sent with dryRun=All (so admission still checks them),
    /// ARM writes are not sent, and every intended change is logged and recorded as an Event.
    #[arg(long, env = "APPSERVICELINK_DRY_RUN")]
    dry_run: bool,
    /// Log format; `RUST_LOG` sets the filter (default `info`).
    #[arg(
        long,
        env = "APPSERVICELINK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: telemetry::LogFormat,
    /// Port for /healthz, /readyz and /metrics, on every interface (0 picks a free port; the log
    /// names it).
    #[arg(long, env = "APPSERVICELINK_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Run the controller only while holding the leader Lease, so that several replicas can run:
    /// one reconciles, the others stand by. A replica's identity is POD_NAME, or else the hostname
    /// plus a random suffix.
    #[arg(long, env = "APPSERVICELINK_LEADER_ELECT", num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (in a cluster: the operator's own, from the Downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "APPSERVICELINK_LEADER_ELECTION_LEASE_NAME",
        default_value = "appservicelink-leader"
    )]
    leader_election_lease_name: String,
    /// Seconds the leader Lease stays valid after a renewal: a standby takes over this long after
    /// the leader dies (at once when it shuts down cleanly). The leader renews a third of it early.
    #[arg(long, env = "APPSERVICELINK_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    leader_election_lease_seconds: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DnsModeArg {
    Cluster,
    Dedicated,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { reference: false } => print!("{}", crd::crd_yaml()),
        Command::Crd { reference: true } => print!("{}", crd::reference_markdown()),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => {
            telemetry::init_quiet();
            let _ = rustls::crypto::ring::default_provider().install_default();
            sandbox::run(sandbox::SandboxOptions {
                kubeconfig: args.kubeconfig,
                exit_when_ready: args.exit_when_ready,
                http_port: args.http_port,
            })
            .await?;
        }
        Command::Run(args) => {
            memory::tune();
            telemetry::init(args.log_format);
            // kube's rustls and reqwest's may both be compiled in; one provider for the process avoids
            // rustls refusing to choose (DESIGN.md, "Rust toolchain facts").
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_from(
                kube_config(Duration::from_secs(args.kube_read_timeout_seconds)).await?,
            )?;
            let config = Config {
                coredns_deployment: args.coredns_deployment,
                dedicated_dns: match args.dns_mode {
                    DnsModeArg::Cluster => None,
                    DnsModeArg::Dedicated => Some(DedicatedDns {
                        namespace: args.dedicated_dns_namespace,
                        image: args.coredns_image,
                    }),
                },
                restart_coredns: args.restart_coredns,
                cluster_domain: args.cluster_domain,
                resync: Duration::from_secs(args.resync_seconds),
                revert_window: Duration::from_secs(args.revert_window_seconds),
                app_service_write_window: Duration::from_secs(
                    args.app_service_write_window_seconds,
                ),
                check_names: args.check_names,
                dry_run: args.dry_run,
            };
            let azure = azure_auth::AzureConfig {
                arm_endpoint: args.arm_endpoint,
                authority_host: args.azure_authority_host,
                ca_bundle: args.azure_ca_bundle,
                credential: args.azure_credential,
                request_timeout: Duration::from_secs(args.arm_timeout_seconds),
            };
            let metrics = Arc::new(Metrics::new());
            let health = Health::default();
            let shutdown = shutdown_on_signal(health.clone());
            let arm = arm_client(&azure, &metrics);
            if let Err(reason) = &arm {
                tracing::warn!(%reason, "Azure access is not configured; links that name App Services will report it");
            }
            // Probes and scrapes are answered until the very end, through the shutdown.
            let stop_serving = CancellationToken::new();
            let server = tokio::spawn(endpoints::serve(
                endpoints::bind(args.http_port).await?,
                metrics.clone(),
                health.clone(),
                stop_serving.clone().cancelled_owned(),
            ));
            tokio::spawn(memory::give_back_periodically());
            let controller = controller::run(
                client.clone(),
                config,
                arm,
                metrics.clone(),
                health.clone(),
                shutdown.clone().cancelled_owned(),
            );
            if args.leader_elect {
                let election = leader::Config {
                    namespace: args.leader_election_namespace,
                    lease_name: args.leader_election_lease_name,
                    lease_seconds: args.leader_election_lease_seconds,
                    identity: leader::identity(),
                };
                leader::run(client, election, &metrics, &health, &shutdown, controller).await??;
            } else {
                metrics.set_leader(true);
                health.active();
                controller.await?;
            }
            stop_serving.cancel();
            server.await??;
        }
    }
    Ok(())
}

/// The ARM client, or why it could not be built (reported on links that need it).
fn arm_client(
    azure: &azure_auth::AzureConfig,
    metrics: &Arc<Metrics>,
) -> Result<ArmClient, String> {
    let http = azure.http_client().map_err(|e| e.to_string())?;
    let credential = azure.credential(&http).map_err(|e| e.to_string())?;
    let (requests, waits) = (metrics.clone(), metrics.clone());
    Ok(
        ArmClient::new(http, &azure.arm_endpoint, azure.scope(), credential)
            .with_observer(Arc::new(move |op, status| requests.arm_request(op, status)))
            .with_wait_observer(Arc::new(move |kind, waited| {
                waits.arm_rate_limit_wait(kind.name(), waited)
            })),
    )
}

/// Cancelled at the first SIGTERM or Ctrl-C; from then on the replica reports itself not ready.
fn shutdown_on_signal(health: Health) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        health.stopping();
        cancel.cancel();
    });
    token
}

/// `--cluster-domain` must be a DNS name such as `cluster.local`, without a trailing dot.
fn parse_cluster_domain(value: &str) -> Result<String, String> {
    if appservicelink::validation::is_zone(value) && value.contains('.') {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a cluster domain: a lower-case DNS name of at least two labels, such as cluster.local"
        ))
    }
}

/// The kubeconfig or in-cluster config, with a read timeout counted from each request sent. kube's
/// client has none by default, so a request the apiserver never answers would hold its reconcile
/// forever.
async fn kube_config(read_timeout: Duration) -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::infer().await?;
    config.read_timeout = Some(read_timeout);
    config.reset_reader_on_write = true;
    Ok(config)
}
