//! How each family is polled: one row per family. Adding a family is one row here (and its
//! Kareo facts in `kareo::Family`), never a new poller.

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

/// A family's polling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The family.
    pub family: Family,
    /// Where changes come from.
    pub source: Source,
    /// Default lookback before the cursor (Kareo's filter granularity is undocumented).
    pub lookback: Duration,
    /// Default and largest window per call (Kareo faults or truncates wide windows).
    pub max_window: Duration,
    /// Smallest window a failing window is split down to before the run fails.
    pub min_window: Duration,
    /// Default schedule (the SAM template's rate).
    pub every: Duration,
    /// Deleted records vanish from the list read: re-check known upcoming ones by id.
    pub recheck_deletes: bool,
}

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The policy of a family.
pub fn of(family: Family) -> Policy {
    let p = |source, lookback, max_window, every, recheck_deletes| Policy {
        family,
        source,
        lookback: Duration::from_secs(lookback),
        max_window: Duration::from_secs(max_window),
        min_window: Duration::from_secs(MIN),
        every: Duration::from_secs(every),
        recheck_deletes,
    };
    match family {
        Family::Appointments => p(Source::Window, 2 * HOUR, 30 * DAY, 5 * MIN, true),
        Family::Patients => p(Source::Window, 2 * HOUR, 30 * DAY, 5 * MIN, false),
        Family::Charges => p(Source::Window, 2 * HOUR, 30 * DAY, 15 * MIN, false),
        Family::Encounters => p(
            Source::EncountersOfChangedCharges,
            2 * HOUR,
            30 * DAY,
            15 * MIN,
            false,
        ),
        Family::Payments => p(Source::Window, 2 * HOUR, 30 * DAY, 15 * MIN, false),
        Family::Transactions => p(Source::Window, 2 * HOUR, 30 * DAY, 15 * MIN, false),
        Family::Practices
        | Family::Providers
        | Family::ServiceLocations
        | Family::ProcedureCodes => p(Source::Window, 6 * HOUR, 90 * DAY, 6 * HOUR, false),
    }
}
