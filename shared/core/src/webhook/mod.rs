//! Dock webhooks → Kareo write commands.
//!
//! A tenant's `webhooks:` section (YAML, checked with file:line errors like the rest of the
//! tenant config) maps Dock events to [`crate::write`] commands:
//!
//! ```yaml
//! webhooks:
//!   max_age: 5m                     # optional: deliveries signed longer ago are refused
//!   ignore_users: []                # optional: more Dock user ids whose events are ignored
//!   rules:
//!     - name: intake-complete       # letters, digits, '-', '_' (part of the command id)
//!       event: MARK_COMPLETE        # a Dock event type, or a list of them
//!       list: Intake                # optional: only tasks in this Dock task list
//!       op: CreatePatient           # a write command operation
//!       data:                       # the command's data; "{…}" placeholders are filled in
//!         first_name: "{patient.firstName}"
//!         last_name: "{patient.lastName}"
//!         date_of_birth: "{patient.dob}"
//!         gender: "{field.Gender}"  # a custom field of the task (else of the patient), by name
//!         home_phone: "{patient.phoneHome}"
//! ```
//!
//! Placeholders: `{patient.<firstName|middleName|lastName|dob|gender|email|phoneHome|
//! phoneMobile|mrn|id>}` (the task's Dock patient, or the target of a patient event),
//! `{task.<id|description|details|dueDate|status>}`, `{field.<custom field name>}`,
//! `{event.<id|type|createdAt>}`, and `{link.<patient_id|appointment_id|record_id>}`: the
//! Kareo ids this product recorded itself when it created the Dock task (the record it was
//! made for) or created or linked the Dock patient. A value whose placeholder has nothing to
//! fill is left out (so a required field is reported missing). Gender values are read as
//! Kareo's (`FEMALE`/`F` → `Female`), and a date-time in a date field keeps its date.
//!
//! **Which Kareo record a command touches is never up to a Dock user.** `patient_id` and
//! `appointment_id` may only be `"{link.patient_id}"` / `"{link.appointment_id}"` (Dock's own
//! fields — a patient's MRN, a custom field — can be edited by anyone in the organisation).
//! UpdatePatient and DeleteAppointment rules need `modify_existing: true`, and each such
//! command is cross-checked before it is sent: the appointment must belong to the linked
//! patient, and the Kareo patient's first name, last name and date of birth must be the Dock
//! patient's. A failed check settles the command `needs_review`; nothing is written.
//!
//! The endpoint (a Function URL with auth NONE), in this order — see [`gate`]:
//! - a body over 64 KiB → 413;
//! - the path must be `/<tenant>/<token>` with the token whose SHA-256 is the tenant's
//!   registration (`kareo-dock webhook register` / `webhook url`); anything else → the same
//!   404, before any secret read, state-store query or HMAC;
//! - `GET ?message=<m>` (Dock's verification challenge) → `{"digest": hex HMAC-SHA256(
//!   webhook_secret, m)}` only while the registration is armed, and never for a message that
//!   could be a delivery body;
//! - `POST`: `X-Dock-Signature-256: t=…,v1=…` verified over the raw body with the tenant's
//!   `webhook_secret` (or `previous_webhook_secret`, during a rotation) in constant time —
//!   missing or forged → 401; a body that is not a Dock event → 400; another organisation →
//!   403; a signed `createdAt` (or header `t`) more than `max_age` from now → 401. Nothing is
//!   written for any of these.
//! - every verified event is deduplicated on `eventIdentifier` through the ledger
//!   (`webhook#<tenant>#<eventIdentifier>`, kept [`DEDUPE_TTL_DAYS`] days), ignored ones too:
//!   a repeat answers 200 `duplicate`. Events caused by the integration's own Dock user
//!   (`user_id` of the Dock secret) or by `ignore_users`, and events no rule names, are
//!   ignored (200).
//! - each matching rule becomes a command with id `dock-<eventIdentifier>-<rule>` (exactly
//!   once by the write ledger too), run at once. When a command must be retried (Kareo or Dock
//!   unavailable), the event's claim is given back and the answer is 503, so that Dock
//!   delivers it again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dock::{DockClient, DockError, DockSecret};
use hmac::{Hmac, Mac};
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::ports::*;
use crate::tenant::{ConfigError, TenantConfig};
use crate::write::command::{valid_id, Data};
use crate::write::{Command, Op, WriteResult, WriteStatus, Writer};
use crate::Family;

