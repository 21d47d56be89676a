//! `lock`: resolve references to what they are now on the registry and pin them,
//! platform manifest and every layer, in a [`Lockfile`]; with `--referrers`, the
//! referrers of the index and of the image, by digest.

use oci_spec::image::ImageManifest;

use crate::lock::lockfile::{LockedImage, LockedLayer, LockedReferrer, Lockfile};
use crate::lock::pin::ImageKind;
use crate::oci::annotation::{
    ANNOTATION_BUILD, ANNOTATION_NAME, ANNOTATION_PACKAGES, ANNOTATION_PREFIX, ANNOTATION_PYTHON,
    ANNOTATION_VERSION,
};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::oci::referrer::ReferrerFilter;
use crate::pull::referrers::ReferrerError;
use crate::pull::PullError;
use crate::registry::{Client, ManifestKind, RegistryError};
use crate::store::Digest;

/// A tag that resolves to another manifest than the lockfile pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub reference: String,
    pub from: String,
    pub to: String,
}

/// Pins `references` into `lockfile`. An image already pinned keeps its pin unless
/// `update`; with `update` (and no references given) every pinned image is resolved
/// again. Returns the tags that moved.
pub async fn lock(
    client: &Client,
    lockfile: &mut Lockfile,
    references: &[Reference],
    update: bool,
    platform: &Platform,
) -> Result<Vec<Moved>, PullError> {
    lock_with_referrers(client, lockfile, references, update, platform, None).await
}

/// [`lock`], and each image locked also pins the referrers `referrers` wants, of its
/// index and of its platform manifest. Without a filter, an image resolved again to
/// the same digest keeps the referrers it had pinned.
pub async fn lock_with_referrers(
    client: &Client,
    lockfile: &mut Lockfile,
    references: &[Reference],
    update: bool,
    platform: &Platform,
    referrers: Option<&ReferrerFilter>,
) -> Result<Vec<Moved>, PullError> {
    let mut wanted: Vec<Reference> = references.to_vec();
    if update && wanted.is_empty() {
        for image in &lockfile.images {
            wanted.push(image.reference.parse().map_err(
                |e: crate::oci::reference::ReferenceError| RegistryError::Config {
                    what: image.reference.clone(),
                    detail: e.to_string(),
                },
            )?);
        }
    }
    let mut moved = Vec::new();
    for reference in wanted {
        let name = reference.to_string();
        let existing = lockfile.images.iter().position(|i| i.reference == name);
        // A pinned image is kept as it is without --update; --referrers alone adds the
        // referrers of the pinned image, if the tag still names it.
        let keep = existing.filter(|_| !update);
        if keep.is_some() && referrers.is_none() {
            continue;
        }
        let (mut image, subjects) = resolve_image(client, &reference, platform).await?;
        if let Some(at) = keep {
            if lockfile.images[at].digest != image.digest {
                tracing::warn!(
                    "{name} has moved from its pin ({} -> {}): its referrers are not pinned (use --update)",
                    lockfile.images[at].digest,
                    image.digest
                );
                continue;
            }
        }
        match referrers {
            Some(filter) => {
                image.referrers = pin_referrers(client, &reference, &subjects, filter).await?
            }
            None => {
                if let Some(old) = existing.map(|at| &lockfile.images[at]) {
                    if old.digest == image.digest {
                        image.referrers = old.referrers.clone();
                    }
                }
            }
        }
        match existing {
            Some(at) => {
                if lockfile.images[at].digest != image.digest {
                    moved.push(Moved {
                        reference: name,
                        from: lockfile.images[at].digest.clone(),
                        to: image.digest.clone(),
                    });
                }
                lockfile.images[at] = image;
            }
            None => lockfile.images.push(image),
        }
    }
    Ok(moved)
}

/// The referrers `filter` wants of each of `subjects`, as lockfile entries.
async fn pin_referrers(
    client: &Client,
    reference: &Reference,
    subjects: &[Digest],
    filter: &ReferrerFilter,
) -> Result<Vec<LockedReferrer>, PullError> {
    let mut pinned = Vec::new();
    for subject in subjects {
        let found = client
            .referrers(reference, subject, filter.single_type())
            .await
            .map_err(|source| ReferrerError::Discover {
                subject: subject.clone(),
                source,
            })?;
        pinned.extend(
            found
                .iter()
                .filter(|d| filter.wants(d))
                .map(|d| LockedReferrer::of(subject, d)),
        );
    }
    Ok(pinned)
}

/// What `reference` is on the registry now, for `platform`, with the digests its
/// referrers would refer to (the index's, if any, then the image's).
async fn resolve_image(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<(LockedImage, Vec<Digest>), PullError> {
    let name = reference.to_string();
    let top = client.manifest(reference, &reference.target()).await?;
    let mut subjects = Vec::new();
    let (fetched, platform_name) = match top.parse(&name)? {
        ManifestKind::Image(_) => (top, platform.to_string()),
        ManifestKind::Index(index) => {
            let chosen = crate::pull::choose_platform(&index, platform, reference)?;
            subjects.push(top.digest.clone());
            let described = chosen
                .platform()
                .as_ref()
                .map(Platform::describe)
                .unwrap_or_else(|| platform.to_string());
            (
                client.manifest(reference, chosen.digest().as_ref()).await?,
                described,
            )
        }
    };
    let ManifestKind::Image(manifest) = fetched.parse(&name)? else {
        return Err(RegistryError::BadManifest {
            reference: name,
            detail: "an index inside an index".into(),
        }
        .into());
    };
    subjects.push(fetched.digest.clone());
    let image = LockedImage {
        reference: name,
        digest: fetched.digest.to_string(),
        platform: platform_name,
        kind: kind_of(&manifest),
        layers: layers_of(&manifest),
        referrers: Vec::new(),
    };
    Ok((image, subjects))
}

fn kind_of(manifest: &ImageManifest) -> ImageKind {
    let factored = manifest.layers().iter().any(|l| {
        l.annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_NAME) || a.contains_key(ANNOTATION_PACKAGES))
    });
    if factored {
        ImageKind::FactoredOci
    } else {
        ImageKind::Oci
    }
}

fn layers_of(manifest: &ImageManifest) -> Vec<LockedLayer> {
    manifest
        .layers()
        .iter()
        .map(|l| {
            let annotation = |key: &str| l.annotations().as_ref().and_then(|a| a.get(key)).cloned();
            let package = annotation(ANNOTATION_NAME).map(|name| {
                format!(
                    "{name}-{}-{}",
                    annotation(ANNOTATION_VERSION).unwrap_or_default(),
                    annotation(ANNOTATION_BUILD).unwrap_or_default()
                )
            });
            let packages = annotation(ANNOTATION_PACKAGES)
                .map(|list| list.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            LockedLayer {
                digest: l.digest().to_string(),
                size: l.size(),
                media_type: l.media_type().to_string(),
                package,
                packages,
                prefix: annotation(ANNOTATION_PREFIX),
                python: annotation(ANNOTATION_PYTHON),
            }
        })
        .collect()
}
