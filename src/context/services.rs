//! The Service cache: one compact record per Service in the cluster, not a typed `Service`.
//!
//! A typed `k8s_openapi` Service is 824 bytes before any field is set, and its labels are a B-tree
//! sized for 11 entries. Most Services in a cluster are read by no duty beyond their labels, so
//! the cache keeps each as a [`ServiceRecord`] (its strings packed into one allocation, labels and
//! annotations in key order, and the few spec and status fields a duty reads), and rebuilds a
//! typed Service only for those a duty asks for ([`ServiceCache::select`], [`ServiceCache::get`]).
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

/// Which of a record's optional fields are set.
mod set {
    pub const UID: u8 = 1;
    pub const RESOURCE_VERSION: u8 = 1 << 1;
    pub const TYPE: u8 = 1 << 2;
    pub const CLUSTER_IP: u8 = 1 << 3;
    pub const LABELS: u8 = 1 << 4;
    pub const ANNOTATIONS: u8 = 1 << 5;
    pub const SOURCE_RANGES: u8 = 1 << 6;
}

/// The strings of a record, by position in [`ServiceRecord::ends`]: these six, then each label's
/// key and value, each annotation's, and the source ranges.
const NAMESPACE: usize = 0;
const NAME: usize = 1;
const UID: usize = 2;
const RESOURCE_VERSION: usize = 3;
const TYPE: usize = 4;
const CLUSTER_IP: usize = 5;
const FIXED: usize = 6;

/// What a record keeps of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecKept {
    Absent,
    /// Type, clusterIP and source ranges (a Service the operator did not create).
    Read,
    /// The whole spec (the operator's own DNS Services, whose drift it checks).
    Whole,
}

/// One cached Service: what the duties read of it, packed. All its strings are one allocation
/// (`text`, with their end offsets in `ends`), because a Service is mostly short strings, and
/// one allocation each cost more than the strings themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    text: Box<str>,
    ends: Box<[u32]>,
    labels: u32,
    annotations: u32,
    set: u8,
    spec: SpecKept,
    whole_spec: Option<Box<ServiceSpec>>,
    managed_fields: Option<Box<[ManagedFieldsEntry]>>,
    load_balancer: Option<Box<LoadBalancerStatus>>,
}

/// Builds a record's `text` and `ends`.
#[derive(Default)]
struct Packer {
    text: String,
    ends: Vec<u32>,
    set: u8,
}

impl Packer {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        // An object is at most a few MiB (etcd's request limit), far below u32::MAX.
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
    }

    /// Pushes `s` (an empty string when it is unset) and marks whether it is set.
    fn push_opt(&mut self, s: Option<&str>, bit: u8) {
        if s.is_some() {
            self.set |= bit;
        }
        self.push(s.unwrap_or_default());
    }

    /// Pushes a map's keys and values, in key order; returns how many pairs.
    fn push_map(&mut self, map: Option<&BTreeMap<String, String>>, bit: u8) -> u32 {
        let Some(map) = map else { return 0 };
        self.set |= bit;
        for (key, value) in map {
            self.push(key);
            self.push(value);
        }
        u32::try_from(map.len()).unwrap_or(u32::MAX)
    }
}

