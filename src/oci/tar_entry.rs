//! Tar entries as stowage writes them, for every archive it makes (package layers,
//! oci-archives, docker-archives): GNU headers, mtime 0, owner 0:0, so the same
//! content always gives the same bytes; entry sources held to exactly the size their
//! header announces; and an archive that failed left cut short, never closed.

use std::io::{self, BufReader, Read, Write};

/// Entry data is copied through a buffer of at most this size.
const COPY_BUFFER: usize = 1 << 20;

/// A header for an entry of `kind`, `size` bytes and `mode`, with nothing in it that
/// depends on when or by whom it was written.
pub fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Appends a directory entry (mode 0755).
pub fn append_dir<W: Write>(builder: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0, 0o755);
    builder.append_data(&mut header, path, io::empty())
}

/// Appends a regular file (mode 0644) of exactly `size` bytes read from `source`;
/// `what` names the source in the error when it is shorter or longer.
pub fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    source: impl Read,
    what: impl std::fmt::Display,
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, size, 0o644);
    // Buffered outside the size check, so the copy into the archive moves up to
    // COPY_BUFFER bytes per write.
    let buffer = usize::try_from(size)
        .unwrap_or(COPY_BUFFER)
        .clamp(1, COPY_BUFFER);
    let data = BufReader::with_capacity(buffer, Exact::new(source, what.to_string(), size));
    builder.append_data(&mut header, path, data)
}

/// Ends an archive, or on failure leaves it cut short: the builder's `Drop` would
/// write the end-of-archive marker and make a truncated stream look whole.
pub fn finish<W: Write, E>(
    builder: tar::Builder<W>,
    result: Result<(), E>,
    on_write: impl FnOnce(io::Error) -> E,
) -> Result<W, E> {
    match result {
        Ok(()) => builder.into_inner().map_err(on_write),
        Err(e) => {
            std::mem::forget(builder);
            Err(e)
        }
    }
}

/// Reads exactly `size` bytes and then requires the end of the source (where a
/// stored blob's reader checks its digest): a tar entry can be neither longer nor
/// shorter than its header says.
pub struct Exact<R> {
    inner: R,
    what: String,
    size: u64,
    left: u64,
}

impl<R: Read> Exact<R> {
    pub fn new(inner: R, what: String, size: u64) -> Self {
        Self {
            inner,
            what,
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
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is longer than the {} bytes announced",
                        self.what, self.size
                    ),
                )),
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
                    "{} ended after {} of the {} bytes announced",
                    self.what,
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
pub struct Counting<W> {
    pub inner: W,
    pub count: u64,
}

impl<W> Counting<W> {
    pub fn new(inner: W) -> Self {
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

#[cfg(test)]
mod tests {
    use super::Exact;
    use std::io::Read;

    fn read_exact_len(data: &[u8], size: u64) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Exact::new(data, "the source".to_string(), size).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn an_entry_source_must_have_exactly_its_announced_length() {
        assert_eq!(read_exact_len(b"abcd", 4).unwrap(), b"abcd");
        let short = read_exact_len(b"abc", 4).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("the source ended after 3 of the 4"),
            "{short}"
        );
        let long = read_exact_len(b"abcde", 4).unwrap_err();
        assert!(
            long.to_string().contains("the source is longer than the 4"),
            "{long}"
        );
    }

    #[test]
    fn headers_do_not_depend_on_time_or_owner() {
        let a = super::header(tar::EntryType::Regular, 7, 0o644);
        let b = super::header(tar::EntryType::Regular, 7, 0o644);
        assert_eq!(a.as_bytes()[..], b.as_bytes()[..]);
        assert_eq!(a.mtime().unwrap(), 0);
        assert_eq!((a.uid().unwrap(), a.gid().unwrap()), (0, 0));
    }
}
