//! What the operator verbs share: where the state is (a local directory or a DynamoDB table),
//! where the secrets are (a local file or Secrets Manager), the tenants (config files or the
//! stored ones), dates on the command line, and the exit codes.
//!
//! Exit codes of every operator verb: 0 success; 1 bad usage or input (an option, a date, a
//! family name, an unreadable file); 2 an invalid tenant config or secrets file; 3 a remote
//! error (the state store, Secrets Manager, SQS or Lambda could not be reached); 4 the verb ran
//! but some item failed (a check, a run, a task, a redrive).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aws::{DynamoStore, SecretsManagerSource};
use chrono::{DateTime, NaiveDate, Utc};
use domain::local::{LocalSecrets, LocalStore};
use domain::ports::{
    Breaker, BreakerStore, Claim, Cursor, CursorError, CursorStore, HookRegistration, HookStore,
    Lease, Ledger, LedgerEntry, Link, LinkKey, LinkStore, SecretError, SecretSource, SecretValue,
    StoreError, TenantStore,
};
use domain::TenantConfig;
use kareo::Family;

/// Bad usage or input.
pub const USAGE: u8 = 1;
/// Invalid tenant config or secrets file.
pub const CONFIG: u8 = 2;
/// A remote service failed.
pub const REMOTE: u8 = 3;
/// Some item failed.
pub const FAILED: u8 = 4;

/// An early exit: the message for stderr and the code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl Exit {
    /// Prints the message and gives the code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.1);
        ExitCode::from(self.0)
    }
}

/// A verb's result: its exit code, or an early exit.
pub type Outcome = Result<ExitCode, Exit>;

/// Turns an early exit into its code.
pub fn finish(r: Outcome) -> anyhow::Result<ExitCode> {
    Ok(r.unwrap_or_else(Exit::report))
}

/// Where the state is: `--state DIR` (files, as `sync`) or `--table NAME` (DynamoDB).
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// Local state directory (cursors, snapshots, ledger, tenants in `state.json`).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// DynamoDB state table (AWS: region, credentials and AWS_ENDPOINT_URL from the
    /// environment).
    #[arg(long)]
    pub table: Option<String>,
}

/// A Kareo failure as a `check` verdict says it: its class, then its text (names only).
pub fn kareo_fail(e: &kareo::KareoError) -> String {
    format!("{}: {e}", e.class())
}

/// A `check` verdict's detail that starts with this is a warning: printed `WARN`, not a
/// failure.
pub const WARNING: &str = "warning: ";

/// Where the state is, opened.
pub enum Store {
    /// Files in a directory.
    Local(LocalStore, PathBuf),
    /// A DynamoDB table.
    Dynamo(DynamoStore),
}

/// The store is the ports it implements: each call goes to the concrete store.
macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Store::Local($s, _) => $body,
            Store::Dynamo($s) => $body,
        }
    };
}

impl TenantStore for Store {
    async fn tenants(&self) -> Result<Vec<TenantConfig>, StoreError> {
        each!(self, s => s.tenants().await)
    }
    async fn put(&self, config: &TenantConfig) -> Result<(), StoreError> {
        each!(self, s => s.put(config).await)
    }
}

impl HookStore for Store {
    async fn hooks(&self) -> Result<Vec<(String, HookRegistration)>, StoreError> {
        each!(self, s => s.hooks().await)
    }
    async fn hook(&self, tenant: &str) -> Result<Option<HookRegistration>, StoreError> {
        each!(self, s => s.hook(tenant).await)
    }
    async fn put_hook(&self, tenant: &str, hook: &HookRegistration) -> Result<(), StoreError> {
        each!(self, s => s.put_hook(tenant, hook).await)
    }
}

impl Ledger for Store {
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        each!(self, s => s.claim(key, owner, now, until).await)
    }
    async fn settle(&self, key: &str, owner: &str, entry: LedgerEntry) -> Result<(), StoreError> {
        each!(self, s => s.settle(key, owner, entry).await)
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        each!(self, s => Ledger::release(s, key, owner).await)
    }
    async fn get(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        each!(self, s => Ledger::get(s, key).await)
    }
    async fn mark_sending(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        each!(self, s => s.mark_sending(key, owner).await)
    }
}

