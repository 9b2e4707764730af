use super::*;
use serde_json::json;

fn svc(value: Value) -> Service {
    serde_json::from_value(value).unwrap()
}

fn cluster_ip(annotations: Value) -> Service {
    svc(json!({
        "metadata": {"name": "api", "namespace": "shop", "annotations": annotations},
        "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.10", "ports": [{"port": 80}]}
    }))
}

fn want(link: &str, subnet: Option<&str>) -> LinkSettings {
    LinkSettings {
        link: link.into(),
        subnet: subnet.map(str::to_string),
        allow_public: false,
    }
}

/// Applies an SSA body's annotations and type onto a Service, as the apiserver would, recording
/// that the operator's field manager owns them.
fn converged(service: &Service, body: &Value) -> Service {
    let mut value = serde_json::to_value(service).unwrap();
    let mut owned = serde_json::Map::new();
    for (k, v) in body["metadata"]["annotations"].as_object().unwrap() {
        value["metadata"]["annotations"][k] = v.clone();
        owned.insert(format!("f:{k}"), json!({}));
    }
    value["spec"]["type"] = body["spec"]["type"].clone();
    value["metadata"]["managedFields"] = json!([
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": owned}, "f:spec": {"f:type": {}}}}
    ]);
    svc(value)
}

/// `svc` after someone else's write set the annotation `key` to `value`: the write takes the
/// annotation's ownership away from the operator, as the apiserver does.
fn annotated_by_someone_else(service: &Service, key: &str, value: &str) -> Service {
    let mut value_json = serde_json::to_value(service).unwrap();
    value_json["metadata"]["annotations"][key] = json!(value);
    let field = format!("f:{key}");
    for entry in value_json["metadata"]["managedFields"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if let Some(annotations) = entry["fieldsV1"]["f:metadata"]["f:annotations"].as_object_mut()
        {
            annotations.remove(&field);
        }
    }
    value_json["metadata"]["managedFields"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"manager": "kubectl-annotate", "operation": "Update", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:annotations": {field: {}}}}}),
        );
    svc(value_json)
}

/// A record saying the Service was a public load balancer.
fn public_record() -> String {
    serde_json::to_string(&PreviousState {
        service_type: "LoadBalancer".into(),
        annotations: BTreeMap::from([
            (ANNOTATION_INTERNAL.to_string(), None),
            (ANNOTATION_SUBNET.to_string(), None),
        ]),
    })
    .unwrap()
}

#[test]
fn a_cluster_ip_service_becomes_an_internal_load_balancer_and_remembers_what_it_was() {
    let service = cluster_ip(json!({"team": "shop"}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", Some("ilb")), None) else {
        panic!("expected an apply")
    };
    assert_eq!(body["spec"], json!({"type": "LoadBalancer"}));
    let annotations = &body["metadata"]["annotations"];
    assert_eq!(annotations[ANNOTATION_INTERNAL], "true");
    assert_eq!(annotations[ANNOTATION_SUBNET], "ilb");
    assert_eq!(annotations[ANNOTATION_LINK], "web");
    assert!(
        annotations.get("team").is_none(),
        "foreign annotations are never in our apply"
    );
    let previous: PreviousState =
        serde_json::from_str(annotations[ANNOTATION_PREVIOUS].as_str().unwrap()).unwrap();
    assert_eq!(previous.service_type, "ClusterIP");
    assert_eq!(previous.annotations[ANNOTATION_INTERNAL], None);
}

#[test]
fn a_converted_service_needs_no_write() {
    let service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", None), None) else {
        panic!()
    };
    let after = converged(&service, &body);
    assert_eq!(
        plan(&after, &want("web", None), None),
        ServicePlan::Converged
    );
}

#[test]
fn restore_puts_back_type_and_annotations_exactly() {
    let service = cluster_ip(json!({ANNOTATION_INTERNAL: "false", "team": "shop"}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", Some("ilb")), None) else {
        panic!()
    };
    let after = converged(&service, &body);
    let patch = restore_patch(&after).unwrap();
    assert_eq!(patch["spec"], json!({"type": "ClusterIP"}));
    assert_eq!(
        patch["metadata"]["annotations"],
        json!({ANNOTATION_INTERNAL: "false", ANNOTATION_SUBNET: null, ANNOTATION_LINK: null, ANNOTATION_PREVIOUS: null})
    );
}

#[test]
fn restore_to_cluster_ip_nulls_leftover_source_ranges() {
    let mut service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", None), None) else {
        panic!()
    };
    service = converged(&service, &body);
    service.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
    let patch = restore_patch(&service).unwrap();
    assert_eq!(patch["spec"]["loadBalancerSourceRanges"], Value::Null);
    assert!(patch["spec"]
        .as_object()
        .unwrap()
        .contains_key("loadBalancerSourceRanges"));
}

