//! Write-back end to end: commands → the write executor → the Kareo simulator, with the
//! embedded ledger. Each operation once; validation; exactly once per command id; ambiguous
//! outcomes reconciled or surfaced as needs_review; every request valid against Kareo's XSD.

use std::collections::BTreeMap;
use std::time::Duration;

use domain::local::{LocalSecrets, LocalStore};
use domain::ports::FnClock;
use domain::ports::{Clock, Ledger, LedgerState};
use domain::TenantConfig;
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{Fault, FaultRule, KareoSim, SimConfig};
use serde_json::{json, Value};
use writeback::write::command::update_body;
use writeback::write::{run_command, Caller, Command, Data, WriteResult, WriteStatus, Writer};

struct World {
    sim: KareoSim,
    kareo: KareoClient,
    store: LocalStore,
    secrets: LocalSecrets,
    tenant: TenantConfig,
    clock: FnClock,
}

fn tenant_yaml(sim: &KareoSim) -> String {
    format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\n  practice_id: {}\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {{}}\n",
        (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        sim.config().practice_name,
        sim.config().practice_id,
    )
}

async fn world_with(timeout: Duration) -> World {
    world_of(timeout, kareo_sim::Reality::default()).await
}

async fn world_of(timeout: Duration, reality: kareo_sim::Reality) -> World {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        reality,
        ..SimConfig::default()
    })
    .await;
    let c = sim.config().clone();
    let kareo = KareoClient::new(ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total: Duration::from_secs(2),
        },
        throttle_margin: Duration::from_millis(1),
        timeout,
        ..ClientConfig::default()
    })
    .unwrap();
    kareo.throttle().set_live(
        &c.customer_key,
        kareo::schema::op_names().map(|o| (o.to_string(), Duration::ZERO)),
    );
    let tenant = TenantConfig::from_yaml(&tenant_yaml(&sim), "acme.yaml").unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "kareo/acme".to_string(),
        json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
    );
    World {
        clock: FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        }),
        sim,
        kareo,
        store: LocalStore::memory(),
        secrets: LocalSecrets::from_map(secrets),
        tenant,
    }
}

async fn world() -> World {
    world_with(Duration::from_secs(10)).await
}

impl World {
    fn writer(&self) -> Writer<'_, LocalStore, FnClock> {
        Writer::new(&self.kareo, &self.store, &self.clock, "test".into())
    }

    async fn run(&self, cmd: Value) -> WriteResult {
        run_command(
            &self.writer(),
            &self.secrets,
            std::slice::from_ref(&self.tenant),
            &cmd,
            Caller::Operator("test"),
        )
        .await
    }

    fn first(&self, family: Family) -> String {
        self.sim.rows(family)[0][family.id_member()].clone()
    }

    fn row(&self, family: Family, id: &str) -> Option<BTreeMap<String, String>> {
        self.sim
            .rows(family)
            .into_iter()
            .find(|r| r.get(family.id_member()).map(String::as_str) == Some(id))
    }
}

fn cmd(id: &str, op: &str, data: Value) -> Value {
    json!({"id": id, "tenant": "acme", "op": op, "data": data})
}

fn new_patient() -> Value {
    json!({
        "first_name": "Zoë", "last_name": "O'Brien & <Søn>", "date_of_birth": "1984-03-07",
        "gender": "Female", "city": "Boston", "address_line1": "1 Main St",
        "address_line2": "Apt 4", "home_phone": "(617) 555-0100", "email": "zoe@example.org"
    })
}

fn kareo_id(r: &WriteResult, key: &str) -> String {
    r.kareo
        .as_ref()
        .and_then(|k| k.get(key))
        .unwrap_or_else(|| panic!("{key} in {r:?}"))
        .to_string()
}

/// Runs `c`, expects done, runs it again: the stored answer, and no second Kareo call.
async fn once(w: &World, c: Value, op: &str) -> WriteResult {
    let before = w.sim.call_count(op);
    let r = w.run(c.clone()).await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
    assert!(!r.repeated && !r.reconciled, "{r:?}");
    assert_eq!(w.sim.call_count(op), before + 1);
    let again = w.run(c).await;
    assert_eq!(again.status, WriteStatus::Done, "{again:?}");
    assert!(again.repeated, "{again:?}");
    assert_eq!(again.kareo, r.kareo);
    assert_eq!(
        w.sim.call_count(op),
        before + 1,
        "a repeated id calls Kareo no more"
    );
    r
}

