//! One Kareo account, every function (issue: ten thousand practices, step 2).
//!
//! The ten family polls, the task function's patient reads and a stream of write commands,
//! each with its own Kareo client (its own process on Lambda: its own limiter), against one
//! simulated account whose throttle is the simulator's own reading of Kareo's per-account,
//! per-operation table, shared by every client. Each round is one schedule period: every family
//! starts at a random point of its flexible window (the template's windows, compressed to
//! `--seconds-per-minute` seconds a minute, so collisions are likelier than in production), a
//! few records change first, the first round is every client's cold start (GetThrottles). The
//! share of Kareo calls answered with the throttle text, runs failed, and changes missed.
//!
//! The scenario runs twice in one process: **isolated** (each client spaces its own calls
//! only, as before the shared budget) and **shared** (each client takes turns through one
//! shared budget as the functions do on Lambda: live intervals read once per account; a slot
//! per call of GetPatient in the task function, of every operation in the write function, of
//! GetAppointment in the polls). The shared budget's store operations are counted, and the
//! DynamoDB writes they would be (a reservation is one conditional write, two when the free
//! slot was already taken).
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-account [-- --rounds 4 --seconds-per-minute 10]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use domain::local::{LocalStore, RecordingSink};
use domain::ports::FnClock;
use domain::source::KareoSource;
use domain::TenantConfig;
use kareo::budget::{
    AccountId, BudgetFuture, LiveIntervals, MemoryBudget, SharedBudget, SharedOps, Sharing,
};
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_dock_bench::arg;
use kareo_sim::{KareoSim, SimConfig};
use sync::{Mode, Outcome, PollConfig, Poller};
use writeback::write::command::Command;
use writeback::write::exec::Writer;

/// The template's families and flexible windows (minutes), as tools/gen_template.py has them.
const FAMILIES: [(Family, u64); 10] = [
    (Family::Appointments, 2),
    (Family::Patients, 3),
    (Family::Charges, 4),
    (Family::Encounters, 2),
    (Family::Payments, 3),
    (Family::Transactions, 4),
    (Family::Practices, 2),
    (Family::Providers, 3),
    (Family::ServiceLocations, 4),
    (Family::ProcedureCodes, 2),
];

/// A small deterministic generator (xorshift64*): the same offsets every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shared budget, counting what a DynamoDB store would be asked.
#[derive(Default)]
struct Counting {
    inner: MemoryBudget,
    reserves: AtomicUsize,
    taken: AtomicUsize,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl SharedBudget for Counting {
    fn reserve<'a>(
        &'a self,
        account: &'a AccountId,
        op: &'a str,
        interval_ms: u64,
        now_ms: u64,
    ) -> BudgetFuture<'a, u64> {
        Box::pin(async move {
            let slot = self.inner.reserve(account, op, interval_ms, now_ms).await?;
            self.reserves.fetch_add(1, Ordering::Relaxed);
            if slot > now_ms {
                self.taken.fetch_add(1, Ordering::Relaxed);
            }
            Ok(slot)
        })
    }

    fn live<'a>(&'a self, account: &'a AccountId) -> BudgetFuture<'a, Option<LiveIntervals>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.live(account)
    }

    fn claim_read<'a>(
        &'a self,
        account: &'a AccountId,
        owner: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BudgetFuture<'a, bool> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.claim_read(account, owner, now_ms, until_ms)
    }

    fn store_live<'a>(
        &'a self,
        account: &'a AccountId,
        live: &'a LiveIntervals,
    ) -> BudgetFuture<'a, ()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.store_live(account, live)
    }
}

fn client(sim: &KareoSim, budget: Option<&Arc<Counting>>, ops: SharedOps) -> KareoClient {
    let client = KareoClient::new(ClientConfig {
        endpoint: sim.url(),
        ..ClientConfig::default()
    })
    .unwrap();
    match budget {
        Some(b) => client.with_sharing(Sharing::new(b.clone(), ops)),
        None => client,
    }
}

/// What one scenario measured.
struct Measured {
    calls: usize,
    throttled: usize,
    by_op: std::collections::BTreeMap<String, usize>,
    runs: usize,
    failed: usize,
    reads: usize,
    writes: usize,
    missed: usize,
    changed: usize,
    wall: f64,
    budget: Option<Arc<Counting>>,
}