impl BreakerStore for Store {
    async fn breakers(&self) -> Result<Vec<(String, Breaker)>, StoreError> {
        each!(self, s => s.breakers().await)
    }
    async fn breaker(&self, account: &str) -> Result<Option<Breaker>, StoreError> {
        each!(self, s => s.breaker(account).await)
    }
    async fn open_breaker(&self, account: &str, b: &Breaker) -> Result<(), StoreError> {
        each!(self, s => s.open_breaker(account, b).await)
    }
    async fn close_breaker(&self, account: &str) -> Result<(), StoreError> {
        each!(self, s => s.close_breaker(account).await)
    }
}

impl LinkStore for Store {
    async fn link(&self, tenant: &str, key: &LinkKey) -> Result<Option<Link>, StoreError> {
        each!(self, s => s.link(tenant, key).await)
    }
    async fn put_link(&self, tenant: &str, key: &LinkKey, link: &Link) -> Result<(), StoreError> {
        each!(self, s => s.put_link(tenant, key, link).await)
    }
}

impl CursorStore for Store {
    async fn load(&self, tenant: &str, family: Family) -> Result<Option<Cursor>, StoreError> {
        each!(self, s => s.load(tenant, family).await)
    }
    async fn acquire(
        &self,
        tenant: &str,
        family: Family,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        each!(self, s => s.acquire(tenant, family, owner, now, until).await)
    }
    async fn load_many(
        &self,
        tenants: &[&str],
        family: Family,
    ) -> Result<std::collections::HashMap<String, Cursor>, StoreError> {
        each!(self, s => s.load_many(tenants, family).await)
    }
    async fn acquire_seen(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        each!(self, s => s.acquire_seen(tenant, family, seen, owner, now, until).await)
    }
    async fn advance(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        position: DateTime<Utc>,
        run_start: DateTime<Utc>,
    ) -> Result<Cursor, StoreError> {
        each!(self, s => s.advance(tenant, family, seen, position, run_start).await)
    }
    async fn checkpoint(
        &self,
        lease: &mut Lease,
        position: DateTime<Utc>,
        high_water: Option<DateTime<Utc>>,
        run_start: DateTime<Utc>,
        release: bool,
    ) -> Result<(), StoreError> {
        each!(self, s => s.checkpoint(lease, position, high_water, run_start, release).await)
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        each!(self, s => CursorStore::release(s, lease).await)
    }
    async fn fail(&self, lease: &Lease, error: CursorError) -> Result<(), StoreError> {
        each!(self, s => s.fail(lease, error).await)
    }
    async fn reset(
        &self,
        tenant: &str,
        family: Family,
        position: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        each!(self, s => s.reset(tenant, family, position).await)
    }
    async fn list(&self) -> Result<Vec<(String, Family, Cursor)>, StoreError> {
        each!(self, s => s.list().await)
    }
}

impl StoreArgs {
    /// Opens the store.
    pub async fn open(&self) -> Result<Store, Exit> {
        open_store(self.state.as_deref(), self.table.as_deref()).await
    }
}

/// Opens `--state` or `--table` (exactly one must be given).
pub async fn open_store(state: Option<&Path>, table: Option<&str>) -> Result<Store, Exit> {
    match (state, table) {
        (Some(dir), None) => LocalStore::in_dir(dir)
            .map(|s| Store::Local(s, dir.to_path_buf()))
            .map_err(|e| match e {
                StoreError::Corrupt(_) => Exit(CONFIG, e.to_string()),
                e => Exit(USAGE, e.to_string()),
            }),
        (None, Some(table)) => {
            let sdk = aws::sdk_config().await;
            Ok(Store::Dynamo(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                table,
            )))
        }
        (Some(_), Some(_)) => Err(Exit(
            USAGE,
            "give either --state or --table, not both".into(),
        )),
        (None, None) => Err(Exit(USAGE, "give --state DIR or --table NAME".into())),
    }
}

