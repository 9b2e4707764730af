//! The controller: watches, the reconcile pipeline (validate → duties → status), and the finalizer.
//!
//! Each duty lives in its own module and is called from here with what it needs. The Service,
//! Namespace and link caches are reflector stores, so deciding what to do costs no API calls and a
//! converged link costs no writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, PredicateConfig, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::arm::ArmClient;
use crate::crd::{AppServiceLink, AppServiceLinkStatus};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::status::{self, types, DutyStatus, Observed};
use crate::{app_service, corefile, dns_service, service_link, validation};

/// Finalizer that keeps a link until everything it changed is undone.
pub const FINALIZER: &str = "appservicelink.io/cleanup";
/// Field manager for status writes.
const STATUS_FIELD_MANAGER: &str = "appservicelink-status";
/// Name the operator reports Events under.
const REPORTER: &str = "appservicelink";
/// How Events mark a change that dry-run mode did not make.
pub const DRY_RUN_PREFIX: &str = "dry run, not applied: ";

/// Settings of a running controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the CoreDNS Deployment in `kube-system`.
    pub coredns_deployment: String,
    /// Roll CoreDNS when the override changes, instead of waiting for its `reload` plugin.
    pub restart_coredns: bool,
    /// How often every link is reconciled even when nothing changed (drift repair).
    pub resync: Duration,
    /// Change nothing: Kubernetes writes go out with `dryRun=All`, ARM writes are not sent, and
    /// every intended change is logged and recorded as an Event.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            coredns_deployment: "coredns".into(),
            restart_coredns: true,
            resync: Duration::from_secs(300),
            dry_run: false,
        }
    }
}

/// Errors that stop one reconcile; the link is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, naming the object.
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// App Services could not be restored; the link keeps its finalizer until they are.
    #[error("{0}")]
    AppService(String),
}

impl Error {
    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }

    /// Short category for metrics.
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) if status.code == 403 => "KubeForbidden",
                kube::Error::Api(status) if status.code == 409 => "KubeConflict",
                kube::Error::Api(_) => "KubeApi",
                _ => "KubeClient",
            },
            Self::Finalizer(err) => match err.as_ref() {
                Finalizer::ApplyFailed(err) | Finalizer::CleanupFailed(err) => err.reason(),
                _ => "Finalizer",
            },
            Self::AppService(_) => "AppServiceRestore",
        }
    }
}

/// True for a 404 from the apiserver.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Controller settings.
    pub config: Config,
    /// Every link.
    pub links: Store<AppServiceLink>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every Namespace (for `namespaceSelector`).
    pub namespaces: Store<Namespace>,
    /// The ARM client, or why Azure access is not configured.
    pub arm: Result<ArmClient, String>,
    /// Reconcile and App Service metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness, including whether the caches have synced.
    pub health: Health,
    recorder: Recorder,
    /// Serialises the cluster-wide duties (DNS Service, CoreDNS override), which every link
    /// computes from all links.
    pub cluster_wide: tokio::sync::Mutex<()>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Records a Kubernetes Event on the link. Failing to record one is logged, never fatal.
    pub async fn event(
        &self,
        link: &AppServiceLink,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) {
        let mut note = note.into();
        if self.config.dry_run && type_ == EventType::Normal {
            note = format!("{DRY_RUN_PREFIX}{note}");
        }
        info!(link = %link.name_any(), reason, note, dry_run = self.config.dry_run, "event");
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &link.object_ref(&())).await {
            warn!(link = %link.name_any(), reason, error = %err, "could not record event");
        }
    }

    /// Server-side apply parameters for `manager`, taking over conflicting fields (dry-run aware).
    pub fn apply_params(&self, manager: &str) -> PatchParams {
        let mut params = PatchParams::apply(manager).force();
        params.dry_run = self.config.dry_run;
        params
    }

    /// Merge-patch parameters for `manager` (dry-run aware).
    pub fn update_params(&self, manager: &str) -> PatchParams {
        PatchParams {
            field_manager: Some(manager.into()),
            dry_run: self.config.dry_run,
            ..Default::default()
        }
    }

    /// Delete parameters (dry-run aware).
    pub fn delete_params(&self) -> DeleteParams {
        DeleteParams {
            dry_run: self.config.dry_run,
            ..Default::default()
        }
    }

    /// Links that are not being deleted.
    pub fn live_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links: Vec<_> = self
            .links
            .state()
            .into_iter()
            .filter(|l| l.meta().deletion_timestamp.is_none())
            .collect();
        links.sort_by_key(|l| l.name_any());
        links
    }

    /// Live links whose spec passes validation: the only ones whose wishes the duties act on.
    pub fn valid_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links = self.live_links();
        links.retain(|l| validation::validate(&l.spec).is_empty());
        links
    }

    /// True when `link` selects `svc`, by labels and namespace labels.
    pub fn selects(&self, link: &AppServiceLink, svc: &Service) -> bool {
        selects(link, svc, |ns| {
            self.namespaces
                .get(&ObjectRef::new(ns))
                .map(|n| n.labels().clone())
                .unwrap_or_default()
        })
    }
}

