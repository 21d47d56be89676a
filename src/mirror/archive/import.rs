//! Import: every blob of an OCI layout (a tar archive, plain or compressed, or a
//! directory) enters the store through its ingest, which checks size and digest; the
//! refs of the layout's index.json are recorded only after every blob is in and every
//! image is whole. A tar is read once, front to back: blobs may come before index.json,
//! and nothing bigger than index.json is held in memory.
//!
//! Each blob is bounded by its size: no more than its tar entry's declared size is
//! read (one byte past it refuses the blob), and an entry whose size differs from the
//! one a descriptor already met declares for it ([`super::declared`]), or from the
//! copy the store holds, is refused before any of it is written. A blob that comes
//! before every descriptor naming it is checked against them once they arrive.
//!
//! On any failure the blobs this import added are removed again (blobs the store held
//! before stay, and so does any blob a ref reaches by then), so the store is left as
//! it was.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use oci_spec::image::ImageIndex;

use crate::store::{
    children, excerpt, Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT, REF_NAME_ANNOTATION,
};

use super::closure::needed;
use super::declared::Declared;
use super::referrers::{imported, record, ImportedReferrer};
use super::source::{decompressed, read_dir, read_tar, LayoutSink};
use super::{ArchiveError, ArchiveFormat, IoAt};
use crate::oci::layout::blob_path;

/// containerd's (and docker's) annotation for an image's full name; its
/// `org.opencontainers.image.ref.name` is then only the tag.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// One image recorded under a ref.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    /// What the ref named before, when the import moved it.
    pub replaced: Option<Digest>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub source: String,
    pub format: ArchiveFormat,
    pub images: Vec<ImportedImage>,
    /// index.json entries without a name that are no referrers (their blobs are
    /// imported, no ref is made).
    pub unnamed: usize,
    /// Referrers recorded (unnamed entries naming a subject).
    pub referrers: usize,
    /// Distinct blobs in the layout.
    pub blobs: usize,
    pub blobs_added: usize,
    pub bytes_added: u64,
    /// Blobs the store held already (not read again).
    pub blobs_present: usize,
    pub seconds: f64,
}

/// Imports the layout at `source`: a directory, a tar archive (plain, gzip or zstd,
/// told apart by their first bytes), or `-` for a tar on stdin.
pub fn import(store: &Store, source: &Path) -> Result<ImportReport, ArchiveError> {
    if source.as_os_str() == "-" {
        return import_reader(store, io::stdin().lock(), "stdin");
    }
    let name = source.display().to_string();
    if source.is_dir() {
        return run(store, &name, ArchiveFormat::OciDir, |importer| {
            read_dir(importer, source)
        });
    }
    let file = File::open(source).at(source)?;
    import_reader(store, file, &name)
}

/// Imports a tar archive (plain, gzip or zstd) read from `reader`, in one pass.
pub fn import_reader(
    store: &Store,
    reader: impl Read,
    source_name: &str,
) -> Result<ImportReport, ArchiveError> {
    run(store, source_name, ArchiveFormat::OciArchive, |importer| {
        let reader = decompressed(reader).map_err(|e| importer.read_error(None, e))?;
        read_tar(importer, reader)
    })
}

/// Feeds the layout to an importer, then records the refs, or undoes what it added.
fn run(
    store: &Store,
    source_name: &str,
    format: ArchiveFormat,
    read: impl FnOnce(&mut Importer) -> Result<(), ArchiveError>,
) -> Result<ImportReport, ArchiveError> {
    let started = Instant::now();
    // Blobs added but not yet named by a ref must not be swept by a concurrent gc.
    let _lease = store.lease()?;
    let mut importer = Importer {
        store,
        source_name: source_name.to_string(),
        seen: HashSet::new(),
        added: Vec::new(),
        bytes_added: 0,
        present: 0,
        index: None,
        declared: Declared::default(),
        layout_marker: false,
    };
    let result = read(&mut importer).and_then(|()| importer.finish());
    match result {
        Ok((images, unnamed, referrers)) => Ok(ImportReport {
            source: source_name.to_string(),
            format,
            images,
            unnamed,
            referrers,
            blobs: importer.seen.len(),
            blobs_added: importer.added.len(),
            bytes_added: importer.bytes_added,
            blobs_present: importer.present,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            importer.roll_back();
            Err(e)
        }
    }
}

/// The state of one import.
pub(super) struct Importer<'a> {
    store: &'a Store,
    source_name: String,
    /// Blobs met so far (an archive may repeat one).
    seen: HashSet<Digest>,
    /// Blobs this import committed, to be removed again if it fails.
    added: Vec<Digest>,
    bytes_added: u64,
    present: usize,
    index: Option<Vec<u8>>,
    /// The sizes descriptors met so far give blobs.
    declared: Declared,
    layout_marker: bool,
}

