//! Duty 2: CoreDNS exposed on an internal Azure load balancer, as a Service in `kube-system`.
//!
//! Links that name the same Service share it. The oldest such link decides its settings; a link that
//! wants other settings reports a conflict instead of fighting over it. The Service is deleted once no
//! link names it.

use k8s_openapi::api::core::v1::Service;
use kube::api::Patch;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};

use crate::context::Context;
use crate::crd::{AppServiceLink, AppServiceStatus, DeletionPolicy};
use crate::duties::load_balancer::{
    self, is_ours, load_balancer_ip, ANNOTATION_INTERNAL, ANNOTATION_IPV4, ANNOTATION_SUBNET,
    MANAGED_BY, MANAGED_BY_LABEL,
};
use crate::error::{is_not_found, KubeError};
use crate::status::{types, DutyStatus};

/// Namespace of the DNS Service in cluster mode: where the cluster's CoreDNS runs. In dedicated
/// mode it is the dedicated CoreDNS's ([`Context::dns_namespace`]).
pub const NAMESPACE: &str = "kube-system";
/// Field manager for the DNS Service.
pub const FIELD_MANAGER: &str = "appservicelink-dns-service";
/// Why the duty stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DNS Service could not be created or updated.
    #[error(transparent)]
    Apply(KubeError),
    /// A DNS Service no link names any more could not be deleted.
    #[error(transparent)]
    Delete(KubeError),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Apply(e) | Self::Delete(e) => e.category(),
        }
    }

    /// The reason of the `DnsServiceReady` condition it leads to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Apply(_) => "DnsServiceApplyFailed",
            Self::Delete(_) => "DnsServiceDeleteFailed",
        }
    }
}

/// The label CoreDNS pods carry on AKS (the same selector as `kube-dns`).
const COREDNS_SELECTOR: (&str, &str) = ("k8s-app", "kube-dns");

/// The pods the DNS Service selects: the cluster's CoreDNS, or the dedicated one.
fn selector(settings: &DnsServiceSettings) -> (&'static str, &'static str) {
    if settings.dedicated {
        super::dedicated_dns::POD_LABEL
    } else {
        COREDNS_SELECTOR
    }
}

/// What a link wants of its DNS Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServiceSettings {
    /// Name of the Service.
    pub name: String,
    /// Its namespace, where the CoreDNS it fronts runs.
    pub namespace: String,
    /// Whether it fronts the dedicated CoreDNS rather than the cluster's.
    pub dedicated: bool,
    /// Static frontend IP, when set.
    pub static_ip: Option<String>,
    /// Subnet name, when set.
    pub subnet: Option<String>,
    /// Whether an address Azure assigned is pinned (`spec.dns.service.pinAddress`).
    pub pin: bool,
}

/// The address the load balancer must have: the spec's static IP, else the pinned one.
fn wanted_ip<'a>(settings: &'a DnsServiceSettings, pinned: Option<&'a str>) -> Option<&'a str> {
    settings
        .static_ip
        .as_deref()
        .or(pinned.filter(|_| settings.pin))
}

/// The server-side apply body for the DNS Service, with `pinned` as its address unless the spec
/// sets a static IP.
pub fn desired(settings: &DnsServiceSettings, pinned: Option<&str>) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_INTERNAL.into(), json!("true"));
    if let Some(subnet) = &settings.subnet {
        annotations.insert(ANNOTATION_SUBNET.into(), json!(subnet));
    }
    if let Some(ip) = wanted_ip(settings, pinned) {
        annotations.insert(ANNOTATION_IPV4.into(), json!(ip));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": settings.name,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": annotations,
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {selector(settings).0: selector(settings).1},
            // One load balancer carries both protocols (MixedProtocolLBService, GA since 1.26).
            "ports": [
                {"name": "dns-udp", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// True when the observed Service already has everything [`desired`] asks for.
pub fn is_converged(svc: &Service, settings: &DnsServiceSettings, pinned: Option<&str>) -> bool {
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let annotation_is =
        |key: &str, want: Option<&str>| annotations.get(key).map(String::as_str) == want;
    let Some(spec) = &svc.spec else { return false };
    let selector_ok = spec.selector.as_ref().is_some_and(|s| {
        let (key, value) = selector(settings);
        s.len() == 1 && s.get(key).map(String::as_str) == Some(value)
    });
    let mut ports: Vec<(i32, String, Option<String>)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.name.clone(),
            )
        })
        .collect();
    ports.sort();
    is_ours(svc)
        && svc.metadata.namespace.as_deref() == Some(settings.namespace.as_str())
        && spec.type_.as_deref() == Some("LoadBalancer")
        && selector_ok
        && ports
            == vec![
                (53, "TCP".to_string(), Some("dns-tcp".to_string())),
                (53, "UDP".to_string(), Some("dns-udp".to_string())),
            ]
        && spec.ports.iter().flatten().all(|p| {
            p.target_port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(53))
        })
        && annotation_is(ANNOTATION_INTERNAL, Some("true"))
        && annotation_is(ANNOTATION_SUBNET, settings.subnet.as_deref())
        && annotation_is(ANNOTATION_IPV4, wanted_ip(settings, pinned))
}

