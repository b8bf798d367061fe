//! Dock webhooks → Kareo write commands: the endpoint. The rules it applies are the tenant's
//! `webhooks:` section ([`domain::hooks`]). What it checks, in order, before a request costs
//! anything — body size, the URL token ([`gate`]), the armed challenge, the signature and its
//! freshness, the organisation, the dedupe (kept [`DEDUPE_TTL_DAYS`] days) — is documented
//! once, in `docs/write-back.md` ("The endpoint, and what it checks first"), which is this
//! crate's documentation. Each matching rule becomes a command `dock-<eventIdentifier>-<rule>`,
//! run at once; a command that must be retried gives the event's claim back and answers 503.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dock::{DockError, DockSecret};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::write::command::Data;
use crate::write::{Command, WriteResult, WriteStatus, Writer};
use domain::hooks::{modifies_existing, Part, Template};
use domain::http::{HttpRequest, HttpResponse};
use domain::op::valid_id;
use domain::ports::*;
use domain::tenant::TenantConfig;
use domain::Family;

pub mod port;
pub use port::DockReads;

pub mod gate;
#[cfg(test)]
mod handler_tests;
pub use gate::{Directory, DirectoryCache, Token};

/// The webhook signing secret: the `webhook_secret` field of the tenant's Dock secret, and
/// while a rotation is under way the one before it (`previous_webhook_secret`), which is
/// accepted for deliveries but never used to answer a challenge. `Debug` is redacted.
#[derive(Clone, Deserialize)]
pub struct WebhookSecret {
    /// The secret given to Dock when the webhook was created or last updated.
    pub webhook_secret: String,
    /// The secret before the last rotation (deliveries Dock signed before it switched).
    #[serde(default)]
    pub previous_webhook_secret: Option<String>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    fn for_deliveries(&self) -> Vec<&str> {
        std::iter::once(self.webhook_secret.as_str())
            .chain(self.previous_webhook_secret.as_deref())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The answer to Dock's verification challenge: lowercase hex HMAC-SHA256(secret, message).
pub fn challenge_digest(secret: &str, message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No signature header, or not `t=…,v1=…`.
    #[error("missing or malformed X-Dock-Signature-256")]
    NoSignature,
    /// No `v1` signature matches the body.
    #[error("signature does not match")]
    Forged,
    /// The timestamp (the header's `t`, or the signed `createdAt`) is too far from now.
    #[error("stale timestamp")]
    Stale,
}

/// Verifies `X-Dock-Signature-256` over the raw body (constant-time comparison), then the
/// header's timestamp against `now` ± `max_age`. The timestamp is not signed (Dock signs the
/// body only), so it blocks no replay by itself: [`fresh`] checks the signed `createdAt`.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), Refused> {
    verify_any(&[secret], header, body, now, max_age)
}

/// [`verify`] against any of several secrets (the current one and the one before a rotation).
pub fn verify_any(
    secrets: &[&str],
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), Refused> {
    let header = header.ok_or(Refused::NoSignature)?;
    let mut t: Option<i64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.trim().parse().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v.trim()).map_err(|_| Refused::NoSignature)?),
            _ => {}
        }
    }
    let t = t.ok_or(Refused::NoSignature)?;
    if sigs.is_empty() {
        return Err(Refused::NoSignature);
    }
    let ok = secrets.iter().any(|secret| {
        sigs.iter().any(|sig| {
            let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(body);
            mac.verify_slice(sig).is_ok()
        })
    });
    if !ok {
        return Err(Refused::Forged);
    }
    if now.timestamp().abs_diff(t) > max_age.as_secs() {
        return Err(Refused::Stale);
    }
    Ok(())
}

