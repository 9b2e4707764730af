use super::*;
use crate::duties::service_link::{
    holder, is_internal_load_balancer, plan, restore_patch, LinkSettings, PreviousState,
    ServicePlan, FIELD_MANAGER,
};
use serde_json::json;

/// A Service as a real cluster stores it after `kubectl apply`, the operator's conversion, the
/// cloud controller's status write and someone's later `kubectl annotate` of the subnet.
fn realistic(type_owner: &str) -> Service {
    let previous = r#"{"type":"ClusterIP","annotations":{"service.beta.kubernetes.io/azure-load-balancer-internal":null,"service.beta.kubernetes.io/azure-load-balancer-internal-subnet":null}}"#;
    serde_json::from_value(json!({
        "metadata": {
            "name": "api", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
            "creationTimestamp": "2026-11-30T10:00:00Z",
            "labels": {"app": "api", "expose": "true"},
            "annotations": {
                LAST_APPLIED: "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"labels\":{\"app\":\"api\"},\"name\":\"api\",\"namespace\":\"shop\"},\"spec\":{\"ports\":[{\"name\":\"http\",\"port\":80,\"targetPort\":8080}],\"selector\":{\"app\":\"api\"}}}",
                ANNOTATION_INTERNAL: "true",
                ANNOTATION_SUBNET: "other",
                ANNOTATION_LINK: "shop",
                ANNOTATION_PREVIOUS: previous,
                "team": "payments",
            },
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, format!("f:{LAST_APPLIED}"): {}, "f:team": {}},
                                             "f:labels": {".": {}, "f:app": {}, "f:expose": {}}},
                              "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                                         "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}},
                {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "v1",
                 "time": "2026-11-30T10:01:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:{ANNOTATION_INTERNAL}"): {}, format!("f:{ANNOTATION_LINK}"): {}, format!("f:{ANNOTATION_PREVIOUS}"): {}}},
                              "f:spec": {"f:type": {}}}},
                {"manager": "cloud-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-30T10:01:09Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-30T10:05:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {format!("f:{ANNOTATION_SUBNET}"): {}}}}},
                {"manager": type_owner, "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-30T10:06:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:type": {}}}},
            ],
        },
        "spec": {
            "type": "LoadBalancer", "clusterIP": "10.0.12.7", "clusterIPs": ["10.0.12.7"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
            "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true,
            "sessionAffinity": "None", "selector": {"app": "api"},
            "loadBalancerSourceRanges": ["10.1.0.0/16"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 31080}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "10.240.0.9", "ipMode": "VIP"}]},
                   "conditions": [{"type": "LoadBalancerReady", "status": "True", "reason": "Ok", "message": "",
                                   "lastTransitionTime": "2026-11-30T10:01:09Z"}]},
    }))
    .expect("a Service")
}

/// The Service as the duties get it from the cache: pruned, kept as a record, rebuilt.
fn pruned(svc: &Service) -> Service {
    let mut svc = svc.clone();
    service(&mut svc);
    let rebuilt = service_record(&svc).to_service();
    assert_eq!(rebuilt, svc, "the record keeps all that pruning leaves");
    rebuilt
}

fn settings(link: &str, subnet: Option<&str>) -> LinkSettings {
    LinkSettings {
        link: link.into(),
        subnet: subnet.map(str::to_string),
        allow_public: false,
    }
}

#[test]
fn a_pruned_service_gets_the_same_decisions_as_the_whole_object() {
    for type_owner in ["argocd-controller", FIELD_MANAGER] {
        let full = realistic(type_owner);
        let small = pruned(&full);
        for want in [
            settings("shop", None),
            settings("shop", Some("other")),
            settings("shop", Some("ilb")),
            settings("other-link", None),
        ] {
            assert_eq!(
                plan(&small, &want, None),
                plan(&full, &want, None),
                "{want:?}"
            );
        }
        assert_eq!(holder(&small), holder(&full));
        assert_eq!(
            PreviousState::trusted_on(&small),
            PreviousState::trusted_on(&full)
        );
        assert_eq!(restore_patch(&small), restore_patch(&full));
        assert_eq!(
            is_internal_load_balancer(&small),
            is_internal_load_balancer(&full)
        );
        assert_eq!(
            load_balancer::load_balancer_ip(&small),
            load_balancer::load_balancer_ip(&full)
        );
        assert_eq!(small.metadata.labels, full.metadata.labels);
    }
}

