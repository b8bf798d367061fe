//! Kareo (Tebra) SOAP 2.1 client.
//!
//! - [`schema`]: Kareo's schema, generated from its XSDs: member order and namespaces.
//! - [`envelope`]: request envelopes written in schema order, every value escaped.
//! - [`reader`]: a streaming response reader yielding one [`Record`] at a time.
//! - [`codes`]: coded values (encounter statuses) that reads and writes spell differently.
//! - [`dates`]: the date forms Kareo sends, read in the practice's time zone.
//! - [`error`]: one error type: retryable? ambiguous?
//! - [`throttle`]: per (account, operation) spacing, retry with backoff.
//! - [`budget`]: one account's spacing shared by every process that calls it.
//! - [`client`]: the HTTP client tying them together.

pub mod codes;
pub mod dates;
pub mod envelope;
pub mod error;
pub mod family;
pub mod reader;
pub mod record;
pub mod redact;
pub mod schema;

pub use envelope::Credentials;
pub use error::KareoError;
pub use family::Family;
pub use reader::ResponseReader;
pub use record::{Nested, Record, RecordKind, Value};
pub mod budget;
pub mod client;
pub mod throttle;

pub use client::{secure_endpoint, ClientConfig, KareoClient, RecordStream, Response};
pub use schema::op;
pub mod request;
