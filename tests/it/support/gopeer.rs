//! Real golang/groupcache nodes (`tests/interop/gopeer`) as child processes on 127.0.0.1,
//! nodes of this crate beside them, and a data source that gives the same bytes as the Go
//! getter, so that a value is the same whichever node loads it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tower_groupcache::protocol::escape;
use tower_groupcache::{Groupcache, Loaded, SourceStats};

use crate::support;

/// The group (data source) every node of a mixed cluster serves.
pub(crate) const GROUP: &str = "users";

/// How long a Go node may take to print `READY`, and an HTTP exchange to complete.
const DEADLINE: Duration = Duration::from_secs(20);

/// The time to live our data source gives to keys starting with `ttl:`.
pub(crate) const TTL: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Prerequisites, build, skip, marker

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<crate>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The file each interop test appends a line to when it really ran; `.ci/run` checks it.
pub(crate) fn marker_path() -> PathBuf {
    target_dir().join("interop-ran")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file()
                && std::fs::metadata(&candidate)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt as _;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

/// Why the Go peer cannot be built here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    const INSTALL: &str = "apt-get install -y golang-go golang-github-golang-groupcache-dev \
                           golang-goprotobuf-dev";
    if !on_path("go") {
        return Some(format!("`go` is not on PATH; install it with: {INSTALL}"));
    }
    let gocode = std::env::var_os("GOCODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/gocode"));
    let groupcache = gocode.join("src/github.com/golang/groupcache/groupcache.go");
    if !groupcache.is_file() {
        return Some(format!(
            "golang/groupcache sources not found at {}; install them with: {INSTALL}",
            groupcache.display()
        ));
    }
    let proto = gocode.join("src/github.com/golang/protobuf/proto");
    if !proto.is_dir() {
        return Some(format!(
            "golang/protobuf sources not found at {}; install them with: {INSTALL}",
            proto.display()
        ));
    }
    None
}

/// Builds `gopeer` once per test binary. `Err` is the reason to skip (Go is missing); a Go
/// that is present but fails to build the peer is a test failure (a panic).
fn build() -> Result<PathBuf, String> {
    if let Some(reason) = missing_prerequisite() {
        return Err(reason);
    }
    let dir = target_dir().join("gopeer");
    std::fs::create_dir_all(&dir).expect("create the gopeer output directory");
    // Built under a name of its own, then renamed into place: another test run that is
    // executing the old binary keeps its inode.
    let tmp = dir.join(format!("gopeer.{}.tmp", std::process::id()));
    let out = dir.join("gopeer");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/gopeer/build.sh");
    let built = std::process::Command::new(&script)
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        built.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        built.status,
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the built gopeer into place");
    Ok(out)
}

/// The Go peer binary, or `None` after printing `SKIPPED: ...` when Go is missing. With
/// `GROUPCACHE_REQUIRE_GO=1` (set by `.ci/run`) a missing Go is a failure instead.
pub(crate) fn binary_or_skip(test: &str) -> Option<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(build) {
        Ok(path) => Some(path.clone()),
        Err(reason) => {
            if std::env::var("GROUPCACHE_REQUIRE_GO").as_deref() == Ok("1") {
                panic!("GROUPCACHE_REQUIRE_GO=1, but the Go interop peer is unavailable: {reason}");
            }
            // Straight to stderr: the test harness does not capture it, so it shows in the log.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: the Go interop peer is unavailable: {reason}"
            );
            None
        }
    }
}

/// Counts the checks of one test and, when it ends, records that it really ran.
#[derive(Debug)]
pub(crate) struct Checks {
    test: &'static str,
    count: usize,
}

impl Checks {
    pub(crate) fn new(test: &'static str) -> Self {
        Self { test, count: 0 }
    }

    /// One more check passed.
    pub(crate) fn passed(&mut self) {
        self.count += 1;
    }