#[tokio::test]
async fn each_operation_runs_end_to_end_exactly_once_per_command_id() {
    let w = world().await;
    let tz = w.tenant.timezone;

    // CreatePatient.
    let r = once(
        &w,
        cmd("p-1", "CreatePatient", new_patient()),
        "CreatePatient",
    )
    .await;
    let pid = kareo_id(&r, "PatientID");
    let row = w.row(Family::Patients, &pid).expect("created");
    assert_eq!(row["LastName"], "O'Brien & <Søn>");
    assert_eq!(row["City"], "Boston");
    assert_eq!(row["Gender"], "Female");
    let dob = kareo::dates::parse(&row["DOB"], tz).unwrap();
    assert_eq!(
        dob.with_timezone(&tz).date_naive().to_string(),
        "1984-03-07"
    );

    // UpdatePatient: changes what it names, clears what it sets to null, keeps the rest.
    let gets = w.sim.call_count("GetPatient");
    let r = once(
        &w,
        cmd(
            "p-2",
            "UpdatePatient",
            json!({"patient_id": pid.parse::<i64>().unwrap(), "city": "Cambridge", "address_line2": null}),
        ),
        "UpdatePatient",
    )
    .await;
    assert_eq!(r.kareo.as_ref().unwrap()["verified"], true, "{r:?}");
    assert_eq!(
        w.sim.call_count("GetPatient"),
        gets + 2,
        "read before, read back after"
    );
    let row = w.row(Family::Patients, &pid).unwrap();
    assert_eq!(row["City"], "Cambridge");
    assert_eq!(
        row.get("AddressLine2").map(String::as_str).unwrap_or(""),
        ""
    );
    assert_eq!(row["FirstName"], "Zoë");
    assert_eq!(row["AddressLine1"], "1 Main St");
    assert_eq!(row["HomePhone"], "(617) 555-0100");
    assert_eq!(row["Gender"], "Female");

    // CreateAppointment.
    let provider = w.first(Family::Providers);
    let location = w.first(Family::ServiceLocations);
    let r = once(
        &w,
        cmd(
            "a-1",
            "CreateAppointment",
            json!({"patient_id": pid, "start": "2026-10-05T10:00:00-04:00",
                   "end": "2026-10-05T10:30:00-04:00", "service_location_id": location,
                   "provider_id": provider, "notes": "follow-up"}),
        ),
        "CreateAppointment",
    )
    .await;
    let aid = kareo_id(&r, "AppointmentId");
    let row = w.row(Family::Appointments, &aid).expect("created");
    assert_eq!(row["PatientID"], pid);
    assert_eq!(row["AppointmentDuration"], "30");
    assert_eq!(
        kareo::dates::parse(&row["StartDate"], tz)
            .unwrap()
            .to_rfc3339(),
        "2026-10-05T14:00:00+00:00"
    );

    // DeleteAppointment.
    let r = once(
        &w,
        cmd("a-2", "DeleteAppointment", json!({"appointment_id": aid})),
        "DeleteAppointment",
    )
    .await;
    assert_eq!(r.kareo.as_ref().unwrap()["Deleted"], true);
    assert!(w.row(Family::Appointments, &aid).is_none(), "deleted");

    // CreateEncounter.
    let code = w.sim.rows(Family::ProcedureCodes)[0]["ProcedureCode"].clone();
    let r = once(
        &w,
        cmd(
            "e-1",
            "CreateEncounter",
            json!({"patient_id": pid, "service_date": "2026-09-30",
                   "rendering_provider_id": provider, "service_location_id": location,
                   "service_lines": [{"procedure_code": code, "diagnosis_codes": ["J06.9"],
                                      "units": 1, "unit_charge": "120.00"}]}),
        ),
        "CreateEncounter",
    )
    .await;
    let eid = kareo_id(&r, "EncounterID");
    let row = w.row(Family::Encounters, &eid).expect("created");
    assert_eq!(row["PatientID"], pid);
    let charges: Vec<_> = w
        .sim
        .rows(Family::Charges)
        .into_iter()
        .filter(|c| c.get("EncounterID") == Some(&eid))
        .collect();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["ProcedureCode"], code);
    assert_eq!(charges[0]["TotalCharges"], "120.00");

    // CreatePayment.
    let r = once(
        &w,
        cmd(
            "pay-1",
            "CreatePayment",
            json!({"payer_type": "Patient", "patient_id": pid, "amount": "125.5",
                   "payment_method": "Check", "reference_number": "CHK-1042",
                   "post_date": "2026-10-01"}),
        ),
        "CreatePayment",
    )
    .await;
    let payid = kareo_id(&r, "PaymentID");
    let row = w.row(Family::Payments, &payid).expect("created");
    assert_eq!(row["Amount"], "125.50");
    assert_eq!(row["ReferenceNumber"], "CHK-1042");
    assert_eq!(row["PaymentMethod"], "Check");

    // The ledger holds the ids, and its reasons no data.
    let e = w.store.get("write#acme#p-1").await.unwrap().unwrap();
    assert_eq!(e.state, LedgerState::Done);
    assert_eq!(e.remote_id.as_deref(), Some(pid.as_str()));
    assert!(!e.result.unwrap().contains("Zo"));
}

