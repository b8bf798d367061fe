//! The HTTP side: transport checks, fault injection, latency, streaming, the call log.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use kareo::schema::{self, OpDef};
use rand::Rng;

use crate::ops::{self, Handled};
use crate::xmlin::{parse_request, ParseError};
use crate::xmlout::{
    self, envelope, envelope_named, error_response, fault, internal_fault, security_response, Auth,
    Sel, Style,
};
use crate::{Call, Fault, Inner, Outcome, PATH};

type Body = BoxBody<Bytes, std::io::Error>;

const ACTION_PREFIX: &str = "http://www.kareo.com/api/schemas/KareoServices/";
const XML_CT: &str = "text/xml; charset=utf-8";
const MAX_BODY: usize = 64 << 20;

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) fn spawn(listener: tokio::net::TcpListener, inner: Arc<Inner>) {
    simkit::serve(listener, move |req| serve(inner.clone(), req));
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn response(status: u16, ct: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(ct) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A response before it is sent.
enum Reply {
    Full {
        status: u16,
        ct: &'static str,
        body: Vec<u8>,
    },
    Bulk {
        n: u64,
        sel: Sel,
    },
}

struct Decided {
    reply: Reply,
    outcome: Outcome,
    creds: bool,
    records: usize,
}

fn bare(status: u16, text: &str) -> Decided {
    Decided {
        reply: Reply::Full {
            status,
            ct: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        },
        outcome: Outcome::HttpStatus(status),
        creds: false,
        records: 0,
    }
}

fn soap_fault(code: &'static str, text: &str, creds: bool) -> Decided {
    Decided {
        reply: Reply::Full {
            status: 500,
            ct: XML_CT,
            body: fault(code, text),
        },
        outcome: Outcome::SoapFault(code),
        creds,
        records: 0,
    }
}

fn content_type_ok(ct: Option<&HeaderValue>) -> bool {
    let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("text/xml"))
    {
        return false;
    }
    parts.all(|p| {
        let Some((k, v)) = p.split_once('=') else {
            return p.is_empty();
        };
        !k.trim().eq_ignore_ascii_case("charset")
            || v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    })
}

fn contract_filter(action: &str) -> String {
    format!("The message with Action '{action}' cannot be processed at the receiver, due to a ContractFilter mismatch at the EndpointDispatcher. This may be because of either a contract mismatch (mismatched Actions between sender and receiver) or a binding/security mismatch between the sender and the receiver.  Check that sender and receiver have the same contract and the same binding (including security requirements, e.g. Message, Transport, None).")
}

// Long: one request's life: read, decide, fault, answer.
async fn serve(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let arrived = Utc::now();
    let action_raw = req
        .headers()
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().trim_matches('"').to_string());
    let op_name: String = action_raw
        .as_deref()
        .and_then(|a| a.strip_prefix(ACTION_PREFIX))
        .map(|s| s.chars().take(64).collect())
        .unwrap_or_default();
    let op: Option<&'static OpDef> = schema::op(&op_name);

    // Transport checks.
    let early = if req.uri().path() != PATH {
        Some(bare(404, "Not Found"))
    } else if req.method() != Method::POST {
        Some(bare(405, "Method Not Allowed"))
    } else if !content_type_ok(req.headers().get(CONTENT_TYPE)) {
        let got = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        Some(bare(
            415,
            &format!("Cannot process the message because the content type '{got}' was not the expected type 'text/xml; charset=utf-8'."),
        ))
    } else {
        None
    };
    let body = if early.is_none() {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => Some(b.to_bytes()),
            Err(_) => None,
        }
    } else {
        None
    };

    let (decided, fault, latency, reset_mid_body) = {
        let mut st = inner.lock();
        let sim_now = st.now;
        let fault = if early.is_none() {
            pick_fault(&mut st, &op_name)
        } else {
            None
        };
        let reset_mid_body = matches!(fault, Some(Fault::Reset)) && st.rng.random_bool(0.5);
        let latency = st.latency;
        let decided = match (early, body) {
            (Some(d), _) => d,
            (None, None) => bare(400, "Bad Request"),
            (None, Some(body)) => decide(
                &inner,
                &mut st,
                op,
                action_raw.as_deref(),
                &body,
                fault.as_ref(),
                reset_mid_body,
            ),
        };
        let outcome = match &fault {
            Some(Fault::Throttle) if op.is_some() => Outcome::Throttled,
            Some(Fault::AuthFailure) if op.is_some() => Outcome::AuthFailed,
            Some(
                f @ (Fault::Http500Fault | Fault::HttpStatus(_) | Fault::Reset | Fault::Malformed),
            ) => Outcome::Injected(f.kind()),
            Some(f @ (Fault::Timeout(_) | Fault::TimeoutAfterCommit(_))) => {
                Outcome::Injected(f.kind())
            }
            Some(f @ (Fault::Truncated | Fault::SchemaMismatch)) if op.is_some() => {
                Outcome::Injected(f.kind())
            }
            _ => decided.outcome.clone(),
        };
        tracing::debug!(op = %op_name, outcome = ?outcome, records = decided.records, "kareo sim call");
        st.calls.push(Call {
            op: op_name.clone(),
            at: arrived,
            sim_now,
            outcome,
            credentials_valid: decided.creds,
            records: decided.records,
        });
        (decided, fault, latency, reset_mid_body)
    };

    match &fault {
        Some(Fault::Timeout(d)) | Some(Fault::TimeoutAfterCommit(d)) => {
            tokio::time::sleep(*d).await
        }
        _ => {}
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if matches!(fault, Some(Fault::Reset)) && !reset_mid_body {
        return Err(DropConnection);
    }
    let truncate = matches!(fault, Some(Fault::Truncated)) && op.is_some();
    match decided.reply {
        Reply::Full { status, ct, body } => {
            if reset_mid_body {
                let half = Bytes::from(body).slice(..);
                let cut = half.len() / 2;
                let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                    Ok(Frame::data(half.slice(..cut))),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated reset",
                    )),
                ];
                let body = StreamBody::new(stream::iter(frames)).boxed();
                return Ok(response(status, ct, body));
            }
            let body = if truncate {
                let item = op
                    .and_then(|o| o.list_member())
                    .map(|(_, item, _)| item.name);
                truncate_mid_record(body, item)
            } else {
                body
            };
            let mut r = response(status, ct, full(body));
            if matches!(status, 429 | 503) {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            Ok(r)
        }
        Reply::Bulk { n, sel } => {
            let cut = if truncate {
                Some(false)
            } else if reset_mid_body {
                Some(true)
            } else {
                None
            };
            Ok(response(200, XML_CT, bulk_body(&inner, n, sel, cut)))
        }
    }
}

