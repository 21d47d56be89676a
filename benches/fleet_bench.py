#!/usr/bin/env python3
"""The fleet benchmark's runner (benches/fleet.sh sets it up and calls it).

    fleet_bench.py WORK STOWAGE FAULTPROXY REPORT

Environment: FLEET_NODES (16), FLEET_BIG / FLEET_MANY / FLEET_FACTORED as
LAYERSxBYTES, FLEET_IMAGES (where generated layouts are cached), WAN_DELAY_MS,
WAN_RATE, FLEET_TIMEOUT (seconds per scenario).

One upstream docker-registry (its access log counts every byte it serves) behind
stowage-faultproxy pacing the WAN profile; three images pushed and locked with
`stowage lock`. Then, one after the other from empty stores, each scenario's nodes
all start at once and the time until the last one is done is taken:

  alone    one node, `stowage sync LOCK` straight from upstream (the reference time)
  floor    16 nodes, each `stowage import` of the three layouts from local disk: no
           network, every blob verified and fsynced into 16 stores, what this
           machine's cores and disk cost however fast the network (on a real fleet
           each node has its own; here 16 share 2 cores)
  peers    16 nodes, each `stowage serve --upstream` on 127.0.0.N over its store plus
           `stowage sync LOCK --peers ALL --self ITS_ADDR` into the same store
  direct   16 nodes, each `stowage sync LOCK` straight from upstream
  cache    Debian's docker-registry as a pull-through cache (`proxy: remoteurl:`) in
           front of upstream, 16 nodes `stowage sync` through it
  killed   peers, with the big layer's owner and one other node SIGKILLed mid-warm
           (at 0.4x the time the peers scenario took)
  liar     peers, the big layer's owner behind a proxy flipping a bit of every blob

Upstream bytes are the blob GET body bytes in the upstream registry's access log
during the scenario, over the image set's bytes (its distinct blobs).

FLEET_CPU_BUDGET=CORES (say 0.125: 2 cores / 16 nodes) puts each node's processes (its
serve and its sync, or its imports) in a cgroup of its own with that CPU quota, in
every scenario, one node alone too: a fleet of small nodes, each with its own CPU,
rather than 16 nodes sharing the machine's. The upstream registry and the WAN proxy
stay outside (upstream is far away). Needs root and the cgroup cpu controller.
"""

import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

WORK, STOWAGE, FAULTPROXY, REPORT = sys.argv[1:5]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = int(os.environ.get("FLEET_NODES", "16"))
TIMEOUT = float(os.environ.get("FLEET_TIMEOUT", "1800"))
DELAY_MS = os.environ.get("WAN_DELAY_MS", "30")
RATE = os.environ.get("WAN_RATE", "25000000")
IMAGES_DIR = os.environ["FLEET_IMAGES"]
BUDGET = os.environ.get("FLEET_CPU_BUDGET")
SHAPES = {
    "big": os.environ.get("FLEET_BIG", "1x209715200"),
    "many": os.environ.get("FLEET_MANY", "100x2097152"),
    "factored": os.environ.get("FLEET_FACTORED", "40x524288"),
}
LOGS = os.path.join(WORK, "logs")
children = []


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"\nfleet bench: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def free_addr(ip):
    s = socket.socket()
    s.bind((ip, 0))
    addr = "%s:%d" % s.getsockname()
    s.close()
    return addr


def spawn(args, name, cgroup=None, **kw):
    out = open(os.path.join(LOGS, name + ".out"), "wb")
    err = open(os.path.join(LOGS, name + ".err"), "wb")
    if cgroup is not None:
        def enter():  # the node's cgroup, before it runs anything
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        kw["preexec_fn"] = enter
    p = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **kw)
    p.name = name
    children.append(p)
    return p


# ---------------------------------------------------------------- CPU budgets
CGROUP_V1 = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"
cgroups = []


def node_cgroup(i):
    """Node i's cgroup with FLEET_CPU_BUDGET cores, or None without a budget."""
    if not BUDGET:
        return None
    if os.path.isfile(os.path.join(CGROUP_V1, "cpu.cfs_quota_us")):
        path = os.path.join(CGROUP_V1, "stowage-fleet", f"node{i}")
        os.makedirs(path, exist_ok=True)
        period = int(open(os.path.join(path, "cpu.cfs_period_us")).read())
        open(os.path.join(path, "cpu.cfs_quota_us"), "w").write(str(int(float(BUDGET) * period)))
    elif "cpu" in open(os.path.join(CGROUP_V2, "cgroup.controllers")).read().split():
        top = os.path.join(CGROUP_V2, "stowage-fleet")
        os.makedirs(top, exist_ok=True)
        open(os.path.join(CGROUP_V2, "cgroup.subtree_control"), "w").write("+cpu")
        open(os.path.join(top, "cgroup.subtree_control"), "w").write("+cpu")
        path = os.path.join(top, f"node{i}")
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "cpu.max"), "w").write(f"{int(float(BUDGET) * 100000)} 100000")
    else:
        die("FLEET_CPU_BUDGET needs the cgroup cpu controller (v1 at /sys/fs/cgroup/cpu, or v2)")
    if path not in cgroups:
        cgroups.append(path)
    return path


