//! A handler written as the README's answers each outcome of a get with its HTTP status, and
//! the body names the data source but never the key nor the data source's own error.

use crate::support;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_groupcache::typed::typed;
use tower_groupcache::{CacheHandle, Error, Groupcache};

/// The README's handler.
async fn user(cache: CacheHandle, Path(id): Path<String>) -> Result<Bytes, Error> {
    cache.get("users", &format!("user:{id}")).await
}

#[derive(Debug, Serialize, Deserialize)]
struct Profile {
    name: String,
}

/// The same, through a typed handle.
async fn profile(cache: CacheHandle, Path(id): Path<String>) -> Result<String, Error> {
    let profile = cache.typed::<String, Profile>("profiles").get(&id).await?;
    Ok(profile.name)
}

/// Ids are long and odd, so that finding one in a body cannot be a coincidence.
const FOUND: &str = "found-q7Zx";
const MISSING: &str = "missing-q7Zx";
const BROKEN: &str = "broken-q7Zx";
const PANICS: &str = "panics-q7Zx";
const MAX_KEY_BYTES: usize = 64;

/// The back end's error, with details a client must not see.
fn backend_error(key: &str) -> std::io::Error {
    std::io::Error::other(format!("connection to db-7.internal refused for {key}"))
}

async fn start() -> (Groupcache, String) {
    let cache = Groupcache::builder()
        .max_key_bytes(MAX_KEY_BYTES)
        .source("users", |key: String| async move {
            match key.strip_prefix("user:") {
                Some(MISSING) => Ok(None),
                Some(BROKEN) => Err(backend_error(&key)),
                Some(PANICS) => panic!("data source bug on {key}"),
                _ => Ok(Some(format!("{{\"id\":\"{key}\"}}"))),
            }
        })
        // Profiles are stored as bare strings, which a `Profile` cannot be decoded from.
        .source(
            "profiles",
            typed(|id: String| async move { Ok::<_, std::io::Error>(Some(id)) }),
        )
        .build()
        .expect("valid config");
    let app = Router::new()
        .route("/user/{id}", get(user))
        .route("/profile/{id}", get(profile))
        .layer(cache.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("bound"));
    // The server runs until the test's runtime ends.
    let _server = support::serve(listener, app).await;
    (cache, base)
}

/// Asks `path`, checks the answer's status and returns its body. An error's body must be
/// plain text that names `source` and holds none of `hidden` (the key, the cause).
async fn answer(
    base: &str,
    path: &str,
    status: StatusCode,
    source: &str,
    hidden: &[&str],
) -> String {
    let (got, headers, body) = support::request("GET", &format!("{base}{path}")).await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(got, status, "GET {path}: body {body:?}");
    if status.is_success() {
        return body;
    }
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"text/plain; charset=utf-8"[..]),
        "GET {path}"
    );
    assert!(
        body.contains(&format!("`{source}`")),
        "GET {path}: {body:?}"
    );
    for text in hidden {
        assert!(
            !body.contains(text),
            "GET {path}: the body holds {text:?}: {body:?}"
        );
    }
    body
}

#[tokio::test]
async fn a_value_answers_200() {
    let (_cache, base) = start().await;
    let body = answer(
        &base,
        &format!("/user/{FOUND}"),
        StatusCode::OK,
        "users",
        &[],
    )
    .await;
    assert_eq!(body, format!("{{\"id\":\"user:{FOUND}\"}}"));
}

#[tokio::test]
async fn not_found_answers_404() {
    let (_cache, base) = start().await;
    let path = format!("/user/{MISSING}");
    answer(&base, &path, StatusCode::NOT_FOUND, "users", &[MISSING]).await;
}

#[tokio::test]
async fn a_failed_load_answers_502() {
    let (_cache, base) = start().await;
    let cause = backend_error(&format!("user:{BROKEN}")).to_string();
    let path = format!("/user/{BROKEN}");
    let hidden = [BROKEN, &cause, "db-7"];
    answer(&base, &path, StatusCode::BAD_GATEWAY, "users", &hidden).await;
}

#[tokio::test]
async fn a_panicked_load_answers_500() {
    let (_cache, base) = start().await;
    let path = format!("/user/{PANICS}");
    let hidden = [PANICS, "data source bug"];
    answer(
        &base,
        &path,
        StatusCode::INTERNAL_SERVER_ERROR,
        "users",
        &hidden,
    )
    .await;
}

#[tokio::test]
async fn a_key_over_max_key_bytes_answers_414() {
    let (_cache, base) = start().await;
    let long = "x".repeat(MAX_KEY_BYTES);
    let path = format!("/user/{long}");
    answer(&base, &path, StatusCode::URI_TOO_LONG, "users", &[&long]).await;
}

#[tokio::test]
async fn a_value_that_does_not_decode_answers_500() {
    let (cache, base) = start().await;
    let id = "profile-q7Zx";
    // The decoder's own message, which the body must not carry.
    let error = cache
        .handle()
        .typed::<String, Profile>("profiles")
        .get(&id.to_owned())
        .await
        .expect_err("a bare string is not a Profile");
    let cause = std::error::Error::source(&error)
        .expect("the codec's error")
        .to_string();
    let path = format!("/profile/{id}");
    let hidden = [id, &cause, "expected struct"];
    answer(
        &base,
        &path,
        StatusCode::INTERNAL_SERVER_ERROR,
        "profiles",
        &hidden,
    )
    .await;
}