pub mod gate;
pub use gate::{Directory, DirectoryCache, Token};

/// A tenant's webhook settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookConfig {
    /// Is there a `webhooks:` section?
    pub enabled: bool,
    /// Deliveries signed longer ago (or further ahead) than this are refused.
    pub max_age: Duration,
    /// Dock user ids whose events are ignored (besides the integration's own user).
    pub ignore_users: Vec<String>,
    /// The rules.
    pub rules: Vec<HookRule>,
}

/// One rule: which events become which command.
#[derive(Clone, Debug, PartialEq)]
pub struct HookRule {
    /// Name.
    pub name: String,
    /// Dock event types.
    pub events: Vec<String>,
    /// Only tasks in this Dock task list.
    pub list: Option<String>,
    /// The command's operation.
    pub op: Op,
    /// The command's data template.
    pub data: BTreeMap<String, Template>,
    /// The rule may change or delete an existing Kareo record (UpdatePatient,
    /// DeleteAppointment): an explicit opt-in, and each such write is cross-checked first.
    pub modify_existing: bool,
    /// Line of the rule.
    pub line: usize,
}

/// A value of a rule's data.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    /// A literal (number, boolean, text without placeholders).
    Literal(Value),
    /// Text with placeholders.
    Text(Vec<Part>),
    /// A list.
    List(Vec<Template>),
    /// A mapping.
    Map(BTreeMap<String, Template>),
}

/// A piece of templated text.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// `{source.key}`.
    Ref(String, String),
}

const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const PATIENT_KEYS: [&str; 10] = [
    "firstName",
    "middleName",
    "lastName",
    "dob",
    "gender",
    "email",
    "phoneHome",
    "phoneMobile",
    "mrn",
    "id",
];
const TASK_KEYS: [&str; 5] = ["id", "description", "details", "dueDate", "status"];
const EVENT_KEYS: [&str; 3] = ["id", "type", "createdAt"];
/// `{link.*}`: Kareo ids the product itself recorded against the Dock task or patient.
const LINK_KEYS: [&str; 3] = ["patient_id", "appointment_id", "record_id"];
/// Data fields that choose which Kareo record a command touches, and the one placeholder each
/// may be filled from.
const TARGET_FIELDS: [(&str, &str); 2] = [
    ("patient_id", "patient_id"),
    ("appointment_id", "appointment_id"),
];

