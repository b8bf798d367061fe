#![doc = include_str!("../../../docs/polling.md")]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kareo::{Credentials, Family, KareoError, Record};
use serde::Serialize;
use tokio::time::Instant;

use domain::event::{diff, event_id, revision_id, ChangeEvent, ChangeKind};
use domain::policy::{self, Source};
use domain::ports::*;
use domain::projection::{DigestKey, Projection};
use domain::source::KareoSource;
use domain::tenant::TenantConfig;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    /// Read what changed since the cursor.
    Poll,
    /// Read and report; hand off nothing, write nothing (no lease either).
    DryRun,
    /// Read from `since` (no lookback) up to now; the position never moves backwards, and
    /// records already handed off at the same version are skipped.
    Backfill {
        /// Start of the backfill.
        since: DateTime<Utc>,
    },
    /// Appointments: re-check known upcoming appointments by id and emit `deleted` events.
    Deletes,
    /// Patients: page through GetAllPatients (one call per 5 s) and hand off what changed.
    Resync,
    /// The coverage audit: re-read the last [`AUDIT_DAYS`] days, hand off (exactly once, as a
    /// poll would) any version that was never handed off, and report what it healed; the
    /// cursor does not move. Anything healed means something upstream is off: an alarm.
    Audit,
}

/// How far back the coverage audit re-reads.
pub const AUDIT_DAYS: i64 = 7;

/// Settings of the poller (per process).
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Lease holder name (e.g. the Lambda request id).
    pub owner: String,
    /// Lease duration (longer than a run can take).
    pub lease_ttl: Duration,
    /// A batch's serialised size limit (Lambda's async payload limit is 256 KiB).
    pub batch_bytes: usize,
    /// A window returning this many records or more is split: Kareo documents no row limit,
    /// and a response cut silently at its limit would look whole (`kareo-api.md` §5). 1,000
    /// is the largest page Kareo documents anywhere (GetAllPatients' `BatchSize`).
    pub max_records: usize,
    /// Stop starting new windows when less than this is left before the deadline.
    pub margin: Duration,
    /// GetAllPatients page size.
    pub resync_batch: i32,
    /// A poll that hands off nothing leaves the stored cursor as it is while its last
    /// success is more recent than this, its window's start would not move, and nothing
    /// else needs writing (a last error, a cadence): an empty poll then costs its Kareo read
    /// and no write. The next run reads from the stored position, a superset.
    pub persist_every: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            owner: format!("poller-{}", std::process::id()),
            lease_ttl: Duration::from_secs(15 * 60),
            batch_bytes: 200 * 1024,
            max_records: 1000,
            margin: Duration::from_secs(20),
            resync_batch: 500,
            persist_every: Duration::from_secs(3600),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every window was read and handed off.
    Done,
    /// Another run holds the lease: nothing done.
    Skipped,
    /// The time budget ran out: the windows done are checkpointed, the rest is left.
    Partial,
    /// The family's `cadence` says not yet: the last successful run was too recent.
    NotDue,
    /// The tenant is paused (`kareo-dock tenant pause`): not polled, cursors stay.
    Paused,
    /// Failed: the class and a message (ids and elements only).
    Failed {
        /// Error class.
        class: ErrorClass,
        /// Message.
        message: String,
    },
}

impl Outcome {
    /// `done`, `skipped`, `partial`, `not_due`, `paused` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Skipped => "skipped",
            Outcome::Partial => "partial",
            Outcome::NotDue => "not_due",
            Outcome::Paused => "paused",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The error class of a failed run.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Outcome::Failed { class, .. } => Some(*class),
            _ => None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tenant.
    pub tenant: String,
    /// Family.
    pub family: Family,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Windows read successfully.
    pub windows: usize,
    /// Windows split because they failed or were too large.
    pub splits: usize,
    /// Records read.
    pub records: usize,
    /// Events handed off (or, in a dry run, that would be).
    pub events: usize,
    /// Records skipped because that version was already handed off.
    pub duplicates: usize,
    /// Records skipped because their version member was missing or unreadable.
    pub unreadable: usize,
    /// Coded values (EncounterStatus) the product has no name for, handed off as read.
    pub unknown_codes: usize,
    /// Events by kind.
    pub created: usize,
    /// Events by kind.
    pub updated: usize,
    /// Events by kind.
    pub deleted: usize,
    /// Cursor position after the run.
    pub position: Option<DateTime<Utc>>,
    /// An audit: the windows in which it handed off versions never handed off before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healed: Option<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
}

/// How early a run may come and still be due: schedules fire with some jitter, and a run a
/// few seconds short of the cadence would otherwise wait a whole schedule period more.
pub const CADENCE_SLACK: chrono::Duration = chrono::Duration::seconds(60);

/// Whether a cursor whose last successful run started at `last_success_start` is due a poll
/// at `now` under `cadence` (a cursor that never succeeded, or that failed since, is due).
fn due(c: &Cursor, cadence: std::time::Duration, now: DateTime<Utc>) -> bool {
    let cadence = chrono::Duration::from_std(cadence).unwrap_or_default();
    c.last_error.is_some()
        || c.last_success_start
            .is_none_or(|last| now >= last + cadence - CADENCE_SLACK)
}

impl Report {
    /// A report of a run that did nothing (yet).
    pub fn skipped(tenant: &str, family: Family) -> Report {
        let mut r = Report::new(tenant, family);
        r.outcome = Outcome::Skipped;
        r
    }

