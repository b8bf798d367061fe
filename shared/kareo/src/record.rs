//! Records read from Kareo's responses.
//!
//! Every member of a Kareo response is an optional string (`EmitDefaultValue=false`: absent is
//! not empty). A [`Record`] keeps the members that were present, indexed by the schema, with
//! nested structures (a patient's cases, an encounter's service lines) as nested records and
//! lists. Typed accessors read ids, versions and dates; [`RecordKind`] says which members carry
//! them for each record type (`ID` vs `EncounterID`, `LastModifiedDate` vs `ModifiedDate`,
//! `PracticeID` vs `PracticeId`).
//!
//! A record holds PHI: its `Debug` shows the type and the number of members, never a value.
//! Log ids, never records.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value as Json};

use crate::schema::{TypeDef, TypeId};

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Record({}, {} members)",
            self.type_name(),
            self.fields.len()
        )
    }
}

/// A member's value.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// A simple member's text (unescaped; may be empty).
    Text(String),
    /// A nested structure.
    Record(Box<Record>),
    /// A WCF array (`ArrayOfX`): its items.
    List(Vec<Value>),
}

/// One record from a response: the members that were present, in document order.
#[derive(Clone, PartialEq)]
pub struct Record {
    ty: TypeId,
    fields: Vec<(u16, Value)>,
}

/// A member that is present but unreadable as the asked type. Names the member, not the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{record}.{member} is not {expected}")]
pub struct FieldError {
    /// Record type name.
    pub record: &'static str,
    /// Member name.
    pub member: &'static str,
    /// What it should have been.
    pub expected: &'static str,
}

impl Record {
    /// An empty record of a schema type.
    pub fn new(ty: TypeId) -> Record {
        Record {
            ty,
            fields: Vec::new(),
        }
    }

    /// The type and the present members (schema index, value), in document order.
    pub fn into_parts(self) -> (TypeId, Vec<(u16, Value)>) {
        (self.ty, self.fields)
    }

    /// A record from its parts (see [`Record::into_parts`]).
    pub fn from_parts(ty: TypeId, fields: Vec<(u16, Value)>) -> Record {
        Record { ty, fields }
    }