    /// Appends `interop: <test>: ran N mixed-cluster checks` to the marker file.
    pub(crate) fn done(self) {
        assert!(self.count > 0, "{}: no check ran", self.test);
        let line = format!(
            "interop: {}: ran {} mixed-cluster checks",
            self.test, self.count
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        let path = marker_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the target directory");
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        file.write_all(format!("{line}\n").as_bytes())
            .expect("write the interop marker");
    }
}

/// The Go peer's binary, or return from the test after printing why it is skipped.
macro_rules! go_or_skip {
    ($test:literal) => {
        match $crate::support::gopeer::binary_or_skip($test) {
            Some(binary) => binary,
            None => return,
        }
    };
}
pub(crate) use go_or_skip;

// ---------------------------------------------------------------------------------------------
// Values and our data source

/// The value the Go getter (`valueFor` in main.go) gives for `key`, or its error: `fail:...`
/// fails; `size:N:...` is `value-of:<key>` repeated and cut to N bytes; anything else is
/// `value-of:<key>`.
pub(crate) fn go_value(key: &str) -> Result<Bytes, String> {
    const MAX_SIZED_VALUE: usize = 256 << 20;
    if key.starts_with("fail:") {
        return Err(format!("getter failed for key {key:?}"));
    }
    let base = format!("value-of:{key}");
    if let Some(rest) = key.strip_prefix("size:") {
        let (n, _) = rest
            .split_once(':')
            .ok_or_else(|| format!("bad size key {key:?}"))?;
        // Go's strconv.Atoi takes an optional sign; "+N" and "-0" are the only odd spellings
        // a test could give, and none does.
        let n: usize = n
            .parse()
            .ok()
            .filter(|n| *n <= MAX_SIZED_VALUE)
            .ok_or_else(|| format!("bad size in key {key:?}"))?;
        return Ok(base.bytes().cycle().take(n).collect::<Vec<u8>>().into());
    }
    Ok(base.into())
}

/// [`go_value`] of a key the getter knows.
pub(crate) fn value(key: &str) -> Bytes {
    go_value(key).expect("a key the getter knows")
}

type LoadFuture = Pin<Box<dyn Future<Output = Result<Loaded, std::io::Error>> + Send>>;

/// Our nodes' data source: the Go getter's values, recording which node loaded which key.
///
/// On top of the Go getter: `missing:...` is *not found* (our 204 extension), and `ttl:...`
/// gets a time to live of [`TTL`] (our `expire` extension); the bytes stay the Go getter's.
#[derive(Clone, Default)]
pub(crate) struct OurLoads {
    by_key: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl OurLoads {
    /// The nodes of ours that loaded `key`, in order.
    pub(crate) fn of(&self, key: &str) -> Vec<String> {
        self.by_key
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn source(
        &self,
        node: &str,
    ) -> impl Fn(String) -> LoadFuture + Send + Sync + 'static {
        let (by_key, node) = (self.by_key.clone(), node.to_owned());
        move |key: String| {
            by_key
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .push(node.clone());
            Box::pin(async move {
                if key.starts_with("missing:") {
                    return Ok(Loaded::not_found());
                }
                let value = go_value(&key).map_err(std::io::Error::other)?;
                let loaded = Loaded::new(value);
                Ok(if key.starts_with("ttl:") {
                    loaded.with_ttl(TTL)
                } else {
                    loaded
                })
            })
        }
    }
}

/// Panics with a short message (not 1 MiB of bytes) if `actual` is not `expected`.
#[track_caller]
pub(crate) fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let show = |b: &[u8]| {
        let end = (at + 40).min(b.len());
        String::from_utf8_lossy(&b[at.min(end)..end]).into_owned()
    };
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {at}: got {:?}, want {:?}",
        actual.len(),
        expected.len(),
        show(actual),
        show(expected)
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP by hand

/// A status, headers and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One pooled HTTP/1.1 client for the requests a test makes by hand.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            client: support::client(),
        }
    }
}

impl Http {
    /// Sends `method` to `uri` (already escaped) with extra `headers`, bounded by a deadline.
    pub(crate) async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).expect("a valid test request");
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => panic!("{method} {uri}: {e}"),
            Err(_) => panic!("{method} {uri}: no answer within {DEADLINE:?}"),
        }
    }

    pub(crate) async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[]).await
    }
}

// ---------------------------------------------------------------------------------------------
// A Go node

/// golang/groupcache's counters of one group, from gopeer's `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GoStats {
    pub gets: u64,
    pub cache_hits: u64,
    pub peer_loads: u64,
    pub peer_errors: u64,
    pub loads: u64,
    pub local_loads: u64,
    pub local_load_errs: u64,
    pub server_requests: u64,
    pub getter_loads: u64,
}

