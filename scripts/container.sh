#!/usr/bin/env bash
# The container image of deploy/Dockerfile, built with podman from base images made of
# Debian's packages, and three containers of deploy/docker-compose.yml checked from the
# outside:
#
#   1. base images: `debootstrap --variant=minbase` root filesystems, imported with
#      `podman import`: localhost/groupcache-debian:<suite> (the runtime) and
#      localhost/groupcache-rust:<suite> (the same plus Debian's rustc, cargo and libc6-dev,
#      with CARGO_HOME=/usr/local/cargo as in the Rust images);
#   2. the image: `podman build -f deploy/Dockerfile` with BUILDER and BASE set to those
#      images, tagged localhost/tower-groupcache-node:dev; its configuration is checked
#      (user 10001:10001, the entrypoint, port 8080, SIGTERM as the stop signal);
#   3. the cluster: podman-compose (from PyPI, pinned) starts deploy/docker-compose.yml on
#      three free 127.0.0.1 ports, and the seed flows are driven through the published ports,
#      each checked in the nodes' /stats: a miss on a remote owner costs exactly one load in
#      the cluster (on the owner), a second node gets the key from the owner's cache (a
#      remote hit, no load), and a key asked twice of its owner is a local hit;
#   4. a container stopped mid-run: `podman stop` sends node-3 SIGTERM, it exits 0 after its
#      graceful shutdown, and nodes 1 and 2 still answer every key, loading node 3's keys
#      themselves (and only those), with peer errors or skips for node 3 in their /stats;
#   5. `podman-compose stop`: nodes 1 and 2 exit 0 too.
#
# Usage: scripts/container.sh [build|all]
#   build   steps 1 and 2, and podman-compose installed: all that needs the network (what
#           .ci/run does before the tests)
#   all     everything (the default; tests/it/container.rs runs this)
#
# Environment:
#   CONTAINER_WORK=/tmp/container-work   root filesystems, the .deb cache, podman's
#                           configuration for this script, the podman-compose virtualenv
#   SUITE=trixie            the Debian release of both base images (rustc >= 1.85 is needed)
#   DEBIAN_MIRROR=http://deb.debian.org/debian
#   REBUILD=1               make the base images and the image again even if they exist
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   mounted read-only into the build, so that
#                           cargo trusts what this machine trusts; empty: not mounted
#   KEYS=30                 how many keys the stop phase checks
#   READY_TIMEOUT=180       seconds to wait for a node to answer /healthz
#   STOP_TIMEOUT=60         seconds podman waits for a node to stop after SIGTERM
#
# The image is built again only when the build context (the files git knows, less what
# deploy/Dockerfile.dockerignore leaves out) or a base image changed: the image carries the
# hash of both as a label. Podman runs with a configuration of its own
# ($CONTAINER_WORK/containers.conf, through CONTAINERS_CONF; deploy/README.md says why each
# setting is there). Needs root, podman, debootstrap, curl, python3 (with venv) and git.
# Exits 0 when every check passed, non-zero with a message otherwise. The containers and
# their network are removed on exit, whatever happens; the images are kept.
#
# `[ A ] && [ B ] || fail ...` is meant: fail when either check is false.
# shellcheck disable=SC2015
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-all}"
case "$MODE" in
build | all) ;;
*)
  echo "usage: $0 [build|all]" >&2
  exit 2
  ;;
esac

CONTAINER_WORK="${CONTAINER_WORK:-/tmp/container-work}"
SUITE="${SUITE:-trixie}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
REBUILD="${REBUILD:-0}"
CA_BUNDLE="${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
KEYS="${KEYS:-30}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
STOP_TIMEOUT="${STOP_TIMEOUT:-60}"

BASE_IMAGE="localhost/groupcache-debian:$SUITE"
BUILDER_IMAGE="localhost/groupcache-rust:$SUITE"
NODE_IMAGE="localhost/tower-groupcache-node:dev"
CONTEXT_LABEL="tower-groupcache.context"
PROJECT="groupcache-check"
COMPOSE_FILE="deploy/docker-compose.yml"
# podman-compose and its dependencies, pinned.
PODMAN_COMPOSE_PINS=(podman-compose==1.6.0 python-dotenv==1.2.4 PyYAML==6.0.4)
SOURCE=demo

