//! The whole product in one process, as `kareo-dock sync --once` runs it: the poller over the
//! Kareo simulator, the task creation as its sink over the Dock simulator, state in a store
//! that a "restarted process" reads back from disk. Used by the crash sweep and the fault
//! matrix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dock_sim::{DockSim, Seed};
use domain::local::{LocalSecrets, LocalStore, RecordingSink};
use domain::ports::FnClock;
use domain::ports::{BreakerStore, CursorStore, Ledger, LinkStore, SecretSource, SnapshotStore};
use domain::{ChangeEvent, TenantConfig};
use embedded::Embedded;
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use serde_json::json;
use sync::{Mode, Outcome, PollConfig, Poller, Report};
use tasks::deliver::Failure;
use tasks::dock::DockTasks;

/// The families the pipeline polls.
pub const FAMILIES: [Family; 3] = [Family::Appointments, Family::Patients, Family::Payments];

/// One task rule per family (appointments link the patient).
pub const RULES: &str = r#"rules:
  - name: appointment-changed
    interface: appointments
    on: any
    task:
      list: Front Desk
      group: Callbacks
      description: "Appointment {ID}"
      patient: true
  - name: new-patient
    interface: patients
    on: any
    task:
      list: Front Desk
      group: New Patients
      description: "Patient {ID}"
  - name: payment-posted
    interface: payments
    on: any
    task:
      list: Billing
      description: "Payment {ID}"
"#;

/// A fresh state directory.
pub fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(crate::unique(&format!("kareo-dock-crash-{name}")));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A client for the simulator: quick retries, no throttle waits.
pub fn kareo_client(sim: &KareoSim) -> KareoClient {
    let c = sim.config();
    let kareo = KareoClient::new(ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total: Duration::from_secs(2),
        },
        throttle_margin: Duration::from_millis(1),
        ..ClientConfig::default()
    })
    .unwrap();
    kareo.throttle().set_live(
        &c.customer_key,
        kareo::schema::op_names().map(|o| (o.to_string(), Duration::ZERO)),
    );
    kareo
}

/// The simulators, the clients, one tenant (`acme`) and its state directory.
pub struct World {
    /// Kareo.
    pub kareo_sim: KareoSim,
    /// Dock.
    pub dock_sim: DockSim,
    /// The Kareo client.
    pub kareo: KareoClient,
    /// The Dock port.
    pub dock: DockTasks,
    /// `kareo/acme`, `dock/acme`.
    pub secrets: LocalSecrets,
    /// The tenant.
    pub tenant: TenantConfig,
    /// The simulated clock.
    pub clock: FnClock,
    /// Where the state lives.
    pub dir: PathBuf,
}

/// A new world.
pub async fn world(name: &str) -> Arc<World> {
    world_with_secrets(name, RULES, "kareo/acme", "dock/acme").await
}

/// A new world whose tenant has these rules (a `rules:` YAML block).
pub async fn world_with_rules(name: &str, rules: &str) -> Arc<World> {
    world_with_secrets(name, rules, "kareo/acme", "dock/acme").await
}

