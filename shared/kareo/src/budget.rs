//! One Kareo account's call budget, shared by every process that calls the account.
//!
//! Kareo limits each operation per account across all callers (kareo-api.md §5), but a
//! [`Throttle`](crate::throttle::Throttle) spaces one process's calls only. On Lambda the task
//! function's and the write function's containers all read GetPatient of one account, and
//! every function's cold start used to read GetThrottles: each collision is a 429 and a retry.
//! A [`SharedBudget`] (the state table on Lambda) lets them take turns:
//!
//! - **Slots.** Before each call of a shared operation the client reserves the next free slot of
//!   that operation on that account ([`SharedBudget::reserve`]) and waits for it. Slots are at
//!   least the interval (live or documented, plus the margin) apart, whichever process took them.
//!   A reservation is one conditional write, two when another caller holds the current slot.
//! - **Live intervals.** One process reads GetThrottles for an account and stores what it read
//!   ([`SharedBudget::store_live`]); every other process loads it. A claim
//!   ([`SharedBudget::claim_read`]) keeps two cold starts at once from both reading it.
//!
//! Which operations a client reserves slots for is its [`Sharing`]: polls share only the live
//! intervals (each (tenant, family) is polled by one process, and a slot would cost every empty
//! poll a write); the task function shares GetPatient; the write paths share every operation.
//! When the store fails, the client logs it and spaces its own calls only: a collision then is a
//! 429 and a retry, never a failed call.
//!
//! The store never holds a customer key: accounts are named by [`AccountId`], a digest of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long live intervals read by one process serve the others.
pub const LIVE_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a claim to read GetThrottles holds.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);
/// The longest a client waits for a reserved slot.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A Kareo account as a shared store names it: the first 128 bits of SHA-256 of the customer
/// key, in hex. Stable across processes, never the key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// The id of the account whose customer key is `customer_key`.
    pub fn of(customer_key: &str) -> AccountId {
        let digest = Sha256::digest(customer_key.as_bytes());
        AccountId(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

/// Live intervals read from GetThrottles for one account: (operation, interval in ms), and
/// when they were read (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveIntervals {
    /// When GetThrottles was read, Unix ms.
    pub read_at_ms: u64,
    /// (operation name, interval ms).
    pub intervals: Vec<(String, u64)>,
}

/// A shared store that failed. The text names the store operation and a code, never a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The store could not be read or written.
    #[error("shared budget unavailable: {0}")]
    Unavailable(String),
    /// Other callers kept taking the slot being reserved.
    #[error("shared budget contended: no slot after {0} attempts")]
    Contended(u32),
}

/// A boxed future of a [`SharedBudget`] call (the client holds the budget as a trait object).
pub type BudgetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BudgetError>> + Send + 'a>>;

/// Where processes calling one account take turns. Contract, for every implementation:
///
/// - `reserve` returns a slot at or after `now_ms`; two reservations of one (account,
///   operation), by any processes, get slots at least the later one's `interval_ms` apart.
/// - `claim_read`: the first claim of an account wins until `until_ms`; a claim by the same
///   `owner` again wins too; after `until_ms` anyone may claim. `store_live` ends the claim.
/// - `live` returns what `store_live` stored last for the account, however old (the caller
///   judges freshness).
pub trait SharedBudget: Send + Sync {
    /// Reserves the next free slot of `op` on `account`; returns its start, Unix ms.
    fn reserve<'a>(
        &'a self,
        account: &'a AccountId,
        op: &'a str,
        interval_ms: u64,
        now_ms: u64,
    ) -> BudgetFuture<'a, u64>;

    /// The live intervals last stored for `account`, if any.
    fn live<'a>(&'a self, account: &'a AccountId) -> BudgetFuture<'a, Option<LiveIntervals>>;

    /// Claims the next GetThrottles read of `account` for `owner` until `until_ms`. `true`:
    /// `owner` should read it.
    fn claim_read<'a>(
        &'a self,
        account: &'a AccountId,
        owner: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BudgetFuture<'a, bool>;

    /// Stores the live intervals just read for `account`, and ends any claim.
    fn store_live<'a>(
        &'a self,
        account: &'a AccountId,
        live: &'a LiveIntervals,
    ) -> BudgetFuture<'a, ()>;
}

