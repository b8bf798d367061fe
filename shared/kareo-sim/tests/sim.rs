//! The simulator against hand-written envelopes over real HTTP.

use std::time::Duration;

use kareo_sim::{Call, Family, Fault, FaultRule, KareoSim, Outcome, Row, SimConfig};

const K: &str = "http://www.kareo.com/api/schemas/";
const K7: &str = "http://www.kareo.com/api/schemas";

/// A filter date as Kareo's guide writes it (`2026-10-01T11:00:00`, the practice's wall
/// clock, no zone) — written here, not borrowed from the product's date module, so that these
/// tests check the simulator against the guide and not against the product's reading of it.
fn wall_filter(t: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A list-response stamp as Kareo writes it (`10/1/2026 11:00:00 AM`, the practice's wall
/// clock).
fn wall_stamp(t: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .format("%-m/%-d/%Y %-I:%M:%S %p")
        .to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn unesc(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn cfg() -> SimConfig {
    SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    }
}

/// The RequestHeader in schema order with escaped values.
fn header(c: &SimConfig) -> String {
    format!(
        "<sch:RequestHeader><sch:ClientVersion>tests</sch:ClientVersion><sch:CustomerKey>{}</sch:CustomerKey><sch:Password>{}</sch:Password><sch:User>{}</sch:User></sch:RequestHeader>",
        esc(&c.customer_key),
        esc(&c.password),
        esc(&c.user)
    )
}

fn envelope(op: &str, wrapper_inner: &str) -> String {
    let wrapper = if op == "UpdatePatient" {
        "UpdatePatientReq"
    } else {
        "request"
    };
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:sch=\"{K}\" xmlns:sch1=\"{K7}\"><soapenv:Header/><soapenv:Body><sch:{op}><sch:{wrapper}>{wrapper_inner}</sch:{wrapper}></sch:{op}></soapenv:Body></soapenv:Envelope>"
    )
}

async fn post_raw(sim: &KareoSim, action: Option<&str>, ct: &str, body: String) -> (u16, String) {
    let client = https::client();
    let mut rb = client.post(sim.url()).header("Content-Type", ct).body(body);
    if let Some(a) = action {
        rb = rb.header("SOAPAction", a);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, text)
}

async fn call(sim: &KareoSim, op: &str, inner: &str) -> (u16, String) {
    post_raw(
        sim,
        Some(&format!(
            "\"http://www.kareo.com/api/schemas/KareoServices/{op}\""
        )),
        "text/xml; charset=utf-8",
        envelope(op, inner),
    )
    .await
}

/// Text of the first `<tag>` (unprefixed or with the k7 prefix `a:`), unescaped.
fn first(body: &str, tag: &str) -> Option<String> {
    for open in [format!("<{tag}>"), format!("<a:{tag}>")] {
        if let Some(s) = body.find(&open) {
            let rest = &body[s + open.len()..];
            let end = rest.find("</")?;
            return Some(unesc(&rest[..end]));
        }
    }
    None
}

fn count(body: &str, needle: &str) -> usize {
    body.matches(needle).count()
}

fn well_formed(body: &str) -> bool {
    let mut r = quick_xml::Reader::from_str(body);
    let mut depth = 0i64;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => return depth == 0,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

fn patients_req(c: &SimConfig, filter: &str) -> String {
    format!(
        "{}<sch:Fields/><sch:Filter>{filter}</sch:Filter>",
        header(c)
    )
}

fn last_call(sim: &KareoSim) -> Call {
    sim.calls().pop().expect("a call")
}

#[tokio::test]
async fn get_patients_returns_every_record_with_escaped_credentials() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let filter = format!(
        "<sch:PracticeName>{}</sch:PracticeName>",
        esc(&c.practice_name)
    );
    let (status, body) = call(&sim, "GetPatients", &patients_req(&c, &filter)).await;
    assert_eq!(status, 200, "{body}");
    assert!(well_formed(&body));
    assert!(body.contains("<GetPatientsResponse xmlns=\"http://www.kareo.com/api/schemas/\">"));
    assert_eq!(first(&body, "IsError").as_deref(), Some("false"));
    assert_eq!(first(&body, "Authenticated").as_deref(), Some("true"));
    assert_eq!(
        first(&body, "SecurityResultSuccess").as_deref(),
        Some("true")
    );
    assert!(
        body.contains("<b:int>1</b:int>"),
        "PracticesAuthorized in the Arrays namespace"
    );
    assert_eq!(count(&body, "<PatientData>"), c.patients);
    assert!(!body.contains("O'Brien & S"), "text must be escaped");
    let logged = last_call(&sim);
    assert_eq!(logged.op, "GetPatients");
    assert_eq!(logged.outcome, Outcome::Ok);
    assert!(logged.credentials_valid);
    assert_eq!(logged.records, c.patients);
}

#[tokio::test]
async fn password_in_cdata_or_char_refs_also_matches() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let pw: String = c
        .password
        .chars()
        .map(|ch| format!("&#{};", ch as u32))
        .collect();
    let h = format!(
        "<sch:RequestHeader><sch:CustomerKey>{}</sch:CustomerKey><sch:Password>{pw}</sch:Password><sch:User><![CDATA[{}]]></sch:User></sch:RequestHeader>",
        esc(&c.customer_key),
        c.user
    );
    let (status, body) = call(
        &sim,
        "GetProviders",
        &format!("{h}<sch:Fields/><sch:Filter/>"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        first(&body, "Authenticated").as_deref(),
        Some("true"),
        "{body}"
    );
    assert_eq!(count(&body, "<ProviderData>"), c.providers);
}

#[tokio::test]
async fn user_before_password_fails_authentication() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let h = format!(
        "<sch:RequestHeader><sch:CustomerKey>{}</sch:CustomerKey><sch:User>{}</sch:User><sch:Password>{}</sch:Password></sch:RequestHeader>",
        esc(&c.customer_key),
        esc(&c.user),
        esc(&c.password)
    );
    let (status, body) = call(
        &sim,
        "GetPatients",
        &format!("{h}<sch:Fields/><sch:Filter/>"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first(&body, "Authenticated").as_deref(), Some("false"));
    assert_eq!(first(&body, "Authorized").as_deref(), Some("false"));
    assert_eq!(first(&body, "CustomerKeyValid").as_deref(), Some("true"));
    assert_eq!(
        first(&body, "SecurityResultSuccess").as_deref(),
        Some("false")
    );
    assert_eq!(
        first(&body, "SecurityResult").as_deref(),
        Some("Invalid user name and/or password")
    );
    assert!(!body.contains("<PatientData"));
    let logged = last_call(&sim);
    assert_eq!(logged.outcome, Outcome::AuthFailed);
    assert!(!logged.credentials_valid);

    // A wrong customer key says so.
    let bad = SimConfig {
        customer_key: "nope".into(),
        ..c.clone()
    };
    let (_, body) = call(&sim, "GetPatients", &patients_req(&bad, "")).await;
    assert_eq!(first(&body, "CustomerKeyValid").as_deref(), Some("false"));
}

#[tokio::test]
async fn wrong_soap_action_is_a_contract_filter_fault() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let body = envelope("GetPatients", &patients_req(&c, ""));
    for action in [
        "http://www.kareo.com/api/schemas/GetPatients",
        "http://www.kareo.com/api/schemas/KareoServices/GetPractices",
        "",
    ] {
        let (status, text) =
            post_raw(&sim, Some(action), "text/xml; charset=utf-8", body.clone()).await;
        assert_eq!(status, 500, "{action}");
        assert!(
            text.contains("ContractFilter mismatch at the EndpointDispatcher"),
            "{text}"
        );
        assert!(text.contains("a:ActionNotSupported"));
    }
    let (status, text) = post_raw(&sim, None, "text/xml; charset=utf-8", body.clone()).await;
    assert_eq!(status, 500);
    assert!(text.contains("ContractFilter mismatch"));
    // Unquoted is fine.
    let (status, _) = post_raw(
        &sim,
        Some("http://www.kareo.com/api/schemas/KareoServices/GetPatients"),
        "text/xml; charset=utf-8",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    // SOAP 1.2 content type.
    let (status, text) = post_raw(
        &sim,
        Some("http://www.kareo.com/api/schemas/KareoServices/GetPatients"),
        "application/soap+xml; charset=utf-8",
        body,
    )
    .await;
    assert_eq!(status, 415);
    assert!(text.contains("text/xml; charset=utf-8"));
    assert_eq!(last_call(&sim).outcome, Outcome::HttpStatus(415));
}

#[tokio::test]
async fn k7_fields_in_the_wrong_namespace_are_dropped_then_missing() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    // Fields and Filter in k (trailing slash): dropped, so the required Fields is missing.
    let (status, body) = call(&sim, "GetServiceLocations", &patients_req(&c, "")).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("a:DeserializationFailed"));
    assert!(body.contains("Expecting element 'Fields'"), "{body}");
    assert_eq!(
        last_call(&sim).outcome,
        Outcome::SoapFault("DeserializationFailed")
    );

    // In k7: records, under the k7 prefix declared on the result element.
    let inner = format!(
        "{}<sch1:Fields/><sch1:Filter><sch1:PracticeID>{}</sch1:PracticeID><sch1:PracticeName>{}</sch1:PracticeName></sch1:Filter>",
        header(&c),
        c.practice_id,
        esc(&c.practice_name)
    );
    let (status, body) = call(&sim, "GetServiceLocations", &inner).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("xmlns:a=\"{K7}\"")));
    assert_eq!(count(&body, "<a:ServiceLocationData>"), c.service_locations);
    assert!(first(&body, "ModifiedDate").is_some());
    assert!(well_formed(&body));
}

