//! Batched gets on the peer path, byte for byte as docs/protocol.md ("Batched gets") says:
//! each key answered in order with its own outcome, and every bad request refused with a
//! clear status before anything is loaded.

use prost::Message as _;
use tower_groupcache::protocol::{GetManyRequest, GetManyResponse};

use crate::support::{Loads, cluster, post, value_of};

fn request(keys: &[&str]) -> Vec<u8> {
    GetManyRequest {
        keys: keys.iter().map(|k| k.to_string().into()).collect(),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_batched_get_answers_each_key_in_order_with_its_own_outcome() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let uri = format!("{}/_groupcache/users", nodes[0].url);
    let keys = ["a", "missing:b", "fail:c", "a", "ü €/+%"];
    let (status, headers, body) = post(&uri, &[], request(&keys)).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(headers["x-groupcache-extensions"], "1");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let reply = GetManyResponse::decode(body).unwrap();
    assert_eq!(reply.results.len(), keys.len());
    let r = &reply.results;
    assert_eq!(r[0].value.as_deref(), Some(&value_of("a")[..]));
    assert_eq!(r[0].error, None);
    assert!(r[0].minute_qps.is_some_and(|qps| qps > 0.0));
    assert_eq!(r[1].error.as_deref(), Some("not-found"));
    assert_eq!(r[1].value, None);
    assert_eq!(r[2].error.as_deref(), Some("load"));
    assert!(
        r[2].message
            .as_deref()
            .is_some_and(|m| m.contains("data source")),
        "{:?}",
        r[2].message
    );
    assert_eq!(r[3].value.as_deref(), Some(&value_of("a")[..]));
    assert_eq!(r[4].value.as_deref(), Some(&value_of("ü €/+%")[..]));
    assert_eq!(loads.count("a"), 1, "a duplicate key is loaded once");
    assert_eq!(loads.total(), 4);

    // An empty batch is an empty answer.
    let (status, _, body) = post(&uri, &[], request(&[])).await;
    assert_eq!(status, 200);
    assert!(GetManyResponse::decode(body).unwrap().results.is_empty());
}

#[tokio::test]
async fn bad_batched_gets_get_clear_statuses_and_load_nothing() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.max_batch_keys(3).max_key_bytes(16)).await;
    let base = format!("{}/_groupcache", nodes[0].url);
    let users = format!("{base}/users");
    let valid = request(&["a", "b"]);
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            users.clone(),
            b"\xff\xff\xff".to_vec(),
            400,
            "not a GetManyRequest",
        ),
        (
            users.clone(),
            valid[..valid.len() - 1].to_vec(),
            400,
            "not a GetManyRequest",
        ),
        // A key that is not UTF-8 (a `string` on the wire).
        (
            users.clone(),
            b"\x0a\x01a\x0a\x02\xc3\x28".to_vec(),
            400,
            "not a GetManyRequest",
        ),
        (
            users.clone(),
            request(&["a", "b", "c", "d"]),
            413,
            "over this node's limit of 3",
        ),
        (
            users.clone(),
            vec![b'x'; 100_000],
            413,
            "a batched get is at most",
        ),
        (
            users.clone(),
            request(&["a", &"k".repeat(17)]),
            414,
            "key too long",
        ),
        (
            format!("{base}/nope"),
            valid.clone(),
            404,
            "no such group: nope",
        ),
        (
            format!("{base}/users/a"),
            valid.clone(),
            405,
            "method not allowed",
        ),
        (format!("{base}/"), valid.clone(), 405, "method not allowed"),
        (
            format!("{base}/us%zzers"),
            valid.clone(),
            400,
            "invalid percent escape",
        ),
        (format!("{base}/users?other"), valid.clone(), 400, "query"),
    ];
    for (uri, body, status, text) in cases {
        let (got, headers, reply) = post(&uri, &[], body).await;
        let reply = String::from_utf8_lossy(&reply);
        assert_eq!(got.as_u16(), status, "POST {uri}: {reply}");
        assert!(reply.contains(text), "POST {uri}: {reply}");
        assert_eq!(headers["x-groupcache-extensions"], "1");
        if status == 405 {
            assert_eq!(headers["allow"], "GET, DELETE, POST, PUT");
        }
    }
    assert_eq!(loads.total(), 0, "no bad request reached the data source");
}

