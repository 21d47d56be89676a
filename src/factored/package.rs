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
//! read through the zip reader as a stream). A `.tar.bz2` is decompressed twice, once
//! for its metadata (which may sit at the end) and once for its files.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::store::{Digest, Hasher};

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
}

impl CondaPackage {
    /// Opens a package: hashes the file, tells its format and reads its metadata.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, PackageError> {
        let path = path.into();
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let format = sniff(&path, &label)?;
        let (sha256, size) = sha256_file(&path)?;
        let mut info = InfoFiles::default();
        let mut gather = |entry: ArchiveEntry<'_>| -> Result<(), PackageError> {
            if let (Some(name), EntryKind::File) = (InfoFiles::wanted(&entry.path), &entry.kind) {
                if entry.size > INFO_LIMIT {
                    return Err(PackageError::metadata(&label, name, "larger than 256 MiB"));
                }
                let mut data = Vec::with_capacity(entry.size as usize);
                entry
                    .reader
                    .read_to_end(&mut data)
                    .map_err(|e| PackageError::metadata(&label, name, e))?;
                info.insert(name, data);
            }
            Ok(())
        };
        match format {
            PackageFormat::Conda => read_conda_member(&path, &label, "info-", &mut gather)?,
            PackageFormat::TarBz2 => read_tar_bz2(&path, &label, &mut gather)?,
        }
        let metadata = info.parse(&label)?;
        Ok(Self {
            path,
            format,
            sha256,
            size,
            metadata,
        })
    }

    /// Streams the files the package installs, in archive order: the `pkg-*` part of a
    /// `.conda`, the whole of a `.tar.bz2`. Paths that would leave the prefix (absolute,
    /// `..`) and entry types a package cannot hold (devices, fifos) are errors.
    pub fn read_entries<E: From<PackageError>>(
        &self,
        mut visit: impl FnMut(ArchiveEntry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let label = self.label();
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