#[test]
fn an_unreadable_record_leaves_the_service_alone() {
    let service = cluster_ip(json!({ANNOTATION_LINK: "web", ANNOTATION_PREVIOUS: "{not json"}));
    assert_eq!(restore_patch(&service), None);
}

#[test]
fn headless_external_name_and_public_services_are_skipped() {
    let headless = svc(
        json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None"}}),
    );
    assert_eq!(
        plan(&headless, &want("web", None), None),
        ServicePlan::Skip(SkipReason::Headless)
    );
    let alias = svc(
        json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {"type": "ExternalName", "externalName": "db.example"}}),
    );
    assert_eq!(
        plan(&alias, &want("web", None), None),
        ServicePlan::Skip(SkipReason::ExternalName)
    );
    let public = svc(
        json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "LoadBalancer"}}),
    );
    assert_eq!(
        plan(&public, &want("web", None), None),
        ServicePlan::Skip(SkipReason::PublicLoadBalancer)
    );
    let opted_in = LinkSettings {
        allow_public: true,
        ..want("web", None)
    };
    assert!(matches!(
        plan(&public, &opted_in, None),
        ServicePlan::Apply(_)
    ));
}

#[test]
fn a_second_link_shares_or_conflicts_but_never_writes() {
    let service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("first", Some("a")), None) else {
        panic!()
    };
    let after = converged(&service, &body);
    let first = want("first", Some("a"));
    assert_eq!(
        plan(&after, &want("second", Some("a")), Some(&first)),
        ServicePlan::SharedWith("first".into())
    );
    assert_eq!(
        plan(&after, &want("second", Some("b")), Some(&first)),
        ServicePlan::Conflict {
            holder: "first".into()
        }
    );
    // The holder itself keeps converging to nothing.
    assert_eq!(plan(&after, &first, Some(&first)), ServicePlan::Converged);
}

