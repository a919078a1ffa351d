//! Black-box checks of what the documentation promises for many keys at once (`get_many`,
//! batch loads, `gather_loads`) and for writes (`set`, `remove_many`): docs/guide.md ("Many
//! keys at once", "Writes", "Typed keys and values"), docs/protocol.md ("Batched gets",
//! "Removal", "Writes") and the rustdoc of `CacheHandle` and `TypedHandle`. Every test runs
//! real nodes talking HTTP on 127.0.0.1, and waits for state by polling with a deadline.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tower_groupcache::{
    CacheHandle, Error, ErrorKind, Groupcache, GroupcacheBuilder, HotKeys, Loaded, LoadedMany,
    ManualClock, Source, SourceOptions, batch_fn,
};

use crate::support::recorded::{
    DEADLINE, Gate, cluster_per_node, delta, spawn_get, spawn_get_many, within,
};
use crate::support::{
    Loads, Node, cluster, eventually, key_owned_by, listeners, peer_stats, start_node,
};

// ---------------------------------------------------------------------------------------
// A data source that records each call it gets.
// ---------------------------------------------------------------------------------------

/// One call of the data source: on which node, `load` (one key) or `load_many`, which keys.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    node: String,
    many: bool,
    keys: Vec<String>,
}

/// The record of every node's data source for `items`, shared by the nodes of a test.
///
/// Values are `{generation}:{key}`; the generation is bumped by a test to tell a value loaded
/// before a change from one loaded after. Keys starting with `missing:` are answered *not
/// found* explicitly, `absent:` are left out of the batch, `fail:` fail alone
/// (`LoadedMany::fail`), `ttl10:` and `ttl100:` live 10 s and 100 s; a batch with a `boom:`
/// key fails whole (`Err`), one with a `panic:` key panics. A closed gate holds every call.
#[derive(Clone, Default)]
struct Rec {
    calls: Arc<Mutex<Vec<Call>>>,
    gate: Gate,
    generation: Arc<AtomicUsize>,
}

impl Rec {
    fn close(&self) {
        self.gate.close();
    }

    fn open(&self) {
        self.gate.open();
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The value of `key` now: `{generation}:{key}`, padded with spaces to 150 bytes for a
    /// `big:` key and to 60 for a `mid:` key.
    fn value(&self, key: &str) -> String {
        let value = format!("{}:{key}", self.generation.load(Ordering::SeqCst));
        if key.starts_with("big:") {
            format!("{value:<150}")
        } else if key.starts_with("mid:") {
            format!("{value:<60}")
        } else {
            value
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// How many times `key` was given to a data source, on any node.
    fn loads_of(&self, key: &str) -> usize {
        self.calls()
            .iter()
            .flat_map(|c| c.keys.iter())
            .filter(|k| *k == key)
            .count()
    }

    /// The nodes that loaded `key`, in order.
    fn loaders_of(&self, key: &str) -> Vec<String> {
        self.calls()
            .iter()
            .flat_map(|c| c.keys.iter().filter(|k| *k == key).map(|_| c.node.clone()))
            .collect()
    }

    /// Whether some call was given `key`.
    fn started(&self, key: &str) -> bool {
        self.loads_of(key) > 0
    }

    fn source(&self, node: &str) -> RecSource {
        RecSource {
            rec: self.clone(),
            node: node.to_owned(),
        }
    }

    async fn answer(
        &self,
        node: &str,
        many: bool,
        keys: &[String],
    ) -> Result<LoadedMany, std::io::Error> {
        self.calls.lock().unwrap().push(Call {
            node: node.to_owned(),
            many,
            keys: keys.to_vec(),
        });
        self.gate.pass().await;
        if keys.iter().any(|k| k.starts_with("panic:")) {
            panic!("data source bug in a batch of {} keys", keys.len());
        }
        if keys.iter().any(|k| k.starts_with("boom:")) {
            return Err(std::io::Error::other(
                "the back end refused the whole batch",
            ));
        }
        let mut many = LoadedMany::new();
        for key in keys {
            if key.starts_with("absent:") {
                continue;
            } else if key.starts_with("missing:") {
                many.insert(key.clone(), Loaded::not_found());
            } else if key.starts_with("fail:") {
                many.fail(key.clone(), format!("no row for {key}"));
            } else if key.starts_with("ttl10:") {
                many.insert(
                    key.clone(),
                    Loaded::new(self.value(key)).with_ttl(Duration::from_secs(10)),
                );
            } else if key.starts_with("ttl100:") {
                many.insert(
                    key.clone(),
                    Loaded::new(self.value(key)).with_ttl(Duration::from_secs(100)),
                );
            } else {
                many.insert(key.clone(), Loaded::new(self.value(key)));
            }
        }
        Ok(many)
    }
}

/// The data source of one node, recording into a shared [`Rec`].
#[derive(Clone)]
struct RecSource {
    rec: Rec,
    node: String,
}

impl Source for RecSource {
    type Error = std::io::Error;

    async fn load(&self, key: &str) -> Result<Loaded, Self::Error> {
        match self
            .rec
            .answer(&self.node, false, &[key.to_owned()])
            .await?
            .remove(key)
        {
            None => Ok(Loaded::not_found()),
            Some(Ok(loaded)) => Ok(loaded),
            Some(Err(error)) => Err(std::io::Error::other(error)),
        }
    }

    async fn load_many(&self, keys: &[String]) -> Result<LoadedMany, Self::Error> {
        self.rec.answer(&self.node, true, keys).await
    }
}

/// `n` nodes on 127.0.0.1, each with the source `items` recording into `rec` (with
/// `options`), and whatever `configure` adds.
async fn items_cluster(
    n: usize,
    rec: &Rec,
    options: SourceOptions,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> Vec<Node> {
    cluster_per_node(n, &Loads::default(), |url, b| {
        configure(b.source_with("items", rec.source(url), options))
    })
    .await
}

/// Three nodes with the source `items` recording into `rec` (with `options`) and the hot-key
/// policy `hot`, sharing one `ManualClock`, returned with them.
async fn clocked_three(
    rec: &Rec,
    options: SourceOptions,
    hot: HotKeys,
) -> (ManualClock, Vec<Node>) {
    let clock = ManualClock::new();
    let nodes = items_cluster(3, rec, options, |b| b.clock(clock.clone()).hot_keys(hot)).await;
    (clock, nodes)
}

/// Three nodes with the source `items` recording into `rec` and the hot-key policy `hot`.
async fn three_nodes(rec: &Rec, hot: HotKeys) -> Vec<Node> {
    items_cluster(3, rec, SourceOptions::new(), |b| b.hot_keys(hot)).await
}

fn stats(node: &Node) -> tower_groupcache::SourceStats {
    node.stats("items")
}

/// A result as text: the value, or the error's kind.
fn show(result: &Result<Bytes, Error>) -> String {
    match result {
        Ok(value) => String::from_utf8_lossy(value).into_owned(),
        Err(error) => format!("{:?}", error.kind()),
    }
}

/// A get of `key` from `items` through `node`, as [`show`] gives it.
async fn get_shown(node: &Node, key: &str) -> String {
    show(&node.handle().get("items", key).await)
}

fn show_all(results: &[Result<Bytes, Error>]) -> Vec<String> {
    results.iter().map(show).collect()
}

/// Makes `asker` learn that every other node speaks this crate's extensions: one get of a
/// key each other node owns (docs/protocol.md, "How a node learns what a peer speaks": an
/// owner not yet known is sent one plain get per key).
async fn learn_peers(nodes: &[Node], asker: usize, rec: &Rec) {
    for (i, node) in nodes.iter().enumerate() {
        if i == asker {
            continue;
        }
        let key = key_owned_by(&nodes[asker].cache, &node.url, &format!("warm-up-{asker}-"));
        nodes[asker]
            .handle()
            .get("items", &key)
            .await
            .expect("warm-up get");
    }
    rec.clear();
}

// ---------------------------------------------------------------------------------------
// get_many: order and per-key outcomes
// ---------------------------------------------------------------------------------------

/// docs/guide.md ("Many keys at once") "`get_many` gives one result per key, in the order of
/// the keys, each as `get` would give it"; docs/guide.md ("Many keys at once") (value / not
/// found / a key's own error / left out is not found); handle.rs `get_many` rustdoc.
#[tokio::test]
async fn get_many_gives_one_result_per_key_in_order_each_as_get_gives_it() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::Never).await;
    learn_peers(&nodes, 0, &rec).await;
    let mut keys = Vec::new();
    for (i, owner) in nodes.iter().enumerate() {
        for prefix in ["plain", "missing:", "absent:", "fail:"] {
            keys.push(key_owned_by(
                &nodes[0].cache,
                &owner.url,
                &format!("{prefix}{i}-"),
            ));
        }
    }
    // Interleave owners and outcomes: an order nobody would produce by accident.
    keys.sort_by_key(|k| k.chars().rev().collect::<String>());
    let results = nodes[0]
        .handle()
        .get_many("items", &keys)
        .await
        .expect("source exists");
    assert_eq!(results.len(), keys.len(), "one result per key");
    for (key, result) in keys.iter().zip(&results) {
        if key.starts_with("missing:") || key.starts_with("absent:") {
            assert!(
                matches!(result, Err(e) if e.is_not_found()),
                "{key}: {}",
                show(result)
            );
        } else if key.starts_with("fail:") {
            assert!(
                matches!(result, Err(e) if e.kind() == ErrorKind::Load),
                "{key}: {}",
                show(result)
            );
        } else {
            assert_eq!(show(result), rec.value(key), "{key}");
        }
    }
    // Each as `get` gives it, asked of another node.
    for (key, result) in keys.iter().zip(&results) {
        let single = nodes[1].handle().get("items", key).await;
        assert_eq!(show(&single), show(result), "{key}: get vs get_many");
    }
}

/// docs/guide.md ("Many keys at once") "A key that appears twice in one call is fetched once
/// (and counted as two gets, as two `get`s would be)"; handle.rs "a key that appears twice in
/// `keys` is fetched once".
#[tokio::test]
async fn get_many_fetches_a_duplicate_key_once_and_counts_each_as_a_get() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::Never).await;
    learn_peers(&nodes, 0, &rec).await;
    let local = key_owned_by(&nodes[0].cache, &nodes[0].url, "dup-local-");
    let remote = key_owned_by(&nodes[0].cache, &nodes[1].url, "dup-remote-");
    let keys = [&local, &remote, &local, &remote, &local];
    let before = stats(&nodes[0]).gets;
    let owner_before = stats(&nodes[1]).server_requests;
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
    );
    assert_eq!(
        rec.loads_of(&local),
        1,
        "local duplicate loaded once: {:?}",
        rec.calls()
    );
    assert_eq!(
        rec.loads_of(&remote),
        1,
        "remote duplicate loaded once: {:?}",
        rec.calls()
    );
    assert_eq!(
        stats(&nodes[0]).gets - before,
        5,
        "each occurrence counts as a get"
    );
    // The owner of the remote key was asked once for it.
    assert_eq!(
        stats(&nodes[1]).server_requests - owner_before,
        1,
        "the remote duplicate was fetched once"
    );
}

