#![doc = include_str!("../../../docs/configuration.md")]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kareo::Family;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ConfigError;
use crate::mapping::Mapping;

/// A tenant's configuration.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant id.
    #[serde(deserialize_with = "tenant_id")]
    pub tenant: String,
    /// The practice's zone.
    #[serde(deserialize_with = "zone", serialize_with = "zone_out")]
    pub timezone: Tz,
    /// Where a new cursor starts.
    pub start: DateTime<Utc>,
    /// Kareo side.
    pub kareo: KareoSide,
    /// Dock side.
    pub dock: DockSide,
    /// Windows end at `now − safety_lag` (default 2 minutes).
    #[serde(default = "default_lag", with = "duration_text")]
    pub safety_lag: Duration,
    /// Enabled families and their settings.
    pub families: BTreeMap<Family, FamilySettings>,
    /// The mapping rules (read by the task-creation function).
    #[serde(default)]
    pub rules: serde_yaml_ng::Value,
    /// The mapping read from `rules` (checked by [`TenantConfig::from_yaml`]).
    #[serde(skip)]
    pub mapping: Mapping,
    /// Dock webhooks → Kareo write commands (see [`crate::hooks`]); absent: none.
    #[serde(default, skip_serializing_if = "serde_yaml_ng::Value::is_null")]
    pub webhooks: serde_yaml_ng::Value,
    /// The webhook rules read from `webhooks` (checked by [`TenantConfig::from_yaml`]).
    #[serde(skip)]
    pub hooks: crate::hooks::WebhookConfig,
}

/// Kareo settings of a tenant.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KareoSide {
    /// Name of the secret holding the Kareo credentials.
    pub secret: String,
    /// The practice's name (Kareo's `PracticeName` filter, required by most reads).
    pub practice: String,
    /// The practice's id (`PracticeID` filter, where the read has one).
    #[serde(default)]
    pub practice_id: Option<i64>,
}

/// Dock settings of a tenant.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockSide {
    /// Name of the secret holding the Dock credentials.
    pub secret: String,
}

/// Per-family settings.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySettings {
    /// How far before the cursor each window starts (default: the family's).
    #[serde(
        default,
        with = "opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub lookback: Option<Duration>,
    /// Largest window read in one call (default and ceiling: the family's).
    #[serde(
        default,
        with = "opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_window: Option<Duration>,
    /// Where this family's new cursor starts (default: the tenant's `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
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

    /// Reads and checks a tenant config from YAML text; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<TenantConfig, ConfigError> {
        let mut cfg: TenantConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let full = e.to_string();
            let reason = match full.rfind(" at line ") {
                Some(i) => full[..i].to_string(),
                None => full.clone(),
            };
            // A value rejected by our own checks is reported where its key is; serde reports
            // the enclosing mapping.
            let key = reason
                .split(':')
                .next()
                .unwrap_or("")
                .rsplit('.')
                .next()
                .unwrap_or("");
            let line = match (e.location().map(|l| l.line()), line_of(text, key)) {
                (Some(1), Some(l)) | (None, Some(l)) => Some(l),
                (l, _) => l,
            };
            ConfigError {
                file: source.to_string(),
                line,
                reason,
            }
        })?;
        if cfg.families.is_empty() {
            return Err(ConfigError {
                file: source.to_string(),
                line: None,
                reason: "families: at least one family must be enabled".into(),
            });
        }
        for (family, s) in &cfg.families {
            let ceiling = crate::policy::of(*family).max_window;
            if s.max_window.is_some_and(|w| w > ceiling || w.is_zero()) {
                return Err(ConfigError {
                    file: source.to_string(),
                    line: line_of(text, family.name()),
                    reason: format!(
                        "families.{family}.max_window must be between 1s and {} (Kareo's limit for this family)",
                        humantime::format_duration(ceiling)
                    ),
                });
            }
        }
        let mut problems = match Mapping::from_tenant_yaml(text, source) {
            Ok(m) => {
                cfg.mapping = m;
                Vec::new()
            }
            Err(es) => es,
        };
        match crate::hooks::WebhookConfig::from_tenant_yaml(text, source) {
            Ok(h) => cfg.hooks = h,
            Err(es) => problems.extend(es),
        }
        for (i, rule) in cfg.mapping.rules.iter().enumerate() {
            if !cfg.families.contains_key(&rule.interface) {
                problems.push(ConfigError {
                    file: source.to_string(),
                    line: Some(rule.line),
                    reason: format!(
                        "rules[{i}] {}: interface {} is not enabled under families",
                        rule.name, rule.interface
                    ),
                });
            }
        }
        match problems.len() {
            0 => Ok(cfg),
            1 => Err(problems.remove(0)),
            n => Err(ConfigError {
                file: source.to_string(),
                line: problems[0].line,
                reason: format!(
                    "{n} problems in the mapping:\n{}",
                    problems
                        .iter()
                        .map(|p| match p.line {
                            Some(l) => format!("line {l}: {}", p.reason),
                            None => p.reason.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }),
        }
    }

    /// The settings of a family, defaults applied.
    pub fn family(&self, family: Family) -> Option<Effective> {
        let s = self.families.get(&family)?;
        let p = crate::policy::of(family);
        Some(Effective {
            lookback: s.lookback.unwrap_or(p.lookback),
            max_window: s.max_window.unwrap_or(p.max_window),
            start: s.start.unwrap_or(self.start),
        })
    }

    /// The config as YAML (for `tenant put` and the DynamoDB store).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a config serialises")
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
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(&format!("{needle}:")))
        .map(|i| i + 1)
}

fn tenant_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(serde::de::Error::custom(
            "tenant: 1-64 letters, digits, '-' or '_'",
        ));
    }
    Ok(s)
}

fn zone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "timezone: '{s}' is not an IANA time zone (e.g. America/New_York)"
        ))
    })
}

fn zone_out<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// Durations as text: `90s`, `30m`, `2h`, `7d`, `1h 30m`.
pub mod duration_text {
    use super::*;

    /// Serialise as humantime text.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parse humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|_| {
            serde::de::Error::custom(format!("'{s}' is not a duration (e.g. 90s, 30m, 2h, 7d)"))
        })
    }
}

/// Optional durations as text.
pub mod opt_duration_text {
    use super::*;

    /// Serialise as humantime text.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration_text::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Parse humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        duration_text::deserialize(d).map(Some)
    }
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

        let e = err(&GOOD.replace("  practice_id: 1", "  practice_id: 1\n  pasword: x"));
        assert!(e.reason.contains("unknown field `pasword`"), "{e}");

        let e = err(&GOOD.replace("tenant: acme", "tenant: 'acme corp'"));
        assert!(e.reason.contains("tenant: 1-64 letters"), "{e}");
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
