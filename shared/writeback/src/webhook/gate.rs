//! The webhook endpoint's gate: what a request must pass before it costs anything.
//!
//! The Function URL has no AWS auth (Dock cannot sign requests the AWS way), so the gate is:
//! 1. the body is at most [`MAX_BODY`] bytes;
//! 2. the path is `/<tenant>/<token>`, and the SHA-256 of the token equals the one stored for
//!    that tenant (compared in constant time) — checked against a [`Directory`] the function
//!    holds in memory, so a request that fails it reads no secret, queries nothing and
//!    computes no HMAC. Every failure answers the same 404;
//! 3. only then: Dock's HMAC over the raw body (the tenant's webhook secret), the signed
//!    `createdAt`, the organisation, and the dedupe (see [`super`]).
//!
//! Dock's verification challenge (`GET ?message=M`, answered with HMAC(secret, M)) would sign
//! anything for anyone: it is answered only while the tenant's registration is *armed* (a
//! short window opened by `kareo-dock webhook register` or `webhook url`), and never for a
//! message that could be a delivery body ([`challenge_allowed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use domain::ports::{HookRegistration, HookStore, StoreError, TenantStore};
use domain::tenant::TenantConfig;

/// Deliveries larger than this are refused before anything else (Dock's events are a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Random bytes in a URL token (43 characters of base64url).
pub const TOKEN_BYTES: usize = 32;
/// How long a function keeps the tenant configs and registrations it read. A new or rotated
/// token is seen by every running function after at most this long.
pub const DIRECTORY_TTL: Duration = Duration::from_secs(15);
/// How long a registration stays armed for Dock's verification challenge.
pub const ARMED_FOR: Duration = Duration::from_secs(600);
/// The longest challenge message answered (Dock sends a short random string).
pub const MAX_CHALLENGE: usize = 256;

const TOKEN_CHARS: usize = 43;

