//! CustomResourceDefinitions: dynamic registration, structural schemas, validation, CEL and tables.

mod common;

use common::*;
use serde_json::{json, Value};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

fn link(name: &str, zone: Value) -> Value {
    json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink", "metadata": {"name": name},
           "spec": {"dns": {"zone": zone}}})
}

#[tokio::test]
async fn a_crd_is_established_and_served() {
    let sim = start().await;
    install_crd(&sim).await;
    let crd = get(&sim, &format!("{CRDS}/appservicelinks.appservicelink.io"))
        .await
        .body;
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    for ty in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == ty && c["status"] == "True"),
            "{ty}: {conditions:?}"
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "AppServiceLink");
    assert_eq!(crd["spec"]["names"]["listKind"], "AppServiceLinkList");

    let discovery = get(&sim, "/apis/appservicelink.io/v1alpha1").await.body;
    let resource = &discovery["resources"][0];
    assert_eq!(resource["name"], "appservicelinks");
    assert_eq!(resource["namespaced"], false);
    assert_eq!(resource["shortNames"], json!(["asl"]));
    assert_eq!(discovery["resources"][1]["name"], "appservicelinks/status");
    let groups = get(&sim, "/apis").await.body;
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["preferredVersion"]["groupVersion"] == "appservicelink.io/v1alpha1"));

    assert_eq!(
        post(&sim, ASL_PATH, &link("web", json!("a.local")))
            .await
            .status,
        201
    );
    let list = get(&sim, ASL_PATH).await.body;
    assert_eq!(list["kind"], "AppServiceLinkList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    sim.shutdown().await;
}

