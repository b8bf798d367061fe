//! One invocation of a family's function: every enabled tenant (or the one named) is polled
//! with bounded concurrency; one tenant's failure is recorded on its cursor and never stops the
//! others; when the time budget runs low no new tenant is started.

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use kareo::Family;
use serde::Deserialize;
use tokio::time::Instant;

use crate::poll::{Mode, Outcome, Poller, Report};
use domain::ports::*;
use domain::source::KareoSource;
use domain::tenant::TenantConfig;

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
                        class: ErrorClass::Secret,
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
