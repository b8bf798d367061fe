//! Dock's JSON bodies as serde types, with Dock's exact field names (camelCase).
//!
//! Responses: every field is optional or defaulted and unknown fields are ignored, so a
//! richer or slightly different answer still decodes. Field names come from Dock's examples
//! (\[C\]), the Redoc samples of the `dock_health_api` gem and Awell's zod schemas (\[C3\]); see
//! the crate docs for what is inferred.
//!
//! Types holding PHI or free text (tasks, patients, users) have a `Debug` that shows ids,
//! flags and counts only.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// A reference to another object: `{"id": "<uuid>"}` (\[C\]). The Redoc samples add
/// `"type": "DEVELOPER"`, which Dock's own examples omit; it is kept when read and sent only
/// when set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Dock's UUID. Empty when a response carried a reference without `id`.
    #[serde(default)]
    pub id: String,
    /// `type` (e.g. `DEVELOPER`), when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ref_type: Option<String>,
}

impl Ref {
    /// `{"id": id}`.
    pub fn new(id: impl Into<String>) -> Ref {
        Ref {
            id: id.into(),
            ref_type: None,
        }
    }
}

impl From<&str> for Ref {
    fn from(id: &str) -> Ref {
        Ref::new(id)
    }
}

impl From<String> for Ref {
    fn from(id: String) -> Ref {
        Ref::new(id)
    }
}

/// Parses Dock's date-times leniently: RFC 3339 with or without fractional seconds, `Z` or
/// an offset; a bare `YYYY-MM-DDTHH:MM:SS[.fff]` is read as UTC; a date alone as midnight UTC.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Writes a date-time the way Dock's examples do: `2024-05-22T07:00:00.000Z`.
pub fn format_datetime(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ser_opt_dt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_datetime(t)),
        None => s.serialize_none(),
    }
}

/// Task priority (\[C3\] Awell enum). Values Dock may add read as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// `HIGH`
    High,
    /// `MEDIUM`
    Medium,
    /// `LOW`
    Low,
    /// `NONE`
    None,
    /// A value this crate does not know (never send it).
    #[serde(other)]
    Other,
}

/// Task status (\[C\] `{"status":"COMPLETE"}` PATCH). Unknown values read as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// `COMPLETE`
    Complete,
    /// `INCOMPLETE`
    Incomplete,
    /// A value this crate does not know (never send it).
    #[serde(other)]
    Other,
}

/// A custom-field value on a task (`taskMetaData`) or patient (`patientMetaData`) (\[C\]).
/// `value` is a string, number, boolean or ISO instant by field type; MULTI_SELECT uses
/// `values` (option ids).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaDataValue {
    /// The custom field's id.
    #[serde(default)]
    pub custom_field_identifier: String,
    /// The field's name (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_field_name: Option<String>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Option ids of a MULTI_SELECT field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl MetaDataValue {
    /// A TEXT value.
    pub fn text(field_id: impl Into<String>, value: impl Into<String>) -> MetaDataValue {
        MetaDataValue {
            custom_field_identifier: field_id.into(),
            custom_field_name: None,
            value: Some(Value::String(value.into())),
            values: None,
        }
    }

    /// The value as text, when it is a string.
    pub fn as_text(&self) -> Option<&str> {
        self.value.as_ref().and_then(Value::as_str)
    }
}

impl std::fmt::Debug for MetaDataValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDataValue")
            .field("custom_field_identifier", &self.custom_field_identifier)
            .field(
                "has_value",
                &(self.value.is_some() || self.values.is_some()),
            )
            .finish()
    }
}

/// A member of a task list (\[C3\]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListUser {
    /// The user.
    #[serde(default)]
    pub user: Option<Ref>,
    /// `OWNER`, `GUEST`, …
    #[serde(default)]
    pub user_role: Option<String>,
}

