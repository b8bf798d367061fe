//! A mirror of Kareo's own schema: every complex type the product's operations reach, with its
//! members in `xs:sequence` order (base type first), their namespaces and types.
//!
//! WCF's DataContractSerializer silently drops members that arrive out of order, in the wrong
//! namespace or with the wrong case. Nothing in this crate types an element name or an order by
//! hand: the envelope writer, the response reader and the simulator all walk these tables, which
//! `tools/gen_kareo_schema.py` generates from Kareo's XSDs.

#[rustfmt::skip]
mod generated;

use std::collections::HashMap;
use std::sync::OnceLock;

pub use generated::*;

/// The XML namespaces of Kareo's schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ns {
    /// `http://www.kareo.com/api/schemas/` (with the trailing slash): almost everything.
    K,
    /// `http://www.kareo.com/api/schemas` (no trailing slash): service locations and procedure codes.
    K7,
    /// WCF primitive arrays (`ArrayOfint`, `ArrayOflong`, `ArrayOfstring`).
    Arr,
    /// WCF serialization primitives (guid, char, duration).
    Ser,
    /// `System` (DayOfWeek).
    Sys,
    /// `KareoServicesWCF` (fault details).
    Wcf,
    /// `AppointmentDomain_.Model` (AppointmentMode).
    Appt,
}

impl Ns {
    /// All namespaces, in the order the envelope declares them.
    pub const ALL: [Ns; 7] = [Ns::K, Ns::K7, Ns::Arr, Ns::Ser, Ns::Sys, Ns::Wcf, Ns::Appt];

    /// The namespace URI.
    pub const fn uri(self) -> &'static str {
        match self {
            Ns::K => "http://www.kareo.com/api/schemas/",
            Ns::K7 => "http://www.kareo.com/api/schemas",
            Ns::Arr => "http://schemas.microsoft.com/2003/10/Serialization/Arrays",
            Ns::Ser => "http://schemas.microsoft.com/2003/10/Serialization/",
            Ns::Sys => "http://schemas.datacontract.org/2004/07/System",
            Ns::Wcf => "http://schemas.datacontract.org/2004/07/KareoServicesWCF",
            Ns::Appt => "http://schemas.datacontract.org/2004/07/AppointmentDomain_.Model",
        }
    }

    /// The prefix this product writes for the namespace.
    pub const fn prefix(self) -> &'static str {
        match self {
            Ns::K => "k",
            Ns::K7 => "k7",
            Ns::Arr => "arr",
            Ns::Ser => "ser",
            Ns::Sys => "sys",
            Ns::Wcf => "wcf",
            Ns::Appt => "appt",
        }
    }

    /// The namespace with this URI, if it is one of Kareo's.
    pub fn from_uri(uri: &[u8]) -> Option<Ns> {
        Ns::ALL.into_iter().find(|ns| ns.uri().as_bytes() == uri)
    }
}

/// Index of a complex type in [`TYPES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TypeId(pub u16);

/// Index of an enumeration in [`ENUMS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnumId(pub u16);

/// The type of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `xs:string` (and types carried as text).
    Str,
    /// `xs:boolean`: `true` / `false`.
    Bool,
    /// 32-bit (or smaller) integer.
    Int,
    /// 64-bit integer.
    Long,
    /// `xs:double` / `xs:float`.
    Double,
    /// `xs:decimal`.
    Decimal,
    /// `xs:dateTime`: ISO 8601.
    DateTime,
    /// `ser:guid`.
    Guid,
    /// One of an enumeration's values.
    Enum(EnumId),
    /// A complex type.
    Complex(TypeId),
}

/// One member of a complex type's sequence.
#[derive(Debug)]
pub struct Member {
    /// Element name, case-sensitive, exactly as the WSDL spells it.
    pub name: &'static str,
    /// Namespace of the element (the namespace of the schema that declares the type).
    pub ns: Ns,
    /// Its type.
    pub ty: Ty,
    /// No `minOccurs="0"`: WCF's `IsRequired`.
    pub required: bool,
    /// `maxOccurs="unbounded"`.
    pub repeated: bool,
}

/// A complex type.
#[derive(Debug)]
pub struct TypeDef {
    /// Type name.
    pub name: &'static str,
    /// Namespace the type is declared in.
    pub ns: Ns,
    /// Members in sequence order, base type first.
    pub members: &'static [Member],
}

/// An enumeration (`xs:simpleType` restriction).
#[derive(Debug)]
pub struct EnumDef {
    /// Type name.
    pub name: &'static str,
    /// Allowed values.
    pub values: &'static [&'static str],
}

/// An operation of the service.
#[derive(Debug)]
pub struct OpDef {
    /// Operation (and body element) name, e.g. `GetPatients`.
    pub name: &'static str,
    /// Name of the wrapper element under the operation: `request`, or `UpdatePatientReq`.
    pub wrapper: &'static str,
    /// Type of the wrapper element.
    pub request: TypeId,
    /// Name of the result element under `<OpResponse>`, e.g. `GetPatientsResult`.
    pub result: &'static str,
    /// Type of the result element.
    pub response: TypeId,
}

impl TypeId {
    /// The type's definition.
    pub fn def(self) -> &'static TypeDef {
        &TYPES[self.0 as usize]
    }
}

impl EnumId {
    /// The enumeration's definition.
    pub fn def(self) -> &'static EnumDef {
        &ENUMS[self.0 as usize]
    }
}

