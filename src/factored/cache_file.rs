//! One entry of the store's factoring caches (`super::layer_cache`,
//! `super::info_cache`): a small JSON file, read as a miss when missing or
//! unreadable, written atomically (not fsynced) with its folder made first.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{write_replace, StoreError};

/// The entry at `path`, if the file is there and reads as one.
pub(super) fn read_entry<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes `entry` at `path`, making its folder first.
pub(super) fn write_entry(path: &Path, entry: &impl Serialize) -> Result<(), StoreError> {
    let dir = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_replace(
        path,
        &serde_json::to_vec(entry).expect("an entry serialises"),
    )
}
