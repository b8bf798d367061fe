//! Write commands: `{"id", "tenant", "op", "data"}`, checked field by field before anything is
//! sent, and turned into Kareo's typed requests (member order and namespaces from the schema).
//!
//! Every problem of a command is reported together ([`Problem`]: the field's path and what is
//! wrong, never the value). Field names of `data` are this product's (snake_case), documented
//! per operation in `docs/write-back.md`.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use kareo::request::{
    AppointmentCreate, AppointmentDelete, AppointmentIdentifierReq, AppointmentMode,
    AppointmentStatus, AppointmentType, CreateAppointmentReq, CreateEncounterReq, CreatePatientReq,
    CreatePaymentRequest, DeleteAppointmentReq, EncounterCreate, EncounterServiceLocation,
    EncounterStatusCode, PatientCaseIdentifierReq, PatientCreate, PatientIdentifierReq,
    PatientSummary, PaymentAppointmentCreate, PaymentCreate, PaymentInsuranceCreate,
    PaymentPatientCreate, PaymentPaymentCreate, PaymentPracticeCreate, PracticeIdentifierReq,
    ProviderIdentifierDetailedReq, ServiceLineReq, XsDateTime,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::op::{valid_id, FieldKind, Op, LINE_KEYS, PATIENT_FIELDS};
use crate::tenant::TenantConfig;

/// One problem of a command: which field, and what is wrong (never the value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The field's path: `id`, `data.first_name`, `data.service_lines[0].units`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Patient values: key → value (`None` = clear, updates only). Values are normalised: dates
/// `YYYY-MM-DD`, gender as Kareo's enum name, text trimmed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PatientChanges(pub BTreeMap<&'static str, Option<String>>);

impl PatientChanges {
    /// The value of a field, when given.
    pub fn get(&self, key: &str) -> Option<&Option<String>> {
        self.0.get(key)
    }
}

/// A new appointment.
#[derive(Clone, PartialEq)]
pub struct NewAppointment {
    /// Kareo PatientID.
    pub patient_id: i64,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant (after start).
    pub end: DateTime<Utc>,
    /// ServiceLocationId.
    pub service_location_id: i64,
    /// ProviderId (also sent as the resource).
    pub provider_id: i64,
    /// U, P or O (default P).
    pub kind: AppointmentType,
    /// Status (default Scheduled).
    pub status: AppointmentStatus,
    /// AppointmentReasonId.
    pub reason_id: Option<i64>,
    /// PatientCaseId.
    pub case_id: Option<i64>,
    /// InOffice / Telehealth.
    pub mode: Option<AppointmentMode>,
    /// Notes.
    pub notes: Option<String>,
}

/// A service line of an encounter.
#[derive(Clone, PartialEq)]
pub struct ServiceLine {
    /// CPT/HCPCS code.
    pub procedure_code: String,
    /// ICD-10 codes (1–4).
    pub diagnosis_codes: Vec<String>,
    /// Units (> 0).
    pub units: f64,
    /// Charge per unit.
    pub unit_charge: Option<String>,
    /// Modifiers (0–4).
    pub modifiers: Vec<String>,
    /// Service date (default: the encounter's).
    pub service_date: Option<NaiveDate>,
}

/// A new encounter.
#[derive(Clone, PartialEq)]
pub struct NewEncounter {
    /// Kareo PatientID.
    pub patient_id: i64,
    /// Date of service.
    pub service_date: NaiveDate,
    /// Posting date (default: the date of service).
    pub post_date: Option<NaiveDate>,
    /// Rendering provider.
    pub rendering_provider_id: i64,
    /// Service location.
    pub service_location_id: i64,
    /// Patient case (default: Kareo's default case).
    pub case_id: Option<i64>,
    /// Appointment.
    pub appointment_id: Option<i64>,
    /// Status (default Draft).
    pub status: Option<EncounterStatusCode>,
    /// Batch number.
    pub batch_number: Option<String>,
    /// Service lines (≥ 1).
    pub service_lines: Vec<ServiceLine>,
}

/// A new payment.
#[derive(Clone, PartialEq)]
pub struct NewPayment {
    /// Insurance, Other or Patient.
    pub payer_type: &'static str,
    /// Amount, `123.45`.
    pub amount: String,
    /// Kareo PaymentMethodCode.
    pub payment_method: &'static str,
    /// The caller's reference (check number, transaction id): what reconciliation looks for.
    pub reference_number: String,
    /// Kareo PatientID (required for a patient payment).
    pub patient_id: Option<i64>,
    /// Insurance plan id.
    pub insurance_plan_id: Option<i64>,
    /// Insurance plan name.
    pub insurance_plan_name: Option<String>,
    /// Posting date.
    pub post_date: Option<NaiveDate>,
    /// Adjudication date.
    pub adjudication_date: Option<NaiveDate>,
    /// Batch number.
    pub batch_number: Option<String>,
    /// Appointment.
    pub appointment_id: Option<i64>,
}

