//! Kareo's record families: one per list read, with the members that carry each record's
//! id, version and creation date. The facts here are Kareo's (kareo-api.md §3); how often and in
//! which windows a family is polled is the sync engine's business.

/// A record family, one per list operation.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    /// GetPractices / `PracticeData`.
    Practices,
    /// GetProviders / `ProviderData`.
    Providers,
    /// GetServiceLocations / `ServiceLocationData` (k7, `ModifiedDate`).
    ServiceLocations,
    /// GetProcedureCodes / `ProcedureCodeData` (k7, `ModifiedDate`).
    ProcedureCodes,
    /// GetPatients, GetPatient, GetAllPatients / `PatientData`.
    Patients,
    /// GetAppointments / `AppointmentData` (GetAppointment derives `AppointmentCreate`).
    Appointments,
    /// GetCharges / `ChargeData`.
    Charges,
    /// GetEncounterDetails / `EncounterDetailsData` (ID member `EncounterID`).
    Encounters,
    /// GetPayments / `PaymentData`.
    Payments,
    /// GetTransactions / `TransactionData` (no `CreatedDate`).
    Transactions,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 10] = [
        Family::Practices,
        Family::Providers,
        Family::ServiceLocations,
        Family::ProcedureCodes,
        Family::Patients,
        Family::Appointments,
        Family::Charges,
        Family::Encounters,
        Family::Payments,
        Family::Transactions,
    ];

    /// The list operation that reads this family.
    pub fn op(self) -> &'static str {
        match self {
            Family::Practices => "GetPractices",
            Family::Providers => "GetProviders",
            Family::ServiceLocations => "GetServiceLocations",
            Family::ProcedureCodes => "GetProcedureCodes",
            Family::Patients => "GetPatients",
            Family::Appointments => "GetAppointments",
            Family::Charges => "GetCharges",
            Family::Encounters => "GetEncounterDetails",
            Family::Payments => "GetPayments",
            Family::Transactions => "GetTransactions",
        }
    }

    /// The member holding the record's ID.
    pub fn id_member(self) -> &'static str {
        match self {
            Family::Encounters => "EncounterID",
            _ => "ID",
        }
    }

    /// The member holding the record's last-modified stamp.
    pub fn version_member(self) -> &'static str {
        match self {
            Family::ServiceLocations | Family::ProcedureCodes => "ModifiedDate",
            _ => "LastModifiedDate",
        }
    }

    /// The record type (`*Data`) of this family.
    pub fn data_type(self) -> &'static crate::schema::TypeDef {
        let op = crate::schema::op(self.op()).expect("family op in schema");
        op.list_member().expect("list op").2.def()
    }

    /// Does the record type have a `CreatedDate` member?
    pub fn has_created(self) -> bool {
        self.data_type().member("CreatedDate").is_some()
    }
    /// The member holding the record's creation stamp (`None`: transactions have none).
    pub fn created_member(self) -> Option<&'static str> {
        self.has_created().then_some("CreatedDate")
    }

    /// The member holding the record's practice id (`PracticeID` or `PracticeId`), if any.
    pub fn practice_id_member(self) -> Option<&'static str> {
        ["PracticeID", "PracticeId"]
            .into_iter()
            .find(|m| self.data_type().member(m).is_some())
    }

    /// The family's name as configs and events spell it (`service_locations`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The family with this name (see [`Family::name`]).
    pub fn from_name(name: &str) -> Option<Family> {
        name.parse().ok()
    }

    /// The family whose records have this schema type (`PatientData` → patients).
    pub fn of_type(type_name: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.data_type().name == type_name)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
