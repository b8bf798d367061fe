//! The Kareo client against the Kareo simulator: every operation, throttling, retries,
//! faults and the write-path rules, over real HTTP.

use std::time::Duration;

use kareo::error::KareoError;
use kareo::request::*;
use kareo::throttle::RetryPolicy;
use kareo::{op, ClientConfig, Credentials, KareoClient};
use kareo_sim::{Family, Fault, FaultRule, KareoSim, Outcome, SimConfig};
use serde_json::json;

/// The credentials a simulator accepts.
fn creds(sim: &KareoSim) -> Credentials {
    let c = sim.config();
    Credentials {
        customer_key: c.customer_key.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
    }
}

/// A client for a simulator: quick retries, a small throttle margin.
fn client(sim: &KareoSim) -> KareoClient {
    client_with(sim, |_| {})
}

/// A client for a simulator, with settings changed by `f`.
fn client_with(sim: &KareoSim, f: impl FnOnce(&mut ClientConfig)) -> KareoClient {
    let mut cfg = ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_total: Duration::from_secs(5),
        },
        throttle_margin: Duration::from_millis(60),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    f(&mut cfg);
    KareoClient::new(cfg).expect("client")
}

/// A simulator that does not enforce the throttle (tests of other behaviour stay fast).
async fn sim() -> KareoSim {
    KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await
}

const NY: chrono_tz::Tz = chrono_tz::America::New_York;

fn window(sim: &KareoSim) -> serde_json::Value {
    let to = sim.now() + chrono::Duration::days(1);
    let from = sim.now() - chrono::Duration::days(400);
    json!({
        "FromLastModifiedDate": kareo::dates::format_filter(from, NY),
        "ToLastModifiedDate": kareo::dates::format_filter(to, NY),
    })
}

fn list_body(sim: &KareoSim, family: Family) -> serde_json::Value {
    let mut filter = window(sim);
    let practice = &sim.config().practice_name;
    let f = filter.as_object_mut().unwrap();
    let filter_type = op(family.op())
        .unwrap()
        .request
        .def()
        .member("Filter")
        .unwrap();
    if let kareo::schema::Ty::Complex(t) = filter_type.ty {
        if t.def().member("PracticeName").is_some() {
            f.insert("PracticeName".into(), json!(practice));
        }
    }
    if family == Family::Charges {
        f.insert("IncludeUnapprovedCharges".into(), json!("T"));
    }
    json!({"Fields": {}, "Filter": filter})
}

#[tokio::test]
async fn every_list_family_reads_every_record_the_simulator_holds() {
    let sim = sim().await;
    let c = client(&sim);
    let cr = creds(&sim);
    for family in Family::ALL {
        if family == Family::Encounters {
            continue; // by EncounterID only: below
        }
        let resp = c
            .call(&cr, op(family.op()).unwrap(), &list_body(&sim, family))
            .await
            .unwrap();
        let mut got: Vec<String> = resp
            .records
            .iter()
            .map(|r| r.id().unwrap().to_string())
            .collect();
        let mut want: Vec<String> = sim
            .rows(family)
            .iter()
            .map(|r| r[family.id_member()].clone())
            .collect();
        got.sort();
        want.sort();
        assert!(!want.is_empty(), "{family:?} has data");
        assert_eq!(got, want, "{family:?}");
        for r in &resp.records {
            assert!(
                r.version(NY).unwrap().is_some(),
                "{family:?} records carry a version"
            );
        }
    }
}