/// docs/guide.md ("Many keys at once") "one result per key": no key, no result, nothing loaded.
#[tokio::test]
async fn get_many_of_no_keys_gives_no_results_and_loads_nothing() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    let none: [&str; 0] = [];
    let results = nodes[0]
        .handle()
        .get_many("items", &none)
        .await
        .expect("source exists");
    assert!(results.is_empty());
    let none: Vec<String> = Vec::new();
    assert!(
        nodes[1]
            .handle()
            .get_many("items", &none)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());
}

/// docs/guide.md ("Many keys at once") "The call fails as a whole only for a source that does
/// not exist. A key over `max_key_bytes` fails alone."; handle.rs "Fails as a whole only for a
/// source that does not exist (`ErrorKind::UnknownSource`)".
#[tokio::test]
async fn get_many_fails_whole_only_for_an_unknown_source_and_a_long_key_fails_alone() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b.max_key_bytes(16)).await;
    let handle = nodes[0].handle();
    let error = handle.get_many("nope", &["a", "b"]).await.unwrap_err();
    assert!(error.is_unknown_source(), "{error:?}");
    let none: [&str; 0] = [];
    let error = handle.get_many("nope", &none).await;
    assert!(
        matches!(&error, Err(e) if e.is_unknown_source()),
        "an unknown source with no keys: {:?}",
        error.map(|r| r.len())
    );
    let long = "x".repeat(17);
    let results = handle
        .get_many("items", &["short-a", long.as_str(), "short-b", "missing:c"])
        .await
        .expect("a long key does not fail the call");
    assert_eq!(
        show_all(&results),
        vec![
            rec.value("short-a"),
            "KeyTooLong".to_owned(),
            rec.value("short-b"),
            "NotFound".to_owned()
        ]
    );
    assert_eq!(rec.loads_of(&long), 0);
}

/// docs/guide.md ("Many keys at once") "each as `get` would give it", with keys that need
/// escaping in a URL (`%`, `+`, `/`, `?`, `#`, `&`, space), unicode and the empty key;
/// docs/protocol.md "keys ... as they are: no escaping in a body". Asked before and after the
/// asker knows its peers (plain gets, then batched gets), from every node; each key is loaded
/// once, under its own text.
#[tokio::test]
async fn get_many_round_trips_empty_escaped_and_unicode_keys_from_every_node() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::Never).await;
    let odd = [
        "",
        "%",
        "%25",
        "%zz",
        "a%2Fb",
        "+",
        "a+b",
        "a b",
        " ",
        "/",
        "a/b",
        "/lead",
        "trail/",
        "..",
        "?q=1&r=2",
        "#frag",
        "&",
        "=",
        "\\",
        "é",
        "日本語",
        "emoji🦀",
        "tab\tkey",
        "ключ",
    ];
    // Cold, before node 0 knows its peers.
    let results = nodes[0].handle().get_many("items", &odd).await.unwrap();
    assert_eq!(
        show_all(&results),
        odd.iter().map(|k| rec.value(k)).collect::<Vec<_>>(),
        "cold, from node 0"
    );
    let loaded: BTreeSet<String> = rec.calls().into_iter().flat_map(|c| c.keys).collect();
    let asked: BTreeSet<String> = odd.iter().map(|k| k.to_string()).collect();
    assert_eq!(loaded, asked, "the sources saw exactly the keys asked");
    for key in odd {
        assert_eq!(
            rec.loads_of(key),
            1,
            "{key:?} loaded once: {:?}",
            rec.loaders_of(key)
        );
    }
    // The same from every node (hits on the owners now), and as single gets.
    for (i, node) in nodes.iter().enumerate() {
        let results = node.handle().get_many("items", &odd).await.unwrap();
        assert_eq!(
            show_all(&results),
            odd.iter().map(|k| rec.value(k)).collect::<Vec<_>>(),
            "from node {i}"
        );
        for key in odd {
            assert_eq!(
                get_shown(node, key).await,
                rec.value(key),
                "get {key:?} from node {i}"
            );
        }
    }
    // Batched, with every peer known, on fresh keys of the same shapes.
    learn_peers(&nodes, 1, &rec).await;
    let fresh: Vec<String> = odd
        .iter()
        .map(|k| format!("{k}~2"))
        .chain(["".to_owned()])
        .collect();
    let results = nodes[1].handle().get_many("items", &fresh).await.unwrap();
    assert_eq!(
        show_all(&results),
        fresh.iter().map(|k| rec.value(k)).collect::<Vec<_>>(),
        "batched, from node 1"
    );
    for key in &fresh[..fresh.len() - 1] {
        assert_eq!(rec.loads_of(key), 1, "{key:?}: {:?}", rec.loaders_of(key));
    }
    assert_eq!(rec.loads_of(""), 0, "the empty key is cached on its owner");
}

// ---------------------------------------------------------------------------------------
// Batch loads
// ---------------------------------------------------------------------------------------

