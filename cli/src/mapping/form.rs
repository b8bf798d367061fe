//! The practice's mapping form (Dock's page: *Kareo Interface → Dock Workflow/SmartFlow Name →
//! Dock Task List Name*), read as a CSV file or a Markdown table, turned into the tenant's
//! `rules:`, and written back from them.
//!
//! Columns, by header (case, spaces and punctuation ignored): **Kareo Interface**, **Dock
//! Workflow/SmartFlow Name**, **Dock Task List Name** (the page's), **Task Group** and
//! **Default Assignee** (Dock's other integration forms), and this product's own: **When** (a
//! short condition, below), **Task Description** (the task's title, `{Field}` placeholders;
//! default `Kareo <family> {kind}: {record_id}`, no record content) and **Rule** (the rule's
//! name; default: made from the row's content, so reordering rows keeps each rule's ledger).
//!
//! *When* is clauses joined by `and`: a change kind (`created`, `updated`, `deleted`, `any`)
//! and conditions on Kareo's field names — `F changed`, `F changed to X`, `F changed from X`,
//! `F changed from X to Y`, `F is X`, `F is one of X, Y`, `F matches RE`. Without a kind a row
//! fires on `created`, or on `updated` when it names a transition. Values may be quoted.

use std::collections::BTreeMap;

use domain::hooks::HookRule;
use domain::mapping::{Condition, Mapping, On, Rule};
use domain::op::Op;
use kareo::Family;

/// A column of the form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// *Kareo Interface*.
    Interface,
    /// *Dock Workflow/SmartFlow Name*.
    Workflow,
    /// *Dock Task List Name*.
    List,
    /// *Task Group*.
    Group,
    /// *Default Assignee*.
    Assignee,
    /// *When*.
    When,
    /// *Task Description*.
    Description,
    /// *Rule*.
    Rule,
}

impl Column {
    /// Every column, in the order `export` writes them.
    pub const ALL: [Column; 8] = [
        Column::Interface,
        Column::Workflow,
        Column::List,
        Column::Group,
        Column::Assignee,
        Column::When,
        Column::Description,
        Column::Rule,
    ];

    /// The header as written.
    pub fn header(self) -> &'static str {
        match self {
            Column::Interface => "Kareo Interface",
            Column::Workflow => "Dock Workflow/SmartFlow Name",
            Column::List => "Dock Task List Name",
            Column::Group => "Task Group",
            Column::Assignee => "Default Assignee",
            Column::When => "When",
            Column::Description => "Task Description",
            Column::Rule => "Rule",
        }
    }

    fn of_header(h: &str) -> Option<Column> {
        Some(match squash(h).as_str() {
            "kareointerface" | "interface" => Column::Interface,
            "dockworkflowsmartflowname"
            | "dockworkflowname"
            | "workflowsmartflowname"
            | "workflow"
            | "smartflow" => Column::Workflow,
            "docktasklistname" | "tasklistname" | "tasklist" | "list" => Column::List,
            "taskgroup" | "group" | "docktaskgroup" => Column::Group,
            "defaultassignee" | "assignee" => Column::Assignee,
            "when" | "condition" => Column::When,
            "taskdescription" | "description" | "tasktitle" => Column::Description,
            "rule" | "rulename" => Column::Rule,
            _ => return None,
        })
    }
}

/// Lowercase letters and digits only.
fn squash(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A problem with the form, placed by line (of the form file) and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Line of the row in the form (1-based); the header's for a header problem.
    pub line: usize,
    /// The column, when one is at fault.
    pub column: Option<Column>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, {}: {}", self.line, c.header(), self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// One row: its line and its cells by column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormRow {
    /// Line in the form (1-based).
    pub line: usize,
    /// Non-empty cells.
    pub cells: BTreeMap<Column, String>,
}

impl FormRow {
    fn get(&self, c: Column) -> Option<&str> {
        self.cells.get(&c).map(String::as_str)
    }
}

