//! The archives a runtime's `load` reads, written from the store as one stream into
//! the runtime's stdin: no temporary copy of any layer, and memory that does not
//! grow with layer size (1 MiB buffers and a decoder's window).
//!
//! - **oci-archive** (podman): a tar of an OCI layout whose `index.json` lists the one
//!   manifest, named by the `org.opencontainers.image.ref.name` annotation. Every
//!   blob goes in as stored, zstd layers too; each is re-hashed on the way.
//! - **docker-archive** (docker): `manifest.json`, the config as `<hex>.json` and one
//!   `<diff_id hex>/layer.tar` per layer. Docker 20.10 inflates gzip, bzip2 and xz
//!   layer files itself but not zstd ("archive/tar: invalid tar header"), so see
//!   [`write_docker_archive`] for how layers are written.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use serde_json::json;

use super::StoredImage;
use crate::oci::layers::Compression;
use crate::store::{Descriptor, Digest, Hasher, Store, StoreError, REF_NAME_ANNOTATION};

/// Why an image could not be archived.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {digest}: media type {media_type} is not a tar layer docker can load")]
    Unsupported { digest: String, media_type: String },
    #[error("layer {digest}: uncompressed it hashes to {actual}, but the config lists {expected}")]
    DiffId {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("archive entry {path}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

/// Writes `image` as an oci-archive naming it `name`; returns the bytes written.
pub fn write_oci_archive(
    store: &Store,
    image: &StoredImage,
    name: &str,
    out: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    let mut counted = Counting {
        inner: out,
        bytes: 0,
    };
    let mut builder = tar::Builder::new(&mut counted);
    let result = oci_entries(&mut builder, store, image, name);
    finish(builder, result)?;
    Ok(counted.bytes)
}

fn oci_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    store: &Store,
    image: &StoredImage,
    name: &str,
) -> Result<(), ArchiveError> {
    small(builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut entry = image.manifest.clone();
    let mut annotations = entry.annotations().clone().unwrap_or_default();
    annotations.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
    entry.set_annotations(Some(annotations));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    });
    small(
        builder,
        "index.json",
        &serde_json::to_vec(&index).expect("JSON"),
    )?;
    dir(builder, "blobs/")?;
    let mut written = HashSet::new();
    for digest in [image.manifest.digest(), image.config.digest()] {
        let folder = format!("blobs/{}/", digest.algorithm());
        if written.insert(folder.clone()) {
            dir(builder, &folder)?;
        }
    }
    small(
        builder,
        &blob_path(image.manifest.digest()),
        &image.manifest_bytes,
    )?;
    small(
        builder,
        &blob_path(image.config.digest()),
        &image.config_bytes,
    )?;
    written.insert(blob_path(image.config.digest()));
    for layer in &image.layers {
        let folder = format!("blobs/{}/", layer.digest().algorithm());
        if written.insert(folder.clone()) {
            dir(builder, &folder)?;
        }
        let path = blob_path(layer.digest());
        if written.insert(path.clone()) {
            let blob = store.open_blob(layer.digest())?;
            stream(builder, &path, layer.size(), blob)?;
        }
    }
    Ok(())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

/// How one layer goes into a docker-archive.
struct DockerLayer {
    descriptor: Descriptor,
    /// `<diff_id hex>/layer.tar`.
    path: String,
    /// The entry's size: the blob's, or the uncompressed tar's.
    size: u64,
    /// Decompress while streaming (zstd), or stream the blob as stored.
    decompress: bool,
}

/// Writes `image` as a docker-archive tagged `name`; returns the bytes written.
///
/// A tar entry states its size before its data, and a compressed layer's
/// uncompressed size is known only once it has been decompressed. The answer here:
/// - **plain tar and gzip layers go in as stored**, their size known from the
///   manifest. Docker's loader inflates gzip layer files itself (as it does for
///   `docker save` archives of old engines) and checks each against its diff_id, so
///   a gzip layer costs stowage no decompression at all.
/// - **zstd layers are decompressed twice**: a first pass, before any byte is
///   written, counts the uncompressed bytes and checks they hash to the config's
///   diff_id; the second pass streams them into the entry, held to exactly that
///   length (a source that ends early or runs long fails the load). The cost is one
///   extra zstd decompression per layer (CPU only: zstd inflates at hundreds of MB/s
///   per core) and no disk: the alternative, a temporary uncompressed copy, would
///   cost the layer's full size on disk and twice its bytes in writes.
pub fn write_docker_archive(
    store: &Store,
    image: &StoredImage,
    name: &str,
    out: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    let plan = docker_layers(store, image)?;
    let mut counted = Counting {
        inner: out,
        bytes: 0,
    };
    let mut builder = tar::Builder::new(&mut counted);
    let result = docker_entries(&mut builder, store, image, name, &plan);
    finish(builder, result)?;
    Ok(counted.bytes)
}

/// Plans every layer, running the zstd layers' counting passes.
fn docker_layers(store: &Store, image: &StoredImage) -> Result<Vec<DockerLayer>, ArchiveError> {
    image
        .layers
        .iter()
        .zip(&image.diff_ids)
        .map(|(layer, diff_id)| {
            let media_type = layer.media_type().to_string();
            let compression =
                Compression::of(&media_type).ok_or_else(|| ArchiveError::Unsupported {
                    digest: layer.digest().to_string(),
                    media_type,
                })?;
            let decompress = compression == Compression::Zstd;
            let size = if decompress {
                uncompressed_size(store, layer, diff_id)?
            } else {
                layer.size()
            };
            Ok(DockerLayer {
                descriptor: layer.clone(),
                path: format!("{}/layer.tar", diff_id.digest()),
                size,
                decompress,
            })
        })
        .collect()
}

/// The first pass over a zstd layer: its uncompressed length, checked against the
/// diff_id (the compressed digest is checked on the way by the blob reader).
fn uncompressed_size(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<u64, ArchiveError> {
    let fail = |source| ArchiveError::Layer {
        digest: layer.digest().to_string(),
        source,
    };
    let started = std::time::Instant::now();
    let blob = store.open_blob(layer.digest())?;
    let mut decoder = Compression::Zstd.decoder(blob).map_err(fail)?;
    let mut hasher = Hasher::new(diff_id)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = decoder.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let actual = hasher.finish();
    if actual != *diff_id {
        return Err(ArchiveError::DiffId {
            digest: layer.digest().to_string(),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    tracing::debug!(
        layer = %layer.digest(),
        bytes = total,
        seconds = started.elapsed().as_secs_f64(),
        "zstd layer counted"
    );
    Ok(total)
}

fn docker_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    store: &Store,
    image: &StoredImage,
    name: &str,
    plan: &[DockerLayer],
) -> Result<(), ArchiveError> {
    let config_path = format!("{}.json", image.config.digest().digest());
    let layers: Vec<&str> = plan.iter().map(|l| l.path.as_str()).collect();
    let manifest = json!([{ "Config": config_path, "RepoTags": [name], "Layers": layers }]);
    small(
        builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("JSON"),
    )?;
    small(builder, &config_path, &image.config_bytes)?;
    let mut written = HashSet::new();
    for layer in plan {
        if !written.insert(layer.path.as_str()) {
            continue; // the same layer twice: one file serves both
        }
        let folder = layer.path.trim_end_matches("layer.tar");
        dir(builder, folder)?;
        let digest = layer.descriptor.digest();
        let blob = store.open_blob(digest)?;
        if layer.decompress {
            let decoder =
                Compression::Zstd
                    .decoder(blob)
                    .map_err(|source| ArchiveError::Layer {
                        digest: digest.to_string(),
                        source,
                    })?;
            stream(builder, &layer.path, layer.size, decoder)?;
        } else {
            stream(builder, &layer.path, layer.size, blob)?;
        }
    }
    Ok(())
}

/// Ends the archive, or on failure leaves it cut short: the builder's `Drop` would
/// write the end-of-archive marker and make a truncated stream look whole.
fn finish<W: Write>(
    builder: tar::Builder<W>,
    result: Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    match result {
        Ok(()) => builder.into_inner().map(drop).map_err(ArchiveError::Write),
        Err(e) => {
            std::mem::forget(builder);
            Err(e)
        }
    }
}

fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn dir<W: Write>(builder: &mut tar::Builder<W>, path: &str) -> Result<(), ArchiveError> {
    let mut header = header(0, tar::EntryType::Directory, 0o755);
    builder
        .append_data(&mut header, path, io::empty())
        .map_err(|source| ArchiveError::Entry {
            path: path.to_string(),
            source,
        })
}

fn small<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    stream(builder, path, data.len() as u64, data)
}

/// One file entry of exactly `size` bytes read from `source`.
fn stream<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    source: impl Read,
) -> Result<(), ArchiveError> {
    let mut header = header(size, tar::EntryType::Regular, 0o644);
    let exact = Exact {
        inner: source,
        remaining: size,
        size,
    };
    builder
        .append_data(&mut header, path, exact)
        .map_err(|source| ArchiveError::Entry {
            path: path.to_string(),
            source,
        })
}

/// Reads exactly `size` bytes and then requires the end of the source (where a
/// stored blob's reader checks its digest): a tar entry cannot be longer or shorter
/// than its header says.
struct Exact<R> {
    inner: R,
    remaining: u64,
    size: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut extra = [0u8; 1];
            return match self.inner.read(&mut extra)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("longer than the {} bytes announced", self.size),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "ended after {} of the {} bytes announced",
                    self.size - self.remaining,
                    self.size
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Counts the bytes written through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::Exact;
    use std::io::Read;

    fn read_exact_len(data: &[u8], size: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Exact {
            inner: data,
            remaining: size,
            size,
        }
        .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn an_entry_source_must_have_exactly_its_announced_length() {
        assert_eq!(read_exact_len(b"abcd", 4).unwrap(), b"abcd");
        let short = read_exact_len(b"abc", 4).unwrap_err();
        assert!(
            short.to_string().contains("ended after 3 of the 4"),
            "{short}"
        );
        let long = read_exact_len(b"abcde", 4).unwrap_err();
        assert!(long.to_string().contains("longer than the 4"), "{long}");
    }
}
