//! Typed requests.
//!
//! [`generated`] holds one struct per request-side complex type of Kareo's schema
//! (`GetPatientsReq`, `PatientFilter`, `PatientCreate`, …) with Kareo's exact member names and
//! typed values (enums, integers, [`XsDateTime`]). They serialise to the JSON the
//! schema-driven [`crate::envelope`] writer takes, so member order and namespaces still come
//! from the one schema table.
//!
//! ```
//! use kareo::request::{GetPatientsReq, PatientFilter, FieldSelection, KareoRequest};
//! let req = GetPatientsReq {
//!     fields: Some(FieldSelection::all()),
//!     filter: Some(PatientFilter {
//!         practice_name: Some("Acme Family Practice".into()),
//!         from_last_modified_date: Some("2026-09-01T00:00:00".into()),
//!         to_last_modified_date: Some("2026-09-02T00:00:00".into()),
//!         ..Default::default()
//!     }),
//! };
//! let xml = req.envelope(&kareo::Credentials::placeholder(), "doc").unwrap();
//! assert!(xml.contains("<k:FromLastModifiedDate>2026-09-01T00:00:00</k:FromLastModifiedDate>"));
//! ```

#[rustfmt::skip]
mod generated;

pub use generated::*;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::{self, Credentials};
use crate::error::KareoError;
use crate::schema::{self, OpDef};

/// A request type: the wrapper of one operation.
pub trait KareoRequest: Serialize {
    /// The operation.
    const OP: &'static str;

    /// The operation's schema entry.
    fn op() -> &'static OpDef {
        schema::op(Self::OP).expect("generated requests name schema operations")
    }

    /// The request as the JSON body the envelope writer takes.
    fn to_body(&self) -> Result<serde_json::Value, KareoError> {
        serde_json::to_value(self).map_err(|_| KareoError::Request {
            op: Self::OP,
            path: Self::op().wrapper.into(),
            reason: "the request cannot be serialised".into(),
        })
    }

    /// The whole SOAP envelope.
    fn envelope(&self, creds: &Credentials, client_version: &str) -> Result<String, KareoError> {
        envelope::write(Self::op(), creds, client_version, &self.to_body()?)
    }
}

/// Which members a list read returns (`Fields`). [`FieldSelection::all`] sends an empty
/// `<Fields/>`, which returns every member; naming members sends `true` for each (reported to
/// make some tenants return an empty placeholder instead: prefer `all`). Names are checked
/// against the schema when the envelope is written.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldSelection(std::collections::BTreeMap<String, bool>);

impl FieldSelection {
    /// Every member (empty `<Fields/>`).
    pub fn all() -> FieldSelection {
        FieldSelection::default()
    }

    /// Only these members.
    pub fn only<'a>(names: impl IntoIterator<Item = &'a str>) -> FieldSelection {
        FieldSelection(names.into_iter().map(|n| (n.to_string(), true)).collect())
    }
}

/// An `xs:dateTime` value, written as ISO 8601. Deserialising checks the form.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct XsDateTime(String);

impl XsDateTime {
    /// An instant in UTC, as `2020-01-24T22:00:00.000Z`.
    pub fn utc(t: DateTime<Utc>) -> XsDateTime {
        XsDateTime(crate::dates::format_datetime(t))
    }

    /// An instant as the practice's wall clock, without an offset: `2026-10-05T10:00:00`.
    /// Appointment times are sent so: the live-verified CreateAppointment call of the best
    /// public Kareo client used this form, and a Kareo that keeps the clock value and ignores
    /// a `Z` would otherwise move every appointment by the practice's UTC offset.
    pub fn wall(t: DateTime<Utc>, tz: chrono_tz::Tz) -> XsDateTime {
        XsDateTime(t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string())
    }

