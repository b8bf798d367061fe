//! `kareo-dock webhook register | url | catch-up`: a tenant's Dock webhook endpoint.
//!
//! The endpoint is `<base>/<tenant>/<token>`: the token (32 random bytes) is the URL's
//! capability — the webhook function refuses any request without it before reading a secret
//! or the state — and only its SHA-256 is stored. Dock's verification challenge is answered
//! only while the registration is *armed*, for [`gate::ARMED_FOR`] after one of these verbs.
//!
//! - `register` mints a token, arms the challenge, waits for running functions to see it
//!   ([`gate::DIRECTORY_TTL`]), creates or updates the webhook through Dock's API (`POST` /
//!   `PUT /api/v1/webhook`, with the tenant's `webhook_secret` and the event types its rules
//!   name), waits until Dock reports it verified, disarms, and prints the URL.
//! - `url` mints a token and arms the challenge, and prints the URL for an operator who
//!   registers by hand in Dock (within the armed window).
//!
//! - `catch-up` reads the tenant's recent events back from Dock's event log and runs those
//!   never delivered (what the webhook function's schedule does hourly).
//!
//! Either one of the first two rotates the token: the old URL stops working once the functions see the new
//! registration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dock::{DockClient, DockConfig, DockSecret, WebhookBody};
use domain::ports::SystemClock;
use domain::ports::{HookStore, SecretSource};
use domain::TenantConfig;
use writeback::webhook::gate::{self, webhook_url};
use writeback::webhook::{Directory, Hooks, Token, WebhookSecret};
use writeback::write::Writer;

use crate::common::{self, Exit, Outcome, Store, StoreArgs};

/// `webhook` verbs.
#[derive(clap::Subcommand, Debug)]
pub enum Verb {
    /// Register the tenant's webhook in Dock through Dock's API (create, or update the one
    /// registered before) with a new URL token, and wait until Dock has verified it. Exit 4
    /// when Dock did not verify it in time.
    Register(RegisterArgs),
    /// Mint a new URL token, arm the verification challenge for 10 minutes, and print the URL
    /// to enter in Dock by hand (with the tenant's webhook_secret).
    Url(Common),
    /// Read back from Dock's event log the tenant's events of the last hours (those its rules
    /// name) and run the ones never delivered, through the same dedupe and rules as a
    /// delivery — what the webhook function's hourly schedule does. Prints the counts; exit 4
    /// when some event must be retried.
    CatchUp(CatchUpArgs),
}

/// `webhook catch-up` options.
#[derive(clap::Args, Debug)]
pub struct CatchUpArgs {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// How far back to read (at most six days: the dedupe remembers events for seven).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    #[command(flatten)]
    store: StoreArgs,
    /// Tenant config file (default: the stored one).
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
    /// Secrets file (with --state); with --table, Secrets Manager.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
}

/// What both verbs need.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The webhook function's URL (the stack's `WebhookUrl` output), or a local endpoint.
    #[arg(long, env = "KAREO_DOCK_WEBHOOK_BASE")]
    base_url: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Tenant config file (default: the stored one).
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
}

/// `webhook register` options.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    common: Common,
    /// Secrets file (with --state); with --table, Secrets Manager.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// Dock event types to subscribe (default: those the tenant's webhook rules name).
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
    /// How long to wait after storing the new token before telling Dock (running functions
    /// read registrations again after at most 15 s).
    #[arg(long, default_value = "16s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// How long to wait for Dock to verify the endpoint.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// Runs a `webhook` verb.
pub fn run(verb: Verb) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async {
        common::finish(match verb {
            Verb::Register(a) => register(a).await,
            Verb::Url(a) => url(a).await,
            Verb::CatchUp(a) => catch_up(a).await,
        })
    })
}

async fn tenant_of(c: &Common, store: &Store) -> Result<TenantConfig, Exit> {
    let t = common::tenants(&c.configs, Some(store), Some(&c.tenant))
        .await?
        .remove(0);
    if !t.hooks.enabled {
        return Err(Exit(
            common::USAGE,
            format!("tenant '{}' has no webhooks: section", t.tenant),
        ));
    }
    Ok(t)
}

/// Stores a new token's registration, armed; returns the token and the previous webhook id.
async fn arm(store: &Store, tenant: &str) -> Result<(Token, Option<String>), Exit> {
    let previous = store.hook(tenant).await.map_err(common::store_exit)?;
    let token = Token::generate();
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::from_std(gate::ARMED_FOR).unwrap_or_default();
    let webhook_id = previous.and_then(|p| p.webhook_id);
    let reg = token.registration(now, Some(until), webhook_id.clone());
    store
        .put_hook(tenant, &reg)
        .await
        .map_err(common::store_exit)?;
    Ok((token, webhook_id))
}

