#!/usr/bin/env python3
"""Three node processes (examples/node.rs) and a Prometheus server on 127.0.0.1, scraping them
with the static scrape config of deploy/prometheus/prometheus.yml and its alert rules:

1. Prometheus scrapes the three nodes (every second here) and loads the rules;
2. traffic: every key through every node, twice, plus keys the demo source answers *not
   found* or fails;
3. once a scrape that started after the traffic has been stored for every node, what
   PromQL computes matches the nodes' /stats:
   - the counters per node and source, exactly;
   - the hit ratio per source, sum(hits) / sum(gets) over the nodes, exactly (the same
     division of the same whole numbers);
   - the loads per second per source over the traffic's window [t0, t1]:
     (loads @ t1 - loads @ t0) / (t1 - t0), where t0 is a time Prometheus holds every node
     at 0 loads (the last scrape before the traffic) and t1 one after it; /stats gives
     loads / (t1 - t0); they agree to 1e-9 relative (the same division, formatted);
   - rate(groupcache_loads_total[1m]) per node, which extrapolates, against the same
     computation done here over the raw samples (whose last value is the /stats total);
4. every query of deploy/grafana/groupcache.json evaluates, with data unless it asks for a
   metric the nodes do not export;
5. every alert rule evaluates without error on the real series, and none fires (each waits
   a minute or more before firing; the failing keys may make one pending).

Usage: scripts/prometheus-scrape.py
  NODE_BIN=path/to/node    the node binary (default: cargo build --example node)
  PROMETHEUS=prometheus    the Prometheus server binary
  READY_TIMEOUT=120        seconds to wait for a node or Prometheus to be ready
  SCRAPE_TIMEOUT=120       seconds to wait for the scrapes after the traffic
Prints `prometheus-scrape: OK` at the end; exits 1 with a message on the first failure.
Every process it starts is killed on exit.
"""

import calendar
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PROM_DIR = os.path.join(ROOT, "deploy", "prometheus")
SOURCE = "demo"
KEYS = 40
READY_TIMEOUT = float(os.environ.get("READY_TIMEOUT", "120"))
SCRAPE_TIMEOUT = float(os.environ.get("SCRAPE_TIMEOUT", "120"))
# The counters compared one by one: /stats field -> metric.
COUNTERS = {
    "gets": "groupcache_gets_total",
    "cache_hits": "groupcache_cache_hits_total",
    "loads": "groupcache_loads_total",
    "loads_deduped": "groupcache_loads_deduped_total",
    "local_loads": "groupcache_local_loads_total",
    "local_not_found": "groupcache_local_not_found_total",
    "local_load_errs": "groupcache_local_load_errors_total",
    "peer_loads": "groupcache_peer_loads_total",
    "peer_not_found": "groupcache_peer_not_found_total",
    "peer_load_errors": "groupcache_peer_load_errors_total",
    "peer_errors": "groupcache_peer_errors_total",
    "server_requests": "groupcache_server_requests_total",
    "hot_promotions": "groupcache_hot_promotions_total",
}

processes = []
workdir = tempfile.mkdtemp(prefix="prometheus-scrape.")


def say(message):
    print(f"prometheus-scrape: {message}", flush=True)


def fail(message):
    print(f"prometheus-scrape: FAILED: {message}", file=sys.stderr, flush=True)
    for name, _, log in processes:
        print(f"----- {name}: last log lines -----", file=sys.stderr)
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                print("".join(f.readlines()[-30:]), file=sys.stderr)
        except OSError:
            pass
    sys.exit(1)


