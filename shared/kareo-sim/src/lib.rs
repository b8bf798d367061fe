//! A Kareo (Tebra) SOAP 2.1 simulator: a real HTTP/1.1 server on loopback that speaks Kareo's
//! wire format as strictly as the real WCF service, for tests, demos and benchmarks.
//!
//! # What is simulated
//!
//! - **Transport**: `POST /services/soap/2.1/KareoServices.svc` only (other paths 404, other
//!   methods 405); `Content-Type` must be `text/xml` with no charset or `charset=utf-8` (else 415
//!   with WCF's text); `SOAPAction` (quoted or not) must be
//!   `http://www.kareo.com/api/schemas/KareoServices/<Op>` for a known operation and name the
//!   body's operation element, else HTTP 500 `a:ActionNotSupported` "… ContractFilter mismatch at
//!   the EndpointDispatcher …". A request that is not well-formed XML (or not UTF-8, or has a
//!   DTD) gets a bare HTTP 400, as WCF answers unreadable messages. A SOAP 1.2 envelope gets a
//!   `s:VersionMismatch` fault.
//! - **Deserialization like WCF's DataContractSerializer** ([`kareo::schema`] drives it; no
//!   element name or order is typed here): members are read with a cursor over the type's
//!   `xs:sequence`; an element matching a member at or after the cursor (exact name, exact
//!   namespace) is read and the cursor moves past it; anything else (out of order, unknown,
//!   mis-cased, wrong namespace, duplicate) is silently skipped with its subtree. Skipping over,
//!   or ending without, a `required` member is a 500 `a:DeserializationFailed` fault whose text
//!   has WCF's `Expecting element '<Name>'`. Typed values (bool, int, long, double, decimal,
//!   xs:dateTime, guid, enum values) that do not parse are the same fault (the fault text never
//!   repeats the value). `i:nil="true"` reads as absent. Text is fully unescaped (entities,
//!   character references, CDATA). A missing or nil `request` wrapper, or a missing `Filter` on a
//!   list Get, is a 500 `a:InternalServiceFault` (the real service NullReferences).
//! - **Security**: `RequestHeader` `CustomerKey`/`User`/`Password` compared exactly (bare members
//!   for GetCustomerIdFromKey). Failure is HTTP 200 with `SecurityResponse`
//!   `Authenticated=false Authorized=false CustomerKeyValid=true SecurityResultSuccess=false`
//!   `SecurityResult="Invalid user name and/or password"` (`CustomerKeyValid=false` and
//!   "Invalid customer key" for a wrong key) and no records.
//! - **Throttling** (`enforce_throttle`): a call of an operation sooner than the simulator's
//!   own reading of the guide's table (`guide.rs`) after the previous *accepted* call of that
//!   operation (real time, not the simulated clock) is answered HTTP 200 with `IsError=true` and
//!   Kareo's text "429: <Op> endpoint requested more than allowed over time interval <ms>
//!   milliseconds. Please wait to try again.". Throttling is checked after authentication (it is
//!   per account); throttled calls do not move the window, unless
//!   [`Reality::throttle_counts_rejected`].
//! - **Responses** written like WCF: `<OpResponse xmlns="k"><OpResult xmlns:i=…>`,
//!   `ErrorResponse` and `SecurityResponse` with every member (nulls as `i:nil="true"`), payload
//!   members in schema order, absent record members omitted (`EmitDefaultValue=false`), `k7`
//!   payloads (service locations, procedure codes) under the prefix `a` declared on the result
//!   element, primitive arrays in the WCF Arrays namespace with a prefix declared locally, all
//!   text escaped. A seeded RNG sometimes (about one response in four each) adds an `s:Header`
//!   with a WCF `ActivityId` and/or pretty-prints the document (whitespace only between
//!   elements); the choice is deterministic for a seed and a sequence of calls.
//! - **Data**: a seeded data set (see [`SimConfig`]) of one practice, providers, service
//!   locations, procedure codes, patients, appointments, encounters with charges, payments and
//!   transactions; created/modified stamps spread over the 30 days before the initial
//!   [`KareoSim::now`]. Writes (CreatePatient, UpdatePatient, CreateAppointment, UpdateAppointment,
//!   DeleteAppointment, CreateEncounter, UpdateEncounterStatus, CreatePayment) change the data set and are visible in
//!   later reads.
//! - **Fault injection** ([`FaultRule`], [`Fault`]), added latency, a call log without bodies,
//!   values or credentials ([`Call`]), and a bulk mode in which GetPatients streams N synthetic
//!   patients generated chunk by chunk ([`KareoSim::set_bulk_patients`]).
//!
//! # Assumptions (what Kareo does not document, `kareo-api.md` §10, decided here)
//!
//! - **Response dates**: list-response date members (`CreatedDate`, `LastModifiedDate`,
//!   `ModifiedDate`, `StartDate`, `DOB`, `PostingDate`, …) are practice-local
//!   `M/d/yyyy h:mm:ss AM` with whole seconds; `xs:dateTime` members (GetAppointment's
//!   `StartTime`, `CreatedAt`, …) are ISO 8601 UTC. The simulator reads and writes dates by its
//!   own rules (`clock`), not with the product's date module.
//! - **Date filters** are read as .NET's en-US parse reads Kareo's forms, in the practice time
//!   zone when they carry none, and are
//!   **inclusive at both ends**; a date-only bound means local midnight. A lone half of a
//!   From/To pair defaults the other to ±7 days. `ToDateOfBirth` is exclusive (reported). A
//!   filter date that does not parse gives `IsError=true` "String was not recognized as a valid
//!   DateTime.". `LastModifiedDate` bounds compare `ModifiedDate` for service locations and
//!   procedure codes.
//! - **Other filter members**: `PracticeName` (case-insensitive) and `PracticeID` must match the
//!   practice when given, else nothing matches; a non-numeric ID gives `IsError=true` "Input
//!   string was not in a correct format.". Any other filter member whose name is also a member
//!   of the record type is an exact, case-insensitive match (e.g. `ConfirmationStatus`,
//!   `PatientID`, `ID`, `Type`, `PayerType`); filter members with no such record member are
//!   ignored. GetAppointments: `StartDate`/`EndDate` window on the appointment's `StartDate` with
//!   the guide's defaults (7 days before today without StartDate, 3 days with neither, EndDate =
//!   StartDate + 7 days), not applied when a Created/LastModified bound is given; a window over
//!   60 days is an InternalServiceFault (reported). GetCharges: charges of encounters that are
//!   not `Approved` are returned only with `IncludeUnapprovedCharges=T` (guide); a posting-date
//!   window over 60 days returns nothing (reported).
//! - **Fields**: an empty `<Fields/>`, or one with no flag `true`, returns every member;
//!   otherwise exactly the members whose flag is `true` (the reported "explicit true returns an
//!   empty placeholder" behaviour is not simulated).
//! - **Empty lists** carry one empty placeholder item (`<Patients><PatientData/></Patients>`).
//!   Records are ordered by ID, not by modification time. More than `max_records` rows in one
//!   response is an InternalServiceFault.
//! - **GetAllPatients**: records with `ID >= StartKey`, `BatchSize` 1–1000 (else
//!   `IsError=true`), `Key/nextStartKey` = the ID of the first record of the next page, and no
//!   `Key` on the last page.
//! - **UpdatePatient** changes only the members present in the request; absent (or nil) members
//!   stay unchanged; an empty element sets the member to the empty string. The patient is found
//!   by `PatientID` only (required here). Nested `Cases` in CreatePatient/UpdatePatient are
//!   accepted and ignored.
//! - **Deleted appointments** vanish from GetAppointments and [`KareoSim::rows`]; GetAppointment
//!   still returns them with `IsDeleted=true`.
//! - **`xs:dateTime` values without an offset** in writes (a date of service
//!   `2026-09-29T00:00:00`) are practice-local times, as WCF keeps an unspecified `DateTime`.
//! - **GetEncounterDetails** `EncounterStatus` is numeric: Draft 1, Submitted 2, Approved 3
//!   (reported), Rejected 4, Unpayable 5. CreateEncounter defaults to Draft.
//! - **Validation errors** of writes (unknown patient, provider, location, practice, missing
//!   guide-required members) are HTTP 200 `IsError=true` with a message; the write is not applied.
//! - A `Throttle`/`AuthFailure` response carries no payload. A 500 fault has no
//!   `ErrorResponse`.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() {
//! let sim = kareo_sim::KareoSim::start(kareo_sim::SimConfig::default()).await;
//! let url = sim.url(); // http://127.0.0.1:PORT/services/soap/2.1/KareoServices.svc
//! sim.advance(chrono::Duration::minutes(5));
//! sim.update(kareo_sim::Family::Patients, "1", &[("FirstName", "Zoë")]);
//! # let _ = url;
//! # }
//! ```

