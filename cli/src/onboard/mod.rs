//! `kareo-dock onboard`: a practice's Kareo credentials, taken from where Dock's page tells
//! the practice to paste them — the open tasks of a Dock list (default `Kareo`) — validated
//! live, stored under the tenant's `kareo.secret`, and scrubbed from Dock. In this order, each
//! step only when the one before it succeeded:
//!
//! 1. read the key, user name and password from the tasks ([`intake`]);
//! 2. sign in once with GetPractices — its `SecurityResponse` says which of the key, the
//!    sign-in or the permissions failed, where GetCustomerIdFromKey answers one boolean — and
//!    stop at the first refusal with what the practice should do (Tebra locks a user after
//!    failed sign-ins: nothing here retries one); then the practice, GetCustomerIdFromKey,
//!    and a read of every enabled family (the user's permission for each interface);
//! 3. store the secret (a new version of a Secrets Manager secret, created when absent; or
//!    the local secrets file), and close the account's credentials breaker when a state is
//!    given;
//! 4. scrub each task that held a value (title and details replaced by a dated note, no value)
//!    and complete it; then read Dock's event history for the tasks and say whether it still
//!    holds the old text (the API cannot delete events).
//!
//! `--dry-run` stops after step 2. Nothing printed or logged carries a value.

pub mod intake;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use dock::{DockClient, DockConfig, DockSecret, TaskPatch, TaskQuery, TaskStatus};
use domain::local::LocalSecrets;
use domain::ports::{credentials_fingerprint, BreakerStore};
use domain::TenantConfig;
use kareo::{ClientConfig, Credentials, KareoClient, KareoError};
use tasks::deliver::dock_secret;

use crate::common::{self, kareo_fail, Exit, Outcome};

/// `onboard` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tenant config (YAML): `kareo.secret` names the secret to store, `dock.secret` the
    /// Dock credentials the list is read with.
    #[arg(long)]
    config: PathBuf,
    /// The Dock list the practice pasted the credentials into.
    #[arg(long, default_value = "Kareo")]
    list: String,
    /// Secrets file to read the Dock secret from and store the Kareo secret in; without it,
    /// Secrets Manager.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// KMS key of a Secrets Manager secret this creates (default: the account's
    /// `aws/secretsmanager` key). Use the deployment's secrets key.
    #[arg(long)]
    kms_key: Option<String>,
    /// Local state directory: an open credentials breaker of the account is closed.
    #[arg(long, conflicts_with = "table")]
    state: Option<PathBuf>,
    /// DynamoDB state table: an open credentials breaker of the account is closed.
    #[arg(long)]
    table: Option<String>,
    /// Read and validate, and report; store nothing, scrub nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Exit codes: 0 stored and scrubbed (or, with `--dry-run`, valid); 1 bad usage; 2 the config
/// or the secrets file is invalid; 3 Dock, the secret store or the state could not be reached;
/// 4 the credentials were not found, not accepted by Kareo, or not scrubbed (the output says
/// which, and what to do).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(onboard(args).await) })
}

fn say(tenant: &str, item: &str, text: impl std::fmt::Display) {
    println!("{tenant:<16} {item:<28} {text}");
}

fn failed(tenant: &str, item: &str, text: impl std::fmt::Display) -> Exit {
    say(tenant, item, format_args!("FAIL: {text}"));
    Exit(
        common::FAILED,
        format!("onboard of {tenant} stopped at: {item}"),
    )
}

