//! One behavioural suite for every store: the embedded `LocalStore` (in memory and in a state
//! directory) and `DynamoStore` against moto server (`AWS_ENDPOINT_URL`, a fresh table per test,
//! deleted by a drop guard). Also `SecretsManagerSource` against moto, and `LambdaSink` against
//! a tiny Lambda Invoke endpoint served here.
//!
//! Without `AWS_ENDPOINT_URL` the moto tests FAIL, saying they did not run; with
//! `KAREO_DOCK_SKIP_MOTO=1` they pass with a loud skip. `scripts/test` starts moto.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws::{sdk_config, DynamoStore, LambdaSink, SecretsManagerSource};
use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::local::LocalStore;
use domain::ports::{
    kareo_credentials, pause_key, Breaker, BreakerStore, Claim, Cursor, CursorError, CursorStore,
    ErrorClass, HookRegistration, HookStore, Ledger, LedgerEntry, LedgerState, Link, LinkKey,
    LinkStore, PeriodStore, PurgeCounts, SecretError, SecretSource, Snapshot, SnapshotStore,
    StoreError, TenantPurge, TenantStore,
};
use domain::{ChangeEvent, ChangeKind, TenantConfig};
use kareo::budget::{AccountId, LiveIntervals, SharedBudget};
use kareo::Family;
use testkit::{moto, unique};

const A: Family = Family::Appointments;
const P: Family = Family::Patients;

/// An instant with a fraction of a second, to check that instants survive to the nanosecond.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 12, 0, 0).unwrap() + Duration::nanoseconds(123_456_789)
}

fn mins(m: i64) -> DateTime<Utc> {
    base() + Duration::minutes(m)
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A store under test and whatever must outlive it (a temporary directory, a table guard).
struct Fixture<S> {
    store: S,
    calls: Arc<Mutex<Vec<String>>>,
    _guard: Option<Box<dyn Send>>,
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("aws-test"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn memory() -> Option<Fixture<LocalStore>> {
    Some(Fixture {
        store: LocalStore::memory(),
        calls: Default::default(),
        _guard: None,
    })
}

async fn dir() -> Option<Fixture<LocalStore>> {
    let tmp = TempDir::new();
    Some(Fixture {
        store: LocalStore::in_dir(tmp.path()).unwrap(),
        calls: Default::default(),
        _guard: Some(Box::new(tmp)),
    })
}

/// Records the DynamoDB operation of every attempt (from `X-Amz-Target`).
#[derive(Debug)]
struct CallLog(Arc<Mutex<Vec<String>>>);

impl aws_sdk_dynamodb::config::Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?");
        let op = target.rsplit('.').next().unwrap_or(target).to_string();
        self.0.lock().unwrap().push(op);
        Ok(())
    }
}

/// Deletes the test's table when the test ends, passed or failed.
struct TableGuard(DynamoStore);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let store = self.0.clone();
        let deleted = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(store.delete_table())
        });
        if let Err(e) = deleted {
            eprintln!("could not delete test table {}: {e}", store.table);
        }
    }
}

async fn dynamo() -> Option<Fixture<DynamoStore>> {
    if !moto("the DynamoDB / Secrets Manager / Lambda store suite") {
        return None;
    }
    let conf = sdk_config().await;
    let calls: Arc<Mutex<Vec<String>>> = Default::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&conf)
            .interceptor(CallLog(calls.clone()))
            .build(),
    );
    let store = DynamoStore::new(client, unique("kareo-dock-test"));
    store.create_table().await.expect("create the test table");
    calls.lock().unwrap().clear();
    Some(Fixture {
        _guard: Some(Box::new(TableGuard(store.clone()))),
        store,
        calls,
    })
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

/// The behaviour every store must have, written once.
mod suite {
    use super::*;

    /// Leases: created on first acquire, exclusive while live, taken over once expired (at
    /// `now == until` exactly), independent per (tenant, family); a stale holder loses.
    pub async fn lease<S: CursorStore>(s: &S) {
        assert_eq!(s.load("acme", A).await.unwrap(), None);
        let a = s
            .acquire("acme", A, "run-a", mins(0), mins(5))
            .await
            .unwrap();
        assert_eq!(
            (a.tenant.as_str(), a.family, a.owner.as_str()),
            ("acme", A, "run-a")
        );
        assert_eq!(
            a.cursor,
            Cursor {
                version: 1,
                lease_owner: Some("run-a".into()),
                lease_until: Some(mins(5)),
                ..Cursor::default()
            }
        );
        assert_eq!(s.load("acme", A).await.unwrap(), Some(a.cursor.clone()));

        // Live lease: another run (or the same owner) is refused, and nothing changes.
        assert!(is_conflict(
            s.acquire("acme", A, "run-b", mins(1), mins(6)).await
        ));
        assert!(is_conflict(
            s.acquire("acme", A, "run-a", mins(4), mins(9)).await
        ));
        assert_eq!(s.load("acme", A).await.unwrap(), Some(a.cursor.clone()));

        // Other families and tenants are independent.
        s.acquire("acme", P, "run-b", mins(1), mins(6))
            .await
            .unwrap();
        s.acquire("other", A, "run-b", mins(1), mins(6))
            .await
            .unwrap();

        // Expired (now == until counts as expired): taken over.
        let mut b = s
            .acquire("acme", A, "run-b", mins(5), mins(10))
            .await
            .unwrap();
        assert_eq!(b.cursor.version, 2);
        assert_eq!(b.cursor.lease_owner.as_deref(), Some("run-b"));
        assert_eq!(b.cursor.lease_until, Some(mins(10)));

        // The first holder's lease is stale: all its writes conflict.
        let mut a = a;
        assert!(is_conflict(
            s.checkpoint(&mut a, mins(0), None, mins(0), true).await
        ));
        assert!(is_conflict(s.release(&a).await));
        let err = CursorError {
            class: ErrorClass::Data,
            message: "y".into(),
            at: mins(5),
        };
        assert!(is_conflict(s.fail(&a, err).await));
        // The new holder's are fine.
        s.checkpoint(&mut b, mins(3), None, mins(5), true)
            .await
            .unwrap();
        assert_eq!(s.load("acme", A).await.unwrap(), Some(b.cursor.clone()));
    }

