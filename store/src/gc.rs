//! Garbage collection and disk usage: keep what refs (and extra roots such as a
//! lockfile's images) reach, sweep the rest, and partial ingests nobody is writing.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest};

use crate::digest::parse_digest;
use crate::error::{IoContext, StoreError};
use crate::graph::live_digests;
use crate::index_file::INDEX_ANNOTATION;
use crate::lock::FileLock;
use crate::partials;
use crate::Store;

/// How long a partial ingest must have been left alone before [`Store::gc`] sweeps it.
pub const PARTIALS_OLDER_THAN: Duration = Duration::from_secs(60 * 60);

/// What `gc` removed (or would remove, on a dry run).
#[derive(Debug, Default)]
pub struct GcReport {
    pub kept: usize,
    pub removed: Vec<Digest>,
    pub bytes_freed: u64,
    /// Partial ingests swept: idle (nobody holds their lock) and unchanged for long.
    pub partials_removed: usize,
    /// Bytes of their files.
    pub partial_bytes_freed: u64,
    /// Referrers records dropped because their subject is no longer kept.
    pub referrer_records_removed: usize,
}

/// How much room a store takes.
#[derive(Debug, Default)]
pub struct Usage {
    pub refs: usize,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Partial downloads waiting to be resumed.
    pub ingests: usize,
    pub ingest_bytes: u64,
}

impl Store {
    /// Removes every blob that no ref and no `extra_roots` descriptor reaches, and the
    /// partial ingests left alone for [`PARTIALS_OLDER_THAN`]; see [`Store::gc_with`].
    pub fn gc(&self, extra_roots: &[Descriptor], dry_run: bool) -> Result<GcReport, StoreError> {
        self.gc_with(extra_roots, dry_run, PARTIALS_OLDER_THAN)
    }

    /// Removes every blob that no ref and no `extra_roots` descriptor reaches. Waits for
    /// every lease (pulls in progress) to end first, and holds the refs lock throughout.
    /// Also removes each partial ingest whose lock nobody holds (a writer outside any
    /// lease, such as `ingest`, holds it) and whose files are unchanged for
    /// `partials_older_than` (zero: every idle one).
    pub fn gc_with(
        &self,
        extra_roots: &[Descriptor],
        dry_run: bool,
        partials_older_than: Duration,
    ) -> Result<GcReport, StoreError> {
        let _gc = FileLock::exclusive(&self.layout().gc_lock())?;
        let _refs = self.refs_lock()?;
        self.sweep_locked(extra_roots, dry_run, partials_older_than)
    }

    /// [`Self::gc_with`] for a caller holding the gc lock (exclusively) and the refs
    /// lock.
    pub(crate) fn sweep_locked(
        &self,
        extra_roots: &[Descriptor],
        dry_run: bool,
        partials_older_than: Duration,
    ) -> Result<GcReport, StoreError> {
        let index = self.read_index()?;
        let roots = index
            .index
            .manifests()
            .iter()
            .map(|d| ("index.json".to_string(), d.clone()))
            .chain(
                extra_roots
                    .iter()
                    .map(|d| ("extra root".to_string(), d.clone())),
            );
        let mut live = live_digests(self, roots)?;
        // A ref pulled from an index for one platform names that index's digest (the
        // index may be stored, its other platforms are not); signatures of the index
        // are kept with the ref.
        let named_indexes: HashSet<Digest> = index
            .index
            .manifests()
            .iter()
            .filter_map(|d| d.annotations().as_ref()?.get(INDEX_ANNOTATION))
            .filter_map(|d| parse_digest(d).ok())
            .collect();
        drop(index);
        // The index blob itself stays too when stored (pull keeps it so the index's
        // signature can stand for the platform later); its other platforms do not.
        // (Live, stored or not: the sweep below only visits stored blobs.)
        live.extend(named_indexes);
        let mut report = GcReport::default();
        // A referrer lives while its subject does (and a referrer's referrers while it
        // does): grow the live set until no kept subject adds anything.
        let subjects = self.referrer_subjects()?;
        let mut expanded = HashSet::new();
        loop {
            let mut more = Vec::new();
            for subject in &subjects {
                if live.contains(subject) && expanded.insert(subject.clone()) {
                    for referrer in self.referrers(subject)? {
                        more.push((format!("referrer of {subject}"), referrer));
                    }
                }
            }
            if more.is_empty() {
                break;
            }
            live.extend(live_digests(self, more)?);
        }
        for subject in subjects.iter().filter(|s| !live.contains(*s)) {
            if !dry_run {
                self.remove_referrers_record(subject)?;
            }
            report.referrer_records_removed += 1;
        }
        for blob in self.blobs()? {
            let (digest, path, size) = blob?;
            if live.contains(&digest) {
                report.kept += 1;
                continue;
            }
            if !dry_run {
                fs::remove_file(&path).at(&path)?;
            }
            report.bytes_freed += size;
            report.removed.push(digest);
        }
        let swept = partials::sweep(&self.layout().ingest_dir(), partials_older_than, dry_run)?;
        report.partials_removed = swept.ingests;
        report.partial_bytes_freed = swept.bytes;
        Ok(report)
    }

    /// Counts refs, blobs and partial ingests.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let mut usage = Usage {
            refs: self.read_index()?.by_name.len(),
            ..Usage::default()
        };
        for blob in self.blobs()? {
            let (_, _, size) = blob?;
            usage.blobs += 1;
            usage.blob_bytes += size;
        }
        let dir = self.layout().ingest_dir();
        for entry in fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            if entry.path().extension().is_some_and(|e| e == "partial") {
                usage.ingests += 1;
                usage.ingest_bytes += entry.metadata().at(&entry.path())?.len();
            }
        }
        Ok(usage)
    }
}
