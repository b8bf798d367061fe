//! Running a write command exactly once: the ledger protocol of task creation, applied to
//! Kareo writes (see the module docs of [`crate::write`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::ports::*;
use domain::tenant::TenantConfig;
use kareo::{Credentials, KareoError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::kareo::KareoCall;
use super::ops::{self, Answer, Found, Kareo};
use crate::write::command::{Command, Problem};

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
    /// The caller may not write for this tenant (not in its `writers:`, or a direct invoke
    /// where the deployment does not accept them); nothing was read or sent.
    Forbidden,
}

impl WriteStatus {
    /// The CLI's exit code: 0 done, 2 invalid, 3 rejected, 4 needs review, 5 retry later,
    /// 6 forbidden.
    pub fn exit_code(self) -> u8 {
        match self {
            WriteStatus::Done => 0,
            WriteStatus::Forbidden => 6,
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
            WriteStatus::Forbidden => 403,
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

/// Runs write commands against Kareo, exactly once per (tenant, command id).
pub struct Writer<'a, L, T> {
    /// Kareo.
    pub kareo: &'a dyn KareoCall,
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
    pub fn new(kareo: &'a dyn KareoCall, ledger: &'a L, clock: &'a T, owner: String) -> Self {
        Writer {
            kareo,
            ledger,
            clock,
            owner,
            lease: kareo.timeout() + Duration::from_secs(60),
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
        let op = ops::of(cmd.op);
        let k = Kareo {
            port: self.kareo,
            creds,
            tenant,
        };
        let current = match op.reads(&cmd.data) {
            None => None,
            Some(read) => match match &read {
                ops::Read::Patient(id) => k.patient(*id).await,
                ops::Read::Appointment(id) => k.appointment(*id).await,
            } {
                Ok(Some(c)) => Some(c),
                Ok(None) => {
                    let reason = match read {
                        ops::Read::Patient(id) => format!("patient {id} not found in Kareo"),
                        ops::Read::Appointment(id) => {
                            format!("appointment {id} not found in Kareo")
                        }
                    };
                    self.settle(&key, LedgerState::Failed, None, Some(reason.clone()))
                        .await;
                    return WriteResult::of(cmd, WriteStatus::Rejected).reason(reason);
                }
                Err(e) => return self.not_sent(cmd, e).await,
            },
        };
        let body = match op.request(&cmd.data, tenant, current.as_ref()) {
            Ok(b) => b,
            Err(p) => {
                self.release(&key).await;
                let mut r = WriteResult::of(cmd, WriteStatus::Invalid);
                r.errors = vec![p];
                return r;
            }
        };
        if let Some(r) = self.begin_sending(cmd, &key).await {
            return r;
        }
        match self.kareo.call(creds, op.kareo_op(), &body).await {
            Ok(records) => {
                fail::fail_point!("write.after_kareo_write");
                match op.answered(&cmd.data, &records, &k).await {
                    Answer::Done(ids, note) => self.done(cmd, ids, false, note).await,
                    Answer::Review(reason) => self.review(cmd, reason).await,
                    Answer::Unknown(why) => {
                        self.reconcile_and_settle(tenant, creds, cmd, now, why)
                            .await
                    }
                }
            }
            Err(e) => self.failed(tenant, creds, cmd, e, now).await,
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

    /// Looks for what `cmd` would have written since `since` (widened by the skew).
    async fn reconcile(
        &self,
        tenant: &TenantConfig,
        creds: &Credentials,
        cmd: &Command,
        since: DateTime<Utc>,
    ) -> Result<Found, KareoError> {
        let skew = chrono::Duration::from_std(self.skew).unwrap_or_default();
        let k = Kareo {
            port: self.kareo,
            creds,
            tenant,
        };
        ops::of(cmd.op)
            .reconcile(&cmd.data, &k, since - skew, self.clock.now() + skew)
            .await
    }

    /// A patient's simple members (GetPatient), for a caller's cross-check before a write;
    /// `None` when Kareo has no such patient.
    pub async fn read_patient(
        &self,
        creds: &Credentials,
        patient_id: i64,
    ) -> Result<Option<BTreeMap<String, String>>, KareoError> {
        ops::patient(self.kareo, creds, patient_id).await
    }

    /// The patient of an appointment (GetAppointment's `PatientSummary.PatientId`), for a
    /// caller's cross-check; `None` when Kareo has no such appointment or it names none.
    pub async fn appointment_patient(
        &self,
        creds: &Credentials,
        appointment_id: i64,
    ) -> Result<Option<String>, KareoError> {
        Ok(ops::appointment(self.kareo, creds, appointment_id)
            .await?
            .and_then(|a| a.get("PatientId").cloned()))
    }

    /// The patient of an encounter (GetEncounterDetails' `PatientID`), for a caller's
    /// cross-check; `None` when Kareo has no such encounter.
    pub async fn encounter_patient(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        encounter_id: i64,
    ) -> Result<Option<String>, KareoError> {
        Ok(ops::encounter(self.kareo, creds, tenant, encounter_id)
            .await?
            .and_then(|e| e.get("PatientID").map(|p| p.trim().to_string()))
            .filter(|p| !p.is_empty()))
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

fn remote_id(ids: &Value) -> Option<String> {
    ["PatientID", "AppointmentId", "EncounterID", "PaymentID"]
        .iter()
        .find_map(|k| ids.get(*k))
        .map(|v| v.to_string())
}

/// Who sent a write command.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    /// An IAM principal proven by the Function URL (`requestContext.authorizer.iam.userArn`):
    /// it must be in the tenant's `writers:`.
    Principal(&'a str),
    /// The operator, where no principal is named: the CLI on the operator's machine, or a
    /// direct invoke where the deployment accepts them (`WriteDirectInvoke: enabled`). The
    /// label is logged (`cli`, `direct_invoke`).
    Operator(&'static str),
}

impl Caller<'_> {
    /// What the log names: the principal's ARN (no PHI), or the operator path's label.
    pub fn label(&self) -> &str {
        match self {
            Caller::Principal(arn) => arn,
            Caller::Operator(label) => label,
        }
    }
}

/// The answer to a caller refused before anything was read: the id, tenant and op as sent.
pub fn forbidden(raw: &Value, why: &str) -> WriteResult {
    let mut r = WriteResult::invalid(raw, Vec::new());
    r.status = WriteStatus::Forbidden;
    r.reason = Some(why.to_string());
    r
}

/// Runs a command given as JSON: checks it, finds its tenant, checks the caller against the
/// tenant's `writers:`, reads the Kareo credentials and executes it. Every failure is a
/// [`WriteResult`]; a refused caller reaches no secret and no Kareo. Logs the caller of every
/// command it runs (ARN, command id, tenant, op: no PHI).
pub async fn run_command<L: Ledger, T: Clock, S: SecretSource>(
    writer: &Writer<'_, L, T>,
    secrets: &S,
    tenants: &[TenantConfig],
    raw: &Value,
    caller: Caller<'_>,
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
    if let Caller::Principal(arn) = caller {
        if !tenant.writers.allows(arn) {
            tracing::warn!(
                caller = arn,
                tenant = %cmd.tenant,
                command = %cmd.id,
                op = cmd.op.name(),
                listed = tenant.writers.len(),
                "write refused: the caller is not in the tenant's writers"
            );
            return WriteResult::of(&cmd, WriteStatus::Forbidden)
                .reason("the caller is not in this tenant's `writers:` (nothing was sent)");
        }
    }
    tracing::info!(
        caller = caller.label(),
        tenant = %cmd.tenant,
        command = %cmd.id,
        op = cmd.op.name(),
        "write command"
    );
    let creds = match kareo_credentials(secrets, &tenant.kareo.secret).await {
        Ok(c) => c,
        Err(e @ SecretError::Unavailable(_)) => {
            return WriteResult::of(&cmd, WriteStatus::Retry).reason(e.to_string())
        }
        Err(e) => return WriteResult::of(&cmd, WriteStatus::Rejected).reason(e.to_string()),
    };
    writer.execute(tenant, &creds, &cmd).await
}

/// The executor's protocol against a scripted Kareo (the port), without a simulator: each test
/// names the calls it expects, in order, and what Kareo answers; a call nobody scripted fails
/// the test.
#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use domain::local::LocalStore;
    use futures_util::future::BoxFuture;
    use kareo::{Family, Record};
    use serde_json::json;

    use super::*;

    type Reply = Result<Vec<Record>, KareoError>;

    struct Scripted {
        script: Mutex<VecDeque<(&'static str, Reply)>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Scripted {
        fn new(script: Vec<(&'static str, Reply)>) -> Scripted {
            Scripted {
                script: Mutex::new(script.into()),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
        fn done(&self) -> bool {
            self.script.lock().unwrap().is_empty()
        }
    }

    impl KareoCall for Scripted {
        fn call<'a>(
            &'a self,
            _creds: &'a Credentials,
            op: &'static str,
            _body: &'a Value,
        ) -> BoxFuture<'a, Result<Vec<Record>, KareoError>> {
            self.calls.lock().unwrap().push(op);
            let (want, reply) = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| panic!("unscripted call {op}"));
            assert_eq!(op, want, "calls out of order");
            Box::pin(async move { reply })
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(30)
        }
    }

    struct Fixed(DateTime<Utc>);
    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn tenant() -> TenantConfig {
        TenantConfig::from_yaml(
            "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: k\n  practice: Acme\n  practice_id: 1\ndock:\n  secret: d\nfamilies:\n  patients: {}\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn command(id: &str, op: &str, data: Value) -> Command {
        Command::from_value(&json!({"id": id, "tenant": "acme", "op": op, "data": data})).unwrap()
    }

    fn new_patient() -> Command {
        command(
            "c-1",
            "CreatePatient",
            json!({"first_name": "Ada", "last_name": "Lovelace", "date_of_birth": "1985-12-10"}),
        )
    }

    fn answer(op: &str, members: &[(&str, &str)]) -> Vec<Record> {
        let mut r = Record::new(kareo::op(op).unwrap().response);
        for (k, v) in members {
            assert!(r.set(k, v), "{op} has no member {k}");
        }
        vec![r]
    }

    fn patient(members: &[(&str, &str)]) -> Vec<Record> {
        let mut r = Record::new(Family::Patients.data_type().id());
        for (k, v) in members {
            assert!(r.set(k, v), "PatientData has no member {k}");
        }
        vec![r]
    }

    async fn run(kareo: &Scripted, ledger: &LocalStore, cmd: &Command) -> WriteResult {
        let clock = Fixed("2026-10-01T15:00:00Z".parse().unwrap());
        let writer = Writer::new(kareo, ledger, &clock, "test".into());
        writer
            .execute(&tenant(), &Credentials::placeholder(), cmd)
            .await
    }

    #[tokio::test]
    async fn a_create_is_sent_once_and_a_repeat_answers_from_the_ledger() {
        let kareo = Scripted::new(vec![(
            "CreatePatient",
            Ok(answer("CreatePatient", &[("PatientID", "42")])),
        )]);
        let ledger = LocalStore::memory();
        let r = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(r.status, WriteStatus::Done, "{r:?}");
        assert_eq!(r.kareo, Some(json!({"PatientID": 42})));
        let again = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(again.status, WriteStatus::Done);
        assert!(again.repeated);
        assert_eq!(again.kareo, Some(json!({"PatientID": 42})));
        assert_eq!(
            kareo.calls(),
            ["CreatePatient"],
            "the repeat called nothing"
        );
    }

    #[tokio::test]
    async fn a_timeout_after_sending_is_reconciled_and_never_resent() {
        let timeout = KareoError::Timeout {
            op: "CreatePatient",
            after: Duration::from_secs(30),
            sent: true,
        };
        let found = patient(&[
            ("ID", "7"),
            ("FirstName", "ada"),
            ("LastName", "Lovelace"),
            ("DOB", "1985-12-10T00:00:00"),
        ]);
        let kareo = Scripted::new(vec![
            ("CreatePatient", Err(timeout)),
            ("GetPatients", Ok(found)),
        ]);
        let ledger = LocalStore::memory();
        let r = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(r.status, WriteStatus::Done, "{r:?}");
        assert!(r.reconciled);
        assert_eq!(r.kareo, Some(json!({"PatientID": 7})));
        assert_eq!(kareo.calls(), ["CreatePatient", "GetPatients"]);
    }

    #[tokio::test]
    async fn an_unknown_outcome_with_nothing_found_needs_review() {
        let timeout = KareoError::Timeout {
            op: "CreatePatient",
            after: Duration::from_secs(30),
            sent: true,
        };
        let kareo = Scripted::new(vec![
            ("CreatePatient", Err(timeout)),
            ("GetPatients", Ok(Vec::new())),
        ]);
        let ledger = LocalStore::memory();
        let r = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(r.status, WriteStatus::NeedsReview, "{r:?}");
        let again = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(again.status, WriteStatus::NeedsReview);
        assert!(again.repeated, "never re-sent");
        assert!(kareo.done());
    }

    #[tokio::test]
    async fn a_throttle_before_sending_gives_the_claim_back() {
        let throttled = KareoError::Throttled {
            op: "CreatePatient",
            interval: Duration::from_secs(1),
        };
        let kareo = Scripted::new(vec![
            ("CreatePatient", Err(throttled)),
            (
                "CreatePatient",
                Ok(answer("CreatePatient", &[("PatientID", "43")])),
            ),
        ]);
        let ledger = LocalStore::memory();
        let r = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(r.status, WriteStatus::Retry, "{r:?}");
        let r = run(&kareo, &ledger, &new_patient()).await;
        assert_eq!(r.status, WriteStatus::Done, "{r:?}");
        assert!(!r.repeated);
        assert!(kareo.done());
    }

    #[tokio::test]
    async fn an_update_is_read_modified_written_and_verified() {
        let before = [("ID", "3"), ("FirstName", "Ada"), ("City", "Boston")];
        let kareo = Scripted::new(vec![
            ("GetPatient", Ok(patient(&before))),
            ("UpdatePatient", Ok(Vec::new())),
            // Kareo answered success but kept the old city.
            ("GetPatient", Ok(patient(&before))),
        ]);
        let ledger = LocalStore::memory();
        let cmd = command(
            "u-1",
            "UpdatePatient",
            json!({"patient_id": 3, "city": "Cambridge"}),
        );
        let r = run(&kareo, &ledger, &cmd).await;
        assert_eq!(r.status, WriteStatus::NeedsReview, "{r:?}");
        assert!(r.reason.as_deref().unwrap_or("").contains("city"), "{r:?}");
        assert!(!r.reason.as_deref().unwrap_or("").contains("Cambridge"));
        assert!(kareo.done());
    }

    #[tokio::test]
    async fn an_update_of_a_patient_kareo_does_not_have_is_rejected_unsent() {
        let missing = KareoError::Api {
            op: "GetPatient",
            text: "not found".into(),
        };
        let kareo = Scripted::new(vec![("GetPatient", Err(missing))]);
        let ledger = LocalStore::memory();
        let cmd = command(
            "u-2",
            "UpdatePatient",
            json!({"patient_id": 9, "city": "Cambridge"}),
        );
        let r = run(&kareo, &ledger, &cmd).await;
        assert_eq!(r.status, WriteStatus::Rejected, "{r:?}");
        assert_eq!(kareo.calls(), ["GetPatient"], "nothing was sent");
    }
}
