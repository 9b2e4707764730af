//! The duties, one module each, each built the same way: desired state from the spec (pure
//! builders, unit-tested without a client), then apply, then the observed state for status.
//!
//! - [`service_link`]: selected Services become internal Azure load balancers;
//! - [`dns_service`]: CoreDNS exposed on an internal load balancer in `kube-system`;
//! - [`corefile`]: the `k8s_external` override in `kube-system/coredns-custom`, or in dedicated
//!   mode [`dedicated_dns`]: the operator's own CoreDNS, which touches nothing in `kube-system`;
//! - [`app_service`]: App Services pointed at the DNS Service;
//! - [`names`]: the linked Services' names really resolve through the DNS Service.
//!
//! [`load_balancer`] holds what the two Service duties share. Duties depend on the layers below
//! ([`crate::context`], [`crate::status`], [`crate::azure`]), never on the pipeline that calls them.

pub mod app_service;
pub mod corefile;
pub mod dedicated_dns;
pub mod dns_service;
pub mod load_balancer;
pub mod names;
pub mod service_link;
