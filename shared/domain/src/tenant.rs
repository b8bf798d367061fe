#![doc = include_str!("../../../docs/configuration.md")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kareo::Family;
use saphyr::{MarkedYaml, Scalar, YamlData};

use crate::config::{self, line, ConfigError, Entries, Reader};
use crate::mapping::Mapping;

/// A tenant's configuration, read from the operator's YAML text (kept verbatim: stores write
/// back exactly what was put).
#[derive(Clone)]
pub struct TenantConfig {
    /// Tenant id.
    pub tenant: String,
    /// The practice's zone.
    pub timezone: Tz,
    /// Where a new cursor starts.
    pub start: DateTime<Utc>,
    /// Kareo side.
    pub kareo: KareoSide,
    /// Dock side.
    pub dock: DockSide,
    /// Windows end at `now − safety_lag` (default 2 minutes).
    pub safety_lag: Duration,
    /// Enabled families and their settings.
    pub families: BTreeMap<Family, FamilySettings>,
    /// The task rules (`rules:`).
    pub mapping: Mapping,
    /// Dock webhooks → Kareo write commands (`webhooks:`, see [`crate::hooks`]); absent: none.
    pub hooks: crate::hooks::WebhookConfig,
    /// When the practice is open (`business_hours:`), for the families' `off_hours_cadence`.
    pub business_hours: Option<BusinessHours>,
    /// Go-live rehearsal (`shadow:`): until its end, every task goes to a preview list (or
    /// only to the report) instead of the rules' lists.
    pub shadow: Option<Shadow>,
    /// Who may send write commands for this tenant over the write function's URL
    /// (`writers:`, IAM principal ARNs; see [`crate::writers`]). Empty: no one.
    pub writers: crate::writers::Writers,
    /// The text it was read from.
    text: String,
}

/// Kareo settings of a tenant.
#[derive(Clone)]
pub struct KareoSide {
    /// Name of the secret holding the Kareo credentials.
    pub secret: String,
    /// The practice's name (Kareo's `PracticeName` filter, required by most reads).
    pub practice: String,
    /// The practice's id (`PracticeID` filter, where the read has one).
    pub practice_id: Option<i64>,
    /// A response of this many rows or more is treated as cut and its window split (default:
    /// the poller's, 1,000). For an account that cuts responses below that (`check --probe`
    /// warns of a round row count).
    pub row_cap: Option<usize>,
}

/// Dock settings of a tenant.
#[derive(Clone)]
pub struct DockSide {
    /// Name of the secret holding the Dock credentials: the tenant's own, or a partner secret
    /// shared by the deployment's tenants (see [`crate::ports::dock_credentials`]).
    pub secret: String,
    /// `x-organization-id`, when the secret does not hold it (a shared partner secret).
    pub organization_id: Option<String>,
    /// `x-user-id`, when the secret does not hold it.
    pub user_id: Option<String>,
}

/// Per-family settings.
#[derive(Clone, Default)]
pub struct FamilySettings {
    /// How far before the cursor each window starts (default: the family's).
    pub lookback: Option<Duration>,
    /// Largest window read in one call (default and ceiling: the family's).
    pub max_window: Option<Duration>,
    /// Where this family's new cursor starts (default: the tenant's `start`).
    pub start: Option<DateTime<Utc>>,
    /// Appointments only: also read each window in `StartDate` slices (of at most 60 days)
    /// from 30 days back to this far ahead, for an account whose GetAppointments applies its
    /// default StartDate window even with a last-modified pair (`check --probe` finds it).
    pub start_date_horizon: Option<Duration>,
    /// Charges and encounters only: also read each window in `FromPostingDate`/`ToPostingDate`
    /// slices (of at most 60 days, Kareo's posting-window limit) from this far back to 59
    /// days ahead, for an account whose GetCharges applies an implicit posting-date window
    /// (`check --probe` finds it).
    pub posting_date_horizon: Option<Duration>,
    /// Poll no more often than this (the schedule fires more often; a run that comes sooner
    /// after the last successful one reports `not_due` and reads nothing). Default: every run.
    pub cadence: Option<Duration>,
    /// The cadence outside `business_hours` (default: `cadence`).
    pub off_hours_cadence: Option<Duration>,
}

