//! Export: a plan's images and blobs written as an OCI layout, either a deterministic
//! tar streamed from the store or a directory. Every blob is re-hashed while it is
//! copied, so a blob that rotted in the store stops the export instead of travelling.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::store::{Digest, Store, REF_NAME_ANNOTATION};

use super::paths::{blob_path, INDEX_JSON, OCI_LAYOUT, OCI_LAYOUT_JSON};
use super::plan::{ExportPlan, ExportedImage};
use super::{ArchiveError, Format, IoAt};

/// Blobs are copied through a buffer this big.
const COPY_BUFFER: usize = 1 << 20;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub format: Format,
    pub output: PathBuf,
    pub images: Vec<ExportedImage>,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Bytes written (the archive's size, or the directory's files).
    pub written: u64,
    pub seconds: f64,
}

/// The layout's index.json: one entry per image, named by the ref-name annotation.
/// Keys are sorted (annotations are a hash map), so the bytes are reproducible.
fn index_json(images: &[ExportedImage]) -> Vec<u8> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut descriptor = image.descriptor.clone();
            let mut annotations = descriptor.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME_ANNOTATION.to_string(), image.name.clone());
            descriptor.set_annotations(Some(annotations));
            serde_json::to_value(&descriptor).expect("a descriptor serialises")
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    serde_json::to_vec(&sorted(index)).expect("an index serialises")
}

/// `value` with every object's keys in order, whatever map serde_json was built with.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Writes the plan as `output` in `format` (`-` writes the archive to stdout).
pub fn export(
    store: &Store,
    plan: &ExportPlan,
    output: &Path,
    format: Format,
) -> Result<ExportReport, ArchiveError> {
    let started = Instant::now();
    let _lease = store.lease()?;
    let written = match format {
        Format::OciArchive if output.as_os_str() == "-" => {
            let stdout = io::stdout().lock();
            let mut out = Counting::new(BufWriter::with_capacity(COPY_BUFFER, stdout));
            write_archive(store, plan, &mut out)?;
            out.inner.flush().at(output)?;
            out.count
        }
        Format::OciArchive => write_archive_file(store, plan, output)?,
        Format::OciDir => write_dir(store, plan, output)?,
    };
    Ok(ExportReport {
        format,
        output: output.to_path_buf(),
        images: plan.images.clone(),
        blobs: plan.blobs.len(),
        blob_bytes: plan.bytes,
        written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Streams the plan into `out` as a tar holding an OCI layout: `oci-layout`,
/// `index.json`, then the blobs sorted by digest. Headers carry mtime 0, owner 0:0 and
/// modes 0644/0755, so the same plan always gives the same bytes.
pub fn write_archive<W: Write>(
    store: &Store,
    plan: &ExportPlan,
    out: W,
) -> Result<W, ArchiveError> {
    let failed = |source: io::Error| ArchiveError::Export { blob: None, source };
    let mut builder = tar::Builder::new(out);
    let index = index_json(&plan.images);
    for (name, data) in [(OCI_LAYOUT, OCI_LAYOUT_JSON), (INDEX_JSON, &index[..])] {
        let mut header = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        builder
            .append_data(&mut header, name, data)
            .map_err(failed)?;
    }
    let mut dirs = HashSet::new();
    for dir in ["blobs/".to_string()].into_iter().chain(
        plan.blobs
            .iter()
            .map(|d| format!("blobs/{}/", d.digest().algorithm().as_ref())),
    ) {
        if dirs.insert(dir.clone()) {
            let mut header = header(tar::EntryType::Directory, 0, 0o755);
            builder
                .append_data(&mut header, &dir, io::empty())
                .map_err(failed)?;
        }
    }
    for descriptor in &plan.blobs {
        let digest = descriptor.digest();
        let size = descriptor.size();
        let data = BufReader::with_capacity(
            COPY_BUFFER,
            Exact::new(store.open_blob(digest)?, digest.clone(), size),
        );
        let mut header = header(tar::EntryType::Regular, size, 0o644);
        builder
            .append_data(&mut header, blob_path(digest), data)
            .map_err(|source| ArchiveError::Export {
                blob: Some(digest.clone()),
                source,
            })?;
    }
    builder.into_inner().map_err(failed)
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Writes the archive to a temporary file beside `path`, syncs it, and renames it into
/// place, so `path` is never a half-written archive. Returns the archive's size.
fn write_archive_file(store: &Store, plan: &ExportPlan, path: &Path) -> Result<u64, ArchiveError> {
    let temp = Temp::beside(path)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp.path)
        .at(&temp.path)?;
    let out = write_archive(store, plan, BufWriter::with_capacity(COPY_BUFFER, file))?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .at(&temp.path)?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .at(&temp.path)?;
    file.sync_all().at(&temp.path)?;
    let size = file.metadata().at(&temp.path)?.len();
    temp.persist(path)?;
    Ok(size)
}

/// Writes the plan as a layout directory at `path` (which must not exist, or be an
/// empty directory): built beside it under a temporary name, then renamed into place.
/// Returns the bytes written.
pub fn write_dir(store: &Store, plan: &ExportPlan, path: &Path) -> Result<u64, ArchiveError> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        let empty = meta.is_dir() && fs::read_dir(path).at(path)?.next().is_none();
        if !empty {
            return Err(ArchiveError::OutputExists {
                path: path.to_path_buf(),
            });
        }
    }
    let temp = Temp::beside(path)?;
    let root = &temp.path;
    let mut written = 0;
    make_dir(root)?;
    let index = index_json(&plan.images);
    for (name, data) in [(OCI_LAYOUT, OCI_LAYOUT_JSON), (INDEX_JSON, &index[..])] {
        let file = root.join(name);
        let mut out = create_file(&file)?;
        out.write_all(data).at(&file)?;
        out.sync_all().at(&file)?;
        written += data.len() as u64;
    }
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut dirs = BTreeSet::new();
    for descriptor in &plan.blobs {
        let digest = descriptor.digest();
        let file = root.join(blob_path(digest));
        let dir = file
            .parent()
            .expect("a blob path has a parent")
            .to_path_buf();
        if dirs.insert(dir.clone()) {
            make_dir(&dir)?;
        }
        let mut out = create_file(&file)?;
        let mut source = Exact::new(store.open_blob(digest)?, digest.clone(), descriptor.size());
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ArchiveError::Export {
                        blob: Some(digest.clone()),
                        source,
                    })
                }
            };
            out.write_all(&buf[..n]).at(&file)?;
        }
        out.sync_all().at(&file)?;
        written += descriptor.size();
    }
    // The files are synced; make their names durable too.
    dirs.extend([root.join("blobs"), root.clone()]);
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    temp.persist(path)?;
    Ok(written)
}

