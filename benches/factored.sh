#!/usr/bin/env bash
# Factored-image benchmark (issue 9): time and bytes to get 10 images that share 80%
# of their conda packages onto an empty node, as factored images (base + one layer per
# shared package + one of the image's own packages + conda-meta, built together by
# `stowage factor-set`) against the same files as ordinary
# single-layer images pulled with `podman pull`.
#
#   bash benches/factored.sh        (make bench runs it after run.sh and mirror.sh)
#
# Environment:
#   BENCH_DIR=/var/tmp/stowage-bench   work dir (packages and the registry's storage
#                                      are cached under factored/ between runs)
#   BENCH_RUNS=3                       runs per row (the median is reported)
#   BENCH_QUICK=1                      1 run, loopback only
#   BENCH_PROFILES="loopback wan"      wan: through stowage-faultproxy, +30 ms per
#                                      request, each connection paced to 25 MB/s
#   BENCH_TIMEOUT=600                  seconds before one row's run counts as failed
#   STOWAGE=path                       the stowage binary (default target/release/stowage)
#   BENCH_FACTORED_OUT=benches/results/factored-latest.md
#
# Bytes are counted by the registry: its access log records every response's body
# bytes, and in the wan profile the proxy forwards each client request to it as asked.
# (stowage-faultproxy counts too, but only the Rust tests can read its log.)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
RUNS=${BENCH_RUNS:-3}
PROFILES=${BENCH_PROFILES:-loopback wan}
if [ "${BENCH_QUICK:-0}" = 1 ]; then RUNS=1; PROFILES=loopback; fi
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
OUT=${BENCH_FACTORED_OUT:-$REPO/benches/results/factored-latest.md}
WAN_DELAY_MS=30 WAN_RATE=25000000 # the same link as run.sh's wan profile
# The image set: 10 images of 50 packages each, 40 shared by all and 10 of their own
# (140 distinct packages), payloads of ~1 MiB random bytes each.
IMAGES=10 SHARED=40 UNIQUE=10 PKG_BYTES=1048576
# Rows, in table order: image set (factored | single) and tool. podman pulling the
# factored images is context, on loopback only: it costs a minute a run, and that
# minute is layer extraction, which the link does not change.
# `load` hands the images from a store that holds them (synced beforehand, untimed) to
# the same fresh podman, with `stowage load`: loopback only, it fetches nothing.
ROWS="factored:stowage-sync factored:stowage-pull factored:podman factored:load single:podman single:load single:stowage-sync"
WAN_ROWS="factored:stowage-sync factored:stowage-pull single:podman single:stowage-sync"

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nfactored bench: FAILED: %s\n' "$*" >&2; exit 1; }

for tool in docker-registry skopeo umoci podman jq curl python3 flock; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup)"
done
[ -x /bin/busybox ] || die "/bin/busybox is missing (make setup installs busybox-static)"
STOWAGE_SRC=${STOWAGE:-$REPO/target/release/stowage}
PROXY_SRC=$REPO/target/release/stowage-faultproxy
[ -x "$STOWAGE_SRC" ] || die "no stowage binary at $STOWAGE_SRC (make build)"
case " $PROFILES " in *" wan "*)
  if [ ! -x "$PROXY_SRC" ]; then
    log "building stowage-faultproxy (release)"
    cargo build --release -q -p stowage-faultproxy >&2
  fi ;;
esac

WORK=$BENCH_DIR/factored
RUN=$WORK/run   # scratch for this invocation, removed at exit
LOGS=$WORK/logs # kept after a failure, for the post-mortem
mkdir -p "$WORK"
# The same lock as run.sh: two benchmarks at once would time each other.
exec 9> "$BENCH_DIR/lock"
flock -n 9 || die "another bench is running on $BENCH_DIR"
. "$REPO/benches/daemons.sh"
reap_orphans "$WORK"
podman_wipe
rm -rf "$RUN" "$LOGS"
mkdir -p "$RUN/bin" "$LOGS"
# Copies, so a rebuild by someone else cannot swap the binaries mid-benchmark.
cp "$STOWAGE_SRC" "$RUN/bin/stowage"
STOWAGE_BIN=$RUN/bin/stowage
[ -x "$PROXY_SRC" ] && cp "$PROXY_SRC" "$RUN/bin/stowage-faultproxy"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

