//! Three nodes over mutual TLS on 127.0.0.1, with certificates made at test time.
#![cfg(feature = "tls")]

use std::net::SocketAddr;

use crate::support::pki::{Ca, serve_tls};
use crate::support::{self, Loads, key_owned_by, value_of};
use tokio::net::TcpListener;
use tower_groupcache::{Groupcache, PeerTls};

#[tokio::test]
async fn three_nodes_share_keys_over_mutual_tls() {
    let ca = Ca::new();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    let loads = Loads::default();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let (cert, key) = ca.node();
        let tls = PeerTls::from_pem(ca.pem.as_bytes())
            .unwrap()
            .client_certificate(cert.as_bytes(), key.as_bytes())
            .unwrap();
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers(urls.clone())
            .peer_secret("a secret for the TLS test, 32+ bytes")
            .peer_tls(tls)
            .source("users", loads.source(url))
            .build()
            .unwrap();
        servers.push(serve_tls(listener, support::app(&cache), &ca, &(cert, key)));
        nodes.push(cache);
    }
    for owner in &urls {
        let key = key_owned_by(&nodes[0], owner, "user:");
        for node in &nodes {
            assert_eq!(
                node.handle().get("users", &key).await.unwrap(),
                value_of(&key)
            );
        }
        assert_eq!(
            loads.of(&key),
            [owner.as_str()],
            "loaded once, by its owner"
        );
    }
    for node in &nodes {
        assert_eq!(node.stats().source("users").unwrap().stats.peer_errors, 0);
    }

    // A client that trusts the CA but has no certificate is refused at the handshake.
    let roots = ca.pem.clone();
    let no_cert = Groupcache::builder()
        .self_url("https://127.0.0.1:9")
        .peers([urls[1].clone()])
        .peer_secret("a secret for the TLS test, 32+ bytes")
        .peer_tls(PeerTls::from_pem(roots.as_bytes()).unwrap())
        .source("users", loads.source("no-cert"))
        .build()
        .unwrap();
    let key = key_owned_by(&no_cert, &urls[1], "other:");
    assert_eq!(
        no_cert.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    assert_eq!(
        loads.of(&key),
        ["no-cert"],
        "refused by the peer, so loaded locally"
    );
    assert_eq!(
        no_cert.stats().source("users").unwrap().stats.peer_errors,
        1
    );
    for server in servers {
        server.abort();
    }
}

#[test]
fn tls_settings_are_checked() {
    assert!(PeerTls::from_pem(b"not a pem").is_err());
    let err = Groupcache::builder()
        .self_url("https://127.0.0.1:8443")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("peer_tls"), "{err}");
    let ca = Ca::new();
    let (cert, _) = ca.node();
    let (_, other_key) = ca.node();
    let mismatched = PeerTls::from_pem(ca.pem.as_bytes())
        .unwrap()
        .client_certificate(cert.as_bytes(), other_key.as_bytes())
        .unwrap();
    let err = Groupcache::builder()
        .peer_tls(mismatched)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, tower_groupcache::ConfigError::Tls(_)),
        "{err}"
    );
}
