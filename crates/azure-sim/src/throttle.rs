//! ARM's subscription throttling: token buckets per subscription, principal and operation type.
//!
//! Modelled on "Understand how Azure Resource Manager throttles requests"
//! (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling),
//! section "Regional throttling and token bucket algorithm":
//!
//! - subscription reads: bucket 250, refill 25/s; deletes: 200, 10/s; writes: 200, 10/s;
//! - the limits apply per subscription, per service principal and per operation type, and a
//!   global subscription limit of 15 times the per-principal one applies to all principals
//!   together; a request is throttled when either is exceeded;
//! - each request takes one token; a throttled request gets 429 with `Retry-After` in seconds.
//!
//! Which requests are reads: GET (and HEAD); every other method is a write except DELETE, as the
//! Compute throttling guide says ("-reads for GET requests and -writes for non-GET requests",
//! learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors).
//! So `POST .../config/appsettings/list` spends a *write* token.

use std::{collections::HashMap, time::Instant};

/// One token bucket: how many tokens it holds when full, and how fast it refills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens when full (and at start). Must be at least 1.
    pub size: u32,
    /// Tokens added per second, up to `size`. Must be positive; fractions are allowed (0.5 is one
    /// token every two seconds).
    pub refill_per_sec: f64,
}

impl Bucket {
    pub const fn new(size: u32, refill_per_sec: f64) -> Self {
        Self {
            size,
            refill_per_sec,
        }
    }

    fn scaled(self, factor: u32) -> Self {
        Self {
            size: self.size.saturating_mul(factor),
            refill_per_sec: self.refill_per_sec * f64::from(factor),
        }
    }
}

/// ARM's subscription throttling limits. The default is ARM's: on, with the documented numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttling {
    /// GET requests, per subscription and principal.
    pub reads: Bucket,
    /// PUT, PATCH and POST requests, per subscription and principal.
    pub writes: Bucket,
    /// DELETE requests, per subscription and principal.
    pub deletes: Bucket,
    /// The global subscription bucket (all principals together) is this many times the
    /// per-principal one, in size and refill. Must be at least 1.
    pub global_factor: u32,
}

impl Throttling {
    /// The documented limits of the regional token-bucket algorithm.
    pub const ARM: Throttling = Throttling {
        reads: Bucket::new(250, 25.0),
        writes: Bucket::new(200, 10.0),
        deletes: Bucket::new(200, 10.0),
        global_factor: 15,
    };

    /// The same bucket for reads, writes and deletes (each still separate), global factor 15:
    /// for tests that must exhaust a bucket quickly.
    pub const fn uniform(size: u32, refill_per_sec: f64) -> Throttling {
        let b = Bucket::new(size, refill_per_sec);
        Throttling {
            reads: b,
            writes: b,
            deletes: b,
            global_factor: 15,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, b) in [
            ("reads", self.reads),
            ("writes", self.writes),
            ("deletes", self.deletes),
        ] {
            if b.size == 0 {
                return Err(format!(
                    "throttling: the {name} bucket must hold at least 1 token"
                ));
            }
            if !(b.refill_per_sec.is_finite() && b.refill_per_sec > 0.0) {
                return Err(format!(
                    "throttling: the {name} refill rate must be a positive number of tokens per second"
                ));
            }
        }
        if self.global_factor == 0 {
            return Err("throttling: global_factor must be at least 1".to_owned());
        }
        Ok(())
    }

    fn bucket(&self, op: OpKind) -> Bucket {
        match op {
            OpKind::Read => self.reads,
            OpKind::Write => self.writes,
            OpKind::Delete => self.deletes,
        }
    }
}

impl Default for Throttling {
    fn default() -> Self {
        Self::ARM
    }
}

/// ARM's operation types for throttling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OpKind {
    Read,
    Write,
    Delete,
}

impl OpKind {
    pub fn of(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Self::Read,
            "DELETE" => Self::Delete,
            _ => Self::Write,
        }
    }

    /// As in ARM's throttling message ("Number of 'read' requests ...").
    pub fn word(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }

    /// The `x-ms-ratelimit-remaining-subscription-*` header for the principal's bucket.
    pub fn header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }

    /// The header for the global subscription bucket (seen in real ARM responses beside the
    /// per-principal one, e.g. `...-subscription-reads: 249` with `...-global-reads: 3749`).
    pub fn global_header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-global-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-global-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-global-deletes",
        }
    }
}

/// What the buckets said about one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Verdict {
    pub op: OpKind,
    /// Whole tokens left in the principal's bucket (after taking this request's token).
    pub remaining: u64,
    /// Whole tokens left in the global subscription bucket.
    pub global_remaining: u64,
    /// `Some(seconds)` when the request is throttled: when a token will be there again.
    pub retry_after: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl State {
    fn refill(&mut self, bucket: Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * bucket.refill_per_sec).min(f64::from(bucket.size));
        self.at = now;
    }

    /// Seconds until one whole token is there, rounded up, at least 1.
    fn wait(&self, bucket: Bucket) -> u64 {
        let secs = ((1.0 - self.tokens) / bucket.refill_per_sec).ceil();
        (secs as u64).max(1)
    }
}

/// `None` principal is the global subscription bucket.
type Key = (String, Option<String>, OpKind);

