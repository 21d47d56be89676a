//! Warming a runtime: get images into the store (a lockfile synced, or references
//! pulled), then load each one the runtime does not already hold, checking that what
//! the store holds under a pinned name is the pinned manifest.

use std::sync::Arc;

use serde::Serialize;

use super::{runtime_name, ContainerRuntime, ImageError, LoadedImage, RuntimeError, StoredImage};
use crate::lock::pin::Pin;
use crate::lock::sync::sync;
use crate::oci::reference::Reference;
use crate::pull::progress::ProgressReporter;
use crate::pull::{pull_many, PullOptions};
use crate::registry::Client;
use crate::store::{Digest, Store, StoreError};

/// One image a warm is to load: where the store holds it, or why it does not.
#[derive(Debug, Clone)]
pub struct WarmTarget {
    /// What the user called it (a reference, or a lockfile's name for the image).
    pub label: String,
    /// The store's name for it, or why it could not be put in the store.
    pub store_ref: Result<String, String>,
    /// The manifest digest a lockfile pins (checked before loading).
    pub pinned: Option<Digest>,
}

/// What happened to one target in the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Warmed {
    /// The runtime already held it: nothing was streamed.
    pub skipped: bool,
    pub image: LoadedImage,
}

/// Why one target could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// It never reached the store (the pull or sync said why).
    #[error("{0}")]
    NotStored(String),
    #[error("the store's {store_ref} is {stored}, not the pinned {pinned}")]
    NotPinned {
        store_ref: String,
        stored: Digest,
        pinned: Digest,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Syncs `pins` into the store; one target per pin, in order.
pub async fn sync_targets(
    client: Arc<Client>,
    store: &Store,
    pins: &[Pin],
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Vec<WarmTarget> {
    let report = sync(client, store, pins, options, progress).await;
    pins.iter()
        .zip(report.images)
        .map(|(pin, synced)| WarmTarget {
            label: pin.name.clone(),
            store_ref: if synced.status.is_whole() {
                pin.reference
                    .parse::<Reference>()
                    .map(|r| r.to_string())
                    .map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "{} in the store{}",
                    synced.status.as_str(),
                    synced.detail.map(|d| format!(": {d}")).unwrap_or_default()
                ))
            },
            pinned: Some(pin.manifest.as_ref().unwrap_or(&pin.digest).clone()),
        })
        .collect()
}

/// Pulls each of `references` into the store, together ([`pull_many`]: their refs
/// recorded in one update); offline, a name the store holds as it is needs no pull.
pub async fn pull_targets(
    client: Arc<Client>,
    store: &Store,
    references: &[String],
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<Vec<WarmTarget>, StoreError> {
    let mut targets: Vec<WarmTarget> = Vec::with_capacity(references.len());
    let mut to_pull = Vec::new();
    for reference in references {
        let store_ref = if options.offline && store.resolve_ref(reference)?.is_some() {
            Ok(reference.clone())
        } else {
            match reference.parse::<Reference>() {
                Ok(parsed) => {
                    to_pull.push((targets.len(), parsed));
                    Err(String::new()) // filled in below
                }
                Err(e) => Err(e.to_string()),
            }
        };
        targets.push(WarmTarget {
            label: reference.clone(),
            store_ref,
            pinned: None,
        });
    }
    let parsed: Vec<Reference> = to_pull.iter().map(|(_, r)| r.clone()).collect();
    let pulled = pull_many(client, store, &parsed, options, progress).await?;
    for ((i, _), result) in to_pull.into_iter().zip(pulled) {
        targets[i].store_ref = result.map(|r| r.reference).map_err(|e| e.to_string());
    }
    Ok(targets)
}

/// Loads one target unless the runtime holds it already (by name and image ID).
pub fn warm_one(
    store: &Store,
    runtime: &dyn ContainerRuntime,
    target: &WarmTarget,
) -> Result<Warmed, WarmError> {
    let store_ref = target.store_ref.clone().map_err(WarmError::NotStored)?;
    let image = StoredImage::open(store, &store_ref)?;
    if let Some(pinned) = &target.pinned {
        if image.manifest.digest() != pinned {
            return Err(WarmError::NotPinned {
                store_ref,
                stored: image.manifest.digest().clone(),
                pinned: pinned.clone(),
            });
        }
    }
    let name = runtime_name(&image.store_ref);
    let id = image.config.digest().to_string();
    if runtime.is_locally_available(&name, &id) {
        let image = LoadedImage {
            name,
            id,
            bytes: 0,
            seconds: 0.0,
        };
        return Ok(Warmed {
            skipped: true,
            image,
        });
    }
    let image = runtime.load(store, &image, &name)?;
    Ok(Warmed {
        skipped: false,
        image,
    })
}
