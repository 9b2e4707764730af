//! Validating admission: `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicies and their
//! bindings, evaluated on every write and delete as the apiserver's ValidatingAdmissionPolicy plugin
//! does (after the object's own validation, before storage; dry runs and no-op writes included).
//!
//! Supported: `matchConstraints` and binding `matchResources` (resourceRules with operations, groups,
//! versions, `resource/subresource` and wildcards, scope, resourceNames; excludeResourceRules;
//! namespaceSelector; objectSelector), `matchConditions`, `validations` (expression, message,
//! messageExpression, reason), `failurePolicy`, and the binding's `validationActions` (Deny, Warn; Audit
//! is accepted and has no visible effect). Not supported: `paramKind`/`paramRef` (such policies are
//! skipped), `variables`, `auditAnnotations`, the `authorizer` variable, type checking in status.

use crate::error::{ApiError, ApiResult, Cause};
use crate::object;
use crate::registry::ResourceType;
use crate::store::Store;
use kube_cel::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, VapEvaluator, VapExpression,
};
use serde_json::{json, Value};

pub const GROUP: &str = "admissionregistration.k8s.io";
const POLICIES: &str = "validatingadmissionpolicies.admissionregistration.k8s.io";
const BINDINGS: &str = "validatingadmissionpolicybindings.admissionregistration.k8s.io";
const POLICY_KIND: &str = "ValidatingAdmissionPolicy";
const BINDING_KIND: &str = "ValidatingAdmissionPolicyBinding";
/// Marks "no messageExpression result" in kube-cel's answer, so the apiserver's own fallbacks apply.
const NO_MESSAGE: &str = "\u{0}kube-sim: no message";
/// `celconfig.MaxEvaluatedMessageExpressionSizeBytes`: longer messageExpression results are dropped.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One request as admission sees it.
pub struct Request<'a> {
    pub resource: &'a ResourceType,
    /// `status` for the status subresource.
    pub subresource: Option<&'a str>,
    pub operation: Operation,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// The object to be stored (`null` for DELETE).
    pub object: Option<&'a Value>,
    /// The live object (`null` for CREATE).
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// Runs every policy and binding that matches the request. Returns the warnings of `Warn` bindings,
/// or the first denial of a `Deny` binding with the apiserver's status and wording.
pub fn validate(store: &Store, req: &Request) -> ApiResult<Vec<String>> {
    // The apiserver never runs policies on its own admission configuration.
    if req.resource.group == GROUP {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    let mut denial: Option<(String, &'static str)> = None;
    let namespace_object = req
        .namespace
        .filter(|_| req.resource.namespaced)
        .and_then(|ns| store.get("namespaces", "", ns));
    for policy in store.list(POLICIES, None) {
        let spec = &policy["spec"];
        if !spec["paramKind"].is_null() {
            tracing::warn!(
                policy = object::name(policy),
                "kube-sim does not evaluate ValidatingAdmissionPolicies with paramKind; skipped"
            );
            continue;
        }
        if !matches(&spec["matchConstraints"], req, namespace_object, true) {
            continue;
        }
        let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
        let bindings = store.list(BINDINGS, None).filter(|b| {
            b["spec"]["policyName"].as_str() == Some(object::name(policy))
                && (b["spec"]["matchResources"].is_null()
                    || matches(&b["spec"]["matchResources"], req, namespace_object, false))
        });
        for binding in bindings {
            let actions: Vec<&str> = binding["spec"]["validationActions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for decision in evaluate(spec, req, namespace_object, fail_closed) {
                let (policy_name, binding_name) = (object::name(policy), object::name(binding));
                if actions.contains(&"Warn") {
                    warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                        decision.message
                    ));
                }
                if actions.contains(&"Deny") && denial.is_none() {
                    denial = Some((
                        format!(
                            "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {}",
                            decision.message
                        ),
                        decision.reason,
                    ));
                }
            }
        }
    }
    match denial {
        // admission.NewForbidden names the object (or its generateName), then the policy's reason
        // picks code and reason: validating/dispatcher.go.
        Some((message, reason)) => Err(ApiError::Admission {
            group: req.resource.group.clone(),
            resource: req.resource.plural.clone(),
            name: req.name.to_string(),
            reason,
            code: reason_code(reason),
            message,
        }),
        None => Ok(warnings),
    }
}

