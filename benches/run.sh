#!/usr/bin/env bash
# End-to-end pull benchmark: stowage against skopeo, containerd (ctr content fetch),
# podman, docker and a curl floor, all pulling the same images from one local
# docker-registry, one tool after the other, each from an empty store.
#
#   bash benches/run.sh            (or `make bench`, which builds stowage first)
#
# Environment:
#   BENCH_DIR=/var/tmp/stowage-bench   work dir; generated images and the registry's
#                                      storage are cached here across runs
#   BENCH_RUNS=3                       runs per tool and image (the median is reported)
#   BENCH_QUICK=1                      1 run, only the 100×2 MB image
#   BENCH_IMAGES="many2m one200 four200"   subset of images
#   BENCH_PROFILES="loopback wan"      subset of network profiles
#   BENCH_TOOLS="curl ranged durable stowage skopeo ctr podman docker"   subset of tools
#                                      (diagnostic rows: ranged = curl fetching big blobs
#                                      as the byte ranges stowage asks for; durable = the
#                                      curl floor plus an fsync of every file, loopback only)
#   BENCH_TIMEOUT=900                  seconds before one pull counts as failed
#   STOWAGE=path                       the stowage binary (default target/release/stowage)
#   STOWAGE_FLAGS="..."                extra flags for `stowage pull`
#   BENCH_OUT=benches/results/latest.md   where the report is written (besides stdout)
#
# Profiles: loopback (tools talk to the registry directly) and wan (through
# stowage-faultproxy: +30 ms per request, each connection paced to 25 MB/s).
# Prints one markdown table per profile and writes them to benches/results/latest.md.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
BENCH_QUICK=${BENCH_QUICK:-0}
if [ "$BENCH_QUICK" = 1 ]; then
  RUNS=1
  IMAGES=${BENCH_IMAGES:-many2m}
else
  RUNS=${BENCH_RUNS:-3}
  IMAGES=${BENCH_IMAGES:-many2m one200 four200}
fi
PROFILES=${BENCH_PROFILES:-loopback wan}
TOOLS=${BENCH_TOOLS:-curl ranged durable stowage skopeo ctr podman docker}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}
STOWAGE_FLAGS=${STOWAGE_FLAGS:-}
BENCH_OUT=${BENCH_OUT:-$REPO/benches/results/latest.md}
WAN_DELAY_MS=30
WAN_RATE=25000000
CURL_PARALLEL=8
# stowage's defaults for splitting big blobs into ranges (src/registry/blob.rs), so the
# "ranged" curl row asks for exactly the ranges stowage asks for.
SPLIT_THRESHOLD=$((16 << 20)) RANGES_PER_BLOB=8 RANGE_SIZE=$((8 << 20)) MIN_RANGE=$((4 << 20))

declare -A LAYERS=([many2m]=100 [one200]=1 [four200]=4)
declare -A LAYER_BYTES=([many2m]=2097152 [one200]=209715200 [four200]=209715200)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nbench: FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
apt_updated=0
need_pkg() { # need_pkg PACKAGE...: apt-get install the ones not installed
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  log "installing ${missing[*]}"
  if [ $apt_updated = 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    apt_updated=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}
has_tool() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

need_pkg docker-registry skopeo curl jq time hyperfine python3
has_tool ctr && need_pkg containerd
has_tool podman && need_pkg podman
for img in $IMAGES; do
  [ -n "${LAYERS[$img]:-}" ] || die "unknown image '$img' (known: many2m one200 four200)"
done

# The binaries are copied into the work dir, so a rebuild by someone else during
# the run cannot swap them mid-benchmark.
STOWAGE_SRC=${STOWAGE:-$REPO/target/release/stowage}
if [ -z "${STOWAGE:-}" ] && [ ! -x "$STOWAGE_SRC" ]; then
  log "building stowage (release)"
  cargo build --release -q -p stowage-cli >&2
fi
[ -x "$STOWAGE_SRC" ] || die "no stowage binary at $STOWAGE_SRC"
case " $PROFILES " in *" wan "*)
  log "building stowage-faultproxy (release)"
  cargo build --release -q -p stowage-faultproxy >&2 ;;
esac

