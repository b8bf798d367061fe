//! The embedded adapters: cursors, snapshots and tenants in memory, optionally persisted to a
//! JSON file in a state directory (for `kareo-dock sync --state DIR` and the demo); secrets from
//! a local JSON file; a recording event sink. Same behaviour as the DynamoDB adapters — the
//! store test suite runs against both.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kareo::Family;
use serde::{Deserialize, Serialize};

use crate::event::ChangeEvent;
use crate::ports::*;
use crate::tenant::TenantConfig;

#[derive(Default, Serialize, Deserialize)]
struct State {
    cursors: BTreeMap<String, Cursor>,
    snapshots: BTreeMap<String, BTreeMap<String, Snapshot>>,
    #[serde(default)]
    tenants: BTreeMap<String, String>,
    #[serde(default)]
    ledger: BTreeMap<String, LedgerEntry>,
    #[serde(default)]
    hooks: BTreeMap<String, HookRegistration>,
    #[serde(default)]
    links: BTreeMap<String, Link>,
    #[serde(default)]
    breakers: BTreeMap<String, Breaker>,
    /// Period claims: `<family>#<run>` → (owner, when the claim may be forgotten).
    #[serde(default)]
    periods: BTreeMap<String, (String, DateTime<Utc>)>,
    /// Ledger and link items left after the last sweep of expired ones (not saved).
    #[serde(skip)]
    swept: usize,
}

/// The ledger and links are swept of expired items once they have doubled since the last
/// sweep (and hold at least this many): a sweep per claim made a run of N claims cost N².
const SWEEP_FLOOR: usize = 1024;

fn key(tenant: &str, family: Family) -> String {
    format!("{tenant}/{family}")
}

fn split_key(k: &str) -> Option<(String, Family)> {
    let (t, f) = k.rsplit_once('/')?;
    Some((t.to_string(), Family::from_name(f)?))
}

/// Files that hold PHI (state, events, dead letters): owner-only, `0600` in a `0700`
/// directory, whatever the umask.
pub mod private {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::path::Path;

    /// Creates `dir` (and its parents) and makes it owner-only.
    pub fn dir(dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    fn options() -> OpenOptions {
        let mut o = OpenOptions::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        o
    }

    /// Writes `path` whole, owner-only, by a temporary file and a rename.
    pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        restrict(&tmp)?;
        std::fs::rename(&tmp, path)
    }

    /// Opens `path` for appending, owner-only.
    pub fn append(path: &Path) -> io::Result<File> {
        let f = options().create(true).append(true).open(path)?;
        restrict(path)?;
        Ok(f)
    }

    /// A file made before this rule (or by another tool) is made owner-only too.
    fn restrict(path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        let _ = path;
        Ok(())
    }
}

/// Cursors, snapshots and tenant configs in memory, optionally saved to `state.json` in a
/// directory after every write (atomically: write then rename).
#[derive(Clone, Default)]
pub struct LocalStore {
    state: Arc<Mutex<State>>,
    file: Option<PathBuf>,
    /// Kareo accounts' shared call budgets: this process's only (never saved; slots and
    /// claims are seconds long).
    budget: kareo::budget::MemoryBudget,
}

impl LocalStore {
    /// A store in memory only.
    pub fn memory() -> LocalStore {
        LocalStore::default()
    }

    /// A store kept in `dir/state.json` (created when absent).
    pub fn in_dir(dir: &Path) -> Result<LocalStore, StoreError> {
        private::dir(dir)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        let file = dir.join("state.json");
        let state = match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(StoreError::Unavailable(format!("{}: {e}", file.display()))),
        };
        Ok(LocalStore {
            state: Arc::new(Mutex::new(state)),
            file: Some(file),
            budget: Default::default(),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut st)?;
        if let Some(file) = &self.file {
            let text = serde_json::to_vec(&*st).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            private::write(file, &text)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", file.display())))?;
        }
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&st)
    }
}

