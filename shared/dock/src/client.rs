//! The HTTP client: token cache → rate limit → the four headers → send → classify, with
//! retries.
//!
//! One [`DockClient`] serves every organisation of a process: credentials ([`DockSecret`]) are
//! passed per call, and tokens are cached per (client id, organization id). Build it once and
//! share it (it is cheap to clone).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{parse_retry_after, DockError, ErrorBody};
use crate::model::{
    CustomField, DeployWorkflow, DeployedWorkflow, NewPatient, NewTask, Patient, PatientPatch,
    Task, TaskGroup, TaskList, TaskPatch, TaskQuery, User, Webhook, WebhookBody, WorkflowTemplate,
};

/// Dock's production API base URL (\[C\] README, Awell `dock.types.ts`).
pub const DEFAULT_API_URL: &str = "https://partner-api.dock.health";
/// Dock's production auth base URL; the token endpoint is `{auth_url}/oauth2/token` (\[C\]).
pub const DEFAULT_AUTH_URL: &str = "https://partner-auth.dock.health";
/// Dock's development API base URL (\[C\]).
pub const DEV_API_URL: &str = "https://partner-api-dev.dockhealth.app";
/// Dock's development auth base URL (\[C\]).
pub const DEV_AUTH_URL: &str = "https://partner-auth-dev.dockhealth.app";
/// The scopes requested, space-separated (\[C\]: the set Awell uses and Dock's examples show).
pub const SCOPES: &str = "dockhealth/user.all.read dockhealth/user.all.write dockhealth/patient.all.read dockhealth/patient.all.write";
/// The scopes asked for when Dock answers `invalid_scope` to [`SCOPES`] (a client not granted
/// the patient scopes): tasks and lists still work; patient calls then fail as `auth` with a
/// 403, which names the missing grant.
pub const USER_SCOPES: &str = "dockhealth/user.all.read dockhealth/user.all.write";

/// The most pages one list read follows (at the default page size, 100,000 items).
const MAX_PAGES: usize = 1000;

/// The five values Dock support issues per organisation (\[C\] README). `Debug` shows the
/// organization and user ids only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockSecret {
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: String,
    /// `x-api-key`.
    pub api_key: String,
    /// `x-organization-id`.
    pub organization_id: String,
    /// `x-user-id`: the Dock user the integration acts as (task creator).
    pub user_id: String,
}

impl std::fmt::Debug for DockSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockSecret")
            .field("client_id", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field("api_key", &"<redacted>")
            .field("organization_id", &self.organization_id)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// How calls are retried: jittered exponential backoff, bounded in attempts and total delay,
/// never shorter than a 429's `Retry-After`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Upper bound of all delays of one call together.
    pub max_total: Duration,
    /// A `Retry-After` longer than this is not waited for: the 429 is returned.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_total: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The backon builder for this policy.
    pub fn backoff(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total))
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct DockConfig {
    /// API base URL (`DOCK_API_URL`), e.g. `https://partner-api.dock.health`.
    pub api_url: String,
    /// Auth base URL (`DOCK_AUTH_URL`); tokens come from `{auth_url}/oauth2/token`.
    pub auth_url: String,
    /// Limit for one whole exchange (request and response body).
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Client-side limit of API calls per second, per client id (burst of the same size);
    /// 0 = no limit. Dock publishes no numbers (\[U\]).
    pub rate_per_sec: u32,
    /// A token is replaced this long before `expires_in` runs out (at most half its
    /// lifetime).
    pub token_margin: Duration,
    /// Send `Authorization: Bearer <token>` (true) or the raw token as Dock's curl examples
    /// do (false). \[I\] both are accepted; when the client's first call is refused, its
    /// retry with a fresh token uses the other form, which is kept once a call goes through.
    pub bearer: bool,
    /// The scopes requested (`DOCK_SCOPES`, space-separated; default [`SCOPES`]). When Dock
    /// answers `invalid_scope`, [`USER_SCOPES`] is asked for once and kept.
    pub scopes: String,
    /// Items asked for per page of a list read (`startPosition`/`endPosition`, see
    /// [`DockClient::list_tasks`]).
    pub page_size: usize,
    /// The largest response body read (default 32 MiB): a larger one is a `decode` failure,
    /// read no further, so a broken or hostile endpoint cannot exhaust a function's memory.
    pub max_body: usize,
}

