//! `ensure_layers`: fetch only the listed layers the store lacks, from one repository,
//! and say how many bytes came over the network and how many were already there.
//! This is how a node that holds `python` and `openssl` fetches only what is new.

use std::sync::Arc;

use serde::Serialize;

use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::pull::{fetch_all, PullError, PullOptions};
use crate::registry::Client;
use crate::store::{Descriptor, Store};

/// What `ensure_layers` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnsureReport {
    pub layers: usize,
    pub fetched: usize,
    pub bytes_fetched: u64,
    pub bytes_present: u64,
}

impl EnsureReport {
    /// Adds another ensure's counts (several repositories ensured as one job).
    pub fn add(&mut self, other: &Self) {
        self.layers += other.layers;
        self.fetched += other.fetched;
        self.bytes_fetched += other.bytes_fetched;
        self.bytes_present += other.bytes_present;
    }
}

/// Fetches each of `layers` that the store lacks from `repository` (its tag or digest
/// is ignored: blobs are fetched by digest), verified like any pull.
pub async fn ensure_layers(
    client: Arc<Client>,
    store: &Store,
    repository: &Reference,
    layers: &[Descriptor],
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<EnsureReport, PullError> {
    let _lease = store.lease()?;
    let mut report = EnsureReport {
        layers: layers.len(),
        ..EnsureReport::default()
    };
    let mut missing: Vec<Descriptor> = Vec::new();
    for layer in layers {
        match store.stat(layer.digest())? {
            Some(size) => report.bytes_present += size,
            None if !missing.iter().any(|m| m.digest() == layer.digest()) => {
                missing.push(layer.clone())
            }
            None => {}
        }
    }
    progress.plan(missing.iter().map(|d| d.size()).sum(), report.bytes_present);
    let (fetched, bytes, already) =
        fetch_all(&client, store, repository, missing, options, &progress).await?;
    report.fetched = fetched;
    report.bytes_fetched = bytes;
    report.bytes_present += already;
    // Fetched layers are referenced by no ref yet: make their renames durable now.
    store.sync_blob_dirs()?;
    Ok(report)
}