/// Reads the form: a Markdown table when its first non-blank line starts with `|`, else CSV.
pub fn read_table(text: &str) -> Result<Vec<FormRow>, Vec<Problem>> {
    let markdown = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('|'));
    let records: Vec<(usize, Vec<String>)> = if markdown {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with('|'))
            .map(|(i, l)| {
                let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
                (
                    i + 1,
                    inner
                        .split('|')
                        .map(|c| c.trim().to_string())
                        .collect::<Vec<String>>(),
                )
            })
            // The `|---|:---:|` line under the header.
            .filter(|(_, cells)| {
                !cells
                    .iter()
                    .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
            })
            .collect()
    } else {
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut out = Vec::new();
        for rec in rd.records() {
            let rec = rec.map_err(|e| {
                vec![Problem {
                    line: e.position().map_or(0, |p| p.line() as usize),
                    column: None,
                    reason: "not readable as CSV".into(),
                }]
            })?;
            let line = rec.position().map_or(0, |p| p.line() as usize);
            out.push((line, rec.iter().map(str::to_string).collect()));
        }
        out
    };
    let mut records = records
        .into_iter()
        .filter(|(_, cells)| cells.iter().any(|c| !c.is_empty()));
    let Some((hline, header)) = records.next() else {
        return Err(vec![Problem {
            line: 1,
            column: None,
            reason: "the form is empty".into(),
        }]);
    };
    let mut problems = Vec::new();
    let columns: Vec<Option<Column>> = header
        .iter()
        .map(|h| {
            let c = Column::of_header(h);
            if c.is_none() && !h.is_empty() {
                problems.push(Problem {
                    line: hline,
                    column: None,
                    reason: format!(
                        "unknown column '{h}' (expected {})",
                        Column::ALL.map(Column::header).join(", ")
                    ),
                });
            }
            c
        })
        .collect();
    for need in [Column::Interface, Column::List] {
        if !columns.contains(&Some(need)) {
            problems.push(Problem {
                line: hline,
                column: None,
                reason: format!("no '{}' column", need.header()),
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(records
        .map(|(line, cells)| FormRow {
            line,
            cells: columns
                .iter()
                .zip(cells)
                .filter_map(|(c, v)| Some(((*c)?, v)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        })
        .collect())
}

/// What an interface of the page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// A read: a family whose changes fire rules.
    Read(Family),
    /// A write (`Create Patient`, …): driven by a Dock event, not by Kareo's changes.
    Write(Op),
}

/// The page's names of the read interfaces, by family (what `export` writes).
fn page_name(f: Family) -> &'static str {
    match f {
        Family::Appointments => "Appointments (bulk)",
        Family::Patients => "Patients (bulk)",
        Family::Charges => "Charges",
        Family::Encounters => "Encounter Details",
        Family::Payments => "Payments",
        Family::Transactions => "Transactions",
        Family::Practices => "Practices",
        Family::Providers => "Providers",
        Family::ServiceLocations => "Service Locations",
        Family::ProcedureCodes => "Procedure Codes",
    }
}

const READS: [(&str, Family); 22] = [
    ("appointmentsingle", Family::Appointments),
    ("appointmentsbulk", Family::Appointments),
    ("appointments", Family::Appointments),
    ("appointment", Family::Appointments),
    ("patientsingle", Family::Patients),
    ("patientsbulk", Family::Patients),
    ("patients", Family::Patients),
    ("patient", Family::Patients),
    ("charges", Family::Charges),
    ("charge", Family::Charges),
    ("encounterdetails", Family::Encounters),
    ("encounters", Family::Encounters),
    ("encounter", Family::Encounters),
    ("payments", Family::Payments),
    ("payment", Family::Payments),
    ("transactions", Family::Transactions),
    ("practices", Family::Practices),
    ("providers", Family::Providers),
    ("servicelocations", Family::ServiceLocations),
    ("servicelocation", Family::ServiceLocations),
    ("procedurecodes", Family::ProcedureCodes),
    ("procedurecode", Family::ProcedureCodes),
];

const WRITES: [(&str, Op); 11] = [
    ("createappointment", Op::CreateAppointment),
    ("createpatient", Op::CreatePatient),
    ("createencounter", Op::CreateEncounter),
    ("createpayment", Op::CreatePayment),
    ("updatepatient", Op::UpdatePatient),
    ("updatepatientrecords", Op::UpdatePatient),
    ("updatingpatientrecords", Op::UpdatePatient),
    ("updatingpatientrecordsinkareo", Op::UpdatePatient),
    ("deleteappointment", Op::DeleteAppointment),
    ("deleteappointments", Op::DeleteAppointment),
    ("updateappointment", Op::UpdateAppointment),
];

/// The page's name of a write interface (what `export` writes).
fn write_name(op: Op) -> &'static str {
    match op {
        Op::CreatePatient => "Create Patient",
        Op::UpdatePatient => "Update Patient",
        Op::CreateAppointment => "Create Appointment",
        Op::DeleteAppointment => "Delete Appointment",
        Op::CreateEncounter => "Create Encounter",
        Op::CreatePayment => "Create Payment",
        Op::UpdateAppointment => "Update Appointment",
        Op::UpdateEncounterStatus => "Update Encounter Status",
    }
}

/// What a write row's data is, filled from the Dock task's patient and the product's links:
/// the writes a form row can drive. The others need values the form has no column for.
fn write_data(op: Op) -> Option<Vec<(&'static str, &'static str)>> {
    let contact = [
        ("email", "{patient.email}"),
        ("home_phone", "{patient.phoneHome}"),
        ("mobile_phone", "{patient.phoneMobile}"),
    ];
    Some(match op {
        Op::CreatePatient => [
            ("first_name", "{patient.firstName}"),
            ("last_name", "{patient.lastName}"),
            ("date_of_birth", "{patient.dob}"),
            ("gender", "{patient.gender}"),
        ]
        .into_iter()
        .chain(contact)
        .collect(),
        Op::UpdatePatient => std::iter::once(("patient_id", "{link.patient_id}"))
            .chain(contact)
            .collect(),
        Op::DeleteAppointment => vec![("appointment_id", "{link.appointment_id}")],
        _ => return None,
    })
}

/// The Dock events a write row's *When* may name.
const DOCK_EVENTS: [(&str, &str); 3] = [
    ("task completed", "MARK_COMPLETE"),
    ("task created", "CREATE_TASK"),
    ("task status changed", "UPDATE_TASK_STATUS"),
];

/// The interface a form names, or why not (with the nearest name the page uses).
pub fn interface(name: &str) -> Result<Interface, String> {
    let s = squash(name);
    if let Some((_, f)) = READS.iter().find(|(n, _)| *n == s) {
        return Ok(Interface::Read(*f));
    }
    if let Some((_, op)) = WRITES.iter().find(|(n, _)| *n == s) {
        return Ok(Interface::Write(*op));
    }
    let known = READS
        .iter()
        .map(|(_, f)| page_name(*f))
        .chain(["Create Appointment", "Create Patient", "Create Encounter"])
        .chain(["Create Payment", "Update Patient", "Delete Appointment"]);
    let nearest = known
        .map(|k| (strsim::levenshtein(&squash(k), &s), k))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= 4)
        .map(|(_, k)| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default();
    Err(format!("unknown interface '{name}'{nearest}"))
}

/// A condition as the form writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cond {
    Equals(String),
    In(Vec<String>),
    Changed,
    ChangedFrom(String),
    ChangedTo(String),
    Matches(String),
}

impl Cond {
    fn transition(&self) -> bool {
        matches!(
            self,
            Cond::Changed | Cond::ChangedFrom(_) | Cond::ChangedTo(_)
        )
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// What *When* says: the change kind (if given) and the conditions on fields.
type When = (Option<On>, Vec<(String, Cond)>);

/// Reads *When*.
fn read_when(text: &str) -> Result<When, String> {
    let mut on = None;
    let mut conds = Vec::new();
    for clause in split_and(text) {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let lower = clause.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "created" | "new" => Some(On::Created),
            "updated" | "changed" => Some(On::Updated),
            "deleted" | "removed" | "cancelled record" => Some(On::Deleted),
            "any" | "any change" => Some(On::Any),
            _ => None,
        };
        if let Some(k) = kind {
            if on.is_some_and(|o| o != k) {
                return Err("names two change kinds".into());
            }
            on = Some(k);
            continue;
        }
        let (field, rest) = clause
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("'{clause}' is not a condition (e.g. `Status changed to X`)"))?;
        if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("'{field}' is not a Kareo field name"));
        }
        let rest = rest.trim();
        let rl = rest.to_ascii_lowercase();
        let after = |prefix: &str| rest[prefix.len()..].trim();
        let field = field.to_string();
        if rl == "changed" {
            conds.push((field, Cond::Changed));
        } else if rl.starts_with("changed from ") {
            let v = after("changed from ");
            match find_word(v, "to") {
                Some((from, to)) => {
                    conds.push((field.clone(), Cond::ChangedFrom(unquote(from))));
                    conds.push((field, Cond::ChangedTo(unquote(to))));
                }
                None => conds.push((field, Cond::ChangedFrom(unquote(v)))),
            }
        } else if rl.starts_with("changed to ") {
            conds.push((field, Cond::ChangedTo(unquote(after("changed to ")))));
        } else if rl.starts_with("is one of ") {
            let list = after("is one of ").split(',').map(unquote).collect();
            conds.push((field, Cond::In(list)));
        } else if rl.starts_with("in ") {
            let list = after("in ").split(',').map(unquote).collect();
            conds.push((field, Cond::In(list)));
        } else if rl.starts_with("is ") {
            conds.push((field, Cond::Equals(unquote(after("is ")))));
        } else if rl.starts_with("equals ") {
            conds.push((field, Cond::Equals(unquote(after("equals ")))));
        } else if let Some(v) = rest.strip_prefix('=') {
            conds.push((field, Cond::Equals(unquote(v))));
        } else if rl.starts_with("matches ") {
            conds.push((field, Cond::Matches(unquote(after("matches ")))));
        } else {
            return Err(format!(
                "'{clause}' is not a condition (expected `{field} changed`, `changed to X`, `changed from X to Y`, `is X`, `is one of X, Y` or `matches RE`)"
            ));
        }
    }
    Ok((on, conds))
}

