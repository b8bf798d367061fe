//! Lambda Function URL events (the API Gateway HTTP API v2.0 payload) in and out, for the
//! write and webhook functions: `{version: "2.0", rawPath, rawQueryString, headers,
//! requestContext: {http: {method}}, body, isBase64Encoded}` → [`HttpRequest`], and a status
//! with a JSON body → `{statusCode, headers, body}`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use domain::http::HttpRequest;

/// The request, when `payload` is a Function URL event (else `None`: a direct invocation).
/// The body is kept byte for byte (base64 decoded when the event says so).
pub fn parse(payload: &Value) -> Option<HttpRequest> {
    let http = payload.get("requestContext")?.get("http")?;
    let method = http.get("method")?.as_str()?.to_string();
    let path = payload
        .get("rawPath")
        .and_then(Value::as_str)
        .or_else(|| http.get("path").and_then(Value::as_str))
        .unwrap_or("/")
        .to_string();
    let query: BTreeMap<String, String> = payload
        .get("rawQueryString")
        .and_then(Value::as_str)
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers = payload
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let text = payload.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if payload.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    } else {
        text.as_bytes().to_vec()
    };
    Some(HttpRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// A Function URL response with a JSON body.
pub fn response(status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "isBase64Encoded": false,
        "body": body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_url_events_are_read_byte_for_byte() {
        let ev = json!({
            "version": "2.0", "rawPath": "/acme", "rawQueryString": "message=a%20b&x=1",
            "headers": {"X-Dock-Signature-256": "t=1,v1=ab", "content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/acme"}},
            "body": "eyJhIjogMX0=", "isBase64Encoded": true
        });
        let r = parse(&ev).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/acme");
        assert_eq!(r.query["message"], "a b");
        assert_eq!(r.headers["x-dock-signature-256"], "t=1,v1=ab");
        assert_eq!(r.body, br#"{"a": 1}"#);
        assert!(parse(&json!({"id": "c", "op": "CreatePatient"})).is_none());
        let out = response(400, &json!({"status": "invalid"}));
        assert_eq!(out["statusCode"], 400);
        assert_eq!(out["body"], r#"{"status":"invalid"}"#);
    }
}
