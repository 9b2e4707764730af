//! ValidatingAdmissionPolicies and bindings, installed with kubectl as on a real cluster.

mod common;

use common::*;
use serde_json::{json, Value};

const SVCS: &str = "/api/v1/namespaces/default/services";

/// Denies LoadBalancer Services labelled `policy=strict` (binding objectSelector), as a compliance
/// policy on an AKS cluster might.
const DENY_LB: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: deny-lb
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["services"]
  validations:
  - expression: "object.spec.type != 'LoadBalancer'"
    message: "LoadBalancer Services are not allowed here"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: deny-lb-binding
spec:
  policyName: deny-lb
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels: {policy: strict}
"#;

fn service(name: &str, labels: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

#[tokio::test]
async fn a_policy_denies_one_object_with_the_apiservers_status_and_wording() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    let manifest = kubectl.write("policy.yaml", DENY_LB);
    let out = kubectl
        .ok(&["apply", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(
        out.contains("validatingadmissionpolicy.admissionregistration.k8s.io/deny-lb created")
            && out.contains(
                "validatingadmissionpolicybinding.admissionregistration.k8s.io/deny-lb-binding created"
            ),
        "{out}"
    );
    let listed = kubectl.ok(&["get", "validatingadmissionpolicies"]).await;
    assert!(listed.contains("deny-lb"), "{listed}");
    // Defaults the apiserver fills in.
    let policy = sim
        .get(
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            None,
            "deny-lb",
        )
        .unwrap();
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["matchPolicy"],
        "Equivalent"
    );

    let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
    // Not selected by the binding: allowed.
    let other = post(&sim, SVCS, &service("other", json!({}), lb.clone())).await;
    assert_eq!(other.status, 201, "{}", other.body);

    // Selected: refused with 422 Invalid (no reason set), the message naming policy and binding.
    let strict = service("strict", json!({"policy": "strict"}), lb.clone());
    let denied = post(&sim, SVCS, &strict).await;
    assert_eq!(denied.status, 422, "{}", denied.body);
    let expected = "services \"strict\" is forbidden: ValidatingAdmissionPolicy 'deny-lb' with binding 'deny-lb-binding' denied request: LoadBalancer Services are not allowed here";
    assert_eq!(denied.body["message"], expected);
    assert_eq!(denied.body["reason"], "Invalid");
    assert_eq!(
        denied.body["details"],
        json!({"name": "strict", "kind": "services", "causes": [{"message": expected.split_once("forbidden: ").unwrap().1}]})
    );
    assert!(sim
        .get("v1", "Service", Some("default"), "strict")
        .is_none());

    // A ClusterIP Service with the label is fine; turning it into a LoadBalancer is not, by any verb.
    let created = post(
        &sim,
        SVCS,
        &service(
            "strict",
            json!({"policy": "strict"}),
            json!({"ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let patched = merge_patch(
        &sim,
        &format!("{SVCS}/strict"),
        &json!({"spec": {"type": "LoadBalancer"}}),
    )
    .await;
    assert_eq!(patched.status, 422, "{}", patched.body);
    let applied = apply(
        &sim,
        &format!("{SVCS}/strict"),
        "operator",
        true,
        "apiVersion: v1\nkind: Service\nmetadata: {name: strict}\nspec: {type: LoadBalancer}\n",
    )
    .await;
    assert_eq!(applied.status, 422, "{}", applied.body);
    // Dry runs are refused too.
    let dry = merge_patch(
        &sim,
        &format!("{SVCS}/strict?dryRun=All"),
        &json!({"spec": {"type": "LoadBalancer"}}),
    )
    .await;
    assert_eq!(dry.status, 422, "{}", dry.body);
    let unchanged = sim.get("v1", "Service", Some("default"), "strict").unwrap();
    assert_eq!(unchanged["spec"]["type"], "ClusterIP");

    // kubectl shows the apiserver's message.
    let out = kubectl
        .run(&[
            "patch",
            "svc",
            "strict",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"type":"LoadBalancer"}}"#,
        ])
        .await;
    assert!(!out.success);
    // kubectl prints a 422 from its causes (one, without a field), as it does for a real cluster.
    assert!(
        out.stderr
            .contains(expected.split_once("forbidden: ").unwrap().1),
        "{}",
        out.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reason_message_expression_namespaces_subresources_and_warnings() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    kubectl.ok(&["create", "namespace", "locked"]).await;
    kubectl
        .ok(&["label", "namespace", "locked", "tier=locked"])
        .await;
    let manifest = kubectl.write(
        "policy.yaml",
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-annotation
spec:
  failurePolicy: Fail
  matchConstraints:
    namespaceSelector:
      matchExpressions: [{key: tier, operator: In, values: [locked]}]
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["*"]
      operations: ["*"]
      resources: ["configmaps", "services/status"]
  validations:
  - expression: "!has(object.metadata.annotations) || !('forbidden' in object.metadata.annotations)"
    messageExpression: "'object ' + object.metadata.name + ' carries annotation forbidden'"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-annotation-deny
spec:
  policyName: no-annotation
  validationActions: [Deny]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: prefer-labels
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "has(object.metadata.labels)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: prefer-labels-warn
spec:
  policyName: prefer-labels
  validationActions: [Warn]
"#,
    );
    kubectl
        .ok(&["apply", "-f", manifest.to_str().unwrap()])
        .await;

    let cm = |ns: &str, name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "annotations": {"forbidden": "yes"}}})
    };
    // Outside the selected namespace the policy does not apply; the Warn binding still warns.
    let free = post(
        &sim,
        "/api/v1/namespaces/default/configmaps",
        &cm("default", "free"),
    )
    .await;
    assert_eq!(free.status, 201, "{}", free.body);
    let warning = free.headers.get("warning").unwrap().to_str().unwrap();
    assert!(
        warning.contains(
            "Validation failed for ValidatingAdmissionPolicy 'prefer-labels' with binding 'prefer-labels-warn': failed expression: has(object.metadata.labels)"
        ),
        "{warning}"
    );
    // Inside it: 403 Forbidden, with the messageExpression's message.
    let denied = post(
        &sim,
        "/api/v1/namespaces/locked/configmaps",
        &cm("locked", "blocked"),
    )
    .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.body["reason"], "Forbidden");
    assert_eq!(
        denied.body["message"],
        "configmaps \"blocked\" is forbidden: ValidatingAdmissionPolicy 'no-annotation' with binding 'no-annotation-deny' denied request: object blocked carries annotation forbidden"
    );

    // The rule names services/status only: the Service itself may carry the annotation, its status
    // writes are checked.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "locked", "annotations": {"forbidden": "yes"}},
        "spec": {"ports": [{"port": 80}]}});
    let created = post(&sim, "/api/v1/namespaces/locked/services", &svc).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let status = merge_patch(
        &sim,
        "/api/v1/namespaces/locked/services/web/status",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.240.0.9"}]}}}),
    )
    .await;
    assert_eq!(status.status, 403, "{}", status.body);

    // DELETE: only `oldObject` is set.
    let protect = kubectl.write(
        "protect.yaml",
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: protect
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["DELETE"]
      resources: ["configmaps"]
  validations:
  - expression: "oldObject.metadata.name != 'keep' && object == null"
    message: "keep stays"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: protect
spec:
  policyName: protect
  validationActions: [Deny]
"#,
    );
    kubectl
        .ok(&["apply", "-f", protect.to_str().unwrap()])
        .await;
    for name in ["keep", "drop"] {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"a": "b"}}});
        let created = post(&sim, "/api/v1/namespaces/default/configmaps", &cm).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let refused = delete(&sim, "/api/v1/namespaces/default/configmaps/keep").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .ends_with("denied request: keep stays"),
        "{}",
        refused.body
    );
    assert!(sim
        .get("v1", "ConfigMap", Some("default"), "keep")
        .is_some());
    let deleted = delete(&sim, "/api/v1/namespaces/default/configmaps/drop").await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn policies_that_do_not_compile_are_refused() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    let manifest = kubectl.write(
        "bad.yaml",
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: bad
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["services"]
  validations:
  - expression: "object.spec.(("
"#,
    );
    let out = kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("spec.validations[0].expression")
            && out.stderr.contains("compilation failed"),
        "{}",
        out.stderr
    );
    let binding = kubectl.write(
        "binding.yaml",
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: b}\nspec: {policyName: bad}\n",
    );
    let out = kubectl
        .run(&["apply", "-f", binding.to_str().unwrap()])
        .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("spec.validationActions"),
        "{}",
        out.stderr
    );
    sim.shutdown().await;
}
