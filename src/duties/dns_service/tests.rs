use super::*;

fn settings(ip: Option<&str>) -> DnsServiceSettings {
    DnsServiceSettings {
        name: "appservicelink-dns".into(),
        namespace: NAMESPACE.into(),
        dedicated: false,
        static_ip: ip.map(str::to_string),
        subnet: Some("ilb".into()),
        pin: true,
    }
}

/// The Service the apiserver would hold after applying `desired`, with defaults filled in.
fn applied(settings: &DnsServiceSettings) -> Service {
    let mut value = desired(settings, None);
    value["spec"]["clusterIP"] = json!("10.0.0.53");
    value["spec"]["sessionAffinity"] = json!("None");
    serde_json::from_value(value).unwrap()
}

#[test]
fn the_dns_service_fronts_coredns_on_both_protocols_internally() {
    let body = desired(&settings(Some("10.240.0.53")), None);
    assert_eq!(body["metadata"]["namespace"], "kube-system");
    assert_eq!(body["spec"]["type"], "LoadBalancer");
    assert_eq!(body["spec"]["selector"], json!({"k8s-app": "kube-dns"}));
    let ports: Vec<_> = body["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].clone(), p["protocol"].clone()))
        .collect();
    assert_eq!(
        ports,
        vec![(json!(53), json!("UDP")), (json!(53), json!("TCP"))]
    );
    let annotations = &body["metadata"]["annotations"];
    assert_eq!(annotations[ANNOTATION_INTERNAL], "true");
    assert_eq!(annotations[ANNOTATION_SUBNET], "ilb");
    assert_eq!(annotations[ANNOTATION_IPV4], "10.240.0.53");
}

#[test]
fn no_static_ip_means_no_ipv4_annotation() {
    let body = desired(&settings(None), None);
    assert!(body["metadata"]["annotations"]
        .get(ANNOTATION_IPV4)
        .is_none());
}

#[test]
fn an_applied_service_is_converged_until_the_settings_change() {
    let svc = applied(&settings(Some("10.240.0.53")));
    assert!(is_converged(&svc, &settings(Some("10.240.0.53")), None));
    assert!(!is_converged(&svc, &settings(Some("10.240.0.54")), None));
    assert!(!is_converged(&svc, &settings(None), None));
}

#[test]
fn a_foreign_service_is_never_converged_or_ours() {
    let mut svc = applied(&settings(None));
    svc.metadata.labels = None;
    assert!(!is_ours(&svc));
    assert!(!is_converged(&svc, &settings(None), None));
}

#[test]
fn the_ip_counts_only_once_it_is_the_static_ip_asked_for() {
    let mut svc = applied(&settings(Some("10.240.0.53")));
    assert_eq!(
        dns_server_ip(&svc, &settings(Some("10.240.0.53")), None),
        None
    );
    svc.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.240.0.9"}]}}))
            .unwrap();
    assert_eq!(
        dns_server_ip(&svc, &settings(Some("10.240.0.53")), None),
        None
    );
    assert_eq!(
        dns_server_ip(&svc, &settings(None), None).as_deref(),
        Some("10.240.0.9")
    );
}

#[test]
fn the_oldest_link_decides() {
    let claim = |link: &str, created: &str, ip: Option<&str>| Claim {
        link: link.into(),
        created: created.into(),
        settings: settings(ip),
        pinned: None,
    };
    let claims = vec![
        claim("b", "2026-01-02T00:00:00Z", Some("10.240.0.54")),
        claim("a", "2026-01-03T00:00:00Z", Some("10.240.0.53")),
        claim("c", "2026-01-02T00:00:00Z", None),
    ];
    assert_eq!(
        deciding_claim(&claims, "appservicelink-dns", None)
            .unwrap()
            .link,
        "b"
    );
    assert!(deciding_claim(&claims, "other", None).is_none());
    // The link whose settings are already in place keeps the Service, whatever the ages say.
    let existing = applied(&settings(Some("10.240.0.53")));
    assert_eq!(
        deciding_claim(&claims, "appservicelink-dns", Some(&existing))
            .unwrap()
            .link,
        "a"
    );
}

fn with_ip(mut svc: Service, ip: &str) -> Service {
    svc.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": ip}]}})).unwrap();
    svc
}

#[test]
fn a_pinned_address_becomes_the_ipv4_annotation_unless_the_spec_sets_one() {
    let body = desired(&settings(None), Some("10.240.0.9"));
    assert_eq!(
        body["metadata"]["annotations"][ANNOTATION_IPV4],
        "10.240.0.9"
    );
    let body = desired(&settings(Some("10.240.0.53")), Some("10.240.0.9"));
    assert_eq!(
        body["metadata"]["annotations"][ANNOTATION_IPV4],
        "10.240.0.53"
    );
    let opted_out = DnsServiceSettings {
        pin: false,
        ..settings(None)
    };
    assert!(
        desired(&opted_out, Some("10.240.0.9"))["metadata"]["annotations"]
            .get(ANNOTATION_IPV4)
            .is_none()
    );
    // A Service applied without the pin is not converged until it carries it.
    let svc = with_ip(applied(&settings(None)), "10.240.0.9");
    assert!(!is_converged(&svc, &settings(None), Some("10.240.0.9")));
    let mut pinned = desired(&settings(None), Some("10.240.0.9"));
    pinned["spec"]["clusterIP"] = json!("10.0.0.53");
    let pinned = with_ip(serde_json::from_value(pinned).unwrap(), "10.240.0.9");
    assert!(is_converged(&pinned, &settings(None), Some("10.240.0.9")));
}

#[test]
fn the_pin_is_the_recorded_address_else_the_one_azure_assigned() {
    let decider = |pinned: Option<&str>, settings: DnsServiceSettings| Claim {
        link: "a".into(),
        created: "2026-01-01T00:00:00Z".into(),
        settings,
        pinned: pinned.map(str::to_string),
    };
    let assigned = with_ip(applied(&settings(None)), "10.240.0.9");
    assert_eq!(pin(&decider(None, settings(None)), None), None);
    assert_eq!(
        pin(&decider(None, settings(None)), Some(&assigned)).as_deref(),
        Some("10.240.0.9")
    );
    // A re-created Service: the record wins over whatever Azure assigned meanwhile.
    assert_eq!(
        pin(
            &decider(Some("10.240.0.7"), settings(None)),
            Some(&assigned)
        )
        .as_deref(),
        Some("10.240.0.7")
    );
    assert_eq!(
        pin(
            &decider(Some("10.240.0.7"), settings(Some("10.240.0.53"))),
            Some(&assigned)
        ),
        None
    );
    let opted_out = DnsServiceSettings {
        pin: false,
        ..settings(None)
    };
    assert_eq!(
        pin(&decider(Some("10.240.0.7"), opted_out), Some(&assigned)),
        None
    );
    // Someone else's Service of that name lends no address.
    let mut foreign = assigned.clone();
    foreign.metadata.labels = None;
    assert_eq!(pin(&decider(None, settings(None)), Some(&foreign)), None);
}
