//! Sweeping partial ingests nobody is writing: what a failed or hostile pull, or an
//! interrupted `ingest`, left in `ingest/` (`<alg>-<hex>.partial`, its `.json` sidecar
//! and its `.lock`).
//!
//! A partial is idle when its lock is free (a non-blocking exclusive flock succeeds:
//! any writer, in any process, holds it while it writes) and none of its files changed
//! for the given time (so an interrupted pull retried soon still resumes). The files
//! are removed under that lock, the lock file last; lock takers re-check that the path
//! still names what they locked, so one waiting on it simply starts anew.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{IoContext, StoreError};
use crate::ingest::remove_if_exists;
use crate::lock::FileLock;

/// The files one ingest keeps in `ingest/`.
const EXTENSIONS: [&str; 3] = ["partial", "json", "lock"];

/// What a sweep removed (or would remove, on a dry run).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Ingests removed (each its partial, sidecar and lock, whichever were there).
    pub ingests: usize,
    /// Bytes of the files removed.
    pub bytes: u64,
}

/// Removes the ingests in `dir` that are idle and unchanged for `older_than` or more.
pub(crate) fn sweep(dir: &Path, older_than: Duration, dry_run: bool) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    for (stem, lock_modified) in ingests(dir)? {
        let lock_path = dir.join(format!("{stem}.lock"));
        // A dry run creates no lock file: without one, nobody is writing.
        let lock = if dry_run && lock_modified.is_none() {
            None
        } else {
            match FileLock::try_exclusive(&lock_path)? {
                Some(lock) => Some(lock),
                None => {
                    tracing::debug!(ingest = %stem, "partial ingest in use; kept");
                    continue;
                }
            }
        };
        // Looked at under the lock: nobody writes these files now. The lock file's
        // time is the one listed (taking the lock may have made it just now).
        let mut files = data_files(dir, &stem)?;
        if let Some(modified) = lock_modified {
            files.push((lock_path.clone(), 0, modified));
        }
        let now = SystemTime::now();
        let idle = files
            .iter()
            .map(|(_, _, modified)| now.duration_since(*modified).unwrap_or_default())
            .min()
            .unwrap_or(Duration::MAX);
        if idle < older_than {
            if lock.is_some() && lock_modified.is_none() {
                remove_if_exists(&lock_path)?; // the one this sweep made
            }
            continue;
        }
        let bytes: u64 = files.iter().map(|(_, len, _)| len).sum();
        if !dry_run {
            for (path, _, _) in &files {
                remove_if_exists(path)?;
            }
            remove_if_exists(&lock_path)?;
        }
        tracing::debug!(ingest = %stem, bytes, ?idle, "idle partial ingest swept");
        swept.ingests += 1;
        swept.bytes += bytes;
    }
    Ok(swept)
}

/// The ingests with files in `dir`, by name without extension, each with its lock
/// file's modification time when it has one.
fn ingests(dir: &Path) -> Result<BTreeMap<String, Option<SystemTime>>, StoreError> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let (Some(stem), Some(ext)) = (stem.to_str(), ext.to_str()) else {
            continue;
        };
        if stem.starts_with('.') || !EXTENSIONS.contains(&ext) {
            continue; // a temp file of a sidecar being replaced, or not an ingest's
        }
        let lock_modified = found.entry(stem.to_string()).or_insert(None);
        if ext == "lock" {
            match fs::symlink_metadata(&path) {
                Ok(meta) => *lock_modified = Some(meta.modified().at(&path)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path),
            }
        }
    }
    Ok(found)
}

/// The partial data and sidecar of one ingest, with their lengths and modification
/// times (either may be missing).
fn data_files(dir: &Path, stem: &str) -> Result<Vec<(PathBuf, u64, SystemTime)>, StoreError> {
    let mut files = Vec::new();
    for ext in ["partial", "json"] {
        let path = dir.join(format!("{stem}.{ext}"));
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(&path),
        };
        let modified = meta.modified().at(&path)?;
        files.push((path, meta.len(), modified));
    }
    Ok(files)
}
