//! What the simulator starts with: organisation, credentials, users, lists with groups,
//! workflow templates, custom fields. Read from YAML or JSON, or built in code; the
//! [`Default`] is a small demo practice ("Acme Family Practice").

use serde::{Deserialize, Serialize};

/// The simulator's starting data. Missing fields in a file take the demo credentials and
/// empty collections (not the demo lists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    /// `x-organization-id` accepted (a UUID).
    #[serde(default = "d_org_id")]
    pub organization_id: String,
    /// Organisation name.
    #[serde(default = "d_org_name")]
    pub organization_name: String,
    /// OAuth2 client id accepted by the token endpoint.
    #[serde(default = "d_client_id")]
    pub client_id: String,
    /// OAuth2 client secret accepted by the token endpoint.
    #[serde(default = "d_client_secret")]
    pub client_secret: String,
    /// `x-api-key` accepted.
    #[serde(default = "d_api_key")]
    pub api_key: String,
    /// E-mail of the user [`crate::DockSim::secret`] acts as (`x-user-id`); must be one of
    /// `users`.
    #[serde(default = "d_integration")]
    pub integration_user: String,
    /// `expires_in` of issued tokens, seconds.
    #[serde(default = "d_ttl")]
    pub token_ttl_secs: u64,
    /// Users of the organisation.
    #[serde(default)]
    pub users: Vec<SeedUser>,
    /// Task lists, each with its groups.
    #[serde(default)]
    pub lists: Vec<SeedList>,
    /// Workflow / SmartFlow templates.
    #[serde(default)]
    pub workflow_templates: Vec<SeedTemplate>,
    /// Custom fields.
    #[serde(default)]
    pub custom_fields: Vec<SeedField>,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedUser {
    /// Fixed id (a UUID); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// E-mail.
    pub email: String,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
}

/// A task list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedList {
    /// Fixed id (a UUID); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// `listName`.
    pub name: String,
    /// `listDescription`.
    #[serde(default)]
    pub description: Option<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// E-mails of the members; absent = every user. The first member is the owner.
    #[serde(default)]
    pub members: Option<Vec<String>>,
}

/// A workflow template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedTemplate {
    /// Fixed id (a UUID); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// `name`.
    pub name: String,
    /// `WORKFLOW` or `SMARTFLOW`.
    #[serde(default = "d_template_type")]
    pub template_type: String,
    /// Descriptions of the tasks a deployment creates, in order.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// `false`: soft-deleted (still listed and readable, with `active:false`; not deployable).
    #[serde(default = "d_true")]
    pub active: bool,
}

fn d_true() -> bool {
    true
}

/// A custom field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedField {
    /// Fixed id (a UUID); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// `name`.
    pub name: String,
    /// `TASK` or `PATIENT`.
    #[serde(default = "d_target")]
    pub target_type: String,
    /// `TEXT`, `DATE`, `NUMBER`, …
    #[serde(default = "d_field_type")]
    pub field_type: String,
}

fn d_org_id() -> String {
    "0a0c0000-0000-4000-8000-00000000a001".into()
}
fn d_org_name() -> String {
    "Acme Family Practice".into()
}
fn d_client_id() -> String {
    "sim-client-id".into()
}
fn d_client_secret() -> String {
    "sim-client-secret".into()
}
fn d_api_key() -> String {
    "sim-api-key".into()
}
fn d_integration() -> String {
    "integration@acme.example".into()
}
fn d_ttl() -> u64 {
    300
}
fn d_template_type() -> String {
    "WORKFLOW".into()
}
fn d_target() -> String {
    "TASK".into()
}
fn d_field_type() -> String {
    "TEXT".into()
}

fn user(email: &str, first: &str, last: &str) -> SeedUser {
    SeedUser {
        id: None,
        email: email.into(),
        first_name: first.into(),
        last_name: last.into(),
    }
}

impl Seed {
    /// Credentials and organisation of the demo, and nothing else (no users, lists, …).
    pub fn empty() -> Seed {
        Seed {
            organization_id: d_org_id(),
            organization_name: d_org_name(),
            client_id: d_client_id(),
            client_secret: d_client_secret(),
            api_key: d_api_key(),
            integration_user: d_integration(),
            token_ttl_secs: d_ttl(),
            users: vec![user(&d_integration(), "Kareo", "Integration")],
            lists: Vec::new(),
            workflow_templates: Vec::new(),
            custom_fields: Vec::new(),
        }
    }

