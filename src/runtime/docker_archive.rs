//! The docker-archive format, as `docker load` reads it: `manifest.json`, the config
//! as `<hex>.json` and one `<diff_id hex>/layer.tar` per layer. Docker 20.10 inflates
//! gzip, bzip2 and xz layer files itself but not zstd ("archive/tar: invalid tar
//! header"), so see [`write_docker_archive`] for how layers are written.

use std::collections::HashSet;
use std::io::{Read, Write};

use serde_json::json;

use super::archive::LoadArchiveError;
use super::StoredImage;
use crate::oci::layers::Compression;
use crate::oci::tar_entry::{self, Counting};
use crate::store::{Descriptor, Digest, Hasher, Store};

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
) -> Result<u64, LoadArchiveError> {
    let plan = docker_layers(store, image)?;
    let mut builder = tar::Builder::new(Counting::new(out));
    let result = docker_entries(&mut builder, store, image, name, &plan);
    let counted = tar_entry::finish(builder, result, LoadArchiveError::Write)?;
    Ok(counted.count)
}

/// Plans every layer, running the zstd layers' counting passes.
fn docker_layers(store: &Store, image: &StoredImage) -> Result<Vec<DockerLayer>, LoadArchiveError> {
    image
        .layers
        .iter()
        .zip(&image.diff_ids)
        .map(|(layer, diff_id)| {
            let media_type = layer.media_type().to_string();
            let compression =
                Compression::of(&media_type).ok_or_else(|| LoadArchiveError::Unsupported {
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
) -> Result<u64, LoadArchiveError> {
    let fail = |source| LoadArchiveError::Layer {
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
        return Err(LoadArchiveError::DiffId {
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
) -> Result<(), LoadArchiveError> {
    let config_path = format!("{}.json", image.config.digest().digest());
    let layers: Vec<&str> = plan.iter().map(|l| l.path.as_str()).collect();
    let manifest = json!([{ "Config": config_path, "RepoTags": [name], "Layers": layers }]);
    let manifest = serde_json::to_vec(&manifest).expect("JSON");
    file(
        builder,
        "manifest.json",
        manifest.len() as u64,
        &manifest[..],
        "manifest.json",
    )?;
    let config = &image.config_bytes[..];
    file(
        builder,
        &config_path,
        config.len() as u64,
        config,
        &config_path,
    )?;
    let mut written = HashSet::new();
    for layer in plan {
        if !written.insert(layer.path.as_str()) {
            continue; // the same layer twice: one file serves both
        }
        let folder = layer.path.trim_end_matches("layer.tar");
        tar_entry::append_dir(builder, folder).map_err(|source| LoadArchiveError::Entry {
            path: folder.to_string(),
            source,
        })?;
        let digest = layer.descriptor.digest();
        let blob = store.open_blob(digest)?;
        if layer.decompress {
            let decoder =
                Compression::Zstd
                    .decoder(blob)
                    .map_err(|source| LoadArchiveError::Layer {
                        digest: digest.to_string(),
                        source,
                    })?;
            let what = format!("layer {digest} decompressed");
            file(builder, &layer.path, layer.size, decoder, what)?;
        } else {
            let what = format!("stored blob {digest}");
            file(builder, &layer.path, layer.size, blob, what)?;
        }
    }
    Ok(())
}

fn file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    source: impl Read,
    what: impl std::fmt::Display,
) -> Result<(), LoadArchiveError> {
    tar_entry::append_file(builder, path, size, source, what).map_err(|source| {
        LoadArchiveError::Entry {
            path: path.to_string(),
            source,
        }
    })
}
