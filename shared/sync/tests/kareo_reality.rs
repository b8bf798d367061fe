//! The poller against a Kareo simulator that reads what Kareo does not document its own way
//! (`kareo_sim::Reality`): date-only stamps, Kareo's clock in another zone, exclusive bounds,
//! PracticeID required, silent truncation. With the config a user writes today (no setting
//! names the reading), a first run and delta runs hand off every change exactly once under
//! each of them, and under all of them at once.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use domain::ChangeKind;
use kareo::Family;
use kareo_sim::{Bounds, Reality, SimConfig, Stamps};
use support::{world_of, World};
use sync::{Mode, Outcome};

/// Every event handed off since `seen`, by record id: (kind, event id).
fn take(
    w: &World,
    family: Family,
    seen: &mut usize,
) -> BTreeMap<String, Vec<(ChangeKind, String)>> {
    let all = w.sink.events();
    let mut out: BTreeMap<String, Vec<(ChangeKind, String)>> = BTreeMap::new();
    for e in &all[*seen..] {
        if e.family == family {
            out.entry(e.record_id.clone())
                .or_default()
                .push((e.kind, e.id.clone()));
        }
    }
    *seen = all.len();
    out
}

/// One step of the day's script: a change made (family, record, the kind it must produce).
type Step = dyn Fn(&World) -> Option<(Family, String, ChangeKind)>;

async fn poll(w: &World, family: Family) {
    let r = w.run(family, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done, "{family}: {r:?}");
}

/// Stamps `id` as changed at `at` (the simulated clock goes there and back).
fn change_at(w: &World, family: Family, id: &str, at: DateTime<Utc>, member: &str, value: &str) {
    let now = w.sim.now();
    w.sim.set_now(at);
    w.sim.update(family, id, &[(member, value)]);
    w.sim.set_now(now);
}

/// The scenario: a first run, then a day of front-desk work read by delta runs every few
/// minutes. Asserts that every change is handed off exactly once and nothing else is.
async fn exact_under(reality: Reality, practice_id_in_config: bool, patients: usize) {
    exact_with(reality, practice_id_in_config, patients, "{}", None).await
}

