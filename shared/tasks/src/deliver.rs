#![doc = include_str!("../../../docs/task-creation.md")]

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dock::{DockError, DockSecret};

use kareo::{Credentials, Family};
use serde::Serialize;

use domain::event::ChangeEvent;
use domain::mapping::{Rule, TaskSpec};
use domain::ports::*;
use domain::source::KareoSource;
use domain::tenant::TenantConfig;

/// The stamp on every task this product creates: `kareo-dock ref: <ledger key>`.
pub fn reference(key: &str) -> String {
    format!("kareo-dock ref: {key}")
}

/// The ledger key of one (event, rule): `task#<tenant>#<event id>#<rule>` — by tenant, so that
/// offboarding (`tenant purge`) finds a tenant's task items.
pub fn task_key(tenant: &str, event: &str, rule: &str) -> String {
    format!("task#{tenant}#{event}#{rule}")
}

/// An event's change → task latency at `now` (never negative: Kareo's clock may run ahead).
fn latency(event: &ChangeEvent, now: DateTime<Utc>) -> (String, Family, f64) {
    let secs = (now - event.version).num_milliseconds().max(0) as f64 / 1000.0;
    (event.tenant.clone(), event.family, secs)
}

/// The key versions before the tenant was in it used: `task#<event id>#<rule>`. An (event,
/// rule) found under it stays there (see `Deliver::claim_task`); such items hold Dock ids and
/// states only and expire or are settled like any other.
fn legacy_task_key(event: &str, rule: &str) -> String {
    format!("task#{event}#{rule}")
}

/// A failed (event, rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Event id.
    pub event: String,
    /// Rule name.
    pub rule: String,
    /// Error class.
    pub class: ErrorClass,
    /// What failed (names and ids only).
    pub reason: String,
    /// A retry cannot help (dead-letter it); else retry the batch.
    pub permanent: bool,
}

/// What a delivery did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    /// Events received.
    pub events: usize,
    /// (event, rule) pairs that matched.
    pub matched: usize,
    /// Tasks created.
    pub tasks: usize,
    /// Workflows deployed.
    pub workflows: usize,
    /// Already done: duplicates avoided (ledger, or found by reconciliation).
    pub duplicates: usize,
    /// Settled `needs_review`: waiting for a person (see `kareo-dock status`), not retried.
    /// (A claim another delivery still holds is a transient failure of class `held`: the
    /// holder may have died, so the batch is retried until it is done or the claim expires.)
    pub held: usize,
    /// Shadow mode without a preview list: (event, rule) pairs only reported (and settled,
    /// so that going live does not create them).
    pub previewed: usize,
    /// Failures.
    pub failures: Vec<Failure>,
    /// Change → task latency of each task created or workflow deployed: (tenant, family, seconds from
    /// the record's version — Kareo's last-modified stamp — to its creation in Dock). Metrics
    /// only: not in the JSON answer.
    #[serde(skip)]
    pub latencies: Vec<(String, Family, f64)>,
}

impl Delivered {
    /// Is there something a retry of the batch could still deliver?
    pub fn has_transient(&self) -> bool {
        self.failures.iter().any(|f| !f.permanent)
    }
}

/// A Dock failure as the delivery sees it.
#[derive(Debug, Clone)]
pub struct DockFailure {
    /// Class.
    pub class: ErrorClass,
    /// What failed (no PHI).
    pub reason: String,
    /// A retry cannot help.
    pub permanent: bool,
    /// The call may have created something.
    pub ambiguous: bool,
}

impl From<DockError> for DockFailure {
    fn from(e: DockError) -> Self {
        DockFailure {
            class: ErrorClass::of_dock(&e),
            reason: e.to_string(),
            permanent: !e.is_retryable() && !e.is_ambiguous(),
            ambiguous: e.is_ambiguous(),
        }
    }
}

