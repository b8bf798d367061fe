//! The crash sweep: the process stops at every step boundary of a poll run, of a task delivery
//! and of a write — after the lease, after the Kareo read, after each hand-off, before and after
//! the cursor advance, after the ledger claim, after the Dock POST, after each ledger write,
//! after the Kareo write — and is started again: at once, then with every lease expired.
//!
//! Each stop is a test-only fault point (`fail_point!` in domain, feature
//! `failpoints`) that panics, inside a spawned task: nothing after it runs, nothing is cleaned
//! up, and all state comes back from disk (`LocalStore::in_dir`) as a new process would see it.
//! After each crash the cursor must not have passed a change whose tasks are not in Dock; after
//! the restarts Dock must hold exactly one task per (event, rule) and Kareo exactly one record
//! per write command.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use domain::local::{LocalSecrets, LocalStore};
use domain::ports::CursorStore;
use domain::ports::FnClock;
use domain::{ChangeEvent, TenantConfig};
use kareo::{Family, KareoClient};
use kareo_dock_tests::pipeline::{expected_keys, kareo_client, state_dir, world, World, FAMILIES};
use kareo_sim::{KareoSim, SimConfig};
use serde_json::{json, Value};
use sync::Outcome;
use writeback::write::{run_command, Caller, WriteResult, WriteStatus, Writer};

/// Arms `point` to stop the process at its `hit`-th pass.
fn arm(point: &str, hit: usize) {
    let actions = if hit <= 1 {
        "panic".to_string()
    } else {
        format!("{}*off->panic", hit - 1)
    };
    fail::cfg(point, &actions).unwrap();
}

/// Runs `f` with `point` armed; true when it stopped there. The panic unwinds through the
/// run as a crash would end it: nothing after the point runs, no clean-up is awaited.
async fn crash_at<F, Fut, T>(point: &str, hit: usize, f: F) -> bool
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures_util::FutureExt;
    arm(point, hit);
    let outcome = std::panic::AssertUnwindSafe(f()).catch_unwind().await;
    fail::remove(point);
    match outcome {
        Err(msg) => {
            let text = msg
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                text.contains(point),
                "stopped by something else than the fault point {point}: {text}"
            );
            true
        }
        Ok(_) => false,
    }
}

/// Quiet panics from the fault points (the test asserts them); others still print.
fn quiet_fault_points() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.starts_with("failpoint ") {
            default(info);
        }
    }));
}

