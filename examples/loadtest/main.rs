//! A load test of the two hot paths of the cache, each beside a baseline measured in the same
//! run, in one process on 127.0.0.1.
//!
//! 1. **Remote hit, sequential latency.** Two nodes, A and B. A key owned by B is in B's main
//!    cache; A is built with `cache_bytes(0)`, so it never keeps a hot copy and every
//!    `a.handle().get(..)` is a real HTTP fetch from B, which answers from its cache. The
//!    baseline is a raw pooled hyper-util HTTP/1.1 client doing `GET` on a bare axum handler
//!    that returns the same bytes. Reported: p50, p99 and mean, and their ratios. An extra
//!    row measures the server's half alone: the raw client's `GET` of B's peer path.
//! 2. **Remote hit throughput**, the same two paths with 32 requests in flight: requests/s.
//!    Each of the 32 tasks asks for a key of its own (all owned by B and cached there), since
//!    concurrent gets of one key share one fetch. A node of this crate batches its gets to
//!    one peer once a few are in flight (natural batching), so this is where batching shows.
//!    Extra rows: 256 in flight, each on a key of its own, beside the baseline at 256 in flight;
//!    and all 32 tasks on one key, which share fetches, beside the same baseline. And
//!    `get_many` of 100 of those keys (one batched request to B): its sequential latency
//!    beside one remote hit's, and its keys per second with 8 calls in flight beside the raw
//!    client's requests per second with 8 in flight; and a remote hit timed right after each
//!    of a run of `get_many` calls (a node's single gets among its batched ones) beside a
//!    remote hit alone.
//! 3. **A cached get through the layer.** A front route `GET /user` on B, behind
//!    `.layer(cache.layer())`, whose handler takes a `CacheHandle` and returns a local hit,
//!    against a bare axum router (no layer) whose handler returns the same captured `Bytes`.
//!    Both are loaded by the raw hyper client with 32 requests in flight: requests/s.
//! 4. **Signed remote hits.** Phases 1 and 2 again on a second pair of nodes that share a peer
//!    secret, so that every fetch is signed with HMAC-SHA256 and checked by the owner (replay
//!    record included), beside the same raw baseline.
//! 5. **Against golang/groupcache.** Two Go nodes and two nodes of this crate (the `node`
//!    example), each in a process of its own, the same `/get?key=` front route and data
//!    source: a front request that is a remote hit, sequentially, and a front request that is
//!    a local hit, 32 in flight; the baseline column is the Go node (see `golang.rs`). Runs
//!    when the Go test peer is built (`tests/interop/gopeer/build.sh`) and the `node` example
//!    is built beside this program.
//! 6. **Nodes in processes of their own.** Node A in this process, nodes B and C in two
//!    processes of the `node` example, this process on one CPU and the others on another (see
//!    `processes.rs`): `get_many` of 100 keys spread over A, B and C beside one remote hit; 100
//!    gets at once of the same keys (with natural batching, and without) beside the
//!    `get_many`; a remote hit beside the raw client on a bare server in a process of its own;
//!    and the raw client's two requests at once to two such processes beside its one. Runs
//!    when the `node` example is built beside this program.
//!
//! In phases 1-4 the client and the servers share one multi-thread tokio runtime (default
//! worker count) and the machine's cores, so the absolute figures are of this machine and this
//! run; the ratios are the point. Subject and baseline are measured in interleaved slices (`S B B S S B B S`)
//! so that a noisy neighbour weighs on both alike.
//!
//! ```text
//! cargo build --release --example node && cargo run --release --example loadtest
//! cargo run --release --example loadtest -- --value-bytes 1024
//! cargo run --example loadtest -- --quick      # or LOADTEST_QUICK=1: about 10x fewer requests
//! cargo build --release --example node && cargo run --release --example loadtest -- --only-processes
//! ```
//!
//! Progress goes to stderr; the table goes to stdout. Any failed request or broken expectation
//! (a local load on A, a hot copy on A, a wrong value) ends the run with an error.

mod golang;
mod processes;

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_groupcache::{CacheHandle, Groupcache, SourceSnapshot};

/// The data source's name.
pub(crate) const USERS: &str = "users";
/// Requests in flight in phases 2, 3 and 4.
pub(crate) const IN_FLIGHT: usize = 32;
/// Requests in flight in phase 2's wide row, where natural batching has the most to gather.
const WIDE_IN_FLIGHT: usize = 256;
/// Keys of each `get_many` in phase 2's batch rows.
pub(crate) const MANY_KEYS: usize = 100;
/// `get_many` calls in flight in phase 2's batch throughput row.
const MANY_IN_FLIGHT: usize = 8;

