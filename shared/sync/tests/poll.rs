//! Polling scenarios against the Kareo simulator, through the real client, with the embedded
//! stores. Each asserts the exact set of events handed off.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::local::{LocalSecrets, LocalStore, RecordingSink};
use domain::ports::CursorStore;
use domain::ports::FnClock;
use domain::{ChangeKind, TenantConfig};
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use sync::run::poll_tenants;
use sync::{Mode, Outcome, PollConfig, Poller};

struct World {
    sim: KareoSim,
    client: KareoClient,
    store: LocalStore,
    sink: RecordingSink,
    clock: FnClock,
    config: PollConfig,
    tenant: TenantConfig,
}

fn tenant_yaml(sim: &KareoSim, id: &str, families: &str) -> String {
    let c = sim.config();
    format!(
        "tenant: {id}\ntimezone: {}\nstart: {}\nkareo:\n  secret: kareo/{id}\n  practice: \"{}\"\n  practice_id: {}\ndock:\n  secret: dock/{id}\nsafety_lag: 1m\nfamilies:\n{families}",
        c.timezone.name(),
        (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name.replace('"', "\\\""),
        c.practice_id,
    )
}

async fn world_with(cfg: SimConfig, families: &str) -> World {
    let enforce = cfg.enforce_throttle;
    let sim = KareoSim::start(cfg).await;
    let client = KareoClient::new(ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total: Duration::from_secs(3),
        },
        throttle_margin: Duration::from_millis(if enforce { 50 } else { 1 }),
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .unwrap();
    if !enforce {
        // The simulator does not throttle here: no need to space calls (keeps tests fast).
        let zero = kareo::schema::op_names().map(|o| (o.to_string(), Duration::ZERO));
        client.throttle().set_live(&sim.config().customer_key, zero);
    }
    let tenant = TenantConfig::from_yaml(&tenant_yaml(&sim, "acme", families), "test").unwrap();
    World {
        client,
        store: LocalStore::memory(),
        sink: RecordingSink::default(),
        clock: FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        }),
        config: PollConfig {
            owner: "test".into(),
            ..PollConfig::default()
        },
        tenant,
        sim,
    }
}

async fn world(families: &str) -> World {
    world_with(
        SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        },
        families,
    )
    .await
}

impl World {
    fn creds(&self) -> Credentials {
        let c = self.sim.config();
        Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        }
    }

    fn poller(&self) -> Poller<'_, KareoClient, LocalStore, LocalStore, RecordingSink, FnClock> {
        Poller {
            kareo: &self.client,
            cursors: &self.store,
            snapshots: &self.store,
            sink: &self.sink,
            clock: &self.clock,
            config: &self.config,
        }
    }

    async fn run(&self, family: Family, mode: Mode) -> sync::Report {
        self.poller()
            .run(&self.tenant, &self.creds(), family, mode, None)
            .await
    }

    /// (record id, kind) of the events handed off since the last call.
    fn take(&self, seen: &mut usize) -> BTreeSet<(String, ChangeKind)> {
        let all = self.sink.events();
        let out = all[*seen..]
            .iter()
            .map(|e| (e.record_id.clone(), e.kind))
            .collect();
        *seen = all.len();
        out
    }

    /// Ids of the rows of a family whose version is in `[from, to]`.
    fn modified(&self, family: Family, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeSet<String> {
        let tz = self.sim.config().timezone;
        self.sim
            .rows(family)
            .into_iter()
            .filter(|r| {
                let v = kareo::dates::parse(&r[family.version_member()], tz).unwrap();
                v >= from && v <= to
            })
            .map(|r| r[family.id_member()].clone())
            .collect()
    }
}

fn ids(set: &BTreeSet<(String, ChangeKind)>) -> BTreeSet<String> {
    set.iter().map(|(i, _)| i.clone()).collect()
}

