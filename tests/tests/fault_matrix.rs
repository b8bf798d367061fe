//! The fault matrix: one table, one row per way Kareo, Dock, DynamoDB or Secrets Manager can
//! misbehave, each with the outcome it must have. Every row runs the whole product in one
//! process (`sync --once`: poller → task creation, over both simulators), injects its fault,
//! checks the first run's outcome (recovered, failed with this class and the cursor kept, or a
//! dead letter with this class), then clears the fault, lets every lease expire, runs again,
//! and checks that nothing was lost and nothing duplicated: Dock holds exactly one task per
//! (event, rule), except what was dead-lettered.
//!
//! The DynamoDB and Secrets Manager rows run the real AWS adapters against moto server
//! (`AWS_ENDPOINT_URL`; `scripts/test` starts it), DynamoDB behind a proxy that answers
//! `ProvisionedThroughputExceededException` on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dock_sim::{Fault as DockFault, FaultRule as DockRule};
use domain::ports::{Claim, CursorStore, ErrorClass, Ledger};
use kareo::Family;
use kareo_dock_tests::pipeline::{expected_keys, world_with_rules, World, FAMILIES, RULES};
use kareo_dock_tests::{moto, unique};
use kareo_sim::{Fault, FaultRule};
use sync::{Outcome, Report};
use tasks::deliver::Failure;

