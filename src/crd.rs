//! The `AppServiceLink` custom resource: its spec, its status, and the CRD generated from them.
//!
//! The CEL rules here refuse bad input at admission; the `validation` module enforces the same rules
//! again in the controller, so an object that slipped past admission never reaches the Corefile.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most App Services one link may name (`maxItems` of `spec.appServices.targets`).
pub const MAX_TARGETS: usize = 100;
/// The most labels, expressions, or values in one expression, a selector may have.
pub const MAX_SELECTOR_TERMS: usize = 32;

/// The message for a selector that requires no label, shared with the CEL rule.
pub const SELECTOR_MESSAGE: &str = "must require a label: an empty selector, or one of only NotIn and DoesNotExist expressions, matches every Service without those labels in the cluster; use matchLabels, or an In or Exists expression";

/// The message for a zone that is not a DNS name, shared with the CEL rule.
pub const ZONE_MESSAGE: &str = "must be a lower-case DNS name of RFC 1123 labels (letters, digits, '-', separated by '.'), at most 253 characters";
/// The message for a single-label zone, shared with the CEL rule.
pub const SINGLE_LABEL_MESSAGE: &str = "must have at least two labels, such as mydomain.local: a single-label zone is a top-level domain, and k8s_external would answer NXDOMAIN to every pod for every name under it";
/// The message for a reverse-lookup zone, shared with the CEL rule.
pub const REVERSE_ZONE_MESSAGE: &str = "must not be a reverse-lookup zone (in-addr.arpa, ip6.arpa or below): k8s_external runs before the kubernetes plugin and would answer NXDOMAIN to every pod for the PTR records of pods and Services";
/// The message for a zone with a `privatelink` label, shared with the CEL rule.
pub const PRIVATELINK_MESSAGE: &str = "must not contain a privatelink label: privatelink zones hold Azure private endpoint records (privatelink.blob.core.windows.net, ...), and CoreDNS would answer NXDOMAIN for them to every pod";
/// The CEL rule's message for the default cluster domain (the controller names the domain).
pub const CLUSTER_DOMAIN_MESSAGE: &str = "must not be cluster.local or a zone below it: k8s_external runs before the kubernetes plugin and would answer NXDOMAIN for the cluster's own names to every pod; choose a zone outside it, such as mydomain.local";
/// The CEL rule's message for Azure's own namespaces (the controller names the one matched).
pub const AZURE_ZONE_MESSAGE: &str = "must not be in Azure's own DNS namespaces (windows.net, azure.com, azure.net, azurewebsites.net, azmk8s.io and the others listed in the AppServiceLink README): CoreDNS would answer NXDOMAIN to every pod for the Azure endpoints under it; choose a zone of your own, such as mydomain.local";

/// The Kubernetes default cluster domain, refused whatever `--cluster-domain` says: the CRD's CEL
/// rule cannot know the flag, so it refuses this one, and the controller does too.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The reverse-lookup zones, which the `kubernetes` plugin answers for pod and Service IPs.
pub const REVERSE_ZONES: [&str; 2] = ["in-addr.arpa", "ip6.arpa"];

/// Azure's own DNS namespaces: the zones of Azure services and of their private endpoints, from
/// Microsoft's "Azure Private Endpoint private DNS zone values" (learn.microsoft.com/azure/
/// private-link/private-endpoint-dns), with the China and US Government clouds, and Entra ID's
/// sign-in domain. A zone in one of them takes the service's names away from every pod.
pub const AZURE_ZONES: &[&str] = &[
    "windows.net",
    "azure.com",
    "azure.net",
    "azure.cn",
    "azure.us",
    "azurewebsites.net",
    "azure-api.net",
    "azure-devices.net",
    "azure-automation.net",
    "azurecr.io",
    "azmk8s.io",
    "azconfig.io",
    "azurecontainerapps.io",
    "azurestaticapps.net",
    "azuresynapse.net",
    "azurehdinsight.net",
    "azurefd.net",
    "azureedge.net",
    "azurehealthcareapis.com",
    "azureiotcentral.com",
    "cloudapp.net",
    "trafficmanager.net",
    "chinacloudapi.cn",
    "usgovcloudapi.net",
    "microsoftonline.com",
];