pub(crate) type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What to run, from the command line and `LOADTEST_QUICK`.
#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    value_bytes: usize,
    /// Measured sequential gets per target in phases 1 and 4.
    sequential: usize,
    /// Unmeasured sequential gets per target before phase 1.
    sequential_warmup: usize,
    /// Measured time per target in phases 2, 3 and 4.
    duration: Duration,
    /// Unmeasured time per target before phases 2, 3 and 4.
    warmup: Duration,
    /// The Go test peer for phase 5, if it is built.
    go: Option<PathBuf>,
    /// Phase 6 alone.
    only_processes: bool,
    args: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut quick = std::env::var("LOADTEST_QUICK").is_ok_and(|v| v == "1" || v == "true");
        let mut value_bytes = 64;
        let (mut go, mut no_go, mut only_processes) = (None, false, false);
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--go" => go = Some(PathBuf::from(rest.next().ok_or("--go needs a path")?)),
                "--no-go" => no_go = true,
                "--only-processes" => only_processes = true,
                "--value-bytes" => {
                    let n = rest.next().ok_or("--value-bytes needs a number")?;
                    value_bytes = parse_bytes(n)?;
                }
                "-h" | "--help" => {
                    println!(
                        "usage: cargo run --release --example loadtest -- \
                         [--quick] [--value-bytes N] [--go PATH | --no-go] [--only-processes]\n\
                         LOADTEST_QUICK=1 is the same as --quick\n\
                         --go: the Go test peer for phase 5 (default: target/gopeer/gopeer \
                         if it exists; build it with tests/interop/gopeer/build.sh)\n\
                         --only-processes: phase 6 alone (needs the `node` example)"
                    );
                    std::process::exit(0);
                }
                other => match other.strip_prefix("--value-bytes=") {
                    Some(n) => value_bytes = parse_bytes(n)?,
                    None => return Err(format!("unknown argument {other:?}; try --help").into()),
                },
            }
        }
        let scale = if quick { 10 } else { 1 };
        let go = match (go, no_go) {
            (_, true) => None,
            (Some(path), false) => Some(path),
            (None, false) => Some(golang::default_binary()).filter(|path| path.is_file()),
        };
        Ok(Self {
            quick,
            value_bytes,
            sequential: 20_000 / scale,
            sequential_warmup: 2_000 / scale,
            duration: if quick {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(2)
            },
            warmup: if quick {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(250)
            },
            go,
            only_processes,
            args,
        })
    }

    /// The command that reproduces this run.
    fn command(&self) -> String {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        let mut command = format!("cargo run{profile} --example loadtest");
        if !self.args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&self.args.join(" "));
        }
        if self.quick && !self.args.iter().any(|a| a == "--quick") {
            command.insert_str(0, "LOADTEST_QUICK=1 ");
        }
        // `#[tokio::main]` reads it for the worker count.
        if let Ok(workers) = std::env::var("TOKIO_WORKER_THREADS") {
            command.insert_str(0, &format!("TOKIO_WORKER_THREADS={workers} "));
        }
        command
    }
}

