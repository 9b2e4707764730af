//! Duty 3: the CoreDNS `k8s_external` override in `kube-system/coredns-custom`, so that
//! `<service>.<namespace>.<zone>` answers with the Service's load balancer IP.
//!
//! The operator owns one key of the ConfigMap and never touches the others. A bad Corefile takes DNS
//! down for the whole cluster, so only [`Zone`]s — names that passed validation — can be rendered,
//! and nothing is written unless CoreDNS would load the result ([`assess`], with the Caddyfile
//! parser in [`syntax`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Patch;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::Api;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::crd::AppServiceLink;
use crate::error::KubeError;
use crate::status::{types, DutyStatus};
use crate::validation::{self, InvalidField};

pub mod syntax;

/// Namespace of the ConfigMap and of CoreDNS.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap AKS (and k3s) import custom CoreDNS configuration from.
pub const CONFIGMAP: &str = "coredns-custom";
/// Our key. AKS imports `*.override` keys inside the `.:53` server block, next to the `kubernetes`
/// plugin, which is the only place `k8s_external` works (AKS "Customize CoreDNS" docs).
pub const OVERRIDE_KEY: &str = "appservicelink.override";
/// The ConfigMap holding CoreDNS's main Corefile (AKS, k3s and kubeadm all name it so).
pub const COREFILE_CONFIGMAP: &str = "coredns";
/// Its key.
pub const COREFILE_KEY: &str = "Corefile";
/// Where the Corefile's imports find `coredns-custom`: AKS mounts it at `/etc/coredns/custom`,
/// beside the Corefile (AKS "Customize CoreDNS" docs); k3s likewise.
pub const CUSTOM_DIR: &str = "custom";
/// The part of AKS's Corefile that matters here, for a cluster whose Corefile is not there to read:
/// `.override` keys inside the `.:53` block, `.server` keys beside it.
pub const AKS_COREFILE_IMPORTS: &str =
    ".:53 {\n    import custom/*.override\n}\nimport custom/*.server\n";

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

/// Pod-template annotation holding the hash of the override CoreDNS was rolled for; changing it
/// is what rolls CoreDNS, as `kubectl rollout restart` does.
pub const HASH_ANNOTATION: &str = "appservicelink.io/coredns-override-hash";
/// Annotation on `coredns-custom`, owned by our field manager: the hash of the override CoreDNS
/// was last rolled for. The operator's own record, because the pod-template annotation is not: the
/// AKS addon manager or a GitOps tool reconciling the Deployment strips it, and that alone must
/// not roll CoreDNS again.
pub const ROLLED_ANNOTATION: &str = "appservicelink.io/coredns-rolled-for";
/// Field manager for our ConfigMap key and our roll record.
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
/// starting, Azure/AKS#2623), so every link's zone shares one directive. With `fallthrough`, a name
/// in the zones that is no load balancer goes on to the next plugins instead of NXDOMAIN.
pub fn render(zones: &BTreeSet<Zone>, fallthrough: bool) -> Option<String> {
    if zones.is_empty() {
        return None;
    }
    let names: Vec<&str> = zones.iter().map(Zone::as_str).collect();
    Some(if fallthrough {
        format!("k8s_external {} {{\n    fallthrough\n}}\n", names.join(" "))
    } else {
        format!("k8s_external {}\n", names.join(" "))
    })
}

/// Whether the CoreDNS image's tag is a version whose `k8s_external` knows `fallthrough`.
pub fn supports_fallthrough(image: &str) -> bool {
    // `fallthrough` came in CoreDNS v1.11.0 (coredns/coredns#5959) and an older one refuses to start
    // on it, so a tag that names no version (`latest`, a digest) gets none.
    let image = image.split('@').next().unwrap_or_default();
    let Some((_, tag)) = image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) else {
        return false;
    };
    let mut numbers = tag.strip_prefix('v').unwrap_or(tag).split(['.', '-', '+']);
    let mut number = || numbers.next().and_then(|n| n.parse::<u64>().ok());
    match (number(), number()) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 11),
        _ => false,
    }
}

/// The image of the Deployment's CoreDNS container (named `coredns`, else the first).
pub fn coredns_image(deployment: &Deployment) -> Option<&str> {
    let containers = &deployment.spec.template.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "coredns")
        .or_else(|| containers.first())
        .and_then(|c| c.image.as_deref())
}

/// What CoreDNS would make of `coredns-custom` with our key set to some content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// CoreDNS loads it.
    Loads,
    /// Another key (or the Corefile) already has `k8s_external` in the server block our key is
    /// imported into: these files, as messages name them.
    ForeignK8sExternal(Vec<String>),
    /// CoreDNS would refuse it: why, naming the key.
    Broken(String),
}

