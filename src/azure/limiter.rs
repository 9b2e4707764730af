//! The client's own token buckets, one set per subscription, so that the operator waits its turn
//! instead of meeting ARM's 429s.
//!
//! ARM throttles with token buckets per subscription, principal and operation type: reads (GET)
//! 250 tokens refilled at 25/s, writes (every other method) and deletes 200 at 10/s ("Regional
//! throttling and token bucket algorithm", learn.microsoft.com/azure/azure-resource-manager/
//! management/request-limits-and-throttling). The operator is one principal, so buckets a fifth
//! smaller and slower than ARM's keep it under them even when a restart finds ARM's bucket partly
//! spent. A 429 that comes anyway (another client of the same principal, a resource provider's own
//! limit) empties the bucket of its kind until `Retry-After` has passed, for every caller.
//!
//! A request takes a token at once when there is one; otherwise it reserves the next one (the
//! bucket goes below zero) and sleeps until it is due, outside the lock, so requests wait in the
//! order they came and a subscription never waits for another.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use tokio::time::Instant;

/// ARM's operation types for throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// GET (and HEAD).
    Read,
    /// PUT, PATCH, POST: every method but GET, HEAD and DELETE. `POST .../list` is one too.
    Write,
    /// DELETE.
    Delete,
}

impl RequestKind {
    /// How ARM counts a request with `method` ("-reads for GET requests and -writes for non-GET
    /// requests", learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors).
    pub fn of(method: &Method) -> Self {
        if method == Method::GET || method == Method::HEAD {
            Self::Read
        } else if method == Method::DELETE {
            Self::Delete
        } else {
            Self::Write
        }
    }

    /// Short name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }
}

/// One bucket: how many requests may go at once, and how many per second after that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens when full (and at start); at least 1.
    pub burst: u32,
    /// Tokens added per second, up to `burst`; positive.
    pub per_second: f64,
}

impl Rate {
    /// A bucket of `burst` tokens refilled at `per_second`.
    pub const fn new(burst: u32, per_second: f64) -> Self {
        Self { burst, per_second }
    }
}

/// The buckets of one subscription, by operation type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// GET requests.
    pub reads: Rate,
    /// PUT, PATCH and POST requests.
    pub writes: Rate,
    /// DELETE requests.
    pub deletes: Rate,
}

impl RateLimits {
    /// Four fifths of ARM's documented per-principal buckets (reads 250 at 25/s, writes and deletes
    /// 200 at 10/s).
    pub const DEFAULT: RateLimits = RateLimits {
        reads: Rate::new(200, 20.0),
        writes: Rate::new(160, 8.0),
        deletes: Rate::new(160, 8.0),
    };

    fn of(&self, kind: RequestKind) -> Rate {
        match kind {
            RequestKind::Read => self.reads,
            RequestKind::Write => self.writes,
            RequestKind::Delete => self.deletes,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Debug)]
struct Bucket {
    /// Below zero: tokens reserved by requests still waiting.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.at = now;
    }
}

/// Token buckets per subscription (compared case-insensitively, as ARM does) and request kind.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, RequestKind), Bucket>>,
}

impl RateLimiter {
    /// Buckets of these sizes, each full at first use.
    pub fn new(limits: RateLimits) -> Self {
        let rates = [limits.reads, limits.writes, limits.deletes];
        assert!(
            rates
                .iter()
                .all(|r| r.burst >= 1 && r.per_second.is_finite() && r.per_second > 0.0),
            "rate limits need at least one token and a positive refill rate: {limits:?}"
        );
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket sizes.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Takes one token for a `kind` request in `subscription`, waiting until one is due when the
    /// bucket is empty. Returns how long it waited.
    pub async fn acquire(&self, subscription: &str, kind: RequestKind) -> Duration {
        let wait = self.reserve(subscription, kind, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Takes (or reserves) a token now; returns when it is due.
    fn reserve(&self, subscription: &str, kind: RequestKind, now: Instant) -> Duration {
        let rate = self.limits.of(kind);
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let bucket = self.bucket(&mut buckets, subscription, kind, now);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate.per_second)
        }
    }

    /// ARM throttled a `kind` request in `subscription` and asked to wait `retry_after`: no
    /// request of that kind there takes a token before then.
    pub fn hold_off(&self, subscription: &str, kind: RequestKind, retry_after: Duration) {
        let rate = self.limits.of(kind);
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let bucket = self.bucket(&mut buckets, subscription, kind, Instant::now());
        // The next token is due `retry_after` from now.
        bucket.tokens = bucket
            .tokens
            .min(1.0 - retry_after.as_secs_f64() * rate.per_second);
    }

    /// Whole tokens left for `kind` in `subscription` now (a full bucket when unused).
    #[cfg(test)]
    pub(crate) fn available(&self, subscription: &str, kind: RequestKind) -> f64 {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        self.bucket(&mut buckets, subscription, kind, Instant::now())
            .tokens
            .floor()
    }

    fn bucket<'a>(
        &self,
        buckets: &'a mut HashMap<(String, RequestKind), Bucket>,
        subscription: &str,
        kind: RequestKind,
        now: Instant,
    ) -> &'a mut Bucket {
        let rate = self.limits.of(kind);
        let bucket = buckets
            .entry((subscription.to_ascii_lowercase(), kind))
            .or_insert_with(|| Bucket {
                tokens: f64::from(rate.burst),
                at: now,
            });
        bucket.refill(rate, now);
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(burst: u32, per_second: f64) -> Arc<RateLimiter> {
        let rate = Rate::new(burst, per_second);
        Arc::new(RateLimiter::new(RateLimits {
            reads: rate,
            writes: rate,
            deletes: rate,
        }))
    }

