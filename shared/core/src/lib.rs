//! kareo-dock's sync logic, pure: record families' polling policies, tenant configs, windows
//! and cursors, change events, and the poller. It talks to the outside only through the
//! traits in [`ports`] and [`source`]; adapters live at the edges (DynamoDB, Secrets Manager and
//! Lambda in `kareo-dock-aws`; files and memory in [`local`]; the Kareo client in [`source`]).

pub mod deliver;
pub mod event;
pub mod function_url;
pub mod local;
pub mod mapping;
pub mod metrics;
pub mod policy;
pub mod poll;
pub mod ports;
pub mod run;
pub mod source;
pub mod tenant;
pub mod webhook;
pub mod write;

pub use event::{ChangeEvent, ChangeKind, FieldChange};
pub use kareo::Family;
pub use mapping::Mapping;
pub use poll::{Mode, Outcome, PollConfig, Poller, Report};
pub use tenant::TenantConfig;