#[tokio::test]
async fn non_structural_schemas_are_rejected() {
    let sim = start().await;
    let mut crd: Value = serde_norway::from_str(CRD_YAML).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["free"] = json!({});
    let reply = post(&sim, CRDS, &crd).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.body["message"],
        "CustomResourceDefinition.apiextensions.k8s.io \"appservicelinks.appservicelink.io\" is invalid: spec.validation.openAPIV3Schema.properties[spec].properties[free].type: Required value: must not be empty for specified object fields"
    );
    assert_eq!(
        reply.body["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );
    assert_eq!(
        get(&sim, ASL_PATH).await.status,
        404,
        "nothing was registered"
    );

    let mut bad_cel: Value = serde_norway::from_str(CRD_YAML).unwrap();
    bad_cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([{"rule": "self.dns.zone ==="}]);
    let reply = post(&sim, CRDS, &bad_cel).await;
    assert_eq!(reply.status, 422);
    assert!(reply.body["message"]
        .as_str()
        .unwrap()
        .contains("x-kubernetes-validations[0].rule"));
    sim.shutdown().await;
}

#[tokio::test]
async fn custom_resources_are_validated_defaulted_and_pruned() {
    let sim = start().await;
    install_crd(&sim).await;
    let cel = post(&sim, ASL_PATH, &link("x", json!("Not A Zone!"))).await;
    assert_eq!(cel.status, 422);
    assert_eq!(cel.body["reason"], "Invalid");
    assert_eq!(
        cel.body["message"],
        "AppServiceLink.appservicelink.io \"x\" is invalid: spec.dns.zone: Invalid value: \"string\": zone must be a DNS name"
    );
    assert_eq!(cel.body["details"]["causes"][0]["field"], "spec.dns.zone");
    assert_eq!(cel.body["details"]["group"], "appservicelink.io");

    let wrong_type = post(&sim, ASL_PATH, &link("x", json!(5))).await;
    assert_eq!(wrong_type.status, 422);
    assert!(wrong_type.body["message"].as_str().unwrap().contains("spec.dns.zone: Invalid value: \"integer\": spec.dns.zone in body must be of type string: \"integer\""));

    let mut bad_enum = link("x", json!("a.local"));
    bad_enum["spec"]["appServiceDnsMode"] = json!("Portal");
    let reply = post(&sim, ASL_PATH, &bad_enum).await;
    assert!(reply.body["message"].as_str().unwrap().contains("spec.appServiceDnsMode: Unsupported value: \"Portal\": supported values: \"AppSettings\", \"SiteDnsConfiguration\""));

    let required = post(&sim, ASL_PATH, &json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink", "metadata": {"name": "x"}, "spec": {}})).await;
    assert!(required.body["message"]
        .as_str()
        .unwrap()
        .contains("spec.dns: Required value"));

    let mut extra = link("x", json!("a.local"));
    extra["spec"]["unknown"] = json!(true);
    let created = post(&sim, ASL_PATH, &extra).await;
    assert_eq!(created.status, 201);
    assert!(
        created.body["spec"].get("unknown").is_none(),
        "unknown fields are pruned"
    );
    assert_eq!(created.body["spec"]["appServiceDnsMode"], "AppSettings");
    let warning = created.headers.get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, r#"299 - "unknown field \"spec.unknown\"""#);

    let mut strict = link("y", json!("a.local"));
    strict["spec"]["unknown"] = json!(true);
    let reply = post(&sim, &format!("{ASL_PATH}?fieldValidation=Strict"), &strict).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body["message"]
        .as_str()
        .unwrap()
        .contains("unknown field \"spec.unknown\""));

    let update = merge_patch(
        &sim,
        &format!("{ASL_PATH}/x"),
        &json!({"spec": {"dns": {"zone": "UPPER"}}}),
    )
    .await;
    assert_eq!(update.status, 422, "updates are validated too");
    sim.shutdown().await;
}

#[tokio::test]
async fn strategic_merge_patch_is_refused_for_custom_resources() {
    let sim = start().await;
    install_crd(&sim).await;
    post(&sim, ASL_PATH, &link("x", json!("a.local"))).await;
    let reply = call(
        &sim.url(),
        "PATCH",
        &format!("{ASL_PATH}/x"),
        "application/strategic-merge-patch+json",
        Some("{}".into()),
    )
    .await;
    assert_eq!(reply.status, 415);
    sim.shutdown().await;
}

#[tokio::test]
async fn tables_use_printer_columns() {
    let sim = start().await;
    install_crd(&sim).await;
    post(&sim, ASL_PATH, &link("web", json!("a.local"))).await;
    merge_patch(&sim, &format!("{ASL_PATH}/web/status"), &json!({"status": {"dnsServerIP": "10.240.0.53", "conditions": [{"type": "Ready", "status": "True"}]}})).await;
    let reply = call(&sim.url(), "GET", ASL_PATH, "application/json", None).await;
    assert_eq!(reply.body["kind"], "AppServiceLinkList");

    let table = get_table(&sim, ASL_PATH).await;
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Zone", "DNS-IP", "Ready", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "web");
    assert_eq!(cells[1], "a.local");
    assert_eq!(cells[2], "10.240.0.53");
    assert_eq!(cells[3], "True");
    assert!(cells[4].as_str().unwrap().ends_with('s'));
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    sim.shutdown().await;
}

#[tokio::test]
async fn service_table_columns() {
    let sim = start_with(kube_sim::SimOptions {
        lb_allocator: false,
        ..Default::default()
    })
    .await;
    post(&sim, "/api/v1/namespaces/default/services", &json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}})).await;
    let table = get_table(&sim, "/api/v1/services").await;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[1], "LoadBalancer");
    assert_eq!(cells[3], "<pending>");
    assert!(cells[4].as_str().unwrap().starts_with("80:3"));
    assert_eq!(
        table["rows"][0]["object"]["metadata"]["namespace"],
        "default"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn updating_and_deleting_the_crd_changes_what_is_served() {
    let sim = start().await;
    install_crd(&sim).await;
    let mut crd = get(&sim, &format!("{CRDS}/appservicelinks.appservicelink.io"))
        .await
        .body;
    assert_eq!(crd["metadata"]["generation"], 1);
    let mut v1 = crd["spec"]["versions"][0].clone();
    v1["name"] = json!("v1");
    crd["spec"]["versions"][0]["storage"] = json!(false);
    v1["storage"] = json!(true);
    crd["spec"]["versions"].as_array_mut().unwrap().push(v1);
    let updated = put(
        &sim,
        &format!("{CRDS}/appservicelinks.appservicelink.io"),
        &crd,
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["metadata"]["generation"], 2);
    assert_eq!(
        updated.body["status"]["storedVersions"],
        json!(["v1alpha1", "v1"])
    );

    post(&sim, ASL_PATH, &link("web", json!("a.local"))).await;
    let through_v1 = get(&sim, "/apis/appservicelink.io/v1/appservicelinks/web").await;
    assert_eq!(through_v1.status, 200);
    assert_eq!(through_v1.body["apiVersion"], "appservicelink.io/v1");
    assert_eq!(
        get(&sim, "/apis").await.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "appservicelink.io")
            .unwrap()["preferredVersion"]["version"],
        "v1"
    );

    let deleted = delete(&sim, &format!("{CRDS}/appservicelinks.appservicelink.io")).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        get(&sim, ASL_PATH).await.status,
        404,
        "the resource is no longer served"
    );
    assert_eq!(
        get(&sim, &format!("{CRDS}/appservicelinks.appservicelink.io"))
            .await
            .status,
        404
    );
    sim.shutdown().await;
}