#[test]
fn a_revert_by_another_field_manager_is_named() {
    let service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", None), None) else {
        panic!()
    };
    let mut reverted = serde_json::to_value(converged(&service, &body)).unwrap();
    reverted["spec"]["type"] = json!("ClusterIP");
    reverted["metadata"]["managedFields"] = json!([
        {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:{ANNOTATION_LINK}"): {}}}}},
        {"manager": "argocd-controller", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:type": {}}}}
    ]);
    let plan = plan(&svc(reverted), &want("web", None), None);
    let ServicePlan::Reverted { managers, apply } = plan else {
        panic!("expected a revert, got {plan:?}")
    };
    assert_eq!(managers, vec!["argocd-controller".to_string()]);
    assert_eq!(
        apply, body,
        "re-applying keeps the original previous-state record"
    );
}

#[test]
fn a_link_that_drops_its_subnet_goes_back_to_the_previous_subnet() {
    let service = cluster_ip(json!({ANNOTATION_SUBNET: "old"}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", Some("new")), None) else {
        panic!()
    };
    let after = converged(&service, &body);
    let ServicePlan::Apply(body) = plan(&after, &want("web", None), None) else {
        panic!()
    };
    assert_eq!(body["metadata"]["annotations"][ANNOTATION_SUBNET], "old");
}

#[test]
fn the_load_balancer_ip_is_read_from_status() {
    let service = svc(
        json!({"metadata": {"name": "a"}, "status": {"loadBalancer": {"ingress": [{"ip": "10.240.0.7"}]}}}),
    );
    assert_eq!(
        load_balancer::load_balancer_ip(&service).as_deref(),
        Some("10.240.0.7")
    );
}

#[test]
fn reverts_far_apart_do_not_add_up() {
    let at = |s: &str| Some(Time(s.parse().unwrap()));
    let entry = LinkedServiceStatus {
        reverts: 3,
        last_revert_time: at("2026-01-01T10:00:00Z"),
        ..Default::default()
    };
    let hour = std::time::Duration::from_secs(3600);
    // Within the window, a tool fighting the operator keeps its count.
    assert_eq!(
        decayed(&entry, hour, "2026-01-01T10:59:00Z".parse().unwrap()),
        (3, entry.last_revert_time.clone())
    );
    // A revert after the window (the next `helm upgrade`) starts again from zero.
    assert_eq!(
        decayed(&entry, hour, "2026-01-01T11:00:01Z".parse().unwrap()),
        (0, None)
    );
    let never = LinkedServiceStatus::default();
    assert_eq!(
        decayed(&never, hour, "2026-01-01T11:00:01Z".parse().unwrap()),
        (0, None)
    );
}

#[test]
fn a_forged_record_on_a_service_the_operator_never_converted_is_replaced() {
    let forged = cluster_ip(json!({ANNOTATION_PREVIOUS: public_record()}));
    let ServicePlan::Apply(body) = plan(&forged, &want("web", None), None) else {
        panic!("expected an apply")
    };
    let record: PreviousState = serde_json::from_str(
        body["metadata"]["annotations"][ANNOTATION_PREVIOUS]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record, PreviousState::of(&forged), "what it really is");
    assert_eq!(record.service_type, "ClusterIP");
    let after = converged(&forged, &body);
    assert_eq!(restore_patch(&after).unwrap()["spec"]["type"], "ClusterIP");
}

#[test]
fn a_record_someone_else_changed_never_restores_a_public_load_balancer() {
    let service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", None), None) else {
        panic!()
    };
    let tampered = annotated_by_someone_else(
        &converged(&service, &body),
        ANNOTATION_PREVIOUS,
        &public_record(),
    );
    assert!(PreviousState::recorded_on(&tampered).is_some());
    assert_eq!(restore_patch(&tampered), None, "left as it is");
    // Still held: the link annotation is the operator's. The next apply records what it sees.
    assert_eq!(holder(&tampered), Some("web"));
    let ServicePlan::Reverted { managers, apply } = plan(&tampered, &want("web", None), None)
    else {
        panic!("expected a revert")
    };
    assert_eq!(managers, vec!["kubectl-annotate".to_string()]);
    let record: PreviousState = serde_json::from_str(
        apply["metadata"]["annotations"][ANNOTATION_PREVIOUS]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(!record.is_public_load_balancer(), "{record:?}");
}

#[test]
fn a_record_the_operator_wrote_restores_a_public_load_balancer() {
    let public = svc(
        json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "LoadBalancer"}}),
    );
    let opted_in = LinkSettings {
        allow_public: true,
        ..want("web", None)
    };
    let ServicePlan::Apply(body) = plan(&public, &opted_in, None) else {
        panic!()
    };
    let patch = restore_patch(&converged(&public, &body)).unwrap();
    assert_eq!(patch["spec"]["type"], "LoadBalancer");
    assert_eq!(
        patch["metadata"]["annotations"][ANNOTATION_INTERNAL],
        Value::Null
    );
}

#[test]
fn a_record_someone_else_wrote_is_restored_when_it_cannot_expose_the_service() {
    let service = cluster_ip(json!({}));
    let ServicePlan::Apply(body) = plan(&service, &want("web", None), None) else {
        panic!()
    };
    let record = serde_json::to_string(&PreviousState::of(&service)).unwrap();
    let rewritten =
        annotated_by_someone_else(&converged(&service, &body), ANNOTATION_PREVIOUS, &record);
    assert_eq!(
        restore_patch(&rewritten).unwrap()["spec"]["type"],
        "ClusterIP"
    );
}

#[test]
fn a_forged_link_annotation_holds_nothing_and_skips_no_check() {
    let public = svc(json!({
        "metadata": {"name": "edge", "namespace": "shop", "annotations": {ANNOTATION_LINK: "web"}},
        "spec": {"type": "LoadBalancer"}
    }));
    assert_eq!(holder(&public), None);
    assert_eq!(
        plan(&public, &want("web", None), None),
        ServicePlan::Skip(SkipReason::PublicLoadBalancer)
    );
}