struct Decision {
    message: String,
    reason: &'static str,
}

/// `reasonToCode` of the VAP plugin; any other reason is refused when the policy is created.
fn reason_code(reason: &str) -> u16 {
    match reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

fn known_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("Forbidden") => "Forbidden",
        Some("Unauthorized") => "Unauthorized",
        Some("RequestEntityTooLarge") => "RequestEntityTooLarge",
        _ => "Invalid",
    }
}

fn evaluator(req: &Request, namespace_object: Option<&Value>) -> VapEvaluator {
    let rt = req.resource;
    let mut builder = VapEvaluator::builder()
        .object(req.object.cloned().unwrap_or(Value::Null))
        .request(AdmissionRequest {
            operation: req.operation.as_str().into(),
            name: req.name.into(),
            namespace: req.namespace.unwrap_or_default().into(),
            dry_run: req.dry_run,
            kind: GroupVersionKind {
                group: rt.group.clone(),
                version: rt.version.clone(),
                kind: rt.kind.clone(),
            },
            resource: GroupVersionResource {
                group: rt.group.clone(),
                version: rt.version.clone(),
                resource: rt.plural.clone(),
            },
            ..Default::default()
        });
    if let Some(old) = req.old_object {
        builder = builder.old_object(old.clone());
    }
    if let Some(ns) = namespace_object {
        builder = builder.namespace_object(ns.clone());
    }
    builder.build()
}

/// Whether kube-cel's message says the expression could not be evaluated (rather than that it was false).
fn is_evaluation_error(message: &str) -> bool {
    message.starts_with("evaluation error: ")
        || message.starts_with("expression returned non-boolean")
        || message.starts_with("failed to compile VAP expression")
}

