//! The operator verbs (`check`, `status`, `backfill`, `cursor reset`, `tenant put`, `replay`),
//! run as a process against the Kareo and Dock simulators — with local state, and with the
//! DynamoDB table, Secrets Manager and SQS of moto server (`AWS_ENDPOINT_URL`; the Lambda
//! Invoke API is a stub served here, reached through `AWS_ENDPOINT_URL_LAMBDA`).
//!
//! Without `AWS_ENDPOINT_URL` the moto tests FAIL, saying they did not run; with
//! `KAREO_DOCK_SKIP_MOTO=1` they pass with a loud skip. `scripts/test` starts moto.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use testkit::{moto, unique};

mod support;
use support::{bin, run, stdout_json, text, tmp};

use chrono::Utc;
use dock_sim::DockSim;
use domain::local::LocalStore;
use domain::ports::{CursorStore, TenantStore};
use kareo_sim::{Family, KareoSim, SimConfig};
use serde_json::{json, Value};

struct Env {
    sim: KareoSim,
    dock: DockSim,
    dir: PathBuf,
}

impl Env {
    async fn start(name: &str) -> Env {
        Env::start_with(
            name,
            SimConfig {
                enforce_throttle: false,
                ..SimConfig::default()
            },
        )
        .await
    }

    async fn start_with(name: &str, cfg: SimConfig) -> Env {
        let sim = KareoSim::start(cfg).await;
        let dock = DockSim::start(dock_sim::Seed::default()).await;
        let dir = tmp(name);
        let env = Env { sim, dock, dir };
        env.write_secrets("secrets.json", true);
        env
    }

    fn secrets_json(&self, good_password: bool) -> Value {
        let c = self.sim.config();
        json!({
            "kareo/acme": {
                "customer_key": c.customer_key,
                "user": c.user,
                "password": if good_password { c.password.clone() } else { "wrong".into() },
            },
            "dock/acme": self.dock.secret(),
        })
    }

    fn write_secrets(&self, name: &str, good_password: bool) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, self.secrets_json(good_password).to_string()).unwrap();
        p
    }

    /// A tenant config with these families and rules (YAML list items, indented 2).
    fn config(&self, name: &str, families: &[&str], rules: &str) -> PathBuf {
        let mut yaml = format!(
            "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\ndock:\n  secret: dock/acme\nfamilies:\n",
            (self.sim.now() - chrono::Duration::days(40)).to_rfc3339(),
            self.sim.config().practice_name
        );
        for f in families {
            yaml.push_str(&format!("  {f}: {{}}\n"));
        }
        if !rules.is_empty() {
            yaml.push_str("rules:\n");
            yaml.push_str(rules);
        }
        let p = self.dir.join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.env("KAREO_ENDPOINT", self.sim.url())
            .env("DOCK_API_URL", self.dock.api_url())
            .env("DOCK_AUTH_URL", self.dock.auth_url())
            .env_remove("KAREO_DOCK_SECRETS")
            .env_remove("KAREO_DOCK_TASK_FUNCTION")
            .args(args);
        c
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn since(&self) -> String {
        (self.sim.now() - chrono::Duration::days(40)).to_rfc3339()
    }
}

const PAYMENT_RULE: &str = "  - name: new-payment\n    interface: payments\n    on: created\n    task: { list: Billing, group: Claims, description: \"Payment {ID}\" }\n";

fn provider_rule(list: &str) -> String {
    format!("  - name: new-provider\n    interface: providers\n    on: created\n    task: {{ list: {list}, description: \"Provider {{ID}}\" }}\n")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn check_probe_names_what_kareo_does_and_the_setting_it_implies() {
    // A Kareo whose GetAppointments applies its default StartDate window, with date-only
    // stamps, on the machine's clock (the probes read the last 30 days of real time).
    let now = chrono::Utc::now();
    let env = Env::start_with(
        "check-probe",
        SimConfig {
            enforce_throttle: false,
            start: now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64),
            reality: kareo_sim::Reality {
                appointment_window_always: true,
                stamps: kareo_sim::Stamps::DateOnly,
                ..kareo_sim::Reality::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let secrets = env.dir.join("secrets.json");
    let cfg = env.config("acme.yaml", &["patients", "appointments"], "");
    let probe = |cfg: &Path| {
        env.cmd(&[
            "check",
            "--probe",
            "--json",
            "--config",
            p(cfg),
            "--secrets",
            p(&secrets),
        ])
    };
    let out = run(probe(&cfg)).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = stdout_json(&out);
    let verdict = |item: &str| -> Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["item"] == item)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict {item}: {v:#}"))
    };
    let window = verdict("kareo probe: GetAppointments date window");
    assert_eq!(window["level"], "fail", "{window}");
    let detail = window["detail"].as_str().unwrap();
    assert!(detail.contains("default StartDate window"), "{detail}");
    assert!(
        detail.contains("start_date_horizon: 365d"),
        "the setting it implies: {detail}"
    );
    let stamps = verdict("kareo probe: stamp precision");
    assert!(
        stamps["detail"]
            .as_str()
            .unwrap()
            .starts_with("date-only stamps"),
        "{stamps}"
    );
    assert_eq!(stamps["level"], "ok", "survived by default");

    // With the setting applied, the probe says the config covers it and check passes.
    let yaml = std::fs::read_to_string(&cfg).unwrap().replace(
        "  appointments: {}",
        "  appointments: { start_date_horizon: 365d }",
    );
    let fixed = env.dir.join("fixed.yaml");
    std::fs::write(&fixed, yaml).unwrap();
    let out = run(probe(&fixed)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    let window = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["item"] == "kareo probe: GetAppointments date window")
        .cloned()
        .unwrap();
    assert!(
        window["detail"]
            .as_str()
            .unwrap()
            .contains("the config reads StartDate slices"),
        "{window}"
    );

    // No patient content reaches the output.
    let row = &env.sim.rows(Family::Patients)[0];
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&row["LastName"]));
}

