//! Polling scenarios against the Kareo simulator, through the real client, with the embedded
//! stores. Each asserts the exact set of events handed off.

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::local::LocalSecrets;
use domain::ports::CursorStore;
use domain::ChangeKind;
use domain::TenantConfig;
use kareo::Family;
use kareo_sim::SimConfig;
use support::{world, world_with};
use sync::run::poll_tenants;
use sync::{Mode, Outcome, PollConfig, Poller};

fn ids(set: &BTreeSet<(String, ChangeKind)>) -> BTreeSet<String> {
    set.iter().map(|(i, _)| i.clone()).collect()
}

#[tokio::test]
async fn first_poll_hands_off_every_record_once_then_nothing_until_a_change() {
    // A transition rule on ConfirmationStatus: its before and after are what an event's
    // `changes` carry (minimum necessary: no other member's).
    let w = world(
        "  appointments: {}\n  patients: {}\nrules:\n  - name: cancelled\n    interface: appointments\n    on: updated\n    when: { ConfirmationStatus: { changed_to: Cancelled } }\n    task: { list: Front Desk, description: Cancelled }\n",
    )
    .await;
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
async fn a_change_inside_the_safety_lag_is_handed_off_at_once_and_read_again_as_a_duplicate() {
    let w = world("  payments: {}\n").await;
    let mut seen = 0;
    w.run(Family::Payments, Mode::Poll).await;
    w.take(&mut seen);
    // Inserted now: after this run's horizon (now − lag). The read reaches past it (Kareo's
    // clock may run ahead of the practice's), so it is handed off at once as created…
    let mut row = w.sim.rows(Family::Payments)[0].clone();
    row.remove("ID");
    let new_id = w.sim.insert(Family::Payments, row);
    let r = w.run(Family::Payments, Mode::Poll).await;
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(new_id, ChangeKind::Created)])
    );
    // …while the cursor stays at the horizon, so the next run reads it again: a duplicate.
    assert_eq!(r.position, Some(w.sim.now() - chrono::Duration::minutes(1)));
    w.sim.advance(chrono::Duration::minutes(2));
    let r = w.run(Family::Payments, Mode::Poll).await;
    assert!(w.take(&mut seen).is_empty());
    assert!(r.duplicates >= 1);
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
        matches!(r.outcome, Outcome::Failed { ref class, .. } if class == "kareo_credentials"),
        "{r:?}"
    );
    assert_eq!(r.windows, 0);
    let got = w.take(&mut seen);
    assert!(got.is_empty());
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    // From the start of the day 6 h before the config's start (11:00) to 6 h past now − lag:
    // 40 days and 17 hours, in 10-day windows.
    assert_eq!(r.windows, 5);
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
            TenantConfig::from_yaml(
                &support::tenant_yaml(&w.sim, &id, "  practices: {}\n", true),
                "t",
            )
            .unwrap(),
        );
    }
    let secrets = LocalSecrets::from_map(secrets);
    let reports = poll_tenants(
        &w.poller(),
        &secrets,
        &w.store,
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
    assert_eq!(cur.last_error.unwrap().class, "kareo_credentials");
    // Kareo's live throttle intervals were read once for the account, not once per tenant.
    let throttle_reads = w
        .sim
        .calls()
        .iter()
        .filter(|c| c.op == "GetThrottles" && c.credentials_valid)
        .count();
    assert_eq!(throttle_reads, 1);
    // Every other tenant got the practice once.
    let per_tenant: BTreeSet<String> = w.sink.events().iter().map(|e| e.tenant.clone()).collect();
    assert_eq!(per_tenant.len(), 49);
}

