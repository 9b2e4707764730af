//! What every duty is given: the Kubernetes client and caches, the ARM client, the metrics and
//! readiness, and the controller's settings. It sits below the duties and the pipeline and knows
//! neither.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{DeleteParams, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::azure::arm::ArmClient;
use crate::crd::{AppServiceLink, AppServiceLinkStatus};
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;
use crate::validation;
use services::{ServiceCache, ServiceFacts};

pub mod services;

/// How Events mark a change that dry-run mode did not make.
pub const DRY_RUN_PREFIX: &str = "dry run, not applied: ";

/// Settings of a running controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the CoreDNS Deployment in `kube-system`.
    pub coredns_deployment: String,
    /// Dedicated mode: the operator's own CoreDNS serves the zones, and nothing in `kube-system` is
    /// written. `None`: the cluster's CoreDNS, through `coredns-custom`.
    pub dedicated_dns: Option<DedicatedDns>,
    /// Roll CoreDNS when the override changes, instead of waiting for its `reload` plugin.
    pub restart_coredns: bool,
    /// The cluster's DNS domain, which no zone may be, or be above or below, and which the
    /// dedicated CoreDNS's `kubernetes` plugin serves.
    pub cluster_domain: String,
    /// How often every link is reconciled even when nothing changed (drift repair).
    pub resync: Duration,
    /// Reverts of a conversion further apart than this do not add up towards the limit.
    pub revert_window: Duration,
    /// An App Service is written at most once per this window when its DNS server keeps changing
    /// (every write restarts the app); the last value wins.
    pub app_service_write_window: Duration,
    /// Ask the DNS Service for every linked Service's name (condition `NamesResolve`, part of
    /// `Ready`).
    pub check_names: bool,
    /// Change nothing: Kubernetes writes go out with `dryRun=All`, ARM writes are not sent, and
    /// every intended change is logged and recorded as an Event.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            coredns_deployment: "coredns".into(),
            dedicated_dns: None,
            restart_coredns: true,
            cluster_domain: validation::DEFAULT_CLUSTER_DOMAIN.into(),
            resync: Duration::from_secs(300),
            revert_window: Duration::from_secs(3600),
            app_service_write_window: Duration::from_secs(10),
            check_names: true,
            dry_run: false,
        }
    }
}

