//! Minimum necessary, end to end: a practice whose records carry a canary value in every
//! member its mapping does not use (SSN, notes, diagnosis, insurance, contacts, …) and a marked
//! value in the members it does. After a first poll and a delta poll:
//!
//! - no canary in the events handed off — the task function's input, and so the payload of its
//!   on-failure queue, which holds the same bytes — in their `changes`, in the runs' reports
//!   (what the metrics are made of), in the product's logs at `trace`, in the local state files,
//!   in the embedded store's memory, or in the DynamoDB table (moto);
//! - the used members do arrive (the test can fail the other way too), and a member a rule only
//!   renders is not kept in any store: snapshots hold only what a transition condition or a
//!   deletion rule needs, and a digest of the rest;
//! - a change to an unused member under the same version stamp is still seen (the digest).
//!
//! The Kareo request's field selection is empty (every member is asked for: explicit flags
//! may answer a placeholder row, `docs/kareo-unknowns.md`) and carries no record value.

use std::io::Write;
use std::sync::{Arc, Mutex};

use aws::DynamoStore;
use domain::local::{LocalStore, RecordingSink};
use domain::ports::{CursorStore, SnapshotStore};
use kareo::Family;
use kareo_dock_tests::pipeline::{world_with_rules, World};
use kareo_dock_tests::{moto, unique};
use sync::{Mode, Outcome, PollConfig, Poller, Report};

const CANARY: &str = "PHICANARY";
const USED: &str = "USEDVALUE";

const RULES: &str = r#"rules:
  - name: cancelled
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_to: Cancelled }
    task:
      list: Front Desk
      description: "Call back about {StartDate}"
      patient: true
  - name: welcome
    interface: patients
    on: created
    task:
      list: Front Desk
      description: "Welcome {FirstName}"
"#;

/// The members the rules above use, per family (besides identity, version and created).
fn used(family: Family) -> &'static [&'static str] {
    match family {
        Family::Appointments => &["ConfirmationStatus", "StartDate", "PatientID"],
        _ => &["FirstName"],
    }
}

/// Text members a canary can replace without changing what Kareo's filters read.
fn is_text(k: &str, v: &str) -> bool {
    !(k.ends_with("ID")
        || k.ends_with("Id")
        || k.contains("Date")
        || v.parse::<f64>().is_ok()
        || v.eq_ignore_ascii_case("true")
        || v.eq_ignore_ascii_case("false"))
}