mod clock;
mod data;
mod guide;
mod ops;
mod server;
mod xmlin;
mod xmlout;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use data::synthetic_patient;
pub use xmlout::render_list_response;

/// A record: member name (exact Kareo spelling of the family's `*Data` type) → value, as the
/// wire carries it (dates already in the response form).
///
/// Two conventions for members that are not strings in the schema: an encounter's
/// `ServiceLines` holds comma-separated service line IDs (rendered as `ServiceLineRes` items).
pub type Row = BTreeMap<String, String>;

/// The simulator's configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `RequestHeader/CustomerKey` the simulator accepts.
    pub customer_key: String,
    /// More customer keys accepted with the same user and password: other accounts reading the
    /// same practice (benchmarks of many tenants, each with its own per-account throttle).
    pub other_customer_keys: Vec<String>,
    /// `RequestHeader/User` the simulator accepts.
    pub user: String,
    /// `RequestHeader/Password` the simulator accepts (compared after XML unescaping).
    pub password: String,
    /// The one practice's name.
    pub practice_name: String,
    /// The one practice's ID.
    pub practice_id: i64,
    /// `SecurityResponse/CustomerId` and GetCustomerIdFromKey's answer.
    pub customer_id: i64,
    /// The practice's time zone: response dates are written in it, filter dates read in it.
    pub timezone: Tz,
    /// Seed of the data set, the fault rates and the response variations.
    pub seed: u64,
    /// The initial simulated clock.
    pub start: DateTime<Utc>,
    /// Number of providers generated.
    pub providers: usize,
    /// Number of service locations generated.
    pub service_locations: usize,
    /// Number of procedure codes generated (at most the built-in list's length, 12).
    pub procedure_codes: usize,
    /// Number of patients generated.
    pub patients: usize,
    /// Number of appointments generated.
    pub appointments: usize,
    /// Number of encounters generated (each with 1–3 charges and a transaction per charge).
    pub encounters: usize,
    /// Number of payments generated.
    pub payments: usize,
    /// Answer calls that come sooner than the documented interval with Kareo's 429 text.
    pub enforce_throttle: bool,
    /// More rows than this in one list response → InternalServiceFault.
    pub max_records: Option<usize>,
    /// Tebra locks a user after repeated failed sign-ins until a system administrator unlocks
    /// it: after this many refused passwords for [`SimConfig::user`], every call of that user
    /// (right password or not) answers `Authenticated=false` with [`LOCKED_TEXT`] until
    /// [`KareoSim::unlock`]. `None`: never locks.
    pub lockout_after: Option<u32>,
    /// Operations the user may not call (a user without the System Administrator role):
    /// answered `Authenticated=true Authorized=false` with the operation's name in
    /// `PermissionsMissing`.
    pub denied: Vec<String>,
    /// How the simulator reads what Kareo's guides leave open ([`Reality`]); the default is
    /// the reading described under *Assumptions* above.
    pub reality: Reality,
}

