//! Phase 6 of the load test: the nodes in processes of their own.
//!
//! In phases 1-4 every node is in this process, on one runtime. A remote hit there stays on
//! the worker that asked: the owner's half runs on the same thread, and no sleeping thread is
//! woken, which no deployment sees. A call that fans out to two owners at once, on the other
//! hand, wakes the second worker. So those phases price a single remote hit low and a fan-out
//! high. Here, as in a deployment where each replica is a process (a pod) of its own, nodes B
//! and C are two processes of the `node` example (an open peer path, 64 MiB, its `demo` data
//! source: `value-of:{key}`), and node A, whose calls are timed, is in this process, with the
//! same data source and no hot copies (`HotKeys::Never`). The three run on 127.0.0.1. The
//! baselines are two processes of this program serving a bare axum handler
//! (`--bare-server ADDRESS`), driven by the raw hyper client.
//!
//! The keys are `user:00000` to `user:00099`, spread by the ring over A, B and C, each loaded
//! once on its owner before the measurements, so that every get is a hit on its owner: A's
//! own keys in its main cache, the others a request to B or C. Measured sequentially, each
//! pair in interleaved slices:
//!
//! - `get_many` of the 100 keys, beside one remote hit (a key of B);
//! - 100 gets of the same keys at once, beside the `get_many`;
//! - one remote hit, beside the raw client's `GET` on a bare process;
//! - the raw client's two `GET`s at once, one to each bare process, beside its one `GET`: the
//!   floor of any call that fans out to two processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::process::Command;
use tower_groupcache::{Groupcache, HotKeys};

use crate::{
    HttpClient, Latency, MANY_KEYS, Result, Target, check, golang, progress, ratio_d, row, us,
};

/// The `node` example's data source.
const DEMO: &str = "demo";
/// The value of every key of this phase, `value-of:user:NNNNN`, is this long.
const VALUE_LEN: usize = "value-of:user:00000".len();
/// What the bare processes answer: a value as long as the nodes' values.
const BARE_VALUE: &[u8] = b"value-of:user:00000";

/// The figures of phase 6.
pub(crate) struct Figures {
    /// The keys' owners: A, B, C.
    pub(crate) spread: [usize; 3],
    pub(crate) many: Latency,
    pub(crate) many_one: Latency,
    pub(crate) gets: Latency,
    pub(crate) gets_many: Latency,
    /// 100 gets at once without natural batching, beside a `get_many`.
    pub(crate) lone: Latency,
    pub(crate) lone_many: Latency,
    /// Whether this process and the others ran on CPUs of their own ([`Pinning`]).
    pub(crate) pinned: bool,
    pub(crate) remote: Latency,
    pub(crate) remote_raw: Latency,
    pub(crate) raw_two: Latency,
    pub(crate) raw_one: Latency,
}

