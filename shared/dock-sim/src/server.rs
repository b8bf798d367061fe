//! The HTTP side: two loopback listeners (auth and API), the gateway checks (API key,
//! token, scopes, organisation and user headers), fault injection and the call log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::api::{is_uuid, Reply, State};
use crate::{Call, Fault, Inner};

const MAX_BODY: usize = 1 << 20;
const ALLOWED_SCOPES: &[&str] = &[
    "dockhealth/user.all.read",
    "dockhealth/user.all.write",
    "dockhealth/patient.all.read",
    "dockhealth/patient.all.write",
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Auth,
    Api,
}

pub(crate) fn spawn(listener: tokio::net::TcpListener, inner: Arc<Inner>, role: Role) {
    simkit::serve(listener, move |req| serve(inner.clone(), role, req));
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if r.status != 204 {
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static(r.content_type));
    }
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

pub(crate) use simkit::path_matches;

fn pick_fault(st: &mut State, method: &str, path: &str) -> Option<Fault> {
    let rule = st.faults.iter_mut().find(|r| {
        r.times > 0
            && r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && r.path.as_deref().is_none_or(|p| path_matches(p, path))
    })?;
    rule.times -= 1;
    Some(rule.fault.clone())
}

async fn serve(
    inner: Arc<Inner>,
    role: Role,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let content_type = header(&req, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let api_key = header(&req, "x-api-key").map(str::to_string);
    let authorization = header(&req, "authorization").map(str::to_string);
    let org = header(&req, "x-organization-id").map(str::to_string);
    let user = header(&req, "x-user-id").map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(to_response(Reply::text(413, "Payload Too Large")));
        }
    };

    let (reply, delay, fault_name, challenges) = {
        let mut st = inner.lock();
        let fault = pick_fault(&mut st, &method, &path);
        let fault_name = fault.as_ref().map(Fault::name);
        let mut delay = None;
        let reply = match fault {
            Some(Fault::RateLimit { retry_after_secs }) => {
                let mut r = Reply::gateway(429, "Too Many Requests");
                if let Some(s) = retry_after_secs {
                    r.headers.push(("retry-after", s.to_string()));
                }
                Some(r)
            }
            Some(Fault::ServerError) => Some(Reply::spring(
                500,
                "HeyDocServiceException: simulated server error",
                &path,
            )),
            Some(Fault::NotFound) => Some(Reply::spring(404, "Not found (simulated)", &path)),
            Some(Fault::Status(s)) => Some(Reply::text(s, crate::api::reason(s))),
            Some(Fault::ExpireTokens) => {
                for t in st.tokens.values_mut() {
                    t.revoked = true;
                }
                None
            }
            Some(Fault::TimeoutAfterCommit(d)) => {
                delay = Some(d);
                None
            }
            None => None,
        };
        let reply = reply.unwrap_or_else(|| match role {
            Role::Auth => token_endpoint(&mut st, &method, &path, &content_type, &body),
            Role::Api => api(
                &mut st,
                &method,
                &path,
                &query,
                &content_type,
                &body,
                Headers {
                    api_key: api_key.as_deref(),
                    authorization: authorization.as_deref(),
                    org: org.as_deref(),
                    user: user.as_deref(),
                },
            ),
        });
        tracing::debug!(%method, %path, status = reply.status, fault = fault_name, "dock sim call");
        st.calls.push(Call {
            method: method.clone(),
            path: path.clone(),
            status: reply.status,
            fault: fault_name,
        });
        let challenges = std::mem::take(&mut st.challenges);
        (reply, delay, fault_name, challenges)
    };
    let _ = fault_name;
    for (id, url, secret, message) in challenges {
        // Verification is asynchronous, as Dock's (the answer to the create comes first).
        let sim = crate::DockSim::from_inner(inner.clone());
        tokio::spawn(crate::webhook::verify_endpoint(
            sim, id, url, secret, message,
        ));
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    Ok(to_response(reply))
}

