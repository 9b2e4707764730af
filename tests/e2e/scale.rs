//! Memory with thousands of Services in the cluster: the operator must not keep whole Services
//! (managedFields, last-applied annotations) of everything it watches. A bound on memory, not a
//! timing; the figures come from `cargo bench --bench scale`.

use serde_json::json;

use crate::harness::Harness;
use crate::services_fixture::realistic_service;

/// Services in the cluster, and how many of them the link selects.
const SERVICES: usize = 3_000;
const SELECTED: usize = 100;
const NAMESPACES: usize = 10;

/// The bound on the operator's RSS once Ready, in MiB (debug build). Measured with this test:
/// 91 MiB when the Service cache kept whole objects (managedFields, last-applied annotations),
/// 61-66 MiB when it kept pruned typed Services, 51-52 MiB with its compact records
/// (`context::services`). The bound sits between the last two, so a cache that goes back to typed
/// Services fails it. Lists are paged by 500 (kube-rs's watcher, as a real apiserver pages them),
/// so a whole page is parsed at a time, never the whole cluster; the rest is the debug binary's own
/// baseline (44 MiB with 100 Services). The release figures are in BENCHMARKS.md
/// (`cargo bench --bench scale`).
const RSS_BOUND_MIB: u64 = 58;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_unselected_services_cost_little_memory() {
    let mut h = Harness::cluster().await;
    for i in 0..NAMESPACES {
        h.sim
            .apply_as(
                "test",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{i:02}")}}),
            )
            .unwrap();
    }
    // Every SERVICES/SELECTED-th Service is selected, so they spread over the namespaces.
    for i in 0..SERVICES {
        let selected = i % (SERVICES / SELECTED) == 0;
        let (svc, gitops) = realistic_service(
            &format!("team-{:02}", i % NAMESPACES),
            &format!("svc-{i}"),
            selected.then_some(("appservicelink.io/expose", "true")),
        );
        h.sim.apply_as("kubectl-client-side-apply", svc).unwrap();
        h.sim.apply_as("argocd-controller", gitops).unwrap();
    }
    h.apply(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: scale
spec:
  services:
    selector:
      matchLabels: {appservicelink.io/expose: "true"}
  dns:
    zone: scale.internal
"#,
    );
    h.start_operator();
    h.wait_ready("scale").await;
    let linked = h
        .sim
        .list("v1", "Service")
        .iter()
        .filter(|s| {
            s["spec"]["type"] == "LoadBalancer" && s["metadata"]["namespace"] != "kube-system"
        })
        .count();
    assert_eq!(linked, SELECTED, "every selected Service converted");
    let rss_mib = h.operator_rss_kib() / 1024;
    eprintln!("operator RSS once Ready: {rss_mib} MiB");
    assert!(
        rss_mib < RSS_BOUND_MIB,
        "the operator uses {rss_mib} MiB with {SERVICES} Services in the cluster ({SELECTED} \
         selected), over the bound of {RSS_BOUND_MIB} MiB: does its cache keep typed or whole Services again?"
    );
}
