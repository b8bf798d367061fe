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
//! - **GetCharges' posting window**: the charges changed in the last 7 days read with the
//!   last-modified pair alone, and again in posting-date slices over a year; more in the slices
//!   means the account applies an implicit posting-date window — FAIL unless the config sets
//!   `families.charges.posting_date_horizon` (and the same on encounters, read through charges);
//! - **row limit**: a 30-day read answering exactly a round number of rows may have been cut;
//! - with `--probe-write PATIENT` (the operator's permission for one write): the patient is
//!   written back with its own values (GetPatient, then UpdatePatient re-sending them: nothing
//!   changes but its stamp), and the new stamp is read back — **Kareo's clock** offset to the
//!   practice's, east or west (FAIL beyond the 6 h the poller allows), and the **bound
//!   semantics** of the last-modified pair (read `[s, s]`, `[s, s+1s]`, `[s−1s, s]` around the
//!   stamp `s`; any reading is covered by default).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Timelike, Utc};
use domain::source::{posting_date_slices, read_window, start_date_slices, KareoSource};
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

/// A setting a probe's failing finding implies, for `check --probe --write` to put in the
/// tenant config: `families.<family>.<key>: <value>` or `kareo.<key>: <value>`. Only FAILs
/// carry one (a finding the probe is sure of); a WARN names its setting in words only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `families.<family>` or `kareo`.
    pub section: String,
    /// The key in that section.
    pub key: String,
    /// The YAML value.
    pub value: String,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}: {}", self.section, self.key, self.value)
    }
}

impl Setting {
    fn family(family: Family, key: &str, value: String) -> Setting {
        Setting {
            section: format!("families.{family}"),
            key: key.into(),
            value,
        }
    }

    /// `text` (a tenant config) with this setting in it, the rest byte for byte: the key
    /// replaced where it is, else added to its family's mapping (inline `{ … }` or block).
    /// An error when the config is written in a way this cannot edit safely.
    pub fn apply(&self, text: &str) -> Result<String, String> {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        let keyed = |l: &str, k: &str| {
            l.trim_start()
                .strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        };
        let (top, child) = match self.section.split_once('.') {
            Some((t, c)) => (t, Some(c)),
            None => (self.section.as_str(), None),
        };
        let start = lines
            .iter()
            .position(|l| indent(l) == 0 && keyed(l, top))
            .ok_or_else(|| format!("no `{top}:` section"))?;
        let end = lines[start + 1..]
            .iter()
            .position(|l| !l.trim().is_empty() && indent(l) == 0 && !l.starts_with('#'))
            .map_or(lines.len(), |n| start + 1 + n);
        // The line holding the mapping to edit: the section itself, or its child.
        let at = match child {
            None => start,
            Some(c) => (start + 1..end)
                .find(|&i| keyed(&lines[i], c))
                .ok_or_else(|| format!("`{}` is not in the config", self.section))?,
        };
        let own = indent(&lines[at]);
        let rest = lines[at]
            .split_once(':')
            .map(|x| x.1)
            .unwrap_or("")
            .trim()
            .to_string();
        let entry = format!("{}: {}", self.key, self.value);
        if let Some(inner) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            // Inline: `appointments: { lookback: 2h }`.
            let mut parts: Vec<String> = inner
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            if parts.iter().any(|p| p.contains(['{', '[', '#'])) {
                return Err(format!(
                    "`{}` is written in a form to edit by hand",
                    self.section
                ));
            }
            match parts.iter_mut().find(|p| keyed(p, &self.key)) {
                Some(p) => *p = entry,
                None => parts.push(entry),
            }
            let head = lines[at]
                .split_once(':')
                .map(|x| x.0)
                .unwrap_or("")
                .to_string();
            lines[at] = format!("{head}: {{ {} }}", parts.join(", "));
        } else if rest.is_empty() || rest.starts_with('#') {
            // Block: the children are the following lines indented deeper.
            let children = (at + 1..lines.len())
                .take_while(|&i| lines[i].trim().is_empty() || indent(&lines[i]) > own)
                .collect::<Vec<_>>();
            let width = children
                .iter()
                .map(|&i| &lines[i])
                .find(|l| !l.trim().is_empty())
                .map_or(own + 2, |l| indent(l));
            match children
                .iter()
                .find(|&&i| indent(&lines[i]) == width && keyed(&lines[i], &self.key))
            {
                Some(&i) => lines[i] = format!("{}{entry}", " ".repeat(width)),
                None => lines.insert(at + 1, format!("{}{entry}", " ".repeat(width))),
            }
        } else {
            return Err(format!(
                "`{}` is written in a form to edit by hand",
                self.section
            ));
        }
        let mut out = lines.join("\n");
        if text.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    }
}

/// One probe's answer: the item, the verdict and, for a failing finding, its settings.
pub type Probe = (String, Result<String, String>, Vec<Setting>);

