//! The write operations, one module each behind one trait: what an operation's data is and how
//! it is checked, the Kareo request that performs it, what Kareo's answer means, and how an
//! attempt whose outcome is unknown is looked for. The executor ([`super::exec`]) owns the
//! claim → mark sending → call → settle protocol and calls these hooks; adding an operation is
//! a module here and a row in [`of`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::op::Op;
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::{Credentials, KareoError, Record};
use serde_json::{json, Map, Value};

use super::check::Checker;
use super::check::Problem;
use super::kareo::KareoCall;
use create_appointment::NewAppointment;
use create_encounter::NewEncounter;
use create_payment::NewPayment;
use patient::PatientChanges;

pub mod create_appointment;
pub mod create_encounter;
pub mod create_patient;
pub mod create_payment;
pub mod delete_appointment;
pub mod patient;
pub mod update_appointment;
pub mod update_encounter_status;
pub mod update_patient;

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
    /// An appointment's status (and notes).
    UpdateAppointment {
        /// Kareo AppointmentId.
        appointment_id: i64,
        /// One of Kareo's `AppointmentStatus` names.
        status: &'static str,
        /// New notes.
        notes: Option<String>,
    },
    /// An encounter's status.
    UpdateEncounterStatus {
        /// Kareo EncounterID.
        encounter_id: i64,
        /// Draft, Submitted, Approved, Rejected or Unpayable.
        status: &'static str,
    },
}

/// The record an operation reads before its request is built (the request then gets its
/// members as `current`).
pub(crate) enum Read {
    /// A patient (GetPatient).
    Patient(i64),
    /// An appointment (GetAppointment; its patient's id as `PatientId`).
    Appointment(i64),
}

/// One write operation.
pub(crate) trait Operation: Sync {
    /// Reads `data` (the command's object) through the checker; every problem goes into it
    /// (the data is used only when there is none).
    fn check(&self, c: &mut Checker) -> Data;

    /// The Kareo operation that performs it.
    fn kareo_op(&self) -> &'static str;

    /// The record to read before the request is built (the one a read-modify-write
    /// modifies); the request then gets its members as `current`.
    fn reads(&self, _data: &Data) -> Option<Read> {
        None
    }

    /// The request body (Kareo's member names; the typed request structs check it).
    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem>;

    /// The ids of what Kareo's answer (its first result record) says was written; `None`
    /// when it says nothing usable.
    fn ids(&self, _data: &Data, _answer: &Record) -> Option<Value> {
        None
    }

    /// What Kareo's successful answer (its result records) means: by default, done with
    /// [`Operation::ids`], or an outcome to look for when the answer names no record.
    fn answered<'a>(
        &'a self,
        data: &'a Data,
        records: &'a [Record],
        _kareo: &'a Kareo<'a>,
    ) -> BoxFuture<'a, Answer> {
        let ids = records.first().and_then(|r| self.ids(data, r));
        Box::pin(async move {
            match ids {
                Some(ids) => Answer::Done(ids, None),
                None => Answer::Unknown("Kareo's answer carried no record id"),
            }
        })
    }

    /// Looks for what an attempt whose outcome is unknown wrote: created between `since` and
    /// `until` (both already widened by the clock skew).
    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        kareo: &'a Kareo<'a>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>>;
}

/// The operation behind `op`.
pub(crate) fn of(op: Op) -> &'static dyn Operation {
    match op {
        Op::CreatePatient => &create_patient::CreatePatient,
        Op::UpdatePatient => &update_patient::UpdatePatient,
        Op::CreateAppointment => &create_appointment::CreateAppointment,
        Op::DeleteAppointment => &delete_appointment::DeleteAppointment,
        Op::CreateEncounter => &create_encounter::CreateEncounter,
        Op::CreatePayment => &create_payment::CreatePayment,
        Op::UpdateAppointment => &update_appointment::UpdateAppointment,
        Op::UpdateEncounterStatus => &update_encounter_status::UpdateEncounterStatus,
    }
}

/// What a successful answer means.
pub(crate) enum Answer {
    /// Done: the ids to keep, and a note for the caller.
    Done(Value, Option<String>),
    /// Kareo said success but the record does not hold what was sent: a person must look.
    Review(String),
    /// The answer does not say what was written: look for it.
    Unknown(&'static str),
}

/// What a lookup found.
pub(crate) enum Found {
    /// Exactly one record: its ids.
    One(Value),
    /// Nothing that matches (with what did not match, no PHI).
    None(String),
    /// Several candidates.
    Many(usize),
}

/// Kareo as an operation sees it: the client port, the tenant's credentials and config.
pub(crate) struct Kareo<'a> {
    pub port: &'a dyn KareoCall,
    pub creds: &'a Credentials,
    pub tenant: &'a TenantConfig,
}

