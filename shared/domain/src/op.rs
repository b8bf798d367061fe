//! The write operations and the `data` fields each accepts: the vocabulary shared by write
//! commands (`writeback::write::command`) and the webhook rules that build them ([`crate::hooks`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A write operation.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
pub enum Op {
    /// Kareo CreatePatient.
    CreatePatient,
    /// Kareo UpdatePatient (read-modify-write, see `PatientChanges` in `writeback::write::command`).
    UpdatePatient,
    /// Kareo CreateAppointment.
    CreateAppointment,
    /// Kareo DeleteAppointment.
    DeleteAppointment,
    /// Kareo CreateEncounter.
    CreateEncounter,
    /// Kareo CreatePayment.
    CreatePayment,
    /// Kareo UpdateAppointment: an appointment's status (and notes), read-modify-write.
    UpdateAppointment,
    /// Kareo UpdateEncounterStatus.
    UpdateEncounterStatus,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 8] = [
        Op::CreatePatient,
        Op::UpdatePatient,
        Op::CreateAppointment,
        Op::DeleteAppointment,
        Op::CreateEncounter,
        Op::CreatePayment,
        Op::UpdateAppointment,
        Op::UpdateEncounterStatus,
    ];

    /// Kareo's operation name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// By name (exact).
    pub fn from_name(s: &str) -> Option<Op> {
        s.parse().ok()
    }

    /// The `data` fields this operation accepts.
    pub fn fields(self) -> Vec<&'static str> {
        let patient = PATIENT_FIELDS.iter().map(|f| f.key);
        match self {
            Op::CreatePatient => patient.collect(),
            Op::UpdatePatient => std::iter::once("patient_id").chain(patient).collect(),
            Op::CreateAppointment => APPOINTMENT_KEYS.to_vec(),
            Op::DeleteAppointment => vec!["appointment_id"],
            Op::CreateEncounter => ENCOUNTER_KEYS.to_vec(),
            Op::CreatePayment => PAYMENT_KEYS.to_vec(),
            Op::UpdateAppointment => vec!["appointment_id", "status", "notes"],
            Op::UpdateEncounterStatus => vec!["encounter_id", "status"],
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a patient field is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text.
    Text,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// Female, Male or Unknown.
    Gender,
    /// An email address.
    Email,
    /// A phone number (digits, spaces, `+ - ( ) .`).
    Phone,
}

/// A patient field: the command's key, the member of Kareo's `PatientCreate`/`PatientUpdate`,
/// and the member of `PatientData` it reads back as.
#[derive(Clone, Copy, Debug)]
pub struct PatientField {
    /// Key in `data`.
    pub key: &'static str,
    /// `PatientCreate` / `PatientUpdate` member.
    pub member: &'static str,
    /// `PatientData` member (GetPatient / GetPatients).
    pub data_member: &'static str,
    /// Check.
    pub kind: FieldKind,
    /// May an update clear it (`null`)?
    pub clearable: bool,
}

const fn pf(
    key: &'static str,
    member: &'static str,
    data_member: &'static str,
    kind: FieldKind,
    clearable: bool,
) -> PatientField {
    PatientField {
        key,
        member,
        data_member,
        kind,
        clearable,
    }
}

/// The patient fields a command can set, in the order they are listed in errors and docs.
pub const PATIENT_FIELDS: [PatientField; 21] = [
    pf(
        "first_name",
        "FirstName",
        "FirstName",
        FieldKind::Text,
        false,
    ),
    pf(
        "middle_name",
        "MiddleName",
        "MiddleName",
        FieldKind::Text,
        true,
    ),
    pf("last_name", "LastName", "LastName", FieldKind::Text, false),
    pf("prefix", "Prefix", "Prefix", FieldKind::Text, true),
    pf("suffix", "Suffix", "Suffix", FieldKind::Text, true),
    pf(
        "date_of_birth",
        "DateofBirth",
        "DOB",
        FieldKind::Date,
        false,
    ),
    pf("gender", "Gender", "Gender", FieldKind::Gender, false),
    pf(
        "email",
        "EmailAddress",
        "EmailAddress",
        FieldKind::Email,
        true,
    ),
    pf(
        "home_phone",
        "HomePhone",
        "HomePhone",
        FieldKind::Phone,
        true,
    ),
    pf(
        "mobile_phone",
        "MobilePhone",
        "MobilePhone",
        FieldKind::Phone,
        true,
    ),
    pf(
        "work_phone",
        "WorkPhone",
        "WorkPhone",
        FieldKind::Phone,
        true,
    ),
    pf(
        "address_line1",
        "AddressLine1",
        "AddressLine1",
        FieldKind::Text,
        true,
    ),
    pf(
        "address_line2",
        "AddressLine2",
        "AddressLine2",
        FieldKind::Text,
        true,
    ),
    pf("city", "City", "City", FieldKind::Text, true),
    pf("state", "State", "State", FieldKind::Text, true),
    pf("zip_code", "ZipCode", "ZipCode", FieldKind::Text, true),
    pf("country", "Country", "Country", FieldKind::Text, true),
    pf(
        "medical_record_number",
        "MedicalRecordNumber",
        "MedicalRecordNumber",
        FieldKind::Text,
        true,
    ),
    pf(
        "marital_status",
        "MaritalStatus",
        "MaritalStatus",
        FieldKind::Text,
        true,
    ),
    pf(
        "emergency_name",
        "EmergencyName",
        "EmergencyName",
        FieldKind::Text,
        true,
    ),
    pf(
        "emergency_phone",
        "EmergencyPhone",
        "EmergencyPhone",
        FieldKind::Phone,
        true,
    ),
];

/// A patient field by its key.
pub fn patient_field(key: &str) -> Option<&'static PatientField> {
    PATIENT_FIELDS.iter().find(|f| f.key == key)
}

pub(crate) const APPOINTMENT_KEYS: [&str; 11] = [
    "patient_id",
    "start",
    "end",
    "service_location_id",
    "provider_id",
    "type",
    "status",
    "reason_id",
    "case_id",
    "mode",
    "notes",
];
pub(crate) const ENCOUNTER_KEYS: [&str; 10] = [
    "patient_id",
    "service_date",
    "post_date",
    "rendering_provider_id",
    "service_location_id",
    "case_id",
    "appointment_id",
    "status",
    "batch_number",
    "service_lines",
];
pub(crate) const PAYMENT_KEYS: [&str; 11] = [
    "payer_type",
    "amount",
    "payment_method",
    "reference_number",
    "patient_id",
    "insurance_plan_id",
    "insurance_plan_name",
    "post_date",
    "adjudication_date",
    "batch_number",
    "appointment_id",
];

/// The id of a command: 1–128 of letters, digits and `-_.:`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}
