#!/usr/bin/env bash
# Three node processes (examples/node.rs) on 127.0.0.1, checked from the outside:
#
#   1. every key, asked through every node, has the right value;
#   2. each key was loaded exactly once in the whole cluster (the sum of `local_loads` over
#      the nodes' /stats), and the nodes asked each other (`server_requests` > 0);
#   3. /metrics serves the Prometheus text with `groupcache_gets_total`;
#   4. SIGTERM stops each node gracefully: exit status 0.
#
# Usage: scripts/three-nodes.sh
#   NODE_BIN=path/to/node   use this binary instead of building it (cargo build --example node)
#   KEYS=30                 how many keys to check
#   READY_TIMEOUT=120       seconds to wait for a node to answer /healthz
#   STOP_TIMEOUT=60         seconds to wait for a node to exit after SIGTERM
#   GROUPCACHE_PEER_SECRET  the nodes' shared peer secret; a random one by default
#   GROUPCACHE_*            passed on to the nodes; peer timeouts default to 30 s here (10 s to
#                           connect), so a loaded machine does not turn a slow peer into a
#                           second load of a key
#
# Needs bash, curl and cargo (unless NODE_BIN is given); python3 is used to pick free ports
# if present. Exits 0 when every check passed, non-zero with a message otherwise. The nodes
# are killed on exit, whatever happens.
set -euo pipefail

# NODE_BIN may be relative to the caller's directory.
if [ -n "${NODE_BIN:-}" ] && [ "${NODE_BIN#/}" = "$NODE_BIN" ]; then
  NODE_BIN="$PWD/$NODE_BIN"
fi
cd "$(dirname "$0")/.."

KEYS="${KEYS:-30}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
STOP_TIMEOUT="${STOP_TIMEOUT:-60}"
SOURCE=demo

fail() {
  echo "three-nodes: FAILED: $*" >&2
  exit 1
}
say() { echo "three-nodes: $*"; }

command -v curl >/dev/null 2>&1 || fail "curl is missing"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/three-nodes.XXXXXX")"
pids=()
names=()

