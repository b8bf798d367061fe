//! Task creation end to end: the Kareo simulator → the poller → the mapping → the Dock
//! simulator, with the embedded ledger. The core guarantee: exactly one Dock task per
//! (event, rule), whatever timeouts, crashes, 429 storms, duplicate or concurrent deliveries.

use std::collections::BTreeMap;
use std::time::Duration;

use dock_sim::{DockSim, Fault as DockFault, FaultRule as DockRule, Seed};
use domain::local::{LocalSecrets, LocalStore, RecordingSink};
use domain::ports::FnClock;
use domain::ports::{Claim, Clock, Ledger, LedgerEntry, LedgerState};
use domain::{ChangeEvent, TenantConfig};
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use sync::{Mode, PollConfig, Poller};
use tasks::deliver::{deliver_batch, Delivery, DeliverySink};
use tasks::dock::DockTasks;

const RULES: &str = r#"rules:
  - name: cancelled-appointment-callback
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_to: Cancelled }
    task:
      list: Front Desk
      group: Callbacks
      description: "Call {PatientFullName} to reschedule {StartDate}"
      assignee: frontdesk@acme.example
      due: 1d
      priority: HIGH
      patient: true
  - name: reschedule-flow
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_to: Rescheduled }
    task:
      list: Front Desk
      group: Reschedules
      workflow: Reschedule SmartFlow
      description: "Reschedule {PatientFullName}"
  - name: new-patient
    interface: patients
    on: created
    task:
      list: Front Desk
      group: New Patients
      description: "Welcome {FirstName} {LastName}"
      patient: true
  - name: payment-posted
    interface: payments
    on: any
    task:
      list: Billing
      description: "Payment {ID} of {Amount} ({PaymentMethod})"
"#;

struct World {
    kareo_sim: KareoSim,
    dock_sim: DockSim,
    kareo: KareoClient,
    dock: DockTasks,
    store: LocalStore,
    secrets: LocalSecrets,
    tenant: TenantConfig,
    clock: FnClock,
}

async fn world() -> World {
    let kareo_sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dock_sim = DockSim::start(Seed::default()).await;
    let c = kareo_sim.config().clone();
    let kareo = KareoClient::new(ClientConfig {
        endpoint: kareo_sim.url(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total: Duration::from_secs(2),
        },
        throttle_margin: Duration::from_millis(1),
        ..ClientConfig::default()
    })
    .unwrap();
    kareo.throttle().set_live(
        &c.customer_key,
        kareo::schema::op_names().map(|o| (o.to_string(), Duration::ZERO)),
    );
    let dock = DockTasks::new(
        dock::DockClient::new(dock::DockConfig {
            api_url: dock_sim.api_url(),
            auth_url: dock_sim.auth_url(),
            timeout: Duration::from_millis(800),
            retry: dock::RetryPolicy {
                max_retries: 4,
                min_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(50),
                max_total: Duration::from_secs(10),
                max_retry_after: Duration::from_secs(3),
            },
            rate_per_sec: 0,
            ..dock::DockConfig::default()
        })
        .unwrap(),
    );
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: 1\ndock:\n  secret: dock/acme\nsafety_lag: 1m\nfamilies:\n  appointments: {{}}\n  patients: {{}}\n  payments: {{}}\n{RULES}",
        (kareo_sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name
    );
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "kareo/acme".to_string(),
        serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
    );
    secrets.insert(
        "dock/acme".to_string(),
        serde_json::to_value(dock_sim.secret()).unwrap(),
    );
    World {
        clock: FnClock::new({
            let sim = kareo_sim.clone();
            move || sim.now()
        }),
        kareo_sim,
        dock_sim,
        kareo,
        dock,
        store: LocalStore::memory(),
        secrets: LocalSecrets::from_map(secrets),
        tenant,
    }
}

impl World {
    fn creds(&self) -> Credentials {
        let c = self.kareo_sim.config();
        Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        }
    }

    fn delivery(&self, owner: &str) -> Delivery<'_, DockTasks, LocalStore, KareoClient, FnClock> {
        Delivery {
            dock: &self.dock,
            ledger: &self.store,
            kareo: &self.kareo,
            clock: &self.clock,
            owner: owner.into(),
            lease: Duration::from_secs(60),
        }
    }

    /// Polls a family into a recording sink; returns the new events.
    async fn poll(&self, family: Family) -> Vec<ChangeEvent> {
        let sink = RecordingSink::default();
        let config = PollConfig {
            owner: "poll".into(),
            ..PollConfig::default()
        };
        let p = Poller {
            kareo: &self.kareo,
            cursors: &self.store,
            snapshots: &self.store,
            sink: &sink,
            clock: &self.clock,
            config: &config,
        };
        p.run(&self.tenant, &self.creds(), family, Mode::Poll, None)
            .await;
        sink.events()
    }
}