    /// Checkpoints: position and high water never move backwards, last success start is set,
    /// the version moves, the lease is kept or released.
    pub async fn checkpoint<S: CursorStore>(s: &S) {
        let mut l = s
            .acquire("acme", A, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut l, mins(-30), Some(mins(-40)), mins(0), false)
            .await
            .unwrap();
        assert_eq!(l.cursor.position, Some(mins(-30)));
        assert_eq!(l.cursor.high_water, Some(mins(-40)));
        assert_eq!(l.cursor.last_success_start, Some(mins(0)));
        assert_eq!(l.cursor.version, 2);
        assert_eq!(l.cursor.lease_owner.as_deref(), Some("run-a"));
        assert_eq!(l.cursor.lease_until, Some(mins(60)));
        assert_eq!(s.load("acme", A).await.unwrap(), Some(l.cursor.clone()));

        // Backwards position, no high water: neither moves; the run start does.
        s.checkpoint(&mut l, mins(-90), None, mins(1), false)
            .await
            .unwrap();
        assert_eq!(l.cursor.position, Some(mins(-30)));
        assert_eq!(l.cursor.high_water, Some(mins(-40)));
        assert_eq!(l.cursor.last_success_start, Some(mins(1)));
        assert_eq!(l.cursor.version, 3);

        // Backwards high water: kept.
        s.checkpoint(&mut l, mins(-30), Some(mins(-100)), mins(2), false)
            .await
            .unwrap();
        assert_eq!(l.cursor.high_water, Some(mins(-40)));

        // Forward, releasing.
        s.checkpoint(&mut l, mins(-10), Some(mins(-12)), mins(3), true)
            .await
            .unwrap();
        assert_eq!(l.cursor.position, Some(mins(-10)));
        assert_eq!(l.cursor.high_water, Some(mins(-12)));
        assert_eq!(l.cursor.version, 5);
        assert_eq!(l.cursor.lease_owner, None);
        assert_eq!(l.cursor.lease_until, None);
        assert_eq!(s.load("acme", A).await.unwrap(), Some(l.cursor.clone()));

        // Released: this lease can write no more; a new run can take it before the old expiry.
        assert!(is_conflict(
            s.checkpoint(&mut l, mins(0), None, mins(4), true).await
        ));
        let n = s
            .acquire("acme", A, "run-b", mins(5), mins(65))
            .await
            .unwrap();
        assert_eq!(n.cursor.position, Some(mins(-10)));
        assert_eq!(n.cursor.version, 6);

        // A first checkpoint without high water leaves it unset.
        let mut p = s
            .acquire("acme", P, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut p, mins(-5), None, mins(0), true)
            .await
            .unwrap();
        assert_eq!(p.cursor.high_water, None);
        assert_eq!(p.cursor.position, Some(mins(-5)));
    }

    /// Writes are conditional on the lease's version and owner; a conflict changes nothing.
    pub async fn stale<S: CursorStore>(s: &S) {
        let mut l = s
            .acquire("acme", A, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut l, mins(-30), None, mins(0), false)
            .await
            .unwrap();

        let mut old = l.clone();
        old.cursor.version -= 1;
        assert!(is_conflict(
            s.checkpoint(&mut old, mins(-1), None, mins(1), false).await
        ));
        assert!(is_conflict(s.release(&old).await));

        let mut other = l.clone();
        other.owner = "run-x".into();
        assert!(is_conflict(
            s.checkpoint(&mut other, mins(-1), None, mins(1), false)
                .await
        ));
        assert!(is_conflict(s.release(&other).await));
        let err = CursorError {
            class: ErrorClass::SinkRetry,
            message: "m".into(),
            at: mins(1),
        };
        assert!(is_conflict(s.fail(&other, err).await));
        assert_eq!(s.load("acme", A).await.unwrap(), Some(l.cursor.clone()));

        // A reset moves the version under the holder: its next write conflicts.
        s.reset("acme", A, Some(mins(-300))).await.unwrap();
        assert!(is_conflict(
            s.checkpoint(&mut l, mins(-1), None, mins(1), true).await
        ));
        let c = s.load("acme", A).await.unwrap().unwrap();
        assert_eq!(c.position, Some(mins(-300)));

        // A lease on a cursor that does not exist conflicts (and creates nothing).
        let mut ghost = l.clone();
        ghost.family = Family::Charges;
        assert!(is_conflict(
            s.checkpoint(&mut ghost, mins(-1), None, mins(1), true)
                .await
        ));
        assert!(is_conflict(s.release(&ghost).await));
        assert_eq!(s.load("acme", Family::Charges).await.unwrap(), None);
    }

    /// Release gives the lease back without moving the cursor.
    pub async fn release<S: CursorStore>(s: &S) {
        let mut l = s
            .acquire("acme", A, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut l, mins(-30), Some(mins(-31)), mins(0), false)
            .await
            .unwrap();
        s.release(&l).await.unwrap();
        let c = s.load("acme", A).await.unwrap().unwrap();
        assert_eq!(
            c,
            Cursor {
                version: l.cursor.version + 1,
                lease_owner: None,
                lease_until: None,
                ..l.cursor.clone()
            }
        );
        assert!(is_conflict(s.release(&l).await));
        // Free before the old expiry.
        let n = s
            .acquire("acme", A, "run-b", mins(1), mins(61))
            .await
            .unwrap();
        assert_eq!(n.cursor.position, Some(mins(-30)));
    }

    /// Fail records the error, releases, keeps the position; the next success clears it.
    pub async fn fail<S: CursorStore>(s: &S) {
        let mut l = s
            .acquire("acme", A, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut l, mins(-30), Some(mins(-31)), mins(0), false)
            .await
            .unwrap();
        let err = CursorError {
            class: ErrorClass::KareoThrottled,
            message: "GetAppointments throttled for acme".into(),
            at: mins(2),
        };
        s.fail(&l, err.clone()).await.unwrap();
        let c = s.load("acme", A).await.unwrap().unwrap();
        assert_eq!(c.last_error, Some(err.clone()));
        assert_eq!(c.position, Some(mins(-30)));
        assert_eq!(c.high_water, Some(mins(-31)));
        assert_eq!(c.last_success_start, Some(mins(0)));
        assert_eq!((c.lease_owner, c.lease_until), (None, None));
        assert_eq!(c.version, l.cursor.version + 1);
        assert!(is_conflict(s.fail(&l, err.clone()).await));

        // Acquiring keeps the error; a checkpoint clears it.
        let mut n = s
            .acquire("acme", A, "run-b", mins(3), mins(63))
            .await
            .unwrap();
        assert_eq!(n.cursor.last_error, Some(err));
        s.checkpoint(&mut n, mins(-40), None, mins(3), true)
            .await
            .unwrap();
        assert_eq!(n.cursor.last_error, None);
        assert_eq!(n.cursor.position, Some(mins(-30)));
        assert_eq!(s.load("acme", A).await.unwrap(), Some(n.cursor));
    }

    /// Reset (operator): creates the cursor when absent, sets or clears the position (also
    /// backwards), bumps the version, leaves a lease in place.
    pub async fn reset<S: CursorStore>(s: &S) {
        s.reset("acme", A, Some(mins(-60))).await.unwrap();
        assert_eq!(
            s.load("acme", A).await.unwrap(),
            Some(Cursor {
                position: Some(mins(-60)),
                version: 1,
                ..Cursor::default()
            })
        );
        s.reset("acme", A, None).await.unwrap();
        let c = s.load("acme", A).await.unwrap().unwrap();
        assert_eq!((c.position, c.version), (None, 2));

        let mut l = s
            .acquire("acme", A, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut l, mins(-5), Some(mins(-6)), mins(0), false)
            .await
            .unwrap();
        s.reset("acme", A, Some(mins(-500))).await.unwrap();
        let c = s.load("acme", A).await.unwrap().unwrap();
        assert_eq!(c.position, Some(mins(-500)));
        assert_eq!(c.high_water, Some(mins(-6)));
        assert_eq!(c.version, l.cursor.version + 1);
        assert_eq!(c.lease_owner.as_deref(), Some("run-a"));
        assert_eq!(c.lease_until, Some(mins(60)));
    }

