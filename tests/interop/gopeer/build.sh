#!/usr/bin/env bash
# Build the Go groupcache test peer (tests/interop/gopeer) in GOPATH mode against
# the Debian-packaged golang/groupcache sources.
#
#   tests/interop/gopeer/build.sh [OUTPUT]     (default OUTPUT: target/gopeer/gopeer)
#
# Needs: apt-get install -y golang-go golang-github-golang-groupcache-dev golang-goprotobuf-dev
# Environment: GOCODE (default /usr/share/gocode) is where the packaged sources live.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
gocode="${GOCODE:-/usr/share/gocode}"

out="${1:-$root/target/gopeer/gopeer}"
case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac

die() { echo "gopeer/build.sh: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 ||
  die "'go' not found; install it with: apt-get install -y golang-go golang-github-golang-groupcache-dev golang-goprotobuf-dev"
[ -f "$gocode/src/github.com/golang/groupcache/groupcache.go" ] ||
  die "golang/groupcache sources not found under $gocode/src; install: apt-get install -y golang-github-golang-groupcache-dev golang-goprotobuf-dev"
[ -d "$gocode/src/github.com/golang/protobuf/proto" ] ||
  die "golang/protobuf sources not found under $gocode/src; install: apt-get install -y golang-goprotobuf-dev"

mkdir -p "$(dirname "$out")"

# GOPATH mode: the packaged sources are read-only, so put a writable scratch dir first.
scratch="$root/target/gopeer/gopath"
mkdir -p "$scratch"
export GO111MODULE=off
export GOFLAGS=
export GOPATH="$scratch:$gocode"

# Use the usual build cache if it is writable, else one under target/.
cache="$(go env GOCACHE 2>/dev/null || true)"
if [ -z "$cache" ] || [ "$cache" = "off" ] || ! { mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; }; then
  cache="$root/target/gopeer/gocache"
  mkdir -p "$cache"
fi
export GOCACHE="$cache"

cd "$root"
go build -o "$out" ./tests/interop/gopeer
echo "built $out ($(go version | awk '{print $3}'))"
