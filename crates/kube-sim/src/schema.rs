//! A walker over OpenAPI v3 schemas, used for the merge semantics of server-side apply and strategic merge
//! patch, plus the sparse schemas of the built-in kinds.
//!
//! Built-in kinds only describe what changes merging (list types and keys, atomic maps, patch strategies,
//! key defaults); everything else falls back to the defaults of structured-merge-diff: maps are granular,
//! lists are atomic.

use serde_json::{json, Value};
use std::sync::OnceLock;

/// How a list merges (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    Atomic,
    Set,
    /// Associative list keyed by these fields.
    Map(Vec<String>),
}

/// A position in a schema. `None` nodes are unknown (no schema): granular maps, atomic lists.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    node: Option<&'a Value>,
    /// The root of an object: `metadata` gets the shared ObjectMeta schema.
    root: bool,
}

impl<'a> Schema<'a> {
    pub fn root(node: Option<&'a Value>) -> Self {
        Schema { node, root: true }
    }

    pub fn unknown() -> Self {
        Schema {
            node: None,
            root: false,
        }
    }

    fn at(node: Option<&'a Value>) -> Self {
        Schema { node, root: false }
    }

    /// The schema of a map entry or object property.
    pub fn field(&self, name: &str) -> Schema<'a> {
        if self.root && name == "metadata" {
            return Schema::at(Some(object_meta()));
        }
        let Some(node) = self.node else {
            return Schema::unknown();
        };
        if let Some(prop) = node.get("properties").and_then(|p| p.get(name)) {
            return Schema::at(Some(prop));
        }
        match node.get("additionalProperties") {
            Some(ap) if ap.is_object() => Schema::at(Some(ap)),
            _ => Schema::unknown(),
        }
    }

    pub fn items(&self) -> Schema<'a> {
        Schema::at(self.node.and_then(|n| n.get("items")))
    }

    fn ext(&self, key: &str) -> Option<&'a Value> {
        self.node?.get(key)
    }

    pub fn list_type(&self) -> ListType {
        match self.ext("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                self.ext("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }

    /// `x-kubernetes-map-type: atomic` (or a struct marked atomic): replaced as a whole, owned as one field.
    pub fn is_atomic_map(&self) -> bool {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    pub fn default_value(&self) -> Option<&'a Value> {
        self.ext("default")
    }

    /// Strategic-merge-patch strategy for a list: `Some(merge_key)` merges items by that key,
    /// `Some("")` merges a primitive list as a set, `None` replaces.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        let strategy = self
            .ext("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)?;
        if !strategy.split(',').any(|s| s == "merge") {
            return None;
        }
        Some(
            self.ext("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
    }
}

fn map_list(keys: &[&str], merge_key: &str, items: Value) -> Value {
    json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": keys,
        "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-patch-merge-key": merge_key,
        "items": items,
    })
}

fn conditions() -> Value {
    map_list(&["type"], "type", json!({"type": "object"}))
}

/// ObjectMeta: labels/annotations are granular maps, finalizers a set, ownerReferences keyed by uid.
pub fn object_meta() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        json!({
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "finalizers": {
                    "type": "array", "items": {"type": "string"},
                    "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge",
                },
                "ownerReferences": map_list(&["uid"], "uid", json!({"type": "object"})),
            },
        })
    })
}

fn container_list() -> Value {
    map_list(
        &["name"],
        "name",
        json!({
            "type": "object",
            "properties": {
                "ports": map_list(&["containerPort", "protocol"], "containerPort", json!({
                    "type": "object",
                    "properties": {"protocol": {"type": "string", "default": "TCP"}},
                })),
                "env": map_list(&["name"], "name", json!({"type": "object"})),
                "volumeMounts": map_list(&["mountPath"], "mountPath", json!({"type": "object"})),
            },
        }),
    )
}

/// Sparse schemas of the built-in kinds, keyed by `group/version/Kind` (core group: `v1/Kind`).
pub fn builtin(api_version: &str, kind: &str) -> Option<&'static Value> {
    static SCHEMAS: OnceLock<Vec<(&'static str, &'static str, Value)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        vec![
            (
                "v1",
                "Service",
                json!({"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "ports": map_list(&["port", "protocol"], "port", json!({
                            "type": "object",
                            "properties": {"protocol": {"type": "string", "default": "TCP"}},
                        })),
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                    }},
                    "status": {"type": "object", "properties": {"conditions": conditions()}},
                }}),
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                        "template": {"type": "object", "properties": {"spec": {"type": "object", "properties": {
                            "containers": container_list(),
                            "initContainers": container_list(),
                            "volumes": map_list(&["name"], "name", json!({"type": "object"})),
                            "imagePullSecrets": map_list(&["name"], "name", json!({"type": "object"})),
                        }}}},
                    }},
                    "status": {"type": "object", "properties": {"conditions": conditions()}},
                }}),
            ),
            (
                "v1",
                "Namespace",
                json!({"type": "object", "properties": {
                    "status": {"type": "object", "properties": {"conditions": conditions()}},
                }}),
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                json!({"type": "object", "properties": {
                    "status": {"type": "object", "properties": {"conditions": conditions()}},
                }}),
            ),
        ]
    });
    schemas
        .iter()
        .find(|(av, k, _)| *av == api_version && *k == kind)
        .map(|(_, _, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ports_are_a_map_list_with_defaulted_protocol() {
        let svc = Schema::root(builtin("v1", "Service"));
        let ports = svc.field("spec").field("ports");
        assert_eq!(
            ports.list_type(),
            ListType::Map(vec!["port".into(), "protocol".into()])
        );
        assert_eq!(ports.patch_merge_key(), Some("port"));
        assert_eq!(
            ports.items().field("protocol").default_value(),
            Some(&json!("TCP"))
        );
        assert!(svc.field("spec").field("selector").is_atomic_map());
    }

    #[test]
    fn metadata_is_shared_and_unknown_lists_are_atomic() {
        let cr = json!({"type": "object", "properties": {"spec": {"type": "object"}}});
        let root = Schema::root(Some(&cr));
        assert_eq!(
            root.field("metadata").field("finalizers").list_type(),
            ListType::Set
        );
        assert_eq!(
            root.field("spec").field("anything").list_type(),
            ListType::Atomic
        );
    }
}
