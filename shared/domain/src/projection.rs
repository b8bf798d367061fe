//! Minimum necessary: what of a family's records a tenant's rules use, and the only part of a
//! record that is carried in a change event or kept in a snapshot.
//!
//! Kareo is asked for every member (an empty `Fields`: whether explicit `true` flags answer a
//! placeholder row instead is conflicting evidence, `kareo-api.md` §3), and each record is
//! projected the moment it is read, before anything copies it:
//!
//! - **carried** (the event's `record`): the members the family's rules name — conditions,
//!   description placeholders, the patient-link members when a rule links patients — plus the
//!   record's identity, version and created members;
//! - **changes**: only the members a transition condition (`changed`, `changed_from`,
//!   `changed_to`) names;
//! - **kept in plain text** (the snapshot): the members a transition condition names (the
//!   "before" of the next change) and the carried members of rules that fire on deletions (a
//!   deletion is handed off from the snapshot, Kareo no longer answers the record). Everything
//!   else the record holds is kept only as one keyed digest (HMAC-SHA256 with a per-tenant key
//!   derived from the account's customer key, which the state store never holds): enough to see
//!   that a record changed under the same version stamp, nothing to read back.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use kareo::{Family, Record};
use sha2::Sha256;

use crate::mapping::On;
use crate::tenant::TenantConfig;

/// The snapshot entry holding the keyed digest of every member not kept in plain text.
pub const REST: &str = "#rest";
/// The snapshot entry naming which members [`REST`] covers (an unkeyed digest of their names):
/// two reads that answer different member sets (GetAllPatients, GetPatients) are not compared.
pub const REST_MEMBERS: &str = "#rest_members";
/// The snapshot entry naming the key of [`REST`] (a digest of it): after the customer key
/// changes, the old digest is not compared.
pub const REST_KEY: &str = "#rest_key";

/// The members a patient link reads: the patient itself (Patients), else its `PatientID`.
fn link_members(family: Family) -> &'static [&'static str] {
    match family {
        Family::Patients => &["ID", "FirstName", "LastName", "DOB"],
        _ => &["PatientID"],
    }
}

/// A tenant's per-tenant digest key (never stored): HMAC-SHA256 keyed by the account's
/// customer key over the tenant id.
#[derive(Clone)]
pub struct DigestKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DigestKey {
    /// The key of `tenant` on the account whose customer key is `customer_key`.
    pub fn derive(customer_key: &str, tenant: &str) -> DigestKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(customer_key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"kareo-dock snapshot digest v1\0");
        mac.update(tenant.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let id = crate::event::digest([b"key id".as_slice(), &key]);
        DigestKey { key, id }
    }
}

/// What of one family's records a tenant's rules use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    /// Members carried in events.
    pub carried: BTreeSet<String>,
    /// Members whose changes are carried (transition conditions).
    pub transitions: BTreeSet<String>,
    /// Members kept in plain text in snapshots.
    pub kept: BTreeSet<String>,
}

impl Projection {
    /// The projection of `family` under `tenant`'s rules.
    pub fn of(tenant: &TenantConfig, family: Family) -> Projection {
        let mut carried: BTreeSet<String> =
            [Some(family.id_member()), Some(family.version_member())]
                .into_iter()
                .chain([family.created_member()])
                .flatten()
                .map(str::to_string)
                .collect();
        let mut transitions = BTreeSet::new();
        let mut on_delete = BTreeSet::new();
        for rule in tenant
            .mapping
            .rules
            .iter()
            .filter(|r| r.interface == family)
        {
            let mut used: BTreeSet<String> = rule.when.iter().map(|(f, _)| f.clone()).collect();
            used.extend(rule.task.description.placeholders().map(str::to_string));
            if rule.task.patient {
                used.extend(link_members(family).iter().map(|m| m.to_string()));
            }
            transitions.extend(
                rule.when
                    .iter()
                    .filter(|(_, c)| c.is_transition())
                    .map(|(f, _)| f.clone()),
            );
            if matches!(rule.on, On::Deleted | On::Any) {
                on_delete.extend(used.iter().cloned());
            }
            carried.extend(used);
        }
        let kept = transitions.union(&on_delete).cloned().collect();
        Projection {
            carried,
            transitions,
            kept,
        }
    }

