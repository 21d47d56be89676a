//! Reading a conda package from a file: its sha256, its metadata (`info/`) and a
//! stream of the files it installs.
//!
//! Two formats, told apart by their first bytes (not the file name, so a package
//! stored as a registry blob reads the same):
//! - `.conda`: a zip of `metadata.json`, `info-*.tar.zst` and `pkg-*.tar.zst`. The
//!   metadata comes from the `info-*` tar, the installed files are those of `pkg-*`.
//! - `.tar.bz2`: one tar holding `info/` and the files; the installed files are the
//!   whole archive's (`info/` included), as issue 9 specifies.
//!
//! The packages are read with `zip` + `zstd` + `bzip2` + `tar` rather than
//! `rattler_package_streaming`: the same streaming in a few dozen lines for ~11 crates,
//! where rattler adds ~110 crates and ~60 s to a clean release build. Nothing is held
//! whole in memory: tar entries are streamed one by one (the zip's members are stored,
//! read through the zip reader as a stream). A `.tar.bz2` keeps its metadata wherever
//! the archive put it (often at the end): [`CondaPackage::open_in`] decompresses it
//! once, keeping the tar in an unlinked file for its files, and caches the metadata
//! by the package's sha256; [`CondaPackage::open`] decompresses it once for the
//! metadata and again for the files.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{Digest, Hasher, Store};

use super::info_cache;
use super::layer_tar::anonymous_file;
use super::metadata::{InfoFiles, PackageMetadata};
use super::package_path::normalize;
pub use super::PackageError;

/// Largest `info/` file read into memory (`paths.json` of big packages runs to MBs).
const INFO_LIMIT: u64 = 256 << 20;

/// The archive format of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackageFormat {
    /// `.conda` (zip of zstd tars); OCI artifact media type `application/vnd.conda.package.v2`.
    Conda,
    /// `.tar.bz2`; OCI artifact media type `application/vnd.conda.package.v1`.
    TarBz2,
}

impl PackageFormat {
    /// The file name extension conda uses.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Conda => ".conda",
            Self::TarBz2 => ".tar.bz2",
        }
    }
}

/// The kind of an archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A symbolic link and its target, as written.
    Symlink(String),
    /// A hard link to an earlier entry of the same archive (a normalised path).
    HardLink(String),
}

/// One entry of the files a package installs, handed out while streaming.
pub struct ArchiveEntry<'a> {
    /// Relative, `/`-separated, without `.` or empty components.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits from the archive.
    pub mode: u32,
    /// Content length (files only).
    pub size: u64,
    /// The content (files only; empty for other kinds).
    pub reader: &'a mut dyn Read,
}

/// A conda package file, its sha256 and its metadata. Cheap to keep: the files
/// themselves are streamed again by [`CondaPackage::read_entries`].
#[derive(Debug, Clone)]
pub struct CondaPackage {
    path: PathBuf,
    format: PackageFormat,
    sha256: Digest,
    size: u64,
    metadata: PackageMetadata,
    /// The decompressed tar of a `.tar.bz2`, kept by [`CondaPackage::open_in`].
    decoded: Option<Arc<File>>,
}

