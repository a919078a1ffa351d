//! The peer client's connections, against a peer that speaks HTTP/1.1 by hand on 127.0.0.1:
//! one keep-alive connection serves a run of fetches, a connection the peer closed while idle
//! is replaced without a failed fetch, the connections close when the cache is dropped, and
//! no more connections than the cap are opened to one peer, however many fetches wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower_groupcache::Groupcache;

/// `GetResponse { value: "hello" }`, from a node of this crate (it names the extensions it
/// speaks, so that removals are sent to it).
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
x-groupcache-extensions: 1\r\ncontent-length: 7\r\n\r\n\x0a\x05hello";

/// A peer on 127.0.0.1 that answers every request with [`ANSWER`] on keep-alive
/// connections. With `close_on` set, a connection that already answered that many requests
/// is closed when the next request arrives, without an answer.
struct HandPeer {
    url: String,
    accepted: Arc<AtomicUsize>,
    /// One message per connection the client closed.
    closed: mpsc::UnboundedReceiver<()>,
}

impl HandPeer {
    async fn start(close_on: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                tokio::spawn(serve_connection(socket, close_on, closed_tx.clone()));
            }
        });
        Self {
            url,
            accepted,
            closed,
        }
    }
}

/// A peer on 127.0.0.1 that reads each request and holds it unanswered until
/// [`open`](HoldingPeer::open), then answers it and every later one with [`ANSWER`]. It counts
/// the connections it accepts and the requests it receives.
struct HoldingPeer {
    url: String,
    accepted: Arc<AtomicUsize>,
    received: watch::Receiver<usize>,
    gate: watch::Sender<bool>,
}

impl HoldingPeer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (received_tx, received) = watch::channel(0);
        let (gate, gate_rx) = watch::channel(false);
        let counter = accepted.clone();
        let received_tx = Arc::new(received_tx);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, SeqCst);
                tokio::spawn(serve_held(socket, received_tx.clone(), gate_rx.clone()));
            }
        });
        Self {
            url,
            accepted,
            received,
            gate,
        }
    }

    /// Waits until the peer holds `n` requests, or fails the test after a minute.
    async fn wait_received(&mut self, n: usize) {
        tokio::time::timeout(
            Duration::from_secs(60),
            self.received.wait_for(|&received| received >= n),
        )
        .await
        .unwrap_or_else(|_| panic!("the peer never received {n} requests"))
        .unwrap();
    }

    /// Answers the held requests, and every later one at once.
    fn open(&self) {
        self.gate.send_replace(true);
    }
}

async fn serve_held(
    mut socket: TcpStream,
    received: Arc<watch::Sender<usize>>,
    mut gate: watch::Receiver<bool>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buffer.drain(..end);
        received.send_modify(|n| *n += 1);
        if gate.wait_for(|open| *open).await.is_err() || socket.write_all(ANSWER).await.is_err() {
            return;
        }
    }
}

async fn serve_connection(
    mut socket: TcpStream,
    close_on: Option<usize>,
    closed: mpsc::UnboundedSender<()>,
) {
    let mut buffer = Vec::new();
    let mut answered = 0;
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (peer requests have no body).
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = closed.send(());
                    return;
                }
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buffer.drain(..end);
        if close_on == Some(answered) {
            return; // dropped: closed with the request unanswered
        }
        if socket.write_all(ANSWER).await.is_err() {
            return;
        }
        answered += 1;
    }
}

/// A node that serves nothing itself (its peer path is never called) and caches nothing, so
/// that each get of a key owned by `peer` is a fetch.
fn fetching_node(peer: &str) -> Groupcache {
    fetching_node_with_timeout(peer, Duration::from_secs(10))
}

fn fetching_node_with_timeout(peer: &str, peer_timeout: Duration) -> Groupcache {
    Groupcache::builder()
        .open_peer_path()
        .self_url("http://127.0.0.1:9")
        .peers([peer])
        .cache_bytes(0)
        .peer_timeout(peer_timeout)
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(format!("local {key}"))
        })
        .build()
        .unwrap()
}

/// A fetching node that opens at most `cap` connections to a peer.
fn capped_node(peer: &str, cap: usize, peer_timeout: Duration) -> Groupcache {
    Groupcache::builder()
        .open_peer_path()
        .self_url("http://127.0.0.1:9")
        .peers([peer])
        .cache_bytes(0)
        .peer_timeout(peer_timeout)
        .max_connections_per_peer(cap)
        // Each get its own request: the stand-in owners here answer gets only.
        .natural_batching(0)
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(format!("local {key}"))
        })
        .build()
        .unwrap()
}

