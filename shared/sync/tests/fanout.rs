//! Fan-out as Lambda runs it, with every invocation simulated in this process: a scheduled
//! invocation claims its period and coordinates; the shards it dispatches are payloads that
//! the test runs through the same `invoke`, concurrently, each with its own request id (the
//! lease owner), against the Kareo simulator and the embedded stores.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use domain::local::{LocalSecrets, RecordingSink};
use domain::ports::{EventSink, ShardDispatch, SinkError};
use domain::{ChangeEvent, TenantConfig};
use kareo::Family;
use support::{world, World};
use sync::fanout::FanOut;
use sync::run::{invoke, Invoked, Payload};
use sync::{Outcome, PollConfig, Poller};
use tokio::sync::Notify;

const TENANTS: usize = 30;
const FAN: FanOut = FanOut {
    shard_size: 8,
    max_shards: 10,
};

/// The dispatched shards' payloads, as Lambda would queue them.
#[derive(Default)]
struct Queue(Mutex<Vec<serde_json::Value>>);

impl ShardDispatch for Queue {
    async fn dispatch(&self, payload: &serde_json::Value) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(payload.clone());
        Ok(())
    }
}

impl Queue {
    fn take(&self) -> Vec<Payload> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("a shard payload reads back"))
            .collect()
    }
}

/// A sink that dies in its `after + 1`-th hand-off: it never answers (the invocation is killed
/// there, before the task function accepted the batch), and says so.
struct Dying<'a> {
    inner: &'a RecordingSink,
    after: usize,
    calls: Mutex<usize>,
    died: Arc<Notify>,
}

impl EventSink for Dying<'_> {
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let n = {
            let mut c = self.calls.lock().unwrap();
            *c += 1;
            *c
        };
        if n > self.after {
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.hand_off(batch).await
    }
}

struct Deployment {
    w: World,
    tenants: Vec<TenantConfig>,
    secrets: LocalSecrets,
    queue: Queue,
}

/// `TENANTS` tenants of the simulator's practice, each its own Kareo account.
async fn deployment() -> Deployment {
    let w = world("  appointments: {}\n").await;
    let c = w.sim.config();
    let mut secrets = BTreeMap::new();
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let id = format!("t{i:02}");
        secrets.insert(
            format!("kareo/{id}"),
            serde_json::json!({"customer_key": c.customer_key, "user": c.user, "password": c.password}),
        );
        let yaml = support::tenant_yaml(&w.sim, &id, "  appointments: {}\n", true);
        tenants.push(TenantConfig::from_yaml(&yaml, "t").unwrap());
    }
    Deployment {
        w,
        tenants,
        secrets: LocalSecrets::from_map(secrets),
        queue: Queue::default(),
    }
}

impl Deployment {
    /// One invocation with request id `owner`, handing off to `sink`, its shards queued.
    async fn invoke<E: EventSink>(&self, owner: &str, sink: &E, payload: &Payload) -> Invoked {
        self.invoke_with(owner, sink, &self.queue, payload).await
    }

    /// One invocation dispatching its shards through `dispatch`.
    async fn invoke_with<E: EventSink, D: ShardDispatch>(
        &self,
        owner: &str,
        sink: &E,
        dispatch: &D,
        payload: &Payload,
    ) -> Invoked {
        let config = PollConfig {
            owner: owner.into(),
            ..PollConfig::default()
        };
        let poller = Poller {
            kareo: &self.w.client,
            cursors: &self.w.store,
            snapshots: &self.w.store,
            sink,
            clock: &self.w.clock,
            config: &config,
        };
        invoke(
            &poller,
            &self.secrets,
            &self.w.store,
            &self.w.store,
            dispatch,
            &self.tenants,
            Family::Appointments,
            payload,
            FAN,
            4,
            None,
        )
        .await
        .expect("payload")
    }

    fn scheduled(at: DateTime<Utc>) -> Payload {
        Payload {
            scheduled: Some(at),
            ..Payload::default()
        }
    }