/// One reading of each behaviour Kareo does not document (`kareo-api.md` §6, §10; issue #15),
/// chosen per test so that the simulator can disagree with the product's own guesses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reality {
    /// The precision of `CreatedDate` / `LastModifiedDate` stamps.
    pub stamps: Stamps,
    /// Kareo's clock minus the practice's: records are stamped, and filter bounds without a
    /// zone are compared, on a wall clock this far east (positive) or west (negative) of the
    /// practice's (Kareo's servers in another US zone than the practice).
    pub clock_offset: chrono::Duration,
    /// Whether the ends of a `From…`/`To…` pair of created/last-modified dates are inclusive.
    pub bounds: Bounds,
    /// GetPatients, GetServiceLocations and GetEncounterDetails answer `IsError=true`
    /// "PracticeID is required." when the filter has no `PracticeID` (the guide's Dec 2024
    /// correction).
    pub practice_id_required: bool,
    /// A list response is silently cut to its first N rows (by ID) instead of faulting.
    pub truncate_at: Option<usize>,
    /// GetAppointments applies its default `StartDate` window (3 days before today to 4 after)
    /// even when a last-modified pair is given: changes to appointments booked further out
    /// never arrive by last-modified window alone. Not survivable blindly: `check --probe`
    /// finds it.
    pub appointment_window_always: bool,
    /// GetAppointment answers a deleted appointment "Appointment not found." (`IsError`)
    /// instead of the record with `IsDeleted=true`.
    pub deleted_not_found: bool,
    /// Appointment times in writes (`StartTime`, `EndTime`) are read as the practice's wall
    /// clock whatever offset or `Z` they carry (WCF keeping the clock value of a `DateTime`).
    pub write_times_wall_clock: bool,
    /// GetCharges answers nothing, silently, for a last-modified window wider than this (a
    /// public client saw windows over ~30 days come back empty).
    pub charges_empty_above: Option<chrono::Duration>,
    /// A throttled call counts too: each 429 restarts the operation's interval (the guide
    /// does not say whether rejected calls count). A client that retries sooner than the
    /// interval after each refusal never gets through.
    pub throttle_counts_rejected: bool,
    /// A `Fields` selection with any explicit `true` flag is answered with one empty
    /// placeholder item and no fault (a connector's report for GetCharges and GetPatients,
    /// `kareo-api.md` §3); only an empty `Fields` returns records.
    pub explicit_fields_placeholder: bool,
    /// GetCharges without a `FromPostingDate`/`ToPostingDate` pair answers only charges posted
    /// in the last this-many days (of the practice's today), whatever the last-modified pair
    /// says: a change to a charge posted earlier never arrives by last-modified window alone.
    /// Not survivable blindly: `check --probe` finds it.
    pub charges_posting_window: Option<chrono::Duration>,
    /// A date-only `To…` bound (`2026-10-05`) is read as the end of that day (the whole day
    /// included) instead of its midnight (.NET's parse, the default).
    pub date_only_to_end_of_day: bool,
}

