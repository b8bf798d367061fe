//! `kareo-dock backfill`: re-reads every enabled family (or one) from a date up to now, with a
//! progress bar over the windows, through the poller's own backfill mode (`Mode::Backfill`):
//! records already handed off at the same version are skipped, the cursor never moves
//! backwards, and the changes found are handed off — to the task creation (in this process
//! with `--state`; to the task function with `--table --function`), or, with `--no-tasks`,
//! only recorded (`<state>/events.jsonl`; snapshots written, so later polls do not create
//! tasks for them).

use std::path::PathBuf;
use std::process::ExitCode;

use ::sync::poll::slices;
use ::sync::{Mode, Outcome as RunOutcome, PollConfig, Poller, Report};
use chrono::{DateTime, Utc};
use domain::local::{JsonlSink, Tee};
use domain::ports::*;
use domain::ChangeEvent;
use domain::{ports::SystemClock, TenantConfig};
use embedded::{DeadLetterFile, Embedded};
use indicatif::{ProgressBar, ProgressStyle};
use kareo::{ClientConfig, Family, KareoClient};
use tasks::dock::DockTasks;

use crate::common::{self, Exit, Outcome, Store};

/// `backfill` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tenant config files (YAML); without it, the tenants stored in `--state`/`--table`.
    #[arg(long = "config")]
    configs: Vec<PathBuf>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Re-read from this date (`2026-09-01`, midnight UTC) or RFC 3339 instant.
    #[arg(long)]
    from: String,
    /// Only this family.
    #[arg(long)]
    family: Option<String>,
    /// Create no Dock task: record the changes only (events file with `--state`).
    #[arg(long)]
    no_tasks: bool,
    /// Local state directory (as `sync`).
    #[arg(long, conflicts_with = "table", required_unless_present = "table")]
    state: Option<PathBuf>,
    /// Secrets file (with `--state`); Secrets Manager with `--table`.
    #[arg(long, env = "KAREO_DOCK_SECRETS")]
    secrets: Option<PathBuf>,
    /// DynamoDB state table (AWS).
    #[arg(long)]
    table: Option<String>,
    /// With `--table`: the task-creation function the changes are handed to (asynchronous
    /// invoke, as the pollers do). Required with `--table` unless `--no-tasks`.
    #[arg(long, env = "KAREO_DOCK_TASK_FUNCTION")]
    function: Option<String>,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 every run done; 1 bad usage (date, family, missing option); 2 a config or
/// the secrets file is invalid; 3 the state could not be opened; 4 some run failed or some
/// task could not be created (dead letters written with `--state`).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    common::runtime()?.block_on(async { common::finish(backfill(args).await) })
}

/// Hands off nothing (AWS `--no-tasks`: the snapshots are the record).
struct Discard;

impl EventSink for Discard {
    async fn hand_off(&self, _batch: &[ChangeEvent]) -> Result<(), SinkError> {
        Ok(())
    }
}

// Long: the backfill loop over windows with its progress bar and report.
async fn backfill(args: Args) -> Outcome {
    let since = common::instant(&args.from, "--from")?;
    let only: Option<Family> = args.family.as_deref().map(common::family).transpose()?;
    if args.table.is_some() && !args.no_tasks && args.function.is_none() {
        return Err(Exit(
            common::USAGE,
            "with --table, give --function <task function> (or --no-tasks)".into(),
        ));
    }
    let store = common::open_store(args.state.as_deref(), args.table.as_deref()).await?;
    let tenants = common::tenants(&args.configs, Some(&store), args.tenant.as_deref()).await?;
    let secrets = common::open_secrets(args.secrets.as_deref(), args.table.is_some()).await?;
    let kareo = KareoClient::new(ClientConfig::from_env())
        .map_err(|e| Exit(common::USAGE, e.to_string()))?;
    let runs: Vec<(&TenantConfig, Family)> = tenants
        .iter()
        .flat_map(|t| t.families.keys().map(move |f| (t, *f)))
        .filter(|(_, f)| only.is_none_or(|o| o == *f))
        .collect();
    if runs.is_empty() {
        return Err(Exit(
            common::USAGE,
            "no tenant enables that family: nothing to backfill".into(),
        ));
    }
    let ctx = Ctx {
        kareo: &kareo,
        secrets: &secrets,
        runs: &runs,
        since,
    };
    let (reports, dead) = match &store {
        Store::Local(s, dir) => {
            let events = JsonlSink::new(dir.join("events.jsonl"));
            if args.no_tasks {
                (ctx.run(s, &events).await, Vec::new())
            } else {
                let dock = DockTasks::new(
                    dock::DockClient::new(dock::DockConfig::from_env())
                        .map_err(|e| Exit(common::USAGE, e.to_string()))?,
                );
                let pipeline = Embedded {
                    kareo: &kareo,
                    dock: &dock,
                    store: s,
                    secrets: &secrets,
                    clock: &SystemClock,
                    tenants: &tenants,
                    owner: format!("cli-backfill-{}", std::process::id()),
                    lease: std::time::Duration::from_secs(300),
                };
                let tasks = pipeline.tasks();
                let reports = ctx.run(s, &Tee(&events, &tasks)).await;
                let dead = tasks.dead_letters();
                let file = DeadLetterFile::in_state(dir);
                file.append(&dead)
                    .map_err(|e| Exit(common::REMOTE, format!("{}: {e}", file.path().display())))?;
                (reports, dead)
            }
        }
        Store::Dynamo(s) => {
            if args.no_tasks {
                (ctx.run(s, &Discard).await, Vec::new())
            } else {
                let sdk = aws::sdk_config().await;
                let sink = aws::LambdaSink::new(
                    aws_sdk_lambda::Client::new(&sdk),
                    args.function.clone().unwrap_or_default(),
                );
                (ctx.run(s, &sink).await, Vec::new())
            }
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "since": since,
                "runs": reports,
                "dead_letters": dead,
            }))
            .unwrap_or_default()
        );
    } else {
        for r in &reports {
            let outcome = match &r.outcome {
                RunOutcome::Failed { class, message } => format!("failed ({class}): {message}"),
                RunOutcome::Done => "done".into(),
                RunOutcome::Skipped => "skipped (another run holds the cursor)".into(),
                RunOutcome::Partial => "partial".into(),
                RunOutcome::NotDue => "not due (cadence)".into(),
                RunOutcome::Paused => "paused (tenant resume to go on)".into(),
            };
            println!(
                "{:<16} {:<18} windows {:>4}  records {:>6}  events {:>6}  duplicates {:>6}  {outcome}",
                r.tenant,
                r.family.name(),
                r.windows,
                r.records,
                r.events,
                r.duplicates
            );
        }
        if !dead.is_empty() {
            println!(
                "{} task(s) could not be created: see dead-letters.jsonl, then `kareo-dock replay`",
                dead.len()
            );
        }
    }
    let failed = reports
        .iter()
        .any(|r| !matches!(r.outcome, RunOutcome::Done))
        || !dead.is_empty();
    Ok(if failed {
        ExitCode::from(common::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

struct Ctx<'a> {
    kareo: &'a KareoClient,
    secrets: &'a common::Secrets,
    runs: &'a [(&'a TenantConfig, Family)],
    since: DateTime<Utc>,
}

