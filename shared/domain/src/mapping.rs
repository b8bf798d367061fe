//! The mapping: a tenant's `rules:` that turn change events into Dock Health tasks or deployed
//! workflows (DESIGN.md §3): rules, conditions, templates and their checks with file:line errors.
//! Every key, condition and placeholder is documented once, in `docs/configuration.md` ("Task
//! rules"), which is also the documentation of [`crate::tenant`].

use std::collections::BTreeMap;
use std::time::Duration;

use kareo::schema::Ty;
use kareo::Family;
use regex::Regex;
use saphyr::{MarkedYaml, Scalar, YamlData};

use crate::config::{self, line, suggest, ConfigError, Reader};
use crate::event::{ChangeEvent, ChangeKind, FieldChange};

pub use dock::Priority;

/// A tenant's mapping: its rules, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapping {
    /// The rules.
    pub rules: Vec<Rule>,
}

/// One rule: when (interface, change kind, conditions) then (task).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name (keys the ledger with the event id).
    pub name: String,
    /// Line of the rule in its file (1-based).
    pub line: usize,
    /// The family whose events the rule reads.
    pub interface: Family,
    /// The change kinds it fires on.
    pub on: On,
    /// Conditions, all of which must hold: (Kareo field, condition).
    pub when: Vec<(String, Condition)>,
    /// What to create.
    pub task: TaskSpec,
}

/// The change kinds a rule fires on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum On {
    /// New records.
    Created,
    /// Changed records.
    Updated,
    /// Deleted records.
    Deleted,
    /// All three.
    Any,
}

impl On {
    const NAMES: [&'static str; 4] = ["created", "updated", "deleted", "any"];

    /// The value as the YAML spells it.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The value with this name.
    pub fn from_name(name: &str) -> Option<On> {
        name.parse().ok()
    }

    /// Does a change of this kind fire the rule?
    pub fn matches(self, kind: ChangeKind) -> bool {
        matches!(
            (self, kind),
            (On::Any, _)
                | (On::Created, ChangeKind::Created)
                | (On::Updated, ChangeKind::Updated)
                | (On::Deleted, ChangeKind::Deleted)
        )
    }
}

/// A condition on one field.
#[derive(Clone, Debug)]
pub enum Condition {
    /// The current value is this.
    Equals(String),
    /// The current value is one of these.
    In(Vec<String>),
    /// The field changed since the last version handed off.
    Changed,
    /// The field changed and was this before.
    ChangedFrom(String),
    /// The field changed and is this now.
    ChangedTo(String),
    /// The current value matches (unanchored).
    Matches(Regex),
}

impl PartialEq for Condition {
    fn eq(&self, other: &Condition) -> bool {
        use Condition::*;
        match (self, other) {
            (Equals(a), Equals(b))
            | (ChangedFrom(a), ChangedFrom(b))
            | (ChangedTo(a), ChangedTo(b)) => a == b,
            (In(a), In(b)) => a == b,
            (Changed, Changed) => true,
            (Matches(a), Matches(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Condition {
    const KEYS: [&'static str; 6] = [
        "equals",
        "in",
        "changed",
        "changed_from",
        "changed_to",
        "matches",
    ];

    /// Does it compare with the previous version (`changed…`)?
    pub fn is_transition(&self) -> bool {
        matches!(
            self,
            Condition::Changed | Condition::ChangedFrom(_) | Condition::ChangedTo(_)
        )
    }

    /// Does it hold for `field` of this event?
    pub fn holds(&self, field: &str, event: &ChangeEvent) -> bool {
        if self.is_transition() {
            if event.kind == ChangeKind::Created {
                return false;
            }
            return event
                .changes
                .iter()
                .filter(|c| c.field == field)
                .filter_map(transition)
                .any(|(before, after)| match self {
                    Condition::ChangedFrom(x) => before == x,
                    Condition::ChangedTo(x) => after == x,
                    _ => true,
                });
        }
        let now = event.record.get(field).map(String::as_str).unwrap_or("");
        match self {
            Condition::Equals(x) => now == x,
            Condition::In(xs) => xs.iter().any(|x| x == now),
            Condition::Matches(re) => re.is_match(now),
            _ => false,
        }
    }
}

/// A change's (before, after), absent read as empty; `None` when that makes them equal.
fn transition(c: &FieldChange) -> Option<(&str, &str)> {
    let before = c.before.as_deref().unwrap_or("");
    let after = c.after.as_deref().unwrap_or("");
    (before != after).then_some((before, after))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl TaskSpec {
    /// One plain task in `list`: no group, template, description, assignee, due date,
    /// priority or patient link.
    pub fn plain(list: impl Into<String>) -> TaskSpec {
        TaskSpec {
            list: list.into(),
            group: None,
            workflow: None,
            workflow_id: None,
            description: Template::default(),
            assignee: None,
            due: None,
            priority: None,
            patient: false,
        }
    }

    /// It deploys a workflow template (by name or id) instead of creating one task.
    pub fn deploys(&self) -> bool {
        self.workflow.is_some() || self.workflow_id.is_some()
    }
}

/// What a rule creates in Dock.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    /// Task list, by name.
    pub list: String,
    /// Task group, by name (required with `workflow`).
    pub group: Option<String>,
    /// Workflow/SmartFlow template to deploy instead of one task, by name.
    pub workflow: Option<String>,
    /// The same, by Dock id (`workflow_id`): for organisations where Dock lists no templates;
    /// wins over `workflow` when both are given.
    pub workflow_id: Option<String>,
    /// The task's description (with `workflow`: optional, empty when absent).
    pub description: Template,
    /// Assignee, by email.
    pub assignee: Option<String>,
    /// Due this long after creation.
    pub due: Option<Duration>,
    /// Priority.
    pub priority: Option<Priority>,
    /// Link the Dock patient.
    pub patient: bool,
}

/// A text with `{Field}` placeholders, parsed and checked once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    text: String,
    family: Option<Family>,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Member(String),
    RecordId,
    Family,
    Kind,
}

impl Template {
    /// Parses `text` for a family: `{Field}` must be a simple member of the family's record type
    /// (or `record_id`, `family`, `kind`); `{{` and `}}` are literal braces. Every problem is
    /// returned.
    pub fn parse(text: &str, family: Family) -> Result<Template, Vec<String>> {
        Template::parse_for(text, Some(family))
    }

    /// As [`Template::parse`]; without a family, placeholders are not checked.
    fn parse_for(text: &str, family: Option<Family>) -> Result<Template, Vec<String>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    errors.push("a single '}' (write '}}' for a literal brace)".to_string());
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed || name.contains('{') {
                        errors.push("an unclosed '{' (write '{{' for a literal brace)".to_string());
                        break;
                    }
                    let name = name.trim();
                    let part = match name {
                        "" => {
                            errors.push("an empty placeholder '{}'".to_string());
                            continue;
                        }
                        "record_id" => Part::RecordId,
                        "family" => Part::Family,
                        "kind" => Part::Kind,
                        _ => {
                            if let Some(f) = family {
                                if let Err(e) = check_field(f, name) {
                                    errors.push(format!("unknown placeholder {{{name}}}: {e}"));
                                    continue;
                                }
                            }
                            Part::Member(name.to_string())
                        }
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        if errors.is_empty() {
            Ok(Template {
                text: text.to_string(),
                family,
                parts,
            })
        } else {
            Err(errors)
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// No text at all (a workflow rule without a description).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The fields it reads, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Member(m) => Some(m.as_str()),
            _ => None,
        })
    }

    /// Renders over a record's fields: an absent field renders empty; `{record_id}` is the
    /// family's id member, `{family}` its name, `{kind}` empty (see [`Template::render_event`]).
    pub fn render(&self, record: &BTreeMap<String, String>) -> String {
        self.render_with(record, None)
    }

    /// Renders for an event: its record, id, family and kind.
    pub fn render_event(&self, event: &ChangeEvent) -> String {
        self.render_with(&event.record, Some(event))
    }

    fn render_with(
        &self,
        record: &BTreeMap<String, String>,
        event: Option<&ChangeEvent>,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Member(m) => out.push_str(record.get(m).map(String::as_str).unwrap_or("")),
                Part::RecordId => match event {
                    Some(e) => out.push_str(&e.record_id),
                    None => {
                        if let Some(v) = self.family.and_then(|f| record.get(f.id_member())) {
                            out.push_str(v);
                        }
                    }
                },
                Part::Family => {
                    if let Some(f) = event.map(|e| e.family).or(self.family) {
                        out.push_str(f.name());
                    }
                }
                Part::Kind => out.push_str(event.map(|e| e.kind.name()).unwrap_or("")),
            }
        }
        out
    }
}

impl Rule {
    /// Does this rule fire on the event? (interface, change kind, every condition)
    pub fn matches(&self, event: &ChangeEvent) -> bool {
        self.interface == event.family
            && self.on.matches(event.kind)
            && self.when.iter().all(|(f, c)| c.holds(f, event))
    }
}

impl Mapping {
    /// The rules that fire on an event, in file order.
    pub fn matching<'a>(&'a self, event: &ChangeEvent) -> impl Iterator<Item = &'a Rule> {
        self.rules
            .iter()
            .filter(|r| r.matches(event))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Reads and checks the `rules:` of a tenant's YAML text (absent or null: no rules);
    /// `source` names the text in errors. Every problem is reported, sorted by line. (The
    /// tenant reader calls [`Mapping::read`] on the file it already parsed.)
    pub fn from_tenant_yaml(text: &str, source: &str) -> Result<Mapping, Vec<ConfigError>> {
        let root = config::load(text, source).map_err(|e| vec![e])?;
        let mut r = Reader::new(text, source);
        let rules = match &root.data {
            YamlData::Mapping(m) => m.iter().find(|(k, _)| k.data.as_str() == Some("rules")),
            _ => None,
        };
        let mapping = Mapping::read(rules, &mut r);
        let errors = r.into_errors();
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(errors)
        }
    }

