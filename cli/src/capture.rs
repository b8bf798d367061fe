//! `kareo-dock kareo capture`: one real call of a Kareo operation, written as a support bundle
//! for a Tebra case — the request and the response XML with the credentials and every record
//! value replaced by placeholders ([`kareo::redact`]), and a note of what was done. Nothing of
//! the raw exchange is written or printed.

use std::path::PathBuf;
use std::process::ExitCode;

use domain::ports::kareo_credentials;
use domain::TenantConfig;
use kareo::{ClientConfig, KareoClient};

use crate::common::{self, Exit, Outcome};

/// `kareo capture` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The operation, e.g. GetPatients.
    #[arg(long)]
    op: String,
    /// JSON object with the request's members (Kareo's names), as `kareo envelope` takes it.
    #[arg(long)]
    input: PathBuf,
    /// The tenant config: its `kareo.secret` names the credentials.
    #[arg(long)]
    config: PathBuf,
    /// Secrets file; without it, Secrets Manager.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// Directory to write the bundle into (created).
    #[arg(long)]
    out: PathBuf,
}

/// Exit codes: 0 written (whatever Kareo answered: a fault is what a case is about); 1 bad
/// usage or input; 2 the config or the secret is invalid; 3 Kareo could not be reached or the
/// answer is not XML.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(capture(args).await) })
}

async fn capture(args: Args) -> Outcome {
    let t =
        TenantConfig::from_file(&args.config).map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.input.display())))?;
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Exit(
            common::USAGE,
            format!("{} is not JSON: {e}", args.input.display()),
        )
    })?;
    let secrets = common::open_secrets(args.secrets.as_deref(), true).await?;
    let creds = kareo_credentials(&secrets, &t.kareo.secret)
        .await
        .map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let mut cfg = ClientConfig::from_env();
    cfg.retry.max_retries = 0;
    let kareo = KareoClient::new(cfg).map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let at = chrono::Utc::now();
    let (request, status, response) = kareo
        .exchange(&creds, &args.op, &body)
        .await
        .map_err(|e| Exit(common::REMOTE, format!("{}: {e}", e.class())))?;
    let request = kareo::redact::redact(request.as_bytes())
        .map_err(|e| Exit(common::USAGE, format!("the request: {e}")))?;
    let response = kareo::redact::redact(&response).map_err(|e| {
        Exit(
            common::REMOTE,
            format!("Kareo's answer (HTTP {status}): {e}"),
        )
    })?;
    domain::local::private::dir(&args.out)
        .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.out.display())))?;
    let note = format!(
        "kareo-dock capture of {op}, {at} UTC, HTTP {status}.\n\n\
         request.xml and response.xml are the call as sent and as answered, with the customer key, \
         user name and password replaced by {{CUSTOMER_KEY}}, {{USER}} and {{PASSWORD}}, every \
         number by 0 and every other value by REDACTED. Element names, namespaces, attributes, \
         booleans, ClientVersion, ErrorResponse, SecurityResponse and SOAP faults are as Kareo \
         sent them.\n",
        op = args.op,
        at = at.format("%Y-%m-%d %H:%M:%S"),
    );
    for (name, text) in [
        ("request.xml", request.as_str()),
        ("response.xml", response.as_str()),
        ("README.txt", note.as_str()),
    ] {
        domain::local::private::write(&args.out.join(name), text.as_bytes())
            .map_err(|e| Exit(common::USAGE, format!("{}: {e}", args.out.display())))?;
    }
    println!(
        "wrote {} (request.xml, response.xml, README.txt): {} answered HTTP {status}; read it back with `kareo-dock kareo decode --op {} {}`",
        args.out.display(),
        args.op,
        args.op,
        args.out.join("response.xml").display()
    );
    Ok(ExitCode::SUCCESS)
}