/// Parses the effective Corefile as CoreDNS would: `corefile` (the main Corefile, or AKS's imports
/// when there is none to read) with every key of `data` it imports, our key replaced by `ours`.
pub fn assess(
    corefile: Option<&str>,
    data: &BTreeMap<String, String>,
    ours: Option<&str>,
) -> Assessment {
    let mut files = data.clone();
    files.remove(OVERRIDE_KEY);
    if let Some(ours) = ours {
        files.insert(OVERRIDE_KEY.to_string(), ours.to_string());
    }
    // A key is spliced into the Corefile token by token, so its braces must balance on their own.
    for (key, text) in &files {
        if key.ends_with(".override") || key.ends_with(".server") {
            if let Some((line, why)) = syntax::unbalanced_brace(text) {
                return Assessment::Broken(format!("key {key} line {line}: {why}"));
            }
        }
    }
    let corefile = corefile.unwrap_or(AKS_COREFILE_IMPORTS);
    let blocks = match syntax::parse(COREFILE_SOURCE, corefile, CUSTOM_DIR, &files) {
        Ok(blocks) => blocks,
        Err(e) => {
            return Assessment::Broken(format!(
                "{} line {}: {}",
                describe(&e.file),
                e.line,
                e.message
            ))
        }
    };
    if ours.is_some() {
        let foreign: BTreeSet<String> = blocks
            .iter()
            .filter(|b| b.directives.iter().any(|d| d.file == OVERRIDE_KEY))
            .flat_map(|b| &b.directives)
            .filter(|d| d.name == "k8s_external" && d.file != OVERRIDE_KEY)
            .map(|d| describe(&d.file))
            .collect();
        if !foreign.is_empty() {
            return Assessment::ForeignK8sExternal(foreign.into_iter().collect());
        }
    }
    for block in &blocks {
        let mut seen: BTreeMap<&str, &syntax::Directive> = BTreeMap::new();
        for d in block
            .directives
            .iter()
            .filter(|d| !REPEATABLE_PLUGINS.contains(&d.name.as_str()))
        {
            if let Some(first) = seen.insert(d.name.as_str(), d) {
                return Assessment::Broken(format!(
                    "plugin {} appears twice in server block {} ({} line {}, {} line {}), and CoreDNS allows a plugin once per server block",
                    d.name,
                    block.keys.join(" "),
                    describe(&first.file),
                    first.line,
                    describe(&d.file),
                    d.line
                ));
            }
        }
    }
    if let Some(d) = blocks
        .iter()
        .flat_map(|b| &b.directives)
        .find(|d| !KNOWN_PLUGINS.contains(&d.name.as_str()))
    {
        return Assessment::Broken(format!(
            "{} line {}: unknown directive '{}', and CoreDNS does not start with a directive it does not know",
            describe(&d.file),
            d.line,
            d.name
        ));
    }
    Assessment::Loads
}

/// Every directive a CoreDNS release compiles in (the union of coredns/coredns's plugin.cfg from
/// v1.8 to v1.12, so that a plugin of any release AKS ships passes): anything else stops CoreDNS
/// ("Unknown directive").
pub const KNOWN_PLUGINS: &[&str] = &[
    "metadata",
    "geoip",
    "cancel",
    "tls",
    "quic",
    "timeouts",
    "multisocket",
    "reload",
    "nsid",
    "bufsize",
    "root",
    "bind",
    "debug",
    "trace",
    "ready",
    "health",
    "pprof",
    "prometheus",
    "errors",
    "log",
    "dnstap",
    "local",
    "dns64",
    "acl",
    "any",
    "chaos",
    "loadbalance",
    "tsig",
    "cache",
    "rewrite",
    "header",
    "dnssec",
    "autopath",
    "minimal",
    "template",
    "transfer",
    "hosts",
    "route53",
    "azure",
    "clouddns",
    "federation",
    "k8s_external",
    "kubernetes",
    "file",
    "auto",
    "secondary",
    "etcd",
    "loop",
    "forward",
    "grpc",
    "erratic",
    "whoami",
    "on",
    "sign",
    "view",
    "nomad",
];

/// Plugins whose setup reads every occurrence in a server block, each one a rule of its own
/// (coredns/coredns plugin/{log,rewrite,template}/setup.go loop over `c.Next()` appending rules);
/// a second of any other plugin stops CoreDNS (`plugin.ErrOnce`, Azure/AKS#2623).
pub const REPEATABLE_PLUGINS: &[&str] = &["log", "rewrite", "template"];

/// The name [`assess`] gives the main Corefile.
const COREFILE_SOURCE: &str = "Corefile";

/// A parsed file as messages name it.
fn describe(file: &str) -> String {
    if file == COREFILE_SOURCE {
        format!("the Corefile (ConfigMap {NAMESPACE}/{COREFILE_CONFIGMAP})")
    } else {
        format!("key {file}")
    }
}

