//! Eviction for cache nodes (`gc --max-size`, `--max-age`): refs removed least
//! recently used first (by [`Store::last_used`], else when their manifest was stored),
//! never a ref the caller keeps (a lockfile's pins), then every blob no remaining ref
//! reaches swept as `gc` sweeps. It runs under `gc`'s locks, so it waits for every
//! pull in progress (their leases) to end and never takes a blob one holds.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use oci_spec::image::{Descriptor, Digest};

use crate::error::StoreError;
use crate::gc::GcReport;
use crate::graph::live_digests;
use crate::index_file::ref_name;
use crate::lock::FileLock;
use crate::Store;

/// What to evict.
#[derive(Debug, Clone, Default)]
pub struct EvictOptions {
    /// Evict until the blobs the remaining refs reach take at most this many bytes.
    pub max_size: Option<u64>,
    /// Evict every ref not used for this long.
    pub max_age: Option<Duration>,
    /// Never evict a ref with one of these names, or naming one of these digests.
    pub keep_names: HashSet<String>,
    pub keep_digests: HashSet<Digest>,
    /// Report what would go; remove nothing.
    pub dry_run: bool,
    /// As for `gc`: idle partial ingests older than this are swept too.
    pub partials_older_than: Duration,
}

/// One ref evicted.
#[derive(Debug, Clone)]
pub struct Evicted {
    pub name: String,
    pub digest: Digest,
    /// When it was last used (or its manifest stored).
    pub last_used: SystemTime,
    /// The bytes of blobs only it reached.
    pub bytes_freed: u64,
}

/// What an eviction did.
#[derive(Debug, Default)]
pub struct EvictReport {
    pub evicted: Vec<Evicted>,
    /// The bytes the refs reached before, and what the remaining ones reach.
    pub live_bytes_before: u64,
    pub live_bytes_after: u64,
    /// The sweep that followed (its `bytes_freed` counts every blob removed,
    /// unreferenced ones from before included).
    pub gc: GcReport,
}

/// A named image that may be evicted.
struct Candidate {
    name: String,
    descriptor: Descriptor,
    last_used: SystemTime,
    blobs: Vec<Digest>,
}

impl Store {
    /// Evicts refs as `options` say, then sweeps what no ref reaches.
    pub fn evict(&self, options: &EvictOptions) -> Result<EvictReport, StoreError> {
        let _gc = FileLock::exclusive(&self.layout().gc_lock())?;
        let _refs = self.refs_lock()?;
        let used = self.last_used()?;
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        let mut holders: HashMap<Digest, usize> = HashMap::new();
        let mut candidates = Vec::new();
        for entry in self.index_entries()? {
            let name = ref_name(&entry).map(str::to_string);
            let root = (name.clone().unwrap_or_default(), entry.clone());
            let blobs: Vec<Digest> = live_digests(self, [root])?.into_iter().collect();
            for digest in &blobs {
                if !sizes.contains_key(digest) {
                    let size = self.stat(digest)?.unwrap_or(0);
                    sizes.insert(digest.clone(), size);
                }
                *holders.entry(digest.clone()).or_default() += 1;
            }
            let Some(name) = name else { continue }; // an unnamed root is kept
            if options.keep_names.contains(&name) || options.keep_digests.contains(entry.digest()) {
                continue;
            }
            let last_used = match used.get(&name) {
                Some(when) => *when,
                None => self.stored_at(entry.digest()),
            };
            candidates.push(Candidate {
                name,
                descriptor: entry,
                last_used,
                blobs,
            });
        }
        candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.name.cmp(&b.name)));
        let live_before: u64 = sizes.values().sum();
        let mut report = EvictReport {
            live_bytes_before: live_before,
            live_bytes_after: live_before,
            ..EvictReport::default()
        };
        let cutoff = options
            .max_age
            .and_then(|age| SystemTime::now().checked_sub(age));
        for candidate in candidates {
            let too_old = cutoff.is_some_and(|cutoff| candidate.last_used < cutoff);
            let too_big = options
                .max_size
                .is_some_and(|max| report.live_bytes_after > max);
            if !too_old && !too_big {
                // Sorted oldest first: once one is young enough and the store small
                // enough, so is every later one.
                break;
            }
            let mut freed = 0;
            for digest in &candidate.blobs {
                let count = holders.get_mut(digest).expect("counted");
                *count -= 1;
                if *count == 0 {
                    freed += sizes[digest];
                }
            }
            report.live_bytes_after -= freed;
            report.evicted.push(Evicted {
                name: candidate.name,
                digest: candidate.descriptor.digest().clone(),
                last_used: candidate.last_used,
                bytes_freed: freed,
            });
        }
        let names: Vec<&str> = report.evicted.iter().map(|e| e.name.as_str()).collect();
        if !options.dry_run && !names.is_empty() {
            self.remove_refs_locked(&names)?;
            self.forget_use(&names);
        }
        // On a dry run: what the sweep would remove besides, blobs no ref reached.
        report.gc = self.sweep_locked(&[], options.dry_run, options.partials_older_than)?;
        Ok(report)
    }

    /// When a blob was stored (its file's modification time), or the epoch.
    fn stored_at(&self, digest: &Digest) -> SystemTime {
        std::fs::metadata(self.layout().blob(digest))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}
