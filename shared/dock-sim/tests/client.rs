//! The `dock` client against the simulator: tokens, headers, retries, ambiguity, errors and
//! every typed call.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use dock::{
    DeployWorkflow, DockClient, DockConfig, DockError, DockSecret, MetaDataValue, NewPatient,
    NewTask, PatientPatch, Priority, Ref, RetryPolicy, TaskPatch, TaskQuery, TaskStatus,
};
use dock_sim::{DockSim, Fault, FaultRule, Seed};

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 4,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_total: Duration::from_secs(10),
        max_retry_after: Duration::from_secs(5),
    }
}

fn config(sim: &DockSim) -> DockConfig {
    DockConfig {
        api_url: sim.api_url(),
        auth_url: sim.auth_url(),
        timeout: Duration::from_secs(5),
        retry: fast_retry(),
        rate_per_sec: 0,
        ..DockConfig::default()
    }
}

async fn setup() -> (DockSim, DockClient, DockSecret) {
    let sim = DockSim::start(Seed::default()).await;
    let client = DockClient::new(config(&sim)).unwrap();
    let secret = sim.secret();
    (sim, client, secret)
}

/// The statuses answered, in order. A client's first read of a list asks for a second page,
/// which the whole-array simulator answers with the same items (the client then reads that
/// list in one call): one more 200 than the exchange under test.
fn statuses(sim: &DockSim, method: &str, pattern: &str) -> Vec<u16> {
    sim.calls_to(method, pattern)
        .iter()
        .map(|c| c.status)
        .collect()
}

#[tokio::test]
async fn token_is_cached_and_refreshed_before_expiry() {
    let (sim, client, secret) = setup().await;
    sim.set_token_ttl(Duration::from_secs(1));
    for _ in 0..3 {
        client.list_task_lists(&secret).await.unwrap();
    }
    assert_eq!(sim.token_requests(), 1, "one token for three calls");
    // Margin = min(60 s, ttl/2) = 500 ms: at 600 ms the token is replaced before it expires.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.list_users(&secret).await.unwrap();
    assert_eq!(sim.token_requests(), 2);
    // No call was ever refused for an expired token.
    assert!(
        sim.calls().iter().all(|c| c.status == 200),
        "{:?}",
        sim.calls()
    );
    // Another organisation's secret (same client id) gets its own token.
    let other = DockSecret {
        organization_id: "0a0c0000-0000-4000-8000-00000000b002".into(),
        ..secret.clone()
    };
    let e = client.list_users(&other).await.unwrap_err();
    assert_eq!(sim.token_requests(), 3);
    assert_eq!(e.class(), "auth");
    assert_eq!(e.status(), Some(403));
}

