#!/usr/bin/env bash
# Local-work benchmark (issue 18): what stowage does with no network at all, against
# the tool a user would reach for instead, in one run on the same cores.
#   - factor: 40 conda packages of ~1 MiB (.tar.bz2, benches/make_conda.py) onto the
#     busybox base, cold (empty layer cache) and again with every layer cached,
#     against `tar xjf` extracting the same 40 archives two at a time (xargs -P2).
#   - unpack: a 4-layer gzip image (benches/make_layers.py) from one store, with
#     `stowage unpack` against `umoci unpack --image STORE:REF`.
#
#   bash benches/local.sh        (make bench runs it)
#
# Environment: BENCH_DIR (default /var/tmp/stowage-bench; inputs are cached under
# local/), BENCH_RUNS (3; the median is reported), STOWAGE (default
# target/release/stowage), BENCH_LOCAL_OUT (default benches/results/local-latest.md).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO=$PWD

BENCH_DIR=${BENCH_DIR:-/var/tmp/stowage-bench}
RUNS=${BENCH_RUNS:-3}
OUT=${BENCH_LOCAL_OUT:-$REPO/benches/results/local-latest.md}
PACKAGES=40 PKG_BYTES=1048576 LAYERS=4 FILES=2000

log() { printf '== %s\n' "$*" >&2; }
die() { printf '\nlocal bench: FAILED: %s\n' "$*" >&2; exit 1; }
for tool in umoci tar bzip2 xargs python3 flock; do
  command -v "$tool" >/dev/null || die "$tool is missing (make setup)"
done
STOWAGE_SRC=${STOWAGE:-$REPO/target/release/stowage}
[ -x "$STOWAGE_SRC" ] || die "no stowage binary at $STOWAGE_SRC (make build)"
[ "$(id -u)" = 0 ] || die "umoci unpack and stowage unpack keep owners: run as root"

WORK=$BENCH_DIR/local
RUN=$WORK/run
mkdir -p "$WORK"
exec 9> "$BENCH_DIR/lock"
flock -n 9 || die "another bench is running on $BENCH_DIR"
rm -rf "$RUN"
mkdir -p "$RUN/bin"
cp "$STOWAGE_SRC" "$RUN/bin/stowage"
STOWAGE_BIN=$RUN/bin/stowage
trap 'rm -rf "$RUN"' EXIT
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- inputs (cached)
GEN=$(cat "$REPO/benches/make_conda.py" "$REPO/benches/make_layers.py" | sha256sum | cut -c1-12)
PKGS=$WORK/pkgs-$PACKAGES-$GEN
if [ ! -f "$PKGS/images.tsv" ]; then
  log "generating $PACKAGES conda packages"
  python3 "$REPO/benches/make_conda.py" packages "$PKGS" 1 $PACKAGES 0 $PKG_BYTES