/// Serves the bare handler on `address` until killed: the baseline's server in a process of
/// its own (`loadtest --bare-server ADDRESS`).
pub(crate) async fn bare_server(address: &str) -> Result<()> {
    let listener = TcpListener::bind(address).await?;
    let app = Router::new()
        .route("/user", get(|| async { Bytes::from_static(BARE_VALUE) }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// Where the processes run: this one on the first CPU and the others on the last, so that
/// each request goes from one CPU to another, as between machines, and wakes a process that
/// waits there, as a node between requests does. Without it, the scheduler puts a server now
/// on the asker's CPU and now on the other, and a round trip takes either about 12 µs or about
/// 80 µs on a 2-CPU virtual machine, from one slice to the next. `None` (nothing pinned) on
/// one CPU or without `taskset` (util-linux).
#[derive(Debug, Clone)]
pub(crate) struct Pinning {
    /// This process's CPU: the first it may run on.
    this: String,
    /// The other processes' CPU: the last this process may run on.
    others: String,
    /// The CPUs this process may run on, as `Cpus_allowed_list` gives them.
    all: String,
}

impl Pinning {
    async fn find() -> Option<Self> {
        let status = tokio::fs::read_to_string("/proc/self/status").await.ok()?;
        let all = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_owned();
        // `0-3`, or `0,2,5-7`: the first CPU and the last.
        let first = all.split([',', '-']).next()?.trim().to_owned();
        let last = all.rsplit([',', '-']).next()?.trim().to_owned();
        let taskset = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        (first != last && taskset.is_ok_and(|status| status.success())).then_some(Self {
            this: first,
            others: last,
            all,
        })
    }

    /// Pins every thread of this process to `cpus`.
    async fn this_process(cpus: &str) -> Result<()> {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .await?;
        check(
            status.success(),
            format!("taskset -a -p -c {cpus}: {status}"),
        )
    }

    /// `program`, to be run on the other CPU.
    fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("taskset");
        command.args(["-c", &self.others]).arg(program);
        command
    }
}

pub(crate) async fn run(
    node_binary: PathBuf,
    client: HttpClient,
    sequential: usize,
    warmup: usize,
) -> Result<Figures> {
    let pinning = Pinning::find().await;
    if let Some(pinning) = &pinning {
        Pinning::this_process(&pinning.this).await?;
    }
    let figures = measure(pinning.as_ref(), node_binary, client, sequential, warmup).await;
    if let Some(pinning) = &pinning {
        Pinning::this_process(&pinning.all).await?;
    }
    figures
}

async fn measure(
    pinning: Option<&Pinning>,
    node_binary: PathBuf,
    client: HttpClient,
    sequential: usize,
    warmup: usize,
) -> Result<Figures> {
    let command = |program: &std::path::Path| match pinning {
        Some(pinning) => pinning.command(program),
        None => Command::new(program),
    };
    let client = &client;
    let a_listener = TcpListener::bind("127.0.0.1:0").await?;
    let a_url = format!("http://{}", a_listener.local_addr()?);
    let ports = [golang::free_port()?, golang::free_port()?];
    let [b_url, c_url] = ports.map(|port| format!("http://127.0.0.1:{port}"));
    let peers = [a_url.clone(), b_url.clone(), c_url.clone()];

    let mut processes = Vec::new();
    for (port, url) in ports.iter().zip([&b_url, &c_url]) {
        let mut command = command(&node_binary);
        command
            .env("GROUPCACHE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GROUPCACHE_SELF_URL", url)
            .env("GROUPCACHE_PEER_URLS", peers.join(","))
            .env("GROUPCACHE_OPEN_PEER_PATH", "true")
            .env("GROUPCACHE_CACHE_BYTES", (64u64 << 20).to_string())
            .env("RUST_LOG", "warn")
            .env_remove("GROUPCACHE_PEER_SECRET")
            .env_remove("GROUPCACHE_DNS_NAME");
        processes.push(golang::start_node(command, url, client).await?);
    }
    let program = std::env::current_exe()?;
    let mut bare = Vec::new();
    for _ in 0..2 {
        let address = format!("127.0.0.1:{}", golang::free_port()?);
        let mut command = command(&program);
        command.args(["--bare-server", &address]);
        bare.push(golang::start_node(command, &format!("http://{address}"), client).await?);
    }

    // A keeps its own keys in its main cache and never a copy of another node's.
    let node_a = || {
        Groupcache::builder()
            .self_url(a_url.as_str())
            .peers(&peers)
            .open_peer_path()
            .hot_keys(HotKeys::Never)
            .source(DEMO, |key: String| async move {
                Ok::<_, std::convert::Infallible>(format!("value-of:{key}"))
            })
    };
    let a = node_a().build()?;
    // A's twin without natural batching, whose gets each go in a request of their own, as
    // golang/groupcache's do. It is not served: nobody asks A for anything here.
    let lone = node_a().natural_batching(0).build()?;
    crate::serve(a_listener, Router::new().layer(a.layer()));

    let keys: Arc<[Arc<str>]> = (0..MANY_KEYS)
        .map(|i| Arc::from(format!("user:{i:05}")))
        .collect();
    let ring = a.ring();
    let owned_by = |url: &str| -> Arc<[Arc<str>]> {
        keys.iter()
            .filter(|key| ring.owner(key) == Some(url))
            .cloned()
            .collect()
    };
    let b_keys = owned_by(&b_url);
    let spread = [owned_by(&a_url).len(), b_keys.len(), owned_by(&c_url).len()];
    check(
        spread.iter().all(|&n| n > 0),
        format!("the {MANY_KEYS} keys are not spread over all three nodes: {spread:?}"),
    )?;

    progress(&format!(
        "phase 6/6: nodes B and C and two bare servers in processes of their own; warming \
         {MANY_KEYS} keys on their owners (A {}, B {}, C {})",
        spread[0], spread[1], spread[2]
    ));
    let handle = a.handle();
    for node in [&a, &lone] {
        for (key, value) in keys.iter().zip(node.handle().get_many(DEMO, &keys).await?) {
            let value = value.map_err(|error| format!("warming {key}: {error}"))?;
            check(
                value.len() == VALUE_LEN,
                format!("warming {key}: {} bytes", value.len()),
            )?;
        }
    }
    let before = [demo(&a)?, demo(&lone)?];
    check(
        before
            .iter()
            .all(|node| node.stats.local_loads == spread[0] as u64),
        format!(
            "A or its twin loaded other keys than its own {} while warming",
            spread[0]
        ),
    )?;

    let many = Target::GetMany {
        cache: handle.clone(),
        source: DEMO,
        keys: keys.clone(),
        expected: VALUE_LEN,
    };
    let gets = Target::Gets {
        cache: handle.clone(),
        source: DEMO,
        keys: keys.clone(),
        expected: VALUE_LEN,
    };
    let lone_gets = Target::Gets {
        cache: lone.handle(),
        source: DEMO,
        keys: keys.clone(),
        expected: VALUE_LEN,
    };
    let remote = Target::RemoteHit {
        cache: handle.clone(),
        source: DEMO,
        keys: b_keys,
        expected: VALUE_LEN,
    };
    let raw_to = |process: &golang::NodeProcess| -> Result<Target> {
        Ok(Target::Http {
            client: client.clone(),
            uri: format!("{}/user", process.url).parse()?,
            expected: BARE_VALUE.len(),
        })
    };
    let raw_one = raw_to(&bare[0])?;
    let raw_two = Target::Join(Arc::from([raw_to(&bare[0])?, raw_to(&bare[1])?]));

    // Each subject beside its baseline, in interleaved slices.
    let pairs = [
        ("get_many of 100 keys beside one remote hit", &many, &remote),
        ("100 gets at once beside a get_many", &gets, &many),
        (
            "100 gets at once without natural batching beside a get_many",
            &lone_gets,
            &many,
        ),
        ("remote hit beside the raw client", &remote, &raw_one),
        (
            "the raw client's two requests at once beside its one",
            &raw_two,
            &raw_one,
        ),
    ];
    let mut measured = Vec::with_capacity(pairs.len());
    for (what, subject, baseline) in pairs {
        progress(&format!("phase 6/6: {what}, {sequential} each"));
        measured.push(crate::sequential_pair(subject, baseline, warmup, sequential).await?);
    }
    let [
        (many_latency, many_one),
        (gets_latency, gets_many),
        (lone_latency, lone_many),
        (remote_latency, remote_raw),
        (two_latency, one_latency),
    ] = <[(Latency, Latency); 5]>::try_from(measured)
        .map_err(|_| "phase 6: a measurement is missing")?;
    // Every get was a hit on its owner: neither A nor its twin loaded anything more, fetched
    // with an error, or kept a copy of another node's key.
    for (node, before) in [&a, &lone].into_iter().zip(before) {
        let after = demo(node)?;
        check(
            after.stats.local_loads == before.stats.local_loads
                && after.stats.peer_errors == 0
                && after.hot_cache.items == 0,
            format!(
                "A (or its twin) loaded {} keys, had {} peer errors and kept {} hot copies",
                after.stats.local_loads - before.stats.local_loads,
                after.stats.peer_errors,
                after.hot_cache.items
            ),
        )?;
    }
    drop((processes, bare));
    Ok(Figures {
        spread,
        many: many_latency,
        many_one,
        gets: gets_latency,
        gets_many,
        lone: lone_latency,
        lone_many,
        pinned: pinning.is_some(),
        remote: remote_latency,
        remote_raw,
        raw_two: two_latency,
        raw_one: one_latency,
    })
}

fn demo(cache: &Groupcache) -> Result<tower_groupcache::SourceSnapshot> {
    Ok(cache
        .stats()
        .source(DEMO)
        .cloned()
        .ok_or("node A has no demo source")?)
}

impl Figures {
    /// Phase 6's rows of the load test's table.
    pub(crate) fn rows(&self) -> Vec<[String; 5]> {
        let pair = |name: &str, metric: &str, subject: Duration, baseline: Duration| {
            row(
                name,
                metric,
                us(subject),
                us(baseline),
                ratio_d(subject, baseline),
            )
        };
        let [a, b, c] = self.spread;
        let pinned = if self.pinned { "pinned" } else { "NOT pinned" };
        vec![
            pair(
                &format!("6. processes ({pinned}): get_many of {MANY_KEYS}"),
                "p50",
                self.many.p50,
                self.many_one.p50,
            ),
            pair(
                &format!("     over A/B/C ({a}/{b}/{c}) (baseline: ONE remote hit)"),
                "p99",
                self.many.p99,
                self.many_one.p99,
            ),
            pair(
                &format!("   {MANY_KEYS} gets at once of the same keys"),
                "p50",
                self.gets.p50,
                self.gets_many.p50,
            ),
            pair(
                "     (baseline: the get_many)",
                "p99",
                self.gets.p99,
                self.gets_many.p99,
            ),
            pair(
                "   the same, natural batching off",
                "p50",
                self.lone.p50,
                self.lone_many.p50,
            ),
            pair(
                "     (baseline: the get_many)",
                "p99",
                self.lone.p99,
                self.lone_many.p99,
            ),
            pair(
                "   remote hit, A -> B, sequential",
                "p50",
                self.remote.p50,
                self.remote_raw.p50,
            ),
            pair(
                "     (baseline: raw GET, bare process)",
                "p99",
                self.remote.p99,
                self.remote_raw.p99,
            ),
            pair(
                "   raw: two GETs at once, two processes",
                "p50",
                self.raw_two.p50,
                self.raw_one.p50,
            ),
            pair(
                "     (baseline: the raw client's one GET)",
                "p99",
                self.raw_two.p99,
                self.raw_one.p99,
            ),
        ]
    }
}

/// Phase 6's notes under the table.
pub(crate) const NOTES: &[&str] = &[
    "6:     node A in this process, nodes B and C in processes of their own (the `node`",
    "       example), all on 127.0.0.1; A keeps no hot copies. Keys user:00000-00099, each",
    "       cached on its owner (A/B/C: how many each owns). Baselines: the raw hyper client",
    "       on a bare axum handler in a process of its own (two of them for two at once).",
    "       Natural batching off: a twin of A built with natural_batching(0), each get its",
    "       own request, as golang/groupcache's. Pinned: this process on the first CPU, the",
    "       others on the last (taskset), so that each request wakes a process on another",
    "       CPU, as between machines; NOT pinned where the machine has one CPU or no taskset.",
];
