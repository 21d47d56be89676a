//! Where an import reads a layout from: a tar archive (plain, gzip or zstd), read
//! once from front to back, or a directory. Each file is handed to a [`LayoutSink`] (the importer) as
//! it is met; a path that would leave the layout's root refuses the whole archive.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::store::{Digest, MANIFEST_LIMIT};

use super::paths::{classify, normalise, LayoutPath};
use super::{ArchiveError, IoAt};
use crate::oci::layout::{INDEX_JSON, OCI_LAYOUT};

/// The archive is read through a buffer this big.
const READ_BUFFER: usize = 1 << 20;

/// Unwraps gzip or zstd when the stream starts with their magic bytes.
pub(super) fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(READ_BUFFER, reader);
    let head = buffered.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    })
}

/// What a reader hands each file of a layout to: the reader knows where the files
/// are, the sink (the importer) what they mean. A trait, so reading needs nothing of
/// the import.
pub(super) trait LayoutSink {
    /// The error for a read that failed (of `blob`, when a blob was being read).
    fn read_error(&self, blob: Option<&Digest>, source: io::Error) -> ArchiveError;
    /// A small file (`oci-layout`, `index.json`) read whole, refused above `limit`.
    fn read_small(
        &self,
        source: impl Read,
        path: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ArchiveError>;
    /// The `oci-layout` file's bytes.
    fn layout_marker(&mut self, bytes: &[u8]) -> Result<(), ArchiveError>;
    /// The `index.json` file's bytes.
    fn index(&mut self, bytes: Vec<u8>) -> Result<(), ArchiveError>;
    /// A blob file, streamed.
    fn blob(
        &mut self,
        digest: &Digest,
        path: &str,
        size: u64,
        source: &mut dyn Read,
    ) -> Result<(), ArchiveError>;
}

pub(super) fn read_tar(
    importer: &mut impl LayoutSink,
    reader: Box<dyn Read + '_>,
) -> Result<(), ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| importer.read_error(None, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| importer.read_error(None, e))?;
        let path = normalise(&entry.path_bytes())?;
        if let Some(target) = entry.link_name_bytes() {
            let shown = format!("{path} -> {}", String::from_utf8_lossy(&target));
            normalise(&target).map_err(|e| match e {
                ArchiveError::UnsafePath { why, .. } => {
                    ArchiveError::UnsafePath { path: shown, why }
                }
                other => other,
            })?;
        }
        let kind = entry.header().entry_type();
        let layout_path = classify(&path);
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            if kind.is_dir() || layout_path == LayoutPath::Other {
                continue;
            }
            return Err(ArchiveError::UnsupportedEntry {
                path,
                kind: format!("{kind:?}").to_lowercase(),
            });
        }
        let size = entry.size();
        match layout_path {
            LayoutPath::OciLayout => {
                let bytes = importer.read_small(&mut entry, &path, size, 4096)?;
                importer.layout_marker(&bytes)?;
            }
            LayoutPath::Index => {
                let bytes = importer.read_small(&mut entry, &path, size, MANIFEST_LIMIT)?;
                importer.index(bytes)?;
            }
            LayoutPath::Blob(digest) => importer.blob(&digest, &path, size, &mut entry)?,
            LayoutPath::Other => {}
        }
    }
    Ok(())
}

pub(super) fn read_dir(importer: &mut impl LayoutSink, root: &Path) -> Result<(), ArchiveError> {
    for (name, limit) in [(OCI_LAYOUT, 4096), (INDEX_JSON, MANIFEST_LIMIT)] {
        let path = root.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(&path),
        };
        let size = file.metadata().at(&path)?.len();
        let bytes = importer.read_small(file, name, size, limit)?;
        if name == OCI_LAYOUT {
            importer.layout_marker(&bytes)?;
        } else {
            importer.index(bytes)?;
        }
    }
    let blobs = root.join("blobs");
    if !blobs.is_dir() {
        return Ok(());
    }
    for algorithm in sorted_entries(&blobs)? {
        if !algorithm.is_dir() {
            continue;
        }
        for file in sorted_entries(&algorithm)? {
            let relative = file
                .strip_prefix(root)
                .expect("listed under the root")
                .to_string_lossy()
                .into_owned();
            let LayoutPath::Blob(digest) = classify(&relative) else {
                continue;
            };
            let meta = fs::symlink_metadata(&file).at(&file)?;
            if !meta.is_file() {
                let kind = if meta.file_type().is_symlink() {
                    "symlink"
                } else {
                    "special file"
                };
                return Err(ArchiveError::UnsupportedEntry {
                    path: relative,
                    kind: kind.into(),
                });
            }
            let mut source = File::open(&file).at(&file)?;
            importer.blob(&digest, &relative, meta.len(), &mut source)?;
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut paths = fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .at(dir)?;
    paths.sort();
    Ok(paths)
}
