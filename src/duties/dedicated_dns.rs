//! Duty 3, dedicated mode: the operator's own CoreDNS, in its own namespace, serving every link's
//! zone with `k8s_external` and forwarding every other name to Azure DNS. In this mode nothing in
//! `kube-system` is written: neither `coredns-custom` nor the cluster's CoreDNS (AKS Automatic
//! refuses writes in its managed system namespaces).
//!
//! The operator owns three objects, all named [`NAME`]: the ConfigMap with the Corefile, the
//! Deployment (two replicas, restricted pod security profile) and its PodDisruptionBudget. The
//! chart creates the ServiceAccount and the cluster-wide read access CoreDNS needs. The DNS Service
//! ([`super::dns_service`]) selects these pods instead of the cluster's CoreDNS.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Patch;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::context::{Context, DedicatedDns};
use crate::crd::AppServiceLink;
use crate::duties::corefile::Zone;
use crate::duties::load_balancer::{is_ours, MANAGED_BY, MANAGED_BY_LABEL};
use crate::error::{is_not_found, KubeError};
use crate::status::{types, DutyStatus};

/// Name of the ConfigMap, the Deployment, the PodDisruptionBudget and the ServiceAccount.
pub const NAME: &str = "appservicelink-coredns";
/// The label the dedicated CoreDNS pods carry, which the DNS Service selects.
pub const POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", NAME);
/// Field manager for the three objects.
pub const FIELD_MANAGER: &str = "appservicelink-dedicated-dns";
/// Annotation holding the hash of the body last applied, so a quiet reconcile writes nothing.
const APPLIED_HASH: &str = "appservicelink.io/applied-hash";
/// Pod-template annotation holding the Corefile's hash: a new Corefile rolls the pods.
const COREFILE_HASH: &str = "appservicelink.io/corefile-hash";
/// Azure DNS, the resolver every Azure virtual network offers (Azure docs, "What is IP address
/// 168.63.129.16?").
pub const AZURE_DNS: &str = "168.63.129.16";
/// The upstream CoreDNS image, the chart's default.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.12.1";
/// Replicas: two, so that a node drain (bounded by the PodDisruptionBudget) keeps one answering.
const REPLICAS: i32 = 2;

/// Why the duty stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One of the three objects could not be read, written or deleted.
    #[error(transparent)]
    Apply(KubeError),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Apply(e) => e.category(),
        }
    }

    /// The reason of the `CoreDNSOverrideReady` condition it leads to.
    pub fn reason(&self) -> &'static str {
        "DedicatedCoreDNSFailed"
    }
}

/// The Corefile of the dedicated CoreDNS for these zones. `k8s_external` answers from the
/// `kubernetes` plugin's view of the Services, so both are loaded; `kubernetes` serves only the
/// cluster domain, and every other name goes to Azure DNS.
pub fn corefile(zones: &BTreeSet<Zone>, cluster_domain: &str) -> String {
    let names: Vec<&str> = zones.iter().map(Zone::as_str).collect();
    let external = if names.is_empty() {
        String::new()
    } else {
        format!("    k8s_external {}\n", names.join(" "))
    };
    format!(
        ".:53 {{\n    errors\n    health :8080\n    ready :8181\n    kubernetes {cluster_domain} {{\n        ttl 30\n    }}\n{external}    cache 30\n    forward . {AZURE_DNS}\n    loop\n    reload\n}}\n"
    )
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn metadata(namespace: &str) -> Value {
    json!({
        "name": NAME,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, POD_LABEL.0: POD_LABEL.1},
    })
}

/// The ConfigMap holding the Corefile.
pub fn configmap(namespace: &str, corefile: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(namespace),
        "data": {"Corefile": corefile},
    })
}

/// The Deployment: two CoreDNS replicas under the restricted pod security profile, spread over
/// nodes, rolled when the Corefile changes.
pub fn deployment(config: &DedicatedDns, corefile: &str) -> Value {
    let probe = |path: &str, port: i32| json!({"httpGet": {"path": path, "port": port}, "periodSeconds": 10});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&config.namespace),
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {POD_LABEL.0: POD_LABEL.1}},
            "template": {
                "metadata": {
                    "labels": {POD_LABEL.0: POD_LABEL.1, MANAGED_BY_LABEL: MANAGED_BY},
                    "annotations": {COREFILE_HASH: short_hash(corefile)},
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {
                        "runAsNonRoot": true,
                        // The image's `nonroot` user.
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {POD_LABEL.0: POD_LABEL.1}},
                    }],
                    "containers": [{
                        "name": "coredns",
                        "image": config.image,
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            // The image's /coredns carries the file capability cap_net_bind_service=+ep,
                            // so the kernel refuses to exec it without NET_BIND_SERVICE
                            // (coredns/coredns#7435); restricted allows exactly that one.
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                        },
                        "livenessProbe": probe("/health", 8080),
                        "readinessProbe": probe("/ready", 8181),
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "170Mi"},
                        },
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                },
            },
        },
    })
}

