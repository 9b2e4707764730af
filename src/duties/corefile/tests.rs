use super::*;

fn zones(names: &[&str]) -> BTreeSet<Zone> {
    names.iter().map(|z| Zone::parse(z).unwrap()).collect()
}

#[test]
fn all_zones_share_one_sorted_directive() {
    assert_eq!(
        render(&zones(&["b.local", "a.local", "b.local"])).unwrap(),
        "k8s_external a.local b.local\n"
    );
    assert_eq!(render(&zones(&[])), None);
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
fn a_foreign_k8s_external_is_found_but_comments_and_server_blocks_are_not() {
    let data: BTreeMap<String, String> = [
        ("mine.override", "log\nk8s_external other.local\n"),
        ("braced.override", "k8s_external{\n}\n"),
        ("comment.override", "# k8s_external was here\nlog\n"),
        ("block.server", "x.local:53 {\n k8s_external x.local\n}\n"),
        (OVERRIDE_KEY, "k8s_external a.local\n"),
        ("similar.override", "k8s_externally\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        foreign_k8s_external(&data),
        vec!["braced.override".to_string(), "mine.override".to_string()]
    );
}

#[test]
fn the_configmap_body_holds_only_our_key() {
    let body = desired_configmap(Some("k8s_external a.local\n"));
    assert_eq!(
        body["data"],
        json!({OVERRIDE_KEY: "k8s_external a.local\n"})
    );
    assert!(desired_configmap(None).get("data").is_none());
}

#[test]
fn coredns_rolls_only_when_the_content_changes() {
    let a = Some("k8s_external a.local\n");
    assert_eq!(desired_restart_hash(None, None), None);
    let first = desired_restart_hash(a, None).unwrap();
    assert_eq!(desired_restart_hash(a, Some(&first)), None);
    let removed = desired_restart_hash(None, Some(&first)).unwrap();
    assert_ne!(removed, first);
    assert_eq!(desired_restart_hash(None, Some(&removed)), None);
    assert_eq!(
        restart_patch(&first)["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION],
        json!(first)
    );
}
