//! The link's status: one condition per duty, `Ready` as their summary, and the kstatus conditions
//! `Reconciling` and `Stalled` while they are true.
//!
//! Timestamps move only when a condition flips, so a quiet reconcile computes a status equal to the
//! one already stored and writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    AppServiceLinkStatus, AppServiceStatus, LinkedServiceState, LinkedServiceStatus, ServiceCounts,
};

/// Condition types, one per duty.
pub mod types {
    /// Summary of all duties.
    pub const READY: &str = "Ready";
    /// Duty 1: Services are internal load balancers.
    pub const SERVICES: &str = "ServicesReady";
    /// Duty 2: the DNS Service has its IP.
    pub const DNS_SERVICE: &str = "DnsServiceReady";
    /// Duty 3: the CoreDNS override serves the link's zone.
    pub const COREDNS_OVERRIDE: &str = "CoreDNSOverrideReady";
    /// Duty 4: App Services point at the DNS Service.
    pub const APP_SERVICES: &str = "AppServicesReady";
    /// Duty 5: every linked Service's name resolves to its internal IP through the DNS Service
    /// (absent when the check is off).
    pub const NAMES: &str = "NamesResolve";
    /// kstatus: the operator is still working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: the operator cannot make progress without a human.
    pub const STALLED: &str = "Stalled";
}

/// Where one duty stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutyStatus {
    /// The duty's condition type.
    pub condition_type: &'static str,
    /// Whether the duty is done.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What a human should know, or do.
    pub message: String,
    /// When not ready: true if it will get there by itself (waiting for an IP), false if a human
    /// must act (a conflict, a refused input).
    pub progressing: bool,
}

impl DutyStatus {
    /// A duty that is done.
    pub fn ready(condition_type: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            condition_type,
            ready: true,
            reason: reason.into(),
            message: message.into(),
            progressing: false,
        }
    }

    /// A duty that will be done once something outside the operator happens (e.g. an IP arrives).
    pub fn waiting(condition_type: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            progressing: true,
            ..Self::ready(condition_type, reason, message)
        }
    }

    /// A duty that needs a human: a conflict or a refused input.
    pub fn blocked(condition_type: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            ..Self::ready(condition_type, reason, message)
        }
    }
}