/// The checked data of a command.
#[derive(Clone, PartialEq)]
pub enum Data {
    /// New patient: every given field (first_name, last_name, date_of_birth present).
    CreatePatient(PatientChanges),
    /// Update: the patient and the fields to change.
    UpdatePatient {
        /// Kareo PatientID.
        patient_id: i64,
        /// Fields to change (`None` = clear).
        changes: PatientChanges,
    },
    /// New appointment.
    CreateAppointment(NewAppointment),
    /// Delete an appointment.
    DeleteAppointment {
        /// Kareo AppointmentId.
        appointment_id: i64,
    },
    /// New encounter.
    CreateEncounter(NewEncounter),
    /// New payment.
    CreatePayment(NewPayment),
}

/// A checked command. `Debug` shows the id, tenant and operation only (the data is PHI).
#[derive(Clone, PartialEq)]
pub struct Command {
    /// The caller's id: exactly once per (tenant, id).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Operation.
    pub op: Op,
    /// Checked data.
    pub data: Data,
    /// SHA-256 of the operation and the data as sent: a repeated id with other data is refused.
    pub fingerprint: String,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// Reads and checks a command from JSON text.
    pub fn from_json(text: &str) -> Result<Command, Vec<Problem>> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            vec![Problem {
                field: "(command)".into(),
                problem: format!(
                    "not JSON: {}",
                    e.to_string().split(" at line").next().unwrap_or("")
                ),
            }]
        })?;
        Command::from_value(&v)
    }

    /// Checks a command. Every problem is reported.
    pub fn from_value(v: &Value) -> Result<Command, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(obj) = v.as_object() else {
            return Err(vec![Problem {
                field: "(command)".into(),
                problem: "expected a JSON object {\"id\", \"tenant\", \"op\", \"data\"}".into(),
            }]);
        };
        let mut top = Checker::new(obj, "", &mut problems);
        let id = top.string("id", true).filter(|s| {
            let ok = valid_id(s);
            if !ok {
                top.problem("id", "must be 1-128 letters, digits, '-', '_', '.' or ':'");
            }
            ok
        });
        let tenant = top.string("tenant", true);
        let op_name = top.string("op", true);
        let data = match obj.get("data") {
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                top.problem("data", "must be an object");
                None
            }
            None => {
                top.problem("data", "missing");
                None
            }
        };
        top.unknown(&["id", "tenant", "op", "data"]);
        let op = op_name.as_deref().and_then(|n| {
            let op = Op::from_name(n);
            if op.is_none() {
                problems.push(Problem {
                    field: "op".into(),
                    problem: format!("must be one of {}", Op::ALL.map(Op::name).join(", ")),
                });
            }
            op
        });
        let data_checked = match (op, data) {
            (Some(op), Some(d)) => check_data(op, d, &mut problems),
            _ => None,
        };
        match (id, tenant, op, data_checked) {
            (Some(id), Some(tenant), Some(op), Some(data)) if problems.is_empty() => {
                let fingerprint = fingerprint(op, obj.get("data").unwrap_or(&Value::Null));
                Ok(Command {
                    id,
                    tenant,
                    op,
                    data,
                    fingerprint,
                })
            }
            _ => Err(problems),
        }
    }

    /// The ledger key: `write#<tenant>#<id>`.
    pub fn ledger_key(&self) -> String {
        format!("write#{}#{}", self.tenant, self.id)
    }

    /// Problems of this command for this tenant (what the tenant config must provide).
    pub fn check_tenant(&self, tenant: &TenantConfig) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.op == Op::CreateAppointment && tenant.kareo.practice_id.is_none() {
            out.push(Problem {
                field: "tenant".into(),
                problem: "the tenant config needs kareo.practice_id for CreateAppointment".into(),
            });
        }
        out
    }

    /// The Kareo request body of a create or delete (Kareo's member names; the typed request
    /// structs check it). `UpdatePatient` is built from the current record: see
    /// [`update_body`].
    pub fn request_body(&self, tenant: &TenantConfig) -> Result<Value, Problem> {
        let practice_id = tenant.kareo.practice_id;
        let practice_name = tenant.kareo.practice.clone();
        let to_value = |r: Result<Value, serde_json::Error>| {
            r.map_err(|_| Problem {
                field: "data".into(),
                problem: "the request cannot be built".into(),
            })
        };
        match &self.data {
            Data::CreatePatient(changes) => {
                let mut p = patient_members(changes);
                p.insert(
                    "Practice".into(),
                    serde_json::to_value(PracticeIdentifierReq {
                        practice_id: practice_id.map(|i| i as i32),
                        practice_name: Some(practice_name),
                        ..Default::default()
                    })
                    .unwrap_or_default(),
                );
                let typed: PatientCreate =
                    serde_json::from_value(Value::Object(p)).map_err(|e| Problem {
                        field: "data".into(),
                        problem: format!("the request cannot be built ({e})"),
                    })?;
                to_value(serde_json::to_value(CreatePatientReq {
                    patient: Some(typed),
                }))
            }
            Data::UpdatePatient { .. } => Err(Problem {
                field: "op".into(),
                problem: "UpdatePatient is built from the current record".into(),
            }),
            Data::CreateAppointment(a) => {
                let req = CreateAppointmentReq {
                    appointment: Some(AppointmentCreate {
                        appointment_mode: a.mode,
                        appointment_reason_id: a.reason_id,
                        appointment_status: Some(a.status),
                        appointment_type: Some(a.kind),
                        end_time: Some(XsDateTime::utc(a.end)),
                        is_recurring: Some(false),
                        notes: a.notes.clone(),
                        patient_case_id: a.case_id,
                        patient_summary: Some(PatientSummary {
                            patient_id: Some(a.patient_id),
                            practice_id,
                            ..Default::default()
                        }),
                        practice_id,
                        provider_id: Some(a.provider_id),
                        resource_ids: Some(vec![a.provider_id]),
                        service_location_id: Some(a.service_location_id),
                        start_time: Some(XsDateTime::utc(a.start)),
                        was_created_online: Some(false),
                        ..Default::default()
                    }),
                };
                to_value(serde_json::to_value(req))
            }
            Data::DeleteAppointment { appointment_id } => {
                to_value(serde_json::to_value(DeleteAppointmentReq {
                    appointment: Some(AppointmentDelete {
                        appointment_id: Some(*appointment_id),
                    }),
                }))
            }
            Data::CreateEncounter(e) => {
                let lines = e
                    .service_lines
                    .iter()
                    .map(|l| {
                        let d = l.service_date.unwrap_or(e.service_date);
                        let dx = |i: usize| l.diagnosis_codes.get(i).cloned();
                        let md = |i: usize| l.modifiers.get(i).cloned();
                        ServiceLineReq {
                            diagnosis_code1: dx(0),
                            diagnosis_code2: dx(1),
                            diagnosis_code3: dx(2),
                            diagnosis_code4: dx(3),
                            procedure_code: Some(l.procedure_code.clone()),
                            procedure_modifier1: md(0),
                            procedure_modifier2: md(1),
                            procedure_modifier3: md(2),
                            procedure_modifier4: md(3),
                            service_end_date: Some(XsDateTime::date(d)),
                            service_start_date: Some(XsDateTime::date(d)),
                            unit_charge: l.unit_charge.as_deref().and_then(|c| c.parse().ok()),
                            units: Some(l.units),
                            ..Default::default()
                        }
                    })
                    .collect();
                let req = CreateEncounterReq {
                    encounter: Some(EncounterCreate {
                        appointment: e.appointment_id.map(|id| AppointmentIdentifierReq {
                            appointment_id: Some(id as i32),
                            ..Default::default()
                        }),
                        batch_number: e.batch_number.clone(),
                        case: e.case_id.map(|id| PatientCaseIdentifierReq {
                            case_id: Some(id as i32),
                            ..Default::default()
                        }),
                        encounter_status: e.status,
                        patient: Some(PatientIdentifierReq {
                            patient_id: Some(e.patient_id as i32),
                            ..Default::default()
                        }),
                        post_date: Some(XsDateTime::date(e.post_date.unwrap_or(e.service_date))),
                        practice: Some(PracticeIdentifierReq {
                            practice_id: practice_id.map(|i| i as i32),
                            practice_name: Some(practice_name),
                            ..Default::default()
                        }),
                        rendering_provider: Some(ProviderIdentifierDetailedReq {
                            provider_id: Some(e.rendering_provider_id as i32),
                            ..Default::default()
                        }),
                        service_end_date: Some(XsDateTime::date(e.service_date)),
                        service_lines: Some(lines),
                        service_location: Some(EncounterServiceLocation {
                            location_id: Some(e.service_location_id as i32),
                            ..Default::default()
                        }),
                        service_start_date: Some(XsDateTime::date(e.service_date)),
                        ..Default::default()
                    }),
                };
                to_value(serde_json::to_value(req))
            }
            Data::CreatePayment(p) => {
                let date = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
                let insurance = if p.insurance_plan_id.is_some() || p.insurance_plan_name.is_some()
                {
                    Some(PaymentInsuranceCreate {
                        company_plan_id: p.insurance_plan_id.map(|i| i.to_string()),
                        company_plan_name: p.insurance_plan_name.clone(),
                    })
                } else {
                    None
                };
                let req = CreatePaymentRequest {
                    payment: Some(PaymentCreate {
                        ajudication_date: date(p.adjudication_date),
                        appointment: p.appointment_id.map(|a| PaymentAppointmentCreate {
                            appointment_id: Some(a.to_string()),
                        }),
                        batch_number: p.batch_number.clone(),
                        insurance,
                        patient: p.patient_id.map(|id| PaymentPatientCreate {
                            patient_id: Some(id.to_string()),
                            ..Default::default()
                        }),
                        payer_type: Some(p.payer_type.to_string()),
                        payment: Some(PaymentPaymentCreate {
                            amount_paid: Some(p.amount.clone()),
                            payment_method: Some(p.payment_method.to_string()),
                            reference_number: Some(p.reference_number.clone()),
                        }),
                        post_date: date(p.post_date),
                        practice: Some(PaymentPracticeCreate {
                            practice_id: practice_id.map(|i| i.to_string()),
                            practice_name: Some(practice_name),
                        }),
                        ..Default::default()
                    }),
                };
                to_value(serde_json::to_value(req))
            }
        }
    }
}

