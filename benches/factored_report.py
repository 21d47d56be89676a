#!/usr/bin/env python3
"""Turn benches/factored.sh's results.tsv into the markdown report (stdout).

results.tsv rows: profile, set (factored | single), tool, run, seconds, GET body bytes
the registry served, requests (GET + HEAD) it logged.
"""

import argparse
import datetime
import glob
import json
import os
import statistics
from collections import defaultdict

# The pull report's helper: a tool's output, or "" when it is missing (same folder).
from report import sh

SETS = {"factored": "factored", "single": "single-layer"}
TOOLS = {
    "stowage-sync": "stowage sync",
    "stowage-pull": "stowage pull ×10",
    "podman": "podman pull ×10",
    "load": "stowage load ×10 into podman",
}
NOTES = {
    ("factored", "stowage-sync"): "one `stowage sync` of a lockfile pinning the 10 images (made beforehand by `stowage lock`)",
    ("factored", "stowage-pull"): "10 `stowage pull` commands in turn, one store",
    ("factored", "podman"): "10 `podman pull` in turn, one fresh root; includes extracting the layers",
    ("factored", "load"): "10 `stowage load --into podman` from a store holding the images, one fresh podman root; includes extracting the layers",
    ("single", "load"): "the same for the single-layer images",
    ("single", "podman"): "the reference: 10 `podman pull` in turn, one fresh root; includes extracting the layers",
    ("single", "stowage-sync"): "one `stowage sync` of a lockfile pinning the 10 single-layer images",
}
REFERENCE = ("single", "podman")
ORDER = [("factored", "stowage-sync"), ("factored", "stowage-pull"), ("factored", "podman"),
         ("factored", "load"), ("single", "podman"), ("single", "load"), ("single", "stowage-sync")]


def mb(n):
    return f"{n / 1e6:.1f} MB"


def needed(manifest_dir, set_name):
    """(distinct blob bytes incl. manifests, layers per image, mean image bytes) of a set."""
    blobs, per_image, layers = {}, [], set()
    for path in sorted(glob.glob(os.path.join(manifest_dir, f"{set_name}-*.manifest.json"))):
        with open(path, "rb") as f:
            raw = f.read()
        m = json.loads(raw)
        size = len(raw) + m["config"]["size"] + sum(l["size"] for l in m["layers"])
        per_image.append(size)
        layers.add(len(m["layers"]))
        blobs["manifest:" + path] = len(raw)
        for d in [m["config"]] + m["layers"]:
            blobs[d["digest"]] = d["size"]
    return sum(blobs.values()), sorted(layers), sum(per_image)


