//! Duty 1: the Services a link selects become internal Azure load balancers, and go back to exactly
//! what they were when the link lets them go.
//!
//! The conversion is a server-side apply of `spec.type` and a few annotations. The Service's previous
//! type and annotation values are recorded in an annotation on the Service itself, so they survive
//! operator restarts and link re-creation, and unlinking can put them back.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::core::{Expression, Selector};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::context::services::{Labels, ServiceFacts};
use crate::context::{current_status, Context};
use crate::crd::{AppServiceLink, LinkedServiceState, LinkedServiceStatus};
use crate::duties::load_balancer::{self, ANNOTATION_INTERNAL, ANNOTATION_SUBNET};
use crate::error::{is_not_found, KubeError};
use crate::status::{types, DutyStatus};
use crate::validation;

/// The link that converted the Service.
pub const ANNOTATION_LINK: &str = "appservicelink.io/link";
/// JSON record of the Service's type and annotations before the conversion.
pub const ANNOTATION_PREVIOUS: &str = "appservicelink.io/previous-state";
/// Field manager for Service conversions and restores.
pub const FIELD_MANAGER: &str = "appservicelink-service";
/// Where the cluster's own DNS and system Services live: never converted.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// Why the duty stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Service could not be converted (or handed over to another link).
    #[error(transparent)]
    Convert(KubeError),
    /// A Service could not be put back as it was.
    #[error(transparent)]
    Restore(KubeError),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Convert(e) | Self::Restore(e) => e.category(),
        }
    }

    /// What to do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            Self::Convert(e) | Self::Restore(e) => e.advice(),
        }
    }

    /// The reason of the `ServicesReady` condition it leads to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Convert(_) => "ServiceConversionFailed",
            Self::Restore(_) => "ServiceRestoreFailed",
        }
    }
}

/// True when `link` selects `svc`, by labels and namespace labels. The operator's own DNS Services
/// are never selected.
pub fn selects(ctx: &Context, link: &AppServiceLink, svc: &Service) -> bool {
    Selection::of(link).matches(ctx, svc)
}

/// A link's selectors, parsed once, for deciding about many Services.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `None`: the link selects nothing (a selector that matches everything, or does not parse).
    services: Option<Vec<Expression>>,
    /// `None`: any namespace; `Some(None)`: a namespace selector that does not parse, so none.
    namespaces: Option<Option<Vec<Expression>>>,
}

/// A label selector's requirements, as the apiserver parses them; `None` when it does not parse.
fn expressions(selector: &LabelSelector) -> Option<Vec<Expression>> {
    Selector::try_from(selector.clone())
        .ok()
        .map(|s| s.into_iter().collect())
}

/// True when every requirement holds for `labels` (as `kube::core::Selector::matches`, on any
/// [`Labels`], so that cached records need no label map).
fn all_hold(expressions: &[Expression], labels: &(impl Labels + ?Sized)) -> bool {
    expressions.iter().all(|expression| match expression {
        Expression::In(key, values) => labels.label(key).is_some_and(|v| values.contains(v)),
        Expression::NotIn(key, values) => labels.label(key).is_none_or(|v| !values.contains(v)),
        Expression::Exists(key) => labels.label(key).is_some(),
        Expression::DoesNotExist(key) => labels.label(key).is_none(),
        Expression::Equal(key, value) => labels.label(key) == Some(value.as_str()),
        Expression::NotEqual(key, value) => labels.label(key) != Some(value.as_str()),
    })
}

impl Selection {
    /// The selectors of `link`.
    pub fn of(link: &AppServiceLink) -> Self {
        let spec = &link.spec.services;
        let services = (!validation::selector_matches_everything(&spec.selector))
            .then(|| expressions(&spec.selector))
            .flatten();
        let namespaces = spec.namespace_selector.as_ref().map(expressions);
        Self {
            services,
            namespaces,
        }
    }

    /// True when the link selects `svc` (a cached record or a typed Service).
    pub fn matches(&self, ctx: &Context, svc: &(impl ServiceFacts + ?Sized)) -> bool {
        if svc.label(load_balancer::MANAGED_BY_LABEL) == Some(load_balancer::MANAGED_BY) {
            return false;
        }
        let Some(selector) = &self.services else {
            return false;
        };
        if !all_hold(selector, svc) {
            return false;
        }
        match &self.namespaces {
            None => true,
            Some(None) => false,
            Some(Some(ns_selector)) => {
                // A namespace the cache does not have (yet) has no labels.
                let namespace = ctx.namespace(svc.namespace_name());
                let none = BTreeMap::new();
                all_hold(
                    ns_selector,
                    namespace.as_ref().map_or(&none, |n| n.labels()),
                )
            }
        }
    }
}