#[tokio::test]
async fn a_resync_of_a_thousand_old_patients_starts_no_intake() {
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            patients: 1000,
            ..SimConfig::default()
        },
        "  patients: {}\n",
    )
    .await;
    let mut seen = 0;
    let r = w.run(Family::Patients, Mode::Resync).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    let got = w.take(&mut seen);
    assert_eq!(
        got.len(),
        1000,
        "every patient without a snapshot is handed off"
    );
    assert!(
        got.iter().all(|(_, k)| *k == ChangeKind::Updated),
        "none is `created`: they are older than the cursor the resync starts from"
    );
    // A patient registered after the poller's cursor is new, in a resync too.
    w.run(Family::Patients, Mode::Poll).await;
    w.take(&mut seen);
    w.sim.advance(chrono::Duration::minutes(5));
    let mut row = w.sim.rows(Family::Patients)[0].clone();
    row.remove("ID");
    let id = w.sim.insert(Family::Patients, row);
    w.sim.advance(chrono::Duration::minutes(5));
    w.run(Family::Patients, Mode::Resync).await;
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(id, ChangeKind::Created)])
    );
}

#[tokio::test]
async fn refused_credentials_stop_every_family_of_the_account_until_the_secret_changes() {
    let w = world("  patients: {}\n  appointments: {}\n").await;
    let c = w.sim.config();
    let secret = |password: &str| {
        LocalSecrets::from_map(std::collections::BTreeMap::from([(
            "kareo/acme".to_string(),
            serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": password}),
        )]))
    };
    let tenants = vec![w.tenant.clone()];
    let poll = |secrets: LocalSecrets, family: Family| {
        let (w, tenants) = (&w, &tenants);
        async move {
            poll_tenants(
                &w.poller(),
                &secrets,
                &w.store,
                tenants,
                family,
                None,
                Mode::Poll,
                1,
                None,
            )
            .await
            .remove(0)
        }
    };
    let class = |r: &sync::Report| r.outcome.class().map(|c| c.name());

    // A wrong password: one sign-in fails, and the account's breaker opens.
    let r = poll(secret("wrong"), Family::Patients).await;
    assert_eq!(class(&r), Some("kareo_credentials"));
    let calls = w.sim.calls().len();
    assert_eq!(
        w.sim
            .calls()
            .iter()
            .filter(|c| !c.credentials_valid)
            .count(),
        1
    );
    // Every family of the account stops calling Kareo, run after run.
    for family in [Family::Appointments, Family::Patients, Family::Appointments] {
        let r = poll(secret("wrong"), family).await;
        let Outcome::Failed { class, message } = &r.outcome else {
            panic!("{family}: {r:?}")
        };
        assert_eq!(class.name(), "kareo_breaker_open", "{family}");
        assert!(message.contains("kareo/acme") && message.contains("tenant resume"));
        assert!(
            !message.contains("wrong"),
            "the secret is named, never its value"
        );
    }
    assert_eq!(
        w.sim.calls().len(),
        calls,
        "no further sign-in reached Kareo"
    );
    let open = domain::ports::BreakerStore::breakers(&w.store)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "kareo/acme");
    assert_eq!(open[0].1.by, "acme/patients");

    // The secret is fixed: the breaker closes by itself and the family runs.
    let r = poll(secret(&c.password), Family::Appointments).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert!(domain::ports::BreakerStore::breakers(&w.store)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_coverage_audit_heals_a_missed_change_exactly_once_and_reports_it() {
    let w = world("  patients: {}\n").await;
    let mut seen = 0;
    w.run(Family::Patients, Mode::Poll).await;
    w.take(&mut seen);
    // A change Kareo stamped three days back (a late commit, a clock far off): behind every
    // window a poll reads from now on.
    let id = w.sim.rows(Family::Patients)[4]["ID"].clone();
    let now = w.sim.now();
    w.sim.set_now(now - chrono::Duration::days(3));
    w.sim
        .update(Family::Patients, &id, &[("MobilePhone", "555-0142")]);
    w.sim.set_now(now + chrono::Duration::minutes(10));
    w.run(Family::Patients, Mode::Poll).await;
    assert!(w.take(&mut seen).is_empty(), "the poll cannot see it");
    let before = w
        .store
        .load("acme", Family::Patients)
        .await
        .unwrap()
        .unwrap();

    let r = w.run(Family::Patients, Mode::Audit).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(id.clone(), ChangeKind::Updated)])
    );
    assert_eq!(r.events, 1, "healed one");
    assert!(r.records > r.duplicates && r.duplicates > 0, "{r:?}");
    let healed = r.healed.as_ref().expect("an audit reports its windows");
    assert_eq!(healed.len(), 1);
    let m = sync::metrics::poll_run(&r, w.sim.now());
    assert_eq!(m.value("AuditHealed"), Some(1.0));
    let after = w
        .store
        .load("acme", Family::Patients)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.position, before.position,
        "an audit never moves the cursor"
    );
    assert!(after.lease_owner.is_none(), "and releases its lease");

    // A second audit finds nothing missing.
    let r = w.run(Family::Patients, Mode::Audit).await;
    assert!(w.take(&mut seen).is_empty());
    assert_eq!(r.events, 0);
    assert_eq!(r.healed.as_deref(), Some(&[][..]));
    assert_eq!(
        sync::metrics::poll_run(&r, w.sim.now()).value("AuditHealed"),
        Some(0.0)
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_at_once_without_splitting_the_window() {
    let w = world("  patients: {}\n").await;
    // A port nothing listens on (bound, then closed): every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = kareo::KareoClient::new(kareo::ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}{}", kareo_sim::PATH),
        ..kareo::ClientConfig::default()
    })
    .unwrap();
    let p = Poller {
        kareo: &client,
        ..w.poller()
    };
    let started = std::time::Instant::now();
    let r = p
        .run(&w.tenant, &w.creds(), Family::Patients, Mode::Poll, None)
        .await;
    assert_eq!(
        r.outcome.class().map(|c| c.name()),
        Some("kareo_transport"),
        "{r:?}"
    );
    assert_eq!(r.splits, 0, "a narrower window does not connect either");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "failed in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_record_whose_version_cannot_be_read_is_skipped_and_counted_and_the_family_goes_on() {
    let w = world("  payments: {}\n").await;
    let mut seen = 0;
    let bad = w.sim.rows(Family::Payments)[3]["ID"].clone();
    w.sim.set_raw(
        Family::Payments,
        &bad,
        "LastModifiedDate",
        "the 5th of never",
    );
    let r = w.run(Family::Payments, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(r.unreadable, 1);
    let got = ids(&w.take(&mut seen));
    assert!(!got.contains(&bad));
    assert_eq!(
        got.len(),
        w.sim.rows(Family::Payments).len() - 1,
        "every other record"
    );
    let m = sync::metrics::poll_run(&r, w.sim.now());
    assert_eq!(m.value("UnreadableVersions"), Some(1.0));
    let cur = w
        .store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap();
    assert!(
        cur.last_error.is_none() && cur.position.is_some(),
        "the cursor moved on"
    );
}