fail() {
  echo "container: FAILED: $*" >&2
  exit 1
}
say() { echo "container: $*"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, and podman with root's storage and networks)"
for tool in podman debootstrap curl python3 git tar; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done
mkdir -p "$CONTAINER_WORK"

# Podman's configuration for this script. Each setting works around what this kind of
# machine lacks (deploy/README.md, "What podman needs here"):
# - runc: crun 1.8 refuses cgroups in hybrid mode (cgroup v1 controllers with one on v2);
# - cgroupfs: no systemd runs here;
# - the file events backend: no journald;
# - ulimits at or below the machine's: podman asks for nofile 1048576 and a large nproc by
#   default, and raising a hard limit needs CAP_SYS_RESOURCE, which root lacks here;
# - netavark: its DNS (aardvark-dns) resolves the Compose service names.
hard_nofile="$(ulimit -Hn)"
[ "$hard_nofile" = unlimited ] && hard_nofile=65536
[ "$hard_nofile" -gt 65536 ] && hard_nofile=65536
export CONTAINERS_CONF="$CONTAINER_WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<EOF
# Written by scripts/container.sh.
[containers]
default_ulimits = ["nofile=$hard_nofile:$hard_nofile", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF

# ---------------------------------------------------------------------------------------------
# 1. Base images from Debian's packages

# make_base IMAGE INCLUDE [--change ...]: a minbase root filesystem of $SUITE with the
# packages INCLUDE (comma-separated, may be empty), imported as IMAGE.
make_base() {
  local image="$1" include="$2"
  shift 2
  if [ "$REBUILD" != 1 ] && podman image exists "$image"; then
    say "base image $image: present"
    return
  fi
  local name="${image##*/}"
  name="${name//:/-}"
  local rootfs="$CONTAINER_WORK/rootfs-$name" log="$CONTAINER_WORK/debootstrap-$name.log"
  rm -rf "$rootfs"
  local started=$SECONDS
  say "base image $image: debootstrap --variant=minbase $SUITE${include:+ --include=$include}"
  mkdir -p "$CONTAINER_WORK/debs"
  debootstrap --variant=minbase ${include:+--include="$include"} \
    --cache-dir="$CONTAINER_WORK/debs" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" \
    >"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    fail "debootstrap of $image failed (log: $log)"
  }
  # What an image does not need: the package lists and downloads, documentation.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  tar --numeric-owner -C "$rootfs" -c . |
    podman import --change 'CMD ["/bin/bash"]' "$@" - "$image" >"$CONTAINER_WORK/import.log" 2>&1 || {
    cat "$CONTAINER_WORK/import.log" >&2
    fail "podman import of $image failed"
  }
  rm -rf "$rootfs"
  say "base image $image: made in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------------------------
# 2. The image

# The hash of the build context (the files git knows, tracked or not ignored, less those
# deploy/Dockerfile.dockerignore leaves out: .git/, target/ and *.log are never among them,
# as .gitignore has target/) and of the base images.
context_hash() {
  {
    git ls-files -z --cached --others --exclude-standard | python3 -c '
import hashlib, os, sys
h = hashlib.sha256()
for name in sorted(set(sys.stdin.buffer.read().split(b"\0"))):
    if not name or name.endswith(b".log") or not os.path.isfile(name):
        continue
    h.update(name + b"\0")
    with open(name, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
print(h.hexdigest())
'
    podman image inspect --format '{{.Id}}' "$BUILDER_IMAGE" "$BASE_IMAGE"
  } | sha256sum | cut -c1-32
}

build_image() {
  local hash
  hash="$(context_hash)" || fail "cannot hash the build context"
  if [ "$REBUILD" != 1 ] && podman image exists "$NODE_IMAGE" &&
    [ "$(podman image inspect --format "{{index .Labels \"$CONTEXT_LABEL\"}}" "$NODE_IMAGE")" = "$hash" ]; then
    say "image $NODE_IMAGE: up to date (context $hash)"
    return
  fi
  local volumes=()
  if [ -n "$CA_BUNDLE" ] && [ -f "$CA_BUNDLE" ]; then
    volumes=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  local started=$SECONDS
  say "image $NODE_IMAGE: podman build -f deploy/Dockerfile (context $hash)"
  # --network=host: cargo in the build fetches crates from crates.io; on podman's bridge
  # network the build container cannot resolve names here (deploy/README.md).
  podman build --network=host "${volumes[@]}" \
    -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
    --build-arg BUILDER="$BUILDER_IMAGE" --build-arg BASE="$BASE_IMAGE" \
    --label "$CONTEXT_LABEL=$hash" -t "$NODE_IMAGE" . >"$CONTAINER_WORK/build.log" 2>&1 || {
    tail -n 40 "$CONTAINER_WORK/build.log" >&2
    fail "podman build failed (log: $CONTAINER_WORK/build.log)"
  }
  say "image $NODE_IMAGE: built in $((SECONDS - started)) s"
}

# The image's configuration, as the Dockerfile sets it.
check_image() {
  local got
  got="$(podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.ExposedPorts}}|{{.Config.StopSignal}}' "$NODE_IMAGE")" ||
    fail "cannot inspect $NODE_IMAGE"
  local user entrypoint ports stop_signal
  IFS='|' read -r user entrypoint ports stop_signal <<<"$got"
  [ "$user" = "10001:10001" ] || fail "$NODE_IMAGE runs as '$user', not 10001:10001"
  [ "$entrypoint" = '["/usr/local/bin/groupcache-node"]' ] ||
    fail "$NODE_IMAGE has the entrypoint $entrypoint"
  [[ "$ports" == *'"8080/tcp"'* ]] || fail "$NODE_IMAGE exposes $ports, not 8080/tcp"
  [ "$stop_signal" = SIGTERM ] || fail "$NODE_IMAGE stops with '$stop_signal', not SIGTERM"
  # Read whole first: under pipefail, grep -q leaving at its match can fail the pipeline.
  local env
  env="$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$NODE_IMAGE")" ||
    fail "cannot inspect $NODE_IMAGE"
  grep -qx 'GROUPCACHE_LISTEN=0.0.0.0:8080' <<<"$env" ||
    fail "$NODE_IMAGE lacks GROUPCACHE_LISTEN=0.0.0.0:8080"
  # The binary runs in the runtime image: with a bad setting it refuses to start, with
  # status 2 and its message.
  local out status=0
  out="$(timeout 120 podman run --rm --network=none -e GROUPCACHE_PEER_TIMEOUT_MS=soon "$NODE_IMAGE" 2>&1)" ||
    status=$?
  [ "$status" -eq 2 ] && [[ "$out" == *"node: configuration error"* ]] ||
    fail "the node with a bad setting: expected status 2 and a configuration error, got $status: $out"
  say "image $NODE_IMAGE: user 10001:10001, entrypoint /usr/local/bin/groupcache-node, port 8080/tcp, SIGTERM; the node runs in it (a bad setting: status 2)"
}

base_started=$SECONDS
make_base "$BASE_IMAGE" "" --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
make_base "$BUILDER_IMAGE" "rustc,cargo,libc6-dev,ca-certificates" \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
say "base images ready in $((SECONDS - base_started)) s"
build_image
check_image

# podman-compose, pinned, in a virtualenv of its own.
venv="$CONTAINER_WORK/venv"
if ! grep -q "podman-compose version ${PODMAN_COMPOSE_PINS[0]#*==}" \
  <<<"$("$venv/bin/podman-compose" --version 2>/dev/null)"; then
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PODMAN_COMPOSE_PINS[@]}" ||
    fail "pip install ${PODMAN_COMPOSE_PINS[*]} failed"
fi
if [ "$MODE" = build ]; then
  say "OK (build)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 3. The cluster

compose() {
  "$venv/bin/podman-compose" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
}

workdir="$(mktemp -d "${TMPDIR:-/tmp}/container.XXXXXX")"
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ]; then
    local name
    for name in $(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}' 2>/dev/null); do
      echo "----- $name: last log lines -----" >&2
      podman logs --tail 30 "$name" >&2 2>&1 || true
    done
  fi
  timeout 120 "$venv/bin/podman-compose" -p "$PROJECT" -f "$COMPOSE_FILE" down -t 10 \
    >"$workdir/down.log" 2>&1 || cat "$workdir/down.log" >&2 || true
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three free ports, chosen by the OS. Between here and podman's bind another process could
# take one; `up` then fails, and says so.
read -r -a ports <<<"$(python3 scripts/free-ports.py 3)"
[ "${#ports[@]}" -eq 3 ] || fail "could not pick 3 free ports"
export GROUPCACHE_NODE_1_PORT="${ports[0]}" GROUPCACHE_NODE_2_PORT="${ports[1]}" GROUPCACHE_NODE_3_PORT="${ports[2]}"
export GROUPCACHE_PEER_SECRET
GROUPCACHE_PEER_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Long peer timeouts: a loaded machine must not turn a slow peer into a second load.
export GROUPCACHE_PEER_TIMEOUT_MS="${GROUPCACHE_PEER_TIMEOUT_MS:-30000}"
export GROUPCACHE_CONNECT_TIMEOUT_MS="${GROUPCACHE_CONNECT_TIMEOUT_MS:-10000}"

# Containers of an earlier run that was killed before its cleanup.
compose down -t 10 >"$workdir/down-before.log" 2>&1 || true
say "podman-compose up -d --no-build ($PROJECT, ports ${ports[*]})"
compose up -d --no-build >"$workdir/up.log" 2>&1 || {
  cat "$workdir/up.log" >&2
  fail "podman-compose up failed"
}

urls=()
for port in "${ports[@]}"; do
  urls+=("http://127.0.0.1:$port")
done
container_of() { # container_of SERVICE: the container's name
  podman ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1
}
containers=()
for i in 1 2 3; do
  name="$(container_of "node-$i")"
  [ -n "$name" ] || fail "no container for node-$i"
  containers+=("$name")
done

# Readiness: /healthz answers 200, within a deadline.
for i in 0 1 2; do
  deadline=$((SECONDS + READY_TIMEOUT))
  until curl -sf --max-time 5 "${urls[$i]}/healthz" >/dev/null 2>&1; do
    [ "$(podman inspect --format '{{.State.Running}}' "${containers[$i]}")" = true ] ||
      fail "${containers[$i]} stopped before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail "${containers[$i]} not ready after ${READY_TIMEOUT}s"
    sleep 0.2
  done
done
say "3 containers answer /healthz: ${containers[*]}"

# The node runs as uid 10001, seen from the host.
for name in "${containers[@]}"; do
  pid="$(podman inspect --format '{{.State.Pid}}' "$name")"
  uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
  [ "$uid" = 10001 ] || fail "$name runs as uid $uid, not 10001"
done
say "every node runs as uid 10001"

# stats: the counters of every node, one line: "gets hits loads local_loads peer_loads
# peer_errors peer_skips server_requests" per node, nodes separated by "|". An unreachable
# node gives "-".
counters() {
  local url out=() stats
  for url in "$@"; do
    if stats="$(curl -sS --fail --max-time 30 "$url/stats" 2>/dev/null)"; then
      out+=("$(python3 -c '
import json, sys
doc = json.loads(sys.argv[1])
s = next(x["stats"] for x in doc["sources"] if x["name"] == sys.argv[2])
print(" ".join(str(s[k]) for k in ("gets", "cache_hits", "loads", "local_loads",
      "peer_loads", "peer_errors", "peer_skips", "server_requests")))
' "$stats" "$SOURCE")")
    else
      out+=("-")
    fi
  done
  local IFS='|'
  echo "${out[*]}"
}
# field SNAPSHOT NODE NAME: one counter of a node (0-based) in a counters line.
field() {
  local node_line
  node_line="$(cut -d'|' -f$(($2 + 1)) <<<"$1")"
  local names=(gets hits loads local_loads peer_loads peer_errors peer_skips server_requests)
  local i
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$3" ]; then
      read -r -a values <<<"$node_line"
      echo "${values[$i]}"
      return
    fi
  done
  fail "no counter $3"
}
# delta BEFORE AFTER NODE NAME
delta() { echo $(($(field "$2" "$3" "$4") - $(field "$1" "$3" "$4"))); }
get() { # get NODE KEY: the value through node NODE (0-based), checked
  local got
  got="$(curl -sS --fail-with-body --max-time 60 "${urls[$1]}/get/$2")" ||
    fail "GET ${urls[$1]}/get/$2 failed: $got"
  [ "$got" = "value-of:$2" ] || fail "GET ${urls[$1]}/get/$2: expected value-of:$2, got '$got'"
}
total_local_loads() { # total_local_loads BEFORE AFTER NODES...: the sum of local_loads deltas
  local before="$1" after="$2" sum=0 n
  shift 2
  for n in "$@"; do
    sum=$((sum + $(delta "$before" "$after" "$n" local_loads)))
  done
  echo "$sum"
}
# owner_of BEFORE AFTER: the node whose local_loads rose by one, when exactly one did.
owner_of() {
  local n owner=-1
  for n in 0 1 2; do
    case "$(delta "$1" "$2" "$n" local_loads)" in
    0) ;;
    1) [ "$owner" -eq -1 ] && owner=$n || owner=-2 ;;
    *) owner=-2 ;;
    esac
  done
  echo "$owner"
}