/// The live, valid links with their selections, computed once per reconcile: who else may hold or
/// take over a Service.
pub struct Links(Vec<(Arc<AppServiceLink>, Selection)>);

impl Links {
    /// Every live, valid link.
    pub fn valid(ctx: &Context) -> Self {
        Self(
            ctx.valid_links()
                .into_iter()
                .map(|l| {
                    let selection = Selection::of(&l);
                    (l, selection)
                })
                .collect(),
        )
    }

    fn selecting<'a>(
        &'a self,
        ctx: &'a Context,
        svc: &'a Service,
    ) -> impl Iterator<Item = &'a AppServiceLink> + 'a {
        self.0
            .iter()
            .filter(move |(_, selection)| selection.matches(ctx, svc))
            .map(|(l, _)| &**l)
    }
}

/// The annotations a conversion sets, whose previous values are recorded.
const RECORDED_ANNOTATIONS: [&str; 2] = [ANNOTATION_INTERNAL, ANNOTATION_SUBNET];

/// How a link wants its Services converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Name of the link.
    pub link: String,
    /// Subnet name for the internal load balancer, when the link sets one.
    pub subnet: Option<String>,
    /// Whether a public LoadBalancer may be turned internal.
    pub allow_public: bool,
}

/// Said of a converted public load balancer: Azure released its public IP at the conversion.
pub const PUBLIC_IP_RELEASED: &str = "was a public load balancer: unlinking makes it public again, but with a new public IP (a released public IP cannot be restored)";

/// How a pending Service's entry begins when the cloud controller reported why it cannot provision
/// the load balancer (its `SyncLoadBalancerFailed` Event follows).
pub const CANNOT_PROVISION: &str = "the cloud controller cannot provision its load balancer: ";

/// What a Service was before the conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousState {
    /// `spec.type` before the conversion.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Values of the annotations the conversion sets; `None` where the annotation was absent.
    pub annotations: BTreeMap<String, Option<String>>,
}

impl PreviousState {
    /// Records what `svc` is now.
    pub fn of(svc: &Service) -> Self {
        let annotations = RECORDED_ANNOTATIONS
            .iter()
            .map(|key| (key.to_string(), annotation(svc, key).map(str::to_string)))
            .collect();
        Self {
            service_type: service_type(svc).to_string(),
            annotations,
        }
    }

    /// Reads the record from the Service's annotation, if it is there and readable.
    pub fn recorded_on(svc: &Service) -> Option<Self> {
        serde_json::from_str(annotation(svc, ANNOTATION_PREVIOUS)?).ok()
    }

    /// The record on `svc` the operator may act on: one its own field manager wrote, or one that
    /// cannot make the Service a public load balancer. Anyone who may edit the Service may write the
    /// annotation, so a record that would expose it to the internet counts only when managedFields
    /// show the operator set it (any other write that changes it takes that ownership away).
    pub fn trusted_on(svc: &Service) -> Option<Self> {
        let record = Self::recorded_on(svc)?;
        (written_by_us(svc, ANNOTATION_PREVIOUS) || !record.is_public_load_balancer())
            .then_some(record)
    }

    /// True when putting this record back makes the Service a public load balancer.
    pub fn is_public_load_balancer(&self) -> bool {
        let internal = self.annotations.get(ANNOTATION_INTERNAL).cloned().flatten();
        self.service_type == "LoadBalancer" && internal.as_deref() != Some("true")
    }
}

/// Why a selected Service is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `spec.clusterIP: None` has no IP for a load balancer to front.
    Headless,
    /// An ExternalName Service is only a DNS alias.
    ExternalName,
    /// Already a public LoadBalancer; converting it changes who can reach it.
    PublicLoadBalancer,
    /// In `kube-system`, next to the cluster's own DNS.
    SystemNamespace,
}

impl SkipReason {
    /// A message saying why, and what to do about it.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Headless => "headless Service (clusterIP: None) cannot be a load balancer",
            Self::ExternalName => "ExternalName Service is a DNS alias and cannot be a load balancer",
            Self::PublicLoadBalancer => {
                "already a public LoadBalancer; set spec.services.allowPublicLoadBalancerConversion to make it internal"
            }
            Self::SystemNamespace => {
                "in kube-system, where the cluster's own DNS and system Services live; the operator never converts Services there"
            }
        }
    }
}

/// What to do with one selected Service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServicePlan {
    /// Already as the link wants it: write nothing.
    Converged,
    /// Server-side apply this body (with force: the link deliberately takes these fields over).
    Apply(Value),
    /// Another field manager changed fields the link applied; these are its names.
    Reverted { managers: Vec<String>, apply: Value },
    /// Left alone, for this reason.
    Skip(SkipReason),
    /// Another live link holds the Service with the same settings: shared, nothing to write.
    SharedWith(String),
    /// Another live link holds the Service with different settings.
    Conflict { holder: String },
}

