//! Export: a plan's images and blobs written as an OCI layout, either a deterministic
//! tar streamed from the store or a directory. Every blob is re-hashed while it is
//! copied, so a blob that rotted in the store stops the export instead of travelling.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::oci::layout::{self, blob_path, NamedImage, INDEX_JSON, OCI_LAYOUT, OCI_LAYOUT_JSON};
use crate::oci::tar_entry::{Counting, Exact};
use crate::store::Store;

use super::plan::{ExportPlan, ExportedImage};
use super::{ArchiveError, ArchiveFormat, IoAt};

/// Blobs are copied through a buffer this big.
const COPY_BUFFER: usize = 1 << 20;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub format: ArchiveFormat,
    pub output: PathBuf,
    pub images: Vec<ExportedImage>,
    /// Referrer entries written (a referrer of two subjects counts twice).
    pub referrers: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Bytes written (the archive's size, or the directory's files).
    pub written: u64,
    pub seconds: f64,
}

/// Writes the plan as `output` in `format` (`-` writes the archive to stdout).
pub fn export(
    store: &Store,
    plan: &ExportPlan,
    output: &Path,
    format: ArchiveFormat,
) -> Result<ExportReport, ArchiveError> {
    let started = Instant::now();
    let _lease = store.lease()?;
    let written = match format {
        ArchiveFormat::OciArchive if output.as_os_str() == "-" => {
            let stdout = io::stdout().lock();
            let mut out = Counting::new(BufWriter::with_capacity(COPY_BUFFER, stdout));
            write_archive(store, plan, &mut out)?;
            out.inner.flush().at(output)?;
            out.count
        }
        ArchiveFormat::OciArchive => write_archive_file(store, plan, output)?,
        ArchiveFormat::OciDir => write_dir(store, plan, output)?,
    };
    Ok(ExportReport {
        format,
        output: output.to_path_buf(),
        images: plan.images.clone(),
        referrers: plan.referrers.len(),
        blobs: plan.blobs.len(),
        blob_bytes: plan.bytes,
        written,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Streams the plan into `out` as an oci-archive (see [`crate::oci::layout`]): the
/// blobs sorted by digest, so the same plan always gives the same bytes.
pub fn write_archive<W: Write>(
    store: &Store,
    plan: &ExportPlan,
    out: W,
) -> Result<W, ArchiveError> {
    Ok(layout::write_archive(
        store,
        &named(plan),
        &plan.blobs,
        out,
    )?)
}

/// index.json's entries: the images by name, then the referrers without one.
fn named(plan: &ExportPlan) -> Vec<NamedImage> {
    let images = plan.images.iter().map(|image| NamedImage {
        name: image.name.clone(),
        descriptor: image.descriptor.clone(),
    });
    let referrers = plan.referrers.iter().map(|referrer| NamedImage {
        name: String::new(),
        descriptor: referrer.descriptor.clone(),
    });
    images.chain(referrers).collect()
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
    let index = layout::index_json(&named(plan));
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
        let mut source = Exact::new(
            store.open_blob(digest)?,
            format!("stored blob {digest}"),
            descriptor.size(),
        );
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
