//! `kareo-dock onboard`, run as a process against the Kareo and Dock simulators: credentials
//! pasted into a Dock list the way practices paste them are read, validated with one sign-in,
//! stored, and scrubbed; a refusal is one attempt and a message; nothing printed holds a value.

use std::path::{Path, PathBuf};
use std::process::Output;

use dock_sim::{DockSim, Reality, Seed, SeedList};
use domain::local::LocalStore;
use domain::ports::{Breaker, BreakerStore};
use kareo_sim::{KareoSim, SimConfig};
use serde_json::{json, Value};

use crate::support::{bin, run, text, tmp};

pub(crate) const KEY: &str = "CANARY-KEY-7f3a91";
pub(crate) const USER: &str = "canary.api@practice.example";
pub(crate) const PASSWORD: &str = "Canary#Pw!9z";

pub(crate) struct World {
    pub(crate) sim: KareoSim,
    pub(crate) dock: DockSim,
    pub(crate) dir: PathBuf,
}

impl World {
    pub(crate) async fn start(name: &str, cfg: SimConfig) -> World {
        let sim = KareoSim::start(SimConfig {
            customer_key: KEY.into(),
            user: USER.into(),
            password: PASSWORD.into(),
            ..cfg
        })
        .await;
        let mut seed = Seed::default();
        seed.lists.push(SeedList {
            id: None,
            name: "Kareo".into(),
            description: None,
            groups: Vec::new(),
            members: None,
        });
        let dock = DockSim::start(seed).await;
        let dir = tmp(&format!("onboard-{name}"));
        // The deployment's Dock secret only: the Kareo one is onboard's to store.
        let secrets = json!({ "dock/acme": dock.secret() });
        std::fs::write(dir.join("secrets.json"), secrets.to_string()).unwrap();
        let yaml = format!(
            "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: kareo/acme\n  practice: \"{}\"\ndock:\n  secret: dock/acme\nfamilies:\n  providers: {{}}\n  patients: {{}}\n",
            (sim.now() - chrono::Duration::days(3)).to_rfc3339(),
            sim.config().practice_name
        );
        std::fs::write(dir.join("acme.yaml"), yaml).unwrap();
        World { sim, dock, dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    async fn onboard(&self, extra: &[&str]) -> Output {
        let mut c = bin();
        c.env("KAREO_ENDPOINT", self.sim.url())
            .env("DOCK_API_URL", self.dock.api_url())
            .env("DOCK_AUTH_URL", self.dock.auth_url())
            .env("RUST_LOG", "debug")
            .env_remove("KAREO_DOCK_SECRETS")
            .args(["onboard", "--config", &self.path("acme.yaml")])
            .args(["--secrets", &self.path("secrets.json")])
            .args(extra);
        run(c).await
    }

    fn secrets(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("secrets.json")).unwrap())
            .unwrap()
    }

    /// The text of every task of the Kareo list (title, details, status).
    fn kareo_tasks(&self) -> Vec<(String, String, String)> {
        let list = self.dock.list_id("Kareo").unwrap();
        self.dock
            .tasks()
            .into_iter()
            .filter(|t| t.task_list.as_ref().map(|l| l.id.as_str()) == Some(list.as_str()))
            .map(|t| {
                (
                    t.description.unwrap_or_default(),
                    t.details.unwrap_or_default(),
                    format!("{:?}", t.status),
                )
            })
            .collect()
    }
}

