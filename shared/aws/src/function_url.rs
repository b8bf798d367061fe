//! Lambda Function URL events (the API Gateway HTTP API v2.0 payload) in and out, for the
//! write and webhook functions: `{version: "2.0", rawPath, rawQueryString, headers,
//! requestContext: {http: {method}}, body, isBase64Encoded}` → [`HttpRequest`], and a status
//! with a JSON body → `{statusCode, headers, body}`.

use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use aws_lambda_events::http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use domain::http::HttpRequest;

/// The request, when `payload` is a Function URL event (else `None`: a direct invocation, or
/// an event that does not parse as one). The body is kept byte for byte (base64 decoded when
/// the event says so); header names are lower case, query values decoded.
pub fn parse(payload: &Value) -> Option<HttpRequest> {
    // A direct invocation carries no `requestContext.http`; only then is it read as an event.
    payload.pointer("/requestContext/http")?;
    let event = LambdaFunctionUrlRequest::deserialize(payload).ok()?;
    let http = event.request_context.http;
    let method = http.method?;
    let path = event.raw_path.or(http.path).unwrap_or_else(|| "/".into());
    let query = event
        .raw_query_string
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers = event
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let text = event.body.unwrap_or_default();
    let body = if event.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    } else {
        text.into_bytes()
    };
    let caller = payload
        .pointer("/requestContext/authorizer/iam/userArn")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(HttpRequest {
        method,
        path,
        query,
        headers,
        body,
        caller,
    })
}

/// A Function URL response with a JSON body.
pub fn response(status: u16, body: &Value) -> Value {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut out = LambdaFunctionUrlResponse::default();
    out.status_code = i64::from(status);
    out.headers = headers;
    out.body = Some(body.to_string());
    serde_json::to_value(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn function_url_events_are_read_byte_for_byte() {
        let ev = json!({
            "version": "2.0", "rawPath": "/acme", "rawQueryString": "message=a%20b&x=1",
            "headers": {"X-Dock-Signature-256": "t=1,v1=ab", "content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/acme"}, "timeEpoch": 1_764_000_000_000_i64},
            "body": "eyJhIjogMX0=", "isBase64Encoded": true
        });
        let r = parse(&ev).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/acme");
        assert_eq!(r.query["message"], "a b");
        assert_eq!(r.headers["x-dock-signature-256"], "t=1,v1=ab");
        assert_eq!(r.body, br#"{"a": 1}"#);
        assert_eq!(r.caller, None);
        let signed = json!({
            "version": "2.0", "rawPath": "/", "headers": {},
            "requestContext": {"http": {"method": "POST", "path": "/"}, "timeEpoch": 1_764_000_000_000_i64,
                "authorizer": {"iam": {"userArn": "arn:aws:sts::123456789012:assumed-role/app/s1",
                                       "accountId": "123456789012", "callerId": "AROA:s1"}}},
            "body": "{}", "isBase64Encoded": false
        });
        assert_eq!(
            parse(&signed).unwrap().caller.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/app/s1")
        );
        assert!(parse(&json!({"id": "c", "op": "CreatePatient"})).is_none());
        let out = response(400, &json!({"status": "invalid"}));
        assert_eq!(out["statusCode"], 400);
        assert_eq!(out["body"], r#"{"status":"invalid"}"#);
    }
}
