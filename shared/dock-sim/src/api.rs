//! The simulated API: state and the handlers of `/api/v1/...`, run under the state lock.
//!
//! Bodies are built as JSON by hand with Dock's field names (independently of the `dock`
//! crate's serde types, so a naming mistake on either side shows up in tests).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::seed::Seed;
use crate::Call;

/// A reply before it is written.
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    /// Spring-Boot error body `{timestamp,status,error,message,path}`. Messages name ids and
    /// fields, never values.
    pub fn spring(status: u16, message: &str, path: &str) -> Reply {
        Reply::json(
            status,
            &json!({
                "timestamp": now_iso(),
                "status": status,
                "error": reason(status),
                "message": message,
                "path": path,
            }),
        )
    }

    /// API-Gateway-style body `{"message": "..."}`.
    pub fn gateway(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "message": message }))
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

pub(crate) fn now_iso() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) struct TokenRec {
    pub expires: Instant,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

pub(crate) struct Template {
    pub id: String,
    pub name: String,
    pub template_type: String,
    pub tasks: Vec<String>,
    pub active: bool,
}

pub(crate) struct State {
    pub seed: Seed,
    pub integration_user_id: String,
    pub users: Vec<Value>,
    pub lists: Vec<Value>,
    pub groups: Vec<Value>,
    pub templates: Vec<Template>,
    pub fields: Vec<Value>,
    pub patients: Vec<Value>,
    pub tasks: Vec<Value>,
    /// Deployed workflows; `tasks` holds the task ids.
    pub workflows: Vec<Value>,
    pub tokens: HashMap<String, TokenRec>,
    pub token_ttl: Duration,
    pub token_requests: usize,
    pub next_id: u64,
    pub faults: Vec<crate::FaultRule>,
    pub calls: Vec<Call>,
    /// Webhook events built so far (their identifiers count up).
    pub webhook_events: u64,
    /// Every event built, delivered or not: what `GET /api/v1/event` answers from.
    pub events: Vec<Value>,
    /// Registered webhooks (`/api/v1/webhook`), with their secrets.
    pub webhooks: Vec<crate::webhook::Hook>,
    /// Verification challenges to send (webhook id, url, secret, message), taken by the
    /// server after the call that queued them.
    pub challenges: Vec<(String, String, String, String)>,
    /// The readings played.
    pub reality: crate::Reality,
}

/// A date-time as the simulator's own reading of Dock takes it — the simulator's rule, not
/// the client's parser: an ISO-8601 instant as Dock's examples write them
/// (`2022-02-10T23:07:26.094Z`, `2024-02-29T00:24:21.000+00:00`), `T`-separated, with a zone.
fn is_instant(s: &str) -> bool {
    s.as_bytes().get(10) == Some(&b'T') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn str_of_map<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn ref_id<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|r| r.get("id")).and_then(Value::as_str)
}

fn id_of(v: &Value) -> &str {
    str_of(v, "id").unwrap_or("")
}

type HResult = Result<Reply, Reply>;

