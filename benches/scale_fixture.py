#!/usr/bin/env python3
"""Fixtures and the serve client for benches/scale.sh (issue 16).

  scale_fixture.py push HOST:PORT N [distinct]
      Build one tiny OCI image by hand (a one-file gzip layer, its config, an OCI
      manifest for this machine's platform), push it once to scale/r00000:1, then
      mount its two blobs into scale/r00001 .. scale/r{N-1} and PUT the same manifest
      under :1 in each: 3 requests per repository, all over one keep-alive
      connection. With `distinct`, tag :d instead, each repository's image with its
      own config (a label naming the repository), so its own manifest: the layer is
      mounted, the config uploaded (4 requests a repository). The repositories
      already tagged (a prefix, found by bisection) are skipped, so a fixture can be
      grown. Prints the (first) manifest digest.

  scale_fixture.py get COUNT SEED N [distinct] NAME=HOST:PORT...
      COUNT manifest GETs by tag of random repositories among the first N, from one
      keep-alive connection per server, the servers interleaved request by request
      (same repository sequence for each); 50 untimed warm-up requests first. Each
      answer must be 200 with the pushed manifest's digest. Prints one line per
      server: NAME p50_ms p99_ms mean_ms.

  scale_fixture.py store DIR BLOBS
      Write a stowage store (an OCI image layout, as stowage lays one out) straight
      to DIR, which must not exist or be empty: about 1% of BLOBS unreferenced
      blobs, and the rest as images of three blobs each, every one its own (a layer
      of a few hundred distinct bytes, media type ...layer.v1.tar but not a real
      tar; a config whose rootfs.diff_ids names that layer; an OCI manifest), tagged
      bench.example/scale/rNNNNN:1 in index.json. Blobs are written 0444, without
      fsync. Prints a JSON summary (images, blobs, unreferenced, bytes, one layer's
      digest to corrupt, seconds).

  scale_fixture.py check WHAT SUMMARY OUTPUT
      Whether OUTPUT, the --json answer of `stowage WHAT` (ls, du, gc, verify, or
      corrupt: verify after that one layer blob had a byte flipped) on a store
      `store` built, says what SUMMARY (the store's printed summary) implies. Prints
      what is wrong and exits 1, or prints nothing.
"""
import os
import gzip
import hashlib
import http.client
import io
import json
import platform
import random
import sys
import tarfile
import time
import urllib.parse

REPO_FMT = "scale/r{:05d}"
TAGS = {False: "1", True: "d"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.docker.distribution.manifest.v2+json",
])


