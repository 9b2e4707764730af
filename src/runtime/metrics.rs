//! Prometheus metrics: one registry, every name prefixed `appservicelink_`, served on `/metrics` in
//! the OpenMetrics text format (which Prometheus scrapes natively).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::azure::arm::Operation;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    operation: &'static str,
    code: String,
}

/// The operator's metrics. Shared by the controller's `Context`, the ARM client's observer and the
/// HTTP endpoints.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
    arm_requests: Family<ArmLabels, Counter>,
    arm_rate_limit_wait: Family<KindLabels, Counter<f64, AtomicU64>>,
    leader: Gauge,
    in_sync: Arc<InSyncTimes>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered and nothing counted yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("appservicelink");
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Reconciles of AppServiceLinks, by result",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            reconcile_errors.clone(),
        );
        // Reconciles wait on ARM, whose retries back off for up to 10 s per call.
        let reconcile_duration = Histogram::new([
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let arm_requests = Family::default();
        registry.register(
            "arm_requests",
            "Azure Resource Manager requests, by operation and HTTP status (code \"none\" when no response arrived)",
            arm_requests.clone(),
        );
        let arm_rate_limit_wait = Family::default();
        registry.register(
            "arm_rate_limit_wait_seconds",
            "Time ARM requests waited for the client's own rate limit, by request kind (read, write, delete)",
            arm_rate_limit_wait.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica runs the controller (holds the leader Lease), 0 on a standby",
            leader.clone(),
        );
        let in_sync = Arc::new(InSyncTimes::default());
        registry.register_collector(Box::new(in_sync.clone()));
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            arm_requests,
            arm_rate_limit_wait,
            leader,
            in_sync,
        }
    }

    /// Counts one reconcile that took `duration`; `error_reason` is the failure's category.
    pub fn reconciled(&self, duration: Duration, error_reason: Option<&'static str>) {
        self.reconcile_duration.observe(duration.as_secs_f64());
        let result = if error_reason.is_some() {
            "error"
        } else {
            "success"
        };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(reason) = error_reason {
            self.reconcile_errors
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Counts one ARM request; `status` is 0 when no response arrived (connection, TLS, timeout).
    pub fn arm_request(&self, operation: Operation, status: u16) {
        let code = match status {
            0 => "none".to_string(),
            code => code.to_string(),
        };
        self.arm_requests
            .get_or_create(&ArmLabels {
                operation: operation.name(),
                code,
            })
            .inc();
    }

    /// Adds the time one ARM request of `kind` waited for the client's rate limit.
    pub fn arm_rate_limit_wait(&self, kind: &'static str, waited: Duration) {
        self.arm_rate_limit_wait
            .get_or_create(&KindLabels { kind })
            .inc_by(waited.as_secs_f64());
    }

    /// Records whether this replica runs the controller.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records that the App Service `resource_id` was just confirmed in sync.
    pub fn app_service_in_sync(&self, resource_id: &str) {
        self.in_sync
            .lock()
            .insert(resource_id.to_string(), Instant::now());
    }

    /// Stops reporting an App Service no link names any more.
    pub fn forget_app_service(&self, resource_id: &str) {
        self.in_sync.lock().remove(resource_id);
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// When each App Service was last confirmed in sync; reported as an age at scrape time, so an
/// alert can fire on a target that has not been confirmed for a while.
#[derive(Debug, Default)]
struct InSyncTimes(Mutex<HashMap<String, Instant>>);

impl InSyncTimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().expect("in-sync times")
    }
}

impl Collector for InSyncTimes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "app_service_seconds_since_in_sync",
            "Seconds since the App Service was last confirmed to use the DNS Service.",
            None,
            MetricType::Gauge,
        )?;
        let mut times: Vec<(String, Instant)> =
            self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        times.sort();
        for (resource_id, at) in times {
            let labels = [("resource_id", resource_id.as_str())];
            ConstGauge::new(at.elapsed().as_secs_f64()).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
