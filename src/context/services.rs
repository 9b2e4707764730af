//! The Service cache: one compact record per Service in the cluster, not a typed `Service`.
//!
//! A typed `k8s_openapi` Service is 824 bytes before any field is set, and its labels are a B-tree
//! sized for 11 entries. Most Services in a cluster are read by no duty beyond their labels, so
//! the cache keeps each as a [`ServiceRecord`] (its strings, sorted label and annotation slices, and
//! the few spec and status fields a duty reads), and rebuilds a typed Service only for those a duty
//! asks for ([`ServiceCache::select`], [`ServiceCache::get`]).
//!
//! A record keeps exactly what [`crate::cache::service`] leaves of a Service: rebuilding it gives
//! that pruned Service back, field for field (`src/cache/tests.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::runtime::watcher;

/// What a label selector reads of an object: the value of one label.
pub trait Labels {
    /// The value of label `key`, if it is set.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for Service {
    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.label(key)
    }
}

/// What choosing Services reads, of a cached record and of a typed Service alike: labels,
/// namespace and annotations.
pub trait ServiceFacts: Labels {
    /// The Service's namespace (empty when it has none).
    fn namespace_name(&self) -> &str;
    /// The value of annotation `key`, if it is set.
    fn annotation_value(&self, key: &str) -> Option<&str>;
}

impl ServiceFacts for Service {
    fn namespace_name(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    fn annotation_value(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.label(key)
    }
}

/// Key-value pairs sorted by key: labels or annotations, in a quarter of a B-tree node's room.
type Pairs = Box<[(Box<str>, Box<str>)]>;

/// The spec fields a record keeps.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Absent,
    /// What the duties read of a Service the operator did not create.
    Read {
        type_: Option<Box<str>>,
        cluster_ip: Option<Box<str>>,
        source_ranges: Option<Box<[Box<str>]>>,
    },
    /// The whole spec (the operator's own DNS Services, whose drift it checks).
    Whole(Box<ServiceSpec>),
}

/// One cached Service: what the duties read of it, compactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    namespace: Box<str>,
    name: Box<str>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    labels: Option<Pairs>,
    annotations: Option<Pairs>,
    managed_fields: Option<Box<[ManagedFieldsEntry]>>,
    spec: Spec,
    load_balancer: Option<Box<LoadBalancerStatus>>,
}

fn pairs(map: &Option<BTreeMap<String, String>>) -> Option<Pairs> {
    // A BTreeMap iterates in key order, so the slice is sorted.
    map.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect()
    })
}

fn map(pairs: &Option<Pairs>) -> Option<BTreeMap<String, String>> {
    pairs.as_ref().map(|p| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn find<'a>(pairs: &'a Option<Pairs>, key: &str) -> Option<&'a str> {
    let pairs = pairs.as_deref()?;
    let i = pairs.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
    Some(&pairs[i].1)
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Into::into)
}

impl ServiceRecord {
    /// The record of a Service as [`crate::cache::service`] pruned it. Whatever else the Service
    /// still has (metadata beyond identity, labels, annotations and managedFields; spec fields
    /// beyond type, clusterIP and source ranges unless `whole_spec`; status beyond the load
    /// balancer) is not kept.
    pub fn new(svc: &Service, whole_spec: bool) -> Self {
        let meta = &svc.metadata;
        let spec = match &svc.spec {
            None => Spec::Absent,
            Some(spec) if whole_spec => Spec::Whole(Box::new(spec.clone())),
            Some(spec) => Spec::Read {
                type_: boxed(&spec.type_),
                cluster_ip: boxed(&spec.cluster_ip),
                source_ranges: spec
                    .load_balancer_source_ranges
                    .as_ref()
                    .map(|r| r.iter().map(|s| s.as_str().into()).collect()),
            },
        };
        Self {
            namespace: meta.namespace.as_deref().unwrap_or_default().into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
            uid: boxed(&meta.uid),
            resource_version: boxed(&meta.resource_version),
            labels: pairs(&meta.labels),
            annotations: pairs(&meta.annotations),
            managed_fields: meta.managed_fields.as_ref().map(|m| m.as_slice().into()),
            spec,
            load_balancer: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.clone())
                .map(Box::new),
        }
    }

    /// The typed Service again, as [`crate::cache::service`] left it.
    pub fn to_service(&self) -> Service {
        let name = (!self.name.is_empty()).then(|| self.name.to_string());
        let namespace = (!self.namespace.is_empty()).then(|| self.namespace.to_string());
        Service {
            metadata: ObjectMeta {
                name,
                namespace,
                uid: self.uid.as_deref().map(str::to_string),
                resource_version: self.resource_version.as_deref().map(str::to_string),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                managed_fields: self.managed_fields.as_deref().map(<[_]>::to_vec),
                ..Default::default()
            },
            spec: match &self.spec {
                Spec::Absent => None,
                Spec::Read {
                    type_,
                    cluster_ip,
                    source_ranges,
                } => Some(ServiceSpec {
                    type_: type_.as_deref().map(str::to_string),
                    cluster_ip: cluster_ip.as_deref().map(str::to_string),
                    load_balancer_source_ranges: source_ranges
                        .as_ref()
                        .map(|r| r.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                }),
                Spec::Whole(spec) => Some((**spec).clone()),
            },
            status: self.load_balancer.as_ref().map(|lb| ServiceStatus {
                load_balancer: Some((**lb).clone()),
                conditions: None,
            }),
        }
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Service's resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }
}

impl Labels for ServiceRecord {
    fn label(&self, key: &str) -> Option<&str> {
        find(&self.labels, key)
    }
}

impl ServiceFacts for ServiceRecord {
    fn namespace_name(&self) -> &str {
        &self.namespace
    }

    fn annotation_value(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }
}

/// A Service's key in the cache: `namespace/name`.
fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into()
}

