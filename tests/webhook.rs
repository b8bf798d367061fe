//! Dock webhooks → Kareo writes, end to end: a task completed in the Dock simulator, the
//! signed delivery Dock would send (as a Function URL event), the webhook handler, the write
//! executor, a new patient in the Kareo simulator. Forged, replayed, stale, malformed and
//! duplicate deliveries change nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dock_sim::webhook::{challenge_digest, sign};
use dock_sim::{DockSim, Seed, SeedField, WebhookDelivery};
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Family, KareoClient};
use kareo_dock_core::function_url;
use kareo_dock_core::local::{LocalSecrets, LocalStore};
use kareo_dock_core::ports::{Clock, Ledger, LedgerState};
use kareo_dock_core::webhook::{Hooks, HttpRequest, HttpResponse};
use kareo_dock_core::write::Writer;
use kareo_dock_core::TenantConfig;
use kareo_sim::{KareoSim, SimConfig};
use serde_json::{json, Value};

const SECRET: &str = "whsec-9f3b2c7d1e0a";

struct SimClock(KareoSim);
impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

struct World {
    kareo_sim: KareoSim,
    dock_sim: DockSim,
    kareo: KareoClient,
    dock: dock::DockClient,
    store: LocalStore,
    secrets: LocalSecrets,
    tenant: TenantConfig,
    clock: SimClock,
}

const HOOKS: &str = r#"webhooks:
  max_age: 5m
  rules:
    - name: intake
      event: [MARK_COMPLETE]
      list: Front Desk
      op: CreatePatient
      data:
        first_name: "{patient.firstName}"
        last_name: "{patient.lastName}"
        date_of_birth: "{patient.dob}"
        gender: "{field.Gender}"
        email: "{patient.email}"
        medical_record_number: "DOCK-{patient.mrn}"
"#;