impl TypeDef {
    /// The position of the member with this exact (case-sensitive) name.
    pub fn index_of(&'static self, name: &[u8]) -> Option<usize> {
        member_index(self).get(name).copied()
    }

    /// The member with this exact name.
    pub fn member(&'static self, name: &str) -> Option<&'static Member> {
        self.index_of(name.as_bytes()).map(|i| &self.members[i])
    }

    /// For a WCF array wrapper (`ArrayOfX`: one repeated member), that member.
    pub fn array_item(&self) -> Option<&'static Member> {
        match self.members {
            [only] if only.repeated => Some(only),
            _ => None,
        }
    }

    /// The id of this type.
    pub fn id(&'static self) -> TypeId {
        let base = TYPES.as_ptr() as usize;
        let me = self as *const TypeDef as usize;
        TypeId(((me - base) / std::mem::size_of::<TypeDef>()) as u16)
    }
}

fn member_index(def: &'static TypeDef) -> &'static HashMap<&'static [u8], usize> {
    static INDEX: OnceLock<Vec<HashMap<&'static [u8], usize>>> = OnceLock::new();
    let all = INDEX.get_or_init(|| {
        TYPES
            .iter()
            .map(|t| {
                t.members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.name.as_bytes(), i))
                    .collect()
            })
            .collect()
    });
    &all[def.id().0 as usize]
}

/// The operation with this exact name.
pub fn op(name: &str) -> Option<&'static OpDef> {
    OPS.iter().find(|o| o.name == name)
}

impl OpDef {
    /// `true` for operations that change data in Kareo.
    pub fn is_write(&self) -> bool {
        ["Create", "Update", "Delete"]
            .iter()
            .any(|p| self.name.starts_with(p))
    }

    /// For a list read (a `Get…` whose result holds a WCF array of a complex type), the
    /// collection member, its item member and the item type. Writes answer one record even
    /// when it contains arrays (CreatePatient's `Cases`).
    pub fn list_member(&self) -> Option<(&'static Member, &'static Member, TypeId)> {
        if !self.name.starts_with("Get") {
            return None;
        }
        self.response.def().members.iter().find_map(|m| match m.ty {
            Ty::Complex(t) => {
                let item = t.def().array_item()?;
                match item.ty {
                    Ty::Complex(it) => Some((m, item, it)),
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// The minimum interval between two calls of this operation for one account, as Kareo's
    /// guide documents it (April 2025). [`crate::throttle`] adds a margin and prefers live
    /// values from GetThrottles.
    pub fn documented_interval_ms(&self) -> u64 {
        match self.name {
            "GetPatient" => 250,
            "GetAppointments" | "GetCharges" | "GetPatients" | "GetPayments"
            | "GetTransactions" | "UpdatePatient" => 1000,
            "GetAllPatients" | "GetThrottles" => 5000,
            "GetCustomerIdFromKey" => 1000,
            _ => 500,
        }
    }
}

/// Every operation name this product uses.
pub fn op_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_wrapper_and_header() {
        assert_eq!(OPS.len(), 23);
        for o in OPS {
            let first = o.request.def().members.first().map(|m| m.name);
            if o.name == "GetCustomerIdFromKey" {
                assert_eq!(first, Some("CustomerKey"));
            } else {
                assert_eq!(first, Some("RequestHeader"), "{}", o.name);
            }
        }
        assert_eq!(op("UpdatePatient").unwrap().wrapper, "UpdatePatientReq");
        assert_eq!(op("GetPatients").unwrap().wrapper, "request");
    }

    #[test]
    fn k7_types_keep_the_header_in_k() {
        let req = op("GetServiceLocations").unwrap().request.def();
        assert_eq!(req.ns, Ns::K7);
        let names: Vec<_> = req.members.iter().map(|m| (m.name, m.ns)).collect();
        assert_eq!(
            names,
            vec![
                ("RequestHeader", Ns::K),
                ("Fields", Ns::K7),
                ("Filter", Ns::K7)
            ]
        );
    }

    #[test]
    fn header_members_are_in_wsdl_order() {
        let h = TYPES.iter().find(|t| t.name == "RequestHeader").unwrap();
        let names: Vec<_> = h.members.iter().map(|m| m.name).collect();
        assert_eq!(names, ["ClientVersion", "CustomerKey", "Password", "User"]);
    }

    #[test]
    fn list_members_are_found() {
        let (m, item, _) = op("GetPatients").unwrap().list_member().unwrap();
        assert_eq!((m.name, item.name), ("Patients", "PatientData"));
        let (m, item, _) = op("GetServiceLocations").unwrap().list_member().unwrap();
        assert_eq!(
            (m.name, item.name, item.ns),
            ("ServiceLocations", "ServiceLocationData", Ns::K7)
        );
        assert!(op("GetAppointment").unwrap().list_member().is_none());
        assert!(op("CreatePatient").unwrap().list_member().is_none());
        let d = op("GetThrottles").unwrap().list_member().unwrap();
        assert_eq!(d.1.name, "ThrottleDetail");
    }

    #[test]
    fn lookups_are_case_sensitive() {
        let data = TYPES.iter().find(|t| t.name == "PatientData").unwrap();
        assert!(data.member("PracticeId").is_some());
        assert!(data.member("PracticeID").is_none());
        assert_eq!(data.id().def().name, "PatientData");
    }
}