registry_pid="" proxy_pid=""
cleanup() {
  local status=$?
  set +e
  stop_pid "$proxy_pid"
  stop_pid "$registry_pid"
  podman_wipe
  rm -rf "$RUN"
  [ $status = 0 ] || echo "factored bench: exit $status; logs are in $LOGS" >&2
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- packages (cached)
# Named by the generator's hash too: a generator that changed makes other packages.
PKGS=$WORK/pkgs-${IMAGES}x${SHARED}+${UNIQUE}x$PKG_BYTES-$(sha256sum "$REPO/benches/make_conda.py" | cut -c1-12)
if [ ! -f "$PKGS/images.tsv" ]; then
  log "generating $((SHARED + IMAGES * UNIQUE)) conda packages (.tar.bz2, ~$((PKG_BYTES >> 10)) KiB each)"
  python3 "$REPO/benches/make_conda.py" packages "$PKGS" $IMAGES $SHARED $UNIQUE $PKG_BYTES
fi
mapfile -t IMAGE_NAMES < <(cut -f1 "$PKGS/images.tsv")

# ---------------------------------------------------------------- registry
# Its storage is kept while the stowage binary and the generator are unchanged (layers
# are deterministic, so a rebuild would push the same bytes); else built afresh.
REG_DATA=$WORK/registry
KEY=$(cat "$STOWAGE_BIN" "$REPO/benches/make_conda.py" | sha256sum | cut -c1-16)-$(basename "$PKGS")
[ "$(cat "$REG_DATA.key" 2>/dev/null)" = "$KEY" ] || { rm -rf "$REG_DATA" "$REG_DATA.key"; }
REGISTRY=127.0.0.1:$(free_port)
cat > "$RUN/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $REG_DATA}}
http: {addr: $REGISTRY}
YAML
# stdout is the access log (combined format: "GET path" status body-bytes), our counter.
docker-registry serve "$RUN/registry.yml" > "$LOGS/access.log" 2> "$LOGS/registry.err" 9>&- &
registry_pid=$!
echo $registry_pid >> "$RUN/pids"
for _ in $(seq 100); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$REGISTRY/v2/" >/dev/null || die "docker-registry did not start (see $LOGS/registry.err)"
log "registry on $REGISTRY (storage in $REG_DATA)"

# ---------------------------------------------------------------- images (untimed)
build_images() {
  local build=$RUN/build st=(--store "$RUN/build") img i pid pids
  "$STOWAGE_BIN" "${st[@]}" -q import "$RUN/base" >/dev/null
  # One set file for the 10, as a tool that builds several environments would write
  # it: each package shared by two or more images keeps its own layer (in install
  # order, one chain from the bottom), and each image's own packages share one layer.
  python3 - "$PKGS/images.tsv" > "$RUN/set.toml" <<'PY'
import json, sys
print('base = "base"')
for line in open(sys.argv[1]):
    name, *pkgs = line.rstrip("\n").split("\t")
    print(f"[[image]]\nname = {json.dumps(name)}\npackages = {json.dumps(pkgs)}")
PY
  "$STOWAGE_BIN" "${st[@]}" --json factor-set "$RUN/set.toml" > "$LOGS/factor-set.json" ||
    die "stowage factor-set failed (see $LOGS/factor-set.json)"
  for img in "${IMAGE_NAMES[@]}"; do
    "$STOWAGE_BIN" "${st[@]}" -q copy "$img" "$REGISTRY/factored/$img:1" >&2
  done
  # The single-layer twin holds the very files of the factored image: its rootfs as
  # umoci unpacks it (layers applied in order, as a runtime would), re-tarred as one
  # gzip layer. umoci 0.4.7 cannot read zstd, so it unpacks a gzip copy made by
  # skopeo; equal diff_ids prove that copy holds the same layer tars. (podman
  # create + export would add the files a runtime mounts, /etc/hosts and such.)
  twin_one() {
    local img=$1 tmp=$RUN/twin-$1
    mkdir -p "$tmp"
    skopeo copy -q --dest-compress --dest-compress-format gzip "oci:$build:$img" "oci:$tmp/gz:$img"
    skopeo inspect --config --raw "oci:$build:$img" > "$tmp/config.json"
    [ "$(jq -c .rootfs "$tmp/config.json")" = "$(skopeo inspect --config --raw "oci:$tmp/gz:$img" | jq -c .rootfs)" ] ||
      die "the gzip copy of $img has other diff_ids"
    umoci unpack --image "$tmp/gz:$img" "$tmp/bundle" >/dev/null
    python3 "$REPO/benches/make_conda.py" flat "$tmp/bundle/rootfs" "$tmp/config.json" "$tmp/flat"
    skopeo copy -q --dest-tls-verify=false "oci:$tmp/flat:1" "docker://$REGISTRY/single/$img:1"
    rm -rf "$tmp"
  }
  for ((i = 0; i < ${#IMAGE_NAMES[@]}; i += 2)); do # two at a time (2 cores)
    pids=()
    for img in "${IMAGE_NAMES[@]:$i:2}"; do twin_one "$img" > "$LOGS/twin-$img.log" 2>&1 & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid" || die "building a single-layer twin failed (see $LOGS/twin-*.log)"; done
  done
  rm -rf "$build"
}
if [ ! -f "$REG_DATA.key" ]; then
  log "building ${#IMAGE_NAMES[@]} factored images and their single-layer twins, pushing to $REGISTRY"
  python3 "$REPO/benches/make_conda.py" base "$RUN/base"
  t0=$SECONDS
  build_images
  echo "$KEY" > "$REG_DATA.key"
  log "built and pushed in $((SECONDS - t0)) s"
fi

# refs SET HOST: the 10 image references of one set
refs() { local img; for img in "${IMAGE_NAMES[@]}"; do echo "$2/$1/$img:1"; done; }
# The manifests say what each set needs: the sum of its distinct blobs (and manifests).
ACCEPT=application/vnd.oci.image.manifest.v1+json
for set in factored single; do
  for img in "${IMAGE_NAMES[@]}"; do
    curl -fsS -H "Accept: $ACCEPT" "http://$REGISTRY/v2/$set/$img/manifests/1" > "$RUN/$set-$img.manifest.json" ||
      die "the registry lacks $set/$img:1"
  done
done

# ---------------------------------------------------------------- what is timed
# Each row has prep_KIND (untimed: an empty node), cmds_TOOL SET HOST (prints the shell
# commands that are timed, run by one `bash -e`) and check_KIND (untimed: proves the
# node holds all 10 images). KIND is the tool up to its first "-".
q() { printf '%q ' "$@"; echo; } # one command line, quoted
# stowage: a cluster operator pins the image set once (`stowage lock`, committed with
# the cluster config) and every node runs `stowage sync` of that lockfile: one process,
# each blob fetched once across all images. The lockfiles are made before the timing.
# The pull row is what 10 separate `stowage pull` commands cost.
STORE=$RUN/store
prep_stowage() { rm -rf "$STORE"; }
cmds_stowage_sync() { q "$STOWAGE_BIN" --store "$STORE" --json sync "$RUN/$1.lock"; }
cmds_stowage_pull() {
  local ref
  for ref in $(refs "$1" "$2"); do q "$STOWAGE_BIN" --store "$STORE" --json pull "$ref"; done
}
check_stowage() {
  local n
  n=$("$STOWAGE_BIN" --store "$STORE" ls | wc -l)
  [ "$n" = "${#IMAGE_NAMES[@]}" ] || die "the store lists $n images, expected ${#IMAGE_NAMES[@]}"
}
# podman: its own --root/--runroot, emptied before each run; one pull per image, as a
# node pulls them (layers it already holds are not fetched again).
prep_podman() { podman_wipe; mkdir -p "$RUN/podman"; }
cmds_podman() {
  local ref
  for ref in $(refs "$1" "$2"); do q "${PODMAN[@]}" pull -q --tls-verify=false "$ref"; done
}
# load: `stowage load` of each image from a store holding all 20 into a fresh podman
# (the same root and options as the podman rows).
LOADSTORE=$RUN/loadstore
prep_load() { prep_podman; }
cmds_load() {
  local ref
  for ref in $(refs "$1" "$2"); do
    q env "STOWAGE_PODMAN_ARGS=${PODMAN[*]:1}" "$STOWAGE_BIN" \
      --store "$LOADSTORE" -q load "$ref" --into podman
  done
}
check_load() { check_podman; }
check_podman() {
  local n
  n=$("${PODMAN[@]}" images -q --no-trunc | sort -u | wc -l)
  [ "$n" = "${#IMAGE_NAMES[@]}" ] || die "podman holds $n images, expected ${#IMAGE_NAMES[@]}"
  podman_wipe
}

# The registry logs a response after its body is out: wait until the log stops growing.
settle_log() {
  local a b
  b=$(stat -c %s "$LOGS/access.log")
  while :; do sleep 0.2; a=$b; b=$(stat -c %s "$LOGS/access.log"); [ "$a" = "$b" ] && break; done
}
served() { # served OFFSET: "GET-body-bytes requests" logged after byte OFFSET
  tail -c +$(($1 + 1)) "$LOGS/access.log" |
    awk '$6 ~ /^"(GET|HEAD)$/ {r++} $6 == "\"GET" && $10 ~ /^[0-9]+$/ {b += $10} END {printf "%d %d\n", b, r}'
}

RESULTS=$RUN/results.tsv # profile set tool run seconds bytes requests
: > "$RESULTS"
measure() { # measure PROFILE HOST SET TOOL RUN
  local profile=$1 host=$2 set=$3 tool=$4 run=$5 t0 t1 rc=0 at bytes requests
  local name=$profile-$set-$tool-$run
  "prep_${tool%%-*}"
  "cmds_${tool//-/_}" "$set" "$host" > "$LOGS/$name.sh"
  settle_log
  # As in run.sh: no row pays for the writeback of what an earlier one left dirty.
  sync
  at=$(stat -c %s "$LOGS/access.log")
  t0=$EPOCHREALTIME
  timeout "$BENCH_TIMEOUT" bash -e "$LOGS/$name.sh" > "$LOGS/$name.out" 2> "$LOGS/$name.err" 9>&- || rc=$?
  t1=$EPOCHREALTIME
  if [ $rc != 0 ]; then
    tail -n 30 "$LOGS/$name.err" >&2
    die "$tool failed (exit $rc) on the $set images, profile $profile, run $run (see $LOGS/$name.*)"
  fi
  "check_${tool%%-*}"
  settle_log
  read -r bytes requests < <(served "$at")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$set" "$tool" "$run" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" "$bytes" "$requests" >> "$RESULTS"
  log "$(tail -n 1 "$RESULTS" | awk -F'\t' '{printf "%-8s %-8s %-13s run %s: %7.2f s, %6.1f MB, %d requests", $1, $2, $3, $4, $5, $6 / 1e6, $7}')"
}

# ---------------------------------------------------------------- the runs
for profile in $PROFILES; do
  case $profile in
    loopback) host=$REGISTRY ;;
    wan) start_proxy; host=$PROXY
         log "wan: stowage-faultproxy on $PROXY (+${WAN_DELAY_MS} ms per request, $WAN_RATE B/s per connection)" ;;
    *) die "unknown profile '$profile' (known: loopback wan)" ;;
  esac
  # The lockfiles name the host the node talks to, so one per profile (untimed; made
  # afresh, as `stowage lock` keeps the images a lockfile already pins).
  for set in factored single; do
    rm -f "$RUN/$set.lock"
    # shellcheck disable=SC2046
    "$STOWAGE_BIN" --store "$RUN/lockstore" -q lock $(refs $set "$host") -o "$RUN/$set.lock" >&2
    [ "$profile" = loopback ] && "$STOWAGE_BIN" --store "$LOADSTORE" -q sync "$RUN/$set.lock" >&2
  done
  for run in $(seq "$RUNS"); do
    rows=$ROWS
    [ "$profile" = wan ] && rows=$WAN_ROWS
    for row in $rows; do measure "$profile" "$host" "${row%%:*}" "${row#*:}" "$run"; done
  done
  if [ "$profile" = wan ]; then stop_pid "$proxy_pid"; proxy_pid=""; fi
done

# ---------------------------------------------------------------- the report
python3 "$REPO/benches/factored_report.py" --results "$RESULTS" --manifests "$RUN" \
  --images "${IMAGE_NAMES[*]}" --shared $SHARED --unique $UNIQUE --pkg-bytes $PKG_BYTES \
  --runs "$RUNS" --profiles "$PROFILES" --delay-ms $WAN_DELAY_MS --rate $WAN_RATE \
  --stowage "$STOWAGE_BIN" --repo "$REPO" --load-start "$LOAD_START" > "$RUN/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$RUN/report.md" "$OUT"
cat "$RUN/report.md"
log "written to $OUT"