/// Polls the baseline, cancels one appointment, polls again: the cancellation event.
async fn cancellation(w: &World) -> (String, Vec<ChangeEvent>) {
    w.poll(Family::Appointments).await;
    w.kareo_sim.advance(chrono::Duration::minutes(10));
    let id = w.kareo_sim.rows(Family::Appointments)[0]["ID"].clone();
    w.kareo_sim.update(
        Family::Appointments,
        &id,
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    let events = w.poll(Family::Appointments).await;
    assert_eq!(events.len(), 1);
    (id, events)
}

#[tokio::test]
async fn a_cancellation_becomes_one_linked_task_in_the_right_list_and_group() {
    let w = world().await;
    let (id, events) = cancellation(&w).await;
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.matched, d.tasks, d.failures.len()), (1, 1, 0), "{d:?}");
    // Its change → task latency: from the record's Kareo stamp to the task, on the clock.
    let expected = (w.clock.now() - events[0].version).num_milliseconds() as f64 / 1000.0;
    assert_eq!(
        d.latencies,
        vec![("acme".to_string(), Family::Appointments, expected)]
    );
    let tasks = w.dock_sim.tasks();
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    let row = w
        .kareo_sim
        .rows(Family::Appointments)
        .into_iter()
        .find(|r| r["ID"] == id)
        .unwrap();
    assert_eq!(
        t.description.as_deref(),
        Some(
            format!(
                "Call {} to reschedule {}",
                row["PatientFullName"], row["StartDate"]
            )
            .as_str()
        )
    );
    assert_eq!(
        t.task_list.as_ref().map(|r| r.id.clone()),
        w.dock_sim.list_id("Front Desk")
    );
    assert_eq!(
        t.assigned_to.as_ref().map(|r| r.id.clone()),
        w.dock_sim.user_id("frontdesk@acme.example")
    );
    assert_eq!(t.priority, Some(dock::Priority::High));
    // The patient is linked by MRN = Kareo PatientID, created once.
    let patients = w.dock_sim.patients();
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0].mrn.as_deref(), Some(row["PatientID"].as_str()));
    assert_eq!(
        t.patient.as_ref().map(|p| p.id.clone()),
        Some(patients[0].id.clone())
    );
    // Delivered again (a duplicate delivery of the same batch): nothing new.
    let d = deliver_batch(
        &w.delivery("b"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.duplicates), (0, 1));
    assert_eq!(w.dock_sim.tasks().len(), 1);
}

#[tokio::test]
async fn transitions_fire_only_on_the_transition() {
    let w = world().await;
    let (id, _) = cancellation(&w).await;
    // Another change while already Cancelled: no cancellation rule fires.
    w.kareo_sim.advance(chrono::Duration::minutes(10));
    w.kareo_sim
        .update(Family::Appointments, &id, &[("Notes", "left a message")]);
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    let events = w.poll(Family::Appointments).await;
    assert_eq!(events.len(), 1);
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!(d.matched, 0);
    assert!(w.dock_sim.tasks().is_empty());
}

#[tokio::test]
async fn a_workflow_deploys_into_its_list_and_group() {
    let w = world().await;
    w.poll(Family::Appointments).await;
    w.kareo_sim.advance(chrono::Duration::minutes(10));
    let id = w.kareo_sim.rows(Family::Appointments)[1]["ID"].clone();
    w.kareo_sim.update(
        Family::Appointments,
        &id,
        &[("ConfirmationStatus", "Rescheduled")],
    );
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    let events = w.poll(Family::Appointments).await;
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.workflows, d.failures.len()), (1, 0), "{d:?}");
    let wf = w.dock_sim.workflows();
    assert_eq!(wf.len(), 1);
    let tasks = w.dock_sim.tasks();
    assert_eq!(tasks.len(), 2, "the SmartFlow's two tasks");
    for t in tasks {
        assert_eq!(t.task_list.map(|r| r.id), w.dock_sim.list_id("Front Desk"));
    }
}

