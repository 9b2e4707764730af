//! The reconcile pipeline: validate the link, run the four duties, write the status, all behind the
//! finalizer that undoes them on deletion.
//!
//! [`crate::controller`] decides when a link is reconciled; this module decides what a reconcile
//! does. Each duty reports its own typed error; [`Error`] carries it with the condition it belongs to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::context::{Config, Context};
use crate::crd::AppServiceLink;
use crate::duties::{app_service, corefile, dedicated_dns, dns_service, names, service_link};
use crate::error::KubeError;
use crate::runtime::crash_points;
use crate::status::{self, types, DutyStatus, Observed};
use crate::validation;

/// Finalizer that keeps a link until everything it changed is undone.
pub const FINALIZER: &str = "appservicelink.io/cleanup";
/// How soon a link waiting for a load balancer is reconciled again.
const PENDING_RECHECK: Duration = Duration::from_secs(10);
/// Field manager for status writes.
const STATUS_FIELD_MANAGER: &str = "appservicelink-status";

/// Why one reconcile stopped; the link is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Service conversion failed.
    #[error(transparent)]
    ServiceLink(#[from] service_link::Error),
    /// The DNS Service could not be written or removed.
    #[error(transparent)]
    DnsService(#[from] dns_service::Error),
    /// The CoreDNS override could not be written, or CoreDNS not rolled.
    #[error(transparent)]
    Corefile(#[from] corefile::Error),
    /// The dedicated CoreDNS could not be written (dedicated mode).
    #[error(transparent)]
    DedicatedDns(#[from] dedicated_dns::Error),
    /// App Services could not be restored; the link keeps its finalizer until they are.
    #[error(transparent)]
    AppService(#[from] app_service::Error),
    /// The names could not be checked at all.
    #[error(transparent)]
    Names(#[from] names::Error),
    /// The link's status could not be written.
    #[error(transparent)]
    Status(KubeError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Self::ServiceLink(e) => e.category(),
            Self::DnsService(e) => e.category(),
            Self::Corefile(e) => e.category(),
            Self::DedicatedDns(e) => e.category(),
            Self::AppService(e) => e.category(),
            Self::Names(e) => e.category(),
            Self::Status(e) => e.category(),
            Self::Finalizer(err) => match err.as_ref() {
                Finalizer::ApplyFailed(err) | Finalizer::CleanupFailed(err) => err.category(),
                _ => "Finalizer",
            },
        }
    }

    /// The condition of the duty that failed, with what the apiserver answered and what to do.
    pub fn duty_status(&self) -> DutyStatus {
        let (condition, reason) = self.condition();
        let message = format!("{self}; {}", self.advice());
        if self.needs_human() {
            DutyStatus::blocked(condition, reason, message)
        } else {
            DutyStatus::waiting(condition, reason, message)
        }
    }

    fn kube(&self) -> Option<&KubeError> {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Self::ServiceLink(
                service_link::Error::Convert(e) | service_link::Error::Restore(e),
            )
            | Self::DnsService(dns_service::Error::Apply(e) | dns_service::Error::Delete(e))
            | Self::Corefile(corefile::Error::Override(e) | corefile::Error::Restart(e))
            | Self::DedicatedDns(dedicated_dns::Error::Apply(e))
            | Self::Status(e) => Some(e),
            Self::AppService(_) | Self::Names(_) => None,
            Self::Finalizer(err) => match err.as_ref() {
                Finalizer::ApplyFailed(err) | Finalizer::CleanupFailed(err) => err.kube(),
                _ => None,
            },
        }
    }

    fn needs_human(&self) -> bool {
        match self {
            Self::AppService(e) => e.needs_human(),
            _ => self.kube().is_some_and(KubeError::needs_human),
        }
    }

    fn advice(&self) -> &'static str {
        self.kube()
            .map_or("retrying with backoff", KubeError::advice)
    }

    /// The status condition the failure belongs to, and the reason it gives.
    pub fn condition(&self) -> (&'static str, &'static str) {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Self::ServiceLink(e) => (types::SERVICES, e.reason()),
            Self::DnsService(e) => (types::DNS_SERVICE, e.reason()),
            Self::Corefile(e) => (types::COREDNS_OVERRIDE, e.reason()),
            Self::DedicatedDns(e) => (types::COREDNS_OVERRIDE, e.reason()),
            Self::AppService(e) => (types::APP_SERVICES, e.reason()),
            Self::Names(e) => (types::NAMES, e.reason()),
            Self::Status(_) => (types::READY, "StatusWriteFailed"),
            Self::Finalizer(err) => match err.as_ref() {
                Finalizer::ApplyFailed(err) | Finalizer::CleanupFailed(err) => err.condition(),
                _ => (types::READY, "FinalizerFailed"),
            },
        }
    }
}

/// The pipeline's shared state: the duties' context, and what the pipeline itself keeps between
/// reconciles.
pub struct Pipeline {
    /// What the duties are given.
    pub ctx: Context,
    /// Serialises the cluster-wide duties (DNS Service, CoreDNS override), which every link
    /// computes from all links, and keeps what serving the zones last came to.
    cluster_wide: tokio::sync::Mutex<ZonesServed>,
    /// Consecutive failures per link, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Wakes links whose status the shared zones duty changed.
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<AppServiceLink>>,
}

impl Pipeline {
    /// A pipeline over `ctx`; `wake` reconciles the links sent to it.
    pub fn new(
        ctx: Context,
        wake: futures::channel::mpsc::UnboundedSender<ObjectRef<AppServiceLink>>,
    ) -> Self {
        Self {
            ctx,
            cluster_wide: tokio::sync::Mutex::new(ZonesServed::default()),
            failures: Mutex::new(HashMap::new()),
            wake,
        }
    }
}

/// What serving the zones came to, and from what: the zones and the versions of the objects the
/// duty read. The same inputs give the same outcome, so it is computed once per change (or per
/// resync, for drift), not once per link.
#[derive(Default)]
pub struct ZonesServed {
    last: Option<(ZonesInputs, Instant, DutyStatus)>,
    /// Someone else changed the ConfigMap while the duty wrote it: the next pass computes again,
    /// whatever the versions say.
    look_again: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ZonesInputs {
    zones: Vec<String>,
    version: Option<String>,
}

impl ZonesInputs {
    fn now(ctx: &Context) -> Self {
        let mut zones: Vec<String> = ctx
            .valid_links()
            .iter()
            .map(|l| l.spec.dns.zone.clone())
            .collect();
        zones.sort();
        zones.dedup();
        // The Corefile and CoreDNS's Deployment are read when the duty runs; their changes are
        // picked up at the resync.
        let (namespace, name) = zones_configmap(&ctx.config);
        let version = ctx
            .zones_configmap(namespace, name)
            .and_then(|c| c.metadata.resource_version.clone());
        Self { zones, version }
    }
}

/// The ConfigMap the zones are written to, as (namespace, name): `kube-system/coredns-custom`, or
/// in dedicated mode the dedicated CoreDNS's own (nothing in kube-system is read or written then).
pub fn zones_configmap(config: &Config) -> (&str, &str) {
    match &config.dedicated_dns {
        Some(d) => (d.namespace.as_str(), dedicated_dns::NAME),
        None => (corefile::NAMESPACE, corefile::CONFIGMAP),
    }
}

/// The link that serves the zones when their ConfigMaps or CoreDNS changed: the first valid link
/// by name (an invalid one does not run the duties).
pub fn zones_owner(ctx: &Context) -> Option<ObjectRef<AppServiceLink>> {
    ctx.valid_links()
        .first()
        .map(|l| ObjectRef::from_obj(l.as_ref()))
}

/// Reconciles one link, and counts it in the metrics.
pub async fn reconcile(
    link: Arc<AppServiceLink>,
    pipeline: Arc<Pipeline>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_link(link, &pipeline).await;
    pipeline.ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_link(link: Arc<AppServiceLink>, pipeline: &Pipeline) -> Result<Action, Error> {
    let ctx = &pipeline.ctx;
    // Deciding on a partial view could, say, restore a Service only because it was not listed yet.
    ctx.health.caches_synced().await;
    // Its status as last written, even before the watch delivers it.
    let link = ctx.link(&link);
    let api = Api::<AppServiceLink>::all(ctx.client.clone());
    let name = link.name_any();
    if ctx.config.dry_run {
        // Adding a finalizer would change the link, so dry-run mode reports what it would do for
        // live links and leaves deletion alone.
        return match link.meta().deletion_timestamp {
            None => apply(&link, pipeline).await,
            Some(_) => Ok(Action::await_change()),
        };
    }
    let result = finalizer(&api, FINALIZER, link, |event| async {
        match event {
            Event::Apply(link) => apply(&link, pipeline).await,
            Event::Cleanup(link) => cleanup(&link, pipeline).await,
        }
    })
    .await;
    let result = match result {
        // An earlier pass already removed the finalizer and the link is gone; the watch had not said
        // so yet when this pass started (reconciles read their own writes and are not debounced).
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(e))
            if crate::error::is_not_found(&e) =>
        {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    if result.is_ok() {
        // The map is only locked for these one-line updates, which cannot panic.
        pipeline
            .failures
            .lock()
            .expect("failure counts")
            .remove(&name);
    }
    result
}

/// Retries a failed link with exponential backoff, from 2 s up to 5 minutes.
pub fn error_policy(link: Arc<AppServiceLink>, err: &Error, pipeline: Arc<Pipeline>) -> Action {
    let mut failures = pipeline.failures.lock().expect("failure counts");
    let count = failures.entry(link.name_any()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count).min(8)).min(Duration::from_secs(300));
    let (condition, reason) = err.condition();
    warn!(link = %link.name_any(), error = %err, condition, reason, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The Apply arm: validate, run the duties, write the status.
async fn apply(link: &AppServiceLink, pipeline: &Pipeline) -> Result<Action, Error> {
    let ctx = &pipeline.ctx;
    let errors = validation::validate(&link.spec, &ctx.config.cluster_domain);
    if !errors.is_empty() {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let duty = DutyStatus::blocked(types::SERVICES, "InvalidSpec", message);
        let invalid: Vec<DutyStatus> = duty_types(&ctx.config)
            .into_iter()
            .map(|t| DutyStatus {
                condition_type: t,
                ..duty.clone()
            })
            .collect();
        // Keep the record of App Service settings to restore: an invalid spec changes nothing else.
        let kept = Observed {
            app_services: link
                .status
                .as_ref()
                .map(|s| s.app_services.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        write_status(link, ctx, &invalid, kept).await?;
        return Ok(Action::await_change());
    }
    // The duties do not stop one another: each failure is its own condition, and the App Service
    // duty runs whenever the DNS Service's IP is known.
    let mut failures: Vec<Error> = Vec::new();
    let services = service_link::reconcile(ctx, link).await;
    failures.extend(services.failures.into_iter().map(Error::from));
    let (dns, corefile) = {
        let mut served = pipeline.cluster_wide.lock().await;
        (
            dns_service::reconcile(ctx, link).await,
            serve_zones_once(pipeline, &mut served, link).await,
        )
    };
    let mut dns = dns.unwrap_or_else(|err| {
        let err = Error::from(err);
        let outcome = dns_service::DnsOutcome {
            duty: err.duty_status(),
            server_ip: dns_service::observed_ip(ctx, link),
        };
        failures.push(err);
        outcome
    });
    let corefile = corefile.unwrap_or_else(|err| {
        let duty = err.duty_status();
        failures.push(err);
        duty
    });
    // The names are asked for once the override is written, beside the App Service duty (whose
    // ARM calls take longer), so neither waits for the other.
    let check_names = async {
        if ctx.config.check_names {
            Some(names::reconcile(&services.entries, dns.server_ip.as_deref()).await)
        } else {
            None
        }
    };
    let (app_services, names) = tokio::join!(
        app_service::reconcile(ctx, link, dns.server_ip.as_deref()),
        check_names
    );
    let mut service_entries = services.entries;
    let names = names.map(|result| match result {
        Ok(outcome) => {
            names::record(&mut service_entries, &outcome.checks);
            outcome.duty
        }
        Err(err) => {
            let err = Error::from(err);
            let duty = err.duty_status();
            failures.push(err);
            duty
        }
    });
    {
        // Only now that the App Services moved may an old DNS Service (a rename) go.
        let _cluster_wide = pipeline.cluster_wide.lock().await;
        if let Err(err) = dns_service::collect_unused(ctx, link, Some(&app_services.entries)).await
        {
            let err = Error::from(err);
            dns.duty = err.duty_status();
            failures.push(err);
        }
    }
    let mut retry = app_services
        .retry_after
        .unwrap_or(ctx.config.resync)
        .min(ctx.config.resync);
    // A load balancer still coming: look again soon, so that a failure the cloud controller reports
    // only in an Event (which wakes nothing) reaches status.
    if dns.server_ip.is_none()
        || service_entries
            .iter()
            .any(|e| e.state == crate::crd::LinkedServiceState::Pending)
    {
        retry = retry.min(PENDING_RECHECK);
    }
    if names.as_ref().is_some_and(|n| !n.ready) {
        // CoreDNS may still be loading the override: look again soon, not only at the resync.
        retry = retry.min(names::RECHECK);
    }
    let mut duties = vec![services.duty, dns.duty, corefile, app_services.duty];
    duties.extend(names);
    let observed = Observed {
        services: service_entries,
        app_services: app_services.entries,
        dns_server_ip: dns.server_ip,
    };
    write_status(link, ctx, &duties, observed).await?;
    // A failed duty is retried with backoff, its condition already written.
    match failures.into_iter().next() {
        Some(err) => Err(err),
        None => Ok(Action::requeue(retry)),
    }
}

/// Duty 3 for a live link: computed again only when its inputs changed or the last computation is
/// a resync old; when the outcome changed, the other links are woken to report it.
async fn serve_zones_once(
    pipeline: &Pipeline,
    served: &mut ZonesServed,
    link: &AppServiceLink,
) -> Result<DutyStatus, Error> {
    let ctx = &pipeline.ctx;
    let inputs = ZonesInputs::now(ctx);
    if let Some((seen, at, duty)) = &served.last {
        if *seen == inputs && at.elapsed() < ctx.config.resync && !served.look_again {
            return Ok(duty.clone());
        }
    }
    let previous = served.last.take().map(|(_, _, duty)| duty);
    let duty = serve_zones(pipeline, served, Some(link)).await?;
    if previous.as_ref().is_some_and(|p| *p != duty) {
        for other in ctx.valid_links() {
            if other.name_any() != link.name_any() {
                // The receiver lives as long as the controller; a send fails only at shutdown.
                let _ = pipeline
                    .wake
                    .unbounded_send(ObjectRef::from_obj(other.as_ref()));
            }
        }
    }
    // The zones as they were before the duty ran (a link created meanwhile is not in what it
    // wrote, so its reconcile must run the duty again), with the ConfigMap's version after it (its
    // own write changed that).
    let written = ZonesInputs {
        zones: inputs.zones,
        version: ZonesInputs::now(ctx).version,
    };
    served.last = Some((written, Instant::now(), duty.clone()));
    Ok(duty)
}

/// Duty 3: the zones served by the cluster's CoreDNS (the `coredns-custom` override) or, in
/// dedicated mode, by the operator's own CoreDNS. `served.look_again` says whether someone else
/// changed their ConfigMap meanwhile ([`changed_meanwhile`]).
async fn serve_zones(
    pipeline: &Pipeline,
    served: &mut ZonesServed,
    link: Option<&AppServiceLink>,
) -> Result<DutyStatus, Error> {
    let ctx = &pipeline.ctx;
    let result = match &ctx.config.dedicated_dns {
        None => corefile::reconcile(ctx, link).await.map_err(Error::from),
        Some(dedicated) => dedicated_dns::reconcile(ctx, dedicated, link)
            .await
            .map_err(Error::from),
    };
    served.look_again = changed_meanwhile(pipeline);
    result
}

/// Whether someone else changed the zones' ConfigMap while the duty was writing it. Its watch
/// event was held back, as it could have been the write's own echo (`context::Written::writing`),
/// so the zones' owner is woken to look again.
fn changed_meanwhile(pipeline: &Pipeline) -> bool {
    let ctx = &pipeline.ctx;
    let (namespace, name) = zones_configmap(&ctx.config);
    let missed = ctx
        .own
        .configmaps
        .take_missed(&ObjectRef::new(name).within(namespace));
    if missed {
        if let Some(owner) = zones_owner(ctx) {
            // The receiver lives as long as the controller; a send fails only at shutdown.
            let _ = pipeline.wake.unbounded_send(owner);
        }
    }
    missed
}

/// The Cleanup arm: undo everything the link did, App Services first. Until they are restored (an
/// ARM outage, a missing role) nothing else is removed, so an App Service is never left pointing at
/// a DNS Service the operator deleted; with `deletionPolicy: Retain` the DNS Service is kept for them.
async fn cleanup(link: &AppServiceLink, pipeline: &Pipeline) -> Result<Action, Error> {
    let result = undo(link, pipeline).await;
    if let Err(err) = &result {
        report_cleanup_failure(link, &pipeline.ctx, err).await;
    }
    result
}

async fn undo(link: &AppServiceLink, pipeline: &Pipeline) -> Result<Action, Error> {
    let ctx = &pipeline.ctx;
    info!(link = %link.name_any(), "cleaning up");
    app_service::cleanup(ctx, link).await?;
    crash_points::reached("cleanup-after-app-services");
    let services = service_link::cleanup(ctx, link).await;
    {
        let mut served = pipeline.cluster_wide.lock().await;
        served.last = None;
        serve_zones(pipeline, &mut served, None).await?;
        dns_service::cleanup(ctx, link).await?;
    }
    services?;
    Ok(Action::await_change())
}

/// A link being deleted whose cleanup failed says why in the failing duty's condition; the other
/// conditions and the records in its status stay as they were.
async fn report_cleanup_failure(link: &AppServiceLink, ctx: &Context, err: &Error) {
    let existing = link.status.clone().unwrap_or_default();
    let mut failed = err.duty_status();
    failed.message = format!("deleting the link: {}", failed.message);
    let duties: Vec<DutyStatus> = duty_types(&ctx.config)
        .iter()
        .map(
            |&t| match existing.conditions.iter().find(|c| c.type_ == t) {
                _ if t == failed.condition_type => failed.clone(),
                Some(c) if c.status == "True" => DutyStatus::ready(t, &c.reason, c.message.clone()),
                Some(c) => DutyStatus::waiting(t, &c.reason, c.message.clone()),
                None => DutyStatus::waiting(t, "Deleting", "the link is being deleted"),
            },
        )
        .collect();
    let observed = Observed {
        services: existing.services,
        app_services: existing.app_services,
        dns_server_ip: existing.dns_server_ip,
    };
    if let Err(status_err) = write_status(link, ctx, &duties, observed).await {
        warn!(link = %link.name_any(), error = %status_err, "could not report the failed cleanup in status");
    }
}

/// The conditions of the duties, in status order; `NamesResolve` only while the check is on.
fn duty_types(config: &crate::context::Config) -> Vec<&'static str> {
    let mut list = vec![
        types::SERVICES,
        types::DNS_SERVICE,
        types::COREDNS_OVERRIDE,
        types::APP_SERVICES,
    ];
    if config.check_names {
        list.push(types::NAMES);
    }
    list
}

/// Writes the status when it differs from the stored one, and records an Event for each problem
/// that newly appeared.
async fn write_status(
    link: &AppServiceLink,
    ctx: &Context,
    duties: &[DutyStatus],
    observed: Observed,
) -> Result<(), Error> {
    let old = link.status.as_ref();
    let new = status::build(
        duties,
        observed,
        link.meta().generation,
        old,
        Timestamp::now(),
    );
    if old == Some(&new) {
        return Ok(());
    }
    for (reason, message) in status::new_problems(old, &new) {
        ctx.event(link, EventType::Warning, &reason, message).await;
    }
    let api = Api::<AppServiceLink>::all(ctx.client.clone());
    let body = json!({
        "apiVersion": "appservicelink.io/v1alpha1",
        "kind": "AppServiceLink",
        "status": new,
    });
    match api
        .patch_status(
            &link.name_any(),
            &ctx.apply_params(STATUS_FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(written) => ctx.own.links.record(written),
        Err(e) => {
            let err = Error::Status(KubeError::new(
                format!("writing status of AppServiceLink {}", link.name_any()),
                e,
            ));
            // Status cannot say it, so an Event does: what was done stays done, and what to restore
            // is kept in the link's annotation, not only in status.
            ctx.event(
                link,
                EventType::Warning,
                "StatusWriteFailed",
                format!(
                    "{err}; {}; the status shown is stale until it can be written",
                    err.advice()
                ),
            )
            .await;
            return Err(err);
        }
    }
    Ok(())
}
