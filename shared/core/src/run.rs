//! One invocation of a family's function: every enabled tenant (or the one named) is polled
//! with bounded concurrency; one tenant's failure is recorded on its cursor and never stops the
//! others; when the time budget runs low no new tenant is started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use kareo::Family;
use serde::Deserialize;
use tokio::time::Instant;

use crate::poll::{Mode, Outcome, Poller, Report};
use crate::ports::*;
use crate::source::KareoSource;
use crate::tenant::TenantConfig;

/// The invocation payload: `{}` (a scheduled poll), `{"tenant": "acme"}`,
/// `{"mode": "dry-run"}`, `{"mode": "backfill", "since": "2026-09-01T00:00:00Z"}`,
/// `{"mode": "deletes"}` (appointments), `{"mode": "resync"}` (patients). Other members (an
/// EventBridge envelope) are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Payload {
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `poll` (default), `dry-run`, `backfill`, `deletes`, `resync`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Start of a backfill.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

impl Payload {
    /// The run mode, or what is wrong with the payload.
    pub fn mode(&self) -> Result<Mode, String> {
        match (self.mode.as_deref().unwrap_or("poll"), self.since) {
            ("poll", _) => Ok(Mode::Poll),
            ("dry-run", _) => Ok(Mode::DryRun),
            ("backfill", Some(since)) => Ok(Mode::Backfill { since }),
            ("backfill", None) => Err("mode backfill needs \"since\" (an RFC 3339 instant)".into()),
            ("deletes", _) => Ok(Mode::Deletes),
            ("resync", _) => Ok(Mode::Resync),
            (other, _) => Err(format!(
                "unknown mode '{other}': expected poll, dry-run, backfill, deletes or resync"
            )),
        }
    }
}

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
        let v = self.inner.get(name).await?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (std::time::Instant::now(), v.clone()));
        Ok(v)
    }
}

/// Polls `family` for every tenant that enables it (or only `only`), `concurrency` at a time.
#[allow(clippy::too_many_arguments)]
pub async fn poll_tenants<K, C, S, E, T, Sec>(
    poller: &Poller<'_, K, C, S, E, T>,
    secrets: &Sec,
    tenants: &[TenantConfig],
    family: Family,
    only: Option<&str>,
    mode: Mode,
    concurrency: usize,
    deadline: Option<Instant>,
) -> Vec<Report>
where
    K: KareoSource,
    C: CursorStore,
    S: SnapshotStore,
    E: EventSink,
    T: Clock,
    Sec: SecretSource,
{
    let chosen: Vec<&TenantConfig> = tenants
        .iter()
        .filter(|t| t.families.contains_key(&family))
        .filter(|t| only.is_none_or(|o| o == t.tenant))
        .collect();
    let margin = poller.config.margin;
    stream::iter(chosen)
        .map(|t| async move {
            if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < margin) {
                let mut r = Report::skipped(&t.tenant, family);
                r.outcome = Outcome::Partial;
                return r;
            }
            match kareo_credentials(secrets, &t.kareo.secret).await {
                Ok(creds) => poller.run(t, &creds, family, mode, deadline).await,
                Err(e) => {
                    tracing::warn!(tenant = %t.tenant, %family, error = %e, "no Kareo credentials");
                    let mut r = Report::skipped(&t.tenant, family);
                    r.outcome = Outcome::Failed {
                        class: "secret".into(),
                        message: e.to_string(),
                    };
                    r
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
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
