//! The Microsoft.Web operations: list/replace app settings, get/patch a site, for sites and slots.

use super::{error::Reply, path::ArmPath};
use crate::{
    second_writer::{ReadOp, SecondWriterEdit, SiteEdit},
    state::{lock, Shared},
    store::{Missing, SiteRecord},
};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use std::{collections::BTreeMap, net::IpAddr};

/// `POST .../config/appsettings/list`. `reader` is the caller's client id.
pub(crate) fn list_app_settings(
    shared: &Shared,
    p: &ArmPath<'_>,
    reader: &str,
) -> Result<Value, Reply> {
    let mut store = lock(&shared.store);
    let rec = resolve(&mut store, p)?;
    let answer = app_settings_resource(&shared.location, rec);
    second_writer(shared, rec, ReadOp::ListAppSettings, reader);
    Ok(answer)
}

/// `PUT .../config/appsettings`: replaces the whole set. There is no ETag and no merge, which is
/// why clients must read, merge their own keys and write back.
pub(crate) fn replace_app_settings(
    shared: &Shared,
    p: &ArmPath<'_>,
    body: &Value,
) -> Result<Value, Reply> {
    let settings = parse_app_settings(body)?;
    let mut store = lock(&shared.store);
    let rec = resolve(&mut store, p)?;
    rec.app_settings = settings;
    Ok(app_settings_resource(&shared.location, rec))
}

/// `GET .../sites/{name}[/slots/{slot}]`. `reader` is the caller's client id.
pub(crate) fn get_site(shared: &Shared, p: &ArmPath<'_>, reader: &str) -> Result<Value, Reply> {
    let mut store = lock(&shared.store);
    let rec = resolve(&mut store, p)?;
    let answer = site_resource(&shared.location, rec);
    second_writer(shared, rec, ReadOp::GetSite, reader);
    Ok(answer)
}

/// Lets an armed second writer edit the site right after a read of it was answered, still under
/// the store lock, so the reader's next request finds the edit in place.
fn second_writer(shared: &Shared, rec: &mut SiteRecord, read: ReadOp, reader: &str) {
    let fired = lock(&shared.second_writers).fire(
        &rec.id,
        read,
        reader,
        &mut SiteEdit {
            app_settings: &mut rec.app_settings,
            dns_configuration: &mut rec.dns,
        },
    );
    if fired {
        tracing::debug!(site = %rec.id, ?read, "second writer edited the site");
        lock(&shared.log).edits.push(SecondWriterEdit {
            at: std::time::Instant::now(),
            site: rec.id.clone(),
            after: read,
            reader: reader.to_owned(),
            app_settings: rec.app_settings.clone(),
            dns_configuration: rec.dns.clone(),
        });
    }
}

/// `PATCH .../sites/{name}[/slots/{slot}]`: merges `properties.dnsConfiguration`. Other properties
/// are accepted and ignored (the simulator models nothing else that is writable).
pub(crate) fn patch_site(shared: &Shared, p: &ArmPath<'_>, body: &Value) -> Result<Value, Reply> {
    let Some(body) = body.as_object() else {
        return Err(Reply::rp_bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let dns_patch = match get_ci(body, "properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(props)) => match get_ci(props, "dnsConfiguration") {
            None | Some(Value::Null) => None,
            Some(Value::Object(dns)) => Some(validate_dns_patch(dns)?),
            Some(_) => {
                return Err(Reply::rp_bad_request(
                    "The parameter properties.dnsConfiguration has an invalid value.",
                ))
            }
        },
        Some(_) => {
            return Err(Reply::rp_bad_request(
                "The parameter properties has an invalid value.",
            ))
        }
    };
    let mut store = lock(&shared.store);
    let rec = resolve(&mut store, p)?;
    if let Some(patch) = dns_patch {
        for (key, value) in patch {
            match value {
                Value::Null => rec.dns.remove(key),
                v => rec.dns.insert(key.to_owned(), v),
            };
        }
    }
    Ok(site_resource(&shared.location, rec))
}

fn resolve<'s>(
    store: &'s mut crate::store::Store,
    p: &ArmPath<'_>,
) -> Result<&'s mut SiteRecord, Reply> {
    store
        .resolve(p.subscription, p.resource_group, p.name, p.slot)
        .map_err(|missing| match missing {
            Missing::Subscription => Reply::arm(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{}' could not be found.", p.subscription),
            ),
            Missing::ResourceGroup => Reply::arm(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{}' could not be found.", p.resource_group),
            ),
            Missing::Site => not_found(&format!("Microsoft.Web/sites/{}", p.name), p),
            Missing::Slot => not_found(
                &format!(
                    "Microsoft.Web/sites/{}/slots/{}",
                    p.name,
                    p.slot.unwrap_or_default()
                ),
                p,
            ),
        })
}

