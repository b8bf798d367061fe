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
//! **Callers.** A Function URL request is signed (SigV4); its principal
//! (`requestContext.authorizer.iam.userArn`) must be in the tenant's `writers:` or the answer
//! is 403 with nothing read from the secrets or sent to Kareo. A direct invoke names no
//! principal, so it is refused (`forbidden`, before any read) unless the deployment accepts
//! them (`KAREO_DOCK_DIRECT_INVOKE=enabled`, the template's `WriteDirectInvoke`). Every
//! command run is logged with its caller (ARN or `direct_invoke`), id, tenant and op.
//!
//! Environment: `KAREO_DOCK_TABLE` (tenant configs and the ledger), `KAREO_ENDPOINT`
//! (optional), `KAREO_DOCK_DIRECT_INVOKE` (`enabled` or `disabled`, default disabled). IAM:
//! the ledger's `write#` items and the tenant configs in the table, the tenants' Kareo
//! secrets.

use aws::function_url;
use aws::{DynamoStore, SecretsManagerSource};
use domain::invocation::CachedSecrets;
use domain::ports::{SystemClock, TenantStore};
use kareo::budget::SharedOps;
use kareo::KareoClient;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use writeback::write::{forbidden, run_command, Caller, Problem, WriteResult, WriteStatus, Writer};

struct App {
    store: DynamoStore,
    secrets: CachedSecrets<SecretsManagerSource>,
    kareo: KareoClient,
    /// Whether direct invokes (no caller identity) are accepted.
    direct_invoke: bool,
}

/// `KAREO_DOCK_DIRECT_INVOKE`: `enabled` or `disabled` (absent: disabled); anything else
/// stops the function at start rather than guess.
fn direct_invoke() -> Result<bool, String> {
    match std::env::var("KAREO_DOCK_DIRECT_INVOKE").as_deref() {
        Err(_) | Ok("disabled") => Ok(false),
        Ok("enabled") => Ok(true),
        Ok(_) => Err("KAREO_DOCK_DIRECT_INVOKE must be `enabled` or `disabled`".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    aws::init_logging();
    let sdk = aws::function_sdk_config().await;
    let store = aws::state_store(&sdk)?;
    let app = App {
        // Every operation: the webhook function writes to the same accounts, and the task
        // function reads their patients.
        kareo: aws::kareo_client(&store, SharedOps::Every)?,
        store,
        secrets: aws::cached_secrets(&sdk, aws::SECRET_TTL),
        direct_invoke: direct_invoke()?,
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
        let result = if app.direct_invoke {
            run(
                app,
                owner,
                &event.payload,
                Caller::Operator("direct_invoke"),
            )
            .await
        } else {
            tracing::warn!(
                "direct invoke refused: this deployment accepts signed Function URL calls only"
            );
            forbidden(
                &event.payload,
                "direct invokes are off in this deployment (WriteDirectInvoke): call the Function URL",
            )
        };
        return Ok(serde_json::to_value(result)?);
    };
    let result = match req.caller.as_deref() {
        // The URL's auth is AWS_IAM: a request without a principal is not ours to run.
        None => forbidden(
            &Value::Null,
            "the request names no IAM caller (the URL must use AWS_IAM auth)",
        ),
        Some(_) if !req.method.eq_ignore_ascii_case("POST") => {
            invalid("(request)", "POST the command as the body")
        }
        Some(caller) => match serde_json::from_slice::<Value>(&req.body) {
            Ok(cmd) => run(app, owner, &cmd, Caller::Principal(caller)).await,
            Err(_) => invalid("(command)", "the body is not JSON"),
        },
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

async fn run(app: &App, owner: String, cmd: &Value, caller: Caller<'_>) -> WriteResult {
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
    run_command(&writer, &app.secrets, &tenants, cmd, caller).await
}
