//! The Kareo HTTP client: envelope → throttle → POST → streaming reader, with retries.
//!
//! One [`KareoClient`] serves every account of a process (credentials are passed per call);
//! build it once and share it. Reads are retried on throttles and transient failures with
//! jittered backoff; a write is retried only when Kareo certainly did not apply it (a throttle
//! answer, a refused connection) — an ambiguous write error is returned to the caller, who
//! must reconcile.
//!
//! Responses are streamed: [`KareoClient::stream`] hands back a [`RecordStream`] that parses
//! the HTTP body as it arrives, so memory stays flat whatever the response size.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio_util::io::StreamReader;

use crate::budget::{self, AccountId, LiveIntervals, Sharing};
use crate::envelope::{self, Credentials};
use crate::error::{KareoError, TransportKind};
use crate::reader::ResponseReader;
use crate::record::Record;
use crate::schema::{self, OpDef};
use crate::throttle::{RetryPolicy, Throttle};

/// Kareo's production endpoint.
pub const DEFAULT_ENDPOINT: &str =
    "https://webservice.kareo.com/services/soap/2.1/KareoServices.svc";

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// SOAP endpoint (`KAREO_ENDPOINT`).
    pub endpoint: String,
    /// `RequestHeader/ClientVersion`.
    pub client_version: String,
    /// Connection set-up limit.
    pub connect_timeout: Duration,
    /// Limit for the whole exchange, body included.
    pub timeout: Duration,
    /// Limit between two reads of the body.
    pub read_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Added to every documented or live interval.
    pub throttle_margin: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            client_version: concat!("kareo-dock/", env!("CARGO_PKG_VERSION")).into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            throttle_margin: Duration::from_millis(250),
        }
    }
}

impl ClientConfig {
    /// Defaults, with the endpoint from `KAREO_ENDPOINT` when set.
    pub fn from_env() -> Self {
        let mut c = ClientConfig::default();
        if let Ok(e) = std::env::var("KAREO_ENDPOINT") {
            if !e.trim().is_empty() {
                c.endpoint = e.trim().to_string();
            }
        }
        c
    }
}

/// The Kareo client.
#[derive(Clone)]
pub struct KareoClient {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
    throttle: Arc<Throttle>,
    /// PracticeIDs resolved from names, per (customer key, name): kept for the process.
    practices: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), i64>>>,
    /// Accounts (customer keys) whose GetThrottles this process has read.
    throttles_read: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The accounts' budgets shared with other processes, if any (see [`crate::budget`]).
    sharing: Option<Sharing>,
}

impl std::fmt::Debug for KareoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KareoClient")
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

/// Every record of a call, collected. `Debug` shows counts, never values.
pub struct Response {
    /// The records.
    pub records: Vec<Record>,
    /// GetAllPatients: the key of the next page, `None` on the last.
    pub next_start_key: Option<i64>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("records", &self.records.len())
            .field("next_start_key", &self.next_start_key)
            .finish()
    }
}

type Body = StreamReader<BoxStream<'static, io::Result<Bytes>>, Bytes>;

/// The records of one response, parsed as the body arrives.
pub struct RecordStream {
    reader: ResponseReader<Body>,
    peeked: Option<Record>,
    done: bool,
}

impl RecordStream {
    /// The next record; `Ok(None)` at the end.
    pub async fn next(&mut self) -> Result<Option<Record>, KareoError> {
        if let Some(r) = self.peeked.take() {
            return Ok(Some(r));
        }
        if self.done {
            return Ok(None);
        }
        let r = self.reader.next_record_async().await?;
        self.done = r.is_none();
        Ok(r)
    }

    /// GetAllPatients: the key of the next page (known before the first record).
    pub fn next_start_key(&self) -> Option<i64> {
        self.reader.next_start_key()
    }
}

/// `https://…`, or `http://` to a loopback host (the simulators): credentials travel in every
/// request body.
pub fn secure_endpoint(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url.trim()) else {
        return false;
    };
    let host = u.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !host.is_empty() && (u.scheme() == "https" || (u.scheme() == "http" && loopback))
}

