//! The ports through which the sync logic talks to the outside: cursors, snapshots, tenants,
//! secrets, the hand-off of change events, and the clock. Adapters: DynamoDB / Secrets Manager /
//! Lambda (crate `aws`), files and memory ([`crate::local`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use chrono::{DateTime, Utc};
use kareo::Family;
use serde::{Deserialize, Serialize};

pub use crate::class::ErrorClass;
use crate::event::ChangeEvent;
use crate::tenant::TenantConfig;

/// A store failure. `Conflict` is the domain answer of a conditional write (someone else holds
/// the lease, or the cursor moved); the others are infrastructure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the lease is held by another run, or the version moved.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store throttled the call.
    #[error("store throttled")]
    Throttled,
    /// The store is unreachable or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An item is not what this version writes (names the item and the attribute).
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The class (for metrics, cursors and logs).
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Conflict(_) => ErrorClass::Conflict,
            StoreError::Throttled => ErrorClass::StoreThrottled,
            StoreError::Unavailable(_) => ErrorClass::StoreUnavailable,
            StoreError::Corrupt(_) => ErrorClass::StoreCorrupt,
        }
    }
}

/// The last failure recorded on a cursor: a class and a message naming ids and elements only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorError {
    /// Error class.
    pub class: ErrorClass,
    /// What failed (no PHI, no secrets).
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The sync position of one (tenant, family).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Upper bound of the last window whose every event was handed off (a past instant).
    pub position: Option<DateTime<Utc>>,
    /// Largest record version handed off (from the data; sync lag = now − high_water).
    pub high_water: Option<DateTime<Utc>>,
    /// Start of the last successful run.
    pub last_success_start: Option<DateTime<Utc>>,
    /// Version for conditional updates (incremented by every write).
    pub version: u64,
    /// Holder of the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry.
    pub lease_until: Option<DateTime<Utc>>,
    /// Last failure, cleared by the next success.
    pub last_error: Option<CursorError>,
}

/// A held lease on a cursor: the cursor as it was when taken, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Tenant.
    pub tenant: String,
    /// Family.
    pub family: Family,
    /// Holder.
    pub owner: String,
    /// The cursor (its `version` is the one the next write is conditional on).
    pub cursor: Cursor,
}

/// Cursors, with leases so that two runs of one (tenant, family) never overlap.
pub trait CursorStore: Send + Sync {
    /// The cursor, if any.
    fn load(
        &self,
        tenant: &str,
        family: Family,
    ) -> impl Future<Output = Result<Option<Cursor>, StoreError>> + Send;

