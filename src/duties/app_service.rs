//! Duty 4: the App Services a link names use its DNS Service.
//!
//! In `AppSettings` mode the app settings `WEBSITE_DNS_SERVER` (and `WEBSITE_DNS_ALT_SERVER` when the
//! link sets an alternate) carry the DNS server; in `SiteDnsConfiguration` mode the site property
//! `properties.dnsConfiguration` does. Every write restarts the customer's app, so the operator writes
//! only when a value differs, remembers what it replaced, and puts it back when it lets go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::azure::arm::{ArmClient, ArmError, SiteDns, SiteRef};
use crate::azure::sites::SiteMemo;
use crate::context::{Context, DRY_RUN_PREFIX};
use crate::crd::{
    AppServiceDnsMode, AppServiceLink, AppServiceStatus, AppServiceTarget, DeletionPolicy,
};
use crate::status::{types, DutyStatus};

/// Why the duty stopped. Only letting App Services go can fail the reconcile: while a link is live,
/// every App Service's problem is an entry in its status instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The link is being deleted and App Services must be restored, but Azure access is not
    /// configured.
    #[error("cannot restore App Services: Azure access is not configured: {0}")]
    NoAzureAccess(String),
    /// An App Service could not be restored.
    #[error("restoring {resource_id}: {source}")]
    Restore {
        /// ARM resource id of the site or slot.
        resource_id: String,
        /// What ARM answered.
        #[source]
        source: ArmError,
    },
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        "AppServiceRestore"
    }

    /// The reason of the `AppServicesReady` condition it leads to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoAzureAccess(_) => "AzureNotConfigured",
            Self::Restore { .. } => "RestoreFailed",
        }
    }

    /// True when retrying alone will not help (no Azure access, a missing role, a missing site),
    /// as opposed to throttling or an outage.
    pub fn needs_human(&self) -> bool {
        match self {
            Self::NoAzureAccess(_) => true,
            Self::Restore { source, .. } => !transient(source),
        }
    }
}

/// How many reverts of its setting by another writer, each within the revert window of the last,
/// the operator re-applies before it stops.
pub const MAX_REVERTS: i32 = 3;

/// App setting holding the DNS server(s), comma-separated.
pub const DNS_SERVER_SETTING: &str = "WEBSITE_DNS_SERVER";
/// App setting holding the fallback DNS server. (Not `WEBSITE_ALT_DNS_SERVER`, as the original
/// write-up had it: App Service reads `WEBSITE_DNS_ALT_SERVER`.)
pub const DNS_ALT_SERVER_SETTING: &str = "WEBSITE_DNS_ALT_SERVER";
/// Site property holding the DNS servers; it takes precedence over the app settings when set.
pub const SITE_DNS_SERVERS: &str = "dnsConfiguration.dnsServers";
/// Site property holding the fallback DNS server.
pub const SITE_DNS_ALT_SERVER: &str = "dnsConfiguration.dnsAltServer";

/// Setting name → value; `None` is an absent setting.
pub type Values = BTreeMap<String, Option<String>>;

/// Annotation on the link: per App Service (resource id), the values of the operator's settings
/// before its first change (JSON). Written before the change, so it survives what status does not:
/// a status lost to a backup restore (Velero restores no status), a status write that failed, the
/// operator killed between the ARM write and the status write.
pub const ANNOTATION_RESTORE_RECORD: &str = "appservicelink.io/app-service-restore-record";
/// Field manager for the restore record.
const RECORD_FIELD_MANAGER: &str = "appservicelink-restore-record";

/// Resource id → setting → value before the first change (empty: the setting was absent).
pub type Records = BTreeMap<String, BTreeMap<String, String>>;

/// The restore records on the link (none when the annotation is missing or unreadable).
pub fn records_of(link: &AppServiceLink) -> Records {
    link.annotations()
        .get(ANNOTATION_RESTORE_RECORD)
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// The record for `id`, whatever the spelling it was recorded under.
fn record_for<'a>(records: &'a Records, id: &str) -> Option<&'a BTreeMap<String, String>> {
    records
        .iter()
        .find(|(recorded, _)| same_site(recorded, id))
        .map(|(_, record)| record)
}

/// Replaces the record for `id` (none when `previous` is empty), whatever its old spelling.
fn set_record(records: &mut Records, id: &str, previous: &BTreeMap<String, String>) {
    records.retain(|recorded, _| !same_site(recorded, id));
    if !previous.is_empty() {
        records.insert(id.to_string(), previous.clone());
    }
}

/// The link's App Services as far as anything remembers them: its status entries, each with the
/// record from the annotation (the record wins: it was written first), plus an entry for each site
/// the annotation remembers and the status lost.
pub fn remembered(link: &AppServiceLink) -> Vec<AppServiceStatus> {
    let records = records_of(link);
    let mut entries: Vec<AppServiceStatus> = link
        .status
        .as_ref()
        .map(|s| s.app_services.clone())
        .unwrap_or_default();
    for entry in &mut entries {
        if let Some(record) = record_for(&records, &entry.resource_id) {
            entry.previous.extend(record.clone());
        }
    }
    for (id, record) in &records {
        if !entries.iter().any(|e| same_site(&e.resource_id, id)) {
            entries.push(AppServiceStatus {
                resource_id: id.clone(),
                previous: record.clone(),
                ..Default::default()
            });
        }
    }
    entries
}

