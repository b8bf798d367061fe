//! Task creation's Dock adapter against the Dock simulator playing each reading of what Dock's
//! documentation leaves open (`dock_sim::Reality`), one at a time and all at once: a template
//! list endpoint that does not exist, a deploy that ignores the patient, assignment only
//! through `assignees`, the raw token only, no patient scopes, retired templates listed under
//! a live name, a list name spelled with another case.

use std::time::Duration;

use dock_sim::{DockSim, Reality, Seed};
use domain::mapping::{TaskSpec, Template};
use domain::ports::ErrorClass;
use tasks::deliver::{DockPort, PatientDraft, TaskDraft};
use tasks::dock::DockTasks;

async fn dock(reality: Reality) -> (DockSim, DockTasks) {
    let sim = DockSim::start(Seed::default()).await;
    sim.set_reality(reality);
    let client = dock::DockClient::new(dock::DockConfig {
        api_url: sim.api_url(),
        auth_url: sim.auth_url(),
        timeout: Duration::from_secs(5),
        rate_per_sec: 0,
        ..dock::DockConfig::default()
    })
    .unwrap();
    (sim, DockTasks::new(client))
}

fn spec(list: &str) -> TaskSpec {
    TaskSpec {
        list: list.into(),
        group: None,
        workflow: None,
        workflow_id: None,
        description: Template::default(),
        assignee: None,
        due: None,
        priority: None,
        patient: false,
    }
}

fn flow(sim: &DockSim, by_id: bool) -> TaskSpec {
    let name = "New Patient Intake";
    TaskSpec {
        group: Some("New Patients".into()),
        workflow: (!by_id).then(|| name.into()),
        workflow_id: by_id.then(|| sim.template_id(name).unwrap()),
        ..spec("Front Desk")
    }
}

fn patient() -> PatientDraft {
    PatientDraft {
        mrn: "1042".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        dob: None,
    }
}

fn draft(ids: tasks::deliver::Resolved, patient: Option<String>) -> TaskDraft {
    TaskDraft {
        description: "Call back".into(),
        details: "ref".into(),
        ids,
        due: None,
        priority: None,
        patient,
    }
}

#[tokio::test]
async fn a_retired_template_of_the_same_name_is_skipped() {
    let (sim, dock) = dock(Reality::default()).await;
    let ids = dock
        .resolve(&sim.secret(), &flow(&sim, false))
        .await
        .unwrap();
    assert_eq!(ids.template, sim.template_id("New Patient Intake"));
    let id = dock.deploy(&sim.secret(), &ids, None, None).await.unwrap();
    let wf = sim.workflows();
    assert_eq!(wf.len(), 1);
    assert_eq!(wf[0].id, id);
    let titles: Vec<_> = sim
        .tasks()
        .into_iter()
        .filter_map(|t| t.description)
        .collect();
    assert_eq!(titles, ["Send intake forms", "Verify insurance"]);
}

#[tokio::test]
async fn without_a_template_list_a_rule_names_its_template_by_id() {
    let (sim, dock) = dock(Reality {
        no_template_list: true,
        ..Reality::default()
    })
    .await;
    // By name: a permanent failure that says what to do.
    let f = dock
        .resolve(&sim.secret(), &flow(&sim, false))
        .await
        .unwrap_err();
    assert_eq!(f.class, ErrorClass::UnknownWorkflow);
    assert!(f.permanent && !f.ambiguous);
    assert!(f.reason.contains("task.workflow_id"), "{}", f.reason);
    // By id: resolved through GET /taskWorkflowTemplate/{id} (once: cached), and deployed.
    for _ in 0..2 {
        let ids = dock
            .resolve(&sim.secret(), &flow(&sim, true))
            .await
            .unwrap();
        assert_eq!(ids.template, sim.template_id("New Patient Intake"));
    }
    assert_eq!(
        sim.calls_to("GET", "/api/v1/taskWorkflowTemplate/*").len(),
        1
    );
    let ids = dock
        .resolve(&sim.secret(), &flow(&sim, true))
        .await
        .unwrap();
    dock.deploy(&sim.secret(), &ids, None, None).await.unwrap();
    assert_eq!(sim.workflows().len(), 1);
}

#[tokio::test]
async fn a_deploy_that_ignores_the_patient_still_links_every_task_and_names_the_workflow() {
    let (sim, dock) = dock(Reality {
        deploy_ignores_patient: true,
        ..Reality::default()
    })
    .await;
    let s = sim.secret();
    let p = dock.patient(&s, &patient()).await.unwrap();
    let ids = dock.resolve(&s, &flow(&sim, false)).await.unwrap();
    let id = dock
        .deploy(&s, &ids, Some(&p), Some("Intake – Ada Lovelace"))
        .await
        .unwrap();
    let tasks = sim.tasks();
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert_eq!(t.patient.as_ref().map(|r| r.id.as_str()), Some(p.as_str()));
    }
    let wf = sim.workflows();
    assert_eq!(wf[0].id, id);
    assert_eq!(wf[0].name.as_deref(), Some("Intake – Ada Lovelace"));
    // One deploy, whatever followed it.
    assert_eq!(sim.calls_to("POST", "/api/v1/taskWorkflow").len(), 1);
}