#[tokio::test]
async fn every_validation_error_is_named_and_nothing_is_sent() {
    let w = world().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            cmd(
                "v1",
                "CreatePatient",
                json!({"first_name": "", "date_of_birth": "1984-02-30",
                "gender": "F", "email": "not-an-email", "home_phone": "call me", "colour": "red"}),
            ),
            vec![
                "data.colour: unknown field",
                "data.first_name: missing",
                "data.last_name: missing",
                "data.date_of_birth: is not a real calendar date",
                "data.gender: must be one of Female, Male, Unknown",
                "data.email: must be an email address",
                "data.home_phone: must be a phone number",
            ],
        ),
        (
            cmd(
                "v2",
                "UpdatePatient",
                json!({"patient_id": -3, "first_name": null,
                "date_of_birth": "07/03/1984"}),
            ),
            vec![
                "data.patient_id: must be a positive whole number",
                "data.first_name: cannot be cleared",
                "data.date_of_birth: must be a date YYYY-MM-DD",
            ],
        ),
        (
            cmd(
                "v3",
                "CreateAppointment",
                json!({"patient_id": "abc",
                "start": "2026-10-05 10:00", "end": "2026-10-05T09:00:00Z",
                "provider_id": 1, "status": "Booked", "type": "X", "mode": "Video"}),
            ),
            vec![
                "data.patient_id: must be a positive whole number",
                "data.start: must be a real date-time with an offset",
                "data.service_location_id: missing",
                "data.status: must be one of Unknown, Scheduled",
                "data.type: must be one of U, P, O",
                "data.mode: must be one of InOffice, Telehealth",
            ],
        ),
        (
            cmd(
                "v4",
                "CreateAppointment",
                json!({"patient_id": 1,
                "start": "2026-10-05T10:00:00Z", "end": "2026-10-05T09:00:00Z",
                "provider_id": 1, "service_location_id": 1}),
            ),
            vec!["data.end: must be after start"],
        ),
        (
            cmd("v5", "DeleteAppointment", json!({})),
            vec!["data.appointment_id: missing"],
        ),
        (
            cmd(
                "v6",
                "CreateEncounter",
                json!({"patient_id": 1, "service_date": "2026-13-01",
                "rendering_provider_id": 1, "service_location_id": 1, "status": "Review",
                "service_lines": [{"procedure_code": "9", "diagnosis_codes": [],
                                   "units": 0, "unit_charge": "ten"}]}),
            ),
            vec![
                "data.service_date: is not a real calendar date",
                "data.status: must be one of Draft, Submitted, Approved, Rejected, Unpayable",
                "data.service_lines[0].procedure_code: must be a CPT/HCPCS code",
                "data.service_lines[0].diagnosis_codes: must hold 1 to 4 items",
                "data.service_lines[0].units: must be a number above 0",
                "data.service_lines[0].unit_charge: must be an amount of money",
            ],
        ),
        (
            cmd(
                "v7",
                "CreatePayment",
                json!({"payer_type": "Insurance", "amount": "12.345",
                "payment_method": "Bitcoin", "adjudication_date": "2026-02-29"}),
            ),
            vec![
                "data.amount: must be an amount of money",
                "data.payment_method: must be one of Cash, Check",
                "data.reference_number: missing",
                "data.insurance_plan_id: missing",
                "data.adjudication_date: is not a real calendar date",
            ],
        ),
        (
            json!({"id": "", "tenant": "acme", "op": "CreateClaim", "data": []}),
            vec![
                "id: missing",
                "op: must be one of CreatePatient, UpdatePatient",
                "data: must be an object",
            ],
        ),
    ];
    for (c, expected) in cases {
        let r = w.run(c.clone()).await;
        assert_eq!(r.status, WriteStatus::Invalid, "{c}");
        let got: Vec<String> = r.errors.iter().map(|p| p.to_string()).collect();
        for e in &expected {
            assert!(got.iter().any(|g| g.starts_with(e)), "{e} not in {got:#?}");
        }
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        // The answer names fields, never the values sent.
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("not-an-email") && !text.contains("call me"),
            "{text}"
        );
    }
    assert!(w.sim.calls().is_empty(), "nothing reached Kareo");
    assert_eq!(w.store.get("write#acme#v1").await.unwrap(), None);

    // A tenant that is not configured, and a config without a practice id for appointments.
    let r = w
        .run(json!({"id": "t1", "tenant": "zeta", "op": "DeleteAppointment", "data": {"appointment_id": 1}}))
        .await;
    assert_eq!(r.status, WriteStatus::Invalid);
    assert_eq!(r.errors[0].field, "tenant");
}

#[tokio::test]
async fn a_repeated_id_with_other_data_is_refused() {
    let w = world().await;
    let r = w.run(cmd("p-9", "CreatePatient", new_patient())).await;
    assert_eq!(r.status, WriteStatus::Done);
    let mut other = new_patient();
    other["first_name"] = json!("Ann");
    let r = w.run(cmd("p-9", "CreatePatient", other)).await;
    assert_eq!(r.status, WriteStatus::Invalid, "{r:?}");
    assert_eq!(r.errors[0].field, "id");
    assert_eq!(w.sim.call_count("CreatePatient"), 1);
}

