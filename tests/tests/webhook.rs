//! Dock webhooks → Kareo writes, end to end: a task completed in the Dock simulator, the
//! signed delivery Dock would send (as a Function URL event), the webhook handler, the write
//! executor, a new patient in the Kareo simulator. Forged, replayed, stale, malformed and
//! duplicate deliveries change nothing; a request without the tenant's URL token costs no
//! secret read and no query; the verification challenge signs nothing outside a
//! registration; a Dock user cannot choose which Kareo chart a write touches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws::function_url;
use chrono::{DateTime, Utc};
use dock_sim::webhook::{challenge_digest, sign};
use dock_sim::{DockSim, Seed, SeedField, WebhookDelivery};
use domain::http::{HttpRequest, HttpResponse};
use domain::local::{LocalSecrets, LocalStore};
use domain::ports::FnClock;
use domain::ports::{
    Clock, HookRegistration, HookStore, Ledger, LedgerState, Link, LinkKey, LinkStore, SecretError,
    SecretSource, SecretValue, StoreError, TenantStore,
};
use domain::{ChangeEvent, ChangeKind, TenantConfig};
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use serde_json::{json, Value};
use tasks::deliver::Delivery;
use tasks::dock::DockTasks;
use writeback::webhook::gate::ARMED_FOR;
use writeback::webhook::{Directory, DirectoryCache, Hooks, Token};
use writeback::write::Writer;

const SECRET: &str = "whsec-9f3b2c7d1e0a";

struct World {
    kareo_sim: KareoSim,
    dock_sim: DockSim,
    kareo: KareoClient,
    dock: dock::DockClient,
    store: LocalStore,
    secrets: LocalSecrets,
    tenant: TenantConfig,
    /// The tenant's YAML as written.
    yaml: String,
    clock: FnClock,
    token: Token,
}

/// A request as the webhook function receives it: through a Function URL event.
fn request(method: &str, path_query: &str, headers: Value, body: &str) -> HttpRequest {
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let event = json!({
        "version": "2.0", "rawPath": path, "rawQueryString": query, "headers": headers,
        "requestContext": {"http": {"method": method, "path": path}, "timeEpoch": 1_764_000_000_000_i64},
        "body": body, "isBase64Encoded": false
    });
    function_url::parse(&event).expect("a Function URL event")
}

/// Counts the calls that reach a store or the secrets: a request refused at the gate must
/// make none.
#[derive(Clone, Default)]
struct Counted<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            calls: Arc::default(),
        }
    }
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TenantStore for Counted<LocalStore> {
    async fn tenants(&self) -> Result<Vec<TenantConfig>, StoreError> {
        self.tick();
        self.inner.tenants().await
    }
    async fn put(&self, config: &TenantConfig) -> Result<(), StoreError> {
        self.tick();
        TenantStore::put(&self.inner, config).await
    }
}

impl HookStore for Counted<LocalStore> {
    async fn hooks(&self) -> Result<Vec<(String, HookRegistration)>, StoreError> {
        self.tick();
        self.inner.hooks().await
    }
    async fn hook(&self, tenant: &str) -> Result<Option<HookRegistration>, StoreError> {
        self.tick();
        self.inner.hook(tenant).await
    }
    async fn put_hook(&self, tenant: &str, hook: &HookRegistration) -> Result<(), StoreError> {
        self.tick();
        self.inner.put_hook(tenant, hook).await
    }
}

impl LinkStore for Counted<LocalStore> {
    async fn link(&self, tenant: &str, key: &LinkKey) -> Result<Option<Link>, StoreError> {
        self.tick();
        self.inner.link(tenant, key).await
    }
    async fn put_link(&self, tenant: &str, key: &LinkKey, link: &Link) -> Result<(), StoreError> {
        self.tick();
        self.inner.put_link(tenant, key, link).await
    }
}

impl SecretSource for Counted<LocalSecrets> {
    async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.tick();
        self.inner.get(name).await
    }
}

/// The mapping: a task with the Dock patient linked for each new Kareo patient.
const RULES: &str = r#"rules:
  - name: new-patient
    interface: patients
    on: any
    task:
      list: Front Desk
      description: "New patient {ID}"
      patient: true
  - name: confirm-call
    interface: appointments
    on: created
    task:
      list: Billing
      description: "Confirm appointment {ID}"
      patient: true
"#;

