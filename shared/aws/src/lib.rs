//! kareo-dock's AWS adapters of the ports of `domain::ports`:
//!
//! - [`DynamoStore`]: cursors ([`CursorStore`](domain::ports::CursorStore)),
//!   snapshots ([`SnapshotStore`](domain::ports::SnapshotStore)), tenant configs
//!   ([`TenantStore`](domain::ports::TenantStore)) and the exactly-once ledger
//!   ([`Ledger`](domain::ports::Ledger)) in one DynamoDB table, and Kareo accounts' call
//!   budgets shared across functions ([`SharedBudget`](kareo::budget::SharedBudget));
//! - [`SecretsManagerSource`]: secrets by name from Secrets Manager (cache them with
//!   `domain::invocation::CachedSecrets`);
//! - [`LambdaSink`]: change events handed to the task-creation function by an asynchronous
//!   Lambda `Invoke`.
//!
//! They behave exactly like the embedded `domain::local::LocalStore`: one behavioural
//! suite (`tests/stores.rs`) runs against both.
//!
//! # Table layout
//!
//! One table, billed on demand (`PAY_PER_REQUEST`), keys `pk` (hash, string) and `sk` (range,
//! string). Instants are RFC 3339 strings in UTC with nine fraction digits
//! (`2026-09-01T12:00:00.000000000Z`): fixed width, so string order is time order and
//! conditions and filters compare them directly.
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | cursor | `cursor#{tenant}#{family}` | `cursor` | `tenant` S, `family` S, `version` N, `position` S?, `high_water` S?, `last_success_start` S?, `lease_owner` S?, `lease_until` S?, `last_error` M? (`class`, `message`, `at`) |
//! | snapshot | `snap#{tenant}#{family}` | record id (or a marker: `charge:<id>`, `checked:<id>`) | `version` S, `fields` M (name → S), `starts` S?, `deleted` BOOL, `expires_at` N (400 days after the last write; a re-check marker, 1 day) |
//! | tenant | `tenant` | tenant id | `yaml` S (`TenantConfig::to_yaml`) |
//! | breaker | `breaker` | Kareo secret name | `fingerprint` S (digest of the refused credentials), `opened_at` S, `by` S, `reason` S |
//! | ledger | `ledger#{key}` | `ledger` | `state` S (`pending`/`done`/`needs_review`/`failed`), `attempts` N, `at` S, `owner` S?, `until` S?, `remote_id` S?, `result` S?, `reason` S? |
//! | call slot | `budget#{account}` (a digest of the Kareo customer key) | `op#{operation}` | `next_ms` N (the next free slot, Unix ms), `expires_at` N |
//! | live intervals | `budget#{account}` | `live` | `intervals` S? (JSON), `read_at_ms` N?, `claim_owner` S?, `claim_until` N?, `expires_at` N? |
//!
//! `?` marks an attribute that is absent when the value is `None`. `expires_at` (N, epoch
//! seconds) is the table's TTL attribute, for items that should age out.
//!
//! # Conditional writes
//!
//! Every write to a cursor is one `UpdateItem` that adds 1 to `version`:
//!
//! - `acquire`: condition `attribute_not_exists(pk) OR attribute_not_exists(lease_owner) OR
//!   attribute_not_exists(lease_until) OR lease_until <= :now` (no lease, or an expired one —
//!   `<=`, as the embedded store: a lease is live while `until > now`); creates the item when
//!   absent; returns `ALL_NEW`, which becomes the lease's cursor.
//! - `checkpoint`, `release`, `fail`: condition `version = :held AND lease_owner = :owner`, the
//!   version and owner of the lease. Because every write bumps the version, the item is then
//!   exactly the lease's cursor, so `checkpoint` computes `position = max(old, new)` and
//!   `high_water = max(old, new)` from it; it also sets `last_success_start`, removes
//!   `last_error`, and removes `lease_owner`/`lease_until` when releasing. `release` removes the
//!   lease; `fail` sets `last_error` and removes the lease.
//! - `reset`: unconditional (an operator command); sets or removes `position` and bumps the
//!   version, so a run holding a lease loses its next write.
//!
//! Ledger items (same answers as the embedded ledger):
//!
//! - `claim`: one `UpdateItem` setting `pending`, owner, lease and `ADD attempts 1`, on
//!   condition `attribute_not_exists(pk) OR state = failed OR (state = pending AND
//!   (attribute_not_exists(until) OR until <= :now))`, returning `ALL_OLD` (an expired pending
//!   claim is `Expired(old)`). A lost condition returns the item as it stands
//!   (`ReturnValuesOnConditionCheckFailure`): `Done`, `NeedsReview` or `Held`.
//! - `settle`: one `UpdateItem` on condition `state = pending AND owner = :owner`.
//! - `release`: a `DeleteItem` of a first attempt, else an `UpdateItem` to `failed`, both on
//!   the same condition; not holding the claim is a no-op.
//!
//! A poll that finds nothing costs exactly two DynamoDB calls per (tenant, family): `acquire`
//! and `checkpoint(release = true)`; an invocation adds one query of the breakers.
//!
//! # Errors
//!
//! A failed condition (`ConditionalCheckFailedException`) is `StoreError::Conflict`; throttling
//! (`ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`) is
//! `StoreError::Throttled` (after the SDK's own retries); anything else is
//! `StoreError::Unavailable` naming the operation and the error code — never item contents.
//! Logs carry ids, counts and durations only.

