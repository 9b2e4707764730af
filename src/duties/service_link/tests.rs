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

/// Applies an SSA body's annotations and type onto a Service, as the apiserver would.
fn converged(service: &Service, body: &Value) -> Service {
    let mut value = serde_json::to_value(service).unwrap();
    for (k, v) in body["metadata"]["annotations"].as_object().unwrap() {
        value["metadata"]["annotations"][k] = v.clone();
    }
    value["spec"]["type"] = body["spec"]["type"].clone();
    svc(value)
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