#[tokio::test]
async fn unauthorized_refreshes_the_token_and_retries_once() {
    let (sim, client, secret) = setup().await;
    client.list_users(&secret).await.unwrap();
    sim.inject(FaultRule::new(Fault::ExpireTokens).on("GET", "/api/v1/list"));
    let lists = client.list_task_lists(&secret).await.unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(statuses(&sim, "GET", "/api/v1/list"), vec![401, 200, 200]);

    // Still 401 after the refresh: an auth error after exactly one refresh, no loop.
    sim.reset_calls();
    sim.inject(
        FaultRule::new(Fault::ExpireTokens)
            .on("GET", "/api/v1/user")
            .times(5),
    );
    let e = client.list_users(&secret).await.unwrap_err();
    assert!(matches!(e, DockError::Auth { status: 401, .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(statuses(&sim, "GET", "/api/v1/user"), vec![401, 401]);
    assert_eq!(sim.token_requests(), 3, "one refresh only");
}

#[tokio::test]
async fn expired_token_in_the_simulator_is_refused_and_replaced() {
    let (sim, client, secret) = setup().await;
    client.list_users(&secret).await.unwrap();
    sim.expire_tokens();
    client.list_users(&secret).await.unwrap();
    assert_eq!(
        statuses(&sim, "GET", "/api/v1/user"),
        vec![200, 200, 401, 200]
    );
}

#[tokio::test]
async fn the_four_headers_are_required() {
    let (sim, client, secret) = setup().await;
    // The client's calls pass: it sends all four.
    client.list_users(&secret).await.unwrap();

    // Raw requests with one header missing or wrong each fail as the docs suggest.
    let http = https::client();
    let tok: serde_json::Value = http
        .post(format!("{}/oauth2/token", sim.auth_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", secret.client_id.as_str()),
            ("client_secret", secret.client_secret.as_str()),
            ("scope", dock::SCOPES),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 300);
    let token = tok["access_token"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/user", sim.api_url());
    let full = [
        ("x-api-key", secret.api_key.clone()),
        ("authorization", format!("Bearer {token}")),
        ("x-user-id", secret.user_id.clone()),
        ("x-organization-id", secret.organization_id.clone()),
    ];
    let send = |skip: Option<&str>, replace: Option<(&str, &str)>| {
        let mut req = http.get(&url);
        for (k, v) in &full {
            if Some(*k) == skip {
                continue;
            }
            let v = match replace {
                Some((rk, rv)) if rk == *k => rv.to_string(),
                _ => v.clone(),
            };
            req = req.header(*k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(None, None).await, 200);
    assert_eq!(
        send(None, Some(("authorization", token.as_str()))).await,
        200,
        "raw token"
    );
    assert_eq!(send(Some("x-api-key"), None).await, 403);
    assert_eq!(send(None, Some(("x-api-key", "nope"))).await, 403);
    assert_eq!(send(Some("authorization"), None).await, 401);
    assert_eq!(
        send(None, Some(("authorization", "Bearer forged"))).await,
        401
    );
    assert_eq!(send(Some("x-user-id"), None).await, 400);
    assert_eq!(send(Some("x-organization-id"), None).await, 400);
    assert_eq!(
        send(
            None,
            Some(("x-organization-id", "0a0c0000-0000-4000-8000-00000000dead"))
        )
        .await,
        403
    );
    assert_eq!(
        send(
            None,
            Some(("x-user-id", "0a0c0000-0000-4000-8000-00000000beef"))
        )
        .await,
        403
    );

    // Through the client: a wrong API key is an auth error with the gateway body.
    let bad_key = DockSecret {
        api_key: "wrong".into(),
        ..secret.clone()
    };
    let e = client.list_users(&bad_key).await.unwrap_err();
    assert!(matches!(e, DockError::Auth { status: 403, .. }), "{e:?}");
    assert_eq!(e.dock_message(), Some("Forbidden"));
    // A wrong client secret is a token error; the API is not called.
    let before = sim.calls_to("GET", "/api/v1/**").len();
    let bad_secret = DockSecret {
        client_id: "other-client".into(),
        client_secret: "wrong".into(),
        ..secret.clone()
    };
    let e = client.list_users(&bad_secret).await.unwrap_err();
    match &e {
        DockError::Token { status, code, .. } => {
            assert_eq!(*status, Some(400));
            assert_eq!(code.as_deref(), Some("invalid_client"));
        }
        other => panic!("expected a token error, got {other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("wrong"));
    assert_eq!(sim.calls_to("GET", "/api/v1/**").len(), before);
}

#[tokio::test]
async fn rate_limit_storm_honours_retry_after() {
    let (sim, client, secret) = setup().await;
    sim.inject(
        FaultRule::new(Fault::RateLimit {
            retry_after_secs: Some(1),
        })
        .on("GET", "/api/v1/user")
        .times(2),
    );
    let started = Instant::now();
    let users = client.list_users(&secret).await.unwrap();
    let took = started.elapsed();
    assert_eq!(users.len(), 4);
    assert_eq!(
        statuses(&sim, "GET", "/api/v1/user"),
        vec![429, 429, 200, 200]
    );
    // The backoff alone would be ≤ 100 ms; Retry-After: 1 twice makes it ≥ 2 s.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn rate_limit_beyond_the_policy_is_returned_with_retry_after() {
    let (sim, client, secret) = setup().await;
    // Retry-After longer than max_retry_after (5 s): not waited for.
    sim.inject(
        FaultRule::new(Fault::RateLimit {
            retry_after_secs: Some(120),
        })
        .on("GET", "/api/v1/user"),
    );
    let started = Instant::now();
    let e = client.list_users(&secret).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(e.class(), "rate_limited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    assert!(e.is_retryable() && !e.is_ambiguous());
    // Without Retry-After, a storm longer than the retries gives up after max_retries + 1.
    sim.reset_calls();
    sim.inject(
        FaultRule::new(Fault::RateLimit {
            retry_after_secs: None,
        })
        .on("GET", "/api/v1/user")
        .times(10),
    );
    let e = client.list_users(&secret).await.unwrap_err();
    assert_eq!(e.class(), "rate_limited");
    assert_eq!(statuses(&sim, "GET", "/api/v1/user"), vec![429; 5]);
}

#[tokio::test]
async fn a_create_refused_with_429_is_retried() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Front Desk").unwrap();
    sim.inject(
        FaultRule::new(Fault::RateLimit {
            retry_after_secs: None,
        })
        .on("POST", "/api/v1/task"),
    );
    let t = client
        .create_task(&secret, &NewTask::new("Call back", list))
        .await
        .unwrap();
    assert_eq!(statuses(&sim, "POST", "/api/v1/task"), vec![429, 200]);
    assert_eq!(sim.tasks().len(), 1);
    assert_eq!(sim.tasks()[0].id, t.id);
}

#[tokio::test]
async fn server_errors_are_retried_for_reads() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Billing").unwrap();
    sim.inject(
        FaultRule::new(Fault::ServerError)
            .on("GET", "/api/v1/task/group")
            .times(2),
    );
    let groups = client.list_task_groups(&secret, &list).await.unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        statuses(&sim, "GET", "/api/v1/task/group"),
        vec![500, 500, 200, 200]
    );
    sim.inject(
        FaultRule::new(Fault::Status(503))
            .on("GET", "/api/v1/configuration/field")
            .times(1),
    );
    assert_eq!(client.list_custom_fields(&secret).await.unwrap().len(), 3);
    assert_eq!(
        statuses(&sim, "GET", "/api/v1/configuration/field"),
        vec![503, 200]
    );
    // PATCH is idempotent: retried too.
    let t = client
        .create_task(&secret, &NewTask::new("x", list.clone()))
        .await
        .unwrap();
    sim.inject(FaultRule::new(Fault::ServerError).on("PATCH", "/api/v1/task/*"));
    let p = client
        .patch_task(
            &secret,
            &t.id,
            &TaskPatch {
                status: Some(TaskStatus::Complete),
                ..TaskPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.status, Some(TaskStatus::Complete));
    assert_eq!(statuses(&sim, "PATCH", "/api/v1/task/*"), vec![500, 200]);
}

#[tokio::test]
async fn a_create_answered_500_is_ambiguous_and_not_retried() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Front Desk").unwrap();
    sim.inject(FaultRule::new(Fault::ServerError).on("POST", "/api/v1/task"));
    let e = client
        .create_task(&secret, &NewTask::new("Call back", list))
        .await
        .unwrap_err();
    assert!(e.is_ambiguous() && e.is_retryable(), "{e:?}");
    assert_eq!(e.status(), Some(500));
    assert_eq!(statuses(&sim, "POST", "/api/v1/task"), vec![500]);
}

#[tokio::test]
async fn a_create_that_times_out_after_commit_is_ambiguous_and_not_retried() {
    let sim = DockSim::start(Seed::default()).await;
    let client = DockClient::new(DockConfig {
        timeout: Duration::from_millis(300),
        ..config(&sim)
    })
    .unwrap();
    let secret = sim.secret();
    let list = sim.list_id("Front Desk").unwrap();
    let field = sim.field_id("Kareo Ref").unwrap();
    client.list_users(&secret).await.unwrap(); // token fetched outside the timed call
    sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_millis(800)))
            .on("POST", "/api/v1/task"),
    );
    let mut task = NewTask::new("Call patient about results", list.clone());
    task.task_meta_data = vec![MetaDataValue::text(&field, "kareo:1:appt:42:confirm")];
    let e = client.create_task(&secret, &task).await.unwrap_err();
    assert!(matches!(e, DockError::Timeout { sent: true, .. }), "{e:?}");
    assert!(e.is_ambiguous());
    assert!(!e.to_string().contains("results"));
    // Exactly one POST reached the simulator, and it holds exactly one task.
    assert_eq!(sim.calls_to("POST", "/api/v1/task").len(), 1);
    assert_eq!(sim.tasks().len(), 1);
    // The caller reconciles by the stamped reference.
    let found: Vec<_> = client
        .list_tasks(&secret, &TaskQuery::list(&list))
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.meta_text(&field) == Some("kareo:1:appt:42:confirm"))
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, sim.tasks()[0].id);

    // The same fault on a read: retried, and the read succeeds.
    sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_millis(800)))
            .on("GET", "/api/v1/task/*"),
    );
    let t = client.get_task(&secret, &found[0].id).await.unwrap();
    assert_eq!(t.id, found[0].id);
    assert_eq!(sim.calls_to("GET", "/api/v1/task/*").len(), 2);
}

