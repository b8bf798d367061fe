//! The Dock webhook function (a Function URL with auth `NONE`: Dock cannot sign requests the
//! AWS way). A request must first carry the tenant's URL token (`/<tenant>/<token>`, made by
//! `kareo-dock webhook register`), checked against the tenant directory this function holds
//! in memory — read at start and again at most every 15 s — so a request without it costs no
//! secret read, no query and no HMAC. Then: Dock's verification challenge (only while a
//! registration is armed), or a delivery verified by its `X-Dock-Signature-256` HMAC and its
//! signed `createdAt`, deduplicated, and turned into the write commands the tenant's
//! `webhooks:` rules make of it (see `domain::webhook`).
//!
//! Its schedule (`{"mode": "catch_up"}`, hourly) reads back from Dock's event log, for every
//! registered tenant, the events of the last [`LOOKBACK_HOURS`] hours (or the input's
//! `"hours"`) that Dock could not deliver, through the same dedupe and rules; a tenant whose
//! log could not be read fails the invocation (counted by the function's error alarm).
//!
//! Environment: `KAREO_DOCK_TABLE`, `KAREO_ENDPOINT` (optional), `DOCK_API_URL` /
//! `DOCK_AUTH_URL` (optional). IAM (the template's `WebhookRole`, held to it by
//! `tools/check_template.py`): the table's `tenant`, `hook`, `ledger#webhook#…`,
//! `ledger#write#…#dock-…` and `link#…` items only (never snapshots or cursors), and the
//! tenants' Kareo and Dock secrets.

use aws::function_url;
use aws::{DynamoStore, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{Clock, SystemClock};
use kareo::budget::SharedOps;
use kareo::KareoClient;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use writeback::webhook::gate::DIRECTORY_TTL;
use writeback::webhook::{Directory, DirectoryCache, Hooks};
use writeback::write::Writer;

/// How far back a scheduled catch-up reads Dock's event log: a day, well inside the dedupe's
/// memory ([`writeback::webhook::DEDUPE_TTL_DAYS`]), so an event delivered meanwhile is a
/// duplicate.
const LOOKBACK_HOURS: i64 = 24;

struct App {
    store: DynamoStore,
    directory: DirectoryCache,
    secrets: CachedSecrets<SecretsManagerSource>,
    kareo: KareoClient,
    dock: dock::DockClient,
}

type AppWriter<'a> = Writer<'a, DynamoStore, SystemClock>;

impl App {
    /// The write executor for one invocation (its claims are held by the request id).
    fn writer(&self, request_id: &str) -> AppWriter<'_> {
        Writer::new(
            &self.kareo,
            &self.store,
            &SystemClock,
            request_id.to_string(),
        )
    }

    /// The endpoint over this function's clients, for one invocation.
    fn hooks<'a>(
        &'a self,
        writer: &'a AppWriter<'a>,
        directory: &'a Directory,
    ) -> Hooks<'a, DynamoStore, SystemClock, CachedSecrets<SecretsManagerSource>, DynamoStore> {
        Hooks {
            writer,
            dock: &self.dock,
            secrets: &self.secrets,
            directory,
            store: &self.store,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let sdk = aws::function_sdk_config().await;
    let store = aws::state_store(&sdk)?;
    let app = App {
        // Every operation: the write function writes to the same accounts.
        kareo: aws::kareo_client(&store, SharedOps::Every)?,
        store,
        directory: DirectoryCache::new(DIRECTORY_TTL),
        secrets: aws::cached_secrets(&sdk, aws::SECRET_TTL),
        dock: dock::DockClient::new(dock::DockConfig::from_env())?,
    };
    // Read the directory before the first request: a cold start costs no query that a
    // caller's request caused (a failure here is retried at the first request).
    if let Err(e) = app.directory.get(&app.store).await {
        tracing::warn!(
            class = e.class().name(),
            "tenant directory not read at start"
        );
    }
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(app, event).await
    }))
    .await
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let Some(req) = function_url::parse(&event.payload) else {
        // A Function URL request always arrives wrapped as one; a bare input can only come
        // from an IAM-authorised invoke (the schedule).
        if event.payload.get("mode").and_then(Value::as_str) == Some("catch_up") {
            return catch_up(app, &event).await;
        }
        return Ok(function_url::response(
            400,
            &json!({"outcome": "malformed", "error": "not a Function URL request"}),
        ));
    };
    let directory = match app.directory.get(&app.store).await {
        Ok(d) => d,
        Err(e) => {
            return Ok(function_url::response(
                503,
                &json!({"outcome": "retry", "error": format!("tenant configs unavailable ({})", e.class())}),
            ))
        }
    };
    let writer = app.writer(&event.context.request_id);
    let hooks = app.hooks(&writer, &directory);
    let out = hooks.handle(&req).await;
    Ok(function_url::response(out.status, &out.body))
}

/// The scheduled catch-up: every registered tenant's recent events, read back from Dock.
async fn catch_up(app: &App, event: &LambdaEvent<Value>) -> Result<Value, Error> {
    let max = writeback::webhook::DEDUPE_TTL_DAYS * 24 - 24;
    let hours = event
        .payload
        .get("hours")
        .and_then(Value::as_i64)
        .unwrap_or(LOOKBACK_HOURS)
        .clamp(1, max);
    let directory = app
        .directory
        .get(&app.store)
        .await
        .map_err(|e| format!("tenant configs unavailable ({})", e.class()))?;
    let writer = app.writer(&event.context.request_id);
    let hooks = app.hooks(&writer, &directory);
    let end = SystemClock.now();
    let start = end - chrono::Duration::hours(hours);
    let mut reports = serde_json::Map::new();
    let mut failed = 0usize;
    for tenant in directory.registered() {
        match hooks.catch_up(tenant, start, end).await {
            Ok(r) => {
                reports.insert(tenant.tenant.clone(), json!(r));
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(tenant = %tenant.tenant, error = %e, "webhook catch-up failed");
                reports.insert(tenant.tenant.clone(), json!({"error": e}));
            }
        }
    }
    if failed > 0 {
        return Err(format!("webhook catch-up failed for {failed} tenant(s)").into());
    }
    Ok(json!({"outcome": "caught_up", "hours": hours, "tenants": reports}))
}