impl CondaPackage {
    /// Opens a package: hashes the file, tells its format and reads its metadata.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, PackageError> {
        Self::open_with(path.into(), None)
    }

    /// [`CondaPackage::open`] for building layers in `store`: metadata the store's
    /// info cache holds for this sha256 is not read from the archive again, and when
    /// it must be, a `.tar.bz2` is decompressed once for both its metadata and its
    /// files (the tar is kept in an unlinked file in the store until
    /// [`CondaPackage::release`]), not once for each.
    pub fn open_in(store: &Store, path: impl Into<PathBuf>) -> Result<Self, PackageError> {
        Self::open_with(path.into(), Some(store))
    }

    fn open_with(path: PathBuf, store: Option<&Store>) -> Result<Self, PackageError> {
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let format = sniff(&path, &label)?;
        let (sha256, size) = sha256_file(&path)?;
        let cached = store.and_then(|store| info_cache::get(store, &sha256));
        let (info, decoded) = match cached {
            Some(info) => (info, None),
            None => {
                let (info, decoded) = read_info(&path, &label, format, store)?;
                if let Some(store) = store {
                    if let Err(e) = info_cache::put(store, &sha256, &info) {
                        // Only the next build of this package is slower for it.
                        tracing::debug!(package = %label, "info cache not written: {e}");
                    }
                }
                (info, decoded)
            }
        };
        let metadata = info.parse(&label)?;
        Ok(Self {
            path,
            format,
            sha256,
            size,
            metadata,
            decoded,
        })
    }

    /// Drops the decompressed copy [`CondaPackage::open_in`] kept, once the files
    /// have been read; later reads decompress the archive again.
    pub fn release(&mut self) {
        self.decoded = None;
    }

    /// Streams the files the package installs, in archive order: the `pkg-*` part of a
    /// `.conda`, the whole of a `.tar.bz2`. Paths that would leave the prefix (absolute,
    /// `..`) and entry types a package cannot hold (devices, fifos) are errors.
    pub fn read_entries<E: From<PackageError>>(
        &self,
        mut visit: impl FnMut(ArchiveEntry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let label = self.label();
        if let Some(decoded) = &self.decoded {
            let tar = BufReader::with_capacity(
                1 << 20,
                ReadFrom {
                    file: decoded,
                    at: 0,
                },
            );
            return read_tar(tar, &label, &mut visit);
        }
        match self.format {
            PackageFormat::Conda => read_conda_member(&self.path, &label, "pkg-", &mut visit),
            PackageFormat::TarBz2 => read_tar_bz2(&self.path, &label, &mut visit),
        }
    }

    /// `name-version-build`, how conda names a package (and its `conda-meta` record).
    pub fn label(&self) -> String {
        format!(
            "{}-{}-{}",
            self.metadata.name, self.metadata.version, self.metadata.build
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> PackageFormat {
        self.format
    }

    /// The sha256 of the package file, as conda's repodata records it.
    pub fn sha256(&self) -> &Digest {
        &self.sha256
    }

    /// The package file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn metadata(&self) -> &PackageMetadata {
        &self.metadata
    }
}

/// Gathers the package's info files from its archive. With a `store`, a `.tar.bz2`
/// is copied as it is decompressed into an unlinked file there, returned for reading
/// its files from.
fn read_info(
    path: &Path,
    label: &str,
    format: PackageFormat,
    store: Option<&Store>,
) -> Result<(InfoFiles, Option<Arc<File>>), PackageError> {
    let mut info = InfoFiles::default();
    let mut gather = |entry: ArchiveEntry<'_>| -> Result<(), PackageError> {
        if let (Some(name), EntryKind::File) = (InfoFiles::wanted(&entry.path), &entry.kind) {
            if entry.size > INFO_LIMIT {
                return Err(PackageError::metadata(label, name, "larger than 256 MiB"));
            }
            let mut data = Vec::with_capacity(entry.size as usize);
            entry
                .reader
                .read_to_end(&mut data)
                .map_err(|e| PackageError::metadata(label, name, e))?;
            info.insert(name, data);
        }
        Ok(())
    };
    match (format, store) {
        (PackageFormat::Conda, _) => read_conda_member(path, label, "info-", &mut gather)?,
        (PackageFormat::TarBz2, None) => read_tar_bz2(path, label, &mut gather)?,
        (PackageFormat::TarBz2, Some(store)) => {
            let io_error = |source| PackageError::Io {
                path: path.to_path_buf(),
                source,
            };
            let copy = anonymous_file(store).map_err(io_error)?;
            let decoder = bzip2::read::MultiBzDecoder::new(BufReader::new(open_file(path)?));
            let mut tee = Tee {
                inner: decoder,
                copy: BufWriter::with_capacity(1 << 20, copy),
                room: store.free_space().unwrap_or(u64::MAX),
                copied: 0,
            };
            read_tar(&mut tee, label, &mut gather)?;
            // The rest of the stream (padding after the end-of-archive blocks) is
            // copied too, so the copy is the whole tar.
            io::copy(&mut tee, &mut io::sink()).map_err(io_error)?;
            let copy = tee
                .copy
                .into_inner()
                .map_err(|e| io_error(e.into_error()))?;
            return Ok((info, Some(Arc::new(copy))));
        }
    }
    Ok((info, None))
}