fn parse_bytes(n: &str) -> Result<usize> {
    match n.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--value-bytes: {n:?} is not a positive number").into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // A baseline server of phase 6, started by the load test itself.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, address] = args.as_slice() {
        if flag == "--bare-server" {
            return match processes::bare_server(address).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("bare server: {error}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nerror: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> Result<()> {
    if settings.only_processes {
        let node_binary = golang::node_binary().ok_or(
            "--only-processes needs the `node` example beside this program \
             (cargo build --release --example node builds it)",
        )?;
        let figures = run_processes(&settings, node_binary, raw_client()).await?;
        println!();
        println!("tower-groupcache load test, phase 6 alone");
        println!("Command: {}", settings.command());
        println!();
        print_table(&figures.rows());
        println!();
        for note in processes::NOTES {
            println!("  {note}");
        }
        return Ok(());
    }
    let value = Bytes::from(
        (0..settings.value_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    progress(&format!(
        "starting nodes A and B and a bare axum server on 127.0.0.1 ({} byte values{})",
        settings.value_bytes,
        if settings.quick { ", quick mode" } else { "" },
    ));
    let setup = Setup::start(&value).await?;
    let client = raw_client();
    let expected = value.len();

    // Phase 1 and 2 targets: A's remote hit, and the raw client on the bare handler.
    let remote_hit = Target::RemoteHit {
        cache: setup.a.handle(),
        source: USERS,
        keys: setup.keys.clone(),
        expected,
    };
    let many = Target::GetMany {
        cache: setup.a.handle(),
        source: USERS,
        keys: setup.keys.clone(),
        expected,
    };
    let one_key = Target::RemoteHit {
        cache: setup.a.handle(),
        source: USERS,
        keys: setup.keys[..1].into(),
        expected,
    };
    let raw = Target::Http {
        client: client.clone(),
        uri: format!("{}/user", setup.bare_url).parse()?,
        expected,
    };
    // Phase 1's breakdown: the raw client on B's peer path, the server's half of a remote hit.
    let peer_uri: Uri = format!("{}/_groupcache/{USERS}/{}", setup.b_url, setup.keys[0]).parse()?;
    let peer_reply = client
        .get(peer_uri.clone())
        .await?
        .into_body()
        .collect()
        .await?;
    let peer_path = Target::Http {
        client: client.clone(),
        uri: peer_uri,
        expected: peer_reply.to_bytes().len(),
    };
    // Phase 3 targets: the front route behind the layer on B, and the same bare handler.
    let front = Target::Http {
        client: client.clone(),
        uri: format!("{}/user", setup.b_url).parse()?,
        expected,
    };

    progress("phase 1/6, extra: the raw client on B's peer path, sequential");
    let (server_latency, server_raw_latency) = sequential_pair(
        &peer_path,
        &raw,
        settings.sequential_warmup,
        settings.sequential,
    )
    .await?;

    let a_before = users(&setup.a);
    let b_before = users(&setup.b);

    progress(&format!(
        "phase 1/6: remote hit, sequential: {} gets per target after {} warm-up",
        settings.sequential, settings.sequential_warmup
    ));
    let (hit_latency, raw_latency) = sequential_pair(
        &remote_hit,
        &raw,
        settings.sequential_warmup,
        settings.sequential,
    )
    .await?;
    progress(&format!(
        "phase 2/6: remote hit, {IN_FLIGHT} in flight, {:.2?} per target",
        settings.duration
    ));
    let (hit_rate, raw_rate) =
        throughput_pair(&remote_hit, &raw, settings.warmup, settings.duration).await?;

    // What phases 1 and 2 did on A and B: every get a fetch from B, answered from its cache.
    let (a_after, b_after) = (users(&setup.a), users(&setup.b));
    let a_peer_loads = a_after.stats.peer_loads - a_before.stats.peer_loads;
    let a_local_loads = a_after.stats.local_loads - a_before.stats.local_loads;
    let a_peer_errors = a_after.stats.peer_errors - a_before.stats.peer_errors;
    let b_served = b_after.stats.server_requests - b_before.stats.server_requests;
    let b_hits = b_after.stats.cache_hits - b_before.stats.cache_hits;
    let b_loads = b_after.stats.local_loads - b_before.stats.local_loads;
    check(
        a_local_loads == 0 && a_peer_errors == 0,
        format!("A loaded locally {a_local_loads} times, with {a_peer_errors} peer errors"),
    )?;
    check(
        a_after.hot_cache.items == 0 && a_after.main_cache.items == 0,
        "A kept a copy of a key; its remote gets were not all remote hits",
    )?;
    check(
        b_loads == 0 && b_hits == b_served && b_served == a_peer_loads,
        format!(
            "B served {b_served} peer requests with {b_hits} cache hits and {b_loads} loads, \
             for {a_peer_loads} peer loads on A"
        ),
    )?;

    progress(&format!(
        "phase 2/6, extra: {WIDE_IN_FLIGHT} in flight, {:.2?} per target",
        settings.duration
    ));
    let (wide_rate, wide_raw_rate) = throughput_pair_with(
        &remote_hit,
        &raw,
        settings.warmup,
        settings.duration,
        WIDE_IN_FLIGHT,
    )
    .await?;

    progress(&format!(
        "phase 2/6, extra: get_many of {MANY_KEYS} keys, sequential, beside a remote hit"
    ));
    let (many_latency, many_one_latency) = sequential_pair(
        &many,
        &remote_hit,
        settings.sequential_warmup / 10,
        settings.sequential / 10,
    )
    .await?;
    progress(&format!(
        "phase 2/6, extra: a remote hit right after each get_many of {MANY_KEYS} keys, \
         sequential, beside a remote hit alone"
    ));
    let after_many = Target::RemoteHitAfterMany {
        hit: Box::new(remote_hit.clone()),
        many: Box::new(many.clone()),
    };
    let (after_many_latency, alone_latency) = sequential_pair(
        &after_many,
        &remote_hit,
        settings.sequential_warmup / 10,
        settings.sequential / 10,
    )
    .await?;
    progress(&format!(
        "phase 2/6, extra: get_many of {MANY_KEYS} keys, {MANY_IN_FLIGHT} in flight, {:.2?} per \
         target",
        settings.duration
    ));
    let (many_calls, many_raw_rate) = throughput_pair_with(
        &many,
        &raw,
        settings.warmup,
        settings.duration,
        MANY_IN_FLIGHT,
    )
    .await?;
    // Each call is MANY_KEYS gets.
    let many_rate = many_calls.times(MANY_KEYS as u64);

    progress(&format!(
        "phase 2/6, extra: all {IN_FLIGHT} tasks on one key, {:.2?}",
        settings.duration
    ));
    let a_mid = users(&setup.a);
    let mut one_key_rate = Rate::default();
    one_key_rate.add(throughput(&one_key, settings.duration).await?);
    let one_key_fetches = users(&setup.a).stats.peer_loads - a_mid.stats.peer_loads;

    progress(&format!(
        "phase 3/6: front route through the layer (local hit), {IN_FLIGHT} in flight, \
         {:.2?} per target",
        settings.duration
    ));
    let b_mid = users(&setup.b);
    let (front_rate, bare_rate) =
        throughput_pair(&front, &raw, settings.warmup, settings.duration).await?;
    let b_end = users(&setup.b);
    check(
        b_end.stats.local_loads == b_mid.stats.local_loads
            && b_end.stats.gets - b_mid.stats.gets
                == b_end.stats.cache_hits - b_mid.stats.cache_hits,
        "the front route on B did not answer every request from B's main cache",
    )?;

    progress(&format!(
        "phase 4/6: remote hit with signed peer requests: {} sequential gets, then {IN_FLIGHT} \
         in flight, {:.2?} per target",
        settings.sequential, settings.duration
    ));
    let signed = &setup.signed;
    let signed_hit = Target::RemoteHit {
        cache: signed.requester.handle(),
        source: USERS,
        keys: signed.keys.clone(),
        expected,
    };
    let (requester_before, owner_before) = (users(&signed.requester), users(&signed.owner));
    let (signed_latency, signed_raw_latency) = sequential_pair(
        &signed_hit,
        &raw,
        settings.sequential_warmup,
        settings.sequential,
    )
    .await?;
    let (signed_rate, signed_raw_rate) =
        throughput_pair(&signed_hit, &raw, settings.warmup, settings.duration).await?;
    let (requester_after, owner_after) = (users(&signed.requester), users(&signed.owner));
    let signed_fetches = requester_after.stats.peer_loads - requester_before.stats.peer_loads;
    check(
        requester_after.stats.local_loads == requester_before.stats.local_loads
            && requester_after.stats.peer_errors == requester_before.stats.peer_errors
            && owner_after.stats.server_requests - owner_before.stats.server_requests
                == signed_fetches,
        "a signed peer request was refused or loaded locally",
    )?;
    let go = match (settings.go.clone(), golang::node_binary()) {
        // On a worker thread, as the other phases' measuring tasks.
        (Some(go_binary), Some(node_binary)) => Some(
            tokio::spawn(golang::run(
                go_binary,
                node_binary,
                client.clone(),
                settings.sequential,
                settings.sequential_warmup,
                settings.duration,
            ))
            .await
            .map_err(|error| format!("phase 5 failed: {error}"))??,
        ),
        (None, _) => {
            progress(
                "phase 5/6 skipped: no Go test peer (tests/interop/gopeer/build.sh builds it)",
            );
            None
        }
        (Some(_), None) => {
            progress(
                "phase 5/6 skipped: no `node` example beside this program \
                 (cargo build --release --example node builds it)",
            );
            None
        }
    };
    let processes = match golang::node_binary() {
        Some(node_binary) => Some(run_processes(&settings, node_binary, client.clone()).await?),
        None => {
            progress(
                "phase 6/6 skipped: no `node` example beside this program \
                 (cargo build --release --example node builds it)",
            );
            None
        }
    };
    progress("done");

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let report = Report {
        settings: &settings,
        workers,
        cpus,
        hit_latency,
        raw_latency,
        server_latency,
        server_raw_latency,
        hit_rate,
        raw_rate,
        wide_rate,
        wide_raw_rate,
        many_latency,
        many_one_latency,
        after_many_latency,
        alone_latency,
        many_rate,
        many_raw_rate,
        one_key_rate,
        one_key_fetches,
        front_rate,
        bare_rate,
        a_peer_loads,
        b_hits,
        signed_latency,
        signed_raw_latency,
        signed_rate,
        signed_raw_rate,
        signed_fetches,
        go,
        processes,
    };
    report.print();
    Ok(())
}

/// Phase 6, on a worker thread as the other phases' measuring tasks.
async fn run_processes(
    settings: &Settings,
    node_binary: PathBuf,
    client: HttpClient,
) -> Result<processes::Figures> {
    tokio::spawn(processes::run(
        node_binary,
        client,
        settings.sequential / 10,
        settings.sequential_warmup / 10,
    ))
    .await
    .map_err(|error| format!("phase 6 failed: {error}"))?
}

/// Nodes A and B, nodes C and D (the same pair, with a peer secret), and the bare server, all
/// serving.
struct Setup {
    a: Groupcache,
    b: Groupcache,
    b_url: String,
    bare_url: String,
    /// `WIDE_IN_FLIGHT` keys owned by B, in B's main cache.
    keys: Arc<[Arc<str>]>,
    /// A and B again, but every peer request signed by C and checked by D.
    signed: Pair,
}

/// A node that caches nothing and the node that owns `keys` and has them cached.
struct Pair {
    requester: Groupcache,
    owner: Groupcache,
    keys: Arc<[Arc<str>]>,
}

impl Pair {
    /// Starts both nodes' servers and warms the owner; `secret` signs the peer requests
    /// (without one, the peer path is open).
    async fn start(value: &Bytes, secret: Option<&str>) -> Result<Self> {
        let requester_listener = TcpListener::bind("127.0.0.1:0").await?;
        let owner_listener = TcpListener::bind("127.0.0.1:0").await?;
        let requester_url = format!("http://{}", requester_listener.local_addr()?);
        let owner_url = format!("http://{}", owner_listener.local_addr()?);
        let peers = [requester_url.clone(), owner_url.clone()];
        let builder = |url: &str| {
            let builder = Groupcache::builder()
                .self_url(url)
                .peers(&peers)
                .source(USERS, constant_source(value.clone()));
            match secret {
                Some(secret) => builder.peer_secret(secret),
                None => builder.open_peer_path(),
            }
        };
        let requester = builder(&requester_url).cache_bytes(0).build()?;
        let owner = builder(&owner_url).build()?;
        let keys = owned_keys(&requester, &owner, &owner_url)?;
        serve(requester_listener, Router::new().layer(requester.layer()));
        serve(owner_listener, Router::new().layer(owner.layer()));
        warm(&owner, &keys, value).await?;
        Ok(Self {
            requester,
            owner,
            keys,
        })
    }
}

/// `WIDE_IN_FLIGHT` keys that `owner_url` owns, by the rings of both nodes.
fn owned_keys(a: &Groupcache, b: &Groupcache, owner_url: &str) -> Result<Arc<[Arc<str>]>> {
    let ring = a.ring();
    let keys: Arc<[Arc<str>]> = (0..100_000)
        .map(|i| format!("user:{i}"))
        .filter(|key| ring.owner(key) == Some(owner_url))
        .take(WIDE_IN_FLIGHT)
        .map(Arc::from)
        .collect();
    check(
        keys.len() == WIDE_IN_FLIGHT,
        "the owner owns too few of the first 100,000 keys",
    )?;
    check(
        keys.iter()
            .all(|key| b.ring().owner(key) == Some(owner_url)),
        "the two nodes disagree on the owner of a key",
    )?;
    Ok(keys)
}

/// Serves `app` on `listener` with TCP_NODELAY, as the peer client sets it.
pub(crate) fn serve(listener: TcpListener, app: Router) {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("[loadtest] a server stopped: {error}");
        }
    });
}

/// The one load of each key in the whole run, on its owner.
async fn warm(owner: &Groupcache, keys: &[Arc<str>], value: &Bytes) -> Result<()> {
    for key in keys {
        let warmed = owner.handle().get(USERS, key).await?;
        check(warmed == *value, "a warm-up get returned a wrong value")?;
    }
    check(
        users(owner).main_cache.items == keys.len() as u64,
        "the owner did not keep every key in its main cache",
    )
}

impl Setup {
    async fn start(value: &Bytes) -> Result<Self> {
        // Bind first: every node needs every node's URL before its cache is built.
        let a_listener = TcpListener::bind("127.0.0.1:0").await?;
        let b_listener = TcpListener::bind("127.0.0.1:0").await?;
        let bare_listener = TcpListener::bind("127.0.0.1:0").await?;
        let a_url = format!("http://{}", a_listener.local_addr()?);
        let b_url = format!("http://{}", b_listener.local_addr()?);
        let bare_url = format!("http://{}", bare_listener.local_addr()?);
        let peers = [a_url.clone(), b_url.clone()];

        // A caches nothing, neither main nor hot: each of its gets of B's key goes to B.
        let a = Groupcache::builder()
            .open_peer_path()
            .self_url(a_url.as_str())
            .peers(&peers)
            .cache_bytes(0)
            .source(USERS, constant_source(value.clone()))
            .build()?;
        let b = Groupcache::builder()
            .open_peer_path()
            .self_url(b_url.as_str())
            .peers(&peers)
            .source(USERS, constant_source(value.clone()))
            .build()?;

        let keys = owned_keys(&a, &b, &b_url)?;

        // The front route of phase 3, on B: a local hit through the layer.
        let front_key = keys[0].clone();
        let b_app = Router::new()
            .route(
                "/user",
                get(move |cache: CacheHandle| {
                    let key = front_key.clone();
                    async move { cache.get(USERS, &key).await }
                }),
            )
            .layer(b.layer());
        let a_app = Router::new().layer(a.layer());
        // The baseline: the same bytes, captured, with no layer.
        let bare_value = value.clone();
        let bare_app = Router::new().route(
            "/user",
            get(move || {
                let value = bare_value.clone();
                async move { value }
            }),
        );
        serve(a_listener, a_app);
        serve(b_listener, b_app);
        serve(bare_listener, bare_app);
        warm(&b, &keys, value).await?;
        let signed = Pair::start(value, Some("loadtest peer secret, 32 bytes or more")).await?;
        Ok(Self {
            a,
            b,
            b_url,
            bare_url,
            keys,
            signed,
        })
    }
}

/// A data source that returns `value` for every key.
fn constant_source(value: Bytes) -> impl tower_groupcache::Source {
    move |_key: String| {
        let value = value.clone();
        async move { Ok::<_, std::convert::Infallible>(value) }
    }
}

fn users(cache: &Groupcache) -> SourceSnapshot {
    cache
        .stats()
        .source(USERS)
        .cloned()
        .expect("every node registers the users source")
}

/// A raw pooled HTTP/1.1 client, the baseline's and the load generator's.
fn raw_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One thing to call in a loop.
#[derive(Clone)]
pub(crate) enum Target {
    /// `cache.get(source, key)`, the caller's task number choosing one of the keys.
    RemoteHit {
        cache: CacheHandle,
        source: &'static str,
        keys: Arc<[Arc<str>]>,
        expected: usize,
    },
    /// `cache.get_many(source, ..)` of [`MANY_KEYS`] of the keys, from a place the caller's
    /// task number chooses.
    GetMany {
        cache: CacheHandle,
        source: &'static str,
        keys: Arc<[Arc<str>]>,
        expected: usize,
    },
    /// `cache.get(source, key)` of every key at once (phase 6's baseline of a `get_many`).
    Gets {
        cache: CacheHandle,
        source: &'static str,
        keys: Arc<[Arc<str>]>,
        expected: usize,
    },
    /// Every target once, all at once (phase 6's raw client fanning out to two servers).
    Join(Arc<[Target]>),
    /// A remote hit, as [`Target::RemoteHit`], each made right after an untimed `get_many`
    /// of [`MANY_KEYS`] keys (see [`Target::prepare`]): a single get on a node that also
    /// sends batched requests.
    RemoteHitAfterMany { hit: Box<Target>, many: Box<Target> },
    /// `GET uri`, the whole body read.
    Http {
        client: HttpClient,
        uri: Uri,
        expected: usize,
    },
}

impl Target {
    /// What comes before each timed call, untimed: the `get_many` of
    /// [`Target::RemoteHitAfterMany`]; nothing for the others.
    pub(crate) async fn prepare(&self, task: usize) -> Result<()> {
        match self {
            Self::RemoteHitAfterMany { many, .. } => Box::pin(many.call(task)).await,
            _ => Ok(()),
        }
    }

    /// One call, by the load task numbered `task`.
    pub(crate) async fn call(&self, task: usize) -> Result<()> {
        match self {
            Self::RemoteHitAfterMany { hit, .. } => Box::pin(hit.call(task)).await,
            Self::RemoteHit {
                cache,
                source,
                keys,
                expected,
            } => {
                let key = &keys[task % keys.len()];
                let value = cache
                    .get(source, key)
                    .await
                    .map_err(|error| format!("get {key}: {error}"))?;
                // Checked without formatting anything on success: this is the measured loop.
                if value.len() != *expected {
                    return Err(format!("get {key}: {} bytes, not {expected}", value.len()).into());
                }
                Ok(())
            }
            Self::GetMany {
                cache,
                source,
                keys,
                expected,
            } => {
                let start = (task * MANY_KEYS) % (keys.len() - MANY_KEYS + 1);
                let asked = &keys[start..start + MANY_KEYS];
                let values = cache
                    .get_many(source, asked)
                    .await
                    .map_err(|error| format!("get_many: {error}"))?;
                for (key, value) in asked.iter().zip(values) {
                    let value = value.map_err(|error| format!("get_many, {key}: {error}"))?;
                    if value.len() != *expected {
                        let len = value.len();
                        return Err(format!("get_many, {key}: {len} bytes, not {expected}").into());
                    }
                }
                Ok(())
            }
            Self::Gets {
                cache,
                source,
                keys,
                expected,
            } => {
                let gets = keys.iter().map(|key| async move {
                    let value = cache
                        .get(source, key)
                        .await
                        .map_err(|error| format!("get {key}: {error}"))?;
                    if value.len() != *expected {
                        let len = value.len();
                        return Err(format!("get {key}: {len} bytes, not {expected}"));
                    }
                    Ok(())
                });
                for result in futures_util::future::join_all(gets).await {
                    result?;
                }
                Ok(())
            }
            Self::Join(targets) => {
                let calls = targets.iter().map(|target| Box::pin(target.call(task)));
                for result in futures_util::future::join_all(calls).await {
                    result?;
                }
                Ok(())
            }
            Self::Http {
                client,
                uri,
                expected,
            } => {
                let response = client
                    .get(uri.clone())
                    .await
                    .map_err(|error| format!("GET {uri}: {error}"))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|error| format!("GET {uri}: reading the body: {error}"))?
                    .to_bytes();
                if status != StatusCode::OK {
                    let body = String::from_utf8_lossy(&body);
                    return Err(format!("GET {uri}: {status}: {body}").into());
                }
                if body.len() != *expected {
                    return Err(format!("GET {uri}: {} bytes, not {expected}", body.len()).into());
                }
                Ok(())
            }
        }
    }
}

