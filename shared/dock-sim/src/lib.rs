//! A Dock Health partner-API simulator: real HTTP/1.1 servers on loopback (one for the token
//! endpoint, one for the API) that check what the real service checks, for tests and demos.
//!
//! ```no_run
//! # async fn demo() {
//! use dock_sim::{DockSim, Fault, FaultRule, Seed};
//! let sim = DockSim::start(Seed::default()).await;
//! let cfg = dock::DockConfig { api_url: sim.api_url(), auth_url: sim.auth_url(), ..Default::default() };
//! let client = dock::DockClient::new(cfg).unwrap();
//! sim.inject(FaultRule::new(Fault::RateLimit { retry_after_secs: Some(1) }).on("GET", "/api/v1/user"));
//! let users = client.list_users(&sim.secret()).await.unwrap();
//! assert_eq!(sim.calls().len(), 3); // token, 429, 200
//! # let _ = users;
//! # }
//! ```
//!
//! # What is simulated (and how sure we are that Dock does the same)
//!
//! Markers as in `shared/reference/dock-api.md`: \[C\] confirmed by Dock, \[C3\] by a third-party
//! client, \[I\] inferred, \[A\] assumed here.
//!
//! - **Token endpoint** `POST {auth_url}/oauth2/token` \[C\]: form-encoded body required
//!   (else 400 `invalid_request`), `grant_type=client_credentials` (else
//!   `unsupported_grant_type`), `client_id`/`client_secret` in the form (else 400
//!   `invalid_client`; HTTP Basic is not simulated), space-separated scopes among the four
//!   `dockhealth/{user,patient}.all.{read,write}` (else `invalid_scope`; none = all).
//!   Answer `{access_token, expires_in, token_type:"Bearer"}` \[C\], `expires_in` =
//!   [`Seed::token_ttl_secs`] (300 like Dock's example).
//! - **Gateway checks** on every `/api/v1/...` call, in this order \[I\]: `x-api-key` missing or
//!   wrong → 403 `{"message":"Forbidden"}`; `Authorization` (raw token or `Bearer <token>`, \[I\]
//!   both) missing, unknown, expired or revoked → 401 `{"message":"Unauthorized"}`; a token
//!   without the scope of the call (`patient.*` for `/patient`, `user.*` otherwise; `.read` for
//!   GET, `.write` otherwise) → 403 \[A\]. Then the application: missing `x-organization-id` or
//!   `x-user-id` → 400, an organisation other than the seed's or a user not in it → 403
//!   Spring-style `HeyDocAccessDeniedException` \[I\] (the docs: the org must be one the user
//!   belongs to).
//! - **Errors** from the application are Spring-Boot JSON `{timestamp,status,error,message,
//!   path}` \[C\]; messages name ids and fields, never values. Malformed ids in paths → 400
//!   \[C3\]; unknown ids → 404 \[C3\]; wrong method on a known path → 405.
//! - **Endpoints**: `GET /list` (lists the user is a member of), `GET /list/{id}` (404/403),
//!   `GET /task/group?taskListIdentifier=` (read model `taskGroupIdentifier, groupName,
//!   groupType, taskListIdentifier` \[C3\], **no `id`**), `GET /taskWorkflowTemplate[/{id}]`
//!   \[A\], `GET /user` (items carry `identifier` = the UUID and no `id`, like Dock's list sample
//!   \[C\]), `GET /user/{id}` (with `id`), `GET /organization/current`, `GET
//!   /configuration/field`, `GET|POST /patient`, `GET|PATCH|DELETE /patient/{id}`, `GET
//!   /task?taskListIdentifier=|patientIdentifier=|assignedToUserIdentifier=` (≥ 1 required,
//!   else 400 \[C3\]), `POST /task`, `GET|PATCH|DELETE /task/{id}`, `POST /taskWorkflow`,
//!   `PATCH|DELETE /taskWorkflow/{id}`. Creates answer 200 \[C\], task and workflow deletes 204
//!   \[C\], patient delete 200 with the body \[C\].
//! - **Validation** \[A\]: task create needs a non-empty `description` and `taskList.id` \[C3\];
//!   the list must exist (404) and have the user as a member (403) \[I\]; `taskGroup` must be a
//!   group of that list or a workflow deployed in it \[C\]; `patient`, `assignedTo` must exist
//!   (404); `taskMetaData` fields must be TASK custom fields (400); `priority`, `status`,
//!   `dueDate` must be valid (400). Patient create needs `firstName`, `lastName` and `mrn`
//!   (\[A\]: the gem's rule); MRNs are not unique and there is no server-side search (`GET
//!   /patient` ignores query parameters) \[U\].
//! - **Soft deletes** \[C\]: deleted tasks and patients stay readable by id with
//!   `active:false`; list calls still return them with `active:false` unless `active=true` is
//!   passed (the docs' "search endpoints with active=true") \[I\]; PATCH/DELETE of a deleted task
//!   → 404 \[A\].
//! - **Workflows** \[C\] `POST /taskWorkflow {taskList, taskGroup, taskWorkflowTemplate}`
//!   (all three required here \[A\]) creates one task per template task in that list and group,
//!   each with `taskWorkflow:{id}`; an optional `patient:{id}` is set on every task \[A\]. The
//!   answer is `{id, name (template name), taskList, taskGroup, taskWorkflowTemplate, tasks[]}`.
//!   A deployed workflow's id can be used as a `taskGroup` for ad-hoc tasks \[C\].
//! - **No rate limit** of its own: 429s come only from [`Fault::RateLimit`].
//! - **Readings of what the docs leave open** ([`Reality`], [`DockSim::set_reality`]): no
//!   template list endpoint, a deploy that ignores `patient`, assignment only through
//!   `assignees`, the raw token only in `Authorization`, no patient scopes granted, list
//!   endpoints paged by `startPosition`/`endPosition` ([`Paging`]), an event's top-level
//!   `targetIdentifier` other than its task. Soft-deleted templates are listed
//!   (`active:false`) and cannot be deployed.
//! - **Dock's event log**: every event built ([`DockSim::webhook_event`]) is kept and served by
//!   `GET /api/v1/event`, delivered or not — a delivery a test never posts is a dropped one, to
//!   be fetched back.
//!
//! # Fault injection and inspection
//!
//! [`FaultRule`]s match by method and path pattern and fire a given number of times (first
//! matching rule wins): [`Fault::ExpireTokens`] (every token issued so far becomes invalid, so
//! the call gets 401), [`Fault::RateLimit`] (429 with `Retry-After`), [`Fault::ServerError`]
//! (500 Spring body), [`Fault::Status`] (a bare status with a plain-text body, e.g. 502),
//! [`Fault::NotFound`] (404 Spring body) — none of these apply the call — and
//! [`Fault::TimeoutAfterCommit`] (the call is applied, then the answer waits). Everything
//! created is readable ([`DockSim::tasks`], [`DockSim::workflows`], [`DockSim::patients`]); the
//! call log ([`DockSim::calls`]) holds method, path, status and fault, never bodies or headers.