def remove_cgroups():
    for path in reversed(cgroups):
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.1)  # its last processes are still exiting
    for top in (os.path.join(CGROUP_V1, "stowage-fleet"), os.path.join(CGROUP_V2, "stowage-fleet")):
        if os.path.isdir(top):
            try:
                os.rmdir(top)
            except OSError:
                pass


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_v2(addr):
    for _ in range(200):
        r = subprocess.run(["curl", "-fs", f"http://{addr}/v2/"], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    die(f"nothing answers on {addr}")


def run(args, what):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{what}: {' '.join(args)}\n{r.stderr[-3000:]}")
    return r.stdout


# ---------------------------------------------------------------- images
def layout(name):
    n, size = SHAPES[name].split("x")
    path = os.path.join(IMAGES_DIR, f"fleet-{name}-{n}x{size}")
    if not os.path.isfile(os.path.join(path, "index.json")):
        log(f"generating {name}: {n} layers of {size} bytes")
        run(["python3", f"{REPO}/benches/make_images.py", path, n, size], "make_images")
    return path


def blobs_of(path):
    index = json.load(open(os.path.join(path, "index.json")))
    digest = index["manifests"][0]["digest"]
    manifest = json.load(open(os.path.join(path, "blobs/sha256", digest.split(":")[1])))
    return [manifest["config"]] + manifest["layers"]


# ---------------------------------------------------------------- the upstream
ACCESS = os.path.join(LOGS, "upstream-access.log")
LINE = re.compile(r'"(GET|HEAD) (\S+) [^"]*" (\d+) (\d+|-)')


def settle():
    """The registry logs a response once its body is out: wait until the log is still."""
    b = os.path.getsize(ACCESS)
    while True:
        time.sleep(0.3)
        a, b = b, os.path.getsize(ACCESS)
        if a == b:
            return b


def blob_bytes_since(offset):
    total, gets = 0, 0
    with open(ACCESS, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            m = LINE.search(line)
            if m and m.group(1) == "GET" and "/blobs/" in m.group(2) and m.group(4) != "-":
                total += int(m.group(4))
                gets += 1
    return total, gets


def registry(name, addr, extra=""):
    cfg = os.path.join(WORK, f"{name}.yml")
    with open(cfg, "w") as f:
        f.write(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {WORK}/{name}-data}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {addr}}}\n{extra}"
        )
    out = open(ACCESS if name == "upstream" else os.path.join(LOGS, f"{name}-access.log"), "ab")
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=out,
                         stderr=open(os.path.join(LOGS, f"{name}.err"), "ab"))
    children.append(p)
    wait_v2(addr)
    return p


def faultproxy(upstream, listen, name, *flags):
    p = spawn([FAULTPROXY, "--upstream", upstream, "--listen", listen, *flags], name)
    for _ in range(200):
        text = open(os.path.join(LOGS, name + ".out")).read()
        if "listening on " in text:
            return p, text.split("listening on ")[1].split()[0]
        if p.poll() is not None:
            break
        time.sleep(0.05)
    die(f"faultproxy {name} did not start")


# ---------------------------------------------------------------- rendezvous
def weight(peer, digest):
    return int(hashlib.sha256(f"{peer}\n{digest}".encode()).hexdigest()[:16], 16)


def owner(peers, digest):
    return max(peers, key=lambda p: weight(p, digest))


# ---------------------------------------------------------------- scenarios
def node_addrs(n):
    return [free_addr(f"127.0.0.{i + 2}") for i in range(n)]


def fresh_store(tag, i):
    path = os.path.join(WORK, "stores", f"{tag}{i}")
    subprocess.run(["rm", "-rf", path])
    return path


def finish(syncs, started, deadline, kill_at=None, on_kill=None):
    """Waits for every sync; returns {name: (rc, seconds)}."""
    done = {}
    while len(done) < len(syncs):
        now = time.monotonic()
        if kill_at is not None and now - started >= kill_at:
            on_kill()
            kill_at = None
        for p in syncs:
            if p.name not in done and p.poll() is not None:
                done[p.name] = (p.returncode, time.monotonic() - started)
        if now > deadline:
            for p in syncs:
                if p.poll() is None:
                    p.kill()
            die(f"a scenario passed FLEET_TIMEOUT ({TIMEOUT} s)")
        time.sleep(0.02)
    return done