def cleanup():
    for _, process, _ in processes:
        if process.poll() is None:
            process.kill()
    for _, process, _ in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    shutil.rmtree(workdir, ignore_errors=True)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http_get(url, timeout=30):
    """(status, body) of a GET; status 0 when the connection failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
        return 0, b""


def start(name, argv, env=None):
    log = os.path.join(workdir, f"{name}.log")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    processes.append((name, process, log))
    return process


def poll(what, timeout, check):
    """Calls check() until it returns something true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for name, process, _ in processes:
            if process.poll() is not None:
                fail(f"{name} exited with status {process.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def node_binary():
    binary = os.environ.get("NODE_BIN")
    if binary:
        return os.path.abspath(binary)
    say("building the node example (cargo build --example node)")
    out = subprocess.run(
        ["cargo", "build", "--example", "node", "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        fail(f"cargo build --example node failed:\n{out.stderr}")
    for line in reversed(out.stdout.splitlines()):
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "node":
            return message["executable"]
    fail("cannot find the node binary in cargo's output")


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url)
        if status != 200:
            fail(f"GET {url}: {status} {body[:500]!r}")
        answer = json.loads(body)
        if answer.get("status") != "success":
            fail(f"GET {url}: {answer}")
        return answer["data"]

    def samples(self, selector, at):
        """The raw samples of a range selector at time `at`: {labels tuple: [(ms, value)]}."""
        data = self.api("query", query=selector, time=f"{at:.3f}")
        if data["resultType"] != "matrix":
            fail(f"{selector}: a {data['resultType']}, not a matrix")
        return {
            tuple(sorted(r["metric"].items())): [
                (round(float(t) * 1000), float(v)) for t, v in r["values"]
            ]
            for r in data["result"]
        }

    def query(self, expr, at):
        """The instant vector of expr at time `at`, as {labels tuple: (timestamp, value)}."""
        data = self.api("query", query=expr, time=f"{at:.3f}")
        if data["resultType"] != "vector":
            fail(f"{expr}: a {data['resultType']}, not a vector")
        return {
            tuple(sorted(r["metric"].items())): (float(r["value"][0]), float(r["value"][1]))
            for r in data["result"]
        }


def prometheus_rate(samples, range_start_ms, range_end_ms):
    """What PromQL's rate() computes for a counter from its samples [(ms, value)] in a range:
    the increase between the first and the last sample (resets added), extrapolated towards
    the range's ends (not before the counter's zero, and by at most half an average scrape
    interval where a gap is wider than 1.1 of one), divided by the range. Prometheus 2's
    extrapolatedRate (promql/functions.go), written out."""
    if len(samples) < 2:
        return None
    result = samples[-1][1] - samples[0][1]
    for (_, before), (_, after) in zip(samples, samples[1:]):
        if after < before:
            result += before
    sampled = (samples[-1][0] - samples[0][0]) / 1000
    average = sampled / (len(samples) - 1)
    to_start = (samples[0][0] - range_start_ms) / 1000
    to_end = (range_end_ms - samples[-1][0]) / 1000
    if result > 0 and samples[0][1] >= 0:
        to_zero = sampled * (samples[0][1] / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled) / ((range_end_ms - range_start_ms) / 1000)


def main():
    for tool in (os.environ.get("PROMETHEUS", "prometheus"),):
        if shutil.which(tool) is None:
            fail(f"{tool} is missing (Debian: apt-get install prometheus)")
    prometheus_bin = shutil.which(os.environ.get("PROMETHEUS", "prometheus"))
    node_bin = node_binary()
    say(f"node binary: {node_bin}")

    # The nodes.
    *node_ports, prom_port = free_ports(4)
    urls = [f"http://127.0.0.1:{p}" for p in node_ports]
    secret = secrets.token_hex(32)
    for i, port in enumerate(node_ports):
        env = dict(os.environ)
        env.update(
            GROUPCACHE_LISTEN=f"127.0.0.1:{port}",
            GROUPCACHE_SELF_URL=urls[i],
            GROUPCACHE_PEER_URLS=",".join(urls),
            GROUPCACHE_PEER_SECRET=secret,
            GROUPCACHE_DEMO_LATENCY_MS="5",
            # A loaded machine must not turn a slow peer into a peer error.
            GROUPCACHE_PEER_TIMEOUT_MS="30000",
            GROUPCACHE_CONNECT_TIMEOUT_MS="10000",
            RUST_LOG=env.get("RUST_LOG", "info"),
        )
        start(f"node-{i}", [node_bin], env)
    for url in urls:
        poll(f"{url}/healthz", READY_TIMEOUT, lambda url=url: http_get(f"{url}/healthz", 5)[0] == 200)
    say(f"3 nodes ready: {' '.join(urls)}")

    # Prometheus, with the static config of deploy/prometheus/ pointed at them.
    with open(os.path.join(PROM_DIR, "prometheus.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    static["targets"] = [f"127.0.0.1:{p}" for p in node_ports]
    for rules in config["rule_files"]:
        shutil.copy(os.path.join(PROM_DIR, rules), os.path.join(workdir, rules))
    config_path = os.path.join(workdir, "prometheus.yml")
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    check = subprocess.run(
        ["promtool", "check", "config", config_path], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        fail(f"promtool check config of the test's copy:\n{check.stdout}{check.stderr}")
    start(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={os.path.join(workdir, 'data')}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
    )
    prom = Prometheus(prom_port)
    poll("Prometheus ready", READY_TIMEOUT, lambda: http_get(f"{prom.base}/-/ready", 5)[0] == 200)
    say(f"Prometheus ready on {prom.base}, job {job['job_name']}")

    def targets_up():
        active = prom.api("targets", state="active")["activeTargets"]
        return len(active) == 3 and all(t["health"] == "up" for t in active)

    poll("the three targets up", SCRAPE_TIMEOUT, targets_up)

    # t0: every node at 0 loads, and a later scrape of each stored too, so no scrape that
    # started before t0 can still arrive.
    def zeros():
        now = time.time()
        loads = prom.query("groupcache_loads_total", now)
        if len(loads) != 3 or any(v != 0 for _, v in loads.values()):
            return None
        return now

    t0 = poll("a scrape of every node before the traffic", SCRAPE_TIMEOUT, zeros)
    poll(
        "a scrape of every node stored after t0",
        SCRAPE_TIMEOUT,
        lambda: all(
            v > t0 for _, v in prom.query("timestamp(groupcache_loads_total)", time.time()).values()
        ),
    )

    # Traffic: each key through every node, twice; not-found and failing keys once each.
    expected = 0
    for round_ in range(2):
        for k in range(KEYS):
            for url in urls:
                status, body = http_get(f"{url}/get/user:{k}")
                if status != 200 or body != f"value-of:user:{k}".encode():
                    fail(f"{url}/get/user:{k}: {status} {body[:200]!r}")
                expected += 1
        if round_ == 0:
            # The first round made the load-duration histograms. A scrape of every node
            # before the loads still to come (the not-found and failing keys) gives each
            # bucket series a sample before them and one after, at t1: the dashboard's
            # rate() of the buckets then has data whenever the scrapes fall.
            first_round_end = time.time()

            def scraped_between():
                got = prom.query("timestamp(groupcache_loads_total)", time.time())
                return len(got) == 3 and all(v > first_round_end for _, v in got.values())

            poll("a scrape of every node between the loads", SCRAPE_TIMEOUT, scraped_between)
    for k in range(5):
        for url in urls:
            if http_get(f"{url}/get/missing:{k}")[0] != 404:
                fail(f"{url}/get/missing:{k} is not 404")
            if http_get(f"{url}/get/fail:{k}")[0] != 502:
                fail(f"{url}/get/fail:{k} is not 502")
    traffic_end = time.time()
    say(f"traffic: {expected} gets of {KEYS} keys, 15 not-found and 15 failing gets")

    stats = {}
    for port, url in zip(node_ports, urls):
        status, body = http_get(f"{url}/stats")
        if status != 200:
            fail(f"{url}/stats: {status}")
        (source,) = [s for s in json.loads(body)["sources"] if s["name"] == SOURCE]
        stats[f"127.0.0.1:{port}"] = source["stats"]

    # t1: a scrape that started after the traffic is stored for every node.
    def scraped_after_traffic():
        now = time.time()
        got = prom.query("timestamp(groupcache_gets_total)", now)
        if len(got) != 3 or any(v <= traffic_end for _, v in got.values()):
            return None
        return now

    t1 = poll("a scrape of every node after the traffic", SCRAPE_TIMEOUT, scraped_after_traffic)
    say(f"window: t0={t0:.3f} t1={t1:.3f} ({t1 - t0:.1f} s)")

    # Counters, per node and source, exactly.
    for field, metric in COUNTERS.items():
        got = prom.query(metric, t1)
        by_instance = {dict(labels)["instance"]: v for labels, (_, v) in got.items()
                       if dict(labels).get("source") == SOURCE}
        want = {instance: float(s[field]) for instance, s in stats.items()}
        if by_instance != want:
            fail(f"{metric}: Prometheus has {by_instance}, /stats has {want}")
    say(f"{len(COUNTERS)} counters per node equal /stats")
    if not all(s["server_requests"] > 0 and s["cache_hits"] > 0 for s in stats.values()):
        fail(f"the traffic did not reach every flow: {stats}")

    # Hit ratio per source, and per node.
    got = prom.query(
        "sum by (source) (groupcache_cache_hits_total) / sum by (source) (groupcache_gets_total)",
        t1,
    )
    hits = sum(s["cache_hits"] for s in stats.values())
    gets = sum(s["gets"] for s in stats.values())
    ratio = got.get((("source", SOURCE),), (None, None))[1]
    if ratio != hits / gets:
        fail(f"hit ratio: PromQL {ratio}, /stats {hits}/{gets} = {hits / gets}")
    say(f"hit ratio of {SOURCE}: {ratio:.6f} = {hits}/{gets}, as /stats")
    got = prom.query("groupcache_cache_hits_total / groupcache_gets_total", t1)
    for labels, (_, value) in got.items():
        s = stats[dict(labels)["instance"]]
        if value != s["cache_hits"] / s["gets"]:
            fail(f"hit ratio of {dict(labels)}: PromQL {value}, /stats {s['cache_hits']}/{s['gets']}")

    # Loads per second per source over [t0, t1].
    window = t1 - t0
    got = prom.query(
        f"sum by (source) (groupcache_loads_total @ {t1:.3f} - groupcache_loads_total @ {t0:.3f})"
        f" / {window:.3f}",
        t1,
    )
    promql_rate = got.get((("source", SOURCE),), (None, None))[1]
    loads = sum(s["loads"] for s in stats.values())
    stats_rate = loads / float(f"{window:.3f}")
    if promql_rate is None or abs(promql_rate - stats_rate) > 1e-9 * stats_rate:
        fail(f"loads per second: PromQL {promql_rate}, /stats {loads} / {window:.3f} s = {stats_rate}")
    say(f"loads per second of {SOURCE} over {window:.1f} s: {promql_rate:.4f}, as /stats ({loads} loads)")

    # rate(), as the dashboard asks, over a minute ending at t1: it extrapolates from the
    # scrapes, so it is compared with the same computation over the raw samples, whose last
    # value is each node's /stats total (checked above) and whose times are the scrapes'.
    end_ms = round(t1 * 1000)
    raw = prom.samples("groupcache_loads_total[1m]", end_ms / 1000)
    got = prom.query("rate(groupcache_loads_total[1m])", end_ms / 1000)
    for labels, series in raw.items():
        instance = dict(labels)["instance"]
        if series[-1][1] != stats[instance]["loads"]:
            fail(f"the last sample of {instance} is {series[-1][1]}, /stats has {stats[instance]['loads']}")
        expected = prometheus_rate(series, end_ms - 60_000, end_ms)
        promql = got.get(tuple(l for l in labels if l[0] != "__name__"), (None, None))[1]
        if promql is None or expected is None or abs(promql - expected) > 1e-9 * max(expected, 1e-9):
            fail(f"rate() of {instance}: PromQL {promql}, from the samples {expected}: {series}")
    say(f"rate(groupcache_loads_total[1m]) of each node is the rate of its scrapes of /stats' totals")

    # Every query of the Grafana dashboard, on these series: valid PromQL, with data unless
    # it asks for a metric the nodes do not export (yet).
    present = set(prom.query('count by (__name__) ({__name__=~"groupcache_.+"})', t1))
    present = {dict(labels)["__name__"] for labels in present}
    with open(os.path.join(ROOT, "deploy", "grafana", "groupcache.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    without_data = []
    for title, expr in queries:
        concrete = (
            expr.replace("$__rate_interval", "1m")
            .replace("$job", ".*")
            .replace("$instance", ".*")
            .replace("$source", ".*")
        )
        result = prom.query(concrete, t1)
        names = set(re.findall(r"\bgroupcache_[a-z0-9_]+", expr))
        absent = {n for n in names if n not in present}
        if not result and not absent:
            fail(f"dashboard panel {title!r}: no data for {concrete}")
        if absent:
            without_data.append(f"{title} ({', '.join(sorted(absent))})")
    say(
        f"{len(queries)} dashboard queries evaluate; without data, as their metrics are not "
        f"exported: {'; '.join(without_data) or 'none'}"
    )

    # The alert rules, evaluated on these series: no error, none firing.
    poll(
        "a rule evaluation after t1",
        SCRAPE_TIMEOUT,
        lambda: all(
            r.get("lastEvaluation", "").startswith("20")
            and calendar.timegm(time.strptime(r["lastEvaluation"][:19], "%Y-%m-%dT%H:%M:%S"))
            > t1
            for g in prom.api("rules")["groups"]
            for r in g["rules"]
        ),
    )
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    broken = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    if broken:
        fail(f"alert rules that do not evaluate: {broken}")
    alerts = [a for r in rules for a in r.get("alerts", [])]
    firing = [a for a in alerts if a["state"] == "firing"]
    if firing:
        fail(f"alerts firing on a healthy cluster: {firing}")
    pending = sorted({a["labels"]["alertname"] for a in alerts})
    say(
        f"{len(rules)} alert rules evaluate without error, none firing"
        + (f" (pending, on the failing keys: {', '.join(pending)})" if pending else "")
    )
    say("OK")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
