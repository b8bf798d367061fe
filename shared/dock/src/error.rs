//! One error type for everything that can go wrong talking to Dock.
//!
//! Every variant names the call that failed (`op`, a static name such as `"create_task"`) and
//! says whether a retry may help ([`DockError::is_retryable`]) and, for creates, whether Dock
//! may have applied the request ([`DockError::is_ambiguous`]).
//!
//! `Display` never contains request or response bodies: Dock's error `message` can echo what
//! was sent (a description, a patient name), so it is kept in [`ErrorBody`], is left out of
//! `Display` and of `ErrorBody`'s `Debug`, and is reachable only through
//! [`DockError::dock_message`] for an engineer debugging an account.

use std::time::Duration;

use serde::Deserialize;

/// A parsed error response body.
///
/// Dock's application errors are Spring-Boot JSON `{timestamp, status, error, message, path}`
/// (\[C\] dockhealth-api README); gateway rejections are \[I\] AWS API Gateway JSON
/// `{"message": "..."}`; anything else (a proxy's HTML or plain text) is kept, truncated, as
/// `raw`. `Debug` shows the status, the reason phrase and the path; the message and raw text
/// only by length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// Spring `timestamp`.
    pub timestamp: Option<String>,
    /// Spring `status` (may differ from the HTTP status for gateways).
    pub status: Option<u16>,
    /// Spring `error`: the reason phrase, e.g. `"Forbidden"`.
    pub error: Option<String>,
    /// Spring `message` or the gateway's `message`; may echo request values.
    pub message: Option<String>,
    /// Spring `path` (ids only).
    pub path: Option<String>,
    /// The body when it was not JSON (at most [`ErrorBody::RAW_LIMIT`] bytes); may echo values.
    pub raw: Option<String>,
}

impl std::fmt::Debug for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorBody")
            .field("status", &self.status)
            .field("error", &self.error)
            .field("path", &self.path)
            .field("message_len", &self.message.as_ref().map(String::len))
            .field("raw_len", &self.raw.as_ref().map(String::len))
            .finish()
    }
}

#[derive(Deserialize)]
struct SpringBody {
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, alias = "Message")]
    message: Option<serde_json::Value>,
    #[serde(default)]
    path: Option<serde_json::Value>,
}

