//! Error classes: the one short, stable name a failure carries wherever it is recorded — a
//! log line's `class`, the `ErrorClass` metric dimension, a cursor's `last_error`, a dead
//! letter, a delivery's failures. Names are snake_case and never change meaning; a new failure
//! gets a new name. `docs/operations.md` ("Error classes") says what each means and what to do,
//! and a test fails when a class is missing there.

use dock::DockError;
use kareo::KareoError;
use serde::{Deserialize, Serialize};
use strum::{EnumIter, EnumString, IntoStaticStr};

/// The class of a failure.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    IntoStaticStr,
    EnumString,
    EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    // Kareo, as the poller and the CLI read it (the client's own class, prefixed).
    /// A request the client refused to send (the schema rejects it).
    KareoRequest,
    /// A connection that failed or broke.
    KareoTransport,
    /// No answer in time.
    KareoTimeout,
    /// An HTTP status other than 200 (5xx and 429 after retries).
    KareoHttp,
    /// A SOAP fault (InternalServiceFault) after retries and window splits.
    KareoFault,
    /// Kareo's throttle, after retries.
    KareoThrottled,
    /// Kareo refused the user's permissions (the credentials were accepted).
    KareoSecurity,
    /// Kareo refused the customer key, user name or password: the account's breaker opens.
    KareoCredentials,
    /// Not called: the account's breaker is open after a credentials failure.
    KareoBreakerOpen,
    /// Kareo answered with an API error (`ErrorResponse`).
    KareoApi,
    /// A response that does not fit Kareo's schema.
    KareoSchema,
    /// A malformed or truncated XML body.
    KareoXml,

    // The state store.
    /// A conditional write lost: another run holds the lease or moved the item.
    Conflict,
    /// The state store throttled.
    StoreThrottled,
    /// The state store failed or was unreachable.
    StoreUnavailable,
    /// An item this version cannot read.
    StoreCorrupt,

    // The hand-off to the task function.
    /// The task function's Invoke was throttled.
    SinkThrottled,
    /// The task function could not be reached.
    SinkUnavailable,
    /// The task function refused the batch (too large, malformed).
    SinkRejected,
    /// The task function's delivery left something to retry.
    SinkRetry,

    // Configuration and data.
    /// A secret is missing or unreadable.
    Secret,
    /// A record Kareo sent cannot be turned into a change event.
    Data,
    /// An event names a tenant the state table does not hold.
    UnknownTenant,
    /// A rule cannot be applied as written (a workflow without a task group).
    Rule,

    // Dock, as task creation sees it (the client's own class, prefixed).
    /// A request the Dock client refused to build.
    DockRequest,
    /// Dock's token endpoint failed or refused the client credentials.
    DockToken,
    /// A connection to Dock failed or broke.
    DockTransport,
    /// Dock did not answer in time.
    DockTimeout,
    /// Dock refused the token or the API key (401/403).
    DockAuth,
    /// Dock has no such resource (404).
    DockNotFound,
    /// Dock's rate limit (429), after retries.
    DockRateLimited,
    /// Another HTTP status from Dock.
    DockHttp,
    /// A Dock answer that is not what its API documents.
    DockDecode,
    /// The rule's task list is not in Dock.
    UnknownList,
    /// The rule's task group is not in its list.
    UnknownGroup,
    /// The rule's workflow template is not in Dock.
    UnknownWorkflow,
    /// The rule's assignee is not a Dock user of the organisation.
    UnknownAssignee,
    /// Another delivery holds the (event, rule) claim.
    Held,
}

impl ErrorClass {
    /// The stable name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The class of a Kareo client error.
    pub fn of_kareo(e: &KareoError) -> ErrorClass {
        match e {
            KareoError::Request { .. } => ErrorClass::KareoRequest,
            KareoError::Transport { .. } => ErrorClass::KareoTransport,
            KareoError::Timeout { .. } => ErrorClass::KareoTimeout,
            KareoError::Http { .. } => ErrorClass::KareoHttp,
            KareoError::Fault { .. } if e.is_request_fault() => ErrorClass::KareoRequest,
            KareoError::Fault { .. } => ErrorClass::KareoFault,
            KareoError::Throttled { .. } => ErrorClass::KareoThrottled,
            KareoError::Security { flags, .. }
                if flags.not_authenticated || flags.customer_key_invalid =>
            {
                ErrorClass::KareoCredentials
            }
            KareoError::Security { .. } => ErrorClass::KareoSecurity,
            KareoError::Api { .. } => ErrorClass::KareoApi,
            KareoError::Schema { .. } => ErrorClass::KareoSchema,
            KareoError::Xml { .. } => ErrorClass::KareoXml,
        }
    }

