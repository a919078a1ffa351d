//! How the cache layer is mounted: a layer that does not reach the peer path (`route_layer`,
//! `nest`) is reported at start, and a handler that extracts a `CacheHandle` from a router
//! without the layer gets a clear rejection.

use std::time::Duration;

use crate::support::{self, capture_logs, count_lines, eventually};
use tower_groupcache::Groupcache;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_layer_that_does_not_reach_the_peer_path_is_reported_at_start() {
    use axum::routing::get;
    let (_guard, logs) = capture_logs();
    let mut bad_urls = Vec::new();
    let mut servers = Vec::new();
    let mut caches = Vec::new();
    for mount in ["route_layer", "nest"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers([url.clone(), "http://127.0.0.1:9".to_owned()])
            .open_peer_path()
            .source("users", |key: String| async move {
                Ok::<_, std::io::Error>(key)
            })
            .build()
            .unwrap();
        let handler = || async { "ok" };
        let app = match mount {
            "route_layer" => axum::Router::new()
                .route("/get", get(handler))
                .route_layer(cache.layer()),
            _ => axum::Router::new().nest(
                "/api",
                axum::Router::new()
                    .route("/get", get(handler))
                    .layer(cache.layer()),
            ),
        };
        servers.push(support::serve(listener, app).await);
        // The peer path is not reached: answered by the router, not by the cache.
        let (status, _, _) = support::request("GET", &format!("{url}/_groupcache/users/k")).await;
        assert_eq!(status, 404, "{mount}");
        bad_urls.push(url);
        caches.push(cache);
    }
    eventually("both nodes report their peer path", DEADLINE, || {
        bad_urls.iter().all(|url| {
            count_lines(
                &logs,
                &format!("peer path {url}/_groupcache/ is not served"),
            ) >= 1
        })
    })
    .await;
}

#[tokio::test]
async fn a_handler_without_the_layer_gets_a_clear_rejection() {
    use axum::{Router, routing::get};
    use tower::ServiceExt as _;
    use tower_groupcache::CacheHandle;

    async fn handler(_cache: CacheHandle) -> &'static str {
        "unreachable"
    }
    let app: Router = Router::new().route("/", get(handler));
    let request = axum::http::Request::get("/")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 500);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("CacheHandle") && text.contains(".layer(cache.layer())"),
        "{text}"
    );
}