    /// Every shard the queue holds, run concurrently, each its own invocation.
    async fn run_shards(&self, period: &str) -> Vec<Invoked> {
        let shards = self.queue.take();
        let runs = shards.iter().enumerate().map(|(i, p)| {
            let owner = format!("{period}-shard-{i}");
            async move { self.invoke(&owner, &self.w.sink, p).await }
        });
        futures_util::future::join_all(runs).await
    }

    /// Each tenant's appointments as the simulator has them now: what must be handed off.
    fn expected(&self) -> BTreeSet<(String, String)> {
        let ids = self.w.modified(
            Family::Appointments,
            self.w.tenant.start - chrono::Duration::days(1),
            self.w.sim.now(),
        );
        self.tenants
            .iter()
            .flat_map(|t| ids.iter().map(|id| (t.tenant.clone(), id.clone())))
            .collect()
    }

    /// (tenant, record) of every event handed off, and how many were handed off twice.
    fn handed_off(&self) -> (BTreeSet<(String, String)>, usize) {
        let mut seen = BTreeSet::new();
        let mut twice = 0;
        for e in self.w.sink.events() {
            if !seen.insert((e.tenant.clone(), e.record_id.clone(), e.version)) {
                twice += 1;
            }
        }
        let pairs = seen.into_iter().map(|(t, r, _)| (t, r)).collect();
        (pairs, twice)
    }
}

fn polled(runs: &[&Invoked]) -> Vec<String> {
    let mut t: Vec<String> = runs
        .iter()
        .flat_map(|i| i.reports.iter())
        .filter(|r| r.outcome == Outcome::Done)
        .map(|r| r.tenant.clone())
        .collect();
    t.sort();
    t
}

fn all_tenants() -> Vec<String> {
    (0..TENANTS).map(|i| format!("t{i:02}")).collect()
}

#[tokio::test]
async fn a_scheduled_period_fans_out_and_polls_every_tenant_exactly_once() {
    let d = deployment().await;
    let at = d.w.sim.now();
    let coordinator = d
        .invoke("coordinator", &d.w.sink, &Deployment::scheduled(at))
        .await;
    assert_eq!(coordinator.role, "coordinator");
    assert_eq!(
        coordinator.dispatched, 3,
        "30 tenants in shards of 8: 4 shards"
    );
    assert_eq!(
        coordinator.reports.len(),
        8,
        "the coordinator polls the first"
    );
    let shards = d.run_shards("p1").await;
    assert!(shards
        .iter()
        .all(|s| s.role == "shard" && s.period == coordinator.period && s.dispatched == 0));
    let runs: Vec<&Invoked> = std::iter::once(&coordinator).chain(&shards).collect();
    assert_eq!(
        polled(&runs),
        all_tenants(),
        "each tenant once, in one shard"
    );
    let (got, twice) = d.handed_off();
    assert_eq!(got, d.expected());
    assert_eq!(twice, 0);
    assert!(d.queue.take().is_empty(), "a shard never fans out again");

    // Few tenants, or one named: no fan-out.
    let one = Payload {
        tenant: Some("t05".into()),
        ..Payload::default()
    };
    let single = d.invoke("manual", &d.w.sink, &one).await;
    assert_eq!((single.role, single.reports.len()), ("single", 1));
    assert!(d.queue.take().is_empty());
}

#[tokio::test]
async fn two_coordinators_at_once_poll_no_tenant_twice_in_a_period() {
    let d = deployment().await;
    let at = d.w.sim.now();
    let payload = Deployment::scheduled(at);
    let (a, b) = tokio::join!(
        d.invoke("delivery-1", &d.w.sink, &payload),
        d.invoke("delivery-2", &d.w.sink, &payload)
    );
    let roles: BTreeSet<&str> = [a.role, b.role].into();
    assert_eq!(roles, BTreeSet::from(["coordinator", "duplicate"]));
    let duplicate = if a.role == "duplicate" { &a } else { &b };
    assert!(duplicate.reports.is_empty() && duplicate.dispatched == 0);
    let shards = d.run_shards("p1").await;
    assert_eq!(shards.len(), 3, "one coordinator's shards only");
    let runs: Vec<&Invoked> = [&a, &b].into_iter().chain(&shards).collect();
    assert_eq!(polled(&runs), all_tenants());
    assert_eq!(d.handed_off().1, 0);

    // Lambda's retry of the invocation that holds the claim (same request id) goes on; a
    // third delivery does not; the next period is claimed afresh.
    let holder = if a.role == "coordinator" {
        "delivery-1"
    } else {
        "delivery-2"
    };
    assert_ne!(
        d.invoke(holder, &d.w.sink, &payload).await.role,
        "duplicate"
    );
    d.queue.take();
    assert_eq!(
        d.invoke("delivery-3", &d.w.sink, &payload).await.role,
        "duplicate"
    );
    let next = Deployment::scheduled(at + chrono::Duration::minutes(5));
    assert_eq!(
        d.invoke("delivery-4", &d.w.sink, &next).await.role,
        "coordinator"
    );
}