/// True when `link` selects `svc`; `namespace_labels` looks up a namespace's labels.
pub fn selects(
    link: &AppServiceLink,
    svc: &Service,
    namespace_labels: impl Fn(&str) -> std::collections::BTreeMap<String, String>,
) -> bool {
    if dns_service::is_ours(svc) {
        return false;
    }
    let services = &link.spec.services;
    if validation::selector_is_empty(&services.selector) {
        return false;
    }
    let Ok(selector) = Selector::try_from(services.selector.clone()) else {
        return false;
    };
    if !selector.matches(svc.labels()) {
        return false;
    }
    match &services.namespace_selector {
        None => true,
        Some(ns_selector) => Selector::try_from(ns_selector.clone())
            .is_ok_and(|s| s.matches(&namespace_labels(&svc.namespace().unwrap_or_default()))),
    }
}

/// Runs the controller until SIGTERM, Ctrl-C or `shutdown`, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    config: Config,
    arm: Result<ArmClient, String>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let links_api = Api::<AppServiceLink>::all(client.clone());
    if let Err(err) = links_api.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list AppServiceLinks ({err}); is the CRD installed? Install it with: appservicelink crd | kubectl apply -f -"
        );
    }
    let synced = health.caches(3);
    let (links, links_writer) = reflector::store();
    // Status writes do not change these, so the operator never wakes itself up by writing status.
    let links_stream = watcher(links_api, watcher::Config::default())
        .default_backoff()
        .reflect(links_writer)
        .inspect_ok(synced.listed())
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let (services, services_writer) = reflector::store();
    let services_stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(services_writer)
    .inspect_ok(synced.listed())
    .touched_objects();
    let (namespaces, namespaces_writer) = reflector::store();
    let namespaces_stream = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(namespaces_writer)
    .inspect_ok(synced.listed())
    .touched_objects();
    let configmap_stream = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), corefile::NAMESPACE),
        watcher::Config::default().fields(&format!("metadata.name={}", corefile::CONFIGMAP)),
    )
    .default_backoff()
    .touched_objects();

    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), REPORTER.into()),
        client,
        config,
        links: links.clone(),
        services,
        namespaces,
        arm,
        metrics,
        health: health.clone(),
        cluster_wide: tokio::sync::Mutex::new(()),
        failures: Mutex::new(HashMap::new()),
    });
    let for_service = ctx.clone();
    let for_namespace = ctx.clone();
    let for_configmap = ctx.clone();
    info!("controller started");
    Controller::for_stream(links_stream, links)
        .watches_stream(services_stream, move |svc| {
            links_for_service(&for_service, &svc)
        })
        .watches_stream(namespaces_stream, move |_ns: Namespace| {
            for_namespace
                .live_links()
                .iter()
                .filter(|l| l.spec.services.namespace_selector.is_some())
                .map(|l| ObjectRef::from_obj(&**l))
                .collect::<Vec<_>>()
        })
        .watches_stream(configmap_stream, move |_cm: ConfigMap| {
            for_configmap
                .live_links()
                .iter()
                .map(|l| ObjectRef::from_obj(&**l))
                .collect::<Vec<_>>()
        })
        // Lets the watch events of one burst of writes land before the next reconcile reads the caches.
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(200)),
        )
        .graceful_shutdown_on(shutdown)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((link, _)) => tracing::debug!(link = %link.name, "reconciled"),
                // A trigger for a link deleted meanwhile: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(link)) => {
                    tracing::debug!(%link, "link gone before its reconcile")
                }
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// Wakes a link on changes to its spec, labels, finalizers or deletion, but not to its status.
fn spec_or_lifecycle(link: &AppServiceLink) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    link.meta().generation.hash(&mut hasher);
    link.meta().uid.hash(&mut hasher);
    link.meta().finalizers.hash(&mut hasher);
    link.meta().deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// The links a Service event concerns: those that select it, the one holding it, and those whose
