//! Three node processes (`examples/node.rs`) on three "hosts": Linux network namespaces
//! joined by a bridge, and one of them cut off the network and healed.
//!
//! The test creates four namespaces, `gcmh-<pid>-br` (a bridge) and `gcmh-<pid>-{1,2,3}`,
//! each of the last three with a veth into the bridge, the address `10.203.0.1{1,2,3}/24`
//! and one node listening on port 8080. Nothing is added to the root namespace; every
//! request is `ip netns exec <namespace> curl ...`. The phases:
//!
//! 1. every key of a set, asked through every node, has the right value and was loaded once
//!    in the cluster, by its owner (from the nodes' `/stats`); the nodes asked each other,
//!    with no peer error; an unsigned peer request gets `401`;
//! 2. node 3's link goes down: nodes 1 and 2 still answer every key right, loading node 3's
//!    keys themselves, count peer errors, and end up skipping node 3;
//! 3. the link comes back: once node 1 reaches node 3 and stops skipping it, a new key of
//!    node 3 asked through node 1 is loaded exactly once, by node 3. Then SIGTERM stops each
//!    node with status 0.
//!
//! It needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` and `curl`. Without them it
//! prints `SKIPPED: multihost: ...` straight to stderr, appends that line to
//! `<target>/multihost-skipped`, and passes, unless `GROUPCACHE_REQUIRE_NETNS=1`, which
//! makes it fail instead. When it really ran it appends a line to `<target>/multihost-ran`.
//! Namespaces (and node logs) left by an earlier run whose process is gone are deleted at
//! the start; the test's own namespaces and nodes are removed when it ends, also on failure
//! (the logs are then kept in `<target>/tmp/gcmh-<pid>-logs` until the next run, and their
//! ends printed).
#![cfg(all(target_os = "linux", feature = "serde"))]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::node_process::{
    self, Finished, append_line, run_with_deadline, stderr_line, target_dir,
};
use serde_json::Value;
use tower_groupcache::Ring;

const SOURCE: &str = "demo";
const PORT: u16 = 8080;
const REPLICAS: usize = 50;
/// Keys of phase 1, each asked through every node.
const KEYS: usize = 30;

