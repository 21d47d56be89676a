//! What each package's layer turned out to be, by its [`LayerKey`], so that factoring a
//! package the store already has a layer for does not decompress, rewrite and
//! recompress it again: a layer's digest is a function of its key (see
//! [`super::install`]), so the layer built once is the layer every later build would
//! make.
//!
//! Kept in the store's `stowage/layers/`, one small JSON file per key, named by the
//! sha256 of the key and of the code that writes layers (build.rs hashes it, with the
//! Cargo.lock that pins the compressors: another build may write other bytes). It is a
//! cache: a missing, unreadable or stale entry, or one whose blob is no longer in the
//! store, is rebuilt; writes are atomic but not fsynced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{parse_digest, sha256_of, MediaType, Store, StoreError};

use super::cache_file::{read_entry, write_entry};
use super::package_layer::{LayerKey, PackageLayer};

/// One cached layer: a [`PackageLayer`] less its key and `already_stored`.
#[derive(Serialize, Deserialize)]
struct Entry {
    digest: String,
    size: u64,
    media_type: String,
    diff_id: String,
    annotations: BTreeMap<String, String>,
    label: String,
    record: Map<String, Value>,
}

/// The layer built earlier for `key`, if the cache knows it and the store still holds
/// its blob.
pub fn get(store: &Store, key: &LayerKey) -> Option<PackageLayer> {
    let entry: Entry = read_entry(&path(store, key))?;
    let digest = parse_digest(&entry.digest).ok()?;
    if store.stat(&digest).ok()?? != entry.size {
        return None;
    }
    Some(PackageLayer {
        digest,
        size: entry.size,
        media_type: MediaType::from(entry.media_type.as_str()),
        diff_id: parse_digest(&entry.diff_id).ok()?,
        annotations: entry.annotations,
        key: key.clone(),
        label: entry.label,
        record: entry.record,
        already_stored: true,
    })
}

/// Remembers `layer` under its key.
pub fn put(store: &Store, layer: &PackageLayer) -> Result<(), StoreError> {
    let entry = Entry {
        digest: layer.digest.to_string(),
        size: layer.size,
        media_type: layer.media_type.to_string(),
        diff_id: layer.diff_id.to_string(),
        annotations: layer.annotations.clone(),
        label: layer.label.clone(),
        record: layer.record.clone(),
    };
    write_entry(&path(store, &layer.key), &entry)
}

fn path(store: &Store, key: &LayerKey) -> PathBuf {
    let python = key.python.map(|p| p.to_string()).unwrap_or_default();
    let id = format!(
        "stowage {} {}\n{}\n{}\n{python}\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("STOWAGE_LAYER_CODE"),
        key.package_sha256,
        key.prefix,
        key.compression.media_type(),
    );
    let name = sha256_of(id.as_bytes()).digest().to_string();
    store.state_file("layers").join(format!("{name}.json"))
}
