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