    /// List: every cursor, by tenant then family, and nothing else of the store.
    pub async fn list<S: CursorStore + SnapshotStore + TenantStore>(s: &S) {
        assert!(s.list().await.unwrap().is_empty());
        SnapshotStore::put(s, "acme", A, snapshots(3))
            .await
            .unwrap();
        TenantStore::put(s, &tenant("acme", "Acme")).await.unwrap();
        s.reset("zeta", Family::Charges, Some(mins(-1)))
            .await
            .unwrap();
        let mut p = s
            .acquire("acme", P, "run-a", mins(0), mins(60))
            .await
            .unwrap();
        s.checkpoint(&mut p, mins(-2), Some(mins(-3)), mins(0), true)
            .await
            .unwrap();
        s.acquire("acme", A, "run-b", mins(0), mins(60))
            .await
            .unwrap();

        let listed = s.list().await.unwrap();
        let mut expected = Vec::new();
        for (t, f) in [("acme", A), ("acme", P), ("zeta", Family::Charges)] {
            expected.push((t.to_string(), f, s.load(t, f).await.unwrap().unwrap()));
        }
        assert_eq!(listed, expected);
    }

    /// Snapshots: batched reads (>100 ids, duplicates, absent ones) and writes (>25 items,
    /// a repeated id: the last wins), isolation per (tenant, family), upcoming.
    pub async fn snapshots_round_trip<S: SnapshotStore>(s: &S) {
        let items = snapshots(130);
        SnapshotStore::put(s, "acme", A, items.clone())
            .await
            .unwrap();

        let mut ids: Vec<String> = (0..150).map(id).collect();
        ids.extend((0..10).map(id));
        let got = s.get("acme", A, &ids).await.unwrap();
        let want: HashMap<String, Snapshot> = items.iter().cloned().collect();
        assert_eq!(got.len(), 130);
        assert_eq!(got, want);

        assert!(s.get("acme", P, &ids).await.unwrap().is_empty());
        assert!(s.get("other", A, &ids).await.unwrap().is_empty());
        assert!(s.get("acme", A, &[]).await.unwrap().is_empty());

        // Upcoming: starts >= after (inclusive) and not deleted, by id.
        let after = base() + Duration::hours(1);
        let expect_upcoming = |items: &[(String, Snapshot)]| -> Vec<(String, Snapshot)> {
            let mut v: Vec<_> = items
                .iter()
                .filter(|(_, s)| !s.deleted && s.starts.is_some_and(|t| t >= after))
                .cloned()
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let up = s.upcoming("acme", A, after).await.unwrap();
        assert!(
            up.iter().any(|(_, s)| s.starts == Some(after)),
            "the edge is inclusive"
        );
        assert_eq!(up, expect_upcoming(&items));
        assert!(s.upcoming("acme", P, after).await.unwrap().is_empty());

        // Overwrites; within one put a repeated id takes its last value.
        let mut changed = items.clone();
        let i = changed.iter().position(|(k, _)| *k == id(61)).unwrap();
        changed[i].1.deleted = true;
        changed[i].1.version = mins(999);
        let first = (id(62), snapshot(1000));
        let last = (id(62), snapshot(1001));
        changed.retain(|(k, _)| *k != id(62));
        changed.push(last.clone());
        SnapshotStore::put(s, "acme", A, vec![changed[i].clone(), first, last.clone()])
            .await
            .unwrap();
        let got = s.get("acme", A, &ids).await.unwrap();
        assert_eq!(got.get(&id(61)), Some(&changed[i].1));
        assert_eq!(got.get(&id(62)), Some(&last.1));
        assert_eq!(got.len(), 130);
        assert_eq!(
            s.upcoming("acme", A, after).await.unwrap(),
            expect_upcoming(&changed)
        );
        // An expired snapshot reads as absent (TTL deletion lags), from both reads.
        let mut gone = snapshot(1);
        gone.starts = Some(after + Duration::days(1));
        gone.deleted = false;
        gone.expires = Some(Utc::now() - Duration::seconds(5));
        SnapshotStore::put(s, "acme", A, vec![("expired".into(), gone)])
            .await
            .unwrap();
        assert!(s
            .get("acme", A, &["expired".to_string()])
            .await
            .unwrap()
            .is_empty());
        assert!(s
            .upcoming("acme", A, after)
            .await
            .unwrap()
            .iter()
            .all(|(id, _)| id != "expired"));
    }

    /// The exactly-once ledger: claim, hold, expiry, settle, release, review.
    pub async fn ledger<S: Ledger>(s: &S) {
        let k = "ev-1/rule-1";
        assert_eq!(Ledger::get(s, k).await.unwrap(), None);
        assert_eq!(s.claim(k, "a", mins(0), mins(5)).await.unwrap(), Claim::New);
        let pending_a = LedgerEntry {
            state: LedgerState::Pending,
            owner: Some("a".into()),
            until: Some(mins(5)),
            remote_id: None,
            result: None,
            reason: None,
            attempts: 1,
            at: mins(0),
            sending: false,
            // Every item expires, a claim too (the ledger's retention from its time).
            expires: Some(domain::ports::ledger_expiry(mins(0))),
        };
        assert_eq!(Ledger::get(s, k).await.unwrap(), Some(pending_a.clone()));
        assert_eq!(
            s.claim(k, "b", mins(1), mins(6)).await.unwrap(),
            Claim::Held
        );
        // Expired at `now == until`.
        assert_eq!(
            s.claim(k, "b", mins(5), mins(10)).await.unwrap(),
            Claim::Expired(pending_a.clone())
        );
        let got = Ledger::get(s, k).await.unwrap().unwrap();
        assert_eq!(
            (got.owner.as_deref(), got.attempts, got.at),
            (Some("b"), 2, mins(5))
        );
        // Marking the send: only the holder can.
        assert!(is_conflict(s.mark_sending(k, "a").await));
        s.mark_sending(k, "b").await.unwrap();
        assert!(Ledger::get(s, k).await.unwrap().unwrap().sending);

        // Only the holder settles.
        let done = LedgerEntry {
            state: LedgerState::Done,
            owner: Some("ignored".into()),
            until: Some(mins(99)),
            remote_id: Some("task-1".into()),
            result: Some("{\"id\":\"task-1\"}".into()),
            reason: None,
            attempts: 77,
            at: mins(6),
            sending: false,
            expires: None,
        };
        assert!(is_conflict(s.settle(k, "a", done.clone()).await));
        s.settle(k, "b", done.clone()).await.unwrap();
        let settled = LedgerEntry {
            owner: None,
            until: None,
            attempts: 2,
            expires: Some(domain::ports::ledger_expiry(mins(6))),
            ..done.clone()
        };
        assert_eq!(Ledger::get(s, k).await.unwrap(), Some(settled.clone()));
        assert_eq!(
            s.claim(k, "c", mins(60), mins(65)).await.unwrap(),
            Claim::Done(settled.clone())
        );
        assert!(is_conflict(s.settle(k, "b", done.clone()).await));
        assert!(is_conflict(s.settle("never-claimed", "b", done).await));

        // Release: a first attempt disappears; a later one becomes failed; others' no-op.
        let k2 = "cmd-2";
        assert_eq!(
            s.claim(k2, "a", mins(0), mins(5)).await.unwrap(),
            Claim::New
        );
        Ledger::release(s, k2, "b").await.unwrap();
        assert!(Ledger::get(s, k2).await.unwrap().is_some());
        Ledger::release(s, k2, "a").await.unwrap();
        assert_eq!(Ledger::get(s, k2).await.unwrap(), None);
        Ledger::release(s, k2, "a").await.unwrap();
        assert_eq!(
            s.claim(k2, "a", mins(0), mins(5)).await.unwrap(),
            Claim::New
        );
        assert!(matches!(
            s.claim(k2, "c", mins(6), mins(11)).await.unwrap(),
            Claim::Expired(_)
        ));
        Ledger::release(s, k2, "c").await.unwrap();
        let failed = Ledger::get(s, k2).await.unwrap().unwrap();
        assert_eq!(failed.state, LedgerState::Failed);
        assert_eq!(
            (failed.owner, failed.until, failed.attempts),
            (None, None, 2)
        );
        // Failed: claimed anew, attempts go on.
        assert_eq!(
            s.claim(k2, "d", mins(7), mins(12)).await.unwrap(),
            Claim::New
        );
        assert_eq!(Ledger::get(s, k2).await.unwrap().unwrap().attempts, 3);
        let review = LedgerEntry {
            state: LedgerState::NeedsReview,
            owner: None,
            until: None,
            remote_id: None,
            result: None,
            reason: Some("outcome unknown".into()),
            attempts: 0,
            at: mins(8),
            sending: false,
            expires: None,
        };
        s.settle(k2, "d", review.clone()).await.unwrap();
        let review = LedgerEntry {
            attempts: 3,
            expires: Some(domain::ports::ledger_expiry(mins(8))),
            ..review
        };
        assert_eq!(
            s.claim(k2, "e", mins(100), mins(105)).await.unwrap(),
            Claim::NeedsReview(review)
        );

        // An expired claim says whether its holder had begun to send; a new claim has not.
        let k3 = "cmd-3";
        assert_eq!(
            s.claim(k3, "a", mins(0), mins(5)).await.unwrap(),
            Claim::New
        );
        s.mark_sending(k3, "a").await.unwrap();
        match s.claim(k3, "b", mins(6), mins(11)).await.unwrap() {
            Claim::Expired(prev) => assert!(prev.sending),
            other => panic!("{other:?}"),
        }
        assert!(!Ledger::get(s, k3).await.unwrap().unwrap().sending);
        assert!(is_conflict(s.mark_sending("never-claimed", "b").await));
    }

    /// Webhook registrations: put, read one, list all; a put replaces; optional parts absent.
    pub async fn hooks<S: HookStore>(s: &S) {
        assert!(s.hooks().await.unwrap().is_empty());
        assert_eq!(s.hook("acme").await.unwrap(), None);
        let armed = HookRegistration {
            token_sha256: "ab".repeat(32),
            armed_until: Some(mins(10)),
            webhook_id: None,
            at: mins(0),
        };
        s.put_hook("acme", &armed).await.unwrap();
        let done = HookRegistration {
            token_sha256: "cd".repeat(32),
            armed_until: None,
            webhook_id: Some("0a0c0000-0000-4000-8000-000000000777".into()),
            at: mins(1),
        };
        s.put_hook("zeta", &done).await.unwrap();
        assert_eq!(s.hook("acme").await.unwrap(), Some(armed.clone()));
        let mut all = s.hooks().await.unwrap();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            all,
            vec![
                ("acme".to_string(), armed),
                ("zeta".to_string(), done.clone())
            ]
        );
        s.put_hook("acme", &done).await.unwrap();
        assert_eq!(s.hook("acme").await.unwrap(), Some(done));
    }

