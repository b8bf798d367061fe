//! The Kareo port of write-back: one call of one operation, its result records. The executor
//! and the webhook handler reach Kareo only through it, so they are tested with a scripted
//! Kareo as well as against the simulator.

use std::time::Duration;

use futures_util::future::BoxFuture;
use kareo::{Credentials, KareoClient, KareoError, Record};
use serde_json::Value;

/// Calls Kareo.
pub trait KareoCall: Send + Sync {
    /// Sends `op` (a schema operation name) with `body`; its result records. A write whose
    /// outcome is ambiguous is never retried by the implementation.
    fn call<'a>(
        &'a self,
        creds: &'a Credentials,
        op: &'static str,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Record>, KareoError>>;

    /// How long one call may take (a claim outlives it).
    fn timeout(&self) -> Duration;
}

impl KareoCall for KareoClient {
    fn call<'a>(
        &'a self,
        creds: &'a Credentials,
        op: &'static str,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Record>, KareoError>> {
        Box::pin(async move {
            let op = kareo::op(op).expect("write-back operations are in the schema");
            Ok(KareoClient::call(self, creds, op, body).await?.records)
        })
    }

    fn timeout(&self) -> Duration {
        self.config().timeout
    }
}