/// A task list (`GET /api/v1/list`, \[C3\] Redoc sample).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name (matched by the integration's mapping).
    #[serde(default)]
    pub list_name: String,
    /// Description.
    #[serde(default)]
    pub list_description: Option<String>,
    /// `PUBLIC`, …
    #[serde(default)]
    pub list_type: Option<String>,
    /// Creator.
    #[serde(default)]
    pub creator: Option<Ref>,
    /// Members.
    #[serde(default)]
    pub list_users: Vec<ListUser>,
    /// `false` once deleted (soft delete, \[C\]).
    #[serde(default)]
    pub active: Option<bool>,
}

/// A task group of a list (`GET /api/v1/task/group?taskListIdentifier=`).
///
/// Create answers carry `id` (\[C\]); the read model carries `taskGroupIdentifier` (\[C3\]).
/// [`TaskGroup::group_id`] returns whichever is present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskGroup {
    /// Id (create answers).
    #[serde(default)]
    pub id: Option<String>,
    /// Id (read model).
    #[serde(default)]
    pub task_group_identifier: Option<String>,
    /// Name.
    #[serde(default)]
    pub group_name: String,
    /// Description.
    #[serde(default)]
    pub group_description: Option<String>,
    /// `TASKLIST`, …
    #[serde(default)]
    pub group_type: Option<String>,
    /// The list it belongs to.
    #[serde(default)]
    pub task_list_identifier: Option<String>,
    /// Soft-delete flag, when sent.
    #[serde(default)]
    pub active: Option<bool>,
}

impl TaskGroup {
    /// The group's id: `id`, else `taskGroupIdentifier`.
    pub fn group_id(&self) -> Option<&str> {
        self.id
            .as_deref()
            .or(self.task_group_identifier.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// A workflow or SmartFlow template (`/api/v1/taskWorkflowTemplate`, \[C\] fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplate {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `WORKFLOW` or `SMARTFLOW`.
    #[serde(default)]
    pub template_type: Option<String>,
    /// Soft-delete flag, when sent.
    #[serde(default)]
    pub active: Option<bool>,
}

/// An organization membership of a user (\[C\] README `db4339d`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOrganization {
    /// Org id.
    #[serde(default)]
    pub id: Option<String>,
    /// Org identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Org name.
    #[serde(default)]
    pub name: Option<String>,
    /// `ADMIN`, …
    #[serde(default)]
    pub role: Option<String>,
    /// `ACTIVE`, …
    #[serde(default)]
    pub status: Option<String>,
    /// Active membership.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A Dock user (`GET /api/v1/user`). The list sample has `identifier` (a UUID) and no `id`;
/// the get sample has both (\[C\]). [`User::user_id`] returns `id`, else `identifier`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id.
    #[serde(default)]
    pub id: Option<String>,
    /// Identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// External identifier.
    #[serde(default)]
    pub external_identifier: Option<String>,
    /// E-mail (how the mapping names assignees).
    #[serde(default)]
    pub email: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Initials.
    #[serde(default)]
    pub initials: Option<String>,
    /// Organizations.
    #[serde(default)]
    pub organizations: Vec<UserOrganization>,
    /// Soft-delete flag, when sent.
    #[serde(default)]
    pub active: Option<bool>,
}

impl User {
    /// The id to reference the user with: `id`, else `identifier`.
    pub fn user_id(&self) -> Option<&str> {
        self.id
            .as_deref()
            .or(self.identifier.as_deref())
            .filter(|s| !s.is_empty())
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.user_id())
            .field("organizations", &self.organizations.len())
            .finish_non_exhaustive()
    }
}