async fn world() -> World {
    let kareo_sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let mut seed = Seed::default();
    seed.custom_fields.push(SeedField {
        id: None,
        name: "Gender".into(),
        target_type: "TASK".into(),
        field_type: "TEXT".into(),
    });
    let dock_sim = DockSim::start(seed).await;
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
    let dock = dock::DockClient::new(dock::DockConfig {
        api_url: dock_sim.api_url(),
        auth_url: dock_sim.auth_url(),
        rate_per_sec: 0,
        ..dock::DockConfig::default()
    })
    .unwrap();
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: 1\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {{}}\n{HOOKS}",
        c.practice_name
    );
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let mut dock_secret = serde_json::to_value(dock_sim.secret()).unwrap();
    dock_secret["webhook_secret"] = json!(SECRET);
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "kareo/acme".to_string(),
        json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
    );
    secrets.insert("dock/acme".to_string(), dock_secret);
    World {
        clock: SimClock(kareo_sim.clone()),
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
    /// Handles a request the way the webhook function does: through the Function URL event.
    async fn handle(
        &self,
        method: &str,
        path_query: &str,
        headers: Value,
        body: &str,
    ) -> HttpResponse {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let event = json!({
            "version": "2.0", "rawPath": path, "rawQueryString": query, "headers": headers,
            "requestContext": {"http": {"method": method, "path": path}},
            "body": body, "isBase64Encoded": false
        });
        let req: HttpRequest = function_url::parse(&event).expect("a Function URL event");
        let writer = Writer::new(&self.kareo, &self.store, &self.clock, "hook".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &self.dock,
            secrets: &self.secrets,
            tenants: std::slice::from_ref(&self.tenant),
        };
        hooks.handle(&req).await
    }

    async fn deliver(&self, d: &WebhookDelivery) -> HttpResponse {
        self.handle(
            "POST",
            "/acme",
            json!({"X-Dock-Signature-256": d.signature, "content-type": "application/json"}),
            &d.body,
        )
        .await
    }

    /// An intake task with a patient in "Front Desk"; returns its id.
    async fn intake_task(&self) -> String {
        let s = self.dock_sim.secret();
        let patient = self
            .dock
            .create_patient(
                &s,
                &dock::NewPatient {
                    first_name: "Ines".into(),
                    last_name: "Ortega-Lind".into(),
                    mrn: "D-77".into(),
                    dob: chrono::NaiveDate::from_ymd_opt(1991, 11, 2),
                    email: Some("ines@example.org".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut t = dock::NewTask::new(
            "Intake: new patient",
            self.dock_sim.list_id("Front Desk").unwrap(),
        );
        t.patient = Some(dock::Ref::new(patient.id));
        t.task_meta_data = vec![dock::MetaDataValue::text(
            self.dock_sim.field_id("Gender").unwrap(),
            "FEMALE",
        )];
        self.dock.create_task(&s, &t).await.unwrap().id
    }

    fn frontdesk(&self) -> String {
        self.dock_sim.user_id("frontdesk@acme.example").unwrap()
    }

    fn patients(&self) -> usize {
        self.kareo_sim.rows(Family::Patients).len()
    }
}

#[tokio::test]
async fn a_completed_intake_task_creates_the_patient_in_kareo_once() {
    let w = world().await;
    let task = w.intake_task().await;
    let before = w.patients();
    let d = w.dock_sim.webhook_delivery(
        SECRET,
        "MARK_COMPLETE",
        &task,
        &w.frontdesk(),
        w.clock.now(),
    );
    let r = w.deliver(&d).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["outcome"], "processed");
    let res = &r.body["results"][0];
    assert_eq!(res["status"], "done", "{}", r.body);
    assert_eq!(res["command"], format!("dock-{}-intake", d.event_id));
    let pid = res["kareo"]["PatientID"].to_string();
    assert_eq!(w.patients(), before + 1);
    let row = w
        .kareo_sim
        .rows(Family::Patients)
        .into_iter()
        .find(|p| p["ID"] == pid)
        .expect("the new Kareo patient");
    assert_eq!(row["FirstName"], "Ines");
    assert_eq!(row["LastName"], "Ortega-Lind");
    assert_eq!(
        row["Gender"], "Female",
        "Dock's FEMALE read as Kareo's Female"
    );
    assert_eq!(row["EmailAddress"], "ines@example.org");
    assert_eq!(row["MedicalRecordNumber"], "DOCK-D-77");
    let tz = w.tenant.timezone;
    let dob = kareo::dates::parse(&row["DOB"], tz).unwrap();
    assert_eq!(
        dob.with_timezone(&tz).date_naive().to_string(),
        "1991-11-02"
    );
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);

    // Dock delivers the same event again (duplicates happen): ignored, nothing written.
    let again = w.deliver(&d).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["outcome"], "duplicate");
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);
    let e = w
        .store
        .get(&format!("webhook#acme#{}", d.event_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.state, LedgerState::Done);
    assert!(!e.result.unwrap().contains("Ines"), "no PHI in the ledger");
}