/// Is the event's signed `createdAt` (ISO-8601) within `max_age` of `now`? A missing or
/// unreadable one is not.
pub fn fresh(
    created_at: Option<&str>,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Result<(), Refused> {
    let at = created_at
        .and_then(|c| DateTime::parse_from_rfc3339(c.trim()).ok())
        .ok_or(Refused::Stale)?;
    let age = (now - at.with_timezone(&Utc)).num_seconds().unsigned_abs();
    if age > max_age.as_secs() {
        return Err(Refused::Stale);
    }
    Ok(())
}

/// How long a verified event's id is remembered (dedupe): far longer than any `max_age`, so a
/// replay is refused as a duplicate while it is fresh and as stale after.
pub const DEDUPE_TTL_DAYS: i64 = 7;

fn reply(status: u16, body: Value) -> HttpResponse {
    HttpResponse { status, body }
}

/// The one answer to every request that fails the gate's path check: nothing in it tells an
/// unknown tenant from a wrong token.
fn not_found() -> HttpResponse {
    reply(404, json!({"outcome": "not_found"}))
}

/// What one catch-up did with the events it read back from Dock's event log.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatchUp {
    /// Events read (of the types the rules name, once each).
    pub fetched: usize,
    /// Run through their rules now (deliveries Dock had not made).
    pub processed: usize,
    /// Already handled (delivered, or read back before).
    pub duplicates: usize,
    /// Caused by the integration's own user, or matched by no rule.
    pub ignored: usize,
    /// To be read again (a command to retry, or another instance holding the event).
    pub retry: usize,
    /// Not this organisation's, malformed, or of a type no rule names.
    pub refused: usize,
}

impl CatchUp {
    /// One log line with the counts.
    pub fn emit(&self, tenant: &str) {
        tracing::info!(
            tenant,
            fetched = self.fetched,
            processed = self.processed,
            duplicates = self.duplicates,
            ignored = self.ignored,
            retry = self.retry,
            refused = self.refused,
            "webhook catch-up"
        );
    }
}

/// A Dock event, as far as it is read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    event_identifier: String,
    organization_identifier: String,
    #[serde(default)]
    user_identifier: Option<String>,
    target_identifier: String,
    target_type: String,
    event_type: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    audit: Option<Audit>,
}

/// The event's `audit` block, as far as it is read: Dock's sample shows its
/// `targetIdentifier` differing from the top-level one (`dock-api.md` §5), so it is the second
/// place a task is looked for.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Audit {
    #[serde(default)]
    target_identifier: Option<String>,
}

/// What a delivery needs.
pub struct Hooks<'a, L, T, S, St> {
    /// Runs the commands (and holds the ledger and clock).
    pub writer: &'a Writer<'a, L, T>,
    /// Dock (reads the task, its list and patient).
    pub dock: &'a dyn DockReads,
    /// Secrets (Dock with `webhook_secret`, Kareo).
    pub secrets: &'a S,
    /// Tenant configs and webhook registrations, as the function holds them.
    pub directory: &'a Directory,
    /// Registrations read through (the challenge's armed state) and the links the product
    /// recorded (which Kareo record a Dock task or patient stands for).
    pub store: &'a St,
}

/// Filled from Dock and the links for one event.
#[derive(Default)]
struct Context {
    task: Option<dock::Task>,
    patient: Option<dock::Patient>,
    /// The Kareo record the task was created for (a link the product recorded).
    task_link: Option<Link>,
    /// The Kareo patient the Dock patient stands for (a link the product recorded).
    patient_link: Option<Link>,
}

impl Context {
    /// The Kareo patient, from the links only. Two links that disagree give none.
    fn kareo_patient(&self) -> Result<Option<String>, String> {
        let from_patient = self
            .patient_link
            .as_ref()
            .and_then(|l| l.kareo_patient.clone());
        let from_task = self
            .task_link
            .as_ref()
            .and_then(|l| l.kareo_patient.clone());
        match (from_patient, from_task) {
            (Some(a), Some(b)) if a != b => Err(
                "the task's Dock patient and the task's Kareo record link to different Kareo patients"
                    .into(),
            ),
            (a, b) => Ok(a.or(b)),
        }
    }

    fn link_value(&self, key: &str) -> Option<String> {
        match key {
            "patient_id" => self.kareo_patient().ok().flatten(),
            "appointment_id" => self
                .task_link
                .as_ref()
                .filter(|l| l.family == Some(Family::Appointments))
                .and_then(|l| l.record.clone()),
            "encounter_id" => self
                .task_link
                .as_ref()
                .filter(|l| l.family == Some(Family::Encounters))
                .and_then(|l| l.record.clone()),
            "record_id" => self.task_link.as_ref().and_then(|l| l.record.clone()),
            _ => None,
        }
    }
}

