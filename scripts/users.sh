#!/usr/bin/env bash
# Three processes of the users example (examples/users.rs: users in an embedded SQLite
# database, read through the cache) on 127.0.0.1, checked from the outside with curl:
#
#   1. a cold page of 100 users through one node: 100 users, and at most one SQL query on
#      each node (one `IN (...)` per node that owns some of them), 100 rows read in all;
#   2. the same page through another node, and one of its users through the third: no new
#      query anywhere;
#   3. a user id with no row: 404.
#
# Usage: scripts/users.sh
#   USERS_BIN=path/to/users   use this binary instead of building it (cargo build --example users)
#   READY_TIMEOUT=120         seconds to wait for a process to listen (it seeds 100,000 rows first)
#
# Needs bash, curl, python3 (free ports and JSON) and cargo (unless USERS_BIN is given).
# Exits 0 when every check passed, non-zero with a message otherwise. The processes are killed
# on exit, whatever happens.
set -euo pipefail

if [ -n "${USERS_BIN:-}" ] && [ "${USERS_BIN#/}" = "$USERS_BIN" ]; then
  USERS_BIN="$PWD/$USERS_BIN"
fi
cd "$(dirname "$0")/.."

READY_TIMEOUT="${READY_TIMEOUT:-120}"

fail() {
  echo "users: FAILED: $*" >&2
  exit 1
}
say() { echo "users: $*"; }

command -v curl >/dev/null 2>&1 || fail "curl is missing"
command -v python3 >/dev/null 2>&1 || fail "python3 is missing"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/users.XXXXXX")"
pids=()

cleanup() {
  local status=$?
  local pid i
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for i in 0 1 2; do
      echo "----- process $i: last log lines -----" >&2
      tail -n 30 "$workdir/users-$i.log" >&2 2>/dev/null || true
    done
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${USERS_BIN:-}" ]; then
  users_bin="$USERS_BIN"
  [ -x "$users_bin" ] || fail "USERS_BIN=$users_bin is not an executable file"
else
  command -v cargo >/dev/null 2>&1 || fail "cargo is missing (or set USERS_BIN)"
  say "building the users example (cargo build --example users)"
  cargo build --example users --message-format=json-render-diagnostics >"$workdir/build.json" ||
    fail "cargo build --example users failed"
  users_bin="$(grep -o '"executable":"[^"]*/users"' "$workdir/build.json" | tail -n 1 | sed 's/^"executable":"//; s/"$//')"
  [ -n "$users_bin" ] && [ -x "$users_bin" ] || fail "cannot find the users binary in cargo's output"
fi

read -r -a ports <<<"$(python3 scripts/free-ports.py 3)"
urls=()
for port in "${ports[@]}"; do
  urls+=("http://127.0.0.1:$port")
done
peer_urls="$(IFS=,; echo "${urls[*]}")"

for i in 0 1 2; do
  GROUPCACHE_LISTEN="127.0.0.1:${ports[$i]}" \
    GROUPCACHE_SELF_URL="${urls[$i]}" \
    GROUPCACHE_PEER_URLS="$peer_urls" \
    GROUPCACHE_PEER_TIMEOUT_MS="${GROUPCACHE_PEER_TIMEOUT_MS:-30000}" \
    GROUPCACHE_CONNECT_TIMEOUT_MS="${GROUPCACHE_CONNECT_TIMEOUT_MS:-10000}" \
    "$users_bin" >"$workdir/users-$i.log" 2>&1 </dev/null &
  pids+=("$!")
done
for i in 0 1 2; do
  deadline=$((SECONDS + READY_TIMEOUT))
  until grep -q '^listening on' "$workdir/users-$i.log" 2>/dev/null; do
    kill -0 "${pids[$i]}" 2>/dev/null || fail "process ${urls[$i]} exited before it listened"
    [ "$SECONDS" -lt "$deadline" ] || fail "process ${urls[$i]} not listening after ${READY_TIMEOUT}s"
    sleep 0.2
  done
done
say "3 processes: ${urls[*]}"

# "queries rows" of each process, one line each.
sql() {
  local url
  for url in "${urls[@]}"; do
    curl -sf --max-time 30 "$url/stats" |
      python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["sql_queries"], d["sql_rows"])'
  done
}

before="$(sql)"
page="$(curl -sf --max-time 60 "${urls[0]}/users?page=7")" || fail "GET /users?page=7 failed"
lines="$(printf '%s\n' "$page" | grep -c '"id"')"
[ "$lines" -eq 100 ] || fail "page 7 has $lines users, not 100"
grep -q '"id":700,' <<<"$page" || fail "page 7 does not start with user 700"
after="$(sql)"
python3 - "$before" "$after" <<'PY' || fail "the cold page did not cost one query per owner"
import sys
before = [tuple(map(int, l.split())) for l in sys.argv[1].splitlines()]
after = [tuple(map(int, l.split())) for l in sys.argv[2].splitlines()]
queries = [a[0] - b[0] for a, b in zip(after, before)]
rows = sum(a[1] - b[1] for a, b in zip(after, before))
print(f"users: cold page of 100: SQL queries per process {queries}, {rows} rows in all")
assert all(q in (0, 1) for q in queries), queries
assert sum(queries) >= 1 and rows == 100, (queries, rows)
PY

curl -sf --max-time 60 "${urls[1]}/users?page=7" >/dev/null || fail "GET /users?page=7 on the second process failed"
one="$(curl -sf --max-time 60 "${urls[2]}/users/742")" || fail "GET /users/742 failed"
[ "$one" = '{"email":"user742@example.com","id":742,"name":"user 742"}' ] || fail "user 742 is $one"
[ "$(sql)" = "$after" ] || fail "a warm page or user ran SQL queries: $(sql | tr '\n' ' ')"
say "the same page through another process, and one of its users: no new query"

status="$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "${urls[0]}/users/100000")"
[ "$status" = 404 ] || fail "GET /users/100000 answered $status, not 404"
say "a user with no row: 404"
say "all checks passed"