#[tokio::test]
async fn new_patients_and_payments_each_fire_their_rule_once() {
    let w = world().await;
    let patients = w.poll(Family::Patients).await;
    let payments = w.poll(Family::Payments).await;
    let all: Vec<ChangeEvent> = patients.iter().chain(payments.iter()).cloned().collect();
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &all,
    )
    .await;
    let created_patients = patients
        .iter()
        .filter(|e| e.kind == domain::ChangeKind::Created)
        .count();
    assert_eq!(d.tasks, created_patients + payments.len(), "{d:?}");
    assert_eq!(
        w.dock_sim.patients().len(),
        created_patients,
        "one Dock patient per Kareo patient"
    );
    // Patients are never duplicated: delivering again links the same ones.
    deliver_batch(
        &w.delivery("b"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &all,
    )
    .await;
    assert_eq!(w.dock_sim.patients().len(), created_patients);
    assert_eq!(w.dock_sim.tasks().len(), d.tasks);
}

#[tokio::test]
async fn a_timeout_after_dock_stored_the_task_ends_with_exactly_one() {
    let w = world().await;
    let (_, events) = cancellation(&w).await;
    w.dock_sim.inject(
        DockRule::new(DockFault::TimeoutAfterCommit(Duration::from_secs(2)))
            .on("POST", "/api/v1/task")
            .times(1),
    );
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!(d.failures.len(), 0, "reconciled at once: {d:?}");
    assert_eq!(d.tasks, 1);
    assert_eq!(w.dock_sim.tasks().len(), 1);
    assert_eq!(
        w.dock_sim.calls_to("POST", "/api/v1/task").len(),
        1,
        "never re-posted"
    );
}

#[tokio::test]
async fn a_crash_between_the_post_and_the_done_write_is_reconciled_not_reposted() {
    let w = world().await;
    let (_, events) = cancellation(&w).await;
    let key = tasks::deliver::task_key("acme", &events[0].id, "cancelled-appointment-callback");
    // First delivery: posts, then "crashes" before settling: emulate by claiming and posting
    // through a delivery whose ledger write we then undo to pending.
    deliver_batch(
        &w.delivery("crashed"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!(w.dock_sim.tasks().len(), 1);
    // Put the ledger back to what a crash leaves: a pending claim whose lease expires.
    let now = w.clock.now();
    let store2 = LocalStore::memory();
    store2
        .claim(&key, "crashed", now, now + chrono::Duration::seconds(1))
        .await
        .unwrap();
    w.kareo_sim.advance(chrono::Duration::seconds(5));
    let d2 = Delivery {
        ledger: &store2,
        ..w.delivery("retry")
    };
    let d = deliver_batch(&d2, &w.secrets, std::slice::from_ref(&w.tenant), &events).await;
    assert_eq!(
        (d.tasks, d.duplicates),
        (0, 1),
        "found by its reference: {d:?}"
    );
    assert_eq!(w.dock_sim.tasks().len(), 1);
    assert_eq!(
        store2.get(&key).await.unwrap().unwrap().state,
        LedgerState::Done
    );
}

/// An (event, rule) an earlier version settled under its old key (`task#<event>#<rule>`, no
/// tenant) is not delivered again after the upgrade; one never seen goes under the new key.
#[tokio::test]
async fn an_event_delivered_under_the_old_key_is_not_delivered_again() {
    let w = world().await;
    let (_, events) = cancellation(&w).await;
    let rule = "cancelled-appointment-callback";
    let old = format!("task#{}#{rule}", events[0].id);
    let now = w.clock.now();
    let store = LocalStore::memory();
    assert_eq!(
        store
            .claim(&old, "v1", now, now + chrono::Duration::seconds(30))
            .await
            .unwrap(),
        Claim::New
    );
    store
        .settle(
            &old,
            "v1",
            LedgerEntry {
                remote_id: Some("0a0c0000-0000-4000-8000-00000000d0c1".into()),
                ..LedgerEntry::settled(LedgerState::Done, now)
            },
        )
        .await
        .unwrap();
    let delivery = Delivery {
        ledger: &store,
        ..w.delivery("v2")
    };
    let d = deliver_batch(
        &delivery,
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.duplicates), (0, 1), "{d:?}");
    assert!(w.dock_sim.tasks().is_empty(), "nothing delivered again");
    let new = tasks::deliver::task_key("acme", &events[0].id, rule);
    assert_eq!(
        store.get(&new).await.unwrap(),
        None,
        "the new claim was given back"
    );
    // Without the old item, the new key takes it.
    let fresh = LocalStore::memory();
    let delivery = Delivery {
        ledger: &fresh,
        ..w.delivery("v2")
    };
    let d = deliver_batch(
        &delivery,
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!(d.tasks, 1, "{d:?}");
    assert_eq!(
        fresh.get(&new).await.unwrap().unwrap().state,
        LedgerState::Done
    );
    assert_eq!(fresh.get(&old).await.unwrap(), None);
}

/// One partner secret for the deployment (Dock's client id, client secret and API key), each
/// tenant's organisation and user ids in its config: the task is created as that tenant's
/// user in that tenant's organisation.
#[tokio::test]
async fn a_shared_partner_secret_with_the_tenants_ids_in_its_config_creates_the_task() {
    let mut w = world().await;
    let full = serde_json::to_value(w.dock_sim.secret()).unwrap();
    let (org, user) = (
        full["organization_id"].as_str().unwrap().to_string(),
        full["user_id"].as_str().unwrap().to_string(),
    );
    let mut partner = full.clone();
    partner.as_object_mut().unwrap().remove("organization_id");
    partner.as_object_mut().unwrap().remove("user_id");
    let yaml = w.tenant.to_yaml().replace(
        "dock:\n  secret: dock/acme\n",
        &format!("dock:\n  secret: dock/partner\n  organization_id: {org}\n  user_id: {user}\n"),
    );
    w.tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let c = w.kareo_sim.config().clone();
    w.secrets = LocalSecrets::from_map(BTreeMap::from([
        (
            "kareo/acme".to_string(),
            serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
        ),
        ("dock/partner".to_string(), partner),
    ]));
    let (_, events) = cancellation(&w).await;
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.failures.len()), (1, 0), "{d:?}");
    assert_eq!(w.dock_sim.tasks().len(), 1);
    // Without the ids anywhere, the failure names what is missing (and no value).
    let bare = TenantConfig::from_yaml(
        &yaml.replace(
            &format!("  organization_id: {org}\n  user_id: {user}\n"),
            "",
        ),
        "acme.yaml",
    )
    .unwrap();
    let d = deliver_batch(
        &w.delivery("b"),
        &w.secrets,
        std::slice::from_ref(&bare),
        &events,
    )
    .await;
    assert_eq!(d.failures.len(), 1, "{d:?}");
    let reason = &d.failures[0].reason;
    assert!(
        reason.contains("missing organization_id, user_id"),
        "{reason}"
    );
    assert!(
        !reason.contains(full["client_secret"].as_str().unwrap()),
        "{reason}"
    );
}

