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