    /// Reads the `rules:` entry (key and value) of a parsed tenant file into `r`'s problems.
    pub fn read(rules: Option<(&MarkedYaml, &MarkedYaml)>, r: &mut Reader) -> Mapping {
        let mut p = Parser { r };
        let mut mapping = Mapping::default();
        match rules {
            None => {}
            Some((_, v)) if v.data.is_null() => {}
            Some((_, v)) if matches!(v.data, YamlData::Sequence(_)) => {
                let YamlData::Sequence(items) = &v.data else {
                    unreachable!()
                };
                let mut names: BTreeMap<String, usize> = BTreeMap::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(rule) = p.rule(i, item, &mut names) {
                        mapping.rules.push(rule);
                    }
                }
            }
            Some((k, _)) => p.r.error(
                line(k),
                "rules: expected a list of rules (or [] for none)".into(),
            ),
        }
        mapping
    }
}

/// Is `name` a simple member of the family's record type? Otherwise why not, with a hint.
fn check_field(family: Family, name: &str) -> Result<(), String> {
    let def = family.data_type();
    match def.member(name) {
        Some(m) if matches!(m.ty, Ty::Complex(_)) => Err(format!(
            "'{name}' of {family} is a nested record, not a simple field"
        )),
        Some(_) => Ok(()),
        None => {
            let simple = def
                .members
                .iter()
                .filter(|m| !matches!(m.ty, Ty::Complex(_)))
                .map(|m| m.name);
            let hint = match suggest(name, simple) {
                Some(s) if s.eq_ignore_ascii_case(name) => {
                    format!(" (did you mean '{s}'? field names are case-sensitive)")
                }
                Some(s) => format!(" (did you mean '{s}'?)"),
                None => format!(" (fields are the members of Kareo's {})", def.name),
            };
            Err(format!("{family} has no field '{name}'{hint}"))
        }
    }
}

/// A plausible email address: `local@domain.tld`, no spaces.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ",;<>()[]\"".contains(c))
}

fn priority(s: &str) -> Option<Priority> {
    match s {
        "HIGH" => Some(Priority::High),
        "MEDIUM" => Some(Priority::Medium),
        "LOW" => Some(Priority::Low),
        "NONE" => Some(Priority::None),
        _ => None,
    }
}

const PRIORITIES: [&str; 4] = ["HIGH", "MEDIUM", "LOW", "NONE"];
const RULE_KEYS: [&str; 5] = ["name", "interface", "on", "when", "task"];
const TASK_KEYS: [&str; 9] = [
    "list",
    "group",
    "workflow",
    "workflow_id",
    "description",
    "assignee",
    "due",
    "priority",
    "patient",
];

struct Parser<'r, 's> {
    r: &'r mut Reader<'s>,
}