/// The policy's verdicts on the request: one per failed validation (none when it allows the request).
fn evaluate(
    spec: &Value,
    req: &Request,
    namespace_object: Option<&Value>,
    fail_closed: bool,
) -> Vec<Decision> {
    let eval = evaluator(req, namespace_object);
    let strings = |v: &Value| v.as_str().map(str::to_string);
    // matchConditions: all must be true for the policy to apply.
    let conditions: Vec<VapExpression> = spec["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| VapExpression {
            expression: strings(&c["expression"]).unwrap_or_default(),
            message: Some(NO_MESSAGE.into()),
            message_expression: None,
        })
        .collect();
    for (condition, result) in spec["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(eval.evaluate(&conditions))
    {
        match result.message.as_deref() {
            None => {}
            Some(NO_MESSAGE) => return Vec::new(),
            Some(error) if fail_closed => {
                return vec![Decision {
                    message: format!(
                        "failed to evaluate match condition {}: {error}",
                        condition["name"].as_str().unwrap_or_default()
                    ),
                    reason: "Invalid",
                }];
            }
            Some(_) => return Vec::new(),
        }
    }
    let validations: Vec<&Value> = spec["validations"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let expressions: Vec<VapExpression> = validations
        .iter()
        .map(|v| VapExpression {
            expression: strings(&v["expression"]).unwrap_or_default(),
            message: Some(NO_MESSAGE.into()),
            message_expression: strings(&v["messageExpression"]),
        })
        .collect();
    let mut decisions = Vec::new();
    for (validation, result) in validations.iter().zip(eval.evaluate(&expressions)) {
        let Some(message) = result.message.filter(|_| !result.passed) else {
            continue;
        };
        let expression = validation["expression"].as_str().unwrap_or_default().trim();
        if is_evaluation_error(&message) {
            if fail_closed {
                let detail = message
                    .strip_prefix("evaluation error: ")
                    .unwrap_or(&message);
                // cel/filter.go: runtime errors name the expression.
                decisions.push(Decision {
                    message: format!("expression '{expression}' resulted in error: {detail}"),
                    reason: "Invalid",
                });
            }
            continue;
        }
        // validator.go: messageExpression (one line, at most 5 KiB), else message, else the expression.
        let from_expression = Some(message.trim().to_string()).filter(|m| {
            message != NO_MESSAGE
                && !m.is_empty()
                && !m.contains('\n')
                && m.len() <= MAX_MESSAGE_BYTES
        });
        let message = from_expression
            .or_else(|| {
                validation["message"]
                    .as_str()
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
            })
            .unwrap_or_else(|| format!("failed expression: {expression}"));
        decisions.push(Decision {
            message,
            reason: known_reason(validation["reason"].as_str()),
        });
    }
    decisions
}

/// `matchConstraints` of a policy or `matchResources` of a binding.
fn matches(
    criteria: &Value,
    req: &Request,
    namespace_object: Option<&Value>,
    is_policy: bool,
) -> bool {
    let rt = req.resource;
    // namespaceSelector: cluster-scoped objects other than Namespaces always match.
    let namespace_labels = if rt.group.is_empty() && rt.plural == "namespaces" {
        req.object.or(req.old_object).and_then(object::labels)
    } else if rt.namespaced {
        namespace_object.and_then(object::labels)
    } else {
        None
    };
    let namespaced_or_namespace =
        rt.namespaced || (rt.group.is_empty() && rt.plural == "namespaces");
    if namespaced_or_namespace
        && !selector_matches(&criteria["namespaceSelector"], namespace_labels)
    {
        return false;
    }
    // objectSelector: the new or the old object may match.
    let selector = &criteria["objectSelector"];
    if !selector_matches(selector, req.object.and_then(object::labels))
        && !selector_matches(selector, req.old_object.and_then(object::labels))
    {
        return false;
    }
    let rules =
        |key: &str| -> Vec<&Value> { criteria[key].as_array().into_iter().flatten().collect() };
    if rules("excludeResourceRules")
        .iter()
        .any(|r| rule_matches(r, req))
    {
        return false;
    }
    let include = rules("resourceRules");
    if include.is_empty() {
        // A policy needs rules to match anything; a binding without them narrows nothing.
        return !is_policy;
    }
    include.iter().any(|r| rule_matches(r, req))
}

/// One `NamedRuleWithOperations` (webhook/predicates/rules/rules.go).
fn rule_matches(rule: &Value, req: &Request) -> bool {
    let rt = req.resource;
    let list = |key: &str| -> Vec<&str> {
        rule[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let exact_or_wildcard =
        |key: &str, want: &str| list(key).iter().any(|v| *v == "*" || *v == want);
    let scope_ok = match rule["scope"].as_str() {
        None | Some("*") => true,
        Some("Namespaced") => rt.namespaced,
        Some("Cluster") => !rt.namespaced,
        Some(_) => false,
    };
    let sub = req.subresource.unwrap_or_default();
    // "services" matches only the main resource; "services/status", "services/*" or "*/*" the status.
    let resource_ok = list("resources").iter().any(|r| {
        let (res, rsub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == rt.plural) && (rsub == "*" || rsub == sub)
    });
    let names = list("resourceNames");
    scope_ok
        && exact_or_wildcard("operations", req.operation.as_str())
        && exact_or_wildcard("apiGroups", &rt.group)
        && exact_or_wildcard("apiVersions", &rt.version)
        && resource_ok
        && (names.is_empty() || names.contains(&req.name))
}

/// A `metav1.LabelSelector`; an absent or empty selector matches everything, even unlabelled objects.
fn selector_matches(selector: &Value, labels: Option<&serde_json::Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let match_labels = selector["matchLabels"].as_object();
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        });
    labels_ok && expressions_ok
}

/// Defaults the apiserver sets on policies and bindings (`kubectl get -o yaml` shows them).
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    let default_match = |m: &mut Value| {
        if !m.is_object() {
            return;
        }
        for (field, default) in [
            ("matchPolicy", json!("Equivalent")),
            ("namespaceSelector", json!({})),
            ("objectSelector", json!({})),
        ] {
            if m.get(field).is_none_or(Value::is_null) {
                m[field] = default;
            }
        }
        for key in ["resourceRules", "excludeResourceRules"] {
            for rule in m[key].as_array_mut().into_iter().flatten() {
                if rule.get("scope").is_none_or(Value::is_null) {
                    rule["scope"] = json!("*");
                }
            }
        }
    };
    match kind {
        POLICY_KIND => {
            if spec.get("failurePolicy").is_none_or(Value::is_null) {
                spec["failurePolicy"] = json!("Fail");
            }
            default_match(&mut spec["matchConstraints"]);
        }
        BINDING_KIND if spec.get("matchResources").is_some_and(Value::is_object) => {
            default_match(&mut spec["matchResources"]);
        }
        _ => {}
    }
}