/// No value reaches the output, whatever the outcome.
fn assert_no_value(o: &Output) {
    let all = text(o);
    for v in [KEY, USER, PASSWORD] {
        assert!(!all.contains(v), "a credential value was printed:\n{all}");
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn credentials_pasted_in_each_layout_are_read_validated_stored_and_scrubbed() {
    // (name, tasks as (title, details)): the layouts practices use.
    let layouts: [(&str, Vec<(String, String)>); 3] = [
        (
            "labelled",
            vec![(
                "Kareo API access".into(),
                format!("Hello Dock,\n\nusername: {USER}\nPASSWORD = {PASSWORD}\n\ncustomer key: {KEY}\nthanks"),
            )],
        ),
        (
            "as-the-page-says",
            vec![
                (KEY.into(), String::new()),
                (format!("{USER} / {PASSWORD}"), String::new()),
            ],
        ),
        (
            "one-per-task",
            vec![
                ("Kareo customer key".into(), KEY.into()),
                (format!("Login: {USER}"), String::new()),
                ("Kareo password".into(), format!("\n{PASSWORD}\n")),
                ("Ask about the mapping form".into(), String::new()),
            ],
        ),
    ];
    for (name, tasks) in layouts {
        let w = World::start(
            name,
            SimConfig {
                enforce_throttle: false,
                ..SimConfig::default()
            },
        )
        .await;
        // Dock keeps what an edit replaces in its event history.
        w.dock.set_reality(Reality {
            audit_keeps_edits: true,
            ..Reality::default()
        });
        for (title, details) in &tasks {
            w.dock.add_practice_task("Kareo", title, details);
        }
        let state = w.dir.join("state");
        // A breaker opened on the old password is closed by the new credentials.
        LocalStore::in_dir(&state)
            .unwrap()
            .open_breaker(
                "kareo/acme",
                &Breaker {
                    fingerprint: "old".into(),
                    opened_at: chrono::Utc::now(),
                    by: "acme/patients".into(),
                    reason: "GetPatients Authenticated=false".into(),
                },
            )
            .await
            .unwrap();

        let o = w.onboard(&["--state", p(&state)]).await;
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        assert_no_value(&o);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("secret 'kareo/acme'") && out.contains("created"),
            "{out}"
        );
        assert!(
            out.contains("kareo breaker") && out.contains("closed"),
            "{out}"
        );
        assert!(out.contains("kareo read patients") && out.contains("kareo read providers"));
        assert!(
            out.contains("WARN") && out.contains("event history"),
            "{name}: the history that keeps the old text is named:\n{out}"
        );
        // Stored as the product reads it.
        assert_eq!(
            w.secrets()["kareo/acme"],
            json!({"customer_key": KEY, "user": USER, "password": PASSWORD}),
            "{name}"
        );
        assert!(
            LocalStore::in_dir(&state)
                .unwrap()
                .breaker("kareo/acme")
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        // Scrubbed: every task that held a value is complete and holds none; the other task
        // is untouched.
        let held = tasks.len() - usize::from(name == "one-per-task");
        let listed = w.kareo_tasks();
        let scrubbed = listed
            .iter()
            .filter(|(title, _, status)| {
                title.starts_with("Kareo credentials received") && status.contains("Complete")
            })
            .count();
        assert_eq!(scrubbed, held, "{name}: {listed:?}");
        for (title, details, _) in &listed {
            for v in [KEY, USER, PASSWORD] {
                assert!(
                    !title.contains(v) && !details.contains(v),
                    "{name}: not scrubbed"
                );
            }
        }
        // The stored secret works: a sync of the tenant reads Kareo with it.
        let mut c = bin();
        c.env("KAREO_ENDPOINT", w.sim.url())
            .env_remove("KAREO_DOCK_SECRETS")
            .args(["sync", "--once", "--no-tasks", "--family", "providers"])
            .args(["--config", &w.path("acme.yaml")])
            .args(["--secrets", &w.path("secrets.json")])
            .args(["--state", p(&state)]);
        let s = run(c).await;
        assert_eq!(s.status.code(), Some(0), "{name}: {}", text(&s));
        // Nothing left to read: a second onboard finds no open credentials task.
        let again = w.onboard(&[]).await;
        assert_eq!(again.status.code(), Some(4), "{}", text(&again));
        assert!(String::from_utf8_lossy(&again.stdout).contains("no customer key"));
    }
}

#[tokio::test]
async fn a_refused_password_is_one_sign_in_and_a_message_and_changes_nothing() {
    let w = World::start(
        "refused",
        SimConfig {
            enforce_throttle: false,
            lockout_after: Some(2),
            ..SimConfig::default()
        },
    )
    .await;
    let task = w.dock.add_practice_task(
        "Kareo",
        "Kareo API user",
        &format!("Customer key: {KEY}\nUsername: {USER}\nPassword: not-the-password"),
    );
    let before = w.secrets();
    let o = w.onboard(&[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_no_value(&o);
    assert!(!text(&o).contains("not-the-password"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("refused the user name or password") && out.contains("does not retry"),
        "{out}"
    );
    assert_eq!(w.sim.calls().len(), 1, "exactly one sign-in attempt");
    assert_eq!(w.secrets(), before, "nothing stored");
    assert!(
        w.dock.calls_to("PATCH", "/api/v1/task/*").is_empty(),
        "nothing scrubbed"
    );
    assert!(w
        .dock
        .tasks()
        .iter()
        .any(|t| t.id == task && t.details.as_deref().unwrap_or("").contains(USER)));

    // A second failure locks the user (Tebra's rule); the next run says so, once more one call.
    let _ = w.onboard(&[]).await;
    assert!(w.sim.locked());
    w.sim.reset_calls();
    let o = w.onboard(&[]).await;
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("locked"),
        "{}",
        text(&o)
    );
    assert_eq!(w.sim.calls().len(), 1);

    // The administrator unlocks the user and the practice pastes the right password in a new
    // task (the old one completed by hand): a dry run validates and changes nothing.
    w.sim.unlock();
    let c = dock::DockClient::new(dock::DockConfig {
        api_url: w.dock.api_url(),
        auth_url: w.dock.auth_url(),
        ..dock::DockConfig::default()
    })
    .unwrap();
    c.patch_task(
        &w.dock.secret(),
        &task,
        &dock::TaskPatch {
            status: Some(dock::TaskStatus::Complete),
            ..dock::TaskPatch::default()
        },
    )
    .await
    .unwrap();
    w.dock.add_practice_task(
        "Kareo",
        "Kareo API user (new password)",
        &format!("Customer key: {KEY}\nUsername: {USER}\nPassword: {PASSWORD}"),
    );
    w.dock.reset_calls();
    let o = w.onboard(&["--dry-run"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_no_value(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("dry run"));
    assert_eq!(w.secrets(), before, "a dry run stores nothing");
    assert!(w.dock.calls_to("PATCH", "/api/v1/task/*").is_empty());
}

#[tokio::test]
async fn a_user_without_the_role_is_told_which_interface_it_may_not_read() {
    let w = World::start(
        "denied",
        SimConfig {
            enforce_throttle: false,
            denied: vec!["GetPatients".into()],
            ..SimConfig::default()
        },
    )
    .await;
    w.dock.add_practice_task(
        "Kareo",
        &format!("key: {KEY} user: {USER} password: {PASSWORD}"),
        "",
    );
    let before = w.secrets();
    let o = w.onboard(&[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_no_value(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("kareo read patients"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("FAIL")
            && line.contains("GetPatients")
            && line.contains("System Administrator"),
        "{line}"
    );
    assert!(out
        .lines()
        .any(|l| l.contains("kareo read providers") && l.contains("ok")));
    assert_eq!(w.secrets(), before, "nothing stored");
    assert!(w.dock.calls_to("PATCH", "/api/v1/task/*").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_into_secrets_manager_creates_the_secret_then_adds_versions() {
    if !testkit::moto("the Secrets Manager onboard test") {
        return;
    }
    let w = World::start(
        "secrets-manager",
        SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        },
    )
    .await;
    let sdk = aws::sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let (kareo_name, dock_name) = (testkit::unique("kareo/acme"), testkit::unique("dock/acme"));
    sm.create_secret()
        .name(&dock_name)
        .secret_string(serde_json::to_string(&w.dock.secret()).unwrap())
        .send()
        .await
        .unwrap();
    let yaml = std::fs::read_to_string(w.dir.join("acme.yaml"))
        .unwrap()
        .replace("secret: kareo/acme", &format!("secret: {kareo_name}"))
        .replace("secret: dock/acme", &format!("secret: {dock_name}"));
    std::fs::write(w.dir.join("acme.yaml"), yaml).unwrap();
    let onboard = || {
        let mut c = bin();
        c.env("KAREO_ENDPOINT", w.sim.url())
            .env("DOCK_API_URL", w.dock.api_url())
            .env("DOCK_AUTH_URL", w.dock.auth_url())
            .env_remove("KAREO_DOCK_SECRETS")
            .args(["onboard", "--config", &w.path("acme.yaml")]);
        run(c)
    };
    let creds = json!({"customer_key": KEY, "user": USER, "password": PASSWORD});
    for (round, said) in [(1, "created"), (2, "stored (a new version)")] {
        w.dock.add_practice_task(
            "Kareo",
            &format!("Kareo access, round {round}"),
            &format!("Customer key: {KEY}\nUser: {USER}\nPassword: {PASSWORD}"),
        );
        let o = onboard().await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_no_value(&o);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(said),
            "{}",
            text(&o)
        );
        let stored = sm
            .get_secret_value()
            .secret_id(&kareo_name)
            .send()
            .await
            .unwrap();
        let value: Value = serde_json::from_str(stored.secret_string().unwrap()).unwrap();
        assert_eq!(value, creds);
    }
    let versions = sm
        .list_secret_version_ids()
        .secret_id(&kareo_name)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2, "a new version each time");
    for name in [&kareo_name, &dock_name] {
        let _ = sm
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await;
    }
}