mod api;
mod seed;
mod server;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dock::{DeployedWorkflow, DockSecret, Patient, Task};

pub use seed::{Seed, SeedField, SeedList, SeedTemplate, SeedUser};

/// Readings of what Dock's documentation leaves open (`dock-api.md` §4, §11), one switch
/// each. The default is the reading the simulator was first written to (and the client first
/// guessed); each switch turns on another plausible one, so a test can disagree with the
/// client. [`Reality::all`] turns every one on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reality {
    /// `GET /api/v1/taskWorkflowTemplate` does not exist (404 "No handler found"): only
    /// `GET /taskWorkflowTemplate/{id}` is documented.
    pub no_template_list: bool,
    /// `POST /taskWorkflow` ignores `patient`: the deployed tasks come back without one.
    pub deploy_ignores_patient: bool,
    /// A task's assignee is set only through `assignees:[{id}]`; `assignedTo` is ignored (and
    /// never echoed).
    pub assignees_only: bool,
    /// `Authorization` must be the raw token (as Dock's curl examples send it); `Bearer …`
    /// is 401.
    pub raw_token_only: bool,
    /// The client is not granted the patient scopes: a token request naming them is
    /// `invalid_scope`.
    pub no_patient_scopes: bool,
    /// How list endpoints (`/list`, `/task`, `/task/group`, `/patient`, `/user`,
    /// `/taskWorkflowTemplate`) page their answers.
    pub paging: Paging,
    /// An event's top-level `targetIdentifier` is not the task (Dock's sample event shows it
    /// differing from `audit.targetIdentifier`, which names the task).
    pub target_differs: bool,
    /// Dock's event log keeps what an edit replaced: a PATCH that changes a task's
    /// `description` or `details` adds an `UPDATE_TASK` event whose `audit.previousValues`
    /// hold the old text (the payload's shape in `dock-api.md` §5 has the member; whether Dock
    /// fills it for these fields is not documented).
    pub audit_keeps_edits: bool,
}

