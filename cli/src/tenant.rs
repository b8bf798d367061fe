//! `kareo-dock tenant put`: checks a tenant config (file:line errors) and stores it where the
//! functions read it (the state directory or the DynamoDB table), as the operator wrote it;
//! `kareo-dock tenant get`: prints that text back.

use std::path::PathBuf;
use std::process::ExitCode;

use domain::ports::TenantStore;
use domain::TenantConfig;

use crate::common::{self, Exit, Outcome, StoreArgs};

/// `tenant` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Check a tenant config and store it (creating or replacing the tenant's config). An
    /// invalid config is refused with the file, the line and the reason, and nothing is stored.
    Put(PutArgs),
    /// Print a stored tenant config, exactly as it was put (comments and quoting included).
    Get(GetArgs),
}

/// `tenant get` options.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The tenant id.
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tenant put` options.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The tenant config (YAML).
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: `put` 0 stored; 2 the config is invalid (file:line: reason on stderr); 3 the
/// state could not be written. `get` 0 printed; 1 no such tenant; 3 the state could not be read.
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async {
        common::finish(match verb {
            Verb::Put(args) => put(args).await,
            Verb::Get(args) => get(args).await,
        })
    })
}

async fn get(args: GetArgs) -> Outcome {
    let store = args.store.open().await?;
    let tenants = store.tenants().await.map_err(common::store_exit)?;
    let Some(t) = tenants.iter().find(|t| t.tenant == args.tenant) else {
        return Err(Exit(
            common::USAGE,
            format!("no tenant '{}' is stored", args.tenant),
        ));
    };
    print!("{}", t.to_yaml());
    Ok(ExitCode::SUCCESS)
}

async fn put(args: PutArgs) -> Outcome {
    let config =
        TenantConfig::from_file(&args.file).map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let store = args.store.open().await?;
    let existed = store
        .tenants()
        .await
        .map(|ts| ts.iter().any(|t| t.tenant == config.tenant))
        .unwrap_or(false);
    store.put(&config).await.map_err(common::store_exit)?;
    let families: Vec<&str> = config.families.keys().map(|f| f.name()).collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "tenant": config.tenant,
                "families": families,
                "rules": config.mapping.rules.len(),
                "replaced": existed,
            })
        );
    } else {
        println!(
            "{} tenant {}: families {}; {} rule(s)",
            if existed { "replaced" } else { "stored" },
            config.tenant,
            families.join(", "),
            config.mapping.rules.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