    /// A calendar date (a birth date, a service date), as `1984-03-07T00:00:00`.
    pub fn date(d: NaiveDate) -> XsDateTime {
        XsDateTime(d.format("%Y-%m-%dT00:00:00").to_string())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for XsDateTime {
    type Err = crate::dates::DateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if crate::dates::is_xs_datetime(s) {
            Ok(XsDateTime(s.to_string()))
        } else {
            Err(crate::dates::parse(s, chrono_tz::UTC).expect_err("not a dateTime"))
        }
    }
}

impl<'de> Deserialize<'de> for XsDateTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if crate::dates::is_xs_datetime(&s) {
            Ok(XsDateTime(s))
        } else {
            Err(serde::de::Error::custom(
                "expected an ISO 8601 date-time (2020-01-24T22:00:00.000Z)",
            ))
        }
    }
}

impl From<&str> for XsDateTime {
    /// Unchecked: the envelope writer rejects a malformed value.
    fn from(s: &str) -> Self {
        XsDateTime(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_reads_into_its_typed_request_and_writes_the_same_envelope() {
        use std::path::PathBuf;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests");
        fn check<R: KareoRequest + serde::de::DeserializeOwned>(dir: &std::path::Path) {
            let text = std::fs::read_to_string(dir.join(format!("{}.json", R::OP))).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let typed: R =
                serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{}: {e}", R::OP));
            let c = Credentials::placeholder();
            let a = typed.envelope(&c, "v").unwrap();
            let b = envelope::write(R::op(), &c, "v", &json).unwrap();
            assert_eq!(a, b, "{}", R::OP);
        }
        check::<GetAppointmentReq>(&dir);
        check::<GetAppointmentsReq>(&dir);
        check::<GetChargesReq>(&dir);
        check::<GetEncounterDetailsReq>(&dir);
        check::<GetPatientReq>(&dir);
        check::<GetPatientsReq>(&dir);
        check::<GetAllPatientsReq>(&dir);
        check::<GetPaymentsReq>(&dir);
        check::<GetPracticesReq>(&dir);
        check::<GetProcedureCodesReq>(&dir);
        check::<GetProvidersReq>(&dir);
        check::<GetServiceLocationsReq>(&dir);
        check::<GetTransactionsReq>(&dir);
        check::<GetThrottlesReq>(&dir);
        check::<GetCustomerIdFromKeyRequest>(&dir);
        check::<CreateAppointmentReq>(&dir);
        check::<CreatePatientReq>(&dir);
        check::<UpdatePatientReq>(&dir);
        check::<CreateEncounterReq>(&dir);
        check::<CreatePaymentRequest>(&dir);
        check::<DeleteAppointmentReq>(&dir);
        check::<UpdateAppointmentReq>(&dir);
        check::<UpdateEncounterStatusReq>(&dir);
    }

    #[test]
    fn typed_enums_and_dates() {
        let req = CreateAppointmentReq {
            appointment: Some(AppointmentCreate {
                appointment_status: Some(AppointmentStatus::Scheduled),
                appointment_type: Some(AppointmentType::P),
                start_time: Some(XsDateTime::utc("2026-10-05T14:00:00Z".parse().unwrap())),
                end_time: Some("2026-10-05T14:30:00Z".into()),
                is_recurring: Some(false),
                practice_id: Some(1),
                service_location_id: Some(3),
                ..Default::default()
            }),
        };
        let xml = req.envelope(&Credentials::placeholder(), "v").unwrap();
        assert!(xml.contains("<k:AppointmentStatus>Scheduled</k:AppointmentStatus>"));
        assert!(xml.contains("<k:StartTime>2026-10-05T14:00:00.000Z</k:StartTime>"));
        let bad: Result<AppointmentCreate, _> =
            serde_json::from_str(r#"{"StartTime": "10/5/2026"}"#);
        assert!(bad.is_err());
        let unknown: Result<PatientFilter, _> = serde_json::from_str(r#"{"PracticeId": "1"}"#);
        assert!(unknown.is_err(), "mis-cased member names are refused");
    }
}