#[tokio::test]
async fn a_429_storm_delays_but_never_duplicates() {
    let w = world().await;
    let (_, events) = cancellation(&w).await;
    w.dock_sim.inject(
        DockRule::new(DockFault::RateLimit {
            retry_after_secs: Some(1),
        })
        .times(3),
    );
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.failures.len()), (1, 0), "{d:?}");
    assert_eq!(w.dock_sim.tasks().len(), 1);
}

#[tokio::test]
async fn two_concurrent_deliveries_create_one_task() {
    let w = world().await;
    let (_, events) = cancellation(&w).await;
    let (a, b) = (w.delivery("a"), w.delivery("b"));
    let tenants = std::slice::from_ref(&w.tenant);
    let (x, y) = tokio::join!(
        deliver_batch(&a, &w.secrets, tenants, &events),
        deliver_batch(&b, &w.secrets, tenants, &events)
    );
    assert_eq!(x.tasks + y.tasks, 1);
    assert_eq!(w.dock_sim.tasks().len(), 1);
}

#[tokio::test]
async fn an_unknown_list_fails_that_event_only_and_the_poller_moves_on() {
    let w = world().await;
    let yaml = w
        .tenant
        .to_yaml()
        .replace("list: Billing", "list: Billing Archive");
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let sink = DeliverySink::new(w.delivery("a"), &w.secrets, vec![tenant.clone()]);
    let config = PollConfig {
        owner: "poll".into(),
        ..PollConfig::default()
    };
    let p = Poller {
        kareo: &w.kareo,
        cursors: &w.store,
        snapshots: &w.store,
        sink: &sink,
        clock: &w.clock,
        config: &config,
    };
    let r = p
        .run(&tenant, &w.creds(), Family::Payments, Mode::Poll, None)
        .await;
    assert_eq!(
        r.outcome,
        sync::Outcome::Done,
        "permanent failures do not hold the cursor"
    );
    let dead = sink.dead_letters();
    assert_eq!(
        dead.len(),
        r.events,
        "every payment's task failed permanently"
    );
    assert!(dead
        .iter()
        .all(|f| f.class == "unknown_list" && f.reason.contains("Billing Archive")));
    assert!(w.dock_sim.tasks().is_empty());
}