const HOOKS: &str = r#"webhooks:
  max_age: 5m
  rules:
    - name: phone-confirmed
      event: UPDATE_TASK_STATUS
      list: Front Desk
      op: UpdatePatient
      modify_existing: true
      data:
        patient_id: "{link.patient_id}"
        home_phone: "(617) 555-0142"
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
    - name: confirmed-by-call
      event: MARK_COMPLETE
      list: Billing
      op: UpdateAppointment
      modify_existing: true
      data:
        appointment_id: "{link.appointment_id}"
        status: Confirmed
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
        "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: 1\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {{}}\n  appointments: {{}}\n{RULES}{HOOKS}",
        c.practice_name
    );
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let yaml_text = yaml.clone();
    let mut dock_secret = serde_json::to_value(dock_sim.secret()).unwrap();
    dock_secret["webhook_secret"] = json!(SECRET);
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "kareo/acme".to_string(),
        json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
    );
    secrets.insert("dock/acme".to_string(), dock_secret);
    let store = LocalStore::memory();
    TenantStore::put(&store, &tenant).await.unwrap();
    let token = Token::generate();
    store
        .put_hook("acme", &token.registration(Utc::now(), None, None))
        .await
        .unwrap();
    World {
        clock: FnClock::new({
            let sim = kareo_sim.clone();
            move || sim.now()
        }),
        kareo_sim,
        dock_sim,
        kareo,
        dock,
        store,
        secrets: LocalSecrets::from_map(secrets),
        tenant,
        yaml: yaml_text,
        token,
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
        let req = request(method, path_query, headers, body);
        let directory = Directory::load(&self.store).await.unwrap();
        let writer = Writer::new(&self.kareo, &self.store, &self.clock, "hook".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &self.dock,
            secrets: &self.secrets,
            directory: &directory,
            store: &self.store,
        };
        hooks.handle(&req).await
    }

    /// Task creation for one change event, as the task function runs it: the tasks (and
    /// the links a webhook write later relies on) this product makes for it.
    async fn create_tasks(&self, event: &ChangeEvent) -> tasks::deliver::Delivered {
        let c = self.kareo_sim.config().clone();
        let creds = kareo::Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        };
        let tasks = DockTasks::new(self.dock.clone());
        let delivery = Delivery {
            dock: &tasks,
            ledger: &self.store,
            kareo: &self.kareo,
            clock: &self.clock,
            owner: "deliver".into(),
            lease: Duration::from_secs(60),
        };
        delivery
            .deliver(
                &self.tenant,
                &self.dock_sim.secret(),
                Some(&creds),
                std::slice::from_ref(event),
            )
            .await
    }

    /// The webhook function's scheduled catch-up, over the last day.
    async fn catch_up(&self) -> writeback::webhook::CatchUp {
        let directory = Directory::load(&self.store).await.unwrap();
        let writer = Writer::new(&self.kareo, &self.store, &self.clock, "catch-up".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &self.dock,
            secrets: &self.secrets,
            directory: &directory,
            store: &self.store,
        };
        let tenant = directory.registered().next().expect("acme is registered");
        let now = self.clock.now();
        hooks
            .catch_up(
                tenant,
                now - chrono::Duration::hours(24),
                now + chrono::Duration::seconds(1),
            )
            .await
            .unwrap()
    }

    /// The tenant's webhook URL path: `/acme/<token>`.
    fn path(&self) -> String {
        format!("/acme/{}", self.token.expose())
    }

    /// Arms (or disarms) the registration, as `kareo-dock webhook register` does.
    async fn arm(&self, on: bool) {
        let now = self.clock.now();
        let until = on.then(|| now + chrono::Duration::from_std(ARMED_FOR).unwrap());
        self.store
            .put_hook("acme", &self.token.registration(now, until, None))
            .await
            .unwrap();
    }

    async fn deliver(&self, d: &WebhookDelivery) -> HttpResponse {
        self.handle(
            "POST",
            &self.path(),
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
async fn a_dropped_delivery_is_read_back_from_dock_once_though_its_top_target_is_not_the_task() {
    let w = world().await;
    w.dock_sim.set_reality(dock_sim::Reality {
        target_differs: true,
        ..dock_sim::Reality::default()
    });
    let task = w.intake_task().await;
    let before = w.patients();
    // Dock records the event but never delivers it.
    let e = w
        .dock_sim
        .webhook_event("MARK_COMPLETE", &task, &w.frontdesk(), w.clock.now());
    assert_ne!(e["targetIdentifier"], json!(task));
    let r = w.catch_up().await;
    assert_eq!((r.fetched, r.processed, r.refused), (1, 1, 0), "{r:?}");
    assert_eq!(w.patients(), before + 1);
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);
    // The next catch-up, and a late delivery of the same event, are duplicates.
    let r = w.catch_up().await;
    assert_eq!((r.processed, r.duplicates), (0, 1), "{r:?}");
    let late = WebhookDelivery::of(SECRET, &e, w.clock.now());
    assert_eq!(w.deliver(&late).await.body["outcome"], "duplicate");
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);
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
            &w.path(),
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
            &w.path(),
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

    // An unknown tenant path, and the tenant's path without its token.
    for path in [format!("/zeta/{}", w.token.expose()), "/acme".to_string()] {
        let r = w
            .handle(
                "POST",
                &path,
                json!({"x-dock-signature-256": good.signature}),
                &good.body,
            )
            .await;
        assert_eq!(r.status, 404, "{path}");
    }

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
    // A task in another list: the intake rule's list does not match; the Billing rule does,
    // but a task the product did not make links to no appointment, so nothing is written.
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
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{}", r.body);
    assert_eq!(results[0]["rule"], "confirmed-by-call");
    assert_eq!(results[0]["status"], "invalid");
    assert_eq!(
        results[0]["errors"],
        json!(["data.appointment_id: missing"])
    );
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
    assert_eq!(w.kareo_sim.call_count("UpdateAppointment"), 0);
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
async fn the_verification_challenge_is_answered_with_the_hmac_digest_only_while_armed() {
    let w = world().await;
    let q = format!("{}?message=a1b2%20c3", w.path());
    let r = w.handle("GET", &q, json!({}), "").await;
    assert_eq!(r.status, 403, "not armed: {}", r.body);
    assert!(r.body.get("digest").is_none());
    w.arm(true).await;
    let r = w.handle("GET", &q, json!({}), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["digest"], challenge_digest(SECRET, "a1b2 c3"));
    let r = w.handle("GET", &w.path(), json!({}), "").await;
    assert_eq!(r.status, 400);
    // The armed window closes.
    w.kareo_sim
        .advance(chrono::Duration::from_std(ARMED_FOR).unwrap());
    let r = w.handle("GET", &q, json!({}), "").await;
    assert_eq!(r.status, 403);
}

/// The attack this endpoint was open to: ask the challenge to sign a delivery body of one's
/// choosing, then POST that body with the digest as its signature.
#[tokio::test]
async fn the_forged_challenge_attack_is_refused_and_reaches_neither_kareo_nor_the_state() {
    let w = world().await;
    let task = w.intake_task().await;
    let now = w.clock.now();
    let mut ev = w
        .dock_sim
        .webhook_event("MARK_COMPLETE", &task, &w.frontdesk(), now);
    ev["eventIdentifier"] = json!("e0e0e0e0-0000-4000-8000-0000000f0e6e");
    let body = ev.to_string();
    let q = |path: &str| {
        let m: String = form_urlencoded::byte_serialize(body.as_bytes()).collect();
        format!("{path}?message={m}")
    };
    // Without the token (the attacker knows the slug): the same 404 as any unknown path.
    let r = w.handle("GET", &q("/acme"), json!({}), "").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (404, json!({"outcome": "not_found"}))
    );
    // With the token, outside a registration: nothing signed (not even a plain message).
    let r = w.handle("GET", &q(&w.path()), json!({}), "").await;
    assert_eq!(r.status, 400);
    assert!(r.body.get("digest").is_none());
    let r = w
        .handle("GET", &format!("{}?message=abc", w.path()), json!({}), "")
        .await;
    assert_eq!(r.status, 403);
    // With the token, during a registration: a message that could be a body is not signed.
    w.arm(true).await;
    let r = w.handle("GET", &q(&w.path()), json!({}), "").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.get("digest").is_none());
    // What the attacker could have sent had the challenge answered: refused.
    let sig = format!(
        "t={},v1={}",
        now.timestamp(),
        challenge_digest("whatever the endpoint answered", &body)
    );
    let r = w
        .handle(
            "POST",
            &w.path(),
            json!({"x-dock-signature-256": sig}),
            &body,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
    assert_eq!(
        w.store
            .get("webhook#acme#e0e0e0e0-0000-4000-8000-0000000f0e6e")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn requests_without_the_token_read_no_secret_and_query_nothing() {
    let w = world().await;
    let task = w.intake_task().await;
    let good = w.dock_sim.webhook_delivery(
        SECRET,
        "MARK_COMPLETE",
        &task,
        &w.frontdesk(),
        w.clock.now(),
    );
    let store = Counted::new(w.store.clone());
    let secrets = Counted::new(w.secrets.clone());
    let cache = DirectoryCache::new(Duration::from_secs(3600));
    // The function reads the directory at start, before any request.
    cache.get(&store).await.unwrap();
    let at_start = store.calls();
    assert_eq!(at_start, 2, "one query of tenants, one of registrations");
    let other = Token::generate();
    let too_big = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(String, &str, u16)> = vec![
        ("/acme".into(), good.body.as_str(), 404),
        ("/acme/".into(), good.body.as_str(), 404),
        (format!("/acme/{}", other.expose()), good.body.as_str(), 404),
        (
            format!("/zeta/{}", w.token.expose()),
            good.body.as_str(),
            404,
        ),
        (
            format!("/acme/{}/x", w.token.expose()),
            good.body.as_str(),
            404,
        ),
        (format!("/{}", w.token.expose()), good.body.as_str(), 404),
        (w.path(), too_big.as_str(), 413),
    ];
    let writer = Writer::new(&w.kareo, &w.store, &w.clock, "hook".into());
    // As the function serves a request: the cached directory, counted store and secrets.
    let serve = |req: HttpRequest| {
        let (writer, cache, store, secrets, dock) = (&writer, &cache, &store, &secrets, &w.dock);
        async move {
            let directory = cache.get(store).await.unwrap();
            let hooks = Hooks {
                writer,
                dock,
                secrets,
                directory: &directory,
                store,
            };
            hooks.handle(&req).await
        }
    };
    let signed = json!({"x-dock-signature-256": good.signature});
    for _ in 0..50 {
        for (path, body, status) in &cases {
            let req = request("POST", &format!("{path}?message=abc"), signed.clone(), body);
            let r = serve(req).await;
            assert_eq!(r.status, *status, "{path}");
            if *status == 404 {
                assert_eq!(r.body, json!({"outcome": "not_found"}), "{path}");
            }
        }
    }
    assert_eq!(
        store.calls(),
        at_start,
        "no query for a request without the token"
    );
    assert_eq!(secrets.calls(), 0, "no secret read");
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
    assert_eq!(
        w.store
            .get(&format!("webhook#acme#{}", good.event_id))
            .await
            .unwrap(),
        None
    );
    // The same delivery at the tenant's URL goes through.
    let r = serve(request("POST", &w.path(), signed, &good.body)).await;
    assert_eq!(r.body["outcome"], "processed", "{}", r.body);
    assert!(secrets.calls() >= 1);
}

#[tokio::test]
async fn a_replay_with_a_fresh_t_is_refused() {
    let w = world().await;
    let task = w.intake_task().await;
    let d = w.dock_sim.webhook_delivery(
        SECRET,
        "MARK_COMPLETE",
        &task,
        &w.frontdesk(),
        w.clock.now(),
    );
    assert_eq!(w.deliver(&d).await.body["outcome"], "processed");
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);
    // The header's `t` is not signed: anyone can refresh it and keep `v1`.
    let v1 = d.signature.split_once(",v1=").unwrap().1.to_string();
    let refreshed = |at: DateTime<Utc>| WebhookDelivery {
        signature: format!("t={},v1={v1}", at.timestamp()),
        ..d.clone()
    };
    // Within max_age: a duplicate.
    let r = w.deliver(&refreshed(w.clock.now())).await;
    assert_eq!(
        (r.status, r.body["outcome"].clone()),
        (200, json!("duplicate"))
    );
    // Later, even with the dedupe item gone: the signed createdAt is stale.
    w.kareo_sim.advance(chrono::Duration::days(8));
    let r = w.deliver(&refreshed(w.clock.now())).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"], "stale timestamp");
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 1);
}

