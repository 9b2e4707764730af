//! What `/readyz` reports: where this replica is in its life, and why it is not ready yet.
//!
//! A replica is ready when it does its part: the one running the controller once its caches have
//! synced (it then acts on a complete view of the cluster), a standby while it can see the leader
//! Lease and so can take over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kube::runtime::watcher;

/// Shared readiness of this replica; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<State>>, Arc<tokio::sync::watch::Sender<bool>>);

#[derive(Debug, Default)]
struct State {
    role: Role,
    caches_synced: bool,
    /// Why the leader Lease cannot be read, if it cannot.
    lease_error: Option<String>,
    stopping: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Role {
    #[default]
    Starting,
    Standby,
    Active,
}

impl Health {
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.0.lock().expect("health state"));
    }

    /// This replica waits for the leader Lease.
    pub fn standby(&self) {
        self.update(|s| s.role = Role::Standby);
    }

    /// This replica runs the controller (it holds the Lease, or leader election is off).
    pub fn active(&self) {
        self.update(|s| s.role = Role::Active);
    }

    /// Tracks `count` caches; once each has listed completely, the caches count as synced.
    pub fn caches(&self, count: usize) -> CacheSync {
        CacheSync {
            health: self.clone(),
            remaining: Arc::new(AtomicUsize::new(count)),
        }
    }

    /// Resolves once every tracked cache has listed completely. Any number of tasks may wait.
    pub async fn caches_synced(&self) {
        let mut synced = self.1.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = synced.wait_for(|done| *done).await;
    }

    /// Whether the leader Lease can be read (`Err` says why not).
    pub fn lease_visible(&self, visible: Result<(), String>) {
        self.update(|s| s.lease_error = visible.err());
    }

    /// A shutdown has begun.
    pub fn stopping(&self) {
        self.update(|s| s.stopping = true);
    }

    /// `Ok` with what this replica does, or `Err` with why it is not ready.
    pub fn readiness(&self) -> Result<&'static str, String> {
        let s = self.0.lock().expect("health state");
        if s.stopping {
            return Err("shutting down".into());
        }
        match s.role {
            Role::Starting => Err("starting".into()),
            Role::Standby => match &s.lease_error {
                Some(error) => Err(format!("standby cannot read the leader Lease: {error}")),
                None => Ok("standby, waiting for the leader Lease"),
            },
            Role::Active if s.caches_synced => Ok("running the controller"),
            Role::Active => Err("waiting for the controller's caches to sync".into()),
        }
    }
}

/// Counts the controller's caches still to list. (Watching the streams rather than awaiting
/// `Store::wait_until_ready`: that wakes only one of several concurrent waiters, and the controller
/// itself waits on the links store.)
#[derive(Debug, Clone)]
pub struct CacheSync {
    health: Health,
    remaining: Arc<AtomicUsize>,
}

impl CacheSync {
    /// For `inspect_ok` on one cache's watch stream: notes the end of its first complete list.
    pub fn listed<K>(&self) -> impl FnMut(&watcher::Event<K>) {
        let sync = self.clone();
        let done = AtomicBool::new(false);
        move |event| {
            if matches!(event, watcher::Event::InitDone)
                && !done.swap(true, Ordering::Relaxed)
                && sync.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            {
                sync.health.update(|s| s.caches_synced = true);
                sync.health.1.send_replace(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_ready_once_it_can_do_its_part() {
        let health = Health::default();
        assert_eq!(health.readiness(), Err("starting".into()));

        health.standby();
        assert!(health.readiness().is_ok());
        health.lease_visible(Err("connection refused".into()));
        let reason = health.readiness().unwrap_err();
        assert!(reason.contains("connection refused"), "{reason}");
        health.lease_visible(Ok(()));
        assert!(health.readiness().is_ok());

        health.active();
        assert_eq!(
            health.readiness(),
            Err("waiting for the controller's caches to sync".into())
        );
        let caches = health.caches(2);
        let (mut first, mut second) = (caches.listed::<()>(), caches.listed::<()>());
        first(&watcher::Event::Init);
        first(&watcher::Event::InitDone);
        first(&watcher::Event::InitDone); // a relist of the same cache
        assert!(health.readiness().is_err());
        second(&watcher::Event::InitDone);
        assert_eq!(health.readiness(), Ok("running the controller"));

        health.stopping();
        assert_eq!(health.readiness(), Err("shutting down".into()));
    }

    #[test]
    fn a_leader_does_not_depend_on_its_lease_watch_for_readiness() {
        // The leader's own renewals decide whether it keeps running; readiness reports the caches.
        let health = Health::default();
        health.active();
        health.caches(1).listed::<()>()(&watcher::Event::InitDone);
        health.lease_visible(Err("watch restarting".into()));
        assert!(health.readiness().is_ok());
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_caches_sync() {
        let health = Health::default();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn({
                    let health = health.clone();
                    async move { health.caches_synced().await }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let caches = health.caches(1);
        caches.listed::<()>()(&watcher::Event::InitDone);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        health.caches_synced().await;
    }
}
