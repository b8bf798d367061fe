//! The poll function. Deployed once per Kareo record family (`KAREO_DOCK_FAMILY`), each on its
//! own EventBridge schedule. A scheduled invocation claims its period, then polls every tenant
//! that enables the family with bounded concurrency — or, with more tenants than a shard,
//! dispatches shards to concurrent invocations of itself and polls the first (`sync::fanout`)
//! — and hands change events to the task-creation function.
//!
//! Environment: `KAREO_DOCK_FAMILY` (e.g. `appointments`), `KAREO_DOCK_TABLE` (the state
//! table), `KAREO_DOCK_TASK_FUNCTION` (the task-creation function), `KAREO_ENDPOINT` (optional),
//! `KAREO_DOCK_CONCURRENCY` (default 8), `KAREO_DOCK_SHARD_SIZE` (default 200),
//! `KAREO_DOCK_MAX_SHARDS` (default 10), `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda: where
//! shards go). Payload: see `sync::run::Payload`.

use aws::{DynamoStore, LambdaSink, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{SystemClock, TenantStore};
use kareo::budget::SharedOps;
use kareo::{Family, KareoClient};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use sync::fanout::FanOut;
use sync::run::{invoke, Payload};
use sync::{Outcome, PollConfig, Poller};

/// Everything built once per container and borrowed by every invocation.
struct App {
    family: Family,
    kareo: KareoClient,
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    sink: LambdaSink,
    shards: LambdaSink,
    fan: FanOut,
    concurrency: usize,
}

fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let family_name = env("KAREO_DOCK_FAMILY")?;
    let family = Family::from_name(&family_name)
        .ok_or_else(|| format!("KAREO_DOCK_FAMILY={family_name} is not a Kareo family"))?;
    let sdk = aws::function_sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let store = aws::state_store(&sdk)?;
    let app = App {
        family,
        // Per-record reads only (never on an empty poll's path): the write functions read
        // appointments too. A family's list reads are this function's alone.
        kareo: aws::kareo_client(&store, SharedOps::Only(vec!["GetAppointment"]))?,
        store,
        secrets: aws::cached_secrets(&sdk, aws::POLL_SECRET_TTL),
        sink: LambdaSink::new(lambda.clone(), env("KAREO_DOCK_TASK_FUNCTION")?),
        shards: LambdaSink::new(lambda, env("AWS_LAMBDA_FUNCTION_NAME")?),
        fan: FanOut::from_env(),
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
                "payload is not {{\"mode\", \"tenant\", \"since\", \"scheduled\", \"shard\"}}: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            )
        })?,
    };
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
    let invoked = invoke(
        &poller,
        &app.secrets,
        &app.store,
        &app.store,
        &app.shards,
        &tenants,
        app.family,
        &payload,
        app.fan,
        app.concurrency,
        Some(deadline),
    )
    .await
    .map_err(Error::from)?;
    let reports = &invoked.reports;
    let failed = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .count();
    let now = chrono::Utc::now();
    for r in reports {
        // Embedded Metric Format: stdout lines Lambda turns into CloudWatch metrics.
        println!("{}", sync::metrics::poll_run(r, now).line(now));
    }
    tracing::info!(
        family = %app.family,
        role = invoked.role,
        dispatched = invoked.dispatched,
        tenants = reports.len(),
        failed,
        budget_ms = remaining.as_millis() as u64,
        events = reports.iter().map(|r| r.events).sum::<usize>(),
        "poll invocation"
    );
    Ok(json!(invoked))
}
