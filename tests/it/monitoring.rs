//! The monitoring kit in deploy/ against the crate: every metric the crate records is
//! described by `describe_metrics`; the Grafana dashboard and the Prometheus alert rules ask
//! only for metrics the crate exports; and a real Prometheus server scraping three node
//! processes (`scripts/prometheus-scrape.py`) computes what their `/stats` say.
//!
//! The Prometheus test needs `prometheus` and `promtool` (Debian's `prometheus` package) and
//! python3 with PyYAML. Without them it prints why and passes, unless
//! `GROUPCACHE_REQUIRE_PROMETHEUS=1` (as `.ci/run` sets), which makes it fail. When it really
//! ran, it appends a line to `target/prometheus-ran`, which `.ci/run` checks.

use std::collections::{BTreeMap, BTreeSet};
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

/// The words of `text` that name a metric of the crate (`groupcache_...`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("groupcache_") {
        let before = rest[..at].chars().next_back();
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(word.clone());
        }
        rest = &rest[at + word.len()..];
    }
    names
}

/// Checks that every metric name in `names` is one the crate exports:
/// a described metric, or a histogram's `_bucket`, `_sum` or `_count` series. Returns the
/// names found wrong, with why.
fn unknown_metrics(names: &BTreeSet<String>) -> Vec<String> {
    let known = described_metrics();
    names
        .iter()
        .filter_map(|name| {
            if known.contains_key(name) {
                return None;
            }
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    return match known.get(base) {
                        Some(Kind::Histogram) => None,
                        Some(kind) => {
                            Some(format!("{name}: {base} is a {kind:?}, not a histogram"))
                        }
                        None => Some(format!("{name}: no histogram {base}")),
                    };
                }
            }
            Some(format!("{name}: not a metric of describe_metrics"))
        })
        .collect()
}

/// Every PromQL expression of a Grafana dashboard: the panels' targets (rows' panels too)
/// and the templating queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("a target without expr");
                out.push((title.clone(), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .expect("a query variable without its query");
            out.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    out
}

fn read(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[cfg(feature = "serde")]
#[test]
fn the_dashboard_asks_only_for_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/groupcache.json")).expect("valid JSON");
    // Importable: a title, a uid, panels with unique ids, every panel and target on the
    // templated data source.
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let datasource = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let reference = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "{panel}"
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"],
                reference.as_str(),
                "{}",
                panel["title"]
            );
            assert_eq!(
                panel["datasource"]["type"], "prometheus",
                "{}",
                panel["title"]
            );
        }
    }

    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{queries:?}");
    let mut used = BTreeSet::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{title}: {expr} asks for no groupcache metric"
        );
        used.extend(names);
    }
    let unknown = unknown_metrics(&used);
    assert!(
        unknown.is_empty(),
        "deploy/grafana/groupcache.json: {unknown:?}"
    );
    // The panels the dashboard is for.
    for metric in [
        "groupcache_gets_total",
        "groupcache_cache_hits_total",
        "groupcache_loads_total",
        "groupcache_load_duration_seconds_bucket",
        "groupcache_peer_request_duration_seconds_bucket",
        "groupcache_peer_request_errors_total",
        "groupcache_cache_bytes",
        "groupcache_cache_evictions_total",
        "groupcache_hot_promotions_total",
        "groupcache_ring_fingerprint",
        "groupcache_skipped_peers",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
}

#[test]
fn the_alert_rules_ask_only_for_exported_metrics() {
    for path in [
        "deploy/prometheus/groupcache.rules.yml",
        "deploy/prometheus/groupcache.rules.test.yml",
    ] {
        let names = metric_names(&read(path));
        assert!(names.len() > 5, "{path}: {names:?}");
        let unknown = unknown_metrics(&names);
        assert!(unknown.is_empty(), "{path}: {unknown:?}");
    }
}

#[test]
fn metric_names_are_read_whole() {
    let names = metric_names(
        "sum(rate(groupcache_gets_total{a=\"b\"}[1m])) / x_groupcache_y + groupcache_peers",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["groupcache_gets_total", "groupcache_peers"]
    );
    let unknown = unknown_metrics(
        &[
            "groupcache_load_duration_seconds_bucket",
            "groupcache_gets_total_bucket",
            "groupcache_nothing",
        ]
        .map(str::to_owned)
        .into(),
    );
    assert_eq!(unknown.len(), 2, "{unknown:?}");
}

/// The Prometheus test: real processes.
#[cfg(all(unix, feature = "serde"))]
mod scrape {
    use std::process::Command;
    use std::time::Duration;

    use crate::support::node_process;

    /// What is missing for the Prometheus test, if anything.
    fn prometheus_missing() -> Option<String> {
        let mut missing: Vec<String> = ["prometheus", "promtool", "python3"]
            .into_iter()
            .filter(|tool| !node_process::on_path(tool))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            let yaml = Command::new("python3").args(["-c", "import yaml"]).output();
            if !yaml.is_ok_and(|o| o.status.success()) {
                missing.push("PyYAML for python3".to_owned());
            }
        }
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// The whole script: 120 s for the processes to get ready and 120 s for the scrapes, and a
    /// few seconds of traffic; this leaves room for a loaded machine.
    const SCRAPE_SCRIPT_DEADLINE: Duration = Duration::from_secs(600);

    #[test]
    fn prometheus_scraping_three_nodes_computes_what_their_stats_say() {
        if let Some(missing) = prometheus_missing() {
            assert!(
                std::env::var("GROUPCACHE_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
                "GROUPCACHE_REQUIRE_PROMETHEUS=1, but {missing} missing (apt-get install prometheus; \
                 pip install pyyaml)"
            );
            node_process::stderr_line(&format!(
                "monitoring: skipped the Prometheus test: {missing} missing"
            ));
            return;
        }
        let binary = node_process::node_binary();
        let script = node_process::manifest_dir().join("scripts/prometheus-scrape.py");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .current_dir(node_process::manifest_dir())
            .env("NODE_BIN", &binary)
            .env("READY_TIMEOUT", "120")
            .env("SCRAPE_TIMEOUT", "120");
        let finished = node_process::run_with_deadline(command, SCRAPE_SCRIPT_DEADLINE)
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
        assert!(
            finished.success()
                && finished
                    .stdout
                    .lines()
                    .any(|l| l == "prometheus-scrape: OK"),
            "scripts/prometheus-scrape.py failed with NODE_BIN={}: {}",
            binary.display(),
            finished.describe()
        );
        let line = format!(
            "prometheus: scripts/prometheus-scrape.py passed in {:.1?}",
            finished.elapsed
        );
        node_process::append_line(&node_process::target_dir().join("prometheus-ran"), &line)
            .expect("write target/prometheus-ran");
        node_process::stderr_line(&format!("monitoring: {line}"));
    }
}