impl LayoutSink for Importer<'_> {
    fn read_error(&self, blob: Option<&Digest>, source: io::Error) -> ArchiveError {
        ArchiveError::Read {
            source_name: self.source_name.clone(),
            blob: blob.cloned(),
            source,
        }
    }

    /// Reads a small file whole (index.json, oci-layout), refusing one that is larger
    /// than `limit` or shorter than its size.
    fn read_small(
        &self,
        source: impl Read,
        path: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ArchiveError> {
        if size > limit {
            return Err(self.not_a_layout(format!("{path} is {size} bytes (limit {limit})")));
        }
        let mut bytes = Vec::new();
        source
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(None, e))?;
        if bytes.len() as u64 != size {
            let detail = format!("{path} ends after {} of its {size} bytes", bytes.len());
            return Err(self.read_error(None, io::Error::new(io::ErrorKind::UnexpectedEof, detail)));
        }
        Ok(bytes)
    }

    fn layout_marker(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v["imageLayoutVersion"].as_str().map(str::to_string));
        match version {
            Some(v) if v.starts_with("1.") => {
                self.layout_marker = true;
                Ok(())
            }
            Some(v) => Err(self.not_a_layout(format!("imageLayoutVersion {v} (expected 1.x)"))),
            None => Err(ArchiveError::Malformed {
                source_name: self.source_name.clone(),
                what: "oci-layout",
                detail: format!("it starts {}", excerpt(bytes)),
            }),
        }
    }

    /// Keeps index.json for the end, and learns the sizes its entries declare.
    fn index(&mut self, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        // A malformed one is refused, naming the error, once the archive is read.
        let entries = children(&bytes).unwrap_or_default();
        self.index = Some(bytes);
        self.learn(entries, "index.json".to_string())
    }

    /// Ingests one blob from `source` (exactly `size` bytes), unless the store holds it.
    fn blob(
        &mut self,
        digest: &Digest,
        path: &str,
        size: u64,
        source: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.check_size(digest, path, size)?;
        if !self.seen.insert(digest.clone()) {
            return Ok(());
        }
        let Some(mut ingest) = self.fresh_ingest(digest, size)? else {
            self.present += 1;
            return Ok(());
        };
        if let Err(e) = ingest.copy_from(source) {
            let _ = ingest.abort();
            return Err(match e {
                StoreError::Source(e) => self.read_error(Some(digest), e),
                other => self.rejected(digest, path, other),
            });
        }
        let have = ingest.offset();
        if have != size {
            let _ = ingest.abort();
            return Err(ArchiveError::Truncated {
                digest: digest.clone(),
                path: path.to_string(),
                expected_size: size,
                actual_size: have,
            });
        }
        match ingest.commit() {
            Ok(_) => {
                self.added.push(digest.clone());
                self.bytes_added += size;
                if self.declared.get(digest).is_some_and(|d| d.graph) {
                    let by = format!("manifest {digest}");
                    self.learn(self.children_of(digest), by)?;
                }
                Ok(())
            }
            Err(e @ (StoreError::Mismatch { .. } | StoreError::TooLong { .. })) => {
                Err(self.rejected(digest, path, e))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Importer<'_> {
    fn not_a_layout(&self, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::NotALayout {
            source_name: self.source_name.clone(),
            reason: reason.into(),
        }
    }

    /// Learns the sizes `descriptors` (found in `by`) declare. A blob already in that
    /// differs is refused now; a manifest already in teaches its own children.
    fn learn(&mut self, descriptors: Vec<Descriptor>, by: String) -> Result<(), ArchiveError> {
        let mut work = vec![(descriptors, by)];
        while let Some((descriptors, by)) = work.pop() {
            for (digest, declared) in self.declared.learn(descriptors, &by) {
                if !self.seen.contains(&digest) {
                    continue;
                }
                let Some(found) = self.store.stat(&digest)? else {
                    continue;
                };
                if found != declared.size {
                    return Err(ArchiveError::EntrySize {
                        path: blob_path(&digest),
                        digest,
                        found,
                        by: declared.by,
                        declared: declared.size,
                    });
                }
                if declared.graph {
                    work.push((self.children_of(&digest), format!("manifest {digest}")));
                }
            }
        }
        Ok(())
    }

    /// The descriptors a stored manifest or index holds; none when it cannot be read
    /// (the check of the images at the end reports why).
    fn children_of(&self, digest: &Digest) -> Vec<Descriptor> {
        self.store
            .read_blob(digest, MANIFEST_LIMIT)
            .ok()
            .and_then(|bytes| children(&bytes).ok())
            .unwrap_or_default()
    }

    /// Refuses an entry whose size is not the declared one, or the stored copy's.
    fn check_size(&self, digest: &Digest, path: &str, size: u64) -> Result<(), ArchiveError> {
        let expected = match self.declared.get(digest) {
            Some(declared) => Some((declared.size, declared.by.clone())),
            None => self
                .store
                .stat(digest)?
                .map(|stored| (stored, "the copy already in the store".to_string())),
        };
        match expected {
            Some((declared, by)) if declared != size => Err(ArchiveError::EntrySize {
                digest: digest.clone(),
                path: path.to_string(),
                found: size,
                by,
                declared,
            }),
            _ => Ok(()),
        }
    }

    /// An ingest that starts from byte 0: a partial left by an interrupted pull or
    /// import is discarded, since the archive is read from the start anyway.
    fn fresh_ingest(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<crate::store::Ingest>, ArchiveError> {
        let Some(ingest) = self.store.ingest(digest, size)? else {
            return Ok(None);
        };
        let missing: u64 = ingest.missing().iter().map(|r| r.end - r.start).sum();
        if missing == size {
            return Ok(Some(ingest));
        }
        ingest.abort()?;
        Ok(self.store.ingest(digest, size)?)
    }

    fn rejected(&self, digest: &Digest, path: &str, source: StoreError) -> ArchiveError {
        ArchiveError::Rejected {
            digest: digest.clone(),
            path: path.to_string(),
            source: Box::new(source),
        }
    }

    /// Checks that every image of index.json is whole, then records the named ones and
    /// the referrers. Returns the images, the number of other unnamed entries and the
    /// number of referrers.
    fn finish(&mut self) -> Result<(Vec<ImportedImage>, usize, usize), ArchiveError> {
        if !self.layout_marker {
            return Err(self.not_a_layout("no oci-layout file"));
        }
        let Some(bytes) = self.index.take() else {
            return Err(self.not_a_layout("no index.json"));
        };
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Malformed {
                source_name: self.source_name.clone(),
                what: "index.json",
                detail: e.to_string(),
            })?;
        let entries: Vec<(Option<String>, Descriptor)> = index
            .manifests()
            .iter()
            .map(|d| (entry_name(d), d.clone()))
            .collect();
        let roots: Vec<(String, Descriptor)> = entries
            .iter()
            .enumerate()
            .map(|(i, (name, d))| {
                let shown = name
                    .clone()
                    .unwrap_or_else(|| format!("index.json entry {i}"));
                (shown, d.clone())
            })
            .collect();
        let needed = needed(self.store, &roots)?;
        if !needed.missing.is_empty() {
            return Err(ArchiveError::MissingFromArchive {
                missing: needed.missing,
            });
        }
        let mut images = Vec::new();
        let mut named = Vec::new();
        let mut referrers: Vec<ImportedReferrer> = Vec::new();
        let mut unnamed = 0;
        for (position, (name, descriptor)) in entries.into_iter().enumerate() {
            let Some(name) = name else {
                match imported(self.store, &self.source_name, position, &descriptor)? {
                    Some(referrer) => referrers.push(referrer),
                    None => unnamed += 1,
                }
                continue;
            };
            let before = self.store.resolve_ref(&name)?.map(|d| d.digest().clone());
            images.push(ImportedImage {
                replaced: before.filter(|d| d != descriptor.digest()),
                name: name.clone(),
                digest: descriptor.digest().clone(),
                media_type: descriptor.media_type().to_string(),
            });
            named.push((name, descriptor));
        }
        // The referrers before the refs: a failure must leave no ref of a half-done
        // import, while a record whose subject no ref names yet is harmless (gc drops
        // it with its subject).
        record(self.store, &referrers)?;
        // Every ref in one update of index.json, however many images the archive holds.
        self.store.set_refs(&named)?;
        // set_ref makes the blobs durable before naming them; without refs, do it here.
        self.store.sync_blob_dirs()?;
        Ok((images, unnamed, referrers.len()))
    }

    /// Removes the blobs this import added, except any a ref or a recorded referrer
    /// reaches by now (another process may have named them meanwhile).
    fn roll_back(&self) {
        if self.added.is_empty() {
            return;
        }
        let live: HashSet<String> = self
            .store
            .refs()
            .ok()
            .map(|refs| {
                let mut roots: Vec<_> = refs.into_iter().map(|r| (r.name, r.descriptor)).collect();
                let recorded = self.store.all_referrers().unwrap_or_default();
                roots.extend(recorded.into_iter().flat_map(|(subject, referrers)| {
                    referrers
                        .into_iter()
                        .map(move |r| (format!("referrer of {subject}"), r))
                }));
                needed(self.store, &roots)
                    .map(|n| n.blobs.into_keys().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        for digest in &self.added {
            if live.contains(&digest.to_string()) {
                continue;
            }
            let path = self.store.blob_path(digest);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(%digest, "could not remove a blob of the failed import: {e}");
            }
        }
        if let Err(e) = self.store.sync_blob_dirs() {
            tracing::warn!("could not sync the blob folders: {e}");
        }
    }
}

/// The name an index.json entry gives its image: containerd's full name when present,
/// else the OCI ref name.
fn entry_name(descriptor: &Descriptor) -> Option<String> {
    let annotations = descriptor.annotations().as_ref()?;
    annotations
        .get(CONTAINERD_NAME_ANNOTATION)
        .or_else(|| annotations.get(REF_NAME_ANNOTATION))
        .filter(|name| !name.is_empty())
        .cloned()
}
