//! Metrics in CloudWatch's Embedded Metric Format: one JSON line on stdout per poll run and per
//! delivery, which Lambda's log pipeline turns into metrics in the `KareoDock` namespace without
//! an API call. Dimensions are the tenant id and the family — never record content. What each
//! job reports is built beside it (`sync::metrics`, `tasks::metrics`).
//!
//! | metric | unit | from |
//! | --- | --- | --- |
//! | `RecordsSeen` | Count | a poll run: records read |
//! | `EventsHandedOff` | Count | a poll run: change events handed to the task function |
//! | `DuplicatesSkipped` | Count | a poll run: records whose version was already handed off |
//! | `WindowSplits` | Count | a poll run: windows split after a failure or a too-large answer |
//! | `Throttles` | Count | a poll run that failed on a throttle (`kareo_throttled`, `store_throttled`, `sink_throttled`) |
//! | `Errors` | Count | a failed poll run (dimension `ErrorClass`) |
//! | `LagSeconds` | Seconds | a poll run: now − the cursor position (the lag alarm's input) |
//! | `TasksCreated`, `WorkflowsDeployed`, `DuplicatesAvoided`, `TaskFailures` | Count | a delivery |
//! | `ChangeToTaskSeconds` | Seconds | a delivery, per family: for each task created or workflow deployed, its record's Kareo version stamp to its creation in Dock (every value, so CloudWatch's percentiles are exact) |

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// The metric namespace.
pub const NAMESPACE: &str = "KareoDock";

/// One EMF record: dimensions and values.
#[derive(Debug, Clone, Default)]
pub struct Emf {
    dimensions: Vec<(&'static str, String)>,
    values: Vec<(&'static str, &'static str, f64)>,
    arrays: Vec<(&'static str, &'static str, Vec<f64>)>,
}

impl Emf {
    /// A record with these dimensions (each also rolled up on its own).
    pub fn new(dimensions: Vec<(&'static str, String)>) -> Emf {
        Emf {
            dimensions,
            values: Vec::new(),
            arrays: Vec::new(),
        }
    }

    /// Adds a value.
    pub fn put(mut self, name: &'static str, unit: &'static str, value: f64) -> Emf {
        self.values.push((name, unit, value));
        self
    }

    /// Adds every value of one metric (EMF takes an array: each is a datapoint, so
    /// percentiles see them all). Nothing is added for no values.
    pub fn put_all(mut self, name: &'static str, unit: &'static str, values: &[f64]) -> Emf {
        if !values.is_empty() {
            self.arrays.push((name, unit, values.to_vec()));
        }
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
            .chain(
                self.arrays
                    .iter()
                    .map(|(n, u, _)| json!({"Name": n, "Unit": u})),
            )
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
        for (n, _, v) in &self.arrays {
            root.insert((*n).into(), json!(v));
        }
        Value::Object(root).to_string()
    }
}