/// How a list endpoint pages its answer (`dock-api.md` §7: pagination is undocumented; S10's
/// internal API uses `startPosition`/`endPosition`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paging {
    /// The whole array, whatever the query (what Dock's examples show).
    #[default]
    Whole,
    /// `startPosition` (0-based) and `endPosition` are honoured, `endPosition` inclusive or
    /// exclusive; an answer never holds more than `page` items, and a request without
    /// positions gets the first `page`.
    Positions {
        /// The most items one answer holds.
        page: usize,
        /// Whether `endPosition` names the last item (else the one after it).
        end_inclusive: bool,
    },
}

impl Paging {
    /// The part of `items` one answer holds for this query.
    pub(crate) fn page(
        self,
        items: Vec<serde_json::Value>,
        query: &std::collections::HashMap<String, String>,
    ) -> Vec<serde_json::Value> {
        match self {
            Paging::Whole => items,
            Paging::Positions {
                page,
                end_inclusive,
            } => {
                let pos = |k: &str| query.get(k).and_then(|v| v.parse::<usize>().ok());
                let start = pos("startPosition").unwrap_or(0);
                let end = match pos("endPosition") {
                    Some(e) if end_inclusive => e.saturating_add(1),
                    Some(e) => e,
                    None => usize::MAX,
                };
                let end = end.min(start.saturating_add(page));
                items
                    .into_iter()
                    .skip(start)
                    .take(end.saturating_sub(start))
                    .collect()
            }
        }
    }
}

impl Reality {
    /// Every reading at once under which Dock still grants what the rules need: all but
    /// [`no_patient_scopes`](Reality::no_patient_scopes), which makes patient links impossible
    /// and is played on its own.
    pub fn all() -> Reality {
        Reality {
            no_template_list: true,
            deploy_ignores_patient: true,
            assignees_only: true,
            raw_token_only: true,
            no_patient_scopes: false,
            paging: Paging::Positions {
                page: 2,
                end_inclusive: true,
            },
            target_differs: true,
            audit_keeps_edits: true,
        }
    }
}
pub use webhook::WebhookDelivery;

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Revoke every token issued so far before handling the call (which then gets 401).
    ExpireTokens,
    /// 429 `{"message":"Too Many Requests"}`, with `Retry-After: <secs>` when given.
    RateLimit {
        /// `Retry-After` in seconds.
        retry_after_secs: Option<u64>,
    },
    /// 500 with a Spring-style body; nothing applied.
    ServerError,
    /// This status with a plain-text body (its reason phrase, e.g. `Bad Gateway`); nothing
    /// applied.
    Status(u16),
    /// 404 with a Spring-style body; nothing applied.
    NotFound,
    /// Apply the call, then wait this long before answering (longer than the client timeout:
    /// "committed, but the answer never came").
    TimeoutAfterCommit(Duration),
}

impl Fault {
    /// Its name in the call log.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ExpireTokens => "ExpireTokens",
            Fault::RateLimit { .. } => "RateLimit",
            Fault::ServerError => "ServerError",
            Fault::Status(_) => "Status",
            Fault::NotFound => "NotFound",
            Fault::TimeoutAfterCommit(_) => "TimeoutAfterCommit",
        }
    }
}