fn token_endpoint(st: &mut State, method: &str, path: &str, ct: &str, body: &[u8]) -> Reply {
    if path != "/oauth2/token" {
        return Reply::text(404, "Not Found");
    }
    if method != "POST" {
        return Reply::text(405, "Method Not Allowed");
    }
    st.token_requests += 1;
    let oauth = |e: &str| Reply::json(400, &json!({ "error": e }));
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return oauth("invalid_request");
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth("unsupported_grant_type");
    }
    if form.get("client_id") != Some(&st.seed.client_id)
        || form.get("client_secret") != Some(&st.seed.client_secret)
    {
        return oauth("invalid_client");
    }
    let scopes: Vec<String> = match form.get("scope") {
        Some(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => ALLOWED_SCOPES
            .iter()
            .filter(|s| !(st.reality.no_patient_scopes && s.contains("/patient.")))
            .map(|s| s.to_string())
            .collect(),
    };
    if scopes.iter().any(|s| !ALLOWED_SCOPES.contains(&s.as_str())) {
        return oauth("invalid_scope");
    }
    // A client not granted the patient scopes: asking for them is `invalid_scope`.
    if st.reality.no_patient_scopes && scopes.iter().any(|s| s.contains("/patient.")) {
        return oauth("invalid_scope");
    }
    let n = st.tokens.len() + 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let token = format!("simtok.{n}.{nanos:08x}");
    st.tokens.insert(
        token.clone(),
        crate::api::TokenRec {
            expires: Instant::now() + st.token_ttl,
            scopes,
            revoked: false,
        },
    );
    Reply::json(
        200,
        &json!({
            "access_token": token,
            "expires_in": st.token_ttl.as_secs(),
            "token_type": "Bearer",
        }),
    )
}

struct Headers<'a> {
    api_key: Option<&'a str>,
    authorization: Option<&'a str>,
    org: Option<&'a str>,
    user: Option<&'a str>,
}

fn api(
    st: &mut State,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    ct: &str,
    body: &[u8],
    h: Headers<'_>,
) -> Reply {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Reply::gateway(403, "Missing Authentication Token");
    };
    // Gateway: API key, then the token and its scopes.
    if h.api_key != Some(st.seed.api_key.as_str()) {
        return Reply::gateway(403, "Forbidden");
    }
    let raw_only = st.reality.raw_token_only;
    let token = h.authorization.and_then(|a| {
        let a = a.trim();
        match a.get(..7) {
            // Raw-token-only: `Bearer …` is not a token it knows.
            Some(p) if p.eq_ignore_ascii_case("bearer ") && raw_only => None,
            Some(p) if p.eq_ignore_ascii_case("bearer ") => Some(a[7..].trim()),
            _ => Some(a),
        }
    });
    let Some(rec) = token.and_then(|t| st.tokens.get(t)) else {
        return Reply::gateway(401, "Unauthorized");
    };
    if rec.revoked || Instant::now() >= rec.expires {
        return Reply::gateway(401, "Unauthorized");
    }
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let context = if segs.first() == Some(&"patient") {
        "patient"
    } else {
        "user"
    };
    let rights = if method == "GET" { "read" } else { "write" };
    let need = format!("dockhealth/{context}.all.{rights}");
    if !rec.scopes.contains(&need) {
        return Reply::gateway(403, "Forbidden");
    }
    // Application: organisation and user headers.
    let Some(org) = h.org else {
        return Reply::spring(400, "Missing request header 'x-organization-id'", path);
    };
    let Some(user) = h.user else {
        return Reply::spring(400, "Missing request header 'x-user-id'", path);
    };
    if org != st.seed.organization_id {
        return Reply::spring(
            403,
            &format!(
                "HeyDocAccessDeniedException: Not authorized to access organization: {}",
                short(org)
            ),
            path,
        );
    }
    if !st.users.iter().any(|u| u["id"] == json!(user)) {
        return Reply::spring(
            403,
            &format!(
                "HeyDocAccessDeniedException: User is not a member of organization: {}",
                short(org)
            ),
            path,
        );
    }
    let body: Option<Value> = if matches!(method, "POST" | "PATCH" | "PUT") {
        if !ct.starts_with("application/json") {
            return Reply::spring(415, "Content type not supported", path);
        }
        match serde_json::from_slice(body) {
            Ok(v) => Some(v),
            Err(_) => return Reply::spring(400, "JSON parse error", path),
        }
    } else {
        None
    };
    st.handle(method, &segs, query, body.as_ref(), user, path)
}

/// An id for an error message: a UUID as is, anything else cut short.
fn short(s: &str) -> String {
    if is_uuid(s) {
        s.to_string()
    } else {
        s.chars().take(40).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(path_matches("/api/v1/task", "/api/v1/task"));
        assert!(!path_matches("/api/v1/task", "/api/v1/task/group"));
        assert!(path_matches("/api/v1/task/*", "/api/v1/task/abc"));
        assert!(path_matches("/api/v1/**", "/api/v1/task/abc"));
        assert!(!path_matches("/api/v1/list/*", "/api/v1/list"));
    }
}
