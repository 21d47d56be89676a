//! `sync`: make the store hold every image a lockfile pins, fetching only what is
//! missing, with each manifest and layer checked against its pin; or, offline, list
//! what is missing. Pinned referrers are fetched by digest (never discovered again) and
//! checked like layers: their digest, size and subject.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use serde::Serialize;

use crate::lock::pin::Pin;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::pull::referrers::{fetch_referrers, PulledReferrer};
use crate::pull::{carry_referrers, pull_unrecorded, record_all, PullError, PullOptions, Pulled};
use crate::registry::Client;
use crate::store::{Descriptor, Digest, MediaType, Store, StoreError};

/// Where one pinned image stands after a sync (`--json` writes it in lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// Whole in the store already.
    Present,
    /// Whole in the store now, some of it fetched.
    Fetched,
    /// Not whole in the store (offline: nothing was fetched).
    Missing,
    /// The sync of this image failed; `detail` says why.
    Failed,
}

impl SyncStatus {
    /// Whether the image is whole in the store.
    pub fn is_whole(self) -> bool {
        matches!(self, Self::Present | Self::Fetched)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Fetched => "fetched",
            Self::Missing => "missing",
            Self::Failed => "failed",
        }
    }
}

/// What happened to one pinned image.
#[derive(Debug, Clone, Serialize)]
pub struct SyncedImage {
    pub name: String,
    pub reference: String,
    pub status: SyncStatus,
    pub bytes_fetched: u64,
    /// Why it failed or what is missing.
    pub detail: Option<String>,
    /// The referrers stored for it (pinned, or with `--referrers` discovered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<PulledReferrer>,
}

/// The whole sync.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub images: Vec<SyncedImage>,
    pub bytes_fetched: u64,
}

impl SyncReport {
    /// Whether every image is in the store.
    pub fn is_complete(&self) -> bool {
        self.images.iter().all(|i| i.status.is_whole())
    }
}

