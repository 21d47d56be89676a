//! A package's `info/` files, by the package's sha256, so that factoring a package
//! seen before reads no archive at all: with its metadata known, its layer key is
//! known, and the layer cache (`super::layer_cache`) answers the rest. A `.tar.bz2`
//! keeps `info/` wherever the archive put it (often at the end), so without this
//! every build would decompress the whole package just to learn its name.
//!
//! Kept in the store's `stowage/packages/`, one JSON file per package named by its
//! sha256 hex, holding the raw files (parsed again on every read, so a change to
//! the parser never meets stale results). A cache: a missing or unreadable entry,
//! or one for a package whose info files are not UTF-8, is read from the archive
//! again; writes are atomic but not fsynced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{Digest, Store, StoreError};

use super::cache_file::{read_entry, write_entry};
use super::metadata::InfoFiles;

/// Bumped when the entry's format changes.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Entry {
    format: u32,
    files: BTreeMap<String, String>,
}

/// The info files cached for the package `sha256`, if any.
pub fn get(store: &Store, sha256: &Digest) -> Option<InfoFiles> {
    let entry: Entry = read_entry(&path(store, sha256))?;
    if entry.format != FORMAT {
        return None;
    }
    let mut info = InfoFiles::default();
    for (name, text) in entry.files {
        info.insert(InfoFiles::wanted(&name)?, text.into_bytes());
    }
    Some(info)
}

/// Remembers `info` for the package `sha256` (nothing, when a file is not UTF-8).
pub fn put(store: &Store, sha256: &Digest, info: &InfoFiles) -> Result<(), StoreError> {
    let mut files = BTreeMap::new();
    for (name, data) in info.files() {
        let Ok(text) = std::str::from_utf8(data) else {
            return Ok(());
        };
        files.insert(name.to_string(), text.to_string());
    }
    let entry = Entry {
        format: FORMAT,
        files,
    };
    write_entry(&path(store, sha256), &entry)
}

fn path(store: &Store, sha256: &Digest) -> PathBuf {
    store
        .state_file("packages")
        .join(format!("{}.json", sha256.digest()))
}