/// Plants canaries in every unused text member and marks the used `FirstName`; returns how
/// many canaries.
fn plant(w: &World) -> usize {
    let mut n = 0;
    for family in [Family::Appointments, Family::Patients] {
        for row in w.kareo_sim.rows(family) {
            let id = row[family.id_member()].clone();
            let mut changes: Vec<(String, String)> = Vec::new();
            for (k, v) in &row {
                if used(family).contains(&k.as_str()) {
                    if k == "FirstName" {
                        changes.push((k.clone(), format!("{USED}{id}")));
                    }
                } else if is_text(k, v) && k != family.id_member() {
                    n += 1;
                    changes.push((k.clone(), format!("{CANARY}{n:05}")));
                }
            }
            let refs: Vec<(&str, &str)> = changes.iter().map(|(k, v)| (&**k, &**v)).collect();
            w.kareo_sim.update(family, &id, &refs);
        }
    }
    n
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// First and delta poll of both families into `store`; the events and the reports.
async fn polls<S: CursorStore + SnapshotStore>(
    w: &World,
    store: &S,
) -> (Vec<domain::ChangeEvent>, Vec<Report>) {
    let sink = RecordingSink::default();
    let config = PollConfig::default();
    let poller = Poller {
        kareo: &w.kareo,
        cursors: store,
        snapshots: store,
        sink: &sink,
        clock: &w.clock,
        config: &config,
    };
    let mut reports = Vec::new();
    let creds = w.creds();
    let run = |family| poller.run(&w.tenant, &creds, family, Mode::Poll, None);
    for f in [Family::Appointments, Family::Patients] {
        reports.push(run(f).await);
    }
    // The delta: one appointment cancelled (a rule's transition), one canary member of a
    // patient changed.
    let appt = w.kareo_sim.rows(Family::Appointments)[0]["ID"].clone();
    w.kareo_sim.update(
        Family::Appointments,
        &appt,
        &[
            ("ConfirmationStatus", "Cancelled"),
            ("Notes", "PHICANARY-delta-note"),
        ],
    );
    let patient = w.kareo_sim.rows(Family::Patients)[0]["ID"].clone();
    w.kareo_sim.update(
        Family::Patients,
        &patient,
        &[("EmailAddress", "PHICANARY-delta@example.org")],
    );
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    for f in [Family::Appointments, Family::Patients] {
        reports.push(run(f).await);
    }
    for r in &reports {
        assert_eq!(
            r.outcome,
            Outcome::Done,
            "{}",
            serde_json::to_string(r).unwrap()
        );
    }
    (sink.events(), reports)
}

fn assert_clean(what: &str, text: &str) {
    if let Some(i) = text.find(CANARY) {
        let a = text[..i]
            .char_indices()
            .rev()
            .nth(120)
            .map_or(0, |(j, _)| j);
        let b = text[i..]
            .char_indices()
            .nth(40)
            .map_or(text.len(), |(j, _)| i + j);
        panic!("a member no rule uses reached {what}: …{}…", &text[a..b]);
    }
}

#[tokio::test]
async fn members_no_rule_uses_reach_no_event_store_log_or_report() {
    let w = world_with_rules(&unique("phi-minimum"), RULES).await;
    let planted = plant(&w);
    assert!(planted > 200, "{planted} canaries");
    w.kareo_sim.advance(chrono::Duration::minutes(5));

    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,kareo_sim=off,dock_sim=off,simkit=off,hyper=off,hyper_util=off,h2=off,\
             reqwest=off,rustls=off,aws_smithy_runtime=off,aws_smithy_http_client=off,\
             aws_config=off,tower=off,axum=off",
        ))
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let files = w.store();
    let (events, reports) = polls(&w, &files).await;
    let json = serde_json::to_string(&events).unwrap();
    assert_clean("the events handed off (the task function's input)", &json);
    // The used members did arrive: every patient's marked name, the appointments' status.
    let patients = w.kareo_sim.rows(Family::Patients).len();
    // Each patient's marked name once, and again for the delta's changed patient.
    assert_eq!(
        json.matches(USED).count(),
        patients + 1,
        "the FirstName of each patient event"
    );
    let cancelled: Vec<_> = events
        .iter()
        .filter(|e| e.family == Family::Appointments && !e.changes.is_empty())
        .collect();
    assert_eq!(cancelled.len(), 1, "the delta's cancellation");
    assert_eq!(
        cancelled[0]
            .changes
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>(),
        ["ConfirmationStatus"],
        "changes carry only the transition's member"
    );
    // The unused member's change, same rules: still a change (an `updated` event).
    assert!(
        events
            .iter()
            .filter(|e| e.family == Family::Patients)
            .count()
            > patients,
        "the delta's patient change is handed off"
    );
    for e in &events {
        for k in e.record.keys() {
            let identity = ["ID", "CreatedDate", "LastModifiedDate"].contains(&k.as_str());
            assert!(
                identity || used(e.family).contains(&k.as_str()),
                "{} carries {k}",
                e.family
            );
        }
    }
    assert_clean(
        "the runs' reports (metrics)",
        &serde_json::to_string(&reports).unwrap(),
    );
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("window read"), "the product logged");
    assert_clean("the product's trace logs", &logged);
    assert!(!logged.contains(USED), "a used value was logged");

    // State files: neither canaries nor a member that is only rendered (FirstName).
    let mut state = String::new();
    for entry in std::fs::read_dir(&w.dir).unwrap() {
        let p = entry.unwrap().path();
        state.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
    }
    assert!(
        state.contains("ConfirmationStatus"),
        "the transition's member is kept"
    );
    assert_clean("the local state files", &state);
    assert!(
        !state.contains(USED),
        "a member only rendered is kept in a snapshot"
    );

    // The embedded store in memory keeps the same.
    let memory = LocalStore::memory();
    let w2 = world_with_rules(&unique("phi-minimum-mem"), RULES).await;
    plant(&w2);
    w2.kareo_sim.advance(chrono::Duration::minutes(5));
    polls(&w2, &memory).await;
    let ids: Vec<String> = w2
        .kareo_sim
        .rows(Family::Patients)
        .iter()
        .map(|r| r["ID"].clone())
        .collect();
    let snaps = memory.get("acme", Family::Patients, &ids).await.unwrap();
    assert_eq!(snaps.len(), ids.len());
    for s in snaps.values() {
        assert!(s.expires.is_some(), "every snapshot expires");
        for (k, v) in &s.fields {
            assert!(
                k.starts_with('#'),
                "a patient snapshot keeps {k} in plain text"
            );
            assert!(!v.contains(CANARY) && !v.contains(USED));
        }
    }
}

#[tokio::test]
async fn the_dynamodb_table_holds_no_member_no_rule_keeps() {
    if !moto("the minimum-necessary DynamoDB check") {
        return;
    }
    let sdk = aws::sdk_config().await;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        unique("kareo-dock-phi"),
    );
    store.create_table().await.unwrap();
    let w = world_with_rules(&unique("phi-minimum-ddb"), RULES).await;
    plant(&w);
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    let (events, _) = polls(&w, &store).await;
    assert!(!events.is_empty());
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = store
            .client
            .scan()
            .table_name(&store.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let snapshots: Vec<_> = items
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|p| p.starts_with("snap#")))
        .collect();
    assert!(snapshots.len() > 10, "{} snapshot items", snapshots.len());
    for item in &snapshots {
        assert!(
            item.get("expires_at").is_some_and(|v| v.as_n().is_ok()),
            "every snapshot item has a numeric expires_at"
        );
    }
    let dump = format!("{items:?}");
    assert_clean("the DynamoDB table", &dump);
    assert!(
        !dump.contains(USED),
        "a member only rendered is kept in DynamoDB"
    );
    store.delete_table().await.unwrap();
}
