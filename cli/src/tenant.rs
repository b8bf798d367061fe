//! `kareo-dock tenant put`: checks a tenant config (file:line errors) and stores it where the
//! functions read it (the state directory or the DynamoDB table), as the operator wrote it;
//! `kareo-dock tenant get`: prints that text back; `kareo-dock tenant resume`: closes the
//! breaker a refused sign-in opened on a Kareo account, so its functions call Kareo again.

use std::path::PathBuf;
use std::process::ExitCode;

use aws::SecretsManagerSource;
use domain::local::LocalSecrets;
use domain::ports::{pause_key, Breaker, BreakerStore, TenantPurge, TenantStore};
use domain::TenantConfig;

use crate::common::{self, Exit, Outcome, Store, StoreArgs};

/// `tenant` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Check a tenant config and store it (creating or replacing the tenant's config). An
    /// invalid config is refused with the file, the line and the reason, and nothing is stored.
    Put(PutArgs),
    /// Print a stored tenant config, exactly as it was put (comments and quoting included).
    Get(GetArgs),
    /// Close the breaker of a Kareo account (opened when Kareo refused its credentials: no
    /// function calls Kareo for the account until then). Changing the account's secret closes
    /// it too; resume after fixing the user in Kareo without changing the secret. With
    /// `--tenant`, also ends the tenant's pause.
    Resume(ResumeArgs),
    /// Pause a tenant: no function polls it (so no task is created from its changes) until
    /// `tenant resume --tenant`; its cursors keep their place, so resuming reads what changed
    /// meanwhile. `status` shows it.
    Pause(PauseArgs),
    /// Offboard a tenant: count (a dry run, the default) or, with `--yes`, delete everything
    /// the state keeps for it — cursors, snapshots, task- and write-ledger and webhook-dedupe
    /// items, links, its webhook registration, pause and config (last) — and with
    /// `--delete-secrets` its Kareo and Dock secrets (Secrets Manager: scheduled, 7 days to
    /// undo).
    Purge(PurgeArgs),
}

