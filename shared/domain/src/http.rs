//! An HTTP exchange as the write and webhook functions see it: what a Lambda Function URL hands
//! over, and the status and JSON body they answer with. Payload parsing is at the edge
//! (`aws::function_url`).

use std::collections::BTreeMap;

use serde_json::Value;

/// An HTTP request as the Function URL hands it over.
#[derive(Clone, Default)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The IAM principal that signed the request, as the Function URL proved it (auth
    /// `AWS_IAM`: `requestContext.authorizer.iam.userArn`); `None` for an unsigned URL.
    pub caller: Option<String>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResponse {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}