async fn catch_up(a: CatchUpArgs) -> Outcome {
    let max = Duration::from_secs((writeback::webhook::DEDUPE_TTL_DAYS as u64 - 1) * 86_400);
    if a.since > max || a.since.is_zero() {
        return Err(Exit(
            common::USAGE,
            "--since must be more than 0 and at most 6 days (the dedupe remembers events 7)".into(),
        ));
    }
    let store = a.store.open().await?;
    let mut tenants = common::tenants(&a.configs, Some(&store), Some(&a.tenant)).await?;
    let tenant = tenants.remove(0);
    if !tenant.hooks.enabled {
        return Err(Exit(
            common::USAGE,
            format!("tenant '{}' has no webhooks: section", tenant.tenant),
        ));
    }
    let secrets = common::open_secrets(a.secrets.as_deref(), a.store.table.is_some()).await?;
    let kareo = kareo::KareoClient::new(kareo::ClientConfig::from_env())
        .map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let dock =
        DockClient::new(DockConfig::from_env()).map_err(|e| Exit(common::USAGE, e.to_string()))?;
    // The catch-up is given its tenant: it needs no registration or directory lookup.
    let directory = Directory::default();
    let writer = Writer::new(
        &kareo,
        &store,
        &SystemClock,
        format!("cli-{}", std::process::id()),
    );
    let hooks = Hooks {
        writer: &writer,
        dock: &dock,
        secrets: &secrets,
        directory: &directory,
        store: &store,
    };
    let end = chrono::Utc::now();
    let start = end - chrono::Duration::from_std(a.since).unwrap_or_default();
    let r = hooks
        .catch_up(&tenant, start, end)
        .await
        .map_err(|e| Exit(common::REMOTE, e))?;
    println!(
        "{}: {} events read back, {} run now, {} already handled, {} ignored, {} to retry, {} refused",
        tenant.tenant, r.fetched, r.processed, r.duplicates, r.ignored, r.retry, r.refused
    );
    Ok(if r.retry > 0 {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn url(c: Common) -> Outcome {
    let store = c.store.open().await?;
    let tenant = tenant_of(&c, &store).await?;
    let (token, _) = arm(&store, &tenant.tenant).await?;
    println!("{}", webhook_url(&c.base_url, &tenant.tenant, &token));
    eprintln!(
        "armed for {} min: create or update the webhook in Dock now, with the webhook_secret of secret '{}'. \
         The previous URL of this tenant stops working within {} s.",
        gate::ARMED_FOR.as_secs() / 60,
        tenant.dock.secret,
        gate::DIRECTORY_TTL.as_secs()
    );
    Ok(ExitCode::SUCCESS)
}

// Long: the registration steps against Dock in order: token, create or update, wait, disarm.
async fn register(a: RegisterArgs) -> Outcome {
    let store = a.common.store.open().await?;
    let tenant = tenant_of(&a.common, &store).await?;
    let secrets =
        common::open_secrets(a.secrets.as_deref(), a.common.store.table.is_some()).await?;
    let raw = secrets
        .get(&tenant.dock.secret)
        .await
        .map_err(|e| Exit(common::CONFIG, e.to_string()))?;
    let dock_secret: DockSecret = serde_json::from_str(&raw.0).map_err(|_| {
        Exit(
            common::CONFIG,
            format!("secret '{}' is not a Dock secret", tenant.dock.secret),
        )
    })?;
    let hook_secret = serde_json::from_str::<WebhookSecret>(&raw.0)
        .ok()
        .filter(|w| !w.webhook_secret.is_empty())
        .ok_or_else(|| {
            Exit(
                common::CONFIG,
                format!(
                    "secret '{}' has no webhook_secret: add one (e.g. the output of `openssl rand -hex 64`) and run this again",
                    tenant.dock.secret
                ),
            )
        })?;
    let mut events = a.events.clone();
    if events.is_empty() {
        for r in &tenant.hooks.rules {
            for e in &r.events {
                if !events.contains(e) {
                    events.push(e.clone());
                }
            }
        }
    }
    if events.is_empty() {
        return Err(Exit(
            common::USAGE,
            "no event types: the tenant's webhook rules name none (give --events)".into(),
        ));
    }
    let dock = DockClient::new(DockConfig::from_env())
        .map_err(|e| Exit(common::USAGE, format!("Dock client: {}", e.class())))?;
    let (token, previous) = arm(&store, &tenant.tenant).await?;
    let url = webhook_url(&a.common.base_url, &tenant.tenant, &token);
    eprintln!(
        "new URL token stored; waiting {} s for running functions to see it",
        a.settle.as_secs()
    );
    tokio::time::sleep(a.settle).await;
    let body = WebhookBody {
        url: url.clone(),
        secret: hook_secret.webhook_secret.clone(),
        enabled: true,
        events,
    };
    let hook = match &previous {
        Some(id) => match dock.update_webhook(&dock_secret, id, &body).await {
            Err(e) if e.status() == Some(404) => dock.create_webhook(&dock_secret, &body).await,
            r => r,
        },
        None => dock.create_webhook(&dock_secret, &body).await,
    }
    .map_err(|e| {
        Exit(
            common::REMOTE,
            format!("Dock refused the webhook ({})", e.class()),
        )
    })?;
    eprintln!(
        "webhook {} sent to Dock; waiting for its verification",
        hook.id
    );
    let started = Instant::now();
    let mut verified = hook.verified;
    while !verified && started.elapsed() < a.wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        verified = dock
            .get_webhook(&dock_secret, &hook.id)
            .await
            .map(|h| h.verified)
            .unwrap_or(false);
    }
    // Disarm: the challenge is not answered again until the next registration.
    let now = chrono::Utc::now();
    let reg = token.registration(now, None, Some(hook.id.clone()));
    store
        .put_hook(&tenant.tenant, &reg)
        .await
        .map_err(common::store_exit)?;
    println!("{url}");
    if verified {
        eprintln!(
            "webhook {} of tenant {} is registered and verified",
            hook.id, tenant.tenant
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "webhook {} of tenant {} was not verified within {} s: check that the URL reaches the webhook function, then run this again",
            hook.id,
            tenant.tenant,
            a.wait.as_secs()
        );
        Ok(ExitCode::from(common::FAILED))
    }
}
