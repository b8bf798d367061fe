//! Kareo's per-account, per-operation call spacing, and the retry policy.
//!
//! Kareo allows one call per interval per operation per account (250 ms to 5 s, kareo-api.md
//! §5) and answers faster callers with a `429 …` message. Calls are spaced by a governor rate
//! limiter per (account, operation) at the interval plus a safety margin (a call exactly at the
//! interval was still throttled in practice). Intervals come from GetThrottles when it has been
//! read ([`Throttle::set_live`]), else from the guide's table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::schema::OpDef;

/// One limiter per (account, operation), with the spacing it was built for.
type Limiters = HashMap<(String, &'static str), (Duration, Arc<DefaultDirectRateLimiter>)>;

/// Spaces calls per (account, operation). Share one per process (clients hold an `Arc`).
pub struct Throttle {
    margin: Duration,
    limiters: Mutex<Limiters>,
    live: Mutex<HashMap<(String, String), Duration>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle adding `margin` to every interval.
    pub fn new(margin: Duration) -> Throttle {
        Throttle {
            margin,
            limiters: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The spacing used for `op` on `account` (interval + margin).
    pub fn interval(&self, account: &str, op: &OpDef) -> Duration {
        let live = self
            .live
            .lock()
            .expect("throttle lock")
            .get(&(account.to_string(), op.name.to_string()))
            .copied();
        live.unwrap_or(Duration::from_millis(op.documented_interval_ms())) + self.margin
    }

    /// Records the live intervals read from GetThrottles for an account: (endpoint, interval).
    pub fn set_live(&self, account: &str, intervals: impl IntoIterator<Item = (String, Duration)>) {
        let mut live = self.live.lock().expect("throttle lock");
        for (endpoint, d) in intervals {
            live.insert((account.to_string(), endpoint), d);
        }
    }

    /// Waits until a call of `op` on `account` is allowed, and takes the slot.
    pub async fn wait(&self, account: &str, op: &'static OpDef) {
        let limiter = self.limiter(account, op);
        limiter.until_ready().await;
    }

    fn limiter(&self, account: &str, op: &'static OpDef) -> Arc<DefaultDirectRateLimiter> {
        let interval = self.interval(account, op).max(Duration::from_millis(1));
        let mut map = self.limiters.lock().expect("throttle lock");
        let entry = map
            .entry((account.to_string(), op.name))
            .or_insert_with(|| (interval, Arc::new(limiter(interval))));
        if entry.0 != interval {
            *entry = (interval, Arc::new(limiter(interval)));
        }
        entry.1.clone()
    }
}

fn limiter(interval: Duration) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::with_period(interval).expect("interval is positive"))
}

/// How calls are retried: jittered exponential backoff, bounded in attempts and total delay.
/// A throttle waits at least the interval Kareo named.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Upper bound of all delays of one call together.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The backon builder for this policy.
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;
    use std::time::Instant;

    #[tokio::test]
    async fn calls_are_spaced_per_account_and_operation() {
        let t = Throttle::new(Duration::from_millis(20));
        let op = schema::op("GetPatient").unwrap(); // 250 ms
        t.set_live(
            "acct",
            [("GetPatient".to_string(), Duration::from_millis(60))],
        );
        assert_eq!(t.interval("acct", op), Duration::from_millis(80));
        assert_eq!(t.interval("other", op), Duration::from_millis(270));
        let start = Instant::now();
        t.wait("acct", op).await;
        t.wait("acct", op).await;
        t.wait("acct", op).await;
        // Three calls need two full intervals; another account is not held up by them.
        assert!(start.elapsed() >= Duration::from_millis(160));
        let other = Instant::now();
        t.wait("other", op).await;
        t.wait("acct", schema::op("GetPractices").unwrap()).await;
        assert!(other.elapsed() < Duration::from_millis(150));
    }
}
