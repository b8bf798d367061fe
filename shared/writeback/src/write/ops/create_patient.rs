//! Kareo CreatePatient: a new patient of the tenant's practice. Reconciled by first name, last
//! name and date of birth among the patients created in the claim's window.

use super::patient::{check_patient, patient_members};
use chrono::NaiveDate;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{CreatePatientReq, PatientCreate, PracticeIdentifierReq};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::Data;
use super::{body, distinct, eq_ci, found, Found, Kareo, Operation};
use crate::write::check::*;

/// CreatePatient.
pub(crate) struct CreatePatient;

impl Operation for CreatePatient {
    fn check(&self, c: &mut Checker) -> Data {
        Data::CreatePatient(check_patient(c, false))
    }

    fn kareo_op(&self) -> &'static str {
        "CreatePatient"
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::CreatePatient(changes) = data else {
            unreachable!("CreatePatient data")
        };
        let practice_id = tenant.kareo.practice_id;
        let practice_name = tenant.kareo.practice.clone();
        let mut p = patient_members(changes);
        p.insert(
            "Practice".into(),
            serde_json::to_value(PracticeIdentifierReq {
                practice_id: practice_id.map(|i| i as i32),
                practice_name: Some(practice_name.clone()),
                ..Default::default()
            })
            .unwrap_or_default(),
        );
        let typed: PatientCreate =
            serde_json::from_value(Value::Object(p)).map_err(|e| Problem {
                field: "data".into(),
                problem: format!("the request cannot be built ({e})"),
            })?;
        body(CreatePatientReq {
            patient: Some(typed),
        })
    }

    fn ids(&self, _data: &Data, answer: &Record) -> Option<Value> {
        let id = answer.i64("PatientID").ok().flatten()?;
        Some(json!({"PatientID": id}))
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let Data::CreatePatient(ch) = data else {
                unreachable!("CreatePatient data")
            };
            let val = |k: &str| ch.get(k).cloned().flatten().unwrap_or_default();
            let (first, last, dob) = (val("first_name"), val("last_name"), val("date_of_birth"));
            let mut f = k.created_filter(true, since, until);
            f.insert("FirstName".into(), json!(first));
            f.insert("LastName".into(), json!(last));
            let recs = k.list("GetPatients", f).await?;
            let dob = NaiveDate::parse_from_str(&dob, "%Y-%m-%d").ok();
            let ids = distinct(
                recs.iter().filter(|r| {
                    eq_ci(r.get("FirstName"), &first)
                        && eq_ci(r.get("LastName"), &last)
                        && k.date_of(r, "DOB") == dob
                }),
                "ID",
            );
            Ok(found(
                ids,
                "PatientID",
                "no patient with this name and date of birth was created since the first attempt",
            ))
        })
    }
}