fn make_dir(dir: &Path) -> Result<(), ArchiveError> {
    fs::create_dir_all(dir).at(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).at(dir)
}

fn create_file(path: &Path) -> Result<File, ArchiveError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .at(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .at(path)?;
    Ok(file)
}

/// A file or directory being written under a temporary name beside its target;
/// removed when dropped unless persisted.
struct Temp {
    path: PathBuf,
    done: bool,
}

impl Temp {
    fn beside(target: &Path) -> Result<Self, ArchiveError> {
        let name = target
            .file_name()
            .ok_or_else(|| ArchiveError::Io {
                path: target.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            })?
            .to_string_lossy();
        let dir = parent_of(target);
        let path = dir.join(format!(".{name}.stowage-tmp-{}", std::process::id()));
        remove_any(&path);
        Ok(Self { path, done: false })
    }

    /// Renames into place and makes the rename durable.
    fn persist(mut self, target: &Path) -> Result<(), ArchiveError> {
        fs::rename(&self.path, target).at(target)?;
        self.done = true;
        let dir = parent_of(target);
        File::open(&dir).and_then(|d| d.sync_all()).at(&dir)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.done {
            remove_any(&self.path);
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn remove_any(path: &Path) {
    let _ = fs::remove_file(path).or_else(|_| fs::remove_dir_all(path));
}

/// Reads exactly `size` bytes of a stored blob, then reads on to the end so the
/// [`crate::store::BlobReader`] checks the digest: a blob that is shorter, longer or
/// changed fails the read instead of producing a broken archive.
struct Exact<R> {
    inner: R,
    digest: Digest,
    size: u64,
    left: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, digest: Digest, size: u64) -> Self {
        Self {
            inner,
            digest,
            size,
            left: size,
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "stored blob {} is longer than its {} bytes",
                    self.digest, self.size
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "stored blob {} ended after {} of its {} bytes",
                    self.digest,
                    self.size - self.left,
                    self.size
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
