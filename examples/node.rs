//! A standalone cache node, one process per node, configured from the environment: the node
//! that `deploy/` packages and `scripts/three-nodes.sh` and `tests/it/multihost.rs` run.
//!
//! ```sh
//! cargo build --example node
//! export GROUPCACHE_PEER_URLS=http://127.0.0.1:8081,http://127.0.0.1:8082
//! export GROUPCACHE_PEER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
//! GROUPCACHE_LISTEN=127.0.0.1:8081 GROUPCACHE_SELF_URL=http://127.0.0.1:8081 target/debug/examples/node &
//! GROUPCACHE_LISTEN=127.0.0.1:8082 GROUPCACHE_SELF_URL=http://127.0.0.1:8082 target/debug/examples/node &
//! curl http://127.0.0.1:8081/get/user:1        # value-of:user:1
//! ```
//!
//! # Configuration
//!
//! The cache reads `GROUPCACHE_SELF_URL`, `GROUPCACHE_PEER_URLS`, `GROUPCACHE_PEER_SECRET` and
//! the other variables of [`GroupcacheBuilder::from_env`] with the prefix `GROUPCACHE`. The
//! node adds:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GROUPCACHE_LISTEN` | `0.0.0.0:8080` | the address to listen on |
//! | `GROUPCACHE_DNS_NAME` | none | follow this name's addresses as the peer list (needs `GROUPCACHE_SELF_URL`) |
//! | `GROUPCACHE_DNS_PORT` | the listen port | the port of the peer URLs built from those addresses |
//! | `GROUPCACHE_DNS_INTERVAL_MS` | `5000` | how often to resolve the name |
//! | `GROUPCACHE_DEMO_LATENCY_MS` | `0` | simulated latency of the demo data source |
//! | `GROUPCACHE_LOG_KEYS` | `false` | whether logs and spans may carry keys |
//! | `GROUPCACHE_SHUTDOWN_TIMEOUT_MS` | `15000` | bound on waiting for the loads in flight at shutdown (the cache's [`GroupcacheBuilder::shutdown_timeout`]) |
//! | `RUST_LOG` | `info` | the log filter; logs go to stderr |
//!
//! A configuration error prints `node: configuration error: ...` and exits with status 2; a
//! port that cannot be bound prints `node: cannot listen on ...` and exits with status 1.
//!
//! # Routes
//!
//! - `GET /get/{key}` (the key may contain `/`), or `GET /get?key=...`: the value of `key` in
//!   the data source `demo`: `200` with the bytes, `404` when it is not found, `502` when the
//!   load failed (the statuses of [`tower_groupcache::Error`]). The demo source answers
//!   `value-of:{key}`, *not found* for keys starting with `missing:` and an error for keys
//!   starting with `fail:`.
//! - `GET /stats`: the cache's stats as JSON.
//! - `GET /metrics`: Prometheus text (metrics-exporter-prometheus); the durations are
//!   histograms with buckets from 0.5 ms to 10 s.
//! - `GET /healthz`: `200 ok`, or `503 shutting down` once the node drains.
//! - the peer path, `/_groupcache/` by default, served by the cache's layer.
//!
//! Once listening, the node prints `listening on http://{address}` on stdout.
//!
//! # Shutdown
//!
//! On SIGTERM or SIGINT the node logs `shutting down`, refuses peer requests (`503`, so peers
//! load its keys themselves), fails `/healthz`, and calls [`Groupcache::shutdown`], which waits
//! for the loads that started before it, at most `GROUPCACHE_SHUTDOWN_TIMEOUT_MS`: loads
//! still running then are abandoned (`loads still running; stopping anyway`, with their
//! number). Then it stops the HTTP server gracefully and exits with status 0. A server that has
//! not drained 5 s after that is stopped with `graceful shutdown did not finish in time;
//! exiting` and status 1. A second signal during the shutdown stops the node at once, with
//! status 1.

use std::collections::HashMap;
use std::fmt;
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_groupcache::{CacheHandle, DnsDiscovery, Groupcache, GroupcacheBuilder, Loaded};
use tracing_subscriber::EnvFilter;

/// The prefix of every environment variable the node reads.
const PREFIX: &str = "GROUPCACHE";
/// The data source's name.
const SOURCE: &str = "demo";
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_DNS_INTERVAL: Duration = Duration::from_millis(5000);
/// The buckets of the duration histograms on `/metrics`, in seconds: from a local load or a
/// fetch on the same host (well under a millisecond) to the default peer timeout (5 s).
const HISTOGRAM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How long the HTTP server may take to close its connections once the cache has drained.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's own settings, besides the cache's.
#[derive(Debug)]
struct NodeSettings {
    listen: SocketAddr,
    dns: Option<DnsSettings>,
    demo_latency: Duration,
    log_keys: bool,
}

