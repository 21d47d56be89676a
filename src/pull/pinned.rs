//! The calls an environment tool makes when it drives stowage from its own code (the
//! runtime trait of the seeds): pinned pulls, per-layer digest checks, and proof that
//! an image is whole in the store.

use std::sync::Arc;

use oci_spec::image::ImageManifest;

use crate::oci::reference::Reference;
use crate::pull::expect::{Expectations, ExpectedLayer, Mismatch};
use crate::pull::progress::ProgressReporter;
use crate::pull::{pull, PullError, PullOptions, PullReport};
use crate::registry::Client;
use crate::store::{Descriptor, Digest, MediaType, Store, StoreError, MANIFEST_LIMIT};

/// Pulls `image` and fails, recording nothing, unless the registry's manifest digest
/// (index or platform manifest) is `expected_digest`.
pub async fn pull_verified(
    client: Arc<Client>,
    store: &Store,
    image: &Reference,
    expected_digest: &Digest,
    progress: Arc<dyn ProgressReporter>,
) -> Result<PullReport, PullError> {
    let options = PullOptions {
        expect: Expectations {
            digest: Some(expected_digest.clone()),
            ..Expectations::default()
        },
        ..PullOptions::default()
    };
    pull(client, store, image, &options, progress).await
}

/// Like [`pull_verified`], and every layer must be the pinned one, in order: a
/// mismatch names the layer index, the expected and the actual digest.
pub async fn pull_verified_v2(
    client: Arc<Client>,
    store: &Store,
    image: &Reference,
    expected_image_digest: &Digest,
    layers: &[ExpectedLayer],
    progress: Arc<dyn ProgressReporter>,
) -> Result<PullReport, PullError> {
    let options = PullOptions {
        expect: Expectations {
            digest: Some(expected_image_digest.clone()),
            manifest: None,
            layers: Some(layers.to_vec()),
        },
        ..PullOptions::default()
    };
    pull(client, store, image, &options, progress).await
}

/// Why a stored image could not be checked or did not match.
#[derive(Debug, thiserror::Error)]
pub enum LayerCheckError {
    #[error("no image named {0} in the store")]
    NotFound(String),
    #[error("{image}: the stored manifest {digest} is an index; name a platform image")]
    IsIndex { image: String, digest: Digest },
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{image}: the stored manifest is malformed: {detail}")]
    Malformed { image: String, detail: String },
}

/// Checks the layers of an already-pulled image (by its name in the store) against
/// `expected_layers`, with no network.
pub fn verify_layer_digests(
    store: &Store,
    image: &str,
    expected_layers: &[ExpectedLayer],
) -> Result<(), LayerCheckError> {
    let descriptor = store
        .resolve_ref(image)?
        .ok_or_else(|| LayerCheckError::NotFound(image.to_string()))?;
    let bytes = store.read_blob(descriptor.digest(), MANIFEST_LIMIT)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| LayerCheckError::Malformed {
            image: image.to_string(),
            detail: e.to_string(),
        })?;
    if value.get("manifests").is_some() {
        return Err(LayerCheckError::IsIndex {
            image: image.to_string(),
            digest: descriptor.digest().clone(),
        });
    }
    let manifest: ImageManifest =
        serde_json::from_value(value).map_err(|e| LayerCheckError::Malformed {
            image: image.to_string(),
            detail: e.to_string(),
        })?;
    let expect = Expectations {
        layers: Some(expected_layers.to_vec()),
        ..Expectations::default()
    };
    expect.check(image, "the store", None, descriptor.digest(), &manifest)?;
    Ok(())
}

/// Whether the store holds the whole image `digest` (manifest or index, every child
/// manifest, config and layer). A ref alone, or a manifest without its layers, is not
/// enough; `image_ref` only names the image in logs, since content is found by digest.
pub fn is_locally_available(store: &Store, image_ref: &str, digest: &Digest) -> bool {
    let descriptor = Descriptor::new(MediaType::ImageManifest, 0, digest.clone());
    let whole = store.has(digest) && store.is_complete(&descriptor).unwrap_or(false);
    tracing::debug!(image_ref, %digest, whole, "local availability");
    whole
}
