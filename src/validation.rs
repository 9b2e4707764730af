//! The controller's own check of a link's spec, mirroring the CRD's CEL rules.
//!
//! Admission normally refuses bad input, but an object can slip past it (an older CRD, a direct
//! etcd write). A zone reaches the Corefile only after passing [`validate`]: a bad Corefile takes DNS
//! down for the whole cluster. A unit test runs the CRD's CEL rules and these checks over the same
//! inputs, so the two cannot drift apart.

use crate::crd::{
    AppServiceLinkSpec, AppServiceTarget, MAX_SELECTOR_TERMS, MAX_TARGETS, PRIVATELINK_MESSAGE,
    REVERSE_ZONE_MESSAGE, SELECTOR_MESSAGE, SINGLE_LABEL_MESSAGE,
};
pub use crate::crd::{AZURE_ZONES, DEFAULT_CLUSTER_DOMAIN, REVERSE_ZONES, ZONE_MESSAGE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use psl::Psl as _;

/// A spec field that breaks a rule, with a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// JSON path of the field, e.g. `spec.dns.zone`.
    pub field: String,
    /// What is wrong and what a valid value looks like.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: &str) -> InvalidField {
    InvalidField {
        field: field.into(),
        message: message.to_string(),
    }
}

/// Every rule a link's spec breaks, in field order. Empty when the spec is valid. `cluster_domain`
/// is the cluster's DNS domain (`--cluster-domain`), which no zone may touch.
pub fn validate(spec: &AppServiceLinkSpec, cluster_domain: &str) -> Vec<InvalidField> {
    let mut errors = Vec::new();
    if selector_matches_everything(&spec.services.selector) {
        errors.push(invalid("spec.services.selector", SELECTOR_MESSAGE));
    }
    check_selector_bounds(
        &mut errors,
        "spec.services.selector",
        &spec.services.selector,
    );
    if let Some(selector) = &spec.services.namespace_selector {
        check_selector_bounds(&mut errors, "spec.services.namespaceSelector", selector);
    }
    check_subnet(
        &mut errors,
        "spec.services.subnet",
        spec.services.subnet.as_deref(),
    );
    if let Err(message) = check_zone(&spec.dns.zone, cluster_domain, spec.dns.allow_public_domain) {
        errors.push(InvalidField {
            field: "spec.dns.zone".into(),
            message,
        });
    }
    if !is_service_name(&spec.dns.service.name) {
        errors.push(invalid(
            "spec.dns.service.name",
            "must be a Service name: lower-case letters, digits and '-', starting with a letter, at most 63 characters",
        ));
    }
    if let Some(ip) = &spec.dns.service.static_ip {
        if !is_ipv4(ip) {
            errors.push(invalid(
                "spec.dns.service.staticIP",
                "must be an IPv4 address such as 10.240.0.53",
            ));
        }
    }
    check_subnet(
        &mut errors,
        "spec.dns.service.subnet",
        spec.dns.service.subnet.as_deref(),
    );
    if let Some(ip) = &spec.app_services.alternate_dns_server {
        if !is_ipv4(ip) {
            errors.push(invalid(
                "spec.appServices.alternateDnsServer",
                "must be an IPv4 address such as 168.63.129.16",
            ));
        }
    }
    if spec.app_services.targets.len() > MAX_TARGETS {
        errors.push(InvalidField {
            field: "spec.appServices.targets".into(),
            message: format!("must have at most {MAX_TARGETS} items"),
        });
    }
    for (i, target) in spec.app_services.targets.iter().enumerate() {
        check_target(
            &mut errors,
            &format!("spec.appServices.targets[{i}]"),
            target,
        );
    }
    errors
}

/// Whether `k8s_external` may serve `zone`, and if not, why.
///
/// `k8s_external` runs before `kubernetes` in CoreDNS's plugin chain (plugin.cfg) and answers
/// NXDOMAIN for every name in its zones that is not a LoadBalancer Service, so a zone that overlaps
/// names pods rely on takes those names away from every pod in the cluster. The CRD's CEL rules
/// refuse the same zones where a rule can say it (everything but the configured cluster domain and
/// the Public Suffix List).
pub fn check_zone(
    zone: &str,
    cluster_domain: &str,
    allow_public_domain: bool,
) -> Result<(), String> {
    if !is_zone(zone) {
        return Err(ZONE_MESSAGE.into());
    }
    if !zone.contains('.') {
        return Err(SINGLE_LABEL_MESSAGE.into());
    }
    if REVERSE_ZONES.iter().any(|r| in_zone(zone, r)) {
        return Err(REVERSE_ZONE_MESSAGE.into());
    }
    for domain in [DEFAULT_CLUSTER_DOMAIN, cluster_domain] {
        if in_zone(zone, domain) || in_zone(domain, zone) {
            return Err(format!(
                "{zone} is the cluster domain {domain}, or above or below it: k8s_external runs before the kubernetes plugin and would answer NXDOMAIN for the cluster's own names to every pod; choose a zone outside it, such as mydomain.local"
            ));
        }
    }
    if zone.split('.').any(|label| label == "privatelink") {
        return Err(PRIVATELINK_MESSAGE.into());
    }
    if let Some(family) = AZURE_ZONES.iter().find(|family| in_zone(zone, family)) {
        return Err(format!(
            "{zone} is in Azure's own DNS namespace {family}: CoreDNS would answer NXDOMAIN to every pod for the Azure endpoints under it; choose a zone of your own, such as mydomain.local"
        ));
    }
    // The Public Suffix List, compiled into the `psl` crate: a suffix is known when a rule of the
    // list (ICANN or private section) matched, not only the default `*` rule.
    if let Some(suffix) = psl::List.suffix(zone.as_bytes()).filter(|s| s.is_known()) {
        let suffix = String::from_utf8_lossy(suffix.as_bytes());
        if suffix == zone {
            return Err(format!(
                "{zone} is a public suffix (Public Suffix List): k8s_external would answer NXDOMAIN to every pod for every public name under it; choose a zone of your own, such as mydomain.local"
            ));
        }
        if !allow_public_domain {
            return Err(format!(
                "{zone} is in a public domain (under the public suffix {suffix}): CoreDNS would answer NXDOMAIN to every pod for the zone's public names; if your organisation owns the domain and wants that, set spec.dns.allowPublicDomain to true"
            ));
        }
    }
    Ok(())
}