#[tokio::test]
async fn encounter_details_by_id_and_single_reads() {
    let sim = sim().await;
    let c = client(&sim);
    let cr = creds(&sim);
    let enc = &sim.rows(Family::Encounters)[0];
    let id = enc["EncounterID"].clone();
    let req = GetEncounterDetailsReq {
        fields: Some(FieldSelection::all()),
        filter: Some(EncounterDetailsFilter {
            encounter_id: Some(id.clone()),
            practice: Some(EncounterDetailsPractice {
                practice_id: Some(sim.config().practice_id.to_string()),
                practice_name: Some(sim.config().practice_name.clone()),
            }),
        }),
    };
    let resp = c.send(&cr, &req).await.unwrap();
    assert_eq!(resp.records.len(), 1);
    assert_eq!(resp.records[0].id(), Some(id.as_str()));

    let pat = &sim.rows(Family::Patients)[0];
    let resp = c
        .send(
            &cr,
            &GetPatientReq {
                filter: Some(SinglePatientFilter {
                    patient_id: Some(pat["ID"].parse().unwrap()),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.records.len(), 1);
    assert_eq!(
        resp.records[0].get("LastName"),
        pat.get("LastName").map(String::as_str)
    );

    let appt = &sim.rows(Family::Appointments)[0];
    let resp = c
        .send(
            &cr,
            &GetAppointmentReq {
                appointment: Some(AppointmentRead {
                    appointment_id: Some(appt["ID"].parse().unwrap()),
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.records[0].type_name(), "AppointmentCreate");
    assert_eq!(resp.records[0].id(), Some(appt["ID"].as_str()));
}

#[tokio::test]
async fn window_filters_select_changed_records_only() {
    let sim = sim().await;
    let c = client(&sim);
    let cr = creds(&sim);
    let before = sim.now();
    sim.advance(chrono::Duration::hours(2));
    let id = sim.rows(Family::Appointments)[3]["ID"].clone();
    sim.update(
        Family::Appointments,
        &id,
        &[("ConfirmationStatus", "Cancelled")],
    );
    let body = json!({"Fields": {}, "Filter": {
        "PracticeName": sim.config().practice_name,
        "FromLastModifiedDate": kareo::dates::format_filter(before + chrono::Duration::minutes(1), NY),
        "ToLastModifiedDate": kareo::dates::format_filter(sim.now(), NY),
    }});
    let resp = c
        .call(&cr, op("GetAppointments").unwrap(), &body)
        .await
        .unwrap();
    assert_eq!(resp.records.len(), 1, "only the changed appointment");
    assert_eq!(resp.records[0].id(), Some(id.as_str()));
    assert_eq!(resp.records[0].get("ConfirmationStatus"), Some("Cancelled"));
    // An empty window answers the placeholder item, which the reader skips.
    let body = json!({"Fields": {}, "Filter": {
        "PracticeName": sim.config().practice_name,
        "FromLastModifiedDate": "2001-01-01T00:00:00", "ToLastModifiedDate": "2001-01-02T00:00:00",
    }});
    assert!(c
        .call(&cr, op("GetAppointments").unwrap(), &body)
        .await
        .unwrap()
        .records
        .is_empty());
}

#[tokio::test]
async fn the_client_spaces_calls_so_the_real_throttle_never_fires() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: true,
        ..SimConfig::default()
    })
    .await;
    let c = client_with(&sim, |cfg| cfg.retry = kareo::throttle::RetryPolicy::none());
    let cr = creds(&sim);
    for _ in 0..3 {
        c.call(
            &cr,
            op("GetProviders").unwrap(),
            &list_body(&sim, Family::Providers),
        )
        .await
        .unwrap();
    }
    assert_eq!(sim.call_count("GetProviders"), 3);
    assert!(sim.calls().iter().all(|c| c.outcome == Outcome::Ok));
}

#[tokio::test]
async fn without_spacing_the_simulator_throttles_and_the_client_waits_and_retries() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: true,
        ..SimConfig::default()
    })
    .await;
    // Two clients (two throttles) on one account: the second is throttled by Kareo, reads the
    // interval from the 429 text and retries after it.
    let a = client(&sim);
    let b = client_with(&sim, |cfg| cfg.retry.max_total = Duration::from_secs(10));
    let cr = creds(&sim);
    a.call(
        &cr,
        op("GetPractices").unwrap(),
        &list_body(&sim, Family::Practices),
    )
    .await
    .unwrap();
    b.call(
        &cr,
        op("GetPractices").unwrap(),
        &list_body(&sim, Family::Practices),
    )
    .await
    .unwrap();
    let outcomes: Vec<_> = sim.calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes.first(), Some(&Outcome::Ok));
    assert_eq!(outcomes.last(), Some(&Outcome::Ok));
    assert!(outcomes.contains(&Outcome::Throttled), "{outcomes:?}");
}

