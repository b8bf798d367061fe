//! The Dock adapter of task creation: [`DockTasks`] implements [`DockPort`] over the Dock
//! client, resolving names (lists, groups, templates, assignees) to ids with a cache per
//! organisation, and linking patients by MRN.

use std::collections::HashMap;
use std::sync::Mutex;

use dock::{DockClient, DockSecret};
use domain::mapping::TaskSpec;
use domain::ports::ErrorClass;

use crate::deliver::{permanent, DockFailure, DockPort, PatientDraft, Resolved, TaskDraft};

/// [`DockPort`] over the Dock client, with name and patient caches per organisation.
pub struct DockTasks {
    client: DockClient,
    names: Mutex<HashMap<(String, String), Option<String>>>,
    patients: Mutex<HashMap<(String, String), String>>,
}

impl DockTasks {
    /// Wraps a client.
    pub fn new(client: DockClient) -> DockTasks {
        DockTasks {
            client,
            names: Mutex::new(HashMap::new()),
            patients: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, org: &str, key: &str) -> Option<Option<String>> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(org.to_string(), key.to_string()))
            .cloned()
    }

    fn remember(&self, org: &str, key: String, id: Option<String>) {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((org.to_string(), key), id);
    }

    async fn list_id(&self, s: &DockSecret, name: &str) -> Result<String, DockFailure> {
        let key = format!("list:{name}");
        if let Some(hit) = self.cached(&s.organization_id, &key) {
            return hit.ok_or_else(|| {
                permanent(
                    ErrorClass::UnknownList,
                    format!("no active Dock task list named '{name}'"),
                )
            });
        }
        let lists = self.client.list_task_lists(s).await?;
        for l in &lists {
            if l.active != Some(false) {
                self.remember(
                    &s.organization_id,
                    format!("list:{}", l.list_name),
                    Some(l.id.clone()),
                );
            }
        }
        let active = || lists.iter().filter(|l| l.active != Some(false));
        let exact = active().find(|l| l.list_name == name);
        // Then a trimmed, case-insensitive match, only when it is unique.
        let loose: Vec<_> = active()
            .filter(|l| l.list_name.trim().eq_ignore_ascii_case(name.trim()))
            .collect();
        let id = match (exact, loose.as_slice()) {
            (Some(l), _) => Some(l.id.clone()),
            (None, [l]) => {
                tracing::warn!(rule_spelling = %name, dock_spelling = %l.list_name, list = %l.id, "dock task list matched ignoring case and spaces: correct the rule's spelling");
                Some(l.id.clone())
            }
            (None, _) => None,
        };
        self.remember(&s.organization_id, key, id.clone());
        id.ok_or_else(|| {
            permanent(
                ErrorClass::UnknownList,
                format!("no active Dock task list named '{name}'"),
            )
        })
    }
}

impl DockTasks {
    /// The template a rule deploys: by id (`workflow_id`, read with the one documented call),
    /// else by name among the active templates — the name must be unique among them, and a
    /// Dock that lists no templates is told apart from an unknown name.
    async fn template_id(
        &self,
        s: &DockSecret,
        task: &TaskSpec,
    ) -> Result<Option<String>, DockFailure> {
        let unknown = |reason: String| permanent(ErrorClass::UnknownWorkflow, reason);
        if let Some(id) = &task.workflow_id {
            let key = format!("template-id:{id}");
            let hit = match self.cached(&s.organization_id, &key) {
                Some(hit) => hit,
                None => {
                    let found = match self.client.get_workflow_template(s, id).await {
                        Ok(t) if t.active != Some(false) => Some(id.clone()),
                        Ok(_) => None,
                        Err(dock::DockError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    };
                    self.remember(&s.organization_id, key, found.clone());
                    found
                }
            };
            return hit
                .map(Some)
                .ok_or_else(|| unknown(format!("no active workflow template with id {id}")));
        }
        let Some(w) = &task.workflow else {
            return Ok(None);
        };
        let key = format!("template:{w}");
        if let Some(hit) = self.cached(&s.organization_id, &key) {
            return hit
                .map(Some)
                .ok_or_else(|| unknown(format!("no active workflow template named '{w}'")));
        }
        let templates = match self.client.list_workflow_templates(s).await {
            Ok(ts) => ts,
            Err(dock::DockError::NotFound { .. }) => {
                return Err(unknown(format!("Dock lists no workflow templates for this organisation, so '{w}' cannot be found by name: give the rule task.workflow_id (the template's id in Dock)")));
            }
            Err(e) => return Err(e.into()),
        };
        let active: Vec<_> = templates
            .iter()
            .filter(|t| t.active != Some(false) && t.name == *w)
            .collect();
        let id = match active.as_slice() {
            [t] => Some(t.id.clone()),
            [] => None,
            many => {
                return Err(unknown(format!(
                    "{} active workflow templates are named '{w}': give the rule task.workflow_id",
                    many.len()
                )))
            }
        };
        self.remember(&s.organization_id, key, id.clone());
        id.map(Some)
            .ok_or_else(|| unknown(format!("no active workflow template named '{w}'")))
    }
}

impl DockPort for DockTasks {
    async fn resolve(&self, s: &DockSecret, task: &TaskSpec) -> Result<Resolved, DockFailure> {
        let list = self.list_id(s, &task.list).await?;
        let group = match &task.group {
            None => None,
            Some(g) => {
                let key = format!("group:{list}:{g}");
                let id = match self.cached(&s.organization_id, &key) {
                    Some(hit) => hit,
                    None => {
                        let groups = self.client.list_task_groups(s, &list).await?;
                        let id = groups
                            .iter()
                            .find(|x| &x.group_name == g && x.active != Some(false))
                            .and_then(|x| x.group_id().map(str::to_string));
                        self.remember(&s.organization_id, key, id.clone());
                        id
                    }
                };
                Some(id.ok_or_else(|| {
                    permanent(
                        ErrorClass::UnknownGroup,
                        format!("no task group '{g}' in list '{}'", task.list),
                    )
                })?)
            }
        };
        let template = self.template_id(s, task).await?;
        let assignee = match &task.assignee {
            None => None,
            Some(email) => {
                let key = format!("user:{}", email.to_lowercase());
                let id = match self.cached(&s.organization_id, &key) {
                    Some(hit) => hit,
                    None => {
                        let u = self.client.find_user_by_email(s, email).await?;
                        let id = u.and_then(|u| u.user_id().map(str::to_string));
                        self.remember(&s.organization_id, key, id.clone());
                        id
                    }
                };
                Some(id.ok_or_else(|| {
                    permanent(
                        ErrorClass::UnknownAssignee,
                        "the rule's assignee is not a Dock user of this organisation".into(),
                    )
                })?)
            }
        };
        Ok(Resolved {
            list,
            group,
            template,
            assignee,
        })
    }

