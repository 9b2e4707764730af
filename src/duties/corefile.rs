//! Duty 3: the CoreDNS `k8s_external` override in `kube-system/coredns-custom`, so that
//! `<service>.<namespace>.<zone>` answers with the Service's load balancer IP.
//!
//! The operator owns one key of the ConfigMap and never touches the others. A bad Corefile takes DNS
//! down for the whole cluster, so only [`Zone`]s — names that passed validation — can be rendered.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Patch;
use kube::runtime::events::EventType;
use kube::Api;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::crd::AppServiceLink;
use crate::error::KubeError;
use crate::status::{types, DutyStatus};
use crate::validation::{self, InvalidField};

/// Namespace of the ConfigMap and of CoreDNS.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap AKS (and k3s) import custom CoreDNS configuration from.
pub const CONFIGMAP: &str = "coredns-custom";
/// Our key. AKS imports `*.override` keys inside the `.:53` server block, next to the `kubernetes`
/// plugin, which is the only place `k8s_external` works (AKS "Customize CoreDNS" docs).
pub const OVERRIDE_KEY: &str = "appservicelink.override";
/// Why the duty stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The override key could not be read or written.
    #[error(transparent)]
    Override(KubeError),
    /// CoreDNS could not be read or rolled to load the override.
    #[error(transparent)]
    Restart(KubeError),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Override(e) | Self::Restart(e) => e.category(),
        }
    }

    /// The reason of the `CoreDNSOverrideReady` condition it leads to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Override(_) => "OverrideWriteFailed",
            Self::Restart(_) => "CoreDNSRestartFailed",
        }
    }
}

/// Pod-template annotation holding the hash of the override CoreDNS last rolled for.
pub const HASH_ANNOTATION: &str = "appservicelink.io/coredns-override-hash";
/// Field manager for our ConfigMap key.
pub const FIELD_MANAGER: &str = "appservicelink-corefile";
/// Field manager for the CoreDNS rollout annotation.
pub const RESTART_FIELD_MANAGER: &str = "appservicelink-coredns-restart";

/// A zone name that passed validation: the only thing that can reach the Corefile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zone(String);

impl Zone {
    /// Accepts a lower-case DNS name; anything else (spaces, newlines, braces, comments) is refused.
    pub fn parse(zone: &str) -> Result<Self, InvalidField> {
        if validation::is_zone(zone) {
            Ok(Self(zone.to_string()))
        } else {
            Err(InvalidField {
                field: "spec.dns.zone".into(),
                message: validation::ZONE_MESSAGE.into(),
            })
        }
    }

    /// The zone name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The override's content for these zones, or `None` when there are none.
///
/// CoreDNS allows a plugin once per server block (two `k8s_external` lines stop CoreDNS from
/// starting, Azure/AKS#2623), so every link's zone shares one directive.
pub fn render(zones: &BTreeSet<Zone>) -> Option<String> {
    if zones.is_empty() {
        return None;
    }
    let names: Vec<&str> = zones.iter().map(Zone::as_str).collect();
    Some(format!("k8s_external {}\n", names.join(" ")))
}

/// Other `.override` keys of the ConfigMap that already use `k8s_external`: writing ours beside
/// them would be a second directive in the same server block.
pub fn foreign_k8s_external(data: &BTreeMap<String, String>) -> Vec<String> {
    data.iter()
        .filter(|(key, _)| key.as_str() != OVERRIDE_KEY && key.ends_with(".override"))
        .filter(|(_, content)| uses_k8s_external(content))
        .map(|(key, _)| key.clone())
        .collect()
}

fn uses_k8s_external(content: &str) -> bool {
    content.lines().any(|line| {
        let code = line.split('#').next().unwrap_or_default();
        code.split(|c: char| c.is_whitespace() || c == '{' || c == '}')
            .any(|token| token == "k8s_external")
    })
}

/// The server-side apply body for our key. Applying without the key removes it, while every other
/// key stays as it is: server-side apply only touches fields this manager owns.
pub fn desired_configmap(content: Option<&str>) -> Value {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
    });
    if let Some(content) = content {
        body["data"] = json!({OVERRIDE_KEY: content});
    }
    body
}

/// Hash of the override content, recorded on CoreDNS's pod template so it rolls only on a change.
pub fn content_hash(content: Option<&str>) -> String {
    let digest = Sha256::digest(content.unwrap_or_default().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What CoreDNS's pod template must carry for `content`; `None` when nothing needs rolling (no
/// override, and CoreDNS was never rolled for one).
pub fn desired_restart_hash(content: Option<&str>, current: Option<&str>) -> Option<String> {
    let wanted = content_hash(content);
    match (content, current) {
        (None, None) => None,
        (_, Some(current)) if current == wanted => None,
        _ => Some(wanted),
    }
}

/// The merge patch that rolls CoreDNS, as `kubectl rollout restart` does, with the content hash.
pub fn restart_patch(hash: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: hash}}}}})
}

