//! Object storage with a global resourceVersion counter and a bounded event history that watches replay.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

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

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events up to and including this resourceVersion have been dropped from the history.
    compacted_rv: u64,
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

    /// Objects of one resource in key order, optionally limited to one namespace.
    pub fn list<'a>(
        &'a self,
        storage_key: &str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(storage_key)
            .into_iter()
            .flat_map(|objs| objs.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, v)| v)
    }

    /// Every stored object with its storage key.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.objects
            .iter()
            .flat_map(|(key, objs)| objs.values().map(move |v| (key.as_str(), v)))
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
            .insert(key, object.clone());
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
            .iter()
            .skip(start)
            .filter(|e| e.storage_key == storage_key)
            .cloned()
            .collect())
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
}
