//! Polling: one family of one tenant read from Kareo window by window, each record's change
//! handed off exactly once before the cursor passes it ([`poll`]), and one invocation over
//! every tenant that enables the family ([`run`]). What the poll function needs and nothing
//! else.

pub mod fanout;
pub mod metrics;
pub mod poll;
pub mod run;

pub use poll::{Mode, Outcome, PollConfig, Poller, Report};
