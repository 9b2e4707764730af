//! What kube-sim itself costs as a cluster grows: seeding Services in process (`apply_as`) and over
//! HTTP, a paged LIST as kube-rs's watcher sends it, and a watch fan-out. Run it with a release build:
//!
//! ```sh
//! cargo run --release -p kube-sim --example scale                       # 1,000 / 5,000 / 10,000
//! cargo run --release -p kube-sim --example scale -- --services 20000 --watchers 5
//! cargo run --release -p kube-sim --example scale -- --loopback   # with the simulated CoreDNS (root)
//! ```
//!
//! One Service in ten is an internal `LoadBalancer` (node ports, the load-balancer allocator and its
//! Events; a public one with `--loopback`, whose internal range is a /24); the others are ClusterIP
//! Services; each has one or two ports, and every other one carries
//! `kubectl.kubernetes.io/last-applied-configuration`, as `kubectl apply` leaves it.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{SimCluster, SimOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "bench";
/// Writes per timed block.
const BLOCK: usize = 1_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A Service as a team would deploy it: labels, one or two ports, and for some the annotation
/// `kubectl apply` leaves behind.
fn service(i: usize, loopback: bool) -> Value {
    let mut ports = vec![json!({"name": "http", "port": 80, "targetPort": 8080})];
    if i.is_multiple_of(3) {
        ports.push(json!({"name": "https", "port": 443, "targetPort": 8443}));
    }
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("svc-{i}"),
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": format!("app-{}", i / 4),
                "app.kubernetes.io/part-of": "bench",
                "tier": if i.is_multiple_of(2) { "web" } else { "api" },
            },
        },
        "spec": {
            "selector": {"app.kubernetes.io/name": format!("app-{}", i / 4)},
            "ports": ports,
        },
    });
    if i % 10 == 5 {
        svc["spec"]["type"] = json!("LoadBalancer");
        if !loopback {
            svc["metadata"]["annotations"] = json!({kube_sim::INTERNAL_ANNOTATION: "true"});
        }
    }
    if i % 2 == 1 {
        let applied = serde_json::to_string(&svc).expect("serialisable");
        svc["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!(applied);
    }
    svc
}

fn per_block(took: Duration, writes: usize) -> String {
    format!(
        "{:.0} ms",
        took.as_secs_f64() * 1_000.0 * BLOCK as f64 / writes as f64
    )
}

async fn client(sim: &SimCluster) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn load_balancers_ready(sim: &SimCluster) -> bool {
    sim.list("v1", "Service").iter().all(|s| {
        s["spec"]["type"] != "LoadBalancer" || s["status"]["loadBalancer"]["ingress"].is_array()
    })
}

async fn measure(n: usize, watchers: usize, loopback: bool) -> anyhow::Result<()> {
    println!("## {n} Services");
    let sim = SimCluster::start(SimOptions {
        internal_lbs: if loopback {
            kube_sim::InternalLbs::Loopback
        } else {
            kube_sim::InternalLbs::Azure
        },
        ..SimOptions::default()
    })
    .await?;
    sim.apply_as(
        "bench",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )?;

    // In process, through the same admission as every write.
    let started = Instant::now();
    let mut blocks = Vec::new();
    let mut block_start = Instant::now();
    for i in 0..n {
        sim.apply_as("bench", service(i, loopback))?;
        if (i + 1).is_multiple_of(BLOCK) || i + 1 == n {
            blocks.push(block_start.elapsed());
            block_start = Instant::now();
        }
    }
    let seeded = started.elapsed();
    let first = blocks.first().copied().unwrap_or_default();
    let last = blocks.last().copied().unwrap_or_default();
    println!(
        "apply_as: {n} Services in {:.2} s ({} per 1,000 on average; first 1,000 {}, last {})",
        seeded.as_secs_f64(),
        per_block(seeded, n),
        per_block(first, BLOCK.min(n)),
        per_block(last, n - (blocks.len() - 1) * BLOCK),
    );
    let lb_wait = Instant::now();
    while !load_balancers_ready(&sim) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "load balancers: every LoadBalancer Service has its IP {:.2} s after the last write",
        lb_wait.elapsed().as_secs_f64()
    );

    let api: Api<Service> = Api::namespaced(client(&sim).await?, NAMESPACE);

    // A paged LIST, as kube-rs's watcher sends it (limit=500, then continue tokens).
    let list_start = Instant::now();
    let (mut items, mut pages) = (0, 0);
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        items += page.items.len();
        pages += 1;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    println!(
        "LIST limit=500: {items} Services in {pages} page(s), {:.0} ms",
        list_start.elapsed().as_secs_f64() * 1_000.0
    );

    // Over HTTP, into the populated cluster, with watchers following every write.
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let http_writes = BLOCK.min(n);
    let mut followers = Vec::new();
    for _ in 0..watchers {
        let stream = api.watch(&WatchParams::default(), &rv).await?;
        followers.push(tokio::spawn(async move {
            let mut added = 0;
            let mut stream = stream.boxed();
            while added < http_writes {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(_))) => added += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (added, Instant::now())
        }));
    }
    let http_start = Instant::now();
    for i in n..n + http_writes {
        let svc: Service = serde_json::from_value(service(i, loopback))?;
        api.create(&PostParams::default(), &svc).await?;
    }
    let http_took = http_start.elapsed();
    println!(
        "HTTP POST: {http_writes} more Services in {:.2} s ({} per 1,000) with {watchers} watcher(s) open",
        http_took.as_secs_f64(),
        per_block(http_took, http_writes)
    );
    let mut slowest = Duration::ZERO;
    for follower in followers {
        let (added, at) = follower.await?;
        anyhow::ensure!(
            added == http_writes,
            "a watcher saw {added} of {http_writes} ADDED events"
        );
        slowest = slowest.max(at.duration_since(http_start));
    }
    if watchers > 0 {
        println!(
            "watch fan-out: all {watchers} watcher(s) had every ADDED event {:.2} s after the first POST",
            slowest.as_secs_f64()
        );
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = arg("--services")
        .unwrap_or_else(|| "1000,5000,10000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let watchers = arg("--watchers").map_or(Ok(3), |w| w.parse())?;
    let loopback = std::env::args().any(|a| a == "--loopback");
    for n in sizes {
        measure(n, watchers, loopback).await?;
    }
    Ok(())
}
