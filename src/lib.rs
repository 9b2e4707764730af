//! AppServiceLink: a Kubernetes operator that links Azure App Services to AKS Services privately.
//!
//! The layers, from the bottom up (each imports only from the layers below it):
//! - [`crd`] and [`validation`]: the resource and the controller's own check of it;
//! - [`azure`]: the ARM client and its credentials; [`runtime`]: leader election, health, metrics,
//!   endpoints, logging;
//! - [`error`], [`context`] and [`status`]: what every duty shares;
//! - [`duties`]: one module per duty;
//! - [`reconcile`]: the pipeline (validate, the duties, status) and the finalizer;
//! - [`controller`]: the watches that trigger it.
//!
//! ARCHITECTURE.md walks through it.

pub mod azure;
pub mod cache;
pub mod context;
pub mod controller;
pub mod crd;
pub mod duties;
pub mod error;
pub mod reconcile;
pub mod runtime;
pub mod status;
pub mod validation;
