//! Streaming response reader: one [`Record`] at a time, never a DOM of the whole body.
//!
//! A state machine fed by quick-xml events, driven either from a `BufRead`
//! ([`ResponseReader::next_record`]) or from an `AsyncBufRead`
//! ([`ResponseReader::next_record_async`], the HTTP body as it arrives). It tolerates what WCF
//! really sends: default-namespace declarations or prefixes (elements are matched by local
//! name), `i:nil`, absent members, pretty-printed or compact bodies, an `s:Header`, members it
//! does not know (newer Kareo versions add some: skipped), and the empty placeholder item of an
//! empty list (skipped). It checks, before any record is yielded, `ErrorResponse` (throttle or
//! API error) and every flag of `SecurityResponse`; a SOAP fault becomes
//! [`KareoError::Fault`]; a wrong element where the schema names one becomes
//! [`KareoError::Schema`]; broken or truncated XML becomes [`KareoError::Xml`].

use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use tokio::io::AsyncBufRead;

use crate::error::{parse_throttle_message, KareoError, SecurityFlags, TransportKind};
use crate::record::{Record, Value};
use crate::schema::{OpDef, Ty, TypeId};

/// Reads one response of one operation.
pub struct ResponseReader<R> {
    xml: Reader<R>,
    buf: Vec<u8>,
    machine: Machine,
}

impl<R> ResponseReader<R> {
    /// A reader for a response to `op` coming from `source`.
    pub fn new(op: &'static OpDef, source: R) -> Self {
        let mut xml = Reader::from_reader(source);
        let cfg = xml.config_mut();
        cfg.trim_text(false);
        cfg.check_end_names = true;
        ResponseReader {
            xml,
            buf: Vec::with_capacity(4096),
            machine: Machine::new(op),
        }
    }

    /// For GetAllPatients: the `Key/nextStartKey` of this page (known before its first record).
    /// `None` on the last page.
    pub fn next_start_key(&self) -> Option<i64> {
        self.machine.next_start_key
    }

    fn xml_error(&self, e: quick_xml::Error) -> KareoError {
        let op = self.machine.op.name;
        match e {
            quick_xml::Error::Io(io) => io_error(op, &io),
            other => KareoError::Xml {
                op,
                position: self.xml.buffer_position(),
                reason: syntax_reason(&other),
            },
        }
    }
}

impl<R: BufRead> ResponseReader<R> {
    /// The next record, `Ok(None)` at the end of the response.
    pub fn next_record(&mut self) -> Result<Option<Record>, KareoError> {
        loop {
            self.buf.clear();
            let ev = match self.xml.read_event_into(&mut self.buf) {
                Ok(ev) => ev,
                Err(e) => return Err(self.xml_error(e)),
            };
            match self.machine.feed(ev)? {
                Step::Continue => {}
                Step::Record(r) => return Ok(Some(r)),
                Step::End => return Ok(None),
            }
        }
    }

    /// Every record of the response.
    pub fn collect_all(mut self) -> Result<Vec<Record>, KareoError> {
        let mut out = Vec::new();
        while let Some(r) = self.next_record()? {
            out.push(r);
        }
        Ok(out)
    }
}

impl<R: AsyncBufRead + Unpin> ResponseReader<R> {
    /// The next record, reading the body as it arrives; `Ok(None)` at the end.
    pub async fn next_record_async(&mut self) -> Result<Option<Record>, KareoError> {
        loop {
            self.buf.clear();
            let ev = match self.xml.read_event_into_async(&mut self.buf).await {
                Ok(ev) => ev,
                Err(e) => return Err(self.xml_error(e)),
            };
            match self.machine.feed(ev)? {
                Step::Continue => {}
                Step::Record(r) => return Ok(Some(r)),
                Step::End => return Ok(None),
            }
        }
    }
}

fn io_error(op: &'static str, io: &std::io::Error) -> KareoError {
    if io.kind() == std::io::ErrorKind::TimedOut {
        return KareoError::Timeout {
            op,
            after: std::time::Duration::ZERO,
            sent: true,
        };
    }
    KareoError::Transport {
        op,
        kind: TransportKind::Body,
        sent: true,
    }
}