/// The first `"<field>": <integer>` in gopeer's indented JSON. The `Stats` object comes
/// before the caches', so `Gets` is the group's.
fn json_number(json: &str, field: &str) -> u64 {
    let needle = format!("\"{field}\": ");
    let at = json
        .find(&needle)
        .unwrap_or_else(|| panic!("no {field} in /stats: {json}"))
        + needle.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in /stats: {json}"))
}

/// A `gopeer` child process. Dropping it kills the process (SIGKILL to its PID).
pub(crate) struct GoNode {
    pub url: String,
    pub pid: u32,
    child: Child,
    /// Kept open so that the child never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    http: Http,
}

impl fmt::Debug for GoNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoNode")
            .field("url", &self.url)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl GoNode {
    /// Starts a Go node on a free port of 127.0.0.1 with `peers`, where `SELF` stands for
    /// its own URL.
    pub(crate) async fn start_on_free_port(binary: &Path, peers: &[String], http: &Http) -> Self {
        Self::start(binary, None, "127.0.0.1:0", peers, http)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a Go node on a free port of 127.0.0.1, its own only peer.
    pub(crate) async fn start_alone(binary: &Path) -> Self {
        Self::start_on_free_port(binary, &["SELF".into()], &Http::default()).await
    }

    /// Starts a Go node on a free port of 127.0.0.1 that names itself `self_url` in `peers`
    /// (a proxy in front of it, say); its `url` is where it listens.
    pub(crate) async fn start_known_as(
        binary: &Path,
        self_url: &str,
        peers: &[String],
        http: &Http,
    ) -> Self {
        Self::start(binary, Some(self_url), "127.0.0.1:0", peers, http)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `gopeer -listen <listen> -peers <peers>` and waits for its `READY` line; its
    /// `url` is the bound address. `self_url` `None` means "the bound address", with `SELF`
    /// in `peers`. The `Err` holds what the process wrote to stderr.
    async fn start(
        binary: &Path,
        self_url: Option<&str>,
        listen: &str,
        peers: &[String],
        http: &Http,
    ) -> Result<Self, String> {
        let mut command = Command::new(binary);
        if let Some(url) = self_url {
            command.args(["-self", url]);
        }
        command
            .args([
                "-listen",
                listen,
                "-peers",
                &peers.join(","),
                "-group",
                GROUP,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let pid = child.id().expect("a running child has a PID");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let drain = {
            let stderr = stderr.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = err_lines.next_line().await {
                    let mut stderr = stderr.lock().unwrap();
                    stderr.push_str(&line);
                    stderr.push('\n');
                }
            })
        };

        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let ready = tokio::time::timeout(DEADLINE, async {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {
                        if let Some(addr) = line.trim().strip_prefix("READY ") {
                            return Some(addr.to_owned());
                        }
                    }
                }
            }
        })
        .await;
        let addr = match ready {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                // The process ended before READY: its stderr says why.
                let status = tokio::time::timeout(DEADLINE, child.wait()).await;
                let _ = tokio::time::timeout(DEADLINE, drain).await;
                let stderr = stderr.lock().unwrap().clone();
                return Err(format!(
                    "gopeer (pid {pid}) exited before READY ({status:?}): {stderr}"
                ));
            }
            Err(_) => {
                let _ = child.start_kill();
                let stderr = stderr.lock().unwrap().clone();
                return Err(format!(
                    "gopeer (pid {pid}) printed no READY within {DEADLINE:?}: {stderr}"
                ));
            }
        };
        Ok(Self {
            url: format!("http://{addr}"),
            pid,
            child,
            _stdout: stdout,
            http: http.clone(),
        })
    }

    /// Kills the process (SIGKILL to its PID) and waits until it is gone: its port is closed
    /// when this returns.
    pub(crate) async fn stop(&mut self) {
        let _ = self.child.start_kill();
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("a killed gopeer exits")
            .expect("wait for gopeer");
    }

    /// `group.Get` through the Go node's front, `GET /get?key=K`: the value, or the
    /// status and error text.
    pub(crate) async fn try_get(&self, key: &str) -> Result<Bytes, (StatusCode, String)> {
        let reply = self
            .http
            .get(&format!(
                "{}/get?group={GROUP}&key={}",
                self.url,
                escape(key)
            ))
            .await;
        if reply.status == StatusCode::OK {
            Ok(reply.body)
        } else {
            Err((
                reply.status,
                String::from_utf8_lossy(&reply.body).into_owned(),
            ))
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Bytes {
        self.try_get(key)
            .await
            .unwrap_or_else(|e| panic!("Go node {}: get {key:?}: {e:?}", self.url))
    }

    /// How often the Go getter ran for `key` on this node.
    pub(crate) async fn loads(&self, key: &str) -> u64 {
        let reply = self
            .http
            .get(&format!(
                "{}/loads?group={GROUP}&key={}",
                self.url,
                escape(key)
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}/loads", self.url);
        std::str::from_utf8(&reply.body)
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("/loads answered {:?}", reply.body))
    }

    /// The owner of `key` on the Go node's own `consistenthash` ring.
    pub(crate) async fn owner(&self, key: &str) -> String {
        let reply = self
            .http
            .get(&format!("{}/owner?key={}", self.url, escape(key)))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}/owner", self.url);
        String::from_utf8(reply.body.to_vec()).expect("a URL")
    }

    pub(crate) async fn stats(&self) -> GoStats {
        let reply = self
            .http
            .get(&format!("{}/stats?group={GROUP}", self.url))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}/stats", self.url);
        let json = String::from_utf8_lossy(&reply.body);
        GoStats {
            gets: json_number(&json, "Gets"),
            cache_hits: json_number(&json, "CacheHits"),
            peer_loads: json_number(&json, "PeerLoads"),
            peer_errors: json_number(&json, "PeerErrors"),
            loads: json_number(&json, "Loads"),
            local_loads: json_number(&json, "LocalLoads"),
            local_load_errs: json_number(&json, "LocalLoadErrs"),
            server_requests: json_number(&json, "ServerRequests"),
            getter_loads: json_number(&json, "GetterLoads"),
        }
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        // SIGKILL to the child's PID; kill_on_drop does the same, and tokio reaps it.
        let _ = self.child.start_kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Our node

/// A node of this crate, serving `support::app` (the front `/get` and the peer path).
pub(crate) struct OurNode {
    pub url: String,
    pub cache: Groupcache,
    server: tokio::task::JoinHandle<()>,
}

impl OurNode {
    pub(crate) async fn get(&self, key: &str) -> Bytes {
        self.cache
            .handle()
            .get(GROUP, key)
            .await
            .unwrap_or_else(|e| panic!("our node {}: get {key:?}: {e}", self.url))
    }

    pub(crate) fn stats(&self) -> SourceStats {
        self.cache.stats().source(GROUP).expect("the group").stats
    }
}

impl Drop for OurNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// A mixed cluster

/// One node of a mixed cluster, by kind and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Ours(usize),
    Go(usize),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Ours(i) => write!(f, "ours[{i}]"),
            At::Go(i) => write!(f, "go[{i}]"),
        }
    }
}

