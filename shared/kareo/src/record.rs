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
            self.slots.len()
        )
    }
}

/// A nested member's value (a structure or a WCF array), owned by its record.
#[derive(Clone, PartialEq)]
pub enum Nested {
    /// A nested structure.
    Record(Record),
    /// A WCF array (`ArrayOfX`): its items.
    List(Vec<Nested>),
    /// An item of an array of simple values (`arr:long`, `arr:string`).
    Text(String),
}

/// A member's value, borrowed from its record.
#[derive(Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A simple member's text (unescaped; may be empty).
    Text(&'a str),
    /// A nested structure.
    Record(&'a Record),
    /// A WCF array: its items.
    List(&'a [Nested]),
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    /// A simple member: its text is `text[start..end]`.
    Text { idx: u16, start: u32, end: u32 },
    /// A nested member: `nested[at]`.
    Nested { idx: u16, at: u32 },
}

impl Slot {
    fn idx(self) -> u16 {
        match self {
            Slot::Text { idx, .. } | Slot::Nested { idx, .. } => idx,
        }
    }
}

/// One record from a response: the members that were present, in document order. The texts
/// of all simple members share one buffer (one allocation per record, not per member).
#[derive(Clone, PartialEq)]
pub struct Record {
    ty: TypeId,
    text: String,
    slots: Vec<Slot>,
    nested: Vec<Nested>,
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
        Record::with_capacity(ty, 0, 0)
    }

    /// An empty record with room for `text` bytes of text in `members` members.
    pub fn with_capacity(ty: TypeId, text: usize, members: usize) -> Record {
        Record {
            ty,
            text: String::with_capacity(text),
            slots: Vec::with_capacity(members),
            nested: Vec::new(),
        }
    }

    /// Bytes of text and number of members held (capacity hints for the next record).
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.text.len(), self.slots.len())
    }

    /// Adds a simple member whose text is `text[start..end]` of the buffer given to
    /// [`Record::finish_text`].
    pub(crate) fn push_slot(&mut self, idx: u16, start: u32, end: u32) {
        self.slots.push(Slot::Text { idx, start, end });
    }

    /// Installs the text buffer the slots point into (the reader fills it as bytes and checks
    /// UTF-8 once per record). Fails when the bytes are not UTF-8 or a slot is not on a
    /// character boundary.
    pub(crate) fn finish_text(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        // simdutf8 checks with SIMD: a third of the time of `String::from_utf8` here.
        simdutf8::basic::from_utf8(&bytes).map_err(|_| ())?;
        // SAFETY: `bytes` was checked as UTF-8 on the line above.
        let text = unsafe { String::from_utf8_unchecked(bytes) };
        // In ASCII text (most records) every offset is a character boundary.
        let check = if text.is_ascii() {
            &[][..]
        } else {
            &self.slots[..]
        };
        for s in check {
            if let Slot::Text { start, end, .. } = *s {
                if !text.is_char_boundary(start as usize) || !text.is_char_boundary(end as usize) {
                    return Err(());
                }
            }
        }
        self.text = text;
        Ok(())
    }

    /// The schema type.
    pub fn type_def(&self) -> &'static TypeDef {
        self.ty.def()
    }

    /// The schema type's name, e.g. `PatientData`.
    pub fn type_name(&self) -> &'static str {
        self.ty.def().name
    }

    /// Adds a simple member by schema index (repeated members may be pushed several times).
    pub fn push_text(&mut self, index: u16, text: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        self.push_slot(index, start, self.text.len() as u32);
    }

    /// Adds a nested member by schema index.
    pub fn push_nested(&mut self, index: u16, value: Nested) {
        let at = self.nested.len() as u32;
        self.nested.push(value);
        self.slots.push(Slot::Nested { idx: index, at });
    }

    /// Sets a simple member by name (replacing it). Returns false when the type has no such
    /// member.
    pub fn set(&mut self, name: &str, text: &str) -> bool {
        match self.ty.def().index_of(name.as_bytes()) {
            Some(i) => {
                let i = i as u16;
                self.slots.retain(|s| s.idx() != i);
                self.push_text(i, text);
                true
            }
            None => false,
        }
    }

    /// No member at all: the placeholder item Kareo puts in an empty list.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot_value(&self, slot: Slot) -> Value<'_> {
        match slot {
            Slot::Text { start, end, .. } => Value::Text(&self.text[start as usize..end as usize]),
            Slot::Nested { at, .. } => match &self.nested[at as usize] {
                Nested::Record(r) => Value::Record(r),
                Nested::List(items) => Value::List(items),
                Nested::Text(t) => Value::Text(t),
            },
        }
    }

    /// The value of a member, if present.
    pub fn value(&self, name: &str) -> Option<Value<'_>> {
        self.value_at(self.ty.def().index_of(name.as_bytes())? as u16)
    }

    /// The value of the member with schema index `i`, if present.
    fn value_at(&self, i: u16) -> Option<Value<'_>> {
        self.slots
            .iter()
            .find(|s| s.idx() == i)
            .map(|s| self.slot_value(*s))
    }

    /// The text of a simple member, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        match self.value(name)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A nested record member, if present.
    pub fn record(&self, name: &str) -> Option<&Record> {
        match self.value(name)? {
            Value::Record(r) => Some(r),
            _ => None,
        }
    }

    /// A WCF array member's items, if present.
    pub fn list(&self, name: &str) -> Option<&[Nested]> {
        match self.value(name)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Present members, in document order: (name, value).
    pub fn members(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        let def = self.ty.def();
        self.slots
            .iter()
            .map(move |s| (def.members[s.idx() as usize].name, self.slot_value(*s)))
    }

    /// Present simple members as (name, text).
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.members().filter_map(|(n, v)| match v {
            Value::Text(s) => Some((n, s)),
            _ => None,
        })
    }

    /// The record without the named members.
    pub fn without(mut self, names: &[&str]) -> Record {
        let def = self.ty.def();
        self.slots
            .retain(|s| !names.contains(&def.members[s.idx() as usize].name));
        self
    }

    /// This record's members as a list of items (for a WCF array type).
    pub(crate) fn into_items(self) -> Vec<Nested> {
        let mut out = Vec::with_capacity(self.slots.len());
        let mut nested: Vec<Option<Nested>> = self.nested.into_iter().map(Some).collect();
        for s in self.slots {
            match s {
                Slot::Text { start, end, .. } => out.push(Nested::Text(
                    self.text[start as usize..end as usize].to_string(),
                )),
                Slot::Nested { at, .. } => {
                    if let Some(n) = nested[at as usize].take() {
                        out.push(n)
                    }
                }
            }
        }
        out
    }

    /// When the record holds exactly one member and it is a nested record: that record.
    pub(crate) fn into_only_record(mut self) -> Result<Record, Record> {
        if let [Slot::Nested { at, .. }] = self.slots[..] {
            if matches!(self.nested.get(at as usize), Some(Nested::Record(_))) {
                if let Nested::Record(r) = self.nested.swap_remove(at as usize) {
                    return Ok(r);
                }
            }
        }
        Err(self)
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
        RecordKind::of_type(self.ty)
    }

    /// The record's id (`ID`, `EncounterID`, `AppointmentId`… per [`RecordKind`]); `None`
    /// when absent or empty (the placeholder item).
    pub fn id(&self) -> Option<&str> {
        // The id member's index is kept per type: the reader asks for every record it reads.
        match self.value_at(kind_table(self.ty).1?)? {
            Value::Text(t) => Some(t.trim()).filter(|s| !s.is_empty()),
            _ => None,
        }
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
            let j = value_json(&v);
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

fn value_json(v: &Value<'_>) -> Json {
    match v {
        Value::Text(s) => Json::String(s.to_string()),
        Value::Record(r) => r.to_json(),
        Value::List(items) => Json::Array(items.iter().map(nested_json).collect()),
    }
}

fn nested_json(n: &Nested) -> Json {
    match n {
        Nested::Text(s) => Json::String(s.clone()),
        Nested::Record(r) => r.to_json(),
        Nested::List(items) => Json::Array(items.iter().map(nested_json).collect()),
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

/// Each schema type's kind and its id member's index, worked out once.
fn kind_table(ty: TypeId) -> (RecordKind, Option<u16>) {
    static KINDS: std::sync::LazyLock<Vec<(RecordKind, Option<u16>)>> =
        std::sync::LazyLock::new(|| {
            crate::schema::TYPES
                .iter()
                .map(|t| {
                    let kind = RecordKind::of(t.name);
                    let id = kind
                        .id
                        .and_then(|m| t.index_of(m.as_bytes()))
                        .map(|i| i as u16);
                    (kind, id)
                })
                .collect()
        });
    KINDS[ty.0 as usize]
}

impl RecordKind {
    /// The kind of a record type, by its schema type: worked out once per type (by name, as
    /// [`RecordKind::of`]) and kept, since the reader asks for every record it reads.
    pub fn of_type(ty: TypeId) -> RecordKind {
        kind_table(ty).0
    }

    /// The kind of a record type, by its schema type name.
    pub fn of(type_name: &str) -> RecordKind {
        if let Some(f) = crate::Family::of_type(type_name) {
            return RecordKind {
                id: Some(f.id_member()),
                version: Some(f.version_member()),
                created: f.created_member(),
                practice_id: f.practice_id_member(),
            };
        }
        let (id, version, created, practice_id) = match type_name {
            "PatientBatchData" => (
                "ID",
                Some("LastModifiedDate"),
                Some("CreatedDate"),
                Some("PracticeId"),
            ),
            "AppointmentCreate" => (
                "AppointmentId",
                Some("UpdatedAt"),
                Some("CreatedAt"),
                Some("PracticeId"),
            ),
            "ThrottleDetail" => ("Endpoint", None, None, None),
            _ => {
                return RecordKind {
                    id: None,
                    version: None,
                    created: None,
                    practice_id: None,
                }
            }
        };
        RecordKind {
            id: Some(id),
            version,
            created,
            practice_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_kept_per_type_is_the_kind_by_name() {
        for (i, t) in crate::schema::TYPES.iter().enumerate() {
            let kept = RecordKind::of_type(TypeId(i as u16));
            assert_eq!(kept, RecordKind::of(t.name), "{}", t.name);
        }
        let patient = crate::Family::Patients.data_type().name;
        assert_eq!(RecordKind::of(patient).id, Some("ID"));
    }
}
