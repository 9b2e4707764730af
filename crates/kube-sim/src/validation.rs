//! CustomResourceDefinition checks and custom resource admission: pruning of unknown fields, schema defaults,
//! OpenAPI v3 value validation and `x-kubernetes-validations` CEL rules (through kube-cel).

use crate::error::{go_value, Cause};
use serde_json::{json, Map, Value};

/// Structural-schema and naming checks the apiserver runs on a CRD.
pub fn validate_crd(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    let name = crate::object::name(crd);
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Cluster" | "Namespaced") => {}
        other => causes.push(Cause::not_supported(
            "spec.scope",
            &json!(other.unwrap_or_default()),
            &[json!("Cluster"), json!("Namespaced")],
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        causes.push(Cause::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    // The apiserver converts a CRD whose versions share one schema into `spec.validation`, and reports
    // that schema's errors there (apiextensions internal version).
    let shared = versions
        .first()
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
        .filter(|first| {
            versions
                .iter()
                .all(|v| v.pointer("/schema/openAPIV3Schema") == Some(*first))
        });
    let schemas: Vec<(String, Option<&Value>)> = match shared {
        Some(schema) => vec![("spec.validation.openAPIV3Schema".to_string(), Some(schema))],
        None => versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    v.pointer("/schema/openAPIV3Schema"),
                )
            })
            .collect(),
    };
    for (path, schema) in schemas {
        let Some(schema) = schema else {
            causes.push(Cause::required(path, ""));
            continue;
        };
        if schema["type"].as_str() != Some("object") {
            causes.push(Cause::invalid(
                format!("{path}.type"),
                &schema["type"],
                "must be object at the root",
            ));
        }
        check_structural(schema, &path, "object fields", &mut causes);
        check_root_metadata(schema, &path, &mut causes);
        if causes.is_empty() {
            causes.extend(crate::cel_check::check_schema(schema, &path).causes);
        }
    }
    causes
}