/// The first matching fault rule, counted down.
fn pick_fault(st: &mut crate::State, op: &str) -> Option<Fault> {
    for i in 0..st.faults.len() {
        let rule = &st.faults[i];
        if rule.op.as_deref().is_some_and(|o| o != op) || rule.times == Some(0) {
            continue;
        }
        if let Some(rate) = rule.rate {
            let rate = rate.clamp(0.0, 1.0);
            if !st.rng.random_bool(rate) {
                continue;
            }
        }
        let rule = &mut st.faults[i];
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        return Some(rule.fault.clone());
    }
    None
}

/// Decides the reply (under the state lock: writes apply here).
// Long: one decision per fault kind and outcome, under one lock.
fn decide(
    inner: &Inner,
    st: &mut crate::State,
    op: Option<&'static OpDef>,
    action: Option<&str>,
    body: &[u8],
    fault: Option<&Fault>,
    reset_mid_body: bool,
) -> Decided {
    let cfg = &inner.cfg;
    let Some(op) = op else {
        let text = contract_filter(action.unwrap_or(""));
        let mut d = soap_fault("ActionNotSupported", &text, false);
        if let Some(f) = fault {
            apply_simple_fault(&mut d, f);
        }
        return d;
    };
    let parsed = match std::str::from_utf8(body) {
        Ok(s) => parse_request(s, op),
        Err(_) => Err(ParseError::Malformed),
    };
    let creds = match &parsed {
        Ok(Some(req)) => ops::check_auth(cfg, st.failed_sign_ins, op, req) == Auth::Ok,
        _ => false,
    };
    // Injected faults that replace the answer.
    if let Some(f) = fault {
        let style = Style::default();
        let sec = || security_response(Auth::Ok, cfg.customer_id, cfg.practice_id, "");
        let doc = |body: Vec<u8>, outcome: Outcome| Decided {
            reply: Reply::Full {
                status: 200,
                ct: XML_CT,
                body,
            },
            outcome,
            creds,
            records: 0,
        };
        match f {
            Fault::Http500Fault => {
                return Decided {
                    reply: Reply::Full {
                        status: 500,
                        ct: XML_CT,
                        body: internal_fault(),
                    },
                    outcome: Outcome::Injected("Http500Fault"),
                    creds,
                    records: 0,
                }
            }
            Fault::HttpStatus(code) => {
                let mut d = bare(*code, reason(*code));
                d.creds = creds;
                return d;
            }
            Fault::Malformed => return doc(malformed(op), Outcome::Injected("Malformed")),
            Fault::Throttle => {
                let text = ops::throttle_text(op.name, crate::guide::interval_ms(op.name));
                let result = vec![
                    ("ErrorResponse", error_response(Some(&text))),
                    ("SecurityResponse", sec()),
                ];
                return doc(envelope(op, &result, style).buf, Outcome::Throttled);
            }
            Fault::AuthFailure => {
                let result = vec![
                    ("ErrorResponse", error_response(None)),
                    (
                        "SecurityResponse",
                        security_response(Auth::BadUser, cfg.customer_id, cfg.practice_id, ""),
                    ),
                ];
                return doc(envelope(op, &result, style).buf, Outcome::AuthFailed);
            }
            Fault::SchemaMismatch => {
                let result = vec![
                    ("ErrorResponse", error_response(None)),
                    ("SecurityResponse", sec()),
                ];
                let w = envelope_named(op, "GetFoo", "GetFooResult", &result, style);
                return doc(w.buf, Outcome::Injected("SchemaMismatch"));
            }
            Fault::Timeout(_) if op.is_write() => {
                // The client gives up before the write happens: it is not applied.
                let mut d = soap_fault("InternalServiceFault", xmlout::INTERNAL_FAULT_TEXT, creds);
                d.outcome = Outcome::Injected("Timeout");
                return d;
            }
            Fault::Timeout(_) | Fault::TimeoutAfterCommit(_) | Fault::Reset | Fault::Truncated => {}
        }
    }
    let req = match parsed {
        Ok(r) => r,
        Err(ParseError::Malformed) => return bare(400, "Bad Request"),
        Err(ParseError::VersionMismatch) => {
            return soap_fault(
                "VersionMismatch",
                "The message version of the incoming message does not match that of the endpoint binding.",
                false,
            )
        }
        Err(ParseError::OtherOperation) => {
            return soap_fault("ActionNotSupported", &contract_filter(action.unwrap_or("")), false)
        }
        Err(ParseError::Deserialization(text)) => return soap_fault("DeserializationFailed", &text, false),
    };
    match ops::handle(cfg, st, op, req) {
        Handled::Doc {
            result,
            outcome,
            creds,
            records,
        } => {
            // Response variations, seeded; never on a body a fault will cut (offsets matter).
            let vary = !reset_mid_body && !matches!(fault, Some(Fault::Truncated));
            let style = if vary {
                Style {
                    pretty: st.rng.random_bool(0.25),
                    activity_header: if st.rng.random_bool(0.25) {
                        Some(st.rng.random::<u128>())
                    } else {
                        None
                    },
                }
            } else {
                Style::default()
            };
            Decided {
                reply: Reply::Full {
                    status: 200,
                    ct: XML_CT,
                    body: envelope(op, &result, style).buf,
                },
                outcome,
                creds,
                records,
            }
        }
        Handled::Fault { code, text, creds } => soap_fault(code, &text, creds),
        Handled::Bulk { n, sel } => Decided {
            reply: Reply::Bulk { n, sel },
            outcome: Outcome::Ok,
            creds,
            records: n as usize,
        },
    }
}

