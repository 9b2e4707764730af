//! The override is the most dangerous thing the operator writes: a bad Corefile, or a zone that
//! shadows names pods rely on, takes DNS down for every pod. These scenarios hold the operator to
//! writing nothing in those cases, and to rolling CoreDNS only when its own content changes.

use serde_json::Value;

use crate::harness::{describe, Harness};

const OVERRIDE_KEY: &str = "appservicelink.override";
const HASH_ANNOTATION: &str = "appservicelink.io/coredns-override-hash";
const ROLLED_ANNOTATION: &str = "appservicelink.io/coredns-rolled-for";

fn link(name: &str, zone: &str, extra_dns: &str) -> String {
    format!(
        r#"apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: {name}
spec:
  services:
    selector:
      matchLabels: {{appservicelink.io/expose: "true"}}
    subnet: ilb-subnet
  dns:
    zone: {zone}
{extra_dns}    service:
      name: appservicelink-dns
      staticIP: 10.240.0.53
"#
    )
}

fn writes_to(h: &Harness, path_suffix: &str) -> Vec<String> {
    let writes: Vec<_> = h
        .operator_writes()
        .into_iter()
        .filter(|r| r.path.ends_with(path_suffix))
        .collect();
    describe(&writes)
}

fn coredns(h: &Harness) -> Value {
    h.sim
        .get("apps/v1", "Deployment", Some("kube-system"), "coredns")
        .expect("the CoreDNS Deployment exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dangerous_zone_is_refused_saying_why_and_nothing_is_written() {
    let mut h = Harness::cluster().await;
    h.operator_args(&["--cluster-domain", "corp.internal"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    let before = h.coredns_custom();

    // Admission refuses what a CEL rule can judge, and says why.
    for (zone, why) in [
        (
            "svc.cluster.local",
            "must not be cluster.local or a zone below it",
        ),
        ("10.in-addr.arpa", "must not be a reverse-lookup zone"),
        ("internal", "must have at least two labels"),
        (
            "privatelink.blob.core.windows.net",
            "must not contain a privatelink label",
        ),
        (
            "contoso.azurewebsites.net",
            "must not be in Azure's own DNS namespaces",
        ),
    ] {
        let out = h.kubectl(&["apply", "-f", "-"], Some(&link("bad", zone, "")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{zone} was admitted");
        assert!(
            stderr.contains("spec.dns.zone") && stderr.contains(why),
            "{zone}: {stderr}"
        );
    }
    assert!(h.link("bad").is_none());

    // What only the controller can judge (the Public Suffix List, --cluster-domain) is admitted,
    // then refused in status, naming the field, with nothing written.
    for (zone, why) in [
        (
            "internal.contoso.com",
            "spec.dns.zone: internal.contoso.com is in a public domain (under the public suffix com)",
        ),
        (
            "svc.corp.internal",
            "spec.dns.zone: svc.corp.internal is the cluster domain corp.internal",
        ),
        ("co.uk", "spec.dns.zone: co.uk is a public suffix"),
    ] {
        h.apply(&link("web", zone, ""));
        let (status, _, message) = h
            .eventually(&format!("{zone} refused"), |h| {
                h.condition("web", "CoreDNSOverrideReady")
                    .filter(|c| c.1 == "InvalidSpec" && c.2.contains(zone))
            })
            .await;
        assert_eq!(status, "False");
        assert!(message.contains(why), "{message}");
        let stalled = h.condition("web", "Stalled").unwrap();
        assert_eq!(stalled.0, "True", "{stalled:?}");
    }
    assert_eq!(
        h.coredns_custom(),
        before,
        "coredns-custom is byte for byte what it was"
    );
    assert_eq!(
        writes_to(&h, "/configmaps/coredns-custom"),
        Vec::<String>::new()
    );
    assert_eq!(writes_to(&h, "/deployments/coredns"), Vec::<String>::new());

    // A domain the organisation owns is served once the link opts in.
    h.apply(&link(
        "web",
        "internal.contoso.com",
        "    allowPublicDomain: true\n",
    ));
    h.wait_ready("web").await;
    let data = h.coredns_custom()["data"].clone();
    assert_eq!(
        data[OVERRIDE_KEY],
        "k8s_external internal.contoso.com {\n    fallthrough\n}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quoted_k8s_external_in_another_key_makes_the_operator_withdraw_its_own() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("web", "mydomain.local", ""));
    h.wait_ready("web").await;
    assert!(h.coredns_custom()["data"][OVERRIDE_KEY].is_string());

    // CoreDNS reads `"k8s_external"` as the plugin's name, quotes or not.
    let legacy = "\"k8s_external\" old.local # from before the operator\n";
    let patch = serde_json::json!({"data": {"legacy.override": legacy}}).to_string();
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        &patch,
    ]);
    let (status, _, message) = h
        .eventually("the override withdrawn", |h| {
            h.condition("web", "CoreDNSOverrideReady")
                .filter(|c| c.1 == "ForeignK8sExternal")
        })
        .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("key legacy.override") && message.contains("withdrew its key"),
        "{message}"
    );
    let (stalled, _, why) = h.condition("web", "Stalled").unwrap();
    assert_eq!(stalled, "True");
    assert!(why.contains("key legacy.override"), "{why}");
    // Never two k8s_external directives: ours is gone, theirs and the others are untouched.
    let data = h.coredns_custom()["data"].clone();
    assert!(data.get(OVERRIDE_KEY).is_none(), "{data}");
    assert_eq!(data["legacy.override"], legacy);
    assert_eq!(data["log.override"], "log\n");

    // Once the other directive is gone, the operator's comes back.
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"legacy.override":null}}"#,
    ]);
    h.eventually("the override back", |h| {
        h.coredns_custom()["data"][OVERRIDE_KEY]
            .as_str()
            .filter(|c| c.starts_with("k8s_external mydomain.local"))
            .map(drop)
    })
    .await;
    h.wait_ready("web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_elsewhere_stops_the_override_naming_it() {
    let h = Harness::start().await;
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("web", "mydomain.local", ""));
    h.wait_ready("web").await;
    let rolls = writes_to(&h, "/deployments/coredns");

    // The AKS Corefile has its own forward; a second one in .:53 stops CoreDNS.
    let patch =
        serde_json::json!({"data": {"forward.override": "forward . 10.0.0.4\n"}}).to_string();
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "configmap",
        "coredns-custom",
        "--type",
        "merge",
        "-p",
        &patch,
    ]);
    let before = h.coredns_custom();
    let writes = writes_to(&h, "/configmaps/coredns-custom");
    // A zone edit now would be a write into a Corefile CoreDNS cannot load.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"zone":"shop.local"}}}"#,
    ]);
    let (_, _, message) = h
        .eventually("the override refused", |h| {
            h.condition("web", "CoreDNSOverrideReady")
                .filter(|c| c.1 == "CorefileWouldNotLoad")
        })
        .await;
    assert!(
        message.contains("plugin forward appears twice in server block .:53")
            && message.contains("key forward.override")
            && message.contains("nothing was written"),
        "{message}"
    );
    assert_eq!(h.condition("web", "Stalled").unwrap().0, "True");
    assert_eq!(h.coredns_custom(), before, "nothing was written");
    assert_eq!(writes_to(&h, "/configmaps/coredns-custom"), writes);
    assert_eq!(
        writes_to(&h, "/deployments/coredns"),
        rolls,
        "CoreDNS was not rolled"
    );

    // Deleting the link still takes its zone away: removing our key cannot make it worse.
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    let data = h.coredns_custom()["data"].clone();
    assert!(data.get(OVERRIDE_KEY).is_none(), "{data}");
    assert_eq!(data["forward.override"], "forward . 10.0.0.4\n");
    // Nothing of the operator's is left on coredns-custom.
    let annotations = h.coredns_custom()["metadata"]["annotations"].clone();
    assert!(
        annotations
            .get("appservicelink.io/coredns-rolled-for")
            .is_none(),
        "{annotations}"
    );
    assert_eq!(
        writes_to(&h, "/deployments/coredns"),
        rolls,
        "CoreDNS was not rolled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_pod_template_annotation_rolls_nothing_and_a_zone_edit_rolls_once() {
    let mut h = Harness::cluster().await;
    // Deployments are not watched: the resync is what would notice the stripped annotation.
    h.operator_args(&["--resync-seconds", "1"]);
    h.start_operator();
    h.apply(include_str!("fixtures/shop.yaml"));
    h.apply(&link("web", "mydomain.local", ""));
    h.wait_ready("web").await;
    assert_eq!(writes_to(&h, "/deployments/coredns").len(), 1);

    // The AKS addon manager (or a GitOps tool) reconciles the Deployment and drops our annotation.
    let strip = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: null}}}}})
        .to_string();
    h.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "deployment",
        "coredns",
        "--type",
        "merge",
        "-p",
        &strip,
    ]);
    assert!(coredns(&h)["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION].is_null());
    for _ in 0..3 {
        let since = h.mark();
        h.settle_after(&since).await;
    }
    assert_eq!(
        writes_to(&h, "/deployments/coredns").len(),
        1,
        "a stripped annotation alone rolled CoreDNS: {:?}",
        writes_to(&h, "/deployments/coredns")
    );

    // A changed override rolls CoreDNS, once.
    h.kubectl_ok(&[
        "patch",
        "asl",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"dns":{"zone":"shop.local"}}}"#,
    ]);
    h.eventually("the new zone in the override", |h| {
        h.coredns_custom()["data"][OVERRIDE_KEY]
            .as_str()
            .filter(|c| c.contains("shop.local"))
            .map(drop)
    })
    .await;
    for _ in 0..3 {
        let since = h.mark();
        h.settle_after(&since).await;
    }
    assert_eq!(
        writes_to(&h, "/deployments/coredns").len(),
        2,
        "{:?}",
        writes_to(&h, "/deployments/coredns")
    );
    assert!(
        coredns(&h)["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION].is_string()
    );
    let custom = h.coredns_custom();
    assert!(
        custom["metadata"]["annotations"][ROLLED_ANNOTATION].is_string(),
        "the roll is recorded on coredns-custom: {custom}"
    );

    // The last link gone: the override goes, CoreDNS rolls once more, and no record is left behind.
    h.kubectl_ok(&["delete", "asl", "web", "--timeout=30s"]);
    let custom = h.coredns_custom();
    assert!(custom["data"].get(OVERRIDE_KEY).is_none(), "{custom}");
    assert!(
        custom["metadata"]["annotations"]
            .get(ROLLED_ANNOTATION)
            .is_none(),
        "{custom}"
    );
    assert_eq!(writes_to(&h, "/deployments/coredns").len(), 3);
}
