//! The Dock webhook function (a Function URL with auth `NONE`: Dock cannot sign requests the
//! AWS way). A request must first carry the tenant's URL token (`/<tenant>/<token>`, made by
//! `kareo-dock webhook register`), checked against the tenant directory this function holds
//! in memory — read at start and again at most every 15 s — so a request without it costs no
//! secret read, no query and no HMAC. Then: Dock's verification challenge (only while a
//! registration is armed), or a delivery verified by its `X-Dock-Signature-256` HMAC and its
//! signed `createdAt`, deduplicated, and turned into the write commands the tenant's
//! `webhooks:` rules make of it (see `domain::webhook`).
//!
//! Environment: `KAREO_DOCK_TABLE`, `KAREO_ENDPOINT` (optional), `DOCK_API_URL` /
//! `DOCK_AUTH_URL` (optional). IAM: DynamoDB item access on the table,
//! secretsmanager:GetSecretValue on the tenants' Kareo and Dock secrets.

use aws::function_url;
use aws::{DynamoStore, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::SystemClock;
use kareo::{ClientConfig, KareoClient};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use writeback::webhook::gate::DIRECTORY_TTL;
use writeback::webhook::{DirectoryCache, Hooks};
use writeback::write::Writer;

struct App {
    store: DynamoStore,
    directory: DirectoryCache,
    secrets: CachedSecrets<SecretsManagerSource>,
    kareo: KareoClient,
    dock: dock::DockClient,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let sdk = aws::sdk_config().await;
    let app = App {
        store: aws::state_store(&sdk)?,
        directory: DirectoryCache::new(DIRECTORY_TTL),
        secrets: aws::cached_secrets(&sdk),
        kareo: KareoClient::new(ClientConfig::from_env())?,
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
    let writer = Writer::new(
        &app.kareo,
        &app.store,
        &SystemClock,
        event.context.request_id.clone(),
    );
    let hooks = Hooks {
        writer: &writer,
        dock: &app.dock,
        secrets: &app.secrets,
        directory: &directory,
        store: &app.store,
    };
    let out = hooks.handle(&req).await;
    Ok(function_url::response(out.status, &out.body))
}