#[tokio::test]
async fn error_bodies_are_parsed() {
    let (sim, client, secret) = setup().await;
    // Spring-style 404 from the application.
    let e = client
        .get_task_list(&secret, "5d0c0000-0000-4000-8000-0000000fffff")
        .await
        .unwrap_err();
    match &e {
        DockError::NotFound { body, .. } => {
            assert_eq!(body.status, Some(404));
            assert_eq!(body.error.as_deref(), Some("Not Found"));
            assert_eq!(
                body.path.as_deref(),
                Some("/api/v1/list/5d0c0000-0000-4000-8000-0000000fffff")
            );
            assert!(body
                .message
                .as_deref()
                .unwrap()
                .contains("TaskList not found"));
            assert!(body.timestamp.is_some());
        }
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(!e.is_retryable());
    // An injected 404 for a list that exists.
    let list = sim.list_id("Front Desk").unwrap();
    sim.inject(FaultRule::new(Fault::NotFound).on("GET", "/api/v1/list/*"));
    let e = client.get_task_list(&secret, &list).await.unwrap_err();
    assert_eq!(e.class(), "not_found");
    assert_eq!(statuses(&sim, "GET", "/api/v1/list/*").len(), 2);
    // A malformed id: Spring-style 400.
    let e = client.get_task(&secret, "not-a-uuid").await.unwrap_err();
    match &e {
        DockError::Http {
            status: 400, body, ..
        } => {
            assert_eq!(body.error.as_deref(), Some("Bad Request"));
        }
        other => panic!("expected 400, got {other:?}"),
    }
    // A 403 Spring body with its exception name, which is shown; the rest is not.
    let other = sim.list_id("Billing").unwrap();
    let restricted = DockSim::start(Seed {
        lists: vec![dock_sim::SeedList {
            id: Some(other.clone()),
            name: "Private".into(),
            description: None,
            groups: vec![],
            members: Some(vec!["manager@acme.example".into()]),
        }],
        ..Seed::default()
    })
    .await;
    let rc = DockClient::new(config(&restricted)).unwrap();
    let e = rc
        .get_task_list(&restricted.secret(), &other)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("HeyDocAccessDeniedException"), "{e}");
    assert_eq!(
        e.body().unwrap().exception(),
        Some("HeyDocAccessDeniedException")
    );
    // A plain-text gateway error, after the retries run out.
    let no_retry = DockClient::new(DockConfig {
        retry: RetryPolicy::none(),
        ..config(&sim)
    })
    .unwrap();
    sim.inject(FaultRule::new(Fault::Status(502)).on("GET", "/api/v1/user"));
    let e = no_retry.list_users(&secret).await.unwrap_err();
    match &e {
        DockError::Http {
            status: 502, body, ..
        } => {
            assert_eq!(body.raw.as_deref(), Some("Bad Gateway"));
            assert_eq!(body.message, None);
        }
        other => panic!("expected 502, got {other:?}"),
    }
    assert!(e.is_retryable() && e.is_ambiguous());
    // Validation errors never echo the values sent.
    let mut t = NewTask::new("Jane Roe chest pain", list);
    t.patient = Some(Ref::new("5d0c0000-0000-4000-8000-0000000eeeee"));
    let e = client.create_task(&secret, &t).await.unwrap_err();
    assert_eq!(e.class(), "not_found");
    assert!(!format!("{e} {e:?}").contains("Jane"));
    assert_eq!(sim.tasks().len(), 0);
    // A list of tasks needs a filter (checked before any call).
    let e = client
        .list_tasks(&secret, &TaskQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.class(), "request");
}

