//! Pull: resolve a reference, choose the platform, plan what the store lacks, fetch
//! it in parallel into the store, and record the image under its reference.

pub mod ensure;
pub mod expect;
mod fetch;
mod in_flight;
mod many;
pub mod peers;
pub mod pinned;
pub mod progress;
pub mod referrers;
pub(crate) use referrers::carry_referrers;
pub mod tagcache;

use std::sync::Arc;
use std::time::Instant;

use oci_spec::image::{Descriptor, ImageManifest};
use serde::Serialize;

use crate::oci::manifest::{platform_entry, platforms, ManifestError, ManifestKind, RawManifest};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::referrer::ReferrerFilter;
use crate::pull::expect::{Expectations, Mismatch};
use crate::pull::peers::Peers;
use crate::pull::progress::ProgressReporter;
use crate::pull::referrers::{PulledReferrer, ReferrerError};
use crate::pull::tagcache::TagCache;
use crate::registry::{BlobOptions, Client, RegistryError};
use crate::store::{Digest, Store, StoreError, MANIFEST_LIMIT};

pub(crate) use fetch::fetch_all;
pub use many::pull_many;
pub(crate) use many::record_all;

/// The annotation on a single-platform ref naming the index it was chosen from.
pub use crate::store::INDEX_ANNOTATION;

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// Keep the whole index and every platform's image.
    pub all_platforms: bool,
    /// What the image must be (a pinned digest, pinned layers); on a mismatch
    /// nothing is fetched or recorded.
    pub expect: Expectations,
    /// Use only the store; fail if the image is not all there.
    pub offline: bool,
    /// Trust a tag's cached resolution this long when the store holds the image whole;
    /// zero asks the registry every time.
    pub ttl: std::time::Duration,
    pub blobs: BlobOptions,
    /// Also carry the image's referrers (of the index and of each image kept) that
    /// this filter wants; offline, report those the store records.
    pub referrers: Option<ReferrerFilter>,
    /// Ask these peers for each missing blob (its owner first) before the registry.
    pub peers: Option<Arc<Peers>>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            all_platforms: false,
            expect: Expectations::default(),
            offline: false,
            ttl: std::time::Duration::ZERO,
            blobs: BlobOptions::default(),
            referrers: None,
            peers: None,
        }
    }
}

/// What a pull did, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub reference: String,
    /// The digest the ref points at (the platform manifest, or the index with
    /// `--all-platforms`).
    pub manifest_digest: String,
    /// The index the platform manifest was chosen from, if any.
    pub index_digest: Option<String>,
    pub layers: usize,
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
    pub bytes_present: u64,
    pub seconds: f64,
    /// The referrers carried, when they were asked for (`PullOptions::referrers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Vec<PulledReferrer>>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}; nothing was recorded")]
    Mismatch(Mismatch),
    #[error("{reference} is not in the store (offline: nothing was fetched){detail}")]
    NotLocal { reference: String, detail: String },
    #[error(transparent)]
    Referrers(Box<ReferrerError>),
}

impl From<ReferrerError> for PullError {
    fn from(e: ReferrerError) -> Self {
        PullError::Referrers(Box::new(e))
    }
}

/// A manifest that cannot be used is the registry's `BadManifest`, read from the
/// registry or from the store alike.
impl From<ManifestError> for PullError {
    fn from(e: ManifestError) -> Self {
        PullError::Registry(e.into())
    }
}

/// The images a reference resolved to, with the manifests to store.
struct Resolved {
    /// The ref's descriptor when the image was resolved from the store: it stays as
    /// it is recorded (an offline pull never narrows an index to one platform).
    stored: Option<Descriptor>,
    /// The index, when the reference names one.
    index: Option<RawManifest>,
    /// The index a stored single-platform image was chosen from, as recorded.
    recorded_index: Option<Digest>,
    images: Vec<(
        RawManifest,
        ImageManifest,
        Option<oci_spec::image::Platform>,
    )>,
}

