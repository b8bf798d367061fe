//! The product in one process — what `kareo-dock sync`, `backfill`, `demo` and `replay`, the
//! end-to-end tests and the benchmarks run: the poller hands change events to task creation
//! in-process instead of through Lambda, over one store, one set of secrets and one clock. The
//! Lambda functions wire the same parts with AWS adapters; nothing here is deployed.
//!
//! ```text
//! let pipeline = Embedded { kareo: &client, dock: &dock, store: &store, secrets: &secrets,
//!                           clock: &SystemClock, tenants: &tenants, owner, lease };
//! let tasks = pipeline.tasks();                 // task creation as the poller's sink
//! let reports = pipeline.poll(&Tee(&events, &tasks), &families, Mode::Poll, 4).await;
//! DeadLetterFile::in_state(dir).append(&tasks.dead_letters())?;
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::ports::{
    BreakerStore, Clock, CursorStore, EventSink, Ledger, LinkStore, SecretSource, SnapshotStore,
};
use domain::source::KareoSource;
use domain::TenantConfig;
use kareo::Family;
use sync::run::poll_tenants;
use sync::{Mode, PollConfig, Poller, Report};
use tasks::deliver::{Delivery, DeliverySink, DockPort, Failure};

/// The parts of the product in one process, borrowed from the caller.
pub struct Embedded<'a, K, D, S, Sec, C> {
    /// Kareo.
    pub kareo: &'a K,
    /// Dock.
    pub dock: &'a D,
    /// Cursors, snapshots, the ledger and the links.
    pub store: &'a S,
    /// The tenants' Kareo and Dock secrets.
    pub secrets: &'a Sec,
    /// The clock.
    pub clock: &'a C,
    /// The tenants.
    pub tenants: &'a [TenantConfig],
    /// Who holds leases and claims (a process id, a test name).
    pub owner: String,
    /// How long a task claim is held.
    pub lease: Duration,
}

impl<'a, K, D, S, Sec, C> Embedded<'a, K, D, S, Sec, C>
where
    K: KareoSource,
    D: DockPort,
    S: CursorStore + SnapshotStore + Ledger + LinkStore + BreakerStore,
    Sec: SecretSource,
    C: Clock,
{
    /// Task creation, as the task function runs it.
    pub fn delivery(&self) -> Delivery<'a, D, S, K, C> {
        Delivery {
            dock: self.dock,
            ledger: self.store,
            kareo: self.kareo,
            clock: self.clock,
            owner: self.owner.clone(),
            lease: self.lease,
        }
    }

    /// Task creation as the poller's sink: a batch is accepted when nothing transient is left;
    /// permanent failures are kept as dead letters.
    pub fn tasks(&self) -> DeliverySink<'a, D, S, K, C, Sec> {
        DeliverySink::new(self.delivery(), self.secrets, self.tenants.to_vec())
    }

    /// The poller's settings (leases held by `owner`).
    pub fn poll_config(&self) -> PollConfig {
        PollConfig {
            owner: self.owner.clone(),
            ..PollConfig::default()
        }
    }

    /// A poller handing off to `sink`.
    pub fn poller<'p, E: EventSink>(
        &'p self,
        sink: &'p E,
        config: &'p PollConfig,
    ) -> Poller<'p, K, S, S, E, C> {
        Poller {
            kareo: self.kareo,
            cursors: self.store,
            snapshots: self.store,
            sink,
            clock: self.clock,
            config,
        }
    }

    /// Polls `families` for every tenant that enables them, `concurrency` tenants at a time,
    /// as the poll functions do (each tenant's Kareo credentials from the secrets).
    pub async fn poll<E: EventSink>(
        &self,
        sink: &E,
        families: &[Family],
        mode: Mode,
        concurrency: usize,
    ) -> Vec<Report> {
        let config = self.poll_config();
        let poller = self.poller(sink, &config);
        let mut reports = Vec::new();
        for family in families {
            reports.extend(
                poll_tenants(
                    &poller,
                    self.secrets,
                    self.store,
                    self.tenants,
                    *family,
                    None,
                    mode,
                    concurrency,
                    None,
                )
                .await,
            );
        }
        reports
    }
}

/// The local dead letters: permanent task failures appended to a JSON-lines file, one per line
/// (`kareo-dock replay` redrives them). Ids, rule names, classes and reasons only.
pub struct DeadLetterFile(PathBuf);

impl DeadLetterFile {
    /// `<state>/dead-letters.jsonl`.
    pub fn in_state(state: &Path) -> DeadLetterFile {
        DeadLetterFile(state.join("dead-letters.jsonl"))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Appends `failures` (nothing to append: the file is not touched).
    pub fn append(&self, failures: &[Failure]) -> std::io::Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        let mut f = domain::local::private::append(&self.0)?;
        for d in failures {
            writeln!(
                f,
                "{}",
                serde_json::to_string(d).map_err(std::io::Error::other)?
            )?;
        }
        Ok(())
    }
}