def die(msg):
    print(f"scale_fixture: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def goarch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def image(repo_index=None):
    """(layer, config, manifest) bytes of a deterministic one-file image; with
    repo_index, its config (so its manifest) is that repository's own."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = b"hello from the scale benchmark\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    diff = tar_buf.getvalue()
    layer = gzip.compress(diff, mtime=0)
    config = json.dumps({
        "architecture": goarch(),
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]} if repo_index is None else
                  {"Cmd": ["/hello.txt"], "Labels": {"scale.repo": str(repo_index)}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(diff)]},
        "history": [{"created_by": "benches/scale_fixture.py"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer), "size": len(layer)}],
    }, sort_keys=True, separators=(",", ":")).encode()
    return layer, config, manifest


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects once if the server closed it."""

    def __init__(self, addr):
        self.addr = addr
        self.c = http.client.HTTPConnection(addr, timeout=60)

    def req(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                return r.status, r.headers, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection(self.addr, timeout=60)


def upload(conn, repo, blob):
    d = sha256(blob)
    st, _, _ = conn.req("HEAD", f"/v2/{repo}/blobs/{d}")
    if st == 200:
        return
    st, h, body = conn.req("POST", f"/v2/{repo}/blobs/uploads/")
    if st != 202:
        die(f"POST upload {repo}: {st} {body[:200]!r}")
    loc = urllib.parse.urlsplit(h["Location"])
    q = loc.query + ("&" if loc.query else "") + "digest=" + urllib.parse.quote(d)
    st, _, body = conn.req("PUT", f"{loc.path}?{q}", body=blob,
                           headers={"Content-Type": "application/octet-stream"})
    if st != 201:
        die(f"PUT blob {repo}: {st} {body[:200]!r}")


def push(addr, n, distinct):
    TAG = TAGS[distinct]
    layer, config, manifest = image(0 if distinct else None)
    mdigest = sha256(manifest)
    conn = Conn(addr)
    t0 = time.monotonic()
    base = REPO_FMT.format(0)
    upload(conn, base, layer)
    upload(conn, base, config)
    mhead = {"Content-Type": OCI_MANIFEST}

    def tagged(i):
        want = sha256(image(i)[2]) if distinct else mdigest
        st, h, _ = conn.req("HEAD", f"/v2/{REPO_FMT.format(i)}/manifests/{TAG}",
                            headers={"Accept": ACCEPT})
        return st == 200 and h.get("Docker-Content-Digest") == want

    # Repositories are tagged in order, so the ones already there are a prefix: find
    # its end by bisection rather than asking for each.
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if tagged(mid):
            lo = mid + 1
        else:
            hi = mid
    skipped, done = lo, 0
    for i in range(lo, n):
        repo = REPO_FMT.format(i)
        if distinct:
            _, config, manifest = image(i)
            if i:
                upload(conn, repo, config)
        if i:
            for blob in (layer,) if distinct else (layer, config):
                d = sha256(blob)
                st, _, body = conn.req(
                    "POST", f"/v2/{repo}/blobs/uploads/?mount={urllib.parse.quote(d)}&from={base}")
                if st != 201:
                    die(f"mount {d} into {repo}: {st} {body[:200]!r}")
        st, _, body = conn.req("PUT", f"/v2/{repo}/manifests/{TAG}", body=manifest, headers=mhead)
        if st != 201:
            die(f"PUT manifest {repo}: {st} {body[:200]!r}")
        done += 1
    print(f"scale_fixture: {done} repositories tagged, {skipped} already there, "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(mdigest)


def pct(sorted_ms, p):
    # nearest-rank percentile
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def get(count, seed, n, distinct, servers):
    TAG = TAGS[distinct]
    shared = sha256(image()[2])
    rng = random.Random(seed)
    conns = [(name, Conn(addr)) for name, addr in servers]
    times = {name: [] for name, _ in servers}
    for i in range(50 + count):
        i = rng.randrange(n)
        path = f"/v2/{REPO_FMT.format(i)}/manifests/{TAG}"
        mdigest = sha256(image(i)[2]) if distinct else shared
        for name, conn in conns:
            t0 = time.perf_counter()
            st, h, body = conn.req("GET", path, headers={"Accept": ACCEPT})
            dt = (time.perf_counter() - t0) * 1000
            if st != 200 or sha256(body) != mdigest:
                die(f"{name}: GET {path}: {st}, {len(body)} bytes {body[:200]!r}")
            if i >= 50:
                times[name].append(dt)
    for name, _ in servers:
        t = sorted(times[name])
        print(f"{name} {pct(t, 50):.3f} {pct(t, 99):.3f} {sum(t) / len(t):.3f}")


STORE_REF_FMT = "bench.example/scale/r{:05d}:1"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def store_layer(i):
    """A few hundred bytes of layer content of image i (distinct per image)."""
    line = f"stowage scale store fixture, image {i:07d}\n".encode()
    return line * (320 // len(line))


def store(root, blobs):
    t0 = time.monotonic()
    unreferenced = max(1, blobs // 100)
    images = (blobs - unreferenced) // 3
    if images < 1:
        die(f"store: {blobs} blobs is too few (at least 4: one image and one unreferenced blob)")
    unreferenced = blobs - 3 * images
    if os.path.exists(root) and os.listdir(root):
        die(f"store: {root} exists and is not empty")
    bdir = os.path.join(root, "blobs", "sha256")
    for d in (bdir, os.path.join(root, "ingest"), os.path.join(root, "stowage")):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    os.umask(0o022)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    total = 0

    def put(b):
        nonlocal total
        h = hashlib.sha256(b).hexdigest()
        fd = os.open(os.path.join(bdir, h), flags, 0o444)
        try:
            os.write(fd, b)
        finally:
            os.close(fd)
        total += len(b)
        return {"digest": "sha256:" + h, "size": len(b)}

    arch = goarch()
    entries = []
    victim = None
    for i in range(images):
        layer = put(store_layer(i))
        config = put(json.dumps({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"], "Labels": {"scale.image": str(i)}},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "history": [{"created_by": "benches/scale_fixture.py store"}],
        }, sort_keys=True, separators=(",", ":")).encode())
        manifest = put(json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }, sort_keys=True, separators=(",", ":")).encode())
        entries.append({"mediaType": OCI_MANIFEST, **manifest,
                        "annotations": {"org.opencontainers.image.ref.name": STORE_REF_FMT.format(i)}})
        if i == images // 2:
            victim = layer["digest"]
    for j in range(unreferenced):
        put(f"stowage scale store fixture: unreferenced blob {j:07d}\n".encode() * 8)
    index = os.path.join(root, "index.json")
    with open(index + ".tmp", "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, f, indent=2)
    os.rename(index + ".tmp", index)
    print(json.dumps({"images": images, "blobs": 3 * images + unreferenced,
                      "unreferenced": unreferenced, "bytes": total, "layer": victim,
                      "seconds": round(time.monotonic() - t0, 2)}))


def check(what, summary_file, output_file):
    with open(summary_file) as f:
        want = json.load(f)
    try:
        with open(output_file) as f:
            got = json.load(f)
    except (OSError, ValueError) as e:
        die(f"check {what}: no JSON answer ({e})")
    images, blobs, unref = want["images"], want["blobs"], want["unreferenced"]
    problems = []

    def expect(what_, actual, expected):
        if actual != expected:
            problems.append(f"{what_} {actual!r}, expected {expected!r}")

    if what == "ls":
        names = {r.get("name") for r in got}
        expect("refs listed", len(got), images)
        expect("distinct names", len(names), images)
        for i in (0, images - 1):
            if STORE_REF_FMT.format(i) not in names:
                problems.append(f"{STORE_REF_FMT.format(i)} not listed")
    elif what == "du":
        expect("refs", got.get("refs"), images)
        expect("blobs", got.get("blobs"), blobs)
        expect("blob_bytes", got.get("blob_bytes"), want["bytes"])
    elif what == "gc":
        expect("dry_run", got.get("dry_run"), True)
        expect("blobs it would remove", len(got.get("removed", [])), unref)
        expect("kept", got.get("kept"), blobs - unref)
    elif what == "verify":
        expect("checked", got.get("checked"), blobs)
        expect("bytes", got.get("bytes"), want["bytes"])
        expect("corrupt", got.get("corrupt"), [])
        expect("missing", got.get("missing"), [])
    elif what == "corrupt":
        expect("checked", got.get("checked"), blobs)
        expect("corrupt digests", [c.get("digest") for c in got.get("corrupt", [])], [want["layer"]])
        expect("missing digests", [m.get("digest") for m in got.get("missing", [])], [want["layer"]])
    else:
        die(f"check: what is {what}?")
    if problems:
        print(f"`{what}`: " + "; ".join(problems))
        sys.exit(1)


def main(argv):
    distinct = "distinct" in argv
    argv = [a for a in argv if a != "distinct"]
    if len(argv) == 3 and argv[0] == "push":
        push(argv[1], int(argv[2]), distinct)
    elif len(argv) == 3 and argv[0] == "store":
        store(argv[1], int(argv[2]))
    elif len(argv) == 4 and argv[0] == "check":
        check(argv[1], argv[2], argv[3])
    elif len(argv) >= 5 and argv[0] == "get":
        servers = [tuple(s.split("=", 1)) for s in argv[4:]]
        get(int(argv[1]), int(argv[2]), int(argv[3]), distinct, servers)
    else:
        die(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
