//! What an export holds: the images named by refs or pinned by a lockfile (an index
//! narrowed to one platform unless every platform is asked for), and every blob they
//! need, found by walking their manifests in the store.

use std::collections::HashSet;

use oci_spec::image::{Arch, ImageIndex, Os, PlatformBuilder};
use serde_json::Value;

use crate::lock::pin::Pin;
use crate::oci::platform::Platform;
use crate::store::{
    parse_digest, Descriptor, Digest, MediaType, Store, INDEX_ANNOTATION, MANIFEST_LIMIT,
};

use super::closure::needed;
use super::referrers::{carried, ExportedReferrer};
use super::{ArchiveError, MissingBlob};

/// One image of an export: the name its index.json entry carries, and the manifest (or
/// index) it names.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedImage {
    pub name: String,
    pub descriptor: Descriptor,
}

/// What an export writes: the images, the referrers the store records for them, and
/// every blob they need, sorted by digest.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub images: Vec<ExportedImage>,
    /// Signatures, SBOMs and attestations of the images (and of each other).
    pub referrers: Vec<ExportedReferrer>,
    pub blobs: Vec<Descriptor>,
    /// The blobs' total size.
    pub bytes: u64,
}

/// Plans the export of refs named as `stowage ls` shows them. A ref that names an
/// index exports this machine's platform, or with `all_platforms` the index and every
/// platform it lists.
pub fn plan_refs(
    store: &Store,
    names: &[String],
    all_platforms: bool,
) -> Result<ExportPlan, ArchiveError> {
    let host = Platform::host();
    let mut roots = Vec::new();
    for name in unique(names.iter().map(String::as_str)) {
        let descriptor = store
            .resolve_ref(name)?
            .ok_or_else(|| ArchiveError::RefNotFound(name.to_string()))?;
        let index = descriptor.digest().clone();
        let chosen = choose_platform(store, name, descriptor, &host, all_platforms)?;
        warn_index_referrers(store, name, &index, &chosen)?;
        roots.push((name.to_string(), chosen));
    }
    let flag = if all_platforms {
        " --all-platforms"
    } else {
        ""
    };
    let hint = format!("pull the image again first (`stowage pull{flag} NAME`)");
    plan(store, roots, Vec::new(), hint)
}

/// Plans the export of every image a lockfile pins, named by its reference. The store
/// must hold each whole.
pub fn plan_pins(
    store: &Store,
    pins: &[Pin],
    all_platforms: bool,
) -> Result<ExportPlan, ArchiveError> {
    let mut roots = Vec::new();
    let mut missing = Vec::new();
    let mut names = HashSet::new();
    for pin in pins {
        if !names.insert(pin.reference.as_str()) {
            continue;
        }
        let digest = match (&pin.manifest, all_platforms) {
            (Some(manifest), false) => manifest,
            _ => &pin.digest,
        };
        let Some(descriptor) = pinned_descriptor(store, pin, digest)? else {
            missing.push(MissingBlob {
                digest: digest.clone(),
                referenced_by: pin.name.clone(),
            });
            continue;
        };
        let platform = pin
            .platform
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(Platform::host);
        let index = descriptor.digest().clone();
        let chosen = choose_platform(store, &pin.reference, descriptor, &platform, all_platforms)?;
        warn_index_referrers(store, &pin.reference, &index, &chosen)?;
        roots.push((pin.reference.clone(), chosen));
    }
    let hint = "run `stowage sync` on the lockfile first".to_string();
    plan(store, roots, missing, hint)
}

/// An index narrowed to one platform, or a ref pulled for one platform from an index,
/// leaves the index's own referrers (a signature of the index) behind: the far store
/// would not hold their subject. Said, not refused.
fn warn_index_referrers(
    store: &Store,
    name: &str,
    index: &Digest,
    chosen: &Descriptor,
) -> Result<(), ArchiveError> {
    if chosen.digest() != index {
        let left = store.referrers(index)?.len();
        if left > 0 {
            tracing::warn!(
                "{name}: the index {index} has {left} referrer(s) (signatures of the index) \
                 that travel only with the index; pass --all-platforms to carry them"
            );
        }
    }
    // A ref a pull of one platform recorded: the store may keep the index it was
    // chosen from, but an archive carries whole images only (the index's other
    // platforms are not stored), so the index's referrers cannot travel.
    let recorded = chosen
        .annotations()
        .as_ref()
        .and_then(|a| a.get(INDEX_ANNOTATION))
        .and_then(|d| parse_digest(d).ok());
    if let Some(index) = recorded {
        let left = store.referrers(&index)?.len();
        if left > 0 {
            tracing::warn!(
                "{name}: it was pulled for one platform from the index {index}, which has \
                 {left} referrer(s) (signatures of the index); an archive carries whole \
                 images only, so they stay behind; pull and export it with --all-platforms \
                 to carry them"
            );
        }
    }
    Ok(())
}

