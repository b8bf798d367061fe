//! Task-creation benchmark (issue: task creation).
//!
//! 10,000 change events (new payments, one matching rule each) delivered in batches of 100 —
//! as the pollers invoke the task function — with the embedded ledger:
//!
//! 1. against the Dock simulator over loopback HTTP (OAuth token, name resolution, one POST per
//!    task): events/s end to end;
//! 2. the same batches again: every (event, rule) is a duplicate the ledger avoids;
//! 3. against an in-memory Dock port that answers at once: the CPU time per event spent in the
//!    product's own code (mapping, templates, ledger protocol) outside Dock and DynamoDB calls.
//!
//! CPU time is the delivering thread's own (`/proc/thread-self/schedstat`): the Dock simulator
//! runs on other threads.
//!
//!     cargo run --release -p kareo-dock-bench --bin bench-deliver [-- --events 10000 --batch 100]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dock::DockSecret;
use domain::event::event_id;
use domain::local::{LocalSecrets, LocalStore};
use domain::mapping::TaskSpec;
use domain::ports::Clock;
use domain::source::KareoSource;
use domain::{ChangeEvent, ChangeKind, Family, TenantConfig};
use kareo::{Credentials, KareoError, Record};
use kareo_dock_bench::{arg, thread_cpu_ns};
use tasks::deliver::*;

struct Fixed(DateTime<Utc>);
impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Task creation never reads Kareo for a rule without `patient: true`.
struct NoKareo;
impl KareoSource for NoKareo {
    async fn prepare(&self, _: &Credentials) -> Result<(), KareoError> {
        unreachable!("no Kareo reads in this benchmark")
    }
    async fn window(
        &self,
        _: &Credentials,
        _: &TenantConfig,
        _: Family,
        _: (DateTime<Utc>, DateTime<Utc>),
        _: usize,
    ) -> Result<Vec<Record>, KareoError> {
        unreachable!("no Kareo reads in this benchmark")
    }
    async fn encounter(
        &self,
        _: &Credentials,
        _: &TenantConfig,
        _: &str,
    ) -> Result<Option<Record>, KareoError> {
        unreachable!()
    }
    async fn patient(&self, _: &Credentials, _: i64) -> Result<Option<Record>, KareoError> {
        unreachable!()
    }
    async fn appointment(&self, _: &Credentials, _: i64) -> Result<Option<Record>, KareoError> {
        unreachable!()
    }
    async fn all_patients(
        &self,
        _: &Credentials,
        _: &TenantConfig,
        _: i64,
        _: i32,
    ) -> Result<(Vec<Record>, Option<i64>), KareoError> {
        unreachable!()
    }
}