/// When to inject a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// The fault.
    pub fault: Fault,
    /// HTTP method it applies to; `None` = any.
    pub method: Option<String>,
    /// Path pattern (`/api/v1/task/*`; `*` = one segment, trailing `**` = the rest); `None` =
    /// any path, the token endpoint (`/oauth2/token`) included.
    pub path: Option<String>,
    /// How many more calls it applies to.
    pub times: usize,
}

impl FaultRule {
    /// `fault` once, on any call.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            method: None,
            path: None,
            times: 1,
        }
    }

    /// Only on `method` calls of paths matching `pattern`.
    pub fn on(mut self, method: &str, pattern: &str) -> FaultRule {
        self.method = Some(method.to_string());
        self.path = Some(pattern.to_string());
        self
    }

    /// On the next `n` matching calls.
    pub fn times(mut self, n: usize) -> FaultRule {
        self.times = n;
        self
    }
}

/// One entry of the call log (no bodies, no headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path (ids only, no query).
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// The injected fault, if any.
    pub fault: Option<&'static str>,
}

pub(crate) struct Inner {
    state: Mutex<api::State>,
    api_addr: SocketAddr,
    auth_addr: SocketAddr,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, api::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator. Cheap to clone; it serves on the Tokio runtime it was started on
/// until that runtime shuts down.
#[derive(Clone)]
pub struct DockSim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockSim")
            .field("api", &self.inner.api_addr)
            .field("auth", &self.inner.auth_addr)
            .finish()
    }
}

impl DockSim {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> DockSim {
        DockSim { inner }
    }

