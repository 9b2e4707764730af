//! A Service as teams deploy them, for the scale benchmark (`benches/scale.rs`) and the memory
//! check (`tests/e2e/scale.rs`), which must measure the same objects.

use serde_json::{json, Value};

/// A Service as teams deploy them: recommended labels, a selector, ports, the annotation kubectl's
/// client-side apply keeps, and managedFields from two managers (kubectl, then a GitOps tool adding
/// its tracking label). Selected Services (`label`) have one port, so that 2,000 of them fit the
/// default NodePort range once converted; the others two.
pub fn realistic_service(
    namespace: &str,
    name: &str,
    label: Option<(&str, &str)>,
) -> (Value, Value) {
    let mut labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": format!("{name}-prod"),
        "app.kubernetes.io/component": "backend",
        "app.kubernetes.io/part-of": namespace,
        "app.kubernetes.io/version": "1.27.3",
        "app.kubernetes.io/managed-by": "kubectl",
    });
    let mut ports =
        vec![json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"})];
    match label {
        Some((key, value)) => {
            labels[key] = json!(value);
        }
        None => ports.push(
            json!({"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}),
        ),
    }
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "contoso.com/owner": format!("team-{namespace}@contoso.com"),
            },
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": format!("{name}-prod")},
            "ports": ports,
            "sessionAffinity": "None",
        },
    });
    // kubectl apply (client-side) stores what it applied, without this annotation, as JSON.
    let applied = serde_json::to_string(&svc).unwrap() + "\n";
    svc["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(applied);
    let gitops = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"argocd.argoproj.io/instance": format!("{namespace}-apps")},
            "annotations": {"argocd.argoproj.io/tracking-id": format!("{namespace}-apps:/Service:{namespace}/{name}")},
        },
    });
    (svc, gitops)
}
