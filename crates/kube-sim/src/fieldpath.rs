//! Field sets as structured-merge-diff models them, and their `FieldsV1` wire encoding
//! (`f:name`, `k:{"port":80,"protocol":"TCP"}`, `v:"value"`, `i:0`, and `.` for "this node itself").

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One step of a path. Keys and values hold canonical JSON (sorted keys) so they compare and order cheaply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    Key(String),
    Value(String),
    Index(usize),
}

impl PathElement {
    /// The associative-list key of `item`: its key fields (defaulted from the item schema when absent).
    pub fn key(fields: &Map<String, Value>) -> PathElement {
        PathElement::Key(Value::Object(fields.clone()).to_string())
    }

    pub fn value(v: &Value) -> PathElement {
        PathElement::Value(v.to_string())
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<PathElement> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            // Re-serialize so that keys from other writers compare canonically.
            "k:" => Some(PathElement::Key(
                serde_json::from_str::<Value>(rest).ok()?.to_string(),
            )),
            "v:" => Some(PathElement::Value(
                serde_json::from_str::<Value>(rest).ok()?.to_string(),
            )),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

/// Displays like `fieldpath.PathElement.String()`: `.name`, `[port=80,protocol="TCP"]`, `[="x"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(k) => {
                let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub type Path = Vec<PathElement>;

pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of paths: `members` end at this node, `children` continue below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether `path` itself or anything below it is in the set.
    pub fn touches(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [last] => {
                self.members.contains(last)
                    || self.children.get(last).is_some_and(|c| !c.is_empty())
            }
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.touches(rest)),
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = out
                .children
                .get(pe)
                .map_or_else(|| child.clone(), |mine| mine.union(child));
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Paths in `self` that are not in `other` (exact paths, not prefixes).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = child.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Removes every path that `other` contains or that lies below one of `other`'s paths.
    pub fn without_prefixes(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let rest = match other.children.get(pe) {
                Some(o) => child.without_prefixes(o),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    /// Only what lies at or below the top-level element `pe`.
    pub fn restrict_to(&self, pe: &PathElement) -> FieldSet {
        let mut out = FieldSet::default();
        if self.members.contains(pe) {
            out.members.insert(pe.clone());
        }
        if let Some(child) = self.children.get(pe) {
            out.children.insert(pe.clone(), child.clone());
        }
        out
    }

    /// All member paths, depth first.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(pe) {
                child.collect(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON object.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for pe in &self.members {
            map.insert(pe.encode(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            if child.is_empty() {
                continue;
            }
            let mut encoded = child.to_fields_v1();
            if self.members.contains(pe) {
                encoded
                    .as_object_mut()
                    .expect("object")
                    .insert(".".into(), Value::Object(Map::new()));
            }
            map.insert(pe.encode(), encoded);
        }
        Value::Object(map)
    }

    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let map = value.as_object().ok_or("fieldsV1 must be an object")?;
        let mut set = FieldSet::default();
        for (key, child) in map {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)
                .ok_or_else(|| format!("invalid fieldsV1 path element {key:?}"))?;
            let child_map = child
                .as_object()
                .ok_or("fieldsV1 entries must be objects")?;
            if child_map.is_empty() || child_map.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let sub = FieldSet::from_fields_v1(child)?;
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn fields_v1_round_trip_with_dot_markers() {
        let v = json!({
            "f:metadata": {"f:annotations": {".": {}, "f:a": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}, "f:type": {}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.contains(&[f("spec"), f("type")]));
        assert!(set.contains(&[f("metadata"), f("annotations")]));
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[f("data"), f("x")]);
        a.insert(&[f("data"), f("y")]);
        let mut b = FieldSet::default();
        b.insert(&[f("data"), f("y")]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("data"), f("x")]]);
        assert_eq!(a.intersection(&b), b);
        let mut prefix = FieldSet::default();
        prefix.insert(&[f("data")]);
        assert!(a.without_prefixes(&prefix).is_empty());
    }

    #[test]
    fn displays_like_structured_merge_diff() {
        let key = PathElement::key(json!({"port": 80, "protocol": "TCP"}).as_object().unwrap());
        assert_eq!(
            path_string(&[f("spec"), f("ports"), key, f("nodePort")]),
            ".spec.ports[port=80,protocol=\"TCP\"].nodePort"
        );
    }
}