/// AppServiceLink's CRD as it stood at commit 4222bb2: a real v1.36 apiserver refused it, because the
/// regex rules on the App Service target fields sit in an unbounded list of unbounded strings.
const UNBOUNDED_CRD: &str = include_str!("fixtures/appservicelink-crd-4222bb2.yaml");

#[tokio::test]
async fn a_crd_whose_rules_cost_too_much_is_refused_like_a_real_apiserver_does() {
    let sim = start().await;
    let crd: Value = serde_norway::from_str(UNBOUNDED_CRD).unwrap();
    let reply = post(&sim, CRDS, &crd).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let causes: Vec<String> = reply.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap(),
                c["message"].as_str().unwrap()
            )
        })
        .collect();
    let target = "spec.validation.openAPIV3Schema.properties[spec].properties[appServices].properties[targets].items.properties";
    let over_budget = "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    let mut expected: Vec<String> = ["name", "resourceGroup", "slot", "subscriptionId"]
        .iter()
        .map(|field| format!("{target}[{field}].x-kubernetes-validations[0].rule: {over_budget}"))
        .collect();
    expected.push("spec.validation.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)".to_string());
    assert_eq!(causes, expected);
    assert_eq!(
        get(&sim, ASL_PATH).await.status,
        404,
        "nothing was registered"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn rules_that_do_not_type_check_and_misplaced_extensions_are_refused() {
    let sim = start().await;
    let refused = |mutate: &dyn Fn(&mut Value)| {
        let mut crd: Value = serde_norway::from_str(CRD_YAML).unwrap();
        mutate(&mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]);
        crd
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            refused(&|spec| spec["x-kubernetes-validations"] = json!([{"rule": "self.dns.zoen == 'x'"}])),
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.dns.zoen == 'x'\": compilation failed: ERROR: <input>: undefined field 'zoen'",
        ),
        (
            refused(&|spec| spec["x-kubernetes-validations"] = json!([{"rule": "self.dns.zone"}])),
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.dns.zone\": cel expression must evaluate to a bool",
        ),
        (
            refused(&|spec| spec["properties"]["dns"]["x-kubernetes-list-type"] = json!("atomic")),
            "spec.validation.openAPIV3Schema.properties[spec].properties[dns].type: Invalid value: \"object\": must be array if x-kubernetes-list-type is specified",
        ),
        (
            refused(&|spec| spec["properties"]["dns"]["x-kubernetes-preserve-unknown-fields"] = json!(false)),
            "spec.validation.openAPIV3Schema.properties[spec].properties[dns].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
        ),
        (
            refused(&|spec| spec["properties"]["appServiceDnsMode"]["x-kubernetes-map-type"] = json!("atomic")),
            "spec.validation.openAPIV3Schema.properties[spec].properties[appServiceDnsMode].type: Invalid value: \"string\": must be object if x-kubernetes-map-type is specified",
        ),
    ];
    for (crd, message) in cases {
        let reply = post(&sim, CRDS, &crd).await;
        assert_eq!(reply.status, 422, "{message}");
        assert_eq!(
            reply.body["message"],
            format!("CustomResourceDefinition.apiextensions.k8s.io \"appservicelinks.appservicelink.io\" is invalid: {message}")
        );
    }
    assert_eq!(
        get(&sim, ASL_PATH).await.status,
        404,
        "nothing was registered"
    );
    sim.shutdown().await;
}