/// An option of a PICK_LIST / MULTI_SELECT custom field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomFieldOption {
    /// Id (responses).
    #[serde(default)]
    pub id: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A custom field (`GET /api/v1/configuration/field`, \[C\] create body fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomField {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `TASK`, `PATIENT`, `PROFILE`.
    #[serde(default)]
    pub target_type: Option<String>,
    /// `TASK_CORE`, `PATIENT_PERSONAL`, …
    #[serde(default)]
    pub field_category_type: Option<String>,
    /// `TEXT`, `NUMBER`, `DATE`, `MULTI_SELECT`, …
    #[serde(default)]
    pub field_type: Option<String>,
    /// Placeholder.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Required.
    #[serde(default)]
    pub required: Option<bool>,
    /// Sort index.
    #[serde(default)]
    pub sort_index: Option<i64>,
    /// Options.
    #[serde(default)]
    pub options: Vec<CustomFieldOption>,
    /// Display options.
    #[serde(default)]
    pub display_options: Vec<String>,
    /// Soft-delete flag, when sent.
    #[serde(default)]
    pub active: Option<bool>,
}

/// An external identifier of a patient (\[C3\] Awell schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalIdentifier {
    /// Value.
    #[serde(default)]
    pub id: Option<String>,
    /// Kind.
    #[serde(rename = "type", default)]
    pub id_type: Option<String>,
    /// Combined form.
    #[serde(default)]
    pub combined: Option<String>,
}

/// A Dock patient (\[C\] create echo; \[C3\] Redoc and Awell schemas). `Debug` shows the id only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// MRN (the integration stores the Kareo patient id / chart number here).
    #[serde(default)]
    pub mrn: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Middle name.
    #[serde(default)]
    pub middle_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Date of birth as sent (`YYYY-MM-DD` or a date-time).
    #[serde(default)]
    pub dob: Option<String>,
    /// Gender.
    #[serde(default)]
    pub gender: Option<String>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Home phone.
    #[serde(default)]
    pub phone_home: Option<String>,
    /// Mobile phone.
    #[serde(default)]
    pub phone_mobile: Option<String>,
    /// Custom fields.
    #[serde(default)]
    pub patient_meta_data: Vec<MetaDataValue>,
    /// External identifiers.
    #[serde(default)]
    pub external_identifiers: Vec<ExternalIdentifier>,
    /// Synced by Dock's own EMR integration (\[C3\] S3: `fromEMR:true`).
    #[serde(default, rename = "fromEMR")]
    pub from_emr: Option<bool>,
    /// `false` once deleted.
    #[serde(default)]
    pub active: Option<bool>,
}

impl Patient {
    /// Not soft-deleted (absent flag = active).
    pub fn is_active(&self) -> bool {
        self.active != Some(false)
    }
}

impl std::fmt::Debug for Patient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patient")
            .field("id", &self.id)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/patient` body (\[C\] `{firstName, lastName, dob, mrn}`). `mrn` is treated as
/// required (\[A\]: the gem says so, Awell's schema does not).
#[derive(Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewPatient {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// MRN.
    pub mrn: String,
    /// Date of birth: send `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dob: Option<NaiveDate>,
    /// Middle name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Gender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Home phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_home: Option<String>,
    /// Mobile phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_mobile: Option<String>,
    /// Identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Custom fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patient_meta_data: Vec<MetaDataValue>,
}

impl std::fmt::Debug for NewPatient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPatient { .. }")
    }
}

/// `PATCH /api/v1/patient/{id}` body: only the fields set are sent (\[C\] partial update).
#[derive(Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientPatch {
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// MRN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
    /// Date of birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dob: Option<NaiveDate>,
    /// Middle name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Gender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Home phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_home: Option<String>,
    /// Mobile phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_mobile: Option<String>,
    /// Custom fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_meta_data: Option<Vec<MetaDataValue>>,
}

impl std::fmt::Debug for PatientPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientPatch { .. }")
    }
}

