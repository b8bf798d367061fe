//! Streaming response reader: one [`Record`] at a time, never a DOM of the whole body.
//!
//! A state machine fed by quick-xml events, driven from a `BufRead`
//! ([`ResponseReader::next_record`]): a file, or the HTTP body as it arrives (the client's
//! parser thread reads the body's chunks through a channel). It tolerates what WCF
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

use crate::error::{parse_throttle_message, KareoError, SecurityFlags, TransportKind};
use crate::record::{Nested, Record};
use crate::schema::{OpDef, Ty, TypeDef, TypeId};

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

    /// The source the reader reads from (the client's parser thread batches records in it).
    pub fn source_mut(&mut self) -> &mut R {
        self.xml.get_mut()
    }

    /// The source, the reader done with.
    pub fn into_source(self) -> R {
        self.xml.into_inner()
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
            let m = &mut self.machine;
            // The hot path, kept out of `feed`: the text and end of a simple member (most
            // events of a response), and the start of a member of an open record.
            let ev = match ev {
                Event::Text(t) if m.leaf.is_some() => {
                    if let Some(open) = m.recs.last_mut() {
                        push_normalized(&mut open.text, &t);
                    }
                    continue;
                }
                Event::End(_) if m.leaf.is_some() => {
                    m.end_leaf();
                    continue;
                }
                Event::Start(e)
                    if m.leaf.is_none() && matches!(m.stack.last(), Some(Frame::Rec)) =>
                {
                    m.start_member(&e).map_err(|e| *e)?;
                    continue;
                }
                ev => ev,
            };
            match m.feed(ev).map_err(|e| *e)? {
                Step::Continue => {}
                Step::Record => return Ok(self.machine.ready.take()),
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

/// What one event did. A finished record waits in `Machine::ready`; errors are boxed: this
/// keeps the per-event return value a few bytes wide.
enum Step {
    Continue,
    Record,
    End,
}

type Res<T> = Result<T, Box<KareoError>>;
type Fed = Res<Step>;

enum Frame {
    Envelope,
    Body,
    /// An element (and so its subtree) that is ignored.
    Skip,
    Fault,
    FaultText(bool),
    Response,
    /// A record being read: the top of `Machine::recs`.
    Rec,
    /// The collection member of a list read.
    List,
    /// A simple member: its index, and where its text starts in the record below.
    Leaf {
        idx: u16,
        start: u32,
    },
}

/// A record being read: its member index in the parent (`None` for a list item or the result
/// itself), the record, and the schema position after the last member read. Kept apart from
/// the (small) frames so that pushing a frame per element copies a few bytes, not a record.
struct Open {
    idx: Option<u16>,
    rec: Record,
    cursor: u16,
    /// The record's text, as bytes; checked as UTF-8 once, when the record closes.
    text: Vec<u8>,
}

impl Open {
    fn new(idx: Option<u16>, rec: Record, text_capacity: usize) -> Open {
        Open {
            idx,
            rec,
            cursor: 0,
            text: Vec::with_capacity(text_capacity),
        }
    }
}

struct Machine {
    op: &'static OpDef,
    stack: Vec<Frame>,
    recs: Vec<Open>,
    list: Option<(&'static str, &'static str, TypeId)>,
    response_name: String,
    fault_code: Vec<u8>,
    fault_text: Vec<u8>,
    next_start_key: Option<i64>,
    finished: bool,
    /// The record the last event completed.
    ready: Option<Record>,
    /// The simple member being read (index, text start), kept out of `stack`: most elements
    /// are simple members, and this spares them a frame push and pop.
    leaf: Option<(u16, u32)>,
    /// Size of the last list item (text bytes, members): the next one is allocated at once.
    hint: (usize, usize),
}

const RESPONSE_BASE: [&str; 2] = ["ErrorResponse", "SecurityResponse"];

impl Machine {
    fn new(op: &'static OpDef) -> Machine {
        Machine {
            op,
            stack: Vec::with_capacity(16),
            recs: Vec::with_capacity(4),
            list: op.list_member().map(|(m, item, t)| (m.name, item.name, t)),
            response_name: format!("{}Response", op.name),
            fault_code: Vec::new(),
            fault_text: Vec::new(),
            next_start_key: None,
            finished: false,
            hint: (0, 0),
            ready: None,
            leaf: None,
        }
    }

    fn schema_err(&self, found: &[u8], expected: &str) -> KareoError {
        KareoError::Schema {
            op: self.op.name,
            found: format!("<{}>", String::from_utf8_lossy(found)),
            expected: expected.to_string(),
        }
    }

    fn feed(&mut self, ev: Event<'_>) -> Fed {
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
                if let Some(buf) = self.text_target() {
                    push_normalized(buf, &t);
                }
                Ok(Step::Continue)
            }
            Event::CData(c) => {
                if let Some(buf) = self.text_target() {
                    buf.extend_from_slice(&c);
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
                        Some(c) => buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        None => {
                            return Err(Box::new(KareoError::Xml {
                                op,
                                position: 0,
                                reason: "unknown entity reference".into(),
                            }))
                        }
                    }
                }
                Ok(Step::Continue)
            }
            Event::Eof => {
                if self.finished {
                    Ok(Step::End)
                } else if self.stack.is_empty() {
                    Err(Box::new(KareoError::Schema {
                        op: self.op.name,
                        found: "end of document".into(),
                        expected: "<Envelope>".into(),
                    }))
                } else {
                    Err(Box::new(KareoError::Xml {
                        op: self.op.name,
                        position: 0,
                        reason: "the document ends before its elements are closed (truncated)"
                            .into(),
                    }))
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {
                Ok(Step::Continue)
            }
        }
    }

    /// Where text goes: the record below a simple member, or the fault's strings.
    fn text_target(&mut self) -> Option<&mut Vec<u8>> {
        if self.leaf.is_some() {
            return self.recs.last_mut().map(|o| &mut o.text);
        }
        match self.stack.last()? {
            Frame::Leaf { .. } => self.recs.last_mut().map(|o| &mut o.text),
            Frame::FaultText(true) => Some(&mut self.fault_code),
            Frame::FaultText(false) => Some(&mut self.fault_text),
            _ => None,
        }
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Res<()> {
        if let Some((idx, start)) = self.leaf.take() {
            // An element inside a simple member: not Kareo's shape; the member keeps its text
            // and the element is skipped.
            self.stack.push(Frame::Leaf { idx, start });
            self.stack.push(Frame::Skip);
            return Ok(());
        }
        if let Some(Frame::Rec) = self.stack.last() {
            return self.start_member(e);
        }
        let name = local_name(e);
        let frame = match self.stack.last_mut() {
            None => {
                if self.finished || name != b"Envelope" {
                    return Err(Box::new(self.schema_err(name, "<Envelope>")));
                }
                Frame::Envelope
            }
            Some(Frame::Skip) | Some(Frame::Leaf { .. }) | Some(Frame::FaultText(_)) => Frame::Skip,
            Some(Frame::Envelope) => match name {
                b"Header" => Frame::Skip,
                b"Body" => Frame::Body,
                _ => return Err(Box::new(self.schema_err(name, "<Body>"))),
            },
            Some(Frame::Body) => {
                if name == b"Fault" {
                    Frame::Fault
                } else if name == self.response_name.as_bytes() {
                    Frame::Response
                } else {
                    let want = format!("<{}> or <Fault>", self.response_name);
                    return Err(Box::new(self.schema_err(name, &want)));
                }
            }
            Some(Frame::Fault) => match name {
                b"faultcode" => Frame::FaultText(true),
                b"faultstring" => Frame::FaultText(false),
                _ => Frame::Skip,
            },
            Some(Frame::Response) => {
                if name == self.op.result.as_bytes() {
                    self.recs
                        .push(Open::new(None, Record::new(self.op.response), 0));
                    Frame::Rec
                } else {
                    return Err(Box::new(
                        self.schema_err(name, &format!("<{}>", self.op.result)),
                    ));
                }
            }
            Some(Frame::List) => {
                let (_, item, ty) = self.list.expect("list frame only for list ops");
                if name != item.as_bytes() {
                    return Err(Box::new(self.schema_err(name, &format!("<{item}>"))));
                }
                self.recs.push(Open::new(
                    None,
                    Record::with_capacity(ty, 0, self.hint.1),
                    self.hint.0,
                ));
                Frame::Rec
            }
            Some(Frame::Rec) => unreachable!("members are handled by start_member"),
        };
        self.stack.push(frame);
        Ok(())
    }

    /// A member element of the open record (the hot path): most often the simple member that
    /// follows the last one read in schema order, without attributes.
    #[inline]
    fn start_member(&mut self, e: &BytesStart<'_>) -> Res<()> {
        if let Some(open) = self.recs.last_mut() {
            let name = e.name().into_inner();
            let from = open.cursor as usize;
            let members = open.rec.type_def().members;
            if let Some(at) = next_in_order(members, from, name) {
                if !matches!(members[at].ty, Ty::Complex(_)) && e.attributes_raw().is_empty() {
                    open.cursor = (at + 1) as u16;
                    self.leaf = Some((at as u16, open.text.len() as u32));
                    return Ok(());
                }
            }
        }
        self.start_member_slow(e)
    }

    #[inline(never)]
    fn start_member_slow(&mut self, e: &BytesStart<'_>) -> Res<()> {
        let depth = self.recs.len();
        let open = self.recs.last_mut().expect("a Rec frame has its record");
        let raw = e.name().into_inner();
        if open.idx.is_none() && depth == 1 {
            if let Some((list, _, _)) = self.list {
                if raw == list.as_bytes() || local_name(e) == list.as_bytes() {
                    let f = if is_nil(e) { Frame::Skip } else { Frame::List };
                    self.stack.push(f);
                    return Ok(());
                }
            }
        }
        match member_of(open, raw, e) {
            Member::Nested(child) => {
                self.recs.push(child);
                self.stack.push(Frame::Rec);
            }
            Member::Leaf(idx) => self.leaf = Some((idx, open.text.len() as u32)),
            Member::Skip => self.stack.push(Frame::Skip),
        }
        Ok(())
    }

    /// The end of the simple member being read: its text becomes a slot of the record.
    #[inline]
    fn end_leaf(&mut self) {
        if let Some((idx, start)) = self.leaf.take() {
            if let Some(open) = self.recs.last_mut() {
                open.rec.push_slot(idx, start, open.text.len() as u32);
            }
        }
    }

    fn end(&mut self) -> Fed {
        if self.leaf.is_some() {
            self.end_leaf();
            return Ok(Step::Continue);
        }
        let Some(frame) = self.stack.pop() else {
            return Ok(Step::Continue);
        };
        match frame {
            Frame::Skip | Frame::FaultText(_) => {}
            Frame::Leaf { idx, start } => {
                if let Some(open) = self.recs.last_mut() {
                    open.rec.push_slot(idx, start, open.text.len() as u32);
                }
            }
            Frame::Rec => {
                let Open {
                    idx, mut rec, text, ..
                } = self.recs.pop().expect("a Rec frame has its record");
                if rec.finish_text(text).is_err() {
                    return Err(Box::new(bad_text(self.op.name)));
                }
                return self.close_record(idx, rec);
            }
            Frame::Fault => {
                let text =
                    String::from_utf8_lossy(&std::mem::take(&mut self.fault_text)).into_owned();
                let code =
                    String::from_utf8_lossy(&std::mem::take(&mut self.fault_code)).into_owned();
                if let Some(interval) = parse_throttle_message(&text) {
                    return Err(Box::new(KareoError::Throttled {
                        op: self.op.name,
                        interval,
                    }));
                }
                return Err(Box::new(KareoError::Fault {
                    op: self.op.name,
                    code: code.trim().to_string(),
                    text,
                }));
            }
            Frame::List | Frame::Response | Frame::Body => {}
            Frame::Envelope => self.finished = true,
        }
        Ok(Step::Continue)
    }

    /// A record element ended: a list item is yielded (unless it is the placeholder of an
    /// empty list), the result of a single-record operation is yielded, a nested member is
    /// added to its parent.
    fn close_record(&mut self, idx: Option<u16>, rec: Record) -> Fed {
        match idx {
            None if matches!(self.stack.last(), Some(Frame::List)) => {
                if rec.is_empty() || (rec.kind().id.is_some() && rec.id().is_none()) {
                    return Ok(Step::Continue);
                }
                self.hint = rec.size();
                self.ready = Some(rec);
                Ok(Step::Record)
            }
            None if self.list.is_none() => {
                self.ready = Some(single_payload(rec));
                Ok(Step::Record)
            }
            None => Ok(Step::Continue),
            Some(idx) => {
                let value = if rec.type_def().array_item().is_some() {
                    Nested::List(rec.into_items())
                } else {
                    Nested::Record(rec)
                };
                self.attach(idx, value)?;
                Ok(Step::Continue)
            }
        }
    }

    /// Adds a finished nested member to the open record; at the result level, checks
    /// ErrorResponse and SecurityResponse as soon as they are complete, before any record is
    /// yielded.
    fn attach(&mut self, idx: u16, value: Nested) -> Res<()> {
        let op = self.op.name;
        let at_result = self.recs.len() == 1;
        let Some(open) = self.recs.last_mut() else {
            return Ok(());
        };
        if at_result && open.idx.is_none() {
            let name = open.rec.type_def().members[idx as usize].name;
            if let Nested::Record(r) = &value {
                match name {
                    "ErrorResponse" => check_error(op, r)?,
                    "SecurityResponse" => check_security(op, r)?,
                    "Key" => self.next_start_key = r.i64("nextStartKey").ok().flatten(),
                    _ => {}
                }
            }
        }
        open.rec.push_nested(idx, value);
        Ok(())
    }
}

/// Appends text, normalising line ends as XML requires (`\r\n` and `\r` read as `\n`; a
/// `\r` sent as `&#13;` arrives through a character reference and is kept).
#[inline]
fn push_normalized(buf: &mut Vec<u8>, s: &[u8]) {
    if has_cr(s) {
        push_line_ends(buf, s);
    } else {
        buf.extend_from_slice(s);
    }
}

#[inline(never)]
fn push_line_ends(buf: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\r' {
            buf.push(b'\n');
            if s.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
        } else {
            buf.push(s[i]);
        }
        i += 1;
    }
}