    /// Links: put and read back by kind and id, per tenant; an expired one is gone.
    pub async fn links<S: LinkStore>(s: &S) {
        let now = Utc::now();
        let task = LinkKey::DockTask("0a0c0000-0000-4000-8000-000000000001".into());
        let patient = LinkKey::DockPatient("0a0c0000-0000-4000-8000-000000000001".into());
        assert_eq!(s.link("acme", &task).await.unwrap(), None);
        let l = Link {
            family: Some(Family::Appointments),
            record: Some("5001".into()),
            kareo_patient: Some("42".into()),
            dock_patient: Some("0a0c0000-0000-4000-8000-000000000002".into()),
            at: mins(0),
            expires: Some(now + Duration::days(400)),
        };
        s.put_link("acme", &task, &l).await.unwrap();
        let mut got = s.link("acme", &task).await.unwrap().expect("the link");
        // The store keeps expiry to the second.
        assert_eq!(
            got.expires.map(|e| e.timestamp()),
            l.expires.map(|e| e.timestamp())
        );
        got.expires = l.expires;
        assert_eq!(got, l);
        assert_eq!(s.link("zeta", &task).await.unwrap(), None, "per tenant");
        assert_eq!(s.link("acme", &patient).await.unwrap(), None, "per kind");
        let only_patient = Link {
            family: None,
            record: None,
            kareo_patient: Some("42".into()),
            dock_patient: None,
            at: mins(1),
            expires: None,
        };
        s.put_link("acme", &patient, &only_patient).await.unwrap();
        assert_eq!(s.link("acme", &patient).await.unwrap(), Some(only_patient));
        let old = Link {
            expires: Some(now - Duration::seconds(5)),
            ..l
        };
        s.put_link("acme", &task, &old).await.unwrap();
        assert_eq!(s.link("acme", &task).await.unwrap(), None, "expired");
    }

    /// Breakers: none, opened, read one and all, replaced, closed (twice: not an error).
    pub async fn breakers<S: BreakerStore>(s: &S) {
        assert_eq!(s.breaker("kareo/acme").await.unwrap(), None);
        assert!(s.breakers().await.unwrap().is_empty());
        let b = Breaker {
            fingerprint: "0123456789abcdef0123456789abcdef".into(),
            opened_at: mins(3),
            by: "acme/patients".into(),
            reason: "GetPatients: security failure: Authenticated=false".into(),
        };
        s.open_breaker("kareo/acme", &b).await.unwrap();
        assert_eq!(s.breaker("kareo/acme").await.unwrap(), Some(b.clone()));
        assert_eq!(s.breaker("kareo/zeta").await.unwrap(), None, "per account");
        let again = Breaker {
            by: "acme/charges".into(),
            ..b
        };
        s.open_breaker("kareo/acme", &again).await.unwrap();
        assert_eq!(
            s.breakers().await.unwrap(),
            vec![("kareo/acme".to_string(), again)]
        );
        s.close_breaker("kareo/acme").await.unwrap();
        s.close_breaker("kareo/acme").await.unwrap();
        assert_eq!(s.breaker("kareo/acme").await.unwrap(), None);
    }

