//! A minimal OpenAPI v3 surface: enough for kubectl to learn that every PATCH endpoint takes
//! `fieldValidation` (so it validates server-side instead of downloading OpenAPI v2), plus the CRD schemas.
//! Built-in kinds have no schemas here; kubectl then computes strategic merge patches from its compiled-in types.

use crate::registry::{Registry, ResourceType};
use serde_json::{json, Map, Value};
use std::hash::{DefaultHasher, Hash, Hasher};

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn all_group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), "v1".to_string())];
    for group in registry.groups() {
        for version in registry.versions(&group) {
            out.push((group.clone(), version));
        }
    }
    out
}

/// `/openapi/v3`: one entry per group version, with a hash that changes when its document does.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in all_group_versions(registry) {
        let doc = group_version(registry, &group, &version).unwrap_or(Value::Null);
        let mut hasher = DefaultHasher::new();
        doc.to_string().hash(&mut hasher);
        let path = group_version_path(&group, &version);
        let url = format!("/openapi/v3/{path}?hash={:016X}", hasher.finish());
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn gvk(t: &ResourceType) -> Value {
    json!({"group": t.group, "version": t.version, "kind": t.kind})
}

fn patch_operation(t: &ResourceType) -> Value {
    let query = |name: &str, ty: &str| json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}});
    json!({
        "operationId": format!("patch{}", t.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": gvk(t),
        "parameters": [
            query("dryRun", "string"),
            query("fieldManager", "string"),
            query("fieldValidation", "string"),
            query("force", "boolean"),
        ],
        "responses": {"200": {"description": "OK"}},
    })
}

/// The document of one group version, or `None` when it is not served.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = registry.resources(group, version);
    if resources.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for t in &resources {
        let item = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        paths.insert(item.clone(), json!({"patch": patch_operation(t)}));
        if t.status_subresource {
            paths.insert(
                format!("{item}/status"),
                json!({"patch": patch_operation(t)}),
            );
        }
        if let Some(cr) = &t.crd {
            let mut schema = cr.schema.clone();
            schema["x-kubernetes-group-version-kind"] = json!([gvk(t)]);
            let reversed: Vec<&str> = t.group.split('.').rev().collect();
            schemas.insert(
                format!("{}.{}.{}", reversed.join("."), t.version, t.kind),
                schema,
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
