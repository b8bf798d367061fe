//! `kareo-dock check`: is a tenant ready to run? One verdict per item: the Kareo credentials
//! (GetCustomerIdFromKey), the practice (GetPractices), a read of every enabled family (a
//! five-minute window of its Get operation: the user's permissions), the Dock token and the
//! scopes granted, every list (and the integration user's membership), group, workflow template
//! and assignee the mapping names, how Dock pages list reads, whether Dock's own managed EMR
//! integration seems active (patients marked `fromEMR`, which would double every task), and
//! with `--dock-sandbox LIST` a round trip that proves reconciliation on this organisation;
//! with `--probe`, the Kareo probes of `probe.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use domain::mapping::TaskSpec;
use domain::ports::{kareo_credentials, SecretError, TenantStore};
use domain::source::KareoSource;
use domain::TenantConfig;
use kareo::{ClientConfig, Credentials, Family, KareoClient};
use serde::Serialize;
use serde_json::json;
use tasks::deliver::{dock_secret, DockPort};
use tasks::dock::DockTasks;

use crate::common::{self, kareo_fail, Exit, Outcome, Secrets, WARNING};

/// `check` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tenant config files (YAML); without it, the tenants stored in `--state`/`--table`.
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Secrets file: {"<secret name>": {...}, ...}. Without it, Secrets Manager (with
    /// `--table`).
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// Local state directory (for the stored tenants).
    #[arg(long, conflicts_with = "table")]
    state: Option<PathBuf>,
    /// DynamoDB state table (AWS: secrets from Secrets Manager, stored tenants).
    #[arg(long)]
    table: Option<String>,
    /// Print the verdicts as JSON.
    #[arg(long)]
    json: bool,
    /// With permission to write there: create a task in this Dock list, find it back by its
    /// reference as reconciliation does, and delete it.
    #[arg(long, value_name = "LIST")]
    dock_sandbox: Option<String>,
    /// Also run the Kareo probes (reads only): stamp precision, Kareo's clock, whether
    /// GetAppointments applies its default StartDate window, a row limit — each with the
    /// setting it implies (docs/kareo-unknowns.md).
    #[arg(long, conflicts_with = "dock_only")]
    probe: bool,
    /// With `--probe`: write the setting of each failing finding into the tenant's config —
    /// the `--config` file, or the stored config with `--state`/`--table` — the rest of the
    /// text kept as written; the config is checked again before it is written. WARNs are not
    /// written (their setting is a guess). Then run check again.
    #[arg(long, requires = "probe")]
    write: bool,
    /// With `--probe`: the operator's permission for the probes that need a write — this
    /// patient (Kareo's PatientID) is written back with its own values (nothing changes but
    /// its last-modified stamp), to read Kareo's clock (east or west) and the filter bounds.
    #[arg(long, requires = "probe", value_name = "PATIENT_ID")]
    probe_write: Option<i64>,
    /// Only the Dock items: the token, its scopes and paging, and every list, group, template
    /// and assignee the mapping names (no Kareo call; after `mapping import`).
    #[arg(long)]
    dock_only: bool,
}

impl Args {
    /// The Dock items of one config file (what `mapping import --check` runs).
    pub(crate) fn dock_only(config: PathBuf, secrets: Option<PathBuf>) -> Args {
        Args {
            configs: vec![config],
            tenant: None,
            secrets,
            state: None,
            table: None,
            json: false,
            dock_sandbox: None,
            probe: false,
            write: false,
            probe_write: None,
            dock_only: true,
        }
    }
}

/// One verdict.
#[derive(Debug, Serialize)]
pub(crate) struct Verdict {
    tenant: String,
    pub(crate) item: String,
    pub(crate) ok: bool,
    /// `ok`, `warn` or `fail`.
    pub(crate) level: &'static str,
    pub(crate) detail: String,
    /// For an item the mapping names: what it is (`list`, `group`, `template`, `assignee`)
    /// and the rules naming it.
    #[serde(skip)]
    pub(crate) names: Option<(&'static str, Vec<String>)>,
    /// For a failing probe: the settings its finding implies (`check --probe --write`).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "settings_text"
    )]
    pub(crate) settings: Vec<crate::probe::Setting>,
}

