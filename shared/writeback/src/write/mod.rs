//! Write-back to Kareo: typed commands, run exactly once per command id.
//!
//! A command is JSON `{"id", "tenant", "op", "data"}` ([`Command`]); `op` is one of
//! CreatePatient, UpdatePatient, CreateAppointment, DeleteAppointment, CreateEncounter,
//! CreatePayment. Its data is checked before anything is sent, and every problem is reported
//! together, naming the field ([`Problem`]).
//!
//! **Exactly once** (DESIGN §3), keyed `write#<tenant>#<id>` in the [`domain::ports::Ledger`]:
//! 1. claim (`pending` with a lease) — a `done` or `needs_review` id answers with the stored
//!    result without calling Kareo (a repeat with other data is refused); a live claim answers
//!    `in_progress`;
//! 2. send the request (member order and namespaces from Kareo's schema, so nothing is dropped
//!    silently); the Kareo client never retries a write whose outcome is ambiguous;
//! 3. success → `done` with the Kareo ids; a refusal (validation, security) → `failed`, which
//!    may be sent again under the same id once fixed; a certain non-send (throttle, refused
//!    connection) → the claim is given back (`retry`);
//! 4. an **ambiguous** outcome (timeout or 5xx after sending, or an expired claim of a crashed
//!    attempt) is never re-sent: the record is looked up — the patient by name, date of birth
//!    and practice, the appointment by patient and start time, the payment by reference number,
//!    amount and payer type, the encounter by patient, date of service and procedure codes, each
//!    created within the claim's window (± `skew`); the delete by `IsDeleted`; the update by
//!    reading the patient back. One match → `done` (`reconciled`); none or several →
//!    `needs_review` with a reason (ids and classes only). A lookup that fails leaves the claim
//!    pending: the same command sent after the lease reconciles again.
//!
//! **UpdatePatient** is a read-modify-write: GetPatient, then every patient field this product
//! manages ([`domain::op::PATIENT_FIELDS`]) is sent — the current value, or the new one where the
//! command names the field (`null` clears a clearable field) — so whether Kareo clears omitted
//! members (undocumented) does not matter for those fields; then the patient is read back and
//! each field the command set is compared. A field that did not take → `needs_review` naming
//! the fields. Members outside that list (cases, insurance, guarantor, employer, …) are not
//! sent.
//!
//! Nothing here logs or stores record values: logs carry tenant, command id, op and status;
//! ledger reasons carry ids and error classes; Kareo's own error text is returned to the
//! caller only.

mod check;
pub mod command;
pub mod exec;
pub mod kareo;
mod ops;

pub use command::{Command, Data, Problem};
pub use domain::op::Op;
pub use exec::{run_command, WriteResult, WriteStatus, Writer};
pub use kareo::KareoCall;