fn apply_simple_fault(d: &mut Decided, f: &Fault) {
    match f {
        Fault::Http500Fault => {
            d.reply = Reply::Full {
                status: 500,
                ct: XML_CT,
                body: internal_fault(),
            }
        }
        Fault::HttpStatus(code) => {
            *d = bare(*code, reason(*code));
        }
        Fault::Malformed => {
            d.reply = Reply::Full {
                status: 200,
                ct: XML_CT,
                body: b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><Fault & </s:Bod>".to_vec(),
            }
        }
        _ => {}
    }
}

fn reason(code: u16) -> &'static str {
    StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// A 200 body that is not well-formed XML.
fn malformed(op: &OpDef) -> Vec<u8> {
    let item = op
        .list_member()
        .map(|(l, i, _)| (l.name, i.name))
        .unwrap_or(("Items", "Item"));
    format!(
        "<s:Envelope xmlns:s=\"{}\"><s:Body><{op}Response xmlns=\"{}\"><{op}Result xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"><ErrorResponse><ErrorMessage i:nil=\"true\"/><IsError>false</IsErr></ErrorResponse><{list}><{it}><ID>1</ID><Notes>Tom & Jerry <3</Notes>",
        xmlout::SOAP_NS,
        kareo::schema::Ns::K.uri(),
        op = op.name,
        list = item.0,
        it = item.1,
    )
    .into_bytes()
}

