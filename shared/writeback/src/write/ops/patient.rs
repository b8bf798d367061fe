//! What CreatePatient and UpdatePatient share: the patient fields a command may set
//! ([`domain::op::PATIENT_FIELDS`]), checked, sent and compared the same way.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use domain::op::{patient_field, FieldKind, PATIENT_FIELDS};
use domain::tenant::TenantConfig;
use kareo::request::XsDateTime;
use serde_json::{Map, Value};

use crate::write::check::Problem;
use crate::write::check::{is_email, is_phone, normalise_gender, Checker};

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

const GENDERS: [&str; 3] = ["Female", "Male", "Unknown"];

pub(crate) fn check_patient(c: &mut Checker, update: bool) -> PatientChanges {
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

/// The fields of `changes` that `current` (PatientData) does not hold: names only.
pub(crate) fn differing(
    tenant: &TenantConfig,
    current: &BTreeMap<String, String>,
    changes: &PatientChanges,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (key, want) in &changes.0 {
        let Some(f) = patient_field(key) else {
            continue;
        };
        let have = current
            .get(f.data_member)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        let same = match (want, have) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(w), Some(h)) => match f.kind {
                FieldKind::Text => w.trim() == h,
                FieldKind::Email => w.trim().eq_ignore_ascii_case(h),
                FieldKind::Phone => {
                    let digits =
                        |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
                    digits(w) == digits(h)
                }
                FieldKind::Gender => normalise_gender(h) == Some(w.as_str()),
                FieldKind::Date => {
                    kareo::dates::parse(h, tenant.timezone)
                        .ok()
                        .map(|t| t.with_timezone(&tenant.timezone).date_naive())
                        == NaiveDate::parse_from_str(w, "%Y-%m-%d").ok()
                }
            },
        };
        if !same {
            out.push(f.key);
        }
    }
    out
}
