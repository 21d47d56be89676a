//! The archives a runtime's `load` reads, written from the store as one stream into
//! the runtime's stdin: no temporary copy of any layer, and memory that does not
//! grow with layer size (1 MiB buffers and a decoder's window).
//!
//! - **oci-archive** (podman): the one oci-archive writer, [`crate::oci::layout`],
//!   with an `index.json` that lists the one manifest under the name it is loaded as.
//!   Every blob goes in as stored, zstd layers too; each is re-hashed on the way.
//! - **docker-archive** (docker): [`super::docker_archive`].

use std::io::{self, Write};

use super::StoredImage;
use crate::oci::layout::{self, LayoutWriteError, NamedImage};
use crate::oci::tar_entry::Counting;
use crate::store::{Store, StoreError};

/// Why an image could not be archived.
#[derive(Debug, thiserror::Error)]
pub enum LoadArchiveError {
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

impl From<LayoutWriteError> for LoadArchiveError {
    fn from(e: LayoutWriteError) -> Self {
        match e {
            LayoutWriteError::Store(e) => Self::Store(e),
            LayoutWriteError::Entry { path, source } => Self::Entry { path, source },
            LayoutWriteError::Write(e) => Self::Write(e),
        }
    }
}

/// Writes `image` as an oci-archive naming it `name`; returns the bytes written.
pub fn write_oci_archive(
    store: &Store,
    image: &StoredImage,
    name: &str,
    out: &mut dyn Write,
) -> Result<u64, LoadArchiveError> {
    let named = [NamedImage {
        name: name.to_string(),
        descriptor: image.manifest.clone(),
    }];
    let blobs: Vec<_> = image.blobs().cloned().collect();
    let counted = layout::write_archive(store, &named, &blobs, Counting::new(out))?;
    Ok(counted.count)
}