/// Nodes of ours and Go nodes on 127.0.0.1 with one peer list: ours first, then the Go
/// nodes, in the same order everywhere.
pub(crate) struct Mixed {
    pub ours: Vec<OurNode>,
    pub go: Vec<GoNode>,
    pub peers: Vec<String>,
    pub loads: OurLoads,
    pub http: Http,
}

impl Mixed {
    /// Starts `ours` nodes of this crate and `go` Go nodes.
    ///
    /// Every node needs the whole peer list before it starts. Ours bind 127.0.0.1:0 first.
    /// The first Go node binds 127.0.0.1:0 itself (`-listen 127.0.0.1:0`, `SELF` in its
    /// list) and reports its address, so it needs no reserved port. Any further Go node needs
    /// its URL in the first one's list: its port is reserved by binding 127.0.0.1:0 and
    /// released just before that node starts. If another process takes the port in that
    /// instant, the node fails to bind and the whole cluster is started again (3 attempts).
    pub(crate) async fn start(binary: &Path, ours: usize, go: usize) -> Self {
        let mut last = String::new();
        for _attempt in 0..3 {
            match Self::try_start(binary, ours, go).await {
                Ok(cluster) => return cluster,
                Err(e) if e.contains("address already in use") => last = e,
                Err(e) => panic!("starting a mixed cluster of {ours}+{go}: {e}"),
            }
        }
        panic!(
            "starting a mixed cluster of {ours}+{go}: a reserved port was taken 3 times: {last}"
        );
    }

