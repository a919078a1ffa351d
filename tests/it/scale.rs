//! Large clusters: 32 nodes in one process over 20,000 keys, a peer list of 200 addresses from
//! one DNS name, and a rolling restart under steady load. The figures they print (memory,
//! connections, loads) are quoted in docs/scaling.md; only counts are asserted.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    Connections, Loads, Node, eventually, listeners, start_counted_node, start_node, value_of,
};
use tokio::net::TcpListener;
use tower_groupcache::{CacheHandle, DnsDiscovery, Groupcache, HotKeys, Resolve};

const DEADLINE: Duration = Duration::from_secs(60);

/// This process's resident memory in bytes, from /proc/self/statm (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `n` nodes on 127.0.0.1 sharing one peer list, each server counting its connections.
async fn counted_cluster(
    n: usize,
    loads: &Loads,
    configure: impl Fn(tower_groupcache::GroupcacheBuilder) -> tower_groupcache::GroupcacheBuilder,
) -> Vec<(Node, Arc<Connections>)> {
    let (listeners, urls) = listeners(n).await;
    let mut nodes = Vec::new();
    for listener in listeners {
        let connections = Arc::new(Connections::default());
        let node =
            start_counted_node(listener, &urls, loads, &configure, connections.clone()).await;
        nodes.push((node, connections));
    }
    nodes
}

