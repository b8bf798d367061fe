//! Fan-out benchmark (issue: ten thousand practices).
//!
//! 10,000 simulated tenants (each its own Kareo account, so each its own throttle) × one
//! family, 200 ms of latency on every Kareo answer, polled as the poll function runs a
//! scheduled period: the coordinator claims the period, dispatches its shards, polls the first;
//! each dispatched shard then runs as its own simulated invocation (its own request id and
//! 10-minute budget), all concurrently in this one process, over the embedded stores. Two
//! periods: the first hands off one record per tenant; in the second (5 minutes later) nothing
//! changed and 1% of Kareo's answers are its throttle text (retried after the interval).
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-fanout [-- --tenants 10000 --latency-ms 200]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::local::{LocalSecrets, LocalStore, RecordingSink};
use domain::ports::{FnClock, ShardDispatch, SinkError};
use domain::TenantConfig;
use kareo::{ClientConfig, Family, KareoClient};
use kareo_dock_bench::{arg, mib, peak_rss_bytes, run_child};
use kareo_sim::{Fault, FaultRule, KareoSim, SimConfig};
use sync::fanout::FanOut;
use sync::run::{invoke, Invoked, Payload};
use sync::{Outcome, PollConfig, Poller};

/// The shards a coordinator dispatched, as Lambda would queue them.
#[derive(Default)]
struct Queue(Mutex<Vec<serde_json::Value>>);

impl ShardDispatch for Queue {
    async fn dispatch(&self, payload: &serde_json::Value) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(payload.clone());
        Ok(())
    }
}

struct Period {
    wall: Duration,
    shard_walls: Vec<(usize, Duration)>,
    done: usize,
    failed: usize,
    events: usize,
}

