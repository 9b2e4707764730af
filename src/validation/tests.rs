use super::*;
use serde_json::{json, Value};

fn spec_json() -> Value {
    json!({
        "services": {"selector": {"matchLabels": {"appservicelink.io/expose": "true"}}, "subnet": "ilb-subnet"},
        "dns": {"zone": "mydomain.local", "service": {"name": "appservicelink-dns", "staticIP": "10.240.0.53"}},
        "appServices": {
            "targets": [{"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg-web", "name": "contoso-web", "slot": "staging"}],
            "alternateDnsServer": "168.63.129.16"
        }
    })
}

fn with(pointer: &str, value: Value) -> Value {
    let mut spec = spec_json();
    *spec
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no field {pointer}")) = value;
    spec
}

/// Errors from the controller's own validation, as field paths.
fn rust_errors(spec: &Value) -> Vec<String> {
    let spec: AppServiceLinkSpec = serde_json::from_value(spec.clone()).unwrap();
    validate(&spec).into_iter().map(|e| e.field).collect()
}

/// Errors from CRD admission (OpenAPI checks and CEL rules), evaluated the way an apiserver does.
fn cel_errors(spec: &Value) -> Vec<String> {
    let crd = serde_json::to_value(crate::crd::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let object = json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink",
                        "metadata": {"name": "x"}, "spec": spec});
    kube_sim::admit_custom_resource(&object, schema)
        .into_iter()
        .map(|cause| cause.field)
        // "some validation rules were not checked": the apiserver's note, about no field.
        .filter(|field| !field.is_empty())
        .collect()
}

/// Inputs each check must refuse, as (JSON pointer into the spec, value, field path in the error).
fn bad_inputs() -> Vec<(&'static str, Value, &'static str)> {
    let long_zone = vec!["a".repeat(63); 4].join(".");
    vec![
        ("/services/selector", json!({}), "spec.services.selector"),
        (
            "/services/selector",
            json!({"matchLabels": {}}),
            "spec.services.selector",
        ),
        // Selectors that require no label select every Service without a few labels.
        (
            "/services/selector",
            json!({"matchExpressions": []}),
            "spec.services.selector",
        ),
        (
            "/services/selector",
            json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
            "spec.services.selector",
        ),
        (
            "/services/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}),
            "spec.services.selector",
        ),
        (
            "/services/selector",
            json!({"matchLabels": {}, "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "x", "operator": "DoesNotExist"}
            ]}),
            "spec.services.selector",
        ),
        ("/services/subnet", json!("-subnet"), "spec.services.subnet"),
        ("/services/subnet", json!("sub net"), "spec.services.subnet"),
        ("/dns/zone", json!("MyDomain.local"), "spec.dns.zone"),
        ("/dns/zone", json!("my domain.local"), "spec.dns.zone"),
        ("/dns/zone", json!("mydomain.local {"), "spec.dns.zone"),
        (
            "/dns/zone",
            json!("mydomain.local\nforward . 8.8.8.8"),
            "spec.dns.zone",
        ),
        (
            "/dns/zone",
            json!("mydomain.local # comment"),
            "spec.dns.zone",
        ),
        ("/dns/zone", json!("mydomain.local."), "spec.dns.zone"),
        ("/dns/zone", json!("-bad.local"), "spec.dns.zone"),
        ("/dns/zone", json!(""), "spec.dns.zone"),
        ("/dns/zone", json!(long_zone), "spec.dns.zone"),
        (
            "/dns/zone",
            json!(format!("{}.local", "a".repeat(64))),
            "spec.dns.zone",
        ),
        (
            "/dns/service/name",
            json!("Bad_Name"),
            "spec.dns.service.name",
        ),
        (
            "/dns/service/staticIP",
            json!("10.240.0.256"),
            "spec.dns.service.staticIP",
        ),
        (
            "/dns/service/staticIP",
            json!("10.240.0"),
            "spec.dns.service.staticIP",
        ),
        (
            "/dns/service/staticIP",
            json!("fd00::53"),
            "spec.dns.service.staticIP",
        ),
        (
            "/dns/service/staticIP",
            json!("010.240.0.53"),
            "spec.dns.service.staticIP",
        ),
        (
            "/appServices/alternateDnsServer",
            json!("dns.example"),
            "spec.appServices.alternateDnsServer",
        ),
        (
            "/appServices/targets/0/subscriptionId",
            json!("not-a-guid"),
            "spec.appServices.targets[0].subscriptionId",
        ),
        (
            "/appServices/targets/0/resourceGroup",
            json!("rg."),
            "spec.appServices.targets[0].resourceGroup",
        ),
        (
            "/appServices/targets/0/resourceGroup",
            json!("rg/web"),
            "spec.appServices.targets[0].resourceGroup",
        ),
        (
            "/appServices/targets/0/name",
            json!("-web"),
            "spec.appServices.targets[0].name",
        ),
        (
            "/appServices/targets/0/name",
            json!("w"),
            "spec.appServices.targets[0].name",
        ),
        (
            "/appServices/targets/0/name",
            json!("contoso_web"),
            "spec.appServices.targets[0].name",
        ),
        (
            "/appServices/targets/0/slot",
            json!("staging-"),
            "spec.appServices.targets[0].slot",
        ),
        // One past each bound the CRD declares for its cost budget.
        (
            "/services/subnet",
            json!("a".repeat(81)),
            "spec.services.subnet",
        ),
        (
            "/appServices/targets/0/name",
            json!("a".repeat(61)),
            "spec.appServices.targets[0].name",
        ),
        (
            "/appServices/targets/0/resourceGroup",
            json!("a".repeat(91)),
            "spec.appServices.targets[0].resourceGroup",
        ),
        (
            "/appServices/targets/0/slot",
            json!("a".repeat(60)),
            "spec.appServices.targets[0].slot",
        ),
        (
            "/appServices/targets/0/subscriptionId",
            json!("00000000-1111-2222-3333-4444444444445"),
            "spec.appServices.targets[0].subscriptionId",
        ),
        (
            "/appServices/targets",
            json!(vec![spec_json()["appServices"]["targets"][0].clone(); 101]),
            "spec.appServices.targets",
        ),
        (
            "/services/selector",
            json!({"matchLabels": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "spec.services.selector.matchLabels",
        ),
        (
            "/services/selector",
            json!({"matchExpressions": vec![json!({"key": "tier", "operator": "Exists"}); 33]}),
            "spec.services.selector.matchExpressions",
        ),
        (
            "/services/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": vec!["a"; 33]}]}),
            "spec.services.selector.matchExpressions[0].values",
        ),
        (
            "/services/selector",
            json!({"matchLabels": {"tier": "v".repeat(64)}}),
            "spec.services.selector.matchLabels.tier",
        ),
    ]
}