    /// The class of a Dock client error.
    pub fn of_dock(e: &DockError) -> ErrorClass {
        match e {
            DockError::Request { .. } => ErrorClass::DockRequest,
            DockError::Token { .. } => ErrorClass::DockToken,
            DockError::Transport { .. } => ErrorClass::DockTransport,
            DockError::Timeout { .. } => ErrorClass::DockTimeout,
            DockError::Auth { .. } => ErrorClass::DockAuth,
            DockError::NotFound { .. } => ErrorClass::DockNotFound,
            DockError::RateLimited { .. } => ErrorClass::DockRateLimited,
            DockError::Http { .. } => ErrorClass::DockHttp,
            DockError::Decode { .. } => ErrorClass::DockDecode,
        }
    }

    /// Does a later attempt usually succeed by itself (a throttle, an outage, a timeout, a
    /// claim someone else holds)? The error behind one failure decides for it (an HTTP 400
    /// is not retried although `kareo_http` usually is a 5xx); this is the class's rule, for
    /// the runbook and alarms.
    pub fn retryable(self) -> bool {
        use ErrorClass::*;
        matches!(
            self,
            KareoTransport
                | KareoTimeout
                | KareoHttp
                | KareoFault
                | KareoThrottled
                | KareoXml
                | Conflict
                | StoreThrottled
                | StoreUnavailable
                | SinkThrottled
                | SinkUnavailable
                | SinkRetry
                | DockToken
                | DockTransport
                | DockTimeout
                | DockRateLimited
                | DockHttp
                | Held
        )
    }

    /// Can only a person fix it (configuration, credentials, data, the Dock side)?
    pub fn permanent(self) -> bool {
        !self.retryable()
    }

    /// May the failed call have taken effect (a timeout or broken connection after sending)?
    pub fn ambiguous(self) -> bool {
        matches!(
            self,
            ErrorClass::KareoTransport
                | ErrorClass::KareoTimeout
                | ErrorClass::DockTransport
                | ErrorClass::DockTimeout
        )
    }

    /// Is it a throttle (Kareo's, the state store's or the hand-off's)?
    pub fn is_throttle(self) -> bool {
        matches!(
            self,
            ErrorClass::KareoThrottled | ErrorClass::StoreThrottled | ErrorClass::SinkThrottled
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for ErrorClass {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl PartialEq<str> for ErrorClass {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn names_are_snake_case_stable_and_read_back() {
        assert_eq!(ErrorClass::KareoThrottled.name(), "kareo_throttled");
        assert_eq!(ErrorClass::SinkRetry.name(), "sink_retry");
        assert_eq!(ErrorClass::UnknownList.name(), "unknown_list");
        for c in ErrorClass::iter() {
            assert_eq!(c.name().parse::<ErrorClass>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert!(c
                .name()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
        }
    }

    #[test]
    fn the_client_classes_map_onto_the_prefixed_names() {
        let throttled = KareoError::Throttled {
            op: "GetPatients",
            interval: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            ErrorClass::of_kareo(&throttled).name(),
            format!("kareo_{}", throttled.class())
        );
        assert!(ErrorClass::of_kareo(&throttled).is_throttle());
        assert!(ErrorClass::of_kareo(&throttled).retryable());
        assert!(ErrorClass::KareoSecurity.permanent());
        assert!(ErrorClass::DockTimeout.ambiguous());
        assert!(!ErrorClass::UnknownList.retryable());
    }

    #[test]
    fn every_class_is_documented_in_the_runbook() {
        let runbook = include_str!("../../../docs/operations.md");
        let missing: Vec<&str> = ErrorClass::iter()
            .map(ErrorClass::name)
            .filter(|n| !runbook.contains(&format!("| `{n}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/operations.md has no row for {missing:?}"
        );
    }
}