fn lease_matches(c: &Cursor, lease: &Lease) -> Result<(), StoreError> {
    if c.version != lease.cursor.version || c.lease_owner.as_deref() != Some(&lease.owner) {
        return Err(StoreError::Conflict(format!(
            "cursor {}/{} moved or its lease was taken",
            lease.tenant, lease.family
        )));
    }
    Ok(())
}

/// Takes the cursor's lease unless a live one is held, creating the cursor if absent.
fn take_lease(
    s: &mut State,
    tenant: &str,
    family: Family,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Lease, StoreError> {
    let c = s.cursors.entry(key(tenant, family)).or_default();
    if c.lease_owner.is_some() && c.lease_until.is_some_and(|u| u > now) {
        return Err(StoreError::Conflict(format!(
            "cursor {tenant}/{family} is leased by another run"
        )));
    }
    c.lease_owner = Some(owner.to_string());
    c.lease_until = Some(until);
    c.version += 1;
    Ok(Lease {
        tenant: tenant.to_string(),
        family,
        owner: owner.to_string(),
        cursor: c.clone(),
    })
}

/// `Conflict` unless the stored cursor is still as `seen` (same version; both absent).
fn unchanged(
    stored: Option<&Cursor>,
    seen: Option<&Cursor>,
    tenant: &str,
    family: Family,
) -> Result<(), StoreError> {
    match (stored, seen) {
        (None, None) => Ok(()),
        (Some(c), Some(s)) if c.version == s.version => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "cursor {tenant}/{family} moved since it was read"
        ))),
    }
}

impl CursorStore for LocalStore {
    async fn load(&self, tenant: &str, family: Family) -> Result<Option<Cursor>, StoreError> {
        Ok(self.read(|s| s.cursors.get(&key(tenant, family)).cloned()))
    }

    async fn acquire(
        &self,
        tenant: &str,
        family: Family,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.with(|s| take_lease(s, tenant, family, owner, now, until))
    }

    async fn load_many(
        &self,
        tenants: &[&str],
        family: Family,
    ) -> Result<HashMap<String, Cursor>, StoreError> {
        Ok(self.read(|s| {
            tenants
                .iter()
                .filter_map(|t| {
                    s.cursors
                        .get(&key(t, family))
                        .map(|c| (t.to_string(), c.clone()))
                })
                .collect()
        }))
    }

    async fn acquire_seen(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.with(|s| {
            unchanged(s.cursors.get(&key(tenant, family)), seen, tenant, family)?;
            take_lease(s, tenant, family, owner, now, until)
        })
    }

    async fn advance(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        position: DateTime<Utc>,
        run_start: DateTime<Utc>,
    ) -> Result<Cursor, StoreError> {
        self.with(|s| {
            let k = key(tenant, family);
            unchanged(s.cursors.get(&k), seen, tenant, family)?;
            let c = s.cursors.entry(k).or_default();
            c.position = Some(c.position.map_or(position, |p| p.max(position)));
            c.last_success_start = Some(run_start);
            c.last_error = None;
            c.lease_owner = None;
            c.lease_until = None;
            c.version += 1;
            Ok(c.clone())
        })
    }

    async fn checkpoint(
        &self,
        lease: &mut Lease,
        position: DateTime<Utc>,
        high_water: Option<DateTime<Utc>>,
        run_start: DateTime<Utc>,
        release: bool,
    ) -> Result<(), StoreError> {
        let updated = self.with(|s| {
            let c = s
                .cursors
                .get_mut(&key(&lease.tenant, lease.family))
                .ok_or_else(|| StoreError::Conflict("cursor vanished".into()))?;
            lease_matches(c, lease)?;
            c.position = Some(c.position.map_or(position, |p| p.max(position)));
            c.high_water = match (c.high_water, high_water) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            c.last_success_start = Some(run_start);
            c.last_error = None;
            c.version += 1;
            if release {
                c.lease_owner = None;
                c.lease_until = None;
            }
            Ok(c.clone())
        })?;
        lease.cursor = updated;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.with(|s| {
            let c = s
                .cursors
                .get_mut(&key(&lease.tenant, lease.family))
                .ok_or_else(|| StoreError::Conflict("cursor vanished".into()))?;
            lease_matches(c, lease)?;
            c.lease_owner = None;
            c.lease_until = None;
            c.version += 1;
            Ok(())
        })
    }