/// The `PatientCreate`/`PatientUpdate` members of the given values (cleared ones as empty
/// text), Kareo's names.
pub fn patient_members(changes: &PatientChanges) -> Map<String, Value> {
    let mut p = Map::new();
    for f in &PATIENT_FIELDS {
        let Some(v) = changes.0.get(f.key) else {
            continue;
        };
        let text = match (f.kind, v) {
            (FieldKind::Date, Some(d)) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(|d| XsDateTime::date(d).as_str().to_string())
                .unwrap_or_default(),
            (_, Some(t)) => t.clone(),
            (_, None) => String::new(),
        };
        p.insert(f.member.into(), Value::String(text));
    }
    p
}

/// The UpdatePatient body: every patient field this product manages, from `current` (the
/// patient as GetPatient returned it, Kareo's `PatientData` names) overlaid with `changes`,
/// plus the patient and practice identifiers. Fields absent from both are not sent.
pub fn update_body(
    tenant: &TenantConfig,
    patient_id: i64,
    current: &BTreeMap<String, String>,
    changes: &PatientChanges,
) -> Result<Value, Problem> {
    let mut merged = PatientChanges::default();
    for f in &PATIENT_FIELDS {
        if let Some(v) = changes.0.get(f.key) {
            merged.0.insert(f.key, v.clone());
            continue;
        }
        let Some(cur) = current.get(f.data_member).map(|s| s.trim()) else {
            continue;
        };
        if cur.is_empty() {
            continue;
        }
        let v = match f.kind {
            FieldKind::Date => kareo::dates::parse(cur, tenant.timezone)
                .ok()
                .map(|t| t.with_timezone(&tenant.timezone).date_naive())
                .map(|d| d.format("%Y-%m-%d").to_string()),
            FieldKind::Gender => normalise_gender(cur).map(str::to_string),
            _ => Some(cur.to_string()),
        };
        // A current value this product cannot re-send in Kareo's form is left out (unchanged
        // when Kareo leaves omitted members alone).
        if let Some(v) = v {
            merged.0.insert(f.key, Some(v));
        }
    }
    let mut p = patient_members(&merged);
    p.insert("PatientID".into(), Value::from(patient_id));
    let mut practice = Map::new();
    if let Some(id) = tenant.kareo.practice_id {
        practice.insert("PracticeID".into(), Value::from(id));
    }
    practice.insert(
        "PracticeName".into(),
        Value::String(tenant.kareo.practice.clone()),
    );
    p.insert("Practice".into(), Value::Object(practice));
    let typed: kareo::request::PatientUpdate =
        serde_json::from_value(Value::Object(p)).map_err(|e| Problem {
            field: "data".into(),
            problem: format!("the request cannot be built ({e})"),
        })?;
    serde_json::to_value(kareo::request::UpdatePatientReq {
        patient: Some(typed),
    })
    .map_err(|_| Problem {
        field: "data".into(),
        problem: "the request cannot be built".into(),
    })
}