/// Dock's webhook event types (`dock-samples/webhook/event-types.json`, 128 types).
pub const DOCK_EVENT_TYPES: [&str; 128] = [
    "CREATE_TASK",
    "CREATE_TASK_FROM_EMAIL",
    "CREATE_RECURRING_TASK",
    "CREATE_USER",
    "CREATE_PATIENT",
    "CREATE_PATIENT_NOTE",
    "CREATE_COMMENT",
    "CREATE_ATTACHMENT",
    "CREATE_ORGANIZATION",
    "CREATE_LIST",
    "CREATE_PROTOCOL",
    "CREATE_PROTOCOL_ITEM",
    "UPDATE_TASK",
    "UPDATE_TASK_DESCRIPTION",
    "UPDATE_TASK_PATIENT",
    "UPDATE_TASK_PRIORITY",
    "UPDATE_TASK_DUE_DATE",
    "UPDATE_TASK_STATUS",
    "UPDATE_TASK_WORKFLOW_STATUS",
    "UPDATE_TASK_RECURRING_SCHEDULE",
    "UPDATE_USER",
    "UPDATE_USER_FIRSTNAME",
    "UPDATE_USER_LASTNAME",
    "UPDATE_USER_SPECIALTY",
    "UPDATE_USER_SUBSPECIALTY",
    "UPDATE_USER_TITLE",
    "UPDATE_USER_CREDENTIALS",
    "UPDATE_USER_ACCOUNTPHONE",
    "UPDATE_USER_WORKPHONE",
    "UPDATE_USER_HOMEPHONE",
    "UPDATE_USER_FAXNUMBER",
    "UPDATE_USER_PROFILEPIC",
    "UPDATE_USER_NOTIFICATIONPREF_EMAIL",
    "UPDATE_USER_NOTIFICATIONPREF_PUSH",
    "UPDATE_USER_PREF_DISPLAY_COLUMNS",
    "UPDATE_PATIENT",
    "UPDATE_PATIENT_NOTE",
    "UPDATE_COMMENT",
    "UPDATE_ATTACHMENT",
    "UPDATE_ORGANIZATION",
    "UPDATE_ORGANIZATION_LEGAL_NAME",
    "UPDATE_ORGANIZATION_SIGNATURE_STATUS",
    "BAA_SIGNATURE_REQUEST_SENT",
    "UPDATE_LIST",
    "UPDATE_LIST_NOTIFICATION_ON",
    "UPDATE_LIST_NOTIFICATION_OFF",
    "UPDATE_PROTOCOL",
    "UPDATE_PROTOCOL_ITEM",
    "DELETE_TASK",
    "UNDELETE_TASK",
    "DELETE_USER",
    "DELETE_USER_PROFILEPIC",
    "DELETE_PATIENT",
    "DELETE_PATIENT_NOTE",
    "DELETE_COMMENT",
    "DELETE_ATTACHMENT",
    "DELETE_ORGANIZATION",
    "DELETE_LIST",
    "DELETE_PROTOCOL",
    "DELETE_PROTOCOL_ITEM",
    "ASSIGN_TASK",
    "SET_PRIORITY",
    "MARK_TASKS_READ",
    "MARK_READ",
    "MARK_COMPLETE",
    "MARK_INCOMPLETE",
    "FLAG_AS_UNREAD",
    "UNFLAG_AS_READ",
    "ADD_USER_TO_ORGANIZATION",
    "ADD_USER_TO_LIST",
    "ADD_PATIENT_TO_TASK",
    "REMOVE_USER_FROM_LIST",
    "USER_LEAVES_LIST",
    "USER_LEAVES_ORGANIZATION",
    "MARK_TASK_UNASSIGNED",
    "REMOVE_USER_FROM_ORGANIZATION",
    "ADD_EXISTING_TASK_TO_LIST",
    "ADD_NEW_TASK_TO_LIST",
    "ADD_EXISTING_SUBTASK_TO_ANOTHER_TASK",
    "INVITE_USER_TO_ORGANIZATION",
    "INVITE_USER_TO_ORG_AND_LIST",
    "ACCEPT_INVITATION_TO_ORGANIZATION",
    "ACCEPT_INVITATION_TO_LIST",
    "REJECT_INVITATION_TO_LIST",
    "CANCEL_INVITATION_TO_LIST",
    "CHANGE_TASK_PRIORITY",
    "ADD_DUE_DATE",
    "MARK_TASKS_AS_SEEN",
    "MARK_TASK_AS_SEEN",
    "ADD_SUBTASK",
    "NOTIFIABLE",
    "ACTIVITY_FEED",
    "MAKE_ADMIN_FOR_LIST",
    "REMOVE_ADMIN_FOR_LIST",
    "MARK_LIST_INVITE_INACTIVE",
    "MARK_TASK_INACTIVE",
    "MAKE_ADMIN_FOR_ORGANIZATION",
    "REMOVE_ADMIN_FOR_ORGANIZATION",
    "CANCEL_INVITATION_TO_ORGANIZATION",
    "DUPLICATE_TASK",
    "TASK_REMINDER_SET",
    "TASK_REMINDER_NOTIFICATION_TRIGGERED",
    "TASK_DUE_DATE_REMINDER_TRIGGERED",
    "SELECT_SUBSCRIPTION",
    "BILLING_DETAILS_UPDATE",
    "CREATE_LIST_LABEL",
    "DELETE_LIST_LABEL",
    "ADD_TASK_LABEL",
    "EDIT_TASK_LABEL",
    "REMOVE_TASK_LABEL",
    "CREATE_TASK_GROUP",
    "EDIT_TASK_GROUP",
    "DELETE_TASK_GROUP",
    "ADD_TASK_TO_GROUP",
    "REMOVE_TASK_FROM_GROUP",
    "CREATE_TASK_TEMPLATE",
    "EDIT_TASK_TEMPLATE",
    "DELETE_TASK_TEMPLATE",
    "ADD_TASK_TO_TEMPLATE",
    "REMOVE_TASK_FROM_TEMPLATE",
    "DUPLICATE_TASK_TEMPLATE",
    "CREATE_TASK_BUNDLE",
    "UPDATE_TASK_BUNDLE",
    "DUPLICATE_TASK_BUNDLE",
    "DELETE_TASK_BUNDLE",
    "MOVE_TASK_BUNDLE",
    "MENTION_TASK",
    "MENTION_COMMENT",
];

