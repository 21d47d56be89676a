//! What a stored image is: its manifest, platform, layers and run configuration, read
//! from the store alone (no network).

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;

use crate::oci::manifest::{platforms, ManifestKind, RawManifest};
use crate::store::{Store, StoreError, MANIFEST_LIMIT};

/// One layer as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// A stored image, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    /// For an index: the platforms it lists; for an image: its own.
    pub platforms: Vec<String>,
    pub layers: Vec<LayerInfo>,
    pub size: u64,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Why an image could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no image named {0} in the store (pull it first)")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{reference}: {detail}")]
    Malformed { reference: String, detail: String },
}

/// Summarises the stored image `name` (an index is summarised by its platforms).
pub fn inspect(store: &Store, name: &str) -> Result<ImageInfo, InspectError> {
    let descriptor = store
        .resolve_ref(name)?
        .ok_or_else(|| InspectError::NotFound(name.to_string()))?;
    let bytes = store.read_blob(descriptor.digest(), MANIFEST_LIMIT)?;
    let stored = RawManifest::from_stored(bytes, descriptor.digest().clone());
    let malformed = |detail: String| InspectError::Malformed {
        reference: name.to_string(),
        detail,
    };
    let mut info = ImageInfo {
        reference: name.to_string(),
        digest: descriptor.digest().to_string(),
        media_type: stored.media_type.clone(),
        platforms: Vec::new(),
        layers: Vec::new(),
        size: 0,
        env: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    match stored.parse(name).map_err(|e| malformed(e.to_string()))? {
        ManifestKind::Index(index) => {
            info.platforms = platforms(&index);
        }
        ManifestKind::Image(manifest) => fill_image(store, &manifest, &mut info, &malformed)?,
    }
    Ok(info)
}

fn fill_image(
    store: &Store,
    manifest: &ImageManifest,
    info: &mut ImageInfo,
    malformed: &dyn Fn(String) -> InspectError,
) -> Result<(), InspectError> {
    info.layers = manifest
        .layers()
        .iter()
        .map(|l| LayerInfo {
            digest: l.digest().to_string(),
            size: l.size(),
            media_type: l.media_type().to_string(),
        })
        .collect();
    info.size = manifest.config().size() + info.layers.iter().map(|l| l.size).sum::<u64>();
    let bytes = store.read_blob(manifest.config().digest(), MANIFEST_LIMIT)?;
    let config: ImageConfiguration = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(format!("config {}: {e}", manifest.config().digest())))?;
    info.platforms = vec![format!("{}/{}", config.os(), config.architecture())];
    if let Some(run) = config.config() {
        info.env = run.env().clone().unwrap_or_default();
        info.entrypoint = run.entrypoint().clone().unwrap_or_default();
        info.cmd = run.cmd().clone().unwrap_or_default();
    }
    Ok(())
}