/// The probes of one tenant's Kareo account.
// Long: the probes in the order the module doc gives them, each one verdict.
pub async fn kareo_probes(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
) -> Vec<Probe> {
    let mut out: Vec<Probe> = Vec::new();
    let push = |out: &mut Vec<Probe>, item: &str, r: Result<String, String>| {
        out.push((item.to_string(), r, Vec::new()));
    };
    let now = Utc::now();
    let span = (now - Duration::days(30), now + Duration::hours(7));
    let tz = t.timezone;

    // Stamps: precision and Kareo's clock, from what changed in the last 30 days.
    let mut versions: Vec<DateTime<Utc>> = Vec::new();
    let mut rows: Vec<(Family, usize)> = Vec::new();
    let mut failure = None;
    for family in [Family::Patients, Family::Appointments] {
        match read_window(kareo, creds, t, family, span, &[], usize::MAX).await {
            Ok(rs) => {
                rows.push((family, rs.len()));
                versions.extend(rs.iter().filter_map(|r| r.version(tz).ok().flatten()));
            }
            Err(e) => failure = Some(kareo_fail(&e)),
        }
    }
    if let Some(f) = failure {
        push(&mut out, "kareo probe: stamps", Err(f));
    } else if versions.len() < 3 {
        push(
            &mut out,
            "kareo probe: stamps",
            Ok(format!(
                "{WARNING}only {} record(s) changed in the last 30 days: too few to tell the stamps' precision or Kareo's clock",
                versions.len()
            )),
        );
    } else {
        let midnight = versions.iter().all(|v| {
            let l = v.with_timezone(&tz);
            l.hour() == 0 && l.minute() == 0 && l.second() == 0
        });
        push(
            &mut out,
            "kareo probe: stamp precision",
            Ok(if midnight {
                format!(
                    "date-only stamps ({} records, all on the practice's midnight): two changes of a record on one day carry one stamp; covered by default (windows start at the start of the day, equal stamps are told apart by content); no setting",
                    versions.len()
                )
            } else {
                format!("stamps carry the time of day ({} records)", versions.len())
            }),
        );
        let newest = versions.iter().max().copied().unwrap_or(now);
        let ahead = newest - now;
        push(
            &mut out,
            "kareo probe: Kareo's clock",
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
        );
    }

    if t.families.contains_key(&Family::Appointments) {
        let (r, setting) = appointment_window(t, kareo, creds, span).await;
        out.push((
            "kareo probe: GetAppointments date window".into(),
            r,
            setting.into_iter().collect(),
        ));
    }

    if t.families.contains_key(&Family::Charges) || t.families.contains_key(&Family::Encounters) {
        let (r, settings) = posting_window(t, kareo, creds, now).await;
        out.push(("kareo probe: GetCharges posting window".into(), r, settings));
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
        out.push((format!("kareo probe: row limit ({family})"), r, Vec::new()));
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
) -> (Result<String, String>, Option<Setting>) {
    let horizon = std::time::Duration::from_secs(PROBE_HORIZON_DAYS * 86_400);
    let slices = start_date_slices(span.1, horizon);
    let plain = read_window(kareo, creds, t, Family::Appointments, span, &[], usize::MAX).await;
    let sliced = read_window(
        kareo,
        creds,
        t,
        Family::Appointments,
        span,
        &slices,
        usize::MAX,
    )
    .await;
    let configured = t
        .family(Family::Appointments)
        .and_then(|s| s.start_date_horizon);
    match (plain, sliced) {
        (Err(e), _) | (_, Err(e)) => (Err(kareo_fail(&e)), None),
        (Ok(p), Ok(s)) => {
            let (p, s) = (ids(&p), ids(&s));
            let missing = s.difference(&p).count();
            match (missing, configured) {
                (0, _) => (Ok(format!(
                    "the last-modified pair is applied alone ({} appointment(s) changed in the last 30 days, the same by StartDate slices)",
                    p.len()
                )), None),
                (n, Some(h)) => (Ok(format!(
                    "GetAppointments applies its default StartDate window ({n} of {} changed appointments missing without StartDate); the config reads StartDate slices up to {} ahead",
                    s.len(),
                    humantime::format_duration(h)
                )), None),
                (n, None) => (Err(format!(
                    "GetAppointments applies its default StartDate window even with a last-modified pair: {n} of {} appointments changed in the last 30 days are missing without StartDate, and changes to appointments booked further out would never arrive; set `families.appointments.start_date_horizon: {PROBE_HORIZON_DAYS}d` in the tenant config",
                    s.len()
                )), Some(Setting::family(Family::Appointments, "start_date_horizon", format!("{PROBE_HORIZON_DAYS}d")))),
            }
        }
    }
}

/// Does GetCharges apply an implicit posting-date window? The charges changed in the last 7
/// days (the charges families' default window: wider ones may answer nothing), read with the
/// last-modified pair alone and in posting-date slices over a year.
async fn posting_window(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
    now: DateTime<Utc>,
) -> (Result<String, String>, Vec<Setting>) {
    let span = (now - Duration::days(7), now + Duration::hours(7));
    let horizon = std::time::Duration::from_secs(PROBE_HORIZON_DAYS * 86_400);
    let slices = posting_date_slices(span.1, horizon);
    let plain = read_window(kareo, creds, t, Family::Charges, span, &[], usize::MAX).await;
    let sliced = read_window(kareo, creds, t, Family::Charges, span, &slices, usize::MAX).await;
    let configured: Vec<Family> = [Family::Charges, Family::Encounters]
        .into_iter()
        .filter(|f| t.families.contains_key(f))
        .filter(|f| t.family(*f).and_then(|s| s.posting_date_horizon).is_none())
        .collect();
    match (plain, sliced) {
        (Err(e), _) | (_, Err(e)) => (Err(kareo_fail(&e)), Vec::new()),
        (Ok(p), Ok(s)) => {
            let (p, s) = (ids(&p), ids(&s));
            match s.difference(&p).count() {
                0 => (Ok(format!(
                    "the last-modified pair is applied alone ({} charge(s) changed in the last 7 days, the same by posting-date slices)",
                    p.len()
                )), Vec::new()),
                n if configured.is_empty() => (Ok(format!(
                    "GetCharges applies an implicit posting-date window ({n} of {} changed charges missing without posting dates); the config reads posting-date slices",
                    s.len()
                )), Vec::new()),
                n => (Err(format!(
                    "GetCharges applies an implicit posting-date window even with a last-modified pair: {n} of {} charges changed in the last 7 days are missing without posting dates, and changes to charges posted earlier would never arrive; set {} in the tenant config",
                    s.len(),
                    configured
                        .iter()
                        .map(|f| format!("`families.{f}.posting_date_horizon: {PROBE_HORIZON_DAYS}d`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )), configured.iter().map(|f| Setting::family(*f, "posting_date_horizon", format!("{PROBE_HORIZON_DAYS}d"))).collect()),
            }
        }
    }
}

/// The probes that need one write: a patient written back with its own values, its new stamp
/// read back (ids and stamps only are printed).
pub async fn write_probes(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
    patient: i64,
) -> Vec<Probe> {
    let clock = "kareo probe (write): Kareo's clock".to_string();
    let (written, stamp) = match touch(t, kareo, creds, patient).await {
        Ok(w) => w,
        Err(e) => return vec![(clock, Err(e), Vec::new())],
    };
    let local = stamp.with_timezone(&t.timezone);
    let date_only = local.hour() == 0 && local.minute() == 0 && local.second() == 0;
    let offset = stamp - written;
    let hours = offset.num_minutes() as f64 / 60.0;
    let side = if hours < 0.0 { "west" } else { "east" };
    let verdict = if date_only {
        Ok("the stamp is date-only: Kareo's clock cannot be read from it (covered by default: windows start at the start of the practice's day)".into())
    } else if offset.num_minutes().abs() <= 5 {
        Ok(format!(
            "Kareo stamps on the practice's clock (patient {patient} written and stamped within {} s)",
            offset.num_seconds().abs()
        ))
    } else if offset.abs() <= Duration::hours(6) {
        Ok(format!(
            "Kareo stamps {:.1} h {side} of the practice's clock (patient {patient}); covered by the 6 h allowance",
            hours.abs()
        ))
    } else {
        Err(format!(
            "Kareo stamps {:.1} h {side} of the practice's clock (patient {patient}): beyond the 6 h the poller allows, changes would fall outside every window; report it (no setting covers it)",
            hours.abs()
        ))
    };
    let mut out = vec![(clock, verdict, Vec::new())];
    if !date_only {
        out.push((
            "kareo probe (write): filter bounds".into(),
            bound_semantics(t, kareo, creds, patient, stamp).await,
            Vec::new(),
        ));
    }
    out
}

/// Writes `patient` back with its own values (GetPatient, then UpdatePatient re-sending them)
/// and reads its new stamp: (when it was written, the stamp Kareo gave it).
async fn touch(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
    patient: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let current = kareo
        .patient(creds, patient)
        .await
        .map_err(|e| kareo_fail(&e))?
        .ok_or_else(|| format!("patient {patient} was not found: give one this probe may touch"))?;
    let fields: std::collections::BTreeMap<String, String> = current
        .texts()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = writeback::write::command::update_body(
        t,
        patient,
        &fields,
        &writeback::write::command::PatientChanges::default(),
    )
    .map_err(|p| format!("patient {patient}: {}: {}", p.field, p.problem))?;
    let op = kareo::op("UpdatePatient").expect("in the schema");
    let written = Utc::now();
    kareo
        .call(creds, op, &body)
        .await
        .map_err(|e| format!("UpdatePatient {patient}: {}", kareo_fail(&e)))?;
    // The stamp: the patient among those changed within 14 h of the write, either way.
    let span = (written - Duration::hours(14), written + Duration::hours(14));
    let rs = read_window(kareo, creds, t, Family::Patients, span, &[], usize::MAX)
        .await
        .map_err(|e| kareo_fail(&e))?;
    let stamp = rs
        .iter()
        .find(|r| r.id() == Some(&patient.to_string()))
        .and_then(|r| r.version(t.timezone).ok().flatten())
        .ok_or_else(|| format!(
            "patient {patient} was written but not found among the patients changed within 14 h of the write: Kareo's clock is further off than that, or its stamps lag"
        ))?;
    Ok((written, stamp))
}

/// Which ends of the last-modified pair are inclusive: the patient read at its own stamp `s`,
/// with `[s, s]`, `[s, s+1s]` and `[s−1s, s]`.
async fn bound_semantics(
    t: &TenantConfig,
    kareo: &KareoClient,
    creds: &Credentials,
    patient: i64,
    stamp: DateTime<Utc>,
) -> Result<String, String> {
    let one = Duration::seconds(1);
    let mut found = Vec::new();
    for (a, b) in [(stamp, stamp), (stamp, stamp + one), (stamp - one, stamp)] {
        let rs = read_window(kareo, creds, t, Family::Patients, (a, b), &[], usize::MAX)
            .await
            .map_err(|e| kareo_fail(&e))?;
        found.push(rs.iter().any(|r| r.id() == Some(&patient.to_string())));
    }
    let end = |inclusive: bool| if inclusive { "inclusive" } else { "exclusive" };
    Ok(format!(
        "From {}, To {} (patient {patient} at its own stamp); covered by default (slices are read from 1 s before their lower bound)",
        end(found[0] || found[1]),
        end(found[0] || found[2])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "tenant: acme   # the practice\nkareo:\n  secret: kareo-dock/kareo/acme\n  practice: Acme\nfamilies:\n  appointments: {}\n  charges: { lookback: 2h }\n  encounters:\n    lookback: 3h   # slower\n  patients: {}\nrules: []\n";

    fn set(section: &str, key: &str, value: &str) -> Setting {
        Setting {
            section: section.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_setting_goes_where_it_belongs_and_the_rest_stays_as_written() {
        let out = set("families.appointments", "start_date_horizon", "365d")
            .apply(CONFIG)
            .unwrap();
        assert!(
            out.contains("  appointments: { start_date_horizon: 365d }\n"),
            "{out}"
        );
        let out = set("families.charges", "posting_date_horizon", "365d")
            .apply(&out)
            .unwrap();
        assert!(
            out.contains("  charges: { lookback: 2h, posting_date_horizon: 365d }\n"),
            "{out}"
        );
        let out = set("families.encounters", "posting_date_horizon", "365d")
            .apply(&out)
            .unwrap();
        assert!(
            out.contains(
                "  encounters:\n    posting_date_horizon: 365d\n    lookback: 3h   # slower\n"
            ),
            "{out}"
        );
        let out = set("kareo", "row_cap", "400").apply(&out).unwrap();
        assert!(out.contains("kareo:\n  row_cap: 400\n  secret:"), "{out}");
        // Again: replaced, not added twice.
        let again = set("kareo", "row_cap", "300").apply(&out).unwrap();
        assert_eq!(again.matches("row_cap").count(), 1);
        assert!(again.contains("  row_cap: 300\n"));
        let again = set("families.charges", "posting_date_horizon", "90d")
            .apply(&again)
            .unwrap();
        assert!(again.contains("  charges: { lookback: 2h, posting_date_horizon: 90d }\n"));
        // Everything else byte for byte.
        for line in CONFIG
            .lines()
            .filter(|l| !l.starts_with("  appointments") && !l.starts_with("  charges"))
        {
            assert!(again.contains(line), "{line}");
        }
        assert!(again.ends_with("rules: []\n"));
        // The edited config reads, with the settings in effect.
        let t = TenantConfig::from_yaml(
            &again.replace("tenant: acme   # the practice\n", "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\ndock:\n  secret: d\n"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(t.kareo.row_cap, Some(300));
        assert!(t
            .family(Family::Encounters)
            .unwrap()
            .posting_date_horizon
            .is_some());
        // What cannot be edited safely is refused, never guessed.
        assert!(set("families.providers", "x", "1").apply(CONFIG).is_err());
        assert!(set("families.charges", "x", "1")
            .apply("families:\n  charges: { a: [1, 2] }\n")
            .is_err());
    }
}