/// `tenant purge` options.
#[derive(clap::Args, Debug)]
pub struct PurgeArgs {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// Delete (without it: count only, change nothing).
    #[arg(long)]
    yes: bool,
    /// Also delete the tenant's Kareo and Dock secrets (by the names in its stored config).
    #[arg(long)]
    delete_secrets: bool,
    /// The local secrets file (with a local state).
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tenant pause` options.
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// Why (shown by `status`; no PHI).
    #[arg(long, default_value = "paused by an operator")]
    reason: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// `tenant resume` options.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true)))]
pub struct ResumeArgs {
    /// The tenant whose Kareo account to resume (its `kareo.secret`).
    #[arg(long, group = "which")]
    tenant: Option<String>,
    /// The Kareo account, by its secret's name (as `status` shows it).
    #[arg(long, group = "which")]
    account: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
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
/// `resume` 0 closed (or was not open); 1 no such tenant; 3 the state could not be written.
/// `pause` 0 paused; 1 no such tenant; 3 the state could not be written. `purge` 0 counted
/// or deleted; 1 no such tenant; 3 the state or a secret could not be read or written.
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async {
        common::finish(match verb {
            Verb::Put(args) => put(args).await,
            Verb::Get(args) => get(args).await,
            Verb::Resume(args) => resume(args).await,
            Verb::Pause(args) => pause(args).await,
            Verb::Purge(args) => purge(args).await,
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
    // The template grants each function one kind of secret: `<SecretPrefix>kareo/…` or
    // `<SecretPrefix>dock/…` (docs/operations.md). Another name is denied at run time.
    if matches!(store, Store::Dynamo(_)) {
        for (what, name, kind) in [
            ("kareo.secret", &config.kareo.secret, "kareo/"),
            ("dock.secret", &config.dock.secret, "dock/"),
        ] {
            if !name.contains(kind) {
                eprintln!(
                    "WARNING: {what} '{name}' is not named <SecretPrefix>{kind}<tenant>: the \
                     deployed functions' roles will be denied it"
                );
            }
        }
    }
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

async fn pause(args: PauseArgs) -> Outcome {
    let store = args.store.open().await?;
    let tenants = store.tenants().await.map_err(common::store_exit)?;
    if !tenants.iter().any(|c| c.tenant == args.tenant) {
        return Err(Exit(
            common::USAGE,
            format!("no tenant '{}' is stored", args.tenant),
        ));
    }
    let hold = Breaker {
        fingerprint: String::new(),
        opened_at: chrono::Utc::now(),
        by: "operator".into(),
        reason: args.reason,
    };
    store
        .open_breaker(&pause_key(&args.tenant), &hold)
        .await
        .map_err(common::store_exit)?;
    println!(
        "paused tenant {}: no function polls it until `kareo-dock tenant resume --tenant {}`",
        args.tenant, args.tenant
    );
    Ok(ExitCode::SUCCESS)
}

async fn resume(args: ResumeArgs) -> Outcome {
    let store = args.store.open().await?;
    if let Some(t) = &args.tenant {
        let key = pause_key(t);
        if store
            .breaker(&key)
            .await
            .map_err(common::store_exit)?
            .is_some()
        {
            store
                .close_breaker(&key)
                .await
                .map_err(common::store_exit)?;
            println!("resumed tenant {t}: its pause is over");
        }
    }
    let account = match (args.account, args.tenant) {
        (Some(a), _) => a,
        (None, Some(t)) => {
            let tenants = store.tenants().await.map_err(common::store_exit)?;
            let Some(config) = tenants.iter().find(|c| c.tenant == t) else {
                return Err(Exit(common::USAGE, format!("no tenant '{t}' is stored")));
            };
            config.kareo.secret.clone()
        }
        (None, None) => unreachable!("clap requires --tenant or --account"),
    };
    let open = store.breaker(&account).await.map_err(common::store_exit)?;
    store
        .close_breaker(&account)
        .await
        .map_err(common::store_exit)?;
    match open {
        Some(b) => println!(
            "resumed Kareo account {account}: its breaker was open since {} ({})",
            common::when(Some(b.opened_at)),
            b.by
        ),
        None => println!("Kareo account {account} had no open breaker"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: PurgeArgs) -> Outcome {
    let store = args.store.open().await?;
    let tenants = store.tenants().await.map_err(common::store_exit)?;
    let config = tenants.into_iter().find(|t| t.tenant == args.tenant);
    let Some(config) = config else {
        return Err(Exit(
            common::USAGE,
            format!("no tenant '{}' is stored", args.tenant),
        ));
    };
    let dry_run = !args.yes;
    let counts = match &store {
        Store::Local(s, _) => s.purge(&args.tenant, dry_run).await,
        Store::Dynamo(s) => s.purge(&args.tenant, dry_run).await,
    }
    .map_err(common::store_exit)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "tenant {}: {verb} {} cursor(s), {} snapshot(s), {} task-ledger item(s), {} write-ledger \
         item(s), {} webhook dedupe item(s), {} link(s), {} config item(s)",
        args.tenant,
        counts.cursors,
        counts.snapshots,
        counts.tasks,
        counts.writes,
        counts.dedupe,
        counts.links,
        counts.config
    );
    if args.delete_secrets {
        for name in [&config.kareo.secret, &config.dock.secret] {
            let existed = if dry_run {
                None
            } else {
                Some(
                    match (&store, &args.secrets) {
                        (Store::Local(..), Some(file)) => LocalSecrets::remove(file, name),
                        (Store::Local(..), None) => return Err(Exit(
                            common::USAGE,
                            "give --secrets FILE (or KAREO_DOCK_SECRETS) to delete local secrets"
                                .into(),
                        )),
                        (Store::Dynamo(_), _) => {
                            let sdk = aws::sdk_config().await;
                            SecretsManagerSource::new(aws_sdk_secretsmanager::Client::new(&sdk))
                                .delete(name)
                                .await
                        }
                    }
                    .map_err(|e| Exit(common::REMOTE, e.to_string()))?,
                )
            };
            match existed {
                None => println!("secret {name}: would delete"),
                Some(true) => println!("secret {name}: deleted"),
                Some(false) => println!("secret {name}: not found"),
            }
        }
    }
    if dry_run {
        println!("dry run: nothing changed (run again with --yes to delete)");
    } else {
        println!("task ledger items written before the tenant was in their key are not found by tenant: they hold Dock task ids and states only and expire after {} days", domain::ports::LEDGER_TTL_DAYS);
    }
    Ok(ExitCode::SUCCESS)
}
