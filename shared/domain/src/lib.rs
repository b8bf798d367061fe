//! kareo-dock's vocabulary, pure: record families' polling policies, the tenant config (its
//! families, task rules and webhook rules, read with file:line errors), change events, write
//! commands, the ports every job talks to the outside through, and the embedded adapters
//! (files and memory, [`local`]). The jobs are crates above it: `sync` (the poller), `tasks`
//! (change events → Dock tasks) and `writeback` (write commands and Dock webhooks → Kareo).
//! Adapters of AWS services are in `aws`.

pub mod class;
pub mod config;
pub mod event;
pub mod hooks;
pub mod http;
pub mod invocation;
pub mod local;
pub mod mapping;
pub mod metrics;
pub mod op;
pub mod policy;
pub mod ports;
pub mod projection;
pub mod source;
pub mod tenant;
pub mod writers;

pub use event::{ChangeEvent, ChangeKind, FieldChange};
pub use kareo::Family;
pub use mapping::Mapping;
pub use tenant::TenantConfig;