impl KareoClient {
    /// A client with its own HTTP connection pool and throttle.
    pub fn new(cfg: ClientConfig) -> Result<KareoClient, KareoError> {
        if !secure_endpoint(&cfg.endpoint) {
            return Err(KareoError::Request {
                op: "client",
                path: "endpoint".into(),
                reason: "must be an https URL (plain http only to a loopback host)".into(),
            });
        }
        let http = https::client_builder()
            // A redirect would re-post the SOAP body, credentials included, to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .read_timeout(cfg.read_timeout)
            .build()
            .map_err(|_| KareoError::Transport {
                op: "client",
                kind: TransportKind::Connect,
                sent: false,
            })?;
        let throttle = Arc::new(Throttle::new(cfg.throttle_margin));
        Ok(KareoClient::with_parts(http, cfg, throttle))
    }

    /// A client from a shared HTTP client and throttle.
    pub fn with_parts(http: reqwest::Client, cfg: ClientConfig, throttle: Arc<Throttle>) -> Self {
        KareoClient {
            http,
            cfg: Arc::new(cfg),
            throttle,
            practices: Arc::default(),
            throttles_read: Arc::default(),
            sharing: None,
        }
    }

    /// This client, taking turns with other processes through `sharing`: live intervals read
    /// by any of them, and a slot per call of the operations `sharing` names.
    pub fn with_sharing(mut self, sharing: Sharing) -> Self {
        self.sharing = Some(sharing);
        self
    }

