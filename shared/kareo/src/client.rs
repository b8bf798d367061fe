//! The Kareo HTTP client: envelope → throttle → POST → streaming reader, with retries.
//!
//! One [`KareoClient`] serves every account of a process (credentials are passed per call);
//! build it once and share it. Reads are retried on throttles and transient failures with
//! jittered backoff; a write is retried only when Kareo certainly did not apply it (a throttle
//! answer, a refused connection) — an ambiguous write error is returned to the caller, who
//! must reconcile.
//!
//! Responses are streamed: [`KareoClient::stream`] hands back a [`RecordStream`] that parses
//! the HTTP body as it arrives, so memory stays flat whatever the response size. The parse
//! runs on a blocking thread ([`tokio::task::spawn_blocking`]) with the synchronous reader,
//! fed the body's chunks through a small bounded channel: an event-by-event async parse costs
//! about half again the instructions, and a 100 MB body parsed on the runtime thread would
//! stall every other task of the process (leases, other tenants' calls) for its whole parse.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

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

/// What the parser thread sends: batches of records, then exactly one `End` or error. A stream
/// that stops without either (the thread died) is an error, never a complete answer.
enum Parsed {
    Records(Vec<Record>),
    End,
}

type Sent = Result<Parsed, KareoError>;

/// Response chunks as the pump task received them, read synchronously by the parser thread,
/// and the parser's records on their way back. Both directions move in batches: a wake-up of
/// the other side per chunk or per record costs more than parsing a short record. Records are
/// held back only while more body is at hand: before the reader waits for the network, the
/// records it has go out.
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    chunks: std::collections::VecDeque<Bytes>,
    out: mpsc::Sender<Sent>,
    records: Vec<Record>,
    /// The caller is gone: stop parsing.
    closed: bool,
}

/// Records per batch at most (a batch goes out earlier when the body runs dry).
const RECORD_BATCH: usize = 32;

impl ChunkReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<Bytes>>>, out: mpsc::Sender<Sent>) -> ChunkReader {
        ChunkReader {
            rx,
            chunks: std::collections::VecDeque::new(),
            out,
            records: Vec::with_capacity(RECORD_BATCH),
            closed: false,
        }
    }

    /// Queues a record; sends the batch when it is full.
    fn push(&mut self, r: Record) {
        self.records.push(r);
        if self.records.len() >= RECORD_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.records.is_empty() || self.closed {
            return;
        }
        let batch = std::mem::replace(&mut self.records, Vec::with_capacity(RECORD_BATCH));
        self.closed = self.out.blocking_send(Ok(Parsed::Records(batch))).is_err();
    }

    /// The last message: what is queued, then `End` or the error.
    fn finish(mut self, last: Sent) {
        self.flush();
        if !self.closed {
            let _ = self.out.blocking_send(last);
        }
    }
}

impl io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let have = io::BufRead::fill_buf(self)?;
            let n = have.len().min(out.len());
            out[..n].copy_from_slice(&have[..n]);
            n
        };
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.chunks.front().is_none_or(|c| c.is_empty()) {
            self.chunks.pop_front();
            if !self.chunks.is_empty() {
                continue;
            }
            let got = match self.rx.try_recv() {
                Ok(got) => Some(got),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // About to wait for the network: what is parsed goes out first.
                    self.flush();
                    if self.closed {
                        return Err(io::Error::new(io::ErrorKind::BrokenPipe, "caller gone"));
                    }
                    self.rx.blocking_recv()
                }
            };
            match got {
                Some(Ok(batch)) => self.chunks.extend(batch),
                Some(Err(e)) => return Err(e),
                // The pump ended: the body is complete (a body error arrives as `Err` first).
                None => return Ok(&[]),
            }
        }
        Ok(self.chunks.front().map(|c| &c[..]).unwrap_or(&[]))
    }

    fn consume(&mut self, n: usize) {
        if let Some(c) = self.chunks.front_mut() {
            bytes::Buf::advance(c, n);
        }
    }
}

/// Chunk batches in flight between the pump and the parser, and record batches between the
/// parser and the caller: bounded, so memory stays flat when either side is slower.
const CHUNKS_IN_FLIGHT: usize = 4;
const BATCHES_IN_FLIGHT: usize = 4;
/// Bytes the pump gathers, of chunks already received, into one batch at most.
const CHUNK_BATCH_BYTES: usize = 256 << 10;

