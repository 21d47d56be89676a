#!/usr/bin/env bash
# Fleet benchmark (issue 20): 16 stowage nodes on 127.0.0.2-17 warming one lockfile of
# three images at once, the upstream registry behind the WAN pacing proxy, side by side
# in one run: stowage peers; every node pulling upstream directly; Debian's
# docker-registry as a pull-through cache in front of the 16; the peers with two nodes
# killed mid-warm, and with one node serving flipped bytes. Upstream bytes are counted
# in the upstream registry's access log. benches/fleet_bench.py runs the scenarios and
# writes the table to benches/results/fleet-latest.md.
#
#   bash benches/fleet.sh                 (make bench runs it; ~10 min)
#   BENCH_QUICK=1 bash benches/fleet.sh   (small images: 1 x 32 MiB, 20 x 1 MiB, 10 x 256 KiB)
#
# Knobs: BENCH_DIR, STOWAGE (binary, default target/release/stowage), FAULTPROXY,
# FLEET_NODES (16), FLEET_BIG/FLEET_MANY/FLEET_FACTORED (LAYERSxBYTES), FLEET_TIMEOUT,
# BENCH_FLEET_OUT, FLEET_CPU_BUDGET (cores per node for the second run, 0.125 = 2 cores
# / 16 nodes; "none" skips it). The first run has the 16 nodes share the machine's
# cores; the second, when this runs as root with the cgroup cpu controller, puts each
# node in a cgroup of its own with that budget (one node alone too), a fleet of small
# nodes each with its own CPU, written to BENCH_FLEET_BUDGET_OUT.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
OUT=${BENCH_FLEET_OUT:-$REPO/benches/results/fleet-latest.md}
BUDGET_OUT=${BENCH_FLEET_BUDGET_OUT:-$REPO/benches/results/fleet-budget-latest.md}
BUDGET=${FLEET_CPU_BUDGET:-0.125}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  export FLEET_BIG=${FLEET_BIG:-1x33554432} FLEET_MANY=${FLEET_MANY:-20x1048576}
  export FLEET_FACTORED=${FLEET_FACTORED:-10x262144}
fi
# The WAN profile of benches/run.sh: +30 ms per request, each connection paced to 25 MB/s.
export WAN_DELAY_MS=${WAN_DELAY_MS:-30} WAN_RATE=${WAN_RATE:-25000000}

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nfleet bench: FAILED: %s\n' "$*" >&2; exit 1; }
for tool in docker-registry skopeo curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup)"
done
STOWAGE_SRC=${STOWAGE:-$REPO/target/release/stowage}
if [ -z "${STOWAGE:-}" ] && [ ! -x "$STOWAGE_SRC" ]; then
  log "building stowage (release)"
  cargo build --release -q -p stowage-cli >&2
fi
FAULTPROXY_SRC=${FAULTPROXY:-$REPO/target/release/stowage-faultproxy}
if [ -z "${FAULTPROXY:-}" ] && [ ! -x "$FAULTPROXY_SRC" ]; then
  log "building stowage-faultproxy (release)"
  cargo build --release -q -p stowage-faultproxy >&2
fi
[ -x "$STOWAGE_SRC" ] || die "no stowage binary at $STOWAGE_SRC"
[ -x "$FAULTPROXY_SRC" ] || die "no stowage-faultproxy binary at $FAULTPROXY_SRC"

mkdir -p "$BENCH_DIR/images"
exec 9> "$BENCH_DIR/lock.fleet"
flock -n 9 || die "another fleet bench is running on $BENCH_DIR"
WORK=$BENCH_DIR/fleet
rm -rf "$WORK"
mkdir -p "$WORK/bin" "$(dirname "$OUT")"
# Copies, so a rebuild by someone else during the run cannot swap them mid-benchmark.
cp "$STOWAGE_SRC" "$WORK/bin/stowage"
cp "$FAULTPROXY_SRC" "$WORK/bin/stowage-faultproxy"
trap 'rm -rf "$WORK/stores" "$WORK"/*-data' EXIT
export FLEET_MODE=$([ "${BENCH_QUICK:-0}" = 1 ] && echo "quick (BENCH_QUICK=1)" || echo full)
export FLEET_BINARY=$STOWAGE_SRC
# The first run with no budget, whatever FLEET_CPU_BUDGET says (that is the second's).
env -u FLEET_CPU_BUDGET FLEET_IMAGES="$BENCH_DIR/images" python3 "$REPO/benches/fleet_bench.py" \
  "$WORK" "$WORK/bin/stowage" "$WORK/bin/stowage-faultproxy" "$OUT" 9>&-
log "written to $OUT (logs in $WORK/logs)"
if [ "$BUDGET" = none ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || { [ ! -w /sys/fs/cgroup/cpu ] && ! grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; }; then
  log "skipping the run with a CPU budget per node: it needs root and the cgroup cpu controller"
  exit 0
fi
rm -rf "$WORK/logs" "$WORK/stores" "$WORK/lock-store" "$WORK"/*.lock "$WORK"/*-data
FLEET_CPU_BUDGET=$BUDGET FLEET_IMAGES=$BENCH_DIR/images python3 "$REPO/benches/fleet_bench.py" \
  "$WORK" "$WORK/bin/stowage" "$WORK/bin/stowage-faultproxy" "$BUDGET_OUT" 9>&-
log "written to $BUDGET_OUT (logs in $WORK/logs)"
