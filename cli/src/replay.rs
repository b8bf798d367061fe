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
//! `--dry-run` lists what would be redriven and changes nothing. Output names ids, rules,
//! classes and counts — never a record's contents.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use domain::ports::SystemClock;
use domain::ChangeEvent;
use kareo::{ClientConfig, KareoClient};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tasks::deliver::{deliver_batch, Delivery, DockTasks};

use crate::common::{self, Exit, Outcome, Store};

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
        common::finish(match &args.queue_url {
            Some(url) => aws(&args, url).await,
            None => local(&args).await,
        })
    })
}

/// A line of `dead-letters.jsonl` (`deliver::Failure`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadLetter {
    event: String,
    rule: String,
    class: String,
    reason: String,
    permanent: bool,
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

fn read_dead_letters(path: &Path) -> Result<Vec<DeadLetter>, Exit> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Exit(common::USAGE, format!("{}: {e}", path.display()))),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|_| {
                Exit(
                    common::USAGE,
                    format!(
                        "{}:{}: not a dead letter ({{event, rule, class, reason, permanent}})",
                        path.display(),
                        i + 1
                    ),
                )
            })
        })
        .collect()
}

/// The events with these ids from `events.jsonl` (the last copy of each).
fn find_events(path: &Path, ids: &HashSet<&str>) -> Result<HashMap<String, ChangeEvent>, Exit> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Exit(common::USAGE, format!("{}: {e}", path.display()))),
    };
    let mut out = HashMap::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Exit(common::USAGE, format!("{}: {e}", path.display())))?;
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        let Ok(Id { id }) = serde_json::from_str::<Id>(&line) else {
            continue;
        };
        if ids.contains(id.as_str()) {
            if let Ok(e) = serde_json::from_str::<ChangeEvent>(&line) {
                out.insert(id, e);
            }
        }
    }
    Ok(out)
}

// Long: the local redrive: read, match events, deliver, rewrite the file, report.
async fn local(args: &Args) -> Outcome {
    let dir = args.state.as_deref().expect("clap: --state or --queue-url");
    let dl_path = dir.join("dead-letters.jsonl");
    let letters = read_dead_letters(&dl_path)?;
    let ids: HashSet<&str> = letters.iter().map(|d| d.event.as_str()).collect();
    let events = find_events(&dir.join("events.jsonl"), &ids)?;
    let describe = |d: &DeadLetter, status: &'static str, class: String, reason: String| {
        let e = events.get(&d.event);
        Item {
            id: d.event.clone(),
            tenant: e.map(|e| e.tenant.clone()),
            family: e.map(|e| e.family.name().to_string()),
            record_id: e.map(|e| e.record_id.clone()),
            rule: Some(d.rule.clone()),
            function: None,
            events: None,
            status,
            class,
            reason,
        }
    };
    let mut items = Vec::new();
    if letters.is_empty() {
        return print(args, &items, "no dead letters");
    }
    if args.dry_run {
        for d in &letters {
            let (status, reason) = if events.contains_key(&d.event) {
                ("would_redrive", d.reason.clone())
            } else {
                ("failed", "the event is not in events.jsonl".to_string())
            };
            items.push(describe(d, status, d.class.clone(), reason));
        }
        print(args, &items, "dry run: nothing changed")?;
        return Ok(ExitCode::SUCCESS);
    }

    let store = common::open_store(Some(dir), None).await?;
    let Store::Local(ledger, _) = &store else {
        unreachable!("a directory opens a local store")
    };
    let tenants = common::tenants(&args.configs, Some(&store), None).await?;
    let secrets = common::open_secrets(args.secrets.as_deref(), false).await?;
    let kareo = KareoClient::new(ClientConfig::from_env())
        .map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let dock = DockTasks::new(
        dock::DockClient::new(dock::DockConfig::from_env())
            .map_err(|e| Exit(common::USAGE, e.to_string()))?,
    );
    let delivery = Delivery {
        dock: &dock,
        ledger,
        kareo: &kareo,
        clock: &SystemClock,
        owner: format!("cli-replay-{}", std::process::id()),
        lease: std::time::Duration::from_secs(300),
    };
    // Each event once, in the order of the file.
    let mut batch: Vec<ChangeEvent> = Vec::new();
    let mut queued = HashSet::new();
    for d in &letters {
        if let Some(e) = events.get(&d.event) {
            if queued.insert(d.event.clone()) {
                batch.push(e.clone());
            }
        }
    }
    let delivered = deliver_batch(&delivery, &secrets, &tenants, &batch).await;
    let mut still: Vec<DeadLetter> = delivered
        .failures
        .iter()
        .map(|f| DeadLetter {
            event: f.event.clone(),
            rule: f.rule.clone(),
            class: f.class.to_string(),
            reason: f.reason.clone(),
            permanent: f.permanent,
        })
        .collect();
    for d in &letters {
        if !events.contains_key(&d.event) {
            still.push(d.clone());
        }
    }
    for d in &letters {
        let now_failing: Vec<&DeadLetter> = still
            .iter()
            .filter(|s| s.event == d.event && (s.rule == d.rule || s.rule.is_empty()))
            .collect();
        items.push(match now_failing.first() {
            None => describe(d, "redriven", d.class.clone(), String::new()),
            Some(_) if !events.contains_key(&d.event) => describe(
                d,
                "failed",
                d.class.clone(),
                "the event is not in events.jsonl".into(),
            ),
            Some(s) => describe(d, "failed", s.class.clone(), s.reason.clone()),
        });
    }
    // Rewrite the file with what still fails (write, then rename).
    let mut text = String::new();
    for d in &still {
        text.push_str(&serde_json::to_string(d).unwrap_or_default());
        text.push('\n');
    }
    let tmp = dl_path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &dl_path))
        .map_err(|e| Exit(common::REMOTE, format!("{}: {e}", dl_path.display())))?;
    let summary = format!(
        "{} dead letter(s): {} task(s) created, {} workflow(s) deployed, {} already done; {} still failing{}",
        letters.len(),
        delivered.tasks,
        delivered.workflows,
        delivered.duplicates,
        still.len(),
        if still.is_empty() {
            String::new()
        } else {
            format!(" (kept in {})", dl_path.display())
        }
    );
    print(args, &items, &summary)?;
    Ok(if still.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(common::FAILED)
    })
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