/// Which operations a client reserves slots for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedOps {
    /// None: only the live intervals are shared.
    None,
    /// These operations.
    Only(Vec<&'static str>),
    /// Every operation.
    Every,
}

impl SharedOps {
    /// Whether calls of `op` reserve a slot.
    pub fn includes(&self, op: &str) -> bool {
        match self {
            SharedOps::None => false,
            SharedOps::Only(ops) => ops.contains(&op),
            SharedOps::Every => true,
        }
    }
}

/// A client's share of the accounts' budgets: the store, the operations it reserves slots for,
/// and the name its claims go by.
#[derive(Clone)]
pub struct Sharing {
    /// The shared store.
    pub budget: Arc<dyn SharedBudget>,
    /// The operations this client reserves slots for.
    pub ops: SharedOps,
    /// This client's name in claims (random per client).
    pub owner: String,
}

impl std::fmt::Debug for Sharing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharing")
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

impl Sharing {
    /// A share of `budget` reserving slots for `ops`.
    pub fn new(budget: Arc<dyn SharedBudget>, ops: SharedOps) -> Sharing {
        Sharing {
            budget,
            ops,
            owner: format!("{:016x}", rand::random::<u64>()),
        }
    }
}

/// The current wall-clock time, Unix ms (slots are compared across machines: wall clock, not
/// a monotonic one; the throttle margin absorbs their skew).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A budget in one process's memory: processes sharing it are tasks of one process (tests,
/// benchmarks, the embedded runtime). Clones share the state.
#[derive(Clone, Default)]
pub struct MemoryBudget {
    state: Arc<std::sync::Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    next: std::collections::HashMap<(AccountId, String), u64>,
    live: std::collections::HashMap<AccountId, LiveIntervals>,
    claims: std::collections::HashMap<AccountId, (String, u64)>,
}

impl MemoryBudget {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl SharedBudget for MemoryBudget {
    fn reserve<'a>(
        &'a self,
        account: &'a AccountId,
        op: &'a str,
        interval_ms: u64,
        now_ms: u64,
    ) -> BudgetFuture<'a, u64> {
        let slot = self.with(|s| {
            let next = s.next.entry((account.clone(), op.to_string())).or_insert(0);
            let slot = (*next).max(now_ms);
            *next = slot + interval_ms;
            slot
        });
        Box::pin(async move { Ok(slot) })
    }

    fn live<'a>(&'a self, account: &'a AccountId) -> BudgetFuture<'a, Option<LiveIntervals>> {
        let live = self.with(|s| s.live.get(account).cloned());
        Box::pin(async move { Ok(live) })
    }

    fn claim_read<'a>(
        &'a self,
        account: &'a AccountId,
        owner: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BudgetFuture<'a, bool> {
        let won = self.with(|s| match s.claims.get(account) {
            Some((holder, until)) if *until > now_ms && holder != owner => false,
            _ => {
                s.claims
                    .insert(account.clone(), (owner.to_string(), until_ms));
                true
            }
        });
        Box::pin(async move { Ok(won) })
    }

    fn store_live<'a>(
        &'a self,
        account: &'a AccountId,
        live: &'a LiveIntervals,
    ) -> BudgetFuture<'a, ()> {
        self.with(|s| {
            s.live.insert(account.clone(), live.clone());
            s.claims.remove(account);
        });
        Box::pin(async move { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_id_is_a_stable_digest_never_the_key() {
        let a = AccountId::of("secret-customer-key");
        assert_eq!(a, AccountId::of("secret-customer-key"));
        assert_ne!(a, AccountId::of("another-key"));
        assert_eq!(a.as_str().len(), 32);
        assert!(!a.as_str().contains("secret"));
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn shared_ops_name_what_reserves_a_slot() {
        assert!(!SharedOps::None.includes("GetPatient"));
        assert!(SharedOps::Only(vec!["GetPatient"]).includes("GetPatient"));
        assert!(!SharedOps::Only(vec!["GetPatient"]).includes("GetCharges"));
        assert!(SharedOps::Every.includes("UpdatePatient"));
    }
}
