//! Kareo UpdateEncounterStatus: one of the statuses CreateEncounter takes, on an encounter of
//! the tenant's practice. The encounter is read back (GetEncounterDetails, which answers the
//! status as a number, `kareo-api.md` §7.12) and compared. Reconciled by the same read-back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::request::{
    EncounterUpdateStatus, EncounterUpdateStatusPractice, UpdateEncounterStatusReq,
};
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::{body, encounter, unverified, Answer, Data, Found, Kareo, Operation};
use crate::write::check::{Checker, Problem};

/// UpdateEncounterStatus.
pub(crate) struct UpdateEncounterStatus;

fn parts(data: &Data) -> (i64, &'static str) {
    let Data::UpdateEncounterStatus {
        encounter_id,
        status,
    } = data
    else {
        unreachable!("UpdateEncounterStatus data")
    };
    (*encounter_id, status)
}

/// Does the status read back (a number, or a name) say `status`?
fn says(read: Option<&str>, status: &str) -> bool {
    read.and_then(kareo::codes::encounter_status) == Some(status)
}

/// The encounter's status as GetEncounterDetails reads it; `Ok(None)`: no such encounter.
async fn status_of(k: &Kareo<'_>, id: i64) -> Result<Option<String>, KareoError> {
    Ok(encounter(k.port, k.creds, k.tenant, id)
        .await?
        .map(|e| e.get("EncounterStatus").cloned().unwrap_or_default()))
}

impl Operation for UpdateEncounterStatus {
    fn check(&self, c: &mut Checker) -> Data {
        let encounter_id = c.id("encounter_id", true).unwrap_or_default();
        if i32::try_from(encounter_id).is_err() {
            c.problem("encounter_id", "is larger than Kareo's encounter ids");
        }
        let names = kareo::codes::ENCOUNTER_STATUSES.map(|(n, _)| n);
        let status = c.choice("status", true, &names).unwrap_or("Draft");
        let status = kareo::codes::ENCOUNTER_STATUSES
            .iter()
            .map(|(n, _)| *n)
            .find(|n| *n == status)
            .unwrap_or("Draft");
        Data::UpdateEncounterStatus {
            encounter_id,
            status,
        }
    }

    fn kareo_op(&self) -> &'static str {
        "UpdateEncounterStatus"
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        _current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let (id, status) = parts(data);
        let encounter_id = i32::try_from(id).map_err(|_| Problem {
            field: "encounter_id".into(),
            problem: "is larger than Kareo's encounter ids".into(),
        })?;
        body(UpdateEncounterStatusReq {
            encounter_update_status: Some(EncounterUpdateStatus {
                encounter_id: Some(encounter_id),
                encounter_status: Some(status.to_string()),
                practice: Some(EncounterUpdateStatusPractice {
                    practice_id: tenant.kareo.practice_id.map(|p| p.to_string()),
                    practice_name: Some(tenant.kareo.practice.clone()),
                }),
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
            let (id, status) = parts(data);
            let ids = |verified: bool| json!({"EncounterID": id, "EncounterStatus": status, "verified": verified});
            match status_of(k, id).await {
                Ok(Some(read)) if says(Some(&read), status) => Answer::Done(ids(true), None),
                Ok(Some(_)) => Answer::Review(format!(
                    "UpdateEncounterStatus answered success but encounter {id} reads back another status: check it in Kareo"
                )),
                _ => unverified(ids(false)),
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
            let (id, status) = parts(data);
            Ok(match status_of(k, id).await? {
                None => Found::None(format!("encounter {id} not found")),
                Some(read) if says(Some(&read), status) => Found::One(
                    json!({"EncounterID": id, "EncounterStatus": status, "verified": true}),
                ),
                Some(_) => Found::None(format!("encounter {id} does not hold the new status")),
            })
        })
    }
}
