//! `kareo-dock status`: per tenant and family, where the cursor stands, how far behind it is,
//! when the last run succeeded, and the class of the last error; then any Kareo account whose
//! breaker is open (no function calls Kareo for it until its secret changes or `tenant
//! resume`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use domain::ports::{paused_tenant, Breaker, BreakerStore, Cursor, CursorStore, TenantStore};
use domain::tenant::Shadow;
use serde::Serialize;

use crate::common::{self, Exit, Outcome, StoreArgs};

/// `status` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Print a JSON array (one object per tenant and family).
    #[arg(long)]
    json: bool,
}

/// One line of the status.
#[derive(Serialize)]
struct Row {
    tenant: String,
    family: &'static str,
    /// Upper bound of the last fully handed-off window.
    position: Option<DateTime<Utc>>,
    /// now − position, in seconds.
    lag_seconds: Option<i64>,
    /// Largest record version handed off.
    high_water: Option<DateTime<Utc>>,
    /// Start of the last successful run.
    last_success: Option<DateTime<Utc>>,
    /// The last error (cleared by the next success): class, message (ids only), when.
    last_error: Option<LastError>,
    /// A run holds the lease until then.
    leased_until: Option<DateTime<Utc>>,
    /// The family is enabled in the stored config but has never run.
    never_run: bool,
    /// The tenant's Kareo account's breaker is open since then: nothing calls Kareo for it.
    breaker_open_since: Option<DateTime<Utc>>,
    /// The tenant is paused since then (`tenant pause`): not polled.
    paused_since: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct LastError {
    class: String,
    message: String,
    at: DateTime<Utc>,
}

/// Exit codes: 0 every cursor is healthy; 3 the state could not be read; 4 some cursor's
/// last run failed (its class is shown).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(status(args).await) })
}

async fn status(args: Args) -> Outcome {
    let store = args.store.open().await?;
    let now = Utc::now();
    let cursors = store.list().await.map_err(common::store_exit)?;
    let holds = store.breakers().await.map_err(common::store_exit)?;
    let (pauses, breakers): (Vec<_>, Vec<_>) = holds
        .into_iter()
        .partition(|(k, _)| paused_tenant(k).is_some());
    let paused: BTreeMap<&str, DateTime<Utc>> = pauses
        .iter()
        .filter_map(|(k, b)| Some((paused_tenant(k)?, b.opened_at)))
        .collect();
    // Families enabled in the stored configs but without a cursor yet: "never run". A stored
    // config that no longer reads is not this verb's concern (tenant put checks them).
    let stored = store.tenants().await.unwrap_or_default();
    let shadows: Vec<(String, Shadow)> = stored
        .iter()
        .filter(|t| args.tenant.as_ref().is_none_or(|a| *a == t.tenant))
        .filter_map(|t| Some((t.tenant.clone(), t.shadowing(now)?.clone())))
        .collect();
    let account: BTreeMap<String, String> = stored
        .iter()
        .map(|t| (t.tenant.clone(), t.kareo.secret.clone()))
        .collect();
    let open: BTreeMap<&str, DateTime<Utc>> = breakers
        .iter()
        .map(|(a, b)| (a.as_str(), b.opened_at))
        .collect();
    let mut rows: BTreeMap<(String, &'static str), Row> = BTreeMap::new();
    for (tenant, family, c) in cursors {
        rows.insert(
            (tenant.clone(), family.name()),
            row(tenant, family.name(), &c, now),
        );
    }
    for t in stored {
        for f in t.families.keys() {
            rows.entry((t.tenant.clone(), f.name()))
                .or_insert_with(|| Row {
                    never_run: true,
                    ..row(t.tenant.clone(), f.name(), &Cursor::default(), now)
                });
        }
    }
    for r in rows.values_mut() {
        r.breaker_open_since = account
            .get(&r.tenant)
            .and_then(|a| open.get(a.as_str()))
            .copied();
        r.paused_since = paused.get(r.tenant.as_str()).copied();
    }
    let rows: Vec<Row> = rows
        .into_values()
        .filter(|r| args.tenant.as_ref().is_none_or(|t| *t == r.tenant))
        .collect();
    if let (Some(t), true) = (&args.tenant, rows.is_empty()) {
        return Err(Exit(
            common::USAGE,
            format!("no cursor or stored config for tenant '{t}'"),
        ));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| Exit(common::USAGE, e.to_string()))?
        );
    } else if rows.is_empty() && breakers.is_empty() && pauses.is_empty() {
        println!("no cursors yet");
    } else {
        table(&rows, now);
    }
    if !args.json {
        holds_lines(&breakers, &shadows, &paused);
    }
    Ok(
        if rows.iter().any(|r| r.last_error.is_some()) || !breakers.is_empty() {
            ExitCode::from(common::FAILED)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The table of cursors, one line per (tenant, family).
fn table(rows: &[Row], now: DateTime<Utc>) {
    println!(
        "{:<16} {:<18} {:<21} {:>8}  {:<21} LAST ERROR",
        "TENANT", "FAMILY", "POSITION", "LAG", "LAST SUCCESS"
    );
    for r in rows {
        let error = match (&r.last_error, r.never_run) {
            (Some(e), _) => format!("{} at {}", e.class, common::when(Some(e.at))),
            (None, true) => "never run".into(),
            (None, false) => "-".into(),
        };
        let lease = match (r.paused_since, r.leased_until) {
            (Some(p), _) => format!(" (PAUSED since {})", common::when(Some(p))),
            (None, Some(u)) if u > now => {
                format!(" (running until {})", common::when(Some(u)))
            }
            _ => String::new(),
        };
        println!(
            "{:<16} {:<18} {:<21} {:>8}  {:<21} {error}{lease}",
            r.tenant,
            r.family,
            common::when(r.position),
            r.lag_seconds
                .map(|s| common::human(chrono::Duration::seconds(s)))
                .unwrap_or_else(|| "-".into()),
            common::when(r.last_success),
        );
    }
}

/// The account- and tenant-wide lines under the table: open breakers, shadow modes, pauses.
fn holds_lines(
    breakers: &[(String, Breaker)],
    shadows: &[(String, Shadow)],
    paused: &BTreeMap<&str, DateTime<Utc>>,
) {
    for (account, b) in breakers {
        println!(
            "BREAKER OPEN on Kareo account {account} since {} ({}): fix the secret or `kareo-dock tenant resume --account {account}`",
            common::when(Some(b.opened_at)),
            b.by
        );
    }
    for (tenant, s) in shadows {
        println!(
            "SHADOW tenant {tenant} until {}: {}",
            common::when(Some(s.until)),
            match &s.list {
                Some(l) => format!("every task goes to the preview list '{l}'"),
                None => "tasks are reported, not created".into(),
            }
        );
    }
    for (tenant, since) in paused {
        println!(
            "PAUSED tenant {tenant} since {}: `kareo-dock tenant resume --tenant {tenant}`",
            common::when(Some(*since))
        );
    }
}

fn row(tenant: String, family: &'static str, c: &Cursor, now: DateTime<Utc>) -> Row {
    Row {
        tenant,
        family,
        position: c.position,
        lag_seconds: c.position.map(|p| (now - p).num_seconds()),
        high_water: c.high_water,
        last_success: c.last_success_start,
        last_error: c.last_error.as_ref().map(|e| LastError {
            class: e.class.to_string(),
            message: e.message.clone(),
            at: e.at,
        }),
        leased_until: c.lease_until.filter(|_| c.lease_owner.is_some()),
        never_run: false,
        breaker_open_since: None,
        paused_since: None,
    }
}
