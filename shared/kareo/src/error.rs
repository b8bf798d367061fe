//! One error type for everything that can go wrong talking to Kareo.
//!
//! Every variant says which operation failed and whether a retry may help
//! ([`KareoError::is_retryable`]) and, for writes, whether Kareo may have applied the request
//! ([`KareoError::is_ambiguous`]). Messages name operations, elements and flags, never
//! credentials or record values: text Kareo sent back (a fault string, an `ErrorMessage`) may
//! echo request values, so it is kept out of `Display` and only reachable through
//! [`KareoError::kareo_text`], for the debugging verbs.

use std::time::Duration;

/// What failed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be made: the request was not sent.
    Connect,
    /// The connection broke while sending or receiving.
    Broken,
    /// The response body ended early or failed while streaming.
    Body,
}

/// The flags of Kareo's `SecurityResponse` that were not true.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFlags {
    /// `Authenticated` (user name and password) was false.
    pub not_authenticated: bool,
    /// `Authorized` (permission for the operation) was false.
    pub not_authorized: bool,
    /// `CustomerKeyValid` was false.
    pub customer_key_invalid: bool,
    /// `SecurityResultSuccess` was false.
    pub result_not_success: bool,
    /// Names of the permissions Kareo listed as missing (permission names, not data).
    pub permissions_missing: Vec<String>,
}

impl std::fmt::Display for SecurityFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.customer_key_invalid {
            parts.push("CustomerKeyValid=false".to_string());
        }
        if self.not_authenticated {
            parts.push("Authenticated=false".to_string());
        }
        if self.not_authorized {
            parts.push("Authorized=false".to_string());
        }
        if self.result_not_success {
            parts.push("SecurityResultSuccess=false".to_string());
        }
        if !self.permissions_missing.is_empty() {
            parts.push(format!(
                "PermissionsMissing=[{}]",
                self.permissions_missing.join(",")
            ));
        }
        f.write_str(&parts.join(" "))
    }
}

/// An error talking to Kareo. Neither `Display` nor `Debug` shows Kareo's own text (a fault
/// string, an `ErrorMessage`, a `SecurityResult`), which can echo request values: read it
/// deliberately through [`KareoError::kareo_text`].
#[derive(thiserror::Error)]
pub enum KareoError {
    /// The request could not be built: a member is unknown, missing, or its value is not of the
    /// schema's type. `path` names the element (`request/Filter/FromLastModifiedDate`).
    #[error("{op}: invalid request at {path}: {reason}")]
    Request {
        /// Operation.
        op: &'static str,
        /// Element path.
        path: String,
        /// What is wrong (never the value).
        reason: String,
    },
    /// Network failure.
    #[error("{op}: transport failure ({kind:?}){}", if *.sent { "" } else { ", request not sent" })]
    Transport {
        /// Operation.
        op: &'static str,
        /// What failed.
        kind: TransportKind,
        /// The request body may have reached Kareo.
        sent: bool,
    },
    /// No answer within the time limit.
    #[error("{op}: timed out after {after:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// The limit.
        after: Duration,
        /// The request body may have reached Kareo.
        sent: bool,
    },
    /// An HTTP status other than 200 without a SOAP fault.
    #[error("{op}: HTTP {status}")]
    Http {
        /// Operation.
        op: &'static str,
        /// Status code.
        status: u16,
    },
    /// A SOAP fault (`s:Fault`, usually HTTP 500).
    #[error("{op}: SOAP fault {code}")]
    Fault {
        /// Operation.
        op: &'static str,
        /// `faultcode`, e.g. `a:InternalServiceFault`.
        code: String,
        /// `faultstring` (may echo values: not displayed).
        text: String,
    },
    /// Kareo's throttle: `429 …` in `ErrorResponse`, or HTTP 429.
    #[error("{op}: throttled by Kareo (interval {interval:?})")]
    Throttled {
        /// Operation.
        op: &'static str,
        /// The interval Kareo named, or the documented one.
        interval: Duration,
    },
    /// `SecurityResponse` says the credentials or permissions are not good.
    #[error("{op}: security failure: {flags}")]
    Security {
        /// Operation.
        op: &'static str,
        /// Which flags failed.
        flags: SecurityFlags,
        /// `SecurityResult` text (not displayed).
        text: String,
    },
    /// `ErrorResponse/IsError` was true (and it was not a throttle).
    #[error("{op}: Kareo reported an error (IsError=true)")]
    Api {
        /// Operation.
        op: &'static str,
        /// `ErrorMessage` (may echo values: not displayed).
        text: String,
    },
    /// The response is not what the schema says: a wrong element where a known one belongs.
    #[error("{op}: response does not match the schema: {found} where {expected} belongs")]
    Schema {
        /// Operation.
        op: &'static str,
        /// What was found (an element name, or "end of document").
        found: String,
        /// What the schema expects there.
        expected: String,
    },
    /// The response is not well-formed XML (or is truncated).
    #[error("{op}: malformed response at byte {position}: {reason}")]
    Xml {
        /// Operation.
        op: &'static str,
        /// Byte offset in the body.
        position: u64,
        /// Parser message (about syntax, not content).
        reason: String,
    },
}