fn settings_text<S: serde::Serializer>(
    v: &[crate::probe::Setting],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// Exit codes: 0 every item is ok; 1 bad usage; 2 a config or the secrets file is invalid;
/// 3 the state could not be read; 4 some item failed (each FAIL line says why).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(check(args).await) })
}

async fn check(args: Args) -> Outcome {
    let json = args.json;
    let write = args
        .write
        .then(|| (args.configs.clone(), args.state.clone(), args.table.clone()));
    let verdicts = verdicts(args).await?;
    print(&verdicts, json);
    if let Some((configs, state, table)) = write {
        write_settings(
            &verdicts,
            &configs,
            state.as_deref(),
            table.as_deref(),
            json,
        )
        .await?;
    }
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    Ok(if failed > 0 {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every verdict of the tenants `args` names, in the order they are printed.
pub(crate) async fn verdicts(args: Args) -> Result<Vec<Verdict>, Exit> {
    // Configs first: an invalid one is exit 2 whatever else is wrong.
    let mut configs = Vec::new();
    for c in &args.configs {
        configs.push(TenantConfig::from_file(c).map_err(|e| Exit(common::CONFIG, e.to_string()))?);
    }
    let store = if configs.is_empty() {
        Some(common::open_store(args.state.as_deref(), args.table.as_deref()).await?)
    } else {
        None
    };
    let tenants = if configs.is_empty() {
        common::tenants(&[], store.as_ref(), args.tenant.as_deref()).await?
    } else {
        let mut ts = configs;
        if let Some(t) = &args.tenant {
            ts.retain(|c| &c.tenant == t);
            if ts.is_empty() {
                return Err(Exit(
                    common::USAGE,
                    format!("no tenant '{t}' in the configs"),
                ));
            }
        }
        ts
    };
    let secrets = common::open_secrets(args.secrets.as_deref(), args.table.is_some()).await?;
    let mut cfg = ClientConfig::from_env();
    cfg.retry.max_retries = cfg.retry.max_retries.min(1);
    let kareo = KareoClient::new(cfg).map_err(|e| Exit(common::USAGE, e.to_string()))?;
    // One client: the probes read what its first calls learned (scopes, paging).
    let dock_client = dock::DockClient::new(dock::DockConfig::from_env())
        .map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let dock = DockTasks::new(dock_client.clone());
    let mut verdicts = Vec::new();
    for t in &tenants {
        let sandbox = args.dock_sandbox.as_deref();
        check_tenant(
            t,
            &secrets,
            &kareo,
            &dock,
            &dock_client,
            (sandbox, (args.probe, args.probe_write), args.dock_only),
            &mut verdicts,
        )
        .await;
    }
    Ok(verdicts)
}

/// Prints the verdicts: one line each and a count, or JSON.
pub(crate) fn print(verdicts: &[Verdict], json: bool) {
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"ok": failed == 0, "failed": failed, "checks": verdicts})
            )
            .unwrap_or_default()
        );
    } else {
        for v in verdicts {
            println!(
                "{:<16} {:<44} {}",
                v.tenant,
                v.item,
                if v.level == "warn" {
                    format!("WARN: {}", &v.detail[WARNING.len()..])
                } else if v.ok {
                    if v.detail.is_empty() {
                        "ok".to_string()
                    } else {
                        format!("ok ({})", v.detail)
                    }
                } else {
                    format!("FAIL: {}", v.detail)
                }
            );
        }
        println!("{} check(s), {failed} failed", verdicts.len());
    }
}

/// The tenant's practice among those the credentials see (GetPractices by name): its id, or
/// why not (names and ids only); the outer error is Kareo's refusal of the call.
pub(crate) async fn practice(
    kareo: &KareoClient,
    creds: &Credentials,
    t: &TenantConfig,
) -> Result<Result<String, String>, kareo::KareoError> {
    let mut filter = serde_json::Map::new();
    filter.insert("PracticeName".into(), json!(t.kareo.practice));
    let body = json!({"Fields": {}, "Filter": filter});
    let resp = kareo.call_named(creds, "GetPractices", &body).await?;
    let found = resp.records.iter().find(|r| {
        r.get("PracticeName")
            .is_some_and(|n| n.trim().eq_ignore_ascii_case(t.kareo.practice.trim()))
    });
    Ok(match (found, t.kareo.practice_id) {
        (None, _) => {
            Err("no practice with the configured name is visible to these credentials".into())
        }
        (Some(r), Some(id)) if r.get("ID").map(str::trim) != Some(id.to_string().as_str()) => {
            Err(format!(
                "the configured practice_id {id} is not the practice's id ({})",
                r.get("ID").unwrap_or("?")
            ))
        }
        (Some(r), _) => Ok(r.get("ID").unwrap_or("?").trim().to_string()),
    })
}

