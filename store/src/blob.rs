//! Reading blobs back, with their integrity checked as they are read.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::digest::Hasher;

/// Reads a stored blob and fails at end of file if the bytes no longer match the digest
/// they are stored under (a bit flipped on disk, a file edited by hand).
pub struct BlobReader {
    file: File,
    path: PathBuf,
    expected: Digest,
    hasher: Option<Hasher>,
    read: u64,
}

impl BlobReader {
    pub(crate) fn new(file: File, path: PathBuf, expected: Digest, hasher: Hasher) -> Self {
        Self {
            file,
            path,
            expected,
            hasher: Some(hasher),
            read: 0,
        }
    }

    /// The file the blob is read from.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(hasher) = self.hasher.as_mut() {
            if n > 0 {
                hasher.update(&buf[..n]);
                self.read += n as u64;
            } else if !buf.is_empty() {
                let actual = self.hasher.take().expect("checked above").finish();
                if actual != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "stored blob {} is corrupt: its {} bytes hash to {} \
                             (run `stowage verify`)",
                            self.expected, self.read, actual
                        ),
                    ));
                }
            }
        }
        Ok(n)
    }
}