# A miss on a remote owner costs one load, and the first key owned by node 1 is kept for the
# local hit: new keys through node 1 until there is one of each (at most 64).
local_key="" remote_key="" remote_owner=-1
for i in $(seq 1 64); do
  key="seed:$i"
  before="$(counters "${urls[@]}")"
  get 0 "$key"
  after="$(counters "${urls[@]}")"
  owner="$(owner_of "$before" "$after")"
  [ "$owner" -ge 0 ] ||
    fail "the first get of $key through node 1 did not cost exactly one load in the cluster: $before -> $after"
  if [ "$owner" -eq 0 ]; then
    [ -n "$local_key" ] || local_key="$key"
  elif [ -z "$remote_key" ]; then
    remote_key="$key" remote_owner="$owner"
    [ "$(delta "$before" "$after" 0 peer_loads)" -eq 1 ] ||
      fail "node 1 did not get $key from its owner node $((owner + 1)): $before -> $after"
    [ "$(delta "$before" "$after" "$owner" server_requests)" -ge 1 ] ||
      fail "the owner node $((owner + 1)) served no peer request for $key: $before -> $after"
    say "miss on a remote owner: $key through node 1, loaded once in the cluster, by its owner node $((owner + 1))"
  fi
  [ -n "$local_key" ] && [ -n "$remote_key" ] && break
