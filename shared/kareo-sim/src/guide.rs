//! The simulator's own reading of the guide's throttle table (April 2025 technical guide, as
//! `kareo-api.md` §7 transcribes it), written here and not taken from the product's schema:
//! the intervals the simulator enforces and GetThrottles answers are the service's, and a
//! product whose own table disagrees must learn the live values (GetThrottles) to keep up.
//! An operation the table does not list is not throttled (`GetCustomerIdFromKey`).

/// The minimum interval between two accepted calls of `op` for one account, in ms.
pub(crate) fn interval_ms(op: &str) -> u64 {
    match op {
        "GetPatient" => 250,
        "GetAppointment"
        | "GetEncounterDetails"
        | "GetPractices"
        | "GetProcedureCodes"
        | "GetProviders"
        | "GetServiceLocations"
        | "CreateAppointment"
        | "CreateEncounter"
        | "CreatePatient"
        | "CreatePayment"
        | "UpdateAppointment"
        | "UpdateEncounterStatus"
        | "DeleteAppointment" => 500,
        "GetAppointments" | "GetCharges" | "GetPatients" | "GetPayments" | "GetTransactions"
        | "UpdatePatient" | "GetExternalVendors" => 1000,
        "GetAllPatients" | "GetThrottles" => 5000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guide_table_as_the_simulator_reads_it() {
        assert_eq!(super::interval_ms("GetPatient"), 250);
        assert_eq!(super::interval_ms("GetEncounterDetails"), 500);
        assert_eq!(super::interval_ms("GetCharges"), 1000);
        assert_eq!(super::interval_ms("GetAllPatients"), 5000);
        assert_eq!(
            super::interval_ms("GetCustomerIdFromKey"),
            0,
            "not in the table"
        );
    }
}
