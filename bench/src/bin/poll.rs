//! Polling benchmark (issue: delta polling).
//!
//! 1,000 simulated tenants (each its own Kareo account, so each its own throttle) × one family,
//! with 200 ms of latency injected into every Kareo answer, polled in one process with the
//! embedded stores: wall time and peak RSS. Then, after the lookback has passed with no change,
//! an empty poll of every tenant (its stored cursor is old: it is moved), and another five
//! minutes later (nothing written): remote calls per (tenant, family) — Kareo calls counted by
//! the simulator, store calls by a counting wrapper (a batched read of N cursors counted as
//! DynamoDB's ⌈N/100⌉ calls).
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-poll [-- --tenants 1000 --latency-ms 200 --concurrency 64]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::local::{LocalSecrets, LocalStore, RecordingSink};
use domain::ports::*;
use domain::TenantConfig;
use kareo::{ClientConfig, Family, KareoClient};
use kareo_dock_bench::{arg, mib, peak_rss_bytes};
use kareo_sim::{KareoSim, SimConfig};
use sync::run::poll_tenants;
use sync::{Mode, Outcome, PollConfig, Poller};

/// Counts every store call (each is one remote call with DynamoDB).
#[derive(Default)]
struct Counting {
    inner: LocalStore,
    calls: AtomicUsize,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl CursorStore for Counting {
    async fn load(&self, t: &str, f: Family) -> Result<Option<Cursor>, StoreError> {
        self.tick();
        self.inner.load(t, f).await
    }
    async fn acquire(
        &self,
        t: &str,
        f: Family,
        o: &str,
        n: DateTime<Utc>,
        u: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.tick();
        self.inner.acquire(t, f, o, n, u).await
    }
    async fn load_many(
        &self,
        t: &[&str],
        f: Family,
    ) -> Result<std::collections::HashMap<String, Cursor>, StoreError> {
        // DynamoDB's BatchGetItem reads at most 100 keys a call.
        self.calls
            .fetch_add(t.len().div_ceil(100), Ordering::Relaxed);
        self.inner.load_many(t, f).await
    }
    async fn acquire_seen(
        &self,
        t: &str,
        f: Family,
        c: Option<&Cursor>,
        o: &str,
        n: DateTime<Utc>,
        u: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.tick();
        self.inner.acquire_seen(t, f, c, o, n, u).await
    }
    async fn advance(
        &self,
        t: &str,
        f: Family,
        c: Option<&Cursor>,
        p: DateTime<Utc>,
        s: DateTime<Utc>,
    ) -> Result<Cursor, StoreError> {
        self.tick();
        self.inner.advance(t, f, c, p, s).await
    }
    async fn checkpoint(
        &self,
        l: &mut Lease,
        p: DateTime<Utc>,
        h: Option<DateTime<Utc>>,
        s: DateTime<Utc>,
        r: bool,
    ) -> Result<(), StoreError> {
        self.tick();
        self.inner.checkpoint(l, p, h, s, r).await
    }
    async fn release(&self, l: &Lease) -> Result<(), StoreError> {
        self.tick();
        CursorStore::release(&self.inner, l).await
    }
    async fn fail(&self, l: &Lease, e: CursorError) -> Result<(), StoreError> {
        self.tick();
        self.inner.fail(l, e).await
    }
    async fn reset(&self, t: &str, f: Family, p: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.tick();
        self.inner.reset(t, f, p).await
    }
    async fn list(&self) -> Result<Vec<(String, Family, Cursor)>, StoreError> {
        self.tick();
        self.inner.list().await
    }
}

impl BreakerStore for Counting {
    async fn breakers(&self) -> Result<Vec<(String, Breaker)>, StoreError> {
        self.tick();
        self.inner.breakers().await
    }
    async fn breaker(&self, a: &str) -> Result<Option<Breaker>, StoreError> {
        self.tick();
        self.inner.breaker(a).await
    }
    async fn open_breaker(&self, a: &str, b: &Breaker) -> Result<(), StoreError> {
        self.tick();
        self.inner.open_breaker(a, b).await
    }
    async fn close_breaker(&self, a: &str) -> Result<(), StoreError> {
        self.tick();
        self.inner.close_breaker(a).await
    }
}

impl SnapshotStore for Counting {
    async fn get(
        &self,
        t: &str,
        f: Family,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Snapshot>, StoreError> {
        self.tick();
        SnapshotStore::get(&self.inner, t, f, ids).await
    }
    async fn put(
        &self,
        t: &str,
        f: Family,
        items: Vec<(String, Snapshot)>,
    ) -> Result<(), StoreError> {
        self.tick();
        SnapshotStore::put(&self.inner, t, f, items).await
    }
    async fn upcoming(
        &self,
        t: &str,
        f: Family,
        a: DateTime<Utc>,
    ) -> Result<Vec<(String, Snapshot)>, StoreError> {
        self.tick();
        self.inner.upcoming(t, f, a).await
    }
}

fn main() {
    let tenants_n: usize = arg("--tenants", 1000);
    let latency = Duration::from_millis(arg("--latency-ms", 200u64));
    let concurrency: usize = arg("--concurrency", 64);
    let family = Family::Practices;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys: Vec<String> = (0..tenants_n).map(|i| format!("account-{i:04}")).collect();
        let sim = KareoSim::start(SimConfig { enforce_throttle: false, other_customer_keys: keys.clone(), ..SimConfig::default() }).await;
        sim.set_latency(latency);
        let c = sim.config().clone();
        let mut secrets = BTreeMap::new();
        let mut tenants = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let id = format!("t{i:04}");
            secrets.insert(format!("kareo/{id}"), serde_json::json!({"customer_key": key, "user": c.user, "password": c.password}));
            let yaml = format!(
                "tenant: {id}\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/{id}\n  practice: \"{}\"\ndock:\n  secret: dock/{id}\nfamilies:\n  {}: {{}}\n",
                (sim.now() - chrono::Duration::days(30)).to_rfc3339(), c.practice_name, family.name()
            );
            tenants.push(TenantConfig::from_yaml(&yaml, "bench").unwrap());
        }
        let secrets = LocalSecrets::from_map(secrets);
        let client = KareoClient::new(ClientConfig { endpoint: sim.url(), ..ClientConfig::default() }).unwrap();
        let store = Counting::default();
        let sink = RecordingSink::default();
        let clock = FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        });
        let config = PollConfig { owner: "bench".into(), ..PollConfig::default() };
        let poller = Poller { kareo: &client, cursors: &store, snapshots: &store, sink: &sink, clock: &clock, config: &config };

        let t = Instant::now();
        let reports = poll_tenants(&poller, &secrets, &store, &tenants, family, None, Mode::Poll, concurrency, None).await;
        let first = t.elapsed();
        let done = reports.iter().filter(|r| r.outcome == Outcome::Done).count();
        assert_eq!(done, tenants_n, "every tenant polled");
        let rss = peak_rss_bytes();

        // After a window's reach (back to the start of the day before the lookback and the
        // clock allowance) has passed with no change: every window is empty.
        sim.advance(chrono::Duration::days(2));
        sim.reset_calls();
        store.calls.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let reports = poll_tenants(&poller, &secrets, &store, &tenants, family, None, Mode::Poll, concurrency, None).await;
        let second = t.elapsed();
        assert!(reports.iter().all(|r| r.outcome == Outcome::Done && r.records == 0));
        let kareo_calls = sim.calls().len();
        let store_calls = store.calls.load(Ordering::Relaxed);
        // Five minutes later, still nothing: the stored cursor is recent, so no write.
        sim.advance(chrono::Duration::minutes(5));
        sim.reset_calls();
        store.calls.store(0, Ordering::Relaxed);
        let reports = poll_tenants(&poller, &secrets, &store, &tenants, family, None, Mode::Poll, concurrency, None).await;
        assert!(reports.iter().all(|r| r.outcome == Outcome::Done && r.records == 0));
        let (kareo_quiet, store_quiet) = (sim.calls().len(), store.calls.load(Ordering::Relaxed));

        println!("{tenants_n} tenants × {} with {} ms Kareo latency, concurrency {concurrency}, one process\n", family.name(), latency.as_millis());
        println!("| measure | value | target |");
        println!("|---|---:|---:|");
        println!("| first poll (1 record per tenant), wall | {:.1} s | ≤ 60 s |", first.as_secs_f64());
        println!("| empty poll, wall | {:.1} s | |", second.as_secs_f64());
        println!("| peak RSS | {:.1} MiB | ≤ 128 MiB |", mib(rss.max(peak_rss_bytes())));
        let per = |k: usize, s: usize| format!("{:.2} ({:.2} Kareo + {:.3} store)", (k + s) as f64 / tenants_n as f64, k as f64 / tenants_n as f64, s as f64 / tenants_n as f64);
        println!("| remote calls per empty poll of one (tenant, family), stored cursor an hour old or more (it is moved) | {} | ≤ 2 |", per(kareo_calls, store_calls));
        println!("| remote calls per empty poll, 5 minutes after the last stored success (nothing written) | {} | ≤ 2 |", per(kareo_quiet, store_quiet));
        let emf = sync::metrics::poll_run(&reports[0], sim.now()).line(sim.now()).len();
        println!("| log bytes per run: the EMF metrics line (and about 300 bytes of the run's own log line) | {emf} | |");
        println!("\n(events handed off in the first poll: {})", sink.events().len());
    });
}