    /// A report of a run that failed before it started (no secret, an open breaker, a store
    /// that could not be read).
    pub fn failed(tenant: &str, family: Family, class: ErrorClass, message: String) -> Report {
        let mut r = Report::new(tenant, family);
        r.outcome = Outcome::Failed { class, message };
        r
    }

    fn new(tenant: &str, family: Family) -> Report {
        Report {
            tenant: tenant.to_string(),
            family,
            outcome: Outcome::Done,
            windows: 0,
            splits: 0,
            records: 0,
            events: 0,
            duplicates: 0,
            unreadable: 0,
            unknown_codes: 0,
            created: 0,
            updated: 0,
            deleted: 0,
            position: None,
            healed: None,
        }
    }

    fn count(&mut self, events: &[ChangeEvent]) {
        self.events += events.len();
        for e in events {
            match e.kind {
                ChangeKind::Created => self.created += 1,
                ChangeKind::Updated => self.updated += 1,
                ChangeKind::Deleted => self.deleted += 1,
            }
        }
    }
}

/// A failure inside a run.
#[derive(Debug)]
enum RunError {
    Kareo(KareoError),
    Store(StoreError),
    Sink(SinkError),
    Data(String),
    /// A poll that read before leasing found the cursor moved (or leased) by another run when
    /// it came to write: that run has it; nothing was handed off here.
    Moved,
}

impl RunError {
    fn class(&self) -> ErrorClass {
        match self {
            RunError::Kareo(e) => ErrorClass::of_kareo(e),
            RunError::Store(e) => e.class(),
            RunError::Sink(e) => e.class,
            RunError::Data(_) => ErrorClass::Data,
            RunError::Moved => ErrorClass::Conflict,
        }
    }

    fn message(&self) -> String {
        match self {
            RunError::Kareo(e) => e.to_string(),
            RunError::Store(e) => e.to_string(),
            RunError::Sink(e) => e.to_string(),
            RunError::Data(m) => m.clone(),
            RunError::Moved => "the cursor moved since it was read".into(),
        }
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Store(e)
    }
}

/// Is this a failure that a narrower window may avoid? Not a fault about the request itself
/// (`DeserializationFailed`, …): every narrower window would get it too.
fn splittable(e: &KareoError) -> bool {
    // Nor a connection that could not be made: a narrower window does not connect either.
    if e.is_request_fault() || e.is_unreachable() {
        return false;
    }
    matches!(
        e,
        KareoError::Fault { .. }
            | KareoError::Timeout { .. }
            | KareoError::Xml { .. }
            | KareoError::Transport { .. }
    ) || matches!(e, KareoError::Http { status, .. } if *status >= 500)
}

/// One slice as read: the records to turn into events, how many rows Kareo answered (the row
/// cap applies to these: for encounters, the charges), markers to write after the hand-off,
/// and whether the slice was read to its end (not cut short by the time budget).
struct SliceRead {
    rows: usize,
    records: Vec<Record>,
    markers: Vec<(String, Snapshot)>,
    complete: bool,
}

/// How a run holds its cursor.
enum Hold {
    /// A dry run: nothing is written.
    Reading,
    /// The lease is held.
    Leased(Lease),
    /// A poll that read the cursor (`seen`; `None`: there is none) and has written nothing.
    /// The lease is taken, conditional on `seen`, before the first hand-off; a poll with
    /// nothing to hand off moves the cursor with one conditional write — or none, see
    /// [`PollConfig::persist_every`]. `reached`: how far its windows were read.
    Unleased {
        seen: Option<Cursor>,
        reached: Option<DateTime<Utc>>,
    },
}

impl Hold {
    /// The position the run starts from.
    fn position(&self) -> Option<DateTime<Utc>> {
        match self {
            Hold::Reading => None,
            Hold::Leased(l) => l.cursor.position,
            Hold::Unleased { seen, .. } => seen.as_ref().and_then(|c| c.position),
        }
    }

    /// How far the run got: the stored position, or where an unleased poll's reads reached.
    fn reached(&self) -> Option<DateTime<Utc>> {
        match self {
            Hold::Unleased { reached, .. } => self.position().max(*reached),
            _ => self.position(),
        }
    }
}

/// How far ahead the `deletes` run re-checks upcoming appointments.
pub const RECHECK_HORIZON_DAYS: i64 = 90;
/// An appointment re-checked this recently is not re-checked again in this pass (the `deletes`
/// schedule is hourly).
pub const RECHECK_FRESH_MINUTES: i64 = 50;
/// Re-checks handed off and marked together.
pub const RECHECK_BATCH: usize = 50;

/// The snapshot-store key of the marker of an appointment's last deletion re-check.
fn checked_marker(appointment_id: &str) -> String {
    format!("checked:{appointment_id}")
}

/// A re-check marker: when it was done (no record content); kept a day (by the store's wall
/// clock), longer than a pass.
fn checked_mark(at: DateTime<Utc>) -> Snapshot {
    Snapshot {
        version: at,
        fields: BTreeMap::new(),
        starts: None,
        deleted: false,
        expires: Some(Utc::now() + chrono::Duration::days(1)),
    }
}

/// The snapshot-store key of the marker of a charge whose encounter was followed.
fn charge_marker(charge_id: &str) -> String {
    format!("charge:{charge_id}")
}

/// A marker: the version and a digest of the content it was followed at (no record content).
fn marker(version: DateTime<Utc>, r: &Record, expires: DateTime<Utc>) -> Snapshot {
    let digest = domain::event::digest(r.texts().flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]));
    Snapshot {
        version,
        fields: BTreeMap::from([("digest".to_string(), digest)]),
        starts: None,
        deleted: false,
        expires: Some(expires),
    }
}

