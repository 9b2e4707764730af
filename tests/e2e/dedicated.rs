//! Dedicated DNS mode (issue #11): the operator runs its own CoreDNS in its own namespace, behind
//! its own internal load balancer, and writes nothing in `kube-system`: neither `coredns-custom`
//! nor the cluster's CoreDNS (AKS Automatic refuses writes in its managed system namespaces).

use std::collections::BTreeMap;

use azure_sim::SiteId;

use crate::harness::{Harness, OPERATOR_NAMESPACE};

const SUB: &str = "6f1c2b3a-0000-4000-8000-000000000004";
const NAME: &str = "appservicelink-coredns";

fn site() -> SiteId {
    SiteId {
        subscription_id: SUB.into(),
        resource_group: "rg-web".into(),
        name: "contoso-web".into(),
        slot: None,
    }
}

fn before() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "WEBSITE_DNS_SERVER".to_string(),
            "168.63.129.16".to_string(),
        ),
        ("WEBSITE_RUN_FROM_PACKAGE".to_string(), "1".to_string()),
    ])
}

fn link(zone: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: web
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
  dns:
    zone: {zone}
  appServices:
    targets:
    - {{subscriptionId: {SUB}, resourceGroup: rg-web, name: contoso-web}}
"#
    )
}

const CONFIGMAP: (&str, &str) = ("v1", "ConfigMap");
const DEPLOYMENT: (&str, &str) = ("apps/v1", "Deployment");
const PDB: (&str, &str) = ("policy/v1", "PodDisruptionBudget");

fn get(h: &Harness, kind: (&str, &str)) -> Option<serde_json::Value> {
    h.get(kind, Some(OPERATOR_NAMESPACE), NAME)
}

fn kube_system_writes(h: &Harness) -> Vec<String> {
    h.operator_writes()
        .into_iter()
        .filter(|r| r.path.contains("/namespaces/kube-system/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_mode_serves_the_zone_from_its_own_coredns_and_writes_nothing_in_kube_system() {
    // Loopback load balancers: the simulated CoreDNS answers on the dedicated DNS Service's IP.
    let mut h = Harness::cluster_with_dns().await;
    h.outside_chart_defaults("dedicated mode: chart value dns.mode=dedicated");
    h.with_azure().await;
    h.azure().add_site(site(), before());
    let coredns_custom = h.coredns_custom();
    let coredns = h.get(DEPLOYMENT, Some("kube-system"), "coredns").unwrap();
    h.operator_args(&[
        "--dns-mode",
        "dedicated",
        "--dedicated-dns-namespace",
        OPERATOR_NAMESPACE,
        "--coredns-image",
        "registry.example/coredns:v1.12.1",
    ]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("mydomain.local"));
    h.wait_ready("web").await;

    // Its own CoreDNS: two replicas, restricted, with a budget, serving the zone.
    let corefile = get(&h, CONFIGMAP).unwrap()["data"]["Corefile"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        corefile.contains("k8s_external mydomain.local\n"),
        "{corefile}"
    );
    assert!(corefile.contains("forward . 168.63.129.16\n"), "{corefile}");
    let deployment = get(&h, DEPLOYMENT).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], NAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example/coredns:v1.12.1"
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    let pdb = get(&h, PDB).unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    // Its own internal load balancer, in the operator's namespace, selecting those pods; the App
    // Service points at it.
    let dns = h.service(OPERATOR_NAMESPACE, "appservicelink-dns").unwrap();
    assert_eq!(
        dns["spec"]["selector"],
        serde_json::json!({"app.kubernetes.io/name": NAME})
    );
    assert_eq!(
        dns["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"],
        "true"
    );
    let ip = dns["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.link("web").unwrap()["status"]["dnsServerIP"], ip.as_str());
    assert_eq!(
        h.azure().app_settings(&site()).unwrap()["WEBSITE_DNS_SERVER"],
        ip
    );
    assert!(h.service("kube-system", "appservicelink-dns").is_none());
    let (_, reason, message) = h.condition("web", "CoreDNSOverrideReady").unwrap();
    assert_eq!(reason, "DedicatedCoreDNSApplied", "{message}");
    // The names resolve through it, as the operator checked and as dig sees it.
    let (status, _, message) = h.condition("web", "NamesResolve").unwrap();
    assert_eq!(status, "True", "{message}");
    let api = h.service("shop", "api").unwrap()["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    for tcp in [false, true] {
        assert_eq!(
            crate::names::dig(&ip, "api.shop.mydomain.local", tcp),
            ("NOERROR".to_string(), vec![api.clone()])
        );
    }

    // A zone edit rolls the dedicated CoreDNS, once.
    let hash = |h: &Harness| {
        get(h, DEPLOYMENT).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["appservicelink.io/corefile-hash"]
            .clone()
    };
    let first = hash(&h);
    h.apply(&link("shop.internal"));
    h.eventually("the new zone in the Corefile", |h| {
        get(h, CONFIGMAP)?["data"]["Corefile"]
            .as_str()?
            .contains("k8s_external shop.internal\n")
            .then_some(())
    })
    .await;
    h.eventually("the pods rolled for the new Corefile", |h| {
        (hash(h) != first).then_some(())
    })
    .await;
    h.wait_ready("web").await;

    // Deleting the link removes all of it and restores the App Service.
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    for kind in [CONFIGMAP, DEPLOYMENT, PDB] {
        assert!(get(&h, kind).is_none(), "{kind:?} left behind");
    }
    assert!(h
        .service(OPERATOR_NAMESPACE, "appservicelink-dns")
        .is_none());
    assert_eq!(h.azure().app_settings(&site()).unwrap(), before());

    // Nothing in kube-system was written, or changed.
    assert_eq!(kube_system_writes(&h), Vec::<String>::new());
    assert_eq!(h.coredns_custom(), coredns_custom);
    assert_eq!(
        h.get(DEPLOYMENT, Some("kube-system"), "coredns").unwrap()["metadata"]["resourceVersion"],
        coredns["metadata"]["resourceVersion"]
    );
}