/// docs/guide.md ("Many keys at once") "The misses this node owns go to the data source in one
/// call of `Source::load_many`, with each key once"; docs/guide.md ("Many keys at once") "The
/// misses other nodes own are asked of their owners at once: an owner of this crate in one
/// batched peer request ..., which it answers with one call of its own data source";
/// docs/protocol.md "Batched gets".
#[tokio::test]
async fn cold_keys_cost_one_batch_call_per_owner_and_one_load_each_in_the_cluster() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    learn_peers(&nodes, 0, &rec).await;
    let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
    let mut keys = Vec::new();
    for i in 0..90 {
        let key = format!("cold-{i}");
        let owner = nodes[0].cache.ring().owner(&key).unwrap().to_owned();
        by_owner.entry(owner).or_default().push(key.clone());
        keys.push(key);
    }
    assert_eq!(by_owner.len(), 3, "90 keys land on every node");
    let before: Vec<_> = nodes[1..]
        .iter()
        .map(|n| peer_stats(&nodes[0].cache, &n.url).requests)
        .collect();
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
    );
    let calls = rec.calls();
    for node in &nodes {
        let mine: Vec<&Call> = calls.iter().filter(|c| c.node == node.url).collect();
        assert_eq!(
            mine.len(),
            1,
            "one data-source call on {}: {mine:?}",
            node.url
        );
        assert!(mine[0].many, "a load_many call on {}", node.url);
        let mut got = mine[0].keys.clone();
        got.sort();
        let mut want = by_owner[&node.url].clone();
        want.sort();
        assert_eq!(got, want, "{} loads exactly its own keys", node.url);
    }
    for key in &keys {
        assert_eq!(rec.loads_of(key), 1, "{key}");
    }
    for (n, before) in nodes[1..].iter().zip(before) {
        let after = peer_stats(&nodes[0].cache, &n.url).requests;
        assert_eq!(
            after.batched_gets - before.batched_gets,
            1,
            "one batched request to {}",
            n.url
        );
        assert_eq!(after.gets - before.gets, 0, "no single gets to {}", n.url);
    }
}

/// docs/guide.md ("Many keys at once") "an owner of this crate in one batched peer request
/// (split at `max_batch_keys`...)"; docs/protocol.md ("Batched gets") "asks each owner of this
/// crate for its keys in one request (several when there are more than `max_batch_keys`)", each
/// answered "in one call of its data source".
#[tokio::test]
async fn a_batch_over_max_batch_keys_is_split_into_requests_of_at_most_that_many() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b.max_batch_keys(10)).await;
    learn_peers(&nodes, 0, &rec).await;
    let keys: Vec<String> = (0..25)
        .map(|i| key_owned_by(&nodes[0].cache, &nodes[1].url, &format!("split-{i}-")))
        .collect();
    let before = peer_stats(&nodes[0].cache, &nodes[1].url).requests;
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
    );
    let after = peer_stats(&nodes[0].cache, &nodes[1].url).requests;
    assert_eq!(
        after.batched_gets - before.batched_gets,
        3,
        "25 keys in batches of 10"
    );
    assert_eq!(after.gets - before.gets, 0);
    let calls = rec.calls();
    assert_eq!(
        calls.len(),
        3,
        "one data-source call per request: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.many && c.keys.len() <= 10 && c.node == nodes[1].url),
        "{calls:?}"
    );
    for key in &keys {
        assert_eq!(rec.loads_of(key), 1, "{key}");
    }
}

/// docs/protocol.md ("Batched gets"), "Batched gets": `x-groupcache-max-value-bytes` bounds the
/// sum of the reply's values; a key that no longer fits gets `reply-full` and the asker "asks
/// for the key alone, with a plain get"; a value over the limit on its own gets `too-large` and
/// the asker "loads the key here".
#[tokio::test]
async fn batched_replies_over_the_value_budget_are_fetched_alone_or_loaded_here() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| {
        b.max_value_bytes(100).hot_keys(HotKeys::Never)
    })
    .await;
    learn_peers(&nodes, 0, &rec).await;
    let on1 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[1].url, p);
    let keys = vec![
        on1("mid:a-"),
        on1("mid:b-"),
        on1("big:c-"),
        on1("mid:d-"),
        on1("s:e-"),
    ];
    let before = peer_stats(&nodes[0].cache, &nodes[1].url).requests;
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
    );
    let after = peer_stats(&nodes[0].cache, &nodes[1].url).requests;
    assert_eq!(after.batched_gets - before.batched_gets, 1);
    assert_eq!(
        after.gets - before.gets,
        2,
        "the two 60-byte values that no longer fit are asked alone"
    );
    for key in [&keys[0], &keys[1], &keys[3], &keys[4]] {
        assert_eq!(rec.loaders_of(key), vec![nodes[1].url.clone()], "{key}");
    }
    assert_eq!(
        rec.loaders_of(&keys[2]).last(),
        Some(&nodes[0].url),
        "the value too large for the asker is loaded there"
    );
}

/// docs/guide.md ("Many keys at once") "A key that is already loading on this node, for a get
/// or another `get_many`, joins that load and is left out of the batch; two `get_many` calls
/// that share keys load each once."
#[tokio::test]
async fn a_key_already_loading_is_joined_and_left_out_of_the_batch() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    let owned = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let (j, a, b, c) = (
        owned("join-j-"),
        owned("join-a-"),
        owned("join-b-"),
        owned("join-c-"),
    );
    rec.close();
    let single = spawn_get(&nodes[0], "items", &j);
    eventually("the single load of j starts", DEADLINE, || rec.started(&j)).await;
    let first = spawn_get_many(&nodes[0], "items", &[&j, &a, &b]);
    eventually("the first batch starts", DEADLINE, || rec.started(&a)).await;
    let second = spawn_get_many(&nodes[0], "items", &[&b, &c, &a, &j]);
    eventually("the second batch starts", DEADLINE, || rec.started(&c)).await;
    rec.open();
    assert_eq!(
        show(&within("single get", single).await.unwrap()),
        rec.value(&j)
    );
    assert_eq!(
        show_all(&within("first get_many", first).await.unwrap().unwrap()),
        vec![rec.value(&j), rec.value(&a), rec.value(&b)]
    );
    assert_eq!(
        show_all(&within("second get_many", second).await.unwrap().unwrap()),
        vec![rec.value(&b), rec.value(&c), rec.value(&a), rec.value(&j)]
    );
    let calls = rec.calls();
    let keys_of = |c: &Call| {
        let mut k = c.keys.clone();
        k.sort();
        k
    };
    let mut ab = vec![a.clone(), b.clone()];
    ab.sort();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].keys, vec![j.clone()]);
    assert_eq!(keys_of(&calls[1]), ab, "j is left out of the first batch");
    assert_eq!(
        calls[2].keys,
        vec![c.clone()],
        "only c is new to the second batch"
    );
    for key in [&j, &a, &b, &c] {
        assert_eq!(rec.loads_of(key), 1, "{key}");
    }
}

/// docs/guide.md ("Many keys at once") "Per-key singleflight holds on the asker too: a key
/// being fetched for a `get` is joined, not asked again."
#[tokio::test]
async fn a_remote_key_being_fetched_is_joined_not_asked_again() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::Never).await;
    learn_peers(&nodes, 1, &rec).await;
    let owned = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let (k, k2, k3) = (owned("far-k-"), owned("far-k2-"), owned("far-k3-"));
    let owner_before = stats(&nodes[0]);
    rec.close();
    let single = spawn_get(&nodes[1], "items", &k);
    eventually("the owner loads k", DEADLINE, || rec.started(&k)).await;
    let many = spawn_get_many(&nodes[1], "items", &[&k, &k2, &k3]);
    eventually("the owner loads k2 and k3", DEADLINE, || {
        rec.started(&k2) && rec.started(&k3)
    })
    .await;
    rec.open();
    assert_eq!(show(&within("get", single).await.unwrap()), rec.value(&k));
    assert_eq!(
        show_all(&within("get_many", many).await.unwrap().unwrap()),
        vec![rec.value(&k), rec.value(&k2), rec.value(&k3)]
    );
    let owner = stats(&nodes[0]);
    assert_eq!(
        owner.gets - owner_before.gets,
        3,
        "the owner was asked for k once, then k2 and k3 ({owner:?})"
    );
    assert_eq!(
        (owner.loads - owner_before.loads) - (owner.loads_deduped - owner_before.loads_deduped),
        0,
        "nothing joined a load on the owner: k was not asked again"
    );
    for key in [&k, &k2, &k3] {
        assert_eq!(rec.loads_of(key), 1, "{key}");
    }
}