#[tokio::test]
async fn assignment_through_assignees_only_still_assigns() {
    let (sim, dock) = dock(Reality {
        assignees_only: true,
        ..Reality::default()
    })
    .await;
    let s = sim.secret();
    let with_assignee = TaskSpec {
        assignee: Some("frontdesk@acme.example".into()),
        ..spec("Front Desk")
    };
    let ids = dock.resolve(&s, &with_assignee).await.unwrap();
    let want = sim.user_id("frontdesk@acme.example").unwrap();
    assert_eq!(ids.assignee.as_deref(), Some(want.as_str()));
    dock.create_task(&s, &draft(ids, None)).await.unwrap();
    let t = &sim.tasks()[0];
    assert!(t.assigned_to.is_none(), "this Dock ignores assignedTo");
    assert_eq!(t.assignee_ids().collect::<Vec<_>>(), [want.as_str()]);
}

#[tokio::test]
async fn a_raw_token_only_dock_is_reached_after_one_refusal() {
    let (sim, dock) = dock(Reality {
        raw_token_only: true,
        ..Reality::default()
    })
    .await;
    let s = sim.secret();
    dock.resolve(&s, &spec("Front Desk")).await.unwrap();
    dock.resolve(&s, &spec("Billing")).await.unwrap();
    let refused = sim.calls().iter().filter(|c| c.status == 401).count();
    assert_eq!(
        refused, 1,
        "the Bearer form once; the retry with a fresh token goes raw, for good"
    );
}

#[tokio::test]
async fn without_patient_scopes_tasks_still_work_and_patient_links_fail_as_auth() {
    let (sim, dock) = dock(Reality {
        no_patient_scopes: true,
        ..Reality::default()
    })
    .await;
    let s = sim.secret();
    let ids = dock.resolve(&s, &spec("Front Desk")).await.unwrap();
    dock.create_task(&s, &draft(ids, None)).await.unwrap();
    assert_eq!(sim.tasks().len(), 1);
    let f = dock.patient(&s, &patient()).await.unwrap_err();
    assert_eq!(f.class, ErrorClass::DockAuth, "{}", f.reason);
    assert!(sim.patients().is_empty());
}

#[tokio::test]
async fn a_list_name_in_another_case_matches_only_when_unique() {
    let (sim, dock) = dock(Reality::default()).await;
    let ids = dock
        .resolve(&sim.secret(), &spec(" front desk "))
        .await
        .unwrap();
    assert_eq!(Some(ids.list), sim.list_id("Front Desk"));
    let f = dock
        .resolve(&sim.secret(), &spec("Front Office"))
        .await
        .unwrap_err();
    assert_eq!(f.class, ErrorClass::UnknownList);
}

#[tokio::test]
async fn every_reading_at_once_tasks_workflows_and_patients_are_exact() {
    let (sim, dock) = dock(Reality::all()).await;
    let s = sim.secret();
    let p = dock.patient(&s, &patient()).await.unwrap();
    assert_eq!(dock.patient(&s, &patient()).await.unwrap(), p);
    let ids = dock.resolve(&s, &flow(&sim, true)).await.unwrap();
    dock.deploy(&s, &ids, Some(&p), Some("Intake – Ada Lovelace"))
        .await
        .unwrap();
    let with_assignee = TaskSpec {
        assignee: Some("frontdesk@acme.example".into()),
        ..spec("front desk")
    };
    let ids = dock.resolve(&s, &with_assignee).await.unwrap();
    dock.create_task(&s, &draft(ids, Some(p.clone())))
        .await
        .unwrap();
    assert_eq!(sim.patients().len(), 1);
    let wf = sim.workflows();
    assert_eq!(wf.len(), 1);
    assert_eq!(wf[0].name.as_deref(), Some("Intake – Ada Lovelace"));
    let tasks = sim.tasks();
    assert_eq!(tasks.len(), 3);
    assert!(tasks
        .iter()
        .all(|t| t.patient.as_ref().map(|r| r.id.as_str()) == Some(p.as_str())));
    let want = sim.user_id("frontdesk@acme.example").unwrap();
    assert_eq!(tasks[2].assignee_ids().collect::<Vec<_>>(), [want.as_str()]);
}