    /// Loads the seed and starts serving on two `127.0.0.1` ports. Panics on an invalid seed
    /// (ids that are not UUIDs, an integration user or list member that is not a user).
    pub async fn start(seed: Seed) -> DockSim {
        let state = api::State::new(seed);
        let api_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let auth_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            api_addr: api_l.local_addr().expect("local addr"),
            auth_addr: auth_l.local_addr().expect("local addr"),
        });
        server::spawn(api_l, inner.clone(), server::Role::Api);
        server::spawn(auth_l, inner.clone(), server::Role::Auth);
        tracing::debug!(api = %inner.api_addr, auth = %inner.auth_addr, "dock simulator listening");
        DockSim { inner }
    }

    /// The API base URL (`DOCK_API_URL`), `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.inner.api_addr)
    }

    /// The auth base URL (`DOCK_AUTH_URL`); tokens at `{auth_url}/oauth2/token`.
    pub fn auth_url(&self) -> String {
        format!("http://{}", self.inner.auth_addr)
    }

    /// Credentials it accepts, acting as the seed's integration user.
    pub fn secret(&self) -> DockSecret {
        let st = self.inner.lock();
        DockSecret {
            client_id: st.seed.client_id.clone(),
            client_secret: st.seed.client_secret.clone(),
            api_key: st.seed.api_key.clone(),
            organization_id: st.seed.organization_id.clone(),
            user_id: st.integration_user_id.clone(),
        }
    }

    /// The seed it started from.
    pub fn seed(&self) -> Seed {
        self.inner.lock().seed.clone()
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.inner.lock().faults.push(rule);
    }

    /// Plays these readings from now on.
    pub fn set_reality(&self, reality: Reality) {
        self.inner.lock().reality = reality;
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Revokes every token issued so far.
    pub fn expire_tokens(&self) {
        for t in self.inner.lock().tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// Lifetime (`expires_in`, whole seconds) of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.inner.lock().token_ttl = ttl;
    }

    /// Number of token requests received (every outcome, injected faults excluded).
    pub fn token_requests(&self) -> usize {
        self.inner.lock().token_requests
    }

    /// Every task, soft-deleted ones included, in creation order.
    pub fn tasks(&self) -> Vec<Task> {
        let st = self.inner.lock();
        st.tasks
            .iter()
            .map(|t| serde_json::from_value(t.clone()).expect("simulator task decodes"))
            .collect()
    }

    /// Every deployed workflow with its tasks, in creation order.
    pub fn workflows(&self) -> Vec<DeployedWorkflow> {
        let st = self.inner.lock();
        (0..st.workflows.len())
            .map(|i| {
                serde_json::from_value(st.workflow_json(i)).expect("simulator workflow decodes")
            })
            .collect()
    }

    /// Every patient, soft-deleted ones included, in creation order.
    pub fn patients(&self) -> Vec<Patient> {
        let st = self.inner.lock();
        st.patients
            .iter()
            .map(|p| serde_json::from_value(p.clone()).expect("simulator patient decodes"))
            .collect()
    }

    /// Adds a patient as Dock's own EMR integration would have synced it (`fromEMR: true`);
    /// returns its id.
    pub fn add_emr_patient(&self, first_name: &str, last_name: &str, mrn: &str) -> String {
        let mut st = self.inner.lock();
        let id = st.new_id();
        st.patients.push(serde_json::json!({
            "id": id, "firstName": first_name, "lastName": last_name, "mrn": mrn,
            "fromEMR": true, "patientMetaData": [], "externalIdentifiers": [], "active": true,
        }));
        id
    }

    /// Adds a task to list `list` as a practice's user would type it in Dock's app (title
    /// and details, incomplete); returns its id. Panics if there is no such list (a test bug).
    pub fn add_practice_task(&self, list: &str, title: &str, details: &str) -> String {
        let list_id = self
            .list_id(list)
            .unwrap_or_else(|| panic!("no list {list}"));
        let mut st = self.inner.lock();
        let user = st
            .users
            .iter()
            .filter_map(|u| u.get("id").and_then(serde_json::Value::as_str))
            .find(|id| *id != st.integration_user_id)
            .unwrap_or_default()
            .to_string();
        let id = st.new_id();
        st.tasks.push(serde_json::json!({
            "id": id, "description": title, "details": details, "status": "INCOMPLETE",
            "priority": "NONE", "taskList": {"id": list_id}, "creator": {"id": user},
            "createdDateTime": api::now_iso(), "updatedDateTime": api::now_iso(),
            "active": true, "taskMetaData": [],
        }));
        id
    }

    /// The call log.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().calls.clone()
    }

    /// Calls whose method and path match (`*` = one segment).
    pub fn calls_to(&self, method: &str, pattern: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.method.eq_ignore_ascii_case(method) && server::path_matches(pattern, &c.path)
            })
            .collect()
    }

    /// Forgets the call log.
    pub fn reset_calls(&self) {
        self.inner.lock().calls.clear();
    }

    /// The id of the list named `name`.
    pub fn list_id(&self, name: &str) -> Option<String> {
        let st = self.inner.lock();
        st.lists
            .iter()
            .find(|l| l["listName"] == serde_json::json!(name))
            .and_then(|l| l["id"].as_str().map(str::to_string))
    }

    /// The id of group `group` of the list named `list`.
    pub fn group_id(&self, list: &str, group: &str) -> Option<String> {
        let lid = self.list_id(list)?;
        let st = self.inner.lock();
        st.groups
            .iter()
            .find(|g| {
                g["taskListIdentifier"] == serde_json::json!(lid)
                    && g["groupName"] == serde_json::json!(group)
            })
            .and_then(|g| g["taskGroupIdentifier"].as_str().map(str::to_string))
    }

    /// The id of the active workflow template named `name`.
    pub fn template_id(&self, name: &str) -> Option<String> {
        let st = self.inner.lock();
        st.templates
            .iter()
            .find(|t| t.name == name && t.active)
            .map(|t| t.id.clone())
    }

    /// The id of the user with this e-mail (case-insensitive).
    pub fn user_id(&self, email: &str) -> Option<String> {
        let st = self.inner.lock();
        st.users
            .iter()
            .find(|u| {
                u["email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .and_then(|u| u["id"].as_str().map(str::to_string))
    }

    /// The id of the custom field named `name`.
    pub fn field_id(&self, name: &str) -> Option<String> {
        let st = self.inner.lock();
        st.fields
            .iter()
            .find(|f| f["name"] == serde_json::json!(name))
            .and_then(|f| f["id"].as_str().map(str::to_string))
    }
}