/// Kareo's gender forms (`Female`, `F`, …) as the enum name.
pub fn normalise_gender(s: &str) -> Option<&'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "female" | "f" => Some("Female"),
        "male" | "m" => Some("Male"),
        "unknown" | "u" => Some("Unknown"),
        _ => None,
    }
}

fn fingerprint(op: Op, data: &Value) -> String {
    // serde_json's map is ordered by key: the same data gives the same text.
    let mut h = Sha256::new();
    h.update(op.name().as_bytes());
    h.update(b"\n");
    h.update(data.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const GENDERS: [&str; 3] = ["Female", "Male", "Unknown"];
const PAYER_TYPES: [&str; 3] = ["Insurance", "Other", "Patient"];
const PAYMENT_METHODS: [&str; 6] = [
    "Cash",
    "Check",
    "CreditCard",
    "ElectronicFundsTransfer",
    "Other",
    "Unknown",
];
const APPOINTMENT_STATUSES: [&str; 13] = [
    "Unknown",
    "Scheduled",
    "ReminderSent",
    "Confirmed",
    "CheckedIn",
    "Roomed",
    "CheckedOut",
    "NeedsReschedule",
    "ReadyToBeSeen",
    "NoShow",
    "Cancelled",
    "Rescheduled",
    "Tentative",
];
const ENCOUNTER_STATUSES: [&str; 5] = ["Draft", "Submitted", "Approved", "Rejected", "Unpayable"];

/// Checks the fields of one JSON object, collecting problems under a path prefix.
struct Checker<'a, 'p> {
    obj: &'a Map<String, Value>,
    prefix: String,
    problems: &'p mut Vec<Problem>,
}

impl<'a, 'p> Checker<'a, 'p> {
    fn new(obj: &'a Map<String, Value>, prefix: &str, problems: &'p mut Vec<Problem>) -> Self {
        Checker {
            obj,
            prefix: prefix.to_string(),
            problems,
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn problem(&mut self, key: &str, what: &str) {
        let field = self.path(key);
        self.problems.push(Problem {
            field,
            problem: what.to_string(),
        });
    }

    /// The raw value: `None` when absent (reported when required); `Some(Null)` passes.
    fn raw(&mut self, key: &str, required: bool) -> Option<&'a Value> {
        match self.obj.get(key) {
            None | Some(Value::Null) if required => {
                self.problem(key, "missing");
                None
            }
            v => v,
        }
    }

    fn unknown(&mut self, allowed: &[&str]) {
        let mut unknown: Vec<&String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            let what = format!("unknown field (expected one of {})", allowed.join(", "));
            self.problem(k, &what);
        }
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.raw(key, required)? {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => {
                self.problem(key, if required { "missing (empty)" } else { "empty" });
                None
            }
            Value::String(s) if s.chars().count() > 256 => {
                self.problem(key, "longer than 256 characters");
                None
            }
            Value::String(s) if s.chars().any(|c| c.is_control() && c != '\t') => {
                self.problem(key, "contains control characters");
                None
            }
            Value::String(s) => Some(s.trim().to_string()),
            _ => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    fn id(&mut self, key: &str, required: bool) -> Option<i64> {
        let v = self.raw(key, required)?;
        let n = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
                s.parse::<i64>().ok()
            }
            _ => None,
        };
        match n {
            Some(n) if n > 0 && n <= i64::from(i32::MAX) => Some(n),
            _ => {
                self.problem(key, "must be a positive whole number (a Kareo id)");
                None
            }
        }
    }

    fn date(&mut self, key: &str, required: bool) -> Option<NaiveDate> {
        let s = match self.raw(key, required)? {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            _ => {
                self.problem(key, "must be a date string YYYY-MM-DD");
                return None;
            }
        };
        let shape = s.len() == 10
            && s.chars().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if !shape {
            self.problem(key, "must be a date YYYY-MM-DD");
            return None;
        }
        match NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            Ok(d) if d.year() >= 1850 => Some(d),
            Ok(_) => {
                self.problem(key, "is before 1850");
                None
            }
            Err(_) => {
                self.problem(key, "is not a real calendar date");
                None
            }
        }
    }

    fn instant(&mut self, key: &str, required: bool) -> Option<DateTime<Utc>> {
        let s = match self.raw(key, required)? {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            _ => {
                self.problem(key, "must be a date-time string");
                return None;
            }
        };
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.problem(
                    key,
                    "must be a real date-time with an offset (RFC 3339, e.g. 2026-10-05T10:00:00-04:00)",
                );
                None
            }
        }
    }

    fn choice(
        &mut self,
        key: &str,
        required: bool,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let v = self.raw(key, required)?;
        if v.is_null() {
            return None;
        }
        match v.as_str().and_then(|s| allowed.iter().find(|a| **a == s)) {
            Some(a) => Some(*a),
            None => {
                let what = format!("must be one of {}", allowed.join(", "));
                self.problem(key, &what);
                None
            }
        }
    }

    /// Money: a string or number, non-negative, at most two decimals (`125.50`).
    fn money(&mut self, key: &str, required: bool, positive: bool) -> Option<String> {
        let v = self.raw(key, required)?;
        let text = match v {
            Value::Null => return None,
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text.as_str(), None),
        };
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        let ok = digits(int) && int.len() <= 9 && frac.is_none_or(|f| digits(f) && f.len() <= 2);
        if !ok {
            self.problem(
                key,
                "must be an amount of money: digits with at most two decimals, e.g. 125.50",
            );
            return None;
        }
        let cents = to_cents(&text)?;
        if positive && cents == 0 {
            self.problem(key, "must be more than 0");
            return None;
        }
        Some(format!("{}.{:02}", cents / 100, cents % 100))
    }

    fn number(&mut self, key: &str, required: bool) -> Option<f64> {
        let v = self.raw(key, required)?;
        let n = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 && n <= 9999.0 => Some(n),
            _ => {
                self.problem(key, "must be a number above 0 (at most 9999)");
                None
            }
        }
    }

    /// A list of codes (strings matching `valid`), `min..=max` long.
    fn codes(
        &mut self,
        key: &str,
        min: usize,
        max: usize,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Option<Vec<String>> {
        let v = self.raw(key, min > 0)?;
        let items = match v {
            Value::Null => return Some(Vec::new()),
            Value::Array(a) => a,
            Value::String(s) if max == 1 || min <= 1 => {
                return if valid(s.trim()) {
                    Some(vec![s.trim().to_string()])
                } else {
                    let m = format!("must be {what}");
                    self.problem(key, &m);
                    None
                };
            }
            _ => {
                let m = format!("must be a list of {min} to {max} {what}s");
                self.problem(key, &m);
                return None;
            }
        };
        if items.len() < min || items.len() > max {
            let m = format!("must hold {min} to {max} items");
            self.problem(key, &m);
            return None;
        }
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            match it.as_str().map(str::trim) {
                Some(s) if valid(s) => out.push(s.to_string()),
                _ => {
                    let m = format!("must be {what}");
                    self.problem(&format!("{key}[{i}]"), &m);
                }
            }
        }
        (out.len() == items.len()).then_some(out)
    }
}