const NODES: usize = 32;
const KEYS: usize = 20_000;
/// The per-peer connection cap of the 32 nodes.
const CAP: usize = 4;
/// Keys per `get_many` call, and the calls in flight at once in the whole cluster.
const CHUNK: usize = 5_000;
const CALLS_IN_FLIGHT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_nodes_answer_twenty_thousand_keys_with_one_load_each() {
    let started = Instant::now();
    let loads = Loads::default();
    let before = resident_bytes();
    let nodes = counted_cluster(NODES, &loads, |b| {
        b.max_connections_per_peer(CAP)
            // A slow answer on a busy machine must not become a second load.
            .peer_timeout(Duration::from_secs(60))
            // Each node asks for each key once: no key is popular, none is copied.
            .hot_keys(HotKeys::Never)
    })
    .await;
    // Each node checks its own peer path once, soon after it starts: let those finish so that
    // every connection counted later is a peer's.
    eventually("every node checked its own peer path", DEADLINE, || {
        nodes.iter().all(|(n, _)| n.base_path_answers() >= 1)
    })
    .await;
    let idle = resident_bytes();
    if let (Some(before), Some(idle)) = (before, idle) {
        println!(
            "{NODES} idle nodes: {:.1} MiB resident, {:.0} KiB per node",
            mib(idle.saturating_sub(before)),
            idle.saturating_sub(before) as f64 / 1024.0 / NODES as f64
        );
    }

    // The cap: one node asks one peer for 256 keys at once, one get each. Every get needs a
    // connection; no more than CAP are opened.
    let (asker, owner) = (&nodes[0].0, &nodes[1]);
    let ring = asker.cache.ring();
    let owned: Vec<String> = (0..)
        .map(|i| format!("cap:{i}"))
        .filter(|k| ring.owner(k) == Some(owner.0.url.as_str()))
        .take(256)
        .collect();
    let accepted = owner.1.accepted.load(Ordering::SeqCst);
    let handle = asker.handle();
    let gets = owned.iter().map(|key| {
        let handle = handle.clone();
        async move { handle.get("users", key).await }
    });
    for (key, got) in owned.iter().zip(futures_util::future::join_all(gets).await) {
        assert_eq!(got.expect("a get of the cap phase"), value_of(key));
    }
    let opened = owner.1.accepted.load(Ordering::SeqCst) - accepted;
    println!("256 gets at once from one node to one peer: {opened} connections opened (cap {CAP})");
    assert!(opened <= CAP, "{opened} connections to one peer, cap {CAP}");
    let asker_figures = asker.cache.stats();
    let to_owner = asker_figures
        .peer(&owner.0.url)
        .expect("the owner has figures");
    println!(
        "  its requests: {} gets, {} batched gets, p50 {:?}, p99 {:?}",
        to_owner.requests.gets,
        to_owner.requests.batched_gets,
        to_owner.latency_p50,
        to_owner.latency_p99
    );

    // Every node answers every key, CHUNK keys per get_many, CALLS_IN_FLIGHT calls at once.
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("k:{i}")).collect());
    let handles: Vec<CacheHandle> = nodes.iter().map(|(n, _)| n.handle()).collect();
    let calls: Vec<(usize, usize)> = (0..NODES)
        .flat_map(|node| (0..KEYS / CHUNK).map(move |chunk| (node, chunk)))
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let load_started = Instant::now();
    for _ in 0..CALLS_IN_FLIGHT {
        let (keys, handles, calls, next) =
            (keys.clone(), handles.clone(), calls.clone(), next.clone());
        workers.spawn(async move {
            let mut answered = 0;
            while let Some(&(node, chunk)) = calls.get(next.fetch_add(1, Ordering::SeqCst)) {
                let chunk = &keys[chunk * CHUNK..(chunk + 1) * CHUNK];
                let got = handles[node]
                    .get_many("users", chunk)
                    .await
                    .expect("the source exists");
                for (key, value) in chunk.iter().zip(got) {
                    assert_eq!(value.expect("every key answers"), value_of(key), "{key}");
                    answered += 1;
                }
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(worker) = workers.join_next().await {
        answered += worker.expect("a load worker");
    }
    let load_time = load_started.elapsed();
    assert_eq!(answered, NODES * KEYS, "every node answered every key");

    // One load per key in the cluster, by its owner.
    let ring = nodes[0].0.cache.ring();
    for key in keys.iter() {
        let by = loads.of(key);
        assert_eq!(by.len(), 1, "{key} loaded by {by:?}");
        assert_eq!(Some(by[0].as_str()), ring.owner(key), "{key}");
    }
    assert_eq!(loads.total(), KEYS + owned.len());

    let peak = nodes
        .iter()
        .map(|(_, c)| c.peak.load(Ordering::SeqCst))
        .max()
        .unwrap_or(0);
    let open: usize = nodes
        .iter()
        .map(|(_, c)| c.open.load(Ordering::SeqCst))
        .sum();
    println!(
        "{} gets in {load_time:?}; connections: at most {peak} open at once on one node \
         (bound {} peers x cap {CAP} + its own check), {open} open in the cluster after",
        NODES * KEYS,
        NODES - 1
    );
    for (node, connections) in &nodes {
        let peak = connections.peak.load(Ordering::SeqCst);
        assert!(
            peak <= (NODES - 1) * CAP + 1,
            "{}: {peak} connections open at once",
            node.url
        );
    }
    let stats = nodes[0].0.cache.stats();
    assert_eq!(
        stats.peers.len(),
        NODES - 1,
        "one figure entry per other node"
    );
    assert!(stats.peers.iter().all(|p| p.errors.total() == 0));
    if let (Some(before), Some(idle), Some(after)) = (before, idle, resident_bytes()) {
        // The cached values are about 1 MiB in all: the growth is the connections, each
        // with a client end and a server end in this process.
        println!(
            "after the load ({KEYS} keys cached): {:.1} MiB resident for {NODES} nodes; \
             {:.0} KiB per open connection (both ends)",
            mib(after.saturating_sub(before)),
            after.saturating_sub(idle) as f64 / 1024.0 / open.max(1) as f64
        );
    }
    println!("whole test: {:?}", started.elapsed());
}

/// A DNS name with a fixed list of addresses, in the order given; counts its lookups.
#[derive(Clone)]
struct FixedName {
    addrs: Arc<Vec<IpAddr>>,
    lookups: Arc<AtomicUsize>,
}

impl Resolve for FixedName {
    async fn resolve(&self, _name: &str) -> io::Result<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self.addrs.to_vec())
    }
}

#[tokio::test(start_paused = true)]
async fn two_hundred_addresses_behind_one_name_make_one_ring() {
    // 200 loopback addresses where nothing listens on the port: no request goes anywhere
    // but this node's check of its own peer path, refused at once.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let addrs: Vec<IpAddr> = (0..200u32)
        .map(|i| IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect();
    let mut reversed = addrs.clone();
    reversed.reverse();
    let interval = Duration::from_secs(5);
    let mut nodes = Vec::new();
    for (me, answer) in [(addrs[0], addrs.clone()), (addrs[199], reversed)] {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url(format!("http://{me}:{port}"))
            .source(
                "users",
                |key: String| async move { Ok::<_, io::Error>(key) },
            )
            .build()
            .unwrap();
        let resolver = FixedName {
            addrs: Arc::new(answer),
            lookups: Arc::default(),
        };
        cache
            .discover(
                DnsDiscovery::new("groupcache.default.svc.cluster.local", port)
                    .interval(interval)
                    .resolver(resolver.clone()),
            )
            .unwrap();
        nodes.push((cache, resolver));
    }
    eventually("both nodes see 200 peers", DEADLINE, || {
        nodes.iter().all(|(c, _)| c.stats().cluster.count == 200)
    })
    .await;
    let (a, b) = (nodes[0].0.stats(), nodes[1].0.stats());
    assert_eq!(
        a.cluster.peers, b.cluster.peers,
        "the same list, in the same order"
    );
    assert_eq!(a.cluster.ring_fingerprint, b.cluster.ring_fingerprint);
    assert_eq!(a.peers.len(), 199, "figures for every peer but this node");
    assert_eq!(b.peers.len(), 199);
    // A node given the same peers by hand, in another order, has the same ring.
    let by_hand = Groupcache::builder()
        .open_peer_path()
        .self_url(a.cluster.peers[7].clone())
        .peers(b.cluster.peers.iter().rev().cloned())
        .build()
        .unwrap();
    assert_eq!(
        by_hand.stats().cluster.ring_fingerprint,
        a.cluster.ring_fingerprint
    );

    // One lookup per node per interval, whatever the size of the answer.
    let lookups = nodes[0].1.lookups.load(Ordering::SeqCst);
    tokio::time::sleep(interval * 10).await;
    let more = nodes[0].1.lookups.load(Ordering::SeqCst) - lookups;
    assert!((9..=11).contains(&more), "{more} lookups in 10 intervals");
    assert_eq!(
        nodes[0].0.stats().cluster.ring_fingerprint,
        a.cluster.ring_fingerprint
    );
}

/// How the steady load of the rolling restart went.
#[derive(Default)]
struct Load {
    gets: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

/// Waits until the steady load has made `gets` more gets.
async fn progress(load: &Load, gets: usize) {
    let from = load.gets.load(Ordering::SeqCst);
    eventually("the load goes on", DEADLINE, || {
        load.gets.load(Ordering::SeqCst) >= from + gets
    })
    .await;
}

const RESTART_NODES: usize = 5;
const RESTART_KEYS: usize = 2_000;
const CLIENTS: usize = 8;
/// A bound on the load, in gets per client, whatever the speed of the machine.
const MAX_GETS_PER_CLIENT: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_to_new_addresses_under_load_fails_no_get() {
    rolling_restart(Address::New).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_at_the_same_addresses_under_load_fails_no_get() {
    rolling_restart(Address::Same).await;
}

/// Where a restarted node comes back: at a new address (a Deployment's pod), or at its own
/// (a StatefulSet's pod behind a stable name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    New,
    Same,
}

/// Binds `addr` again once the stopped server that held it has let it go.
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < give_up,
                    "rebinding {addr}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Restarts each of 5 nodes in turn, as Kubernetes rolls a deployment, while 8 clients get
/// keys through the nodes that serve; prints the loads it cost.
async fn rolling_restart(address: Address) {
    let started = Instant::now();
    let loads = Loads::default();
    let configure = |b: tower_groupcache::GroupcacheBuilder| {
        b.peer_timeout(Duration::from_secs(30))
            .shutdown_timeout(Duration::from_secs(30))
    };
    let mut nodes: Vec<Node> = crate::support::cluster(RESTART_NODES, &loads, configure).await;
    let keys: Arc<Vec<String>> = Arc::new((0..RESTART_KEYS).map(|i| format!("r:{i}")).collect());

    // Warm up: every key once, through node 0.
    let warm = nodes[0]
        .handle()
        .get_many("users", &keys[..])
        .await
        .unwrap();
    assert!(warm.iter().all(Result::is_ok));
    assert_eq!(loads.total(), RESTART_KEYS);

    // The load balancer: the handles of the nodes that take traffic.
    let serving: Arc<Mutex<Vec<(String, CacheHandle)>>> = Arc::new(Mutex::new(
        nodes.iter().map(|n| (n.url.clone(), n.handle())).collect(),
    ));
    let load = Arc::new(Load::default());
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (serving, load, keys) = (serving.clone(), load.clone(), keys.clone());
        clients.spawn(async move {
            for i in 0..MAX_GETS_PER_CLIENT {
                if load.stop.load(Ordering::SeqCst) {
                    return;
                }
                let handle = {
                    let serving = serving.lock().unwrap();
                    serving[(client + i) % serving.len()].1.clone()
                };
                let key = &keys[(client * 997 + i * 13) % keys.len()];
                match handle.get("users", key).await {
                    Ok(value) if value == value_of(key) => {}
                    other => {
                        eprintln!("failed get of {key}: {other:?}");
                        load.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                load.gets.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // The load runs before the first restart.
    progress(&load, 1_000).await;

    // Per round: the keys of the node that leaves (on the ring with it), and of the node
    // that joins (on the ring with it). Each must be loaded once more at least: the first by
    // their next owner, the second by the new node, whose cache starts empty.
    let (mut ideal, mut of_leaving) = (0, 0);
    for round in 0..RESTART_NODES {
        let loads_before = loads.total();
        let old = nodes.remove(0);
        let old_ring = old.cache.ring();
        let leaving = keys
            .iter()
            .filter(|k| old_ring.owner(k) == Some(old.url.as_str()))
            .count();
        // The pod is taken out of the service, then gets SIGTERM: it drains, and its peers
        // learn from discovery that it left.
        serving.lock().unwrap().retain(|(url, _)| *url != old.url);
        let report = old.cache.shutdown().await;
        assert!(report.is_complete(), "round {round}: the drain finished");
        // Discovery takes a while to notice: the peers keep asking the draining node, which
        // answers 503, so they load its keys themselves meanwhile.
        progress(&load, 200).await;
        let peers: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        for node in &nodes {
            node.cache.set_peers(peers.clone()).unwrap();
        }
        old.stop();
        let old_addr = old.addr;
        drop(old);

        // Its replacement starts, and joins.
        let listener = match address {
            Address::New => TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Address::Same => rebind(old_addr).await,
        };
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut peers = peers;
        peers.push(url.clone());
        let fresh = start_node(listener, &peers, &loads, configure).await;
        for node in &nodes {
            node.cache.set_peers(peers.clone()).unwrap();
        }
        let new_ring = fresh.cache.ring();
        let joining = keys
            .iter()
            .filter(|k| new_ring.owner(k) == Some(url.as_str()))
            .count();
        serving.lock().unwrap().push((url, fresh.handle()));
        nodes.push(fresh);
        progress(&load, 200).await;

        // Every key is asked for once more after the change, beside the steady load, so
        // that every key that moved is counted.
        let swept = nodes[0]
            .handle()
            .get_many("users", &keys[..])
            .await
            .unwrap();
        assert!(swept.iter().all(Result::is_ok), "round {round}");
        ideal += leaving + joining;
        of_leaving += leaving;
        println!(
            "round {round}: {leaving} keys of the leaving node, {joining} of the joining one, \
             {} loads",
            loads.total() - loads_before
        );
    }
    load.stop.store(true, Ordering::SeqCst);
    while let Some(client) = clients.join_next().await {
        client.expect("a load client");
    }

    let gets = load.gets.load(Ordering::SeqCst);
    let failed = load.failed.load(Ordering::SeqCst);
    let extra = loads.total() - RESTART_KEYS;
    println!(
        "rolling restart of {RESTART_NODES} nodes ({address:?} addresses), {RESTART_KEYS} \
         keys, {CLIENTS} clients: \
         {gets} gets, {failed} failed; {extra} extra loads, {:.2}x the keys of the leaving \
         nodes ({of_leaving}), {:.2}x those and the joining nodes' ({ideal}); {:?}",
        extra as f64 / of_leaving.max(1) as f64,
        extra as f64 / ideal.max(1) as f64,
        started.elapsed()
    );
    assert_eq!(failed, 0, "no get fails in a graceful restart");
    // A node loads a key at most once while it holds it: what it loads stays in its main
    // cache (as the owner, or as the fallback while the owner drains). Only the keys of the
    // leaving and the joining node are asked for anew, each at most by the 4 nodes that stay
    // and the one that joins. (Fewer loads than those keys is no fault: a node that held a
    // copy, as a hot copy or as the previous owner, answers from it.)
    assert!(
        extra <= ideal * RESTART_NODES,
        "{extra} extra loads for {ideal} keys that changed owner"
    );
}