    async fn fail(&self, lease: &Lease, error: CursorError) -> Result<(), StoreError> {
        self.with(|s| {
            let c = s
                .cursors
                .get_mut(&key(&lease.tenant, lease.family))
                .ok_or_else(|| StoreError::Conflict("cursor vanished".into()))?;
            lease_matches(c, lease)?;
            c.last_error = Some(error);
            c.lease_owner = None;
            c.lease_until = None;
            c.version += 1;
            Ok(())
        })
    }

    async fn reset(
        &self,
        tenant: &str,
        family: Family,
        position: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            let c = s.cursors.entry(key(tenant, family)).or_default();
            c.position = position;
            c.version += 1;
            Ok(())
        })
    }

    async fn list(&self) -> Result<Vec<(String, Family, Cursor)>, StoreError> {
        Ok(self.read(|s| {
            s.cursors
                .iter()
                .filter_map(|(k, c)| split_key(k).map(|(t, f)| (t, f, c.clone())))
                .collect()
        }))
    }
}

impl SnapshotStore for LocalStore {
    async fn get(
        &self,
        tenant: &str,
        family: Family,
        ids: &[String],
    ) -> Result<HashMap<String, Snapshot>, StoreError> {
        Ok(self.read(|s| {
            let Some(m) = s.snapshots.get(&key(tenant, family)) else {
                return HashMap::new();
            };
            let now = Utc::now();
            ids.iter()
                .filter_map(|id| m.get(id).map(|v| (id.clone(), v.clone())))
                .filter(|(_, v)| !v.expired(now))
                .collect()
        }))
    }

