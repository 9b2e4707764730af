//! AppServiceLink: a Kubernetes operator that links Azure App Services to AKS Services privately.
//!
//! One module per duty, each built the same way (desired state from the spec, then apply, then the
//! observed state for status):
//! - [`service_link`]: selected Services become internal Azure load balancers;
//! - [`dns_service`]: CoreDNS exposed on an internal load balancer in `kube-system`;
//! - [`corefile`]: the `k8s_external` override in `kube-system/coredns-custom`;
//! - [`app_service`]: App Services pointed at the DNS Service.
//!
//! [`controller`] wires the watches and calls the duties; [`crd`] and [`validation`] define and
//! check the resource. [`leader`] lets one replica of several run the controller; [`endpoints`]
//! serves [`health`] and [`metrics`] over HTTP.

pub mod app_service;
pub mod arm;
pub mod azure_auth;
pub mod controller;
pub mod corefile;
pub mod crd;
pub mod dns_service;
pub mod endpoints;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod sandbox;
pub mod service_link;
pub mod status;
pub mod telemetry;
pub mod validation;
