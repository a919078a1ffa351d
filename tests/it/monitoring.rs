//! The monitoring kit in deploy/ against the crate: every metric the crate records is
//! described by `describe_metrics`, and the Grafana dashboard and the Prometheus alert rules
//! ask only for metrics the crate exports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::support::{Loads, cluster, key_owned_by, value_of};

/// What a metric is, as the recorder was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A recorder that only writes down names: those described, and those recorded.
#[derive(Debug, Default, Clone)]
struct Names {
    described: Arc<Mutex<BTreeMap<String, Kind>>>,
    recorded: Arc<Mutex<BTreeMap<String, Kind>>>,
}

impl Names {
    fn describe(&self, key: KeyName, kind: Kind) {
        self.described
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), kind);
    }

    fn record(&self, key: &Key, kind: Kind) {
        self.recorded
            .lock()
            .unwrap()
            .insert(key.name().to_owned(), kind);
    }

    fn described(&self) -> BTreeMap<String, Kind> {
        self.described.lock().unwrap().clone()
    }

    fn recorded(&self) -> BTreeMap<String, Kind> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Recorder for Names {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key, Kind::Counter);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key, Kind::Gauge);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key, Kind::Histogram);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.record(key, Kind::Counter);
        Counter::noop()
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.record(key, Kind::Gauge);
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.record(key, Kind::Histogram);
        Histogram::noop()
    }
}

/// The metrics `describe_metrics` describes, by name.
fn described_metrics() -> BTreeMap<String, Kind> {
    let names = Names::default();
    metrics::with_local_recorder(&names, tower_groupcache::metrics::describe_metrics);
    names.described()
}

#[tokio::test]
async fn every_recorded_metric_is_described_with_its_kind() {
    // One thread (current-thread runtime), so the thread-local recorder sees the histograms
    // recorded inside loads and peer fetches too.
    let names = Names::default();
    let _guard = metrics::set_default_local_recorder(&names);
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for key in [
        key_owned_by(&a.cache, &a.url, "user:"),
        key_owned_by(&a.cache, &b.url, "user:"),
    ] {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    a.cache.record_metrics();
    b.cache.record_metrics();
    let recorded = names.recorded();
    for histogram in [
        "groupcache_load_duration_seconds",
        "groupcache_peer_fetch_duration_seconds",
    ] {
        assert!(
            recorded.contains_key(histogram),
            "{histogram} was not recorded"
        );
    }
    let described = names.described();
    let undescribed: Vec<_> = recorded
        .iter()
        .filter(|(name, kind)| described.get(*name) != Some(kind))
        .map(|(name, kind)| format!("{name} ({kind:?}, described as {:?})", described.get(name)))
        .collect();
    assert!(
        undescribed.is_empty(),
        "recorded but not described as such by describe_metrics: {undescribed:?}"
    );
    assert_eq!(described_metrics(), described);
}

#[tokio::test]
async fn capacity_fingerprint_and_draining_are_gauges() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.cache_bytes(1 << 20)).await;
    let gauges = |cache: &tower_groupcache::Groupcache| {
        cache.record_metrics();
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Gauge(v) => {
                    let key = key.key();
                    let labels: Vec<String> = key
                        .labels()
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    Some((format!("{}{labels:?}", key.name()), v.into_inner()))
                }
                _ => None,
            })
            .collect::<BTreeMap<String, f64>>()
    };
    let a = &nodes[0].cache;
    let g = gauges(a);
    let main = g[r#"groupcache_cache_capacity_bytes["source=users", "cache=main"]"#];
    let hot = g[r#"groupcache_cache_capacity_bytes["source=users", "cache=hot"]"#];
    assert_eq!(main + hot, f64::from(1u32 << 20), "{g:?}");
    assert!(hot > 0.0 && main > hot, "{g:?}");
    let stats = a.stats().sources.remove(0);
    assert_eq!(stats.main_cache.capacity_bytes as f64, main);
    assert_eq!(stats.hot_cache.capacity_bytes as f64, hot);

    let fingerprint = u32::from_str_radix(&a.stats().cluster.ring_fingerprint, 16).unwrap();
    assert_eq!(g["groupcache_ring_fingerprint[]"], f64::from(fingerprint));
    assert_eq!(
        gauges(&nodes[1].cache)["groupcache_ring_fingerprint[]"],
        f64::from(fingerprint),
        "two nodes with one peer list agree"
    );

    assert_eq!(g["groupcache_draining[]"], 0.0);
    assert!(!a.stats().cluster.draining);
    a.shutdown().await;
    assert!(a.stats().cluster.draining);
    assert_eq!(gauges(a)["groupcache_draining[]"], 1.0);
}
