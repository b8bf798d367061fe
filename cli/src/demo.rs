//! `kareo-dock demo`: the product on embedded defaults, no account needed.
//!
//! Starts the Kareo and Dock simulators on loopback, configures the sample practice of
//! `examples/demo-practice.yaml` (every family enabled, one rule per kind of follow-up), polls
//! every family through the real client and poller, creates the Dock tasks and workflows its
//! mapping asks for, changes some records in Kareo (a cancelled appointment, a new patient, a
//! patient's phone, an amended payment), polls again, delivers the second batch a second time
//! (as a Lambda retry would) and prints what happened: events per family, tasks created,
//! duplicates avoided. Only ids, counts and names of rules and lists are printed — never what a
//! record holds.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ::sync::{Mode, Report};
use domain::local::{LocalSecrets, LocalStore, RecordingSink, Tee};
use domain::ports::FnClock;
use domain::{ChangeEvent, TenantConfig};
use embedded::Embedded;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use tasks::deliver::{deliver_batch, Delivered};
use tasks::dock::DockTasks;

/// The sample practice's config (its `start` is moved to 31 days before the simulator's now).
pub const SAMPLE_TENANT: &str = include_str!("../../examples/demo-practice.yaml");

/// The sample tenant against this simulator.
pub fn sample_tenant(sim: &KareoSim) -> TenantConfig {
    let start = (sim.now() - chrono::Duration::days(31)).to_rfc3339();
    let yaml: String = SAMPLE_TENANT
        .lines()
        .map(|l| {
            if l.starts_with("start:") {
                format!("start: {start}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    TenantConfig::from_yaml(&yaml, "examples/demo-practice.yaml")
        .expect("the sample tenant is valid")
}

/// The prefix of every canary value `--phi-canary` plants.
pub const CANARY: &str = "PHICANARY";

/// Puts a canary value in every text field of every patient, and in every patient field of
/// the other families' records (names, addresses, phones, emails…): a leak of any of them into
/// a log line, a metric or the printed summary is then a plain substring match.
fn plant_canaries(sim: &KareoSim) {
    let mut n = 0usize;
    let is_text = |k: &str, v: &str| {
        !(k.ends_with("ID")
            || k.ends_with("Id")
            || k.contains("Date")
            || v.parse::<f64>().is_ok()
            || v.eq_ignore_ascii_case("true")
            || v.eq_ignore_ascii_case("false"))
    };
    for family in Family::ALL {
        for row in sim.rows(family) {
            let id = row.get(family.id_member()).cloned().unwrap_or_default();
            let mut changes: Vec<(String, String)> = Vec::new();
            for (k, v) in &row {
                let phi = family == Family::Patients || k.contains("Patient");
                if phi && is_text(k, v) {
                    n += 1;
                    changes.push((k.clone(), format!("{CANARY}{n:05}")));
                }
            }
            let refs: Vec<(&str, &str)> = changes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if !refs.is_empty() {
                sim.update(family, &id, &refs);
            }
        }
    }
    println!("planted {n} canary values in patient fields\n");
}

/// Runs the demo.
// Long: the demo is a script: each step prints what it did.
pub fn run(phi_canary: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let started = Instant::now();
        let sim = KareoSim::start(SimConfig::default()).await;
        let dock_sim = dock_sim::DockSim::start(dock_sim::Seed::default()).await;
        let cfg = sim.config().clone();
        let creds = Credentials {
            customer_key: cfg.customer_key.clone(),
            user: cfg.user.clone(),
            password: cfg.password.clone(),
        };
        let client = KareoClient::new(ClientConfig {
            endpoint: sim.url(),
            ..ClientConfig::default()
        })?;
        let dock = DockTasks::new(dock::DockClient::new(dock::DockConfig {
            api_url: dock_sim.api_url(),
            auth_url: dock_sim.auth_url(),
            ..dock::DockConfig::default()
        })?);
        if phi_canary {
            plant_canaries(&sim);
        }
        let tenant = sample_tenant(&sim);
        let mut secrets = BTreeMap::new();
        secrets.insert(
            tenant.kareo.secret.clone(),
            serde_json::json!({"customer_key": cfg.customer_key, "user": cfg.user, "password": cfg.password}),
        );
        secrets.insert(tenant.dock.secret.clone(), serde_json::to_value(dock_sim.secret())?);
        let secrets = LocalSecrets::from_map(secrets);
        println!("Kareo simulator: {}   Dock simulator: {}", sim.url(), dock_sim.api_url());
        println!(
            "tenant {} ({} families, {} rules; examples/demo-practice.yaml)",
            tenant.tenant,
            tenant.families.len(),
            tenant.mapping.rules.len()
        );
        let customer = client.customer_id(&creds).await?;
        let throttles = client.refresh_throttles(&creds).await?;
        println!("Kareo credentials ok (customer {}); {throttles} live throttle intervals read from GetThrottles\n", customer.unwrap_or_default());

        let store = LocalStore::memory();
        let clock = FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        });
        let recording = RecordingSink::default();
        let tenants = [tenant.clone()];
        let pipeline = Embedded {
            kareo: &client,
            dock: &dock,
            store: &store,
            secrets: &secrets,
            clock: &clock,
            tenants: &tenants,
            owner: "demo".into(),
            lease: Duration::from_secs(300),
        };
        let tasks = pipeline.tasks();
        let sink = Tee(&recording, &tasks);

        let first = pipeline.poll(&sink, &Family::ALL, Mode::Poll, 1).await;
        print_reports("first poll (backfill from the tenant's start, 31 days)", &first);
        crate::obs::poll_runs(&first);
        let after_first = tasks.totals();
        print_delivered("task creation", &after_first, &Delivered::default());
        print_dock(&dock_sim, 0, 0);
        let (tasks_before, flows_before) = (dock_sim.tasks().len(), dock_sim.workflows().len());

        // Changes in Kareo between two polls.
        sim.advance(chrono::Duration::minutes(10));
        let appt = sim.rows(Family::Appointments)
            .iter()
            .find(|r| r.get("ConfirmationStatus").map(String::as_str) != Some("Cancelled"))
            .map(|r| r["ID"].clone())
            .unwrap_or_default();
        sim.update(Family::Appointments, &appt, &[("ConfirmationStatus", "Cancelled")]);
        let pat = sim.rows(Family::Patients)[1]["ID"].clone();
        sim.update(Family::Patients, &pat, &[("MobilePhone", "555-0199")]);
        let mut new_patient = sim.rows(Family::Patients)[0].clone();
        new_patient.remove("ID");
        new_patient.insert("FirstName".into(), "Zoë".into());
        let new_id = sim.insert(Family::Patients, new_patient);
        let pay = sim.rows(Family::Payments)[0]["ID"].clone();
        sim.update(Family::Payments, &pay, &[("Amount", "125.50")]);
        sim.advance(chrono::Duration::minutes(5));
        println!("\nchanged in Kareo: appointment {appt} cancelled; patient {pat} new mobile phone; patient {new_id} registered; payment {pay} amended\n");

        let before = recording.events().len();
        let second = pipeline.poll(&sink, &Family::ALL, Mode::Poll, 1).await;
        print_reports("second poll (windows since the cursors, with each family's lookback)", &second);
        crate::obs::poll_runs(&second);
        let new_events: Vec<ChangeEvent> = recording.events()[before..].to_vec();
        for e in &new_events {
            let changed: Vec<&str> = e.changes.iter().map(|c| c.field.as_str()).collect();
            println!("  event {} {:<8} {:<12} record {:<6} changed [{}]", &e.id[..12], e.kind.name(), e.family.name(), e.record_id, changed.join(", "));
        }
        let after_second = tasks.totals();
        print_delivered("task creation", &after_second, &after_first);
        print_dock(&dock_sim, tasks_before, flows_before);

        // A Lambda retry or a duplicate invocation delivers the same batch again.
        let (tasks_now, flows_now) = (dock_sim.tasks().len(), dock_sim.workflows().len());
        let again = deliver_batch(&tasks.delivery, &secrets, std::slice::from_ref(&tenant), &new_events).await;
        println!(
            "\nthe second batch delivered again (as a Lambda retry would): {} matches, {} duplicates avoided, {} new tasks, {} new workflows",
            again.matched,
            again.duplicates,
            dock_sim.tasks().len() - tasks_now,
            dock_sim.workflows().len() - flows_now
        );
        crate::obs::delivered(&tasks.totals());
        crate::obs::delivered(&again);
        let dup: usize = second.iter().map(|r| r.duplicates).sum();
        println!("{dup} records re-read in the lookback overlap were recognised and not handed off again");
        let dead = tasks.dead_letters();
        if !dead.is_empty() {
            println!("{} (event, rule) pairs failed permanently (dead letters):", dead.len());
            for f in &dead {
                println!("  {} / {}: {} — {}", &f.event[..12.min(f.event.len())], f.rule, f.class, f.reason);
            }
        }
        println!(
            "{} Kareo calls, {} Dock calls, {:.1}s in all (Kareo calls spaced by its per-operation throttle)",
            sim.calls().len(),
            dock_sim.calls().len(),
            started.elapsed().as_secs_f64()
        );
        Ok(if dead.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(4) })
    })
}

