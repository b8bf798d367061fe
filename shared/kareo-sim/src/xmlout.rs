//! Writing responses the way WCF does, walking [`kareo::schema`].

use std::collections::HashSet;
use std::io::Write;

use chrono_tz::Tz;
use kareo::schema::{self, Member, Ns, OpDef, Ty, TypeDef};

use crate::Row;

pub(crate) const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const DISPATCHER_NS: &str =
    "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher";
const ADDRESSING_NONE_NS: &str = "http://schemas.microsoft.com/ws/2005/05/addressing/none";

/// Which members of a record to write; `None` = all.
pub(crate) type Sel = Option<HashSet<&'static str>>;

/// A response value, matched to schema members by name when written.
pub(crate) enum Out {
    /// `<X i:nil="true"/>`.
    Nil,
    /// A scalar.
    Text(String),
    /// A complex value: members by name (written in schema order; unknown names ignored).
    Obj(Vec<(&'static str, Out)>),
    /// The items of a WCF array type.
    List(Vec<Out>),
    /// The items of a record array (an empty one gets the placeholder item).
    Rows(Vec<Row>, Sel),
    /// One record.
    Row(Row),
    /// A record array whose items are streamed separately: the writer notes the offset.
    Splice,
}

/// How a response document is dressed.
#[derive(Clone, Copy, Default)]
pub(crate) struct Style {
    pub pretty: bool,
    pub activity_header: Option<u128>,
}

fn prefix(ns: Ns) -> &'static str {
    match ns {
        Ns::K => "",
        Ns::K7 => "a",
        Ns::Arr => "b",
        Ns::Sys => "c",
        Ns::Ser => "d",
        Ns::Wcf => "e",
        Ns::Appt => "f",
    }
}

fn xmlns_attr(ns: Ns) -> &'static str {
    match ns {
        Ns::K => "xmlns",
        Ns::K7 => "xmlns:a",
        Ns::Arr => "xmlns:b",
        Ns::Sys => "xmlns:c",
        Ns::Ser => "xmlns:d",
        Ns::Wcf => "xmlns:e",
        Ns::Appt => "xmlns:f",
    }
}

/// Escapes text (and, with `attr`, quotes) into `out`.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' if attr => b"&quot;",
            b'\r' => b"&#xD;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
}

/// A tiny XML writer into a buffer, optionally pretty-printing (whitespace between elements
/// only, never inside a text value).
pub(crate) struct XmlW {
    pub buf: Vec<u8>,
    pretty: bool,
    depth: usize,
    /// Offset noted by [`Out::Splice`].
    pub splice: Option<usize>,
}

impl XmlW {
    pub(crate) fn new(pretty: bool) -> XmlW {
        XmlW {
            buf: Vec::with_capacity(4096),
            pretty,
            depth: 0,
            splice: None,
        }
    }

    fn indent(&mut self) {
        if self.pretty && !self.buf.is_empty() {
            self.buf.push(b'\n');
            for _ in 0..self.depth {
                self.buf.extend_from_slice(b"  ");
            }
        }
    }

    fn name(&mut self, p: &str, name: &str) {
        if !p.is_empty() {
            self.buf.extend_from_slice(p.as_bytes());
            self.buf.push(b':');
        }
        self.buf.extend_from_slice(name.as_bytes());
    }

    fn start(&mut self, p: &str, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.buf.push(b'<');
        self.name(p, name);
        for (k, v) in attrs {
            self.buf.push(b' ');
            self.buf.extend_from_slice(k.as_bytes());
            self.buf.extend_from_slice(b"=\"");
            escape_into(&mut self.buf, v, true);
            self.buf.push(b'"');
        }
    }

    pub(crate) fn open(&mut self, p: &str, name: &str, attrs: &[(&str, &str)]) {
        self.start(p, name, attrs);
        self.buf.push(b'>');
        self.depth += 1;
    }

    pub(crate) fn close(&mut self, p: &str, name: &str) {
        self.depth -= 1;
        self.indent();
        self.buf.extend_from_slice(b"</");
        self.name(p, name);
        self.buf.push(b'>');
    }

    pub(crate) fn empty(&mut self, p: &str, name: &str, attrs: &[(&str, &str)]) {
        self.start(p, name, attrs);
        self.buf.extend_from_slice(b"/>");
    }