/// When a snapshot or a marker written now expires: retention is the store's wall clock (its
/// TTL), not the poller's clock.
fn snapshot_expiry() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(SNAPSHOT_TTL_DAYS)
}

/// What a run reads (see `Poller::bounds`).
#[derive(Debug, Clone, Copy)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    horizon: DateTime<Utc>,
    /// An audit: hand off and snapshot, never move the cursor.
    audit: bool,
}

/// How far before its lower bound each slice is read: two slices share an end, and Kareo may
/// exclude both ends of a pair (`kareo-api.md` §3), so a record stamped exactly on a shared end
/// would otherwise be in neither.
const SLICE_OVERLAP: chrono::Duration = chrono::Duration::seconds(1);

/// The practice's midnight at or before `t` (date-only stamps compare as their midnight).
pub fn day_start(t: DateTime<Utc>, tz: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::TimeZone;
    let midnight = t
        .with_timezone(&tz)
        .date_naive()
        .and_time(chrono::NaiveTime::MIN);
    tz.from_local_datetime(&midnight)
        .earliest()
        .map_or(t, |m| m.with_timezone(&Utc))
        .min(t)
}

/// Cuts `[from, to]` into consecutive slices of at most `max`.
pub fn slices(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let max = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::days(30));
    let mut out = Vec::new();
    let mut a = from;
    while a < to {
        let b = (a + max).min(to);
        out.push((a, b));
        a = b;
    }
    out
}

/// The two halves of a window (sharing the midpoint: bounds are inclusive).
pub fn halves(from: DateTime<Utc>, to: DateTime<Utc>) -> [(DateTime<Utc>, DateTime<Utc>); 2] {
    let mid = from + (to - from) / 2;
    [(from, mid), (mid, to)]
}

/// The ports a poll run uses.
pub struct Poller<'a, K, C, S, E, T> {
    /// Kareo.
    pub kareo: &'a K,
    /// Cursors.
    pub cursors: &'a C,
    /// Snapshots.
    pub snapshots: &'a S,
    /// Where events go.
    pub sink: &'a E,
    /// The clock.
    pub clock: &'a T,
    /// Settings.
    pub config: &'a PollConfig,
}

