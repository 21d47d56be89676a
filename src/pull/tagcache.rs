//! Tag-to-digest resolution cache with a per-call TTL: within the TTL a pull of a tag
//! whose image the store holds whole asks the registry nothing; TTL 0 always asks, so
//! a moved tag is seen at once. Kept in the store's `stowage/tags.json`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{parse_digest, write_replace, Digest, FileLock, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    digest: String,
    /// Seconds since the Unix epoch.
    resolved_at: u64,
}

/// The cache of one store.
pub struct TagCache {
    store: Store,
}

impl TagCache {
    pub fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
        }
    }

    /// The digest `reference` resolved to less than `ttl` ago, if any.
    pub fn get(&self, reference: &str, ttl: Duration) -> Option<Digest> {
        if ttl.is_zero() {
            return None;
        }
        let entry = self.read().remove(reference)?;
        let age = now().saturating_sub(entry.resolved_at);
        (age < ttl.as_secs()).then(|| parse_digest(&entry.digest).ok())?
    }

    /// Records that `reference` resolved to `digest` just now.
    pub fn put(&self, reference: &str, digest: &Digest) -> Result<(), StoreError> {
        let _lock = FileLock::exclusive(&self.store.state_file("tags.lock"))?;
        let mut entries = self.read();
        entries.insert(
            reference.to_string(),
            Entry {
                digest: digest.to_string(),
                resolved_at: now(),
            },
        );
        let json = serde_json::to_vec_pretty(&entries).expect("the cache serialises");
        // A cache: replaced atomically, but not worth an fsync.
        write_replace(&self.store.state_file("tags.json"), &json)
    }

    /// A missing or unreadable cache is an empty one: it can always be rebuilt.
    fn read(&self) -> BTreeMap<String, Entry> {
        std::fs::read(self.store.state_file("tags.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
