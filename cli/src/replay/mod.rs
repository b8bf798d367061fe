//! `kareo-dock replay`: redrives the task creations that failed for good.
//!
//! - Locally (`--state DIR`): every line of `<state>/dead-letters.jsonl` names an event (looked
//!   up in `<state>/events.jsonl`) and a rule; the events are delivered again through the task
//!   creation (the ledger skips what was done, a `failed` item is claimed anew), and the file
//!   is rewritten with what still fails.
//! - On AWS (`--queue-url URL`): every message of the task function's on-failure queue is a
//!   Lambda destination record; its `requestPayload` is invoked again (synchronously) on the
//!   task function (`--function`, else the record's `functionArn`), and the message is deleted
//!   only when that invocation succeeds.
//!
//! One path does both: where the letters are kept is the port [`letters::DeadLetters`] (the
//! file, the queue), how they are delivered again is the port [`redrive::Redrive`] (task
//! creation in this process, an `Invoke` of the function); [`replay`] checks, redrives and
//! settles every letter the same way whichever pair it is given.
//!
//! `--dry-run` lists what would be redriven and changes nothing. Output names ids, rules,
//! classes and counts — never a record's contents.

mod letters;
mod redrive;

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

use crate::common::{self, Outcome};
use letters::{DeadLetters, FileLetters, Letter, QueueLetters, Settled};
use redrive::{Counts, InProcess, Invoke, Redrive};

/// `replay` options.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["state", "queue_url"])))]
pub struct Args {
    /// Local state directory: redrive `<state>/dead-letters.jsonl`.
    #[arg(long, conflicts_with = "queue_url")]
    state: Option<PathBuf>,
    /// Secrets file (with `--state`).
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// Tenant config files (with `--state`); without it, the tenants stored in the state.
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
    /// The task function's on-failure SQS queue (AWS).
    #[arg(long)]
    queue_url: Option<String>,
    /// The task function to invoke (name or ARN); default: each record's `functionArn`.
    #[arg(long, env = "KAREO_DOCK_TASK_FUNCTION")]
    function: Option<String>,
    /// List what would be redriven; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 everything redriven (or nothing to do, or a dry run); 1 bad usage or an
/// unreadable dead-letter file; 2 a config or the secrets file is invalid; 3 SQS could not be
/// read; 4 some item still fails (kept in the file / left in the queue).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async {
        common::finish(match (&args.queue_url, &args.state) {
            (Some(url), _) => {
                let sdk = aws::sdk_config().await;
                let mut letters = QueueLetters::new(aws_sdk_sqs::Client::new(&sdk), url);
                replay(&args, &mut letters, Invoke::new(args.function.clone())).await
            }
            (None, Some(dir)) => {
                let mut letters = FileLetters::in_state(dir);
                let redrive =
                    InProcess::new(dir.clone(), args.configs.clone(), args.secrets.clone());
                replay(&args, &mut letters, redrive).await
            }
            (None, None) => unreachable!("clap: --state or --queue-url"),
        })
    })
}

/// What became of a dead letter (or a queue message).
#[derive(Debug, Serialize)]
struct Item {
    /// Event id (local) or message id (AWS).
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_id: Option<String>,
    /// Rule (local).
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// Function (AWS).
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<String>,
    /// Events in the message (AWS).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<usize>,
    /// `would_redrive`, `redriven`, `failed`.
    status: &'static str,
    /// The class of the (last) failure.
    class: String,
    /// Why it still fails (ids and names only).
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
}

/// The one redrive: every pending letter is checked, redriven (unless a dry run) and settled
/// where it is kept; the report names ids, rules, classes and counts.
async fn replay(args: &Args, letters: &mut impl DeadLetters, mut redrive: impl Redrive) -> Outcome {
    let pending = letters.pending().await?;
    if pending.is_empty() {
        return print(args, &[], "no dead letters");
    }
    // Each letter checked: unusable or without a target (settled as failed), or to redrive
    // (to `function`).
    let (mut settled, functions): (Vec<Settled>, Vec<Option<String>>) = pending
        .iter()
        .map(|letter| {
            match letter
                .unusable
                .clone()
                .map_or_else(|| redrive.target(letter), Err)
            {
                Err(f) => (Some(Err(f)), None),
                Ok(function) => (None, function),
            }
        })
        .unzip();
    let mut counts = Counts::default();
    if args.dry_run {
        // Nothing is settled, not even an unusable letter; the report shows the check.
        letters
            .settle(&pending, &mut vec![None; pending.len()])
            .await?;
    } else {
        if settled.iter().any(Option::is_none) {
            redrive.prepare().await?;
            for (letter, settled) in pending.iter().zip(settled.iter_mut()) {
                if settled.is_none() {
                    let r = redrive.redrive(letter).await;
                    counts += r.clone().unwrap_or_default();
                    *settled = Some(r.map(|_| ()));
                }
            }
        }
        letters.settle(&pending, &mut settled).await?;
    }
    let items: Vec<Item> = pending
        .iter()
        .zip(&settled)
        .zip(functions)
        .map(|((letter, settled), function)| item(letter, settled, function))
        .collect();
    if args.dry_run {
        return print(args, &items, "dry run: nothing changed");
    }
    let failed = items.iter().filter(|i| i.status == "failed").count();
    let summary = format!(
        "{} dead letter(s): {} redriven ({} task(s) created, {} workflow(s) deployed, {} already done); {failed} still failing{}",
        items.len(),
        items.len() - failed,
        counts.tasks,
        counts.workflows,
        counts.duplicates,
        if failed > 0 { format!(" ({})", letters.place()) } else { String::new() }
    );
    print(args, &items, &summary)?;
    Ok(if failed > 0 {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report line of a letter.
fn item(letter: &Letter, settled: &Settled, function: Option<String>) -> Item {
    let about = letter.events.first().filter(|_| letter.rule.is_some());
    let (status, class, reason) = match settled {
        None => ("would_redrive", letter.class.clone(), letter.reason.clone()),
        Some(Ok(())) => ("redriven", letter.class.clone(), String::new()),
        Some(Err(f)) => ("failed", f.class.clone(), f.reason.clone()),
    };
    Item {
        id: letter.id.clone(),
        tenant: about.map(|e| e.tenant.clone()),
        family: about.map(|e| e.family.name().to_string()),
        record_id: about.map(|e| e.record_id.clone()),
        rule: letter.rule.clone(),
        function,
        events: letter.rule.is_none().then_some(letter.count),
        status,
        class,
        reason,
    }
}

fn print(args: &Args, items: &[Item], summary: &str) -> Outcome {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dry_run": args.dry_run,
                "items": items,
                "redriven": items.iter().filter(|i| i.status == "redriven").count(),
                "failed": items.iter().filter(|i| i.status == "failed").count(),
                "summary": summary,
            }))
            .unwrap_or_default()
        );
    } else {
        for i in items {
            let what = match (&i.tenant, &i.family, &i.record_id, &i.rule) {
                (Some(t), Some(f), Some(r), Some(rule)) => {
                    format!("{t}/{f} record {r} rule '{rule}'")
                }
                (_, _, _, Some(rule)) => format!("rule '{rule}'"),
                _ => format!(
                    "{} event(s) -> {}",
                    i.events.unwrap_or(0),
                    i.function.as_deref().unwrap_or("?")
                ),
            };
            let status = match i.status {
                "failed" => format!("FAIL ({}): {}", i.class, i.reason),
                "would_redrive" => format!("would redrive (was {})", i.class),
                s => s.to_string(),
            };
            println!("{:<32}  {what}  {status}", i.id);
        }
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}