/// Starts the body pump (a task on the runtime) and the parser (a blocking thread) for one
/// response. Dropping the returned receiver stops both: the parser's next send fails, it
/// returns, and the pump's next send fails in turn.
fn spawn_parse(
    op: &'static OpDef,
    resp: reqwest::Response,
) -> (
    mpsc::Receiver<Sent>,
    tokio::sync::oneshot::Receiver<Option<i64>>,
) {
    use futures_util::FutureExt;
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Vec<Bytes>>>(CHUNKS_IN_FLIGHT);
    let (rec_tx, rec_rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let (key_tx, key_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let body_error = |e: reqwest::Error| {
            let kind = if e.is_timeout() {
                io::ErrorKind::TimedOut
            } else {
                io::ErrorKind::ConnectionAborted
            };
            io::Error::new(kind, "response body failed")
        };
        let mut body = resp.bytes_stream();
        while let Some(first) = body.next().await {
            // This chunk and those already received, up to a batch (no copy: the same Bytes).
            let mut batch = Vec::new();
            let mut size = 0;
            let mut next = Some(first);
            let mut failed = None;
            while let Some(chunk) = next.take() {
                match chunk {
                    Ok(c) => {
                        size += c.len();
                        batch.push(c);
                    }
                    Err(e) => {
                        failed = Some(body_error(e));
                        break;
                    }
                }
                if size < CHUNK_BATCH_BYTES {
                    next = body.next().now_or_never().flatten();
                }
            }
            if !batch.is_empty() && chunk_tx.send(Ok(batch)).await.is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = chunk_tx.send(Err(e)).await;
                return;
            }
        }
    });
    tokio::task::spawn_blocking(move || parse_body(op, chunk_rx, rec_tx, key_tx));
    (rec_rx, key_rx)
}

/// The parser thread: reads the chunks with the synchronous reader, sends the paging key once
/// (known before the first record), the records in batches, then `End` or the error; stops
/// early when the caller is gone.
fn parse_body(
    op: &'static OpDef,
    chunks: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    out: mpsc::Sender<Sent>,
    key: tokio::sync::oneshot::Sender<Option<i64>>,
) {
    let mut reader = ResponseReader::new(op, ChunkReader::new(chunks, out));
    let mut key = Some(key);
    let last = loop {
        let next = reader.next_record();
        if let Some(tx) = key.take() {
            let _ = tx.send(reader.next_start_key());
        }
        match next {
            Ok(Some(r)) => {
                let source = reader.source_mut();
                source.push(r);
                if source.closed {
                    return;
                }
            }
            Ok(None) => break Ok(Parsed::End),
            Err(e) => break Err(e),
        }
    };
    reader.into_source().finish(last);
}

/// The records of one response, parsed as the body arrives.
pub struct RecordStream {
    op: &'static str,
    rx: Parser,
    next_start_key: Option<i64>,
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
        let r = self.rx.recv(self.op).await?;
        self.done = r.is_none();
        Ok(r)
    }

    /// GetAllPatients: the key of the next page (known before the first record).
    pub fn next_start_key(&self) -> Option<i64> {
        self.next_start_key
    }
}

/// The caller's end of the parser thread: its batches, one record at a time.
struct Parser {
    rx: mpsc::Receiver<Sent>,
    batch: std::vec::IntoIter<Record>,
}

impl Parser {
    fn new(rx: mpsc::Receiver<Sent>) -> Parser {
        Parser {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    /// The next record; the parser gone without saying `End` is a body failure.
    async fn recv(&mut self, op: &'static str) -> Result<Option<Record>, KareoError> {
        loop {
            if let Some(r) = self.batch.next() {
                return Ok(Some(r));
            }
            match self.rx.recv().await {
                Some(Ok(Parsed::Records(b))) => self.batch = b.into_iter(),
                Some(Ok(Parsed::End)) => return Ok(None),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(KareoError::Transport {
                        op,
                        kind: TransportKind::Body,
                        sent: true,
                    })
                }
            }
        }
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
        let (rx, key) = spawn_parse(op, resp);
        let mut rx = Parser::new(rx);
        // Read up to the first record: ErrorResponse, SecurityResponse and faults come first.
        let first = rx.recv(op.name).await;
        let next_start_key = key.await.ok().flatten();
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
                op: op.name,
                done: first.is_none(),
                peeked: first,
                rx,
                next_start_key,
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

    const PAYMENTS: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetPaymentsResponse xmlns="http://www.kareo.com/api/schemas/"><GetPaymentsResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><ErrorResponse><IsError>false</IsError></ErrorResponse><SecurityResponse><Authenticated>true</Authenticated><Authorized>true</Authorized><SecurityResultSuccess>true</SecurityResultSuccess></SecurityResponse><Payments><PaymentData><ID>5</ID><ReferenceNumber>CHK-1</ReferenceNumber></PaymentData><PaymentData><ID>6</ID><ReferenceNumber>CHK-&amp;2</ReferenceNumber></PaymentData></Payments></GetPaymentsResult></GetPaymentsResponse></s:Body></s:Envelope>"#;

    /// The parser thread's reader over chunks as the pump sends them.
    fn chunked(chunks: Vec<io::Result<Bytes>>) -> ResponseReader<ChunkReader> {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        // Chunks one by one, then two to a batch: both arrive as one body.
        let mut pending = Vec::new();
        for (i, c) in chunks.into_iter().enumerate() {
            match c {
                Ok(c) if i % 3 == 0 => tx.blocking_send(Ok(vec![c])).unwrap(),
                Ok(c) => {
                    pending.push(c);
                    if pending.len() == 2 {
                        tx.blocking_send(Ok(std::mem::take(&mut pending))).unwrap();
                    }
                }
                Err(e) => {
                    if !pending.is_empty() {
                        tx.blocking_send(Ok(std::mem::take(&mut pending))).unwrap();
                    }
                    tx.blocking_send(Err(e)).unwrap();
                }
            }
        }
        if !pending.is_empty() {
            tx.blocking_send(Ok(pending)).unwrap();
        }
        drop(tx);
        let (out, _) = mpsc::channel(1);
        ResponseReader::new(
            schema::op("GetPayments").unwrap(),
            ChunkReader::new(rx, out),
        )
    }

    #[test]
    fn chunks_of_any_size_read_as_the_whole_body() {
        let whole = ResponseReader::new(schema::op("GetPayments").unwrap(), PAYMENTS.as_bytes())
            .collect_all()
            .unwrap();
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].get("ReferenceNumber"), Some("CHK-&2"));
        for size in [1, 7, 64, PAYMENTS.len()] {
            let chunks = PAYMENTS
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let got = chunked(chunks).collect_all().unwrap();
            let ids: Vec<_> = got.iter().map(|r| r.id().map(str::to_string)).collect();
            assert_eq!(
                ids,
                [Some("5".to_string()), Some("6".to_string())],
                "{size}"
            );
            assert_eq!(got[1].get("ReferenceNumber"), Some("CHK-&2"), "{size}");
        }
    }

