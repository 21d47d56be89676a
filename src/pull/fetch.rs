//! Fetching the blobs a pull found missing: each in its own task, once per process
//! however many pulls want it, within the bounds on open blobs and downloads.

use std::sync::Arc;

use oci_spec::image::Descriptor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::in_flight::{self, InFlight};
use super::peers::sources::{self, Fetched};
use super::{PullError, PullOptions};
use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::registry::Client;
use crate::store::Store;

/// What every pull sharing one registry client shares while fetching, as
/// go-containerregistry's `remote.Puller` holds what several pulls share.
///
/// It is kept attached to the [`Client`] (`Client::attached`, made on the first
/// fetch), not in a `Puller` that callers would pass instead of `Arc<Client>`: the
/// pulls that share a client (the images of one `sync`, the packages of one factored
/// build, an embedder's pulls) then share the claims and the bound exactly as before,
/// without every public entry point (`pull`, `lock::sync`, `ensure_layers`,
/// `pull::pinned`, `factored::artifact::fetch_packages`) and its callers changing
/// type, and without the sharing resting on callers passing one `Puller` around. The
/// registry client only holds the value; its type and use are the pull side's.
struct Shared {
    /// The blobs this process is fetching, so each is fetched once at a time.
    in_flight: InFlight,
    /// Twice as many permits as the client's downloads: a blob is opened in the store
    /// (a file, a lock and, when big, a hash thread) only once it holds one, so a pull
    /// of hundreds of blobs does not hold hundreds open while it waits to download.
    /// Twice, so blobs finishing their hash and fsync, or waiting on the ingest lock of
    /// another process storing the same blob, do not keep the downloads from being
    /// used. (A blob another pull of this process is fetching is waited for without a
    /// permit: `in_flight`.)
    blobs_open: Semaphore,
}

impl Shared {
    fn new(client: &Client) -> Self {
        Self {
            in_flight: InFlight::default(),
            blobs_open: Semaphore::new(2 * client.concurrency()),
        }
    }
}

/// Fetches every missing blob, each in its own task (the shared state bounds how many
/// are open, the client how many download at once). Returns (blobs fetched, bytes
/// fetched, bytes stored meanwhile by another process, or by another pull of the same
/// sync).
pub(crate) async fn fetch_all(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    missing: Vec<Descriptor>,
    options: &PullOptions,
    progress: &Arc<dyn ProgressReporter>,
) -> Result<(usize, u64, u64), PullError> {
    let shared = client.attached(Shared::new);
    let mut tasks = JoinSet::new();
    for descriptor in missing {
        let client = client.clone();
        let shared = shared.clone();
        let store = store.clone();
        let reference = reference.clone();
        let blob_options = options.blobs.clone();
        let progress = progress.clone();
        let peers = options.peers.clone();
        tasks.spawn(async move {
            let digest = descriptor.digest().clone();
            let size = descriptor.size();
            // Another pull of this process (an image of the same sync) fetching this
            // blob: wait for it without taking a slot, then find the blob stored.
            let _fetching = loop {
                match shared.in_flight.claim(&digest) {
                    Ok(mine) => break mine,
                    Err(theirs) => {
                        in_flight::wait(theirs).await;
                        if store.has(&digest) {
                            progress.blob_present(size);
                            return Ok((0, 0, size));
                        }
                    }
                }
            };
            let _open = shared.blobs_open.acquire().await.expect("never closed");
            let opened = {
                let (store, digest) = (store.clone(), digest.clone());
                tokio::task::spawn_blocking(move || store.ingest(&digest, size))
                    .await
                    .expect("opening an ingest does not panic")?
            };
            let Some(ingest) = opened else {
                progress.blob_present(size);
                return Ok::<_, PullError>((0, 0, size));
            };
            let resumed = size
                - ingest
                    .missing()
                    .iter()
                    .map(|r| r.end - r.start)
                    .sum::<u64>();
            tracing::info!(%digest, size, resumed, "fetching");
            progress.blob_started(&digest, size, resumed);
            let on_bytes = |at: u64, n: u64| progress.blob_written(&digest, at, n);
            // The peers first, when there are any; the registry for what they lack.
            let fetched = match &peers {
                None => {
                    client
                        .fetch_blob(&reference, &descriptor, ingest, &blob_options, &on_bytes)
                        .await?;
                    Fetched::Stored
                }
                Some(peers) => {
                    let asked = (client.as_ref(), &store, &reference, &descriptor);
                    sources::fetch_blob(peers, asked, ingest, &blob_options, &on_bytes).await?
                }
            };
            if let Fetched::Present = fetched {
                progress.blob_finished(&digest);
                return Ok((0, 0, size));
            }
            tracing::info!(%digest, "stored");
            progress.blob_finished(&digest);
            Ok((1, size - resumed, 0))
        });
    }
    let (mut blobs, mut bytes, mut present) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("a blob task does not panic") {
            Ok((b, n, p)) => {
                blobs += b;
                bytes += n;
                present += p;
            }
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok((blobs, bytes, present))
}