#[tokio::test]
async fn check_probe_finds_an_implicit_posting_window_and_names_the_setting() {
    // GetCharges answers only charges posted in the last 7 days; one charge posted 90 days ago
    // changed just now (the probes read real time).
    let now = chrono::Utc::now();
    let env = Env::start_with(
        "check-probe-posting",
        SimConfig {
            enforce_throttle: false,
            start: now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64),
            reality: kareo_sim::Reality {
                charges_posting_window: Some(chrono::Duration::days(7)),
                ..kareo_sim::Reality::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let tz = env.sim.config().timezone;
    let id = env.sim.rows(Family::Charges)[0]["ID"].clone();
    let posted = (env.sim.now() - chrono::Duration::days(90)).with_timezone(&tz);
    env.sim.update(
        Family::Charges,
        &id,
        &[(
            "PostingDate",
            &posted.format("%-m/%-d/%Y 9:00:00 AM").to_string(),
        )],
    );
    let secrets = env.dir.join("secrets.json");
    let probe = |cfg: &Path| {
        env.cmd(&[
            "check",
            "--probe",
            "--json",
            "--config",
            p(cfg),
            "--secrets",
            p(&secrets),
        ])
    };
    let verdict = |out: &std::process::Output| -> Value {
        stdout_json(out)["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["item"] == "kareo probe: GetCharges posting window")
            .cloned()
            .unwrap_or_else(|| panic!("no posting-window verdict: {}", text(out)))
    };
    let cfg = env.config("acme.yaml", &["charges", "encounters"], "");
    let out = run(probe(&cfg)).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = verdict(&out);
    assert_eq!(v["level"], "fail", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("implicit posting-date window"), "{detail}");
    for setting in [
        "families.charges.posting_date_horizon: 365d",
        "families.encounters.posting_date_horizon: 365d",
    ] {
        assert!(detail.contains(setting), "the setting it implies: {detail}");
    }
    // `--write` puts the settings in the config file (the rest as written); then the probe
    // says the config covers it and check passes.
    let before = std::fs::read_to_string(&cfg).unwrap();
    let mut write = probe(&cfg);
    write.arg("--write");
    let out = run(write).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "the findings stand for this run: {}",
        text(&out)
    );
    let printed = String::from_utf8_lossy(&out.stderr);
    for setting in [
        "families.charges.posting_date_horizon: 365d",
        "families.encounters.posting_date_horizon: 365d",
    ] {
        assert!(
            printed.contains(&format!("wrote `{setting}` to")),
            "{printed}"
        );
    }
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert_eq!(
        after,
        before
            .replace("  charges: {}", "  charges: { posting_date_horizon: 365d }")
            .replace(
                "  encounters: {}",
                "  encounters: { posting_date_horizon: 365d }"
            )
    );
    let fixed = cfg.clone();
    let out = run(probe(&fixed)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = verdict(&out);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("the config reads posting-date slices"),
        "{v}"
    );
    // And without the reading, the probe sees nothing to fix.
    let plain = Env::start_with(
        "check-probe-posting-plain",
        SimConfig {
            enforce_throttle: false,
            start: now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64),
            ..SimConfig::default()
        },
    )
    .await;
    let cfg = plain.config("acme.yaml", &["charges"], "");
    let secrets = plain.dir.join("secrets.json");
    let out = run(plain.cmd(&[
        "check",
        "--probe",
        "--json",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
    ]))
    .await;
    let v = verdict(&out);
    assert_eq!(v["level"], "ok", "{v}");
}

#[tokio::test]
async fn check_probe_write_reads_kareos_clock_west_and_the_bounds_from_one_patient_write() {
    // What cannot be seen without a write: Kareo's clock west of the practice's, and which
    // ends of the last-modified pair are inclusive. Each reading, and the patient unchanged.
    let now = chrono::Utc::now();
    for (hours_west, bounds, ok, expect) in [
        (
            3,
            kareo_sim::Bounds::ExclusiveTo,
            true,
            ["3.0 h west", "From inclusive, To exclusive"],
        ),
        (8, kareo_sim::Bounds::Inclusive, false, ["8.0 h west", ""]),
        (
            0,
            kareo_sim::Bounds::ExclusiveFrom,
            true,
            ["on the practice's clock", "From exclusive, To inclusive"],
        ),
    ] {
        let env = Env::start_with(
            "check-probe-write",
            SimConfig {
                enforce_throttle: false,
                start: now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64),
                reality: kareo_sim::Reality {
                    clock_offset: chrono::Duration::hours(-hours_west),
                    bounds,
                    ..kareo_sim::Reality::default()
                },
                ..SimConfig::default()
            },
        )
        .await;
        let patient = env.sim.rows(Family::Patients)[2].clone();
        let secrets = env.dir.join("secrets.json");
        let cfg = env.config("acme.yaml", &["patients"], "");
        let out = run(env.cmd(&[
            "check",
            "--probe",
            "--probe-write",
            &patient["ID"],
            "--json",
            "--config",
            p(&cfg),
            "--secrets",
            p(&secrets),
        ]))
        .await;
        let v = stdout_json(&out);
        let verdict = |item: &str| -> Value {
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["item"] == item)
                .cloned()
                .unwrap_or_else(|| panic!("no verdict {item}: {v:#}"))
        };
        let clock = verdict("kareo probe (write): Kareo's clock");
        assert_eq!(clock["ok"], ok, "{clock}");
        assert!(
            clock["detail"].as_str().unwrap().contains(expect[0]),
            "{clock}"
        );
        if ok {
            let b = verdict("kareo probe (write): filter bounds");
            assert!(b["detail"].as_str().unwrap().contains(expect[1]), "{b}");
        }
        assert_eq!(env.sim.call_count("UpdatePatient"), 1, "one write");
        let after = env
            .sim
            .rows(Family::Patients)
            .into_iter()
            .find(|r| r["ID"] == patient["ID"])
            .unwrap();
        for (k, v) in &patient {
            if k != "LastModifiedDate" {
                assert_eq!(after.get(k), Some(v), "{k} unchanged by the probe");
            }
        }
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&patient["LastName"]));
    }
}

