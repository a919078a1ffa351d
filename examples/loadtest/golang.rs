//! Phase 5 of the load test: the same paths on golang/groupcache, in the same run.
//!
//! Two processes of the Go test peer (`tests/interop/gopeer`, golang/groupcache as Debian
//! packages it), G1 and G2, beside two processes of this crate's `node` example, A and B: the
//! same data source (the value of `key` is `value-of:<key>`), 64 MiB of cache each, an open
//! peer path on both sides (the Go peer has no authentication), and the same `/get?key=`
//! front route. Each side is asked over HTTP by the same raw hyper client, from this process:
//!
//! - **front + remote hit, sequential**: `GET /get?key=K` on G1 (or A) for keys that G2 (or B)
//!   owns and has cached, each key asked once, so that no hot copy answers (golang copies one
//!   fetched value in ten to its hot cache; this crate copies popular keys);
//! - **front, local hit, 32 in flight**: `GET /get?key=K` on G2 (or B), the owner, for a key
//!   in its cache;
//! - **local hit in process**: golang's `Group.Get` (timed by the Go peer's `-bench-local`
//!   mode) and `CacheHandle::get` (timed here), each on a cache of its own holding 100,000
//!   keys, cycling over 1,000 keys per thread, on 1 and then 2 threads (goroutines), twice
//!   each in the order Go, ours, ours, Go.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::process::{Child, Command};
use tower_groupcache::Ring;

use crate::{HttpClient, IN_FLIGHT, Latency, Rate, Result, Target, USERS, check, progress};

/// Where `tests/interop/gopeer/build.sh` puts the Go peer.
pub(crate) fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gopeer/gopeer")
}

/// The `node` example built with the same profile as this program, beside it.
pub(crate) fn node_binary() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.with_file_name("node");
    path.is_file().then_some(path)
}

/// The figures of phase 5.
pub(crate) struct Figures {
    pub(crate) go_remote: Latency,
    pub(crate) our_remote: Latency,
    pub(crate) go_local: Rate,
    pub(crate) our_local: Rate,
    pub(crate) go_hits: LocalHits,
    pub(crate) our_hits: LocalHits,
}

/// In-process local hits: nanoseconds per get on one thread, gets per second on one and two.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalHits {
    pub(crate) one_thread_ns: f64,
    pub(crate) one_thread_per_s: f64,
    pub(crate) two_threads_per_s: f64,
}

impl LocalHits {
    fn mean(a: Self, b: Self) -> Self {
        Self {
            one_thread_ns: (a.one_thread_ns + b.one_thread_ns) / 2.0,
            one_thread_per_s: (a.one_thread_per_s + b.one_thread_per_s) / 2.0,
            two_threads_per_s: (a.two_threads_per_s + b.two_threads_per_s) / 2.0,
        }
    }
}

/// Gets per thread in each in-process run.
const LOCAL_HITS: usize = 2_000_000;