mod breakers;
mod budget;
mod dynamo;
mod error;
pub mod function_url;
mod lambda;
mod ledger;
mod links;
mod periods;
mod purge;
mod secrets;

pub use dynamo::{DynamoStore, TTL_ATTRIBUTE};
pub use lambda::LambdaSink;
pub use secrets::SecretsManagerSource;

/// The AWS SDK configuration from the environment: `aws_config::defaults` with the latest
/// behaviour version, which honours `AWS_ENDPOINT_URL` (how tests reach the emulator),
/// `AWS_REGION`, and the usual credential chain — on [`sdk_http_client`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    sdk_loader().load().await
}

/// `aws_config::defaults` with the latest behaviour version, on [`sdk_http_client`].
fn sdk_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(sdk_http_client())
}

/// The SDK configuration of a Lambda function: [`sdk_config`], with the credentials Lambda puts
/// in the environment — the execution role's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN` — read from there by the environment provider instead of through the
/// default chain. Building that chain (web identity with its own STS client, SSO, profiles,
/// the container and instance metadata providers) is done before the runtime is ready and
/// none of it is used on Lambda. Without credentials in the environment (a function binary run
/// somewhere else), the default chain, as [`sdk_config`].
pub async fn function_sdk_config() -> aws_config::SdkConfig {
    let loader = sdk_loader();
    let in_env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .iter()
        .all(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let loader = if in_env {
        loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
    } else {
        loader
    };
    loader.load().await
}

/// The SDK's HTTPS client: rustls on aws-lc-rs (the process's one provider, `https`), trusting
/// Amazon Trust Services' roots ([`https::AMAZON_ROOTS_PEM`], compiled in) instead of the
/// SDK's default of the system's certificate files, which it reads and parses at client
/// construction (half of a function's start). `AWS_CA_BUNDLE` — a PEM file, for a
/// TLS-inspecting proxy in front of AWS — adds its certificates; one that cannot be read is
/// logged by name and left out.
pub fn sdk_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    let mut trust = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(https::AMAZON_ROOTS_PEM);
    if let Ok(path) = std::env::var("AWS_CA_BUNDLE") {
        match std::fs::read(&path) {
            Ok(pem) => trust = trust.with_pem_certificate(pem),
            Err(e) => tracing::error!(
                variable = "AWS_CA_BUNDLE",
                error = %e.kind(),
                "CA bundle unreadable: trusting Amazon's roots alone"
            ),
        }
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store of PEM certificates builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https()
}

/// The libraries that print whole request or response bodies at debug or trace — the Lambda
/// runtime logs every raw event (change events, webhook bodies, write commands), the HTTP and
/// AWS SDK layers their payloads (secrets among them).
pub const BODY_LOGGERS: [&str; 12] = [
    "lambda_runtime",
    "lambda_runtime_api_client",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "aws_config",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_sdk_secretsmanager",
];

/// The switch that lets [`BODY_LOGGERS`] log below info: named so that nobody sets it by
/// accident during an incident.
pub const UNSAFE_BODY_LOGS: &str = "KAREO_DOCK_UNSAFE_LOG_BODIES_WITH_PHI";

/// `RUST_LOG` (default `info`), with [`BODY_LOGGERS`] held at `info` whatever it says unless
/// `unsafe_bodies`.
pub fn log_filter(rust_log: Option<&str>, unsafe_bodies: bool) -> tracing_subscriber::EnvFilter {
    let mut f = tracing_subscriber::EnvFilter::new(rust_log.unwrap_or("info"));
    if !unsafe_bodies {
        for t in BODY_LOGGERS {
            if let Ok(d) = format!("{t}=info").parse() {
                f = f.add_directive(d);
            }
        }
    }
    f
}

/// JSON logs on stdout for a Lambda function (CloudWatch adds the time); the level comes
/// from `RUST_LOG`, with a ceiling on the libraries that log bodies ([`log_filter`]).
pub fn init_logging() {
    let unsafe_bodies = std::env::var(UNSAFE_BODY_LOGS).as_deref() == Ok("1");
    let rust_log = std::env::var("RUST_LOG").ok();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(log_filter(rust_log.as_deref(), unsafe_bodies))
        .with_current_span(false)
        .without_time()
        .init();
    if unsafe_bodies {
        tracing::warn!(
            switch = UNSAFE_BODY_LOGS,
            "UNSAFE: library body logging is on; logs may hold PHI and secrets"
        );
    }
}

/// The state table named by `KAREO_DOCK_TABLE`.
pub fn state_store(sdk: &aws_config::SdkConfig) -> Result<DynamoStore, String> {
    let table = std::env::var("KAREO_DOCK_TABLE")
        .map_err(|_| "environment variable KAREO_DOCK_TABLE is not set".to_string())?;
    Ok(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table))
}