/// Syncs every pin, as many at a time as the client downloads at once (`--concurrency`);
/// one image failing does not stop the others. The report lists the images in the
/// lockfile's order.
///
/// Each image's blobs already download in parallel, within the client's one bound for
/// the process; more images at once keep that bound busy across the round trips that
/// start each image (manifest, config, first ranges), which over a distant link left it
/// mostly idle between one image and the next. Measured through the bench's WAN proxy
/// (+30 ms a request, 25 MB/s a connection), ten 52 MB images: 4.33 s one at a time,
/// 1.93 s four at a time, 1.72 s all ten (`benches/factored.sh`).
pub async fn sync(
    client: Arc<Client>,
    store: &Store,
    pins: &[Pin],
    base: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> SyncReport {
    // Held until the refs are recorded: the images fetched are referenced by no ref
    // until then, and gc must not take their blobs.
    let lease = match store.lease() {
        Ok(lease) => lease,
        Err(e) => {
            let images = pins
                .iter()
                .map(|pin| SyncedImage {
                    name: pin.name.clone(),
                    reference: pin.reference.clone(),
                    status: SyncStatus::Failed,
                    bytes_fetched: 0,
                    detail: Some(e.to_string()),
                    referrers: Vec::new(),
                })
                .collect();
            return SyncReport {
                images,
                bytes_fetched: 0,
            };
        }
    };
    let results: Vec<(SyncedImage, Option<(String, Descriptor)>)> = stream::iter(pins)
        .map(|pin| sync_entry(client.clone(), store, pin, base, progress.clone()))
        .buffered(client.concurrency())
        .collect()
        .await;
    let (mut images, new_refs): (Vec<SyncedImage>, Vec<_>) = results.into_iter().unzip();
    record(store, &mut images, new_refs);
    let used: Vec<String> = pins
        .iter()
        .zip(&images)
        .filter(|(_, image)| image.status.is_whole())
        .map(|(pin, _)| pin.store_name())
        .collect();
    if let Err(e) = store.record_use(&used) {
        tracing::warn!("recording the use of {} images: {e}", used.len());
    }
    drop(lease);
    SyncReport {
        bytes_fetched: images.iter().map(|i| i.bytes_fetched).sum(),
        images,
    }
}

/// Records the refs of every image synced from the registry in one update of
/// index.json; an image whose ref could not be recorded failed.
fn record(store: &Store, images: &mut [SyncedImage], new_refs: Vec<Option<(String, Descriptor)>>) {
    for (image, recorded) in images.iter_mut().zip(record_all(store, &new_refs)) {
        if let Err(e) = recorded {
            image.status = SyncStatus::Failed;
            image.detail = Some(e.to_string());
        }
    }
}

/// Syncs one pin (or, offline, checks it) and says how it went.
async fn sync_entry(
    client: Arc<Client>,
    store: &Store,
    pin: &Pin,
    base: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> (SyncedImage, Option<(String, Descriptor)>) {
    let mut entry = SyncedImage {
        name: pin.name.clone(),
        reference: pin.reference.clone(),
        status: SyncStatus::Failed,
        bytes_fetched: 0,
        detail: None,
        referrers: Vec::new(),
    };
    if base.offline {
        match missing_blobs(store, pin) {
            Ok(missing) if missing.is_empty() => {
                match sync_referrers(&client, store, pin, &[], base).await {
                    Ok((_, referrers)) => {
                        entry.status = SyncStatus::Present;
                        entry.referrers = referrers;
                    }
                    Err(e) => {
                        entry.status = SyncStatus::Missing;
                        entry.detail = Some(e.to_string());
                    }
                }
            }
            Ok(missing) => {
                entry.status = SyncStatus::Missing;
                entry.detail = Some(missing.join(", "));
            }
            Err(e) => entry.detail = Some(e.to_string()),
        }
        return (entry, None);
    }
    let synced = match sync_one(client.clone(), store, pin, base, progress).await {
        Ok(pulled) => sync_referrers(&client, store, pin, &pulled.subjects, base)
            .await
            .map(|referrers| (pulled, referrers)),
        Err(e) => Err(e),
    };
    match synced {
        Ok((pulled, (referrer_bytes, referrers))) => {
            entry.referrers = referrers;
            let fetched = pulled.report.bytes_fetched + referrer_bytes;
            entry.status = if fetched > 0 {
                SyncStatus::Fetched
            } else {
                SyncStatus::Present
            };
            entry.bytes_fetched = fetched;
            (entry, pulled.new_ref)
        }
        Err(e) => {
            entry.detail = Some(e.to_string());
            (entry, None)
        }
    }
}

async fn sync_one(
    client: Arc<Client>,
    store: &Store,
    pin: &Pin,
    base: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<Pulled, PullError> {
    let reference = parse_reference(pin)?;
    let mut options = base.clone();
    options.expect = pin.expectations();
    if let Some(platform) = &pin.platform {
        if let Ok(platform) = platform.parse::<Platform>() {
            options.platform = platform;
        }
    }
    pull_unrecorded(client, store, &reference, &options, progress).await
}

/// Fetches (or, offline, checks and records from the store) the referrers `pin`
/// pinned, by digest, each subject's recorded together; with `--referrers` and none
/// pinned (a bv.lock, a lockfile made without it), discovers those of `subjects`.
/// Returns the bytes fetched and the referrers stored.
async fn sync_referrers(
    client: &Arc<Client>,
    store: &Store,
    pin: &Pin,
    subjects: &[Digest],
    base: &PullOptions,
) -> Result<(u64, Vec<PulledReferrer>), PullError> {
    if pin.referrers.is_empty() && (base.referrers.is_none() || subjects.is_empty()) {
        return Ok((0, Vec::new()));
    }
    let reference = parse_reference(pin)?;
    if pin.referrers.is_empty() {
        let filter = base.referrers.as_ref().expect("checked above");
        let carried = carry_referrers(client, store, &reference, subjects, filter, base).await?;
        return Ok((0, carried));
    }
    let mut by_subject: Vec<(&Digest, Vec<Descriptor>)> = Vec::new();
    for referrer in &pin.referrers {
        match by_subject.iter_mut().find(|(s, _)| *s == &referrer.subject) {
            Some((_, list)) => list.push(referrer.descriptor()),
            None => by_subject.push((&referrer.subject, vec![referrer.descriptor()])),
        }
    }
    let (mut bytes, mut stored) = (0, Vec::new());
    for (subject, referrers) in by_subject {
        let carried = fetch_referrers(client, store, &reference, subject, &referrers, base).await?;
        bytes += carried.bytes_fetched;
        stored.extend(
            carried
                .referrers
                .iter()
                .map(|d| PulledReferrer::of(subject, d)),
        );
    }
    Ok((bytes, stored))
}

fn parse_reference(pin: &Pin) -> Result<Reference, PullError> {
    pin.reference
        .parse()
        .map_err(|e: crate::oci::reference::ReferenceError| {
            crate::registry::RegistryError::Config {
                what: pin.reference.clone(),
                detail: e.to_string(),
            }
            .into()
        })
}

/// The blobs of a pinned image the store lacks (manifest, config and layers), as
/// digests; reads only the store.
pub fn missing_blobs(store: &Store, pin: &Pin) -> Result<Vec<String>, StoreError> {
    let manifest = pinned_manifest(store, pin)?;
    let descriptor = Descriptor::new(MediaType::ImageManifest, 0, manifest.clone());
    let mut missing = Vec::new();
    missing.extend(store.missing(&descriptor)?.iter().map(ToString::to_string));
    for layer in &pin.layers {
        let digest = layer.digest.to_string();
        if !store.has(&layer.digest) && !missing.contains(&digest) {
            missing.push(digest);
        }
    }
    Ok(missing)
}

/// The platform manifest a pin names in the store: its manifest pin, else its digest;
/// when that digest is an index the store never kept (a single-platform pull keeps
/// only the platform's image), the image a ref records as chosen from it.
pub fn pinned_manifest(store: &Store, pin: &Pin) -> Result<crate::store::Digest, StoreError> {
    if let Some(manifest) = &pin.manifest {
        return Ok(manifest.clone());
    }
    if store.has(&pin.digest) && !stored_index(store, &pin.digest) {
        return Ok(pin.digest.clone());
    }
    // A stored index is one a pull for one platform kept (for its signatures), without
    // its other platforms: the image is the ref recorded as chosen from it.
    let wanted = pin.digest.to_string();
    let mut chosen = None;
    for stored in store.refs()? {
        let from_index = stored
            .descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(crate::pull::INDEX_ANNOTATION))
            .is_some_and(|d| *d == wanted);
        if from_index && (chosen.is_none() || stored.name == pin.reference) {
            chosen = Some(stored.descriptor.digest().clone());
        }
    }
    Ok(chosen.unwrap_or_else(|| pin.digest.clone()))
}

/// Whether the stored blob `digest` is an image index (by the media type it names or
/// its shape).
fn stored_index(store: &Store, digest: &crate::store::Digest) -> bool {
    store
        .read_blob(digest, crate::store::MANIFEST_LIMIT)
        .map(|bytes| {
            crate::store::is_index_type(
                &crate::oci::manifest::RawManifest::from_stored(bytes, digest.clone()).media_type,
            )
        })
        .unwrap_or(false)
}
