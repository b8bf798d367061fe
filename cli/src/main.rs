//! `kareo-dock`: the operator CLI.
//!
//! Exit codes: 0 success; 1 bad input (a file, an option, a request the schema rejects);
//! 3 the Kareo response holds an error (fault, throttle, security, API error, schema
//! mismatch, malformed XML).

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod sync;
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
}

#[derive(Subcommand)]
enum Command {
    /// Run the product on embedded defaults: starts the Kareo simulator on loopback and reads
    /// every family of a sample practice through the real client (no account needed).
    Demo,
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
        #[arg(long)]
        dry_run: bool,
        /// Append events to `<state>/events.jsonl` only; create no Dock task.
        #[arg(long)]
        no_tasks: bool,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
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
    let cli = Cli::parse();
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
        Command::Demo => demo::run(),
        Command::Sync {
            once: _,
            configs,
            secrets,
            state,
            family,
            dry_run,
            no_tasks,
            json,
        } => sync::run(sync::SyncArgs {
            configs: &configs,
            secrets: &secrets,
            state: &state,
            family: family.as_deref(),
            dry_run,
            no_tasks,
            json,
        }),
        Command::Kareo { verb } => match verb {
            KareoVerb::Decode { op, file } => decode(&op, &file),
            KareoVerb::Envelope { op, input } => envelope_verb(&op, &input),
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