/// The Go peer's `-bench-local` figures.
async fn go_local_hits(binary: &Path) -> Result<LocalHits> {
    let output = Command::new(binary)
        .args(["-bench-local", &LOCAL_HITS.to_string()])
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> Result<f64> {
        let at = text
            .find(&format!("\"{name}\": "))
            .ok_or_else(|| format!("no {name} in the Go peer's output: {text}"))?;
        let rest = &text[at + name.len() + 4..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Ok(rest[..end].trim().parse()?)
    };
    Ok(LocalHits {
        one_thread_ns: field("one_thread_ns")?,
        one_thread_per_s: field("one_thread_gets_per_s")?,
        two_threads_per_s: field("two_threads_gets_per_s")?,
    })
}

/// The same runs on `CacheHandle::get`, polled once (a hit is ready at once).
fn our_local_hits() -> Result<LocalHits> {
    use futures_util::FutureExt as _;
    const ENTRIES: usize = 100_000;
    const WORKING_SET: usize = 1_000;
    // A buffer of its own per key, as each key's value would be: clones of one `Bytes` would
    // share one reference count between the threads.
    let cache = tower_groupcache::Groupcache::builder()
        .source(USERS, |_key: String| async {
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'v'; 64]))
        })
        .build()?;
    let handle = cache.handle();
    let keys: Vec<String> = (0..ENTRIES).map(|i| format!("user:{i:08}")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        for key in &keys {
            handle.get(USERS, key).await?;
        }
        Ok::<_, tower_groupcache::Error>(())
    })?;
    let run = |threads: usize, iters: usize| -> Result<Duration> {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (handle, set) = (&handle, &keys[t * WORKING_SET..(t + 1) * WORKING_SET]);
                    // Awaited in one async block, as a handler awaits it: every get is a
                    // hit, so the block ends in one poll.
                    scope.spawn(move || {
                        let gets = async move {
                            let mut next = 0;
                            for _ in 0..iters {
                                if let Err(error) = handle.get(USERS, &set[next]).await {
                                    return Err(format!("{}: {error}", set[next]));
                                }
                                next = if next + 1 == WORKING_SET { 0 } else { next + 1 };
                            }
                            Ok(())
                        };
                        gets.now_or_never()
                            .unwrap_or_else(|| Err("a get was not a hit".to_owned()))
                    })
                })
                .collect();
            for worker in workers {
                worker.join().map_err(|_| "a hit thread panicked")??;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })?;
        Ok(started.elapsed())
    };
    run(1, LOCAL_HITS / 10)?; // warm-up
    let one = run(1, LOCAL_HITS)?;
    let two = run(2, LOCAL_HITS)?;
    Ok(LocalHits {
        one_thread_ns: one.as_nanos() as f64 / LOCAL_HITS as f64,
        one_thread_per_s: LOCAL_HITS as f64 / one.as_secs_f64(),
        two_threads_per_s: 2.0 * LOCAL_HITS as f64 / two.as_secs_f64(),
    })
}

/// A node process, killed when dropped.
pub(crate) struct NodeProcess {
    pub(crate) url: String,
    _child: Child,
}

/// A free port on 127.0.0.1, by binding one and letting it go (the Go peers need each other's
/// URL before they start).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts one node process on `port` and waits (with a deadline) until it answers.
pub(crate) async fn start_node(
    mut command: Command,
    url: &str,
    client: &HttpClient,
) -> Result<NodeProcess> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a node for {url}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let health: axum::http::Uri = format!("{url}/healthz").parse()?;
    loop {
        if let Ok(response) = client.get(health.clone()).await {
            if response.status() == StatusCode::OK {
                break;
            }
        }
        check(
            Instant::now() < deadline,
            format!("the node on {url} did not start"),
        )?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(NodeProcess {
        url: url.to_owned(),
        _child: child,
    })
}

fn go_command(binary: &Path, port: u16, peers: &[String]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["-self", &format!("http://127.0.0.1:{port}")])
        .args(["-listen", &format!("127.0.0.1:{port}")])
        .args(["-peers", &peers.join(","), "-group", USERS]);
    command
}

fn our_command(binary: &Path, port: u16, peers: &[String]) -> Command {
    let mut command = Command::new(binary);
    command
        .env("GROUPCACHE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GROUPCACHE_SELF_URL", format!("http://127.0.0.1:{port}"))
        .env("GROUPCACHE_PEER_URLS", peers.join(","))
        .env("GROUPCACHE_OPEN_PEER_PATH", "true")
        .env("GROUPCACHE_CACHE_BYTES", (64u64 << 20).to_string())
        .env_remove("GROUPCACHE_PEER_SECRET")
        .env_remove("GROUPCACHE_DNS_NAME");
    command
}

/// `/get?key=K` targets on `node_url` for `keys`, the whole body checked.
fn get_targets(client: &HttpClient, node_url: &str, keys: &[String]) -> Result<Vec<Target>> {
    keys.iter()
        .map(|key| {
            Ok(Target::Http {
                client: client.clone(),
                uri: format!("{node_url}/get?key={key}").parse()?,
                expected: format!("value-of:{key}").len(),
            })
        })
        .collect()
}

