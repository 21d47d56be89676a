//! Air-gapped transfer: images carried between stores as OCI image layouts, either a
//! directory or one tar archive (the `oci-archive` that `skopeo copy oci-archive:…` and
//! `podman load` read).
//!
//! - [`export`]: the images of some refs (or of a lockfile's pins) and only the blobs
//!   they need, streamed from the store into a deterministic tar (or copied into a
//!   directory), each blob re-hashed on the way out, with the referrers the store
//!   records for them (`referrers`).
//! - [`import`]: every blob of a layout goes through the store's ingest (size and digest
//!   checked) in one pass over the archive; the refs of its `index.json` are recorded
//!   only once every blob is in and every image is whole, then its referrers. On any
//!   failure the blobs this import added are removed again, so the store is left as
//!   it was.

mod closure;
mod declared;
mod export;
mod import;
mod paths;
mod plan;
mod referrers;
mod source;

use std::path::PathBuf;

use crate::lock::lockfile::LockfileError;
use crate::oci::layout::LayoutWriteError;
use crate::store::{Digest, StoreError};

pub use crate::store::MissingBlob;
pub use export::{export, ExportReport};
pub use import::{import, import_reader, ImportReport, ImportedImage};
pub use plan::{plan_pins, plan_refs, ExportPlan, ExportedImage};
pub use referrers::ExportedReferrer;

/// How an exported layout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// One tar archive holding the layout (`oci-archive`).
    OciArchive,
    /// A directory holding the layout (`oci`).
    OciDir,
}

impl ArchiveFormat {
    /// The format a path names: a tar archive when it ends in `.tar` (or is `-`,
    /// stdout), else a directory.
    pub fn for_path(path: &std::path::Path) -> Self {
        let tar = path.as_os_str() == "-"
            || path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("tar"));
        if tar {
            Self::OciArchive
        } else {
            Self::OciDir
        }
    }

    /// The name skopeo gives this format's transport.
    pub fn name(self) -> &'static str {
        match self {
            Self::OciArchive => "oci-archive",
            Self::OciDir => "oci-dir",
        }
    }
}

/// Why an export or an import failed. Every message names the blob or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Lockfile(#[from] LockfileError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("no image named {0} in the store (`stowage ls` lists them)")]
    RefNotFound(String),

    /// An export needs blobs the store lacks.
    #[error("the store lacks {} blob(s) the images need: {}; {hint}", missing.len(), list_missing(missing))]
    Incomplete {
        missing: Vec<MissingBlob>,
        /// What to run to fetch them.
        hint: String,
    },

    /// A ref names an index and no child matches the platform asked for.
    #[error("{name} is an index without a {platform} image (it has: {available}); pass --all-platforms to export every platform")]
    NoPlatform {
        name: String,
        platform: String,
        available: String,
    },

    /// A stored blob's size differs from what the manifest pointing at it says.
    #[error("blob {digest} (needed by {needed_by}) is {actual} bytes, its descriptor says {expected}; run `stowage verify`")]
    SizeMismatch {
        digest: Digest,
        needed_by: String,
        expected: u64,
        actual: u64,
    },

    /// Copying a blob out of the store, or writing the export, failed.
    #[error("exporting{}: {source}", blob.as_ref().map(|d| format!(" blob {d}")).unwrap_or_default())]
    Export {
        blob: Option<Digest>,
        #[source]
        source: std::io::Error,
    },

    /// Streaming the oci-archive failed (a stored blob that fails its check names
    /// itself here).
    #[error("exporting: {0}")]
    Write(#[from] LayoutWriteError),

    #[error("{} already exists and is not an empty directory; choose another output or remove it", path.display())]
    OutputExists { path: PathBuf },

    #[error("{source_name} is not an OCI image layout: {reason}")]
    NotALayout { source_name: String, reason: String },

    /// A path in the archive leaves the layout's root.
    #[error("archive entry {path:?} escapes the layout's root ({why}); refusing the archive")]
    UnsafePath { path: String, why: &'static str },

    /// An entry of a kind a layout never holds where a layout file must be.
    #[error("archive entry {path:?} is a {kind}, not a regular file; refusing the archive")]
    UnsupportedEntry { path: String, kind: String },

    /// The archive ended inside a blob.
    #[error("blob {digest} is truncated ({path}): expected {expected_size} bytes, the archive holds {actual_size}")]
    Truncated {
        digest: Digest,
        path: String,
        expected_size: u64,
        actual_size: u64,
    },

    /// A blob's content does not match its name.
    #[error("{path}: {source}")]
    Rejected {
        digest: Digest,
        path: String,
        #[source]
        source: Box<StoreError>,
    },

    /// Reading the archive failed (a damaged tar or compressed stream).
    #[error("reading {source_name}{}: {source}", blob.as_ref().map(|d| format!(" (in blob {d})")).unwrap_or_default())]
    Read {
        source_name: String,
        blob: Option<Digest>,
        #[source]
        source: std::io::Error,
    },

    /// The archive's images need blobs neither the archive nor the store holds.
    #[error("the archive lacks {} blob(s) its images need: {}", missing.len(), list_missing(missing))]
    MissingFromArchive { missing: Vec<MissingBlob> },

    #[error("{what} in {source_name} is malformed: {detail}")]
    Malformed {
        source_name: String,
        what: &'static str,
        detail: String,
    },

    /// A blob entry's size is not the one the layout declares for that blob (or the
    /// one of the copy already stored), so it cannot be that blob.
    #[error("archive entry {path} holds {found} bytes, but {by} says blob {digest} is {declared} bytes; refusing the archive")]
    EntrySize {
        digest: Digest,
        path: String,
        found: u64,
        /// Where the size it should have comes from.
        by: String,
        declared: u64,
    },
}

/// One line naming the first few missing blobs.
fn list_missing(missing: &[MissingBlob]) -> String {
    const SHOWN: usize = 8;
    let mut text = missing
        .iter()
        .take(SHOWN)
        .map(|m| format!("{} (needed by {})", m.digest, m.referenced_by))
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        text.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    text
}

/// Attaches the path an I/O error happened on.
trait IoAt<T> {
    fn at(self, path: &std::path::Path) -> Result<T, ArchiveError>;
}

impl<T> IoAt<T> for Result<T, std::io::Error> {
    fn at(self, path: &std::path::Path) -> Result<T, ArchiveError> {
        self.map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