#[tokio::test]
async fn missing_filter_is_an_internal_fault_and_bad_values_fail_deserialization() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let (status, body) = call(&sim, "GetPatients", &format!("{}<sch:Fields/>", header(&c))).await;
    assert_eq!(status, 500);
    assert!(body.contains("a:InternalServiceFault"));

    let (status, body) = call(&sim, "GetPatients", &format!("{}<sch:Filter/>", header(&c))).await;
    assert_eq!(status, 500);
    assert!(body.contains("Expecting element 'Fields'"));

    let inner = format!(
        "{}<sch:Fields><sch:FirstName>yes</sch:FirstName></sch:Fields><sch:Filter/>",
        header(&c)
    );
    let (status, body) = call(&sim, "GetPatients", &inner).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("DeserializationFailed") && body.contains("Boolean"),
        "{body}"
    );

    let inner = format!(
        "{}<sch:Filter><sch:PatientID>12x</sch:PatientID></sch:Filter>",
        header(&c)
    );
    let (status, _) = call(&sim, "GetPatient", &inner).await;
    assert_eq!(status, 500);

    // Not well-formed: bare 400.
    let (status, _) = post_raw(
        &sim,
        Some("http://www.kareo.com/api/schemas/KareoServices/GetPatients"),
        "text/xml; charset=utf-8",
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><x></y>".into(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn fields_flags_select_members_and_misordered_flags_are_dropped() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let inner = format!(
        "{}<sch:Fields><sch:FirstName>true</sch:FirstName><sch:ID>true</sch:ID><sch:LastModifiedDate>true</sch:LastModifiedDate><sch:DOB>true</sch:DOB></sch:Fields><sch:Filter/>",
        header(&c)
    );
    let (status, body) = call(&sim, "GetPatients", &inner).await;
    assert_eq!(status, 200);
    assert_eq!(count(&body, "<PatientData>"), c.patients);
    assert_eq!(count(&body, "<FirstName>"), c.patients);
    assert_eq!(count(&body, "<ID>"), c.patients);
    assert_eq!(count(&body, "<LastModifiedDate>"), c.patients);
    assert_eq!(
        count(&body, "<DOB>"),
        0,
        "DOB came after LastModifiedDate: dropped"
    );
    assert_eq!(count(&body, "<City>"), 0);
}

