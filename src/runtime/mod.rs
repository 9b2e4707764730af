//! The process around the controller: leader election ([`leader`]), readiness ([`health`]), the
//! Prometheus registry ([`metrics`]), the HTTP endpoints that serve both ([`endpoints`]), and logging
//! ([`telemetry`]). None of it knows about the duties.

pub mod endpoints;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod telemetry;
