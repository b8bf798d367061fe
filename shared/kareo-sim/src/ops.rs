//! What each operation does with a deserialized request.

use std::collections::HashSet;
use std::time::Instant;

use crate::clock::{iso as format_datetime, stamp as format_response};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use kareo::schema::{self, OpDef, Ty};

use crate::data::{confirmation_to_status, encounter_status_code, status_to_confirmation};
use crate::xmlin::{Obj, Val};
use crate::xmlout::{error_response, guid_string, security_response, Auth, Out, Sel};
use crate::{Family, Outcome, Row, SimConfig, State, Store};

/// What the server should send.
pub(crate) enum Handled {
    /// HTTP 200 with this result.
    Doc {
        result: Vec<(&'static str, Out)>,
        outcome: Outcome,
        creds: bool,
        records: usize,
    },
    /// HTTP 500 SOAP fault.
    Fault {
        code: &'static str,
        text: String,
        creds: bool,
    },
    /// GetPatients in bulk mode.
    Bulk { n: u64, sel: Sel },
}

enum Err {
    App(String),
    Internal,
}

type Payload = (Vec<(&'static str, Out)>, usize);

fn app<T>(msg: impl Into<String>) -> Result<T, Err> {
    Err(Err::App(msg.into()))
}

const BAD_NUMBER: &str = "Input string was not in a correct format.";
const BAD_DATE: &str = "String was not recognized as a valid DateTime.";

/// The throttle's message, as Kareo's guide quotes it.
pub(crate) fn throttle_text(op: &str, ms: u64) -> String {
    format!("429: {op} endpoint requested more than allowed over time interval {ms} milliseconds. Please wait to try again.")
}

/// What the security check finds for this request, the user having failed `failed_sign_ins`
/// times so far (counting is [`handle`]'s: this is also asked before faults are injected).
pub(crate) fn check_auth(cfg: &SimConfig, failed_sign_ins: u32, op: &OpDef, req: &Obj) -> Auth {
    let empty = Obj::default();
    let h = if op.name == "GetCustomerIdFromKey" {
        req
    } else {
        req.obj("RequestHeader").unwrap_or(&empty)
    };
    let key = h.text("CustomerKey");
    if key != Some(cfg.customer_key.as_str())
        && !key.is_some_and(|k| cfg.other_customer_keys.iter().any(|o| o == k))
    {
        return Auth::BadKey;
    }
    let user = h.text("User") == Some(cfg.user.as_str());
    if user && cfg.lockout_after.is_some_and(|n| failed_sign_ins >= n) {
        return Auth::Locked;
    }
    if !user {
        return Auth::BadUser;
    }
    if h.text("Password") != Some(cfg.password.as_str()) {
        return Auth::BadPassword;
    }
    if cfg.denied.iter().any(|d| d == op.name) {
        return Auth::Denied;
    }
    Auth::Ok
}

// Long: one arm per Kareo operation.
pub(crate) fn handle(
    cfg: &SimConfig,
    st: &mut State,
    op: &'static OpDef,
    req: Option<Obj>,
) -> Handled {
    let Some(req) = req else {
        return internal(false);
    };
    let auth = check_auth(cfg, st.failed_sign_ins, op, &req);
    if auth == Auth::BadPassword {
        st.failed_sign_ins += 1;
    }
    let creds = auth == Auth::Ok;
    if op.name == "GetCustomerIdFromKey" {
        let mut result = vec![("IsAuthorized", Out::Text(creds.to_string()))];
        if creds {
            result.push(("CustomerId", Out::Text(cfg.customer_id.to_string())));
        }
        return Handled::Doc {
            result,
            outcome: if creds {
                Outcome::Ok
            } else {
                Outcome::AuthFailed
            },
            creds,
            records: 0,
        };
    }
    let sec = || security_response(auth, cfg.customer_id, cfg.practice_id, op.name);
    if !creds {
        return Handled::Doc {
            result: vec![
                ("ErrorResponse", error_response(None)),
                ("SecurityResponse", sec()),
            ],
            outcome: Outcome::AuthFailed,
            creds,
            records: 0,
        };
    }
    if cfg.enforce_throttle {
        let ms = crate::guide::interval_ms(op.name);
        let now = Instant::now();
        if let Some(prev) = st.last_accepted.get(op.name) {
            if now.duration_since(*prev) < std::time::Duration::from_millis(ms) {
                if cfg.reality.throttle_counts_rejected {
                    st.last_accepted.insert(op.name, now);
                }
                return Handled::Doc {
                    result: vec![
                        (
                            "ErrorResponse",
                            error_response(Some(&throttle_text(op.name, ms))),
                        ),
                        ("SecurityResponse", sec()),
                    ],
                    outcome: Outcome::Throttled,
                    creds,
                    records: 0,
                };
            }
        }
        st.last_accepted.insert(op.name, now);
    }
    if op.name == "GetPatients" {
        if let Some(n) = st.bulk_patients {
            if req.obj("Filter").is_none() {
                return internal(creds);
            }
            return Handled::Bulk {
                n,
                sel: selection(req.obj("Fields")),
            };
        }
    }
    let mut cx = Cx {
        cfg,
        tz: cfg.timezone,
        now: st.now,
        store: &mut st.store,
    };
    let res = match op.name {
        "GetAppointment" => cx.get_appointment(&req),
        "GetPatient" => cx.get_patient(&req),
        "GetAllPatients" => cx.get_all_patients(op, &req),
        "GetEncounterDetails" => cx.get_encounter_details(op, &req),
        "GetThrottles" => Ok(get_throttles(cfg.enforce_throttle)),
        "CreateAppointment" => cx.create_appointment(&req),
        "DeleteAppointment" => cx.delete_appointment(&req),
        "UpdateAppointment" => cx.update_appointment(&req),
        "UpdateEncounterStatus" => cx.update_encounter_status(&req),
        "CreatePatient" => cx.modify_patient(&req, false),
        "UpdatePatient" => cx.modify_patient(&req, true),
        "CreateEncounter" => cx.create_encounter(&req),
        "CreatePayment" => cx.create_payment(&req),
        _ => match family_of(op.name) {
            Some(f) => cx.list(op, f, &req),
            None => Err(Err::Internal),
        },
    };
    match res {
        Ok((mut payload, records)) => {
            let mut result = vec![
                ("ErrorResponse", error_response(None)),
                ("SecurityResponse", sec()),
            ];
            result.append(&mut payload);
            Handled::Doc {
                result,
                outcome: Outcome::Ok,
                creds,
                records,
            }
        }
        Err(Err::App(msg)) => Handled::Doc {
            result: vec![
                ("ErrorResponse", error_response(Some(&msg))),
                ("SecurityResponse", sec()),
            ],
            outcome: Outcome::AppError,
            creds,
            records: 0,
        },
        Err(Err::Internal) => internal(creds),
    }
}

fn internal(creds: bool) -> Handled {
    Handled::Fault {
        code: "InternalServiceFault",
        text: crate::xmlout::INTERNAL_FAULT_TEXT.to_string(),
        creds,
    }
}

fn family_of(op: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| f.op() == op)
}

/// The members whose Fields flag is `true`; none → every member.
pub(crate) fn selection(fields: Option<&Obj>) -> Sel {
    let set: HashSet<&'static str> = fields?
        .fields
        .iter()
        .filter(|(_, v)| matches!(v, Val::Text(t) if t == "true" || t == "1"))
        .map(|(n, _)| *n)
        .collect();
    if set.is_empty() {
        None
    } else {
        Some(set)
    }
}

/// GetThrottles: the intervals the simulator enforces (none when it does not throttle).
fn get_throttles(enforced: bool) -> Payload {
    let items: Vec<Out> = schema::OPS
        .iter()
        .map(|o| {
            let ms = if enforced {
                crate::guide::interval_ms(o.name)
            } else {
                0
            };
            Out::Obj(vec![
                ("Endpoint", Out::Text(o.name.to_string())),
                ("ThrottleTimeMs", Out::Text(ms.to_string())),
            ])
        })
        .collect();
    let n = items.len();
    (vec![("ThrottleDetails", Out::List(items))], n)
}

fn eq_ci(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase() {
        return true;
    }
    matches!((boolish(a), boolish(b)), (Some(x), Some(y)) if x == y)
}

fn boolish(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

fn parse_id(s: &str) -> Result<i64, Err> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| Err::App(BAD_NUMBER.into()))
}

/// An `xs:dateTime` value: with an offset as given, without one as UTC.
/// An `xs:dateTime`; one without an offset (a date of service, `2026-09-29T00:00:00`) is a
/// practice-local time, as WCF keeps an unspecified `DateTime` as written.
fn parse_xs(s: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if !crate::clock::is_xs_datetime(s) {
        return None;
    }
    crate::clock::read(s, tz)
}

/// An appointment time of a write, read as the reality says (see
/// [`crate::Reality::write_times_wall_clock`]).
fn write_time(cfg: &SimConfig, s: &str) -> Option<DateTime<Utc>> {
    if !cfg.reality.write_times_wall_clock {
        return parse_xs(s, cfg.timezone);
    }
    if !crate::clock::is_xs_datetime(s) {
        return None;
    }
    crate::clock::read(s.get(..19)?, cfg.timezone)
}

struct Cx<'a> {
    cfg: &'a SimConfig,
    tz: Tz,
    now: DateTime<Utc>,
    store: &'a mut Store,
}

