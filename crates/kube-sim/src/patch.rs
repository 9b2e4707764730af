//! The non-apply patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

use crate::error::ApiError;
use crate::schema::Schema;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a JSON, merge or strategic patch to `live`.
pub fn apply(
    kind: PatchType,
    live: &Value,
    patch: &Value,
    schema: Schema,
) -> Result<Value, ApiError> {
    let patched = match kind {
        PatchType::Merge => {
            let mut doc = live.clone();
            json_patch::merge(&mut doc, patch);
            doc
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            let mut doc = live.clone();
            for op in ops.0.iter() {
                // The apiserver's JSON patch library lets `test` of a missing path against `null` pass;
                // kube-runtime's finalizer helper relies on it when adding the first finalizer.
                if let json_patch::PatchOperation::Test(test) = op {
                    if test.value.is_null() && test.path.resolve(&doc).is_err() {
                        continue;
                    }
                }
                // The apiserver answers a failing operation (including `test`) with 422.
                json_patch::patch(&mut doc, std::slice::from_ref(op))
                    .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
            }
            doc
        }
        PatchType::Strategic => strategic_merge(live, patch, schema)?,
        PatchType::Apply => unreachable!("apply patches go through server-side apply"),
    };
    if !patched.is_object() {
        return Err(ApiError::BadRequest(
            "the patch did not produce an object".into(),
        ));
    }
    Ok(patched)
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Strategic merge patch for maps: like a merge patch, but lists whose schema declares
/// `x-kubernetes-patch-strategy: merge` merge item by item, and the SMP directives are honoured.
pub fn strategic_merge(live: &Value, patch: &Value, schema: Schema) -> Result<Value, ApiError> {
    let Some(patch_map) = patch.as_object() else {
        return Ok(patch.clone());
    };
    match patch_map.get(DIRECTIVE).and_then(Value::as_str) {
        Some("replace") => return Ok(without_directives(patch)),
        Some("delete") => return Ok(Value::Null),
        Some(other) if other != "merge" => {
            return Err(ApiError::BadRequest(format!("unknown patch type: {other}")));
        }
        _ => {}
    }
    let mut out = live.as_object().cloned().unwrap_or_default();
    for (key, value) in patch_map {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let doomed = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let child_schema = schema.field(key);
        let merged = match (out.get(key), value) {
            (Some(current @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(current, value, child_schema)?
            }
            (current, Value::Array(items)) => merge_list(current, items, child_schema)?,
            (None, Value::Object(_)) => {
                strategic_merge(&Value::Object(Map::new()), value, child_schema)?
            }
            _ => value.clone(),
        };
        if merged.is_null() {
            out.remove(key);
        } else {
            out.insert(key.clone(), merged);
        }
    }
    if let Some(Value::Array(retain)) = patch_map.get(RETAIN_KEYS) {
        out.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(Value::Object(out))
}

fn merge_list(
    current: Option<&Value>,
    patch_items: &[Value],
    schema: Schema,
) -> Result<Value, ApiError> {
    let Some(merge_key) = schema.patch_merge_key() else {
        return Ok(Value::Array(
            patch_items.iter().map(without_directives).collect(),
        ));
    };
    let replace = patch_items
        .iter()
        .any(|i| i.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    let mut out: Vec<Value> = match current {
        Some(Value::Array(items)) if !replace => items.clone(),
        _ => Vec::new(),
    };
    if merge_key.is_empty() {
        // A primitive list with strategy merge behaves as a set.
        for item in patch_items {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    for item in patch_items {
        if item.get(DIRECTIVE).and_then(Value::as_str) == Some("replace") {
            continue;
        }
        let key = item.get(merge_key);
        let pos = out
            .iter()
            .position(|existing| key.is_some() && existing.get(merge_key) == key);
        let delete = item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                out.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => out[p] = strategic_merge(&out[p], item, schema.items())?,
            (None, false) => out.push(without_directives(item)),
        }
    }
    Ok(Value::Array(out))
}

fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    k.as_str() != DIRECTIVE
                        && k.as_str() != RETAIN_KEYS
                        && !k.starts_with(SET_ELEMENT_ORDER)
                        && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                })
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builtin;
    use serde_json::json;

    #[test]
    fn strategic_patch_merges_service_ports_by_port() {
        let live = json!({"spec": {"ports": [{"port": 80, "nodePort": 30000}, {"port": 443}], "type": "NodePort"}});
        let patch = json!({
            "$setElementOrder/ports": [{"port": 80}, {"port": 8080}],
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "$patch": "delete"}, {"port": 8080}]}
        });
        let out = strategic_merge(&live, &patch, Schema::root(builtin("v1", "Service"))).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "nodePort": 30000, "name": "http"}, {"port": 8080}])
        );
        assert_eq!(out["spec"]["type"], "NodePort");
    }

    #[test]
    fn strategic_patch_unions_finalizers_and_replaces_atomic_lists() {
        let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"externalIPs": ["1.1.1.1"]}});
        let patch =
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"externalIPs": ["2.2.2.2"]}});
        let out = strategic_merge(&live, &patch, Schema::root(builtin("v1", "Service"))).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let live = json!({"metadata": {"finalizers": ["x"]}});
        let patch = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "y"},
                           {"op": "remove", "path": "/metadata/finalizers/0"}]);
        let err = apply(PatchType::Json, &live, &patch, Schema::unknown()).unwrap_err();
        assert_eq!(err.code(), 422);
        let ok = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "x"},
                        {"op": "remove", "path": "/metadata/finalizers/0"}]);
        assert_eq!(
            apply(PatchType::Json, &live, &ok, Schema::unknown()).unwrap(),
            json!({"metadata": {"finalizers": []}})
        );
    }
}