impl Default for DockConfig {
    fn default() -> Self {
        DockConfig {
            api_url: DEFAULT_API_URL.into(),
            auth_url: DEFAULT_AUTH_URL.into(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_per_sec: 10,
            token_margin: Duration::from_secs(60),
            bearer: true,
            scopes: SCOPES.into(),
            page_size: 100,
            max_body: 32 << 20,
        }
    }
}

impl DockConfig {
    /// Defaults, with `DOCK_API_URL` and `DOCK_AUTH_URL` when set.
    pub fn from_env() -> DockConfig {
        let mut c = DockConfig::default();
        if let Some(v) = env("DOCK_API_URL") {
            c.api_url = v;
        }
        if let Some(v) = env("DOCK_AUTH_URL") {
            c.auth_url = v;
        }
        if let Some(v) = env("DOCK_SCOPES") {
            c.scopes = v;
        }
        c
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
    expires_at: Instant,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

struct Inner {
    http: reqwest::Client,
    cfg: DockConfig,
    api: Url,
    token_url: Url,
    tokens: Mutex<HashMap<(String, String), TokenSlot>>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// The `Authorization` form in use (starts as `cfg.bearer`; flipped once on a refusal).
    bearer: AtomicBool,
    /// The scopes fell back to [`USER_SCOPES`] after an `invalid_scope`.
    narrowed: AtomicBool,
    /// The form was flipped already (it flips at most once).
    flipped: AtomicBool,
    /// A call went through with the current form.
    confirmed: AtomicBool,
    /// The list reads seen ignoring `startPosition`/`endPosition` (answered whole): read in
    /// one call from then on.
    whole: Mutex<std::collections::HashSet<&'static str>>,
}

/// The Dock client.
#[derive(Clone)]
pub struct DockClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockClient")
            .field("api_url", &self.inner.cfg.api_url)
            .field("auth_url", &self.inner.cfg.auth_url)
            .finish_non_exhaustive()
    }
}

/// Is the call a create (POST that makes something)? Creates are not retried after an
/// ambiguous failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Create,
    /// PATCH/DELETE: applying twice gives the same state, so retried like reads.
    Idempotent,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: Option<String>,
}

fn base_url(s: &str) -> Result<Url, DockError> {
    let mut u = Url::parse(s.trim()).map_err(|_| DockError::Request {
        op: "new",
        reason: "base URL does not parse",
    })?;
    let host = u.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    // Tokens, the client secret and the API key travel on every call: https only, plain http
    // to a loopback host (the simulators).
    if u.cannot_be_a_base() || !(u.scheme() == "https" || (u.scheme() == "http" && loopback)) {
        return Err(DockError::Request {
            op: "new",
            reason: "base URL must be https (plain http only to a loopback host)",
        });
    }
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Ok(u)
}