/// A Dock task (\[C3\] Awell `task.schema.ts`, Redoc sample). `Debug` shows ids, status and
/// counts, never the description or details.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// External identifier (read model, \[C3\]).
    #[serde(default)]
    pub external_identifier: Option<String>,
    /// Title.
    #[serde(default)]
    pub description: Option<String>,
    /// Details.
    #[serde(default)]
    pub details: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Due date as sent (see [`Task::due`]).
    #[serde(default)]
    pub due_date: Option<String>,
    /// Created (as sent).
    #[serde(default)]
    pub created_date_time: Option<String>,
    /// Updated (as sent).
    #[serde(default)]
    pub updated_date_time: Option<String>,
    /// Completed (as sent).
    #[serde(default)]
    pub completed_dt: Option<String>,
    /// Creator.
    #[serde(default)]
    pub creator: Option<Ref>,
    /// Assignee.
    #[serde(default)]
    pub assigned_to: Option<Ref>,
    /// Assigner.
    #[serde(default)]
    pub assigned_by: Option<Ref>,
    /// Assignees (Awell schema).
    #[serde(default)]
    pub assignees: Vec<Ref>,
    /// Completed by.
    #[serde(default)]
    pub completed_by: Option<Ref>,
    /// Patient.
    #[serde(default)]
    pub patient: Option<Ref>,
    /// List.
    #[serde(default)]
    pub task_list: Option<Ref>,
    /// Group.
    #[serde(default)]
    pub task_group: Option<Ref>,
    /// Groups (read model).
    #[serde(default)]
    pub task_groups: Vec<TaskGroup>,
    /// The deployed workflow the task belongs to, when it does.
    #[serde(default)]
    pub task_workflow: Option<Ref>,
    /// Custom-field values.
    #[serde(default)]
    pub task_meta_data: Vec<MetaDataValue>,
    /// Parent task.
    #[serde(default)]
    pub parent_task: Option<Ref>,
    /// Custom status.
    #[serde(default)]
    pub workflow_status: Option<Ref>,
    /// `IN_APP`, `EMAIL`, `TEMPLATE`, `BUNDLE`.
    #[serde(rename = "type", default)]
    pub task_type: Option<String>,
    /// `false` once deleted.
    #[serde(default)]
    pub active: Option<bool>,
}

impl Task {
    /// Not soft-deleted (absent flag = active).
    pub fn is_active(&self) -> bool {
        self.active != Some(false)
    }

    /// Who the task is assigned to, as echoed: `assignedTo` and every one of `assignees`.
    pub fn assignee_ids(&self) -> impl Iterator<Item = &str> {
        self.assigned_to
            .iter()
            .chain(self.assignees.iter())
            .map(|r| r.id.as_str())
    }

    /// The due date, parsed leniently.
    pub fn due(&self) -> Option<DateTime<Utc>> {
        self.due_date.as_deref().and_then(parse_datetime)
    }

    /// The text value of a custom field on this task.
    pub fn meta_text(&self, field_id: &str) -> Option<&str> {
        self.task_meta_data
            .iter()
            .find(|m| m.custom_field_identifier == field_id)
            .and_then(MetaDataValue::as_text)
    }

