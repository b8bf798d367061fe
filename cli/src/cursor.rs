//! `kareo-dock cursor reset`: moves a (tenant, family) cursor, e.g. to re-read from a date
//! on the next poll, or clears it so the next poll starts over from the config's `start`.

use std::process::ExitCode;

use domain::ports::CursorStore;

use crate::common::{self, Exit, Outcome, StoreArgs};

/// `cursor` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Set a cursor's position (the next poll reads from there, minus the family's lookback),
    /// or clear it without `--to` (the next poll starts from the config's `start`). A run that
    /// holds the cursor's lease loses its next write and stops.
    Reset(ResetArgs),
}

/// `cursor reset` options.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// Tenant id.
    #[arg(long)]
    tenant: String,
    /// Family (`appointments`, `patients`, …).
    #[arg(long)]
    family: String,
    /// New position: a date (`2026-09-01`, midnight UTC) or an RFC 3339 instant; not in the
    /// future. Without it the cursor is cleared.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 reset; 1 bad tenant, family or date; 3 the state could not be written.
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    let Verb::Reset(args) = verb;
    common::runtime()?.block_on(async { common::finish(reset(args).await) })
}

async fn reset(args: ResetArgs) -> Outcome {
    let family = common::family(&args.family)?;
    let to = args
        .to
        .as_deref()
        .map(|t| common::instant(t, "--to"))
        .transpose()?;
    if args.tenant.is_empty() {
        return Err(Exit(common::USAGE, "--tenant is empty".into()));
    }
    let store = args.store.open().await?;
    let before = store
        .load(&args.tenant, family)
        .await
        .map_err(common::store_exit)?;
    store
        .reset(&args.tenant, family, to)
        .await
        .map_err(common::store_exit)?;
    let was = before.as_ref().and_then(|c| c.position);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "tenant": args.tenant,
                "family": family.name(),
                "was": was,
                "position": to,
                "created": before.is_none(),
            })
        );
    } else {
        println!(
            "cursor {}/{}: {} -> {}{}",
            args.tenant,
            family.name(),
            common::when(was),
            to.map(|t| common::when(Some(t)))
                .unwrap_or_else(|| "cleared (next poll starts from the config's start)".into()),
            if before.is_none() {
                " (new cursor)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