/// Where the dedicated CoreDNS runs, and which image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedicatedDns {
    /// Its namespace (the operator's own), also the DNS Service's.
    pub namespace: String,
    /// Its container image.
    pub image: String,
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Controller settings.
    pub config: Config,
    /// Every link. Read through [`Context::live_links`] or [`Context::link`], which see the
    /// operator's own writes before the watch delivers them.
    pub links: Store<AppServiceLink>,
    /// Every Service, pruned to what the duties read ([`crate::cache`]) and kept as compact
    /// records. Read through [`Context::services_where`] or [`Context::service`].
    pub services: Arc<ServiceCache>,
    /// Every Namespace (for `namespaceSelector`).
    pub namespaces: Store<Namespace>,
    /// The ConfigMap the zones are written to (`kube-system/coredns-custom`, or the dedicated
    /// CoreDNS's). Read through [`Context::zones_configmap`].
    pub zones_configmap: Store<ConfigMap>,
    /// What the operator's own writes returned, until the watches deliver them.
    pub own: Arc<OwnWrites>,
    /// The ARM client, or why Azure access is not configured.
    pub arm: Result<ArmClient, String>,
    /// Reconcile and App Service metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness, including whether the caches have synced.
    pub health: Health,
    /// Publishes the Events recorded on links.
    pub recorder: Recorder,
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

    /// Namespace of the DNS Service: `kube-system`, where the cluster's CoreDNS runs, or the
    /// dedicated CoreDNS's.
    pub fn dns_namespace(&self) -> &str {
        self.config
            .dedicated_dns
            .as_ref()
            .map_or("kube-system", |d| d.namespace.as_str())
    }

    /// Links that are not being deleted.
    pub fn live_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links: Vec<_> = self
            .own
            .links
            .state(&self.links)
            .into_iter()
            .filter(|l| l.meta().deletion_timestamp.is_none())
            .collect();
        links.sort_by_key(|l| l.name_any());
        links
    }

    /// Live links whose spec passes validation: the only ones whose wishes the duties act on.
    pub fn valid_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links = self.live_links();
        links.retain(|l| validation::validate(&l.spec, &self.config.cluster_domain).is_empty());
        links
    }

    /// The link as last written or watched.
    pub fn link(&self, link: &AppServiceLink) -> Arc<AppServiceLink> {
        let key = ObjectRef::from_obj(link);
        self.own
            .links
            .get(&self.links, &key)
            .unwrap_or_else(|| Arc::new(link.clone()))
    }

    /// The Services for which `keep` is true, with the operator's own writes, as typed Services
    /// (only these are rebuilt from the cache's records).
    pub fn services_where(&self, keep: impl Fn(&dyn ServiceFacts) -> bool) -> Vec<Arc<Service>> {
        services_where(&self.services, &self.own.services, keep)
    }

    /// The Service `namespace/name`, with the operator's own writes.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        let cached = self
            .services
            .get(namespace, name)
            .map(|r| Arc::new(r.to_service()));
        self.own
            .services
            .get_beside(&ObjectRef::new(name).within(namespace), cached)
    }

    /// The ConfigMap the zones are written to, with the operator's own writes.
    pub fn zones_configmap(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        let key = ObjectRef::new(name).within(namespace);
        self.own.configmaps.get(&self.zones_configmap, &key)
    }

    /// The namespace, as the cache last saw it.
    pub fn namespace(&self, namespace: &str) -> Option<Arc<Namespace>> {
        self.namespaces.get(&ObjectRef::new(namespace))
    }
}

/// The cached Services for which `keep` is true, with the writes in `own` in place of older
/// versions, and the written ones the cache does not have yet.
fn services_where(
    cache: &ServiceCache,
    own: &Written<Service>,
    keep: impl Fn(&dyn ServiceFacts) -> bool,
) -> Vec<Arc<Service>> {
    let standing = own.standing(|key| {
        let record = cache.get(key.namespace.as_deref().unwrap_or_default(), &key.name)?;
        Some(record.resource_version().map(str::to_string))
    });
    let mut services: Vec<Arc<Service>> = cache
        .select(|r| keep(r))
        .iter()
        .filter(|r| {
            standing.is_empty()
                || !standing.contains_key(&ObjectRef::new(r.name()).within(r.namespace_name()))
        })
        .map(|r| Arc::new(r.to_service()))
        .collect();
    services.extend(standing.into_values().filter(|w| keep(&**w)));
    services
}

/// The status a link reported last time, if it describes the current generation.
pub fn current_status(link: &AppServiceLink) -> Option<&AppServiceLinkStatus> {
    link.status
        .as_ref()
        .filter(|s| s.observed_generation == link.meta().generation)
}

/// The objects the operator's own writes returned, kept until the watch delivers them (or
/// something newer), so that the next reconcile reads its own writes without waiting for the watch:
/// it neither writes again nor decides from the state before its write. In dry-run mode nothing is
/// recorded: what a dry-run write returns was never stored.
pub struct OwnWrites {
    /// Services: converted, restored, the DNS Services.
    pub services: Written<Service>,
    /// Links: status, and the records in their annotations.
    pub links: Written<AppServiceLink>,
    /// The zones' ConfigMap.
    pub configmaps: Written<ConfigMap>,
}

impl OwnWrites {
    /// Nothing written yet; `dry_run`: never record anything.
    pub fn new(dry_run: bool) -> Self {
        Self {
            services: Written::new(dry_run),
            links: Written::new(dry_run),
            configmaps: Written::new(dry_run),
        }
    }
}