/// The precision of record stamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stamps {
    /// `10/5/2026 2:30:07 PM`: whole seconds (the default).
    #[default]
    Seconds,
    /// `2026-10-05`: the date only, as the guide's examples show; compared as its midnight,
    /// so two changes of one day carry the same stamp.
    DateOnly,
}

/// Which ends of a date filter pair are inclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bounds {
    /// `From <= t <= To` (the default).
    #[default]
    Inclusive,
    /// `From < t <= To`.
    ExclusiveFrom,
    /// `From <= t < To` (half-open).
    ExclusiveTo,
    /// `From < t < To`.
    Exclusive,
}

impl Reality {
    /// Every reading at once that a product must survive blindly, together: date-only stamps,
    /// Kareo's clock 3 h west, open bounds, PracticeID required, truncation at 1,000, throttled
    /// calls restarting the interval, explicit field flags answering a placeholder, date-only
    /// `To` bounds covering their day.
    pub fn hostile() -> Reality {
        Reality {
            stamps: Stamps::DateOnly,
            clock_offset: chrono::Duration::hours(-3),
            bounds: Bounds::Exclusive,
            practice_id_required: true,
            truncate_at: Some(1000),
            appointment_window_always: false,
            deleted_not_found: false,
            write_times_wall_clock: false,
            charges_empty_above: None,
            throttle_counts_rejected: true,
            explicit_fields_placeholder: true,
            charges_posting_window: None,
            date_only_to_end_of_day: true,
        }
    }

