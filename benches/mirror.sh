#!/usr/bin/env bash
# Mirror benchmark: `stowage serve` against the reference docker-registry serving the
# same 4 x 200 MB image to skopeo, and `stowage export`/`import` against skopeo copying
# to and from oci-archive. Same machine, same run, one after the other; median of
# BENCH_RUNS (default 3). Writes benches/results/mirror.md.
#
#   bash benches/mirror.sh      (make bench runs it after benches/run.sh)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
RUNS=${BENCH_RUNS:-3}
[ "${BENCH_QUICK:-0}" = 1 ] && RUNS=1
STOWAGE=${STOWAGE:-$REPO/target/release/stowage}
IMG=four200
OUT=${BENCH_MIRROR_OUT:-$REPO/benches/results/mirror.md}

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nmirror bench: FAILED: %s\n' "$*" >&2; exit 1; }
[ -x "$STOWAGE" ] || die "no stowage binary at $STOWAGE (make build)"
for tool in docker-registry skopeo jq curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup, or run benches/run.sh once)"
done

WORK=$BENCH_DIR/mirror
rm -rf "$WORK"
mkdir -p "$WORK" "$BENCH_DIR/images"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_v2() { for _ in $(seq 100); do curl -fs "http://$1/v2/" >/dev/null && return 0; sleep 0.1; done; die "nothing answers on $1"; }

layout=$BENCH_DIR/images/$IMG
if [ ! -f "$layout/index.json" ]; then
  log "generating $IMG: 4 layers of 200 MiB random bytes"
  python3 "$REPO/benches/make_images.py" "$layout" 4 209715200 >/dev/null
fi

REGISTRY=127.0.0.1:$(free_port)
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REGISTRY}
YAML
docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
pids+=($!)
wait_v2 "$REGISTRY"
log "pushing $IMG to $REGISTRY"
skopeo copy -q --dest-tls-verify=false "oci:$layout:1" "docker://$REGISTRY/bench/$IMG:1"
STORE=$WORK/store
"$STOWAGE" --store "$STORE" -q pull "$REGISTRY/bench/$IMG:1"
REF=$REGISTRY/bench/$IMG:1
BYTES=$("$STOWAGE" --store "$STORE" --json du | jq .blob_bytes)

SERVE=127.0.0.1:$(free_port)
"$STOWAGE" --store "$STORE" serve --addr "$SERVE" > "$WORK/serve.log" 2>&1 &
pids+=($!)
wait_v2 "$SERVE"

# time_median NAME PREP CMD...: runs PREP then times CMD, RUNS times; prints the median.
time_median() {
  local prep=$1; shift
  local times=()
  for _ in $(seq "$RUNS"); do
    eval "$prep"
    local t0 t1
    sync # as in run.sh: no run pays for an earlier one's writeback
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>>"$WORK/errors.log" || die "failed: $* (see $WORK/errors.log)"
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'
}
command -v bc >/dev/null || die "bc is missing (apt-get install -y bc)"
mbps() { echo "$BYTES / $1 / 1000000" | bc -l | xargs printf '%.0f'; }

log "skopeo pulling from docker-registry and from stowage serve"
t_reg=$(time_median 'rm -rf "$WORK/oci-a"' skopeo copy -q --src-tls-verify=false "docker://$REGISTRY/bench/$IMG:1" "oci:$WORK/oci-a:x")
t_srv=$(time_median 'rm -rf "$WORK/oci-b"' skopeo copy -q --src-tls-verify=false "docker://$SERVE/bench/$IMG:1" "oci:$WORK/oci-b:x")
log "export and import, stowage and skopeo"
t_exp=$(time_median 'rm -f "$WORK/s.tar"' "$STOWAGE" --store "$STORE" -q export "$REF" -o "$WORK/s.tar")
t_sexp=$(time_median 'rm -f "$WORK/k.tar"' skopeo copy -q "oci:$STORE:$REF" "oci-archive:$WORK/k.tar:$REF")
t_imp=$(time_median 'rm -rf "$WORK/in-s"' "$STOWAGE" --store "$WORK/in-s" -q import "$WORK/s.tar")
t_simp=$(time_median 'rm -rf "$WORK/in-k"' skopeo copy -q "oci-archive:$WORK/k.tar:$REF" "oci:$WORK/in-k:x")

{
  echo "# stowage mirror benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); median of $RUNS; image: 4 x 200 MiB ($BYTES bytes)"
  echo
  echo "| what | stowage | reference | ratio | goal |"
  echo "| --- | ---: | ---: | ---: | --- |"
  echo "| skopeo pulls from: stowage serve vs docker-registry | ${t_srv} s ($(mbps "$t_srv") MB/s) | ${t_reg} s ($(mbps "$t_reg") MB/s) | $(echo "$t_srv / $t_reg" | bc -l | xargs printf '%.2f')× | ≤ 1.00× (at least as fast) |"
  echo "| export to oci-archive: stowage export vs skopeo copy | ${t_exp} s ($(mbps "$t_exp") MB/s) | ${t_sexp} s ($(mbps "$t_sexp") MB/s) | $(echo "$t_exp / $t_sexp" | bc -l | xargs printf '%.2f')× | |"
  echo "| import from oci-archive: stowage import vs skopeo copy | ${t_imp} s ($(mbps "$t_imp") MB/s) | ${t_simp} s ($(mbps "$t_simp") MB/s) | $(echo "$t_imp / $t_simp" | bc -l | xargs printf '%.2f')× | |"
  echo
  echo "stowage import verifies every blob's digest before it enters the store and fsyncs it; skopeo's oci: destination does not fsync."
} | tee "$OUT"