/// Shadow mode (`shadow: { until: 2026-12-10T00:00:00Z, list: Kareo Preview }`): before
/// `until`, each task a rule would create goes to `list` instead — one plain task titled with
/// the rule and where it would have gone — or, without `list`, is only counted and logged.
/// Either way the (event, rule) is settled in the ledger, so after `until` what shadow already
/// showed is not created again; changes after it land in the rules' lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadow {
    /// The end of shadow mode.
    pub until: DateTime<Utc>,
    /// The preview list, by name; `None`: report only.
    pub list: Option<String>,
}

impl Shadow {
    /// The rule as shadow mode applies it: a plain task in the preview list, titled with the
    /// rule and its target (no group, template, assignee, due date or patient link).
    pub fn preview(&self, rule: &crate::mapping::Rule) -> crate::mapping::Rule {
        let t = &rule.task;
        let plain = |s: &str| s.replace(['{', '}'], "");
        let target = match (&t.workflow, &t.workflow_id, &t.group) {
            (Some(w), _, g) | (None, Some(w), g) => format!(
                "would deploy {} in {}{}",
                plain(w),
                plain(&t.list),
                g.as_deref()
                    .map(|g| format!(" / {}", plain(g)))
                    .unwrap_or_default()
            ),
            (None, None, Some(g)) => format!("{} / {}", plain(&t.list), plain(g)),
            (None, None, None) => plain(&t.list),
        };
        let text = format!(
            "[preview] {} → {target}: {}",
            plain(&rule.name),
            t.description.as_str()
        );
        let description = crate::mapping::Template::parse(&text, rule.interface)
            .unwrap_or_else(|_| t.description.clone());
        crate::mapping::Rule {
            task: crate::mapping::TaskSpec {
                description,
                priority: t.priority,
                ..crate::mapping::TaskSpec::plain(self.list.clone().unwrap_or_default())
            },
            ..rule.clone()
        }
    }
}

/// When the practice is open, on its wall clock: `business_hours: Mon-Fri 07:00-19:00` (days
/// as a range or a comma list, `Mon`…`Sun`; the closing time is exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessHours {
    /// Open days, Monday first.
    pub days: [bool; 7],
    /// Opening time.
    pub open: chrono::NaiveTime,
    /// Closing time (after `open`).
    pub close: chrono::NaiveTime,
}

impl BusinessHours {
    /// Reads `Mon-Fri 07:00-19:00`.
    pub fn parse(text: &str) -> Result<BusinessHours, String> {
        use chrono::{NaiveTime, Weekday};
        let bad = || format!("'{text}' is not days and hours (e.g. Mon-Fri 07:00-19:00)");
        let (days, hours) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(bad)?;
        let day = |d: &str| d.trim().parse::<Weekday>().map_err(|_| bad());
        let mut open_days = [false; 7];
        for part in days.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        open_days[d.num_days_from_monday() as usize] = true;
                        if d == b {
                            break;
                        }
                        d = d.succ();
                    }
                }
                None => open_days[day(part)?.num_days_from_monday() as usize] = true,
            }
        }
        let (o, c) = hours.trim().split_once('-').ok_or_else(bad)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| bad());
        let (open, close) = (time(o)?, time(c)?);
        if close <= open {
            return Err(format!(
                "'{text}': the closing time must come after the opening time"
            ));
        }
        Ok(BusinessHours {
            days: open_days,
            open,
            close,
        })
    }

    /// Whether the practice is open at `t`, in zone `tz`.
    pub fn contains(&self, t: DateTime<Utc>, tz: Tz) -> bool {
        use chrono::Datelike;
        let local = t.with_timezone(&tz);
        let time = local.time();
        self.days[local.weekday().num_days_from_monday() as usize]
            && time >= self.open
            && time < self.close
    }
}

fn default_lag() -> Duration {
    Duration::from_secs(120)
}

