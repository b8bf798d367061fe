//! The process's one TLS client configuration, shared by every HTTP client of kareo-dock.
//!
//! One crypto provider in every binary: aws-lc-rs, the one the AWS SDK links anyway (reqwest is
//! built without a provider of its own, so ring is never linked). Two trust sets, each compiled
//! in, so that no certificate file is read at start (reading the system's 292 files took half
//! of a function's start, `BENCHMARKS.md`):
//!
//! - [`client_builder`] — for Kareo, Dock and the practice's webhooks: Mozilla's root program
//!   (`webpki-roots`), built into one `rustls` configuration the first time it is asked for
//!   and cloned (a handful of reference counts) into every client after that.
//! - [`AMAZON_ROOTS_PEM`] — for the AWS SDK: the five roots Amazon Trust Services issues every
//!   AWS endpoint's certificate under (Amazon Root CA 1–4 and Starfield Services Root G2, as
//!   AWS documents them), and nothing else: the SDK talks only to AWS, so it trusts only AWS's
//!   issuers.
//!
//! Nothing here reads the environment or the file system.

use std::sync::{Arc, LazyLock};

/// Amazon Trust Services' roots, PEM (from Debian's `ca-certificates`, which carries Mozilla's
/// program): what an AWS SDK client needs to verify any AWS endpoint.
pub const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("../roots/amazon-trust-services.pem");

static CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest takes a preconfigured configuration as it is: offer HTTP/2 where the server
    // speaks it (Dock), HTTP/1.1 otherwise (Kareo's SOAP endpoint).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
});

/// The crypto provider every TLS connection of the process uses.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The shared TLS configuration (Mozilla's roots, aws-lc-rs), built on first use.
pub fn client_config() -> rustls::ClientConfig {
    CONFIG.clone()
}

/// A `reqwest` client builder on the shared TLS configuration: every HTTP client of the product
/// starts here (a `reqwest::Client::new()` would panic, reqwest having no provider of its own).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(client_config())
}

/// A client with no settings beyond the shared TLS configuration (tests, simulators).
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a client on the shared TLS configuration builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mozilla_roots_are_loaded_once_and_shared() {
        let a = client_config();
        let b = client_config();
        // One verifier (and so one root store) behind every clone.
        assert!(Arc::ptr_eq(
            &a.crypto_provider().clone(),
            &b.crypto_provider().clone()
        ));
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
    }

    #[test]
    fn the_amazon_roots_are_the_five_aws_documents() {
        let pem = std::str::from_utf8(AMAZON_ROOTS_PEM).unwrap();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 5);
    }

    #[tokio::test]
    async fn a_client_builds_and_speaks_plain_http_to_a_loopback_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await
                .unwrap();
        });
        let body = client()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        server.await.unwrap();
    }
}
