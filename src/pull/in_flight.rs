//! The blobs this process is fetching right now, so that two pulls needing the same blob
//! (images of one sync that share a layer) fetch it once. The second waits for the first
//! without holding a download slot or a blocking thread, then finds the blob in the
//! store; if the first failed, it fetches the blob itself. Other processes are kept
//! apart by the store's ingest lock instead.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::store::Digest;

/// Digests being fetched, each with a channel that closes when its fetch ends.
#[derive(Default)]
pub(crate) struct InFlight {
    fetching: Mutex<HashMap<Digest, watch::Receiver<()>>>,
}

/// A fetch this caller owns: until it is dropped, others claiming the digest wait.
pub(crate) struct Fetching<'a> {
    owner: &'a InFlight,
    digest: Digest,
    _done: watch::Sender<()>,
}

impl InFlight {
    /// Claims `digest`, or returns the fetch already under way, to [`wait`] for.
    pub(crate) fn claim(&self, digest: &Digest) -> Result<Fetching<'_>, watch::Receiver<()>> {
        let mut fetching = self.lock();
        if let Some(theirs) = fetching.get(digest) {
            return Err(theirs.clone());
        }
        let (done, waiting) = watch::channel(());
        fetching.insert(digest.clone(), waiting);
        Ok(Fetching {
            owner: self,
            digest: digest.clone(),
            _done: done,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, watch::Receiver<()>>> {
        self.fetching.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits until the fetch `theirs` came from has ended, however it ended. A waiter that
/// then finds nothing stored (the fetch failed, or was aborted while its commit still
/// ran on a blocking thread) claims the blob itself; the store's ingest lock orders it
/// after any such commit, which it then finds done.
pub(crate) async fn wait(mut theirs: watch::Receiver<()>) {
    while theirs.changed().await.is_ok() {}
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        // Removed before the sender closes, so a waiter that wakes and claims again
        // does not find this fetch still listed.
        self.owner.lock().remove(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first_and_may_then_claim() {
        let in_flight = InFlight::default();
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let Ok(mine) = in_flight.claim(&digest) else {
            panic!("the first claim is granted");
        };
        let Err(theirs) = in_flight.claim(&digest) else {
            panic!("the second must wait");
        };
        let waiting = tokio::spawn(wait(theirs));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(mine);
        waiting.await.unwrap();
        assert!(
            in_flight.claim(&digest).is_ok(),
            "free again once the fetch ended"
        );
    }
}