def main():
    ap = argparse.ArgumentParser()
    for opt in ["results", "manifests", "images", "runs", "profiles", "stowage", "repo",
                "load-start", "shared", "unique", "pkg-bytes", "delay-ms", "rate"]:
        ap.add_argument("--" + opt, required=True)
    args = ap.parse_args()

    rows = defaultdict(list)  # (profile, set, tool) -> [(secs, bytes, requests)]
    with open(args.results) as f:
        for line in f:
            profile, set_name, tool, _run, secs, nbytes, requests = line.rstrip("\n").split("\t")
            rows[(profile, set_name, tool)].append((float(secs), int(nbytes), int(requests)))

    images = args.images.split()
    shared, unique = int(args.shared), int(args.unique)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    head = sh("git", "-C", args.repo, "rev-parse", "--short", "HEAD")
    versions = ", ".join(v for v in [
        sh(args.stowage, "--version"), sh("podman", "--version"), sh("skopeo", "--version"),
        "docker-registry " + sh("docker-registry", "--version").split()[-1],
    ] if v)
    f_need, f_layers, f_sum = needed(args.manifests, "factored")
    s_need, s_layers, s_sum = needed(args.manifests, "single")

    out = []
    w = out.append
    w("# stowage factored-image benchmark")
    w("")
    w(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
      f"{os.cpu_count()} cores, {mem_kb / 1048576:.1f} GiB, {cpu}; load average "
      f"{args.load_start} at the start, {' '.join(open('/proc/loadavg').read().split()[:3])} at the end")
    w(f"- stowage at {head}; {versions}")
    w(f"- image set: {len(images)} images, each a busybox-static base layer, {shared + unique} "
      f"conda packages (.tar.bz2, ~{int(args.pkg_bytes) >> 10} KiB of random bytes each; "
      f"{shared} shared by all images, {unique} of its own: {shared + len(images) * unique} "
      f"distinct) and its conda-meta layer.")
    w(f"  - factored: {'/'.join(map(str, f_layers))} layers per image (tar+zstd, `stowage factor-set` of the 10: a layer per shared package, one for the image's own); "
      f"the 10 manifests reference {mb(f_sum)} in all, {mb(f_need)} distinct.")
    w(f"  - single-layer: the same files (the factored image's rootfs as umoci unpacks it) as one "
      f"tar+gzip layer (level 6); {mb(s_sum)} in all, {mb(s_need)} distinct.")
    w(f"- each row starts from an empty node (fresh store, fresh podman --root/--runroot); "
      f"median of {args.runs}. Bytes: GET body bytes the registry served during the run "
      f"(its access log; manifests and configs included); requests: GET + HEAD.")
    w("- ratios are against the reference row, podman pulling the single-layer images.")
    w("- what \"on the node\" means differs: stowage ends with every blob verified and "
      "fsynced in its store (compressed, not extracted; a runtime gets the images with "
      "`stowage load` or from `stowage serve`); podman ends with the layers extracted into "
      "its overlay storage, ready to run.")
    for profile in args.profiles.split():
        w("")
        if profile == "loopback":
            w("## loopback: tools talk to the registry directly")
        else:
            w(f"## wan: through stowage-faultproxy, +{args.delay_ms} ms per request, each "
              f"connection paced to {int(args.rate) / 1e6:.0f} MB/s")
        w("")
        w("| image set | tool | wall (median) | min–max | bytes fetched | × ref wall | × ref bytes | requests | notes |")
        w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        ref = rows.get((profile,) + REFERENCE)
        ref_t = statistics.median(r[0] for r in ref) if ref else None
        ref_b = statistics.median(r[1] for r in ref) if ref else None
        for set_name, tool in ORDER:
            got = rows.get((profile, set_name, tool))
            if not got:
                continue
            secs = [r[0] for r in got]
            t = statistics.median(secs)
            b = statistics.median(r[1] for r in got)
            bmin, bmax = min(r[1] for r in got), max(r[1] for r in got)
            bytes_cell = mb(b) if bmin == bmax else f"{mb(b)} ({bmin / 1e6:.1f}–{bmax / 1e6:.1f})"
            req = int(statistics.median(r[2] for r in got))
            w(f"| {SETS[set_name]} | {TOOLS[tool]} | {t:.2f} s | {min(secs):.2f}–{max(secs):.2f} | "
              f"{bytes_cell} | {t / ref_t:.2f}× | {b / ref_b:.2f}× | {req} | {NOTES[(set_name, tool)]} |")
        if profile != "loopback" and not rows.get((profile, "factored", "podman")):
            w("")
            w("podman pulling the factored images runs on loopback only: its time there is "
              "layer extraction, which the link does not change.")
    w("")
    w("podman stores layers by chain (a layer and everything under it), so images share "
      "a stored layer only while their layer lists agree from the bottom up. `stowage "
      "factor` orders package layers in conda's install order (every package after those "
      "it depends on, each level by name). Here every image's own packages (`fNN-own*`) "
      "depend on shared ones, so the 40 shared layers come first in every image and form "
      "one chain podman extracts once; by name they would sort first and podman would "
      "extract all 50 package layers of every image. `factor-set` then merges each image's "
      "10 own packages into one layer: podman pays about 40 ms per layer it commits, "
      "whatever its size, and a layer no other image holds saves nothing.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