    /// The record's carried members (what an event holds).
    pub fn carry(&self, rec: &Record) -> BTreeMap<String, String> {
        rec.texts()
            .filter(|(k, _)| self.carried.contains(*k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The snapshot's fields: the kept members (from the carried ones, as handed off) and the
    /// keyed digest of every other member of the record.
    pub fn keep(
        &self,
        rec: &Record,
        carried: &BTreeMap<String, String>,
        key: &DigestKey,
    ) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = carried
            .iter()
            .filter(|(k, _)| self.kept.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.key).expect("any key length");
        let mut names = Vec::new();
        for (k, v) in rec.texts().filter(|(k, _)| !self.kept.contains(*k)) {
            for part in [k.as_bytes(), v.as_bytes()] {
                mac.update(&(part.len() as u64).to_le_bytes());
                mac.update(part);
            }
            names.push(k.as_bytes());
        }
        let rest: String = mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.insert(REST.into(), rest);
        out.insert(REST_MEMBERS.into(), crate::event::digest(names));
        out.insert(REST_KEY.into(), key.id.clone());
        out
    }

    /// Whether a record read again under the same version differs from its snapshot: a kept
    /// member both carry differs, or the digest of the rest (over the same members, under the
    /// same key) does.
    pub fn revised(
        &self,
        snapshot: &BTreeMap<String, String>,
        kept_now: &BTreeMap<String, String>,
    ) -> bool {
        let same = |k: &str| snapshot.get(k).is_some_and(|v| kept_now.get(k) == Some(v));
        let plain = snapshot
            .iter()
            .filter(|(k, _)| !k.starts_with('#'))
            .any(|(k, v)| kept_now.get(k).is_some_and(|n| n != v));
        plain || (same(REST_MEMBERS) && same(REST_KEY) && !same(REST))
    }

    /// What a deletion's event carries: the snapshot's plain-text members that this
    /// projection carries (a snapshot written before projection holds every member).
    pub fn deleted(&self, snapshot: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        Projection::plain(snapshot)
            .into_iter()
            .filter(|(k, _)| self.carried.contains(k))
            .collect()
    }

    /// A snapshot's plain-text members.
    pub fn plain(snapshot: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        snapshot
            .iter()
            .filter(|(k, _)| !k.starts_with('#'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(rules: &str) -> TenantConfig {
        let yaml = format!(
            "tenant: acme\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: k\n  practice: P\ndock:\n  secret: d\nfamilies:\n  patients: {{}}\n  appointments: {{}}\n{rules}"
        );
        TenantConfig::from_yaml(&yaml, "t.yaml").unwrap()
    }

    const RULES: &str = r#"rules:
  - name: moved
    interface: appointments
    on: updated
    when: { ConfirmationStatus: { changed_to: Cancelled }, Type: { equals: New } }
    task: { list: L, description: "Call about {StartDate}", patient: true }
  - name: gone
    interface: appointments
    on: deleted
    task: { list: L, description: "Deleted: {ServiceLocationName}" }
  - name: welcome
    interface: patients
    on: created
    task: { list: L, description: "Welcome {FirstName}" }
"#;

    fn patient(pairs: &[(&str, &str)]) -> Record {
        let mut r = Record::new(Family::Patients.data_type().id());
        for (k, v) in pairs {
            assert!(r.set(k, v), "{k}");
        }
        r
    }

    #[test]
    fn a_family_carries_what_its_rules_name_and_keeps_what_transitions_and_deletions_need() {
        let t = tenant(RULES);
        let a = Projection::of(&t, Family::Appointments);
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            a.carried,
            set(&[
                "ID",
                "CreatedDate",
                "LastModifiedDate",
                "ConfirmationStatus",
                "Type",
                "StartDate",
                "PatientID",
                "ServiceLocationName"
            ])
        );
        assert_eq!(a.transitions, set(&["ConfirmationStatus"]));
        assert_eq!(a.kept, set(&["ConfirmationStatus", "ServiceLocationName"]));
        let p = Projection::of(&t, Family::Patients);
        assert_eq!(
            p.carried,
            set(&["ID", "CreatedDate", "LastModifiedDate", "FirstName"])
        );
        assert!(p.kept.is_empty());
        // A family no rule reads carries its identity only.
        let none = Projection::of(&tenant("rules: []"), Family::Patients);
        assert_eq!(
            none.carried,
            set(&["ID", "CreatedDate", "LastModifiedDate"])
        );
    }

    #[test]
    fn the_rest_is_a_keyed_digest_that_sees_a_change_and_reads_back_nothing() {
        let t = tenant(RULES);
        let p = Projection::of(&t, Family::Patients);
        let key = DigestKey::derive("customer-key", "acme");
        let rec = patient(&[("ID", "7"), ("FirstName", "Ann"), ("SSN", "123-45-6789")]);
        let carried = p.carry(&rec);
        assert_eq!(carried.keys().collect::<Vec<_>>(), ["FirstName", "ID"]);
        let kept = p.keep(&rec, &carried, &key);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            [REST, REST_KEY, REST_MEMBERS]
        );
        assert!(kept
            .values()
            .all(|v| !v.contains("6789") && !v.contains("Ann")));
        assert!(
            !p.revised(&kept, &p.keep(&rec, &carried, &key)),
            "same content"
        );
        // Another SSN under the same stamp: revised.
        let other = patient(&[("ID", "7"), ("FirstName", "Ann"), ("SSN", "123-45-0000")]);
        assert!(p.revised(&kept, &p.keep(&other, &p.carry(&other), &key)));
        // Another key (the customer key changed), or another member set (another read): not
        // compared, so not a change.
        let rekeyed = DigestKey::derive("new-customer-key", "acme");
        assert!(!p.revised(&kept, &p.keep(&other, &p.carry(&other), &rekeyed)));
        let fewer = patient(&[("ID", "7"), ("FirstName", "Ann")]);
        assert!(!p.revised(&kept, &p.keep(&fewer, &p.carry(&fewer), &key)));
        // Per tenant: the same record digests differently for another tenant of the account.
        let other_tenant = DigestKey::derive("customer-key", "zeta");
        assert_ne!(p.keep(&rec, &carried, &other_tenant)[REST], kept[REST]);
        // A snapshot written before projection (every member in plain text) compares by the
        // members both carry.
        let old: BTreeMap<String, String> = [("FirstName", "Ann"), ("SSN", "123-45-6789")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert!(!p.revised(&old, &kept));
        assert_eq!(Projection::plain(&kept), BTreeMap::new());
        // A deletion from a snapshot written before projection carries the projection only.
        let a = Projection::of(&t, Family::Appointments);
        let old_appt: BTreeMap<String, String> = [
            ("ServiceLocationName", "Main"),
            ("Notes", "private"),
            ("ConfirmationStatus", "Scheduled"),
        ]
        .map(|(k, v)| (k.into(), v.into()))
        .into();
        assert_eq!(
            a.deleted(&old_appt).keys().collect::<Vec<_>>(),
            ["ConfirmationStatus", "ServiceLocationName"]
        );
        assert!(!format!("{key:?}").contains("customer"));
    }
}