/// [`exact_under`] with these settings for the appointments family and this `kareo.row_cap`.
async fn exact_with(
    reality: Reality,
    practice_id_in_config: bool,
    patients: usize,
    apts: &str,
    row_cap: Option<usize>,
) {
    let cfg = SimConfig {
        enforce_throttle: false,
        patients,
        reality: reality.clone(),
        ..SimConfig::default()
    };
    let mut w = world_of(
        cfg,
        &format!("  patients: {{}}\n  appointments: {apts}\n"),
        practice_id_in_config,
    )
    .await;
    w.tenant.kareo.row_cap = row_cap;
    let start = w.tenant.start;
    let pats: Vec<String> = w
        .sim
        .rows(Family::Patients)
        .iter()
        .map(|r| r["ID"].clone())
        .collect();
    let apts: Vec<String> = w
        .sim
        .rows(Family::Appointments)
        .iter()
        .map(|r| r["ID"].clone())
        .collect();
    // Records stamped on the instants a poller is tempted to use as bounds: the config's
    // start, and where a 30-day slice from it ends.
    change_at(
        &w,
        Family::Patients,
        &pats[0],
        start,
        "MobilePhone",
        "555-0101",
    );
    change_at(
        &w,
        Family::Patients,
        &pats[1],
        start + Duration::days(30),
        "MobilePhone",
        "555-0102",
    );
    change_at(
        &w,
        Family::Patients,
        &pats[2],
        start - Duration::hours(6) + Duration::days(30),
        "MobilePhone",
        "555-0103",
    );

    let (mut sp, mut sa) = (0, 0);
    poll(&w, Family::Patients).await;
    poll(&w, Family::Appointments).await;
    let first = take(&w, Family::Patients, &mut sp);
    assert_eq!(
        first.keys().cloned().collect::<BTreeSet<_>>(),
        pats.iter().cloned().collect::<BTreeSet<_>>(),
        "the first run hands off every patient"
    );
    assert!(first.values().all(|v| v.len() == 1), "each once");
    let first = take(&w, Family::Appointments, &mut sa);
    assert_eq!(
        first.len(),
        apts.len(),
        "the first run hands off every appointment"
    );
    assert!(first.values().all(|v| v.len() == 1), "each once");

    // The day's work: an appointment confirmed, then cancelled the same afternoon; a patient
    // changed twice; a new patient registered. Polls every 10 minutes.
    let mut expected_p: BTreeMap<String, Vec<ChangeKind>> = BTreeMap::new();
    let mut expected_a: BTreeMap<String, Vec<ChangeKind>> = BTreeMap::new();
    let mut got_p: BTreeMap<String, Vec<(ChangeKind, String)>> = BTreeMap::new();
    let mut got_a: BTreeMap<String, Vec<(ChangeKind, String)>> = BTreeMap::new();
    let new_patient = {
        let mut row = w.sim.rows(Family::Patients)[3].clone();
        row.remove("ID");
        row.insert("FirstName".into(), "Newly".into());
        row
    };
    let mut script: Vec<Box<Step>> = vec![
        Box::new(|w| {
            w.sim.update(
                Family::Appointments,
                &apts_id(w, 4),
                &[("ConfirmationStatus", "Confirmed")],
            );
            Some((Family::Appointments, apts_id(w, 4), ChangeKind::Updated))
        }),
        Box::new(|w| {
            w.sim.update(
                Family::Patients,
                &pats_id(w, 5),
                &[("MobilePhone", "555-0199")],
            );
            Some((Family::Patients, pats_id(w, 5), ChangeKind::Updated))
        }),
        Box::new(move |w| {
            let id = w.sim.insert(Family::Patients, new_patient.clone());
            Some((Family::Patients, id, ChangeKind::Created))
        }),
        Box::new(|w| {
            w.sim.update(
                Family::Appointments,
                &apts_id(w, 4),
                &[("ConfirmationStatus", "Cancelled")],
            );
            Some((Family::Appointments, apts_id(w, 4), ChangeKind::Updated))
        }),
        Box::new(|w| {
            w.sim.update(
                Family::Patients,
                &pats_id(w, 5),
                &[("EmailAddress", "second@example.org")],
            );
            Some((Family::Patients, pats_id(w, 5), ChangeKind::Updated))
        }),
        Box::new(|_| None),
        Box::new(|_| None),
    ];
    for action in script.drain(..) {
        w.sim.advance(Duration::minutes(10));
        if let Some((family, id, kind)) = action(&w) {
            let e = if family == Family::Patients {
                &mut expected_p
            } else {
                &mut expected_a
            };
            e.entry(id).or_default().push(kind);
        }
        w.sim.advance(Duration::minutes(10));
        poll(&w, Family::Patients).await;
        poll(&w, Family::Appointments).await;
        for (id, v) in take(&w, Family::Patients, &mut sp) {
            got_p.entry(id).or_default().extend(v);
        }
        for (id, v) in take(&w, Family::Appointments, &mut sa) {
            got_a.entry(id).or_default().extend(v);
        }
    }
    // Hours later (past any clock allowance), a last poll finds nothing more.
    w.sim.advance(Duration::hours(7));
    poll(&w, Family::Patients).await;
    poll(&w, Family::Appointments).await;
    for (id, v) in take(&w, Family::Patients, &mut sp) {
        got_p.entry(id).or_default().extend(v);
    }
    for (id, v) in take(&w, Family::Appointments, &mut sa) {
        got_a.entry(id).or_default().extend(v);
    }
    for (got, expected, family) in [
        (&got_p, &expected_p, Family::Patients),
        (&got_a, &expected_a, Family::Appointments),
    ] {
        let kinds: BTreeMap<String, Vec<ChangeKind>> = got
            .iter()
            .map(|(id, v)| (id.clone(), v.iter().map(|(k, _)| *k).collect()))
            .collect();
        assert_eq!(
            &kinds, expected,
            "{family} under {reality:?}: every change once, nothing else"
        );
        for v in got.values() {
            let ids: BTreeSet<&String> = v.iter().map(|(_, id)| id).collect();
            assert_eq!(
                ids.len(),
                v.len(),
                "two changes of one record have two event ids"
            );
        }
    }
}

fn pats_id(w: &World, i: usize) -> String {
    w.sim.rows(Family::Patients)[i]["ID"].clone()
}