impl TenantConfig {
    /// Reads and checks a tenant config file.
    pub fn from_file(path: &Path) -> Result<TenantConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        TenantConfig::from_yaml(&text, &path.display().to_string())
    }

    /// Reads and checks a tenant config from YAML text; `source` names it in errors. The text
    /// is parsed once and every section reports into one list: all problems of the file come
    /// back together, sorted by line (one error, or one whose reason lists them).
    pub fn from_yaml(text: &str, source: &str) -> Result<TenantConfig, ConfigError> {
        let root = config::load(text, source)?;
        let mut r = Reader::new(text, source);
        let cfg = read(&root, &mut r, text);
        let mut problems = r.into_errors();
        match (cfg, problems.len()) {
            (Some(cfg), 0) => Ok(cfg),
            (_, 0) => unreachable!("a config that did not read has a problem"),
            (_, 1) => Err(problems.remove(0)),
            (_, n) => {
                let all_rules = problems
                    .iter()
                    .all(|p| p.reason.starts_with("rules") || p.reason.starts_with("webhooks"));
                let what = if all_rules {
                    "the mapping"
                } else {
                    "the config"
                };
                Err(ConfigError {
                    file: source.to_string(),
                    line: problems[0].line,
                    reason: format!(
                        "{n} problems in {what}:\n{}",
                        problems
                            .iter()
                            .map(|p| match p.line {
                                Some(l) => format!("line {l}: {}", p.reason),
                                None => p.reason.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                })
            }
        }
    }

    /// The settings of a family, defaults applied.
    pub fn family(&self, family: Family) -> Option<Effective> {
        let s = self.families.get(&family)?;
        let p = crate::policy::of(family);
        Some(Effective {
            lookback: s.lookback.unwrap_or(p.lookback),
            max_window: s.max_window.unwrap_or(p.default_window),
            start: s.start.unwrap_or(self.start),
            start_date_horizon: s.start_date_horizon,
            posting_date_horizon: s.posting_date_horizon,
        })
    }

    /// Shadow mode, when it is on at `now`.
    pub fn shadowing(&self, now: DateTime<Utc>) -> Option<&Shadow> {
        self.shadow.as_ref().filter(|s| now < s.until)
    }

    /// How often `family` is polled at `now`: its `off_hours_cadence` outside business hours,
    /// else its `cadence`; `None`: on every scheduled run.
    pub fn cadence(&self, family: Family, now: DateTime<Utc>) -> Option<Duration> {
        let s = self.families.get(&family)?;
        let open = self
            .business_hours
            .as_ref()
            .is_none_or(|h| h.contains(now, self.timezone));
        if open {
            s.cadence
        } else {
            s.off_hours_cadence.or(s.cadence)
        }
    }

    /// The config's text, exactly as the operator wrote it (for `tenant put`, `tenant get`
    /// and the stores): comments, quoting and `1.50` or `007` survive.
    pub fn to_yaml(&self) -> String {
        self.text.clone()
    }
}

/// A family's settings with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Lookback before the cursor.
    pub lookback: Duration,
    /// Largest window per call.
    pub max_window: Duration,
    /// Start of a new cursor.
    pub start: DateTime<Utc>,
    /// Appointments: read in StartDate slices up to this far ahead (see [`FamilySettings`]).
    pub start_date_horizon: Option<Duration>,
    /// Charges, encounters: read in posting-date slices from this far back.
    pub posting_date_horizon: Option<Duration>,
}

const KEYS: [&str; 12] = [
    "tenant",
    "writers",
    "business_hours",
    "shadow",
    "timezone",
    "start",
    "kareo",
    "dock",
    "safety_lag",
    "families",
    "rules",
    "webhooks",
];

/// Reads every section of the file into `r`; `None` when a required value could not be read.
// Long: one section of the tenant file after another, every problem collected.
fn read(root: &MarkedYaml, r: &mut Reader, text: &str) -> Option<TenantConfig> {
    let entries = r.entries(root, line(root), "the tenant file")?;
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k.data.as_str() == Some(key))
            .copied()
    };
    for (k, _) in &entries {
        let key = k.data.as_str().unwrap_or("");
        if !KEYS.contains(&key) {
            unknown(r, k, key, &KEYS, "");
        }
    }
    let required = |r: &mut Reader, key: &str| {
        let v = get(key);
        if v.is_none() {
            r.error_unplaced(format!("missing field `{key}`"));
        }
        v
    };

    let tenant = required(r, "tenant").and_then(|(_, v)| {
        let s = scalar(r, v, "tenant")?;
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            r.error(line(v), "tenant: 1-64 letters, digits, '-' or '_'".into());
            return None;
        }
        Some(s)
    });
    let timezone = required(r, "timezone").and_then(|(_, v)| {
        let s = scalar(r, v, "timezone")?;
        match s.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let hint = config::suggest(&s, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()))
                    .map_or("e.g. America/New_York".to_string(), |z| {
                        format!("did you mean '{z}'?")
                    });
                r.error(
                    line(v),
                    format!("timezone: '{s}' is not an IANA time zone ({hint})"),
                );
                None
            }
        }
    });
    let start = required(r, "start").and_then(|(_, v)| instant(r, v, "start"));
    let kareo = required(r, "kareo").and_then(|(_, v)| {
        let e = r.entries(v, line(v), "kareo")?;
        keys(
            r,
            &e,
            &["secret", "practice", "practice_id", "row_cap"],
            "kareo",
        );
        let secret = field(r, &e, v, "kareo", "secret");
        let practice = field(r, &e, v, "kareo", "practice");
        let practice_id = match e
            .iter()
            .find(|(k, _)| k.data.as_str() == Some("practice_id"))
        {
            None => None,
            Some((_, n)) if n.data.is_null() => None,
            Some((_, n)) => match &n.data {
                YamlData::Value(Scalar::Integer(i)) => Some(*i),
                _ => {
                    r.error(
                        line(n),
                        "kareo.practice_id: expected a number (Kareo's PracticeID)".into(),
                    );
                    return None;
                }
            },
        };
        let row_cap = match e.iter().find(|(k, _)| k.data.as_str() == Some("row_cap")) {
            None => None,
            Some((_, n)) => match &n.data {
                YamlData::Value(Scalar::Integer(i)) if (10..=5000).contains(i) => Some(*i as usize),
                _ => {
                    r.error(
                        line(n),
                        "kareo.row_cap: expected a number of rows from 10 to 5000".into(),
                    );
                    return None;
                }
            },
        };
        Some(KareoSide {
            secret: secret?,
            practice: practice?,
            practice_id,
            row_cap,
        })
    });
    let dock = required(r, "dock").and_then(|(_, v)| {
        let e = r.entries(v, line(v), "dock")?;
        keys(r, &e, &["secret", "organization_id", "user_id"], "dock");
        let optional = |r: &mut Reader, key: &str| {
            e.iter()
                .find(|(k, _)| k.data.as_str() == Some(key))
                .and_then(|(_, n)| scalar(r, n, &format!("dock.{key}")))
        };
        let organization_id = optional(r, "organization_id");
        let user_id = optional(r, "user_id");
        Some(DockSide {
            secret: field(r, &e, v, "dock", "secret")?,
            organization_id,
            user_id,
        })
    });
    let safety_lag = match get("safety_lag") {
        None => Some(default_lag()),
        Some((_, v)) => duration(r, v, "safety_lag"),
    };
    let families = required(r, "families").and_then(|(_, v)| families(r, v));
    let business_hours = get("business_hours").and_then(|(_, v)| {
        let s = scalar(r, v, "business_hours")?;
        BusinessHours::parse(&s)
            .map_err(|e| r.error(line(v), format!("business_hours: {e}")))
            .ok()
    });
    let shadow = get("shadow").and_then(|(_, v)| {
        let e = r.entries(v, line(v), "shadow")?;
        keys(r, &e, &["until", "list"], "shadow");
        let until = e
            .iter()
            .find(|(k, _)| k.data.as_str() == Some("until"))
            .map(|(_, u)| instant(r, u, "shadow.until"));
        let Some(until) = until else {
            r.error(
                line(v),
                "shadow: missing field `until` (when shadow mode ends)".into(),
            );
            return None;
        };
        let list = e
            .iter()
            .find(|(k, _)| k.data.as_str() == Some("list"))
            .and_then(|(_, l)| scalar(r, l, "shadow.list"));
        Some(Shadow {
            until: until?,
            list,
        })
    });
    if let (Some(families), None) = (&families, &business_hours) {
        for (f, s) in families {
            if s.off_hours_cadence.is_some() {
                r.error_unplaced(format!(
                    "families.{f}.off_hours_cadence needs `business_hours:` (e.g. Mon-Fri 07:00-19:00)"
                ));
            }
        }
    }

    let writers = match get("writers") {
        None => Some(crate::writers::Writers::default()),
        Some((_, v)) => writers(r, v),
    };

    let mapping = Mapping::read(get("rules"), r);
    let hooks = crate::hooks::WebhookConfig::read(get("webhooks").map(|(_, v)| v), r);
    if let Some(families) = &families {
        for (i, rule) in mapping.rules.iter().enumerate() {
            if !families.contains_key(&rule.interface) {
                r.error(
                    rule.line,
                    format!(
                        "rules[{i}] {}: interface {} is not enabled under families",
                        rule.name, rule.interface
                    ),
                );
            }
        }
    }
    Some(TenantConfig {
        tenant: tenant?,
        timezone: timezone?,
        start: start?,
        kareo: kareo?,
        dock: dock?,
        safety_lag: safety_lag?,
        families: families?,
        mapping,
        hooks,
        business_hours,
        shadow,
        writers: writers?,
        text: text.to_string(),
    })
}