    /// The version stamp of a change made at `t` (the simulated clock), as Kareo writes it.
    pub(crate) fn stamp(&self, t: DateTime<Utc>, tz: Tz) -> String {
        let kareo_clock = t + self.clock_offset;
        match self.stamps {
            Stamps::Seconds => crate::clock::stamp(kareo_clock, tz),
            Stamps::DateOnly => kareo_clock
                .with_timezone(&tz)
                .date_naive()
                .format("%Y-%m-%d")
                .to_string(),
        }
    }

    /// `(from exclusive, to exclusive)`.
    pub(crate) fn exclusive(&self) -> (bool, bool) {
        match self.bounds {
            Bounds::Inclusive => (false, false),
            Bounds::ExclusiveFrom => (true, false),
            Bounds::ExclusiveTo => (false, true),
            Bounds::Exclusive => (true, true),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customer_key: "sim-customer-key-0001".into(),
            other_customer_keys: Vec::new(),
            user: "api.user@sim.example".into(),
            password: "p&ss<w>rd\"'".into(),
            practice_name: "Sim Family Practice & Associates".into(),
            practice_id: 1,
            customer_id: 4242,
            timezone: chrono_tz::America::New_York,
            seed: 7,
            start: default_now(),
            providers: 4,
            service_locations: 2,
            procedure_codes: 8,
            patients: 25,
            appointments: 40,
            encounters: 12,
            payments: 15,
            enforce_throttle: true,
            max_records: None,
            lockout_after: None,
            denied: Vec::new(),
            reality: Reality::default(),
        }
    }
}

/// The default initial simulated clock: 2026-10-01T15:00:00Z.
pub fn default_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 15, 0, 0)
        .single()
        .expect("valid instant")
}

pub use kareo::Family;

/// A fault to inject.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 500 with an `s:Fault` `a:InternalServiceFault`.
    Http500Fault,
    /// A bare HTTP status (e.g. 429, 503) with a tiny text body.
    HttpStatus(u16),
    /// Sleep this long, then answer: normally for reads; for writes the write is **not**
    /// applied and the late answer is an InternalServiceFault (use [`Fault::TimeoutAfterCommit`]
    /// for "applied, but the answer never came").
    Timeout(std::time::Duration),
    /// Drop the connection: without a response, or (chosen by the seeded RNG) after sending
    /// the headers and part of the body.
    Reset,
    /// HTTP 200 with XML that is not well-formed.
    Malformed,
    /// HTTP 200 with the real response cut in the middle of a record (`Content-Length` matches
    /// the cut body).
    Truncated,
    /// HTTP 200 with `ErrorResponse IsError=true` and Kareo's 429 throttle text.
    Throttle,
    /// HTTP 200 with the SecurityResponse of a wrong user name/password.
    AuthFailure,
    /// HTTP 200 with a well-formed response whose result element is the wrong one
    /// (`GetFooResponse/GetFooResult`).
    SchemaMismatch,
    /// Handle the call normally (apply a write), then sleep this long before answering.
    TimeoutAfterCommit(std::time::Duration),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Http500Fault => "Http500Fault",
            Fault::HttpStatus(_) => "HttpStatus",
            Fault::Timeout(_) => "Timeout",
            Fault::Reset => "Reset",
            Fault::Malformed => "Malformed",
            Fault::Truncated => "Truncated",
            Fault::Throttle => "Throttle",
            Fault::AuthFailure => "AuthFailure",
            Fault::SchemaMismatch => "SchemaMismatch",
            Fault::TimeoutAfterCommit(_) => "TimeoutAfterCommit",
        }
    }
}

/// When to inject a fault. Rules are tried in the order they were added; the first that
/// matches a call is used (and its `times` counted down).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// The operation it applies to; `None` = any operation.
    pub op: Option<String>,
    /// The fault.
    pub fault: Fault,
    /// How many calls it applies to; `None` = every matching call.
    pub times: Option<usize>,
    /// Probability per matching call (seeded RNG); `None` = always.
    pub rate: Option<f64>,
}