/// The DNS server IP the Service offers: its load balancer IP, once assigned, and only if it is the
/// static or pinned IP the link asked for (Azure may take a moment to move the frontend).
pub fn dns_server_ip(
    svc: &Service,
    settings: &DnsServiceSettings,
    pinned: Option<&str>,
) -> Option<String> {
    let ip = load_balancer_ip(svc)?;
    match wanted_ip(settings, pinned) {
        Some(wanted) if wanted != ip => None,
        _ => Some(ip),
    }
}

/// A link's claim on a DNS Service: its name, when it was created, and what it wants.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Name of the link.
    pub link: String,
    /// Creation time of the link, as RFC 3339 (sorts chronologically).
    pub created: String,
    /// What it wants.
    pub settings: DnsServiceSettings,
    /// The address it pinned for that Service, if it did.
    pub pinned: Option<String>,
}

/// Which claim decides the Service's settings, so the first link keeps the Service: a link whose
/// settings the existing Service already has, else the oldest link naming it (then by name).
pub fn deciding_claim<'a>(
    claims: &'a [Claim],
    name: &str,
    current: Option<&Service>,
) -> Option<&'a Claim> {
    let in_place =
        |c: &Claim| current.is_some_and(|svc| is_converged(svc, &c.settings, c.pinned.as_deref()));
    claims
        .iter()
        .filter(|c| c.settings.name == name)
        .min_by_key(|c| (!in_place(c), &c.created, &c.link))
}

/// The address to pin on the Service the deciding claim decides: the one it recorded, else the one
/// Azure assigned to our Service. None when its spec sets a static IP or opts out of pinning.
pub fn pin(decider: &Claim, observed: Option<&Service>) -> Option<String> {
    if decider.settings.static_ip.is_some() || !decider.settings.pin {
        return None;
    }
    decider
        .pinned
        .clone()
        .or_else(|| observed.filter(|s| is_ours(*s)).and_then(load_balancer_ip))
}

/// Records, on the link, the address pinned for its DNS Service: it outlives the Service (and the
/// link's status), so that a re-created Service asks Azure for the same address.
pub const ANNOTATION_PINNED_IP: &str = "appservicelink.io/pinned-dns-ip";
/// Field manager for the pin record.
const PIN_FIELD_MANAGER: &str = "appservicelink-dns-pin";

/// The address `link` pinned for the DNS Service `namespace/name`: the record is
/// `<namespace>/<name>=<ip>`, so a record for a Service the link no longer names (renamed, or moved by
/// a change of DNS mode) pins nothing.
pub fn pinned_on(link: &AppServiceLink, namespace: &str, name: &str) -> Option<String> {
    let (service, ip) = link
        .annotations()
        .get(ANNOTATION_PINNED_IP)?
        .split_once('=')?;
    (service == format!("{namespace}/{name}") && ip.parse::<std::net::Ipv4Addr>().is_ok())
        .then(|| ip.to_string())
}

// ---------------------------------------------------------------------------------------------
// Applying: the only part of this duty that talks to the apiserver.
// ---------------------------------------------------------------------------------------------

/// Result of the DNS Service duty for one link.
pub struct DnsOutcome {
    /// The `DnsServiceReady` condition.
    pub duty: DutyStatus,
    /// The DNS server IP the link's App Services should use, once there is one.
    pub server_ip: Option<String>,
}

/// The DNS Service settings a link asks for.
pub fn settings(ctx: &Context, link: &AppServiceLink) -> DnsServiceSettings {
    DnsServiceSettings {
        name: link.spec.dns.service.name.clone(),
        namespace: ctx.dns_namespace().to_string(),
        dedicated: ctx.config.dedicated_dns.is_some(),
        static_ip: link.spec.dns.service.static_ip.clone(),
        subnet: link
            .spec
            .dns
            .service
            .subnet
            .clone()
            .or_else(|| link.spec.services.subnet.clone()),
        pin: link.spec.dns.service.pin_address,
    }
}