    /// A poll that reads before leasing: the shard's cursors in one read; a lease taken only
    /// on the cursor as read; one conditional write that moves an unleased cursor.
    pub async fn unleased<S: CursorStore>(s: &S) {
        assert!(s.load_many(&["acme", "zeta"], A).await.unwrap().is_empty());
        // Absent as read: the first advance creates it; a second with the same view loses.
        let c = s.advance("acme", A, None, mins(-2), mins(0)).await.unwrap();
        assert_eq!(
            (c.position, c.last_success_start, c.version),
            (Some(mins(-2)), Some(mins(0)), 1)
        );
        assert!(is_conflict(
            s.advance("acme", A, None, mins(-1), mins(1)).await
        ));
        assert!(is_conflict(
            s.acquire_seen("acme", A, None, "run-a", mins(1), mins(6))
                .await
        ));
        let read = s.load_many(&["acme", "zeta", "acme"], A).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read["acme"], c);
        assert_eq!(s.load("acme", A).await.unwrap().as_ref(), Some(&c));
        // Never backwards; the view it was conditional on is now stale.
        let c2 = s
            .advance("acme", A, Some(&c), mins(-5), mins(1))
            .await
            .unwrap();
        assert_eq!((c2.position, c2.version), (Some(mins(-2)), 2));
        assert!(is_conflict(
            s.advance("acme", A, Some(&c), mins(3), mins(3)).await
        ));
        assert!(is_conflict(
            s.acquire_seen("acme", A, Some(&c), "run-a", mins(1), mins(6))
                .await
        ));
        // As read: leased; a live lease refuses another view of the same version.
        let l = s
            .acquire_seen("acme", A, Some(&c2), "run-a", mins(2), mins(7))
            .await
            .unwrap();
        assert_eq!(
            (l.cursor.version, l.cursor.lease_owner.as_deref()),
            (3, Some("run-a"))
        );
        assert!(is_conflict(
            s.acquire_seen("acme", A, Some(&l.cursor), "run-b", mins(3), mins(8))
                .await
        ));
        // The lease expires unreleased (a dead run); then a failure: an advance as read
        // clears both, and the dead run's writes lose.
        let mut dead = l.clone();
        s.fail(
            &l,
            CursorError {
                class: ErrorClass::KareoThrottled,
                message: "GetAppointments: throttled".into(),
                at: mins(3),
            },
        )
        .await
        .unwrap();
        let failed = s.load("acme", A).await.unwrap().unwrap();
        let c3 = s
            .advance("acme", A, Some(&failed), mins(8), mins(9))
            .await
            .unwrap();
        assert_eq!(
            (c3.position, c3.last_error, c3.lease_owner, c3.lease_until),
            (Some(mins(8)), None, None, None)
        );
        assert!(is_conflict(
            s.checkpoint(&mut dead, mins(9), None, mins(9), true).await
        ));
        // Other tenants and families are their own cursors.
        assert!(s
            .load_many(&["acme"], Family::Patients)
            .await
            .unwrap()
            .is_empty());
        let z = s.advance("zeta", A, None, mins(1), mins(1)).await.unwrap();
        let both = s.load_many(&["acme", "zeta", "nobody"], A).await.unwrap();
        assert_eq!((both.len(), &both["zeta"]), (2, &z));
    }

    /// Period claims: the first owner wins, claims again (Lambda's retry of one invocation);
    /// another owner does not; another period, or another family, is another claim.
    pub async fn periods<S: PeriodStore>(s: &S) {
        let run = "poll#2026-12-04T21:05:00Z";
        let until = mins(60 * 24);
        assert!(s
            .claim_period(Family::Patients, run, "req-1", until)
            .await
            .unwrap());
        assert!(s
            .claim_period(Family::Patients, run, "req-1", until)
            .await
            .unwrap());
        assert!(!s
            .claim_period(Family::Patients, run, "req-2", until)
            .await
            .unwrap());
        assert!(s
            .claim_period(Family::Charges, run, "req-2", until)
            .await
            .unwrap());
        assert!(s
            .claim_period(
                Family::Patients,
                "poll#2026-12-04T21:10:00Z",
                "req-2",
                until
            )
            .await
            .unwrap());
        assert!(!s
            .claim_period(Family::Patients, run, "req-3", until)
            .await
            .unwrap());
    }

    /// Kareo accounts' shared call budgets: concurrent reservations of one (account,
    /// operation) get distinct slots at least the interval apart, from now on; another
    /// operation or account is not held up; a free slot is now. The first claim to read the
    /// live intervals wins until it expires or they are stored; what is stored is read back.
    pub async fn budget<S: SharedBudget>(s: &S) {
        let acct = AccountId::of("customer-key-1");
        let other = AccountId::of("customer-key-2");
        let now = 1_800_000_000_000u64;
        let slots = futures_util::future::join_all(
            (0..12).map(|_| s.reserve(&acct, "GetPatient", 500, now)),
        )
        .await;
        let mut slots: Vec<u64> = slots.into_iter().map(|r| r.unwrap()).collect();
        slots.sort_unstable();
        assert_eq!(slots[0], now, "the first slot is now");
        for pair in slots.windows(2) {
            assert!(
                pair[1] >= pair[0] + 500,
                "slots {pair:?} are closer than the interval"
            );
        }
        assert!(
            *slots.last().unwrap() <= now + 11 * 500 + 500,
            "no slot skipped far ahead"
        );
        assert_eq!(s.reserve(&acct, "GetCharges", 500, now).await.unwrap(), now);
        assert_eq!(
            s.reserve(&other, "GetPatient", 500, now).await.unwrap(),
            now
        );
        // Long after the last slot, the next is now again.
        let later = now + 60_000;
        assert_eq!(
            s.reserve(&acct, "GetPatient", 500, later).await.unwrap(),
            later
        );
        assert_eq!(
            s.reserve(&acct, "GetPatient", 500, later).await.unwrap(),
            later + 500
        );

        assert_eq!(s.live(&acct).await.unwrap(), None);
        assert!(s.claim_read(&acct, "a", now, now + 30_000).await.unwrap());
        assert!(
            s.claim_read(&acct, "a", now + 1, now + 30_000)
                .await
                .unwrap(),
            "same owner"
        );
        assert!(!s
            .claim_read(&acct, "b", now + 1, now + 30_000)
            .await
            .unwrap());
        assert!(s
            .claim_read(&other, "b", now + 1, now + 30_000)
            .await
            .unwrap());
        assert_eq!(
            s.live(&acct).await.unwrap(),
            None,
            "a claim is not intervals"
        );
        assert!(
            s.claim_read(&acct, "b", now + 30_000, now + 60_000)
                .await
                .unwrap(),
            "expired"
        );
        let live = LiveIntervals {
            read_at_ms: now,
            intervals: vec![("GetPatient".into(), 300), ("GetCharges".into(), 1000)],
        };
        s.store_live(&acct, &live).await.unwrap();
        assert_eq!(s.live(&acct).await.unwrap(), Some(live));
        assert!(
            s.claim_read(&acct, "c", now + 30_001, now + 60_000)
                .await
                .unwrap(),
            "stored: the claim ended"
        );
    }

    /// A settled entry keeps its own expiry (the table's TTL attribute); a new claim replaces
    /// it with the ledger's retention from the claim.
    pub async fn ledger_expiry<S: Ledger>(s: &S) {
        let k = "webhook#acme#e1";
        assert_eq!(s.claim(k, "a", mins(0), mins(5)).await.unwrap(), Claim::New);
        let expires = Utc.timestamp_opt(4_102_444_800, 0).unwrap();
        let done = LedgerEntry {
            result: Some("[]".into()),
            expires: Some(expires),
            ..LedgerEntry::settled(LedgerState::Done, mins(1))
        };
        s.settle(k, "a", done).await.unwrap();
        let got = Ledger::get(s, k).await.unwrap().unwrap();
        assert_eq!((got.state, got.expires), (LedgerState::Done, Some(expires)));
        let k2 = "webhook#acme#e2";
        s.claim(k2, "a", mins(0), mins(5)).await.unwrap();
        let failed = LedgerEntry {
            expires: Some(expires),
            ..LedgerEntry::settled(LedgerState::Failed, mins(1))
        };
        s.settle(k2, "a", failed).await.unwrap();
        assert_eq!(
            s.claim(k2, "b", mins(2), mins(7)).await.unwrap(),
            Claim::New
        );
        assert_eq!(
            Ledger::get(s, k2).await.unwrap().unwrap().expires,
            Some(domain::ports::ledger_expiry(mins(2)))
        );
    }

    /// Offboarding: a dry run counts and changes nothing; the purge deletes every item of
    /// the tenant and none of another tenant's (`acme` vs `acme2`: prefixes end at `#`).
    pub async fn purge<S>(s: &S)
    where
        S: TenantPurge
            + CursorStore
            + SnapshotStore
            + Ledger
            + LinkStore
            + TenantStore
            + HookStore
            + BreakerStore,
    {
        for t in ["acme", "acme2"] {
            TenantStore::put(s, &tenant(t, "P")).await.unwrap();
            let l = s.acquire(t, A, "a", mins(0), mins(5)).await.unwrap();
            CursorStore::release(s, &l).await.unwrap();
            s.acquire(t, P, "a", mins(0), mins(5)).await.unwrap();
            SnapshotStore::put(s, t, A, snapshots(30)).await.unwrap();
            for key in [
                format!("task#{t}#0123abcd#rule"),
                format!("write#{t}#c1"),
                format!("webhook#{t}#e1"),
                format!("webhook#{t}#e2"),
            ] {
                s.claim(&key, "a", mins(0), mins(5)).await.unwrap();
            }
            let link = Link {
                family: None,
                record: None,
                kareo_patient: Some("42".into()),
                dock_patient: None,
                at: mins(0),
                expires: None,
            };
            s.put_link(t, &LinkKey::KareoPatient("42".into()), &link)
                .await
                .unwrap();
            s.put_hook(
                t,
                &HookRegistration {
                    token_sha256: "00".repeat(32),
                    armed_until: None,
                    webhook_id: None,
                    at: mins(0),
                },
            )
            .await
            .unwrap();
            s.open_breaker(
                &pause_key(t),
                &Breaker {
                    fingerprint: String::new(),
                    opened_at: mins(0),
                    by: "operator".into(),
                    reason: "paused".into(),
                },
            )
            .await
            .unwrap();
        }
        // A task ledger item of an earlier version (no tenant in its key): left to expire.
        s.claim("task#0123abcd#rule", "a", mins(0), mins(5))
            .await
            .unwrap();
        let expected = PurgeCounts {
            cursors: 2,
            snapshots: 30,
            tasks: 1,
            writes: 1,
            dedupe: 2,
            links: 1,
            config: 3,
        };
        assert_eq!(s.purge("acme", true).await.unwrap(), expected);
        assert_eq!(
            s.purge("acme", true).await.unwrap(),
            expected,
            "a dry run changes nothing"
        );
        assert_eq!(s.purge("acme", false).await.unwrap(), expected);
        assert_eq!(s.purge("acme", true).await.unwrap(), PurgeCounts::default());
        let ids: Vec<String> = (0..30).map(id).collect();
        assert!(SnapshotStore::get(s, "acme", A, &ids)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.load("acme", A).await.unwrap(), None);
        assert_eq!(Ledger::get(s, "write#acme#c1").await.unwrap(), None);
        assert_eq!(
            s.link("acme", &LinkKey::KareoPatient("42".into()))
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.hook("acme").await.unwrap(), None);
        assert_eq!(s.breaker(&pause_key("acme")).await.unwrap(), None);
        let left: Vec<String> = s
            .tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.tenant)
            .collect();
        assert_eq!(left, ["acme2"]);
        // The other tenant keeps everything; the task item stays.
        assert_eq!(s.purge("acme2", true).await.unwrap(), expected);
        assert!(Ledger::get(s, "task#0123abcd#rule")
            .await
            .unwrap()
            .is_some());
    }

    /// Tenants: put and list round-trip, by id; a put replaces.
    pub async fn tenants<S: TenantStore>(s: &S) {
        assert!(s.tenants().await.unwrap().is_empty());
        TenantStore::put(s, &tenant("zeta", "Zeta Clinic"))
            .await
            .unwrap();
        TenantStore::put(s, &tenant("acme", "Acme Family Practice"))
            .await
            .unwrap();
        let got = s.tenants().await.unwrap();
        let ids: Vec<&str> = got.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(ids, ["acme", "zeta"]);
        assert_eq!(
            got[0].to_yaml(),
            tenant("acme", "Acme Family Practice").to_yaml()
        );
        assert_eq!(got[1].to_yaml(), tenant("zeta", "Zeta Clinic").to_yaml());

        TenantStore::put(s, &tenant("acme", "Acme Two"))
            .await
            .unwrap();
        let got = s.tenants().await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kareo.practice, "Acme Two");
    }
}

