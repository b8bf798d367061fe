//! The shared task-creation function. The pollers invoke it asynchronously with
//! `{"events": [ChangeEvent, ...]}`; it applies each tenant's mapping and creates the Dock
//! tasks or deploys the workflows — exactly once, through the ledger in the state table.
//!
//! An invocation with failures returns an error naming the (event, rule) pairs and classes:
//! Lambda retries it (the ledger skips what was done), then sends it to the on-failure
//! destination (an encrypted SQS queue) for `kareo-dock replay`.
//!
//! Environment: `KAREO_DOCK_TABLE`, `DOCK_API_URL` / `DOCK_AUTH_URL` (optional),
//! `KAREO_ENDPOINT` (optional: patient lookups).

use std::time::Duration;

use aws::{DynamoStore, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{SystemClock, TenantStore};
use domain::ChangeEvent;
use kareo::budget::SharedOps;
use kareo::KareoClient;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use tasks::deliver::{deliver_batch, Delivery};
use tasks::dock::DockTasks;

struct App {
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    dock: DockTasks,
    kareo: KareoClient,
}

#[derive(Deserialize)]
struct Batch {
    events: Vec<ChangeEvent>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let sdk = aws::function_sdk_config().await;
    let store = aws::state_store(&sdk)?;
    let app = App {
        // Patient reads: the write and webhook functions read GetPatient of the same accounts.
        kareo: aws::kareo_client(&store, SharedOps::Only(vec!["GetPatient"]))?,
        store,
        secrets: aws::cached_secrets(&sdk, aws::SECRET_TTL),
        dock: DockTasks::new(dock::DockClient::new(dock::DockConfig::from_env())?),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(app, event).await
    }))
    .await
}

/// How long an (event, rule) claim is held: it covers one item's Dock calls, and never outlives
/// this invocation, so when an invocation dies Lambda's retry (one and three minutes later)
/// finds the claim expired and reconciles it, instead of waiting behind it.
fn claim_lease(budget: Duration) -> Duration {
    budget.clamp(Duration::from_secs(30), Duration::from_secs(120))
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let batch: Batch = serde_json::from_value(event.payload).map_err(|e| {
        format!(
            "payload is not {{\"events\": [...]}}: {}",
            e.to_string().split(" at line").next().unwrap_or("")
        )
    })?;
    let tenants = app.store.tenants().await?;
    let delivery = Delivery {
        dock: &app.dock,
        ledger: &app.store,
        kareo: &app.kareo,
        clock: &SystemClock,
        owner: event.context.request_id.clone(),
        lease: claim_lease(domain::invocation::time_budget(
            event.context.deadline,
            std::time::SystemTime::now(),
        )),
    };
    let d = deliver_batch(&delivery, &app.secrets, &tenants, &batch.events).await;
    let now = chrono::Utc::now();
    println!("{}", tasks::metrics::delivery(&d).line(now));
    for l in tasks::metrics::latencies(&d) {
        println!("{}", l.line(now));
    }
    if !d.failures.is_empty() {
        let list: Vec<String> = d
            .failures
            .iter()
            .map(|f| {
                format!(
                    "{}/{} {}{}",
                    f.event,
                    f.rule,
                    f.class,
                    if f.permanent { " (permanent)" } else { "" }
                )
            })
            .collect();
        return Err(format!(
            "{} of {} tasks not created: {}",
            d.failures.len(),
            d.matched,
            list.join("; ")
        )
        .into());
    }
    Ok(json!(d))
}
