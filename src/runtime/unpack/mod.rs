//! `unpack`: a stored image as a root filesystem in a directory, with no daemon, the
//! way the lazy-pulling snapshotters unpack. Layers are decoded on threads of their
//! own, a bounded number ahead of the one being applied ([`layer_stream`]), and
//! applied in manifest order with OCI whiteouts ([`apply`]). Each layer's
//! uncompressed digest is checked against the config's diff_id as it ends.
//!
//! The destination must be absent or an empty directory (a non-empty one could hold
//! symlinks planted to redirect the layers' writes). When anything fails, what was
//! unpacked is removed again: the directory is left as it was found.
//!
//! Owners: as root, files get the uids and gids the layers name; `rootless` gives
//! them all to the caller, makes no device nodes, and keeps the modes (set-id bits
//! too). Extended attributes are set where the filesystem and the caller's rights
//! allow, and counted where not.

mod apply;
mod layer_stream;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cap_std::fs::Dir;
use serde::Serialize;

use super::image::StoredImage;
use crate::oci::layers::Compression;
use crate::store::Store;
use apply::{Applied, EntryError, Owners, Root};

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Own every file as the caller, whatever the layers say (needed when not root).
    pub rootless: bool,
    /// Layers decoded at once, the one being applied included (at least 1).
    pub jobs: usize,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            rootless: false,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
        }
    }
}

/// One layer, unpacked.
#[derive(Debug, Clone, Serialize)]
pub struct UnpackedLayer {
    /// 1 for the bottom layer.
    pub index: usize,
    pub digest: String,
    /// Checked against the config's.
    pub diff_id: String,
    /// Uncompressed bytes.
    pub bytes: u64,
    pub entries: u64,
    pub whiteouts: u64,
    pub seconds: f64,
}

/// What an unpack did.
#[derive(Debug, Clone, Serialize)]
pub struct UnpackReport {
    pub reference: String,
    pub manifest_digest: String,
    pub destination: PathBuf,
    pub layers: Vec<UnpackedLayer>,
    /// Device nodes not made (rootless).
    pub devices_skipped: u64,
    /// Extended attributes not set (refused by the filesystem or for lack of rights).
    pub xattrs_skipped: u64,
    pub seconds: f64,
}