/// `n` sequential calls of `target`, each timed, in nanoseconds. Runs as a task of its own so
/// that it is on a worker thread, as a request handler would be.
async fn sequential(target: &Target, n: usize) -> Result<Vec<u64>> {
    let target = target.clone();
    tokio::spawn(async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            target.prepare(0).await?;
            let started = Instant::now();
            target.call(0).await?;
            samples.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        Ok(samples)
    })
    .await
    .map_err(|error| format!("a measuring task failed: {error}"))?
}

/// The order of the slices of a paired measurement: subject and baseline alike in number and
/// in position, so that a drift in the machine's load weighs on both (`S B B S S B B S`).
pub(crate) const SLICES: [bool; 8] = [true, false, false, true, true, false, false, true];

/// Phase 1's measurement: subject and baseline, warmed up, then in interleaved slices.
pub(crate) async fn sequential_pair(
    subject: &Target,
    baseline: &Target,
    warmup: usize,
    n: usize,
) -> Result<(Latency, Latency)> {
    sequential(subject, warmup).await?;
    sequential(baseline, warmup).await?;
    let per_slice = n.div_ceil(SLICES.len() / 2);
    let (mut s, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for is_subject in SLICES {
        let (target, samples) = if is_subject {
            (subject, &mut s)
        } else {
            (baseline, &mut b)
        };
        let count = per_slice.min(n - samples.len());
        samples.extend(sequential(target, count).await?);
    }
    Ok((Latency::of(s), Latency::of(b)))
}

/// `IN_FLIGHT` tasks calling `target` in a loop for `duration`: requests and elapsed time.
async fn throughput(target: &Target, duration: Duration) -> Result<(u64, Duration)> {
    throughput_with(target, duration, IN_FLIGHT).await
}

/// `in_flight` tasks calling `target` in a loop for `duration`.
async fn throughput_with(
    target: &Target,
    duration: Duration,
    in_flight: usize,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for task in 0..in_flight {
        let target = target.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                target.call(task).await?;
                done += 1;
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(done)
        });
    }
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        total += joined.map_err(|error| format!("a load task failed: {error}"))??;
    }
    Ok((total, started.elapsed()))
}

