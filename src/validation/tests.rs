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
    validate(&spec, DEFAULT_CLUSTER_DOMAIN)
        .into_iter()
        .map(|e| e.field)
        .collect()
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
        // A zone that is no DNS name may break several of the zone's rules at once.
        .fold(Vec::new(), |mut fields, field| {
            if fields.last() != Some(&field) {
                fields.push(field);
            }
            fields
        })
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
        // Zones that take names away from every pod (k8s_external answers NXDOMAIN for the rest).
        ("/dns/zone", json!("cluster.local"), "spec.dns.zone"),
        ("/dns/zone", json!("svc.cluster.local"), "spec.dns.zone"),
        (
            "/dns/zone",
            json!("shop.svc.cluster.local"),
            "spec.dns.zone",
        ),
        ("/dns/zone", json!("local"), "spec.dns.zone"),
        ("/dns/zone", json!("internal"), "spec.dns.zone"),
        ("/dns/zone", json!("com"), "spec.dns.zone"),
        ("/dns/zone", json!("in-addr.arpa"), "spec.dns.zone"),
        ("/dns/zone", json!("10.in-addr.arpa"), "spec.dns.zone"),
        ("/dns/zone", json!("ip6.arpa"), "spec.dns.zone"),
        ("/dns/zone", json!("core.windows.net"), "spec.dns.zone"),
        (
            "/dns/zone",
            json!("privatelink.blob.core.windows.net"),
            "spec.dns.zone",
        ),
        (
            "/dns/zone",
            json!("privatelink.contoso.local"),
            "spec.dns.zone",
        ),
        (
            "/dns/zone",
            json!("internal.privatelink.local"),
            "spec.dns.zone",
        ),
        ("/dns/zone", json!("vault.azure.net"), "spec.dns.zone"),
        (
            "/dns/zone",
            json!("contoso.azurewebsites.net"),
            "spec.dns.zone",
        ),
        ("/dns/zone", json!("cloudapp.azure.com"), "spec.dns.zone"),
        ("/dns/zone", json!("westeurope.azmk8s.io"), "spec.dns.zone"),
        (
            "/dns/zone",
            json!("database.chinacloudapi.cn"),
            "spec.dns.zone",
        ),
        (
            "/dns/zone",
            json!("login.microsoftonline.com"),
            "spec.dns.zone",
        ),
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
        ("/dns/zone", json!("svc.contoso-internal.example")),
        ("/dns/zone", json!("contoso.internal")),
        // Only the cluster domain itself and names around it are refused, not look-alikes.
        ("/dns/zone", json!("mycluster.local")),
        ("/dns/zone", json!("cluster.local.example")),
        ("/dns/zone", json!("privatelinks.local")),
        ("/dns/zone", json!("mywindows.net.local")),
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

/// Zones only the controller refuses: a CEL rule cannot know `--cluster-domain`, nor carry the
/// Public Suffix List. The CRD admits them; the controller refuses them before anything is written.
fn controller_only_bad_zones() -> Vec<(&'static str, &'static str)> {
    vec![
        // Public suffixes of the Public Suffix List (ICANN and private sections).
        ("co.uk", "is a public suffix"),
        ("github.io", "is a public suffix"),
        // Zones in a public domain, without the opt-in.
        ("contoso.com", "is in a public domain"),
        ("internal.contoso.com", "is in a public domain"),
        ("apps.contoso.co.uk", "is in a public domain"),
        // The configured cluster domain, above and below it.
        ("corp.internal", "is the cluster domain corp.internal"),
        ("svc.corp.internal", "is the cluster domain corp.internal"),
    ]
}

fn zone_spec(zone: &str, allow_public_domain: bool) -> AppServiceLinkSpec {
    let mut spec = with("/dns/zone", json!(zone));
    spec["dns"]["allowPublicDomain"] = json!(allow_public_domain);
    serde_json::from_value(spec).unwrap()
}

#[test]
fn zones_the_crd_cannot_judge_are_refused_by_the_controller_saying_why() {
    for (zone, why) in controller_only_bad_zones() {
        let errors = validate(&zone_spec(zone, false), "corp.internal");
        assert_eq!(errors.len(), 1, "{zone}: {errors:?}");
        let message = errors[0].to_string();
        assert!(
            message.starts_with(&format!("spec.dns.zone: {zone} {why}")),
            "{zone}: {message}"
        );
        assert_eq!(
            cel_errors(&with("/dns/zone", json!(zone))),
            Vec::<String>::new(),
            "{zone}: a CEL rule refuses it, move it to bad_inputs"
        );
    }
}

#[test]
fn a_public_domain_is_allowed_only_with_the_opt_in_and_a_public_suffix_never() {
    assert!(validate(&zone_spec("internal.contoso.com", true), "cluster.local").is_empty());
    let message =
        validate(&zone_spec("internal.contoso.com", false), "cluster.local")[0].to_string();
    assert!(message.contains("spec.dns.allowPublicDomain"), "{message}");
    for zone in [
        "co.uk",
        "github.io",
        "core.windows.net",
        "contoso.azurewebsites.net",
    ] {
        assert_eq!(
            validate(&zone_spec(zone, true), "cluster.local").len(),
            1,
            "{zone} must stay refused with the opt-in"
        );
    }
}

#[test]
fn the_default_cluster_domain_is_refused_whatever_the_flag_says() {
    for zone in ["cluster.local", "svc.cluster.local"] {
        let errors = validate(&zone_spec(zone, false), "corp.internal");
        assert!(
            errors[0].message.contains("cluster domain cluster.local"),
            "{zone}: {errors:?}"
        );
    }
    // Above a multi-label cluster domain: `internal.corp.example` is below `corp.example`.
    let errors = validate(&zone_spec("corp.example", false), "internal.corp.example");
    assert!(errors[0].message.contains("above or below"), "{errors:?}");
}

#[test]
fn each_kind_of_dangerous_zone_gets_its_own_reason() {
    let reason = |zone: &str| {
        validate(&zone_spec(zone, false), "cluster.local")[0]
            .message
            .clone()
    };
    assert!(reason("internal").contains("single-label"));
    assert!(reason("10.in-addr.arpa").contains("reverse-lookup"));
    assert!(reason("privatelink.vaultcore.azure.net").contains("privatelink"));
    assert!(reason("blob.core.windows.net").contains("Azure's own DNS namespace windows.net"));
    assert!(reason("svc.cluster.local").contains("NXDOMAIN"));
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
    let message = validate(&spec, DEFAULT_CLUSTER_DOMAIN)[0].to_string();
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
    let errors = validate(&spec, DEFAULT_CLUSTER_DOMAIN);
    assert_eq!(
        errors[0].to_string(),
        format!("spec.dns.zone: {ZONE_MESSAGE}")
    );
}