/// The CEL rule refusing a zone that is one of `zones` or below one. Spelled out rather than an
/// `exists` over a list: the apiserver's cost estimate of a concatenation inside a macro is far
/// above the budget, while each literal comparison costs next to nothing.
fn not_in_zones_rule(zones: &[&str]) -> String {
    let terms: Vec<String> = zones
        .iter()
        .map(|z| format!("self == '{z}' || self.endsWith('.{z}')"))
        .collect();
    format!("!({})", terms.join(" || "))
}

/// Name of the DNS Service when a link does not name one.
pub const DEFAULT_DNS_SERVICE_NAME: &str = "appservicelink-dns";

/// Links Azure App Services to cluster Services: the selected Services become internal Azure load
/// balancers, CoreDNS answers `<service>.<namespace>.<zone>` with their internal IPs on an internal
/// DNS Service, and the listed App Services are pointed at that DNS Service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "appservicelink.io",
    version = "v1alpha1",
    kind = "AppServiceLink",
    shortname = "asl",
    doc = "AppServiceLink exposes selected Services as internal Azure load balancers, serves their names through CoreDNS on an internal DNS Service, and points App Services at it.",
    status = "AppServiceLinkStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"DNS Server","type":"string","jsonPath":".status.dnsServerIP"}"#,
    printcolumn = r#"{"name":"Services","type":"integer","jsonPath":".status.linkedServiceCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceLinkSpec {
    /// Which Services to expose as internal Azure load balancers.
    pub services: ServiceSelection,
    /// The internal DNS Service and the zone CoreDNS answers for.
    pub dns: DnsSpec,
    /// App Services whose DNS settings are pointed at the DNS Service.
    #[serde(default)]
    pub app_services: AppServicesSpec,
}

/// Which Services a link exposes, and how.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSelection {
    /// Label selector for the Services to expose. It must require a label (`matchLabels`, or an `In`
    /// or `Exists` expression): an empty selector, or one of only `NotIn` and `DoesNotExist`
    /// expressions, would expose every Service in the cluster without those labels.
    #[schemars(schema_with = "bounded_label_selector")]
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && self.matchExpressions.exists(e, e.operator == 'In' || e.operator == 'Exists'))").message(SELECTOR_MESSAGE))]
    pub selector: LabelSelector,
    /// Restricts the selection to namespaces whose labels match. All namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_optional_label_selector")]
    pub namespace_selector: Option<LabelSelector>,
    /// Name of the subnet (in the cluster's virtual network) for the internal load balancers. Sets
    /// the annotation `service.beta.kubernetes.io/azure-load-balancer-internal-subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_])?$')").message("must be an Azure subnet name: 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    pub subnet: Option<String>,
    /// Convert Services that are already public LoadBalancers into internal ones. Off by default,
    /// because it changes who can reach them.
    #[serde(default)]
    pub allow_public_load_balancer_conversion: bool,
}

/// The internal DNS Service and the CoreDNS zone.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// DNS zone in which `<service>.<namespace>.<zone>` resolves to a Service's internal IP, through
    /// the CoreDNS `k8s_external` plugin. A lower-case DNS name of at least two labels such as
    /// `mydomain.local`. CoreDNS answers NXDOMAIN for every other name in the zone, to every pod, so
    /// these are refused: the cluster domain (`cluster.local`, or the operator's `--cluster-domain`)
    /// and every zone above or below it, reverse zones (`in-addr.arpa`, `ip6.arpa`), single-label
    /// zones, public suffixes (the Public Suffix List), Azure's own zones (`privatelink.*`,
    /// `*.windows.net`, `*.azure.com`, ...), and zones in a public domain such as
    /// `internal.contoso.com` unless `allowPublicDomain` is set.
    #[schemars(length(max = 253))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$')").message(ZONE_MESSAGE),
        validation = Rule::new("self.contains('.')").message(SINGLE_LABEL_MESSAGE),
        validation = Rule::new(not_in_zones_rule(&REVERSE_ZONES)).message(REVERSE_ZONE_MESSAGE),
        validation = Rule::new(not_in_zones_rule(&[DEFAULT_CLUSTER_DOMAIN])).message(CLUSTER_DOMAIN_MESSAGE),
        validation = Rule::new("!(self.startsWith('privatelink.') || self.contains('.privatelink.'))").message(PRIVATELINK_MESSAGE),
        validation = Rule::new(not_in_zones_rule(AZURE_ZONES)).message(AZURE_ZONE_MESSAGE),
    )]
    pub zone: String,
    /// Allow a zone in a public domain, such as `internal.contoso.com` (a zone under a public
    /// suffix of the Public Suffix List). CoreDNS then answers every name in the zone from the
    /// cluster's load balancers and NXDOMAIN for the rest, so pods no longer see the zone's public
    /// records. Set it only for a domain your organisation owns and serves privately. Public
    /// suffixes themselves (`com`, `co.uk`) and Azure's zones stay refused.
    #[serde(default)]
    pub allow_public_domain: bool,
    /// The internal LoadBalancer Service in `kube-system` that exposes CoreDNS.
    #[serde(default)]
    pub service: DnsServiceSpec,
}

