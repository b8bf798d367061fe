//! A family's cadence and a tenant's pause, against the Kareo simulator: a run that is not due
//! reads one cursor and calls Kareo not at all; business hours switch the cadence; a paused
//! tenant is not polled and, resumed, reads what changed meanwhile.

mod support;

use chrono::Duration;
use domain::local::LocalStore;
use domain::ports::{pause_key, Breaker, BreakerStore, CursorStore};
use domain::TenantConfig;
use kareo::Family;
use sync::run::poll_tenants;
use sync::{Mode, Outcome};

use support::{tenant_yaml, world};

fn with(w: &support::World, families: &str, extra: &str) -> TenantConfig {
    let yaml = format!("{}{extra}", tenant_yaml(&w.sim, "acme", families, true));
    TenantConfig::from_yaml(&yaml, "test").unwrap()
}

#[tokio::test]
async fn a_run_sooner_than_the_cadence_is_not_due_and_calls_nothing() {
    let mut w = world("  providers: {}\n").await;
    w.tenant = with(&w, "  providers: { cadence: 1h }\n", "");
    assert_eq!(
        w.run(Family::Providers, Mode::Poll).await.outcome,
        Outcome::Done
    );
    let position = w
        .store
        .load("acme", Family::Providers)
        .await
        .unwrap()
        .unwrap();

    w.sim.reset_calls();
    w.sim.advance(Duration::minutes(10));
    let r = w.run(Family::Providers, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::NotDue);
    assert_eq!(w.sim.calls().len(), 0, "not due: Kareo is not called");
    let after = w
        .store
        .load("acme", Family::Providers)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, position, "not due: the cursor is not written");

    // Other modes ignore the cadence.
    assert_eq!(
        w.run(Family::Providers, Mode::Audit).await.outcome,
        Outcome::Done
    );

    // Within the slack of the hour it is due again, and a change made meanwhile arrives.
    let id = w.sim.rows(Family::Providers)[0]["ID"].clone();
    w.sim
        .update(Family::Providers, &id, &[("FirstName", "Changed")]);
    w.sim.advance(Duration::minutes(49) + Duration::seconds(30));
    let mut seen = w.sink.events().len();
    let r = w.run(Family::Providers, Mode::Poll).await;
    assert_eq!(r.outcome, Outcome::Done);
    assert!(w.take(&mut seen).iter().any(|(rid, _)| *rid == id));
}

#[tokio::test]
async fn business_hours_switch_between_cadence_and_off_hours_cadence() {
    let mut w = world("  appointments: {}\n").await;
    // The simulator starts on a Thursday at 11:00 in New York.
    w.tenant = with(
        &w,
        "  appointments: { cadence: 5m, off_hours_cadence: 1h }\n",
        "business_hours: Mon-Fri 07:00-19:00\n",
    );
    let now = w.sim.now();
    assert_eq!(
        w.tenant.cadence(Family::Appointments, now),
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(
        w.run(Family::Appointments, Mode::Poll).await.outcome,
        Outcome::Done
    );
    w.sim.advance(Duration::minutes(5));
    assert_eq!(
        w.run(Family::Appointments, Mode::Poll).await.outcome,
        Outcome::Done,
        "open: every 5 minutes"
    );

    // 21:00 the same day: closed, hourly.
    w.sim.advance(Duration::hours(10) - Duration::minutes(5));
    assert_eq!(
        w.run(Family::Appointments, Mode::Poll).await.outcome,
        Outcome::Done
    );
    w.sim.advance(Duration::minutes(5));
    assert_eq!(
        w.run(Family::Appointments, Mode::Poll).await.outcome,
        Outcome::NotDue
    );
    w.sim.advance(Duration::minutes(55));
    assert_eq!(
        w.run(Family::Appointments, Mode::Poll).await.outcome,
        Outcome::Done
    );

    // Saturday noon: closed all day.
    let saturday = now + Duration::days(2) + Duration::hours(1);
    assert_eq!(
        w.tenant.cadence(Family::Appointments, saturday),
        Some(std::time::Duration::from_secs(3600))
    );
    // Without business hours an off-hours cadence is a config error.
    let e = TenantConfig::from_yaml(
        &tenant_yaml(
            &w.sim,
            "acme",
            "  appointments: { off_hours_cadence: 1h }\n",
            true,
        ),
        "t",
    )
    .err()
    .expect("an error");
    assert!(e.to_string().contains("needs `business_hours:`"), "{e}");
    let e = TenantConfig::from_yaml(
        &format!(
            "{}business_hours: Mon-Fri 19:00-07:00\n",
            tenant_yaml(&w.sim, "acme", "  appointments: {}\n", true)
        ),
        "t",
    )
    .err()
    .expect("an error");
    assert!(
        e.to_string().contains("closing time must come after"),
        "{e}"
    );
}

#[tokio::test]
async fn a_paused_tenant_is_not_polled_and_resumed_reads_what_changed_meanwhile() {
    let w = world("  providers: {}\n").await;
    let secrets = domain::local::LocalSecrets::from_map(
        [(
            "kareo/acme".to_string(),
            serde_json::to_value(w.creds()).unwrap(),
        )]
        .into(),
    );
    let holds = LocalStore::memory();
    let poll = || async {
        poll_tenants(
            &w.poller(),
            &secrets,
            &holds,
            std::slice::from_ref(&w.tenant),
            Family::Providers,
            None,
            Mode::Poll,
            2,
            None,
        )
        .await
        .remove(0)
    };
    assert_eq!(poll().await.outcome, Outcome::Done);
    let before = w
        .store
        .load("acme", Family::Providers)
        .await
        .unwrap()
        .unwrap();
    holds
        .open_breaker(
            &pause_key("acme"),
            &Breaker {
                fingerprint: String::new(),
                opened_at: w.sim.now(),
                by: "operator".into(),
                reason: "test".into(),
            },
        )
        .await
        .unwrap();
    let id = w.sim.rows(Family::Providers)[0]["ID"].clone();
    w.sim
        .update(Family::Providers, &id, &[("FirstName", "Paused")]);
    w.sim.advance(Duration::hours(2));
    w.sim.reset_calls();
    let r = poll().await;
    assert_eq!(r.outcome, Outcome::Paused);
    assert_eq!(w.sim.calls().len(), 0);
    assert_eq!(
        w.store
            .load("acme", Family::Providers)
            .await
            .unwrap()
            .unwrap(),
        before
    );

    holds.close_breaker(&pause_key("acme")).await.unwrap();
    let mut seen = w.sink.events().len();
    assert_eq!(poll().await.outcome, Outcome::Done);
    assert!(
        w.take(&mut seen).iter().any(|(rid, _)| *rid == id),
        "the change made while paused arrives"
    );
}