/// What the first run, with the fault present, must do.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Absorbed by retries: every family done, every task created, once.
    Recovers,
    /// Absorbed by reading narrower windows: as `Recovers`, with at least one split.
    RecoversBySplitting,
    /// The payments run fails with this error class; its cursor does not move and carries
    /// the class; the other families are done.
    Fails(&'static str),
    /// Permanent for some (event, rule)s: they are dead-lettered with this class, everything
    /// else is created, and the cursor moves on.
    DeadLetters(&'static str),
}

/// Where the fault is injected.
enum Inject {
    Kareo(Vec<FaultRule>),
    Dock(Vec<DockRule>),
    /// The payments rule names a Dock list that does not exist.
    MissingList,
}

struct Row {
    name: &'static str,
    inject: Inject,
    expect: Expect,
}

fn kareo(op: &str, fault: Fault, times: usize) -> Inject {
    Inject::Kareo(vec![FaultRule::new(fault).on(op).times(times)])
}

fn dock(rule: DockRule) -> Inject {
    Inject::Dock(vec![rule])
}

fn table() -> Vec<Row> {
    use Expect::*;
    vec![
        Row {
            name: "Kareo HTTP 500 InternalServiceFault (once)",
            inject: kareo("GetPayments", Fault::Http500Fault, 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo InternalServiceFault on every wide window (split until it passes)",
            inject: kareo("GetPayments", Fault::Http500Fault, 4),
            expect: RecoversBySplitting,
        },
        Row {
            name: "Kareo timeout",
            inject: kareo("GetPayments", Fault::Timeout(Duration::from_secs(3)), 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo connection reset",
            inject: kareo("GetPayments", Fault::Reset, 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo malformed XML",
            inject: kareo("GetPayments", Fault::Malformed, 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo truncated body",
            inject: kareo("GetPayments", Fault::Truncated, 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo schema-mismatched response (every call)",
            inject: kareo("GetPayments", Fault::SchemaMismatch, 1000),
            expect: Fails("kareo_schema"),
        },
        Row {
            name: "Kareo 429 inside HTTP 200",
            inject: kareo("GetPayments", Fault::Throttle, 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo HTTP 429",
            inject: kareo("GetPayments", Fault::HttpStatus(429), 1),
            expect: Recovers,
        },
        Row {
            name: "Kareo security failure (wrong password, every call)",
            inject: kareo("GetPayments", Fault::AuthFailure, 1000),
            expect: Fails("kareo_credentials"),
        },
        Row {
            name: "Kareo down (HTTP 503 on every call)",
            inject: kareo("GetPayments", Fault::HttpStatus(503), 1000),
            expect: Fails("kareo_http"),
        },
        Row {
            name: "Dock 401: every token expired",
            inject: dock(DockRule::new(DockFault::ExpireTokens).times(3)),
            expect: Recovers,
        },
        Row {
            name: "Dock 429 storm",
            inject: dock(
                DockRule::new(DockFault::RateLimit {
                    retry_after_secs: Some(0),
                })
                .times(3),
            ),
            expect: Recovers,
        },
        Row {
            name: "Dock 500 on task creation (every call)",
            inject: dock(
                DockRule::new(DockFault::ServerError)
                    .on("POST", "/api/v1/task")
                    .times(1000),
            ),
            expect: Fails("sink_retry"),
        },
        Row {
            name: "Dock timeout after commit",
            inject: dock(
                DockRule::new(DockFault::TimeoutAfterCommit(Duration::from_secs(3)))
                    .on("POST", "/api/v1/task")
                    .times(2),
            ),
            expect: Recovers,
        },
        Row {
            name: "Dock 404 on the task lists",
            inject: dock(
                DockRule::new(DockFault::NotFound)
                    .on("GET", "/api/v1/list")
                    .times(1000),
            ),
            expect: DeadLetters("dock_not_found"),
        },
        Row {
            name: "Dock list named by the mapping does not exist",
            inject: Inject::MissingList,
            expect: DeadLetters("unknown_list"),
        },
    ]
}

fn payments(reports: &[Report]) -> &Report {
    reports
        .iter()
        .find(|r| r.family == Family::Payments)
        .unwrap()
}

/// Runs one row: fault, first run, checks, recovery, checks.
async fn run_row(row: &Row) -> String {
    let rules = match row.inject {
        Inject::MissingList => RULES.replace("list: Billing", "list: Nowhere"),
        _ => RULES.to_string(),
    };
    let w = world_with_rules("matrix", &rules).await;
    let keys = expected_keys(&w.tenant, &w.expected_events().await);
    // What a DeadLetters row dead-letters: the payments rule's tasks (its list is missing), or
    // every task (Dock itself refuses).
    let dead_keys: Vec<String> = keys
        .iter()
        .filter(|(_, e)| matches!(row.inject, Inject::Dock(_)) || e.family == Family::Payments)
        .map(|(k, _)| k.clone())
        .collect();
    match &row.inject {
        Inject::Kareo(rules) => rules.iter().for_each(|r| w.kareo_sim.inject(r.clone())),
        Inject::Dock(rules) => rules.iter().for_each(|r| w.dock_sim.inject(r.clone())),
        Inject::MissingList => {}
    }
    let (reports, dead) = w.sync_with(&w.store(), &w.secrets, "first").await;
    let pay = payments(&reports).clone();
    let store = w.store();
    let refs = w.task_refs();
    let first = format!(
        "{} {}",
        pay.outcome.name(),
        pay.outcome.class().map_or("", ErrorClass::name)
    );
    match row.expect {
        Expect::Recovers | Expect::RecoversBySplitting => {
            if let Expect::RecoversBySplitting = row.expect {
                assert!(pay.splits >= 1, "{}: {pay:?}", row.name);
            }
            for r in &reports {
                assert_eq!(r.outcome, Outcome::Done, "{}: {r:?}", row.name);
            }
            assert!(dead.is_empty(), "{}: {dead:?}", row.name);
        }
        Expect::Fails(class) => {
            // A Kareo fault is on GetPayments; a Dock fault hits every family's delivery.
            let failing: Vec<Family> = match row.inject {
                Inject::Kareo(_) => vec![Family::Payments],
                _ => FAMILIES.to_vec(),
            };
            assert!(dead.is_empty(), "{}: {dead:?}", row.name);
            for r in &reports {
                if !failing.contains(&r.family) {
                    assert_eq!(r.outcome, Outcome::Done, "{}: {r:?}", row.name);
                    continue;
                }
                assert_eq!(
                    r.outcome.class().map(ErrorClass::name),
                    Some(class),
                    "{}: {r:?}",
                    row.name
                );
                let c = store
                    .load("acme", r.family)
                    .await
                    .unwrap()
                    .expect("the failure is on the cursor");
                assert_eq!(
                    c.last_error.as_ref().map(|e| e.class.name()),
                    Some(class),
                    "{}",
                    row.name
                );
                // Not a single change is behind the cursor without its task.
                for (k, e) in keys.iter().filter(|(_, e)| e.family == r.family) {
                    if c.position.is_some_and(|p| e.version <= p) {
                        assert!(refs.binary_search(k).is_ok(), "{}: {k} passed", row.name);
                    }
                }
            }
        }
        Expect::DeadLetters(class) => {
            // Each affected (event, rule) is one permanent dead letter naming its class; the
            // cursors move on (a replay redrives them once the cause is fixed).
            for r in &reports {
                assert_eq!(r.outcome, Outcome::Done, "{}: {r:?}", row.name);
            }
            assert_eq!(dead.len(), dead_keys.len(), "{}: {dead:?}", row.name);
            assert!(
                dead.iter()
                    .all(|f: &Failure| f.class == class && f.permanent),
                "{}: {dead:?}",
                row.name
            );
            let mut lettered: Vec<String> = dead
                .iter()
                .map(|f| tasks::deliver::task_key("acme", &f.event, &f.rule))
                .collect();
            lettered.sort();
            assert_eq!(lettered, dead_keys, "{}", row.name);
        }
    }
    // The fault goes away; every lease expires; the next runs finish the work.
    w.kareo_sim.clear_faults();
    w.dock_sim.clear_faults();
    w.kareo_sim.advance(chrono::Duration::minutes(16));
    if matches!(row.expect, Expect::Fails("kareo_credentials")) {
        // Refused credentials opened the account's breaker: until an operator resumes it (or
        // the secret changes), no family calls Kareo — and so no sign-in can lock the user out.
        let calls = w.kareo_sim.calls().len();
        let (reports, _) = w.sync_with(&w.store(), &w.secrets, "blocked").await;
        for r in &reports {
            assert_eq!(
                r.outcome.class().map(ErrorClass::name),
                Some("kareo_breaker_open"),
                "{}: {r:?}",
                row.name
            );
        }
        assert_eq!(
            w.kareo_sim.calls().len(),
            calls,
            "{}: no call reached Kareo",
            row.name
        );
        domain::ports::BreakerStore::close_breaker(&w.store(), "kareo/acme")
            .await
            .unwrap();
    }
    let (reports, _) = w.sync_with(&w.store(), &w.secrets, "second").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{} (recovery): {r:?}", row.name);
    }
    let refs = w.task_refs();
    let mut want: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    if let Expect::DeadLetters(_) = row.expect {
        want.retain(|k| !dead_keys.contains(k));
    }
    assert_eq!(
        refs, want,
        "{}: not exactly one task per (event, rule)",
        row.name
    );
    let c = w
        .store()
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap();
    assert!(c.last_error.is_none(), "{}: {:?}", row.name, c.last_error);
    let _ = std::fs::remove_dir_all(&w.dir);
    format!("{:58} {first}", row.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kareo_and_dock_fault_has_its_outcome_and_loses_nothing() {
    let rows = table();
    assert!(rows.len() >= 15);
    let mut lines = Vec::new();
    for row in &rows {
        lines.push(run_row(row).await);
    }
    eprintln!("{}", lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// DynamoDB and Secrets Manager (moto)
// ---------------------------------------------------------------------------------------------

/// A proxy in front of moto that answers the next `throttle` DynamoDB calls with
/// `ProvisionedThroughputExceededException` (HTTP 400), as DynamoDB does.
async fn throttling_proxy(upstream: String, throttle: Arc<AtomicUsize>) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    type St = (String, Arc<AtomicUsize>, reqwest::Client);
    async fn forward(
        State((upstream, throttle, http)): State<St>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let dynamo = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("DynamoDB_"));
        if dynamo
            && throttle
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.0")],
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
            )
                .into_response();
        }
        let mut req = http.request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            format!(
                "{upstream}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            ),
        );
        for (k, v) in &headers {
            if k != "host" && k != "content-length" {
                req = req.header(k.as_str(), v.as_bytes());
            }
        }
        match req.body(body).send().await {
            Ok(res) => {
                let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
                let mut out = HeaderMap::new();
                for (k, v) in res.headers() {
                    if k != "content-length" && k != "transfer-encoding" {
                        if let (Ok(k), Ok(v)) = (
                            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
                            axum::http::HeaderValue::from_bytes(v.as_bytes()),
                        ) {
                            out.insert(k, v);
                        }
                    }
                }
                let bytes = res.bytes().await.unwrap_or_default();
                (status, out, bytes).into_response()
            }
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
    let app = axum::Router::new().fallback(forward).with_state((
        upstream.trim_end_matches('/').to_string(),
        throttle,
        https::client(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The state table (through the proxy) and Secrets Manager holding the world's secrets.
struct Aws {
    store: aws::DynamoStore,
    secrets: aws::SecretsManagerSource,
    sm: aws_sdk_secretsmanager::Client,
    throttle: Arc<AtomicUsize>,
    names: Vec<String>,
}

impl Aws {
    async fn start(w: &World, present: &[&str]) -> Aws {
        let upstream = std::env::var("AWS_ENDPOINT_URL").unwrap();
        let throttle = Arc::new(AtomicUsize::new(0));
        let proxy = throttling_proxy(upstream, throttle.clone()).await;
        let sdk = aws::sdk_config().await;
        let dynamo_conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(proxy)
            .build();
        let store = aws::DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(dynamo_conf),
            unique("kareo-dock-matrix"),
        );
        store.create_table().await.unwrap();
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        let mut names = Vec::new();
        for name in present {
            let value = w.secrets_json(name);
            sm.create_secret()
                .name(*name)
                .secret_string(value.to_string())
                .send()
                .await
                .unwrap();
            names.push(name.to_string());
        }
        Aws {
            store,
            secrets: aws::SecretsManagerSource::new(sm.clone()),
            sm,
            throttle,
            names,
        }
    }

    async fn cleanup(self) {
        let _ = self.store.delete_table().await;
        for n in self.names {
            let _ = self
                .sm
                .delete_secret()
                .secret_id(n)
                .force_delete_without_recovery(true)
                .send()
                .await;
        }
    }
}

trait SecretsJson {
    fn secrets_json(&self, name: &str) -> serde_json::Value;
}

impl SecretsJson for World {
    fn secrets_json(&self, name: &str) -> serde_json::Value {
        if name.starts_with("dock/") {
            serde_json::to_value(self.dock_sim.secret()).unwrap()
        } else {
            let c = self.kareo_sim.config();
            serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": c.password})
        }
    }
}

/// The world with its tenant's secrets renamed to names of this test only.
async fn aws_world(name: &str) -> (Arc<World>, String, String) {
    let (k, d) = (unique("kareo/acme"), unique("dock/acme"));
    let rules = kareo_dock_tests::pipeline::RULES;
    let w = kareo_dock_tests::pipeline::world_with_secrets(name, rules, &k, &d).await;
    (w, k, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_throttling_is_retried_and_when_it_persists_loses_nothing() {
    if !moto("the DynamoDB / Secrets Manager fault rows") {
        return;
    }
    let (w, k, d) = aws_world("throttle").await;
    let aws = Aws::start(&w, &[&k, &d]).await;
    let keys = expected_keys(&w.tenant, &w.expected_events().await);
    let want: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();

    // A short burst: the SDK's retries absorb it.
    aws.throttle.store(2, Ordering::SeqCst);
    let (reports, dead) = w.sync_with(&aws.store, &aws.secrets, "first").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    }
    assert!(dead.is_empty());
    assert_eq!(
        aws.throttle.load(Ordering::SeqCst),
        0,
        "the throttles were hit"
    );
    assert_eq!(w.task_refs(), want);

    // A change, then throttling that outlasts the retries: the run fails as the store's
    // unavailability, the cursor stays where it was, and once the table answers again the
    // change is delivered once.
    let id = w.kareo_sim.rows(Family::Payments)[0]["ID"].clone();
    w.kareo_sim.advance(chrono::Duration::minutes(5));
    w.kareo_sim
        .update(Family::Payments, &id, &[("Notes", "adjusted")]);
    w.kareo_sim.advance(chrono::Duration::minutes(2));
    let before = aws
        .store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap()
        .position;
    aws.throttle.store(1_000_000, Ordering::SeqCst);
    let (reports, _) = w.sync_with(&aws.store, &aws.secrets, "second").await;
    for r in &reports {
        assert!(
            matches!(&r.outcome, Outcome::Failed { class, .. } if class == "store_throttled"),
            "{r:?}"
        );
    }
    aws.throttle.store(0, Ordering::SeqCst);
    let after = aws
        .store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap()
        .position;
    assert_eq!(
        before, after,
        "the cursor did not move while the table was throttling"
    );
    w.kareo_sim.advance(chrono::Duration::minutes(16));
    let (reports, _) = w.sync_with(&aws.store, &aws.secrets, "third").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    }
    let refs = w.task_refs();
    assert_eq!(refs.len(), want.len() + 1, "the update's task, once");
    aws.cleanup().await;
}

/// DynamoDB's conditional writes decide who runs: a cursor lease or a ledger claim held by
/// another runner makes this one's conditional write fail, and it must neither run nor lose
/// the work. (The other runner is played by direct store calls: two truly concurrent runners
/// on moto can both win a condition, as moto checks and writes in two steps; the concurrent
/// deliveries test runs on the atomic in-memory ledger.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_conflict_on_a_lease_or_a_claim_defers_the_work_and_loses_nothing() {
    if !moto("the DynamoDB / Secrets Manager fault rows") {
        return;
    }
    let (w, k, d) = aws_world("conflict").await;
    let aws = Aws::start(&w, &[&k, &d]).await;
    let events = w.expected_events().await;
    let keys = expected_keys(&w.tenant, &events);
    let want: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    let now = w.kareo_sim.now();
    let until = now + chrono::Duration::minutes(15);
    // Another runner holds the payments cursor lease, and has claimed one appointment task.
    aws.store
        .acquire("acme", Family::Payments, "other-runner", now, until)
        .await
        .unwrap();
    let (claimed, _) = keys
        .iter()
        .find(|(_, e)| e.family == Family::Appointments)
        .unwrap();
    let claim = aws
        .store
        .claim(
            claimed,
            "other-runner",
            now,
            now + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    assert!(matches!(claim, Claim::New));

    let (reports, dead) = w.sync_with(&aws.store, &aws.secrets, "runner").await;
    assert!(dead.is_empty());
    let by = |f: Family| reports.iter().find(|r| r.family == f).unwrap();
    assert_eq!(by(Family::Payments).outcome, Outcome::Skipped, "lease held");
    assert_eq!(by(Family::Patients).outcome, Outcome::Done);
    // The claimed task is not this runner's to create, nor to count as done: the batch is
    // retried and the cursor stays before it.
    let appts = by(Family::Appointments);
    assert_eq!(
        appts.outcome.class().map(ErrorClass::name),
        Some("sink_retry"),
        "{appts:?}"
    );
    let refs = w.task_refs();
    assert!(refs.binary_search(claimed).is_err());

    // The other runner died: once its lease and claim expire, the next run does it all.
    w.kareo_sim.advance(chrono::Duration::minutes(16));
    let (reports, _) = w.sync_with(&aws.store, &aws.secrets, "runner-2").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    }
    assert_eq!(w.task_refs(), want, "exactly one task per (event, rule)");
    aws.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_with_a_clear_class_and_loses_nothing() {
    if !moto("the DynamoDB / Secrets Manager fault rows") {
        return;
    }
    // The Kareo secret is missing: the poller cannot read Kareo. Every run fails with class
    // `secret`, naming the secret (never a value); nothing is read, no cursor exists yet.
    let (w, k, d) = aws_world("secret").await;
    let mut aws = Aws::start(&w, &[&d]).await;
    let (reports, dead) = w.sync_with(&aws.store, &aws.secrets, "first").await;
    for r in &reports {
        match &r.outcome {
            Outcome::Failed { class, message } => {
                assert_eq!(class, "secret", "{r:?}");
                assert!(message.contains(&k), "names the secret: {message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.records, 0);
    }
    assert!(dead.is_empty());
    assert!(aws
        .store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .is_none());
    // Created: the next run reads everything and delivers it once.
    aws.sm
        .create_secret()
        .name(&k)
        .secret_string(w.secrets_json(&k).to_string())
        .send()
        .await
        .unwrap();
    aws.names.push(k.clone());
    let keys = expected_keys(&w.tenant, &w.expected_events().await);
    let (reports, dead) = w.sync_with(&aws.store, &aws.secrets, "second").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    }
    assert!(dead.is_empty());
    let want: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(w.task_refs(), want);
    aws.cleanup().await;

    // The Dock secret is missing: the changes are read, and each one is a permanent failure
    // of class `secret` naming the secret — a dead letter (`kareo-dock replay` once the secret
    // exists), as the task function's on-failure queue would hold it.
    let (w, k, d) = aws_world("secret-dock").await;
    let aws = Aws::start(&w, &[&k]).await;
    let events = w.expected_events().await;
    let (reports, dead) = w.sync_with(&aws.store, &aws.secrets, "first").await;
    for r in &reports {
        assert_eq!(r.outcome, Outcome::Done, "{r:?}");
    }
    assert_eq!(dead.len(), events.len(), "one dead letter per change");
    assert!(dead
        .iter()
        .all(|f| f.class == "secret" && f.permanent && f.reason.contains(&d)));
    assert!(w.dock_sim.tasks().is_empty());
    aws.cleanup().await;
}