/// Splits on the word `and` outside quotes.
fn split_and(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote = None;
    let words: Vec<&str> = text.split(' ').collect();
    for w in words {
        if quote.is_none() && w.eq_ignore_ascii_case("and") {
            out.push(String::new());
            continue;
        }
        for c in w.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                None if c == '"' || c == '\'' => quote = Some(c),
                _ => {}
            }
        }
        let last = out.last_mut().expect("one part");
        if !last.is_empty() {
            last.push(' ');
        }
        last.push_str(w);
    }
    out
}

/// `a to b` → (`a`, `b`) at the first standalone `to`.
fn find_word<'a>(text: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let needle = format!(" {word} ");
    let i = text.to_ascii_lowercase().find(&needle)?;
    Some((&text[..i], &text[i + needle.len()..]))
}

/// A rule made from a row, ready to be written as YAML.
#[derive(Clone, Debug, PartialEq)]
pub struct FormRule {
    /// The row's line in the form.
    pub line: usize,
    /// Rule name.
    pub name: String,
    /// The family.
    pub family: Family,
    on: On,
    when: Vec<(String, Cond)>,
    list: String,
    group: Option<String>,
    workflow: Option<String>,
    assignee: Option<String>,
    description: Option<String>,
}

/// What `import` does with the rows: the rules, the rows that are not rules (writes), and the
/// problems (by line and column).
pub struct Imported {
    /// The rules, in row order.
    pub rules: Vec<FormRule>,
    /// Webhook rules: write rows whose *When* names the Dock event that drives them.
    pub hooks: Vec<FormHook>,
    /// Write rows that are not automatable from the form: (line, interface, why).
    pub writes: Vec<(usize, String, String)>,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

fn slug(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts.iter().filter(|p| !p.is_empty()) {
        for w in p
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if !s.is_empty() {
                s.push('-');
            }
            s.push_str(&w.to_ascii_lowercase());
        }
    }
    s.chars()
        .take(72)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// The rules of the rows.
pub fn import(rows: &[FormRow]) -> Imported {
    let mut out = Imported {
        rules: Vec::new(),
        hooks: Vec::new(),
        writes: Vec::new(),
        problems: Vec::new(),
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let mut bad = |column: Column, reason: String| {
            out.problems.push(Problem {
                line: row.line,
                column: Some(column),
                reason,
            })
        };
        let Some(iface) = row.get(Column::Interface) else {
            bad(Column::Interface, "empty".into());
            continue;
        };
        match interface(iface) {
            Ok(Interface::Read(family)) => match task_row(row, family, &mut names) {
                Ok(rule) => out.rules.push(rule),
                Err((column, reason)) => bad(column, reason),
            },
            Ok(Interface::Write(op)) => match write_row(row, op) {
                Ok(h) if unique(&mut names, &h.name) => out.hooks.push(h),
                Ok(h) => bad(
                    Column::Rule,
                    format!("'{}' names another row's rule too", h.name),
                ),
                Err(why) => out.writes.push((row.line, iface.to_string(), why)),
            },
            Err(e) => bad(Column::Interface, e),
        }
    }
    out
}

/// Counts a rule name; whether it is the first of its name.
fn unique(names: &mut BTreeMap<String, usize>, name: &str) -> bool {
    let n = names.entry(name.to_string()).or_insert(0);
    *n += 1;
    *n == 1
}

/// A read row as a task rule, or the column at fault and why.
fn task_row(
    row: &FormRow,
    family: Family,
    names: &mut BTreeMap<String, usize>,
) -> Result<FormRule, (Column, String)> {
    let list = row.get(Column::List).ok_or((
        Column::List,
        "empty: every rule needs a Dock task list".to_string(),
    ))?;
    let workflow = row.get(Column::Workflow).map(str::to_string);
    let group = row.get(Column::Group).map(str::to_string);
    if workflow.is_some() && group.is_none() {
        return Err((
            Column::Group,
            "required with a workflow: Dock deploys a workflow's tasks into a group of the list"
                .into(),
        ));
    }
    let (on, when) =
        read_when(row.get(Column::When).unwrap_or("")).map_err(|e| (Column::When, e))?;
    let on = on.unwrap_or(if when.iter().any(|(_, c)| c.transition()) {
        On::Updated
    } else {
        On::Created
    });
    let base = match row.get(Column::Rule) {
        Some(n) => n.to_string(),
        None => slug(&[
            family.name(),
            workflow.as_deref().unwrap_or(list),
            row.get(Column::When).unwrap_or(""),
        ]),
    };
    let name = if unique(names, &base) {
        base
    } else if row.get(Column::Rule).is_some() {
        return Err((
            Column::Rule,
            format!("'{base}' names another row's rule too"),
        ));
    } else {
        format!("{base}-{}", names[&base])
    };
    Ok(FormRule {
        line: row.line,
        name,
        family,
        on,
        when,
        list: list.to_string(),
        group,
        workflow,
        assignee: row.get(Column::Assignee).map(str::to_string),
        description: row.get(Column::Description).map(str::to_string),
    })
}

/// A webhook rule made from a write row.
#[derive(Clone, Debug, PartialEq)]
pub struct FormHook {
    /// The row's line in the form.
    pub line: usize,
    /// Rule name.
    pub name: String,
    op: Op,
    event: &'static str,
    list: Option<String>,
}

/// A write row as a webhook rule, or why it cannot be one.
fn write_row(row: &FormRow, op: Op) -> Result<FormHook, String> {
    let events = DOCK_EVENTS
        .iter()
        .map(|(p, _)| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if write_data(op).is_none() {
        return Err(format!(
            "{} needs values the form has no column for: write its `webhooks:` rule by hand (docs/write-back.md)",
            op.name()
        ));
    }
    let Some(when) = row.get(Column::When) else {
        return Err(format!(
            "a write needs the Dock event that drives it: write When as {events}"
        ));
    };
    let Some((_, event)) = DOCK_EVENTS
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(when.trim()))
    else {
        return Err(format!(
            "When '{when}' is not a Dock event (expected {events})"
        ));
    };
    let list = row.get(Column::List).map(str::to_string);
    let name = match row.get(Column::Rule) {
        Some(n) => n.to_string(),
        None => slug(&[op.name(), list.as_deref().unwrap_or(""), when]),
    };
    Ok(FormHook {
        line: row.line,
        name,
        op,
        event,
        list,
    })
}

/// The webhook rules as a `webhooks:` section. Rules that change or delete Kareo records get
/// `modify_existing: true`: the form row is the practice's explicit ask, and each such write is
/// cross-checked against the linked patient before it is sent.
pub fn hooks_yaml(hooks: &[FormHook]) -> String {
    let mut y = String::from("webhooks:\n  rules:\n");
    for h in hooks {
        y.push_str(&format!("    - name: {}\n", q(&h.name)));
        y.push_str(&format!("      event: {}\n", h.event));
        if let Some(l) = &h.list {
            y.push_str(&format!("      list: {}\n", q(l)));
        }
        y.push_str(&format!("      op: {}\n", h.op.name()));
        if h.op != Op::CreatePatient {
            y.push_str("      modify_existing: true\n");
        }
        y.push_str("      data:\n");
        for (k, v) in write_data(h.op).unwrap_or_default() {
            y.push_str(&format!("        {k}: {}\n", q(v)));
        }
    }
    y
}

/// Whether a data template is exactly the one placeholder `{source.key}` of `text`.
fn is_ref(t: &domain::hooks::Template, text: &str) -> bool {
    use domain::hooks::{Part, Template};
    let inner = text.trim_start_matches('{').trim_end_matches('}');
    let Some((source, key)) = inner.split_once('.') else {
        return false;
    };
    matches!(t, Template::Text(parts)
        if parts.as_slice() == [Part::Ref(source.to_string(), key.to_string())])
}

/// A webhook rule as the form's row, when it is one a form row makes (the data a row gives).
fn hook_row(h: &HookRule) -> Option<[String; 8]> {
    let data = write_data(h.op)?;
    let same = data.len() == h.data.len()
        && data
            .iter()
            .all(|(k, v)| h.data.get(*k).is_some_and(|t| is_ref(t, v)));
    let [event] = h.events.as_slice() else {
        return None;
    };
    let (phrase, _) = DOCK_EVENTS.iter().find(|(_, e)| e == event)?;
    same.then(|| {
        [
            write_name(h.op).to_string(),
            String::new(),
            h.list.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            phrase.to_string(),
            String::new(),
            h.name.clone(),
        ]
    })
}

/// A YAML scalar: JSON's string syntax is YAML's double-quoted one.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The default title of a task a row makes (no record content: ids and kinds only).
pub fn default_description(f: Family) -> String {
    format!("Kareo {} {{kind}}: {{record_id}}", f.name())
}

/// The rules as the `rules:` section of a tenant file.
pub fn rules_yaml(rules: &[FormRule]) -> String {
    let mut y = String::from("rules:\n");
    for r in rules {
        y.push_str(&format!("  - name: {}\n", q(&r.name)));
        y.push_str(&format!("    interface: {}\n", r.family.name()));
        y.push_str(&format!("    on: {}\n", r.on.name()));
        if !r.when.is_empty() {
            y.push_str("    when:\n");
            let mut by_field: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            let mut order = Vec::new();
            for (f, c) in &r.when {
                if !order.contains(&f.as_str()) {
                    order.push(f.as_str());
                }
                by_field.entry(f).or_default().push(match c {
                    Cond::Equals(x) => format!("equals: {}", q(x)),
                    Cond::In(xs) => format!(
                        "in: [{}]",
                        xs.iter().map(|x| q(x)).collect::<Vec<_>>().join(", ")
                    ),
                    Cond::Changed => "changed: true".into(),
                    Cond::ChangedFrom(x) => format!("changed_from: {}", q(x)),
                    Cond::ChangedTo(x) => format!("changed_to: {}", q(x)),
                    Cond::Matches(x) => format!("matches: {}", q(x)),
                });
            }
            for f in order {
                y.push_str(&format!("      {f}: {{ {} }}\n", by_field[f].join(", ")));
            }
        }
        y.push_str("    task:\n");
        y.push_str(&format!("      list: {}\n", q(&r.list)));
        if let Some(g) = &r.group {
            y.push_str(&format!("      group: {}\n", q(g)));
        }
        if let Some(w) = &r.workflow {
            y.push_str(&format!("      workflow: {}\n", q(w)));
        }
        match (&r.description, &r.workflow) {
            (Some(d), _) => y.push_str(&format!("      description: {}\n", q(d))),
            (None, None) => y.push_str(&format!(
                "      description: {}\n",
                q(&default_description(r.family))
            )),
            (None, Some(_)) => {}
        }
        if let Some(a) = &r.assignee {
            y.push_str(&format!("      assignee: {}\n", q(a)));
        }
    }
    y
}

/// *When* as the form writes it, for a rule.
fn when_text(rule: &Rule) -> String {
    let mut clauses = Vec::new();
    let mut i = 0;
    let w = &rule.when;
    let transition = w.iter().any(|(_, c)| {
        matches!(
            c,
            Condition::Changed | Condition::ChangedFrom(_) | Condition::ChangedTo(_)
        )
    });
    let implied = if transition { On::Updated } else { On::Created };
    if rule.on != implied {
        clauses.push(rule.on.name().to_string());
    }
    let v = |x: &str| {
        if x.contains(" and ") || x.contains(" to ") || x.contains(',') || x.trim() != x {
            format!("\"{x}\"")
        } else {
            x.to_string()
        }
    };
    while i < w.len() {
        let (f, c) = &w[i];
        let text = match c {
            Condition::ChangedFrom(a) => match w.get(i + 1) {
                Some((g, Condition::ChangedTo(b))) if g == f => {
                    i += 1;
                    format!("{f} changed from {} to {}", v(a), v(b))
                }
                _ => format!("{f} changed from {}", v(a)),
            },
            Condition::ChangedTo(b) => format!("{f} changed to {}", v(b)),
            Condition::Changed => format!("{f} changed"),
            Condition::Equals(x) => format!("{f} is {}", v(x)),
            Condition::In(xs) => format!(
                "{f} is one of {}",
                xs.iter().map(|x| v(x)).collect::<Vec<_>>().join(", ")
            ),
            Condition::Matches(re) => format!("{f} matches {}", v(re.as_str())),
        };
        clauses.push(text);
        i += 1;
    }
    clauses.join(" and ")
}

/// The tenant's rules as the form: one row per task rule, then one per webhook rule a form row
/// can make (others are left to the YAML), every column, as a Markdown table or CSV.
pub fn export(mapping: &Mapping, hooks: &[HookRule], markdown: bool) -> String {
    let mut rows: Vec<[String; 8]> = mapping
        .rules
        .iter()
        .map(|r| {
            let t = &r.task;
            let description = t.description.as_str();
            let description = if description == default_description(r.interface)
                || (t.deploys() && description.is_empty())
            {
                String::new()
            } else {
                description.to_string()
            };
            [
                page_name(r.interface).to_string(),
                t.workflow
                    .clone()
                    .or_else(|| t.workflow_id.clone())
                    .unwrap_or_default(),
                t.list.clone(),
                t.group.clone().unwrap_or_default(),
                t.assignee.clone().unwrap_or_default(),
                when_text(r),
                description,
                r.name.clone(),
            ]
        })
        .collect();
    rows.extend(hooks.iter().filter_map(hook_row));
    let header = Column::ALL.map(|c| c.header().to_string());
    if markdown {
        let line = |cells: &[String; 8]| {
            format!(
                "| {} |\n",
                cells
                    .iter()
                    .map(|c| c.replace('|', "\\|"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        let mut out = line(&header);
        out.push_str(&format!("|{}\n", "---|".repeat(8)));
        for r in &rows {
            out.push_str(&line(r));
        }
        out
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&header).expect("in memory");
        for r in &rows {
            w.write_record(r).expect("in memory");
        }
        String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8 in, UTF-8 out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_as_the_page_writes_them() {
        for (name, f) in [
            ("Appointment (single)", Family::Appointments),
            ("Appointments (bulk)", Family::Appointments),
            ("Charges", Family::Charges),
            ("Encounter Details", Family::Encounters),
            ("Patient (single)", Family::Patients),
            ("Patients (bulk)", Family::Patients),
            ("Payments", Family::Payments),
            ("Practices", Family::Practices),
            ("Procedure Codes", Family::ProcedureCodes),
            ("Providers", Family::Providers),
            ("Service Locations", Family::ServiceLocations),
            ("Transactions", Family::Transactions),
            ("service_locations", Family::ServiceLocations),
        ] {
            assert_eq!(interface(name), Ok(Interface::Read(f)), "{name}");
        }
        for (w, op) in [
            ("Create Appointment", Op::CreateAppointment),
            ("Create Patient", Op::CreatePatient),
            ("Create Encounter", Op::CreateEncounter),
            ("Create Payment", Op::CreatePayment),
            ("Updating patient records in Kareo", Op::UpdatePatient),
            ("Delete appointments", Op::DeleteAppointment),
        ] {
            assert_eq!(interface(w), Ok(Interface::Write(op)), "{w}");
        }
        let e = interface("Apointments (bulk)").unwrap_err();
        assert!(e.contains("did you mean 'Appointments (bulk)'"), "{e}");
        assert!(!interface("Lab Results")
            .unwrap_err()
            .contains("did you mean"));
    }

    #[test]
    fn when_reads_kinds_transitions_and_values() {
        let (on, c) = read_when("ConfirmationStatus changed from Scheduled to Cancelled").unwrap();
        assert_eq!(on, None);
        assert_eq!(
            c,
            vec![
                (
                    "ConfirmationStatus".into(),
                    Cond::ChangedFrom("Scheduled".into())
                ),
                (
                    "ConfirmationStatus".into(),
                    Cond::ChangedTo("Cancelled".into())
                ),
            ]
        );
        let (on, c) =
            read_when("any and Status is \"On Hold\" and Type is one of A, 'B and C'").unwrap();
        assert_eq!(on, Some(On::Any));
        assert_eq!(
            c,
            vec![
                ("Status".into(), Cond::Equals("On Hold".into())),
                ("Type".into(), Cond::In(vec!["A".into(), "B and C".into()])),
            ]
        );
        assert_eq!(read_when("deleted").unwrap(), (Some(On::Deleted), vec![]));
        assert!(read_when("Status goes to X")
            .unwrap_err()
            .contains("not a condition"));
        assert!(read_when("created and deleted").is_err());
    }

    #[test]
    fn rows_with_problems_are_named_by_line_and_column() {
        let form = "Kareo Interface,Dock Workflow/SmartFlow Name,Dock Task List Name\nPatients (bulk),New Patient Intake,Front Desk\nLab Results,,Front Desk\nProviders,,\nCreate Patient,,Front Desk\n";
        let rows = read_table(form).unwrap();
        let got = import(&rows);
        let said: Vec<String> = got.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(got.rules.len(), 0, "{said:?}");
        assert_eq!(got.writes.len(), 1);
        assert_eq!(
            (got.writes[0].0, got.writes[0].1.as_str()),
            (5, "Create Patient")
        );
        assert!(
            got.writes[0].2.contains("Dock event that drives it"),
            "{:?}",
            got.writes
        );
        assert_eq!(got.problems.len(), 3, "{said:?}");
        assert!(said[0].starts_with("line 2, Task Group: required with a workflow"));
        assert!(said[1].starts_with("line 3, Kareo Interface: unknown interface 'Lab Results'"));
        assert!(said[2].starts_with("line 4, Dock Task List Name: empty"));
        let e = read_table("Interface,Colour\nPatients,red\n").unwrap_err();
        let said: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert!(
            said.iter().any(|s| s.contains("unknown column 'Colour'")),
            "{said:?}"
        );
        assert!(said
            .iter()
            .any(|s| s.contains("no 'Dock Task List Name' column")));
    }
}