#[tokio::test]
async fn first_poll_hands_off_every_record_once_then_nothing_until_a_change() {
    let w = world("  appointments: {}\n  patients: {}\n").await;
    let mut seen = 0;
    let start = w.tenant.start;
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    let got = w.take(&mut seen);
    let lag_end = w.sim.now() - chrono::Duration::minutes(1);
    assert_eq!(ids(&got), w.modified(Family::Appointments, start, lag_end));
    assert!(!got.is_empty());
    let cur = w
        .store
        .load("acme", Family::Appointments)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.position, Some(lag_end));
    assert!(cur.lease_owner.is_none() && cur.last_error.is_none());

    // Nothing changed: the lookback overlap re-reads records, all skipped as duplicates.
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert!(w.take(&mut seen).is_empty());
    assert_eq!(r.events, 0);

    // One appointment cancelled, one changed twice between polls: one event each.
    let rows = w.sim.rows(Family::Appointments);
    let (a, b) = (rows[2]["ID"].clone(), rows[5]["ID"].clone());
    w.sim.update(
        Family::Appointments,
        &a,
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.sim
        .update(Family::Appointments, &b, &[("Notes", "first")]);
    w.sim.advance(chrono::Duration::minutes(1));
    w.sim
        .update(Family::Appointments, &b, &[("Notes", "second")]);
    w.sim.advance(chrono::Duration::minutes(5));
    w.run(Family::Appointments, Mode::Poll).await;
    let got = w.take(&mut seen);
    assert_eq!(
        got,
        BTreeSet::from([
            (a.clone(), ChangeKind::Updated),
            (b.clone(), ChangeKind::Updated)
        ])
    );
    let ev = w
        .sink
        .events()
        .into_iter()
        .rev()
        .find(|e| e.record_id == a)
        .unwrap();
    let change = ev
        .changes
        .iter()
        .find(|c| c.field == "ConfirmationStatus")
        .expect("transition recorded");
    assert_eq!(change.after.as_deref(), Some("Cancelled"));
    assert!(change.before.is_some());
}

#[tokio::test]
async fn a_record_at_the_window_boundary_is_handed_off_exactly_once() {
    let w = world("  patients: {}\n").await;
    let mut seen = 0;
    w.run(Family::Patients, Mode::Poll).await;
    w.take(&mut seen);
    // A change stamped exactly at the next window's upper bound (now − lag).
    w.sim.advance(chrono::Duration::minutes(10));
    let id = w.sim.rows(Family::Patients)[0]["ID"].clone();
    w.sim
        .update(Family::Patients, &id, &[("MobilePhone", "555-0100")]);
    w.sim.advance(chrono::Duration::minutes(1)); // now − 1m lag == the change's stamp
    w.run(Family::Patients, Mode::Poll).await;
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(id.clone(), ChangeKind::Updated)])
    );
    // The next window starts before it (lookback): read again, not handed off again.
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Patients, Mode::Poll).await;
    assert!(w.take(&mut seen).is_empty());
    assert!(r.duplicates >= 1);
}

#[tokio::test]
async fn a_change_after_the_window_is_picked_up_by_the_next_run_and_new_records_are_created() {
    let w = world("  payments: {}\n").await;
    let mut seen = 0;
    w.run(Family::Payments, Mode::Poll).await;
    w.take(&mut seen);
    // Inserted now: after this run's upper bound (now − lag), so the next run takes it.
    let mut row = w.sim.rows(Family::Payments)[0].clone();
    row.remove("ID");
    let new_id = w.sim.insert(Family::Payments, row);
    w.run(Family::Payments, Mode::Poll).await;
    assert!(w.take(&mut seen).is_empty(), "not yet inside now − lag");
    w.sim.advance(chrono::Duration::minutes(2));
    w.run(Family::Payments, Mode::Poll).await;
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(new_id, ChangeKind::Created)])
    );
}

#[tokio::test]
async fn a_window_across_a_dst_change_reads_every_record_in_it() {
    // New York falls back on 2026-11-01 at 02:00 EDT.
    let start: DateTime<Utc> = "2026-11-01T04:00:00Z".parse().unwrap(); // 00:00 EDT
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            start,
            ..SimConfig::default()
        },
        "  appointments: {}\n",
    )
    .await;
    let mut seen = 0;
    w.run(Family::Appointments, Mode::Poll).await;
    w.take(&mut seen);
    let rows = w.sim.rows(Family::Appointments);
    let mut changed = BTreeSet::new();
    // Changes at 01:10 EDT, 01:50 EDT, 01:10 EST (the repeated hour), 02:30 EST.
    for (i, step) in [70i64, 40, 20, 80].iter().enumerate() {
        w.sim.advance(chrono::Duration::minutes(*step));
        let id = rows[i]["ID"].clone();
        w.sim
            .update(Family::Appointments, &id, &[("Notes", &format!("dst {i}"))]);
        changed.insert(id);
    }
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    assert_eq!(ids(&w.take(&mut seen)), changed);
}