#[tokio::test]
async fn kareo_refusals_are_rejected_and_may_be_sent_again_once_fixed() {
    let w = world().await;
    let c = cmd(
        "d-1",
        "DeleteAppointment",
        json!({"appointment_id": 999_999}),
    );
    let r = w.run(c.clone()).await;
    assert_eq!(r.status, WriteStatus::Rejected, "{r:?}");
    assert_eq!(r.kareo_message.as_deref(), Some("Appointment not found."));
    let e = w.store.get("write#acme#d-1").await.unwrap().unwrap();
    assert_eq!(e.state, LedgerState::Failed);
    assert!(
        !e.reason.unwrap().contains("not found."),
        "Kareo's text is not stored"
    );
    // A refusal settles `failed`: the same id may be sent again once fixed.
    w.sim
        .inject(FaultRule::new(Fault::AuthFailure).on("CreatePatient"));
    let r = w.run(cmd("p-t", "CreatePatient", new_patient())).await;
    assert_eq!(r.status, WriteStatus::Rejected, "{r:?}");
    let r = w.run(cmd("p-t", "CreatePatient", new_patient())).await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
    assert_eq!(w.sim.call_count("CreatePatient"), 2);
}

#[tokio::test]
async fn a_timeout_after_kareo_applied_a_create_is_reconciled_into_exactly_one_record() {
    let w = world_with(Duration::from_millis(700)).await;
    let pid = w.first(Family::Patients);
    let provider = w.first(Family::Providers);
    let location = w.first(Family::ServiceLocations);
    let code = w.sim.rows(Family::ProcedureCodes)[0]["ProcedureCode"].clone();
    let cases = [
        (
            Family::Patients,
            cmd("r-p", "CreatePatient", new_patient()),
            "PatientID",
        ),
        (
            Family::Appointments,
            cmd(
                "r-a",
                "CreateAppointment",
                json!({"patient_id": pid,
                "start": "2026-10-06T13:00:00Z", "end": "2026-10-06T13:15:00Z",
                "service_location_id": location, "provider_id": provider}),
            ),
            "AppointmentId",
        ),
        (
            Family::Encounters,
            cmd(
                "r-e",
                "CreateEncounter",
                json!({"patient_id": pid, "service_date": "2026-09-29",
                "rendering_provider_id": provider, "service_location_id": location,
                "service_lines": [{"procedure_code": code, "diagnosis_codes": "Z00.00", "units": 1}]}),
            ),
            "EncounterID",
        ),
        (
            Family::Payments,
            cmd(
                "r-pay",
                "CreatePayment",
                json!({"payer_type": "Patient", "patient_id": pid,
                "amount": 40, "payment_method": "CreditCard", "reference_number": "TX-77"}),
            ),
            "PaymentID",
        ),
    ];
    for (family, c, key) in cases {
        let op = c["op"].as_str().unwrap().to_string();
        let before = w.sim.rows(family).len();
        w.sim
            .inject(FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_secs(2))).on(&op));
        let r = w.run(c.clone()).await;
        assert_eq!(r.status, WriteStatus::Done, "{op}: {r:?}");
        assert!(r.reconciled, "{op}: {r:?}");
        assert_eq!(
            w.sim.rows(family).len(),
            before + 1,
            "{op}: exactly one record"
        );
        assert_eq!(w.sim.call_count(&op), 1, "{op}: never re-sent");
        let id = kareo_id(&r, key);
        assert!(
            w.row(family, &id).is_some(),
            "{op}: the id found is the new record"
        );
        let again = w.run(c).await;
        assert!(again.repeated && again.reconciled, "{again:?}");
        assert_eq!(again.kareo, r.kareo);
        assert_eq!(w.sim.call_count(&op), 1);
    }
}

