use super::*;

fn zones(names: &[&str]) -> BTreeSet<Zone> {
    names.iter().map(|z| Zone::parse(z).unwrap()).collect()
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The AKS Corefile (kube-system/coredns).
const AKS: &str = ".:53 {\n    errors\n    ready\n    health {\n      lameduck 5s\n    }\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n      fallthrough in-addr.arpa ip6.arpa\n      ttl 30\n    }\n    prometheus :9153\n    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n    loadbalance\n    import custom/*.override\n}\nimport custom/*.server\n";

const OURS: &str = "k8s_external a.local\n";

#[test]
fn all_zones_share_one_sorted_directive() {
    assert_eq!(
        render(&zones(&["b.local", "a.local", "b.local"]), false).unwrap(),
        "k8s_external a.local b.local\n"
    );
    assert_eq!(
        render(&zones(&["b.local", "a.local"]), true).unwrap(),
        "k8s_external a.local b.local {\n    fallthrough\n}\n"
    );
    assert_eq!(render(&zones(&[]), true), None);
}

#[test]
fn fallthrough_only_for_a_coredns_that_knows_it() {
    for image in [
        "mcr.microsoft.com/oss/kubernetes/coredns:v1.11.3",
        "mcr.microsoft.com/oss/v2/kubernetes/coredns:v1.12.1-1",
        "registry.k8s.io/coredns/coredns:v1.14.3@sha256:0123",
        "coredns/coredns:1.11.0",
        "localhost:5000/coredns:v2.0.0",
    ] {
        assert!(supports_fallthrough(image), "{image}");
    }
    for image in [
        "mcr.microsoft.com/oss/kubernetes/coredns:v1.10.1",
        "mcr.microsoft.com/oss/kubernetes/coredns:v1.9.4-hotfix.20240704",
        "coredns/coredns:latest",
        "coredns/coredns",
        "localhost:5000/coredns",
        "coredns/coredns@sha256:0123",
        "",
    ] {
        assert!(!supports_fallthrough(image), "{image}");
    }
}

#[test]
fn zones_that_could_break_the_corefile_cannot_be_made() {
    for bad in [
        "a.local }",
        "a.local\nforward . 8.8.8.8",
        "a.local # x",
        "A.local",
        "a local",
        "",
        "a.local.",
    ] {
        let err = Zone::parse(bad).unwrap_err();
        assert_eq!(err.field, "spec.dns.zone", "{bad:?}");
    }
}

#[test]
fn our_override_beside_the_aks_corefile_and_harmless_keys_loads() {
    let keys = data(&[
        ("log.override", "log\n"),
        ("comment.override", "# k8s_external was here\nminimal\n"),
        ("block.server", "x.local:53 {\n k8s_external x.local\n}\n"),
        (
            "similar.override",
            "hosts {\n  10.0.0.9 k8s_external.corp\n  fallthrough\n}\n",
        ),
        ("notes.txt", "k8s_external {\n"),
    ]);
    for corefile in [Some(AKS), None] {
        assert_eq!(assess(corefile, &keys, Some(OURS)), Assessment::Loads);
        let fallthrough = render(&zones(&["a.local"]), true).unwrap();
        assert_eq!(
            assess(corefile, &keys, Some(&fallthrough)),
            Assessment::Loads
        );
    }
}

#[test]
fn a_k8s_external_in_another_key_in_any_quoting_is_found() {
    for text in [
        "k8s_external old.local\n",
        "\"k8s_external\" old.local\n",
        "log\n\"k8s_external\"\n",
        "   k8s_external   # old zones\n",
    ] {
        let keys = data(&[("legacy.override", text), (OVERRIDE_KEY, OURS)]);
        assert_eq!(
            assess(Some(AKS), &keys, Some(OURS)),
            Assessment::ForeignK8sExternal(vec!["key legacy.override".into()]),
            "{text:?}"
        );
    }
    // Without an override of ours there is nothing to clash with.
    let keys = data(&[("legacy.override", "k8s_external old.local\n")]);
    assert_eq!(assess(Some(AKS), &keys, None), Assessment::Loads);
}

#[test]
fn a_k8s_external_in_the_corefile_itself_is_found() {
    let corefile = AKS.replace("    loop\n", "    loop\n    k8s_external corp.local\n");
    assert_eq!(
        assess(Some(&corefile), &data(&[]), Some(OURS)),
        Assessment::ForeignK8sExternal(vec!["the Corefile (ConfigMap kube-system/coredns)".into()])
    );
}

#[test]
fn a_plugin_twice_in_the_server_block_is_refused_naming_the_key() {
    let keys = data(&[("forward.override", "forward . 10.0.0.4\n")]);
    let Assessment::Broken(why) = assess(Some(AKS), &keys, Some(OURS)) else {
        panic!("a second forward loads");
    };
    assert!(
        why.contains("plugin forward appears twice in server block .:53")
            && why.contains("key forward.override line 1"),
        "{why}"
    );
    // Two overrides that both cache clash with each other, Corefile or not.
    let keys = data(&[("a.override", "cache 30\n"), ("b.override", "cache 60\n")]);
    let Assessment::Broken(why) = assess(None, &keys, Some(OURS)) else {
        panic!("two caches load");
    };
    assert!(
        why.contains("key a.override") && why.contains("key b.override"),
        "{why}"
    );
}

#[test]
fn plugins_that_take_one_rule_per_line_may_repeat() {
    let keys = data(&[
        (
            "rewrite.override",
            "rewrite name a.contoso.com a.default.svc.cluster.local\nrewrite name b.contoso.com b.default.svc.cluster.local\n",
        ),
        ("log.override", "log\nlog . {combined}\n"),
        (
            "template.override",
            "template IN A one.local {\n  answer \"{{ .Name }} 60 IN A 10.0.0.1\"\n}\ntemplate IN AAAA one.local {\n  rcode NXDOMAIN\n}\n",
        ),
    ]);
    assert_eq!(assess(Some(AKS), &keys, Some(OURS)), Assessment::Loads);
}

#[test]
fn unbalanced_braces_in_another_key_are_refused_naming_it() {
    for (text, why) in [
        ("log {\n", "'{' is never closed"),
        ("log\n}\n", "'}' without a matching '{'"),
        ("x.local:53 {\n forward . 10.0.0.1\n", "'{' is never closed"),
    ] {
        let key = if text.starts_with('x') {
            "x.server"
        } else {
            "bad.override"
        };
        let keys = data(&[(key, text)]);
        let line = if why.starts_with("'}'") { 2 } else { 1 };
        assert_eq!(
            assess(Some(AKS), &keys, Some(OURS)),
            Assessment::Broken(format!("key {key} line {line}: {why}")),
            "{text:?}"
        );
    }
    // A stray brace on a directive's own line is CoreDNS's error, and names the key too.
    let keys = data(&[("bad.override", "log { }\n}\nerrors {\n")]);
    let Assessment::Broken(why) = assess(Some(AKS), &keys, Some(OURS)) else {
        panic!("loads");
    };
    assert!(why.contains("key bad.override"), "{why}");
}

#[test]
fn the_configmap_body_holds_only_our_key_and_our_record() {
    let body = desired_configmap(Some("k8s_external a.local\n"), Some("abc"));
    assert_eq!(
        body["data"],
        json!({OVERRIDE_KEY: "k8s_external a.local\n"})
    );
    assert_eq!(
        body["metadata"]["annotations"],
        json!({ROLLED_ANNOTATION: "abc"})
    );
    let empty = desired_configmap(None, None);
    assert!(empty.get("data").is_none());
    assert!(empty["metadata"].get("annotations").is_none());
}

#[test]
fn coredns_rolls_only_when_the_content_changes() {
    let a = Some("k8s_external a.local\n");
    let b = Some("k8s_external a.local b.local\n");
    let hash_a = content_hash(a);
    // Never rolled, nothing to load.
    assert!(!needs_roll(None, None, None));
    // A first override rolls.
    assert!(needs_roll(a, None, None));
    // Rolled for it, by either record: no roll, even when the other one is gone.
    assert!(!needs_roll(a, Some(&hash_a), None));
    assert!(!needs_roll(a, None, Some(&hash_a)));
    assert!(!needs_roll(a, Some(&hash_a), Some("stale")));
    // A changed override rolls, whatever the pod template says.
    assert!(needs_roll(b, Some(&hash_a), Some(&hash_a)));
    assert!(needs_roll(b, Some(&hash_a), None));
    // Removing the override rolls once, then the record is gone and nothing rolls.
    assert!(needs_roll(None, Some(&hash_a), None));
    assert_eq!(desired_record(None), None);
    assert!(!needs_roll(None, None, Some(&content_hash(None))));
    assert_eq!(desired_record(a), Some(hash_a.clone()));
    assert_eq!(
        restart_patch(&hash_a)["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION],
        json!(hash_a)
    );
}

#[test]
fn a_directive_coredns_does_not_know_is_refused_naming_the_key() {
    for text in ["k8s_externa corp.local\n", "k8s_external{ corp.local\n"] {
        let keys = data(&[("typo.override", text)]);
        let Assessment::Broken(why) = assess(Some(AKS), &keys, Some(OURS)) else {
            panic!("{text:?} loads");
        };
        assert!(
            why.starts_with("key typo.override line 1: unknown directive"),
            "{why}"
        );
    }
    // Plugins of any release AKS ships pass, in the Corefile and in the keys.
    let keys = data(&[(
        "extra.override",
        "header {\n  response set ra\n}\nminimal\n",
    )]);
    assert_eq!(assess(Some(AKS), &keys, Some(OURS)), Assessment::Loads);
}