    pub(crate) fn leaf(&mut self, p: &str, name: &str, text: &str) {
        if text.is_empty() {
            return self.empty(p, name, &[]);
        }
        self.start(p, name, &[]);
        self.buf.push(b'>');
        escape_into(&mut self.buf, text, false);
        self.buf.extend_from_slice(b"</");
        self.name(p, name);
        self.buf.push(b'>');
    }

    /// Writes a member with its value.
    pub(crate) fn member(&mut self, m: &'static Member, v: &Out) {
        let p = prefix(m.ns);
        match v {
            Out::Nil => self.empty(p, m.name, &[("i:nil", "true")]),
            Out::Text(t) => self.leaf(p, m.name, t),
            Out::Row(row) => self.row(m, row, &None),
            Out::Obj(fields) => {
                let Ty::Complex(t) = m.ty else {
                    return;
                };
                self.open(p, m.name, &[]);
                self.members(t.def(), fields);
                self.close(p, m.name);
            }
            Out::List(items) => {
                let Some(item) = array_item(m) else {
                    return;
                };
                let decl = foreign_decl(m, item);
                self.open(p, m.name, decl.as_slice());
                for it in items {
                    self.member(item, it);
                }
                self.close(p, m.name);
            }
            Out::Rows(rows, sel) => {
                let Some(item) = array_item(m) else {
                    return;
                };
                self.open(p, m.name, &[]);
                if rows.is_empty() {
                    self.empty(prefix(item.ns), item.name, &[]);
                }
                for r in rows {
                    self.row(item, r, sel);
                }
                self.close(p, m.name);
            }
            Out::Splice => {
                self.open(p, m.name, &[]);
                self.splice = Some(self.buf.len());
                self.close(p, m.name);
            }
        }
    }

    /// Writes the members of `t` present in `fields`, in schema order.
    pub(crate) fn members(&mut self, t: &'static TypeDef, fields: &[(&'static str, Out)]) {
        for m in t.members {
            if let Some((_, v)) = fields.iter().find(|(n, _)| *n == m.name) {
                self.member(m, v);
            }
        }
    }

    /// Writes one record as the element of `item` (a `*Data` member).
    pub(crate) fn row(&mut self, item: &'static Member, row: &Row, sel: &Sel) {
        let Ty::Complex(t) = item.ty else {
            return;
        };
        let p = prefix(item.ns);
        self.open(p, item.name, &[]);
        for m in t.def().members {
            if let Some(sel) = sel {
                if !sel.contains(m.name) {
                    continue;
                }
            }
            match m.ty {
                Ty::Complex(_) => {
                    if let Some(v) = nested_from_row(m, row) {
                        self.member(m, &v);
                    }
                }
                _ => {
                    if let Some(v) = row.get(m.name) {
                        self.leaf(prefix(m.ns), m.name, v);
                    }
                }
            }
        }
        self.close(p, item.name);
    }
}

fn array_item(m: &'static Member) -> Option<&'static Member> {
    match m.ty {
        Ty::Complex(t) => t.def().array_item(),
        _ => None,
    }
}

/// A local namespace declaration for array items in a namespace the result element does not
/// declare (WCF's Arrays namespace and friends).
fn foreign_decl(m: &Member, item: &Member) -> Vec<(&'static str, &'static str)> {
    if item.ns != m.ns && !matches!(item.ns, Ns::K | Ns::K7) {
        vec![(xmlns_attr(item.ns), item.ns.uri())]
    } else {
        Vec::new()
    }
}

/// Nested members carried in a flat row (see [`crate::Row`]).
fn nested_from_row(m: &'static Member, row: &Row) -> Option<Out> {
    if m.name == "ServiceLines" {
        let ids = row.get("ServiceLines")?;
        let enc = row.get("EncounterID").cloned().unwrap_or_default();
        let items = ids
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|id| {
                Out::Obj(vec![
                    ("EncounterID", Out::Text(enc.clone())),
                    ("ServiceLineID", Out::Text(id.trim().to_string())),
                ])
            })
            .collect();
        return Some(Out::List(items));
    }
    None
}

/// Writes a full response envelope for `op` with the result members in `result`.
pub(crate) fn envelope(op: &'static OpDef, result: &[(&'static str, Out)], style: Style) -> XmlW {
    envelope_named(op, op.name, op.result, result, style)
}