#[tokio::test]
async fn status_updates_change_the_appointment_and_the_encounter_once_and_are_reconciled() {
    let w = world_with(Duration::from_millis(700)).await;
    let tz = w.tenant.timezone;
    let pid = w.first(Family::Patients);
    let provider = w.first(Family::Providers);
    let location = w.first(Family::ServiceLocations);
    let r = w
        .run(cmd(
            "s-a",
            "CreateAppointment",
            json!({"patient_id": pid, "start": "2026-10-07T13:00:00Z", "end": "2026-10-07T13:20:00Z",
                   "service_location_id": location, "provider_id": provider}),
        ))
        .await;
    let aid = kareo_id(&r, "AppointmentId");
    let before = w.row(Family::Appointments, &aid).unwrap();
    assert_eq!(before["ConfirmationStatus"], "Scheduled");

    // UpdateAppointment: the status and notes change, the times and patient stay.
    let gets = w.sim.call_count("GetAppointment");
    let r = once(
        &w,
        cmd(
            "s-1",
            "UpdateAppointment",
            json!({"appointment_id": aid, "status": "Confirmed", "notes": "confirmed by phone"}),
        ),
        "UpdateAppointment",
    )
    .await;
    assert_eq!(r.kareo.as_ref().unwrap()["verified"], true, "{r:?}");
    assert_eq!(
        w.sim.call_count("GetAppointment"),
        gets + 2,
        "read before, read back after"
    );
    let row = w.row(Family::Appointments, &aid).unwrap();
    assert_eq!(row["ConfirmationStatus"], "Confirmed");
    assert_eq!(row["Notes"], "confirmed by phone");
    assert_eq!(row["PatientID"], pid);
    assert_eq!(
        kareo::dates::parse(&row["StartDate"], tz).unwrap(),
        kareo::dates::parse(&before["StartDate"], tz).unwrap()
    );
    assert_eq!(row["AppointmentDuration"], "20");

    // UpdateEncounterStatus: the encounter (numeric status) and its charge lines.
    let code = w.sim.rows(Family::ProcedureCodes)[0]["ProcedureCode"].clone();
    let r = w
        .run(cmd(
            "s-e",
            "CreateEncounter",
            json!({"patient_id": pid, "service_date": "2026-09-29", "status": "Draft",
                   "rendering_provider_id": provider, "service_location_id": location,
                   "service_lines": [{"procedure_code": code, "diagnosis_codes": "Z00.00", "units": 1}]}),
        ))
        .await;
    let eid = kareo_id(&r, "EncounterID");
    let r = once(
        &w,
        cmd(
            "s-2",
            "UpdateEncounterStatus",
            json!({"encounter_id": eid.parse::<i64>().unwrap(), "status": "Approved"}),
        ),
        "UpdateEncounterStatus",
    )
    .await;
    assert_eq!(r.kareo.as_ref().unwrap()["verified"], true, "{r:?}");
    assert_eq!(
        w.row(Family::Encounters, &eid).unwrap()["EncounterStatus"],
        "3"
    );
    assert!(w
        .sim
        .rows(Family::Charges)
        .iter()
        .filter(|c| c.get("EncounterID") == Some(&eid))
        .all(|c| c["EncounterStatus"] == "Approved"));

    // A timeout after Kareo applied either: the read-back finds it done, never re-sent.
    for (c, op) in [
        (
            cmd(
                "s-3",
                "UpdateAppointment",
                json!({"appointment_id": aid, "status": "Cancelled"}),
            ),
            "UpdateAppointment",
        ),
        (
            cmd(
                "s-4",
                "UpdateEncounterStatus",
                json!({"encounter_id": eid.parse::<i64>().unwrap(), "status": "Rejected"}),
            ),
            "UpdateEncounterStatus",
        ),
    ] {
        let calls = w.sim.call_count(op);
        w.sim
            .inject(FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_secs(2))).on(op));
        let r = w.run(c.clone()).await;
        assert_eq!(r.status, WriteStatus::Done, "{op}: {r:?}");
        assert!(r.reconciled, "{op}: {r:?}");
        assert_eq!(w.sim.call_count(op), calls + 1, "{op}: never re-sent");
    }
    assert_eq!(
        w.row(Family::Appointments, &aid).unwrap()["ConfirmationStatus"],
        "Cancelled"
    );
    assert_eq!(
        w.row(Family::Encounters, &eid).unwrap()["EncounterStatus"],
        "4"
    );

    // Bad data is named, and an unknown appointment is refused without a write.
    let r = w
        .run(cmd(
            "s-5",
            "UpdateAppointment",
            json!({"appointment_id": aid, "status": "Done"}),
        ))
        .await;
    assert_eq!(r.status, WriteStatus::Invalid, "{r:?}");
    assert!(
        r.errors.iter().any(|p| p.field.ends_with("status")),
        "{r:?}"
    );
    let calls = w.sim.call_count("UpdateAppointment");
    let r = w
        .run(cmd(
            "s-6",
            "UpdateAppointment",
            json!({"appointment_id": 999_999, "status": "Confirmed"}),
        ))
        .await;
    assert_eq!(r.status, WriteStatus::Rejected, "{r:?}");
    assert_eq!(w.sim.call_count("UpdateAppointment"), calls);
}

