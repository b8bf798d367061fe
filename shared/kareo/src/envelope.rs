//! Request envelopes, written in Kareo's schema order.
//!
//! A request body is given as JSON (from the typed requests in [`crate::request`], or from a
//! file for `kareo-dock kareo envelope`) using Kareo's own member names. The writer walks the
//! operation's request type in the [`crate::schema`] table, so:
//!
//! - members go out in `xs:sequence` order, whatever order the JSON has;
//! - every element carries its schema's namespace (`k`, or `k7` for the service-location and
//!   procedure-code Fields/Filter, `arr` for WCF array items);
//! - an unknown or mis-cased member is an error naming it, never silently dropped;
//! - a required member that is missing is an error (a required complex member is written
//!   empty: `<Fields/>` asks for every field);
//! - `Filter` is always written, even empty (the service fails without it);
//! - From/To pairs (`FromLastModifiedDate`/`ToLastModifiedDate`, …) must come together;
//! - values are checked against the member's type (boolean, integers, `xs:dateTime`, guid,
//!   enumerations) and every text is escaped, `\r` included, so any string arrives intact;
//! - credentials go in `request/RequestHeader` (ClientVersion, CustomerKey, Password, User).

use serde_json::{Map, Value};

use crate::error::KareoError;
use crate::schema::{self, Member, Ns, OpDef, Ty, TypeDef};

/// SOAP 1.1 envelope namespace.
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The `SOAPAction` header value for an operation.
pub fn soap_action(op: &str) -> String {
    format!("\"http://www.kareo.com/api/schemas/KareoServices/{op}\"")
}

/// Kareo API credentials. `Debug` shows nothing but the user's length.
#[derive(Clone, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Credentials {
    /// The account's customer key.
    pub customer_key: String,
    /// API user name.
    pub user: String,
    /// API user's password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Placeholder credentials (for showing an envelope without real secrets).
    pub fn placeholder() -> Credentials {
        Credentials {
            customer_key: "CUSTOMER-KEY".into(),
            user: "USER".into(),
            password: "PASSWORD".into(),
        }
    }
}

/// Members written even when the request does not mention them.
const ALWAYS_SENT: [&str; 2] = ["Fields", "Filter"];