/// DNS Service it is.
fn links_for_service(ctx: &Context, svc: &Service) -> Vec<ObjectRef<AppServiceLink>> {
    let holder = service_link::holder(svc);
    let is_dns = svc.namespace().as_deref() == Some(dns_service::NAMESPACE);
    ctx.links
        .state()
        .iter()
        .filter(|link| {
            holder == Some(link.name_any().as_str())
                || ctx.selects(link, svc)
                || (is_dns && link.spec.dns.service.name == svc.name_any())
        })
        .map(|link| ObjectRef::from_obj(&**link))
        .collect()
}

async fn reconcile(link: Arc<AppServiceLink>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_link(link, ctx.clone()).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

async fn reconcile_link(link: Arc<AppServiceLink>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Deciding on a partial view could, say, restore a Service only because it was not listed yet.
    ctx.health.caches_synced().await;
    let api = Api::<AppServiceLink>::all(ctx.client.clone());
    let name = link.name_any();
    if ctx.config.dry_run {
        // Adding a finalizer would change the link, so dry-run mode reports what it would do for
        // live links and leaves deletion alone.
        return match link.meta().deletion_timestamp {
            None => apply(&link, &ctx).await,
            Some(_) => Ok(Action::await_change()),
        };
    }
    let result = finalizer(&api, FINALIZER, link, |event| async {
        match event {
            Event::Apply(link) => apply(&link, &ctx).await,
            Event::Cleanup(link) => cleanup(&link, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.failures.lock().expect("failure counts").remove(&name);
    }
    result
}

fn error_policy(link: Arc<AppServiceLink>, err: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("failure counts");
    let count = failures.entry(link.name_any()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count).min(8)).min(Duration::from_secs(300));
    warn!(link = %link.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The Apply arm: validate, run the duties, write the status.
async fn apply(link: &AppServiceLink, ctx: &Context) -> Result<Action, Error> {
    let errors = validation::validate(&link.spec);
    if !errors.is_empty() {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let duty = DutyStatus::blocked(types::SERVICES, "InvalidSpec", message);
        let invalid = [
            types::SERVICES,
            types::DNS_SERVICE,
            types::COREDNS_OVERRIDE,
            types::APP_SERVICES,
        ]
        .map(|t| DutyStatus {
            condition_type: t,
            ..duty.clone()
        });
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
    let services = service_link::reconcile(ctx, link).await?;
    let (dns, corefile) = {
        let _cluster_wide = ctx.cluster_wide.lock().await;
        let dns = dns_service::reconcile(ctx, link).await?;
        let corefile = corefile::reconcile(ctx, Some(link)).await?;
        (dns, corefile)
    };
    let app_services = app_service::reconcile(ctx, link, dns.server_ip.as_deref()).await?;
    let retry = app_services
        .retry_after
        .unwrap_or(ctx.config.resync)
        .min(ctx.config.resync);
    let duties = [services.duty, dns.duty, corefile, app_services.duty];
    let observed = Observed {
        services: services.entries,
        app_services: app_services.entries,
        dns_server_ip: dns.server_ip,
    };
    write_status(link, ctx, &duties, observed).await?;
    Ok(Action::requeue(retry))
}

/// The Cleanup arm: undo everything the link did, then let the finalizer go.
async fn cleanup(link: &AppServiceLink, ctx: &Context) -> Result<Action, Error> {
    info!(link = %link.name_any(), "cleaning up");
    service_link::cleanup(ctx, link).await?;
    {
        let _cluster_wide = ctx.cluster_wide.lock().await;
        corefile::reconcile(ctx, None).await?;
        dns_service::cleanup(ctx, link).await?;
    }
    app_service::cleanup(ctx, link).await?;
    Ok(Action::await_change())
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
    api.patch_status(
        &link.name_any(),
        &ctx.apply_params(STATUS_FIELD_MANAGER),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!("writing status of AppServiceLink {}", link.name_any()),
            e,
        )
    })?;
    Ok(())
}

/// The status a link reported last time, if it describes the current generation.
pub fn current_status(link: &AppServiceLink) -> Option<&AppServiceLinkStatus> {
    link.status
        .as_ref()
        .filter(|s| s.observed_generation == link.meta().generation)
}