done
[ -n "$local_key" ] && [ -n "$remote_key" ] ||
  fail "64 keys through node 1 did not give one owned by node 1 and one owned by another node"

# A remote hit: the third node (neither node 1 nor the owner) gets the key from the owner's
# cache; no load anywhere.
third=$((3 - remote_owner))
before="$(counters "${urls[@]}")"
get "$third" "$remote_key"
after="$(counters "${urls[@]}")"
[ "$(total_local_loads "$before" "$after" 0 1 2)" -eq 0 ] ||
  fail "$remote_key through node $((third + 1)) was loaded again: $before -> $after"
[ "$(delta "$before" "$after" "$third" peer_loads)" -eq 1 ] &&
  [ "$(delta "$before" "$after" "$remote_owner" hits)" -ge 1 ] ||
  fail "$remote_key through node $((third + 1)) was not a hit at its owner node $((remote_owner + 1)): $before -> $after"
say "remote hit: $remote_key through node $((third + 1)) came from node $((remote_owner + 1))'s cache, no load"

# A local hit: node 1 owns local_key and has it; no load, no peer request.
before="$(counters "${urls[@]}")"
get 0 "$local_key"
after="$(counters "${urls[@]}")"
[ "$(delta "$before" "$after" 0 hits)" -eq 1 ] &&
  [ "$(total_local_loads "$before" "$after" 0 1 2)" -eq 0 ] &&
  [ "$(delta "$before" "$after" 0 peer_loads)" -eq 0 ] ||
  fail "$local_key through its owner node 1 was not a local hit: $before -> $after"
