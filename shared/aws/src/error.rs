//! What an SDK error is, in words that name no item, payload or secret: the service's error
//! code, else the HTTP status, else the kind of transport failure.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// The parts of an SDK error that may be logged and put in error messages.
pub(crate) struct Described {
    /// The service's error code (`ConditionalCheckFailedException`, …), when it sent one.
    pub code: Option<String>,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// What kind of failure, when no response arrived.
    pub kind: &'static str,
}

impl Described {
    /// The code, else `HTTP <status>`, else the kind.
    pub fn label(&self) -> String {
        match (&self.code, self.status) {
            (Some(code), _) => code.clone(),
            (None, Some(status)) => format!("HTTP {status}"),
            (None, None) => self.kind.to_string(),
        }
    }
}

/// Describes an SDK error (the three SDKs share the error type).
pub(crate) fn describe<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Described {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let (code, kind) = match e {
        SdkError::ServiceError(s) => (
            s.err().code().filter(|c| !c.is_empty()).map(str::to_string),
            "service error",
        ),
        SdkError::TimeoutError(_) => (None, "timeout"),
        SdkError::DispatchFailure(d) if d.is_timeout() => (None, "timeout"),
        SdkError::DispatchFailure(d) if d.is_io() => (None, "connection failed"),
        SdkError::DispatchFailure(_) => (None, "dispatch failure"),
        SdkError::ResponseError(_) => (None, "unreadable response"),
        SdkError::ConstructionFailure(_) => (None, "request construction failed"),
        _ => (None, "unknown failure"),
    };
    Described { code, status, kind }
}
