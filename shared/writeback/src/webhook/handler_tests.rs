//! The endpoint through its ports — a scripted Dock and a scripted Kareo, the ledger and links
//! in memory — without a simulator (the end-to-end tests run it against both simulators).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dock::{DockError, DockSecret, Patient, Task, TaskList};
use dock_sim::WebhookDelivery;
use domain::http::HttpRequest;
use domain::local::{LocalSecrets, LocalStore};
use domain::ports::{Clock, HookStore, TenantStore};
use domain::TenantConfig;
use futures_util::future::BoxFuture;
use kareo::{Credentials, KareoError, Record};
use serde_json::{json, Value};

use super::{Directory, DockReads, Hooks, Token};
use crate::write::{KareoCall, Writer};

const ORG: &str = "11111111-1111-4111-8111-111111111111";
const SECRET: &str = "hook-secret";

/// Dock as the handler reads it: one task with a patient in "Front Desk". Counts calls.
#[derive(Default)]
struct FakeDock {
    calls: AtomicUsize,
    /// Dock's event log, as `events` answers it (filtered by type only).
    log: Mutex<Vec<Value>>,
}

impl DockReads for FakeDock {
    fn task<'a>(
        &'a self,
        _: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Task, DockError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if id != "task-1" {
            return Box::pin(async move {
                Err(DockError::NotFound {
                    op: "get_task",
                    body: Box::default(),
                })
            });
        }
        let task = json!({"id": id, "description": "Intake", "taskList": {"id": "list-1"},
                          "patient": {"id": "pat-1"}});
        Box::pin(async move { Ok(serde_json::from_value(task).unwrap()) })
    }
    fn patient<'a>(
        &'a self,
        _: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Patient, DockError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let p = json!({"id": id, "firstName": "Ada", "lastName": "Lovelace", "dob": "1985-12-10"});
        Box::pin(async move { Ok(serde_json::from_value(p).unwrap()) })
    }
    fn task_lists<'a>(
        &'a self,
        _: &'a DockSecret,
    ) -> BoxFuture<'a, Result<Vec<TaskList>, DockError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let lists = json!([{"id": "list-1", "listName": "Front Desk"}, {"id": "list-2", "listName": "Billing"}]);
        Box::pin(async move { Ok(serde_json::from_value(lists).unwrap()) })
    }
    fn events<'a>(
        &'a self,
        _: &'a DockSecret,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Value>, DockError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let hit = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["eventType"] == event_type)
            .cloned()
            .collect();
        Box::pin(async move { Ok(hit) })
    }
}

/// Kareo that answers every CreatePatient with patient 42, and records what was called.
#[derive(Default)]
struct FakeKareo {
    calls: Mutex<Vec<&'static str>>,
}

impl KareoCall for FakeKareo {
    fn call<'a>(
        &'a self,
        _: &'a Credentials,
        op: &'static str,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Record>, KareoError>> {
        self.calls.lock().unwrap().push(op);
        assert_eq!(op, "CreatePatient", "only the rule's command is sent");
        let mut r = Record::new(kareo::op(op).unwrap().response);
        assert!(r.set("PatientID", "42"));
        Box::pin(async move { Ok(vec![r]) })
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

struct Fixed(DateTime<Utc>);
impl Clock for Fixed {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

const TENANT: &str = "tenant: acme
timezone: America/New_York
start: 2026-09-01T00:00:00Z
kareo: { secret: kareo/acme, practice: Acme, practice_id: 1 }
dock: { secret: dock/acme }
families: { patients: {} }
webhooks:
  rules:
    - name: intake
      event: MARK_COMPLETE
      list: Front Desk
      op: CreatePatient
      data:
        first_name: \"{patient.firstName}\"
        last_name: \"{patient.lastName}\"
        date_of_birth: \"{patient.dob}\"
";

struct World {
    dock: FakeDock,
    kareo: FakeKareo,
    store: LocalStore,
    secrets: LocalSecrets,
    clock: Fixed,
    token: Token,
}

impl World {
    async fn new() -> World {
        let now: DateTime<Utc> = "2026-10-01T15:00:00Z".parse().unwrap();
        let store = LocalStore::memory();
        store
            .put(&TenantConfig::from_yaml(TENANT, "acme.yaml").unwrap())
            .await
            .unwrap();
        let token = Token::generate();
        store
            .put_hook("acme", &token.registration(now, None, None))
            .await
            .unwrap();
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "kareo/acme".to_string(),
            json!({"customer_key": "k", "user": "u", "password": "p"}),
        );
        secrets.insert(
            "dock/acme".to_string(),
            json!({"client_id": "c", "client_secret": "s", "api_key": "a",
                   "organization_id": ORG, "user_id": "integration", "webhook_secret": SECRET}),
        );
        World {
            dock: FakeDock::default(),
            kareo: FakeKareo::default(),
            store,
            secrets: LocalSecrets::from_map(secrets),
            clock: Fixed(now),
            token,
        }
    }

    fn delivery(&self, event: &str, signed_with: &str) -> WebhookDelivery {
        let at = self.clock.0;
        let e = json!({"eventIdentifier": event, "organizationIdentifier": ORG,
            "userIdentifier": "frontdesk", "targetIdentifier": "task-1", "targetType": "TASK",
            "eventType": "MARK_COMPLETE", "createdAt": at.to_rfc3339()});
        WebhookDelivery::of(signed_with, &e, at)
    }