/// The exit code of a store failure: the table or file could not be used.
pub fn store_exit(e: StoreError) -> Exit {
    match e {
        StoreError::Corrupt(_) => Exit(CONFIG, e.to_string()),
        e => Exit(REMOTE, e.to_string()),
    }
}

/// Secrets from a local file or from Secrets Manager.
pub enum Secrets {
    /// `--secrets FILE`.
    Local(LocalSecrets),
    /// Secrets Manager (with `--table`).
    Aws(SecretsManagerSource),
}

impl SecretSource for Secrets {
    async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        match self {
            Secrets::Local(s) => s.get(name).await,
            Secrets::Aws(s) => s.get(name).await,
        }
    }
}

/// The secrets: the `--secrets` file when given, else Secrets Manager when the state is a
/// table; a local state without a secrets file is a usage error.
pub async fn open_secrets(file: Option<&Path>, aws: bool) -> Result<Secrets, Exit> {
    match file {
        Some(f) => LocalSecrets::from_file(f)
            .map(Secrets::Local)
            .map_err(|e| Exit(CONFIG, e.to_string())),
        None if aws => {
            let sdk = aws::sdk_config().await;
            Ok(Secrets::Aws(SecretsManagerSource::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
            )))
        }
        None => Err(Exit(
            USAGE,
            "give --secrets FILE (or KAREO_DOCK_SECRETS) with a local state".into(),
        )),
    }
}

/// The tenants: the `--config` files when given (checked: file:line errors exit 2), else the
/// ones stored in the state; only `only` when given (an unknown tenant is a usage error).
pub async fn tenants(
    configs: &[PathBuf],
    store: Option<&Store>,
    only: Option<&str>,
) -> Result<Vec<TenantConfig>, Exit> {
    let mut out = Vec::new();
    if configs.is_empty() {
        let Some(store) = store else {
            return Err(Exit(USAGE, "give --config FILE".into()));
        };
        out = store.tenants().await.map_err(store_exit)?;
        if out.is_empty() {
            return Err(Exit(
                USAGE,
                "no tenant stored here (store one with `kareo-dock tenant put`, or give --config)"
                    .into(),
            ));
        }
    } else {
        for c in configs {
            out.push(TenantConfig::from_file(c).map_err(|e| Exit(CONFIG, e.to_string()))?);
        }
    }
    if let Some(t) = only {
        out.retain(|c| c.tenant == t);
        if out.is_empty() {
            return Err(Exit(USAGE, format!("no tenant '{t}'")));
        }
    }
    Ok(out)
}

/// A family by name (`appointments`, `GetAppointments`, …).
pub fn family(name: &str) -> Result<Family, Exit> {
    Family::from_name(name).ok_or_else(|| {
        Exit(
            USAGE,
            format!(
                "'{name}' is not a Kareo family (one of: {})",
                Family::ALL.map(|f| f.name()).join(", ")
            ),
        )
    })
}

/// An instant on the command line: RFC 3339 (`2026-09-01T00:00:00Z`) or a date
/// (`2026-09-01`, midnight UTC). Never in the future.
pub fn instant(text: &str, option: &str) -> Result<DateTime<Utc>, Exit> {
    let t = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            Exit(
                USAGE,
                format!("{option} '{text}': expected a date (2026-09-01) or an RFC 3339 instant"),
            )
        })?;
    if t > Utc::now() {
        return Err(Exit(USAGE, format!("{option} '{text}' is in the future")));
    }
    Ok(t)
}

/// A duration as an operator reads it: `3d 4h`, `12m 5s`, `40s`.
pub fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s < 0 {
        return format!("-{}", human(-d));
    }
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{days}d {h}h"),
    }
}

/// An instant for a table: `2026-09-01 12:00:00Z`, or `-`.
pub fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A multi-thread tokio runtime.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