/// A new world whose tenant has these rules and names its secrets so (the local secrets hold
/// them under those names).
pub async fn world_with_secrets(
    name: &str,
    rules: &str,
    kareo_secret: &str,
    dock_secret: &str,
) -> Arc<World> {
    let kareo_sim = KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await;
    let dock_sim = DockSim::start(Seed::default()).await;
    let c = kareo_sim.config().clone();
    let dock = DockTasks::new(
        dock::DockClient::new(dock::DockConfig {
            api_url: dock_sim.api_url(),
            auth_url: dock_sim.auth_url(),
            timeout: Duration::from_secs(2),
            rate_per_sec: 0,
            ..dock::DockConfig::default()
        })
        .unwrap(),
    );
    let yaml = format!(
        "tenant: acme\ntimezone: America/New_York\nstart: {}\nkareo:\n  secret: {kareo_secret}\n  practice: \"{}\"\n  practice_id: {}\ndock:\n  secret: {dock_secret}\nsafety_lag: 1m\nfamilies:\n  appointments: {{}}\n  patients: {{}}\n  payments: {{}}\n{rules}",
        (kareo_sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name,
        c.practice_id,
    );
    let tenant = TenantConfig::from_yaml(&yaml, "acme.yaml").unwrap();
    let mut secrets = BTreeMap::new();
    secrets.insert(
        kareo_secret.to_string(),
        json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
    );
    secrets.insert(
        dock_secret.to_string(),
        serde_json::to_value(dock_sim.secret()).unwrap(),
    );
    Arc::new(World {
        kareo: kareo_client(&kareo_sim),
        clock: FnClock::new({
            let sim = kareo_sim.clone();
            move || sim.now()
        }),
        kareo_sim,
        dock_sim,
        dock,
        secrets: LocalSecrets::from_map(secrets),
        tenant,
        dir: state_dir(name),
    })
}

impl World {
    /// The simulator's credentials.
    pub fn creds(&self) -> Credentials {
        let c = self.kareo_sim.config();
        Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        }
    }

    /// The state as a newly started process reads it from disk.
    pub fn store(&self) -> LocalStore {
        LocalStore::in_dir(&self.dir).expect("the state directory")
    }

    /// One `sync --once`: every family polled, every batch delivered to Dock in-process.
    pub async fn sync(&self, owner: &str) -> Vec<Report> {
        self.sync_with(&self.store(), &self.secrets, owner).await.0
    }

    /// One `sync --once` with this store and these secrets; the reports and the dead letters.
    pub async fn sync_with<S, Sec>(
        &self,
        store: &S,
        secrets: &Sec,
        owner: &str,
    ) -> (Vec<Report>, Vec<Failure>)
    where
        S: CursorStore + SnapshotStore + Ledger + LinkStore + BreakerStore,
        Sec: SecretSource,
    {
        let tenants = std::slice::from_ref(&self.tenant);
        let pipeline = Embedded {
            kareo: &self.kareo,
            dock: &self.dock,
            store,
            secrets,
            clock: &self.clock,
            tenants,
            owner: owner.into(),
            lease: Duration::from_secs(60),
        };
        // As the functions run it: the tenant's Kareo credentials from the secrets.
        let sink = pipeline.tasks();
        let reports = pipeline.poll(&sink, &FAMILIES, Mode::Poll, 1).await;
        (reports, sink.dead_letters())
    }

    /// The changes a clean run hands off, without delivering them (its own state).
    pub async fn expected_events(&self) -> Vec<ChangeEvent> {
        let store = LocalStore::memory();
        let sink = RecordingSink::default();
        let config = PollConfig::default();
        let poller = Poller {
            kareo: &self.kareo,
            cursors: &store,
            snapshots: &store,
            sink: &sink,
            clock: &self.clock,
            config: &config,
        };
        for f in FAMILIES {
            let r = poller
                .run(&self.tenant, &self.creds(), f, Mode::DryRun, None)
                .await;
            assert!(!matches!(r.outcome, Outcome::Failed { .. }), "{r:?}");
            let r = poller
                .run(&self.tenant, &self.creds(), f, Mode::Poll, None)
                .await;
            assert_eq!(r.outcome, Outcome::Done, "{r:?}");
        }
        sink.events()
    }

    /// The ledger key of every task in Dock (from its `kareo-dock ref:` trailer).
    pub fn task_refs(&self) -> Vec<String> {
        let mut refs: Vec<String> = self
            .dock_sim
            .tasks()
            .iter()
            .map(|t| {
                let details = t.details.as_deref().unwrap_or("");
                details
                    .lines()
                    .find_map(|l| l.strip_prefix("kareo-dock ref: "))
                    .unwrap_or_else(|| panic!("task {} has no reference", t.id))
                    .to_string()
            })
            .collect();
        refs.sort();
        refs
    }
}

/// The (event, rule) keys a set of events must produce: one task each.
pub fn expected_keys(tenant: &TenantConfig, events: &[ChangeEvent]) -> Vec<(String, ChangeEvent)> {
    let mut keys: Vec<(String, ChangeEvent)> = events
        .iter()
        .flat_map(|e| {
            tenant.mapping.matching(e).map(move |r| {
                (
                    tasks::deliver::task_key(&e.tenant, &e.id, &r.name),
                    e.clone(),
                )
            })
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}