/// An interval of instants, both ends inclusive.
type Span = (DateTime<Utc>, DateTime<Utc>);

struct Range {
    key: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    from_exclusive: bool,
    to_exclusive: bool,
}

impl Cx<'_> {
    /// The version stamp of a change made now, as [`crate::Reality`] writes it.
    fn stamp(&self) -> String {
        self.cfg.reality.stamp(self.now, self.tz)
    }

    /// `IsError` "PracticeID is required." when the reality requires it and `id` is absent.
    fn require_practice_id(&self, id: Option<&str>) -> Result<(), Err> {
        if self.cfg.reality.practice_id_required && id.is_none_or(|s| s.trim().is_empty()) {
            return app("PracticeID is required.");
        }
        Ok(())
    }

    fn date(&self, s: &str) -> Result<DateTime<Utc>, Err> {
        crate::clock::read(s, self.tz).ok_or_else(|| Err::App(BAD_DATE.into()))
    }

    /// An upper bound: as [`Self::date`], except that a date-only one covers its whole day
    /// where the reality says so.
    fn to_date(&self, s: &str) -> Result<DateTime<Utc>, Err> {
        let t = self.date(s)?;
        let date_only = !s.trim().contains([':', 'T', ' ']);
        if date_only && self.cfg.reality.date_only_to_end_of_day {
            return Ok(t + Duration::days(1) - Duration::milliseconds(1));
        }
        Ok(t)
    }

    fn practice_matches(&self, id: Option<&str>, name: Option<&str>) -> Result<bool, Err> {
        if let Some(id) = id {
            if parse_id(id)? != self.cfg.practice_id {
                return Ok(false);
            }
        }
        if let Some(name) = name {
            if !eq_ci(name, &self.cfg.practice_name) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_max(&self, n: usize) -> Result<(), Err> {
        match self.cfg.max_records {
            Some(max) if n > max => Err(Err::Internal),
            _ => Ok(()),
        }
    }

    /// The date ranges of a filter (From/To pairs, a lone half defaulting the other to ±7 days).
    fn ranges(&self, family: Family, filter: &Obj) -> Result<Vec<Range>, Err> {
        let item = family.data_type();
        let mut out = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        for (name, v) in &filter.fields {
            let Val::Text(_) = v else { continue };
            let x = match name
                .strip_prefix("From")
                .or_else(|| name.strip_prefix("To"))
            {
                Some(x) if !x.is_empty() => x,
                _ => continue,
            };
            if !done.insert(x) {
                continue;
            }
            let from = filter.text(&format!("From{x}"));
            let to = filter.text(&format!("To{x}"));
            let (from, to) = match (from, to) {
                (Some(f), Some(t)) => (self.date(f)?, self.to_date(t)?),
                (Some(f), None) => {
                    let f = self.date(f)?;
                    (f, f + Duration::days(7))
                }
                (None, Some(t)) => {
                    let t = self.to_date(t)?;
                    (t - Duration::days(7), t)
                }
                (None, None) => continue,
            };
            let key = match x {
                "LastModifiedDate" => family.version_member().to_string(),
                "DateOfBirth" => "DOB".to_string(),
                "ServiceDate" if item.member("ServiceDate").is_none() => {
                    "ServiceStartDate".to_string()
                }
                other => other.to_string(),
            };
            if item.member(&key).is_none() {
                continue;
            }
            if x == "PostingDate" && family == Family::Charges && to - from > Duration::days(60) {
                // Reported: wider posting windows silently return nothing.
                out.push(Range {
                    key,
                    from: to,
                    to: from,
                    from_exclusive: false,
                    to_exclusive: true,
                });
                continue;
            }
            // The record stamps' pairs follow the reality's bound semantics.
            let (fx, tx) = if x == "LastModifiedDate" || x == "CreatedDate" {
                self.cfg.reality.exclusive()
            } else {
                (false, x == "DateOfBirth")
            };
            out.push(Range {
                key,
                from,
                to,
                from_exclusive: fx,
                to_exclusive: tx,
            });
        }
        Ok(out)
    }

    fn list(&mut self, op: &'static OpDef, family: Family, req: &Obj) -> Result<Payload, Err> {
        let sel = selection(req.obj("Fields"));
        let Some(filter) = req.obj("Filter") else {
            return Err(Err::Internal);
        };
        let (list, _, _) = op.list_member().ok_or(Err::Internal)?;
        if sel.is_some() && self.cfg.reality.explicit_fields_placeholder {
            // One empty item, no fault: what a connector saw for explicit `true` flags.
            // (An empty list is written as Kareo's empty placeholder item.)
            return Ok((vec![(list.name, Out::Rows(Vec::new(), None))], 0));
        }
        if matches!(family, Family::Patients | Family::ServiceLocations) {
            self.require_practice_id(filter.text("PracticeID"))?;
        }
        let mut rows = self.filter_rows(family, filter)?;
        if family == Family::Charges {
            if let Some(limit) = self.cfg.reality.charges_empty_above {
                let wide = self
                    .ranges(family, filter)?
                    .iter()
                    .any(|r| r.key == family.version_member() && r.to - r.from > limit);
                if wide {
                    rows.clear();
                }
            }
        }
        self.check_max(rows.len())?;
        for row in &mut rows {
            let id = row
                .get(family.id_member())
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(o) = id.and_then(|id| self.store.overrides.get(&(family, id))) {
                row.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if let Some(n) = self.cfg.reality.truncate_at {
            rows.truncate(n);
        }
        let n = rows.len();
        Ok((vec![(list.name, Out::Rows(rows, sel))], n))
    }

    fn filter_rows(&self, family: Family, filter: &Obj) -> Result<Vec<Row>, Err> {
        let item = family.data_type();
        let ranges = self.ranges(family, filter)?;
        let mut equal: Vec<(&str, &str)> = Vec::new();
        let mut practice_ok = true;
        for (name, v) in &filter.fields {
            let Val::Text(t) = v else { continue };
            match *name {
                "PracticeName" => {
                    if !eq_ci(t, &self.cfg.practice_name) {
                        practice_ok = false;
                    }
                }
                "PracticeID" => {
                    if parse_id(t)? != self.cfg.practice_id {
                        practice_ok = false;
                    }
                }
                "ID" | "PatientID" | "AppointmentID" => {
                    parse_id(t)?;
                    equal.push((name, t));
                }
                "TimeZoneOffsetFromGMT" | "IncludeUnapprovedCharges" | "StartDate" | "EndDate" => {}
                n if n.starts_with("From") || n.starts_with("To") => {}
                "FullName" if family == Family::Patients => equal.push(("PatientFullName", t)),
                n => {
                    if item.member(n).is_some() {
                        equal.push((n, t));
                    }
                }
            }
        }
        if !practice_ok {
            return Ok(Vec::new());
        }
        let window = if family == Family::Appointments {
            self.appointment_window(filter, &ranges)?
        } else {
            None
        };
        let unapproved_ok = filter
            .text("IncludeUnapprovedCharges")
            .is_some_and(|t| eq_ci(t, "T"));
        let posted_after = self.posted_after(family, &ranges);
        let Some(all) = self.store.rows.get(&family) else {
            return Ok(Vec::new());
        };
        let tz = self.tz;
        let in_range = |row: &Row, key: &str, r: (DateTime<Utc>, DateTime<Utc>, bool, bool)| {
            let (from, to, fx, tx) = r;
            match row.get(key).and_then(|v| crate::clock::read(v, tz)) {
                Some(t) => {
                    (if fx { t > from } else { t >= from }) && (if tx { t < to } else { t <= to })
                }
                None => false,
            }
        };
        let out = all
            .values()
            .filter(|row| {
                ranges.iter().all(|r| {
                    in_range(
                        row,
                        &r.key,
                        (r.from, r.to, r.from_exclusive, r.to_exclusive),
                    )
                }) && equal
                    .iter()
                    .all(|(k, v)| row.get(*k).is_some_and(|rv| eq_ci(rv, v)))
                    && window.is_none_or(|(s, e)| in_range(row, "StartDate", (s, e, false, false)))
                    && posted_after.is_none_or(|p| {
                        in_range(
                            row,
                            "PostingDate",
                            (p, DateTime::<Utc>::MAX_UTC, false, false),
                        )
                    })
                    && (family != Family::Charges
                        || unapproved_ok
                        || row.get("EncounterStatus").is_some_and(|s| s == "Approved"))
            })
            .cloned()
            .collect();
        Ok(out)
    }

    /// GetCharges' implicit posting window: the earliest posting date answered, where the
    /// reality has one and the request no posting pair.
    fn posted_after(&self, family: Family, ranges: &[Range]) -> Option<DateTime<Utc>> {
        let w = self.cfg.reality.charges_posting_window?;
        if family != Family::Charges || ranges.iter().any(|r| r.key == "PostingDate") {
            return None;
        }
        let today = crate::clock::at_local(
            self.now
                .with_timezone(&self.tz)
                .date_naive()
                .and_time(chrono::NaiveTime::MIN),
            self.tz,
        );
        Some(today - w)
    }

    /// GetAppointments' appointment-date window (`StartDate`/`EndDate` with the guide's
    /// defaults), or `None` when it does not apply.
    fn appointment_window(&self, filter: &Obj, ranges: &[Range]) -> Result<Option<Span>, Err> {
        let start = filter.text("StartDate").map(|s| self.date(s)).transpose()?;
        let end = filter.text("EndDate").map(|s| self.date(s)).transpose()?;
        let bounded = !self.cfg.reality.appointment_window_always
            && ranges
                .iter()
                .any(|r| r.key == "LastModifiedDate" || r.key == "CreatedDate");
        if start.is_some() || end.is_some() || !bounded {
            let today = crate::clock::at_local(
                self.now
                    .with_timezone(&self.tz)
                    .date_naive()
                    .and_time(chrono::NaiveTime::MIN),
                self.tz,
            );
            let (s, e) = match (start, end) {
                (Some(s), Some(e)) => (s, e),
                (Some(s), None) => (s, s + Duration::days(7)),
                (None, Some(e)) => (today - Duration::days(7), e),
                (None, None) => {
                    let s = today - Duration::days(3);
                    (s, s + Duration::days(7))
                }
            };
            if e - s > Duration::days(60) {
                return Err(Err::Internal);
            }
            return Ok(Some((s, e)));
        }
        Ok(None)
    }

    fn get_patient(&mut self, req: &Obj) -> Result<Payload, Err> {
        let Some(filter) = req.obj("Filter") else {
            return Err(Err::Internal);
        };
        let Some(id) = filter.text("PatientID") else {
            return app("PatientID is required.");
        };
        let id = parse_id(id)?;
        match self.store.get(Family::Patients, id) {
            Some(row) => Ok((vec![("Patient", Out::Row(row.clone()))], 1)),
            None => app("Patient not found."),
        }
    }

    fn get_all_patients(&mut self, op: &'static OpDef, req: &Obj) -> Result<Payload, Err> {
        let sel = selection(req.obj("Fields"));
        let Some(filter) = req.obj("Filter") else {
            return Err(Err::Internal);
        };
        let batch = filter
            .text("BatchSize")
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        if !(1..=1000).contains(&batch) {
            return app("BatchSize must be between 1 and 1000.");
        }
        if !self.practice_matches(filter.text("PracticeID"), None)? {
            let (list, _, _) = op.list_member().ok_or(Err::Internal)?;
            return Ok((vec![(list.name, Out::Rows(Vec::new(), sel))], 0));
        }
        let start = filter
            .text("StartKey")
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let all = self.store.rows.get(&Family::Patients);
        let mut page: Vec<Row> = all
            .map(|m| {
                m.range(start..)
                    .take(batch as usize + 1)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default();
        let next = if page.len() > batch as usize {
            page.pop().and_then(|r| r.get("ID").cloned())
        } else {
            None
        };
        self.check_max(page.len())?;
        let n = page.len();
        let (list, _, _) = op.list_member().ok_or(Err::Internal)?;
        let mut payload = Vec::new();
        if let Some(next) = next {
            payload.push(("Key", Out::Obj(vec![("nextStartKey", Out::Text(next))])));
        }
        payload.push((list.name, Out::Rows(page, sel)));
        Ok((payload, n))
    }

    fn get_encounter_details(&mut self, op: &'static OpDef, req: &Obj) -> Result<Payload, Err> {
        let sel = selection(req.obj("Fields"));
        let Some(filter) = req.obj("Filter") else {
            return Err(Err::Internal);
        };
        let Some(id) = filter.text("EncounterID") else {
            return Err(Err::Internal);
        };
        let id = parse_id(id)?;
        let practice = filter.obj("Practice");
        self.require_practice_id(practice.and_then(|p| p.text("PracticeID")))?;
        let ok = self.practice_matches(
            practice.and_then(|p| p.text("PracticeID")),
            practice.and_then(|p| p.text("PracticeName")),
        )?;
        let rows: Vec<Row> = match self.store.get(Family::Encounters, id) {
            Some(r) if ok => vec![r.clone()],
            _ => Vec::new(),
        };
        let n = rows.len();
        let (list, _, _) = op.list_member().ok_or(Err::Internal)?;
        Ok((vec![(list.name, Out::Rows(rows, sel))], n))
    }

    // Long: one line per AppointmentData member the simulator fills.
    fn appointment_out(&self, row: &Row, deleted: bool) -> Out {
        let mut f: Vec<(&'static str, Out)> = Vec::new();
        let t = |s: &str| Out::Text(s.to_string());
        let get = |k: &str| row.get(k).map(String::as_str);
        let iso = |k: &str| {
            get(k)
                .and_then(|v| crate::clock::read(v, self.tz))
                .map(format_datetime)
        };
        if let Some(id) = get("ID") {
            f.push(("AppointmentId", t(id)));
            let n: u128 = id.parse().unwrap_or(0);
            f.push((
                "AppointmentUUID",
                Out::Text(guid_string(0x51a0_0000_0000_0000_0000_0000_0000_0000 | n)),
            ));
        }
        if let Some(v) = get("AppointmentReasonID1") {
            f.push(("AppointmentReasonId", t(v)));
        }
        f.push((
            "AppointmentStatus",
            t(confirmation_to_status(
                get("ConfirmationStatus").unwrap_or(""),
            )),
        ));
        let ty = get("Type")
            .filter(|v| ["U", "P", "O"].contains(v))
            .unwrap_or("P");
        f.push(("AppointmentType", t(ty)));
        if let Some(v) = iso("CreatedDate") {
            f.push(("CreatedAt", Out::Text(v)));
        }
        f.push(("CustomerId", Out::Text(self.cfg.customer_id.to_string())));
        if let Some(v) = iso("EndDate") {
            f.push(("EndTime", Out::Text(v)));
        }
        f.push(("IsDeleted", t(if deleted { "true" } else { "false" })));
        f.push((
            "IsRecurring",
            t(if get("Recurring").and_then(boolish).unwrap_or(false) {
                "true"
            } else {
                "false"
            }),
        ));
        if let Some(v) = get("Notes") {
            f.push(("Notes", t(v)));
        }
        if let Some(v) = get("PatientCaseID") {
            f.push(("PatientCaseId", t(v)));
        }
        if let Some(pid) = get("PatientID") {
            let mut ps: Vec<(&'static str, Out)> = vec![("PatientId", t(pid))];
            if let Some(p) = pid
                .parse()
                .ok()
                .and_then(|id| self.store.get(Family::Patients, id))
            {
                for (k, pk) in [
                    ("FirstName", "FirstName"),
                    ("LastName", "LastName"),
                    ("MiddleName", "MiddleName"),
                    ("Email", "EmailAddress"),
                    ("HomePhone", "HomePhone"),
                    ("MobilePhone", "MobilePhone"),
                ] {
                    if let Some(v) = p.get(pk) {
                        ps.push((k, t(v)));
                    }
                }
                if let Some(d) = p.get("DOB").and_then(|v| crate::clock::read_local(v)) {
                    ps.push((
                        "DateOfBirth",
                        Out::Text(d.format("%Y-%m-%dT%H:%M:%S").to_string()),
                    ));
                }
            }
            if let Some(v) = get("PracticeID") {
                ps.push(("PracticeId", t(v)));
            }
            f.push(("PatientSummary", Out::Obj(ps)));
        }
        if let Some(v) = get("PracticeID") {
            f.push(("PracticeId", t(v)));
        }
        if get("ResourceTypeID1") == Some("1") {
            if let Some(v) = get("ResourceID1") {
                f.push(("ProviderId", t(v)));
            }
        }
        if let Some(v) = get("ResourceID1") {
            f.push(("ResourceId", t(v)));
        }
        if let Some(v) = get("ServiceLocationID") {
            f.push(("ServiceLocationId", t(v)));
        }
        if let Some(v) = iso("StartDate") {
            f.push(("StartTime", Out::Text(v)));
        }
        if let Some(v) = iso("LastModifiedDate") {
            f.push(("UpdatedAt", Out::Text(v)));
        }
        Out::Obj(f)
    }

    fn get_appointment(&mut self, req: &Obj) -> Result<Payload, Err> {
        let id = req
            .obj("Appointment")
            .and_then(|a| a.text("AppointmentId"))
            .ok_or(Err::Internal)?;
        let id = parse_id(id)?;
        if let Some(row) = self.store.get(Family::Appointments, id) {
            return Ok((vec![("Appointment", self.appointment_out(row, false))], 1));
        }
        if let Some(row) = self.store.deleted_appointments.get(&id) {
            if !self.cfg.reality.deleted_not_found {
                return Ok((vec![("Appointment", self.appointment_out(row, true))], 1));
            }
        }
        app("Appointment not found.")
    }

    fn delete_appointment(&mut self, req: &Obj) -> Result<Payload, Err> {
        let id = req
            .obj("Appointment")
            .and_then(|a| a.text("AppointmentId"))
            .ok_or(Err::Internal)?;
        let id = parse_id(id)?;
        if !self.store.delete_appointment(id) {
            return app("Appointment not found.");
        }
        Ok((
            vec![
                ("AppointmentId", Out::Text(id.to_string())),
                ("Deleted", Out::Text("true".into())),
            ],
            0,
        ))
    }

    /// UpdateAppointment: the members given replace the appointment's. The schema requires
    /// PatientId and ServiceLocationId; the patient must be the appointment's own and the
    /// location must exist. The appointment's LastModifiedDate moves (the poller sees it).
    fn update_appointment(&mut self, req: &Obj) -> Result<Payload, Err> {
        let a = req.obj("Appointment").ok_or(Err::Internal)?;
        let id = parse_id(a.text("AppointmentId").ok_or(Err::Internal)?)?;
        let patient = parse_id(a.text("PatientId").ok_or(Err::Internal)?)?;
        let loc = parse_id(a.text("ServiceLocationId").ok_or(Err::Internal)?)?;
        let (tz, now) = (self.tz, self.stamp());
        let loc_name = match self.store.get(Family::ServiceLocations, loc) {
            Some(l) => l.get("Name").cloned().unwrap_or_default(),
            None => return app("Service location not found."),
        };
        let Some(row) = self
            .store
            .rows
            .get_mut(&Family::Appointments)
            .and_then(|m| m.get_mut(&id))
        else {
            return app("Appointment not found.");
        };
        if row.get("PatientID") != Some(&patient.to_string()) {
            return app("PatientId does not match the appointment.");
        }
        let start = match a.text("StartTime") {
            Some(t) => Some(write_time(self.cfg, t).ok_or(Err::Internal)?),
            None => None,
        };
        let end = match a.text("EndTime") {
            Some(t) => Some(write_time(self.cfg, t).ok_or(Err::Internal)?),
            None => None,
        };
        if let (Some(s), Some(e)) = (start, end) {
            if e <= s {
                return app("EndTime must be later than StartTime.");
            }
            row.insert("StartDate".into(), format_response(s, tz));
            row.insert("EndDate".into(), format_response(e, tz));
            row.insert(
                "AppointmentDuration".into(),
                (e - s).num_minutes().to_string(),
            );
        }
        if let Some(st) = a.text("AppointmentStatus") {
            row.insert("ConfirmationStatus".into(), status_to_confirmation(st));
        }
        if let Some(n) = a.text("Notes") {
            row.insert("Notes".into(), n.to_string());
        }
        row.insert("ServiceLocationID".into(), loc.to_string());
        row.insert("ServiceLocationName".into(), loc_name);
        row.insert("LastModifiedDate".into(), now);
        let r = row.clone();
        Ok((vec![("Appointment", self.appointment_out(&r, false))], 1))
    }

    /// UpdateEncounterStatus: one of the five statuses Kareo's CreateEncounter takes, on an
    /// encounter of this practice; the encounter and its charge lines are modified now.
    fn update_encounter_status(&mut self, req: &Obj) -> Result<Payload, Err> {
        let e = req.obj("EncounterUpdateStatus").ok_or(Err::Internal)?;
        let id = parse_id(e.text("EncounterID").ok_or(Err::Internal)?)?;
        let status = e.text("EncounterStatus").ok_or(Err::Internal)?;
        if !["Draft", "Submitted", "Approved", "Rejected", "Unpayable"].contains(&status) {
            return app("EncounterStatus is not valid.");
        }
        let practice = e.obj("Practice");
        let (pid, pname) = (
            practice.and_then(|x| x.text("PracticeID")),
            practice.and_then(|x| x.text("PracticeName")),
        );
        if (pid.is_some() || pname.is_some()) && !self.practice_matches(pid, pname)? {
            return app("Practice not found or not authorized.");
        }
        let now = self.stamp();
        let Some(row) = self
            .store
            .rows
            .get_mut(&Family::Encounters)
            .and_then(|m| m.get_mut(&id))
        else {
            return app("Encounter not found.");
        };
        row.insert(
            "EncounterStatus".into(),
            encounter_status_code(status).into(),
        );
        row.insert("LastModifiedDate".into(), now.clone());
        let patient = row.get("PatientID").cloned().unwrap_or_default();
        for ch in self
            .store
            .rows
            .entry(Family::Charges)
            .or_default()
            .values_mut()
            .filter(|c| c.get("EncounterID") == Some(&id.to_string()))
        {
            ch.insert("EncounterStatus".into(), status.to_string());
            ch.insert("LastModifiedDate".into(), now.clone());
        }
        Ok((
            vec![
                ("EncounterID", Out::Text(id.to_string())),
                ("PatientID", Out::Text(patient)),
                ("PracticeID", Out::Text(self.cfg.practice_id.to_string())),
                ("PracticeName", Out::Text(self.cfg.practice_name.clone())),
            ],
            1,
        ))
    }

    // Long: Kareo's CreateAppointment checks, in the order Kareo reports them.
    fn create_appointment(&mut self, req: &Obj) -> Result<Payload, Err> {
        let a = req.obj("Appointment").ok_or(Err::Internal)?;
        let txt = |k: &str| a.text(k);
        let practice = txt("PracticeId").ok_or(Err::Internal)?;
        if parse_id(practice)? != self.cfg.practice_id {
            return app("Practice not found or not authorized.");
        }
        let loc_id = parse_id(txt("ServiceLocationId").ok_or(Err::Internal)?)?;
        let Some(loc) = self.store.get(Family::ServiceLocations, loc_id) else {
            return app("Service location not found.");
        };
        let loc_name = loc.get("Name").cloned().unwrap_or_default();
        let ty = txt("AppointmentType").unwrap_or("P");
        let summary = a.obj("PatientSummary");
        let patient = match summary.and_then(|s| s.text("PatientId")) {
            Some(pid) => {
                let pid = parse_id(pid)?;
                match self.store.get(Family::Patients, pid) {
                    Some(p) => Some(p.clone()),
                    None => return app("Patient not found."),
                }
            }
            None if ty == "P" => return app("PatientSummary with a valid PatientId is required."),
            None => None,
        };
        let mut candidates: Vec<&str> = Vec::new();
        candidates.extend(txt("ProviderId"));
        candidates.extend(txt("ResourceId"));
        for v in a.list("ResourceIds") {
            if let Val::Text(t) = v {
                candidates.push(t);
            }
        }
        let provider = candidates
            .iter()
            .filter_map(|c| c.parse::<i64>().ok())
            .find_map(|id| {
                self.store
                    .get(Family::Providers, id)
                    .map(|p| (id, p.clone()))
            });
        let Some((prov_id, prov)) = provider else {
            return app("Appointment must have valid ProviderGuids or ResourceGuids.");
        };
        let start = txt("StartTime")
            .and_then(|t| write_time(self.cfg, t))
            .ok_or(Err::Internal)?;
        let end = txt("EndTime")
            .and_then(|t| write_time(self.cfg, t))
            .ok_or(Err::Internal)?;
        if end <= start {
            return app("EndTime must be later than StartTime.");
        }
        let id = self.store.new_id(Family::Appointments);
        let now = self.stamp();
        let mut r = Row::new();
        let mut put = |k: &str, v: String| {
            r.insert(k.to_string(), v);
        };
        put("ID", id.to_string());
        put("CreatedDate", now.clone());
        put("LastModifiedDate", now);
        put("PracticeID", self.cfg.practice_id.to_string());
        put("PracticeName", self.cfg.practice_name.clone());
        if let Some(p) = &patient {
            put("PatientID", p["ID"].clone());
            if let Some(v) = p.get("PatientFullName") {
                put("PatientFullName", v.clone());
            }
            if let Some(v) = p.get("DefaultCaseID") {
                put("PatientCaseID", v.clone());
            }
        }
        if let Some(v) = txt("PatientCaseId") {
            put("PatientCaseID", v.to_string());
        }
        put("StartDate", format_response(start, self.tz));
        put("EndDate", format_response(end, self.tz));
        put(
            "AppointmentDuration",
            (end - start).num_minutes().to_string(),
        );
        put("AllDay", "False".into());
        let recurring = txt("IsRecurring").and_then(boolish).unwrap_or(false);
        put("Recurring", if recurring { "True" } else { "False" }.into());
        put(
            "ConfirmationStatus",
            status_to_confirmation(txt("AppointmentStatus").unwrap_or("Scheduled")),
        );
        put("Type", ty.to_string());
        put("ServiceLocationID", loc_id.to_string());
        put("ServiceLocationName", loc_name);
        put("ResourceID1", prov_id.to_string());
        put(
            "ResourceName1",
            prov.get("FullName").cloned().unwrap_or_default(),
        );
        put("ResourceTypeID1", "1".into());
        if let Some(v) = txt("AppointmentReasonId") {
            put("AppointmentReasonID1", v.to_string());
        }
        if let Some(v) = txt("Notes") {
            put("Notes", v.to_string());
        }
        self.store
            .rows
            .entry(Family::Appointments)
            .or_default()
            .insert(id, r.clone());
        Ok((vec![("Appointment", self.appointment_out(&r, false))], 1))
    }

    /// CreatePatient / UpdatePatient.
    fn modify_patient(&mut self, req: &Obj, update: bool) -> Result<Payload, Err> {
        let p = req.obj("Patient").ok_or(Err::Internal)?;
        let practice = p.obj("Practice");
        let pid = practice.and_then(|x| x.text("PracticeID"));
        let pname = practice.and_then(|x| x.text("PracticeName"));
        if pid.is_none() && pname.is_none() {
            return app("Practice is required (PracticeID or PracticeName).");
        }
        if !self.practice_matches(pid, pname)? {
            return app("Practice not found or not authorized.");
        }
        let changes = patient_changes(p, self.tz);
        let now = self.stamp();
        let id = if update {
            let Some(id) = p.text("PatientID") else {
                return app("PatientID is required to update a patient.");
            };
            let id = parse_id(id)?;
            let tz_now = now.clone();
            let Some(row) = self
                .store
                .rows
                .get_mut(&Family::Patients)
                .and_then(|m| m.get_mut(&id))
            else {
                return app("Patient not found.");
            };
            for (k, v) in changes {
                row.insert(k, v);
            }
            refresh_full_name(row);
            row.insert("LastModifiedDate".into(), tz_now);
            id
        } else {
            let first = changes
                .iter()
                .any(|(k, v)| k == "FirstName" && !v.trim().is_empty());
            let last = changes
                .iter()
                .any(|(k, v)| k == "LastName" && !v.trim().is_empty());
            if !first || !last {
                return app("FirstName and LastName are required.");
            }
            let id = self.store.new_id(Family::Patients);
            let mut row = Row::new();
            row.insert("ID".into(), id.to_string());
            row.insert("PracticeId".into(), self.cfg.practice_id.to_string());
            row.insert("PracticeName".into(), self.cfg.practice_name.clone());
            row.insert("CreatedDate".into(), now.clone());
            row.insert("LastModifiedDate".into(), now);
            for (k, v) in changes {
                row.insert(k, v);
            }
            refresh_full_name(&mut row);
            self.store
                .rows
                .entry(Family::Patients)
                .or_default()
                .insert(id, row);
            id
        };
        let row = self
            .store
            .get(Family::Patients, id)
            .cloned()
            .unwrap_or_default();
        let mut out = vec![
            ("PatientID", Out::Text(id.to_string())),
            ("PracticeID", Out::Text(self.cfg.practice_id.to_string())),
            ("PracticeName", Out::Text(self.cfg.practice_name.clone())),
        ];
        if let Some(v) = row.get("DefaultServiceLocationId") {
            out.push(("DefaultServiceLocationID", Out::Text(v.clone())));
        }
        if let Some(v) = p.text("PatientExternalID") {
            out.push(("PatientExternalID", Out::Text(v.chars().take(25).collect())));
        }
        if let Some(v) = p.text("ExternalVendorID") {
            out.push(("ExternalVendorID", Out::Text(v.to_string())));
        }
        Ok((out, 1))
    }

    // Long: Kareo's CreateEncounter checks, one after another in the order Kareo reports them.
    fn create_encounter(&mut self, req: &Obj) -> Result<Payload, Err> {
        let e = req.obj("Encounter").ok_or(Err::Internal)?;
        let practice = e.obj("Practice");
        let (pid, pname) = (
            practice.and_then(|x| x.text("PracticeID")),
            practice.and_then(|x| x.text("PracticeName")),
        );
        if pid.is_none() && pname.is_none() {
            return app("Practice is required.");
        }
        if !self.practice_matches(pid, pname)? {
            return app("Practice not found or not authorized.");
        }
        let Some(patient_id) = e.obj("Patient").and_then(|p| p.text("PatientID")) else {
            return app("Patient with a PatientID is required.");
        };
        let patient_id = parse_id(patient_id)?;
        let Some(patient) = self.store.get(Family::Patients, patient_id).cloned() else {
            return app("Patient not found.");
        };
        let Some(svc_start) = e
            .text("ServiceStartDate")
            .and_then(|t| parse_xs(t, self.tz))
        else {
            return app("ServiceStartDate is required.");
        };
        let svc_end = e
            .text("ServiceEndDate")
            .and_then(|t| parse_xs(t, self.tz))
            .unwrap_or(svc_start);
        let Some(post) = e.text("PostDate").and_then(|t| parse_xs(t, self.tz)) else {
            return app("PostDate is required.");
        };
        let Some(loc_id) = e.obj("ServiceLocation").and_then(|l| l.text("LocationID")) else {
            return app("ServiceLocation with a LocationID is required.");
        };
        let loc_id = parse_id(loc_id)?;
        let Some(loc) = self.store.get(Family::ServiceLocations, loc_id).cloned() else {
            return app("Service location not found.");
        };
        let Some(prov_id) = e
            .obj("RenderingProvider")
            .and_then(|p| p.text("ProviderID"))
        else {
            return app("RenderingProvider with a ProviderID is required.");
        };
        let prov_id = parse_id(prov_id)?;
        let Some(prov) = self.store.get(Family::Providers, prov_id).cloned() else {
            return app("Rendering provider not found.");
        };
        let lines: Vec<&Obj> = e
            .list("ServiceLines")
            .iter()
            .filter_map(|v| match v {
                Val::Obj(o) => Some(o),
                _ => None,
            })
            .collect();
        if lines.is_empty() {
            return app("At least one service line is required.");
        }
        let procs: Vec<Row> = self
            .store
            .rows
            .get(&Family::ProcedureCodes)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for l in &lines {
            for k in [
                "ProcedureCode",
                "DiagnosisCode1",
                "Units",
                "ServiceStartDate",
            ] {
                if l.text(k).is_none_or(|v| v.trim().is_empty()) {
                    return app(format!("Service line {k} is required."));
                }
            }
            let code = l.text("ProcedureCode").unwrap_or_default();
            if !procs
                .iter()
                .any(|p| p.get("ProcedureCode").is_some_and(|c| c == code))
            {
                return app("Procedure code not found.");
            }
        }
        let status = e.text("EncounterStatus").unwrap_or("Draft").to_string();
        let enc_id = self.store.new_id(Family::Encounters);
        let now = self.stamp();
        let tz = self.tz;
        let batch = e
            .text("BatchNumber")
            .map(str::to_string)
            .unwrap_or_else(|| format!("B{}", post.with_timezone(&tz).format("%Y%m%d")));
        let case_id = e
            .obj("Case")
            .and_then(|c| c.text("CaseID"))
            .map(str::to_string)
            .or_else(|| patient.get("DefaultCaseID").cloned());
        let appt = e
            .obj("Appointment")
            .and_then(|a| a.text("AppointmentID"))
            .map(str::to_string);
        let mut added = Vec::new();
        let mut line_ids = Vec::new();
        for l in &lines {
            let line_id = self.store.next_service_line;
            self.store.next_service_line += 1;
            line_ids.push(line_id.to_string());
            let code = l.text("ProcedureCode").unwrap_or_default().to_string();
            let units: f64 = l.text("Units").and_then(|u| u.parse().ok()).unwrap_or(1.0);
            let unit_charge: f64 = l
                .text("UnitCharge")
                .and_then(|u| u.parse().ok())
                .unwrap_or(0.0);
            let ls = l
                .text("ServiceStartDate")
                .and_then(|t| parse_xs(t, self.tz))
                .unwrap_or(svc_start);
            let le = l
                .text("ServiceEndDate")
                .and_then(|t| parse_xs(t, self.tz))
                .unwrap_or(ls);
            let charge_id = self.store.new_id(Family::Charges);
            let mut ch = Row::new();
            let mut put = |k: &str, v: String| {
                ch.insert(k.to_string(), v);
            };
            put("ID", charge_id.to_string());
            put("CreatedDate", now.clone());
            put("LastModifiedDate", now.clone());
            put("EncounterID", enc_id.to_string());
            put("EncounterProcedureID", line_id.to_string());
            put("EncounterStatus", status.clone());
            put("PatientID", patient_id.to_string());
            for (k, pk) in [
                ("PatientFirstName", "FirstName"),
                ("PatientLastName", "LastName"),
                ("PatientName", "PatientFullName"),
            ] {
                if let Some(v) = patient.get(pk) {
                    put(k, v.clone());
                }
            }
            put("PracticeID", self.cfg.practice_id.to_string());
            put("PracticeName", self.cfg.practice_name.clone());
            if let Some(p) = procs.iter().find(|p| p.get("ProcedureCode") == Some(&code)) {
                if let Some(v) = p.get("OfficialName") {
                    put("ProcedureName", v.clone());
                }
            }
            put("ProcedureCode", code);
            put("Units", format!("{units}"));
            put("UnitCharge", format!("{unit_charge:.2}"));
            put("TotalCharges", format!("{:.2}", units * unit_charge));
            put("ServiceStartDate", format_response(ls, tz));
            put("ServiceEndDate", format_response(le, tz));
            put("PostingDate", format_response(post, tz));
            put("BatchNumber", batch.clone());
            put(
                "Status",
                if status == "Approved" {
                    "Pending Insurance"
                } else {
                    "Draft"
                }
                .into(),
            );
            put("RenderingProviderID", prov_id.to_string());
            put(
                "RenderingProviderName",
                prov.get("FullName").cloned().unwrap_or_default(),
            );
            put("ServiceLocationId", loc_id.to_string());
            put(
                "ServiceLocationName",
                loc.get("Name").cloned().unwrap_or_default(),
            );
            if let Some(a) = &appt {
                put("AppointmentID", a.clone());
            }
            self.store
                .rows
                .entry(Family::Charges)
                .or_default()
                .insert(charge_id, ch);
            let mut res = vec![
                ("EncounterID", Out::Text(enc_id.to_string())),
                ("ServiceLineID", Out::Text(line_id.to_string())),
            ];
            if let Some(x) = l.text("ExternalID") {
                res.push(("ServiceLineExternalID", Out::Text(x.to_string())));
            }
            added.push(Out::Obj(res));
        }
        let mut r = Row::new();
        let mut put = |k: &str, v: String| {
            r.insert(k.to_string(), v);
        };
        put("EncounterID", enc_id.to_string());
        put("CreatedDate", now.clone());
        put("LastModifiedDate", now);
        put("PracticeID", self.cfg.practice_id.to_string());
        put("PracticeName", self.cfg.practice_name.clone());
        put("PatientID", patient_id.to_string());
        for (k, pk) in [
            ("PatientFirstName", "FirstName"),
            ("PatientLastName", "LastName"),
            ("PatientMiddleName", "MiddleName"),
        ] {
            if let Some(v) = patient.get(pk) {
                put(k, v.clone());
            }
        }
        if let Some(c) = &case_id {
            put("CaseID", c.clone());
        }
        if let Some(a) = &appt {
            put("AppointmentID", a.clone());
        }
        put("EncounterStatus", encounter_status_code(&status).into());
        put("PostDate", format_response(post, tz));
        put("ServiceStartDate", format_response(svc_start, tz));
        put("ServiceEndDate", format_response(svc_end, tz));
        put("ServiceLocationID", loc_id.to_string());
        put(
            "ServiceLocationName",
            loc.get("Name").cloned().unwrap_or_default(),
        );
        put(
            "RenderingProvider",
            prov.get("FullName").cloned().unwrap_or_default(),
        );
        put("BatchNumber", batch);
        put("ServiceLines", line_ids.join(","));
        self.store
            .rows
            .entry(Family::Encounters)
            .or_default()
            .insert(enc_id, r);
        let mut out = vec![
            ("EncounterID", Out::Text(enc_id.to_string())),
            ("PatientID", Out::Text(patient_id.to_string())),
            ("PracticeID", Out::Text(self.cfg.practice_id.to_string())),
            ("PracticeName", Out::Text(self.cfg.practice_name.clone())),
            ("RenderingProviderID", Out::Text(prov_id.to_string())),
            ("ServiceLocationID", Out::Text(loc_id.to_string())),
            ("ServiceLinesAdded", Out::List(added)),
        ];
        if let Some(c) = case_id {
            out.push(("PatientCaseID", Out::Text(c)));
        }
        if let Some(a) = appt {
            out.push(("AppointmentID", Out::Text(a)));
        }
        Ok((out, 1))
    }

    fn create_payment(&mut self, req: &Obj) -> Result<Payload, Err> {
        let p = req.obj("Payment").ok_or(Err::Internal)?;
        let payer_type = p.text("PayerType").unwrap_or_default();
        if !["Insurance", "Other", "Patient"].contains(&payer_type) {
            return app("PayerType must be Insurance, Other or Patient.");
        }
        let pay = p.obj("Payment").ok_or(Err::Internal)?;
        let amount: f64 = match pay.text("AmountPaid").map(|a| a.trim().parse::<f64>()) {
            Some(Ok(a)) if a.is_finite() => a,
            _ => return app("AmountPaid is not a valid amount."),
        };
        let method = pay.text("PaymentMethod").unwrap_or_default();
        let methods = schema::ENUMS
            .iter()
            .find(|e| e.name == "PaymentMethodCode")
            .map(|e| e.values)
            .unwrap_or(&[]);
        if !methods.contains(&method) {
            return app("PaymentMethod is not valid.");
        }
        if let Some(pr) = p.obj("Practice") {
            if !self.practice_matches(pr.text("PracticeID"), pr.text("PracticeName"))? {
                return app("Practice not found or not authorized.");
            }
        }
        let mut payer_name = None;
        if let Some(pid) = p.obj("Patient").and_then(|x| x.text("PatientID")) {
            let pid = parse_id(pid)?;
            match self.store.get(Family::Patients, pid) {
                Some(row) => payer_name = row.get("PatientFullName").cloned(),
                None => return app("Patient not found."),
            }
        } else if payer_type == "Patient" {
            return app("Patient with a PatientID is required for a patient payment.");
        }
        if payer_type == "Insurance" {
            payer_name = p
                .obj("Insurance")
                .and_then(|i| i.text("CompanyPlanName"))
                .map(str::to_string)
                .or(payer_name);
        }
        let id = self.store.new_id(Family::Payments);
        let now = self.stamp();
        let mut r = Row::new();
        let mut put = |k: &str, v: String| {
            r.insert(k.to_string(), v);
        };
        put("ID", id.to_string());
        put("CreatedDate", now.clone());
        put("LastModifiedDate", now.clone());
        put("PracticeId", self.cfg.practice_id.to_string());
        put("PayerType", payer_type.to_string());
        if let Some(n) = payer_name {
            put("PayerName", n);
        }
        put("PaymentMethod", method.to_string());
        put("Amount", format!("{amount:.2}"));
        put("Applied", "0.00".into());
        put("Unapplied", format!("{amount:.2}"));
        put("Adjustments", "0.00".into());
        put("Refunds", "0.00".into());
        let post = match p.text("PostDate") {
            Some(d) => format_response(self.date(d)?, self.tz),
            None => format_response(self.now, self.tz),
        };
        put("PostDate", post);
        if let Some(d) = p.text("AjudicationDate") {
            let d = self.date(d)?;
            put("AdjudicationDate", format_response(d, self.tz));
        }
        if let Some(v) = p.text("BatchNumber") {
            put("BatchNumber", v.to_string());
        }
        if let Some(v) = pay.text("ReferenceNumber") {
            put("ReferenceNumber", v.to_string());
        }
        if let Some(v) = p.obj("Appointment").and_then(|a| a.text("AppointmentID")) {
            put("AppointmentID", v.to_string());
        }
        self.store
            .rows
            .entry(Family::Payments)
            .or_default()
            .insert(id, r);
        Ok((
            vec![
                ("PaymentID", Out::Text(id.to_string())),
                ("PracticeID", Out::Text(self.cfg.practice_id.to_string())),
                ("PracticeName", Out::Text(self.cfg.practice_name.clone())),
            ],
            1,
        ))
    }
}

fn refresh_full_name(row: &mut Row) {
    let parts: Vec<&str> = ["FirstName", "MiddleName", "LastName"]
        .iter()
        .filter_map(|k| row.get(*k).map(String::as_str))
        .filter(|v| !v.trim().is_empty())
        .collect();
    let full = parts.join(" ");
    row.insert("PatientFullName".into(), full);
}

/// PatientCreate / PatientUpdate members → PatientData members (members present only).
fn patient_changes(p: &Obj, tz: Tz) -> Vec<(String, String)> {
    let data = Family::Patients.data_type();
    let mut out = Vec::new();
    for (name, v) in &p.fields {
        match (name, v) {
            (
                &"PatientID" | &"Practice" | &"PatientExternalID" | &"ExternalVendorID" | &"Cases"
                | &"Note",
                _,
            ) => {}
            (&"DateofBirth", Val::Text(t)) => {
                if let Some(d) = crate::clock::read_local(t.get(..10).unwrap_or(t)) {
                    let at = crate::clock::at_local(d, tz);
                    out.push(("DOB".to_string(), format_response(at, tz)));
                }
            }
            (&"SocialSecurityNumber", Val::Text(t)) => out.push(("SSN".into(), t.clone())),
            (n, Val::Text(t)) if data.member(n).is_some() => {
                out.push((n.to_string(), t.clone()));
            }
            (n, Val::Obj(o)) => {
                for (child, cv) in &o.fields {
                    let Val::Text(t) = cv else { continue };
                    let mapped = match (*n, *child) {
                        ("Employer", "EmployerName") => "EmployerName".to_string(),
                        ("Employer", "EmploymentStatus") => "EmploymentStatus".to_string(),
                        ("DefaultRenderingProvider", "ProviderID") => {
                            "DefaultRenderingProviderId".into()
                        }
                        ("DefaultServiceLocation", "LocationID") => {
                            "DefaultServiceLocationId".into()
                        }
                        ("DefaultServiceLocation", "LocationName") => {
                            "DefaultServiceLocationName".into()
                        }
                        ("PrimaryCarePhysician", "PhysicianID") => "PrimaryCarePhysicianId".into(),
                        ("ReferringProvider", "ProviderID") => "ReferringProviderId".into(),
                        (n, c) => format!("{n}{c}"),
                    };
                    if data.member(&mapped).is_some() {
                        let val = match data.member(&mapped).map(|m| m.ty) {
                            Some(Ty::Str) if t == "true" || t == "false" => {
                                if t == "true" {
                                    "True".into()
                                } else {
                                    "False".into()
                                }
                            }
                            _ => t.clone(),
                        };
                        out.push((mapped, val));
                    }
                }
            }
            _ => {}
        }
    }
    out
}