#[tokio::test]
async fn forged_replayed_stale_and_malformed_deliveries_are_refused_and_change_nothing() {
    let w = world().await;
    let task = w.intake_task().await;
    let now = w.clock.now();
    let before = w.patients();

    // Signed with another secret.
    let forged = w.dock_sim.webhook_delivery(
        "not-the-secret",
        "MARK_COMPLETE",
        &task,
        &w.frontdesk(),
        now,
    );
    let r = w.deliver(&forged).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "signature does not match");

    // A genuine delivery whose body was altered on the way.
    let good = w
        .dock_sim
        .webhook_delivery(SECRET, "MARK_COMPLETE", &task, &w.frontdesk(), now);
    let tampered = WebhookDelivery {
        body: good.body.replace("MARK_COMPLETE", "MARK_COMPLETE "),
        ..good.clone()
    };
    assert_eq!(w.deliver(&tampered).await.status, 401);

    // No signature at all.
    let r = w
        .handle(
            "POST",
            "/acme",
            json!({"content-type": "application/json"}),
            &good.body,
        )
        .await;
    assert_eq!(r.status, 401);

    // A replay: correctly signed, but ten minutes ago.
    let old = w.dock_sim.webhook_delivery(
        SECRET,
        "MARK_COMPLETE",
        &task,
        &w.frontdesk(),
        now - chrono::Duration::minutes(10),
    );
    let r = w.deliver(&old).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "stale timestamp");

    // Signed, but not a Dock event.
    let body = r#"{"hello":"world"}"#;
    let r = w
        .handle(
            "POST",
            "/acme",
            json!({"x-dock-signature-256": sign(SECRET, now.timestamp(), body.as_bytes())}),
            body,
        )
        .await;
    assert_eq!(r.status, 400);

    // Another organisation's event signed with our secret.
    let mut ev: Value = serde_json::from_str(&good.body).unwrap();
    ev["organizationIdentifier"] = json!("0a0c0000-0000-4000-8000-00000000ffff");
    let r = w.deliver(&WebhookDelivery::of(SECRET, &ev, now)).await;
    assert_eq!(r.status, 403);

    // An unknown tenant path.
    let r = w
        .handle(
            "POST",
            "/zeta",
            json!({"x-dock-signature-256": good.signature}),
            &good.body,
        )
        .await;
    assert_eq!(r.status, 404);

    assert_eq!(w.patients(), before);
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
    assert_eq!(
        w.store
            .get(&format!("webhook#acme#{}", good.event_id))
            .await
            .unwrap(),
        None
    );

    // The genuine one still goes through afterwards.
    assert_eq!(w.deliver(&good).await.body["outcome"], "processed");
    assert_eq!(w.patients(), before + 1);
}

#[tokio::test]
async fn events_by_the_integration_user_or_without_a_rule_are_ignored() {
    let w = world().await;
    let task = w.intake_task().await;
    let now = w.clock.now();
    let own = w.dock_sim.secret().user_id;
    let r = w
        .deliver(
            &w.dock_sim
                .webhook_delivery(SECRET, "MARK_COMPLETE", &task, &own, now),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["outcome"], "ignored");
    let r = w
        .deliver(&w.dock_sim.webhook_delivery(
            SECRET,
            "UPDATE_TASK_PRIORITY",
            &task,
            &w.frontdesk(),
            now,
        ))
        .await;
    assert_eq!(r.body["outcome"], "ignored");
    // A task in another list: the rule's list does not match.
    let s = w.dock_sim.secret();
    let other = w
        .dock
        .create_task(
            &s,
            &dock::NewTask::new("Billing item", w.dock_sim.list_id("Billing").unwrap()),
        )
        .await
        .unwrap()
        .id;
    let r = w
        .deliver(
            &w.dock_sim
                .webhook_delivery(SECRET, "MARK_COMPLETE", &other, &w.frontdesk(), now),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"], json!([]));
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
}

#[tokio::test]
async fn a_task_without_the_patient_fields_gives_named_errors_and_writes_nothing() {
    let w = world().await;
    let s = w.dock_sim.secret();
    let bare = w
        .dock
        .create_task(
            &s,
            &dock::NewTask::new("No patient", w.dock_sim.list_id("Front Desk").unwrap()),
        )
        .await
        .unwrap()
        .id;
    let r = w
        .deliver(&w.dock_sim.webhook_delivery(
            SECRET,
            "MARK_COMPLETE",
            &bare,
            &w.frontdesk(),
            w.clock.now(),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let res = &r.body["results"][0];
    assert_eq!(res["status"], "invalid");
    let errors: Vec<String> = serde_json::from_value(res["errors"].clone()).unwrap();
    assert!(
        errors.contains(&"data.first_name: missing".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"data.date_of_birth: missing".to_string()),
        "{errors:?}"
    );
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
}

#[tokio::test]
async fn the_verification_challenge_is_answered_with_the_hmac_digest() {
    let w = world().await;
    let r = w
        .handle("GET", "/acme?message=a1b2%20c3", json!({}), "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["digest"], challenge_digest(SECRET, "a1b2 c3"));
    let r = w.handle("GET", "/acme", json!({}), "").await;
    assert_eq!(r.status, 400);
}
