//! Asynchronous Lambda invocations: change events to the task-creation function, and a poll
//! coordinator's shards to the poll function itself.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;
use domain::ports::{ErrorClass, EventSink, ShardDispatch, SinkError};
use domain::ChangeEvent;

use crate::error::describe;

/// Hands batches of change events to the task-creation function: `Invoke` with
/// `InvocationType::Event` and the payload `{"events": [ChangeEvent, …]}`. Lambda answers 202
/// once it has queued the event; the function's own retries and its failure destination take
/// it from there. Payloads above Lambda's asynchronous limit are refused (`rejected`): keep
/// batches small.
///
/// Emulators (`cargo lambda watch`) run an `Event` invoke to completion and answer 200: that is
/// a hand-off too, unless the function failed (`X-Amz-Function-Error`), in which case nothing
/// will retry the batch and the hand-off fails (`unavailable`), so the cursor stays put.
///
/// Pointed at the calling function itself (`AWS_LAMBDA_FUNCTION_NAME`), it is the poll
/// coordinator's [`ShardDispatch`]: the same asynchronous `Invoke`, with a shard's payload.
#[derive(Clone, Debug)]
pub struct LambdaSink {
    /// The Lambda client.
    pub client: Client,
    /// Name or ARN of the task-creation function.
    pub function: String,
}

impl LambdaSink {
    /// A sink invoking `function`.
    pub fn new(client: Client, function: impl Into<String>) -> LambdaSink {
        LambdaSink {
            client,
            function: function.into(),
        }
    }
}

/// The payload: `{"events": [...]}`.
fn payload(batch: &[ChangeEvent]) -> Result<Vec<u8>, SinkError> {
    let mut buf = b"{\"events\":".to_vec();
    serde_json::to_writer(&mut buf, batch).map_err(|_| SinkError {
        class: ErrorClass::SinkRejected,
        message: "an event could not be serialised".into(),
    })?;
    buf.push(b'}');
    Ok(buf)
}

/// The class of an `Invoke` failure, from the error code, else the HTTP status.
fn class(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    match (code, status) {
        (
            Some(
                "TooManyRequestsException"
                | "ThrottlingException"
                | "EC2ThrottledException"
                | "RequestLimitExceeded",
            ),
            _,
        ) => ErrorClass::SinkThrottled,
        (
            Some(
                "RequestTooLargeException"
                | "InvalidRequestContentException"
                | "UnsupportedMediaTypeException"
                | "InvalidParameterValueException",
            ),
            _,
        ) => ErrorClass::SinkRejected,
        (Some(_), _) => ErrorClass::SinkUnavailable,
        (None, Some(429)) => ErrorClass::SinkThrottled,
        (None, Some(413)) => ErrorClass::SinkRejected,
        _ => ErrorClass::SinkUnavailable,
    }
}

impl LambdaSink {
    /// One asynchronous `Invoke` of the function with `body` (`what`: `count` events or shard
    /// tenants, for the log line).
    // Long: the answer's three shapes (accepted, refused by status, failed) each logged.
    async fn invoke_event(
        &self,
        body: Vec<u8>,
        what: &'static str,
        count: usize,
    ) -> Result<(), SinkError> {
        let bytes = body.len();
        let started = std::time::Instant::now();
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(body))
            .send()
            .await;
        match out {
            Ok(out)
                if out.status_code() == 202
                    || (out.status_code() == 200 && out.function_error().is_none()) =>
            {
                tracing::debug!(
                    function = %self.function,
                    what,
                    count,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "invocation accepted"
                );
                Ok(())
            }
            Ok(out) => {
                let status = out.status_code();
                let failed = out.function_error().unwrap_or("none");
                tracing::warn!(
                    function = %self.function,
                    what,
                    status,
                    function_error = failed,
                    "unexpected Invoke answer"
                );
                Err(SinkError {
                    class: ErrorClass::SinkUnavailable,
                    message: format!(
                        "invoke {}: status {status}, function error {failed}",
                        self.function
                    ),
                })
            }
            Err(e) => {
                let d = describe(&e);
                let class = class(d.code.as_deref(), d.status);
                let label = d.label();
                tracing::warn!(
                    function = %self.function,
                    error = %label,
                    class = class.name(),
                    what,
                    count,
                    bytes,
                    "Invoke failed"
                );
                Err(SinkError {
                    class,
                    message: format!("invoke {}: {label}", self.function),
                })
            }
        }
    }
}

impl EventSink for LambdaSink {
    async fn hand_off(&self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.invoke_event(payload(batch)?, "events", batch.len())
            .await
    }
}

impl ShardDispatch for LambdaSink {
    async fn dispatch(&self, payload: &serde_json::Value) -> Result<(), SinkError> {
        let tenants = payload["shard"]["tenants"].as_array().map_or(0, Vec::len);
        let body = serde_json::to_vec(payload).map_err(|_| SinkError {
            class: ErrorClass::SinkRejected,
            message: "a shard payload could not be serialised".into(),
        })?;
        self.invoke_event(body, "shard tenants", tenants).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(
            class(Some("TooManyRequestsException"), Some(429)),
            "sink_throttled"
        );
        assert_eq!(
            class(Some("RequestTooLargeException"), Some(413)),
            "sink_rejected"
        );
        assert_eq!(
            class(Some("ServiceException"), Some(500)),
            "sink_unavailable"
        );
        assert_eq!(
            class(Some("ResourceNotFoundException"), Some(404)),
            "sink_unavailable"
        );
        assert_eq!(class(None, Some(429)), "sink_throttled");
        assert_eq!(class(None, Some(413)), "sink_rejected");
        assert_eq!(class(None, Some(502)), "sink_unavailable");
        assert_eq!(class(None, None), "sink_unavailable");
    }

    #[test]
    fn empty_payload_shape() {
        assert_eq!(payload(&[]).unwrap(), b"{\"events\":[]}");
    }
}
