//! `kareo-dock write`: runs one write command in this process, exactly as the write function
//! does, with the ledger in `--state` (default `./kareo-dock-state`). Prints the result JSON.
//!
//! Exit codes: 0 done (also a repeated id); 2 the command, config or secrets file is invalid;
//! 3 rejected (Kareo refused it, nothing written; may be sent again under the same id once
//! fixed); 4 needs_review (outcome unknown: check Kareo; never re-sent under this id); 5 retry
//! later (Kareo unavailable, or another attempt of this id is under way).

use std::path::Path;
use std::process::ExitCode;

use domain::local::{LocalSecrets, LocalStore};
use domain::ports::SystemClock;
use domain::TenantConfig;
use kareo::{ClientConfig, KareoClient};
use writeback::write::{run_command, Caller, Problem, WriteResult, Writer};

/// Runs the command file.
pub fn run(
    config: &Path,
    secrets: &Path,
    state: &Path,
    command: &Path,
) -> anyhow::Result<ExitCode> {
    let tenant = match TenantConfig::from_file(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let secrets = match LocalSecrets::from_file(secrets) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let raw: serde_json::Value = match std::fs::read_to_string(command)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            let r = WriteResult::invalid(
                &serde_json::Value::Null,
                vec![Problem {
                    field: "(command)".into(),
                    problem: format!("cannot read {}: {e}", command.display()),
                }],
            );
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(ExitCode::from(2));
        }
    };
    let store = LocalStore::in_dir(state)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = KareoClient::new(ClientConfig::from_env())?;
        let writer = Writer::new(
            &client,
            &store,
            &SystemClock,
            format!("cli-{}", std::process::id()),
        );
        let r = run_command(
            &writer,
            &secrets,
            std::slice::from_ref(&tenant),
            &raw,
            Caller::Operator("cli"),
        )
        .await;
        println!("{}", serde_json::to_string_pretty(&r)?);
        Ok(ExitCode::from(r.status.exit_code()))
    })
}
