//! Kareo DeleteAppointment. Reconciled by reading the appointment back (`IsDeleted`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{AppointmentDelete, DeleteAppointmentReq};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::Data;
use super::{body, Found, Kareo, Operation};
use crate::write::check::*;

/// DeleteAppointment.
pub(crate) struct DeleteAppointment;

impl Operation for DeleteAppointment {
    fn check(&self, c: &mut Checker) -> Data {
        Data::DeleteAppointment {
            appointment_id: c.id("appointment_id", true).unwrap_or_default(),
        }
    }

    fn kareo_op(&self) -> &'static str {
        "DeleteAppointment"
    }

    fn request(
        &self,
        data: &Data,
        _tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::DeleteAppointment { appointment_id } = data else {
            unreachable!("DeleteAppointment data")
        };
        body(DeleteAppointmentReq {
            appointment: Some(AppointmentDelete {
                appointment_id: Some(*appointment_id),
            }),
        })
    }

    fn ids(&self, data: &Data, answer: &Record) -> Option<Value> {
        let Data::DeleteAppointment { appointment_id } = data else {
            unreachable!("DeleteAppointment data")
        };
        (answer.bool("Deleted").ok().flatten() == Some(true))
            .then(|| json!({"AppointmentId": appointment_id, "Deleted": true}))
    }

    fn reconcile<'a>(
        &'a self,
        data: &'a Data,
        k: &'a Kareo<'a>,
        _since: DateTime<Utc>,
        _until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Found, KareoError>> {
        Box::pin(async move {
            let Data::DeleteAppointment { appointment_id } = data else {
                unreachable!("DeleteAppointment data")
            };
            let body = json!({"Appointment": {"AppointmentId": appointment_id}});
            match k.call("GetAppointment", &body).await {
                Ok(records) => {
                    let deleted = records
                        .first()
                        .and_then(|r| r.bool("IsDeleted").ok().flatten());
                    if deleted == Some(true) {
                        Ok(Found::One(
                            json!({"AppointmentId": appointment_id, "Deleted": true}),
                        ))
                    } else {
                        Ok(Found::None(format!(
                            "appointment {appointment_id} is not deleted"
                        )))
                    }
                }
                Err(KareoError::Api { .. }) => Ok(Found::None(format!(
                    "appointment {appointment_id} not found"
                ))),
                Err(e) => Err(e),
            }
        })
    }
}