/// How long a write whose object the cache does not have counts: long enough for the watch to
/// deliver a create, short enough that an object deleted while the watch was down (relisted after a
/// 410, with no Delete event) is not kept alive by an old write.
const ABSENT_GRACE: Duration = Duration::from_secs(30);

/// What the caches keep of an object (`crate::cache`), also applied to what a write returned, so
/// that a write kept beside a cache costs what the cached object does and reads the same.
pub trait Prune {
    /// Drops what no duty reads.
    fn prune(&mut self);
}

/// What writes of one kind returned, by object, and when.
pub struct Written<K: Resource<DynamicType = ()>> {
    dry_run: bool,
    absent_grace: Duration,
    objects: std::sync::Mutex<Returned<K>>,
    /// Writes under way (see [`Written::writing`]).
    in_flight: std::sync::Mutex<InFlight<K>>,
}

/// What each write returned, and when it was recorded.
type Returned<K> = HashMap<ObjectRef<K>, (std::time::Instant, Arc<K>)>;

/// By object: how many writes are under way, and the resourceVersions watch events showed
/// meanwhile; and the objects someone else changed during a write (see [`Written::take_missed`]).
struct InFlight<K: Resource<DynamicType = ()>> {
    writes: HashMap<ObjectRef<K>, (usize, Vec<String>)>,
    missed: std::collections::HashSet<ObjectRef<K>>,
}

/// A write under way to one object, from [`Written::writing`]; dropped once its answer is recorded
/// (or it failed).
pub struct Writing<'a, K: Resource<DynamicType = ()> + Clone + 'static> {
    written: &'a Written<K>,
    key: Option<ObjectRef<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for Writing<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.written.finish(key);
        }
    }
}