/// Decides what to do with `svc` for the link `want`. `holder` is the live link that currently holds
/// the Service according to its annotation, with that link's settings, when it is another link that
/// still selects the Service.
pub fn plan(svc: &Service, want: &LinkSettings, holder: Option<&LinkSettings>) -> ServicePlan {
    if in_system_namespace(svc) {
        return ServicePlan::Skip(SkipReason::SystemNamespace);
    }
    if let Some(holder) = holder.filter(|h| h.link != want.link) {
        return if holder.subnet == want.subnet {
            ServicePlan::SharedWith(holder.link.clone())
        } else {
            ServicePlan::Conflict {
                holder: holder.link.clone(),
            }
        };
    }
    // Only a Service the operator converted itself (its field manager wrote the link annotation) is
    // exempt from these checks: an annotation anyone can write never skips the public opt-in.
    let ours = self::holder(svc).is_some();
    if !ours {
        if is_headless(svc) {
            return ServicePlan::Skip(SkipReason::Headless);
        }
        if service_type(svc) == "ExternalName" {
            return ServicePlan::Skip(SkipReason::ExternalName);
        }
        if service_type(svc) == "LoadBalancer"
            && annotation(svc, ANNOTATION_INTERNAL) != Some("true")
            && !want.allow_public
        {
            return ServicePlan::Skip(SkipReason::PublicLoadBalancer);
        }
    }
    let previous = PreviousState::trusted_on(svc).unwrap_or_else(|| PreviousState::of(svc));
    // Converted from a public load balancer by another link (one being deleted, say): taking it
    // over needs the same opt-in as converting it.
    if previous.is_public_load_balancer()
        && !want.allow_public
        && self::holder(svc) != Some(want.link.as_str())
    {
        return ServicePlan::Skip(SkipReason::PublicLoadBalancer);
    }
    let body = apply_body(svc, want, &previous);
    let differing = differing_fields(svc, want, &previous);
    if differing.is_empty() {
        return ServicePlan::Converged;
    }
    if !ours {
        return ServicePlan::Apply(body);
    }
    let managers = foreign_owners(
        svc.metadata.managed_fields.as_deref().unwrap_or_default(),
        &differing,
    );
    if managers.is_empty() {
        ServicePlan::Apply(body)
    } else {
        ServicePlan::Reverted {
            managers,
            apply: body,
        }
    }
}

/// The subnet a converted Service carries: the link's, or else whatever it had before.
fn desired_subnet<'a>(want: &'a LinkSettings, previous: &'a PreviousState) -> Option<&'a str> {
    want.subnet.as_deref().or_else(|| {
        previous
            .annotations
            .get(ANNOTATION_SUBNET)
            .and_then(|v| v.as_deref())
    })
}

/// The server-side apply body that converts `svc` for `want`, carrying the `previous` record.
pub fn apply_body(svc: &Service, want: &LinkSettings, previous: &PreviousState) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_INTERNAL.into(), json!("true"));
    if let Some(subnet) = desired_subnet(want, previous) {
        annotations.insert(ANNOTATION_SUBNET.into(), json!(subnet));
    }
    annotations.insert(ANNOTATION_LINK.into(), json!(want.link));
    annotations.insert(
        ANNOTATION_PREVIOUS.into(),
        json!(serde_json::to_string(previous).expect("a PreviousState always serializes")),
    );
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc.metadata.name,
            "namespace": svc.metadata.namespace,
            "annotations": annotations,
        },
        "spec": {"type": "LoadBalancer"},
    })
}

/// Paths (in managedFields terms) of the fields whose observed value differs from what `want` asks.
fn differing_fields(
    svc: &Service,
    want: &LinkSettings,
    previous: &PreviousState,
) -> Vec<Vec<String>> {
    let mut differing = Vec::new();
    if service_type(svc) != "LoadBalancer" {
        differing.push(vec!["f:spec".to_string(), "f:type".into()]);
    }
    let previous_json = serde_json::to_string(previous).expect("a PreviousState always serializes");
    let wanted = [
        (ANNOTATION_INTERNAL, Some("true")),
        (ANNOTATION_SUBNET, desired_subnet(want, previous)),
        (ANNOTATION_LINK, Some(want.link.as_str())),
        (ANNOTATION_PREVIOUS, Some(previous_json.as_str())),
    ];
    for (key, value) in wanted {
        if annotation(svc, key) != value {
            differing.push(annotation_path(key));
        }
    }
    differing
}

