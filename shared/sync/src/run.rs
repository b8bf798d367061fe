//! One invocation of a family's function ([`invoke`]): a scheduled run claims its period and
//! polls every enabled tenant, or coordinates shards of them ([`crate::fanout`]); a shard, or a
//! run by hand, polls its tenants (or the one named). Tenants are polled with bounded
//! concurrency; one tenant's failure is recorded on its cursor and never stops the others;
//! when the time budget runs low no new tenant is started.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use kareo::Family;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::fanout::{self, FanOut, Shard};
use crate::poll::{Mode, Outcome, Poller, Report};
use domain::ports::*;
use domain::source::KareoSource;
use domain::tenant::TenantConfig;

/// The invocation payload: `{}` (a scheduled poll), `{"tenant": "acme"}`,
/// `{"mode": "dry-run"}`, `{"mode": "backfill", "since": "2026-09-01T00:00:00Z"}`,
/// `{"mode": "deletes"}` (appointments), `{"mode": "resync"}` (patients), `{"mode": "audit"}`
/// (the daily coverage audit); a coordinator's shard carries `"shard": {…}` ([`Shard`]). Other
/// members (an EventBridge envelope) are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Payload {
    /// Only this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `poll` (default), `dry-run`, `backfill`, `deletes`, `resync`, `audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Start of a backfill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The schedule's nominal time (`<aws.scheduler.scheduled-time>` in the template's schedule
    /// inputs): the run claims its period before polling. Absent: a run by hand, never claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<DateTime<Utc>>,
    /// Only these tenants, and no fan-out: a shard dispatched by a coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
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
    let chosen = enabled(tenants, family, only);
    poll_chosen(
        poller,
        secrets,
        breakers,
        chosen,
        family,
        mode,
        concurrency,
        deadline,
    )
    .await
}

/// The tenants that enable `family` (only `only`, when named).
fn enabled<'t>(
    tenants: &'t [TenantConfig],
    family: Family,
    only: Option<&str>,
) -> Vec<&'t TenantConfig> {
    tenants
        .iter()
        .filter(|t| t.families.contains_key(&family))
        .filter(|t| only.is_none_or(|o| o == t.tenant))
        .collect()
}