    #[test]
    fn requests_are_classified_as_arm_does() {
        assert_eq!(RequestKind::of(&Method::GET), RequestKind::Read);
        assert_eq!(RequestKind::of(&Method::HEAD), RequestKind::Read);
        assert_eq!(RequestKind::of(&Method::DELETE), RequestKind::Delete);
        for write in [Method::PUT, Method::PATCH, Method::POST] {
            assert_eq!(RequestKind::of(&write), RequestKind::Write, "{write}");
        }
    }

    #[test]
    fn the_default_stays_under_arms_buckets() {
        let arm = [(250, 25.0), (200, 10.0), (200, 10.0)];
        let ours = RateLimits::DEFAULT;
        for (rate, (burst, per_second)) in
            [ours.reads, ours.writes, ours.deletes].into_iter().zip(arm)
        {
            assert!(
                rate.burst < burst && rate.per_second < per_second,
                "{rate:?}"
            );
        }
    }

    /// Sends `n` requests of `kind` at once; returns when each got its token, from the start.
    async fn burst(
        limiter: &Arc<RateLimiter>,
        subscription: &'static str,
        kind: RequestKind,
        n: usize,
    ) -> Vec<Duration> {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire(subscription, kind).await;
                    start.elapsed()
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_beyond_the_bucket_is_paced_at_the_refill_rate() {
        let limiter = limiter(3, 2.0);
        let times = burst(&limiter, "sub", RequestKind::Write, 7).await;
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        // Three at once, then one every 500 ms.
        assert_eq!(ms, [0, 0, 0, 500, 1000, 1500, 2000]);
        // An idle bucket fills up again, and no further than its size.
        tokio::time::advance(Duration::from_secs(60)).await;
        let ms: Vec<u128> = burst(&limiter, "sub", RequestKind::Write, 4)
            .await
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [0, 0, 0, 500]);
    }

    #[tokio::test(start_paused = true)]
    async fn kinds_and_subscriptions_have_their_own_buckets() {
        let limiter = limiter(1, 1.0);
        limiter.acquire("sub-a", RequestKind::Write).await;
        // Writes in sub-a are spent; reads there, and writes elsewhere, are not. The subscription
        // id is compared as ARM compares it, case-insensitively.
        let start = Instant::now();
        limiter.acquire("sub-a", RequestKind::Read).await;
        limiter.acquire("sub-a", RequestKind::Delete).await;
        limiter.acquire("sub-b", RequestKind::Write).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(
            limiter.acquire("SUB-A", RequestKind::Write).await,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_subscription_does_not_hold_up_another() {
        let limiter = limiter(1, 0.1);
        limiter.acquire("slow", RequestKind::Write).await;
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire("slow", RequestKind::Write).await }
        });
        tokio::task::yield_now().await;
        // While a request of "slow" sleeps for its token, "fast" gets its own at once.
        let start = Instant::now();
        limiter.acquire("fast", RequestKind::Write).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!waiting.is_finished());
        assert_eq!(waiting.await.unwrap(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_off_every_request_of_its_kind() {
        let limiter = limiter(100, 10.0);
        limiter.hold_off("sub", RequestKind::Write, Duration::from_secs(3));
        let times = burst(&limiter, "sub", RequestKind::Write, 3).await;
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [3000, 3100, 3200]);
        // Reads were not throttled.
        assert_eq!(
            limiter.acquire("sub", RequestKind::Read).await,
            Duration::ZERO
        );
    }
}
