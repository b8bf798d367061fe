//! How each family is polled: one row per family. Adding a family is one row here (and its
//! Kareo facts in `kareo::Family`), never a new poller. The SAM template's generator
//! (`tools/gen_template.py`) holds the deployment side of the same rows — schedule, lag alarm,
//! deletion re-check — and a test below fails when the two differ.

use std::time::Duration;

use kareo::Family;

/// Where a family's changes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The family's own list read, filtered by a last-modified window.
    Window,
    /// Encounters have no date filter: the encounter ids of the charges changed in the window,
    /// then GetEncounterDetails per id.
    EncountersOfChangedCharges,
}

/// How often a family's function runs: one of the template's three rate parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Front-desk families (appointments, patients): `FrequentRate`.
    Frequent,
    /// Billing families: `BillingRate`.
    Billing,
    /// Reference data: `ReferenceRate`.
    Reference,
}

impl Schedule {
    /// The template parameter that sets it.
    pub fn parameter(self) -> &'static str {
        match self {
            Schedule::Frequent => "FrequentRate",
            Schedule::Billing => "BillingRate",
            Schedule::Reference => "ReferenceRate",
        }
    }

    /// The parameter's default period.
    pub fn default_every(self) -> Duration {
        Duration::from_secs(match self {
            Schedule::Frequent => 5 * MIN,
            Schedule::Billing => 15 * MIN,
            Schedule::Reference => 6 * HOUR,
        })
    }
}

/// A family's polling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The family.
    pub family: Family,
    /// Where changes come from.
    pub source: Source,
    /// Default lookback before the cursor (Kareo's filter granularity is undocumented).
    pub lookback: Duration,
    /// Largest window per call a config may set (Kareo faults or truncates wide windows).
    pub max_window: Duration,
    /// The window per call when the config sets none. GetCharges: 7 days, well under the 30
    /// days beyond which a public client saw it silently answer nothing.
    pub default_window: Duration,
    /// A window wider than this that answers nothing is suspect: it is split and read again
    /// until its slices are this narrow (GetCharges' silent empty answers). `None`: an empty
    /// answer is believed.
    pub suspect_empty_above: Option<Duration>,
    /// Smallest window a failing window is split down to before the run fails.
    pub min_window: Duration,
    /// How often it runs (the SAM template's rate parameter).
    pub schedule: Schedule,
    /// The sync-lag alarm's threshold (now − the oldest cursor).
    pub lag_alarm: Duration,
    /// Deleted records vanish from the list read: re-check known upcoming ones by id.
    pub recheck_deletes: bool,
}

/// How far Kareo's clock may be from the practice's, either way: Kareo does not say in which
/// zone it stamps records and compares filter bounds (`kareo-api.md` §6), and the widest
/// spread of US zones is 6 h (Hawaii to Eastern in summer). Every window reads this much
/// further back and ahead than the practice's clock alone needs (`docs/polling.md`).
pub const CLOCK_ALLOWANCE: Duration = Duration::from_secs(6 * HOUR);

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The policy of a family.
pub fn of(family: Family) -> Policy {
    let p = |source, lookback, max_window, schedule, recheck_deletes| Policy {
        family,
        source,
        lookback: Duration::from_secs(lookback),
        max_window: Duration::from_secs(max_window),
        default_window: Duration::from_secs(match family {
            Family::Charges | Family::Encounters => 7 * DAY,
            _ => max_window,
        }),
        suspect_empty_above: match family {
            Family::Charges | Family::Encounters => Some(Duration::from_secs(7 * DAY)),
            _ => None,
        },
        min_window: Duration::from_secs(MIN),
        schedule,
        lag_alarm: match schedule {
            Schedule::Frequent => Duration::from_secs(HOUR),
            Schedule::Billing => Duration::from_secs(2 * HOUR),
            Schedule::Reference => Duration::from_secs(DAY),
        },
        recheck_deletes,
    };
    match family {
        Family::Appointments => p(Source::Window, 2 * HOUR, 30 * DAY, Schedule::Frequent, true),
        Family::Patients => p(
            Source::Window,
            2 * HOUR,
            30 * DAY,
            Schedule::Frequent,
            false,
        ),
        Family::Charges => p(Source::Window, 2 * HOUR, 30 * DAY, Schedule::Billing, false),
        Family::Encounters => p(
            Source::EncountersOfChangedCharges,
            2 * HOUR,
            30 * DAY,
            Schedule::Billing,
            false,
        ),
        Family::Payments => p(Source::Window, 2 * HOUR, 30 * DAY, Schedule::Billing, false),
        Family::Transactions => p(Source::Window, 2 * HOUR, 30 * DAY, Schedule::Billing, false),
        Family::Practices
        | Family::Providers
        | Family::ServiceLocations
        | Family::ProcedureCodes => p(
            Source::Window,
            6 * HOUR,
            90 * DAY,
            Schedule::Reference,
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// The generator's FAMILIES rows: (family, rate parameter, lag alarm s, deletion re-check).
    fn template_rows() -> Vec<(String, String, u64, bool)> {
        let src = include_str!("../../../tools/gen_template.py");
        let table = &src[src.find("FAMILIES = [").expect("the FAMILIES table")..];
        let table = &table[..table.find("\n]").expect("its end")];
        let row =
            Regex::new(r#"\("([a-z_]+)", "[A-Za-z]+", "([A-Za-z]+)", \d+, (\d+), (True|False)\)"#)
                .unwrap();
        row.captures_iter(table)
            .map(|c| {
                (
                    c[1].into(),
                    c[2].into(),
                    c[3].parse().unwrap(),
                    &c[4] == "True",
                )
            })
            .collect()
    }

    #[test]
    fn the_template_generator_holds_the_same_family_table() {
        let rows = template_rows();
        let mut names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let mut families: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        families.sort_unstable();
        assert_eq!(names, families, "one template row per family");
        for (name, rate, lag, deletes) in &rows {
            let p = of(Family::from_name(name).unwrap());
            assert_eq!(rate, p.schedule.parameter(), "{name}: rate parameter");
            assert_eq!(*lag, p.lag_alarm.as_secs(), "{name}: lag alarm");
            assert_eq!(*deletes, p.recheck_deletes, "{name}: deletion re-check");
        }
        // The rate parameters' defaults.
        let src = include_str!("../../../tools/gen_template.py");
        for s in [Schedule::Frequent, Schedule::Billing, Schedule::Reference] {
            let every = s.default_every().as_secs();
            let text = if every >= HOUR {
                format!("rate({} hours)", every / HOUR)
            } else {
                format!("rate({} minutes)", every / MIN)
            };
            let at = src.find(&format!("  {}:\n", s.parameter())).unwrap();
            assert!(
                src[at..]
                    .lines()
                    .nth(2)
                    .unwrap()
                    .ends_with(&format!("Default: {text}")),
                "{}: default {text}",
                s.parameter()
            );
        }
    }
}