#[tokio::test]
async fn check_gives_one_verdict_per_item_and_names_what_fails() {
    let env = Env::start("check").await;
    let rules = format!(
        "{PAYMENT_RULE}{}  - name: assigned\n    interface: payments\n    on: created\n    task: {{ list: Billing, description: \"x\", assignee: frontdesk@acme.example }}\n  - name: ghost\n    interface: payments\n    on: updated\n    task: {{ list: Front Desk, group: Nowhere, description: \"x\", assignee: nobody@acme.example }}\n  - name: intake\n    interface: payments\n    on: updated\n    task: {{ list: Front Desk, group: New Patients, workflow: New Patient Intake }}\n",
        provider_rule("Credentialing")
    );
    let cfg = env.config(
        "acme.yaml",
        &["payments", "providers", "appointments"],
        &rules,
    );
    let secrets = env.dir.join("secrets.json");
    let out = run(env.cmd(&[
        "check",
        "--json",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = stdout_json(&out);
    let verdict = |item: &str| -> (bool, String) {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["item"] == item)
            .unwrap_or_else(|| panic!("no verdict for {item}: {v:#}"));
        (
            c["ok"].as_bool().unwrap(),
            c["detail"].as_str().unwrap().to_string(),
        )
    };
    for ok in [
        "kareo credentials",
        "kareo practice (GetPractices)",
        "kareo read payments (GetPayments)",
        "kareo read providers (GetProviders)",
        "kareo read appointments (GetAppointments)",
        "dock token",
        "dock list 'Billing'",
        "dock list 'Front Desk'",
        "dock group 'Claims' in list 'Billing'",
        "dock group 'New Patients' in list 'Front Desk'",
        "dock workflow template 'New Patient Intake'",
        "dock assignee of rule assigned",
    ] {
        let (good, detail) = verdict(ok);
        assert!(good, "{ok}: {detail}");
    }
    let (good, detail) = verdict("dock list 'Credentialing'");
    assert!(!good && detail.starts_with("unknown_list"), "{detail}");
    let (good, detail) = verdict("dock group 'Nowhere' in list 'Front Desk'");
    assert!(!good && detail.starts_with("unknown_group"), "{detail}");
    let (good, detail) = verdict("dock assignee of rule ghost");
    assert!(!good && detail.starts_with("unknown_assignee"), "{detail}");
    assert_eq!(v["failed"], 3, "{v:#}");
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !all.contains("nobody@acme.example"),
        "no e-mail address printed"
    );
    assert!(
        !all.contains(&env.sim.config().password),
        "no secret printed"
    );

    // A ready tenant: every item ok, exit 0, a readable verdict per line.
    let good = env.config("good.yaml", &["payments"], PAYMENT_RULE);
    let out = run(env.cmd(&["check", "--config", p(&good), "--secrets", p(&secrets)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("dock group 'Claims' in list 'Billing'") && !s.contains("FAIL"),
        "{s}"
    );

    // Wrong Kareo password: the credentials fail, the reads are not attempted; Dock still ok.
    let bad = env.write_secrets("bad-secrets.json", false);
    let out = run(env.cmd(&[
        "check",
        "--json",
        "--config",
        p(&good),
        "--secrets",
        p(&bad),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = stdout_json(&out);
    let checks = v["checks"].as_array().unwrap();
    let item = |name: &str| checks.iter().find(|c| c["item"] == name).unwrap();
    assert_eq!(item("kareo credentials")["ok"], false);
    assert!(
        item("kareo credentials")["detail"]
            .as_str()
            .unwrap()
            .starts_with("security"),
        "{v:#}"
    );
    assert_eq!(item("kareo read payments")["ok"], false);
    assert_eq!(item("dock token")["ok"], true);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrong"));

    // An invalid config: exit 2 naming file and line.
    let broken = env.dir.join("broken.yaml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("payments: {}", "paymints: {}"),
    )
    .unwrap();
    let out = run(env.cmd(&["check", "--config", p(&broken), "--secrets", p(&secrets)])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.yaml:"),
        "{}",
        text(&out)
    );

    // No secrets source: bad usage.
    let out = run(env.cmd(&["check", "--config", p(&good)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn check_probes_dock_scopes_paging_membership_emr_and_a_sandbox_round_trip() {
    let env = Env::start("check-dock").await;
    let cfg = env.config("acme.yaml", &["payments"], PAYMENT_RULE);
    let secrets = env.dir.join("secrets.json");
    // Dock's own EMR integration has synced a patient.
    env.dock.add_emr_patient("Ada", "Lovelace", "EMR-1");
    let out = run(env.cmd(&[
        "check",
        "--json",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
        "--dock-sandbox",
        "Front Desk",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    let verdict = |item: &str| -> (String, String) {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["item"] == item)
            .unwrap_or_else(|| panic!("no verdict for {item}: {v:#}"));
        (
            c["level"].as_str().unwrap().to_string(),
            c["detail"].as_str().unwrap().to_string(),
        )
    };
    let (level, detail) = verdict("dock scopes");
    assert_eq!(level, "ok", "{detail}");
    let (level, detail) = verdict("dock list paging");
    assert!(level == "ok" && detail.contains("whole"), "{detail}");
    let (level, detail) = verdict("dock list 'Billing'");
    assert!(level == "ok" && detail.contains("is a member"), "{detail}");
    let (level, detail) = verdict("dock managed EMR integration");
    assert!(level == "warn" && detail.contains("1 of 1"), "{detail}");
    let (level, detail) = verdict("dock round trip in list 'Front Desk'");
    assert_eq!(level, "ok", "{detail}");
    // The probe's task was created and deleted again.
    let tasks = env.dock.tasks();
    assert_eq!(tasks.len(), 1);
    assert!(!tasks[0].is_active());

    // Paged lists, and no patient scopes while a rule links patients: the scopes fail.
    env.dock.set_reality(dock_sim::Reality {
        no_patient_scopes: true,
        paging: dock_sim::Paging::Positions {
            page: 1,
            end_inclusive: false,
        },
        ..dock_sim::Reality::default()
    });
    let linking = env.config(
        "linking.yaml",
        &["payments"],
        "  - name: with-patient\n    interface: payments\n    on: created\n    task: { list: Billing, description: \"x\", patient: true }\n",
    );
    let out = run(env.cmd(&["check", "--config", p(&linking), "--secrets", p(&secrets)])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let line = |item: &str| {
        s.lines()
            .find(|l| l.contains(item))
            .unwrap_or_else(|| panic!("no line for {item}: {s}"))
            .to_string()
    };
    assert!(
        line("dock scopes").contains(
            "FAIL: the patient scopes are not granted: patient links of rule(s) with-patient"
        ),
        "{s}"
    );
    assert!(line("dock list paging").contains("pages list reads"), "{s}");
    assert!(line("dock list 'Billing'").contains("ok (id "), "{s}");
}

// ---------------------------------------------------------------------------------------------
// status, cursor reset
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn status_shows_cursors_lag_and_the_last_error_class_and_cursor_reset_moves_them() {
    let env = Env::start("status").await;
    let cfg = env.config("acme.yaml", &["patients", "payments"], "");
    let state = env.state();
    let secrets = env.dir.join("secrets.json");
    let status = || env.cmd(&["status", "--json", "--state", p(&state)]);

    let out = run(env.cmd(&["status", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no cursors yet"));

    let before = Utc::now();
    let out = run(env.cmd(&[
        "sync",
        "--once",
        "--no-tasks",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(status()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = stdout_json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in rows {
        assert_eq!(r["tenant"], "acme");
        let pos: chrono::DateTime<Utc> = serde_json::from_value(r["position"].clone()).unwrap();
        // The cursor stops at now − safety lag (2 minutes).
        assert!(
            pos <= Utc::now() - chrono::Duration::minutes(2)
                && pos > before - chrono::Duration::minutes(3),
            "{r}"
        );
        let lag = r["lag_seconds"].as_i64().unwrap();
        assert!((120..600).contains(&lag), "{r}");
        assert!(
            r["last_success"].is_string() && r["last_error"].is_null(),
            "{r}"
        );
    }
    let out = run(env.cmd(&["status", "--state", p(&state)])).await;
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("acme") && s.contains("payments") && s.contains("2m"),
        "{s}"
    );

    // A failed run: the class is shown, the position stays, exit 4.
    let positions = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["position"].clone())
            .collect()
    };
    let kept = positions(&stdout_json(&run(status()).await));
    let bad = env.write_secrets("bad.json", false);
    let out = run(env.cmd(&[
        "sync",
        "--once",
        "--no-tasks",
        "--family",
        "payments",
        "--config",
        p(&cfg),
        "--secrets",
        p(&bad),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let out = run(status()).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let rows = stdout_json(&out);
    assert_eq!(positions(&rows), kept);
    let payments = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "payments")
        .unwrap();
    assert_eq!(
        payments["last_error"]["class"], "kareo_credentials",
        "{rows:#}"
    );
    let patients = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "patients")
        .unwrap();
    assert!(patients["last_error"].is_null());
    let out = run(env.cmd(&["status", "--state", p(&state)])).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kareo_credentials"),
        "{}",
        text(&out)
    );
    // The refused sign-in opened the account's breaker: status names it and how to resume.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BREAKER OPEN on Kareo account kareo/acme"),
        "{}",
        text(&out)
    );
    let out = run(env.cmd(&[
        "tenant",
        "resume",
        "--account",
        "kareo/acme",
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("resumed Kareo account kareo/acme"),
        "{}",
        text(&out)
    );
    let out = run(env.cmd(&["status", "--state", p(&state)])).await;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("BREAKER OPEN"),
        "{}",
        text(&out)
    );

    // cursor reset: to a date, then cleared; the store shows it.
    let out = run(env.cmd(&[
        "cursor",
        "reset",
        "--tenant",
        "acme",
        "--family",
        "payments",
        "--to",
        "2026-01-02",
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cursor acme/payments"),
        "{}",
        text(&out)
    );
    let store = LocalStore::in_dir(&state).unwrap();
    let c = store.load("acme", Family::Payments).await.unwrap().unwrap();
    assert_eq!(c.position, Some("2026-01-02T00:00:00Z".parse().unwrap()));
    let c = store.load("acme", Family::Patients).await.unwrap().unwrap();
    assert!(c.position.is_some(), "the other family is untouched");

    let out = run(env.cmd(&[
        "cursor",
        "reset",
        "--json",
        "--tenant",
        "acme",
        "--family",
        "payments",
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout_json(&out)["position"], Value::Null);
    let store = LocalStore::in_dir(&state).unwrap();
    assert_eq!(
        store
            .load("acme", Family::Payments)
            .await
            .unwrap()
            .unwrap()
            .position,
        None
    );

    // Bad input: an unknown family, a future date, both stores.
    for args in [
        vec![
            "cursor",
            "reset",
            "--tenant",
            "acme",
            "--family",
            "paymints",
            "--state",
            p(&state),
        ],
        vec![
            "cursor",
            "reset",
            "--tenant",
            "acme",
            "--family",
            "payments",
            "--to",
            "2999-01-01",
            "--state",
            p(&state),
        ],
        vec![
            "cursor",
            "reset",
            "--tenant",
            "acme",
            "--family",
            "payments",
            "--to",
            "yesterday",
            "--state",
            p(&state),
        ],
    ] {
        let out = run(env.cmd(&args)).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    }
    let out = run(env.cmd(&["status", "--state", p(&state), "--table", "t"])).await;
    assert_eq!(out.status.code(), Some(1), "a usage error: {}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// tenant put
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenant_put_stores_a_valid_config_and_refuses_an_invalid_one_naming_the_line() {
    let env = Env::start("tenant").await;
    let cfg = env.config("acme.yaml", &["payments", "providers"], PAYMENT_RULE);
    let state = env.state();
    let out = run(env.cmd(&["tenant", "put", p(&cfg), "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stored tenant acme"),
        "{}",
        text(&out)
    );
    let stored = LocalStore::in_dir(&state).unwrap().tenants().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].tenant, "acme");
    assert_eq!(stored[0].mapping.rules.len(), 1);

    // Stored tenants appear in status as never run.
    let out = run(env.cmd(&["status", "--json", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = stdout_json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["never_run"] == true));

    // A bad rule: exit 2, file:line, and the stored config is unchanged.
    let bad = env.dir.join("bad.yaml");
    let text_ok = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&bad, text_ok.replace("on: created", "on: sometimes")).unwrap();
    let line = text_ok
        .lines()
        .position(|l| l.contains("on: created"))
        .unwrap()
        + 1;
    let out = run(env.cmd(&["tenant", "put", p(&bad), "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("bad.yaml:{line}:")), "{err}");
    let stored = LocalStore::in_dir(&state).unwrap().tenants().await.unwrap();
    assert_eq!(stored[0].families.len(), 2);

    // Replacing: the new config wins.
    let smaller = env.config("acme2.yaml", &["payments"], PAYMENT_RULE);
    let out = run(env.cmd(&["tenant", "put", "--json", p(&smaller), "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stdout_json(&out)["replaced"], true);
    let stored = LocalStore::in_dir(&state).unwrap().tenants().await.unwrap();
    assert_eq!(stored[0].families.len(), 1);
}

#[tokio::test]
async fn tenant_get_prints_back_exactly_the_text_that_was_put() {
    let env = Env::start("tenant-get").await;
    let cfg = env.config("acme.yaml", &["payments"], PAYMENT_RULE);
    // A comment, a quoted number with leading zeros, a decimal and flow style: a re-serialised
    // config would lose or rewrite each of them.
    let original = std::fs::read_to_string(&cfg).unwrap().replacen(
        "families:",
        "# the front desk's practice\nfamilies:",
        1,
    )
        + "webhooks:\n  max_age: 5m   # Dock's retries\n  ignore_users: ['007', \"1.50\"]\n";
    std::fs::write(&cfg, &original).unwrap();
    let state = env.state();
    let out = run(env.cmd(&["tenant", "put", p(&cfg), "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(env.cmd(&["tenant", "get", "--tenant", "acme", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), original);
    let out = run(env.cmd(&["tenant", "get", "--tenant", "zeta", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn tenant_pause_stops_its_polls_status_shows_it_and_resume_reads_what_changed() {
    let env = Env::start("tenant-pause").await;
    // The CLI polls up to the real clock: the simulator's runs on it too.
    env.sim.set_now(Utc::now());
    let cfg = env.config("acme.yaml", &["providers"], "");
    let state = env.state();
    let secrets = env.dir.join("secrets.json");
    let sync = || {
        env.cmd(&[
            "sync",
            "--once",
            "--json",
            "--no-tasks",
            "--config",
            p(&cfg),
            "--secrets",
            p(&secrets),
            "--state",
            p(&state),
        ])
    };
    let out = run(env.cmd(&["tenant", "put", p(&cfg), "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(sync()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(env.cmd(&["tenant", "pause", "--tenant", "acme", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(env.cmd(&["status", "--state", p(&state)])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "a pause is not a failure: {}",
        text(&out)
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("PAUSED tenant acme"), "{status}");
    let id = env.sim.rows(Family::Providers)[0]["ID"].clone();
    env.sim
        .update(Family::Providers, &id, &[("FirstName", "Changed")]);
    env.sim.reset_calls();
    let out = run(sync()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stdout_json(&out)["polls"][0]["outcome"],
        "paused",
        "{}",
        text(&out)
    );
    assert!(env.sim.calls().is_empty(), "a paused tenant calls nothing");

    let out = run(env.cmd(&["tenant", "resume", "--tenant", "acme", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("its pause is over"));
    let out = run(sync()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = &stdout_json(&out)["polls"][0];
    assert_eq!(report["outcome"], "done", "{report}");
    assert_eq!(
        report["events"], 1,
        "the change made while paused arrives: {report}"
    );
    let out = run(env.cmd(&["tenant", "pause", "--tenant", "zeta", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// backfill
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn backfill_rereads_from_a_date_with_or_without_creating_tasks() {
    let env = Env::start("backfill").await;
    let cfg = env.config("acme.yaml", &["payments"], PAYMENT_RULE);
    let secrets = env.dir.join("secrets.json");
    let state = env.state();
    let payments = env.sim.rows(Family::Payments).len();
    assert!(payments > 0);
    let since = env.since();
    let backfill = |state: &Path, extra: &[&str]| {
        let mut c = env.cmd(&[
            "backfill",
            "--json",
            "--config",
            p(&cfg),
            "--secrets",
            p(&secrets),
            "--from",
            &since,
        ]);
        c.arg("--state").arg(state).args(extra);
        c
    };

    // Events only: every payment recorded, no task created.
    let out = run(backfill(&state, &["--no-tasks"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["runs"][0]["events"], payments, "{v:#}");
    assert!(v["runs"][0]["windows"].as_u64().unwrap() >= 1);
    let events = std::fs::read_to_string(state.join("events.jsonl")).unwrap();
    assert_eq!(events.lines().count(), payments);
    assert!(env.dock.tasks().is_empty(), "--no-tasks creates no task");
    let store = LocalStore::in_dir(&state).unwrap();
    let pos = store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap()
        .position
        .unwrap();
    assert!(pos > Utc::now() - chrono::Duration::minutes(10));

    // Again, with tasks: the snapshots say it was all handed off: nothing new, no task.
    let out = run(backfill(&state, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["runs"][0]["events"], 0, "{v:#}");
    assert_eq!(v["runs"][0]["duplicates"], payments);
    assert!(env.dock.tasks().is_empty());

    // A fresh state with tasks: one task per payment; the cursor never moves backwards.
    let fresh = env.dir.join("fresh");
    let out = run(backfill(&fresh, &["--family", "payments"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.dock.tasks().len(), payments);
    let store = LocalStore::in_dir(&fresh).unwrap();
    let first = store
        .load("acme", Family::Payments)
        .await
        .unwrap()
        .unwrap()
        .position
        .unwrap();
    let out = run(backfill(&fresh, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.dock.tasks().len(), payments, "no task twice");
    let store = LocalStore::in_dir(&fresh).unwrap();
    assert!(
        store
            .load("acme", Family::Payments)
            .await
            .unwrap()
            .unwrap()
            .position
            .unwrap()
            >= first
    );

    // Text output names the run, never a record's contents.
    let out = run(env.cmd(&[
        "backfill",
        "--no-tasks",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
        "--from",
        &since,
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("acme") && s.contains("payments") && s.contains("done"),
        "{s}"
    );

    // Bad input.
    for extra in [["--family", "paymints"], ["--family", "providers"]] {
        let out = run(backfill(&state, &extra)).await;
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", text(&out));
    }
    let mut c = env.cmd(&[
        "backfill",
        "--config",
        p(&cfg),
        "--secrets",
        p(&secrets),
        "--from",
        "2999-01-01",
    ]);
    c.arg("--state").arg(&state);
    assert_eq!(run(c).await.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// replay (local)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn replay_redrives_the_dead_letters_once_the_cause_is_fixed() {
    let env = Env::start("replay").await;
    let broken = env.config(
        "acme.yaml",
        &["payments", "providers"],
        &format!("{PAYMENT_RULE}{}", provider_rule("Credentialing")),
    );
    let fixed = env.config(
        "fixed.yaml",
        &["payments", "providers"],
        &format!("{PAYMENT_RULE}{}", provider_rule("Front Desk")),
    );
    let secrets = env.dir.join("secrets.json");
    let state = env.state();
    let payments = env.sim.rows(Family::Payments).len();
    let providers = env.sim.rows(Family::Providers).len();
    let out = run(env.cmd(&[
        "sync",
        "--once",
        "--config",
        p(&broken),
        "--secrets",
        p(&secrets),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let dl = state.join("dead-letters.jsonl");
    let original = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(original.lines().count(), providers);
    assert_eq!(env.dock.tasks().len(), payments);

    // Dry run: lists them, changes nothing.
    let out = run(env.cmd(&["replay", "--dry-run", "--json", "--state", p(&state)])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), providers);
    assert!(
        items.iter().all(|i| i["status"] == "would_redrive"
            && i["rule"] == "new-provider"
            && i["family"] == "providers"
            && i["class"] == "unknown_list"),
        "{v:#}"
    );
    assert_eq!(std::fs::read_to_string(&dl).unwrap(), original);
    assert_eq!(env.dock.tasks().len(), payments);

    // Still broken: exit 4, the file keeps them all.
    let out = run(env.cmd(&[
        "replay",
        "--config",
        p(&broken),
        "--secrets",
        p(&secrets),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&dl).unwrap().lines().count(),
        providers
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL (unknown_list)"),
        "{}",
        text(&out)
    );
    assert_eq!(env.dock.tasks().len(), payments);

    // The mapping fixed: every dead letter becomes its task, the payments are not redone.
    let out = run(env.cmd(&[
        "replay",
        "--json",
        "--config",
        p(&fixed),
        "--secrets",
        p(&secrets),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["redriven"], providers, "{v:#}");
    assert_eq!(env.dock.tasks().len(), payments + providers);
    assert_eq!(std::fs::read_to_string(&dl).unwrap(), "");

    // Nothing left.
    let out = run(env.cmd(&[
        "replay",
        "--config",
        p(&fixed),
        "--secrets",
        p(&secrets),
        "--state",
        p(&state),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
    assert_eq!(env.dock.tasks().len(), payments + providers);
}

// ---------------------------------------------------------------------------------------------
// AWS: the table, Secrets Manager, SQS (moto) and a Lambda Invoke stub
// ---------------------------------------------------------------------------------------------

/// Deletes the test's table when the test ends.
struct TableGuard(aws::DynamoStore);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let store = self.0.clone();
        let _ = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(store.delete_table())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_mode_tenant_put_check_backfill_status_and_cursor_reset() {
    if !moto("the --table / --queue-url tests") {
        return;
    }
    let env = Env::start("table").await;
    let sdk = aws::sdk_config().await;
    let table = unique("kareo-dock-cli");
    let store = aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &table);
    store.create_table().await.expect("create the test table");
    let _guard = TableGuard(store.clone());
    // Secrets in Secrets Manager, under names of this test only.
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let (kareo_name, dock_name) = (unique("kareo/acme"), unique("dock/acme"));
    let secrets = env.secrets_json(true);
    for (name, value) in [
        (&kareo_name, &secrets["kareo/acme"]),
        (&dock_name, &secrets["dock/acme"]),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(value.to_string())
            .send()
            .await
            .unwrap();
    }
    let cfg = env.config("acme.yaml", &["payments", "providers"], PAYMENT_RULE);
    let yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("secret: kareo/acme", &format!("secret: {kareo_name}"))
        .replace("secret: dock/acme", &format!("secret: {dock_name}"));
    std::fs::write(&cfg, yaml).unwrap();

    let out = run(env.cmd(&["tenant", "put", p(&cfg), "--table", &table])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stored = store.tenants().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kareo.secret, kareo_name);

    // check from the stored tenant, secrets from Secrets Manager.
    let out = run(env.cmd(&["check", "--json", "--table", &table])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["failed"], 0);
    assert!(v["checks"].as_array().unwrap().len() >= 6, "{v:#}");

    // backfill needs a task function or --no-tasks on AWS.
    let since = env.since();
    let out = run(env.cmd(&["backfill", "--table", &table, "--from", &since])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // With a task function: the changes are handed to it (asynchronous invoke), as the pollers
    // do; nothing is created in this process.
    let (lambda_url, calls) = invoke_stub().await;
    let mut c = env.cmd(&[
        "backfill",
        "--json",
        "--family",
        "providers",
        "--function",
        "kareo-dock-task",
        "--table",
        &table,
        "--from",
        &since,
    ]);
    c.env("AWS_ENDPOINT_URL_LAMBDA", &lambda_url);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let providers = env.sim.rows(Family::Providers).len();
    assert_eq!(stdout_json(&out)["runs"][0]["events"], providers);
    {
        let calls = calls.lock().unwrap();
        assert!(calls.iter().all(|(name, _)| name == "kareo-dock-task"));
        let handed: usize = calls
            .iter()
            .map(|(_, p)| p["events"].as_array().unwrap().len())
            .sum();
        assert_eq!(handed, providers);
    }
    assert!(env.dock.tasks().is_empty());
    let out = run(env.cmd(&[
        "backfill",
        "--json",
        "--no-tasks",
        "--table",
        &table,
        "--from",
        &since,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let payments = runs.iter().find(|r| r["family"] == "payments").unwrap();
    assert_eq!(payments["events"], env.sim.rows(Family::Payments).len());
    assert!(env.dock.tasks().is_empty());
    for f in [Family::Payments, Family::Providers] {
        assert!(store
            .load("acme", f)
            .await
            .unwrap()
            .unwrap()
            .position
            .is_some());
    }

    let out = run(env.cmd(&["status", "--json", "--table", &table])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = stdout_json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["position"].is_string() && r["lag_seconds"].as_i64().unwrap() >= 120));

    let out = run(env.cmd(&[
        "cursor",
        "reset",
        "--tenant",
        "acme",
        "--family",
        "providers",
        "--to",
        "2026-03-04T05:06:07Z",
        "--table",
        &table,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        store
            .load("acme", Family::Providers)
            .await
            .unwrap()
            .unwrap()
            .position,
        Some("2026-03-04T05:06:07Z".parse().unwrap())
    );
    let out = run(env.cmd(&["status", "--json", "--table", &table, "--tenant", "acme"])).await;
    let rows = stdout_json(&out);
    let providers = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "providers")
        .unwrap();
    assert_eq!(providers["position"], "2026-03-04T05:06:07Z");

    for (name, _) in [(&kareo_name, ()), (&dock_name, ())] {
        let _ = sm
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await;
    }
}

/// A Lambda Invoke endpoint: records each payload; answers a function error when the payload's
/// first event belongs to tenant `broken`.
async fn invoke_stub() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    type Calls = Arc<Mutex<Vec<(String, Value)>>>;
    async fn invoke(
        State(calls): State<Calls>,
        UrlPath(name): UrlPath<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, HeaderMap, String) {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let broken = v["events"][0]["tenant"] == "broken";
        calls.lock().unwrap().push((name, v));
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if headers
            .get("x-amz-invocation-type")
            .is_some_and(|t| t == "Event")
        {
            return (StatusCode::ACCEPTED, h, String::new());
        }
        if broken {
            h.insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            let err = json!({"errorType": "TaskError", "errorMessage": "1 of 1 tasks not created: e1/r1 dock_http"});
            return (StatusCode::OK, h, err.to_string());
        }
        (StatusCode::OK, h, json!({"tasks": 1}).to_string())
    }
    let calls: Calls = Default::default();
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn destination_record(tenant: &str, event: &str) -> Value {
    json!({
        "version": "1.0",
        "timestamp": "2026-11-01T00:00:00.000Z",
        "requestContext": {
            "requestId": "r-1",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:kareo-dock-task:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        },
        "requestPayload": {"events": [{
            "id": event, "tenant": tenant, "family": "payments", "record_id": "7",
            "version": "2026-10-01T00:00:00Z", "kind": "created", "changes": [], "record": {"ID": "7"}
        }]},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "TaskError", "errorMessage": "x"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_on_failure_queue_reinvokes_and_deletes_only_what_succeeded() {
    if !moto("the --table / --queue-url tests") {
        return;
    }
    let sdk = aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name(unique("kareo-dock-task-failures"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for (tenant, event) in [("acme", "e-ok-1"), ("broken", "e-bad"), ("acme", "e-ok-2")] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(destination_record(tenant, event).to_string())
            .send()
            .await
            .unwrap();
    }
    let (lambda_url, calls) = invoke_stub().await;
    let replay = |extra: &[&str]| {
        let mut c = bin();
        c.env("AWS_ENDPOINT_URL_LAMBDA", &lambda_url)
            .env_remove("KAREO_DOCK_TASK_FUNCTION")
            .args(["replay", "--json", "--queue-url", &url])
            .args(extra);
        c
    };
    let visible = || async {
        let a = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        a.attributes()
            .and_then(|m| {
                m.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .map(|n| n.parse::<usize>().unwrap())
            .unwrap()
    };

    // Dry run: lists the three, invokes nothing, leaves them visible.
    let out = run(replay(&["--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = stdout_json(&out);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{v:#}");
    assert!(items
        .iter()
        .all(|i| i["status"] == "would_redrive" && i["events"] == 1));
    assert!(items.iter().all(|i| i["function"]
        .as_str()
        .unwrap()
        .ends_with("function:kareo-dock-task:$LATEST")));
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(visible().await, 3);

    // Replay to a named function: two succeed and are deleted, one fails and stays.
    let out = run(replay(&["--function", "kareo-dock-task"])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let v = stdout_json(&out);
    assert_eq!(v["redriven"], 2, "{v:#}");
    assert_eq!(v["failed"], 1);
    let failed = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["status"] == "failed")
        .unwrap();
    assert_eq!(failed["class"], "TaskError");
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert!(calls.iter().all(|(name, _)| name == "kareo-dock-task"));
        let mut ids: Vec<&str> = calls
            .iter()
            .map(|(_, p)| p["events"][0]["id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["e-bad", "e-ok-1", "e-ok-2"]);
        // The payload is the record's requestPayload, as it was.
        let bad = calls
            .iter()
            .find(|(_, p)| p["events"][0]["id"] == "e-bad")
            .unwrap();
        assert_eq!(
            bad.1,
            destination_record("broken", "e-bad")["requestPayload"]
        );
    }
    assert_eq!(visible().await, 1, "only the failed message is left");

    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

/// The webhook function as an HTTP server on loopback, reading the local state afresh on
/// every request (as the function reads its table), so that what `webhook register` stores
/// is what it answers from.
async fn webhook_endpoint(state: PathBuf, secrets: PathBuf, dock: &DockSim) -> String {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use domain::http::HttpRequest;
    use domain::local::LocalSecrets;
    use domain::ports::SystemClock;
    use writeback::webhook::{Directory, Hooks};
    use writeback::write::Writer;
    #[derive(Clone)]
    struct App {
        state: PathBuf,
        secrets: PathBuf,
        kareo: kareo::KareoClient,
        dock: dock::DockClient,
    }
    async fn serve(
        axum::extract::State(app): axum::extract::State<App>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, String) {
        let req = HttpRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
            caller: None,
        };
        let store = LocalStore::in_dir(&app.state).unwrap();
        let secrets = LocalSecrets::from_file(&app.secrets).unwrap();
        let directory = Directory::load(&store).await.unwrap();
        let writer = Writer::new(&app.kareo, &store, &SystemClock, "hook".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &app.dock,
            secrets: &secrets,
            directory: &directory,
            store: &store,
        };
        let out = hooks.handle(&req).await;
        (
            StatusCode::from_u16(out.status).unwrap(),
            out.body.to_string(),
        )
    }
    let app = App {
        state,
        secrets,
        kareo: kareo::KareoClient::new(kareo::ClientConfig::default()).unwrap(),
        dock: dock::DockClient::new(dock::DockConfig {
            api_url: dock.api_url(),
            auth_url: dock.auth_url(),
            ..dock::DockConfig::default()
        })
        .unwrap(),
    };
    let router = axum::Router::new().fallback(serve).with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_register_creates_a_verified_hook_with_a_token_url_and_rotates_it() {
    let env = Env::start("webhook").await;
    let mut secrets = env.secrets_json(true);
    let secrets_file = env.dir.join("secrets-hook.json");
    // Without a webhook_secret: a clear error, nothing registered.
    std::fs::write(&secrets_file, secrets.to_string()).unwrap();
    let config = env.config("acme.yaml", &["patients"], "");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("webhooks:\n  rules:\n    - name: intake\n      event: [MARK_COMPLETE, UPDATE_TASK_STATUS]\n      op: CreatePatient\n      data:\n        first_name: \"{patient.firstName}\"\n        last_name: \"{patient.lastName}\"\n        date_of_birth: \"{patient.dob}\"\n");
    std::fs::write(&config, yaml).unwrap();
    let state = env.state();
    let o = run(env.cmd(&["tenant", "put", p(&config), "--state", p(&state)])).await;
    assert!(o.status.success(), "{}", text(&o));
    let base = webhook_endpoint(state.clone(), secrets_file.clone(), &env.dock).await;
    let register = || {
        env.cmd(&[
            "webhook",
            "register",
            "--tenant",
            "acme",
            "--base-url",
            &base,
            "--state",
            p(&state),
            "--secrets",
            p(&secrets_file),
            "--settle",
            "0s",
            "--wait",
            "10s",
        ])
    };
    let o = run(register()).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has no webhook_secret"), "{}", text(&o));
    assert!(env.dock.webhooks().is_empty());

    secrets["dock/acme"]["webhook_secret"] = json!("whsec-register-7d1e0a9f3b2c");
    std::fs::write(&secrets_file, secrets.to_string()).unwrap();
    let o = run(register()).await;
    assert!(o.status.success(), "{}", text(&o));
    let url = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(url.starts_with(&format!("{base}/acme/")), "{url}");
    let hooks = env.dock.webhooks();
    assert_eq!(hooks.len(), 1);
    assert!(hooks[0].verified, "Dock's challenge was answered");
    assert!(hooks[0].enabled);
    assert_eq!(hooks[0].url, url);
    assert_eq!(hooks[0].events, ["MARK_COMPLETE", "UPDATE_TASK_STATUS"]);
    assert!(
        !text(&o).contains("whsec-register"),
        "the secret is never printed"
    );
    let stored = std::fs::read_to_string(state.join("state.json")).unwrap();
    let token = url.rsplit('/').next().unwrap();
    assert!(!stored.contains(token), "only the token's hash is stored");

    // Registered: the challenge is disarmed, and the tenant's path without the token is 404.
    let http = https::client();
    let status = |u: String| {
        let http = http.clone();
        async move { http.get(u).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("{url}?message=abc")).await, 403);
    assert_eq!(status(format!("{base}/acme?message=abc")).await, 404);

    // Again: a new token, the same Dock webhook updated (PUT), the old URL dead.
    let o = run(register()).await;
    assert!(o.status.success(), "{}", text(&o));
    let url2 = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_ne!(url2, url);
    let hooks2 = env.dock.webhooks();
    assert_eq!(hooks2.len(), 1);
    assert_eq!(hooks2[0].id, hooks[0].id);
    assert_eq!(hooks2[0].url, url2);
    assert!(hooks2[0].verified);
    assert_eq!(status(format!("{url}?message=abc")).await, 404);

    // `webhook url`: a URL for registering by hand, armed meanwhile.
    let o = run(env.cmd(&[
        "webhook",
        "url",
        "--tenant",
        "acme",
        "--base-url",
        &base,
        "--state",
        p(&state),
    ]))
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let url3 = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let r = http
        .get(format!("{url3}?message=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["digest"],
        dock_sim::webhook::challenge_digest("whsec-register-7d1e0a9f3b2c", "abc")
    );
}