cleanup() {
  local status=$?
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    local i
    for i in "${!names[@]}"; do
      echo "----- node ${names[$i]}: last log lines -----" >&2
      tail -n 30 "$workdir/node-$i.log" >&2 2>/dev/null || true
    done
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The binary: given, or built once.
if [ -n "${NODE_BIN:-}" ]; then
  node_bin="$NODE_BIN"
  [ -x "$node_bin" ] || fail "NODE_BIN=$node_bin is not an executable file"
else
  command -v cargo >/dev/null 2>&1 || fail "cargo is missing (or set NODE_BIN)"
  say "building the node example (cargo build --example node)"
  cargo build --example node --message-format=json-render-diagnostics >"$workdir/build.json" ||
    fail "cargo build --example node failed"
  node_bin="$(grep -o '"executable":"[^"]*/node"' "$workdir/build.json" | tail -n 1 | sed 's/^"executable":"//; s/"$//')"
  [ -n "$node_bin" ] && [ -x "$node_bin" ] || fail "cannot find the node binary in cargo's output"
fi
say "node binary: $node_bin"

# Three free ports, chosen by the OS. Between here and the nodes' bind another process could
# take one; the node then fails to start, which the readiness wait reports.
free_ports() {
  if command -v python3 >/dev/null 2>&1; then
    python3 scripts/free-ports.py 3
  else
    # No python3: random high ports that nothing answers on now.
    local ports=() port
    while [ "${#ports[@]}" -lt 3 ]; do
      port=$((20000 + RANDOM % 40000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [[ " ${ports[*]} " != *" $port "* ]]; then
        ports+=("$port")
      fi
    done
    echo "${ports[*]}"
  fi
}
read -r -a ports <<<"$(free_ports)"
[ "${#ports[@]}" -eq 3 ] || fail "could not pick 3 free ports"

# The peer secret every node shares (peer requests are signed with it): given, or a fresh
# random one.
if [ -z "${GROUPCACHE_PEER_SECRET:-}" ]; then
  GROUPCACHE_PEER_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
export GROUPCACHE_PEER_SECRET

urls=()
for port in "${ports[@]}"; do
  urls+=("http://127.0.0.1:$port")
done
peer_urls="$(IFS=,; echo "${urls[*]}")"

for i in 0 1 2; do
  names+=("${urls[$i]}")
  GROUPCACHE_LISTEN="127.0.0.1:${ports[$i]}" \
    GROUPCACHE_SELF_URL="${urls[$i]}" \
    GROUPCACHE_PEER_URLS="$peer_urls" \
    GROUPCACHE_DEMO_LATENCY_MS="${GROUPCACHE_DEMO_LATENCY_MS:-5}" \
    GROUPCACHE_PEER_TIMEOUT_MS="${GROUPCACHE_PEER_TIMEOUT_MS:-30000}" \
    GROUPCACHE_CONNECT_TIMEOUT_MS="${GROUPCACHE_CONNECT_TIMEOUT_MS:-10000}" \
    RUST_LOG="${RUST_LOG:-info}" \
    "$node_bin" >"$workdir/node-$i.log" 2>&1 </dev/null &
  pids+=("$!")
done
say "started 3 nodes: ${urls[*]}"

# Readiness: /healthz answers 200, within a deadline.
for i in 0 1 2; do
  deadline=$((SECONDS + READY_TIMEOUT))
  until curl -sf --max-time 5 "${urls[$i]}/healthz" >/dev/null 2>&1; do
    kill -0 "${pids[$i]}" 2>/dev/null || fail "node ${urls[$i]} exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail "node ${urls[$i]} not ready after ${READY_TIMEOUT}s"
    sleep 0.2
  done
done
say "all 3 nodes answer /healthz"

# 1. Every key through every node.
for k in $(seq 1 "$KEYS"); do
  key="user:$k"
  for url in "${urls[@]}"; do
    got="$(curl -sS --fail-with-body --max-time 30 "$url/get/$key")" ||
      fail "GET $url/get/$key failed: $got"
    [ "$got" = "value-of:$key" ] || fail "GET $url/get/$key: expected value-of:$key, got '$got'"
  done
done
say "$KEYS keys through each of the 3 nodes: every value is right"

# 2. One load per key in the cluster, and peer traffic.
field() { # field NAME JSON: the number after "NAME": (one data source, so one of each)
  grep -o "\"$1\":[0-9]*" <<<"$2" | head -n 1 | cut -d: -f2
}
total_loads=0
total_server_requests=0
for url in "${urls[@]}"; do
  stats="$(curl -sS --fail --max-time 30 "$url/stats")" || fail "GET $url/stats failed"
  grep -q "\"name\":\"$SOURCE\"" <<<"$stats" || fail "$url/stats has no source $SOURCE: $stats"
  loads="$(field local_loads "$stats")"
  server_requests="$(field server_requests "$stats")"
  peer_errors="$(field peer_errors "$stats")"
  [ -n "$loads" ] && [ -n "$server_requests" ] || fail "$url/stats lacks the counters: $stats"
  say "  $url: local_loads=$loads server_requests=$server_requests peer_errors=$peer_errors"
  total_loads=$((total_loads + loads))
  total_server_requests=$((total_server_requests + server_requests))
done
[ "$total_loads" -eq "$KEYS" ] ||
  fail "expected each of the $KEYS keys to be loaded once in the cluster, but the nodes loaded $total_loads times"
[ "$total_server_requests" -gt 0 ] || fail "no node served a peer request"
say "each key was loaded exactly once in the cluster; $total_server_requests peer requests served"

# The peer path refuses requests that are not signed with the peer secret.
for url in "${urls[@]}"; do
  status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$url/_groupcache/$SOURCE/user:1")" || true
  [ "$status" = "401" ] || fail "GET $url/_groupcache/$SOURCE/user:1 without a credential: expected 401, got $status"
done
say "the peer path refuses unsigned requests (401)"

# 3. Prometheus metrics.
for url in "${urls[@]}"; do
  metrics="$(curl -sS --fail --max-time 30 "$url/metrics")" || fail "GET $url/metrics failed"
  grep -q '^groupcache_gets_total{source="demo"}' <<<"$metrics" ||
    fail "$url/metrics has no groupcache_gets_total for source demo"
done
say "/metrics of every node has groupcache_gets_total"

# 4. Graceful shutdown: SIGTERM, then exit status 0.
for i in 0 1 2; do
  pid="${pids[$i]}"
  kill -TERM "$pid" || fail "cannot signal node ${urls[$i]}"
  deadline=$((SECONDS + STOP_TIMEOUT))
  # bash reaps its children as they exit, so kill -0 fails once the node is gone.
  while kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "node ${urls[$i]} still running ${STOP_TIMEOUT}s after SIGTERM"
    sleep 0.1
  done
  status=0
  wait "$pid" || status=$?
  [ "$status" -eq 0 ] || fail "node ${urls[$i]} exited with status $status after SIGTERM"
  grep -q 'shutting down' "$workdir/node-$i.log" ||
    fail "node ${urls[$i]} did not log its graceful shutdown"
done
say "SIGTERM: every node shut down gracefully with status 0"
say "OK"