    async fn put(
        &self,
        tenant: &str,
        family: Family,
        items: Vec<(String, Snapshot)>,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            let m = s.snapshots.entry(key(tenant, family)).or_default();
            m.extend(items);
            Ok(())
        })
    }

    async fn upcoming(
        &self,
        tenant: &str,
        family: Family,
        after: DateTime<Utc>,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        Ok(self.read(|s| {
            s.snapshots
                .get(&key(tenant, family))
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| {
                            !v.deleted
                                && !v.expired(Utc::now())
                                && v.starts.is_some_and(|t| t >= after)
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

impl TenantStore for LocalStore {
    async fn tenants(&self) -> Result<Vec<TenantConfig>, StoreError> {
        self.read(|s| {
            s.tenants
                .iter()
                .map(|(id, yaml)| {
                    TenantConfig::from_yaml(yaml, &format!("stored tenant {id}"))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })
                .collect()
        })
    }

    async fn put(&self, config: &TenantConfig) -> Result<(), StoreError> {
        self.with(|s| {
            s.tenants.insert(config.tenant.clone(), config.to_yaml());
            Ok(())
        })
    }
}

impl Ledger for LocalStore {
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        self.with(|s| {
            // Items past their expiry are forgotten, as DynamoDB's TTL forgets them: this one
            // at once, the others in a sweep when the maps have doubled.
            if s.ledger.len() + s.links.len() >= (2 * s.swept).max(SWEEP_FLOOR) {
                s.ledger.retain(|_, e| e.expires.is_none_or(|x| x > now));
                s.links.retain(|_, l| l.expires.is_none_or(|x| x > now));
                s.swept = s.ledger.len() + s.links.len();
            }
            let prev = s
                .ledger
                .get(key)
                .filter(|e| e.expires.is_none_or(|x| x > now))
                .cloned();
            let claim = match &prev {
                None => Claim::New,
                Some(e) => match e.state {
                    LedgerState::Done => return Ok(Claim::Done(e.clone())),
                    LedgerState::NeedsReview => return Ok(Claim::NeedsReview(e.clone())),
                    LedgerState::Failed => Claim::New,
                    LedgerState::Pending if e.until.is_some_and(|u| u > now) => {
                        return Ok(Claim::Held)
                    }
                    LedgerState::Pending => Claim::Expired(e.clone()),
                },
            };
            s.ledger.insert(
                key.to_string(),
                LedgerEntry {
                    state: LedgerState::Pending,
                    owner: Some(owner.to_string()),
                    until: Some(until),
                    remote_id: None,
                    result: None,
                    reason: None,
                    attempts: prev.map_or(0, |p| p.attempts) + 1,
                    at: now,
                    sending: false,
                    expires: Some(crate::ports::ledger_expiry(now)),
                },
            );
            Ok(claim)
        })
    }

    async fn settle(&self, key: &str, owner: &str, entry: LedgerEntry) -> Result<(), StoreError> {
        self.with(|s| {
            let cur = s
                .ledger
                .get_mut(key)
                .ok_or_else(|| StoreError::Conflict(format!("ledger item {key} vanished")))?;
            if cur.state != LedgerState::Pending || cur.owner.as_deref() != Some(owner) {
                return Err(StoreError::Conflict(format!(
                    "ledger item {key} is no longer claimed by this run"
                )));
            }
            let attempts = cur.attempts;
            *cur = LedgerEntry {
                attempts,
                owner: None,
                until: None,
                sending: false,
                expires: Some(
                    entry
                        .expires
                        .unwrap_or_else(|| crate::ports::ledger_expiry(entry.at)),
                ),
                ..entry
            };
            Ok(())
        })
    }

    async fn mark_sending(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.with(|s| match s.ledger.get_mut(key) {
            Some(cur)
                if cur.state == LedgerState::Pending && cur.owner.as_deref() == Some(owner) =>
            {
                cur.sending = true;
                Ok(())
            }
            _ => Err(StoreError::Conflict(format!(
                "ledger item {key} is no longer claimed by this run"
            ))),
        })
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.with(|s| {
            if let Some(cur) = s.ledger.get(key) {
                if cur.state == LedgerState::Pending && cur.owner.as_deref() == Some(owner) {
                    if cur.attempts <= 1 {
                        s.ledger.remove(key);
                    } else if let Some(cur) = s.ledger.get_mut(key) {
                        cur.state = LedgerState::Failed;
                        cur.owner = None;
                        cur.until = None;
                    }
                }
            }
            Ok(())
        })
    }

    async fn get(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        Ok(self.read(|s| s.ledger.get(key).cloned()))
    }
}

impl TenantPurge for LocalStore {
    async fn purge(&self, tenant: &str, dry_run: bool) -> Result<PurgeCounts, StoreError> {
        let own = |k: &str| split_key(k).is_some_and(|(t, _)| t == tenant);
        let tasks = format!("task#{tenant}#");
        let writes = format!("write#{tenant}#");
        let dedupe = format!("webhook#{tenant}#");
        let links = format!("{tenant}#");
        let pause = pause_key(tenant);
        let count = |s: &State| PurgeCounts {
            cursors: s.cursors.keys().filter(|k| own(k)).count(),
            snapshots: s
                .snapshots
                .iter()
                .filter(|(k, _)| own(k))
                .map(|(_, m)| m.len())
                .sum(),
            tasks: s.ledger.keys().filter(|k| k.starts_with(&tasks)).count(),
            writes: s.ledger.keys().filter(|k| k.starts_with(&writes)).count(),
            dedupe: s.ledger.keys().filter(|k| k.starts_with(&dedupe)).count(),
            links: s.links.keys().filter(|k| k.starts_with(&links)).count(),
            config: usize::from(s.tenants.contains_key(tenant))
                + usize::from(s.hooks.contains_key(tenant))
                + usize::from(s.breakers.contains_key(&pause)),
        };
        if dry_run {
            return Ok(self.read(count));
        }
        self.with(|s| {
            let counts = count(s);
            s.cursors.retain(|k, _| !own(k));
            s.snapshots.retain(|k, _| !own(k));
            s.ledger.retain(|k, _| {
                !k.starts_with(&tasks) && !k.starts_with(&writes) && !k.starts_with(&dedupe)
            });
            s.links.retain(|k, _| !k.starts_with(&links));
            s.hooks.remove(tenant);
            s.breakers.remove(&pause);
            s.tenants.remove(tenant);
            Ok(counts)
        })
    }
}

impl HookStore for LocalStore {
    async fn hooks(&self) -> Result<Vec<(String, HookRegistration)>, StoreError> {
        Ok(self.read(|s| {
            s.hooks
                .iter()
                .map(|(t, h)| (t.clone(), h.clone()))
                .collect()
        }))
    }

    async fn hook(&self, tenant: &str) -> Result<Option<HookRegistration>, StoreError> {
        Ok(self.read(|s| s.hooks.get(tenant).cloned()))
    }

    async fn put_hook(&self, tenant: &str, hook: &HookRegistration) -> Result<(), StoreError> {
        self.with(|s| {
            s.hooks.insert(tenant.to_string(), hook.clone());
            Ok(())
        })
    }
}

impl BreakerStore for LocalStore {
    async fn breakers(&self) -> Result<Vec<(String, Breaker)>, StoreError> {
        Ok(self.read(|s| {
            s.breakers
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect()
        }))
    }

    async fn breaker(&self, account: &str) -> Result<Option<Breaker>, StoreError> {
        Ok(self.read(|s| s.breakers.get(account).cloned()))
    }

    async fn open_breaker(&self, account: &str, breaker: &Breaker) -> Result<(), StoreError> {
        self.with(|s| {
            s.breakers.insert(account.to_string(), breaker.clone());
            Ok(())
        })
    }

    async fn close_breaker(&self, account: &str) -> Result<(), StoreError> {
        self.with(|s| {
            s.breakers.remove(account);
            Ok(())
        })
    }
}

impl PeriodStore for LocalStore {
    async fn claim_period(
        &self,
        family: Family,
        run: &str,
        owner: &str,
        expires: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // Claims expiring a day before this one are forgotten (on the claimant's clock, which
        // a simulation may run ahead of the machine's).
        let forget = expires - chrono::Duration::days(1);
        self.with(|s| {
            s.periods.retain(|_, (_, until)| *until > forget);
            let key = format!("{family}#{run}");
            if let Some((holder, _)) = s.periods.get(&key) {
                return Ok(holder == owner);
            }
            s.periods.insert(key, (owner.to_string(), expires));
            Ok(true)
        })
    }
}

impl kareo::budget::SharedBudget for LocalStore {
    fn reserve<'a>(
        &'a self,
        account: &'a kareo::budget::AccountId,
        op: &'a str,
        interval_ms: u64,
        now_ms: u64,
    ) -> kareo::budget::BudgetFuture<'a, u64> {
        self.budget.reserve(account, op, interval_ms, now_ms)
    }

    fn live<'a>(
        &'a self,
        account: &'a kareo::budget::AccountId,
    ) -> kareo::budget::BudgetFuture<'a, Option<kareo::budget::LiveIntervals>> {
        self.budget.live(account)
    }

    fn claim_read<'a>(
        &'a self,
        account: &'a kareo::budget::AccountId,
        owner: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> kareo::budget::BudgetFuture<'a, bool> {
        self.budget.claim_read(account, owner, now_ms, until_ms)
    }

    fn store_live<'a>(
        &'a self,
        account: &'a kareo::budget::AccountId,
        live: &'a kareo::budget::LiveIntervals,
    ) -> kareo::budget::BudgetFuture<'a, ()> {
        self.budget.store_live(account, live)
    }
}

