//! Task creation: a change event, through the tenant's rules ([`domain::mapping`]), becomes
//! Dock tasks or deployed workflows, each exactly once ([`deliver`]). What the task function
//! needs.

pub mod deliver;
pub mod dock;
pub mod metrics;