/// The internal LoadBalancer Service that exposes CoreDNS to the virtual network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsServiceSpec {
    /// Name of the Service in `kube-system`. Links that name the same Service share it.
    #[serde(default = "default_dns_service_name")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$')").message("must be a Service name: lower-case letters, digits and '-', starting with a letter, at most 63 characters"))]
    pub name: String,
    /// Static private IPv4 address for the DNS Service's load balancer, from the subnet. Sets the
    /// annotation `service.beta.kubernetes.io/azure-load-balancer-ipv4`. Assigned by Azure when absent.
    #[serde(default, rename = "staticIP", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    #[x_kube(validation = Rule::new("self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$')").message("must be an IPv4 address such as 10.240.0.53"))]
    pub static_ip: Option<String>,
    /// Subnet name for the DNS Service's load balancer. Defaults to `spec.services.subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_])?$')").message("must be an Azure subnet name: 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit"))]
    pub subnet: Option<String>,
    /// Keep the address Azure assigned. Without `staticIP`, once the load balancer has an IP the
    /// operator records it on the link (annotation `appservicelink.io/pinned-dns-ip`) and sets it as
    /// the Service's `service.beta.kubernetes.io/azure-load-balancer-ipv4`, so that a re-created DNS
    /// Service gets the same address and the App Services keep resolving. Set to false to let Azure
    /// choose an address each time the Service is created.
    #[serde(default = "default_pin_address")]
    pub pin_address: bool,
}

fn default_pin_address() -> bool {
    true
}

/// A label selector as Kubernetes declares it, bounded so that a CEL rule over it has a small
/// estimated cost: the apiserver estimates unbounded maps and lists at the largest request it accepts.
/// The string bounds are Kubernetes' own label limits (a 253-character prefix, `/` and a 63-character
/// name for a key; 63 characters for a value).
fn bounded_label_selector(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema =
        serde_json::to_value(LabelSelector::json_schema(generator)).expect("a schema is JSON");
    let props = &mut schema["properties"];
    props["matchLabels"]["maxProperties"] = MAX_SELECTOR_TERMS.into();
    props["matchLabels"]["additionalProperties"]["maxLength"] = 63.into();
    let expressions = &mut props["matchExpressions"];
    expressions["maxItems"] = MAX_SELECTOR_TERMS.into();
    let expression = &mut expressions["items"]["properties"];
    expression["key"]["maxLength"] = 317.into();
    expression["operator"]["maxLength"] = "DoesNotExist".len().into();
    expression["values"]["maxItems"] = MAX_SELECTOR_TERMS.into();
    expression["values"]["items"]["maxLength"] = 63.into();
    schemars::Schema::try_from(schema).expect("an object schema")
}

