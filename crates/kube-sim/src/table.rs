//! `meta.k8s.io/v1 Table` output for `kubectl get`: per-kind columns for the built-ins we serve,
//! `additionalPrinterColumns` (simple JSONPath) for custom resources, NAME and AGE otherwise.

use crate::object;
use crate::registry::ResourceType;
use serde_json::{json, Value};

/// What a row carries in `object` (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

struct Column {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    cell: Cell,
}

enum Cell {
    Name,
    Age,
    Path(String),
    Builtin(fn(&Value) -> Value),
}

fn column(name: &str, ty: &str, priority: i64, cell: Cell) -> Column {
    let format = if name == "Name" { "name" } else { "" };
    Column {
        name: name.into(),
        ty: ty.into(),
        format: format.into(),
        description: String::new(),
        priority,
        cell,
    }
}

fn columns(rt: &ResourceType) -> Vec<Column> {
    let mut cols = vec![column("Name", "string", 0, Cell::Name)];
    if let Some(cr) = &rt.crd {
        if cr.printer_columns.is_empty() {
            cols.push(column("Age", "date", 0, Cell::Age));
        }
        for pc in &cr.printer_columns {
            let mut c = column(
                pc["name"].as_str().unwrap_or_default(),
                pc["type"].as_str().unwrap_or("string"),
                pc["priority"].as_i64().unwrap_or(0),
                Cell::Path(pc["jsonPath"].as_str().unwrap_or_default().to_string()),
            );
            c.format = pc["format"].as_str().unwrap_or_default().into();
            c.description = pc["description"].as_str().unwrap_or_default().into();
            cols.push(c);
        }
        return cols;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Service") => cols.extend([
            column(
                "Type",
                "string",
                0,
                Cell::Builtin(|o| o["spec"]["type"].clone()),
            ),
            column("Cluster-IP", "string", 0, Cell::Builtin(service_cluster_ip)),
            column(
                "External-IP",
                "string",
                0,
                Cell::Builtin(service_external_ip),
            ),
            column("Port(s)", "string", 0, Cell::Builtin(service_ports)),
            column("Age", "string", 0, Cell::Age),
            column("Selector", "string", 1, Cell::Builtin(service_selector)),
        ]),
        ("", "Namespace") => cols.extend([
            column(
                "Status",
                "string",
                0,
                Cell::Builtin(|o| o["status"]["phase"].clone()),
            ),
            column("Age", "string", 0, Cell::Age),
        ]),
        ("", "ConfigMap") | ("", "Secret") => {
            if rt.kind == "Secret" {
                cols.push(column(
                    "Type",
                    "string",
                    0,
                    Cell::Builtin(|o| o["type"].clone()),
                ));
            }
            cols.extend([
                column(
                    "Data",
                    "integer",
                    0,
                    Cell::Builtin(|o| {
                        let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
                        json!(count("data") + count("binaryData"))
                    }),
                ),
                column("Age", "string", 0, Cell::Age),
            ]);
        }
        ("apps", "Deployment") => cols.extend([
            column(
                "Ready",
                "string",
                0,
                Cell::Builtin(|o| {
                    let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
                    json!(format!(
                        "{ready}/{}",
                        o["spec"]["replicas"].as_i64().unwrap_or(0)
                    ))
                }),
            ),
            column(
                "Up-to-date",
                "integer",
                0,
                Cell::Builtin(|o| json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))),
            ),
            column(
                "Available",
                "integer",
                0,
                Cell::Builtin(|o| json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))),
            ),
            column("Age", "string", 0, Cell::Age),
        ]),
        ("coordination.k8s.io", "Lease") => cols.extend([
            column(
                "Holder",
                "string",
                0,
                Cell::Builtin(|o| o["spec"]["holderIdentity"].clone()),
            ),
            column("Age", "string", 0, Cell::Age),
        ]),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => cols.push(column(
            "Created At",
            "date",
            0,
            Cell::Builtin(|o| o["metadata"]["creationTimestamp"].clone()),
        )),
        _ => cols.push(column("Age", "string", 0, Cell::Age)),
    }
    cols
}