fn main() {
    let rounds: usize = arg("--rounds", 4);
    let per_minute: f64 = arg("--seconds-per-minute", 10.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let isolated = rt.block_on(scenario(rounds, per_minute, false));
    let shared = rt.block_on(scenario(rounds, per_minute, true));
    report(rounds, per_minute, &isolated, &shared);
}

// Long: the benchmark's one scenario, set up and measured in order.
async fn scenario(rounds: usize, per_minute: f64, sharing: bool) -> Measured {
    let budget = sharing.then(|| Arc::new(Counting::default()));
    let budget = budget.as_ref();
    {
        let sim = KareoSim::start(SimConfig {
            enforce_throttle: true,
            ..SimConfig::default()
        })
        .await;
        let c = sim.config().clone();
        let creds = Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        };
        let families: String = FAMILIES
            .iter()
            .map(|(f, _)| format!("  {}: {{}}\n", f.name()))
            .collect();
        let yaml = format!(
            "tenant: acme\ntimezone: {}\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: {}\ndock:\n  secret: dock/acme\nsafety_lag: 1m\nfamilies:\n{families}",
            c.timezone.name(),
            (sim.now() - chrono::Duration::days(30)).to_rfc3339(),
            c.practice_name.replace('"', "\\\""),
            c.practice_id,
        );
        let tenant = TenantConfig::from_yaml(&yaml, "bench").unwrap();
        let store = LocalStore::memory();
        let sink = RecordingSink::default();
        let clock = FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        });
        let pollers: Vec<(Family, u64, KareoClient, PollConfig)> = FAMILIES
            .iter()
            .map(|(f, w)| {
                let config = PollConfig {
                    owner: format!("poll-{f}"),
                    ..PollConfig::default()
                };
                (
                    *f,
                    *w,
                    client(&sim, budget, SharedOps::Only(vec!["GetAppointment"])),
                    config,
                )
            })
            .collect();
        let task_client = client(&sim, budget, SharedOps::Only(vec!["GetPatient"]));
        let write_client = client(&sim, budget, SharedOps::Every);
        let writer = Writer::new(&write_client, &store, &clock, "write".into());
        let patients: Vec<i64> = sim
            .rows(Family::Patients)
            .iter()
            .filter_map(|r| r["ID"].parse().ok())
            .take(20)
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut changed: BTreeSet<(Family, String)> = BTreeSet::new();
        let (mut runs, mut failed) = (0usize, 0usize);
        let (mut reads, mut writes) = (0usize, 0usize);
        let started = std::time::Instant::now();
        for round in 0..rounds {
            sim.advance(chrono::Duration::minutes(5));
            // A few changes each period: an appointment and a patient.
            for family in [Family::Appointments, Family::Patients] {
                let rows = sim.rows(family);
                let row = &rows[(round * 7 + 3) % rows.len()];
                let id = row[family.id_member()].clone();
                let member = if family == Family::Appointments {
                    "Notes"
                } else {
                    "City"
                };
                sim.update(family, &id, &[(member, &format!("round {round}"))]);
                changed.insert((family, id));
            }
            sim.advance(chrono::Duration::minutes(2));
            let offsets: Vec<Duration> = pollers
                .iter()
                .map(|(_, w, _, _)| Duration::from_secs_f64(rng.unit() * *w as f64 * per_minute))
                .collect();
            let span = offsets.iter().max().copied().unwrap_or_default();
            let polls = pollers
                .iter()
                .zip(&offsets)
                .map(|((f, _, client, config), at)| {
                    let (tenant, store, sink, clock, creds) =
                        (&tenant, &store, &sink, &clock, &creds);
                    async move {
                        tokio::time::sleep(*at).await;
                        let poller = Poller {
                            kareo: client,
                            cursors: store,
                            snapshots: store,
                            sink,
                            clock,
                            config,
                        };
                        poller.run(tenant, creds, *f, Mode::Poll, None).await
                    }
                });
            // The task function's patient reads: one every half second over the period.
            let task_reads = async {
                let mut n = 0;
                let mut at = Duration::ZERO;
                while at <= span {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    at += Duration::from_millis(500);
                    let id = patients[n % patients.len()];
                    let _ = task_client.patient(&creds, id).await;
                    n += 1;
                }
                n
            };
            // Write commands: a patient's city, every three seconds.
            let write_stream = async {
                let mut n = 0;
                let mut at = Duration::ZERO;
                while at <= span {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    at += Duration::from_secs(3);
                    let id = patients[(n + 5) % patients.len()];
                    let json = serde_json::json!({
                        "id": format!("w-{round}-{n}"), "tenant": "acme", "op": "UpdatePatient",
                        "data": {"patient_id": id, "city": format!("City {round}-{n}")}
                    });
                    let cmd = Command::from_json(&json.to_string()).expect("a valid command");
                    let _ = writer.execute(&tenant, &creds, &cmd).await;
                    n += 1;
                }
                n
            };
            let (reports, r, w) = tokio::join!(
                futures_util::future::join_all(polls),
                task_reads,
                write_stream
            );
            reads += r;
            writes += w;
            for rep in &reports {
                runs += 1;
                if matches!(rep.outcome, Outcome::Failed { .. }) {
                    failed += 1;
                }
            }
        }
        let handed: BTreeSet<(Family, String)> = sink
            .events()
            .iter()
            .map(|e| (e.family, e.record_id.clone()))
            .collect();
        let missed = changed.difference(&handed).count();
        let calls = sim.calls();
        let throttled = calls
            .iter()
            .filter(|c| c.outcome == kareo_sim::Outcome::Throttled)
            .count();
        let mut by_op: std::collections::BTreeMap<String, usize> = Default::default();
        for c in calls
            .iter()
            .filter(|c| c.outcome == kareo_sim::Outcome::Throttled)
        {
            *by_op.entry(c.op.clone()).or_default() += 1;
        }
        Measured {
            calls: calls.len(),
            throttled,
            by_op,
            runs,
            failed,
            reads,
            writes,
            missed,
            changed: changed.len(),
            wall: started.elapsed().as_secs_f64(),
            budget: budget.cloned(),
        }
    }
}