/// The Kareo client of a function (`KAREO_*` settings), taking turns with the other functions
/// calling the same accounts through the state table (`kareo::budget`): live intervals read
/// by one function serve all, and each call of an operation in `ops` takes a slot first.
pub fn kareo_client(
    store: &DynamoStore,
    ops: kareo::budget::SharedOps,
) -> Result<kareo::KareoClient, kareo::KareoError> {
    let sharing = kareo::budget::Sharing::new(std::sync::Arc::new(store.clone()), ops);
    Ok(kareo::KareoClient::new(kareo::ClientConfig::from_env())?.with_sharing(sharing))
}

/// How long the task, write and webhook functions keep a secret: five minutes.
pub const SECRET_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// How long the poll functions keep a Kareo secret: six hours. They read it every period, and
/// with shards a tenant meets several containers, so a short cache is most of a practice's
/// Secrets Manager bill. A fixed secret is read at once all the same: an account whose breaker
/// opened on the cached value is read past the cache (`SecretSource::refresh`); a rotation that
/// keeps the old credentials valid is picked up within the six hours.
pub const POLL_SECRET_TTL: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Secrets Manager, cached across warm invocations for `ttl` ([`SECRET_TTL`], or the poll
/// functions' [`POLL_SECRET_TTL`]).
pub fn cached_secrets(
    sdk: &aws_config::SdkConfig,
    ttl: std::time::Duration,
) -> domain::invocation::CachedSecrets<SecretsManagerSource> {
    domain::invocation::CachedSecrets::new(
        SecretsManagerSource::new(aws_sdk_secretsmanager::Client::new(sdk)),
        ttl,
    )
}

#[cfg(test)]
mod log_tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(rust_log: &str, unsafe_bodies: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(super::log_filter(Some(rust_log), unsafe_bodies))
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "lambda_runtime", "raw event BODY-1");
            tracing::debug!(target: "hyper_util", "payload BODY-2");
            tracing::trace!(target: "kareo_dock_poll", "own trace line");
            tracing::info!(target: "lambda_runtime", "runtime info line");
        });
        let v = buf.0.lock().unwrap().clone();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rust_log_trace_prints_no_body_unless_the_unsafe_switch_is_set() {
        for level in ["trace", "lambda_runtime=trace,hyper_util=debug,trace"] {
            let s = logged(level, false);
            assert!(!s.contains("BODY-"), "{level}: {s}");
            assert!(
                s.contains("own trace line") || !level.ends_with("trace"),
                "{s}"
            );
            assert!(s.contains("runtime info line"), "{s}");
        }
        let s = logged("trace", true);
        assert!(s.contains("BODY-1") && s.contains("BODY-2"), "{s}");
    }
}