impl std::fmt::Debug for KareoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KareoError::Fault { op, code, .. } => f
                .debug_struct("Fault")
                .field("op", op)
                .field("code", code)
                .finish_non_exhaustive(),
            KareoError::Security { op, flags, .. } => f
                .debug_struct("Security")
                .field("op", op)
                .field("flags", flags)
                .finish_non_exhaustive(),
            KareoError::Api { op, .. } => f
                .debug_struct("Api")
                .field("op", op)
                .finish_non_exhaustive(),
            // The other variants hold names, codes and positions only: their message is it.
            other => write!(f, "KareoError::{}({other})", other.class()),
        }
    }
}

impl KareoError {
    /// The operation this error is about.
    pub fn op(&self) -> &'static str {
        match self {
            KareoError::Request { op, .. }
            | KareoError::Transport { op, .. }
            | KareoError::Timeout { op, .. }
            | KareoError::Http { op, .. }
            | KareoError::Fault { op, .. }
            | KareoError::Throttled { op, .. }
            | KareoError::Security { op, .. }
            | KareoError::Api { op, .. }
            | KareoError::Schema { op, .. }
            | KareoError::Xml { op, .. } => op,
        }
    }

    /// A short stable name for metrics and cursors: `transport`, `timeout`, `http`, `fault`,
    /// `throttled`, `security`, `api`, `schema`, `xml`, `request`.
    pub fn class(&self) -> &'static str {
        match self {
            KareoError::Request { .. } => "request",
            KareoError::Transport { .. } => "transport",
            KareoError::Timeout { .. } => "timeout",
            KareoError::Http { .. } => "http",
            KareoError::Fault { .. } => "fault",
            KareoError::Throttled { .. } => "throttled",
            KareoError::Security { .. } => "security",
            KareoError::Api { .. } => "api",
            KareoError::Schema { .. } => "schema",
            KareoError::Xml { .. } => "xml",
        }
    }

    /// May the same request succeed if sent again later? (Throttles, timeouts, network
    /// failures, 5xx, faults and broken bodies: yes. Bad credentials, API errors, a request the
    /// schema rejects: no.) For writes, also check [`Self::is_ambiguous`].
    pub fn is_retryable(&self) -> bool {
        match self {
            KareoError::Transport { .. }
            | KareoError::Timeout { .. }
            | KareoError::Throttled { .. }
            | KareoError::Xml { .. } => true,
            KareoError::Fault { .. } => !self.is_request_fault(),
            KareoError::Http { status, .. } => *status == 429 || *status >= 500,
            KareoError::Request { .. }
            | KareoError::Security { .. }
            | KareoError::Api { .. }
            | KareoError::Schema { .. } => false,
        }
    }

    /// For a write: may Kareo have applied it? True when the body may have been sent and no
    /// definite answer came back (timeout, broken connection, 5xx, a fault, an unreadable
    /// answer). Such a write must be reconciled, never blindly retried.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            KareoError::Transport { sent, .. } | KareoError::Timeout { sent, .. } => *sent,
            KareoError::Http { status, .. } => *status >= 500,
            KareoError::Fault { .. } => !self.is_request_fault(),
            KareoError::Xml { .. } | KareoError::Schema { .. } => true,
            KareoError::Request { .. }
            | KareoError::Throttled { .. }
            | KareoError::Security { .. }
            | KareoError::Api { .. } => false,
        }
    }

    /// A SOAP fault WCF answers to a request it could not take at all — it could not read it
    /// (`DeserializationFailed`), no operation has its action (`ActionNotSupported`), the
    /// envelope is another SOAP version (`VersionMismatch`, `MustUnderstand`): the request is
    /// wrong, not the service, so neither a retry nor a narrower window changes anything, and
    /// a write answered so was not applied.
    pub fn is_request_fault(&self) -> bool {
        const REQUEST_FAULTS: [&str; 4] = [
            "DeserializationFailed",
            "ActionNotSupported",
            "VersionMismatch",
            "MustUnderstand",
        ];
        matches!(self, KareoError::Fault { code, .. }
            if REQUEST_FAULTS.contains(&code.rsplit(':').next().unwrap_or(code)))
    }

    /// The connection to Kareo could not be made (refused, unresolvable, connect timeout):
    /// nothing was sent, and retrying soon rarely helps.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            KareoError::Transport {
                kind: TransportKind::Connect,
                sent: false,
                ..
            }
        )
    }

    /// How long to wait before a retry, when Kareo said so (a throttle).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KareoError::Throttled { interval, .. } => Some(*interval),
            _ => None,
        }
    }

    /// Text Kareo sent back (fault string, `ErrorMessage`, `SecurityResult`). It may echo
    /// request values: show it to an engineer debugging an account, never log it.
    pub fn kareo_text(&self) -> Option<&str> {
        match self {
            KareoError::Fault { text, .. }
            | KareoError::Security { text, .. }
            | KareoError::Api { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Reads Kareo's throttle message: `429: GetPatients endpoint requested more than allowed over
/// time interval 1000 milliseconds. Please wait to try again.` Returns the interval when the
/// text is a throttle message.
pub fn parse_throttle_message(text: &str) -> Option<Duration> {
    let t = text.trim_start();
    if !(t.starts_with("429") || t.contains("more than allowed")) {
        return None;
    }
    let ms = t
        .split("interval")
        .nth(1)
        .and_then(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(1000.0);
    Some(Duration::from_millis(ms.max(0.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_message_is_read() {
        let m = "429: GetPatients endpoint requested more than allowed over time interval 1000 milliseconds. Please wait to try again.";
        assert_eq!(parse_throttle_message(m), Some(Duration::from_millis(1000)));
        assert_eq!(
            parse_throttle_message("429: too many"),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(parse_throttle_message("Unable to find user."), None);
    }

    #[test]
    fn classification() {
        let t = KareoError::Timeout {
            op: "CreatePatient",
            after: Duration::from_secs(1),
            sent: true,
        };
        assert!(t.is_retryable() && t.is_ambiguous());
        let c = KareoError::Transport {
            op: "CreatePatient",
            kind: TransportKind::Connect,
            sent: false,
        };
        assert!(c.is_retryable() && !c.is_ambiguous());
        let s = KareoError::Security {
            op: "GetPatients",
            flags: SecurityFlags::default(),
            text: "x".into(),
        };
        assert!(!s.is_retryable() && !s.is_ambiguous());
        let th = KareoError::Throttled {
            op: "GetPatients",
            interval: Duration::from_secs(1),
        };
        assert!(th.is_retryable() && !th.is_ambiguous());
        assert!(KareoError::Http {
            op: "x",
            status: 503
        }
        .is_retryable());
        assert!(!KareoError::Http {
            op: "x",
            status: 404
        }
        .is_retryable());
    }

    #[test]
    fn a_fault_about_the_request_is_neither_retried_nor_ambiguous() {
        let fault = |code: &str| KareoError::Fault {
            op: "CreatePatient",
            code: code.into(),
            text: String::new(),
        };
        for code in [
            "a:DeserializationFailed",
            "a:ActionNotSupported",
            "s:VersionMismatch",
        ] {
            let f = fault(code);
            assert!(
                f.is_request_fault() && !f.is_retryable() && !f.is_ambiguous(),
                "{code}"
            );
        }
        let f = fault("a:InternalServiceFault");
        assert!(!f.is_request_fault() && f.is_retryable() && f.is_ambiguous());
    }

    #[test]
    fn display_hides_kareo_text() {
        let e = KareoError::Fault {
            op: "GetPatients",
            code: "a:DeserializationFailed".into(),
            text: "value 'Jane Doe' is bad".into(),
        };
        assert!(!e.to_string().contains("Jane"));
        assert!(!format!("{e:?}").contains("Jane"), "Debug hides it too");
        let api = KareoError::Api {
            op: "CreatePatient",
            text: "Patient 'Jane Doe' exists".into(),
        };
        assert!(!format!("{api:?} {api}").contains("Jane"));
        assert_eq!(e.kareo_text(), Some("value 'Jane Doe' is bad"));
    }
}