fn none_if_empty(s: String) -> Value {
    json!(if s.is_empty() {
        "<none>".to_string()
    } else {
        s
    })
}

fn service_cluster_ip(o: &Value) -> Value {
    none_if_empty(
        o["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// kubectl's `getServiceExternalIP`.
fn service_external_ip(o: &Value) -> Value {
    let external: Vec<&str> = o["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match o["spec"]["type"].as_str().unwrap_or("ClusterIP") {
        "ExternalName" => json!(o["spec"]["externalName"]),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect();
            ips.extend(external);
            json!(if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            })
        }
        _ => none_if_empty(external.join(",")),
    }
}

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", p["port"]),
                _ => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    none_if_empty(ports.join(","))
}

fn service_selector(o: &Value) -> Value {
    let pairs: Vec<String> = o["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    none_if_empty(pairs.join(","))
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut current = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            current = current.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Vec::new();
            };
            let selector = &after[..end];
            current = apply_index(current, selector);
            rest = &after[end + 1..];
        } else {
            return Vec::new();
        }
    }
    current
}

fn apply_index(values: Vec<Value>, selector: &str) -> Vec<Value> {
    let items = values
        .into_iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default());
    if selector == "*" {
        return items.collect();
    }
    if let Ok(i) = selector.parse::<usize>() {
        return items.skip(i).take(1).collect();
    }
    // ?(@.field=="value")
    let filter = selector
        .trim_start_matches("?(")
        .trim_end_matches(')')
        .trim_start_matches("@.");
    let Some((field, want)) = filter.split_once("==") else {
        return Vec::new();
    };
    let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
    let field: Vec<&str> = field.trim().split('.').collect();
    items
        .filter(|item| {
            object::pointer(item, &field).is_some_and(|v| match v {
                Value::String(s) => s == want,
                // Numbers and booleans compare by their JSON text (`@.port==80`).
                other => {
                    let text = other.to_string();
                    text == want
                }
            })
        })
        .collect()
}

fn cell(col: &Column, obj: &Value) -> Value {
    let created = || {
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .map(object::age)
    };
    match &col.cell {
        Cell::Name => json!(object::name(obj)),
        Cell::Age => json!(created().unwrap_or_else(|| "<unknown>".into())),
        Cell::Builtin(f) if col.ty == "date" => json!(f(obj).as_str().map(object::age)),
        Cell::Builtin(f) => f(obj),
        Cell::Path(path) => {
            let values = json_path(obj, path);
            match (col.ty.as_str(), values.as_slice()) {
                (_, []) => Value::Null,
                ("date", [v, ..]) => v.as_str().map_or(Value::Null, |s| json!(object::age(s))),
                (_, [v]) => v.clone(),
                (_, many) => {
                    let parts: Vec<String> = many
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                        .collect();
                    json!(parts.join(","))
                }
            }
        }
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        })),
    }
}

pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    resource_version: Option<u64>,
    include: IncludeObject,
) -> Value {
    let cols = columns(rt);
    let definitions: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": cols.iter().map(|c| cell(c, obj)).collect::<Vec<_>>()});
            if let Some(o) = row_object(obj, include) {
                row["object"] = o;
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let obj = json!({"status": {"dnsServerIP": "10.240.0.53", "conditions": [
            {"type": "Applied", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            json_path(&obj, ".status.dnsServerIP"),
            vec![json!("10.240.0.53")]
        );
        assert_eq!(
            json_path(&obj, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("True")]
        );
        assert_eq!(json_path(&obj, ".status.conditions[*].type").len(), 2);
        assert_eq!(
            json_path(&obj, ".status.conditions[0].status"),
            vec![json!("False")]
        );
        assert!(json_path(&obj, ".status.missing").is_empty());
    }

    #[test]
    fn service_cells_follow_kubectl() {
        let svc = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.10",
            "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30001}, {"port": 53, "protocol": "TCP", "nodePort": 30002}]},
            "status": {"loadBalancer": {}}});
        assert_eq!(service_external_ip(&svc), json!("<pending>"));
        assert_eq!(service_ports(&svc), json!("53:30001/UDP,53:30002/TCP"));
    }
}
