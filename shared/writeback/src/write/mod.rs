//! Write commands, run exactly once per (tenant, command id). The protocol — claim, mark
//! sending, call, settle; an ambiguous outcome reconciled and never re-sent — is in the crate
//! documentation (`docs/write-back.md`). In the code it is written once, in [`exec`]; each
//! operation supplies its hooks in `ops/<operation>.rs` (check, request, answer, reconcile).
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
pub use exec::{forbidden, run_command, Caller, WriteResult, WriteStatus, Writer};
pub use kareo::KareoCall;
