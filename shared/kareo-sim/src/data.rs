//! The seeded data set.

use std::collections::{BTreeMap, HashMap};

use crate::clock::{at_local as localize, stamp as format_response};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::{Family, Row, SimConfig, Store};

/// SplitMix64: small, fast, and stable across crate versions (the data set must not change
/// when a dependency does).
#[derive(Clone)]
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        Gen(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

const FIRST: &[&str] = &[
    "Zoë",
    "José",
    "Anaïs",
    "Björn",
    "Chloé",
    "Søren",
    "Renée",
    "Mary-Kate",
    "James",
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Mateo",
    "Sofía",
    "Đức",
    "Nguyệt",
    "Łukasz",
    "François",
    "Aoife",
    "Siobhán",
    "Zoltán",
    "Ingrid",
    "Kwame",
    "Amara",
    "Hiroshi",
    "Yuki",
    "Priya",
    "Ravi",
];
const MIDDLE: &[&str] = &["A", "B", "Lee", "Marie", "J", "", "", "Ann", "Ray", "É"];
const LAST: &[&str] = &[
    "O'Brien & Søn",
    "Nguyễn",
    "Müller",
    "García-López",
    "Smith",
    "Johnson",
    "Brown & Brown",
    "Đặng",
    "Kowalski",
    "Østergaard",
    "D'Angelo",
    "Williams",
    "Van der Berg",
    "Zhang",
    "Okafor",
    "Lefèvre",
    "Jones <Jr>",
    "Taylor",
    "MacDonald",
    "Ångström",
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Pine Rd",
    "Birch Way",
    "Rue Côté",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Boston", "MA", "02118"),
    ("Albany", "NY", "12207"),
    ("Hartford", "CT", "06103"),
    ("Providence", "RI", "02903"),
    ("Burlington", "VT", "05401"),
    ("Portland", "ME", "04101"),
];
const INSURERS: &[(&str, &str)] = &[
    ("Blue Cross & Blue Shield", "PPO Gold"),
    ("Aetna", "HMO Select"),
    ("UnitedHealthcare", "Choice Plus"),
    ("Medicare", "Part B"),
    ("Cigna", "Open Access"),
];
pub(crate) const PROCEDURES: &[(&str, &str, &str)] = &[
    (
        "99213",
        "Office/outpatient visit, established, low",
        "125.00",
    ),
    (
        "99214",
        "Office/outpatient visit, established, moderate",
        "185.00",
    ),
    ("99203", "Office/outpatient visit, new, low", "160.00"),
    ("99204", "Office/outpatient visit, new, moderate", "240.00"),
    ("36415", "Routine venipuncture", "15.00"),
    ("80053", "Comprehensive metabolic panel", "45.00"),
    ("85025", "Complete CBC w/auto diff WBC", "30.00"),
    (
        "90686",
        "Flu vaccine, quadrivalent, preservative free",
        "38.00",
    ),
    ("93000", "Electrocardiogram, complete", "65.00"),
    ("99395", "Preventive visit, est, 18-39 years", "210.00"),
    ("G0439", "Annual wellness visit, subsequent", "175.00"),
    (
        "J1100",
        "Dexamethasone sodium phosphate <1 mg> injection",
        "12.50",
    ),
];
const REASONS: &[&str] = &[
    "Follow-up",
    "Annual physical",
    "Sick visit",
    "Lab review & consult",
    "Vaccination",
    "New patient",
];
/// ConfirmationStatus values per the guide.
pub(crate) const CONFIRMATION: &[&str] = &[
    "Scheduled",
    "Confirmed",
    "Check-in",
    "Check-out",
    "No-show",
    "Rescheduled",
    "Cancelled",
];
const PAYMENT_METHODS: &[&str] = &[
    "Cash",
    "ElectronicFundsTransfer",
    "Check",
    "Other",
    "CreditCard",
    "Unknown",
];

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A stamp in the 30 days before `now` (whole seconds).
fn stamp(g: &mut Gen, now: DateTime<Utc>) -> DateTime<Utc> {
    let back = g.below(30 * 24 * 3600) as i64 + 1;
    let t = now - Duration::seconds(back);
    t - Duration::nanoseconds(t.timestamp_subsec_nanos() as i64)
}

/// `(CreatedDate, LastModifiedDate)` with created ≤ modified, both before `now`.
fn stamps(g: &mut Gen, now: DateTime<Utc>, tz: Tz) -> (String, String) {
    let a = stamp(g, now);
    let b = stamp(g, now);
    let (c, m) = if a <= b { (a, b) } else { (b, a) };
    (format_response(c, tz), format_response(m, tz))
}

fn local_midnight(d: NaiveDate, tz: Tz) -> DateTime<Utc> {
    localize(d.and_time(NaiveTime::MIN), tz)
}

fn put(r: &mut Row, k: &str, v: impl Into<String>) {
    r.insert(k.to_string(), v.into());
}

/// A deterministic, realistic patient row with about 60 populated members (ID `i + 1`), the
/// same one for the same `i` everywhere; names include non-ASCII letters and XML-special
/// characters. Its dates are in `tz`, spread over the 30 days before [`crate::default_now`].
pub fn synthetic_patient(i: u64, tz: Tz) -> Row {
    patient_row(
        i,
        0,
        tz,
        crate::default_now(),
        1,
        "Sim Family Practice & Associates",
    )
}

// Long: one line per PatientData member the simulator fills.
pub(crate) fn patient_row(
    i: u64,
    seed: u64,
    tz: Tz,
    now: DateTime<Utc>,
    practice_id: i64,
    practice_name: &str,
) -> Row {
    let mut g =
        Gen::new(seed.wrapping_mul(0x1000_0000_01b3) ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut r = Row::new();
    let id = i + 1;
    let first = *g.pick(FIRST);
    let middle = *g.pick(MIDDLE);
    let last = *g.pick(LAST);
    let gender = if g.chance(50) { "Female" } else { "Male" };
    let (city, state, zip) = *g.pick(CITIES);
    let dob = NaiveDate::from_ymd_opt(
        1940 + g.below(80) as i32,
        1 + g.below(12) as u32,
        1 + g.below(28) as u32,
    )
    .expect("valid date");
    let (created, modified) = stamps(&mut g, now, tz);
    let (ins, plan) = *g.pick(INSURERS);
    let full = if middle.is_empty() {
        format!("{first} {last}")
    } else {
        format!("{first} {middle} {last}")
    };
    let age = (now.with_timezone(&tz).year() - dob.year()).max(0);
    put(&mut r, "ID", id.to_string());
    put(&mut r, "PracticeId", practice_id.to_string());
    put(&mut r, "PracticeName", practice_name);
    put(&mut r, "CreatedDate", created);
    put(&mut r, "LastModifiedDate", modified);
    put(&mut r, "FirstName", first);
    if !middle.is_empty() {
        put(&mut r, "MiddleName", middle);
    }
    put(&mut r, "LastName", last);
    put(&mut r, "PatientFullName", full);
    put(&mut r, "Gender", gender);
    put(&mut r, "DOB", format_response(local_midnight(dob, tz), tz));
    put(&mut r, "Age", age.to_string());
    put(
        &mut r,
        "SSN",
        format!("9{}-{}-{}", g.digits(2), g.digits(2), g.digits(4)),
    );
    put(&mut r, "MedicalRecordNumber", format!("MRN{:07}", id));
    put(&mut r, "MaritalStatus", *g.pick(&["S", "M", "D", "W"]));
    put(
        &mut r,
        "AddressLine1",
        format!("{} {}", 1 + g.below(9999), g.pick(STREETS)),
    );
    if g.chance(30) {
        put(&mut r, "AddressLine2", format!("Apt #{}", 1 + g.below(40)));
    }
    put(&mut r, "City", city);
    put(&mut r, "State", state);
    put(&mut r, "ZipCode", zip);
    put(&mut r, "Country", "USA");
    put(&mut r, "HomePhone", format!("617555{}", g.digits(4)));
    put(&mut r, "MobilePhone", format!("857555{}", g.digits(4)));
    put(&mut r, "WorkPhone", format!("781555{}", g.digits(4)));
    put(&mut r, "EmailAddress", format!("patient{id}@example.org"));
    put(&mut r, "EmergencyName", format!("{} {last}", g.pick(FIRST)));
    put(&mut r, "EmergencyPhone", format!("508555{}", g.digits(4)));
    put(
        &mut r,
        "EmployerName",
        *g.pick(&["Acme & Sons", "Globex", "Initech", "Umbrella Corp"]),
    );
    put(&mut r, "EmploymentStatus", *g.pick(&["E", "R", "S", "U"]));
    put(&mut r, "CollectionCategoryName", "Normal");
    put(
        &mut r,
        "ReferralSource",
        *g.pick(&["Website", "Friend & Family", "Physician referral"]),
    );
    put(&mut r, "DefaultCaseID", (id * 10).to_string());
    put(&mut r, "DefaultCaseName", "Default Case");
    put(&mut r, "DefaultCasePayerScenario", "Commercial");
    put(&mut r, "DefaultCaseDescription", "Primary <default> case");
    put(&mut r, "DefaultCaseSendPatientStatements", "True");
    put(&mut r, "DefaultCaseConditionRelatedToAbuse", "False");
    put(&mut r, "DefaultCaseConditionRelatedToAutoAccident", "False");
    put(&mut r, "DefaultCaseConditionRelatedToEmployment", "False");
    put(&mut r, "DefaultCaseConditionRelatedToPregnancy", "False");
    put(
        &mut r,
        "DefaultRenderingProviderId",
        (1 + g.below(4)).to_string(),
    );
    put(
        &mut r,
        "DefaultRenderingProviderFullName",
        "Dr. Ana Müller, MD",
    );
    put(&mut r, "DefaultServiceLocationId", "1");
    put(&mut r, "DefaultServiceLocationName", "Main Office");
    put(&mut r, "PrimaryCarePhysicianFullName", "Dr. Ana Müller, MD");
    put(
        &mut r,
        "PrimaryInsurancePolicyCompanyID",
        (1 + g.below(50)).to_string(),
    );
    put(&mut r, "PrimaryInsurancePolicyCompanyName", ins);
    put(&mut r, "PrimaryInsurancePolicyPlanName", plan);
    put(
        &mut r,
        "PrimaryInsurancePolicyPlanID",
        (100 + g.below(50)).to_string(),
    );
    put(
        &mut r,
        "PrimaryInsurancePolicyNumber",
        format!("XZ{}", g.digits(9)),
    );
    put(
        &mut r,
        "PrimaryInsurancePolicyGroupNumber",
        format!("G{}", g.digits(6)),
    );
    put(
        &mut r,
        "PrimaryInsurancePolicyCopay",
        money(g.below(5) * 1000),
    );
    put(
        &mut r,
        "PrimaryInsurancePolicyDeductible",
        money(g.below(30) * 10000),
    );
    put(
        &mut r,
        "PrimaryInsurancePolicyPatientRelationshipToInsured",
        "Self",
    );
    let insured = r["PatientFullName"].clone();
    put(&mut r, "PrimaryInsurancePolicyInsuredFullName", insured);
    put(
        &mut r,
        "PrimaryInsurancePolicyEffectiveStartDate",
        format_response(
            local_midnight(NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"), tz),
            tz,
        ),
    );
    put(&mut r, "PatientBalance", money(g.below(40000)));
    put(&mut r, "InsuranceBalance", money(g.below(90000)));
    put(&mut r, "TotalBalance", money(g.below(130000)));
    put(&mut r, "Charges", money(g.below(500000)));
    put(&mut r, "Adjustments", money(g.below(50000)));
    put(&mut r, "PatientPayments", money(g.below(80000)));
    put(&mut r, "InsurancePayments", money(g.below(300000)));
    put(
        &mut r,
        "LastDiagnosis",
        *g.pick(&["J06.9", "E11.9", "I10", "Z00.00", "M54.5"]),
    );
    put(&mut r, "StatementNote", "Thank you & have a nice day");
    if g.chance(25) {
        put(
            &mut r,
            "AlertMessage",
            "Allergic to penicillin; prefers <morning> visits",
        );
        put(&mut r, "AlertShowWhenSchedulingAppointments", "True");
    }
    r
}

/// Maps GetAppointment's AppointmentStatus to the list's ConfirmationStatus.
pub(crate) fn status_to_confirmation(s: &str) -> String {
    match s {
        "CheckedIn" => "Check-in".into(),
        "CheckedOut" => "Check-out".into(),
        "NoShow" => "No-show".into(),
        other => other.into(),
    }
}

/// Maps the list's ConfirmationStatus to GetAppointment's AppointmentStatus.
pub(crate) fn confirmation_to_status(s: &str) -> &'static str {
    match s {
        "Check-in" => "CheckedIn",
        "Check-out" => "CheckedOut",
        "No-show" => "NoShow",
        "Confirmed" => "Confirmed",
        "Rescheduled" => "Rescheduled",
        "Cancelled" => "Cancelled",
        "Scheduled" => "Scheduled",
        "ReminderSent" => "ReminderSent",
        "Roomed" => "Roomed",
        "NeedsReschedule" => "NeedsReschedule",
        "ReadyToBeSeen" => "ReadyToBeSeen",
        "Tentative" => "Tentative",
        _ => "Unknown",
    }
}

/// GetEncounterDetails' numeric EncounterStatus.
pub(crate) fn encounter_status_code(name: &str) -> &'static str {
    match name {
        "Draft" => "1",
        "Submitted" => "2",
        "Approved" => "3",
        "Rejected" => "4",
        "Unpayable" => "5",
        _ => "1",
    }
}

// Long: the seeded practice, one block per family, read top to bottom.
pub(crate) fn generate(cfg: &SimConfig) -> Store {
    let tz = cfg.timezone;
    let now = cfg.start;
    let mut g = Gen::new(cfg.seed);
    let mut rows: BTreeMap<Family, BTreeMap<i64, Row>> = BTreeMap::new();
    let pid = cfg.practice_id.to_string();
    let pname = cfg.practice_name.clone();
    let add = |rows: &mut BTreeMap<Family, BTreeMap<i64, Row>>, f: Family, r: Row| {
        let id: i64 = r[f.id_member()].parse().expect("numeric id");
        rows.entry(f).or_default().insert(id, r);
    };

    // Practice.
    let mut r = Row::new();
    let (c, m) = stamps(&mut g, now, tz);
    put(&mut r, "ID", pid.clone());
    put(&mut r, "PracticeName", pname.clone());
    put(&mut r, "Active", "True");
    put(&mut r, "CreatedDate", c);
    put(&mut r, "LastModifiedDate", m);
    put(&mut r, "NPI", format!("1{}", g.digits(9)));
    put(&mut r, "TaxID", format!("{}-{}", g.digits(2), g.digits(7)));
    put(&mut r, "PracticeAddressLine1", "100 Main St & 2nd Ave");
    put(&mut r, "PracticeCity", "Boston");
    put(&mut r, "PracticeState", "MA");
    put(&mut r, "PracticeZipCode", "02118");
    put(&mut r, "PracticeCountry", "USA");
    put(&mut r, "Phone", "6175550100");
    put(&mut r, "Fax", "6175550101");
    put(&mut r, "Email", "front.desk@sim.example");
    put(&mut r, "WebSite", "https://sim.example/?a=1&b=2");
    put(&mut r, "SubscriptionEdition", "Max");
    put(&mut r, "AdministratorFullName", "Renée Côté");
    put(&mut r, "BillingContactFullName", "Søren Østergaard");
    put(&mut r, "Notes", "Practice <notes> & things");
    add(&mut rows, Family::Practices, r);

    // Providers.
    let degrees = ["MD", "DO", "NP", "PA-C"];
    let specialties = [
        "Family Medicine",
        "Internal Medicine",
        "Pediatrics",
        "Cardiology",
    ];
    let mut providers = Vec::new();
    for i in 0..cfg.providers {
        let mut r = Row::new();
        let (c, m) = stamps(&mut g, now, tz);
        let first = *g.pick(FIRST);
        let last = *g.pick(LAST);
        let degree = degrees[i % degrees.len()];
        let full = format!("{first} {last} {degree}");
        put(&mut r, "ID", (i + 1).to_string());
        put(&mut r, "FirstName", first);
        put(&mut r, "LastName", last);
        put(&mut r, "FullName", full.clone());
        put(&mut r, "Prefix", "Dr.");
        put(&mut r, "Degree", degree);
        put(&mut r, "Active", "True");
        put(
            &mut r,
            "Type",
            if i == cfg.providers.saturating_sub(1) && i > 0 {
                "Referring Provider"
            } else {
                "Normal Provider"
            },
        );
        put(
            &mut r,
            "NationalProviderIdentifier",
            format!("1{}", g.digits(9)),
        );
        put(&mut r, "SpecialtyName", specialties[i % specialties.len()]);
        put(&mut r, "DepartmentName", "Clinic & Primary Care");
        put(
            &mut r,
            "EmailAddress",
            format!("provider{}@sim.example", i + 1),
        );
        put(&mut r, "WorkPhone", format!("617555{}", g.digits(4)));
        put(&mut r, "PracticeID", pid.clone());
        put(&mut r, "PracticeName", pname.clone());
        put(&mut r, "CreatedDate", c);
        put(&mut r, "LastModifiedDate", m);
        providers.push(((i + 1) as i64, full));
        add(&mut rows, Family::Providers, r);
    }

    // Service locations (k7).
    let mut locations = Vec::new();
    for i in 0..cfg.service_locations {
        let mut r = Row::new();
        let (c, m) = stamps(&mut g, now, tz);
        let (city, state, zip) = CITIES[i % CITIES.len()];
        let name = if i == 0 {
            "Main Office".to_string()
        } else {
            format!("{city} Clinic & Lab")
        };
        put(&mut r, "ID", (i + 1).to_string());
        put(&mut r, "Name", name.clone());
        put(&mut r, "BillingName", format!("{pname} - {name}"));
        put(
            &mut r,
            "AddressLine1",
            format!("{} {}", 1 + g.below(999), g.pick(STREETS)),
        );
        put(&mut r, "City", city);
        put(&mut r, "State", state);
        put(&mut r, "ZipCode", zip);
        put(&mut r, "Country", "USA");
        put(&mut r, "Phone", format!("617555{}", g.digits(4)));
        put(&mut r, "NPI", format!("1{}", g.digits(9)));
        put(&mut r, "PlaceOfService", "11");
        put(&mut r, "PracticeID", pid.clone());
        put(&mut r, "PracticeName", pname.clone());
        put(&mut r, "CreatedDate", c);
        put(&mut r, "ModifiedDate", m);
        locations.push(((i + 1) as i64, name));
        add(&mut rows, Family::ServiceLocations, r);
    }

    // Procedure codes (k7).
    for (i, (code, name, _)) in PROCEDURES.iter().take(cfg.procedure_codes).enumerate() {
        let mut r = Row::new();
        let (c, m) = stamps(&mut g, now, tz);
        put(&mut r, "ID", (i + 1).to_string());
        put(&mut r, "ProcedureCode", *code);
        put(&mut r, "OfficialName", *name);
        put(&mut r, "OfficialDescription", *name);
        put(&mut r, "LocalName", *name);
        put(&mut r, "BillableCode", *code);
        put(&mut r, "DefaultUnits", "1");
        put(&mut r, "TypeOfServiceCode", "1");
        put(&mut r, "Active", "True");
        put(&mut r, "CustomerSpecific", "False");
        put(&mut r, "PracticeName", pname.clone());
        put(&mut r, "CreatedDate", c);
        put(&mut r, "ModifiedDate", m);
        add(&mut rows, Family::ProcedureCodes, r);
    }

    // Patients.
    let mut patients = Vec::new();
    for i in 0..cfg.patients as u64 {
        let r = patient_row(i, cfg.seed, tz, now, cfg.practice_id, &pname);
        patients.push(r.clone());
        add(&mut rows, Family::Patients, r);
    }

    // Appointments.
    let today = now.with_timezone(&tz).date_naive();
    for i in 0..cfg.appointments {
        if patients.is_empty() {
            break;
        }
        let mut r = Row::new();
        let (c, m) = stamps(&mut g, now, tz);
        let p = &patients[g.below(patients.len() as u64) as usize];
        let day = today + Duration::days(g.below(28) as i64 - 7);
        let start_local = day
            .and_hms_opt(8 + g.below(9) as u32, 15 * g.below(4) as u32, 0)
            .expect("time");
        let minutes = 15 * (1 + g.below(4) as i64);
        let start = localize(start_local, tz);
        let end = start + Duration::minutes(minutes);
        let (prov_id, prov_name) = providers.first().cloned().unwrap_or((1, String::new()));
        let (prov_id, prov_name) = if providers.is_empty() {
            (prov_id, prov_name)
        } else {
            providers[g.below(providers.len() as u64) as usize].clone()
        };
        let (loc_id, loc_name) = if locations.is_empty() {
            (1, "Main Office".to_string())
        } else {
            locations[g.below(locations.len() as u64) as usize].clone()
        };
        let reason = g.below(REASONS.len() as u64) as usize;
        put(&mut r, "ID", (i + 1).to_string());
        put(&mut r, "CreatedDate", c);
        put(&mut r, "LastModifiedDate", m);
        put(&mut r, "PracticeID", pid.clone());
        put(&mut r, "PracticeName", pname.clone());
        put(&mut r, "PatientID", p["ID"].clone());
        put(&mut r, "PatientFullName", p["PatientFullName"].clone());
        put(&mut r, "PatientCaseID", p["DefaultCaseID"].clone());
        put(&mut r, "PatientCaseName", "Default Case");
        put(&mut r, "PatientCasePayerScenario", "Commercial");
        put(&mut r, "StartDate", format_response(start, tz));
        put(&mut r, "EndDate", format_response(end, tz));
        put(&mut r, "AppointmentDuration", minutes.to_string());
        put(&mut r, "AllDay", "False");
        put(&mut r, "Recurring", "False");
        put(&mut r, "ConfirmationStatus", *g.pick(CONFIRMATION));
        put(&mut r, "Type", "P");
        put(&mut r, "ServiceLocationID", loc_id.to_string());
        put(&mut r, "ServiceLocationName", loc_name);
        put(&mut r, "ResourceID1", prov_id.to_string());
        put(&mut r, "ResourceName1", prov_name);
        put(&mut r, "ResourceTypeID1", "1");
        put(&mut r, "AppointmentReasonID1", (reason + 1).to_string());
        put(&mut r, "AppointmentReason1", REASONS[reason]);
        if g.chance(40) {
            put(
                &mut r,
                "Notes",
                "Bring insurance card & photo ID; BP < 140 check",
            );
        }
        add(&mut rows, Family::Appointments, r);
    }

    // Encounters, their charges and transactions.
    let mut charge_id = 0i64;
    let mut txn_id = 0i64;
    let mut line_id = 1000i64;
    for i in 0..cfg.encounters {
        if patients.is_empty() {
            break;
        }
        let p = &patients[g.below(patients.len() as u64) as usize];
        let (c, m) = stamps(&mut g, now, tz);
        let enc_id = (i + 1) as i64;
        let status = if g.chance(75) {
            "Approved"
        } else {
            *g.pick(&["Draft", "Submitted", "Rejected"])
        };
        let day = today - Duration::days(1 + g.below(25) as i64);
        let svc = local_midnight(day, tz) + Duration::hours(9);
        let (prov_id, prov_name) = providers.first().cloned().unwrap_or((1, "Provider".into()));
        let (loc_id, loc_name) = locations
            .first()
            .cloned()
            .unwrap_or((1, "Main Office".into()));
        let batch = format!("B{}", day.format("%Y%m%d"));
        let mut lines = Vec::new();
        for _ in 0..1 + g.below(3) {
            line_id += 1;
            charge_id += 1;
            let (code, name, price) =
                *g.pick(&PROCEDURES[..cfg.procedure_codes.clamp(1, PROCEDURES.len())]);
            let mut ch = Row::new();
            put(&mut ch, "ID", charge_id.to_string());
            put(&mut ch, "CreatedDate", c.clone());
            put(&mut ch, "LastModifiedDate", m.clone());
            put(&mut ch, "EncounterID", enc_id.to_string());
            put(&mut ch, "EncounterProcedureID", line_id.to_string());
            put(&mut ch, "EncounterStatus", status);
            put(&mut ch, "PatientID", p["ID"].clone());
            put(&mut ch, "PatientFirstName", p["FirstName"].clone());
            put(&mut ch, "PatientLastName", p["LastName"].clone());
            put(&mut ch, "PatientName", p["PatientFullName"].clone());
            put(&mut ch, "PracticeID", pid.clone());
            put(&mut ch, "PracticeName", pname.clone());
            put(&mut ch, "ProcedureCode", code);
            put(&mut ch, "ProcedureName", name);
            put(&mut ch, "Units", "1");
            put(&mut ch, "UnitCharge", price);
            put(&mut ch, "TotalCharges", price);
            put(&mut ch, "ServiceStartDate", format_response(svc, tz));
            put(&mut ch, "ServiceEndDate", format_response(svc, tz));
            put(
                &mut ch,
                "PostingDate",
                format_response(svc + Duration::days(1), tz),
            );
            put(&mut ch, "BatchNumber", batch.clone());
            put(
                &mut ch,
                "Status",
                if status == "Approved" {
                    "Pending Insurance"
                } else {
                    "Draft"
                },
            );
            put(&mut ch, "RenderingProviderID", prov_id.to_string());
            put(&mut ch, "RenderingProviderName", prov_name.clone());
            put(&mut ch, "ServiceLocationId", loc_id.to_string());
            put(&mut ch, "ServiceLocationName", loc_name.clone());
            put(&mut ch, "CaseName", "Default Case");
            put(&mut ch, "BilledTo", "Primary Insurance");
            put(
                &mut ch,
                "PrimaryInsuranceCompanyName",
                p.get("PrimaryInsurancePolicyCompanyName")
                    .cloned()
                    .unwrap_or_default(),
            );
            add(&mut rows, Family::Charges, ch);

            txn_id += 1;
            let mut t = Row::new();
            put(&mut t, "ID", txn_id.to_string());
            put(&mut t, "LastModifiedDate", m.clone());
            put(&mut t, "PracticeName", pname.clone());
            put(&mut t, "PatientID", p["ID"].clone());
            put(&mut t, "PatientFullName", p["PatientFullName"].clone());
            put(&mut t, "TransactionDate", format_response(svc, tz));
            put(
                &mut t,
                "PostingDate",
                format_response(svc + Duration::days(1), tz),
            );
            put(&mut t, "ServiceDate", format_response(svc, tz));
            put(&mut t, "Type", "Charge");
            put(&mut t, "PayerType", "Insurance");
            put(&mut t, "Amount", price);
            put(&mut t, "ProcedureCode", code);
            put(&mut t, "Description", name);
            put(&mut t, "ClaimID", charge_id.to_string());
            put(
                &mut t,
                "InsuranceCompanyName",
                p.get("PrimaryInsurancePolicyCompanyName")
                    .cloned()
                    .unwrap_or_default(),
            );
            put(&mut t, "InsuranceOrder", "1");
            add(&mut rows, Family::Transactions, t);
            lines.push(line_id.to_string());
        }
        let mut e = Row::new();
        put(&mut e, "EncounterID", enc_id.to_string());
        put(&mut e, "CreatedDate", c);
        put(&mut e, "LastModifiedDate", m);
        put(&mut e, "PracticeID", pid.clone());
        put(&mut e, "PracticeName", pname.clone());
        put(&mut e, "PatientID", p["ID"].clone());
        put(&mut e, "PatientFirstName", p["FirstName"].clone());
        put(&mut e, "PatientLastName", p["LastName"].clone());
        put(&mut e, "CaseID", p["DefaultCaseID"].clone());
        put(&mut e, "CaseName", "Default Case");
        put(&mut e, "CasePayerScenario", "Commercial");
        put(&mut e, "EncounterStatus", encounter_status_code(status));
        put(
            &mut e,
            "PostDate",
            format_response(svc + Duration::days(1), tz),
        );
        put(&mut e, "ServiceStartDate", format_response(svc, tz));
        put(&mut e, "ServiceEndDate", format_response(svc, tz));
        put(&mut e, "ServiceLocationID", loc_id.to_string());
        put(&mut e, "ServiceLocationName", loc_name);
        put(&mut e, "PlaceOfServiceCode", "11");
        put(&mut e, "PlaceOfServiceName", "Office");
        put(&mut e, "RenderingProvider", prov_name.clone());
        put(&mut e, "SchedulingProvider", prov_name);
        put(&mut e, "BatchNumber", batch);
        put(&mut e, "ServiceLines", lines.join(","));
        add(&mut rows, Family::Encounters, e);
    }

    // Payments.
    for i in 0..cfg.payments {
        let mut r = Row::new();
        let (c, m) = stamps(&mut g, now, tz);
        let insurance = g.chance(50);
        let amount = 1000 + g.below(30000);
        let applied = if g.chance(70) { amount } else { amount / 2 };
        let post = now - Duration::days(g.below(20) as i64);
        put(&mut r, "ID", (i + 1).to_string());
        put(&mut r, "CreatedDate", c);
        put(&mut r, "LastModifiedDate", m);
        put(&mut r, "PracticeId", pid.clone());
        put(
            &mut r,
            "PayerType",
            if insurance { "Insurance" } else { "Patient" },
        );
        let payer = if insurance || patients.is_empty() {
            g.pick(INSURERS).0.to_string()
        } else {
            patients[g.below(patients.len() as u64) as usize]["PatientFullName"].clone()
        };
        put(&mut r, "PayerName", payer);
        put(&mut r, "PaymentMethod", *g.pick(PAYMENT_METHODS));
        put(&mut r, "Amount", money(amount));
        put(&mut r, "Applied", money(applied));
        put(&mut r, "Unapplied", money(amount - applied));
        put(&mut r, "Adjustments", "0.00");
        put(&mut r, "Refunds", "0.00");
        put(&mut r, "PostDate", format_response(post, tz));
        if insurance {
            put(
                &mut r,
                "AdjudicationDate",
                format_response(post - Duration::days(2), tz),
            );
        }
        put(
            &mut r,
            "BatchNumber",
            format!("P{}", post.with_timezone(&tz).format("%Y%m%d")),
        );
        put(&mut r, "ReferenceNumber", format!("REF-{}", g.digits(8)));
        put(
            &mut r,
            "Category",
            if insurance {
                "Insurance Payment"
            } else {
                "Copay"
            },
        );
        if cfg.appointments > 0 && g.chance(40) {
            put(
                &mut r,
                "AppointmentID",
                (1 + g.below(cfg.appointments as u64)).to_string(),
            );
        }
        add(&mut rows, Family::Payments, r);
    }

    let mut next_id = HashMap::new();
    for f in Family::ALL {
        let max = rows
            .get(&f)
            .and_then(|m| m.keys().next_back().copied())
            .unwrap_or(0);
        next_id.insert(f, max + 1);
    }
    Store {
        overrides: BTreeMap::new(),
        rows,
        deleted_appointments: BTreeMap::new(),
        next_id,
        next_service_line: line_id + 1,
    }
}