    async fn try_start(binary: &Path, ours: usize, go: usize) -> Result<Self, String> {
        assert!(ours >= 1 && go >= 1, "a mixed cluster");
        let http = Http::default();
        let mut listeners = Vec::new();
        for _ in 0..ours {
            listeners.push(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0"),
            );
        }
        let our_urls: Vec<String> = listeners
            .iter()
            .map(|l| format!("http://{}", l.local_addr().unwrap()))
            .collect();

        // Ports of Go nodes 1.., held until each node starts.
        let mut reserved = Vec::new();
        for _ in 1..go {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let url = format!("http://{}", listener.local_addr().unwrap());
            reserved.push((url, listener));
        }
        let reserved_urls: Vec<String> = reserved.iter().map(|(url, _)| url.clone()).collect();

        let mut go_nodes: Vec<GoNode> = Vec::new();
        let first_peers: Vec<String> = our_urls
            .iter()
            .cloned()
            .chain(std::iter::once("SELF".to_owned()))
            .chain(reserved_urls.iter().cloned())
            .collect();
        go_nodes.push(GoNode::start(binary, None, "127.0.0.1:0", &first_peers, &http).await?);
        let peers: Vec<String> = our_urls
            .iter()
            .cloned()
            .chain(std::iter::once(go_nodes[0].url.clone()))
            .chain(reserved_urls.iter().cloned())
            .collect();
        for (url, listener) in reserved {
            let listen = url.trim_start_matches("http://").to_owned();
            drop(listener);
            go_nodes.push(GoNode::start(binary, Some(&url), &listen, &peers, &http).await?);
        }

        let loads = OurLoads::default();
        let mut nodes = Vec::new();
        for (listener, url) in listeners.into_iter().zip(&our_urls) {
            let cache = Groupcache::builder()
                .open_peer_path()
                .self_url(url.clone())
                .peers(peers.clone())
                .source(GROUP, loads.source(url))
                .build()
                .expect("a valid node");
            let server = support::serve(listener, support::app(&cache)).await;
            nodes.push(OurNode {
                url: url.clone(),
                cache,
                server,
            });
        }
        Ok(Self {
            ours: nodes,
            go: go_nodes,
            peers,
            loads,
            http,
        })
    }

    /// Kills every Go node and waits for each to exit (reaped, not left as a zombie), then
    /// stops ours. Dropping the cluster kills the Go nodes too, without waiting.
    pub(crate) async fn stop(mut self) {
        for node in &mut self.go {
            node.stop().await;
        }
    }

    /// Every node: ours, then the Go nodes.
    pub(crate) fn all(&self) -> Vec<At> {
        (0..self.ours.len())
            .map(At::Ours)
            .chain((0..self.go.len()).map(At::Go))
            .collect()
    }

    pub(crate) fn url(&self, at: At) -> &str {
        match at {
            At::Ours(i) => &self.ours[i].url,
            At::Go(i) => &self.go[i].url,
        }
    }

    /// The owner of `key` on our ring.
    pub(crate) fn owner(&self, key: &str) -> String {
        self.ours[0]
            .cache
            .ring()
            .owner(key)
            .expect("a ring")
            .to_owned()
    }

    /// `base` itself if `owner` owns it, else the first `base<i>` that `owner` owns.
    pub(crate) fn key_owned_by(&self, owner: At, base: &str) -> String {
        let ring = self.ours[0].cache.ring();
        let owner = self.url(owner);
        std::iter::once(base.to_owned())
            .chain((0..100_000).map(|i| format!("{base}{i}")))
            .find(|k| ring.owner(k) == Some(owner))
            .expect("some key lands on every peer")
    }

    /// A get through node `at`: `CacheHandle::get` on ours, the front `/get` on a Go node.
    pub(crate) async fn get(&self, at: At, key: &str) -> Bytes {
        match at {
            At::Ours(i) => self.ours[i].get(key).await,
            At::Go(i) => self.go[i].get(key).await,
        }
    }

    /// Every node that ran its data source for `key`, once per load, sorted.
    pub(crate) async fn loaders(&self, key: &str) -> Vec<String> {
        let mut loaders = self.loads.of(key);
        for node in &self.go {
            for _ in 0..node.loads(key).await {
                loaders.push(node.url.clone());
            }
        }
        loaders.sort();
        loaders
    }
}
