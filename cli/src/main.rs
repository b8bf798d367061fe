//! `kareo-dock`: the operator CLI.
//!
//! Exit codes: 0 success; 1 bad input (a file, an option, a request the schema rejects);
//! 2 an invalid tenant config or secrets file; 3 a remote error (`kareo decode`: the Kareo
//! response holds an error — fault, throttle, security, API error, schema mismatch, malformed
//! XML; the operator verbs: the state store, Secrets Manager, SQS or Lambda failed); 4 the
//! verb ran but some item failed (a check, a poll run, a task, a redrive).

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backfill;
mod capture;
mod check;
mod common;
mod cursor;
mod demo;
mod mapping;
mod obs;
mod onboard;
mod probe;
mod replay;
mod status;
mod sync;
mod tenant;
mod webhook;
mod write;
use kareo::envelope::{self, Credentials};
use kareo::{KareoError, ResponseReader};

#[derive(Parser)]
#[command(
    name = "kareo-dock",
    version,
    about = "Kareo → Dock Health integration: operator tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr; the level comes from RUST_LOG (default warn). Logs carry ids,
    /// counts, windows, durations and outcomes, never record content or secrets.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: obs::LogFormat,
    /// Append CloudWatch Embedded Metric Format lines (as the Lambda functions print) here.
    #[arg(long, global = true, env = "KAREO_DOCK_METRICS")]
    metrics: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the product on embedded defaults (no account needed): starts the Kareo and Dock
    /// simulators on loopback, polls every family of the sample practice
    /// (examples/demo-practice.yaml), creates the Dock tasks its mapping asks for, changes
    /// records, polls again and prints what happened.
    Demo {
        /// Put canary values in every patient field first (the PHI-leak test).
        #[arg(long, hide = true)]
        phi_canary: bool,
    },
    /// Poll every enabled family of the given tenants once, in this process, with local state:
    /// cursors and snapshots in `--state`, change events appended to `<state>/events.jsonl`.
    /// Kareo is `KAREO_ENDPOINT` (default: production).
    Sync {
        /// Run once and exit (the only mode: schedules belong to EventBridge).
        #[arg(long)]
        once: bool,
        /// Tenant config files (YAML).
        #[arg(long = "config", required = true)]
        configs: Vec<PathBuf>,
        /// Secrets file: {"<secret name>": {...}, ...}.
        #[arg(long, env = "KAREO_DOCK_SECRETS")]
        secrets: PathBuf,
        /// State directory.
        #[arg(long)]
        state: PathBuf,
        /// Only this family.
        #[arg(long)]
        family: Option<String>,
        /// Read and report; hand off and write nothing.
        #[arg(long, conflicts_with = "audit")]
        dry_run: bool,
        /// The coverage audit instead of a poll: re-read the last 7 days, hand off (exactly
        /// once) any version no poll handed off, report what was healed; cursors stay.
        #[arg(long)]
        audit: bool,
        /// Append events to `<state>/events.jsonl` only; create no Dock task.
        #[arg(long)]
        no_tasks: bool,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that tenants are ready: Kareo credentials and permissions (a read of each
    /// enabled family), the Dock token, and every list, group, workflow template and assignee
    /// the mapping names — one verdict per item. Exit 4 when any item fails.
    Check(check::Args),
    /// Take a practice's Kareo credentials from the open tasks of its Dock list (default
    /// `Kareo`, where Dock's page tells it to paste them), sign in once to validate them
    /// (GetPractices, the practice, GetCustomerIdFromKey, a read per enabled family), store
    /// them under the tenant's `kareo.secret`, and scrub and complete the tasks. Prints and
    /// logs no value. `--dry-run` validates only.
    Onboard(onboard::Args),
    /// The practice's mapping form (Kareo Interface, Dock Workflow/SmartFlow Name, Dock Task
    /// List Name, …) in and out of a tenant config's `rules:`.
    Mapping {
        #[command(subcommand)]
        verb: mapping::Verb,
    },
    /// Per tenant and family: cursor position, lag (now − position), last success and the
    /// class of the last error. Exit 4 when some cursor's last run failed.
    Status(status::Args),
    /// Re-read from a date (with a progress bar over the windows) and hand off what changed,
    /// optionally without creating tasks.
    Backfill(backfill::Args),
    /// Cursor operations.
    Cursor {
        #[command(subcommand)]
        verb: cursor::Verb,
    },
    /// Tenant configurations.
    Tenant {
        #[command(subcommand)]
        verb: tenant::Verb,
    },
    /// The tenant's Dock webhook endpoint: register it through Dock's API, or print a new URL
    /// to register by hand. Each mints a new URL token (the old URL stops working).
    Webhook {
        #[command(subcommand)]
        verb: webhook::Verb,
    },
    /// Redrive the task creations that failed for good: the local dead-letter file, or the
    /// task function's on-failure SQS queue. `--dry-run` lists them.
    Replay(replay::Args),
    /// Run one write-back command (JSON {"id","tenant","op","data"}) against Kareo, exactly
    /// once per command id (ledger in --state), and print the result JSON. Kareo is
    /// `KAREO_ENDPOINT` (default: production). Exit codes: 0 done, 2 invalid input, 3 rejected,
    /// 4 needs review, 5 retry later.
    Write {
        /// Tenant config file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Secrets file: {"<secret name>": {...}, ...}.
        #[arg(long, env = "KAREO_DOCK_SECRETS")]
        secrets: PathBuf,
        /// State directory (the ledger).
        #[arg(long, default_value = "kareo-dock-state")]
        state: PathBuf,
        /// The command file.
        command: PathBuf,
    },
    /// Debugging verbs for Kareo's SOAP API.
    Kareo {
        #[command(subcommand)]
        verb: KareoVerb,
    },
}

#[derive(Subcommand)]
enum KareoVerb {
    /// Read a captured Kareo response and print each record as one JSON object per line (or
    /// the typed error, with the text Kareo sent).
    Decode {
        /// The operation the response answers, e.g. GetPatients.
        #[arg(long)]
        op: String,
        /// The captured response body (the whole SOAP envelope).
        file: PathBuf,
    },
    /// Make one real call and write it as a support bundle for a Tebra case: the request and
    /// response XML with the credentials and every record value replaced by placeholders.
    Capture(capture::Args),
    /// Print the request envelope the client would send for a JSON request body, with
    /// placeholder credentials.
    Envelope {
        /// The operation, e.g. GetAppointments.
        #[arg(long)]
        op: String,
        /// JSON object with the request's members (Kareo's names), e.g.
        /// {"Fields": {}, "Filter": {"PracticeName": "…"}}. Order does not matter.
        #[arg(long)]
        input: PathBuf,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 1 (clap's own default is 2, which here means an invalid config).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if let Err(e) = obs::init(cli.log_format, cli.metrics.as_ref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo { phi_canary } => demo::run(phi_canary),
        Command::Sync {
            once: _,
            configs,
            secrets,
            state,
            family,
            dry_run,
            audit,
            no_tasks,
            json,
        } => sync::run(sync::SyncArgs {
            configs: &configs,
            secrets: &secrets,
            state: &state,
            family: family.as_deref(),
            dry_run,
            audit,
            no_tasks,
            json,
        }),
        Command::Check(args) => check::run(args),
        Command::Onboard(args) => onboard::run(args),
        Command::Mapping { verb } => mapping::run(verb),
        Command::Status(args) => status::run(args),
        Command::Backfill(args) => backfill::run(args),
        Command::Cursor { verb } => cursor::run(verb),
        Command::Tenant { verb } => tenant::run(verb),
        Command::Replay(args) => replay::run(args),
        Command::Webhook { verb } => webhook::run(verb),
        Command::Write {
            config,
            secrets,
            state,
            command,
        } => write::run(&config, &secrets, &state, &command),
        Command::Kareo { verb } => match verb {
            KareoVerb::Decode { op, file } => decode(&op, &file),
            KareoVerb::Envelope { op, input } => envelope_verb(&op, &input),
            KareoVerb::Capture(args) => capture::run(args),
        },
    }
}

fn decode(op: &str, file: &PathBuf) -> anyhow::Result<ExitCode> {
    let op = envelope::operation(op)?;
    let f = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let mut reader = ResponseReader::new(op, BufReader::with_capacity(64 * 1024, f));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = 0u64;
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                n += 1;
                serde_json::to_writer(&mut out, &rec.to_json())?;
                out.write_all(b"\n")?;
            }
            Ok(None) => break,
            Err(e) => {
                out.flush()?;
                report(&e, n);
                return Ok(ExitCode::from(3));
            }
        }
    }
    if let Some(k) = reader.next_start_key() {
        eprintln!("nextStartKey: {k}");
    }
    eprintln!("{n} record(s)");
    Ok(ExitCode::SUCCESS)
}

fn report(e: &KareoError, records_before: u64) {
    eprintln!("error ({}): {e}", e.class());
    if let Some(text) = e.kareo_text().filter(|t| !t.is_empty()) {
        eprintln!("kareo said: {text}");
    }
    eprintln!(
        "retryable: {}; {records_before} record(s) read before the error",
        e.is_retryable()
    );
}

fn envelope_verb(op: &str, input: &PathBuf) -> anyhow::Result<ExitCode> {
    let op = envelope::operation(op)?;
    let text = std::fs::read_to_string(input)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", input.display()))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", input.display()))?;
    match envelope::write(
        op,
        &Credentials::placeholder(),
        "kareo-dock/envelope",
        &body,
    ) {
        Ok(xml) => {
            println!("SOAPAction: {}", envelope::soap_action(op.name));
            println!("{xml}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