/// A read of every enabled family (a five-minute window of its Get operation: the user's
/// permission for it): the family, the operation, and the count or the failure.
pub(crate) async fn read_families(
    kareo: &KareoClient,
    creds: &Credentials,
    t: &TenantConfig,
) -> Vec<(Family, &'static str, Result<usize, kareo::KareoError>)> {
    let to = Utc::now();
    let from = to - chrono::Duration::minutes(5);
    let mut out = Vec::new();
    for &family in t.families.keys() {
        let op = match family {
            Family::Encounters => Family::Charges.op(),
            f => f.op(),
        };
        let r = kareo
            .window(creds, t, family, (from, to), usize::MAX)
            .await
            .map(|rs| rs.len());
        out.push((family, op, r));
    }
    out
}

/// The verdicts of one tenant, each pushed as it is reached.
struct Say<'a> {
    tenant: &'a str,
    out: &'a mut Vec<Verdict>,
}

impl Say<'_> {
    fn say(
        &mut self,
        item: String,
        r: Result<String, String>,
        names: Option<(&'static str, Vec<String>)>,
    ) {
        let level = match &r {
            Err(_) => "fail",
            Ok(d) if d.starts_with(WARNING) => "warn",
            Ok(_) => "ok",
        };
        self.out.push(Verdict {
            tenant: self.tenant.to_string(),
            item,
            ok: r.is_ok(),
            level,
            detail: r.unwrap_or_else(|e| e),
            names,
            settings: Vec::new(),
        })
    }
}

/// The Kareo verdicts: the secret, the credentials, the practice, a read of each family, and
/// with `probe` the probes.
async fn kareo_verdicts(
    t: &TenantConfig,
    secrets: &Secrets,
    kareo: &KareoClient,
    (probe, probe_write): (bool, Option<i64>),
    sayer: &mut Say<'_>,
) {
    let mut say = |item: String, r: Result<String, String>| sayer.say(item, r, None);
    let creds: Option<Credentials> = match kareo_credentials(secrets, &t.kareo.secret).await {
        Ok(c) => Some(c),
        Err(e) => {
            say(
                format!("kareo secret '{}'", t.kareo.secret),
                Err(e.to_string()),
            );
            None
        }
    };
    let creds = match creds {
        Some(c) => match kareo.customer_id(&c).await {
            Ok(id) => {
                say(
                    "kareo credentials".into(),
                    Ok(id.map(|i| format!("customer {i}")).unwrap_or_default()),
                );
                Some(c)
            }
            Err(e) => {
                say("kareo credentials".into(), Err(kareo_fail(&e)));
                None
            }
        },
        None => None,
    };
    if let Some(creds) = &creds {
        let r = match practice(kareo, creds, t).await {
            Ok(r) => r.map(|id| format!("practice id {id}")),
            Err(e) => Err(kareo_fail(&e)),
        };
        say("kareo practice (GetPractices)".into(), r);
        for (family, op, r) in read_families(kareo, creds, t).await {
            let r = r
                .map(|n| format!("{n} record(s) in the last 5 minutes"))
                .map_err(|e| kareo_fail(&e));
            say(format!("kareo read {} ({op})", family.name()), r);
        }
        if probe {
            let mut probes = crate::probe::kareo_probes(t, kareo, creds).await;
            if let Some(patient) = probe_write {
                probes.extend(crate::probe::write_probes(t, kareo, creds, patient).await);
            }
            for (item, r, settings) in probes {
                sayer.say(item, r, None);
                if let Some(v) = sayer.out.last_mut() {
                    v.settings = settings;
                }
            }
        }
    } else {
        for &family in t.families.keys() {
            say(
                format!("kareo read {}", family.name()),
                Err("not checked: no working Kareo credentials".into()),
            );
        }
    }
}

