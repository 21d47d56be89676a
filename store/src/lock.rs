//! Advisory file locks (flock) shared between the processes that use one store.

use std::fs::{File, OpenOptions};
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
        let file = open(path)?;
        file.lock().at(path)?;
        Ok(Self { _file: file })
    }

    /// Blocks until a shared lock on `path` is held, creating the file if needed.
    pub fn shared(path: &Path) -> Result<Self, StoreError> {
        let file = open(path)?;
        file.lock_shared().at(path)?;
        Ok(Self { _file: file })
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
