use super::*;

fn zones(names: &[&str]) -> BTreeSet<Zone> {
    names.iter().map(|z| Zone::parse(z).unwrap()).collect()
}

fn config() -> DedicatedDns {
    DedicatedDns {
        namespace: "appservicelink-system".into(),
        image: "registry.example/coredns:v1.12.1".into(),
    }
}

#[test]
fn the_corefile_serves_the_zones_from_the_services_and_forwards_the_rest_to_azure_dns() {
    let text = corefile(&zones(&["b.local", "a.local"]), "cluster.local");
    assert!(text.starts_with(".:53 {\n"), "{text}");
    assert!(
        text.contains("\n    kubernetes cluster.local {\n"),
        "{text}"
    );
    assert!(
        text.contains("\n    k8s_external a.local b.local\n"),
        "{text}"
    );
    assert!(text.contains("\n    cache 30\n"), "{text}");
    assert!(text.contains("\n    forward . 168.63.129.16\n"), "{text}");
    // A Corefile CoreDNS loads: it parses, and no plugin appears twice in its one server block.
    let blocks = crate::duties::corefile::syntax::parse(
        "Corefile",
        &text,
        "/etc/coredns",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].keys, vec![".:53".to_string()]);
    let names: Vec<&str> = blocks[0]
        .directives
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "{names:?}");
    for plugin in ["kubernetes", "k8s_external", "cache", "forward"] {
        assert!(unique.contains(plugin), "{plugin} missing: {names:?}");
    }
    // No zone, no k8s_external line (it needs at least one zone).
    assert!(!corefile(&BTreeSet::new(), "cluster.local").contains("k8s_external"));
}

#[test]
fn the_deployment_meets_the_restricted_pod_security_profile() {
    let body = deployment(&config(), "x");
    let pod = &body["spec"]["template"]["spec"];
    assert_eq!(body["spec"]["replicas"], 2);
    assert_eq!(body["metadata"]["namespace"], "appservicelink-system");
    assert_eq!(pod["serviceAccountName"], NAME);
    // Pod Security Standards, restricted: non-root, RuntimeDefault seccomp, no privilege
    // escalation, every capability dropped but NET_BIND_SERVICE.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/coredns:v1.12.1");
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], json!(["NET_BIND_SERVICE"]));
    assert!(pod.get("hostNetwork").is_none() && pod["volumes"][0].get("hostPath").is_none());
    assert_eq!(
        body["spec"]["selector"]["matchLabels"],
        body["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .map(|l| json!({POD_LABEL.0: l[POD_LABEL.0]}))
            .unwrap()
    );
}

#[test]
fn a_new_corefile_rolls_the_pods_and_the_same_one_does_not() {
    let hash = |text: &str| {
        deployment(&config(), text)["spec"]["template"]["metadata"]["annotations"][COREFILE_HASH]
            .clone()
    };
    assert_eq!(hash("a"), hash("a"));
    assert_ne!(hash("a"), hash("b"));
}

#[test]
fn the_budget_keeps_one_replica_through_a_drain() {
    let pdb = pod_disruption_budget("appservicelink-system");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"][POD_LABEL.0],
        POD_LABEL.1
    );
}

#[test]
fn the_applied_hash_changes_with_the_body() {
    let (a, ha) = stamped(configmap("ns", "x"));
    let (_, hb) = stamped(configmap("ns", "y"));
    assert_ne!(ha, hb);
    assert_eq!(a["metadata"]["annotations"][APPLIED_HASH], ha);
    assert_eq!(a["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
}