/// After a crash: every change at or before a family's cursor has all its tasks in Dock.
async fn cursor_never_passed_unhanded_data(w: &World, keys: &[(String, ChangeEvent)], at: &str) {
    let store = w.store();
    let refs = w.task_refs();
    for f in FAMILIES {
        let Some(position) = store
            .load("acme", f)
            .await
            .unwrap()
            .and_then(|c| c.position)
        else {
            continue;
        };
        for (key, e) in keys.iter().filter(|(_, e)| e.family == f) {
            if e.version <= position {
                assert!(
                    refs.binary_search(key).is_ok(),
                    "{at}: the {f} cursor is at {position} but the task for {key} (version {}) is not in Dock",
                    e.version
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_poll_or_delivery_loses_nothing_and_duplicates_nothing() {
    let _scenario = fail::FailScenario::setup();
    quiet_fault_points();
    // Which pass of each point to stop at: the first, and one in the middle of the work.
    let sweep: &[(&str, &[usize])] = &[
        ("poll.after_lease", &[1, 2]),
        ("poll.after_read", &[1, 3]),
        ("poll.after_hand_off", &[1, 2]),
        ("poll.before_checkpoint", &[1, 3]),
        ("poll.after_checkpoint", &[1, 3]),
        ("deliver.after_claim", &[1, 7]),
        ("deliver.after_patient", &[1, 2]),
        ("deliver.after_post", &[1, 7]),
        ("deliver.after_settle", &[1, 7]),
    ];
    let mut cases = 0;
    for (point, hits) in sweep {
        for &hit in *hits {
            let at = format!("{point} (pass {hit})");
            let w = world("sweep").await;
            let keys = expected_keys(&w.tenant, &w.expected_events().await);
            assert!(keys.len() > 20, "a sweep over too little data");
            let expected: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();

            let w2 = w.clone();
            let stopped = crash_at(point, hit, move || async move {
                w2.sync("first").await;
            })
            .await;
            assert!(
                stopped,
                "{at} was never reached: the sweep would prove nothing"
            );
            cursor_never_passed_unhanded_data(&w, &keys, &at).await;

            // Started again at once: the dead run's leases still stand; nothing may break.
            for r in w.sync("second").await {
                assert!(!matches!(r.outcome, Outcome::Failed { .. }), "{at}: {r:?}");
            }
            cursor_never_passed_unhanded_data(&w, &keys, &at).await;
            // Later, every lease expired: the work is finished.
            w.kareo_sim.advance(chrono::Duration::minutes(16));
            for r in w.sync("third").await {
                assert_eq!(r.outcome, Outcome::Done, "{at}: {r:?}");
            }
            w.kareo_sim.advance(chrono::Duration::minutes(5));
            for r in w.sync("fourth").await {
                assert_eq!(r.outcome, Outcome::Done, "{at}: {r:?}");
                assert_eq!(r.events, 0, "{at}: nothing left to hand off: {r:?}");
            }
            let refs = w.task_refs();
            let mut dupes = refs.clone();
            dupes.dedup();
            assert_eq!(dupes.len(), refs.len(), "{at}: a duplicate Dock task");
            assert_eq!(
                refs, expected,
                "{at}: Dock holds other tasks than one per (event, rule)"
            );
            // Patients linked once each, by MRN.
            let mut mrns: Vec<_> = w
                .dock_sim
                .patients()
                .into_iter()
                .filter_map(|p| p.mrn)
                .collect();
            let n = mrns.len();
            mrns.sort();
            mrns.dedup();
            assert_eq!(mrns.len(), n, "{at}: a patient created twice in Dock");
            let store = w.store();
            for f in FAMILIES {
                let c = store.load("acme", f).await.unwrap().unwrap();
                assert!(c.last_error.is_none(), "{at}: {f}: {:?}", c.last_error);
                let newest = keys
                    .iter()
                    .filter(|(_, e)| e.family == f)
                    .map(|(_, e)| e.version)
                    .max()
                    .unwrap();
                assert!(c.position.unwrap() >= newest, "{at}: {f} cursor behind");
            }
            let _ = std::fs::remove_dir_all(&w.dir);
            cases += 1;
        }
    }
    assert_eq!(cases, 18);
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

struct WriteWorld {
    sim: KareoSim,
    kareo: KareoClient,
    secrets: LocalSecrets,
    tenant: TenantConfig,
    clock: FnClock,
    dir: PathBuf,
}

impl WriteWorld {
    async fn start() -> Arc<WriteWorld> {
        let sim = KareoSim::start(SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        })
        .await;
        let c = sim.config().clone();
        let yaml = format!(
            "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: {}\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {{}}\n",
            (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
            c.practice_name,
            c.practice_id,
        );
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "kareo/acme".to_string(),
            json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
        );
        Arc::new(WriteWorld {
            kareo: kareo_client(&sim),
            clock: FnClock::new({
                let sim = sim.clone();
                move || sim.now()
            }),
            tenant: TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap(),
            secrets: LocalSecrets::from_map(secrets),
            sim,
            dir: state_dir("write"),
        })
    }

    /// One write, as a newly started process would run it.
    async fn run(&self, owner: &str, cmd: &Value) -> WriteResult {
        let store = LocalStore::in_dir(&self.dir).unwrap();
        let writer = Writer::new(&self.kareo, &store, &self.clock, owner.into());
        run_command(
            &writer,
            &self.secrets,
            std::slice::from_ref(&self.tenant),
            cmd,
            Caller::Operator("test"),
        )
        .await
    }

    fn first(&self, family: Family) -> String {
        self.sim.rows(family)[0][family.id_member()].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_write_never_writes_twice() {
    let _scenario = fail::FailScenario::setup();
    quiet_fault_points();
    let points = [
        "write.after_claim",
        "write.after_mark",
        "write.after_kareo_write",
        "write.after_settle",
    ];
    let mut outcomes = Vec::new();
    let mut cases = 0;
    for point in points {
        for op in [
            "CreatePatient",
            "CreateAppointment",
            "CreatePayment",
            "CreateEncounter",
            "UpdatePatient",
            "DeleteAppointment",
        ] {
            let at = format!("{op} at {point}");
            let w = WriteWorld::start().await;
            let patient = w.first(Family::Patients);
            let provider = w.first(Family::Providers);
            let location = w.first(Family::ServiceLocations);
            let appointment = w.first(Family::Appointments);
            let code = w.sim.rows(Family::ProcedureCodes)[0]["ProcedureCode"].clone();
            let data = match op {
                "CreatePatient" => json!({"first_name": "Crash", "last_name": "Sweep",
                    "date_of_birth": "1980-01-02", "gender": "Female"}),
                "CreateAppointment" => json!({"patient_id": patient,
                    "start": "2026-10-05T10:00:00-04:00", "end": "2026-10-05T10:30:00-04:00",
                    "service_location_id": location, "provider_id": provider}),
                "CreatePayment" => json!({"payer_type": "Patient", "patient_id": patient,
                    "amount": "42.10", "payment_method": "Check",
                    "reference_number": "CRASH-1", "post_date": "2026-10-01"}),
                "CreateEncounter" => json!({"patient_id": patient, "service_date": "2026-09-30",
                    "rendering_provider_id": provider, "service_location_id": location,
                    "service_lines": [{"procedure_code": code, "diagnosis_codes": ["J06.9"],
                                       "units": 1, "unit_charge": "80.00"}]}),
                "UpdatePatient" => json!({"patient_id": patient.parse::<i64>().unwrap(),
                    "city": "Crashville"}),
                "DeleteAppointment" => json!({"appointment_id": appointment}),
                _ => unreachable!(),
            };
            let cmd = json!({"id": "c-1", "tenant": "acme", "op": op, "data": data});
            let family = match op {
                "CreatePatient" | "UpdatePatient" => Family::Patients,
                "CreateAppointment" | "DeleteAppointment" => Family::Appointments,
                "CreatePayment" => Family::Payments,
                _ => Family::Encounters,
            };
            let rows_before = w.sim.rows(family).len();

            let w2 = w.clone();
            let c2 = cmd.clone();
            let stopped = crash_at(point, 1, move || async move {
                w2.run("first", &c2).await;
            })
            .await;
            assert!(stopped, "{at} was never reached");
            let sent = w.sim.call_count(op);

            // At once: the claim is still held by the dead attempt.
            let r = w.run("second", &cmd).await;
            assert!(
                matches!(r.status, WriteStatus::InProgress | WriteStatus::Done),
                "{at}: {r:?}"
            );
            assert_eq!(w.sim.call_count(op), sent, "{at}: sent again while held");
            // After the lease: reconciled, never sent twice.
            w.sim.advance(chrono::Duration::minutes(10));
            let r = w.run("third", &cmd).await;
            let again = w.run("fourth", &cmd).await;
            assert_eq!(again.status, r.status, "{at}: a settled answer is stable");
            assert!(w.sim.call_count(op) <= 1, "{at}: {op} sent twice");

            let rows_after = w.sim.rows(family).len();
            let created = rows_after as i64 - rows_before as i64;
            match (point, r.status) {
                // Stopped after it recorded that it was sending, before the call went out:
                // nothing was written, and the command is left for a person (an expired
                // "sending" claim cannot tell a lost send from one in flight).
                ("write.after_mark", WriteStatus::NeedsReview) => {
                    assert_eq!(w.sim.call_count(op), 0, "{at}");
                    assert!(
                        r.reason.as_deref().unwrap_or("").contains("never re-send"),
                        "{at}: {r:?}"
                    );
                }
                (_, WriteStatus::Done) => {
                    assert_eq!(w.sim.call_count(op), 1, "{at}");
                    let want = match op {
                        "DeleteAppointment" => -1,
                        "UpdatePatient" => 0,
                        _ => 1,
                    };
                    assert_eq!(created, want, "{at}: {r:?}");
                    if op == "UpdatePatient" {
                        let row = w
                            .sim
                            .rows(Family::Patients)
                            .into_iter()
                            .find(|r| r[Family::Patients.id_member()] == patient)
                            .unwrap();
                        assert_eq!(row["City"], "Crashville", "{at}");
                    }
                }
                (_, status) => panic!("{at}: ended {status:?}: {r:?}"),
            }
            outcomes.push(format!("{op:18} {point:24} {:?}", r.status));
            let _ = std::fs::remove_dir_all(&w.dir);
            cases += 1;
        }
    }
    assert_eq!(cases, 24);
    eprintln!("{}", outcomes.join("\n"));
}
