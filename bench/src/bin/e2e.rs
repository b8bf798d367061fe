//! End to end (issue: prove it): N changed payments in the Kareo simulator, one poll of the
//! family in one process — the real client reading Kareo's SOAP, the poller, snapshots and
//! cursor, the mapping, the exactly-once ledger, the Dock client creating each task over HTTP
//! in the Dock simulator. Events/s, and CPU per event of the product's own thread (the two
//! simulators run on their own threads, not counted), with the memory high-water mark.
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-e2e [-- --records 100000]

use std::time::{Duration, Instant};

use domain::local::LocalStore;
use domain::ports::FnClock;
use domain::TenantConfig;
use embedded::Embedded;
use kareo::{Credentials, Family};
use kareo_dock_bench::{
    arg, bench_secrets, dock_tasks, kareo_client, mib, peak_rss_bytes, thread_cpu_ns,
};
use kareo_sim::{KareoSim, SimConfig};
use sync::{Mode, Outcome};

fn main() {
    let n: usize = arg("--records", 100_000);
    // The simulators on their own threads.
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (kareo_sim, dock_sim) = sims.block_on(async {
        let k = KareoSim::start(SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        })
        .await;
        let d = dock_sim::DockSim::start(dock_sim::Seed::default()).await;
        (k, d)
    });
    let c = kareo_sim.config().clone();
    let template = kareo_sim.rows(Family::Payments)[0].clone();
    let start = kareo_sim.now() - chrono::Duration::days(1);
    // Spread over time as a busy practice's changes are (10 a second): Kareo's filter is by
    // instant, and a window is split only down to the family's smallest (1,000 records or more
    // in it fail the run, as a response Kareo may have cut would).
    for i in 0..n {
        if i % 10 == 0 {
            kareo_sim.advance(chrono::Duration::seconds(1));
        }
        let mut row = template.clone();
        row.remove(Family::Payments.id_member());
        kareo_sim.insert(Family::Payments, row);
    }
    let existing = kareo_sim.rows(Family::Payments).len();
    kareo_sim.advance(chrono::Duration::minutes(5));

    let yaml = format!(
        "tenant: bench\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/bench\n  practice: \"{}\"\ndock:\n  secret: dock/bench\nfamilies:\n  payments: {{}}\nrules:\n  - name: payment-posted\n    interface: payments\n    on: any\n    task: {{ list: Billing, description: \"Payment {{ID}} of {{Amount}}\" }}\n",
        start.to_rfc3339(),
        c.practice_name
    );
    let tenant = TenantConfig::from_yaml(&yaml, "bench.yaml").unwrap();
    let secrets = bench_secrets(&kareo_sim, &dock_sim);
    let creds = Credentials {
        customer_key: c.customer_key.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (report, totals, wall, cpu) = rt.block_on(async {
        let kareo = kareo_client(&kareo_sim, Duration::from_secs(120));
        let dock = dock_tasks(&dock_sim);
        let store = LocalStore::memory();
        let clock = FnClock::new({
            let sim = kareo_sim.clone();
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
        let config = pipeline.poll_config();
        let poller = pipeline.poller(&sink, &config);
        let cpu = thread_cpu_ns();
        let t = Instant::now();
        let report = poller
            .run(&tenant, &creds, Family::Payments, Mode::Poll, None)
            .await;
        (report, sink.totals(), t.elapsed(), thread_cpu_ns() - cpu)
    });
    assert_eq!(report.outcome, Outcome::Done, "{report:?}");
    // The added records, and the seed's that fall after the tenant's start.
    assert!(
        report.events >= n && report.events <= existing,
        "{report:?}"
    );
    assert_eq!(totals.tasks, report.events, "every event became one task");
    assert_eq!(dock_sim.tasks().len(), report.events);
    let events = report.events as f64;
    println!("{} changed payments ({n} added to the simulator's seed), one poll, one process; tasks created over HTTP in the Dock simulator\n", report.events);
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| wall | {:.1} s |", wall.as_secs_f64());
    println!(
        "| events/s end to end | {:.0} |",
        events / wall.as_secs_f64()
    );
    println!(
        "| CPU per event, the product's thread | {:.1} µs |",
        cpu as f64 / 1e3 / events
    );
    println!(
        "| CPU share of the wall time, the product's thread | {:.0}% |",
        cpu as f64 / 1e9 / wall.as_secs_f64() * 100.0
    );
    println!(
        "| windows read (split when ≥ 1,000 records) | {} ({} splits) |",
        report.windows, report.splits
    );
    println!(
        "| peak RSS of the process (both simulators included) | {:.0} MiB |",
        mib(peak_rss_bytes())
    );
}
