//! The HTTP clients' transport rules: https only (plain http to a loopback host, where the
//! simulators run), and no redirect followed — a 307 would re-post Kareo's SOAP body
//! (customer key, user, password), Dock's OAuth form (client secret) or its `x-api-key` to
//! whatever host the redirect names.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback server that counts connections and answers each with `reply`.
async fn server(reply: String) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (url, hits)
}

/// A redirecting endpoint and the host it redirects to.
async fn redirect_pair() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (target, target_hits) =
        server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into()).await;
    let (endpoint, endpoint_hits) = server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}/stolen\r\ncontent-length: 0\r\n\r\n"
    ))
    .await;
    (endpoint, endpoint_hits, target_hits)
}

#[tokio::test]
async fn a_307_from_kareo_s_endpoint_is_not_followed() {
    let (endpoint, endpoint_hits, target_hits) = redirect_pair().await;
    let client = kareo::KareoClient::new(kareo::ClientConfig {
        endpoint: format!("{endpoint}/KareoServices/KareoServices.svc"),
        ..kareo::ClientConfig::default()
    })
    .unwrap();
    let creds = kareo::Credentials {
        customer_key: "ck-secret".into(),
        user: "u@example.org".into(),
        password: "pw-secret".into(),
    };
    let r = client.customer_id(&creds).await;
    assert!(r.is_err(), "a redirect is an error, not a result");
    assert!(endpoint_hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "nothing re-posted");
}

#[tokio::test]
async fn a_307_from_dock_is_not_followed() {
    let (endpoint, endpoint_hits, target_hits) = redirect_pair().await;
    let client = dock::DockClient::new(dock::DockConfig {
        api_url: endpoint.clone(),
        auth_url: endpoint,
        retry: dock::RetryPolicy::none(),
        ..dock::DockConfig::default()
    })
    .unwrap();
    let secret: dock::DockSecret = serde_json::from_value(serde_json::json!({
        "client_id": "cid", "client_secret": "cs-secret", "api_key": "key-secret",
        "organization_id": "11111111-1111-4111-8111-111111111111", "user_id": "u"
    }))
    .unwrap();
    assert!(client.list_task_lists(&secret).await.is_err());
    assert!(endpoint_hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "nothing re-sent");
}

#[test]
fn plain_http_is_refused_except_to_a_loopback_host() {
    for bad in [
        "http://webservice.kareo.com/services/soap/2.1/KareoServices.svc",
        "http://10.0.0.8/svc",
        "ftp://127.0.0.1/",
        "not a url",
    ] {
        let r = kareo::KareoClient::new(kareo::ClientConfig {
            endpoint: bad.into(),
            ..kareo::ClientConfig::default()
        });
        assert!(r.is_err(), "{bad}");
        let r = dock::DockClient::new(dock::DockConfig {
            api_url: bad.into(),
            ..dock::DockConfig::default()
        });
        assert!(r.is_err(), "{bad}");
    }
    for good in [
        "https://webservice.kareo.com/services/soap/2.1/KareoServices.svc",
        "http://127.0.0.1:8080/svc",
        "http://localhost:8080/",
        "http://[::1]:8080/",
    ] {
        assert!(kareo::secure_endpoint(good), "{good}");
        assert!(
            dock::DockClient::new(dock::DockConfig {
                api_url: good.into(),
                ..dock::DockConfig::default()
            })
            .is_ok(),
            "{good}"
        );
    }
}
