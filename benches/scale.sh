#!/usr/bin/env bash
# Scale benchmark (issue 16): one store, N images, N = 100, 1000, 10000. Is every
# command's cost linear in the number of images?
#
#   bash benches/scale.sh                 (make bench runs it last)
#   SCALE_NS="100 1000" SCALE_RUNS=1 bash benches/scale.sh
#
# Environment:
#   SCALE_NS="100 1000 10000"   the store sizes (the ratio column compares the largest
#                               with the smallest)
#   SCALE_RUNS=3                runs per N, each from an empty store (median reported)
#   SCALE_GETS=1000             manifest GETs per server in the serve comparison
#   SCALE_DISTINCT=0            1: every repository holds its own image (own config and
#                               manifest, the one layer shared; tag :d) instead of the
#                               same manifest, so a store of N images holds N + 1 blobs
#   SCALE_TIMEOUT=900           seconds before one command counts as failed; a failed
#                               command ends that N (and skips the larger ones)
#   BENCH_DIR=/var/tmp/stowage-bench   the registry's storage is kept in
#                               $BENCH_DIR/scale/registry between runs (delete it to
#                               rebuild the fixture); $BENCH_DIR/scale/run is
#                               scratch, removed at exit
#   STOWAGE=path                the binary (default target/release/stowage)
#   BENCH_SCALE_OUT=benches/results/scale-latest.md   the report (besides stdout)
#
# Fixture, built as a test should (benches/scale_fixture.py): one tiny image (a
# one-file layer) pushed once to Debian's docker-registry on loopback, then its two
# blobs mounted and its manifest PUT under scale/rNNNNN:1 for every repository, over
# one keep-alive connection (3 requests a repository, no N pushes).
#
# For each N and run, in an empty store: `stowage lock` of the N references (one
# invocation, the references as arguments), then cold `sync`, warm `sync`, warm
# `sync --ttl 3600`, `ls`, `du`, `gc --dry-run`, `verify`; each under /usr/bin/time
# for peak RSS, right after a `sync` and a short pause (as the other benches). The
# registry's access log gives the requests each command made. At the largest N,
# `stowage serve` on that store and the docker-registry holding the same images answer
# SCALE_GETS manifest GETs by tag of random repositories, from one keep-alive client
# each, interleaved request by request: p50 and p99 side by side.
#
# It reports; it does not gate: PASS/FAIL per goal, exit 0 unless the script broke.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

NS=${SCALE_NS:-100 1000 10000}
RUNS=${SCALE_RUNS:-3}
GETS=${SCALE_GETS:-1000}
DISTINCT=${SCALE_DISTINCT:-0}
if [ "$DISTINCT" = 1 ]; then TAG=d FIXTURE_MODE=(distinct); else TAG=1 FIXTURE_MODE=(); fi
TIMEOUT=${SCALE_TIMEOUT:-900}
BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
STOWAGE=${STOWAGE:-$REPO/target/release/stowage}
OUT=${BENCH_SCALE_OUT:-$REPO/benches/results/scale-latest.md}
FIXTURE=$REPO/benches/scale_fixture.py
CMDS=(lock cold warm ttl ls du gc verify)
declare -A LABEL=([lock]='`lock`' [cold]='cold `sync`' [warm]='warm `sync`'
  [ttl]='warm `sync --ttl 3600`' [ls]='`ls`' [du]='`du`' [gc]='`gc --dry-run`' [verify]='`verify`')
# The commands issue 16 wants linear (per-image time at the largest N within 1.3x of
# that at the smallest).
LINEAR=(lock cold warm ls gc verify)

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nscale bench: FAILED: %s\n' "$*" >&2; exit 1; }

[ -x "$STOWAGE" ] || die "no stowage binary at $STOWAGE (make build)"
for tool in /usr/bin/docker-registry /usr/bin/time python3 timeout; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup; apt-get install docker-registry time)"
done
for n in $NS; do [[ $n =~ ^[1-9][0-9]*$ && $n -le 99999 ]] || die "SCALE_NS: $n is not a count in 1..99999"; done
read -r -a NS_ARR <<< "$NS"
mapfile -t NS_ARR < <(printf '%s\n' "${NS_ARR[@]}" | sort -n | uniq)
N_MIN=${NS_ARR[0]}
N_MAX=${NS_ARR[-1]}

# Scratch (stores, lockfiles, logs), removed at exit, and at start too in case a run
# killed hard left one.
WORK=$BENCH_DIR/scale/run
REGDIR=$BENCH_DIR/scale/registry
rm -rf "$WORK"
mkdir -p "$WORK" "$REGDIR" "$(dirname "$OUT")"
pids=()

