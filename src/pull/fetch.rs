//! Fetching the blobs a pull found missing: each in its own task, once per process
//! however many pulls want it, within the client's bounds on open blobs and downloads.

use std::sync::Arc;

use oci_spec::image::Descriptor;
use tokio::task::JoinSet;

use super::{PullError, PullOptions};
use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::registry::{wait_for_fetch, Client};
use crate::store::Store;

/// Fetches every missing blob, each in its own task (the client bounds how many are
/// open and how many download at once). Returns (blobs fetched, bytes fetched, bytes
/// stored meanwhile by another process, or by another pull of the same sync).
pub(crate) async fn fetch_all(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    missing: Vec<Descriptor>,
    options: &PullOptions,
    progress: &Arc<dyn ProgressReporter>,
) -> Result<(usize, u64, u64), PullError> {
    let mut tasks = JoinSet::new();
    for descriptor in missing {
        let client = client.clone();
        let store = store.clone();
        let reference = reference.clone();
        let blob_options = options.blobs.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let digest = descriptor.digest().clone();
            let size = descriptor.size();
            // Another pull of this process (an image of the same sync) fetching this
            // blob: wait for it without taking a slot, then find the blob stored.
            let _fetching = loop {
                match client.claim_fetch(&digest) {
                    Ok(mine) => break mine,
                    Err(theirs) => {
                        wait_for_fetch(theirs).await;
                        if store.has(&digest) {
                            progress.blob_present(size);
                            return Ok((0, 0, size));
                        }
                    }
                }
            };
            let _open = client.blobs_open().acquire().await.expect("never closed");
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
            let on_bytes = |n: u64| progress.blob_bytes(&digest, n);
            client
                .fetch_blob(&reference, &descriptor, ingest, &blob_options, &on_bytes)
                .await?;
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
