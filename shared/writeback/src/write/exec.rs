//! Running a write command exactly once: the ledger protocol of task creation, applied to
//! Kareo writes (see the module docs of [`crate::write`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use kareo::{Credentials, KareoClient, KareoError, Record};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use domain::command::{
    normalise_gender, to_cents, update_body, Command, Data, PatientChanges, Problem,
};
use domain::op::{patient_field, FieldKind};
use domain::ports::*;
use domain::tenant::TenantConfig;

/// Where a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStatus {
    /// Written (now, earlier under the same id, or found by reconciliation): `kareo` holds
    /// the ids.
    Done,
    /// The outcome is unknown and could not be settled by looking: a person must check Kareo.
    /// Never re-sent under this id.
    NeedsReview,
    /// The command is malformed (see `errors`); nothing was sent.
    Invalid,
    /// Kareo (or the configuration) refused it; nothing was written. May be sent again under
    /// the same id once fixed.
    Rejected,
    /// A transient failure before anything was written, or a reconciliation that could not
    /// look yet: send the same command again later.
    Retry,
    /// Another attempt of this command id is under way.
    InProgress,
}

impl WriteStatus {
    /// The CLI's exit code: 0 done, 2 invalid, 3 rejected, 4 needs review, 5 retry later.
    pub fn exit_code(self) -> u8 {
        match self {
            WriteStatus::Done => 0,
            WriteStatus::Invalid => 2,
            WriteStatus::Rejected => 3,
            WriteStatus::NeedsReview => 4,
            WriteStatus::Retry | WriteStatus::InProgress => 5,
        }
    }

    /// The HTTP status of the Function URL answer.
    pub fn http_status(self) -> u16 {
        match self {
            WriteStatus::Done => 200,
            WriteStatus::Invalid => 400,
            WriteStatus::Rejected => 422,
            WriteStatus::NeedsReview | WriteStatus::InProgress => 409,
            WriteStatus::Retry => 503,
        }
    }
}

/// The answer to a command (JSON). `Debug` leaves out Kareo's own message (it may echo data).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Command id (as sent, when readable).
    pub id: String,
    /// Tenant (as sent, when readable).
    pub tenant: String,
    /// Operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// Outcome.
    pub status: WriteStatus,
    /// The Kareo ids written (`PatientID`, `AppointmentId`, `EncounterID`, `PaymentID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kareo: Option<Value>,
    /// The answer was stored from an earlier request with this id: Kareo was not called.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    /// The outcome was unknown and the record was found by looking it up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
    /// Why (classes and ids, no PHI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Problems of an invalid command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
    /// What Kareo said when it refused the command (returned to the caller only, never logged
    /// or stored: it may echo the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kareo_message: Option<String>,
}

impl std::fmt::Debug for WriteResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteResult")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("op", &self.op)
            .field("status", &self.status)
            .field("kareo", &self.kareo)
            .field("repeated", &self.repeated)
            .field("reconciled", &self.reconciled)
            .field("reason", &self.reason)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl WriteResult {
    fn of(cmd: &Command, status: WriteStatus) -> WriteResult {
        WriteResult {
            id: cmd.id.clone(),
            tenant: cmd.tenant.clone(),
            op: Some(cmd.op.name().to_string()),
            status,
            kareo: None,
            repeated: false,
            reconciled: false,
            reason: None,
            errors: Vec::new(),
            kareo_message: None,
        }
    }

    fn reason(mut self, r: impl Into<String>) -> WriteResult {
        self.reason = Some(r.into());
        self
    }

    /// An invalid command, with the id, tenant and op read from the raw JSON when possible.
    pub fn invalid(raw: &Value, errors: Vec<Problem>) -> WriteResult {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        WriteResult {
            id: s("id"),
            tenant: s("tenant"),
            op: raw.get("op").and_then(Value::as_str).map(str::to_string),
            status: WriteStatus::Invalid,
            kareo: None,
            repeated: false,
            reconciled: false,
            reason: None,
            errors,
            kareo_message: None,
        }
    }
}

