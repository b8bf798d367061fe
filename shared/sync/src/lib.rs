//! Polling: one family of one tenant read from Kareo window by window, each record's change
//! handed off exactly once before the cursor passes it ([`poll`]), one invocation over the
//! tenants that enable the family ([`run`]), and how a scheduled invocation spreads them over
//! concurrent invocations ([`fanout`]). What the poll function needs and nothing else.

pub mod fanout;
pub mod metrics;
pub mod poll;
pub mod run;

pub use poll::{Mode, Outcome, PollConfig, Poller, Report};