fn not_found(resource: &str, p: &ArmPath<'_>) -> Reply {
    Reply::arm(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{resource}' under resource group '{}' was not found. For more details please \
             go to https://aka.ms/ARMResourceNotFoundFix",
            p.resource_group
        ),
    )
}

/// ARM deserializes JSON property names case-insensitively; so does the simulator.
fn get_ci<'v>(map: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn parse_app_settings(body: &Value) -> Result<BTreeMap<String, String>, Reply> {
    let Some(body) = body.as_object() else {
        return Err(Reply::rp_bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let Some(props) = get_ci(body, "properties") else {
        return Err(Reply::rp_bad_request(
            "The parameter properties is required (azure-sim refuses to treat a missing set as empty).",
        ));
    };
    let Some(props) = props.as_object() else {
        return Err(Reply::rp_bad_request(
            "The parameter properties has an invalid value.",
        ));
    };
    props
        .iter()
        .map(|(k, v)| match v {
            _ if k.is_empty() => Err(Reply::rp_bad_request("App setting names must not be empty.")),
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(Reply::rp_bad_request(format!(
                "The parameter properties.{k} has an invalid value: app setting values must be strings."
            ))),
        })
        .collect()
}

/// Canonical names of the writable `dnsConfiguration` fields (`dnsLegacySortOrder` is read-only).
const DNS_SERVERS: &str = "dnsServers";
const DNS_ALT_SERVER: &str = "dnsAltServer";
/// (name, minimum, maximum), the ranges App Service documents for the matching WEBSITE_DNS_* settings.
const DNS_INTEGERS: [(&str, i64, i64); 3] = [
    ("dnsRetryAttemptTimeout", 1, 30),
    ("dnsRetryAttemptCount", 1, 5),
    ("dnsMaxCacheTimeout", 0, 60),
];
const MAX_DNS_SERVERS: usize = 5;

/// Validates a `dnsConfiguration` patch and returns `(canonical field, value)` pairs; a `null`
/// value removes the field.
fn validate_dns_patch(dns: &Map<String, Value>) -> Result<Vec<(&'static str, Value)>, Reply> {
    let invalid = |field: &str, why: &str| {
        Reply::rp_bad_request(format!(
            "The parameter properties.dnsConfiguration.{field} has an invalid value. {why}"
        ))
    };
    let mut out = Vec::new();
    if let Some(v) = get_ci(dns, DNS_SERVERS) {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                if items.len() > MAX_DNS_SERVERS {
                    return Err(invalid(
                        DNS_SERVERS,
                        &format!(
                            "At most {MAX_DNS_SERVERS} DNS servers are allowed, got {}.",
                            items.len()
                        ),
                    ));
                }
                if let Some(bad) = items
                    .iter()
                    .find(|i| i.as_str().and_then(|s| s.parse::<IpAddr>().ok()).is_none())
                {
                    return Err(invalid(
                        DNS_SERVERS,
                        &format!("{bad} is not an IP address."),
                    ));
                }
            }
            _ => return Err(invalid(DNS_SERVERS, "Expected an array of IP addresses.")),
        }
        out.push((DNS_SERVERS, v.clone()));
    }
    if let Some(v) = get_ci(dns, DNS_ALT_SERVER) {
        if !(v.is_null() || v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok())) {
            return Err(invalid(DNS_ALT_SERVER, "Expected an IP address."));
        }
        out.push((DNS_ALT_SERVER, v.clone()));
    }
    for (field, min, max) in DNS_INTEGERS {
        if let Some(v) = get_ci(dns, field) {
            if !(v.is_null() || v.as_i64().is_some_and(|n| (min..=max).contains(&n))) {
                return Err(invalid(
                    field,
                    &format!("Expected an integer from {min} to {max}."),
                ));
            }
            out.push((field, v.clone()));
        }
    }
    Ok(out)
}

