//! `kareo-dock sync --once`: the poll of every enabled family, in one process, local state.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kareo::{ClientConfig, Family, KareoClient};
use kareo_dock_core::local::{JsonlSink, LocalSecrets, LocalStore};
use kareo_dock_core::ports::SystemClock;
use kareo_dock_core::run::poll_tenants;
use kareo_dock_core::{Mode, Outcome, PollConfig, Poller, TenantConfig};

/// Exit codes: 0 every run done; 2 a config or secrets file is invalid; 4 some run failed.
pub fn run(
    configs: &[PathBuf],
    secrets: &Path,
    state: &Path,
    family: Option<&str>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
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
    let sink = JsonlSink::new(state.join("events.jsonl"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = KareoClient::new(ClientConfig::from_env())?;
        let config = PollConfig {
            owner: format!("cli-{}", std::process::id()),
            ..PollConfig::default()
        };
        let poller = Poller {
            kareo: &client,
            cursors: &store,
            snapshots: &store,
            sink: &sink,
            clock: &SystemClock,
            config: &config,
        };
        let mode = if dry_run { Mode::DryRun } else { Mode::Poll };
        let mut reports = Vec::new();
        for f in families {
            reports.extend(poll_tenants(&poller, &secrets, &tenants, f, None, mode, 4, None).await);
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            for r in &reports {
                let outcome = match &r.outcome {
                    Outcome::Failed { class, message } => format!("failed ({class}): {message}"),
                    o => serde_json::to_value(o)?["outcome"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                };
                println!(
                    "{:<16} {:<18} records {:>5}  events {:>5}  duplicates {:>5}  {outcome}",
                    r.tenant,
                    r.family.name(),
                    r.records,
                    r.events,
                    r.duplicates
                );
            }
        }
        let failed = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed { .. }));
        Ok(if failed {
            ExitCode::from(4)
        } else {
            ExitCode::SUCCESS
        })
    })
}
