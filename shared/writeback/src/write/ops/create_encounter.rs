//! Kareo CreateEncounter: an encounter with its service lines. Reconciled by patient, date of
//! service and procedure codes among the charges of the claim's window.

use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{
    AppointmentIdentifierReq, CreateEncounterReq, EncounterCreate, EncounterServiceLocation,
    EncounterStatusCode, PatientCaseIdentifierReq, PatientIdentifierReq, PracticeIdentifierReq,
    ProviderIdentifierDetailedReq, ServiceLineReq, XsDateTime,
};
use kareo::{KareoError, Record};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

use super::Data;
use super::{body, found, Found, Kareo, Operation};
use crate::write::check::*;

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

/// The statuses a write takes (Kareo's names).
const ENCOUNTER_STATUSES: [&str; 5] = {
    let s = kareo::codes::ENCOUNTER_STATUSES;
    [s[0].0, s[1].0, s[2].0, s[3].0, s[4].0]
};

/// The members of a service line.
const LINE_KEYS: [&str; 6] = [
    "procedure_code",
    "diagnosis_codes",
    "units",
    "unit_charge",
    "modifiers",
    "service_date",
];

/// CreateEncounter.
pub(crate) struct CreateEncounter;

impl Operation for CreateEncounter {
    fn check(&self, c: &mut Checker) -> Data {
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

    fn kareo_op(&self) -> &'static str {
        "CreateEncounter"
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::CreateEncounter(e) = data else {
            unreachable!("CreateEncounter data")
        };
        let practice_id = tenant.kareo.practice_id;
        let practice_name = tenant.kareo.practice.clone();
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
                    practice_name: Some(practice_name.clone()),
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
        body(req)
    }

    fn ids(&self, _data: &Data, answer: &Record) -> Option<Value> {
        let id = answer.i64("EncounterID").ok().flatten()?;
        let lines: Vec<i64> = answer
            .list("ServiceLinesAdded")
            .unwrap_or(&[])
            .iter()
            .filter_map(|n| match n {
                kareo::Nested::Record(r) => r.i64("ServiceLineID").ok().flatten(),
                _ => None,
            })
            .collect();
        Some(json!({"EncounterID": id, "ServiceLineIDs": lines}))
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let Data::CreateEncounter(e) = data else {
                unreachable!("CreateEncounter data")
            };
            let mut f = k.created_filter(false, since, until);
            f.insert("IncludeUnapprovedCharges".into(), json!("T"));
            let recs = k.list("GetCharges", f).await?;
            let mut want: Vec<String> = e
                .service_lines
                .iter()
                .map(|l| l.procedure_code.to_ascii_uppercase())
                .collect();
            want.sort();
            let mut by_encounter: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &recs {
                let (Some(enc), Some(pid)) = (r.get("EncounterID"), r.get("PatientID")) else {
                    continue;
                };
                if pid.trim() != e.patient_id.to_string()
                    || k.date_of(r, "ServiceStartDate").is_none()
                {
                    continue;
                }
                by_encounter
                    .entry(enc.trim().to_string())
                    .or_default()
                    .push(
                        r.get("ProcedureCode")
                            .unwrap_or("")
                            .trim()
                            .to_ascii_uppercase(),
                    );
            }
            // The encounter's date of service is its earliest line's.
            let mut dates: BTreeMap<String, NaiveDate> = BTreeMap::new();
            for r in &recs {
                if let (Some(enc), Some(d)) =
                    (r.get("EncounterID"), k.date_of(r, "ServiceStartDate"))
                {
                    let e = dates.entry(enc.trim().to_string()).or_insert(d);
                    *e = (*e).min(d);
                }
            }
            let ids: BTreeSet<String> = by_encounter
                .into_iter()
                .filter(|(enc, codes)| {
                    let mut codes = codes.clone();
                    codes.sort();
                    codes == want && dates.get(enc) == Some(&e.service_date)
                })
                .map(|(enc, _)| enc)
                .collect();
            Ok(found(ids, "EncounterID", "no encounter of this patient with these procedures on this date was created since the first attempt"))
        })
    }
}
