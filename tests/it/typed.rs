//! Typed keys and values (the `typed` module) across nodes: each key loaded once in the
//! cluster, *not found* and a value of another type reported as such, and a key that does not
//! decode a codec error on the owner and on the asker.

use crate::support::{self, Loads, cluster};
use tower_groupcache::{ErrorKind, Groupcache};

#[tokio::test]
async fn typed_keys_and_values_cross_nodes() {
    use serde::{Deserialize, Serialize};
    use tower_groupcache::typed::typed;

    #[derive(Serialize, Deserialize)]
    struct UserKey {
        tenant: String,
        id: u64,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        name: String,
        roles: Vec<String>,
    }

    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| {
        b.source(
            "profiles",
            typed(|key: UserKey| async move {
                if key.id == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                Ok(Some(User {
                    name: format!("{}/{}", key.tenant, key.id),
                    roles: vec!["reader".into()],
                }))
            }),
        )
    })
    .await;
    for id in 1..=30 {
        let key = UserKey {
            tenant: "acme corp/ü".into(),
            id,
        };
        for node in &nodes {
            let users = node.handle().typed::<UserKey, User>("profiles");
            let user = users.get(&key).await.unwrap();
            assert_eq!(user.name, format!("acme corp/ü/{id}"));
        }
    }
    let misses: u64 = nodes.iter().map(|n| n.stats("profiles").local_loads).sum();
    assert_eq!(misses, 30, "each typed key loaded once in the cluster");
    let users = nodes[0].handle().typed::<UserKey, User>("profiles");
    let err = users
        .get(&UserKey {
            tenant: "t".into(),
            id: 0,
        })
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    // A value that does not decode as the asked type is a codec error, not a panic.
    let wrong = nodes[0].handle().typed::<UserKey, Vec<u64>>("profiles");
    let err = wrong
        .get(&UserKey {
            tenant: "t".into(),
            id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
}

#[tokio::test]
async fn a_typed_key_that_does_not_decode_is_a_codec_error_on_owner_and_asker() {
    use tower_groupcache::typed::typed;
    #[derive(serde::Deserialize)]
    struct Key {
        #[allow(dead_code)]
        id: u64,
    }
    let listeners = [
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers(urls.clone())
            .open_peer_path()
            .source(
                "users",
                typed(|key: Key| async move { Ok::<_, std::io::Error>(Some(key.id)) }),
            )
            .build()
            .unwrap();
        let server = support::serve(listener, support::app(&cache)).await;
        nodes.push((cache, server));
    }
    let (a, b) = (&nodes[0].0, &urls[1]);
    for owner in [&urls[0], b] {
        let key = support::key_owned_by(a, owner, "not json ");
        let error = a.handle().get("users", &key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Codec, "owner {owner}: {error:?}");
    }
    let users = a.stats().source("users").unwrap().stats;
    assert_eq!(users.peer_errors, 0, "{users:?}");
}
