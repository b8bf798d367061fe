//! Webhook deliveries exactly as Dock sends them (`dock-api.md` §5): a JSON event
//! `{eventIdentifier, organizationIdentifier, userIdentifier, targetIdentifier, targetType,
//! eventType, createdAt, audit}` POSTed with `X-Dock-Signature-256: t=<unix seconds>,v1=<hex
//! HMAC-SHA256(key = the webhook's secret, message = the body)>` (the timestamp is not part of
//! the signed string), and the endpoint verification challenge (`GET <url>?message=<random>`,
//! answered with `{"digest": hex HMAC-SHA256(secret, message)}`).

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::DockSim;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Dock-Signature-256";

/// One delivery: the body as sent and its signature header value. `Debug` shows the event id
/// only.
#[derive(Clone)]
pub struct WebhookDelivery {
    /// `eventIdentifier`.
    pub event_id: String,
    /// The raw JSON body (compact, as `JSON.stringify` writes it).
    pub body: String,
    /// The `X-Dock-Signature-256` value.
    pub signature: String,
}

impl std::fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

fn hmac_hex(secret: &str, msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(msg);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The header value Dock sends for `body` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hmac_hex(secret, body))
}

/// The digest Dock expects in answer to its verification challenge.
pub fn challenge_digest(secret: &str, message: &str) -> String {
    hmac_hex(secret, message.as_bytes())
}

impl DockSim {
    /// The event Dock would send for `event_type` (e.g. `MARK_COMPLETE`) on a task, caused by
    /// user `user_id`, at `at`: the task's current values in `audit.currentValues`. The event
    /// is kept in Dock's event log (`GET /api/v1/event`) whether or not it is ever delivered,
    /// so a test that does not post it plays a dropped delivery. Panics if there is no such
    /// task (a test bug).
    pub fn webhook_event(
        &self,
        event_type: &str,
        task_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Value {
        let mut st = self.inner.lock();
        st.webhook_events += 1;
        let n = st.webhook_events;
        let task = st
            .tasks
            .iter()
            .find(|t| t["id"] == json!(task_id))
            .cloned()
            .unwrap_or_else(|| panic!("no task {task_id}"));
        // Dock's sample event names something else at the top than in its audit block.
        let top = if st.reality.target_differs {
            format!("7a7a7a7a-0000-4000-8000-{n:012x}")
        } else {
            task_id.to_string()
        };
        let event = json!({
            "eventIdentifier": format!("e0e0e0e0-0000-4000-8000-{n:012x}"),
            "organizationIdentifier": st.seed.organization_id,
            "userIdentifier": user_id,
            "targetIdentifier": top,
            "targetType": "TASK",
            "eventType": event_type,
            "createdAt": at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "audit": {
                "targetIdentifier": task_id,
                "targetType": "TASK",
                "eventType": event_type,
                "currentState": format!("Task {task_id}: {event_type}"),
                "previousState": "",
                "currentValues": {
                    "status": task.get("status").cloned().unwrap_or(Value::Null),
                    "taskListIdentifier": task.pointer("/taskList/id").cloned().unwrap_or(Value::Null),
                },
                "previousValues": {},
            }
        });
        st.events.push(event.clone());
        event
    }

    /// A signed delivery of [`Self::webhook_event`] for a webhook whose secret is `secret`,
    /// signed at `at`.
    pub fn webhook_delivery(
        &self,
        secret: &str,
        event_type: &str,
        task_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> WebhookDelivery {
        let event = self.webhook_event(event_type, task_id, user_id, at);
        WebhookDelivery::of(secret, &event, at)
    }
}

impl WebhookDelivery {
    /// Signs an event (any JSON) at `at`, as Dock would deliver it.
    pub fn of(secret: &str, event: &Value, at: DateTime<Utc>) -> WebhookDelivery {
        let body = event.to_string();
        WebhookDelivery {
            event_id: event["eventIdentifier"].as_str().unwrap_or("").to_string(),
            signature: sign(secret, at.timestamp(), body.as_bytes()),
            body,
        }
    }
}

/// A registered webhook, as the simulator keeps it.
#[derive(Clone)]
pub struct Hook {
    /// Id.
    pub id: String,
    /// Endpoint.
    pub url: String,
    /// Signing secret.
    pub secret: String,
    /// Deliveries are sent.
    pub enabled: bool,
    /// The endpoint answered the last challenge.
    pub verified: bool,
    /// Subscribed event types.
    pub events: Vec<String>,
}

impl Hook {
    /// As Dock answers it: no secret.
    pub(crate) fn json(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "enabled": self.enabled,
            "verified": self.verified,
            "events": self.events.iter().map(|e| json!({"type": e, "description": e})).collect::<Vec<_>>(),
        })
    }
}

/// Sends Dock's verification challenge, as Dock does after a create or update: `GET
/// <url>?message=<random>`, and the hook is verified when the answer is 200 with `{"digest":
/// hex HMAC-SHA256(secret, message)}`.
pub(crate) async fn verify_endpoint(
    sim: DockSim,
    id: String,
    url: String,
    secret: String,
    message: String,
) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{sep}message={message}");
    let ok = match https::client()
        .get(&target)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().as_u16() == 200 => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v.get("digest").and_then(Value::as_str).map(str::to_string))
            .is_some_and(|d| d == challenge_digest(&secret, &message)),
        _ => false,
    };
    let mut st = sim.inner.lock();
    if let Some(h) = st
        .webhooks
        .iter_mut()
        .find(|h| h.id == id && h.secret == secret)
    {
        h.verified = ok;
    }
}

impl DockSim {
    /// The registered webhooks (with their secrets), for assertions.
    pub fn webhooks(&self) -> Vec<Hook> {
        self.inner.lock().webhooks.clone()
    }
}
