#!/usr/bin/env python3
"""Turn benches/run.sh's results.tsv into the markdown report (stdout).

results.tsv rows: profile, image, tool, run, seconds (ms for tool "warm"), peak RSS KiB.
"""

import argparse
import datetime
import heapq
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict

LABELS = {"many2m": "100×2 MB", "one200": "1×200 MB", "four200": "4×200 MB"}
# WAN goal: stowage's wall time at most this fraction of skopeo's.
WAN_GOALS = {"one200": 0.3, "four200": 0.4, "many2m": 0.6}
LOOPBACK_GOAL = 1.25  # × curl floor
WARM_GOAL_MS = 50
RSS_GOAL_MIB = 64
TOOL_NAMES = {
    "curl": "curl floor",
    "ranged": "curl, ranged",
    "durable": "curl + fsync",
    "stowage": "stowage",
    "skopeo": "skopeo copy",
    "ctr": "ctr content fetch",
    "podman": "podman pull",
    "docker": "docker pull",
}
TOOL_NOTES = {
    "curl": "one `curl -Z --parallel-max {par}` process, config + layers into files; "
            "manifest fetched beforehand (not timed); no hashing, no fsync",
    "ranged": "diagnostic, not the floor: the same curl, blobs ≥ {split} MiB fetched as "
              "the byte ranges stowage asks for once it splits a blob (on a link slower "
              "than 256 MiB/s; whole rounds of 8 ranges of about 8 MiB, own connection each)",
    "durable": "diagnostic: the curl floor, then an fsync of each file (8 at a time), so "
               "the bytes are durable, as stowage's are when it exits",
    "skopeo": "to an `oci:` layout",
    "ctr": "private containerd 1.6 (fresh root each run), content only",
    "podman": "includes extracting the layers (overlay driver, own --root)",
    "docker": "includes extracting the layers (engine's storage driver: {driver})",
}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool just leaves the field empty
        return ""


def fmt_s(x):
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def machine_lines(args):
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load_end = open("/proc/loadavg").read().split()[:3]
    head = sh("git", "-C", args.repo, "rev-parse", "--short", "HEAD")
    dirty = sh("git", "-C", args.repo, "status", "--porcelain", "--untracked-files=no")
    docker_server = sh("docker", "version", "--format", "{{.Server.Version}}")
    docker_driver = sh("docker", "info", "--format", "{{.Driver}}")
    versions = ", ".join(v for v in [
        sh(args.stowage, "--version"),
        "docker-registry " + (sh("dpkg-query", "-W", "-f=${Version}", "docker-registry") or "?"),
        sh("skopeo", "--version"),
        "containerd " + (sh("dpkg-query", "-W", "-f=${Version}", "containerd") or "?"),
        sh("podman", "--version"),
        ("docker engine " + docker_server) if docker_server else "",
        sh("curl", "--version").split("\n")[0].split(" (")[0],
    ] if v)
    lines = [
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: `nproc` = {os.cpu_count() and sh('nproc')}, memory {mem_kb / 1048576:.1f} GiB, "
        f"CPU: {cpu or platform.processor()}, kernel {platform.release()}",
        f"- load average at start {args.load_start}, at end {' '.join(load_end)} "
        "(other work on the machine shows up here; timings on a busy machine are noisy)",
        f"- stowage: git {head}{' + uncommitted changes' if dirty else ''}"
        + (f", flags `{args.stowage_flags}`" if args.stowage_flags else ", default flags"),
        f"- versions: {versions}",
        f"- runs per tool and image: {args.runs} (median reported; tools interleaved "
        f"within each run; every tool starts from an empty store)"
        + (" — QUICK mode" if args.quick == "1" else ""),
    ]
    return lines, docker_driver


def blobs_of(manifest_dir, img):
    with open(os.path.join(manifest_dir, f"{img}.manifest.json")) as f:
        m = json.load(f)
    return [m["config"]["size"]] + [layer["size"] for layer in m["layers"]]


def curl_model(sizes, parallel, delay, rate):
    """Wall time of curl through an ideal pacing proxy: `parallel` connections,
    blobs started in order as slots free up, each costing delay + size/rate."""
    slots = [0.0] * min(parallel, len(sizes))
    heapq.heapify(slots)
    end = 0.0
    for size in sizes:
        start = heapq.heappop(slots)
        finish = start + delay + size / rate
        end = max(end, finish)
        heapq.heappush(slots, finish)
    return end


