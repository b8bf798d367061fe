//! Reading requests the way WCF's DataContractSerializer does, walking [`kareo::schema`].

use kareo::schema::{Member, Ns, OpDef, Ty, TypeDef};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::xmlout::SOAP_NS;

const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

/// A deserialized value.
#[derive(Debug)]
pub(crate) enum Val {
    Nil,
    Text(String),
    Obj(Obj),
    List(Vec<Val>),
}

/// A deserialized complex value: the members that were read, by name.
#[derive(Debug, Default)]
pub(crate) struct Obj {
    pub fields: Vec<(&'static str, Val)>,
}

impl Obj {
    pub(crate) fn get(&self, name: &str) -> Option<&Val> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The text of a scalar member (absent or nil → `None`).
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Val::Text(t)) => Some(t.as_str()),
            _ => None,
        }
    }

    pub(crate) fn obj(&self, name: &str) -> Option<&Obj> {
        match self.get(name) {
            Some(Val::Obj(o)) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn list(&self, name: &str) -> &[Val] {
        match self.get(name) {
            Some(Val::List(l)) => l,
            _ => &[],
        }
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub(crate) enum ParseError {
    /// Not well-formed XML (HTTP 400).
    Malformed,
    /// Not a SOAP 1.1 envelope.
    VersionMismatch,
    /// The body's operation element is another operation (ContractFilter mismatch).
    OtherOperation,
    /// A formatter error (DeserializationFailed fault) with WCF's text.
    Deserialization(String),
}

enum Ev {
    Start {
        ns: Option<String>,
        local: String,
        nil: bool,
    },
    Text(String),
    End,
    Eof,
}

struct De<'a> {
    r: NsReader<&'a [u8]>,
    input: &'a str,
}

impl<'a> De<'a> {
    fn new(input: &'a str) -> De<'a> {
        let mut r = NsReader::from_reader(input.as_bytes());
        r.config_mut().expand_empty_elements = true;
        De { r, input }
    }

    fn next(&mut self) -> Result<Ev, ParseError> {
        loop {
            let (res, ev) = self
                .r
                .read_resolved_event()
                .map_err(|_| ParseError::Malformed)?;
            let ns = match res {
                ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.0).into_owned()),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(_) => return Err(ParseError::Malformed),
            };
            match ev {
                Event::Start(e) => {
                    let local = std::str::from_utf8(e.local_name().into_inner())
                        .map_err(|_| ParseError::Malformed)?
                        .to_string();
                    let mut attrs = e.attributes();
                    let nil = attrs.has_nil(&self.r);
                    return Ok(Ev::Start { ns, local, nil });
                }
                Event::End(_) => return Ok(Ev::End),
                Event::Text(t) => {
                    let s = t.decode().map_err(|_| ParseError::Malformed)?;
                    return Ok(Ev::Text(s.into_owned()));
                }
                Event::CData(c) => {
                    let s = c.decode().map_err(|_| ParseError::Malformed)?;
                    return Ok(Ev::Text(s.into_owned()));
                }
                Event::GeneralRef(r) => {
                    if let Ok(Some(c)) = r.resolve_char_ref() {
                        return Ok(Ev::Text(c.to_string()));
                    }
                    let name = r.decode().map_err(|_| ParseError::Malformed)?;
                    let s = match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => return Err(ParseError::Malformed),
                    };
                    return Ok(Ev::Text(s.to_string()));
                }
                Event::DocType(_) => return Err(ParseError::Malformed),
                Event::Eof => return Ok(Ev::Eof),
                Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
            }
        }
    }

    /// Skips the rest of the current element (its start was just read).
    fn skip(&mut self) -> Result<(), ParseError> {
        let mut depth = 1usize;
        loop {
            match self.next()? {
                Ev::Start { .. } => depth += 1,
                Ev::End => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Ev::Text(_) => {}
                Ev::Eof => return Err(ParseError::Malformed),
            }
        }
    }

    /// Reads the text content of the current element (child elements are skipped).
    fn text(&mut self) -> Result<String, ParseError> {
        let mut s = String::new();
        loop {
            match self.next()? {
                Ev::Text(t) => s.push_str(&t),
                Ev::Start { .. } => self.skip()?,
                Ev::End => return Ok(s),
                Ev::Eof => return Err(ParseError::Malformed),
            }
        }
    }

    /// "Error in line L position C." for the reader's position.
    fn position(&self) -> String {
        let pos = (self.r.buffer_position() as usize).min(self.input.len());
        let before = &self.input.as_bytes()[..pos];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = pos
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        format!("Error in line {line} position {col}.")
    }

    /// Reads the members of `t` (the start of its element, `elem`, was just read).
    fn obj(&mut self, t: &'static TypeDef, elem: &str, elem_ns: &str) -> Result<Obj, ParseError> {
        let n = t.members.len();
        let mut read = vec![false; n];
        let mut cursor = 0usize;
        let mut fields: Vec<(&'static str, Val)> = Vec::new();
        loop {
            match self.next()? {
                Ev::Text(_) => {}
                Ev::Eof => return Err(ParseError::Malformed),
                Ev::End => {
                    if let Some(k) = (cursor..n).find(|&k| t.members[k].required && !read[k]) {
                        return Err(self.expecting(
                            format!("'EndElement' '{elem}' from namespace '{elem_ns}'"),
                            t.members[k].name,
                        ));
                    }
                    return Ok(Obj { fields });
                }
                Ev::Start { ns, local, nil } => {
                    let found = (cursor..n).find(|&j| {
                        let m = &t.members[j];
                        m.name == local && ns.as_deref() == Some(m.ns.uri())
                    });
                    let Some(j) = found else {
                        self.skip()?;
                        continue;
                    };
                    if let Some(k) = (cursor..j).find(|&k| t.members[k].required && !read[k]) {
                        let ns = ns.unwrap_or_default();
                        return Err(self.expecting(
                            format!("'Element' '{local}' from namespace '{ns}'"),
                            t.members[k].name,
                        ));
                    }
                    let m = &t.members[j];
                    let v = if nil {
                        self.skip()?;
                        Val::Nil
                    } else {
                        self.value(m, &local, ns.as_deref().unwrap_or_default())?
                    };
                    read[j] = true;
                    if m.repeated {
                        cursor = j;
                        match fields.iter_mut().find(|(name, _)| *name == m.name) {
                            Some((_, Val::List(items))) => items.push(v),
                            _ => fields.push((m.name, Val::List(vec![v]))),
                        }
                    } else {
                        cursor = j + 1;
                        fields.push((m.name, v));
                    }
                }
            }
        }
    }

    fn expecting(&self, found: String, name: &str) -> ParseError {
        ParseError::Deserialization(format!(
            "{} {found} is not expected. Expecting element '{name}'.",
            self.position()
        ))
    }

    /// Reads the value of member `m` (its start element was just read).
    fn value(&mut self, m: &'static Member, local: &str, ns: &str) -> Result<Val, ParseError> {
        match m.ty {
            Ty::Complex(t) => {
                let def = t.def();
                let o = self.obj(def, local, ns)?;
                if def.array_item().is_some() && def.name.starts_with("ArrayOf") {
                    let items = o.fields.into_iter().next().map(|(_, v)| v);
                    return Ok(match items {
                        Some(Val::List(l)) => Val::List(l),
                        _ => Val::List(Vec::new()),
                    });
                }
                Ok(Val::Obj(o))
            }
            Ty::Str => Ok(Val::Text(self.text()?)),
            ty => {
                let raw = self.text()?;
                let v = raw.trim();
                let (ok, clr) = match ty {
                    Ty::Bool => (matches!(v, "true" | "false" | "1" | "0"), "Boolean"),
                    Ty::Int => (v.parse::<i32>().is_ok(), "Int32"),
                    Ty::Long => (v.parse::<i64>().is_ok(), "Int64"),
                    Ty::Double => (
                        v.parse::<f64>().is_ok() || matches!(v, "INF" | "-INF" | "NaN"),
                        "Double",
                    ),
                    Ty::Decimal => (
                        !v.contains(['e', 'E']) && v.parse::<f64>().is_ok(),
                        "Decimal",
                    ),
                    Ty::DateTime => (crate::clock::is_xs_datetime(v), "DateTime"),
                    Ty::Guid => (is_guid(v), "Guid"),
                    Ty::Enum(e) => (e.def().values.contains(&v), e.def().name),
                    Ty::Str | Ty::Complex(_) => (true, "String"),
                };
                if !ok {
                    return Err(ParseError::Deserialization(format!(
                        "{} There was an error deserializing the object of type {clr}. The value cannot be parsed as the type '{clr}'.",
                        self.position()
                    )));
                }
                Ok(Val::Text(v.to_string()))
            }
        }
    }
}

fn is_guid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// WCF reads the whole message before dispatching: anything not well-formed is rejected first.
fn well_formed(body: &str) -> Result<(), ParseError> {
    let mut de = De::new(body);
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        match de.next()? {
            Ev::Start { .. } => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ev::End => depth = depth.checked_sub(1).ok_or(ParseError::Malformed)?,
            Ev::Text(t) => {
                if depth == 0 && !t.trim().is_empty() {
                    return Err(ParseError::Malformed);
                }
            }
            Ev::Eof => {
                return if depth == 0 && roots == 1 {
                    Ok(())
                } else {
                    Err(ParseError::Malformed)
                }
            }
        }
    }
}