say "local hit: $local_key through its owner node 1, no load, no peer request"

# ---------------------------------------------------------------------------------------------
# 4. A container stopped mid-run

# KEYS keys through node 1, each loaded once in the cluster; the owner of each is noted.
owners=()
for k in $(seq 1 "$KEYS"); do
  before="$(counters "${urls[@]}")"
  get 0 "key:$k"
  after="$(counters "${urls[@]}")"
  owner="$(owner_of "$before" "$after")"
  [ "$owner" -ge 0 ] || fail "key:$k through node 1 did not cost exactly one load: $before -> $after"
  owners+=("$owner")
done
node3_keys=0
for owner in "${owners[@]}"; do
  [ "$owner" -eq 2 ] && node3_keys=$((node3_keys + 1))
done
[ "$node3_keys" -ge 1 ] || fail "none of the $KEYS keys is owned by node 3"
say "$KEYS keys through node 1, each loaded once; node 3 owns $node3_keys of them"

say "podman stop ${containers[2]} (SIGTERM)"
podman stop -t "$STOP_TIMEOUT" "${containers[2]}" >/dev/null || fail "podman stop ${containers[2]} failed"
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "${containers[2]}")"
[ "$exit_code" = 0 ] || fail "${containers[2]} exited with status $exit_code after SIGTERM"
# Read whole before it is searched: with pipefail, `grep -q` leaving at the first match would
# fail the pipeline whenever podman is still writing the rest (SIGPIPE).
stopped_logs="$(podman logs "${containers[2]}" 2>&1)"
grep -q 'shutting down' <<<"$stopped_logs" ||
  fail "${containers[2]} did not log its graceful shutdown"