impl Ctx<'_> {
    /// One backfill run per (tenant, family), one after the other, each with its bar.
    async fn run<S, E>(&self, store: &S, sink: &E) -> Vec<Report>
    where
        S: CursorStore + SnapshotStore,
        E: EventSink,
    {
        let config = PollConfig {
            owner: format!("cli-backfill-{}", std::process::id()),
            ..PollConfig::default()
        };
        let style =
            ProgressStyle::with_template("{prefix:<32} [{bar:30}] {pos}/{len} windows  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let mut reports = Vec::new();
        for (tenant, family) in self.runs {
            let settings = tenant.family(*family).expect("an enabled family");
            let end =
                Utc::now() - chrono::Duration::from_std(tenant.safety_lag).unwrap_or_default();
            let total = slices(self.since, end, settings.max_window).len() as u64;
            let bar = ProgressBar::new(total)
                .with_style(style.clone())
                .with_prefix(format!("{}/{}", tenant.tenant, family.name()));
            let cursors = Progress {
                inner: store,
                bar: bar.clone(),
                since: self.since,
                step: chrono::Duration::from_std(settings.max_window)
                    .unwrap_or(chrono::Duration::days(1)),
            };
            let poller = Poller {
                kareo: self.kareo,
                cursors: &cursors,
                snapshots: store,
                sink,
                clock: &SystemClock,
                config: &config,
            };
            let report = match kareo_credentials(self.secrets, &tenant.kareo.secret).await {
                Ok(creds) => {
                    poller
                        .run(
                            tenant,
                            &creds,
                            *family,
                            Mode::Backfill { since: self.since },
                            None,
                        )
                        .await
                }
                Err(e) => {
                    let mut r = Report::skipped(&tenant.tenant, *family);
                    r.outcome = RunOutcome::Failed {
                        class: ErrorClass::Secret,
                        message: e.to_string(),
                    };
                    r
                }
            };
            bar.finish_and_clear();
            reports.push(report);
        }
        reports
    }
}

/// The store, telling the bar how far each checkpoint got.
struct Progress<'a, C> {
    inner: &'a C,
    bar: ProgressBar,
    since: DateTime<Utc>,
    step: chrono::Duration,
}

impl<C: CursorStore> CursorStore for Progress<'_, C> {
    async fn load(&self, tenant: &str, family: Family) -> Result<Option<Cursor>, StoreError> {
        self.inner.load(tenant, family).await
    }

    async fn acquire(
        &self,
        tenant: &str,
        family: Family,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.inner.acquire(tenant, family, owner, now, until).await
    }

    async fn load_many(
        &self,
        tenants: &[&str],
        family: Family,
    ) -> Result<std::collections::HashMap<String, Cursor>, StoreError> {
        self.inner.load_many(tenants, family).await
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
        self.inner
            .acquire_seen(tenant, family, seen, owner, now, until)
            .await
    }

    async fn advance(
        &self,
        tenant: &str,
        family: Family,
        seen: Option<&Cursor>,
        position: DateTime<Utc>,
        run_start: DateTime<Utc>,
    ) -> Result<Cursor, StoreError> {
        self.inner
            .advance(tenant, family, seen, position, run_start)
            .await
    }

    async fn checkpoint(
        &self,
        lease: &mut Lease,
        position: DateTime<Utc>,
        high_water: Option<DateTime<Utc>>,
        run_start: DateTime<Utc>,
        release: bool,
    ) -> Result<(), StoreError> {
        self.inner
            .checkpoint(lease, position, high_water, run_start, release)
            .await?;
        let done = (position - self.since).num_seconds().max(0) as u64;
        let step = self.step.num_seconds().max(1) as u64;
        self.bar.set_position(
            done.div_ceil(step)
                .min(self.bar.length().unwrap_or(u64::MAX)),
        );
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }

    async fn fail(&self, lease: &Lease, error: CursorError) -> Result<(), StoreError> {
        self.inner.fail(lease, error).await
    }

    async fn reset(
        &self,
        tenant: &str,
        family: Family,
        position: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.inner.reset(tenant, family, position).await
    }

    async fn list(&self) -> Result<Vec<(String, Family, Cursor)>, StoreError> {
        self.inner.list().await
    }
}
