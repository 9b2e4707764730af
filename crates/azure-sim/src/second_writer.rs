//! A second writer: another client (Terraform, the portal, a deploy pipeline) that changes a site
//! between someone's read and their write.
//!
//! ARM's app-settings PUT takes no If-Match and replaces the whole set, so the last writer wins
//! and a client that writes back a stale read silently undoes the other writer's change. The sim
//! makes that race deterministic: the edit is applied right after a matching read is answered,
//! under the same lock, so the reader's next request necessarily sees (and may clobber) it.

use crate::store::SiteId;
use serde_json::{Map, Value};
use std::{collections::BTreeMap, fmt, sync::Arc, time::Instant};

/// The read after which a [`SecondWriter`] edits the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOp {
    /// `POST .../config/appsettings/list` (the default).
    ListAppSettings,
    /// `GET .../sites/{name}[/slots/{slot}]`, which carries `properties.dnsConfiguration`.
    GetSite,
}

/// What a second writer may change: the site's app settings and its `dnsConfiguration` (an object
/// holding only the fields that are set; stored as given, without validation).
#[derive(Debug)]
pub struct SiteEdit<'a> {
    pub app_settings: &'a mut BTreeMap<String, String>,
    pub dns_configuration: &'a mut Map<String, Value>,
}

type EditFn = dyn Fn(&mut SiteEdit<'_>) + Send + Sync;

/// An edit another client makes right after a read of `site` is answered, `times` times.
#[derive(Clone)]
pub struct SecondWriter {
    pub site: SiteId,
    pub after: ReadOp,
    /// Only reads made with tokens of this client id trigger it (any client when `None`).
    pub reader: Option<String>,
    pub times: usize,
    edit: Arc<EditFn>,
}

impl fmt::Debug for SecondWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecondWriter")
            .field("site", &self.site)
            .field("after", &self.after)
            .field("reader", &self.reader)
            .field("times", &self.times)
            .finish_non_exhaustive()
    }
}

impl SecondWriter {
    /// Runs `edit` on the site right after its next app-settings list is answered (once).
    pub fn new(site: SiteId, edit: impl Fn(&mut SiteEdit<'_>) + Send + Sync + 'static) -> Self {
        Self {
            site,
            after: ReadOp::ListAppSettings,
            reader: None,
            times: 1,
            edit: Arc::new(edit),
        }
    }

    /// Sets (adds or changes) one app setting.
    pub fn set_app_setting(
        site: SiteId,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let (name, value) = (name.into(), value.into());
        Self::new(site, move |e| {
            e.app_settings.insert(name.clone(), value.clone());
        })
    }

    /// Removes one app setting.
    pub fn remove_app_setting(site: SiteId, name: impl Into<String>) -> Self {
        let name = name.into();
        Self::new(site, move |e| {
            e.app_settings.remove(&name);
        })
    }

    /// Sets (or with `Value::Null` removes) one `dnsConfiguration` field, e.g. `dnsServers`.
    pub fn set_dns_field(site: SiteId, field: impl Into<String>, value: Value) -> Self {
        let field = field.into();
        Self::new(site, move |e| match &value {
            Value::Null => {
                e.dns_configuration.remove(&field);
            }
            v => {
                e.dns_configuration.insert(field.clone(), v.clone());
            }
        })
    }

    /// Fires after this kind of read instead of the app-settings list.
    pub fn after(mut self, read: ReadOp) -> Self {
        self.after = read;
        self
    }

    /// Fires only after reads by this client id (the operator's, say).
    pub fn reader(mut self, client_id: impl Into<String>) -> Self {
        self.reader = Some(client_id.into());
        self
    }

    /// Fires for this many matching reads instead of once.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, site: &SiteId, read: ReadOp, client_id: &str) -> bool {
        self.after == read
            && self.reader.as_deref().is_none_or(|r| r == client_id)
            && same_site(&self.site, site)
    }
}

/// ARM names match case-insensitively.
fn same_site(a: &SiteId, b: &SiteId) -> bool {
    a.subscription_id.eq_ignore_ascii_case(&b.subscription_id)
        && a.resource_group.eq_ignore_ascii_case(&b.resource_group)
        && a.name.eq_ignore_ascii_case(&b.name)
        && match (&a.slot, &b.slot) {
            (None, None) => true,
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        }
}

/// One edit a second writer made, for tests to put in sequence with [`crate::ArmRequest`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondWriterEdit {
    /// When the edit was applied: after the triggering read was answered, before its response
    /// reached the client.
    pub at: Instant,
    pub site: SiteId,
    pub after: ReadOp,
    /// The client whose read triggered it.
    pub reader: String,
    /// The app settings once edited.
    pub app_settings: BTreeMap<String, String>,
    /// The `dnsConfiguration` once edited.
    pub dns_configuration: Map<String, Value>,
}

/// Armed second writers, consulted in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct SecondWriters {
    armed: Vec<SecondWriter>,
}

impl SecondWriters {
    pub fn add(&mut self, w: SecondWriter) {
        if w.times > 0 {
            self.armed.push(w);
        }
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    /// Applies (and uses up one firing of) the first writer matching this answered read.
    pub fn fire(
        &mut self,
        site: &SiteId,
        read: ReadOp,
        client_id: &str,
        edit: &mut SiteEdit<'_>,
    ) -> bool {
        let Some(idx) = self
            .armed
            .iter()
            .position(|w| w.matches(site, read, client_id))
        else {
            return false;
        };
        let w = &mut self.armed[idx];
        (w.edit)(edit);
        w.times -= 1;
        if w.times == 0 {
            self.armed.remove(idx);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_for_matching_reads_only_and_counts_down() {
        let site = SiteId::new("Sub", "RG", "App");
        let mut ws = SecondWriters::default();
        ws.add(
            SecondWriter::set_app_setting(site.clone(), "X", "1")
                .times(2)
                .reader("op"),
        );
        ws.add(
            SecondWriter::set_dns_field(
                site.clone(),
                "dnsServers",
                serde_json::json!(["10.0.0.9"]),
            )
            .after(ReadOp::GetSite),
        );
        let (mut settings, mut dns) = (BTreeMap::new(), Map::new());
        let mut edit = SiteEdit {
            app_settings: &mut settings,
            dns_configuration: &mut dns,
        };
        let lower = SiteId::new("sub", "rg", "app");
        assert!(!ws.fire(&lower, ReadOp::ListAppSettings, "other", &mut edit));
        assert!(!ws.fire(
            &lower.with_slot("s"),
            ReadOp::ListAppSettings,
            "op",
            &mut edit
        ));
        assert!(ws.fire(&lower, ReadOp::ListAppSettings, "op", &mut edit));
        assert!(ws.fire(&lower, ReadOp::ListAppSettings, "op", &mut edit));
        assert!(
            !ws.fire(&lower, ReadOp::ListAppSettings, "op", &mut edit),
            "used up"
        );
        assert!(ws.fire(&lower, ReadOp::GetSite, "anyone", &mut edit));
        assert_eq!(settings["X"], "1");
        assert_eq!(dns["dnsServers"], serde_json::json!(["10.0.0.9"]));
    }
}