/// docs/guide.md ("Many keys at once") "per key a value with its own TTL, *not found*";
/// docs/guide.md ("Many keys at once") "Everything else is as for `get`: TTL and jitter,
/// negative caching".
#[tokio::test]
async fn a_batch_loader_gives_each_key_its_own_ttl_and_not_found() {
    let rec = Rec::default();
    let options = SourceOptions::new().negative_ttl(Duration::from_secs(30));
    let (clock, nodes) = clocked_three(&rec, options, HotKeys::Never).await;
    learn_peers(&nodes, 0, &rec).await;
    let mut keys = Vec::new();
    for owner in [&nodes[0], &nodes[1]] {
        for prefix in ["ttl10:", "ttl100:", "missing:", "absent:", "forever:"] {
            keys.push(key_owned_by(&nodes[0].cache, &owner.url, prefix));
        }
    }
    let want = |key: &str| {
        if key.starts_with("missing:") || key.starts_with("absent:") {
            "NotFound".to_owned()
        } else {
            rec.value(key)
        }
    };
    let h = nodes[0].handle();
    let mut expected: HashMap<String, usize> = HashMap::new();
    let step = |_label: &str, reloaded: &[&str], expected: &mut HashMap<String, usize>| {
        for key in &keys {
            let n = expected.entry(key.clone()).or_default();
            if reloaded.iter().any(|p| key.starts_with(p)) {
                *n += 1;
            }
        }
    };
    let check = |label: &str, expected: &HashMap<String, usize>| {
        for key in &keys {
            assert_eq!(
                rec.loads_of(key),
                expected[key],
                "{label}: loads of {key} (calls {:?})",
                rec.calls()
            );
        }
    };
    let all = ["ttl10:", "ttl100:", "missing:", "absent:", "forever:"];
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| want(k)).collect::<Vec<_>>()
    );
    step("t=0", &all, &mut expected);
    check("t=0", &expected);

    clock.advance(Duration::from_secs(5));
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| want(k)).collect::<Vec<_>>()
    );
    check("t=5: everything cached, not found included", &expected);

    clock.advance(Duration::from_secs(6)); // t=11
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| want(k)).collect::<Vec<_>>()
    );
    step("t=11", &["ttl10:"], &mut expected);
    check("t=11: only the 10 s keys expired", &expected);

    clock.advance(Duration::from_secs(20)); // t=31
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| want(k)).collect::<Vec<_>>()
    );
    step("t=31", &["ttl10:", "missing:", "absent:"], &mut expected);
    check(
        "t=31: 10 s keys again, and not found after its 30 s",
        &expected,
    );

    clock.advance(Duration::from_secs(70)); // t=101
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| want(k)).collect::<Vec<_>>()
    );
    step(
        "t=101",
        &["ttl10:", "ttl100:", "missing:", "absent:"],
        &mut expected,
    );
    check(
        "t=101: the 100 s keys expired too; the others never",
        &expected,
    );
}

/// docs/guide.md ("Many keys at once") "Everything else is as for `get`: TTL and jitter, ...,
/// hot copies of remote keys": a value fetched in a batch from its owner, kept as a hot copy,
/// is not served past the TTL its batch loader gave it.
#[tokio::test]
async fn a_hot_copy_fetched_in_a_batch_expires_with_its_keys_ttl() {
    let rec = Rec::default();
    let (clock, nodes) = clocked_three(&rec, SourceOptions::new(), HotKeys::AboveQps(0.0)).await;
    learn_peers(&nodes, 0, &rec).await;
    let on1 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[1].url, p);
    let keys = vec![on1("ttl10:h-"), on1("ttl100:h-"), on1("forever:h-")];
    let h = nodes[0].handle();
    for _ in 0..2 {
        let results = h.get_many("items", &keys).await.unwrap();
        assert_eq!(
            show_all(&results),
            keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
        );
    }
    assert!(
        stats(&nodes[0]).hot_promotions >= 3,
        "{:?}",
        stats(&nodes[0])
    );
    let old: Vec<String> = keys.iter().map(|k| rec.value(k)).collect();
    rec.bump();
    clock.advance(Duration::from_secs(11));
    let results = h.get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        vec![rec.value(&keys[0]), old[1].clone(), old[2].clone()],
        "at t=11 only the 10 s key is loaded again"
    );
    let single = h.get("items", &keys[0]).await;
    assert_eq!(show(&single), rec.value(&keys[0]));
}

/// docs/guide.md ("Many keys at once") "Everything else is as for `get`: ... a data source that
/// reads its own keys (`ErrorKind::RecursiveLoad`)"; docs/guide.md ("Data sources and typed
/// keys"): that read "gets `ErrorKind::RecursiveLoad` ... instead of waiting for itself".
#[tokio::test]
async fn a_batch_loader_reading_its_own_keys_gets_recursive_load() {
    let (listeners, urls) = listeners(3).await;
    let loads = Loads::default();
    let mut nodes = Vec::new();
    let handles: Vec<Arc<std::sync::OnceLock<CacheHandle>>> =
        (0..3).map(|_| Arc::default()).collect();
    for (listener, cell) in listeners.into_iter().zip(&handles) {
        let me = cell.clone();
        let source = Arc::new(batch_fn(move |ids: Vec<String>| {
            let me = me.clone();
            async move {
                let handle = me.get().expect("set after build").clone();
                // Read the same keys through the cache, as a buggy source would.
                let inner = handle
                    .get_many("loop", &ids)
                    .await
                    .map_err(std::io::Error::other)?;
                let rows: HashMap<String, String> = ids
                    .iter()
                    .zip(inner)
                    .map(|(id, r)| {
                        (
                            id.clone(),
                            format!("inner {:?}", r.map_err(|e| e.kind()).map(|_| ())),
                        )
                    })
                    .collect();
                Ok::<_, std::io::Error>(rows)
            }
        }));
        let node = start_node(listener, &urls, &loads, |b| {
            b.source("loop", ArcSource(source.clone()))
        })
        .await;
        me_set(cell, node.handle());
        nodes.push(node);
    }
    let keys: Vec<String> = (0..3)
        .map(|i| key_owned_by(&nodes[0].cache, &nodes[i].url, "loop-"))
        .collect();
    let results = within(
        "a self-reading batch",
        nodes[0].handle().get_many("loop", &keys),
    )
    .await
    .unwrap();
    assert_eq!(
        show_all(&results),
        vec!["inner Err(RecursiveLoad)"; 3],
        "each key's own read got RecursiveLoad"
    );
}

fn me_set(cell: &std::sync::OnceLock<CacheHandle>, handle: CacheHandle) {
    cell.set(handle).expect("set once");
}

