//! The committed CRD is the generated one, and it is one a real apiserver accepts and `kubectl
//! explain` can document.

use serde_json::Value;

const COMMITTED: &str = include_str!("../crds/appservicelink.io_appservicelinks.yaml");

fn generated() -> String {
    run_crd(&[])
}

fn run_crd(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_appservicelink"))
        .arg("crd")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "appservicelink crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn schema() -> Value {
    let crd: Value = serde_norway::from_str(COMMITTED).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_crd_matches_the_binary() {
    assert!(
        generated() == COMMITTED,
        "crds/ is stale: run `cargo run -- crd > crds/appservicelink.io_appservicelinks.yaml`"
    );
}

/// Visits every schema node with its path.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), values, visit);
    }
}

#[test]
fn the_schema_is_structural() {
    let mut problems = Vec::new();
    walk("", &schema(), &mut |path, node| {
        let obj = node.as_object().unwrap();
        if obj.is_empty() {
            problems.push(format!("{path}: empty schema"));
        } else if !obj.contains_key("type")
            && !obj.contains_key("x-kubernetes-preserve-unknown-fields")
            && !obj.contains_key("x-kubernetes-int-or-string")
        {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in [
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "additionalItems",
            "$schema",
        ] {
            if obj.contains_key(forbidden) && path.is_empty() {
                problems.push(format!("{path}: {forbidden} at the root"));
            }
        }
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    let mut missing = Vec::new();
    walk("", &schema(), &mut |path, node| {
        let is_field = !path.is_empty() && !path.ends_with("[]") && !path.ends_with('}');
        if is_field
            && node
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            missing.push(path.to_string());
        }
    });
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

#[test]
fn cluster_scoped_with_short_name_status_and_printer_columns() {
    let crd: Value = serde_norway::from_str(COMMITTED).unwrap();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "asl");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "DNS Server", "Services", "Age"]);
}

#[test]
fn committed_reference_matches_the_crd() {
    let committed = include_str!("../docs/crd-reference.md");
    assert!(
        run_crd(&["--reference"]) == committed,
        "docs/crd-reference.md is stale: run `cargo run -- crd --reference > docs/crd-reference.md`"
    );
    assert!(committed.contains("| `spec.dns.zone` | string |"));
}

/// The guard that keeps the CRD installable: a real apiserver (v1.30 and newer) estimates the cost of
/// every CEL rule when the CRD is created and refuses it over 10,000,000 for one rule or 100,000,000
/// for the schema. kube-sim estimates them the same way; a new field whose rule reaches an unbounded
/// string or list fails here instead of on a customer's cluster.
#[test]
fn the_committed_crd_is_within_the_apiservers_cel_cost_budget() {
    let crd: Value = serde_norway::from_str(COMMITTED).unwrap();
    let causes: Vec<String> = kube_sim::check_crd(&serde_json::to_value(&crd).unwrap())
        .iter()
        .map(kube_sim::Cause::to_line)
        .collect();
    assert!(
        causes.is_empty(),
        "a real apiserver would refuse the CRD: {causes:#?}"
    );

    let report = kube_sim::cel_check::check_schema(&schema(), "spec.validation.openAPIV3Schema");
    assert_eq!(
        report.rules.len(),
        16,
        "every rule was estimated: {:#?}",
        report.rules
    );
    for rule in &report.rules {
        eprintln!("{:>9}  {}", rule.cost, rule.path);
        assert!(
            rule.cost <= kube_sim::cel_check::STATIC_ESTIMATED_COST_LIMIT / 100,
            "{} costs {}, within 1% of the per-rule limit is the margin we keep",
            rule.path,
            rule.cost
        );
    }
    eprintln!("{:>9}  total", report.total);
    assert!(report.total <= kube_sim::cel_check::STATIC_ESTIMATED_CRD_COST_LIMIT / 100);
}

#[test]
fn descriptions_are_not_broken_at_source_line_wraps() {
    let mut broken = Vec::new();
    walk("", &schema(), &mut |path, node| {
        if let Some(text) = node.get("description").and_then(Value::as_str) {
            if text.replace("\n\n", "").contains('\n') {
                broken.push(path.to_string());
            }
        }
    });
    assert!(
        broken.is_empty(),
        "descriptions with line breaks: {broken:#?}"
    );
}
