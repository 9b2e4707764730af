//! One caller at a time per site, and what the last one learnt about it.
//!
//! ARM's app-settings PUT replaces the whole set and takes no If-Match, so two read-modify-writes
//! of one site that interleave lose one of them. A caller takes the site's [`SiteTurn`] for its
//! whole read-modify-write; callers for other sites, or other subscriptions, never wait for it.
//!
//! Callers that name an owner are coalesced: when the same owner asks for a site again while an
//! earlier request of its own still waits for the turn, the earlier one is superseded (the later
//! one carries the newer intent), so a burst of new values costs one more write with the latest,
//! not one per value.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio::time::{Duration, Instant};

/// What this process last learnt about a site, kept between passes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SiteMemo {
    /// When a read last showed the site without `properties.dnsConfiguration.dnsServers`.
    pub no_site_dns_at: Option<Instant>,
    /// When the caller last confirmed the site in a state of its own naming, and which.
    pub confirmed: Option<(Instant, String)>,
}

impl SiteMemo {
    /// True when a read showed no `dnsConfiguration.dnsServers` less than `within` ago.
    pub fn no_site_dns_within(&self, within: Duration) -> bool {
        self.no_site_dns_at.is_some_and(|at| at.elapsed() < within)
    }

    /// How much longer the site counts as confirmed in `state`, when it does.
    pub fn confirmed_for(&self, state: &str, within: Duration) -> Option<Duration> {
        let (at, confirmed) = self.confirmed.as_ref()?;
        if confirmed != state {
            return None;
        }
        within
            .checked_sub(at.elapsed())
            .filter(|left| !left.is_zero())
    }
}

#[derive(Debug, Default)]
struct Gate {
    memo: Arc<tokio::sync::Mutex<SiteMemo>>,
    /// The last ticket handed out, and per owner its latest.
    latest: Mutex<(u64, HashMap<String, u64>)>,
}

/// Every site's gate, by resource id (compared case-insensitively, as ARM does).
#[derive(Debug, Default)]
pub struct SiteGates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl SiteGates {
    /// Waits for the turn on the site `resource_id`. With an `owner`, the turn says whether a
    /// later request of the same owner came meanwhile ([`SiteTurn::superseded`]).
    pub async fn turn(&self, resource_id: &str, owner: Option<&str>) -> SiteTurn {
        let gate = self
            .gates
            .lock()
            .expect("site gates lock")
            .entry(resource_id.to_ascii_lowercase())
            .or_default()
            .clone();
        let ticket = owner.map(|owner| {
            let mut latest = gate.latest.lock().expect("owners lock");
            latest.0 += 1;
            let ticket = latest.0;
            latest.1.insert(owner.to_string(), ticket);
            (owner.to_string(), ticket)
        });
        let memo = gate.memo.clone().lock_owned().await;
        SiteTurn { memo, gate, ticket }
    }
}

/// The turn on one site: the caller alone reads and writes it until this is dropped. Derefs to
/// the site's memo.
#[derive(Debug)]
pub struct SiteTurn {
    memo: OwnedMutexGuard<SiteMemo>,
    gate: Arc<Gate>,
    ticket: Option<(String, u64)>,
}

impl SiteTurn {
    /// True when the same owner asked for this site again while this turn was waiting: the later
    /// request has the newer intent and will act on it, so this one should leave the site alone.
    pub fn superseded(&self) -> bool {
        let Some((owner, ticket)) = &self.ticket else {
            return false;
        };
        let latest = self.gate.latest.lock().expect("owners lock");
        latest.1.get(owner).is_some_and(|t| t != ticket)
    }
}

impl Deref for SiteTurn {
    type Target = SiteMemo;
    fn deref(&self) -> &SiteMemo {
        &self.memo
    }
}

impl DerefMut for SiteTurn {
    fn deref_mut(&mut self) -> &mut SiteMemo {
        &mut self.memo
    }
}

impl Drop for SiteTurn {
    fn drop(&mut self) {
        if let Some((owner, ticket)) = &self.ticket {
            let mut latest = self.gate.latest.lock().expect("owners lock");
            if latest.1.get(owner) == Some(ticket) {
                latest.1.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/web";

    #[tokio::test(start_paused = true)]
    async fn read_modify_writes_of_one_site_never_interleave() {
        let gates = Arc::new(SiteGates::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let (gates, log) = (gates.clone(), log.clone());
                tokio::spawn(async move {
                    // Spelled differently each time: one site for ARM.
                    let id = if i % 2 == 0 {
                        SITE.to_string()
                    } else {
                        SITE.to_uppercase()
                    };
                    let _turn = gates.turn(&id, None).await;
                    log.lock().unwrap().push(format!("read {i}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    log.lock().unwrap().push(format!("write {i}"));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        for pair in log.chunks(2) {
            assert_eq!(
                pair[0].replace("read", "write"),
                pair[1],
                "interleaved: {log:?}"
            );
        }
        assert_eq!(log.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn another_site_does_not_wait() {
        let gates = SiteGates::default();
        let _held = gates.turn(SITE, None).await;
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            gates.turn(&format!("{SITE}/slots/staging"), None),
        )
        .await;
        assert!(other.is_ok(), "the slot waited for the site");
        let same = tokio::time::timeout(Duration::from_secs(1), gates.turn(SITE, None)).await;
        assert!(same.is_err(), "the same site did not wait");
    }

    #[tokio::test(start_paused = true)]
    async fn an_owners_waiting_request_is_superseded_by_its_later_one() {
        let gates = Arc::new(SiteGates::default());
        let first = gates.turn(SITE, Some("link-a")).await;
        assert!(!first.superseded());
        let waiting = |owner: &'static str| {
            let gates = gates.clone();
            tokio::spawn(async move { gates.turn(SITE, Some(owner)).await.superseded() })
        };
        let second = waiting("link-a");
        tokio::task::yield_now().await;
        let third = waiting("link-a");
        tokio::task::yield_now().await;
        let other_owner = waiting("link-b");
        tokio::task::yield_now().await;
        drop(first);
        assert!(second.await.unwrap(), "the second carried a stale intent");
        assert!(!third.await.unwrap(), "the latest acts");
        assert!(
            !other_owner.await.unwrap(),
            "other owners are never skipped"
        );
        // Nothing stays behind for the owners that are done.
        let fresh = gates.turn(SITE, Some("link-a")).await;
        assert!(!fresh.superseded());
        assert_eq!(fresh.gate.latest.lock().unwrap().1.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_memo_outlives_the_turn_and_expires() {
        let gates = SiteGates::default();
        let mut turn = gates.turn(SITE, None).await;
        turn.confirmed = Some((Instant::now(), "10.0.0.1".into()));
        turn.no_site_dns_at = Some(Instant::now());
        drop(turn);
        tokio::time::advance(Duration::from_secs(4)).await;
        let turn = gates.turn(SITE, None).await;
        let period = Duration::from_secs(5);
        assert_eq!(
            turn.confirmed_for("10.0.0.1", period),
            Some(Duration::from_secs(1))
        );
        assert_eq!(turn.confirmed_for("10.0.0.2", period), None);
        assert!(turn.no_site_dns_within(period));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(turn.confirmed_for("10.0.0.1", period), None);
        assert!(!turn.no_site_dns_within(period));
    }
}
