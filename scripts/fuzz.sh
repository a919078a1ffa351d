#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for a bounded time, on the stable toolchain.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS   how long libFuzzer runs each target (-max_total_time), 60 by default; the
#             build comes before and is not counted
#   TARGET    peer_path, get_response, get_many, auth_header (all by default: `cargo fuzz list`)
#   FUZZ_RSS_LIMIT_MB=2048   libFuzzer's memory limit per target
#   FUZZ_MAX_LEN=4096        the longest input libFuzzer makes
#   FUZZ_ARGS="..."          more libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-seed=1"
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler (libfuzzer-sys
# builds libFuzzer). Builds with `--sanitizer none`, which needs no nightly: the coverage
# instrumentation cargo-fuzz asks for is made of stable -C flags; only the sanitizers
# (-Zsanitizer) need nightly.
#
# Each target starts from its committed seeds, fuzz/seeds/<target>/, and keeps what it finds
# in fuzz/corpus/<target>/ (not committed), so a second run goes on from the first. A crash
# is written to fuzz/artifacts/<target>/; minimise it with
#   cd fuzz && cargo fuzz tmin --sanitizer none <target> artifacts/<target>/crash-...
# Exits 1 if any target crashed (or failed to build), after running all of them.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# One build for every target (release, with debug assertions and overflow checks), so that
# the time limit below is all fuzzing.
echo "==> cargo fuzz build --sanitizer none"
if ! cargo fuzz build --sanitizer none; then
  echo "the fuzz targets did not build" >&2
  exit 1
fi

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  seeds="seeds/$target"
  mkdir -p "$corpus" "artifacts/$target"
  seed_dirs=()
  [ -d "$seeds" ] && seed_dirs=("$seeds")
  log="artifacts/$target/last-run.log"
  echo "==> $target: ${seconds}s, corpus $corpus ${seed_dirs[*]:++ ${seed_dirs[*]}}"
  # The first corpus directory receives the new inputs; the seeds are only read.
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  cargo fuzz run --sanitizer none "$target" "$corpus" "${seed_dirs[@]}" -- \
    -max_total_time="$seconds" \
    -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
    -max_len="${FUZZ_MAX_LEN:-4096}" \
    -print_final_stats=1 \
    ${FUZZ_ARGS:-} >"$log" 2>&1
  status=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target FAILED (exit $status); the end of $log:" >&2
    tail -n 40 "$log" >&2
    summary+=("$target: FAILED (exit $status), see fuzz/$log")
  else
    echo "   $done_line"
    summary+=("$target: ok, ${execs:-?} runs in ${seconds}s (${rate:-?}/s), peak RSS ${rss:-?} MB, corpus $(find "$corpus" -type f | wc -l) files; ${done_line:-no DONE line}")
  fi
done

echo
echo "==> summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed or failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
