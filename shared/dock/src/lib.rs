//! Dock Health partner-API client.
//!
//! - [`client`]: [`DockClient`] — OAuth2 client-credentials tokens cached per (client id,
//!   organization), the four headers, a client-side rate limit, retries.
//! - [`model`]: Dock's JSON bodies as serde types (exact field names, unknown fields ignored,
//!   PHI kept out of `Debug`).
//! - [`error`]: one error type, [`DockError`]: `class()`, `is_retryable()`, `is_ambiguous()`.
//!
//! # What is known about Dock's API, and how sure
//!
//! No OpenAPI file was available (Dock serves it live at `{API_URL}/api-docs`); everything
//! here comes from `shared/reference/dock-api.md`. Markers: **\[C\]** confirmed by Dock's own
//! docs or example code, **\[C3\]** by a third-party client that called the real API, **\[I\]**
//! inferred, **\[U\]** unknown, **\[A\]** our assumption.
//!
//! Confirmed and relied on:
//! - Base URLs `https://partner-api.dock.health` / `https://partner-auth.dock.health` (dev:
//!   `partner-api-dev.dockhealth.app` / `partner-auth-dev.dockhealth.app`) \[C\]; overridable by
//!   `DOCK_API_URL` / `DOCK_AUTH_URL` ([`DockConfig::from_env`]).
//! - `POST {AUTH_URL}/oauth2/token`, form-encoded `grant_type=client_credentials`, `client_id`,
//!   `client_secret`, space-separated `scope`; answer `{access_token, expires_in, token_type}`,
//!   300 s in the example \[C\]. Tokens are refreshed `token_margin` (default 60 s, at most half
//!   the lifetime) before they expire; on a 401 the token is dropped, a new one fetched and the
//!   call re-sent once.
//! - Headers `x-api-key`, `Authorization`, `x-user-id`, `x-organization-id` on every call \[C\].
//!   Dock's curl examples send the raw token; the Ruby gem sends `Bearer <token>` \[C3\]; this
//!   client sends `Bearer` by default ([`DockConfig::bearer`]) — \[I\] both are accepted.
//! - Paths: `/api/v1/list[/{id}]`, `/api/v1/task/group?taskListIdentifier=` \[C3\],
//!   `/api/v1/user` \[C\], `/api/v1/configuration/field` \[C3\], `/api/v1/patient[/{id}]` \[C\]
//!   (list \[C3\]), `/api/v1/task[/{id}]` \[C\] with `GET ?taskListIdentifier=|patientIdentifier=|
//!   assignedToUserIdentifier=` \[C3\], `POST /api/v1/taskWorkflow` and `PATCH …/{id}` \[C\].
//!   Lists are bare JSON arrays \[C\]; creates answer 200 \[C\] (201 accepted too); task delete 204.
//! - Soft deletes: deleted objects stay readable with `active:false` \[C\].
//! - Error bodies are Spring-Boot JSON `{timestamp,status,error,message,path}` \[C\]; 429 exists
//!   \[C\].
//!
//! Inferred or assumed here:
//! - `GET /api/v1/taskWorkflowTemplate` lists templates \[A\] (not shown anywhere).
//! - Gateway rejections (API key, token, throttling) have a different body, e.g.
//!   `{"message":"Forbidden"}`, or plain text \[I\]: every body is parsed leniently
//!   ([`ErrorBody::parse`]). 401 is treated as "token no longer good", 403 as "not permitted".
//! - No server-side patient search or user search is known \[U\]: [`DockClient::find_patients_by_mrn`]
//!   and [`DockClient::find_user_by_email`] list and filter client-side.
//! - Task assignment field (`assignedTo` vs `assignees`) \[U\]; attaching a patient on workflow
//!   deploy (`patient` in the body) \[A\]; pagination of list calls \[U\] (whole arrays are read).
//! - Rate limits are not published \[U\]: calls are spaced per client id
//!   ([`DockConfig::rate_per_sec`], default 10/s); 429 and 5xx are retried with jittered
//!   exponential backoff, never sooner than `Retry-After`.
//! - No idempotency key exists \[U\]. A create (`POST` task, patient, workflow) is **not**
//!   retried after an ambiguous failure (timeout or broken connection after sending, 5xx,
//!   unreadable 200): the error is returned ([`DockError::is_ambiguous`]) and the caller
//!   reconciles (look the object up by its stamp) before posting again. A create refused
//!   definitely (429, a connection never made, a token failure) is retried.
//!
//! # Logging and PHI
//!
//! Logs carry the call name, HTTP status, organization id, durations and error classes.
//! Request and response bodies, tokens and secrets are never logged or put in an error's
//! `Display`; Dock's error text is reachable only through [`DockError::dock_message`].

pub mod client;
pub mod error;
pub mod model;

pub use client::{
    DockClient, DockConfig, DockSecret, RetryPolicy, DEFAULT_API_URL, DEFAULT_AUTH_URL,
    DEV_API_URL, DEV_AUTH_URL, SCOPES,
};
pub use error::{DockError, ErrorBody};
pub use model::{
    CustomField, CustomFieldOption, DeployWorkflow, DeployedWorkflow, ExternalIdentifier, ListUser,
    MetaDataValue, NewPatient, NewTask, Patient, PatientPatch, Priority, Ref, Task, TaskGroup,
    TaskList, TaskPatch, TaskQuery, TaskStatus, User, UserOrganization, Webhook, WebhookBody,
    WorkflowTemplate,
};