    /// Reads GetThrottles for this account once per process (a container start): its live
    /// intervals then space every call. With [`Sharing`], intervals another process stored
    /// less than [`budget::LIVE_FOR`] ago are loaded instead, and only the process that claims
    /// the read calls GetThrottles (one that loses the claim uses the documented intervals and
    /// looks again next time). `Ok(true)`: live intervals are in use from now on; later calls
    /// do nothing and return `Ok(false)`.
    pub async fn throttles_once(&self, creds: &Credentials) -> Result<bool, KareoError> {
        let first = self
            .throttles_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(creds.customer_key.clone());
        if !first {
            return Ok(false);
        }
        let forget = || {
            self.throttles_read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&creds.customer_key);
        };
        let account = AccountId::of(&creds.customer_key);
        match self.shared_live(creds, &account).await {
            SharedLive::Loaded => return Ok(true),
            SharedLive::Claimed => {
                forget();
                return Ok(false);
            }
            SharedLive::Read => {}
        }
        match self.refresh_throttles(creds).await {
            Ok(n) => {
                tracing::info!(
                    intervals = n,
                    "Kareo's live throttle intervals read (GetThrottles)"
                );
                Ok(true)
            }
            Err(e) => {
                if matches!(e, KareoError::Security { .. }) {
                    // These credentials were refused: another tenant's (same key, another
                    // user) may still read them.
                    forget();
                }
                Err(e)
            }
        }
    }

    /// What the shared store says of the account's live intervals: loaded from it, claimed by
    /// another process, or to be read by this one (also when there is no store, or it failed).
    async fn shared_live(&self, creds: &Credentials, account: &AccountId) -> SharedLive {
        let Some(sharing) = &self.sharing else {
            return SharedLive::Read;
        };
        let now = budget::now_ms();
        match sharing.budget.live(account).await {
            Ok(Some(live))
                if now.saturating_sub(live.read_at_ms) < budget::LIVE_FOR.as_millis() as u64 =>
            {
                let n = live.intervals.len();
                self.throttle.set_live(
                    &creds.customer_key,
                    live.intervals
                        .into_iter()
                        .map(|(op, ms)| (op, Duration::from_millis(ms))),
                );
                tracing::info!(
                    intervals = n,
                    "Kareo's live throttle intervals loaded from the shared store"
                );
                return SharedLive::Loaded;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "shared budget unavailable: reading GetThrottles");
                return SharedLive::Read;
            }
        }
        let until = now + budget::CLAIM_FOR.as_millis() as u64;
        match sharing
            .budget
            .claim_read(account, &sharing.owner, now, until)
            .await
        {
            Ok(true) => SharedLive::Read,
            Ok(false) => {
                tracing::info!("another process is reading GetThrottles: documented intervals until it stores them");
                SharedLive::Claimed
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared budget unavailable: reading GetThrottles");
                SharedLive::Read
            }
        }
    }

    /// The PracticeID of the account's practice named `name` (case and surrounding spaces
    /// ignored), read once with GetPractices and kept for the life of the client: Kareo's
    /// guide requires `PracticeID` on some reads, and a tenant config may name the practice
    /// only. `None` when the account has no practice of that name.
    pub async fn practice_id(
        &self,
        creds: &Credentials,
        name: &str,
    ) -> Result<Option<i64>, KareoError> {
        let key = (creds.customer_key.clone(), name.trim().to_lowercase());
        if let Some(id) = self
            .practices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(*id));
        }
        let op = schema::op("GetPractices").expect("GetPractices is in the schema");
        let body = serde_json::json!({"Fields": {}, "Filter": {}});
        let found = self
            .call(creds, op, &body)
            .await?
            .records
            .iter()
            .find_map(|r| {
                let named = r
                    .get("PracticeName")
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name.trim()));
                named
                    .then(|| r.get("ID").and_then(|i| i.trim().parse::<i64>().ok()))
                    .flatten()
            });
        if let Some(id) = found {
            self.practices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, id);
        }
        Ok(found)
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The throttle.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Calls `op` and returns its records as a stream. Throttles, transient failures and
    /// errors Kareo reports before the first record are retried per the policy (writes only
    /// when certainly not applied). An error in the middle of the body is returned by
    /// [`RecordStream::next`]: the caller must not treat the records it got as the whole answer.
    pub async fn stream(
        &self,
        creds: &Credentials,
        op: &'static OpDef,
        body: &Value,
    ) -> Result<RecordStream, KareoError> {
        let xml: Bytes = envelope::write(op, creds, &self.cfg.client_version, body)?.into();
        self.retrying(op, || self.attempt(creds, op, xml.clone()))
            .await
    }

    /// Calls `op` and collects every record. Unlike [`Self::stream`], a failure in the middle
    /// of the body is retried too (the whole call again) when the policy allows it.
    pub async fn call(
        &self,
        creds: &Credentials,
        op: &'static OpDef,
        body: &Value,
    ) -> Result<Response, KareoError> {
        self.call_up_to(creds, op, body, usize::MAX).await
    }

    /// [`Self::call`], collecting at most `cap` records: a response with more is not read to
    /// its end (the connection is dropped), so a window the caller will split anyway costs
    /// the parse of `cap` records, not of all of them.
    pub async fn call_up_to(
        &self,
        creds: &Credentials,
        op: &'static OpDef,
        body: &Value,
        cap: usize,
    ) -> Result<Response, KareoError> {
        let xml: Bytes = envelope::write(op, creds, &self.cfg.client_version, body)?.into();
        self.retrying(op, || async {
            let mut s = self.attempt(creds, op, xml.clone()).await?;
            let mut records = Vec::new();
            while records.len() < cap {
                match s.next().await? {
                    Some(r) => records.push(r),
                    None => break,
                }
            }
            Ok(Response {
                next_start_key: s.next_start_key(),
                records,
            })
        })
        .await
    }

    /// Runs `f` under the retry policy: retryable errors are retried with jittered backoff
    /// (at least the interval a throttle names), except a write whose outcome is ambiguous.
    async fn retrying<T, F, Fut>(&self, op: &'static OpDef, f: F) -> Result<T, KareoError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, KareoError>>,
    {
        // An endpoint that cannot be reached is tried twice, not for the whole policy: a
        // wrong KAREO_ENDPOINT or a network outage fails in seconds, naming the host.
        let unreachable = std::sync::atomic::AtomicU32::new(0);
        f.retry(self.cfg.retry.backoff())
            .when(|e: &KareoError| {
                if e.is_unreachable() {
                    let n = unreachable.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    tracing::warn!(
                        op = op.name,
                        host = %endpoint_host(&self.cfg.endpoint),
                        "cannot connect to the Kareo endpoint"
                    );
                    return n < 2;
                }
                e.is_retryable() && !(op.is_write() && e.is_ambiguous())
            })
            .adjust(
                |e: &KareoError, d: Option<Duration>| match (e.retry_after(), d) {
                    (Some(wait), Some(d)) => Some(d.max(wait)),
                    (_, d) => d,
                },
            )
            .notify(|e: &KareoError, d: Duration| {
                tracing::info!(
                    op = op.name,
                    class = e.class(),
                    retry_in_ms = d.as_millis() as u64,
                    "kareo call retried"
                );
            })
            .await
    }

    /// Sends a typed request (see [`crate::request`]) and collects every record.
    pub async fn send<R: crate::request::KareoRequest>(
        &self,
        creds: &Credentials,
        req: &R,
    ) -> Result<Response, KareoError> {
        self.call(creds, R::op(), &req.to_body()?).await
    }

    /// Sends a typed request and streams its records.
    pub async fn send_streaming<R: crate::request::KareoRequest>(
        &self,
        creds: &Credentials,
        req: &R,
    ) -> Result<RecordStream, KareoError> {
        self.stream(creds, R::op(), &req.to_body()?).await
    }

    /// Calls an operation by name (see [`Self::call`]).
    pub async fn call_named(
        &self,
        creds: &Credentials,
        op: &str,
        body: &Value,
    ) -> Result<Response, KareoError> {
        self.call(creds, envelope::operation(op)?, body).await
    }

    /// Reads GetThrottles and uses its intervals for this account from now on. Returns how
    /// many intervals were read.
    pub async fn refresh_throttles(&self, creds: &Credentials) -> Result<usize, KareoError> {
        let op = schema::op("GetThrottles").expect("GetThrottles is in the schema");
        let resp = self.call(creds, op, &Value::Null).await?;
        let live: Vec<(String, Duration)> = resp
            .records
            .iter()
            .filter_map(|r| {
                let endpoint = operation_named(r.get("Endpoint")?)?;
                let ms: f64 = r.get("ThrottleTimeMs")?.trim().parse().ok()?;
                Some((
                    endpoint.to_string(),
                    Duration::from_millis(ms.max(0.0) as u64),
                ))
            })
            .collect();
        let n = live.len();
        let account = AccountId::of(&creds.customer_key);
        if let Some(sharing) = &self.sharing {
            let stored = LiveIntervals {
                read_at_ms: budget::now_ms(),
                intervals: live
                    .iter()
                    .map(|(op, d)| (op.clone(), d.as_millis() as u64))
                    .collect(),
            };
            if let Err(e) = sharing.budget.store_live(&account, &stored).await {
                tracing::warn!(error = %e, "shared budget unavailable: live intervals kept in this process only");
            }
        }
        self.throttle.set_live(&creds.customer_key, live);
        Ok(n)
    }

    /// Waits for this process's next slot of `op` on the account, then, when `op` is shared,
    /// for the next slot every process sharing the account's budget agrees on.
    async fn take_slot(&self, creds: &Credentials, op: &'static OpDef) {
        self.throttle.wait(&creds.customer_key, op).await;
        let Some(sharing) = self.sharing.as_ref().filter(|s| s.ops.includes(op.name)) else {
            return;
        };
        let account = AccountId::of(&creds.customer_key);
        let interval = self.throttle.interval(&creds.customer_key, op).as_millis() as u64;
        match sharing
            .budget
            .reserve(&account, op.name, interval, budget::now_ms())
            .await
        {
            Ok(slot) => {
                let wait = Duration::from_millis(slot.saturating_sub(budget::now_ms()));
                if !wait.is_zero() {
                    tokio::time::sleep(wait.min(budget::MAX_WAIT)).await;
                }
            }
            Err(e) => {
                tracing::warn!(op = op.name, error = %e, "shared budget unavailable: spacing this process's calls only");
            }
        }
    }

    /// Checks the credentials with GetCustomerIdFromKey; returns the customer id.
    pub async fn customer_id(&self, creds: &Credentials) -> Result<Option<i64>, KareoError> {
        let op = schema::op("GetCustomerIdFromKey").expect("in the schema");
        let resp = self.call(creds, op, &Value::Null).await?;
        let Some(r) = resp.records.first() else {
            return Ok(None);
        };
        if r.bool("IsAuthorized").ok().flatten() == Some(false) {
            return Err(KareoError::Security {
                op: op.name,
                flags: crate::error::SecurityFlags {
                    not_authorized: true,
                    ..Default::default()
                },
                text: String::new(),
            });
        }
        Ok(r.i64("CustomerId").ok().flatten())
    }

    /// One call of `op`, not retried and not parsed: the request envelope as sent and the
    /// HTTP status and body as received (`kareo-dock kareo capture`, for a Tebra support
    /// case). The throttle is honoured. Both hold credentials and record values: redact them
    /// before they leave the machine.
    pub async fn exchange(
        &self,
        creds: &Credentials,
        op: &str,
        body: &Value,
    ) -> Result<(String, u16, Bytes), KareoError> {
        let op = envelope::operation(op)?;
        let xml = envelope::write(op, creds, &self.cfg.client_version, body)?;
        self.take_slot(creds, op).await;
        let resp = self
            .http
            .post(&self.cfg.endpoint)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", envelope::soap_action(op.name))
            .body(xml.clone())
            .send()
            .await
            .map_err(|e| request_error(op.name, &e, self.cfg.timeout))?;
        let status = resp.status().as_u16();
        // A capture is read whole: no further than this.
        const MAX: usize = 64 << 20;
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| request_error(op.name, &e, self.cfg.timeout))?
        {
            if body.len() + chunk.len() > MAX {
                return Err(KareoError::Xml {
                    op: op.name,
                    position: body.len() as u64,
                    reason: format!("the response is larger than {MAX} bytes: not captured"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((xml, status, Bytes::from(body)))
    }

    async fn attempt(
        &self,
        creds: &Credentials,
        op: &'static OpDef,
        xml: Bytes,
    ) -> Result<RecordStream, KareoError> {
        self.take_slot(creds, op).await;
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.cfg.endpoint)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", envelope::soap_action(op.name))
            .body(xml)
            .send()
            .await
            .map_err(|e| request_error(op.name, &e, self.cfg.timeout))?;
        let status = resp.status().as_u16();
        if status == 429 {
            let interval = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or_else(|| self.throttle.interval(&creds.customer_key, op));
            return Err(KareoError::Throttled {
                op: op.name,
                interval,
            });
        }
        let body: BoxStream<'static, io::Result<Bytes>> = resp
            .bytes_stream()
            .map_err(move |e| {
                let kind = if e.is_timeout() {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::ConnectionAborted
                };
                io::Error::new(kind, "response body failed")
            })
            .boxed();
        let mut reader = ResponseReader::new(op, StreamReader::new(body));
        // Read up to the first record: ErrorResponse, SecurityResponse and faults come first.
        let first = reader.next_record_async().await;
        let outcome = match (&first, status) {
            (Ok(_), 200) => "ok",
            (Err(e), _) => e.class(),
            (Ok(_), _) => "http",
        };
        tracing::debug!(
            op = op.name,
            status,
            outcome,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "kareo call"
        );
        match first {
            Ok(first) if status == 200 => Ok(RecordStream {
                done: first.is_none(),
                peeked: first,
                reader,
            }),
            Err(e @ (KareoError::Fault { .. } | KareoError::Throttled { .. })) => Err(e),
            Err(e) if status == 200 => Err(e),
            _ => Err(KareoError::Http {
                op: op.name,
                status,
            }),
        }
    }
}

/// See [`KareoClient::shared_live`].
enum SharedLive {
    /// Loaded from the shared store.
    Loaded,
    /// Another process holds the claim to read them.
    Claimed,
    /// This process reads GetThrottles.
    Read,
}

/// The operation a GetThrottles `Endpoint` names, matched loosely: Kareo documents neither the
/// form nor the case (`GetPatients`, `KareoServices.GetPatients`, `getpatients`, `Get
/// Patients`, `…/GetPatients`). `None` for a name the schema does not have.
pub fn operation_named(endpoint: &str) -> Option<&'static str> {
    let last = endpoint.trim().rsplit(['.', '/', ':']).next().unwrap_or("");
    let key: String = last
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    schema::op_names().find(|o| o.to_ascii_lowercase() == key)
}

/// The host (and port) of an endpoint URL, for logs: never a path or a query.
fn endpoint_host(endpoint: &str) -> String {
    reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                format!(
                    "{h}{}",
                    u.port().map(|p| format!(":{p}")).unwrap_or_default()
                )
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn request_error(op: &'static str, e: &reqwest::Error, after: Duration) -> KareoError {
    if e.is_connect() {
        return KareoError::Transport {
            op,
            kind: TransportKind::Connect,
            sent: false,
        };
    }
    if e.is_timeout() {
        return KareoError::Timeout {
            op,
            after,
            sent: true,
        };
    }
    KareoError::Transport {
        op,
        kind: TransportKind::Broken,
        sent: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_endpoints_are_matched_loosely() {
        for e in [
            "GetPatients",
            "KareoServices.GetPatients",
            " getpatients ",
            "Get Patients",
            "/services/soap/2.1/GetPatients",
        ] {
            assert_eq!(operation_named(e), Some("GetPatients"), "{e}");
        }
        assert_eq!(operation_named("GetNothing"), None);
    }
}
