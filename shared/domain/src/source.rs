//! What the poller reads from Kareo, as a port ([`KareoSource`]) with its implementation over
//! the Kareo client: list reads by last-modified window, an encounter or an appointment by id,
//! and GetAllPatients pages.

use std::future::Future;

use chrono::{DateTime, Utc};
use kareo::schema::Ty;
use kareo::{Credentials, Family, KareoClient, KareoError, Record};
use serde_json::{json, Map, Value};

use crate::tenant::TenantConfig;

/// Kareo reads the poller needs.
pub trait KareoSource: Send + Sync {
    /// Before the first read of an account in this process: Kareo's live throttle intervals
    /// (GetThrottles), once per account per container start. A failure is the caller's to
    /// weigh (refused credentials stop the run; anything else leaves the documented table).
    fn prepare(&self, creds: &Credentials) -> impl Future<Output = Result<(), KareoError>> + Send;

    /// The records of `family` modified in `[from, to]` (both ends inclusive), at most `cap`
    /// of them: a window with more is one the caller splits, and is not read further.
    fn window(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        family: Family,
        span: (DateTime<Utc>, DateTime<Utc>),
        cap: usize,
    ) -> impl Future<Output = Result<Vec<Record>, KareoError>> + Send;

    /// One encounter's details (GetEncounterDetails).
    fn encounter(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        encounter_id: &str,
    ) -> impl Future<Output = Result<Option<Record>, KareoError>> + Send;

    /// One patient (GetPatient).
    fn patient(
        &self,
        creds: &Credentials,
        patient_id: i64,
    ) -> impl Future<Output = Result<Option<Record>, KareoError>> + Send;

    /// One appointment (GetAppointment: the typed shape with `IsDeleted`); `None` when Kareo
    /// does not know the id (it answers "Appointment not found.").
    fn appointment(
        &self,
        creds: &Credentials,
        appointment_id: i64,
    ) -> impl Future<Output = Result<Option<Record>, KareoError>> + Send;

    /// A GetAllPatients page from `start_key`; returns the records and the next key.
    fn all_patients(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        start_key: i64,
        batch: i32,
    ) -> impl Future<Output = Result<(Vec<Record>, Option<i64>), KareoError>> + Send;
}

/// The filter of a window read of `family` for `tenant`: the last-modified pair in the
/// practice's zone, the practice (name, and `practice_id` where the filter has the member),
/// and what else the family needs (unapproved charges).
pub fn window_body(
    tenant: &TenantConfig,
    practice_id: Option<i64>,
    family: Family,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let tz = tenant.timezone;
    let mut filter = Map::new();
    filter.insert(
        "FromLastModifiedDate".into(),
        json!(kareo::dates::format_filter(from, tz)),
    );
    filter.insert(
        "ToLastModifiedDate".into(),
        json!(kareo::dates::format_filter(to, tz)),
    );
    if let Some(ft) = filter_type(family) {
        if ft.member("PracticeName").is_some() {
            filter.insert("PracticeName".into(), json!(tenant.kareo.practice));
        }
        if let (Some(id), Some(_)) = (practice_id, ft.member("PracticeID")) {
            filter.insert("PracticeID".into(), json!(id.to_string()));
        }
        if ft.member("IncludeUnapprovedCharges").is_some() {
            filter.insert("IncludeUnapprovedCharges".into(), json!("T"));
        }
    }
    json!({"Fields": {}, "Filter": filter})
}

/// The StartDate slices an appointments window is read in when the account needs them:
/// from 30 days before `now` (the window's upper bound) to `horizon` after it, 59 days each
/// (Kareo faults on more than 60, and a DST change lengthens a wall-clock range by an hour).
pub fn start_date_slices(
    now: DateTime<Utc>,
    horizon: std::time::Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let end = now + chrono::Duration::from_std(horizon).unwrap_or_default();
    let mut a = now - chrono::Duration::days(30);
    let mut out = Vec::new();
    while a < end {
        let b = (a + chrono::Duration::days(59)).min(end);
        out.push((a, b));
        a = b;
    }
    out
}

/// The posting-date slices a charges window is read in when the account needs them: from
/// `horizon` before `now` (the window's upper bound) to 59 days after it — a charge changed
/// in the window may carry a later posting date (a catch-up window read weeks after, a
/// post-dated charge) — 59 days each (Kareo answers nothing for a posting window over 60).
pub fn posting_date_slices(
    now: DateTime<Utc>,
    horizon: std::time::Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let end = now + chrono::Duration::days(59);
    let mut a = now - chrono::Duration::from_std(horizon).unwrap_or_default();
    let mut out = Vec::new();
    while a < end {
        let b = (a + chrono::Duration::days(59)).min(end);
        out.push((a, b));
        a = b;
    }
    out
}

/// The filter members a read's date slices set: GetAppointments' `StartDate`/`EndDate`,
/// GetCharges' posting-date pair.
fn slice_members(read: Family) -> (&'static str, &'static str) {
    match read {
        Family::Charges => ("FromPostingDate", "ToPostingDate"),
        _ => ("StartDate", "EndDate"),
    }
}

/// The type of `family`'s read filter.
fn filter_type(family: Family) -> Option<&'static kareo::schema::TypeDef> {
    kareo::op(family.op())
        .and_then(|o| o.request.def().member("Filter"))
        .and_then(|m| match m.ty {
            Ty::Complex(t) => Some(t.def()),
            _ => None,
        })
}

