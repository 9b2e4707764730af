//! The simulated App Service sites (and slots), their app settings and DNS configuration.
//!
//! ARM treats subscription ids, resource group names and resource names case-insensitively, so
//! records are keyed by the lowercased names while keeping the casing they were created with for ids
//! in responses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::{collections::BTreeMap, fmt};

/// Identifies a web app, or one of its deployment slots when `slot` is set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiteId {
    pub subscription_id: String,
    pub resource_group: String,
    pub name: String,
    pub slot: Option<String>,
}

impl SiteId {
    /// A production site (no slot).
    pub fn new(
        subscription_id: impl Into<String>,
        resource_group: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            name: name.into(),
            slot: None,
        }
    }

    /// The same site's deployment slot `slot`.
    pub fn with_slot(&self, slot: impl Into<String>) -> Self {
        Self {
            slot: Some(slot.into()),
            ..self.clone()
        }
    }

    /// The production site this slot belongs to (itself when it is not a slot).
    pub fn parent(&self) -> Self {
        Self {
            slot: None,
            ..self.clone()
        }
    }

    /// The ARM resource id, e.g. `/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/staging`.
    pub fn resource_id(&self) -> String {
        let mut id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}",
            self.subscription_id, self.resource_group, self.name
        );
        if let Some(slot) = &self.slot {
            id.push_str("/slots/");
            id.push_str(slot);
        }
        id
    }

    fn key(&self) -> Key {
        Key::new(
            &self.subscription_id,
            &self.resource_group,
            &self.name,
            self.slot.as_deref(),
        )
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_id())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    subscription: String,
    resource_group: String,
    name: String,
    slot: Option<String>,
}

impl Key {
    fn new(subscription: &str, resource_group: &str, name: &str, slot: Option<&str>) -> Self {
        Self {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: resource_group.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
            slot: slot.map(str::to_ascii_lowercase),
        }
    }
}

/// One site or slot.
#[derive(Clone, Debug)]
pub(crate) struct SiteRecord {
    /// With the casing the site was created with.
    pub id: SiteId,
    pub app_settings: BTreeMap<String, String>,
    /// `properties.dnsConfiguration`, holding only the fields that were set.
    pub dns: Map<String, Value>,
}

/// Why a lookup by request path failed; each maps to a distinct ARM error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    Subscription,
    ResourceGroup,
    Site,
    Slot,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    sites: BTreeMap<Key, SiteRecord>,
}

impl Store {
    /// Creates (or recreates from scratch) a site or slot. A slot's production site is created too
    /// when missing, since ARM cannot hold a slot without its parent.
    pub fn add(&mut self, id: SiteId, app_settings: BTreeMap<String, String>) {
        if id.slot.is_some() {
            let parent = id.parent();
            self.sites
                .entry(parent.key())
                .or_insert_with(|| SiteRecord {
                    id: parent,
                    app_settings: BTreeMap::new(),
                    dns: Map::new(),
                });
        }
        self.sites.insert(
            id.key(),
            SiteRecord {
                id,
                app_settings,
                dns: Map::new(),
            },
        );
    }

    pub fn get(&self, id: &SiteId) -> Option<&SiteRecord> {
        self.sites.get(&id.key())
    }

    pub fn get_mut(&mut self, id: &SiteId) -> Option<&mut SiteRecord> {
        self.sites.get_mut(&id.key())
    }

    /// Resolves the names taken from a request path, reporting the outermost missing scope the
    /// way ARM does (subscription, then resource group, then site, then slot).
    pub fn resolve(
        &mut self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        slot: Option<&str>,
    ) -> Result<&mut SiteRecord, Missing> {
        let want = Key::new(subscription, resource_group, name, slot);
        if !self
            .sites
            .keys()
            .any(|k| k.subscription == want.subscription)
        {
            return Err(Missing::Subscription);
        }
        if !self
            .sites
            .keys()
            .any(|k| k.subscription == want.subscription && k.resource_group == want.resource_group)
        {
            return Err(Missing::ResourceGroup);
        }
        if slot.is_some()
            && !self.sites.contains_key(&Key {
                slot: None,
                ..want.clone()
            })
        {
            return Err(Missing::Site);
        }
        let missing = if slot.is_some() {
            Missing::Slot
        } else {
            Missing::Site
        };
        self.sites.get_mut(&want).ok_or(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_report_the_outermost_missing_scope() {
        let mut store = Store::default();
        let site = SiteId::new("Sub-1", "RG-Web", "Contoso");
        store.add(site.with_slot("Staging"), BTreeMap::new());

        let rec = store.resolve("sub-1", "rg-web", "contoso", None).unwrap();
        assert_eq!(rec.id, site, "parent created with its original casing");
        assert!(store
            .resolve("SUB-1", "rg-WEB", "CONTOSO", Some("staging"))
            .is_ok());
        assert_eq!(
            store
                .resolve("other", "rg-web", "contoso", None)
                .unwrap_err(),
            Missing::Subscription
        );
        assert_eq!(
            store.resolve("sub-1", "rg-x", "contoso", None).unwrap_err(),
            Missing::ResourceGroup
        );
        assert_eq!(
            store
                .resolve("sub-1", "rg-web", "nope", Some("staging"))
                .unwrap_err(),
            Missing::Site
        );
        assert_eq!(
            store
                .resolve("sub-1", "rg-web", "contoso", Some("prod"))
                .unwrap_err(),
            Missing::Slot
        );
    }

    #[test]
    fn resource_ids() {
        let site = SiteId::new("s", "rg", "app");
        assert_eq!(
            site.with_slot("staging").resource_id(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/staging"
        );
        assert_eq!(site.with_slot("x").parent(), site);
    }
}