fn print_reports(title: &str, reports: &[Report]) {
    println!("{title}:");
    println!(
        "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>10}  outcome",
        "family", "records", "created", "updated", "deleted", "duplicates"
    );
    for r in reports {
        println!(
            "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>10}  {}",
            r.family.name(),
            r.records,
            r.created,
            r.updated,
            r.deleted,
            r.duplicates,
            serde_json::to_value(&r.outcome)
                .ok()
                .and_then(|v| v["outcome"].as_str().map(str::to_string))
                .unwrap_or_default()
        );
    }
    println!(
        "  events handed off: {}",
        reports.iter().map(|r| r.events).sum::<usize>()
    );
}

fn print_delivered(title: &str, now: &Delivered, before: &Delivered) {
    println!(
        "{title}: {} rule matches → {} tasks created, {} workflows deployed, {} duplicates avoided, {} failed",
        now.matched - before.matched,
        now.tasks - before.tasks,
        now.workflows - before.workflows,
        now.duplicates - before.duplicates,
        now.failures.len() - before.failures.len()
    );
}

/// The Dock side, by rule (read from the reference stamped on each task) — no task text.
fn print_dock(dock_sim: &dock_sim::DockSim, skip_tasks: usize, skip_flows: usize) {
    let mut by_rule: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in dock_sim.tasks().iter().skip(skip_tasks) {
        let rule = t
            .details
            .as_deref()
            .and_then(|d| d.rsplit("kareo-dock ref: ").next())
            .and_then(|r| r.trim().rsplit('#').next())
            .unwrap_or("(workflow task)")
            .to_string();
        let e = by_rule.entry(rule).or_default();
        e.0 += 1;
        if t.patient.is_some() {
            e.1 += 1;
        }
    }
    let flows = dock_sim.workflows().len() - skip_flows;
    println!("  in Dock now: {flows} new workflows; new tasks by rule:");
    for (rule, (n, linked)) in &by_rule {
        println!("    {rule:<28} {n:>4} tasks ({linked} linked to a Dock patient)");
    }
    println!("  Dock patients: {}", dock_sim.patients().len());
}