pub(crate) fn envelope_named(
    op: &'static OpDef,
    op_name: &str,
    result_name: &str,
    result: &[(&'static str, Out)],
    style: Style,
) -> XmlW {
    let mut w = XmlW::new(style.pretty);
    w.open("s", "Envelope", &[("xmlns:s", SOAP_NS)]);
    if let Some(id) = style.activity_header {
        w.open("s", "Header", &[]);
        let guid = guid_string(id);
        let corr = guid_string(id.rotate_left(64) ^ 0x9e37_79b9_7f4a_7c15);
        w.start(
            "",
            "ActivityId",
            &[
                ("CorrelationId", corr.as_str()),
                (
                    "xmlns",
                    "http://schemas.microsoft.com/2004/09/ServiceModel/Diagnostics",
                ),
            ],
        );
        w.buf.push(b'>');
        w.buf.extend_from_slice(guid.as_bytes());
        w.buf.extend_from_slice(b"</ActivityId>");
        w.close("s", "Header");
    }
    w.open("s", "Body", &[]);
    let response = format!("{op_name}Response");
    w.open("", &response, &[("xmlns", Ns::K.uri())]);
    let resp = op.response.def();
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    if resp.members.iter().any(|m| m.ns == Ns::K7) {
        attrs.push((xmlns_attr(Ns::K7), Ns::K7.uri()));
    }
    attrs.push(("xmlns:i", XSI_NS));
    w.open("", result_name, &attrs);
    w.members(resp, result);
    w.close("", result_name);
    w.close("", &response);
    w.close("s", "Body");
    w.close("s", "Envelope");
    w
}

/// A GUID-looking string from 128 bits.
pub(crate) fn guid_string(v: u128) -> String {
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A SOAP fault body (HTTP 500).
pub(crate) fn fault(code: &str, text: &str) -> Vec<u8> {
    let (code_ns, code) = match code {
        "ActionNotSupported" => (Some(ADDRESSING_NONE_NS), "a:ActionNotSupported"),
        "VersionMismatch" => (None, "s:VersionMismatch"),
        "DeserializationFailed" => (Some(DISPATCHER_NS), "a:DeserializationFailed"),
        _ => (Some(DISPATCHER_NS), "a:InternalServiceFault"),
    };
    let mut w = XmlW::new(false);
    w.open("s", "Envelope", &[("xmlns:s", SOAP_NS)]);
    w.open("s", "Body", &[]);
    w.open("s", "Fault", &[]);
    match code_ns {
        Some(ns) => {
            w.start("", "faultcode", &[("xmlns:a", ns)]);
            w.buf.push(b'>');
            w.buf.extend_from_slice(code.as_bytes());
            w.buf.extend_from_slice(b"</faultcode>");
        }
        None => w.leaf("", "faultcode", code),
    }
    w.start("", "faultstring", &[("xml:lang", "en-US")]);
    w.buf.push(b'>');
    escape_into(&mut w.buf, text, false);
    w.buf.extend_from_slice(b"</faultstring>");
    w.close("s", "Fault");
    w.close("s", "Body");
    w.close("s", "Envelope");
    w.buf
}

pub(crate) const INTERNAL_FAULT_TEXT: &str = "The server was unable to process the request due to an internal error.  For more information about the error, either turn on IncludeExceptionDetailInFaults (either from ServiceBehaviorAttribute or from the <serviceDebug> configuration behavior) on the server in order to send the exception information back to the client, or turn on tracing as per the Microsoft .NET Framework SDK documentation and inspect the server trace logs.";

pub(crate) fn internal_fault() -> Vec<u8> {
    fault("InternalServiceFault", INTERNAL_FAULT_TEXT)
}

/// `ErrorResponse` with every member.
pub(crate) fn error_response(msg: Option<&str>) -> Out {
    Out::Obj(vec![
        (
            "ErrorMessage",
            msg.map(|m| Out::Text(m.to_string())).unwrap_or(Out::Nil),
        ),
        (
            "IsError",
            Out::Text(if msg.is_some() { "true" } else { "false" }.into()),
        ),
        ("StackTrace", Out::Nil),
    ])
}

/// What the security check found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Auth {
    Ok,
    BadKey,
    /// No such user.
    BadUser,
    /// The user, with a wrong password (counts toward a lockout).
    BadPassword,
    /// The user is locked.
    Locked,
    /// Signed in, without permission for the operation.
    Denied,
}

/// `SecurityResponse` with every member, for a call of `op`.
pub(crate) fn security_response(auth: Auth, customer_id: i64, practice_id: i64, op: &str) -> Out {
    let b = |v: bool| Out::Text(if v { "true" } else { "false" }.into());
    let practices = || {
        Out::Obj(vec![(
            "PracticeID",
            Out::List(vec![Out::Text(practice_id.to_string())]),
        )])
    };
    match auth {
        Auth::Ok => Out::Obj(vec![
            ("Authenticated", b(true)),
            ("Authorized", b(true)),
            ("CustomerId", Out::Text(customer_id.to_string())),
            ("CustomerKeyValid", b(true)),
            ("PermissionsMissing", Out::Nil),
            ("PracticesAuthorized", practices()),
            ("SecurityResult", Out::Text("Success".into())),
            ("SecurityResultSuccess", b(true)),
        ]),
        Auth::Denied => Out::Obj(vec![
            ("Authenticated", b(true)),
            ("Authorized", b(false)),
            ("CustomerId", Out::Text(customer_id.to_string())),
            ("CustomerKeyValid", b(true)),
            (
                "PermissionsMissing",
                Out::Obj(vec![(
                    "Permission",
                    Out::List(vec![Out::Text(op.to_string())]),
                )]),
            ),
            ("PracticesAuthorized", practices()),
            (
                "SecurityResult",
                Out::Text("User does not have the required permissions".into()),
            ),
            ("SecurityResultSuccess", b(false)),
        ]),
        Auth::BadUser | Auth::BadPassword | Auth::BadKey | Auth::Locked => Out::Obj(vec![
            ("Authenticated", b(false)),
            ("Authorized", b(false)),
            ("CustomerId", Out::Nil),
            ("CustomerKeyValid", b(auth != Auth::BadKey)),
            ("PermissionsMissing", Out::Nil),
            ("PracticesAuthorized", Out::Nil),
            (
                "SecurityResult",
                Out::Text(
                    match auth {
                        Auth::BadKey => "Invalid customer key",
                        Auth::Locked => crate::LOCKED_TEXT,
                        _ => "Invalid user name and/or password",
                    }
                    .into(),
                ),
            ),
            ("SecurityResultSuccess", b(false)),
        ]),
    }
}

/// The head and tail of a list response around its items.
pub(crate) struct Frame {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub item: &'static Member,
}

/// The frame of a plain (unstyled) successful list response for `op`.
pub(crate) fn list_frame(op: &'static OpDef, customer_id: i64, practice_id: i64) -> Option<Frame> {
    let (list, item, _) = op.list_member()?;
    let result = vec![
        ("ErrorResponse", error_response(None)),
        (
            "SecurityResponse",
            security_response(Auth::Ok, customer_id, practice_id, ""),
        ),
        (list.name, Out::Splice),
    ];
    let w = envelope(op, &result, Style::default());
    let at = w.splice?;
    let mut head = w.buf;
    let tail = head.split_off(at);
    Some(Frame { head, tail, item })
}

/// Writes exactly what the server sends for the list operation `op` (no response variation,
/// the default configuration's `SecurityResponse`): benchmarks use it to make large bodies.
/// Record values are written as given (already in the wire's date form); `tz` is the zone the
/// rows' dates were formatted in and is not otherwise needed.
pub fn render_list_response<W: Write>(
    op: &str,
    rows: impl Iterator<Item = Row>,
    tz: Tz,
    mut w: W,
) -> std::io::Result<()> {
    let _ = tz;
    let def = crate::SimConfig::default();
    let op = schema::op(op).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "unknown operation")
    })?;
    let frame = list_frame(op, def.customer_id, def.practice_id).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a list operation")
    })?;
    w.write_all(&frame.head)?;
    let mut x = XmlW::new(false);
    let mut any = false;
    for r in rows {
        any = true;
        x.row(frame.item, &r, &None);
        if x.buf.len() >= 1 << 16 {
            w.write_all(&x.buf)?;
            x.buf.clear();
        }
    }
    if !any {
        x.empty(prefix(frame.item.ns), frame.item.name, &[]);
    }
    w.write_all(&x.buf)?;
    w.write_all(&frame.tail)?;
    Ok(())
}

/// Writes an empty placeholder item of `item` into `x`.
pub(crate) fn placeholder(x: &mut XmlW, item: &'static Member) {
    x.empty(prefix(item.ns), item.name, &[]);
}