/// Every Service of the cluster as a [`ServiceRecord`], kept up to date from a Service watch
/// ([`ServiceCache::apply`]), as kube-runtime's reflector keeps its store: a relist is gathered
/// apart and replaces the whole cache once it is complete.
#[derive(Default)]
pub struct ServiceCache {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    records: HashMap<Box<str>, Arc<ServiceRecord>>,
    /// A relist in progress.
    relist: Option<HashMap<Box<str>, Arc<ServiceRecord>>>,
}

impl ServiceCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one watch event; `record` turns a (pruned) Service into its record.
    pub fn apply(
        &self,
        event: &watcher::Event<Service>,
        record: impl Fn(&Service) -> ServiceRecord,
    ) {
        let entry = |svc: &Service| {
            let record = record(svc);
            (key(&record.namespace, &record.name), Arc::new(record))
        };
        let mut state = self.write();
        match event {
            watcher::Event::Apply(svc) => {
                let (key, record) = entry(svc);
                state.records.insert(key, record);
            }
            watcher::Event::Delete(svc) => {
                let (key, _) = entry(svc);
                state.records.remove(&key);
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(svc) => {
                let (key, record) = entry(svc);
                state
                    .relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key, record);
            }
            watcher::Event::InitDone => {
                if let Some(mut relist) = state.relist.take() {
                    relist.shrink_to_fit();
                    state.records = relist;
                }
            }
        }
    }

    /// The record of Service `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceRecord>> {
        self.read().records.get(&key(namespace, name)).cloned()
    }

    /// Every record for which `keep` is true.
    pub fn select(&self, keep: impl Fn(&ServiceRecord) -> bool) -> Vec<Arc<ServiceRecord>> {
        self.read()
            .records
            .values()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    /// How many Services the cache holds.
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    /// True when the cache holds no Service.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Only held for map operations and `keep`, which do not panic.
        self.state.read().expect("service cache")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().expect("service cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, version: &str, labels: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": version,
                         "labels": labels, "annotations": {"b": "2", "a": "1"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1"},
        }))
        .unwrap()
    }

    fn record(svc: &Service) -> ServiceRecord {
        ServiceRecord::new(svc, false)
    }

    #[test]
    fn a_record_reads_like_the_service_it_keeps() {
        let service = svc("api", "3", json!({"tier": "web", "app": "api", "zone": ""}));
        let kept = record(&service);
        for key in ["app", "tier", "zone", "missing"] {
            assert_eq!(kept.label(key), service.label(key), "label {key}");
        }
        assert_eq!(kept.annotation_value("a"), Some("1"));
        assert_eq!(kept.annotation_value("c"), None);
        assert_eq!(kept.namespace_name(), "shop");
        assert_eq!(kept.to_service(), service);
        let mut bare = service.clone();
        bare.metadata.labels = None;
        bare.spec = None;
        assert_eq!(record(&bare).to_service(), bare);
        assert_eq!(record(&bare).label("app"), None);
    }

    #[test]
    fn a_relist_replaces_the_cache_only_once_it_is_complete() {
        let cache = ServiceCache::new();
        let apply = |event: watcher::Event<Service>| cache.apply(&event, record);
        apply(watcher::Event::Apply(svc("old", "1", json!({}))));
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(svc(
            "api",
            "2",
            json!({"app": "api"}),
        )));
        // Until the relist is done, the cache shows what it had.
        assert!(cache.get("shop", "old").is_some());
        assert!(cache.get("shop", "api").is_none());
        apply(watcher::Event::InitDone);
        assert!(cache.get("shop", "old").is_none());
        assert_eq!(
            cache.get("shop", "api").unwrap().resource_version(),
            Some("2")
        );
        apply(watcher::Event::Apply(svc(
            "web",
            "3",
            json!({"app": "web"}),
        )));
        apply(watcher::Event::Apply(svc(
            "api",
            "4",
            json!({"app": "api"}),
        )));
        assert_eq!(
            cache.get("shop", "api").unwrap().resource_version(),
            Some("4")
        );
        let names = |records: Vec<Arc<ServiceRecord>>| {
            let mut names: Vec<_> = records.iter().map(|r| r.name().to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(
            names(cache.select(|r| r.label("app").is_some())),
            ["api", "web"]
        );
        apply(watcher::Event::Delete(svc("api", "5", json!({}))));
        assert_eq!(names(cache.select(|_| true)), ["web"]);
        assert_eq!(cache.len(), 1);
    }
}