#[tokio::test]
async fn transient_dock_failures_hold_the_cursor_until_delivered() {
    let w = world().await;
    w.dock_sim
        .inject(DockRule::new(DockFault::ServerError).times(100_000));
    let sink = DeliverySink::new(w.delivery("a"), &w.secrets, vec![w.tenant.clone()]);
    let config = PollConfig {
        owner: "poll".into(),
        ..PollConfig::default()
    };
    let p = Poller {
        kareo: &w.kareo,
        cursors: &w.store,
        snapshots: &w.store,
        sink: &sink,
        clock: &w.clock,
        config: &config,
    };
    let r = p
        .run(&w.tenant, &w.creds(), Family::Payments, Mode::Poll, None)
        .await;
    assert!(matches!(r.outcome, sync::Outcome::Failed { .. }), "{r:?}");
    w.dock_sim.clear_faults();
    let r = p
        .run(&w.tenant, &w.creds(), Family::Payments, Mode::Poll, None)
        .await;
    assert_eq!(r.outcome, sync::Outcome::Done);
    assert_eq!(
        w.dock_sim.tasks().len(),
        w.kareo_sim.rows(Family::Payments).len()
    );
}

#[tokio::test]
async fn shadow_mode_previews_a_weeks_changes_and_going_live_creates_only_new_ones() {
    let mut w = world().await;
    let until = w.kareo_sim.now() + chrono::Duration::days(7);
    w.tenant = TenantConfig::from_yaml(
        &format!(
            "{}shadow:\n  until: {}\n  list: Billing\n",
            w.tenant.to_yaml(),
            until.to_rfc3339()
        ),
        "acme.yaml",
    )
    .unwrap();
    let (_, events) = cancellation(&w).await;
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.failures.len()), (1, 0), "{d:?}");
    let tasks = w.dock_sim.tasks();
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(
        t.task_list.as_ref().map(|r| r.id.clone()),
        w.dock_sim.list_id("Billing"),
        "the preview list, not the rule's"
    );
    let title = t.description.clone().unwrap_or_default();
    assert!(
        title.starts_with(
            "[preview] cancelled-appointment-callback → Front Desk / Callbacks: Call "
        ),
        "{title}"
    );
    assert!(
        t.assigned_to.is_none() && t.patient.is_none(),
        "no assignee, no patient link"
    );
    assert!(w.dock_sim.patients().is_empty());

    // The week ends: live. What shadow showed is not created again...
    w.kareo_sim.advance(chrono::Duration::days(8));
    assert!(w.tenant.shadowing(w.clock.now()).is_none());
    let d = deliver_batch(
        &w.delivery("b"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.duplicates), (0, 1), "{d:?}");
    // ...and a change after the switch lands in the rule's list, once.
    let id = w
        .kareo_sim
        .rows(Family::Appointments)
        .into_iter()
        .find(|r| r["ConfirmationStatus"] != "Cancelled")
        .unwrap()["ID"]
        .clone();
    w.kareo_sim.update(
        Family::Appointments,
        &id,
        &[("ConfirmationStatus", "Cancelled")],
    );
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    let events = w.poll(Family::Appointments).await;
    let live: Vec<_> = events
        .iter()
        .filter(|e| e.record_id == id)
        .cloned()
        .collect();
    assert_eq!(live.len(), 1);
    for owner in ["c", "d"] {
        deliver_batch(
            &w.delivery(owner),
            &w.secrets,
            std::slice::from_ref(&w.tenant),
            &live,
        )
        .await;
    }
    let front_desk = w.dock_sim.list_id("Front Desk");
    let in_front_desk: Vec<_> = w
        .dock_sim
        .tasks()
        .into_iter()
        .filter(|t| t.task_list.as_ref().map(|r| r.id.clone()) == front_desk)
        .collect();
    assert_eq!(in_front_desk.len(), 1, "exactly once in the working list");

    // Without a preview list, shadow mode only reports: nothing is created, and going live
    // does not create it either.
    let w = {
        let mut w = world().await;
        w.tenant = TenantConfig::from_yaml(
            &format!(
                "{}shadow:\n  until: {}\n",
                w.tenant.to_yaml(),
                (w.kareo_sim.now() + chrono::Duration::days(7)).to_rfc3339()
            ),
            "acme.yaml",
        )
        .unwrap();
        w
    };
    let (_, events) = cancellation(&w).await;
    let d = deliver_batch(
        &w.delivery("a"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.previewed), (0, 1), "{d:?}");
    assert!(w.dock_sim.tasks().is_empty());
    w.kareo_sim.advance(chrono::Duration::days(8));
    let d = deliver_batch(
        &w.delivery("b"),
        &w.secrets,
        std::slice::from_ref(&w.tenant),
        &events,
    )
    .await;
    assert_eq!((d.tasks, d.duplicates), (0, 1));
}