#[tokio::test]
async fn an_ignored_event_replayed_after_a_rule_is_added_is_a_duplicate() {
    let w = world().await;
    let task = w.intake_task().await;
    let d = w.dock_sim.webhook_delivery(
        SECRET,
        "ADD_TASK_LABEL",
        &task,
        &w.frontdesk(),
        w.clock.now(),
    );
    let r = w.deliver(&d).await;
    assert_eq!(r.body["outcome"], "ignored", "{}", r.body);
    let e = w
        .store
        .get(&format!("webhook#acme#{}", d.event_id))
        .await
        .unwrap()
        .expect("an ignored event is remembered");
    assert_eq!(e.state, LedgerState::Done);
    assert!(e.expires.is_some(), "and forgotten after a while");
    // A rule for that event is added; the old delivery comes again.
    let yaml = w.yaml.replace(
        "    - name: intake\n",
        "    - name: labelled\n      event: ADD_TASK_LABEL\n      op: CreatePatient\n      data:\n        first_name: \"{patient.firstName}\"\n        last_name: \"{patient.lastName}\"\n        date_of_birth: \"{patient.dob}\"\n    - name: intake\n",
    );
    let t2 = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    assert_eq!(t2.hooks.rules.len(), 4, "{yaml}");
    TenantStore::put(&w.store, &t2).await.unwrap();
    let r = w.deliver(&d).await;
    assert_eq!(r.body["outcome"], "duplicate", "{}", r.body);
    assert_eq!(w.kareo_sim.call_count("CreatePatient"), 0);
}