    /// The group id: `taskGroup.id`, else the first of `taskGroups`.
    pub fn group_id(&self) -> Option<&str> {
        self.task_group
            .as_ref()
            .map(|r| r.id.as_str())
            .filter(|s| !s.is_empty())
            .or_else(|| self.task_groups.iter().find_map(TaskGroup::group_id))
    }
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("task_list", &self.task_list.as_ref().map(|r| &r.id))
            .field("task_group", &self.group_id())
            .field("patient", &self.patient.as_ref().map(|r| &r.id))
            .field("meta_data", &self.task_meta_data.len())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/task` body. `description` and `taskList` are required (\[C3\]).
#[derive(Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTask {
    /// Title.
    pub description: String,
    /// List.
    pub task_list: Ref,
    /// Group (\[C\]), or a deployed workflow's id to add the task to it (\[C\]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_group: Option<Ref>,
    /// Patient (\[C3\]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<Ref>,
    /// Details (\[C3\] schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Priority (\[C3\] schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Due date (\[C3\] schema), sent as `…T…:…:….mmmZ`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_dt")]
    pub due_date: Option<DateTime<Utc>>,
    /// Assignee (\[U\]: `assignedTo` is in the Redoc sample; `assignees` in Awell's schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Ref>,
    /// Assignees (\[U\]: Awell's schema). Sent with `assigned_to` so that whichever Dock
    /// reads sets the assignee; [`Task::assignee_ids`] tells which one took.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assignees: Vec<Ref>,
    /// Custom-field values (\[C\]) — e.g. the integration's reference stamp.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub task_meta_data: Vec<MetaDataValue>,
    /// Identifier (\[U\] whether Dock keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

impl NewTask {
    /// A task with a title in a list.
    pub fn new(description: impl Into<String>, task_list_id: impl Into<String>) -> NewTask {
        NewTask {
            description: description.into(),
            task_list: Ref::new(task_list_id),
            ..NewTask::default()
        }
    }
}

impl std::fmt::Debug for NewTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTask")
            .field("task_list", &self.task_list.id)
            .field("task_group", &self.task_group.as_ref().map(|r| &r.id))
            .field("patient", &self.patient.as_ref().map(|r| &r.id))
            .field("meta_data", &self.task_meta_data.len())
            .finish_non_exhaustive()
    }
}

/// `PATCH /api/v1/task/{id}` body: only the fields set are sent (\[C\] partial update).
#[derive(Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPatch {
    /// Title (\[C\]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Status (\[C\]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// Priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Due date.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_dt")]
    pub due_date: Option<DateTime<Utc>>,
    /// Assignee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Ref>,
    /// Patient (\[I\]: `UPDATE_TASK_PATIENT` events exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<Ref>,
    /// Custom-field values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_meta_data: Option<Vec<MetaDataValue>>,
}

impl std::fmt::Debug for TaskPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskPatch")
            .field("status", &self.status)
            .field("patient", &self.patient.as_ref().map(|r| &r.id))
            .finish_non_exhaustive()
    }
}

/// Which tasks `GET /api/v1/task` returns: at least one filter is required (\[C3\]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// `taskListIdentifier`.
    pub task_list: Option<String>,
    /// `patientIdentifier`.
    pub patient: Option<String>,
    /// `assignedToUserIdentifier`.
    pub assigned_to: Option<String>,
    /// Keep soft-deleted tasks (`active:false`) in the answer; filtered client-side.
    pub include_inactive: bool,
}

impl TaskQuery {
    /// The tasks of a list.
    pub fn list(task_list_id: impl Into<String>) -> TaskQuery {
        TaskQuery {
            task_list: Some(task_list_id.into()),
            ..TaskQuery::default()
        }
    }

    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(v) = &self.task_list {
            p.push(("taskListIdentifier", v.clone()));
        }
        if let Some(v) = &self.patient {
            p.push(("patientIdentifier", v.clone()));
        }
        if let Some(v) = &self.assigned_to {
            p.push(("assignedToUserIdentifier", v.clone()));
        }
        p
    }
}

/// `POST /api/v1/taskWorkflow` body (\[C\] `{taskList, taskGroup, taskWorkflowTemplate}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployWorkflow {
    /// List.
    pub task_list: Ref,
    /// Group.
    pub task_group: Ref,
    /// Template.
    pub task_workflow_template: Ref,
    /// Patient for every task of the workflow (\[A\]: not documented; the alternative is to
    /// PATCH each returned task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<Ref>,
}

/// A deployed workflow (\[C\] `{id, name?, taskList, taskGroup, tasks[]}`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedWorkflow {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// List.
    #[serde(default)]
    pub task_list: Option<Ref>,
    /// Group.
    #[serde(default)]
    pub task_group: Option<Ref>,
    /// Template.
    #[serde(default)]
    pub task_workflow_template: Option<Ref>,
    /// The tasks it created.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// `false` once deleted.
    #[serde(default)]
    pub active: Option<bool>,
}

