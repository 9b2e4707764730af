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

/// True when the Service was created by the operator (a DNS Service).
pub fn is_ours(svc: &Service) -> bool {
    svc.metadata
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