impl LinkStore for LocalStore {
    async fn link(&self, tenant: &str, key: &LinkKey) -> Result<Option<Link>, StoreError> {
        let now = Utc::now();
        Ok(self.read(|s| {
            s.links
                .get(&format!("{tenant}#{}", key.as_key()))
                .filter(|l| l.expires.is_none_or(|x| x > now))
                .cloned()
        }))
    }

    async fn put_link(&self, tenant: &str, key: &LinkKey, link: &Link) -> Result<(), StoreError> {
        self.with(|s| {
            s.links
                .insert(format!("{tenant}#{}", key.as_key()), link.clone());
            Ok(())
        })
    }
}

/// Secrets from a local JSON file: `{"<name>": {...secret JSON...}, ...}` (the `--secrets` or
/// `KAREO_DOCK_SECRETS` file), or from memory.
#[derive(Clone, Default)]
pub struct LocalSecrets {
    values: Arc<HashMap<String, String>>,
}

impl std::fmt::Debug for LocalSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalSecrets({} secrets)", self.values.len())
    }
}

impl LocalSecrets {
    /// Reads the secrets file.
    pub fn from_file(path: &Path) -> Result<LocalSecrets, SecretError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretError::Unavailable(format!("{}: {e}", path.display())))?;
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|_| SecretError::Malformed {
                name: path.display().to_string(),
                reason: "expected a JSON object of secret name -> secret JSON".into(),
            })?;
        Ok(LocalSecrets::from_map(map))
    }

    /// Sets secret `name` to `value` in the secrets file at `path` (created when absent),
    /// keeping the others; the file is rewritten whole, owner-only. Returns whether the secret
    /// is new. Errors name the file, never a value.
    pub fn store(path: &Path, name: &str, value: serde_json::Value) -> Result<bool, SecretError> {
        let mut map: BTreeMap<String, serde_json::Value> = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|_| SecretError::Malformed {
                name: path.display().to_string(),
                reason: "expected a JSON object of secret name -> secret JSON".into(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(SecretError::Unavailable(format!("{}: {e}", path.display())));
            }
        };
        let created = map.insert(name.to_string(), value).is_none();
        let text = serde_json::to_vec_pretty(&map).expect("JSON values serialize");
        private::write(path, &text)
            .map_err(|e| SecretError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(created)
    }

    /// Removes secret `name` from the secrets file at `path`, keeping the others. Returns
    /// whether it was there. Errors name the file, never a value.
    pub fn remove(path: &Path, name: &str) -> Result<bool, SecretError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SecretError::Unavailable(format!("{}: {e}", path.display()))),
        };
        let mut map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|_| SecretError::Malformed {
                name: path.display().to_string(),
                reason: "expected a JSON object of secret name -> secret JSON".into(),
            })?;
        if map.remove(name).is_none() {
            return Ok(false);
        }
        let text = serde_json::to_vec_pretty(&map).expect("JSON values serialize");
        private::write(path, &text)
            .map_err(|e| SecretError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(true)
    }

    /// Secrets from a map of name → JSON value.
    pub fn from_map(map: BTreeMap<String, serde_json::Value>) -> LocalSecrets {
        LocalSecrets {
            values: Arc::new(map.into_iter().map(|(k, v)| (k, v.to_string())).collect()),
        }
    }
}