stop_pid() { # TERM, then KILL after 5 s; never fails
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# Keeps the script's own exit status: the daemons killed here exit with 143, and a
# `wait` on them must not become the script's status.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# daemon LOG CMD...: start CMD in the background; it gets SIGKILL should this script
# die without running its trap (PR_SET_PDEATHSIG), so no daemon outlives a run.
daemon() {
  local out=$1; shift
  python3 -c 'import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
os.execvp(sys.argv[1], sys.argv[1:])' "$@" > "$out" 2>&1 9>&- &
  pids+=($!)
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_v2() { # wait_v2 ADDR PID
  for _ in $(seq 100); do
    python3 -c 'import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], timeout=1); c.request("GET", "/v2/")
sys.exit(c.getresponse().status != 200)' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  die "nothing answers on $1"
}

# ---------------------------------------------------------------- the registry
REGISTRY=127.0.0.1:$(free_port)
REGLOG=$WORK/registry.log
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $REGDIR}}
http: {addr: $REGISTRY}
YAML
daemon "$REGLOG" /usr/bin/docker-registry serve "$WORK/registry.yml"
wait_v2 "$REGISTRY" "${pids[-1]}"
log "docker-registry on $REGISTRY (storage $REGDIR)"

t0=$(date +%s%N)
# What is measured: the binary's build time and the tree it was built from (when
# nothing in the tree is newer than it).
BIN_INFO="binary built $(date -u -r "$STOWAGE" '+%Y-%m-%d %H:%M UTC')"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
  BIN_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD)"
  git -C "$REPO" diff --quiet HEAD 2>/dev/null || BIN_INFO+=" with uncommitted changes"
  newer=$(find "$REPO/src" "$REPO/store/src" "$REPO/cli/src" -name '*.rs' -newer "$STOWAGE" 2>/dev/null | wc -l)
  [ "$newer" = 0 ] || BIN_INFO+=" (**$newer source files newer than the binary**)"
fi

python3 "$FIXTURE" push "$REGISTRY" "$N_MAX" "${FIXTURE_MODE[@]}" > "$WORK/digest" || die "building the fixture failed"
FIXTURE_S=$(echo "($(date +%s%N) - $t0) / 1000000000" | bc -l | xargs printf '%.1f')
DIGEST=$(cat "$WORK/digest")
log "fixture: $N_MAX repositories hold $DIGEST ($FIXTURE_S s)"

# ---------------------------------------------------------------- timing
# req_count: access-log lines so far (requests the registry answered).
req_count() { grep -c '^127\.0\.0\.1 ' "$REGLOG" || true; }

# timed NAME N CMD...: run CMD after a sync and a pause; sets T (s), RSS (KiB), REQ, RC.
timed() {
  local name=$1 n=$2; shift 2
  local logf=$WORK/logs/$n-$name.log r0 t0 t1
  sync
  sleep 0.3
  r0=$(req_count)
  t0=$(date +%s%N)
  RC=0
  timeout "$TIMEOUT" /usr/bin/time -f '%M' -o "$WORK/rss" "$@" > "$logf" 2>&1 || RC=$?
  t1=$(date +%s%N)
  T=$(echo "($t1 - $t0) / 1000000000" | bc -l)
  RSS=$(tail -n1 "$WORK/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
  REQ=$(( $(req_count) - r0 ))
}

declare -A TIMES RSSES REQS FAILED
mkdir -p "$WORK/logs"
skip_rest=0
for n in "${NS_ARR[@]}"; do
  if [ $skip_rest = 1 ]; then
    log "N=$n: skipped (a command failed at a smaller N)"
    FAILED[$n]="skipped: a command failed at a smaller N"
    continue
  fi
  refs=()
  for ((i = 0; i < n; i++)); do refs+=("$(printf '%s/scale/r%05d:%s' "$REGISTRY" "$i" "$TAG")"); done
  for run in $(seq "$RUNS"); do
    store=$WORK/store-$n
    lockf=$WORK/scale-$n.lock
    rm -rf "$store" "$lockf"
    S=("$STOWAGE" --store "$store")
    for c in "${CMDS[@]}"; do
      case $c in
        lock) timed lock "$n" "${S[@]}" lock -o "$lockf" "${refs[@]}" ;;
        cold | warm) timed "$c" "$n" "${S[@]}" sync "$lockf" ;;
        ttl) timed ttl "$n" "${S[@]}" sync --ttl 3600 "$lockf" ;;
        gc) timed gc "$n" "${S[@]}" gc --dry-run ;;
        *) timed "$c" "$n" "${S[@]}" "$c" ;;
      esac
      if [ "$RC" != 0 ]; then
        what="exit $RC"
        [ "$RC" = 124 ] && what="timed out after $TIMEOUT s"
        FAILED[$n]="\`$c\` failed at N=$n ($what): $(tail -n3 "$WORK/logs/$n-$c.log" | tr '\n' ' ' | cut -c1-300)"
        log "N=$n run $run: ${FAILED[$n]}"
        skip_rest=1
        break 2
      fi
      TIMES[$n,$c]+="$T "
      RSSES[$n,$c]+="$RSS "
      REQS[$n,$c]+="$REQ "
      printf '== N=%s run %s: %-6s %8.3f s  %6d KiB  %6d requests\n' "$n" "$run" "$c" "$T" "$RSS" "$REQ" >&2
    done
  done
