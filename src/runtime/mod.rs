//! The process around the controller: leader election ([`leader`]), readiness ([`health`]), the
//! Prometheus registry ([`metrics`]), the HTTP endpoints that serve both ([`endpoints`]), and logging
//! ([`telemetry`]), giving freed memory back ([`memory`]), and the crash points of the fault suite ([`crash_points`]). None of it knows about
//! the duties.

pub mod crash_points;
pub mod endpoints;
pub mod health;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod telemetry;
