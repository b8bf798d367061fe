//! The metrics of a poll run (see [`domain::metrics`] for the table and the format).

use chrono::{DateTime, Utc};
use domain::metrics::Emf;
use domain::ports::ErrorClass;

use crate::poll::{Outcome, Report};

/// The metrics of one poll run.
pub fn poll_run(report: &Report, now: DateTime<Utc>) -> Emf {
    let mut dims = vec![
        ("Tenant", report.tenant.clone()),
        ("Family", report.family.name().to_string()),
    ];
    if let Outcome::Failed { class, .. } = &report.outcome {
        dims.insert(1, ("ErrorClass", class.name().to_string()));
    }
    let mut m = Emf::new(dims)
        .put("RecordsSeen", "Count", report.records as f64)
        .put("EventsHandedOff", "Count", report.events as f64)
        .put("DuplicatesSkipped", "Count", report.duplicates as f64)
        .put("WindowSplits", "Count", report.splits as f64)
        .put("UnreadableVersions", "Count", report.unreadable as f64);
    if let Outcome::Failed { class, .. } = &report.outcome {
        m = m.put("Errors", "Count", 1.0);
        if class.is_throttle() {
            m = m.put("Throttles", "Count", 1.0);
        }
    }
    if report.healed.is_some() {
        // The coverage audit: versions it handed off that no poll had. Anything above zero
        // is an alarm (something upstream is off); the log names the windows.
        m = m.put("AuditHealed", "Count", report.events as f64);
    }
    if matches!(
        report.outcome.class(),
        Some(ErrorClass::KareoCredentials | ErrorClass::KareoBreakerOpen)
    ) {
        m = m.put("BreakerOpen", "Count", 1.0);
    }
    if let Some(p) = report.position {
        let lag = (now - p).num_seconds().max(0);
        m = m.put("LagSeconds", "Seconds", lag as f64);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ports::ErrorClass;
    use kareo::Family;
    use serde_json::{json, Value};

    fn report() -> Report {
        let mut r = Report::skipped("acme", Family::Payments);
        r.outcome = Outcome::Done;
        r.records = 12;
        r.events = 3;
        r.position = Some("2026-10-01T14:00:00Z".parse().unwrap());
        r
    }

    #[test]
    fn a_poll_run_is_one_emf_line_cloudwatch_can_read() {
        let now: DateTime<Utc> = "2026-10-01T15:00:00Z".parse().unwrap();
        let line = poll_run(&report(), now).line(now);
        let v: Value = serde_json::from_str(&line).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "KareoDock");
        assert_eq!(cw["Dimensions"], json!([["Tenant", "Family"], ["Family"]]));
        // Every declared metric has a value at the root, and every dimension too.
        for m in cw["Metrics"].as_array().unwrap() {
            assert!(v[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        assert_eq!(v["Tenant"], "acme");
        assert_eq!(v["Family"], "payments");
        assert_eq!(v["RecordsSeen"], 12.0);
        assert_eq!(v["LagSeconds"], 3600.0);
        assert_eq!(v["_aws"]["Timestamp"], now.timestamp_millis());
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_failed_run_counts_an_error_by_class() {
        let now = Utc::now();
        let mut r = report();
        r.outcome = Outcome::Failed {
            class: ErrorClass::KareoThrottled,
            message: "GetPayments: 429".into(),
        };
        let m = poll_run(&r, now);
        assert_eq!(m.value("Errors"), Some(1.0));
        assert_eq!(m.value("Throttles"), Some(1.0));
        let v: Value = serde_json::from_str(&m.line(now)).unwrap();
        assert_eq!(v["ErrorClass"], "kareo_throttled");
        assert!(
            !m.line(now).contains("GetPayments: 429"),
            "messages are not metrics"
        );
    }
}