#[test]
fn a_webhook_rule_cannot_target_a_record_through_a_dock_field_nor_change_one_without_opting_in() {
    let base = "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: k\n  practice: P\ndock:\n  secret: d\nfamilies:\n  patients: {}\nwebhooks:\n  rules:\n    - name: upd\n      event: MARK_COMPLETE\n      op: UpdatePatient\n      modify_existing: true\n      data:\n        patient_id: \"{patient.mrn}\"\n        home_phone: \"{field.Phone}\"\n";
    let err = match TenantConfig::from_yaml(base, "acme.yaml") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a Dock field as the target is refused"),
    };
    assert!(err.contains("acme.yaml:18"), "{err}");
    assert!(
        err.contains("patient_id: must be \"{link.patient_id}\""),
        "{err}"
    );
    let no_opt_in = base
        .replace("      modify_existing: true\n", "")
        .replace("{patient.mrn}", "{link.patient_id}");
    let err = match TenantConfig::from_yaml(&no_opt_in, "acme.yaml") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an update without the opt-in is refused"),
    };
    assert!(err.contains("acme.yaml:15"), "{err}");
    assert!(err.contains("set modify_existing: true"), "{err}");
    let ok = base.replace("{patient.mrn}", "{link.patient_id}");
    assert!(TenantConfig::from_yaml(&ok, "acme.yaml").is_ok());
}