// Long: one verdict per checked item, in the order they are printed.
async fn check_tenant(
    t: &TenantConfig,
    secrets: &Secrets,
    kareo: &KareoClient,
    dock: &DockTasks,
    dock_client: &dock::DockClient,
    (sandbox, probe, dock_only): (Option<&str>, (bool, Option<i64>), bool),
    out: &mut Vec<Verdict>,
) {
    let mut say = Say {
        tenant: &t.tenant,
        out,
    };
    if !dock_only {
        kareo_verdicts(t, secrets, kareo, probe, &mut say).await;
    }

    // Dock.
    let no_rules = t.mapping.rules.is_empty();
    let secret = match dock_secret(secrets, t).await {
        Ok(s) => Some(s),
        Err(SecretError::NotFound(_)) if no_rules => {
            say.say(
                format!("dock secret '{}'", t.dock.secret),
                Ok("absent; not needed: the mapping has no rules".into()),
                None,
            );
            return;
        }
        Err(e) => {
            say.say(
                format!("dock secret '{}'", t.dock.secret),
                Err(e.to_string()),
                None,
            );
            None
        }
    };
    let (secret, lists) = match secret {
        Some(s) => match dock_client.list_task_lists(&s).await {
            Ok(lists) => {
                say.say(
                    "dock token".into(),
                    Ok(format!("{} task list(s) visible", lists.len())),
                    None,
                );
                (Some(s), lists)
            }
            Err(e) => {
                say.say(
                    "dock token".into(),
                    Err(format!("{}: {e}", e.class())),
                    None,
                );
                (None, Vec::new())
            }
        },
        None => (None, Vec::new()),
    };
    if let Some(s) = &secret {
        for (item, r) in dock_probes(t, dock_client, s).await {
            say.say(item, r, None);
        }
    }

    // Every distinct name the mapping uses, with the rules using it.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Item {
        List(String),
        Group(String, String),
        Template(String),
        Assignee(String),
    }
    let mut items: BTreeMap<Item, (Vec<String>, TaskSpec)> = BTreeMap::new();
    for rule in &t.mapping.rules {
        let base = TaskSpec {
            group: None,
            workflow: None,
            workflow_id: None,
            assignee: None,
            ..rule.task.clone()
        };
        let mut add = |k: Item, spec: TaskSpec| {
            items
                .entry(k)
                .or_insert_with(|| (Vec::new(), spec))
                .0
                .push(rule.name.clone());
        };
        add(Item::List(rule.task.list.clone()), base.clone());
        if let Some(g) = &rule.task.group {
            add(
                Item::Group(rule.task.list.clone(), g.clone()),
                TaskSpec {
                    group: Some(g.clone()),
                    ..base.clone()
                },
            );
        }
        if rule.task.deploys() {
            let w = rule.task.workflow_id.clone().or(rule.task.workflow.clone());
            add(
                Item::Template(w.unwrap_or_default()),
                TaskSpec {
                    workflow: rule.task.workflow.clone(),
                    workflow_id: rule.task.workflow_id.clone(),
                    ..base.clone()
                },
            );
        }
        if let Some(a) = &rule.task.assignee {
            add(
                Item::Assignee(a.to_lowercase()),
                TaskSpec {
                    assignee: Some(a.clone()),
                    ..base.clone()
                },
            );
        }
    }
    if let Some(list) = t.shadow.as_ref().and_then(|s| s.list.clone()) {
        items
            .entry(Item::List(list.clone()))
            .or_insert_with(|| (Vec::new(), TaskSpec::plain(list)))
            .0
            .push("shadow".into());
    }
    for (item, (rules, spec)) in items {
        let label = match &item {
            Item::List(l) => format!("dock list '{l}'"),
            Item::Group(l, g) => format!("dock group '{g}' in list '{l}'"),
            Item::Template(w) => format!("dock workflow template '{w}'"),
            // The address is a person's: name the rules instead.
            Item::Assignee(_) => format!("dock assignee of rule {}", rules.join(", ")),
        };
        let r = match &secret {
            None => Err("not checked: no working Dock token".into()),
            Some(s) => match dock.resolve(s, &spec).await {
                Ok(ids) if matches!(item, Item::List(_)) => member(&lists, &ids.list, &s.user_id),
                Ok(ids) => Ok(match item {
                    Item::List(_) => format!("id {}", ids.list),
                    Item::Group(..) => format!("id {}", ids.group.unwrap_or_default()),
                    Item::Template(_) => format!("id {}", ids.template.unwrap_or_default()),
                    Item::Assignee(_) => format!("user id {}", ids.assignee.unwrap_or_default()),
                }),
                Err(f) => Err(format!("{}: {}", f.class, f.reason)),
            },
        };
        let what = match item {
            Item::List(_) => "list",
            Item::Group(..) => "group",
            Item::Template(_) => "template",
            Item::Assignee(_) => "assignee",
        };
        say.say(label, r, Some((what, rules)));
    }
    if let (Some(s), Some(list)) = (&secret, sandbox) {
        let r = round_trip(dock, dock_client, s, list).await;
        say.say(format!("dock round trip in list '{list}'"), r, None);
    }
}