def scenario(tag, lockfile, peers=False, n=NODES, liar=None, kill=None, kill_at=None):
    """Runs one scenario; returns its measurements."""
    offset = settle()
    subprocess.run(["sync"])
    addrs = node_addrs(n) if peers else [None] * n
    stores = [fresh_store(tag, i) for i in range(n)]
    serves, fronts = [], []
    if peers:
        for i, addr in enumerate(addrs):
            listen = addr
            if liar is not None and i == liar(addrs):
                listen = free_addr(addr.rsplit(":", 1)[0])
            serves.append(spawn([STOWAGE, "--store", stores[i], "serve", "--addr", listen,
                                 "--upstream", f"http://{PROXY}"], f"{tag}-serve{i}",
                                cgroup=node_cgroup(i)))
            if listen != addr:
                wait_v2(listen)
                fronts.append(faultproxy(listen, addr, f"{tag}-liar",
                                         "--corrupt-blob-at", "1000")[0])
        for addr in addrs:
            wait_v2(addr)
    peer_list = ",".join(a for a in addrs if a)
    started = time.monotonic()
    syncs = []
    for i in range(n):
        args = [STOWAGE, "--store", stores[i], "sync", lockfile]
        if peers:
            args += ["--peers", peer_list, "--self", addrs[i]]
        syncs.append(spawn(args, f"{tag}-sync{i}", cgroup=node_cgroup(i)))
    dead = kill(addrs) if kill else []

    def on_kill():
        for i in dead:
            serves[i].kill()
            syncs[i].kill()
        log(f"{tag}: killed nodes {dead} at {time.monotonic() - started:.1f} s")

    done = finish(syncs, started, started + TIMEOUT, kill_at, on_kill if dead else None)
    alive = [i for i in range(n) if i not in dead]
    failed = [i for i in alive if done[f"{tag}-sync{i}"][0] != 0]
    for i in failed:
        log(f"{tag}: node {i} failed: see {LOGS}/{tag}-sync{i}.err")
    last = max(done[f"{tag}-sync{i}"][1] for i in alive)
    named = 0
    if liar is not None:
        liar_addr = addrs[liar(addrs)]
        for i in alive:
            err = open(os.path.join(LOGS, f"{tag}-sync{i}.err")).read()
            named += "do not match" in err and liar_addr in err
    for p in serves + fronts:
        stop(p)
    verified = 0
    for i in alive:
        ok_lock = subprocess.run([STOWAGE, "--store", stores[i], "-q", "verify", "--lock", lockfile],
                                 capture_output=True).returncode == 0
        ok_all = subprocess.run([STOWAGE, "--store", stores[i], "-q", "verify"],
                                capture_output=True).returncode == 0
        verified += ok_lock and ok_all
    settle()
    up, gets = blob_bytes_since(offset)
    for s in stores:
        subprocess.run(["rm", "-rf", s])
    result = {"tag": tag, "nodes": n, "alive": len(alive), "failed": len(failed),
              "last": last, "bytes": up, "gets": gets, "verified": verified, "named": named}
    log(f"{tag}: {json.dumps(result)}")
    return result


def floor_scenario(paths, n=NODES):
    """16 nodes importing the image set from local layouts at once (see the docs)."""
    subprocess.run(["sync"])
    stores = [fresh_store("floor", i) for i in range(n)]
    started = time.monotonic()
    imports = []
    for i in range(n):
        steps = [f"{shlex.quote(STOWAGE)} --store {shlex.quote(stores[i])} -q import {shlex.quote(p)}"
                 for p in paths]
        imports.append(spawn(["sh", "-c", " && ".join(steps)], f"floor-import{i}",
                             cgroup=node_cgroup(i)))
    done = finish(imports, started, started + TIMEOUT)
    failed = [name for name, (rc, _) in done.items() if rc != 0]
    if failed:
        die(f"floor: {failed} failed (see {LOGS})")
    last = max(t for _, t in done.values())
    for s in stores:
        subprocess.run(["rm", "-rf", s])
    result = {"tag": "floor", "nodes": n, "alive": n, "failed": 0, "last": last,
              "bytes": 0, "gets": 0, "verified": n, "named": 0}
    log(f"floor: {json.dumps(result)}")
    return result


