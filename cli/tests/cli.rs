//! The `kareo-dock` verbs, run as a process, against the Kareo simulator.

use std::path::Path;
use std::process::{Command, Output};

use kareo_sim::{Family, KareoSim, SimConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kareo-dock"))
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("kareo-dock runs"))
        .await
        .unwrap()
}

fn write_tenant(dir: &Path, sim: &KareoSim) -> std::path::PathBuf {
    let c = sim.config();
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\ndock:\n  secret: dock/acme\nfamilies:\n  patients: {{}}\n  payments: {{}}\n",
        (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name
    );
    let p = dir.join("acme.yaml");
    std::fs::write(&p, yaml).unwrap();
    let secrets = serde_json::json!({"kareo/acme": {"customer_key": c.customer_key, "user": c.user, "password": c.password}});
    std::fs::write(dir.join("secrets.json"), secrets.to_string()).unwrap();
    p
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kareo-dock-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn sync_once_hands_off_every_change_once_and_keeps_state() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dir = tmp("sync");
    let cfg = write_tenant(&dir, &sim);
    let sync = |extra: &[&str]| {
        let mut c = bin();
        c.env("KAREO_ENDPOINT", sim.url())
            .args(["sync", "--once", "--config"])
            .arg(&cfg)
            .arg("--secrets")
            .arg(dir.join("secrets.json"))
            .arg("--state")
            .arg(dir.join("state"))
            .args(extra);
        c
    };
    let out = run(sync(&["--dry-run"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("state/events.jsonl").exists(),
        "a dry run hands off nothing"
    );

    let out = run(sync(&[])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(dir.join("state/events.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        lines,
        sim.rows(Family::Patients).len() + sim.rows(Family::Payments).len()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("acme") && stdout.contains("patients") && stdout.contains("done"),
        "{stdout}"
    );
    for row in sim.rows(Family::Patients) {
        assert!(!stdout.contains(&row["LastName"]), "no PHI on stdout");
    }

    // Again: nothing new, state kept in the directory.
    let out = run(sync(&["--json"])).await;
    assert!(out.status.success());
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        reports["polls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["events"] == 0 && r["outcome"] == "done"),
        "{reports}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state/events.jsonl"))
            .unwrap()
            .lines()
            .count(),
        lines
    );

    // The coverage audit (on the machine's clock, as the CLI runs): nothing missing, then a
    // change stamped three days back (behind every poll's reach) healed once and reported.
    let out = run(sync(&["--audit"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("audit: seen") && stdout.contains("healed 0"),
        "{stdout}"
    );
    assert!(!stdout.contains("healed 1"), "{stdout}");
    let family = kareo::Family::Patients;
    let id = sim.rows(family)[2]["ID"].clone();
    let now = sim.now();
    sim.set_now(chrono::Utc::now() - chrono::Duration::days(3));
    sim.update(family, &id, &[("MobilePhone", "555-0177")]);
    sim.set_now(now);
    let out = run(sync(&["--audit"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("healed 1 ["), "{stdout}");
    let events = std::fs::read_to_string(dir.join("state/events.jsonl")).unwrap();
    assert_eq!(events.lines().count(), lines + 1, "handed off once");
    let out = run(sync(&["--audit"])).await;
    assert!(!String::from_utf8_lossy(&out.stdout).contains("healed 1"));
}

#[tokio::test]
async fn sync_once_creates_the_mapped_tasks_once_and_dead_letters_what_cannot_be_created() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dock = dock_sim::DockSim::start(dock_sim::Seed::default()).await;
    let dir = tmp("sync-tasks");
    let c = sim.config();
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\ndock:\n  secret: dock/acme\nfamilies:\n  payments: {{}}\n  providers: {{}}\nrules:\n  - name: new-payment\n    interface: payments\n    on: created\n    task: {{ list: Billing, group: Claims, description: \"Payment {{ID}}\" }}\n  - name: new-provider\n    interface: providers\n    on: created\n    task: {{ list: Credentialing, description: \"Provider {{ID}}\" }}\n",
        (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name
    );
    let cfg = dir.join("acme.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let secrets = serde_json::json!({
        "kareo/acme": {"customer_key": c.customer_key, "user": c.user, "password": c.password},
        "dock/acme": dock.secret(),
    });
    std::fs::write(dir.join("secrets.json"), secrets.to_string()).unwrap();
    let sync = || {
        let mut cmd = bin();
        cmd.env("KAREO_ENDPOINT", sim.url())
            .env("DOCK_API_URL", dock.api_url())
            .env("DOCK_AUTH_URL", dock.auth_url())
            .args(["sync", "--once", "--json", "--config"])
            .arg(&cfg)
            .arg("--secrets")
            .arg(dir.join("secrets.json"))
            .arg("--state")
            .arg(dir.join("state"));
        cmd
    };
    let out = run(sync()).await;
    // The providers' list does not exist in Dock: those tasks are dead letters, exit 4.
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payments = sim.rows(Family::Payments).len();
    let providers = sim.rows(Family::Providers).len();
    assert_eq!(dock.tasks().len(), payments, "one task per new payment");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"]["tasks"], payments);
    let dead = std::fs::read_to_string(dir.join("state/dead-letters.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), providers);
    assert!(
        dead.contains("new-provider") && dead.contains("Credentialing"),
        "{dead}"
    );

    // Again: the cursors moved, nothing is created twice.
    let out = run(sync()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dock.tasks().len(), payments);
}

#[tokio::test]
async fn sync_rejects_a_bad_config_naming_file_and_line() {
    let sim = KareoSim::start(SimConfig::default()).await;
    let dir = tmp("badcfg");
    let cfg = write_tenant(&dir, &sim);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("America/New_York", "Mars/Base");
    std::fs::write(&cfg, text).unwrap();
    let mut c = bin();
    c.args(["sync", "--once", "--config"])
        .arg(&cfg)
        .arg("--secrets")
        .arg(dir.join("secrets.json"))
        .arg("--state")
        .arg(dir.join("s"));
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("acme.yaml:2: timezone: 'Mars/Base' is not an IANA time zone"),
        "{err}"
    );
}

#[tokio::test]
async fn decode_prints_records_and_errors() {
    let dir = tmp("decode");
    let tz = chrono_tz::America::New_York;
    let path = dir.join("patients.xml");
    let f = std::fs::File::create(&path).unwrap();
    kareo_sim::render_list_response(
        "GetPatients",
        (0..3).map(|i| kareo_sim::synthetic_patient(i, tz)),
        tz,
        f,
    )
    .unwrap();
    let mut c = bin();
    c.args(["kareo", "decode", "--op", "GetPatients"])
        .arg(&path);
    let out = run(c).await;
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["ID"], "1");

    let fault = dir.join("fault.xml");
    std::fs::write(&fault, r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>a:InternalServiceFault</faultcode><faultstring>The server was unable to process the request due to an internal error.</faultstring></s:Fault></s:Body></s:Envelope>"#).unwrap();
    let mut c = bin();
    c.args(["kareo", "decode", "--op", "GetCharges"])
        .arg(&fault);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error (fault): GetCharges: SOAP fault a:InternalServiceFault"),
        "{err}"
    );
    assert!(err.contains("kareo said: The server was unable"), "{err}");
}

#[tokio::test]
async fn envelope_prints_the_request_or_names_what_is_wrong() {
    let dir = tmp("envelope");
    let good = dir.join("good.json");
    std::fs::write(&good, r#"{"Filter": {"ToLastModifiedDate": "2026-09-02", "FromLastModifiedDate": "2026-09-01", "PracticeName": "A & B"}}"#).unwrap();
    let mut c = bin();
    c.args(["kareo", "envelope", "--op", "GetAppointments", "--input"])
        .arg(&good);
    let out = run(c).await;
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with(
        "SOAPAction: \"http://www.kareo.com/api/schemas/KareoServices/GetAppointments\""
    ));
    assert!(s.contains("<k:Password>PASSWORD</k:Password>"));
    assert!(s.contains("<k:PracticeName>A &amp; B</k:PracticeName>"));

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"Filter": {"practiceName": "A"}}"#).unwrap();
    let mut c = bin();
    c.args(["kareo", "envelope", "--op", "GetAppointments", "--input"])
        .arg(&bad);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("request/Filter/practiceName"));
}

#[tokio::test]
async fn the_demo_with_phi_canaries_leaks_none_into_logs_metrics_or_output() {
    let dir = tmp("canary");
    let metrics = dir.join("metrics.jsonl");
    let mut cmd = bin();
    cmd.env(
        "RUST_LOG",
        "info,kareo=debug,domain=debug,dock=debug,kareo_dock=debug",
    )
    .args(["--log-format", "json", "--metrics"])
    .arg(&metrics)
    .args(["demo", "--phi-canary"]);
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The canaries were planted (task titles carry them into Dock) and the run logged and measured.
    let planted: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("planted "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the demo says how many canaries it planted");
    assert!(planted > 100, "{planted}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "task created"),
        "task creation is logged"
    );
    assert!(logs.iter().any(|l| l["fields"]["message"] == "window read"));
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    assert!(metrics.contains("\"TasksCreated\""), "{metrics}");
    assert!(metrics.contains("\"RecordsSeen\""));
    for (what, text) in [
        ("stdout", &*stdout),
        ("logs", &*stderr),
        ("metrics", &*metrics),
    ] {
        assert!(
            !text.contains("PHICANARY"),
            "a canary leaked into {what}: {}",
            text.lines().find(|l| l.contains("PHICANARY")).unwrap()
        );
    }
}

#[tokio::test]
async fn write_runs_a_command_once_and_exits_by_outcome() {
    let sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dir = tmp("write");
    let cfg = write_tenant(&dir, &sim);
    let cmd_file = dir.join("cmd.json");
    std::fs::write(
        &cmd_file,
        serde_json::json!({"id": "intake-1", "tenant": "acme", "op": "CreatePatient",
            "data": {"first_name": "Ada", "last_name": "Quill", "date_of_birth": "1970-01-31"}})
        .to_string(),
    )
    .unwrap();
    let write = |file: &Path| {
        let mut c = bin();
        c.env("KAREO_ENDPOINT", sim.url())
            .args(["write", "--config"])
            .arg(&cfg)
            .arg("--secrets")
            .arg(dir.join("secrets.json"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg(file);
        c
    };
    let before = sim.rows(Family::Patients).len();
    let out = run(write(&cmd_file)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "done");
    let pid = r["kareo"]["PatientID"].to_string();
    assert!(sim.rows(Family::Patients).iter().any(|p| p["ID"] == pid));
    assert_eq!(sim.rows(Family::Patients).len(), before + 1);

    // Again, in a new process: the ledger in --state answers; Kareo is not called.
    let out = run(write(&cmd_file)).await;
    assert_eq!(out.status.code(), Some(0));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["repeated"], true);
    assert_eq!(again["kareo"], r["kareo"]);
    assert_eq!(sim.call_count("CreatePatient"), 1);

    // An invalid command: exit 2, every problem named, nothing sent.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"id": "x", "tenant": "acme", "op": "CreatePayment", "data": {"amount": "ten"}}"#,
    )
    .unwrap();
    let out = run(write(&bad)).await;
    assert_eq!(out.status.code(), Some(2));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "invalid");
    let fields: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "data.payer_type",
            "data.amount",
            "data.payment_method",
            "data.reference_number"
        ]
    );
    assert_eq!(sim.call_count("CreatePayment"), 0);

    // Kareo refuses (unknown appointment): exit 3.
    let del = dir.join("del.json");
    std::fs::write(
        &del,
        r#"{"id": "d", "tenant": "acme", "op": "DeleteAppointment", "data": {"appointment_id": 999999}}"#,
    )
    .unwrap();
    let out = run(write(&del)).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
