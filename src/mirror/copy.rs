//! `copy` and `mirror`: push images from the store to a registry, uploading only the
//! blobs the target lacks (a HEAD first; a cross-repository mount when the source image
//! came from the same registry), blobs before manifests and the top manifest last, so
//! the target never names content it does not hold.
//!
//! The uploads are `registry`'s push side ([`Pusher`]), on the same `ClientConfig` as
//! pulls. A registry source is pulled into the store first, so nothing is downloaded
//! twice and the store stays a cache.
//!
//! After the image, the referrers the store holds for it (`referrers`).

mod referrers;

use futures_util::stream;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::oci::manifest::RawManifest;
use crate::oci::reference::Reference;
pub use crate::registry::PushOptions;
use crate::registry::{ClientConfig, PushError, Pusher, RegistryError};
use crate::store::{
    children, is_graph_type, Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT,
};

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub target: String,
    pub manifest_digest: String,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
    /// Referrer manifests pushed (signatures, SBOMs, attestations of the image).
    pub referrers_pushed: usize,
    /// Whether the target answers the referrers API; `None` when it was not asked
    /// (no referrer needed it). Without it, referrers go under the tag schemas.
    pub referrers_api: Option<bool>,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no image named {0} in the store")]
    NotInStore(String),
    /// The target is not a reference a registry accepts, or refused a step.
    #[error(transparent)]
    Push(#[from] PushError),
    #[error("the store lacks blob {digest} that {image} needs (pull it again)")]
    Incomplete { image: String, digest: Digest },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the target (its referrers API, its fallback tag) failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("reading blob {digest} from the store: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

/// Pushes the stored image `name` to `target`, reaching it as `config` says.
pub async fn copy(
    store: &Store,
    name: &str,
    target: &Reference,
    config: &ClientConfig,
    options: &PushOptions,
) -> Result<CopyReport, CopyError> {
    let root = store
        .resolve_ref(name)?
        .ok_or_else(|| CopyError::NotInStore(name.to_string()))?;
    let pusher = Pusher::login(config, target, options).await?;

    let (blobs, manifests) = plan(store, name, &root)?;
    // Where the image came from: blobs on the same registry are mounted, not sent.
    let source: Option<Reference> = name
        .parse::<Reference>()
        .ok()
        .filter(|s| s.registry == target.registry && s.repository != target.repository);
    let mut report = CopyReport {
        source: name.to_string(),
        target: target.to_string(),
        manifest_digest: root.digest().to_string(),
        ..CopyReport::default()
    };
    upload_blobs(store, &pusher, &blobs, source.as_ref(), &mut report).await?;
    // Child manifests by digest, then the top one under the target's tag.
    for (i, manifest) in manifests.iter().enumerate() {
        if i + 1 == manifests.len() {
            pusher.push_manifest_as_target(manifest).await?;
        } else {
            pusher.push_manifest_by_digest(manifest).await?;
        }
    }
    let subjects: Vec<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
    let to = referrers::Target {
        pusher: &pusher,
        config,
        reference: target,
        source: source.as_ref(),
    };
    referrers::push(store, &to, &subjects, &options.referrers, &mut report).await?;
    Ok(report)
}

/// Uploads the blobs the target lacks: a HEAD first, then a mount from `source` (the
/// same registry), else the bytes.
async fn upload_blobs(
    store: &Store,
    pusher: &Pusher,
    blobs: &[Descriptor],
    source: Option<&Reference>,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    for blob in blobs {
        if pusher.has_blob(blob.digest()).await? {
            report.blobs_present += 1;
            continue;
        }
        if let Some(source) = source {
            if pusher.mount_blob(source, blob.digest()).await.is_ok() {
                report.blobs_mounted += 1;
                continue;
            }
        }
        let size = blob.size();
        let body = blob_stream(store, blob.digest()).await?;
        pusher.upload_blob(blob.digest(), size, body).await?;
        report.blobs_uploaded += 1;
        report.bytes_uploaded += size;
    }
    Ok(())
}

/// The blobs (configs and layers) and the manifests (children first, the root last)
/// of a stored image; every one of them must be in the store.
fn plan(
    store: &Store,
    name: &str,
    root: &Descriptor,
) -> Result<(Vec<Descriptor>, Vec<RawManifest>), CopyError> {
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut manifests: Vec<RawManifest> = Vec::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((descriptor, expanded)) = stack.pop() {
        let digest = descriptor.digest().clone();
        if !store.has(&digest) {
            return Err(CopyError::Incomplete {
                image: name.to_string(),
                digest,
            });
        }
        if !is_graph_type(descriptor.media_type().as_ref()) {
            if !blobs.iter().any(|b| b.digest() == &digest) {
                blobs.push(descriptor);
            }
            continue;
        }
        let bytes = store.read_blob(&digest, MANIFEST_LIMIT)?;
        if expanded {
            if !manifests.iter().any(|m| m.digest == digest) {
                manifests.push(RawManifest::from_stored(bytes, digest));
            }
            continue;
        }
        let kids = children(&bytes).map_err(|e| StoreError::Corrupt {
            digest: digest.clone(),
            detail: format!("not a valid manifest: {e}"),
        })?;
        // Revisit this manifest after its children, so it is pushed after them.
        stack.push((descriptor, true));
        stack.extend(kids.into_iter().map(|k| (k, false)));
    }
    Ok((blobs, manifests))
}

/// A stored blob as a stream of 1 MiB chunks: memory stays flat whatever its size.
async fn blob_stream(
    store: &Store,
    digest: &Digest,
) -> Result<
    impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    CopyError,
> {
    let path = store.blob_path(digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| CopyError::Read {
            digest: digest.clone(),
            source,
        })?;
    Ok(stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            // End the stream after an error; the upload fails with it.
            Err(e) => Some((Err(e), None)),
        }
    }))
}