/// The server-side apply body for our key and our record of the last roll. Applying without
/// either removes it, while every other key and annotation stays as it is: server-side apply only
/// touches fields this manager owns.
pub fn desired_configmap(content: Option<&str>, rolled_for: Option<&str>) -> Value {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
    });
    if let Some(content) = content {
        body["data"] = json!({OVERRIDE_KEY: content});
    }
    if let Some(hash) = rolled_for {
        body["metadata"]["annotations"] = json!({ROLLED_ANNOTATION: hash});
    }
    body
}

/// Hash of the override content, recorded when CoreDNS is rolled for it.
pub fn content_hash(content: Option<&str>) -> String {
    let digest = Sha256::digest(content.unwrap_or_default().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether CoreDNS must be rolled to load `content`. `recorded` is the operator's own record of the
/// last roll (on `coredns-custom`), `template` what CoreDNS's pod template carries (an older
/// operator's only record). Either saying `content` was rolled for is enough, so someone stripping
/// the pod-template annotation rolls nothing, while a changed override always rolls.
pub fn needs_roll(content: Option<&str>, recorded: Option<&str>, template: Option<&str>) -> bool {
    let wanted = content_hash(content);
    if recorded == Some(wanted.as_str()) || template == Some(wanted.as_str()) {
        return false;
    }
    // No override, and CoreDNS was never rolled for one.
    !(content.is_none() && recorded.is_none() && template.is_none())
}

/// What the roll record should say once CoreDNS runs `content`: nothing once there is no override,
/// so the operator leaves nothing of its own behind.
pub fn desired_record(content: Option<&str>) -> Option<String> {
    content.map(|c| content_hash(Some(c)))
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
///
/// Nothing is written unless CoreDNS would load the result: a plugin twice in a server block,
/// unbalanced braces, or another key's `k8s_external` beside ours stop the duty with a condition
/// naming the key (and for the last, our key is withdrawn).
pub async fn reconcile(ctx: &Context, link: Option<&AppServiceLink>) -> Result<DutyStatus, Error> {
    let zones: BTreeSet<Zone> = ctx
        .valid_links()
        .iter()
        .filter_map(|l| Zone::parse(&l.spec.dns.zone).ok())
        .collect();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    // Watched, with the operator's own last write.
    let configmap = ctx.zones_configmap(NAMESPACE, CONFIGMAP);
    let data = configmap
        .as_ref()
        .and_then(|c| c.data.clone())
        .unwrap_or_default();
    let recorded = configmap
        .as_ref()
        .and_then(|c| c.metadata.annotations.as_ref())
        .and_then(|a| a.get(ROLLED_ANNOTATION))
        .cloned();
    let corefile = api
        .get_opt(COREFILE_CONFIGMAP)
        .await
        .map_err(|e| {
            Error::Override(KubeError::new(
                format!("reading ConfigMap {NAMESPACE}/{COREFILE_CONFIGMAP}"),
                e,
            ))
        })?
        .and_then(|c| c.data)
        .and_then(|mut d| d.remove(COREFILE_KEY));
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let name = &ctx.config.coredns_deployment;
    let deployment = deployments.get_opt(name).await.map_err(|e| {
        Error::Restart(KubeError::new(
            format!("reading Deployment {NAMESPACE}/{name}"),
            e,
        ))
    })?;
    let fallthrough = deployment
        .as_ref()
        .and_then(coredns_image)
        .is_some_and(supports_fallthrough);
    let content = render(&zones, fallthrough);

    match assess(corefile.as_deref(), &data, content.as_deref()) {
        Assessment::Loads => {}
        Assessment::ForeignK8sExternal(files) => {
            let files = files.join(", ");
            let done = if data.contains_key(OVERRIDE_KEY) {
                apply(ctx, &api, None, recorded.as_deref()).await?;
                let note = format!(
                    "CoreDNS override {OVERRIDE_KEY} withdrawn: {files} already uses k8s_external"
                );
                record(
                    ctx,
                    link,
                    EventType::Warning,
                    "CoreDNSOverrideWithdrawn",
                    note,
                )
                .await;
                format!("the operator withdrew its key {OVERRIDE_KEY}")
            } else {
                "nothing was written".to_string()
            };
            return Ok(DutyStatus::blocked(
                types::COREDNS_OVERRIDE,
                "ForeignK8sExternal",
                format!(
                    "{files} of ConfigMap {NAMESPACE}/{CONFIGMAP} already uses k8s_external in the server block the override goes into, and CoreDNS allows it once per server block; {done}. Move those zones into an AppServiceLink or remove the directive"
                ),
            ));
        }
        Assessment::Broken(why) => {
            // Taking our key away cannot make it worse, and a deleted link must not leave its
            // zone behind; anything else waits until the key is fixed.
            let done = if content.is_none() && data.contains_key(OVERRIDE_KEY) {
                // No link is left to need the roll record either.
                apply(ctx, &api, None, None).await?;
                let note = format!("CoreDNS override {OVERRIDE_KEY} removed: no link needs it");
                record(ctx, link, EventType::Normal, "CoreDNSOverrideUpdated", note).await;
                format!("the operator only removed its key {OVERRIDE_KEY}, which no link needs")
            } else {
                "nothing was written".to_string()
            };
            return Ok(DutyStatus::blocked(
                types::COREDNS_OVERRIDE,
                "CorefileWouldNotLoad",
                format!(
                    "CoreDNS would not load ConfigMap {NAMESPACE}/{CONFIGMAP} with the override: {why}; {done} and CoreDNS was not restarted. Fix that key"
                ),
            ));
        }
    }

    let exists = configmap.is_some() || content.is_some();
    if data.get(OVERRIDE_KEY).map(String::as_str) != content.as_deref() && exists {
        apply(ctx, &api, content.as_deref(), recorded.as_deref()).await?;
        let note = match &content {
            Some(c) => format!("CoreDNS override {OVERRIDE_KEY} set to: {}", c.trim()),
            None => format!("CoreDNS override {OVERRIDE_KEY} removed: no link needs it"),
        };
        record(ctx, link, EventType::Normal, "CoreDNSOverrideUpdated", note).await;
    }
    let rollout = match &deployment {
        None => format!("; Deployment {NAMESPACE}/{name} not found, so CoreDNS was not restarted (its reload plugin picks the change up within about a minute)"),
        Some(_) if !ctx.config.restart_coredns => {
            "; CoreDNS restarts are off, its reload plugin picks the change up within about a minute".into()
        }
        Some(deployment) => {
            roll_coredns(ctx, &deployments, deployment, content.as_deref(), recorded.as_deref(), link)
                .await?;
            // Recorded only once CoreDNS was rolled (or already ran it): a crash in between rolls
            // again rather than never.
            let wanted = desired_record(content.as_deref());
            if wanted != recorded && exists {
                apply(ctx, &api, content.as_deref(), wanted.as_deref()).await?;
            }
            String::new()
        }
    };
    // Every link's condition says the same, so that one link's zone edit changes no other status.
    Ok(DutyStatus::ready(
        types::COREDNS_OVERRIDE,
        "OverrideApplied",
        format!(
            "k8s_external serves every link's zone through key {OVERRIDE_KEY} of ConfigMap {NAMESPACE}/{CONFIGMAP}{rollout}"
        ),
    ))
}

/// Server-side applies our key and our roll record to `coredns-custom`.
async fn apply(
    ctx: &Context,
    api: &Api<ConfigMap>,
    content: Option<&str>,
    rolled_for: Option<&str>,
) -> Result<(), Error> {
    // Its watch event may come back before its answer (reconcile::changed_meanwhile).
    let _writing = ctx
        .own
        .configmaps
        .writing(ObjectRef::new(CONFIGMAP).within(NAMESPACE));
    api.patch(
        CONFIGMAP,
        &ctx.apply_params(FIELD_MANAGER),
        &Patch::Apply(&desired_configmap(content, rolled_for)),
    )
    .await
    .map(|written| ctx.own.configmaps.record(written))
    .map_err(|e| {
        Error::Override(KubeError::new(
            format!("applying key {OVERRIDE_KEY} of ConfigMap {NAMESPACE}/{CONFIGMAP}"),
            e,
        ))
    })
}

/// An Event on the link, or a log line when the link is being deleted.
async fn record(
    ctx: &Context,
    link: Option<&AppServiceLink>,
    type_: EventType,
    reason: &str,
    note: String,
) {
    match link {
        Some(link) => ctx.event(link, type_, reason, note).await,
        None => tracing::info!(reason, "{note}"),
    }
}

/// Rolls the CoreDNS Deployment when the override changed since its last roll.
async fn roll_coredns(
    ctx: &Context,
    api: &Api<Deployment>,
    deployment: &Deployment,
    content: Option<&str>,
    recorded: Option<&str>,
    link: Option<&AppServiceLink>,
) -> Result<(), Error> {
    let name = &ctx.config.coredns_deployment;
    let template = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(HASH_ANNOTATION))
        .map(String::as_str);
    if !needs_roll(content, recorded, template) {
        return Ok(());
    }
    let hash = content_hash(content);
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
    record(ctx, link, EventType::Normal, "CoreDNSRestarted", note).await;
    Ok(())
}

#[cfg(test)]
mod tests;
