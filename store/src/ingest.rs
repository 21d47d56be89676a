//! Ingest: the only way bytes enter the store.
//!
//! An [`Ingest`] is opened for an expected digest and size. Bytes are written
//! sequentially or at offsets (parallel range downloads); the digest follows the
//! contiguous prefix as it grows. [`Ingest::commit`] checks size and digest, fsyncs and
//! renames into `blobs/`, so nothing unverified is ever visible there.
//!
//! A partial ingest survives a crash: sequential data is resumed from the file's
//! length, positional data from the ranges recorded in a sidecar: ranges synced to disk
//! (trusted after any crash) and, noted every 25 ms without a sync, ranges written
//! during this boot (trusted only until the machine restarts: a killed process leaves
//! its bytes in the page cache, a power cut may not). Either way the prefix is
//! re-hashed from disk, so a wrong note costs a fetch, never a wrong blob.
//! One process writes a given digest at a time (a lock per ingest); a second one waits
//! and then finds the blob present.

mod prefix_hash;
mod ranges;
mod sidecar;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

pub use ranges::RangeSet;

use prefix_hash::PrefixHash;
use sidecar::{boot_id, read_sidecar};

use crate::digest::{Hasher, READ_CHUNK};
use crate::error::{IoContext, StoreError};
use crate::layout::Layout;
use crate::lock::FileLock;

/// Positional ingests sync and record their ranges after an eighth of the blob (at
/// least this much) has arrived since the last record: at most eight syncs a blob
/// on a fast link...
const RECORD_AT_LEAST: u64 = 8 << 20;

/// Between those syncs, what is written is noted in the sidecar every this often, with
/// no sync, under the machine's boot id: a killed process leaves its bytes in the page
/// cache, so the same boot may trust them; after a reboot only synced ranges count.
/// A kill then costs at most this long's worth of bytes, not an eighth of the blob
/// (30 kills on a 2 MB/s link once cost 2.36x the image), and a note is one small
/// file renamed, no sync: a fast download is over before it pays for more than one.
const NOTE_INTERVAL: Duration = Duration::from_millis(25);

/// Writeback of what was written is started every this many new bytes, wherever they
/// landed, so neither the syncs that record ranges nor the fsync at commit find much
/// left to write.
const FLUSH_EVERY: u64 = 8 << 20;

/// What a committed ingest produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub digest: Digest,
    pub size: u64,
}

struct State {
    /// Bytes on disk.
    written: RangeSet,
    /// Bytes on disk or being written right now.
    claimed: RangeSet,
    positional: bool,
    /// Bytes of `written` the sidecar recorded (synced or noted) last.
    recorded: u64,
    /// The ranges known synced.
    durable: RangeSet,
    /// A sync and record is under way (outside the lock).
    recording: bool,
    /// When the sidecar was last written.
    noted_at: Instant,
    /// Bytes written since writeback to disk was last started.
    unflushed: u64,
    /// A write failed or went past the size: the data cannot be trusted.
    poisoned: bool,
}

/// A writer for one blob; see the module docs.
pub struct Ingest {
    layout: Layout,
    digest: Digest,
    size: u64,
    file: File,
    state: Mutex<State>,
    /// The digest of the contiguous prefix (kept by the writers for a small blob, by
    /// a thread of its own for a big one); taken by commit.
    hash: Option<PrefixHash>,
    /// New bytes between two records of a positional ingest.
    record_every: u64,
    finished: bool,
    _lock: FileLock,
}