/// Two clients (two processes) reading GetPatient of one account as fast as they may, each
/// with its own throttle: what the simulator answered, and the GetThrottles calls it answered.
async fn two_processes(shared: Option<&kareo::budget::MemoryBudget>) -> (Vec<Outcome>, usize) {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: true,
        ..SimConfig::default()
    })
    .await;
    let make = || {
        let c = client_with(&sim, |cfg| cfg.retry.max_total = Duration::from_secs(10));
        match shared {
            Some(b) => c.with_sharing(kareo::budget::Sharing::new(
                std::sync::Arc::new(b.clone()),
                kareo::budget::SharedOps::Only(vec!["GetPatient"]),
            )),
            None => c,
        }
    };
    let (a, b) = (make(), make());
    let cr = creds(&sim);
    let id: i64 = sim.rows(Family::Patients)[0]["ID"].parse().unwrap();
    a.throttles_once(&cr).await.unwrap();
    b.throttles_once(&cr).await.unwrap();
    let reads = |c: KareoClient| {
        let cr = cr.clone();
        async move {
            // Alone, a read may run out of retries: what the simulator answered is the measure.
            for _ in 0..4 {
                let _ = c
                    .call(
                        &cr,
                        op("GetPatient").unwrap(),
                        &json!({"Filter": {"PatientID": id}}),
                    )
                    .await;
            }
        }
    };
    tokio::join!(reads(a), reads(b));
    let outcomes = sim
        .calls()
        .into_iter()
        .filter(|c| c.op == "GetPatient")
        .map(|c| c.outcome)
        .collect();
    (outcomes, sim.call_count("GetThrottles"))
}

#[tokio::test]
async fn processes_sharing_an_accounts_budget_take_turns_and_read_its_throttles_once() {
    // Alone, each process spaces only its own calls: the simulator's account-wide throttle
    // answers some with 429 (retried), and each process reads GetThrottles.
    let (alone, throttles_alone) = two_processes(None).await;
    assert!(alone.contains(&Outcome::Throttled), "{alone:?}");
    assert!(
        throttles_alone >= 2,
        "each read it (the second one throttled, 5 s apart)"
    );
    // Sharing one budget, they take turns: no 429, every read answered, one GetThrottles.
    let budget = kareo::budget::MemoryBudget::default();
    let (shared, throttles_shared) = two_processes(Some(&budget)).await;
    assert_eq!(shared.len(), 8, "{shared:?}");
    assert!(shared.iter().all(|o| *o == Outcome::Ok), "{shared:?}");
    assert_eq!(throttles_shared, 1);
}

