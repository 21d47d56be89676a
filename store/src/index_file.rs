//! `index.json`: what names an entry, and the file parsed once per change, not once
//! per lookup: a store with 10 000 refs
//! has an index of about 3 MB, and parsing it for every ref lookup and every
//! `set_ref` made commands over N images cost N². The parsed index is kept with the
//! file's identity (device, inode, size, mtime and ctime, taken from the same open file
//! the bytes are read from) and re-read only when another process has replaced the
//! file since. Writers replace `index.json` by rename under the refs lock, so a new
//! version always has a new identity.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use oci_spec::image::{ImageIndex, ImageIndexBuilder, MediaType};

use oci_spec::image::Descriptor;

use crate::error::{IoContext, StoreError};

/// The annotation that names an index.json entry (skopeo's and umoci's "tag").
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The annotation on a ref pulled through an index naming that index's digest (the
/// index itself is not stored when one platform was chosen); gc keeps the index's
/// referrers while the ref stands.
pub const INDEX_ANNOTATION: &str = "dev.stowage.index.digest";

/// The name an entry carries, if any.
pub(crate) fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

/// What identifies one version of a file that is only ever replaced by rename
/// (`index.json`, the tag cache): device, inode, size, mtime and ctime. Taken from the
/// open file the bytes are read from, it tells a cached parse from a stale one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One parsed version of `index.json`.
#[derive(Debug)]
pub(crate) struct ParsedIndex {
    pub index: ImageIndex,
    /// Ref name -> position in `index.manifests()` (the first entry of a name).
    pub by_name: HashMap<String, usize>,
}

impl ParsedIndex {
    fn new(index: ImageIndex) -> Self {
        let mut by_name = HashMap::with_capacity(index.manifests().len());
        for (i, descriptor) in index.manifests().iter().enumerate() {
            if let Some(name) = ref_name(descriptor) {
                by_name.entry(name.to_string()).or_insert(i);
            }
        }
        Self { index, by_name }
    }

    /// The index of a store that has none yet.
    pub fn empty() -> Self {
        Self::new(empty_index())
    }
}

/// The last version read or written by this process, shared by every clone of a
/// [`crate::Store`].
#[derive(Debug, Default)]
pub(crate) struct IndexCache {
    last: Mutex<Option<(FileStamp, Arc<ParsedIndex>)>>,
}

impl IndexCache {
    /// The index as the file holds it now.
    pub fn read(&self, path: &Path) -> Result<Arc<ParsedIndex>, StoreError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Arc::new(ParsedIndex::empty()))
            }
            Err(e) => return Err(e).at(path),
        };
        let stamp = FileStamp::of(&file.metadata().at(path)?);
        if let Some((seen, parsed)) = self.lock().as_ref() {
            if *seen == stamp {
                return Ok(parsed.clone());
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).at(path)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: path.to_path_buf(),
                what: "index.json",
                source,
            })?;
        let parsed = Arc::new(ParsedIndex::new(index));
        *self.lock() = Some((stamp, parsed.clone()));
        Ok(parsed)
    }

    /// Records the version this process has just written (under the refs lock, so
    /// the file at `path` is the one written).
    pub fn wrote(&self, path: &Path, index: ImageIndex) -> Result<(), StoreError> {
        let stamp = FileStamp::of(&std::fs::metadata(path).at(path)?);
        *self.lock() = Some((stamp, Arc::new(ParsedIndex::new(index))));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(FileStamp, Arc<ParsedIndex>)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an empty index is valid")
}