    #[test]
    fn a_body_that_fails_or_stops_is_an_error_never_the_end() {
        let half = Bytes::from_static(&PAYMENTS.as_bytes()[..PAYMENTS.len() / 2]);
        let timed_out = chunked(vec![
            Ok(half.clone()),
            Err(io::Error::new(io::ErrorKind::TimedOut, "t")),
        ])
        .collect_all();
        assert!(matches!(timed_out, Err(KareoError::Timeout { .. })));
        let aborted = chunked(vec![
            Ok(half.clone()),
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "a")),
        ])
        .collect_all();
        assert!(matches!(
            aborted,
            Err(KareoError::Transport {
                kind: TransportKind::Body,
                ..
            })
        ));
        // The pump ended (the connection closed) in the middle of the document.
        assert!(matches!(
            chunked(vec![Ok(half)]).collect_all(),
            Err(KareoError::Xml { .. })
        ));
    }

    #[tokio::test]
    async fn a_parser_gone_without_its_end_is_a_body_failure() {
        let (tx, rx) = mpsc::channel::<Sent>(2);
        let rec = || Record::new(schema::op("GetPayments").unwrap().response);
        tx.send(Ok(Parsed::Records(vec![rec(), rec()])))
            .await
            .unwrap();
        drop(tx);
        let mut rx = Parser::new(rx);
        assert!(rx.recv("GetPayments").await.unwrap().is_some());
        assert!(rx.recv("GetPayments").await.unwrap().is_some());
        assert!(matches!(
            rx.recv("GetPayments").await,
            Err(KareoError::Transport {
                kind: TransportKind::Body,
                ..
            })
        ));
    }

    #[test]
    fn parsed_records_go_out_before_the_reader_waits_for_more_body() {
        // The body up to just after the first record, then nothing until the caller has it.
        let cut = PAYMENTS.find("</PaymentData>").unwrap() + "</PaymentData>".len();
        let (tx, rx) = mpsc::channel(4);
        let (out, mut records) = mpsc::channel(4);
        tx.blocking_send(Ok(vec![Bytes::from_static(&PAYMENTS.as_bytes()[..cut])]))
            .unwrap();
        let parser = std::thread::spawn(move || {
            let mut reader = ResponseReader::new(
                schema::op("GetPayments").unwrap(),
                ChunkReader::new(rx, out),
            );
            let last = loop {
                match reader.next_record() {
                    Ok(Some(r)) => reader.source_mut().push(r),
                    Ok(None) => break Ok(Parsed::End),
                    Err(e) => break Err(e),
                }
            };
            reader.into_source().finish(last);
        });
        match records.blocking_recv() {
            Some(Ok(Parsed::Records(b))) => {
                assert_eq!(b.len(), 1);
                assert_eq!(b[0].id(), Some("5"));
            }
            _ => panic!("the first record, before the rest of the body"),
        }
        tx.blocking_send(Ok(vec![Bytes::from_static(&PAYMENTS.as_bytes()[cut..])]))
            .unwrap();
        drop(tx);
        assert!(matches!(records.blocking_recv(), Some(Ok(Parsed::Records(b))) if b.len() == 1));
        assert!(matches!(records.blocking_recv(), Some(Ok(Parsed::End))));
        parser.join().unwrap();
    }
}
