//! The store's typed errors. Every message names what was expected and what was found.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

/// Errors from the content-addressed store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation on a path failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The bytes received do not match the descriptor they were promised under.
    #[error(
        "blob rejected: expected {expected_digest} ({expected_size} bytes), \
         got {actual_digest} ({actual_size} bytes)"
    )]
    Mismatch {
        expected_digest: Digest,
        expected_size: u64,
        actual_digest: Digest,
        actual_size: u64,
    },

    /// A source sent more bytes than the descriptor's size.
    #[error(
        "blob rejected: expected {digest} ({size} bytes), \
         the source sent more (at least {} bytes)", size + 1
    )]
    TooLong { digest: Digest, size: u64 },

    /// Reading the source of an ingest failed.
    #[error("reading the source: {0}")]
    Source(#[source] io::Error),

    /// A positional write touched bytes that are already on disk.
    #[error("blob {digest}: write of bytes {start}..{end} overlaps bytes already written")]
    Overlap {
        digest: Digest,
        start: u64,
        end: u64,
    },

    /// The digest uses an algorithm the store cannot compute.
    #[error("unsupported digest algorithm in {0} (supported: sha256, sha384, sha512)")]
    UnsupportedAlgorithm(String),

    /// A string is not a valid digest.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest { input: String, reason: String },

    /// A stored blob no longer matches its digest.
    #[error("stored blob {digest} is corrupt: {detail}")]
    Corrupt { digest: Digest, detail: String },

    /// A blob read whole is larger than the caller allows.
    #[error("blob {digest} is larger than the {limit}-byte limit")]
    TooBig { digest: Digest, limit: u64 },

    /// A ref was asked for that index.json does not hold.
    #[error("no image named {0} in the store")]
    RefNotFound(String),

    /// The directory exists but is not an OCI image layout stowage can use.
    #[error("{} is not an OCI image layout: {reason}", path.display())]
    NotALayout { path: PathBuf, reason: String },

    /// A blob was asked for that the store does not hold.
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),

    /// A ref would name an image the store does not hold whole.
    #[error("not recording {name}: it needs blob {digest}, which the store does not hold")]
    RefIncomplete { name: String, digest: Digest },

    /// A ref name stowage refuses to record.
    #[error("invalid image name \"{name}\": {reason}")]
    BadRefName { name: String, reason: String },

    /// A blob would not fit on the store's file system.
    #[error(
        "blob {digest} needs {needed} more bytes, but the file system holding the store \
         has only {available} bytes free"
    )]
    NoSpace {
        digest: Digest,
        needed: u64,
        available: u64,
    },

    /// A JSON document in the store could not be read.
    #[error("{}: malformed {what}: {source}", path.display())]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Attaches the path an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