/// What the apiserver refuses in a policy or binding: missing required fields, expressions that do
/// not compile, unknown reasons and actions.
pub fn validate_config(kind: &str, obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    match kind {
        POLICY_KIND => {
            if spec["matchConstraints"]["resourceRules"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required("spec.matchConstraints.resourceRules", ""));
            }
            let validations = spec["validations"].as_array().map_or(0, Vec::len);
            let audits = spec["auditAnnotations"].as_array().map_or(0, Vec::len);
            if validations == 0 && audits == 0 {
                causes.push(Cause::required(
                    "spec.validations",
                    "validations or auditAnnotations must contain at least one item",
                ));
            }
            let check = VapEvaluator::builder().build();
            for (list, field) in [
                ("validations", "expression"),
                ("validations", "messageExpression"),
                ("matchConditions", "expression"),
            ] {
                for (i, item) in spec[list].as_array().into_iter().flatten().enumerate() {
                    let Some(expression) = item[field].as_str() else {
                        if field == "expression" {
                            causes.push(Cause::required(format!("spec.{list}[{i}].{field}"), ""));
                        }
                        continue;
                    };
                    let compiled = check.compile_expressions(&[VapExpression {
                        expression: expression.into(),
                        message: None,
                        message_expression: None,
                    }]);
                    if let Some(Err(err)) = compiled.first() {
                        let detail = std::error::Error::source(err)
                            .map_or_else(|| err.to_string(), |e| e.to_string());
                        causes.push(Cause::invalid(
                            format!("spec.{list}[{i}].{field}"),
                            &json!(expression),
                            format!("compilation failed: {detail}"),
                        ));
                    }
                }
            }
            for (i, v) in spec["validations"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(reason) = v["reason"].as_str() {
                    let supported = [
                        "Unauthorized",
                        "Forbidden",
                        "Invalid",
                        "RequestEntityTooLarge",
                    ];
                    if !supported.contains(&reason) {
                        causes.push(Cause::not_supported(
                            format!("spec.validations[{i}].reason"),
                            &json!(reason),
                            &supported.map(|s| json!(s)),
                        ));
                    }
                }
            }
        }
        BINDING_KIND => {
            if spec["policyName"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.policyName", ""));
            }
            match spec["validationActions"].as_array() {
                None => causes.push(Cause::required(
                    "spec.validationActions",
                    "at least one validation action is required",
                )),
                Some(actions) => {
                    let supported = ["Deny", "Warn", "Audit"];
                    for (i, action) in actions.iter().enumerate() {
                        if !action.as_str().is_some_and(|a| supported.contains(&a)) {
                            causes.push(Cause::not_supported(
                                format!("spec.validationActions[{i}]"),
                                action,
                                &supported.map(|s| json!(s)),
                            ));
                        }
                    }
                    if actions.is_empty() {
                        causes.push(Cause::required(
                            "spec.validationActions",
                            "at least one validation action is required",
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = json!({"a": "1", "b": "2"});
        let labels = labels.as_object();
        assert!(selector_matches(&Value::Null, labels));
        assert!(selector_matches(&json!({}), None));
        assert!(selector_matches(
            &json!({"matchLabels": {"a": "1"}}),
            labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"a": "2"}}),
            labels
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]},
                                         {"key": "c", "operator": "DoesNotExist"}]}),
            labels
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}),
            labels
        ));
    }

    #[test]
    fn compile_errors_are_invalid() {
        let policy = json!({"spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["services"]}]},
            "validations": [{"expression": "object.spec.(("}]}});
        let causes = validate_config(POLICY_KIND, &policy);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.validations[0].expression");
        assert!(
            causes[0].message.contains("compilation failed"),
            "{causes:?}"
        );
    }
}