/// `writers:`, a list of IAM principal ARNs.
fn writers(r: &mut Reader, v: &MarkedYaml) -> Option<crate::writers::Writers> {
    let YamlData::Sequence(items) = &v.data else {
        r.error(
            line(v),
            "writers: expected a list of IAM principal ARNs".into(),
        );
        return None;
    };
    let arns: Vec<String> = items
        .iter()
        .enumerate()
        .filter_map(|(i, a)| scalar(r, a, &format!("writers[{i}]")))
        .collect();
    if arns.len() < items.len() {
        return None;
    }
    crate::writers::Writers::parse(arns.iter().map(String::as_str))
        .map_err(|e| r.error(line(v), e))
        .ok()
}

/// Reports an unknown key, with the nearest allowed one.
fn unknown(r: &mut Reader, k: &MarkedYaml, key: &str, allowed: &[&str], prefix: &str) {
    let hint = config::suggest(key, allowed.iter().copied())
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default();
    let expected = allowed
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    r.error(
        line(k),
        format!(
            "{prefix}unknown field `{}`, expected one of {expected}{hint}",
            r.raw(k)
        ),
    );
}

fn keys(r: &mut Reader, e: &Entries, allowed: &[&str], section: &str) {
    for (k, _) in e {
        let key = k.data.as_str().unwrap_or("");
        if !allowed.contains(&key) {
            unknown(r, k, key, allowed, &format!("{section}: "));
        }
    }
}