/// A reader that writes what it reads to `copy`, up to `room` bytes: a package
/// that decompresses to more than the store's file system has free (a bzip2 bomb) is
/// refused when it gets there, not when the disk is full.
struct Tee<R, W> {
    inner: R,
    copy: W,
    room: u64,
    copied: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copied += n as u64;
        if self.copied > self.room {
            return Err(io::Error::other(format!(
                "it decompresses to more than the {} bytes free where the store is",
                self.room
            )));
        }
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Reads a shared file from an offset of its own (positioned reads leave the file's
/// offset alone, so clones of one package read independently).
struct ReadFrom<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The sha256 and size of a file, read in 1 MiB chunks.
fn sha256_file(path: &Path) -> Result<(Digest, u64), PackageError> {
    let io_error = |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut hasher = Hasher::sha256();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((hasher.finish(), size)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// Tells the format from the magic bytes: `PK\x03\x04` (zip) or `BZh` (bzip2).
fn sniff(path: &Path, label: &str) -> Result<PackageFormat, PackageError> {
    let io_error = |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(io_error)?;
    let n = file.read(&mut magic).map_err(io_error)?;
    match &magic[..n] {
        [b'P', b'K', 3, 4] => Ok(PackageFormat::Conda),
        [b'B', b'Z', b'h', ..] => Ok(PackageFormat::TarBz2),
        _ => Err(PackageError::format(
            label,
            "neither a .conda (zip) nor a .tar.bz2 file",
        )),
    }
}

/// Streams the tar of the `.conda` member whose name starts with `part` (`info-` or
/// `pkg-`) and ends with `.tar.zst`.
fn read_conda_member<E: From<PackageError>>(
    path: &Path,
    label: &str,
    part: &str,
    visit: &mut dyn FnMut(ArchiveEntry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let file = open_file(path)?;
    let mut zip =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| PackageError::format(label, e))?;
    let member = zip
        .file_names()
        .find(|n| n.starts_with(part) && n.ends_with(".tar.zst") && !n.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| PackageError::format(label, format!("no {part}*.tar.zst member")))?;
    let reader = zip
        .by_name(&member)
        .map_err(|e| PackageError::format(label, e))?;
    let decoder =
        zstd::stream::read::Decoder::new(reader).map_err(|e| PackageError::format(label, e))?;
    read_tar(decoder, label, visit)
}

fn open_file(path: &Path) -> Result<File, PackageError> {
    File::open(path).map_err(|source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_tar_bz2<E: From<PackageError>>(
    path: &Path,
    label: &str,
    visit: &mut dyn FnMut(ArchiveEntry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let file = open_file(path)?;
    read_tar(
        bzip2::read::MultiBzDecoder::new(BufReader::new(file)),
        label,
        visit,
    )
}

/// Walks a tar stream, normalising each entry for `visit`.
fn read_tar<E: From<PackageError>>(
    stream: impl Read,
    label: &str,
    visit: &mut dyn FnMut(ArchiveEntry<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let broken = |e: io::Error| PackageError::format(label, format!("reading the tar: {e}"));
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_error = |reason: String| PackageError::Entry {
            package: label.to_string(),
            path: raw.clone(),
            reason,
        };
        let path = normalize(&raw).map_err(entry_error)?;
        let header = entry.header();
        let mode = header.mode().map_err(|e| entry_error(e.to_string()))? & 0o7777;
        let link_target = || -> Result<String, PackageError> {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| entry_error("a link without a target".into()))?;
            Ok(String::from_utf8_lossy(&target).into_owned())
        };
        let entry_type = header.entry_type();
        let kind = if entry_type.is_file() {
            EntryKind::File
        } else if entry_type.is_dir() {
            EntryKind::Directory
        } else if entry_type.is_symlink() {
            EntryKind::Symlink(link_target()?)
        } else if entry_type.is_hard_link() {
            EntryKind::HardLink(normalize(&link_target()?).map_err(entry_error)?)
        } else if entry_type.is_pax_global_extensions() {
            continue;
        } else {
            return Err(entry_error(format!("unsupported entry type {entry_type:?}")).into());
        };
        if path.is_empty() {
            continue; // `./`, the archive's root
        }
        let size = if kind == EntryKind::File {
            entry.size()
        } else {
            0
        };
        visit(ArchiveEntry {
            path,
            kind,
            mode,
            size,
            reader: &mut entry,
        })?;
    }
    Ok(())
}