#[allow(clippy::too_many_arguments)]
async fn period(
    client: &KareoClient,
    store: &LocalStore,
    sink: &RecordingSink,
    clock: &FnClock,
    secrets: &LocalSecrets,
    tenants: &[TenantConfig],
    family: Family,
    fan: FanOut,
    concurrency: usize,
    name: &str,
    scheduled: chrono::DateTime<chrono::Utc>,
) -> Period {
    let queue = Queue::default();
    let run = |owner: String, payload: Payload| {
        let queue = &queue;
        async move {
            let config = PollConfig {
                owner,
                ..PollConfig::default()
            };
            let poller = Poller {
                kareo: client,
                cursors: store,
                snapshots: store,
                sink,
                clock,
                config: &config,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            let started = Instant::now();
            let out = invoke(
                &poller,
                secrets,
                store,
                store,
                queue,
                tenants,
                family,
                &payload,
                fan,
                concurrency,
                Some(deadline),
            )
            .await
            .expect("payload");
            (out, started.elapsed())
        }
    };
    let started = Instant::now();
    let coordinator = Payload {
        scheduled: Some(scheduled),
        ..Payload::default()
    };
    // As on Lambda, the shards start as soon as the coordinator has dispatched them (before
    // it polls its own): the bench knows how many to wait for from the same plan.
    let enabled: Vec<&TenantConfig> = tenants.iter().collect();
    let expected = sync::fanout::plan(&enabled, fan).len().saturating_sub(1);
    let shards = async {
        let payloads = loop {
            if queue.0.lock().unwrap().len() >= expected {
                break std::mem::take(&mut *queue.0.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let runs = payloads.into_iter().enumerate().map(|(i, v)| {
            let p: Payload = serde_json::from_value(v).unwrap();
            run(format!("{name}-shard-{i}"), p)
        });
        futures_util::future::join_all(runs).await
    };
    let (first, rest) = tokio::join!(run(format!("{name}-coordinator"), coordinator), shards);
    let wall = started.elapsed();
    let mut all: Vec<(Invoked, Duration)> = vec![first];
    all.extend(rest);
    let reports = all.iter().flat_map(|(i, _)| i.reports.iter());
    let (mut done, mut failed, mut events) = (0, 0, 0);
    for r in reports {
        match r.outcome {
            Outcome::Done => done += 1,
            Outcome::Failed { .. } => failed += 1,
            _ => {}
        }
        events += r.events;
    }
    Period {
        wall,
        shard_walls: all.iter().map(|(i, w)| (i.reports.len(), *w)).collect(),
        done,
        failed,
        events,
    }
}

/// Tenant `i` of the benchmark: its own Kareo account (`account-<i>`), the simulator's practice.
fn deployment(
    n: usize,
    now: chrono::DateTime<chrono::Utc>,
    family: Family,
) -> (Vec<TenantConfig>, LocalSecrets) {
    let c = SimConfig::default();
    let mut secrets = BTreeMap::new();
    let mut tenants = Vec::new();
    for i in 0..n {
        let id = format!("t{i:05}");
        secrets.insert(
            format!("kareo/{id}"),
            serde_json::json!({"customer_key": format!("account-{i:05}"), "user": c.user, "password": c.password}),
        );
        let yaml = format!(
            "tenant: {id}\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/{id}\n  practice: \"{}\"\ndock:\n  secret: dock/{id}\nfamilies:\n  {}: {{}}\n",
            (now - chrono::Duration::days(30)).to_rfc3339(),
            c.practice_name,
            family.name()
        );
        tenants.push(TenantConfig::from_yaml(&yaml, "bench").unwrap());
    }
    (tenants, LocalSecrets::from_map(secrets))
}

/// One shard invocation alone in this (child) process, against the parent's simulator: the
/// largest shard's first poll, as one Lambda invocation holds it. Prints its peak RSS.
fn child(url: &str, n: usize, now: chrono::DateTime<chrono::Utc>, fan: FanOut, concurrency: usize) {
    let family = Family::Practices;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tenants, secrets) = deployment(n, now, family);
        let enabled: Vec<&TenantConfig> = tenants.iter().collect();
        let shard = sync::fanout::plan(&enabled, fan)
            .into_iter()
            .max_by_key(|s| s.tenants.len())
            .expect("a shard");
        let size = shard.tenants.len();
        let client = KareoClient::new(ClientConfig {
            endpoint: url.to_string(),
            ..ClientConfig::default()
        })
        .unwrap();
        let store = LocalStore::memory();
        let sink = RecordingSink::default();
        let clock = FnClock::new(move || now);
        let config = PollConfig {
            owner: "child".into(),
            ..PollConfig::default()
        };
        let poller = Poller { kareo: &client, cursors: &store, snapshots: &store, sink: &sink, clock: &clock, config: &config };
        let payload = Payload { shard: Some(shard), ..Payload::default() };
        let started = Instant::now();
        let out = invoke(&poller, &secrets, &store, &store, &Queue::default(), &tenants, family, &payload, fan, concurrency, None)
            .await
            .expect("payload");
        let done = out.reports.iter().filter(|r| r.outcome == Outcome::Done).count();
        println!(
            "{}",
            serde_json::json!({"tenants": size, "done": done, "secs": started.elapsed().as_secs_f64(), "peak_rss": peak_rss_bytes()})
        );
    });
}

fn main() {
    let tenants_n: usize = arg("--tenants", 10_000);
    let latency = Duration::from_millis(arg("--latency-ms", 200u64));
    let concurrency: usize = arg("--concurrency", 8);
    let fan = FanOut {
        shard_size: arg("--shard-size", 200),
        max_shards: arg("--max-shards", 10),
    };
    let family = Family::Practices;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let now = chrono::DateTime::parse_from_rfc3339(&args[i + 2])
            .unwrap()
            .to_utc();
        return child(&args[i + 1], tenants_n, now, fan, concurrency);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys: Vec<String> = (0..tenants_n).map(|i| format!("account-{i:05}")).collect();
        let sim = KareoSim::start(SimConfig {
            enforce_throttle: false,
            other_customer_keys: keys.clone(),
            ..SimConfig::default()
        })
        .await;
        sim.set_latency(latency);
        let (tenants, secrets) = deployment(tenants_n, sim.now(), family);
        let client = KareoClient::new(ClientConfig {
            endpoint: sim.url(),
            ..ClientConfig::default()
        })
        .unwrap();
        let store = LocalStore::memory();
        let sink = RecordingSink::default();
        let clock = FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        });
        let go = |name: &'static str, at| {
            period(
                &client, &store, &sink, &clock, &secrets, &tenants, family, fan, concurrency,
                name, at,
            )
        };
        let first = go("p1", sim.now()).await;
        sim.advance(chrono::Duration::minutes(5));
        sim.inject(FaultRule::new(Fault::Throttle).on("GetPractices").always().rate(0.01));
        sim.reset_calls();
        let second = go("p2", sim.now()).await;
        let throttled = sim
            .calls()
            .iter()
            .filter(|c| c.outcome == kareo_sim::Outcome::Throttled)
            .count();
        let kareo_calls = sim.calls().len();
        let rss = peak_rss_bytes();
        // One invocation's own peak: the largest shard, alone in a child process.
        sim.clear_faults();
        let (n_s, now_s) = (tenants_n.to_string(), sim.now().to_rfc3339());
        let (size_s, max_s, conc_s) = (fan.shard_size.to_string(), fan.max_shards.to_string(), concurrency.to_string());
        let url = sim.url();
        let one = tokio::task::spawn_blocking(move || {
            run_child(&["--tenants", &n_s, "--shard-size", &size_s, "--max-shards", &max_s, "--concurrency", &conc_s, "--child", &url, &now_s])
        })
        .await
        .unwrap();

        println!(
            "{tenants_n} tenants × {} with {} ms Kareo latency; shards of up to {} (at most {}), {} tenants at a time per invocation; every invocation simulated in this one process (2 worker threads)\n",
            family.name(),
            latency.as_millis(),
            fan.shard_size,
            fan.max_shards,
            concurrency
        );
        println!("| measure | period 1 (one new record per tenant) | period 2 (nothing new, 1% throttled) | target |");
        println!("|---|---:|---:|---:|");
        let row = |m: &str, a: String, b: String, t: &str| println!("| {m} | {a} | {b} | {t} |");
        row("invocations (coordinator + shards)", first.shard_walls.len().to_string(), second.shard_walls.len().to_string(), "");
        row("tenants polled (done / failed)", format!("{} / {}", first.done, first.failed), format!("{} / {}", second.done, second.failed), &format!("{tenants_n} / 0"));
        row("events handed off", first.events.to_string(), second.events.to_string(), "");
        row("period wall, coordinator start → last shard done", format!("{:.1} s", first.wall.as_secs_f64()), format!("{:.1} s", second.wall.as_secs_f64()), "≤ 300 s");
        let slowest = |p: &Period| p.shard_walls.iter().map(|(_, w)| *w).max().unwrap_or_default();
        row("slowest invocation", format!("{:.1} s", slowest(&first).as_secs_f64()), format!("{:.1} s", slowest(&second).as_secs_f64()), "≤ 600 s (timeout)");
        let per_shard = |p: &Period| {
            let (n, w) = p.shard_walls.iter().fold((0, Duration::ZERO), |(n, w), (k, d)| (n + k, w.max(*d)));
            n as f64 / w.as_secs_f64().max(1e-9) / p.shard_walls.len() as f64
        };
        row("tenants per second per invocation", format!("{:.0}", per_shard(&first)), format!("{:.0}", per_shard(&second)), "");
        row("Kareo calls answered with the throttle text", "–".into(), format!("{throttled} of {kareo_calls}"), "");
        row("peak RSS of this process (every invocation and the simulator)", format!("{:.1} MiB", mib(rss)), "".into(), "");
        row(
            &format!("peak RSS of one invocation: the largest shard ({} tenants, first poll) alone in a child process", one["tenants"]),
            format!("{:.1} MiB ({:.1} s)", mib(one["peak_rss"].as_u64().unwrap()), one["secs"].as_f64().unwrap()),
            "".into(),
            "≤ 128 MiB",
        );
        // On paper: 100,000 tenants at the second period's per-invocation rate.
        let rate = per_shard(&second);
        // Half the period, so that a slow Kareo day still fits.
        let need = (100_000.0 / (rate * 150.0)).ceil();
        println!(
            "\n100,000 tenants on paper: at {rate:.0} tenants per second per invocation (period 2: {concurrency} at a time, each waiting {} ms on Kareo), a period inside half its 300 s needs {need:.0} concurrent invocations — `PollConcurrency` = {need:.0}, shards of {:.0} — or fewer with `KAREO_DOCK_CONCURRENCY` raised (the rate is latency-bound: {concurrency} ÷ {:.1} s = {:.0} per second).",
            latency.as_millis(),
            (100_000.0 / need).ceil(),
            latency.as_secs_f64(),
            concurrency as f64 / latency.as_secs_f64()
        );
    });
}