impl Kareo<'_> {
    /// Calls `op` with `body`: its result records.
    pub async fn call(&self, op: &'static str, body: &Value) -> Result<Vec<Record>, KareoError> {
        self.port.call(self.creds, op, body).await
    }

    /// A list read with a filter (every member).
    pub async fn list(
        &self,
        op: &'static str,
        filter: Map<String, Value>,
    ) -> Result<Vec<Record>, KareoError> {
        self.call(op, &json!({"Fields": {}, "Filter": filter}))
            .await
    }

    /// A patient's simple members (GetPatient); `None` when Kareo has no such patient.
    pub async fn patient(
        &self,
        patient_id: i64,
    ) -> Result<Option<BTreeMap<String, String>>, KareoError> {
        patient(self.port, self.creds, patient_id).await
    }

    /// An appointment's simple members (GetAppointment), with its patient's id as
    /// `PatientId`; `None` when Kareo has no such appointment.
    pub async fn appointment(
        &self,
        appointment_id: i64,
    ) -> Result<Option<BTreeMap<String, String>>, KareoError> {
        appointment(self.port, self.creds, appointment_id).await
    }

    /// The practice and creation-window members of a reconciliation filter.
    pub fn created_filter(
        &self,
        with_practice_id: bool,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Map<String, Value> {
        let tz = self.tenant.timezone;
        let mut m = Map::new();
        m.insert("PracticeName".into(), json!(self.tenant.kareo.practice));
        if let (true, Some(id)) = (with_practice_id, self.tenant.kareo.practice_id) {
            m.insert("PracticeID".into(), json!(id.to_string()));
        }
        m.insert(
            "FromCreatedDate".into(),
            json!(kareo::dates::format_filter(since, tz)),
        );
        m.insert(
            "ToCreatedDate".into(),
            json!(kareo::dates::format_filter(until, tz)),
        );
        m
    }

    /// A record's date member as a date in the practice's zone.
    pub fn date_of(&self, r: &Record, member: &str) -> Option<chrono::NaiveDate> {
        let tz = self.tenant.timezone;
        r.get(member)
            .and_then(|s| kareo::dates::parse(s, tz).ok())
            .map(|t| t.with_timezone(&tz).date_naive())
    }
}

/// A patient's simple members (GetPatient); `None` when Kareo has no such patient.
pub(crate) async fn patient(
    port: &dyn KareoCall,
    creds: &Credentials,
    patient_id: i64,
) -> Result<Option<BTreeMap<String, String>>, KareoError> {
    match port
        .call(
            creds,
            "GetPatient",
            &json!({"Filter": {"PatientID": patient_id}}),
        )
        .await
    {
        Ok(records) => Ok(records.first().filter(|r| r.id().is_some()).map(|r| {
            r.texts()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })),
        Err(KareoError::Api { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An appointment's simple members (GetAppointment), with `PatientSummary.PatientId` as
/// `PatientId`; `None` when Kareo has no such appointment.
pub(crate) async fn appointment(
    port: &dyn KareoCall,
    creds: &Credentials,
    appointment_id: i64,
) -> Result<Option<BTreeMap<String, String>>, KareoError> {
    let body = json!({"Appointment": {"AppointmentId": appointment_id}});
    match port.call(creds, "GetAppointment", &body).await {
        Ok(records) => Ok(records
            .first()
            .filter(|r| r.get("AppointmentId").is_some())
            .map(|r| {
                let mut m: BTreeMap<String, String> = r
                    .texts()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                if let Some(p) = r.record("PatientSummary").and_then(|p| p.get("PatientId")) {
                    m.insert("PatientId".into(), p.to_string());
                }
                m
            })),
        Err(KareoError::Api { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An encounter's simple members (GetEncounterDetails, in the tenant's practice); `None`
/// when Kareo has no such encounter.
pub(crate) async fn encounter(
    port: &dyn KareoCall,
    creds: &Credentials,
    tenant: &TenantConfig,
    encounter_id: i64,
) -> Result<Option<BTreeMap<String, String>>, KareoError> {
    let mut practice = Map::new();
    if let Some(id) = tenant.kareo.practice_id {
        practice.insert("PracticeID".into(), json!(id.to_string()));
    }
    practice.insert("PracticeName".into(), json!(tenant.kareo.practice));
    let body = json!({"Fields": {}, "Filter": {"EncounterID": encounter_id.to_string(), "Practice": practice}});
    match port.call(creds, "GetEncounterDetails", &body).await {
        Ok(records) => Ok(records
            .first()
            .filter(|r| r.get("EncounterID").is_some())
            .map(|r| {
                r.texts()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })),
        Err(KareoError::Api { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A success Kareo answered whose read-back failed: done, unverified.
pub(crate) fn unverified(ids: Value) -> Answer {
    Answer::Done(
        ids,
        Some("Kareo answered success; the read-back failed".into()),
    )
}

/// A typed request as JSON.
pub(crate) fn body<T: serde::Serialize>(req: T) -> Result<Value, Problem> {
    serde_json::to_value(req).map_err(|_| Problem {
        field: "data".into(),
        problem: "the request cannot be built".into(),
    })
}

/// The distinct non-empty values of `member`.
pub(crate) fn distinct<'r>(
    recs: impl Iterator<Item = &'r Record>,
    member: &str,
) -> BTreeSet<String> {
    recs.filter_map(|r| r.get(member))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One id → found (under `key`), none → `none`, several → ambiguous.
pub(crate) fn found(ids: BTreeSet<String>, key: &str, none: &str) -> Found {
    match ids.len() {
        0 => Found::None(none.to_string()),
        1 => {
            let id = ids.into_iter().next().unwrap_or_default();
            let v = id
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(id));
            Found::One(json!({ key: v }))
        }
        n => Found::Many(n),
    }
}

/// Equal ignoring case and surrounding space.
pub(crate) fn eq_ci(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().to_lowercase() == b.trim().to_lowercase())
}