/// The tenant's PracticeID: the config's, else resolved from its practice name (GetPractices,
/// once per process). The guide requires it on GetPatients, GetServiceLocations and
/// GetEncounterDetails; a name Kareo does not know sends none (the read then names the
/// problem).
async fn practice_id(
    client: &KareoClient,
    creds: &Credentials,
    tenant: &TenantConfig,
) -> Result<Option<i64>, KareoError> {
    match tenant.kareo.practice_id {
        Some(id) => Ok(Some(id)),
        None => client.practice_id(creds, &tenant.kareo.practice).await,
    }
}

/// The records of `read`'s list operation modified in `[from, to]`: one call, or one per
/// date slice of `starts` — StartDate slices for appointments, posting-date slices for
/// charges (a record on a slice's edge may come twice; the poller keeps one). The PracticeID
/// is resolved only where the filter has the member.
pub async fn read_window(
    client: &KareoClient,
    creds: &Credentials,
    tenant: &TenantConfig,
    read: Family,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    starts: &[(DateTime<Utc>, DateTime<Utc>)],
    cap: usize,
) -> Result<Vec<Record>, KareoError> {
    let op = kareo::op(read.op()).expect("every family's read is in the schema");
    let practice = match filter_type(read).and_then(|t| t.member("PracticeID")) {
        Some(_) => practice_id(client, creds, tenant).await?,
        None => None,
    };
    let body = window_body(tenant, practice, read, from, to);
    if starts.is_empty() {
        return Ok(client.call_up_to(creds, op, &body, cap).await?.records);
    }
    let mut records = Vec::new();
    let (lo, hi) = slice_members(read);
    for (a, b) in starts {
        if records.len() >= cap {
            break;
        }
        let mut body = body.clone();
        body["Filter"][lo] = json!(kareo::dates::format_filter(*a, tenant.timezone));
        body["Filter"][hi] = json!(kareo::dates::format_filter(*b, tenant.timezone));
        let left = cap - records.len();
        records.extend(client.call_up_to(creds, op, &body, left).await?.records);
    }
    Ok(records)
}

impl KareoSource for KareoClient {
    async fn prepare(&self, creds: &Credentials) -> Result<(), KareoError> {
        self.throttles_once(creds).await.map(|_| ())
    }

    async fn window(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        family: Family,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        cap: usize,
    ) -> Result<Vec<Record>, KareoError> {
        let read = match family {
            Family::Encounters => Family::Charges,
            f => f,
        };
        // An account whose GetAppointments applies its default StartDate window even with a
        // last-modified pair is read in StartDate slices over the configured horizon.
        // Likewise charges (and the encounters read through them) in posting-date slices for
        // an account whose GetCharges applies an implicit posting window.
        let settings = tenant.family(family);
        let starts = match (family, settings) {
            (Family::Appointments, Some(s)) => {
                s.start_date_horizon.map(|h| start_date_slices(to, h))
            }
            (Family::Charges | Family::Encounters, Some(s)) => {
                s.posting_date_horizon.map(|h| posting_date_slices(to, h))
            }
            _ => None,
        }
        .unwrap_or_default();
        read_window(self, creds, tenant, read, (from, to), &starts, cap).await
    }

    async fn encounter(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        encounter_id: &str,
    ) -> Result<Option<Record>, KareoError> {
        let mut practice = Map::new();
        if let Some(id) = practice_id(self, creds, tenant).await? {
            practice.insert("PracticeID".into(), json!(id.to_string()));
        }
        practice.insert("PracticeName".into(), json!(tenant.kareo.practice));
        let body =
            json!({"Fields": {}, "Filter": {"EncounterID": encounter_id, "Practice": practice}});
        let op = kareo::op("GetEncounterDetails").expect("in the schema");
        Ok(self
            .call(creds, op, &body)
            .await?
            .records
            .into_iter()
            .next())
    }

    async fn patient(
        &self,
        creds: &Credentials,
        patient_id: i64,
    ) -> Result<Option<Record>, KareoError> {
        let body = json!({"Filter": {"PatientID": patient_id}});
        let op = kareo::op("GetPatient").expect("in the schema");
        Ok(self
            .call(creds, op, &body)
            .await?
            .records
            .into_iter()
            .next())
    }

    async fn appointment(
        &self,
        creds: &Credentials,
        appointment_id: i64,
    ) -> Result<Option<Record>, KareoError> {
        let body = json!({"Appointment": {"AppointmentId": appointment_id}});
        let op = kareo::op("GetAppointment").expect("in the schema");
        match self.call(creds, op, &body).await {
            Ok(r) => Ok(r.records.into_iter().next()),
            // Kareo answers an id it does not know with an API error, not an empty answer.
            Err(KareoError::Api { ref text, .. }) if text.to_lowercase().contains("not found") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn all_patients(
        &self,
        creds: &Credentials,
        tenant: &TenantConfig,
        start_key: i64,
        batch: i32,
    ) -> Result<(Vec<Record>, Option<i64>), KareoError> {
        let mut filter = json!({"BatchSize": batch, "StartKey": start_key});
        if let Some(id) = practice_id(self, creds, tenant).await? {
            filter["PracticeID"] = json!(id);
        }
        let op = kareo::op("GetAllPatients").expect("in the schema");
        let resp = self
            .call(creds, op, &json!({"Fields": {}, "Filter": filter}))
            .await?;
        Ok((resp.records, resp.next_start_key))
    }
}