/// True when `name` is `zone` or a name below it.
fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The bounds the CRD puts on a selector, so that its CEL rule has a small cost: at most
/// [`MAX_SELECTOR_TERMS`] labels, expressions, and values per expression, and Kubernetes' own label
/// lengths (317 for a key with its prefix, 63 for a value).
fn check_selector_bounds(errors: &mut Vec<InvalidField>, field: &str, selector: &LabelSelector) {
    let too_many = |errors: &mut Vec<InvalidField>, field: String, n: usize| {
        if n > MAX_SELECTOR_TERMS {
            errors.push(InvalidField {
                field,
                message: format!("must have at most {MAX_SELECTOR_TERMS} items"),
            });
        }
    };
    let too_long = |errors: &mut Vec<InvalidField>, field: String, s: &str, max: usize| {
        if s.chars().count() > max {
            errors.push(InvalidField {
                field,
                message: format!("may not be more than {max} characters"),
            });
        }
    };
    let labels = selector.match_labels.as_ref();
    too_many(
        errors,
        format!("{field}.matchLabels"),
        labels.map_or(0, |m| m.len()),
    );
    for (key, value) in labels.into_iter().flatten() {
        too_long(errors, format!("{field}.matchLabels.{key}"), value, 63);
    }
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    too_many(
        errors,
        format!("{field}.matchExpressions"),
        expressions.len(),
    );
    for (i, e) in expressions.iter().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        too_long(errors, format!("{path}.key"), &e.key, 317);
        too_long(errors, format!("{path}.operator"), &e.operator, 12);
        let values = e.values.as_deref().unwrap_or_default();
        too_many(errors, format!("{path}.values"), values.len());
        for (j, v) in values.iter().enumerate() {
            too_long(errors, format!("{path}.values[{j}]"), v, 63);
        }
    }
}

fn check_subnet(errors: &mut Vec<InvalidField>, field: &str, subnet: Option<&str>) {
    if let Some(subnet) = subnet {
        if !is_subnet(subnet) {
            errors.push(invalid(
                field,
                "must be an Azure subnet name: 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit",
            ));
        }
    }
}

fn check_target(errors: &mut Vec<InvalidField>, path: &str, target: &AppServiceTarget) {
    if !is_guid(&target.subscription_id) {
        errors.push(invalid(
            format!("{path}.subscriptionId"),
            "must be a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)",
        ));
    }
    if !is_resource_group(&target.resource_group) {
        errors.push(invalid(
            format!("{path}.resourceGroup"),
            "must be a resource group name: 1-90 letters, digits, '_', '(', ')', '-' or '.', not ending in '.'",
        ));
    }
    if !is_hyphenated_name(&target.name, 2, 60) {
        errors.push(invalid(
            format!("{path}.name"),
            "must be an App Service name: 2-60 letters, digits or '-', not starting or ending with '-'",
        ));
    }
    if let Some(slot) = &target.slot {
        if !is_hyphenated_name(slot, 1, 59) {
            errors.push(invalid(
                format!("{path}.slot"),
                "must be a slot name: 1-59 letters, digits or '-', not starting or ending with '-'",
            ));
        }
    }
}

/// True when a selector requires no label at all, so it selects every Service that lacks a few
/// labels: an empty one, or one of only `NotIn` and `DoesNotExist` expressions. Only `matchLabels`,
/// `In` and `Exists` require a label.
pub fn selector_matches_everything(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|e| !matches!(e.operator.as_str(), "In" | "Exists"))
}

/// A lower-case DNS name of RFC 1123 labels, at most 253 characters, no trailing dot.
pub fn is_zone(zone: &str) -> bool {
    zone.len() <= 253 && zone.split('.').all(is_dns_label)
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A Kubernetes Service name: an RFC 1035 label.
pub fn is_service_name(name: &str) -> bool {
    is_dns_label(name) && name.as_bytes()[0].is_ascii_lowercase()
}

/// A dotted-quad IPv4 address without leading zeros.
pub fn is_ipv4(ip: &str) -> bool {
    let octets: Vec<&str> = ip.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| {
            !o.is_empty()
                && o.len() <= 3
                && o.bytes().all(|b| b.is_ascii_digit())
                && (o.len() == 1 || !o.starts_with('0'))
                && o.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn is_subnet(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=80).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && (bytes[bytes.len() - 1].is_ascii_alphanumeric() || bytes[bytes.len() - 1] == b'_')
}

fn is_guid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_resource_group(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=90).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'(' | b')' | b'-' | b'.'))
        && bytes[bytes.len() - 1] != b'.'
}

fn is_hyphenated_name(name: &str, min: usize, max: usize) -> bool {
    let bytes = name.as_bytes();
    (min..=max).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
