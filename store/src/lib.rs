//! stowage's content-addressed store: an OCI image layout on disk.
//!
//! Blobs enter only through [`Ingest`], which verifies size and digest before anything
//! appears under `blobs/`; refs live in `index.json`, changed under a lock and replaced
//! atomically, so skopeo, podman and umoci can read the store as it is. Several
//! processes may share one store. No network and no async runtime here: the registry
//! client hands byte streams to [`Store::ingest`].

mod atomic;
mod blob;
mod digest;
mod error;
mod evict;
mod gc;
mod graph;
mod index_file;
mod ingest;
mod last_used;
mod layout;
mod lock;
pub mod media_type;
mod partials;
mod referrers;
mod refs;
mod verify;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use oci_spec::image::{Descriptor, Digest, MediaType};

pub use atomic::{write_atomic, write_replace};
pub use blob::BlobReader;
pub use digest::{hash_file, parse_digest, sha256_of, Hasher};
pub use error::StoreError;
pub use evict::{EvictOptions, EvictReport, Evicted};
pub use gc::{GcReport, Usage, PARTIALS_OLDER_THAN};
pub use graph::{children, reach, MissingBlob, Reach, WrongSize, MANIFEST_LIMIT};
pub use index_file::{FileStamp, INDEX_ANNOTATION, REF_NAME_ANNOTATION};
pub use ingest::{Committed, Ingest, RangeSet};
pub use lock::FileLock;
pub use media_type::{is_graph_type, is_image_type, is_index_type, MANIFEST_ACCEPT};
pub use refs::StoreRef;
pub use verify::{CorruptBlob, VerifyReport};

use error::IoContext;
use layout::Layout;

/// The layout version stowage writes and reads.
const LAYOUT_VERSION: &str = "1.0.0";

/// An open store directory. Clones share one cache of the parsed `index.json`.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    index: std::sync::Arc<index_file::IndexCache>,
}

impl Store {
    /// Opens the store at `root`, creating an empty layout when the directory is
    /// missing or empty. A non-empty directory without `oci-layout` is refused.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).at(&root)?;
        let layout = Layout::new(root);
        let marker = layout.oci_layout();
        match read_layout_marker(&marker) {
            Ok(bytes) => check_layout_marker(&marker, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Only entries a store itself makes: another process may be creating
                // this same store right now.
                let foreign = fs::read_dir(layout.root())
                    .at(layout.root())?
                    .filter_map(Result::ok)
                    .any(|e| !is_layout_entry(&e.file_name().to_string_lossy()));
                if foreign {
                    return Err(StoreError::NotALayout {
                        path: layout.root().to_path_buf(),
                        reason: "the directory holds other files and no oci-layout file".into(),
                    });
                }
                let json = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
                atomic::write_atomic(&marker, json.as_bytes())?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::NotALayout {
                    path: marker,
                    reason: "oci-layout is a symbolic link; it must be a regular file".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(StoreError::NotALayout {
                    path: marker,
                    reason: format!("oci-layout {e}"),
                })
            }
            Err(e) => return Err(e).at(&marker),
        }
        for dir in [
            layout.blobs().join("sha256"),
            layout.ingest_dir(),
            layout.state_dir(),
        ] {
            fs::create_dir_all(&dir).at(&dir)?;
        }
        let store = Self {
            layout,
            index: Default::default(),
        };
        store.ensure_index()?;
        Ok(store)
    }

