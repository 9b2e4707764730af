//! CRUD, discovery, errors, status subresource, generation, finalizers and namespaces over real HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

#[tokio::test]
async fn discovery_lists_builtin_resources_with_short_names() {
    let sim = start().await;
    let core = get(&sim, "/api/v1").await.body;
    let svc = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "services")
        .unwrap();
    assert_eq!(svc["shortNames"], json!(["svc"]));
    assert_eq!(svc["namespaced"], true);
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "services/status"));
    let groups = get(&sim, "/apis").await.body;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for g in [
        "apps",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "events.k8s.io",
    ] {
        assert!(names.contains(&g), "{g} missing from {names:?}");
    }
    let apps = get(&sim, "/apis/apps/v1").await.body;
    assert_eq!(apps["resources"][0]["shortNames"], json!(["deploy"]));
    assert_eq!(get(&sim, "/version").await.body["major"], "1");
    let namespaces = get(&sim, "/api/v1/namespaces").await.body;
    let ns: Vec<&str> = namespaces["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ns,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn create_get_replace_delete_with_real_errors() {
    let sim = start().await;
    let created = post(&sim, CMS, &configmap("a", json!({"k": "v"}))).await;
    assert_eq!(created.status, 201);
    let obj = created.body;
    assert!(obj["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(obj["metadata"]["creationTimestamp"].is_string());
    assert_eq!(obj["metadata"]["namespace"], "default");

    let dup = post(&sim, CMS, &configmap("a", json!({}))).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["reason"], "AlreadyExists");
    assert_eq!(dup.body["message"], r#"configmaps "a" already exists"#);

    let missing = get(&sim, &format!("{CMS}/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["kind"], "Status");
    assert_eq!(missing.body["message"], r#"configmaps "nope" not found"#);

    let mut stale = obj.clone();
    stale["data"]["k"] = json!("v2");
    let updated = put(&sim, &format!("{CMS}/a"), &stale).await;
    assert_eq!(updated.status, 200);
    assert!(rv(&updated.body) > rv(&obj));
    let conflict = put(&sim, &format!("{CMS}/a"), &stale).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert!(conflict.body["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));

    let gone = delete(&sim, &format!("{CMS}/a")).await;
    assert_eq!(gone.status, 200);
    assert_eq!(gone.body["status"], "Success");
    assert_eq!(get(&sim, &format!("{CMS}/a")).await.status, 404);

    let no_ns = post(
        &sim,
        "/api/v1/namespaces/nope/configmaps",
        &configmap("b", json!({})),
    )
    .await;
    assert_eq!(no_ns.status, 404);
    assert_eq!(no_ns.body["message"], r#"namespaces "nope" not found"#);
    sim.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_name_validation() {
    let sim = start().await;
    let body =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cm-"}});
    let created = post(&sim, CMS, &body).await;
    assert_eq!(created.status, 201);
    let name = created.body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("cm-") && name.len() == 8, "{name}");
    let bad = post(&sim, CMS, &configmap("Bad_Name", json!({}))).await;
    assert_eq!(bad.status, 422);
    assert!(bad.body["message"].as_str().unwrap().starts_with(
        r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name""#
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn list_selectors_and_all_namespaces() {
    let sim = start().await;
    post(
        &sim,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "other"}}),
    )
    .await;
    for (ns, name, labels) in [
        ("default", "a", json!({"app": "web", "tier": "front"})),
        ("default", "b", json!({"app": "db"})),
        ("other", "c", json!({"app": "web"})),
    ] {
        let body = json!({"metadata": {"name": name, "labels": labels}});
        assert_eq!(
            post(&sim, &format!("/api/v1/namespaces/{ns}/configmaps"), &body)
                .await
                .status,
            201
        );
    }
    let names = |reply: Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps").await),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=app%3Dweb").await),
        ["a", "c"]
    );
    assert_eq!(
        names(get(&sim, &format!("{CMS}?labelSelector=app%3D%3Dweb")).await),
        ["a"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=app!%3Dweb").await),
        ["b"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=app+in+(db,cache)").await),
        ["b"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=app+notin+(db)").await),
        ["a", "c"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=tier").await),
        ["a"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?labelSelector=!tier").await),
        ["b", "c"]
    );
    assert_eq!(
        names(get(&sim, "/api/v1/configmaps?fieldSelector=metadata.name%3Dc").await),
        ["c"]
    );
    assert_eq!(
        names(
            get(
                &sim,
                "/api/v1/configmaps?fieldSelector=metadata.namespace%3Dother&limit=500"
            )
            .await
        ),
        ["c"]
    );
    let list = get(&sim, CMS).await.body;
    assert_eq!(list["kind"], "ConfigMapList");
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
    assert_eq!(
        get(&sim, "/api/v1/configmaps?fieldSelector=data.x%3D1")
            .await
            .status,
        400
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_limited_list_is_paged_at_the_first_pages_resource_version() {
    let sim = start().await;
    for name in ["a", "b", "c", "d", "e"] {
        let body = configmap(name, json!({"v": "1"}));
        assert_eq!(post(&sim, CMS, &body).await.status, 201);
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}={}",
                    i["metadata"]["name"].as_str().unwrap(),
                    i["data"]["v"].as_str().unwrap()
                )
            })
            .collect()
    };
    let first = get(&sim, &format!("{CMS}?limit=2")).await.body;
    assert_eq!(names(&first), ["a=1", "b=1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let at = first["metadata"]["resourceVersion"].clone();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // Changes after the first page do not show in the later ones: they come from the watch.
    merge_patch(&sim, &format!("{CMS}/c"), &json!({"data": {"v": "2"}})).await;
    assert_eq!(delete(&sim, &format!("{CMS}/d")).await.status, 200);
    post(&sim, CMS, &configmap("cc", json!({"v": "1"}))).await;
    let second = get(&sim, &format!("{CMS}?limit=2&continue={token}"))
        .await
        .body;
    assert_eq!(names(&second), ["c=1", "d=1"]);
    assert_eq!(second["metadata"]["resourceVersion"], at);
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let last = get(&sim, &format!("{CMS}?limit=2&continue={token}"))
        .await
        .body;
    assert_eq!(names(&last), ["e=1"]);
    assert!(last["metadata"].get("continue").is_none());
    assert!(last["metadata"].get("remainingItemCount").is_none());
    // The watch cache answers resourceVersion=0 whole, ignoring the limit.
    assert_eq!(
        names(
            &get(&sim, &format!("{CMS}?limit=2&resourceVersion=0"))
                .await
                .body
        )
        .len(),
        5
    );
    // A selector leaves the count out.
    let selected = get(
        &sim,
        &format!("{CMS}?limit=1&fieldSelector=metadata.name%21%3Da"),
    )
    .await
    .body;
    assert_eq!(names(&selected), ["b=1"]);
    assert!(selected["metadata"]["continue"].is_string());
    assert!(selected["metadata"].get("remainingItemCount").is_none());
    let refused = get(
        &sim,
        &format!("{CMS}?limit=2&resourceVersion=1&continue={token}"),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        get(&sim, &format!("{CMS}?limit=2&continue=garbage"))
            .await
            .status,
        400
    );
    // Once the history no longer reaches the first page's revision, the token is too old.
    sim.compact();
    let expired = get(&sim, &format!("{CMS}?limit=2&continue={token}")).await;
    assert_eq!(expired.status, 410, "{}", expired.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn no_op_writes_keep_the_resource_version() {
    let sim = start().await;
    let obj = post(&sim, CMS, &configmap("a", json!({"k": "v"})))
        .await
        .body;
    let same = put(&sim, &format!("{CMS}/a"), &obj).await;
    assert_eq!(same.status, 200);
    assert_eq!(rv(&same.body), rv(&obj));
    let patched = merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"k": "v"}})).await;
    assert_eq!(rv(&patched.body), rv(&obj));
    let changed = merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"k": "w"}})).await;
    assert!(rv(&changed.body) > rv(&obj));
    sim.shutdown().await;
}

#[tokio::test]
async fn json_patch_test_operation_guards_finalizer_removal() {
    let sim = start().await;
    let mut cm = configmap("a", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.io/cleanup"]);
    post(&sim, CMS, &cm).await;
    let path = format!("{CMS}/a");
    let wrong = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "other"},
                       {"op": "remove", "path": "/metadata/finalizers/0"}]);
    assert_eq!(json_patch(&sim, &path, &wrong).await.status, 422);

    let pending = delete(&sim, &path).await;
    assert_eq!(pending.status, 200);
    assert!(pending.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        get(&sim, &path).await.status,
        200,
        "finalizer keeps the object"
    );
    let add = merge_patch(
        &sim,
        &path,
        &json!({"metadata": {"finalizers": ["example.io/cleanup", "late"]}}),
    )
    .await;
    assert_eq!(add.status, 422, "{}", add.body);

    let right = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "example.io/cleanup"},
                       {"op": "remove", "path": "/metadata/finalizers/0"}]);
    assert_eq!(json_patch(&sim, &path, &right).await.status, 200);
    assert_eq!(
        get(&sim, &path).await.status,
        404,
        "removing the last finalizer completes the deletion"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let sim = start().await;
    install_crd(&sim).await;
    let cr = json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink", "metadata": {"name": "x"},
                    "spec": {"dns": {"zone": "a.local"}}, "status": {"dnsServerIP": "1.2.3.4"}});
    let created = post(&sim, ASL_PATH, &cr).await.body;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created.get("status").is_none(),
        "create ignores status when it is a subresource"
    );
    assert_eq!(
        created["spec"]["appServiceDnsMode"], "AppSettings",
        "schema default applied"
    );

    let path = format!("{ASL_PATH}/x");
    let status = merge_patch(&sim, &format!("{path}/status"), &json!({"status": {"dnsServerIP": "10.240.0.53"}, "spec": {"dns": {"zone": "ignored.local"}}})).await.body;
    assert_eq!(status["status"]["dnsServerIP"], "10.240.0.53");
    assert_eq!(
        status["spec"]["dns"]["zone"], "a.local",
        "status writes do not touch spec"
    );
    assert_eq!(
        status["metadata"]["generation"], 1,
        "status writes do not bump generation"
    );

    let labeled = merge_patch(
        &sim,
        &path,
        &json!({"metadata": {"labels": {"a": "b"}}, "status": {"dnsServerIP": "9.9.9.9"}}),
    )
    .await
    .body;
    assert_eq!(
        labeled["metadata"]["generation"], 1,
        "metadata changes do not bump generation"
    );
    assert_eq!(
        labeled["status"]["dnsServerIP"], "10.240.0.53",
        "main resource writes ignore status"
    );

    let spec = merge_patch(&sim, &path, &json!({"spec": {"dns": {"zone": "b.local"}}}))
        .await
        .body;
    assert_eq!(spec["metadata"]["generation"], 2);
    assert_eq!(
        get(&sim, &format!("{path}/status")).await.body["spec"]["dns"]["zone"],
        "b.local"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_objects() {
    let sim = start().await;
    post(
        &sim,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "doomed"}}),
    )
    .await;
    let ns_cms = "/api/v1/namespaces/doomed/configmaps";
    post(&sim, ns_cms, &configmap("plain", json!({}))).await;
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.io/hold"]);
    post(&sim, ns_cms, &held).await;

    let reply = delete(&sim, "/api/v1/namespaces/doomed").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["status"]["phase"], "Terminating");
    assert_eq!(get(&sim, &format!("{ns_cms}/plain")).await.status, 404);
    assert!(
        get(&sim, &format!("{ns_cms}/held")).await.body["metadata"]["deletionTimestamp"]
            .is_string()
    );
    let refused = post(&sim, ns_cms, &configmap("new", json!({}))).await;
    assert_eq!(refused.status, 403);

    merge_patch(
        &sim,
        &format!("{ns_cms}/held"),
        &json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(get(&sim, &format!("{ns_cms}/held")).await.status, 404);
    assert_eq!(
        get(&sim, "/api/v1/namespaces/doomed").await.status,
        404,
        "namespace goes once empty"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let sim = start().await;
    let owner = post(&sim, CMS, &configmap("owner", json!({}))).await.body;
    let mut dependent = configmap("dependent", json!({}));
    dependent["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
    post(&sim, CMS, &dependent).await;
    delete(&sim, &format!("{CMS}/owner")).await;
    assert_eq!(get(&sim, &format!("{CMS}/dependent")).await.status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn request_log_records_every_request_with_verbs() {
    let sim = start().await;
    get(&sim, "/api/v1").await;
    post(
        &sim,
        &format!("{CMS}?fieldManager=tester"),
        &configmap("a", json!({})),
    )
    .await;
    get(&sim, &format!("{CMS}/a")).await;
    get(&sim, CMS).await;
    let patched = merge_patch(&sim, &format!("{CMS}/a"), &json!({"data": {"x": "y"}}))
        .await
        .body;
    // Without fieldManager the manager is the user agent's product name.
    assert_eq!(owners(&patched, &["f:data", "f:x"]), ["kube-sim-tests"]);
    delete(&sim, &format!("{CMS}/a")).await;
    let log = sim.requests();
    let verbs: Vec<&str> = log.iter().map(|r| r.verb.as_str()).collect();
    assert_eq!(verbs, ["get", "create", "get", "list", "patch", "delete"]);
    assert_eq!(log[1].field_manager.as_deref(), Some("tester"));
    assert_eq!(log[1].status, 201);
    assert_eq!(log[1].user_agent, "kube-sim-tests/1.0");
    assert_eq!(log[1].body.as_ref().unwrap()["metadata"]["name"], "a");
    assert_eq!(log.iter().filter(|r| r.is_write()).count(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn in_process_apply_and_reads() {
    let sim = start().await;
    let obj = sim
        .apply_as("seeder", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed", "namespace": "kube-system"}, "data": {"a": "1"}}))
        .unwrap();
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "seeder");
    assert_eq!(
        sim.get("v1", "ConfigMap", Some("kube-system"), "seed")
            .unwrap()["data"]["a"],
        "1"
    );
    assert_eq!(sim.list("v1", "Namespace").len(), 4);
    assert!(
        sim.requests().is_empty(),
        "in-process writes are not HTTP requests"
    );
    sim.shutdown().await;
}