enum Fail {
    Transient(String),
    Permanent(String),
}

fn dock_fail(what: &str, e: &DockError) -> Fail {
    if e.is_retryable() {
        Fail::Transient(format!("{what}: dock {}", e.class()))
    } else {
        Fail::Permanent(format!("{what}: dock {}", e.class()))
    }
}

fn store_fail(what: &str, e: &StoreError) -> Fail {
    Fail::Transient(format!("{what}: {}", e.class()))
}

/// Names compared as people write them: case, surrounding and repeated blanks aside.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    !a.trim().is_empty() && norm(a) == norm(b)
}

/// The date part of a Dock or Kareo date (`1991-11-02`, `1991-11-02T00:00:00`).
fn date_part(s: &str) -> Option<chrono::NaiveDate> {
    s.get(..10)
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

impl<L: Ledger, T: Clock, S: SecretSource, St: HookStore + LinkStore> Hooks<'_, L, T, S, St> {
    /// Handles one request to the webhook endpoint.
    pub async fn handle(&self, req: &HttpRequest) -> HttpResponse {
        let out = self.handle_inner(req).await;
        let outcome = out
            .body
            .get("outcome")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        tracing::info!(status = out.status, outcome = %outcome, "webhook");
        out
    }

    async fn handle_inner(&self, req: &HttpRequest) -> HttpResponse {
        // The gate: size, then the URL token — before any secret, query or HMAC.
        if req.body.len() > gate::MAX_BODY {
            return reply(413, json!({"outcome": "too_large"}));
        }
        let Some(tenant) = self.directory.admit(&req.path) else {
            return not_found();
        };
        match req.method.to_ascii_uppercase().as_str() {
            "GET" => self.challenge(tenant, req).await,
            "POST" => self.delivery(tenant, req).await,
            _ => reply(405, json!({"outcome": "malformed", "error": "GET or POST"})),
        }
    }

    async fn secrets_of(
        &self,
        tenant: &TenantConfig,
    ) -> Result<(DockSecret, WebhookSecret), HttpResponse> {
        let raw = match self.secrets.get(&tenant.dock.secret).await {
            Ok(v) => v,
            Err(SecretError::Unavailable(_)) => {
                return Err(reply(
                    503,
                    json!({"outcome": "retry", "error": "secret store unavailable"}),
                ))
            }
            Err(_) => {
                return Err(reply(
                    500,
                    json!({"outcome": "config", "error": "the Dock secret is missing"}),
                ))
            }
        };
        match (
            domain::ports::dock_credentials_from(&tenant.dock.secret, &raw.0, &tenant.dock),
            serde_json::from_str::<WebhookSecret>(&raw.0),
        ) {
            (Ok(d), Ok(w)) if !w.webhook_secret.is_empty() => Ok((d, w)),
            _ => Err(reply(
                500,
                json!({"outcome": "config", "error": "the Dock secret has no webhook_secret"}),
            )),
        }
    }

    /// Dock's verification challenge: answered only while the tenant's registration is armed,
    /// and never for a message that could be a delivery body.
    async fn challenge(&self, tenant: &TenantConfig, req: &HttpRequest) -> HttpResponse {
        let Some(message) = req.query.get("message") else {
            return reply(
                400,
                json!({"outcome": "malformed", "error": "GET needs ?message="}),
            );
        };
        if !gate::challenge_allowed(message) {
            tracing::warn!(tenant = %tenant.tenant, "webhook challenge refused: not a challenge message");
            return reply(
                400,
                json!({"outcome": "refused", "error": "not a challenge message"}),
            );
        }
        let now = self.writer.clock.now();
        match self.store.hook(&tenant.tenant).await {
            Ok(Some(h)) if gate::armed(&h, now) => {}
            Ok(_) => {
                tracing::warn!(tenant = %tenant.tenant, "webhook challenge refused: no registration in progress");
                return reply(
                    403,
                    json!({"outcome": "not_armed", "error": "no registration in progress: run `kareo-dock webhook register`"}),
                );
            }
            Err(e) => {
                return reply(
                    503,
                    json!({"outcome": "retry", "error": format!("state store {}", e.class())}),
                )
            }
        }
        let (_, hook_secret) = match self.secrets_of(tenant).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        tracing::info!(tenant = %tenant.tenant, "webhook challenge answered");
        reply(
            200,
            json!({"digest": challenge_digest(&hook_secret.webhook_secret, message)}),
        )
    }

    /// Reads back from Dock's event log (`GET /api/v1/event`, with the tenant's own
    /// credentials) the events of the types its rules name created in `[start, end)`, and
    /// runs each, oldest first, through the same dedupe and rules as a delivery: an event
    /// Dock could not push is handled late instead of never, and one already delivered is a
    /// duplicate. Freshness is not asked of them (they are proven by where they were read);
    /// the window is. `Err` when the secret or the log cannot be read (nothing is run).
    pub async fn catch_up(
        &self,
        tenant: &TenantConfig,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<CatchUp, String> {
        let (secret, _) = self.secrets_of(tenant).await.map_err(|r| {
            r.body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the Dock secret")
                .to_string()
        })?;
        let mut types: Vec<&str> = tenant
            .hooks
            .rules
            .iter()
            .flat_map(|r| r.events.iter().map(String::as_str))
            .collect();
        types.sort_unstable();
        types.dedup();
        let mut report = CatchUp::default();
        let mut seen = std::collections::HashSet::new();
        let mut events = Vec::new();
        for t in &types {
            let raw = self
                .dock
                .events(&secret, start, end, t)
                .await
                .map_err(|e| format!("event log: dock {}", e.class()))?;
            for v in raw {
                match serde_json::from_value::<Event>(v) {
                    Ok(e) if seen.insert(e.event_identifier.clone()) => events.push(e),
                    Ok(_) => {}
                    Err(_) => report.refused += 1,
                }
            }
        }
        // ISO-8601 UTC stamps of one format sort as text; unparseable ones go first.
        events.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        for e in &events {
            report.fetched += 1;
            let ours = valid_id(&e.event_identifier)
                && e.event_identifier.len() <= 64
                && e.organization_identifier == secret.organization_id
                && types.contains(&e.event_type.as_str());
            if !ours {
                report.refused += 1;
                continue;
            }
            let out = self.process(tenant, &secret, e).await;
            match out.body.get("outcome").and_then(Value::as_str) {
                Some("processed") => report.processed += 1,
                Some("duplicate") => report.duplicates += 1,
                Some("ignored") => report.ignored += 1,
                Some("retry") | Some("in_progress") => report.retry += 1,
                _ => report.refused += 1,
            }
        }
        report.emit(&tenant.tenant);
        Ok(report)
    }

    /// A delivery: the signature, the body, the organisation and the signed `createdAt`, in
    /// that order; then [`Self::process`].
    async fn delivery(&self, tenant: &TenantConfig, req: &HttpRequest) -> HttpResponse {
        let (secret, hook_secret) = match self.secrets_of(tenant).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let now = self.writer.clock.now();
        if let Err(r) = verify_any(
            &hook_secret.for_deliveries(),
            req.headers.get("x-dock-signature-256").map(String::as_str),
            &req.body,
            now,
            tenant.hooks.max_age,
        ) {
            tracing::warn!(tenant = %tenant.tenant, refused = %r, "webhook delivery refused");
            return reply(401, json!({"outcome": "refused", "error": r.to_string()}));
        }
        let Ok(event) = serde_json::from_slice::<Event>(&req.body) else {
            return reply(
                400,
                json!({"outcome": "malformed", "error": "not a Dock event"}),
            );
        };
        if !valid_id(&event.event_identifier) || event.event_identifier.len() > 64 {
            return reply(
                400,
                json!({"outcome": "malformed", "error": "eventIdentifier"}),
            );
        }
        if event.organization_identifier != secret.organization_id {
            return reply(
                403,
                json!({"outcome": "refused", "error": "another organisation"}),
            );
        }
        // The header's `t` is not signed; `createdAt` is.
        if let Err(r) = fresh(event.created_at.as_deref(), now, tenant.hooks.max_age) {
            tracing::warn!(tenant = %tenant.tenant, event = %event.event_identifier, "webhook delivery refused: createdAt not fresh");
            return reply(401, json!({"outcome": "refused", "error": r.to_string()}));
        }
        self.process(tenant, &secret, &event).await
    }

    /// A proven event (a verified delivery, or one read back from Dock's event log with the
    /// tenant's own credentials): deduped, then each matching rule's command run.
    // Long: dedupe, ignore reasons, then each rule's context, list, command and cross-check.
    async fn process(
        &self,
        tenant: &TenantConfig,
        secret: &DockSecret,
        event: &Event,
    ) -> HttpResponse {
        let now = self.writer.clock.now();
        // Every verified event is remembered, ignored ones too: a replay of an event that
        // matched nothing must not match a rule added since.
        let key = format!("webhook#{}#{}", tenant.tenant, event.event_identifier);
        let owner = &self.writer.owner;
        let until = now + chrono::Duration::from_std(self.writer.lease).unwrap_or_default();
        match self.writer.ledger.claim(&key, owner, now, until).await {
            Err(e) => {
                return reply(
                    503,
                    json!({"outcome": "retry", "error": format!("ledger {}", e.class())}),
                )
            }
            Ok(Claim::Done(_)) | Ok(Claim::NeedsReview(_)) => {
                return reply(
                    200,
                    json!({"outcome": "duplicate", "event": event.event_identifier}),
                )
            }
            Ok(Claim::Held) => {
                return reply(
                    409,
                    json!({"outcome": "in_progress", "event": event.event_identifier}),
                )
            }
            Ok(Claim::New) | Ok(Claim::Expired(_)) => {}
        }
        let by = event.user_identifier.as_deref().unwrap_or("");
        let rules: Vec<_> = tenant
            .hooks
            .rules
            .iter()
            .filter(|r| r.events.contains(&event.event_type))
            .collect();
        let ignored = if by == secret.user_id || tenant.hooks.ignore_users.iter().any(|u| u == by) {
            Some("caused by the integration's own user")
        } else if rules.is_empty() {
            Some("no rule for this event")
        } else {
            None
        };
        if let Some(reason) = ignored {
            self.remember(&key, json!({"ignored": reason})).await;
            return reply(200, json!({"outcome": "ignored", "reason": reason}));
        }
        let creds = match kareo_credentials(self.secrets, &tenant.kareo.secret).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.writer.ledger.release(&key, owner).await;
                return reply(503, json!({"outcome": "retry", "error": e.to_string()}));
            }
        };
        let mut ctx: Option<Context> = None;
        let mut results: Vec<Value> = Vec::new();
        let mut transient = false;
        for rule in rules {
            if ctx.is_none() {
                match self.context(tenant, secret, event).await {
                    Ok(c) => ctx = Some(c),
                    Err(Fail::Transient(r)) => {
                        transient = true;
                        results.push(json!({"rule": rule.name, "status": "retry", "reason": r}));
                        break;
                    }
                    Err(Fail::Permanent(r)) => {
                        results.push(json!({"rule": rule.name, "status": "skipped", "reason": r}));
                        break;
                    }
                }
            }
            let c = ctx.as_ref().expect("context read above");
            if let Some(list) = &rule.list {
                match self.in_list(secret, c, list).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(Fail::Transient(r)) => {
                        transient = true;
                        results.push(json!({"rule": rule.name, "status": "retry", "reason": r}));
                        continue;
                    }
                    Err(Fail::Permanent(r)) => {
                        results.push(json!({"rule": rule.name, "status": "skipped", "reason": r}));
                        continue;
                    }
                }
            }
            let mut data = Map::new();
            for (k, t) in &rule.data {
                if let Some(v) = render(t, c, event, k) {
                    data.insert(k.clone(), v);
                }
            }
            let raw = json!({
                "id": format!("dock-{}-{}", event.event_identifier, rule.name),
                "tenant": tenant.tenant,
                "op": rule.op.name(),
                "data": data,
            });
            let r = match Command::from_value(&raw) {
                Ok(cmd) => match self.cross_check(tenant, &creds, &cmd, c).await {
                    Ok(None) => self.writer.execute(tenant, &creds, &cmd).await,
                    Ok(Some(reason)) => {
                        tracing::warn!(tenant = %tenant.tenant, command = %cmd.id, op = cmd.op.name(), "webhook write held for review: cross-check failed");
                        self.writer.hold(&cmd, reason).await
                    }
                    Err(reason) => {
                        transient = true;
                        results
                            .push(json!({"rule": rule.name, "status": "retry", "reason": reason}));
                        continue;
                    }
                },
                Err(problems) => WriteResult::invalid(&raw, problems),
            };
            if matches!(r.status, WriteStatus::Retry | WriteStatus::InProgress) {
                transient = true;
            }
            results.push(summary(&rule.name, &r));
        }
        if transient {
            let _ = self.writer.ledger.release(&key, owner).await;
            return reply(
                503,
                json!({"outcome": "retry", "event": event.event_identifier, "results": results}),
            );
        }
        self.remember(&key, Value::Array(results.clone())).await;
        reply(
            200,
            json!({"outcome": "processed", "event": event.event_identifier, "results": results}),
        )
    }

    /// Settles an event's dedupe item `done`, with an expiry.
    async fn remember(&self, key: &str, result: Value) {
        let at = self.writer.clock.now();
        let entry = LedgerEntry {
            result: Some(result.to_string()),
            expires: Some(at + chrono::Duration::days(DEDUPE_TTL_DAYS)),
            ..LedgerEntry::settled(LedgerState::Done, at)
        };
        if let Err(e) = self
            .writer
            .ledger
            .settle(key, &self.writer.owner, entry)
            .await
        {
            tracing::warn!(class = e.class().name(), "webhook ledger settle failed");
        }
    }

    /// Before a command that chooses an existing Kareo record (a patient to update, an
    /// appointment to delete, a patient to book or bill): the record must be the one the
    /// links name, and for a change or a delete the Kareo patient must be the Dock patient
    /// (name and date of birth). `Ok(Some(reason))`: hold for review; `Err`: retry later.
    async fn cross_check(
        &self,
        tenant: &TenantConfig,
        creds: &kareo::Credentials,
        cmd: &Command,
        c: &Context,
    ) -> Result<Option<String>, String> {
        let linked = match c.kareo_patient() {
            Ok(p) => p,
            Err(reason) => return Ok(Some(reason)),
        };
        if !modifies_existing(cmd.op) {
            return Ok(None);
        }
        let Some(kareo_patient) = linked else {
            return Ok(Some(
                "no Kareo patient is linked to this Dock task or patient".into(),
            ));
        };
        let Some(dock_patient) = c.patient.as_ref() else {
            return Ok(Some(
                "the task has no Dock patient to cross-check against".into(),
            ));
        };
        let Ok(pid) = kareo_patient.parse::<i64>() else {
            return Ok(Some("the linked Kareo patient id is not a number".into()));
        };
        if let Data::UpdateEncounterStatus { encounter_id, .. } = &cmd.data {
            match self
                .writer
                .encounter_patient(creds, tenant, *encounter_id)
                .await
            {
                Ok(Some(p)) if p == kareo_patient => {}
                Ok(Some(_)) => {
                    return Ok(Some(format!(
                    "encounter {encounter_id} belongs to another Kareo patient than the linked one"
                )))
                }
                Ok(None) => {
                    return Ok(Some(format!(
                        "encounter {encounter_id} was not found in Kareo"
                    )))
                }
                Err(e) if e.is_retryable() => return Err(format!("kareo {}", e.class())),
                Err(e) => return Ok(Some(format!("encounter read failed ({})", e.class()))),
            }
        }
        let appointment = match &cmd.data {
            Data::DeleteAppointment { appointment_id } => Some(*appointment_id),
            Data::UpdateAppointment { appointment_id, .. } => Some(*appointment_id),
            _ => None,
        };
        if let Some(appointment_id) = appointment {
            match self.writer.appointment_patient(creds, appointment_id).await {
                Ok(Some(p)) if p == kareo_patient => {}
                Ok(Some(_)) => {
                    return Ok(Some(format!(
                        "appointment {appointment_id} belongs to another Kareo patient than the linked one"
                    )))
                }
                Ok(None) => {
                    return Ok(Some(format!(
                        "appointment {appointment_id} was not found in Kareo"
                    )))
                }
                Err(e) if e.is_retryable() => return Err(format!("kareo {}", e.class())),
                Err(e) => return Ok(Some(format!("appointment read failed ({})", e.class()))),
            }
        }
        let current = match self.writer.read_patient(creds, pid).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Some(format!("Kareo patient {pid} was not found"))),
            Err(e) if e.is_retryable() => return Err(format!("kareo {}", e.class())),
            Err(e) => return Ok(Some(format!("patient read failed ({})", e.class()))),
        };
        let tz = tenant.timezone;
        let kareo_dob = current
            .get("DOB")
            .and_then(|d| kareo::dates::parse(d, tz).ok())
            .map(|t| t.with_timezone(&tz).date_naive());
        let dock_dob = dock_patient.dob.as_deref().and_then(date_part);
        let text = |k: &str| current.get(k).map(String::as_str).unwrap_or("");
        let names = same_name(
            dock_patient.first_name.as_deref().unwrap_or(""),
            text("FirstName"),
        ) && same_name(
            dock_patient.last_name.as_deref().unwrap_or(""),
            text("LastName"),
        );
        if !names || kareo_dob.is_none() || kareo_dob != dock_dob {
            return Ok(Some(format!(
                "the Dock patient's name and date of birth do not match Kareo patient {pid}"
            )));
        }
        Ok(None)
    }

    async fn context(
        &self,
        tenant: &TenantConfig,
        secret: &DockSecret,
        event: &Event,
    ) -> Result<Context, Fail> {
        let mut c = Context::default();
        let patient_id = match event.target_type.as_str() {
            "TASK" => {
                let audit = event
                    .audit
                    .as_ref()
                    .and_then(|a| a.target_identifier.as_deref())
                    .filter(|a| !a.is_empty() && *a != event.target_identifier);
                let task = match (
                    self.dock.task(secret, &event.target_identifier).await,
                    audit,
                ) {
                    // Not a task by its top-level id: the audit block's id, once.
                    (Err(dock::DockError::NotFound { .. }), Some(id)) => {
                        self.dock.task(secret, id).await
                    }
                    (r, _) => r,
                }
                .map_err(|e| dock_fail("task", &e))?;
                c.task_link = self
                    .store
                    .link(&tenant.tenant, &LinkKey::DockTask(task.id.clone()))
                    .await
                    .map_err(|e| store_fail("links", &e))?;
                let pid = task
                    .patient
                    .as_ref()
                    .map(|p| p.id.clone())
                    .filter(|s| !s.is_empty());
                c.task = Some(task);
                pid
            }
            "PATIENT" => Some(event.target_identifier.clone()),
            _ => None,
        };
        if let Some(pid) = patient_id {
            c.patient_link = self
                .store
                .link(&tenant.tenant, &LinkKey::DockPatient(pid.clone()))
                .await
                .map_err(|e| store_fail("links", &e))?;
            c.patient = Some(
                self.dock
                    .patient(secret, &pid)
                    .await
                    .map_err(|e| dock_fail("patient", &e))?,
            );
        }
        Ok(c)
    }

    async fn in_list(&self, secret: &DockSecret, c: &Context, list: &str) -> Result<bool, Fail> {
        let Some(task_list) = c.task.as_ref().and_then(|t| t.task_list.as_ref()) else {
            return Ok(false);
        };
        let lists = self
            .dock
            .task_lists(secret)
            .await
            .map_err(|e| dock_fail("lists", &e))?;
        Ok(lists
            .iter()
            .any(|l| l.list_name == list && l.id == task_list.id))
    }
}