/// Writes the whole SOAP envelope for `op` with `body` (the wrapper's members other than the
/// credentials). `client_version` fills `RequestHeader/ClientVersion`.
pub fn write(
    op: &'static OpDef,
    creds: &Credentials,
    client_version: &str,
    body: &Value,
) -> Result<String, KareoError> {
    let mut w = Writer {
        out: String::with_capacity(1024),
        path: vec![op.wrapper],
        errors: Vec::new(),
    };
    let body = match body {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(KareoError::Request {
                op: op.name,
                path: op.wrapper.into(),
                reason: "the request body must be a JSON object".into(),
            })
        }
    };
    let mut body = body;
    for reserved in ["RequestHeader", "CustomerKey", "Password", "User"] {
        if body.contains_key(reserved) {
            return Err(KareoError::Request {
                op: op.name,
                path: format!("{}/{reserved}", op.wrapper),
                reason: "credentials come from the configured secret, not the request body".into(),
            });
        }
    }
    let header = serde_json::json!({
        "ClientVersion": client_version,
        "CustomerKey": creds.customer_key,
        "Password": creds.password,
        "User": creds.user,
    });
    let req_type = op.request.def();
    if req_type.member("RequestHeader").is_some() {
        body.insert("RequestHeader".into(), header);
    } else {
        // GetCustomerIdFromKey carries the credentials bare.
        for k in ["CustomerKey", "Password", "User"] {
            body.insert(k.into(), header[k].clone());
        }
    }
    w.out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    w.out.push_str(r#"<s:Envelope xmlns:s=""#);
    w.out.push_str(SOAP_ENV);
    w.out.push_str(r#""><s:Body><k:"#);
    w.out.push_str(op.name);
    for ns in Ns::ALL {
        w.out.push_str(" xmlns:");
        w.out.push_str(ns.prefix());
        w.out.push_str("=\"");
        w.out.push_str(ns.uri());
        w.out.push('"');
    }
    w.out.push('>');
    w.open(Ns::K, op.wrapper);
    w.complex(req_type, &body);
    w.close(Ns::K, op.wrapper);
    w.out.push_str("</k:");
    w.out.push_str(op.name);
    w.out.push_str("></s:Body></s:Envelope>");
    match w.errors.len() {
        0 => Ok(w.out),
        _ => {
            let (path, reason) = w.errors.join_all();
            Err(KareoError::Request {
                op: op.name,
                path,
                reason,
            })
        }
    }
}

trait JoinAll {
    fn join_all(self) -> (String, String);
}

impl JoinAll for Vec<(String, String)> {
    /// One error names its path; several are listed, each with its path.
    fn join_all(mut self) -> (String, String) {
        if self.len() == 1 {
            return self.pop().expect("one error");
        }
        let path = self[0].0.clone();
        let reason = self
            .iter()
            .map(|(p, r)| format!("{p}: {r}"))
            .collect::<Vec<_>>()
            .join("; ");
        (path, format!("{} problems: {reason}", self.len()))
    }
}

struct Writer {
    out: String,
    path: Vec<&'static str>,
    errors: Vec<(String, String)>,
}

impl Writer {
    fn fail(&mut self, leaf: Option<&str>, reason: impl Into<String>) {
        let mut p = self.path.join("/");
        if let Some(l) = leaf {
            p.push('/');
            p.push_str(l);
        }
        self.errors.push((p, reason.into()));
    }

    fn open(&mut self, ns: Ns, name: &str) {
        self.out.push('<');
        self.out.push_str(ns.prefix());
        self.out.push(':');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn close(&mut self, ns: Ns, name: &str) {
        self.out.push_str("</");
        self.out.push_str(ns.prefix());
        self.out.push(':');
        self.out.push_str(name);
        self.out.push('>');
    }

    fn complex(&mut self, ty: &'static TypeDef, value: &Map<String, Value>) {
        for key in value.keys() {
            if ty.member(key).is_none() {
                let hint = ty
                    .members
                    .iter()
                    .find(|m| m.name.eq_ignore_ascii_case(key))
                    .map(|m| format!(" (did you mean '{}'?)", m.name))
                    .unwrap_or_default();
                self.fail(
                    Some(key),
                    format!("'{key}' is not a member of {}{hint}", ty.name),
                );
            }
        }
        for m in ty.members {
            if let Some(rest) = m.name.strip_prefix("From") {
                let to = format!("To{rest}");
                if ty.member(&to).is_some() {
                    let has = |k: &str| value.get(k).is_some_and(|v| !v.is_null());
                    if has(m.name) != has(&to) {
                        self.fail(
                            Some(m.name),
                            format!("{} and {to} must be sent together", m.name),
                        );
                    }
                }
            }
        }
        for m in ty.members {
            match value.get(m.name) {
                None | Some(Value::Null) => {
                    if let Ty::Complex(t) = m.ty {
                        if m.required || ALWAYS_SENT.contains(&m.name) {
                            self.path.push(m.name);
                            self.open(m.ns, m.name);
                            self.complex(t.def(), &Map::new());
                            self.close(m.ns, m.name);
                            self.path.pop();
                        }
                    } else if m.required {
                        self.fail(Some(m.name), "required member is missing");
                    }
                }
                Some(Value::Array(items)) if m.repeated => {
                    for item in items {
                        self.member(m, item);
                    }
                }
                Some(v) if m.repeated => self.member(m, v),
                Some(v) => self.member(m, v),
            }
        }
    }

    fn member(&mut self, m: &'static Member, v: &Value) {
        self.path.push(m.name);
        match m.ty {
            Ty::Complex(t) => {
                let def = t.def();
                match (v, def.array_item()) {
                    (Value::Object(map), _) => {
                        self.open(m.ns, m.name);
                        self.complex(def, map);
                        self.close(m.ns, m.name);
                    }
                    (Value::Array(items), Some(item)) => {
                        self.open(m.ns, m.name);
                        for i in items {
                            self.member(item, i);
                        }
                        self.close(m.ns, m.name);
                    }
                    _ => self.fail(None, format!("expected an object of type {}", def.name)),
                }
            }
            ty => match scalar_text(ty, v) {
                Ok(text) => {
                    if let Err(reason) = check_xml_chars(&text) {
                        self.fail(None, reason);
                    } else {
                        self.open(m.ns, m.name);
                        escape_into(&mut self.out, &text);
                        self.close(m.ns, m.name);
                    }
                }
                Err(reason) => self.fail(None, reason),
            },
        }
        self.path.pop();
    }
}

/// The text of a scalar value of type `ty`, or why it is not one. Never includes the value.
fn scalar_text(ty: Ty, v: &Value) -> Result<String, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) | Value::Array(_) => {
            return Err("expected a value, not a structure".into())
        }
        Value::Null => unreachable!("nulls are skipped"),
    };
    let ok = match ty {
        Ty::Str => true,
        Ty::Bool => matches!(text.as_str(), "true" | "false"),
        Ty::Int => text.parse::<i32>().is_ok(),
        Ty::Long => text.parse::<i64>().is_ok(),
        Ty::Double => text.parse::<f64>().is_ok_and(f64::is_finite),
        Ty::Decimal => is_decimal(&text),
        Ty::DateTime => crate::dates::is_xs_datetime(&text),
        Ty::Guid => is_guid(&text),
        Ty::Enum(e) => e.def().values.contains(&text.as_str()),
        Ty::Complex(_) => unreachable!("complex handled by caller"),
    };
    if ok {
        Ok(text)
    } else {
        Err(match ty {
            Ty::Bool => "expected true or false".into(),
            Ty::Int => "expected a 32-bit integer".into(),
            Ty::Long => "expected a 64-bit integer".into(),
            Ty::Double => "expected a number".into(),
            Ty::Decimal => "expected a decimal number".into(),
            Ty::DateTime => "expected an ISO 8601 date-time (2020-01-24T22:00:00.000Z)".into(),
            Ty::Guid => "expected a GUID".into(),
            Ty::Enum(e) => format!("expected one of {}", e.def().values.join(", ")),
            _ => "invalid value".into(),
        })
    }
}

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<_> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Characters XML 1.0 cannot carry at all (not even as references).
pub fn check_xml_chars(s: &str) -> Result<(), String> {
    match s
        .chars()
        .position(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'))
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "character {} of the value is a control character XML cannot carry",
            i + 1
        )),
    }
}