/// A required text field of a section.
fn field(r: &mut Reader, e: &Entries, at: &MarkedYaml, section: &str, key: &str) -> Option<String> {
    match e.iter().find(|(k, _)| k.data.as_str() == Some(key)) {
        None => {
            r.error(line(at), format!("{section}: missing field `{key}`"));
            None
        }
        Some((_, v)) => scalar(r, v, &format!("{section}.{key}")),
    }
}

/// A scalar's text, or a problem naming `what`.
fn scalar(r: &mut Reader, v: &MarkedYaml, what: &str) -> Option<String> {
    match r.text(v) {
        Ok(s) => Some(s),
        Err(e) => {
            r.error(line(v), format!("{what}: {e}"));
            None
        }
    }
}

/// An RFC 3339 instant (`2026-09-01T00:00:00Z`).
fn instant(r: &mut Reader, v: &MarkedYaml, what: &str) -> Option<DateTime<Utc>> {
    let s = scalar(r, v, what)?;
    match DateTime::parse_from_rfc3339(&s) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            r.error(
                line(v),
                format!("{what}: '{s}' is not an RFC 3339 instant (e.g. 2026-09-01T00:00:00Z)"),
            );
            None
        }
    }
}

/// A duration as text (`90s`, `30m`, `2h`, `7d`, `1h 30m`).
fn duration(r: &mut Reader, v: &MarkedYaml, what: &str) -> Option<Duration> {
    let s = scalar(r, v, what)?;
    match humantime::parse_duration(&s) {
        Ok(d) => Some(d),
        Err(_) => {
            r.error(
                line(v),
                format!("{what}: '{s}' is not a duration (e.g. 90s, 30m, 2h, 7d)"),
            );
            None
        }
    }
}