def stowage_pieces(sizes, split_threshold, ranges_per_blob=8, range_size=8 << 20,
                   min_range=4 << 20):
    """The requests stowage makes for these blobs if it splits each big one from its
    first byte (src/registry/blob.rs `plan`). It really starts each as one stream and
    splits it at its first look at a slow link, ~0.1 s in (src/registry/split.rs), so
    this is a lower bound."""
    pieces = []
    for size in sizes:
        if size < split_threshold:
            pieces.append(size)
            continue
        rounds = -(-size // (ranges_per_blob * range_size))
        piece = max(-(-size // (ranges_per_blob * rounds)), min_range)
        at = 0
        while at < size:
            nxt = min(at + piece, size)
            pieces.append(nxt - at)
            at = nxt
    return pieces


def stowage_concurrency(sizes, split_threshold, conc, ranges_per_blob=8):
    """Requests stowage keeps in flight: `conc` across the process, at most
    `ranges_per_blob` ranges of one big blob."""
    big = sum(1 for size in sizes if size >= split_threshold)
    return min(conc, ranges_per_blob * big + len(sizes) - big)


def main():
    ap = argparse.ArgumentParser()
    for name in ["results", "manifests", "runs", "quick", "images", "profiles", "tools",
                 "delay-ms", "rate", "curl-parallel", "docker-note", "stowage",
                 "stowage-flags", "repo", "load-start", "split-threshold"]:
        ap.add_argument("--" + name, default="")
    args = ap.parse_args()
    delay = int(args.delay_ms) / 1000
    rate = int(args.rate)
    par = int(args.curl_parallel)
    split = int(args.split_threshold or 16 << 20)
    conc = 16  # stowage's default --concurrency (src/cli/pull.rs)
    flags = args.stowage_flags.replace("=", " ").split()
    if "--concurrency" in flags:
        conc = int(flags[flags.index("--concurrency") + 1])

    walls = defaultdict(list)
    rss = defaultdict(list)
    warm = {}
    warm_ttl = {}
    with open(args.results) as f:
        for line in f:
            profile, img, tool, _run, value, rss_kb = line.rstrip("\n").split("\t")
            if tool == "warm":
                warm[(profile, img)] = float(value)
                continue
            if tool == "warmttl":
                warm_ttl[(profile, img)] = float(value)
                continue
            walls[(profile, img, tool)].append(float(value))
            if rss_kb:
                rss[(profile, img)].append(int(rss_kb))

    header, docker_driver = machine_lines(args)
    out = ["# stowage pull benchmark", ""] + header + [""]
    out += [
        "Images: random (incompressible) bytes in gzip'd tars (gzip level 0), OCI manifests, "
        "served by one `docker-registry` on 127.0.0.1. Wall time is the whole command, "
        "process start to exit. `× floor` is wall ÷ the curl floor's; `× skopeo` is "
        "wall ÷ skopeo's.",
        "",
    ]
    tools = args.tools.split()
    images = args.images.split()
    for profile in args.profiles.split():
        if profile == "loopback":
            out.append("## loopback: tools talk to the registry directly")
        else:
            out.append(f"## wan: through stowage-faultproxy, +{args.delay_ms} ms per request, "
                       f"each connection paced to {rate / 1e6:g} MB/s")
        out.append("")
        out.append(f"| image | tool | wall (median of {args.runs}) | min–max | × floor | "
                   "× skopeo | goal / notes |")
        out.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        notes_after = []
        for img in images:
            sizes = blobs_of(args.manifests, img)
            total = sum(sizes)
            label = f"{LABELS.get(img, img)} ({total / 1048576:.0f} MiB)"
            med = {t: statistics.median(walls[(profile, img, t)])
                   for t in tools if walls.get((profile, img, t))}
            floor = med.get("curl")
            skopeo = med.get("skopeo")
            first = True
            for tool in tools:
                name = TOOL_NAMES.get(tool, tool)
                cell_img = label if first else ""
                first = False
                if tool == "docker" and args.docker_note:
                    out.append(f"| {cell_img} | {name} | – | | | | {args.docker_note} |")
                    continue
                if tool not in med:
                    continue
                w = med[tool]
                vals = walls[(profile, img, tool)]
                spread = f"{min(vals):.2f}–{max(vals):.2f}" if len(vals) > 1 else ""
                xf = f"{w / floor:.2f}×" if floor else ""
                xs = f"{w / skopeo:.2f}×" if skopeo and tool != "skopeo" else ""
                notes = []
                if tool == "stowage":
                    if profile == "loopback" and floor:
                        notes.append(f"goal ≤ {LOOPBACK_GOAL}× floor: {verdict(w / floor <= LOOPBACK_GOAL)}")
                    if profile == "wan" and skopeo and img in WAN_GOALS:
                        g = WAN_GOALS[img]
                        notes.append(f"goal ≤ {g}× skopeo: {verdict(w / skopeo <= g)}")
                    if rss.get((profile, img)):
                        peak = max(rss[(profile, img)]) / 1024
                        notes.append(f"peak RSS {peak:.0f} MiB (goal < {RSS_GOAL_MIB}: "
                                     f"{verdict(peak < RSS_GOAL_MIB)})")
                    if (profile, img) in warm:
                        ms = warm[(profile, img)]
                        notes.append(f"warm pull {ms:.1f} ms (goal < {WARM_GOAL_MS}: "
                                     f"{verdict(ms < WARM_GOAL_MS)})")
                    if (profile, img) in warm_ttl:
                        notes.append(f"warm pull with `--ttl 3600` {warm_ttl[(profile, img)]:.1f} ms")
                    notes.append(f"{total / 1e6 / w:.0f} MB/s")
                elif tool == "durable":
                    notes.append(TOOL_NOTES["durable"])
                    notes.append(f"{total / 1e6 / w:.0f} MB/s")
                elif tool in ("curl", "ranged"):
                    if tool == "ranged":
                        notes.append(TOOL_NOTES["ranged"].format(split=split >> 20))
                    notes.append(f"{total / 1e6 / w:.0f} MB/s")
                    if profile == "wan":
                        reqs = sizes if tool == "curl" else stowage_pieces(sizes, split)
                        model = curl_model(reqs, par, delay, rate)
                        ratio = w / model
                        flag = ("the proxy (or the busy machine) is a bottleneck here"
                                if ratio > 1.15 else "the proxy keeps up")
                        notes.append(f"ideal link model {model:.2f} s → measured {ratio:.2f}× "
                                     f"of it: {flag}")
                else:
                    tmpl = TOOL_NOTES.get(tool, "")
                    if tmpl:
                        notes.append(tmpl.format(par=par, driver=docker_driver or "?"))
                out.append(f"| {cell_img} | {name} | {fmt_s(w)} | {spread} | {xf} | {xs} | "
                           f"{'; '.join(notes)} |")
            if profile == "wan":
                notes_after.append(
                    f"- {LABELS.get(img, img)}: stowage, splitting from the start: "
                    f"{len(stowage_pieces(sizes, split))} "
                    f"requests, {stowage_concurrency(sizes, split, conc)} at a time, need ≥ "
                    f"{curl_model(stowage_pieces(sizes, split), stowage_concurrency(sizes, split, conc), delay, rate):.2f} s; "
                    f"one request per blob, {par} at a time (curl floor), needs ≥ "
                    f"{curl_model(sizes, par, delay, rate):.2f} s; skopeo (6 at a time) ≥ "
                    f"{curl_model(sizes, 6, delay, rate):.2f} s")
        out.append("")
        if notes_after:
            out.append(f"Link model (lower bounds: each request costs {args.delay_ms} ms + "
                       f"size ÷ {rate / 1e6:g} MB/s on its own connection; no CPU, no "
                       "manifest):")
            out += notes_after
            out.append(f"- warm pull: with the default `--ttl 0` stowage asks the registry for "
                       f"the manifest (one request), so ≥ {args.delay_ms} ms on this link "
                       "before any local work")
            out.append("")
        out.append(f"Curl floor notes: {TOOL_NOTES['curl'].format(par=par)}.")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
