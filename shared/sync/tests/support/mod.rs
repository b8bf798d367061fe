//! What the polling tests share: a simulator, the real client, the embedded stores, and a
//! poller over them.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::local::{LocalStore, RecordingSink};
use domain::ports::FnClock;
use domain::{ChangeKind, TenantConfig};
use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use kareo_sim::{KareoSim, SimConfig};
use sync::{Mode, PollConfig, Poller};

pub struct World {
    pub sim: KareoSim,
    pub client: KareoClient,
    pub store: LocalStore,
    pub sink: RecordingSink,
    pub clock: FnClock,
    pub config: PollConfig,
    pub tenant: TenantConfig,
}

/// A tenant of the simulator's practice starting 40 days back; `practice_id: false` names the
/// practice only (as a user may write it).
pub fn tenant_yaml(sim: &KareoSim, id: &str, families: &str, practice_id: bool) -> String {
    let c = sim.config();
    let pid = if practice_id {
        format!("\n  practice_id: {}", c.practice_id)
    } else {
        String::new()
    };
    format!(
        "tenant: {id}\ntimezone: {}\nstart: {}\nkareo:\n  secret: kareo/{id}\n  practice: \"{}\"{pid}\ndock:\n  secret: dock/{id}\nsafety_lag: 1m\nfamilies:\n{families}",
        c.timezone.name(),
        (sim.now() - chrono::Duration::days(40)).to_rfc3339(),
        c.practice_name.replace('"', "\\\""),
    )
}

pub async fn world_with(cfg: SimConfig, families: &str) -> World {
    world_of(cfg, families, true).await
}

pub async fn world_of(cfg: SimConfig, families: &str, practice_id: bool) -> World {
    let enforce = cfg.enforce_throttle;
    let sim = KareoSim::start(cfg).await;
    let client = KareoClient::new(ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_total: Duration::from_secs(3),
        },
        throttle_margin: Duration::from_millis(if enforce { 50 } else { 1 }),
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .unwrap();
    if !enforce {
        // The simulator does not throttle here: no need to space calls (keeps tests fast).
        let zero = kareo::schema::op_names().map(|o| (o.to_string(), Duration::ZERO));
        client.throttle().set_live(&sim.config().customer_key, zero);
    }
    let tenant =
        TenantConfig::from_yaml(&tenant_yaml(&sim, "acme", families, practice_id), "test").unwrap();
    World {
        client,
        store: LocalStore::memory(),
        sink: RecordingSink::default(),
        clock: FnClock::new({
            let sim = sim.clone();
            move || sim.now()
        }),
        config: PollConfig {
            owner: "test".into(),
            ..PollConfig::default()
        },
        tenant,
        sim,
    }
}

pub async fn world(families: &str) -> World {
    world_with(
        SimConfig {
            enforce_throttle: false,
            ..SimConfig::default()
        },
        families,
    )
    .await
}

impl World {
    pub fn creds(&self) -> Credentials {
        let c = self.sim.config();
        Credentials {
            customer_key: c.customer_key.clone(),
            user: c.user.clone(),
            password: c.password.clone(),
        }
    }

    pub fn poller(
        &self,
    ) -> Poller<'_, KareoClient, LocalStore, LocalStore, RecordingSink, FnClock> {
        Poller {
            kareo: &self.client,
            cursors: &self.store,
            snapshots: &self.store,
            sink: &self.sink,
            clock: &self.clock,
            config: &self.config,
        }
    }

    pub async fn run(&self, family: Family, mode: Mode) -> sync::Report {
        self.poller()
            .run(&self.tenant, &self.creds(), family, mode, None)
            .await
    }

    /// (record id, kind) of the events handed off since the last call.
    pub fn take(&self, seen: &mut usize) -> BTreeSet<(String, ChangeKind)> {
        let all = self.sink.events();
        let out = all[*seen..]
            .iter()
            .map(|e| (e.record_id.clone(), e.kind))
            .collect();
        *seen = all.len();
        out
    }

    /// Ids of the rows of a family whose version is in `[from, to]`.
    pub fn modified(
        &self,
        family: Family,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeSet<String> {
        self.sim.modified(family, from, to)
    }
}