impl Parser<'_, '_> {
    // Long: one branch per key of a rule.
    fn rule(
        &mut self,
        i: usize,
        item: &MarkedYaml,
        names: &mut BTreeMap<String, usize>,
    ) -> Option<Rule> {
        let at = line(item);
        let errors_before = self.r.problems();
        let entries = self.r.entries(item, at, &format!("rules[{i}]"))?;
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k.data.as_str() == Some(key))
                .copied()
        };

        // The name first: every other message names the rule.
        let mut name = None;
        match get("name") {
            None => self.r.error(at, format!("rules[{i}]: name is required")),
            Some((_, v)) => {
                match self.r.text(v) {
                    Ok(s) if s.trim().is_empty() => self
                        .r
                        .error(line(v), format!("rules[{i}]: name must not be empty")),
                    Ok(s) => {
                        if let Some(first) = names.get(&s) {
                            self.r.error(
                            line(v),
                            format!("rules[{i}] {s}: duplicate rule name (first used at line {first})"),
                        );
                        } else {
                            names.insert(s.clone(), line(v));
                        }
                        name = Some(s);
                    }
                    Err(e) => self.r.error(line(v), format!("rules[{i}]: name: {e}")),
                }
            }
        }
        let prefix = match &name {
            Some(n) => format!("rules[{i}] {n}: "),
            None => format!("rules[{i}]: "),
        };
        self.r.keys(&entries, &RULE_KEYS, &prefix);

        let mut interface = None;
        match get("interface") {
            None => self.r.error(at, format!("{prefix}interface is required")),
            Some((_, v)) => match self.r.text(v) {
                Ok(s) => match Family::from_name(&s) {
                    Some(f) => interface = Some(f),
                    None => {
                        let all: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                        let hint = suggest(&s, all.iter().copied())
                            .map(|s| format!("did you mean '{s}'? "))
                            .unwrap_or_default();
                        self.r.error(
                            line(v),
                            format!(
                                "{prefix}interface: unknown interface '{s}' ({hint}expected {})",
                                all.join(", ")
                            ),
                        );
                    }
                },
                Err(e) => self.r.error(line(v), format!("{prefix}interface: {e}")),
            },
        }

        let mut on = None;
        match get("on") {
            None => self.r.error(
                at,
                format!("{prefix}on is required (created, updated, deleted or any)"),
            ),
            Some((_, v)) => match self.r.text(v) {
                Ok(s) => match On::from_name(&s) {
                    Some(o) => on = Some(o),
                    None => self.r.error(
                        line(v),
                        format!(
                            "{prefix}on: unknown change kind '{s}' (expected {})",
                            On::NAMES.join(", ")
                        ),
                    ),
                },
                Err(e) => self.r.error(line(v), format!("{prefix}on: {e}")),
            },
        }

        let when = match get("when") {
            None => Vec::new(),
            Some((_, v)) if v.data.is_null() => Vec::new(),
            Some((k, v)) => self.when(v, line(k), interface, &prefix),
        };

        let task = match get("task") {
            None => {
                self.r.error(at, format!("{prefix}task is required"));
                None
            }
            Some((k, v)) => self.task(v, line(k), interface, &prefix),
        };

        if self.r.problems() > errors_before {
            return None;
        }
        Some(Rule {
            name: name?,
            line: at,
            interface: interface?,
            on: on?,
            when,
            task: task?,
        })
    }

    fn when(
        &mut self,
        v: &MarkedYaml,
        at: usize,
        family: Option<Family>,
        prefix: &str,
    ) -> Vec<(String, Condition)> {
        let mut out = Vec::new();
        let Some(entries) = self.r.entries(v, at, &format!("{prefix}when")) else {
            return out;
        };
        for (k, c) in entries {
            let field = match self.r.text(k) {
                Ok(f) => f,
                Err(e) => {
                    self.r
                        .error(line(k), format!("{prefix}when: field name: {e}"));
                    continue;
                }
            };
            let path = format!("{prefix}when.{field}");
            if let Some(f) = family {
                if let Err(e) = check_field(f, &field) {
                    self.r.error(line(k), format!("{path}: {e}"));
                }
            }
            let added = out.len();
            match &c.data {
                YamlData::Mapping(m) => {
                    if m.is_empty() {
                        self.r.error(
                            line(k),
                            format!(
                                "{path}: empty condition (expected {})",
                                Condition::KEYS.join(", ")
                            ),
                        );
                    }
                    for (ck, cv) in m.iter() {
                        if let Some(cond) = self.condition(ck, cv, &path) {
                            out.push((field.clone(), cond));
                        }
                    }
                }
                YamlData::Sequence(_) => {
                    if let Some(xs) = self.list(c, &format!("{path}: in")) {
                        out.push((field.clone(), Condition::In(xs)));
                    }
                }
                _ => match self.r.text(c) {
                    Ok(x) => out.push((field.clone(), Condition::Equals(x))),
                    Err(e) => self.r.error(line(c), format!("{path}: {e}")),
                },
            }
            // A value Kareo never answers for this member would make the rule never hold.
            let closed =
                family.and_then(|f| kareo::codes::closed_values(f.data_type().name, &field));
            if let Some(values) = closed {
                for (_, cond) in &out[added..] {
                    let named = match cond {
                        Condition::Equals(x)
                        | Condition::ChangedFrom(x)
                        | Condition::ChangedTo(x) => {
                            vec![x]
                        }
                        Condition::In(xs) => xs.iter().collect(),
                        _ => Vec::new(),
                    };
                    for x in named {
                        if !values.contains(&x.as_str()) {
                            self.r.error(
                                line(c),
                                format!(
                                    "{path}: Kareo never answers '{x}' for {field} (it answers {})",
                                    values.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
        out
    }

    /// A non-empty list of texts.
    fn list(&mut self, v: &MarkedYaml, path: &str) -> Option<Vec<String>> {
        let YamlData::Sequence(items) = &v.data else {
            self.r
                .error(line(v), format!("{path}: expected a list of values"));
            return None;
        };
        if items.is_empty() {
            self.r.error(
                line(v),
                format!("{path}: the list is empty (it would never hold)"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.r.text(item) {
                Ok(x) => out.push(x),
                Err(e) => {
                    self.r.error(line(item), format!("{path}: {e}"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn condition(&mut self, k: &MarkedYaml, v: &MarkedYaml, path: &str) -> Option<Condition> {
        let key = k.data.as_str().unwrap_or("");
        let value = |p: &mut Self| match p.r.text(v) {
            Ok(x) => Some(x),
            Err(e) => {
                p.r.error(line(v), format!("{path}.{key}: {e}"));
                None
            }
        };
        match key {
            "equals" => value(self).map(Condition::Equals),
            "changed_from" => value(self).map(Condition::ChangedFrom),
            "changed_to" => value(self).map(Condition::ChangedTo),
            "in" => self.list(v, &format!("{path}.in")).map(Condition::In),
            "changed" => match &v.data {
                YamlData::Value(Scalar::Boolean(true)) => Some(Condition::Changed),
                _ => {
                    self.r.error(
                        line(v),
                        format!(
                            "{path}.changed: expected true (leave the condition out otherwise)"
                        ),
                    );
                    None
                }
            },
            "matches" => {
                let pattern = value(self)?;
                match Regex::new(&pattern) {
                    Ok(re) => Some(Condition::Matches(re)),
                    Err(e) => {
                        let full = e.to_string();
                        let why = full
                            .lines()
                            .find_map(|l| l.strip_prefix("error: "))
                            .unwrap_or(full.lines().last().unwrap_or(""))
                            .trim()
                            .to_string();
                        self.r.error(
                            line(v),
                            format!("{path}.matches: not a valid regular expression: {why}"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.r.error(
                    line(k),
                    format!(
                        "{path}: unknown condition '{}' (expected {})",
                        self.r.raw(k),
                        Condition::KEYS.join(", ")
                    ),
                );
                None
            }
        }
    }

    // Long: one branch per key of a rule's task, in the order the reference documents them.
    fn task(
        &mut self,
        v: &MarkedYaml,
        at: usize,
        family: Option<Family>,
        prefix: &str,
    ) -> Option<TaskSpec> {
        let errors_before = self.r.problems();
        let entries = self.r.entries(v, at, &format!("{prefix}task"))?;
        self.r
            .keys(&entries, &TASK_KEYS, &format!("{prefix}task: "));
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, v)| k.data.as_str() == Some(key) && !v.data.is_null())
                .copied()
        };
        // An optional, non-empty text.
        let name_of = |p: &mut Self, key: &str| -> Option<String> {
            let (_, v) = get(key)?;
            match p.r.text(v) {
                Ok(s) if s.trim().is_empty() => {
                    p.r.error(line(v), format!("{prefix}task.{key} must not be empty"));
                    None
                }
                Ok(s) => Some(s),
                Err(e) => {
                    p.r.error(line(v), format!("{prefix}task.{key}: {e}"));
                    None
                }
            }
        };
        let list = name_of(self, "list");
        if get("list").is_none() {
            self.r.error(
                at,
                format!("{prefix}task.list is required (a Dock task list, by name)"),
            );
        }
        let group = name_of(self, "group");
        let workflow = name_of(self, "workflow");
        let workflow_id = name_of(self, "workflow_id");
        if let (Some(id), Some((_, v))) = (&workflow_id, get("workflow_id")) {
            if !is_uuid(id.trim()) {
                self.r.error(
                    line(v),
                    format!("{prefix}task.workflow_id must be a Dock template id (a UUID, as Dock shows it)"),
                );
            }
        }
        let deploys = workflow.is_some() || workflow_id.is_some();

        let description = match get("description") {
            None => {
                if !deploys {
                    self.r.error(
                        at,
                        format!("{prefix}task.description is required (the task's title)"),
                    );
                }
                Template::default()
            }
            Some((_, d)) => match self.r.text(d) {
                Ok(s) if s.trim().is_empty() => {
                    self.r.error(
                        line(d),
                        format!("{prefix}task.description must not be empty"),
                    );
                    Template::default()
                }
                Ok(s) => match Template::parse_for(&s, family) {
                    Ok(t) => t,
                    Err(es) => {
                        for e in es {
                            self.r
                                .error(line(d), format!("{prefix}task.description: {e}"));
                        }
                        Template::default()
                    }
                },
                Err(e) => {
                    self.r
                        .error(line(d), format!("{prefix}task.description: {e}"));
                    Template::default()
                }
            },
        };

        let assignee = match get("assignee") {
            None => None,
            Some((_, a)) => match self.r.text(a) {
                Ok(s) if is_email(s.trim()) => Some(s.trim().to_string()),
                Ok(_) => {
                    self.r.error(
                        line(a),
                        format!("{prefix}task.assignee is not an email address (a Dock user's email, e.g. name@example.com)"),
                    );
                    None
                }
                Err(e) => {
                    self.r.error(line(a), format!("{prefix}task.assignee: {e}"));
                    None
                }
            },
        };

        let due = match get("due") {
            None => None,
            Some((_, d)) => match self.r.text(d).map(|s| (humantime::parse_duration(&s), s)) {
                Ok((Ok(x), _)) => Some(x),
                Ok((Err(_), s)) => {
                    self.r.error(
                        line(d),
                        format!("{prefix}task.due: '{s}' is not a duration (e.g. 30m, 4h, 1d)"),
                    );
                    None
                }
                Err(e) => {
                    self.r.error(line(d), format!("{prefix}task.due: {e}"));
                    None
                }
            },
        };

        let prio = match get("priority") {
            None => None,
            Some((_, p)) => match self.r.text(p) {
                Ok(s) => match priority(&s) {
                    Some(x) => Some(x),
                    None => {
                        let hint = suggest(&s, PRIORITIES)
                            .map(|s| format!("did you mean '{s}'? "))
                            .unwrap_or_default();
                        self.r.error(
                            line(p),
                            format!(
                                "{prefix}task.priority: unknown priority '{s}' ({hint}expected {})",
                                PRIORITIES.join(", ")
                            ),
                        );
                        None
                    }
                },
                Err(e) => {
                    self.r.error(line(p), format!("{prefix}task.priority: {e}"));
                    None
                }
            },
        };

        let patient = match get("patient") {
            None => false,
            Some((_, p)) => match &p.data {
                YamlData::Value(Scalar::Boolean(b)) if self.r.raw(p) == b.to_string() => *b,
                _ => {
                    self.r.error(
                        line(p),
                        format!("{prefix}task.patient: expected true or false"),
                    );
                    false
                }
            },
        };

        if let Some((wk, _)) = get("workflow").or_else(|| get("workflow_id")) {
            for key in ["assignee", "due", "priority"] {
                if let Some((k, _)) = get(key) {
                    self.r.error(
                        line(k),
                        format!("{prefix}task.{key} does not apply with task.workflow (the template's tasks carry their own assignees, due dates and priorities)"),
                    );
                }
            }
            if get("group").is_none() {
                self.r.error(
                    line(wk),
                    format!("{prefix}task.workflow needs task.group (Dock deploys a workflow into a list and a group)"),
                );
            }
        }

        if self.r.problems() > errors_before {
            return None;
        }
        Some(TaskSpec {
            list: list?,
            group,
            workflow,
            workflow_id: workflow_id.map(|i| i.trim().to_ascii_lowercase()),
            description,
            assignee,
            due,
            priority: prio,
            patient,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The per-interface example of the configuration reference, as written there.
    fn doc_example() -> String {
        let src = include_str!("../../../docs/configuration.md");
        let start = src
            .find("### One example per interface\n```yaml\n")
            .expect("doc example");
        src[start..]
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn parse(yaml: &str) -> Mapping {
        match Mapping::from_tenant_yaml(yaml, "t.yaml") {
            Ok(m) => m,
            Err(es) => panic!(
                "rejected:\n{}",
                es.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    fn errors(yaml: &str) -> Vec<ConfigError> {
        match Mapping::from_tenant_yaml(yaml, "t.yaml") {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(es) => es,
        }
    }

    /// The only error of `yaml`; asserts its line and that its message contains `needle`.
    fn one_error(yaml: &str, line: usize, needle: &str) -> ConfigError {
        let es = errors(yaml);
        assert_eq!(es.len(), 1, "{es:#?}");
        let e = es.into_iter().next().unwrap();
        assert_eq!(e.file, "t.yaml");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.reason.contains(needle), "{e}\n  expected: {needle}");
        e
    }

    type Change<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

    fn event(
        family: Family,
        kind: ChangeKind,
        record: &[(&str, &str)],
        changes: &[Change],
    ) -> ChangeEvent {
        ChangeEvent {
            id: "e1".into(),
            tenant: "acme".into(),
            family,
            record_id: "42".into(),
            version: Utc.with_ymd_and_hms(2026, 9, 1, 12, 0, 0).unwrap(),
            kind,
            changes: changes
                .iter()
                .map(|(f, b, a)| FieldChange {
                    field: f.to_string(),
                    before: b.map(str::to_string),
                    after: a.map(str::to_string),
                })
                .collect(),
            record: record
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn fired(m: &Mapping, e: &ChangeEvent) -> Vec<String> {
        m.matching(e).map(|r| r.name.clone()).collect()
    }

    use chrono::Utc;
    use ChangeKind::{Created, Deleted, Updated};

    #[test]
    fn the_documented_example_has_one_rule_per_interface() {
        let m = parse(&doc_example());
        let mut families: Vec<Family> = m.rules.iter().map(|r| r.interface).collect();
        families.sort();
        let mut all = Family::ALL.to_vec();
        all.sort();
        assert_eq!(families, all);
        let intake = &m.rules[1].task;
        assert_eq!(intake.workflow.as_deref(), Some("New Patient Intake"));
        assert!(intake.description.is_empty() && intake.patient);
        let cb = &m.rules[0].task;
        assert_eq!(cb.priority, Some(Priority::High));
        assert_eq!(cb.due, Some(Duration::from_secs(86400)));
        assert_eq!(m.rules[0].line, 2);
    }

    #[test]
    fn each_interface_rule_fires_on_its_event_and_not_on_others() {
        let m = parse(&doc_example());
        // (family, firing event, a near miss)
        let cases: Vec<(&str, ChangeEvent, ChangeEvent)> = vec![
            (
                "appointment-cancelled",
                event(
                    Family::Appointments,
                    Updated,
                    &[("ConfirmationStatus", "Cancelled")],
                    &[("ConfirmationStatus", Some("Scheduled"), Some("Cancelled"))],
                ),
                event(
                    Family::Appointments,
                    Updated,
                    &[("ConfirmationStatus", "Cancelled")],
                    &[("Notes", Some("a"), Some("b"))],
                ),
            ),
            (
                "new-patient-intake",
                event(Family::Patients, Created, &[("FirstName", "x")], &[]),
                event(Family::Patients, Updated, &[("FirstName", "x")], &[]),
            ),
            (
                "charge-on-hold",
                event(
                    Family::Charges,
                    Updated,
                    &[("Status", "On Hold")],
                    &[("Status", Some("Open"), Some("On Hold"))],
                ),
                event(
                    Family::Charges,
                    Updated,
                    &[("Status", "On Hold")],
                    &[("Units", Some("1"), Some("2"))],
                ),
            ),
            (
                "encounter-rejected",
                event(
                    Family::Encounters,
                    Updated,
                    &[("EncounterStatus", "Rejected")],
                    &[],
                ),
                event(
                    Family::Encounters,
                    Updated,
                    &[("EncounterStatus", "Approved")],
                    &[],
                ),
            ),
            (
                "large-payment",
                event(Family::Payments, Created, &[("Amount", "1250.00")], &[]),
                event(Family::Payments, Created, &[("Amount", "99.00")], &[]),
            ),
            (
                "patient-refund",
                event(Family::Transactions, Created, &[("Type", "Refund")], &[]),
                event(Family::Transactions, Created, &[("Type", "Payment")], &[]),
            ),
            (
                "practice-deactivated",
                event(
                    Family::Practices,
                    Updated,
                    &[("Active", "false")],
                    &[("Active", Some("true"), Some("false"))],
                ),
                event(
                    Family::Practices,
                    Created,
                    &[("Active", "false")],
                    &[("Active", Some("true"), Some("false"))],
                ),
            ),
            (
                "new-provider",
                event(Family::Providers, Created, &[], &[]),
                event(Family::Providers, Deleted, &[], &[]),
            ),
            (
                "location-changed",
                event(
                    Family::ServiceLocations,
                    Updated,
                    &[("AddressLine1", "1 Main St")],
                    &[("AddressLine1", None, Some("1 Main St"))],
                ),
                event(
                    Family::ServiceLocations,
                    Updated,
                    &[("AddressLine1", "1 Main St")],
                    &[("City", Some("A"), Some("B"))],
                ),
            ),
            (
                "procedure-code-retired",
                event(
                    Family::ProcedureCodes,
                    Deleted,
                    &[("Active", "false")],
                    &[("Active", Some("true"), Some("false"))],
                ),
                event(
                    Family::ProcedureCodes,
                    Updated,
                    &[("Active", "true")],
                    &[("Active", Some("false"), Some("true"))],
                ),
            ),
        ];
        for (name, yes, no) in &cases {
            assert_eq!(fired(&m, yes), vec![name.to_string()], "{name} should fire");
            assert!(
                fired(&m, no).is_empty(),
                "{name} should not fire on the near miss"
            );
            // The same record under every other family fires nothing of this rule.
            for f in Family::ALL.into_iter().filter(|f| *f != yes.family) {
                let other = ChangeEvent {
                    family: f,
                    ..yes.clone()
                };
                assert!(
                    !fired(&m, &other).contains(&name.to_string()),
                    "{name} fired on {f}"
                );
            }
        }
    }

    const CANCEL: &str = "rules:
  - name: cb
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_to: Cancelled }
    task: { list: Front Desk, description: 'Call {PatientFullName}' }
";

    #[test]
    fn changed_to_fires_only_on_the_transition() {
        let m = parse(CANCEL);
        let rec = [("ConfirmationStatus", "Cancelled")];
        let became = event(
            Family::Appointments,
            Updated,
            &rec,
            &[("ConfirmationStatus", Some("Scheduled"), Some("Cancelled"))],
        );
        assert_eq!(fired(&m, &became), ["cb"]);
        let from_absent = event(
            Family::Appointments,
            Updated,
            &rec,
            &[("ConfirmationStatus", None, Some("Cancelled"))],
        );
        assert_eq!(fired(&m, &from_absent), ["cb"]);
        // Already Cancelled; another field changes.
        let other = event(
            Family::Appointments,
            Updated,
            &rec,
            &[("Notes", Some("x"), Some("y"))],
        );
        assert!(fired(&m, &other).is_empty());
        // No snapshot: an update seen for the first time.
        assert!(fired(&m, &event(Family::Appointments, Updated, &rec, &[])).is_empty());
        // Changed away from Cancelled.
        let away = event(
            Family::Appointments,
            Updated,
            &[("ConfirmationStatus", "Scheduled")],
            &[("ConfirmationStatus", Some("Cancelled"), Some("Scheduled"))],
        );
        assert!(fired(&m, &away).is_empty());
        // Never on created, even with changes listed.
        let m = parse(&CANCEL.replace("on: updated", "on: any"));
        let created = event(
            Family::Appointments,
            Created,
            &rec,
            &[("ConfirmationStatus", Some("Scheduled"), Some("Cancelled"))],
        );
        assert!(fired(&m, &created).is_empty());
        assert_eq!(fired(&m, &became), ["cb"]);
    }

    #[test]
    fn changed_from_and_changed_combine() {
        let m = parse(&CANCEL.replace(
            "{ changed_to: Cancelled }",
            "{ changed_from: Scheduled, changed_to: Cancelled }\n      Notes: { changed: true }",
        ));
        let r = &m.rules[0];
        assert_eq!(
            r.when,
            vec![
                (
                    "ConfirmationStatus".to_string(),
                    Condition::ChangedFrom("Scheduled".into())
                ),
                (
                    "ConfirmationStatus".to_string(),
                    Condition::ChangedTo("Cancelled".into())
                ),
                ("Notes".to_string(), Condition::Changed),
            ]
        );
        let rec = [("ConfirmationStatus", "Cancelled")];
        let both = event(
            Family::Appointments,
            Updated,
            &rec,
            &[
                ("ConfirmationStatus", Some("Scheduled"), Some("Cancelled")),
                ("Notes", None, Some("n")),
            ],
        );
        assert_eq!(fired(&m, &both), ["cb"]);
        let wrong_from = event(
            Family::Appointments,
            Updated,
            &rec,
            &[
                ("ConfirmationStatus", Some("Confirmed"), Some("Cancelled")),
                ("Notes", None, Some("n")),
            ],
        );
        assert!(fired(&m, &wrong_from).is_empty());
        // Absent ↔ empty is no change.
        let empty = event(
            Family::Appointments,
            Updated,
            &rec,
            &[
                ("ConfirmationStatus", Some("Scheduled"), Some("Cancelled")),
                ("Notes", None, Some("")),
            ],
        );
        assert!(fired(&m, &empty).is_empty());
    }

    #[test]
    fn equals_in_matches_and_shorthands() {
        let m = parse(
            "rules:
  - name: eq
    interface: charges
    on: any
    when: { Status: { equals: Open }, ProcedureCode: '99213' }
    task: { list: L, description: d }
  - name: in
    interface: charges
    on: any
    when:
      Status: { in: [Open, Pending] }
      Units: [1, 2]
    task: { list: L, description: d }
  - name: re
    interface: charges
    on: any
    when:
      ProcedureCode: { matches: '^992[0-9]{2}$' }
      Status: { in: [Open], equals: Open }
    task: { list: L, description: d }
  - name: empty
    interface: charges
    on: any
    when:
      LineNote: ''
    task: { list: L, description: d }
",
        );
        assert_eq!(
            m.rules[1].when[1],
            (
                "Units".to_string(),
                Condition::In(vec!["1".into(), "2".into()])
            )
        );
        assert_eq!(
            m.rules[0].when[1],
            (
                "ProcedureCode".to_string(),
                Condition::Equals("99213".into())
            )
        );
        let ch = |s: &str, code: &str, units: &str| {
            event(
                Family::Charges,
                Updated,
                &[("Status", s), ("ProcedureCode", code), ("Units", units)],
                &[],
            )
        };
        assert_eq!(
            fired(&m, &ch("Open", "99213", "1")),
            ["eq", "in", "re", "empty"]
        );
        assert_eq!(fired(&m, &ch("Pending", "99213", "2")), ["in", "empty"]);
        assert_eq!(fired(&m, &ch("Open", "99214", "3")), ["re", "empty"]);
        assert_eq!(fired(&m, &ch("Open", "x99214", "3")), ["empty"]);
        let noted = event(Family::Charges, Updated, &[("LineNote", "n")], &[]);
        assert!(fired(&m, &noted).is_empty());
    }

    #[test]
    fn on_any_and_deleted() {
        let yaml = "rules:
  - { name: gone, interface: appointments, on: deleted, task: { list: L, description: 'Removed {ID}' } }
  - { name: all, interface: appointments, on: any, task: { list: L, description: d } }
  - { name: new, interface: appointments, on: created, task: { list: L, description: d } }
";
        let m = parse(yaml);
        let e = |k| event(Family::Appointments, k, &[], &[]);
        assert_eq!(fired(&m, &e(Deleted)), ["gone", "all"]);
        assert_eq!(fired(&m, &e(Updated)), ["all"]);
        assert_eq!(fired(&m, &e(Created)), ["all", "new"]);
        assert!(fired(&m, &event(Family::Patients, Deleted, &[], &[])).is_empty());
    }

    #[test]
    fn templates_render_with_escapes_and_absent_members() {
        let t = Template::parse(
            "Call {PatientFullName} {{now}} re {StartDate} ({record_id}/{family}/{kind}) }}{{",
            Family::Appointments,
        )
        .unwrap();
        let rec: BTreeMap<String, String> = [("PatientFullName", "Ann Lee"), ("ID", "7")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            t.render(&rec),
            "Call Ann Lee {now} re  (7/appointments/) }{"
        );
        let mut e = event(Family::Appointments, Updated, &[], &[]);
        e.record = rec;
        assert_eq!(
            t.render_event(&e),
            "Call Ann Lee {now} re  (42/appointments/updated) }{"
        );
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["PatientFullName", "StartDate"]
        );
        assert_eq!(
            t.as_str(),
            "Call {PatientFullName} {{now}} re {StartDate} ({record_id}/{family}/{kind}) }}{{"
        );

        for (bad, why) in [
            ("a {ID", "unclosed '{'"),
            ("a } b", "a single '}'"),
            ("a {} b", "empty placeholder"),
            ("{ID {x}", "unclosed '{'"),
        ] {
            let es = Template::parse(bad, Family::Appointments).unwrap_err();
            assert!(es.iter().any(|e| e.contains(why)), "{bad}: {es:?}");
        }
        let es = Template::parse("{patientfullname} {Nope}", Family::Appointments).unwrap_err();
        assert_eq!(es.len(), 2, "{es:?}");
        assert!(
            es[0].contains("did you mean 'PatientFullName'? field names are case-sensitive"),
            "{es:?}"
        );
    }

    // ---- bad configs: every problem reported with file, line and reason ----

    const BASE: &str = "tenant: acme
rules:
  - name: cancelled-appointment-callback
    interface: appointments
    on: updated
    when:
      ConfirmationStatus: { changed_to: Cancelled }
    task:
      list: Front Desk
      group: Callbacks
      description: \"Call {PatientFullName} to reschedule {StartDate}\"
      assignee: frontdesk@acme.example
      due: 1d
      priority: HIGH
      patient: true
";

    #[test]
    fn the_base_config_is_good() {
        let m = parse(BASE);
        let r = &m.rules[0];
        assert_eq!(
            (r.name.as_str(), r.interface, r.on, r.line),
            (
                "cancelled-appointment-callback",
                Family::Appointments,
                On::Updated,
                3
            )
        );
        assert_eq!(r.task.assignee.as_deref(), Some("frontdesk@acme.example"));
        assert_eq!(r.task.group.as_deref(), Some("Callbacks"));
        assert!(r.task.patient);
        assert!(parse("tenant: x\n").is_empty());
        assert!(parse("rules:\n").is_empty());
        assert!(parse("rules: []\n").is_empty());
    }

    #[test]
    fn unknown_interface() {
        let e = one_error(&BASE.replace("interface: appointments", "interface: appointment"), 4, "rules[0] cancelled-appointment-callback: interface: unknown interface 'appointment' (did you mean 'appointments'? expected practices, providers,");
        assert!(e.to_string().starts_with("t.yaml:4: rules[0]"), "{e}");
    }

    #[test]
    fn unknown_field_with_a_case_hint() {
        one_error(
            &BASE.replace("ConfirmationStatus:", "Confirmationstatus:"),
            7,
            "rules[0] cancelled-appointment-callback: when.Confirmationstatus: appointments has no field 'Confirmationstatus' (did you mean 'ConfirmationStatus'? field names are case-sensitive)",
        );
        one_error(&BASE.replace("ConfirmationStatus:", "Colour:"), 7, "appointments has no field 'Colour' (fields are the members of Kareo's AppointmentData)");
        // A field of another family.
        one_error(
            &BASE.replace("ConfirmationStatus:", "EncounterStatus:"),
            7,
            "appointments has no field 'EncounterStatus'",
        );
    }

    #[test]
    fn unknown_condition() {
        one_error(
            &BASE.replace("changed_to:", "changed_too:"),
            7,
            "rules[0] cancelled-appointment-callback: when.ConfirmationStatus: unknown condition 'changed_too' (expected equals, in, changed, changed_from, changed_to, matches)",
        );
    }

    #[test]
    fn condition_on_a_nested_member() {
        let yaml = "rules:
  - name: p
    interface: patients
    on: any
    when:
      Cases: { changed: true }
    task: { list: L, description: d }
";
        one_error(
            yaml,
            6,
            "rules[0] p: when.Cases: 'Cases' of patients is a nested record, not a simple field",
        );
    }

    #[test]
    fn bad_condition_values() {
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ matches: '(Cancel' }"),
            7,
            "when.ConfirmationStatus.matches: not a valid regular expression: unclosed group",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ changed: false }"),
            7,
            "when.ConfirmationStatus.changed: expected true",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ in: [] }"),
            7,
            "when.ConfirmationStatus.in: the list is empty",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ in: Cancelled }"),
            7,
            "when.ConfirmationStatus.in: expected a list of values",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ }"),
            7,
            "when.ConfirmationStatus: empty condition",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ equals: }"),
            7,
            "when.ConfirmationStatus.equals: a value is required",
        );
        one_error(
            &BASE.replace(
                "{ changed_to: Cancelled }",
                "\n        changed_to: { a: b }",
            ),
            8,
            "when.ConfirmationStatus.changed_to: expected a single value, not a mapping",
        );
        // A number YAML would not write back the same must be quoted; the value is not echoed.
        let e = one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ equals: 1.50 }"),
            7,
            "when.ConfirmationStatus.equals: quote this value",
        );
        assert!(!e.reason.contains("1.5"), "{e}");
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ in: [1, 007] }"),
            7,
            "quote this value",
        );
        one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ equals: True }"),
            7,
            "reads it as a boolean",
        );
        // Canonical numbers and booleans and quoted text are fine.
        let m = parse(&BASE.replace(
            "{ changed_to: Cancelled }",
            "{ in: [12, -3, true, '1.50'] }",
        ));
        assert_eq!(
            m.rules[0].when[0].1,
            Condition::In(vec!["12".into(), "-3".into(), "true".into(), "1.50".into()])
        );
        let e = one_error(
            &BASE.replace("{ changed_to: Cancelled }", "{ matches: '[secret' }"),
            7,
            "not a valid regular expression",
        );
        assert!(!e.reason.contains("secret"), "{e}");
    }

    #[test]
    fn unknown_placeholder() {
        one_error(
            &BASE.replace("{StartDate}", "{StartTime}"),
            11,
            "rules[0] cancelled-appointment-callback: task.description: unknown placeholder {StartTime}: appointments has no field 'StartTime' (did you mean 'StartDate'?)",
        );
        one_error(
            &BASE.replace("{StartDate}", "{StartDate"),
            11,
            "task.description: an unclosed '{'",
        );
    }

    #[test]
    fn unknown_priority() {
        one_error(&BASE.replace("priority: HIGH", "priority: high"), 14, "rules[0] cancelled-appointment-callback: task.priority: unknown priority 'high' (did you mean 'HIGH'? expected HIGH, MEDIUM, LOW, NONE)");
        one_error(
            &BASE.replace("priority: HIGH", "priority: URGENT"),
            14,
            "unknown priority 'URGENT' (expected HIGH, MEDIUM, LOW, NONE)",
        );
        for (p, want) in [
            ("MEDIUM", Priority::Medium),
            ("LOW", Priority::Low),
            ("NONE", Priority::None),
        ] {
            assert_eq!(
                parse(&BASE.replace("HIGH", p)).rules[0].task.priority,
                Some(want)
            );
        }
    }

    #[test]
    fn bad_due() {
        one_error(&BASE.replace("due: 1d", "due: one day"), 13, "rules[0] cancelled-appointment-callback: task.due: 'one day' is not a duration (e.g. 30m, 4h, 1d)");
        one_error(
            &BASE.replace("due: 1d", "due: 30"),
            13,
            "task.due: '30' is not a duration",
        );
        assert_eq!(
            parse(&BASE.replace("due: 1d", "due: 30m")).rules[0]
                .task
                .due,
            Some(Duration::from_secs(1800))
        );
    }

    #[test]
    fn list_name_required_and_not_empty() {
        one_error(
            &BASE.replace("list: Front Desk", "list: ''"),
            9,
            "rules[0] cancelled-appointment-callback: task.list must not be empty",
        );
        one_error(
            &BASE.replace("list: Front Desk", "list: '   '"),
            9,
            "task.list must not be empty",
        );
        one_error(
            &BASE.replace("      list: Front Desk\n", ""),
            8,
            "task.list is required",
        );
        one_error(
            &BASE.replace("group: Callbacks", "group: ''"),
            10,
            "task.group must not be empty",
        );
    }

    #[test]
    fn duplicate_rule_names() {
        let yaml = format!("{BASE}{}", &BASE["tenant: acme\nrules:\n".len()..]);
        one_error(
            &yaml,
            16,
            "rules[1] cancelled-appointment-callback: duplicate rule name (first used at line 3)",
        );
    }

    #[test]
    fn workflow_conflicts_with_task_only_options() {
        let yaml = BASE.replace(
            "      group: Callbacks\n",
            "      group: Callbacks\n      workflow: Reschedule SmartFlow\n",
        );
        let es = errors(&yaml);
        let got: Vec<(Option<usize>, &str)> =
            es.iter().map(|e| (e.line, e.reason.as_str())).collect();
        assert_eq!(got.len(), 3, "{es:#?}");
        for ((line, reason), (want_line, key)) in
            got.iter()
                .zip([(13, "assignee"), (14, "due"), (15, "priority")])
        {
            assert_eq!(*line, Some(want_line));
            assert_eq!(*reason, format!("rules[0] cancelled-appointment-callback: task.{key} does not apply with task.workflow (the template's tasks carry their own assignees, due dates and priorities)"));
        }
        // A template by id: a UUID, with the same rules as by name.
        let by_id = "rules:
  - name: flow
    interface: appointments
    on: updated
    task:
      list: Front Desk
      group: G
      workflow_id: 5D0C0000-0000-4000-8000-000000000007
";
        let m = parse(by_id);
        assert!(m.rules[0].task.deploys());
        assert_eq!(
            m.rules[0].task.workflow_id.as_deref(),
            Some("5d0c0000-0000-4000-8000-000000000007")
        );
        one_error(
            &by_id.replace("5D0C0000-0000-4000-8000-000000000007", "Intake"),
            8,
            "rules[0] flow: task.workflow_id must be a Dock template id",
        );
        one_error(
            &by_id.replace("      group: G\n", ""),
            7,
            "rules[0] flow: task.workflow needs task.group",
        );
        // A workflow needs a group; the description is optional with it.
        let yaml = "rules:
  - name: flow
    interface: appointments
    on: updated
    task:
      list: Front Desk
      workflow: Reschedule SmartFlow
";
        one_error(yaml, 7, "rules[0] flow: task.workflow needs task.group");
        let m = parse(&yaml.replace("      workflow", "      group: G\n      workflow"));
        assert!(m.rules[0].task.description.is_empty());
        let m = parse(&yaml.replace(
            "      workflow",
            "      group: G\n      description: 'Reschedule {PatientFullName}'\n      workflow",
        ));
        assert_eq!(
            m.rules[0].task.description.as_str(),
            "Reschedule {PatientFullName}"
        );
    }

    #[test]
    fn assignee_must_be_an_email() {
        for bad in [
            "frontdesk",
            "front desk@acme.example",
            "a@b",
            "@acme.example",
            "a@@acme.example",
            "a@acme..example",
            "a@acme.example.",
        ] {
            let e = one_error(
                &BASE.replace("frontdesk@acme.example", &format!("'{bad}'")),
                12,
                "rules[0] cancelled-appointment-callback: task.assignee is not an email address",
            );
            assert!(!e.reason.contains(bad), "{e}");
        }
        assert_eq!(
            parse(&BASE.replace("frontdesk@acme.example", "a.b+c@x.acme.example")).rules[0]
                .task
                .assignee
                .as_deref(),
            Some("a.b+c@x.acme.example")
        );
    }

    #[test]
    fn structural_problems() {
        one_error(&BASE.replace("on: updated", "on: update"), 5, "rules[0] cancelled-appointment-callback: on: unknown change kind 'update' (expected created, updated, deleted, any)");
        one_error(&BASE.replace("    on: updated\n", ""), 3, "on is required");
        one_error(
            &BASE.replace("    interface: appointments\n", ""),
            3,
            "rules[0] cancelled-appointment-callback: interface is required",
        );
        one_error(
            &BASE.replace(
                "  - name: cancelled-appointment-callback\n    interface",
                "  - interface",
            ),
            3,
            "rules[0]: name is required",
        );
        one_error(
            &BASE.replace("name: cancelled-appointment-callback", "name: ''"),
            3,
            "rules[0]: name must not be empty",
        );
        one_error(&BASE.replace("    on: updated\n", "    on: updated\n    priority: HIGH\n"), 6, "rules[0] cancelled-appointment-callback: unknown key 'priority' (expected name, interface, on, when, task)");
        one_error(
            &BASE.replace("      due: 1d", "      deu: 1d"),
            13,
            "task: unknown key 'deu' (did you mean 'due'? expected list, group, workflow,",
        );
        one_error(
            &BASE.replace("      patient: true", "      patient: yes"),
            15,
            "task.patient: expected true or false",
        );
        one_error(
            &BASE.replace(
                r#"      description: "Call {PatientFullName} to reschedule {StartDate}""#,
                "",
            ),
            8,
            "task.description is required",
        );
        one_error(
            &BASE.replace(
                r#""Call {PatientFullName} to reschedule {StartDate}""#,
                "' '",
            ),
            11,
            "task.description must not be empty",
        );
        one_error(
            "rules:\n  - name: x\n    interface: payments\n    on: any\n",
            2,
            "rules[0] x: task is required",
        );
        one_error("rules:\n  - just text\n", 2, "rules[0]: expected a mapping");
        one_error(
            "rules:\n  - { name: x, interface: payments, on: any, task: [a] }\n",
            2,
            "rules[0] x: task: expected a mapping",
        );
        one_error("rules:\n  - { name: x, interface: payments, on: any, when: [a], task: { list: L, description: d } }\n", 2, "rules[0] x: when: expected a mapping");
        one_error(
            "tenant: a\nrules: {}\n",
            2,
            "rules: expected a list of rules",
        );
        one_error("tenant: a\nrules:\n  - name: [x\n", 4, "not valid YAML");
    }

    #[test]
    fn three_problems_are_all_reported_in_line_order() {
        let yaml = BASE
            .replace("priority: HIGH", "priority: HIHG")
            .replace("interface: appointments", "interface: apointments")
            .replace("due: 1d", "due: soon");
        let es = errors(&yaml);
        let lines: Vec<Option<usize>> = es.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(4), Some(13), Some(14)], "{es:#?}");
        assert!(es[0]
            .reason
            .contains("unknown interface 'apointments' (did you mean 'appointments'?"));
        assert!(es[1].reason.contains("task.due: 'soon' is not a duration"));
        assert!(es[2]
            .reason
            .contains("unknown priority 'HIHG' (did you mean 'HIGH'?"));
        // With the interface unknown, fields and placeholders cannot be checked, but the rest is.
        let yaml = BASE
            .replace("interface: appointments", "interface: nope")
            .replace("{StartDate}", "{Bogus}");
        assert_eq!(errors(&yaml).len(), 1);
        // Problems across rules.
        let two = format!(
            "{BASE}{}",
            BASE["tenant: acme\nrules:\n".len()..]
                .replace("callback", "2")
                .replace("changed_to:", "chnged_to:")
        );
        let es = errors(&two.replace("list: Front Desk", "list: ''"));
        assert_eq!(es.len(), 3, "{es:#?}");
        assert!(
            es[2]
                .reason
                .starts_with("rules[1] cancelled-appointment-2: "),
            "{es:#?}"
        );
    }

    #[test]
    fn the_issue_example_reads_with_workflow_options_rejected() {
        // The issue's example, verbatim: with `workflow`, assignee/due/priority are errors.
        let yaml = "rules:
  - name: cancelled-appointment-callback
    interface: appointments          # a family
    on: updated                      # created | updated | any | deleted
    when:                            # all must hold; Kareo's own field names
      ConfirmationStatus: { changed_to: Cancelled }   # equals / in / changed / changed_from / changed_to / matches
    task:
      list: Front Desk               # Dock task list, by name
      group: Callbacks               # optional task group, by name
      workflow: Reschedule SmartFlow # optional: deploy this workflow/SmartFlow template instead of one task
      description: \"Call {PatientFullName} to reschedule {StartDate}\"
      assignee: frontdesk@acme.example   # optional, a Dock user's email
      due: 1d                        # optional offset
      priority: HIGH                 # optional
      patient: true                  # link the Dock patient (find by MRN = Kareo PatientID, else create)
";
        assert_eq!(errors(yaml).len(), 3);
        let without = yaml.replace("      workflow: Reschedule SmartFlow # optional: deploy this workflow/SmartFlow template instead of one task\n", "");
        assert_eq!(parse(&without).rules.len(), 1);
    }
}