impl<K> Written<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            absent_grace: ABSENT_GRACE,
            objects: std::sync::Mutex::new(HashMap::new()),
            in_flight: std::sync::Mutex::new(InFlight {
                writes: HashMap::new(),
                missed: Default::default(),
            }),
        }
    }

    /// Marks a write to `key` under way until the guard is dropped, which must come after the
    /// write's answer is recorded. A watch event can bring the write back before its answer does;
    /// meanwhile [`Written::is_echo`] holds every event for `key` back, and once the write is done
    /// an event that was not its echo (someone else's change, or the write failed) is kept for
    /// [`Written::take_missed`].
    pub fn writing(&self, key: ObjectRef<K>) -> Writing<'_, K> {
        if self.dry_run {
            return Writing {
                written: self,
                key: None,
            };
        }
        self.flights().writes.entry(key.clone()).or_default().0 += 1;
        Writing {
            written: self,
            key: Some(key),
        }
    }

    fn finish(&self, key: ObjectRef<K>) {
        let recorded = self
            .lock()
            .get(&key)
            .and_then(|(_, written)| written.meta().resource_version.clone());
        let mut flights = self.flights();
        let Some((count, seen)) = flights.writes.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let missed = seen.iter().any(|v| Some(v) != recorded.as_ref());
        flights.writes.remove(&key);
        if missed {
            flights.missed.insert(key);
        }
    }

    /// Whether someone else changed `key` while the operator was writing it (an event
    /// [`Written::is_echo`] held back that was not the write coming back); asking forgets it.
    pub fn take_missed(&self, key: &ObjectRef<K>) -> bool {
        self.flights().missed.remove(key)
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, InFlight<K>> {
        // Only held for map operations, which do not panic.
        self.in_flight.lock().expect("writes in flight")
    }

    /// Records what a write returned, pruned as the cache would prune it.
    pub fn record(&self, mut returned: K)
    where
        K: Prune,
    {
        if self.dry_run {
            return;
        }
        returned.prune();
        let key = ObjectRef::from_obj(&returned);
        self.lock()
            .insert(key, (std::time::Instant::now(), Arc::new(returned)));
    }

    /// Whether the write still stands beside the cache: newer than the cache's version, or, for an
    /// object the cache does not have (`cached` is `None`), recent enough to be a create the watch
    /// has not delivered.
    fn stands(&self, at: std::time::Instant, written: &K, cached: Option<Option<&str>>) -> bool {
        match cached {
            Some(version) => newer(written, Some(version)),
            None => at.elapsed() < self.absent_grace && newer(written, None),
        }
    }

    /// The writes that still stand beside a cache, by object; the others are forgotten.
    /// `cached(key)` is the cache's resourceVersion of the object, `None` when it does not have it.
    fn standing(
        &self,
        cached: impl Fn(&ObjectRef<K>) -> Option<Option<String>>,
    ) -> HashMap<ObjectRef<K>, Arc<K>> {
        let mut objects = self.lock();
        objects.retain(|key, (at, written)| {
            let version = cached(key);
            self.stands(*at, written, version.as_ref().map(Option::as_deref))
        });
        objects
            .iter()
            .map(|(key, (_, written))| (key.clone(), written.clone()))
            .collect()
    }

    /// The object as the operator last knows it: what its write returned while the cache still
    /// shows an older version, else the cache's.
    pub fn get(&self, store: &Store<K>, key: &ObjectRef<K>) -> Option<Arc<K>> {
        let cached = store.get(key);
        self.get_beside(key, cached)
    }

    /// [`Written::get`] for an object a cache other than a [`Store`] gave as `cached`.
    pub fn get_beside(&self, key: &ObjectRef<K>, cached: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut objects = self.lock();
        let version = cached
            .as_ref()
            .map(|c| c.meta().resource_version.as_deref());
        match objects.get(key) {
            Some((at, written)) if self.stands(*at, written, version) => Some(written.clone()),
            Some(_) => {
                objects.remove(key);
                cached
            }
            None => cached,
        }
    }

    /// Every cached object, with the operator's writes in place of older versions, and the writes
    /// of objects the cache does not have yet (a create counts for a while; one deleted since is
    /// forgotten when the watch sees the deletion).
    pub fn state(&self, store: &Store<K>) -> Vec<Arc<K>> {
        let mut state = store.state();
        let mut standing =
            self.standing(|key| store.get(key).map(|o| o.meta().resource_version.clone()));
        if standing.is_empty() {
            return state;
        }
        for object in &mut state {
            if let Some(written) = standing.remove(&ObjectRef::from_obj(object.as_ref())) {
                *object = written;
            }
        }
        state.extend(standing.into_values());
        state
    }

    /// True when `seen` (a watch event) is the operator's own write coming back: the very version
    /// a write returned, or any version while a write to it is under way (decided when it is done:
    /// [`Written::writing`]).
    pub fn is_echo(&self, seen: &K) -> bool {
        let key = ObjectRef::from_obj(seen);
        let returned = self.lock().get(&key).is_some_and(|(_, written)| {
            written.meta().resource_version.is_some()
                && written.meta().resource_version == seen.meta().resource_version
        });
        if returned {
            return true;
        }
        let mut flights = self.flights();
        match flights.writes.get_mut(&key) {
            Some((_, seen_meanwhile)) => {
                seen_meanwhile.extend(seen.meta().resource_version.clone());
                true
            }
            None => false,
        }
    }

    /// Forgets the written object `key` (it was deleted).
    pub fn forget(&self, key: &ObjectRef<K>) {
        self.lock().remove(key);
    }

    /// Forgets the written object a watch event says was deleted.
    pub fn forget_deleted(&self, event: &kube::runtime::watcher::Event<K>) {
        if let kube::runtime::watcher::Event::Delete(object) = event {
            self.forget(&ObjectRef::from_obj(object));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Returned<K>> {
        // Only held for map operations, which do not panic.
        self.objects.lock().expect("own writes")
    }
}

/// True when `written` is newer than the `cached` version (`None`: nothing cached).
/// resourceVersions are etcd revisions, which only grow; one that does not parse as a number is
/// taken as not newer, so the cache wins.
fn newer<K: Resource>(written: &K, cached: Option<Option<&str>>) -> bool {
    let version = |v: Option<&str>| v?.parse::<u64>().ok();
    let cached = cached.map(version);
    match (version(written.meta().resource_version.as_deref()), cached) {
        (Some(_), None) => true,
        (Some(w), Some(Some(c))) => w > c,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    fn svc(name: &str, version: &str, type_: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version},
            "spec": {"type": type_},
        }))
        .unwrap()
    }

    fn type_of(svc: Option<Arc<Service>>) -> Option<String> {
        svc?.spec.as_ref()?.type_.clone()
    }

    fn cache_of(services: &[Service]) -> ServiceCache {
        let cache = ServiceCache::new();
        for svc in services {
            cache.apply(&watcher::Event::Apply(svc.clone()), |s| {
                services::ServiceRecord::new(s, false)
            });
        }
        cache
    }

    fn types(services: Vec<Arc<Service>>) -> Vec<(String, String)> {
        let mut types: Vec<_> = services
            .iter()
            .map(|s| (s.name_any(), type_of(Some(s.clone())).unwrap_or_default()))
            .collect();
        types.sort();
        types
    }

    #[test]
    fn the_service_cache_is_read_with_the_operators_writes_in_place() {
        let cache = cache_of(&[
            svc("api", "5", "ClusterIP"),
            svc("web", "5", "ClusterIP"),
            svc("db", "9", "ClusterIP"),
        ]);
        let written = Written::new(false);
        // Newer than the cache: read instead of it. Older than the cache: the cache wins. Not in
        // the cache yet: read as well.
        written.record(svc("api", "6", "LoadBalancer"));
        written.record(svc("db", "8", "LoadBalancer"));
        written.record(svc("new", "7", "LoadBalancer"));
        let all = |_: &dyn ServiceFacts| true;
        assert_eq!(
            types(services_where(&cache, &written, all)),
            [
                ("api".into(), "LoadBalancer".into()),
                ("db".into(), "ClusterIP".into()),
                ("new".into(), "LoadBalancer".into()),
                ("web".into(), "ClusterIP".into()),
            ]
        );
        // `keep` decides on the written version, not on the cached one it replaces.
        let internal = |s: &dyn ServiceFacts| {
            s.namespace_name() == "shop" && s.label("written") == Some("yes")
        };
        let mut labelled = svc("web", "6", "LoadBalancer");
        labelled.metadata.labels = Some([("written".into(), "yes".into())].into());
        written.record(labelled);
        assert_eq!(
            types(services_where(&cache, &written, internal)),
            [("web".into(), "LoadBalancer".into())]
        );
    }

    #[test]
    fn an_echo_that_outruns_its_write_wakes_nobody_but_a_change_meanwhile_is_kept() {
        let written = Written::new(false);
        let key = ObjectRef::new("api").within("shop");
        // The watch brings the write back before its answer: held back, then known as the echo.
        let write = written.writing(key.clone());
        assert!(written.is_echo(&svc("api", "6", "LoadBalancer")));
        written.record(svc("api", "6", "LoadBalancer"));
        drop(write);
        assert!(!written.take_missed(&key));
        // Someone else's change lands during the next write: held back, then kept for the caller.
        let write = written.writing(key.clone());
        assert!(written.is_echo(&svc("api", "7", "NodePort")));
        assert!(written.is_echo(&svc("api", "8", "LoadBalancer")));
        written.record(svc("api", "8", "LoadBalancer"));
        drop(write);
        assert!(written.take_missed(&key));
        assert!(!written.take_missed(&key), "asking forgets it");
        // A write that failed: whatever came meanwhile was not its echo.
        let write = written.writing(key.clone());
        assert!(written.is_echo(&svc("api", "9", "ClusterIP")));
        drop(write);
        assert!(written.take_missed(&key));
        // No write under way: only the versions writes returned are echoes.
        assert!(!written.is_echo(&svc("api", "10", "ClusterIP")));
        assert!(written.is_echo(&svc("api", "8", "LoadBalancer")));
        // Dry run records nothing and holds nothing back.
        let dry = Written::new(true);
        let _write = dry.writing(key.clone());
        assert!(!dry.is_echo(&svc("api", "11", "ClusterIP")));
    }

    #[test]
    fn a_write_is_read_back_until_the_watch_delivers_it_or_something_newer() {
        let (store, mut writer) = reflector::store::<Service>();
        writer.apply_watcher_event(&watcher::Event::Apply(svc("api", "5", "ClusterIP")));
        let written = Written::new(false);
        let key = ObjectRef::new("api").within("shop");
        written.record(svc("api", "6", "LoadBalancer"));
        assert_eq!(
            type_of(written.get(&store, &key)).as_deref(),
            Some("LoadBalancer")
        );
        assert_eq!(
            type_of(written.state(&store).pop()).as_deref(),
            Some("LoadBalancer")
        );
        assert!(written.is_echo(&svc("api", "6", "LoadBalancer")));
        assert!(!written.is_echo(&svc("api", "7", "NodePort")));
        // Someone else changed it after the write: the cache wins from then on.
        writer.apply_watcher_event(&watcher::Event::Apply(svc("api", "7", "NodePort")));
        assert_eq!(
            type_of(written.get(&store, &key)).as_deref(),
            Some("NodePort")
        );
        assert!(!written.is_echo(&svc("api", "6", "LoadBalancer")));
    }

    #[test]
    fn a_created_object_counts_before_the_watch_lists_it_and_not_after_its_deletion() {
        let (store, _writer) = reflector::store::<Service>();
        let written = Written::new(false);
        written.record(svc("dns", "3", "LoadBalancer"));
        assert_eq!(written.state(&store).len(), 1);
        written.forget(&ObjectRef::new("dns").within("shop"));
        assert!(written.state(&store).is_empty());
    }

    #[test]
    fn a_write_of_an_object_the_cache_never_shows_stops_counting() {
        let (store, _writer) = reflector::store::<Service>();
        let mut written = Written::new(false);
        written.absent_grace = Duration::ZERO;
        written.record(svc("dns", "3", "LoadBalancer"));
        let key = ObjectRef::new("dns").within("shop");
        assert!(written.get(&store, &key).is_none());
        written.record(svc("dns", "4", "LoadBalancer"));
        assert!(written.state(&store).is_empty());
    }

    #[test]
    fn a_deletion_seen_by_the_watch_forgets_the_write() {
        let (store, _writer) = reflector::store::<Service>();
        let written = Written::new(false);
        written.record(svc("dns", "3", "LoadBalancer"));
        written.forget_deleted(&watcher::Event::Delete(svc("dns", "4", "LoadBalancer")));
        assert!(written
            .get(&store, &ObjectRef::new("dns").within("shop"))
            .is_none());
    }

    #[test]
    fn a_write_is_kept_pruned_as_the_cache_keeps_objects() {
        let (store, _writer) = reflector::store::<Service>();
        let written = Written::new(false);
        let mut returned = svc("api", "6", "LoadBalancer");
        returned.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{}".into(),
                ),
                ("team".into(), "payments".into()),
            ]
            .into(),
        );
        written.record(returned);
        let kept = written
            .get(&store, &ObjectRef::new("api").within("shop"))
            .unwrap();
        assert_eq!(kept.metadata.annotations, None);
        assert_eq!(type_of(Some(kept)).as_deref(), Some("LoadBalancer"));
    }

    #[test]
    fn a_dry_run_records_nothing() {
        let (store, _writer) = reflector::store::<Service>();
        let written = Written::new(true);
        written.record(svc("api", "6", "LoadBalancer"));
        assert!(written
            .get(&store, &ObjectRef::new("api").within("shop"))
            .is_none());
    }
}