/// A state-store failure as a delivery reports it: transient, nothing sent.
fn store_failure(e: StoreError) -> DockFailure {
    DockFailure {
        class: e.class(),
        reason: e.to_string(),
        permanent: false,
        ambiguous: false,
    }
}

/// Another delivery holds the (event, rule): retried after its lease.
fn held() -> DockFailure {
    DockFailure {
        class: ErrorClass::Held,
        reason: "another delivery holds this (event, rule); retried after its lease".into(),
        permanent: false,
        ambiguous: false,
    }
}

pub(crate) fn permanent(class: ErrorClass, reason: String) -> DockFailure {
    DockFailure {
        class,
        reason,
        permanent: true,
        ambiguous: false,
    }
}

/// Dock ids a rule resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Task list.
    pub list: String,
    /// Task group.
    pub group: Option<String>,
    /// Workflow template.
    pub template: Option<String>,
    /// Assignee user.
    pub assignee: Option<String>,
}

/// A task to create.
#[derive(Clone)]
pub struct TaskDraft {
    /// Title.
    pub description: String,
    /// Details (ends with the reference line).
    pub details: String,
    /// Ids.
    pub ids: Resolved,
    /// Due.
    pub due: Option<DateTime<Utc>>,
    /// Priority.
    pub priority: Option<dock::Priority>,
    /// Dock patient.
    pub patient: Option<String>,
}

/// A patient to find or create in Dock.
#[derive(Clone)]
pub struct PatientDraft {
    /// MRN (Kareo PatientID).
    pub mrn: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Birth date.
    pub dob: Option<chrono::NaiveDate>,
}

/// What task creation needs from Dock.
pub trait DockPort: Send + Sync {
    /// Resolves a rule's names to ids (cached); unknown names are permanent failures.
    fn resolve(
        &self,
        secret: &DockSecret,
        task: &TaskSpec,
    ) -> impl Future<Output = Result<Resolved, DockFailure>> + Send;
    /// The id of the task in `list` whose details carry `reference`.
    fn find_task(
        &self,
        secret: &DockSecret,
        list: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, DockFailure>> + Send;
    /// Creates a task; its id.
    fn create_task(
        &self,
        secret: &DockSecret,
        draft: &TaskDraft,
    ) -> impl Future<Output = Result<String, DockFailure>> + Send;
    /// Deploys a workflow template into the resolved list and group, for `patient` (every
    /// task of it) and named `name` (the rule's rendered description, when not empty); the
    /// deployed id. Once the deploy itself succeeded this answers `Ok`: linking and naming
    /// are completed best-effort, never by deploying again.
    fn deploy(
        &self,
        secret: &DockSecret,
        ids: &Resolved,
        patient: Option<&str>,
        name: Option<&str>,
    ) -> impl Future<Output = Result<String, DockFailure>> + Send;
    /// The Dock patient with this MRN, created when absent (cached).
    fn patient(
        &self,
        secret: &DockSecret,
        draft: &PatientDraft,
    ) -> impl Future<Output = Result<String, DockFailure>> + Send;
}

/// The ports of a delivery.
pub struct Delivery<'a, D, L, K, T> {
    /// Dock.
    pub dock: &'a D,
    /// Ledger.
    pub ledger: &'a L,
    /// Kareo (patient lookups for linking).
    pub kareo: &'a K,
    /// Clock.
    pub clock: &'a T,
    /// Claim holder name.
    pub owner: String,
    /// Claim lease.
    pub lease: Duration,
}

