//! The image a load hands over: a stored ref resolved to one platform's manifest,
//! config and layers, checked to be whole in the store before any byte is streamed.

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::oci::manifest::{platform_entry, ManifestKind, RawManifest};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::store::{parse_digest, Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT};

/// One image of the store, whole, ready to be archived.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The store's name for it (as `stowage ls` shows it).
    pub store_ref: String,
    /// The platform manifest (for an index: this machine's platform).
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Descriptor>,
    /// The config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<Digest>,
}

/// Why a stored image cannot be handed over.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image named {0} in the store (pull it first)")]
    NotFound(String),
    #[error("{name} is not whole in the store: it lacks {missing} (pull it again)")]
    Incomplete { name: String, missing: String },
    #[error("{name}: {detail}")]
    Malformed { name: String, detail: String },
    #[error("{name} is an index without an image for {platform}")]
    NoPlatform { name: String, platform: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoredImage {
    /// Every blob of the image: its manifest, its config, then its layers in order.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(&self.layers)
    }

    /// The image `reference` names in the store: the ref as `ls` shows it, or a
    /// reference that normalizes to one (`alpine` is `docker.io/library/alpine:latest`).
    /// Everything it needs must be stored.
    pub fn open(store: &Store, reference: &str) -> Result<Self, ImageError> {
        let (store_ref, descriptor) = find(store, reference)?;
        let malformed = |detail: String| ImageError::Malformed {
            name: store_ref.clone(),
            detail,
        };
        let bytes = store.read_blob(descriptor.digest(), MANIFEST_LIMIT)?;
        let mut stored = RawManifest::from_stored(bytes, descriptor.digest().clone());
        let manifest: ImageManifest = match stored.parse(&store_ref) {
            Ok(ManifestKind::Image(manifest)) => manifest,
            Ok(ManifestKind::Index(index)) => {
                let host = Platform::host();
                let child =
                    platform_entry(&index, &host).ok_or_else(|| ImageError::NoPlatform {
                        name: store_ref.clone(),
                        platform: host.to_string(),
                    })?;
                let bytes = store.read_blob(child.digest(), MANIFEST_LIMIT)?;
                stored = RawManifest::from_stored(bytes, child.digest().clone());
                match stored.parse(&store_ref) {
                    Ok(ManifestKind::Image(manifest)) => manifest,
                    Ok(ManifestKind::Index(_)) => {
                        return Err(malformed("an index in an index".into()))
                    }
                    Err(e) => return Err(malformed(e.to_string())),
                }
            }
            Err(e) => return Err(malformed(e.to_string())),
        };
        let manifest_descriptor = stored.descriptor();
        let missing = store.missing(&manifest_descriptor)?;
        if !missing.is_empty() {
            let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(ImageError::Incomplete {
                name: store_ref,
                missing: missing.join(", "),
            });
        }
        let config_bytes = store.read_blob(manifest.config().digest(), MANIFEST_LIMIT)?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| malformed(format!("config {}: {e}", manifest.config().digest())))?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| parse_digest(d))
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(malformed(format!(
                "the manifest lists {} layers but the config {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        // Handed to a runtime: a use, for least-recently-used eviction.
        if let Err(e) = store.record_use(&[&store_ref]) {
            tracing::debug!("recording the use of {store_ref}: {e}");
        }
        Ok(Self {
            store_ref,
            manifest: manifest_descriptor,
            manifest_bytes: stored.bytes,
            config: manifest.config().clone(),
            config_bytes,
            layers: manifest.layers().clone(),
            diff_ids,
        })
    }
}

fn find(store: &Store, reference: &str) -> Result<(String, Descriptor), ImageError> {
    if let Some(descriptor) = store.resolve_ref(reference)? {
        return Ok((reference.to_string(), descriptor));
    }
    if let Ok(parsed) = reference.parse::<Reference>() {
        let name = parsed.to_string();
        if let Some(descriptor) = store.resolve_ref(&name)? {
            return Ok((name, descriptor));
        }
    }
    Err(ImageError::NotFound(reference.to_string()))
}
