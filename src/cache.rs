//! What the caches keep of each object: only what a duty reads. A cluster of 10,000 Services is
//! mostly managedFields, `last-applied-configuration` annotations and spec fields no duty looks at;
//! the watches prune them before the objects reach the stores (`.modify()`), so the operator's
//! memory follows what the duties need, not the size of the cluster's objects.
//!
//! Pure functions; [`crate::controller`] applies them to every object a watch delivers.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::context::services::ServiceRecord;
use crate::context::Prune;
use crate::crd::AppServiceLink;
use crate::duties::load_balancer::{self, ANNOTATION_INTERNAL, ANNOTATION_SUBNET};
use crate::duties::service_link::{self, ANNOTATION_LINK, ANNOTATION_PREVIOUS};

/// The annotation `kubectl apply` keeps a whole copy of the object in; no duty reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The annotations of a Service a duty may read: Azure's load-balancer annotations and the
/// operator's own. Teams' other annotations (monitoring, GitOps tracking, owners) are dropped.
const READ_ANNOTATION_PREFIXES: [&str; 2] = ["service.beta.kubernetes.io/", "appservicelink.io/"];

/// The Service fields whose owners the Service duty asks about (`service_link::plan` and
/// `service_link::holder`), in managedFields terms. Ownership of anything else is never read.
static OWNED_PATHS: LazyLock<Vec<Vec<String>>> = LazyLock::new(|| {
    let mut paths = vec![vec!["f:spec".to_string(), "f:type".to_string()]];
    for key in [
        ANNOTATION_INTERNAL,
        ANNOTATION_SUBNET,
        ANNOTATION_LINK,
        ANNOTATION_PREVIOUS,
    ] {
        paths.push(vec![
            "f:metadata".to_string(),
            "f:annotations".to_string(),
            format!("f:{key}"),
        ]);
    }
    paths
});

/// Keeps of a Service what the duties read:
/// - its name, namespace, uid and resourceVersion, labels, and the annotations a duty reads (Azure's load-balancer ones and the
///   operator's own);
/// - managedFields reduced to who owns `spec.type` and the conversion's annotations, plus the
///   operator's own entries (their times date its last change); of a Service no link holds, only
///   the operator's own entries;
/// - `spec.type`, `clusterIP`, `loadBalancerSourceRanges`; the whole spec of the operator's own DNS
///   Services, whose drift it checks;
/// - the load-balancer status (no status when there is none).
pub fn service(svc: &mut Service) {
    let ours = load_balancer::is_ours(svc);
    // Other managers' ownership is asked about only for a Service the operator holds (its link
    // annotation, `service_link::plan`); for any other, the operator's own entries are enough.
    let held = ours
        || svc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_LINK));
    prune_meta(&mut svc.metadata, |entries| {
        entries
            .into_iter()
            .filter(|entry| held || entry.manager.as_deref() == Some(service_link::FIELD_MANAGER))
            .filter_map(|entry| owned_fields_of(entry, service_link::FIELD_MANAGER))
            .collect()
    });
    if !ours {
        if let Some(annotations) = svc.metadata.annotations.as_mut() {
            annotations
                .retain(|key, _| READ_ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p)));
        }
        if svc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.is_empty())
        {
            svc.metadata.annotations = None;
        }
        if let Some(spec) = svc.spec.take() {
            svc.spec = Some(ServiceSpec {
                type_: spec.type_,
                cluster_ip: spec.cluster_ip,
                load_balancer_source_ranges: spec.load_balancer_source_ranges,
                ..Default::default()
            });
        }
    }
    let mut meta = std::mem::take(&mut svc.metadata);
    svc.metadata = ObjectMeta {
        annotations: meta.annotations.take(),
        managed_fields: meta.managed_fields.take(),
        ..identity(meta)
    };
    svc.status = svc
        .status
        .take()
        .and_then(|s| s.load_balancer)
        .map(|load_balancer| ServiceStatus {
            load_balancer: Some(load_balancer),
            conditions: None,
        });
}

/// The compact record the Service cache keeps of a Service [`service`] pruned: the same fields,
/// with the whole spec for the operator's own DNS Services.
pub fn service_record(svc: &Service) -> ServiceRecord {
    ServiceRecord::new(svc, load_balancer::is_ours(svc))
}

/// Keeps a Namespace's name and labels: the namespace selector reads nothing else.
pub fn namespace(ns: &mut Namespace) {
    ns.metadata = identity(std::mem::take(&mut ns.metadata));
    ns.spec = None;
    ns.status = None;
}

/// Drops a link's managedFields and `last-applied-configuration`: the duties read its spec, status
/// and the operator's own annotations.
pub fn link(link: &mut AppServiceLink) {
    prune_meta(&mut link.metadata, |_| Vec::new());
}

/// Drops a ConfigMap's managedFields: the duties read its data and annotations.
pub fn configmap(cm: &mut ConfigMap) {
    prune_meta(&mut cm.metadata, |_| Vec::new());
}

/// Keeps of CoreDNS's Deployment what its roll reads: the pod template (image, annotations).
pub fn deployment(deployment: &mut Deployment) {
    prune_meta(&mut deployment.metadata, |_| Vec::new());
    deployment.status = None;
}

impl Prune for Service {
    fn prune(&mut self) {
        service(self);
    }
}

impl Prune for AppServiceLink {
    fn prune(&mut self) {
        link(self);
    }
}

impl Prune for ConfigMap {
    fn prune(&mut self) {
        configmap(self);
    }
}

/// The metadata every cached object keeps: name, namespace, uid, resourceVersion and labels.
fn identity(meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        ..Default::default()
    }
}

/// Drops `last-applied-configuration` and whatever `keep` does not keep of managedFields.
fn prune_meta(
    meta: &mut ObjectMeta,
    keep: impl FnOnce(Vec<ManagedFieldsEntry>) -> Vec<ManagedFieldsEntry>,
) {
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    meta.managed_fields = meta
        .managed_fields
        .take()
        .map(keep)
        .filter(|kept| !kept.is_empty());
}

/// The entry reduced to the fields of [`OWNED_PATHS`] it owns; `None` when it owns none of them,
/// unless it is `ours` (whose entry is kept, for its time, even when it owns none).
fn owned_fields_of(entry: ManagedFieldsEntry, ours: &str) -> Option<ManagedFieldsEntry> {
    let is_ours = entry.manager.as_deref() == Some(ours);
    let mut kept = Value::Object(Map::new());
    if let Some(FieldsV1(fields)) = &entry.fields_v1 {
        for path in OWNED_PATHS.iter() {
            if let Some(node) = lookup(fields, path) {
                insert(&mut kept, path, node.clone());
            }
        }
    }
    let owns_any = kept.as_object().is_some_and(|m| !m.is_empty());
    (owns_any || is_ours).then_some(ManagedFieldsEntry {
        api_version: None,
        fields_type: entry.fields_type,
        fields_v1: Some(FieldsV1(kept)),
        manager: entry.manager,
        operation: entry.operation,
        subresource: entry.subresource,
        time: entry.time,
    })
}

fn lookup<'a>(node: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(node, |node, step| node.get(step))
}

fn insert(root: &mut Value, path: &[String], leaf: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for step in parents {
        node = match node {
            Value::Object(map) => map
                .entry(step.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            _ => return,
        };
    }
    if let Value::Object(map) = node {
        map.insert(last.clone(), leaf);
    }
}

#[cfg(test)]
mod tests;