/// The calls of a `batch_fn` closure: the node that made each, and its keys.
type ClosureCalls = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// docs/guide.md ("Many keys at once") "a key it leaves out is *not found*"; source.rs
/// `batch_fn`: "A single get calls it with one key. A key the closure leaves out is *not
/// found*".
#[tokio::test]
async fn a_key_the_batch_closure_leaves_out_is_not_found() {
    let calls: ClosureCalls = Arc::default();
    let nodes = cluster_per_node(3, &Loads::default(), |url, b| {
        let (calls, me) = (calls.clone(), url.to_owned());
        let source = batch_fn(move |ids: Vec<String>| {
            let (calls, me) = (calls.clone(), me.clone());
            async move {
                calls.lock().unwrap().push((me, ids.clone()));
                let rows: HashMap<String, String> = ids
                    .into_iter()
                    .filter(|id| !id.starts_with("gone"))
                    .map(|id| (id.clone(), format!("row {id}")))
                    .collect();
                Ok::<_, std::io::Error>(rows)
            }
        });
        b.source("rows", source).hot_keys(HotKeys::Never)
    })
    .await;
    let mut keys = Vec::new();
    for owner in &nodes {
        keys.push(key_owned_by(&nodes[0].cache, &owner.url, "gone-"));
        keys.push(key_owned_by(&nodes[0].cache, &owner.url, "here-"));
    }
    let results = nodes[0].handle().get_many("rows", &keys).await.unwrap();
    for (key, result) in keys.iter().zip(&results) {
        if key.starts_with("gone") {
            assert!(
                matches!(result, Err(e) if e.is_not_found()),
                "{key}: {}",
                show(result)
            );
        } else {
            assert_eq!(show(result), format!("row {key}"));
        }
    }
    // A single get of a key left out: not found too, the closure called with that one key.
    let lone = key_owned_by(&nodes[0].cache, &nodes[2].url, "gone-lone-");
    let error = nodes[1].handle().get("rows", &lone).await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .any(|(node, ids)| *node == nodes[2].url && *ids == vec![lone.clone()]),
        "a single get calls the closure with one key: {calls:?}"
    );
}

/// An `Arc` of a source, so that one closure serves a node built by a `Fn` configure.
struct ArcSource<S>(Arc<S>);

impl<S: Source> Source for ArcSource<S> {
    type Error = S::Error;

    fn load(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Loaded, S::Error>> + Send {
        self.0.load(key)
    }

    fn load_many(
        &self,
        keys: &[String],
    ) -> impl std::future::Future<Output = Result<LoadedMany, S::Error>> + Send {
        self.0.load_many(keys)
    }
}

/// docs/guide.md ("Many keys at once") "an error of that key alone (`LoadedMany::fail`) ... an
/// `Err` fails every key of the call. A panic fails them with `ErrorKind::LoadPanicked`";
/// docs/guide.md ("Many keys at once") "the owner's data-source failure for a key is returned
/// for that key without a second load"; docs/guide.md ("Data sources and typed keys") "Errors
/// are never cached".
#[tokio::test]
async fn a_failing_batch_fails_only_its_own_keys_and_nothing_is_cached_for_them() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::Never).await;
    learn_peers(&nodes, 0, &rec).await;
    let on = |i: usize, p: &str| key_owned_by(&nodes[0].cache, &nodes[i].url, p);
    // Node 1's batch fails whole; node 2's panics; node 0's has one key that fails alone.
    let keys = vec![
        on(1, "boom:"),
        on(1, "b1-ok-"),
        on(2, "c2-ok-"),
        on(0, "a0-ok-"),
        on(0, "fail:"),
        on(1, "b1-ok2-"),
        on(0, "a0-ok2-"),
        on(2, "c2-ok2-"),
    ];
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    let v = |k: &String| rec.value(k);
    assert_eq!(
        show_all(&results),
        vec![
            "Load".to_owned(),
            "Load".to_owned(),
            v(&keys[2]),
            v(&keys[3]),
            "Load".to_owned(),
            "Load".to_owned(),
            v(&keys[6]),
            v(&keys[7]),
        ]
    );
    for key in &keys {
        assert_eq!(
            rec.loaders_of(key).len(),
            1,
            "{key}: no second load: {:?}",
            rec.loaders_of(key)
        );
    }
    // Errors are not cached: the failed keys are loaded again, the others not.
    let again = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(show_all(&again), show_all(&results));
    for (i, key) in keys.iter().enumerate() {
        let want = if [0, 1, 4, 5].contains(&i) { 2 } else { 1 };
        assert_eq!(rec.loads_of(key), want, "{key}");
    }
    // A batch that panics fails its own keys with LoadPanicked, and no other.
    let keys = vec![
        on(2, "panic:"),
        on(2, "c2-p-"),
        on(1, "b1-p-"),
        on(0, "a0-p-"),
    ];
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        vec![
            "LoadPanicked".to_owned(),
            "LoadPanicked".to_owned(),
            rec.value(&keys[2]),
            rec.value(&keys[3]),
        ]
    );
    let keys = vec![on(0, "panic:"), on(0, "a0-q-"), on(1, "b1-q-")];
    let results = nodes[0].handle().get_many("items", &keys).await.unwrap();
    assert_eq!(
        show_all(&results),
        vec![
            "LoadPanicked".to_owned(),
            "LoadPanicked".to_owned(),
            rec.value(&keys[2])
        ]
    );
}

/// docs/guide.md ("Many keys at once") "each key of a batch counts as a load of its own in
/// `local_loads`, `local_not_found` and `local_load_errs`"; stats.rs field docs.
#[tokio::test]
async fn each_key_of_a_batch_counts_as_a_load_of_its_own() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    let on0 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let keys = vec![
        on0("ok-1-"),
        on0("ok-2-"),
        on0("ok-3-"),
        on0("missing:1-"),
        on0("absent:1-"),
        on0("fail:1-"),
        on0("fail:2-"),
    ];
    let before = stats(&nodes[0]);
    nodes[0].handle().get_many("items", &keys).await.unwrap();
    let after = stats(&nodes[0]);
    assert_eq!(rec.calls().len(), 1, "one batch: {:?}", rec.calls());
    let d = delta(&before, &after);
    assert_eq!(d.local_loads, 3, "{after:?}");
    assert_eq!(d.local_not_found, 2, "{after:?}");
    assert_eq!(d.local_load_errs, 2, "{after:?}");
    // And a whole batch failing counts each of its keys.
    let keys = vec![on0("boom:1-"), on0("ok-4-"), on0("ok-5-")];
    nodes[0].handle().get_many("items", &keys).await.unwrap();
    let last = stats(&nodes[0]);
    let d = delta(&after, &last);
    assert_eq!(d.local_load_errs, 3, "{last:?}");
    assert_eq!(d.local_loads, 0, "{last:?}");
}

/// docs/guide.md ("Many keys at once") "A key whose owner is down, skipped or answers badly is
/// loaded here, as for `get`".
#[tokio::test]
async fn a_key_whose_owner_is_down_is_loaded_here() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    learn_peers(&nodes, 0, &rec).await;
    let on = |i: usize, p: &str| key_owned_by(&nodes[0].cache, &nodes[i].url, p);
    let keys = vec![
        on(2, "down-a-"),
        on(1, "up-b-"),
        on(2, "down-c-"),
        on(0, "here-d-"),
    ];
    nodes[2].stop();
    eventually("node 2 stops", DEADLINE, || nodes[2].is_stopped()).await;
    let results = within("get_many", nodes[0].handle().get_many("items", &keys))
        .await
        .unwrap();
    assert_eq!(
        show_all(&results),
        keys.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
    );
    assert_eq!(rec.loaders_of(&keys[0]), vec![nodes[0].url.clone()]);
    assert_eq!(rec.loaders_of(&keys[2]), vec![nodes[0].url.clone()]);
    assert_eq!(rec.loaders_of(&keys[1]), vec![nodes[1].url.clone()]);
}

/// docs/guide.md ("Many keys at once") "`remove` revoking the key's load (the batch's value of
/// that key is not kept)".
#[tokio::test]
async fn a_remove_during_a_batch_load_keeps_not_that_keys_value() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b).await;
    let on0 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let (a, b) = (on0("rev-a-"), on0("rev-b-"));
    rec.close();
    let many = spawn_get_many(&nodes[0], "items", &[&a, &b]);
    eventually("the batch starts", DEADLINE, || rec.started(&a)).await;
    let old_a = rec.value(&a);
    let removal = within("remove", nodes[1].handle().remove("items", &a))
        .await
        .unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    rec.bump();
    rec.open();
    let results = within("get_many", many).await.unwrap().unwrap();
    // The batch's own answer for `a` may be either value; what it must not do is keep it.
    assert_eq!(results.len(), 2);
    assert_eq!(
        get_shown(&nodes[0], &a).await,
        rec.value(&a),
        "after the removal, a is loaded again (the batch answered {})",
        show(&results[0])
    );
    assert_ne!(rec.value(&a), old_a);
    assert_eq!(rec.loads_of(&a), 2);
    assert_eq!(rec.loads_of(&b), 1, "b's value was kept");
}

