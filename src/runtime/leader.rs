//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles and writes.
//!
//! The Lease itself is managed by `kube-lease-manager`; this module adds what a controller needs
//! around it: it watches the Lease so a standby takes over as soon as a leader releases it (the
//! manager alone would wait for the old expiry), and it notices the moment this replica stops holding
//! it, including when renewals fail until the Lease expires.
//!
//! Losing the Lease ends the process with an error rather than going back to standby: the
//! controller's caches, queues and in-flight reconciles are dropped at once, nothing of the old term
//! can keep writing, and Kubernetes restarts the container as a fresh standby.

use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;

/// Pause before retrying a failed Lease call.
const RETRY: Duration = Duration::from_millis(500);
/// Longest wait for the apiserver when a leader checks whether it still holds the Lease.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the Lease is and who this replica is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// How long the Lease stays valid after a renewal; a standby takes over after that when the
    /// leader dies. At least 2 s.
    pub lease_seconds: u64,
    /// Unique among the replicas; see [`identity`].
    pub identity: String,
}

/// Leader election failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be created or read.
    #[error("leader Lease {lease}: {source}")]
    Lease {
        /// `namespace/name`.
        lease: String,
        /// The manager's error.
        #[source]
        source: LeaseManagerError,
    },
    /// This replica no longer holds the Lease; another may already be reconciling.
    #[error("lost the leader Lease {lease}: {reason}")]
    Lost {
        /// `namespace/name`.
        lease: String,
        /// What showed it.
        reason: String,
    },
}

/// This replica's identity: `POD_NAME` (from the Downward API), else the hostname with a random
/// suffix, so two processes on one host differ.
pub fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "appservicelink".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Runs `controller` only while this replica holds the Lease, until it finishes (graceful
/// shutdown) or the Lease is lost. On a shutdown the Lease is released once the controller has
/// finished its in-flight reconciles, so a standby takes over at once.
///
/// The outer error is the election's; the inner result is the controller's own, when it ran.
pub async fn run<E>(
    client: Client,
    config: Config,
    metrics: &Metrics,
    health: &Health,
    shutdown: &CancellationToken,
    controller: impl Future<Output = Result<(), E>>,
) -> Result<Result<(), E>, Error> {
    let mut election = Election::start(client, config, health.clone()).await?;
    health.standby();
    if !election.acquire(shutdown).await {
        // A lock taken at the very moment of the shutdown must not wait out its expiry. (A no-op
        // when another replica holds the Lease.)
        if let Err(err) = election.manager.release().await {
            warn!(error = %err, "could not check the leader Lease on shutdown");
        }
        return Ok(Ok(()));
    }
    metrics.set_leader(true);
    health.active();
    let result = tokio::select! {
        result = controller => result,
        lost = election.hold() => {
            metrics.set_leader(false);
            return Err(lost);
        }
    };
    metrics.set_leader(false);
    election.release().await;
    Ok(result)
}

/// What this replica last saw of the Lease.
#[derive(Debug, Clone, Default, PartialEq)]
struct Observed {
    holder: Option<String>,
    /// `renewTime + leaseDurationSeconds`.
    expires: Option<SystemTime>,
}

impl Observed {
    /// Held by `identity` and not expired.
    fn held_by(&self, identity: &str) -> bool {
        self.holder.as_deref() == Some(identity)
            && self.expires.is_some_and(|e| e > SystemTime::now())
    }

    fn of(lease: Option<&Lease>) -> Self {
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return Self::default();
        };
        let expires = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => Some(
                SystemTime::from(renewed.0)
                    + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            ),
            _ => None,
        };
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            expires,
        }
    }
}

