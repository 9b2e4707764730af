//! Object storage with a global resourceVersion counter and a bounded event history that watches replay,
//! and the indexes that keep a write's cost independent of how many objects are stored: uids and owner
//! references (garbage collection), each namespace's contents, core Events by the object they are
//! about, and what Services hold (ClusterIPs, node ports).

use crate::object;
use crate::service::Holdings;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

const SERVICES: &str = "services";
const CORE_EVENTS: &str = "events";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as the watch cache keeps it.
#[derive(Debug)]
pub struct StoredEvent {
    pub rv: u64,
    pub storage_key: String,
    pub kind: EventType,
    /// The object after the change (for deletions: its last state, carrying the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change, so watches can tell when it starts or stops matching their selectors.
    pub previous: Option<Value>,
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// An object's place in the store: storage key, then `(namespace, name)`.
pub type StoredKey = (String, ObjectKey);

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events up to and including this resourceVersion have been dropped from the history.
    compacted_rv: u64,
    index: Index,
}

/// Derived from `objects`; changed only where `objects` is.
#[derive(Debug, Default)]
struct Index {
    uids: HashSet<String>,
    /// The objects that name each uid in their ownerReferences.
    dependents: HashMap<String, BTreeSet<StoredKey>>,
    /// `(storage key, name)` of the objects in each namespace.
    namespaces: HashMap<String, BTreeSet<(String, String)>>,
    /// Core Events by `involvedObject.uid`.
    events_regarding: HashMap<String, BTreeSet<ObjectKey>>,
    services: Holdings,
}