// ---------------------------------------------------------------------------------------
// gather_loads
// ---------------------------------------------------------------------------------------

/// docs/guide.md ("Many keys at once") "`SourceOptions::new().gather_loads(max_keys, max_wait)`
/// makes the first single miss of the source wait at most `max_wait` for others, or until
/// `max_keys` have come, and load them all in one `load_many` call". The wait is an hour: the
/// batch can only go by filling up.
#[tokio::test]
async fn gathered_single_misses_on_the_owner_are_loaded_in_one_call() {
    let rec = Rec::default();
    let options = SourceOptions::new().gather_loads(3, Duration::from_secs(3600));
    let nodes = items_cluster(3, &rec, options, |b| b.hot_keys(HotKeys::Never)).await;
    let on0 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let keys = [on0("g-a-"), on0("g-b-"), on0("g-c-")];
    // One single get from each node, all for keys node 0 owns.
    let gets: Vec<_> = nodes
        .iter()
        .zip(keys.clone())
        .map(|(node, key)| spawn_get(node, "items", &key))
        .collect();
    for (get, key) in gets.into_iter().zip(&keys) {
        assert_eq!(
            show(&within("gathered get", get).await.unwrap()),
            rec.value(key)
        );
    }
    let calls = rec.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].many);
    let mut got = calls[0].keys.clone();
    got.sort();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(got, want);
}

/// SourceOptions::gather_loads rustdoc (src/node/source.rs:86-91): "with it, a miss that comes
/// alone waits `max_wait` before its load starts", and docs/guide.md ("Many keys at once") "at
/// most `max_wait`". On tokio's paused clock: no real wait.
#[tokio::test(start_paused = true)]
async fn a_lone_gathered_miss_waits_max_wait_and_no_longer() {
    let rec = Rec::default();
    let cache = Groupcache::builder()
        .source_with(
            "items",
            rec.source("lone"),
            SourceOptions::new().gather_loads(8, Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let value = cache.handle().get("items", "k").await.unwrap();
    assert_eq!(value, rec.value("k"));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "waited {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------

/// docs/guide.md ("Writes") "The key's owner keeps the value in its main cache ...; every other
/// copy is dropped, here and on the other peers"; docs/guide.md ("Writes") (the example's
/// `removal.is_complete()` and get); handle.rs `set` rustdoc.
#[tokio::test]
async fn set_then_get_from_every_node_gives_the_new_value() {
    let rec = Rec::default();
    // A rate of 0 keeps a hot copy of every fetched value: every node holds a copy to drop.
    let nodes = three_nodes(&rec, HotKeys::AboveQps(0.0)).await;
    for owner in 0..3 {
        for writer in 0..3 {
            let key = key_owned_by(
                &nodes[0].cache,
                &nodes[owner].url,
                &format!("set-{owner}-{writer}-"),
            );
            for _round in 0..2 {
                for node in &nodes {
                    assert_eq!(get_shown(node, &key).await, rec.value(&key));
                }
            }
            let new = format!("new value of {key} by {writer}");
            let removal = nodes[writer]
                .handle()
                .set("items", &key, new.clone(), None)
                .await
                .expect("the write succeeds");
            assert!(removal.is_complete(), "{removal:?}");
            for (i, node) in nodes.iter().enumerate() {
                assert_eq!(
                    get_shown(node, &key).await,
                    new,
                    "get from node {i}, owner {owner}, writer {writer}"
                );
                let many = node
                    .handle()
                    .get_many("items", &[&key, &key])
                    .await
                    .unwrap();
                assert_eq!(
                    show_all(&many),
                    vec![new.clone(), new.clone()],
                    "get_many from node {i}"
                );
            }
            assert_eq!(
                rec.loads_of(&key),
                1,
                "the owner keeps the written value: no load"
            );
        }
    }
}

/// docs/guide.md ("Writes") "A load of the key that started before the write cannot put its
/// older value back"; handle.rs `set` rustdoc; docs/protocol.md "Writes".
#[tokio::test]
async fn a_load_that_started_before_a_set_never_overwrites_it() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::AboveQps(0.0)).await;
    learn_peers(&nodes, 1, &rec).await;
    learn_peers(&nodes, 2, &rec).await;
    let on0 = |p: &str| key_owned_by(&nodes[0].cache, &nodes[0].url, p);
    let (single_key, batch_key, other) = (on0("race-s-"), on0("race-m-"), on0("race-o-"));
    rec.close();
    // A single get from node 1 and a batch from node 2 both start the owner's loads.
    let single = spawn_get(&nodes[1], "items", &single_key);
    let many = spawn_get_many(&nodes[2], "items", &[&batch_key, &other]);
    eventually("the owner's loads start", DEADLINE, || {
        rec.started(&single_key) && rec.started(&batch_key)
    })
    .await;
    // Both writes end while those loads are held.
    for (writer, key) in [(2, &single_key), (1, &batch_key)] {
        let removal = within(
            "set",
            nodes[writer].handle().set("items", key, "written", None),
        )
        .await
        .expect("the write succeeds");
        assert!(removal.is_complete(), "{removal:?}");
    }
    rec.open();
    let single = within("the held get", single).await.unwrap();
    let many = within("the held get_many", many).await.unwrap().unwrap();
    for (i, node) in nodes.iter().enumerate() {
        for key in [&single_key, &batch_key] {
            assert_eq!(
                get_shown(node, key).await,
                "written",
                "node {i}, {key} (the held get answered {}, the batch {:?})",
                show(&single),
                show_all(&many)
            );
        }
    }
    assert_eq!(show(&many[1]), rec.value(&other));
}

/// docs/guide.md ("Writes") "The key's owner keeps the value in its main cache, for the `ttl`
/// given or the source's default"; handle.rs `set`: "for `ttl` or the source's default TTL".
#[tokio::test]
async fn a_written_value_lives_for_the_ttl_given_or_the_sources_default() {
    let rec = Rec::default();
    let options = SourceOptions::new().ttl(Duration::from_secs(20));
    let (clock, nodes) = clocked_three(&rec, options, HotKeys::Never).await;
    let given = key_owned_by(&nodes[0].cache, &nodes[1].url, "ttl-given-");
    let default = key_owned_by(&nodes[0].cache, &nodes[2].url, "ttl-default-");
    let h = nodes[0].handle();
    h.set(
        "items",
        &given,
        "written 10s",
        Some(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    h.set("items", &default, "written default", None)
        .await
        .unwrap();
    assert_eq!(show(&h.get("items", &given).await), "written 10s");
    assert_eq!(show(&h.get("items", &default).await), "written default");
    clock.advance(Duration::from_secs(9));
    assert_eq!(show(&h.get("items", &given).await), "written 10s", "t=9");
    assert_eq!(
        show(&h.get("items", &default).await),
        "written default",
        "t=9"
    );
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());
    clock.advance(Duration::from_secs(2)); // t=11
    assert_eq!(
        show(&h.get("items", &given).await),
        rec.value(&given),
        "t=11: expired"
    );
    assert_eq!(
        show(&h.get("items", &default).await),
        "written default",
        "t=11"
    );
    clock.advance(Duration::from_secs(10)); // t=21
    assert_eq!(
        show(&h.get("items", &default).await),
        rec.value(&default),
        "t=21: expired"
    );
}

/// docs/guide.md ("Writes") "It fails, having written nothing, when ... the owner cannot be
/// reached or refuses (`ErrorKind::Peer`...), or for a value over this node's
/// `max_value_bytes` (`ErrorKind::ValueTooLarge`). ... a failed write then drops the key as
/// `remove` does, here and on every peer it reaches"; "It returns a `Removal`: the peers whose
/// hot copies could not be dropped".
#[tokio::test]
async fn a_failed_write_writes_nothing_and_keeps_no_copy_here() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0)).max_value_bytes(100)
    })
    .await;
    let on = |i: usize, p: &str| key_owned_by(&nodes[0].cache, &nodes[i].url, p);
    let (far, near, big) = (on(2, "fw-far-"), on(1, "fw-near-"), on(1, "fw-big-"));
    for _ in 0..2 {
        for key in [&far, &near, &big] {
            assert_eq!(get_shown(&nodes[0], key).await, rec.value(key));
        }
    }
    // Too large: refused; the owner's value untouched; node 0's hot copy gone (its next get
    // is a peer fetch, not a hit).
    set_too_large(&nodes[0], &big).await;
    assert_eq!(
        get_shown(&nodes[1], &big).await,
        rec.value(&big),
        "the owner's value is untouched"
    );
    let before = stats(&nodes[0]);
    assert_eq!(get_shown(&nodes[0], &big).await, rec.value(&big));
    let after = stats(&nodes[0]);
    let d = delta(&before, &after);
    assert_eq!(d.cache_hits, 0, "no copy kept here: {after:?}");
    assert_eq!(d.peer_loads, 1, "fetched from the owner: {after:?}");
    // The owner down: `Peer`, and no copy of the key kept here (node 0 had a hot copy).
    nodes[2].stop();
    eventually("node 2 stops", DEADLINE, || nodes[2].is_stopped()).await;
    let error = within("set", nodes[0].handle().set("items", &far, "lost", None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Peer, "{error:?}");
    rec.bump();
    assert_eq!(
        get_shown(&nodes[0], &far).await,
        rec.value(&far),
        "no copy kept here: the next get loads the key (here, its owner being down)"
    );
    // A write whose owner is up succeeds and names the down peer.
    let removal = within("set", nodes[0].handle().set("items", &near, "kept", None))
        .await
        .unwrap();
    assert_eq!(
        removal.unreachable,
        vec![nodes[2].url.clone()],
        "{removal:?}"
    );
    assert!(removal.unsupported.is_empty());
    assert_eq!(get_shown(&nodes[1], &near).await, "kept");
    let removal = within(
        "remove_many",
        nodes[0].handle().remove_many("items", &[&near, &big]),
    )
    .await
    .unwrap();
    assert_eq!(
        removal.unreachable,
        vec![nodes[2].url.clone()],
        "{removal:?}"
    );
}