fn report(rounds: usize, per_minute: f64, a: &Measured, b: &Measured) {
    println!(
        "One account: ten family polls, the task function's patient reads (one per 0.5 s) and write commands (one UpdatePatient per 3 s), each its own client; {rounds} periods, flexible windows compressed to {per_minute} s a minute; the simulator enforces the guide's per-account intervals across clients. Isolated: each client spaces its own calls; shared: the clients take turns through one shared budget (the state table on Lambda)\n"
    );
    let pct = |m: &Measured| 100.0 * m.throttled as f64 / m.calls.max(1) as f64;
    let ops = |m: &Measured| {
        let v: Vec<String> = m.by_op.iter().map(|(o, n)| format!("{o} {n}")).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("| measure | isolated | shared | target (shared) |");
    println!("|---|---:|---:|---:|");
    println!("| Kareo calls | {} | {} | |", a.calls, b.calls);
    println!(
        "| answered with the throttle text (429) | {} ({:.2}%) | {} ({:.2}%) | ≤ 1% |",
        a.throttled,
        pct(a),
        b.throttled,
        pct(b)
    );
    println!("| 429s by operation | {} | {} | |", ops(a), ops(b));
    println!(
        "| poll runs (failed) | {} ({}) | {} ({}) | 0 failed |",
        a.runs, a.failed, b.runs, b.failed
    );
    println!(
        "| patient reads, write commands | {}, {} | {}, {} | |",
        a.reads, a.writes, b.reads, b.writes
    );
    println!(
        "| changes missed | {} of {} | {} of {} | 0 |",
        a.missed, a.changed, b.missed, b.changed
    );
    if let Some(c) = &b.budget {
        let reserves = c.reserves.load(Ordering::Relaxed);
        let taken = c.taken.load(Ordering::Relaxed);
        let writes = reserves + taken + c.writes.load(Ordering::Relaxed);
        println!(
            "| shared budget: slots reserved (of them already taken, so waited) | – | {reserves} ({taken}) | |"
        );
        println!(
            "| shared budget: DynamoDB writes, reads (a slot: 1 write, 2 when taken; live intervals: claim + store, one read per cold start) | – | {writes}, {} | |",
            c.reads.load(Ordering::Relaxed)
        );
    }
    println!("| wall | {:.0} s | {:.0} s | |", a.wall, b.wall);
}