/// What the ledger keeps of a settled command (`LedgerEntry::result`).
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The command's fingerprint.
    fp: String,
    #[serde(default)]
    kareo: Option<Value>,
    #[serde(default)]
    reconciled: bool,
}

/// What a lookup found.
enum Found {
    /// Exactly one record: its ids.
    One(Value),
    /// Nothing that matches (with what did not match, no PHI).
    None(String),
    /// Several candidates.
    Many(usize),
}

/// Runs write commands against Kareo, exactly once per (tenant, command id).
pub struct Writer<'a, L, T> {
    /// Kareo.
    pub kareo: &'a KareoClient,
    /// The ledger.
    pub ledger: &'a L,
    /// Clock (claims, reconciliation windows).
    pub clock: &'a T,
    /// Claim holder (request id).
    pub owner: String,
    /// Claim lease: longer than the Kareo client's timeout.
    pub lease: Duration,
    /// How far around the claim reconciliation looks for created records (clock skew between
    /// this process and Kareo, and Kareo's whole-second stamps).
    pub skew: Duration,
}

impl<'a, L: Ledger, T: Clock> Writer<'a, L, T> {
    /// A writer with a 6-minute lease and a 10-minute reconciliation margin.
    pub fn new(kareo: &'a KareoClient, ledger: &'a L, clock: &'a T, owner: String) -> Self {
        Writer {
            kareo,
            ledger,
            clock,
            owner,
            lease: kareo.config().timeout + Duration::from_secs(60),
            skew: Duration::from_secs(600),
        }
    }

    /// Runs one checked command for its tenant.
    pub async fn execute(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
    ) -> WriteResult {
        let out = self.execute_inner(tenant, creds, cmd).await;
        tracing::info!(
            tenant = %cmd.tenant,
            command = %cmd.id,
            op = cmd.op.name(),
            status = ?out.status,
            repeated = out.repeated,
            reconciled = out.reconciled,
            "write command"
        );
        out
    }

    async fn execute_inner(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
    ) -> WriteResult {
        let problems = cmd.check_tenant(tenant);
        if !problems.is_empty() {
            let mut r = WriteResult::of(cmd, WriteStatus::Invalid);
            r.errors = problems;
            return r;
        }
        let key = cmd.ledger_key();
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let claim = match self.ledger.claim(&key, &self.owner, now, until).await {
            Ok(c) => c,
            Err(e) => {
                return WriteResult::of(cmd, WriteStatus::Retry)
                    .reason(format!("ledger unavailable ({})", e.class()))
            }
        };
        match claim {
            Claim::Done(e) => return stored(cmd, &e, WriteStatus::Done),
            Claim::NeedsReview(e) => return stored(cmd, &e, WriteStatus::NeedsReview),
            Claim::Held => {
                return WriteResult::of(cmd, WriteStatus::InProgress)
                    .reason("another attempt of this command id is under way")
            }
            // The previous attempt died before it began to send: nothing reached Kareo, and
            // the claim is now this attempt's.
            Claim::Expired(prev) if !prev.sending => {}
            Claim::Expired(prev) => {
                return self
                    .reconcile_and_settle(
                        tenant,
                        creds,
                        cmd,
                        prev.at,
                        "a previous attempt stopped before recording its outcome",
                    )
                    .await
            }
            Claim::New => {}
        }
        fail::fail_point!("write.after_claim");
        match &cmd.data {
            Data::UpdatePatient {
                patient_id,
                changes,
            } => {
                self.update(tenant, creds, cmd, *patient_id, changes, now)
                    .await
            }
            _ => {
                let body = match cmd.request_body(tenant) {
                    Ok(b) => b,
                    Err(p) => {
                        self.release(&key).await;
                        let mut r = WriteResult::of(cmd, WriteStatus::Invalid);
                        r.errors = vec![p];
                        return r;
                    }
                };
                let op = kareo::op(cmd.op.name()).expect("write operations are in the schema");
                if let Some(r) = self.begin_sending(cmd, &key).await {
                    return r;
                }
                match self.kareo.call(creds, op, &body).await {
                    Ok(resp) => {
                        fail::fail_point!("write.after_kareo_write");
                        match ids_of(cmd, resp.records.first()) {
                            Some(ids) => self.done(cmd, ids, false, None).await,
                            None => {
                                self.reconcile_and_settle(
                                    tenant,
                                    creds,
                                    cmd,
                                    now,
                                    "Kareo's answer carried no record id",
                                )
                                .await
                            }
                        }
                    }
                    Err(e) => self.failed(tenant, creds, cmd, e, now).await,
                }
            }
        }
    }