fn text_of(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl ErrorBody {
    /// The most bytes of a non-JSON body kept in `raw`.
    pub const RAW_LIMIT: usize = 512;

    /// Parses an error body leniently: Spring JSON, gateway JSON, or anything else as text.
    /// Never fails.
    pub fn parse(body: &[u8]) -> ErrorBody {
        let trimmed = body.trim_ascii();
        if trimmed.is_empty() {
            return ErrorBody::default();
        }
        if trimmed.first() == Some(&b'{') {
            if let Ok(s) = serde_json::from_slice::<SpringBody>(trimmed) {
                return ErrorBody {
                    timestamp: text_of(s.timestamp),
                    status: s.status.and_then(|v| match v {
                        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u16),
                        serde_json::Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    }),
                    error: text_of(s.error),
                    message: text_of(s.message),
                    path: text_of(s.path),
                    raw: None,
                };
            }
        }
        let text = String::from_utf8_lossy(trimmed);
        let mut end = text.len().min(Self::RAW_LIMIT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ErrorBody {
            raw: Some(text[..end].to_string()),
            ..ErrorBody::default()
        }
    }

    /// The part of `message` before the first `:` when it looks like a Java exception class
    /// name (`HeyDocAccessDeniedException`): safe to log, unlike the rest of the message.
    pub fn exception(&self) -> Option<&str> {
        let m = self.message.as_deref()?;
        let head = m.split(':').next()?.trim();
        (head.ends_with("Exception") && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
            .then_some(head)
    }
}

/// An error talking to Dock.
#[derive(Debug, thiserror::Error)]
pub enum DockError {
    /// The call could not be built (a bad base URL, a missing required filter).
    #[error("{op}: invalid request: {reason}")]
    Request {
        /// Call.
        op: &'static str,
        /// What is wrong (never a value).
        reason: &'static str,
    },
    /// The token endpoint refused the credentials or failed. The API call was not sent.
    #[error("{op}: token request failed (status {status:?}, code {code:?})")]
    Token {
        /// Call that needed the token.
        op: &'static str,
        /// HTTP status of the token endpoint; `None` when it did not answer.
        status: Option<u16>,
        /// OAuth2 `error` code (`invalid_client`, `invalid_scope`, …), or `timeout`,
        /// `transport`, `decode`.
        code: Option<String>,
    },
    /// Network failure.
    #[error("{op}: transport failure{}", if *.sent { "" } else { ", request not sent" })]
    Transport {
        /// Call.
        op: &'static str,
        /// The request may have reached Dock.
        sent: bool,
    },
    /// No answer within the client timeout.
    #[error("{op}: timed out after {after:?}")]
    Timeout {
        /// Call.
        op: &'static str,
        /// The limit.
        after: Duration,
        /// The request may have reached Dock.
        sent: bool,
    },
    /// 401 (still, after one token refresh) or 403: bad API key, token, scope, or not
    /// permitted for this user/organization/object.
    #[error("{op}: not authorized (HTTP {status}{})", exc_suffix(.body))]
    Auth {
        /// Call.
        op: &'static str,
        /// 401 or 403.
        status: u16,
        /// Parsed body.
        body: Box<ErrorBody>,
    },
    /// 404.
    #[error("{op}: not found (HTTP 404{})", exc_suffix(.body))]
    NotFound {
        /// Call.
        op: &'static str,
        /// Parsed body.
        body: Box<ErrorBody>,
    },
    /// 429, after the retries the policy allowed.
    #[error("{op}: rate limited by Dock (Retry-After {retry_after:?})")]
    RateLimited {
        /// Call.
        op: &'static str,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// Any other non-success status.
    #[error("{op}: HTTP {status}{}", exc_suffix(.body))]
    Http {
        /// Call.
        op: &'static str,
        /// Status.
        status: u16,
        /// Parsed body.
        body: Box<ErrorBody>,
    },
    /// A success status whose body is not the expected JSON. For a create, Dock applied it.
    #[error("{op}: unreadable response (HTTP {status}): {reason}")]
    Decode {
        /// Call.
        op: &'static str,
        /// Status.
        status: u16,
        /// serde's category and position (never the content).
        reason: String,
    },
}

fn exc_suffix(body: &ErrorBody) -> String {
    match (body.error.as_deref(), body.exception()) {
        (Some(e), Some(x)) => format!(", {e}, {x}"),
        (Some(e), None) => format!(", {e}"),
        (None, Some(x)) => format!(", {x}"),
        (None, None) => String::new(),
    }
}

impl DockError {
    /// The call this error is about.
    pub fn op(&self) -> &'static str {
        match self {
            DockError::Request { op, .. }
            | DockError::Token { op, .. }
            | DockError::Transport { op, .. }
            | DockError::Timeout { op, .. }
            | DockError::Auth { op, .. }
            | DockError::NotFound { op, .. }
            | DockError::RateLimited { op, .. }
            | DockError::Http { op, .. }
            | DockError::Decode { op, .. } => op,
        }
    }

    /// A short stable name for metrics and logs: `request`, `token`, `transport`, `timeout`,
    /// `auth`, `not_found`, `rate_limited`, `http`, `decode`.
    pub fn class(&self) -> &'static str {
        match self {
            DockError::Request { .. } => "request",
            DockError::Token { .. } => "token",
            DockError::Transport { .. } => "transport",
            DockError::Timeout { .. } => "timeout",
            DockError::Auth { .. } => "auth",
            DockError::NotFound { .. } => "not_found",
            DockError::RateLimited { .. } => "rate_limited",
            DockError::Http { .. } => "http",
            DockError::Decode { .. } => "decode",
        }
    }

    /// The HTTP status Dock answered with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            DockError::Token { status, .. } => *status,
            DockError::Auth { status, .. }
            | DockError::Http { status, .. }
            | DockError::Decode { status, .. } => Some(*status),
            DockError::NotFound { .. } => Some(404),
            DockError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// May the same request succeed if sent again later? Transport failures, timeouts, 429,
    /// 5xx and a token endpoint that failed (not refused): yes. 4xx and unreadable bodies: no.
    /// For a create, also check [`Self::is_ambiguous`].
    pub fn is_retryable(&self) -> bool {
        match self {
            DockError::Transport { .. }
            | DockError::Timeout { .. }
            | DockError::RateLimited { .. } => true,
            DockError::Token { status, .. } => match status {
                None => true,
                Some(s) => *s == 429 || *s >= 500,
            },
            DockError::Http { status, .. } => *status >= 500,
            DockError::Request { .. }
            | DockError::Auth { .. }
            | DockError::NotFound { .. }
            | DockError::Decode { .. } => false,
        }
    }

    /// For a create: may Dock have applied it? True when the request may have been sent and
    /// no definite answer came back (a timeout or broken connection after sending, a 5xx, an
    /// unreadable success). Such a create must be reconciled (looked up), never blindly
    /// re-posted. Token failures, 4xx and 429 are definite refusals: false.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            DockError::Transport { sent, .. } | DockError::Timeout { sent, .. } => *sent,
            DockError::Http { status, .. } => *status >= 500,
            DockError::Decode { .. } => true,
            DockError::Request { .. }
            | DockError::Token { .. }
            | DockError::Auth { .. }
            | DockError::NotFound { .. }
            | DockError::RateLimited { .. } => false,
        }
    }

    /// How long Dock asked us to wait (`Retry-After` of a 429).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DockError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The parsed error body, for HTTP errors.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            DockError::Auth { body, .. }
            | DockError::NotFound { body, .. }
            | DockError::Http { body, .. } => Some(body.as_ref()),
            _ => None,
        }
    }

    /// Dock's error text (`message`, or the raw body). It may echo request values (task
    /// text, patient data): show it to an engineer debugging an account, never log it.
    pub fn dock_message(&self) -> Option<&str> {
        let b = self.body()?;
        b.message.as_deref().or(b.raw.as_deref())
    }
}