fn apts_id(w: &World, i: usize) -> String {
    w.sim.rows(Family::Appointments)[i]["ID"].clone()
}

#[tokio::test]
async fn the_simulators_default_reading() {
    exact_under(Reality::default(), true, 25).await;
}

#[tokio::test]
async fn date_only_stamps_with_two_changes_of_one_record_on_one_day() {
    exact_under(
        Reality {
            stamps: Stamps::DateOnly,
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn kareos_clock_three_hours_west_of_the_practice() {
    exact_under(
        Reality {
            clock_offset: Duration::hours(-3),
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn kareos_clock_six_hours_west_of_the_practice() {
    exact_under(
        Reality {
            clock_offset: Duration::hours(-6),
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn kareos_clock_three_hours_east_of_the_practice() {
    exact_under(
        Reality {
            clock_offset: Duration::hours(3),
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn kareos_clock_six_hours_east_of_the_practice() {
    exact_under(
        Reality {
            clock_offset: Duration::hours(6),
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn an_exclusive_from_bound() {
    exact_under(
        Reality {
            bounds: Bounds::ExclusiveFrom,
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn an_exclusive_to_bound() {
    exact_under(
        Reality {
            bounds: Bounds::ExclusiveTo,
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn both_bounds_exclusive() {
    exact_under(
        Reality {
            bounds: Bounds::Exclusive,
            ..Reality::default()
        },
        true,
        25,
    )
    .await;
}

#[tokio::test]
async fn practice_id_required_and_the_config_names_the_practice_only() {
    exact_under(
        Reality {
            practice_id_required: true,
            ..Reality::default()
        },
        false,
        25,
    )
    .await;
}

#[tokio::test]
async fn responses_silently_cut_at_a_thousand_rows() {
    exact_under(
        Reality {
            truncate_at: Some(1000),
            ..Reality::default()
        },
        true,
        2500,
    )
    .await;
}

#[tokio::test]
async fn every_hostile_reading_at_once_with_the_practice_named_only() {
    exact_under(Reality::hostile(), false, 2500).await;
}

/// Not survivable blindly (`check --probe` finds it): with the setting it implies, exact.
#[tokio::test]
async fn get_appointments_applying_its_default_start_date_window_with_the_probed_setting() {
    exact_with(
        Reality {
            appointment_window_always: true,
            ..Reality::default()
        },
        true,
        25,
        "{ start_date_horizon: 90d }",
        None,
    )
    .await;
}

/// A cut below the poller's cap is not survivable blindly (`check --probe` warns of a round
/// row count); with `kareo.row_cap` at the cut, exact.
#[tokio::test]
async fn responses_cut_at_four_hundred_rows_with_the_row_cap_set() {
    exact_with(
        Reality {
            truncate_at: Some(400),
            ..Reality::default()
        },
        true,
        1500,
        "{}",
        Some(400),
    )
    .await;
}

/// GetCharges answering wide windows with nothing: with the default window (7 days) and with a
/// config that raised it to 30 days (an empty wide answer is read again in halves), every
/// charge of the first run is handed off.
#[tokio::test]
async fn get_charges_answering_wide_windows_with_nothing() {
    for charges in ["{}", "{ max_window: 30d }"] {
        let cfg = SimConfig {
            enforce_throttle: false,
            reality: Reality {
                charges_empty_above: Some(Duration::days(10)),
                ..Reality::default()
            },
            ..SimConfig::default()
        };
        let w = world_of(cfg, &format!("  charges: {charges}\n"), true).await;
        let r = w.run(Family::Charges, Mode::Poll).await;
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        let mut seen = 0;
        let got: BTreeSet<String> = take(&w, Family::Charges, &mut seen).into_keys().collect();
        let all: BTreeSet<String> = w
            .sim
            .rows(Family::Charges)
            .iter()
            .map(|r| r["ID"].clone())
            .collect();
        assert_eq!(got, all, "charges: {charges}");
    }
}

/// GetCharges applying an implicit posting-date window (7 days) even with a last-modified
/// pair: not survivable blindly — a charge posted 90 days ago and changed now is missed with
/// the default config (the test fails on it) — and `check --probe` names the setting; with
/// `posting_date_horizon`, every charge (and the encounters read through them) arrives.
#[tokio::test]
async fn get_charges_applying_an_implicit_posting_window_with_the_probed_setting() {
    for (settings, found) in [("{}", false), ("{ posting_date_horizon: 365d }", true)] {
        let cfg = SimConfig {
            enforce_throttle: false,
            reality: Reality {
                charges_posting_window: Some(Duration::days(7)),
                ..Reality::default()
            },
            ..SimConfig::default()
        };
        let w = world_of(
            cfg,
            &format!(
                "  charges: {settings}
  encounters: {settings}
"
            ),
            true,
        )
        .await;
        let tz = w.tenant.timezone;
        let old = w.sim.rows(Family::Charges)[0].clone();
        let posted = (w.sim.now() - Duration::days(90)).with_timezone(&tz);
        w.sim.update(
            Family::Charges,
            &old["ID"],
            &[(
                "PostingDate",
                &posted.format("%-m/%-d/%Y 9:00:00 AM").to_string(),
            )],
        );
        w.sim.advance(Duration::minutes(10));
        let r = w.run(Family::Charges, Mode::Poll).await;
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        let r = w.run(Family::Encounters, Mode::Poll).await;
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        let mut seen = 0;
        let charges: BTreeSet<String> = take(&w, Family::Charges, &mut seen).into_keys().collect();
        let mut seen = 0;
        let encounters: BTreeSet<String> = take(&w, Family::Encounters, &mut seen)
            .into_keys()
            .collect();
        assert_eq!(charges.contains(&old["ID"]), found, "charges: {settings}");
        assert_eq!(
            encounters.contains(&old["EncounterID"]),
            found,
            "encounters: {settings}"
        );
        if found {
            let all: BTreeSet<String> = w
                .sim
                .rows(Family::Charges)
                .iter()
                .map(|r| r["ID"].clone())
                .collect();
            assert_eq!(charges, all, "every charge with the setting");
        }
    }
}

/// Two processes of one account (say the patients poller and the task function reading
/// patients), each with its own in-process limiter, against a Kareo whose throttle counts the
/// calls it refuses: each refusal restarts the interval, so two clients that both retry exactly
/// one interval after a refusal can refuse each other forever. Both polls must still finish
/// with every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_account_get_through_a_throttle_that_counts_refused_calls() {
    let w = support::world_with(
        SimConfig {
            enforce_throttle: true,
            patients: 12,
            reality: Reality {
                throttle_counts_rejected: true,
                ..Reality::default()
            },
            ..SimConfig::default()
        },
        "  patients: {}\n",
    )
    .await;
    let other = kareo::KareoClient::new(kareo::ClientConfig {
        endpoint: w.sim.url(),
        retry: kareo::throttle::RetryPolicy {
            max_retries: 2,
            min_delay: std::time::Duration::from_millis(5),
            max_delay: std::time::Duration::from_millis(20),
            max_total: std::time::Duration::from_secs(3),
        },
        throttle_margin: std::time::Duration::from_millis(50),
        timeout: std::time::Duration::from_secs(5),
        ..kareo::ClientConfig::default()
    })
    .unwrap();
    let (store, sink) = (
        domain::local::LocalStore::memory(),
        domain::local::RecordingSink::default(),
    );
    let second = sync::Poller {
        kareo: &other,
        cursors: &store,
        snapshots: &store,
        sink: &sink,
        clock: &w.clock,
        config: &w.config,
    };
    let creds = w.creds();
    let (a, b) = tokio::join!(
        w.run(Family::Patients, Mode::Poll),
        second.run(&w.tenant, &creds, Family::Patients, Mode::Poll, None)
    );
    assert_eq!(a.outcome, Outcome::Done, "{a:?}");
    assert_eq!(b.outcome, Outcome::Done, "{b:?}");
    let ids = |events: Vec<domain::ChangeEvent>| {
        events
            .into_iter()
            .map(|e| e.record_id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(ids(w.sink.events()).len(), 12);
    assert_eq!(ids(sink.events()).len(), 12);
    let refused = w
        .sim
        .calls()
        .iter()
        .filter(|c| c.outcome == kareo_sim::Outcome::Throttled)
        .count();
    assert!(refused > 0, "the two clients collided: the mode was played");
}