/// The same for an optional selector, which the CRD declares nullable like every optional field.
fn bounded_optional_label_selector(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = bounded_label_selector(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

fn default_dns_service_name() -> String {
    DEFAULT_DNS_SERVICE_NAME.to_string()
}

impl Default for DnsServiceSpec {
    fn default() -> Self {
        Self {
            name: default_dns_service_name(),
            static_ip: None,
            subnet: None,
            pin_address: default_pin_address(),
        }
    }
}

/// App Services to point at the DNS Service, and how.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppServicesSpec {
    /// The App Services (or deployment slots) to point at the DNS Service, at most 100.
    #[serde(default)]
    #[schemars(length(max = MAX_TARGETS))]
    pub targets: Vec<AppServiceTarget>,
    /// Where the DNS server is written: the app settings `WEBSITE_DNS_SERVER` /
    /// `WEBSITE_DNS_ALT_SERVER` (`AppSettings`), or the site property
    /// `properties.dnsConfiguration` (`SiteDnsConfiguration`).
    #[serde(default)]
    pub dns_mode: AppServiceDnsMode,
    /// Optional fallback DNS server (IPv4), written as `WEBSITE_DNS_ALT_SERVER` or `dnsAltServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    #[x_kube(validation = Rule::new("self.matches('^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$')").message("must be an IPv4 address such as 168.63.129.16"))]
    pub alternate_dns_server: Option<String>,
    /// What happens to the App Services' DNS settings when a target is removed or the link is
    /// deleted: `Restore` the previous values (the default), or `Retain` them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One App Service, or one of its deployment slots.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceTarget {
    /// Azure subscription id (a GUID).
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')").message("must be a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)"))]
    pub subscription_id: String,
    /// Resource group of the App Service.
    #[schemars(length(max = 90))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9_().-]{0,89}[a-zA-Z0-9_()-]$')").message("must be a resource group name: 1-90 letters, digits, '_', '(', ')', '-' or '.', not ending in '.'"))]
    pub resource_group: String,
    /// Name of the App Service (the site).
    #[schemars(length(max = 60))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9-]{0,58}[a-zA-Z0-9]$')").message("must be an App Service name: 2-60 letters, digits or '-', not starting or ending with '-'"))]
    pub name: String,
    /// Deployment slot. The production slot when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 59))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9]([a-zA-Z0-9-]{0,57}[a-zA-Z0-9])?$')").message("must be a slot name: 1-59 letters, digits or '-', not starting or ending with '-'"))]
    pub slot: Option<String>,
}

/// Where an App Service's DNS server is configured.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppServiceDnsMode {
    /// The app settings `WEBSITE_DNS_SERVER` and `WEBSITE_DNS_ALT_SERVER`.
    #[default]
    AppSettings,
    /// The site property `properties.dnsConfiguration`, which Microsoft now recommends.
    SiteDnsConfiguration,
}

/// What happens to external settings when the link no longer manages them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Put back the values found before the operator changed them, or remove them.
    #[default]
    Restore,
    /// Leave the values as the operator last wrote them.
    Retain,
}

/// How many of the selected Services are in each state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    /// Internal load balancers with an IP.
    pub linked: i32,
    /// Converted, waiting for the IP.
    pub pending: i32,
    /// Left alone (see their entries).
    pub skipped: i32,
    /// Held by another link or field manager.
    pub conflict: i32,
    /// Refused by the apiserver.
    pub failed: i32,
    /// Selected Services `services` does not list (linked ones, listed last, past the cap).
    pub omitted: i32,
}

/// Observed state of an `AppServiceLink`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceLinkStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` summarises the others: `ServicesReady`, `DnsServiceReady`, `CoreDNSOverrideReady` and
    /// `AppServicesReady`. `Reconciling` and `Stalled` appear while they are true (kstatus).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Internal IP of the DNS Service's load balancer, once Azure has assigned it.
    #[serde(
        default,
        rename = "dnsServerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub dns_server_ip: Option<String>,
    /// Number of Services currently exposed by this link.
    #[serde(default)]
    pub linked_service_count: i32,
    /// The Services the link selects, with their state: problems first (refused, in conflict,
    /// skipped, pending, names that do not resolve, conversions reverted), then the linked ones, at
    /// most 200 in all so that the status stays far under etcd's size limit. `serviceCounts` counts
    /// every one of them.
    #[serde(default)]
    pub services: Vec<LinkedServiceStatus>,
    /// How many selected Services are in each state, and how many `services` leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_counts: Option<ServiceCounts>,
    /// Every App Service the link points at the DNS Service, with its sync state. Entries of targets
    /// removed from the spec stay until their previous settings are restored.
    #[serde(default)]
    pub app_services: Vec<AppServiceStatus>,
}

/// Sync state of one App Service (or slot).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceStatus {
    /// ARM resource id of the site or slot.
    pub resource_id: String,
    /// The DNS server the App Service is set to, as last read from Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<String>,
    /// Whether the App Service uses the link's DNS Service.
    pub in_sync: bool,
    /// When the operator last changed the App Service's DNS settings (a first sync, a new IP, or a
    /// drift repair). Quiet checks that find everything in place do not move it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// What is wrong, and what to do, when not in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Values the operator found before its first change, by setting name (`WEBSITE_DNS_SERVER`,
    /// `WEBSITE_DNS_ALT_SERVER`, `dnsConfiguration.dnsServers`, `dnsConfiguration.dnsAltServer`); an
    /// empty string means the setting was absent. Restored when the link lets the App Service go.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous: BTreeMap<String, String>,
    /// How many times another writer (Terraform, the portal) reverted the operator's DNS setting,
    /// each within the revert window of the one before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reverts: i32,
    /// When another writer last reverted the operator's DNS setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revert_time: Option<Time>,
}