/// The PodDisruptionBudget: a voluntary disruption (a node drain, an upgrade) leaves one replica.
pub fn pod_disruption_budget(namespace: &str) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(namespace),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {POD_LABEL.0: POD_LABEL.1}},
        },
    })
}

/// `body` with the hash of itself as an annotation, to compare with what is stored.
fn stamped(mut body: Value) -> (Value, String) {
    let hash = short_hash(&body.to_string());
    body["metadata"]["annotations"] = json!({APPLIED_HASH: hash});
    (body, hash)
}

// ---------------------------------------------------------------------------------------------
// Applying: the only part of this duty that talks to the apiserver.
// ---------------------------------------------------------------------------------------------

/// Applies `body` unless the stored object already carries its hash. Returns whether it wrote.
async fn ensure<K>(ctx: &Context, namespace: &str, body: Value, what: &str) -> Result<bool, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + serde::Serialize,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let (body, hash) = stamped(body);
    let current = api.get_opt(NAME).await.map_err(|e| {
        Error::Apply(KubeError::new(
            format!("reading {what} {namespace}/{NAME}"),
            e,
        ))
    })?;
    if current.is_some_and(|c| c.annotations().get(APPLIED_HASH) == Some(&hash)) {
        return Ok(false);
    }
    api.patch(NAME, &ctx.apply_params(FIELD_MANAGER), &Patch::Apply(&body))
        .await
        .map_err(|e| {
            Error::Apply(KubeError::new(
                format!("applying {what} {namespace}/{NAME}"),
                e,
            ))
        })?;
    Ok(true)
}

/// Deletes our object, if it is there and ours.
async fn remove<K>(ctx: &Context, namespace: &str, what: &str) -> Result<bool, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let failed = |verb: &str, e| {
        Error::Apply(KubeError::new(
            format!("{verb} {what} {namespace}/{NAME}"),
            e,
        ))
    };
    let Some(current) = api.get_opt(NAME).await.map_err(|e| failed("reading", e))? else {
        return Ok(false);
    };
    if !is_ours(&current) {
        return Ok(false);
    }
    match api.delete(NAME, &ctx.delete_params()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(failed("deleting", e)),
    }
}

/// Brings the dedicated CoreDNS in line with every live, valid link's zone; removes it once no link
/// is left. `link` is the link being reconciled, for Events; `None` when a link is being deleted.
pub async fn reconcile(
    ctx: &Context,
    config: &DedicatedDns,
    link: Option<&AppServiceLink>,
) -> Result<DutyStatus, Error> {
    let ns = config.namespace.as_str();
    let links = ctx.valid_links();
    if links.is_empty() {
        let mut removed = Vec::new();
        if remove::<PodDisruptionBudget>(ctx, ns, "PodDisruptionBudget").await? {
            removed.push("PodDisruptionBudget");
        }
        if remove::<Deployment>(ctx, ns, "Deployment").await? {
            removed.push("Deployment");
        }
        if remove::<ConfigMap>(ctx, ns, "ConfigMap").await? {
            removed.push("ConfigMap");
        }
        if !removed.is_empty() {
            tracing::info!(namespace = ns, objects = ?removed, "dedicated CoreDNS removed: no link is left");
        }
        return Ok(DutyStatus::ready(
            types::COREDNS_OVERRIDE,
            "DedicatedCoreDNSRemoved",
            "no link is left",
        ));
    }
    let zones: BTreeSet<Zone> = links
        .iter()
        .filter_map(|l| Zone::parse(&l.spec.dns.zone).ok())
        .collect();
    let corefile = corefile(&zones, &ctx.config.cluster_domain);
    // The Corefile first: the pods it rolls read it.
    let mut changed = Vec::new();
    if ensure::<ConfigMap>(ctx, ns, configmap(ns, &corefile), "ConfigMap").await? {
        changed.push("ConfigMap");
    }
    if ensure::<Deployment>(ctx, ns, deployment(config, &corefile), "Deployment").await? {
        changed.push("Deployment");
    }
    if ensure::<PodDisruptionBudget>(ctx, ns, pod_disruption_budget(ns), "PodDisruptionBudget")
        .await?
    {
        changed.push("PodDisruptionBudget");
    }
    let zone_list: Vec<&str> = zones.iter().map(Zone::as_str).collect();
    if let (Some(link), false) = (link, changed.is_empty()) {
        ctx.event(
            link,
            EventType::Normal,
            "DedicatedCoreDNSApplied",
            format!(
                "dedicated CoreDNS {ns}/{NAME} applied ({}), serving zone(s) {}",
                changed.join(", "),
                zone_list.join(", ")
            ),
        )
        .await;
    }
    // Every link's condition says the same, so that one link's zone edit changes no other status.
    Ok(DutyStatus::ready(
        types::COREDNS_OVERRIDE,
        "DedicatedCoreDNSApplied",
        format!(
            "dedicated CoreDNS {ns}/{NAME} serves every link's zone with k8s_external; kube-system is not touched"
        ),
    ))
}

#[cfg(test)]
mod tests;
