//! Tag-to-digest resolution cache with a per-call TTL: within the TTL a pull of a tag
//! whose image the store holds whole asks the registry nothing; TTL 0 always asks, so
//! a moved tag is seen at once. Kept in the store's `stowage/tags.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{parse_digest, write_replace, Digest, FileLock, FileStamp, Store, StoreError};

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

type Entries = BTreeMap<String, Entry>;

/// The last version of each `tags.json` this process read or wrote, with the file's
/// identity, so a sync of 10 000 tags parses the file once, not once per tag.
static PARSED: Mutex<Option<(PathBuf, FileStamp, Arc<Entries>)>> = Mutex::new(None);

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
        let entries = self.read();
        let entry = entries.get(reference)?;
        let age = now().saturating_sub(entry.resolved_at);
        (age < ttl.as_secs()).then(|| parse_digest(&entry.digest).ok())?
    }

    /// Records that `reference` resolved to `digest` just now.
    pub fn put(&self, reference: &str, digest: &Digest) -> Result<(), StoreError> {
        self.put_all(&[(reference.to_string(), digest.clone())])
    }

    /// Records many resolutions with one rewrite of the file.
    pub fn put_all(&self, resolved: &[(String, Digest)]) -> Result<(), StoreError> {
        if resolved.is_empty() {
            return Ok(());
        }
        let _lock = FileLock::exclusive(&self.store.state_file("tags.lock"))?;
        let mut entries = (*self.read()).clone();
        let resolved_at = now();
        for (reference, digest) in resolved {
            let entry = Entry {
                digest: digest.to_string(),
                resolved_at,
            };
            entries.insert(reference.clone(), entry);
        }
        let json = serde_json::to_vec_pretty(&entries).expect("the cache serialises");
        // A cache: replaced atomically, but not worth an fsync.
        let path = self.path();
        write_replace(&path, &json)?;
        if let Ok(meta) = std::fs::metadata(&path) {
            *parsed() = Some((path, FileStamp::of(&meta), Arc::new(entries)));
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.store.state_file("tags.json")
    }

    /// A missing or unreadable cache is an empty one: it can always be rebuilt.
    fn read(&self) -> Arc<Entries> {
        let path = self.path();
        let Ok(mut file) = File::open(&path) else {
            return Arc::default();
        };
        let Ok(stamp) = file.metadata().map(|m| FileStamp::of(&m)) else {
            return Arc::default();
        };
        if let Some((seen_path, seen, entries)) = parsed().as_ref() {
            if *seen_path == path && *seen == stamp {
                return entries.clone();
            }
        }
        let mut bytes = Vec::new();
        let entries: Arc<Entries> = Arc::new(
            file.read_to_end(&mut bytes)
                .ok()
                .and_then(|_| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default(),
        );
        *parsed() = Some((path, stamp, entries.clone()));
        entries
    }
}

fn parsed() -> std::sync::MutexGuard<'static, Option<(PathBuf, FileStamp, Arc<Entries>)>> {
    PARSED.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::TagCache;
    use crate::store::{parse_digest, Store};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tag_is_served_within_its_ttl_and_never_with_ttl_zero() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = TagCache::new(&store);
        let digest = parse_digest(DIGEST).unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(cache.get("r.example/a:1", hour), None);
        cache.put("r.example/a:1", &digest).unwrap();
        assert_eq!(cache.get("r.example/a:1", hour), Some(digest.clone()));
        assert_eq!(cache.get("r.example/a:1", Duration::ZERO), None);
        assert_eq!(cache.get("r.example/a:2", hour), None);
        // Another handle on the same store sees it: the cache lives in the store.
        assert_eq!(
            TagCache::new(&store).get("r.example/a:1", hour),
            Some(digest)
        );
    }

    #[test]
    fn an_unreadable_cache_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::fs::write(store.state_file("tags.json"), b"{not json").unwrap();
        let cache = TagCache::new(&store);
        assert_eq!(cache.get("r.example/a:1", Duration::from_secs(60)), None);
        cache
            .put("r.example/a:1", &parse_digest(DIGEST).unwrap())
            .unwrap();
        assert!(cache
            .get("r.example/a:1", Duration::from_secs(60))
            .is_some());
    }
}