/// At the root, `metadata` may only restrict `name` and `generateName`.
fn check_root_metadata(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let metadata = &schema["properties"]["metadata"];
    let others = metadata
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .any(|k| !matches!(k.as_str(), "type" | "properties"))
        || metadata["properties"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys())
            .any(|k| !matches!(k.as_str(), "name" | "generateName"));
    if others {
        causes.push(Cause::forbidden(
            format!("{path}.properties[metadata]"),
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

/// Every node must say its `type` (or opt out with preserve-unknown-fields / int-or-string), and every CEL
/// rule must compile.
fn check_structural(node: &Value, path: &str, what: &str, causes: &mut Vec<Cause>) {
    let opted_out = node["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
        || node["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if node["type"].as_str().is_none_or(str::is_empty) && !opted_out {
        causes.push(Cause::required(
            format!("{path}.type"),
            &format!("must not be empty for specified {what}"),
        ));
    }
    check_extensions(node, path, causes);
    if let Some(props) = node["properties"].as_object() {
        for (name, child) in props {
            check_structural(
                child,
                &format!("{path}.properties[{name}]"),
                "object fields",
                causes,
            );
        }
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        check_structural(items, &format!("{path}.items"), "array items", causes);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(
            ap,
            &format!("{path}.additionalProperties"),
            "object fields",
            causes,
        );
    }
}

/// The `x-kubernetes-*` keywords in the places the apiserver accepts them, and the JSON Schema keywords
/// a structural schema may not use (apiextensions `validateCustomResourceDefinitionOpenAPISchema`).
fn check_extensions(node: &Value, path: &str, causes: &mut Vec<Cause>) {
    let ty = node["type"].as_str().unwrap_or_default();
    let must_be = |causes: &mut Vec<Cause>, wanted: &str, keyword: &str, condition: &str| {
        let detail = format!("must be {wanted} if {keyword} {condition}");
        causes.push(if ty.is_empty() {
            Cause::required(format!("{path}.type"), &detail)
        } else {
            Cause::invalid(format!("{path}.type"), &json!(ty), detail)
        });
    };
    for keyword in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ] {
        if node[keyword] == Value::Bool(false) {
            causes.push(Cause::invalid(
                format!("{path}.{keyword}"),
                &json!(false),
                "must be true or undefined",
            ));
        }
    }
    if node["x-kubernetes-embedded-resource"] == Value::Bool(true) && ty != "object" {
        must_be(
            causes,
            "object",
            "x-kubernetes-embedded-resource",
            "is true",
        );
    }
    if let Some(list_type) = node.get("x-kubernetes-list-type") {
        if ty != "array" {
            must_be(causes, "array", "x-kubernetes-list-type", "is specified");
        }
        if !matches!(list_type.as_str(), Some("atomic" | "set" | "map")) {
            causes.push(Cause::not_supported(
                format!("{path}.x-kubernetes-list-type"),
                list_type,
                &[json!("atomic"), json!("set"), json!("map")],
            ));
        }
    }
    if node["x-kubernetes-list-map-keys"]
        .as_array()
        .is_some_and(|k| !k.is_empty())
        && node["x-kubernetes-list-type"] != "map"
    {
        let detail = "must be map if x-kubernetes-list-map-keys is non-empty";
        causes.push(match node.get("x-kubernetes-list-type") {
            None => Cause::required(format!("{path}.x-kubernetes-list-type"), detail),
            Some(t) => Cause::invalid(format!("{path}.x-kubernetes-list-type"), t, detail),
        });
    }
    if let Some(map_type) = node.get("x-kubernetes-map-type") {
        if ty != "object" {
            must_be(causes, "object", "x-kubernetes-map-type", "is specified");
        }
        if !matches!(map_type.as_str(), Some("granular" | "atomic")) {
            causes.push(Cause::not_supported(
                format!("{path}.x-kubernetes-map-type"),
                map_type,
                &[json!("granular"), json!("atomic")],
            ));
        }
    }
    if node
        .get("additionalProperties")
        .is_some_and(Value::is_object)
        && node.get("properties").is_some()
    {
        causes.push(Cause::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if node["uniqueItems"] == Value::Bool(true) {
        causes.push(Cause::forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    for keyword in [
        "$ref",
        "patternProperties",
        "dependencies",
        "additionalItems",
        "definitions",
    ] {
        if node.get(keyword).is_some() {
            causes.push(Cause::forbidden(
                format!("{path}.{keyword}"),
                &format!("{keyword} is not supported"),
            ));
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Drops fields the schema does not declare (returning their paths) and fills in `default`s, like the
/// apiserver does before validation. `apiVersion`, `kind` and `metadata` are never pruned at the root.
pub fn prune_and_default(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(map) = obj.as_object_mut() {
        let props = schema["properties"].as_object();
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.and_then(|p| p.get(&key)) {
                Some(child_schema) => prune_node(
                    map.get_mut(&key).expect("present"),
                    child_schema,
                    &key,
                    &mut unknown,
                ),
                None if preserves_unknown(schema) => {}
                None => {
                    map.remove(&key);
                    unknown.push(key);
                }
            }
        }
        apply_defaults(map, schema, &mut unknown);
    }
    unknown
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn prune_node(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
                return;
            }
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let child_schema = props
                    .and_then(|p| p.get(&key))
                    .or(additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(cs) => prune_node(
                        map.get_mut(&key).expect("present"),
                        cs,
                        &child_path,
                        unknown,
                    ),
                    None if preserves_unknown(schema) || additional == Some(&Value::Bool(true)) => {
                    }
                    None => {
                        map.remove(&key);
                        unknown.push(child_path);
                    }
                }
            }
            apply_defaults(map, schema, unknown);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills missing properties that declare a `default`; a `null` in a non-nullable field counts as missing.
fn apply_defaults(map: &mut Map<String, Value>, schema: &Value, unknown: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, prop) in props {
        let is_null_not_nullable =
            map.get(name).is_some_and(Value::is_null) && prop["nullable"].as_bool() != Some(true);
        if is_null_not_nullable {
            map.remove(name);
        }
        if let (None, Some(default)) = (map.get(name), prop.get("default")) {
            let mut value = default.clone();
            // Defaults are themselves pruned and defaulted against the property schema.
            prune_node(&mut value, prop, name, unknown);
            map.insert(name.clone(), value);
        }
    }
}

/// OpenAPI v3 value validation plus CEL rules; `old` enables transition rules (`oldSelf`).
pub fn validate_custom_resource(obj: &Value, old: Option<&Value>, schema: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let (Some(map), Some(props)) = (obj.as_object(), schema["properties"].as_object()) {
        for (name, prop) in props {
            if name == "metadata" {
                continue;
            }
            if let Some(v) = map.get(name) {
                validate_value(v, prop, name, &mut causes);
            }
        }
        required(map, schema, "", &mut causes);
    }
    // A type, required, enum or size violation means the object has not the shape the rules were
    // written for: the apiserver skips CEL and says so (customresource strategy.go `hasBlockingErr`).
    // Other violations (a pattern, a minimum) still let the rules run.
    let blocking = causes.iter().any(|c| {
        matches!(
            c.reason.as_str(),
            "FieldValueNotSupported"
                | "FieldValueRequired"
                | "FieldValueTooLong"
                | "FieldValueTooMany"
                | "FieldValueTypeInvalid"
        )
    });
    if blocking {
        causes.push(Cause::invalid(
            "",
            &json!("null"),
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ));
    } else {
        causes.extend(cel_causes(obj, old, schema));
    }
    causes
}

fn required(map: &Map<String, Value>, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    for field in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(field) {
            causes.push(Cause::required(join(path, field), ""));
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(value: &Value, schema: &Value) -> bool {
    if value.is_null() {
        return schema["nullable"].as_bool() == Some(true);
    }
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return matches!(json_type(value), "integer" | "string");
    }
    match schema["type"].as_str() {
        None | Some("") => true,
        Some("number") => value.is_number(),
        Some(t) => json_type(value) == t,
    }
}

fn validate_value(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if !type_matches(value, schema) {
        let actual = json_type(value);
        let expected = schema["type"].as_str().unwrap_or("integer or string");
        let mut cause = Cause::invalid(
            path,
            &json!(actual),
            format!("{path} in body must be of type {expected}: {actual:?}"),
        );
        cause.reason = "FieldValueTypeInvalid".into();
        causes.push(cause);
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            causes.push(Cause::not_supported(path, value, allowed));
        }
    }
    match value {
        Value::String(s) => validate_string(s, value, schema, path, causes),
        Value::Number(n) => {
            validate_number(n.as_f64().unwrap_or_default(), value, schema, path, causes)
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64().filter(|m| len > *m) {
                causes.push(Cause::too_many(path, items.len(), max));
            }
            if let Some(min) = schema["minItems"].as_u64().filter(|m| len < *m) {
                causes.push(Cause::invalid(
                    path,
                    &json!(len),
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            check_list_uniqueness(items, schema, path, causes);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_value(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            let len = map.len() as u64;
            if let Some(min) = schema["minProperties"].as_u64().filter(|m| len < *m) {
                causes.push(Cause::invalid(
                    path,
                    &json!(len),
                    format!("{path} in body should have at least {min} properties"),
                ));
            }
            if let Some(max) = schema["maxProperties"].as_u64().filter(|m| len > *m) {
                causes.push(Cause::too_many(path, map.len(), max));
            }
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if let Some(child) = props.and_then(|p| p.get(k)).or(additional) {
                    validate_value(v, child, &join(path, k), causes);
                }
            }
            required(map, schema, path, causes);
        }
        _ => {}
    }
}

fn validate_string(s: &str, value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64().filter(|m| chars > *m) {
        causes.push(Cause::too_long(path, max));
    }
    if let Some(min) = schema["minLength"].as_u64().filter(|m| chars < *m) {
        causes.push(Cause::invalid(
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => {
                causes.push(Cause::invalid(
                    path,
                    value,
                    format!("{path} in body should match '{pattern}'"),
                ));
            }
            Ok(_) => {}
            Err(e) => causes.push(Cause::invalid(
                path,
                value,
                format!("invalid pattern {pattern:?}: {e}"),
            )),
        }
    }
    if let Some(format) = schema["format"].as_str() {
        if !format_ok(format, s) {
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body must be of type {format}: {s:?}"),
            ));
        }
    }
}

/// The simple formats of the apiserver's format registry; unknown formats are accepted, as there.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        }),
        "date-time" => crate::object::parse_timestamp(s).is_some(),
        "uuid" => {
            s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        _ => true,
    }
}

fn validate_number(n: f64, value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let exclusive = |key: &str| schema[key].as_bool() == Some(true);
    if let Some(min) = schema["minimum"].as_f64() {
        if n < min || (exclusive("exclusiveMinimum") && n == min) {
            let op = if exclusive("exclusiveMinimum") {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {op} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        if n > max || (exclusive("exclusiveMaximum") && n == max) {
            let op = if exclusive("exclusiveMaximum") {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body should be {op} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(format) = schema["format"].as_str() {
        let in_range = match format {
            "int32" => (i32::MIN as f64..=i32::MAX as f64).contains(&n),
            _ => true,
        };
        if !in_range {
            causes.push(Cause::invalid(
                path,
                value,
                format!("{path} in body must be of type {format}: {value}"),
            ));
        }
    }
}

/// `x-kubernetes-list-type: set|map` lists must not repeat an item or key.
fn check_list_uniqueness(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let identity = |item: &Value| -> Value {
        match schema["x-kubernetes-list-type"].as_str() {
            Some("map") => Value::Object(
                keys.iter()
                    .map(|k| (k.to_string(), item[*k].clone()))
                    .collect(),
            ),
            _ => item.clone(),
        }
    };
    if !matches!(
        schema["x-kubernetes-list-type"].as_str(),
        Some("map" | "set")
    ) {
        return;
    }
    for (i, item) in items.iter().enumerate() {
        let id = identity(item);
        if items[..i].iter().any(|prev| identity(prev) == id) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                format!("{path}[{i}]"),
                format!("Duplicate value: {}", go_value(&id)),
            ));
        }
    }
}

/// Evaluates `x-kubernetes-validations` and renders failures like the apiserver:
/// `<path>: Invalid value: "<schema type>": <message>`.
fn cel_causes(obj: &Value, old: Option<&Value>, schema: &Value) -> Vec<Cause> {
    // `metadata` is not visible to CEL rules beyond name/generateName; keep the rest out of `self`.
    let mut visible = obj.clone();
    if let Some(meta) = visible.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "name" || k == "generateName");
    }
    // What no rule sees is left out: evaluating then costs what the rules read, as on the apiserver
    // (which compiles the rules once, when the CRD is stored), not what the object holds (a large
    // status under rules on the spec only).
    let Some(visible) = seen_by_rules(&visible, schema) else {
        return Vec::new();
    };
    let old = old.and_then(|old| seen_by_rules(old, schema));
    let compiled = compiled_rules(schema);
    let Err(errors) = kube_cel::validate_compiled(&compiled, &visible, old.as_ref()) else {
        return Vec::new();
    };
    errors
        .into_iter()
        .map(|e| {
            let field = if e.field_path.is_empty() {
                "<nil>".to_string()
            } else {
                e.field_path.clone()
            };
            let node_type = declaring_type(schema, &e.field_path, &e.rule);
            match e.reason.as_deref() {
                Some("FieldValueForbidden") => Cause::forbidden(field, &e.message),
                Some("FieldValueRequired") => Cause::required(field, &e.message),
                Some("FieldValueDuplicate") => Cause::new(
                    "FieldValueDuplicate",
                    field,
                    format!(
                        "Duplicate value: {}: {}",
                        go_value(&json!(node_type)),
                        e.message
                    ),
                ),
                _ => Cause::invalid(field, &json!(node_type), &e.message),
            }
        })
        .collect()
}

thread_local! {
    /// The compiled rules of each schema seen, by a hash of its text.
    static COMPILED: std::cell::RefCell<std::collections::HashMap<u64, std::rc::Rc<kube_cel::CompiledSchema>>> =
        Default::default();
}

/// The rules of `schema`, compiled the first time this thread sees it.
fn compiled_rules(schema: &Value) -> std::rc::Rc<kube_cel::CompiledSchema> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    schema.to_string().hash(&mut hasher);
    let key = hasher.finish();
    COMPILED.with(|compiled| {
        let mut compiled = compiled.borrow_mut();
        // Schemas change only with their CRD: a handful per simulation.
        if compiled.len() > 64 {
            compiled.clear();
        }
        compiled
            .entry(key)
            .or_insert_with(|| std::rc::Rc::new(kube_cel::compile_schema(schema)))
            .clone()
    })
}

/// Whether `schema` or a schema below it declares `x-kubernetes-validations`.
fn has_rules(schema: &Value) -> bool {
    schema.get("x-kubernetes-validations").is_some()
        || schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.values().any(has_rules))
        || schema.get("items").is_some_and(has_rules)
        || schema
            .get("additionalProperties")
            .is_some_and(|a| a.is_object() && has_rules(a))
        || ["allOf", "oneOf", "anyOf"].iter().any(|k| {
            schema
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|b| b.iter().any(has_rules))
        })
}

/// `value` with only what some rule can see: a rule sees its own node and everything below it, so
/// a subtree is left out only when neither it nor any node above it declares a rule. `None` when
/// no rule sees any of it.
fn seen_by_rules(value: &Value, schema: &Value) -> Option<Value> {
    if !has_rules(schema) {
        return None;
    }
    let branches = ["allOf", "oneOf", "anyOf"]
        .iter()
        .any(|k| schema.get(*k).is_some());
    if schema.get("x-kubernetes-validations").is_some() || branches {
        return Some(value.clone());
    }
    Some(match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .filter(|_| schema["x-kubernetes-preserve-unknown-fields"] != json!(true));
            let kept: Map<String, Value> = fields
                .iter()
                .filter_map(|(key, field)| {
                    let field_schema = match properties.and_then(|p| p.get(key)) {
                        Some(declared) => declared,
                        None => additional?,
                    };
                    Some((key.clone(), seen_by_rules(field, field_schema)?))
                })
                .collect();
            Value::Object(kept)
        }
        Value::Array(items) => match schema.get("items") {
            // Items stay where they are: a transition rule pairs them with the old ones by index.
            Some(item_schema) => Value::Array(
                items
                    .iter()
                    .map(|item| seen_by_rules(item, item_schema).unwrap_or_else(|| item.clone()))
                    .collect(),
            ),
            None => value.clone(),
        },
        other => other.clone(),
    })
}

/// The `type` of the deepest schema node along `field_path` that declares `rule`.
fn declaring_type(schema: &Value, field_path: &str, rule: &str) -> String {
    let declares = |node: &Value| {
        node["x-kubernetes-validations"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["rule"].as_str() == Some(rule)))
    };
    let mut node = schema;
    let mut found = if declares(node) {
        node["type"].as_str()
    } else {
        None
    };
    for segment in field_path.split('.').filter(|s| !s.is_empty()) {
        let (name, indices) = segment
            .split_once('[')
            .map_or((segment, ""), |(n, rest)| (n, rest));
        let next = node["properties"]
            .get(name)
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
        let Some(mut next) = next else { break };
        for _ in indices.matches(']') {
            next = &next["items"];
        }
        node = next;
        if declares(node) {
            found = node["type"].as_str();
        }
    }
    found.unwrap_or("object").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["dns"],
                    "properties": {
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "dns": {"type": "object", "properties": {
                            "zone": {"type": "string", "maxLength": 20,
                                "x-kubernetes-validations": [{"rule": "self.matches('^[a-z.]+$')", "message": "must be a DNS name"}]}
                        }},
                        "items": {"type": "array", "maxItems": 2, "items": {"type": "integer", "minimum": 1}}
                    }
                }
            }
        })
    }

    #[test]
    fn prunes_unknown_fields_and_applies_defaults() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                             "spec": {"dns": {"zone": "a.b", "extra": 1}, "bogus": true}, "junk": 1});
        let unknown = prune_and_default(&mut obj, &schema());
        assert_eq!(
            unknown,
            vec![
                "junk".to_string(),
                "spec.bogus".into(),
                "spec.dns.extra".into()
            ]
        );
        assert_eq!(obj["spec"], json!({"dns": {"zone": "a.b"}, "mode": "A"}));
    }

    #[test]
    fn schema_violations_read_like_the_apiserver() {
        let obj = json!({"spec": {"mode": "C", "items": [0, 1, 2], "dns": {"zone": 5}}});
        let lines: Vec<String> = validate_custom_resource(&obj, None, &schema())
            .iter()
            .map(Cause::to_line)
            .collect();
        assert!(
            lines.contains(
                &"spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\"".to_string()
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"spec.items: Too many: 3: must have at most 2 items".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"spec.items[0]: Invalid value: 0: spec.items[0] in body should be greater than or equal to 1".to_string()), "{lines:?}");
        assert!(lines.contains(&"spec.dns.zone: Invalid value: \"integer\": spec.dns.zone in body must be of type string: \"integer\"".to_string()), "{lines:?}");
        let missing = validate_custom_resource(&json!({"spec": {}}), None, &schema());
        assert_eq!(missing[0].to_line(), "spec.dns: Required value");
    }

    #[test]
    fn cel_rule_message_and_type() {
        let obj = json!({"spec": {"dns": {"zone": "Not_A_Zone"}}});
        let causes = validate_custom_resource(&obj, None, &schema());
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].to_line(),
            "spec.dns.zone: Invalid value: \"string\": must be a DNS name"
        );
    }

    #[test]
    fn cel_runs_beside_pattern_errors_but_not_beside_size_or_type_errors() {
        let too_long = json!({"spec": {"dns": {"zone": "a".repeat(21)}}});
        let lines: Vec<String> = validate_custom_resource(&too_long, None, &schema())
            .iter()
            .map(Cause::to_line)
            .collect();
        assert_eq!(
            lines,
            [
                "spec.dns.zone: Too long: may not be more than 20 bytes",
                "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
        let below_minimum = json!({"spec": {"dns": {"zone": "Not_A_Zone"}, "items": [0]}});
        let lines: Vec<String> = validate_custom_resource(&below_minimum, None, &schema())
            .iter()
            .map(Cause::to_line)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[1],
            "spec.dns.zone: Invalid value: \"string\": must be a DNS name"
        );
    }

    #[test]
    fn rules_see_their_whole_subtree_and_nothing_else_is_evaluated() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "zone": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self.endsWith('.internal')", "message": "must end in .internal"}
                ]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }});
        let obj = json!({
            "spec": {"zone": "a.internal", "labels": {"app": "web"}},
            "status": {"services": [{"name": "web"}]}
        });
        // Only the rule's own node is left: neither the status nor the spec's other fields.
        assert_eq!(
            seen_by_rules(&obj, &schema),
            Some(json!({"spec": {"zone": "a.internal"}}))
        );
        let bad = json!({"spec": {"zone": "a.example"}, "status": {"big": "x".repeat(10_000)}});
        let lines: Vec<String> = cel_causes(&bad, None, &schema)
            .iter()
            .map(Cause::to_line)
            .collect();
        assert_eq!(
            lines,
            ["spec.zone: Invalid value: \"string\": must end in .internal"]
        );
        // A rule at the root sees everything, status included.
        let mut rooted = schema.clone();
        rooted["x-kubernetes-validations"] = json!([{"rule": "!has(self.status) || size(self.status) < 2", "message": "small status"}]);
        assert_eq!(seen_by_rules(&bad, &rooted), Some(bad.clone()));
        let two = json!({"spec": {"zone": "a.internal"}, "status": {"a": 1, "b": 2}});
        assert_eq!(
            cel_causes(&two, None, &rooted)
                .iter()
                .map(Cause::to_line)
                .collect::<Vec<_>>(),
            ["<nil>: Invalid value: \"object\": small status"]
        );
        // No rule anywhere: nothing to evaluate.
        assert_eq!(seen_by_rules(&obj, &json!({"type": "object"})), None);
    }

    #[test]
    fn cel_message_expression_field_path_and_reason() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "properties": {"dns": {"type": "object", "properties": {"staticIP": {"type": "string"}}}},
            "x-kubernetes-validations": [
                {"rule": "!has(self.dns.staticIP) || self.dns.staticIP.startsWith('10.')",
                 "messageExpression": "'staticIP ' + self.dns.staticIP + ' is not private'",
                 "fieldPath": ".dns.staticIP"},
                {"rule": "self.dns.staticIP != '10.0.0.1'", "message": "reserved", "reason": "FieldValueForbidden"}
            ]
        }}});
        let public = json!({"spec": {"dns": {"staticIP": "20.1.2.3"}}});
        let causes = validate_custom_resource(&public, None, &schema);
        assert_eq!(
            causes[0].to_line(),
            "spec.dns.staticIP: Invalid value: \"object\": staticIP 20.1.2.3 is not private"
        );
        let reserved = json!({"spec": {"dns": {"staticIP": "10.0.0.1"}}});
        let causes = validate_custom_resource(&reserved, None, &schema);
        assert_eq!(causes[0].to_line(), "spec: Forbidden: reserved");
    }

    #[test]
    fn transition_rules_see_the_old_object() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "zone": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "zone is immutable"}]}
        }}}});
        let old = json!({"spec": {"zone": "a.local"}});
        assert!(validate_custom_resource(&old, None, &schema).is_empty());
        assert!(validate_custom_resource(&old, Some(&old), &schema).is_empty());
        let new = json!({"spec": {"zone": "b.local"}});
        assert_eq!(
            validate_custom_resource(&new, Some(&old), &schema)[0].to_line(),
            "spec.zone: Invalid value: \"string\": zone is immutable"
        );
    }

    #[test]
    fn crd_schema_must_be_structural() {
        let crd = json!({"metadata": {"name": "ws.example.io"}, "spec": {"group": "example.io", "scope": "Cluster",
            "names": {"plural": "ws", "kind": "W"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {"free": {}}}}}}}]}});
        let causes = validate_crd(&crd);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].to_line(),
            "spec.validation.openAPIV3Schema.properties[spec].properties[free].type: Required value: must not be empty for specified object fields"
        );
    }
}