    async fn find_task(
        &self,
        s: &DockSecret,
        list: &str,
        reference: &str,
    ) -> Result<Option<String>, DockFailure> {
        let tasks = self
            .client
            .list_tasks(s, &dock::TaskQuery::list(list))
            .await?;
        Ok(tasks
            .into_iter()
            .find(|t| {
                t.details
                    .as_deref()
                    .is_some_and(|d| d.lines().any(|l| l.trim() == reference))
            })
            .map(|t| t.id))
    }

    async fn create_task(&self, s: &DockSecret, d: &TaskDraft) -> Result<String, DockFailure> {
        let mut t = dock::NewTask::new(d.description.clone(), d.ids.list.clone());
        t.details = Some(d.details.clone());
        t.task_group = d.ids.group.clone().map(dock::Ref::new);
        // Both assignment fields (Dock's docs leave open which one it reads); the echo says
        // which took.
        t.assigned_to = d.ids.assignee.clone().map(dock::Ref::new);
        t.assignees = d.ids.assignee.iter().cloned().map(dock::Ref::new).collect();
        t.patient = d.patient.clone().map(dock::Ref::new);
        t.due_date = d.due;
        t.priority = d.priority;
        let created = self.client.create_task(s, &t).await?;
        if let Some(want) = &d.ids.assignee {
            if !created.assignee_ids().any(|a| a == want) {
                tracing::warn!(task = %created.id, assignee = %want, "dock did not echo the task's assignee: the task may be unassigned");
            }
        }
        Ok(created.id)
    }

    async fn deploy(
        &self,
        s: &DockSecret,
        ids: &Resolved,
        patient: Option<&str>,
        name: Option<&str>,
    ) -> Result<String, DockFailure> {
        let (Some(group), Some(template)) = (&ids.group, &ids.template) else {
            return Err(permanent(
                ErrorClass::Rule,
                "a workflow needs a task group".into(),
            ));
        };
        let body = dock::DeployWorkflow {
            task_list: dock::Ref::new(ids.list.clone()),
            task_group: dock::Ref::new(group.clone()),
            task_workflow_template: dock::Ref::new(template.clone()),
            patient: patient.map(dock::Ref::new),
        };
        let deployed = self.client.deploy_workflow(s, &body).await?;
        // The deploy is done: what follows completes it, and a failure there is a warning,
        // never a reason to deploy again.
        if let Some(p) = patient {
            // Attaching the patient in the deploy body is unverified (`dock-api.md` §4.7):
            // each task that came back without it gets it by PATCH, the documented way.
            for t in deployed
                .tasks
                .iter()
                .filter(|t| t.patient.as_ref().is_none_or(|r| r.id != p))
            {
                let patch = dock::TaskPatch {
                    patient: Some(dock::Ref::new(p)),
                    ..Default::default()
                };
                if let Err(e) = self.client.patch_task(s, &t.id, &patch).await {
                    tracing::warn!(workflow = %deployed.id, task = %t.id, class = e.class(), "the deployed task could not be linked to its patient");
                }
            }
        }
        if let Some(n) = name.map(str::trim).filter(|n| !n.is_empty()) {
            if deployed.name.as_deref() != Some(n) {
                if let Err(e) = self.client.rename_workflow(s, &deployed.id, n).await {
                    tracing::warn!(workflow = %deployed.id, class = e.class(), "the deployed workflow could not be renamed");
                }
            }
        }
        Ok(deployed.id)
    }

    async fn patient(&self, s: &DockSecret, d: &PatientDraft) -> Result<String, DockFailure> {
        let key = (s.organization_id.clone(), d.mrn.clone());
        if let Some(id) = self
            .patients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(id.clone());
        }
        let found = self.client.find_patients_by_mrn(s, &d.mrn).await?;
        let id = match found.into_iter().find(|p| p.active != Some(false)) {
            Some(p) => p.id,
            None => {
                let np = dock::NewPatient {
                    first_name: d.first_name.clone(),
                    last_name: d.last_name.clone(),
                    mrn: d.mrn.clone(),
                    dob: d.dob,
                    ..Default::default()
                };
                self.client.create_patient(s, &np).await?.id
            }
        };
        self.patients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, id.clone());
        Ok(id)
    }
}