    /// A delivery whose top-level `targetIdentifier` is not the task (Dock's sample event shows
    /// it differing from `audit.targetIdentifier`).
    fn delivery_with_targets(&self, event: &str, top: &str, audit: &str) -> WebhookDelivery {
        let at = self.clock.0;
        let e = json!({"eventIdentifier": event, "organizationIdentifier": ORG,
            "userIdentifier": "frontdesk", "targetIdentifier": top, "targetType": "TASK",
            "eventType": "MARK_COMPLETE", "createdAt": at.to_rfc3339(),
            "audit": {"targetIdentifier": audit, "targetType": "TASK", "eventType": "MARK_COMPLETE"}});
        WebhookDelivery::of(SECRET, &e, at)
    }

    fn event(&self, id: &str, org: &str, by: &str) -> Value {
        json!({"eventIdentifier": id, "organizationIdentifier": org,
            "userIdentifier": by, "targetIdentifier": "task-1", "targetType": "TASK",
            "eventType": "MARK_COMPLETE", "createdAt": self.clock.0.to_rfc3339()})
    }

    async fn catch_up(&self) -> super::CatchUp {
        let directory = Directory::load(&self.store).await.unwrap();
        let writer = Writer::new(&self.kareo, &self.store, &self.clock, "hook".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &self.dock,
            secrets: &self.secrets,
            directory: &directory,
            store: &self.store,
        };
        let tenant = directory.registered().next().unwrap();
        let now = self.clock.0;
        hooks
            .catch_up(tenant, now - chrono::Duration::hours(24), now)
            .await
            .unwrap()
    }

    async fn post(&self, d: &WebhookDelivery) -> (u16, Value) {
        let directory = Directory::load(&self.store).await.unwrap();
        let writer = Writer::new(&self.kareo, &self.store, &self.clock, "hook".into());
        let hooks = Hooks {
            writer: &writer,
            dock: &self.dock,
            secrets: &self.secrets,
            directory: &directory,
            store: &self.store,
        };
        let mut headers = BTreeMap::new();
        headers.insert("x-dock-signature-256".to_string(), d.signature.clone());
        headers.insert("content-type".to_string(), "application/json".to_string());
        let req = HttpRequest {
            method: "POST".into(),
            path: format!("/acme/{}", self.token.expose()),
            query: BTreeMap::new(),
            headers,
            body: d.body.clone().into_bytes(),
            caller: None,
        };
        let r = hooks.handle(&req).await;
        (r.status, r.body)
    }
}

#[tokio::test]
async fn a_signed_event_runs_its_rule_once_through_the_ports() {
    let w = World::new().await;
    let d = w.delivery("ev-1", SECRET);
    let (status, body) = w.post(&d).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "done", "{body}");
    assert_eq!(
        body["results"][0]["kareo"],
        json!({"PatientID": 42}),
        "{body}"
    );
    assert_eq!(*w.kareo.calls.lock().unwrap(), ["CreatePatient"]);
    // Dock delivers it again: answered from the dedupe, nothing read or sent.
    let dock_calls = w.dock.calls.load(Ordering::Relaxed);
    let (status, body) = w.post(&d).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "duplicate", "{body}");
    assert_eq!(w.kareo.calls.lock().unwrap().len(), 1);
    assert_eq!(w.dock.calls.load(Ordering::Relaxed), dock_calls);
}

#[tokio::test]
async fn a_forged_signature_reaches_neither_dock_nor_kareo() {
    let w = World::new().await;
    let (status, body) = w.post(&w.delivery("ev-2", "not-the-secret")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(w.dock.calls.load(Ordering::Relaxed), 0);
    assert!(w.kareo.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_task_named_only_by_the_audit_block_is_found_there() {
    let w = World::new().await;
    let (status, body) = w
        .post(&w.delivery_with_targets("ev-3", "bundle-9", "task-1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "done", "{body}");
    assert_eq!(*w.kareo.calls.lock().unwrap(), ["CreatePatient"]);
    // Neither id a task: a failure naming the read, and nothing sent.
    let w = World::new().await;
    let (_, body) = w
        .post(&w.delivery_with_targets("ev-4", "bundle-9", "bundle-8"))
        .await;
    assert_ne!(body["results"][0]["status"], "done", "{body}");
    assert!(w.kareo.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_dropped_delivery_is_read_back_from_the_event_log_once() {
    let w = World::new().await;
    *w.dock.log.lock().unwrap() = vec![
        w.event("ev-5", ORG, "frontdesk"),
        w.event("ev-6", ORG, "integration"),
        w.event("ev-7", "22222222-2222-4222-8222-222222222222", "frontdesk"),
    ];
    let r = w.catch_up().await;
    assert_eq!(
        (r.fetched, r.processed, r.ignored, r.refused),
        (3, 1, 1, 1),
        "{r:?}"
    );
    assert_eq!(*w.kareo.calls.lock().unwrap(), ["CreatePatient"]);
    // Read back again: both known events are duplicates, nothing sent.
    let r = w.catch_up().await;
    assert_eq!((r.processed, r.duplicates), (0, 2), "{r:?}");
    // Dock delivers it late after all: a duplicate too.
    let (status, body) = w.post(&w.delivery("ev-5", SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "duplicate", "{body}");
    assert_eq!(w.kareo.calls.lock().unwrap().len(), 1);
}