/// Escapes text content so that any string arrives intact: the five XML specials (so `]]>`
/// cannot close anything), and `\r`, U+0085 and U+2028 as character references (which parsers
/// would otherwise turn into `\n`).
pub fn escape_into(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '\r' => "&#13;",
            // Line ends an XML 1.1 reader (and quick-xml's `xml_content`) would normalise to
            // '\n': as character references they arrive as sent.
            '\u{85}' => "&#133;",
            '\u{2028}' => "&#8232;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + c.len_utf8();
    }
    out.push_str(&s[last..]);
}

/// Escapes text (see [`escape_into`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    escape_into(&mut out, s);
    out
}

/// The operation element of an envelope (the first child of `s:Body`, with its namespace
/// declarations): what `xmllint --schema all.xsd` validates.
pub fn operation_element(envelope: &str) -> &str {
    let start = envelope
        .find("<s:Body>")
        .map(|i| i + "<s:Body>".len())
        .unwrap_or(0);
    let end = envelope.rfind("</s:Body>").unwrap_or(envelope.len());
    &envelope[start..end]
}

/// Looks an operation up by name, as a request error when it is not one of Kareo's.
pub fn operation(name: &str) -> Result<&'static OpDef, KareoError> {
    schema::op(name).ok_or_else(|| KareoError::Request {
        op: "unknown",
        path: "operation".into(),
        reason: format!(
            "unknown operation '{name}'; expected one of {}",
            schema::op_names().collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn op(name: &str) -> &'static OpDef {
        schema::op(name).unwrap()
    }

    fn creds() -> Credentials {
        Credentials {
            customer_key: "ck".into(),
            user: "u".into(),
            password: "p&<>\"']]>".into(),
        }
    }

    fn err(e: KareoError) -> (String, String) {
        match e {
            KareoError::Request { path, reason, .. } => (path, reason),
            other => panic!("not a request error: {other}"),
        }
    }

    #[test]
    fn members_go_out_in_schema_order_whatever_the_json_order() {
        let body = json!({"Filter": {"ToLastModifiedDate": "2026-01-02", "PracticeName": "A", "FromLastModifiedDate": "2026-01-01"}, "Fields": {}});
        let x = write(op("GetPatients"), &creds(), "v1", &body).unwrap();
        let at = |s: &str| x.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("<k:RequestHeader>") < at("<k:Fields>"));
        assert!(at("<k:Fields>") < at("<k:Filter>"));
        assert!(at("<k:FromLastModifiedDate>") < at("<k:PracticeName>"));
        assert!(at("<k:PracticeName>") < at("<k:ToLastModifiedDate>"));
        assert!(at("<k:ClientVersion>") < at("<k:CustomerKey>"));
        assert!(at("<k:CustomerKey>") < at("<k:Password>"));
        assert!(at("<k:Password>") < at("<k:User>"));
        assert!(x.contains("<k:Password>p&amp;&lt;&gt;&quot;&apos;]]&gt;</k:Password>"));
    }

    #[test]
    fn k7_operations_put_fields_and_filter_in_k7() {
        let x = write(op("GetProcedureCodes"), &creds(), "v", &json!({})).unwrap();
        assert!(x.contains("<k:request><k:RequestHeader>"));
        assert!(x.contains("<k7:Fields></k7:Fields><k7:Filter></k7:Filter></k:request>"));
    }

    #[test]
    fn update_patient_uses_its_own_wrapper() {
        let x = write(
            op("UpdatePatient"),
            &creds(),
            "v",
            &json!({"Patient": {"PatientID": 5, "Practice": {"PracticeID": 1}}}),
        )
        .unwrap();
        assert!(x.contains("<k:UpdatePatient "));
        assert!(x.contains("><k:UpdatePatientReq><k:RequestHeader>"));
    }

    #[test]
    fn filter_is_always_sent_and_fields_default_to_all() {
        let x = write(op("GetPayments"), &creds(), "v", &json!({})).unwrap();
        assert!(x.contains("<k:Fields></k:Fields><k:Filter></k:Filter>"));
    }

    #[test]
    fn arrays_use_the_wcf_array_namespace() {
        let body = json!({"Appointment": {"AppointmentStatus": "Scheduled", "AppointmentType": "P", "EndTime": "2026-10-05T14:30:00Z", "IsRecurring": false, "PracticeId": 1, "ServiceLocationId": 2, "StartTime": "2026-10-05T14:00:00Z", "ResourceIds": [7, 8]}});
        let x = write(op("CreateAppointment"), &creds(), "v", &body).unwrap();
        assert!(x.contains(
            "<k:ResourceIds><arr:long>7</arr:long><arr:long>8</arr:long></k:ResourceIds>"
        ));
    }

    #[test]
    fn unknown_and_miscased_members_are_errors_with_a_hint() {
        let e = err(write(
            op("GetPatients"),
            &creds(),
            "v",
            &json!({"Filter": {"PracticeId": "1"}}),
        )
        .unwrap_err());
        assert_eq!(e.0, "request/Filter/PracticeId");
        assert!(e.1.contains("did you mean 'PracticeID'"), "{}", e.1);
    }

    #[test]
    fn missing_required_members_and_bad_values_are_all_reported() {
        let body = json!({"Appointment": {"AppointmentStatus": "Maybe", "AppointmentType": "P", "IsRecurring": "yes", "PracticeId": 1, "ServiceLocationId": 2, "StartTime": "10/5/2026"}});
        let (path, reason) = err(write(op("CreateAppointment"), &creds(), "v", &body).unwrap_err());
        assert_eq!(path, "request/Appointment/AppointmentStatus");
        assert!(reason.starts_with("4 problems"), "{reason}");
        assert!(reason.contains("request/Appointment/EndTime: required member is missing"));
        assert!(reason.contains("AppointmentStatus: expected one of Unknown, Scheduled"));
        assert!(reason.contains("IsRecurring: expected true or false"));
        assert!(reason.contains("StartTime: expected an ISO 8601 date-time"));
        assert!(!reason.contains("Maybe") && !reason.contains("10/5/2026"));
    }

    #[test]
    fn from_and_to_must_come_together() {
        let (path, reason) = err(write(
            op("GetCharges"),
            &creds(),
            "v",
            &json!({"Filter": {"FromLastModifiedDate": "2026-01-01"}}),
        )
        .unwrap_err());
        assert_eq!(path, "request/Filter/FromLastModifiedDate");
        assert!(reason.contains("ToLastModifiedDate must be sent together"));
    }

    #[test]
    fn credentials_cannot_come_from_the_body() {
        let (path, _) = err(write(
            op("GetPatients"),
            &creds(),
            "v",
            &json!({"RequestHeader": {}}),
        )
        .unwrap_err());
        assert_eq!(path, "request/RequestHeader");
    }

    #[test]
    fn customer_id_from_key_carries_bare_credentials() {
        let x = write(op("GetCustomerIdFromKey"), &creds(), "v", &json!({})).unwrap();
        assert!(x.contains("<k:request><k:CustomerKey>ck</k:CustomerKey><k:Password>"));
        assert!(!x.contains("RequestHeader"));
    }

    #[test]
    fn control_characters_are_refused_without_echoing() {
        let (_, reason) = err(write(
            op("GetPatients"),
            &creds(),
            "v",
            &json!({"Filter": {"FullName": "a\u{1}b"}}),
        )
        .unwrap_err());
        assert!(reason.contains("character 2"));
    }

    #[test]
    fn debug_of_credentials_is_redacted() {
        assert_eq!(format!("{:?}", creds()), "Credentials(<redacted>)");
    }

    /// Reads back the text of the first element named `name` from a document.
    fn read_text(doc: &str, name: &str) -> String {
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_str(doc);
        let mut inside = false;
        let mut out = String::new();
        loop {
            match r.read_event().unwrap() {
                Event::Start(e) if e.name().as_ref() == name.as_bytes() => inside = true,
                Event::End(e) if e.name().as_ref() == name.as_bytes() => return out,
                Event::Text(t) if inside => out.push_str(&t.xml_content().unwrap()),
                Event::GeneralRef(g) if inside => {
                    if let Some(c) = g.resolve_char_ref().unwrap() {
                        out.push(c)
                    } else {
                        out.push_str(
                            &quick_xml::escape::unescape(&format!("&{};", g.decode().unwrap()))
                                .unwrap(),
                        )
                    }
                }
                Event::Eof => panic!("{name} not found"),
                _ => {}
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_round_trips_through_escaping(s in "\\PC*", pw in any::<String>()) {
            prop_assume!(check_xml_chars(&s).is_ok() && check_xml_chars(&pw).is_ok());
            let c = Credentials { customer_key: "k".into(), user: "u".into(), password: pw.clone() };
            let x = write(op("GetPatients"), &c, "v", &json!({"Filter": {"FullName": s}})).unwrap();
            prop_assert_eq!(read_text(&x, "k:FullName"), s);
            prop_assert_eq!(read_text(&x, "k:Password"), pw);
        }
    }
}