/// Reads a `Retry-After` value: delta-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPRING: &str = r#"{
  "timestamp": "2021-03-01T19:45:25.064Z",
  "status": 403,
  "error": "Forbidden",
  "message": "HeyDocAccessDeniedException: Not authorized to access patient note: 51b95ccd-4bbe-11ea-a4e8-124feabd863a",
  "path": "/api/v1/patient/b7b51675-316d-4f60-a8b2-93b19f93129b/note/51b95ccd-4bbe-11ea-a4e8-124feabd863a"
}"#;

    #[test]
    fn spring_body_is_parsed() {
        let b = ErrorBody::parse(SPRING.as_bytes());
        assert_eq!(b.status, Some(403));
        assert_eq!(b.error.as_deref(), Some("Forbidden"));
        assert_eq!(b.timestamp.as_deref(), Some("2021-03-01T19:45:25.064Z"));
        assert!(b.message.as_deref().unwrap().contains("Not authorized"));
        assert!(b.path.as_deref().unwrap().starts_with("/api/v1/patient/"));
        assert_eq!(b.exception(), Some("HeyDocAccessDeniedException"));
        assert_eq!(b.raw, None);
    }

    #[test]
    fn gateway_and_plain_bodies_are_parsed() {
        let g = ErrorBody::parse(br#"{"message":"Forbidden"}"#);
        assert_eq!(g.message.as_deref(), Some("Forbidden"));
        assert_eq!(g.status, None);
        assert_eq!(g.exception(), None);
        let g2 = ErrorBody::parse(br#"{"Message":"User is not authorized"}"#);
        assert_eq!(g2.message.as_deref(), Some("User is not authorized"));
        let p = ErrorBody::parse(b"Bad Gateway\n");
        assert_eq!(p.raw.as_deref(), Some("Bad Gateway"));
        assert_eq!(p.message, None);
        let html = ErrorBody::parse("<html>é".repeat(200).as_bytes());
        assert!(html.raw.as_ref().unwrap().len() <= ErrorBody::RAW_LIMIT);
        let broken = ErrorBody::parse(b"{not json");
        assert_eq!(broken.raw.as_deref(), Some("{not json"));
        assert_eq!(ErrorBody::parse(b"  "), ErrorBody::default());
        let odd = ErrorBody::parse(br#"{"status":"500","error":null,"message":42}"#);
        assert_eq!(odd.status, Some(500));
        assert_eq!(odd.message.as_deref(), Some("42"));
    }

    #[test]
    fn display_and_debug_hide_the_message() {
        let body = ErrorBody::parse(
            br#"{"status":400,"error":"Bad Request","message":"ValidationException: Jane Doe 1980-01-01 is bad","path":"/api/v1/task"}"#,
        );
        let e = DockError::Http {
            op: "create_task",
            status: 400,
            body: Box::new(body),
        };
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("Jane"), "{shown}");
        assert!(!shown.contains("1980"), "{shown}");
        assert!(shown.contains("ValidationException"));
        assert!(shown.contains("Bad Request"));
        assert_eq!(
            e.dock_message(),
            Some("ValidationException: Jane Doe 1980-01-01 is bad")
        );
    }

    #[test]
    fn classification() {
        let t = DockError::Timeout {
            op: "create_task",
            after: Duration::from_secs(1),
            sent: true,
        };
        assert!(t.is_retryable() && t.is_ambiguous());
        let c = DockError::Transport {
            op: "create_task",
            sent: false,
        };
        assert!(c.is_retryable() && !c.is_ambiguous());
        let r = DockError::RateLimited {
            op: "x",
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(r.is_retryable() && !r.is_ambiguous());
        assert_eq!(r.retry_after(), Some(Duration::from_secs(2)));
        let s5 = DockError::Http {
            op: "x",
            status: 503,
            body: Box::default(),
        };
        assert!(s5.is_retryable() && s5.is_ambiguous());
        let s4 = DockError::Http {
            op: "x",
            status: 409,
            body: Box::default(),
        };
        assert!(!s4.is_retryable() && !s4.is_ambiguous());
        let tok = DockError::Token {
            op: "x",
            status: Some(502),
            code: None,
        };
        assert!(tok.is_retryable() && !tok.is_ambiguous());
        let refused = DockError::Token {
            op: "x",
            status: Some(400),
            code: Some("invalid_client".into()),
        };
        assert!(!refused.is_retryable());
        assert_eq!(refused.class(), "token");
        let a = DockError::Auth {
            op: "x",
            status: 401,
            body: Box::default(),
        };
        assert!(!a.is_retryable() && !a.is_ambiguous());
        assert_eq!(a.class(), "auth");
        let d = DockError::Decode {
            op: "x",
            status: 200,
            reason: "eof".into(),
        };
        assert!(!d.is_retryable() && d.is_ambiguous());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