#[tokio::test]
async fn throttle_answers_a_second_immediate_call() {
    let c = SimConfig::default();
    assert!(c.enforce_throttle);
    let sim = KareoSim::start(c.clone()).await;
    let inner = format!("{}<sch:Fields/><sch:Filter/>", header(&c));
    let (s1, b1) = call(&sim, "GetProviders", &inner).await;
    assert_eq!((s1, first(&b1, "IsError").as_deref()), (200, Some("false")));
    let (s2, b2) = call(&sim, "GetProviders", &inner).await;
    assert_eq!(s2, 200);
    assert_eq!(first(&b2, "IsError").as_deref(), Some("true"));
    assert_eq!(
        first(&b2, "ErrorMessage").as_deref(),
        Some("429: GetProviders endpoint requested more than allowed over time interval 500 milliseconds. Please wait to try again.")
    );
    assert!(!b2.contains("<ProviderData"));
    assert_eq!(last_call(&sim).outcome, Outcome::Throttled);
    // Another operation is not affected; after the interval the first one works again.
    let (_, b3) = call(&sim, "GetPractices", &inner).await;
    assert_eq!(first(&b3, "IsError").as_deref(), Some("false"));
    tokio::time::sleep(Duration::from_millis(520)).await;
    let (_, b4) = call(&sim, "GetProviders", &inner).await;
    assert_eq!(first(&b4, "IsError").as_deref(), Some("false"));
    assert_eq!(sim.call_count("GetProviders"), 3);
}

#[tokio::test]
async fn last_modified_window_is_inclusive_at_both_ends_and_empty_gets_a_placeholder() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let tz = c.timezone;
    let t = sim.now() + chrono::Duration::days(2);
    sim.set_now(t);
    sim.update(Family::Patients, "3", &[("FirstName", "Zoë & Co")]);
    let f = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        format!(
            "<sch:FromLastModifiedDate>{}</sch:FromLastModifiedDate><sch:PracticeID>{}</sch:PracticeID><sch:PracticeName>{}</sch:PracticeName><sch:ToLastModifiedDate>{}</sch:ToLastModifiedDate>",
            wall_filter(from, tz),
            c.practice_id,
            esc(&c.practice_name),
            wall_filter(to, tz)
        )
    };
    // [t, t]: exactly the updated record.
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, &f(t, t))).await;
    assert_eq!(count(&body, "<PatientData>"), 1, "{body}");
    assert_eq!(first(&body, "ID").as_deref(), Some("3"));
    assert_eq!(first(&body, "FirstName").as_deref(), Some("Zoë & Co"));
    assert_eq!(first(&body, "LastModifiedDate"), Some(wall_stamp(t, tz)));
    // Ending one second before: nothing, with the placeholder item.
    let s = chrono::Duration::seconds(1);
    let (_, body) = call(
        &sim,
        "GetPatients",
        &patients_req(&c, &f(t - s * 3600, t - s)),
    )
    .await;
    assert_eq!(count(&body, "<PatientData>"), 0);
    assert_eq!(count(&body, "<PatientData/>"), 1, "{body}");
    assert!(body.contains("<Patients><PatientData/></Patients>") || well_formed(&body));
    // Starting one second after: nothing either.
    let (_, body) = call(
        &sim,
        "GetPatients",
        &patients_req(&c, &f(t + s, t + s * 60)),
    )
    .await;
    assert_eq!(count(&body, "<PatientData/>"), 1);
    // Another practice's name: nothing.
    let (_, body) = call(
        &sim,
        "GetPatients",
        &patients_req(&c, "<sch:PracticeName>Other</sch:PracticeName>"),
    )
    .await;
    assert_eq!(count(&body, "<PatientData/>"), 1);
    // The whole 30-day history with M/d/yyyy dates.
    let filter = "<sch:FromLastModifiedDate>8/1/2026</sch:FromLastModifiedDate><sch:ToLastModifiedDate>12/1/2026</sch:ToLastModifiedDate>";
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, filter)).await;
    assert_eq!(count(&body, "<PatientData>"), c.patients);
    // A filter date that does not parse.
    let filter = "<sch:FromLastModifiedDate>yesterday</sch:FromLastModifiedDate><sch:ToLastModifiedDate>today</sch:ToLastModifiedDate>";
    let (status, body) = call(&sim, "GetPatients", &patients_req(&c, filter)).await;
    assert_eq!(status, 200);
    assert_eq!(first(&body, "IsError").as_deref(), Some("true"));
    assert_eq!(last_call(&sim).outcome, Outcome::AppError);
}