/// Phases 2 and 3: subject and baseline, warmed up, then in interleaved slices; requests/s.
pub(crate) async fn throughput_pair(
    subject: &Target,
    baseline: &Target,
    warmup: Duration,
    duration: Duration,
) -> Result<(Rate, Rate)> {
    throughput_pair_with(subject, baseline, warmup, duration, IN_FLIGHT).await
}

/// [`throughput_pair`] with `in_flight` tasks.
async fn throughput_pair_with(
    subject: &Target,
    baseline: &Target,
    warmup: Duration,
    duration: Duration,
    in_flight: usize,
) -> Result<(Rate, Rate)> {
    throughput_with(subject, warmup, in_flight).await?;
    throughput_with(baseline, warmup, in_flight).await?;
    let slice = duration / (SLICES.len() / 2) as u32;
    let (mut s, mut b) = (Rate::default(), Rate::default());
    for is_subject in SLICES {
        let (target, rate) = if is_subject {
            (subject, &mut s)
        } else {
            (baseline, &mut b)
        };
        rate.add(throughput_with(target, slice, in_flight).await?);
    }
    Ok((s, b))
}

/// Latency figures of sequential calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    count: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    mean: Duration,
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
            Duration::from_nanos(samples.get(i).copied().unwrap_or(0))
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let mean = sum / samples.len().max(1) as u128;
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            mean: Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX)),
        }
    }
}

