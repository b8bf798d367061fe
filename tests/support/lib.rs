//! Helpers shared by the end-to-end tests.

use std::time::Duration;

use kareo::throttle::RetryPolicy;
use kareo::{ClientConfig, Credentials, KareoClient};
use kareo_sim::{KareoSim, SimConfig};

/// The credentials a simulator accepts.
pub fn creds(sim: &KareoSim) -> Credentials {
    let c = sim.config();
    Credentials {
        customer_key: c.customer_key.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
    }
}

/// A client for a simulator: quick retries, a small throttle margin.
pub fn client(sim: &KareoSim) -> KareoClient {
    client_with(sim, |_| {})
}

/// A client for a simulator, with settings changed by `f`.
pub fn client_with(sim: &KareoSim, f: impl FnOnce(&mut ClientConfig)) -> KareoClient {
    let mut cfg = ClientConfig {
        endpoint: sim.url(),
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_total: Duration::from_secs(5),
        },
        throttle_margin: Duration::from_millis(60),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    f(&mut cfg);
    KareoClient::new(cfg).expect("client")
}

/// A simulator that does not enforce the throttle (tests of other behaviour stay fast).
pub async fn sim() -> KareoSim {
    KareoSim::start(SimConfig {
        enforce_throttle: false,
        ..SimConfig::default()
    })
    .await
}
pub mod pipeline;

/// A name no other test of this run uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Whether a test that needs moto runs (`what` names it in the messages): yes with a loopback
/// `AWS_ENDPOINT_URL`; a loud skip with `KAREO_DOCK_SKIP_MOTO=1`; else a loud failure. It
/// creates tables and secrets, so never against anything but an emulator on this machine.
pub fn moto(what: &str) -> bool {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if url.starts_with("http://127.") || url.starts_with("http://localhost") => true,
        Ok(url) if !url.is_empty() => panic!(
            "AWS_ENDPOINT_URL={url} is not a loopback emulator: {what} creates tables and \
             secrets and only runs against moto on this machine"
        ),
        _ if std::env::var("KAREO_DOCK_SKIP_MOTO").as_deref() == Ok("1") => {
            eprintln!("\n!!! SKIPPED: KAREO_DOCK_SKIP_MOTO=1 — {what} did NOT run.\n");
            false
        }
        _ => panic!(
            "\n!!! AWS_ENDPOINT_URL is not set: {what} did NOT run.\n\
             !!! Run scripts/test (it starts moto server).\n"
        ),
    }
}