fn claims(ctx: &Context) -> Vec<Claim> {
    ctx.valid_links()
        .iter()
        .map(|l| Claim {
            link: l.name_any(),
            created: l
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            settings: settings(ctx, l),
            pinned: pinned_on(l, ctx.dns_namespace(), &l.spec.dns.service.name),
        })
        .collect()
}

fn api(ctx: &Context) -> Api<Service> {
    Api::namespaced(ctx.client.clone(), ctx.dns_namespace())
}

/// Makes sure the link's DNS Service exists as the deciding link wants it, and reads its IP.
pub async fn reconcile(ctx: &Context, link: &AppServiceLink) -> Result<DnsOutcome, Error> {
    let ns = ctx.dns_namespace();
    let mine = settings(ctx, link);
    let name = &mine.name;
    let claims = claims(ctx);
    let observed = ctx.service(ctx.dns_namespace(), name);
    // The link is not among the valid live links any more: it was edited or deleted after this
    // reconcile started. Its next reconcile sees the new state.
    let Some(decider) = deciding_claim(&claims, name, observed.as_deref()) else {
        return Ok(DnsOutcome {
            duty: DutyStatus::waiting(
                types::DNS_SERVICE,
                "LinkChanged",
                "the link changed or is being deleted; the next reconcile decides",
            ),
            server_ip: None,
        });
    };
    if decider.settings != mine {
        let message = format!(
            "AppServiceLink {} already configures Service {ns}/{name} with {}; use the same settings or another spec.dns.service.name",
            decider.link,
            describe(&decider.settings, decider.pinned.as_deref())
        );
        return Ok(DnsOutcome {
            duty: DutyStatus::blocked(types::DNS_SERVICE, "DnsServiceConflict", message),
            server_ip: None,
        });
    }
    if let Some(svc) = observed.as_deref().filter(|s| !is_ours(*s)) {
        let message = format!(
            "Service {ns}/{} exists and was not created by AppServiceLink (no label {MANAGED_BY_LABEL}={MANAGED_BY}); choose another spec.dns.service.name",
            svc.name_any()
        );
        return Ok(DnsOutcome {
            duty: DutyStatus::blocked(types::DNS_SERVICE, "DnsServiceNameTaken", message),
            server_ip: None,
        });
    }
    let pinned = pin(decider, observed.as_deref());
    if decider.link == link.name_any() && pinned != pinned_on(link, ns, name) {
        // Record first: the record is what keeps the address once the Service is gone.
        record_pin(ctx, link, name, pinned.as_deref()).await?;
    }
    let pinned = pinned.as_deref();
    let current = match observed {
        Some(svc) if is_converged(&svc, &mine, pinned) => (*svc).clone(),
        _ => {
            let applied = api(ctx)
                .patch(
                    name,
                    &ctx.apply_params(FIELD_MANAGER),
                    &Patch::Apply(&desired(&mine, pinned)),
                )
                .await
                .map_err(|e| {
                    Error::Apply(KubeError::new(
                        format!("applying DNS Service {ns}/{name}"),
                        e,
                    ))
                })?;
            ctx.own.services.record(applied.clone());
            ctx.event(
                link,
                EventType::Normal,
                "DnsServiceApplied",
                format!(
                    "DNS Service {ns}/{name} applied ({})",
                    describe(&mine, pinned)
                ),
            )
            .await;
            applied
        }
    };
    if is_retained(&current) {
        adopt(ctx, link, name).await?;
    }
    Ok(match dns_server_ip(&current, &mine, pinned) {
        Some(ip) => DnsOutcome {
            duty: DutyStatus::ready(
                types::DNS_SERVICE,
                "LoadBalancerReady",
                match (&mine.static_ip, pinned) {
                    (None, Some(_)) => format!("Service {ns}/{name} serves DNS on {ip}, pinned: a re-created Service keeps it"),
                    _ => format!("Service {ns}/{name} serves DNS on {ip}"),
                },
            ),
            server_ip: Some(ip),
        },
        None => {
            let unpin = if mine.static_ip.is_none() && pinned.is_some() {
                format!("; to let Azure choose another address, set spec.dns.service.pinAddress to false or remove the annotation {ANNOTATION_PINNED_IP} from the link")
            } else {
                String::new()
            };
            let why = load_balancer::provisioning_failures(
                &ctx.client,
                ns,
                &[&current],
                FIELD_MANAGER,
            )
            .await;
            let failure = current.metadata.uid.as_ref().and_then(|uid| why.get(uid));
            let duty = match (failure, wanted_ip(&mine, pinned)) {
                (Some(message), _) => DutyStatus::blocked(
                    types::DNS_SERVICE,
                    "LoadBalancerProvisioningFailed",
                    format!("the cloud controller cannot provision the load balancer of Service {ns}/{name}: {message}{unpin}"),
                ),
                (None, Some(ip)) => DutyStatus::waiting(
                    types::DNS_SERVICE,
                    "WaitingForLoadBalancerIP",
                    format!("waiting for load balancer IP {ip} of Service {ns}/{name}{unpin}"),
                ),
                (None, None) => DutyStatus::waiting(
                    types::DNS_SERVICE,
                    "WaitingForLoadBalancerIP",
                    format!("waiting for load balancer IP of Service {ns}/{name}"),
                ),
            };
            DnsOutcome {
                duty,
            server_ip: None,
            }
        }
    })
}