/// Every bucket, created full on first use.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: Throttling,
    buckets: HashMap<Key, State>,
}

impl Limiter {
    pub fn new(config: Throttling) -> Self {
        Self {
            config,
            buckets: HashMap::new(),
        }
    }

    pub fn config(&self) -> Throttling {
        self.config
    }

    /// New limits; every bucket starts full again.
    pub fn reset(&mut self, config: Throttling) {
        *self = Self::new(config);
    }

    /// Takes one token for a `method` request by `principal` in `subscription` from both the
    /// principal's and the global bucket, or neither when either is empty.
    pub fn take(
        &mut self,
        subscription: &str,
        principal: &str,
        method: &str,
        now: Instant,
    ) -> Verdict {
        let op = OpKind::of(method);
        let own = self.config.bucket(op);
        let global = own.scaled(self.config.global_factor);
        let sub = subscription.to_ascii_lowercase();
        let full = |b: Bucket| State {
            tokens: f64::from(b.size),
            at: now,
        };
        let mut mine = *self
            .buckets
            .entry((sub.clone(), Some(principal.to_owned()), op))
            .or_insert_with(|| full(own));
        let mut all = *self
            .buckets
            .entry((sub.clone(), None, op))
            .or_insert_with(|| full(global));
        mine.refill(own, now);
        all.refill(global, now);
        let retry_after = if mine.tokens >= 1.0 && all.tokens >= 1.0 {
            mine.tokens -= 1.0;
            all.tokens -= 1.0;
            None
        } else {
            let wait = |s: &State, b| if s.tokens >= 1.0 { 0 } else { s.wait(b) };
            Some(wait(&mine, own).max(wait(&all, global)))
        };
        self.buckets
            .insert((sub.clone(), Some(principal.to_owned()), op), mine);
        self.buckets.insert((sub, None, op), all);
        Verdict {
            op,
            remaining: mine.tokens.floor() as u64,
            global_remaining: all.tokens.floor() as u64,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SUB: &str = "sub";

    #[test]
    fn arm_numbers_and_headers() {
        let mut l = Limiter::new(Throttling::default());
        let now = Instant::now();
        let v = l.take(SUB, "p", "GET", now);
        assert_eq!(
            (v.remaining, v.global_remaining, v.retry_after),
            (249, 3749, None)
        );
        let v = l.take(SUB, "p", "POST", now);
        assert_eq!(
            (v.op, v.remaining, v.global_remaining),
            (OpKind::Write, 199, 2999)
        );
        let v = l.take(SUB, "p", "DELETE", now);
        assert_eq!((v.op, v.remaining), (OpKind::Delete, 199));
        assert_eq!(l.take(SUB, "p", "PATCH", now).remaining, 198);
        assert_eq!(l.take(SUB, "p", "PUT", now).remaining, 197);
    }

    #[test]
    fn exhaustion_and_refill() {
        let mut l = Limiter::new(Throttling::uniform(2, 0.5));
        let t0 = Instant::now();
        assert_eq!(l.take(SUB, "p", "PUT", t0).remaining, 1);
        assert_eq!(l.take(SUB, "p", "PUT", t0).remaining, 0);
        let v = l.take(SUB, "p", "PUT", t0);
        assert_eq!((v.remaining, v.retry_after), (0, Some(2)));
        // Reads have their own bucket.
        assert_eq!(l.take(SUB, "p", "GET", t0).retry_after, None);
        // Half a token after a second: still throttled, one more second to wait.
        let v = l.take(SUB, "p", "PUT", t0 + Duration::from_secs(1));
        assert_eq!(v.retry_after, Some(1));
        let v = l.take(SUB, "p", "PUT", t0 + Duration::from_secs(2));
        assert_eq!((v.remaining, v.retry_after), (0, None));
        // Never above the bucket size.
        let v = l.take(SUB, "p", "PUT", t0 + Duration::from_secs(100));
        assert_eq!(v.remaining, 1);
    }

    #[test]
    fn principals_and_subscriptions_are_separate_but_share_the_global_bucket() {
        let mut l = Limiter::new(Throttling {
            global_factor: 2,
            ..Throttling::uniform(1, 0.001)
        });
        let t = Instant::now();
        assert_eq!(l.take(SUB, "a", "PUT", t).retry_after, None);
        assert!(l.take(SUB, "a", "PUT", t).retry_after.is_some());
        assert_eq!(
            l.take("SUB", "b", "PUT", t).retry_after,
            None,
            "b has its own bucket"
        );
        let v = l.take(SUB, "c", "PUT", t);
        assert!(v.retry_after.is_some(), "the global bucket (2) is empty");
        assert_eq!((v.remaining, v.global_remaining), (1, 0));
        assert_eq!(l.take("other", "a", "PUT", t).retry_after, None);
    }

    #[test]
    fn invalid_limits_are_refused() {
        assert!(Throttling::ARM.validate().is_ok());
        assert!(Throttling::uniform(0, 1.0).validate().is_err());
        assert!(Throttling::uniform(1, 0.0).validate().is_err());
        assert!(Throttling::uniform(1, f64::NAN).validate().is_err());
        let mut t = Throttling::ARM;
        t.global_factor = 0;
        assert!(t.validate().is_err());
    }
}