/// The values `mode` needs for `dns_server` and the optional `alternate`.
pub fn desired(mode: AppServiceDnsMode, dns_server: &str, alternate: Option<&str>) -> Values {
    let (server_key, alt_key) = keys(mode);
    let mut values = Values::from([(server_key.to_string(), Some(dns_server.to_string()))]);
    if let Some(alt) = alternate {
        values.insert(alt_key.to_string(), Some(alt.to_string()));
    }
    values
}

fn keys(mode: AppServiceDnsMode) -> (&'static str, &'static str) {
    match mode {
        AppServiceDnsMode::AppSettings => (DNS_SERVER_SETTING, DNS_ALT_SERVER_SETTING),
        AppServiceDnsMode::SiteDnsConfiguration => (SITE_DNS_SERVERS, SITE_DNS_ALT_SERVER),
    }
}

/// The values in `wanted` that `current` does not already have: what must be written.
pub fn changes(current: &Values, wanted: &Values) -> Values {
    wanted
        .iter()
        .filter(|(key, value)| current.get(*key).cloned().flatten() != **value)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Remembers, for each key about to change that has no record yet, the value it has now. Returns
/// true when a record was added (and must be persisted before the write).
pub fn record_previous(
    previous: &mut BTreeMap<String, String>,
    current: &Values,
    changing: &Values,
) -> bool {
    let mut added = false;
    for key in changing.keys() {
        if !previous.contains_key(key) {
            previous.insert(
                key.clone(),
                current.get(key).cloned().flatten().unwrap_or_default(),
            );
            added = true;
        }
    }
    added
}

/// The values that put back what `previous` recorded for `mode`'s settings (an empty record means
/// "was absent"). Only the two settings the operator writes in that mode are ever put back: the
/// record is read back from status, and a key anyone added there is not the operator's to write.
pub fn restoring(mode: AppServiceDnsMode, previous: &BTreeMap<String, String>) -> Values {
    let (server_key, alt_key) = keys(mode);
    previous
        .iter()
        .filter(|(key, _)| *key == server_key || *key == alt_key)
        .map(|(key, value)| (key.clone(), Some(value.clone()).filter(|v| !v.is_empty())))
        .collect()
}

/// The full app-settings set to write back: `settings` with only `changes` applied. Every other
/// setting keeps its exact value (ARM's PUT replaces the whole set).
pub fn merged_settings(
    settings: &BTreeMap<String, String>,
    changes: &Values,
) -> BTreeMap<String, String> {
    let mut merged = settings.clone();
    for (key, value) in changes {
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    merged
}

/// The `dnsConfiguration` fields to PATCH for `changes` in `SiteDnsConfiguration` mode.
pub fn dns_configuration_patch(changes: &Values) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    if let Some(servers) = changes.get(SITE_DNS_SERVERS) {
        let list: Vec<&str> = servers
            .as_deref()
            .map(|s| s.split(',').collect())
            .unwrap_or_default();
        fields.insert("dnsServers".into(), json!(list));
    }
    if let Some(alt) = changes.get(SITE_DNS_ALT_SERVER) {
        fields.insert("dnsAltServer".into(), json!(alt));
    }
    fields
}

// ---------------------------------------------------------------------------------------------
// Applying: the only part of this duty that talks to ARM and the apiserver.
// ---------------------------------------------------------------------------------------------

/// Result of the App Service duty for one link.
pub struct AppServicesOutcome {
    /// The `AppServicesReady` condition.
    pub duty: DutyStatus,
    /// One entry per target, plus removed targets still to restore.
    pub entries: Vec<AppServiceStatus>,
    /// When to look again because of a failure, sooner than the resync.
    pub retry_after: Option<Duration>,
}

fn site_ref(target: &AppServiceTarget) -> SiteRef {
    SiteRef {
        subscription_id: target.subscription_id.clone(),
        resource_group: target.resource_group.clone(),
        name: target.name.clone(),
        slot: target.slot.clone(),
    }
}

/// True when two ARM resource ids name the same resource: ARM compares them case-insensitively, so
/// `RG-Web/Contoso-Web` and `rg-web/contoso-web` are one site.
fn same_site(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A resource id in the one spelling used to compare and deduplicate.
fn site_key(resource_id: &str) -> String {
    resource_id.to_ascii_lowercase()
}

/// Parses an entry's resource id back into a site reference.
fn site_of(resource_id: &str) -> Option<SiteRef> {
    let parts: Vec<&str> = resource_id.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["subscriptions", sub, "resourceGroups", rg, "providers", "Microsoft.Web", "sites", name, rest @ ..] => {
            Some(SiteRef {
                subscription_id: sub.to_string(),
                resource_group: rg.to_string(),
                name: name.to_string(),
                slot: match rest {
                    ["slots", slot] => Some(slot.to_string()),
                    [] => None,
                    _ => return None,
                },
            })
        }
        _ => None,
    }
}

/// The values currently set for `keys`, plus (in AppSettings mode) the whole settings set.
async fn read(
    arm: &ArmClient,
    mode: AppServiceDnsMode,
    site: &SiteRef,
    keys: &BTreeSet<String>,
) -> Result<(Values, Option<BTreeMap<String, String>>), ArmError> {
    match mode {
        AppServiceDnsMode::AppSettings => {
            let settings = arm.list_app_settings(site).await?;
            let values = keys
                .iter()
                .map(|k| (k.clone(), settings.get(k).cloned()))
                .collect();
            Ok((values, Some(settings)))
        }
        AppServiceDnsMode::SiteDnsConfiguration => {
            let dns = arm.get_site_dns(site).await?;
            let servers = Some(dns.dns_servers.join(",")).filter(|s| !s.is_empty());
            let values = Values::from([
                (SITE_DNS_SERVERS.to_string(), servers),
                (SITE_DNS_ALT_SERVER.to_string(), dns.dns_alt_server),
            ]);
            Ok((
                values
                    .into_iter()
                    .filter(|(k, _)| keys.contains(k))
                    .collect(),
                None,
            ))
        }
    }
}

async fn write(
    arm: &ArmClient,
    mode: AppServiceDnsMode,
    site: &SiteRef,
    settings: Option<&BTreeMap<String, String>>,
    changes: &Values,
) -> Result<(), ArmError> {
    match (mode, settings) {
        (AppServiceDnsMode::AppSettings, Some(settings)) => {
            arm.replace_app_settings(site, &merged_settings(settings, changes))
                .await
        }
        _ => {
            arm.patch_site_dns(site, dns_configuration_patch(changes))
                .await
        }
    }
}

fn mode_of_keys(previous: &BTreeMap<String, String>) -> AppServiceDnsMode {
    if previous.contains_key(SITE_DNS_SERVERS) || previous.contains_key(SITE_DNS_ALT_SERVER) {
        AppServiceDnsMode::SiteDnsConfiguration
    } else {
        AppServiceDnsMode::AppSettings
    }
}

/// Puts back what `previous` recorded of the operator's own settings. Returns true when something
/// was written.
async fn restore(
    arm: &ArmClient,
    site: &SiteRef,
    previous: &BTreeMap<String, String>,
) -> Result<bool, ArmError> {
    let mut wrote = false;
    // A record holds one mode's settings; a hand-edited one may hold both.
    for mode in [
        AppServiceDnsMode::AppSettings,
        AppServiceDnsMode::SiteDnsConfiguration,
    ] {
        let wanted = restoring(mode, previous);
        if wanted.is_empty() {
            continue;
        }
        wrote |= write_fresh(arm, mode, site, &wanted, None).await?;
    }
    Ok(wrote)
}

/// Writes `wanted` over what the site has at that moment: every attempt reads and merges again (the
/// first may use `fresh`, a read made just before), so a retry after throttling or a server error
/// never resends a body built from an old read, and a setting another writer changed in the
/// meantime is kept. Returns true when it wrote.
async fn write_fresh(
    arm: &ArmClient,
    mode: AppServiceDnsMode,
    site: &SiteRef,
    wanted: &Values,
    mut fresh: Option<(Values, Option<BTreeMap<String, String>>)>,
) -> Result<bool, ArmError> {
    let policy = arm.retry_policy().clone();
    let keys: BTreeSet<String> = wanted.keys().cloned().collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (current, settings) = match fresh.take() {
            Some(read) => read,
            None => read(arm, mode, site, &keys).await?,
        };
        let changing = changes(&current, wanted);
        if changing.is_empty() {
            return Ok(false);
        }
        let err = match write(arm, mode, site, settings.as_ref(), &changing).await {
            Ok(()) => return Ok(true),
            // A retry costs a read and a write, and ARM counts the app-settings list (a POST) as a
            // write too, so the retry's read can take the one token the write was waiting for.
            // Retry-After only says when one token is back (a fraction of a token may already be
            // there), so a fixed multiple of it can lock into step with the refill, read after read
            // taking the token; a wait that doubles with each throttled write cannot.
            Err(ArmError::Throttled {
                operation,
                attempts,
                retry_after,
            }) => ArmError::Throttled {
                operation,
                attempts,
                retry_after: retry_after.map(|d| d * 2u32.saturating_pow(attempt)),
            },
            Err(err) => err,
        };
        let delay = err
            .retry_after()
            .unwrap_or(policy.base_delay * 2u32.saturating_pow(attempt - 1));
        if !err.is_transient() || attempt >= policy.max_attempts || delay > policy.max_delay {
            return Err(err);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Why one App Service could not be synced.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    /// ARM refused or did not answer.
    #[error(transparent)]
    Arm(#[from] ArmError),
    /// The values to restore could not be recorded, so nothing was changed.
    #[error("could not record the current DNS settings before changing them, so nothing was changed: {0}")]
    Record(#[source] crate::error::KubeError),
    /// The DNS server changed again soon after the last write: the latest value is written once the
    /// write window has passed.
    #[error("the DNS server changed again within {window_secs}s of the last write to this App Service (each write restarts the app); the latest value is written in {}s", .wait.as_secs().max(1))]
    Deferred {
        /// Until the window has passed.
        wait: Duration,
        /// The window, in seconds.
        window_secs: u64,
    },
    /// A later pass of the same link asked for this App Service while this one waited for its turn:
    /// the later one has the newer DNS server and writes it.
    #[error("a later pass of this link is syncing this App Service with the latest DNS server")]
    Superseded,
    /// Another writer keeps reverting the operator's setting: the operator stopped re-applying it,
    /// since every write restarts the app.
    #[error("another writer reverted {setting} {reverts} times in a row, so the operator stopped re-applying it (every write restarts the app). Terraform's azurerm_linux_web_app / azurerm_windows_web_app own the whole app_settings map: add lifecycle {{ ignore_changes = [app_settings[\"WEBSITE_DNS_SERVER\"], app_settings[\"WEBSITE_DNS_ALT_SERVER\"]] }} there, or stop that writer; then edit the link to retry (the operator also tries again {window_secs}s after the last revert)")]
    Reverted {
        /// The setting reverted.
        setting: String,
        /// How many reverts in a row.
        reverts: i32,
        /// The revert window, in seconds.
        window_secs: u64,
    },
}

impl SyncError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Arm(err) => err.reason(),
            Self::Record(_) => "RecordFailed",
            Self::Deferred { .. } => "WriteWindow",
            Self::Superseded => "Superseded",
            Self::Reverted { .. } => "AppServiceReverted",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Arm(err) => err.retry_after(),
            Self::Deferred { wait, .. } => Some(*wait),
            // Soon: the later pass is done by then, and this link's next pass finds it confirmed.
            Self::Superseded => Some(Duration::from_secs(1)),
            Self::Record(_) | Self::Reverted { .. } => None,
        }
    }
}

/// Writes the restore records to the link's annotation (removing it when there are none).
async fn persist_records(
    ctx: &Context,
    link: &AppServiceLink,
    records: &Records,
) -> Result<(), crate::error::KubeError> {
    if ctx.config.dry_run {
        return Ok(());
    }
    let value = if records.is_empty() {
        Value::Null
    } else {
        json!(serde_json::to_string(records).expect("string maps serialize"))
    };
    let patch = json!({"metadata": {"annotations": {ANNOTATION_RESTORE_RECORD: value}}});
    Api::<AppServiceLink>::all(ctx.client.clone())
        .patch(
            &link.name_any(),
            &ctx.update_params(RECORD_FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map(|written| ctx.own.links.record(written))
        .map_err(|e| {
            crate::error::KubeError::new(
                format!(
                    "recording App Service settings on AppServiceLink {}",
                    link.name_any()
                ),
                e,
            )
        })
}

/// Points every target at `dns_server_ip`, restores targets that left the spec, and reports.
pub async fn reconcile(
    ctx: &Context,
    link: &AppServiceLink,
    dns_server_ip: Option<&str>,
) -> AppServicesOutcome {
    let spec = &link.spec.app_services;
    let old = remembered(link);
    let mut records = records_of(link);
    if spec.targets.is_empty() && old.is_empty() {
        let duty = DutyStatus::ready(
            types::APP_SERVICES,
            "NoTargets",
            "spec.appServices.targets lists no App Service",
        );
        return AppServicesOutcome {
            duty,
            entries: Vec::new(),
            retry_after: None,
        };
    }
    let arm = match &ctx.arm {
        Ok(arm) => arm,
        Err(reason) => {
            let duty = DutyStatus::blocked(
                types::APP_SERVICES,
                "AzureNotConfigured",
                format!("Azure access is not configured: {reason}"),
            );
            return AppServicesOutcome {
                duty,
                entries: old,
                retry_after: None,
            };
        }
    };
    let mut entries: Vec<AppServiceStatus> = Vec::new();
    let mut retry_after: Option<Duration> = None;
    // When the first App Service confirmed a moment ago is due for its check.
    let mut next_check: Option<Duration> = None;
    let mut throttled: Option<Duration> = None;
    let mut problems: Vec<(String, String)> = Vec::new();
    let wanted_ids: BTreeSet<String> = spec
        .targets
        .iter()
        .map(|t| site_key(&site_ref(t).resource_id()))
        .collect();
    for target in dedup(&spec.targets) {
        let site = site_ref(target);
        let id = site.resource_id();
        let mut entry = match old.iter().find(|e| same_site(&e.resource_id, &id)) {
            // Respelled in the spec: the same site, its record kept, reported as the spec spells it.
            Some(known) if known.resource_id != id => {
                ctx.metrics.forget_app_service(&known.resource_id);
                AppServiceStatus {
                    resource_id: id.clone(),
                    ..known.clone()
                }
            }
            Some(known) => known.clone(),
            None => AppServiceStatus {
                resource_id: id.clone(),
                ..Default::default()
            },
        };
        if link.status.as_ref().and_then(|s| s.observed_generation) != link.metadata.generation {
            // The link was edited: its user had a chance to fix the fight.
            entry.reverts = 0;
            entry.last_revert_time = None;
        }
        if let Some(holder) = other_keeper(ctx, link, &id) {
            // Two links writing one App Service would flap it (and restart the app) forever.
            entry.in_sync = false;
            entry.message = Some(format!(
                "AppServiceLink {holder} also names this App Service and keeps it; remove it from one of the links"
            ));
            problems.push((
                "AppServiceConflict".into(),
                format!("{id}: also named by AppServiceLink {holder}"),
            ));
            entries.push(entry);
            continue;
        }
        let Some(ip) = dns_server_ip else {
            entry.in_sync = false;
            entry.message = Some("waiting for the DNS Service's load balancer IP".into());
            entries.push(entry);
            continue;
        };
        if let Some(wait) = throttled {
            // ARM throttles per subscription and principal: asking about the next App Service now
            // would only spend the token the throttled request is waiting for.
            entry.message = Some(format!(
                "not checked in this pass: ARM is throttling the operator; next pass in {}s",
                wait.as_secs()
            ));
            entries.push(entry);
            continue;
        }
        match sync(
            ctx,
            link,
            arm,
            &site,
            ip,
            &mut entry,
            (&old, &entries),
            &mut records,
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(due)) => next_check = Some(next_check.map_or(due, |n| n.min(due))),
            Err(err) => {
                tracing::warn!(link = %link.name_any(), app_service = %id, error = %err, "App Service sync failed");
                retry_after = Some(
                    retry_after
                        .unwrap_or(Duration::MAX)
                        .min(err.retry_after().unwrap_or(Duration::from_secs(30))),
                );
                if err.reason() == "Throttled" {
                    throttled = retry_after;
                }
                entry.in_sync = false;
                entry.message = Some(err.to_string());
                problems.push((err.reason().to_string(), format!("{id}: {err}")));
            }
        }
        entries.push(entry);
    }
    // Targets that left the spec: put their settings back, then forget them.
    for gone in old
        .iter()
        .filter(|e| !wanted_ids.contains(&site_key(&e.resource_id)))
    {
        let result = let_go(ctx, link, arm, gone).await;
        if result.is_ok() && record_for(&records, &gone.resource_id).is_some() {
            // Put back (or retained): nothing more to restore. A failure here only leaves a record
            // that the next reconcile finds already in place.
            set_record(&mut records, &gone.resource_id, &BTreeMap::new());
            if let Err(err) = persist_records(ctx, link, &records).await {
                tracing::warn!(link = %link.name_any(), error = %err, "could not drop a restore record");
            }
        }
        if let Err(err) = result {
            let mut entry = gone.clone();
            entry.in_sync = false;
            entry.message = Some(format!(
                "removed from the link; restoring its previous settings failed: {err}"
            ));
            problems.push((
                err.reason().to_string(),
                format!("{}: {err}", gone.resource_id),
            ));
            retry_after = Some(Duration::from_secs(30));
            entries.push(entry);
        }
    }
    let duty = summarize(&entries, &problems, dns_server_ip.is_none());
    AppServicesOutcome {
        duty,
        entries,
        // Look again when a check skipped now is due, so drift is repaired on time however often
        // the link is woken for other reasons.
        retry_after: match (retry_after, next_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

/// The link that keeps the App Service `id` when several name it, if that is not `link`: one that
/// already changed it (the first keeps it), else the oldest. Only valid links count: an invalid one
/// writes nothing, so it must not keep a site from the link that would.
fn other_keeper(ctx: &Context, link: &AppServiceLink, id: &str) -> Option<String> {
    let holds = |l: &AppServiceLink| {
        l.status.as_ref().is_some_and(|s| {
            s.app_services
                .iter()
                .any(|e| same_site(&e.resource_id, id) && !e.previous.is_empty())
        })
    };
    let rank = |l: &AppServiceLink| {
        (
            !holds(l),
            l.metadata.creation_timestamp.as_ref().map(|t| t.0),
            l.name_any(),
        )
    };
    let mut naming: Vec<_> = ctx
        .valid_links()
        .into_iter()
        .filter(|l| {
            l.spec
                .app_services
                .targets
                .iter()
                .any(|t| same_site(&site_ref(t).resource_id(), id))
        })
        .collect();
    naming.sort_by_key(|l| rank(l));
    let keeper = naming.first()?.name_any();
    (keeper != link.name_any()).then_some(keeper)
}

fn dedup(targets: &[AppServiceTarget]) -> Vec<&AppServiceTarget> {
    let mut seen = BTreeSet::new();
    targets
        .iter()
        .filter(|t| seen.insert(site_key(&site_ref(t).resource_id())))
        .collect()
}

/// How long a check of a site counts: a little under the resync, so that a wake that comes a little
/// early still checks, and drift is repaired at every resync as before.
fn check_period(ctx: &Context) -> Duration {
    ctx.config.resync - ctx.config.resync / 10
}

/// Who asks for a site's turn: passes of one link supersede each other, those of two links do not.
fn owner(link: &AppServiceLink) -> String {
    link.metadata.uid.clone().unwrap_or_else(|| link.name_any())
}

/// The state of an App Service this link wants: which link, which mode, which servers. A
/// confirmation counts only for exactly this state. Not the link's generation: an edit of another
/// part of the spec (its selector, its zone, a static IP, which moves the DNS Service's address in a
/// later pass) does not concern the App Service. A target added again after its removal starts
/// with a status entry that is not in sync, so it is checked whatever its memo says.
fn wanted_state(link: &AppServiceLink, mode: AppServiceDnsMode, ip: &str) -> String {
    let alternate = link.spec.app_services.alternate_dns_server.as_deref();
    format!(
        "{}/{mode:?}/{ip}/{}",
        owner(link),
        alternate.unwrap_or_default()
    )
}

/// Syncs one target: read, compare, and write only what differs. Returns when to look again when
/// it made no ARM call because the App Service was confirmed in this state a moment ago.
///
/// A new DNS server IP costs one read and one write per target, and nothing more: in `AppSettings`
/// mode the site property that overrides the setting is looked at on the other passes (the first,
/// and every check after the resync) and the result kept for [`check_period`]; a new IP within that
/// period trusts it. That is safe because the property only appears by another writer's hand: the
/// worst case is an app restarted once, for a property set within the last resync, and the next
/// check reports the override.
#[allow(clippy::too_many_arguments)]
async fn sync(
    ctx: &Context,
    link: &AppServiceLink,
    arm: &ArmClient,
    site: &SiteRef,
    ip: &str,
    entry: &mut AppServiceStatus,
    (old, done): (&[AppServiceStatus], &[AppServiceStatus]),
    records: &mut Records,
) -> Result<Option<Duration>, SyncError> {
    let spec = &link.spec.app_services;
    let mode = spec.dns_mode;
    let period = check_period(ctx);
    let state = wanted_state(link, mode, ip);
    // One read-modify-write of the site at a time, whoever else is at it (another link, a cleanup).
    let mut turn = arm.site_turn(site, Some(&owner(link))).await;
    if turn.superseded() {
        return Err(SyncError::Superseded);
    }
    // In sync at this IP and spec, checked less than a resync ago (the link was woken for another
    // reason: one of its Services, the CoreDNS override): no ARM call. Drift is repaired at the
    // next check, as often as before.
    if entry.in_sync && entry.dns_server.as_deref() == Some(ip) {
        if let Some(left) = turn.confirmed_for(&state, period) {
            ctx.metrics.app_service_in_sync(&entry.resource_id);
            return Ok(Some(left));
        }
    }
    turn.confirmed = None;
    let now = Timestamp::now();
    // A new DNS server IP soon after the last write (a flapping load balancer): wait, then write
    // whatever the IP is by then. Decided before any request, so a deferred pass costs none.
    if entry.dns_server.as_deref().is_some_and(|d| d != ip) {
        let last_write = entry.last_sync_time.as_ref().map(|t| t.0);
        let since =
            last_write.and_then(|t| std::time::Duration::try_from(now.duration_since(t)).ok());
        if let Some(since) = since.filter(|s| *s < ctx.config.app_service_write_window) {
            return Err(SyncError::Deferred {
                wait: ctx.config.app_service_write_window - since,
                window_secs: ctx.config.app_service_write_window.as_secs(),
            });
        }
    }
    // The link switched modes: put the other mode's settings back first.
    if !entry.previous.is_empty() && mode_of_keys(&entry.previous) != mode {
        restore(arm, site, &entry.previous).await?;
        // Putting back may have set the site property again.
        turn.no_site_dns_at = None;
        entry.previous.clear();
        set_record(records, &entry.resource_id, &entry.previous);
        persist_records(ctx, link, records)
            .await
            .map_err(SyncError::Record)?;
    }
    // The site property takes precedence over the app setting: writing the setting then changes
    // nothing but restarts the app, so look before writing, unless a look a moment ago found none.
    let look = mode == AppServiceDnsMode::AppSettings && !turn.no_site_dns_within(period);
    if look && overridden(entry, &mut turn, &arm.get_site_dns(site).await?) {
        return Ok(None);
    }
    let wanted = desired(mode, ip, spec.alternate_dns_server.as_deref());
    let (current, settings) = read(arm, mode, site, &wanted.keys().cloned().collect()).await?;
    let changing = changes(&current, &wanted);
    (entry.reverts, entry.last_revert_time) = crate::status::decayed_reverts(
        entry.reverts,
        entry.last_revert_time.as_ref(),
        ctx.config.revert_window,
        now,
    );
    if !changing.is_empty() {
        let setting = changing.keys().next().cloned().unwrap_or_default();
        if entry.reverts >= MAX_REVERTS {
            return Err(SyncError::Reverted {
                setting,
                reverts: entry.reverts,
                window_secs: ctx.config.revert_window.as_secs(),
            });
        }
        // The last pass left it in sync at this very IP: someone else changed it since.
        if entry.in_sync
            && entry.dns_server.as_deref() == Some(ip)
            && entry.last_sync_time.is_some()
        {
            entry.reverts += 1;
            entry.last_revert_time = Some(Time(now));
            ctx.event(
                link,
                EventType::Warning,
                "AppServiceReverted",
                format!(
                    "{}: another writer reverted {setting}; re-applying ({} of {MAX_REVERTS})",
                    site.resource_id(),
                    entry.reverts
                ),
            )
            .await;
        }
    }
    let recorded = record_previous(&mut entry.previous, &current, &changing);
    let mut fresh = Some((current, settings));
    if !changing.is_empty() {
        if recorded {
            // Record first, and only then act: the annotation survives a lost status; without it,
            // nothing is changed.
            set_record(records, &entry.resource_id, &entry.previous);
            persist_records(ctx, link, records)
                .await
                .map_err(SyncError::Record)?;
            persist_previous(ctx, link, old, done, entry).await;
            crate::runtime::crash_points::reached("app-service-after-record");
            // Recording took a while: read again, so that what another writer set meanwhile is kept.
            fresh = None;
        }
        let what = changing
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(", ");
        let note = format!("{}: set {what}", site.resource_id());
        if ctx.config.dry_run {
            ctx.event(link, EventType::Normal, "AppServiceUpdated", &note)
                .await;
            entry.in_sync = false;
            entry.message = Some(format!("{DRY_RUN_PREFIX}{note}"));
            return Ok(None);
        }
        if write_fresh(arm, mode, site, &wanted, fresh).await? {
            crate::runtime::crash_points::reached("app-service-after-write");
        }
        entry.last_sync_time = Some(Time(Timestamp::now()));
        ctx.event(link, EventType::Normal, "AppServiceUpdated", note)
            .await;
        // Someone may have set the site property between the look and the write.
        if look && overridden(entry, &mut turn, &arm.get_site_dns(site).await?) {
            return Ok(None);
        }
    }
    entry.dns_server = Some(ip.to_string());
    entry.in_sync = true;
    entry.message = None;
    ctx.metrics.app_service_in_sync(&entry.resource_id);
    turn.confirmed = Some((Instant::now(), state));
    Ok(None)
}

/// Reports an override of the app setting by the site property in `entry`, and remembers in the
/// site's memo when there was none. Returns true when overridden.
fn overridden(entry: &mut AppServiceStatus, memo: &mut SiteMemo, site_dns: &SiteDns) -> bool {
    let overridden = overridden_by_site(entry, site_dns);
    memo.no_site_dns_at = (!overridden).then(Instant::now);
    overridden
}

/// In `AppSettings` mode: when the site's `dnsConfiguration.dnsServers` is set, the app ignores
/// `WEBSITE_DNS_SERVER`. Reports it in `entry` and returns true.
fn overridden_by_site(entry: &mut AppServiceStatus, site_dns: &SiteDns) -> bool {
    if site_dns.dns_servers.is_empty() {
        return false;
    }
    let servers = site_dns.dns_servers.join(",");
    entry.in_sync = false;
    entry.dns_server = Some(servers.clone());
    entry.message = Some(format!(
        "the site property dnsConfiguration.dnsServers ({servers}) takes precedence over {DNS_SERVER_SETTING}, so the app ignores the DNS Service and the operator does not write it (that would only restart the app); clear dnsConfiguration.dnsServers on the site, or set spec.appServices.dnsMode to SiteDnsConfiguration"
    ));
    true
}

/// Writes the `appServices` status with a new previous-values record, before the ARM write.
async fn persist_previous(
    ctx: &Context,
    link: &AppServiceLink,
    old: &[AppServiceStatus],
    done: &[AppServiceStatus],
    entry: &AppServiceStatus,
) {
    let mut list: Vec<AppServiceStatus> = done.to_vec();
    list.push(entry.clone());
    let rest: Vec<AppServiceStatus> = old
        .iter()
        .filter(|e| {
            !list
                .iter()
                .any(|x| same_site(&x.resource_id, &e.resource_id))
        })
        .cloned()
        .collect();
    list.extend(rest);
    if let Err(err) = write_entries(ctx, link, &list).await {
        tracing::warn!(link = %link.name_any(), error = %err, "could not record previous App Service settings");
    }
}

/// Replaces the link's `status.appServices` at once, outside the status write at the end of the
/// reconcile (nothing in dry-run mode).
async fn write_entries(
    ctx: &Context,
    link: &AppServiceLink,
    entries: &[AppServiceStatus],
) -> Result<(), kube::Error> {
    if ctx.config.dry_run {
        return Ok(());
    }
    let patch = json!({"status": {"appServices": entries}});
    Api::<AppServiceLink>::all(ctx.client.clone())
        .patch_status(
            &link.name_any(),
            &ctx.update_params("appservicelink-app-service"),
            &Patch::Merge(&patch),
        )
        .await
        .map(|written| ctx.own.links.record(written))
}

/// Restores (or, with `Retain`, leaves) one App Service the link no longer names.
async fn let_go(
    ctx: &Context,
    link: &AppServiceLink,
    arm: &ArmClient,
    entry: &AppServiceStatus,
) -> Result<(), ArmError> {
    let id = &entry.resource_id;
    ctx.metrics.forget_app_service(id);
    if link.spec.app_services.deletion_policy == DeletionPolicy::Retain || entry.previous.is_empty()
    {
        return Ok(());
    }
    let Some(site) = site_of(id) else {
        return Ok(());
    };
    if ctx.config.dry_run {
        let note = format!("{id}: restore DNS settings to {:?}", entry.previous);
        ctx.event(link, EventType::Normal, "AppServiceRestored", note)
            .await;
        return Ok(());
    }
    // The site's turn, against a sync of another link that takes it over meanwhile.
    let mut turn = arm.site_turn(&site, None).await;
    let restored = restore(arm, &site, &entry.previous).await;
    // Whatever got written, nothing known of the site holds any more.
    *turn = SiteMemo::default();
    drop(turn);
    match restored {
        Ok(true) => {
            ctx.event(
                link,
                EventType::Normal,
                "AppServiceRestored",
                format!("{id}: DNS settings restored to their previous values"),
            )
            .await;
            Ok(())
        }
        Ok(false) | Err(ArmError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Restores every App Service the link changed (the link is being deleted). An error keeps the
/// finalizer, so the restore is retried rather than lost.
pub async fn cleanup(ctx: &Context, link: &AppServiceLink) -> Result<(), Error> {
    let entries = remembered(link);
    if entries.iter().all(|e| e.previous.is_empty())
        || link.spec.app_services.deletion_policy == DeletionPolicy::Retain
    {
        return Ok(());
    }
    let arm = ctx
        .arm
        .as_ref()
        .map_err(|reason| Error::NoAzureAccess(reason.clone()))?;
    for entry in &entries {
        let_go(ctx, link, arm, entry)
            .await
            .map_err(|source| Error::Restore {
                resource_id: entry.resource_id.clone(),
                source,
            })?;
    }
    forget_entries(ctx, link).await;
    Ok(())
}

/// Clears the link's App Service entries once they are restored: the status then says that its App
/// Services no longer use its DNS Service, which another link being deleted at the same time reads.
async fn forget_entries(ctx: &Context, link: &AppServiceLink) {
    if let Err(err) = write_entries(ctx, link, &[]).await {
        tracing::warn!(link = %link.name_any(), error = %err, "could not clear restored App Service entries");
    }
}

/// ARM failures that pass by themselves: throttling, an outage, a server error.
const TRANSIENT_REASONS: [&str; 5] = [
    "Throttled",
    "Unreachable",
    "ArmError",
    "WriteWindow",
    "Superseded",
];

fn transient(err: &ArmError) -> bool {
    TRANSIENT_REASONS.contains(&err.reason())
}

fn summarize(
    entries: &[AppServiceStatus],
    problems: &[(String, String)],
    waiting_for_ip: bool,
) -> DutyStatus {
    let in_sync = entries.iter().filter(|e| e.in_sync).count();
    let summary = format!(
        "{in_sync} of {} App Service(s) in sync (see status.appServices)",
        entries.len()
    );
    if let Some((reason, message)) = problems.first() {
        // Throttling and outages pass; a missing role or site needs a human.
        let message = format!("{summary}; {message}");
        return if TRANSIENT_REASONS.contains(&reason.as_str()) {
            DutyStatus::waiting(types::APP_SERVICES, reason, message)
        } else {
            DutyStatus::blocked(types::APP_SERVICES, reason, message)
        };
    }
    if waiting_for_ip {
        return DutyStatus::waiting(
            types::APP_SERVICES,
            "WaitingForDnsServerIP",
            "waiting for the DNS Service's load balancer IP",
        );
    }
    if in_sync < entries.len() {
        return DutyStatus::blocked(
            types::APP_SERVICES,
            "SiteDnsConfigurationOverrides",
            format!("{summary}; a site's dnsConfiguration.dnsServers overrides the app setting"),
        );
    }
    DutyStatus::ready(types::APP_SERVICES, "InSync", summary)
}

#[cfg(test)]
mod tests;