/// The DNS server IP the link's DNS Service offers now, from the cache: what its App Services
/// can use even when this reconcile could not write the DNS Service.
pub fn observed_ip(ctx: &Context, link: &AppServiceLink) -> Option<String> {
    let mine = settings(ctx, link);
    let svc = ctx
        .service(ctx.dns_namespace(), &mine.name)
        .filter(|s| is_ours(&**s))?;
    let pinned = pinned_on(link, &mine.namespace, &mine.name);
    dns_server_ip(&svc, &mine, pinned.as_deref())
}

/// Sets (or, with `None`, clears) the link's record of the address pinned for its DNS Service.
async fn record_pin(
    ctx: &Context,
    link: &AppServiceLink,
    name: &str,
    ip: Option<&str>,
) -> Result<(), Error> {
    let ns = ctx.dns_namespace();
    if ctx.config.dry_run {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {ANNOTATION_PINNED_IP: ip.map(|ip| format!("{ns}/{name}={ip}"))}}});
    Api::<AppServiceLink>::all(ctx.client.clone())
        .patch(
            &link.name_any(),
            &ctx.update_params(PIN_FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map(|written| ctx.own.links.record(written))
        .map_err(|e| {
            Error::Apply(KubeError::new(
                format!(
                    "recording the address of DNS Service {ns}/{name} on AppServiceLink {}",
                    link.name_any()
                ),
                e,
            ))
        })?;
    if let Some(ip) = ip {
        ctx.event(
            link,
            EventType::Normal,
            "DnsServiceAddressPinned",
            format!("DNS Service {ns}/{name} keeps {ip}: a re-created Service asks Azure for it (spec.dns.service.pinAddress)"),
        )
        .await;
    }
    Ok(())
}

/// Marks a DNS Service kept for App Services a deleted link left pointing at it
/// (`deletionPolicy: Retain`): the operator never deletes it.
pub const ANNOTATION_RETAINED: &str = "appservicelink.io/retained-for";
/// Field manager for the retained mark.
const RETAIN_FIELD_MANAGER: &str = "appservicelink-dns-retain";

fn is_retained(svc: &Service) -> bool {
    svc.annotations().contains_key(ANNOTATION_RETAINED)
}

/// Sets (to the retaining link's name) or clears the retained mark on a DNS Service.
async fn mark_retained(ctx: &Context, name: &str, by: Option<&str>) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {ANNOTATION_RETAINED: by}}});
    api(ctx)
        .patch(
            name,
            &ctx.update_params(RETAIN_FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map(|written| ctx.own.services.record(written))
}

/// A link names a retained DNS Service again: it is managed, and deleted when unused, as before.
async fn adopt(ctx: &Context, link: &AppServiceLink, name: &str) -> Result<(), Error> {
    let ns = ctx.dns_namespace();
    mark_retained(ctx, name, None).await.map_err(|e| {
        Error::Apply(KubeError::new(
            format!("adopting retained DNS Service {ns}/{name}"),
            e,
        ))
    })?;
    ctx.event(
        link,
        EventType::Normal,
        "DnsServiceAdopted",
        format!("DNS Service {ns}/{name} was retained by a deleted link; managed again"),
    )
    .await;
    Ok(())
}

/// Which of our DNS Services may go: those no live link names, that are not retained, and whose IP
/// no App Service of any link, live or being deleted, is still set to. (A link being deleted clears
/// its App Service entries once it restored them; until then they keep its DNS Service.) For
/// `current`, the link being reconciled, what its App Services use is `current_uses` (what its App
/// Service duty just found) rather than its stored status; `None` when it is being deleted and its
/// App Services were restored, so it neither names nor uses anything any more.
pub fn deletable<'a>(
    ours: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    links: &[std::sync::Arc<AppServiceLink>],
    current: &str,
    current_uses: Option<&[AppServiceStatus]>,
) -> Vec<String> {
    let mut named: Vec<&str> = Vec::new();
    let mut in_use: Vec<&str> = Vec::new();
    for link in links {
        let uses: &[AppServiceStatus] = if link.name_any() == current {
            match current_uses {
                None => continue,
                Some(uses) => uses,
            }
        } else {
            link.status
                .as_ref()
                .map_or(&[][..], |s| s.app_services.as_slice())
        };
        if link.metadata.deletion_timestamp.is_none() {
            named.push(link.spec.dns.service.name.as_str());
        }
        in_use.extend(
            uses.iter()
                .filter_map(|e| e.dns_server.as_deref())
                .flat_map(|servers| servers.split(',')),
        );
    }
    ours.into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace) && is_ours(*s))
        .filter(|s| !is_retained(s) && !named.contains(&s.name_any().as_str()))
        .filter(|s| load_balancer_ip(s).is_none_or(|ip| !in_use.contains(&ip.as_str())))
        .map(|s| s.name_any())
        .collect()
}

