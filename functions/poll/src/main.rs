//! The poll function. Deployed once per Kareo record family (`KAREO_DOCK_FAMILY`), each on its
//! own EventBridge schedule. One invocation polls every tenant that enables the family, with
//! bounded concurrency, and hands change events to the task-creation function.
//!
//! Environment: `KAREO_DOCK_FAMILY` (e.g. `appointments`), `KAREO_DOCK_TABLE` (the state
//! table), `KAREO_DOCK_TASK_FUNCTION` (the task-creation function), `KAREO_ENDPOINT` (optional),
//! `KAREO_DOCK_CONCURRENCY` (default 8). Payload: see `sync::run::Payload`.

use aws::{DynamoStore, LambdaSink, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{SystemClock, TenantStore};
use kareo::{ClientConfig, Family, KareoClient};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use sync::run::{poll_tenants, Payload};
use sync::{Outcome, PollConfig, Poller};

/// Everything built once per container and borrowed by every invocation.
struct App {
    family: Family,
    kareo: KareoClient,
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    sink: LambdaSink,
    concurrency: usize,
}

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let family_name = env("KAREO_DOCK_FAMILY")?;
    let family = Family::from_name(&family_name)
        .ok_or_else(|| format!("KAREO_DOCK_FAMILY={family_name} is not a Kareo family"))?;
    let sdk = aws::sdk_config().await;
    let app = App {
        family,
        kareo: KareoClient::new(ClientConfig::from_env())?,
        store: aws::state_store(&sdk)?,
        secrets: aws::cached_secrets(&sdk),
        sink: LambdaSink::new(
            aws_sdk_lambda::Client::new(&sdk),
            env("KAREO_DOCK_TASK_FUNCTION")?,
        ),
        concurrency: std::env::var("KAREO_DOCK_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(app, event).await
    }))
    .await
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload: Payload = match event.payload {
        Value::Null => Payload::default(),
        v => serde_json::from_value(v).map_err(|e| {
            format!(
                "payload is not {{\"mode\", \"tenant\", \"since\"}}: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            )
        })?,
    };
    let mode = payload.mode().map_err(Error::from)?;
    let remaining =
        domain::invocation::time_budget(event.context.deadline, std::time::SystemTime::now());
    let deadline = tokio::time::Instant::now() + remaining;
    let config = PollConfig {
        owner: event.context.request_id.clone(),
        ..PollConfig::default()
    };
    let poller = Poller {
        kareo: &app.kareo,
        cursors: &app.store,
        snapshots: &app.store,
        sink: &app.sink,
        clock: &SystemClock,
        config: &config,
    };
    let tenants = app.store.tenants().await?;
    let reports = poll_tenants(
        &poller,
        &app.secrets,
        &app.store,
        &tenants,
        app.family,
        payload.tenant.as_deref(),
        mode,
        app.concurrency,
        Some(deadline),
    )
    .await;
    let failed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .count();
    let now = chrono::Utc::now();
    for r in &reports {
        // Embedded Metric Format: stdout lines Lambda turns into CloudWatch metrics.
        println!("{}", sync::metrics::poll_run(r, now).line(now));
    }
    tracing::info!(
        family = %app.family,
        tenants = reports.len(),
        failed,
        budget_ms = remaining.as_millis() as u64,
        events = reports.iter().map(|r| r.events).sum::<usize>(),
        "poll invocation"
    );
    Ok(json!({"family": app.family, "reports": reports}))
}