impl<K, C, S, E, T> Poller<'_, K, C, S, E, T>
where
    K: KareoSource,
    C: CursorStore,
    S: SnapshotStore,
    E: EventSink,
    T: Clock,
{
    /// Runs one (tenant, family). Never panics on bad data; every failure ends up in the
    /// report and on the cursor.
    pub async fn run(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        mode: Mode,
        deadline: Option<Instant>,
    ) -> Report {
        self.run_from(tenant, creds, family, mode, deadline, None)
            .await
    }

    /// [`Self::run`], from the cursor as already read (`seen`: `Some(None)` when there is
    /// none; `None`: read it here) — a shard reads all its tenants' cursors in one call.
    ///
    /// A poll reads before it leases: a run with nothing to hand off costs its Kareo reads
    /// and at most one conditional write ([`CursorStore::advance`]); one with something takes
    /// the lease conditional on the cursor it read before its first hand-off
    /// ([`CursorStore::acquire_seen`]), so a run that lost a race hands off nothing. Other
    /// modes take the lease first.
    // Long: the run protocol's steps (cursor, lease, windows, hand-off, failure) in order.
    pub async fn run_from(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        mode: Mode,
        deadline: Option<Instant>,
        seen: Option<Option<Cursor>>,
    ) -> Report {
        let mut report = Report::new(&tenant.tenant, family);
        let Some(settings) = tenant.family(family) else {
            report.outcome = Outcome::Skipped;
            return report;
        };
        let run_start = self.clock.now();
        let started = std::time::Instant::now();
        let seen = match seen {
            Some(c) => Ok(c),
            None if matches!(mode, Mode::Poll | Mode::DryRun) => {
                self.cursors.load(&tenant.tenant, family).await
            }
            None => Ok(None),
        };
        let seen = match seen {
            Ok(c) => c,
            Err(e) => {
                report.outcome = failed(&RunError::Store(e));
                return report;
            }
        };
        if mode == Mode::DryRun {
            let position = seen.and_then(|c| c.position);
            let window = self.bounds(tenant, settings, position, mode, run_start);
            let mut hold = Hold::Reading;
            if let Err(e) = self
                .windows(
                    tenant,
                    creds,
                    family,
                    window,
                    window.from,
                    &mut hold,
                    deadline,
                    &mut report,
                )
                .await
            {
                report.outcome = failed(&e);
            }
            report.position = position;
            return report;
        }
        let mut hold = if mode == Mode::Poll {
            if let (Some(cadence), Some(c)) = (tenant.cadence(family, run_start), &seen) {
                if !due(c, cadence, run_start) {
                    report.outcome = Outcome::NotDue;
                    report.position = c.position;
                    return report;
                }
            }
            if seen.as_ref().is_some_and(|c| {
                c.lease_owner.is_some() && c.lease_until.is_some_and(|u| u > run_start)
            }) {
                report.outcome = Outcome::Skipped;
                report.position = seen.and_then(|c| c.position);
                tracing::info!(tenant = %tenant.tenant, %family, "lease held by another run: skipped");
                return report;
            }
            Hold::Unleased {
                seen,
                reached: None,
            }
        } else {
            let until =
                run_start + chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
            match self
                .cursors
                .acquire(&tenant.tenant, family, &self.config.owner, run_start, until)
                .await
            {
                Ok(l) => Hold::Leased(l),
                Err(StoreError::Conflict(_)) => {
                    report.outcome = Outcome::Skipped;
                    tracing::info!(tenant = %tenant.tenant, %family, "lease held by another run: skipped");
                    return report;
                }
                Err(e) => {
                    report.outcome = failed(&RunError::Store(e));
                    return report;
                }
            }
        };
        if matches!(hold, Hold::Leased(_)) {
            fail::fail_point!("poll.after_lease");
        }
        // Kareo's live throttle intervals, once per account per process. Refused credentials
        // fail the run here (recorded on the cursor; the breaker opens); anything else leaves
        // the documented intervals.
        let prepared = match self.kareo.prepare(creds).await {
            Err(e) if ErrorClass::of_kareo(&e) == ErrorClass::KareoCredentials => {
                Err(RunError::Kareo(e))
            }
            Err(e) => {
                tracing::warn!(
                    tenant = %tenant.tenant, %family, class = %ErrorClass::of_kareo(&e),
                    "GetThrottles not read: the documented intervals apply"
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        };
        let result = match (prepared, mode, &mut hold) {
            (Err(e), _, _) => Err(e),
            (Ok(()), Mode::Deletes, Hold::Leased(lease)) => {
                self.deletes(tenant, creds, family, lease, deadline, &mut report)
                    .await
            }
            (Ok(()), Mode::Resync, Hold::Leased(lease)) => {
                self.resync(tenant, creds, family, lease, deadline, &mut report)
                    .await
            }
            (Ok(()), mode, hold) => {
                let position = hold.position();
                let window = self.bounds(tenant, settings, position, mode, run_start);
                // `created` is judged against what this run reads, not the cursor: a record
                // first read in the overlap was never handed off. A backfill re-reads the
                // past: only what was created after the cursor is new.
                let threshold = match mode {
                    Mode::Backfill { .. } => position.unwrap_or(window.from),
                    _ => window.from,
                };
                self.windows(
                    tenant,
                    creds,
                    family,
                    window,
                    threshold,
                    hold,
                    deadline,
                    &mut report,
                )
                .await
            }
        };
        match result {
            Ok(()) => {}
            Err(RunError::Moved) => {
                report.outcome = Outcome::Skipped;
                tracing::info!(tenant = %tenant.tenant, %family, "cursor moved by another run since it was read: skipped");
            }
            Err(e) => {
                report.outcome = failed(&e);
                let err = CursorError {
                    class: e.class(),
                    message: e.message(),
                    at: self.clock.now(),
                };
                let recorded = match self.lease_now(tenant, family, &mut hold).await {
                    Ok(Some(lease)) => self.cursors.fail(lease, err).await,
                    Ok(None) => Ok(()),
                    Err(RunError::Store(se)) => Err(se),
                    Err(_) => Ok(()),
                };
                if let Err(se) = recorded {
                    tracing::warn!(tenant = %tenant.tenant, %family, error = %se, "could not record the failure on the cursor");
                }
            }
        }
        report.position = hold.reached();
        tracing::info!(
            tenant = %tenant.tenant, %family, outcome = report.outcome.name(),
            class = report.outcome.class().map_or("", ErrorClass::name), windows = report.windows,
            records = report.records, events = report.events, duplicates = report.duplicates,
            unreadable = report.unreadable, elapsed_ms = started.elapsed().as_millis() as u64, "poll run"
        );
        report
    }

    /// The lease, taken now if the run read before leasing (conditional on what it read:
    /// `Moved` when another run got there first). `None`: a dry run.
    async fn lease_now<'h>(
        &self,
        tenant: &TenantConfig,
        family: Family,
        hold: &'h mut Hold,
    ) -> Result<Option<&'h mut Lease>, RunError> {
        if let Hold::Unleased { seen, .. } = hold {
            let now = self.clock.now();
            let until = now + chrono::Duration::from_std(self.config.lease_ttl).unwrap_or_default();
            let lease = match self
                .cursors
                .acquire_seen(
                    &tenant.tenant,
                    family,
                    seen.as_ref(),
                    &self.config.owner,
                    now,
                    until,
                )
                .await
            {
                Ok(l) => l,
                Err(StoreError::Conflict(_)) => return Err(RunError::Moved),
                Err(e) => return Err(RunError::Store(e)),
            };
            *hold = Hold::Leased(lease);
            fail::fail_point!("poll.after_lease");
        }
        Ok(match hold {
            Hold::Leased(l) => Some(l),
            _ => None,
        })
    }

    /// Gives the lease back, if one is held (a run that stopped for its time budget, an
    /// audit's end).
    async fn release(&self, hold: &Hold) -> Result<(), RunError> {
        if let Hold::Leased(l) = hold {
            self.cursors.release(l).await?;
        }
        Ok(())
    }

    /// The end of a poll that read every window and handed off nothing: one conditional write
    /// moves the cursor to where the reads reached — or none, while the stored cursor needs
    /// nothing (see [`PollConfig::persist_every`]).
    async fn settle_unleased(
        &self,
        tenant: &TenantConfig,
        family: Family,
        hold: &Hold,
        run_start: DateTime<Utc>,
    ) -> Result<(), RunError> {
        let Hold::Unleased {
            seen,
            reached: Some(reached),
        } = hold
        else {
            return Ok(());
        };
        let persist_every =
            chrono::Duration::from_std(self.config.persist_every).unwrap_or_default();
        let settings = tenant.family(family).expect("enabled");
        let from = |p| {
            self.bounds(tenant, settings, Some(p), Mode::Poll, run_start)
                .from
        };
        let needed = match seen {
            None => true,
            Some(c) => {
                c.last_error.is_some()
                    || c.lease_owner.is_some()
                    || tenant.cadence(family, run_start).is_some()
                    || c.last_success_start
                        .is_none_or(|l| run_start - l >= persist_every)
                    || c.position.is_none_or(|p| from(p) != from(p.max(*reached)))
            }
        };
        if !needed {
            tracing::debug!(tenant = %tenant.tenant, %family, "nothing handed off: the cursor stays");
            return Ok(());
        }
        match self
            .cursors
            .advance(&tenant.tenant, family, seen.as_ref(), *reached, run_start)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(RunError::Moved),
            Err(e) => Err(RunError::Store(e)),
        }
    }

    /// What a run reads: `(from, to, horizon)`. `[from, to]` is read; the cursor never moves
    /// past `horizon` (now − safety lag). Both ends reach [`policy::CLOCK_ALLOWANCE`] further
    /// than the practice's clock needs, and every run starts at the beginning of the
    /// practice's day, so that Kareo's clock in another zone, date-only stamps and exclusive
    /// bounds lose nothing; the snapshots make the overlap free of duplicates.
    fn bounds(
        &self,
        tenant: &TenantConfig,
        settings: domain::tenant::Effective,
        position: Option<DateTime<Utc>>,
        mode: Mode,
        now: DateTime<Utc>,
    ) -> Window {
        let lookback = chrono::Duration::from_std(settings.lookback).unwrap_or_default();
        let lag = chrono::Duration::from_std(tenant.safety_lag).unwrap_or_default();
        let allowance = chrono::Duration::from_std(policy::CLOCK_ALLOWANCE).unwrap_or_default();
        let from = match (mode, position) {
            (Mode::Backfill { since }, _) => since - allowance,
            (Mode::Audit, _) => day_start(
                (now - chrono::Duration::days(AUDIT_DAYS)).max(settings.start) - allowance,
                tenant.timezone,
            ),
            (_, Some(p)) => day_start(p - lookback - allowance, tenant.timezone),
            (_, None) => day_start(settings.start - allowance, tenant.timezone),
        };
        let horizon = now - lag;
        Window {
            from,
            to: horizon + allowance,
            horizon,
            audit: mode == Mode::Audit,
        }
    }

    /// Reads the window slice by slice; hands off and checkpoints each (unless dry run).
    // Long: one slice's protocol in order, written once for poll, backfill, dry run and audit.
    #[allow(clippy::too_many_arguments)]
    async fn windows(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        window: Window,
        created_after: DateTime<Utc>,
        hold: &mut Hold,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Result<(), RunError> {
        let settings = tenant.family(family).expect("enabled");
        let pol = policy::of(family);
        let run_start = self.clock.now();
        let mut queue: VecDeque<_> = slices(window.from, window.to, settings.max_window).into();
        if queue.is_empty() {
            return self.release(hold).await;
        }
        while let Some((a, b)) = queue.pop_front() {
            if deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) < self.config.margin)
            {
                report.outcome = Outcome::Partial;
                return self.release(hold).await;
            }
            let read = self
                .read_slice(
                    tenant,
                    creds,
                    family,
                    pol.source,
                    a - SLICE_OVERLAP,
                    b,
                    deadline,
                )
                .await;
            let cap = tenant.kareo.row_cap.unwrap_or(self.config.max_records);
            let too_big = matches!(&read, Ok(r) if r.rows >= cap);
            let retry_narrower = matches!(&read, Err(RunError::Kareo(e)) if splittable(e));
            let width = (b - a).to_std().unwrap_or_default();
            // GetCharges has been seen to answer wide windows with nothing: an empty answer
            // for a window wider than the family's bound is read again in halves.
            let suspect = matches!(&read, Ok(r) if r.rows == 0)
                && pol.suspect_empty_above.is_some_and(|w| width > w);
            let narrower = too_big || retry_narrower;
            if suspect || (narrower && width >= pol.min_window * 2) {
                let [h1, h2] = halves(a, b);
                queue.push_front(h2);
                queue.push_front(h1);
                report.splits += 1;
                let why = if suspect {
                    "empty and wide"
                } else {
                    "too large or failed"
                };
                tracing::info!(tenant = %tenant.tenant, %family, window_s = (b - a).num_seconds(), why, "window split");
                continue;
            }
            if too_big {
                return Err(RunError::Data(format!(
                    "{family}: {cap} or more records in a {}s window, the smallest allowed",
                    (b - a).num_seconds()
                )));
            }
            let SliceRead {
                records,
                markers,
                complete,
                ..
            } = read?;
            fail::fail_point!("poll.after_read");
            report.windows += 1;
            report.records += records.len();
            let read = records.len();
            let (events, snaps, high) = self
                .events(tenant, creds, family, records, created_after, report)
                .await?;
            report.count(&events);
            tracing::info!(
                tenant = %tenant.tenant, %family, from = %a.to_rfc3339(), to = %b.to_rfc3339(),
                records = read, events = events.len(), "window read"
            );
            if window.audit {
                let healed = report.healed.get_or_insert_with(Vec::new);
                if !events.is_empty() {
                    tracing::warn!(
                        tenant = %tenant.tenant, %family, from = %a.to_rfc3339(), to = %b.to_rfc3339(),
                        healed = events.len(), "coverage audit: versions never handed off, handed off now"
                    );
                    healed.push((a, b));
                }
            }
            if matches!(hold, Hold::Reading) {
                continue; // dry run
            }
            let snaps: Vec<_> = snaps.into_iter().chain(markers).collect();
            let last = queue.is_empty();
            if let Hold::Unleased { reached, .. } = hold {
                if events.is_empty() && snaps.is_empty() {
                    // Nothing to write for this slice: the reads go on unleased.
                    if !complete {
                        report.outcome = Outcome::Partial;
                        return Ok(());
                    }
                    *reached = Some(b.min(window.horizon));
                    if last {
                        self.settle_unleased(tenant, family, hold, run_start)
                            .await?;
                    }
                    continue;
                }
            }
            let Some(lease) = self.lease_now(tenant, family, hold).await? else {
                continue;
            };
            self.hand_off(&events).await?;
            if !snaps.is_empty() {
                self.snapshots.put(&tenant.tenant, family, snaps).await?;
            }
            fail::fail_point!("poll.before_checkpoint");
            if !complete {
                // The time budget ran out inside the slice: what was read is handed off and
                // marked; the cursor stays before the slice, and the next run resumes it.
                report.outcome = Outcome::Partial;
                self.cursors.release(lease).await?;
                return Ok(());
            }
            if window.audit {
                if last {
                    self.cursors.release(lease).await?;
                }
                continue;
            }
            self.cursors
                .checkpoint(lease, b.min(window.horizon), high, run_start, last)
                .await?;
            fail::fail_point!("poll.after_checkpoint");
        }
        Ok(())
    }

    /// Reads one slice. For encounters (no date filter of their own): the charges changed in
    /// it, then GetEncounterDetails for each encounter whose charges were not already followed
    /// at the same version and content (a marker per charge, written after the hand-off), and
    /// only while the time budget lasts — a slice cut short is handed off as far as it got and
    /// the next run resumes it without fetching again what was done.
    #[allow(clippy::too_many_arguments)]
    async fn read_slice(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        source: Source,
        a: DateTime<Utc>,
        b: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> Result<SliceRead, RunError> {
        let cap = tenant.kareo.row_cap.unwrap_or(self.config.max_records);
        let records = self
            .kareo
            .window(creds, tenant, family, (a, b), cap)
            .await
            .map_err(RunError::Kareo)?;
        let rows = records.len();
        match source {
            Source::Window => Ok(SliceRead {
                rows,
                records,
                markers: Vec::new(),
                complete: true,
            }),
            Source::EncountersOfChangedCharges => {
                let tz = tenant.timezone;
                // Encounter id → the markers of its charges read now.
                let mut charges: BTreeMap<String, Vec<(String, Snapshot)>> = BTreeMap::new();
                for c in &records {
                    let Some(enc) = c
                        .get("EncounterID")
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                    else {
                        continue;
                    };
                    let mark = match (c.id(), c.version(tz)) {
                        (Some(id), Ok(Some(v))) => {
                            Some((charge_marker(id), marker(v, c, snapshot_expiry())))
                        }
                        _ => None,
                    };
                    let list = charges.entry(enc.to_string()).or_default();
                    list.extend(mark);
                    if list.is_empty() {
                        // A charge without a readable id or version: always followed.
                        list.push((
                            String::new(),
                            marker(DateTime::<Utc>::MIN_UTC, c, self.clock.now()),
                        ));
                    }
                }
                let keys: Vec<String> = charges
                    .values()
                    .flatten()
                    .map(|(k, _)| k.clone())
                    .filter(|k| !k.is_empty())
                    .collect();
                let known = if keys.is_empty() {
                    Default::default()
                } else {
                    self.snapshots.get(&tenant.tenant, family, &keys).await?
                };
                let mut out = SliceRead {
                    rows,
                    records: Vec::new(),
                    markers: Vec::new(),
                    complete: true,
                };
                for (id, marks) in charges {
                    let followed = marks.iter().all(|(k, m)| {
                        known
                            .get(k)
                            .is_some_and(|s| s.version == m.version && s.fields == m.fields)
                    });
                    if followed {
                        continue;
                    }
                    if deadline.is_some_and(|d| {
                        d.saturating_duration_since(Instant::now()) < self.config.margin
                    }) {
                        out.complete = false;
                        break;
                    }
                    if let Some(r) = self
                        .kareo
                        .encounter(creds, tenant, &id)
                        .await
                        .map_err(RunError::Kareo)?
                    {
                        out.records.push(r);
                    }
                    out.markers
                        .extend(marks.into_iter().filter(|(k, _)| !k.is_empty()));
                }
                Ok(out)
            }
        }
    }

    /// Events for the records that changed since their snapshot; the snapshots to write after
    /// the hand-off; the largest version seen.
    async fn events(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        records: Vec<Record>,
        created_after: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<
        (
            Vec<ChangeEvent>,
            Vec<(String, Snapshot)>,
            Option<DateTime<Utc>>,
        ),
        RunError,
    > {
        let tz = tenant.timezone;
        // Minimum necessary: only what the rules use leaves this function (see
        // `domain::projection`); the rest of each record is dropped with it.
        let projection = Projection::of(tenant, family);
        let key = DigestKey::derive(&creds.customer_key, &tenant.tenant);
        let latest = latest_versions(tenant, family, records, report);
        let ids: Vec<String> = latest.keys().cloned().collect();
        let known = if ids.is_empty() {
            Default::default()
        } else {
            self.snapshots.get(&tenant.tenant, family, &ids).await?
        };
        let mut events = Vec::new();
        let mut snaps = Vec::new();
        let mut high = None;
        for (id, (version, rec)) in latest {
            high = high.max(Some(version));
            let snap = known.get(&id);
            let mut fields = projection.carry(&rec);
            if family == Family::Encounters {
                name_encounter_status(&mut fields, report);
            }
            let kept = projection.keep(&rec, &fields, &key);
            // Same version, other content: Kareo stamped a second change alike (date-only or
            // same-second stamps). It is a change, named by its content. Only members both
            // reads carry are compared: GetAllPatients and GetPatients answer different sets.
            let revision =
                snap.is_some_and(|s| s.version == version && projection.revised(&s.fields, &kept));
            if snap.is_some_and(|s| s.version > version || (s.version == version && !revision)) {
                report.duplicates += 1;
                continue;
            }
            let kind = match (snap, rec.created(tz).ok().flatten()) {
                (Some(_), _) => ChangeKind::Updated,
                (None, Some(created)) if created < created_after => ChangeKind::Updated,
                (None, _) => ChangeKind::Created,
            };
            let changes = snap
                .map(|s| {
                    let mut c = diff(&Projection::plain(&s.fields), &fields);
                    c.retain(|c| projection.transitions.contains(&c.field));
                    c
                })
                .unwrap_or_default();
            let starts = if family == Family::Appointments {
                rec.date("StartDate", tz).ok().flatten()
            } else {
                None
            };
            let event = if revision {
                revision_id(&tenant.tenant, family, &id, version, &kept)
            } else {
                event_id(&tenant.tenant, family, &id, version, kind)
            };
            events.push(ChangeEvent {
                id: event,
                tenant: tenant.tenant.clone(),
                family,
                record_id: id.clone(),
                version,
                kind,
                changes,
                record: fields,
            });
            snaps.push((
                id,
                Snapshot {
                    version,
                    fields: kept,
                    starts,
                    deleted: false,
                    expires: Some(snapshot_expiry()),
                },
            ));
        }
        Ok((events, snaps, high))
    }

    /// Hands events off in batches whose serialised size stays under the limit.
    async fn hand_off(&self, events: &[ChangeEvent]) -> Result<(), RunError> {
        let mut start = 0;
        let mut size = 2;
        for (i, e) in events.iter().enumerate() {
            let n = serde_json::to_vec(e).map(|v| v.len()).unwrap_or(0) + 1;
            if i > start && size + n > self.config.batch_bytes {
                self.sink
                    .hand_off(&events[start..i])
                    .await
                    .map_err(RunError::Sink)?;
                fail::fail_point!("poll.after_hand_off");
                start = i;
                size = 2;
            }
            size += n;
        }
        if start < events.len() {
            self.sink
                .hand_off(&events[start..])
                .await
                .map_err(RunError::Sink)?;
            fail::fail_point!("poll.after_hand_off");
        }
        Ok(())
    }

    /// Appointments vanish from GetAppointments when deleted: re-check the known upcoming ones
    /// (starting within [`RECHECK_HORIZON_DAYS`]) with GetAppointment and emit `deleted` for
    /// those with `IsDeleted`, or that Kareo no longer knows. Each appointment re-checked is
    /// marked (`checked:<id>`, the time of the check) in batches of [`RECHECK_BATCH`], after
    /// the batch's events are handed off; one not re-checked within the pass interval comes
    /// first, so a pass the time budget cuts short is resumed by the next run, never redone.
    async fn deletes(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        lease: &mut Lease,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Result<(), RunError> {
        if !policy::of(family).recheck_deletes {
            self.cursors.release(lease).await?;
            return Ok(());
        }
        let projection = Projection::of(tenant, family);
        let now = self.clock.now();
        let horizon = now + chrono::Duration::days(RECHECK_HORIZON_DAYS);
        let mut upcoming: Vec<(String, Snapshot)> = self
            .snapshots
            .upcoming(&tenant.tenant, family, now)
            .await?
            .into_iter()
            .filter(|(_, s)| s.starts.is_some_and(|t| t <= horizon))
            .collect();
        // Re-checked within the last pass interval: done. The others, least recently first.
        let keys: Vec<String> = upcoming.iter().map(|(id, _)| checked_marker(id)).collect();
        let checked = if keys.is_empty() {
            Default::default()
        } else {
            self.snapshots.get(&tenant.tenant, family, &keys).await?
        };
        let fresh = now - chrono::Duration::minutes(RECHECK_FRESH_MINUTES);
        let last_check = |id: &str| checked.get(&checked_marker(id)).map(|s| s.version);
        upcoming.retain(|(id, _)| last_check(id).is_none_or(|t| t < fresh));
        upcoming.sort_by_key(|(id, _)| (last_check(id), id.parse::<i64>().unwrap_or(i64::MAX)));
        for batch in upcoming.chunks(RECHECK_BATCH) {
            let mut events = Vec::new();
            let mut snaps = Vec::new();
            let mut cut = false;
            for (id, snap) in batch {
                if deadline.is_some_and(|d| {
                    d.saturating_duration_since(Instant::now()) < self.config.margin
                }) {
                    cut = true;
                    break;
                }
                let Ok(n) = id.parse::<i64>() else { continue };
                report.records += 1;
                let rec = self
                    .kareo
                    .appointment(creds, n)
                    .await
                    .map_err(RunError::Kareo)?;
                let checked_at = self.clock.now();
                snaps.push((checked_marker(id), checked_mark(checked_at)));
                let deleted = match &rec {
                    None => true, // Kareo no longer knows it: deleted.
                    Some(r) => r.bool("IsDeleted").ok().flatten() == Some(true),
                };
                if !deleted {
                    continue;
                }
                let version = rec
                    .and_then(|r| r.version(tenant.timezone).ok().flatten())
                    .unwrap_or(snap.version);
                events.push(ChangeEvent {
                    id: event_id(&tenant.tenant, family, id, version, ChangeKind::Deleted),
                    tenant: tenant.tenant.clone(),
                    family,
                    record_id: id.clone(),
                    version,
                    kind: ChangeKind::Deleted,
                    changes: Vec::new(),
                    record: projection.deleted(&snap.fields),
                });
                snaps.push((
                    id.clone(),
                    Snapshot {
                        deleted: true,
                        version,
                        expires: Some(snapshot_expiry()),
                        ..snap.clone()
                    },
                ));
            }
            report.count(&events);
            self.hand_off(&events).await?;
            if !snaps.is_empty() {
                self.snapshots.put(&tenant.tenant, family, snaps).await?;
            }
            if cut {
                report.outcome = Outcome::Partial;
                break;
            }
        }
        self.cursors.release(lease).await?;
        Ok(())
    }

    /// Patients: every page of GetAllPatients; what changed since its snapshot is handed off.
    async fn resync(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        family: Family,
        lease: &mut Lease,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Result<(), RunError> {
        if family != Family::Patients {
            return Err(RunError::Data(format!(
                "resync is for patients, not {family}"
            )));
        }
        // Resync re-reads every patient: only those created after the cursor it starts from
        // are new (an old patient without a snapshot is `updated`, never an intake).
        let created_after = lease.cursor.position.unwrap_or_else(|| self.clock.now());
        let mut key = 0i64;
        loop {
            if deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) < self.config.margin)
            {
                report.outcome = Outcome::Partial;
                break;
            }
            let (records, next) = self
                .kareo
                .all_patients(creds, tenant, key, self.config.resync_batch)
                .await
                .map_err(RunError::Kareo)?;
            report.windows += 1;
            report.records += records.len();
            let (events, snaps, _) = self
                .events(tenant, creds, family, records, created_after, report)
                .await?;
            report.count(&events);
            self.hand_off(&events).await?;
            if !snaps.is_empty() {
                self.snapshots.put(&tenant.tenant, family, snaps).await?;
            }
            match next {
                Some(k) if k > key => key = k,
                _ => break,
            }
        }
        self.cursors.release(lease).await?;
        Ok(())
    }
}

/// The latest version of each record (a record may appear twice across overlaps). One record
/// whose version cannot be read never stops its family: it is skipped, counted
/// (`UnreadableVersions`, alarmed) and named by id in the log.
fn latest_versions(
    tenant: &TenantConfig,
    family: Family,
    records: Vec<Record>,
    report: &mut Report,
) -> BTreeMap<String, (DateTime<Utc>, Record)> {
    let tz = tenant.timezone;
    let mut latest: BTreeMap<String, (DateTime<Utc>, Record)> = BTreeMap::new();
    for r in records {
        let Some(id) = r.id().map(str::to_string) else {
            continue;
        };
        let version = match r.version(tz) {
            Ok(Some(v)) => v,
            Ok(None) | Err(_) => {
                report.unreadable += 1;
                tracing::warn!(
                    tenant = %tenant.tenant, %family, record = %id,
                    member = r.kind().version.unwrap_or("version member"),
                    "record skipped: its version is missing or unreadable"
                );
                continue;
            }
        };
        match latest.get(&id) {
            Some((v, _)) if *v >= version => {}
            _ => {
                latest.insert(id, (version, r));
            }
        }
    }
    latest
}

/// GetEncounterDetails answers `EncounterStatus` as a number: events carry Kareo's name
/// (`Approved`), the one rules are written with; an unknown code is kept as it is, counted and
/// logged (the code only).
fn name_encounter_status(fields: &mut BTreeMap<String, String>, report: &mut Report) {
    let Some(read) = fields.get_mut("EncounterStatus") else {
        return;
    };
    match kareo::codes::encounter_status(read) {
        Some(name) => *read = name.to_string(),
        None if read.trim().is_empty() => {}
        None => {
            report.unknown_codes += 1;
            tracing::warn!(code = %read.trim(), "unknown EncounterStatus code: handed off as it is");
        }
    }
}

fn failed(e: &RunError) -> Outcome {
    Outcome::Failed {
        class: e.class(),
        message: e.message(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slices_cover_the_window_without_gaps(start in 0i64..2_000_000_000, len in 0i64..10_000_000, max in 1u64..3_000_000) {
            let from = DateTime::<Utc>::from_timestamp(start, 0).unwrap();
            let to = from + chrono::Duration::seconds(len);
            let s = slices(from, to, Duration::from_secs(max));
            if len == 0 { prop_assert!(s.is_empty()); } else {
                prop_assert_eq!(s[0].0, from);
                prop_assert_eq!(s[s.len() - 1].1, to);
                for w in s.windows(2) { prop_assert_eq!(w[0].1, w[1].0); }
                for (a, b) in &s { prop_assert!(*b - *a <= chrono::Duration::seconds(max as i64) && b > a); }
            }
        }

        #[test]
        fn halves_share_the_midpoint(start in 0i64..2_000_000_000, len in 2i64..10_000_000) {
            let from = DateTime::<Utc>::from_timestamp(start, 0).unwrap();
            let to = from + chrono::Duration::seconds(len);
            let [a, b] = halves(from, to);
            prop_assert_eq!(a.0, from);
            prop_assert_eq!(a.1, b.0);
            prop_assert_eq!(b.1, to);
            prop_assert!(a.1 > from && a.1 < to);
        }
    }
}
