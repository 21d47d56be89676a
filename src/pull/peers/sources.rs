//! The sources of one blob, in turn: the peers ranked above this node (all of them
//! when it is not in the set), then the upstream registry, then, only if the
//! registry failed (down, rate-limiting past its retries), the peers ranked below
//! this node, which may hold the blob all the same (a node that just joined owns
//! blobs the others already have).

use super::fetch::{self, Peered};
use super::set::Peers;
use crate::oci::reference::Reference;
use crate::pull::PullError;
use crate::registry::{BlobOptions, Client, OnBytes, RegistryError};
use crate::store::{Descriptor, Ingest, Store, StoreError};

/// How the blob came to be stored.
pub(crate) enum Fetched {
    /// This fetch stored it.
    Stored,
    /// Another process stored it meanwhile.
    Present,
}

/// Fetches `descriptor`'s blob into `ingest` from the peers and the registry; see the
/// module docs.
pub(crate) async fn fetch_blob(
    peers: &Peers,
    (client, store, reference, descriptor): (&Client, &Store, &Reference, &Descriptor),
    ingest: Ingest,
    options: &BlobOptions,
    on_bytes: OnBytes<'_>,
) -> Result<Fetched, PullError> {
    let asked = (client, store, reference, descriptor);
    let digest = descriptor.digest();
    let above = peers.order(digest).await;
    let (ingest, tainted) = match fetch::fetch(peers, &above, asked, ingest, on_bytes).await? {
        Peered::Stored => return Ok(Fetched::Stored),
        Peered::Present => return Ok(Fetched::Present),
        Peered::Upstream { ingest, tainted } => (*ingest, tainted),
    };
    let failed = match client
        .fetch_blob(reference, descriptor, ingest, options, on_bytes)
        .await
    {
        Ok(_) => return Ok(Fetched::Stored),
        // A peer that broke off left bytes no commit checked: once more, whole.
        Err(RegistryError::Store(StoreError::Mismatch { .. })) if tainted => {
            tracing::warn!(%digest, "the bytes a peer left did not match; fetching the whole blob again");
            let Some(ingest) = fetch::reopen(store, descriptor).await? else {
                return Ok(Fetched::Present);
            };
            client
                .fetch_blob(reference, descriptor, ingest, options, on_bytes)
                .await?;
            return Ok(Fetched::Stored);
        }
        // The store's own failures, and bytes from the registry that do not match:
        // no peer changes those.
        Err(e @ RegistryError::Store(_)) => return Err(e.into()),
        Err(e) => e,
    };
    let below = peers.order_below_self(digest).await;
    if below.is_empty() {
        return Err(failed.into());
    }
    tracing::warn!(%digest, "the registry failed ({failed}); asking the peers ranked below this node");
    let Some(ingest) = fetch::reopen(store, descriptor).await? else {
        return Ok(Fetched::Present);
    };
    match fetch::fetch(peers, &below, asked, ingest, on_bytes).await? {
        Peered::Stored => Ok(Fetched::Stored),
        Peered::Present => Ok(Fetched::Present),
        Peered::Upstream { .. } => Err(failed.into()),
    }
}
