#!/usr/bin/env python3
"""Build a benchmark image as an OCI image layout, fast.

    make_images.py OUT_DIR LAYERS LAYER_BYTES

Each layer is a valid gzip'd tar holding one file of incompressible random bytes
(gzip at level 0: stored deflate blocks, so building 800 MB costs about as much as
hashing it, and docker/podman can still extract it). The config carries the
matching diff_ids; the manifest is an OCI image manifest; index.json tags it "1".

Everything is streamed in 1 MiB chunks, so memory stays small whatever the size.
The layout is written to OUT_DIR.tmp and renamed to OUT_DIR only when complete, so
a cached OUT_DIR is always whole. Prints the manifest digest.
"""

import hashlib
import json
import os
import sys
import tarfile
import zlib

CHUNK = 1 << 20


class RandomReader:
    """A file-like source of `size` random bytes."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return os.urandom(n) if n else b""


class LayerWriter:
    """Takes the tar stream: hashes it (diff_id), gzips it, hashes and writes that."""

    def __init__(self, path, level=0):
        self.out = open(path, "wb")
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.size = 0
        # wbits 31: a gzip header and trailer; level 0 (the default): stored blocks.
        self.gz = zlib.compressobj(level, zlib.DEFLATED, 31)

    def _emit(self, data):
        if data:
            self.blob.update(data)
            self.out.write(data)
            self.size += len(data)

    def write(self, data):
        self.diff.update(data)
        self._emit(self.gz.compress(data))
        return len(data)

    def close(self):
        self._emit(self.gz.flush())
        self.out.close()


def write_blob(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as f:
        f.write(data)
    return hexd


def main():
    out, layers, layer_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tmp = out + ".tmp"
    if os.path.exists(tmp):
        for root, dirs, files in os.walk(tmp, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(tmp)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)

    layer_descs, diff_ids = [], []
    for i in range(layers):
        part = os.path.join(blobs, "layer.partial")
        w = LayerWriter(part)
        # tarfile writes the 512-byte header, the data, padding and the end blocks.
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT,
                          bufsize=CHUNK) as tar:
            info = tarfile.TarInfo(f"bench/layer-{i:03d}.bin")
            info.size = layer_bytes
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, RandomReader(layer_bytes))
        w.close()
        hexd = w.blob.hexdigest()
        os.rename(part, os.path.join(blobs, hexd))
        diff_ids.append("sha256:" + w.diff.hexdigest())
        layer_descs.append({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + hexd,
            "size": w.size,
        })

    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z",
                     "created_by": f"stowage bench layer {i}"} for i in range(layers)],
    }, separators=(",", ":")).encode()
    config_hex = write_blob(blobs, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + config_hex,
            "size": len(config),
        },
        "layers": layer_descs,
    }, separators=(",", ":")).encode()
    manifest_hex = write_blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + manifest_hex,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    }
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    os.rename(tmp, out)
    print("sha256:" + manifest_hex)


if __name__ == "__main__":
    main()