#[tokio::test]
async fn a_window_too_large_for_one_response_is_split_and_nothing_is_lost() {
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            max_records: Some(6),
            ..SimConfig::default()
        },
        "  appointments: {}\n",
    )
    .await;
    let mut seen = 0;
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert!(r.splits > 0);
    let lag_end = w.sim.now() - chrono::Duration::minutes(1);
    assert_eq!(
        ids(&w.take(&mut seen)),
        w.modified(Family::Appointments, w.tenant.start, lag_end)
    );
}

#[tokio::test]
async fn a_failed_run_moves_nothing_and_the_next_run_leaves_no_gap() {
    let w = world("  appointments: {}\n").await;
    let mut seen = 0;
    w.sink.fail_after(Some(0));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert!(
        matches!(r.outcome, Outcome::Failed { ref class, .. } if class == "sink_unavailable"),
        "{r:?}"
    );
    let cur = w
        .store
        .load("acme", Family::Appointments)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.position, None, "the cursor did not move");
    assert_eq!(cur.last_error.as_ref().unwrap().class, "sink_unavailable");
    assert!(cur.lease_owner.is_none(), "the lease is released");
    assert!(w.take(&mut seen).is_empty());

    w.sink.fail_after(None);
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    let lag_end = w.sim.now() - chrono::Duration::minutes(1);
    assert_eq!(
        ids(&w.take(&mut seen)),
        w.modified(Family::Appointments, w.tenant.start, lag_end)
    );
    assert!(w
        .store
        .load("acme", Family::Appointments)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .is_none());
}

#[tokio::test]
async fn a_kareo_failure_mid_run_keeps_the_windows_already_handed_off() {
    let w = world("  appointments: { max_window: 10d }\n").await;
    let mut seen = 0;
    // Security failures are not split or retried: the second window fails.
    w.sim
        .inject(kareo_sim::FaultRule::new(kareo_sim::Fault::AuthFailure).on("GetAppointments"));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert!(
        matches!(r.outcome, Outcome::Failed { ref class, .. } if class == "kareo_security"),
        "{r:?}"
    );
    assert_eq!(r.windows, 0);
    let got = w.take(&mut seen);
    assert!(got.is_empty());
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    assert_eq!(r.windows, 4, "40 days in 10-day windows");
    let lag_end = w.sim.now() - chrono::Duration::minutes(1);
    assert_eq!(
        ids(&w.take(&mut seen)),
        w.modified(Family::Appointments, w.tenant.start, lag_end)
    );
}

#[tokio::test]
async fn two_concurrent_runs_never_overlap() {
    let w = world("  patients: {}\n  payments: {}\n").await;
    let now = w.sim.now();
    w.store
        .acquire(
            "acme",
            Family::Patients,
            "other-run",
            now,
            now + chrono::Duration::minutes(10),
        )
        .await
        .unwrap();
    let r = w.run(Family::Patients, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Skipped);
    assert!(w.sink.events().is_empty());
    assert_eq!(w.sim.call_count("GetPatients"), 0);
    // Both at once: exactly one proceeds, the other leaves; every record handed off once.
    let (a, b) = tokio::join!(
        w.run(Family::Payments, Mode::Poll),
        w.run(Family::Payments, Mode::Poll)
    );
    let outcomes = [a.outcome, b.outcome];
    assert!(
        outcomes.contains(&Outcome::Done) && outcomes.contains(&Outcome::Skipped),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn the_real_throttle_is_respected_across_back_to_back_polls() {
    let w = world_with(SimConfig::default(), "  providers: {}\n  practices: {}\n").await;
    for _ in 0..3 {
        for f in [Family::Providers, Family::Practices] {
            assert_eq!(w.run(f, Mode::Poll).await.outcome, Outcome::Done);
        }
    }
    assert!(w
        .sim
        .calls()
        .iter()
        .all(|c| c.outcome == kareo_sim::Outcome::Ok));
}

#[tokio::test]
async fn encounters_come_from_changed_charges() {
    let w = world("  encounters: {}\n").await;
    let mut seen = 0;
    let r = w.run(Family::Encounters, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    let lag_end = w.sim.now() - chrono::Duration::minutes(1);
    let tz = w.sim.config().timezone;
    let want: BTreeSet<String> = w
        .sim
        .rows(Family::Charges)
        .into_iter()
        .filter(|c| kareo::dates::parse(&c["LastModifiedDate"], tz).unwrap() <= lag_end)
        .filter(|c| kareo::dates::parse(&c["LastModifiedDate"], tz).unwrap() >= w.tenant.start)
        .map(|c| c["EncounterID"].clone())
        .collect();
    assert_eq!(ids(&w.take(&mut seen)), want);
    assert!(!want.is_empty());
}

#[tokio::test]
async fn deleted_upcoming_appointments_become_deleted_events() {
    let w = world("  appointments: {}\n").await;
    let mut seen = 0;
    let tz = w.sim.config().timezone;
    let id = w.sim.rows(Family::Appointments)[0]["ID"].clone();
    let tomorrow = kareo::dates::format_response(w.sim.now() + chrono::Duration::days(1), tz);
    w.sim
        .update(Family::Appointments, &id, &[("StartDate", &tomorrow)]);
    w.sim.advance(chrono::Duration::minutes(5));
    w.run(Family::Appointments, Mode::Poll).await;
    w.take(&mut seen);
    w.sim.delete_appointment(&id);
    let r = w.run(Family::Appointments, Mode::Deletes).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(id.clone(), ChangeKind::Deleted)])
    );
    // Once handed off, never again.
    w.run(Family::Appointments, Mode::Deletes).await;
    assert!(w.take(&mut seen).is_empty());
}

