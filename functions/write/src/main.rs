//! The write-back function: one Kareo write command per request, exactly once per command id.
//!
//! Called two ways, same answer:
//! - **direct invoke** (`aws lambda invoke`, another function): the payload is the command
//!   `{"id", "tenant", "op", "data"}`; the result is the [`WriteResult`] JSON (its `status`
//!   says done / needs_review / invalid / rejected / retry / in_progress);
//! - **Function URL** (auth `AWS_IAM`, SigV4-signed `POST` with the command as the body): the
//!   same JSON, with HTTP 200 done, 400 invalid, 422 rejected, 409 needs_review or
//!   in_progress, 503 retry.
//!
//! Environment: `KAREO_DOCK_TABLE` (tenant configs and the ledger), `KAREO_ENDPOINT`
//! (optional). IAM: DynamoDB GetItem/PutItem/UpdateItem/DeleteItem/Query/Scan on the table,
//! secretsmanager:GetSecretValue on the tenants' Kareo secrets.

use aws::function_url;
use aws::{DynamoStore, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{SystemClock, TenantStore};
use kareo::{ClientConfig, KareoClient};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use writeback::write::{run_command, Problem, WriteResult, WriteStatus, Writer};

struct App {
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    kareo: KareoClient,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let sdk = aws::sdk_config().await;
    let app = App {
        store: aws::state_store(&sdk)?,
        secrets: aws::cached_secrets(&sdk),
        kareo: KareoClient::new(ClientConfig::from_env())?,
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(app, event).await
    }))
    .await
}

async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let owner = event.context.request_id.clone();
    let Some(req) = function_url::parse(&event.payload) else {
        return Ok(serde_json::to_value(run(app, owner, &event.payload).await)?);
    };
    let result = if !req.method.eq_ignore_ascii_case("POST") {
        invalid("(request)", "POST the command as the body")
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(cmd) => run(app, owner, &cmd).await,
            Err(_) => invalid("(command)", "the body is not JSON"),
        }
    };
    Ok(function_url::response(
        result.status.http_status(),
        &serde_json::to_value(&result)?,
    ))
}

fn invalid(field: &str, problem: &str) -> WriteResult {
    WriteResult::invalid(
        &Value::Null,
        vec![Problem {
            field: field.into(),
            problem: problem.into(),
        }],
    )
}

async fn run(app: &App, owner: String, cmd: &Value) -> WriteResult {
    let tenants = match app.store.tenants().await {
        Ok(t) => t,
        Err(e) => {
            let mut r = WriteResult::invalid(cmd, Vec::new());
            r.status = WriteStatus::Retry;
            r.reason = Some(format!("tenant configs unavailable ({})", e.class()));
            return r;
        }
    };
    let writer = Writer::new(&app.kareo, &app.store, &SystemClock, owner);
    run_command(&writer, &app.secrets, &tenants, cmd).await
}