say "node 3 shut down gracefully, status 0"

# Every key through nodes 1 and 2: the right value; node 3's keys loaded by the asking node
# (at most once: a copy in its hot cache saves the load), the others' keys not loaded again.
alive=("${urls[0]}" "${urls[1]}")
start="$(counters "${alive[@]}")"
for n in 0 1; do
  for k in $(seq 1 "$KEYS"); do
    owner="${owners[$((k - 1))]}"
    before="$(counters "${alive[@]}")"
    get "$n" "key:$k"
    after="$(counters "${alive[@]}")"
    loads="$(total_local_loads "$before" "$after" 0 1)"
    if [ "$owner" -eq 2 ]; then
      [ "$loads" -le 1 ] && [ "$(delta "$before" "$after" $((1 - n)) local_loads)" -eq 0 ] ||
        fail "key:$k of the stopped node through node $((n + 1)): expected at most one load, by node $((n + 1)): $before -> $after"
    else
      [ "$loads" -eq 0 ] ||
        fail "key:$k of running node $((owner + 1)) was loaded again through node $((n + 1)): $before -> $after"
    fi
  done
done
end="$(counters "${alive[@]}")"
for n in 0 1; do
  local_loads="$(delta "$start" "$end" "$n" local_loads)"
  failed="$(($(delta "$start" "$end" "$n" peer_errors) + $(delta "$start" "$end" "$n" peer_skips)))"
  [ "$local_loads" -ge 1 ] ||
    fail "node $((n + 1)) loaded none of node 3's keys itself: $start -> $end"
  [ "$failed" -ge 1 ] ||
    fail "node $((n + 1))'s stats show no peer error or skip for the stopped node 3: $start -> $end"
  say "  node $((n + 1)): $local_loads of node 3's $node3_keys keys loaded here, $failed peer errors or skips"
done
say "with node 3 stopped, nodes 1 and 2 answer all $KEYS keys"

# ---------------------------------------------------------------------------------------------
# 5. The others stop gracefully too

compose stop -t "$STOP_TIMEOUT" >"$workdir/stop.log" 2>&1 || {
  cat "$workdir/stop.log" >&2
  fail "podman-compose stop failed"
}
for i in 0 1; do
  exit_code="$(podman inspect --format '{{.State.ExitCode}}' "${containers[$i]}")"
  [ "$exit_code" = 0 ] || fail "${containers[$i]} exited with status $exit_code after SIGTERM"
done
say "podman-compose stop: nodes 1 and 2 shut down gracefully, status 0"
say "OK"