/// A Dock that answers at once.
#[derive(Default)]
struct InstantDock {
    n: AtomicUsize,
}
impl DockPort for InstantDock {
    async fn resolve(&self, _: &DockSecret, _: &TaskSpec) -> Result<Resolved, DockFailure> {
        Ok(Resolved {
            list: "list-1".into(),
            group: None,
            template: None,
            assignee: None,
        })
    }
    async fn find_task(
        &self,
        _: &DockSecret,
        _: &str,
        _: &str,
    ) -> Result<Option<String>, DockFailure> {
        Ok(None)
    }
    async fn create_task(&self, _: &DockSecret, _: &TaskDraft) -> Result<String, DockFailure> {
        Ok(format!("t{}", self.n.fetch_add(1, Ordering::Relaxed)))
    }
    async fn deploy(
        &self,
        _: &DockSecret,
        _: &Resolved,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<String, DockFailure> {
        Ok("w".into())
    }
    async fn patient(&self, _: &DockSecret, _: &PatientDraft) -> Result<String, DockFailure> {
        Ok("p".into())
    }
}

fn tenant() -> TenantConfig {
    TenantConfig::from_yaml(
        r#"tenant: bench
timezone: America/New_York
start: 2026-09-01T00:00:00Z
kareo: { secret: kareo/bench, practice: Bench Practice }
dock: { secret: dock/bench }
families: { payments: {} }
rules:
  - name: payment-posted
    interface: payments
    on: created
    when:
      PaymentMethod: { in: [Check, Cash, Credit Card] }
    task:
      list: Billing
      group: Claims
      description: "Payment {ID} of {Amount} ({PaymentMethod}) from {PayerName}"
      assignee: billing@acme.example
      due: 2d
      priority: MEDIUM
"#,
        "bench tenant",
    )
    .expect("valid")
}

fn events(n: usize) -> Vec<ChangeEvent> {
    let at: DateTime<Utc> = "2026-10-01T12:00:00Z".parse().unwrap();
    (0..n)
        .map(|i| {
            let mut record = BTreeMap::new();
            record.insert("ID".to_string(), i.to_string());
            record.insert(
                "Amount".to_string(),
                format!("{}.{:02}", 20 + i % 500, i % 100),
            );
            record.insert(
                "PaymentMethod".to_string(),
                ["Check", "Cash", "Credit Card"][i % 3].to_string(),
            );
            record.insert("PayerName".to_string(), format!("Payer {i}"));
            record.insert("PatientID".to_string(), (i % 800).to_string());
            ChangeEvent {
                id: event_id(
                    "bench",
                    Family::Payments,
                    &i.to_string(),
                    at,
                    ChangeKind::Created,
                ),
                tenant: "bench".into(),
                family: Family::Payments,
                record_id: i.to_string(),
                version: at,
                kind: ChangeKind::Created,
                changes: Vec::new(),
                record,
            }
        })
        .collect()
}

struct Row {
    phase: &'static str,
    events: usize,
    secs: f64,
    cpu_ns: u64,
    tasks: usize,
    duplicates: usize,
}

async fn run<D: DockPort>(
    phase: &'static str,
    dock: &D,
    ledger: &LocalStore,
    secrets: &LocalSecrets,
    tenants: &[TenantConfig],
    events: &[ChangeEvent],
    batch: usize,
) -> Row {
    let clock = Fixed("2026-10-01T12:05:00Z".parse().unwrap());
    let delivery = Delivery {
        dock,
        ledger,
        kareo: &NoKareo,
        clock: &clock,
        owner: "bench".into(),
        lease: Duration::from_secs(300),
    };
    let (mut tasks, mut duplicates) = (0, 0);
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    for chunk in events.chunks(batch) {
        let d = deliver_batch(&delivery, secrets, tenants, chunk).await;
        assert!(d.failures.is_empty(), "{:?}", d.failures);
        tasks += d.tasks;
        duplicates += d.duplicates;
    }
    Row {
        phase,
        events: events.len(),
        secs: t.elapsed().as_secs_f64(),
        cpu_ns: thread_cpu_ns() - cpu,
        tasks,
        duplicates,
    }
}

fn main() {
    let n = arg("--events", 10_000);
    let batch = arg("--batch", 100);
    // The Dock simulator on its own threads; the delivery on this one.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dock_sim = sim_rt.block_on(dock_sim::DockSim::start(dock_sim::Seed::default()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tenants = vec![tenant()];
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "kareo/bench".to_string(),
        serde_json::json!({"customer_key": "k", "user": "u", "password": "p"}),
    );
    secrets.insert(
        "dock/bench".to_string(),
        serde_json::to_value(dock_sim.secret()).unwrap(),
    );
    let secrets = LocalSecrets::from_map(secrets);
    let evs = events(n);

    let rows = rt.block_on(async {
        let dock = kareo_dock_bench::dock_tasks(&dock_sim);
        let ledger = LocalStore::memory();
        let first = run(
            "Dock simulator (HTTP)",
            &dock,
            &ledger,
            &secrets,
            &tenants,
            &evs,
            batch,
        )
        .await;
        let again = run(
            "same batches again",
            &dock,
            &ledger,
            &secrets,
            &tenants,
            &evs,
            batch,
        )
        .await;
        let instant = InstantDock::default();
        let ledger = LocalStore::memory();
        let core = run(
            "in-memory Dock port",
            &instant,
            &ledger,
            &secrets,
            &tenants,
            &evs,
            batch,
        )
        .await;
        vec![first, again, core]
    });
    assert_eq!(dock_sim.tasks().len(), n, "exactly one task per event");

    println!("task creation: {n} events in batches of {batch}, embedded ledger");
    println!(
        "{:<24} {:>8} {:>9} {:>11} {:>14} {:>7} {:>10}",
        "phase", "events", "wall s", "events/s", "CPU µs/event", "tasks", "duplicates"
    );
    for r in &rows {
        println!(
            "{:<24} {:>8} {:>9.2} {:>11.0} {:>14.1} {:>7} {:>10}",
            r.phase,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            r.cpu_ns as f64 / 1e3 / r.events as f64,
            r.tasks,
            r.duplicates
        );
    }
    let http = &rows[0];
    let core = &rows[2];
    println!(
        "\nCPU per event outside Dock calls: {:.1} µs ({:.0}% of the {:.1} µs per event with the HTTP client's own work)",
        core.cpu_ns as f64 / 1e3 / n as f64,
        100.0 * core.cpu_ns as f64 / http.cpu_ns as f64,
        http.cpu_ns as f64 / 1e3 / n as f64
    );
    drop(sim_rt);
}