/// A command's result as told to Dock: ids and statuses, never Kareo's text.
fn summary(rule: &str, r: &WriteResult) -> Value {
    let mut v = json!({"rule": rule, "command": r.id, "status": r.status});
    if let Some(k) = &r.kareo {
        v["kareo"] = k.clone();
    }
    if r.repeated {
        v["repeated"] = json!(true);
    }
    if r.reconciled {
        v["reconciled"] = json!(true);
    }
    if !r.errors.is_empty() {
        v["errors"] = json!(r.errors.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    }
    if let Some(reason) = &r.reason {
        v["reason"] = json!(reason);
    }
    v
}

fn lookup(c: &Context, event: &Event, src: &str, key: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let v = match src {
        "patient" => {
            let p = c.patient.as_ref()?;
            match key {
                "firstName" => p.first_name.clone(),
                "middleName" => p.middle_name.clone(),
                "lastName" => p.last_name.clone(),
                "dob" => p.dob.clone(),
                "gender" => p.gender.clone(),
                "email" => p.email.clone(),
                "phoneHome" => p.phone_home.clone(),
                "phoneMobile" => p.phone_mobile.clone(),
                "mrn" => p.mrn.clone(),
                "id" => Some(p.id.clone()),
                _ => None,
            }
        }
        "task" => {
            let t = c.task.as_ref()?;
            match key {
                "id" => Some(t.id.clone()),
                "description" => t.description.clone(),
                "details" => t.details.clone(),
                "dueDate" => t.due_date.clone(),
                "status" => t
                    .status
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| text(&v)),
                _ => None,
            }
        }
        "link" => c.link_value(key),
        "event" => match key {
            "id" => Some(event.event_identifier.clone()),
            "type" => Some(event.event_type.clone()),
            "createdAt" => event.created_at.clone(),
            _ => None,
        },
        "field" => {
            let from = |md: &[dock::MetaDataValue]| {
                md.iter()
                    .find(|m| m.custom_field_name.as_deref() == Some(key))
                    .and_then(|m| m.value.as_ref())
                    .and_then(text)
            };
            c.task
                .as_ref()
                .and_then(|t| from(&t.task_meta_data))
                .or_else(|| c.patient.as_ref().and_then(|p| from(&p.patient_meta_data)))
        }
        _ => None,
    };
    v.filter(|s| !s.trim().is_empty())
}