/// Deletes our DNS Services that nothing uses any more (after a rename, or a deletion). Runs after
/// the App Service duty, so that a DNS Service goes only once the App Services moved off it.
pub async fn collect_unused(
    ctx: &Context,
    link: &AppServiceLink,
    uses: Option<&[AppServiceStatus]>,
) -> Result<(), Error> {
    let ns = ctx.dns_namespace();
    let links: Vec<_> = ctx.own.links.state(&ctx.links);
    let services = ctx.services_where(|s| {
        s.namespace_name() == ns && s.label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
    });
    let unused = deletable(
        services.iter().map(|s| &**s),
        ns,
        &links,
        &link.name_any(),
        uses,
    );
    for name in unused {
        match api(ctx).delete(&name, &ctx.delete_params()).await {
            Ok(_) => {
                ctx.event(
                    link,
                    EventType::Normal,
                    "DnsServiceDeleted",
                    format!("DNS Service {ns}/{name} deleted: no link and no App Service uses it"),
                )
                .await
            }
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                return Err(Error::Delete(KubeError::new(
                    format!("deleting DNS Service {ns}/{name}"),
                    err,
                )))
            }
        }
    }
    Ok(())
}

/// The link is being deleted and its App Services were restored (or are retained): deletes its DNS
/// Service if nothing else uses it, or, with `deletionPolicy: Retain`, marks it retained so that it
/// stays for the App Services that still point at it.
pub async fn cleanup(ctx: &Context, link: &AppServiceLink) -> Result<(), Error> {
    let ns = ctx.dns_namespace();
    let name = link.spec.dns.service.name.as_str();
    let retaining = link.spec.app_services.deletion_policy == DeletionPolicy::Retain
        && link
            .status
            .as_ref()
            .is_some_and(|s| s.app_services.iter().any(|e| e.dns_server.is_some()));
    let ours = ctx
        .service(ctx.dns_namespace(), name)
        .filter(|s| is_ours(&**s));
    if ours.is_some_and(|s| retaining && !is_retained(&s)) {
        mark_retained(ctx, name, Some(&link.name_any()))
            .await
            .map_err(|e| {
                Error::Delete(KubeError::new(
                    format!("marking DNS Service {ns}/{name} retained"),
                    e,
                ))
            })?;
        ctx.event(
            link,
            EventType::Normal,
            "DnsServiceRetained",
            format!("DNS Service {ns}/{name} kept: deletionPolicy Retain leaves App Services pointing at it; delete it yourself once they no longer use it"),
        )
        .await;
        return Ok(());
    }
    collect_unused(ctx, link, None).await
}

fn describe(settings: &DnsServiceSettings, pinned: Option<&str>) -> String {
    let address = match (&settings.static_ip, wanted_ip(settings, pinned)) {
        (Some(ip), _) => format!("staticIP {ip}"),
        (None, Some(ip)) => format!("address {ip} (pinned)"),
        (None, None) if settings.pin => "address assigned by Azure, then pinned".to_string(),
        (None, None) => "address assigned by Azure".to_string(),
    };
    format!(
        "{address}, subnet {}",
        settings.subnet.as_deref().unwrap_or("(default)")
    )
}

#[cfg(test)]
mod tests;