impl FaultRule {
    /// `fault` once, on any operation (the Dock simulator's rules read the same way:
    /// `FaultRule::new(fault).on(…).times(n)`).
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            op: None,
            fault,
            times: Some(1),
            rate: None,
        }
    }

    /// Only on calls of `op`.
    pub fn on(mut self, op: &str) -> FaultRule {
        self.op = Some(op.to_string());
        self
    }

    /// On the next `n` matching calls.
    pub fn times(mut self, n: usize) -> FaultRule {
        self.times = Some(n);
        self
    }

    /// On every matching call.
    pub fn always(mut self) -> FaultRule {
        self.times = None;
        self
    }

    /// On each matching call with probability `p` (the simulator's seeded RNG).
    pub fn rate(mut self, p: f64) -> FaultRule {
        self.rate = Some(p);
        self
    }
}

/// What became of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A normal response (`IsError=false`).
    Ok,
    /// HTTP 200 with `IsError=true` (validation error, bad filter value, …).
    AppError,
    /// The throttle answered (real or injected).
    Throttled,
    /// Credentials did not match (real or injected).
    AuthFailed,
    /// HTTP 500 SOAP fault; the fault code (`InternalServiceFault`, `DeserializationFailed`,
    /// `ActionNotSupported`, `VersionMismatch`).
    SoapFault(&'static str),
    /// A bare HTTP status (400, 404, 405, 415).
    HttpStatus(u16),
    /// An injected fault other than Throttle/AuthFailure (see [`Fault`] for the names).
    Injected(&'static str),
}

/// One entry of the call log. Holds no request body, record value or credential.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Operation name (from the SOAPAction; empty if there was none).
    pub op: String,
    /// Wall-clock time the call arrived.
    pub at: DateTime<Utc>,
    /// Simulated clock at that time.
    pub sim_now: DateTime<Utc>,
    /// What became of it.
    pub outcome: Outcome,
    /// Did the request carry the configured credentials?
    pub credentials_valid: bool,
    /// Number of records in the response (list and single reads).
    pub records: usize,
}

pub(crate) struct Store {
    pub rows: BTreeMap<Family, BTreeMap<i64, Row>>,
    /// Members list reads answer instead of the record's own ([`KareoSim::set_raw`]).
    pub overrides: BTreeMap<(Family, i64), Row>,
    pub deleted_appointments: BTreeMap<i64, Row>,
    pub next_id: HashMap<Family, i64>,
    pub next_service_line: i64,
}

pub(crate) struct State {
    pub now: DateTime<Utc>,
    pub store: Store,
    pub faults: Vec<FaultRule>,
    pub rng: StdRng,
    pub latency: std::time::Duration,
    pub calls: Vec<Call>,
    pub last_accepted: HashMap<&'static str, Instant>,
    pub bulk_patients: Option<u64>,
    /// A bulk body rendered beforehand ([`KareoSim::set_bulk_rendered`]).
    pub bulk_rendered: Option<bytes::Bytes>,
    /// Refused passwords of the configured user so far (for [`SimConfig::lockout_after`]).
    pub failed_sign_ins: u32,
}