/// The product created the Dock patient for Kareo patient A and linked its task; a Dock user
/// then gives that Dock patient the MRN of patient B. A write from the task still goes to A;
/// once the Dock patient no longer matches A, nothing is written and the command waits for
/// review.
#[tokio::test]
async fn a_confirmation_call_completed_in_dock_confirms_the_appointment_it_was_made_for() {
    let w = world().await;
    let appt = w.kareo_sim.rows(Family::Appointments)[0].clone();
    let pid = appt["PatientID"].to_string();
    let patient = w
        .kareo_sim
        .rows(Family::Patients)
        .into_iter()
        .find(|p| p["ID"] == pid)
        .expect("the appointment's patient");
    let mut record: BTreeMap<String, String> = ["ID", "PatientID", "StartDate"]
        .iter()
        .filter_map(|k| appt.get(*k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    record.insert("FirstName".into(), patient["FirstName"].to_string());
    let event = ChangeEvent {
        id: "ev-appt".into(),
        tenant: "acme".into(),
        family: Family::Appointments,
        record_id: appt["ID"].to_string(),
        version: w.clock.now(),
        kind: ChangeKind::Created,
        changes: Vec::new(),
        record,
    };
    let out = w.create_tasks(&event).await;
    assert_eq!(out.tasks, 1, "{:?}", out.failures);
    let task = w
        .dock_sim
        .tasks()
        .into_iter()
        .find(|t| t.description.as_deref() == Some(&format!("Confirm appointment {}", appt["ID"])))
        .expect("the confirmation task");
    // The front desk makes the call and marks the task complete in Dock.
    let d = w.dock_sim.webhook_delivery(
        SECRET,
        "MARK_COMPLETE",
        &task.id,
        &w.frontdesk(),
        w.clock.now(),
    );
    let r = w.deliver(&d).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let res = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "confirmed-by-call")
        .cloned()
        .unwrap_or_else(|| panic!("{}", r.body));
    assert_eq!(res["status"], "done", "{}", r.body);
    let row = w
        .kareo_sim
        .rows(Family::Appointments)
        .into_iter()
        .find(|a| a["ID"] == appt["ID"])
        .unwrap();
    assert_eq!(row["ConfirmationStatus"], "Confirmed");
    assert_eq!(w.kareo_sim.call_count("UpdateAppointment"), 1);
    // Delivered again: a duplicate, not a second write.
    assert_eq!(w.deliver(&d).await.body["outcome"], "duplicate");
    assert_eq!(w.kareo_sim.call_count("UpdateAppointment"), 1);
}

#[tokio::test]
async fn a_dock_user_editing_an_mrn_cannot_redirect_a_write() {
    let w = world().await;
    let rows = w.kareo_sim.rows(Family::Patients);
    let (a, b) = (&rows[0], &rows[1]);
    let record: BTreeMap<String, String> = ["ID", "FirstName", "LastName", "DOB"]
        .iter()
        .filter_map(|k| a.get(*k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    let event = ChangeEvent {
        id: "ev-patient-a".into(),
        tenant: "acme".into(),
        family: Family::Patients,
        record_id: a["ID"].to_string(),
        version: w.clock.now(),
        kind: ChangeKind::Created,
        changes: Vec::new(),
        record,
    };
    let dock_secret = w.dock_sim.secret();
    let out = w.create_tasks(&event).await;
    assert_eq!(out.tasks, 1, "{:?}", out.failures);
    let task = w
        .dock_sim
        .tasks()
        .into_iter()
        .find(|t| t.description.as_deref() == Some(&format!("New patient {}", a["ID"])))
        .expect("the task");
    let dock_patient = task.patient.clone().expect("linked").id;
    // A Dock user re-labels the patient with B's chart number.
    w.dock
        .patch_patient(
            &dock_secret,
            &dock_patient,
            &dock::PatientPatch {
                mrn: Some(b["ID"].to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let phone = |row_id: &str| {
        w.kareo_sim
            .rows(Family::Patients)
            .into_iter()
            .find(|p| p["ID"] == row_id)
            .and_then(|p| p.get("HomePhone").map(|v| v.to_string()))
    };
    let b_phone = phone(&b["ID"]);
    let d = w.dock_sim.webhook_delivery(
        SECRET,
        "UPDATE_TASK_STATUS",
        &task.id,
        &w.frontdesk(),
        w.clock.now(),
    );
    let r = w.deliver(&d).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let res = &r.body["results"][0];
    assert_eq!(res["status"], "done", "{}", r.body);
    assert_eq!(res["kareo"]["PatientID"].to_string(), a["ID"].to_string());
    assert_eq!(phone(&a["ID"]).as_deref(), Some("(617) 555-0142"));
    assert_eq!(phone(&b["ID"]), b_phone, "B's chart is untouched");
    let updates = w.kareo_sim.call_count("UpdatePatient");

    // The Dock patient is renamed: it no longer is Kareo's A, so the next write waits.
    w.dock
        .patch_patient(
            &dock_secret,
            &dock_patient,
            &dock::PatientPatch {
                first_name: Some("Someone".into()),
                last_name: Some("Else".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let d2 = w.dock_sim.webhook_delivery(
        SECRET,
        "UPDATE_TASK_STATUS",
        &task.id,
        &w.frontdesk(),
        w.clock.now(),
    );
    let r = w.deliver(&d2).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let res = &r.body["results"][0];
    assert_eq!(res["status"], "needs_review", "{}", r.body);
    assert!(res["reason"]
        .as_str()
        .unwrap()
        .contains("do not match Kareo patient"));
    assert_eq!(w.kareo_sim.call_count("UpdatePatient"), updates);
    let held = w
        .store
        .get(&format!("write#acme#dock-{}-phone-confirmed", d2.event_id))
        .await
        .unwrap()
        .expect("held in the write ledger");
    assert_eq!(held.state, LedgerState::NeedsReview);
}