#[tokio::test]
async fn escaped_password_authenticates_and_wrong_credentials_are_security_errors() {
    let sim = sim().await;
    assert!(sim.config().password.contains('&') && sim.config().password.contains('<'));
    let c = client(&sim);
    assert_eq!(
        c.customer_id(&creds(&sim)).await.unwrap(),
        Some(sim.config().customer_id)
    );
    let wrong = Credentials {
        password: "nope".into(),
        ..creds(&sim)
    };
    let e = c
        .call(
            &wrong,
            op("GetPractices").unwrap(),
            &list_body(&sim, Family::Practices),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class(), "security", "{e}");
    assert!(e.to_string().contains("Authenticated=false"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        sim.call_count("GetPractices"),
        1,
        "security failures are not retried"
    );
}

#[tokio::test]
async fn transient_faults_on_reads_are_retried() {
    for fault in [
        Fault::Http500Fault,
        Fault::HttpStatus(503),
        Fault::HttpStatus(429),
        Fault::Reset,
        Fault::Malformed,
        Fault::Truncated,
        Fault::Throttle,
        Fault::Timeout(Duration::from_secs(3)),
    ] {
        let sim = sim().await;
        let c = client_with(&sim, |cfg| cfg.timeout = Duration::from_secs(1));
        sim.inject(FaultRule::new(fault.clone()).on("GetPayments"));
        let resp = c
            .call(
                &creds(&sim),
                op("GetPayments").unwrap(),
                &list_body(&sim, Family::Payments),
            )
            .await;
        assert!(resp.is_ok(), "{fault:?}: {:?}", resp.err());
        assert_eq!(
            resp.unwrap().records.len(),
            sim.rows(Family::Payments).len(),
            "{fault:?}"
        );
        assert_eq!(
            sim.call_count("GetPayments"),
            2,
            "{fault:?}: one fault, one retry"
        );
    }
}

#[tokio::test]
async fn each_fault_is_classified_when_not_retried() {
    let cases = [
        (Fault::Http500Fault, "fault"),
        (Fault::HttpStatus(503), "http"),
        (Fault::HttpStatus(429), "throttled"),
        (Fault::Reset, "transport"),
        (Fault::Malformed, "xml"),
        (Fault::Truncated, "xml"),
        (Fault::Throttle, "throttled"),
        (Fault::AuthFailure, "security"),
        (Fault::SchemaMismatch, "schema"),
        (Fault::Timeout(Duration::from_secs(3)), "timeout"),
    ];
    for (fault, class) in cases {
        let sim = sim().await;
        let c = client_with(&sim, |cfg| {
            cfg.retry = kareo::throttle::RetryPolicy::none();
            cfg.timeout = Duration::from_secs(1);
        });
        sim.inject(FaultRule::new(fault.clone()).on("GetTransactions"));
        let e = c
            .call(
                &creds(&sim),
                op("GetTransactions").unwrap(),
                &list_body(&sim, Family::Transactions),
            )
            .await
            .unwrap_err();
        // A reset may hit before the headers (transport) or inside the body (transport too).
        assert_eq!(e.class(), class, "{fault:?}: {e}");
    }
}

#[tokio::test]
async fn schema_rejects_are_not_retried_and_name_the_problem() {
    let sim = sim().await;
    let c = client(&sim);
    let e = c
        .call(
            &creds(&sim),
            op("GetPatients").unwrap(),
            &json!({"Filter": {"PracticeId": "1"}}),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KareoError::Request { .. }));
    assert!(e.to_string().contains("did you mean 'PracticeID'"), "{e}");
    assert_eq!(sim.call_count("GetPatients"), 0, "nothing is sent");
}

#[tokio::test]
async fn an_ambiguous_write_is_never_retried() {
    let sim = sim().await;
    let c = client_with(&sim, |cfg| cfg.timeout = Duration::from_millis(800));
    let before = sim.rows(Family::Patients).len();
    sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_secs(3))).on("CreatePatient"),
    );
    let body: serde_json::Value = serde_json::from_str(include_str!(
        "../../kareo/fixtures/requests/CreatePatient.json"
    ))
    .unwrap();
    let mut body = body;
    body["Patient"]["Practice"] =
        json!({"PracticeID": sim.config().practice_id, "PracticeName": sim.config().practice_name});
    let e = c
        .call(&creds(&sim), op("CreatePatient").unwrap(), &body)
        .await
        .unwrap_err();
    assert_eq!(e.class(), "timeout");
    assert!(e.is_ambiguous());
    assert_eq!(sim.call_count("CreatePatient"), 1, "not retried");
    assert_eq!(
        sim.rows(Family::Patients).len(),
        before + 1,
        "applied exactly once"
    );

    // A 500 after sending is ambiguous too: not retried.
    sim.inject(FaultRule::new(Fault::Http500Fault).on("CreatePatient"));
    let e = c
        .call(&creds(&sim), op("CreatePatient").unwrap(), &body)
        .await
        .unwrap_err();
    assert!(e.is_ambiguous());
    assert_eq!(sim.call_count("CreatePatient"), 2);

    // A throttle answer is certain (not applied): retried.
    sim.inject(FaultRule::new(Fault::Throttle).on("CreatePatient"));
    c.call(&creds(&sim), op("CreatePatient").unwrap(), &body)
        .await
        .unwrap();
    assert_eq!(sim.call_count("CreatePatient"), 4);
    assert_eq!(sim.rows(Family::Patients).len(), before + 2);
}