#[derive(Debug)]
struct DnsSettings {
    name: String,
    port: u16,
    interval: Duration,
}

/// A configuration error: printed as `node: configuration error: ...`, status 2.
#[derive(Debug)]
struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<tower_groupcache::ConfigError> for ConfigError {
    fn from(error: tower_groupcache::ConfigError) -> Self {
        Self(error.to_string())
    }
}

/// The value of `{PREFIX}_{suffix}`, if set and not blank.
fn var(suffix: &str) -> Result<Option<(String, String)>, ConfigError> {
    let name = format!("{PREFIX}_{suffix}");
    match std::env::var(&name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some((name, value.trim().to_owned()))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError(format!(
            "environment variable {name}: the value is not valid Unicode"
        ))),
    }
}

fn number<T: std::str::FromStr>(suffix: &str) -> Result<Option<T>, ConfigError> {
    var(suffix)?
        .map(|(name, value)| {
            value.parse().map_err(|_| {
                ConfigError(format!(
                    "environment variable {name}: `{value}` is not a whole number"
                ))
            })
        })
        .transpose()
}

fn millis(suffix: &str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(number::<u64>(suffix)?.map_or(default, Duration::from_millis))
}

fn boolean(suffix: &str) -> Result<bool, ConfigError> {
    match var(suffix)? {
        None => Ok(false),
        Some((name, value)) => match value.as_str() {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            other => Err(ConfigError(format!(
                "environment variable {name}: `{other}` is not true or false"
            ))),
        },
    }
}

impl NodeSettings {
    fn from_env() -> Result<Self, ConfigError> {
        let listen: SocketAddr = match var("LISTEN")? {
            None => DEFAULT_LISTEN.parse().expect("the default listen address"),
            Some((name, value)) => value.parse().map_err(|_| {
                ConfigError(format!(
                    "environment variable {name}: `{value}` is not an address such as \
                     {DEFAULT_LISTEN}"
                ))
            })?,
        };
        let dns = match var("DNS_NAME")? {
            None => None,
            Some((_, name)) => Some(DnsSettings {
                name,
                port: number("DNS_PORT")?.unwrap_or_else(|| listen.port()),
                interval: millis("DNS_INTERVAL_MS", DEFAULT_DNS_INTERVAL)?,
            }),
        };
        if dns.is_some() && var("SELF_URL")?.is_none() {
            return Err(ConfigError(format!(
                "{PREFIX}_DNS_NAME is set but {PREFIX}_SELF_URL is not: the node must know its \
                 own URL as its peers reach it, e.g. http://10.0.0.1:8080"
            )));
        }
        Ok(Self {
            listen,
            dns,
            demo_latency: millis("DEMO_LATENCY_MS", Duration::ZERO)?,
            log_keys: boolean("LOG_KEYS")?,
        })
    }
}

/// The demo data source: `value-of:{key}`, after the simulated latency.
async fn demo_load(key: String, latency: Duration) -> Result<Loaded, std::io::Error> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if key.starts_with("missing:") {
        return Ok(Loaded::not_found());
    }
    if key.starts_with("fail:") {
        return Err(std::io::Error::other(
            "the demo data source fails keys starting with `fail:`",
        ));
    }
    Ok(Loaded::new(format!("value-of:{key}")))
}

/// Builds the cache from the environment, with the demo source, and starts DNS discovery.
/// Call inside the runtime (discovery spawns a task).
fn build_cache(settings: &NodeSettings) -> Result<Groupcache, ConfigError> {
    let latency = settings.demo_latency;
    let cache = GroupcacheBuilder::from_env(PREFIX)?
        .log_keys(settings.log_keys)
        .source(SOURCE, move |key: String| demo_load(key, latency))
        .build()?;
    if let Some(dns) = &settings.dns {
        cache.discover(DnsDiscovery::new(dns.name.clone(), dns.port).interval(dns.interval))?;
    }
    Ok(cache)
}

// ---------------------------------------------------------------------------------------------
// Routes

async fn get_value(cache: &CacheHandle, key: &str) -> Response {
    match cache.get(SOURCE, key).await {
        Ok(value) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            value,
        )
            .into_response(),
        // The status of its kind (404 not found, 502 when the data source failed, ...) and a
        // text that names the source, not the key.
        Err(error) => error.into_response(),
    }
}