/// One family's settings (`families.<family>: {…}`); `None` when they are not a mapping.
fn family_settings(
    r: &mut Reader,
    family: Family,
    k: &MarkedYaml,
    s: &MarkedYaml,
) -> Option<FamilySettings> {
    let mut settings = FamilySettings::default();
    if !s.data.is_null() {
        let se = r.entries(s, line(s), &format!("families.{family}"))?;
        keys(
            r,
            &se,
            &[
                "lookback",
                "max_window",
                "start",
                "start_date_horizon",
                "posting_date_horizon",
                "cadence",
                "off_hours_cadence",
            ],
            &format!("families.{family}"),
        );
        for (sk, sv) in &se {
            let what = format!("families.{family}.{}", sk.data.as_str().unwrap_or(""));
            match sk.data.as_str() {
                Some("lookback") => settings.lookback = duration(r, sv, &what),
                Some("max_window") => {
                    settings.max_window = duration(r, sv, &what);
                    let ceiling = crate::policy::of(family).max_window;
                    if settings
                        .max_window
                        .is_some_and(|w| w > ceiling || w.is_zero())
                    {
                        r.error(
                            line(k),
                            format!(
                                "families.{family}.max_window must be between 1s and {} (Kareo's limit for this family)",
                                humantime::format_duration(ceiling)
                            ),
                        );
                    }
                }
                Some("start") => settings.start = instant(r, sv, &what),
                Some(key @ ("cadence" | "off_hours_cadence")) => {
                    let d = duration(r, sv, &what);
                    if d.is_some_and(|d| {
                        d < Duration::from_secs(60) || d > Duration::from_secs(86_400)
                    }) {
                        r.error(line(sv), format!("{what}: from 1m to 1d"));
                    }
                    if key == "cadence" {
                        settings.cadence = d;
                    } else {
                        settings.off_hours_cadence = d;
                    }
                }
                Some("start_date_horizon") => {
                    if family != Family::Appointments {
                        r.error(
                            line(sk),
                            format!("{what}: only appointments are read by StartDate"),
                        );
                    }
                    settings.start_date_horizon = duration(r, sv, &what);
                    if settings
                        .start_date_horizon
                        .is_some_and(|h| h > Duration::from_secs(3 * 365 * 86_400))
                    {
                        r.error(line(sk), format!("{what}: at most 3 years (1095d)"));
                    }
                }
                Some("posting_date_horizon") => {
                    if !matches!(family, Family::Charges | Family::Encounters) {
                        r.error(
                            line(sk),
                            format!("{what}: only charges and encounters are read by posting date"),
                        );
                    }
                    settings.posting_date_horizon = duration(r, sv, &what);
                    if settings
                        .posting_date_horizon
                        .is_some_and(|h| h > Duration::from_secs(3 * 365 * 86_400))
                    {
                        r.error(line(sk), format!("{what}: at most 3 years (1095d)"));
                    }
                }
                _ => {}
            }
        }
    }
    Some(settings)
}