#[tokio::test]
async fn max_records_and_wide_appointment_windows_fault() {
    let c = SimConfig {
        max_records: Some(5),
        ..cfg()
    };
    let sim = KareoSim::start(c.clone()).await;
    let (status, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert_eq!(status, 500);
    assert!(body.contains("InternalServiceFault"));
    let filter = "<sch:EndDate>2026-12-31</sch:EndDate><sch:StartDate>2026-09-01</sch:StartDate>";
    let inner = format!(
        "{}<sch:Fields/><sch:Filter>{filter}</sch:Filter>",
        header(&c)
    );
    let (status, _) = call(&sim, "GetAppointments", &inner).await;
    assert_eq!(status, 500);
}

fn create_patient_req(c: &SimConfig) -> String {
    format!(
        "{}<sch:Patient><sch:City>Boston</sch:City><sch:DateofBirth>1980-05-01T00:00:00</sch:DateofBirth><sch:EmailAddress>zoe@example.org</sch:EmailAddress><sch:FirstName>Zoë</sch:FirstName><sch:Gender>Female</sch:Gender><sch:LastName>O'Brien &amp; Søn</sch:LastName><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice></sch:Patient>",
        header(c),
        c.practice_id
    )
}

#[tokio::test]
async fn writes_are_visible_in_later_reads() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;

    // CreatePatient → GetPatient.
    let (status, body) = call(&sim, "CreatePatient", &create_patient_req(&c)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<CreatePatientResponse"));
    let pid = first(&body, "PatientID").expect("PatientID");
    assert_eq!(first(&body, "PracticeName"), Some(c.practice_name.clone()));
    let inner = format!(
        "{}<sch:Filter><sch:PatientID>{pid}</sch:PatientID></sch:Filter>",
        header(&c)
    );
    let (_, body) = call(&sim, "GetPatient", &inner).await;
    assert_eq!(first(&body, "LastName").as_deref(), Some("O'Brien & Søn"));
    assert_eq!(first(&body, "DOB").as_deref(), Some("5/1/1980 12:00:00 AM"));

    // UpdatePatient: present members change, absent ones stay.
    sim.advance(chrono::Duration::minutes(5));
    let inner = format!(
        "{}<sch:Patient><sch:FirstName>Chloé</sch:FirstName><sch:PatientID>{pid}</sch:PatientID><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice></sch:Patient>",
        header(&c),
        c.practice_id
    );
    let (status, body) = call(&sim, "UpdatePatient", &inner).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<UpdatePatientResult"));
    let row: Row = sim
        .rows(Family::Patients)
        .into_iter()
        .find(|r| r["ID"] == pid)
        .expect("patient");
    assert_eq!(row["FirstName"], "Chloé");
    assert_eq!(row["LastName"], "O'Brien & Søn");
    assert_eq!(row["PatientFullName"], "Chloé O'Brien & Søn");
    assert_eq!(row["LastModifiedDate"], wall_stamp(sim.now(), c.timezone));

    // CreateAppointment → GetAppointments / GetAppointment → DeleteAppointment.
    let inner = format!(
        "{}<sch:Appointment><sch:AppointmentReasonId>1</sch:AppointmentReasonId><sch:AppointmentStatus>Confirmed</sch:AppointmentStatus><sch:AppointmentType>P</sch:AppointmentType><sch:EndTime>2026-10-02T14:30:00.000Z</sch:EndTime><sch:IsRecurring>false</sch:IsRecurring><sch:Notes>x &amp; y</sch:Notes><sch:PatientSummary><sch:PatientId>{pid}</sch:PatientId></sch:PatientSummary><sch:PracticeId>{}</sch:PracticeId><sch:ProviderId>1</sch:ProviderId><sch:ServiceLocationId>1</sch:ServiceLocationId><sch:StartTime>2026-10-02T14:00:00.000Z</sch:StartTime><sch:WasCreatedOnline>false</sch:WasCreatedOnline></sch:Appointment>",
        header(&c),
        c.practice_id
    );
    let (status, body) = call(&sim, "CreateAppointment", &inner).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(first(&body, "IsError").as_deref(), Some("false"), "{body}");
    let aid = first(&body, "AppointmentId").expect("AppointmentId");
    assert_eq!(
        first(&body, "StartTime").as_deref(),
        Some("2026-10-02T14:00:00.000Z")
    );
    let filter = format!(
        "<sch:PatientID>{pid}</sch:PatientID><sch:PracticeName>{}</sch:PracticeName>",
        esc(&c.practice_name)
    );
    let inner = format!(
        "{}<sch:Fields/><sch:Filter>{filter}</sch:Filter>",
        header(&c)
    );
    let (_, body) = call(&sim, "GetAppointments", &inner).await;
    assert_eq!(first(&body, "ID"), Some(aid.clone()), "{body}");
    assert_eq!(
        first(&body, "ConfirmationStatus").as_deref(),
        Some("Confirmed")
    );
    assert_eq!(
        first(&body, "StartDate").as_deref(),
        Some("10/2/2026 10:00:00 AM")
    );
    assert_eq!(first(&body, "Notes").as_deref(), Some("x & y"));

    let appt = format!(
        "{}<sch:Appointment><sch:AppointmentId>{aid}</sch:AppointmentId></sch:Appointment>",
        header(&c)
    );
    let (status, body) = call(&sim, "DeleteAppointment", &appt).await;
    assert_eq!(status, 200);
    assert_eq!(first(&body, "Deleted").as_deref(), Some("true"));
    let (_, body) = call(&sim, "GetAppointments", &inner).await;
    assert!(body.contains("<AppointmentData/>"), "{body}");
    let (_, body) = call(&sim, "GetAppointment", &appt).await;
    assert_eq!(first(&body, "IsDeleted").as_deref(), Some("true"));
    assert_eq!(
        first(&body, "AppointmentStatus").as_deref(),
        Some("Confirmed")
    );

    // CreateEncounter → GetEncounterDetails and GetCharges (unapproved: only with T).
    let inner = format!(
        "{}<sch:Encounter><sch:EncounterStatus>Draft</sch:EncounterStatus><sch:Patient><sch:PatientID>{pid}</sch:PatientID></sch:Patient><sch:PostDate>2026-10-01T00:00:00Z</sch:PostDate><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice><sch:RenderingProvider><sch:ProviderID>1</sch:ProviderID></sch:RenderingProvider><sch:ServiceLines><sch:ServiceLineReq><sch:DiagnosisCode1>I10</sch:DiagnosisCode1><sch:ExternalID>L1</sch:ExternalID><sch:ProcedureCode>99213</sch:ProcedureCode><sch:ServiceStartDate>2026-09-30T14:00:00Z</sch:ServiceStartDate><sch:UnitCharge>125</sch:UnitCharge><sch:Units>1</sch:Units></sch:ServiceLineReq><sch:ServiceLineReq><sch:DiagnosisCode1>I10</sch:DiagnosisCode1><sch:ProcedureCode>36415</sch:ProcedureCode><sch:ServiceStartDate>2026-09-30T14:00:00Z</sch:ServiceStartDate><sch:Units>2</sch:Units></sch:ServiceLineReq></sch:ServiceLines><sch:ServiceLocation><sch:LocationID>1</sch:LocationID></sch:ServiceLocation><sch:ServiceStartDate>2026-09-30T14:00:00Z</sch:ServiceStartDate></sch:Encounter>",
        header(&c),
        c.practice_id
    );
    let (status, body) = call(&sim, "CreateEncounter", &inner).await;
    assert_eq!(first(&body, "IsError").as_deref(), Some("false"), "{body}");
    assert_eq!(status, 200);
    let eid = first(&body, "EncounterID").expect("EncounterID");
    assert_eq!(count(&body, "<ServiceLineRes>"), 2);
    let inner = format!(
        "{}<sch:Fields/><sch:Filter><sch:EncounterID>{eid}</sch:EncounterID><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice></sch:Filter>",
        header(&c),
        c.practice_id
    );
    let (_, body) = call(&sim, "GetEncounterDetails", &inner).await;
    assert_eq!(
        first(&body, "EncounterStatus").as_deref(),
        Some("1"),
        "{body}"
    );
    assert_eq!(count(&body, "<ServiceLineRes>"), 2);
    let t = wall_filter(sim.now(), c.timezone);
    let charges = |unapproved: &str| {
        format!(
            "{}<sch:Fields/><sch:Filter><sch:FromLastModifiedDate>{t}</sch:FromLastModifiedDate>{unapproved}<sch:PracticeName>{}</sch:PracticeName><sch:ToLastModifiedDate>{t}</sch:ToLastModifiedDate></sch:Filter>",
            header(&c),
            esc(&c.practice_name)
        )
    };
    let (_, body) = call(&sim, "GetCharges", &charges("")).await;
    assert_eq!(count(&body, "<ChargeData>"), 0);
    let (_, body) = call(
        &sim,
        "GetCharges",
        &charges("<sch:IncludeUnapprovedCharges>T</sch:IncludeUnapprovedCharges>"),
    )
    .await;
    assert_eq!(count(&body, "<ChargeData>"), 2, "{body}");
    assert_eq!(first(&body, "EncounterID"), Some(eid));

    // CreatePayment.
    let before = sim.rows(Family::Payments).len();
    let inner = format!(
        "{}<sch:Payment><sch:Patient><sch:PatientID>{pid}</sch:PatientID></sch:Patient><sch:PayerType>Patient</sch:PayerType><sch:Payment><sch:AmountPaid>25.00</sch:AmountPaid><sch:PaymentMethod>CreditCard</sch:PaymentMethod><sch:ReferenceNumber>R1</sch:ReferenceNumber></sch:Payment><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice></sch:Payment>",
        header(&c),
        c.practice_id
    );
    let (status, body) = call(&sim, "CreatePayment", &inner).await;
    assert_eq!(status, 200);
    let pay_id = first(&body, "PaymentID").expect("PaymentID");
    let rows = sim.rows(Family::Payments);
    assert_eq!(rows.len(), before + 1);
    let row = rows
        .iter()
        .find(|r| r["ID"] == pay_id)
        .expect("payment row");
    assert_eq!(row["Amount"], "25.00");
    assert_eq!(row["PaymentMethod"], "CreditCard");
}

#[tokio::test]
async fn misordered_update_applies_only_the_members_in_order_and_validation_errors_do_not_apply() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let before = sim.rows(Family::Patients)[0].clone();
    // FirstName first, then AddressLine1 (earlier in the sequence): AddressLine1 is dropped.
    let inner = format!(
        "{}<sch:Patient><sch:FirstName>Ingrid</sch:FirstName><sch:AddressLine1>1 New St</sch:AddressLine1><sch:PatientID>1</sch:PatientID><sch:Practice><sch:PracticeID>{}</sch:PracticeID></sch:Practice></sch:Patient>",
        header(&c),
        c.practice_id
    );
    let (status, _) = call(&sim, "UpdatePatient", &inner).await;
    assert_eq!(status, 200);
    let after = sim.rows(Family::Patients)[0].clone();
    assert_eq!(after["FirstName"], "Ingrid");
    assert_eq!(after.get("AddressLine1"), before.get("AddressLine1"));

    // CreateAppointment with an unknown provider: IsError, nothing created.
    let n = sim.rows(Family::Appointments).len();
    let inner = format!(
        "{}<sch:Appointment><sch:AppointmentStatus>Scheduled</sch:AppointmentStatus><sch:AppointmentType>P</sch:AppointmentType><sch:EndTime>2026-10-02T14:30:00Z</sch:EndTime><sch:IsRecurring>false</sch:IsRecurring><sch:PatientSummary><sch:PatientId>1</sch:PatientId></sch:PatientSummary><sch:PracticeId>{}</sch:PracticeId><sch:ProviderId>999</sch:ProviderId><sch:ServiceLocationId>1</sch:ServiceLocationId><sch:StartTime>2026-10-02T14:00:00Z</sch:StartTime></sch:Appointment>",
        header(&c),
        c.practice_id
    );
    let (_, body) = call(&sim, "CreateAppointment", &inner).await;
    assert_eq!(first(&body, "IsError").as_deref(), Some("true"));
    assert!(body.contains("valid ProviderGuids or ResourceGuids"));
    assert_eq!(sim.rows(Family::Appointments).len(), n);

    // A required member missing (StartTime): deserialization fault.
    let inner = inner.replace("<sch:StartTime>2026-10-02T14:00:00Z</sch:StartTime>", "");
    let (status, body) = call(&sim, "CreateAppointment", &inner).await;
    assert_eq!(status, 500);
    assert!(body.contains("Expecting element 'StartTime'"), "{body}");
    // A non-ISO xs:dateTime: deserialization fault.
    let inner = inner.replace("2026-10-02T14:30:00Z", "10/2/2026 2:30 PM");
    let (status, _) = call(&sim, "CreateAppointment", &inner).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn get_all_patients_pages_with_next_start_key() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let page = |start: Option<String>| {
        format!(
            "{}<sch:Fields/><sch:Filter><sch:BatchSize>10</sch:BatchSize><sch:PracticeID>{}</sch:PracticeID>{}</sch:Filter>",
            header(&c),
            c.practice_id,
            start.map(|s| format!("<sch:StartKey>{s}</sch:StartKey>")).unwrap_or_default()
        )
    };
    let mut start = None;
    let mut seen = 0;
    for _ in 0..10 {
        let (status, body) = call(&sim, "GetAllPatients", &page(start.clone())).await;
        assert_eq!(status, 200, "{body}");
        seen += count(&body, "<PatientBatchData>");
        start = first(&body, "nextStartKey");
        if start.is_none() {
            assert!(!body.contains("<Key>"));
            break;
        }
    }
    assert_eq!(seen, c.patients);
    let bad = page(None).replace(
        "<sch:BatchSize>10</sch:BatchSize>",
        "<sch:BatchSize>5000</sch:BatchSize>",
    );
    let (_, body) = call(&sim, "GetAllPatients", &bad).await;
    assert_eq!(first(&body, "IsError").as_deref(), Some("true"));
}