#[test]
fn a_foreign_owner_of_the_type_is_still_seen_after_pruning() {
    let full = realistic("argocd-controller");
    let small = pruned(&full);
    let reverted = |svc: &Service| {
        let mut svc = svc.clone();
        svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        plan(&svc, &settings("shop", None), None)
    };
    let ServicePlan::Reverted { managers, .. } = reverted(&small) else {
        panic!("a revert is seen");
    };
    assert!(
        managers.contains(&"argocd-controller".to_string()),
        "{managers:?}"
    );
    assert_eq!(reverted(&small), reverted(&full));
}

/// An ordinary Service the operator never touches, as `kubectl apply` leaves it: most of the
/// cluster's Services look like this.
fn plain() -> Service {
    let last_applied = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"labels": {"app": "cart", "tier": "backend"}, "name": "cart", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "grpc", "port": 9090}],
                 "selector": {"app": "cart"}}});
    serde_json::from_value(json!({
        "metadata": {
            "name": "cart", "namespace": "shop", "uid": "0b9b1f7e-4c2d-4a57-9e83-0c6d7f1a2b3c",
            "resourceVersion": "1203345", "creationTimestamp": "2026-11-30T10:00:00Z",
            "labels": {"app": "cart", "tier": "backend"},
            "annotations": {LAST_APPLIED: last_applied.to_string()},
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, format!("f:{LAST_APPLIED}"): {}},
                                             "f:labels": {".": {}, "f:app": {}, "f:tier": {}}},
                              "f:spec": {"f:internalTrafficPolicy": {},
                                         "f:ports": {".": {},
                                             "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}},
                                             "k:{\"port\":9090,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                                         "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}},
            ],
        },
        "spec": {
            "type": "ClusterIP", "clusterIP": "10.0.31.200", "clusterIPs": ["10.0.31.200"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None", "selector": {"app": "cart"},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090}],
        },
        "status": {"loadBalancer": {}},
    }))
    .expect("a Service")
}

#[test]
fn an_ordinary_service_keeps_a_fraction_of_its_size() {
    let full = plain();
    let small = pruned(&full);
    let size = |s: &Service| serde_json::to_vec(s).unwrap().len();
    assert!(
        size(&small) * 3 < size(&full),
        "{} of {} bytes kept",
        size(&small),
        size(&full)
    );
    for want in [settings("shop", None), settings("shop", Some("ilb"))] {
        assert_eq!(plan(&small, &want, None), plan(&full, &want, None));
    }
    assert_eq!(small.metadata.labels, full.metadata.labels);
    // No link holds it, so nobody's ownership of it is ever asked about.
    assert!(small.metadata.managed_fields.is_none());
}

#[test]
fn pruning_drops_what_no_duty_reads() {
    let full = realistic("argocd-controller");
    let small = pruned(&full);
    let annotations = small.metadata.annotations.as_ref().unwrap();
    assert!(!annotations.contains_key(LAST_APPLIED));
    assert!(!annotations.contains_key("team"), "{annotations:?}");
    for key in [ANNOTATION_INTERNAL, ANNOTATION_LINK, ANNOTATION_PREVIOUS] {
        assert!(annotations.contains_key(key), "{key} kept: {annotations:?}");
    }
    let managers: Vec<_> = small
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    // The client-side apply owned spec.type too; the cloud controller owns nothing the duties ask about.
    assert_eq!(
        managers,
        vec![
            "kubectl-client-side-apply",
            FIELD_MANAGER,
            "kubectl-annotate",
            "argocd-controller"
        ]
    );
    assert!(small.spec.as_ref().unwrap().ports.is_none());
    assert!(small.status.as_ref().unwrap().conditions.is_none());
}

#[test]
fn the_operators_own_dns_service_keeps_its_spec() {
    let mut full = realistic("argocd-controller");
    full.metadata.labels.as_mut().unwrap().insert(
        load_balancer::MANAGED_BY_LABEL.into(),
        load_balancer::MANAGED_BY.into(),
    );
    let small = pruned(&full);
    assert_eq!(small.spec, full.spec);
}

#[test]
fn a_namespace_keeps_its_name_and_labels() {
    let mut ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": "shop", "labels": {"team": "a"}, "annotations": {"big": "x"},
                     "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    }))
    .unwrap();
    namespace(&mut ns);
    assert_eq!(ns.metadata.name.as_deref(), Some("shop"));
    assert_eq!(
        ns.metadata.labels.unwrap().get("team").map(String::as_str),
        Some("a")
    );
    assert!(ns.metadata.annotations.is_none() && ns.metadata.managed_fields.is_none());
}
