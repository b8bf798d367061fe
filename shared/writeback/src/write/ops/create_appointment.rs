//! Kareo CreateAppointment. Reconciled by patient and start time among the appointments created
//! in the claim's window.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{
    AppointmentCreate, AppointmentMode, AppointmentStatus, AppointmentType, CreateAppointmentReq,
    PatientSummary, XsDateTime,
};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::Data;
use super::{body, distinct, found, Found, Kareo, Operation};
use crate::write::check::*;

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

/// CreateAppointment.
pub(crate) struct CreateAppointment;

impl Operation for CreateAppointment {
    fn check(&self, c: &mut Checker) -> Data {
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

    fn kareo_op(&self) -> &'static str {
        "CreateAppointment"
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::CreateAppointment(a) = data else {
            unreachable!("CreateAppointment data")
        };
        let practice_id = tenant.kareo.practice_id;
        let req = CreateAppointmentReq {
            appointment: Some(AppointmentCreate {
                appointment_mode: a.mode,
                appointment_reason_id: a.reason_id,
                appointment_status: Some(a.status),
                appointment_type: Some(a.kind),
                end_time: Some(XsDateTime::wall(a.end, tenant.timezone)),
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
                start_time: Some(XsDateTime::wall(a.start, tenant.timezone)),
                was_created_online: Some(false),
                ..Default::default()
            }),
        };
        body(req)
    }

    fn ids(&self, _data: &Data, answer: &Record) -> Option<Value> {
        let id = answer.i64("AppointmentId").ok().flatten()?;
        Some(json!({"AppointmentId": id}))
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let Data::CreateAppointment(a) = data else {
                unreachable!("CreateAppointment data")
            };
            let mut f = k.created_filter(false, since, until);
            f.insert("PatientID".into(), json!(a.patient_id.to_string()));
            let recs = k.list("GetAppointments", f).await?;
            let ids = distinct(
                recs.iter().filter(|r| {
                    r.get("PatientID").map(str::trim) == Some(a.patient_id.to_string().as_str())
                        && r.get("StartDate")
                            .and_then(|s| kareo::dates::parse(s, k.tenant.timezone).ok())
                            == Some(a.start)
                }),
                "ID",
            );
            Ok(found(ids, "AppointmentId", "no appointment of this patient at this start time was created since the first attempt"))
        })
    }
}