#[tokio::test]
async fn a_poll_with_nothing_to_hand_off_reads_unleased_and_writes_at_most_once() {
    let w = world("  appointments: {}\n").await;
    let mut seen = 0;
    w.run(Family::Appointments, Mode::Poll).await;
    assert!(!w.take(&mut seen).is_empty());
    let load = || async {
        w.store
            .load("acme", Family::Appointments)
            .await
            .unwrap()
            .unwrap()
    };
    let after_first = load().await;

    // Five minutes later, nothing changed: the run reads, hands off nothing, writes nothing;
    // its report says how far it read.
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!((r.outcome.clone(), r.events), (Outcome::Done, 0));
    assert_eq!(load().await, after_first, "no write at all");
    let read_to = w.sim.now() - chrono::Duration::minutes(1);
    assert_eq!(r.position, Some(read_to));

    // An hour after the last stored success: one write moves the cursor (no lease).
    w.sim.advance(chrono::Duration::minutes(60));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    let c = load().await;
    assert_eq!(c.version, after_first.version + 1, "one write");
    assert_eq!(c.position, r.position);
    assert!(c.lease_owner.is_none() && c.last_error.is_none());

    // A change: leased (conditional on the cursor read), handed off, checkpointed.
    let id = w.sim.rows(Family::Appointments)[3]["ID"].clone();
    w.sim.update(
        Family::Appointments,
        &id,
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.sim.advance(chrono::Duration::minutes(5));
    let r = w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(r.events, 1);
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(id, ChangeKind::Updated)])
    );
    let leased = load().await;
    assert!(leased.version > c.version && leased.lease_owner.is_none());
}