/// What a destination record holds that the replay needs.
struct Record {
    payload: Value,
    function: Option<String>,
    events: usize,
}

fn parse_record(body: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(body).map_err(|_| "the message is not JSON".to_string())?;
    let payload = v
        .get("requestPayload")
        .filter(|p| !p.is_null())
        .cloned()
        .ok_or("the message is not a Lambda destination record (no requestPayload)")?;
    let function = v
        .pointer("/requestContext/functionArn")
        .and_then(Value::as_str)
        .map(str::to_string);
    let events = payload
        .get("events")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(Record {
        payload,
        function,
        events,
    })
}

// Long: the SQS redrive loop: receive, re-invoke, delete, report (to become one path with the local redrive behind a dead-letters port).
async fn aws(args: &Args, url: &str) -> Outcome {
    use aws_sdk_lambda::error::ProvideErrorMetadata;
    let sdk = aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let mut seen = HashSet::new();
    let mut release = Vec::new();
    let mut items = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| {
                Exit(
                    common::REMOTE,
                    format!(
                        "ReceiveMessage {url}: {}",
                        e.code()
                            .map(str::to_string)
                            .unwrap_or_else(|| e.to_string())
                    ),
                )
            })?;
        let messages = out.messages.unwrap_or_default();
        let mut new = 0;
        for m in messages {
            let id = m.message_id.clone().unwrap_or_default();
            let Some(handle) = m.receipt_handle.clone() else {
                continue;
            };
            if !seen.insert(id.clone()) {
                release.push(handle);
                continue;
            }
            new += 1;
            let mut item = Item {
                id,
                tenant: None,
                family: None,
                record_id: None,
                rule: None,
                function: None,
                events: None,
                status: "failed",
                class: String::new(),
                reason: String::new(),
            };
            let record = match parse_record(m.body().unwrap_or("")) {
                Ok(r) => r,
                Err(reason) => {
                    item.class = "malformed".into();
                    item.reason = reason;
                    items.push(item);
                    release.push(handle);
                    continue;
                }
            };
            item.events = Some(record.events);
            let Some(function) = args.function.clone().or(record.function) else {
                item.class = "no_function".into();
                item.reason = "the record names no function: give --function".into();
                items.push(item);
                release.push(handle);
                continue;
            };
            item.function = Some(function.clone());
            if args.dry_run {
                item.status = "would_redrive";
                item.class = "on_failure".into();
                items.push(item);
                release.push(handle);
                continue;
            }
            let body = serde_json::to_vec(&record.payload).unwrap_or_default();
            let invoked = lambda
                .invoke()
                .function_name(&function)
                .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
                .payload(aws_sdk_lambda::primitives::Blob::new(body))
                .send()
                .await;
            match invoked {
                Ok(out) if out.function_error().is_none() && out.status_code() / 100 == 2 => {
                    match sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(&handle)
                        .send()
                        .await
                    {
                        Ok(_) => {
                            item.status = "redriven";
                        }
                        Err(e) => {
                            item.class = "sqs_delete".into();
                            item.reason = format!(
                                "redriven, but the message could not be deleted: {}",
                                e.code().unwrap_or("error")
                            );
                        }
                    }
                }
                Ok(out) => {
                    let err: Value = out
                        .payload()
                        .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                        .unwrap_or(Value::Null);
                    item.class = err
                        .get("errorType")
                        .and_then(Value::as_str)
                        .or(out.function_error())
                        .unwrap_or("function_error")
                        .to_string();
                    let mut msg = err
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if msg.len() > 500 {
                        let mut cut = 500;
                        while !msg.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        msg.truncate(cut);
                        msg.push('…');
                    }
                    item.reason = msg;
                    release.push(handle);
                }
                Err(e) => {
                    item.class = "invoke".into();
                    item.reason = format!(
                        "Invoke {function}: {}",
                        e.code()
                            .map(str::to_string)
                            .unwrap_or_else(|| "no answer".into())
                    );
                    release.push(handle);
                }
            }
            items.push(item);
        }
        if new == 0 {
            break;
        }
    }
    // What stays in the queue is visible again at once (for the next replay or inspection).
    for h in release {
        let _ = sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(h)
            .visibility_timeout(0)
            .send()
            .await;
    }
    let failed = items.iter().filter(|i| i.status == "failed").count();
    let summary = if args.dry_run {
        format!(
            "dry run: {} message(s) would be redriven; nothing changed",
            items.len() - failed
        )
    } else {
        format!(
            "{} message(s): {} redriven and deleted, {failed} left in the queue",
            items.len(),
            items.iter().filter(|i| i.status == "redriven").count()
        )
    };
    print(args, &items, &summary)?;
    Ok(if failed > 0 && !args.dry_run {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