impl State {
    // Long: the seed's organisation, users, lists, templates and fields, one block each.
    pub fn new(seed: Seed) -> State {
        let mut st = State {
            integration_user_id: String::new(),
            users: Vec::new(),
            lists: Vec::new(),
            groups: Vec::new(),
            templates: Vec::new(),
            fields: Vec::new(),
            patients: Vec::new(),
            tasks: Vec::new(),
            workflows: Vec::new(),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(seed.token_ttl_secs),
            token_requests: 0,
            next_id: 0,
            faults: Vec::new(),
            calls: Vec::new(),
            webhook_events: 0,
            events: Vec::new(),
            webhooks: Vec::new(),
            challenges: Vec::new(),
            reality: crate::Reality::default(),
            seed: seed.clone(),
        };
        assert!(
            is_uuid(&seed.organization_id),
            "seed organization_id must be a UUID"
        );
        let mut by_email = HashMap::new();
        for u in &seed.users {
            let id = st.fixed_or_new(u.id.as_deref());
            by_email.insert(u.email.to_ascii_lowercase(), id.clone());
            st.users.push(json!({
                "id": id,
                "identifier": id,
                "email": u.email,
                "firstName": u.first_name,
                "lastName": u.last_name,
                "active": true,
            }));
        }
        st.integration_user_id = by_email
            .get(&seed.integration_user.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| panic!("seed integration_user must be one of the seed users"));
        for l in &seed.lists {
            let id = st.fixed_or_new(l.id.as_deref());
            let members: Vec<String> = match &l.members {
                None => st.users.iter().map(|u| id_of(u).to_string()).collect(),
                Some(emails) => emails
                    .iter()
                    .map(|e| {
                        by_email
                            .get(&e.to_ascii_lowercase())
                            .cloned()
                            .unwrap_or_else(|| panic!("list member {e} is not a seed user"))
                    })
                    .collect(),
            };
            let list_users: Vec<Value> = members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    json!({"user": {"id": m}, "userRole": if i == 0 { "OWNER" } else { "MEMBER" }})
                })
                .collect();
            st.lists.push(json!({
                "id": id,
                "listName": l.name,
                "listDescription": l.description,
                "listType": "PUBLIC",
                "creator": {"id": members.first()},
                "listUsers": list_users,
                "active": true,
            }));
            for g in &l.groups {
                let gid = st.new_id();
                st.groups.push(json!({
                    "taskGroupIdentifier": gid,
                    "groupName": g,
                    "groupDescription": null,
                    "groupType": "TASKLIST",
                    "taskListIdentifier": id,
                    "active": true,
                }));
            }
        }
        for t in &seed.workflow_templates {
            let id = st.fixed_or_new(t.id.as_deref());
            st.templates.push(Template {
                id,
                name: t.name.clone(),
                template_type: t.template_type.clone(),
                tasks: t.tasks.clone(),
                active: t.active,
            });
        }
        for (i, f) in seed.custom_fields.iter().enumerate() {
            let id = st.fixed_or_new(f.id.as_deref());
            let category = if f.target_type == "PATIENT" {
                "PATIENT_PERSONAL"
            } else {
                "TASK_CORE"
            };
            st.fields.push(json!({
                "id": id,
                "name": f.name,
                "targetType": f.target_type,
                "fieldCategoryType": category,
                "fieldType": f.field_type,
                "required": false,
                "sortIndex": i,
                "options": [],
                "displayOptions": [],
                "active": true,
            }));
        }
        st
    }

    fn fixed_or_new(&mut self, fixed: Option<&str>) -> String {
        match fixed {
            Some(id) => {
                assert!(is_uuid(id), "seed ids must be UUIDs");
                id.to_string()
            }
            None => self.new_id(),
        }
    }

    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("5d0c0000-0000-4000-8000-{:012x}", self.next_id)
    }

    fn is_member(&self, list: &Value, user: &str) -> bool {
        list.get("listUsers")
            .and_then(Value::as_array)
            .is_some_and(|us| us.iter().any(|u| ref_id(u, "user") == Some(user)))
    }

    fn list_for(&self, id: &str, user: &str, path: &str) -> Result<&Value, Reply> {
        let list = self
            .lists
            .iter()
            .find(|l| id_of(l) == id)
            .ok_or_else(|| Reply::spring(404, &format!("TaskList not found: {id}"), path))?;
        if !self.is_member(list, user) {
            return Err(Reply::spring(
                403,
                &format!("HeyDocAccessDeniedException: Not authorized to access task list: {id}"),
                path,
            ));
        }
        Ok(list)
    }

    fn group_in_list(&self, group: &str, list: &str) -> bool {
        self.groups.iter().any(|g| {
            str_of(g, "taskGroupIdentifier") == Some(group)
                && str_of(g, "taskListIdentifier") == Some(list)
        }) || self
            .workflows
            .iter()
            .any(|w| id_of(w) == group && ref_id(w, "taskList") == Some(list))
    }

    fn group_read_model(&self, group: &str) -> Option<Value> {
        self.groups
            .iter()
            .find(|g| str_of(g, "taskGroupIdentifier") == Some(group))
            .cloned()
    }

    /// Dispatches an authenticated API call. `segs` are the path segments after `/api/v1`.
    pub fn handle(
        &mut self,
        method: &str,
        segs: &[&str],
        query: &HashMap<String, String>,
        body: Option<&Value>,
        user: &str,
        path: &str,
    ) -> Reply {
        let reply = self
            .route(method, segs, query, body, user, path)
            .unwrap_or_else(|e| e);
        let listed = matches!(
            segs,
            ["list"]
                | ["task"]
                | ["task", "group"]
                | ["patient"]
                | ["user"]
                | ["taskWorkflowTemplate"]
        );
        if method != "GET" || !listed || reply.status != 200 {
            return reply;
        }
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(Value::Array(items)) => {
                Reply::json(200, &Value::Array(self.reality.paging.page(items, query)))
            }
            _ => reply,
        }
    }

    // Long: one arm per Dock endpoint.
    fn route(
        &mut self,
        method: &str,
        segs: &[&str],
        query: &HashMap<String, String>,
        body: Option<&Value>,
        user: &str,
        path: &str,
    ) -> HResult {
        for s in segs.iter().skip(1) {
            // Every id in a path must look like a UUID (the gem's specs: malformed id → 400).
            let is_word = matches!(*s, "group" | "field" | "current");
            if !is_word && !is_uuid(s) {
                return Err(Reply::spring(
                    400,
                    &format!("Invalid UUID string: {s}"),
                    path,
                ));
            }
        }
        match (method, segs) {
            ("GET", ["list"]) => Ok(self.get_lists(user)),
            ("GET", ["list", id]) => self.list_for(id, user, path).map(|l| Reply::json(200, l)),
            ("GET", ["task", "group"]) => self.get_groups(query, user, path),
            ("GET", ["taskWorkflowTemplate"]) if self.reality.no_template_list => {
                Err(Reply::spring(404, "No handler found", path))
            }
            ("GET", ["taskWorkflowTemplate"]) => Ok(Reply::json(
                200,
                &Value::Array(self.templates.iter().map(template_json).collect()),
            )),
            ("GET", ["taskWorkflowTemplate", id]) => self
                .templates
                .iter()
                .find(|t| t.id == *id)
                .map(|t| Reply::json(200, &template_json(t)))
                .ok_or_else(|| {
                    Reply::spring(404, &format!("TaskWorkflowTemplate not found: {id}"), path)
                }),
            ("GET", ["user"]) => Ok(Reply::json(
                200,
                &Value::Array(
                    self.users
                        .iter()
                        .map(|u| {
                            // The list sample carries `identifier` and no `id` ([C] README).
                            let mut u = u.clone();
                            if let Some(m) = u.as_object_mut() {
                                m.remove("id");
                            }
                            u
                        })
                        .collect(),
                ),
            )),
            ("GET", ["user", id]) => self
                .users
                .iter()
                .find(|u| id_of(u) == *id)
                .map(|u| Reply::json(200, u))
                .ok_or_else(|| Reply::spring(404, &format!("User not found: {id}"), path)),
            ("GET", ["organization", "current"]) => Ok(Reply::json(
                200,
                &json!({"id": self.seed.organization_id, "name": self.seed.organization_name, "identifier": self.seed.organization_id}),
            )),
            ("GET", ["configuration", "field"]) => {
                Ok(Reply::json(200, &Value::Array(self.fields.clone())))
            }
            ("GET", ["event"]) => self.get_events(query, path),
            ("GET", ["patient"]) => Ok(Reply::json(200, &Value::Array(self.patients.clone()))),
            ("GET", ["patient", id]) => self
                .patients
                .iter()
                .find(|p| id_of(p) == *id)
                .map(|p| Reply::json(200, p))
                .ok_or_else(|| Reply::spring(404, &format!("Patient not found: {id}"), path)),
            ("POST", ["patient"]) => self.create_patient(need(body, path)?, path),
            ("PATCH", ["patient", id]) => self.patch_patient(id, need(body, path)?, path),
            ("DELETE", ["patient", id]) => self.delete_patient(id, path),
            ("GET", ["task"]) => self.get_tasks(query, user, path),
            ("GET", ["task", id]) => self.get_task(id, user, path),
            ("POST", ["task"]) => self.create_task(need(body, path)?, user, path),
            ("PATCH", ["task", id]) => self.patch_task(id, need(body, path)?, user, path),
            ("DELETE", ["task", id]) => self.delete_task(id, user, path),
            ("POST", ["taskWorkflow"]) => self.deploy(need(body, path)?, user, path),
            ("PATCH", ["taskWorkflow", id]) => self.rename_workflow(id, need(body, path)?, path),
            ("DELETE", ["taskWorkflow", id]) => self.delete_workflow(id, path),
            ("GET", ["webhook"]) => Ok(Reply::json(
                200,
                &Value::Array(self.webhooks.iter().map(|h| h.json()).collect()),
            )),
            ("GET", ["webhook", id]) => self
                .webhooks
                .iter()
                .find(|h| h.id == *id)
                .map(|h| Reply::json(200, &h.json()))
                .ok_or_else(|| Reply::spring(404, &format!("Webhook not found: {id}"), path)),
            ("POST", ["webhook"]) => self.put_webhook(None, need(body, path)?, path),
            ("PUT", ["webhook", id]) => self.put_webhook(Some(id), need(body, path)?, path),
            ("DELETE", ["webhook", id]) => {
                let i = self
                    .webhooks
                    .iter()
                    .position(|h| h.id == *id)
                    .ok_or_else(|| Reply::spring(404, &format!("Webhook not found: {id}"), path))?;
                Ok(Reply::json(200, &self.webhooks.remove(i).json()))
            }
            (
                _,
                ["list"]
                | ["list", _]
                | ["task", "group"]
                | ["taskWorkflowTemplate"]
                | ["taskWorkflowTemplate", _]
                | ["user"]
                | ["user", _]
                | ["configuration", "field"]
                | ["patient"]
                | ["patient", _]
                | ["task"]
                | ["task", _]
                | ["taskWorkflow"]
                | ["taskWorkflow", _]
                | ["webhook"]
                | ["webhook", _],
            ) => Err(Reply::spring(
                405,
                &format!("Request method '{method}' is not supported"),
                path,
            )),
            _ => Err(Reply::spring(404, "No handler found", path)),
        }
    }

    /// `POST /api/v1/webhook` (id `None`) or `PUT /api/v1/webhook/{id}`, by Dock's rules
    /// (`dock-api.md` §5): every field on a PUT, `url` https (plain http only for a loopback
    /// host, the simulator's one leniency) and unique, `secret` unique, `enabled` false and
    /// `events` empty when absent on a create. Each create or update queues the verification
    /// challenge and leaves the hook unverified until it is answered.
    fn put_webhook(&mut self, id: Option<&str>, b: &Map<String, Value>, path: &str) -> HResult {
        let url = str_of_map(b, "url").unwrap_or("").to_string();
        let secret = str_of_map(b, "secret").unwrap_or("").to_string();
        let bad = |m: &str| Err(Reply::spring(400, m, path));
        let loopback = url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost");
        if !(url.starts_with("https://") || loopback) {
            return bad("HeyDocValidationException: url must be https");
        }
        if secret.is_empty() {
            return bad("HeyDocValidationException: secret is required");
        }
        if id.is_some()
            && ["url", "secret", "enabled", "events"]
                .iter()
                .any(|k| !b.contains_key(*k))
        {
            return bad(
                "HeyDocValidationException: an update must resend url, secret, enabled and events",
            );
        }
        let others = |h: &&crate::webhook::Hook| Some(h.id.as_str()) != id;
        if self.webhooks.iter().filter(others).any(|h| h.url == url) {
            return bad("HeyDocValidationException: url is already used by a webhook");
        }
        if self
            .webhooks
            .iter()
            .filter(others)
            .any(|h| h.secret == secret)
        {
            return bad("HeyDocValidationException: secret is already used by a webhook");
        }
        let enabled = b.get("enabled").and_then(Value::as_bool).unwrap_or(false);
        let events: Vec<String> = b
            .get("events")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let hook_id = match id {
            Some(id) => {
                if !self.webhooks.iter().any(|h| h.id == id) {
                    return Err(Reply::spring(
                        404,
                        &format!("Webhook not found: {id}"),
                        path,
                    ));
                }
                id.to_string()
            }
            None => self.new_id(),
        };
        let hook = crate::webhook::Hook {
            id: hook_id.clone(),
            url: url.clone(),
            secret: secret.clone(),
            enabled,
            verified: false,
            events,
        };
        match self.webhooks.iter_mut().find(|h| h.id == hook_id) {
            Some(h) => *h = hook,
            None => self.webhooks.push(hook),
        }
        let message = format!("{:032x}", rand::random::<u128>());
        self.challenges
            .push((hook_id.clone(), url, secret, message));
        let h = self
            .webhooks
            .iter()
            .find(|h| h.id == hook_id)
            .expect("just stored");
        Ok(Reply::json(200, &h.json()))
    }

    fn get_lists(&self, user: &str) -> Reply {
        let lists: Vec<Value> = self
            .lists
            .iter()
            .filter(|l| self.is_member(l, user))
            .cloned()
            .collect();
        Reply::json(200, &Value::Array(lists))
    }

    fn get_groups(&self, q: &HashMap<String, String>, user: &str, path: &str) -> HResult {
        let list = q.get("taskListIdentifier").ok_or_else(|| {
            Reply::spring(
                400,
                "Required parameter 'taskListIdentifier' is not present",
                path,
            )
        })?;
        if !is_uuid(list) {
            return Err(Reply::spring(
                400,
                &format!("Invalid UUID string: {list}"),
                path,
            ));
        }
        self.list_for(list, user, path)?;
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|g| str_of(g, "taskListIdentifier") == Some(list.as_str()))
            .cloned()
            .collect();
        Ok(Reply::json(200, &Value::Array(groups)))
    }

    fn check_patient_body(&self, b: &Map<String, Value>, path: &str) -> Result<(), Reply> {
        if let Some(d) = b.get("dob") {
            let ok = d.is_null()
                || d.as_str().is_some_and(|s| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() || is_instant(s)
                });
            if !ok {
                return Err(Reply::spring(400, "Invalid value for field: dob", path));
            }
        }
        if let Some(md) = b.get("patientMetaData") {
            self.check_meta(md, "PATIENT", path)?;
        }
        Ok(())
    }

    fn check_meta(&self, md: &Value, target: &str, path: &str) -> Result<(), Reply> {
        let Some(items) = md.as_array() else {
            return Err(Reply::spring(
                400,
                "Invalid value for field: metaData",
                path,
            ));
        };
        for m in items {
            let fid = str_of(m, "customFieldIdentifier").unwrap_or("");
            let ok = self
                .fields
                .iter()
                .any(|f| id_of(f) == fid && str_of(f, "targetType") == Some(target));
            if !ok {
                return Err(Reply::spring(
                    400,
                    &format!("Custom field not found for {target}: {fid}"),
                    path,
                ));
            }
        }
        Ok(())
    }

    fn meta_with_names(&self, md: &Value) -> Value {
        let items = md.as_array().cloned().unwrap_or_default();
        Value::Array(
            items
                .into_iter()
                .map(|mut m| {
                    let fid = str_of(&m, "customFieldIdentifier")
                        .unwrap_or("")
                        .to_string();
                    if let Some(f) = self.fields.iter().find(|f| id_of(f) == fid) {
                        m["customFieldName"] = f["name"].clone();
                    }
                    m
                })
                .collect(),
        )
    }

    fn create_patient(&mut self, b: &Map<String, Value>, path: &str) -> HResult {
        for req in ["firstName", "lastName", "mrn"] {
            if !nonblank(b.get(req)) {
                return Err(Reply::spring(
                    400,
                    &format!("ValidationException: {req} is required"),
                    path,
                ));
            }
        }
        self.check_patient_body(b, path)?;
        let id = self.new_id();
        let mut p = Map::new();
        p.insert("id".into(), json!(id));
        for k in PATIENT_FIELDS {
            if let Some(v) = b.get(*k) {
                p.insert((*k).into(), v.clone());
            }
        }
        let md = self.meta_with_names(b.get("patientMetaData").unwrap_or(&json!([])));
        p.insert("patientMetaData".into(), md);
        p.insert("externalIdentifiers".into(), json!([]));
        p.insert("active".into(), json!(true));
        let p = Value::Object(p);
        self.patients.push(p.clone());
        Ok(Reply::json(200, &p))
    }

    fn patch_patient(&mut self, id: &str, b: &Map<String, Value>, path: &str) -> HResult {
        self.check_patient_body(b, path)?;
        let md = b.get("patientMetaData").map(|m| self.meta_with_names(m));
        let p = self
            .patients
            .iter_mut()
            .find(|p| id_of(p) == id)
            .ok_or_else(|| Reply::spring(404, &format!("Patient not found: {id}"), path))?;
        for k in PATIENT_FIELDS {
            if let Some(v) = b.get(*k) {
                p[*k] = v.clone();
            }
        }
        if let Some(md) = md {
            p["patientMetaData"] = md;
        }
        Ok(Reply::json(200, p))
    }

    fn delete_patient(&mut self, id: &str, path: &str) -> HResult {
        let p = self
            .patients
            .iter_mut()
            .find(|p| id_of(p) == id)
            .ok_or_else(|| Reply::spring(404, &format!("Patient not found: {id}"), path))?;
        p["active"] = json!(false);
        Ok(Reply::json(200, p))
    }

    /// `GET /api/v1/event?organization=<org>&startTs=…&endTs=…[&type=…]` or
    /// `?organization=<org>&event=<id>` (`dock-api.md` §5). Timestamps are read as the docs
    /// write them, `yyyy-MM-ddTHH:mm:ss.SSSZ` (UTC, milliseconds), and nothing else; the
    /// window is `startTs <= createdAt < endTs`.
    fn get_events(&self, q: &HashMap<String, String>, path: &str) -> HResult {
        if q.get("organization").map(String::as_str) != Some(self.seed.organization_id.as_str()) {
            return Err(Reply::spring(400, "organization is required", path));
        }
        if let Some(id) = q.get("event") {
            let hit: Vec<Value> = self
                .events
                .iter()
                .filter(|e| str_of(e, "eventIdentifier") == Some(id.as_str()))
                .cloned()
                .collect();
            return Ok(Reply::json(200, &Value::Array(hit)));
        }
        let ts = |k: &str| {
            q.get(k).and_then(|v| {
                chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.3fZ")
                    .ok()
                    .filter(|_| v.len() == 24)
                    .map(|t| t.and_utc())
            })
        };
        let (Some(start), Some(end)) = (ts("startTs"), ts("endTs")) else {
            return Err(Reply::spring(
                400,
                "startTs and endTs are required, as yyyy-MM-ddTHH:mm:ss.SSSZ",
                path,
            ));
        };
        let kind = q.get("type");
        let hit: Vec<Value> = self
            .events
            .iter()
            .filter(|e| kind.is_none_or(|k| str_of(e, "eventType") == Some(k.as_str())))
            .filter(|e| {
                str_of(e, "createdAt")
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .is_some_and(|c| c >= start && c < end)
            })
            .cloned()
            .collect();
        Ok(Reply::json(200, &Value::Array(hit)))
    }

    fn visible_task(&self, t: &Value, user: &str) -> bool {
        ref_id(t, "taskList")
            .and_then(|l| self.lists.iter().find(|x| id_of(x) == l))
            .is_some_and(|l| self.is_member(l, user))
    }

    fn get_tasks(&self, q: &HashMap<String, String>, user: &str, path: &str) -> HResult {
        let list = q.get("taskListIdentifier");
        let patient = q.get("patientIdentifier");
        let assignee = q.get("assignedToUserIdentifier");
        if list.is_none() && patient.is_none() && assignee.is_none() {
            return Err(Reply::spring(
                400,
                "At least one of taskListIdentifier, patientIdentifier, assignedToUserIdentifier is required",
                path,
            ));
        }
        let active_only = q.get("active").is_some_and(|v| v == "true");
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .filter(|t| self.visible_task(t, user))
            .filter(|t| list.is_none_or(|l| ref_id(t, "taskList") == Some(l.as_str())))
            .filter(|t| patient.is_none_or(|p| ref_id(t, "patient") == Some(p.as_str())))
            .filter(|t| assignee.is_none_or(|a| ref_id(t, "assignedTo") == Some(a.as_str())))
            .filter(|t| !active_only || t["active"] == json!(true))
            .cloned()
            .collect();
        Ok(Reply::json(200, &Value::Array(tasks)))
    }

    fn get_task(&self, id: &str, user: &str, path: &str) -> HResult {
        let t = self
            .tasks
            .iter()
            .find(|t| id_of(t) == id)
            .ok_or_else(|| Reply::spring(404, &format!("Task not found: {id}"), path))?;
        if !self.visible_task(t, user) {
            return Err(Reply::spring(
                403,
                &format!("HeyDocAccessDeniedException: Not authorized to access task: {id}"),
                path,
            ));
        }
        Ok(Reply::json(200, t))
    }

    /// Checks the optional fields shared by create and patch; `list` is the task's list.
    fn check_task_fields(
        &self,
        b: &Map<String, Value>,
        list: &str,
        path: &str,
    ) -> Result<(), Reply> {
        if let Some(g) = b.get("taskGroup").filter(|v| !v.is_null()) {
            let gid = g.get("id").and_then(Value::as_str).unwrap_or("");
            if !self.group_in_list(gid, list) {
                return Err(Reply::spring(
                    404,
                    &format!("TaskGroup not found: {gid}"),
                    path,
                ));
            }
        }
        if let Some(p) = b.get("patient").filter(|v| !v.is_null()) {
            let pid = p.get("id").and_then(Value::as_str).unwrap_or("");
            if !self
                .patients
                .iter()
                .any(|x| id_of(x) == pid && x["active"] == json!(true))
            {
                return Err(Reply::spring(
                    404,
                    &format!("Patient not found: {pid}"),
                    path,
                ));
            }
        }
        let mut named: Vec<&Value> = b
            .get("assignedTo")
            .filter(|v| !v.is_null())
            .into_iter()
            .collect();
        named.extend(
            b.get("assignees")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
        for a in named {
            let uid = a.get("id").and_then(Value::as_str).unwrap_or("");
            if !self.users.iter().any(|u| id_of(u) == uid) {
                return Err(Reply::spring(404, &format!("User not found: {uid}"), path));
            }
        }
        if let Some(p) = b.get("priority") {
            if !p
                .as_str()
                .is_some_and(|p| ["HIGH", "MEDIUM", "LOW", "NONE"].contains(&p))
            {
                return Err(Reply::spring(
                    400,
                    "Invalid value for field: priority",
                    path,
                ));
            }
        }
        if let Some(s) = b.get("status") {
            if !s
                .as_str()
                .is_some_and(|s| ["COMPLETE", "INCOMPLETE"].contains(&s))
            {
                return Err(Reply::spring(400, "Invalid value for field: status", path));
            }
        }
        if let Some(d) = b.get("dueDate").filter(|v| !v.is_null()) {
            if !d.as_str().is_some_and(is_instant) {
                return Err(Reply::spring(400, "Invalid value for field: dueDate", path));
            }
        }
        if let Some(md) = b.get("taskMetaData") {
            self.check_meta(md, "TASK", path)?;
        }
        if let Some(d) = b.get("description") {
            if !nonblank(Some(d)) {
                return Err(Reply::spring(
                    400,
                    "ValidationException: description is required",
                    path,
                ));
            }
        }
        Ok(())
    }

    fn create_task(&mut self, b: &Map<String, Value>, user: &str, path: &str) -> HResult {
        if !b.contains_key("description") {
            return Err(Reply::spring(
                400,
                "ValidationException: description is required",
                path,
            ));
        }
        let list = b
            .get("taskList")
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| Reply::spring(400, "ValidationException: taskList is required", path))?
            .to_string();
        if !is_uuid(&list) {
            return Err(Reply::spring(
                400,
                &format!("Invalid UUID string: {list}"),
                path,
            ));
        }
        self.list_for(&list, user, path)?;
        self.check_task_fields(b, &list, path)?;
        let t = self.new_task(b, &list, user, None);
        Ok(Reply::json(200, &t))
    }

    /// Stores a task built from a (validated) create body.
    fn new_task(
        &mut self,
        b: &Map<String, Value>,
        list: &str,
        user: &str,
        workflow: Option<&str>,
    ) -> Value {
        let id = self.new_id();
        let now = now_iso();
        let mut t = Map::new();
        t.insert("id".into(), json!(id));
        for k in ["identifier", "description", "details", "dueDate"] {
            if let Some(v) = b.get(k).filter(|v| !v.is_null()) {
                t.insert(k.into(), v.clone());
            }
        }
        t.insert("status".into(), json!("INCOMPLETE"));
        t.insert(
            "priority".into(),
            b.get("priority").cloned().unwrap_or(json!("NONE")),
        );
        t.insert("createdDateTime".into(), json!(now));
        t.insert("updatedDateTime".into(), json!(now));
        t.insert("creator".into(), json!({"id": user}));
        if let Some(a) = self.assignee_of(b) {
            set_assignee(&mut t, a, self.reality.assignees_only);
            t.insert("assignedBy".into(), json!({"id": user}));
        }
        if let Some(p) = b.get("patient").filter(|v| !v.is_null()) {
            t.insert("patient".into(), json!({"id": p["id"]}));
        }
        t.insert("taskList".into(), json!({"id": list}));
        if let Some(g) = b.get("taskGroup").filter(|v| !v.is_null()) {
            let gid = g["id"].as_str().unwrap_or("").to_string();
            t.insert("taskGroup".into(), json!({"id": gid}));
            let groups: Vec<Value> = self.group_read_model(&gid).into_iter().collect();
            t.insert("taskGroups".into(), Value::Array(groups));
        }
        if let Some(w) = workflow {
            t.insert("taskWorkflow".into(), json!({"id": w}));
        }
        let md = self.meta_with_names(b.get("taskMetaData").unwrap_or(&json!([])));
        t.insert("taskMetaData".into(), md);
        t.insert("type".into(), json!("IN_APP"));
        t.insert("active".into(), json!(true));
        let t = Value::Object(t);
        self.tasks.push(t.clone());
        t
    }

    /// The assignee a create or patch body sets: `assignedTo:{id}` (unless only `assignees`
    /// counts), else the first of `assignees:[{id}]`.
    fn assignee_of(&self, b: &Map<String, Value>) -> Option<String> {
        let to = b
            .get("assignedTo")
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .filter(|_| !self.reality.assignees_only);
        let first = b
            .get("assignees")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str);
        to.or(first).map(str::to_string)
    }

    fn task_index(&self, id: &str, user: &str, path: &str) -> Result<usize, Reply> {
        let i = self
            .tasks
            .iter()
            .position(|t| id_of(t) == id && t["active"] == json!(true))
            .ok_or_else(|| Reply::spring(404, &format!("Task not found: {id}"), path))?;
        if !self.visible_task(&self.tasks[i], user) {
            return Err(Reply::spring(
                403,
                &format!("HeyDocAccessDeniedException: Not authorized to access task: {id}"),
                path,
            ));
        }
        Ok(i)
    }

    /// The `UPDATE_TASK` event of a PATCH that changes the task's text
    /// ([`crate::Reality::audit_keeps_edits`]), with the replaced values.
    fn audit_edit(&mut self, i: usize, b: &Map<String, Value>, user: &str) {
        let t = &self.tasks[i];
        let (mut before, mut after) = (Map::new(), Map::new());
        for k in ["description", "details"] {
            if let Some(v) = b.get(k).filter(|v| *v != &t[k]) {
                before.insert(k.into(), t[k].clone());
                after.insert(k.into(), v.clone());
            }
        }
        if before.is_empty() {
            return;
        }
        self.webhook_events += 1;
        let n = self.webhook_events;
        let task_id = t["id"].clone();
        self.events.push(json!({
            "eventIdentifier": format!("e0e0e0e0-0000-4000-8000-{n:012x}"),
            "organizationIdentifier": self.seed.organization_id,
            "userIdentifier": user,
            "targetIdentifier": task_id,
            "targetType": "TASK",
            "eventType": "UPDATE_TASK",
            "createdAt": now_iso(),
            "audit": {
                "targetIdentifier": task_id,
                "targetType": "TASK",
                "eventType": "UPDATE_TASK",
                "currentState": "",
                "previousState": "",
                "currentValues": after,
                "previousValues": before,
            }
        }));
    }

    fn patch_task(&mut self, id: &str, b: &Map<String, Value>, user: &str, path: &str) -> HResult {
        let i = self.task_index(id, user, path)?;
        let list = ref_id(&self.tasks[i], "taskList").unwrap_or("").to_string();
        self.check_task_fields(b, &list, path)?;
        let md = b.get("taskMetaData").map(|m| self.meta_with_names(m));
        let group_model = b
            .get("taskGroup")
            .and_then(|g| g.get("id"))
            .and_then(Value::as_str)
            .map(|g| self.group_read_model(g));
        let assignee = self.assignee_of(b);
        let assignees_only = self.reality.assignees_only;
        if self.reality.audit_keeps_edits {
            self.audit_edit(i, b, user);
        }
        let t = &mut self.tasks[i];
        for k in ["description", "details", "priority", "dueDate"] {
            if let Some(v) = b.get(k) {
                t[k] = v.clone();
            }
        }
        if let Some(s) = b.get("status").and_then(Value::as_str) {
            t["status"] = json!(s);
            if s == "COMPLETE" {
                t["completedDt"] = json!(now_iso());
                t["completedBy"] = json!({"id": user});
            } else if let Some(m) = t.as_object_mut() {
                m.remove("completedDt");
                m.remove("completedBy");
            }
        }
        if let (Some(a), Some(m)) = (assignee, t.as_object_mut()) {
            set_assignee(m, a, assignees_only);
        }
        for k in ["patient", "taskGroup"] {
            if let Some(v) = b.get(k) {
                t[k] = if v.is_null() {
                    Value::Null
                } else {
                    json!({"id": v["id"]})
                };
            }
        }
        if let Some(g) = group_model {
            t["taskGroups"] = Value::Array(g.into_iter().collect());
        }
        if let Some(new) = md {
            // Values merge by field: a field sent replaces its value, others stay.
            let mut cur = t["taskMetaData"].as_array().cloned().unwrap_or_default();
            for m in new.as_array().cloned().unwrap_or_default() {
                let fid = m["customFieldIdentifier"].clone();
                cur.retain(|c| c["customFieldIdentifier"] != fid);
                cur.push(m);
            }
            t["taskMetaData"] = Value::Array(cur);
        }
        t["updatedDateTime"] = json!(now_iso());
        Ok(Reply::json(200, t))
    }

    fn delete_task(&mut self, id: &str, user: &str, path: &str) -> HResult {
        let i = self.task_index(id, user, path)?;
        self.tasks[i]["active"] = json!(false);
        self.tasks[i]["updatedDateTime"] = json!(now_iso());
        Ok(Reply::empty(204))
    }

    fn deploy(&mut self, b: &Map<String, Value>, user: &str, path: &str) -> HResult {
        let get = |k: &str| {
            b.get(k)
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    Reply::spring(400, &format!("ValidationException: {k} is required"), path)
                })
        };
        let list = get("taskList")?;
        let group = get("taskGroup")?;
        let template = get("taskWorkflowTemplate")?;
        for id in [&list, &group, &template] {
            if !is_uuid(id) {
                return Err(Reply::spring(
                    400,
                    &format!("Invalid UUID string: {id}"),
                    path,
                ));
            }
        }
        self.list_for(&list, user, path)?;
        let mut check = Map::new();
        check.insert("taskGroup".into(), json!({"id": group}));
        if let Some(p) = b
            .get("patient")
            .filter(|_| !self.reality.deploy_ignores_patient)
        {
            check.insert("patient".into(), p.clone());
        }
        self.check_task_fields(&check, &list, path)?;
        let t = self
            .templates
            .iter()
            .find(|t| t.id == template && t.active)
            .ok_or_else(|| {
                Reply::spring(
                    404,
                    &format!("TaskWorkflowTemplate not found: {template}"),
                    path,
                )
            })?;
        let (name, descriptions) = (t.name.clone(), t.tasks.clone());
        let wid = self.new_id();
        let mut ids = Vec::new();
        for d in descriptions {
            let mut tb = check.clone();
            tb.insert("description".into(), json!(d));
            let task = self.new_task(&tb, &list, user, Some(&wid));
            ids.push(json!(id_of(&task)));
        }
        self.workflows.push(json!({
            "id": wid,
            "name": name,
            "taskList": {"id": list},
            "taskGroup": {"id": group},
            "taskWorkflowTemplate": {"id": template},
            "tasks": ids,
            "active": true,
        }));
        Ok(Reply::json(
            200,
            &self.workflow_json(self.workflows.len() - 1),
        ))
    }

    /// A deployed workflow with its tasks expanded.
    pub fn workflow_json(&self, i: usize) -> Value {
        let mut w = self.workflows[i].clone();
        let tasks: Vec<Value> = w["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|id| self.tasks.iter().find(|t| &t["id"] == id).cloned())
            .collect();
        w["tasks"] = Value::Array(tasks);
        w
    }

    fn rename_workflow(&mut self, id: &str, b: &Map<String, Value>, path: &str) -> HResult {
        let i = self
            .workflows
            .iter()
            .position(|w| id_of(w) == id)
            .ok_or_else(|| Reply::spring(404, &format!("TaskWorkflow not found: {id}"), path))?;
        if let Some(n) = b.get("name") {
            if !nonblank(Some(n)) {
                return Err(Reply::spring(400, "Invalid value for field: name", path));
            }
            self.workflows[i]["name"] = n.clone();
        }
        Ok(Reply::json(200, &self.workflow_json(i)))
    }

    fn delete_workflow(&mut self, id: &str, path: &str) -> HResult {
        let i = self
            .workflows
            .iter()
            .position(|w| id_of(w) == id && w["active"] == json!(true))
            .ok_or_else(|| Reply::spring(404, &format!("TaskWorkflow not found: {id}"), path))?;
        self.workflows[i]["active"] = json!(false);
        let ids = self.workflows[i]["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for t in self.tasks.iter_mut().filter(|t| ids.contains(&t["id"])) {
            t["active"] = json!(false);
        }
        Ok(Reply::empty(204))
    }
}

const PATIENT_FIELDS: &[&str] = &[
    "identifier",
    "mrn",
    "firstName",
    "middleName",
    "lastName",
    "dob",
    "gender",
    "email",
    "phoneHome",
    "phoneMobile",
];

/// Sets a task's assignee the way this Dock reads it: `assignees:[{id}]` when only that
/// counts, else `assignedTo:{id}`.
fn set_assignee(t: &mut Map<String, Value>, id: String, assignees_only: bool) {
    if assignees_only {
        t.insert("assignees".into(), json!([{ "id": id }]));
    } else {
        t.insert("assignedTo".into(), json!({ "id": id }));
    }
}

fn template_json(t: &Template) -> Value {
    json!({"id": t.id, "name": t.name, "templateType": t.template_type, "active": t.active})
}

fn need<'a>(body: Option<&'a Value>, path: &str) -> Result<&'a Map<String, Value>, Reply> {
    body.and_then(Value::as_object).ok_or_else(|| {
        Reply::spring(
            400,
            "Required request body is missing or not a JSON object",
            path,
        )
    })
}

/// A string with something other than whitespace in it.
fn nonblank(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}
