//! The digest of an ingest, computed as the contiguous prefix grows.
//!
//! A big blob is hashed on a thread of its own: the writer only says how far the
//! prefix reaches, and the thread reads those bytes back (from the page cache, where
//! they were just written) and hashes them. Hashing inline would put sha256 on the
//! thread that receives the bytes, in series with the socket and page-cache copies:
//! for one big blob that thread is the whole pull. On its own thread the hash runs
//! beside the download on another core, and commit waits only for the last few bytes.
//! (Handing the received chunks over instead of reading them back was slower: held
//! chunks keep the HTTP client from reusing its read buffer, and fresh buffers cost
//! more than a copy from the page cache.)
//!
//! A small blob is hashed inline, from the buffer just written when it extends the
//! prefix: many small blobs already keep every core busy, and a thread and a read-back
//! per blob would only add work.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use oci_spec::image::Digest;

use crate::digest::Hasher;

/// Bytes read back and hashed at a time.
const STEP: usize = 256 << 10;

/// Blobs at least this big are hashed on their own thread.
const THREAD_AT: u64 = 8 << 20;

/// Hashes a file from offset 0 up to whatever [`PrefixHash::advance`] has reported.
pub(crate) enum PrefixHash {
    Inline(Box<Mutex<Inline>>),
    Thread(HashThread),
}

/// The hash of a small blob, kept up to date by its writers.
pub(crate) struct Inline {
    file: File,
    hasher: Hasher,
    hashed: u64,
}

impl PrefixHash {
    /// Starts hashing `file`, the ingest's data file, which will be `size` bytes long.
    pub(crate) fn start(file: File, hasher: Hasher, size: u64) -> io::Result<Self> {
        if size >= THREAD_AT {
            return HashThread::start(file, hasher).map(Self::Thread);
        }
        Ok(Self::Inline(Box::new(Mutex::new(Inline {
            file,
            hasher,
            hashed: 0,
        }))))
    }

    /// The bytes from 0 to `end` are on disk and may be hashed; `written`, when given,
    /// holds bytes just written and where (hashed from there, not read back, when they
    /// continue the hashed prefix).
    pub(crate) fn advance(&self, end: u64, written: Option<(u64, &[u8])>) -> io::Result<()> {
        match self {
            Self::Thread(thread) => {
                thread.advance(end);
                Ok(())
            }
            Self::Inline(inline) => {
                let mut inline = inline.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((offset, buf)) = written {
                    if offset == inline.hashed && offset + buf.len() as u64 <= end {
                        inline.hasher.update(buf);
                        inline.hashed += buf.len() as u64;
                    }
                }
                inline.read_up_to(end)
            }
        }
    }

    /// Waits for everything reported to be hashed and returns the digest and how many
    /// bytes it covers.
    pub(crate) fn finish(self) -> io::Result<(Digest, u64)> {
        match self {
            Self::Thread(thread) => thread.finish(),
            Self::Inline(inline) => {
                let inline = inline.into_inner().unwrap_or_else(|p| p.into_inner());
                Ok((inline.hasher.finish(), inline.hashed))
            }
        }
    }
}

impl Inline {
    /// Reads back and hashes what lies between the hashed prefix and `end`.
    fn read_up_to(&mut self, end: u64) -> io::Result<()> {
        if self.hashed >= end {
            return Ok(());
        }
        let mut buf = vec![0u8; STEP.min((end - self.hashed) as usize)];
        while self.hashed < end {
            let want = buf.len().min((end - self.hashed) as usize);
            self.file.read_exact_at(&mut buf[..want], self.hashed)?;
            self.hasher.update(&buf[..want]);
            self.hashed += want as u64;
        }
        Ok(())
    }
}

/// The thread that hashes a big blob.
pub(crate) struct HashThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<Hasher>>>,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    wake: Condvar,
}

#[derive(Default)]
struct Progress {
    /// The contiguous prefix on disk: the thread may hash up to here.
    target: u64,
    /// Hashed so far.
    hashed: u64,
    /// Hash up to `target`, then stop.
    finishing: bool,
    /// Stop now: the ingest was dropped or aborted.
    cancelled: bool,
}

impl HashThread {
    /// Starts the thread; `file` is a handle of the ingest's data file.
    fn start(file: File, hasher: Hasher) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ingest-hash".into())
            .spawn(move || worker.run(&file, hasher))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The bytes from 0 to `end` are on disk and may be hashed.
    fn advance(&self, end: u64) {
        let mut progress = self.shared.lock();
        if end > progress.target {
            progress.target = end;
            self.shared.wake.notify_one();
        }
    }

    fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.shared.lock().finishing = true;
        self.shared.wake.notify_one();
        let hasher = self.join()?;
        let hashed = self.shared.lock().hashed;
        Ok((hasher.finish(), hashed))
    }

    fn join(&mut self) -> io::Result<Hasher> {
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the ingest's hash thread panicked")))
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.lock().cancelled = true;
            self.shared.wake.notify_one();
            let _ = self.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hashes from 0 up to the target as it moves, until finished or cancelled.
    fn run(&self, file: &File, mut hasher: Hasher) -> io::Result<Hasher> {
        let mut buf = vec![0u8; STEP];
        loop {
            let (from, want) = {
                let mut progress = self.lock();
                loop {
                    if progress.cancelled {
                        return Ok(hasher);
                    }
                    if progress.hashed < progress.target {
                        break;
                    }
                    if progress.finishing {
                        return Ok(hasher);
                    }
                    progress = self.wake.wait(progress).unwrap_or_else(|p| p.into_inner());
                }
                let want = (progress.target - progress.hashed).min(STEP as u64) as usize;
                (progress.hashed, want)
            };
            file.read_exact_at(&mut buf[..want], from)?;
            hasher.update(&buf[..want]);
            self.lock().hashed = from + want as u64;
        }
    }
}
