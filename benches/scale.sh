#!/usr/bin/env bash
# Scale benchmark (issue 16): one store, N images, N = 100, 1000, 10000. Is every
# command's cost linear in the number of images?
#
#   bash benches/scale.sh                 (make bench runs it last)
#   SCALE_NS="100 1000" SCALE_RUNS=1 bash benches/scale.sh
#   SCALE_NS="" SCALE_STORE_BLOBS="3000 30000" bash benches/scale.sh   (store part only)
#
# Environment:
#   SCALE_NS="100 1000 10000"   the store sizes (the ratio column compares the largest
#                               with the smallest); "" runs no registry part at all
#   SCALE_STORE_BLOBS="10000 100000"   blob counts of the store-only part (below); 0 or
#                               "" skips it
#   SCALE_STORE_RUNS=3          runs of each command per blob count (median reported)
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
# Store-only part (the issue's "verify, gc, ls, du at 100k blobs: linear, parallel
# where they hash, memory bounded"; 100k blobs through the registry would take too
# long to build): for each SCALE_STORE_BLOBS count B, `scale_fixture.py store` writes a
# store straight to disk, as stowage lays one out (B/3 images of a tiny layer, config
# and manifest each, all distinct, tagged bench.example/scale/rNNNNN:1, and ~1% of B
# unreferenced blobs). First a check of the fixture: one layer blob gets a byte
# flipped and `verify --json` must report exactly that blob corrupt (and missing,
# once quarantined); the blob is then put back. Then `ls`, `du`, `gc --dry-run`,
# `verify` (each `--store DIR --json`), SCALE_STORE_RUNS times, timed as above; each
# answer is checked against the fixture (refs, blobs, unreferenced, checked). The
# store is written just before, so its blobs are in the page cache: warm-cache times.
#
# It reports; it does not gate: PASS/FAIL per goal, exit 0 unless the script broke.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

NS=${SCALE_NS-100 1000 10000}
STORE_BLOBS=${SCALE_STORE_BLOBS-10000 100000}
[ "$STORE_BLOBS" != 0 ] || STORE_BLOBS=""
STORE_RUNS=${SCALE_STORE_RUNS:-3}
REG=0
[ -z "${NS// /}" ] || REG=1
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
TOOLS=(/usr/bin/time python3 timeout bc)
[ "$REG" = 0 ] || TOOLS+=(/usr/bin/docker-registry)
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup; apt-get install docker-registry time)"
done
for n in $NS; do [[ $n =~ ^[1-9][0-9]*$ && $n -le 99999 ]] || die "SCALE_NS: $n is not a count in 1..99999"; done
for b in $STORE_BLOBS; do [[ $b =~ ^[1-9][0-9]*$ && $b -ge 4 && $b -le 3000000 ]] || die "SCALE_STORE_BLOBS: $b is not a count in 4..3000000"; done
[[ $STORE_RUNS =~ ^[1-9][0-9]*$ ]] || die "SCALE_STORE_RUNS: $STORE_RUNS is not a positive count"
sorted() { printf '%s\n' "$@" | sort -n | uniq; }
NS_ARR=() N_MIN="" N_MAX=""
if [ "$REG" = 1 ]; then
  mapfile -t NS_ARR < <(sorted $NS)
  N_MIN=${NS_ARR[0]}
  N_MAX=${NS_ARR[-1]}
fi
B_ARR=() B_MIN="" B_MAX=""
if [ -n "${STORE_BLOBS// /}" ]; then
  mapfile -t B_ARR < <(sorted $STORE_BLOBS)
  B_MIN=${B_ARR[0]}
  B_MAX=${B_ARR[-1]}
