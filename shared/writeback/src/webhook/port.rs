//! The Dock port of the webhook endpoint: the three reads a delivery needs (the task, its
//! patient, the task lists), and the event log the catch-up reads. The handler reaches Dock only through it, so it is tested with a
//! scripted Dock as well as against the simulator.

use chrono::{DateTime, Utc};
use dock::{DockClient, DockError, DockSecret, Patient, Task, TaskList};
use futures_util::future::BoxFuture;

/// Reads Dock.
pub trait DockReads: Send + Sync {
    /// A task by id.
    fn task<'a>(
        &'a self,
        secret: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Task, DockError>>;
    /// A patient by id.
    fn patient<'a>(
        &'a self,
        secret: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Patient, DockError>>;
    /// The organisation's task lists.
    fn task_lists<'a>(
        &'a self,
        secret: &'a DockSecret,
    ) -> BoxFuture<'a, Result<Vec<TaskList>, DockError>>;
    /// The organisation's events of one type created in `[start, end)`, raw as Dock
    /// returns them.
    fn events<'a>(
        &'a self,
        secret: &'a DockSecret,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, DockError>>;
}

impl DockReads for DockClient {
    fn task<'a>(
        &'a self,
        secret: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Task, DockError>> {
        Box::pin(self.get_task(secret, id))
    }

    fn patient<'a>(
        &'a self,
        secret: &'a DockSecret,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Patient, DockError>> {
        Box::pin(self.get_patient(secret, id))
    }

    fn task_lists<'a>(
        &'a self,
        secret: &'a DockSecret,
    ) -> BoxFuture<'a, Result<Vec<TaskList>, DockError>> {
        Box::pin(self.list_task_lists(secret))
    }

    fn events<'a>(
        &'a self,
        secret: &'a DockSecret,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, DockError>> {
        Box::pin(self.list_events(secret, start, end, Some(event_type)))
    }
}