fn line(n: &MarkedYaml) -> usize {
    n.span.start.line()
}

fn scalar(n: &MarkedYaml) -> Option<Value> {
    match &n.data {
        YamlData::Value(Scalar::String(s)) => Some(Value::String(s.to_string())),
        YamlData::Representation(s, _, _) => Some(Value::String(s.to_string())),
        YamlData::Value(Scalar::Integer(i)) => Some(Value::from(*i)),
        YamlData::Value(Scalar::Boolean(b)) => Some(Value::Bool(*b)),
        YamlData::Value(Scalar::FloatingPoint(f)) => {
            serde_json::Number::from_f64(f.into_inner()).map(Value::Number)
        }
        _ => None,
    }
}

struct P<'s> {
    source: &'s str,
    errors: Vec<ConfigError>,
}

impl P<'_> {
    fn err(&mut self, line: usize, reason: String) {
        self.errors.push(ConfigError {
            file: self.source.to_string(),
            line: Some(line),
            reason,
        });
    }

    fn text(&mut self, n: &MarkedYaml, what: &str) -> Option<String> {
        match scalar(n) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => {
                self.err(line(n), format!("{what}: expected text"));
                None
            }
        }
    }

    fn template(&mut self, n: &MarkedYaml, path: &str) -> Option<Template> {
        match &n.data {
            YamlData::Sequence(items) => {
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    out.push(self.template(it, &format!("{path}[{i}]"))?);
                }
                Some(Template::List(out))
            }
            YamlData::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m.iter() {
                    let key = k.data.as_str().unwrap_or("").to_string();
                    let t = self.template(v, &format!("{path}.{key}"))?;
                    out.insert(key, t);
                }
                Some(Template::Map(out))
            }
            _ => match scalar(n) {
                Some(Value::String(s)) => self.text_template(&s, line(n), path),
                Some(v) => Some(Template::Literal(v)),
                None => {
                    self.err(line(n), format!("{path}: expected a value"));
                    None
                }
            },
        }
    }

    fn text_template(&mut self, s: &str, at: usize, path: &str) -> Option<Template> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                self.err(at, format!("{path}: '{{' without '}}'"));
                return None;
            };
            let inner = &rest[open + 1..open + close];
            let (src, key) = inner.split_once('.').unwrap_or((inner, ""));
            let ok = match src {
                "patient" => PATIENT_KEYS.contains(&key),
                "task" => TASK_KEYS.contains(&key),
                "event" => EVENT_KEYS.contains(&key),
                "link" => LINK_KEYS.contains(&key),
                "field" => !key.trim().is_empty(),
                _ => false,
            };
            if !ok {
                self.err(
                    at,
                    format!(
                        "{path}: unknown placeholder {{{inner}}} (expected patient.<{}>, task.<{}>, event.<{}>, link.<{}> or field.<custom field name>)",
                        PATIENT_KEYS.join("|"),
                        TASK_KEYS.join("|"),
                        EVENT_KEYS.join("|"),
                        LINK_KEYS.join("|")
                    ),
                );
                return None;
            }
            parts.push(Part::Ref(src.to_string(), key.to_string()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if parts.iter().all(|p| matches!(p, Part::Lit(_))) {
            return Some(Template::Literal(Value::String(s.to_string())));
        }
        Some(Template::Text(parts))
    }

    fn rule(&mut self, i: usize, n: &MarkedYaml, names: &mut BTreeSet<String>) -> Option<HookRule> {
        let at = line(n);
        let YamlData::Mapping(m) = &n.data else {
            self.err(at, format!("webhooks.rules[{i}]: expected a mapping"));
            return None;
        };
        let before = self.errors.len();
        let mut get = BTreeMap::new();
        for (k, v) in m.iter() {
            let key = k.data.as_str().unwrap_or("");
            if !["name", "event", "list", "op", "data", "modify_existing"].contains(&key) {
                self.err(
                    line(k),
                    format!("webhooks.rules[{i}]: unknown key '{key}' (expected name, event, list, op, data, modify_existing)"),
                );
            } else {
                get.insert(key.to_string(), v);
            }
        }
        let prefix = |p: &str| format!("webhooks.rules[{i}].{p}");
        let name = match get.get("name") {
            Some(v) => self
                .text(v, &prefix("name"))
                .filter(|s| s.len() <= 40 && valid_id(s) && !s.contains(':') && !s.contains('.')),
            None => None,
        };
        if name.is_none() {
            self.err(
                get.get("name").map_or(at, |v| line(v)),
                format!(
                    "{}: required, 1-40 letters, digits, '-' or '_'",
                    prefix("name")
                ),
            );
        }
        if let Some(nm) = &name {
            if !names.insert(nm.clone()) {
                self.err(
                    at,
                    format!("{}: '{nm}' is used by another rule", prefix("name")),
                );
            }
        }
        let mut events = Vec::new();
        match get.get("event") {
            None => self.err(at, format!("{}: required", prefix("event"))),
            Some(v) => {
                let items: Vec<&MarkedYaml> = match &v.data {
                    YamlData::Sequence(s) => s.iter().collect(),
                    _ => vec![*v],
                };
                for it in items {
                    if let Some(e) = self.text(it, &prefix("event")) {
                        if DOCK_EVENT_TYPES.contains(&e.as_str()) {
                            events.push(e);
                        } else {
                            self.err(
                                line(it),
                                format!("{}: '{e}' is not a Dock event type (e.g. MARK_COMPLETE, UPDATE_TASK_STATUS, CREATE_PATIENT)", prefix("event")),
                            );
                        }
                    }
                }
            }
        }
        let list = get.get("list").and_then(|v| self.text(v, &prefix("list")));
        let modify_existing = match get.get("modify_existing") {
            None => false,
            Some(v) => match scalar(v) {
                Some(Value::Bool(b)) => b,
                _ => {
                    self.err(
                        line(v),
                        format!("{}: expected true or false", prefix("modify_existing")),
                    );
                    false
                }
            },
        };
        let op = match get.get("op") {
            None => {
                self.err(at, format!("{}: required", prefix("op")));
                None
            }
            Some(v) => {
                let t = self.text(v, &prefix("op"));
                let op = t.as_deref().and_then(Op::from_name);
                if t.is_some() && op.is_none() {
                    self.err(
                        line(v),
                        format!(
                            "{}: must be one of {}",
                            prefix("op"),
                            Op::ALL.map(Op::name).join(", ")
                        ),
                    );
                }
                op
            }
        };
        let mut data = BTreeMap::new();
        match get.get("data") {
            None => self.err(at, format!("{}: required", prefix("data"))),
            Some(v) => match &v.data {
                YamlData::Mapping(m) => {
                    for (k, val) in m.iter() {
                        let key = k.data.as_str().unwrap_or("").to_string();
                        if let Some(op) = op {
                            if !op.fields().contains(&key.as_str()) {
                                self.err(
                                    line(k),
                                    format!(
                                        "{}: {op} has no field '{key}' (expected {})",
                                        prefix("data"),
                                        op.fields().join(", ")
                                    ),
                                );
                                continue;
                            }
                        }
                        if let Some(t) = self.template(val, &format!("{}.{key}", prefix("data"))) {
                            if let Some((_, from)) = TARGET_FIELDS.iter().find(|(f, _)| *f == key) {
                                let linked = matches!(&t, Template::Text(parts)
                                    if matches!(parts.as_slice(), [Part::Ref(src, k)] if src == "link" && k == from));
                                if !linked {
                                    self.err(
                                        line(val),
                                        format!(
                                            "{}.{key}: must be \"{{link.{from}}}\": a Kareo record is chosen only through a link this product recorded (Dock fields such as {{patient.mrn}} can be edited by any Dock user)",
                                            prefix("data")
                                        ),
                                    );
                                    continue;
                                }
                            }
                            data.insert(key, t);
                        }
                    }
                }
                _ => self.err(line(v), format!("{}: expected a mapping", prefix("data"))),
            },
        }
        if let Some(op) = op {
            if modifies_existing(op) && !modify_existing {
                self.err(
                    get.get("op").map_or(at, |v| line(v)),
                    format!(
                        "{}: {op} changes an existing Kareo record: set modify_existing: true on this rule to allow it (each such write is cross-checked against the Dock patient's name and date of birth first)",
                        prefix("op")
                    ),
                );
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(HookRule {
            name: name?,
            events,
            list,
            op: op?,
            data,
            modify_existing,
            line: at,
        })
    }
}

/// Does `op` change or delete a record that already exists in Kareo?
pub fn modifies_existing(op: Op) -> bool {
    matches!(op, Op::UpdatePatient | Op::DeleteAppointment)
}

impl WebhookConfig {
    /// Reads and checks the `webhooks:` section of a tenant's YAML (absent: disabled). Every
    /// problem is reported with its line.
    pub fn from_tenant_yaml(text: &str, source: &str) -> Result<WebhookConfig, Vec<ConfigError>> {
        let mut p = P {
            source,
            errors: Vec::new(),
        };
        let Ok(docs) = MarkedYaml::load_from_str(text) else {
            // The mapping's reader reports unreadable YAML.
            return Ok(WebhookConfig::default());
        };
        let section = match docs.first().map(|d| &d.data) {
            Some(YamlData::Mapping(m)) => m
                .iter()
                .find(|(k, _)| k.data.as_str() == Some("webhooks"))
                .map(|(_, v)| v),
            _ => None,
        };
        let mut cfg = WebhookConfig {
            max_age: DEFAULT_MAX_AGE,
            ..WebhookConfig::default()
        };
        let Some(section) = section.filter(|v| !v.data.is_null()) else {
            return Ok(cfg);
        };
        cfg.enabled = true;
        let YamlData::Mapping(m) = &section.data else {
            p.err(
                line(section),
                "webhooks: expected a mapping (max_age, ignore_users, rules)".into(),
            );
            return Err(p.errors);
        };
        for (k, v) in m.iter() {
            match k.data.as_str().unwrap_or("") {
                "max_age" => {
                    if let Some(t) = p.text(v, "webhooks.max_age") {
                        match humantime::parse_duration(&t) {
                            Ok(d)
                                if d >= Duration::from_secs(10)
                                    && d <= Duration::from_secs(3600) =>
                            {
                                cfg.max_age = d
                            }
                            _ => p.err(
                                line(v),
                                "webhooks.max_age: a duration between 10s and 1h (e.g. 5m)".into(),
                            ),
                        }
                    }
                }
                "ignore_users" => match &v.data {
                    YamlData::Sequence(items) => {
                        for it in items {
                            if let Some(u) = p.text(it, "webhooks.ignore_users") {
                                cfg.ignore_users.push(u);
                            }
                        }
                    }
                    _ => p.err(
                        line(v),
                        "webhooks.ignore_users: expected a list of Dock user ids".into(),
                    ),
                },
                "rules" => match &v.data {
                    YamlData::Sequence(items) => {
                        let mut names = BTreeSet::new();
                        for (i, it) in items.iter().enumerate() {
                            if let Some(r) = p.rule(i, it, &mut names) {
                                cfg.rules.push(r);
                            }
                        }
                    }
                    _ if v.data.is_null() => {}
                    _ => p.err(line(v), "webhooks.rules: expected a list of rules".into()),
                },
                other => p.err(
                    line(k),
                    format!(
                        "webhooks: unknown key '{other}' (expected max_age, ignore_users, rules)"
                    ),
                ),
            }
        }
        if p.errors.is_empty() {
            Ok(cfg)
        } else {
            p.errors.sort_by_key(|e| e.line);
            Err(p.errors)
        }
    }
}

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

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The answer to Dock's verification challenge: lowercase hex HMAC-SHA256(secret, message).
pub fn challenge_digest(secret: &str, message: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    hex(&mac.finalize().into_bytes())
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
            Some(("v1", v)) => sigs.push(unhex(v.trim()).ok_or(Refused::NoSignature)?),
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

/// An HTTP request as the Function URL hands it over.
#[derive(Clone, Default)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

fn reply(status: u16, body: Value) -> HttpResponse {
    HttpResponse { status, body }
}

/// The one answer to every request that fails the gate's path check: nothing in it tells an
/// unknown tenant from a wrong token.
fn not_found() -> HttpResponse {
    reply(404, json!({"outcome": "not_found"}))
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
}

/// What a delivery needs.
pub struct Hooks<'a, L, T, S, St> {
    /// Runs the commands (and holds the ledger and clock).
    pub writer: &'a Writer<'a, L, T>,
    /// Dock (reads the task, its list and patient).
    pub dock: &'a DockClient,
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
            serde_json::from_str::<DockSecret>(&raw.0),
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
                match self.context(tenant, &secret, &event).await {
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
                match self.in_list(&secret, c, list).await {
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
                if let Some(v) = render(t, c, &event, k) {
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
            tracing::warn!(class = e.class(), "webhook ledger settle failed");
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
        if let Data::DeleteAppointment { appointment_id } = &cmd.data {
            match self.writer.appointment_patient(creds, *appointment_id).await {
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
                let task = self
                    .dock
                    .get_task(secret, &event.target_identifier)
                    .await
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
                    .get_patient(secret, &pid)
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
            .list_task_lists(secret)
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
        let sig = hex(&mac.finalize().into_bytes());
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

    const HOOKS: &str = "webhooks:
  max_age: 2m
  rules:
    - name: intake
      event: MARK_COMPLETE
      list: Intake
      op: CreatePatient
      data:
        first_name: \"{patient.firstName}\"
        last_name: \"{patient.lastName}\"
        date_of_birth: \"{patient.dob}\"
        gender: \"{field.Gender}\"
";

    #[test]
    fn a_webhooks_section_reads() {
        let c = WebhookConfig::from_tenant_yaml(HOOKS, "t.yaml").unwrap();
        assert!(c.enabled);
        assert_eq!(c.max_age, Duration::from_secs(120));
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].line, 4);
        assert_eq!(c.rules[0].op, Op::CreatePatient);
        assert_eq!(
            c.rules[0].data["gender"],
            Template::Text(vec![Part::Ref("field".into(), "Gender".into())])
        );
    }

    #[test]
    fn webhook_problems_name_their_lines() {
        let bad = HOOKS
            .replace("MARK_COMPLETE", "TASK_COMPLETED")
            .replace("op: CreatePatient", "op: CreatePatient\n      colour: red")
            .replace("{patient.dob}", "{patient.birthday}")
            .replace("gender:", "sex:");
        let errs = WebhookConfig::from_tenant_yaml(&bad, "t.yaml").unwrap_err();
        let got: Vec<(Option<usize>, String)> =
            errs.iter().map(|e| (e.line, e.reason.clone())).collect();
        assert_eq!(errs.len(), 4, "{got:#?}");
        assert_eq!(errs[0].line, Some(5));
        assert!(errs[0]
            .reason
            .contains("'TASK_COMPLETED' is not a Dock event type"));
        assert_eq!(errs[1].line, Some(8));
        assert!(errs[1].reason.contains("unknown key 'colour'"));
        assert_eq!(errs[2].line, Some(12));
        assert!(errs[2]
            .reason
            .contains("unknown placeholder {patient.birthday}"));
        assert_eq!(errs[3].line, Some(13));
        assert!(errs[3].reason.contains("CreatePatient has no field 'sex'"));
    }
}