/// A request body that notes the task each poll of it runs on.
struct NotingBody {
    data: Option<bytes::Bytes>,
    readers: std::sync::Arc<std::sync::Mutex<Vec<Option<tokio::task::Id>>>>,
}

impl http_body::Body for NotingBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.readers.lock().unwrap().push(tokio::task::try_id());
        std::task::Poll::Ready(
            self.data
                .take()
                .map(|data| Ok(http_body::Frame::data(data))),
        )
    }
}

/// hyper's server hands a request body to the service through a channel that wakes the
/// connection's task whenever a chunk is taken from it. Read on that task (the one that
/// polls the service), the wake lands on the running task, which tokio then reschedules as a
/// yield, waking an idle worker: two context switches per batched get, and a single get
/// served after it took twice as long (docs/performance.md). So the layer reads a request's
/// body on a task of its own.
#[tokio::test]
async fn a_batched_gets_body_is_read_off_the_task_that_serves_it() {
    use tower::{Layer as _, ServiceExt as _};

    let loads = Loads::default();
    let cache = tower_groupcache::Groupcache::builder()
        .open_peer_path()
        .source("users", loads.source("single"))
        .build()
        .unwrap();
    let readers = std::sync::Arc::default();
    let body = NotingBody {
        data: Some(request(&["a", "b"]).into()),
        readers: std::sync::Arc::clone(&readers),
    };
    let service = cache.layer().layer(tower::service_fn(
        |_request: axum::http::Request<NotingBody>| async {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
        },
    ));
    let request = axum::http::Request::post("/_groupcache/users")
        .body(body)
        .unwrap();
    let served = tokio::spawn(async move {
        let response = service.oneshot(request).await.unwrap();
        (tokio::task::id(), response.status())
    });
    let (server, status) = served.await.unwrap();
    assert_eq!(status, 200);
    let readers = readers.lock().unwrap().clone();
    assert!(!readers.is_empty(), "the body was read");
    assert!(
        readers
            .iter()
            .all(|reader| reader.is_some_and(|id| id != server)),
        "read on the serving task {server:?}: {readers:?}"
    );
    assert_eq!(loads.total(), 2);
}

/// The status line and headers a node sends back to `request`, written as raw bytes on a
/// connection of its own; a failure if nothing comes within 30 s.
async fn head_of_answer(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let mut len = 0;
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !answer[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut answer[len..]).await.unwrap();
            assert!(n > 0, "the connection closed without an answer");
            len += n;
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&answer[..len]).into_owned()
}

/// A batched get or a write whose `content-length` is over the limit is refused with `413`
/// at once, from its headers, and the node does not wait for a body that may never come.
#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_before_it_arrives() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.max_value_bytes(1_000)).await;
    let addr = nodes[0].addr;
    for (method, target) in [
        ("POST", "/_groupcache/users"),
        ("PUT", "/_groupcache/users?key=k"),
    ] {
        // Only the headers: the answer comes from them, or not at all.
        let request = format!(
            "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1073741824\r\n\r\n"
        );
        let head = head_of_answer(addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{method}: {head}");
    }
    assert_eq!(loads.total(), 0);
}

/// A batched get or a write whose body stops coming before its `content-length` is answered
/// `408` once the owner's `peer_timeout` has passed, rather than held open for as long as the
/// sender keeps the connection.
#[tokio::test]
async fn a_body_that_stops_coming_is_answered_408_after_the_peer_timeout() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| {
        b.peer_timeout(std::time::Duration::from_millis(300))
    })
    .await;
    let addr = nodes[0].addr;
    for (method, target) in [
        ("POST", "/_groupcache/users"),
        ("PUT", "/_groupcache/users?key=k"),
    ] {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n0123456789"
        );
        let head = head_of_answer(addr, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{method}: {head}");
    }
    assert_eq!(loads.total(), 0);
}