# ---------------------------------------------------------------- main
os.makedirs(LOGS, exist_ok=True)
try:
    layouts = {name: layout(name) for name in SHAPES}
    blobs = {}
    for path in layouts.values():
        for b in blobs_of(path):
            blobs[b["digest"]] = b["size"]
    set_bytes = sum(blobs.values())
    big_layer = blobs_of(layouts["big"])[1]["digest"]

    UPSTREAM = free_addr("127.0.0.1")
    registry("upstream", UPSTREAM)
    for name, path in layouts.items():
        log(f"pushing {name}")
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{path}:1",
             f"docker://{UPSTREAM}/fleet/{name}:1"], "skopeo copy")
    _, PROXY = faultproxy(UPSTREAM, "127.0.0.1:0", "wan", "--delay-ms", DELAY_MS, "--rate", RATE)
    CACHE = free_addr("127.0.0.1")
    registry("cache", CACHE, f"proxy: {{remoteurl: http://{PROXY}}}\n")

    def lock(host, name):
        path = os.path.join(WORK, name)
        run([STOWAGE, "--store", os.path.join(WORK, "lock-store"), "-q", "lock",
             *[f"{host}/fleet/{n}:1" for n in SHAPES], "-o", path], "stowage lock")
        return path

    lock_up = lock(PROXY, "upstream.lock")
    lock_cache = lock(CACHE, "cache.lock")
    log(f"image set: {len(blobs)} blobs, {set_bytes} bytes; {NODES} nodes")

    big_owner = lambda addrs: addrs.index(owner(addrs, big_layer))
    results = [scenario("alone", lock_up, n=1), floor_scenario(list(layouts.values()))]
    alone, floor = results[0]["last"], results[1]["last"]
    results.append(scenario("peers", lock_up, peers=True))
    results.append(scenario("direct", lock_up))
    results.append(scenario("cache", lock_cache))
    results.append(scenario("killed", lock_up, peers=True,
                            kill=lambda a: [big_owner(a), (big_owner(a) + NODES // 2) % NODES],
                            kill_at=0.4 * results[2]["last"]))
    results.append(scenario("liar", lock_up, peers=True, liar=big_owner))
finally:
    for p in reversed(children):
        stop(p)
    remove_cgroups()

rows = {
    "alone": ("one node alone, `sync` from upstream", "reference"),
    "floor": ("16 nodes `import` from local layouts, no network (this machine's floor)", ""),
    "peers": ("stowage peers (`serve --upstream` + `sync --peers`)", "≤ 1.1×, ≤ 2×"),
    "direct": ("every node `sync` from upstream directly", "(16×)"),
    "cache": ("docker-registry pull-through cache in front", ""),
    "killed": ("peers, two nodes SIGKILLed mid-warm", "≤ 1.3×, others complete"),
    "liar": ("peers, the big layer's owner flips a byte", "detected, nothing corrupt"),
}
mib = lambda b: b / (1 << 20)
with open(REPORT, "w") as out:
    def say(line=""):
        print(line)
        out.write(line + "\n")

    load = open("/proc/loadavg").read().split()[:3]
    shapes = ", ".join(f"{k} {v.replace('x', ' x ')} B" for k, v in SHAPES.items())
    say("# stowage fleet benchmark")
    say()
    say(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
        f"load average at the end: {' '.join(load)}; one run")
    say(f"- {NODES} nodes on 127.0.0.2-{NODES + 1}; image set {len(blobs)} blobs, "
        f"{mib(set_bytes):.0f} MiB ({shapes}); upstream behind stowage-faultproxy "
        f"--delay-ms {DELAY_MS} --rate {RATE}")
    budget = (f"each node's processes in a cgroup of {BUDGET} cores (one node alone too)"
              if BUDGET else "the nodes share the machine's cores")
    say(f"- CPU: {budget}")
    say(f"- mode: {os.environ.get('FLEET_MODE', 'full')}; stowage binary: "
        f"{os.environ.get('FLEET_BINARY', STOWAGE)}")
    say()
    say("| scenario | upstream blob bytes / image set | blob GETs | last node done | / one node alone | / floor | nodes complete, verified | goal |")
    say("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        what, goal = rows[r["tag"]]
        extra = f"; liar named by {r['named']}" if r["tag"] == "liar" else ""
        say(f"| {what} | {r['bytes'] / set_bytes:.2f}× | {r['gets']} | {r['last']:.1f} s | "
            f"{r['last'] / alone:.2f}× | {r['last'] / floor:.2f}× | {r['alive'] - r['failed']}/{r['alive']}, "
            f"{r['verified']}/{r['alive']}{extra} | {goal} |")
