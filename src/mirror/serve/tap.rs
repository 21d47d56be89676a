//! A blob fetched through from upstream, streamed to its clients as it arrives.
//!
//! The fetch is the pull path's (`ensure_layers`: verified, resumed after cuts, one
//! per process through the pull's in-flight claims), writing the store's partial file
//! from byte 0 on, a big blob in ranges (Range-split, as any pull). Its progress
//! reports how far the contiguous prefix on disk reaches (ranges written past a gap
//! wait until the gap is filled);
//! each client's response reads the partial up to there (never the last byte, see
//! below) and so sends only bytes that are written, however many clients share the
//! fetch: the second and the fiftieth join the tap of the first.
//!
//! What a client is sent is the verified stream: the last byte goes out only once the
//! commit checked size and digest, read from the very file (the same inode) that was
//! renamed into `blobs/`. A fetch that fails ends every response with an error after
//! at most `size - 1` bytes of a body whose `Content-Length` is `size`: the client sees
//! a short, broken response, never a whole one that is wrong. A partial left by an
//! earlier attempt (a resumed fetch, whose prefix the progress does not describe) is
//! streamed once committed.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::response::{BlobStream, Body};
use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::pull::{ensure::ensure_layers, PullOptions};
use crate::registry::Client;
use crate::store::{Descriptor, Digest, Store};

/// Bytes read from the partial at a time.
const CHUNK: u64 = 64 * 1024;

/// How far a fetch has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Set when the download starts: bytes already on disk from an earlier attempt.
    resumed: Option<u64>,
    /// Bytes on disk, from byte 0 (when `resumed` is `Some(0)`).
    written: u64,
    /// How the fetch ended: stored, or why not.
    end: Option<Result<(), String>>,
}

/// The fetches under way, by digest.
#[derive(Clone, Default)]
pub(super) struct Taps {
    taps: Arc<Mutex<HashMap<Digest, watch::Receiver<Progress>>>>,
}

/// One blob to fetch through: from where, with what.
pub(super) struct Fetch {
    pub client: Arc<Client>,
    pub store: Store,
    pub reference: Reference,
    pub descriptor: Descriptor,
    pub options: PullOptions,
    /// Run once the blob is stored (to record images that are now whole).
    pub stored: Box<dyn FnOnce() + Send>,
}

impl Taps {
    /// A body streaming the blob `fetch` names: the fetch already under way for its
    /// digest, or one started now.
    pub(super) fn body(&self, fetch: Fetch, slot: OwnedSemaphorePermit) -> Body {
        let digest = fetch.descriptor.digest().clone();
        let size = fetch.descriptor.size();
        let store = fetch.store.clone();
        let progress = {
            let mut taps = self.lock();
            match taps.get(&digest) {
                Some(theirs) => theirs.clone(),
                None => {
                    let (tx, rx) = watch::channel(Progress::default());
                    taps.insert(digest.clone(), rx.clone());
                    tokio::spawn(run(self.clone(), fetch, tx));
                    rx
                }
            }
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            tail(store, digest, size, progress, tx).await;
            drop(slot);
        });
        Body::Stream(BlobStream {
            chunks: rx,
            remaining: size,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, watch::Receiver<Progress>>> {
        self.taps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reports the pull path's progress into the tap: the ranges written so far, and
/// from them the prefix with no gap (a split blob's ranges arrive in any order).
struct Reporter {
    tx: watch::Sender<Progress>,
    /// Written ranges past the prefix, start -> end, none touching another.
    ahead: Mutex<BTreeMap<u64, u64>>,
}

impl ProgressReporter for Reporter {
    fn blob_started(&self, _digest: &Digest, _size: u64, resumed: u64) {
        self.tx.send_modify(|p| {
            p.resumed = Some(resumed);
            p.written = resumed;
        });
    }

    fn blob_written(&self, _digest: &Digest, at: u64, bytes: u64) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = self.tx.borrow().written;
        let (mut start, mut end) = (at, at + bytes);
        // Merge with the ranges it touches.
        let touching: Vec<(u64, u64)> = ahead
            .range(..=end)
            .filter(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            ahead.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        if start <= prefix {
            self.tx.send_modify(|p| p.written = p.written.max(end));
        } else {
            ahead.insert(start, end);
        }
    }
}

/// Fetches the blob, then says how it ended. The tap is unlisted first, so a request
/// arriving after the end finds the blob stored, or starts a fetch of its own.
async fn run(taps: Taps, fetch: Fetch, tx: watch::Sender<Progress>) {
    let Fetch {
        client,
        store,
        reference,
        descriptor,
        options,
        stored,
    } = fetch;
    let digest = descriptor.digest().clone();
    let reporter = Arc::new(Reporter {
        tx,
        ahead: Mutex::default(),
    });
    let result = ensure_layers(
        client,
        &store,
        &reference,
        std::slice::from_ref(&descriptor),
        &options,
        reporter.clone(),
    )
    .await;
    taps.lock().remove(&digest);
    let end = match result {
        Ok(_) => {
            tracing::info!(%digest, "pulled through from {}", reference.registry);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(%digest, "pulling through from {}: {e}", reference.registry);
            Err(format!(
                "fetching {digest} from {}: {e}",
                reference.registry
            ))
        }
    };
    let ok = end.is_ok();
    reporter.tx.send_modify(|p| p.end = Some(end));
    if ok {
        tokio::task::spawn_blocking(stored);
    }
}

/// Sends the blob to one client as the fetch writes it; see the module docs.
async fn tail(
    store: Store,
    digest: Digest,
    size: u64,
    mut progress: watch::Receiver<Progress>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut file: Option<Arc<File>> = None;
    let mut sent = 0u64;
    loop {
        let now = progress.borrow_and_update().clone();
        let (readable, done) = match &now.end {
            Some(Err(message)) => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        message.clone(),
                    )))
                    .await;
                return;
            }
            Some(Ok(())) => match committed(&store, &digest, file.take()).await {
                Ok(f) => (Some(f), size),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            },
            None if now.resumed == Some(0) => {
                if file.is_none() {
                    file = open_partial(&store, &digest).await;
                }
                // Never the last byte before the commit has verified the blob.
                (file.clone(), now.written.min(size.saturating_sub(1)))
            }
            None => (None, 0),
        };
        if let Some(f) = &readable {
            while sent < done {
                let Ok(slot) = tx.reserve().await else {
                    return; // the client went away
                };
                let n = (done - sent).min(CHUNK);
                match read(f, sent, n).await {
                    Ok(chunk) => slot.send(Ok(chunk)),
                    Err(e) => {
                        tracing::warn!(%digest, "serve: reading the blob at byte {sent}: {e}");
                        slot.send(Err(e));
                        return;
                    }
                }
                sent += n;
            }
            if now.end.is_some() {
                return;
            }
            file = readable;
        }
        if progress.changed().await.is_err() {
            // The fetch task ended without saying how: treat it as failed.
            let _ = tx
                .send(Err(io::Error::other(format!(
                    "the fetch of {digest} stopped"
                ))))
                .await;
            return;
        }
    }
}

