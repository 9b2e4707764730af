//! How fast the operator converges and follows a DNS IP change, end to end: the real controller
//! in-process against the simulated apiserver and the simulated ARM over HTTPS.
//!
//! Run with `cargo bench --bench convergence` (add `-- --services 200 --rounds 20` to change the
//! size). Results and how they were measured are in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use appservicelink::controller;
use azure_sim::{AzureSim, AzureSimOptions, SiteId};
use kube_sim::{SimCluster, SimOptions};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

fn ready(cluster: &SimCluster) -> bool {
    cluster
        .get(
            "appservicelink.io/v1alpha1",
            "AppServiceLink",
            None,
            "bench",
        )
        .is_some_and(|l| {
            l["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = arg("--services", 100);
    let rounds = arg("--rounds", 10);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = SimCluster::start(SimOptions::default()).await?;
    let azure = AzureSim::start(AzureSimOptions::default()).await?;
    let site = SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg".into(),
        name: "bench-web".into(),
        slot: None,
    };
    azure.add_site(
        site.clone(),
        BTreeMap::from([("KEEP".to_string(), "1".to_string())]),
    );
    cluster.apply_as("bench", serde_json::to_value(appservicelink::crd::crd())?)?;
    cluster.apply_as("bench", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"k8s-app": "kube-dns"}}, "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
        "spec": {"containers": [{"name": "coredns", "image": "coredns"}]}}}}))?;
    cluster.apply_as(
        "bench",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )?;
    for i in 0..services {
        cluster.apply_as("bench", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}"), "namespace": "bench",
            "labels": {"expose": "true"}}, "spec": {"ports": [{"port": 80}]}}))?;
    }

    let ca = std::env::temp_dir().join(format!(
        "appservicelink-bench-ca-{}.pem",
        std::process::id()
    ));
    azure.write_ca(&ca)?;
    let arm = appservicelink::azure::credentials::AzureConfig {
        arm_endpoint: azure.arm_endpoint(),
        authority_host: Some(azure.authority_host()),
        ca_bundle: Some(ca.clone()),
        credential: appservicelink::azure::credentials::CredentialKind::ClientSecret,
        ..Default::default()
    }
    .client_secret_arm_client(
        azure.tenant_id(),
        azure_sim::DEFAULT_CLIENT_ID,
        azure_sim::DEFAULT_CLIENT_SECRET.to_string(),
    )?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_yaml())?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?;
    let metrics = std::sync::Arc::new(appservicelink::runtime::metrics::Metrics::new());
    let health = appservicelink::runtime::health::Health::default();
    let controller = tokio::spawn(controller::run(
        client,
        // The write window is for flapping IPs; the benchmark measures one change's path.
        appservicelink::context::Config {
            app_service_write_window: Duration::ZERO,
            // Its load balancers are on 10.240.0.0/16, where nothing answers DNS (and this machine
            // must send nothing); the benchmark measures the path to ARM, not name resolution.
            check_names: false,
            ..Default::default()
        },
        Ok(arm),
        metrics,
        health,
        std::future::pending(),
    ));

    let link = |ip: &str| {
        json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink", "metadata": {"name": "bench"},
            "spec": {"services": {"selector": {"matchLabels": {"expose": "true"}}},
                     "dns": {"zone": "bench.internal", "service": {"staticIP": ip}},
                     "appServices": {"targets": [{"subscriptionId": SUB, "resourceGroup": "rg", "name": "bench-web"}]}}})
    };
    let started = Instant::now();
    cluster.apply_as("kubectl", link("10.240.1.1"))?;
    let converge = wait("first convergence", || ready(&cluster)).await;
    let writes_after_converge = azure.writes().len();
    println!(
        "first convergence of a link with {services} Services and 1 App Service: {:.0} ms",
        converge.as_secs_f64() * 1000.0
    );

    let mut follow = Vec::new();
    let mut from_ip = Vec::new();
    for round in 0..rounds {
        let ip = format!("10.240.2.{}", round + 1);
        cluster.apply_as("kubectl", link(&ip))?;
        let mut ip_seen: Option<Instant> = None;
        let took = wait("the App Service to follow the new IP", || {
            let lb_ip = cluster
                .get("v1", "Service", Some("kube-system"), "appservicelink-dns")
                .and_then(|s| {
                    s["status"]["loadBalancer"]["ingress"][0]["ip"]
                        .as_str()
                        .map(str::to_string)
                });
            if ip_seen.is_none() && lb_ip.as_deref() == Some(ip.as_str()) {
                ip_seen = Some(Instant::now());
            }
            azure
                .app_settings(&site)
                .is_some_and(|s| s.get("WEBSITE_DNS_SERVER") == Some(&ip))
        })
        .await;
        follow.push(took);
        from_ip.push(ip_seen.map_or(Duration::ZERO, |t| t.elapsed()));
        wait("Ready again", || ready(&cluster)).await;
    }
    follow.sort();
    from_ip.sort();
    println!(
        "load balancer IP assigned → App Service updated: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&from_ip, 0.5).as_secs_f64() * 1000.0,
        percentile(&from_ip, 0.9).as_secs_f64() * 1000.0,
        from_ip.last().unwrap().as_secs_f64() * 1000.0
    );
    println!(
        "link's staticIP edited → App Service updated, over {rounds} changes: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        percentile(&follow, 0.5).as_secs_f64() * 1000.0,
        percentile(&follow, 0.9).as_secs_f64() * 1000.0,
        follow.last().unwrap().as_secs_f64() * 1000.0
    );
    println!(
        "ARM writes: {} for the first convergence, {} in total for {rounds} IP changes (one each)",
        writes_after_converge,
        azure.writes().len() - writes_after_converge
    );
    println!("total: {:.1} s", started.elapsed().as_secs_f64());
    controller.abort();
    let _ = std::fs::remove_file(ca);
    Ok(())
}