impl<D: DockPort, L: Ledger + LinkStore, K: KareoSource, T: Clock> Delivery<'_, D, L, K, T> {
    /// Delivers a batch of one tenant's events.
    pub async fn deliver(
        &self,
        tenant: &TenantConfig,
        dock_secret: &DockSecret,
        kareo_creds: Option<&Credentials>,
        events: &[ChangeEvent],
    ) -> Delivered {
        let mut out = Delivered {
            events: events.len(),
            ..Delivered::default()
        };
        let shadow = tenant.shadowing(self.clock.now());
        for event in events {
            for rule in tenant.mapping.matching(event) {
                out.matched += 1;
                let key = task_key(&tenant.tenant, &event.id, &rule.name);
                // Shadow mode: the preview list's plain task, or the report only.
                let preview = shadow.filter(|s| s.list.is_some()).map(|s| s.preview(rule));
                let r = match (shadow, &preview) {
                    (Some(_), None) => self.report_only(&key, &mut out).await,
                    (_, p) => {
                        let rule = p.as_ref().unwrap_or(rule);
                        let creds = kareo_creds;
                        self.one(tenant, dock_secret, creds, event, rule, &key, &mut out)
                            .await
                    }
                };
                if let Err(f) = r {
                    tracing::warn!(tenant = %tenant.tenant, event = %event.id, rule = %rule.name, class = %f.class, permanent = f.permanent, "task not created");
                    out.failures.push(Failure {
                        event: event.id.clone(),
                        rule: rule.name.clone(),
                        class: f.class,
                        reason: f.reason,
                        permanent: f.permanent,
                    });
                }
            }
        }
        tracing::info!(tenant = %tenant.tenant, events = out.events, matched = out.matched, tasks = out.tasks, workflows = out.workflows, duplicates = out.duplicates, previewed = out.previewed, failures = out.failures.len(), "delivery");
        out
    }

    // Long: the exactly-once protocol of one (event, rule): claim, link, post, settle, reconcile — kept in one place on purpose.
    #[allow(clippy::too_many_arguments)]
    async fn one(
        &self,
        tenant: &TenantConfig,
        secret: &DockSecret,
        creds: Option<&Credentials>,
        event: &ChangeEvent,
        rule: &Rule,
        key: &str,
        out: &mut Delivered,
    ) -> Result<(), DockFailure> {
        let store = store_failure;
        let now = self.clock.now();
        let (claim, key) = self
            .claim_task(key, &legacy_task_key(&event.id, &rule.name), now)
            .await?;
        let key = key.as_str();
        fail::fail_point!("deliver.after_claim");
        let reference = reference(key);
        match claim {
            Claim::Done(_) => {
                out.duplicates += 1;
                return Ok(());
            }
            Claim::NeedsReview(_) => {
                out.held += 1;
                return Ok(());
            }
            // Another delivery holds the claim. Counting it done would lose the task if that
            // holder died before creating it: retry until done or expired.
            Claim::Held => return Err(held()),
            Claim::Expired(_) if rule.task.deploys() => {
                self.settle(key, LedgerState::NeedsReview, None, Some("a workflow deploy's outcome is unknown and workflows cannot be looked up by reference: check the list, then settle".into())).await.map_err(store)?;
                out.held += 1;
                return Ok(());
            }
            Claim::Expired(_) => {
                let ids = match self.dock.resolve(secret, &rule.task).await {
                    Ok(ids) => ids,
                    Err(f) => return self.give_back(key, f).await,
                };
                match self.dock.find_task(secret, &ids.list, &reference).await {
                    Ok(Some(id)) => {
                        self.settle(key, LedgerState::Done, Some(id), None)
                            .await
                            .map_err(store)?;
                        out.duplicates += 1;
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(f) => return self.give_back_pending(f),
                }
            }
            Claim::New => {}
        }
        let ids = match self.dock.resolve(secret, &rule.task).await {
            Ok(ids) => ids,
            Err(f) => return self.give_back(key, f).await,
        };
        let patient = if rule.task.patient {
            match self.linked_patient(tenant, secret, creds, event).await {
                Ok(Some(id)) => {
                    fail::fail_point!("deliver.after_patient");
                    Some(id)
                }
                Ok(None) => None,
                Err(f) => return self.give_back(key, f).await,
            }
        } else {
            None
        };
        if rule.task.deploys() {
            let name = rule.task.description.render(&event.record);
            let named = Some(name.as_str()).filter(|n| !n.trim().is_empty());
            return match self
                .dock
                .deploy(secret, &ids, patient.as_deref(), named)
                .await
            {
                Ok(id) => {
                    fail::fail_point!("deliver.after_post");
                    tracing::info!(tenant = %tenant.tenant, event = %event.id, rule = %rule.name, workflow = %id, "workflow deployed");
                    self.settle(key, LedgerState::Done, Some(id), None)
                        .await
                        .map_err(store)?;
                    fail::fail_point!("deliver.after_settle");
                    out.workflows += 1;
                    out.latencies.push(latency(event, self.clock.now()));
                    Ok(())
                }
                Err(f) if f.ambiguous => {
                    self.settle(
                        key,
                        LedgerState::NeedsReview,
                        None,
                        Some(format!("workflow deploy outcome unknown ({})", f.class)),
                    )
                    .await
                    .map_err(store)?;
                    out.held += 1;
                    Ok(())
                }
                Err(f) => self.give_back(key, f).await,
            };
        }
        let mut details = format!(
            "Kareo {} {} ({:?})",
            event.family, event.record_id, event.kind
        );
        details.push_str("\n\n");
        details.push_str(&reference);
        let draft = TaskDraft {
            description: rule.task.description.render(&event.record),
            details,
            due: rule
                .task
                .due
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d),
            priority: rule.task.priority,
            patient,
            ids,
        };
        match self.dock.create_task(secret, &draft).await {
            Ok(id) => {
                fail::fail_point!("deliver.after_post");
                tracing::info!(tenant = %tenant.tenant, event = %event.id, rule = %rule.name, task = %id, "task created");
                self.link_task(tenant, event, &id, draft.patient.as_deref())
                    .await;
                self.settle(key, LedgerState::Done, Some(id), None)
                    .await
                    .map_err(store)?;
                fail::fail_point!("deliver.after_settle");
                out.tasks += 1;
                out.latencies.push(latency(event, self.clock.now()));
                Ok(())
            }
            Err(f) if f.ambiguous => {
                // Maybe created: look for it now; if not visible, leave the claim pending so a
                // later delivery reconciles again after the lease.
                if let Ok(Some(id)) = self
                    .dock
                    .find_task(secret, &draft.ids.list, &reference)
                    .await
                {
                    tracing::info!(tenant = %tenant.tenant, event = %event.id, rule = %rule.name, task = %id, "task created (found after an ambiguous answer)");
                    self.link_task(tenant, event, &id, draft.patient.as_deref())
                        .await;
                    self.settle(key, LedgerState::Done, Some(id), None)
                        .await
                        .map_err(store)?;
                    out.tasks += 1;
                    out.latencies.push(latency(event, self.clock.now()));
                    return Ok(());
                }
                Err(f)
            }
            Err(f) => self.give_back(key, f).await,
        }
    }

    /// Shadow mode without a preview list: the (event, rule) is claimed and settled done with
    /// nothing created.
    async fn report_only(&self, key: &str, out: &mut Delivered) -> Result<(), DockFailure> {
        match self.claim(key, self.clock.now()).await? {
            Claim::Done(_) | Claim::NeedsReview(_) => out.duplicates += 1,
            Claim::Held => return Err(held()),
            _ => {
                self.settle(
                    key,
                    LedgerState::Done,
                    None,
                    Some("shadow mode: reported, not created".into()),
                )
                .await
                .map_err(store_failure)?;
                tracing::info!(key, "shadow mode: reported, not created");
                out.previewed += 1;
            }
        }
        Ok(())
    }

    /// Claims the (event, rule) under `key`, unless an earlier version recorded it under its
    /// `legacy` key (done, under review, or claimed): then that item goes on deciding — the
    /// new claim is given back and the legacy key claimed instead, so nothing delivered before
    /// an upgrade is delivered again. Returns the claim and the key it holds. One read more,
    /// and only for a new claim.
    async fn claim_task(
        &self,
        key: &str,
        legacy: &str,
        now: DateTime<Utc>,
    ) -> Result<(Claim, String), DockFailure> {
        let claim = self.claim(key, now).await?;
        if !matches!(claim, Claim::New) {
            return Ok((claim, key.to_string()));
        }
        match self.ledger.get(legacy).await.map_err(store_failure)? {
            Some(e) if e.state != LedgerState::Failed => {
                self.ledger
                    .release(key, &self.owner)
                    .await
                    .map_err(store_failure)?;
                let claim = self.claim(legacy, now).await?;
                Ok((claim, legacy.to_string()))
            }
            _ => Ok((claim, key.to_string())),
        }
    }

    /// Claims `key` for this delivery, for its lease from `now`.
    async fn claim(&self, key: &str, now: DateTime<Utc>) -> Result<Claim, DockFailure> {
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        self.ledger
            .claim(key, &self.owner, now, until)
            .await
            .map_err(store_failure)
    }

    async fn settle(
        &self,
        key: &str,
        state: LedgerState,
        remote_id: Option<String>,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let entry = LedgerEntry {
            state,
            owner: None,
            until: None,
            remote_id,
            result: None,
            reason,
            attempts: 0,
            at: self.clock.now(),
            sending: false,
            expires: None,
        };
        self.ledger.settle(key, &self.owner, entry).await
    }

    /// Nothing was created: a permanent failure is settled `failed` (redrivable), a transient
    /// one gives the claim back.
    async fn give_back(&self, key: &str, f: DockFailure) -> Result<(), DockFailure> {
        let r = if f.permanent {
            self.settle(key, LedgerState::Failed, None, Some(f.reason.clone()))
                .await
        } else {
            self.ledger.release(key, &self.owner).await
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "ledger update failed");
        }
        Err(f)
    }

    /// Could not check: leave the expired claim pending for the next delivery.
    fn give_back_pending(&self, f: DockFailure) -> Result<(), DockFailure> {
        Err(DockFailure {
            permanent: false,
            ..f
        })
    }

    /// The Dock patient for the event's Kareo patient: the one this product recorded for it
    /// when there is one (a Dock user editing some patient's MRN cannot take its place), else
    /// found by MRN or created — and then recorded both ways.
    async fn linked_patient(
        &self,
        tenant: &TenantConfig,
        secret: &DockSecret,
        creds: Option<&Credentials>,
        event: &ChangeEvent,
    ) -> Result<Option<String>, DockFailure> {
        let link_fail = |e: StoreError| DockFailure {
            class: e.class(),
            reason: format!("patient link: {e}"),
            permanent: false,
            ambiguous: false,
        };
        if let Some(kareo_id) = kareo_patient_of(event) {
            let key = LinkKey::KareoPatient(kareo_id);
            if let Some(id) = self
                .ledger
                .link(&tenant.tenant, &key)
                .await
                .map_err(link_fail)?
                .and_then(|l| l.dock_patient)
            {
                return Ok(Some(id));
            }
        }
        let Some(d) = self.patient_draft(tenant, creds, event).await else {
            return Ok(None);
        };
        let id = self.dock.patient(secret, &d).await?;
        let now = self.clock.now();
        let expires = Some(now + chrono::Duration::days(LINK_TTL_DAYS));
        let both = [
            (
                LinkKey::KareoPatient(d.mrn.clone()),
                Link {
                    family: None,
                    record: None,
                    kareo_patient: None,
                    dock_patient: Some(id.clone()),
                    at: now,
                    expires,
                },
            ),
            (
                LinkKey::DockPatient(id.clone()),
                Link {
                    family: None,
                    record: None,
                    kareo_patient: Some(d.mrn.clone()),
                    dock_patient: None,
                    at: now,
                    expires,
                },
            ),
        ];
        for (key, link) in both {
            self.ledger
                .put_link(&tenant.tenant, &key, &link)
                .await
                .map_err(link_fail)?;
        }
        Ok(Some(id))
    }

    /// Records which Kareo record a created task stands for (the only way a Dock-driven write
    /// later finds it). A failure is logged: the task exists, and a write from it will be
    /// held for review for want of the link.
    async fn link_task(
        &self,
        tenant: &TenantConfig,
        event: &ChangeEvent,
        task: &str,
        dock_patient: Option<&str>,
    ) {
        let now = self.clock.now();
        let link = Link {
            family: Some(event.family),
            record: Some(event.record_id.clone()),
            kareo_patient: kareo_patient_of(event),
            dock_patient: dock_patient.map(str::to_string),
            at: now,
            expires: Some(now + chrono::Duration::days(LINK_TTL_DAYS)),
        };
        let key = LinkKey::DockTask(task.to_string());
        if let Err(e) = self.ledger.put_link(&tenant.tenant, &key, &link).await {
            tracing::warn!(tenant = %tenant.tenant, event = %event.id, task, class = %e.class(), "task link not recorded");
        }
    }

    async fn patient_draft(
        &self,
        tenant: &TenantConfig,
        creds: Option<&Credentials>,
        event: &ChangeEvent,
    ) -> Option<PatientDraft> {
        let tz = tenant.timezone;
        let mrn = kareo_patient_of(event)?;
        let from_fields = |f: &std::collections::BTreeMap<String, String>| {
            Some(PatientDraft {
                mrn: mrn.clone(),
                first_name: f.get("FirstName")?.clone(),
                last_name: f.get("LastName")?.clone(),
                dob: f
                    .get("DOB")
                    .and_then(|d| kareo::dates::parse(d, tz).ok())
                    .map(|t| t.with_timezone(&tz).date_naive()),
            })
        };
        if event.family == Family::Patients {
            if let Some(d) = from_fields(&event.record) {
                return Some(d);
            }
        }
        let creds = creds?;
        let id: i64 = mrn.parse().ok()?;
        let rec = self.kareo.patient(creds, id).await.ok()??;
        // Only the members the link reads are copied out of the record.
        let fields = rec
            .texts()
            .filter(|(k, _)| matches!(*k, "FirstName" | "LastName" | "DOB"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_fields(&fields)
    }
}

/// The Kareo patient an event is about: the record itself for patients, else its
/// `PatientID` member.
fn kareo_patient_of(event: &ChangeEvent) -> Option<String> {
    if event.family == Family::Patients {
        event
            .record
            .get("ID")
            .cloned()
            .or(Some(event.record_id.clone()))
    } else {
        event.record.get("PatientID").cloned()
    }
}

/// Reads a tenant's Dock credentials: its own secret, or a shared partner secret with the
/// tenant's organisation and user ids from its config (`domain::ports::dock_credentials`).
pub async fn dock_secret<S: SecretSource>(
    secrets: &S,
    tenant: &TenantConfig,
) -> Result<DockSecret, SecretError> {
    dock_credentials(secrets, &tenant.dock).await
}

/// Delivers a batch that may hold several tenants' events: groups them by tenant, reads each
/// tenant's secrets, and delivers. Unknown tenants and missing secrets are permanent failures.
pub async fn deliver_batch<D, L, K, T, S>(
    delivery: &Delivery<'_, D, L, K, T>,
    secrets: &S,
    tenants: &[TenantConfig],
    events: &[ChangeEvent],
) -> Delivered
where
    D: DockPort,
    L: Ledger + LinkStore,
    K: KareoSource,
    T: Clock,
    S: SecretSource,
{
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<ChangeEvent>> = Default::default();
    for e in events {
        by_tenant
            .entry(e.tenant.as_str())
            .or_default()
            .push(e.clone());
    }
    let mut total = Delivered::default();
    for (tenant_id, evs) in by_tenant {
        let fail_all =
            |total: &mut Delivered, class: ErrorClass, reason: String, permanent: bool| {
                total.events += evs.len();
                for e in &evs {
                    total.failures.push(Failure {
                        event: e.id.clone(),
                        rule: String::new(),
                        class,
                        reason: reason.clone(),
                        permanent,
                    });
                }
            };
        let Some(tenant) = tenants.iter().find(|t| t.tenant == tenant_id) else {
            fail_all(
                &mut total,
                ErrorClass::UnknownTenant,
                format!("no config for tenant '{tenant_id}'"),
                true,
            );
            continue;
        };
        if tenant.mapping.rules.is_empty() {
            // Nothing to create: no Dock credentials needed.
            total.events += evs.len();
            continue;
        }
        let secret = match dock_secret(secrets, tenant).await {
            Ok(s) => s,
            Err(e) => {
                let permanent = !matches!(e, SecretError::Unavailable(_));
                fail_all(&mut total, ErrorClass::Secret, e.to_string(), permanent);
                continue;
            }
        };
        let creds = kareo_credentials(secrets, &tenant.kareo.secret).await.ok();
        let d = delivery
            .deliver(tenant, &secret, creds.as_ref(), &evs)
            .await;
        total.events += d.events;
        total.matched += d.matched;
        total.tasks += d.tasks;
        total.workflows += d.workflows;
        total.duplicates += d.duplicates;
        total.held += d.held;
        total.previewed += d.previewed;
        total.latencies.extend(d.latencies);
        total.failures.extend(d.failures);
    }
    total
}

/// The task-creation function run in-process, as the poller's [`EventSink`] (local `sync`, the
/// demo, tests): a batch is accepted when nothing transient is left; permanent failures go to
/// the dead letters (`dead_letters()`), as the Lambda's on-failure destination would hold them.
pub struct DeliverySink<'a, D, L, K, T, S> {
    /// The delivery.
    pub delivery: Delivery<'a, D, L, K, T>,
    /// Secrets.
    pub secrets: &'a S,
    /// Tenant configs.
    pub tenants: Vec<TenantConfig>,
    /// Permanent failures.
    pub dead: Mutex<Vec<Failure>>,
    /// Running totals.
    pub totals: Mutex<Delivered>,
}

