//! What every duty is given: the Kubernetes client and caches, the ARM client, the metrics and
//! readiness, and the controller's settings. It sits below the duties and the pipeline and knows
//! neither.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::azure::arm::ArmClient;
use crate::crd::{AppServiceLink, AppServiceLinkStatus};
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;
use crate::validation;

/// How Events mark a change that dry-run mode did not make.
pub const DRY_RUN_PREFIX: &str = "dry run, not applied: ";

/// Settings of a running controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the CoreDNS Deployment in `kube-system`.
    pub coredns_deployment: String,
    /// Dedicated mode: the operator's own CoreDNS serves the zones, and nothing in `kube-system` is
    /// written. `None`: the cluster's CoreDNS, through `coredns-custom`.
    pub dedicated_dns: Option<DedicatedDns>,
    /// Roll CoreDNS when the override changes, instead of waiting for its `reload` plugin.
    pub restart_coredns: bool,
    /// The cluster's DNS domain, which no zone may be, or be above or below, and which the
    /// dedicated CoreDNS's `kubernetes` plugin serves.
    pub cluster_domain: String,
    /// How often every link is reconciled even when nothing changed (drift repair).
    pub resync: Duration,
    /// Reverts of a conversion further apart than this do not add up towards the limit.
    pub revert_window: Duration,
    /// An App Service is written at most once per this window when its DNS server keeps changing
    /// (every write restarts the app); the last value wins.
    pub app_service_write_window: Duration,
    /// Ask the DNS Service for every linked Service's name (condition `NamesResolve`, part of
    /// `Ready`).
    pub check_names: bool,
    /// Change nothing: Kubernetes writes go out with `dryRun=All`, ARM writes are not sent, and
    /// every intended change is logged and recorded as an Event.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            coredns_deployment: "coredns".into(),
            dedicated_dns: None,
            restart_coredns: true,
            cluster_domain: validation::DEFAULT_CLUSTER_DOMAIN.into(),
            resync: Duration::from_secs(300),
            revert_window: Duration::from_secs(3600),
            app_service_write_window: Duration::from_secs(10),
            check_names: true,
            dry_run: false,
        }
    }
}

/// Where the dedicated CoreDNS runs, and which image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedicatedDns {
    /// Its namespace (the operator's own), also the DNS Service's.
    pub namespace: String,
    /// Its container image.
    pub image: String,
}

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Controller settings.
    pub config: Config,
    /// Every link.
    pub links: Store<AppServiceLink>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every Namespace (for `namespaceSelector`).
    pub namespaces: Store<Namespace>,
    /// The ARM client, or why Azure access is not configured.
    pub arm: Result<ArmClient, String>,
    /// Reconcile and App Service metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness, including whether the caches have synced.
    pub health: Health,
    /// Publishes the Events recorded on links.
    pub recorder: Recorder,
}

impl Context {
    /// Records a Kubernetes Event on the link. Failing to record one is logged, never fatal.
    pub async fn event(
        &self,
        link: &AppServiceLink,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) {
        let mut note = note.into();
        if self.config.dry_run && type_ == EventType::Normal {
            note = format!("{DRY_RUN_PREFIX}{note}");
        }
        info!(link = %link.name_any(), reason, note, dry_run = self.config.dry_run, "event");
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &link.object_ref(&())).await {
            warn!(link = %link.name_any(), reason, error = %err, "could not record event");
        }
    }

    /// Server-side apply parameters for `manager`, taking over conflicting fields (dry-run aware).
    pub fn apply_params(&self, manager: &str) -> PatchParams {
        let mut params = PatchParams::apply(manager).force();
        params.dry_run = self.config.dry_run;
        params
    }

    /// Merge-patch parameters for `manager` (dry-run aware).
    pub fn update_params(&self, manager: &str) -> PatchParams {
        PatchParams {
            field_manager: Some(manager.into()),
            dry_run: self.config.dry_run,
            ..Default::default()
        }
    }

    /// Delete parameters (dry-run aware).
    pub fn delete_params(&self) -> DeleteParams {
        DeleteParams {
            dry_run: self.config.dry_run,
            ..Default::default()
        }
    }

    /// Namespace of the DNS Service: `kube-system`, where the cluster's CoreDNS runs, or the
    /// dedicated CoreDNS's.
    pub fn dns_namespace(&self) -> &str {
        self.config
            .dedicated_dns
            .as_ref()
            .map_or("kube-system", |d| d.namespace.as_str())
    }

    /// Links that are not being deleted.
    pub fn live_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links: Vec<_> = self
            .links
            .state()
            .into_iter()
            .filter(|l| l.meta().deletion_timestamp.is_none())
            .collect();
        links.sort_by_key(|l| l.name_any());
        links
    }

    /// Live links whose spec passes validation: the only ones whose wishes the duties act on.
    pub fn valid_links(&self) -> Vec<Arc<AppServiceLink>> {
        let mut links = self.live_links();
        links.retain(|l| validation::validate(&l.spec, &self.config.cluster_domain).is_empty());
        links
    }

    /// The labels of a namespace, as the cache last saw them (none when it is not there).
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }
}

/// The status a link reported last time, if it describes the current generation.
pub fn current_status(link: &AppServiceLink) -> Option<&AppServiceLinkStatus> {
    link.status
        .as_ref()
        .filter(|s| s.observed_generation == link.meta().generation)
}
