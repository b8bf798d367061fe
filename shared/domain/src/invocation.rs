//! What every function's invocation needs: its time budget from the runtime deadline, and
//! secrets cached across warm invocations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::ports::{SecretError, SecretSource, SecretValue};

/// The time left to an invocation whose runtime deadline is `deadline_ms` (the
/// `Lambda-Runtime-Deadline-Ms` header: milliseconds since the epoch).
///
/// Lambda always sends an instant in the future. `cargo lambda watch` sends the function's
/// timeout instead (600000: ten minutes), which read as an instant is in 1970 and would leave
/// no time at all; a value before 2001 is therefore read as a duration (at most Lambda's
/// 15-minute limit). A real deadline already past gives zero.
pub fn time_budget(deadline_ms: u64, now: std::time::SystemTime) -> Duration {
    const LAMBDA_MAX: Duration = Duration::from_secs(15 * 60);
    const EPOCH_2001_MS: u64 = 978_307_200_000;
    if deadline_ms < EPOCH_2001_MS {
        return Duration::from_millis(deadline_ms).min(LAMBDA_MAX);
    }
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    deadline.duration_since(now).unwrap_or_default()
}

/// Secrets cached across warm invocations for `ttl`.
pub struct CachedSecrets<S> {
    inner: S,
    ttl: Duration,
    cache: Mutex<HashMap<String, (std::time::Instant, SecretValue)>>,
}

impl<S> CachedSecrets<S> {
    /// Caches `inner`'s secrets for `ttl`.
    pub fn new(inner: S, ttl: Duration) -> Self {
        CachedSecrets {
            inner,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The source behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: SecretSource> SecretSource for CachedSecrets<S> {
    async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        if let Some((at, v)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            if at.elapsed() < self.ttl {
                return Ok(v.clone());
            }
        }
        self.refresh(name).await
    }

    async fn refresh(&self, name: &str) -> Result<SecretValue, SecretError> {
        let v = self.inner.get(name).await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (std::time::Instant::now(), v.clone()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::time_budget;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_budget_is_the_time_to_a_lambda_deadline() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_872_000_000);
        assert_eq!(
            time_budget(1_795_872_300_000, now),
            Duration::from_secs(300)
        );
        // A deadline already past leaves nothing.
        assert_eq!(time_budget(1_795_871_999_000, now), Duration::ZERO);
    }

    #[test]
    fn an_emulators_relative_timeout_is_read_as_a_duration_capped_at_lambdas_limit() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_872_000_000);
        // cargo lambda watch sends 600000.
        assert_eq!(time_budget(600_000, now), Duration::from_secs(600));
        assert_eq!(time_budget(3_600_000, now), Duration::from_secs(900));
    }
}