impl<'a, D, L, K, T, S> DeliverySink<'a, D, L, K, T, S> {
    /// A sink delivering for these tenants.
    pub fn new(
        delivery: Delivery<'a, D, L, K, T>,
        secrets: &'a S,
        tenants: Vec<TenantConfig>,
    ) -> Self {
        DeliverySink {
            delivery,
            secrets,
            tenants,
            dead: Mutex::new(Vec::new()),
            totals: Mutex::new(Delivered::default()),
        }
    }

    /// Permanent failures so far.
    pub fn dead_letters(&self) -> Vec<Failure> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Totals so far.
    pub fn totals(&self) -> Delivered {
        self.totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl<D, L, K, T, S> EventSink for DeliverySink<'_, D, L, K, T, S>
where
    D: DockPort,
    L: Ledger + LinkStore,
    K: KareoSource,
    T: Clock,
    S: SecretSource,
{
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let d = deliver_batch(&self.delivery, self.secrets, &self.tenants, batch).await;
        {
            let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            t.events += d.events;
            t.matched += d.matched;
            t.tasks += d.tasks;
            t.workflows += d.workflows;
            t.duplicates += d.duplicates;
            t.held += d.held;
            t.previewed += d.previewed;
            t.latencies.extend(d.latencies.iter().cloned());
        }
        let transient = d.has_transient();
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        for f in d.failures {
            if f.permanent {
                dead.push(f);
            } else if let Ok(mut t) = self.totals.lock() {
                t.failures.push(f);
            }
        }
        if transient {
            return Err(SinkError {
                class: ErrorClass::SinkRetry,
                message: "some tasks could not be created yet; the batch will be delivered again"
                    .into(),
            });
        }
        Ok(())
    }
}
