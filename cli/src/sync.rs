//! `kareo-dock sync --once`: the poll of every enabled family and the task creation, in one
//! process, with local state: cursors, snapshots and the ledger in the state directory, every
//! event handed off appended to `<state>/events.jsonl`, permanent task failures to
//! `<state>/dead-letters.jsonl` (for `kareo-dock replay`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ::sync::{Mode, Outcome};
use domain::local::{JsonlSink, LocalSecrets, LocalStore, Tee};
use domain::ports::SystemClock;
use domain::TenantConfig;
use embedded::{DeadLetterFile, Embedded};
use kareo::{ClientConfig, Family, KareoClient};
use tasks::dock::DockTasks;

/// What to run.
pub struct SyncArgs<'a> {
    /// Tenant config files.
    pub configs: &'a [PathBuf],
    /// Secrets file.
    pub secrets: &'a Path,
    /// State directory.
    pub state: &'a Path,
    /// Only this family.
    pub family: Option<&'a str>,
    /// Read and report only.
    pub dry_run: bool,
    /// The coverage audit instead of a poll.
    pub audit: bool,
    /// Hand events to events.jsonl only; create no Dock task.
    pub no_tasks: bool,
    /// JSON output.
    pub json: bool,
}

/// Exit codes: 0 every run done; 2 a config or secrets file is invalid; 4 some run failed or
/// some task could not be created (dead letters written).
// Long: argument checks, the pipeline, then the report in two formats.
pub fn run(args: SyncArgs<'_>) -> anyhow::Result<ExitCode> {
    let SyncArgs {
        configs,
        secrets,
        state,
        family,
        dry_run,
        audit,
        no_tasks,
        json,
    } = args;
    let mut tenants = Vec::new();
    for c in configs {
        match TenantConfig::from_file(c) {
            Ok(t) => tenants.push(t),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let families: Vec<Family> = match family {
        Some(name) => match Family::from_name(name) {
            Some(f) => vec![f],
            None => {
                eprintln!("error: --family {name} is not a Kareo family");
                return Ok(ExitCode::from(2));
            }
        },
        None => Family::ALL.to_vec(),
    };
    let secrets = match LocalSecrets::from_file(secrets) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = LocalStore::in_dir(state)?;
    let events = JsonlSink::new(state.join("events.jsonl"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = KareoClient::new(ClientConfig::from_env())?;
        let dock = DockTasks::new(dock::DockClient::new(dock::DockConfig::from_env())?);
        let pipeline = Embedded {
            kareo: &client,
            dock: &dock,
            store: &store,
            secrets: &secrets,
            clock: &SystemClock,
            tenants: &tenants,
            owner: format!("cli-{}", std::process::id()),
            lease: std::time::Duration::from_secs(300),
        };
        let tasks = pipeline.tasks();
        let mode = match (dry_run, audit) {
            (true, _) => Mode::DryRun,
            (false, true) => Mode::Audit,
            (false, false) => Mode::Poll,
        };
        let reports = if no_tasks {
            pipeline.poll(&events, &families, mode, 4).await
        } else {
            pipeline.poll(&Tee(&events, &tasks), &families, mode, 4).await
        };
        let delivered = tasks.totals();
        crate::obs::poll_runs(&reports);
        if !no_tasks && !dry_run {
            crate::obs::delivered(&delivered);
        }
        let dead = tasks.dead_letters();
        let dead_file = DeadLetterFile::in_state(state);
        dead_file.append(&dead)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "polls": reports,
                    "tasks": delivered,
                    "dead_letters": dead,
                }))?
            );
        } else {
            for r in &reports {
                let outcome = match &r.outcome {
                    Outcome::Failed { class, message } => format!("failed ({class}): {message}"),
                    o => serde_json::to_value(o)?["outcome"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                };
                match &r.healed {
                    Some(windows) => println!(
                        "{:<16} {:<18} audit: seen {}, already handed off {}, healed {}{}  {outcome}",
                        r.tenant,
                        r.family.name(),
                        r.records,
                        r.duplicates,
                        r.events,
                        windows
                            .iter()
                            .map(|(a, b)| format!(" [{} .. {}]", a.to_rfc3339(), b.to_rfc3339()))
                            .collect::<String>()
                    ),
                    None => println!(
                        "{:<16} {:<18} records {:>5}  events {:>5}  duplicates {:>5}  {outcome}",
                        r.tenant,
                        r.family.name(),
                        r.records,
                        r.events,
                        r.duplicates
                    ),
                }
            }
        }
        if !json && !no_tasks && !dry_run {
            println!(
                "tasks: {} rule matches, {} tasks created, {} workflows deployed, {} duplicates avoided, {} dead letters{}",
                delivered.matched,
                delivered.tasks,
                delivered.workflows,
                delivered.duplicates,
                dead.len(),
                if dead.is_empty() { String::new() } else { format!(" (see {})", dead_file.path().display()) }
            );
        }
        let failed = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed { .. }))
            || !dead.is_empty();
        Ok(if failed {
            ExitCode::from(4)
        } else {
            ExitCode::SUCCESS
        })
    })
}