/// A URL token: 32 random bytes, base64url. Only its SHA-256 is stored; `Debug` is redacted.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A new random token (the operating system's generator, through `rand`).
    pub fn generate() -> Token {
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        Token(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token's text, as it goes into the URL.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Lowercase hex SHA-256: what is stored.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// A registration for this token, armed until `armed_until`.
    pub fn registration(
        &self,
        now: DateTime<Utc>,
        armed_until: Option<DateTime<Utc>>,
        webhook_id: Option<String>,
    ) -> HookRegistration {
        HookRegistration {
            token_sha256: self.sha256_hex(),
            armed_until,
            webhook_id,
            at: now,
        }
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The URL to register in Dock for a tenant: `<base>/<tenant>/<token>`.
pub fn webhook_url(base: &str, tenant: &str, token: &Token) -> String {
    format!("{}/{tenant}/{}", base.trim_end_matches('/'), token.expose())
}

/// May `message` be signed as Dock's verification challenge? Never a text that could be a
/// delivery body — a JSON object, or anything holding `{` or `[` — nor an empty or long one,
/// nor one with control characters. (A delivery is accepted only when its body is a JSON
/// object, so a signature over any other text is worthless as a delivery signature.)
pub fn challenge_allowed(message: &str) -> bool {
    !message.is_empty()
        && message.len() <= MAX_CHALLENGE
        && !message
            .chars()
            .any(|c| c.is_control() || c == '{' || c == '[')
}

/// Is the registration armed at `now`?
pub fn armed(hook: &HookRegistration, now: DateTime<Utc>) -> bool {
    hook.armed_until.is_some_and(|u| u > now)
}

/// What the function knows of every tenant: configs and registrations, read together and kept
/// for [`DIRECTORY_TTL`].
#[derive(Default)]
pub struct Directory {
    tenants: BTreeMap<String, TenantConfig>,
    hooks: BTreeMap<String, HookRegistration>,
}

impl Directory {
    /// From configs and registrations.
    pub fn new(tenants: Vec<TenantConfig>, hooks: Vec<(String, HookRegistration)>) -> Directory {
        Directory {
            tenants: tenants.into_iter().map(|t| (t.tenant.clone(), t)).collect(),
            hooks: hooks.into_iter().collect(),
        }
    }

    /// Reads both from the store (two queries).
    pub async fn load<S: TenantStore + HookStore>(store: &S) -> Result<Directory, StoreError> {
        let tenants = store.tenants().await?;
        let hooks = store.hooks().await?;
        Ok(Directory::new(tenants, hooks))
    }

    /// The tenant whose webhook URL `path` is (`/<tenant>/<token>`, a trailing `/` allowed),
    /// or `None` — for a malformed path, an unknown tenant, a tenant without webhooks or
    /// without a registration, and a wrong token alike. The token's hash is compared in
    /// constant time, and computed whatever the tenant.
    pub fn admit(&self, path: &str) -> Option<&TenantConfig> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let (tenant, token) = path.split_once('/').unwrap_or((path, ""));
        let shaped = token.len() == TOKEN_CHARS
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let expected = self
            .hooks
            .get(tenant)
            .and_then(|h| unhex32(&h.token_sha256));
        let matches: bool = digest.ct_eq(&expected.unwrap_or([0u8; 32])).into();
        let config = self.tenants.get(tenant).filter(|t| t.hooks.enabled);
        (shaped && expected.is_some() && matches)
            .then_some(config)
            .flatten()
    }

    /// The tenants with webhooks enabled and a registration: those whose events the
    /// catch-up reads back.
    pub fn registered(&self) -> impl Iterator<Item = &TenantConfig> {
        self.tenants
            .values()
            .filter(|t| t.hooks.enabled && self.hooks.contains_key(&t.tenant))
    }

    /// Number of tenants known.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// No tenant known.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// After a failed first read, how long requests are answered "unavailable" without reading
/// again (so an outage at a cold start does not turn every request into a query).
pub const RETRY_FLOOR: Duration = Duration::from_secs(2);

/// A [`Directory`] kept across warm invocations and read again when older than its TTL.
/// However many requests arrive, the store is queried at most once per TTL per function
/// instance: a failed refresh keeps serving the old directory for another TTL, and a failed
/// first read is not tried again for [`RETRY_FLOOR`].
pub struct DirectoryCache {
    ttl: Duration,
    held: Mutex<Option<(Instant, Arc<Directory>)>>,
    failed: Mutex<Option<Instant>>,
}

impl DirectoryCache {
    /// An empty cache with this TTL.
    pub fn new(ttl: Duration) -> DirectoryCache {
        DirectoryCache {
            ttl,
            held: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// The directory: the held one while fresh, else read again (on failure, the stale one
    /// when there is one).
    pub async fn get<S: TenantStore + HookStore>(
        &self,
        store: &S,
    ) -> Result<Arc<Directory>, StoreError> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, d)) = &held {
            if at.elapsed() < self.ttl {
                return Ok(d.clone());
            }
        }
        let failed = *self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() && failed.is_some_and(|f| f.elapsed() < RETRY_FLOOR) {
            return Err(StoreError::Unavailable(
                "tenant directory: the last read failed moments ago".into(),
            ));
        }
        match Directory::load(store).await {
            Ok(d) => {
                let d = Arc::new(d);
                *self.held.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), d.clone()));
                Ok(d)
            }
            Err(e) => match held {
                Some((_, d)) => {
                    // Keep serving the old directory; try again after another TTL.
                    *self.held.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((Instant::now(), d.clone()));
                    tracing::warn!(class = e.class().name(), "tenant directory refresh failed");
                    Ok(d)
                }
                None => {
                    *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    Err(e)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, hooks: bool) -> TenantConfig {
        let section = if hooks {
            "webhooks:\n  rules: []\n"
        } else {
            ""
        };
        let yaml = format!(
            "tenant: {id}\ntimezone: America/New_York\nstart: 2026-09-01T00:00:00Z\nkareo:\n  secret: k\n  practice: P\ndock:\n  secret: d\nfamilies:\n  patients: {{}}\n{section}"
        );
        TenantConfig::from_yaml(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn only_the_right_token_for_the_right_tenant_is_admitted() {
        let now = Utc::now();
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.expose().len(), TOKEN_CHARS);
        assert_ne!(a.expose(), b.expose());
        let d = Directory::new(
            vec![
                tenant("acme", true),
                tenant("zeta", true),
                tenant("quiet", false),
            ],
            vec![
                ("acme".into(), a.registration(now, None, None)),
                ("zeta".into(), b.registration(now, None, None)),
                ("quiet".into(), b.registration(now, None, None)),
            ],
        );
        let ok = |p: &str| d.admit(p).map(|t| t.tenant.clone());
        assert_eq!(ok(&format!("/acme/{}", a.expose())), Some("acme".into()));
        assert_eq!(ok(&format!("/acme/{}/", a.expose())), Some("acme".into()));
        assert_eq!(ok(&format!("/zeta/{}", b.expose())), Some("zeta".into()));
        for bad in [
            "/acme".to_string(),
            "/acme/".to_string(),
            "/".to_string(),
            String::new(),
            format!("/acme/{}", b.expose()),
            format!("/zeta/{}", a.expose()),
            format!("/nobody/{}", a.expose()),
            format!("/quiet/{}", b.expose()),
            format!("/acme/{}x", a.expose()),
            format!("/acme/{}", &a.expose()[1..]),
            format!("/acme/{}/extra", a.expose()),
            format!("/x/acme/{}", a.expose()),
        ] {
            assert_eq!(ok(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_challenge_never_signs_what_could_be_a_body() {
        for yes in ["a1b2c3", "3f9a-77b1", "The quick brown fox", "x", "12345"] {
            assert!(challenge_allowed(yes), "{yes}");
        }
        let long = "a".repeat(MAX_CHALLENGE + 1);
        for no in [
            "",
            "{\"eventIdentifier\":\"e1\"}",
            " {\"a\":1}",
            "[1]",
            "a{b",
            "line\nbreak",
            long.as_str(),
        ] {
            assert!(!challenge_allowed(no), "{no:?}");
        }
    }

    /// A store that fails every read, counting them.
    #[derive(Default)]
    struct Down(std::sync::atomic::AtomicUsize);
    impl TenantStore for Down {
        async fn tenants(&self) -> Result<Vec<TenantConfig>, StoreError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::Unavailable("down".into()))
        }
        async fn put(&self, _: &TenantConfig) -> Result<(), StoreError> {
            unreachable!()
        }
    }
    impl HookStore for Down {
        async fn hooks(&self) -> Result<Vec<(String, HookRegistration)>, StoreError> {
            unreachable!("tenants fail first")
        }
        async fn hook(&self, _: &str) -> Result<Option<HookRegistration>, StoreError> {
            unreachable!()
        }
        async fn put_hook(&self, _: &str, _: &HookRegistration) -> Result<(), StoreError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn an_outage_at_a_cold_start_does_not_make_every_request_a_query() {
        let down = Down::default();
        let cache = DirectoryCache::new(DIRECTORY_TTL);
        for _ in 0..100 {
            assert!(cache.get(&down).await.is_err());
        }
        assert_eq!(down.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_registration_is_armed_only_until_its_instant() {
        let now = Utc::now();
        let t = Token::generate();
        assert!(!armed(&t.registration(now, None, None), now));
        let r = t.registration(now, Some(now + chrono::Duration::seconds(5)), None);
        assert!(armed(&r, now));
        assert!(!armed(&r, now + chrono::Duration::seconds(5)));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(!format!("{r:?}").contains(&r.token_sha256));
    }
}