    /// Reads a seed from YAML (the same document as JSON would be).
    pub fn from_yaml(text: &str) -> Result<Seed, String> {
        use saphyr::LoadableYamlNode;
        let docs = saphyr::Yaml::load_from_str(text).map_err(|e| format!("seed YAML: {e}"))?;
        let doc = docs.first().map(json_of).unwrap_or(serde_json::Value::Null);
        serde_json::from_value(doc).map_err(|e| format!("seed YAML: {e}"))
    }

    /// Reads a seed from JSON.
    pub fn from_json(text: &str) -> Result<Seed, String> {
        serde_json::from_str(text).map_err(|e| format!("seed JSON: {e}"))
    }

    /// Reads a seed file: `.json` as JSON, anything else as YAML.
    pub fn from_file(path: &std::path::Path) -> Result<Seed, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("seed file {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "json") {
            Seed::from_json(&text)
        } else {
            Seed::from_yaml(&text)
        }
    }
}

/// A YAML node as the JSON value it denotes (keys as text).
fn json_of(y: &saphyr::Yaml) -> serde_json::Value {
    use saphyr::{Scalar, Yaml};
    use serde_json::Value;
    match y {
        Yaml::Value(Scalar::String(s)) | Yaml::Representation(s, _, _) => {
            Value::String(s.to_string())
        }
        Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Sequence(items) => Value::Array(items.iter().map(json_of).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match json_of(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, json_of(v))
                })
                .collect(),
        ),
        Yaml::Tagged(_, inner) => json_of(inner),
        _ => Value::Null,
    }
}

impl Default for Seed {
    /// The demo practice: users `integration@`, `frontdesk@`, `billing@`, `manager@`
    /// `acme.example`; lists "Front Desk" (groups "Callbacks", "Reschedules", "New Patients")
    /// and "Billing" (groups "Callbacks", "Claims"); templates "Reschedule SmartFlow"
    /// (SMARTFLOW, 2 tasks) and "New Patient Intake" (WORKFLOW, 2 tasks, listed after a retired
    /// copy of the same name); custom fields
    /// "Kareo Ref" (TASK TEXT), "Appointment Date" (TASK DATE), "Kareo Patient ID" (PATIENT
    /// TEXT).
    fn default() -> Seed {
        Seed {
            users: vec![
                user("integration@acme.example", "Kareo", "Integration"),
                user("frontdesk@acme.example", "Fran", "Desk"),
                user("billing@acme.example", "Bill", "Ing"),
                user("manager@acme.example", "Mona", "Ager"),
            ],
            lists: vec![
                SeedList {
                    id: None,
                    name: "Front Desk".into(),
                    description: Some("Calls, reschedules and new patients".into()),
                    groups: vec![
                        "Callbacks".into(),
                        "Reschedules".into(),
                        "New Patients".into(),
                    ],
                    members: None,
                },
                SeedList {
                    id: None,
                    name: "Billing".into(),
                    description: Some("Claims and payment follow-up".into()),
                    groups: vec!["Callbacks".into(), "Claims".into()],
                    members: None,
                },
            ],
            workflow_templates: vec![
                SeedTemplate {
                    id: None,
                    name: "Reschedule SmartFlow".into(),
                    template_type: "SMARTFLOW".into(),
                    tasks: vec![
                        "Call patient to reschedule".into(),
                        "Confirm new appointment time".into(),
                    ],
                    active: true,
                },
                // A retired copy under the same name, listed first (Dock's deletes are soft
                // and list calls return deleted items): a client must skip it.
                SeedTemplate {
                    id: None,
                    name: "New Patient Intake".into(),
                    template_type: "WORKFLOW".into(),
                    tasks: vec!["Send the old intake packet".into()],
                    active: false,
                },
                SeedTemplate {
                    id: None,
                    name: "New Patient Intake".into(),
                    template_type: "WORKFLOW".into(),
                    tasks: vec!["Send intake forms".into(), "Verify insurance".into()],
                    active: true,
                },
            ],
            custom_fields: vec![
                SeedField {
                    id: None,
                    name: "Kareo Ref".into(),
                    target_type: "TASK".into(),
                    field_type: "TEXT".into(),
                },
                SeedField {
                    id: None,
                    name: "Appointment Date".into(),
                    target_type: "TASK".into(),
                    field_type: "DATE".into(),
                },
                SeedField {
                    id: None,
                    name: "Kareo Patient ID".into(),
                    target_type: "PATIENT".into(),
                    field_type: "TEXT".into(),
                },
            ],
            ..Seed::empty()
        }
    }
}
