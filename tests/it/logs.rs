//! Log lines under floods: refused peer requests, foreign ring fingerprints, failed fetches
//! and unconfirmed removals are counted, and logged at most once per throttling period rather
//! than once each; and the capture of a test's lines, which these tests rely on.

use crate::support::{self, Loads, capture_logs, count_lines};

#[tokio::test]
async fn a_flood_of_refused_peer_requests_is_counted_not_logged_line_by_line() {
    let (_guard, logs) = capture_logs();
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| {
        b.peer_secret("a secret all nodes share: 32 or more random bytes")
    })
    .await;
    let node = &nodes[0];
    for i in 0..50 {
        let uri = format!("{}/_groupcache/users/k{i}", node.url);
        let (status, _, _) = support::request("GET", &uri).await;
        assert_eq!(status, 401);
    }
    let refused = count_lines(&logs, "refused");
    assert!(refused <= 1, "{refused} lines for 50 refusals");
    assert_eq!(node.cache.stats().cluster.refused_requests.missing, 50);
}

#[tokio::test]
async fn a_flood_of_foreign_ring_fingerprints_is_counted_not_logged_line_by_line() {
    let (_guard, logs) = capture_logs();
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| b).await;
    let node = &nodes[0];
    for i in 0..50u32 {
        let req = axum::http::Request::builder()
            .uri(format!("{}/_groupcache/users/k{i}", node.url))
            .header("x-groupcache-ring", format!("{:08x}", 0x1000_0000 + i))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = support::client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let warned = count_lines(&logs, "ring differs");
    assert!(warned <= 1, "{warned} lines for 50 foreign rings");
    assert_eq!(node.cache.stats().cluster.ring_mismatches, 50);
}

#[tokio::test]
async fn failing_fetches_and_removals_are_not_logged_one_line_each() {
    let (_guard, logs) = capture_logs();
    // A peer that refuses connections: its port was bound, then let go.
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| {
        b.peers([dead.clone()])
            .peer_health(tower_groupcache::PeerHealthConfig::default().failure_threshold(0))
    })
    .await;
    let node = &nodes[0];
    for i in 0..30 {
        let key = support::key_owned_by(&node.cache, &dead, &format!("k{i}:"));
        node.handle().get("users", &key).await.unwrap();
        let removal = node.handle().remove("users", &key).await.unwrap();
        assert_eq!(removal.unreachable, [dead.as_str()]);
    }
    assert_eq!(node.stats("users").peer_errors, 30);
    let fetches = count_lines(&logs, "peer fetch failed");
    let removals = count_lines(&logs, "removal not confirmed");
    assert!(fetches <= 1, "{fetches} lines for 30 failed fetches");
    assert!(
        removals <= 1,
        "{removals} lines for 30 unconfirmed removals"
    );
}

/// The capture the tests above rely on, in a process where other tests run at the same time: a
/// line that a thread without a subscriber reached first is still captured on this thread.
#[test]
fn a_line_another_thread_reached_first_is_still_captured() {
    fn warn() {
        tracing::warn!("a line only this test writes");
    }
    let (_guard, logs) = capture_logs();
    std::thread::spawn(warn).join().unwrap();
    warn();
    assert_eq!(count_lines(&logs, "a line only this test writes"), 1);
}
