//! A Kareo request or response with its values taken out, for a Tebra support case (Tebra
//! debugs only the web service and asks for the request and response XML): the structure,
//! the member names, the namespaces and attributes, the booleans and what Kareo said about the
//! call (`ErrorResponse`, `SecurityResponse`, SOAP faults, `ClientVersion`) are kept; the
//! credentials become `{CUSTOMER_KEY}`, `{USER}`, `{PASSWORD}`, every number `0`, and every
//! other text `REDACTED`.

use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

/// Elements whose text is kept: what Kareo says about the call, never a record.
const KEPT: [&str; 6] = [
    "ErrorResponse",
    "SecurityResponse",
    "Fault",
    "ClientVersion",
    "ThrottleDetails",
    "IsAuthorized",
];

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|b| *b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

fn placeholder(path: &[Vec<u8>], text: &str) -> String {
    let here = path.last().map(Vec::as_slice).unwrap_or(b"");
    match here {
        b"CustomerKey" => return "{CUSTOMER_KEY}".into(),
        b"User" => return "{USER}".into(),
        b"Password" => return "{PASSWORD}".into(),
        _ => {}
    }
    let t = text.trim();
    if t.is_empty()
        || t == "true"
        || t == "false"
        || path
            .iter()
            .any(|p| KEPT.iter().any(|k| k.as_bytes() == p.as_slice()))
    {
        return text.to_string();
    }
    if t.parse::<f64>().is_ok() {
        return "0".into();
    }
    "REDACTED".into()
}

/// `xml` with its values replaced (see the module doc). Fails on XML that is not well-formed
/// (the error names the position, never the text).
pub fn redact(xml: &[u8]) -> Result<String, String> {
    let mut reader = Reader::from_reader(xml);
    let mut writer = Writer::new(Vec::new());
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::new();
    // A value arrives as text, entity and character references and CDATA in any mix: it is
    // gathered whole and written as one placeholder (a reference is never passed through).
    let mut text: Option<String> = None;
    let write = |w: &mut Writer<Vec<u8>>, ev: Event| {
        w.write_event(ev)
            .map_err(|_| "could not write the redacted XML".to_string())
    };
    loop {
        let at = reader.buffer_position();
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|_| format!("not well-formed XML at byte {at}"))?;
        let undecodable = || format!("undecodable text at byte {at}");
        match &ev {
            Event::Text(t) => {
                let raw = t.decode().map_err(|_| undecodable())?;
                text.get_or_insert_with(String::new).push_str(&raw);
                buf.clear();
                continue;
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|_| undecodable())?;
                let s = text.get_or_insert_with(String::new);
                s.push('&');
                s.push_str(&name);
                s.push(';');
                buf.clear();
                continue;
            }
            Event::CData(c) => {
                let raw = String::from_utf8_lossy(c).into_owned();
                text.get_or_insert_with(String::new)
                    .push_str(&quick_xml::escape::escape(&raw));
                buf.clear();
                continue;
            }
            _ => {}
        }
        if let Some(raw) = text.take() {
            let value = quick_xml::escape::unescape(&raw)
                .map(|c| c.into_owned())
                .unwrap_or(raw);
            write(
                &mut writer,
                Event::Text(BytesText::new(&placeholder(&path, &value))),
            )?;
        }
        match ev {
            Event::Eof => break,
            Event::Start(s) => {
                path.push(local(s.name().as_ref()).to_vec());
                write(&mut writer, Event::Start(s))?;
            }
            Event::End(e) => {
                path.pop();
                write(&mut writer, Event::End(e))?;
            }
            Event::Comment(_) => {}
            other => write(&mut writer, other)?,
        }
        buf.clear();
    }
    String::from_utf8(writer.into_inner()).map_err(|_| "the redacted XML is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_structure_names_namespaces_and_what_kareo_said_stay() {
        let xml = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetPatientsResponse xmlns="http://www.kareo.com/api/schemas/"><GetPatientsResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><ErrorResponse><ErrorMessage>PracticeID is required.</ErrorMessage><IsError>true</IsError></ErrorResponse><SecurityResponse><SecurityResult>Success</SecurityResult><CustomerId>4242</CustomerId></SecurityResponse><Patients><PatientData><FirstName>Jane &amp; Co</FirstName><ID>117</ID><Email i:nil="true"/><SSN><![CDATA[123-45-6789]]></SSN></PatientData></Patients></GetPatientsResult></GetPatientsResponse></s:Body></s:Envelope>"#;
        let got = redact(xml.as_bytes()).unwrap();
        assert!(
            got.contains("<ErrorMessage>PracticeID is required.</ErrorMessage>"),
            "{got}"
        );
        assert!(
            got.contains("<CustomerId>4242</CustomerId>"),
            "kept: Kareo's own answer"
        );
        assert!(
            got.contains("<FirstName>REDACTED</FirstName><ID>0</ID><Email i:nil=\"true\"/>"),
            "{got}"
        );
        assert!(got.contains("<SSN>REDACTED</SSN>"), "{got}");
        assert!(!got.contains("Jane") && !got.contains("117") && !got.contains("6789"));
        assert!(
            got.starts_with("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">")
        );

        let req = r#"<soapenv:Envelope xmlns:soapenv="x"><soapenv:Body><sch:GetPatients xmlns:sch="y"><sch:request><sch:RequestHeader><sch:ClientVersion>kareo-dock/1</sch:ClientVersion><sch:CustomerKey>k-1</sch:CustomerKey><sch:Password>p&lt;w</sch:Password><sch:User>u@x</sch:User></sch:RequestHeader><sch:Fields><sch:FirstName>true</sch:FirstName></sch:Fields><sch:Filter><sch:LastName>Smith</sch:LastName></sch:Filter></sch:request></sch:GetPatients></soapenv:Body></soapenv:Envelope>"#;
        let got = redact(req.as_bytes()).unwrap();
        assert!(got.contains("<sch:CustomerKey>{CUSTOMER_KEY}</sch:CustomerKey><sch:Password>{PASSWORD}</sch:Password><sch:User>{USER}</sch:User>"), "{got}");
        assert!(got.contains("<sch:ClientVersion>kareo-dock/1</sch:ClientVersion>"));
        assert!(got.contains("<sch:FirstName>true</sch:FirstName>"));
        assert!(got.contains("<sch:LastName>REDACTED</sch:LastName>"));
        assert!(redact(b"<a><b></a>").is_err());
    }
}