/// The parser's message about syntax. quick-xml's messages name tags, not text content, but
/// to be safe only the error's kind is kept.
fn syntax_reason(e: &quick_xml::Error) -> String {
    match e {
        quick_xml::Error::Syntax(s) => format!("syntax error ({s:?})"),
        quick_xml::Error::IllFormed(i) => match i {
            quick_xml::errors::IllFormedError::MismatchedEndTag { .. } => {
                "mismatched end tag".into()
            }
            quick_xml::errors::IllFormedError::UnmatchedEndTag(_) => "unmatched end tag".into(),
            _ => "ill-formed document".into(),
        },
        quick_xml::Error::Encoding(_) => "invalid encoding".into(),
        quick_xml::Error::Escape(_) => "invalid character or entity reference".into(),
        _ => "unreadable document".into(),
    }
}

enum Step {
    Continue,
    Record(Record),
    End,
}

enum Frame {
    Envelope,
    Body,
    Skip(u32),
    Fault,
    FaultText(bool),
    Response,
    Result(Record),
    List,
    /// A nested record: the member index in its parent (`None` for a list item), the record.
    Rec(Option<u16>, Record),
    Leaf(u16, String),
}

struct Machine {
    op: &'static OpDef,
    stack: Vec<Frame>,
    list: Option<(&'static str, &'static str, TypeId)>,
    response_name: String,
    fault_code: String,
    fault_text: String,
    next_start_key: Option<i64>,
    finished: bool,
}

const RESPONSE_BASE: [&str; 2] = ["ErrorResponse", "SecurityResponse"];

impl Machine {
    fn new(op: &'static OpDef) -> Machine {
        Machine {
            op,
            stack: Vec::with_capacity(8),
            list: op.list_member().map(|(m, item, t)| (m.name, item.name, t)),
            response_name: format!("{}Response", op.name),
            fault_code: String::new(),
            fault_text: String::new(),
            next_start_key: None,
            finished: false,
        }
    }

    fn schema_err(&self, found: &[u8], expected: &str) -> KareoError {
        KareoError::Schema {
            op: self.op.name,
            found: format!("<{}>", String::from_utf8_lossy(found)),
            expected: expected.to_string(),
        }
    }