impl std::fmt::Debug for DeployedWorkflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployedWorkflow")
            .field("id", &self.id)
            .field(
                "template",
                &self.task_workflow_template.as_ref().map(|r| &r.id),
            )
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_read_leniently() {
        let a = parse_datetime("2022-02-10T23:07:26.094Z").unwrap();
        assert_eq!(format_datetime(&a), "2022-02-10T23:07:26.094Z");
        let b = parse_datetime("2024-02-29T00:24:21.000+00:00").unwrap();
        assert_eq!(format_datetime(&b), "2024-02-29T00:24:21.000Z");
        let c = parse_datetime("2019-08-24T14:15:22").unwrap();
        assert_eq!(format_datetime(&c), "2019-08-24T14:15:22.000Z");
        let d = parse_datetime("2000-01-01").unwrap();
        assert_eq!(format_datetime(&d), "2000-01-01T00:00:00.000Z");
        let e = parse_datetime("2024-05-22T07:00:00.000+0200").unwrap();
        assert_eq!(format_datetime(&e), "2024-05-22T05:00:00.000Z");
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn redoc_task_sample_decodes() {
        // Trimmed from dock-samples/task/task-data-format.json (subtasks left out).
        let json = r#"{
          "description": "string", "details": "string", "priority": "HIGH", "status": "COMPLETE",
          "workflowStatus": {"type": "DEVELOPER", "id": "ws"},
          "dueDate": "2019-08-24T14:15:22Z", "reminderType": "NONE",
          "creator": {"type": "DEVELOPER", "id": "u1"},
          "assignedTo": {"type": "DEVELOPER", "id": "u2"},
          "subTasksCount": 0, "subtasks": [{"itemType": "TASK"}],
          "patient": {"type": "DEVELOPER", "id": "p1"},
          "taskList": {"type": "DEVELOPER", "id": "l1"},
          "type": "IN_APP",
          "taskMetaData": [{"customFieldIdentifier": "f1", "customFieldName": "Kareo Ref", "value": "k:1"}],
          "id": "t1", "identifier": "i1"
        }"#;
        let t: Task = serde_json::from_str(json).unwrap();
        assert_eq!(t.id, "t1");
        assert_eq!(t.status, Some(TaskStatus::Complete));
        assert_eq!(t.priority, Some(Priority::High));
        assert_eq!(t.assigned_to.as_ref().unwrap().id, "u2");
        assert_eq!(
            t.assigned_to.as_ref().unwrap().ref_type.as_deref(),
            Some("DEVELOPER")
        );
        assert_eq!(t.patient.as_ref().unwrap().id, "p1");
        assert_eq!(t.meta_text("f1"), Some("k:1"));
        assert_eq!(t.task_type.as_deref(), Some("IN_APP"));
        assert_eq!(
            t.due().map(|d| format_datetime(&d)).as_deref(),
            Some("2019-08-24T14:15:22.000Z")
        );
        // A value this crate does not know, and a read-model list reference without `id`.
        let u: Task = serde_json::from_str(
            r#"{"id":"t2","status":"ARCHIVED","priority":"URGENT","taskList":{"taskListIdentifier":"l9","listName":"x"}}"#,
        )
        .unwrap();
        assert_eq!(u.status, Some(TaskStatus::Other));
        assert_eq!(u.priority, Some(Priority::Other));
        assert_eq!(u.task_list.unwrap().id, "");
    }

    #[test]
    fn user_samples_decode() {
        let list: Vec<User> = serde_json::from_str(
            r#"[{"identifier":"3cec036e-604d-45a9-b83c-0bb7aa157baa","externalIdentifier":"1dfd","email":"john.smith@example.com","firstName":"John","lastName":"Smith"}]"#,
        )
        .unwrap();
        assert_eq!(
            list[0].user_id(),
            Some("3cec036e-604d-45a9-b83c-0bb7aa157baa")
        );
        let one: User = serde_json::from_str(
            r#"{"email":"john.smith@example.com","lastLogin":"2024-02-29T00:24:21.000+00:00","organizations":[{"name":"Example Organization","role":"ADMIN","status":"ACTIVE","active":true,"id":"1bb7","identifier":"1234567890"}],"id":"2bb7","identifier":"9876543210"}"#,
        )
        .unwrap();
        assert_eq!(one.user_id(), Some("2bb7"));
        assert_eq!(one.organizations[0].role.as_deref(), Some("ADMIN"));
        let dbg = format!("{one:?}");
        assert!(!dbg.contains("john.smith"), "{dbg}");
    }

    #[test]
    fn request_bodies_use_docs_field_names() {
        let mut t = NewTask::new("Call back", "L1");
        t.task_group = Some(Ref::new("G1"));
        t.patient = Some(Ref::new("P1"));
        t.priority = Some(Priority::High);
        t.due_date = parse_datetime("2024-05-22T07:00:00Z");
        t.task_meta_data = vec![MetaDataValue::text("F1", "kareo:1")];
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "description": "Call back",
                "taskList": {"id": "L1"},
                "taskGroup": {"id": "G1"},
                "patient": {"id": "P1"},
                "priority": "HIGH",
                "dueDate": "2024-05-22T07:00:00.000Z",
                "taskMetaData": [{"customFieldIdentifier": "F1", "value": "kareo:1"}]
            })
        );
        let p = NewPatient {
            first_name: "John".into(),
            last_name: "Doe".into(),
            mrn: "abc123".into(),
            dob: NaiveDate::from_ymd_opt(2000, 1, 1),
            ..NewPatient::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"firstName":"John","lastName":"Doe","dob":"2000-01-01","mrn":"abc123"})
        );
        assert_eq!(format!("{p:?}"), "NewPatient { .. }");
        let patch = TaskPatch {
            status: Some(TaskStatus::Complete),
            ..TaskPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"status":"COMPLETE"})
        );
        let d = DeployWorkflow {
            task_list: "L".into(),
            task_group: "G".into(),
            task_workflow_template: "T".into(),
            patient: None,
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"taskList":{"id":"L"},"taskGroup":{"id":"G"},"taskWorkflowTemplate":{"id":"T"}})
        );
    }

    #[test]
    fn phi_stays_out_of_debug() {
        let p: Patient = serde_json::from_str(
            r#"{"id":"p1","firstName":"Jane","lastName":"Roe","dob":"1980-01-01","mrn":"M77"}"#,
        )
        .unwrap();
        let t: Task =
            serde_json::from_str(r#"{"id":"t1","description":"Call Jane Roe re: MRI"}"#).unwrap();
        let shown = format!("{p:?} {t:?} {:?}", NewTask::new("Call Jane", "L"));
        for needle in ["Jane", "Roe", "1980", "M77", "MRI"] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
    }
}

/// A webhook as Dock answers it (`/api/v1/webhook`, `dock-api.md` §5): `verified` turns true
/// once Dock's verification challenge was answered, asynchronously after a create or update.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// The endpoint.
    #[serde(default)]
    pub url: String,
    /// Deliveries are sent.
    #[serde(default)]
    pub enabled: bool,
    /// The endpoint answered the challenge.
    #[serde(default)]
    pub verified: bool,
    /// The subscribed events (`[{type, description}]` or names, as Dock sends them).
    #[serde(default)]
    pub events: Vec<Value>,
}

/// The body of a webhook create (`POST`) or update (`PUT`, which must resend every field and
/// re-triggers verification). `Debug` leaves out the secret and the URL (it holds a token).
#[derive(Clone, PartialEq, Serialize)]
pub struct WebhookBody {
    /// The endpoint (https, publicly reachable, unique across Dock).
    pub url: String,
    /// The signing secret (unique across Dock).
    pub secret: String,
    /// Deliveries are sent.
    pub enabled: bool,
    /// Event type names (`MARK_COMPLETE`, …).
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookBody")
            .field("enabled", &self.enabled)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}
