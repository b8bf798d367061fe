//! The Dock webhook function (a Function URL with auth `NONE`: Dock cannot sign requests the
//! AWS way, so every delivery is authenticated by its `X-Dock-Signature-256` HMAC instead).
//! Register `https://<function url>/<tenant>` in Dock with the tenant's `webhook_secret`.
//! Answers Dock's verification challenge, verifies and deduplicates deliveries, and runs the
//! write commands the tenant's `webhooks:` rules make of them (see
//! `kareo_dock_core::webhook`).
//!
//! Environment: `KAREO_DOCK_TABLE`, `KAREO_ENDPOINT` (optional), `DOCK_API_URL` /
//! `DOCK_AUTH_URL` (optional). IAM: DynamoDB item access on the table,
//! secretsmanager:GetSecretValue on the tenants' Kareo and Dock secrets.

use kareo::{ClientConfig, KareoClient};
use kareo_dock_aws::{DynamoStore, SecretsManagerSource};
use kareo_dock_core::function_url;
use kareo_dock_core::ports::{SystemClock, TenantStore};
use kareo_dock_core::run::CachedSecrets;
use kareo_dock_core::webhook::Hooks;
use kareo_dock_core::write::Writer;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

struct App {
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    kareo: KareoClient,
    dock: dock::DockClient,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    kareo_dock_aws::init_logging();
    let sdk = kareo_dock_aws::sdk_config().await;
    let app = App {
        store: kareo_dock_aws::state_store(&sdk)?,
        secrets: kareo_dock_aws::cached_secrets(&sdk),
        kareo: KareoClient::new(ClientConfig::from_env())?,
        dock: dock::DockClient::new(dock::DockConfig::from_env())?,
    };
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
    let tenants = match app.store.tenants().await {
        Ok(t) => t,
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
        tenants: &tenants,
    };
    let out = hooks.handle(&req).await;
    Ok(function_url::response(out.status, &out.body))
}
