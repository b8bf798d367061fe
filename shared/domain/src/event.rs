//! Change events: what the poller hands to the task-creation function.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kareo::Family;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What happened to a record.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ChangeKind {
    /// The record did not exist at the previous poll.
    Created,
    /// The record existed and changed.
    Updated,
    /// The record was deleted (appointments: `IsDeleted` on re-check).
    Deleted,
}

impl ChangeKind {
    /// `created`, `updated` or `deleted`, as in the mapping's `on:`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One member that changed since the last version handed off.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Kareo's member name.
    pub field: String,
    /// Value in the last version handed off (`None`: absent).
    pub before: Option<String>,
    /// Value now (`None`: absent).
    pub after: Option<String>,
}

/// A change event (DESIGN.md §3). Holds PHI: its `Debug` shows ids only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Deterministic id: the same Kareo change always yields the same id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Family.
    pub family: Family,
    /// The record's id.
    pub record_id: String,
    /// The record's version (last-modified instant, UTC).
    pub version: DateTime<Utc>,
    /// Created, updated or deleted.
    pub kind: ChangeKind,
    /// Members changed since the last version handed off (empty when there was none).
    #[serde(default)]
    pub changes: Vec<FieldChange>,
    /// The record's simple members.
    pub record: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChangeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeEvent")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("family", &self.family)
            .field("record_id", &self.record_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The deterministic id of a change: a digest of tenant, family, record id, version and kind.
pub fn event_id(
    tenant: &str,
    family: Family,
    record_id: &str,
    version: DateTime<Utc>,
    kind: ChangeKind,
) -> String {
    digest(
        [
            tenant,
            family.name(),
            record_id,
            &version.to_rfc3339_opts(SecondsFormat::Millis, true),
            if kind == ChangeKind::Deleted {
                "deleted"
            } else {
                ""
            },
        ]
        .map(str::as_bytes),
    )
}

/// The id of a change that Kareo did not stamp with a new version (stamps of one day, or of
/// one second, look alike): [`event_id`] with a digest of the record's members, so that the
/// same content read again dedupes and a different content is a new change.
pub fn revision_id(
    tenant: &str,
    family: Family,
    record_id: &str,
    version: DateTime<Utc>,
    record: &BTreeMap<String, String>,
) -> String {
    let base = event_id(tenant, family, record_id, version, ChangeKind::Updated);
    digest(
        std::iter::once(base.as_bytes()).chain(
            record
                .iter()
                .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]),
        ),
    )
}

/// The product's one digest: the first 16 bytes of a SHA-256 over `parts`, each followed by a
/// 0 byte, in hex. Event ids, content digests and credential fingerprints are made of it.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part);
        h.update([0u8]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The members that differ between two versions of a record.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            out.push(FieldChange {
                field: k.clone(),
                before: before.get(k).cloned(),
                after: Some(v.clone()),
            });
        }
    }
    for (k, v) in before {
        if !after.contains_key(k) {
            out.push(FieldChange {
                field: k.clone(),
                before: Some(v.clone()),
                after: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let t: DateTime<Utc> = "2026-09-23T17:00:00Z".parse().unwrap();
        let a = event_id("acme", Family::Patients, "11", t, ChangeKind::Updated);
        assert_eq!(
            a,
            event_id("acme", Family::Patients, "11", t, ChangeKind::Created)
        );
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            event_id(
                "acme",
                Family::Patients,
                "11",
                t + chrono::Duration::seconds(1),
                ChangeKind::Updated
            )
        );
        assert_ne!(
            a,
            event_id("acme", Family::Patients, "11", t, ChangeKind::Deleted)
        );
        assert_ne!(
            a,
            event_id("acme2", Family::Patients, "11", t, ChangeKind::Updated)
        );
        assert_ne!(
            a,
            event_id("acme", Family::Payments, "11", t, ChangeKind::Updated)
        );
    }

    #[test]
    fn diff_lists_changed_added_and_removed_members() {
        let b: BTreeMap<String, String> = [("A", "1"), ("B", "2"), ("C", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let a: BTreeMap<String, String> = [("A", "1"), ("B", "9"), ("D", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = diff(&b, &a);
        let names: Vec<_> = d.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(names, ["B", "D", "C"]);
        assert_eq!(d[0].before.as_deref(), Some("2"));
        assert_eq!(d[2].after, None);
    }
}