#[tokio::test]
async fn client_side_rate_limit_spaces_calls() {
    let sim = DockSim::start(Seed::default()).await;
    let client = DockClient::new(DockConfig {
        rate_per_sec: 5,
        ..config(&sim)
    })
    .unwrap();
    let secret = sim.secret();
    let started = Instant::now();
    for _ in 0..7 {
        client.list_users(&secret).await.unwrap();
    }
    // A burst of 5, then one call per 200 ms.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn reference_data_round_trips() {
    let (sim, client, secret) = setup().await;
    let lists = client.list_task_lists(&secret).await.unwrap();
    let names: Vec<&str> = lists.iter().map(|l| l.list_name.as_str()).collect();
    assert_eq!(names, ["Front Desk", "Billing"]);
    let front = &lists[0];
    assert_eq!(Some(front.id.clone()), sim.list_id("Front Desk"));
    assert_eq!(front.active, Some(true));
    assert_eq!(front.list_users.len(), 4);
    assert_eq!(front.list_users[0].user_role.as_deref(), Some("OWNER"));
    let one = client.get_task_list(&secret, &front.id).await.unwrap();
    assert_eq!(&one, front);

    let groups = client.list_task_groups(&secret, &front.id).await.unwrap();
    let g: Vec<(&str, Option<&str>)> = groups
        .iter()
        .map(|g| (g.group_name.as_str(), g.group_id()))
        .collect();
    assert_eq!(g.len(), 3);
    assert_eq!(g[0].0, "Callbacks");
    assert_eq!(
        g[0].1.map(str::to_string),
        sim.group_id("Front Desk", "Callbacks")
    );
    assert_ne!(
        sim.group_id("Front Desk", "Callbacks"),
        sim.group_id("Billing", "Callbacks")
    );
    assert!(groups
        .iter()
        .all(|g| g.task_list_identifier.as_deref() == Some(front.id.as_str())));

    let templates = client.list_workflow_templates(&secret).await.unwrap();
    assert_eq!(templates[0].name, "Reschedule SmartFlow");
    assert_eq!(templates[0].template_type.as_deref(), Some("SMARTFLOW"));
    assert_eq!(
        Some(templates[0].id.clone()),
        sim.template_id("Reschedule SmartFlow")
    );

    let users = client.list_users(&secret).await.unwrap();
    assert_eq!(users.len(), 4);
    assert!(users
        .iter()
        .all(|u| u.id.is_none() && u.identifier.is_some()));
    let fd = client
        .find_user_by_email(&secret, "  FrontDesk@ACME.example ")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fd.user_id().map(str::to_string),
        sim.user_id("frontdesk@acme.example")
    );
    assert!(client
        .find_user_by_email(&secret, "nobody@acme.example")
        .await
        .unwrap()
        .is_none());

    let fields = client.list_custom_fields(&secret).await.unwrap();
    let kref = fields.iter().find(|f| f.name == "Kareo Ref").unwrap();
    assert_eq!(kref.target_type.as_deref(), Some("TASK"));
    assert_eq!(kref.field_type.as_deref(), Some("TEXT"));
    assert_eq!(kref.field_category_type.as_deref(), Some("TASK_CORE"));
}

