//! End-to-end scenarios: the real operator binary against the simulated Kubernetes API server,
//! driven with kubectl as a user would.

mod app_services;
mod arm_fidelity;
mod dedicated;
mod dns_safety;
mod dry_run;
mod faults;
mod fidelity;
mod harness;
mod names;
mod pinning;
mod runtime;
mod sandbox;
mod scale;
mod scenarios;
#[path = "../support/services.rs"]
mod services_fixture;
mod teardown;
mod trust;