#[tokio::test]
async fn an_unreconcilable_outcome_is_marked_needs_review_and_never_re_sent() {
    let w = world_with(Duration::from_millis(700)).await;
    let before = w.sim.rows(Family::Patients).len();
    // The answer never comes and Kareo did not apply it: nothing to find.
    w.sim
        .inject(FaultRule::new(Fault::Timeout(Duration::from_secs(2))).on("CreatePatient"));
    let c = cmd("u-1", "CreatePatient", new_patient());
    let r = w.run(c.clone()).await;
    assert_eq!(r.status, WriteStatus::NeedsReview, "{r:?}");
    let reason = r.reason.clone().unwrap();
    assert!(reason.contains("outcome unknown (timeout)"), "{reason}");
    assert!(
        !reason.contains("Zo") && !reason.contains("1984"),
        "{reason}"
    );
    let e = w.store.get("write#acme#u-1").await.unwrap().unwrap();
    assert_eq!(e.state, LedgerState::NeedsReview);
    assert_eq!(e.reason.as_deref(), Some(reason.as_str()));
    let again = w.run(c).await;
    assert_eq!(again.status, WriteStatus::NeedsReview);
    assert!(again.repeated);
    assert_eq!(w.sim.call_count("CreatePatient"), 1, "never re-sent");
    assert_eq!(w.sim.rows(Family::Patients).len(), before);

    // Two records match what the command would have written: cannot tell which.
    let dup = json!({"first_name": "Al", "last_name": "Twin", "date_of_birth": "1990-01-01"});
    w.sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_secs(2))).on("CreatePatient"),
    );
    assert_eq!(
        w.run(cmd("u-2", "CreatePatient", dup.clone())).await.status,
        WriteStatus::Done
    );
    w.sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_secs(2))).on("CreatePatient"),
    );
    let r = w.run(cmd("u-3", "CreatePatient", dup)).await;
    assert_eq!(r.status, WriteStatus::NeedsReview, "{r:?}");
    assert!(r.reason.unwrap().contains("2 matching records"));

    // A crashed attempt that had begun to send (its claim expired while pending, marked
    // sending) is reconciled, not re-sent.
    let now = w.clock.now();
    let claim = w
        .store
        .claim(
            "write#acme#u-4",
            "crashed",
            now - chrono::Duration::minutes(20),
            now - chrono::Duration::minutes(10),
        )
        .await
        .unwrap();
    assert_eq!(claim, domain::ports::Claim::New);
    w.store
        .mark_sending("write#acme#u-4", "crashed")
        .await
        .unwrap();
    let calls = w.sim.call_count("CreatePayment");
    let r = w
        .run(cmd(
            "u-4",
            "CreatePayment",
            json!({"payer_type": "Other", "amount": "5.00",
            "payment_method": "Cash", "reference_number": "CASH-1"}),
        ))
        .await;
    assert_eq!(r.status, WriteStatus::NeedsReview, "{r:?}");
    assert!(r.reason.unwrap().contains("previous attempt"));
    assert_eq!(w.sim.call_count("CreatePayment"), calls, "never re-sent");

    // One that died before it began to send sent nothing: this attempt sends it, once.
    w.store
        .claim(
            "write#acme#u-5",
            "crashed",
            now - chrono::Duration::minutes(20),
            now - chrono::Duration::minutes(10),
        )
        .await
        .unwrap();
    let r = w
        .run(cmd(
            "u-5",
            "CreatePayment",
            json!({"payer_type": "Other", "amount": "6.00",
            "payment_method": "Cash", "reference_number": "CASH-2"}),
        ))
        .await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
    assert_eq!(w.sim.call_count("CreatePayment"), calls + 1);
}