fn keys_owned_by(cache: &Groupcache, owner: &str, n: usize) -> Vec<String> {
    let ring = cache.ring();
    (0..100_000)
        .map(|i| format!("user:{i}"))
        .filter(|key| ring.owner(key) == Some(owner))
        .take(n)
        .collect()
}

#[tokio::test]
async fn sequential_fetches_share_one_connection() {
    let peer = HandPeer::start(None).await;
    let node = fetching_node(&peer.url);
    for key in keys_owned_by(&node, &peer.url, 50) {
        let got = node.handle().get("users", &key).await.unwrap();
        assert_eq!(&got[..], b"hello", "{key}");
    }
    let stats = node.stats();
    let users = stats.source("users").unwrap();
    assert_eq!((users.stats.peer_loads, users.stats.peer_errors), (50, 0));
    assert_eq!(peer.accepted.load(SeqCst), 1, "one keep-alive connection");
}

#[tokio::test]
async fn a_connection_the_peer_closed_is_replaced_without_a_failed_fetch() {
    // Each connection answers one request and drops the next one unanswered.
    let peer = HandPeer::start(Some(1)).await;
    let node = fetching_node(&peer.url);
    let keys = keys_owned_by(&node, &peer.url, 3);
    for key in &keys {
        let got = node.handle().get("users", key).await.unwrap();
        assert_eq!(&got[..], b"hello", "{key}");
    }
    let stats = node.stats();
    let users = stats.source("users").unwrap();
    assert_eq!(
        (
            users.stats.peer_loads,
            users.stats.peer_errors,
            users.stats.local_loads
        ),
        (3, 0, 0),
        "every fetch answered by the peer, none loaded here"
    );
    // The second and third fetches each found the idle connection dead and opened another.
    assert_eq!(peer.accepted.load(SeqCst), 3);
}

#[tokio::test]
async fn the_retry_on_a_new_connection_keeps_the_slot_of_the_failed_one() {
    // With one connection allowed, a retry that asked for a second slot would wait for its
    // own and time out.
    let peer = HandPeer::start(Some(1)).await;
    let node = capped_node(&peer.url, 1, Duration::from_secs(60));
    for key in keys_owned_by(&node, &peer.url, 3) {
        let got = tokio::time::timeout(Duration::from_secs(60), node.handle().get("users", &key))
            .await
            .expect("the retry does not wait for a slot")
            .unwrap();
        assert_eq!(&got[..], b"hello", "{key}");
    }
    let stats = node.stats();
    let users = stats.source("users").unwrap();
    assert_eq!((users.stats.peer_loads, users.stats.peer_errors), (3, 0));
    assert_eq!(peer.accepted.load(SeqCst), 3);
}

#[tokio::test]
async fn dropping_the_cache_closes_its_peer_connections() {
    let mut peer = HandPeer::start(None).await;
    let node = fetching_node(&peer.url);
    let key = keys_owned_by(&node, &peer.url, 1).remove(0);
    node.handle().get("users", &key).await.unwrap();
    assert!(
        peer.closed.try_recv().is_err(),
        "the idle connection stays open while the cache lives"
    );
    drop(node);
    tokio::time::timeout(Duration::from_secs(30), peer.closed.recv())
        .await
        .expect("the connection closes once the cache is dropped")
        .unwrap();
}

#[tokio::test]
async fn an_endless_reply_to_a_delete_is_cut_off() {
    // Answers the probe of the base path as a node of this crate, and every other request
    // with a chunked body that never ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                loop {
                    let n = socket.read(&mut head).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    if !head[..n].starts_with(b"GET /_groupcache/ ") {
                        break;
                    }
                    let probe = b"HTTP/1.1 200 OK\r\nx-groupcache-extensions: 1\r\n\
                                  content-length: 0\r\n\r\n";
                    if socket.write_all(probe).await.is_err() {
                        return;
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nx-groupcache-extensions: 1\r\n\
                          transfer-encoding: chunked\r\n\r\n",
                    )
                    .await;
                let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    // With an hour's peer timeout, only the body limit can end the removal before the
    // test's deadline.
    let node = fetching_node_with_timeout(&url, Duration::from_secs(3_600));
    let key = keys_owned_by(&node, &url, 1).remove(0);
    let removal =
        tokio::time::timeout(Duration::from_secs(60), node.handle().remove("users", &key))
            .await
            .expect("the reply is cut off at the limit, not read until the timeout")
            .unwrap();
    assert_eq!(removal.unreachable, [url]);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let mut peer = HandPeer::start(None).await;
    let node = Groupcache::builder()
        .open_peer_path()
        .self_url("http://127.0.0.1:9")
        .peers([peer.url.as_str()])
        .cache_bytes(0)
        .peer_idle_timeout(Duration::from_millis(100))
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(format!("local {key}"))
        })
        .build()
        .unwrap();
    let key = keys_owned_by(&node, &peer.url, 1).remove(0);
    node.handle().get("users", &key).await.unwrap();
    // No more traffic: only the sweeping task can close the idle connection. The cache is
    // still alive (held below), so dropping it is not what closes the connection.
    tokio::time::timeout(Duration::from_secs(60), peer.closed.recv())
        .await
        .expect("the idle connection is closed once idle longer than the timeout")
        .unwrap();
    assert_eq!(node.stats().source("users").unwrap().stats.peer_loads, 1);
}