// Long: the steps in the order the module doc gives, each stopping the verb when it fails.
async fn onboard(args: Args) -> Outcome {
    let t =
        TenantConfig::from_file(&args.config).map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let tn = t.tenant.as_str();
    let secrets = common::open_secrets(args.secrets.as_deref(), true).await?;
    let dock_secret = dock_secret(&secrets, &t)
        .await
        .map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let dock =
        DockClient::new(DockConfig::from_env()).map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let dock_fail = |e: dock::DockError| Exit(common::REMOTE, format!("Dock: {}: {e}", e.class()));

    // 1. The tasks.
    let lists = dock
        .list_task_lists(&dock_secret)
        .await
        .map_err(dock_fail)?;
    let Some(list) = lists
        .iter()
        .find(|l| l.list_name.trim().eq_ignore_ascii_case(args.list.trim()))
    else {
        return Err(failed(
            tn,
            "dock list",
            format_args!(
                "no list named '{}' is visible to the integration user: the practice creates it (Dock's page: a new list called \"Kareo\") and adds the integration user to it",
                args.list
            ),
        ));
    };
    let tasks: Vec<dock::Task> = dock
        .list_tasks(&dock_secret, &TaskQuery::list(list.id.clone()))
        .await
        .map_err(dock_fail)?
        .into_iter()
        .filter(|t| t.status != Some(TaskStatus::Complete))
        .collect();
    let texts: Vec<intake::TaskText> = tasks
        .iter()
        .map(|k| intake::TaskText {
            id: &k.id,
            title: k.description.as_deref().unwrap_or(""),
            details: k.details.as_deref().unwrap_or(""),
        })
        .collect();
    let found = match intake::read(&texts) {
        Ok(f) => f,
        Err(e) => {
            return Err(failed(
                tn,
                "credentials",
                format_args!("{e} ({} open task(s) in '{}')", texts.len(), args.list),
            ))
        }
    };
    say(
        tn,
        "credentials",
        format_args!(
            "found in {} open task(s) of '{}': customer key, user name, password",
            found.tasks.len(),
            args.list
        ),
    );
    let creds = &found.credentials;

    // 2. Kareo, live: one sign-in, no retry.
    let mut cfg = ClientConfig::from_env();
    cfg.retry.max_retries = 0;
    let kareo = KareoClient::new(cfg).map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let practice_id = validate(&kareo, creds, &t).await?;

    if args.dry_run {
        say(
            tn,
            "dry run",
            format_args!(
                "valid; would store secret '{}' and scrub {} task(s)",
                t.kareo.secret,
                found.tasks.len()
            ),
        );
        return Ok(ExitCode::SUCCESS);
    }

    // 3. Store, then close the breaker.
    let value = serde_json::to_value(creds).expect("credentials serialize");
    let created = match (&args.secrets, &secrets) {
        (Some(path), _) => LocalSecrets::store(path, &t.kareo.secret, value),
        (None, common::Secrets::Aws(sm)) => {
            sm.put(&t.kareo.secret, &value.to_string(), args.kms_key.as_deref())
                .await
        }
        (None, common::Secrets::Local(_)) => unreachable!("a local source has a file"),
    }
    .map_err(|e| Exit(common::REMOTE, e.to_string()))?;
    say(
        tn,
        &format!("secret '{}'", t.kareo.secret),
        if created {
            "created"
        } else {
            "stored (a new version)"
        },
    );
    if args.state.is_some() || args.table.is_some() {
        let store = common::open_store(args.state.as_deref(), args.table.as_deref()).await?;
        let open = store
            .breaker(&t.kareo.secret)
            .await
            .map_err(common::store_exit)?;
        if let Some(b) = open {
            let same = b.fingerprint == credentials_fingerprint(creds);
            store
                .close_breaker(&t.kareo.secret)
                .await
                .map_err(common::store_exit)?;
            say(
                tn,
                "kareo breaker",
                format_args!(
                    "closed (open since {}{})",
                    common::when(Some(b.opened_at)),
                    if same {
                        "; these are the credentials it opened on, and Kareo accepted them now"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    // 4. Scrub.
    let now = Utc::now();
    let mut unscrubbed = Vec::new();
    for id in &found.tasks {
        let patch = TaskPatch {
            description: Some(format!(
                "Kareo credentials received and stored ({})",
                now.format("%Y-%m-%d")
            )),
            details: Some(format!(
                "kareo-dock onboard stored the customer key, user name and password that were in this task in the integration's secret store on {} and removed them from this task.",
                now.format("%Y-%m-%d %H:%M UTC")
            )),
            status: Some(TaskStatus::Complete),
            ..TaskPatch::default()
        };
        match dock.patch_task(&dock_secret, id, &patch).await {
            Ok(_) => say(tn, &format!("dock task {id}"), "scrubbed and completed"),
            Err(e) => {
                say(
                    tn,
                    &format!("dock task {id}"),
                    format_args!("FAIL: {}: {e}", e.class()),
                );
                unscrubbed.push(id.clone());
            }
        }
    }
    history(tn, &dock, &dock_secret, &tasks, &found, now).await;
    if practice_id.is_some() && t.kareo.practice_id.is_none() {
        say(
            tn,
            "next",
            format_args!(
                "set `kareo.practice_id: {}` in the tenant config, then `kareo-dock check`",
                practice_id.unwrap_or_default()
            ),
        );
    }
    if !unscrubbed.is_empty() {
        return Err(Exit(
            common::FAILED,
            format!(
                "the secret is stored, but Dock task(s) {} still hold the credentials: delete their text by hand, or run onboard again",
                unscrubbed.join(", ")
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The live checks: the sign-in (GetPractices), the practice, GetCustomerIdFromKey, a read of
/// every enabled family. Returns the practice id; stops at the first failure.
async fn validate(
    kareo: &KareoClient,
    creds: &Credentials,
    t: &TenantConfig,
) -> Result<Option<String>, Exit> {
    let tn = t.tenant.as_str();
    // The sign-in is the practice's lookup: one call, whose SecurityResponse classifies.
    let id = match crate::check::practice(kareo, creds, t).await {
        Err(e) => return Err(failed(tn, "kareo sign-in", advice(&e))),
        Ok(r) => r.map_err(|e| failed(tn, "kareo practice", e))?,
    };
    let customer = kareo
        .customer_id(creds)
        .await
        .map_err(|e| failed(tn, "kareo customer", advice(&e)))?;
    say(
        tn,
        "kareo sign-in",
        format_args!(
            "ok (customer {}; practice id {id})",
            customer
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into())
        ),
    );
    let mut denied = Vec::new();
    for (family, op, r) in crate::check::read_families(kareo, creds, t).await {
        match r {
            Ok(_) => say(
                tn,
                &format!("kareo read {}", family.name()),
                format_args!("ok ({op})"),
            ),
            Err(e) => {
                say(
                    tn,
                    &format!("kareo read {}", family.name()),
                    format_args!("FAIL: {}", advice(&e)),
                );
                denied.push(family.name());
            }
        }
    }
    if !denied.is_empty() {
        return Err(Exit(
            common::FAILED,
            format!(
                "onboard of {tn} stopped: Kareo refused the reads of {}; nothing was stored",
                denied.join(", ")
            ),
        ));
    }
    Ok(Some(id))
}

/// What a Kareo refusal means for the practice, and what it should do. Kareo's own text is
/// read (for a lock) and never shown.
fn advice(e: &KareoError) -> String {
    let KareoError::Security { op, flags, .. } = e else {
        return kareo_fail(e);
    };
    let locked = e
        .kareo_text()
        .is_some_and(|t| t.to_ascii_lowercase().contains("lock"));
    if flags.customer_key_invalid {
        "Kareo does not know this customer key: the practice asks Tebra Customer Care for it (a support case), then pastes it into a new task of the list".into()
    } else if flags.not_authenticated && locked {
        "the Kareo user is locked after failed sign-ins: a Kareo system administrator unlocks it (Settings > Users); then run onboard again. Onboard signed in once and does not retry".into()
    } else if flags.not_authenticated {
        "Kareo refused the user name or password: the practice signs in to Kareo once as this user in a browser (the first sign-in sets up two-factor authentication), then pastes the user name and password that worked into a new task of the list. Onboard signed in once and does not retry: repeated failures lock the user".into()
    } else if flags.not_authorized || !flags.permissions_missing.is_empty() {
        format!(
            "the user may not call {op}{}: give the Kareo user the System Administrator role",
            if flags.permissions_missing.is_empty() {
                String::new()
            } else {
                format!(" (missing: {})", flags.permissions_missing.join(", "))
            }
        )
    } else {
        kareo_fail(e)
    }
}

/// Whether Dock's event history still holds the scrubbed text (compared here, never shown).
async fn history(
    tn: &str,
    dock: &DockClient,
    secret: &DockSecret,
    tasks: &[dock::Task],
    found: &intake::Intake,
    now: DateTime<Utc>,
) {
    let held: Vec<&dock::Task> = tasks
        .iter()
        .filter(|k| found.tasks.contains(&k.id))
        .collect();
    let since = held
        .iter()
        .filter_map(|k| k.created_date_time.as_deref())
        .filter_map(|c| DateTime::parse_from_rfc3339(c).ok())
        .map(|c| c.with_timezone(&Utc))
        .min()
        .unwrap_or(now - chrono::Duration::days(30))
        - chrono::Duration::minutes(1);
    let c = &found.credentials;
    let values = [&c.customer_key, &c.user, &c.password];
    match dock
        .list_events(secret, since, now + chrono::Duration::minutes(1), None)
        .await
    {
        Ok(events) => {
            let keeping: Vec<&serde_json::Value> = events
                .iter()
                .filter(|e| {
                    let target = |p: &str| e.pointer(p).and_then(|v| v.as_str());
                    held.iter().any(|k| {
                        target("/audit/targetIdentifier") == Some(k.id.as_str())
                            || target("/targetIdentifier") == Some(k.id.as_str())
                    })
                })
                .filter(|e| {
                    let text = e.to_string();
                    values.iter().any(|v| text.contains(v.as_str()))
                })
                .collect();
            if keeping.is_empty() {
                say(tn, "dock event history", "holds none of the values");
            } else {
                say(
                    tn,
                    "dock event history",
                    format_args!(
                        "WARN: {} event(s) of the scrubbed task(s) still hold the old text (Dock keeps what an edit replaced; its API cannot delete events): ask Dock support (support@dock.health) to purge the events of these tasks",
                        keeping.len()
                    ),
                );
            }
        }
        Err(e) => say(
            tn,
            "dock event history",
            format_args!(
                "WARN: not read ({}): Dock may keep the old text in the tasks' event history",
                e.class()
            ),
        ),
    }
}
