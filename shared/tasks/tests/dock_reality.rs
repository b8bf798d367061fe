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

/// Five patients and five tasks in Dock, then lists paged two at a time.
async fn paged(end_inclusive: bool) -> (DockSim, DockTasks, Vec<String>) {
    let (sim, dock) = dock(Reality::default()).await;
    let s = sim.secret();
    let ids = dock.resolve(&s, &spec("Front Desk")).await.unwrap();
    let mut refs = Vec::new();
    for i in 1..=5 {
        let mut p = patient();
        p.mrn = format!("{}", 2000 + i);
        dock.patient(&s, &p).await.unwrap();
        let mut d = draft(ids.clone(), None);
        d.details = format!("kareo-ref: r{i}");
        dock.create_task(&s, &d).await.unwrap();
        refs.push(d.details);
    }
    sim.set_reality(Reality {
        paging: dock_sim::Paging::Positions {
            page: 2,
            end_inclusive,
        },
        ..Reality::default()
    });
    (sim, dock, refs)
}

#[tokio::test]
async fn paged_lists_are_read_to_the_end_whichever_way_end_position_reads() {
    for end_inclusive in [true, false] {
        let (sim, _, refs) = paged(end_inclusive).await;
        // A fresh adapter (no cache): the patient on the last page is found, not duplicated.
        let client = dock::DockClient::new(dock::DockConfig {
            api_url: sim.api_url(),
            auth_url: sim.auth_url(),
            rate_per_sec: 0,
            page_size: 3,
            ..dock::DockConfig::default()
        })
        .unwrap();
        let fresh = DockTasks::new(client);
        let s = sim.secret();
        let mut last = patient();
        last.mrn = "2005".into();
        let id = fresh.patient(&s, &last).await.unwrap();
        assert_eq!(sim.patients().len(), 5, "end inclusive: {end_inclusive}");
        assert_eq!(
            sim.patients()
                .iter()
                .find(|p| p.mrn.as_deref() == Some("2005"))
                .map(|p| p.id.clone()),
            Some(id)
        );
        // The task on the last page is found by its reference.
        let list = sim.list_id("Front Desk").unwrap();
        let found = fresh.find_task(&s, &list, &refs[4]).await.unwrap();
        assert_eq!(
            found,
            Some(sim.tasks()[4].id.clone()),
            "end inclusive: {end_inclusive}"
        );
    }
}

#[tokio::test]
async fn a_dock_that_ignores_positions_is_read_in_one_call() {
    let (sim, _dock) = dock(Reality::default()).await;
    let s = sim.secret();
    let client = dock::DockClient::new(dock::DockConfig {
        api_url: sim.api_url(),
        auth_url: sim.auth_url(),
        rate_per_sec: 0,
        page_size: 1,
        ..dock::DockConfig::default()
    })
    .unwrap();
    for i in 0..4 {
        let np = dock::NewPatient {
            first_name: "A".into(),
            last_name: "B".into(),
            mrn: format!("30{i}"),
            ..Default::default()
        };
        client.create_patient(&s, &np).await.unwrap();
    }
    sim.reset_calls();
    // Four patients to a page of one (asked [0, 1]): more than asked, so positions are
    // ignored and the answer was whole.
    assert_eq!(client.list_patients(&s).await.unwrap().len(), 4);
    assert_eq!(sim.calls_to("GET", "/api/v1/patient").len(), 1);
}