    /// Takes the lease (conditional write: no lease, or an expired one), creating the cursor
    /// if absent. `Conflict` when another run holds it.
    fn acquire(
        &self,
        tenant: &str,
        family: Family,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send;

    /// The cursors of `tenants` for `family` (one batched read for a shard's tenants; an
    /// absent cursor is absent from the map), read consistently.
    fn load_many(
        &self,
        tenants: &[&str],
        family: Family,
    ) -> impl Future<Output = Result<HashMap<String, Cursor>, StoreError>> + Send;

    /// Takes the lease only if the cursor is still as `seen` (its version; `None`: absent)
    /// and not leased: a poll that read before leasing hands off nothing another run has
    /// moved past since. `Conflict` otherwise.
    fn acquire_seen(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Lease, StoreError>> + Send;

    /// Moves a cursor no lease was taken on, if it is still as `seen` (`None`: absent): the
    /// position (never backwards), the last success, no error, no (expired) lease — the one
    /// write of a poll that had nothing to hand off. `Conflict` if another run wrote it since.
    fn advance(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        position: DateTime<Utc>,
        run_start: DateTime<Utc>,
    ) -> impl Future<Output = Result<Cursor, StoreError>> + Send;

    /// Moves the cursor (conditional on the lease's version and owner), clears the last error,
    /// and releases the lease when `release`. Updates `lease.cursor`.
    fn checkpoint(
        &self,
        lease: &mut Lease,
        position: DateTime<Utc>,
        high_water: Option<DateTime<Utc>>,
        run_start: DateTime<Utc>,
        release: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Releases the lease without moving the cursor (a run that stopped for its time budget,
    /// a delete re-check).
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a failure and releases the lease; the position does not move.
    fn fail(
        &self,
        lease: &Lease,
        error: CursorError,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets the position (operator `cursor reset`; `None` = start over from the config).
    fn reset(
        &self,
        tenant: &str,
        family: Family,
        position: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every cursor: (tenant, family, cursor).
    fn list(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, Family, Cursor)>, StoreError>> + Send;
}

/// The last version of a record that was handed off.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its version.
    pub version: DateTime<Utc>,
    /// Its simple members.
    pub fields: BTreeMap<String, String>,
    /// For appointments: when it starts (re-checked for deletion while upcoming).
    #[serde(default)]
    pub starts: Option<DateTime<Utc>>,
    /// Deleted (a `deleted` event was handed off).
    #[serde(default)]
    pub deleted: bool,
    /// When the store forgets it (the table's TTL attribute; an expired one reads as absent).
    /// Every snapshot the poller writes expires ([`SNAPSHOT_TTL_DAYS`] after it was last
    /// written): nothing about a record is kept for ever.
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
}

/// How long a snapshot is kept after it was last written. A record unchanged for longer is
/// read as never seen when it changes again: handed off as `updated`, without the transition
/// of the members it had (a `changed_from` rule does not fire for that one change).
pub const SNAPSHOT_TTL_DAYS: i64 = 400;

/// How long a ledger item (a task's or a write command's claim and outcome) is kept after it
/// was last written, when its writer gives no expiry of its own (webhook dedupe items keep 7
/// days). Longer than any way the same event or command can come back (the on-failure queue
/// keeps 14 days, the coverage audit re-reads 7, a snapshot lives 400): an event handed off
/// again after that finds no ledger item, and Dock's reference lookup is the last guard.
pub const LEDGER_TTL_DAYS: i64 = 400;

/// When a ledger item written at `at` without an expiry of its own expires (whole seconds:
/// the table's TTL attribute is epoch seconds, so every store keeps the same instant).
pub fn ledger_expiry(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    (at + chrono::Duration::days(LEDGER_TTL_DAYS)).trunc_subsecs(0)
}

impl Snapshot {
    /// Has it expired at `now`?
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("fields", &self.fields.len())
            .field("deleted", &self.deleted)
            .finish()
    }
}

/// Per-record snapshots: what was handed off, for dedupe and field transitions.
pub trait SnapshotStore: Send + Sync {
    /// The snapshots of these records (absent ones are missing from the map).
    fn get(
        &self,
        tenant: &str,
        family: Family,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Snapshot>, StoreError>> + Send;

    /// Writes snapshots.
    fn put(
        &self,
        tenant: &str,
        family: Family,
        items: Vec<(String, Snapshot)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Snapshots of records starting at or after `after` and not deleted (upcoming
    /// appointments, for the delete re-check).
    fn upcoming(
        &self,
        tenant: &str,
        family: Family,
        after: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(String, Snapshot)>, StoreError>> + Send;
}

/// Tenant configurations.
pub trait TenantStore: Send + Sync {
    /// Every tenant.
    fn tenants(&self) -> impl Future<Output = Result<Vec<TenantConfig>, StoreError>> + Send;
    /// Stores (creates or replaces) a tenant's config.
    fn put(&self, config: &TenantConfig) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A secret's value (JSON text). `Debug` is redacted.
#[derive(Clone)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A secret that could not be had. Names the secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No such secret.
    #[error("secret '{0}' not found")]
    NotFound(String),
    /// The secret is not the JSON this product expects (names the missing key).
    #[error("secret '{name}' is malformed: {reason}")]
    Malformed {
        /// Secret name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The secret store failed.
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
}

/// Secrets by name.
pub trait SecretSource: Send + Sync {
    /// The secret's value.
    fn get(&self, name: &str) -> impl Future<Output = Result<SecretValue, SecretError>> + Send;

    /// The secret's value as stored now, past any cache (a breaker opened on the cached value:
    /// the secret may have been fixed since). Uncached sources: [`Self::get`].
    fn refresh(&self, name: &str) -> impl Future<Output = Result<SecretValue, SecretError>> + Send {
        self.get(name)
    }
}

/// What a tenant purge found (and, unless a dry run, deleted), by kind. Counts only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeCounts {
    /// Cursors (one per family).
    pub cursors: usize,
    /// Snapshots and the bounded runs' markers.
    pub snapshots: usize,
    /// Task ledger items (`task#<tenant>#…`).
    pub tasks: usize,
    /// Write-command ledger items (`write#<tenant>#…`).
    pub writes: usize,
    /// Webhook dedupe items (`webhook#<tenant>#…`).
    pub dedupe: usize,
    /// Patient and task links.
    pub links: usize,
    /// The tenant's config, its webhook registration and its pause.
    pub config: usize,
}

/// Offboarding: every item the state store keeps for one tenant. Task ledger items written by
/// versions before the tenant was in their key (`task#<event>#<rule>`) are not found here:
/// they hold a Dock task id and a state (no record content) and expire after
/// [`LEDGER_TTL_DAYS`].
pub trait TenantPurge: Send + Sync {
    /// Counts the tenant's items and, unless `dry_run`, deletes them — the config last, so an
    /// interrupted purge can be run again.
    fn purge(
        &self,
        tenant: &str,
        dry_run: bool,
    ) -> impl Future<Output = Result<PurgeCounts, StoreError>> + Send;
}

/// Reads Kareo credentials (`{"customer_key","user","password"}`) from a secret.
pub async fn kareo_credentials<S: SecretSource>(
    secrets: &S,
    name: &str,
) -> Result<kareo::Credentials, SecretError> {
    kareo_credentials_from(name, &secrets.get(name).await?)
}

/// [`kareo_credentials`] of a value already read (`name`: the secret, for the messages).
pub fn kareo_credentials_from(
    name: &str,
    v: &SecretValue,
) -> Result<kareo::Credentials, SecretError> {
    let malformed = |reason: String| SecretError::Malformed {
        name: name.to_string(),
        reason,
    };
    // serde's own messages quote the offending value ("invalid type: integer `12345678`"):
    // each problem is named here by key and JSON kind only.
    let json: serde_json::Value = serde_json::from_str(&v.0).map_err(|e| {
        malformed(format!(
            "not JSON ({:?} at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    for key in ["customer_key", "user", "password"] {
        let kind = match json.get(key) {
            Some(serde_json::Value::String(_)) => continue,
            None => "missing",
            Some(serde_json::Value::Number(_)) => "a number",
            Some(serde_json::Value::Bool(_)) => "a boolean",
            Some(serde_json::Value::Null) => "null",
            Some(_) => "not a string",
        };
        return Err(malformed(format!(
            "\"{key}\" must be a JSON string, and is {kind} (quote it)"
        )));
    }
    serde_json::from_value(json)
        .map_err(|_| malformed("expected {\"customer_key\",\"user\",\"password\"}".into()))
}

/// Reads a tenant's Dock credentials. Two layouts: the tenant's own secret with all five
/// values (`{"client_id","client_secret","api_key","organization_id","user_id"}`), or one
/// secret per deployment with Dock's partner credentials (`client_id`, `client_secret`,
/// `api_key`, issued per integration) shared by every tenant, each tenant's
/// `dock.organization_id` and `dock.user_id` in its config. The config's ids win over the
/// secret's. Errors name the secret and the missing keys, never a value.
pub async fn dock_credentials<S: SecretSource>(
    secrets: &S,
    side: &crate::tenant::DockSide,
) -> Result<dock::DockSecret, SecretError> {
    let v = secrets.get(&side.secret).await?;
    dock_credentials_from(&side.secret, &v.0, side)
}

/// [`dock_credentials`] from the secret's text.
pub fn dock_credentials_from(
    name: &str,
    text: &str,
    side: &crate::tenant::DockSide,
) -> Result<dock::DockSecret, SecretError> {
    let malformed = |reason: String| SecretError::Malformed {
        name: name.to_string(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| malformed(format!("not JSON ({:?})", e.classify())))?;
    let text_of = |key: &str, config: Option<&String>| -> Result<String, String> {
        if let Some(v) = config {
            return Ok(v.clone());
        }
        match json.get(key) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::String(_)) | None => Err(key.to_string()),
            Some(_) => Err(format!("{key} (must be a JSON string)")),
        }
    };
    let mut missing = Vec::new();
    let mut take = |key: &str, config: Option<&String>| {
        text_of(key, config).unwrap_or_else(|m| {
            missing.push(m);
            String::new()
        })
    };
    let secret = dock::DockSecret {
        client_id: take("client_id", None),
        client_secret: take("client_secret", None),
        api_key: take("api_key", None),
        organization_id: take("organization_id", side.organization_id.as_ref()),
        user_id: take("user_id", side.user_id.as_ref()),
    };
    if !missing.is_empty() {
        return Err(malformed(format!(
            "missing {} (organization_id and user_id may be given in the tenant config's \
             `dock:` instead, for a partner secret shared by tenants)",
            missing.join(", ")
        )));
    }
    Ok(secret)
}

/// A hand-off that failed: nothing after it is handed off, and the cursor does not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hand-off failed ({class}): {message}")]
pub struct SinkError {
    /// Class (`sink_throttled`, `sink_unavailable`, `sink_rejected`, `sink_retry`).
    pub class: ErrorClass,
    /// What failed (no PHI).
    pub message: String,
}

/// Where change events go: the shared task-creation function.
pub trait EventSink: Send + Sync {
    /// Hands off one batch; `Ok` means the receiver accepted every event of it.
    fn hand_off(&self, batch: &[ChangeEvent])
        -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The clock.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock read from a function: a simulator's clock in the demo, the tests and the benches
/// (`FnClock::new(move || sim.now())`).
#[derive(Clone)]
pub struct FnClock(std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl FnClock {
    /// The clock `now` reads.
    pub fn new(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> FnClock {
        FnClock(std::sync::Arc::new(now))
    }
}

impl Clock for FnClock {
    fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

/// Where an exactly-once item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// Claimed: the remote call may be under way (or may have happened, if the lease expired).
    Pending,
    /// The remote call succeeded: `remote_id` holds what it created.
    Done,
    /// The outcome is unknown and could not be reconciled: surfaced, never re-posted.
    NeedsReview,
    /// Failed permanently before anything was created (may be redriven).
    Failed,
}

/// One exactly-once item: a (change event, rule) for task creation, or a write command id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// State.
    pub state: LedgerState,
    /// Holder of a pending claim.
    pub owner: Option<String>,
    /// Lease expiry of a pending claim.
    pub until: Option<DateTime<Utc>>,
    /// What the remote call created (Dock task / workflow id, Kareo record id).
    pub remote_id: Option<String>,
    /// Result to return to a repeated request (write commands), JSON.
    pub result: Option<String>,
    /// Why it needs review or failed (no PHI).
    pub reason: Option<String>,
    /// Claims so far.
    pub attempts: u32,
    /// The holder recorded that it is sending the remote call (`mark_sending`). An expired
    /// claim without it never reached the remote side and may be sent again.
    #[serde(default)]
    pub sending: bool,
    /// Last change.
    pub at: DateTime<Utc>,
    /// When the store may forget the item (DynamoDB TTL `expires_at`; the embedded store drops
    /// it at its next claim). `None`: kept. Dedupe-only items (webhook events) expire; an item
    /// whose absence would allow a second remote call outlives every way to repeat that call.
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
}

impl LedgerEntry {
    /// A settled entry in `state` at `at`: no holder, no remote id, nothing kept for repeats.
    pub fn settled(state: LedgerState, at: DateTime<Utc>) -> LedgerEntry {
        LedgerEntry {
            state,
            owner: None,
            until: None,
            remote_id: None,
            result: None,
            reason: None,
            attempts: 0,
            sending: false,
            at,
            expires: None,
        }
    }
}

impl std::fmt::Debug for LedgerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerEntry")
            .field("state", &self.state)
            .field("remote_id", &self.remote_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nothing was ever attempted (or the last attempt failed permanently): go ahead.
    New,
    /// A previous claim's lease expired while pending: the remote call may have happened.
    /// Reconcile (look for what it would have created) before calling again.
    Expired(LedgerEntry),
    /// Already done: do nothing (a duplicate avoided).
    Done(LedgerEntry),
    /// Another run holds a live claim: leave it.
    Held,
    /// Needs review: never re-posted automatically.
    NeedsReview(LedgerEntry),
}

/// The exactly-once ledger: a conditional `pending` claim before every remote call, `done`
/// with the remote id after.
pub trait Ledger: Send + Sync {
    /// Claims `key` (conditional write): see [`Claim`]. On `New` and `Expired` the caller
    /// holds the claim until `until`.
    fn claim(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Settles a held claim (conditional on `owner`): `Done`, `NeedsReview` or `Failed`.
    fn settle(
        &self,
        key: &str,
        owner: &str,
        entry: LedgerEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a held claim back untouched (nothing was sent): the next claim is `New`.
    fn release(
        &self,
        key: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The entry, if any.
    fn get(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<LedgerEntry>, StoreError>> + Send;

    /// Records on a held claim (conditional on `owner`) that its remote call is about to be
    /// sent: from here on, an expired claim must be reconciled, not sent again.
    fn mark_sending(
        &self,
        key: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A tenant's webhook endpoint: the SHA-256 of the capability token in its URL
/// (`https://<function url>/<tenant>/<token>`; the token itself is never stored), whether
/// Dock's verification challenge may be answered now, and Dock's id of the webhook.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRegistration {
    /// Lowercase hex SHA-256 of the URL token.
    pub token_sha256: String,
    /// The challenge is answered until then (a registration in progress); `None`: never.
    pub armed_until: Option<DateTime<Utc>>,
    /// Dock's webhook id, once registered through the API.
    pub webhook_id: Option<String>,
    /// Last change.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for HookRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRegistration")
            .field("armed_until", &self.armed_until)
            .field("webhook_id", &self.webhook_id)
            .finish_non_exhaustive()
    }
}

/// Webhook registrations, one per tenant.
pub trait HookStore: Send + Sync {
    /// Every registration: (tenant, registration).
    fn hooks(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, HookRegistration)>, StoreError>> + Send;
    /// One tenant's registration (read through, never cached).
    fn hook(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Option<HookRegistration>, StoreError>> + Send;
    /// Creates or replaces a tenant's registration.
    fn put_hook(
        &self,
        tenant: &str,
        hook: &HookRegistration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An open breaker of one Kareo account: a security failure (bad customer key, user or
/// password) stopped every call of every function for the account, because Tebra locks a user
/// out after repeated failed sign-ins and an unattended poller would keep trying. It closes
/// when the account's secret changes (its fingerprint differs) or an operator resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Digest of the credentials that failed ([`credentials_fingerprint`]), never the values.
    pub fingerprint: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// The tenant and family whose call failed (`acme/patients`).
    pub by: String,
    /// The operation and the security flags that failed (names only).
    pub reason: String,
}

/// A digest of Kareo credentials: what a breaker compares to tell that the secret changed.
pub fn credentials_fingerprint(creds: &kareo::Credentials) -> String {
    crate::event::digest([&creds.customer_key, &creds.user, &creds.password].map(|p| p.as_bytes()))
}

/// The key of a tenant's pause among the breakers: an operator's hold on one tenant
/// (`kareo-dock tenant pause`), kept with the accounts' credentials breakers so that a poll
/// reads both in its one read of the open breakers.
pub fn pause_key(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

/// The tenant a breaker key pauses, if it is a pause.
pub fn paused_tenant(key: &str) -> Option<&str> {
    key.strip_prefix("tenant:")
}

/// Holds on polling: Kareo accounts' credentials breakers, keyed by the account's secret name,
/// and tenants' pauses, keyed by [`pause_key`].
pub trait BreakerStore: Send + Sync {
    /// Every open breaker: (account, breaker).
    fn breakers(&self) -> impl Future<Output = Result<Vec<(String, Breaker)>, StoreError>> + Send;
    /// The account's open breaker, if any.
    fn breaker(
        &self,
        account: &str,
    ) -> impl Future<Output = Result<Option<Breaker>, StoreError>> + Send;
    /// Opens (or replaces) the account's breaker.
    fn open_breaker(
        &self,
        account: &str,
        breaker: &Breaker,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Closes it; closing a closed breaker is not an error.
    fn close_breaker(&self, account: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Scheduled runs claim their period, so that a schedule delivered twice (EventBridge and
/// Lambda's asynchronous invocation both deliver at least once) or two coordinators started
/// at once poll no tenant twice in one period.
pub trait PeriodStore: Send + Sync {
    /// Claims `run` (e.g. `poll#2026-12-04T21:05:00Z`) of `family` for `owner` (conditional
    /// write: the first claim of a key wins, and a later claim by the same owner — Lambda's
    /// retry of the same invocation — too). `Ok(true)`: `owner` holds it; `Ok(false)`: another
    /// invocation does. The claim is forgotten at `expires`.
    fn claim_period(
        &self,
        family: Family,
        run: &str,
        owner: &str,
        expires: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Starts a concurrent invocation of the calling function with a payload, without waiting for
/// it (Lambda: an asynchronous self-invoke; Lambda retries it and sends it to the function's
/// on-failure destination if it keeps failing). `Ok`: the invocation was accepted.
pub trait ShardDispatch: Send + Sync {
    /// Dispatches one shard's payload (tenant ids, mode and period only: no PHI).
    fn dispatch(
        &self,
        payload: &serde_json::Value,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// What a link is keyed by: an id on one side, whose counterpart the product recorded itself
/// when it created (or first linked) the other side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKey {
    /// A Dock task (or workflow) the product created: → the Kareo record it was made for.
    DockTask(String),
    /// A Dock patient the product created or linked: → the Kareo patient.
    DockPatient(String),
    /// A Kareo patient: → the Dock patient the product created or linked for it.
    KareoPatient(String),
}

impl LinkKey {
    /// The key as stored: `dock-task#<id>`, `dock-patient#<id>`, `kareo-patient#<id>`.
    pub fn as_key(&self) -> String {
        match self {
            LinkKey::DockTask(id) => format!("dock-task#{id}"),
            LinkKey::DockPatient(id) => format!("dock-patient#{id}"),
            LinkKey::KareoPatient(id) => format!("kareo-patient#{id}"),
        }
    }

    /// Reads [`Self::as_key`] back.
    pub fn from_key(key: &str) -> Option<LinkKey> {
        let (kind, id) = key.split_once('#')?;
        let id = id.to_string();
        match kind {
            "dock-task" => Some(LinkKey::DockTask(id)),
            "dock-patient" => Some(LinkKey::DockPatient(id)),
            "kareo-patient" => Some(LinkKey::KareoPatient(id)),
            _ => None,
        }
    }
}

/// The other side of a link: ids only, never record content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The Kareo family of the record (task links).
    pub family: Option<Family>,
    /// The Kareo record id (task links).
    pub record: Option<String>,
    /// The Kareo patient id (task links with a patient, Dock patient links).
    pub kareo_patient: Option<String>,
    /// The Dock patient id (Kareo patient links, task links with a patient).
    pub dock_patient: Option<String>,
    /// When recorded.
    pub at: DateTime<Utc>,
    /// When the store may forget it.
    pub expires: Option<DateTime<Utc>>,
}

/// How long a link is kept after it was recorded.
pub const LINK_TTL_DAYS: i64 = 400;

/// Links between Dock and Kareo ids that the product recorded: the only way a Dock-driven
/// write chooses which Kareo record it touches (Dock's own fields, such as a patient's MRN,
/// can be edited by any Dock user).
pub trait LinkStore: Send + Sync {
    /// The link, if recorded (and not expired).
    fn link(
        &self,
        tenant: &str,
        key: &LinkKey,
    ) -> impl Future<Output = Result<Option<Link>, StoreError>> + Send;
    /// Records (or replaces) a link.
    fn put_link(
        &self,
        tenant: &str,
        key: &LinkKey,
        link: &Link,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalSecrets;

    #[test]
    fn dock_credentials_come_from_the_tenants_secret_or_a_partner_secret_and_its_config() {
        let side = |org: Option<&str>, user: Option<&str>| crate::tenant::DockSide {
            secret: "dock/x".into(),
            organization_id: org.map(str::to_string),
            user_id: user.map(str::to_string),
        };
        let own = r#"{"client_id":"c","client_secret":"s3cr3t","api_key":"k","organization_id":"o1","user_id":"u1"}"#;
        let d = dock_credentials_from("dock/x", own, &side(None, None)).unwrap();
        assert_eq!(
            (d.organization_id.as_str(), d.user_id.as_str()),
            ("o1", "u1")
        );
        // The config's ids win.
        let d = dock_credentials_from("dock/x", own, &side(Some("o2"), Some("u2"))).unwrap();
        assert_eq!(
            (d.organization_id.as_str(), d.user_id.as_str()),
            ("o2", "u2")
        );
        let partner = r#"{"client_id":"c","client_secret":"s3cr3t","api_key":"k"}"#;
        let d = dock_credentials_from("dock/x", partner, &side(Some("o3"), Some("u3"))).unwrap();
        assert_eq!(
            (d.client_secret.as_str(), d.organization_id.as_str()),
            ("s3cr3t", "o3")
        );
        let e = dock_credentials_from("dock/x", partner, &side(Some("o3"), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dock/x") && e.contains("missing user_id"), "{e}");
        let e = dock_credentials_from(
            "dock/x",
            r#"{"client_id":7,"client_secret":"s3cr3t"}"#,
            &side(None, None),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("client_id (must be a JSON string)") && e.contains("api_key"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t") && !e.contains('7'), "{e}");
    }

    #[tokio::test]
    async fn a_malformed_kareo_secret_is_named_by_key_never_by_value() {
        let mut m = std::collections::BTreeMap::new();
        let raw = r#"{"customer_key": "k-1", "user": "u@example.org", "password": 12345678}"#;
        m.insert(
            "kareo/acme".to_string(),
            serde_json::from_str::<serde_json::Value>(raw).unwrap(),
        );
        let s = LocalSecrets::from_map(m);
        let e = kareo_credentials(&s, "kareo/acme").await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("\"password\" must be a JSON string"),
            "{text}"
        );
        assert!(
            !text.contains("12345678") && !text.contains("k-1"),
            "{text}"
        );
    }
}