/// The partial file of `digest`, if it exists (the fetch creates it before it starts).
async fn open_partial(store: &Store, digest: &Digest) -> Option<Arc<File>> {
    let path = partial_path(store, digest);
    tokio::task::spawn_blocking(move || File::open(path).ok().map(Arc::new))
        .await
        .ok()
        .flatten()
}

/// The stored blob: the partial that was read so far if it is the file now in
/// `blobs/` (renamed, the same inode), else the blob opened afresh when nothing was
/// read yet. A partial that is not the stored blob is an error: its bytes were sent
/// unverified.
async fn committed(
    store: &Store,
    digest: &Digest,
    partial: Option<Arc<File>>,
) -> io::Result<Arc<File>> {
    let path = store.blob_path(digest);
    tokio::task::spawn_blocking(move || {
        let stored = File::open(&path)?;
        let Some(partial) = partial else {
            return Ok(Arc::new(stored));
        };
        let (a, b) = (partial.metadata()?, stored.metadata()?);
        if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
            Ok(partial)
        } else {
            Err(io::Error::other(format!(
                "the partial file streamed is not the blob stored as {}",
                path.display()
            )))
        }
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

fn partial_path(store: &Store, digest: &Digest) -> PathBuf {
    store.root().join("ingest").join(format!(
        "{}-{}.partial",
        digest.algorithm().as_ref(),
        digest.digest()
    ))
}

/// `n` bytes at `offset` (on the blocking pool).
async fn read(file: &Arc<File>, offset: u64, n: u64) -> io::Result<Bytes> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; n as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_grows_only_up_to_the_first_gap() {
        let (tx, rx) = watch::channel(Progress::default());
        let reporter = Reporter {
            tx,
            ahead: Mutex::default(),
        };
        let digest: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        reporter.blob_started(&digest, 100, 0);
        let written = |at, bytes| {
            reporter.blob_written(&digest, at, bytes);
            rx.borrow().written
        };
        assert_eq!(written(50, 25), 0, "a range past a gap");
        assert_eq!(written(10, 20), 0, "another");
        assert_eq!(
            written(0, 10),
            30,
            "the gap at 0 filled: up to the next gap"
        );
        assert_eq!(
            written(30, 20),
            75,
            "that one filled: through the range at 50"
        );
        assert_eq!(written(60, 10), 75, "a write inside what is written");
        assert_eq!(written(75, 25), 100);
    }
}
