//! Kareo UpdatePatient, a read-modify-write: GetPatient, then every patient field this product
//! manages is sent — the current value, or the new one where the command names the field — and
//! the patient is read back and each field the command set is compared (Kareo drops misordered
//! or unknown members without an error). Reconciled by the same read-back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::op::PATIENT_FIELDS;
use domain::tenant::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::{KareoError, Record};
use serde_json::{json, Value};

use super::patient::{check_patient, differing, update_body};
use super::Data;
use super::{unverified, Answer, Found, Kareo, Operation, Read};
use crate::write::check::{Checker, Problem};

/// UpdatePatient.
pub(crate) struct UpdatePatient;

impl Operation for UpdatePatient {
    fn check(&self, c: &mut Checker) -> Data {
        let patient_id = c.id("patient_id", true);
        let changes = check_patient(c, true);
        let given = PATIENT_FIELDS.iter().any(|f| c.obj.contains_key(f.key));
        if !given {
            c.problem("(fields)", "an update must name at least one patient field");
        }
        Data::UpdatePatient {
            patient_id: patient_id.unwrap_or_default(),
            changes,
        }
    }

    fn kareo_op(&self) -> &'static str {
        "UpdatePatient"
    }

    fn reads(&self, data: &Data) -> Option<Read> {
        match data {
            Data::UpdatePatient { patient_id, .. } => Some(Read::Patient(*patient_id)),
            _ => None,
        }
    }

    fn request(
        &self,
        data: &Data,
        tenant: &TenantConfig,
        current: Option<&BTreeMap<String, String>>,
    ) -> Result<Value, Problem> {
        let Data::UpdatePatient {
            patient_id,
            changes,
        } = data
        else {
            unreachable!("UpdatePatient data")
        };
        let Some(current) = current else {
            return Err(Problem {
                field: "op".into(),
                problem: "UpdatePatient is built from the current record".into(),
            });
        };
        update_body(tenant, *patient_id, current, changes)
    }

    fn answered<'a>(
        &'a self,
        data: &'a Data,
        _records: &'a [Record],
        k: &'a Kareo<'a>,
    ) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let Data::UpdatePatient {
                patient_id,
                changes,
            } = data
            else {
                unreachable!("UpdatePatient data")
            };
            match k.patient(*patient_id).await {
                Ok(Some(after)) => {
                    let diffs = differing(k.tenant, &after, changes);
                    if diffs.is_empty() {
                        Answer::Done(json!({"PatientID": patient_id, "verified": true}), None)
                    } else {
                        Answer::Review(format!(
                            "UpdatePatient answered success but {} read back different: check the patient in Kareo",
                            diffs.join(", ")
                        ))
                    }
                }
                _ => unverified(json!({"PatientID": patient_id, "verified": false})),
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
            let Data::UpdatePatient {
                patient_id,
                changes,
            } = data
            else {
                unreachable!("UpdatePatient data")
            };
            match k.patient(*patient_id).await? {
                None => Ok(Found::None(format!("patient {patient_id} not found"))),
                Some(after) => {
                    let diffs = differing(k.tenant, &after, changes);
                    if diffs.is_empty() {
                        Ok(Found::One(
                            json!({"PatientID": patient_id, "verified": true}),
                        ))
                    } else {
                        Ok(Found::None(format!(
                            "{} do not hold the new values",
                            diffs.join(", ")
                        )))
                    }
                }
            }
        })
    }
}