/// Requests and time, summed over measurements.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rate {
    requests: u64,
    elapsed: Duration,
}

impl Rate {
    fn add(&mut self, (requests, elapsed): (u64, Duration)) {
        self.requests += requests;
        self.elapsed += elapsed;
    }

    /// The same time, each request counted `n` times.
    fn times(self, n: u64) -> Self {
        Self {
            requests: self.requests * n,
            elapsed: self.elapsed,
        }
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Everything the table needs.
struct Report<'a> {
    settings: &'a Settings,
    workers: usize,
    cpus: usize,
    hit_latency: Latency,
    raw_latency: Latency,
    server_latency: Latency,
    server_raw_latency: Latency,
    hit_rate: Rate,
    raw_rate: Rate,
    wide_rate: Rate,
    wide_raw_rate: Rate,
    one_key_rate: Rate,
    one_key_fetches: u64,
    many_latency: Latency,
    many_one_latency: Latency,
    /// A remote hit right after a `get_many`, and one alone, in the same slices.
    after_many_latency: Latency,
    alone_latency: Latency,
    many_rate: Rate,
    many_raw_rate: Rate,
    front_rate: Rate,
    bare_rate: Rate,
    a_peer_loads: u64,
    b_hits: u64,
    signed_latency: Latency,
    signed_raw_latency: Latency,
    signed_rate: Rate,
    signed_raw_rate: Rate,
    signed_fetches: u64,
    go: Option<golang::Figures>,
    processes: Option<processes::Figures>,
}

impl Report<'_> {
    fn print(&self) {
        let s = self.settings;
        let build = if cfg!(debug_assertions) {
            "debug build: figures are NOT representative"
        } else {
            "release build"
        };
        println!();
        println!("tower-groupcache load test");
        println!(
            "Figures from one run on this machine ({} CPUs, {build}), not a benchmark suite.",
            self.cpus
        );
        println!(
            "Client and servers share one process and one tokio multi-thread runtime \
             ({} workers) on 127.0.0.1;",
            self.workers
        );
        println!("each figure is beside a baseline measured in the same run. Ratios matter.");
        println!("Command: {}", s.command());
        println!(
            "Value: {} bytes. Phase 1: {} sequential gets per side after {} warm-up. \
             Phases 2-3: {IN_FLIGHT} in flight, {:.2?} per side.",
            s.value_bytes, s.sequential, s.sequential_warmup, s.duration
        );
        println!();

        let (h, r) = (&self.hit_latency, &self.raw_latency);
        let rows: Vec<[String; 5]> = vec![
            row(
                "1. remote hit, sequential",
                "p50",
                us(h.p50),
                us(r.p50),
                ratio_d(h.p50, r.p50),
            ),
            row("", "p99", us(h.p99), us(r.p99), ratio_d(h.p99, r.p99)),
            row("", "mean", us(h.mean), us(r.mean), ratio_d(h.mean, r.mean)),
            row(
                "   (extra) raw client on B's peer path",
                "p50",
                us(self.server_latency.p50),
                us(self.server_raw_latency.p50),
                ratio_d(self.server_latency.p50, self.server_raw_latency.p50),
            ),
            row(
                "2. remote hit, 32 in flight",
                "req/s",
                rps(&self.hit_rate),
                rps(&self.raw_rate),
                ratio(self.hit_rate.per_second(), self.raw_rate.per_second()),
            ),
            row(
                "   (extra) 256 in flight",
                "req/s",
                rps(&self.wide_rate),
                rps(&self.wide_raw_rate),
                ratio(self.wide_rate.per_second(), self.wide_raw_rate.per_second()),
            ),
            row(
                "   (extra) get_many of 100 keys, sequential",
                "p50",
                us(self.many_latency.p50),
                us(self.many_one_latency.p50),
                ratio_d(self.many_latency.p50, self.many_one_latency.p50),
            ),
            row(
                "     (baseline: ONE remote hit, sequential)",
                "p99",
                us(self.many_latency.p99),
                us(self.many_one_latency.p99),
                ratio_d(self.many_latency.p99, self.many_one_latency.p99),
            ),
            row(
                "   (extra) remote hit right after a get_many",
                "p50",
                us(self.after_many_latency.p50),
                us(self.alone_latency.p50),
                ratio_d(self.after_many_latency.p50, self.alone_latency.p50),
            ),
            row(
                "     (baseline: a remote hit alone)",
                "p99",
                us(self.after_many_latency.p99),
                us(self.alone_latency.p99),
                ratio_d(self.after_many_latency.p99, self.alone_latency.p99),
            ),
            row(
                "   (extra) get_many of 100, 8 in flight",
                "keys/s",
                rps(&self.many_rate),
                rps(&self.many_raw_rate),
                ratio(self.many_rate.per_second(), self.many_raw_rate.per_second()),
            ),
            row(
                "   (extra) 32 in flight, ONE key",
                "req/s",
                rps(&self.one_key_rate),
                rps(&self.raw_rate),
                ratio(self.one_key_rate.per_second(), self.raw_rate.per_second()),
            ),
            row(
                "3. front route via layer (local hit)",
                "req/s",
                rps(&self.front_rate),
                rps(&self.bare_rate),
                ratio(self.front_rate.per_second(), self.bare_rate.per_second()),
            ),
            row(
                "4. remote hit, signed, sequential",
                "p50",
                us(self.signed_latency.p50),
                us(self.signed_raw_latency.p50),
                ratio_d(self.signed_latency.p50, self.signed_raw_latency.p50),
            ),
            row(
                "",
                "p99",
                us(self.signed_latency.p99),
                us(self.signed_raw_latency.p99),
                ratio_d(self.signed_latency.p99, self.signed_raw_latency.p99),
            ),
            row(
                "   signed, 32 in flight",
                "req/s",
                rps(&self.signed_rate),
                rps(&self.signed_raw_rate),
                ratio(
                    self.signed_rate.per_second(),
                    self.signed_raw_rate.per_second(),
                ),
            ),
        ];
        let mut rows = rows;
        if let Some(go) = &self.go {
            rows.extend([
                row(
                    "5. vs golang/groupcache: front + remote",
                    "p50",
                    us(go.our_remote.p50),
                    us(go.go_remote.p50),
                    ratio_d(go.our_remote.p50, go.go_remote.p50),
                ),
                row(
                    "   hit, sequential (baseline: Go)",
                    "p99",
                    us(go.our_remote.p99),
                    us(go.go_remote.p99),
                    ratio_d(go.our_remote.p99, go.go_remote.p99),
                ),
                row(
                    "   front, local hit, 32 in flight",
                    "req/s",
                    rps(&go.our_local),
                    rps(&go.go_local),
                    ratio(go.our_local.per_second(), go.go_local.per_second()),
                ),
                row(
                    "   local hit in process, 1 thread",
                    "ns/get",
                    format!("{:.1} ns", go.our_hits.one_thread_ns),
                    format!("{:.1} ns", go.go_hits.one_thread_ns),
                    ratio(go.our_hits.one_thread_ns, go.go_hits.one_thread_ns),
                ),
                row(
                    "   local hit in process, 1 thread",
                    "gets/s",
                    millions(go.our_hits.one_thread_per_s),
                    millions(go.go_hits.one_thread_per_s),
                    ratio(go.our_hits.one_thread_per_s, go.go_hits.one_thread_per_s),
                ),
                row(
                    "   local hit in process, 2 threads",
                    "gets/s",
                    millions(go.our_hits.two_threads_per_s),
                    millions(go.go_hits.two_threads_per_s),
                    ratio(go.our_hits.two_threads_per_s, go.go_hits.two_threads_per_s),
                ),
            ]);
        }
        if let Some(processes) = &self.processes {
            rows.extend(processes.rows());
        }
        print_table(&rows);
        println!();
        println!(
            "  ratio = tower-groupcache / baseline (latency: lower is better; req/s: higher is better)"
        );
        let notes = [
            "1, 2:  subject `a.handle().get(\"users\", key)` on node A (cache_bytes 0) for keys"
                .to_owned(),
            "       that node B owns and has cached; baseline: raw hyper-util client GET -> bare"
                .to_owned(),
            "       axum handler returning the same Bytes. Phase 2 gives each task its own key."
                .to_owned(),
            format!(
                "       Phases 1-2: A made {} peer fetches; B answered {} from its cache, no load.",
                self.a_peer_loads, self.b_hits
            ),
            "extra: the raw client's GET of B's peer path (/_groupcache/users/{key}): the"
                .to_owned(),
            "       server's half of a remote hit, beside the same baseline in its own slices."
                .to_owned(),
            "extra: 256 tasks on keys of their own; baseline the raw client at 256 in flight."
                .to_owned(),
            "       Both phase-2 subjects batch: past 4 gets in flight to B, A's further gets"
                .to_owned(),
            "       go together in one batched request (natural batching).".to_owned(),
            "extra: A's get_many of 100 keys B owns and has cached (one batched request),"
                .to_owned(),
            "       sequentially beside one remote hit, then 8 calls in flight, in keys/s,"
                .to_owned(),
            "       beside the raw client at 8 in flight (requests/s). And a remote hit".to_owned(),
            "       timed right after each of A's get_many calls (untimed), beside a".to_owned(),
            "       remote hit alone: a node's single gets among its batched ones.".to_owned(),
            format!(
                "extra: all 32 tasks get one key: {} gets shared {} fetches to B (singleflight),",
                self.one_key_rate.requests, self.one_key_fetches
            ),
            "       so this is not a remote-hit rate; same baseline as phase 2.".to_owned(),
            "3:     subject GET /user on B: handler(CacheHandle) -> cache.get, a main-cache hit,"
                .to_owned(),
            "       behind .layer(cache.layer()); baseline GET /user on a bare router (no layer)"
                .to_owned(),
            "       returning a captured Bytes. Both driven by the raw hyper-util client."
                .to_owned(),
            "4:     as 1 and 2 on another pair of nodes that share a peer secret: each fetch is"
                .to_owned(),
            format!(
                "       signed (HMAC-SHA256) and checked by the owner; {} signed fetches, none refused.",
                self.signed_fetches
            ),
        ];
        let go_notes = [
            "5:     GET /get?key=K over HTTP on two Go nodes (golang/groupcache from Debian's",
            "       packages, tests/interop/gopeer) and on two nodes of this crate, same source,",
            "       64 MiB each; remote: keys the other node owns and has cached, each asked once;",
            "       local: one key on its owner. The baseline column is the Go node. In process:",
            "       Group.Get (gopeer -bench-local) and CacheHandle::get, 100,000 keys, 1,000 per",
            "       thread; the mean of two runs each, in the order Go, ours, ours, Go.",
        ];
        let go_notes = if self.go.is_some() {
            &go_notes[..]
        } else {
            &[]
        };
        let processes_notes = if self.processes.is_some() {
            processes::NOTES
        } else {
            &[]
        };
        let notes: Vec<String> = notes
            .into_iter()
            .chain(
                go_notes
                    .iter()
                    .chain(processes_notes)
                    .map(|n| (*n).to_owned()),
            )
            .collect();
        for note in notes {
            println!("  {note}");
        }
        println!(
            "  Requests: phase 1 {} + {}, phase 2 {} + {}, phase 3 {} + {}, phase 4 {} + {} and {} + {}.",
            h.count,
            r.count,
            self.hit_rate.requests,
            self.raw_rate.requests,
            self.front_rate.requests,
            self.bare_rate.requests,
            self.signed_latency.count,
            self.signed_raw_latency.count,
            self.signed_rate.requests,
            self.signed_raw_rate.requests,
        );
    }
}

