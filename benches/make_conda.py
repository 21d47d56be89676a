#!/usr/bin/env python3
"""Inputs for the factored-image benchmark (benches/factored.sh). Stdlib only.

    make_conda.py packages OUT_DIR IMAGES SHARED UNIQUE MEAN_BYTES
        Real conda packages (.tar.bz2: info/index.json, info/paths.json, info/files
        and the payload under lib/NAME/ and share/NAME/), SHARED used by every image
        plus UNIQUE per image, the image's own depending on shared ones (see
        dependencies()), and OUT_DIR/images.tsv: "IMAGE<TAB>pkg files..." per
        image. Payloads are seeded pseudo-random bytes (incompressible, so bytes on
        the wire measure honestly; seeded, so a rebuild gives the same packages and
        the same layer digests). Sizes vary around MEAN_BYTES (0.5x to 1.5x).
    make_conda.py base OUT_LAYOUT
        A one-layer OCI layout (tag "base") of /bin/busybox (busybox-static) with a
        few applet symlinks: the base every factored image starts from.
    make_conda.py flat ROOTFS CONFIG OUT_LAYOUT
        A one-layer OCI layout (tag "1") of the directory ROOTFS as one tar+gzip
        layer (sorted entries, owner 0, mtime 0, gzip level 6 as docker pushes), its
        config the image config CONFIG with rootfs.diff_ids replaced by the one layer.

Every layout is written to OUT.tmp and renamed when complete, so a cached one is whole.
"""

import bz2
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tarfile

# The pull benchmark's gzip layer writer and blob writer (same folder).
from make_images import LayerWriter, write_blob

CHUNK = 1 << 20


def fresh_tmp(out):
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


# ------------------------------------------------------------------ conda packages
def package_files(name, mean):
    """(path, bytes, mode) of one package's payload: a shared library, a data file
    and a small text file, sized from the name so every rebuild is identical."""
    rng = random.Random(name)
    total = mean // 2 + rng.randrange(mean)
    lib = total * 3 // 4
    return [
        (f"lib/{name}/lib{name}.so.1", rng.randbytes(lib), 0o755),
        (f"share/{name}/data.bin", rng.randbytes(total - lib), 0o644),
        (f"share/{name}/README", f"{name}: benchmark payload\n".encode(), 0o644),
    ]


def add(tar, path, data, mode):
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    info.mtime = 1700000000
    info.uid = info.gid = 1000
    info.uname = info.gname = "conda"
    tar.addfile(info, io.BytesIO(data))


def write_package(job):
    """Writes OUT_DIR/NAME-1.0-h0_0.tar.bz2 as conda-build lays one out; returns it."""
    out_dir, name, mean, depends = job
    files = package_files(name, mean)
    index = {"name": name, "version": "1.0", "build": "h0_0", "build_number": 0,
             "subdir": "linux-64", "depends": depends, "license": "MIT",
             "timestamp": 1700000000000}
    paths = {"paths": [{"_path": p, "path_type": "hardlink",
                        "sha256": hashlib.sha256(d).hexdigest(),
                        "size_in_bytes": len(d)} for p, d, _ in files],
             "paths_version": 1}
    info = [("info/index.json", json.dumps(index, indent=2).encode()),
            ("info/paths.json", json.dumps(paths, indent=2).encode()),
            ("info/files", "".join(p + "\n" for p, _, _ in files).encode())]
    path = os.path.join(out_dir, f"{name}-1.0-h0_0.tar.bz2")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p, d, m in files:
            add(tar, p, d, m)
        for p, d in info:
            add(tar, p, d, 0o664)
    with open(path + ".partial", "wb") as f:
        f.write(bz2.compress(raw.getvalue(), 9))
    os.rename(path + ".partial", path)
    return path


def dependencies(shared_names, image_names, own):
    """What each package depends on, as a real environment's do: a quarter of the
    shared packages depend on nothing (the C library shims, zlib, openssl of a real
    environment), the other shared ones on one of those, and each image's own
    packages on two shared ones. Names sort the other way round ("f01-own00" before
    "shared00"), so an order by name would put every image's own packages first."""
    leaves = shared_names[:max(1, len(shared_names) // 4)]
    depends = {n: [] for n in leaves}
    for j, n in enumerate(shared_names[len(leaves):]):
        depends[n] = [f"{leaves[j % len(leaves)]} >=1.0"]
    for img in image_names:
        for j, n in enumerate(own[img]):
            depends[n] = [f"{shared_names[j % len(shared_names)]} >=1.0",
                          f"{shared_names[-1 - j % len(shared_names)]}"]
    return depends


def packages(out, images, shared, unique, mean):
    tmp = fresh_tmp(out)
    shared_names = [f"shared{j:02d}" for j in range(shared)]
    image_names = [f"f{i:02d}" for i in range(1, images + 1)]
    own = {img: [f"{img}-own{j:02d}" for j in range(unique)] for img in image_names}
    names = shared_names + [n for img in image_names for n in own[img]]
    depends = dependencies(shared_names, image_names, own)
    # bzip2 is the slow part: one package per core at a time.
    jobs = [(tmp, n, mean, depends[n]) for n in names]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        files = dict(zip(names, pool.map(write_package, jobs)))
    with open(os.path.join(tmp, "images.tsv"), "w") as f:
        for img in image_names:
            pkgs = [os.path.join(out, os.path.basename(files[n])) for n in shared_names + own[img]]
            f.write("\t".join([img] + pkgs) + "\n")
    os.rename(tmp, out)


# ------------------------------------------------------------------ OCI layouts
def write_layout(out, tag, fill_tar, config):
    """An OCI layout at OUT: one gzip layer written by fill_tar(tar), config from the
    dict CONFIG (diff_ids filled in), an OCI manifest tagged TAG."""
    tmp = fresh_tmp(out)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    part = os.path.join(blobs, "layer.partial")
    w = LayerWriter(part, 6)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        fill_tar(tar)
    w.close()
    os.rename(part, os.path.join(blobs, w.blob.hexdigest()))
    config = dict(config)
    config["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + w.diff.hexdigest()]}
    config.pop("history", None)  # one layer now; the factored history would not match
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + write_blob(blobs, config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + w.blob.hexdigest(), "size": w.size}],
    }, separators=(",", ":")).encode()
    finish_layout(tmp, out, manifest, tag)


def finish_layout(tmp, out, manifest, tag):
    """Stores MANIFEST in the layout being written at TMP, tags it TAG in index.json,
    and renames the finished layout to OUT."""
    blobs = os.path.join(tmp, "blobs", "sha256")
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + write_blob(blobs, manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)


def normalise(info):
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def base(out):
    def fill(tar):
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        tar.add("/bin/busybox", "bin/busybox", filter=normalise)
        for applet in ["sh", "ls", "cat", "wc", "sha256sum"]:
            s = tarfile.TarInfo(f"bin/{applet}")
            s.type, s.linkname, s.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(s)

    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}}
    write_layout(out, "base", fill, config)


def flat(rootfs, config_path, out):
    with open(config_path) as f:
        config = json.load(f)

    def fill(tar):
        # tarfile.add recurses in sorted order; hard links inside ROOTFS stay links.
        for name in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, name), name, filter=normalise)

    write_layout(out, "1", fill, config)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "packages":
        packages(args[0], *map(int, args[1:5]))
    elif cmd == "base":
        base(args[0])
    elif cmd == "flat":
        flat(*args)
    else:
        sys.exit(f"make_conda.py: unknown command {cmd!r}")


if __name__ == "__main__":
    main()