/// A node to get ready (a debug binary on a loaded 2-core machine).
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// One `ip` command.
const IP_DEADLINE: Duration = Duration::from_secs(60);
/// One HTTP exchange through curl (`--max-time`); a get of a partitioned node's key costs
/// the node's connect or peer timeout (1 s), so this is ample.
const CURL_MAX_TIME: Duration = Duration::from_secs(30);
/// A state that the cluster reaches by itself, or through a few gets.
const STATE_DEADLINE: Duration = Duration::from_secs(120);
/// A node to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Between two looks at a state that is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn require_netns() -> bool {
    std::env::var("GROUPCACHE_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// Skips the test (a line on stderr and in `<target>/multihost-skipped`), or fails it when
/// `GROUPCACHE_REQUIRE_NETNS=1`.
fn skip(reason: &str) {
    assert!(
        !require_netns(),
        "GROUPCACHE_REQUIRE_NETNS=1, but the multihost test cannot run: {reason}"
    );
    let line = format!("SKIPPED: multihost: {reason}");
    stderr_line(&line);
    let marker = target_dir().join("multihost-skipped");
    if let Err(error) = append_line(&marker, &line) {
        stderr_line(&format!(
            "multihost: cannot write {}: {error}",
            marker.display()
        ));
    }
}

fn ip(args: &[&str]) -> Finished {
    let mut command = Command::new("ip");
    command.args(args);
    run_with_deadline(command, IP_DEADLINE).unwrap_or_else(|e| panic!("cannot run ip: {e}"))
}

/// Runs `ip args`, and fails the test if it fails.
fn ip_ok(args: &[&str]) {
    let finished = ip(args);
    assert!(
        finished.success(),
        "ip {} failed: {}",
        args.join(" "),
        finished.describe()
    );
}

/// The pid in a name `gcmh-<pid>-...`, if the process is gone (and is not this one).
fn dead_owner(name: &str) -> Option<&str> {
    let pid = name.strip_prefix("gcmh-")?.split('-').next()?;
    let own = std::process::id().to_string();
    (!pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && pid != own
        && !Path::new("/proc").join(pid).exists())
    .then_some(pid)
}

/// Deletes what a run that was killed left: its `gcmh-<pid>-*` namespaces and its
/// `gcmh-<pid>-logs` directory, when process `pid` is gone.
fn remove_stale_leftovers() {
    let listed = ip(&["netns", "list"]);
    if listed.success() {
        for line in listed.stdout.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if let Some(pid) = dead_owner(name) {
                let deleted = ip(&["netns", "del", name]);
                stderr_line(&format!(
                    "multihost: deleted the stale namespace {name} (process {pid} is gone): {}",
                    if deleted.success() { "ok" } else { "failed" }
                ));
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-logs") && dead_owner(&name).is_some() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// 32 random bytes from the kernel, in hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The counters of one node's `/stats` that the test looks at.
#[derive(Debug, Clone, Default)]
struct Counters {
    local_loads: u64,
    peer_loads: u64,
    peer_errors: u64,
    peer_skips: u64,
    server_requests: u64,
    skipped_peers: Vec<String>,
}

impl Counters {
    fn from_stats(stats: &Value) -> Self {
        let source = stats["sources"]
            .as_array()
            .and_then(|sources| sources.iter().find(|s| s["name"] == SOURCE))
            .unwrap_or_else(|| panic!("/stats has no source {SOURCE}: {stats}"));
        let field = |name: &str| {
            source["stats"][name]
                .as_u64()
                .unwrap_or_else(|| panic!("/stats lacks {name}: {stats}"))
        };
        let skipped_peers = stats["cluster"]["skipped_peers"]
            .as_array()
            .unwrap_or_else(|| panic!("/stats lacks cluster.skipped_peers: {stats}"))
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        Self {
            local_loads: field("local_loads"),
            peer_loads: field("peer_loads"),
            peer_errors: field("peer_errors"),
            peer_skips: field("peer_skips"),
            server_requests: field("server_requests"),
            skipped_peers,
        }
    }
}

/// One node: its namespace, address and process.
#[derive(Debug)]
struct Node {
    namespace: String,
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

/// The namespaces, the nodes and their logs. Dropping it kills the nodes and deletes the
/// namespaces, whatever happened.
#[derive(Debug)]
struct Cluster {
    prefix: String,
    /// Every namespace created so far, the bridge's first.
    namespaces: Vec<String>,
    nodes: Vec<Node>,
    logs: PathBuf,
    ring: Ring,
    checks: usize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for namespace in self.namespaces.iter().rev() {
            let deleted = ip(&["netns", "del", namespace]);
            if !deleted.success() {
                stderr_line(&format!(
                    "multihost: cannot delete namespace {namespace}: {}",
                    deleted.describe()
                ));
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "----- node {} ({}): last log lines -----",
                    node.url, node.namespace
                );
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
            eprintln!(
                "multihost: the node logs are kept in {}",
                self.logs.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

impl Cluster {
    /// Creates the namespaces and the network, or returns `None` after skipping.
    fn network() -> Option<Self> {
        for program in ["ip", "curl"] {
            if !node_process::on_path(program) {
                skip(&format!("`{program}` is not on PATH"));
                return None;
            }
        }
        remove_stale_leftovers();
        let prefix = format!("gcmh-{}", std::process::id());
        let bridge_ns = format!("{prefix}-br");
        let added = ip(&["netns", "add", &bridge_ns]);
        if !added.success() {
            skip(&format!(
                "`ip netns add` is not permitted here (root or CAP_SYS_ADMIN is needed): {}",
                added.stderr.trim()
            ));
            return None;
        }
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-logs"));
        let urls: Vec<String> = (1..=3)
            .map(|i| format!("http://{}:{PORT}", addr(i)))
            .collect();
        let mut cluster = Self {
            prefix,
            namespaces: vec![bridge_ns.clone()],
            nodes: Vec::new(),
            logs,
            ring: Ring::new(REPLICAS, urls.clone()),
            checks: 0,
        };
        std::fs::create_dir_all(&cluster.logs).expect("create the log directory");

        ip_ok(&["-n", &bridge_ns, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &bridge_ns, "link", "set", "br0", "up"]);
        for (i, url) in (1..=3).zip(urls) {
            let namespace = format!("{}-{i}", cluster.prefix);
            ip_ok(&["netns", "add", &namespace]);
            cluster.namespaces.push(namespace.clone());
            let port = format!("v{i}");
            ip_ok(&[
                "-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &namespace,
            ]);
            ip_ok(&["-n", &bridge_ns, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &bridge_ns, "link", "set", &port, "up"]);
            ip_ok(&["-n", &namespace, "link", "set", "lo", "up"]);
            let cidr = format!("{}/24", addr(i));
            ip_ok(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"]);
            ip_ok(&["-n", &namespace, "link", "set", "eth0", "up"]);
            let log = cluster.logs.join(format!("node-{i}.log"));
            cluster.nodes.push(Node {
                namespace,
                url,
                log,
                child: None,
            });
        }
        Some(cluster)
    }

    /// Starts the three nodes and waits until each answers `/healthz`, and until each
    /// reaches the others.
    fn start_nodes(&mut self, binary: &Path) {
        let secret = random_secret();
        let peers = self
            .nodes
            .iter()
            .map(|n| n.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let setpriv = node_process::find_on_path("setpriv");
        for node in &mut self.nodes {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &node.namespace]);
            if let Some(setpriv) = &setpriv {
                // The node dies with this test's thread, even if the test is killed.
                command.arg(setpriv).args(["--pdeathsig", "KILL"]);
            }
            command.arg(binary);
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("GROUPCACHE_") {
                    command.env_remove(name);
                }
            }
            let log = File::create(&node.log).expect("create a node log");
            command
                .env("GROUPCACHE_LISTEN", format!("0.0.0.0:{PORT}"))
                .env("GROUPCACHE_SELF_URL", &node.url)
                .env("GROUPCACHE_PEER_URLS", &peers)
                .env("GROUPCACHE_PEER_SECRET", &secret)
                .env("GROUPCACHE_PEER_TIMEOUT_MS", "1000")
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone a log file handle"))
                .stderr(log);
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the node in {}: {e}", node.namespace));
            node.child = Some(child);
        }
        for i in 0..3 {
            let url = format!("{}/healthz", self.nodes[i].url);
            self.poll(&format!("node {} ready", i + 1), READY_DEADLINE, |c| {
                c.assert_running(i);
                (c.curl(i, &url).0 == 200).then_some(())
            });
        }
        for from in 0..3 {
            for to in 0..3 {
                let url = format!("{}/healthz", self.nodes[to].url);
                self.poll(
                    &format!("node {} reaching node {}", from + 1, to + 1),
                    STATE_DEADLINE,
                    |c| (c.curl(from, &url).0 == 200).then_some(()),
                );
            }
        }
    }

    fn assert_running(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(child) = node.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("node {} exited early: {status}", node.url);
        }
    }

    /// `GET url` from inside node `from`'s namespace: the status (0 when curl failed) and
    /// the body (or curl's error).
    fn curl(&self, from: usize, url: &str) -> (u16, String) {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.nodes[from].namespace, "curl"]);
        command
            .args(["-sS", "--globoff", "-w", "\n%{http_code}", "--max-time"])
            .arg(CURL_MAX_TIME.as_secs().to_string())
            .arg(url);
        let finished = run_with_deadline(command, CURL_MAX_TIME + Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("cannot run ip netns exec ... curl: {e}"));
        if !finished.success() {
            return (0, finished.describe());
        }
        let (body, status) = finished
            .stdout
            .rsplit_once('\n')
            .unwrap_or(("", finished.stdout.as_str()));
        (status.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// Asks node `i` for `key` (from its own namespace) and checks the value.
    fn get_ok(&mut self, i: usize, key: &str) {
        let url = format!("{}/get/{key}", self.nodes[i].url);
        let (status, body) = self.curl(i, &url);
        assert_eq!(
            (status, body.as_str()),
            (200, format!("value-of:{key}").as_str()),
            "GET {url} from node {}",
            i + 1
        );
        self.checks += 1;
    }

    /// Node `i`'s `/stats`, read on 127.0.0.1 inside its namespace (so also while its link
    /// is down).
    fn stats(&self, i: usize) -> Value {
        let url = format!("http://127.0.0.1:{PORT}/stats");
        let (status, body) = self.curl(i, &url);
        assert_eq!(status, 200, "GET /stats of node {}: {body}", i + 1);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/stats of node {} is not JSON ({e}): {body}", i + 1))
    }

    fn counters(&self, i: usize) -> Counters {
        Counters::from_stats(&self.stats(i))
    }

    fn all_counters(&self) -> Vec<Counters> {
        (0..3).map(|i| self.counters(i)).collect()
    }

    /// The index of the node that owns `key`.
    fn owner(&self, key: &str) -> usize {
        let owner = self.ring.owner(key).expect("the ring has peers");
        self.nodes
            .iter()
            .position(|n| n.url == owner)
            .expect("the owner is a node")
    }

    /// `count` keys `{prefix}:{n}` that node `owner` owns, with `n` counting from `*next`.
    fn keys_owned_by(
        &self,
        owner: usize,
        prefix: &str,
        next: &mut usize,
        count: usize,
    ) -> Vec<String> {
        let mut keys = Vec::new();
        for _ in 0..10_000 {
            if keys.len() == count {
                return keys;
            }
            let key = format!("{prefix}:{next}");
            *next += 1;
            if self.owner(&key) == owner {
                keys.push(key);
            }
        }
        panic!("node {} owns too few keys", owner + 1);
    }

    /// Calls `attempt` until it gives a value, at most until `deadline` passes.
    fn poll<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut attempt: impl FnMut(&mut Self) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            if let Some(value) = attempt(self) {
                self.checks += 1;
                return value;
            }
            assert!(
                Instant::now() < end,
                "{what}: not reached within {deadline:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn set_link(&self, i: usize, state: &str) {
        ip_ok(&["-n", &self.nodes[i].namespace, "link", "set", "eth0", state]);
    }

    /// SIGTERM to each node; each must exit with status 0 after logging its shutdown.
    fn stop_nodes(&mut self) {
        for node in &mut self.nodes {
            let mut child = node.child.take().expect("the node runs");
            assert!(
                node_process::signal(child.id(), "TERM"),
                "cannot signal {}",
                node.url
            );
            let status = node_process::wait_until(&mut child, Instant::now() + STOP_DEADLINE);
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let status = status.unwrap_or_else(|| {
                panic!("{} still running {STOP_DEADLINE:?} after SIGTERM", node.url)
            });
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM",
                node.url
            );
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            assert!(
                log.contains("shutting down"),
                "{} did not log its graceful shutdown",
                node.url
            );
            self.checks += 1;
        }
    }
}

/// The address of node `i` (1, 2 or 3).
fn addr(i: usize) -> String {
    format!("10.203.0.{}", 10 + i)
}

fn deltas(before: &[Counters], after: &[Counters], field: fn(&Counters) -> u64) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| field(a) - field(b))
        .collect()
}

#[test]
fn three_hosts_partition_and_heal() {
    let started = Instant::now();
    let Some(mut cluster) = Cluster::network() else {
        return;
    };
    let binary = node_process::node_binary();
    let built = started.elapsed();
    cluster.start_nodes(&binary);
    let ready = started.elapsed();
    let [n1, n2, n3] = [0, 1, 2];
    let n3_url = cluster.nodes[n3].url.clone();

    // 1. Every key through every node: right values, one load per key, by its owner.
    let keys: Vec<String> = (1..=KEYS).map(|k| format!("user:{k}")).collect();
    for key in &keys {
        for i in 0..3 {
            cluster.get_ok(i, key);
        }
    }
    let counters = cluster.all_counters();
    let mut owned = BTreeMap::new();
    for key in &keys {
        *owned.entry(cluster.owner(key)).or_insert(0u64) += 1;
    }
    for (i, c) in counters.iter().enumerate() {
        let expected = owned.get(&i).copied().unwrap_or(0);
        assert_eq!(
            c.local_loads,
            expected,
            "phase 1: node {} loaded {} keys, but owns {expected} of them: {counters:?}",
            i + 1,
            c.local_loads
        );
        assert_eq!(
            c.peer_errors,
            0,
            "phase 1: node {} had peer errors: {c:?}",
            i + 1
        );
    }
    assert!(
        owned.get(&n3).copied().unwrap_or(0) > 0,
        "node 3 owns none of the keys"
    );
    let served: u64 = counters.iter().map(|c| c.server_requests).sum();
    let fetched: u64 = counters.iter().map(|c| c.peer_loads).sum();
    assert!(
        served > 0 && fetched > 0,
        "phase 1: no peer traffic: {counters:?}"
    );
    cluster.checks += 3;
    for (from, to) in [(n1, n2), (n2, n3), (n3, n1)] {
        let url = format!("{}/_groupcache/{SOURCE}/user:1", cluster.nodes[to].url);
        let (status, body) = cluster.curl(from, &url);
        assert_eq!(status, 401, "unsigned GET {url}: {body}");
        cluster.checks += 1;
    }
    let phase1 = started.elapsed();

    // 2. Node 3 cut off: nodes 1 and 2 answer everything, loading node 3's keys themselves.
    cluster.set_link(n3, "down");
    let mut next = 0;
    let mut part_keys = cluster.keys_owned_by(n3, "partition", &mut next, 4);
    part_keys.extend(cluster.keys_owned_by(n1, "partition", &mut next, 2));
    part_keys.extend(cluster.keys_owned_by(n2, "partition", &mut next, 2));
    let before = cluster.all_counters();
    for key in &part_keys {
        for i in [n1, n2] {
            cluster.get_ok(i, key);
        }
    }
    let after = cluster.all_counters();
    let loads = deltas(&before, &after, |c| c.local_loads);
    let errors = deltas(&before, &after, |c| c.peer_errors);
    let skips = deltas(&before, &after, |c| c.peer_skips);
    let count = |owner: usize| {
        part_keys
            .iter()
            .filter(|k| cluster.owner(k) == owner)
            .count()
    };
    let expected = [
        (count(n1) + count(n3)) as u64,
        (count(n2) + count(n3)) as u64,
        0,
    ];
    assert_eq!(
        loads, expected,
        "phase 2: loads per node (node 3's keys load on the asking node, the others on their owner)"
    );
    assert!(
        errors[n1] > 0 && errors[n2] > 0,
        "phase 2: no peer errors counted: errors {errors:?}, skips {skips:?}"
    );
    cluster.checks += 2;
    for i in [n1, n2] {
        let mut probe = 0;
        cluster.poll(
            &format!("node {} skipping node 3", i + 1),
            STATE_DEADLINE,
            |c| {
                if c.counters(i).skipped_peers.contains(&n3_url) {
                    return Some(());
                }
                // Another failure of node 3's keys moves the peer's health on.
                let key = c.keys_owned_by(n3, &format!("skip{i}"), &mut probe, 1);
                c.get_ok(i, &key[0]);
                None
            },
        );
    }
    let phase2 = started.elapsed();

    // 3. Healed: node 1 reaches node 3 again, stops skipping it, and node 3 loads its keys.
    cluster.set_link(n3, "up");
    let health = format!("{n3_url}/healthz");
    cluster.poll("node 1 reaching node 3 again", STATE_DEADLINE, |c| {
        (c.curl(n1, &health).0 == 200).then_some(())
    });
    let mut probe = 0;
    cluster.poll("node 1 no longer skipping node 3", STATE_DEADLINE, |c| {
        if !c.counters(n1).skipped_peers.contains(&n3_url) {
            return Some(());
        }
        // Once the cooldown is over, one of these gets is the probe that heals node 3.
        let key = c.keys_owned_by(n3, "heal-probe", &mut probe, 1);
        c.get_ok(n1, &key[0]);
        None
    });
    let key = cluster.keys_owned_by(n3, "healed", &mut 0, 1).remove(0);
    let before = cluster.all_counters();
    cluster.get_ok(n1, &key);
    let after = cluster.all_counters();
    assert_eq!(
        deltas(&before, &after, |c| c.local_loads),
        [0, 0, 1],
        "phase 3: {key} must be loaded once, by node 3: before {before:?}, after {after:?}"
    );
    assert_eq!(
        after[n1].peer_loads - before[n1].peer_loads,
        1,
        "phase 3: node 1 fetches {key} from node 3"
    );
    cluster.checks += 2;
    cluster.stop_nodes();

    let line = format!(
        "multihost: three nodes in network namespaces, partitioned and healed: {} checks \
         passed in {:.1?} (node binary {:.1?}, nodes ready {:.1?}, phase 1 {:.1?}, phase 2 \
         {:.1?}, phase 3 and stop {:.1?})",
        cluster.checks,
        started.elapsed(),
        built,
        ready - built,
        phase1 - ready,
        phase2 - phase1,
        started.elapsed() - phase2,
    );
    drop(cluster);
    stderr_line(&line);
    let marker = target_dir().join("multihost-ran");
    append_line(&marker, &line).unwrap_or_else(|e| panic!("write {}: {e}", marker.display()));
}