#[tokio::test]
async fn writes_round_trip_through_the_simulator() {
    let sim = sim().await;
    let c = client(&sim);
    let cr = creds(&sim);
    let practice = || PracticeIdentifierReq {
        practice_id: Some(sim.config().practice_id as i32),
        practice_name: Some(sim.config().practice_name.clone()),
        ..Default::default()
    };
    // CreatePatient with hostile text; read it back intact.
    let created = c
        .send(
            &cr,
            &CreatePatientReq {
                patient: Some(PatientCreate {
                    first_name: Some("Zoë".into()),
                    last_name: Some("O'Brien & <Søn> ]]>".into()),
                    dateof_birth: Some(XsDateTime::date(
                        chrono::NaiveDate::from_ymd_opt(1984, 3, 7).unwrap(),
                    )),
                    gender: Some(GenderCode::Female),
                    practice: Some(practice()),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    let pid = created.records[0]
        .i64("PatientID")
        .unwrap()
        .expect("new PatientID");
    let got = c
        .send(
            &cr,
            &GetPatientReq {
                filter: Some(SinglePatientFilter {
                    patient_id: Some(pid as i32),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.records[0].get("LastName"), Some("O'Brien & <Søn> ]]>"));

    // UpdatePatient changes what it names.
    c.send(
        &cr,
        &UpdatePatientReq {
            patient: Some(PatientUpdate {
                patient_id: Some(pid as i32),
                first_name: Some("Zoe".into()),
                last_name: Some("O'Brien".into()),
                practice: Some(practice()),
                ..Default::default()
            }),
        },
    )
    .await
    .unwrap();
    let got = c
        .send(
            &cr,
            &GetPatientReq {
                filter: Some(SinglePatientFilter {
                    patient_id: Some(pid as i32),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.records[0].get("FirstName"), Some("Zoe"));

    // CreateAppointment, then DeleteAppointment: GetAppointment says IsDeleted.
    let provider: i64 = sim.rows(Family::Providers)[0]["ID"].parse().unwrap();
    let location: i64 = sim.rows(Family::ServiceLocations)[0]["ID"].parse().unwrap();
    let appt = c
        .send(
            &cr,
            &CreateAppointmentReq {
                appointment: Some(AppointmentCreate {
                    appointment_status: Some(AppointmentStatus::Scheduled),
                    appointment_type: Some(AppointmentType::P),
                    start_time: Some("2026-10-05T14:00:00.000Z".into()),
                    end_time: Some("2026-10-05T14:30:00.000Z".into()),
                    is_recurring: Some(false),
                    patient_summary: Some(PatientSummary {
                        patient_id: Some(pid),
                        practice_id: Some(sim.config().practice_id),
                        ..Default::default()
                    }),
                    practice_id: Some(sim.config().practice_id),
                    provider_id: Some(provider),
                    resource_ids: Some(vec![provider]),
                    service_location_id: Some(location),
                    was_created_online: Some(false),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    let aid = appt.records[0]
        .i64("AppointmentId")
        .unwrap()
        .expect("new AppointmentId");
    let del = c
        .send(
            &cr,
            &DeleteAppointmentReq {
                appointment: Some(AppointmentDelete {
                    appointment_id: Some(aid),
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(del.records[0].bool("Deleted").unwrap(), Some(true));
    let got = c
        .send(
            &cr,
            &GetAppointmentReq {
                appointment: Some(AppointmentRead {
                    appointment_id: Some(aid),
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.records[0].bool("IsDeleted").unwrap(), Some(true));

    // CreatePayment, found again by reference number.
    let pay = c
        .send(
            &cr,
            &CreatePaymentRequest {
                payment: Some(PaymentCreate {
                    payer_type: Some("Patient".into()),
                    patient: Some(PaymentPatientCreate {
                        patient_id: Some(pid.to_string()),
                        ..Default::default()
                    }),
                    payment: Some(PaymentPaymentCreate {
                        amount_paid: Some("125.50".into()),
                        payment_method: Some("Check".into()),
                        reference_number: Some("CHK-1042".into()),
                    }),
                    post_date: Some("2026-10-05".into()),
                    practice: Some(PaymentPracticeCreate {
                        practice_id: Some(sim.config().practice_id.to_string()),
                        practice_name: Some(sim.config().practice_name.clone()),
                    }),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    assert!(pay.records[0].i64("PaymentID").unwrap().is_some());
    assert!(sim
        .rows(Family::Payments)
        .iter()
        .any(|r| r.get("ReferenceNumber").map(String::as_str) == Some("CHK-1042")));
}

#[tokio::test]
async fn all_patients_pages_by_next_start_key() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        patients: 23,
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let mut start = 0i64;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let req = GetAllPatientsReq {
            fields: Some(FieldSelection::all()),
            filter: Some(PatientBatchGetFilter {
                batch_size: Some(10),
                practice_id: Some(sim.config().practice_id as i32),
                start_key: Some(start as i32),
            }),
        };
        let resp = c.send(&creds(&sim), &req).await.unwrap();
        pages += 1;
        seen.extend(resp.records.iter().map(|r| r.id().unwrap().to_string()));
        match resp.next_start_key {
            Some(k) => start = k,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 23);
}

#[tokio::test]
async fn live_throttles_are_read_from_get_throttles() {
    // A simulator that throttles answers the intervals it enforces…
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: true,
        ..SimConfig::default()
    })
    .await;
    let c = client(&sim);
    let n = c.refresh_throttles(&creds(&sim)).await.unwrap();
    assert!(n >= 19, "{n}");
    let gp = op("GetAllPatients").unwrap();
    assert_eq!(
        c.throttle().interval(&sim.config().customer_key, gp),
        Duration::from_millis(5060)
    );
    // …and the poller's read is once per account and process: a second does nothing.
    assert!(c.throttles_once(&creds(&sim)).await.unwrap());
    assert!(!c.throttles_once(&creds(&sim)).await.unwrap());
    assert_eq!(sim.call_count("GetThrottles"), 2);
    // One that does not throttle answers none: only the client's margin is left.
    let quiet = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let c = client(&quiet);
    c.refresh_throttles(&creds(&quiet)).await.unwrap();
    assert_eq!(
        c.throttle().interval(&quiet.config().customer_key, gp),
        Duration::from_millis(60)
    );
}

#[tokio::test]
async fn large_responses_stream_record_by_record() {
    let sim = sim().await;
    sim.set_bulk_patients(Some(3_000));
    let c = client(&sim);
    let mut s = c
        .stream(
            &creds(&sim),
            op("GetPatients").unwrap(),
            &list_body(&sim, Family::Patients),
        )
        .await
        .unwrap();
    let mut n = 0;
    while let Some(r) = s.next().await.unwrap() {
        assert!(r.id().is_some());
        n += 1;
    }
    assert_eq!(n, 3_000);
}

#[tokio::test]
async fn a_capped_call_stops_reading_at_the_cap_and_the_next_call_is_whole() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        patients: 1500,
        ..SimConfig::default()
    })
    .await;
    let (c, cr) = (client(&sim), creds(&sim));
    let getp = op(Family::Patients.op()).unwrap();
    let body = list_body(&sim, Family::Patients);
    let all = c.call(&cr, getp, &body).await.unwrap().records;
    assert!(all.len() >= 1500);
    // The caller splits a window of `cap` or more: the rest of the answer is not read.
    let capped = c.call_up_to(&cr, getp, &body, 100).await.unwrap().records;
    assert_eq!(capped.len(), 100);
    assert_eq!(
        capped[..],
        all[..100],
        "the same records, in the answer's order"
    );
    // The dropped connection costs the client nothing: the next call reads everything.
    let again = c.call_up_to(&cr, getp, &body, usize::MAX).await.unwrap();
    assert_eq!(again.records.len(), all.len());
}