#[tokio::test]
async fn a_shard_that_dies_midway_loses_nothing_and_doubles_nothing() {
    let d = deployment().await;
    let at = d.w.sim.now();
    let coordinator = d.invoke("p1", &d.w.sink, &Deployment::scheduled(at)).await;
    assert_eq!(coordinator.dispatched, 3);
    let mut shards = d.queue.take();
    let doomed = shards.remove(1);
    let doomed_tenants: Vec<String> = doomed.shard.as_ref().unwrap().tenants.clone();
    for p in shards {
        d.queue
            .dispatch(&serde_json::to_value(p).unwrap())
            .await
            .unwrap();
    }
    // The doomed shard is killed (as Lambda kills an invocation at its timeout) in its third
    // hand-off: some of its tenants are handed off and checkpointed, some not yet.
    let died = Arc::new(Notify::new());
    let dying = Dying {
        inner: &d.w.sink,
        after: 2,
        calls: Mutex::new(0),
        died: died.clone(),
    };
    tokio::select! {
        _ = d.invoke("p1-doomed", &dying, &doomed) => panic!("the doomed shard finished"),
        _ = died.notified() => {}
    }
    d.run_shards("p1").await;
    let (got, twice) = d.handed_off();
    assert_eq!(twice, 0);
    let missing: BTreeSet<String> = d
        .expected()
        .difference(&got)
        .map(|(t, _)| t.clone())
        .collect();
    assert!(!missing.is_empty(), "the dead shard left work undone");
    assert!(missing.iter().all(|t| doomed_tenants.contains(t)));

    // The next periods: the dead invocation's leases expire (15 minutes), and its tenants are
    // polled from where their cursors stood; nothing is handed off twice, nothing is missed.
    for minutes in [5, 20] {
        d.w.sim.advance(chrono::Duration::minutes(minutes));
        let next = Deployment::scheduled(d.w.sim.now());
        let owner = format!("p-{minutes}");
        d.invoke(&owner, &d.w.sink, &next).await;
        d.run_shards(&owner).await;
    }
    let (got, twice) = d.handed_off();
    assert_eq!(twice, 0, "nothing doubled");
    assert_eq!(got, d.expected(), "nothing missed");
}

#[tokio::test]
async fn a_shard_that_cannot_be_dispatched_is_reported_for_each_of_its_tenants() {
    struct Refusing;
    impl ShardDispatch for Refusing {
        async fn dispatch(&self, _: &serde_json::Value) -> Result<(), SinkError> {
            Err(SinkError {
                class: domain::ports::ErrorClass::SinkThrottled,
                message: "invoke poll: TooManyRequestsException".into(),
            })
        }
    }
    let d = deployment().await;
    let out = d
        .invoke_with(
            "c",
            &d.w.sink,
            &Refusing,
            &Deployment::scheduled(d.w.sim.now()),
        )
        .await;
    assert_eq!(out.dispatched, 0);
    assert_eq!(out.reports.len(), TENANTS);
    let failed: Vec<_> = out
        .reports
        .iter()
        .filter(|r| r.outcome.class().map(|c| c.name()) == Some("sink_throttled"))
        .collect();
    assert_eq!(failed.len(), TENANTS - 8);
    assert!(failed.iter().all(|r| matches!(&r.outcome,
        Outcome::Failed { message, .. } if message.contains("not dispatched"))));
}