/// A list's verdict: its id, and whether the integration user is one of its members (tasks
/// are created as that user). A list whose members Dock does not show is a warning.
fn member(lists: &[dock::TaskList], id: &str, user: &str) -> Result<String, String> {
    let Some(l) = lists.iter().find(|l| l.id == id) else {
        return Ok(format!("{WARNING}id {id}; its members could not be read"));
    };
    if l.list_users.is_empty() {
        return Ok(format!(
            "{WARNING}id {id}; Dock shows no members to check the integration user against"
        ));
    }
    if l.list_users
        .iter()
        .any(|u| u.user.as_ref().is_some_and(|r| r.id == user))
    {
        Ok(format!("id {id}; the integration user is a member"))
    } else {
        Err(format!(
            "id {id}; the integration user ({user}) is not a member: Dock refuses its tasks there"
        ))
    }
}

/// The probes of Dock itself, each one verdict: the scopes granted, how list reads page, and
/// whether Dock's own EMR integration seems to be syncing patients.
async fn dock_probes(
    t: &TenantConfig,
    client: &dock::DockClient,
    s: &dock::DockSecret,
) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    let linking: Vec<&str> = t
        .mapping
        .rules
        .iter()
        .filter(|r| r.task.patient)
        .map(|r| r.name.as_str())
        .collect();
    let scopes = if !client.scopes_narrowed() {
        Ok("user and patient scopes granted".to_string())
    } else if linking.is_empty() {
        Ok(format!(
            "{WARNING}only the user scopes are granted (no rule links a patient)"
        ))
    } else {
        Err(format!(
            "the patient scopes are not granted: patient links of rule(s) {} will fail",
            linking.join(", ")
        ))
    };
    out.push(("dock scopes".to_string(), scopes));
    let paging = if client.reads_whole("list_task_lists") {
        "Dock answers list reads whole (startPosition/endPosition ignored)"
    } else {
        "Dock pages list reads by startPosition/endPosition (followed to the end), or has one page"
    };
    out.push(("dock list paging".to_string(), Ok(paging.to_string())));
    if client.scopes_narrowed() {
        return out;
    }
    let emr = match client.list_patients(s).await {
        Ok(ps) => {
            let synced = ps
                .iter()
                .filter(|p| p.is_active() && p.from_emr == Some(true))
                .count();
            if synced == 0 {
                Ok(format!("no patient marked fromEMR among {}", ps.len()))
            } else {
                Ok(format!(
                    "{WARNING}{synced} of {} patient(s) are marked fromEMR: Dock's own EMR integration seems active; if it also makes tasks from Kareo, every task is doubled",
                    ps.len()
                ))
            }
        }
        Err(e) => Err(format!("{}: {e}", e.class())),
    };
    out.push(("dock managed EMR integration".to_string(), emr));
    out
}