/// The path of the annotation `key` in managedFields terms.
fn annotation_path(key: &str) -> Vec<String> {
    vec![
        "f:metadata".to_string(),
        "f:annotations".into(),
        format!("f:{key}"),
    ]
}

/// True when the operator's field manager owns the annotation `key` of `svc`: its value is one the
/// operator wrote, not one someone else set or changed since.
fn written_by_us(svc: &Service, key: &str) -> bool {
    let path = annotation_path(key);
    svc.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER))
        .any(|entry| owns(entry.fields_v1.as_ref().map(|f| &f.0), &path))
}

/// Field managers other than ours that own any of `paths`.
pub fn foreign_owners(managed_fields: &[ManagedFieldsEntry], paths: &[Vec<String>]) -> Vec<String> {
    let mut managers: Vec<String> = managed_fields
        .iter()
        .filter(|entry| entry.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|entry| {
            let fields = entry.fields_v1.as_ref().map(|f| &f.0);
            paths.iter().any(|path| owns(fields, path))
        })
        .filter_map(|entry| entry.manager.clone())
        .collect();
    managers.sort();
    managers.dedup();
    managers
}

fn owns(fields: Option<&Value>, path: &[String]) -> bool {
    let mut node = match fields {
        Some(node) => node,
        None => return false,
    };
    for step in path {
        match node.get(step) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// The merge patch that puts `svc` back as it was before the conversion, or `None` when the
/// previous-state record is missing, unreadable, or not trusted (see [`PreviousState::trusted_on`]);
/// the Service is then left as it is.
///
/// Going back to ClusterIP: the apiserver clears nodePorts, healthCheckNodePort,
/// externalTrafficPolicy and allocateLoadBalancerNodePorts itself when the request leaves them
/// unchanged, but refuses leftover `loadBalancerSourceRanges`, so those are nulled in the same request.
pub fn restore_patch(svc: &Service) -> Option<Value> {
    let previous = PreviousState::trusted_on(svc)?;
    let mut annotations = serde_json::Map::new();
    for key in RECORDED_ANNOTATIONS {
        let value = previous.annotations.get(key).cloned().flatten();
        annotations.insert(key.to_string(), value.map_or(Value::Null, Value::String));
    }
    annotations.insert(ANNOTATION_LINK.into(), Value::Null);
    annotations.insert(ANNOTATION_PREVIOUS.into(), Value::Null);
    let mut spec = serde_json::Map::new();
    spec.insert("type".into(), json!(previous.service_type));
    let has_source_ranges = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.as_ref())
        .is_some_and(|r| !r.is_empty());
    if previous.service_type != "LoadBalancer" && has_source_ranges {
        spec.insert("loadBalancerSourceRanges".into(), Value::Null);
    }
    Some(json!({"metadata": {"annotations": annotations}, "spec": spec}))
}

/// The link that converted the Service: the one its annotation names, when the operator's own field
/// manager wrote that annotation. A link annotation someone else set holds nothing.
pub fn holder(svc: &Service) -> Option<&str> {
    annotation(svc, ANNOTATION_LINK).filter(|_| written_by_us(svc, ANNOTATION_LINK))
}

/// True when `svc` is an internal load balancer as `want` asks (its IP may still be pending).
pub fn is_internal_load_balancer(svc: &Service) -> bool {
    service_type(svc) == "LoadBalancer" && annotation(svc, ANNOTATION_INTERNAL) == Some("true")
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

fn in_system_namespace(svc: &Service) -> bool {
    svc.metadata.namespace.as_deref() == Some(SYSTEM_NAMESPACE)
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

// ---------------------------------------------------------------------------------------------
// Applying the plan: the only part of this duty that talks to the apiserver.
// ---------------------------------------------------------------------------------------------

/// How many times the operator re-applies a conversion another field manager reverted before it
/// stops and reports the fight instead (until the link's spec changes).
pub const MAX_REVERTS: i32 = 3;

/// Result of the Service duty for one link.
pub struct ServicesOutcome {
    /// The `ServicesReady` condition.
    pub duty: DutyStatus,
    /// One entry per selected Service, for status.
    pub entries: Vec<LinkedServiceStatus>,
    /// The writes the apiserver refused; each is also an entry (or, for a Service the link let go,
    /// in the condition). The other Services were still handled.
    pub failures: Vec<Error>,
}

/// This link's conversion settings.
pub fn settings(link: &AppServiceLink) -> LinkSettings {
    LinkSettings {
        link: link.name_any(),
        subnet: link.spec.services.subnet.clone(),
        allow_public: link.spec.services.allow_public_load_balancer_conversion,
    }
}

/// The live, valid link (other than `except`) that holds `svc` per its annotation and still selects it.
fn live_holder(ctx: &Context, links: &Links, svc: &Service, except: &str) -> Option<LinkSettings> {
    let holder = holder(svc).filter(|h| *h != except)?;
    links
        .selecting(ctx, svc)
        .find(|l| l.name_any() == holder)
        .map(settings)
}

/// Converts every Service the link selects, and lets go of those it no longer selects. A Service the
/// apiserver refuses is reported in its entry; it never stops the others.
pub async fn reconcile(ctx: &Context, link: &AppServiceLink) -> ServicesOutcome {
    let want = settings(link);
    let zone = &link.spec.dns.zone;
    let previous_entries = current_status(link)
        .map(|s| s.services.clone())
        .unwrap_or_default();
    let selection = Selection::of(link);
    let name = link.name_any();
    // The Services it selects, and those it holds (to let go of the ones it no longer selects).
    let all = ctx.services_where(|s| {
        selection.matches(ctx, s) || s.annotation_value(ANNOTATION_LINK) == Some(name.as_str())
    });
    let links = Links::valid(ctx);
    let mut selected: Vec<&Arc<Service>> = all
        .iter()
        .filter(|s| selection.matches(ctx, &***s))
        .collect();
    selected.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });
    let mut entries = Vec::new();
    let mut failures = Vec::new();
    let mut changes = Changes::default();
    // Entries still waiting for their load balancer, with the Service, by namespace.
    let mut waiting: BTreeMap<String, Vec<(usize, Service)>> = BTreeMap::new();
    let now = Timestamp::now();
    let steps: Vec<_> = selected
        .into_iter()
        .map(|svc| {
            let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
            let (reverts, last_revert_time) = previous_entries
                .iter()
                .find(|e| e.namespace == namespace && e.name == name)
                .map_or((0, None), |e| decayed(e, ctx.config.revert_window, now));
            let entry = LinkedServiceStatus {
                fqdn: format!("{name}.{namespace}.{zone}"),
                namespace,
                name,
                reverts,
                last_revert_time,
                ..Default::default()
            };
            let holder = live_holder(ctx, &links, svc, &want.link);
            let plan = plan(svc, &want, holder.as_ref());
            settle(ctx, link, svc, plan, entry)
        })
        .collect();
    // The writes go out a bounded number at a time; the entries keep the Services' order.
    let mut settled = futures::stream::iter(steps).buffered(PARALLEL_WRITES);
    while let Some(step) = settled.next().await {
        let Settled {
            mut entry,
            observed,
            failure,
            converted,
        } = step;
        if converted {
            changes
                .converted
                .push((format!("{}/{}", entry.namespace, entry.name), String::new()));
        }
        if let Some(err) = failure {
            failures.push(err);
        }
        // Settled without an observed Service: the entry is final, or the Service was deleted
        // mid-way and simply drops out.
        let observed = match observed {
            Observed::Final => {
                entries.push(entry);
                continue;
            }
            Observed::Gone => continue,
            Observed::Service(observed) => observed,
        };
        entry.internal_ip = is_internal_load_balancer(&observed)
            .then(|| load_balancer::load_balancer_ip(&observed))
            .flatten();
        entry.state = if entry.internal_ip.is_some() {
            LinkedServiceState::Linked
        } else {
            waiting
                .entry(entry.namespace.clone())
                .or_default()
                .push((entries.len(), (*observed).clone()));
            LinkedServiceState::Pending
        };
        if entry.message.is_none()
            && PreviousState::trusted_on(&observed).is_some_and(|p| p.is_public_load_balancer())
        {
            entry.message = Some(PUBLIC_IP_RELEASED.into());
        }
        entries.push(entry);
    }
    for (namespace, services) in &waiting {
        let pending: Vec<&Service> = services.iter().map(|(_, svc)| svc).collect();
        let why =
            load_balancer::provisioning_failures(&ctx.client, namespace, &pending, FIELD_MANAGER)
                .await;
        for (i, svc) in services {
            if let Some(message) = svc.metadata.uid.as_ref().and_then(|uid| why.get(uid)) {
                entries[*i].message = Some(format!("{CANNOT_PROVISION}{message}"));
            }
        }
    }
    let mut release_failures = Vec::new();
    for svc in all.iter().filter(|s| lets_go(ctx, link, &selection, s)) {
        if let Err(err) = release(ctx, link, &links, svc, &mut changes).await {
            release_failures.push(err);
        }
    }
    changes.announce(ctx, link).await;
    let mut duty = duty_status(&entries);
    if let Some(err) = release_failures
        .first()
        .filter(|_| duty.ready || duty.progressing)
    {
        // A Service the link no longer selects has no entry: its failed restore is the condition.
        duty = DutyStatus::blocked(
            types::SERVICES,
            err.reason(),
            format!("{err}; {}", err.advice()),
        );
    }
    failures.extend(release_failures);
    ServicesOutcome {
        duty,
        entries,
        failures,
    }
}

/// How many Service writes one link has in flight at once.
pub const PARALLEL_WRITES: usize = 16;

/// One selected Service, settled: its entry, and what it looks like now.
struct Settled {
    entry: LinkedServiceStatus,
    observed: Observed,
    /// The write the apiserver refused, also in the entry.
    failure: Option<Error>,
    /// Converted (or taken over) by this reconcile.
    converted: bool,
}

/// What a selected Service looks like after its plan was carried out.
enum Observed {
    /// As the entry already says: refused, skipped, in conflict.
    Final,
    /// Deleted meanwhile.
    Gone,
    /// This, whose load balancer IP the entry reports.
    Service(Arc<Service>),
}

/// Carries out `plan` for one selected Service.
async fn settle(
    ctx: &Context,
    link: &AppServiceLink,
    svc: &Arc<Service>,
    plan: ServicePlan,
    mut entry: LinkedServiceStatus,
) -> Settled {
    let (namespace, name) = (entry.namespace.clone(), entry.name.clone());
    let mut converted = false;
    let applied =
        |result: Result<Option<Service>, Error>, entry: &mut LinkedServiceStatus| match result {
            Ok(Some(applied)) => Ok(Observed::Service(Arc::new(applied))),
            Ok(None) => Ok(Observed::Gone),
            Err(err) => {
                failed(entry, &err);
                Err(err)
            }
        };
    let observed = match plan {
        ServicePlan::Converged => Ok(Observed::Service(svc.clone())),
        ServicePlan::Apply(body) => {
            let result = applied(apply(ctx, svc, &body).await, &mut entry);
            if matches!(result, Ok(Observed::Service(_))) {
                crate::runtime::crash_points::reached("service-after-apply");
                converted = true;
            }
            result
        }
        ServicePlan::Reverted {
            managers,
            apply: body,
        } => {
            let managers = managers.join(", ");
            let reverts = entry.reverts;
            if reverts >= MAX_REVERTS {
                entry.state = LinkedServiceState::Conflict;
                entry.message = Some(format!(
                    "field manager(s) {managers} keep reverting the conversion; stopped re-applying after {MAX_REVERTS} attempts. Stop managing spec.type and the load-balancer annotations of this Service in that tool (for Argo CD: ignoreDifferences with RespectIgnoreDifferences=true), then edit the link to retry (or wait: a revert {}s after the last one is re-applied again)", ctx.config.revert_window.as_secs()
                ));
                Ok(Observed::Final)
            } else {
                entry.reverts = reverts + 1;
                entry.last_revert_time = Some(Time(Timestamp::now()));
                ctx.event(link, EventType::Warning, "ServiceReverted", format!("field manager(s) {managers} reverted Service {namespace}/{name}; re-applying ({} of {MAX_REVERTS})", reverts + 1)).await;
                applied(apply(ctx, svc, &body).await, &mut entry)
            }
        }
        ServicePlan::Skip(reason) => {
            entry.state = LinkedServiceState::Skipped;
            entry.message = Some(reason.message().into());
            Ok(Observed::Final)
        }
        ServicePlan::SharedWith(holder) => {
            entry.message = Some(format!(
                "shared with AppServiceLink {holder}, which converted it"
            ));
            Ok(Observed::Service(svc.clone()))
        }
        ServicePlan::Conflict { holder } => {
            entry.state = LinkedServiceState::Conflict;
            entry.message = Some(format!(
                "AppServiceLink {holder} already holds this Service with a different subnet; it keeps it until it lets go"
            ));
            Ok(Observed::Final)
        }
    };
    let (observed, failure) = match observed {
        Ok(observed) => (observed, None),
        Err(err) => (Observed::Final, Some(err)),
    };
    Settled {
        entry,
        observed,
        failure,
        converted,
    }
}

/// The revert count of `entry` as it stands at `now`: reverts more than `window` after the last one
/// start a new count, so re-applies stop only for a tool that keeps fighting, not for upgrades far apart.
pub fn decayed(
    entry: &LinkedServiceStatus,
    window: std::time::Duration,
    now: Timestamp,
) -> (i32, Option<Time>) {
    crate::status::decayed_reverts(entry.reverts, entry.last_revert_time.as_ref(), window, now)
}

/// Marks `entry` as refused by the apiserver, with what it answered and what to do.
fn failed(entry: &mut LinkedServiceStatus, err: &Error) {
    entry.state = LinkedServiceState::Failed;
    entry.internal_ip = None;
    entry.message = Some(format!("{err}; {}", err.advice()));
}

/// True when the link holds `svc` but must let it go: it no longer selects it, or it is in
/// `kube-system` (converted before the operator refused Services there).
fn lets_go(ctx: &Context, link: &AppServiceLink, selection: &Selection, svc: &Service) -> bool {
    holder(svc) == Some(link.name_any().as_str())
        && (!selection.matches(ctx, svc) || in_system_namespace(svc))
}

/// Lets go of every Service the link holds (the link is being deleted). One refused restore does not
/// stop the others; the first is returned, so the link keeps its finalizer and retries.
pub async fn cleanup(ctx: &Context, link: &AppServiceLink) -> Result<(), Error> {
    let name = link.name_any();
    let mut first = None;
    let mut changes = Changes::default();
    let links = Links::valid(ctx);
    for svc in ctx
        .services_where(|s| s.annotation_value(ANNOTATION_LINK) == Some(name.as_str()))
        .iter()
        .filter(|s| holder(s) == Some(name.as_str()))
    {
        if let Err(err) = release(ctx, link, &links, svc, &mut changes).await {
            first.get_or_insert(err);
        }
    }
    changes.announce(ctx, link).await;
    first.map_or(Ok(()), Err)
}

/// Hands `svc` over to another live link that selects it, or restores it.
async fn release(
    ctx: &Context,
    link: &AppServiceLink,
    links: &Links,
    svc: &Service,
    changes: &mut Changes,
) -> Result<(), Error> {
    let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
    let previous = PreviousState::trusted_on(svc).unwrap_or_else(|| PreviousState::of(svc));
    // A Service in kube-system goes back as it was, never over to another link; one that was a
    // public load balancer goes over only to a link that opted in to converting those.
    let next = links.selecting(ctx, svc).find(|l| {
        l.name_any() != link.name_any()
            && !in_system_namespace(svc)
            && (!previous.is_public_load_balancer()
                || l.spec.services.allow_public_load_balancer_conversion)
    });
    if let Some(next) = next {
        if apply(ctx, svc, &apply_body(svc, &settings(next), &previous))
            .await?
            .is_some()
        {
            changes.handed_over.push((
                format!("{namespace}/{name}"),
                format!(" to AppServiceLink {}", next.name_any()),
            ));
        }
        return Ok(());
    }
    let Some(patch) = restore_patch(svc) else {
        // Nothing to put back: the link lets go of the Service as it is (its own annotation goes),
        // so that the next reconcile neither tries again nor repeats the Event.
        let let_go = json!({"metadata": {"annotations": {ANNOTATION_LINK: null}}});
        if !merge_patch(ctx, svc, &let_go, "letting go of").await? {
            return Ok(());
        }
        if PreviousState::recorded_on(svc).is_some() {
            ctx.event(link, EventType::Warning, "RestoreRefused", format!(
                "Service {namespace}/{name}: annotation {ANNOTATION_PREVIOUS} would make it a public load balancer, but the operator did not write that record (someone changed it); left as it is, and no longer held by this link. If it really was public, set its type and annotations by hand"
            )).await;
        } else {
            ctx.event(link, EventType::Warning, "RestoreImpossible", format!(
                "Service {namespace}/{name}: annotation {ANNOTATION_PREVIOUS} is missing or unreadable, so its previous state is unknown; left as it is, and no longer held by this link"
            )).await;
        }
        return Ok(());
    };
    if merge_patch(ctx, svc, &patch, "restoring").await? {
        changes.restored.push((
            format!("{namespace}/{name}"),
            format!(
                " to type {}",
                patch["spec"]["type"].as_str().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// Merge-patches `svc` as the operator's field manager. `false` when it was deleted meanwhile;
/// `doing` names the write in the error ("restoring", "letting go of").
async fn merge_patch(
    ctx: &Context,
    svc: &Service,
    patch: &Value,
    doing: &str,
) -> Result<bool, Error> {
    let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
    let api = Api::<Service>::namespaced(ctx.client.clone(), &namespace);
    match api
        .patch(
            &name,
            &ctx.update_params(FIELD_MANAGER),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(written) => {
            ctx.own.services.record(written);
            Ok(true)
        }
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) => Err(Error::Restore(KubeError::new(
            format!("{doing} Service {namespace}/{name}"),
            err,
        ))),
    }
}

/// The Services one reconcile changed, announced in one Event per kind of change rather than one
/// per Service: a thousand conversions make three Events, not a thousand.
#[derive(Default)]
struct Changes {
    converted: Vec<Changed>,
    restored: Vec<Changed>,
    handed_over: Vec<Changed>,
}

/// One Service an Event names: `namespace/name`, and what to add after the verb.
type Changed = (String, String);

/// How many Services an Event names before it only counts the rest.
const NAMED_IN_EVENT: usize = 10;

fn listed(items: &[Changed]) -> String {
    let named = items[..items.len().min(NAMED_IN_EVENT)]
        .iter()
        .map(|(service, detail)| format!("{service}{detail}"))
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(NAMED_IN_EVENT) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

impl Changes {
    /// Records the Events for what changed, and forgets it.
    async fn announce(&mut self, ctx: &Context, link: &AppServiceLink) {
        let notes = [
            (
                "ServiceConverted",
                note(
                    &self.converted,
                    "is now an internal load balancer",
                    "are now internal load balancers",
                ),
            ),
            (
                "ServiceRestored",
                note(&self.restored, "restored", "restored"),
            ),
            (
                "ServiceHandedOver",
                note(&self.handed_over, "handed over", "handed over"),
            ),
        ];
        for (reason, note) in notes {
            if let Some(note) = note {
                ctx.event(link, EventType::Normal, reason, note).await;
            }
        }
        *self = Self::default();
    }
}

/// "Service a is ..." for one, "3 Services are ...: a, b, c" for more, `None` for none.
fn note(items: &[Changed], one: &str, many: &str) -> Option<String> {
    match items {
        [] => None,
        [(service, detail)] => Some(format!("Service {service} {one}{detail}")),
        _ => Some(format!(
            "{} Services {many}: {}",
            items.len(),
            listed(items)
        )),
    }
}

/// Server-side applies `body` to `svc`. `None` when the Service was deleted meanwhile: the body
/// carries the Service's uid as a precondition, so apply never re-creates a deleted Service.
async fn apply(ctx: &Context, svc: &Service, body: &Value) -> Result<Option<Service>, Error> {
    let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
    let mut body = body.clone();
    body["metadata"]["uid"] = json!(svc.metadata.uid);
    let api = Api::<Service>::namespaced(ctx.client.clone(), &namespace);
    match api
        .patch(
            &name,
            &ctx.apply_params(FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(applied) => {
            ctx.own.services.record(applied.clone());
            Ok(Some(applied))
        }
        Err(err) if is_not_found(&err) || is_conflict(&err) && !exists(&api, &name).await => {
            Ok(None)
        }
        Err(err) => Err(Error::Convert(KubeError::new(
            format!("converting Service {namespace}/{name}"),
            err,
        ))),
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

async fn exists(api: &Api<Service>, name: &str) -> bool {
    !matches!(api.get_opt(name).await, Ok(None))
}

fn duty_status(entries: &[LinkedServiceStatus]) -> DutyStatus {
    let count = |state| entries.iter().filter(|e| e.state == state).count();
    let (linked, pending, skipped, conflicts, failed) = (
        count(LinkedServiceState::Linked),
        count(LinkedServiceState::Pending),
        count(LinkedServiceState::Skipped),
        count(LinkedServiceState::Conflict),
        count(LinkedServiceState::Failed),
    );
    let summary = format!("{linked} linked, {pending} pending, {skipped} skipped, {conflicts} in conflict, {failed} refused by the apiserver (see status.services)");
    if let Some(first) = entries
        .iter()
        .find(|e| e.state == LinkedServiceState::Failed)
    {
        DutyStatus::blocked(
            types::SERVICES,
            "ServiceConversionFailed",
            format!(
                "{summary}; {}/{}: {}",
                first.namespace,
                first.name,
                first.message.as_deref().unwrap_or_default()
            ),
        )
    } else if conflicts > 0 {
        // Name the first conflict (another link, or the field manager that keeps reverting us).
        let first = entries
            .iter()
            .find(|e| e.state == LinkedServiceState::Conflict);
        let detail = first.map(|e| {
            format!(
                "; {}/{}: {}",
                e.namespace,
                e.name,
                e.message.as_deref().unwrap_or_default()
            )
        });
        DutyStatus::blocked(
            types::SERVICES,
            "ServiceConflict",
            summary + &detail.unwrap_or_default(),
        )
    } else if let Some(first) = entries.iter().find(|e| {
        e.state == LinkedServiceState::Pending
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with(CANNOT_PROVISION))
    }) {
        DutyStatus::blocked(
            types::SERVICES,
            "LoadBalancerProvisioningFailed",
            format!(
                "{summary}; {}/{}: {}",
                first.namespace,
                first.name,
                first.message.as_deref().unwrap_or_default()
            ),
        )
    } else if pending > 0 {
        DutyStatus::waiting(types::SERVICES, "WaitingForLoadBalancerIP", summary)
    } else if entries.is_empty() {
        DutyStatus::ready(
            types::SERVICES,
            "NoServicesSelected",
            "no Service matches spec.services.selector",
        )
    } else {
        DutyStatus::ready(types::SERVICES, "ServicesLinked", summary)
    }
}

#[cfg(test)]
mod tests;