/// Whether `s` holds a `\r`, eight bytes at a time. Texts are short: memchr's set-up costs more
/// than it saves here, a byte loop twice this (measured with callgrind).
#[inline]
fn has_cr(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const CRS: u64 = ONES * b'\r' as u64;
    let n = s.len();
    if n < 8 {
        // `contains` calls memchr, whose set-up costs more than these few bytes.
        #[allow(clippy::manual_contains)]
        return s.iter().any(|&b| b == b'\r');
    }
    // A byte of `x` is zero where the word has a `\r`; this test for a zero byte is exact.
    !every_word(n, |at| {
        let x = word(s, at) ^ CRS;
        x.wrapping_sub(ONES) & !x & HIGHS == 0
    })
}

/// Whether `f` holds for every eight-byte word of a slice of `n ≥ 8` bytes (given by offset):
/// every eighth offset, then the last eight bytes, overlapping the word before when `n` is not
/// a multiple of 8.
#[inline]
fn every_word(n: usize, mut f: impl FnMut(usize) -> bool) -> bool {
    let mut at = 0;
    while at + 8 < n {
        if !f(at) {
            return false;
        }
        at += 8;
    }
    f(n - 8)
}

#[inline]
fn word(s: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(s[at..at + 8].try_into().expect("eight bytes"))
}