impl SecretSource for LocalSecrets {
    async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.values
            .get(name)
            .map(|v| SecretValue(v.clone()))
            .ok_or_else(|| SecretError::NotFound(name.to_string()))
    }
}

/// An event sink that keeps what it was handed (tests, dry runs, the demo before task
/// creation), optionally failing on demand.
#[derive(Clone, Default)]
pub struct RecordingSink {
    events: Arc<Mutex<Vec<ChangeEvent>>>,
    batches: Arc<Mutex<usize>>,
    fail_after: Arc<Mutex<Option<usize>>>,
}

impl RecordingSink {
    /// Every event handed off, in order.
    pub fn events(&self) -> Vec<ChangeEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of batches received.
    pub fn batches(&self) -> usize {
        *self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accept `n` more batches, then refuse every batch until `None` is set.
    pub fn fail_after(&self, n: Option<usize>) {
        *self.fail_after.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }
}

impl EventSink for RecordingSink {
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut fa = self.fail_after.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = fa.as_mut() {
            if *n == 0 {
                return Err(SinkError {
                    class: ErrorClass::SinkUnavailable,
                    message: "the receiver refused the batch".into(),
                });
            }
            *n -= 1;
        }
        drop(fa);
        *self.batches.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(batch);
        Ok(())
    }
}