done

# ---------------------------------------------------------------- serve
SERVE_LINE=""
SERVE_N=""
if [ -z "${FAILED[$N_MAX]:-}" ] && [ -d "$WORK/store-$N_MAX" ]; then
  SERVE_N=$N_MAX
  SERVE=127.0.0.1:$(free_port)
  daemon "$WORK/serve.log" "$STOWAGE" --store "$WORK/store-$N_MAX" serve --addr "$SERVE"
  wait_v2 "$SERVE" "${pids[-1]}"
  log "serve: $GETS manifest GETs by tag against stowage serve ($SERVE) and docker-registry, N=$N_MAX"
  sync
  if SERVE_LINE=$(python3 "$FIXTURE" get "$GETS" 16 "$N_MAX" "${FIXTURE_MODE[@]}" "stowage=$SERVE" "registry=$REGISTRY" 2> "$WORK/get.err"); then
    :
  else
    SERVE_LINE=""
    log "serve comparison failed: $(cat "$WORK/get.err")"
  fi
fi

# ---------------------------------------------------------------- report
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
fmt() { printf "%.${2:-3}f" "$1"; }
per_image_ms() { echo "$1 * 1000 / $2" | bc -l; }
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo '**FAIL**'; fi; }

declare -A MED
for n in "${NS_ARR[@]}"; do
  for c in "${CMDS[@]}"; do
    [ -n "${TIMES[$n,$c]:-}" ] || continue
    MED[$n,$c]=$(median "${TIMES[$n,$c]}")
  done
done