/// `families:` — the enabled families and their overrides.
fn families(r: &mut Reader, v: &MarkedYaml) -> Option<BTreeMap<Family, FamilySettings>> {
    let e = r.entries(v, line(v), "families")?;
    let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
    let mut out = BTreeMap::new();
    let before = r.problems();
    for (k, s) in &e {
        let key = k.data.as_str().unwrap_or("");
        let Some(family) = Family::from_name(key) else {
            let hint = config::suggest(key, names.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            let expected = names
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            r.error(
                line(k),
                format!(
                    "families: unknown variant `{}`, expected one of {expected}{hint}",
                    r.raw(k)
                ),
            );
            continue;
        };
        let Some(settings) = family_settings(r, family, k, s) else {
            continue;
        };
        out.insert(family, settings);
    }
    if out.is_empty() && r.problems() == before {
        r.error(
            line(v),
            "families: at least one family must be enabled".into(),
        );
        return None;
    }
    (r.problems() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "tenant: acme
timezone: America/New_York
start: 2026-09-01T00:00:00Z
kareo:
  secret: kareo/acme
  practice: Acme Family Practice
  practice_id: 1
dock:
  secret: dock/acme
families:
  appointments: { lookback: 2h, max_window: 7d }
  patients: {}
  charges: { start: 2026-09-15T00:00:00Z }
";

    #[test]
    fn a_good_config_reads_with_defaults() {
        let c = TenantConfig::from_yaml(GOOD, "acme.yaml").unwrap();
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.safety_lag, Duration::from_secs(120));
        let a = c.family(Family::Appointments).unwrap();
        assert_eq!(a.lookback, Duration::from_secs(7200));
        assert_eq!(a.max_window, Duration::from_secs(7 * 86400));
        assert_eq!(
            c.family(Family::Charges).unwrap().start.to_rfc3339(),
            "2026-09-15T00:00:00+00:00"
        );
        assert!(c.family(Family::Payments).is_none());
        let again = TenantConfig::from_yaml(&c.to_yaml(), "round-trip").unwrap();
        assert_eq!(
            again.family(Family::Appointments),
            c.family(Family::Appointments)
        );
    }

    fn err(yaml: &str) -> ConfigError {
        match TenantConfig::from_yaml(yaml, "t.yaml") {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = err(&GOOD.replace("America/New_York", "Mars/Olympus"));
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("t.yaml:2: timezone: "), "{e}");
        assert!(e.reason.contains("not an IANA time zone"), "{e}");

        let e = err(&GOOD.replace("  patients: {}", "  patient: {}"));
        assert_eq!(e.line, Some(12), "{e}");
        assert!(e.reason.contains("unknown variant `patient`"), "{e}");

        let e = err(&GOOD.replace("lookback: 2h", "lookback: two hours"));
        assert!(e.reason.contains("'two hours' is not a duration"), "{e}");

        let e = err(&GOOD.replace("max_window: 7d", "max_window: 90d"));
        assert_eq!(e.line, Some(11));
        assert!(
            e.reason
                .contains("families.appointments.max_window must be between"),
            "{e}"
        );

        let e = err(&GOOD.replace("  practice_id: 1", "  practice_id: 1\n  row_cap: 3"));
        assert!(
            e.to_string()
                .contains("kareo.row_cap: expected a number of rows from 10 to 5000"),
            "{e}"
        );
        let ok = TenantConfig::from_yaml(
            &GOOD.replace("  practice_id: 1", "  practice_id: 1\n  row_cap: 400"),
            "t",
        )
        .unwrap();
        assert_eq!(ok.kareo.row_cap, Some(400));
        let e = err(&GOOD.replace("  practice_id: 1", "  practice_id: 1\n  pasword: x"));
        assert!(e.reason.contains("unknown field `pasword`"), "{e}");

        let e = err(&GOOD.replace("tenant: acme", "tenant: 'acme corp'"));
        assert!(e.reason.contains("tenant: 1-64 letters"), "{e}");
    }

    #[test]
    fn every_problem_of_the_file_comes_back_in_one_run() {
        // A misspelled zone, a misspelled family, a missing start and a bad rule: one read
        // reports all four, in line order, with a suggestion where one is near.
        let bad = GOOD
            .replace("America/New_York", "America/New_Yrok")
            .replace("  patients: {}", "  patiens: {}")
            .replace("start: 2026-09-01T00:00:00Z\n", "")
            + "rules:\n  - name: r\n    interface: charges\n    on: sometimes\n    task: { list: Billing, description: x }\n";
        let e = err(&bad);
        let lines: Vec<&str> = e.reason.lines().collect();
        assert_eq!(lines[0], "4 problems in the config:", "{e}");
        assert!(lines[1].starts_with("line 2: timezone: 'America/New_Yrok' is not an IANA time zone (did you mean 'America/New_York'?)"), "{e}");
        assert!(
            lines[2].starts_with("line 11: families: unknown variant `patiens`"),
            "{e}"
        );
        assert!(lines[2].ends_with("(did you mean 'patients'?)"), "{e}");
        assert!(
            lines[3].starts_with("line 16: rules[0] r: on: unknown change kind 'sometimes'"),
            "{e}"
        );
        assert_eq!(lines[4], "missing field `start`", "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn the_text_is_kept_as_written() {
        let text = format!(
            "# acme's config\n{GOOD}webhooks:\n  ignore_users: ['007', \"1.50\"]  # two ids\n"
        );
        let c = TenantConfig::from_yaml(&text, "t.yaml").unwrap();
        assert_eq!(c.to_yaml(), text);
        assert_eq!(c.hooks.ignore_users, ["007", "1.50"]);
    }

    const RULES: &str = "rules:
  - name: cancelled
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_from: Scheduled, changed_to: Cancelled }
      Notes: { matches: '^(?i)call' }
      AppointmentReason1: [Checkup, '007', 12]
    task:
      list: Front Desk
      description: \"Call {PatientFullName} {{asap}}\"
      due: 1d 12h
      priority: HIGH
      patient: true
";

    #[test]
    fn the_mapping_is_read_checked_and_round_trips() {
        let c = TenantConfig::from_yaml(&format!("{GOOD}{RULES}"), "t.yaml").unwrap();
        assert_eq!(c.mapping.rules.len(), 1);
        assert_eq!(c.mapping.rules[0].line, 15);
        let again = TenantConfig::from_yaml(&c.to_yaml(), "round-trip").unwrap();
        let strip = |m: &Mapping| {
            m.rules
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.interface,
                        r.on,
                        r.when.clone(),
                        r.task.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&again.mapping), strip(&c.mapping));
        assert!(TenantConfig::from_yaml(GOOD, "t.yaml")
            .unwrap()
            .mapping
            .is_empty());
    }

    #[test]
    fn mapping_problems_are_listed_one_per_line() {
        let without = GOOD.replace("  appointments: { lookback: 2h, max_window: 7d }\n", "");
        let e = err(&format!("{without}{RULES}"));
        assert_eq!(e.line, Some(14));
        assert_eq!(
            e.reason,
            "rules[0] cancelled: interface appointments is not enabled under families"
        );

        let bad = RULES
            .replace("priority: HIGH", "priority: high")
            .replace("changed_to:", "changed_too:")
            .replace("due: 1d 12h", "due: later");
        let e = err(&format!("{GOOD}{bad}"));
        assert_eq!(e.line, Some(19), "{e}");
        let lines: Vec<&str> = e.reason.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert_eq!(lines[0], "3 problems in the mapping:");
        assert!(lines[1].starts_with("line 19: rules[0] cancelled: when.ConfirmationStatus: unknown condition 'changed_too'"), "{e}");
        assert!(
            lines[2]
                .starts_with("line 25: rules[0] cancelled: task.due: 'later' is not a duration"),
            "{e}"
        );
        assert!(
            lines[3]
                .starts_with("line 26: rules[0] cancelled: task.priority: unknown priority 'high'"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("t.yaml:19: 3 problems in the mapping:\nline 19: "),
            "{e}"
        );

        let e = err(&format!(
            "{GOOD}{}",
            RULES.replace("{PatientFullName}", "{PatientName}")
        ));
        assert_eq!(e.line, Some(24));
        assert!(e.to_string().starts_with("t.yaml:24: rules[0] cancelled: task.description: unknown placeholder {PatientName}"), "{e}");
    }
}
