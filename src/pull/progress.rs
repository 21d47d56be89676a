//! Progress of a pull: the [`ProgressReporter`] trait the library reports to, a silent
//! one, and a terminal one with a bar per blob and a total (bytes, rate, ETA).

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::store::Digest;

/// Receives progress events; every method defaults to doing nothing.
pub trait ProgressReporter: Send + Sync {
    /// The bytes a pull will fetch and the bytes already in the store; called once per
    /// image, and by a sync for several images at once.
    fn plan(&self, _to_fetch: u64, _present: u64) {}
    /// A blob the plan counted to fetch was stored meanwhile by someone else (another
    /// process, or another image of the same sync).
    fn blob_present(&self, _size: u64) {}
    /// A blob download starts; `resumed` bytes were already on disk.
    fn blob_started(&self, _digest: &Digest, _size: u64, _resumed: u64) {}
    /// More bytes of a blob arrived.
    fn blob_bytes(&self, _digest: &Digest, _bytes: u64) {}
    /// `bytes` bytes of a blob were written from offset `at` (the ranges of a split
    /// blob arrive out of order); by default, [`Self::blob_bytes`].
    fn blob_written(&self, digest: &Digest, _at: u64, bytes: u64) {
        self.blob_bytes(digest, bytes);
    }
    /// A blob is verified and stored.
    fn blob_finished(&self, _digest: &Digest) {}
}

/// Reports nothing (pipes, `--json`, library callers that do not care).
pub struct Silent;

impl ProgressReporter for Silent {}

/// Bars on a terminal.
pub struct TerminalProgress {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "total  {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("a valid template"),
        );
        Self {
            multi,
            total,
            bars: Mutex::default(),
        }
    }
}

impl ProgressReporter for TerminalProgress {
    fn plan(&self, to_fetch: u64, _present: u64) {
        // Added, not set: a sync plans each of the images it pulls at once.
        self.total.inc_length(to_fetch);
    }

    fn blob_present(&self, size: u64) {
        self.total.dec_length(size);
    }

    fn blob_started(&self, digest: &Digest, size: u64, resumed: u64) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes}")
                .expect("a valid template"),
        );
        bar.set_message(digest.digest()[..12].to_string());
        bar.set_position(resumed);
        self.total.inc(resumed);
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), bar);
    }

    fn blob_bytes(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
        {
            bar.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn blob_finished(&self, digest: &Digest) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest)
        {
            bar.finish_and_clear();
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.total.finish_and_clear();
    }
}