fi
mapfile -t PKG_FILES < <(cut -f2- "$PKGS/images.tsv" | tr '\t' '\n')
[ ${#PKG_FILES[@]} = $PACKAGES ] || die "expected $PACKAGES packages in $PKGS, found ${#PKG_FILES[@]}"
LAYOUT=$WORK/layers-$LAYERS-$FILES-$GEN
if [ ! -f "$LAYOUT/index.json" ]; then
  log "generating a $LAYERS-layer image of $FILES files a layer"
  python3 "$REPO/benches/make_layers.py" "$LAYOUT" $LAYERS $FILES
fi
BASE=$WORK/base-$GEN
[ -f "$BASE/index.json" ] || python3 "$REPO/benches/make_conda.py" base "$BASE"

# ---------------------------------------------------------------- timing
RESULTS=$RUN/results.tsv # row run seconds
: > "$RESULTS"
measure() { # measure ROW RUN COMMAND...: one timed run after a sync
  local row=$1 run=$2 t0 t1
  shift 2
  sync
  sleep 1
  t0=$EPOCHREALTIME
  "$@" > "$RUN/$row.out" 2> "$RUN/$row.err" || { cat "$RUN/$row.err" >&2; die "$row failed (run $run)"; }
  t1=$EPOCHREALTIME
  printf '%s\t%s\t%s\n' "$row" "$run" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')" >> "$RESULTS"
  log "$(tail -n 1 "$RESULTS" | awk -F'\t' '{printf "%-16s run %s: %6.2f s", $1, $2, $3}')"
}
extract_all() { # the floor: every archive into a folder of its own, two at a time
  printf '%s\n' "${PKG_FILES[@]}" |
    xargs -P2 -I{} sh -c 'd="$1/$(basename "$2")"; mkdir -p "$d" && tar xjf "$2" -C "$d"' _ "$RUN/tar" {}
}
factor_into() { # factor_into STORE NAME
  "$STOWAGE_BIN" --store "$1" --json factor --base base "$2" "${PKG_FILES[@]}"
}
tree_sum() { # paths, kinds, modes, owners, sizes and link targets of a tree
  (cd "$1" && find . -printf '%p %y %m %U:%G %s %l\n' | sort | sha256sum | cut -c1-16)
}

for run in $(seq "$RUNS"); do
  # factor: tar floor, cold store, then the same store again (every layer cached).
  rm -rf "$RUN/tar"
  measure "tar xjf -P2" "$run" extract_all
  rm -rf "$RUN/store"
  "$STOWAGE_BIN" --store "$RUN/store" -q import "$BASE" >/dev/null
  measure "factor cold" "$run" factor_into "$RUN/store" "cold:1"
  measure "factor cached" "$run" factor_into "$RUN/store" "cached:1"
  [ "$(jq -r .layers_written "$RUN/factor cached.out")" = 0 ] || die "the cached factor wrote layers"
  [ "$(jq -r .manifest_digest "$RUN/factor cold.out")" = "$(jq -r .manifest_digest "$RUN/factor cached.out")" ] ||
    die "the cached factor built another image than the cold one"

  # unpack: one store holding the 4-layer image, umoci and stowage in turn.
  if [ "$run" = 1 ]; then
    "$STOWAGE_BIN" --store "$RUN/ustore" -q import "$LAYOUT" >/dev/null
    UREF=$("$STOWAGE_BIN" --store "$RUN/ustore" ls | awk 'NR == 1 {print $1}')
  fi
  rm -rf "$RUN/umoci" "$RUN/rootfs"
  measure "umoci unpack" "$run" umoci unpack --image "$RUN/ustore:$UREF" "$RUN/umoci"
  measure "stowage unpack" "$run" "$STOWAGE_BIN" --store "$RUN/ustore" -q unpack "$UREF" "$RUN/rootfs"
  [ "$(tree_sum "$RUN/umoci/rootfs")" = "$(tree_sum "$RUN/rootfs")" ] ||
    die "stowage unpack and umoci unpack made different trees"
done

# ---------------------------------------------------------------- the report
median() { awk -F'\t' -v r="$1" '$1 == r {print $3}' "$RESULTS" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
range() { awk -F'\t' -v r="$1" '$1 == r {print $3}' "$RESULTS" | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }
row() { # row NAME REFERENCE GOAL
  local t ref
  t=$(median "$1") ref=$(median "$2")
  printf '| %s | %s s | %s | %s | %s |\n' "$1" "$t" "$(range "$1")" \
    "$(awk -v a="$t" -v b="$ref" 'BEGIN {printf "%.2f×", a / b}')" "$3"
}
{
  echo "# stowage local-work benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M') UTC; $(nproc) cores; load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "- stowage at $(git -C "$REPO" rev-parse --short HEAD); $(umoci --version); $(tar --version | head -n 1); median of $RUNS"
  echo "- factor: $PACKAGES packages (.tar.bz2, ~$((PKG_BYTES >> 10)) KiB of random bytes each) onto a busybox base, zstd layers; \`tar xjf\` extracts the same archives, two at a time"
  echo "- unpack: $LAYERS gzip layers of $FILES files, 2 × 8 MiB files, symlinks, a hard link and whiteouts each, from one store; the trees are checked equal"
  echo
  echo "| row | wall (median) | min–max | × reference | goal |"
  echo "| --- | ---: | ---: | ---: | --- |"
  row "tar xjf -P2" "tar xjf -P2" "reference"
  row "factor cold" "tar xjf -P2" "≤ 1.5×"
  row "factor cached" "tar xjf -P2" "< 0.3 s"
  row "umoci unpack" "umoci unpack" "reference"
  row "stowage unpack" "umoci unpack" "≤ 0.5× (2× faster)"
} > "$RUN/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$RUN/report.md" "$OUT"
cat "$RUN/report.md"
log "written to $OUT"