fn id(i: usize) -> String {
    format!("{i:05}")
}

/// A snapshot with padding (so that 130 of them pass 1 MB and a query pages), an empty value,
/// some with no fields, some without start, some deleted.
fn snapshot(i: usize) -> Snapshot {
    let mut fields = BTreeMap::new();
    if i % 10 != 0 {
        fields.insert("ConfirmationStatus".into(), "Scheduled".into());
        fields.insert("Notes".into(), String::new());
        fields.insert("Padding".into(), "x".repeat(9000));
        fields.insert("Unicode".into(), "Zoë — 12 #".into());
    }
    Snapshot {
        version: base() + Duration::seconds(i as i64) + Duration::nanoseconds(i as i64),
        fields,
        starts: (i % 3 != 0).then(|| base() + Duration::hours(i as i64 - 60)),
        deleted: i % 7 == 0,
        // Whole seconds: the table's TTL attribute is epoch seconds.
        expires: (i % 4 == 0).then(|| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()),
    }
}

fn snapshots(n: usize) -> Vec<(String, Snapshot)> {
    (0..n).map(|i| (id(i), snapshot(i))).collect()
}

fn tenant(id: &str, practice: &str) -> TenantConfig {
    let yaml = format!(
        "tenant: {id}\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  \
         secret: kareo/{id}\n  practice: \"{practice}\"\n  practice_id: 1\ndock:\n  \
         secret: dock/{id}\nsafety_lag: 2m\nfamilies:\n  appointments: {{ lookback: 2h }}\n  \
         patients: {{}}\n"
    );
    TenantConfig::from_yaml(&yaml, "test").unwrap()
}

// ---------------------------------------------------------------------------------------------
// The suite against every store
// ---------------------------------------------------------------------------------------------

macro_rules! run_suite {
    ($store:ident, $fixture:path) => {
        mod $store {
            use super::*;
            run_suite!(@tests $fixture; lease, checkpoint, stale, release, fail, reset, list, snapshots_round_trip, tenants, ledger, hooks, links, ledger_expiry, breakers, periods, unleased, purge, budget);
        }
    };
    (@tests $fixture:path; $($behaviour:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                let Some(fx) = $fixture().await else { return };
                suite::$behaviour(&fx.store).await;
            }
        )*
    };
}

