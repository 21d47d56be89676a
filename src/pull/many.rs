//! Pulling many images as one job (`sync`, `warm`, `mirror`): as many at a time as
//! the client downloads at once, and every new ref recorded in one update of
//! `index.json` (and one of the tag cache) at the end instead of one per image, so N
//! images cost N, not N², however large the store. Referrers, when asked for, are
//! carried after the refs are recorded, one image after another.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use oci_spec::image::Descriptor;

use super::progress::ProgressReporter;
use super::tagcache::TagCache;
use super::{pull_unrecorded, PullError, PullOptions, PullReport};
use crate::oci::reference::Reference;
use crate::registry::Client;
use crate::store::{Digest, Store, StoreError};

/// Pulls every reference into `store`; one result per reference, in order. One image
/// failing does not stop the others; only a store that cannot be leased stops all.
pub async fn pull_many(
    client: Arc<Client>,
    store: &Store,
    references: &[Reference],
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<Vec<Result<PullReport, PullError>>, StoreError> {
    // Held until the refs are recorded: until then no ref names what was fetched.
    let lease = store.lease()?;
    let pulled: Vec<_> = stream::iter(references)
        .map(|reference| {
            pull_unrecorded(client.clone(), store, reference, options, progress.clone())
        })
        .buffered(client.concurrency())
        .collect()
        .await;
    let new_refs: Vec<Option<(String, Descriptor)>> = pulled
        .iter()
        .map(|p| p.as_ref().ok().and_then(|p| p.new_ref.clone()))
        .collect();
    let recorded = record_all(store, &new_refs);
    let mut results: Vec<Result<PullReport, PullError>> = Vec::new();
    for ((pulled, recorded), reference) in pulled.into_iter().zip(recorded).zip(references) {
        results.push(match (pulled, recorded) {
            (Ok(pulled), Ok(())) => {
                with_referrers(&client, store, reference, pulled, options).await
            }
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(e.into()),
        });
    }
    let used: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|r| r.reference.as_str()))
        .collect();
    if let Err(e) = store.record_use(&used) {
        tracing::warn!("recording the use of {} images: {e}", used.len());
    }
    drop(lease);
    Ok(results)
}

/// The pull's report, with the referrers `options` asks for carried (as [`super::pull`]
/// carries them).
async fn with_referrers(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    pulled: super::Pulled,
    options: &PullOptions,
) -> Result<PullReport, PullError> {
    let mut report = pulled.report;
    if let Some(filter) = &options.referrers {
        report.referrers = Some(
            super::carry_referrers(client, store, reference, &pulled.subjects, filter, options)
                .await?,
        );
    }
    Ok(report)
}

/// Records the refs of images pulled unrecorded ([`pull_unrecorded`]), one entry per
/// image (`None`: nothing to record), in one update of index.json and one of the tag
/// cache. Should the batch be refused (an image not whole), each is recorded on its
/// own, so only the images at fault fail.
pub(crate) fn record_all(
    store: &Store,
    new_refs: &[Option<(String, Descriptor)>],
) -> Vec<Result<(), StoreError>> {
    let batch: Vec<(String, Descriptor)> = new_refs.iter().flatten().cloned().collect();
    let results: Vec<Result<(), StoreError>> = match store.set_refs(&batch) {
        Ok(()) => new_refs.iter().map(|_| Ok(())).collect(),
        Err(_) => new_refs
            .iter()
            .map(|new_ref| match new_ref {
                Some((name, root)) => store.set_ref(name, root),
                None => Ok(()),
            })
            .collect(),
    };
    let resolved: Vec<(String, Digest)> = new_refs
        .iter()
        .zip(&results)
        .filter_map(|(new_ref, result)| {
            let (name, root) = new_ref.as_ref()?;
            result
                .is_ok()
                .then(|| (name.clone(), root.digest().clone()))
        })
        .collect();
    if let Err(e) = TagCache::new(store).put_all(&resolved) {
        // Only the next --ttl pull's shortcut is lost: the refs are recorded.
        tracing::warn!("recording {} tag resolutions: {e}", resolved.len());
    }
    results
}
