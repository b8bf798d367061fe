//! Kareo's coded values that its reads and writes spell differently. One table each, used by
//! the poller (to hand off names), the write operations (to read back what they wrote) and the
//! config reader (to refuse a value Kareo never returns).

/// Encounter statuses as CreateEncounter and UpdateEncounterStatus take them, with the number
/// GetEncounterDetails answers for each (`kareo-api.md` §7.12: 3 = Approved seen live; the
/// others follow the status list's order in Kareo's guide).
pub const ENCOUNTER_STATUSES: [(&str, &str); 5] = [
    ("Draft", "1"),
    ("Submitted", "2"),
    ("Approved", "3"),
    ("Rejected", "4"),
    ("Unpayable", "5"),
];

/// The name of an encounter status read from Kareo (a number, or already a name, any case);
/// `None` for a code the table does not know.
pub fn encounter_status(read: &str) -> Option<&'static str> {
    let read = read.trim();
    ENCOUNTER_STATUSES
        .iter()
        .find(|(name, code)| read == *code || read.eq_ignore_ascii_case(name))
        .map(|(name, _)| *name)
}

/// The values a record member can take, where Kareo's reads are known to be closed (after
/// [`encounter_status`] names them): `(data type, member) → values`.
pub fn closed_values(data_type: &str, member: &str) -> Option<Vec<&'static str>> {
    match (data_type, member) {
        ("EncounterDetailsData", "EncounterStatus") => {
            Some(ENCOUNTER_STATUSES.iter().map(|(n, _)| *n).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_read_as_names() {
        assert_eq!(encounter_status("3"), Some("Approved"));
        assert_eq!(encounter_status(" rejected "), Some("Rejected"));
        assert_eq!(encounter_status("9"), None);
        assert_eq!(encounter_status("Denied"), None);
    }
}