run_suite!(local_memory, memory);
run_suite!(local_dir, dir);
run_suite!(dynamodb, dynamo);

/// The state directory survives a reopen: cursors, snapshots and tenants as written.
#[tokio::test]
async fn local_dir_persists() {
    let tmp = TempDir::new();
    let s = LocalStore::in_dir(tmp.path()).unwrap();
    let mut l = s
        .acquire("acme", A, "run-a", mins(0), mins(60))
        .await
        .unwrap();
    s.checkpoint(&mut l, mins(-5), Some(mins(-6)), mins(0), false)
        .await
        .unwrap();
    s.fail(
        &l,
        CursorError {
            class: ErrorClass::KareoThrottled,
            message: "m".into(),
            at: mins(1),
        },
    )
    .await
    .unwrap();
    s.reset("zeta", P, Some(mins(-9))).await.unwrap();
    SnapshotStore::put(&s, "acme", A, snapshots(40))
        .await
        .unwrap();
    TenantStore::put(&s, &tenant("acme", "Acme")).await.unwrap();

    let r = LocalStore::in_dir(tmp.path()).unwrap();
    assert_eq!(r.list().await.unwrap(), s.list().await.unwrap());
    assert_eq!(r.list().await.unwrap().len(), 2);
    let ids: Vec<String> = (0..40).map(id).collect();
    assert_eq!(
        SnapshotStore::get(&r, "acme", A, &ids).await.unwrap(),
        SnapshotStore::get(&s, "acme", A, &ids).await.unwrap()
    );
    assert_eq!(
        SnapshotStore::get(&r, "acme", A, &ids).await.unwrap().len(),
        40
    );
    assert_eq!(
        r.upcoming("acme", A, base()).await.unwrap(),
        s.upcoming("acme", A, base()).await.unwrap()
    );
    let yaml = |v: Vec<TenantConfig>| v.iter().map(|t| t.to_yaml()).collect::<Vec<_>>();
    assert_eq!(
        yaml(r.tenants().await.unwrap()),
        yaml(s.tenants().await.unwrap())
    );
    // And the reopened store goes on from there: the lease was released by `fail`.
    r.acquire("acme", A, "run-b", mins(2), mins(62))
        .await
        .unwrap();
}

/// A poll that finds nothing costs exactly two DynamoDB calls: acquire and checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_empty_poll_costs_one_call_or_none() {
    let Some(fx) = dynamo().await else { return };
    let s = &fx.store;
    // A shard's cursors: one BatchGetItem for up to 100 tenants.
    let tenants: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let ids: Vec<&str> = tenants.iter().map(String::as_str).collect();
    assert!(s.load_many(&ids, A).await.unwrap().is_empty());
    assert_eq!(*fx.calls.lock().unwrap(), ["BatchGetItem"]);
    // An empty poll's one write (when the stored cursor needs it): a conditional UpdateItem,
    // no lease taken or released.
    fx.calls.lock().unwrap().clear();
    let c = s.advance("acme", A, None, mins(-2), mins(0)).await.unwrap();
    assert_eq!(*fx.calls.lock().unwrap(), ["UpdateItem"]);
    // A lost race costs one call; a poll with something to hand off leases first.
    fx.calls.lock().unwrap().clear();
    assert!(is_conflict(
        s.advance("acme", A, None, mins(-1), mins(1)).await
    ));
    let mut l = s
        .acquire_seen("acme", A, Some(&c), "run-a", mins(1), mins(6))
        .await
        .unwrap();
    s.checkpoint(&mut l, mins(-1), None, mins(1), true)
        .await
        .unwrap();
    assert_eq!(
        *fx.calls.lock().unwrap(),
        ["UpdateItem", "UpdateItem", "UpdateItem"]
    );
}

/// Batches are cut at DynamoDB's limits (100 keys per read, 25 items per write); queries are
/// followed across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_batches_at_the_limits() {
    let Some(fx) = dynamo().await else { return };
    let s = &fx.store;
    SnapshotStore::put(s, "acme", A, snapshots(130))
        .await
        .unwrap();
    let ids: Vec<String> = (0..201).map(id).collect();
    SnapshotStore::get(s, "acme", A, &ids).await.unwrap();
    let calls = fx.calls.lock().unwrap().clone();
    let count = |op: &str| calls.iter().filter(|c| *c == op).count();
    assert_eq!(count("BatchWriteItem"), 6, "130 items in 25s: {calls:?}");
    assert_eq!(count("BatchGetItem"), 3, "201 ids in 100s: {calls:?}");
    // 130 items of ~9 kB pass the 1 MB page of a Query: `upcoming` follows the pages.
    let up = s
        .upcoming("acme", A, base() - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(
        up.len(),
        snapshots(130)
            .iter()
            .filter(|(_, s)| !s.deleted && s.starts.is_some())
            .count()
    );
    let calls = fx.calls.lock().unwrap().clone();
    assert!(
        calls.iter().filter(|c| *c == "Query").count() >= 2,
        "one page only: {calls:?}"
    );
}

/// The items are typed: a number for the version, RFC 3339 strings for instants, a map for
/// snapshot fields, a boolean for `deleted`, YAML for tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_items_are_typed() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let Some(fx) = dynamo().await else { return };
    let s = &fx.store;
    let mut l = s
        .acquire("acme", A, "run-a", mins(0), mins(5))
        .await
        .unwrap();
    s.checkpoint(&mut l, mins(-2), Some(mins(-3)), mins(0), false)
        .await
        .unwrap();
    SnapshotStore::put(s, "acme", A, snapshots(2))
        .await
        .unwrap();
    TenantStore::put(s, &tenant("acme", "Acme")).await.unwrap();
    let item = |pk: &str, sk: &str| {
        let (pk, sk) = (pk.to_string(), sk.to_string());
        async move {
            s.client
                .get_item()
                .table_name(&s.table)
                .key("pk", V::S(pk))
                .key("sk", V::S(sk))
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let c = item("cursor#acme#appointments", "cursor").await;
    assert_eq!(c["version"], V::N("2".into()));
    assert_eq!(c["position"], V::S("2026-09-01T11:58:00.123456789Z".into()));
    assert_eq!(c["lease_owner"], V::S("run-a".into()));
    assert_eq!(c["tenant"], V::S("acme".into()));
    assert_eq!(c["family"], V::S("appointments".into()));
    let snap = item("snap#acme#appointments", "00001").await;
    assert!(snap["fields"].is_m());
    assert_eq!(snap["deleted"], V::Bool(false));
    assert!(snap["starts"].is_s());
    let t = item("tenant", "acme").await;
    assert!(t["yaml"].as_s().unwrap().contains("tenant: acme"));
}

/// The same script of operations gives the same answers and the same final state on the
/// embedded store and on DynamoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_matches_local_store() {
    let Some(fx) = dynamo().await else { return };
    async fn script<S: CursorStore>(s: &S) -> (Vec<String>, Vec<(String, Family, Cursor)>) {
        let mut out = Vec::new();
        let mut log = |r: Result<Cursor, StoreError>| {
            out.push(match r {
                Ok(c) => format!("ok v{} {:?}", c.version, c.position),
                Err(e) => e.class().to_string(),
            })
        };
        let a = s.acquire("t", A, "a", mins(0), mins(10)).await;
        log(a.clone().map(|l| l.cursor));
        let mut a = a.unwrap();
        log(s
            .acquire("t", A, "b", mins(9), mins(20))
            .await
            .map(|l| l.cursor));
        log(s
            .checkpoint(&mut a, mins(-5), None, mins(0), false)
            .await
            .map(|_| a.cursor.clone()));
        let b = s.acquire("t", A, "b", mins(10), mins(20)).await;
        log(b.clone().map(|l| l.cursor));
        log(s
            .checkpoint(&mut a, mins(1), None, mins(0), true)
            .await
            .map(|_| a.cursor.clone()));
        let mut b = b.unwrap();
        log(s
            .checkpoint(&mut b, mins(-9), Some(mins(-9)), mins(10), false)
            .await
            .map(|_| b.cursor.clone()));
        log(s.release(&b).await.map(|_| Cursor::default()));
        log(s.release(&b).await.map(|_| Cursor::default()));
        s.reset("u", P, None).await.unwrap();
        (out, s.list().await.unwrap())
    }
    let local = script(&LocalStore::memory()).await;
    let dynamo = script(&fx.store).await;
    assert_eq!(local, dynamo);
}