mkdir -p "$BENCH_DIR/images" "$BENCH_DIR/registry"
exec 9> "$BENCH_DIR/lock" # daemons started below close fd 9, so an orphan never holds it
flock -n 9 || die "another bench is running on $BENCH_DIR"
RUN=$BENCH_DIR/run       # scratch for this invocation, removed at exit
LOGS=$BENCH_DIR/logs     # kept after a failure, for the post-mortem
. "$REPO/benches/daemons.sh"
reap_orphans "$BENCH_DIR"
podman_wipe
rm -rf "$RUN" "$LOGS"
mkdir -p "$RUN/bin" "$LOGS"
cp "$STOWAGE_SRC" "$RUN/bin/stowage"
STOWAGE_BIN=$RUN/bin/stowage
case " $PROFILES " in *" wan "*)
  cp "$REPO/target/release/stowage-faultproxy" "$RUN/bin/stowage-faultproxy" ;;
esac
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
export CURL_DIR=$RUN/curl
RESULTS=$RUN/results.tsv # profile image tool run seconds rss_kb
: > "$RESULTS"

# ---------------------------------------------------------------- cleanup
registry_pid="" proxy_pid="" containerd_pid=""
DOCKER_REFS=()
cleanup() {
  local status=$?
  set +e
  stop_pid "$proxy_pid"
  stop_pid "$containerd_pid"
  stop_pid "$registry_pid"
  local ref
  for ref in "${DOCKER_REFS[@]}"; do docker rmi -f "$ref" >/dev/null 2>&1; done
  podman_wipe
  rm -rf "$RUN"
  if [ $status != 0 ]; then
    echo "bench: exit $status; logs are in $LOGS" >&2
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- registry and images
REG_PORT=$(free_port)
REGISTRY=127.0.0.1:$REG_PORT
cat > "$RUN/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $BENCH_DIR/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY}
YAML
docker-registry serve "$RUN/registry.yml" > "$LOGS/registry.log" 2>&1 9>&- &
registry_pid=$!
echo $registry_pid >> "$RUN/pids"
for _ in $(seq 100); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$REGISTRY/v2/" >/dev/null || die "docker-registry did not start (see $LOGS/registry.log)"
log "registry on $REGISTRY (storage in $BENCH_DIR/registry)"

MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
for img in $IMAGES; do
  layout=$BENCH_DIR/images/$img
  if [ ! -f "$layout/index.json" ]; then
    log "generating $img: ${LAYERS[$img]} layers of ${LAYER_BYTES[$img]} random bytes"
    python3 "$REPO/benches/make_images.py" "$layout" "${LAYERS[$img]}" "${LAYER_BYTES[$img]}" >/dev/null
  fi
  want=$(jq -r '.manifests[0].digest' "$layout/index.json")
  have=$(curl -fsI -H "Accept: $MANIFEST_TYPE" "http://$REGISTRY/v2/bench/$img/manifests/1" 2>/dev/null |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}' || true)
  if [ "$have" != "$want" ]; then
    log "pushing $img to $REGISTRY/bench/$img:1"
    skopeo copy -q --dest-tls-verify=false "oci:$layout:1" "docker://$REGISTRY/bench/$img:1" >&2
    have=$(curl -fsI -H "Accept: $MANIFEST_TYPE" "http://$REGISTRY/v2/bench/$img/manifests/1" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
    [ "$have" = "$want" ] || die "registry has $have for bench/$img:1, expected $want"
  fi
  curl -fsS -H "Accept: $MANIFEST_TYPE" "http://$REGISTRY/v2/bench/$img/manifests/1" > "$RUN/$img.manifest.json"
done

# ---------------------------------------------------------------- tools
# Each tool has prep_T HOST IMG (untimed: empties its store), cmd_T HOST IMG (sets
# CMD, the command that is timed) and check_T IMG (untimed: proves it pulled
# everything; its stdout is in $LOGS/current.out).
BLOB_TOTAL=0
blob_list() { # digest size lines for config + layers
  jq -r '.config, .layers[] | "\(.digest) \(.size)"' "$RUN/$1.manifest.json"
}

prep_curl() {
  local host=$1 img=$2 digest size
  rm -rf "$RUN/curl"
  mkdir -p "$RUN/curl"
  : > "$RUN/curl.cfg"
  BLOB_TOTAL=0
  while read -r digest size; do
    printf 'url = "http://%s/v2/bench/%s/blobs/%s"\noutput = "%s/%s"\n' \
      "$host" "$img" "$digest" "$RUN/curl" "${digest#sha256:}" >> "$RUN/curl.cfg"
    BLOB_TOTAL=$((BLOB_TOTAL + size))
  done < <(blob_list "$img")
}
cmd_curl() {
  CMD=(curl -sS --fail -Z --parallel-immediate --parallel-max $CURL_PARALLEL -K "$RUN/curl.cfg")
}

# ranged: the same curl process, but blobs >= SPLIT_THRESHOLD are fetched as stowage
# plans them (whole rounds of RANGES_PER_BLOB ranges of about RANGE_SIZE, at least
# MIN_RANGE, each range its own request and file). Only run for images that have such
# blobs.
has_big_blob() { blob_list "$1" | awk -v t=$SPLIT_THRESHOLD '$2 >= t {f = 1} END {exit !f}'; }
prep_ranged() {
  local host=$1 img=$2 digest size piece at next
  rm -rf "$RUN/curl"
  mkdir -p "$RUN/curl"
  : > "$RUN/ranged.cfg"
  BLOB_TOTAL=0
  while read -r digest size; do
    BLOB_TOTAL=$((BLOB_TOTAL + size))
    piece=$size
    if [ "$size" -ge $SPLIT_THRESHOLD ]; then
      local round=$((RANGES_PER_BLOB * RANGE_SIZE)) rounds
      rounds=$(((size + round - 1) / round))
      piece=$(((size + RANGES_PER_BLOB * rounds - 1) / (RANGES_PER_BLOB * rounds)))
      [ $piece -ge $MIN_RANGE ] || piece=$MIN_RANGE
    fi
    at=0
    while [ $at -lt "$size" ]; do
      next=$((at + piece))
      [ $next -le "$size" ] || next=$size
      # options after "next" start afresh, so every transfer names its own
      [ -s "$RUN/ranged.cfg" ] && echo next >> "$RUN/ranged.cfg"
      printf 'url = "http://%s/v2/bench/%s/blobs/%s"\noutput = "%s/%s.%s"\nrange = "%s-%s"\nfail\nsilent\nshow-error\n' \
        "$host" "$img" "$digest" "$RUN/curl" "${digest#sha256:}" $at $at $((next - 1)) >> "$RUN/ranged.cfg"
      at=$next
    done
  done < <(blob_list "$img")
}
cmd_ranged() {
  CMD=(curl -sS --fail -Z --parallel-immediate --parallel-max $CURL_PARALLEL -K "$RUN/ranged.cfg")
}
check_ranged() { check_curl; }

# durable: the curl floor, then an fsync of every file it wrote (`sync FILE...`, 8
# processes at a time, as stowage has 8 blobs in flight), so the bytes are on disk as
# stowage's are when it exits. Loopback only (on the WAN link it adds nothing).
prep_durable() { prep_curl "$@"; }
cmd_durable() {
  cmd_curl
  # shellcheck disable=SC2016
  CMD=(bash -c '"$@" && find "$CURL_DIR" -type f -print0 | xargs -0 -P 8 -n 16 sync' durable "${CMD[@]}")
}
check_durable() { check_curl; }
check_curl() {
  local got
  got=$(find "$RUN/curl" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  [ "$got" = "$BLOB_TOTAL" ] || die "curl fetched $got bytes, expected $BLOB_TOTAL"
  rm -rf "$RUN/curl"
}

prep_stowage() { rm -rf "$RUN/stowage-store"; }
cmd_stowage() {
  # shellcheck disable=SC2206
  CMD=(/usr/bin/time -f %M -o "$RUN/stowage.rss"
    "$STOWAGE_BIN" --store "$RUN/stowage-store" --json pull $STOWAGE_FLAGS "$1/bench/$2:1")
}
check_stowage() {
  local img=$1 got
  got=$(jq -r '"\(.layers) \(.blobs_fetched)"' "$LOGS/current.out" 2>/dev/null || true)
  [ "$got" = "${LAYERS[$img]} $((LAYERS[$img] + 1))" ] ||
    die "stowage reported '$got' (layers, blobs fetched) for $img; see $LOGS/current.out"
  EXTRA_RSS=$(tail -n 1 "$RUN/stowage.rss")
}

prep_skopeo() { rm -rf "$RUN/skopeo-oci"; }
cmd_skopeo() {
  CMD=(skopeo copy -q --src-tls-verify=false "docker://$1/bench/$2:1" "oci:$RUN/skopeo-oci:1")
}
check_skopeo() {
  [ "$(find "$RUN/skopeo-oci/blobs" -type f | wc -l)" -ge $((LAYERS[$1] + 2)) ] ||
    die "skopeo's layout lacks blobs"
  rm -rf "$RUN/skopeo-oci"
}

# containerd: a private daemon, restarted on an empty root before every run (its
# content store is shared across namespaces, so only a fresh root is really empty).
CTR_DIR=$RUN/containerd
CTR_SOCK=$CTR_DIR/containerd.sock
start_containerd() {
  mkdir -p "$CTR_DIR"
  cat > "$CTR_DIR/config.toml" <<TOML
version = 2
root = "$CTR_DIR/root"
state = "$CTR_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
TOML
  containerd --config "$CTR_DIR/config.toml" >> "$LOGS/containerd.log" 2>&1 9>&- &
  containerd_pid=$!
  echo $containerd_pid >> "$RUN/pids"
  local i
  for i in $(seq 100); do
    ctr -a "$CTR_SOCK" version >/dev/null 2>&1 && return 0
    kill -0 "$containerd_pid" 2>/dev/null || break
    sleep 0.1
  done
  die "containerd did not start (see $LOGS/containerd.log)"
}
prep_ctr() {
  stop_pid "$containerd_pid"
  containerd_pid=""
  rm -rf "$CTR_DIR"
  start_containerd
}
cmd_ctr() {
  CMD=(ctr -a "$CTR_SOCK" -n bench content fetch --plain-http --platform linux/amd64 "$1/bench/$2:1")
}
check_ctr() {
  local n
  n=$(ctr -a "$CTR_SOCK" -n bench content ls -q | wc -l)
  [ "$n" -ge $((LAYERS[$1] + 2)) ] || die "containerd holds $n blobs, expected $((LAYERS[$1] + 2))"
}

prep_podman() { podman_wipe; mkdir -p "$RUN/podman"; }
cmd_podman() { CMD=("${PODMAN[@]}" pull -q --tls-verify=false "$1/bench/$2:1"); }
check_podman() {
  "${PODMAN[@]}" image exists "$REF" || die "podman does not list $REF"
  podman_wipe
}

DOCKER_OK=1
DOCKER_NOTE=""
if has_tool docker && ! docker info >/dev/null 2>&1; then
  DOCKER_OK=0
  DOCKER_NOTE="skipped: \`docker info\` failed (no reachable Docker engine)"
  log "docker: $DOCKER_NOTE"
fi
prep_docker() { docker rmi -f "$REF" >/dev/null 2>&1 || true; DOCKER_REFS+=("$REF"); }
cmd_docker() { CMD=(docker pull -q "$REF"); }
check_docker() {
  docker image inspect "$REF" >/dev/null || die "docker does not list $REF"
  docker rmi -f "$REF" >/dev/null
}

# measure PROFILE HOST IMG TOOL RUN: prepare, time, check; one row in $RESULTS
measure() {
  local profile=$1 host=$2 img=$3 tool=$4 run=$5 t0 t1 rc=0 secs
  REF=$host/bench/$img:1
  EXTRA_RSS=""
  "prep_$tool" "$host" "$img"
  "cmd_$tool" "$host" "$img"
  # No tool pays for the writeback of what an earlier one (or the image set up) left
  # dirty in the page cache.
  sync
  t0=$EPOCHREALTIME
  timeout "$BENCH_TIMEOUT" "${CMD[@]}" > "$LOGS/current.out" 2> "$LOGS/current.err" 9>&- || rc=$?
  t1=$EPOCHREALTIME
  { echo "\$ ${CMD[*]}"; cat "$LOGS/current.out" "$LOGS/current.err"; } > "$LOGS/$profile-$img-$tool-$run.log"
  if [ $rc != 0 ]; then
    tail -n 30 "$LOGS/$profile-$img-$tool-$run.log" >&2
    die "$tool failed (exit $rc) pulling $REF in profile $profile, run $run"
  fi
  "check_$tool" "$img"
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$img" "$tool" "$run" "$secs" "$EXTRA_RSS" >> "$RESULTS"
  log "$(printf '%-8s %-8s %-8s run %d: %7.2f s%s' "$profile" "$img" "$tool" "$run" "$secs" \
    "${EXTRA_RSS:+, peak RSS $((EXTRA_RSS / 1024)) MiB}")"
}

# warm PROFILE HOST IMG: stowage pulling an image its store already holds
warm() {
  local profile=$1 host=$2 img=$3
  [ -d "$RUN/stowage-store" ] || return 0
  # shellcheck disable=SC2086
  hyperfine -N --warmup 3 --export-json "$RUN/warm.json" \
    "$STOWAGE_BIN --store $RUN/stowage-store --json pull $STOWAGE_FLAGS $host/bench/$img:1" \
    > "$LOGS/$profile-$img-warm.log" 2>&1 ||
    { tail -n 20 "$LOGS/$profile-$img-warm.log" >&2; die "warm stowage pull failed"; }
  local ms
  ms=$(jq -r '.results[0].mean * 1000 | . * 10 | round / 10' "$RUN/warm.json")
  printf '%s\t%s\twarm\t0\t%s\t\n' "$profile" "$img" "$ms" >> "$RESULTS"
  log "$(printf '%-8s %-8s warm pull (hyperfine mean): %s ms' "$profile" "$img" "$ms")"
  [ "$profile" = wan ] || return 0
  "$STOWAGE_BIN" pull --help | grep -q -- '--ttl' || return 0 # an older build
  # Over the link every warm pull pays a round trip for the manifest; --ttl lets a
  # fresh enough tag skip it. The first pull records the tag's resolution.
  # shellcheck disable=SC2086
  hyperfine -N --warmup 3 --export-json "$RUN/warm.json" \
    "$STOWAGE_BIN --store $RUN/stowage-store --json pull --ttl 3600 $STOWAGE_FLAGS $host/bench/$img:1" \
    > "$LOGS/$profile-$img-warm-ttl.log" 2>&1 ||
    { tail -n 20 "$LOGS/$profile-$img-warm-ttl.log" >&2; die "warm stowage pull --ttl failed"; }
  ms=$(jq -r '.results[0].mean * 1000 | . * 10 | round / 10' "$RUN/warm.json")
  printf '%s\t%s\twarmttl\t0\t%s\t\n' "$profile" "$img" "$ms" >> "$RESULTS"
  log "$(printf '%-8s %-8s warm pull --ttl 3600 (hyperfine mean): %s ms' "$profile" "$img" "$ms")"
}

# ---------------------------------------------------------------- the runs
for profile in $PROFILES; do
  case $profile in
    loopback) host=$REGISTRY ;;
    wan) start_proxy; host=$PROXY
         log "wan: stowage-faultproxy on $PROXY (+${WAN_DELAY_MS} ms per request, $WAN_RATE B/s per connection)" ;;
    *) die "unknown profile '$profile' (known: loopback wan)" ;;
  esac
  for img in $IMAGES; do
    for run in $(seq "$RUNS"); do
      for tool in $TOOLS; do
        [ "$tool" = docker ] && [ $DOCKER_OK = 0 ] && continue
        declare -F "cmd_$tool" >/dev/null || die "unknown tool '$tool'"
        [ "$tool" = ranged ] && ! has_big_blob "$img" && continue
        [ "$tool" = durable ] && [ "$profile" != loopback ] && continue
        measure "$profile" "$host" "$img" "$tool" "$run"
      done
    done
    has_tool stowage && warm "$profile" "$host" "$img"
  done
  if [ "$profile" = wan ]; then stop_pid "$proxy_pid"; proxy_pid=""; fi
done

# ---------------------------------------------------------------- the report
python3 "$REPO/benches/report.py" \
  --results "$RESULTS" --manifests "$RUN" --runs "$RUNS" --quick "$BENCH_QUICK" \
  --images "$IMAGES" --profiles "$PROFILES" --tools "$TOOLS" \
  --split-threshold $SPLIT_THRESHOLD --delay-ms $WAN_DELAY_MS --rate $WAN_RATE --curl-parallel $CURL_PARALLEL \
  --docker-note "$DOCKER_NOTE" --stowage "$STOWAGE_BIN" --stowage-flags "$STOWAGE_FLAGS" \
  --repo "$REPO" --load-start "$LOAD_START" > "$RUN/latest.md"
mkdir -p "$(dirname "$BENCH_OUT")"
cp "$RUN/latest.md" "$BENCH_OUT"
cat "$RUN/latest.md"
log "written to $BENCH_OUT"
