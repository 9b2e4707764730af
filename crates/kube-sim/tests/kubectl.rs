//! The real `kubectl` against the simulated apiserver, one test per command we rely on.

mod common;

use common::*;
use kube_sim::SimCluster;
use serde_json::Value;

const LINK: &str = "apiVersion: appservicelink.io/v1alpha1
kind: AppServiceLink
metadata:
  name: web
spec:
  dns:
    zone: mydomain.local
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

async fn with_crd(sim: &SimCluster) -> Kubectl {
    let kubectl = Kubectl::new(sim);
    let crd = kubectl.write("crd.yaml", CRD_YAML);
    let out = kubectl.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/appservicelinks.appservicelink.io created"
    );
    kubectl
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn kubectl_create_namespace_and_get() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    assert_eq!(
        kubectl.ok(&["create", "namespace", "demo"]).await.trim(),
        "namespace/demo created"
    );
    let out = kubectl.ok(&["get", "namespace", "demo"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("AGE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("demo") && lines[1].contains("Active"),
        "{out}"
    );
    let again = kubectl.run(&["create", "namespace", "demo"]).await;
    assert!(!again.success);
    assert!(
        again.stderr.contains(r#"namespaces "demo" already exists"#),
        "{}",
        again.stderr
    );
    let ns = sim.get("v1", "Namespace", None, "demo").unwrap();
    assert_eq!(
        managers(&ns),
        [("kubectl-create".to_string(), "Update".to_string())]
    );

    let created = kubectl
        .ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "demo",
            "--from-literal=a.override=k8s_external a.local",
        ])
        .await;
    assert_eq!(created.trim(), "configmap/settings created");
    let cm = sim
        .get("v1", "ConfigMap", Some("demo"), "settings")
        .unwrap();
    assert_eq!(cm["data"]["a.override"], "k8s_external a.local");
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_apply_crd_wait_and_get_with_printer_columns() {
    let sim = start().await;
    let kubectl = with_crd(&sim).await;
    let out = kubectl
        .ok(&[
            "wait",
            "--for=condition=established",
            "crd/appservicelinks.appservicelink.io",
            "--timeout=15s",
        ])
        .await;
    assert_eq!(out.trim(), "customresourcedefinition.apiextensions.k8s.io/appservicelinks.appservicelink.io condition met");

    let link = kubectl.write("link.yaml", LINK);
    let link = link.to_str().unwrap();
    assert_eq!(
        kubectl.ok(&["apply", "-f", link]).await.trim(),
        "appservicelink.appservicelink.io/web created"
    );
    assert_eq!(
        kubectl.ok(&["apply", "-f", link]).await.trim(),
        "appservicelink.appservicelink.io/web unchanged"
    );
    sim.apply_as(
        "appservicelink",
        serde_json::json!({"apiVersion": "appservicelink.io/v1alpha1", "kind": "AppServiceLink", "metadata": {"name": "web"},
                           "status": {"dnsServerIP": "10.240.0.53", "conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap();

    let out = kubectl.ok(&["get", "asl"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "ZONE", "DNS-IP", "READY", "AGE"],
        "{out}"
    );
    assert_eq!(
        lines[1][..4],
        ["web", "mydomain.local", "10.240.0.53", "True"],
        "{out}"
    );
    let zone = kubectl
        .ok(&[
            "get",
            "appservicelink",
            "web",
            "-o",
            "jsonpath={.spec.dns.zone}",
        ])
        .await;
    assert_eq!(zone, "mydomain.local");
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_apply_server_side_and_conflicts() {
    let sim = start().await;
    let kubectl = with_crd(&sim).await;
    let link = kubectl.write("link.yaml", LINK);
    let out = kubectl
        .ok(&["apply", "--server-side", "-f", link.to_str().unwrap()])
        .await;
    assert_eq!(
        out.trim(),
        "appservicelink.appservicelink.io/web serverside-applied"
    );
    let obj = sim
        .get("appservicelink.io/v1alpha1", "AppServiceLink", None, "web")
        .unwrap();
    assert_eq!(
        managers(&obj),
        [("kubectl".to_string(), "Apply".to_string())]
    );

    let svc = kubectl.write("svc.yaml", SERVICE);
    kubectl.ok(&["apply", "-f", svc.to_str().unwrap()]).await;
    kubectl
        .ok(&[
            "patch",
            "svc",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"type":"LoadBalancer"}}"#,
        ])
        .await;
    let cluster_ip = kubectl.write(
        "svc-cip.yaml",
        &SERVICE.replace("spec:\n", "spec:\n  type: ClusterIP\n"),
    );
    let conflict = kubectl
        .run(&["apply", "--server-side", "-f", cluster_ip.to_str().unwrap()])
        .await;
    assert!(!conflict.success);
    assert!(
        conflict.stderr.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .spec.type"#
        ),
        "{}",
        conflict.stderr
    );
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            cluster_ip.to_str().unwrap(),
        ])
        .await;
    let svc = sim.get("v1", "Service", Some("default"), "web").unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(svc["spec"]["ports"][0].get("nodePort").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_apply_refuses_a_resource_violating_a_cel_rule() {
    let sim = start().await;
    let kubectl = with_crd(&sim).await;
    let bad = kubectl.write("bad.yaml", &LINK.replace("mydomain.local", "'Not A Zone!'"));
    let out = kubectl.run(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains(r#"The AppServiceLink "web" is invalid: spec.dns.zone: Invalid value: "string": zone must be a DNS name"#),
        "{}",
        out.stderr
    );
    assert!(sim
        .get("appservicelink.io/v1alpha1", "AppServiceLink", None, "web")
        .is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_label_annotate_patch_describe_service() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    let svc = kubectl.write("svc.yaml", SERVICE);
    assert_eq!(
        kubectl
            .ok(&["apply", "-f", svc.to_str().unwrap()])
            .await
            .trim(),
        "service/web created"
    );
    assert_eq!(
        kubectl
            .ok(&["label", "svc", "web", "appservicelink.io/expose=true"])
            .await
            .trim(),
        "service/web labeled"
    );
    let annotation = "service.beta.kubernetes.io/azure-load-balancer-internal=true";
    assert_eq!(
        kubectl
            .ok(&["annotate", "svc", "web", annotation])
            .await
            .trim(),
        "service/web annotated"
    );
    let patched = kubectl
        .ok(&[
            "patch",
            "svc",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"type":"LoadBalancer"}}"#,
        ])
        .await;
    assert_eq!(patched.trim(), "service/web patched");

    let svc = sim.get("v1", "Service", Some("default"), "web").unwrap();
    assert_eq!(
        owners(
            &svc,
            &["f:metadata", "f:labels", "f:appservicelink.io/expose"]
        ),
        ["kubectl-label"]
    );
    assert_eq!(
        owners(
            &svc,
            &[
                "f:metadata",
                "f:annotations",
                "f:service.beta.kubernetes.io/azure-load-balancer-internal"
            ]
        ),
        ["kubectl-annotate"]
    );
    assert_eq!(owners(&svc, &["f:spec", "f:type"]), ["kubectl-patch"]);

    let ip = eventually("an internal load-balancer IP", || async {
        let out = kubectl
            .ok(&[
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ])
            .await;
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(ip, "10.240.0.4");
    let described = kubectl.ok(&["describe", "svc", "web"]).await;
    for expected in [
        "Labels:",
        "appservicelink.io/expose=true",
        "azure-load-balancer-internal: true",
        "Type:",
        "LoadBalancer",
        "LoadBalancer Ingress:",
        "10.240.0.4",
    ] {
        assert!(
            described.contains(expected),
            "{expected:?} missing from:\n{described}"
        );
    }
    let all = kubectl.ok(&["get", "svc", "-A"]).await;
    let rows: Vec<Vec<&str>> = all
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..5],
        ["default", "web", "LoadBalancer", "10.0.0.10", "10.240.0.4"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_delete_waits_for_finalizers() {
    let sim = start().await;
    let kubectl = with_crd(&sim).await;
    let link = kubectl.write("link.yaml", LINK);
    kubectl.ok(&["apply", "-f", link.to_str().unwrap()]).await;
    kubectl
        .ok(&[
            "patch",
            "asl",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":["appservicelink.io/cleanup"]}}"#,
        ])
        .await;

    let delete = kubectl.spawn(&["delete", "asl", "web", "--timeout=20s"]);
    eventually("the deletionTimestamp", || async {
        let obj = sim.get("appservicelink.io/v1alpha1", "AppServiceLink", None, "web")?;
        obj["metadata"]["deletionTimestamp"].as_str().map(|_| ())
    })
    .await;
    kubectl
        .ok(&[
            "patch",
            "asl",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        ])
        .await;
    let output = tokio::time::timeout(WAIT, delete.wait_with_output())
        .await
        .expect("kubectl delete returns")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"appservicelink.appservicelink.io "web" deleted"#
    );
    assert!(sim
        .get("appservicelink.io/v1alpha1", "AppServiceLink", None, "web")
        .is_none());
    let gone = kubectl.run(&["get", "asl", "web"]).await;
    assert!(
        gone.stderr
            .contains(r#"appservicelinks.appservicelink.io "web" not found"#),
        "{}",
        gone.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn kubectl_rollout_restart_patches_the_pod_template() {
    let sim = start().await;
    let kubectl = Kubectl::new(&sim);
    let deployment = kubectl.write(
        "coredns.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
spec:
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      containers:
      - name: coredns
        image: coredns/coredns:1.11.1
",
    );
    kubectl
        .ok(&["apply", "-f", deployment.to_str().unwrap()])
        .await;
    let out = kubectl
        .ok(&[
            "-n",
            "kube-system",
            "rollout",
            "restart",
            "deployment",
            "coredns",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coredns restarted");
    let deploy = sim
        .get("apps/v1", "Deployment", Some("kube-system"), "coredns")
        .unwrap();
    assert!(deploy["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .is_string());
    assert_eq!(deploy["metadata"]["generation"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "coredns/coredns:1.11.1"
    );
    sim.shutdown().await;
}