/// Whether two element names are equal, compared eight bytes at a time in line: names are
/// short, and a call to `memcmp` per member costs more than the comparison (callgrind).
#[inline]
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    every_word(n, |at| word(a, at) == word(b, at))
}

/// The element name without its prefix (names are short: a plain scan beats memchr's set-up).
fn local_name<'b>(e: &'b BytesStart<'_>) -> &'b [u8] {
    let raw = e.name().into_inner();
    match raw.iter().rposition(|&b| b == b':') {
        Some(i) => &raw[i + 1..],
        None => raw,
    }
}

fn bad_text(op: &'static str) -> KareoError {
    KareoError::Xml {
        op,
        position: 0,
        reason: "invalid text encoding".into(),
    }
}

#[inline]
fn is_nil(e: &BytesStart<'_>) -> bool {
    !e.attributes_raw().is_empty() && has_nil(e)
}

#[inline(never)]
fn has_nil(e: &BytesStart<'_>) -> bool {
    e.attributes().flatten().any(|a| {
        a.key.local_name().as_ref() == b"nil" && matches!(a.value.as_ref(), b"true" | b"1")
    })
}

/// The first of `ms` at or after `from` named exactly `raw`.
#[inline]
fn next_in_order(ms: &[crate::schema::Member], from: usize, raw: &[u8]) -> Option<usize> {
    let i = ms
        .get(from..)?
        .iter()
        .position(|m| same_name(m.name.as_bytes(), raw))?;
    Some(from + i)
}

