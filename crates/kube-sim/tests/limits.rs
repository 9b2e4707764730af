//! Size limits: the request body limit, ObjectMeta/ConfigMap/Secret validation, etcd's request size.

mod common;

use common::*;
use kube_sim::{SimCluster, ETCD_MAX_REQUEST_BYTES, MAX_REQUEST_BODY_BYTES};
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// `keys` keys of `len` bytes each, named to be long (key names do not count towards the 1 MiB).
fn filler(keys: usize, len: usize) -> Value {
    (0..keys)
        .map(|i| (format!("{i:0>200}.conf"), json!("x".repeat(len))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn size(sim: &SimCluster, name: &str) -> usize {
    sim.stored_size("v1", "ConfigMap", Some("default"), name)
        .unwrap()
}

#[tokio::test]
async fn configmap_data_over_1_mib_is_invalid() {
    let sim = start().await;
    let full = post(
        &sim,
        CMS,
        &configmap("full", json!({"a": "x".repeat(1024 * 1024)})),
    )
    .await;
    assert_eq!(full.status, 201, "{}", full.body);
    let over = merge_patch(&sim, &format!("{CMS}/full"), &json!({"data": {"b": "y"}})).await;
    assert_eq!(over.status, 422, "{}", over.body);
    assert_eq!(
        over.body["message"],
        "ConfigMap \"full\" is invalid: []: Too long: may not be more than 1048576 bytes"
    );
    assert!(
        sim.get("v1", "ConfigMap", Some("default"), "full").unwrap()["data"]
            .get("b")
            .is_none()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn annotations_over_256_kib_are_invalid() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    // kubectl's client-side apply copies the whole object into an annotation: the classic way to
    // hit this limit.
    let big = serde_json::to_string(&configmap(
        "dashboards",
        json!({"d.json": "x".repeat(300_000)}),
    ))
    .unwrap();
    let manifest = kubectl.write("cm.json", &big);
    let out = kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(!out.success);
    assert!(
        out.stderr.contains(
            "The ConfigMap \"dashboards\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"
        ),
        "{}",
        out.stderr
    );
    // Without the annotation it fits.
    kubectl
        .ok(&["create", "-f", manifest.to_str().unwrap()])
        .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn request_bodies_over_3_mib_are_too_large() {
    let sim = start().await;
    let body = configmap("huge", json!({"a": "x".repeat(MAX_REQUEST_BODY_BYTES)}));
    let reply = post(&sim, CMS, &body).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.body["reason"], "RequestEntityTooLarge");
    assert_eq!(
        reply.body["message"],
        "Request entity too large: limit is 3145728"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn objects_over_etcds_request_limit_are_refused_with_its_error() {
    let sim = start().await;
    // 1,000,000 bytes of values under 1000 long keys: valid, and not far from etcd's 1.5 MiB.
    let data = filler(1000, 1000);
    let created = post(&sim, CMS, &configmap("big", data)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let stored = size(&sim, "big");
    assert!(
        stored < ETCD_MAX_REQUEST_BYTES && stored > ETCD_MAX_REQUEST_BYTES - 300_000,
        "{stored}"
    );
    // More keys push the stored object (data and managedFields) over the limit.
    let more = merge_patch(
        &sim,
        &format!("{CMS}/big"),
        &json!({"data": filler(1800, 1).as_object().unwrap().iter()
            .map(|(k, v)| (format!("z{k}"), v.clone())).collect::<serde_json::Map<_, _>>()}),
    )
    .await;
    assert_eq!(more.status, 500, "{}", more.body);
    assert_eq!(more.body["message"], "etcdserver: request is too large");
    assert!(more.body.get("reason").is_none(), "{}", more.body);
    assert_eq!(size(&sim, "big"), stored, "nothing was stored");

    // A dry run never reaches etcd.
    let dry = merge_patch(
        &sim,
        &format!("{CMS}/big?dryRun=All"),
        &json!({"data": filler(1800, 1).as_object().unwrap().iter()
            .map(|(k, v)| (format!("z{k}"), v.clone())).collect::<serde_json::Map<_, _>>()}),
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_writes_are_held_to_etcds_limit_too() {
    let sim = start().await;
    install_crd(&sim).await;
    let link = json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink",
        "metadata": {"name": "web"}, "spec": {"dns": {"zone": "mydomain.local"}}});
    assert_eq!(post(&sim, ASL_PATH, &link).await.status, 201);
    // Long reasons (the CRD schema allows any): a status that outgrows etcd.
    let conditions: Vec<Value> = (0..200)
        .map(|i| json!({"type": format!("Condition{i}"), "status": "True", "reason": "x".repeat(8_000)}))
        .collect();
    let reply = merge_patch(
        &sim,
        &format!("{ASL_PATH}/web/status"),
        &json!({"status": {"conditions": conditions}}),
    )
    .await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.body["message"], "etcdserver: request is too large");
    sim.shutdown().await;
}
