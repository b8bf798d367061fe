//! The metrics of a delivery (see [`domain::metrics`] for the table and the format).

use domain::metrics::Emf;

use crate::deliver::Delivered;

/// The metrics of one delivery (the task function's invocation).
pub fn delivery(d: &Delivered) -> Emf {
    Emf::new(vec![("Function", "task".to_string())])
        .put("TasksCreated", "Count", d.tasks as f64)
        .put("WorkflowsDeployed", "Count", d.workflows as f64)
        .put("DuplicatesAvoided", "Count", d.duplicates as f64)
        .put("TaskFailures", "Count", d.failures.len() as f64)
}

/// The change → task latencies of one delivery, one record per (tenant, family) — dimensions
/// `Function`, `Tenant`, `Family`, rolled up by `Family` — every value a datapoint.
pub fn latencies(d: &Delivered) -> Vec<Emf> {
    let mut by: std::collections::BTreeMap<(&str, kareo::Family), Vec<f64>> = Default::default();
    for (t, f, s) in &d.latencies {
        by.entry((t.as_str(), *f)).or_default().push(*s);
    }
    by.into_iter()
        .map(|((t, f), v)| {
            Emf::new(vec![
                ("Function", "task".to_string()),
                ("Tenant", t.to_string()),
                ("Family", f.name().to_string()),
            ])
            .put_all("ChangeToTaskSeconds", "Seconds", &v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_one_record_per_family_with_every_value() {
        let d = Delivered {
            latencies: vec![
                ("acme".into(), kareo::Family::Appointments, 120.0),
                ("acme".into(), kareo::Family::Patients, 300.5),
                ("acme".into(), kareo::Family::Appointments, 240.0),
            ],
            ..Delivered::default()
        };
        let lines: Vec<serde_json::Value> = latencies(&d)
            .iter()
            .map(|e| serde_json::from_str(&e.line(chrono::Utc::now())).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let of = |f: &str| lines.iter().find(|l| l["Family"] == f).unwrap().clone();
        let a = of("appointments");
        assert_eq!(a["Tenant"], "acme");
        assert_eq!(
            a["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Function", "Tenant", "Family"], ["Family"]])
        );
        assert_eq!(a["ChangeToTaskSeconds"], serde_json::json!([120.0, 240.0]));
        assert_eq!(
            a["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "ChangeToTaskSeconds"
        );
        assert_eq!(
            of("patients")["ChangeToTaskSeconds"],
            serde_json::json!([300.5])
        );
        assert!(latencies(&Delivered::default()).is_empty());
    }
}