/// Cuts a body in the middle of its middle record (or in its middle, without records).
fn truncate_mid_record(mut body: Vec<u8>, item: Option<&str>) -> Vec<u8> {
    let len = body.len();
    let cut = item
        .and_then(|name| {
            let open_plain = format!("<{name}>");
            let open_k7 = format!("<a:{name}>");
            let starts: Vec<usize> = find_all(&body, open_plain.as_bytes())
                .into_iter()
                .chain(find_all(&body, open_k7.as_bytes()))
                .collect();
            let mut starts = starts;
            starts.sort_unstable();
            let s = *starts.get(starts.len() / 2)?;
            let close = format!("</{}", name);
            let e = find_all(&body[s..], close.as_bytes())
                .first()
                .map(|e| s + e)
                .or_else(|| {
                    find_all(&body[s..], format!(":{name}>").as_bytes())
                        .first()
                        .map(|e| s + e)
                })?;
            Some(s + (e - s).max(2) / 2)
        })
        .unwrap_or(len / 2);
    body.truncate(cut.clamp(1, len.saturating_sub(1).max(1)));
    body
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return Vec::new();
    }
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// The bulk GetPatients body, generated lazily chunk by chunk. `cut`: `Some(false)` ends the
/// body in the middle of the first record, `Some(true)` resets the connection there.
fn bulk_body(inner: &Inner, n: u64, sel: Sel, cut: Option<bool>) -> Body {
    let rendered = inner.lock().bulk_rendered.clone();
    if let Some(body) = rendered {
        return rendered_body(body, cut);
    }
    let op = schema::op("GetPatients").expect("GetPatients in schema");
    let frame = xmlout::list_frame(op, inner.cfg.customer_id, inner.cfg.practice_id)
        .expect("GetPatients is a list");
    let tz = inner.cfg.timezone;
    struct St {
        stage: u8,
        i: u64,
        n: u64,
        sel: Sel,
        head: Option<Vec<u8>>,
        tail: Option<Vec<u8>>,
        item: &'static kareo::schema::Member,
        tz: chrono_tz::Tz,
        cut: Option<bool>,
    }
    let st = St {
        stage: 0,
        i: 0,
        n,
        sel,
        head: Some(frame.head),
        tail: Some(frame.tail),
        item: frame.item,
        tz,
        cut,
    };
    let s = stream::unfold(st, |mut st| async move {
        match st.stage {
            0 => {
                st.stage = 1;
                let head = st.head.take().unwrap_or_default();
                Some((Ok(Frame::data(Bytes::from(head))), st))
            }
            1 => {
                let mut x = xmlout::XmlW::new(false);
                if st.n == 0 {
                    xmlout::placeholder(&mut x, st.item);
                }
                while st.i < st.n && x.buf.len() < (1 << 16) {
                    let row = crate::synthetic_patient(st.i, st.tz);
                    x.row(st.item, &row, &st.sel);
                    st.i += 1;
                }
                if st.i >= st.n {
                    st.stage = 2;
                }
                if let Some(reset) = st.cut {
                    x.buf.truncate(cut_len(x.buf.len()));
                    st.stage = if reset { 4 } else { 3 };
                }
                Some((Ok(Frame::data(Bytes::from(x.buf))), st))
            }
            2 => {
                st.stage = 3;
                let tail = st.tail.take().unwrap_or_default();
                Some((Ok(Frame::data(Bytes::from(tail))), st))
            }
            4 => {
                st.stage = 3;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated reset",
                    )),
                    st,
                ))
            }
            _ => None,
        }
    });
    StreamBody::new(s).boxed()
}

/// Where a cut bulk body stops inside its first frame of `frame_len` bytes: half way, at
/// most 1,500 bytes in, at least one byte.
fn cut_len(frame_len: usize) -> usize {
    (frame_len / 2).clamp(1, 1500.min(frame_len.max(1)))
}

/// A rendered bulk body in 64 KiB frames (slices of one buffer); `cut` as in [`bulk_body`]:
/// the body stops inside its first frame, then ends (`false`) or the connection resets.
fn rendered_body(body: Bytes, cut: Option<bool>) -> Body {
    const FRAME: usize = 1 << 16;
    let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = match cut {
        None => (0..body.len())
            .step_by(FRAME)
            .map(|at| Ok(Frame::data(body.slice(at..(at + FRAME).min(body.len())))))
            .collect(),
        Some(_) => {
            let keep = cut_len(body.len().min(FRAME)).min(body.len());
            vec![Ok(Frame::data(body.slice(..keep)))]
        }
    };
    if cut == Some(true) {
        frames.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated reset",
        )));
    }
    StreamBody::new(stream::iter(frames)).boxed()
}
