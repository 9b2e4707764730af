//! The controller: the watches, and which links each event wakes. What a reconcile does is
//! [`crate::reconcile`]'s.
//!
//! The Service, Namespace and link caches are reflector stores, so deciding what to do costs no API
//! calls and a converged link costs no writes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::ListParams;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, Controller, PredicateConfig, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::azure::arm::ArmClient;
use crate::cache;
use crate::context::services::ServiceCache;
use crate::context::{Config, Context, OwnWrites, Written};
use crate::crd::AppServiceLink;
use crate::duties::service_link::{self, Selection};
use crate::reconcile::{self, Pipeline};
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;

/// Name the operator reports Events under.
const REPORTER: &str = "appservicelink";
/// How many links are reconciled at once. Each reconcile also bounds its own writes
/// (`service_link::PARALLEL_WRITES`), so the apiserver sees at most the product in flight.
const MAX_CONCURRENT_RECONCILES: u16 = 8;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing AppServiceLinks failed, most often because the CRD is not installed.
    #[error("cannot list AppServiceLinks ({0}); is the CRD installed? Install it with: appservicelink crd | kubectl apply -f -")]
    CannotListLinks(#[source] Box<kube::Error>),
}

/// Runs the controller until SIGTERM, Ctrl-C or `shutdown`, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    config: Config,
    arm: Result<ArmClient, String>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let links_api = Api::<AppServiceLink>::all(client.clone());
    let shutdown = shutdown.shared();
    tokio::select! {
        listed = first_list(&links_api) => listed?,
        // Stopped while the apiserver was still failing: nothing was started.
        () = shutdown.clone() => return Ok(()),
    }
    // The zones' ConfigMap: coredns-custom, or in dedicated mode the dedicated CoreDNS's own
    // (nothing in kube-system is read or written then). The Corefile and CoreDNS's Deployment are
    // read only when the zones duty runs, once per change (reconcile::serve_zones_once).
    let (configmap_namespace, configmap_name) = reconcile::zones_configmap(&config);
    let synced = health.caches(4);
    let own = Arc::new(OwnWrites::new(config.dry_run));
    let (links, links_writer) = reflector::store();
    // Status writes do not change these, so the operator never wakes itself up by writing status.
    let links_stream = watcher(links_api, watcher::Config::default())
        .default_backoff()
        .modify(cache::link)
        .reflect(links_writer)
        .inspect_ok(synced.listed())
        .inspect_ok(forget_deleted(&own, |own| &own.links))
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let services = Arc::new(ServiceCache::new());
    let services_stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(cache::service)
    .inspect_ok({
        let services = services.clone();
        move |event| services.apply(event, cache::service_record)
    })
    .inspect_ok(synced.listed())
    .inspect_ok(forget_deleted(&own, |own| &own.services))
    .touched_objects();
    let (namespaces, namespaces_writer) = reflector::store();
    let namespaces_stream = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(cache::namespace)
    .reflect(namespaces_writer)
    .inspect_ok(synced.listed())
    .touched_objects();
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (zones_configmap, zones_writer) = reflector::store();
    let zones_stream = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), configmap_namespace),
        by_name(configmap_name),
    )
    .default_backoff()
    .modify(cache::configmap)
    .reflect(zones_writer)
    .inspect_ok(synced.listed())
    .inspect_ok(forget_deleted(&own, |own| &own.configmaps))
    .touched_objects();
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let pipeline = Arc::new(Pipeline::new(
        Context {
            recorder: Recorder::new(client.clone(), REPORTER.into()),
            client,
            config,
            links: links.clone(),
            services,
            namespaces,
            zones_configmap,
            own,
            arm,
            metrics,
            health: health.clone(),
        },
        wake,
    ));
    let for_service = pipeline.clone();
    let for_namespace = pipeline.clone();
    let for_configmap = pipeline.clone();
    let selections = Arc::new(Selections::default());
    info!("controller started");
    Controller::for_stream(links_stream, links)
        .watches_stream(services_stream, move |svc| {
            // The operator's own write coming back concerns nobody: the reconcile that wrote it
            // already used what the write returned.
            if for_service.ctx.own.services.is_echo(&svc) {
                return Vec::new();
            }
            selections.links_for_service(&for_service.ctx, &svc)
        })
        .watches_stream(namespaces_stream, move |_ns: Namespace| {
            for_namespace
                .ctx
                .live_links()
                .iter()
                .filter(|l| l.spec.services.namespace_selector.is_some())
                .map(|l| ObjectRef::from_obj(&**l))
                .collect::<Vec<_>>()
        })
        // The zones are served for all links at once: a change to their ConfigMap wakes one link,
        // which brings them in line and wakes the others only if what their status says of the
        // zones changed (reconcile::serve_zones_once).
        .watches_stream(zones_stream, move |cm: ConfigMap| {
            if for_configmap.ctx.own.configmaps.is_echo(&cm) {
                return None;
            }
            reconcile::zones_owner(&for_configmap.ctx)
        })
        .reconcile_on(woken)
        // No debounce: reconciles read their own writes (Context::own), so they need not wait for
        // the watch events of a burst of writes; a bounded number run at once.
        .with_config(
            kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_RECONCILES),
        )
        .trigger_backoff(EachWatchBacksOff)
        .graceful_shutdown_on(shutdown)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, pipeline)
        .for_each(|result| async move {
            match result {
                Ok((link, _)) => tracing::debug!(link = %link.name, "reconciled"),
                // A trigger for a link deleted meanwhile: nothing to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(link)) => {
                    tracing::debug!(%link, "link gone before its reconcile")
                }
                // A watch that failed (cut, 410 Expired, the apiserver failing): it resumes or lists
                // again by itself, with its own backoff.
                Err(kube::runtime::controller::Error::QueueError(err)) => {
                    warn!(error = %err, "a watch failed; it resumes with backoff")
                }
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// Lists the links once before starting, to fail fast when the CRD is missing (404) or the operator
/// may not list them (401, 403). An apiserver that fails or does not answer (5xx, 429, no connection:
/// a control-plane upgrade, an etcd hiccup) is waited for, with backoff up to 30 s: exiting would
/// only put the pod in CrashLoopBackOff, which backs off for longer.
async fn first_list(links_api: &Api<AppServiceLink>) -> Result<(), Error> {
    let mut delay = Duration::from_millis(500);
    loop {
        match links_api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(err) if transient(&err) => {
                warn!(error = %err, retry_in = ?delay, "cannot list AppServiceLinks yet; the apiserver failed or did not answer, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(err) => return Err(Error::CannotListLinks(Box::new(err))),
        }
    }
}

/// Whether a request may succeed if simply tried again: the apiserver failing or throttling (5xx,
/// 429), or no answer at all; not a refusal or a missing resource.
fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The controller's own backoff over all its watches together: none. Each watch backs off on its own
/// (`default_backoff()` above). A shared backoff would pause all four watches for the error of one,
/// and grow with each watch's error in turn: after the watches were cut and their history compacted,
/// the four 410s stalled every watch for 1 + 2 + 4 + 8 s before the re-lists could run.
struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// Wakes a link on changes to its spec, finalizers or deletion, but not to its status.
fn spec_or_lifecycle(link: &AppServiceLink) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    link.meta().generation.hash(&mut hasher);
    link.meta().uid.hash(&mut hasher);
    link.meta().finalizers.hash(&mut hasher);
    link.meta().deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// A watch stream's inspector that forgets the operator's own write of each object the watch sees
/// deleted (`pick` chooses the kind's writes).
fn forget_deleted<K>(
    own: &Arc<OwnWrites>,
    pick: fn(&OwnWrites) -> &Written<K>,
) -> impl FnMut(&watcher::Event<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let own = own.clone();
    move |event| pick(&own).forget_deleted(event)
}

/// Each link's selection, parsed once per generation, to decide which links a Service event
/// concerns without parsing every link's selectors for every event.
#[derive(Default)]
struct Selections(std::sync::Mutex<HashMap<ObjectRef<AppServiceLink>, Compiled>>);

/// A link's selection, and the generation it was parsed at.
type Compiled = (Option<i64>, Arc<Selection>);

impl Selections {
    /// The links a Service event concerns: those that select it, the one holding it, and those
    /// whose DNS Service it is.
    fn links_for_service(&self, ctx: &Context, svc: &Service) -> Vec<ObjectRef<AppServiceLink>> {
        let holder = service_link::holder(svc);
        let is_dns = svc.namespace().as_deref() == Some(ctx.dns_namespace());
        let links = ctx.links.state();
        // Only held for map operations and selector matching, which do not panic.
        let mut compiled = self.0.lock().expect("selections");
        compiled.retain(|key, _| links.iter().any(|l| ObjectRef::from_obj(&**l) == *key));
        links
            .iter()
            .filter(|link| {
                let key = ObjectRef::from_obj(&***link);
                let generation = link.metadata.generation;
                let selection = match compiled.get(&key) {
                    Some((seen, selection)) if *seen == generation => selection.clone(),
                    _ => {
                        let selection = Arc::new(Selection::of(link));
                        compiled.insert(key, (generation, selection.clone()));
                        selection
                    }
                };
                holder == Some(link.name_any().as_str())
                    || selection.matches(ctx, svc)
                    || (is_dns && link.spec.dns.service.name == svc.name_any())
            })
            .map(|link| ObjectRef::from_obj(&**link))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "", "message": ""
        }))
        .expect("a Status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn the_first_list_waits_for_a_failing_apiserver_but_not_for_a_missing_crd() {
        for code in [500, 503, 504, 429] {
            assert!(transient(&status(code)), "{code}");
        }
        for code in [404, 403, 401, 400] {
            assert!(!transient(&status(code)), "{code}");
        }
    }
}