    fn feed(&mut self, ev: Event<'_>) -> Result<Step, KareoError> {
        match ev {
            Event::Start(e) => {
                self.start(&e)?;
                Ok(Step::Continue)
            }
            Event::Empty(e) => {
                self.start(&e)?;
                self.end()
            }
            Event::End(_) => self.end(),
            Event::Text(t) => {
                let op = self.op.name;
                if let Some(buf) = self.text_target() {
                    let s = t.xml_content().map_err(|_| bad_text(op))?;
                    buf.push_str(&s);
                }
                Ok(Step::Continue)
            }
            Event::CData(c) => {
                let op = self.op.name;
                if let Some(buf) = self.text_target() {
                    let s = std::str::from_utf8(&c).map_err(|_| bad_text(op))?;
                    buf.push_str(s);
                }
                Ok(Step::Continue)
            }
            Event::GeneralRef(r) => {
                let op = self.op.name;
                if let Some(buf) = self.text_target() {
                    let c = if r.is_char_ref() {
                        r.resolve_char_ref().ok().flatten()
                    } else {
                        match r.as_ref() {
                            b"amp" => Some('&'),
                            b"lt" => Some('<'),
                            b"gt" => Some('>'),
                            b"quot" => Some('"'),
                            b"apos" => Some('\''),
                            _ => None,
                        }
                    };
                    match c {
                        Some(c) => buf.push(c),
                        None => {
                            return Err(KareoError::Xml {
                                op,
                                position: 0,
                                reason: "unknown entity reference".into(),
                            })
                        }
                    }
                }
                Ok(Step::Continue)
            }
            Event::Eof => {
                if self.finished {
                    Ok(Step::End)
                } else if self.stack.is_empty() {
                    Err(KareoError::Schema {
                        op: self.op.name,
                        found: "end of document".into(),
                        expected: "<Envelope>".into(),
                    })
                } else {
                    Err(KareoError::Xml {
                        op: self.op.name,
                        position: 0,
                        reason: "the document ends before its elements are closed (truncated)"
                            .into(),
                    })
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {
                Ok(Step::Continue)
            }
        }
    }

    fn text_target(&mut self) -> Option<&mut String> {
        match self.stack.last_mut() {
            Some(Frame::Leaf(_, s)) => Some(s),
            Some(Frame::FaultText(true)) => Some(&mut self.fault_code),
            Some(Frame::FaultText(false)) => Some(&mut self.fault_text),
            _ => None,
        }
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), KareoError> {
        let name = e.local_name();
        let name = name.as_ref();
        let frame = match self.stack.last() {
            None => {
                if self.finished || name != b"Envelope" {
                    return Err(self.schema_err(name, "<Envelope>"));
                }
                Frame::Envelope
            }
            Some(Frame::Skip(n)) => Frame::Skip(n + 1),
            Some(Frame::Envelope) => match name {
                b"Header" => Frame::Skip(0),
                b"Body" => Frame::Body,
                _ => return Err(self.schema_err(name, "<Body>")),
            },
            Some(Frame::Body) => {
                if name == b"Fault" {
                    Frame::Fault
                } else if name == self.response_name.as_bytes() {
                    Frame::Response
                } else {
                    let want = format!("<{}> or <Fault>", self.response_name);
                    return Err(self.schema_err(name, &want));
                }
            }
            Some(Frame::Fault) => match name {
                b"faultcode" => Frame::FaultText(true),
                b"faultstring" => Frame::FaultText(false),
                _ => Frame::Skip(0),
            },
            Some(Frame::FaultText(_)) => Frame::Skip(0),
            Some(Frame::Response) => {
                if name == self.op.result.as_bytes() {
                    Frame::Result(Record::new(self.op.response))
                } else {
                    return Err(self.schema_err(name, &format!("<{}>", self.op.result)));
                }
            }
            Some(Frame::List) => {
                let (_, item, ty) = self.list.expect("list frame only for list ops");
                if name != item.as_bytes() {
                    return Err(self.schema_err(name, &format!("<{item}>")));
                }
                Frame::Rec(None, Record::new(ty))
            }
            Some(Frame::Result(rec)) => {
                if let Some((list, _, _)) = self.list {
                    if name == list.as_bytes() {
                        self.stack.push(if is_nil(e) {
                            Frame::Skip(0)
                        } else {
                            Frame::List
                        });
                        return Ok(());
                    }
                }
                member_frame(rec, name, e)
            }
            Some(Frame::Rec(_, rec)) => member_frame(rec, name, e),
            Some(Frame::Leaf(..)) => Frame::Skip(0),
        };
        self.stack.push(frame);
        Ok(())
    }

    fn end(&mut self) -> Result<Step, KareoError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(Step::Continue);
        };
        match frame {
            Frame::Skip(0) => {}
            Frame::Skip(n) => self.stack.push(Frame::Skip(n - 1)),
            Frame::Leaf(idx, text) => self.attach(idx, Value::Text(text))?,
            Frame::Rec(None, rec) => {
                if rec.is_empty() || (rec.kind().id.is_some() && rec.id().is_none()) {
                    return Ok(Step::Continue); // the placeholder item of an empty list
                }
                return Ok(Step::Record(rec));
            }
            Frame::Rec(Some(idx), rec) => {
                let value = if rec.type_def().array_item().is_some() {
                    Value::List(rec.into_parts().1.into_iter().map(|(_, v)| v).collect())
                } else {
                    Value::Record(Box::new(rec))
                };
                self.attach(idx, value)?;
            }
            Frame::FaultText(_) => {}
            Frame::Fault => {
                let text = std::mem::take(&mut self.fault_text);
                let code = std::mem::take(&mut self.fault_code);
                if let Some(interval) = parse_throttle_message(&text) {
                    return Err(KareoError::Throttled {
                        op: self.op.name,
                        interval,
                    });
                }
                return Err(KareoError::Fault {
                    op: self.op.name,
                    code: code.trim().to_string(),
                    text,
                });
            }
            Frame::Result(rec) => {
                if self.list.is_none() {
                    return Ok(Step::Record(single_payload(rec)));
                }
            }
            Frame::List | Frame::Response | Frame::Body => {}
            Frame::Envelope => self.finished = true,
        }
        Ok(Step::Continue)
    }
}