fn host_name(rec: &SiteRecord) -> String {
    match &rec.id.slot {
        Some(slot) => format!("{}-{}.azurewebsites.net", rec.id.name, slot).to_ascii_lowercase(),
        None => format!("{}.azurewebsites.net", rec.id.name).to_ascii_lowercase(),
    }
}

/// The config resource returned by both list and replace.
fn app_settings_resource(location: &str, rec: &SiteRecord) -> Value {
    let ty = if rec.id.slot.is_some() {
        "Microsoft.Web/sites/slots/config"
    } else {
        "Microsoft.Web/sites/config"
    };
    json!({
        "id": format!("{}/config/appsettings", rec.id.resource_id()),
        "name": "appsettings",
        "type": ty,
        "location": location,
        "properties": rec.app_settings,
    })
}

/// A trimmed but realistic Linux web app resource.
fn site_resource(location: &str, rec: &SiteRecord) -> Value {
    let id = &rec.id;
    let (name, ty) = match &id.slot {
        Some(slot) => (format!("{}/{slot}", id.name), "Microsoft.Web/sites/slots"),
        None => (id.name.clone(), "Microsoft.Web/sites"),
    };
    let host = host_name(rec);
    let scm_host = host.replacen(".azurewebsites.net", ".scm.azurewebsites.net", 1);
    json!({
        "id": id.resource_id(),
        "name": name,
        "type": ty,
        "kind": "app,linux",
        "location": location,
        "tags": {},
        "properties": {
            "name": name,
            "state": "Running",
            "hostNames": [host],
            "enabledHostNames": [host, scm_host],
            "enabled": true,
            "availabilityState": "Normal",
            "usageState": "Normal",
            "defaultHostName": host,
            "resourceGroup": id.resource_group,
            "serverFarmId": format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/serverfarms/{}-plan",
                id.subscription_id, id.resource_group, id.name
            ),
            "reserved": true,
            "httpsOnly": true,
            "clientAffinityEnabled": false,
            "publicNetworkAccess": "Enabled",
            "vnetRouteAllEnabled": true,
            "dnsConfiguration": rec.dns,
            "siteConfig": {
                "numberOfWorkers": 1,
                "linuxFxVersion": "DOCKER|mcr.microsoft.com/appsvc/staticsite:latest",
                "alwaysOn": false,
                "http20Enabled": false,
                "minTlsVersion": "1.2",
                "ftpsState": "FtpsOnly",
                "appSettings": null
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(v: Value) -> Result<Vec<(&'static str, Value)>, Reply> {
        validate_dns_patch(v.as_object().unwrap())
    }

    #[test]
    fn dns_validation() {
        let ok = dns(json!({"DnsServers": ["10.0.0.1"], "dnsAltServer": null, "dnsRetryAttemptCount": 5, "unknown": 1}))
            .unwrap();
        assert_eq!(
            ok,
            vec![
                (DNS_SERVERS, json!(["10.0.0.1"])),
                (DNS_ALT_SERVER, Value::Null),
                ("dnsRetryAttemptCount", json!(5))
            ]
        );
        assert!(dns(json!({"dnsServers": vec!["1.1.1.1"; 6]})).is_err());
        assert!(dns(json!({"dnsServers": ["not-an-ip"]})).is_err());
        assert!(dns(json!({"dnsServers": "10.0.0.1"})).is_err());
        assert!(dns(json!({"dnsRetryAttemptCount": 6})).is_err());
        assert!(dns(json!({"dnsMaxCacheTimeout": "30"})).is_err());
        assert!(dns(json!({"dnsMaxCacheTimeout": 0})).is_ok());
    }

    #[test]
    fn app_settings_must_be_strings() {
        assert!(parse_app_settings(&json!({"properties": {"A": "1"}})).is_ok());
        assert!(parse_app_settings(&json!({"properties": {"A": 1}})).is_err());
        assert!(parse_app_settings(&json!({"kind": "x"})).is_err());
        assert!(parse_app_settings(&json!([])).is_err());
    }
}
