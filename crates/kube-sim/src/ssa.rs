//! Server-side apply and field ownership (`metadata.managedFields`), following structured-merge-diff:
//! the field set of an applied configuration, merging it into the live object, pruning fields an applier
//! stopped applying, conflict detection between managers, and ownership transfer on plain updates.

use crate::error::{ApiError, Cause};
use crate::fieldpath::{path_string, FieldSet, Path, PathElement};
use crate::object;
use crate::schema::{ListType, Schema};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_owner(&self, manager: &str, operation: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// How the apiserver names a manager in conflict messages (`"mgr" using v1` for updaters).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Who is writing, and to which part of the object.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub operation: Operation,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
}

pub fn parse_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = object::meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let operation = match e.get("operation")?.as_str()? {
                "Apply" => Operation::Apply,
                _ => Operation::Update,
            };
            Some(ManagedEntry {
                manager: e
                    .get("manager")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                operation,
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: e.get("time").and_then(Value::as_str).map(String::from),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                fields: e
                    .get("fieldsV1")
                    .map(FieldSet::from_fields_v1)
                    .transpose()
                    .ok()??,
            })
        })
        .collect()
}

/// Renders entries in the apiserver's order: Apply before Update, then by time, then by manager.
pub fn render_entries(mut entries: Vec<ManagedEntry>) -> Value {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (a.operation.as_str(), &a.time, &a.manager, &a.subresource).cmp(&(
            b.operation.as_str(),
            &b.time,
            &b.manager,
            &b.subresource,
        ))
    });
    entries
        .into_iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation.as_str(),
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_fields_v1(),
            });
            if let Some(sub) = e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect()
}

fn field(name: &str) -> PathElement {
    PathElement::Field(name.to_string())
}

/// Fields nobody owns: identity and system metadata (structured-merge-diff's "stripMeta").
fn system_fields() -> FieldSet {
    let mut set = FieldSet::default();
    set.insert(&[field("apiVersion")]);
    set.insert(&[field("kind")]);
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        set.insert(&[field("metadata"), field(f)]);
    }
    set
}

/// Which part of the object a write may own: everything but `status` for the main resource of a kind with a
/// status subresource, only `status` for the status subresource, everything otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Whole,
    MainResource,
    Status,
}

impl Scope {
    pub fn filter(self, set: FieldSet) -> FieldSet {
        let set = set.without_prefixes(&system_fields());
        match self {
            Scope::Whole => set,
            Scope::MainResource => {
                let mut status = FieldSet::default();
                status.insert(&[field("status")]);
                set.without_prefixes(&status)
            }
            Scope::Status => set.restrict_to(&field("status")),
        }
    }
}

/// The key path element of an associative-list item; key fields missing from the item take their schema default.
pub fn item_key(item: &Value, keys: &[String], item_schema: Schema) -> PathElement {
    let mut fields = Map::new();
    for key in keys {
        let value = item
            .get(key)
            .cloned()
            .or_else(|| item_schema.field(key).default_value().cloned());
        if let Some(v) = value {
            fields.insert(key.clone(), v);
        }
    }
    PathElement::key(&fields)
}

fn list_item_element(
    item: &Value,
    index: usize,
    list_type: &ListType,
    item_schema: Schema,
) -> PathElement {
    match list_type {
        ListType::Map(keys) => item_key(item, keys, item_schema),
        ListType::Set => PathElement::value(item),
        ListType::Atomic => PathElement::Index(index),
    }
}

/// The fields present in `value` (structured-merge-diff's `ToFieldSet`): leaves, associative-list items and
/// set members; atomic lists/maps and empty maps count as one leaf.
pub fn field_set(value: &Value, schema: Schema) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            walk_fields(v, schema.field(k), &mut vec![field(k)], &mut set);
        }
    }
    set
}