#[tokio::test]
async fn dry_run_reads_and_writes_nothing() {
    let w = world("  appointments: {}\n").await;
    let r = w.run(Family::Appointments, Mode::DryRun).await;
    assert_eq!(r.outcome, Outcome::Done);
    assert!(r.events > 0);
    assert!(w.sink.events().is_empty());
    assert!(w
        .store
        .load("acme", Family::Appointments)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn resync_pages_all_patients_and_hands_off_only_what_changed() {
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            patients: 12,
            ..SimConfig::default()
        },
        "  patients: {}\n",
    )
    .await;
    let mut seen = 0;
    let config = PollConfig {
        owner: "test".into(),
        resync_batch: 5,
        ..PollConfig::default()
    };
    let p = Poller {
        config: &config,
        ..w.poller()
    };
    let r = p
        .run(&w.tenant, &w.creds(), Family::Patients, Mode::Resync, None)
        .await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(r.windows, 3);
    assert_eq!(w.take(&mut seen).len(), 12);
    let r = p
        .run(&w.tenant, &w.creds(), Family::Patients, Mode::Resync, None)
        .await;
    assert_eq!(r.duplicates, 12);
    assert!(w.take(&mut seen).is_empty());
}

#[tokio::test]
async fn fifty_tenants_with_one_failing_the_other_49_succeed() {
    let w = world("  practices: {}\n").await;
    let c = w.sim.config();
    let mut secrets = std::collections::BTreeMap::new();
    let mut tenants = Vec::new();
    for i in 0..50 {
        let id = format!("t{i:02}");
        let password = if i == 17 {
            "wrong".to_string()
        } else {
            c.password.clone()
        };
        secrets.insert(format!("kareo/{id}"), serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": password}));
        tenants.push(
            TenantConfig::from_yaml(&tenant_yaml(&w.sim, &id, "  practices: {}\n"), "t").unwrap(),
        );
    }
    let secrets = LocalSecrets::from_map(secrets);
    let reports = poll_tenants(
        &w.poller(),
        &secrets,
        &tenants,
        Family::Practices,
        None,
        Mode::Poll,
        8,
        None,
    )
    .await;
    assert_eq!(reports.len(), 50);
    let done = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Done)
        .count();
    assert_eq!(done, 49);
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| r.outcome != Outcome::Done)
        .collect();
    assert_eq!(failed[0].tenant, "t17");
    let cur = w
        .store
        .load("t17", Family::Practices)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cur.last_error.unwrap().class, "kareo_security");
    // Every other tenant got the practice once.
    let per_tenant: BTreeSet<String> = w.sink.events().iter().map(|e| e.tenant.clone()).collect();
    assert_eq!(per_tenant.len(), 49);
}
