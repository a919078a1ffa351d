//! A service on a real database: users in an embedded SQLite database, read through the cache,
//! one user or a page of 100 at a time. Run three of them with `scripts/users.sh`.
//!
//! ```sh
//! cargo build --example users
//! export GROUPCACHE_PEER_URLS=http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083
//! GROUPCACHE_LISTEN=127.0.0.1:8081 GROUPCACHE_SELF_URL=http://127.0.0.1:8081 target/debug/examples/users &
//! # ... the same for 8082 and 8083, then:
//! curl http://127.0.0.1:8081/users/42       # {"email":"user42@example.com","id":42,"name":"user 42"}
//! curl http://127.0.0.1:8081/users?page=3   # users 300 to 399, one JSON object per line
//! curl http://127.0.0.1:8081/stats          # the SQL queries this process ran, and the cache's stats
//! ```
//!
//! Each process opens its own in-memory SQLite database (rusqlite, SQLite compiled in: no
//! server to install) and fills it with the same 100,000 users, standing in for one database
//! every replica of a service reads. The cache is configured from the environment
//! ([`GroupcacheBuilder::from_env`] with the prefix `GROUPCACHE`, as `examples/node.rs`), with
//! an open peer path unless `GROUPCACHE_PEER_SECRET` is set; `GROUPCACHE_LISTEN` is the address
//! to listen on (default `127.0.0.1:8080`).
//!
//! The data source `users` loads one user with `SELECT ... WHERE id = ?`, and many with one
//! `SELECT ... WHERE id IN (...)` ([`Source::load_many`]): a page of 100 users that misses the
//! whole cluster costs one query on each node that owns some of them, not 100. SQLite is
//! called on tokio's blocking threads, never on the async workers.
//!
//! Routes:
//! - `GET /users/{id}`: one user as JSON; `404` for an id with no user.
//! - `GET /users?page=N`: users `100 N` to `100 N + 99`, one JSON object per line, through
//!   `get_many`.
//! - `GET /stats`: `{"sql_queries": N, "sql_rows": N, "cache": {...}}`.
//!
//! Once listening, it prints `listening on http://{address}` on stdout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use bytes::Bytes;
use rusqlite::Connection;
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_groupcache::{CacheHandle, Groupcache, GroupcacheBuilder, Loaded, LoadedMany, Source};

/// Users in the database.
const USERS: u64 = 100_000;
/// Users on a page.
const PAGE: u64 = 100;

/// The database, and what it was asked.
struct Database {
    connection: Mutex<Connection>,
    queries: AtomicU64,
    rows: AtomicU64,
}

impl Database {
    /// An in-memory database with `USERS` users.
    fn seeded() -> rusqlite::Result<Self> {
        let mut connection = Connection::open_in_memory()?;
        connection.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)",
        )?;
        let tx = connection.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT INTO users (id, name, email) VALUES (?1, ?2, ?3)")?;
            for id in 0..USERS {
                insert.execute((id, format!("user {id}"), format!("user{id}@example.com")))?;
            }
        }
        tx.commit()?;
        Ok(Self {
            connection: Mutex::new(connection),
            queries: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        })
    }

    /// The users among `ids` that exist, as JSON, in one query.
    fn select(&self, ids: &[i64]) -> rusqlite::Result<Vec<(i64, String)>> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let placeholders = vec!["?"; ids.len()].join(",");
        let mut statement = connection.prepare(&format!(
            "SELECT id, name, email FROM users WHERE id IN ({placeholders})"
        ))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(ids), |row| {
                let (id, name, email): (i64, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let json = serde_json::json!({"id": id, "name": name, "email": email});
                Ok((id, json.to_string()))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.queries.fetch_add(1, Relaxed);
        self.rows.fetch_add(rows.len() as u64, Relaxed);
        Ok(rows)
    }
}

/// The data source: the cache's keys are user ids in decimal.
#[derive(Clone)]
struct Users(Arc<Database>);

impl Users {
    /// The users of `keys`, by key, from one query on a blocking thread. A key that is not an
    /// id, or names no user, is left out: *not found*.
    async fn load_keys(&self, keys: Vec<String>) -> Result<LoadedMany, std::io::Error> {
        let ids: Vec<i64> = keys.iter().filter_map(|k| k.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(LoadedMany::new());
        }
        let database = self.0.clone();
        let rows = tokio::task::spawn_blocking(move || database.select(&ids))
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        Ok(rows
            .into_iter()
            .map(|(id, json)| (id.to_string(), json))
            .collect())
    }
}

impl Source for Users {
    type Error = std::io::Error;

    async fn load(&self, key: &str) -> Result<Loaded, Self::Error> {
        let mut many = self.load_keys(vec![key.to_owned()]).await?;
        match many.remove(key) {
            Some(Ok(loaded)) => Ok(loaded),
            Some(Err(error)) => Err(std::io::Error::other(error)),
            None => Ok(Loaded::not_found()),
        }
    }

    async fn load_many(&self, keys: &[String]) -> Result<LoadedMany, Self::Error> {
        self.load_keys(keys.to_vec()).await
    }
}

async fn user(
    cache: CacheHandle,
    Path(id): Path<u64>,
) -> Result<Response, tower_groupcache::Error> {
    let json = cache.get("users", &id.to_string()).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[derive(Deserialize)]
struct PageQuery {
    page: u64,
}

async fn page(
    cache: CacheHandle,
    Query(PageQuery { page }): Query<PageQuery>,
) -> Result<Response, tower_groupcache::Error> {
    let first = page.saturating_mul(PAGE);
    let ids: Vec<String> = (first..first.saturating_add(PAGE))
        .map(|id| id.to_string())
        .collect();
    let mut body = Vec::new();
    for user in cache.get_many("users", &ids).await? {
        match user {
            Ok(json) => {
                body.extend_from_slice(&json);
                body.push(b'\n');
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Bytes::from(body),
    )
        .into_response())
}

async fn stats(cache: CacheHandle, State(database): State<Arc<Database>>) -> Response {
    Json(serde_json::json!({
        "sql_queries": database.queries.load(Relaxed),
        "sql_rows": database.rows.load(Relaxed),
        "cache": cache.stats(),
    }))
    .into_response()
}

fn fail(what: &str, error: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("users: {what}: {error}");
    ExitCode::from(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let listen = std::env::var("GROUPCACHE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        return fail(
            "configuration error",
            format!("GROUPCACHE_LISTEN={listen:?}"),
            2,
        );
    };
    let database = match tokio::task::spawn_blocking(Database::seeded).await {
        Ok(Ok(database)) => Arc::new(database),
        Ok(Err(error)) => return fail("cannot seed the database", error, 1),
        Err(error) => return fail("cannot seed the database", error, 1),
    };
    let builder = match GroupcacheBuilder::from_env("GROUPCACHE") {
        Ok(builder) => builder,
        Err(error) => return fail("configuration error", error, 2),
    };
    let builder = if std::env::var_os("GROUPCACHE_PEER_SECRET").is_some() {
        builder
    } else {
        builder.open_peer_path()
    };
    let cache: Groupcache = match builder.source("users", Users(database.clone())).build() {
        Ok(cache) => cache,
        Err(error) => return fail("configuration error", error, 2),
    };
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/users", get(page))
        .route("/stats", get(stats))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(database)
        .layer(cache.layer());
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(&format!("cannot listen on {listen}"), error, 1),
    };
    match listener.local_addr() {
        Ok(address) => println!("listening on http://{address}"),
        Err(error) => return fail("cannot read the listening address", error, 1),
    }
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail("server error", error, 1),
    }
}
