//! The balanced ring on loopback: three nodes that load each key once and all answer every
//! key alike; a node on golang's ring and one on the balanced ring seeing each other as a ring
//! mismatch (stat, metric and a log naming both kinds); the setting from the environment; and
//! the ring simulator's measurements at small sizes.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_groupcache::{ConfigError, Groupcache, GroupcacheBuilder, Ring, RingKind};

use crate::support::metrics::snapshot;
use crate::support::{Loads, capture_logs, cluster, count_lines, listeners, start_node, value_of};

#[path = "../../examples/ringsim/sim.rs"]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod sim;

#[tokio::test]
async fn three_nodes_on_the_balanced_ring_load_each_key_once() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.ring(RingKind::Balanced)).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let expected = Ring::balanced(&urls);
    let fingerprints: Vec<String> = nodes
        .iter()
        .map(|n| n.cache.stats().cluster.ring_fingerprint)
        .collect();
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "{fingerprints:?}"
    );
    assert_eq!(fingerprints[0], format!("{:08x}", expected.fingerprint()));
    assert_ne!(
        fingerprints[0],
        format!("{:08x}", Ring::new(50, &urls).fingerprint()),
        "the kind is part of the fingerprint"
    );
    let keys: Vec<String> = (0..150).map(|i| format!("user:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        // Each key is asked of every node, starting with a different one each time.
        for j in 0..3 {
            let node = &nodes[(i + j) % 3];
            assert_eq!(node.cache.ring().kind(), RingKind::Balanced);
            assert_eq!(
                node.handle().get("users", key).await.unwrap(),
                value_of(key)
            );
        }
        let owner = expected.owner(key).unwrap();
        assert_eq!(
            loads.of(key),
            vec![owner.to_owned()],
            "{key} loaded once, by its owner"
        );
    }
    // Every node owns some of the keys.
    for url in &urls {
        assert!(loads.total_by(url) > 20, "{url}: {}", loads.total_by(url));
    }
    for node in &nodes {
        assert_eq!(node.cache.stats().cluster.ring_mismatches, 0);
    }
}

#[tokio::test]
async fn nodes_on_different_kinds_of_ring_both_count_a_mismatch() {
    let (_guard, logs) = capture_logs();
    let recorder = DebuggingRecorder::new();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let loads = Loads::default();
    // Same peers, same replicas: only the kind differs.
    let (listeners, urls) = listeners(2).await;
    let [la, lb] = <[_; 2]>::try_from(listeners).expect("two listeners");
    let a = start_node(la, &urls, &loads, |b| b).await;
    let b = start_node(lb, &urls, &loads, |b| b.ring(RingKind::Balanced)).await;
    let balanced = &b.cache;
    let golang = a.cache.ring();
    let to_b = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| golang.owner(k) == Some(&*b.url))
        .unwrap();
    let balanced_ring = balanced.ring();
    // Another prefix: a key B loaded for A would be a local hit on B.
    let to_a = (0..10_000)
        .map(|i| format!("j{i}"))
        .find(|k| balanced_ring.owner(k) == Some(&*a.url))
        .unwrap();
    a.handle().get("users", &to_b).await.unwrap();
    balanced.handle().get("users", &to_a).await.unwrap();

    let (sa, sb) = (a.cache.stats().cluster, balanced.stats().cluster);
    assert_ne!(sa.ring_fingerprint, sb.ring_fingerprint);
    assert_eq!(sa.ring_mismatches, 1, "A (golang) saw B's balanced ring");
    assert_eq!(sb.ring_mismatches, 1, "B (balanced) saw A's golang ring");
    // Each names both kinds.
    assert_eq!(
        count_lines(&logs, "this node's is golang, the peer's balanced"),
        1
    );
    assert_eq!(
        count_lines(&logs, "this node's is balanced, the peer's golang"),
        1
    );
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    match s.get(&("groupcache_ring_mismatches_total".to_owned(), vec![])) {
        Some(DebugValue::Counter(v)) => assert!(*v >= 1, "{v}"),
        other => panic!("groupcache_ring_mismatches_total: {other:?}"),
    }
}