/// Walks the roots and their referrers; refuses the export when anything is missing.
fn plan(
    store: &Store,
    roots: Vec<(String, Descriptor)>,
    mut missing: Vec<MissingBlob>,
    hint: String,
) -> Result<ExportPlan, ArchiveError> {
    let mut needed = needed(store, &roots)?;
    missing.extend(needed.missing.iter().cloned());
    if !missing.is_empty() {
        return Err(ArchiveError::Incomplete { missing, hint });
    }
    let referrers = carried(store, &mut needed)?;
    Ok(ExportPlan {
        referrers,
        bytes: needed.bytes(),
        images: roots
            .into_iter()
            .map(|(name, descriptor)| ExportedImage { name, descriptor })
            .collect(),
        blobs: needed.blobs.into_values().collect(),
    })
}

/// The descriptor of a pinned manifest (or index): the store's ref when it names the
/// same digest (it keeps the platform), else one made from the stored blob. `None`
/// when the store lacks it.
fn pinned_descriptor(
    store: &Store,
    pin: &Pin,
    digest: &Digest,
) -> Result<Option<Descriptor>, ArchiveError> {
    if let Some(stored) = store.resolve_ref(&pin.reference)? {
        if stored.digest() == digest {
            return Ok(Some(stored));
        }
    }
    if !store.has(digest) {
        return Ok(None);
    }
    let bytes = store.read_blob(digest, MANIFEST_LIMIT)?;
    let media_type = media_type_of(&bytes);
    let mut descriptor = Descriptor::new(media_type.clone(), bytes.len() as u64, digest.clone());
    let platform = pin
        .platform
        .as_deref()
        .and_then(|p| p.parse::<Platform>().ok());
    if let (Some(platform), false) = (platform, is_index(&media_type)) {
        let mut builder = PlatformBuilder::default()
            .os(Os::from(platform.os.as_str()))
            .architecture(Arch::from(platform.architecture.as_str()));
        if let Some(variant) = platform.variant {
            builder = builder.variant(variant);
        }
        descriptor.set_platform(builder.build().ok());
    }
    Ok(Some(descriptor))
}

/// The media type a manifest or index declares, else the one its shape says.
fn media_type_of(document: &[u8]) -> MediaType {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<Value>,
    }
    match serde_json::from_slice::<Probe>(document) {
        Ok(Probe {
            media_type: Some(media_type),
            ..
        }) => MediaType::from(media_type.as_str()),
        Ok(Probe {
            manifests: Some(_), ..
        }) => MediaType::ImageIndex,
        _ => MediaType::ImageManifest,
    }
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(
        media_type.as_ref(),
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// Without `all_platforms`, an index is replaced by its child for `platform`. An index
/// the store lacks is left as it is (the walk reports it missing).
fn choose_platform(
    store: &Store,
    name: &str,
    descriptor: Descriptor,
    platform: &Platform,
    all_platforms: bool,
) -> Result<Descriptor, ArchiveError> {
    if all_platforms || !is_index(descriptor.media_type()) || !store.has(descriptor.digest()) {
        return Ok(descriptor);
    }
    let bytes = store.read_blob(descriptor.digest(), MANIFEST_LIMIT)?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Malformed {
            source_name: name.to_string(),
            what: "an index",
            detail: format!("{}: {e}", descriptor.digest()),
        })?;
    let found = index.manifests().iter().find(|child| {
        child
            .platform()
            .as_ref()
            .is_some_and(|p| platform.matches(p))
    });
    match found {
        Some(child) => Ok(child.clone()),
        None => Err(ArchiveError::NoPlatform {
            name: name.to_string(),
            platform: platform.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|c| c.platform().as_ref().map(Platform::describe))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names.filter(|n| seen.insert(*n)).collect()
}