/// `12.5` → 1250.
pub fn to_cents(text: &str) -> Option<u64> {
    let (int, frac) = match text.trim().split_once('.') {
        Some((i, f)) => (i, f),
        None => (text.trim(), ""),
    };
    let int: u64 = int.parse().ok()?;
    let frac: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().ok()? * 10,
        2 => frac.parse().ok()?,
        _ => {
            // Kareo may send more decimals on reads (`125.5000`): only zeros are accepted.
            let (two, rest) = frac.split_at_checked(2)?;
            if !rest.chars().all(|c| c == '0') {
                return None;
            }
            two.parse().ok()?
        }
    };
    int.checked_mul(100)?.checked_add(frac)
}

fn is_procedure_code(s: &str) -> bool {
    (4..=7).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_diagnosis_code(s: &str) -> bool {
    (3..=8).contains(&s.len())
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

fn is_modifier(s: &str) -> bool {
    s.len() == 2 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || ",;<>()[]\"".contains(c))
}

fn is_phone(s: &str) -> bool {
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    (7..=15).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

fn check_patient(c: &mut Checker, update: bool) -> PatientChanges {
    let mut out = PatientChanges::default();
    for f in &PATIENT_FIELDS {
        let required = !update && ["first_name", "last_name", "date_of_birth"].contains(&f.key);
        if update && c.obj.get(f.key) == Some(&Value::Null) {
            if f.clearable {
                out.0.insert(f.key, None);
            } else {
                c.problem(f.key, "cannot be cleared");
            }
            continue;
        }
        let v = match f.kind {
            FieldKind::Date => c
                .date(f.key, required)
                .map(|d| d.format("%Y-%m-%d").to_string()),
            FieldKind::Gender => c.choice(f.key, required, &GENDERS).map(str::to_string),
            FieldKind::Email => c.string(f.key, required).filter(|s| {
                let ok = is_email(s);
                if !ok {
                    c.problem(f.key, "must be an email address");
                }
                ok
            }),
            FieldKind::Phone => c.string(f.key, required).filter(|s| {
                let ok = is_phone(s);
                if !ok {
                    c.problem(
                        f.key,
                        "must be a phone number (7-15 digits; spaces + - ( ) . allowed)",
                    );
                }
                ok
            }),
            FieldKind::Text => c.string(f.key, required),
        };
        if let Some(v) = v {
            out.0.insert(f.key, Some(v));
        }
    }
    if let Some(d) = out.0.get("date_of_birth").cloned().flatten() {
        if NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok_and(|d| d > Utc::now().date_naive()) {
            c.problem("date_of_birth", "is in the future");
            out.0.remove("date_of_birth");
        }
    }
    out
}

fn check_data(op: Op, d: &Map<String, Value>, problems: &mut Vec<Problem>) -> Option<Data> {
    let before = problems.len();
    let allowed = op.fields();
    let mut c = Checker::new(d, "data.", problems);
    c.unknown(&allowed);
    let data = match op {
        Op::CreatePatient => Data::CreatePatient(check_patient(&mut c, false)),
        Op::UpdatePatient => {
            let patient_id = c.id("patient_id", true);
            let changes = check_patient(&mut c, true);
            let given = PATIENT_FIELDS.iter().any(|f| d.contains_key(f.key));
            if !given {
                c.problem("(fields)", "an update must name at least one patient field");
            }
            Data::UpdatePatient {
                patient_id: patient_id.unwrap_or_default(),
                changes,
            }
        }
        Op::CreateAppointment => {
            let patient_id = c.id("patient_id", true);
            let start = c.instant("start", true);
            let end = c.instant("end", true);
            if let (Some(s), Some(e)) = (start, end) {
                if e <= s {
                    c.problem("end", "must be after start");
                } else if e - s > chrono::Duration::hours(24) {
                    c.problem("end", "must be at most 24 hours after start");
                }
            }
            let service_location_id = c.id("service_location_id", true);
            let provider_id = c.id("provider_id", true);
            let kind = c.choice("type", false, &["U", "P", "O"]);
            let status = c.choice("status", false, &APPOINTMENT_STATUSES);
            let reason_id = c.id("reason_id", false);
            let case_id = c.id("case_id", false);
            let mode = c.choice("mode", false, &["InOffice", "Telehealth"]);
            let notes = c.string("notes", false);
            let parse = |s: Option<&str>| -> Option<Value> { s.map(|s| Value::String(s.into())) };
            Data::CreateAppointment(NewAppointment {
                patient_id: patient_id.unwrap_or_default(),
                start: start.unwrap_or_default(),
                end: end.unwrap_or_default(),
                service_location_id: service_location_id.unwrap_or_default(),
                provider_id: provider_id.unwrap_or_default(),
                kind: parse(kind)
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or(AppointmentType::P),
                status: parse(status)
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or(AppointmentStatus::Scheduled),
                reason_id,
                case_id,
                mode: parse(mode).and_then(|v| serde_json::from_value(v).ok()),
                notes,
            })
        }
        Op::DeleteAppointment => Data::DeleteAppointment {
            appointment_id: c.id("appointment_id", true).unwrap_or_default(),
        },
        Op::CreateEncounter => {
            let patient_id = c.id("patient_id", true);
            let service_date = c.date("service_date", true);
            let post_date = c.date("post_date", false);
            let rendering_provider_id = c.id("rendering_provider_id", true);
            let service_location_id = c.id("service_location_id", true);
            let case_id = c.id("case_id", false);
            let appointment_id = c.id("appointment_id", false);
            let status = c
                .choice("status", false, &ENCOUNTER_STATUSES)
                .and_then(|s| serde_json::from_value(Value::String(s.into())).ok());
            let batch_number = c.string("batch_number", false);
            let mut lines = Vec::new();
            match c.raw("service_lines", true) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) if !items.is_empty() && items.len() <= 50 => {
                    for (i, item) in items.iter().enumerate() {
                        let Some(obj) = item.as_object() else {
                            c.problem(&format!("service_lines[{i}]"), "must be an object");
                            continue;
                        };
                        let prefix = format!("data.service_lines[{i}].");
                        let mut lc = Checker::new(obj, &prefix, c.problems);
                        lc.unknown(&LINE_KEYS);
                        let procedure_code = lc.string("procedure_code", true).filter(|s| {
                            let ok = is_procedure_code(s);
                            if !ok {
                                lc.problem(
                                    "procedure_code",
                                    "must be a CPT/HCPCS code (4-7 letters or digits)",
                                );
                            }
                            ok
                        });
                        let diagnosis_codes =
                            lc.codes("diagnosis_codes", 1, 4, is_diagnosis_code, "an ICD-10 code");
                        let units = lc.number("units", true);
                        let unit_charge = lc.money("unit_charge", false, false);
                        let modifiers =
                            lc.codes("modifiers", 0, 4, is_modifier, "a 2-character modifier");
                        let service_date = lc.date("service_date", false);
                        if let (Some(procedure_code), Some(diagnosis_codes), Some(units)) =
                            (procedure_code, diagnosis_codes, units)
                        {
                            lines.push(ServiceLine {
                                procedure_code,
                                diagnosis_codes,
                                units,
                                unit_charge,
                                modifiers: modifiers.unwrap_or_default(),
                                service_date,
                            });
                        }
                    }
                }
                Some(_) => c.problem("service_lines", "must be a list of 1 to 50 service lines"),
            }
            Data::CreateEncounter(NewEncounter {
                patient_id: patient_id.unwrap_or_default(),
                service_date: service_date.unwrap_or_default(),
                post_date,
                rendering_provider_id: rendering_provider_id.unwrap_or_default(),
                service_location_id: service_location_id.unwrap_or_default(),
                case_id,
                appointment_id,
                status,
                batch_number,
                service_lines: lines,
            })
        }
        Op::CreatePayment => {
            let payer_type = c.choice("payer_type", true, &PAYER_TYPES);
            let amount = c.money("amount", true, true);
            let payment_method = c.choice("payment_method", true, &PAYMENT_METHODS);
            let reference_number = c.string("reference_number", true);
            let patient_id = c.id("patient_id", payer_type == Some("Patient"));
            let insurance_plan_id = c.id("insurance_plan_id", false);
            let insurance_plan_name = c.string("insurance_plan_name", false);
            if payer_type == Some("Insurance")
                && insurance_plan_id.is_none()
                && insurance_plan_name.is_none()
                && !d.contains_key("insurance_plan_id")
                && !d.contains_key("insurance_plan_name")
            {
                c.problem(
                    "insurance_plan_id",
                    "missing (an insurance payment needs insurance_plan_id or insurance_plan_name)",
                );
            }
            let post_date = c.date("post_date", false);
            let adjudication_date = c.date("adjudication_date", false);
            let batch_number = c.string("batch_number", false);
            let appointment_id = c.id("appointment_id", false);
            Data::CreatePayment(NewPayment {
                payer_type: payer_type.unwrap_or("Patient"),
                amount: amount.unwrap_or_default(),
                payment_method: payment_method.unwrap_or("Unknown"),
                reference_number: reference_number.unwrap_or_default(),
                patient_id,
                insurance_plan_id,
                insurance_plan_name,
                post_date,
                adjudication_date,
                batch_number,
                appointment_id,
            })
        }
    };
    (problems.len() == before).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        match Command::from_value(&v) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn patient_fields_are_members_of_kareos_types() {
        let create = kareo::schema::op("CreatePatient").unwrap();
        let create_ty = match create.request.def().member("Patient").unwrap().ty {
            kareo::schema::Ty::Complex(t) => t.def(),
            _ => unreachable!(),
        };
        let data = kareo::Family::Patients.data_type();
        for f in &PATIENT_FIELDS {
            assert!(create_ty.member(f.member).is_some(), "{}", f.member);
            assert!(data.member(f.data_member).is_some(), "{}", f.data_member);
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let p = problems(json!({
            "id": "bad id!", "op": "CreatePayment", "extra": 1,
            "data": {"payer_type": "Cash", "amount": "12.345", "payment_method": "Bitcoin",
                      "post_date": "2026-02-30", "colour": "red"}
        }));
        let expect = [
            "id: must be 1-128",
            "tenant: missing",
            "extra: unknown field",
            "data.colour: unknown field",
            "data.payer_type: must be one of Insurance, Other, Patient",
            "data.amount: must be an amount of money",
            "data.payment_method: must be one of",
            "data.reference_number: missing",
            "data.post_date: is not a real calendar date",
        ];
        for e in expect {
            assert!(p.iter().any(|x| x.starts_with(e)), "{e} not in {p:#?}");
        }
        assert_eq!(p.len(), expect.len(), "{p:#?}");
    }

    #[test]
    fn a_good_command_reads_and_hides_its_data_in_debug() {
        let c = Command::from_value(&json!({
            "id": "c-1", "tenant": "acme", "op": "CreatePatient",
            "data": {"first_name": "Zoë", "last_name": "O'Brien", "date_of_birth": "1984-03-07",
                      "gender": "Female", "home_phone": "(617) 555-0100"}
        }))
        .unwrap();
        assert_eq!(c.op, Op::CreatePatient);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("Zoë") && !dbg.contains("1984"), "{dbg}");
        assert_eq!(c.ledger_key(), "write#acme#c-1");
    }

    #[test]
    fn money_and_cents() {
        assert_eq!(to_cents("125.5"), Some(12550));
        assert_eq!(to_cents("125.5000"), Some(12550));
        assert_eq!(to_cents("125.501"), None);
        // Found by fuzzing (Kareo's `Amount` text on reads): no overflow, no split inside a
        // character.
        assert_eq!(to_cents("999999999128260474"), None);
        assert_eq!(to_cents("2.[\u{793}"), None);
        let ok = Command::from_value(&json!({"id": "p", "tenant": "t", "op": "CreatePayment",
            "data": {"payer_type": "Patient", "patient_id": 3, "amount": 125.5,
                     "payment_method": "Check", "reference_number": "CHK-1"}}))
        .unwrap();
        let Data::CreatePayment(p) = ok.data else {
            panic!()
        };
        assert_eq!(p.amount, "125.50");
        for bad in [
            json!("-5"),
            json!("$5"),
            json!("1e3"),
            json!(0),
            json!(true),
        ] {
            let p = problems(json!({"id": "p", "tenant": "t", "op": "CreatePayment",
                "data": {"payer_type": "Patient", "patient_id": 3, "amount": bad,
                         "payment_method": "Check", "reference_number": "CHK-1"}}));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with("data.amount: "), "{p:?}");
        }
    }
}