#[tokio::test]
async fn a_poll_that_read_a_cursor_another_run_moved_hands_off_nothing() {
    let w = world("  appointments: {}\n").await;
    let mut seen = 0;
    w.run(Family::Appointments, Mode::Poll).await;
    w.take(&mut seen);
    let rows = w.sim.rows(Family::Appointments);
    w.sim.update(
        Family::Appointments,
        &rows[1]["ID"],
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.sim.advance(chrono::Duration::minutes(5));
    // This run read the cursor, then another run handed the change off and moved it.
    let stale = w.store.load("acme", Family::Appointments).await.unwrap();
    w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(w.take(&mut seen).len(), 1);
    // A second change, which the stale run reads and must not hand off: the other run's
    // cursor is not the one it read, so its lease is refused.
    let second = rows[2]["ID"].clone();
    w.sim.update(
        Family::Appointments,
        &second,
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.sim.advance(chrono::Duration::minutes(1));
    let r = w
        .poller()
        .run_from(
            &w.tenant,
            &w.creds(),
            Family::Appointments,
            Mode::Poll,
            None,
            Some(stale),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Skipped, "{r:?}");
    assert!(w.take(&mut seen).is_empty(), "nothing handed off twice");
    let c = w
        .store
        .load("acme", Family::Appointments)
        .await
        .unwrap()
        .unwrap();
    assert!(c.lease_owner.is_none() && c.last_error.is_none());
    // The next run, from the cursor as it is, hands it off.
    w.run(Family::Appointments, Mode::Poll).await;
    assert_eq!(
        w.take(&mut seen),
        BTreeSet::from([(second, ChangeKind::Updated)])
    );
}

#[tokio::test]
async fn a_fixed_secret_is_read_past_an_hours_cache_once_the_breaker_opened_on_it() {
    use domain::invocation::CachedSecrets;
    use domain::ports::{SecretError, SecretSource, SecretValue};
    use std::sync::Mutex;

    /// A secret an operator can fix, counting reads of the store behind the cache.
    struct Swappable {
        value: Mutex<String>,
        reads: Mutex<usize>,
    }
    impl SecretSource for Swappable {
        async fn get(&self, _: &str) -> Result<SecretValue, SecretError> {
            *self.reads.lock().unwrap() += 1;
            Ok(SecretValue(self.value.lock().unwrap().clone()))
        }
    }
    let w = world("  patients: {}\n").await;
    let c = w.sim.config();
    let value = |password: &str| {
        serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": password})
            .to_string()
    };
    let store = Swappable {
        value: Mutex::new(value("wrong")),
        reads: Mutex::new(0),
    };
    let secrets = CachedSecrets::new(store, std::time::Duration::from_secs(3600));
    let tenants = vec![w.tenant.clone()];
    let poll = || async {
        poll_tenants(
            &w.poller(),
            &secrets,
            &w.store,
            &tenants,
            Family::Patients,
            None,
            Mode::Poll,
            1,
            None,
        )
        .await
        .remove(0)
    };
    let class = |r: &sync::Report| r.outcome.class().map(|c| c.name());
    assert_eq!(class(&poll().await), Some("kareo_credentials"));
    assert_eq!(class(&poll().await), Some("kareo_breaker_open"));
    let refused_sign_ins = w
        .sim
        .calls()
        .iter()
        .filter(|c| !c.credentials_valid)
        .count();
    assert_eq!(refused_sign_ins, 1, "the breaker holds");
    // The operator fixes the secret; the cached value is still the refused one.
    let fixed = secrets_reads(&secrets);
    *secrets_store(&secrets).value.lock().unwrap() = value(&c.password);
    let r = poll().await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(
        secrets_reads(&secrets),
        fixed + 1,
        "one read past the cache"
    );
    // From then on the cache serves it.
    w.sim.advance(chrono::Duration::minutes(5));
    assert_eq!(poll().await.outcome, Outcome::Done);
    assert_eq!(secrets_reads(&secrets), fixed + 1);

    fn secrets_store(s: &CachedSecrets<Swappable>) -> &Swappable {
        s.inner()
    }
    fn secrets_reads(s: &CachedSecrets<Swappable>) -> usize {
        *s.inner().reads.lock().unwrap()
    }
}
