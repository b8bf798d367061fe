//! The deployed shape, locally: the `poll`, `task` and `write` functions served by `cargo
//! lambda watch` (which emulates the Lambda runtime and Invoke APIs), the state table and
//! Secrets Manager in moto server, Kareo and Dock as their simulators. A scheduled poll is
//! invoked through the Invoke API; the poll function hands its events to the task function
//! through the same API (its Lambda client points at the watch server), and the tasks must
//! appear in Dock — once. Then write commands reach the write function as Function URL events:
//! only a principal in the tenant's `writers:` gets through, and a direct invoke is refused.
//!
//! Needs `AWS_ENDPOINT_URL` (moto) and cargo-lambda (`KAREO_DOCK_CARGO_LAMBDA`, the
//! `cargo-lambda` binary, or `cargo lambda` on the PATH); `scripts/test` provides both. Without
//! them the test FAILS saying what is missing; `KAREO_DOCK_SKIP_MOTO=1` skips it loudly.

use kareo_dock_tests::{moto, unique};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use dock_sim::DockSim;
use domain::event::{event_id, ChangeKind};
use domain::ports::{CursorStore, TenantStore};
use domain::{ChangeEvent, TenantConfig};
use kareo::Family;
use kareo_sim::{KareoSim, SimConfig};
use serde_json::{json, Value};