/// Why an image could not be unpacked. The destination is as it was found.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{} is not empty: unpack writes only into an empty or absent directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Destination {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("running as uid {uid}, unpack cannot give files the owners the layers name: run as root, or pass --rootless to own them yourself")]
    NeedsRoot { uid: u32 },
    #[error("layer {index} of {count} ({digest}): media type {media_type} is not a tar layer stowage can decompress")]
    Unsupported {
        index: usize,
        count: usize,
        digest: String,
        media_type: String,
    },
    #[error("layer {index} of {count} ({digest}): {source}")]
    Read {
        index: usize,
        count: usize,
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {index} of {count} ({digest}): its content has diff_id {found}, but the config lists {expected}")]
    DiffId {
        index: usize,
        count: usize,
        digest: String,
        expected: String,
        found: String,
    },
    #[error("layer {index} of {count} ({digest}): entry {path} leads outside the root ({detail}); nothing was written outside it")]
    Escape {
        index: usize,
        count: usize,
        digest: String,
        path: String,
        detail: String,
    },
    #[error("layer {index} of {count} ({digest}): entry {path}: {source}")]
    Entry {
        index: usize,
        count: usize,
        digest: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Unpacks `image` into `destination` (see the module docs); `on_layer` hears of each
/// layer as it is done.
pub fn unpack(
    store: &Store,
    image: &StoredImage,
    destination: &Path,
    options: &UnpackOptions,
    on_layer: &mut dyn FnMut(&UnpackedLayer),
) -> Result<UnpackReport, UnpackError> {
    let started = Instant::now();
    let owners = if options.rootless {
        Owners::Caller
    } else {
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Err(UnpackError::NeedsRoot { uid });
        }
        Owners::Keep
    };
    let count = image.layers.len();
    let mut compressions = Vec::with_capacity(count);
    for (i, layer) in image.layers.iter().enumerate() {
        let media_type = layer.media_type().to_string();
        compressions.push(Compression::of(&media_type).ok_or_else(|| {
            UnpackError::Unsupported {
                index: i + 1,
                count,
                digest: layer.digest().to_string(),
                media_type,
            }
        })?);
    }
    let created = prepare(destination)?;
    let dir =
        Dir::open_ambient_dir(destination, cap_std::ambient_authority()).map_err(|source| {
            UnpackError::Destination {
                path: destination.to_path_buf(),
                source,
            }
        })?;
    let mut root = Root::new(dir, owners);
    let result =
        apply_all(store, image, &compressions, options, &mut root, on_layer).and_then(|done| {
            root.finish().map_err(|source| UnpackError::Destination {
                path: destination.to_path_buf(),
                source,
            })?;
            Ok(done)
        });
    let (layers, applied) = match result {
        Ok(done) => done,
        Err(e) => {
            undo(destination, created);
            return Err(e);
        }
    };
    Ok(UnpackReport {
        reference: image.store_ref.clone(),
        manifest_digest: image.manifest.digest().to_string(),
        destination: destination.to_path_buf(),
        layers,
        devices_skipped: applied.devices_skipped,
        xattrs_skipped: applied.xattrs_skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Decodes up to `jobs` layers at once and applies them in order.
fn apply_all(
    store: &Store,
    image: &StoredImage,
    compressions: &[Compression],
    options: &UnpackOptions,
    root: &mut Root,
    on_layer: &mut dyn FnMut(&UnpackedLayer),
) -> Result<(Vec<UnpackedLayer>, Applied), UnpackError> {
    let count = image.layers.len();
    let jobs = options.jobs.max(1);
    let mut total = Applied::default();
    let mut done = Vec::with_capacity(count);
    std::thread::scope(|scope| {
        let mut pending = VecDeque::new();
        let mut next = 0;
        for (i, layer) in image.layers.iter().enumerate() {
            while next < count && next < i + jobs {
                let stream = layer_stream::spawn(
                    scope,
                    store,
                    image.layers[next].clone(),
                    compressions[next],
                );
                pending.push_back(stream);
                next += 1;
            }
            let started = Instant::now();
            let (index, digest) = (i + 1, layer.digest().to_string());
            let mut stream = pending
                .pop_front()
                .expect("this layer's decoder was started");
            let applied = root.apply(&mut stream).map_err(|e| match e {
                EntryError::Escape { path, detail } => UnpackError::Escape {
                    index,
                    count,
                    digest: digest.clone(),
                    path,
                    detail,
                },
                EntryError::Failed { path, source } => UnpackError::Entry {
                    index,
                    count,
                    digest: digest.clone(),
                    path,
                    source,
                },
            })?;
            let (diff_id, bytes) = stream.finish().map_err(|source| UnpackError::Read {
                index,
                count,
                digest: digest.clone(),
                source,
            })?;
            let expected = &image.diff_ids[i];
            if diff_id != *expected {
                return Err(UnpackError::DiffId {
                    index,
                    count,
                    digest,
                    expected: expected.to_string(),
                    found: diff_id.to_string(),
                });
            }
            total.devices_skipped += applied.devices_skipped;
            total.xattrs_skipped += applied.xattrs_skipped;
            let layer = UnpackedLayer {
                index,
                digest,
                diff_id: diff_id.to_string(),
                bytes,
                entries: applied.entries,
                whiteouts: applied.whiteouts,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_layer(&layer);
            done.push(layer);
        }
        Ok(())
    })?;
    Ok((done, total))
}

/// Makes sure `destination` is an empty directory; returns whether it was made here.
fn prepare(destination: &Path) -> Result<bool, UnpackError> {
    let failed = |source| UnpackError::Destination {
        path: destination.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(destination) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(destination).map_err(failed)?;
            if entries.next().is_some() {
                return Err(UnpackError::NotEmpty(destination.to_path_buf()));
            }
            Ok(false)
        }
        Ok(_) => Err(UnpackError::NotEmpty(destination.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(destination).map_err(failed)?;
            Ok(true)
        }
        Err(e) => Err(failed(e)),
    }
}

/// Removes what a failed unpack wrote: the directory if it was made here, else what
/// is in it.
fn undo(destination: &Path, created: bool) {
    let result = if created {
        std::fs::remove_dir_all(destination)
    } else {
        std::fs::read_dir(destination).and_then(|entries| {
            for entry in entries {
                let path = entry?.path();
                if std::fs::symlink_metadata(&path)?.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ok(())
        })
    };
    if let Err(e) = result {
        tracing::warn!(
            "could not remove the partial unpack in {}: {e}",
            destination.display()
        );
    }
}
