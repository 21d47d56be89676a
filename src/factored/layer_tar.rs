//! Deterministic layer tars: the same entries always give the same bytes, compressed
//! and uncompressed, so the same package gives the same layer digest in every image
//! and on every machine running the same stowage build.
//!
//! What is fixed:
//! - entries come in byte order of their paths (the writer refuses anything else), and
//!   each directory is an entry of its own before its contents;
//! - GNU headers, mtime 0, uid/gid 0, empty user and group names, modes 0755 for
//!   directories and executables, 0644 for other files, 0777 for symlinks; paths over
//!   100 bytes use GNU long-name entries (themselves fixed);
//! - zstd at level [`ZSTD_LEVEL`], single-threaded, no checksum, no content size (the
//!   frame is streamed); gzip at level [`GZIP_LEVEL`] with mtime 0, no file name and OS
//!   byte 255 (unknown).
//!
//! Compressors promise identical output only for identical library versions: zstd and
//! zlib-rs are pinned by Cargo.lock, and a bump of either may change layer digests.
//!
//! The compressed layer is written to an unlinked temporary file in the store's
//! directory while both digests (compressed and uncompressed) are computed, then
//! ingested: the digest of a blob is known only once it is fully written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use super::package_path::is_clean;
use crate::oci::tar_entry;
use crate::store::{Digest, Hasher, MediaType, Store, StoreError};

/// zstd's own default level, as containerd and podman use for zstd layers.
pub const ZSTD_LEVEL: i32 = 3;
/// zlib's default level.
pub const GZIP_LEVEL: u32 = 6;

/// How a package layer is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerCompression {
    /// `tar+zstd`, the default (as the environment tool's own builder does).
    #[default]
    Zstd,
    /// `tar+gzip`, for engines that cannot read zstd.
    Gzip,
}

impl LayerCompression {
    pub fn media_type(self) -> MediaType {
        match self {
            Self::Zstd => MediaType::ImageLayerZstd,
            Self::Gzip => MediaType::ImageLayerGzip,
        }
    }

    /// `zstd` or `gzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }
}

/// A temporary file in the store's directory (same file system as the blobs), removed
/// from the directory as soon as it is open: nothing is left behind by a crash.
pub(crate) fn anonymous_file(store: &Store) -> io::Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        ".tmp-factored-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = store.root().join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::sha256(),
            written: 0,
        }
    }

    fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, Hashing<io::BufWriter<File>>>),
    Gzip(flate2::write::GzEncoder<Hashing<io::BufWriter<File>>>),
}

impl Encoder {
    fn new(compression: LayerCompression, out: File) -> io::Result<Self> {
        let sink = Hashing::new(io::BufWriter::with_capacity(1 << 20, out));
        Ok(match compression {
            LayerCompression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
                encoder.include_checksum(false)?;
                encoder.include_contentsize(false)?;
                Self::Zstd(encoder)
            }
            LayerCompression::Gzip => Self::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(sink, flate2::Compression::new(GZIP_LEVEL)),
            ),
        })
    }

    fn finish(self) -> io::Result<Hashing<io::BufWriter<File>>> {
        match self {
            Self::Zstd(encoder) => encoder.finish(),
            Self::Gzip(encoder) => encoder.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Zstd(encoder) => encoder.write(buf),
            Self::Gzip(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Zstd(encoder) => encoder.flush(),
            Self::Gzip(encoder) => encoder.flush(),
        }
    }
}

/// A finished layer blob, not yet in the store.
pub(crate) struct BuiltLayer {
    file: File,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

impl BuiltLayer {
    /// Ingests the blob; returns whether it was already stored (then nothing is written).
    pub fn commit(mut self, store: &Store) -> Result<bool, StoreError> {
        let Some(mut ingest) = store.ingest(&self.digest, self.size)? else {
            return Ok(true);
        };
        // A leftover partial of this very blob resumes where it stopped.
        self.file
            .seek(SeekFrom::Start(ingest.offset()))
            .map_err(StoreError::Source)?;
        ingest.copy_from(&mut self.file)?;
        ingest.commit()?;
        Ok(false)
    }
}

/// Writes a deterministic layer tar, compressed, into an anonymous file. Entries must
/// be added in strictly increasing byte order of their paths.
pub(crate) struct LayerTarWriter {
    builder: tar::Builder<Hashing<Encoder>>,
    last: Option<String>,
}

impl LayerTarWriter {
    pub fn new(compression: LayerCompression, out: File) -> io::Result<Self> {
        let mut builder = tar::Builder::new(Hashing::new(Encoder::new(compression, out)?));
        builder.follow_symlinks(false);
        Ok(Self {
            builder,
            last: None,
        })
    }

    fn header(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
    ) -> io::Result<tar::Header> {
        // The last line of defence for every layer stowage writes: whatever a package
        // or a stored layer said, no entry may climb out of the image's root.
        if !is_clean(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refusing layer entry {path:?}: not a plain relative path"),
            ));
        }
        if self.last.as_deref().is_some_and(|last| last >= path) {
            return Err(io::Error::other(format!(
                "layer entries out of order: {path:?} after {:?}",
                self.last.as_deref().unwrap_or("")
            )));
        }
        self.last = Some(path.to_string());
        Ok(tar_entry::header(kind, size, mode))
    }

    pub fn add_dir(&mut self, path: &str) -> io::Result<()> {
        let mut header = self.header(path, tar::EntryType::Directory, 0o755, 0)?;
        self.builder.append_data(&mut header, path, io::empty())
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut header = self.header(path, tar::EntryType::Symlink, 0o777, 0)?;
        self.builder.append_link(&mut header, path, target)
    }

    /// Adds a regular file of `size` bytes read from `content` (which must hold exactly
    /// that many).
    pub fn add_file(
        &mut self,
        path: &str,
        executable: bool,
        size: u64,
        content: impl Read,
    ) -> io::Result<()> {
        let mode = if executable { 0o755 } else { 0o644 };
        let mut header = self.header(path, tar::EntryType::Regular, mode, size)?;
        let mut counted = CountingReader {
            inner: content.take(size),
            read: 0,
        };
        self.builder.append_data(&mut header, path, &mut counted)?;
        if counted.read != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, got {}", counted.read),
            ));
        }
        Ok(())
    }

    /// Ends the tar, flushes the compressor and returns the blob with its digests.
    pub fn finish(self) -> io::Result<BuiltLayer> {
        let tar = self.builder.into_inner()?;
        let (encoder, diff_id, _) = tar.finish();
        let (buffered, digest, size) = encoder.finish()?.finish();
        let mut file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.flush()?;
        Ok(BuiltLayer {
            file,
            digest,
            size,
            diff_id,
        })
    }
}

struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The path of a tar entry for `relative` (relative to the prefix) under `prefix`
/// (absolute): `/opt/conda` + `bin/x` → `opt/conda/bin/x`.
pub(crate) fn entry_path(prefix: &str, relative: &str) -> String {
    let root = prefix.trim_start_matches('/');
    if relative.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{relative}")
    }
}

/// Every ancestor directory of the prefix itself (`/opt/conda` → `opt`, `opt/conda`).
pub(crate) fn prefix_dirs(prefix: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut current = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        if !current.is_empty() {
            current.push('/');
        }
        current.push_str(part);
        dirs.push(current.clone());
    }
    dirs
}