fn walk_fields(value: &Value, schema: Schema, path: &mut Path, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() && !schema.is_atomic_map() => {
            for (k, v) in map {
                path.push(field(k));
                walk_fields(v, schema.field(k), path, set);
                path.pop();
            }
        }
        Value::Array(items) => {
            let list_type = schema.list_type();
            if list_type == ListType::Atomic {
                set.insert(path);
                return;
            }
            let item_schema = schema.items();
            for (i, item) in items.iter().enumerate() {
                path.push(list_item_element(item, i, &list_type, item_schema));
                set.insert(path);
                if let (ListType::Map(_), Some(fields)) = (&list_type, item.as_object()) {
                    for (k, v) in fields {
                        path.push(field(k));
                        walk_fields(v, item_schema.field(k), path, set);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub fn compare(old: &Value, new: &Value, schema: Schema) -> Comparison {
    let mut cmp = Comparison::default();
    let empty = Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    for k in o.keys().chain(n.keys().filter(|k| !o.contains_key(*k))) {
        compare_at(
            o.get(k),
            n.get(k),
            schema.field(k),
            &mut vec![field(k)],
            &mut cmp,
        );
    }
    cmp
}

fn is_container(value: &Value, schema: Schema) -> bool {
    match value {
        Value::Object(_) => !schema.is_atomic_map(),
        Value::Array(_) => schema.list_type() != ListType::Atomic,
        _ => false,
    }
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: Schema,
    path: &mut Path,
    cmp: &mut Comparison,
) {
    let container_old = old.is_some_and(|v| is_container(v, schema));
    let container_new = new.is_some_and(|v| is_container(v, schema));
    let same_shape = match (old, new) {
        (Some(a), Some(b)) => a.is_object() == b.is_object() && a.is_array() == b.is_array(),
        _ => true,
    };
    if !(container_old || container_new) || !same_shape {
        match (old, new) {
            (None, Some(_)) => cmp.added.insert(path),
            (Some(_), None) => cmp.removed.insert(path),
            (Some(a), Some(b)) if a != b => cmp.modified.insert(path),
            _ => {}
        }
        return;
    }
    match (old, new) {
        (None, Some(_)) => cmp.added.insert(path),
        (Some(_), None) => cmp.removed.insert(path),
        _ => {}
    }
    let children_old = children(old, schema);
    let children_new = children(new, schema);
    for (pe, (child_old, child_schema)) in &children_old {
        let child_new = children_new
            .iter()
            .find(|(p, _)| p == pe)
            .map(|(_, (v, _))| *v);
        path.push(pe.clone());
        compare_child(Some(child_old), child_new, *child_schema, path, cmp);
        path.pop();
    }
    for (pe, (child_new, child_schema)) in &children_new {
        if !children_old.iter().any(|(p, _)| p == pe) {
            path.push(pe.clone());
            compare_child(None, Some(child_new), *child_schema, path, cmp);
            path.pop();
        }
    }
}

/// List items are nodes in their own right: an added or removed item is recorded itself, then its fields.
fn compare_child(
    old: Option<&Value>,
    new: Option<&Value>,
    schema: Schema,
    path: &mut Path,
    cmp: &mut Comparison,
) {
    let is_item = matches!(
        path.last(),
        Some(PathElement::Key(_) | PathElement::Value(_))
    );
    if !is_item {
        return compare_at(old, new, schema, path, cmp);
    }
    match (old, new) {
        (None, Some(_)) => cmp.added.insert(path),
        (Some(_), None) => cmp.removed.insert(path),
        _ => {}
    }
    if matches!(path.last(), Some(PathElement::Key(_))) {
        let empty = Map::new();
        let o = old.and_then(Value::as_object).unwrap_or(&empty);
        let n = new.and_then(Value::as_object).unwrap_or(&empty);
        for k in o.keys().chain(n.keys().filter(|k| !o.contains_key(*k))) {
            path.push(field(k));
            compare_at(o.get(k), n.get(k), schema.field(k), path, cmp);
            path.pop();
        }
    }
}

type Children<'v, 's> = Vec<(PathElement, (&'v Value, Schema<'s>))>;

fn children<'v, 's>(value: Option<&'v Value>, schema: Schema<'s>) -> Children<'v, 's> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (field(k), (v, schema.field(k))))
            .collect(),
        Some(Value::Array(items)) => {
            let list_type = schema.list_type();
            let item_schema = schema.items();
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    (
                        list_item_element(item, i, &list_type, item_schema),
                        (item, item_schema),
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Merges an applied configuration into the live object (structured-merge-diff's `Merge`).
/// `null` in the configuration removes the field.
pub fn merge(live: &Value, config: &Value, schema: Schema) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !schema.is_atomic_map() => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, schema.field(k)),
                    None => strip_nulls(cv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let list_type = schema.list_type();
            let item_schema = schema.items();
            match &list_type {
                ListType::Atomic => strip_nulls(config),
                ListType::Set => {
                    let mut out = l.clone();
                    out.extend(c.iter().filter(|v| !l.contains(v)).cloned());
                    Value::Array(out)
                }
                ListType::Map(keys) => {
                    let key_of = |v: &Value| item_key(v, keys, item_schema);
                    let mut out: Vec<Value> = l
                        .iter()
                        .map(|li| match c.iter().find(|ci| key_of(ci) == key_of(li)) {
                            Some(ci) => merge(li, ci, item_schema),
                            None => li.clone(),
                        })
                        .collect();
                    for ci in c {
                        if !l.iter().any(|li| key_of(li) == key_of(ci)) {
                            out.push(strip_nulls(ci));
                        }
                    }
                    Value::Array(out)
                }
            }
        }
        _ => strip_nulls(config),
    }
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes the fields in `dropped` (what an applier owned last time but no longer applies) unless something at
/// or below them is still `owned` by anyone. Key fields of surviving list items are kept.
pub fn prune(obj: &mut Value, dropped: &FieldSet, owned: &FieldSet, schema: Schema) {
    let mut paths = dropped.paths();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in paths {
        if owned.touches(&path) {
            continue;
        }
        remove_path(obj, &path, schema, true);
    }
}

fn remove_path(node: &mut Value, path: &[PathElement], schema: Schema, at_root: bool) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let removed = match (first, node) {
        (PathElement::Field(name), Value::Object(map)) => {
            if rest.is_empty() {
                map.remove(name).is_some()
            } else {
                let child_schema = schema.field(name);
                let Some(child) = map.get_mut(name) else {
                    return false;
                };
                let removed = remove_path(child, rest, child_schema, false);
                // Structured types omit maps that became empty (e.g. the last annotation went away);
                // top-level fields such as `metadata` or `spec` stay.
                if removed && !at_root && child.as_object().is_some_and(Map::is_empty) {
                    map.remove(name);
                }
                removed
            }
        }
        (pe, Value::Array(items)) => {
            let list_type = schema.list_type();
            let item_schema = schema.items();
            let Some(idx) = items
                .iter()
                .enumerate()
                .position(|(i, item)| list_item_element(item, i, &list_type, item_schema) == *pe)
            else {
                return false;
            };
            match rest {
                [] => {
                    items.remove(idx);
                    true
                }
                // Never strip an item's key fields while the item itself stays.
                [PathElement::Field(f)] if matches!(&list_type, ListType::Map(keys) if keys.contains(f)) => {
                    false
                }
                _ => remove_path(&mut items[idx], rest, item_schema, false),
            }
        }
        _ => false,
    };
    removed
}

/// Ownership after an Apply: the applier owns exactly `applied`; others lose what changed only when forced,
/// otherwise a changed field owned by someone else is a conflict.
pub fn apply_ownership(
    mut entries: Vec<ManagedEntry>,
    writer: &Writer,
    applied: FieldSet,
    changes: &Comparison,
    force: bool,
    now: &str,
) -> Result<Vec<ManagedEntry>, ApiError> {
    let changed = changes.changed();
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in entries.iter_mut() {
        if e.same_owner(writer.manager, writer.operation, writer.subresource) {
            continue;
        }
        let clash = e.fields.intersection(&changed);
        if clash.is_empty() {
            continue;
        }
        if force {
            e.fields = e.fields.difference(&clash);
        } else {
            conflicts.extend(clash.paths().into_iter().map(|p| (e.describe(), p)));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(conflicts));
    }
    upsert(&mut entries, writer, applied, now);
    Ok(entries)
}

/// Ownership after a non-apply write: the writer takes every field it added or changed from everyone else.
pub fn update_ownership(
    mut entries: Vec<ManagedEntry>,
    writer: &Writer,
    changes: &Comparison,
    now: &str,
) -> Vec<ManagedEntry> {
    let changed = changes.changed();
    for e in entries.iter_mut() {
        if !e.same_owner(writer.manager, writer.operation, writer.subresource) {
            e.fields = e.fields.difference(&changed);
        }
    }
    let previous = entries
        .iter()
        .find(|e| e.same_owner(writer.manager, writer.operation, writer.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mine = previous.union(&changed).without_prefixes(&changes.removed);
    upsert(&mut entries, writer, mine, now);
    entries
}

fn upsert(entries: &mut Vec<ManagedEntry>, writer: &Writer, fields: FieldSet, now: &str) {
    match entries
        .iter_mut()
        .find(|e| e.same_owner(writer.manager, writer.operation, writer.subresource))
    {
        Some(e) => {
            // The timestamp moves only when this manager's ownership actually changed.
            if e.fields != fields {
                e.time = Some(now.to_string());
                e.fields = fields;
            }
            e.api_version = writer.api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: writer.manager.to_string(),
            operation: writer.operation,
            api_version: writer.api_version.to_string(),
            time: Some(now.to_string()),
            subresource: writer.subresource.map(String::from),
            fields,
        }),
    }
}

/// Nobody owns fields that no longer exist.
pub fn forget_removed(entries: &mut [ManagedEntry], removed: &FieldSet) {
    for e in entries.iter_mut() {
        e.fields = e.fields.without_prefixes(removed);
    }
}

/// The apiserver's message: `Apply failed with 1 conflict: conflict with "mgr" using v1: .spec.type`.
fn conflict_error(conflicts: Vec<(String, Path)>) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|(who, path)| {
            Cause::new(
                "FieldManagerConflict",
                path_string(path),
                format!("conflict with {who}"),
            )
        })
        .collect();
    let message = if let [(who, path)] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {who}: {}",
            path_string(path)
        )
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for (who, path) in &conflicts {
            match by_manager.iter_mut().find(|(w, _)| w == who) {
                Some((_, paths)) => paths.push(path_string(path)),
                None => by_manager.push((who.clone(), vec![path_string(path)])),
            }
        }
        by_manager.sort();
        let mut lines = Vec::new();
        for (who, paths) in by_manager {
            lines.push(format!("conflicts with {who}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::ApplyConflict { message, causes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builtin;

    fn svc_schema() -> Schema<'static> {
        Schema::root(builtin("v1", "Service"))
    }

    #[test]
    fn field_set_of_service_uses_defaulted_port_keys() {
        let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"x": "y"}},
                         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": {"app": "a"}}});
        let set = Scope::MainResource.filter(field_set(&cfg, svc_schema()));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:x": {}}},
                "f:spec": {
                    "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}},
                    "f:selector": {},
                    "f:type": {}
                }
            })
        );
    }

    #[test]
    fn merge_keeps_live_items_and_merges_by_key() {
        let live = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}], "type": "ClusterIP"}});
        let cfg = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 53, "protocol": "UDP"}]}});
        let merged = merge(&live, &cfg, svc_schema());
        assert_eq!(
            merged["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30001, "name": "http"}, {"port": 53, "protocol": "UDP"}])
        );
        assert_eq!(merged["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn prune_drops_unowned_fields_only() {
        let mut obj =
            json!({"data": {"a": "1", "b": "2"}, "metadata": {"annotations": {"mine": "x"}}});
        let mut dropped = FieldSet::default();
        dropped.insert(&[field("data"), field("a")]);
        dropped.insert(&[field("data"), field("b")]);
        dropped.insert(&[field("metadata"), field("annotations"), field("mine")]);
        let mut owned = FieldSet::default();
        owned.insert(&[field("data"), field("b")]);
        prune(&mut obj, &dropped, &owned, Schema::root(None));
        assert_eq!(obj, json!({"data": {"b": "2"}, "metadata": {}}));
    }

    #[test]
    fn compare_reports_new_maps_as_members() {
        let old = json!({"metadata": {"name": "a"}});
        let new = json!({"metadata": {"name": "a", "annotations": {"k": "v"}}});
        let cmp = compare(&old, &new, Schema::root(None));
        assert_eq!(
            cmp.added.to_fields_v1(),
            json!({"f:metadata": {"f:annotations": {".": {}, "f:k": {}}}})
        );
        assert!(cmp.modified.is_empty() && cmp.removed.is_empty());
    }

    #[test]
    fn conflicts_name_the_manager_like_the_apiserver() {
        let mut owned = FieldSet::default();
        owned.insert(&[field("spec"), field("type")]);
        let entries = vec![ManagedEntry {
            manager: "kubectl-client-side-apply".into(),
            operation: Operation::Update,
            api_version: "v1".into(),
            time: None,
            subresource: None,
            fields: owned.clone(),
        }];
        let writer = Writer {
            manager: "op",
            operation: Operation::Apply,
            subresource: None,
            api_version: "v1",
        };
        let changes = Comparison {
            modified: owned.clone(),
            ..Default::default()
        };
        let err = apply_ownership(
            entries.clone(),
            &writer,
            owned.clone(),
            &changes,
            false,
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_status()["message"],
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .spec.type"
        );
        let forced = apply_ownership(entries, &writer, owned, &changes, true, "t").unwrap();
        assert!(forced[0].fields.is_empty());
        assert_eq!(forced[1].manager, "op");
    }
}