// ---------------------------------------------------------------------------------------------
// Secrets Manager (moto)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_manager_reads_a_secret_and_names_a_missing_one() {
    if !moto("the DynamoDB / Secrets Manager / Lambda store suite") {
        return;
    }
    let conf = sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&conf);
    let name = unique("kareo/acme");
    client
        .create_secret()
        .name(&name)
        .secret_string(r#"{"customer_key":"ck-1","user":"api@acme.test","password":"pw"}"#)
        .send()
        .await
        .expect("create the test secret");

    let source = SecretsManagerSource::new(client.clone());
    let v = source.get(&name).await.unwrap();
    assert!(v.0.contains("ck-1"));
    assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
    let creds = kareo_credentials(&source, &name).await.unwrap();
    assert_eq!(creds.customer_key, "ck-1");

    let missing = unique("kareo/nobody");
    assert_eq!(
        source.get(&missing).await.unwrap_err(),
        SecretError::NotFound(missing)
    );

    let _ = client
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await;
}

// ---------------------------------------------------------------------------------------------
// Lambda (a local Invoke endpoint)
// ---------------------------------------------------------------------------------------------

/// An invocation as received: function name, `X-Amz-Invocation-Type`, body.
type Invocation = (String, Option<String>, Vec<u8>);

#[derive(Clone, Default)]
struct Invokes {
    seen: Arc<Mutex<Vec<Invocation>>>,
    /// Status and error type to answer with (default: 202).
    answer: Arc<Mutex<Option<(u16, &'static str)>>>,
}

async fn lambda_endpoint() -> (String, Invokes) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    async fn invoke(
        State(st): State<Invokes>,
        Path(name): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let kind = headers
            .get("x-amz-invocation-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        st.seen.lock().unwrap().push((name, kind, body.to_vec()));
        let answer = *st.answer.lock().unwrap();
        match answer {
            None => StatusCode::ACCEPTED.into_response(),
            Some((status, kind)) => (
                StatusCode::from_u16(status).unwrap(),
                [
                    ("x-amzn-errortype", kind),
                    ("content-type", "application/json"),
                ],
                format!(r#"{{"Type":"User","message":"{kind}"}}"#),
            )
                .into_response(),
        }
    }

    let st = Invokes::default();
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), st)
}

fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
    aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
            .build(),
    )
}

fn events() -> Vec<ChangeEvent> {
    (1..=2)
        .map(|i| ChangeEvent {
            id: format!("ev-{i}"),
            tenant: "acme".into(),
            family: A,
            record_id: format!("{i}"),
            version: mins(i),
            kind: ChangeKind::Created,
            changes: vec![],
            record: BTreeMap::from([("ConfirmationStatus".into(), "Scheduled".into())]),
        })
        .collect()
}

#[tokio::test]
async fn a_shard_is_an_asynchronous_invoke_of_the_function_itself() {
    let (endpoint, st) = lambda_endpoint().await;
    let shards = LambdaSink::new(lambda_client(&endpoint), "kareo-dock-poll-patients");
    let payload = serde_json::json!({"shard": {"index": 1, "of": 2, "tenants": ["acme", "zeta"]}});
    domain::ports::ShardDispatch::dispatch(&shards, &payload)
        .await
        .unwrap();
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (name, kind, body) = &seen[0];
    assert_eq!(name, "kareo-dock-poll-patients");
    assert_eq!(kind.as_deref(), Some("Event"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(body).unwrap(),
        payload
    );
    *st.answer.lock().unwrap() = Some((429, "TooManyRequestsException"));
    let e = domain::ports::ShardDispatch::dispatch(&shards, &payload)
        .await
        .unwrap_err();
    assert_eq!(e.class, "sink_throttled");
}

#[tokio::test]
async fn lambda_sink_invokes_asynchronously_with_the_events() {
    let (endpoint, st) = lambda_endpoint().await;
    let sink = LambdaSink::new(lambda_client(&endpoint), "kareo-dock-task");
    let batch = events();
    domain::ports::EventSink::hand_off(&sink, &batch)
        .await
        .unwrap();
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (name, kind, body) = &seen[0];
    assert_eq!(name, "kareo-dock-task");
    assert_eq!(kind.as_deref(), Some("Event"));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "only `events`");
    let back: Vec<ChangeEvent> = serde_json::from_value(v["events"].clone()).unwrap();
    assert_eq!(back, batch);

    // An empty batch is accepted without a call.
    domain::ports::EventSink::hand_off(&sink, &[])
        .await
        .unwrap();
    assert_eq!(st.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn lambda_sink_classifies_refusals() {
    let (endpoint, st) = lambda_endpoint().await;
    let sink = LambdaSink::new(lambda_client(&endpoint), "kareo-dock-task");
    let batch = events();
    for (status, kind, class) in [
        (429, "TooManyRequestsException", "sink_throttled"),
        (413, "RequestTooLargeException", "sink_rejected"),
        (500, "ServiceException", "sink_unavailable"),
        (404, "ResourceNotFoundException", "sink_unavailable"),
    ] {
        *st.answer.lock().unwrap() = Some((status, kind));
        let e = domain::ports::EventSink::hand_off(&sink, &batch)
            .await
            .unwrap_err();
        assert_eq!(e.class, class, "{kind}");
        assert_eq!(e.message, format!("invoke kareo-dock-task: {kind}"));
    }
}

#[tokio::test]
async fn lambda_sink_unreachable_is_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = LambdaSink::new(
        lambda_client(&format!("http://127.0.0.1:{port}")),
        "kareo-dock-task",
    );
    let e = domain::ports::EventSink::hand_off(&sink, &events())
        .await
        .unwrap_err();
    assert_eq!(e.class, "sink_unavailable");
    assert!(
        e.message.starts_with("invoke kareo-dock-task: "),
        "{}",
        e.message
    );
}
