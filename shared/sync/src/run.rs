//! One invocation of a family's function: every enabled tenant (or the one named) is polled
//! with bounded concurrency; one tenant's failure is recorded on its cursor and never stops the
//! others; when the time budget runs low no new tenant is started.

use std::collections::HashMap;

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
/// `{"mode": "deletes"}` (appointments), `{"mode": "resync"}` (patients), `{"mode": "audit"}`
/// (the daily coverage audit). Other members (an
/// EventBridge envelope) are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Payload {
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `poll` (default), `dry-run`, `backfill`, `deletes`, `resync`, `audit`.
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
            ("audit", _) => Ok(Mode::Audit),
            (other, _) => Err(format!(
                "unknown mode '{other}': expected poll, dry-run, backfill, deletes, resync or audit"
            )),
        }
    }
}

/// Polls `family` for every tenant that enables it (or only `only`), `concurrency` at a time.
/// A tenant whose Kareo account's breaker is open is not polled (see [`guarded`]).
#[allow(clippy::too_many_arguments)]
pub async fn poll_tenants<K, C, S, E, T, Sec, B>(
    poller: &Poller<'_, K, C, S, E, T>,
    secrets: &Sec,
    breakers: &B,
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
    B: BreakerStore,
{
    let chosen: Vec<&TenantConfig> = tenants
        .iter()
        .filter(|t| t.families.contains_key(&family))
        .filter(|t| only.is_none_or(|o| o == t.tenant))
        .collect();
    // One read of every open breaker per invocation (not one per tenant): an empty poll stays
    // at three remote calls per (tenant, family), plus this one per invocation.
    if chosen.is_empty() {
        return Vec::new();
    }
    let open = match breakers.breakers().await {
        Ok(b) => std::sync::Mutex::new(b.into_iter().collect::<HashMap<_, _>>()),
        Err(e) => {
            return chosen
                .iter()
                .map(|t| Report::failed(&t.tenant, family, e.class(), e.to_string()))
                .collect();
        }
    };
    let open = &open;
    let margin = poller.config.margin;
    stream::iter(chosen)
        .map(|t| async move {
            if deadline.is_some_and(|d| d.saturating_duration_since(Instant::now()) < margin) {
                let mut r = Report::skipped(&t.tenant, family);
                r.outcome = Outcome::Partial;
                return r;
            }
            let paused = open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&domain::ports::pause_key(&t.tenant));
            if paused {
                tracing::info!(tenant = %t.tenant, %family, "tenant paused: not polled");
                let mut r = Report::skipped(&t.tenant, family);
                r.outcome = Outcome::Paused;
                return r;
            }
            match kareo_credentials(secrets, &t.kareo.secret).await {
                Ok(creds) => {
                    guarded(breakers, open, poller.clock, t, family, &creds, || {
                        poller.run(t, &creds, family, mode, deadline)
                    })
                    .await
                }
                Err(e) => {
                    tracing::warn!(tenant = %t.tenant, %family, error = %e, "no Kareo credentials");
                    Report::failed(&t.tenant, family, ErrorClass::Secret, e.to_string())
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Runs `run` unless the tenant's Kareo account has an open breaker for these credentials
/// (`open`: the breakers read at the start of the invocation, and those opened since).
///
/// Tebra locks an API user out after repeated failed sign-ins, and every SOAP call signs in:
/// after one `kareo_credentials` failure, no function calls Kareo for that account again —
/// every family of every tenant on it reports `kareo_breaker_open` — until the secret changes
/// (the breaker holds a digest of the credentials that failed, and a different secret closes
/// it) or an operator runs `kareo-dock tenant resume`. A breaker that cannot be read stops the
/// run too: the store's class is reported.
pub async fn guarded<B, T, F, Fut>(
    breakers: &B,
    open: &std::sync::Mutex<HashMap<String, Breaker>>,
    clock: &T,
    tenant: &TenantConfig,
    family: Family,
    creds: &kareo::Credentials,
    run: F,
) -> Report
where
    B: BreakerStore,
    T: Clock,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Report>,
{
    let account = &tenant.kareo.secret;
    let failed =
        |class: ErrorClass, message: String| Report::failed(&tenant.tenant, family, class, message);
    let fingerprint = credentials_fingerprint(creds);
    let known = open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(account)
        .cloned();
    match known {
        Some(b) if b.fingerprint == fingerprint => {
            tracing::warn!(
                tenant = %tenant.tenant, %family, account = %account, opened_at = %b.opened_at,
                "Kareo account's breaker is open: not called"
            );
            return failed(
                ErrorClass::KareoBreakerOpen,
                format!(
                    "Kareo refused the credentials of secret {account} at {} ({}): fix the secret or run `kareo-dock tenant resume --account {account}`",
                    b.opened_at.to_rfc3339(),
                    b.by
                ),
            );
        }
        Some(_) => {
            tracing::info!(tenant = %tenant.tenant, account = %account, "Kareo secret changed: breaker closed");
            if let Err(e) = breakers.close_breaker(account).await {
                return failed(e.class(), e.to_string());
            }
            open.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(account);
        }
        None => {}
    }
    let report = run().await;
    if let Outcome::Failed {
        class: ErrorClass::KareoCredentials,
        message,
    } = &report.outcome
    {
        let breaker = Breaker {
            fingerprint,
            opened_at: clock.now(),
            by: format!("{}/{family}", tenant.tenant),
            reason: message.clone(),
        };
        open.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.clone(), breaker.clone());
        match breakers.open_breaker(account, &breaker).await {
            Ok(()) => tracing::error!(
                tenant = %tenant.tenant, %family, account = %account,
                "Kareo refused the credentials: the account's breaker is open"
            ),
            Err(e) => tracing::warn!(account = %account, error = %e, "could not open the breaker"),
        }
    }
    report
}
