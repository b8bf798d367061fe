//! A tenant's `webhooks:` section: Dock events → write commands, read and checked with
//! file:line errors like the rest of the tenant file. The keys, the placeholders and why only
//! `{link.*}` may choose a Kareo record are documented once, in `docs/write-back.md` ("Dock
//! webhooks → Kareo"). The endpoint that applies these rules is `writeback::webhook`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use saphyr::{MarkedYaml, Scalar, YamlData};
use serde_json::Value;

use crate::config::{self, ConfigError, Reader};
use crate::op::{valid_id, Op};

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
    /// DeleteAppointment, UpdateAppointment, UpdateEncounterStatus): an explicit opt-in, and
    /// each such write is cross-checked first.
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
const LINK_KEYS: [&str; 4] = ["patient_id", "appointment_id", "encounter_id", "record_id"];
/// Data fields that choose which Kareo record a command touches, and the one placeholder each
/// may be filled from.
const TARGET_FIELDS: [(&str, &str); 3] = [
    ("patient_id", "patient_id"),
    ("appointment_id", "appointment_id"),
    ("encounter_id", "encounter_id"),
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

struct P<'r, 's> {
    r: &'r mut Reader<'s>,
}

impl P<'_, '_> {
    fn err(&mut self, line: usize, reason: String) {
        self.r.error(line, reason);
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

    // Long: one branch per key of a webhook rule.
    fn rule(&mut self, i: usize, n: &MarkedYaml, names: &mut BTreeSet<String>) -> Option<HookRule> {
        let at = line(n);
        let YamlData::Mapping(m) = &n.data else {
            self.err(at, format!("webhooks.rules[{i}]: expected a mapping"));
            return None;
        };
        let before = self.r.problems();
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
        if self.r.problems() > before {
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
    matches!(
        op,
        Op::UpdatePatient
            | Op::DeleteAppointment
            | Op::UpdateAppointment
            | Op::UpdateEncounterStatus
    )
}

impl WebhookConfig {
    /// Reads and checks the `webhooks:` section of a tenant's YAML (absent: disabled). Every
    /// problem is reported with its line. (The tenant reader calls [`WebhookConfig::read`] on
    /// the file it already parsed.)
    pub fn from_tenant_yaml(text: &str, source: &str) -> Result<WebhookConfig, Vec<ConfigError>> {
        let Ok(root) = config::load(text, source) else {
            // The tenant reader reports unreadable YAML.
            return Ok(WebhookConfig::default());
        };
        let mut r = Reader::new(text, source);
        let section = match &root.data {
            YamlData::Mapping(m) => m
                .iter()
                .find(|(k, _)| k.data.as_str() == Some("webhooks"))
                .map(|(_, v)| v),
            _ => None,
        };
        let cfg = WebhookConfig::read(section, &mut r);
        let errors = r.into_errors();
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Reads the `webhooks:` value of a parsed tenant file into `r`'s problems.
    pub fn read(section: Option<&MarkedYaml>, r: &mut Reader) -> WebhookConfig {
        let mut p = P { r };
        let mut cfg = WebhookConfig {
            max_age: DEFAULT_MAX_AGE,
            ..WebhookConfig::default()
        };
        let Some(section) = section.filter(|v| !v.data.is_null()) else {
            return cfg;
        };
        cfg.enabled = true;
        let YamlData::Mapping(m) = &section.data else {
            p.err(
                line(section),
                "webhooks: expected a mapping (max_age, ignore_users, rules)".into(),
            );
            return cfg;
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
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