    fn index_cache(&self) -> &index_file::IndexCache {
        &self.index
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Whether a verified blob with this digest is stored.
    pub fn has(&self, digest: &Digest) -> bool {
        self.layout.blob(digest).is_file()
    }

    /// The stored size of a blob, or `None` when it is not stored.
    pub fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.layout.blob(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    /// The path of a stored blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob(digest)
    }

    /// Opens a stored blob for reading; the reader fails at the end if the content no
    /// longer matches its digest.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        let hasher = Hasher::new(digest)?;
        let path = self.layout.blob(digest);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => return Err(e).at(&path),
        };
        Ok(BlobReader::new(file, path, digest.clone(), hasher))
    }

    /// Reads a small blob (a manifest, a config) whole, checking its digest, and refusing
    /// blobs larger than `limit` bytes.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let reader = self.open_blob(digest)?;
        let path = reader.path().clone();
        let mut data = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => StoreError::Corrupt {
                    digest: digest.clone(),
                    detail: e.to_string(),
                },
                _ => StoreError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        if data.len() as u64 > limit {
            return Err(StoreError::TooBig {
                digest: digest.clone(),
                limit,
            });
        }
        Ok(data)
    }

    /// Starts or resumes the ingest of a blob. Blocks while another process ingests the
    /// same digest; returns `None` when the blob is (by then) already stored.
    pub fn ingest(&self, digest: &Digest, size: u64) -> Result<Option<Ingest>, StoreError> {
        Ingest::open(&self.layout, digest, size)
    }

    /// Stores a small in-memory blob under its sha256 digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = sha256_of(data);
        self.put_as(&digest, data)?;
        Ok(digest)
    }

    /// Stores a small in-memory blob that must have `digest` (a manifest received from
    /// a registry, say); a mismatch stores nothing.
    pub fn put_as(&self, digest: &Digest, data: &[u8]) -> Result<(), StoreError> {
        if let Some(ingest) = self.ingest(digest, data.len() as u64)? {
            let missing: u64 = ingest.missing().iter().map(|r| r.end - r.start).sum();
            if missing != data.len() as u64 {
                // A leftover partial of the same blob; start clean rather than splice.
                ingest.abort()?;
                return self.put_as(digest, data);
            }
            ingest.write_at(0, data)?;
            ingest.commit()?;
        }
        Ok(())
    }

    /// A lease on the store: while held, `gc` waits, so blobs fetched but not yet
    /// referenced by a ref are not swept. Hold one for the length of a pull.
    pub fn lease(&self) -> Result<FileLock, StoreError> {
        FileLock::shared(&self.layout.gc_lock())
    }

    /// Whether the store holds everything `descriptor` needs: the manifest (or index),
    /// every child manifest, config and layer. A ref alone proves nothing.
    pub fn is_complete(&self, descriptor: &Descriptor) -> Result<bool, StoreError> {
        Ok(self.missing(descriptor)?.is_empty())
    }

    /// The blobs `descriptor` needs that the store lacks (children of a missing
    /// manifest cannot be known and are not listed).
    pub fn missing(&self, descriptor: &Descriptor) -> Result<Vec<Digest>, StoreError> {
        let missing = graph::missing(self, [("check".to_string(), descriptor.clone())])?;
        Ok(missing.into_iter().map(|m| m.digest).collect())
    }

    /// Makes every rename into `blobs/` durable (one fsync per algorithm folder).
    pub fn sync_blob_dirs(&self) -> Result<(), StoreError> {
        let root = self.layout.blobs();
        for entry in fs::read_dir(&root).at(&root)? {
            let dir = entry.at(&root)?.path();
            if dir.is_dir() {
                atomic::sync_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Bytes an unprivileged writer may still put on the file system holding the
    /// store; `None` when the file system does not say.
    pub fn free_space(&self) -> Option<u64> {
        free_space(self.root())
    }

    /// A file for stowage's own rebuildable state (caches), under `stowage/`.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.layout.state_dir().join(name)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
pub(crate) fn free_space(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn is_layout_entry(name: &str) -> bool {
    matches!(
        name,
        "oci-layout" | "index.json" | "blobs" | "ingest" | "stowage"
    ) || name.starts_with(".tmp-")
}

/// The largest `oci-layout` read (stowage's is 30 bytes).
const MARKER_LIMIT: u64 = 4096;

/// Reads the `oci-layout` file without following a symbolic link (`ELOOP`) or waiting
/// on a FIFO; anything but a regular file of at most [`MARKER_LIMIT`] bytes is
/// `InvalidData`.
fn read_layout_marker(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "is not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MARKER_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MARKER_LIMIT {
        let detail = format!("is larger than {MARKER_LIMIT} bytes");
        return Err(io::Error::new(io::ErrorKind::InvalidData, detail));
    }
    Ok(bytes)
}

fn check_layout_marker(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let version = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["imageLayoutVersion"].as_str().map(str::to_string));
    let reason = match version {
        Some(v) if v.starts_with("1.") => return Ok(()),
        Some(v) => format!(
            "imageLayoutVersion {} (expected {LAYOUT_VERSION})",
            excerpt(v.as_bytes())
        ),
        None => format!(
            "oci-layout is not {{\"imageLayoutVersion\": \"...\"}}: it starts {}",
            excerpt(bytes)
        ),
    };
    Err(StoreError::NotALayout {
        path: path.to_path_buf(),
        reason,
    })
}

/// At most the first 40 characters of untrusted `bytes`, quoted and escaped, for an
/// error message (a terminal shown them must not be sent control sequences, and a
/// file read by mistake must not be shown whole).
pub fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 40;
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(SHOWN).collect();
    let cut = shown.len() < text.len();
    shown = format!("{shown:?}");
    if cut {
        shown.push_str(" (cut)");
    }
    shown
}

impl Store {
    /// Every blob under `blobs/` whose name is a digest, with its path and size.
    /// Files with other names (a tool's leftovers) are skipped.
    pub fn stored_blobs(&self) -> Result<Vec<(Digest, PathBuf, u64)>, StoreError> {
        self.blobs()?.collect()
    }

    /// [`Self::stored_blobs`] one at a time, read from the directories as it goes:
    /// what a sweep or a count over 100 000 blobs holds is one entry, not a list.
    pub fn blobs(
        &self,
    ) -> Result<impl Iterator<Item = Result<(Digest, PathBuf, u64), StoreError>> + Send, StoreError>
    {
        let root = self.layout.blobs();
        let mut folders = Vec::new();
        for algorithm in fs::read_dir(&root).at(&root)? {
            let dir = algorithm.at(&root)?.path();
            if dir.is_dir() {
                folders.push(dir);
            }
        }
        Ok(folders.into_iter().flat_map(|dir| {
            let algorithm = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let entries: Box<
                dyn Iterator<Item = Result<(Digest, PathBuf, u64), StoreError>> + Send,
            > = match fs::read_dir(&dir) {
                Ok(entries) => Box::new(entries.filter_map(move |entry| {
                    let entry = match entry.at(&dir) {
                        Ok(entry) => entry,
                        Err(e) => return Some(Err(e)),
                    };
                    let name = format!("{algorithm}:{}", entry.file_name().to_string_lossy());
                    match parse_digest(&name) {
                        Ok(digest) => Some(
                            entry
                                .metadata()
                                .at(&entry.path())
                                .map(|meta| (digest, entry.path(), meta.len())),
                        ),
                        Err(_) => {
                            tracing::debug!(path = %entry.path().display(), "not a blob");
                            None
                        }
                    }
                })),
                Err(e) => Box::new(std::iter::once(Err(e).at(&dir))),
            };
            entries
        }))
    }
}