/// An event sink appending every event as one JSON line to a file (local runs before task
/// creation is configured; the file holds PHI and stays in the state directory).
#[derive(Clone)]
pub struct JsonlSink {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl JsonlSink {
    /// Appends to `path` (created when absent).
    pub fn new(path: PathBuf) -> JsonlSink {
        JsonlSink {
            path,
            lock: Arc::new(Mutex::new(())),
        }
    }
}

impl EventSink for JsonlSink {
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        use std::io::Write;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |e: std::io::Error| SinkError {
            class: ErrorClass::SinkUnavailable,
            message: format!("{}: {}", self.path.display(), e.kind()),
        };
        let mut f = private::append(&self.path).map_err(fail)?;
        let mut buf = Vec::new();
        for e in batch {
            serde_json::to_writer(&mut buf, e).map_err(|_| SinkError {
                class: ErrorClass::SinkRejected,
                message: "an event could not be serialised".into(),
            })?;
            buf.push(b'\n');
        }
        f.write_all(&buf).and_then(|_| f.sync_data()).map_err(fail)
    }
}

/// Hands each batch to two sinks in turn (the second only when the first accepted it): e.g.
/// an events file kept beside the task creation of a local run.
pub struct Tee<'a, A, B>(pub &'a A, pub &'a B);

impl<A: EventSink, B: EventSink> EventSink for Tee<'_, A, B> {
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        self.0.hand_off(batch).await?;
        self.1.hand_off(batch).await
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn local_state_and_event_files_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("kareo-dock-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = LocalStore::in_dir(&dir).unwrap();
        let cfg = TenantConfig::from_yaml(
            "tenant: t\ntimezone: UTC\nstart: 2026-09-01T00:00:00Z\nkareo: { secret: k, practice: P }\ndock: { secret: d }\nfamilies: { patients: {} }\n",
            "t.yaml",
        )
        .unwrap();
        TenantStore::put(&store, &cfg).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.json")), 0o600);
        let events = dir.join("events.jsonl");
        JsonlSink::new(events.clone()).hand_off(&[]).await.unwrap();
        assert_eq!(mode(&events), 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn expired_ledger_items_are_absent_at_once_and_swept_when_the_ledger_has_doubled() {
        let store = LocalStore::memory();
        let t0 = DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let day = chrono::Duration::days(1);
        let settle = |k: String| {
            let store = store.clone();
            async move {
                store.claim(&k, "a", t0, t0 + day).await.unwrap();
                let done = LedgerEntry {
                    expires: Some(t0 + day),
                    ..LedgerEntry::settled(LedgerState::Done, t0)
                };
                store.settle(&k, "a", done).await.unwrap();
            }
        };
        for i in 0..SWEEP_FLOOR {
            settle(format!("webhook#acme#{i}")).await;
        }
        let later = t0 + day * 2;
        // Expired: a new claim is New at once, sweep or not.
        let first = "webhook#acme#0";
        assert_eq!(
            store.claim(first, "b", later, later + day).await.unwrap(),
            Claim::New
        );
        // The sweep ran when the ledger reached the floor: every other expired item is gone.
        let left = store.read(|s| s.ledger.len());
        assert_eq!(left, 1, "only the new claim is left");
        // Claims below twice what the last sweep left do not sweep again.
        settle("webhook#acme#x".into()).await;
        assert_eq!(store.read(|s| s.ledger.len()), 2);
    }
}