/// Creates a task in `list` stamped with a reference as task creation stamps its own, finds
/// it back the way reconciliation does after an unclear create, and deletes it.
async fn round_trip(
    dock: &DockTasks,
    client: &dock::DockClient,
    s: &dock::DockSecret,
    list: &str,
) -> Result<String, String> {
    let spec = TaskSpec::plain(list);
    let fail = |f: tasks::deliver::DockFailure| format!("{}: {}", f.class, f.reason);
    let ids = dock.resolve(s, &spec).await.map_err(fail)?;
    let key = format!(
        "check#{}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let reference = tasks::deliver::reference(&key);
    let draft = tasks::deliver::TaskDraft {
        description: "kareo-dock check (safe to delete)".into(),
        details: format!("A probe of kareo-dock check.\n\n{reference}"),
        ids: ids.clone(),
        due: None,
        priority: None,
        patient: None,
    };
    let id = dock.create_task(s, &draft).await.map_err(fail)?;
    let found = dock.find_task(s, &ids.list, &reference).await;
    let deleted = client.delete_task(s, &id).await;
    let left = if deleted.is_err() {
        format!("; task {id} could not be deleted: delete it by hand")
    } else {
        String::new()
    };
    match found {
        Ok(Some(f)) if f == id && deleted.is_ok() => {
            Ok("created a task, found it by its reference, deleted it".into())
        }
        Ok(Some(f)) if f == id => Err(format!("found by its reference{left}")),
        Ok(Some(other)) => Err(format!(
            "another task ({other}) carries the probe's reference{left}"
        )),
        Ok(None) => Err(format!(
            "the task created ({id}) was not found by its reference: after an unclear create, task creation would post a duplicate{left}"
        )),
        Err(f) => Err(format!("{}{left}", fail(f))),
    }
}

/// `check --probe --write`: each failing probe's settings into its tenant's config — the
/// `--config` file of that tenant, else the stored config — checked again first; prints what
/// it wrote. Nothing is written for a tenant whose edited config would not read back with
/// the setting in effect.
async fn write_settings(
    verdicts: &[Verdict],
    configs: &[PathBuf],
    state: Option<&std::path::Path>,
    table: Option<&str>,
    json: bool,
) -> Result<(), Exit> {
    // With --json, stdout holds the verdicts only: what was written goes to stderr.
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut by_tenant: BTreeMap<&str, Vec<&crate::probe::Setting>> = BTreeMap::new();
    for v in verdicts.iter().filter(|v| !v.ok) {
        by_tenant.entry(&v.tenant).or_default().extend(&v.settings);
    }
    by_tenant.retain(|_, s| !s.is_empty());
    if by_tenant.is_empty() {
        say("--write: no failing finding has a setting to write".into());
        return Ok(());
    }
    let store = if configs.is_empty() {
        Some(common::open_store(state, table).await?)
    } else {
        None
    };
    for (tenant, settings) in by_tenant {
        let (text, file) = match &store {
            None => {
                let mut found = None;
                for c in configs {
                    let t = TenantConfig::from_file(c)
                        .map_err(|e| Exit(common::CONFIG, e.to_string()))?;
                    if t.tenant == tenant {
                        let text = std::fs::read_to_string(c)
                            .map_err(|e| Exit(common::USAGE, format!("{}: {e}", c.display())))?;
                        found = Some((text, Some(c.clone())));
                    }
                }
                found.ok_or_else(|| {
                    Exit(
                        common::USAGE,
                        format!("no config file of tenant '{tenant}'"),
                    )
                })?
            }
            Some(store) => {
                let tenants = store.tenants().await.map_err(common::store_exit)?;
                let t = tenants.iter().find(|t| t.tenant == tenant).ok_or_else(|| {
                    Exit(common::USAGE, format!("no tenant '{tenant}' is stored"))
                })?;
                (t.to_yaml(), None)
            }
        };
        let mut edited = text.clone();
        for s in &settings {
            edited = s.apply(&edited).map_err(|e| {
                Exit(
                    common::USAGE,
                    format!("tenant {tenant}: cannot write `{s}` ({e}): add it by hand"),
                )
            })?;
        }
        let name = file.as_ref().map_or_else(
            || format!("stored tenant {tenant}"),
            |f| f.display().to_string(),
        );
        let config = TenantConfig::from_yaml(&edited, &name).map_err(|e| {
            Exit(
                common::CONFIG,
                format!("tenant {tenant}: the edited config does not read ({e}): nothing written"),
            )
        })?;
        match (&file, &store) {
            (Some(f), _) => std::fs::write(f, &edited)
                .map_err(|e| Exit(common::USAGE, format!("{}: {e}", f.display())))?,
            (None, Some(store)) => store.put(&config).await.map_err(common::store_exit)?,
            (None, None) => unreachable!("a config comes from a file or the store"),
        }
        for s in &settings {
            say(format!("wrote `{s}` to {name}"));
        }
    }
    say("run check again to see the findings covered".into());
    Ok(())
}