impl Machine {
    /// Adds a finished member to the record on top of the stack; at the result level, checks
    /// ErrorResponse and SecurityResponse as soon as they are complete, before any record.
    fn attach(&mut self, idx: u16, value: Value) -> Result<(), KareoError> {
        let op = self.op.name;
        match self.stack.last_mut() {
            Some(Frame::Result(rec)) => {
                let name = rec.type_def().members[idx as usize].name;
                match (name, &value) {
                    ("ErrorResponse", Value::Record(r)) => check_error(op, r)?,
                    ("SecurityResponse", Value::Record(r)) => check_security(op, r)?,
                    ("Key", Value::Record(r)) => {
                        self.next_start_key = r.i64("nextStartKey").ok().flatten();
                    }
                    _ => {}
                }
                rec.push(idx, value);
            }
            Some(Frame::Rec(_, rec)) => rec.push(idx, value),
            _ => {}
        }
        Ok(())
    }
}

fn bad_text(op: &'static str) -> KareoError {
    KareoError::Xml {
        op,
        position: 0,
        reason: "invalid text encoding".into(),
    }
}

fn is_nil(e: &BytesStart<'_>) -> bool {
    if e.attributes_raw().is_empty() {
        return false;
    }
    e.attributes().flatten().any(|a| {
        a.key.local_name().as_ref() == b"nil" && matches!(a.value.as_ref(), b"true" | b"1")
    })
}

/// The frame for a member element of `rec`: unknown members (a newer Kareo) and nil members
/// are skipped.
fn member_frame(rec: &Record, name: &[u8], e: &BytesStart<'_>) -> Frame {
    let def = rec.type_def();
    let Some(idx) = def.index_of(name) else {
        return Frame::Skip(0);
    };
    if is_nil(e) {
        return Frame::Skip(0);
    }
    match def.members[idx].ty {
        Ty::Complex(t) => Frame::Rec(Some(idx as u16), Record::new(t)),
        _ => Frame::Leaf(idx as u16, String::new()),
    }
}

fn check_error(op: &'static str, r: &Record) -> Result<(), KareoError> {
    if r.bool("IsError").ok().flatten() != Some(true) {
        return Ok(());
    }
    let text = r.get("ErrorMessage").unwrap_or("").to_string();
    match parse_throttle_message(&text) {
        Some(interval) => Err(KareoError::Throttled { op, interval }),
        None => Err(KareoError::Api { op, text }),
    }
}

/// Every flag is checked: Kareo's guide says `SecurityResultSuccess` true means a problem,
/// Kareo's own sample code treats false as the failure. This reads true as success and also
/// requires `Authenticated`, `Authorized` and `CustomerKeyValid` to be true when present.
fn check_security(op: &'static str, r: &Record) -> Result<(), KareoError> {
    let is_false = |m: &str| r.bool(m).ok().flatten() == Some(false);
    let mut flags = SecurityFlags {
        not_authenticated: is_false("Authenticated"),
        not_authorized: is_false("Authorized"),
        customer_key_invalid: is_false("CustomerKeyValid"),
        result_not_success: is_false("SecurityResultSuccess"),
        permissions_missing: Vec::new(),
    };
    if let Some(Value::Record(pm)) = r.value("PermissionsMissing") {
        if let Some(Value::List(items)) = pm.value("Permission") {
            flags.permissions_missing = items
                .iter()
                .filter_map(|v| match v {
                    Value::Text(t) if !t.is_empty() => Some(t.clone()),
                    _ => None,
                })
                .collect();
        }
    }
    if flags == SecurityFlags::default() {
        return Ok(());
    }
    Err(KareoError::Security {
        op,
        flags,
        text: r.get("SecurityResult").unwrap_or("").to_string(),
    })
}

/// The record of a single-record operation: the result without ErrorResponse and
/// SecurityResponse; when what remains is one nested record (GetAppointment's `Appointment`,
/// GetPatient's `Patient`), that record.
fn single_payload(rec: Record) -> Record {
    let (ty, fields) = rec.into_parts();
    let def = ty.def();
    let mut rest: Vec<_> = fields
        .into_iter()
        .filter(|(i, _)| !RESPONSE_BASE.contains(&def.members[*i as usize].name))
        .collect();
    if rest.len() == 1 && matches!(rest[0].1, Value::Record(_)) {
        if let Some((_, Value::Record(inner))) = rest.pop() {
            return *inner;
        }
    }
    Record::from_parts(ty, rest)
}