/// Reads a request for `op`. `Ok(None)`: the wrapper (`request`) was missing or nil.
pub(crate) fn parse_request(body: &str, op: &'static OpDef) -> Result<Option<Obj>, ParseError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    well_formed(body)?;
    let mut de = De::new(body);
    // Envelope.
    loop {
        match de.next()? {
            Ev::Text(t) if t.trim().is_empty() => {}
            Ev::Start { ns, local, .. } if local == "Envelope" => match ns.as_deref() {
                Some(SOAP_NS) => break,
                Some(SOAP12_NS) => return Err(ParseError::VersionMismatch),
                _ => return Err(ParseError::VersionMismatch),
            },
            _ => return Err(ParseError::Malformed),
        }
    }
    // Header?, Body.
    loop {
        match de.next()? {
            Ev::Text(_) => {}
            Ev::Start { ns, local, .. } => {
                if local == "Body" && ns.as_deref() == Some(SOAP_NS) {
                    break;
                }
                de.skip()?;
            }
            Ev::End | Ev::Eof => return Err(ParseError::OtherOperation),
        }
    }
    // The operation element.
    let (op_ns, op_local) = loop {
        match de.next()? {
            Ev::Text(_) => {}
            Ev::Start { ns, local, .. } => break (ns, local),
            Ev::End | Ev::Eof => return Err(ParseError::OtherOperation),
        }
    };
    if op_local != op.name {
        return Err(ParseError::OtherOperation);
    }
    if op_ns.as_deref() != Some(Ns::K.uri()) {
        return Err(ParseError::Deserialization(format!(
            "OperationFormatter encountered an invalid Message body. Expected to find node type 'Element' with name '{}' and namespace '{}'. Found node type 'Element' with name '{}' and namespace '{}'",
            op.name,
            Ns::K.uri(),
            op_local,
            op_ns.unwrap_or_default()
        )));
    }
    // The wrapper: the first matching child; anything else is skipped.
    let mut req: Option<Obj> = None;
    let mut seen = false;
    loop {
        match de.next()? {
            Ev::Text(_) => {}
            Ev::End => break,
            Ev::Eof => return Err(ParseError::Malformed),
            Ev::Start { ns, local, nil } => {
                if !seen && local == op.wrapper && ns.as_deref() == Some(Ns::K.uri()) {
                    seen = true;
                    if nil {
                        de.skip()?;
                    } else {
                        let o = de.obj(op.request.def(), &local, Ns::K.uri()).map_err(|e| {
                            match e {
                                ParseError::Deserialization(inner) => {
                                    ParseError::Deserialization(format!(
                                        "The formatter threw an exception while trying to deserialize the message: There was an error while trying to deserialize parameter {}:{}. The InnerException message was '{}'.  Please see InnerException for more details.",
                                        Ns::K.uri(),
                                        op.wrapper,
                                        inner
                                    ))
                                }
                                other => other,
                            }
                        })?;
                        req = Some(o);
                    }
                } else {
                    de.skip()?;
                }
            }
        }
    }
    // The rest must be well-formed.
    loop {
        if let Ev::Eof = de.next()? {
            break;
        }
    }
    Ok(req)
}