/// A `set` of `key` through `node` with a value of 101 bytes, one over the nodes'
/// `max_value_bytes` (100): it fails with `ValueTooLarge`.
async fn set_too_large(node: &Node, key: &str) {
    let error = node
        .handle()
        .set("items", key, "x".repeat(101), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ValueTooLarge, "{error:?}");
}

/// docs/guide.md ("Writes") "a failed write then drops the key as `remove` does, here and on
/// every peer it reaches, so that the next get loads the new value from the back end." Here the
/// write fails for its size (`ValueTooLarge`, one of the failures the same paragraph lists)
/// after the back end changed.
#[tokio::test]
async fn after_a_write_too_large_the_next_get_loads_the_key_from_the_back_end() {
    let rec = Rec::default();
    let nodes = items_cluster(3, &rec, SourceOptions::new(), |b| b.max_value_bytes(100)).await;
    let key = key_owned_by(&nodes[0].cache, &nodes[1].url, "fw-big-");
    assert_eq!(get_shown(&nodes[0], &key).await, rec.value(&key));
    // The back end takes the new value (here: the next generation), then the write fails.
    rec.bump();
    set_too_large(&nodes[0], &key).await;
    assert_eq!(
        get_shown(&nodes[0], &key).await,
        rec.value(&key),
        "the next get after the failed write (loads: {:?})",
        rec.calls()
    );
}

/// The odd keys of `get_many_round_trips_empty_escaped_and_unicode_keys_from_every_node`,
/// written and removed: docs/guide.md ("Writes") (set: the owner keeps the value, every other
/// copy is dropped) and docs/guide.md ("Data sources and typed keys") (remove_many drops many
/// keys the same way as remove). A write of `a+b` must not touch `a b`, nor one of `%41` touch
/// `A`.
#[tokio::test]
async fn set_and_remove_many_handle_empty_escaped_and_unicode_keys() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::AboveQps(0.0)).await;
    let odd = [
        "",
        "%",
        "%25",
        "%41",
        "A",
        "%zz",
        "a%2Fb",
        "+",
        "a+b",
        "a b",
        " ",
        "/",
        "a/b",
        "..",
        "?q=1&r=2",
        "#frag",
        "&",
        "=",
        "key=x",
        "\\",
        "é",
        "日本語",
        "emoji🦀",
        "tab\tkey",
    ];
    for _ in 0..2 {
        for node in &nodes {
            let results = node.handle().get_many("items", &odd).await.unwrap();
            assert_eq!(
                show_all(&results),
                odd.iter().map(|k| rec.value(k)).collect::<Vec<_>>()
            );
        }
    }
    // Write every other key, from each node in turn.
    let written: Vec<&str> = odd
        .iter()
        .copied()
        .filter(|k| {
            [
                "",
                "%25",
                "%41",
                "a+b",
                "a/b",
                "?q=1&r=2",
                "key=x",
                "日本語",
                "+",
            ]
            .contains(k)
        })
        .collect();
    for (i, key) in written.iter().enumerate() {
        let removal = nodes[i % 3]
            .handle()
            .set("items", key, format!("written {key}"), None)
            .await
            .unwrap_or_else(|e| panic!("set {key:?}: {e:?}"));
        assert!(removal.is_complete(), "{key:?}: {removal:?}");
    }
    for (i, node) in nodes.iter().enumerate() {
        let results = node.handle().get_many("items", &odd).await.unwrap();
        let want: Vec<String> = odd
            .iter()
            .map(|k| {
                if written.contains(k) {
                    format!("written {k}")
                } else {
                    rec.value(k)
                }
            })
            .collect();
        assert_eq!(show_all(&results), want, "node {i} after the writes");
    }
    // Remove them all (duplicates included), then every node loads each key once more.
    rec.bump();
    let mut doubled: Vec<&str> = odd.to_vec();
    doubled.extend(odd.iter().rev());
    let removal = nodes[1]
        .handle()
        .remove_many("items", &doubled)
        .await
        .unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    let none: [&str; 0] = [];
    assert!(
        nodes[1]
            .handle()
            .remove_many("items", &none)
            .await
            .unwrap()
            .is_complete()
    );
    for (i, node) in nodes.iter().enumerate() {
        let results = node.handle().get_many("items", &odd).await.unwrap();
        assert_eq!(
            show_all(&results),
            odd.iter().map(|k| rec.value(k)).collect::<Vec<_>>(),
            "node {i} after remove_many"
        );
    }
}

