//! Kareo UpdateAppointment, a read-modify-write of one appointment's status (and notes):
//! GetAppointment first, because the schema requires the appointment's `PatientId` and
//! `ServiceLocationId` and an update names its times again so that none is lost; then the
//! appointment is read back and the status compared. Reconciled by the same read-back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{AppointmentStatus, AppointmentUpdate, UpdateAppointmentReq, XsDateTime};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::{body, unverified, Answer, Data, Found, Kareo, Operation, Read};
use crate::write::check::{Checker, Problem};

/// UpdateAppointment.
pub(crate) struct UpdateAppointment;

/// The statuses Kareo's schema names (`AppointmentStatus`).
fn statuses() -> &'static [&'static str] {
    kareo::schema::ENUMS
        .iter()
        .find(|e| e.name == "AppointmentStatus")
        .map(|e| e.values)
        .unwrap_or(&[])
}

fn parts(data: &Data) -> (i64, &'static str, Option<&str>) {
    let Data::UpdateAppointment {
        appointment_id,
        status,
        notes,
    } = data
    else {
        unreachable!("UpdateAppointment data")
    };
    (*appointment_id, status, notes.as_deref())
}

/// What the appointment read back says of the change: `Ok` when it holds it.
fn holds(
    after: &BTreeMap<String, String>,
    status: &str,
    notes: Option<&str>,
) -> Result<(), String> {
    let mut off = Vec::new();
    if after.get("AppointmentStatus").map(|s| s.trim()) != Some(status) {
        off.push("status");
    }
    if let Some(n) = notes {
        if after.get("Notes").map(|s| s.trim()) != Some(n.trim()) {
            off.push("notes");
        }
    }
    if off.is_empty() {
        Ok(())
    } else {
        Err(off.join(", "))
    }
}

impl Operation for UpdateAppointment {
    fn check(&self, c: &mut Checker) -> Data {
        let appointment_id = c.id("appointment_id", true).unwrap_or_default();
        let status = c.choice("status", true, statuses()).unwrap_or("Unknown");
        let notes = c.string("notes", false);
        Data::UpdateAppointment {
            appointment_id,
            status,
            notes,
        }
    }

    fn kareo_op(&self) -> &'static str {
        "UpdateAppointment"
    }

    fn reads(&self, data: &Data) -> Option<Read> {
        Some(Read::Appointment(parts(data).0))
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let (appointment_id, status, notes) = parts(data);
        let problem = |what: &str| Problem {
            field: "appointment_id".into(),
            problem: what.into(),
        };
        let current = current
            .ok_or_else(|| problem("UpdateAppointment is built from the current appointment"))?;
        let long = |k: &str| current.get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let (Some(patient_id), Some(service_location_id)) =
            (long("PatientId"), long("ServiceLocationId"))
        else {
            return Err(problem(
                "the appointment read from Kareo names no patient or service location",
            ));
        };
        let time = |k: &str| {
            current
                .get(k)
                .and_then(|v| kareo::dates::parse(v, tenant.timezone).ok())
                .map(|t| XsDateTime::wall(t, tenant.timezone))
        };
        let status: AppointmentStatus = serde_json::from_value(json!(status))
            .map_err(|_| problem("the status is not one of Kareo's"))?;
        body(UpdateAppointmentReq {
            appointment: Some(AppointmentUpdate {
                appointment_id: Some(appointment_id),
                appointment_status: Some(status),
                notes: notes.map(str::to_string),
                patient_id: Some(patient_id),
                service_location_id: Some(service_location_id),
                start_time: time("StartTime"),
                end_time: time("EndTime"),
                ..Default::default()
            }),
        })
    }

    fn answered<'a>(
        &'a self,
        data: &'a Data,
        _records: &'a [Record],
        k: &'a Kareo<'a>,
    ) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let (id, status, notes) = parts(data);
            match k.appointment(id).await {
                Ok(Some(after)) => match holds(&after, status, notes) {
                    Ok(()) => Answer::Done(
                        json!({"AppointmentId": id, "AppointmentStatus": status, "verified": true}),
                        None,
                    ),
                    Err(off) => Answer::Review(format!(
                        "UpdateAppointment answered success but the {off} read back different: check appointment {id} in Kareo"
                    )),
                },
                _ => unverified(
                    json!({"AppointmentId": id, "AppointmentStatus": status, "verified": false}),
                ),
            }
        })
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        _since: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let (id, status, notes) = parts(data);
            match k.appointment(id).await? {
                None => Ok(Found::None(format!("appointment {id} not found"))),
                Some(after) => Ok(match holds(&after, status, notes) {
                    Ok(()) => Found::One(
                        json!({"AppointmentId": id, "AppointmentStatus": status, "verified": true}),
                    ),
                    Err(off) => Found::None(format!("the {off} do not hold the new values")),
                }),
            }
        })
    }
}
