//! Change → task latency at the default cadence (issue #17 step 6), on a simulated clock: a
//! practice's appointments change at random instants through a simulated day; the
//! appointments function is scheduled every 5 minutes with EventBridge Scheduler's flexible
//! window (each run starts 0–2 minutes after its tick), polls with the default safety lag and
//! lookback, and the task function creates one task per change in the Dock simulator. The
//! latency of each task is its creation (the pipeline's clock) minus the record's Kareo stamp —
//! what the `ChangeToTaskSeconds` metric reports in production.
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-latency [-- --hours 24 --per-tick 3]

use std::time::Duration;

use domain::local::LocalStore;
use domain::ports::FnClock;
use domain::TenantConfig;
use embedded::Embedded;
use kareo::{ClientConfig, Family};
use kareo_dock_bench::{arg, bench_secrets, dock_tasks, kareo_client};
use kareo_sim::{KareoSim, SimConfig};
use sync::{Mode, Outcome};

/// A small deterministic generator (xorshift): the same run every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// Long: one scenario, set up and run in order, then its table.
fn main() {
    let hours: i64 = arg("--hours", 24);
    let per_tick: u64 = arg("--per-tick", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = KareoSim::start(SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        })
        .await;
        let dock_sim = dock_sim::DockSim::start(dock_sim::Seed::default()).await;
        let c = sim.config().clone();
        let yaml = format!(
            "tenant: bench\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/bench\n  practice: \"{}\"\ndock:\n  secret: dock/bench\nfamilies:\n  appointments: {{}}\nrules:\n  - name: appointment-changed\n    interface: appointments\n    on: updated\n    task: {{ list: Front Desk, description: \"Appointment {{ID}} changed\" }}\n",
            (sim.now() - chrono::Duration::hours(1)).to_rfc3339(),
            c.practice_name
        );
        let tenant = TenantConfig::from_yaml(&yaml, "bench.yaml").unwrap();
        let secrets = bench_secrets(&sim, &dock_sim);
        let kareo = kareo_client(&sim, ClientConfig::default().timeout);
        let dock = dock_tasks(&dock_sim);
        let store = LocalStore::memory();
        let clock = FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        });
        let tenants = [tenant.clone()];
        let pipeline = Embedded {
            kareo: &kareo,
            dock: &dock,
            store: &store,
            secrets: &secrets,
            clock: &clock,
            tenants: &tenants,
            owner: "bench".into(),
            lease: Duration::from_secs(300),
        };
        let sink = pipeline.tasks();
        let ids: Vec<String> = sim
            .rows(Family::Appointments)
            .iter()
            .map(|r| r["ID"].clone())
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let tick = chrono::Duration::minutes(5);
        // The first run reads the seed (not measured: its records changed before the run).
        let r = pipeline
            .poll(&sink, &[Family::Appointments], Mode::Poll, 1)
            .await;
        assert!(r.iter().all(|r| r.outcome == Outcome::Done), "{r:?}");
        let seeded = sink.totals().latencies.len();
        let t0 = sim.now();
        let mut last_run = t0;
        let mut changes = 0usize;
        for k in 1..=(hours * 12) {
            // The schedule's flexible window: the run starts 0–2 minutes after its tick.
            let run_at = t0 + tick * k as i32 + chrono::Duration::seconds(rng.below(120) as i64);
            // The changes since the last run, at random instants, in order.
            let span = (run_at - last_run).num_seconds().max(2) as u64;
            let mut offsets: Vec<i64> = (0..per_tick).map(|_| 1 + rng.below(span - 1) as i64).collect();
            offsets.sort_unstable();
            for o in offsets {
                sim.set_now(last_run + chrono::Duration::seconds(o));
                let id = &ids[rng.below(ids.len() as u64) as usize];
                sim.update(Family::Appointments, id, &[("Notes", &format!("change {changes}"))]);
                changes += 1;
            }
            sim.set_now(run_at);
            let r = pipeline
                .poll(&sink, &[Family::Appointments], Mode::Poll, 1)
                .await;
            assert!(r.iter().all(|r| r.outcome == Outcome::Done), "{r:?}");
            last_run = run_at;
        }
        // A final run past the safety lag picks up the last interval's changes.
        sim.advance(tick);
        pipeline
            .poll(&sink, &[Family::Appointments], Mode::Poll, 1)
            .await;
        let totals = sink.totals();
        let mut lat: Vec<f64> = totals.latencies[seeded..].iter().map(|l| l.2).collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        // Changes to one record between two runs are one task (one version handed off).
        assert!(!lat.is_empty() && lat.len() <= changes, "{} of {changes}", lat.len());
        println!(
            "{hours} simulated hours, {changes} appointment changes at random instants ({per_tick} per 5-minute interval), the appointments function every 5 minutes (a 2-minute flexible window), safety lag {} s; {} tasks\n",
            tenant.safety_lag.as_secs(),
            lat.len()
        );
        println!("| change → task latency | seconds |");
        println!("|---|---:|");
        for (name, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0)] {
            println!("| {name} | {:.0} |", percentile(&lat, p));
        }
        println!("| max | {:.0} |", lat.last().copied().unwrap_or(f64::NAN));
    });
}