/// A get of each key on `node`, each in a task of its own.
fn spawn_gets(
    node: &Groupcache,
    keys: Vec<String>,
) -> Vec<tokio::task::JoinHandle<Result<bytes::Bytes, tower_groupcache::Error>>> {
    keys.into_iter()
        .map(|key| {
            let handle = node.handle();
            tokio::spawn(async move { handle.get("users", &key).await })
        })
        .collect()
}

/// Waits for every get, each of which must give the stand-in's value.
async fn expect_hello(
    gets: Vec<tokio::task::JoinHandle<Result<bytes::Bytes, tower_groupcache::Error>>>,
) {
    for get in gets {
        let got = tokio::time::timeout(Duration::from_secs(60), get)
            .await
            .expect("every get completes once the owner answers")
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"hello");
    }
}

#[tokio::test]
async fn concurrent_fetches_open_no_more_connections_than_the_cap() {
    let mut peer = HoldingPeer::start().await;
    let node = capped_node(&peer.url, 4, Duration::from_secs(60));
    let gets = spawn_gets(&node, keys_owned_by(&node, &peer.url, 64));
    // The owner holds as many requests as the cap lets through; the other fetches wait.
    peer.wait_received(4).await;
    peer.open();
    expect_hello(gets).await;
    let stats = node.stats();
    let users = stats.source("users").unwrap();
    assert_eq!((users.stats.peer_loads, users.stats.peer_errors), (64, 0));
    let accepted = peer.accepted.load(SeqCst);
    assert!(accepted <= 4, "{accepted} connections accepted");

    // Again with the owner answering at once, so that fetches end while others wait: each
    // waiting fetch reuses a returned connection rather than opening one.
    expect_hello(spawn_gets(&node, keys_owned_by(&node, &peer.url, 256))).await;
    let accepted = peer.accepted.load(SeqCst);
    assert!(accepted <= 4, "{accepted} connections accepted");
}

#[tokio::test]
async fn concurrent_removals_open_no_more_connections_than_the_cap() {
    let mut peer = HoldingPeer::start().await;
    let node = capped_node(&peer.url, 1, Duration::from_secs(60));
    let removals: Vec<_> = keys_owned_by(&node, &peer.url, 8)
        .into_iter()
        .map(|key| {
            let handle = node.handle();
            tokio::spawn(async move { handle.remove("users", &key).await })
        })
        .collect();
    peer.wait_received(1).await;
    peer.open();
    for removal in removals {
        let removal = tokio::time::timeout(Duration::from_secs(60), removal)
            .await
            .expect("every removal completes once the owner answers")
            .unwrap()
            .unwrap();
        assert!(removal.is_complete(), "{:?}", removal.unreachable);
    }
    let accepted = peer.accepted.load(SeqCst);
    assert!(accepted <= 1, "{accepted} connections accepted");
}

#[tokio::test]
async fn a_fetch_waiting_for_a_connection_ends_within_the_peer_timeout() {
    // The owner holds every request until it is opened: the one connection the cap allows
    // stays busy.
    let peer = HoldingPeer::start().await;
    let node = capped_node(&peer.url, 1, Duration::from_secs(2));
    let keys = keys_owned_by(&node, &peer.url, 3);
    let handle = node.handle();
    let (first, second) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(handle.get("users", &keys[0]), handle.get("users", &keys[1]))
    })
    .await
    .expect("the peer timeout covers the wait for a connection");
    // Both loaded here, as after any peer error.
    for (got, key) in [(first, &keys[0]), (second, &keys[1])] {
        assert_eq!(got.unwrap(), format!("local {key}").as_bytes());
    }
    let stats = node.stats();
    let users = stats.source("users").unwrap();
    assert_eq!(
        (
            users.stats.peer_loads,
            users.stats.peer_errors,
            users.stats.local_loads
        ),
        (0, 2, 2)
    );
    // Neither timed-out fetch kept its connection slot: once the owner answers, the next
    // fetch goes through.
    peer.open();
    let got = handle.get("users", &keys[2]).await.unwrap();
    assert_eq!(&got[..], b"hello");
}
