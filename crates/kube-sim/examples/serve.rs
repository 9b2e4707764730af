//! Runs a simulated cluster until Ctrl-C, for poking at it with kubectl:
//! `cargo run -p kube-sim --example serve -- /tmp/sim.kubeconfig` then
//! `kubectl --kubeconfig /tmp/sim.kubeconfig get ns`.

use kube_sim::{SimCluster, SimOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kube-sim.kubeconfig".into());
    let sim = SimCluster::start(SimOptions::default()).await?;
    sim.write_kubeconfig(std::path::Path::new(&path))?;
    println!(
        "kube-sim serving at {}; kubeconfig written to {path}",
        sim.url()
    );
    tokio::signal::ctrl_c().await?;
    let writes = sim.requests().iter().filter(|r| r.is_write()).count();
    println!("served {} requests ({writes} writes)", sim.requests().len());
    sim.shutdown().await;
    Ok(())
}