impl DockClient {
    /// A client with its own connection pool, token cache and rate limiter.
    pub fn new(cfg: DockConfig) -> Result<DockClient, DockError> {
        let api = base_url(&cfg.api_url)?;
        let token_url =
            base_url(&cfg.auth_url)?
                .join("oauth2/token")
                .map_err(|_| DockError::Request {
                    op: "new",
                    reason: "auth URL does not parse",
                })?;
        let http = https::client_builder()
            // A redirect would re-send the OAuth form or the API key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| DockError::Request {
                op: "new",
                reason: "HTTP client could not be built",
            })?;
        let limiter =
            NonZeroU32::new(cfg.rate_per_sec).map(|r| RateLimiter::keyed(Quota::per_second(r)));
        let cfg_bearer = cfg.bearer;
        Ok(DockClient {
            inner: Arc::new(Inner {
                http,
                cfg,
                api,
                token_url,
                tokens: Mutex::new(HashMap::new()),
                limiter,
                bearer: AtomicBool::new(cfg_bearer),
                narrowed: AtomicBool::new(false),
                flipped: AtomicBool::new(false),
                confirmed: AtomicBool::new(false),
                whole: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DockConfig {
        &self.inner.cfg
    }

    /// The scopes fell back to [`USER_SCOPES`] after Dock refused [`SCOPES`] as
    /// `invalid_scope`: patient calls will fail.
    pub fn scopes_narrowed(&self) -> bool {
        self.inner.narrowed.load(Ordering::Relaxed)
    }

    /// This list read (by its op name, e.g. `list_task_lists`) was seen answered whole,
    /// `startPosition`/`endPosition` ignored.
    pub fn reads_whole(&self, op: &str) -> bool {
        self.inner
            .whole
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(op)
    }

    /// Forgets the cached token of a secret's (client id, organization).
    pub fn forget_token(&self, secret: &DockSecret) {
        let mut map = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(secret.client_id.clone(), secret.organization_id.clone()));
    }

    // ---- typed calls -------------------------------------------------------------------

    /// `GET /api/v1/list`: the task lists the user can access (soft-deleted ones included,
    /// see [`TaskList::active`]).
    pub async fn list_task_lists(&self, secret: &DockSecret) -> Result<Vec<TaskList>, DockError> {
        self.get_all(secret, "list_task_lists", &["list"], &[])
            .await
    }

    /// `GET /api/v1/list/{id}`.
    pub async fn get_task_list(
        &self,
        secret: &DockSecret,
        id: &str,
    ) -> Result<TaskList, DockError> {
        self.get(secret, "get_task_list", &["list", id], &[]).await
    }

    /// `GET /api/v1/task/group?taskListIdentifier={list}`: the groups of a list.
    pub async fn list_task_groups(
        &self,
        secret: &DockSecret,
        task_list_id: &str,
    ) -> Result<Vec<TaskGroup>, DockError> {
        self.get_all(
            secret,
            "list_task_groups",
            &["task", "group"],
            &[("taskListIdentifier", task_list_id.to_string())],
        )
        .await
    }

    /// `GET /api/v1/taskWorkflowTemplate` (\[A\]: the list call is not shown anywhere; it
    /// follows Dock's list convention).
    pub async fn list_workflow_templates(
        &self,
        secret: &DockSecret,
    ) -> Result<Vec<WorkflowTemplate>, DockError> {
        self.get_all(
            secret,
            "list_workflow_templates",
            &["taskWorkflowTemplate"],
            &[],
        )
        .await
    }

    /// `GET /api/v1/taskWorkflowTemplate/{id}` (\[C\]: the one template call documented).
    pub async fn get_workflow_template(
        &self,
        secret: &DockSecret,
        id: &str,
    ) -> Result<WorkflowTemplate, DockError> {
        self.get(
            secret,
            "get_workflow_template",
            &["taskWorkflowTemplate", id],
            &[],
        )
        .await
    }

    /// `GET /api/v1/user`: the users of the organization.
    pub async fn list_users(&self, secret: &DockSecret) -> Result<Vec<User>, DockError> {
        self.get_all(secret, "list_users", &["user"], &[]).await
    }

    /// The user with this e-mail (trimmed, case-insensitive; inactive users skipped), from
    /// [`Self::list_users`] — no server-side filter is documented (\[U\]).
    pub async fn find_user_by_email(
        &self,
        secret: &DockSecret,
        email: &str,
    ) -> Result<Option<User>, DockError> {
        let want = email.trim();
        Ok(self.list_users(secret).await?.into_iter().find(|u| {
            u.active != Some(false)
                && u.email
                    .as_deref()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case(want))
        }))
    }

    /// `GET /api/v1/configuration/field`: custom fields.
    pub async fn list_custom_fields(
        &self,
        secret: &DockSecret,
    ) -> Result<Vec<CustomField>, DockError> {
        self.get(
            secret,
            "list_custom_fields",
            &["configuration", "field"],
            &[],
        )
        .await
    }

    /// `GET /api/v1/patient`: every patient of the organization (soft-deleted included).
    pub async fn list_patients(&self, secret: &DockSecret) -> Result<Vec<Patient>, DockError> {
        self.get_all(secret, "list_patients", &["patient"], &[])
            .await
    }

    /// Active patients whose `mrn` equals `mrn` exactly (trimmed). Dock documents no
    /// server-side search (\[U\]), so this lists every patient and filters here.
    pub async fn find_patients_by_mrn(
        &self,
        secret: &DockSecret,
        mrn: &str,
    ) -> Result<Vec<Patient>, DockError> {
        let want = mrn.trim();
        Ok(self
            .list_patients(secret)
            .await?
            .into_iter()
            .filter(|p| p.is_active() && p.mrn.as_deref().map(str::trim) == Some(want))
            .collect())
    }

    /// `GET /api/v1/patient/{id}`.
    pub async fn get_patient(&self, secret: &DockSecret, id: &str) -> Result<Patient, DockError> {
        self.get(secret, "get_patient", &["patient", id], &[]).await
    }

    /// `POST /api/v1/patient`. Not retried after an ambiguous failure: reconcile with
    /// [`Self::find_patients_by_mrn`].
    pub async fn create_patient(
        &self,
        secret: &DockSecret,
        patient: &NewPatient,
    ) -> Result<Patient, DockError> {
        self.send(
            secret,
            "create_patient",
            Method::POST,
            &["patient"],
            &[],
            Some(patient),
            Kind::Create,
        )
        .await
    }

    /// `PATCH /api/v1/patient/{id}`: only the fields set change.
    pub async fn patch_patient(
        &self,
        secret: &DockSecret,
        id: &str,
        patch: &PatientPatch,
    ) -> Result<Patient, DockError> {
        self.send(
            secret,
            "patch_patient",
            Method::PATCH,
            &["patient", id],
            &[],
            Some(patch),
            Kind::Idempotent,
        )
        .await
    }

    /// `POST /api/v1/task` (200 with the task). Not retried after an ambiguous failure
    /// ([`DockError::is_ambiguous`]): the caller reconciles (e.g. [`Self::list_tasks`] and a
    /// stamped custom field) before posting again.
    pub async fn create_task(
        &self,
        secret: &DockSecret,
        task: &NewTask,
    ) -> Result<Task, DockError> {
        self.send(
            secret,
            "create_task",
            Method::POST,
            &["task"],
            &[],
            Some(task),
            Kind::Create,
        )
        .await
    }

    /// `GET /api/v1/task/{id}` (a soft-deleted task comes back with `active:false`).
    pub async fn get_task(&self, secret: &DockSecret, id: &str) -> Result<Task, DockError> {
        self.get(secret, "get_task", &["task", id], &[]).await
    }

    /// `GET /api/v1/task?…`: at least one filter is required. Soft-deleted tasks are dropped
    /// unless `include_inactive`. Pages are followed (see `get_all`).
    pub async fn list_tasks(
        &self,
        secret: &DockSecret,
        query: &TaskQuery,
    ) -> Result<Vec<Task>, DockError> {
        let params = query.params();
        if params.is_empty() {
            return Err(DockError::Request {
                op: "list_tasks",
                reason: "at least one of task list, patient, assignee is required",
            });
        }
        let tasks: Vec<Task> = self
            .get_all(secret, "list_tasks", &["task"], &params)
            .await?;
        Ok(if query.include_inactive {
            tasks
        } else {
            tasks.into_iter().filter(Task::is_active).collect()
        })
    }

    /// `PATCH /api/v1/task/{id}`: only the fields set change.
    pub async fn patch_task(
        &self,
        secret: &DockSecret,
        id: &str,
        patch: &TaskPatch,
    ) -> Result<Task, DockError> {
        self.send(
            secret,
            "patch_task",
            Method::PATCH,
            &["task", id],
            &[],
            Some(patch),
            Kind::Idempotent,
        )
        .await
    }

    /// `DELETE /api/v1/task/{id}` (204, soft delete).
    pub async fn delete_task(&self, secret: &DockSecret, id: &str) -> Result<(), DockError> {
        let _: serde::de::IgnoredAny = self
            .send(
                secret,
                "delete_task",
                Method::DELETE,
                &["task", id],
                &[],
                None::<&()>,
                Kind::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// `POST /api/v1/taskWorkflow`: applies a template, creating its tasks. Not retried after
    /// an ambiguous failure.
    pub async fn deploy_workflow(
        &self,
        secret: &DockSecret,
        deploy: &DeployWorkflow,
    ) -> Result<DeployedWorkflow, DockError> {
        self.send(
            secret,
            "deploy_workflow",
            Method::POST,
            &["taskWorkflow"],
            &[],
            Some(deploy),
            Kind::Create,
        )
        .await
    }

    /// `PATCH /api/v1/taskWorkflow/{id}` `{name}`: renames a deployed workflow (\[C\]).
    pub async fn rename_workflow(
        &self,
        secret: &DockSecret,
        id: &str,
        name: &str,
    ) -> Result<DeployedWorkflow, DockError> {
        let body = serde_json::json!({ "name": name });
        self.send(
            secret,
            "rename_workflow",
            Method::PATCH,
            &["taskWorkflow", id],
            &[],
            Some(&body),
            Kind::Idempotent,
        )
        .await
    }

    /// `POST /api/v1/webhook` (scope `user.all.write`): creates a webhook; Dock then sends
    /// its verification challenge to the URL. Not retried after an ambiguous failure (a URL
    /// is unique across Dock: look it up with [`Self::list_webhooks`]).
    pub async fn create_webhook(
        &self,
        secret: &DockSecret,
        body: &WebhookBody,
    ) -> Result<Webhook, DockError> {
        self.send(
            secret,
            "create_webhook",
            Method::POST,
            &["webhook"],
            &[],
            Some(body),
            Kind::Create,
        )
        .await
    }

    /// `PUT /api/v1/webhook/{id}`: replaces every field and re-triggers verification.
    pub async fn update_webhook(
        &self,
        secret: &DockSecret,
        id: &str,
        body: &WebhookBody,
    ) -> Result<Webhook, DockError> {
        self.send(
            secret,
            "update_webhook",
            Method::PUT,
            &["webhook", id],
            &[],
            Some(body),
            Kind::Idempotent,
        )
        .await
    }

    /// `GET /api/v1/webhook/{id}`.
    pub async fn get_webhook(&self, secret: &DockSecret, id: &str) -> Result<Webhook, DockError> {
        self.get(secret, "get_webhook", &["webhook", id], &[]).await
    }

    /// `GET /api/v1/webhook`: the organisation's webhooks.
    pub async fn list_webhooks(&self, secret: &DockSecret) -> Result<Vec<Webhook>, DockError> {
        self.get(secret, "list_webhooks", &["webhook"], &[]).await
    }

    /// `GET /api/v1/event?organization=…&startTs=…&endTs=…[&type=…]`: the organisation's
    /// events created in `[start, end)` (Dock's event log, for deliveries it could not push),
    /// as Dock returns them — raw JSON, read by the webhook handler exactly as it reads a
    /// delivery. Timestamps go as the docs write them, `yyyy-MM-ddTHH:mm:ss.SSSZ` (UTC).
    pub async fn list_events(
        &self,
        secret: &DockSecret,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
        event_type: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, DockError> {
        let ts = |t: chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let mut q = vec![
            ("organization", secret.organization_id.clone()),
            ("startTs", ts(start)),
            ("endTs", ts(end)),
        ];
        if let Some(t) = event_type {
            q.push(("type", t.to_string()));
        }
        self.get_all(secret, "list_events", &["event"], &q).await
    }

    // ---- machinery ---------------------------------------------------------------------

    /// Every item of a list endpoint, whichever way Dock pages it (`dock-api.md` §7:
    /// undocumented; S10's internal API takes `startPosition`/`endPosition`). Each page asks
    /// for `[start, start + page_size]`, and the next starts after what actually came back,
    /// so an inclusive or exclusive `endPosition` and a server cap below `page_size` read the
    /// same; the read ends on an empty page. A server that ignores positions shows it by
    /// answering more than asked, or the same items again: that answer was the whole array,
    /// and this list is read in one call from then on. (A page that only partly repeats —
    /// items shifted between pages — is followed on.) A server that ignores positions *and*
    /// caps its answer cannot be read past the cap; `check` reports which reading holds.
    /// Items are told apart by `id` (or a group's `taskGroupIdentifier`, an event's
    /// `eventIdentifier`).
    async fn get_all<T: DeserializeOwned>(
        &self,
        secret: &DockSecret,
        op: &'static str,
        path: &[&str],
        query: &[(&'static str, String)],
    ) -> Result<Vec<T>, DockError> {
        let whole = self
            .inner
            .whole
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(op);
        if whole {
            return self.get(secret, op, path, query).await;
        }
        let page = self.inner.cfg.page_size.max(1);
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::new();
        let mut start = 0usize;
        for _ in 0..MAX_PAGES {
            let mut q = query.to_vec();
            q.push(("startPosition", start.to_string()));
            q.push(("endPosition", (start + page).to_string()));
            let got: Vec<serde_json::Value> = self.get(secret, op, path, &q).await?;
            let n = got.len();
            let mut fresh = 0usize;
            for v in got {
                let key = ["id", "taskGroupIdentifier", "eventIdentifier", "identifier"]
                    .iter()
                    .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
                    .unwrap_or_else(|| v.to_string());
                if seen.insert(key) {
                    fresh += 1;
                    items.push(
                        serde_json::from_value::<T>(v).map_err(|e| DockError::Decode {
                            op,
                            status: 200,
                            reason: format!("{:?} in item {}", e.classify(), items.len()),
                        })?,
                    );
                }
            }
            if (fresh == 0 && n > 0) || n > page + 1 {
                // Positions ignored (the whole array again, or more than asked): every item
                // is here, and the next read of this kind is one call.
                self.inner
                    .whole
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(op);
                return Ok(items);
            }
            if n == 0 {
                return Ok(items);
            }
            start += n;
        }
        tracing::warn!(
            op,
            pages = MAX_PAGES,
            "dock list read stopped at the page limit"
        );
        Ok(items)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        secret: &DockSecret,
        op: &'static str,
        path: &[&str],
        query: &[(&'static str, String)],
    ) -> Result<T, DockError> {
        self.send(
            secret,
            op,
            Method::GET,
            path,
            query,
            None::<&()>,
            Kind::Read,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        secret: &DockSecret,
        op: &'static str,
        method: Method,
        path: &[&str],
        query: &[(&'static str, String)],
        body: Option<&B>,
        kind: Kind,
    ) -> Result<T, DockError> {
        let mut url = self.inner.api.clone();
        {
            let mut segs = url.path_segments_mut().map_err(|_| DockError::Request {
                op,
                reason: "base URL cannot take a path",
            })?;
            segs.pop_if_empty().extend(["api", "v1"]).extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let body: Option<Vec<u8>> = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|_| DockError::Request {
                op,
                reason: "body does not serialize",
            })?),
            None => None,
        };
        let policy = &self.inner.cfg.retry;
        let (status, bytes) = (|| self.attempt(secret, op, &method, &url, body.as_deref()))
            .retry(policy.backoff())
            .when(|e: &DockError| e.is_retryable() && !(kind == Kind::Create && e.is_ambiguous()))
            .adjust(
                |e: &DockError, d: Option<Duration>| match (e.retry_after(), d) {
                    (Some(wait), _) if wait > policy.max_retry_after => None,
                    (Some(wait), Some(d)) => Some(d.max(wait)),
                    (_, d) => d,
                },
            )
            .notify(|e: &DockError, d: Duration| {
                tracing::info!(
                    op,
                    class = e.class(),
                    status = e.status(),
                    retry_in_ms = d.as_millis() as u64,
                    "dock call retried"
                );
            })
            .await?;
        decode(op, status, &bytes)
    }

    /// One exchange: rate limit, token, headers, send, and on 401 one token refresh and
    /// resend, then (once per client) the other `Authorization` form.
    // Long: one request loop whose token refresh and Authorization-form fallback share its state.
    async fn attempt(
        &self,
        secret: &DockSecret,
        op: &'static str,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), DockError> {
        let mut token = self.token(secret, op, None).await?;
        let mut refreshed = false;
        let mut flipped_here = false;
        loop {
            if let Some(l) = &self.inner.limiter {
                l.until_key_ready(&secret.client_id).await;
            }
            let started = Instant::now();
            let auth = if self.inner.bearer.load(Ordering::Relaxed) {
                format!("Bearer {token}")
            } else {
                token.clone()
            };
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header("x-api-key", &secret.api_key)
                .header("Authorization", auth)
                .header("x-user-id", &secret.user_id)
                .header("x-organization-id", &secret.organization_id)
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_vec());
            }
            let timeout = self.inner.cfg.timeout;
            let resp = req.send().await.map_err(|e| send_error(op, &e, timeout))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let bytes = capped_body(resp, op, status, self.inner.cfg.max_body)
                .await
                .map_err(|e| match e {
                    Capped::Http(e) => send_error(op, &e, timeout),
                    Capped::Over(e) => e,
                })?;
            tracing::debug!(
                op,
                method = %method,
                status,
                refreshed,
                organization = %secret.organization_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "dock call"
            );
            match status {
                200..=299 => {
                    self.inner.confirmed.store(true, Ordering::Relaxed);
                    return Ok((status, bytes));
                }
                401 if !refreshed => {
                    refreshed = true;
                    // Until a call has gone through, the `Authorization` form is a guess
                    // (Dock's examples send the raw token; OAuth clients send `Bearer`): the
                    // retry with a fresh token also tries the other form, once per client.
                    if !self.inner.confirmed.load(Ordering::Relaxed)
                        && !self.inner.flipped.swap(true, Ordering::Relaxed)
                    {
                        flipped_here = true;
                        let bearer = !self.inner.bearer.load(Ordering::Relaxed);
                        self.inner.bearer.store(bearer, Ordering::Relaxed);
                        tracing::warn!(op, bearer, "dock refused the first token; retrying with a fresh one in the other Authorization form");
                    }
                    token = self.token(secret, op, Some(&token)).await?;
                }
                401 | 403 => {
                    if flipped_here && status == 401 {
                        // The other form did not help either: the credentials are refused,
                        // not the form. Back to the first form, and a later call may try again.
                        let bearer = !self.inner.bearer.load(Ordering::Relaxed);
                        self.inner.bearer.store(bearer, Ordering::Relaxed);
                        self.inner.flipped.store(false, Ordering::Relaxed);
                    }
                    return Err(DockError::Auth {
                        op,
                        status,
                        body: Box::new(ErrorBody::parse(&bytes)),
                    });
                }
                404 => {
                    return Err(DockError::NotFound {
                        op,
                        body: Box::new(ErrorBody::parse(&bytes)),
                    })
                }
                429 => return Err(DockError::RateLimited { op, retry_after }),
                _ => {
                    return Err(DockError::Http {
                        op,
                        status,
                        body: Box::new(ErrorBody::parse(&bytes)),
                    })
                }
            }
        }
    }

    fn slot(&self, secret: &DockSecret) -> TokenSlot {
        let mut map = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((secret.client_id.clone(), secret.organization_id.clone()))
            .or_default()
            .clone()
    }

    /// A token for the secret: the cached one while it is fresh and is not `rejected`, else a
    /// new one. If fetching fails while the cached token is still unexpired (and not
    /// rejected), the cached one is used.
    async fn token(
        &self,
        secret: &DockSecret,
        op: &'static str,
        rejected: Option<&str>,
    ) -> Result<String, DockError> {
        let slot = self.slot(secret);
        let mut cached = slot.lock().await;
        let now = Instant::now();
        let usable = cached
            .as_ref()
            .filter(|c| Some(c.token.as_str()) != rejected)
            .cloned();
        if let Some(c) = &usable {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        match self.fetch_token(secret, op).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(e) => match usable {
                Some(c) if Instant::now() < c.expires_at => {
                    tracing::warn!(
                        op,
                        class = e.class(),
                        "dock token refresh failed; using the current token"
                    );
                    Ok(c.token)
                }
                _ => {
                    *cached = None;
                    Err(e)
                }
            },
        }
    }

    /// A new token for the configured scopes; on `invalid_scope`, once, for [`USER_SCOPES`]
    /// (kept for the client's life).
    async fn fetch_token(
        &self,
        secret: &DockSecret,
        op: &'static str,
    ) -> Result<CachedToken, DockError> {
        let narrowed = self.inner.narrowed.load(Ordering::Relaxed);
        let scopes = if narrowed {
            USER_SCOPES
        } else {
            self.inner.cfg.scopes.as_str()
        };
        match self.fetch_token_for(secret, op, scopes).await {
            Err(DockError::Token { code: Some(c), .. })
                if c == "invalid_scope" && !narrowed && scopes != USER_SCOPES =>
            {
                tracing::warn!(op, "dock refused the scopes; asking for the user scopes only (patient links will fail)");
                self.inner.narrowed.store(true, Ordering::Relaxed);
                self.fetch_token_for(secret, op, USER_SCOPES).await
            }
            other => other,
        }
    }

    async fn fetch_token_for(
        &self,
        secret: &DockSecret,
        op: &'static str,
        scopes: &str,
    ) -> Result<CachedToken, DockError> {
        let started = Instant::now();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", secret.client_id.as_str()),
            ("client_secret", secret.client_secret.as_str()),
            ("scope", scopes),
        ];
        let token_err = |status: Option<u16>, code: &str| DockError::Token {
            op,
            status,
            code: Some(code.to_string()),
        };
        let resp = self
            .inner
            .http
            .post(self.inner.token_url.clone())
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                token_err(
                    None,
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = capped_body(resp, op, status, self.inner.cfg.max_body)
            .await
            .map_err(|e| {
                token_err(
                    None,
                    match e {
                        Capped::Http(e) if e.is_timeout() => "timeout",
                        Capped::Http(_) => "transport",
                        Capped::Over(_) => "decode",
                    },
                )
            })?;
        tracing::debug!(
            op,
            status,
            organization = %secret.organization_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dock token request"
        );
        if !(200..300).contains(&status) {
            let code = serde_json::from_slice::<OAuthError>(&bytes)
                .ok()
                .and_then(|e| e.error)
                .filter(|c| {
                    c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                });
            return Err(DockError::Token {
                op,
                status: Some(status),
                code,
            });
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| token_err(Some(status), "decode"))?;
        if t.access_token.is_empty() {
            return Err(token_err(Some(status), "decode"));
        }
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(300));
        let margin = self.inner.cfg.token_margin.min(lifetime / 2);
        let now = Instant::now();
        Ok(CachedToken {
            token: t.access_token,
            refresh_at: now + (lifetime - margin),
            expires_at: now + lifetime,
        })
    }
}

/// Why a body was not read whole.
enum Capped {
    /// The transport failed.
    Http(reqwest::Error),
    /// It is larger than the cap.
    Over(DockError),
}

/// The response body, read chunk by chunk and no further than `max` bytes.
async fn capped_body(
    mut resp: reqwest::Response,
    op: &'static str,
    status: u16,
    max: usize,
) -> Result<Vec<u8>, Capped> {
    let over = || {
        Capped::Over(DockError::Decode {
            op,
            status,
            reason: format!("the response is larger than {max} bytes: not read"),
        })
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(over());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Http)? {
        if body.len() + chunk.len() > max {
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn send_error(op: &'static str, e: &reqwest::Error, after: Duration) -> DockError {
    if e.is_connect() {
        return DockError::Transport { op, sent: false };
    }
    if e.is_timeout() {
        return DockError::Timeout {
            op,
            after,
            sent: true,
        };
    }
    DockError::Transport { op, sent: true }
}

fn decode<T: DeserializeOwned>(
    op: &'static str,
    status: u16,
    bytes: &[u8],
) -> Result<T, DockError> {
    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    serde_json::from_slice(body).map_err(|e| DockError::Decode {
        op,
        status,
        // Category and position only: serde's message can quote the content.
        reason: format!(
            "{:?} at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = DockSecret {
            client_id: "cid-123".into(),
            client_secret: "shh-456".into(),
            api_key: "key-789".into(),
            organization_id: "org-1".into(),
            user_id: "user-1".into(),
        };
        let d = format!("{s:?}");
        for secret in ["cid-123", "shh-456", "key-789"] {
            assert!(!d.contains(secret), "{d}");
        }
        assert!(d.contains("org-1") && d.contains("user-1"));
        let json = r#"{"client_id":"a","client_secret":"b","api_key":"c","organization_id":"d","user_id":"e"}"#;
        let back: DockSecret = serde_json::from_str(json).unwrap();
        assert_eq!(back.api_key, "c");
    }

    #[test]
    fn urls_are_built_from_bases() {
        let c = DockClient::new(DockConfig {
            api_url: "http://127.0.0.1:9/prefix".into(),
            auth_url: "http://127.0.0.1:8".into(),
            ..DockConfig::default()
        })
        .unwrap();
        assert_eq!(
            c.inner.token_url.as_str(),
            "http://127.0.0.1:8/oauth2/token"
        );
        assert_eq!(c.inner.api.as_str(), "http://127.0.0.1:9/prefix/");
        assert!(matches!(
            DockClient::new(DockConfig {
                api_url: "not a url".into(),
                ..DockConfig::default()
            }),
            Err(DockError::Request { .. })
        ));
        let d = DockConfig::default();
        assert_eq!(d.api_url, "https://partner-api.dock.health");
        assert_eq!(d.auth_url, "https://partner-auth.dock.health");
    }

    #[test]
    fn decode_errors_do_not_quote_content() {
        let e = decode::<Vec<u32>>("x", 200, br#"["Jane Doe"]"#).unwrap_err();
        assert!(!e.to_string().contains("Jane"), "{e}");
        assert_eq!(e.class(), "decode");
        let unit: () = decode("x", 204, b"").unwrap();
        assert_eq!(unit, ());
    }

    #[tokio::test]
    async fn unreachable_host_is_a_token_error_that_was_not_sent() {
        // Port 9 (discard) on loopback: nothing listens in the test environment.
        let c = DockClient::new(DockConfig {
            api_url: "http://127.0.0.1:9".into(),
            auth_url: "http://127.0.0.1:9".into(),
            retry: RetryPolicy::none(),
            ..DockConfig::default()
        })
        .unwrap();
        let s = DockSecret {
            client_id: "a".into(),
            client_secret: "b".into(),
            api_key: "c".into(),
            organization_id: "d".into(),
            user_id: "e".into(),
        };
        let e = c.list_users(&s).await.unwrap_err();
        assert_eq!(e.class(), "token");
        assert!(e.is_retryable() && !e.is_ambiguous());
    }
}