{
  echo "# stowage scale benchmark (issue 16)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); stowage $BIN_INFO; machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); median of $RUNS run(s) per N, each from an empty store"
  layer_bytes=$(python3 -B -c 'import sys; sys.path.insert(0, "benches"); import scale_fixture as f; print(len(f.image()[0]))')
  if [ "$DISTINCT" = 1 ]; then
    what="$N_MAX distinct images (own config and manifest each, one shared layer of $layer_bytes bytes) under scale/rNNNNN:d"
  else
    what="one tiny image (1 layer of $layer_bytes bytes, $DIGEST) under $N_MAX repositories (scale/rNNNNN:1)"
  fi
  echo "- fixture: $what of docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}') on loopback; built or grown in $FIXTURE_S s"
  echo
  echo "### wall time (seconds; ms per image)"
  echo
  head="| command |"; rule="| --- |"
  for n in "${NS_ARR[@]}"; do head+=" N=$n s | ms/image |"; rule+=" ---: | ---: |"; done
  head+=" per-image ×, N=$N_MAX / N=$N_MIN | goal |"; rule+=" ---: | --- |"
  echo "$head"; echo "$rule"
  for c in "${CMDS[@]}"; do
    row="| ${LABEL[$c]} |"
    for n in "${NS_ARR[@]}"; do
      if [ -n "${MED[$n,$c]:-}" ]; then
        row+=" $(fmt "${MED[$n,$c]}") | $(fmt "$(per_image_ms "${MED[$n,$c]}" "$n")" 4) |"
      else
        row+=" — | — |"
      fi
    done
    ratio="—"; goal=""
    if [ -n "${MED[$N_MAX,$c]:-}" ] && [ -n "${MED[$N_MIN,$c]:-}" ] && [ "$N_MAX" != "$N_MIN" ]; then
      r=$(echo "(${MED[$N_MAX,$c]} / $N_MAX) / (${MED[$N_MIN,$c]} / $N_MIN)" | bc -l)
      ratio="$(fmt "$r" 2)×"
      case " ${LINEAR[*]} " in *" $c "*)
        goal="≤ 1.30×: $(verdict "$(echo "$r <= 1.3" | bc -l)")" ;;
      esac
    fi
    echo "$row $ratio | $goal |"
  done
  echo
  echo "### peak RSS (MiB, median)"
  echo
  head="| command |"; rule="| --- |"
  for n in "${NS_ARR[@]}"; do head+=" N=$n |"; rule+=" ---: |"; done
  echo "$head"; echo "$rule"
  for c in "${CMDS[@]}"; do
    row="| ${LABEL[$c]} |"
    for n in "${NS_ARR[@]}"; do
      if [ -n "${RSSES[$n,$c]:-}" ]; then row+=" $(fmt "$(echo "$(median "${RSSES[$n,$c]}") / 1024" | bc -l)" 1) |"; else row+=" — |"; fi
    done
    echo "$row"
  done
  echo
  echo "### registry requests (access log, median)"
  echo
  head="| command |"; rule="| --- |"
  for n in "${NS_ARR[@]}"; do head+=" N=$n |"; rule+=" ---: |"; done
  echo "$head"; echo "$rule"
  for c in lock cold warm ttl; do
    row="| ${LABEL[$c]} |"
    for n in "${NS_ARR[@]}"; do
      if [ -n "${REQS[$n,$c]:-}" ]; then row+=" $(median "${REQS[$n,$c]}") |"; else row+=" — |"; fi
    done
    echo "$row"
  done
  echo
  if [ -n "$SERVE_LINE" ]; then
    read -r _ s50 s99 smean <<< "$(grep '^stowage ' <<< "$SERVE_LINE")"
    read -r _ r50 r99 rmean <<< "$(grep '^registry ' <<< "$SERVE_LINE")"
    echo "### serve: manifest GET by tag, N=$SERVE_N refs, $GETS requests from one keep-alive client each (interleaved)"
    echo
    echo "| server | p50 ms | p99 ms | mean ms |"
    echo "| --- | ---: | ---: | ---: |"
    echo "| \`stowage serve\` | $s50 | $s99 | $smean |"
    echo "| docker-registry | $r50 | $r99 | $rmean |"
    echo
  fi

  echo "### goals"
  echo
  note=""
  [ "$N_MAX" = 10000 ] || note=" (measured at N=$N_MAX; the goal is at N=10000)"
  for c in "${LINEAR[@]}"; do
    if [ -n "${MED[$N_MAX,$c]:-}" ] && [ -n "${MED[$N_MIN,$c]:-}" ] && [ "$N_MAX" != "$N_MIN" ]; then
      r=$(echo "(${MED[$N_MAX,$c]} / $N_MAX) / (${MED[$N_MIN,$c]} / $N_MIN)" | bc -l)
      echo "- ${LABEL[$c]}: per image at N=$N_MAX $(fmt "$r" 2)× that at N=$N_MIN (goal ≤ 1.3×): $(verdict "$(echo "$r <= 1.3" | bc -l)")$note"
    else
      echo "- ${LABEL[$c]}: per-image ratio not measured"
    fi
  done
  if [ -n "${MED[$N_MAX,ttl]:-}" ]; then
    echo "- warm \`sync --ttl 3600\` of $N_MAX images $(fmt "${MED[$N_MAX,ttl]}" 2) s, $(median "${REQS[$N_MAX,ttl]}") requests (goal < 2 s at 10000): $(verdict "$(echo "${MED[$N_MAX,ttl]} < 2" | bc -l)")$note"
  else
    echo "- warm \`sync --ttl 3600\` under 2 s: not measured"
  fi
  if [ -n "${RSSES[$N_MAX,cold]:-}" ]; then
    peak=0
    for c in cold warm ttl; do
      for v in ${RSSES[$N_MAX,$c]:-}; do [ "$v" -gt "$peak" ] && peak=$v; done
    done
    echo "- peak RSS of \`sync\` (cold, warm, --ttl; highest of all runs) at N=$N_MAX: $(fmt "$(echo "$peak / 1024" | bc -l)" 1) MiB (goal < 128 MiB): $(verdict "$(echo "$peak < 131072" | bc -l)")$note"
  else
    echo "- peak RSS of \`sync\` under 128 MiB: not measured"
  fi
  if [ -n "$SERVE_LINE" ]; then
    echo "- serve at N=$SERVE_N: p50 $s50 vs $r50 ms, p99 $s99 vs $r99 ms (goal: no worse than docker-registry): $(verdict "$(echo "$s50 <= $r50 && $s99 <= $r99" | bc -l)")$note"
  else
    echo "- serve against docker-registry: not measured"
  fi
  for n in "${NS_ARR[@]}"; do
    [ -n "${FAILED[$n]:-}" ] && echo "- N=$n: ${FAILED[$n]}"
  done
  true
} | tee "$OUT"