fn uid(obj: &Value) -> Option<&str> {
    object::meta_str(obj, "uid").filter(|u| !u.is_empty())
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    object::meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn event_subject(event: &Value) -> Option<&str> {
    event["involvedObject"]["uid"].as_str()
}

impl Index {
    fn forget(&mut self, storage_key: &str, key: &ObjectKey, old: &Value) {
        if let Some(uid) = uid(old) {
            self.uids.remove(uid);
        }
        let stored_key = (storage_key.to_string(), key.clone());
        for owner in owner_uids(old) {
            if let Some(deps) = self.dependents.get_mut(owner) {
                deps.remove(&stored_key);
                if deps.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        if !key.0.is_empty() {
            if let Some(contents) = self.namespaces.get_mut(&key.0) {
                contents.remove(&(storage_key.to_string(), key.1.clone()));
                if contents.is_empty() {
                    self.namespaces.remove(&key.0);
                }
            }
        }
        match storage_key {
            SERVICES => self.services.remove(old),
            CORE_EVENTS => {
                if let Some(subject) = event_subject(old) {
                    if let Some(events) = self.events_regarding.get_mut(subject) {
                        events.remove(key);
                        if events.is_empty() {
                            self.events_regarding.remove(subject);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn learn(&mut self, storage_key: &str, key: &ObjectKey, new: &Value) {
        if let Some(uid) = uid(new) {
            self.uids.insert(uid.to_string());
        }
        for owner in owner_uids(new) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert((storage_key.to_string(), key.clone()));
        }
        if !key.0.is_empty() {
            self.namespaces
                .entry(key.0.clone())
                .or_default()
                .insert((storage_key.to_string(), key.1.clone()));
        }
        match storage_key {
            SERVICES => self.services.add(new),
            CORE_EVENTS => {
                if let Some(subject) = event_subject(new) {
                    self.events_regarding
                        .entry(subject.to_string())
                        .or_default()
                        .insert(key.clone());
                }
            }
            _ => {}
        }
    }
}

/// The `(namespace, name)` an object is stored under.
fn object_key(object: &Value) -> ObjectKey {
    let meta = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (meta("namespace"), meta("name"))
}

/// A watch asked to resume from a resourceVersion the history no longer covers.
#[derive(Debug, Clone, Copy)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            compacted_rv: 0,
            index: Index::default(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, storage_key: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage_key)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of one resource in key order, optionally limited to one namespace (without looking at
    /// the other namespaces' objects).
    pub fn list<'a>(
        &'a self,
        storage_key: &str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let from = match namespace {
            Some(ns) => Bound::Included((ns.to_string(), String::new())),
            None => Bound::Unbounded,
        };
        self.objects
            .get(storage_key)
            .into_iter()
            .flat_map(move |objs| objs.range((from.clone(), Bound::Unbounded)))
            .take_while(move |((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, v)| v)
    }

    /// Objects of one resource as they were at `rv`, in key order, starting after `after`: what
    /// etcd serves for the pages of a list after the first (every page of a list is read at the
    /// first page's revision). `TooOld` when the history no longer reaches back to `rv`.
    pub fn list_at<'a>(
        &'a self,
        storage_key: &str,
        namespace: Option<&'a str>,
        rv: u64,
        after: Option<&ObjectKey>,
    ) -> Result<Vec<&'a Value>, TooOld> {
        if rv < self.compacted_rv {
            return Err(TooOld {
                requested: rv,
                oldest: self.compacted_rv + 1,
            });
        }
        // What each object changed since `rv` was before its first change: absent for one created
        // since, its old self for one changed or deleted since.
        let mut then: BTreeMap<ObjectKey, Option<&Value>> = BTreeMap::new();
        let start = self.history.partition_point(|e| e.rv <= rv);
        for event in self.history.range(start..) {
            if event.storage_key != storage_key {
                continue;
            }
            then.entry(object_key(&event.object))
                .or_insert(event.previous.as_ref());
        }
        let wanted = |key: &ObjectKey| {
            namespace.is_none_or(|ns| key.0 == ns) && after.is_none_or(|a| key > a)
        };
        let now = self
            .objects
            .get(storage_key)
            .into_iter()
            .flat_map(|objs| objs.iter())
            .filter(|(key, _)| wanted(key) && !then.contains_key(*key))
            .map(|(key, v)| (key.clone(), v));
        let mut items: Vec<(ObjectKey, &Value)> = now
            .chain(
                then.iter()
                    .filter(|(key, _)| wanted(key))
                    .filter_map(|(key, v)| Some((key.clone(), (*v)?))),
            )
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    /// Whether an object with this uid is stored.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.index.uids.contains(uid)
    }

    /// The objects whose ownerReferences name `owner_uid`, in storage order.
    pub fn dependents(&self, owner_uid: &str) -> Vec<StoredKey> {
        self.index
            .dependents
            .get(owner_uid)
            .map(|deps| deps.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects in a namespace, as `(storage key, object)` in storage order.
    pub fn namespace_contents<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.index
            .namespaces
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(move |(storage_key, name)| {
                let obj = self
                    .objects
                    .get(storage_key)?
                    .get(&(namespace.to_string(), name.clone()))?;
                Some((storage_key.as_str(), obj))
            })
    }

    /// Core Events whose `involvedObject.uid` is `uid`, in storage order.
    pub fn events_regarding<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a Value> + 'a {
        self.index
            .events_regarding
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| self.objects.get(CORE_EVENTS)?.get(key))
    }

    /// What the stored Services hold.
    pub fn service_holdings(&self) -> &Holdings {
        &self.index.services
    }

    /// Stores a new or changed object under the next resourceVersion and records the event.
    pub fn put(&mut self, storage_key: &str, key: ObjectKey, mut object: Value) -> Value {
        self.rv += 1;
        crate::object::meta_mut(&mut object)
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let previous = self
            .objects
            .entry(storage_key.to_string())
            .or_default()
            .insert(key.clone(), object.clone());
        if let Some(previous) = &previous {
            self.index.forget(storage_key, &key, previous);
        }
        self.index.learn(storage_key, &key, &object);
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(storage_key, kind, object.clone(), previous);
        object
    }

    /// Removes an object; the DELETED event carries its last state under a new resourceVersion.
    pub fn remove(&mut self, storage_key: &str, key: &ObjectKey) -> Option<Value> {
        let last = self.objects.get(storage_key)?.get(key)?.clone();
        self.remove_as(storage_key, key, last)
    }

    /// Removes an object whose final state is `object` (an update that dropped the last finalizer).
    pub fn remove_as(
        &mut self,
        storage_key: &str,
        key: &ObjectKey,
        mut object: Value,
    ) -> Option<Value> {
        let previous = self.objects.get_mut(storage_key)?.remove(key)?;
        self.index.forget(storage_key, key, &previous);
        self.rv += 1;
        crate::object::meta_mut(&mut object)
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        self.record(
            storage_key,
            EventType::Deleted,
            object.clone(),
            Some(previous),
        );
        Some(object)
    }

    fn record(
        &mut self,
        storage_key: &str,
        kind: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push_back(Arc::new(StoredEvent {
            rv: self.rv,
            storage_key: storage_key.to_string(),
            kind,
            object,
            previous,
        }));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
    }

    /// Compacts the history at the current resourceVersion, as etcd's compaction (every 5 minutes on a
    /// real cluster) and the watch cache's eviction leave it: a watch from any older resourceVersion is
    /// too old; one from the current resourceVersion still misses nothing. Returns that resourceVersion.
    pub fn compact(&mut self) -> u64 {
        self.history.clear();
        self.compacted_rv = self.rv;
        self.rv
    }

    /// Events of one resource after `rv`, or `TooOld` when some of them were compacted away.
    pub fn events_since(
        &self,
        storage_key: &str,
        rv: u64,
    ) -> Result<Vec<Arc<StoredEvent>>, TooOld> {
        if rv < self.compacted_rv {
            return Err(TooOld {
                requested: rv,
                oldest: self.compacted_rv + 1,
            });
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.storage_key == storage_key)
            .cloned()
            .collect())
    }
}

/// Follows one resource through the history, as an informer follows its watch: which objects changed
/// since the last look, or that everything must be looked at again (the first look, or a history that
/// no longer reaches back that far, as an informer relists after a 410).
#[derive(Debug)]
pub struct Follower {
    storage_key: String,
    seen: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Everything,
    /// The keys of the objects written or removed since the last look.
    Only(BTreeSet<ObjectKey>),
}

impl Follower {
    pub fn new(storage_key: &str) -> Self {
        Follower {
            storage_key: storage_key.to_string(),
            seen: None,
        }
    }

    pub fn poll(&mut self, store: &Store) -> Changed {
        let changed = match self.seen {
            None => Changed::Everything,
            Some(rv) => match store.events_since(&self.storage_key, rv) {
                Err(_) => Changed::Everything,
                Ok(events) => Changed::Only(
                    events
                        .iter()
                        .map(|e| {
                            (
                                object::namespace(&e.object).unwrap_or_default().to_string(),
                                object::name(&e.object).to_string(),
                            )
                        })
                        .collect(),
                ),
            },
        };
        self.seen = Some(store.current_rv());
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ("ns".into(), name.into())
    }

    #[test]
    fn resource_versions_increase_and_history_replays() {
        let mut store = Store::new(10);
        let a = store.put("configmaps", key("a"), json!({"metadata": {"name": "a"}}));
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        store.put(
            "configmaps",
            key("a"),
            json!({"metadata": {"name": "a"}, "data": {"x": "1"}}),
        );
        store.put("secrets", key("s"), json!({"metadata": {"name": "s"}}));
        let deleted = store.remove("configmaps", &key("a")).unwrap();
        assert_eq!(deleted["metadata"]["resourceVersion"], "4");
        let kinds: Vec<EventType> = store
            .events_since("configmaps", 1)
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec![EventType::Modified, EventType::Deleted]);
        assert!(store.list("configmaps", None).next().is_none());
    }

    #[test]
    fn compacted_history_is_too_old() {
        let mut store = Store::new(2);
        for i in 0..5 {
            store.put("configmaps", key(&i.to_string()), json!({"metadata": {}}));
        }
        assert!(store.events_since("configmaps", 1).is_err());
        assert_eq!(store.events_since("configmaps", 3).unwrap().len(), 2);
    }

    #[test]
    fn compaction_makes_every_older_version_too_old() {
        let mut store = Store::new(100);
        for i in 0..3 {
            store.put("configmaps", key(&i.to_string()), json!({"metadata": {}}));
        }
        assert_eq!(store.compact(), 3);
        assert!(store.events_since("configmaps", 2).is_err());
        assert!(store.events_since("configmaps", 3).unwrap().is_empty());
        store.put("configmaps", key("3"), json!({"metadata": {}}));
        assert_eq!(store.events_since("configmaps", 3).unwrap().len(), 1);
    }

    #[test]
    fn namespace_lists_and_indexes_follow_writes_and_removals() {
        let mut store = Store::new(100);
        let owner = json!({"metadata": {"name": "o", "namespace": "a", "uid": "u-owner"}});
        let dependent = |ns: &str, name: &str| {
            json!({"metadata": {"name": name, "namespace": ns, "uid": format!("u-{name}"),
                "ownerReferences": [{"uid": "u-owner"}]}})
        };
        store.put("configmaps", ("a".into(), "o".into()), owner);
        store.put(
            "configmaps",
            ("b".into(), "d1".into()),
            dependent("b", "d1"),
        );
        store.put("secrets", ("a".into(), "d2".into()), dependent("a", "d2"));
        store.put(
            "configmaps",
            ("c".into(), "x".into()),
            json!({"metadata": {"name": "x", "namespace": "c"}}),
        );
        let names = |ns| -> Vec<String> {
            store
                .list("configmaps", Some(ns))
                .map(|o| object::name(o).to_string())
                .collect()
        };
        assert_eq!(
            (names("a"), names("b"), names("bb")),
            (vec!["o".to_string()], vec!["d1".to_string()], vec![])
        );
        assert!(store.has_uid("u-owner"));
        assert_eq!(
            store.dependents("u-owner"),
            vec![
                (
                    "configmaps".to_string(),
                    ("b".to_string(), "d1".to_string())
                ),
                ("secrets".to_string(), ("a".to_string(), "d2".to_string())),
            ]
        );
        let in_a: Vec<(&str, &str)> = store
            .namespace_contents("a")
            .map(|(k, o)| (k, object::name(o)))
            .collect();
        assert_eq!(in_a, vec![("configmaps", "o"), ("secrets", "d2")]);

        // An update that drops the owner reference, and removals.
        store.put(
            "secrets",
            ("a".into(), "d2".into()),
            json!({"metadata": {"name": "d2", "namespace": "a", "uid": "u-d2"}}),
        );
        store.remove("configmaps", &("a".into(), "o".into()));
        assert!(!store.has_uid("u-owner") && store.has_uid("u-d2"));
        assert_eq!(store.dependents("u-owner").len(), 1);
        let in_a: Vec<&str> = store
            .namespace_contents("a")
            .map(|(_, o)| object::name(o))
            .collect();
        assert_eq!(in_a, vec!["d2"]);
    }

    #[test]
    fn a_follower_sees_changed_keys_or_everything_after_compaction() {
        let mut store = Store::new(3);
        let mut follower = Follower::new("configmaps");
        assert_eq!(follower.poll(&store), Changed::Everything);
        store.put(
            "configmaps",
            key("a"),
            json!({"metadata": {"name": "a", "namespace": "ns"}}),
        );
        store.put(
            "secrets",
            key("s"),
            json!({"metadata": {"name": "s", "namespace": "ns"}}),
        );
        store.remove("configmaps", &key("a"));
        assert_eq!(
            follower.poll(&store),
            Changed::Only(BTreeSet::from([key("a")]))
        );
        assert_eq!(follower.poll(&store), Changed::Only(BTreeSet::new()));
        for i in 0..4 {
            store.put("secrets", key(&i.to_string()), json!({"metadata": {}}));
        }
        assert_eq!(follower.poll(&store), Changed::Everything);
        store.compact();
        assert_eq!(follower.poll(&store), Changed::Only(BTreeSet::new()));
    }
}