/// The table of `rows`, under its header, each column as wide as its widest cell.
fn print_table(rows: &[[String; 5]]) {
    let header = row(
        "measurement",
        "metric",
        "tower-groupcache".into(),
        "baseline".into(),
        "ratio".into(),
    );
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            std::iter::once(&header)
                .chain(rows)
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String; 5]| {
        println!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    };
    line(&header);
    let total: usize = widths.iter().sum::<usize>() + 2 * 4;
    println!("  {}", "-".repeat(total));
    for r in rows {
        line(r);
    }
}

pub(crate) fn row(a: &str, b: &str, c: String, d: String, e: String) -> [String; 5] {
    [a.to_owned(), b.to_owned(), c, d, e]
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn rps(rate: &Rate) -> String {
    let n = rate.per_second().round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millions(per_second: f64) -> String {
    format!("{:.2} M", per_second / 1e6)
}

fn ratio(subject: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}x", subject / baseline)
    } else {
        "n/a".to_owned()
    }
}

pub(crate) fn ratio_d(subject: Duration, baseline: Duration) -> String {
    ratio(subject.as_secs_f64(), baseline.as_secs_f64())
}

pub(crate) fn progress(text: &str) {
    eprintln!("[loadtest] {text}");
}

/// An error with `message` unless `claim` holds. The message is built before the call: use it
/// outside the measured loops.
pub(crate) fn check(claim: bool, message: impl Into<String>) -> Result<()> {
    if claim {
        Ok(())
    } else {
        Err(message.into().into())
    }
}