/// docs/guide.md ("Data sources and typed keys") "`handle.remove_many("users", &keys)` drops
/// many keys the same way, in at most two requests per peer"; handle.rs `remove_many` rustdoc;
/// docs/protocol.md "Removal".
#[tokio::test]
async fn remove_many_drops_every_key_everywhere_in_at_most_two_requests_per_peer() {
    let rec = Rec::default();
    let nodes = three_nodes(&rec, HotKeys::AboveQps(0.0)).await;
    let keys: Vec<String> = (0..30).map(|i| format!("rm-{i}")).collect();
    let kept = "rm-kept".to_owned();
    for _round in 0..2 {
        for node in &nodes {
            let all: Vec<&String> = keys.iter().chain([&kept]).collect();
            let results = node.handle().get_many("items", &all).await.unwrap();
            assert!(results.iter().all(|r| r.is_ok()));
        }
    }
    for key in keys.iter().chain([&kept]) {
        assert_eq!(rec.loads_of(key), 1, "{key}");
    }
    rec.bump();
    let remover = &nodes[1];
    let before: Vec<u64> = [0, 2]
        .iter()
        .map(|&i| peer_stats(&remover.cache, &nodes[i].url).requests.total())
        .collect();
    let removal = within("remove_many", remover.handle().remove_many("items", &keys))
        .await
        .unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    for (&i, before) in [0, 2].iter().zip(before) {
        let sent = peer_stats(&remover.cache, &nodes[i].url).requests.total() - before;
        assert!(sent <= 2, "{sent} requests to node {i}");
    }
    for (i, node) in nodes.iter().enumerate() {
        for key in &keys {
            assert_eq!(
                get_shown(node, key).await,
                rec.value(key),
                "node {i} after remove_many"
            );
        }
        assert_eq!(
            get_shown(node, &kept).await,
            format!("0:{kept}"),
            "a key not removed is kept on node {i}"
        );
    }
    for key in &keys {
        assert_eq!(
            rec.loads_of(key),
            2,
            "{key}: loaded once again, on its owner"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The documentation's examples, run
// ---------------------------------------------------------------------------------------

/// docs/guide.md ("Many keys at once"), the `get_many` example with `batch_fn`, on a node of a
/// real cluster.
#[tokio::test]
async fn guide_get_many_example() {
    let nodes = cluster(3, &Loads::default(), |b| {
        b.source(
            "people",
            batch_fn(|ids: Vec<String>| async move {
                let rows: HashMap<String, String> = ids
                    .into_iter()
                    .filter(|id| id != "0") // no row: *not found*
                    .map(|id| (id.clone(), format!("user {id}")))
                    .collect();
                Ok::<_, std::io::Error>(rows)
            }),
        )
    })
    .await;
    for node in &nodes {
        let ids = ["1", "2", "0", "1"];
        let users = node.handle().get_many("people", &ids).await.unwrap();
        assert_eq!(users[0].as_ref().unwrap(), "user 1");
        assert_eq!(users[1].as_ref().unwrap(), "user 2");
        assert!(users[2].as_ref().unwrap_err().is_not_found());
        assert_eq!(users[3].as_ref().unwrap(), "user 1");
    }
    // And the guide's own code, verbatim, on a single node.
    let cache = Groupcache::builder()
        .source(
            "users",
            batch_fn(|ids: Vec<String>| async move {
                let rows: HashMap<String, String> = ids
                    .into_iter()
                    .filter(|id| id != "0")
                    .map(|id| (id.clone(), format!("user {id}")))
                    .collect();
                Ok::<_, std::io::Error>(rows)
            }),
        )
        .build()
        .unwrap();
    let ids = ["1", "2", "0", "1"];
    let users = cache.handle().get_many("users", &ids).await.unwrap();
    assert_eq!(users[0].as_ref().unwrap(), "user 1");
    assert!(users[2].as_ref().unwrap_err().is_not_found());
    assert_eq!(users[3].as_ref().unwrap(), "user 1");
}

/// docs/guide.md ("Writes"), the write example, from every node of a real cluster.
#[tokio::test]
async fn guide_write_example() {
    let nodes = cluster(3, &Loads::default(), |b| {
        b.source("people", |id: String| async move {
            Ok::<_, std::io::Error>(format!("user {id} as stored"))
        })
    })
    .await;
    for (i, node) in nodes.iter().enumerate() {
        let users = node.handle();
        let id = format!("7{i}");
        assert_eq!(
            users.get("people", &id).await.unwrap(),
            format!("user {id} as stored")
        );
        let removal = users
            .set("people", &id, format!("user {id}, renamed"), None)
            .await
            .unwrap();
        assert!(removal.is_complete(), "{removal:?}");
        for other in &nodes {
            assert_eq!(
                other.handle().get("people", &id).await.unwrap(),
                format!("user {id}, renamed")
            );
        }
    }
}

/// handle.rs, the rustdoc examples of `get_many` and `set` (their `demo` functions are only
/// compiled by the doctests): run against a node of a real cluster.
#[tokio::test]
async fn handle_rustdoc_examples_of_get_many_and_set() {
    async fn get_many_demo(cache: CacheHandle) -> Result<Vec<String>, Error> {
        let mut lines = Vec::new();
        let ids = ["1", "2", "3"];
        for (id, user) in ids.iter().zip(cache.get_many("users", &ids).await?) {
            match user {
                Ok(user) => lines.push(format!("{id}: {} bytes", user.len())),
                Err(error) if error.is_not_found() => lines.push(format!("{id}: no such user")),
                Err(error) => return Err(error),
            }
        }
        Ok(lines)
    }
    async fn set_demo(cache: CacheHandle) -> Result<(), Error> {
        cache.set("users", "7", "Ada", None).await?;
        assert_eq!(cache.get("users", "7").await?, "Ada");
        Ok(())
    }
    // The support nodes' own `users` source: `value-of:{key}`, and `missing:` keys not found.
    let loads = Loads::default();
    let nodes = crate::support::cluster(3, &loads, |b| b).await;
    for node in &nodes {
        assert_eq!(
            get_many_demo(node.handle()).await.unwrap(),
            vec!["1: 10 bytes", "2: 10 bytes", "3: 10 bytes"]
        );
        let lines = node
            .handle()
            .get_many("users", &["1", "missing:2"])
            .await
            .unwrap();
        assert!(lines[1].as_ref().unwrap_err().is_not_found());
        set_demo(node.handle()).await.unwrap();
    }
    for node in &nodes {
        assert_eq!(node.handle().get("users", "7").await.unwrap(), "Ada");
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct UserKey {
    tenant: String,
    id: u64,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

/// A key whose encoding fails when `bad` is set.
struct Picky {
    id: u64,
    bad: bool,
}

impl serde::Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.bad {
            return Err(serde::ser::Error::custom("this key does not encode"));
        }
        s.serialize_u64(self.id)
    }
}

/// docs/guide.md ("Typed keys and values") (the typed example) and docs/guide.md ("Many keys at
/// once") "Typed: `cache.handle().typed::<K, V>("users").get_many(&keys)`"; typed.rs
/// `TypedHandle::get_many`: "one result per key, in the order of `keys` ... A key that cannot
/// be encoded, or a value that cannot be decoded, fails its own key with `ErrorKind::Codec`".
#[tokio::test]
async fn typed_example_and_typed_get_many() {
    let (listeners, urls) = listeners(3).await;
    let loads = Loads::default();
    let mut nodes = Vec::new();
    for listener in listeners {
        nodes.push(
            start_node(listener, &urls, &loads, |b| {
                b.source(
                    "people",
                    tower_groupcache::typed::typed(|key: UserKey| async move {
                        Ok::<_, std::io::Error>((key.id != 0).then(|| User {
                            name: format!("{}-{}", key.tenant, key.id),
                        }))
                    }),
                )
                // Values that are JSON (`"n"`) for even ids, not JSON for odd ones.
                .source("numbers", |key: String| async move {
                    let n: u64 = key.parse().map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(if n % 2 == 0 {
                        format!("\"{n}\"")
                    } else {
                        format!("{n} is odd")
                    })
                })
            })
            .await,
        );
    }
    for node in &nodes {
        let users = node.handle().typed::<UserKey, User>("people");
        let user = users
            .get(&UserKey {
                tenant: "acme".into(),
                id: 7,
            })
            .await
            .unwrap();
        assert_eq!(
            user,
            User {
                name: "acme-7".into()
            }
        );
        let keys: Vec<UserKey> = [("acme", 7), ("acme", 0), ("globex", 3), ("acme", 7)]
            .into_iter()
            .map(|(t, id)| UserKey {
                tenant: t.into(),
                id,
            })
            .collect();
        let many = users.get_many(&keys).await.unwrap();
        assert_eq!(many.len(), 4);
        assert_eq!(
            many[0].as_ref().unwrap(),
            &User {
                name: "acme-7".into()
            }
        );
        assert!(many[1].as_ref().unwrap_err().is_not_found());
        assert_eq!(
            many[2].as_ref().unwrap(),
            &User {
                name: "globex-3".into()
            }
        );
        assert_eq!(
            many[3].as_ref().unwrap(),
            &User {
                name: "acme-7".into()
            }
        );

        let numbers = node.handle().typed::<Picky, String>("numbers");
        let keys = [
            Picky { id: 2, bad: false },
            Picky { id: 4, bad: true },
            Picky { id: 3, bad: false },
            Picky { id: 6, bad: false },
        ];
        let many = numbers.get_many(&keys).await.unwrap();
        let kinds: Vec<String> = many
            .iter()
            .map(|r| match r {
                Ok(v) => v.clone(),
                Err(e) => format!("{:?}", e.kind()),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["2", "Codec", "Codec", "6"],
            "encode fails 4, decode fails 3"
        );
    }
}