/// Renders a data value; `None` when a placeholder has nothing to fill.
fn render(t: &Template, c: &Context, event: &Event, key: &str) -> Option<Value> {
    match t {
        Template::Literal(v) => Some(v.clone()),
        Template::List(items) => items
            .iter()
            .map(|i| render(i, c, event, key))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Template::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if let Some(v) = render(v, c, event, k) {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        Template::Text(parts) => {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Lit(l) => s.push_str(l),
                    Part::Ref(src, k) => s.push_str(&lookup(c, event, src, k)?),
                }
            }
            let s = s.trim().to_string();
            if key == "gender" {
                if let Some(g) = crate::write::command::normalise_gender(&s) {
                    return Some(Value::String(g.into()));
                }
            }
            let is_date_key = key.ends_with("date") || key == "date_of_birth";
            if is_date_key
                && s.len() > 10
                && s.is_char_boundary(10)
                && chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok()
            {
                return Some(Value::String(s[..10].to_string()));
            }
            Some(Value::String(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_constant_time_and_reject_forgeries_and_replays() {
        let body = br#"{"eventIdentifier":"e1"}"#;
        let now = Utc::now();
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let h = format!("t={},v1={sig}", now.timestamp());
        let age = Duration::from_secs(300);
        assert_eq!(verify("s3cret", Some(&h), body, now, age), Ok(()));
        assert_eq!(
            verify("other", Some(&h), body, now, age),
            Err(Refused::Forged)
        );
        assert_eq!(
            verify("s3cret", Some(&h), br#"{"eventIdentifier":"e2"}"#, now, age),
            Err(Refused::Forged)
        );
        let old = format!("t={},v1={sig}", now.timestamp() - 301);
        assert_eq!(
            verify("s3cret", Some(&old), body, now, age),
            Err(Refused::Stale)
        );
        // Found by fuzzing: the most negative timestamp is stale, not an overflow.
        let min = format!("t={},v1={sig}", i64::MIN);
        assert_eq!(
            verify("s3cret", Some(&min), body, now, age),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify("s3cret", None, body, now, age),
            Err(Refused::NoSignature)
        );
        assert_eq!(
            verify("s3cret", Some("v1=zz"), body, now, age),
            Err(Refused::NoSignature)
        );
        // Dock's documented challenge: hex HMAC-SHA256(secret, message).
        assert_eq!(
            challenge_digest("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