// ---------------------------------------------------------------------------------------------
// Applying: the only part of this duty that talks to the apiserver.
// ---------------------------------------------------------------------------------------------

/// Brings the override in line with every live, valid link's zone, and rolls CoreDNS when it
/// changed. `link` is the link being reconciled, for Events and its condition; `None` when a link
/// is being deleted.
pub async fn reconcile(ctx: &Context, link: Option<&AppServiceLink>) -> Result<DutyStatus, Error> {
    let zones: BTreeSet<Zone> = ctx
        .valid_links()
        .iter()
        .filter_map(|l| Zone::parse(&l.spec.dns.zone).ok())
        .collect();
    let content = render(&zones);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let configmap = api.get_opt(CONFIGMAP).await.map_err(|e| {
        Error::Override(KubeError::new(
            format!("reading ConfigMap {NAMESPACE}/{CONFIGMAP}"),
            e,
        ))
    })?;
    let data = configmap
        .as_ref()
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    let foreign = foreign_k8s_external(&data);
    if !foreign.is_empty() {
        return Ok(DutyStatus::blocked(
            types::COREDNS_OVERRIDE,
            "ForeignK8sExternal",
            format!(
                "key(s) {} of ConfigMap {NAMESPACE}/{CONFIGMAP} already use k8s_external, and CoreDNS allows it once per server block; nothing was written. Move those zones into an AppServiceLink or remove the directive",
                foreign.join(", ")
            ),
        ));
    }
    if data.get(OVERRIDE_KEY).map(String::as_str) != content.as_deref()
        && (configmap.is_some() || content.is_some())
    {
        api.patch(
            CONFIGMAP,
            &ctx.apply_params(FIELD_MANAGER),
            &Patch::Apply(&desired_configmap(content.as_deref())),
        )
        .await
        .map_err(|e| {
            Error::Override(KubeError::new(
                format!("applying key {OVERRIDE_KEY} of ConfigMap {NAMESPACE}/{CONFIGMAP}"),
                e,
            ))
        })?;
        let note = match &content {
            Some(c) => format!("CoreDNS override {OVERRIDE_KEY} set to: {}", c.trim()),
            None => format!("CoreDNS override {OVERRIDE_KEY} removed: no link needs it"),
        };
        if let Some(link) = link {
            ctx.event(link, EventType::Normal, "CoreDNSOverrideUpdated", note)
                .await;
        } else {
            tracing::info!("{note}");
        }
    }
    let rollout = roll_coredns(ctx, content.as_deref(), link).await?;
    let zone_list: Vec<&str> = zones.iter().map(Zone::as_str).collect();
    Ok(DutyStatus::ready(
        types::COREDNS_OVERRIDE,
        "OverrideApplied",
        format!(
            "k8s_external serves zone(s) {} through key {OVERRIDE_KEY}{rollout}",
            zone_list.join(", ")
        ),
    ))
}

/// Rolls the CoreDNS Deployment when the override changed since its last roll. Returns a note for
/// the condition message.
async fn roll_coredns(
    ctx: &Context,
    content: Option<&str>,
    link: Option<&AppServiceLink>,
) -> Result<String, Error> {
    let name = &ctx.config.coredns_deployment;
    if !ctx.config.restart_coredns {
        return Ok("; CoreDNS restarts are off, its reload plugin picks the change up within about a minute".into());
    }
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let Some(deployment) = api.get_opt(name).await.map_err(|e| {
        Error::Restart(KubeError::new(
            format!("reading Deployment {NAMESPACE}/{name}"),
            e,
        ))
    })?
    else {
        return Ok(format!("; Deployment {NAMESPACE}/{name} not found, so CoreDNS was not restarted (its reload plugin picks the change up within about a minute)"));
    };
    let current = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(HASH_ANNOTATION))
        .cloned();
    if let Some(hash) = desired_restart_hash(content, current.as_deref()) {
        let params = ctx.update_params(RESTART_FIELD_MANAGER);
        api.patch(name, &params, &Patch::Merge(&restart_patch(&hash)))
            .await
            .map_err(|e| {
                Error::Restart(KubeError::new(
                    format!("restarting Deployment {NAMESPACE}/{name}"),
                    e,
                ))
            })?;
        let note = format!(
            "Deployment {NAMESPACE}/{name} restarted to load the CoreDNS override (hash {hash})"
        );
        match link {
            Some(link) => {
                ctx.event(link, EventType::Normal, "CoreDNSRestarted", note)
                    .await
            }
            None => tracing::info!("{note}"),
        }
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests;