/// The cargo-lambda command: `KAREO_DOCK_CARGO_LAMBDA` (a `cargo-lambda` binary), else
/// `cargo lambda` when cargo finds the subcommand.
fn cargo_lambda() -> Command {
    if let Ok(bin) = std::env::var("KAREO_DOCK_CARGO_LAMBDA") {
        let mut c = Command::new(bin);
        c.arg("lambda");
        return c;
    }
    let found = Command::new("cargo")
        .args(["lambda", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "\n!!! cargo-lambda is not installed: the cargo lambda watch round trip did NOT run.\n\
         !!! Run scripts/test (it installs cargo-lambda into its venv), or `pip install \
         cargo-lambda` and set KAREO_DOCK_CARGO_LAMBDA to the cargo-lambda binary.\n"
    );
    let mut c = Command::new("cargo");
    c.arg("lambda");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo lambda watch`, stopped with its whole process group (cargo, the functions) when
/// the test ends, however it ends.
struct Watch {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Watch {
    fn start(port: u16, env: &[(&str, String)]) -> Watch {
        let log = std::env::temp_dir()
            .join(unique("kareo-dock-watch"))
            .with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = cargo_lambda();
        cmd.args([
            "watch",
            "--ignore-changes",
            "--timeout",
            "300",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string());
        for (k, v) in env {
            cmd.arg("--env-var").arg(format!("{k}={v}"));
        }
        // Under a test runner, CARGO names the toolchain's cargo binary and CARGO_PKG_* etc.
        // describe this test crate: passed on, they make watch's `cargo run` fingerprint
        // differently from `cargo build --bin poll` and rebuild every dependency.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO")
                && !matches!(&*k, "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR")
            {
                cmd.env_remove(&*k);
            }
        }
        // The workspace root, so watch finds every function's binary.
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("cargo lambda watch starts");
        Watch {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the invoke port to accept connections.
    async fn ready(&mut self, within: Duration) {
        let started = Instant::now();
        let addr = self.url.trim_start_matches("http://").to_string();
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cargo lambda watch exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < within,
                "cargo lambda watch did not listen on {} within {within:?}:\n{}",
                self.url,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A synchronous invoke through the emulated Invoke API, under a hard timeout (a function
    /// that fails at start would otherwise leave the request waiting).
    async fn invoke(&self, function: &str, payload: Value, within: Duration) -> Value {
        let http = https::client_builder().timeout(within).build().unwrap();
        let res = http
            .post(format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.url
            ))
            .body(payload.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke {function}: {e}\n{}", self.log()));
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(
            status.is_success(),
            "invoke {function}: HTTP {status}: {body}\n{}",
            self.log()
        );
        let out: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("invoke {function}: not JSON ({e}): {body}"));
        assert!(
            out.get("errorType").is_none(),
            "invoke {function}: the function failed: {body}\n{}",
            self.log()
        );
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Deletes the test's table and secrets when the test ends.
struct Cleanup {
    store: aws::DynamoStore,
    sm: aws_sdk_secretsmanager::Client,
    secrets: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (store, sm, secrets) = (self.store.clone(), self.sm.clone(), self.secrets.clone());
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let _ = store.delete_table().await;
                for name in secrets {
                    let _ = sm
                        .delete_secret()
                        .secret_id(name)
                        .force_delete_without_recovery(true)
                        .send()
                        .await;
                }
            })
        });
    }
}

/// Waits until Dock holds `n` tasks (the task function runs after the poll answered: Event
/// invokes are asynchronous), then returns them; fails on more.
async fn tasks_settle(dock: &DockSim, watch: &Watch, n: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let have = dock.tasks().len();
        assert!(
            have <= n,
            "Dock holds {have} tasks, expected {n}: a duplicate"
        );
        if have == n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "Dock holds {have} of {n} tasks after {within:?}:\n{}",
            watch.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_poll_through_cargo_lambda_watch_creates_each_task_once() {
    if !moto("the cargo lambda watch round trip") {
        return;
    }
    // Start nothing before we know cargo-lambda is there.
    let _ = cargo_lambda();

    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dock = DockSim::start(dock_sim::Seed::default()).await;

    let sdk = aws::sdk_config().await;
    let table = unique("kareo-dock-watch");
    let store = aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    store.create_table().await.expect("create the test table");
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let (kareo_secret, dock_secret) = (unique("kareo/acme"), unique("dock/acme"));
    let _cleanup = Cleanup {
        store: store.clone(),
        sm: sm.clone(),
        secrets: vec![kareo_secret.clone(), dock_secret.clone()],
    };
    let c = sim.config();
    for (name, value) in [
        (
            &kareo_secret,
            json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
        ),
        (&dock_secret, serde_json::to_value(dock.secret()).unwrap()),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap();
    }
    // The simulator's clock is the real one: the deployed poller reads windows up to the
    // system clock.
    sim.set_now(Utc::now());
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {start}\nsafety_lag: 1s\n\
         kareo:\n  secret: {kareo_secret}\n  practice: \"{practice}\"\n\
         dock:\n  secret: {dock_secret}\nfamilies:\n  payments: {{}}\nrules:\n\
         \x20 - name: payment-posted\n    interface: payments\n    on: created\n\
         \x20   task: {{ list: Billing, description: \"Payment {{ID}}\" }}\n\
         writers:\n  - arn:aws:iam::123456789012:role/front-desk\n",
        start = (Utc::now() - chrono::Duration::days(400)).to_rfc3339(),
        practice = c.practice_name,
    );
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").expect("a valid tenant config");
    store.put(&tenant).await.unwrap();

    let mut watch_env: Vec<(&str, String)> = vec![
        ("KAREO_DOCK_FAMILY", "payments".to_string()),
        ("KAREO_DOCK_TABLE", table.clone()),
        ("KAREO_DOCK_TASK_FUNCTION", "task".to_string()),
        ("KAREO_ENDPOINT", sim.url()),
        ("DOCK_API_URL", dock.api_url()),
        ("DOCK_AUTH_URL", dock.auth_url()),
    ];
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        watch_env.push((k, std::env::var(k).unwrap_or_else(|_| "test".into())));
    }
    // The poll function's Lambda client calls the watch server itself.
    let port = free_port();
    watch_env.push((
        "AWS_ENDPOINT_URL_LAMBDA",
        format!("http://127.0.0.1:{port}"),
    ));
    let mut watch = Watch::start(port, &watch_env);
    watch.ready(Duration::from_secs(60)).await;

    // 1. A scheduled poll (EventBridge Scheduler's payload: the schedule's nominal time),
    //    invoked synchronously; it claims its period in the table.
    let payments = sim.rows(Family::Payments).len();
    assert!(payments > 0);
    let first = json!({"scheduled": "2026-12-04T21:05:00Z"});
    let out = watch
        .invoke("poll", first.clone(), Duration::from_secs(240))
        .await;
    let report = &out["reports"][0];
    assert_eq!(out["family"], "payments", "{out:#}");
    assert_eq!(out["role"], "single", "{out:#}");
    assert_eq!(out["period"], "poll#2026-12-04T21:05:00Z", "{out:#}");
    assert_eq!(report["tenant"], "acme", "{out:#}");
    assert_eq!(report["events"], payments, "{out:#}");
    // The task function runs on its own, after the Event invoke was accepted.
    tasks_settle(&dock, &watch, payments, Duration::from_secs(240)).await;
    let cursor = store.load("acme", Family::Payments).await.unwrap().unwrap();
    assert!(cursor.position.is_some(), "the cursor advanced");

    // 2. A new payment, then the next scheduled poll: one more task, nothing re-created.
    let mut row = sim.rows(Family::Payments)[0].clone();
    row.remove(Family::Payments.id_member());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.set_now(Utc::now());
    let new_id = sim.insert(Family::Payments, row);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The same schedule delivered again (another request id): nothing polled.
    let again = watch.invoke("poll", first, Duration::from_secs(120)).await;
    assert_eq!(again["role"], "duplicate", "{again:#}");
    assert_eq!(again["reports"], json!([]), "{again:#}");
    let out = watch
        .invoke(
            "poll",
            json!({"scheduled": "2026-12-04T21:10:00Z"}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(out["reports"][0]["events"], 1, "{out:#}");
    tasks_settle(&dock, &watch, payments + 1, Duration::from_secs(120)).await;
    assert!(dock.tasks().iter().any(|t| t
        .description
        .as_deref()
        .unwrap_or("")
        .contains(&format!("Payment {new_id}"))));

    // 3. The same change delivered again — as Lambda's retry of an asynchronous invoke would —
    //    straight to the task function: the ledger in DynamoDB answers "already done".
    let row = sim
        .rows(Family::Payments)
        .into_iter()
        .find(|r| r[Family::Payments.id_member()] == new_id)
        .unwrap();
    let version = kareo::dates::parse(
        &row[Family::Payments.version_member()],
        chrono_tz::America::New_York,
    )
    .unwrap();
    let event = ChangeEvent {
        id: event_id(
            "acme",
            Family::Payments,
            &new_id,
            version,
            ChangeKind::Created,
        ),
        tenant: "acme".into(),
        family: Family::Payments,
        record_id: new_id.clone(),
        version,
        kind: ChangeKind::Created,
        changes: vec![],
        record: row,
    };
    let batch = json!({ "events": [event] });
    for _ in 0..2 {
        let out = watch
            .invoke("task", batch.clone(), Duration::from_secs(120))
            .await;
        assert_eq!(out["matched"], 1, "{out:#}");
        assert_eq!(out["duplicates"], 1, "{out:#}");
        assert_eq!(out["tasks"], 0, "{out:#}");
    }
    assert_eq!(
        dock.tasks().len(),
        payments + 1,
        "no task was created twice"
    );

    // 4. Write commands to the write function, as the Function URL delivers them (the
    //    principal that signed the request in `requestContext.authorizer.iam`).
    let command = json!({"id": "w-1", "tenant": "acme", "op": "CreatePatient", "data": {
        "first_name": "Zelphine", "last_name": "Quarrington", "date_of_birth": "1980-02-03", "gender": "Female"}});
    let url_event = |caller: &str| {
        json!({
            "version": "2.0", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/"}, "timeEpoch": 1_764_000_000_000_i64,
                "authorizer": {"iam": {"userArn": caller, "accountId": "123456789012", "callerId": "AROAEXAMPLE:s"}}},
            "body": command.to_string(), "isBase64Encoded": false
        })
    };
    let direct = watch
        .invoke("write", command.clone(), Duration::from_secs(120))
        .await;
    assert_eq!(
        direct["status"], "forbidden",
        "direct invokes are off by default: {direct:#}"
    );
    let refused = watch
        .invoke(
            "write",
            url_event("arn:aws:sts::123456789012:assumed-role/billing/s1"),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(refused["statusCode"], 403, "{refused:#}");
    assert_eq!(
        sim.call_count("CreatePatient"),
        0,
        "a refused caller reaches no Kareo"
    );
    let caller = "arn:aws:sts::123456789012:assumed-role/front-desk/app-7";
    let done = watch
        .invoke("write", url_event(caller), Duration::from_secs(60))
        .await;
    assert_eq!(done["statusCode"], 200, "{done:#}");
    assert_eq!(sim.call_count("CreatePatient"), 1);
    let log = watch.log();
    assert!(
        log.lines()
            .any(|l| l.contains("write command") && l.contains(caller)),
        "the write is logged with its caller:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("write refused") && l.contains("assumed-role/billing/s1")),
        "the refusal is logged with its caller"
    );
    assert!(
        !log.contains("Zelphine") && !log.contains("Quarrington"),
        "no PHI in the logs"
    );
}