#[tokio::test]
async fn patients_round_trip() {
    let (sim, client, secret) = setup().await;
    let new = NewPatient {
        first_name: "Jane".into(),
        last_name: "Roe".into(),
        mrn: "K-1001".into(),
        dob: NaiveDate::from_ymd_opt(1980, 2, 29),
        phone_mobile: Some("+15555550100".into()),
        ..NewPatient::default()
    };
    let p = client.create_patient(&secret, &new).await.unwrap();
    assert!(!p.id.is_empty());
    assert_eq!(p.mrn.as_deref(), Some("K-1001"));
    assert_eq!(p.dob.as_deref(), Some("1980-02-29"));
    assert_eq!(p.first_name.as_deref(), Some("Jane"));
    assert_eq!(p.active, Some(true));
    let got = client.get_patient(&secret, &p.id).await.unwrap();
    assert_eq!(got, p);
    let patched = client
        .patch_patient(
            &secret,
            &p.id,
            &PatientPatch {
                last_name: Some("Doe".into()),
                ..PatientPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.last_name.as_deref(), Some("Doe"));
    assert_eq!(patched.first_name.as_deref(), Some("Jane"), "untouched");
    let found = client
        .find_patients_by_mrn(&secret, " K-1001 ")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, p.id);
    assert!(client
        .find_patients_by_mrn(&secret, "K-1002")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(client.list_patients(&secret).await.unwrap().len(), 1);
    assert_eq!(sim.patients().len(), 1);
    assert_eq!(sim.patients()[0].last_name.as_deref(), Some("Doe"));
    // MRN is required by the simulator ([A]).
    let e = client
        .create_patient(
            &secret,
            &NewPatient {
                first_name: "A".into(),
                last_name: "B".into(),
                ..NewPatient::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_ambiguous());
    assert_eq!(sim.patients().len(), 1);
}

#[tokio::test]
async fn tasks_round_trip_and_soft_delete() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Front Desk").unwrap();
    let group = sim.group_id("Front Desk", "Callbacks").unwrap();
    let field = sim.field_id("Kareo Ref").unwrap();
    let assignee = sim.user_id("frontdesk@acme.example").unwrap();
    let patient = client
        .create_patient(
            &secret,
            &NewPatient {
                first_name: "Jane".into(),
                last_name: "Roe".into(),
                mrn: "K-7".into(),
                ..NewPatient::default()
            },
        )
        .await
        .unwrap();
    let due = dock::model::parse_datetime("2026-11-02T14:00:00Z").unwrap();
    let new = NewTask {
        description: "Confirm appointment".into(),
        task_list: Ref::new(&list),
        task_group: Some(Ref::new(&group)),
        patient: Some(Ref::new(&patient.id)),
        details: Some("Appointment 42".into()),
        priority: Some(Priority::High),
        due_date: Some(due),
        assigned_to: Some(Ref::new(&assignee)),
        assignees: Vec::new(),
        task_meta_data: vec![MetaDataValue::text(&field, "kareo:1:appt:42")],
        identifier: None,
    };
    let t = client.create_task(&secret, &new).await.unwrap();
    assert_eq!(t.description.as_deref(), Some("Confirm appointment"));
    assert_eq!(t.status, Some(TaskStatus::Incomplete));
    assert_eq!(t.priority, Some(Priority::High));
    assert_eq!(t.due(), Some(due));
    assert_eq!(t.task_list.as_ref().unwrap().id, list);
    assert_eq!(t.group_id(), Some(group.as_str()));
    assert_eq!(t.task_groups[0].group_name, "Callbacks");
    assert_eq!(t.patient.as_ref().unwrap().id, patient.id);
    assert_eq!(t.assigned_to.as_ref().unwrap().id, assignee);
    assert_eq!(t.creator.as_ref().unwrap().id, secret.user_id);
    assert_eq!(t.meta_text(&field), Some("kareo:1:appt:42"));
    assert_eq!(
        t.task_meta_data[0].custom_field_name.as_deref(),
        Some("Kareo Ref")
    );
    assert!(t.created_date_time.is_some());

    assert_eq!(client.get_task(&secret, &t.id).await.unwrap(), t);
    let by_patient = client
        .list_tasks(
            &secret,
            &TaskQuery {
                patient: Some(patient.id.clone()),
                ..TaskQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_patient.len(), 1);
    let other = client
        .create_task(&secret, &NewTask::new("Second", &list))
        .await
        .unwrap();
    assert_eq!(
        client
            .list_tasks(&secret, &TaskQuery::list(&list))
            .await
            .unwrap()
            .len(),
        2
    );
    let billing = sim.list_id("Billing").unwrap();
    assert!(client
        .list_tasks(&secret, &TaskQuery::list(&billing))
        .await
        .unwrap()
        .is_empty());

    let done = client
        .patch_task(
            &secret,
            &t.id,
            &TaskPatch {
                status: Some(TaskStatus::Complete),
                task_meta_data: Some(vec![MetaDataValue::text(&field, "kareo:1:appt:42:v2")]),
                ..TaskPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, Some(TaskStatus::Complete));
    assert!(done.completed_dt.is_some());
    assert_eq!(done.description.as_deref(), Some("Confirm appointment"));
    assert_eq!(done.meta_text(&field), Some("kareo:1:appt:42:v2"));
    assert_eq!(done.task_meta_data.len(), 1);

    // A group of another list is refused.
    let mut wrong = NewTask::new("x", &list);
    wrong.task_group = Some(Ref::new(sim.group_id("Billing", "Claims").unwrap()));
    assert_eq!(
        client
            .create_task(&secret, &wrong)
            .await
            .unwrap_err()
            .class(),
        "not_found"
    );

    // Soft delete: readable by id with active:false, dropped from lists unless asked for.
    client.delete_task(&secret, &other.id).await.unwrap();
    let gone = client.get_task(&secret, &other.id).await.unwrap();
    assert_eq!(gone.active, Some(false));
    assert!(!gone.is_active());
    let live = client
        .list_tasks(&secret, &TaskQuery::list(&list))
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, t.id);
    let all = client
        .list_tasks(
            &secret,
            &TaskQuery {
                include_inactive: true,
                ..TaskQuery::list(&list)
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        client
            .delete_task(&secret, &other.id)
            .await
            .unwrap_err()
            .class(),
        "not_found"
    );
    assert_eq!(sim.tasks().len(), 2);
    assert_eq!(sim.tasks()[1].active, Some(false));
}

#[tokio::test]
async fn workflows_deploy_and_rename() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Front Desk").unwrap();
    let group = sim.group_id("Front Desk", "Reschedules").unwrap();
    let template = sim.template_id("Reschedule SmartFlow").unwrap();
    let patient = client
        .create_patient(
            &secret,
            &NewPatient {
                first_name: "A".into(),
                last_name: "B".into(),
                mrn: "K-9".into(),
                ..NewPatient::default()
            },
        )
        .await
        .unwrap();
    let w = client
        .deploy_workflow(
            &secret,
            &DeployWorkflow {
                task_list: Ref::new(&list),
                task_group: Ref::new(&group),
                task_workflow_template: Ref::new(&template),
                patient: Some(Ref::new(&patient.id)),
            },
        )
        .await
        .unwrap();
    assert_eq!(w.name.as_deref(), Some("Reschedule SmartFlow"));
    assert_eq!(w.tasks.len(), 2);
    assert_eq!(w.task_workflow_template.as_ref().unwrap().id, template);
    for t in &w.tasks {
        assert_eq!(t.task_workflow.as_ref().unwrap().id, w.id);
        assert_eq!(t.patient.as_ref().unwrap().id, patient.id);
        assert_eq!(t.group_id(), Some(group.as_str()));
    }
    let renamed = client
        .rename_workflow(&secret, &w.id, "Reschedule – K-9 – 2026-11-02")
        .await
        .unwrap();
    assert_eq!(
        renamed.name.as_deref(),
        Some("Reschedule – K-9 – 2026-11-02")
    );
    // An ad-hoc task can join the deployed workflow, using its id as the group.
    let mut extra = NewTask::new("Extra step", &list);
    extra.task_group = Some(Ref::new(&w.id));
    client.create_task(&secret, &extra).await.unwrap();
    assert_eq!(sim.workflows().len(), 1);
    assert_eq!(sim.workflows()[0].name, renamed.name);
    assert_eq!(sim.tasks().len(), 3);
    // Deploy is a create: a timeout after commit is ambiguous and not re-posted.
    let quick = DockClient::new(DockConfig {
        timeout: Duration::from_millis(300),
        ..config(&sim)
    })
    .unwrap();
    quick.list_users(&secret).await.unwrap();
    sim.inject(
        FaultRule::new(Fault::TimeoutAfterCommit(Duration::from_millis(800)))
            .on("POST", "/api/v1/taskWorkflow"),
    );
    let e = quick
        .deploy_workflow(
            &secret,
            &DeployWorkflow {
                task_list: Ref::new(&list),
                task_group: Ref::new(&group),
                task_workflow_template: Ref::new(&template),
                patient: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_ambiguous());
    assert_eq!(sim.calls_to("POST", "/api/v1/taskWorkflow").len(), 2);
    assert_eq!(sim.workflows().len(), 2);
    // An unknown template.
    let e = client
        .deploy_workflow(
            &secret,
            &DeployWorkflow {
                task_list: Ref::new(&list),
                task_group: Ref::new(&group),
                task_workflow_template: Ref::new("5d0c0000-0000-4000-8000-0000000fffff"),
                patient: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.class(), "not_found");
}

#[tokio::test]
async fn seeds_load_from_yaml_and_json() {
    let yaml = r#"
organization_id: 11111111-2222-4333-8444-555555555555
integration_user: bot@clinic.example
token_ttl_secs: 120
users:
  - { email: bot@clinic.example, first_name: Bot, last_name: User }
  - { email: nurse@clinic.example }
lists:
  - name: Nursing
    groups: [Refills]
    members: [bot@clinic.example]
workflow_templates:
  - { name: Refill Flow, template_type: SMARTFLOW, tasks: [Check chart, Call pharmacy] }
custom_fields:
  - { name: Kareo Ref }
"#;
    let seed = Seed::from_yaml(yaml).unwrap();
    assert_eq!(seed.client_id, "sim-client-id");
    assert_eq!(seed.custom_fields[0].target_type, "TASK");
    let json = serde_json::to_string(&seed).unwrap();
    assert_eq!(Seed::from_json(&json).unwrap(), seed);
    assert!(Seed::from_yaml("lists: 3").is_err());

    let sim = DockSim::start(seed).await;
    let client = DockClient::new(config(&sim)).unwrap();
    let secret = sim.secret();
    assert_eq!(
        secret.organization_id,
        "11111111-2222-4333-8444-555555555555"
    );
    assert_eq!(
        Some(secret.user_id.clone()),
        sim.user_id("bot@clinic.example")
    );
    let lists = client.list_task_lists(&secret).await.unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].list_users.len(), 1);
    let groups = client
        .list_task_groups(&secret, &lists[0].id)
        .await
        .unwrap();
    assert_eq!(groups[0].group_name, "Refills");
    let tok: serde_json::Value = https::client()
        .post(format!("{}/oauth2/token", sim.auth_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tok["expires_in"], 120);
}

#[tokio::test]
async fn call_log_holds_no_bodies_and_scopes_are_checked() {
    let (sim, client, secret) = setup().await;
    let list = sim.list_id("Front Desk").unwrap();
    client
        .create_task(&secret, &NewTask::new("Secret text Jane", list))
        .await
        .unwrap();
    let log = format!("{:?}", sim.calls());
    assert!(!log.contains("Jane"), "{log}");
    assert!(!log.contains(&secret.client_secret));
    let calls = sim.calls();
    assert_eq!(calls[0].path, "/oauth2/token");
    assert_eq!(calls[1].method, "POST");
    assert_eq!(calls[1].path, "/api/v1/task");
    assert_eq!(calls[1].status, 200);

    // A token with read scopes only cannot create.
    let http = https::client();
    let tok: serde_json::Value = http
        .post(format!("{}/oauth2/token", sim.auth_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", secret.client_id.as_str()),
            ("client_secret", secret.client_secret.as_str()),
            ("scope", "dockhealth/user.all.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"].as_str().unwrap();
    let req = |m: reqwest::Method, path: &str| {
        http.request(m, format!("{}{path}", sim.api_url()))
            .header("x-api-key", &secret.api_key)
            .header("authorization", token)
            .header("x-user-id", &secret.user_id)
            .header("x-organization-id", &secret.organization_id)
    };
    assert_eq!(
        req(reqwest::Method::GET, "/api/v1/user")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        req(reqwest::Method::GET, "/api/v1/patient")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let s = req(reqwest::Method::POST, "/api/v1/task")
        .json(&serde_json::json!({"description": "x"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 403);
    // An unknown scope is refused by the token endpoint.
    let r = http
        .post(format!("{}/oauth2/token", sim.auth_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", secret.client_id.as_str()),
            ("client_secret", secret.client_secret.as_str()),
            ("scope", "dockhealth/system.developer.read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn a_response_larger_than_the_cap_is_not_read_and_fails_as_decode() {
    let sim = DockSim::start(Seed::default()).await;
    let secret = sim.secret();
    // The token answer fits; the list of lists does not.
    let client = DockClient::new(DockConfig {
        max_body: 400,
        ..config(&sim)
    })
    .unwrap();
    let e = client.list_task_lists(&secret).await.unwrap_err();
    assert_eq!(e.class(), "decode", "{e}");
    assert!(e.to_string().contains("larger than 400 bytes"), "{e}");
    assert!(!e.is_retryable());
    // With the default cap the same read succeeds.
    let ok = DockClient::new(config(&sim)).unwrap();
    assert!(!ok.list_task_lists(&secret).await.unwrap().is_empty());
}