/// One Service selected by a link.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LinkedServiceStatus {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// `Linked` (an internal load balancer), `Pending` (waiting for its IP), `Skipped` (refused,
    /// see message), `Conflict` (another link or field manager holds it, see message) or `Failed`
    /// (the apiserver refused the write, see message).
    pub state: LinkedServiceState,
    /// Internal IP of the Service's load balancer.
    #[serde(
        default,
        rename = "internalIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub internal_ip: Option<String>,
    /// Name the Service resolves as through the DNS Service: `<service>.<namespace>.<zone>`.
    pub fqdn: String,
    /// Why the Service is not linked, when it is not; for a linked Service that was a public load
    /// balancer, that unlinking cannot bring its public IP back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether `fqdn` resolves to `internalIP` through the DNS Service, over both UDP and TCP, as
    /// last checked. Absent when the Service is not linked or the check is off (`--check-names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_resolves: Option<bool>,
    /// Why `fqdn` does not resolve: NXDOMAIN, a wrong IP (which), a timeout or another answer, and
    /// over which transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_error: Option<String>,
    /// How many times another field manager reverted the conversion since the link last changed,
    /// each within the revert window of the one before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reverts: i32,
    /// When another field manager last reverted the conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revert_time: Option<Time>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// State of one selected Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LinkedServiceState {
    /// The Service is an internal load balancer with an IP.
    Linked,
    /// The Service is converted; Azure has not assigned its IP yet.
    #[default]
    Pending,
    /// The Service cannot or may not be converted (headless, ExternalName, public without opt-in, in kube-system).
    Skipped,
    /// Another link or another field manager holds the Service.
    Conflict,
    /// The apiserver refused the conversion or the restore (an admission policy, a quota, a full
    /// NodePort range); the message says what it answered. Retried with backoff.
    Failed,
}

/// The CRD, as `crds/` holds it and the operator's tests install it.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(AppServiceLink::crd()).expect("a CRD always serializes");
    unwrap_descriptions(&mut crd);
    serde_json::from_value(crd).expect("only descriptions changed")
}

/// Joins the lines of wrapped doc comments: `kubectl explain` and the CRD would show each source line
/// break as a broken line. Blank lines (paragraphs) stay.
fn unwrap_descriptions(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The CRD as YAML, as `appservicelink crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    serde_norway::to_string(&crd()).expect("a CRD always serializes to YAML")
}

/// A Markdown reference of every field, generated from the CRD's descriptions (`docs/crd-reference.md`).
pub fn reference_markdown() -> String {
    let crd = serde_json::to_value(crd()).expect("a CRD always serializes");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut out = String::from(
        "# AppServiceLink reference (appservicelink.io/v1alpha1)\n\n\
         Generated from the CRD by `appservicelink crd --reference`; `kubectl explain appservicelink.spec` shows the same.\n\n\
         | Field | Type | Description |\n| --- | --- | --- |\n",
    );
    for top in ["spec", "status"] {
        reference_rows(&mut out, top, &schema[top]);
    }
    out
}

fn reference_rows(out: &mut String, path: &str, node: &serde_json::Value) {
    let kind = match node["type"].as_str() {
        Some("array") => format!("[]{}", node["items"]["type"].as_str().unwrap_or("object")),
        Some(t) => t.to_string(),
        None => "object".to_string(),
    };
    let mut description = node["description"]
        .as_str()
        .unwrap_or_default()
        .replace('\n', " ")
        .replace('|', "\\|");
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter_map(|v| v.as_str().map(|s| format!("`{s}`")))
            .collect();
        description.push_str(&format!(" One of {}.", values.join(", ")));
    }
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(message) = rule["message"].as_str() {
            description.push_str(&format!(" Validated: {message}."));
        }
    }
    out.push_str(&format!("| `{path}` | {kind} | {description} |\n"));
    let children = node["properties"]
        .as_object()
        .or_else(|| node["items"]["properties"].as_object());
    // Kubernetes' own types (label selectors, conditions) are documented upstream; stop there.
    if path.ends_with("selector") || path.ends_with("Selector") || path.ends_with("conditions") {
        return;
    }
    for (name, child) in children.into_iter().flatten() {
        let sep = if node["type"] == "array" { "[]." } else { "." };
        reference_rows(out, &format!("{path}{sep}{name}"), child);
    }
}