#[tokio::test]
async fn throttles_and_customer_id() {
    // GetThrottles answers the intervals the simulator enforces: none when it does not.
    let quiet = KareoSim::start(cfg()).await;
    let (_, body) = call(&quiet, "GetThrottles", &header(&cfg())).await;
    assert!(body.contains("<Endpoint>GetPatients</Endpoint><ThrottleTimeMs>0</ThrottleTimeMs>"));
    let c = SimConfig {
        enforce_throttle: true,
        ..cfg()
    };
    let sim = KareoSim::start(c.clone()).await;
    let (status, body) = call(&sim, "GetThrottles", &header(&c)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<Endpoint>GetPatients</Endpoint><ThrottleTimeMs>1000</ThrottleTimeMs>"),
        "{body}"
    );
    let creds = format!(
        "<sch:CustomerKey>{}</sch:CustomerKey><sch:Password>{}</sch:Password><sch:User>{}</sch:User>",
        esc(&c.customer_key),
        esc(&c.password),
        esc(&c.user)
    );
    let (status, body) = call(&sim, "GetCustomerIdFromKey", &creds).await;
    assert_eq!(status, 200);
    assert_eq!(first(&body, "CustomerId"), Some(c.customer_id.to_string()));
    assert_eq!(first(&body, "IsAuthorized").as_deref(), Some("true"));
}