async fn get_by_path(cache: CacheHandle, Path(key): Path<String>) -> Response {
    get_value(&cache, &key).await
}

async fn get_by_query(
    cache: CacheHandle,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("key") {
        Some(key) => get_value(&cache, key).await,
        None => (
            StatusCode::BAD_REQUEST,
            "give the key as /get/{key} or /get?key=...\n",
        )
            .into_response(),
    }
}

fn app(cache: &Groupcache, prometheus: PrometheusHandle) -> Router {
    let (stats_cache, metrics_cache, health_cache) = (cache.clone(), cache.clone(), cache.clone());
    Router::new()
        .route("/get/{*key}", get(get_by_path))
        .route("/get", get(get_by_query))
        .route(
            "/stats",
            get(move || async move { Json(stats_cache.stats()) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                metrics_cache.record_metrics();
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    )],
                    prometheus.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                if health_cache.is_shutting_down() {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else {
                    (StatusCode::OK, "ok\n")
                }
            }),
        )
        // After the routes: the layer wraps them, serves the peer path and hands handlers a
        // CacheHandle.
        .layer(cache.layer())
}

// ---------------------------------------------------------------------------------------------
// Signals

#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

// ---------------------------------------------------------------------------------------------
// Main

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let settings = match NodeSettings::from_env() {
        Ok(settings) => settings,
        Err(error) => return config_error(&error),
    };
    let cache = match build_cache(&settings) {
        Ok(cache) => cache,
        Err(error) => return config_error(&error),
    };
    // Histograms as Prometheus histograms (`_bucket` series, which histogram_quantile can
    // add up over nodes) rather than the exporter's default summaries. Series not written for
    // ten minutes are dropped: those of a peer that left the ring (record_metrics stops
    // writing them), and the histograms of a peer not asked lately.
    let prometheus = match PrometheusBuilder::new()
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
            Some(Duration::from_secs(600)),
        )
        .set_buckets(HISTOGRAM_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
    {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("node: cannot install the Prometheus recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Registered before serving, so that an early signal is not lost.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("node: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("node: cannot listen on {}: {error}", settings.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(settings.listen);
    let stats = cache.stats();
    tracing::info!(
        listen = %local,
        self_url = stats.cluster.self_url.as_deref().unwrap_or("none"),
        peers = stats.cluster.count,
        dns = settings.dns.as_ref().map_or("none", |d| d.name.as_str()),
        "node started"
    );
    println!("listening on http://{local}");

    serve(listener, cache, prometheus, &mut signals).await
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("node: configuration error: {error}");
    ExitCode::from(2)
}

/// Serves until a signal, then shuts down: the cache within its shutdown timeout, then the
/// server.
async fn serve(
    listener: TcpListener,
    cache: Groupcache,
    prometheus: PrometheusHandle,
    signals: &mut Signals,
) -> ExitCode {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let drain_cache = cache.clone();
    // Runs inside the server while it still serves: peers get 503, own gets keep working.
    // The cache's shutdown is bounded by its own shutdown timeout.
    let graceful = async move {
        if stop_rx.await.is_err() {
            return;
        }
        let report = drain_cache.shutdown().await;
        if report.is_complete() {
            tracing::info!("no load in flight; stopping the HTTP server");
        } else {
            tracing::warn!(
                abandoned = report.abandoned(),
                "loads still running; stopping anyway"
            );
        }
        let _ = drained_tx.send(());
    };
    let server = axum::serve(listener, app(&cache, prometheus)).with_graceful_shutdown(graceful);
    let mut server = std::pin::pin!(server.into_future());

    let signal = tokio::select! {
        result = &mut server => {
            // The server ended without a signal: an accept error.
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("node: server failed: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        signal = signals.next() => signal,
    };
    tracing::info!(
        signal,
        "shutting down: refusing peer requests, draining loads"
    );
    let _ = stop_tx.send(());
    // The server stops once the cache has drained; it gets a few seconds more to close.
    let server_stop = async {
        let _ = drained_rx.await;
        tokio::time::sleep(SERVER_STOP_TIMEOUT).await;
    };

    tokio::select! {
        biased;
        result = &mut server => match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("node: server failed: {error}");
                ExitCode::FAILURE
            }
        },
        () = server_stop => {
            tracing::warn!("graceful shutdown did not finish in time; exiting");
            ExitCode::FAILURE
        }
        signal = signals.next() => {
            tracing::warn!(signal, "second signal during the shutdown; exiting at once");
            ExitCode::FAILURE
        }
    }
}
