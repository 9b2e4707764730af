//! Server-side apply and field ownership over HTTP.

mod common;

use common::*;
use serde_json::json;

const CM: &str = "/api/v1/namespaces/kube-system/configmaps/coredns-custom";

#[tokio::test]
async fn apply_creates_and_records_ownership() {
    let sim = start().await;
    let reply = apply(&sim, CM, "op", false, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  a.override: k8s_external a.local\n").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let entry = &reply.body["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "op");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(entry["apiVersion"], "v1");
    assert!(entry["time"].is_string());
    assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:a.override": {}}}));

    let missing_manager = call(
        &sim.url(),
        "PATCH",
        CM,
        "application/apply-patch+yaml",
        Some("apiVersion: v1\nkind: ConfigMap\n".into()),
    )
    .await;
    assert_eq!(missing_manager.status, 422);
    assert!(missing_manager.body["message"]
        .as_str()
        .unwrap()
        .contains("fieldManager: Required value"));
    sim.shutdown().await;
}

#[tokio::test]
async fn conflicts_name_the_other_manager_and_force_takes_ownership() {
    let sim = start().await;
    let v1 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  shared: one\n";
    apply(&sim, CM, "first", false, v1).await;
    // The same value co-owns without conflict.
    let same = apply(&sim, CM, "second", false, v1).await;
    assert_eq!(same.status, 200);
    assert_eq!(
        owners(&same.body, &["f:data", "f:shared"]),
        ["first", "second"]
    );

    let different = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  shared: two\n";
    let conflict = apply(&sim, CM, "third", false, different).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    let message = conflict.body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Apply failed with 2 conflicts: conflicts with \"first\":\n- .data.shared"
        ),
        "{message}"
    );
    assert_eq!(
        conflict.body["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    assert_eq!(
        conflict.body["details"]["causes"][0]["field"],
        ".data.shared"
    );

    let forced = apply(&sim, CM, "third", true, different).await;
    assert_eq!(forced.status, 200);
    assert_eq!(forced.body["data"]["shared"], "two");
    assert_eq!(owners(&forced.body, &["f:data", "f:shared"]), ["third"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn conflict_with_an_update_manager_uses_the_apiserver_wording() {
    let sim = start().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns-custom"}, "data": {"k": "v"}});
    post(
        &sim,
        "/api/v1/namespaces/kube-system/configmaps?fieldManager=kubectl-client-side-apply",
        &cm,
    )
    .await;
    let reply = apply(
        &sim,
        CM,
        "op",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  k: other\n",
    )
    .await;
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.body["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.k"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn dropping_a_field_removes_only_what_nobody_else_owns() {
    let sim = start().await;
    // Another tool owns its own key; the operator adds its key and an annotation.
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns-custom"},
                        "data": {"theirs.server": "example.org:53 {\n  forward . 1.1.1.1\n}\n"}});
    let created = post(
        &sim,
        "/api/v1/namespaces/kube-system/configmaps?fieldManager=gitops",
        &theirs,
    )
    .await
    .body;
    let original = created["data"]["theirs.server"].clone();
    let mine = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\n  annotations:\n    appservicelink.io/owned: \"true\"\ndata:\n  appservicelink.override: k8s_external a.local\n";
    let applied = apply(&sim, CM, "appservicelink", false, mine).await.body;
    assert_eq!(
        applied["data"]["appservicelink.override"],
        "k8s_external a.local"
    );

    let empty = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\n";
    let after = apply(&sim, CM, "appservicelink", false, empty).await.body;
    assert!(
        after["data"].get("appservicelink.override").is_none(),
        "{after}"
    );
    assert!(after["metadata"].get("annotations").is_none(), "{after}");
    assert_eq!(
        after["data"]["theirs.server"], original,
        "the other key survives byte for byte"
    );
    assert_eq!(owners(&after, &["f:data", "f:theirs.server"]), ["gitops"]);

    // A field co-owned by someone else stays when one applier lets go of it.
    apply(
        &sim,
        CM,
        "a",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  both: x\n",
    )
    .await;
    apply(
        &sim,
        CM,
        "b",
        false,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  both: x\n",
    )
    .await;
    let kept = apply(&sim, CM, "a", false, empty).await.body;
    assert_eq!(kept["data"]["both"], "x");
    assert_eq!(owners(&kept, &["f:data", "f:both"]), ["b"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_update_takes_ownership_from_the_applier() {
    let sim = start().await;
    let svc_path = "/api/v1/namespaces/default/services/web";
    let manifest = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    service.beta.kubernetes.io/azure-load-balancer-internal: \"true\"\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports:\n  - port: 80\n";
    let applied = apply(&sim, svc_path, "appservicelink", false, manifest)
        .await
        .body;
    assert_eq!(owners(&applied, &["f:spec", "f:type"]), ["appservicelink"]);
    assert!(
        applied["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"]
            ["k:{\"port\":80,\"protocol\":\"TCP\"}"]
            .is_object()
    );

    // A GitOps tool reverts the type with a merge patch: it becomes the owner and the applier loses it.
    let reverted = merge_patch(
        &sim,
        &format!("{svc_path}?fieldManager=argocd-controller"),
        &json!({"spec": {"type": "ClusterIP"}}),
    )
    .await
    .body;
    assert_eq!(
        owners(&reverted, &["f:spec", "f:type"]),
        ["argocd-controller"]
    );
    let entry = reverted["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "argocd-controller")
        .unwrap();
    assert_eq!(entry["operation"], "Update");

    // Re-applying the old value now conflicts with that manager.
    let conflict = apply(&sim, svc_path, "appservicelink", false, manifest).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 1 conflict: conflict with \"argocd-controller\" using v1: .spec.type"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reapplying_the_same_configuration_is_not_a_write() {
    let sim = start().await;
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns-custom\ndata:\n  k: v\n";
    let first = apply(&sim, CM, "op", false, manifest).await.body;
    let again = apply(&sim, CM, "op", false, manifest).await.body;
    assert_eq!(rv(&first), rv(&again));
    assert_eq!(
        first["metadata"]["managedFields"],
        again["metadata"]["managedFields"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn status_apply_is_owned_with_subresource() {
    let sim = start().await;
    install_crd(&sim).await;
    let path = format!("{ASL_PATH}/x");
    apply(&sim, &path, "op", false, "apiVersion: appservicelink.io/v1alpha1\nkind: AppServiceLink\nmetadata:\n  name: x\nspec:\n  dns:\n    zone: a.local\n").await;
    let status = "apiVersion: appservicelink.io/v1alpha1\nkind: AppServiceLink\nmetadata:\n  name: x\nstatus:\n  conditions:\n  - type: Ready\n    status: \"True\"\n";
    let reply = apply(&sim, &format!("{path}/status"), "op", false, status).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entries = reply.body["metadata"]["managedFields"].as_array().unwrap();
    let status_entry = entries
        .iter()
        .find(|e| e["subresource"] == "status")
        .unwrap();
    assert_eq!(
        status_entry["fieldsV1"]["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"]["f:status"],
        json!({})
    );
    // Conditions merge by type: another applier's condition sits beside ours.
    let other = "apiVersion: appservicelink.io/v1alpha1\nkind: AppServiceLink\nmetadata:\n  name: x\nstatus:\n  conditions:\n  - type: Degraded\n    status: \"False\"\n";
    let merged = apply(&sim, &format!("{path}/status"), "other", false, other)
        .await
        .body;
    assert_eq!(merged["status"]["conditions"].as_array().unwrap().len(), 2);
    sim.shutdown().await;
}