fn good_inputs() -> Vec<(&'static str, Value)> {
    vec![
        ("/dns/zone", json!("internal")),
        ("/dns/zone", json!("svc.contoso-internal.example")),
        ("/dns/zone", json!(vec!["a".repeat(63); 3].join("."))),
        ("/dns/service/staticIP", json!("0.0.0.0")),
        ("/dns/service/staticIP", json!("255.255.255.255")),
        (
            "/services/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
        ),
        (
            "/services/selector",
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}),
        ),
        // One required label is enough; the rest may narrow it down.
        (
            "/services/selector",
            json!({"matchExpressions": [
                {"key": "x", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "Exists"}
            ]}),
        ),
        (
            "/services/selector",
            json!({"matchLabels": {"appservicelink.io/expose": "true"}, "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]}
            ]}),
        ),
        ("/services/subnet", json!("ilb_subnet.1_")),
        ("/appServices/targets/0/resourceGroup", json!("rg(web)-1")),
        ("/appServices/targets/0/slot", json!("s")),
        // Each bound itself is allowed.
        ("/services/subnet", json!("a".repeat(80))),
        ("/appServices/targets/0/name", json!("a".repeat(60))),
        (
            "/appServices/targets/0/resourceGroup",
            json!("a".repeat(90)),
        ),
        ("/appServices/targets/0/slot", json!("a".repeat(59))),
        (
            "/appServices/targets",
            json!(vec![spec_json()["appServices"]["targets"][0].clone(); 100]),
        ),
        (
            "/services/selector",
            json!({"matchLabels": (0..32).map(|i| (format!("k{i}"), json!("v".repeat(63)))).collect::<serde_json::Map<_, _>>()}),
        ),
    ]
}

#[test]
fn the_example_spec_is_valid() {
    assert_eq!(rust_errors(&spec_json()), Vec::<String>::new());
    assert_eq!(cel_errors(&spec_json()), Vec::<String>::new());
}

#[test]
fn the_controller_refuses_every_bad_input_naming_the_field() {
    for (pointer, value, field) in bad_inputs() {
        let spec = with(pointer, value.clone());
        assert_eq!(
            rust_errors(&spec),
            vec![field.to_string()],
            "input {pointer} = {value}"
        );
    }
}

#[test]
fn the_crd_refuses_the_same_inputs() {
    for (pointer, value, field) in bad_inputs() {
        let spec = with(pointer, value.clone());
        assert_eq!(
            cel_errors(&spec),
            vec![field.to_string()],
            "the CRD did not refuse {pointer} = {value} exactly there"
        );
    }
}

#[test]
fn valid_edge_cases_pass_both_checks() {
    for (pointer, value) in good_inputs() {
        let spec = with(pointer, value.clone());
        assert_eq!(
            rust_errors(&spec),
            Vec::<String>::new(),
            "controller refused {pointer} = {value}"
        );
        assert_eq!(
            cel_errors(&spec),
            Vec::<String>::new(),
            "CEL refused {pointer} = {value}"
        );
    }
}

#[test]
fn a_selector_that_requires_no_label_is_refused_saying_why() {
    let spec = with(
        "/services/selector",
        json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
    );
    let spec: AppServiceLinkSpec = serde_json::from_value(spec).unwrap();
    let message = validate(&spec)[0].to_string();
    assert!(
        message.starts_with("spec.services.selector: must require a label")
            && message.contains("every Service"),
        "{message}"
    );
}

#[test]
fn errors_say_what_to_fix() {
    let spec = with("/dns/zone", json!("Bad Zone"));
    let spec: AppServiceLinkSpec = serde_json::from_value(spec).unwrap();
    let errors = validate(&spec);
    assert_eq!(
        errors[0].to_string(),
        format!("spec.dns.zone: {ZONE_MESSAGE}")
    );
}
