//! Advisory file locks (flock) shared between the processes that use one store.
//!
//! A lock file may be removed while it is held (a committed or discarded ingest, gc
//! sweeping an idle partial): whoever was waiting on it then holds a lock on a file no
//! path names, which excludes nobody. So every taker checks, once it holds the lock,
//! that the path still names the file it locked, and starts again when it does not.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{IoContext, StoreError};

/// A held lock; released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until an exclusive lock on `path` is held, creating the file if needed.
    pub fn exclusive(path: &Path) -> Result<Self, StoreError> {
        Self::take(path, File::lock)
    }

    /// Blocks until a shared lock on `path` is held, creating the file if needed.
    pub fn shared(path: &Path) -> Result<Self, StoreError> {
        Self::take(path, File::lock_shared)
    }

    /// An exclusive lock on `path` if nobody holds one right now (creating the file if
    /// needed); `None` when someone does.
    pub fn try_exclusive(path: &Path) -> Result<Option<Self>, StoreError> {
        loop {
            let file = open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e).at(path),
            }
            if still_named(path, &file)? {
                return Ok(Some(Self { _file: file }));
            }
        }
    }

    fn take(path: &Path, lock: impl Fn(&File) -> io::Result<()>) -> Result<Self, StoreError> {
        loop {
            let file = open(path)?;
            lock(&file).at(path)?;
            if still_named(path, &file)? {
                return Ok(Self { _file: file });
            }
            tracing::trace!(path = %path.display(), "lock file replaced while waiting; again");
        }
    }
}

/// Whether `path` names the file `file` has open (it was not removed or replaced).
fn still_named(path: &Path, file: &File) -> Result<bool, StoreError> {
    let held = file.metadata().at(path)?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).at(path),
    }
}

fn open(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at(path)
}