pub(crate) struct Inner {
    pub cfg: SimConfig,
    pub state: Mutex<State>,
    pub addr: std::net::SocketAddr,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator. Cheap to clone; the server runs on the Tokio runtime it was started on
/// until that runtime shuts down.
#[derive(Clone)]
pub struct KareoSim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KareoSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KareoSim")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

/// The endpoint path.
pub const PATH: &str = "/services/soap/2.1/KareoServices.svc";

impl KareoSim {
    /// Generates the data set and starts serving on `127.0.0.1:0`.
    pub async fn start(cfg: SimConfig) -> KareoSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut store = data::generate(&cfg);
        store.restamp(&cfg);
        let state = State {
            now: cfg.start,
            store,
            faults: Vec::new(),
            rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed_fa17),
            latency: std::time::Duration::ZERO,
            calls: Vec::new(),
            last_accepted: HashMap::new(),
            bulk_patients: None,
            bulk_rendered: None,
            failed_sign_ins: 0,
        };
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(state),
            addr,
        });
        server::spawn(listener, inner.clone());
        tracing::debug!(%addr, "kareo simulator listening");
        KareoSim { inner }
    }

    /// The full endpoint URL, `http://127.0.0.1:PORT/services/soap/2.1/KareoServices.svc`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.inner.addr, PATH)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// The simulated clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.lock().now
    }

    /// Moves the simulated clock forward (or back, with a negative duration).
    pub fn advance(&self, d: chrono::Duration) {
        let mut st = self.inner.lock();
        st.now += d;
    }

    /// Sets the simulated clock.
    pub fn set_now(&self, t: DateTime<Utc>) {
        self.inner.lock().now = t;
    }

    /// Changes members of a record and stamps its `LastModifiedDate` (`ModifiedDate`) with the
    /// simulated clock. Panics if there is no such record (a test bug).
    pub fn update(&self, family: Family, id: &str, changes: &[(&str, &str)]) {
        let mut st = self.inner.lock();
        let now = st.now;
        let id = parse_id(id);
        let row = st
            .store
            .rows
            .get_mut(&family)
            .and_then(|m| m.get_mut(&id))
            .unwrap_or_else(|| panic!("no {family:?} record with ID {id}"));
        for (k, v) in changes {
            row.insert((*k).to_string(), (*v).to_string());
        }
        let cfg = &self.inner.cfg;
        row.insert(
            family.version_member().to_string(),
            cfg.reality.stamp(now, cfg.timezone),
        );
    }

    /// Makes list reads answer one member of a record as `value`, exactly as written, while
    /// the record is still filtered by its real stamps (a record Kareo answers with a value no
    /// reader expects, say an unreadable `LastModifiedDate`).
    pub fn set_raw(&self, family: Family, id: &str, member: &str, value: &str) {
        let mut st = self.inner.lock();
        let id = parse_id(id);
        st.store
            .overrides
            .entry((family, id))
            .or_default()
            .insert(member.to_string(), value.to_string());
    }

    /// Adds a record stamped `CreatedDate = LastModifiedDate = now` and returns its ID (a new
    /// one unless the row carries its ID member).
    pub fn insert(&self, family: Family, mut row: Row) -> String {
        let mut st = self.inner.lock();
        let now = self
            .inner
            .cfg
            .reality
            .stamp(st.now, self.inner.cfg.timezone);
        let id = match row.get(family.id_member()).map(|s| s.trim().parse::<i64>()) {
            Some(Ok(id)) => {
                let next = st.store.next_id.entry(family).or_insert(1);
                *next = (*next).max(id + 1);
                id
            }
            _ => st.store.new_id(family),
        };
        row.insert(family.id_member().to_string(), id.to_string());
        if family.has_created() {
            row.insert("CreatedDate".into(), now.clone());
        }
        row.insert(family.version_member().to_string(), now);
        st.store.rows.entry(family).or_default().insert(id, row);
        id.to_string()
    }

    /// Deletes an appointment as DeleteAppointment does.
    pub fn delete_appointment(&self, id: &str) {
        let mut st = self.inner.lock();
        let id = parse_id(id);
        st.store.delete_appointment(id);
    }

    /// Every record of a family held now (deleted appointments excluded), ordered by ID.
    pub fn rows(&self, family: Family) -> Vec<Row> {
        let st = self.inner.lock();
        st.store
            .rows
            .get(&family)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// IDs of the records of a family whose version stamp, read by the simulator's own rules,
    /// is in `[from, to]` (deleted appointments excluded).
    pub fn modified(
        &self,
        family: Family,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> std::collections::BTreeSet<String> {
        let tz = self.inner.cfg.timezone;
        self.rows(family)
            .into_iter()
            .filter(|r| {
                r.get(family.version_member())
                    .and_then(|v| crate::clock::read(v, tz))
                    .is_some_and(|t| t >= from && t <= to)
            })
            .filter_map(|r| r.get(family.id_member()).cloned())
            .collect()
    }

    /// A record's `StartDate`, read by the simulator's own rules.
    pub fn starts(&self, row: &Row) -> Option<DateTime<Utc>> {
        row.get("StartDate")
            .and_then(|v| crate::clock::read(v, self.inner.cfg.timezone))
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.inner.lock().faults.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Latency added to every response.
    pub fn set_latency(&self, d: std::time::Duration) {
        self.inner.lock().latency = d;
    }

    /// Bulk mode: GetPatients answers (after authentication and throttling) with `n`
    /// [`synthetic_patient`]s streamed chunk by chunk, ignoring the filter but honouring
    /// `Fields`. With every flag (empty `Fields`) and the default `customer_id`/`practice_id`,
    /// the body is byte for byte what [`render_list_response`] writes for
    /// `(0..n).map(|i| synthetic_patient(i, tz))`. No `Content-Length`: chunked, generated about
    /// 64 KiB at a time as the client reads. `None` ends bulk mode.
    pub fn set_bulk_patients(&self, n: Option<u64>) {
        self.inner.lock().bulk_patients = n;
    }

    /// Bulk mode with the body rendered beforehand: while bulk mode is on, GetPatients answers
    /// with `body` as given (whatever `Fields` asks), sent 64 KiB at a time without copying.
    /// For benchmarks of the client: rendering [`synthetic_patient`]s as the client reads caps
    /// the send rate at what one core renders (about 150 MB/s here), below what the client
    /// parses. Faults still apply (a truncated or reset body). `None` goes back to rendering.
    pub fn set_bulk_rendered(&self, body: Option<bytes::Bytes>) {
        self.inner.lock().bulk_rendered = body;
    }

    /// The call log.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().calls.clone()
    }

    /// Number of calls of `op` (every outcome).
    pub fn call_count(&self, op: &str) -> usize {
        self.inner
            .lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .count()
    }

    /// Forgets the call log and the throttle's memory of previous calls.
    pub fn reset_calls(&self) {
        let mut st = self.inner.lock();
        st.calls.clear();
        st.last_accepted.clear();
    }

    /// A system administrator unlocks the user ([`SimConfig::lockout_after`]).
    pub fn unlock(&self) {
        self.inner.lock().failed_sign_ins = 0;
    }

    /// Whether the user is locked now.
    pub fn locked(&self) -> bool {
        let st = self.inner.lock();
        self.inner
            .cfg
            .lockout_after
            .is_some_and(|n| st.failed_sign_ins >= n)
    }
}

/// `SecurityResult` of a locked user (the simulator's wording: Kareo's is not published).
pub const LOCKED_TEXT: &str = "User account is locked. Please contact your system administrator.";

fn parse_id(id: &str) -> i64 {
    id.trim()
        .parse()
        .unwrap_or_else(|_| panic!("record IDs are integers, got {id:?}"))
}

impl Store {
    /// Rewrites the generated stamps as [`Reality`] writes them (a no-op by default).
    fn restamp(&mut self, cfg: &SimConfig) {
        if cfg.reality.stamps == Stamps::Seconds && cfg.reality.clock_offset.is_zero() {
            return;
        }
        for (family, rows) in &mut self.rows {
            for row in rows.values_mut() {
                for member in ["CreatedDate", family.version_member()] {
                    if let Some(t) = row
                        .get(member)
                        .and_then(|v| crate::clock::read(v, cfg.timezone))
                    {
                        row.insert(member.to_string(), cfg.reality.stamp(t, cfg.timezone));
                    }
                }
            }
        }
    }

    pub(crate) fn new_id(&mut self, family: Family) -> i64 {
        let next = self.next_id.entry(family).or_insert(1);
        let id = *next;
        *next += 1;
        id
    }

    pub(crate) fn get(&self, family: Family, id: i64) -> Option<&Row> {
        self.rows.get(&family).and_then(|m| m.get(&id))
    }

    pub(crate) fn delete_appointment(&mut self, id: i64) -> bool {
        match self
            .rows
            .get_mut(&Family::Appointments)
            .and_then(|m| m.remove(&id))
        {
            Some(row) => {
                self.deleted_appointments.insert(id, row);
                true
            }
            None => false,
        }
    }
}