    /// The schema type.
    pub fn type_def(&self) -> &'static TypeDef {
        self.ty.def()
    }

    /// The schema type's name, e.g. `PatientData`.
    pub fn type_name(&self) -> &'static str {
        self.ty.def().name
    }

    /// Adds a member value by schema index (repeated members may be pushed several times).
    pub fn push(&mut self, index: u16, value: Value) {
        self.fields.push((index, value));
    }

    /// Sets a member by name (replacing it). Returns false when the type has no such member.
    pub fn set(&mut self, name: &str, value: Value) -> bool {
        match self.ty.def().index_of(name.as_bytes()) {
            Some(i) => {
                let i = i as u16;
                self.fields.retain(|(j, _)| *j != i);
                self.fields.push((i, value));
                true
            }
            None => false,
        }
    }

    /// No member at all: the placeholder item Kareo puts in an empty list.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The value of a member, if present.
    pub fn value(&self, name: &str) -> Option<&Value> {
        let i = self.ty.def().index_of(name.as_bytes())? as u16;
        self.fields.iter().find(|(j, _)| *j == i).map(|(_, v)| v)
    }

    /// The text of a simple member, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        match self.value(name)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Present members, in document order: (name, value).
    pub fn members(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        let def = self.ty.def();
        self.fields
            .iter()
            .map(move |(i, v)| (def.members[*i as usize].name, v))
    }

    /// Present simple members as (name, text).
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.members().filter_map(|(n, v)| match v {
            Value::Text(s) => Some((n, s.as_str())),
            _ => None,
        })
    }

    /// A member read as an integer; empty text counts as absent.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, FieldError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| self.field_error(name, "an integer")),
        }
    }

    /// A member read as a boolean (`true`/`false`, also `True`/`1`/`T`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some("true" | "True" | "TRUE" | "1" | "T") => Ok(Some(true)),
            Some("false" | "False" | "FALSE" | "0" | "F") => Ok(Some(false)),
            Some(_) => Err(self.field_error(name, "a boolean")),
        }
    }

    /// A member read as a date in any of Kareo's forms; offset-less forms are read in `tz`.
    pub fn date(&self, name: &str, tz: Tz) -> Result<Option<DateTime<Utc>>, FieldError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => crate::dates::parse(s, tz)
                .map(Some)
                .map_err(|_| self.field_error(name, "a date")),
        }
    }

    fn field_error(&self, name: &str, expected: &'static str) -> FieldError {
        let def = self.ty.def();
        FieldError {
            record: def.name,
            member: def.member(name).map(|m| m.name).unwrap_or("?"),
            expected,
        }
    }

    /// Which members carry this record type's id, version, creation date and practice.
    pub fn kind(&self) -> RecordKind {
        RecordKind::of(self.type_name())
    }

    /// The record's id (`ID`, `EncounterID`, `AppointmentId`… per [`RecordKind`]); `None`
    /// when absent or empty (the placeholder item).
    pub fn id(&self) -> Option<&str> {
        self.kind()
            .id
            .and_then(|m| self.get(m))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The record's version: its last-modified instant.
    pub fn version(&self, tz: Tz) -> Result<Option<DateTime<Utc>>, FieldError> {
        match self.kind().version {
            Some(m) => self.date(m, tz),
            None => Ok(None),
        }
    }

    /// The record's creation instant, for types that have one.
    pub fn created(&self, tz: Tz) -> Result<Option<DateTime<Utc>>, FieldError> {
        match self.kind().created {
            Some(m) => self.date(m, tz),
            None => Ok(None),
        }
    }

    /// The record as a JSON object: member names as keys, texts as strings, nested records as
    /// objects, lists as arrays.
    pub fn to_json(&self) -> Json {
        let mut map = Map::new();
        for (name, v) in self.members() {
            let j = value_json(v);
            match map.get_mut(name) {
                // A repeated member seen twice becomes an array.
                Some(Json::Array(a)) if self.is_repeated(name) => a.push(j),
                Some(prev) => *prev = j,
                None if self.is_repeated(name) => {
                    map.insert(name.to_string(), Json::Array(vec![j]));
                }
                None => {
                    map.insert(name.to_string(), j);
                }
            }
        }
        Json::Object(map)
    }

    fn is_repeated(&self, name: &str) -> bool {
        self.ty.def().member(name).is_some_and(|m| m.repeated)
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Text(s) => Json::String(s.clone()),
        Value::Record(r) => r.to_json(),
        Value::List(items) => Json::Array(items.iter().map(value_json).collect()),
    }
}

/// Which members of a record type carry its identity, version, creation date and practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKind {
    /// The id member.
    pub id: Option<&'static str>,
    /// The last-modified member.
    pub version: Option<&'static str>,
    /// The created member.
    pub created: Option<&'static str>,
    /// The practice id member.
    pub practice_id: Option<&'static str>,
}

impl RecordKind {
    /// The kind of a record type, by its schema type name.
    pub fn of(type_name: &str) -> RecordKind {
        let k = |id, version, created, practice_id| RecordKind {
            id: Some(id),
            version,
            created,
            practice_id,
        };
        let lm = Some("LastModifiedDate");
        let cd = Some("CreatedDate");
        match type_name {
            "AppointmentData" | "ChargeData" | "ProviderData" => {
                k("ID", lm, cd, Some("PracticeID"))
            }
            "PatientData" | "PatientBatchData" | "PaymentData" => {
                k("ID", lm, cd, Some("PracticeId"))
            }
            "EncounterDetailsData" => k("EncounterID", lm, cd, Some("PracticeID")),
            "PracticeData" => k("ID", lm, cd, Some("ID")),
            "ServiceLocationData" => k("ID", Some("ModifiedDate"), cd, Some("PracticeID")),
            "ProcedureCodeData" => k("ID", Some("ModifiedDate"), cd, None),
            "TransactionData" => k("ID", lm, None, None),
            "AppointmentCreate" => k(
                "AppointmentId",
                Some("UpdatedAt"),
                Some("CreatedAt"),
                Some("PracticeId"),
            ),
            "ThrottleDetail" => k("Endpoint", None, None, None),
            _ => RecordKind {
                id: None,
                version: None,
                created: None,
                practice_id: None,
            },
        }
    }
}