/// The member of `def` named `name` (raw element name, maybe prefixed). Kareo sends members in
/// schema order, so the search starts after the last member read (usually a match at once),
/// then falls back to the index (a repeated member, a member out of order, a prefixed name).
fn find_member(def: &'static TypeDef, cursor: &mut u16, raw: &[u8]) -> Option<usize> {
    let ms = def.members;
    let from = *cursor as usize;
    if let Some(i) = next_in_order(ms, from, raw) {
        *cursor = (i + 1) as u16;
        return Some(i);
    }
    let name = match raw.iter().rposition(|&b| b == b':') {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    if from > 0 && ms[from - 1].name.as_bytes() == name {
        return Some(from - 1);
    }
    let i = def.index_of(name)?;
    if i >= from {
        *cursor = (i + 1) as u16;
    }
    Some(i)
}

enum Member {
    Nested(Open),
    Leaf(u16),
    Skip,
}

/// What a member element of the open record is: unknown members (a newer Kareo) and nil
/// members are skipped.
fn member_of(open: &mut Open, name: &[u8], e: &BytesStart<'_>) -> Member {
    let def = open.rec.type_def();
    let Some(idx) = find_member(def, &mut open.cursor, name) else {
        return Member::Skip;
    };
    if is_nil(e) {
        return Member::Skip;
    }
    match def.members[idx].ty {
        Ty::Complex(t) => Member::Nested(Open::new(Some(idx as u16), Record::new(t), 0)),
        _ => Member::Leaf(idx as u16),
    }
}

fn check_error(op: &'static str, r: &Record) -> Res<()> {
    if r.bool("IsError").ok().flatten() != Some(true) {
        return Ok(());
    }
    let text = r.get("ErrorMessage").unwrap_or("").to_string();
    match parse_throttle_message(&text) {
        Some(interval) => Err(Box::new(KareoError::Throttled { op, interval })),
        None => Err(Box::new(KareoError::Api { op, text })),
    }
}

/// Every flag is checked: Kareo's guide says `SecurityResultSuccess` true means a problem,
/// Kareo's own sample code treats false as the failure. This reads true as success and also
/// requires `Authenticated`, `Authorized` and `CustomerKeyValid` to be true when present.
/// `PermissionsMissing` alone fails nothing while `Authorized` is true (Kareo answered what
/// the user may read): its names are logged (permission names, never values).
fn check_security(op: &'static str, r: &Record) -> Res<()> {
    let is_false = |m: &str| r.bool(m).ok().flatten() == Some(false);
    let mut flags = SecurityFlags {
        not_authenticated: is_false("Authenticated"),
        not_authorized: is_false("Authorized"),
        customer_key_invalid: is_false("CustomerKeyValid"),
        result_not_success: is_false("SecurityResultSuccess"),
        permissions_missing: Vec::new(),
    };
    if let Some(items) = r
        .record("PermissionsMissing")
        .and_then(|pm| pm.list("Permission"))
    {
        flags.permissions_missing = items
            .iter()
            .filter_map(|v| match v {
                Nested::Text(t) if !t.is_empty() => Some(t.clone()),
                _ => None,
            })
            .collect();
    }
    let failed = SecurityFlags {
        permissions_missing: Vec::new(),
        ..flags.clone()
    } != SecurityFlags::default();
    if !failed {
        if !flags.permissions_missing.is_empty() {
            tracing::warn!(
                op,
                missing = %flags.permissions_missing.join(","),
                "Kareo answered, naming permissions the API user lacks"
            );
        }
        return Ok(());
    }
    Err(Box::new(KareoError::Security {
        op,
        flags,
        text: r.get("SecurityResult").unwrap_or("").to_string(),
    }))
}

/// The record of a single-record operation: the result without ErrorResponse and
/// SecurityResponse; when what remains is one nested record (GetAppointment's `Appointment`,
/// GetPatient's `Patient`), that record.
fn single_payload(rec: Record) -> Record {
    rec.without(&RESPONSE_BASE)
        .into_only_record()
        .unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;
    use proptest::prelude::*;

    const ENV_OPEN: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">"#;
    const OK_HEAD: &str = r#"<ErrorResponse><ErrorMessage i:nil="true"/><IsError>false</IsError><StackTrace i:nil="true"/></ErrorResponse><SecurityResponse><Authenticated>true</Authenticated><Authorized>true</Authorized><CustomerId>77</CustomerId><CustomerKeyValid>true</CustomerKeyValid><PermissionsMissing i:nil="true"/><PracticesAuthorized><PracticeID xmlns:a="http://schemas.microsoft.com/2003/10/Serialization/Arrays"><a:int>1</a:int></PracticeID></PracticesAuthorized><SecurityResult>Success</SecurityResult><SecurityResultSuccess>true</SecurityResultSuccess></SecurityResponse>"#;

    fn response(op: &str, inner: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>{ENV_OPEN}<s:Body><{op}Response xmlns="http://www.kareo.com/api/schemas/"><{op}Result xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{inner}</{op}Result></{op}Response></s:Body></s:Envelope>"#
        )
    }

    fn read(op: &str, body: &str) -> Result<Vec<Record>, KareoError> {
        ResponseReader::new(schema::op(op).unwrap(), body.as_bytes()).collect_all()
    }

    /// The first patient of a GetPatients response whose one `PatientData` holds `members`.
    fn one_patient(members: &str) -> Record {
        let body = response(
            "GetPatients",
            &format!("{OK_HEAD}<Patients><PatientData>{members}</PatientData></Patients>"),
        );
        read("GetPatients", &body).unwrap().swap_remove(0)
    }

    #[test]
    fn list_items_stream_with_escapes_nil_and_unknown_members() {
        let body = response(
            "GetPatients",
            &format!(
                "{OK_HEAD}<Patients><PatientData><CreatedDate>9/1/2026 8:00:00 AM</CreatedDate><FirstName>Zo&#235;</FirstName><ID>11</ID><LastModifiedDate>9/23/2026 1:00:00 PM</LastModifiedDate><LastName>O&apos;Brien &amp; S&#248;n</LastName><MiddleName i:nil=\"true\"/><NewMember2027>x</NewMember2027><Notes><![CDATA[a<b]]></Notes><PracticeId>1</PracticeId></PatientData><PatientData><ID>12</ID><LastName></LastName></PatientData></Patients>"
            ),
        );
        let recs = read("GetPatients", &body).unwrap();
        assert_eq!(recs.len(), 2);
        let r = &recs[0];
        assert_eq!(r.type_name(), "PatientData");
        assert_eq!(r.id(), Some("11"));
        assert_eq!(r.get("FirstName"), Some("Zoë"));
        assert_eq!(r.get("LastName"), Some("O'Brien & Søn"));
        assert_eq!(r.get("MiddleName"), None, "nil is absent");
        assert_eq!(
            r.get("Notes"),
            None,
            "Notes is not a PatientData member: skipped"
        );
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            r.version(ny).unwrap().unwrap().to_rfc3339(),
            "2026-09-23T17:00:00+00:00"
        );
        assert_eq!(recs[1].get("LastName"), Some(""), "empty is not absent");
        assert_eq!(recs[1].get("FirstName"), None);
    }

    #[test]
    fn prefixed_pretty_printed_with_header_and_k7() {
        let body = format!(
            r#"{ENV_OPEN}
  <s:Header><ActivityId xmlns="http://schemas.microsoft.com/2004/09/ServiceModel/Diagnostics">x</ActivityId></s:Header>
  <s:Body>
    <k:GetServiceLocationsResponse xmlns:k="http://www.kareo.com/api/schemas/">
      <k:GetServiceLocationsResult xmlns:a="http://www.kareo.com/api/schemas">
        {OK_HEAD}
        <a:ServiceLocations>
          <a:ServiceLocationData>
            <a:ID>3</a:ID>
            <a:ModifiedDate>2026-09-23T13:00:00</a:ModifiedDate>
            <a:Name>Main &amp; 5th</a:Name>
          </a:ServiceLocationData>
        </a:ServiceLocations>
      </k:GetServiceLocationsResult>
    </k:GetServiceLocationsResponse>
  </s:Body>
</s:Envelope>"#
        );
        let recs = read("GetServiceLocations", &body).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].get("Name"), Some("Main & 5th"));
        assert_eq!(recs[0].kind().version, Some("ModifiedDate"));
        assert!(recs[0].version(chrono_tz::UTC).unwrap().is_some());
    }

    #[test]
    fn the_placeholder_item_of_an_empty_list_is_skipped() {
        for items in [
            "<AppointmentData/>",
            "<AppointmentData><ID></ID></AppointmentData>",
            "",
        ] {
            let body = response(
                "GetAppointments",
                &format!("{OK_HEAD}<Appointments>{items}</Appointments>"),
            );
            assert!(
                read("GetAppointments", &body).unwrap().is_empty(),
                "{items}"
            );
        }
        let body = response(
            "GetAppointments",
            &format!("{OK_HEAD}<Appointments i:nil=\"true\"/>"),
        );
        assert!(read("GetAppointments", &body).unwrap().is_empty());
    }

    #[test]
    fn throttle_in_error_response() {
        let body = response("GetPatients", "<ErrorResponse><ErrorMessage>429: GetPatients endpoint requested more than allowed over time interval 1000 milliseconds. Please wait to try again.</ErrorMessage><IsError>true</IsError></ErrorResponse><Patients><PatientData><ID>1</ID></PatientData></Patients>");
        match read("GetPatients", &body) {
            Err(KareoError::Throttled { interval, .. }) => assert_eq!(interval.as_millis(), 1000),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn api_error_keeps_text_out_of_display() {
        let body = response("GetPatients", "<ErrorResponse><ErrorMessage>Patient Jane Roe not found</ErrorMessage><IsError>true</IsError></ErrorResponse>");
        let e = read("GetPatients", &body).unwrap_err();
        assert_eq!(e.class(), "api");
        assert!(!e.to_string().contains("Jane"));
        assert_eq!(e.kareo_text(), Some("Patient Jane Roe not found"));
    }

    #[test]
    fn every_security_flag_is_checked() {
        for (flag, shown) in [
            ("Authenticated", "Authenticated=false"),
            ("Authorized", "Authorized=false"),
            ("CustomerKeyValid", "CustomerKeyValid=false"),
            ("SecurityResultSuccess", "SecurityResultSuccess=false"),
        ] {
            let head = OK_HEAD.replace(
                &format!("<{flag}>true</{flag}>"),
                &format!("<{flag}>false</{flag}>"),
            );
            let body = response(
                "GetPatients",
                &format!("{head}<Patients><PatientData><ID>1</ID></PatientData></Patients>"),
            );
            let e = read("GetPatients", &body).unwrap_err();
            assert_eq!(e.class(), "security");
            assert!(e.to_string().contains(shown), "{e}");
        }
        let missing = r#"<PermissionsMissing><Permission xmlns:a="http://schemas.microsoft.com/2003/10/Serialization/Arrays"><a:string>ViewPatient</a:string></Permission></PermissionsMissing>"#;
        // Authorized, with a permission named missing: the answer stands.
        let head = OK_HEAD.replace(r#"<PermissionsMissing i:nil="true"/>"#, missing);
        let body = response(
            "GetPatients",
            &format!("{head}<Patients><PatientData><ID>1</ID></PatientData></Patients>"),
        );
        assert_eq!(read("GetPatients", &body).unwrap().len(), 1);
        // Not authorized: the failure names the missing permission.
        let head = head.replace(
            "<Authorized>true</Authorized>",
            "<Authorized>false</Authorized>",
        );
        let e = read("GetPatients", &response("GetPatients", &head)).unwrap_err();
        assert!(
            e.to_string().contains("PermissionsMissing=[ViewPatient]"),
            "{e}"
        );
    }

    #[test]
    fn soap_fault() {
        let body = format!(
            r#"{ENV_OPEN}<s:Body><s:Fault><faultcode xmlns:a="http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher">a:InternalServiceFault</faultcode><faultstring xml:lang="en-US">The server was unable to process the request due to an internal error.</faultstring></s:Fault></s:Body></s:Envelope>"#
        );
        match read("GetCharges", &body) {
            Err(KareoError::Fault { code, text, .. }) => {
                assert_eq!(code, "a:InternalServiceFault");
                assert!(text.starts_with("The server was unable"));
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn schema_mismatch_names_what_and_where() {
        let body = response("GetPayments", OK_HEAD);
        let e = read("GetPatients", &body).unwrap_err();
        assert_eq!(e.to_string(), "GetPatients: response does not match the schema: <GetPaymentsResponse> where <GetPatientsResponse> or <Fault> belongs");
        let body = response(
            "GetPatients",
            &format!("{OK_HEAD}<Patients><Patient><ID>1</ID></Patient></Patients>"),
        );
        assert!(read("GetPatients", &body)
            .unwrap_err()
            .to_string()
            .contains("<Patient> where <PatientData> belongs"));
    }

    #[test]
    fn truncated_and_malformed_bodies_are_xml_errors() {
        let full = response("GetPatients", &format!("{OK_HEAD}<Patients><PatientData><ID>1</ID><LastName>Doe</LastName></PatientData></Patients>"));
        let cut = &full[..full.find("Doe").unwrap()];
        let e = read("GetPatients", cut).unwrap_err();
        assert_eq!(e.class(), "xml");
        assert!(!e.to_string().contains("Doe"));
        let bad = full.replace("</LastName>", "</FirstName>");
        assert_eq!(read("GetPatients", &bad).unwrap_err().class(), "xml");
        assert_eq!(read("GetPatients", "").unwrap_err().class(), "schema");
    }

    #[test]
    fn single_record_operations() {
        let body = response("GetAppointment", &format!("{OK_HEAD}<Appointment><AppointmentId>42</AppointmentId><AppointmentStatus>Cancelled</AppointmentStatus><IsDeleted>true</IsDeleted><PatientSummary><FirstName>A</FirstName><PatientId>9</PatientId></PatientSummary><ResourceIds xmlns:a=\"http://schemas.microsoft.com/2003/10/Serialization/Arrays\"><a:long>7</a:long><a:long>8</a:long></ResourceIds></Appointment>"));
        let recs = read("GetAppointment", &body).unwrap();
        assert_eq!(recs.len(), 1);
        let a = &recs[0];
        assert_eq!(a.type_name(), "AppointmentCreate");
        assert_eq!(a.id(), Some("42"));
        assert_eq!(a.bool("IsDeleted").unwrap(), Some(true));
        let j = a.to_json();
        assert_eq!(j["PatientSummary"]["PatientId"], "9");
        assert_eq!(j["ResourceIds"], serde_json::json!(["7", "8"]));

        let body = response("CreatePatient", &format!("{OK_HEAD}<PatientID>1000123</PatientID><PracticeID>1</PracticeID><PracticeName>X</PracticeName>"));
        let recs = read("CreatePatient", &body).unwrap();
        assert_eq!(recs[0].i64("PatientID").unwrap(), Some(1_000_123));
        assert!(recs[0].get("ErrorResponse").is_none());
    }

    #[test]
    fn paging_key_is_known_before_the_records() {
        let body = response("GetAllPatients", &format!("{OK_HEAD}<Key><nextStartKey>501</nextStartKey></Key><Patients><PatientBatchData><ID>1</ID></PatientBatchData></Patients>"));
        let mut r = ResponseReader::new(schema::op("GetAllPatients").unwrap(), body.as_bytes());
        let first = r.next_record().unwrap().unwrap();
        assert_eq!(first.id(), Some("1"));
        assert_eq!(r.next_start_key(), Some(501));
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn line_ends_are_normalised_in_short_and_long_texts_and_a_sent_cr_is_kept() {
        let r = one_patient("<AddressLine1>a\r\nb</AddressLine1><AddressLine2>twelve bytes and then\r\nmore\rend</AddressLine2><City>x&#13;\r\n</City><ID>1</ID><LastName>0123456\r</LastName>");
        assert_eq!(r.get("AddressLine1"), Some("a\nb"));
        assert_eq!(
            r.get("AddressLine2"),
            Some("twelve bytes and then\nmore\nend")
        );
        assert_eq!(r.get("City"), Some("x\r\n"));
        assert_eq!(r.get("LastName"), Some("0123456\n"));
    }

    #[test]
    fn members_out_of_order_repeated_nil_or_with_attributes_read_as_in_order() {
        let r = one_patient("<LastName>Doe</LastName><ID>7</ID><FirstName xmlns=\"http://www.kareo.com/api/schemas/\">Zoë</FirstName><MiddleName i:nil=\"true\"/><City>Ørsted</City><City>again</City>");
        assert_eq!(r.get("LastName"), Some("Doe"));
        assert_eq!(r.id(), Some("7"));
        assert_eq!(r.get("FirstName"), Some("Zoë"));
        assert_eq!(r.get("MiddleName"), None);
        assert_eq!(
            r.get("City"),
            Some("Ørsted"),
            "the first of a repeated member"
        );
    }

    proptest! {
        #[test]
        fn the_word_scans_agree_with_byte_loops(
            a in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'a'), any::<u8>()], 0..40),
            flip in any::<proptest::sample::Index>(),
        ) {
            prop_assert_eq!(has_cr(&a), a.contains(&b'\r'));
            prop_assert!(same_name(&a, &a));
            let mut b = a.clone();
            if !b.is_empty() {
                let i = flip.index(b.len());
                b[i] ^= 1;
            }
            prop_assert_eq!(same_name(&a, &b), a == b);
            prop_assert_eq!(same_name(&a, &a[..a.len().saturating_sub(1)]), a.is_empty());
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ResponseReader::new(schema::op("GetPatients").unwrap(), &bytes[..]).collect_all();
        }

        #[test]
        fn never_panics_on_mutated_responses(cut in 0usize..600, flip in 0usize..600, byte in any::<u8>()) {
            let full = response("GetPatients", &format!("{OK_HEAD}<Patients><PatientData><ID>1</ID><LastName>D&amp;e</LastName></PatientData></Patients>"));
            let mut b = full.into_bytes();
            let n = b.len();
            b[flip % n] = byte;
            b.truncate(cut.max(1) * n / 600 + 1);
            let _ = ResponseReader::new(schema::op("GetPatients").unwrap(), &b[..]).collect_all();
        }
    }
}