#[tokio::test]
async fn every_fault_kind_is_observable() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let req = patients_req(&c, "");
    let inject = |f: Fault| sim.inject(FaultRule::new(f).on("GetPatients"));

    inject(Fault::Http500Fault);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 500);
    assert!(b.contains("a:InternalServiceFault"));
    assert_eq!(last_call(&sim).outcome, Outcome::Injected("Http500Fault"));

    inject(Fault::HttpStatus(503));
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 503);
    assert!(b.len() < 100);

    inject(Fault::Malformed);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    assert!(!well_formed(&b));

    inject(Fault::Truncated);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    assert!(!well_formed(&b));
    assert!(b.contains("<PatientData>") && !b.trim_end().ends_with("</s:Envelope>"));

    inject(Fault::Throttle);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    assert!(first(&b, "ErrorMessage").unwrap().starts_with("429: GetPatients endpoint requested more than allowed over time interval 1000 milliseconds."));
    assert_eq!(last_call(&sim).outcome, Outcome::Throttled);
    assert!(last_call(&sim).credentials_valid);

    inject(Fault::AuthFailure);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    assert_eq!(first(&b, "Authenticated").as_deref(), Some("false"));
    assert_eq!(
        first(&b, "SecurityResult").as_deref(),
        Some("Invalid user name and/or password")
    );

    inject(Fault::SchemaMismatch);
    let (s, b) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    assert!(well_formed(&b) && b.contains("<GetFooResponse") && !b.contains("GetPatientsResult"));

    // Reset: no response, or a body cut by a reset; either way the client sees an error.
    for _ in 0..4 {
        inject(Fault::Reset);
        let client = https::client();
        let r = client
            .post(sim.url())
            .header("Content-Type", "text/xml; charset=utf-8")
            .header(
                "SOAPAction",
                "http://www.kareo.com/api/schemas/KareoServices/GetPatients",
            )
            .body(envelope("GetPatients", &req))
            .send()
            .await;
        let failed = match r {
            Err(_) => true,
            Ok(resp) => resp.bytes().await.is_err(),
        };
        assert!(failed);
    }

    // Timeout: the client gives up first.
    inject(Fault::Timeout(Duration::from_millis(400)));
    let client = https::client_builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let r = client
        .post(sim.url())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "SOAPAction",
            "http://www.kareo.com/api/schemas/KareoServices/GetPatients",
        )
        .body(envelope("GetPatients", &req))
        .send()
        .await;
    assert!(r.is_err());

    // TimeoutAfterCommit: the write happens, the answer does not arrive in time.
    let n = sim.rows(Family::Patients).len();
    sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_millis(400))).on("CreatePatient"),
    );
    let r = client
        .post(sim.url())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "SOAPAction",
            "http://www.kareo.com/api/schemas/KareoServices/CreatePatient",
        )
        .body(envelope("CreatePatient", &create_patient_req(&c)))
        .send()
        .await;
    assert!(r.is_err());
    assert_eq!(sim.rows(Family::Patients).len(), n + 1);

    // Rules are used up; rate rules are seeded; clear_faults removes everything.
    let (s, _) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
    sim.inject(FaultRule::new(Fault::HttpStatus(429)).always().rate(1.0));
    let (s, _) = call(
        &sim,
        "GetProviders",
        &format!("{}<sch:Fields/><sch:Filter/>", header(&c)),
    )
    .await;
    assert_eq!(s, 429);
    sim.clear_faults();
    let (s, _) = call(&sim, "GetPatients", &req).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn latency_is_added() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    sim.set_latency(Duration::from_millis(150));
    let t = std::time::Instant::now();
    let (s, _) = call(
        &sim,
        "GetPractices",
        &format!("{}<sch:Fields/><sch:Filter/>", header(&c)),
    )
    .await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn bulk_mode_streams_exactly_what_render_list_response_writes() {
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let n = 300u64;
    sim.set_bulk_patients(Some(n));
    let client = https::client();
    let resp = client
        .post(sim.url())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "SOAPAction",
            "http://www.kareo.com/api/schemas/KareoServices/GetPatients",
        )
        .body(envelope("GetPatients", &patients_req(&c, "")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let body = resp.bytes().await.unwrap();
    let mut want = Vec::new();
    kareo_sim::render_list_response(
        "GetPatients",
        (0..n).map(|i| kareo_sim::synthetic_patient(i, c.timezone)),
        c.timezone,
        &mut want,
    )
    .unwrap();
    assert_eq!(body.len(), want.len());
    assert!(body[..] == want[..]);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(count(&text, "<PatientData>"), n as usize);
    assert!(well_formed(&text));

    // Zero records: the placeholder.
    sim.set_bulk_patients(Some(0));
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert!(body.contains("<Patients><PatientData/></Patients>"));

    // Rendered beforehand (benchmarks): the same bytes, in more than one frame, still behind
    // authentication, and truncated when a fault says so.
    let big: Vec<u8> = want.iter().cycle().take(want.len() * 3).copied().collect();
    sim.set_bulk_patients(Some(n));
    sim.set_bulk_rendered(Some(bytes::Bytes::from(big.clone())));
    let (status, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert_eq!(status, 200);
    assert!(body.as_bytes() == &big[..], "served as given");
    let mut wrong = c.clone();
    wrong.password = "not-the-password".into();
    let (_, body) = call(&sim, "GetPatients", &patients_req(&wrong, "")).await;
    assert!(!body.contains("<PatientData>"), "no body before sign-in");
    sim.inject(FaultRule::new(Fault::Truncated).on("GetPatients"));
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert!(
        !body.is_empty() && body.len() <= 1500,
        "cut inside the first frame"
    );
    sim.set_bulk_rendered(None);
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert_eq!(body.len(), want.len(), "rendering again");
}

#[test]
fn synthetic_patients_are_rich_and_deterministic() {
    let tz = chrono_tz::America::New_York;
    let a = kareo_sim::synthetic_patient(17, tz);
    assert_eq!(a, kareo_sim::synthetic_patient(17, tz));
    assert!(a.len() >= 55, "{} members", a.len());
    assert_eq!(a["ID"], "18");
    let data = Family::Patients.data_type();
    assert!(
        a.keys().all(|k| data.member(k).is_some()),
        "only PatientData members"
    );
    let names: String = (0..200)
        .map(|i| kareo_sim::synthetic_patient(i, tz)["PatientFullName"].clone())
        .collect();
    assert!(names.contains('&') && names.contains('ö') || names.contains('ë'));
    assert!(names.contains("Nguyễn"));
}

#[tokio::test]
async fn same_seed_same_data_and_rows_use_schema_names() {
    let a = KareoSim::start(cfg()).await;
    let b = KareoSim::start(cfg()).await;
    for f in Family::ALL {
        assert_eq!(a.rows(f), b.rows(f), "{f:?}");
        let data = f.data_type();
        for r in a.rows(f) {
            for k in r.keys() {
                assert!(data.member(k).is_some(), "{f:?} {k}");
            }
        }
    }
    let other = KareoSim::start(SimConfig { seed: 99, ..cfg() }).await;
    assert_ne!(
        a.rows(Family::Appointments),
        other.rows(Family::Appointments)
    );
    let appts = a.rows(Family::Appointments);
    let statuses: std::collections::HashSet<_> = appts
        .iter()
        .map(|r| r["ConfirmationStatus"].clone())
        .collect();
    assert!(statuses.len() >= 3);
    // Stamps lie in the 30 days before now.
    let now = a.now();
    let recent = a.modified(Family::Patients, now - chrono::Duration::days(30), now);
    for r in a.rows(Family::Patients) {
        assert!(recent.contains(&r["ID"]), "{}", r["ID"]);
    }
}

#[tokio::test]
async fn insert_and_update_stamp_the_simulated_clock() {
    let sim = KareoSim::start(cfg()).await;
    sim.advance(chrono::Duration::hours(1));
    let mut row = Row::new();
    row.insert("FullName".into(), "New Provider MD".into());
    let id = sim.insert(Family::Providers, row);
    let got = sim
        .rows(Family::Providers)
        .into_iter()
        .find(|r| r["ID"] == id)
        .unwrap();
    let stamp = wall_stamp(sim.now(), sim.config().timezone);
    assert_eq!(got["CreatedDate"], stamp);
    assert_eq!(got["LastModifiedDate"], stamp);
    sim.update(Family::ServiceLocations, "1", &[("Name", "Renamed")]);
    let loc = sim.rows(Family::ServiceLocations).remove(0);
    assert_eq!(loc["ModifiedDate"], stamp);
    sim.delete_appointment("1");
    assert!(sim
        .rows(Family::Appointments)
        .iter()
        .all(|r| r["ID"] != "1"));
}

/// The readings of `Fields`, a date-only `To`, and GetCharges' posting window that the guide
/// leaves open: each mode answers differently from the default, by the simulator's own rules.
#[tokio::test]
async fn explicit_field_flags_date_only_to_bounds_and_the_posting_window_by_reality() {
    use kareo_sim::Reality;
    let flags = |c: &SimConfig| {
        format!(
            "{}<sch:Fields><sch:FirstName>true</sch:FirstName><sch:ID>true</sch:ID></sch:Fields><sch:Filter/>",
            header(c)
        )
    };
    // Explicit `true` flags: the default selects members; the placeholder reading answers one
    // empty item and no fault.
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let (_, body) = call(&sim, "GetPatients", &flags(&c)).await;
    assert_eq!(count(&body, "<PatientData>"), c.patients);
    let c = SimConfig {
        reality: Reality {
            explicit_fields_placeholder: true,
            ..Reality::default()
        },
        ..cfg()
    };
    let sim = KareoSim::start(c.clone()).await;
    let (status, body) = call(&sim, "GetPatients", &flags(&c)).await;
    assert_eq!(status, 200);
    assert_eq!(count(&body, "<PatientData>"), 0, "{body}");
    assert_eq!(count(&body, "<PatientData/>"), 1, "{body}");
    assert_ne!(first(&body, "IsError").as_deref(), Some("true"));
    // An empty Fields still answers every record.
    let (_, body) = call(&sim, "GetPatients", &patients_req(&c, "")).await;
    assert_eq!(count(&body, "<PatientData>"), c.patients);

    // A date-only To: midnight (the record changed in the afternoon is outside) or the whole
    // day (inside).
    for (end_of_day, expected) in [(false, 0), (true, 1)] {
        let c = SimConfig {
            reality: Reality {
                date_only_to_end_of_day: end_of_day,
                ..Reality::default()
            },
            ..cfg()
        };
        let sim = KareoSim::start(c.clone()).await;
        let tz = c.timezone;
        let day = sim.now().with_timezone(&tz).date_naive() + chrono::Duration::days(3);
        let afternoon = day
            .and_hms_opt(15, 0, 0)
            .unwrap()
            .and_local_timezone(tz)
            .unwrap();
        sim.set_now(afternoon.with_timezone(&chrono::Utc));
        sim.update(Family::Patients, "3", &[("FirstName", "Late")]);
        let filter = format!(
            "<sch:FromLastModifiedDate>{}T00:00:00</sch:FromLastModifiedDate><sch:ToLastModifiedDate>{}</sch:ToLastModifiedDate>",
            day.format("%Y-%m-%d"),
            day.format("%Y-%m-%d")
        );
        let (_, body) = call(&sim, "GetPatients", &patients_req(&c, &filter)).await;
        assert_eq!(
            count(&body, "<PatientData>"),
            expected,
            "end of day: {end_of_day}"
        );
    }

    // GetCharges' implicit posting window: a charge posted 90 days ago and changed now is
    // answered only with a posting-date pair that covers it.
    let c = SimConfig {
        reality: Reality {
            charges_posting_window: Some(chrono::Duration::days(7)),
            ..Reality::default()
        },
        ..cfg()
    };
    let sim = KareoSim::start(c.clone()).await;
    let tz = c.timezone;
    let id = sim.rows(Family::Charges)[0]["ID"].clone();
    let posted = (sim.now() - chrono::Duration::days(90)).with_timezone(&tz);
    sim.update(
        Family::Charges,
        &id,
        &[(
            "PostingDate",
            &posted.format("%-m/%-d/%Y 9:00:00 AM").to_string(),
        )],
    );
    // ChargeFilter's members in schema order, the posting pair where given.
    let charges = |posting: Option<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )>| {
        let (from_p, to_p) = match posting {
            Some((a, b)) => (
                format!(
                    "<sch:FromPostingDate>{}</sch:FromPostingDate>",
                    wall_filter(a, tz)
                ),
                format!(
                    "<sch:ToPostingDate>{}</sch:ToPostingDate>",
                    wall_filter(b, tz)
                ),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "{}<sch:Fields/><sch:Filter><sch:FromLastModifiedDate>{}</sch:FromLastModifiedDate>{from_p}<sch:IncludeUnapprovedCharges>T</sch:IncludeUnapprovedCharges><sch:PracticeName>{}</sch:PracticeName><sch:ToLastModifiedDate>{}</sch:ToLastModifiedDate>{to_p}</sch:Filter>",
            header(&c),
            wall_filter(sim.now() - chrono::Duration::minutes(1), tz),
            esc(&c.practice_name),
            wall_filter(sim.now() + chrono::Duration::minutes(1), tz)
        )
    };
    let (_, body) = call(&sim, "GetCharges", &charges(None)).await;
    assert_eq!(
        count(&body, "<ChargeData>"),
        0,
        "posted before the implicit window"
    );
    let pair = Some((
        sim.now() - chrono::Duration::days(100),
        sim.now() - chrono::Duration::days(50),
    ));
    let (_, body) = call(&sim, "GetCharges", &charges(pair)).await;
    assert_eq!(count(&body, "<ChargeData>"), 1, "{body}");
}

/// The first child of the response's `s:Body`, as written (its namespace declarations are on
/// it): what xmllint validates.
fn body_child(envelope: &str) -> &str {
    let start = envelope
        .find("<s:Body>")
        .map_or(0, |i| i + "<s:Body>".len());
    let end = envelope.rfind("</s:Body>").unwrap_or(envelope.len());
    &envelope[start..end]
}

/// The simulator writes its responses by the product's schema table; Kareo's own XSD, read by
/// xmllint, is the independent judge: every response to every operation the product uses —
/// full list pages, single reads, write answers, error answers — must validate against it.
/// `KAREO_XSD` names the schema (as for the request suite in `shared/kareo/tests/xsd.rs`).
#[tokio::test]
async fn every_response_validates_against_kareos_xsd() {
    let Some(xsd) = testkit::kareo_xsd("RESPONSE XSD VALIDATION") else {
        return;
    };
    let c = cfg();
    let sim = KareoSim::start(c.clone()).await;
    let tz = c.timezone;
    let creds = kareo::Credentials {
        customer_key: c.customer_key.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
    };
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kareo/fixtures/requests");
    // The fixtures' practice is not the simulator's, and their windows hold nothing: aim them
    // at the simulator's data so that list answers carry full records.
    fn aim(v: &mut serde_json::Value, practice: &str, from: &str, to: &str) {
        if let serde_json::Value::Object(m) = v {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "PracticeName" => *x = serde_json::json!(practice),
                    "PracticeID" if x.is_string() => *x = serde_json::json!("1"),
                    "PracticeID" => *x = serde_json::json!(1),
                    "EncounterID" | "PatientID" | "AppointmentId" if x.is_string() => {
                        *x = serde_json::json!("1")
                    }
                    "EncounterID" | "PatientID" | "AppointmentId" => *x = serde_json::json!(1),
                    "FromLastModifiedDate" => *x = serde_json::json!(from),
                    "ToLastModifiedDate" => *x = serde_json::json!(to),
                    _ => aim(x, practice, from, to),
                }
            }
            m.retain(|k, _| {
                !(k.starts_with("From") || k.starts_with("To")) || k.ends_with("LastModifiedDate")
            });
        }
    }
    let from = wall_filter(sim.now() - chrono::Duration::days(45), tz);
    let to = wall_filter(sim.now(), tz);
    let dir = std::env::temp_dir().join(format!("kareo-sim-xsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let http = https::client();
    let mut files = Vec::new();
    for op in kareo::schema::OPS {
        let path = fixtures.join(format!("{}.json", op.name));
        let mut body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        aim(&mut body, &c.practice_name, &from, &to);
        let env = kareo::envelope::write(op, &creds, "tests", &body)
            .unwrap_or_else(|e| panic!("{}: {e}", op.name));
        let text = http
            .post(sim.url())
            .header("Content-Type", "text/xml; charset=utf-8")
            .header(
                "SOAPAction",
                format!(
                    "\"http://www.kareo.com/api/schemas/KareoServices/{}\"",
                    op.name
                ),
            )
            .body(env)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some((_, item, _)) = op.list_member() {
            if op.name != "GetThrottles" {
                assert!(
                    text.contains(&format!("<{}>", item.name))
                        || text.contains(&format!("<a:{}>", item.name)),
                    "{}: a full list answer to validate: {text}",
                    op.name
                );
            }
        }
        let f = dir.join(format!("{}.xml", op.name));
        std::fs::write(&f, body_child(&text)).unwrap();
        files.push(f);
    }
    // The judge must be able to fail: an unknown member inside a record.
    let bad = std::fs::read_to_string(dir.join("GetPatients.xml"))
        .unwrap()
        .replacen("<ID>", "<Bogus>x</Bogus><ID>", 1);
    let negative = dir.join("negative.xml");
    std::fs::write(&negative, bad).unwrap();
    let (_, stderr) = testkit::xmllint(
        &xsd,
        &[files.as_slice(), std::slice::from_ref(&negative)].concat(),
    );
    for f in &files {
        assert!(
            stderr.contains(&format!("{} validates", f.display())),
            "{} does not validate:\n{stderr}",
            f.display()
        );
    }
    assert!(
        stderr.contains(&format!("{} fails to validate", negative.display())),
        "{stderr}"
    );
    assert_eq!(files.len(), kareo::schema::OPS.len());
    std::fs::remove_dir_all(&dir).ok();
}
