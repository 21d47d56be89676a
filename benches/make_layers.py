#!/usr/bin/env python3
"""The unpack benchmark's image (benches/local.sh), as an OCI image layout. Stdlib only.

    make_layers.py OUT_LAYOUT LAYERS FILES_PER_LAYER

LAYERS gzip layers (level 6, as docker pushes) of a tree like a distribution's: per
layer FILES_PER_LAYER files of 1 to 64 KiB under a few hundred directories, a few
big files of 8 MiB, symlinks and a hard link, and from the second layer on whiteouts
of some files and one opaque directory of the layer below. Contents are seeded
pseudo-random bytes made half compressible (runs of one byte), so gzip has work to
do as it does on real layers, and a rebuild gives the same digests. Tagged "1".
Written to OUT_LAYOUT.tmp and renamed when complete.
"""

import io
import json
import os
import random
import shutil
import sys
import tarfile

from make_conda import finish_layout
from make_images import LayerWriter, write_blob

CHUNK = 1 << 20


def content(rng, size):
    """Half random bytes, half runs: compresses to about 55%, like binaries do."""
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(256)
        out += bytes([rng.randrange(256)]) * 256
    return bytes(out[:size])


def add(tar, info, data=b""):
    info.mtime = 1700000000
    info.uid = info.gid = 0
    if info.isreg():
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def fill(tar, layer, files):
    rng = random.Random(f"layer{layer}")
    for d in range(files // 8):
        info = tarfile.TarInfo(f"usr/lib/l{layer}/d{d:03d}")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        add(tar, info)
    for f in range(files):
        info = tarfile.TarInfo(f"usr/lib/l{layer}/d{f % (files // 8):03d}/f{f:05d}.so")
        info.mode = 0o755 if f % 3 == 0 else 0o644
        add(tar, info, content(rng, rng.randrange(1024, 65536)))
    for b in range(2):
        info = tarfile.TarInfo(f"opt/l{layer}/big{b}.bin")
        info.mode = 0o644
        add(tar, info, content(rng, 8 << 20))
    for s in range(files // 16):
        info = tarfile.TarInfo(f"usr/lib/l{layer}/link{s:04d}.so")
        info.type, info.linkname = tarfile.SYMTYPE, f"d{s % (files // 8):03d}/f{s:05d}.so"
        add(tar, info)
    info = tarfile.TarInfo(f"opt/l{layer}/big0.hard")
    info.type, info.linkname = tarfile.LNKTYPE, f"opt/l{layer}/big0.bin"
    add(tar, info)
    if layer > 0:
        below = layer - 1
        for f in range(0, files, 10):  # a tenth of the files below are deleted
            d = f % (files // 8)
            info = tarfile.TarInfo(f"usr/lib/l{below}/d{d:03d}/.wh.f{f:05d}.so")
            info.mode = 0o600
            add(tar, info)
        info = tarfile.TarInfo(f"usr/lib/l{below}/d000/.wh..wh..opq")
        info.mode = 0o600
        add(tar, info)


def main():
    out, layers, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    descriptors, diff_ids = [], []
    for layer in range(layers):
        part = os.path.join(blobs, "layer.partial")
        w = LayerWriter(part, 6)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
            fill(tar, layer, files)
        w.close()
        os.rename(part, os.path.join(blobs, w.blob.hexdigest()))
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": "sha256:" + w.blob.hexdigest(), "size": w.size})
        diff_ids.append("sha256:" + w.diff.hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + write_blob(blobs, config), "size": len(config)},
        "layers": descriptors,
    }).encode()
    finish_layout(tmp, out, manifest, "1")

if __name__ == "__main__":
    main()