/// The conditions for these duty results, keeping each unchanged condition's `lastTransitionTime`
/// from `existing`.
pub fn conditions(
    duties: &[DutyStatus],
    generation: Option<i64>,
    existing: &[Condition],
    now: Timestamp,
) -> Vec<Condition> {
    let not_ready: Vec<&DutyStatus> = duties.iter().filter(|d| !d.ready).collect();
    let summary = match not_ready.first() {
        None => DutyStatus::ready(types::READY, "Reconciled", "all duties are done"),
        Some(first) => DutyStatus {
            condition_type: types::READY,
            ready: false,
            reason: first.reason.clone(),
            message: not_ready
                .iter()
                .map(|d| format!("{}: {}", d.condition_type, d.message))
                .collect::<Vec<_>>()
                .join("; "),
            progressing: not_ready.iter().all(|d| d.progressing),
        },
    };
    let mut out: Vec<Condition> = std::iter::once(&summary)
        .chain(duties.iter())
        .map(|d| {
            condition(
                d.condition_type,
                d.ready,
                &d.reason,
                &d.message,
                generation,
                existing,
                now,
            )
        })
        .collect();
    if let Some(waiting) = not_ready.iter().find(|d| d.progressing) {
        out.push(condition(
            types::RECONCILING,
            true,
            &waiting.reason,
            &waiting.message,
            generation,
            existing,
            now,
        ));
    }
    if let Some(stuck) = not_ready.iter().find(|d| !d.progressing) {
        out.push(condition(
            types::STALLED,
            true,
            &stuck.reason,
            &stuck.message,
            generation,
            existing,
            now,
        ));
    }
    out
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    existing: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    let last_transition_time = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// What the duties observed, for status.
#[derive(Debug, Default)]
pub struct Observed {
    /// One entry per selected Service.
    pub services: Vec<LinkedServiceStatus>,
    /// One entry per App Service.
    pub app_services: Vec<AppServiceStatus>,
    /// The DNS Service's IP, once assigned.
    pub dns_server_ip: Option<String>,
}

/// The whole status for a link.
pub fn build(
    duties: &[DutyStatus],
    observed: Observed,
    generation: Option<i64>,
    existing: Option<&AppServiceLinkStatus>,
    now: Timestamp,
) -> AppServiceLinkStatus {
    let existing_conditions = existing
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (services, service_counts) = bounded(observed.services);
    AppServiceLinkStatus {
        observed_generation: generation,
        conditions: conditions(duties, generation, existing_conditions, now),
        dns_server_ip: observed.dns_server_ip,
        linked_service_count: service_counts.linked,
        services,
        service_counts: Some(service_counts),
        app_services: observed.app_services,
    }
}

/// At most this many entries in `status.services`: at about 300 bytes each, far under etcd's 1.5 MiB
/// request limit whatever the link selects.
pub const MAX_SERVICE_ENTRIES: usize = 200;

/// The entries to list, problems first and at most [`MAX_SERVICE_ENTRIES`], and the counts of all.
/// Within each rank the order stays as given (by namespace and name).
pub fn bounded(
    mut services: Vec<LinkedServiceStatus>,
) -> (Vec<LinkedServiceStatus>, ServiceCounts) {
    let count = |state| services.iter().filter(|s| s.state == state).count() as i32;
    let mut counts = ServiceCounts {
        linked: count(LinkedServiceState::Linked),
        pending: count(LinkedServiceState::Pending),
        skipped: count(LinkedServiceState::Skipped),
        conflict: count(LinkedServiceState::Conflict),
        failed: count(LinkedServiceState::Failed),
        omitted: 0,
    };
    // Entries that carry something to act on, or a count to keep (reverts decay from the entry).
    let rank = |s: &LinkedServiceStatus| match s.state {
        LinkedServiceState::Failed => 0,
        LinkedServiceState::Conflict => 1,
        LinkedServiceState::Skipped => 2,
        LinkedServiceState::Pending => 3,
        LinkedServiceState::Linked if s.name_resolves == Some(false) || s.reverts > 0 => 4,
        LinkedServiceState::Linked => 5,
    };
    services.sort_by_key(rank);
    if services.len() > MAX_SERVICE_ENTRIES {
        counts.omitted = (services.len() - MAX_SERVICE_ENTRIES) as i32;
        services.truncate(MAX_SERVICE_ENTRIES);
    }
    (services, counts)
}

/// Conditions and per-Service states that newly need a human, as (reason, message): each becomes a
/// Warning Event once, when it appears, not on every reconcile.
pub fn new_problems(
    old: Option<&AppServiceLinkStatus>,
    new: &AppServiceLinkStatus,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let stalled = |s: &AppServiceLinkStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::STALLED)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    for c in new.conditions.iter().filter(|c| {
        c.type_ != types::READY && c.type_ != types::STALLED && c.type_ != types::RECONCILING
    }) {
        let was = old.and_then(|o| o.conditions.iter().find(|x| x.type_ == c.type_));
        let changed = was.is_none_or(|w| w.status != c.status || w.reason != c.reason);
        let stuck =
            c.status == "False" && stalled(new).is_some_and(|(reason, _)| reason == c.reason);
        // Names that resolved and stopped: worth an Event even though it may pass by itself.
        let stopped_resolving = c.type_ == types::NAMES
            && c.status == "False"
            && was.is_some_and(|w| w.status == "True");
        if changed && (stuck || stopped_resolving) {
            problems.push((c.reason.clone(), c.message.clone()));
        }
    }
    for s in new.services.iter().filter(|s| {
        matches!(
            s.state,
            LinkedServiceState::Conflict | LinkedServiceState::Skipped
        )
    }) {
        let was = old.and_then(|o| {
            o.services
                .iter()
                .find(|x| x.namespace == s.namespace && x.name == s.name)
        });
        if was.is_none_or(|w| w.state != s.state || w.message != s.message) {
            let reason = if s.state == LinkedServiceState::Conflict {
                "ServiceConflict"
            } else {
                "ServiceSkipped"
            };
            problems.push((
                reason.into(),
                format!(
                    "Service {}/{}: {}",
                    s.namespace,
                    s.name,
                    s.message.clone().unwrap_or_default()
                ),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests;

/// A revert count as it stands at `now`: reverts more than `window` after the last one start a new
/// count, so the operator stops re-applying only for a writer that keeps fighting it, not for
/// changes far apart (a `helm upgrade`, a Terraform apply). Returns the count and its time.
pub fn decayed_reverts(
    reverts: i32,
    last: Option<&Time>,
    window: std::time::Duration,
    now: Timestamp,
) -> (i32, Option<Time>) {
    let expired = last.is_some_and(|t| {
        now.duration_since(t.0)
            .try_into()
            .is_ok_and(|elapsed: std::time::Duration| elapsed > window)
    });
    if expired {
        (0, None)
    } else {
        (reverts, last.cloned())
    }
}
