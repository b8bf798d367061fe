//! `kareo-dock check`: is a tenant ready to run? One verdict per item: the Kareo credentials
//! (GetCustomerIdFromKey), the practice (GetPractices), a read of every enabled family (a
//! five-minute window of its Get operation: the user's permissions), the Dock token, and every
//! list, group, workflow template and assignee the mapping names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use domain::mapping::TaskSpec;
use domain::ports::{kareo_credentials, SecretError};
use domain::source::KareoSource;
use domain::TenantConfig;
use kareo::{ClientConfig, Credentials, Family, KareoClient, KareoError};
use serde::Serialize;
use serde_json::json;
use tasks::deliver::{dock_secret, DockPort};
use tasks::dock::DockTasks;

use crate::common::{self, Exit, Outcome, Secrets};

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
}

/// One verdict.
#[derive(Debug, Serialize)]
struct Verdict {
    tenant: String,
    item: String,
    ok: bool,
    detail: String,
}

/// Exit codes: 0 every item is ok; 1 bad usage; 2 a config or the secrets file is invalid;
/// 3 the state could not be read; 4 some item failed (each FAIL line says why).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(check(args).await) })
}

async fn check(args: Args) -> Outcome {
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
    let dock = DockTasks::new(
        dock::DockClient::new(dock::DockConfig::from_env())
            .map_err(|e| Exit(common::USAGE, e.to_string()))?,
    );
    let dock_client = dock::DockClient::new(dock::DockConfig::from_env())
        .map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let mut verdicts = Vec::new();
    for t in &tenants {
        check_tenant(t, &secrets, &kareo, &dock, &dock_client, &mut verdicts).await;
    }
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"ok": failed == 0, "failed": failed, "checks": verdicts})
            )
            .unwrap_or_default()
        );
    } else {
        for v in &verdicts {
            println!(
                "{:<16} {:<44} {}",
                v.tenant,
                v.item,
                if v.ok {
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
    Ok(if failed > 0 {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn kareo_fail(e: &KareoError) -> String {
    format!("{}: {e}", e.class())
}

// Long: one verdict per checked item, in the order they are printed.
async fn check_tenant(
    t: &TenantConfig,
    secrets: &Secrets,
    kareo: &KareoClient,
    dock: &DockTasks,
    dock_client: &dock::DockClient,
    out: &mut Vec<Verdict>,
) {
    let mut say = |item: String, r: Result<String, String>| {
        out.push(Verdict {
            tenant: t.tenant.clone(),
            item,
            ok: r.is_ok(),
            detail: r.unwrap_or_else(|e| e),
        })
    };

    // Kareo.
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
        let mut filter = serde_json::Map::new();
        filter.insert("PracticeName".into(), json!(t.kareo.practice));
        let body = json!({"Fields": {}, "Filter": filter});
        let r = match kareo.call_named(creds, "GetPractices", &body).await {
            Ok(resp) => {
                let found = resp.records.iter().find(|r| {
                    r.get("PracticeName")
                        .is_some_and(|n| n.trim().eq_ignore_ascii_case(t.kareo.practice.trim()))
                });
                match (found, t.kareo.practice_id) {
                    (None, _) => Err(
                        "no practice with the configured name is visible to these credentials"
                            .into(),
                    ),
                    (Some(r), Some(id))
                        if r.get("ID").map(str::trim) != Some(id.to_string().as_str()) =>
                    {
                        Err(format!(
                            "the configured practice_id {id} is not the practice's id ({})",
                            r.get("ID").unwrap_or("?")
                        ))
                    }
                    (Some(r), _) => {
                        Ok(format!("practice id {}", r.get("ID").unwrap_or("?").trim()))
                    }
                }
            }
            Err(e) => Err(kareo_fail(&e)),
        };
        say("kareo practice (GetPractices)".into(), r);
        let to = Utc::now();
        let from = to - chrono::Duration::minutes(5);
        for &family in t.families.keys() {
            let op = match family {
                Family::Encounters => Family::Charges.op(),
                f => f.op(),
            };
            let r = kareo
                .window(creds, t, family, from, to)
                .await
                .map(|rs| format!("{} record(s) in the last 5 minutes", rs.len()))
                .map_err(|e| kareo_fail(&e));
            say(format!("kareo read {} ({op})", family.name()), r);
        }
    } else {
        for &family in t.families.keys() {
            say(
                format!("kareo read {}", family.name()),
                Err("not checked: no working Kareo credentials".into()),
            );
        }
    }

    // Dock.
    let no_rules = t.mapping.rules.is_empty();
    let secret = match dock_secret(secrets, &t.dock.secret).await {
        Ok(s) => Some(s),
        Err(SecretError::NotFound(_)) if no_rules => {
            say(
                format!("dock secret '{}'", t.dock.secret),
                Ok("absent; not needed: the mapping has no rules".into()),
            );
            return;
        }
        Err(e) => {
            say(
                format!("dock secret '{}'", t.dock.secret),
                Err(e.to_string()),
            );
            None
        }
    };
    let secret = match secret {
        Some(s) => match dock_client.list_task_lists(&s).await {
            Ok(lists) => {
                say(
                    "dock token".into(),
                    Ok(format!("{} task list(s) visible", lists.len())),
                );
                Some(s)
            }
            Err(e) => {
                say("dock token".into(), Err(format!("{}: {e}", e.class())));
                None
            }
        },
        None => None,
    };

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
                Ok(ids) => Ok(match item {
                    Item::List(_) => format!("id {}", ids.list),
                    Item::Group(..) => format!("id {}", ids.group.unwrap_or_default()),
                    Item::Template(_) => format!("id {}", ids.template.unwrap_or_default()),
                    Item::Assignee(_) => format!("user id {}", ids.assignee.unwrap_or_default()),
                }),
                Err(f) => Err(format!("{}: {}", f.class, f.reason)),
            },
        };
        say(label, r);
    }
}