#[test]
fn the_ring_kind_comes_from_the_environment() {
    let vars = |ring: &'static str| {
        move |name: &str| match name {
            "T_RING" => Some(ring.to_owned()),
            "T_SELF_URL" => Some("http://10.0.0.1:8080".to_owned()),
            _ => None,
        }
    };
    for (value, kind) in [
        ("balanced", RingKind::Balanced),
        (" Balanced ", RingKind::Balanced),
        ("golang", RingKind::Golang),
        ("", RingKind::Golang),
    ] {
        let cache = GroupcacheBuilder::from_env_lookup("T", vars(value))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(cache.ring().kind(), kind, "{value:?}");
    }
    let err = GroupcacheBuilder::from_env_lookup("T", vars("jump")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Env { variable, .. } if variable == "T_RING"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`jump` is not a ring kind"),
        "{err}"
    );
    // The default, and `replicas` still checked on the balanced ring.
    assert_eq!(
        Groupcache::builder().build().unwrap().ring().kind(),
        RingKind::Golang
    );
    assert_eq!(
        Groupcache::builder()
            .ring(RingKind::Balanced)
            .replicas(0)
            .build()
            .unwrap_err(),
        ConfigError::ZeroReplicas
    );
}

#[test]
fn a_balanced_ring_past_its_size_is_refused() {
    let peers: Vec<String> =
        (0..tower_groupcache::MAX_RING_POINTS / tower_groupcache::BALANCED_POINTS + 1)
            .map(|i| format!("http://10.1.{}.{}:8080", i / 250, i % 250))
            .collect();
    let err = Groupcache::builder()
        .self_url(peers[0].clone())
        .peers(peers.clone())
        .open_peer_path()
        .ring(RingKind::Balanced)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::TooManyPeers {
            peers: peers.len(),
            max: peers.len() - 1
        }
    );
}

#[test]
fn the_ring_simulator_runs_at_small_sizes() {
    use sim::Urls;
    for urls in [Urls::StatefulSet, Urls::Ip] {
        for nodes in [3, 10] {
            for kind in [RingKind::Golang, RingKind::Balanced] {
                let row = sim::row(kind, urls, nodes, 1);
                assert!(row.busiest >= 1.0 && row.busiest < 2.0, "{row:?}");
                assert!(row.join > 0.0 && row.leave > 0.0, "{row:?}");
                assert!(row.lookup_ns.0 > 0.0 && row.build_ms.0 > 0.0, "{row:?}");
                assert!(row.bytes > 0, "{row:?}");
                // Keys move only to the node that joins, as many as its share says.
                let sampled = sim::check_moves(kind, urls, nodes, 4_000);
                let share = row.join / (nodes + 1) as f64;
                assert!(
                    (sampled - share).abs() < 0.03,
                    "{sampled} vs {share}: {row:?}"
                );
            }
            let balanced = sim::row(RingKind::Balanced, urls, nodes, 0);
            assert!(balanced.busiest <= 1.10, "{balanced:?}");
            assert!(balanced.join <= 1.10, "{balanced:?}");
        }
    }
}

/// A peer that answers as a Go node does: a get's value, without this crate's extensions
/// header.
async fn plain_peer() -> String {
    use prost::Message as _;
    let app = axum::Router::new().fallback(|| async {
        let reply = tower_groupcache::protocol::GetResponse {
            value: Some(b"from the plain peer".to_vec().into()),
            minute_qps: None,
            expire: None,
        };
        reply.encode_to_vec()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    crate::support::serve(listener, app).await;
    url
}

#[tokio::test]
async fn a_node_on_the_balanced_ring_warns_of_a_go_peer() {
    let (_guard, logs) = capture_logs();
    let go = plain_peer().await;
    let loads = Loads::default();
    let warning = "answers as a golang/groupcache node";
    for (kind, warned) in [(RingKind::Golang, 0), (RingKind::Balanced, 1)] {
        let nodes = cluster(1, &loads, |b| b.peers([go.clone()]).ring(kind)).await;
        let node = &nodes[0];
        let ring = node.cache.ring();
        let keys: Vec<String> = (0..200)
            .map(|i| format!("{kind}:{i}"))
            .filter(|k| ring.owner(k) == Some(&*go))
            .take(3)
            .collect();
        assert_eq!(keys.len(), 3);
        for key in &keys {
            assert_eq!(
                &node.handle().get("users", key).await.unwrap()[..],
                b"from the plain peer"
            );
        }
        assert_eq!(count_lines(&logs, warning), warned, "{kind}");
    }
}