    async fn update(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
        patient_id: i64,
        changes: &PatientChanges,
        started: DateTime<Utc>,
    ) -> WriteResult {
        let key = cmd.ledger_key();
        let current = match self.patient(creds, patient_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let reason = format!("patient {patient_id} not found in Kareo");
                self.settle(&key, LedgerState::Failed, None, Some(reason.clone()))
                    .await;
                return WriteResult::of(cmd, WriteStatus::Rejected).reason(reason);
            }
            Err(e) => return self.not_sent(cmd, e).await,
        };
        let body = match update_body(tenant, patient_id, &current, changes) {
            Ok(b) => b,
            Err(p) => {
                self.release(&key).await;
                let mut r = WriteResult::of(cmd, WriteStatus::Invalid);
                r.errors = vec![p];
                return r;
            }
        };
        let op = kareo::op("UpdatePatient").expect("in the schema");
        if let Some(r) = self.begin_sending(cmd, &key).await {
            return r;
        }
        match self.kareo.call(creds, op, &body).await {
            Ok(_) => {
                fail::fail_point!("write.after_kareo_write");
                // Kareo drops misordered or unknown members without an error: read the patient
                // back and compare every field the command set.
                match self.patient(creds, patient_id).await {
                    Ok(Some(after)) => {
                        let diffs = differing(tenant, &after, changes);
                        if diffs.is_empty() {
                            self.done(
                                cmd,
                                json!({"PatientID": patient_id, "verified": true}),
                                false,
                                None,
                            )
                            .await
                        } else {
                            self.review(
                                cmd,
                                format!(
                                    "UpdatePatient answered success but {} read back different: check the patient in Kareo",
                                    diffs.join(", ")
                                ),
                            )
                            .await
                        }
                    }
                    _ => {
                        self.done(
                            cmd,
                            json!({"PatientID": patient_id, "verified": false}),
                            false,
                            Some("Kareo answered success; the read-back failed".into()),
                        )
                        .await
                    }
                }
            }
            Err(e) => self.failed(tenant, creds, cmd, e, started).await,
        }
    }

    /// A failed write: ambiguous → reconcile; certainly not applied and transient → give the
    /// claim back; refused → `failed` (the id may be sent again once fixed).
    async fn failed(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
        e: KareoError,
        started: DateTime<Utc>,
    ) -> WriteResult {
        if e.is_ambiguous() {
            let why = format!("{} outcome unknown ({})", cmd.op, e.class());
            return self
                .reconcile_and_settle(tenant, creds, cmd, started, &why)
                .await;
        }
        self.not_sent(cmd, e).await
    }

    /// An error of a call that certainly wrote nothing.
    async fn not_sent(&self, cmd: &Command, e: KareoError) -> WriteResult {
        let key = cmd.ledger_key();
        // Retryable, or an ambiguous failure of the read before an update: nothing written.
        if e.is_retryable() || e.is_ambiguous() {
            self.release(&key).await;
            return WriteResult::of(cmd, WriteStatus::Retry)
                .reason(format!("{e}: nothing was written; send it again later"));
        }
        self.settle(&key, LedgerState::Failed, None, Some(e.to_string()))
            .await;
        let mut r = WriteResult::of(cmd, WriteStatus::Rejected).reason(e.to_string());
        r.kareo_message = e.kareo_text().map(str::to_string);
        r
    }

    async fn reconcile_and_settle(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
        since: DateTime<Utc>,
        why: &str,
    ) -> WriteResult {
        match self.reconcile(tenant, creds, cmd, since).await {
            Ok(Found::One(ids)) => {
                self.done(cmd, ids, true, Some(format!("{why}; found in Kareo")))
                    .await
            }
            Ok(Found::None(what)) => {
                self.review(
                    cmd,
                    format!("{why}; {what}: check Kareo, never re-send under this id"),
                )
                .await
            }
            Ok(Found::Many(n)) => {
                self.review(
                    cmd,
                    format!("{why}; {n} matching records found in Kareo: cannot tell which one this command wrote"),
                )
                .await
            }
            Err(e) => {
                // Could not look: the claim stays pending; the same command sent again after
                // the lease reconciles again.
                WriteResult::of(cmd, WriteStatus::Retry).reason(format!(
                    "{why}; the lookup failed ({}): send the same command again later to reconcile",
                    e.class()
                ))
            }
        }
    }

    /// Looks for what `cmd` would have written.
    async fn reconcile(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
        since: DateTime<Utc>,
    ) -> Result<Found, KareoError> {
        let tz = tenant.timezone;
        let skew = chrono::Duration::from_std(self.skew).unwrap_or_default();
        let from = kareo::dates::format_filter(since - skew, tz);
        let to = kareo::dates::format_filter(self.clock.now() + skew, tz);
        let practice = |m: &mut Map<String, Value>, with_id: bool| {
            m.insert("PracticeName".into(), json!(tenant.kareo.practice));
            if let (true, Some(id)) = (with_id, tenant.kareo.practice_id) {
                m.insert("PracticeID".into(), json!(id.to_string()));
            }
            m.insert("FromCreatedDate".into(), json!(from));
            m.insert("ToCreatedDate".into(), json!(to));
        };
        let date_of = |r: &Record, member: &str| -> Option<NaiveDate> {
            r.get(member)
                .and_then(|s| kareo::dates::parse(s, tz).ok())
                .map(|t| t.with_timezone(&tz).date_naive())
        };
        match &cmd.data {
            Data::CreatePatient(ch) => {
                let val = |k: &str| ch.get(k).cloned().flatten().unwrap_or_default();
                let (first, last, dob) =
                    (val("first_name"), val("last_name"), val("date_of_birth"));
                let mut f = Map::new();
                practice(&mut f, true);
                f.insert("FirstName".into(), json!(first));
                f.insert("LastName".into(), json!(last));
                let recs = self.list(creds, "GetPatients", f).await?;
                let dob = NaiveDate::parse_from_str(&dob, "%Y-%m-%d").ok();
                let ids = distinct(
                    recs.iter().filter(|r| {
                        eq_ci(r.get("FirstName"), &first)
                            && eq_ci(r.get("LastName"), &last)
                            && date_of(r, "DOB") == dob
                    }),
                    "ID",
                );
                Ok(found(ids, "PatientID", "no patient with this name and date of birth was created since the first attempt"))
            }
            Data::UpdatePatient {
                patient_id,
                changes,
            } => match self.patient(creds, *patient_id).await? {
                None => Ok(Found::None(format!("patient {patient_id} not found"))),
                Some(after) => {
                    let diffs = differing(tenant, &after, changes);
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
            },
            Data::CreateAppointment(a) => {
                let mut f = Map::new();
                practice(&mut f, false);
                f.insert("PatientID".into(), json!(a.patient_id.to_string()));
                let recs = self.list(creds, "GetAppointments", f).await?;
                let ids = distinct(
                    recs.iter().filter(|r| {
                        r.get("PatientID").map(str::trim) == Some(a.patient_id.to_string().as_str())
                            && r.get("StartDate")
                                .and_then(|s| kareo::dates::parse(s, tz).ok())
                                == Some(a.start)
                    }),
                    "ID",
                );
                Ok(found(ids, "AppointmentId", "no appointment of this patient at this start time was created since the first attempt"))
            }
            Data::DeleteAppointment { appointment_id } => {
                let op = kareo::op("GetAppointment").expect("in the schema");
                let body = json!({"Appointment": {"AppointmentId": appointment_id}});
                match self.kareo.call(creds, op, &body).await {
                    Ok(resp) => {
                        let deleted = resp
                            .records
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
            }
            Data::CreateEncounter(e) => {
                let mut f = Map::new();
                practice(&mut f, false);
                f.insert("IncludeUnapprovedCharges".into(), json!("T"));
                let recs = self.list(creds, "GetCharges", f).await?;
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
                        || date_of(r, "ServiceStartDate").is_none()
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
                        (r.get("EncounterID"), date_of(r, "ServiceStartDate"))
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
            }
            Data::CreatePayment(p) => {
                let mut f = Map::new();
                practice(&mut f, true);
                f.insert("ReferenceNumber".into(), json!(p.reference_number));
                let recs = self.list(creds, "GetPayments", f).await?;
                let cents = to_cents(&p.amount);
                let ids = distinct(
                    recs.iter().filter(|r| {
                        r.get("ReferenceNumber").map(str::trim) == Some(p.reference_number.as_str())
                            && r.get("Amount").and_then(to_cents) == cents
                            && r.get("PayerType").map(str::trim) == Some(p.payer_type)
                    }),
                    "ID",
                );
                Ok(found(ids, "PaymentID", "no payment with this reference number and amount was created since the first attempt"))
            }
        }
    }

    async fn list(
        &self,
        creds: &Credentials,
        op: &str,
        filter: Map<String, Value>,
    ) -> Result<Vec<Record>, KareoError> {
        let op = kareo::op(op).expect("read operations are in the schema");
        let body = json!({"Fields": {}, "Filter": filter});
        Ok(self.kareo.call(creds, op, &body).await?.records)
    }

    /// A patient's simple members (GetPatient), for a caller's cross-check before a write;
    /// `None` when Kareo has no such patient.
    pub async fn read_patient(
        &self,
        creds: &Credentials,
        patient_id: i64,
    ) -> Result<Option<BTreeMap<String, String>>, KareoError> {
        self.patient(creds, patient_id).await
    }

    /// The patient of an appointment (GetAppointment's `PatientSummary.PatientId`), for a
    /// caller's cross-check; `None` when Kareo has no such appointment or it names none.
    pub async fn appointment_patient(
        &self,
        creds: &Credentials,
        appointment_id: i64,
    ) -> Result<Option<String>, KareoError> {
        let op = kareo::op("GetAppointment").expect("in the schema");
        let body = json!({"Appointment": {"AppointmentId": appointment_id}});
        match self.kareo.call(creds, op, &body).await {
            Ok(resp) => Ok(resp
                .records
                .first()
                .and_then(|r| r.record("PatientSummary"))
                .and_then(|p| p.get("PatientId"))
                .map(str::to_string)),
            Err(KareoError::Api { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Settles a command `needs_review` without calling Kareo: a caller's check before the
    /// write failed (`reason`: ids and classes only). A repeated id answers as stored; a claim
    /// held elsewhere answers `in_progress`.
    pub async fn hold(&self, cmd: &Command, reason: String) -> WriteResult {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        match self
            .ledger
            .claim(&cmd.ledger_key(), &self.owner, now, until)
            .await
        {
            Err(e) => WriteResult::of(cmd, WriteStatus::Retry)
                .reason(format!("ledger unavailable ({})", e.class())),
            Ok(Claim::Done(e)) => stored(cmd, &e, WriteStatus::Done),
            Ok(Claim::NeedsReview(e)) => stored(cmd, &e, WriteStatus::NeedsReview),
            Ok(Claim::Held) => WriteResult::of(cmd, WriteStatus::InProgress)
                .reason("another attempt of this command id is under way"),
            Ok(Claim::New) | Ok(Claim::Expired(_)) => self.review(cmd, reason).await,
        }
    }

    /// A patient's simple members (GetPatient); `None` when Kareo has no such patient.
    async fn patient(
        &self,
        creds: &Credentials,
        patient_id: i64,
    ) -> Result<Option<BTreeMap<String, String>>, KareoError> {
        let op = kareo::op("GetPatient").expect("in the schema");
        let body = json!({"Filter": {"PatientID": patient_id}});
        match self.kareo.call(creds, op, &body).await {
            Ok(resp) => Ok(resp.records.first().filter(|r| r.id().is_some()).map(|r| {
                r.texts()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })),
            Err(KareoError::Api { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn done(
        &self,
        cmd: &Command,
        ids: Value,
        reconciled: bool,
        reason: Option<String>,
    ) -> WriteResult {
        let stored = Stored {
            fp: cmd.fingerprint.clone(),
            kareo: Some(ids.clone()),
            reconciled,
        };
        let remote = remote_id(&ids);
        let ok = self
            .settle_with(
                &cmd.ledger_key(),
                LedgerState::Done,
                remote,
                None,
                Some(&stored),
            )
            .await;
        fail::fail_point!("write.after_settle");
        let mut r = WriteResult::of(cmd, WriteStatus::Done);
        r.kareo = Some(ids);
        r.reconciled = reconciled;
        r.reason = match (reason, ok) {
            (r, true) => r,
            (r, false) => Some(format!(
                "{}the ledger could not be updated: a repeat of this id will reconcile",
                r.map(|r| format!("{r}; ")).unwrap_or_default()
            )),
        };
        r
    }

    async fn review(&self, cmd: &Command, reason: String) -> WriteResult {
        let stored = Stored {
            fp: cmd.fingerprint.clone(),
            kareo: None,
            reconciled: false,
        };
        self.settle_with(
            &cmd.ledger_key(),
            LedgerState::NeedsReview,
            None,
            Some(reason.clone()),
            Some(&stored),
        )
        .await;
        tracing::warn!(tenant = %cmd.tenant, command = %cmd.id, op = cmd.op.name(), "write command needs review");
        WriteResult::of(cmd, WriteStatus::NeedsReview).reason(reason)
    }

    async fn settle(
        &self,
        key: &str,
        state: LedgerState,
        remote_id: Option<String>,
        reason: Option<String>,
    ) {
        self.settle_with(key, state, remote_id, reason, None).await;
    }

    async fn settle_with(
        &self,
        key: &str,
        state: LedgerState,
        remote_id: Option<String>,
        reason: Option<String>,
        stored: Option<&Stored>,
    ) -> bool {
        let entry = LedgerEntry {
            state,
            owner: None,
            until: None,
            remote_id,
            result: stored.and_then(|s| serde_json::to_string(s).ok()),
            reason,
            attempts: 0,
            at: self.clock.now(),
            sending: false,
            expires: None,
        };
        match self.ledger.settle(key, &self.owner, entry).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(class = e.class().name(), "ledger settle failed");
                false
            }
        }
    }

    /// Records that the Kareo call is about to go out (after this, a crash leaves an outcome
    /// to reconcile). If the ledger cannot record it, nothing is sent: the claim is given back
    /// and the caller answers `Retry`.
    async fn begin_sending(&self, cmd: &Command, key: &str) -> Option<WriteResult> {
        match self.ledger.mark_sending(key, &self.owner).await {
            Ok(()) => {
                fail::fail_point!("write.after_mark");
                None
            }
            Err(e) => {
                self.release(key).await;
                Some(WriteResult::of(cmd, WriteStatus::Retry).reason(format!(
                    "ledger unavailable ({}): nothing was sent",
                    e.class()
                )))
            }
        }
    }

    async fn release(&self, key: &str) {
        if let Err(e) = self.ledger.release(key, &self.owner).await {
            tracing::warn!(class = e.class().name(), "ledger release failed");
        }
    }
}

/// The answer to a repeated id: the stored result, unless the command differs.
fn stored(cmd: &Command, e: &LedgerEntry, status: WriteStatus) -> WriteResult {
    let s: Option<Stored> = e
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    if let Some(s) = &s {
        if s.fp != cmd.fingerprint {
            let mut r = WriteResult::of(cmd, WriteStatus::Invalid);
            r.errors = vec![Problem {
                field: "id".into(),
                problem: "already used for a different command (other op or data): use a new id"
                    .into(),
            }];
            return r;
        }
    }
    let mut r = WriteResult::of(cmd, status);
    r.repeated = true;
    r.kareo = s.as_ref().and_then(|s| s.kareo.clone());
    r.reconciled = s.as_ref().is_some_and(|s| s.reconciled);
    r.reason = e.reason.clone();
    r
}

/// The ids of a successful write's answer.
fn ids_of(cmd: &Command, rec: Option<&Record>) -> Option<Value> {
    let rec = rec?;
    let id = |m: &str| rec.i64(m).ok().flatten();
    match &cmd.data {
        Data::CreatePatient(_) => id("PatientID").map(|i| json!({"PatientID": i})),
        Data::UpdatePatient { patient_id, .. } => Some(json!({"PatientID": patient_id})),
        Data::CreateAppointment(_) => id("AppointmentId").map(|i| json!({"AppointmentId": i})),
        Data::DeleteAppointment { appointment_id } => (rec.bool("Deleted").ok().flatten()
            == Some(true))
        .then(|| json!({"AppointmentId": appointment_id, "Deleted": true})),
        Data::CreateEncounter(_) => {
            let lines: Vec<i64> = rec
                .list("ServiceLinesAdded")
                .unwrap_or(&[])
                .iter()
                .filter_map(|n| match n {
                    kareo::Nested::Record(r) => r.i64("ServiceLineID").ok().flatten(),
                    _ => None,
                })
                .collect();
            id("EncounterID").map(|i| json!({"EncounterID": i, "ServiceLineIDs": lines}))
        }
        Data::CreatePayment(_) => id("PaymentID").map(|i| json!({"PaymentID": i})),
    }
}

fn remote_id(ids: &Value) -> Option<String> {
    ["PatientID", "AppointmentId", "EncounterID", "PaymentID"]
        .iter()
        .find_map(|k| ids.get(*k))
        .map(|v| v.to_string())
}

fn distinct<'r>(recs: impl Iterator<Item = &'r Record>, member: &str) -> BTreeSet<String> {
    recs.filter_map(|r| r.get(member))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn found(ids: BTreeSet<String>, key: &str, none: &str) -> Found {
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

fn eq_ci(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim().to_lowercase() == b.trim().to_lowercase())
}

/// The fields of `changes` that `current` (PatientData) does not hold: names only.
fn differing(
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

/// Runs a command given as JSON: checks it, finds its tenant and Kareo credentials, and
/// executes it. Every failure is a [`WriteResult`].
pub async fn run_command<L: Ledger, T: Clock, S: SecretSource>(
    writer: &Writer<'_, L, T>,
    secrets: &S,
    tenants: &[TenantConfig],
    raw: &Value,
) -> WriteResult {
    let cmd = match Command::from_value(raw) {
        Ok(c) => c,
        Err(problems) => return WriteResult::invalid(raw, problems),
    };
    let Some(tenant) = tenants.iter().find(|t| t.tenant == cmd.tenant) else {
        let mut r = WriteResult::of(&cmd, WriteStatus::Invalid);
        r.errors = vec![Problem {
            field: "tenant".into(),
            problem: "no config for this tenant".into(),
        }];
        return r;
    };
    let creds = match kareo_credentials(secrets, &tenant.kareo.secret).await {
        Ok(c) => c,
        Err(e @ SecretError::Unavailable(_)) => {
            return WriteResult::of(&cmd, WriteStatus::Retry).reason(e.to_string())
        }
        Err(e) => return WriteResult::of(&cmd, WriteStatus::Rejected).reason(e.to_string()),
    };
    writer.execute(tenant, &creds, &cmd).await
}
