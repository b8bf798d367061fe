//! Metrics in CloudWatch's Embedded Metric Format: one JSON line on stdout per poll run and per
//! delivery, which Lambda's log pipeline turns into metrics in the `KareoDock` namespace without
//! an API call. Dimensions are the tenant id and the family — never record content.
//!
//! | metric | unit | from |
//! | --- | --- | --- |
//! | `RecordsSeen` | Count | a poll run: records read |
//! | `EventsHandedOff` | Count | a poll run: change events handed to the task function |
//! | `DuplicatesSkipped` | Count | a poll run: records whose version was already handed off |
//! | `WindowSplits` | Count | a poll run: windows split after a failure or a too-large answer |
//! | `Throttles` | Count | a poll run that failed on Kareo's throttle |
//! | `Errors` | Count | a failed poll run (dimension `ErrorClass`) |
//! | `LagSeconds` | Seconds | a poll run: now − the cursor position (the lag alarm's input) |
//! | `TasksCreated`, `WorkflowsDeployed`, `DuplicatesAvoided`, `TaskFailures` | Count | a delivery |

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::deliver::Delivered;
use crate::poll::{Outcome, Report};

/// The metric namespace.
pub const NAMESPACE: &str = "KareoDock";

/// One EMF record: dimensions and values.
#[derive(Debug, Clone, Default)]
pub struct Emf {
    dimensions: Vec<(&'static str, String)>,
    values: Vec<(&'static str, &'static str, f64)>,
}

impl Emf {
    /// A record with these dimensions (each also rolled up on its own).
    pub fn new(dimensions: Vec<(&'static str, String)>) -> Emf {
        Emf {
            dimensions,
            values: Vec::new(),
        }
    }

    /// Adds a value.
    pub fn put(mut self, name: &'static str, unit: &'static str, value: f64) -> Emf {
        self.values.push((name, unit, value));
        self
    }

    /// The value of a metric, if put.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|v| v.0 == name).map(|v| v.2)
    }

    /// The JSON line.
    pub fn line(&self, at: DateTime<Utc>) -> String {
        let names: Vec<&str> = self.dimensions.iter().map(|d| d.0).collect();
        // The full set, and the last dimension alone (e.g. per family across tenants).
        let mut sets = vec![names.clone()];
        if names.len() > 1 {
            sets.push(vec![names[names.len() - 1]]);
        }
        let metrics: Vec<Value> = self
            .values
            .iter()
            .map(|(n, u, _)| json!({"Name": n, "Unit": u}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": metrics,
                }]
            }),
        );
        for (k, v) in &self.dimensions {
            root.insert((*k).into(), Value::String(v.clone()));
        }
        for (n, _, v) in &self.values {
            root.insert((*n).into(), json!(v));
        }
        Value::Object(root).to_string()
    }
}

/// The metrics of one poll run.
pub fn poll_run(report: &Report, now: DateTime<Utc>) -> Emf {
    let mut dims = vec![
        ("Tenant", report.tenant.clone()),
        ("Family", report.family.name().to_string()),
    ];
    if let Outcome::Failed { class, .. } = &report.outcome {
        dims.insert(1, ("ErrorClass", class.clone()));
    }
    let mut m = Emf::new(dims)
        .put("RecordsSeen", "Count", report.records as f64)
        .put("EventsHandedOff", "Count", report.events as f64)
        .put("DuplicatesSkipped", "Count", report.duplicates as f64)
        .put("WindowSplits", "Count", report.splits as f64);
    if let Outcome::Failed { class, .. } = &report.outcome {
        m = m.put("Errors", "Count", 1.0);
        if class == "throttled" {
            m = m.put("Throttles", "Count", 1.0);
        }
    }
    if let Some(p) = report.position {
        let lag = (now - p).num_seconds().max(0);
        m = m.put("LagSeconds", "Seconds", lag as f64);
    }
    m
}

/// The metrics of one delivery (the task function's invocation).
pub fn delivery(d: &Delivered) -> Emf {
    Emf::new(vec![("Function", "task".to_string())])
        .put("TasksCreated", "Count", d.tasks as f64)
        .put("WorkflowsDeployed", "Count", d.workflows as f64)
        .put("DuplicatesAvoided", "Count", d.duplicates as f64)
        .put("TaskFailures", "Count", d.failures.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kareo::Family;

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
            class: "throttled".into(),
            message: "GetPayments: 429".into(),
        };
        let m = poll_run(&r, now);
        assert_eq!(m.value("Errors"), Some(1.0));
        assert_eq!(m.value("Throttles"), Some(1.0));
        let v: Value = serde_json::from_str(&m.line(now)).unwrap();
        assert_eq!(v["ErrorClass"], "throttled");
        assert!(
            !m.line(now).contains("GetPayments: 429"),
            "messages are not metrics"
        );
    }
}