#[test]
fn a_service_in_kube_system_is_skipped_whoever_holds_it() {
    let mut kube_dns = cluster_ip(json!({}));
    kube_dns.metadata.namespace = Some(SYSTEM_NAMESPACE.into());
    assert_eq!(
        plan(&kube_dns, &want("web", None), None),
        ServicePlan::Skip(SkipReason::SystemNamespace)
    );
    let ServicePlan::Apply(body) = plan(&cluster_ip(json!({})), &want("web", None), None) else {
        panic!()
    };
    let mut converged_earlier = converged(&kube_dns, &body);
    converged_earlier.metadata.namespace = Some(SYSTEM_NAMESPACE.into());
    assert_eq!(
        plan(
            &converged_earlier,
            &want("web", None),
            Some(&want("web", None))
        ),
        ServicePlan::Skip(SkipReason::SystemNamespace)
    );
    assert!(SkipReason::SystemNamespace
        .message()
        .contains("kube-system"));
}

#[test]
fn an_event_names_ten_services_and_counts_the_rest() {
    let items: Vec<Changed> = (0..12)
        .map(|i| (format!("ns/s{i}"), String::new()))
        .collect();
    assert_eq!(note(&[], "x", "y"), None);
    assert_eq!(
        note(&items[..1], "is now an internal load balancer", "are").as_deref(),
        Some("Service ns/s0 is now an internal load balancer")
    );
    let many = note(&items, "is", "are now internal load balancers").unwrap();
    assert!(
        many.starts_with("12 Services are now internal load balancers: ns/s0, ns/s1,"),
        "{many}"
    );
    assert!(many.ends_with("ns/s9 and 2 more"), "{many}");
    let restored = [("ns/a".to_string(), " to type ClusterIP".to_string())];
    assert_eq!(
        note(&restored, "restored", "restored").as_deref(),
        Some("Service ns/a restored to type ClusterIP")
    );
}

#[test]
fn a_public_load_balancer_another_link_converted_needs_the_opt_in_to_take_over() {
    let public = svc(
        json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"type": "LoadBalancer"}}),
    );
    let opted_in = LinkSettings {
        allow_public: true,
        ..want("partners", None)
    };
    let ServicePlan::Apply(body) = plan(&public, &opted_in, None) else {
        panic!()
    };
    let converted = converged(&public, &body);
    // Its holder is gone (being deleted): a link without the opt-in may not keep it internal.
    assert_eq!(
        plan(&converted, &want("cautious", None), None),
        ServicePlan::Skip(SkipReason::PublicLoadBalancer)
    );
    let also_opted_in = LinkSettings {
        allow_public: true,
        ..want("other", None)
    };
    assert!(matches!(
        plan(&converted, &also_opted_in, None),
        ServicePlan::Apply(_) | ServicePlan::Converged
    ));
    // The link that converted it keeps it.
    assert_eq!(plan(&converted, &opted_in, None), ServicePlan::Converged);
}

#[test]
fn label_requirements_hold_exactly_as_kube_matches_them() {
    use kube::core::SelectorExt;
    let selectors: Vec<LabelSelector> = [
        json!({"matchLabels": {"app": "api"}}),
        json!({"matchLabels": {"app": "api", "tier": "web"}}),
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "web"]}]}),
        json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["api"]}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
        json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
        json!({"matchLabels": {"expose": "true"},
               "matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]},
                                    {"key": "legacy", "operator": "DoesNotExist"}]}),
    ]
    .into_iter()
    .map(|s| serde_json::from_value(s).unwrap())
    .collect();
    let label_sets: Vec<BTreeMap<String, String>> = [
        json!({}),
        json!({"app": "api"}),
        json!({"app": "web", "tier": "web"}),
        json!({"app": "api", "tier": "web", "expose": "true"}),
        json!({"app": "api", "expose": "true", "legacy": ""}),
        json!({"app": "", "tier": ""}),
    ]
    .into_iter()
    .map(|l| serde_json::from_value(l).unwrap())
    .collect();
    for selector in &selectors {
        let kube = Selector::try_from(selector.clone()).unwrap();
        let ours = expressions(selector).unwrap();
        for labels in &label_sets {
            assert_eq!(
                all_hold(&ours, labels),
                kube.matches(labels),
                "{selector:?} on {labels:?}"
            );
        }
    }
    // A requirement the apiserver would not parse selects nothing.
    let bad: LabelSelector = serde_json::from_value(
        json!({"matchExpressions": [{"key": "app", "operator": "Near", "values": ["api"]}]}),
    )
    .unwrap();
    assert!(expressions(&bad).is_none());
}