/// Polls `family` for each of `chosen`, `concurrency` at a time.
#[allow(clippy::too_many_arguments)]
async fn poll_chosen<K, C, S, E, T, Sec, B>(
    poller: &Poller<'_, K, C, S, E, T>,
    secrets: &Sec,
    breakers: &B,
    chosen: Vec<&TenantConfig>,
    family: Family,
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
    // One read of every open breaker per invocation (not one per tenant), as of the cursors
    // below: an empty poll of a (tenant, family) is its Kareo read and at most one write.
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
    // One batched read of every chosen tenant's cursor (a poll starts from what it read).
    let cursors = if matches!(mode, Mode::Poll | Mode::DryRun) {
        let ids: Vec<&str> = chosen.iter().map(|t| t.tenant.as_str()).collect();
        match poller.cursors.load_many(&ids, family).await {
            Ok(c) => Some(c),
            Err(e) => {
                return chosen
                    .iter()
                    .map(|t| Report::failed(&t.tenant, family, e.class(), e.to_string()))
                    .collect();
            }
        }
    } else {
        None
    };
    let cursors = &cursors;
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
                    let creds = fresh_if_refused(secrets, open, &t.kareo.secret, creds).await;
                    let seen = cursors.as_ref().map(|c| c.get(&t.tenant).cloned());
                    guarded(breakers, open, poller.clock, t, family, &creds, || {
                        poller.run_from(t, &creds, family, mode, deadline, seen)
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

/// The credentials, read past the secrets' cache when the account's breaker opened on exactly
/// these: the secret may have been fixed since this process cached it (an unreadable fresh
/// value keeps the cached one, and the breaker stays open).
async fn fresh_if_refused<Sec: SecretSource>(
    secrets: &Sec,
    open: &std::sync::Mutex<HashMap<String, Breaker>>,
    account: &str,
    creds: kareo::Credentials,
) -> kareo::Credentials {
    let refused = open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(account)
        .is_some_and(|b| b.fingerprint == credentials_fingerprint(&creds));
    if !refused {
        return creds;
    }
    match secrets.refresh(account).await {
        Ok(v) => kareo_credentials_from(account, &v).unwrap_or(creds),
        Err(_) => creds,
    }
}

/// What one invocation of a family's function did.
#[derive(Debug, Serialize)]
pub struct Invoked {
    /// The family.
    pub family: Family,
    /// `single` (every tenant polled here), `coordinator` (shards dispatched, the first polled
    /// here), `shard` (a coordinator's shard), or `duplicate` (another invocation holds this
    /// scheduled period: nothing polled).
    pub role: &'static str,
    /// The period claimed (`<mode>#<scheduled time>`), for a scheduled run or its shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Shards dispatched to other invocations.
    pub dispatched: usize,
    /// One report per tenant polled here (or whose shard could not be dispatched).
    pub reports: Vec<Report>,
}

/// One invocation of a family's function as Lambda runs it (see [`fanout`]): a shard polls its
/// tenants; a scheduled run claims its period, then polls every tenant itself when they fit
/// in one shard, or else coordinates: dispatches the other shards through `dispatch` and polls
/// the first. A shard that cannot be dispatched is reported failed for each of its tenants
/// (their cursors stay; the next period polls them). Store failures are reported per tenant,
/// as [`poll_tenants`] does; only a payload that cannot be read is an error.
// Long: the three roles (shard, claim, coordinator) in order, written once.
#[allow(clippy::too_many_arguments)]
pub async fn invoke<K, C, S, E, T, Sec, B, P, D>(
    poller: &Poller<'_, K, C, S, E, T>,
    secrets: &Sec,
    breakers: &B,
    periods: &P,
    dispatch: &D,
    tenants: &[TenantConfig],
    family: Family,
    payload: &Payload,
    fan: FanOut,
    concurrency: usize,
    deadline: Option<Instant>,
) -> Result<Invoked, String>
where
    K: KareoSource,
    C: CursorStore,
    S: SnapshotStore,
    E: EventSink,
    T: Clock,
    Sec: SecretSource,
    B: BreakerStore,
    P: PeriodStore,
    D: ShardDispatch,
{
    let mode = payload.mode()?;
    let mut invoked = Invoked {
        family,
        role: "single",
        period: None,
        dispatched: 0,
        reports: Vec::new(),
    };
    macro_rules! poll {
        ($chosen:expr) => {
            poll_chosen(
                poller,
                secrets,
                breakers,
                $chosen,
                family,
                mode,
                concurrency,
                deadline,
            )
        };
    }
    let members = |ids: &[String]| -> HashSet<String> { ids.iter().cloned().collect() };
    let enabled_now = enabled(tenants, family, payload.tenant.as_deref());
    if let Some(shard) = &payload.shard {
        let ids = members(&shard.tenants);
        let chosen = enabled_now
            .into_iter()
            .filter(|t| ids.contains(&t.tenant))
            .collect();
        invoked.role = "shard";
        invoked.period = shard.period.clone();
        invoked.reports = poll!(chosen).await;
        tracing::info!(
            %family, shard = shard.index, of = shard.of, tenants = shard.tenants.len(),
            polled = invoked.reports.len(), "shard polled"
        );
        return Ok(invoked);
    }
    if enabled_now.is_empty() {
        return Ok(invoked);
    }
    if let (Some(at), None) = (payload.scheduled, payload.tenant.as_deref()) {
        let run = format!(
            "{}#{}",
            payload.mode.as_deref().unwrap_or("poll"),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let expires = poller.clock.now().max(at) + chrono::Duration::days(1);
        match periods
            .claim_period(family, &run, &poller.config.owner, expires)
            .await
        {
            Ok(true) => invoked.period = Some(run),
            Ok(false) => {
                tracing::info!(%family, period = %run, "period claimed by another invocation: nothing polled");
                invoked.role = "duplicate";
                invoked.period = Some(run);
                return Ok(invoked);
            }
            Err(e) => {
                tracing::warn!(%family, error = %e, "period not claimed");
                invoked.reports = enabled_now
                    .iter()
                    .map(|t| Report::failed(&t.tenant, family, e.class(), e.to_string()))
                    .collect();
                return Ok(invoked);
            }
        }
    }
    let mut shards = fanout::plan(&enabled_now, fan);
    if shards.len() <= 1 {
        invoked.reports = poll!(enabled_now).await;
        return Ok(invoked);
    }
    invoked.role = "coordinator";
    for s in &mut shards {
        s.period.clone_from(&invoked.period);
    }
    let own = shards.remove(0);
    let sent: Vec<(Shard, Result<(), SinkError>)> = stream::iter(shards)
        .map(|shard| async move {
            let body = Payload {
                tenant: None,
                mode: payload.mode.clone(),
                since: payload.since,
                scheduled: None,
                shard: Some(shard.clone()),
            };
            let result = match serde_json::to_value(&body) {
                Ok(v) => dispatch.dispatch(&v).await,
                Err(_) => Err(SinkError {
                    class: ErrorClass::SinkRejected,
                    message: "a shard payload could not be serialised".into(),
                }),
            };
            (shard, result)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (shard, result) in sent {
        match result {
            Ok(()) => invoked.dispatched += 1,
            Err(e) => {
                tracing::warn!(
                    %family, shard = shard.index, of = shard.of, tenants = shard.tenants.len(),
                    class = e.class.name(), "shard not dispatched: its tenants wait for the next period"
                );
                invoked.reports.extend(shard.tenants.iter().map(|t| {
                    Report::failed(
                        t,
                        family,
                        e.class,
                        format!(
                            "shard {} of {} not dispatched: {}",
                            shard.index + 1,
                            shard.of,
                            e.message
                        ),
                    )
                }));
            }
        }
    }
    let ids = members(&own.tenants);
    let mine = enabled_now
        .into_iter()
        .filter(|t| ids.contains(&t.tenant))
        .collect();
    invoked.reports.extend(poll!(mine).await);
    tracing::info!(
        %family, shards = own.of, dispatched = invoked.dispatched, own = own.tenants.len(),
        "period coordinated"
    );
    Ok(invoked)
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
