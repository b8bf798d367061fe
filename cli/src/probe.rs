//! `kareo-dock check --probe`: experiments against the live Kareo account for what Kareo does
//! not document (`docs/kareo-unknowns.md`), each one verdict naming the finding and the setting
//! it implies. Reads only: ids and stamps are compared, no record content is printed.
//!
//! - **stamp precision**: the versions of the records changed in the last 30 days — all on
//!   the practice's midnight means date-only stamps (survived by default);
//! - **Kareo's clock**: a newest stamp ahead of now means Kareo stamps east of the practice (up
//!   to 6 h is covered by default; a clock behind cannot be seen without a write);
//! - **GetAppointments' date window**: the appointments changed in the last 30 days read with
//!   the last-modified pair alone, and again in StartDate slices; more in the slices means the
//!   account applies its default StartDate window — FAIL unless the config sets
//!   `families.appointments.start_date_horizon`;
//! - **row limit**: a 30-day read answering exactly a round number of rows may have been cut.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Timelike, Utc};
use domain::source::{read_window, start_date_slices};
use domain::TenantConfig;
use kareo::{Credentials, Family, KareoClient, Record};

use crate::common::{kareo_fail, WARNING};

/// The horizon `check --probe` reads StartDate slices over, and suggests.
const PROBE_HORIZON_DAYS: u64 = 365;

fn ids(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.id().map(str::to_string))
        .collect()
}

/// The probes of one tenant's Kareo account: (item, verdict).
pub async fn kareo_probes(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    let now = Utc::now();
    let span = (now - Duration::days(30), now + Duration::hours(7));
    let tz = t.timezone;

    // Stamps: precision and Kareo's clock, from what changed in the last 30 days.
    let mut versions: Vec<DateTime<Utc>> = Vec::new();
    let mut rows: Vec<(Family, usize)> = Vec::new();
    let mut failure = None;
    for family in [Family::Patients, Family::Appointments] {
        match read_window(kareo, creds, t, family, span, &[]).await {
            Ok(rs) => {
                rows.push((family, rs.len()));
                versions.extend(rs.iter().filter_map(|r| r.version(tz).ok().flatten()));
            }
            Err(e) => failure = Some(kareo_fail(&e)),
        }
    }
    if let Some(f) = failure {
        out.push(("kareo probe: stamps".into(), Err(f)));
    } else if versions.len() < 3 {
        out.push((
            "kareo probe: stamps".into(),
            Ok(format!(
                "{WARNING}only {} record(s) changed in the last 30 days: too few to tell the stamps' precision or Kareo's clock",
                versions.len()
            )),
        ));
    } else {
        let midnight = versions.iter().all(|v| {
            let l = v.with_timezone(&tz);
            l.hour() == 0 && l.minute() == 0 && l.second() == 0
        });
        out.push((
            "kareo probe: stamp precision".into(),
            Ok(if midnight {
                format!(
                    "date-only stamps ({} records, all on the practice's midnight): two changes of a record on one day carry one stamp; covered by default (windows start at the start of the day, equal stamps are told apart by content); no setting",
                    versions.len()
                )
            } else {
                format!("stamps carry the time of day ({} records)", versions.len())
            }),
        ));
        let newest = versions.iter().max().copied().unwrap_or(now);
        let ahead = newest - now;
        out.push((
            "kareo probe: Kareo's clock".into(),
            if ahead > Duration::hours(6) {
                Err(format!(
                    "the newest stamp is {} h ahead of now: Kareo stamps further east of the practice than the 6 h the poller allows; changes arrive that much later",
                    ahead.num_hours()
                ))
            } else if ahead > Duration::minutes(5) {
                Ok(format!(
                    "the newest stamp is about {} min ahead of now: Kareo stamps east of the practice's clock; covered by the 6 h allowance",
                    ahead.num_minutes()
                ))
            } else {
                Ok("no stamp ahead of now (a clock behind the practice's cannot be seen without a write; up to 6 h is covered)".into())
            },
        ));
    }

    if t.families.contains_key(&Family::Appointments) {
        out.push((
            "kareo probe: GetAppointments date window".into(),
            appointment_window(t, kareo, creds, span).await,
        ));
    }

    // A row limit: a read answering exactly a round number of rows.
    for (family, n) in rows {
        let r = if n >= 100 && n % 100 == 0 {
            Ok(format!(
                "{WARNING}30 days of {family} answered exactly {n} rows: Kareo may cut responses at that count; the poller splits any window answering 1,000 rows or more{}",
                if n < 1000 {
                    format!(" — set `kareo.row_cap: {n}` if it is a cut")
                } else {
                    String::new()
                }
            ))
        } else {
            Ok(format!(
                "30 days of {family} answered {n} rows (no sign of a cut)"
            ))
        };
        out.push((format!("kareo probe: row limit ({family})"), r));
    }
    out
}

/// Does GetAppointments apply its default StartDate window even with a last-modified pair?
/// The appointments changed in `span`, read with the pair alone and in StartDate slices.
async fn appointment_window(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
    span: (DateTime<Utc>, DateTime<Utc>),
) -> Result<String, String> {
    let horizon = std::time::Duration::from_secs(PROBE_HORIZON_DAYS * 86_400);
    let slices = start_date_slices(span.1, horizon);
    let plain = read_window(kareo, creds, t, Family::Appointments, span, &[]).await;
    let sliced = read_window(kareo, creds, t, Family::Appointments, span, &slices).await;
    let configured = t
        .family(Family::Appointments)
        .and_then(|s| s.start_date_horizon);
    match (plain, sliced) {
        (Err(e), _) | (_, Err(e)) => Err(kareo_fail(&e)),
        (Ok(p), Ok(s)) => {
            let (p, s) = (ids(&p), ids(&s));
            let missing = s.difference(&p).count();
            match (missing, configured) {
                (0, _) => Ok(format!(
                    "the last-modified pair is applied alone ({} appointment(s) changed in the last 30 days, the same by StartDate slices)",
                    p.len()
                )),
                (n, Some(h)) => Ok(format!(
                    "GetAppointments applies its default StartDate window ({n} of {} changed appointments missing without StartDate); the config reads StartDate slices up to {} ahead",
                    s.len(),
                    humantime::format_duration(h)
                )),
                (n, None) => Err(format!(
                    "GetAppointments applies its default StartDate window even with a last-modified pair: {n} of {} appointments changed in the last 30 days are missing without StartDate, and changes to appointments booked further out would never arrive; set `families.appointments.start_date_horizon: {PROBE_HORIZON_DAYS}d` in the tenant config",
                    s.len()
                )),
            }
        }
    }
}