/// Pulls `reference` into `store`.
pub async fn pull(
    client: Arc<Client>,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<PullReport, PullError> {
    let _lease = store.lease()?;
    let pulled = pull_unrecorded(client.clone(), store, reference, options, progress).await?;
    if let Some((name, root)) = &pulled.new_ref {
        store.set_ref(name, root)?;
        TagCache::new(store).put(name, root.digest())?;
    }
    if let Err(e) = store.record_use(&[&pulled.report.reference]) {
        tracing::warn!("recording the use of {}: {e}", pulled.report.reference);
    }
    let mut report = pulled.report;
    if let Some(filter) = &options.referrers {
        report.referrers = Some(
            carry_referrers(&client, store, reference, &pulled.subjects, filter, options).await?,
        );
    }
    Ok(report)
}

/// A pull whose ref is still to be recorded.
pub(crate) struct Pulled {
    pub report: PullReport,
    /// The ref to record (and the tag resolution to cache), when the image was
    /// resolved from the registry: `None` when the store's ref already named it.
    pub new_ref: Option<(String, Descriptor)>,
    /// What referrers are looked for: the index the image came from, when one was
    /// fetched or kept, then each image's manifest.
    pub subjects: Vec<Digest>,
}

/// [`pull`] without recording the ref, for callers that pull many images and record
/// them together ([`Store::set_refs`]: one rewrite of index.json, not one per image).
/// The caller must hold a lease until the refs are recorded.
pub(crate) async fn pull_unrecorded(
    client: Arc<Client>,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<Pulled, PullError> {
    let started = Instant::now();
    let tags = TagCache::new(store);
    let name = reference.to_string();
    let cached = reference.digest.is_none() && cache_is_fresh(store, &tags, &name, options.ttl)?;
    let resolved = if options.offline || cached {
        resolve_offline(store, reference, options)?
    } else {
        resolve(&client, store, reference, options).await?
    };
    if resolved.images.is_empty() {
        return Err(RegistryError::BadManifest {
            reference: reference.to_string(),
            detail: "the index lists no image stowage can pull".into(),
        }
        .into());
    }
    if !options.expect.is_empty() {
        let index = resolved
            .index
            .as_ref()
            .map(|i| &i.digest)
            .or(resolved.recorded_index.as_ref());
        let found_in = if options.offline || cached {
            "the store"
        } else {
            "the registry"
        };
        let checked = resolved.images.iter().map(|(fetched, manifest, _)| {
            options
                .expect
                .check(&name, found_in, index, &fetched.digest, manifest)
        });
        // With every platform kept, one of them must match.
        let mut first_error = None;
        if !checked
            .into_iter()
            .any(|r| r.map_err(|e| first_error.get_or_insert(e).clone()).is_ok())
        {
            return Err(PullError::Mismatch(
                first_error.expect("at least one image"),
            ));
        }
    }

    // Every blob once, even when platforms share layers.
    let mut wanted: Vec<Descriptor> = Vec::new();
    for (_, manifest, _) in &resolved.images {
        for descriptor in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if !wanted.iter().any(|d| d.digest() == descriptor.digest()) {
                wanted.push(descriptor.clone());
            }
        }
    }
    let mut bytes_present = 0;
    let mut missing = Vec::new();
    for descriptor in wanted {
        match store.stat(descriptor.digest())? {
            Some(size) => bytes_present += size,
            None => missing.push(descriptor),
        }
    }
    if options.offline && !missing.is_empty() {
        return Err(PullError::NotLocal {
            reference: reference.to_string(),
            detail: format!(
                ": {} blobs missing, first {}",
                missing.len(),
                missing[0].digest()
            ),
        });
    }
    progress.plan(missing.iter().map(|d| d.size()).sum(), bytes_present);
    let (blobs_fetched, bytes_fetched, already) =
        fetch_all(&client, store, reference, missing, options, &progress).await?;
    bytes_present += already;

    // Manifests last, so a ref never points at an image with missing blobs.
    for (manifest, _, _) in &resolved.images {
        store.put_as(&manifest.digest, &manifest.bytes)?;
    }
    let (root, index_digest) = match (&resolved.index, options.all_platforms) {
        (Some(index), true) => {
            store.put_as(&index.digest, &index.bytes)?;
            (index.descriptor(), None)
        }
        (index, _) => {
            let (manifest, _, platform) = &resolved.images[0];
            let mut descriptor = manifest.descriptor();
            descriptor.set_platform(platform.clone());
            if let Some(index) = index {
                // The index itself is kept (a few KiB; gc keeps it while the ref names
                // it) so a signature of the index can stand for this platform later:
                // the stored index shows it lists this manifest.
                store.put_as(&index.digest, &index.bytes)?;
                // Remembered so a later offline or cached pull can still match a pin
                // that names the index.
                descriptor.set_annotations(Some(
                    [(INDEX_ANNOTATION.to_string(), index.digest.to_string())]
                        .into_iter()
                        .collect(),
                ));
            }
            (descriptor, index.as_ref().map(|i| i.digest.to_string()))
        }
    };
    let subjects: Vec<Digest> = resolved
        .index
        .iter()
        .map(|i| i.digest.clone())
        .chain(resolved.recorded_index.clone())
        .chain(resolved.images.iter().map(|(m, _, _)| m.digest.clone()))
        .collect();
    let (root, new_ref) = match resolved.stored {
        Some(stored) => (stored, None),
        None => (root.clone(), Some((name.clone(), root))),
    };
    let report = PullReport {
        reference: name,
        manifest_digest: root.digest().to_string(),
        index_digest,
        layers: resolved
            .images
            .iter()
            .map(|(_, m, _)| m.layers().len())
            .sum(),
        blobs_fetched,
        bytes_fetched,
        bytes_present,
        seconds: started.elapsed().as_secs_f64(),
        referrers: None,
    };
    Ok(Pulled {
        report,
        new_ref,
        subjects,
    })
}

/// Whether the tag cache resolved `name` within `ttl` to what the store's ref holds,
/// and the store holds that image whole.
fn cache_is_fresh(
    store: &Store,
    tags: &TagCache,
    name: &str,
    ttl: std::time::Duration,
) -> Result<bool, PullError> {
    let Some(digest) = tags.get(name, ttl) else {
        return Ok(false);
    };
    match store.resolve_ref(name)? {
        Some(descriptor) if descriptor.digest() == &digest => Ok(store.is_complete(&descriptor)?),
        _ => Ok(false),
    }
}

/// Asks the registry (or the store, for a digest it already holds) for the manifest
/// and, for an index, the platform manifest(s).
async fn resolve(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Resolved, PullError> {
    let top = manifest(client, store, reference, &reference.target()).await?;
    match top.parse(&reference.to_string())? {
        ManifestKind::Image(image) => Ok(Resolved {
            stored: None,
            index: None,
            recorded_index: None,
            images: vec![(top, image, None)],
        }),
        ManifestKind::Index(index) => {
            let chosen: Vec<&Descriptor> = if options.all_platforms {
                index.manifests().iter().collect()
            } else {
                vec![choose_platform(&index, &options.platform, reference)?]
            };
            let mut images = Vec::new();
            for descriptor in chosen {
                let child =
                    manifest(client, store, reference, descriptor.digest().as_ref()).await?;
                match child.parse(&reference.to_string())? {
                    ManifestKind::Image(image) => {
                        images.push((child, image, descriptor.platform().clone()))
                    }
                    ManifestKind::Index(_) => {
                        return Err(RegistryError::BadManifest {
                            reference: reference.to_string(),
                            detail: format!(
                                "index entry {} is itself an index",
                                descriptor.digest()
                            ),
                        }
                        .into())
                    }
                }
            }
            Ok(Resolved {
                stored: None,
                index: Some(top),
                recorded_index: None,
                images,
            })
        }
    }
}

/// A manifest by tag or digest; a digest the store already holds is read from there.
async fn manifest(
    client: &Client,
    store: &Store,
    reference: &Reference,
    target: &str,
) -> Result<RawManifest, PullError> {
    if let Ok(digest) = crate::store::parse_digest(target) {
        if store.has(&digest) {
            let bytes = store.read_blob(&digest, MANIFEST_LIMIT)?;
            return Ok(RawManifest::from_stored(bytes, digest));
        }
    }
    Ok(client.manifest(reference, target).await?)
}

/// The image a ref names, from the store alone.
fn resolve_offline(
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Resolved, PullError> {
    let name = reference.to_string();
    let not_local = |detail: String| PullError::NotLocal {
        reference: name.clone(),
        detail,
    };
    let descriptor = store
        .resolve_ref(&name)?
        .ok_or_else(|| not_local(String::new()))?;
    let bytes = store
        .read_blob(descriptor.digest(), MANIFEST_LIMIT)
        .map_err(|e| not_local(format!(": {e}")))?;
    let top = RawManifest::from_stored(bytes, descriptor.digest().clone());
    match top.parse(&name)? {
        ManifestKind::Image(image) => {
            if let Some(stored) = descriptor.platform() {
                if !options.all_platforms && !options.platform.matches(stored) {
                    return Err(not_local(format!(
                        ": it is stored for {}, not {}",
                        Platform::describe(stored),
                        options.platform
                    )));
                }
            }
            let recorded_index = descriptor
                .annotations()
                .as_ref()
                .and_then(|a| a.get(INDEX_ANNOTATION))
                .and_then(|d| crate::store::parse_digest(d).ok());
            Ok(Resolved {
                stored: Some(descriptor.clone()),
                index: None,
                recorded_index,
                images: vec![(top, image, descriptor.platform().clone())],
            })
        }
        ManifestKind::Index(index) => {
            let chosen: Vec<&Descriptor> = if options.all_platforms {
                index.manifests().iter().collect()
            } else {
                vec![choose_platform(&index, &options.platform, reference)?]
            };
            let mut images = Vec::new();
            for child in chosen {
                let bytes = store
                    .read_blob(child.digest(), MANIFEST_LIMIT)
                    .map_err(|e| not_local(format!(": {e}")))?;
                let fetched = RawManifest::from_stored(bytes, child.digest().clone());
                if let ManifestKind::Image(image) = fetched.parse(&name)? {
                    images.push((fetched, image, child.platform().clone()));
                }
            }
            Ok(Resolved {
                stored: Some(descriptor.clone()),
                index: Some(top),
                recorded_index: None,
                images,
            })
        }
    }
}

/// What a reference resolves to on the registry.
#[derive(Debug, Clone)]
pub struct ResolvedDigest {
    /// The platform manifest (or the manifest, when there is no index).
    pub manifest_digest: Digest,
    pub index_digest: Option<Digest>,
}

/// Asks the registry what `reference` points at for `platform`, fetching no blob.
pub async fn resolve_digest(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<ResolvedDigest, PullError> {
    let top = client.manifest(reference, &reference.target()).await?;
    match top.parse(&reference.to_string())? {
        ManifestKind::Image(_) => Ok(ResolvedDigest {
            manifest_digest: top.digest,
            index_digest: None,
        }),
        ManifestKind::Index(index) => {
            let chosen = choose_platform(&index, platform, reference)?;
            Ok(ResolvedDigest {
                manifest_digest: chosen.digest().clone(),
                index_digest: Some(top.digest),
            })
        }
    }
}

/// The entry of `index` for `platform`, or an error listing the platforms it has.
pub(crate) fn choose_platform<'i>(
    index: &'i oci_spec::image::ImageIndex,
    platform: &Platform,
    reference: &Reference,
) -> Result<&'i Descriptor, RegistryError> {
    platform_entry(index, platform).ok_or_else(|| RegistryError::NoPlatform {
        reference: reference.to_string(),
        platform: platform.to_string(),
        available: platforms(index).join(", "),
    })
}