/// One replica's part in the election.
struct Election {
    client: Client,
    config: Config,
    manager: LeaseManager,
    observed: watch::Receiver<Observed>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for Election {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl Election {
    /// Creates the Lease when it is missing, and starts watching it.
    async fn start(client: Client, config: Config, health: Health) -> Result<Self, Error> {
        let manager = build(&client, &config).await?;
        let (sender, observed) = watch::channel(Observed::default());
        let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
        let name = config.lease_name.clone();
        let watch = tokio::spawn(async move {
            let mut lease = watcher::watch_object(api, &name).default_backoff().boxed();
            while let Some(event) = lease.next().await {
                match event {
                    Ok(lease) => {
                        health.lease_visible(Ok(()));
                        sender.send_replace(Observed::of(lease.as_ref()));
                    }
                    Err(err) => {
                        warn!(error = %err, "cannot watch the leader Lease");
                        health.lease_visible(Err(err.to_string()));
                    }
                }
            }
        });
        info!(identity = %config.identity, lease = %lease_name(&config), "leader election started");
        Ok(Self {
            client,
            config,
            manager,
            observed,
            watch,
        })
    }

    /// Waits until this replica holds the Lease: true then, false when `shutdown` came first.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        enum Step {
            Shutdown,
            Changed(Result<bool, LeaseManagerError>),
            Released,
        }
        let mut observed = self.observed.clone();
        info!(identity = %self.config.identity, "standby: waiting for the leader Lease");
        loop {
            let step = tokio::select! {
                _ = shutdown.cancelled() => Step::Shutdown,
                changed = self.manager.changed() => Step::Changed(changed),
                () = released(&mut observed) => Step::Released,
            };
            match step {
                Step::Shutdown => return false,
                Step::Changed(Ok(true)) => {
                    info!(identity = %self.config.identity, lease = %lease_name(&self.config), "acquired the leader Lease");
                    return true;
                }
                Step::Changed(Ok(false)) => {}
                Step::Changed(Err(err)) => {
                    warn!(error = %err, "cannot take part in leader election; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                    // A fresh manager recreates a deleted Lease.
                    self.rebuild().await;
                }
                // The manager would sleep until the old holder's expiry; a fresh one reads the Lease now.
                Step::Released => self.rebuild().await,
            }
        }
    }

    /// Keeps the Lease renewed while this replica holds it; returns only once it is lost.
    async fn hold(&self) -> Error {
        let lost = |reason: String| Error::Lost {
            lease: lease_name(&self.config),
            reason,
        };
        let renew = async {
            loop {
                match self.manager.changed().await {
                    Ok(true) => {}
                    Ok(false) => return "another replica took it over".to_string(),
                    Err(err) => {
                        warn!(error = %err, "could not renew the leader Lease; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        };
        tokio::pin!(renew);
        let identity = self.config.identity.as_str();
        let mut observed = self.observed.clone();
        let mut now = observed.borrow_and_update().clone();
        // Until this replica's own renewal is seen, the acquisition bounds the term.
        let mut expires = SystemTime::now() + Duration::from_secs(self.config.lease_seconds);
        let mut seen_holding = false;
        loop {
            match now.holder {
                Some(holder) if holder == identity => {
                    seen_holding = true;
                    expires = now.expires.unwrap_or(expires);
                }
                // Events from before the acquisition still name the previous holder.
                other if seen_holding => return lost(taken(other)),
                _ => {}
            }
            // From the expiry on, a standby may take the Lease: stop before anything else is written.
            let remaining = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            now = tokio::select! {
                reason = &mut renew => return lost(reason),
                changed = observed.changed() => {
                    if changed.is_err() {
                        return lost("its watch stopped".into());
                    }
                    observed.borrow_and_update().clone()
                }
                // The watch may lag or be reconnecting: ask the apiserver before giving up.
                () = tokio::time::sleep(remaining) => match self.read().await {
                    Ok(lease) if lease.held_by(identity) => lease,
                    Ok(lease) if lease.holder.as_deref().is_some_and(|h| h != identity) => {
                        return lost(taken(lease.holder))
                    }
                    Ok(_) => return lost("it expired before a renewal succeeded".into()),
                    Err(err) => {
                        return lost(format!("no renewal could be confirmed before it expired: {err}"))
                    }
                },
            };
        }
    }

    /// The Lease as the apiserver has it now, bounded in time: a leader must not wait past its
    /// term for an answer.
    async fn read(&self) -> Result<Observed, String> {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.config.namespace);
        match tokio::time::timeout(READ_TIMEOUT, api.get_opt(&self.config.lease_name)).await {
            Ok(Ok(lease)) => Ok(Observed::of(lease.as_ref())),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("the apiserver did not answer in time".into()),
        }
    }

    /// Gives the held Lease up. Failing is logged: the Lease then expires.
    async fn release(&self) {
        match self.manager.release().await {
            Ok(()) => {
                info!(identity = %self.config.identity, lease = %lease_name(&self.config), "released the leader Lease")
            }
            Err(err) => {
                warn!(error = %err, "could not release the leader Lease; a standby takes over when it expires")
            }
        }
    }

    async fn rebuild(&mut self) {
        match build(&self.client, &self.config).await {
            Ok(manager) => self.manager = manager,
            Err(err) => warn!(error = %err, "cannot read the leader Lease; retrying"),
        }
    }
}

/// A manager for the Lease, created when missing. It renews a held Lease a third of its duration
/// before expiry.
async fn build(client: &Client, config: &Config) -> Result<LeaseManager, Error> {
    LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_field_manager(field_manager(&config.identity))
        .with_duration(config.lease_seconds)
        .with_grace((config.lease_seconds / 3).max(1))
        .build()
        .await
        .map_err(|source| Error::Lease {
            lease: lease_name(config),
            source,
        })
}

/// The field manager of this replica's Lease writes; one per replica, so that server-side apply
/// refuses a second holder.
pub fn field_manager(identity: &str) -> String {
    // The apiserver refuses field managers longer than 128 characters.
    format!("appservicelink-leader-{identity}")
        .chars()
        .take(128)
        .collect()
}

/// Why a Lease that names `holder` (or nobody) is no longer this replica's.
fn taken(holder: Option<String>) -> String {
    match holder {
        Some(holder) => format!("it is now held by {holder}"),
        None => "it was released or deleted".into(),
    }
}

/// Resolves when the Lease is seen without a holder.
async fn released(observed: &mut watch::Receiver<Observed>) {
    loop {
        if observed.changed().await.is_err() {
            return std::future::pending().await;
        }
        if observed.borrow_and_update().holder.is_none() {
            return;
        }
    }
}

fn lease_name(config: &Config) -> String {
    format!("{}/{}", config.namespace, config.lease_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_observed_expiry_is_the_renewal_plus_the_duration() {
        let renewed: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        };
        let observed = Observed::of(Some(&lease));
        assert_eq!(observed.holder.as_deref(), Some("a"));
        assert_eq!(
            observed.expires,
            Some(SystemTime::from(renewed) + Duration::from_secs(15))
        );
    }

    #[test]
    fn a_lease_is_held_by_its_holder_until_it_expires() {
        let observed = |expires: SystemTime| Observed {
            holder: Some("a".into()),
            expires: Some(expires),
        };
        let later = SystemTime::now() + Duration::from_secs(60);
        let earlier = SystemTime::now() - Duration::from_secs(1);
        assert!(observed(later).held_by("a"));
        assert!(!observed(later).held_by("b"));
        assert!(!observed(earlier).held_by("a"));
        assert!(!Observed::default().held_by("a"));
    }

    #[test]
    fn a_released_or_missing_lease_has_no_holder() {
        let released = Lease {
            spec: Some(LeaseSpec::default()),
            ..Default::default()
        };
        assert_eq!(Observed::of(Some(&released)), Observed::default());
        assert_eq!(Observed::of(None), Observed::default());
    }

    #[test]
    fn identities_differ_between_processes_on_one_host() {
        if std::env::var_os("POD_NAME").is_none() {
            assert_ne!(identity(), identity());
        }
    }
}
