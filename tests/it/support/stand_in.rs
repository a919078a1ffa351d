//! A stand-in owner that speaks this crate's peer protocol and holds removals until a test
//! lets them through, and a node of this crate beside it.

use std::sync::Arc;

use crate::support::{self, Loads};
use tower_groupcache::Groupcache;

/// A stand-in owner speaking the peer protocol of this crate (it says so with the extensions
/// header): it answers a get with its current value for the key (with `expire` as set), and
/// holds each `DELETE` until the test lets it through, then serves the next value.
#[derive(Clone, Default)]
pub(crate) struct StandIn {
    pub(crate) state: Arc<std::sync::Mutex<StandInState>>,
    pub(crate) release_delete: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
pub(crate) struct StandInState {
    version: u32,
    gets: usize,
    pub(crate) deletes_seen: usize,
    pub(crate) expire: Option<i64>,
}

impl StandIn {
    pub(crate) fn value(version: u32) -> String {
        format!("v{version}")
    }

    pub(crate) async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        use axum::extract::Request;
        use prost::Message as _;
        let this = self.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let this = this.clone();
            async move {
                let ours = [("x-groupcache-extensions", "1")];
                if request.method() == axum::http::Method::DELETE {
                    this.state.lock().unwrap().deletes_seen += 1;
                    this.release_delete.notified().await;
                    this.state.lock().unwrap().version += 1;
                    return (axum::http::StatusCode::OK, ours, Vec::new());
                }
                if request.uri().path() == "/_groupcache/" {
                    return (axum::http::StatusCode::OK, ours, Vec::new());
                }
                let mut state = this.state.lock().unwrap();
                state.gets += 1;
                let reply = tower_groupcache::protocol::GetResponse {
                    value: Some(Self::value(state.version).into()),
                    minute_qps: None,
                    expire: state.expire,
                };
                (axum::http::StatusCode::OK, ours, reply.encode_to_vec())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (url, support::serve(listener, app).await)
    }

    pub(crate) fn gets(&self) -> usize {
        self.state.lock().unwrap().gets
    }
}

/// A node of this crate beside the stand-in, keeping a hot copy of every value it fetches.
pub(crate) async fn node_beside(
    stand_in_url: &str,
) -> (Groupcache, String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let loads = Loads::default();
    let cache = Groupcache::builder()
        .self_url(url.clone())
        .peers([stand_in_url.to_owned(), url.clone()])
        .open_peer_path()
        .hot_keys(tower_groupcache::HotKeys::AboveQps(0.0))
        .source("users", loads.source(&url))
        .build()
        .unwrap();
    let key = support::key_owned_by(&cache, stand_in_url, "user:");
    let server = support::serve(listener, support::app(&cache)).await;
    (cache, key, server)
}