fi
[ "$REG" = 1 ] || [ ${#B_ARR[@]} -gt 0 ] || die "nothing to run: SCALE_NS and SCALE_STORE_BLOBS both empty"

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

# What is measured: the binary's build time and the tree it was built from (when
# nothing in the tree is newer than it).
BIN_INFO="binary built $(date -u -r "$STOWAGE" '+%Y-%m-%d %H:%M UTC')"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
  BIN_INFO+=", tree at $(git -C "$REPO" rev-parse --short HEAD)"
  git -C "$REPO" diff --quiet HEAD 2>/dev/null || BIN_INFO+=" with uncommitted changes"
  newer=$(find "$REPO/src" "$REPO/store/src" "$REPO/cli/src" -name '*.rs' -newer "$STOWAGE" 2>/dev/null | wc -l)
  [ "$newer" = 0 ] || BIN_INFO+=" (**$newer source files newer than the binary**)"
fi

# ---------------------------------------------------------------- the registry
REGLOG=""
if [ "$REG" = 1 ]; then
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
  python3 "$FIXTURE" push "$REGISTRY" "$N_MAX" "${FIXTURE_MODE[@]}" > "$WORK/digest" || die "building the fixture failed"
  FIXTURE_S=$(echo "($(date +%s%N) - $t0) / 1000000000" | bc -l | xargs printf '%.1f')
  DIGEST=$(cat "$WORK/digest")
  log "fixture: $N_MAX repositories hold $DIGEST ($FIXTURE_S s)"
fi

# ---------------------------------------------------------------- timing
# req_count: access-log lines so far (requests the registry answered).
req_count() {
  if [ -n "$REGLOG" ]; then grep -c '^127\.0\.0\.1 ' "$REGLOG" || true; else echo 0; fi
}

# timed NAME N CMD...: run CMD after a sync and a pause, its stdout to
# $WORK/logs/N-NAME.log and its stderr to that .err; sets T (s), RSS (KiB), CPU (user +
# system time over wall time, %), REQ, RC.
timed() {
  local name=$1 n=$2; shift 2
  local logf=$WORK/logs/$n-$name.log r0 t0 t1
  sync
  sleep 0.3
  r0=$(req_count)
  t0=$(date +%s%N)
  RC=0
  timeout "$TIMEOUT" /usr/bin/time -f '%P\n%M' -o "$WORK/rss" "$@" > "$logf" 2> "$logf.err" || RC=$?
  t1=$(date +%s%N)
  T=$(echo "($t1 - $t0) / 1000000000" | bc -l)
  RSS=$(tail -n1 "$WORK/rss" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
  CPU=$(tail -n2 "$WORK/rss" 2>/dev/null | head -n1 | grep -Eo '^[0-9]+' || echo 0)
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
        FAILED[$n]="\`$c\` failed at N=$n ($what): $(cat "$WORK/logs/$n-$c.log" "$WORK/logs/$n-$c.log.err" | tail -n3 | tr '\n' ' ' | cut -c1-300)"
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
if [ "$REG" = 1 ] && [ -z "${FAILED[$N_MAX]:-}" ] && [ -d "$WORK/store-$N_MAX" ]; then
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

# ---------------------------------------------------------------- store only
# For each blob count B: a store written by scale_fixture.py store, the fixture
# checked (one layer corrupted: `verify` must name exactly it, then it is put back),
# then ls, du, gc --dry-run and verify timed SCALE_STORE_RUNS times, every answer
# checked against the fixture's summary.
SCMDS=(ls du gc verify)
declare -A SLABEL=([ls]='`ls`' [du]='`du`' [gc]='`gc --dry-run`' [verify]='`verify`')
declare -A STIMES SRSSES SCPUS SFAILED SWRONG SINFO SCHECK
skip_rest=0
for b in "${B_ARR[@]}"; do
  if [ $skip_rest = 1 ]; then
    log "store of $b blobs: skipped (a command failed at a smaller count)"
    SFAILED[$b]="skipped: a command failed at a smaller blob count"
    continue
  fi
  sdir=$WORK/blobstore-$b
  summary=$WORK/blobstore-$b.json
  rm -rf "$sdir"
  python3 "$FIXTURE" store "$sdir" "$b" > "$summary" || die "building the store of $b blobs failed"
  read -r s_images s_unref s_bytes s_victim s_secs < <(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); print(d["images"], d["unreferenced"], d["bytes"], d["layer"], d["seconds"])' "$summary")
  SINFO[$b]="$s_images images, $s_unref unreferenced blobs, $s_bytes bytes; written in $s_secs s"
  log "store of $b blobs: ${SINFO[$b]}"
  S=("$STOWAGE" --store "$sdir" --json)

  # The fixture check: flip the first byte of one layer; verify must report exactly
  # that blob corrupt (and, quarantined, missing from its image), and exit non-zero.
  vblob=$sdir/blobs/sha256/${s_victim#sha256:}
  cp -p "$vblob" "$WORK/victim"
  chmod u+w "$vblob"
  python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    b = f.read(1); f.seek(0); f.write(bytes([b[0] ^ 0xff]))' "$vblob"
  chmod 0444 "$vblob"
  timed corrupt "store-$b" "${S[@]}" verify
  if [ "$RC" = 0 ]; then
    SCHECK[$b]="\`verify\` of a store with one corrupt layer exited 0"
  elif [ "$RC" = 124 ]; then
    SCHECK[$b]="\`verify\` timed out after $TIMEOUT s"
  else
    SCHECK[$b]=$(python3 "$FIXTURE" check corrupt "$summary" "$WORK/logs/store-$b-corrupt.log" 2>&1) || true
  fi
  log "store of $b blobs: fixture check (one corrupt layer): ${SCHECK[$b]:-ok, verify named it}"
  # Put the blob back as it was, and the store as the fixture wrote it.
  rm -rf "$sdir/stowage/quarantine"
  rm -f "$vblob"
  cp -p "$WORK/victim" "$vblob"

  for run in $(seq "$STORE_RUNS"); do
    for c in "${SCMDS[@]}"; do
      case $c in
        gc) timed gc "store-$b" "${S[@]}" gc --dry-run ;;
        *) timed "$c" "store-$b" "${S[@]}" "$c" ;;
      esac
      logf=$WORK/logs/store-$b-$c.log
      if [ "$RC" != 0 ]; then
        what="exit $RC"
        [ "$RC" = 124 ] && what="timed out after $TIMEOUT s"
        SFAILED[$b]="\`$c\` failed at $b blobs ($what): $(cat "$logf" "$logf.err" | tail -n3 | tr '\n' ' ' | cut -c1-300)"
        log "store of $b blobs, run $run: ${SFAILED[$b]}"
        skip_rest=1
        break 2
      fi
      wrong=$(python3 "$FIXTURE" check "$c" "$summary" "$logf" 2>&1) || SWRONG[$b,$c]=$wrong
      STIMES[$b,$c]+="$T "
      SRSSES[$b,$c]+="$RSS "
      SCPUS[$b,$c]+="$CPU "
      printf '== %s blobs run %s: %-6s %8.3f s  %6d KiB  %4d%% CPU%s\n' "$b" "$run" "$c" "$T" "$RSS" "$CPU" \
        "${wrong:+  WRONG: $wrong}" >&2
    done
  done
  rm -rf "$sdir"
done

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

declare -A SMED
for b in "${B_ARR[@]}"; do
  for c in "${SCMDS[@]}"; do
    [ -n "${STIMES[$b,$c]:-}" ] || continue
    SMED[$b,$c]=$(median "${STIMES[$b,$c]}")
  done
done
# store_ratio C: per-blob time at the largest count over that at the smallest (empty
# when not measured at both).
store_ratio() {
  if [ -n "${SMED[$B_MAX,$1]:-}" ] && [ -n "${SMED[$B_MIN,$1]:-}" ] && [ "$B_MAX" != "$B_MIN" ]; then
    echo "(${SMED[$B_MAX,$1]} / $B_MAX) / (${SMED[$B_MIN,$1]} / $B_MIN)" | bc -l
  fi
}

{
  echo "# stowage scale benchmark (issue 16)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); stowage $BIN_INFO; machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$REG" = 1 ]; then
    layer_bytes=$(python3 -B -c 'import sys; sys.path.insert(0, "benches"); import scale_fixture as f; print(len(f.image()[0]))')
    if [ "$DISTINCT" = 1 ]; then
      what="$N_MAX distinct images (own config and manifest each, one shared layer of $layer_bytes bytes) under scale/rNNNNN:d"
    else
      what="one tiny image (1 layer of $layer_bytes bytes, $DIGEST) under $N_MAX repositories (scale/rNNNNN:1)"
    fi
    echo "- registry part: median of $RUNS run(s) per N, each from an empty store; fixture: $what of docker-registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}') on loopback; built or grown in $FIXTURE_S s"
  else
    echo "- registry part: not run (SCALE_NS empty)"
  fi
  if [ ${#B_ARR[@]} -gt 0 ]; then
    echo "- store-only part: median of $STORE_RUNS run(s) per blob count, warm page cache; stores written by \`scale_fixture.py store\` (images of 3 distinct blobs each, ~1% unreferenced):"
    for b in "${B_ARR[@]}"; do echo "  - $b blobs: ${SINFO[$b]:-not built}"; done
  else
    echo "- store-only part: not run (SCALE_STORE_BLOBS=0)"
  fi
  echo
  if [ "$REG" = 1 ]; then
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
  fi
  if [ ${#B_ARR[@]} -gt 0 ]; then
    echo "### store only: \`--store DIR --json\` at B blobs (seconds; µs per blob; peak RSS MiB; CPU % = user + system over wall)"
    echo
    head="| command |"; rule="| --- |"
    for b in "${B_ARR[@]}"; do head+=" B=$b s | µs/blob | MiB | CPU % |"; rule+=" ---: | ---: | ---: | ---: |"; done
    head+=" per-blob ×, B=$B_MAX / B=$B_MIN | goal | RSS growth, bytes per added blob |"; rule+=" ---: | --- | ---: |"
    echo "$head"; echo "$rule"
    for c in "${SCMDS[@]}"; do
      row="| ${SLABEL[$c]} |"
      for b in "${B_ARR[@]}"; do
        if [ -n "${SMED[$b,$c]:-}" ]; then
          row+=" $(fmt "${SMED[$b,$c]}") | $(fmt "$(echo "${SMED[$b,$c]} * 1000000 / $b" | bc -l)" 2) |"
          row+=" $(fmt "$(echo "$(median "${SRSSES[$b,$c]}") / 1024" | bc -l)" 1) | $(median "${SCPUS[$b,$c]}") |"
        else
          row+=" — | — | — | — |"
        fi
      done
      r=$(store_ratio "$c"); ratio="—"; goal=""; growth="—"
      if [ -n "$r" ]; then
        ratio="$(fmt "$r" 2)×"
        goal="≤ 1.30×: $(verdict "$(echo "$r <= 1.3" | bc -l)")"
        rss_max=$(median "${SRSSES[$B_MAX,$c]}"); rss_min=$(median "${SRSSES[$B_MIN,$c]}")
        growth=$(fmt "$(echo "($rss_max - $rss_min) * 1024 / ($B_MAX - $B_MIN)" | bc -l)" 0)
      fi
      echo "$row $ratio | $goal | $growth |"
    done
    echo
  fi

  echo "### goals"
  echo
  if [ "$REG" = 1 ]; then
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
  fi
  if [ ${#B_ARR[@]} -gt 0 ]; then
    snote=""
    [ "$B_MAX" = 100000 ] || snote=" (measured at $B_MAX blobs; the goal is at 100000)"
    for b in "${B_ARR[@]}"; do
      [ -n "${SINFO[$b]:-}" ] || continue
      if [ -n "${SCHECK[$b]:-}" ]; then
        echo "- fixture check at $b blobs (one layer corrupted; \`verify\` must name exactly it): **FAIL**: ${SCHECK[$b]}"
      else
        echo "- fixture check at $b blobs (one layer corrupted; \`verify\` must name exactly it): PASS"
      fi
      wrong=""
      for c in "${SCMDS[@]}"; do [ -z "${SWRONG[$b,$c]:-}" ] || wrong+=" ${SWRONG[$b,$c]}"; done
      if [ -n "$wrong" ]; then
        echo "- answers at $b blobs (refs, blobs, bytes, unreferenced, checked as the fixture wrote them): **FAIL**:$wrong"
      elif [ -n "${STIMES[$b,verify]:-}" ]; then
        echo "- answers at $b blobs (refs, blobs, bytes, unreferenced, checked as the fixture wrote them): PASS"
      fi
    done
    for c in "${SCMDS[@]}"; do
      r=$(store_ratio "$c")
      if [ -n "$r" ]; then
        echo "- ${SLABEL[$c]}: per blob at $B_MAX blobs $(fmt "$r" 2)× that at $B_MIN (goal ≤ 1.3×): $(verdict "$(echo "$r <= 1.3" | bc -l)")$snote"
      else
        echo "- ${SLABEL[$c]}: per-blob ratio not measured"
      fi
    done
    for b in "${B_ARR[@]}"; do
      [ -n "${SFAILED[$b]:-}" ] && echo "- $b blobs: ${SFAILED[$b]}"
    done
  fi
  true
} | tee "$OUT"
