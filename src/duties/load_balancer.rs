//! What the two Service duties share: Azure's load-balancer annotations, a Service's load-balancer
//! IP, and the label that marks the Services the operator created.

use k8s_openapi::api::core::v1::Service;

/// Makes the Azure load balancer internal (cloud-provider-azure).
pub const ANNOTATION_INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
/// Places the internal load balancer's frontend in this subnet (a subnet name, cloud-provider-azure).
pub const ANNOTATION_SUBNET: &str =
    "service.beta.kubernetes.io/azure-load-balancer-internal-subnet";
/// Sets a static private frontend IP (cloud-provider-azure; `spec.loadBalancerIP` is deprecated since 1.24).
pub const ANNOTATION_IPV4: &str = "service.beta.kubernetes.io/azure-load-balancer-ipv4";
/// Label that marks a Service as ours, so a Service we did not create is never taken over.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "appservicelink";

/// True when the object was created by the operator (a DNS Service, the dedicated CoreDNS's).
pub fn is_ours<K: kube::Resource>(object: &K) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

/// The IP Azure assigned to the Service's load balancer, once it has.
pub fn load_balancer_ip(svc: &Service) -> Option<String> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|ingress| ingress.ip.clone())
}

/// Reason of the Warning Event cloud-provider-azure's service controller records on a Service for
/// each failed attempt to provision its load balancer (a static IP taken, a missing subnet, a quota).
pub const PROVISIONING_FAILED: &str = "SyncLoadBalancerFailed";

/// The cloud controller's latest [`PROVISIONING_FAILED`] message for each Service of `namespace`
/// that `pending` names (by uid), when it is newer than the last change `manager` made to that
/// Service: an older one was about settings that are gone. Reading Events is best effort: when
/// they cannot be listed, the Services just stay "waiting".
pub async fn provisioning_failures(
    client: &kube::Client,
    namespace: &str,
    pending: &[&Service],
    manager: &str,
) -> std::collections::HashMap<String, String> {
    use k8s_openapi::api::core::v1::Event;
    let mut failures = std::collections::HashMap::new();
    if pending.is_empty() {
        return failures;
    }
    let params = kube::api::ListParams::default()
        .fields(&format!("reason={PROVISIONING_FAILED},type=Warning"));
    let events = match kube::Api::<Event>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
    {
        Ok(events) => events.items,
        Err(err) => {
            tracing::debug!(namespace, error = %err, "could not read the cloud controller's Events");
            return failures;
        }
    };
    for svc in pending {
        let Some(uid) = svc.metadata.uid.as_deref() else {
            continue;
        };
        let changed = last_change_by(svc, manager);
        let latest = events
            .iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
            .filter_map(|e| Some((e.last_timestamp.as_ref()?.0, e.message.clone()?)))
            .filter(|(at, _)| changed.is_none_or(|changed| *at >= changed))
            .max_by_key(|(at, _)| *at);
        if let Some((_, message)) = latest {
            failures.insert(uid.to_string(), message);
        }
    }
    failures
}

/// When `manager` last changed the Service, from its managedFields (second precision, as the
/// apiserver records it).
fn last_change_by(svc: &Service, manager: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    svc.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}
