//! Runs bounded by the Lambda's time budget: the encounter-details reads of a slice and the
//! deletion re-checks of upcoming appointments stop when the budget runs out, hand off what
//! they did, and the next run resumes without doing finished work again.
//!
//! Time is scaled: Kareo's 500 ms per call stands as the client's throttle spacing of a few
//! milliseconds, and the budget is a second and a half, so that 2,000 reads need several
//! runs, as they need several 600 s invocations against the real service.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use domain::ChangeKind;
use kareo::Family;
use kareo_sim::{Reality, SimConfig};
use support::{world_with, World};
use sync::{Mode, Outcome, PollConfig, Poller};

/// Spaces every call of `op` by `every` (the client's throttle, as live GetThrottles would;
/// read first, so that the poller's own read does not replace it).
async fn throttle(w: &World, op: &str, every: Duration) {
    w.client.throttles_once(&w.creds()).await.unwrap();
    let key = w.sim.config().customer_key.clone();
    w.client
        .throttle()
        .set_live(&key, [(op.to_string(), every)]);
}

/// Runs `mode` with a budget of `budget` until it is done; returns the runs it took.
async fn until_done(w: &World, family: Family, mode: Mode, budget: Duration) -> usize {
    let config = PollConfig {
        owner: "bounded".into(),
        margin: Duration::from_millis(50),
        max_records: 100_000, // one slice, as the 2,000 encounters
        ..PollConfig::default()
    };
    let p = Poller {
        config: &config,
        ..w.poller()
    };
    for run in 1..=400 {
        let deadline = tokio::time::Instant::now() + budget + config.margin;
        let r = p
            .run(&w.tenant, &w.creds(), family, mode, Some(deadline))
            .await;
        match r.outcome {
            Outcome::Done => return run,
            Outcome::Partial => {}
            other => panic!("{family}: {other:?}"),
        }
    }
    panic!("{family} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_encounters_finish_across_runs_each_read_once() {
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            encounters: 2000,
            patients: 50,
            appointments: 10,
            ..SimConfig::default()
        },
        "  encounters: {}\n",
    )
    .await;
    throttle(&w, "GetEncounterDetails", Duration::from_millis(2)).await;
    let runs = until_done(
        &w,
        Family::Encounters,
        Mode::Poll,
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        runs >= 3,
        "the budget holds a fraction of the reads ({runs} runs)"
    );
    let details = w.sim.call_count("GetEncounterDetails");
    assert_eq!(details, 2000, "each encounter read once across {runs} runs");
    let events = w.sink.events();
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *per.entry(e.record_id.as_str()).or_default() += 1;
    }
    assert_eq!(per.len(), 2000, "every encounter handed off");
    assert!(per.values().all(|n| *n == 1), "once each");

    // Nothing changed: the next poll reads the charges again and no encounter's details.
    w.sim.advance(chrono::Duration::minutes(15));
    let before = w.sim.call_count("GetEncounterDetails");
    let r = w.run(Family::Encounters, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    assert_eq!(w.sim.call_count("GetEncounterDetails"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_recheck_of_two_thousand_appointments_resumes_and_finds_each_deletion_once() {
    let w = world_with(
        SimConfig {
            enforce_throttle: false,
            appointments: 2700,
            patients: 50,
            encounters: 5,
            // Deleted appointments answered "not found": a deletion too.
            reality: Reality {
                deleted_not_found: true,
                ..Reality::default()
            },
            ..SimConfig::default()
        },
        "  appointments: {}\n",
    )
    .await;
    w.run(Family::Appointments, Mode::Poll).await;
    let now = w.sim.now();
    let upcoming: Vec<String> = w
        .sim
        .rows(Family::Appointments)
        .iter()
        .filter(|r| {
            w.sim
                .starts(r)
                .is_some_and(|t| t >= now && t <= now + chrono::Duration::days(90))
        })
        .map(|r| r["ID"].clone())
        .collect();
    assert!(upcoming.len() >= 1900, "{} upcoming", upcoming.len());
    let deleted: Vec<String> = upcoming.iter().step_by(97).cloned().collect();
    for id in &deleted {
        w.sim.delete_appointment(id);
    }
    let seen = w.sink.events().len();
    throttle(&w, "GetAppointment", Duration::from_millis(2)).await;
    w.sim.reset_calls();
    let runs = until_done(
        &w,
        Family::Appointments,
        Mode::Deletes,
        Duration::from_millis(1500),
    )
    .await;
    assert!(
        runs >= 3,
        "the budget holds a fraction of the re-checks ({runs} runs)"
    );
    assert_eq!(
        w.sim.call_count("GetAppointment"),
        upcoming.len(),
        "each upcoming appointment re-checked once across {runs} runs"
    );
    let events: Vec<_> = w.sink.events()[seen..].to_vec();
    assert!(events.iter().all(|e| e.kind == ChangeKind::Deleted));
    let mut got: Vec<String> = events.iter().map(|e| e.record_id.clone()).collect();
    got.sort();
    let mut want = deleted.clone();
    want.sort();
    assert_eq!(got, want, "each deletion handed off once");

    // Within the pass interval, a new pass re-checks nothing again.
    w.sim.reset_calls();
    let r = w.run(Family::Appointments, Mode::Deletes).await;
    assert_eq!(r.outcome, Outcome::Done);
    assert_eq!(w.sim.call_count("GetAppointment"), 0);
}