impl Ingest {
    /// Opens (or resumes) the ingest of `digest`; `None` when the blob is already stored.
    pub(crate) fn open(
        layout: &Layout,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<Self>, StoreError> {
        let hasher = Hasher::new(digest)?;
        if layout.blob(digest).exists() {
            return Ok(None);
        }
        let lock_path = layout.ingest_lock(digest);
        let lock = FileLock::exclusive(&lock_path)?;
        if layout.blob(digest).exists() {
            // Safe to remove: whoever waits on it will find the blob present too.
            remove_if_exists(&lock_path)?;
            return Ok(None);
        }
        let data_path = layout.ingest_data(digest);
        let sidecar_path = layout.ingest_sidecar(digest);
        let sidecar = read_sidecar(&sidecar_path)?.filter(|s| {
            let same = s.size == size && s.digest == digest.to_string();
            if !same {
                tracing::warn!(%digest, "discarding a partial ingest recorded with another size");
            }
            same
        });
        if sidecar.is_none() {
            remove_if_exists(&data_path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&data_path)
            .at(&data_path)?;
        let len = file.metadata().at(&data_path)?.len();
        let positional = sidecar.as_ref().is_some_and(|s| s.positional);
        let written = match sidecar {
            Some(s) if s.positional => {
                let this_boot = s.boot_id.is_some() && s.boot_id.as_deref() == boot_id();
                let mut ranges = match s.written {
                    Some(written) if this_boot => written,
                    _ => s.ranges,
                };
                ranges.truncate(len.min(size));
                ranges
            }
            _ => {
                if len > size {
                    file.set_len(size).at(&data_path)?;
                }
                let mut ranges = RangeSet::default();
                ranges.insert(0..len.min(size));
                ranges
            }
        };
        if !written.is_empty() {
            tracing::debug!(%digest, bytes = written.len(), "resuming a partial ingest");
        }
        // A descriptor can claim any size: refuse one the disk cannot hold before a
        // byte is fetched (a registry serving fast would fill the disk; one serving
        // slowly must not make the range planner size itself by the claim).
        let needed = size - written.len();
        let available = crate::free_space(&layout.ingest_dir()).unwrap_or(u64::MAX);
        if needed > available {
            if written.is_empty() {
                drop(file);
                remove_if_exists(&data_path)?;
                remove_if_exists(&sidecar_path)?;
                remove_if_exists(&lock_path)?;
            }
            return Err(StoreError::NoSpace {
                digest: digest.clone(),
                needed,
                available,
            });
        }
        // The resumed prefix is re-hashed from disk.
        let hash =
            PrefixHash::start(file.try_clone().at(&data_path)?, hasher, size).at(&data_path)?;
        hash.advance(written.prefix_end(), None).at(&data_path)?;
        let ingest = Self {
            layout: layout.clone(),
            digest: digest.clone(),
            size,
            file,
            state: Mutex::new(State {
                claimed: written.clone(),
                recorded: written.len(),
                recording: false,
                noted_at: Instant::now(),
                durable: written.clone(),
                unflushed: 0,
                written,
                positional,
                poisoned: false,
            }),
            hash: Some(hash),
            record_every: RECORD_AT_LEAST.max(size / 8),
            finished: false,
            _lock: lock,
        };
        {
            let state = ingest.lock_state();
            ingest.save_sidecar(state.positional, &state.durable, &state.written)?;
        }
        Ok(Some(ingest))
    }

    /// The digest this ingest must produce.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size this ingest must reach.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where a sequential writer continues: the end of the contiguous prefix on disk.
    pub fn offset(&self) -> u64 {
        self.lock_state().written.prefix_end()
    }

    /// The byte ranges still to be written.
    pub fn missing(&self) -> Vec<std::ops::Range<u64>> {
        self.lock_state().written.holes(self.size)
    }

    /// Writes `buf` at `offset`. Safe to call from several threads for disjoint ranges;
    /// a write past the expected size or over bytes already written is refused.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), StoreError> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(buf.len() as u64);
        {
            let mut state = self.lock_state();
            if state.poisoned || end > self.size {
                state.poisoned = true;
                return Err(self.too_long());
            }
            if state.claimed.overlaps(&(offset..end)) {
                return Err(StoreError::Overlap {
                    digest: self.digest.clone(),
                    start: offset,
                    end,
                });
            }
            if !state.positional && offset != state.written.prefix_end() {
                // From here on the file's length no longer says what is on disk.
                state.positional = true;
                self.sync_locked(&mut state)?;
            }
            state.claimed.insert(offset..end);
        }
        let data_path = self.layout.ingest_data(&self.digest);
        let result = self.file.write_all_at(buf, offset).at(&data_path);
        let mut state = self.lock_state();
        if let Err(e) = result {
            state.poisoned = true;
            return Err(e);
        }
        state.written.insert(offset..end);
        // A read-back that fails is an error of the store's own disk; the bytes written
        // stay good, and the hash catches up on the next write that succeeds.
        self.hasher()
            .advance(state.written.prefix_end(), Some((offset, buf)))
            .at(&data_path)?;
        state.unflushed += buf.len() as u64;
        let flush = state.unflushed >= FLUSH_EVERY;
        if flush {
            state.unflushed = 0;
        }
        // Bound what a crash can cost (the holes plus at most `record_every` bytes),
        // syncing outside the lock so writers on other threads are not held up. (The
        // ranges of one blob the pull path fetches are polled by one task: they wait.)
        let unrecorded = state.written.len() - state.recorded;
        let idle = state.positional && !state.recording && unrecorded > 0;
        let sync = idle && state.written.len() - state.durable.len() >= self.record_every;
        let note = idle && !sync && state.noted_at.elapsed() >= NOTE_INTERVAL;
        let snapshot = (sync || note).then(|| {
            state.recording = true;
            state.noted_at = Instant::now();
            state.recorded = state.written.len();
            (state.durable.clone(), state.written.clone())
        });
        drop(state);
        if flush {
            start_writeback(&self.file);
        }
        if let Some((durable, written)) = snapshot {
            let result = if sync {
                self.file
                    .sync_data()
                    .at(&data_path)
                    .and_then(|()| self.save_sidecar(true, &written, &written))
                    .map(|()| Some(written))
            } else {
                self.save_sidecar(true, &durable, &written).map(|()| None)
            };
            let mut state = self.lock_state();
            state.recording = false;
            if let Some(synced) = result? {
                state.durable = synced;
            }
        }
        Ok(())
    }

    /// Copies `source` in from the current offset to the end, reading at most one byte
    /// past the expected size (so an endless source is cut and refused).
    pub fn copy_from(&mut self, source: impl Read) -> Result<u64, StoreError> {
        let mut offset = self.offset();
        let mut source = source.take(self.size - offset + 1);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut copied = 0;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Source(e)),
            };
            // A partial left by ranged writes may hold bytes past the first hole:
            // write only what is still missing.
            let chunk_end = offset + n as u64;
            for hole in self.missing() {
                let (from, to) = (hole.start.max(offset), hole.end.min(chunk_end));
                if from < to {
                    let slice = &buf[(from - offset) as usize..(to - offset) as usize];
                    self.write_at(from, slice)?;
                    copied += slice.len() as u64;
                }
            }
            if chunk_end > self.size {
                self.write_at(self.size, &buf[..1])?; // refused: the source is too long
            }
            offset = chunk_end;
        }
    }

    /// Makes the bytes written so far durable and records their ranges in the sidecar.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.lock_state();
        self.sync_locked(&mut state)
    }

    /// Checks size and digest, then makes the blob visible under `blobs/`.
    ///
    /// A digest mismatch deletes the partial data. A short blob keeps it, so a later
    /// ingest can resume where the source stopped.
    pub fn commit(mut self) -> Result<Committed, StoreError> {
        self.finished = true;
        let (poisoned, have) = {
            let state = self.lock_state();
            (state.poisoned, state.written.prefix_end())
        };
        let data_path = self.layout.ingest_data(&self.digest);
        let hash = self.hash.take().expect("taken only here");
        if poisoned {
            drop(hash);
            self.discard()?;
            return Err(self.too_long());
        }
        // A hash that could not read the bytes back, or covers less than is on disk, says
        // nothing about them: an error, not a mismatch, and the partial data is kept
        // (and its ranges recorded) for the next attempt.
        let hashed = hash.finish().and_then(|(actual, hashed)| {
            if hashed == have {
                Ok(actual)
            } else {
                Err(io::Error::other(format!(
                    "hashed {hashed} bytes of a {have}-byte prefix"
                )))
            }
        });
        let actual = match hashed {
            Ok(actual) => actual,
            Err(e) => {
                self.sync()?;
                return Err(e).at(&data_path);
            }
        };
        if have != self.size || actual != self.digest {
            if have == self.size {
                self.discard()?;
            } else {
                self.sync()?;
            }
            return Err(StoreError::Mismatch {
                expected_digest: self.digest.clone(),
                expected_size: self.size,
                actual_digest: actual,
                actual_size: have,
            });
        }
        self.file.sync_all().at(&data_path)?;
        let target = self.layout.blob(&self.digest);
        let dir = target.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).at(dir)?;
        // The data is synced, so the name never points at unsynced bytes. The rename
        // itself is made durable by the next `set_ref` (it syncs the blob folders
        // before a ref may point here): a blob lost to a power cut before then is
        // simply fetched again.
        fs::rename(&data_path, &target).at(&target)?;
        // Read-only once visible (before the rename, a failed commit would leave a
        // partial no later ingest could open for writing).
        fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).at(&target)?;
        remove_if_exists(&self.layout.ingest_sidecar(&self.digest))?;
        // Removed while still held: a waiter on the old inode locks the path anew, and
        // finds the blob present.
        remove_if_exists(&self.layout.ingest_lock(&self.digest))?;
        tracing::debug!(digest = %self.digest, size = self.size, "committed");
        Ok(Committed {
            digest: self.digest.clone(),
            size: self.size,
        })
    }

    /// Deletes the partial data, its sidecar and its lock file.
    pub fn abort(mut self) -> Result<(), StoreError> {
        self.finished = true;
        self.discard()
    }

    /// Leaves nothing of this ingest in `ingest/`. The lock file goes while still held:
    /// a waiter on it finds the path gone once it holds the lock, and starts anew.
    fn discard(&self) -> Result<(), StoreError> {
        remove_if_exists(&self.layout.ingest_sidecar(&self.digest))?;
        remove_if_exists(&self.layout.ingest_data(&self.digest))?;
        remove_if_exists(&self.layout.ingest_lock(&self.digest))
    }

    fn too_long(&self) -> StoreError {
        StoreError::TooLong {
            digest: self.digest.clone(),
            size: self.size,
        }
    }

    fn hasher(&self) -> &PrefixHash {
        self.hash.as_ref().expect("present until commit")
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_locked(&self, state: &mut State) -> Result<(), StoreError> {
        let data_path = self.layout.ingest_data(&self.digest);
        self.file.sync_data().at(&data_path)?;
        self.save_sidecar(state.positional, &state.written, &state.written)?;
        state.durable = state.written.clone();
        state.recorded = state.written.len();
        Ok(())
    }

    fn save_sidecar(
        &self,
        positional: bool,
        durable: &RangeSet,
        written: &RangeSet,
    ) -> Result<(), StoreError> {
        let path = self.layout.ingest_sidecar(&self.digest);
        sidecar::write(&path, &self.digest, self.size, positional, durable, written)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.lock_state();
        if state.positional && !state.poisoned {
            if let Err(e) = self.sync_locked(&mut state) {
                tracing::warn!(digest = %self.digest, "could not record a partial ingest: {e}");
            }
        }
    }
}

/// Asks the kernel to start writing the file's dirty pages to disk now, without waiting
/// for them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE` over the whole file; no
/// crate wraps it more simply). Only a hint: durability still comes from the syncs.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and plain integers; the call touches no memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc != 0 {
        tracing::trace!("sync_file_range: {}", io::Error::last_os_error());
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(path),
    }
}