fn url_of(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Keys (`user:<i>`, safe in a query string as they are) that `owner` owns.
fn keys_owned_by(ring: &Ring, owner: &str, n: usize) -> Vec<String> {
    (0..10_000_000)
        .map(|i| format!("user:{i}"))
        .filter(|key| ring.owner(key) == Some(owner))
        .take(n)
        .collect()
}

/// Each target once, in order, timed: one sample per key.
async fn each_once(targets: &[Target]) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(targets.len());
    for target in targets {
        let started = Instant::now();
        target.call(0).await?;
        samples.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(samples)
}

pub(crate) async fn run(
    go_binary: PathBuf,
    node_binary: PathBuf,
    client: HttpClient,
    sequential: usize,
    warmup: usize,
    duration: Duration,
) -> Result<Figures> {
    let client = &client;
    let urls = |ports: [u16; 2]| ports.map(url_of);
    let (go_ports, our_ports) = ([free_port()?, free_port()?], [free_port()?, free_port()?]);
    let (go_peers, our_peers) = (urls(go_ports), urls(our_ports));
    let commands = go_ports
        .map(|port| (go_command(&go_binary, port, &go_peers), port))
        .into_iter()
        .chain(our_ports.map(|port| (our_command(&node_binary, port, &our_peers), port)));
    let mut nodes = Vec::new();
    for (command, port) in commands {
        nodes.push(start_node(command, &url_of(port), client).await?);
    }
    let [g1, g2, a, b] = [0, 1, 2, 3].map(|i| nodes[i].url.clone());

    // golang's ring and ours are the same function of the peer list.
    let n = warmup + sequential;
    let go_keys = keys_owned_by(&Ring::new(50, &go_peers), &g2, n);
    let our_keys = keys_owned_by(&Ring::new(50, &our_peers), &b, n);

    progress(&format!(
        "phase 5/6: warming {n} keys on each owner (G2 and B)"
    ));
    each_once(&get_targets(client, &g2, &go_keys)?).await?;
    each_once(&get_targets(client, &b, &our_keys)?).await?;

    progress(&format!(
        "phase 5/6: front + remote hit, {sequential} sequential gets per side, each key once"
    ));
    let go_remote = get_targets(client, &g1, &go_keys)?;
    let our_remote = get_targets(client, &a, &our_keys)?;
    each_once(&go_remote[..warmup]).await?;
    each_once(&our_remote[..warmup]).await?;
    // Interleaved slices, as the other phases: G A A G G A A G.
    let per_slice = sequential.div_ceil(4);
    let (mut go_samples, mut our_samples) = (Vec::new(), Vec::new());
    let (mut go_next, mut our_next) = (warmup, warmup);
    for is_go in crate::SLICES {
        let (targets, next, samples) = if is_go {
            (&go_remote, &mut go_next, &mut go_samples)
        } else {
            (&our_remote, &mut our_next, &mut our_samples)
        };
        let end = (*next + per_slice).min(n);
        samples.extend(each_once(&targets[*next..end]).await?);
        *next = end;
    }

    progress(&format!(
        "phase 5/6: front, local hit on the owner, {IN_FLIGHT} in flight, {duration:.2?} per side"
    ));
    let go_local = get_targets(client, &g2, &go_keys[..1])?.remove(0);
    let our_local = get_targets(client, &b, &our_keys[..1])?.remove(0);
    let (our_local_rate, go_local_rate) =
        crate::throughput_pair(&our_local, &go_local, duration / 8, duration).await?;

    drop(nodes);

    progress("phase 5/6: local hits in process, golang's Group.Get and CacheHandle::get");
    let go_first = go_local_hits(&go_binary).await?;
    let ours = || tokio::task::spawn_blocking(our_local_hits);
    let our_first = ours().await??;
    let our_second = ours().await??;
    let go_second = go_local_hits(&go_binary).await?;

    Ok(Figures {
        go_hits: LocalHits::mean(go_first, go_second),
        our_hits: LocalHits::mean(our_first, our_second),
        go_remote: Latency::of(go_samples),
        our_remote: Latency::of(our_samples),
        go_local: go_local_rate,
        our_local: our_local_rate,
    })
}