impl ServiceRecord {
    /// The record of a Service as [`crate::cache::service`] pruned it. Whatever else the Service
    /// still has (metadata beyond identity, labels, annotations and managedFields; spec fields
    /// beyond type, clusterIP and source ranges unless `whole_spec`; status beyond the load
    /// balancer) is not kept.
    pub fn new(svc: &Service, whole_spec: bool) -> Self {
        let meta = &svc.metadata;
        let mut packer = Packer::default();
        packer.push(meta.namespace.as_deref().unwrap_or_default());
        packer.push(meta.name.as_deref().unwrap_or_default());
        packer.push_opt(meta.uid.as_deref(), set::UID);
        packer.push_opt(meta.resource_version.as_deref(), set::RESOURCE_VERSION);
        let (spec, read) = match &svc.spec {
            None => (SpecKept::Absent, None),
            Some(_) if whole_spec => (SpecKept::Whole, None),
            Some(spec) => (SpecKept::Read, Some(spec)),
        };
        packer.push_opt(read.and_then(|s| s.type_.as_deref()), set::TYPE);
        packer.push_opt(read.and_then(|s| s.cluster_ip.as_deref()), set::CLUSTER_IP);
        let labels = packer.push_map(meta.labels.as_ref(), set::LABELS);
        let annotations = packer.push_map(meta.annotations.as_ref(), set::ANNOTATIONS);
        if let Some(ranges) = read.and_then(|s| s.load_balancer_source_ranges.as_ref()) {
            packer.set |= set::SOURCE_RANGES;
            for range in ranges {
                packer.push(range);
            }
        }
        Self {
            text: packer.text.into(),
            ends: packer.ends.into(),
            labels,
            annotations,
            set: packer.set,
            spec,
            whole_spec: svc
                .spec
                .as_ref()
                .filter(|_| spec == SpecKept::Whole)
                .map(|s| Box::new(s.clone())),
            managed_fields: meta.managed_fields.as_ref().map(|m| m.as_slice().into()),
            load_balancer: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.clone())
                .map(Box::new),
        }
    }

    /// String `i` of the record.
    fn at(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or_default(),
        };
        let end = self.ends.get(i).copied().unwrap_or_default();
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// String `i`, when its field is set.
    fn opt(&self, i: usize, bit: u8) -> Option<&str> {
        (self.set & bit != 0).then(|| self.at(i))
    }

    /// The `n` key-value pairs from string `first` on, sorted by key.
    fn pairs(&self, first: usize, n: u32) -> impl Iterator<Item = (&str, &str)> {
        (0..n as usize).map(move |i| (self.at(first + 2 * i), self.at(first + 2 * i + 1)))
    }

    /// The value for `key` among the `n` pairs from string `first` on.
    fn find(&self, first: usize, n: u32, key: &str) -> Option<&str> {
        let (mut low, mut high) = (0, n as usize);
        while low < high {
            let mid = (low + high) / 2;
            match self.at(first + 2 * mid).cmp(key) {
                std::cmp::Ordering::Equal => return Some(self.at(first + 2 * mid + 1)),
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
            }
        }
        None
    }

    fn first_annotation(&self) -> usize {
        FIXED + 2 * self.labels as usize
    }

    fn map(&self, first: usize, n: u32, bit: u8) -> Option<BTreeMap<String, String>> {
        (self.set & bit != 0).then(|| {
            self.pairs(first, n)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    /// The typed Service again, as [`crate::cache::service`] left it.
    pub fn to_service(&self) -> Service {
        let owned = |s: Option<&str>| s.map(str::to_string);
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let ranges_from = self.first_annotation() + 2 * self.annotations as usize;
        Service {
            metadata: ObjectMeta {
                name: nonempty(self.at(NAME)),
                namespace: nonempty(self.at(NAMESPACE)),
                uid: owned(self.opt(UID, set::UID)),
                resource_version: owned(self.opt(RESOURCE_VERSION, set::RESOURCE_VERSION)),
                labels: self.map(FIXED, self.labels, set::LABELS),
                annotations: self.map(self.first_annotation(), self.annotations, set::ANNOTATIONS),
                managed_fields: self.managed_fields.as_deref().map(<[_]>::to_vec),
                ..Default::default()
            },
            spec: match self.spec {
                SpecKept::Absent => None,
                SpecKept::Read => Some(ServiceSpec {
                    type_: owned(self.opt(TYPE, set::TYPE)),
                    cluster_ip: owned(self.opt(CLUSTER_IP, set::CLUSTER_IP)),
                    load_balancer_source_ranges: (self.set & set::SOURCE_RANGES != 0).then(|| {
                        (ranges_from..self.ends.len())
                            .map(|i| self.at(i).to_string())
                            .collect()
                    }),
                    ..Default::default()
                }),
                SpecKept::Whole => self.whole_spec.as_deref().cloned(),
            },
            status: self.load_balancer.as_ref().map(|lb| ServiceStatus {
                load_balancer: Some((**lb).clone()),
                conditions: None,
            }),
        }
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        self.at(NAME)
    }

    /// The Service's resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        self.opt(RESOURCE_VERSION, set::RESOURCE_VERSION)
    }
}

impl Labels for ServiceRecord {
    fn label(&self, key: &str) -> Option<&str> {
        self.find(FIXED, self.labels, key)
    }
}

impl ServiceFacts for ServiceRecord {
    fn namespace_name(&self) -> &str {
        self.at(NAMESPACE)
    }

    fn annotation_value(&self, key: &str) -> Option<&str> {
        self.find(self.first_annotation(), self.annotations, key)
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
        let key_of = |svc: &Service| {
            let meta = &svc.metadata;
            key(
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
            )
        };
        let mut state = self.write();
        match event {
            watcher::Event::Apply(svc) => {
                state.records.insert(key_of(svc), Arc::new(record(svc)));
            }
            watcher::Event::Delete(svc) => {
                state.records.remove(&key_of(svc));
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(svc) => {
                state
                    .relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(svc), Arc::new(record(svc)));
            }
            watcher::Event::InitDone => {
                if let Some(relist) = state.relist.take() {
                    // Copied once the list is complete, the records and their keys are packed
                    // together instead of scattered among the freed pages of the list's responses.
                    state.records = relist
                        .into_iter()
                        .map(|(key, record)| (key.clone(), Arc::new((*record).clone())))
                        .collect();
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
        let service = svc(
            "api",
            "3",
            json!({"tier": "web", "app": "api", "zone": "", "team": "Zürich-β"}),
        );
        let kept = record(&service);
        for key in ["app", "tier", "zone", "team", "missing", ""] {
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