/// Every command's request envelope validates against Kareo's own XSD (xmllint).
#[test]
fn every_command_request_validates_against_kareos_xsd() {
    let Some(xsd) = testkit::kareo_xsd("XSD VALIDATION") else {
        return;
    };
    let tenant = TenantConfig::from_yaml(&tenant_yaml_static(), "acme.yaml").unwrap();
    let commands = [
        cmd("x1", "CreatePatient", new_patient()),
        cmd(
            "x2",
            "CreateAppointment",
            json!({"patient_id": 3, "start": "2026-10-05T10:00:00-04:00",
            "end": "2026-10-05T10:30:00-04:00", "service_location_id": 1, "provider_id": 2,
            "type": "P", "status": "Confirmed", "reason_id": 4, "case_id": 30, "mode": "Telehealth",
            "notes": "<b>&</b>"}),
        ),
        cmd("x3", "DeleteAppointment", json!({"appointment_id": 12})),
        cmd(
            "x4",
            "CreateEncounter",
            json!({"patient_id": 3, "service_date": "2026-09-30",
            "post_date": "2026-10-01", "rendering_provider_id": 2, "service_location_id": 1,
            "case_id": 30, "appointment_id": 12, "status": "Approved", "batch_number": "B1",
            "service_lines": [{"procedure_code": "99213", "diagnosis_codes": ["J06.9", "R05"],
                "units": 1.5, "unit_charge": "80", "modifiers": ["25"], "service_date": "2026-09-30"}]}),
        ),
        cmd(
            "x5",
            "CreatePayment",
            json!({"payer_type": "Insurance", "amount": "10.00",
            "payment_method": "ElectronicFundsTransfer", "reference_number": "EFT-1",
            "insurance_plan_id": 5, "insurance_plan_name": "Plan & Co", "post_date": "2026-10-01",
            "adjudication_date": "2026-09-30", "batch_number": "B2", "appointment_id": 12}),
        ),
    ];
    let dir = std::env::temp_dir().join(format!("kareo-write-xsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = Credentials::placeholder();
    let mut files = Vec::new();
    let mut write = |op: &str, body: &Value| {
        let env = kareo::envelope::write(kareo::op(op).unwrap(), &creds, "t", body).unwrap();
        let p = dir.join(format!("{op}-{}.xml", files.len()));
        std::fs::write(&p, kareo::envelope::operation_element(&env)).unwrap();
        files.push(p);
    };
    for c in &commands {
        let c = Command::from_value(c).unwrap();
        write(c.op.name(), &c.request_body(&tenant).unwrap());
    }
    // UpdatePatient from a current record (Kareo's response forms) and some changes.
    let up = Command::from_value(&cmd(
        "x6",
        "UpdatePatient",
        json!({"patient_id": 3,
        "city": "Cambridge", "address_line2": null, "gender": "Male"}),
    ))
    .unwrap();
    let Data::UpdatePatient {
        patient_id,
        changes,
    } = &up.data
    else {
        unreachable!()
    };
    let current: BTreeMap<String, String> = [
        ("FirstName", "Zoë"),
        ("LastName", "O'Brien"),
        ("DOB", "3/7/1984 12:00:00 AM"),
        ("Gender", "F"),
        ("City", "Boston"),
        ("AddressLine2", "Apt 4"),
        ("HomePhone", "6175550100"),
        ("EmailAddress", "z@example.org"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let body = update_body(&tenant, *patient_id, &current, changes).unwrap();
    assert_eq!(body["Patient"]["City"], "Cambridge");
    assert_eq!(body["Patient"]["AddressLine2"], "");
    assert_eq!(
        body["Patient"]["FirstName"], "Zoë",
        "unchanged fields are re-sent"
    );
    assert_eq!(body["Patient"]["DateofBirth"], "1984-03-07T00:00:00");
    write("UpdatePatient", &body);
    // UpdateAppointment from a current appointment as GetAppointment answers it.
    let ua = Command::from_value(&cmd(
        "x7",
        "UpdateAppointment",
        json!({"appointment_id": 12, "status": "Confirmed", "notes": "called <back> & confirmed"}),
    ))
    .unwrap();
    let appointment: BTreeMap<String, String> = [
        ("AppointmentId", "12"),
        ("PatientId", "3"),
        ("ServiceLocationId", "1"),
        ("StartTime", "2026-10-05T14:00:00.000Z"),
        ("EndTime", "2026-10-05T14:30:00.000Z"),
        ("AppointmentStatus", "Scheduled"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let body = ua.request_body_from(&tenant, &appointment).unwrap();
    assert_eq!(body["Appointment"]["PatientId"], 3);
    // The practice's wall clock, without an offset (14:00Z is 10:00 in New York).
    assert_eq!(body["Appointment"]["StartTime"], "2026-10-05T10:00:00");
    write("UpdateAppointment", &body);
    let ue = Command::from_value(&cmd(
        "x8",
        "UpdateEncounterStatus",
        json!({"encounter_id": 40, "status": "Approved"}),
    ))
    .unwrap();
    write("UpdateEncounterStatus", &ue.request_body(&tenant).unwrap());
    let (ok, stderr) = testkit::xmllint(&xsd, &files);
    for f in &files {
        assert!(
            stderr.contains(&format!("{} validates", f.display())),
            "{stderr}"
        );
    }
    assert!(ok, "{stderr}");
    assert_eq!(files.len(), 8);
    std::fs::remove_dir_all(&dir).ok();
}

fn tenant_yaml_static() -> String {
    "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: kareo/acme\n  practice: Acme\n  practice_id: 1\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {}\n".into()
}

#[tokio::test]
async fn updates_survive_a_throttle_and_refuse_an_unknown_patient() {
    let w = world().await;
    let pid: i64 = w.first(Family::Patients).parse().unwrap();
    w.sim
        .inject(FaultRule::new(Fault::Throttle).on("UpdatePatient"));
    let r = w
        .run(cmd(
            "up-1",
            "UpdatePatient",
            json!({"patient_id": pid, "email": "new@example.org"}),
        ))
        .await;
    assert_eq!(
        r.status,
        WriteStatus::Done,
        "a throttle answer is retried: {r:?}"
    );
    assert_eq!(
        w.row(Family::Patients, &pid.to_string()).unwrap()["EmailAddress"],
        "new@example.org"
    );
    let r = w
        .run(cmd(
            "up-2",
            "UpdatePatient",
            json!({"patient_id": 987_654, "city": "X"}),
        ))
        .await;
    assert_eq!(r.status, WriteStatus::Rejected, "{r:?}");
    assert_eq!(
        w.sim.call_count("UpdatePatient"),
        2,
        "nothing sent for an unknown patient"
    );
}

/// Kareo may keep the clock value of an appointment time and ignore its offset: the times are
/// sent as the practice's wall clock, so the appointment starts when it was asked to under
/// either reading, and its update keeps it there.
#[tokio::test]
async fn an_appointment_starts_when_asked_whether_kareo_reads_offsets_or_wall_clocks() {
    for wall_clock in [false, true] {
        let w = world_of(
            Duration::from_secs(10),
            kareo_sim::Reality {
                write_times_wall_clock: wall_clock,
                ..kareo_sim::Reality::default()
            },
        )
        .await;
        let (pid, provider, location) = (
            w.first(Family::Patients),
            w.first(Family::Providers),
            w.first(Family::ServiceLocations),
        );
        let r = once(
            &w,
            cmd(
                "a-1",
                "CreateAppointment",
                json!({"patient_id": pid, "start": "2026-10-05T14:00:00Z",
                       "end": "2026-10-05T14:30:00Z", "service_location_id": location,
                       "provider_id": provider}),
            ),
            "CreateAppointment",
        )
        .await;
        let aid = kareo_id(&r, "AppointmentId");
        let row = w.row(Family::Appointments, &aid).expect("created");
        let want: chrono::DateTime<chrono::Utc> = "2026-10-05T14:00:00Z".parse().unwrap();
        assert_eq!(
            w.sim.starts(&row),
            Some(want),
            "wall clock read: {wall_clock}"
        );
        once(
            &w,
            cmd(
                "a-2",
                "UpdateAppointment",
                json!({"appointment_id": aid, "status": "Confirmed"}),
            ),
            "UpdateAppointment",
        )
        .await;
        let row = w.row(Family::Appointments, &aid).expect("still there");
        assert_eq!(
            w.sim.starts(&row),
            Some(want),
            "the update keeps the time: {wall_clock}"
        );
    }
}

/// Counts secret reads: a refused caller must make none.
struct CountedSecrets<'a>(&'a LocalSecrets, std::sync::atomic::AtomicUsize);

impl domain::ports::SecretSource for CountedSecrets<'_> {
    async fn get(
        &self,
        name: &str,
    ) -> Result<domain::ports::SecretValue, domain::ports::SecretError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.get(name).await
    }
}

#[tokio::test]
async fn only_the_tenants_writers_may_write_and_a_refused_caller_reaches_nothing() {
    let mut w = world().await;
    let yaml = tenant_yaml(&w.sim)
        + "writers:\n  - arn:aws:iam::123456789012:role/apps/front-desk\n  - arn:aws:iam::123456789012:user/ops\n";
    w.tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let secrets = CountedSecrets(&w.secrets, Default::default());
    let run = |c: Value, caller: &'static str| {
        let writer = w.writer();
        let tenant = w.tenant.clone();
        let secrets = &secrets;
        async move {
            run_command(
                &writer,
                secrets,
                std::slice::from_ref(&tenant),
                &c,
                Caller::Principal(caller),
            )
            .await
        }
    };
    for (i, stranger) in [
        "arn:aws:sts::123456789012:assumed-role/billing/s1",
        "arn:aws:sts::999999999999:assumed-role/front-desk/s1",
        "arn:aws:iam::123456789012:user/ops-2",
    ]
    .into_iter()
    .enumerate()
    {
        let r = run(
            cmd(&format!("c-{i}"), "CreatePatient", new_patient()),
            stranger,
        )
        .await;
        assert_eq!(r.status, WriteStatus::Forbidden, "{stranger}: {r:?}");
        assert_eq!(r.status.http_status(), 403);
        assert!(r.reason.as_deref().unwrap().contains("writers"), "{r:?}");
    }
    assert!(w.sim.calls().is_empty(), "a refused caller reaches Kareo");
    assert_eq!(
        secrets.1.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused caller reads a secret"
    );
    for i in 0..3 {
        let key = format!("write#acme#c-{i}");
        assert!(
            w.store.get(&key).await.unwrap().is_none(),
            "a refused caller claims nothing"
        );
    }

    // A session of the listed role, and the listed user, write (once each).
    let r = run(
        cmd("c-9", "CreatePatient", new_patient()),
        "arn:aws:sts::123456789012:assumed-role/front-desk/app-7",
    )
    .await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
    let r = run(
        cmd("c-10", "CreatePatient", new_patient()),
        "arn:aws:iam::123456789012:user/ops",
    )
    .await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
    assert_eq!(w.sim.call_count("CreatePatient"), 2);

    // No `writers:` (the default): no principal may write over the URL; the operator may.
    let mut bare = world().await;
    bare.tenant = TenantConfig::from_yaml(&tenant_yaml(&bare.sim), "acme.yaml").unwrap();
    let r = run_command(
        &bare.writer(),
        &bare.secrets,
        std::slice::from_ref(&bare.tenant),
        &cmd("c-1", "CreatePatient", new_patient()),
        Caller::Principal("arn:aws:iam::123456789012:user/ops"),
    )
    .await;
    assert_eq!(r.status, WriteStatus::Forbidden, "{r:?}");
    assert!(bare.sim.calls().is_empty());
    let r = bare.run(cmd("c-1", "CreatePatient", new_patient())).await;
    assert_eq!(r.status, WriteStatus::Done, "{r:?}");
}
